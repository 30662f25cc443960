"""private-partials: a sum split between the threads along the rows another part wrote.

The pool deals a parallel part's iterations out in runs, the same run to the same thread in
every part and every call (``pool.py``), so a matrix one part writes by rows stays, a block
of rows a core, in the cores' L2s. A sum that then reads it along its reduction shares its
output instead: PolyBench gemver's ``x += A^T y`` after the rank-2 update of ``A`` splits
``x``'s columns between the threads, and each reads half of every row of ``A``, half of
that from the other core's L2. The rule splits such a sum along the rows, each block of
rows adding into a private copy of the output, and adds the copies up after::

    for i_o, j in grid(6, 400):               for b, x in grid(8, 400):
        call(axpy, c=T[64 * i_o], a=y[j],         T_part[b, x] = -0.0
             b=A[j, 64 * i_o])         ->     for b, i_o, j in grid(8, 6, 50):   # shared by b
                                                  call(axpy, c=T_part[b, 64 * i_o], a=y[50 * b + j],
                                                       b=A[50 * b + j, 64 * i_o])
                                              for b, x in grid(8, 400):
                                                  T[x] += T_part[b, x]

Where. A top-level nest ``S`` that runs as a parallel part (``Search.runs_shared``) whose
every write, its calls' meaning included, is an accumulation ``O[w] += e`` into one buffer
``O`` that nothing in ``S`` reads; a buffer ``B`` that ``S``
reads and the last parallel part before it to write ``B`` split along dimensions its own
shared loop does not move; a loop ``r`` of ``S`` that moves ``B`` along those dimensions
and never moves ``O``, cut into ``K`` equal blocks (``K`` the largest divisor of its
extent up to ``PARTIALS``), with ``K`` copies of ``O`` at most an eighth of what ``S`` reads
of ``B`` (a box of at least ``MIN_BYTES``).

Soundness. Each iteration of ``S`` adds a term ``e`` to one element of ``O``, and ``e``
reads no buffer ``S`` writes (only ``O``, which nothing reads), so the terms are the same
values in any order of the iterations. The new program adds the terms of the iterations
whose ``r`` lies in block ``b`` into ``O_part[b]``, a fresh temporary started at ``-0.0``
(``x + -0.0`` is ``x`` for every float, signed zeros included; ``0`` on integers), then adds
the ``K`` partial sums into ``O`` in block order: each element of ``O`` gets the same terms,
grouped by block, a reassociation (README, Numerics), exact on integers, whose wrapping
addition is associative. An element no term reaches gets ``-0.0`` added ``K`` times and
keeps its value and its sign. NaN and infinities among the terms give NaN or the same
infinity in any grouping.

What it costs: ``K`` passes over ``O`` to fill, ``K`` to add, a few microseconds for an
output of a few hundred elements; on one thread nothing is gained, on two the reduction
reads the rows each core holds (gemver 400 x 400 on two Zen 4 threads: README, Measured).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable
from .. import ir
from ..affine import index_range
from ..calls import expand_calls
from ..ir import INDEX, Accumulate, Binary, Buffer, Call, Const, For, Load, Stmt, Store, Var, Window
from .tidy import passes_cost

MIN_BYTES = 64 << 10  # a buffer smaller than this moves between cores in no time
PARTIALS = 8  # private copies at most: the pool's chunks on two threads


def improve(best, search):
    """``best`` (``pipeline.Choice``) with private-partials applied to its planned statements."""
    planned = best.planned
    stmts, allocs = private_partials(list(planned.stmts), list(planned.allocs), search.names,
                                     search.runs_shared)
    if len(stmts) == len(planned.stmts):
        return best
    added = passes_cost(stmts) - passes_cost(planned.stmts)
    return replace(best, planned=replace(planned, stmts=stmts, allocs=allocs,
                                         cost=planned.cost + max(0.0, added)))


def private_partials(stmts: list[Stmt], allocs: list[Buffer], names,
                     runs_shared: Callable[[Stmt], bool]) -> tuple[list[Stmt], list[Buffer]]:
    """private-partials (module doc) on each top-level statement where it applies; ``names``
    (``names.Names``) gives the new temporaries theirs, ``runs_shared`` says which statements
    the backend runs as parallel parts (``Search.runs_shared``)."""
    split: dict[str, frozenset[int]] = {}  # buffer -> dims the last parallel part writing it split
    out: list[Stmt] = []
    for s in stmts:
        if not runs_shared(s):
            out.append(s)
            continue
        meaning = _meaning(s)
        rewritten = _rewritten(s, meaning, split, names)
        if rewritten is not None:
            fill, s, add, part = rewritten
            out += [fill, s, add]
            allocs = allocs + [part]
            meaning = _meaning(s)
        else:
            out.append(s)
        moved = _moved(meaning, s.var)
        for name in ir.written_by(meaning):
            split[name] = moved.get(name, frozenset())
    return out, allocs


def _meaning(s: Stmt) -> Stmt:
    return expand_calls(ir.PrimFunc("statement", (), s)).body


def _accesses(s: Stmt):
    """(buffer, indices, written) of each access of ``s`` (no calls in it)."""
    for x in ir.walk_stmts(s):
        if isinstance(x, (Store, Accumulate)):
            yield x.buffer, x.indices, True
            exprs = (*x.indices, x.value)
        elif isinstance(x, ir.If):
            exprs = (x.cond,)
        else:
            continue
        for e in exprs:
            for ld in ir.loads_of(e):
                yield ld.buffer, ld.indices, False


def _moved(meaning: Stmt, var: str) -> dict[str, frozenset[int]]:
    """For each buffer ``meaning`` accesses, the dimensions an index reading ``var`` moves."""
    out: dict[str, set[int]] = {}
    for buf, idx, _ in _accesses(meaning):
        out.setdefault(buf.name, set()).update(
            d for d, i in enumerate(idx) if var in ir.var_names(i))
    return {k: frozenset(v) for k, v in out.items()}


def _reach(meaning: Stmt, buf: Buffer) -> int:
    """The bytes of the box of ``buf`` that ``meaning`` reads: per dimension, from the least
    to the greatest index its loads reach over their loops' ranges (the whole dimension
    where an index is not affine in them)."""
    box = [[n, -1] for n in buf.shape]
    for x, loops in ir.walk_in_loops(meaning):
        if not isinstance(x, (Store, Accumulate)):
            continue
        ranges = {f.var: (f.start, f.stop - 1) for f in loops}
        for ld in (ld for e in (*x.indices, x.value) for ld in ir.loads_of(e)):
            if ld.buffer.name != buf.name:
                continue
            for d, i in enumerate(ld.indices):
                lo, hi = index_range(i, ranges, buf.shape[d])
                box[d] = [min(box[d][0], lo), max(box[d][1], hi)]
    elements = 1
    for lo, hi in box:
        elements *= max(0, hi - lo + 1)
    return elements * ir.itemsize(buf.dtype)


def _rewritten(s: For, meaning: Stmt, split: dict[str, frozenset[int]], names):
    """(the fill, ``s`` split, the sum, the new temporary), or None where the rule does not
    apply."""
    accesses = list(_accesses(meaning))
    written = [buf for buf, _, w in accesses if w]
    if not written or any(isinstance(x, Store) for x in ir.walk_stmts(meaning)):
        return None
    out = written[0]
    reads = {buf.name: buf for buf, _, w in accesses if not w}
    if any(buf.name != out.name for buf in written) or out.name in reads:
        return None
    shared = _moved(meaning, s.var)
    loops = {x.var: x for x in ir.walk_stmts(s) if isinstance(x, For)}
    if len(loops) != sum(isinstance(x, For) for x in ir.walk_stmts(s)):
        return None  # a loop variable bound twice
    moves = None  # what each loop moves, once a read is worth splitting for
    for name, buf in sorted(reads.items()):
        rows = split.get(name, frozenset())
        if not rows or shared.get(name, frozenset()) & rows:
            continue
        reach = _reach(meaning, buf)
        if reach < MIN_BYTES:
            continue
        if moves is None:
            moves = {var: _moved(meaning, var) for var in loops if var != s.var}
        for var, moved in moves.items():
            loop = loops[var]
            if moved.get(out.name) or not moved.get(name) or not moved[name] <= rows:
                continue
            k = max((d for d in range(2, PARTIALS + 1) if loop.extent % d == 0), default=None)
            if k is None or k * out.nbytes > reach // 8:
                continue
            return _split(s, loop, k, out, names)
    return None


def _split(s: For, loop: For, k: int, out: Buffer, names):
    part = Buffer(names.fresh(f"{out.name}_part"), out.dtype, (k,) + tuple(out.shape))
    taken = {x.var for x in ir.walk_stmts(s) if isinstance(x, For)}
    # loop names no buffer of the function has either (``names`` holds those)
    block, inner = _fresh(names.fresh("b"), taken), _fresh(names.fresh(f"{loop.var}_i"), taken)
    size = loop.extent // k
    at = Binary("+", Binary("*", Const(size, INDEX), Var(block)), Var(inner))
    if loop.start:
        at = Binary("+", Const(loop.start, INDEX), at)
    cut = For(inner, 0, size, ir.substitute_stmt(loop.body, {loop.var: at}))

    def swap(x: Stmt) -> Stmt:
        if x is loop:
            return cut
        if isinstance(x, For):
            return For(x.var, x.start, x.stop, swap(x.body))
        if isinstance(x, ir.Seq):
            return ir.seq(*(swap(c) for c in x.stmts))
        if isinstance(x, ir.If):
            orelse = None if x.orelse is None else swap(x.orelse)
            return replace(x, then=swap(x.then), orelse=orelse)
        return x

    def privately(x: Stmt) -> Stmt:
        if isinstance(x, Accumulate) and x.buffer.name == out.name:
            return Accumulate(part, (Var(block),) + x.indices, x.value)
        if isinstance(x, Call):
            return replace(x, operands=tuple(
                (n, Window(part, (Var(block),) + w.base, tuple((0,) + st for st in w.steps))
                 if w.buffer.name == out.name else w) for n, w in x.operands))
        return x

    split = For(block, 0, k, ir.map_stmt(swap(s), privately))
    dims = [names.fresh(f"x{d}") for d in range(len(out.shape))]
    index = tuple(Var(v) for v in dims)
    zero = Const(-0.0 if ir.is_float(out.dtype) else 0, out.dtype)
    every = [For(v, 0, n, None) for v, n in zip(dims, out.shape)]
    fill = ir.wrap([For(block, 0, k, None)] + every, Store(part, (Var(block),) + index, zero))
    add = ir.wrap([For(block, 0, k, None)] + every,
                  Accumulate(out, index, Load(part, (Var(block),) + index)))
    return fill, split, add, part


def _fresh(base: str, taken: set[str]) -> str:
    name = base
    while name in taken:
        name += "_"
    taken.add(name)
    return name
