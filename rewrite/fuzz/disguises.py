"""Hypothesis strategies for programs that hold a given intrinsic in disguise, and near misses
that must not use it (``properties.py`` checks the tensorizer on them).

``disguised(desc)`` builds, from any descriptor (built-in or a user's), a program whose main
accumulation is the descriptor's semantics after rewrites the tensorizer claims to see through:
loops permuted and resized, operands commuted, sums written ``C = e + C``, operands transposed
or strided inside larger buffers, batch dims, an init and an epilogue fused into the same
loops, a constant factor, a reduction split over two loops. Each case carries what its
construction guarantees (``Guarantee``), derived from the extents and layouts drawn and the
cost model's stated prices (``cost.py``), never from running the tensorizer.

``near_misses(desc)`` mutates such a program so that no correct tensorizer may use the
intrinsic on the mutated nest: another operator, an index the access pattern cannot fit, a
changed dtype, a loop-carried dependence through the output. ``could_fit`` is the necessary
condition that certifies a near miss.

Both also draw the forms of real code (``real.py``: triangles, out-of-place updates, sums of
products, runtime scale factors, snapshots, reused temporaries) and their near misses, as
kinds of their own (``REAL_KINDS``, ``REAL_MUTATIONS``); the ``kinds`` argument of each chooses
among all of them.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace as _replace
from typing import Optional, Sequence

from hypothesis import assume, strategies as st

from .. import cost as _cost, ir
from ..affine import affine
from ..ir import (INDEX, Accumulate, Binary, Buffer, Cast, Const, Expr, For, Load, PrimFunc, Stmt,
                  Store, Unary, Var)

_LOOP_NAMES = "ijklmnpqrstuvw"
_INPUT_NAMES = "ABDEFGHKLMNPQ"
_ITERATION_LIMIT = 20_000  # per main nest, so the interpreter and the compiler stay quick


@dataclass(frozen=True)
class _Axis:
    """One buffer axis: index ``coef * var + offset (+ slide)``; ``var`` None: a constant."""

    var: Optional[str]
    coef: int = 1
    offset: int = 0
    slide: Optional[str] = None  # a second loop added to the index (convolution-style)
    pad: int = 0  # extra elements past the last one read

    def index(self, var: Optional[str] = None) -> Expr:
        v = self.var if var is None else var
        e: Optional[Expr] = None
        if v is not None:
            e = Var(v) if self.coef == 1 else Binary("*", Const(self.coef, INDEX), Var(v))
        if self.slide is not None:
            e = Var(self.slide) if e is None else Binary("+", e, Var(self.slide))
        if self.offset or e is None:
            e = Const(self.offset, INDEX) if e is None else Binary("+", e, Const(self.offset, INDEX))
        return e

    def size(self, extents: dict[str, int]) -> int:
        n = self.offset + 1 + self.pad
        if self.var is not None and self.coef > 0:
            n += self.coef * (extents[self.var] - 1)
        if self.slide is not None:
            n += extents[self.slide] - 1
        return n


@dataclass(frozen=True)
class _Operand:
    """A program buffer standing for one intrinsic operand."""

    name: str
    dtype: str
    axes: tuple[_Axis, ...]

    def buffer(self, extents: dict[str, int]) -> Buffer:
        return Buffer(self.name, self.dtype, tuple(a.size(extents) for a in self.axes))

    def load(self, extents: dict[str, int]) -> Load:
        return Load(self.buffer(extents), tuple(a.index() for a in self.axes))


@dataclass(frozen=True)
class Guarantee:
    """What a disguised program's construction promises about its tensorized form."""

    must_use: frozenset[str]  # intrinsics that must appear among the sites
    min_coverage: float  # lower bound on ``TensorizeResult.coverage``
    reason: str  # how the bound follows from the construction


# The transformations a disguised program may be drawn with, as campaign reports count them
# (``transformation`` maps a case's note, which carries the values drawn, to its name here).
TRANSFORMATIONS = (
    "extents not multiples", "batch dims", "strided or offset layout", "reversed layout",
    "transposed layout", "commuted", "written X = X + e", "written X = e + X",
    "scaled by a constant", "reduction split over two loops", "loops fused, indexed with // and %",
    "perfect nest", "init/reduction/epilogue fused in the output's loops", "init zero",
    "init bias", "relu epilogue",
)


# The forms of real code (``real.py``): disguise kinds beside the classic ones above, the
# forms they are written in, and their near misses.
CLASSIC = "classic"
REAL_KINDS = ("triangular loop bounds", "triangle written as a guard", "out-of-place update",
              "sum of two products", "runtime scale factor", "reads rows it writes later",
              "reused temporary under carried loops", "scalar local", "operand stored narrower",
              "operand scaled along a loop", "zero points")
REAL_FORMS = ("written -=", "written X = X - e", "written X = X + a + b", "written X = a + X + b",
              "written D = S + e", "written D = e + S", "written D = S - e")
REAL_MUTATIONS = ("output in a guard", "aliasing out-of-place", "triangle reads its own writes",
                  "factor written by the nest", "temporary read before written")
DISGUISE_KINDS = (CLASSIC,) + REAL_KINDS
TRANSFORMATIONS = TRANSFORMATIONS + REAL_KINDS + REAL_FORMS


def transformation(note: str) -> str:
    """The name in ``TRANSFORMATIONS`` of one of ``Disguised.disguises``."""
    head = note.split(":")[0]
    if head in REAL_KINDS:
        return head
    if note.startswith("scaled by "):
        return "scaled by a constant"
    if note.startswith("loops ") and "fused into one" in note:
        return "loops fused, indexed with // and %"
    if note.startswith("perfect nest"):
        return "perfect nest"
    return note


@dataclass(frozen=True)
class Disguised:
    """A program holding ``intrinsic`` in disguise, and what that guarantees."""

    func: PrimFunc
    intrinsic: str
    guarantee: Guarantee
    disguises: tuple[str, ...]  # the rewrites applied, for reports

    @property
    def kind(self) -> str:
        return "disguised"


@dataclass(frozen=True)
class NearMiss:
    """A program whose nest writing ``output`` must not use ``intrinsic``."""

    func: PrimFunc
    intrinsic: str
    output: str
    mutation: str  # what was changed and why no tensorizer may use the intrinsic there

    @property
    def kind(self) -> str:
        return "near miss"


@dataclass(frozen=True)
class Triangle:
    """The accumulation's domain cut by ``inner <rel> outer`` (two loops of one extent N),
    written as real code does: a triangular ``range`` bound (``written == "range"``: the
    parser's box under a guard, ``script.py``) or an explicit ``if`` around the accumulation
    (``"guard"``, one of several spellings)."""

    outer: str
    inner: str
    rel: str  # "<=", "<", ">", ">=": inner rel outer
    written: str  # "range" or "guard"
    spelling: int = 0

    def inner_range(self, n: int) -> tuple[int, int]:
        """The inner loop's box: what ``range(o + 1)``, ``range(o)``, ``range(o + 1, N)``,
        ``range(o, N)`` parse to (the guard keeps the rest); the whole extent when guarded."""
        if self.written == "guard":
            return 0, n
        return {"<=": (0, n), "<": (0, n - 1), ">": (1, n), ">=": (0, n)}[self.rel]

    def bound(self, n: int) -> str:
        """The triangular bound as script writes it."""
        o = self.outer
        return {"<=": f"range({o} + 1)", "<": f"range({o})", ">": f"range({o} + 1, {n})",
                ">=": f"range({o}, {n})"}[self.rel]

    def cond(self) -> Expr:
        o, w = Var(self.outer), Var(self.inner)

        def plus1(e: Expr) -> Expr:
            return Binary("+", e, Const(1, INDEX))

        if self.written == "range":  # as the parser writes it
            return {"<=": ir.Compare("<", w, plus1(o)), "<": ir.Compare("<", w, o),
                    ">": ir.Compare(">=", w, plus1(o)), ">=": ir.Compare(">=", w, o)}[self.rel]
        spellings = {
            "<=": [("<=", w, o), (">=", o, w), ("<", w, plus1(o)), (">", plus1(o), w)],
            "<": [("<", w, o), (">", o, w), ("<=", plus1(w), o)],
            ">": [(">", w, o), ("<", o, w), (">=", w, plus1(o))],
            ">=": [(">=", w, o), ("<=", o, w), (">", plus1(w), o)],
        }[self.rel]
        op, a, b = spellings[self.spelling % len(spellings)]
        return ir.Compare(op, a, b)

    def fact(self) -> tuple[dict[str, int], int]:
        """The domain as ``sum(coef * var) + const >= 0``."""
        o, w = self.outer, self.inner
        return {"<=": ({o: 1, w: -1}, 0), "<": ({o: 1, w: -1}, -1),
                ">": ({w: 1, o: -1}, -1), ">=": ({w: 1, o: -1}, 0)}[self.rel]

    def holds(self, at: dict[str, int]) -> bool:
        coefs, const = self.fact()
        return sum(c * at[v] for v, c in coefs.items()) + const >= 0


@dataclass
class _Shape:
    """A drawn disguise, before it is written out as a program."""

    desc: object
    extents: dict[str, int]  # program loop -> extent (every loop starts at 0)
    dim_of: dict[str, str]  # intrinsic dim -> program loop
    batch: list[str]  # extra loops that index the output
    out: _Operand
    inputs: dict[str, _Operand]  # intrinsic input operand -> program buffer
    value: Expr  # the intrinsic body over program loads
    form: str  # "+=", "X = X + e", "X = e + X"
    scale: Optional[float]
    perfect: bool  # one perfect nest (init and epilogue in nests of their own)
    order: list[str]  # loop order, outermost first
    split: Optional[tuple[str, int]]  # a reduction loop split at this point
    init: Optional[str]  # None, "zero", "bias"
    epilogue: bool  # relu after the reduction
    notes: list[str] = field(default_factory=list)
    fused: Optional[tuple[str, str]] = None  # two adjacent loops written as one: u*ev + v
    carried: Optional[str] = None  # near miss: the output read one step back along this loop
    max_reduce: bool = False  # near miss: C = max(C, e)
    # the forms of real code (``real.py``)
    tri: Optional["Triangle"] = None  # the accumulation runs over a triangle of two loops
    extra: dict[str, _Operand] = field(default_factory=dict)  # more buffers the value reads
    terms: Optional[tuple[Expr, Expr]] = None  # the value as a sum, for "X = X + a + b"
    source: Optional[_Operand] = None  # out-of-place: the buffer the update starts from
    prev: Optional[tuple[str, Optional[str]]] = None  # near miss: the output one step back
    #   along a loop, read in place of the input buffer of this name (None: added to the value)
    out_guard: Optional[str] = None  # near miss: the accumulation under ``if C[f] <op> 0``
    factor_written: bool = False  # near miss: ``alpha[0] = C[f]`` after each element

    @property
    def spatial(self) -> list[str]:
        """Program loops that index the output, in loop order."""
        used = {a.var for a in self.out.axes if a.var is not None}
        return [v for v in self.order if v in used]

    @property
    def reduction(self) -> list[str]:
        sp = set(self.spatial)
        return [v for v in self.order if v not in sp]


def _body(desc) -> Expr:
    body = desc.semantics.body
    while isinstance(body, For):
        body = body.body
    return body.value


def _substitute(e: Expr, loads: dict[str, Expr]) -> Expr:
    return ir.map_loads(e, lambda x: loads[x.buffer.name])


@st.composite
def _commuted(draw, e: Expr) -> Expr:
    """``e`` with some ``+`` and ``*`` operands swapped (exact in IEEE and in wrap-around)."""
    if isinstance(e, Binary):
        a, b = draw(_commuted(e.a)), draw(_commuted(e.b))
        if e.op in ("+", "*") and draw(st.booleans()):
            a, b = b, a
        return Binary(e.op, a, b)
    if isinstance(e, Cast):
        return Cast(e.dtype, draw(_commuted(e.a)))
    if isinstance(e, Unary):
        return Unary(e.op, draw(_commuted(e.a)))
    return e


@st.composite
def _extent(draw, e: int, room: int, multiple: bool) -> int:
    """A program extent for an intrinsic dim of extent ``e``: a multiple of it, or not."""
    if e == 1:
        return draw(st.integers(1, max(1, min(3, room))))
    most = max(1, min(3, room // e))
    if multiple:
        return e * draw(st.integers(1, most))
    return draw(st.integers(0, most - 1 if most > 1 else 1)) * e + draw(st.integers(1, e - 1))


@st.composite
def _axes(draw, op, is_output: bool, extents: dict[str, int], dim_of: dict[str, str],
          batch: list[str]) -> tuple[_Axis, ...]:
    """A program layout for intrinsic operand ``op``: an axis per dim (unit, strided or
    reversed, maybe offset, padded or sliding along a batch loop), batch axes, in any order."""
    axes = []
    for d in op.dims:
        if d is None:
            if draw(st.booleans()):
                continue  # a unit operand dim needs no axis in the program
            axes.append(_Axis(None, 1, draw(st.integers(0, 1)), None, draw(st.integers(0, 1))))
            continue
        layout = draw(st.sampled_from(["unit", "unit", "unit", "strided", "reversed"]))
        coef = {"unit": 1, "strided": 2, "reversed": -1}[layout]
        offset = draw(st.integers(0, 2)) if layout == "strided" or draw(st.integers(0, 3)) == 3 else 0
        if layout == "reversed":  # index E - 1 - p (+ offset): the window steps backwards
            offset += extents[dim_of[d]] - 1
        slide = None
        if not is_output and batch and draw(st.integers(0, 4)) == 4:
            slide = draw(st.sampled_from(batch))
        axes.append(_Axis(dim_of[d], coef, offset, slide, draw(st.sampled_from([0, 0, 1]))))
    for b in batch:
        if is_output or draw(st.booleans()):
            if not any(a.var == b or a.slide == b for a in axes):
                axes.insert(draw(st.integers(0, len(axes))), _Axis(b))
    if len(axes) > 1 and draw(st.booleans()):
        axes = list(draw(st.permutations(axes)))
    if not axes:
        axes = [_Axis(None)]
    return tuple(axes)


@st.composite
def _shape(draw, desc, exact: Optional[bool] = None, plain: bool = False,
           limit: int = _ITERATION_LIMIT, batched: bool = True) -> _Shape:
    """Draw a disguise of ``desc``. ``exact``: extents all multiples (True), not all (False),
    either (None). ``plain``: no scaling and no split, the base of a near miss or of the
    forms of real code. ``limit``: iterations of the nest, at most (roughly). ``batched``:
    batch dims may be drawn."""
    names = list(draw(st.permutations(list(_LOOP_NAMES))))
    multiple = exact if exact is not None else not draw(st.booleans())
    extents: dict[str, int] = {}
    dim_of: dict[str, str] = {}
    room = limit
    odd = None if multiple else draw(st.sampled_from([d.name for d in desc.dims if d.extent > 1] or [None]))
    for d in desc.dims:
        p = names.pop()
        dim_of[d.name] = p
        extents[p] = draw(_extent(d.extent, room // d.extent * d.extent if d.extent > 1 else room,
                                  d.name != odd))
        room = max(1, room // max(extents[p], 1))
    notes = [] if multiple else ["extents not multiples"]
    batch = []
    for _ in range(draw(st.integers(0, 2)) if batched else 0):
        e = draw(st.integers(1, 3))
        if e > room:
            break
        p = names.pop()
        batch.append(p)
        extents[p] = e
        room //= e
    if batch:
        notes.append("batch dims")

    out_op = desc.output
    out = _Operand("C", out_op.dtype, draw(_axes(out_op, True, extents, dim_of, batch)))
    inputs = {op.name: _Operand(_INPUT_NAMES[k], op.dtype, draw(_axes(op, False, extents, dim_of, batch)))
              for k, op in enumerate(desc.inputs)}
    if any(a.coef not in (1, -1) or a.offset or a.pad for o in [out, *inputs.values()] for a in o.axes):
        notes.append("strided or offset layout")
    if any(a.coef == -1 for o in [out, *inputs.values()] for a in o.axes):
        notes.append("reversed layout")
    if any(list(a.var for a in o.axes if a.var in dim_of.values())
           != [dim_of[d] for d in op.dims if d is not None]
           for op, o in [(out_op, out)] + [(op, inputs[op.name]) for op in desc.inputs]):
        notes.append("transposed layout")
    loads = {op.name: inputs[op.name].load(extents) for op in desc.inputs}
    value = draw(_commuted(_substitute(_body(desc), loads)))
    if value != _substitute(_body(desc), loads):
        notes.append("commuted")
    form = draw(st.sampled_from(["+=", "X = X + e", "X = e + X"]))
    if form != "+=":
        notes.append(f"written {form}")
    scale = None
    if not plain and value.dtype == out.dtype and draw(st.integers(0, 3)) == 3:
        # an integer product by an integer constant (wrap-around: the scaled sum exactly)
        scale = draw(st.sampled_from([2.0, 0.5, 3.0] if ir.is_float(out.dtype) else [2, 3]))
        notes.append(f"scaled by {scale}")
    order = list(draw(st.permutations(list(extents))))
    perfect = draw(st.booleans())
    init = draw(st.sampled_from([None, None, "zero", "bias"]))
    epilogue = draw(st.integers(0, 3)) == 3
    shape = _Shape(desc, extents, dim_of, batch, out, inputs, value, form, scale, perfect, order,
                   None, init, epilogue, notes)
    red = [v for v in shape.reduction if extents[v] >= 2]
    if not plain and red and draw(st.integers(0, 3)) == 3:
        r = draw(st.sampled_from(red))
        shape.split = (r, draw(st.integers(1, extents[r] - 1)))
        notes.append("reduction split over two loops")
    pairs = [(u, v) for u, v in zip(order, order[1:])
             if extents[v] >= 2 and not (shape.split and shape.split[0] in (u, v))]
    if not plain and perfect and pairs and draw(st.integers(0, 3)) == 3:
        shape.fused = draw(st.sampled_from(pairs))
        notes.append("loops {} and {} fused into one, indexed with // and %".format(*shape.fused))
    if perfect:
        notes.append("perfect nest, loops " + " ".join(order))
    else:
        notes.append("init/reduction/epilogue fused in the output's loops")
    if init:
        notes.append(f"init {init}")
    if epilogue:
        notes.append("relu epilogue")
    return shape


# -- writing the program out ----------------------------------------------------------------


def _nest(loops: list[tuple[str, int, int]], body: Stmt,
          guard: Optional[tuple[Optional[str], Expr]] = None) -> Stmt:
    """The loops around ``body``; ``guard = (var, cond)`` puts ``if cond:`` right inside loop
    ``var`` (around ``body`` when ``var`` is None)."""
    if guard is not None and guard[0] is None:
        body = ir.If(guard[1], body)
    for var, start, stop in reversed(loops):
        if guard is not None and var == guard[0]:
            body = ir.If(guard[1], body)
        body = For(var, start, stop, body)
    return body


def _prev_index(s: _Shape, var: str) -> tuple[Expr, ...]:
    """The output's indices one step back along ``var``: what the previous iteration of
    ``var`` wrote."""
    return tuple(a.index() if a.var != var else
                 (Binary("-", a.index(), Const(a.coef, INDEX)) if a.coef > 0 else
                  Binary("+", a.index(), Const(-a.coef, INDEX))) for a in s.out.axes)


def _program(s: _Shape, name: str = "disguised"):
    """The program, the loops of each accumulation nest (one, or two for a split), and the
    accumulation statement."""
    ext = s.extents
    C = s.out.buffer(ext)
    idx = tuple(a.index() for a in s.out.axes)
    ops: dict[str, object] = {o.name: o for o in s.inputs.values()}
    ops.update(s.extra)
    if s.prev is not None and s.prev[1] is not None:  # an input read as the output one step back
        ops[s.prev[1]] = Load(C, _prev_index(s, s.prev[0]))
    value = _reload(s.value, ops, ext)  # shapes as drawn last
    if s.scale is not None:
        k = Const(s.scale if ir.is_float(C.dtype) else int(s.scale), C.dtype)
        if isinstance(value, Binary) and value.op == "*" and value.dtype == C.dtype and s.scale == 2.0:
            value = Binary("*", Binary("*", value.a, k), value.b)  # 2.0 inside the product
        else:
            value = Binary("*", k, value) if s.scale != 3.0 else Binary("*", value, k)
    target = Load(C, idx)
    if s.carried is not None:  # the previous iteration's output, not this one's
        value = Binary("+", Load(C, _prev_index(s, s.carried)), value)
    elif s.max_reduce:
        value = Binary("max", target, value)
    elif s.prev is not None and s.prev[1] is None:
        value = Binary("+", Load(C, _prev_index(s, s.prev[0])), value)
    src = s.source.load(ext) if s.source is not None else None
    terms = tuple(_reload(t, ops, ext) for t in s.terms) if s.terms else (value, value)
    forms = {"+=": lambda: Accumulate(C, idx, value),
             "X = X + e": lambda: Store(C, idx, Binary("+", target, value)),
             "X = e + X": lambda: Store(C, idx, Binary("+", value, target)),
             "-=": lambda: Accumulate(C, idx, Unary("neg", value)),
             "X = X - e": lambda: Store(C, idx, Binary("-", target, value)),
             "X = X + a + b": lambda: Store(C, idx, Binary("+", Binary("+", target, terms[0]), terms[1])),
             "X = a + X + b": lambda: Store(C, idx, Binary("+", Binary("+", terms[0], target), terms[1])),
             "D = S + e": lambda: Store(C, idx, Binary("+", src, value)),
             "D = e + S": lambda: Store(C, idx, Binary("+", value, src)),
             "D = S - e": lambda: Store(C, idx, Binary("-", src, value))}
    acc: Stmt = forms[s.form]()
    if s.carried is not None or s.max_reduce:
        acc = Store(C, idx, value)
    inner_acc: Stmt = acc
    if s.out_guard is not None:  # the guard reads the element the accumulation updates
        inner_acc = ir.If(ir.Compare(s.out_guard, target, Const(0, C.dtype)), acc)
    params = [*(o.buffer(ext) for o in s.inputs.values()), *(o.buffer(ext) for o in s.extra.values())]
    if s.source is not None:
        params.append(s.source.buffer(ext))
    init: Optional[Stmt] = None
    if s.init == "zero":
        init = Store(C, idx, Const(0, C.dtype))
    elif s.init == "bias":
        sp = s.spatial
        v = sp[-1] if sp else None
        bias = Buffer("bias", C.dtype, (ext[v] if v else 1,))
        params.append(bias)
        init = Store(C, idx, Load(bias, (Var(v) if v else Const(0, INDEX),)))
    epi = Store(C, idx, Binary("max", target, Const(0, C.dtype))) if s.epilogue else None
    params.append(C)
    params = list({b.name: b for b in reversed(params)}.values())[::-1]  # C read as an input too
    tri = s.tri

    def ranges(var: str, part: int) -> tuple[str, int, int]:
        if var == s.carried:
            return (var, 1, ext[var])
        if s.split and s.split[0] == var:
            return (var, 0, s.split[1]) if part == 0 else (var, s.split[1], ext[var])
        if tri is not None and var == tri.inner:
            return (var, *tri.inner_range(ext[var]))
        return (var, 0, ext[var])

    def guard(loops) -> Optional[tuple[Optional[str], Expr]]:
        """The triangle's ``if``: inside its inner loop (a ``range`` bound) when that loop is
        among ``loops``, around the accumulation when written as a guard."""
        if tri is None:
            return None
        if tri.written == "guard":
            return (None, tri.cond()) if loops is not None else None
        return (tri.inner, tri.cond()) if tri.inner in [v for v, _, _ in loops or []] else None

    parts = [0, 1] if s.split else [0]
    nests: list[list[tuple[str, int, int]]] = []
    if s.perfect:
        stmts: list[Stmt] = []
        outer = [(v, 0, ext[v]) for v in s.spatial]
        if init is not None:
            stmts.append(_nest(outer, init))
        for part in parts:
            loops = [ranges(v, part) for v in s.order]
            nests.append(loops)
            stmts.append(_fused(loops, acc, s.fused) if s.fused else _nest(loops, inner_acc, guard(loops)))
        if epi is not None:
            stmts.append(_nest(outer, epi))
        body = ir.seq(*stmts)
    else:
        outer = [ranges(v, 0) for v in s.spatial]
        inner: list[Stmt] = [] if init is None else [init]
        for part in parts:
            loops = [ranges(v, part) for v in s.reduction]
            nests.append(outer + loops)
            g = guard(loops) if tri is None or tri.written == "guard" or tri.inner in s.reduction else None
            inner.append(_nest(loops, inner_acc, g))
        if epi is not None:
            inner.append(epi)
        if s.factor_written:  # the factor every later element reads is this element
            alpha = s.extra["alpha"]
            inner.append(Store(alpha.buffer(ext), (Const(0, INDEX),), target))
        g = guard(outer) if tri is not None and tri.written == "range" and tri.inner in s.spatial else None
        body = _nest(outer, ir.seq(*inner), g)
    return PrimFunc(name, tuple(params), body), nests, acc


def _fused(loops: list[tuple[str, int, int]], acc: Stmt, pair: tuple[str, str]) -> Stmt:
    """The nest with adjacent loops ``u``, ``v`` (both from 0) as one loop ``uv`` over
    ``eu * ev``, each use of ``u`` written ``uv // ev`` and of ``v`` ``uv % ev``: the same
    iterations in the same order."""
    u, v = pair
    eu = next(stop for var, _, stop in loops if var == u)
    ev = next(stop for var, _, stop in loops if var == v)
    uv = u + v
    values = {u: Binary("//", Var(uv), Const(ev, INDEX)), v: Binary("%", Var(uv), Const(ev, INDEX))}
    body = _replace(acc, indices=tuple(ir.substitute(i, values) for i in acc.indices),
                   value=ir.substitute(acc.value, values))
    out = [(uv, 0, eu * ev) if var == u else (var, a, b) for var, a, b in loops if var != v]
    return _nest(out, body)


# -- the guarantee --------------------------------------------------------------------------


def _ops_per_iteration(value: Expr) -> int:
    from ..calls import op_count

    return op_count(Accumulate(Buffer("_", value.dtype, (1,)), (Const(0, INDEX),), value))


def _flat_stride(op: _Operand, var: str, ext: dict[str, int]) -> int:
    shape = op.buffer(ext).shape
    stride, total = 1, 0
    for k in reversed(range(len(op.axes))):
        a = op.axes[k]
        total += stride * ((a.coef if a.var == var else 0) + (1 if a.slide == var else 0))
        stride *= shape[k]
    return total


def _gathered(s: _Shape) -> bool:
    """Some operand misses a unit-stride need of the descriptor in this layout."""
    desc = s.desc
    ops = {desc.output.name: s.out, **s.inputs}
    for name, need in desc.layout.items():
        op = desc.operand(name)
        for k in need.unit_stride:
            d = op.dims[k]
            if op.shape[k] > 1 and (d is None or _flat_stride(ops[name], s.dim_of[d], s.extents) != 1):
                return True
    return False


def _hoists(func: PrimFunc, out: str) -> list[tuple]:
    """hoist-operand's rewrites (``rules/operands.py``) of each accumulation into ``out`` of
    ``func`` once normalised, as the pipeline offers them: ``(nest, the expressions copied,
    items, temps)`` each."""
    from .. import nests as _nests
    from ..names import Names
    from ..rules import operands

    norm = _nests.normalize(func)
    return [(nest, *offer)
            for nest in _nests.items(norm) if isinstance(nest, _nests.AccNest) and nest.out.name == out
            for offer in operands.offered(nest, Names.of(norm))]


def _hoisted_factor(func: PrimFunc, out: str, s_prog: int) -> list[float]:
    """The prices of hoist-operand's copies (as the pipeline prices a statement,
    ``cost.scalar_stmt``) that leave the accumulation into ``out`` fewer than ``s_prog``
    operations an iteration."""
    return [_cost.scalar_stmt(items[0]) for _, _, items, _ in _hoists(func, out)
            if _ops_per_iteration(items[-1].value) < s_prog]


def _guarantee(s: _Shape, func: PrimFunc, nests: list[list[tuple[str, int, int]]],
               acc: Stmt, other: Optional[int] = None, scaled: Optional[bool] = None) -> Guarantee:
    """Coverage the cheapest plan must reach, by the cost model's prices.

    Per nest of N iterations whose extents leave D iterations in whole tiles: tiling those
    with the intrinsic costs rho' per iteration (``cost / iterations``, times the gather
    penalty when a unit-stride need is missed) and the rest s each (scalar ops per
    iteration). No plan covers an iteration for less than rho, or leaves one for less than s,
    so the cheapest plan covers at least D (s - rho') / (s - rho) iterations. A constant
    factor is paid for by a temporary: it is taken iff its price stays under scalar code.
    """
    from ..calls import op_count

    desc = s.desc
    rho = desc.cost / desc.iterations
    rho_g = rho * (_cost.GATHER_PENALTY if _gathered(s) else 1.0)
    s_desc = _ops_per_iteration(_body(desc))
    s_prog = op_count(acc)
    extent_of = {s.dim_of[d.name]: d.extent for d in desc.dims}
    known = other is not None
    other = other if known else op_count(func.body)
    scaled = s.scale is not None if scaled is None else scaled
    if scaled and _hoisted_factor(func, s.out.name, s_prog):
        # hoist-operand copies the constant out with a converted operand (f32(A) * 2.0): the
        # nest left binds no tile (the intrinsic reads the narrow operand), for less work an
        # iteration than as written: a program this bound does not count
        return Guarantee(frozenset(), 0.0, "hoist-operand copies the scale out with a converted "
                                           "operand, which this bound does not count")
    # coverage = ops in calls / all ops; bound the first from below and the second from above
    covered, total = 0.0, 0.0
    out_size = s.out.buffer(s.extents).size
    for loops in nests:
        n, dd = 1, 1
        for var, start, stop in loops:
            e = stop - start
            n *= e
            k = extent_of.get(var, 1)
            dd *= (e // k) * k
        if not known:
            other -= n * s_prog
        if not scaled:
            # calls and scalar remainders both count s_prog ops per iteration (same body)
            total += n * s_prog
            if rho_g < s_prog:
                covered += dd * (s_prog - rho_g) / (s_prog - rho)
            continue
        # T = 0; T += body (calls and scalar remainder); C += scale * T: 2 ops per element
        with_temp = n * s_desc + 2 * out_size
        forced = dd > 0 and rho_g < s_desc and \
            rho_g * dd + s_desc * (n - dd) + 2 * out_size < s_prog * n
        if forced:
            covered += dd * (s_desc - rho_g) / (s_desc - rho)
            total += with_temp
        else:
            total += max(n * s_prog, with_temp)
    if covered <= 0:
        return Guarantee(frozenset(), 0.0, "no whole tile is guaranteed to pay for itself")
    bound = covered * s_desc / (total + other)
    return Guarantee(frozenset({desc.name}), bound * (1 - 1e-9),
                     f"at least {covered:g} iterations in whole tiles at {rho_g:g} per iteration "
                     f"against {s_prog} scalar ops; other statements {other} ops")


@st.composite
def disguised(draw, desc, exact: Optional[bool] = None,
              kinds: Optional[Sequence[str]] = None) -> Disguised:
    """A program holding ``desc``'s semantics in disguise, with what that guarantees.
    ``kinds``: among ``DISGUISE_KINDS`` (default: all of them): the classic disguises above
    half the time, else one of the forms of real code that applies to ``desc``
    (``real.py``); a real kind is the first of the case's notes."""
    from . import real

    kinds = DISGUISE_KINDS if kinds is None else tuple(kinds)
    unknown = [k for k in kinds if k not in DISGUISE_KINDS]
    if unknown:
        raise ValueError(f"no disguise kind {unknown[0]!r} (there are: {', '.join(DISGUISE_KINDS)})")
    forms = [k for k in kinds if k != CLASSIC and real.applies(desc, k)]
    if CLASSIC in kinds and (not forms or not draw(st.booleans())):
        s = draw(_shape(desc, exact))
        func, nests, acc = _program(s)
        return Disguised(func, desc.name, _guarantee(s, func, nests, acc), tuple(s.notes))
    if not forms:
        raise ValueError(f"none of the disguise kinds {', '.join(kinds)} applies to {desc.name}")
    return draw(real.real_disguised(desc, draw(st.sampled_from(forms)), exact))


# -- near misses ----------------------------------------------------------------------------


def could_fit(desc, loops: Sequence[str], out: Load, loads: Sequence[Load]) -> bool:
    """A necessary condition for ``desc`` to run inside the nest ``for loops: out += f(loads)``,
    whatever the algebra makes of the body: some assignment of program loads to the input
    operands with the operands' dtypes, and some one-to-one choice of a program loop for each
    intrinsic dim longer than 1, such that the loop moves no operand that dim does not index
    (a call would read one element where the program reads several) and moves the output
    if the dim indexes it (else one call writes an element twice). False certifies a near miss."""
    return next(_picks(desc, loops, out, loads), None) is not None


def _picks(desc, loops: Sequence[str], out: Load, loads: Sequence[Load]):
    """Every choice of program loops for the intrinsic's dims longer than 1 that ``could_fit``
    admits, over every assignment of loads to the input operands."""
    if out.buffer.dtype != desc.output.dtype:
        return

    def moves(load: Load) -> set[str]:
        ms = [affine(i) for i in load.indices]
        if any(m is None for m in ms):
            return set(loops)  # not affine: assume it moves along everything
        return {v for v in loops if any(m.coeff(v) for m in ms)}

    dims = [d for d in desc.dims if d.extent > 1]
    for chosen in itertools.product(loads, repeat=len(desc.inputs)):
        if any(ld.buffer.dtype != op.dtype for ld, op in zip(chosen, desc.inputs)):
            continue
        moved = {desc.output.name: moves(out)}
        moved.update({op.name: moves(ld) for op, ld in zip(desc.inputs, chosen)})
        options = []
        for d in dims:
            users = {o.name for o in desc.operands if d.name in o.dims}
            options.append([p for p in loops
                            if all(p not in moved[o] for o in moved if o not in users)
                            and (desc.output.name not in users or p in moved[desc.output.name])])
        for pick in itertools.product(*options):
            if len(set(pick)) == len(pick):
                yield pick


def _retype(e: Expr, old: str, new: str) -> Expr:
    t = lambda d: new if d == old else d  # noqa: E731
    if isinstance(e, Load):
        b = e.buffer
        return Load(Buffer(b.name, t(b.dtype), b.shape), tuple(e.indices))
    if isinstance(e, Const):
        return Const(e.value, t(e.dtype)) if e.dtype != ir.INDEX else e
    if isinstance(e, Cast):
        return Cast(t(e.dtype), _retype(e.a, old, new))
    if isinstance(e, Binary):
        return Binary(e.op, _retype(e.a, old, new), _retype(e.b, old, new))
    if isinstance(e, Unary):
        return Unary(e.op, _retype(e.a, old, new))
    return e


def _ops_in(e: Expr) -> set[str]:
    return {x.op for x in ir.walk_expr(e) if isinstance(x, (Binary, Unary))}


def _replace_op(e: Expr, old: str, new: str) -> Expr:
    if isinstance(e, Binary):
        return Binary(new if e.op == old else e.op, _replace_op(e.a, old, new), _replace_op(e.b, old, new))
    if isinstance(e, Cast):
        return Cast(e.dtype, _replace_op(e.a, old, new))
    if isinstance(e, Unary):
        return Unary(e.op, _replace_op(e.a, old, new))
    return e


def _reload(e: Expr, ops: dict, ext: dict[str, int]) -> Expr:
    """``e`` with every load rebuilt from the (possibly changed) operands (or replaced by the
    expression ``ops`` maps its buffer's name to)."""
    if isinstance(e, Load):
        op = ops[e.buffer.name]
        return op.load(ext) if isinstance(op, _Operand) else op
    if isinstance(e, Binary):
        return Binary(e.op, _reload(e.a, ops, ext), _reload(e.b, ops, ext))
    if isinstance(e, Cast):
        return Cast(e.dtype, _reload(e.a, ops, ext))
    if isinstance(e, Unary):
        return Unary(e.op, _reload(e.a, ops, ext))
    return e


def _certified(s: _Shape) -> bool:
    loads = [ld for ld in ir.walk_expr(s.value) if isinstance(ld, Load)]
    out = s.out.load(s.extents)
    return not could_fit(s.desc, list(s.extents), out, loads)


@st.composite
def _wrong_operator(draw, s: _Shape) -> Optional[str]:
    if draw(st.integers(0, 3)) == 0:
        s.max_reduce = True
        return "the output is reduced with max, not accumulated with +"
    body_ops = _ops_in(_body(s.desc))
    # Algebra keeps the set of operators, except that it turns - into + (and neg): with every
    # X gone (and no - left when X is +), no term equal to the body contains X.
    choices = [x for x in ("*", "+") if x in body_ops]
    if not choices:
        s.max_reduce = True
        return "the output is reduced with max, not accumulated with +"
    old = draw(st.sampled_from(choices))
    new = draw(st.sampled_from([y for y in ("+", "*", "max", "min") if y != old]))
    value = _replace_op(s.value, old, new)
    if old == "+" and "-" in _ops_in(value):
        return None
    s.value = value
    return f"every {old} in the body is {new}, and {s.desc.name} needs a {old}"


@st.composite
def _wrong_index(draw, s: _Shape) -> Optional[str]:
    fresh = next(n for n in _LOOP_NAMES if n not in s.extents)
    candidates = []
    for name, op in s.inputs.items():
        for k, a in enumerate(op.axes):
            if a.var is None:
                continue
            for v in list(s.extents) + [fresh]:
                if v != a.var:
                    candidates.append((name, k, v))
    good = []
    for name, k, v in candidates:
        trial = _replace(s)
        trial.extents = dict(s.extents)
        trial.extents.setdefault(v, 2)
        op = s.inputs[name]
        axes = list(op.axes)
        a = axes[k]
        axes[k] = _replace(a, var=v, offset=trial.extents[v] - 1 if a.coef < 0 else a.offset)
        trial.inputs = {**s.inputs, name: _replace(op, axes=tuple(axes))}
        by_name = {o.name: o for o in trial.inputs.values()}
        trial.value = _reload(s.value, by_name, trial.extents)
        if _certified(trial):
            good.append((trial, name, k, v, op.axes[k].var))
    if not good:
        return None
    trial, name, k, v, was = draw(st.sampled_from(good))
    s.extents, s.inputs, s.value = trial.extents, trial.inputs, trial.value
    if v not in s.order:
        s.order.insert(draw(st.integers(0, len(s.order))), v)
    buf = s.inputs[name].name
    return (f"{buf}'s axis {k} follows loop {v} instead of {was}: no loop moves exactly the "
            f"operands each dim of {s.desc.name} indexes")


@st.composite
def _wrong_dtype(draw, s: _Shape) -> Optional[str]:
    present = sorted({s.out.dtype, *(o.dtype for o in s.inputs.values())})
    old = draw(st.sampled_from(present))
    family = ir.FLOAT_DTYPES if ir.is_float(old) else ir.INT_DTYPES
    new = draw(st.sampled_from([d for d in family if d != old and d != "f16"] or [None]))
    if new is None:
        return None
    if {old, new} == {"i8", "u8"} and s.out.dtype not in ("i8", "u8"):
        return None  # shift-bytes (rules/distribute.py) moves bytes between them, exactly
    trial = _replace(s)
    trial.out = _replace(s.out, dtype=new) if s.out.dtype == old else s.out
    trial.inputs = {k: (_replace(o, dtype=new) if o.dtype == old else o) for k, o in s.inputs.items()}
    trial.value = _retype(s.value, old, new)
    if not _certified(trial):
        return None
    s.out, s.inputs, s.value = trial.out, trial.inputs, trial.value
    return f"{old} became {new}: no operand assignment gives {s.desc.name} its dtypes"


@st.composite
def _carried(draw, s: _Shape) -> Optional[str]:
    spatial = [v for v in s.spatial if s.extents[v] >= 2]
    if not spatial:
        return None
    s.carried = draw(st.sampled_from(spatial))
    s.extents[s.carried] += 1  # the loop starts at 1 and keeps its whole tiles
    def longer(op: _Operand) -> _Operand:  # a reversed index needs one more element
        return _replace(op, axes=tuple(_replace(a, offset=a.offset + 1)
                                       if a.var == s.carried and a.coef < 0 else a for a in op.axes))

    s.out = longer(s.out)
    s.inputs = {k: longer(o) for k, o in s.inputs.items()}
    s.perfect, s.init, s.epilogue = True, None, False
    return (f"each iteration reads the output written by the previous one along {s.carried} "
            "(a loop-carried dependence): the iterations cannot run as tiles")


# near misses: the mutation kinds, named as in ``NearMiss.mutation``'s prefix
_MUTATIONS = {"operator": _wrong_operator, "index": _wrong_index, "dtype": _wrong_dtype,
              "dependence": _carried}
CLASSIC_MUTATIONS = tuple(_MUTATIONS)
MUTATIONS = CLASSIC_MUTATIONS + REAL_MUTATIONS


@st.composite
def near_misses(draw, desc, kinds: Sequence[str] = MUTATIONS) -> NearMiss:
    """A disguised program mutated so that its nest writing ``NearMiss.output`` must not use
    ``desc``: one of the classic mutations above, or a near miss of a form of real code
    (``real.py``), among ``kinds`` that apply to ``desc``."""
    from . import real

    unknown = [k for k in kinds if k not in MUTATIONS]
    if unknown:
        raise ValueError(f"no near-miss kind {unknown[0]!r} (there are: {', '.join(MUTATIONS)})")
    usable = [k for k in kinds if k in _MUTATIONS or real.applies(desc, k)]
    if not usable:
        raise ValueError(f"none of the near-miss kinds {', '.join(kinds)} applies to {desc.name}")
    kind = draw(st.sampled_from(usable))
    if kind not in _MUTATIONS:
        return draw(real.real_near_miss(desc, kind))
    s = draw(_shape(desc, exact=True, plain=True))  # near: unmutated, it would match
    why = draw(_MUTATIONS[kind](s))
    assume(why is not None)
    func, _, _ = _program(s, name="near_miss")
    return NearMiss(func, desc.name, "C", f"{kind}: {why}")
