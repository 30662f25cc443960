"""Lowering: a verified ``PrimFunc`` -> the plan of one native kernel.

First each top-level loop nest gets the loop order whose innermost loop walks memory
with unit stride (``schedule``; legal by the dependence analysis). Then the kernel is
planned: it takes one array of buffer pointers (the parameters in order, then the
temporaries) and runs the body split at the top level into *parts*: runs of statements
executed once, and loops the dependence analysis proves parallel, whose iterations the
runtime shares out between threads::

    for i in range(512):            # part 0, parallel: iterations [lo, hi) per thread
        for j in range(512):
            C[i, j] = 0.0
    for t in range(4):              # part 1, serial: t carries a dependence
        X[0] = X[0] * 2.0

Only top-level loops become parallel parts: a parallel loop nested in a carried
one would need a fork and join per outer iteration, which is left serial. A top-level loop
of one iteration is its body with the variable fixed, so the loop inside it counts as
top-level (``_without_unit_loops``); so do the loops of a top-level ``if`` whose condition
its branches leave alone (a finite-operand guard, ``rules/finite.py``): the condition moves
inside them (``_split_guards``). Intrinsic calls stay calls; ``calls.expand_calls`` gives the
dependence analysis (and the interpreter) their meaning.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

from . import analysis
from .affine import affine
from .calls import expand_calls, op_count
from .ir import (INDEX, Accumulate, Binary, Buffer, Const, Expr, For, If, PrimFunc, Stmt, Store,
                 Unary, Var, loads_of, seq, stmts_of, walk_expr, substitute_stmt, walk_stmts, written_by)

# Below this many arithmetic operations a loop runs on the calling thread: waking the
# workers and joining them costs a few microseconds, which such a loop does not repay.
MIN_PARALLEL_OPS = 1 << 15


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
    """Choose loop orders (``schedule``), then split the body into serial and parallel parts
    (see the module docstring)."""
    func = _without_unit_loops(_split_guards(_without_unit_loops(schedule(func))))
    meaning = expand_calls(func)  # what the dependence analysis reads
    parts: list[Part] = []
    pending: list[Stmt] = []  # consecutive serial statements become one part
    for k, s in enumerate(stmts_of(func.body)):
        # a lone intrinsic call (no loop to split) stays serial, however much work it does
        if isinstance(s, For) and _worth_threads(meaning, k, stmts_of(meaning.body)[k]):
            if pending:
                parts.append(Part(seq(*pending), False))
                pending = []
            parts.append(Part(_collapsed(meaning, k, s), True))
        else:
            pending.append(s)
    if pending:
        parts.append(Part(seq(*pending), False))
    return Plan(func, func.params + func.allocs, tuple(parts))


def _without_unit_loops(func: PrimFunc) -> PrimFunc:
    """Each top-level loop of one iteration becomes its body with the variable fixed, so that
    the loop inside it can be shared between threads (NHWC's batch loop of 1 around a
    convolution): ``for n in range(1): for h in range(56): ...`` -> ``for h in range(56):
    ...`` with ``n`` read as 0."""
    body = []
    for s in stmts_of(func.body):
        while isinstance(s, For) and s.extent == 1:
            s = substitute_stmt(s.body, {s.var: Const(s.start, INDEX)})
        body.append(s)
    return replace(func, body=seq(*body))


def _split_guards(func: PrimFunc) -> PrimFunc:
    """Each top-level ``if`` whose branches leave its condition unchanged (the guard of
    ``rules/finite.py``) becomes one guarded statement per statement of its branches, the
    condition moved inside a leading loop, so that a loop of either branch is still a
    top-level loop that may run in parallel::

        if F[0] == 0.0:                         for i in range(512):
            for i in range(512):                    if F[0] == 0.0:
                S[i] = A[i] + B[i]      ->              S[i] = A[i] + B[i]
        else:                                   for i in range(512):
            for i in range(512):                    if not F[0] == 0.0:
                C[i] += A[i]                            C[i] += A[i]

    Exact: the condition reads only buffers neither branch writes and no loop variable, so
    it has one value throughout."""
    out: list[Stmt] = []
    changed = False
    for s in stmts_of(func.body):
        reads = {x.buffer.name for x in loads_of(s.cond)} if isinstance(s, If) else set()
        if not isinstance(s, If) or any(isinstance(x, Var) for x in walk_expr(s.cond)) or \
                reads & written_by(s.then) or (s.orelse is not None and reads & written_by(s.orelse)):
            out.append(s)
            continue
        changed = True
        out += [_when(s.cond, t) for t in stmts_of(s.then)]
        if s.orelse is not None:
            out += [_when(Unary("not", s.cond), t) for t in stmts_of(s.orelse)]
    return replace(func, body=seq(*out)) if changed else func


def _when(cond: Expr, s: Stmt) -> Stmt:
    if isinstance(s, For):
        return For(s.var, s.start, s.stop, If(cond, s.body))
    return If(cond, s)


# A parallel loop with fewer iterations than this is merged with the loop inside it, so
# that threads get even shares (7 row tiles split 4 / 3 between two threads).
MIN_SHARED_ITERATIONS = 16


def _collapsed(func: PrimFunc, position: int, s: For) -> Stmt:
    """``s``, or, when it has few iterations and holds exactly one loop that is parallel too,
    the two as one loop over both, in the same order::

        for h_o in range(7):             for h_o_w in range(392):
            for w in range(56):     ->       ... h_o := h_o_w // 56, w := h_o_w % 56

    Legal because neither loop carries a dependence; each thread's share is then a run of
    consecutive (h_o, w) pairs, the order one thread would run them in."""
    inner = stmts_of(s.body)
    if s.extent >= MIN_SHARED_ITERATIONS or len(inner) != 1 or not isinstance(inner[0], For) \
            or inner[0].extent < 2 or not analysis.can_parallelize(func, (position, 0)):
        return s
    inner = inner[0]
    taken = {x.var for x in walk_stmts(s) if isinstance(x, For)}
    name = f"{s.var}_{inner.var}"
    while name in taken:
        name += "_"
    t, n = Var(name), Const(inner.extent, INDEX)
    values = {s.var: Binary("+", Const(s.start, INDEX), Binary("//", t, n)),
              inner.var: Binary("+", Const(inner.start, INDEX), Binary("%", t, n))}
    return For(name, 0, s.extent * inner.extent, substitute_stmt(inner.body, values))


def _worth_threads(func: PrimFunc, position: int, s: Stmt) -> bool:
    # a copy (a packing stage, a padded input) has no arithmetic but is worth threads too
    if not isinstance(s, For) or s.extent < 2 or op_count(s, per_store=1) < MIN_PARALLEL_OPS:
        return False
    return analysis.can_parallelize(func, (position,))


# ---------------------------------------------------------------------------
# loop order


# Cost of one access per iteration of the innermost loop, by its stride there: invariant
# (kept in a register), unit stride (vector loads), anything else (gathers, cache misses).
_INVARIANT, _UNIT, _STRIDED = 0, 1, 8


def schedule(func: PrimFunc) -> PrimFunc:
    """Pick, for each top-level loop nest, the loop order that makes the innermost loop walk
    memory with unit stride, when the dependence analysis allows it::

        for i, j in grid(N, M):             for i, j in grid(N, M):
            C[i, j] = 0.0                       C[i, j] = 0.0
            for k in range(K):       ->     for i, k, j in grid(N, K, M):
                C[i, j] += A[i, k] * B[k, j]    C[i, j] += A[i, k] * B[k, j]

    A nest whose innermost body holds several statements is first distributed into one nest
    per statement, which is legal when no dependence runs from a later statement back to an
    earlier one. Sums keep their order: a loop order is taken only when legal without
    reassociating ``+=``. Nothing changes unless some loop order gets cheaper."""
    out: list[Stmt] = []
    changed = False
    meaning = expand_calls(func)  # what the dependence analysis reads
    for k, s in enumerate(stmts_of(func.body)):
        if isinstance(s, If):  # its branches run as they are, so each gets its own loop orders
            then = schedule(replace(func, body=s.then)).body
            orelse = None if s.orelse is None else schedule(replace(func, body=s.orelse)).body
            nests = [If(s.cond, then, orelse)]
        else:
            nests = _reorder(meaning, k, s)
        changed = changed or nests != [s]
        out.extend(nests)
    return replace(func, body=seq(*out)) if changed else func


def _reorder(func: PrimFunc, position: int, s: Stmt) -> list[Stmt]:
    """``func`` is the whole program with calls expanded (for legality); ``s`` its statement
    at ``position`` as written."""
    loops, body = _band_of(s)
    if not loops:
        return [s]
    groups = stmts_of(body)
    nests = [_wrap(loops, g) for g in groups] if len(groups) > 1 else [s]
    better = [_best_order(func, n) for n in nests]
    if all(b is None for b in better):
        return [s]
    if len(groups) > 1 and not _distributable(func, position, len(loops)):
        return [s]
    return [b if b is not None else n for b, n in zip(better, nests)]


def _band_of(s: Stmt) -> tuple[list[For], Stmt]:
    loops = []
    while isinstance(s, For):
        loops.append(s)
        s = s.body
    return loops, s


def _wrap(loops: list[For], body: Stmt) -> Stmt:
    for f in reversed(loops):
        body = For(f.var, f.start, f.stop, body)
    return body


def _distributable(func: PrimFunc, position: int, depth: int) -> bool:
    """Every dependence between two statements of the band's body runs forward."""
    prefix = (position,) + (0,) * (depth - 1)
    n = len(prefix)
    for d in analysis.analyze(func).dependences:
        a, b = d.source.path, d.sink.path
        if a[:n] == prefix and b[:n] == prefix and len(a) > n and len(b) > n and a[n] > b[n]:
            return False
    return True


def _best_order(func: PrimFunc, nest: Stmt) -> Optional[Stmt]:
    """``nest`` with the cheapest loop innermost (the others keep their order), or None when
    the current order is as cheap or the cheaper one is illegal."""
    loops, body = _band_of(nest)
    if len(loops) < 2 or not isinstance(body, (Store, Accumulate)):
        return None
    costs = [_innermost_cost(body, f.var) for f in loops]
    best = min(range(len(loops)), key=lambda k: (costs[k], k != len(loops) - 1))
    if costs[best] >= costs[-1]:
        return None
    order = [k for k in range(len(loops)) if k != best] + [best]
    alone = replace(func, body=nest)
    if not analysis.can_permute(alone, (0,), order, allow_reassociation=False):
        return None
    return _wrap([loops[k] for k in order], body)


def _innermost_cost(s: Stmt, var: str) -> int:
    accesses = [(s.buffer, s.indices)] + [(x.buffer, x.indices) for x in loads_of(s.value)]
    for i in s.indices:
        accesses += [(x.buffer, x.indices) for x in loads_of(i)]
    return sum(_access_cost(buf, idx, var) for buf, idx in accesses)


def _access_cost(buf: Buffer, indices: tuple[Expr, ...], var: str) -> int:
    stride, step = 0, 1
    for dim, idx in reversed(list(zip(buf.shape, indices))):
        m = affine(idx)
        if m is None:
            uses = any(isinstance(x, Var) and x.name == var for x in walk_expr(idx))
            if uses:
                return _STRIDED
        else:
            stride += m.coeff(var) * step
        step *= dim
    if stride == 0:
        return _INVARIANT
    return _UNIT if abs(stride) == 1 else _STRIDED
