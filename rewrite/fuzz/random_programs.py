"""Hypothesis strategies for random well-formed loop programs (the test suite's, through
``tests/strategies.py``).

``programs()`` draws a ``PrimFunc`` that the verifier accepts: loop nests with
constant bounds, in-bounds affine indices (some through ``%`` and ``//``), mixed
dtypes joined by written casts, conditionals, temporaries, accumulations.
Constants only appear where their dtype follows from context, as the parser
infers it, so ``parse(show(f)) == f`` is a fair property to test.
"""

from __future__ import annotations

from typing import Optional, Sequence

from hypothesis import strategies as st

from .. import ir
from ..ir import (INDEX, Accumulate, Binary, Buffer, Cast, Compare, Const, Expr, For, If,
                  Load, PrimFunc, Select, Stmt, Store, Unary, Var)

_NAMES = "ABCDEFGH"


@st.composite
def buffers(draw, dtypes: Sequence[str] = ir.DTYPES, max_buffers: int = 4, max_dim: int = 6):
    n = draw(st.integers(2, max_buffers))
    out = []
    for k in range(n):
        ndim = draw(st.integers(1, 3))
        shape = tuple(draw(st.integers(1, max_dim)) for _ in range(ndim))
        out.append(Buffer(_NAMES[k], draw(st.sampled_from(list(dtypes))), shape))
    return out


class _Scope:
    """The loop variables in scope, each with its inclusive range."""

    def __init__(self, ranges: dict[str, tuple[int, int]]):
        self.ranges = ranges

    def inner(self, var: str, lo: int, hi: int) -> "_Scope":
        r = dict(self.ranges)
        r[var] = (lo, hi)
        return _Scope(r)


@st.composite
def _index(draw, size: int, scope: _Scope) -> Expr:
    """An index guaranteed to lie in ``0..size-1`` for every value of the loop variables."""
    choices = list(scope.ranges)
    kind = draw(st.sampled_from(["affine", "affine", "mod", "const"] if choices else ["const"]))
    if kind == "const":
        return Const(draw(st.integers(0, size - 1)), INDEX)
    var = draw(st.sampled_from(choices))
    lo, hi = scope.ranges[var]
    coef = draw(st.sampled_from([1, 1, -1, 2]))
    term: Expr = Var(var) if coef == 1 else Binary("*", Const(coef, INDEX), Var(var))
    if kind == "mod":
        offset = draw(st.integers(-3, 3))
        inner = term if offset == 0 else Binary("+", term, Const(offset, INDEX))
        return Binary("%", inner, Const(size, INDEX))
    a, b = sorted((coef * lo, coef * hi))
    if b - a > size - 1:
        return Binary("//", Binary("%", term, Const(size, INDEX)), Const(1, INDEX)) \
            if draw(st.booleans()) else Binary("%", term, Const(size, INDEX))
    offset = draw(st.integers(-a, size - 1 - b))
    return term if offset == 0 else Binary("+", term, Const(offset, INDEX))


@st.composite
def _load(draw, bufs: list[Buffer], dtype: str, scope: _Scope) -> Optional[Load]:
    same = [b for b in bufs if b.dtype == dtype]
    if not same:
        return None
    b = draw(st.sampled_from(same))
    return Load(b, tuple(draw(_index(s, scope)) for s in b.shape))


def _ops(dtype: str) -> list[str]:
    ops = ["+", "-", "*", "max", "min"]
    return ops + (["/"] if ir.is_float(dtype) else ["//", "%"])


@st.composite
def _expr(draw, bufs: list[Buffer], dtype: str, scope: _Scope, depth: int) -> Expr:
    """A non-constant expression of ``dtype``."""
    others = [b for b in bufs if b.dtype != dtype]
    leaves = []
    if any(b.dtype == dtype for b in bufs):
        leaves += ["load", "load"]
    if others:
        leaves.append("cast")
    if scope.ranges:
        leaves.append("var")
    kinds = list(leaves)
    if depth > 0:
        kinds += ["binary", "binary", "const-binary", "unary"] + (["select"] if depth > 1 else [])
    if not kinds:  # nothing of this dtype to read: cast a loop-free constant load
        kinds = ["cast"] if others else []
    kind = draw(st.sampled_from(kinds))
    if kind == "load":
        return draw(_load(bufs, dtype, scope))
    if kind == "cast":
        src = draw(st.sampled_from(others))
        inner = Load(src, tuple(draw(_index(s, scope)) for s in src.shape))
        return Cast(dtype, inner)
    if kind == "var":
        v = Var(draw(st.sampled_from(list(scope.ranges))))
        return v if dtype == INDEX else Cast(dtype, v)
    sub = lambda: draw(_expr(bufs, dtype, scope, depth - 1))  # noqa: E731
    if kind == "binary":
        return Binary(draw(st.sampled_from(_ops(dtype))), sub(), sub())
    if kind == "const-binary":
        c = draw(_const(dtype))
        e = sub()
        op = draw(st.sampled_from(_ops(dtype)))
        return Binary(op, c, e) if draw(st.booleans()) else Binary(op, e, c)
    if kind == "unary":
        ops = ["neg", "abs"] + (["exp", "sqrt"] if ir.is_float(dtype) else [])
        return Unary(draw(st.sampled_from(ops)), sub())
    cond = draw(_condition(bufs, scope, depth - 1))
    return Select(cond, sub(), sub())


@st.composite
def _const(draw, dtype: str) -> Const:
    if ir.is_float(dtype):
        return Const(draw(st.sampled_from([0.0, 1.0, 0.5, 2.0, -1.5, 3.25])), dtype)
    lo, hi = ir.int_range(dtype)
    return Const(draw(st.one_of(st.integers(-3, 3).filter(lambda v: lo <= v <= hi),
                                st.sampled_from([lo, hi]))), dtype)


@st.composite
def _condition(draw, bufs: list[Buffer], scope: _Scope, depth: int) -> Expr:
    if scope.ranges and draw(st.booleans()):
        var = draw(st.sampled_from(list(scope.ranges)))
        lo, hi = scope.ranges[var]
        return Compare(draw(st.sampled_from(["<", "<=", ">", ">=", "==", "!="])), Var(var),
                       Const(draw(st.integers(lo, hi)), INDEX))
    dtype = draw(st.sampled_from(sorted({b.dtype for b in bufs})))
    a = draw(_expr(bufs, dtype, scope, max(depth, 0)))
    return Compare(draw(st.sampled_from(["<", ">", "==", "!="])), a, draw(_const(dtype)))


@st.composite
def _store(draw, bufs: list[Buffer], outs: list[Buffer], scope: _Scope, depth: int) -> Stmt:
    b = draw(st.sampled_from(outs))
    idx = tuple(draw(_index(s, scope)) for s in b.shape)
    value = draw(_const(b.dtype)) if draw(st.integers(0, 5)) == 0 \
        else draw(_expr(bufs, b.dtype, scope, depth))
    return (Accumulate if draw(st.booleans()) else Store)(b, idx, value)


@st.composite
def _stmt(draw, bufs, outs, scope: _Scope, depth: int, nest: int, counter: list[int]) -> Stmt:
    kinds = ["store"] + (["loop", "loop"] if nest > 0 else []) + (["if"] if depth > 0 else [])
    kind = draw(st.sampled_from(kinds))
    if kind == "store":
        return draw(_store(bufs, outs, scope, draw(st.integers(0, 2))))
    if kind == "if":
        cond = draw(_condition(bufs, scope, 1))
        then = draw(_block(bufs, outs, scope, depth - 1, nest, counter))
        orelse = draw(st.none() | _block(bufs, outs, scope, depth - 1, nest, counter))
        return If(cond, then, orelse)
    counter[0] += 1
    var = f"x{counter[0]}"
    start = draw(st.sampled_from([0, 0, 0, 1, 2]))
    stop = start + draw(st.integers(1, 5))
    body = draw(_block(bufs, outs, scope.inner(var, start, stop - 1), depth, nest - 1, counter))
    return For(var, start, stop, body)


@st.composite
def _block(draw, bufs, outs, scope: _Scope, depth: int, nest: int, counter: list[int]) -> Stmt:
    n = draw(st.sampled_from([1, 1, 2, 3]))
    return ir.seq(*(draw(_stmt(bufs, outs, scope, depth, nest, counter)) for _ in range(n)))


@st.composite
def programs(draw, dtypes: Sequence[str] = ir.DTYPES, max_nest: int = 3, max_buffers: int = 4,
             temporaries: bool = True) -> PrimFunc:
    """A random well-formed ``PrimFunc``; every index is in bounds by construction."""
    bufs = draw(buffers(dtypes, max_buffers))
    allocs: list[Buffer] = []
    if temporaries and draw(st.booleans()):
        t = Buffer("T", draw(st.sampled_from(list(dtypes))), (draw(st.integers(1, 6)),))
        allocs.append(t)
    everything = bufs + allocs
    outs = [bufs[-1]] + allocs + ([bufs[-2]] if draw(st.booleans()) else [])
    body = draw(_block(everything, outs, _Scope({}), 1, max_nest, [0]))
    return PrimFunc("fuzzed", tuple(bufs), body, tuple(allocs))


# ---------------------------------------------------------------------------
# differentiable programs (for rewrite.grad)


@st.composite
def _diff_index(draw, size: int, loops: dict[str, int]) -> Expr:
    """An in-bounds index into a dimension of ``size``: a constant, a loop variable, a shifted
    one ``v + 2``, a window ``v + r``, or a stride ``2 * v``, whichever fits."""
    kinds = ["const"]
    fits = [v for v, n in loops.items() if n <= size]
    if fits:
        kinds += ["var", "var"]
    pairs = [(a, b) for a in loops for b in loops if a < b and loops[a] + loops[b] - 1 <= size]
    if pairs:
        kinds.append("window")
    strided = [v for v, n in loops.items() if 2 * (n - 1) < size]
    if strided:
        kinds.append("stride")
    shifted = [v for v, n in loops.items() if n < size]
    if shifted:
        kinds.append("shift")
    kind = draw(st.sampled_from(kinds))
    if kind == "var":
        return Var(draw(st.sampled_from(fits)))
    if kind == "shift":
        v = draw(st.sampled_from(shifted))
        return Binary("+", Var(v), Const(draw(st.integers(1, size - loops[v])), INDEX))
    if kind == "window":
        a, b = draw(st.sampled_from(pairs))
        return Binary("+", Var(a), Var(b))
    if kind == "stride":
        return Binary("*", Const(2, INDEX), Var(draw(st.sampled_from(strided))))
    return Const(draw(st.integers(0, size - 1)), INDEX)


@st.composite
def _diff_expr(draw, sources: list[Buffer], loops: dict[str, int], depth: int) -> Expr:
    dt = "f32"
    if depth == 0 or draw(st.integers(0, 3)) == 0:
        b = draw(st.sampled_from(sources))
        return Load(b, tuple(draw(_diff_index(n, loops)) for n in b.shape))
    kind = draw(st.sampled_from(["+", "-", "*", "*", "max", "min", "exp", "neg", "abs", "select",
                                 "div", "sqrt", "const"]))
    a = draw(_diff_expr(sources, loops, depth - 1))
    if kind in ("exp", "neg", "abs"):
        return Unary(kind, a)
    if kind == "const":
        return Binary("*", Const(draw(st.sampled_from([0.5, 2.0, -1.5])), dt), a)
    b = draw(_diff_expr(sources, loops, depth - 1))
    if kind == "div":  # a denominator kept away from zero
        return Binary("/", a, Binary("+", Const(2.0, dt), Binary("*", b, b)))
    if kind == "sqrt":
        return Unary("sqrt", Binary("+", Const(1.0, dt), Binary("*", a, a)))
    if kind == "select":
        c = draw(_diff_expr(sources, loops, 0))
        return Select(Compare("<", c, Const(0.0, dt)), a, b)
    return Binary(kind, a, b)


@st.composite
def differentiable_programs(draw, max_stages: int = 3) -> PrimFunc:
    """A random f32 program that ``rewrite.grad`` accepts: stages that each write a whole new
    buffer (a temporary, the output last) at its plain loop variables, from loads of the
    inputs and of earlier stages at constants, variables, windows and strides, through
    ``+ - * / max min exp sqrt abs select``; a stage may reduce over an extra loop by a sum
    or a running maximum."""
    inputs = []
    for k in range(draw(st.integers(1, 3))):
        shape = tuple(draw(st.integers(2, 5)) for _ in range(draw(st.integers(1, 2))))
        inputs.append(Buffer(_NAMES[k], "f32", shape))
    stages = draw(st.integers(1, max_stages))
    sources = list(inputs)
    allocs: list[Buffer] = []
    body: list[Stmt] = []
    out = None
    for s in range(stages):
        shape = tuple(draw(st.integers(1, 4)) for _ in range(draw(st.integers(1, 2))))
        last = s == stages - 1
        buf = Buffer("Y" if last else f"T{s}", "f32", shape)
        names = [f"i{d}" for d in range(len(shape))]
        loops = dict(zip(names, shape))
        reduce = draw(st.sampled_from(["none", "none", "sum", "max"]))
        if reduce != "none":
            loops["r"] = draw(st.integers(2, 3))
        value = draw(_diff_expr(sources, loops, 2))
        idx = tuple(Var(n) for n in names)
        if reduce == "none":
            nest: Stmt = Store(buf, idx, value)
        else:
            init = Const(0.0 if reduce == "sum" else -1e30, "f32")
            step = Accumulate(buf, idx, value) if reduce == "sum" else \
                Store(buf, idx, Binary("max", Load(buf, idx), value))
            nest = ir.seq(Store(buf, idx, init), For("r", 0, loops["r"], step))
        for n in reversed(names):
            nest = For(n, 0, loops[n], nest)
        body.append(nest)
        if last:
            out = buf
        else:
            allocs.append(buf)
        sources.append(buf)
    return PrimFunc("fuzzed", tuple(inputs) + (out,), ir.seq(*body), tuple(allocs))
