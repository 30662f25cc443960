"""Lowering: a verified ``PrimFunc`` -> the plan of one native kernel.

A kernel takes one array of buffer pointers (the parameters in order, then the
temporaries) and runs the function body split at the top level into *parts*:
runs of statements executed once, and loops that the dependence analysis proves
parallel, whose iterations the runtime shares out between threads::

    for i in range(512):            # part 0, parallel: iterations [lo, hi) per thread
        for j in range(512):
            C[i, j] = 0.0
    for t in range(4):              # part 1, serial: t carries a dependence
        X[0] = X[0] * 2.0

Only top-level loops become parallel parts: a parallel loop nested in a carried
one would need a fork and join per outer iteration, which is left serial.
The IR has no intrinsic call node yet; when it has, their expansion belongs here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from . import analysis
from .ir import (Accumulate, Binary, Buffer, Expr, For, If, PrimFunc, Seq, Stmt, Unary, Var, seq,
                 stmts_of, walk_expr)

# Below this many arithmetic operations a loop runs on the calling thread: waking the
# workers and joining them costs a few microseconds, which such a loop does not repay.
MIN_PARALLEL_OPS = 1 << 15

# Operators counted as one arithmetic operation each (``not`` is logic, loads are memory).
_COUNTED_UNARY = ("neg", "abs", "exp", "sqrt")


@dataclass(frozen=True, slots=True)
class Part:
    """Top-level statements run as one unit; ``parallel`` means ``body`` is a ``For`` whose
    iterations may run on any thread in any order."""

    body: Stmt
    parallel: bool


@dataclass(frozen=True, slots=True)
class Plan:
    """What codegen emits for one function."""

    func: PrimFunc
    buffers: tuple[Buffer, ...]  # order of the kernel's pointer array: params, then allocs
    parts: tuple[Part, ...]


def lower(func: PrimFunc) -> Plan:
    """Split ``func``'s body into serial and parallel parts (see the module docstring)."""
    parts: list[Part] = []
    pending: list[Stmt] = []  # consecutive serial statements become one part
    for k, s in enumerate(stmts_of(func.body)):
        if _worth_threads(func, k, s):
            if pending:
                parts.append(Part(seq(*pending), False))
                pending = []
            parts.append(Part(s, True))
        else:
            pending.append(s)
    if pending:
        parts.append(Part(seq(*pending), False))
    return Plan(func, func.params + func.allocs, tuple(parts))


def _worth_threads(func: PrimFunc, position: int, s: Stmt) -> bool:
    if not isinstance(s, For) or s.extent < 2 or op_count(s) < MIN_PARALLEL_OPS:
        return False
    return analysis.can_parallelize(func, (position,))


# ---------------------------------------------------------------------------
# operation counts (also the numerator of GFLOP/s in the benchmark)


def op_count(s: Stmt) -> int:
    """Arithmetic operations ``s`` performs: each ``+ - * / // % max min neg abs exp sqrt`` in a
    stored value counts one, ``+=`` one more, times the trip counts of the enclosing loops.
    Index arithmetic is not counted; both arms of an ``if`` are (an upper bound)."""
    if isinstance(s, For):
        return s.extent * op_count(s.body)
    if isinstance(s, Seq):
        return sum(op_count(c) for c in s.stmts)
    if isinstance(s, If):
        return op_count(s.then) + (op_count(s.orelse) if s.orelse is not None else 0)
    extra = 1 if isinstance(s, Accumulate) else 0
    return extra + _value_ops(s.value)


def _value_ops(e: Expr) -> int:
    n = 0
    for x in walk_expr(e):
        if isinstance(x, Binary) or (isinstance(x, Unary) and x.op in _COUNTED_UNARY):
            n += 1
    return n


def reduction_length(func: PrimFunc) -> int:
    """The longest chain of ``+=`` into one element: for each accumulation, the product of the
    extents of the enclosing loops its indices do not use. Float tolerances scale with it."""
    best = 1

    def visit(s: Stmt, loops: tuple[For, ...]) -> None:
        nonlocal best
        if isinstance(s, For):
            visit(s.body, loops + (s,))
        elif isinstance(s, (Seq, If)):
            for c in (s.stmts if isinstance(s, Seq) else (s.then, s.orelse)):
                if c is not None:
                    visit(c, loops)
        elif isinstance(s, Accumulate):
            used = {x.name for i in s.indices for x in walk_expr(i) if isinstance(x, Var)}
            best = max(best, math.prod(f.extent for f in loops if f.var not in used))

    visit(func.body, ())
    return best
