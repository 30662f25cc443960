"""The ``matmul`` family: a stretch of matrix products lifted into the program-level e-graph
(``rewrite/program.py``), rewritten there by the rules below and any the user loads, the
cheapest program extracted once and lowered back to nests.

    T = alloc(f32[48, 48])                         Program.acc("D", (A @ B) @ C)
    T[i, j] = 0.0;  T[i, j] += A[i, k] * B[k, j]      -- assoc-right -->
    D[i, j] += T[i, k] * C[k, j]                   Program.acc("D", A @ (B @ C))
                                                   ->  U = B @ C;  D += A @ U

What is lifted (``lift``): a window of the program's items holding at least two plain matmul
nests (``matmul.recognize``: no batch, dims from 0), or one such nest alone where
``strassen-level`` splits it, an odd extent peeled first (``peel-rows``, ``peel-inner``,
``peel-cols``: its last row, slice or column a product of its own) where that leaves an even
one it splits (``--strassen auto`` chooses the levels of a lone product here, by the same
extraction as a chain's; the ``strassen`` family keeps batched products and forced levels).
A temporary of the function is *internal* when every item touching it lies in the window: one
zero-fill, then matmul nests writing it whole, then matmul nests reading it whole. Decided here
from the window's items, that is a fact given to egglog, ``temporary(T)``; ``T``'s accumulation
stays in the lifted program (``T += A @ B; D += T @ C``) and the rule ``inline-temporary``,
conditioned on the fact, adds the program that reads ``A @ B`` in place of ``T`` and leaves
``T`` unwritten. Extraction chooses: inlined where a regrouping pays (``D += A @ (B @ C)``),
kept where its value is read more than once at a price no regrouping beats. Every buffer a
product writes is a *sink* (``D += term``; an internal temporary's accumulation lists first);
every operand that is no internal temporary is an *input* (a leaf ``Matrix(name, rows, cols)``,
transposed where the nest reads it the other way round). The window is sound to lift when no
item in it writes an input, no product reads a sink (an internal temporary aside, read after
its accumulation), and the window's other items touch no
internal temporary and no sink after the sink's first product: those items then run first, in
their order, and the rewritten products after them.

Soundness of the whole: the accumulations into each sink are the same sums, regrouped, when
each rule equates matrices over any ring (checked by ``tensorize rules --check``). On floats
a regrouped NaN or Inf reaches other elements, so the rewritten program runs behind
``finite.guard`` on every input, the program as written in the other branch.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import partial
from typing import Callable, Optional, Sequence

from .. import ir, program, saturate
from ..ir import Binary, Const, Load
from ..names import Names
from ..nests import AccNest, Dim
from ..program import ADDITION_TRAFFIC, Input, Matrix, Op, rule
from . import finite
from .choose import replaced, touched
from .matmul import Access, Alternative, MatMul, _filling, _plain, _zero_fill, build, recognize
from .strassen import AUTO_MIN_BLOCK

# ---------------------------------------------------------------------------
# the built-in rules: identities of matrices over any ring


@rule("assoc-right", why="matrix products are associative: each element of (A @ B) @ C and "
                         "of A @ (B @ C) is the sum of A[i, k] * B[k, l] * C[l, j]")
def assoc_right(a: Matrix, b: Matrix, c: Matrix):
    return (a @ b) @ c, a @ (b @ c)


@rule("assoc-left", why="matrix products are associative (assoc-right, read backwards)")
def assoc_left(a: Matrix, b: Matrix, c: Matrix):
    return a @ (b @ c), (a @ b) @ c


@rule("factor-left", why="a product distributes over a sum: sum_k a*b1 + sum_k a*b2 = "
                         "sum_k a*(b1 + b2), elementwise")
def factor_left(a: Matrix, b: Matrix, c: Matrix):
    return a @ b + a @ c, a @ (b + c)


@rule("factor-right", why="a product distributes over a sum, on the right operand")
def factor_right(a: Matrix, b: Matrix, c: Matrix):
    return a @ c + b @ c, (a + b) @ c


@rule("comm-add", why="matrix addition is commutative, elementwise")
def comm_add(a: Matrix, b: Matrix):
    return a + b, b + a


@rule("assoc-add", why="matrix addition is associative, elementwise")
def assoc_add(a: Matrix, b: Matrix, c: Matrix):
    return (a + b) + c, a + (b + c)


@rule("scale-out-left", why="(s A) @ B = s (A @ B): each term of the sum carries s once")
def scale_out_left(a: Matrix, b: Matrix, s: float):
    return a.scaled(s) @ b, (a @ b).scaled(s)


@rule("scale-out-right", why="A @ (s B) = s (A @ B)")
def scale_out_right(a: Matrix, b: Matrix, s: float):
    return a @ b.scaled(s), (a @ b).scaled(s)


@rule("scale-sum", why="s A + s B = s (A + B), elementwise")
def scale_sum(a: Matrix, b: Matrix, s: float):
    return a.scaled(s) + b.scaled(s), (a + b).scaled(s)


def _minus(x):
    return x.scaled(-1.0)


@rule("strassen-level", even=("a", "b"), at_least=2 * AUTO_MIN_BLOCK,
      why="Strassen's identities, in any ring: with A and B in quadrants, the seven products "
          "P1 = (A11 + A22)(B11 + B22), P2 = (A21 + A22)B11, P3 = A11(B12 - B22), "
          "P4 = A22(B21 - B11), P5 = (A11 + A12)B22, P6 = (A21 - A11)(B11 + B12), "
          "P7 = (A12 - A22)(B21 + B22) give the quadrants of AB: P1 + P4 - P5 + P7, P3 + P5, "
          "P2 + P4, P1 - P2 + P3 + P6 (expand each: the cross terms cancel)")
def strassen_level(a: Matrix, b: Matrix):
    a11, a12, a21, a22 = a.block(0, 0), a.block(0, 1), a.block(1, 0), a.block(1, 1)
    b11, b12, b21, b22 = b.block(0, 0), b.block(0, 1), b.block(1, 0), b.block(1, 1)
    p1 = (a11 + a22) @ (b11 + b22)
    p2 = (a21 + a22) @ b11
    p3 = a11 @ (b12 + _minus(b22))
    p4 = a22 @ (b21 + _minus(b11))
    p5 = (a11 + a12) @ b22
    p6 = (a21 + _minus(a11)) @ (b11 + b12)
    p7 = (a12 + _minus(a22)) @ (b21 + b22)
    return a @ b, p1.strassen(p2, p3, p4, p5, p6, p7)


# one order of peeling (the reduction, then rows, then columns), so that an e-graph holds one
# peeled form of a product and the matcher prices few shapes
@rule("peel-rows", odd=(("a", "rows"),), also_even=(("a", "cols"),),
      at_least=2 * AUTO_MIN_BLOCK + 1,
      why="row i of A @ B is row i of A times B: the product of every row of A but the last, "
          "above the product of its last row, is the product whole")
def peel_rows(a: Matrix, b: Matrix):
    return a @ b, (a.head_rows() @ b).above(a.last_row() @ b)


@rule("peel-inner", odd=(("a", "cols"),), at_least=2 * AUTO_MIN_BLOCK + 1,
      why="(A @ B)[i, j] = sum over k of A[i, k] B[k, j]: the sum over every k but the last, "
          "plus the last k's term")
def peel_inner(a: Matrix, b: Matrix):
    return a @ b, a.head_cols() @ b.head_rows() + a.last_col() @ b.last_row()


@rule("peel-cols", odd=(("b", "cols"),), also_even=(("a", "rows"), ("a", "cols")),
      at_least=2 * AUTO_MIN_BLOCK + 1,
      why="column j of A @ B is A times column j of B: the product with every column of B "
          "but the last, beside the product with its last column, is the product whole")
def peel_cols(a: Matrix, b: Matrix):
    return a @ b, (a @ b.head_cols()).beside(a @ b.last_col())


def _quadrants(node):
    """``P1.strassen(P2, ..., P7)`` as the blocks it stands for."""
    p1, p2, p3, p4, p5, p6, p7 = node.args
    minus = lambda x: Op("*", (x,), -1.0)  # noqa: E731
    plus = lambda *xs: xs[0] if len(xs) == 1 else Op("+", (plus(*xs[:-1]), xs[-1]))  # noqa: E731
    top = Op("beside", (plus(p1, p4, minus(p5), p7), plus(p3, p5)))
    bottom = Op("beside", (plus(p2, p4), plus(p1, minus(p2), p3, p6)))
    return Op("above", (top, bottom))


BUILT_IN = ("assoc-right", "assoc-left", "factor-left", "factor-right", "comm-add", "assoc-add",
            "scale-out-left", "scale-out-right", "scale-sum", "strassen-level", "peel-rows",
            "peel-inner", "peel-cols")
# rules that pay only with a Strassen level after them (an odd extent peeled so that its even
# part splits): in force with ``strassen-level`` alone
PEELS = ("peel-rows", "peel-inner", "peel-cols")
# every rule of the e-graph a name turns off: the identities above, and the inlining of an
# internal temporary (``program.INLINE``, a rule over accumulations conditioned on a fact)
RULE_NAMES = BUILT_IN + (program.INLINE,)


def user_rules(path: Optional[str]) -> tuple:
    """The rules a ``--rules-file`` registers (``program.load_file``: once a process; a bad
    file is a ``program.RuleError``), loaded after the built-in ones, whose names a file may
    not take; none without a file."""
    return tuple(program.load_file(path)) if path else ()


def built_in(off: frozenset = frozenset()) -> list[program.ProgramRule]:
    """The built-in rules, without those named in ``off``."""
    return [r for r in program.registered("built-in") if r.name in BUILT_IN and r.name not in off]


# ---------------------------------------------------------------------------
# lift


@dataclass
class Lifted:
    """A window ``parts[lo:hi + 1]`` as accumulations over terms."""

    lo: int
    hi: int
    accumulations: list[tuple[str, object]]  # (sink name, term), in order
    sinks: dict[str, tuple[Access, int, int]]  # name -> access in dims _r, _c; rows; cols
    inputs: dict[str, tuple[Access, AccNest, Load]]  # name -> access in _r, _c; a reader
    products: list[int]  # the window's matmul items
    fills: list[int]  # the zero-fills of internal temporaries
    others: list[int]  # the window's other items, run first
    dtype: str = "f32"
    # internal temporaries (``program.temporary`` holds): name -> whole access in _r, _c
    temporaries: dict = field(default_factory=dict)


def _name(access: Access, dims: tuple[Dim, Dim]) -> tuple[str, Access, bool]:
    """A block of a buffer read through ``dims`` (rows, cols): its leaf name, its access in the
    dims ``_r``, ``_c`` (in the buffer's order) and whether it is read transposed."""
    r, c = dims
    order = [v for v, _ in access.slots if v is not None]
    transposed = order.index(c.name) < order.index(r.name)
    first, second = (c, r) if transposed else (r, c)
    canonical = access.renamed({first.name: "_r", second.name: "_c"})
    extents = {"_r": first.extent, "_c": second.extent}
    buf = access.buffer
    whole = canonical.slots == (("_r", 0), ("_c", 0)) and \
        buf.shape == (first.extent, second.extent)
    if whole:
        return buf.name, canonical, transposed
    parts = [str(off) if d is None else f"{off}:{off + extents[d]}" for d, off in canonical.slots]
    return f"{buf.name}[{', '.join(parts)}]", canonical, transposed


class _Touches:
    """Which buffers each item reads or writes, and which it writes, computed once per item."""

    def __init__(self, parts: list):
        self.parts = parts
        self.sets: list[tuple[set, frozenset]] = []
        for p in parts:
            s = p.stmt() if hasattr(p, "stmt") else p
            self.sets.append(({b.name for b in ir.buffers_of(s)}, ir.written_by(s)))

    def touches(self, q: int, name: str) -> bool:
        return name in self.sets[q][0]

    def writes(self, q: int, name: str) -> bool:
        return name in self.sets[q][1]

    def users(self, name: str) -> list[int]:
        return [q for q in range(len(self.parts)) if self.touches(q, name)]


def splits_alone(mm: MatMul, rules: Sequence[program.ProgramRule],
                 at_least: Optional[int] = None) -> bool:
    """``strassen-level`` is among ``rules`` and splits ``mm`` (every extent even and at least
    its minimum, ``at_least`` overriding the rule's), once an odd extent is peeled where its
    peel rule is among ``rules`` too: a product the e-graph is given even when it is the only
    one in its window."""
    named = {r.name: r for r in rules}
    if "strassen-level" not in named:
        return False
    low = max(2, named["strassen-level"].at_least if at_least is None else at_least)
    for extent, peel in ((mm.m.extent, "peel-rows"), (mm.k.extent, "peel-inner"),
                         (mm.n.extent, "peel-cols")):
        if extent % 2 == 0 and extent >= low:
            continue
        odd_low = None if peel not in named else \
            max(3, named[peel].at_least if at_least is None else at_least)
        if extent % 2 == 0 or odd_low is None or extent < max(odd_low, low + 1):
            return False
    return True


def lift(func: ir.PrimFunc, parts: list,
         alone: Callable[[MatMul], bool] = lambda mm: False,
         outside: frozenset = frozenset()) -> list[Lifted]:
    """Windows of ``parts`` that lift (see the module docstring), left to right, each as long
    as it can be; a window of one product only where ``alone`` says a rule may rewrite it
    (``splits_alone``). ``outside``: buffers that statements around ``parts`` touch (``parts``
    is the fast path of a guard), which are no internal temporaries."""
    mms = {}
    for q, p in enumerate(parts):
        mm = recognize(p) if isinstance(p, AccNest) else None
        if mm is not None and _plain(mm):
            mms[q] = mm
    if len(mms) < 2 and not any(alone(mm) for mm in mms.values()):
        return []
    seen = _Touches(parts)
    out, q = [], 0
    while q < len(parts):
        found = None
        if q in mms or any(_zero_fill(parts[q], b) for b in func.allocs):
            for hi in range(len(parts) - 1, q - 1, -1):
                found = _window(func, parts, mms, q, hi, seen, alone, outside)
                if found is not None:
                    break
        if found is None:
            q += 1
        else:
            out.append(found)
            q = found.hi + 1
    return out


def _window(func, parts, mms, lo, hi, seen: _Touches, alone: Callable[[MatMul], bool],
            outside: frozenset = frozenset()) -> Optional[Lifted]:
    products = [q for q in range(lo, hi + 1) if q in mms]
    if hi not in mms or not (len(products) >= 2 or products == [lo] and alone(mms[lo])):
        return None
    temps = {b.name: b for b in func.allocs}
    written = {mms[q].c.buffer.name for q in products}
    internal, fills = set(), []
    for t in written & set(temps):
        users = seen.users(t)
        if t in outside or not all(lo <= u <= hi for u in users):
            continue
        zero = [u for u in users if _zero_fill(parts[u], temps[t])]
        writers = [u for u in users if u in mms and mms[u].c.buffer.name == t]
        readers = [u for u in users if u not in zero and u not in writers]
        if len(zero) != 1 or not writers or not readers or zero[0] > min(writers) \
                or max(writers) > min(readers) or any(u not in mms for u in readers):
            continue
        if temps[t].ndim != 2 or any(mms[u].c.slots != ((mms[u].m.name, 0), (mms[u].n.name, 0))
                                     or (mms[u].m.extent, mms[u].n.extent) != temps[t].shape
                                     for u in writers):
            continue
        internal.add(t)
        fills.append(zero[0])
    # an internal temporary's zero-fill may fill nothing else: it is replaced
    sinks: dict[str, tuple[Access, int, int]] = {}
    incs: dict[str, list] = {}
    inputs: dict[str, tuple[Access, AccNest, Load]] = {}
    first_write: dict[str, int] = {}
    temporaries: dict[str, Access] = {}
    dtype = mms[products[0]].dtype
    for q in products:
        mm = mms[q]
        if mm.dtype != dtype:
            return None
        x = _operand(mm.a, (mm.m, mm.k), mm, internal, inputs)
        y = _operand(mm.b, (mm.k, mm.n), mm, internal, inputs)
        if x is None or y is None:
            return None
        value = Op("@", (x, y))
        if mm.scale is not None:
            value = Op("*", (value,), float(mm.scale.value))
        out = mm.c.buffer.name
        name, canonical, transposed = _name(mm.c, (mm.m, mm.n))
        if transposed:
            return None  # recognize puts C's first index in m
        if out in internal:
            temporaries[out] = canonical
        sinks.setdefault(name, (canonical, mm.m.extent, mm.n.extent))
        incs.setdefault(name, []).append(value)
        first_write.setdefault(out, q)
    sink_buffers = {mms[q].c.buffer.name for q in products} - internal
    leaves = {a.buffer.name for a, _, _ in inputs.values()}
    if leaves & (sink_buffers | internal):
        return None  # a product reads what the window writes
    others = [q for q in range(lo, hi + 1) if q not in products and q not in fills]
    for q in others:
        if any(seen.writes(q, b) for b in leaves):
            return None  # an input written between the products
        if any(seen.touches(q, t) for t in internal):
            return None
        if any(q > at and seen.touches(q, s) for s, at in first_write.items()):
            return None  # reads or writes a sink after its first product
    # the temporaries first, in the order of their first writes (each is complete before its
    # first reader, so one read by another's writer comes before it), then the sinks: no
    # accumulation reads a sink, so the sinks' order is free
    accs = [(name, _sum(vals)) for name, vals in incs.items() if name in temporaries] + \
        [(name, _sum(vals)) for name, vals in incs.items() if name not in temporaries]
    return Lifted(lo, hi, accs, sinks, inputs, products, sorted(fills), others, dtype,
                  temporaries)


def _sum(values: list):
    out = values[0]
    for v in values[1:]:
        out = Op("+", (out, v))
    return out


def _operand(access: Access, dims: tuple[Dim, Dim], mm: MatMul, internal: set, inputs: dict):
    """The term an operand reads: an internal temporary read whole (a leaf, which
    ``inline-temporary`` may replace by its value), or an input leaf."""
    r, c = dims
    if access.buffer.name in internal:
        t = access.buffer.name
        if access.slots == ((r.name, 0), (c.name, 0)) and access.buffer.shape == (r.extent, c.extent):
            return Input(t, r.extent, c.extent)
        if access.slots == ((c.name, 0), (r.name, 0)) and access.buffer.shape == (c.extent, r.extent):
            return Op("T", (Input(t, c.extent, r.extent),))
        return None  # a part of the temporary: not its value
    name, canonical, transposed = _name(access, dims)
    inputs.setdefault(name, (canonical, mm.nest, access.load()))
    rows, cols = (c.extent, r.extent) if transposed else (r.extent, c.extent)
    leaf = Input(name, rows, cols)
    return Op("T", (leaf,)) if transposed else leaf


# ---------------------------------------------------------------------------
# lower


def _const(value: float, dtype: str) -> Optional[Const]:
    if ir.is_float(dtype):
        return Const(value, dtype)
    return Const(int(value), dtype) if float(int(value)) == value else None


class _Lowering:
    """Nests computing the extracted accumulations; equal terms share one temporary."""

    def __init__(self, lifted: Lifted, names: Names, uses: Optional[dict] = None):
        self.lifted, self.names = lifted, names
        self.items: list = []
        self.allocs: list = []
        self.made: dict = {}
        self.uses = uses or {}  # how many times each product is read (Strassen's P1 twice)
        # elements of the passes that add or scale matrices at hand: the read of a second
        # operand, which the cost model does not charge (``strassen.ADDITION_TRAFFIC``)
        self.addition_elements = 0
        self.kept: set[str] = set()  # internal temporaries written, not inlined

    def keep(self, name: str) -> Access:
        """The internal temporary ``name`` written as the program did: zero, then its
        accumulation (which the caller lowers)."""
        t = self.lifted.temporaries[name]
        self.items.append(_fill(t, _const(0, self.lifted.dtype)))
        self.kept.add(name)
        return t

    def temporary(self, prefix: str, rows: int, cols: int) -> Access:
        buf = ir.Buffer(self.names.numbered(prefix), self.lifted.dtype, (rows, cols))
        self.allocs.append(buf)
        return Access(buf, (("_r", 0), ("_c", 0)))

    def operand(self, node) -> Access:
        """``node``'s value as an access in the dims ``_r`` (rows) and ``_c`` (columns)."""
        if isinstance(node, Input) and node.name in self.lifted.temporaries:
            if node.name not in self.kept:  # read before it is written, or never written
                raise Unlowerable(f"{node.name} read but not computed")
            return self.lifted.temporaries[node.name]
        if isinstance(node, Input):
            return self.lifted.inputs[node.name][0]
        if node.kind == "T":
            return self.operand(node.args[0]).renamed({"_r": "_c", "_c": "_r"})
        if node.kind == "block":
            rows, cols = program.shape(node)
            return _shifted(self.operand(node.args[0]), node.at[0] * rows, node.at[1] * cols)
        if node.kind in program.PARTS:  # read in place, from its first row and column
            rows, cols = program.shape(node.args[0])
            return _shifted(self.operand(node.args[0]), rows - 1 if node.kind == "last_row" else 0,
                            cols - 1 if node.kind == "last_col" else 0)
        if node in self.made:
            return self.made[node]
        rows, cols = program.shape(node)
        t = self.temporary("mm_S" if node.kind == "+" else "mm_U", rows, cols)
        if not _has_product(node) and node.kind not in ("beside", "above", "strassen"):
            # matrices at hand, summed or scaled: one pass, S = X1 + X2 + ...
            self.items.append(_fill(t, self.value(node)))
            self.addition_elements += rows * cols
        else:
            self.items.append(_fill(t, _const(0, self.lifted.dtype)))
            self.accumulate(t, rows, cols, node, own=True)
        self.made[node] = t
        return t

    def value(self, node):
        """The element ``[i, j]`` of ``node``, a sum or scale of matrices at hand, as an
        expression (a product is read from its temporary)."""
        if isinstance(node, Op) and node.kind == "+":
            return Binary("+", self.value(node.args[0]), self.value(node.args[1]))
        if isinstance(node, Op) and node.kind == "*":
            factor = _const(node.factor, self.lifted.dtype)
            if factor is None:
                raise Unlowerable(f"scale {node.factor} of an integer matrix")
            return Binary("*", factor, self.value(node.args[0]))
        return self.operand(node).renamed({"_r": "i", "_c": "j"}).load()

    def accumulate(self, out: Access, rows: int, cols: int, node, own: bool = False) -> None:
        """``out += node``: a sum's terms one by one, blocks side by side or stacked into the
        parts of ``out``, a product read once as a nest into ``out`` (``own``: ``out`` is the
        temporary of ``node`` itself, which computes it even where it is read twice)."""
        if isinstance(node, Op) and node.kind == "strassen":
            self.accumulate(out, rows, cols, _quadrants(node))
            return
        if isinstance(node, Op) and node.kind == "+":
            for a in node.args:
                self.accumulate(out, rows, cols, a)
            return
        if isinstance(node, Op) and node.kind in ("beside", "above"):
            (r1, c1), (r2, c2) = (program.shape(a) for a in node.args)
            first, second = node.args
            self.accumulate(out, r1, c1, first)
            if node.kind == "beside":
                self.accumulate(_shifted(out, 0, c1), r2, c2, second)
            else:
                self.accumulate(_shifted(out, r1, 0), r2, c2, second)
            return
        scale, inner = None, node
        once = lambda x: own or self.uses.get(x, 1) == 1  # noqa: E731
        if isinstance(node, Op) and node.kind == "*" and isinstance(node.args[0], Op) \
                and node.args[0].kind == "@" and once(node.args[0]):
            scale, inner = _const(node.factor, self.lifted.dtype), node.args[0]
            if scale is None:
                raise Unlowerable(f"scale {node.factor} of an integer product")
        c = out.renamed({"_r": "i", "_c": "j"})
        if isinstance(inner, Op) and inner.kind == "@" and once(inner):
            x, y = inner.args
            k = program.shape(x)[1]
            a = self.operand(x).renamed({"_r": "i", "_c": "k"})
            b = self.operand(y).renamed({"_r": "k", "_c": "j"})
            self.items.append(build(c, a, b, rows, cols, k, scale))
            return
        value = self.value(inner) if scale is None else Binary("*", scale, self.value(inner))
        self.items.append(AccNest((Dim("i", 0, rows), Dim("j", 0, cols)), c.buffer, c.indices(), value))
        self.addition_elements += rows * cols


def _shifted(access: Access, rows: int, cols: int) -> Access:
    """``access`` moved by ``rows`` along ``_r`` and ``cols`` along ``_c``."""
    by = {"_r": rows, "_c": cols}
    return Access(access.buffer, tuple((d, off + by.get(d, 0)) for d, off in access.slots))


def _has_product(node) -> bool:
    return isinstance(node, Op) and (node.kind == "@" or any(_has_product(a) for a in node.args))


def _product_uses(accumulations) -> dict:
    """How many places read each product of the accumulations (shared subterms counted once
    per place that reads them)."""
    uses: dict = {}

    def walk(node) -> None:
        if not isinstance(node, Op):
            return
        if node.kind == "strassen":
            node = _quadrants(node)  # P1 to P5 read twice
        if node.kind == "@":
            uses[node] = uses.get(node, 0) + 1
            if uses[node] > 1:
                return  # its operands are read once, by its one nest
        for a in node.args:
            walk(a)

    for _, node in accumulations:
        walk(node)
    return uses


def _terms(node) -> list:
    """The terms of a sum, flattened (a node that is no sum: itself)."""
    if isinstance(node, Op) and node.kind == "+":
        return [x for a in node.args for x in _terms(a)]
    return [node]


class Unlowerable(Exception):
    """A term with no nest form here (a scale of an integer matrix, a temporary read that
    nothing computes)."""


def _fill(t: Access, value) -> ir.Stmt:
    return _filling(t.renamed({"_r": "i", "_c": "j"}), value)


@dataclass
class _Window:
    """A lifted window lowered: the items that replace ``parts[lifted.lo:lifted.hi + 1]``
    (its other items, then the rewritten products behind their guard), as an alternative."""

    lifted: Lifted
    items: list
    alt: Alternative


def lower(lifted: Lifted, accumulations, parts: list, names: Names) -> Optional[Alternative]:
    """``parts`` with the window replaced by ``accumulations`` (behind ``finite.guard`` on
    floats), or None when a term has no nest form here."""
    window = _lowered(lifted, accumulations, parts, names)
    return None if window is None else window.alt


def _lowered(lifted: Lifted, accumulations, parts: list, names: Names) -> Optional[_Window]:
    low = _Lowering(lifted, names, _product_uses(accumulations))
    try:
        for name, node in accumulations:
            access, rows, cols = lifted.sinks[name]
            if program.shape(node) != (rows, cols):
                return None  # a rule that changed a shape: not this program
            if name in lifted.temporaries:
                access = low.keep(name)
            low.accumulate(access, rows, cols, node)
    except (Unlowerable, KeyError, ValueError):
        return None
    window = sorted(lifted.products + lifted.fills)
    allocs = list(low.allocs)
    guard = [(nest, load) for _, nest, load in lifted.inputs.values()]
    block = [replace(p, settled=True) if isinstance(p, finite.Guarded) else p
             for p in finite.guard(guard, low.items, [parts[q] for q in window], names, allocs)]
    items = [parts[q] for q in lifted.others] + block
    note = f"{program.accumulations_text(lifted.accumulations, _short)} -> " \
        f"{program.accumulations_text(accumulations, _short)}"
    alt = Alternative(_spliced(parts, [(lifted, items)]), allocs, note,
                      levels=max(strassen_levels(v) for _, v in accumulations),
                      extra_cost=ADDITION_TRAFFIC * low.addition_elements)
    return _Window(lifted, items, alt)


def _spliced(parts: list, windows: list) -> list:
    """``parts`` with each window's items (``(lifted, items)``, disjoint) in place of its
    own, right to left so that the windows to the left keep their places."""
    parts = list(parts)
    for lifted, items in sorted(windows, key=lambda w: w[0].lo, reverse=True):
        parts[lifted.lo:lifted.hi + 1] = items
    return parts


def _short(node) -> str:
    text = program.text(node)
    return text if len(text) <= 200 else text[:197] + "..."


def strassen_levels(node) -> int:
    """How many Strassen levels deep ``node`` goes (blocks stacked into a result)."""
    if not isinstance(node, Op):
        return 0
    inner = max((strassen_levels(a) for a in node.args), default=0)
    return inner + (node.kind == "strassen")


# ---------------------------------------------------------------------------
# the family


def multiply_adds(m: int, k: int, n: int) -> float:
    return float(m * k * n)


def tree_cost(accumulations, price: Callable[[int, int, int], float]) -> float:
    """What the extraction's cost model charges for ``accumulations`` (shared terms once)."""
    seen = set()

    def cost(node, top: bool) -> float:
        if isinstance(node, Input):
            return 0.0
        if node in seen:
            return 0.0
        seen.add(node)
        rows, cols = program.shape(node)
        inner = sum(cost(a, top and node.kind == "+") for a in node.args)
        if node.kind == "@":
            return inner + price(*_product_shape(node))
        if node.kind in ("T", "*", "block", "beside", "above") + program.PARTS:
            return inner  # read or written in place
        per_element = 1 + ADDITION_TRAFFIC  # a pass and its second read, as the e-graph
        if node.kind == "strassen":  # its ten passes over a quadrant, P1's shape
            quadrant = program.shape(node.args[0])
            return inner + program.STRASSEN_QUADRANT_PASSES * quadrant[0] * quadrant[1] * per_element
        return inner + (0.0 if top and node.kind == "+" else rows * cols * per_element)

    return sum(cost(v, True) for _, v in accumulations)


def alternatives(func: ir.PrimFunc, parts, names: Names,
                 rules: Optional[Sequence[program.ProgramRule]] = None,
                 price: Callable[[int, int, int], float] = multiply_adds,
                 reports: Optional[list] = None, memo: Optional[dict] = None,
                 at_least: Optional[int] = None, run: Optional[Callable] = None,
                 outside: frozenset = frozenset(), inline: bool = True,
                 floor: Optional[tuple[Callable[[int, int, int], float], dict]] = None
                 ) -> list[Alternative]:
    """For each window that lifts, the cheapest program the rules reach when it is cheaper
    than the window as written by ``price`` (multiply-adds by default). ``memo``: the
    extractions with ``price`` made before (a search lifts equal windows many times).
    ``at_least``: the smallest extent ``strassen-level`` splits (default: its own). ``run``:
    where the e-graph lives (``program.cheapest``; the saturation worker, whose budget stops
    leave the window as written).

    Windows on the fast path of a guard another rewrite put in (a runtime scale factor
    taken out, ``rules/scalars.py``) lift too, the guard kept around the rewritten path:
    ``outside`` names the buffers items around them touch (the rest of the program, the
    guard's scan and other branch), which are no internal temporaries there. ``inline``:
    the window's internal temporaries are given to the e-graph as ``program.temporary``
    facts, so that ``inline-temporary`` may inline them. ``floor``: ``(bound, memo)``, a
    price no plan of a product shape undercuts (``floor_price``) and the extractions made
    with it: a window that no rule makes cheaper than its products as written even at the
    floor of every other shape is not priced by the matcher.

    Each window made cheaper is one alternative, and, where there are several, the program
    with all of them rewritten is one more (windows are disjoint and independent)."""
    memo = {} if memo is None else memo
    parts = list(parts)
    rules = built_in() if rules is None else list(rules)
    out, chosen = [], []
    for q, p in enumerate(parts):
        if isinstance(p, finite.Guarded) and not p.settled:
            around = set(outside) | touched(parts[:q] + parts[q + 1:] + list(p.scan) + list(p.slow)) \
                | {x.buffer.name for x in ir.loads_of(p.cond)}
            for alt in alternatives(func, p.fast, names, rules, price, reports, memo, at_least, run,
                                    frozenset(around), inline, floor):
                new = parts[:q] + [replace(p, fast=tuple(alt.parts))] + parts[q + 1:]
                out.append(replace(alt, parts=new))
    for lifted in lift(func, parts, partial(splits_alone, rules=rules, at_least=at_least), outside):
        temporaries = tuple(lifted.temporaries) if inline else ()
        try:
            # multiply-adds first: a window that no rule makes cheaper by them is not priced
            # by the matcher (a saturation of each product shape the e-graph holds)
            best, report = _cheapest(lifted.accumulations, rules, multiply_adds, _flop_memo,
                                     at_least, run, temporaries)
            cheaper = tree_cost(best, multiply_adds) < tree_cost(lifted.accumulations, multiply_adds) * 0.995
            if cheaper and price is not multiply_adds and floor is not None:
                # the least any program the rules reach can cost: the window's own product
                # shapes priced by their plans, every other shape at its floor (no plan costs
                # less, so no program does); the shapes only a rewrite makes (a level's
                # halves) are planned only where that least could pay
                bound, floors = floor
                written = {_product_shape(x) for x in _product_uses(lifted.accumulations)}

                def least_price(m, k, n, written=written, bound=bound):
                    return price(m, k, n) if (m, k, n) in written else bound(m, k, n)
                least, _ = _cheapest(lifted.accumulations, rules, least_price, floors, at_least,
                                     run, temporaries)
                cheaper = tree_cost(least, least_price) < tree_cost(lifted.accumulations, price) * 0.995
            if cheaper and price is not multiply_adds:
                best, report = _cheapest(lifted.accumulations, rules, price, memo, at_least, run,
                                         temporaries)
                cheaper = tree_cost(best, price) < tree_cost(lifted.accumulations, price) * 0.995
        except saturate.Stopped as e:  # the worker killed past its hard seconds or memory
            if reports is not None:
                reports.append(program.Report(0, 0, e.reason, e.seconds, tuple(r.name for r in rules)))
            continue
        except Exception as e:  # noqa: BLE001 -- egglog refusing a user's rule, a term of no shape
            if reports is not None:
                reports.append(program.Report(0, 0, f"error: {e}", 0.0, tuple(r.name for r in rules)))
            continue
        if reports is not None:
            reports.append(report)
        if not cheaper:
            continue
        window = _lowered(lifted, best, parts, names)
        if window is not None:
            out.append(window.alt)
            chosen.append(window)
    if len(chosen) > 1:
        out.append(_together(chosen, parts))
    return out


def _together(chosen: list, parts: list) -> Alternative:
    """The program with every window of ``chosen`` (``_Window``s, disjoint) rewritten: the
    windows' extractions combined, as one extraction of independent parts would choose them."""
    return Alternative(_spliced(parts, [(w.lifted, w.items) for w in chosen]),
                       [b for w in chosen for b in w.alt.allocs],
                       "; ".join(w.alt.note for w in chosen),
                       levels=max(w.alt.levels for w in chosen),
                       extra_cost=sum(w.alt.extra_cost for w in chosen))


# extractions by multiply-adds, which depend on the window's terms and the rules alone
_flop_memo: dict = {}


def _cheapest(accumulations, rules, price, memo: dict, at_least: Optional[int] = None,
              run: Optional[Callable] = None, temporaries: tuple = ()):
    key = (tuple(accumulations), tuple(r.name for r in rules), at_least, temporaries)
    if len(memo) > 4096:  # a long campaign: bounded
        memo.clear()
    if key not in memo:
        memo[key] = program.cheapest(accumulations, rules, price, at_least=at_least, run=run,
                                     temporaries=temporaries)
    return memo[key]


def _product_shape(node) -> tuple[int, int, int]:
    """``(m, k, n)`` of the product ``node``."""
    rows, cols = program.shape(node)
    return rows, program.shape(node.args[0])[1], cols


def floor_price(library, dtype: str) -> Optional[Callable[[int, int, int], float]]:
    """A price of an ``m x k x n`` product that no plan of it undercuts: each multiply-add
    at the least a call of ``library`` (descriptors) with a ``dtype`` output pays per
    iteration it covers
    (``desc.cost`` over its dims; the extractor's floors, ``extract._floor``, are the same
    bound: calls at their bare price, remainders and copies only adding). None when no
    intrinsic has that output."""
    per = [d.cost / d.iterations for d in library if d.output.dtype == dtype]
    if not per:
        return None
    least = min(per)
    return lambda m, k, n: least * m * k * n


def _pricer(search, dtype: str) -> Callable[[int, int, int], float]:
    """A product's price: the cost of the plan the matcher finds for a plain ``m x k x n``
    product (``search.plan``), once per shape and search."""
    trial = search.trial()

    def price(m: int, k: int, n: int) -> float:
        key = ("program-price", dtype, m, k, n)
        if key not in search.memo:
            a = Access(ir.Buffer("A", dtype, (m, k)), (("i", 0), ("k", 0)))
            b = Access(ir.Buffer("B", dtype, (k, n)), (("k", 0), ("j", 0)))
            c = Access(ir.Buffer("C", dtype, (m, n)), (("i", 0), ("j", 0)))
            search.memo[key] = trial.plan([build(c, a, b, m, n, k, None)]).cost
        return search.memo[key]

    return price


def in_force(search) -> list[program.ProgramRule]:
    """The rules of the program-level e-graph for ``search``: the built-in ones not turned off
    by name, ``strassen-level`` only under ``--strassen auto`` with the ``strassen`` family on
    (forced levels are that family's; ``off`` turns Strassen off and nothing else) and the
    peel rules only with it, and the user's."""
    off = set(search.rules_off)
    if search.strassen != "auto" or "strassen" in off:
        off.add("strassen-level")
    if "strassen-level" in off:
        off.update(PEELS)
    return built_in(frozenset(off)) + list(search.program_rules)


def spans(items, around, search) -> list:
    """The windows of products among ``items`` that the program-level e-graph makes cheaper,
    each rewritten by its cheapest program (the ``spans`` hook, ``choose.py``: the pipeline's
    plans of the windows, and of what the other families make of their items, decide which
    are taken). The e-graphs' reports go to ``around.reports``."""
    rules = in_force(search)
    if not rules:
        return []
    inline = program.INLINE not in search.rules_off
    reports: list = []
    dtypes = {b.dtype for b in around.func.buffers}
    price = _pricer(search, next(iter(dtypes))) if len(dtypes) == 1 else multiply_adds
    bound = floor_price(search.library.values(), next(iter(dtypes))) if len(dtypes) == 1 else None
    floor = None if bound is None else (bound, search.memo.setdefault("program-floors", {}))
    memo = search.memo.setdefault("program-extractions", {})
    # the e-graphs live in the saturation worker, under the search's hard seconds and memory
    run = partial(saturate.call, budget=search.budget, in_process=search.in_process)
    alts = alternatives(around.func, items, search.names, rules, price, reports, memo, run=run,
                        outside=around.outside, inline=inline, floor=floor)
    around.reports.extend(("matmul", r) for r in reports)
    out = [replaced(items, alt.parts, temps=tuple(alt.allocs), extra=alt.extra_cost,
                    levels=alt.levels) for alt in alts]
    return [s for s in out if s is not None]
