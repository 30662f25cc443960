"""What a program's intrinsic calls mean, and how much work a program does.

``expand_calls`` replaces every call by its intrinsic's semantics on the call's windows: the
program the dependence analysis, the interpreter and an emulation read. ``op_count`` counts
arithmetic (the cost model's unit and the numerator of GFLOP/s); ``reduction_length`` is the
longest chain of ``+=`` into one element (float tolerances scale with it).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Optional

from . import polytope
from .ir import (INDEX, Accumulate, Binary, Buffer, Call, Const, Expr, For, If, Load, PrimFunc, Seq,
                 Stmt, Store, Unary, Var, Window, children, fold_stmt, seq, walk_expr, walk_in_loops,
                 walk_stmts, with_children)

# Operators counted as one arithmetic operation each (``not`` is logic, loads are memory).
_COUNTED_UNARY = ("neg", "abs", "exp", "sqrt")


# ---------------------------------------------------------------------------
# operation counts (also the numerator of GFLOP/s in the benchmark)


def op_count(s: Stmt, per_store: int = 0, most_per_unit: Optional[int] = None) -> int:
    """Arithmetic operations ``s`` performs: each ``+ - * / // % max min neg abs exp sqrt`` in a
    stored value counts one, ``+=`` one more, times the number of times it runs. Index
    arithmetic is not counted. Under an ``if`` comparing affine indices (a triangular loop's
    guard, ``i >= 1``) a statement counts the iterations that pass it (``polytope.count``);
    other conditions count both arms (an upper bound). With ``per_store``, a store counts at
    least that much (work, for a copy with no arithmetic). With ``most_per_unit``, a call
    counts at most that many operations per unit of its descriptor's ``cost`` (time, where
    an intrinsic does more operations in a unit than another)."""
    def ops(x: Stmt) -> int:
        if isinstance(x, Call):
            n = op_count(x.intrinsic.semantics.body)
            if most_per_unit is not None:
                n = min(n, int(x.intrinsic.cost * most_per_unit))
            return max(per_store, n)
        extra = 1 if isinstance(x, Accumulate) else 0
        return max(per_store, extra + _value_ops(x.value))

    if not any(isinstance(x, If) and polytope.facts(x.cond) for x in walk_stmts(s)):
        return fold_stmt(s, ops)
    return _guarded_count(s, (), (), ops)


def _guarded_count(s: Stmt, loops: tuple[For, ...], facts: tuple, ops) -> int:
    if isinstance(s, For):
        return _guarded_count(s.body, loops + (s,), facts, ops)
    if isinstance(s, Seq):
        return sum(_guarded_count(c, loops, facts, ops) for c in s.stmts)
    if isinstance(s, If):
        arms = ((s.then, True), (s.orelse, False))
        return sum(_guarded_count(b, loops, facts + tuple(polytope.facts(s.cond, positive)), ops)
                   for b, positive in arms if b is not None)
    n = ops(s)
    if n == 0:
        return 0
    box = {f.var: (f.start, f.stop - 1) for f in loops}
    return n * polytope.count(box, facts)


def _value_ops(e: Expr) -> int:
    """Arithmetic in a value, not in the indices of its loads (address arithmetic)."""
    if isinstance(e, Load):
        return 0
    own = isinstance(e, Binary) or (isinstance(e, Unary) and e.op in _COUNTED_UNARY)
    return int(own) + sum(_value_ops(c) for c in children(e))


def reduction_length(func: PrimFunc) -> int:
    """The longest chain of ``+=`` into one element: for each accumulation, the product of the
    extents of the enclosing loops its indices do not use. Float tolerances scale with it.
    A store that reads the element it writes (``C[w] = C[w] + e``) chains like ``+=``: as
    written, the tolerance was that of one addition where the program sums a whole loop."""
    best = 1
    for s, loops in walk_in_loops(expand_calls(func).body):
        if isinstance(s, Accumulate) or isinstance(s, Store) and any(
                isinstance(x, Load) and x.buffer == s.buffer and x.indices == s.indices
                for x in walk_expr(s.value)):
            used = {x.name for i in s.indices for x in walk_expr(i) if isinstance(x, Var)}
            best = max(best, math.prod(f.extent for f in loops if f.var not in used))
    return best


# ---------------------------------------------------------------------------
# intrinsic calls by their meaning


def expand_calls(func: PrimFunc) -> PrimFunc:
    """``func`` with every intrinsic call replaced by its semantics on the call's windows:
    the program the dependence analysis (and an emulation) reads. Unchanged without calls::

        call("x86.fma.f32x8", c=window(C, [i, 0], [[0, 1]]), a=..., b=...)
        ->
        for i_0 in range(8):
            C[i, 0 + i_0] += A[...] * B[...]
    """
    if not any(isinstance(s, Call) for s in walk_stmts(func.body)):
        return func
    counter = [0]
    return replace(func, body=_expand(func.body, counter))


def _expand(s: Stmt, counter: list[int]) -> Stmt:
    if isinstance(s, For):
        return For(s.var, s.start, s.stop, _expand(s.body, counter))
    if isinstance(s, Seq):
        return seq(*(_expand(c, counter) for c in s.stmts))
    if isinstance(s, If):
        orelse = None if s.orelse is None else _expand(s.orelse, counter)
        return If(s.cond, _expand(s.then, counter), orelse)
    if isinstance(s, Call):
        counter[0] += 1
        return _inline(s, f"_call{counter[0]}_")
    return s


def _inline(call: Call, prefix: str) -> Stmt:
    """The intrinsic's loop nest with fresh loop names and each operand access moved onto
    the window it stands for."""
    windows = dict(call.operands)

    def stmt(s: Stmt) -> Stmt:
        if isinstance(s, For):
            return For(prefix + s.var, s.start, s.stop, stmt(s.body))
        if isinstance(s, Seq):
            return seq(*(stmt(c) for c in s.stmts))
        if isinstance(s, (Store, Accumulate)):
            buf, idx = access(s.buffer.name, s.indices)
            return type(s)(buf, idx, expr(s.value))
        raise ValueError(f"intrinsic {call.intrinsic.name}: cannot inline a {type(s).__name__}")

    def access(name: str, indices: tuple[Expr, ...]) -> tuple[Buffer, tuple[Expr, ...]]:
        w: Window = windows[name]
        out = []
        for k, base in enumerate(w.base):
            e = base
            for d, idx in enumerate(indices):
                step = w.steps[d][k]
                if step and not (isinstance(idx, Const) and idx.value == 0):
                    e = Binary("+", e, Binary("*", rename(idx), Const(step, INDEX)))
            out.append(e)
        return w.buffer, tuple(out)

    def rename(e: Expr) -> Expr:
        if isinstance(e, Var):
            return Var(prefix + e.name)
        if isinstance(e, Binary):
            return Binary(e.op, rename(e.a), rename(e.b))
        return e

    def expr(e: Expr) -> Expr:
        if isinstance(e, Load):
            buf, idx = access(e.buffer.name, e.indices)
            return Load(buf, idx)
        if isinstance(e, Var):
            return rename(e)
        return with_children(e, tuple(expr(c) for c in children(e)))

    return stmt(call.intrinsic.semantics.body)

