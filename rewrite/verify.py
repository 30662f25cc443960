"""Well-formedness of a ``PrimFunc``: names, scopes, dtypes, canonical form, static bounds.

``verify(func)`` raises ``VerifyError`` (a message and the offending IR node) on the
first problem. The parser runs it on every function it builds and turns the node
back into a script location; every later stage can run it on what it produces.

Bounds are checked statically: each index is an affine form in the loop variables
(plus ``//`` and ``%`` by positive constants), evaluated over the loop ranges, narrowed
by enclosing ``if`` conditions of the form ``var < const`` (and ``and`` of such). Where that
is not enough and enclosing conditions compare affine indices (``j <= i``: a triangular
loop's guard), the index's range over the domain they cut is computed exactly
(``polytope.span``).

Index arithmetic is computed in ``i64`` by the compiled code and the interpreter, which wrap
around, while the bound check above reasons with exact integers. The two agree only when no
value ever wraps, so every subexpression of an index (``i + c`` inside ``(i + c) // 8`` too) must
stay within the ``i64`` range over the loop ranges (``index_overflow``).

An intrinsic call is run by an emitter that loads its operands, computes, and stores the
output block, while the call's meaning (and the interpreter) is the semantics' loop nest run
step after step. The two agree when no two output elements share an address and an input
shares an element with the output only where one step both reads and writes it
(``call_aliasing``); anything else is refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from . import ir, polytope
from .affine import Affine, Atom, affine
from .descriptor import Descriptor
from .printer import show_expr
from .ir import (BOOL, DTYPES, INDEX, Accumulate, Binary, Buffer, Call, Cast, Compare, Const, Expr,
                 For, If, Load, Logical, PrimFunc, Select, Seq, Stmt, Store, Unary, Var, Window)


# Loops nested deeper than this are refused: the interpreter runs loops as numpy axes, of
# which numpy 1.x allows 32, and every pass walks nests recursively.
MAX_LOOP_DEPTH = 32
# Loop bounds, extents, element counts and byte sizes are computed in the i64 index type.


class VerifyError(Exception):
    """A malformed program: one sentence, and the IR node it is about."""

    def __init__(self, message: str, node: object = None):
        super().__init__(message)
        self.message = message
        self.node = node


# ---------------------------------------------------------------------------
# intervals of index expressions


@dataclass(frozen=True, slots=True)
class Interval:
    lo: int
    hi: int

    def __add__(self, o: "Interval") -> "Interval":
        return Interval(self.lo + o.lo, self.hi + o.hi)


Ranges = dict[str, Interval]


def _divmod(e: Expr) -> bool:
    """``x // d`` or ``x % d`` with ``x`` an affine index and ``d`` a positive constant: one
    atom of an index, whose range ``_atom_interval`` bounds."""
    return isinstance(e, Binary) and e.op in ("//", "%") and isinstance(e.b, Const) and e.b.value > 0 \
        and _linear(e.a) is not None


def _linear(e: Expr) -> Optional[Affine]:
    """``e`` as ``sum(coef * atom) + const`` where atoms are loop variables or ``//``/``%`` terms.

    Collecting coefficients first keeps ``i - i`` exact, which plain interval
    arithmetic would widen. ``None`` when ``e`` is not of that form.
    """
    return affine(e, casts=False, atom=_divmod)


def is_affine_index(e: Expr) -> bool:
    """Affine in loop variables, with ``//`` and ``%`` by positive constants."""
    return e.dtype == INDEX and _linear(e) is not None


def interval(e: Expr, ranges: Ranges) -> Interval:
    """The values ``e`` takes when each loop variable ranges over ``ranges``."""
    lin = _linear(e)
    if lin is None:
        raise VerifyError("not an affine index expression", e)
    return Interval(*lin.bounds(lambda atom: _atom_interval(atom, ranges)))


def _atom_interval(atom: Atom, ranges: Ranges) -> tuple[int, int]:
    if isinstance(atom, str):
        r = ranges[atom]
    else:
        r = _atom_interval_of(atom.op, interval(atom.a, ranges), atom.b.value)
    return r.lo, r.hi


INDEX_MIN, INDEX_MAX = ir.int_range(INDEX)


def index_overflow(e: Expr, ranges: Ranges) -> Optional[tuple[Expr, Interval]]:
    """The first subexpression of the affine index ``e`` (innermost first) whose values can
    leave the ``i64`` range over ``ranges``, with the interval it spans; ``None`` when every
    intermediate value fits, so wrapping and exact arithmetic give the same index::

        (i + 9223372036854775807 + 1) // 8   ->  (i + 9223372036854775807 + 1, 2**63..2**63)

    Plain interval arithmetic, node by node: it over-approximates (``i - i`` spans the width
    of ``i`` twice), which is sound, and only matters for values near 2**63. Iterative, so a
    long index costs no recursion depth.
    """
    values: dict[int, Interval] = {}
    stack: list[tuple[Expr, bool]] = [(e, False)]
    while stack:
        x, ready = stack.pop()
        kids = (x.a, x.b) if isinstance(x, Binary) else (x.a,) if isinstance(x, Unary) else ()
        if not ready and kids:
            stack.append((x, True))
            stack.extend((k, False) for k in kids)
            continue
        if isinstance(x, Var):
            r = ranges[x.name]
        elif isinstance(x, Const):
            r = Interval(x.value, x.value)
        elif isinstance(x, Unary):  # neg, the only unary operator of an affine index
            a = values[id(x.a)]
            r = Interval(-a.hi, -a.lo)
        else:
            a, b = values[id(x.a)], values[id(x.b)]
            if x.op == "+":
                r = a + b
            elif x.op == "-":
                r = Interval(a.lo - b.hi, a.hi - b.lo)
            elif x.op == "*":
                p = (a.lo * b.lo, a.lo * b.hi, a.hi * b.lo, a.hi * b.hi)
                r = Interval(min(p), max(p))
            else:  # // or % by a positive constant (an affine index has no other)
                r = _atom_interval_of(x.op, a, b.lo)
        if r.lo < INDEX_MIN or r.hi > INDEX_MAX:
            return x, r
        values[id(x)] = r
    return None


def _atom_interval_of(op: str, inner: Interval, d: int) -> Interval:
    if op == "//":
        return Interval(inner.lo // d, inner.hi // d)
    if inner.lo // d == inner.hi // d:  # one period: modulo is a shift
        return Interval(inner.lo % d, inner.hi % d)
    return Interval(0, d - 1)


# ---------------------------------------------------------------------------
# aliasing between the windows of one intrinsic call

# The exact checks below enumerate at most this many element offsets or loop points; past
# it they fall back to a sufficient condition, refusing what it cannot prove safe.
ALIAS_CHECK_LIMIT = 1 << 16


def call_aliasing(s: Call, desc, ranges: Ranges) -> None:
    """Refuse a call whose windows alias in a way its emitter cannot honour.

    The call means the semantics' loop nest run step after step on the windows (that is what
    the interpreter and the emulation do), while a native emitter loads the output block and
    the inputs, computes, and stores the block. The two agree when no two output elements
    share an address, and when an input element that shares an address with an output element
    is read at the one step that accumulates into it, and at no other::

        call("x86.fma.f32x8", c=window(C[0], (0,)), ...)                   # c[0..7] all at C[0]
        call("x86.fma.f32x8", c=window(C[1], (1,)), a=window(C[0], (1,)), ...)  # a[1] is c[0]
        call("x86.fma.f32x8", c=window(C[0], (1,)), a=window(C[0], (1,)), ...)  # fine: c[i] += c[i] * b[i]

    Windows are in bounds (checked before), so two elements share memory exactly when their
    row-major element offsets are equal. The check is exact over the call's loop points when
    there are few, else it refuses windows whose address ranges meet.
    """
    out = s.window(s.output)
    steps = _steps(desc)
    if not _injective(out.strides, desc.output.shape):
        raise VerifyError(f"the output window of {s.intrinsic.name} on {out.buffer.name} gives two of its "
                          f"elements one address (steps {', '.join(map(str, out.steps))}): each output "
                          f"element needs its own", out)
    for op, (name, w) in zip(desc.operands, s.operands):
        if name != s.output and w.buffer.name == out.buffer.name \
                and _may_clash(out, desc.output, w, op, steps, ranges):
            raise VerifyError(f"operand {name} of {s.intrinsic.name} overlaps the output {s.output} on "
                              f"{w.buffer.name}: windows may share an element only where one step of "
                              f"the intrinsic both reads and writes it", w)


def _steps(desc):
    """The value of each iteration dim at each step of the semantics, in execution order."""
    extents = tuple(d.extent for d in desc.dims)
    grid = np.indices(extents).reshape(len(extents), -1) if extents else np.zeros((0, 1), np.int64)
    return {d.name: grid[k] for k, d in enumerate(desc.dims)}


def _touched(w: Window, operand, steps) -> "np.ndarray":
    """The element offset (from ``w``'s base) the semantics touch at each step."""
    n = len(next(iter(steps.values()))) if steps else 1
    out = np.zeros(n, np.int64)
    for dim, stride in zip(operand.dims, w.strides):
        if dim is not None:
            out = out + steps[dim] * stride
    return out


def _offsets(strides: tuple[int, ...], shape: tuple[int, ...]):
    """Element offset from the base of every element of a window, or None past the limit."""
    if math.prod(shape) > ALIAS_CHECK_LIMIT:
        return None
    out = np.zeros((), np.int64)
    for st, n in zip(strides, shape):
        out = np.add.outer(out, np.arange(n, dtype=np.int64) * st)
    return out.ravel()


def _span(strides: tuple[int, ...], shape: tuple[int, ...]) -> Interval:
    return Interval(sum(min(0, (n - 1) * st) for st, n in zip(strides, shape)),
                    sum(max(0, (n - 1) * st) for st, n in zip(strides, shape)))


def _injective(strides: tuple[int, ...], shape: tuple[int, ...]) -> bool:
    offsets = _offsets(strides, shape)
    if offsets is not None:
        return np.unique(offsets).size == offsets.size
    # sufficient: each stride jumps past everything the smaller strides reach
    reach = 0
    for st, n in sorted((abs(st), n) for st, n in zip(strides, shape) if n > 1):
        if st <= reach:
            return False
        reach += st * (n - 1)
    return True


def _flat(w: Window) -> Expr:
    """The row-major element offset of ``w``'s base, as an index expression."""
    out: Expr = Const(0, INDEX)
    for idx, stride in zip(w.base, w.buffer.strides):
        out = Binary("+", out, Binary("*", idx, Const(stride, INDEX)))
    return out


def _may_clash(out: Window, out_op, w: Window, op, steps, ranges: Ranges) -> bool:
    """Some call instance reads an element of ``w`` at an address the output writes, at a
    step other than the one (single) step that writes it. With ``d = flat(w.base) -
    flat(out.base)``, step ``t`` reads offset ``d + touched_w[t]`` from the output's base."""
    d = Binary("-", _flat(w), _flat(out))
    o_span, w_span = _span(out.strides, out_op.shape), _span(w.strides, op.shape)
    values = interval(d, ranges)
    if values.hi + w_span.hi < o_span.lo or values.lo + w_span.lo > o_span.hi:
        return False  # the address ranges never meet
    names = sorted({x.name for x in ir.walk_expr(d) if isinstance(x, Var)})
    points = math.prod(ranges[v].hi - ranges[v].lo + 1 for v in names)
    written, read = _touched(out, out_op, steps), _touched(w, op, steps)
    if points * read.size > 16 * ALIAS_CHECK_LIMIT:
        return True
    grid = np.meshgrid(*(np.arange(ranges[v].lo, ranges[v].hi + 1, dtype=np.int64) for v in names),
                       indexing="ij", sparse=True)
    dists = np.unique(_evaluate(d, dict(zip(names, grid))))
    # each output offset: the first step writing it, and how many steps do
    offsets, first, count = np.unique(written, return_index=True, return_counts=True)
    at = dists[:, None] + read[None, :]  # instance x step -> offset read
    pos = np.minimum(np.searchsorted(offsets, at), offsets.size - 1)
    hit = offsets[pos] == at
    step = np.arange(read.size)[None, :]
    return bool(np.any(hit & ((count[pos] != 1) | (first[pos] != step))))


def _evaluate(e: Expr, env: dict):
    """An affine index on numpy arrays of loop variable values (no value leaves i64: the
    bases were checked by ``index_overflow``)."""
    if isinstance(e, Var):
        return env[e.name]
    if isinstance(e, Const):
        return np.int64(e.value)
    if isinstance(e, Unary):
        return -_evaluate(e.a, env)
    a, b = _evaluate(e.a, env), _evaluate(e.b, env)
    return {"+": np.add, "-": np.subtract, "*": np.multiply, "//": np.floor_divide,
            "%": np.remainder}[e.op](a, b)


def narrow(cond: Expr, ranges: Ranges, positive: bool = True) -> Ranges:
    """Loop ranges inside ``if cond`` (or its ``else`` when ``positive`` is false).

    Understands ``v op c`` and ``c op v`` for a loop variable ``v`` and a constant
    ``c``, and conjunctions of them on the ``if`` side. Anything else leaves the
    ranges as they are, which is safe: the bound check then looks at more values.
    """
    if isinstance(cond, Logical) and cond.op == "and" and positive:
        return narrow(cond.b, narrow(cond.a, ranges, True), True)
    if isinstance(cond, Unary) and cond.op == "not":
        return narrow(cond.a, ranges, not positive)
    if not isinstance(cond, Compare):
        return ranges
    op, a, b = cond.op, cond.a, cond.b
    if isinstance(a, Const) and isinstance(b, Var):
        op, a, b = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}[op], b, a
    if not (isinstance(a, Var) and isinstance(b, Const) and ir.is_int(b.dtype) and a.name in ranges):
        return ranges
    if not positive:
        op = {"<": ">=", "<=": ">", ">": "<=", ">=": "<", "==": "!=", "!=": "=="}[op]
    c, r = b.value, ranges[a.name]
    lo, hi = r.lo, r.hi
    if op == "<":
        hi = min(hi, c - 1)
    elif op == "<=":
        hi = min(hi, c)
    elif op == ">":
        lo = max(lo, c + 1)
    elif op == ">=":
        lo = max(lo, c)
    elif op == "==":
        lo, hi = max(lo, c), min(hi, c)
    out = dict(ranges)
    out[a.name] = Interval(lo, hi)
    return out


# ---------------------------------------------------------------------------
# the checks


class _Verifier:
    def __init__(self, func: PrimFunc):
        self.func = func
        self.buffers: dict[str, Buffer] = {}
        self.facts: list[Affine] = []  # affine forms >= 0 that the enclosing conditions assert

    def run(self) -> None:
        f = self.func
        if not f.name.isidentifier():
            raise VerifyError(f"function name {f.name!r} is not an identifier", f)
        for b in f.buffers:
            if b.name in self.buffers:
                raise VerifyError(f"buffer {b.name} is declared twice", b)
            if not b.name.isidentifier():
                raise VerifyError(f"buffer name {b.name!r} is not an identifier", b)
            if b.dtype not in DTYPES:
                raise VerifyError(f"buffer {b.name} has unknown dtype {b.dtype}", b)
            if not b.shape or any(not isinstance(d, int) or d <= 0 for d in b.shape):
                raise VerifyError(f"buffer {b.name} needs a shape of positive integers, not {b.shape}", b)
            if b.size * ir.itemsize(b.dtype) > INDEX_MAX:
                raise VerifyError(f"buffer {b.name} of {b.size:,} elements ({b.size * ir.itemsize(b.dtype):,} "
                                  f"bytes) is too big: its byte size must fit the 64-bit index type "
                                  f"(at most {INDEX_MAX:,})", b)
            self.buffers[b.name] = b
        self.stmt(f.body, {})

    # -- statements ---------------------------------------------------------------

    def stmt(self, s: Stmt, ranges: Ranges) -> None:
        if isinstance(s, Seq):
            if len(s.stmts) < 2 or any(isinstance(c, Seq) for c in s.stmts):
                raise VerifyError("a statement sequence must hold two or more non-sequence statements", s)
            for c in s.stmts:
                self.stmt(c, ranges)
        elif isinstance(s, For):
            if not s.var.isidentifier():
                raise VerifyError(f"loop variable {s.var!r} is not an identifier", s)
            if s.var in ranges:
                raise VerifyError(f"loop variable {s.var} shadows an enclosing loop's variable", s)
            if s.var in self.buffers:
                raise VerifyError(f"loop variable {s.var} has the name of a buffer", s)
            if not (isinstance(s.start, int) and isinstance(s.stop, int)) or s.stop <= s.start:
                raise VerifyError(f"loop {s.var} over range({s.start}, {s.stop}) never runs", s)
            if s.start < INDEX_MIN or s.stop > INDEX_MAX or s.stop - s.start > INDEX_MAX:
                # the loop counter reaches ``stop``, and the extent must be an index too
                raise VerifyError(f"the bounds of loop {s.var}, range({s.start}, {s.stop}), must lie within "
                                  f"the 64-bit range {INDEX_MIN}..{INDEX_MAX}", s)
            if len(ranges) >= MAX_LOOP_DEPTH:
                raise VerifyError(f"loop {s.var} is nested {len(ranges) + 1} deep: at most "
                                  f"{MAX_LOOP_DEPTH} nested loops are supported", s)
            inner = dict(ranges)
            inner[s.var] = Interval(s.start, s.stop - 1)
            self.stmt(s.body, inner)
        elif isinstance(s, If):
            self.condition(s.cond, ranges, s)
            for branch, positive in ((s.then, True), (s.orelse, False)):
                if branch is None:
                    continue
                mark = len(self.facts)
                self.facts.extend(polytope.facts(s.cond, positive))
                self.stmt(branch, narrow(s.cond, ranges, positive))
                del self.facts[mark:]
        elif isinstance(s, (Store, Accumulate)):
            self.access(s.buffer, s.indices, ranges, s)
            value = self.expr(s.value, ranges)
            if value != s.buffer.dtype:
                raise VerifyError(f"dtype mismatch: {s.buffer.name} holds {s.buffer.dtype} but the "
                                  f"value stored is {value}", s)
        elif isinstance(s, Call):
            self.call(s, ranges)
        else:
            raise VerifyError(f"not a statement: {type(s).__name__}", s)

    def call(self, s: Call, ranges: Ranges) -> None:
        desc = s.intrinsic
        if not isinstance(desc, Descriptor):
            raise VerifyError(f"a call holds its intrinsic's descriptor, not {type(desc).__name__} "
                              f"{desc!r}", s)
        names = tuple(n for n, _ in s.operands)
        if names != tuple(o.name for o in desc.operands) or s.output != desc.output.name:
            raise VerifyError(f"intrinsic {s.intrinsic.name} takes operands {', '.join(o.name for o in desc.operands)} "
                              f"(output {desc.output.name}), not {', '.join(names)}", s)
        for op, (_, w) in zip(desc.operands, s.operands):
            need = desc.layout.get(op.name)  # a widened copy (``Layout.widened``) will do
            if w.buffer.dtype not in (op.dtype, need.stored(op.dtype) if need else op.dtype):
                raise VerifyError(f"operand {op.name} of {s.intrinsic.name} is {op.dtype} but {w.buffer.name} "
                                  f"holds {w.buffer.dtype}", w)
            if len(w.steps) != len(op.shape) or any(len(st) != w.buffer.ndim for st in w.steps):
                raise VerifyError(f"operand {op.name} of {s.intrinsic.name} has {len(op.shape)} dimensions: its "
                                  f"window needs that many steps of {w.buffer.ndim} integers", w)
            self.window(w, op.shape, ranges)
        if not any(r.lo > r.hi for r in ranges.values()):
            call_aliasing(s, desc, ranges)

    def window(self, w: Window, shape: tuple[int, ...], ranges: Ranges) -> None:
        """The base is an in-bounds access, and so is the far corner in every direction."""
        declared = self.buffers.get(w.buffer.name)
        if declared != w.buffer:
            raise VerifyError(f"unknown buffer {w.buffer.name}", w)
        if len(w.base) != w.buffer.ndim:
            raise VerifyError(f"{w.buffer.name} has {w.buffer.ndim} dimensions but the window base has "
                              f"{len(w.base)} indices", w)
        for st in w.steps:
            if not all(INDEX_MIN <= c <= INDEX_MAX for c in st + (w.buffer.offset(st),)):
                raise VerifyError(f"a window step on {w.buffer.name} is too large: steps and the element "
                                  f"strides they make must fit i64", w)
        if any(r.lo > r.hi for r in ranges.values()):
            return
        for dim, idx in enumerate(w.base):
            if self.expr(idx, ranges) != INDEX or not is_affine_index(idx):
                raise VerifyError(f"the window base on {w.buffer.name} must be affine in the loop variables", w)
            _no_overflow(idx, ranges, f"the window base {show_expr(idx)} on {w.buffer.name}")
            r = interval(idx, ranges)
            lo = r.lo + sum(min(0, (n - 1) * st[dim]) for n, st in zip(shape, w.steps))
            hi = r.hi + sum(max(0, (n - 1) * st[dim]) for n, st in zip(shape, w.steps))
            if lo < 0 or hi >= w.buffer.shape[dim]:
                raise VerifyError(f"a window on {w.buffer.name} can go out of bounds: dimension {dim} "
                                  f"reaches {lo}..{hi} but is 0..{w.buffer.shape[dim] - 1}", w)

    def condition(self, e: Expr, ranges: Ranges, owner: object) -> None:
        if self.expr(e, ranges) != BOOL:
            raise VerifyError("a condition must be a comparison", owner)

    def access(self, buf: Buffer, indices: tuple[Expr, ...], ranges: Ranges, node: object) -> None:
        declared = self.buffers.get(buf.name)
        if declared is None:
            raise VerifyError(f"unknown buffer {buf.name}", node)
        if declared != buf:
            raise VerifyError(f"buffer {buf.name} is used as {buf.dtype}{list(buf.shape)} but declared "
                              f"as {declared.dtype}{list(declared.shape)}", node)
        if len(indices) != buf.ndim:
            raise VerifyError(f"{buf.name} has {buf.ndim} dimensions but is indexed with {len(indices)}", node)
        for dim, idx in enumerate(indices):
            if self.expr(idx, ranges) != INDEX:
                raise VerifyError(f"an index of {buf.name} must be an integer expression of loop variables", node)
            if not is_affine_index(idx):
                raise VerifyError(f"index {show_expr(idx)} of {buf.name} is not affine in the loop variables "
                                  "(allowed: sums of constant multiples, // and % by positive constants)", node)
            if any(r.lo > r.hi for r in ranges.values()):
                continue  # unreachable: an enclosing condition never holds
            _no_overflow(idx, ranges, f"index {show_expr(idx)} of {buf.name}")
            r = interval(idx, ranges)
            if (r.lo < 0 or r.hi >= buf.shape[dim]) and self.facts:
                exact = self.span(idx, ranges)
                if exact is None:
                    return  # unreachable: the enclosing conditions never hold together
                r = exact
            if r.lo < 0 or r.hi >= buf.shape[dim]:
                raise VerifyError(f"{_show_access(buf, indices)} can go out of bounds: index {show_expr(idx)} "
                                  f"takes values {r.lo}..{r.hi} but dimension {dim} of {buf.name} "
                                  f"is 0..{buf.shape[dim] - 1}", node)

    def span(self, idx: Expr, ranges: Ranges) -> Optional[Interval]:
        """The values of ``idx`` over the loop ranges cut by the enclosing conditions' facts
        (``polytope.span``: exact for triangular domains); the interval over the ranges alone
        where ``idx`` has ``//`` or ``%`` terms."""
        form = affine(idx, casts=False)
        if form is None:
            return interval(idx, ranges)
        box = {v: (r.lo, r.hi) for v, r in ranges.items()}
        r = polytope.span(form, box, tuple(self.facts))
        return None if r is None else Interval(*r)

    # -- expressions: returns the dtype ---------------------------------------------

    def expr(self, e: Expr, ranges: Ranges) -> str:
        if isinstance(e, Var):
            if e.name not in ranges:
                raise VerifyError(f"loop variable {e.name} is used outside its loop", e)
            return INDEX
        if isinstance(e, Const):
            if e.dtype not in DTYPES and e.dtype != BOOL:
                raise VerifyError(f"constant of unknown dtype {e.dtype}", e)
            if ir.is_int(e.dtype):
                lo, hi = ir.int_range(e.dtype)
                if not lo <= e.value <= hi:
                    raise VerifyError(f"the constant {e.value} does not fit {e.dtype}", e)
            return e.dtype
        if isinstance(e, Load):
            self.access(e.buffer, e.indices, ranges, e)
            return e.buffer.dtype
        if isinstance(e, Binary):
            a = self.infix(e, ranges, ir.BINARY_OPS, "operator", e.op)
            if a == BOOL:
                raise VerifyError(f"{e.op} does not apply to conditions", e)
            if e.op == "/" and not ir.is_float(a):
                raise VerifyError(f"/ is float division but its operands are {a}", e)
            if e.op in ("//", "%") and not ir.is_int(a):
                raise VerifyError(f"{e.op} is integer-only but its operands are {a}", e)
            return a
        if isinstance(e, Unary):
            a = self.expr(e.a, ranges)
            if e.op not in ir.UNARY_OPS:
                raise VerifyError(f"unknown operator {e.op}", e)
            if e.op == "not":
                if a != BOOL:
                    raise VerifyError("not applies to conditions", e)
                return BOOL
            if a == BOOL:
                raise VerifyError(f"{e.op} does not apply to conditions", e)
            if e.op in ("exp", "sqrt") and not ir.is_float(a):
                raise VerifyError(f"{e.op} takes a float, not {a}", e)
            if e.op == "neg" and isinstance(e.a, Const):
                raise VerifyError("a negated constant must be written as a negative constant", e)
            return a
        if isinstance(e, Cast):
            self.expr(e.a, ranges)
            if e.dtype not in DTYPES:
                raise VerifyError(f"cast to unknown dtype {e.dtype}", e)
            return e.dtype
        if isinstance(e, Select):
            if self.expr(e.cond, ranges) != BOOL:
                raise VerifyError("the condition of select() must be a comparison", e)
            a, b = self.expr(e.a, ranges), self.expr(e.b, ranges)
            if a != b:
                raise VerifyError(f"dtype mismatch in select(): {a} and {b}", e)
            return a
        if isinstance(e, Compare):
            self.infix(e, ranges, ir.COMPARE_OPS, "comparison", "a comparison")
            return BOOL
        if isinstance(e, Logical):
            if e.op not in ir.LOGICAL_OPS:
                raise VerifyError(f"unknown operator {e.op}", e)
            if self.expr(e.a, ranges) != BOOL or self.expr(e.b, ranges) != BOOL:
                raise VerifyError(f"{e.op} applies to conditions", e)
            return BOOL
        raise VerifyError(f"not an expression: {type(e).__name__}", e)

    def infix(self, e: Binary | Compare, ranges: Ranges, ops: tuple[str, ...], kind: str, where: str) -> str:
        """The one dtype of both operands of ``a op b``. Errors inside the operands come first,
        then an ``op`` not in ``ops`` ("unknown ``kind``"), then operands of two dtypes ("dtype
        mismatch in ``where``")."""
        a, b = self.expr(e.a, ranges), self.expr(e.b, ranges)
        if e.op not in ops:
            raise VerifyError(f"unknown {kind} {e.op}", e)
        if a != b:
            raise VerifyError(f"dtype mismatch in {where}: {a} and {b}", e)
        return a


def _no_overflow(idx: Expr, ranges: Ranges, what: str) -> None:
    found = index_overflow(idx, ranges)
    if found is not None:
        sub, r = found
        raise VerifyError(f"{what} computes {show_expr(sub)}, which can reach {r.lo}..{r.hi}: index "
                          f"arithmetic must stay within the 64-bit range", sub)



def _show_access(buf: Buffer, indices: tuple[Expr, ...]) -> str:
    return f"{buf.name}[{', '.join(show_expr(i) for i in indices)}]"


def verify(func: PrimFunc) -> PrimFunc:
    """Check ``func`` and return it; raise ``VerifyError`` on the first problem."""
    _Verifier(func).run()
    return func
