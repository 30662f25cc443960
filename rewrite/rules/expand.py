"""expand: a temporary that every iteration of a loop reuses gets one copy per iteration
(scalar expansion), so that the loop can be distributed.

PolyBench's ``doitgen`` computes one row ``sum`` per ``(r, q)`` and copies it back into
``A``. The row is the same buffer in every iteration, so each iteration overwrites what the
one before it read: a dependence backwards from the copy to the product, carried by ``r``
and ``q``, which forbids distributing them, and the vector-matrix product inside is never
an accumulate nest. With a copy of ``sum`` per iteration the loops distribute into a zero
fill, a batched product (``sumx[r, q, p] += A[r, q, s] * C4[s, p]``, a matmul over the rows
``(r, q)``) and the copy back::

    for r, q in grid(50, 40):                    for r, q in grid(50, 40):
        for p in range(60):                          for p in range(60):
            sum[p] = 0.0                                 sumx[r, q, p] = 0.0
            for s in range(60):               ->         for s in range(60):
                sum[p] += A[r, q, s] * C4[s, p]              sumx[r, q, p] += A[r, q, s] * C4[s, p]
        for p in range(60):                          for p in range(60):
            A[r, q, p] = sum[p]                          A[r, q, p] = sumx[r, q, p]
                                                 for p in range(60):
                                                     sum[p] = sumx[49, 39, p]

Which buffers, and over which loops, is the dependence analysis's answer
(``analysis.reused``): a buffer ``T`` that every iteration of the loops around the statements
writes before it reads it (``analysis.written_before_read``: each load and ``+=`` of ``T`` is
covered by a store of the same iteration that runs whenever it does), expanded along the
loops among those that carry a dependence on it. Every access of ``T`` inside the loops reads
and writes ``Tx[i, f]`` for ``T[f]``, ``i`` the iteration of those loops.

Soundness. The loops still run their iterations in order, so each read of ``T[f]`` in
iteration ``i`` still gets the value the last store to ``T[f]`` before it gave, which by
write-before-read was a store of iteration ``i``: in the expanded program that store wrote
``Tx[i, f]``, which no other iteration touches, so the read gets the same value. The values
computed inside the loops are unchanged. What changes is ``T`` after them: it is left as it
was (the loops no longer write it), so when ``T`` is a parameter (an output) or a later
statement reads it, its final values are restored, ``T[f] = Tx[last, f]`` for every element
a store inside the loops writes, right after the loops. That is what the program leaves only
when every iteration writes the same elements unconditionally (``Reuse.same_writes``: no
``if`` around the stores inside the loops, indices that do not move with the loops): the last
store to each such element is then one of the last iteration. Otherwise an expansion that
needs the restore is refused. A temporary never read after the loops needs none.

Refused also: a loop that binds one of the expanded loops' names again inside (the index
``Tx[i, ...]`` would mean the inner one), loops that never run (nothing to gain, and no last
iteration), and a copy of more than ``EXPANSION_LIMIT`` elements. The distribution that
follows is ``nests.normalize``'s, checked by the dependence analysis on the expanded
program as on any other.

It is a ``spans`` family, not a ``normalize`` one: it adds a temporary and the statements
that restore the buffer, which are a function's, not a list of items; and the copy per
iteration costs memory and traffic, so the expanded program is kept only when the cost model
finds it cheaper (when the nests it exposes run on intrinsics).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Optional, Sequence

from .. import analysis, ir, nests
from ..calls import op_count
from ..ir import Accumulate, Binary, Buffer, Const, Expr, For, INDEX, Load, PrimFunc, Stmt, Store, Var
from ..names import Names

# Elements of one expanded copy, at most (64 MB of f32).
EXPANSION_LIMIT = 1 << 24
# Rounds of expansion and distribution (a distributed loop may expose another reuse inside).
MAX_ROUNDS = 8


def spans(items, around, search) -> list:
    """The program with its reused temporaries expanded and its loops distributed again, as
    a rewrite of the whole function (the ``spans`` hook, ``choose.py``, on the program's own
    items alone), taken when the cost model finds it cheaper, with what the other families
    make of the items it exposes (a triangle split into boxes), and more of it runs on
    intrinsics. (A nest as scalar code is priced by its arithmetic alone, the same ``+=``
    inside a loop of several statements also by the elements it writes, so the expanded
    program can look cheaper without running anything faster.)"""
    from .choose import Span

    if not around.top or around.depth or around.made_by:
        return []
    func = expand(around.func, search.names)
    if func is None:
        return []
    had = {b.name for b in around.func.allocs}
    return [Span(0, len(items), tuple(search.items(func)),
                 temps=tuple(b for b in func.allocs if b.name not in had), func=func,
                 pays=lambda planned, before: _on_intrinsics(planned) > _on_intrinsics(before))]


def _on_intrinsics(planned) -> int:
    """Operations a plan does in intrinsic calls."""
    return sum(ir.fold_stmt(s, lambda x: op_count(x) if isinstance(x, ir.Call) else 0)
               for s in planned.stmts)


def expand(func: PrimFunc, names: Names, limit: int = EXPANSION_LIMIT) -> Optional[PrimFunc]:
    """``func`` (normalised) with every temporary reused by a loop that could not be
    distributed expanded, then normalised again (distributed where now legal), in rounds;
    None when there is nothing to expand."""
    changed = False
    for _ in range(MAX_ROUNDS):
        nxt = expand_once(func, names, limit)
        if nxt is None:
            break
        func, changed = nests.normalize(nxt), True
    return func if changed else None


def expand_once(func: PrimFunc, names: Names, limit: int = EXPANSION_LIMIT) -> Optional[PrimFunc]:
    """One round: each top-level loop that ``nests.normalize`` could not distribute, with
    the temporaries it reuses expanded (those that may be); None when none may."""
    top = list(ir.stmts_of(func.body))
    allocs = list(func.allocs)
    changed = False
    for path, _loop in reversed(nests.blocked(func)):  # from the end: positions stay valid
        k = path[0]
        stmt, restores = top[k], []
        for reuse in analysis.reused(func, path):
            if refusal(func, path, reuse, limit) is not None:
                continue
            copy = Buffer(names.fresh(reuse.buffer.name + "x"), reuse.buffer.dtype,
                          tuple(l.extent for l in reuse.loops) + reuse.buffer.shape)
            stmt = _rename(stmt, reuse, copy)
            if _needs_restore(func, path, reuse.buffer.name):
                restores += [s for s in _restores(func, path, reuse, copy) if s not in restores]
            allocs.append(copy)
            changed = True
        top[k:k + 1] = [stmt] + restores
    if not changed:
        return None
    body = ir.seq(*top)
    used = _mentioned(ir.stmts_of(body))
    allocs = [b for b in allocs if b.name in used]  # a temporary wholly replaced by its copy
    return replace(func, body=body, allocs=tuple(allocs))


def refusal(func: PrimFunc, path: Sequence[int], reuse: analysis.Reuse,
            limit: int = EXPANSION_LIMIT) -> Optional[str]:
    """Why ``reuse`` (``analysis.reused(func, path)``) may not be expanded, as a sentence,
    or None when it may."""
    name = reuse.buffer.name
    if not all(isinstance(l.start, int) and isinstance(l.stop, int) for l in reuse.loops):
        return f"the loops around {name} have bounds that move"
    if any(l.extent < 1 for l in reuse.loops):
        return f"the loops around {name} never run"
    size = math.prod(l.extent for l in reuse.loops) * reuse.buffer.size
    if size > limit:
        return f"a copy of {name} per iteration would hold {size:,} elements (limit {limit:,})"
    stmt = ir.stmts_of(func.body)[path[0]]
    for l in reuse.loops:
        if sum(1 for s in ir.walk_stmts(stmt) if isinstance(s, For) and s.var == l.var) != 1:
            return f"a loop inside binds {l.var} again"
    if _needs_restore(func, path, name) and (not reuse.same_writes or
                                              _restores(func, path, reuse, reuse.buffer) is None):
        return (f"{name} is read after the loops, and not every iteration writes the same "
                "elements of it, so its final values are not the last iteration's")
    return None


def _index(loop: analysis.Loop) -> Expr:
    v = Var(loop.var)
    return v if loop.start == 0 else Binary("-", v, Const(loop.start, INDEX))


def _rename(stmt: Stmt, reuse: analysis.Reuse, copy: Buffer) -> Stmt:
    """``stmt`` with each access ``T[f]`` of the reused buffer made ``copy[i, f]``."""
    name, prefix = reuse.buffer.name, tuple(_index(l) for l in reuse.loops)

    def load(x: Load) -> Expr:
        indices = tuple(ir.map_loads(i, load) for i in x.indices)
        if x.buffer.name == name:
            return Load(copy, prefix + indices)
        return Load(x.buffer, indices)

    def leaf(s: Stmt) -> Stmt:
        if not isinstance(s, (Store, Accumulate)):
            return s  # a call: it does not touch the buffer (analysis.written_before_read)
        indices = tuple(ir.map_loads(i, load) for i in s.indices)
        value = ir.map_loads(s.value, load)
        if s.buffer.name == name:
            return type(s)(copy, prefix + indices, value)
        return type(s)(s.buffer, indices, value)

    return ir.map_stmt(stmt, leaf, lambda e: ir.map_loads(e, load))


def _mentioned(stmts: Sequence[Stmt]) -> set[str]:
    """The buffers ``stmts`` read, write or hand to a call."""
    out: set[str] = set()
    for st in stmts:
        for s in ir.walk_stmts(st):
            if isinstance(s, (Store, Accumulate)):
                out.add(s.buffer.name)
            elif isinstance(s, ir.Call):
                out |= {w.buffer.name for _, w in s.operands}
            for e in ir.stmt_exprs(s):
                out |= {x.buffer.name for x in ir.loads_of(e)}
    return out


def _needs_restore(func: PrimFunc, path: Sequence[int], name: str) -> bool:
    """The buffer's values after the loops matter: a parameter, or a later statement
    mentions it."""
    return any(b.name == name for b in func.params) or \
        name in _mentioned(ir.stmts_of(func.body)[path[0] + 1:])


def _restores(func: PrimFunc, path: Sequence[int], reuse: analysis.Reuse,
              copy: Buffer) -> Optional[list[Stmt]]:
    """``T[f] = copy[last, f]`` for the elements each store of ``T`` inside the loops writes,
    over that store's own loops (those whose variable its indices use, and any that never
    runs, which keeps the copy from running too); None when an index names a variable of
    the loops themselves (with coefficient 0, which ``same_writes`` lets through)."""
    name = reuse.buffer.name
    depth = analysis.loop_info(func, path).depth
    last = tuple(Const(l.extent - 1, INDEX) for l in reuse.loops)
    out: list[Stmt] = []
    for x in analysis.analyze(func).accesses:
        if x.buffer.name != name or not x.writes or not any(l.path == tuple(path) for l in x.loops):
            continue
        used = {v.name for i in x.indices for v in ir.walk_expr(i) if isinstance(v, Var)}
        s: Stmt = Store(reuse.buffer, x.indices, Load(copy, last + x.indices))
        bound = set()
        for l in reversed(x.loops[depth + 1:]):
            if l.var in used or l.extent < 1:
                s = For(l.var, l.start, l.stop, s)
                bound.add(l.var)
        if not used <= bound:
            return None
        if s not in out:
            out.append(s)
    return out
