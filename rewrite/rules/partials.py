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
and never moves ``O``, cut into ``K`` equal blocks (``K`` even, up to ``PARTIALS``: ``_blocks``;
the iterations past the blocks, fewer than ``K``, run after them as ``S`` did, into ``O``),
with ``K`` copies of ``O`` at most an eighth of what ``S`` reads of ``B`` (a box of at least
``MIN_BYTES``).

Soundness. Each iteration of ``S`` adds a term ``e`` to one element of ``O``, and ``e``
reads no buffer ``S`` writes (only ``O``, which nothing reads), so the terms are the same
values in any order of the iterations. The new program adds the terms of the iterations
whose ``r`` lies in block ``b`` into ``O_part[b]``, a fresh temporary started at ``-0.0``
(``x + -0.0`` is ``x`` for every float, signed zeros included; ``0`` on integers), then adds
the ``K`` partial sums into ``O`` in block order; the iterations past the blocks add theirs
into ``O`` directly: each element of ``O`` gets the same terms, grouped by block, a
reassociation (README, Numerics), exact on integers, whose wrapping
addition is associative. An element no term reaches gets ``-0.0`` added ``K`` times and
keeps its value and its sign. NaN and infinities among the terms give NaN or the same
infinity in any grouping.

A nest that runs on one thread because its outermost loop carries a sum into buffers that
loop does not move (atax, bicg and mvt's one sweep over the rows of ``A``, ``A x`` row by row
and ``A^T`` of it added into one vector) is cut along that loop the same way, each block with
its own copies of those buffers, where they are only added into and never read in the nest
and the blocks' loop then runs as a parallel part. The iterations keep their order; only
those sums are regrouped by block, as above.

The copies are added into ``O`` on the library's axpy rows where one binds the sum
(``_SumsOnRows``: ``O[x] += 1.0 * O_part[b, x]``, exact), so that the additions run on
intrinsics as the sums the copies hold did.

What it costs: ``K`` passes over ``O`` to fill, ``K`` to add, a few microseconds for an
output of a few hundred elements; on one thread nothing is gained, on two the reduction
reads the rows each core holds (gemver 400 x 400 on two Zen 4 threads: README, Measured).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, Optional
from .. import ir
from ..affine import index_range
from ..calls import expand_calls
from ..nests import as_nest
from ..ir import INDEX, Accumulate, Binary, Buffer, Call, Const, For, Load, Stmt, Store, Var, Window
from .tidy import passes_cost

MIN_BYTES = 64 << 10  # a buffer smaller than this moves between cores in no time
PARTIALS = 8  # private copies at most: the pool's chunks on two threads


def improve(best, search):
    """``best`` (``pipeline.Choice``) with private-partials applied to its planned statements,
    the copies' sums run on the library's rows where one binds them (``_SumsOnRows``)."""
    planned = best.planned
    rows = _SumsOnRows(search)
    stmts, allocs = private_partials(list(planned.stmts), list(planned.allocs), search.names,
                                     search.runs_shared, rows)
    if len(stmts) == len(planned.stmts):
        return best
    added = passes_cost(stmts) - passes_cost(planned.stmts) + rows.cost
    return replace(best, planned=replace(planned, stmts=stmts, allocs=allocs + rows.allocs,
                                         cost=planned.cost + max(0.0, added)))


class _SumsOnRows:
    """The copies' sum ``O[x] += O_part[b, x]`` planned as ``O[x] += one[0] * O_part[b, x]``,
    ``one[0] = 1.0`` stored before it: an axpy row (``c += a * b`` on a scalar ``a``) then
    runs the additions, as it ran the sums the copies hold. Exact: ``1.0 * p`` is ``p`` for
    every float (NaN, infinities and signed zeros included), and the row's fused multiply-add
    rounds ``c + 1.0 * p`` once, as the addition does; a row that groups the copies'
    elements otherwise (a gemvt summing the ``K`` rows of ``O_part``) regroups the same
    terms, the reassociation the rule already makes. Where no row binds it (integers: no
    row adds them without a product), the sum stays as it was. ``allocs`` and ``cost``: the
    temporaries and the planned price of what was planned."""

    def __init__(self, search):
        self.search = search
        self.allocs: list[Buffer] = []
        self.cost = 0.0
        self.ones: dict[str, Buffer] = {}  # dtype -> its 1.0

    def __call__(self, add: Stmt) -> list[Stmt]:
        acc = add
        while isinstance(acc, For):
            acc = acc.body
        if not isinstance(acc, Accumulate) or not ir.is_float(acc.buffer.dtype):
            return [add]
        dtype = acc.buffer.dtype
        one = self.ones.get(dtype) or Buffer(self.search.names.fresh("one"), dtype, (1,))
        at = (Const(0, INDEX),)
        scaled = ir.map_stmt(add, lambda x: replace(x, value=Binary("*", Load(one, at), x.value))
                             if isinstance(x, Accumulate) else x)
        nest = as_nest(scaled)
        planned = self.search.plan([nest]) if nest is not None else None
        if planned is None or not any(isinstance(x, Call) for st in planned.stmts
                                      for x in ir.walk_stmts(st)):
            return [add]
        self.cost += planned.cost
        self.allocs += [b for b in planned.allocs if b not in self.allocs]

        def plain(x: Stmt) -> Stmt:  # a remainder no row took adds without the factor
            v = x.value if isinstance(x, Accumulate) else None
            if isinstance(v, Binary) and v.op == "*" and Load(one, at) in (v.a, v.b):
                return replace(x, value=v.b if v.a == Load(one, at) else v.a)
            return x

        stmts = [ir.map_stmt(st, plain) for st in planned.stmts]
        if dtype in self.ones:
            return stmts
        self.ones[dtype] = one
        self.allocs.append(one)
        return [Store(one, at, Const(1.0, dtype)), *stmts]


def private_partials(stmts: list[Stmt], allocs: list[Buffer], names,
                     runs_shared: Callable[[Stmt], bool],
                     summed: Callable[[Stmt], list[Stmt]] = lambda add: [add]
                     ) -> tuple[list[Stmt], list[Buffer]]:
    """private-partials (module doc) on each top-level statement where it applies; ``names``
    (``names.Names``) gives the new temporaries theirs, ``runs_shared`` says which statements
    the backend runs as parallel parts (``Search.runs_shared``), ``summed`` what each sum of
    the copies runs as."""
    split: dict[str, frozenset[int]] = {}  # buffer -> dims the last parallel part writing it split
    out: list[Stmt] = []
    for s in stmts:
        if runs_shared(s):
            meaning = _meaning(s)
            rewritten = _rewritten(s, meaning, split, names)
        elif isinstance(s, For) and s.extent >= 2:
            meaning = _meaning(s)
            rewritten = _unshared(s, meaning, names)
            if rewritten is not None and not runs_shared(rewritten[1]):
                rewritten = None
            if rewritten is None:
                out.append(s)
                continue
        else:
            out.append(s)
            continue
        if rewritten is not None:
            fills, s, left, adds, parts = rewritten
            out += [*fills, s, *left, *(x for add in adds for x in summed(add))]
            allocs = allocs + parts
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
    """``_split``'s statements and copies for a parallel part ``s``, or None where the rule
    does not apply."""
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
            k = _blocks(loop.extent)
            if k is None or k * out.nbytes > reach // 8:
                continue
            return _split(s, loop, k, [out], names)
    return None


def _unshared(s: For, meaning: Stmt, names):
    """``_split``'s statements and copies for a nest ``s`` that runs on one thread, cut along
    its outermost loop, each block with its own copies of the buffers that loop does not move
    (a sweep over the rows of a matrix adding ``A^T y`` into one vector), or None."""
    moved = _moved(meaning, s.var)
    accesses = list(_accesses(meaning))
    written = {buf.name: buf for buf, _, w in accesses if w}
    read = {buf.name: buf for buf, _, w in accesses if not w}
    outs = [buf for name, buf in sorted(written.items()) if not moved.get(name)]
    if not outs:
        return None
    names_out = {b.name for b in outs}
    # the copies' buffers only accumulated into and never read (the iterations keep their
    # order: the sums are regrouped by block, nothing else changes)
    if any(isinstance(x, Store) and x.buffer.name in names_out for x in ir.walk_stmts(meaning)) or \
            names_out & read.keys():
        return None
    k = _blocks(s.extent)
    reads = [_reach(meaning, buf) for buf in read.values()]
    if k is None or not reads or max(reads) < MIN_BYTES or \
            k * sum(b.nbytes for b in outs) > max(reads) // 8:
        return None
    return _split(s, s, k, outs, names)


def _blocks(extent: int) -> Optional[int]:
    """How many blocks a loop of ``extent`` is cut into: an even number up to ``PARTIALS``,
    so that two threads take as many each, the one leaving the fewest iterations over
    (``_split`` runs those after the blocks), the most blocks among those; None below two
    iterations. 48 row tiles: 8 blocks; 50: 2 (not 5, which two threads run as 3 and 2);
    51: 2 blocks of 25 and one tile after them."""
    ks = [k for k in range(2, PARTIALS + 1, 2) if extent >= k]
    return min(ks, key=lambda k: (extent % k, -k), default=None)


def _split(s: For, loop: For, k: int, outs: list[Buffer], names):
    """(the fills, ``s`` with ``loop`` cut into ``k`` blocks, outermost, each adding into its
    own copy of each of ``outs``, the iterations of ``loop`` past the blocks (``s`` with
    ``loop`` over those alone, adding into ``outs`` themselves; none where ``k`` divides its
    extent), the sums, the copies)."""
    parts = {out.name: Buffer(names.fresh(f"{out.name}_part"), out.dtype, (k,) + tuple(out.shape))
             for out in outs}
    taken = {x.var for x in ir.walk_stmts(s) if isinstance(x, For)}
    # loop names no buffer of the function has either (``names`` holds those)
    block, inner = _fresh(names.fresh("b"), taken), _fresh(names.fresh(f"{loop.var}_i"), taken)
    size = loop.extent // k
    at = Binary("+", Binary("*", Const(size, INDEX), Var(block)), Var(inner))
    if loop.start:
        at = Binary("+", Const(loop.start, INDEX), at)
    cut = For(inner, 0, size, ir.substitute_stmt(loop.body, {loop.var: at}))

    def swap(x: Stmt, new: For) -> Stmt:  # ``x`` with ``loop`` replaced by ``new``
        if x is loop:
            return new
        if isinstance(x, For):
            return For(x.var, x.start, x.stop, swap(x.body, new))
        if isinstance(x, ir.Seq):
            return ir.seq(*(swap(c, new) for c in x.stmts))
        if isinstance(x, ir.If):
            orelse = None if x.orelse is None else swap(x.orelse, new)
            return replace(x, then=swap(x.then, new), orelse=orelse)
        return x

    left = [] if loop.extent % k == 0 else \
        [swap(s, For(loop.var, loop.start + k * size, loop.stop, loop.body))]

    def privately(x: Stmt) -> Stmt:
        if isinstance(x, Accumulate) and x.buffer.name in parts:
            return Accumulate(parts[x.buffer.name], (Var(block),) + x.indices, x.value)
        if isinstance(x, Call):
            return replace(x, operands=tuple(
                (n, Window(parts[w.buffer.name], (Var(block),) + w.base,
                           tuple((0,) + st for st in w.steps))
                 if w.buffer.name in parts else w) for n, w in x.operands))
        return x

    split = For(block, 0, k, ir.map_stmt(swap(s, cut), privately))
    fills, adds = [], []
    for out in outs:
        part = parts[out.name]
        dims = [names.fresh(f"x{d}") for d in range(len(out.shape))]
        index = tuple(Var(v) for v in dims)
        zero = Const(-0.0 if ir.is_float(out.dtype) else 0, out.dtype)
        every = [For(block, 0, k, None)] + [For(v, 0, n, None) for v, n in zip(dims, out.shape)]
        fills.append(ir.wrap(every, Store(part, (Var(block),) + index, zero)))
        adds.append(ir.wrap(every, Accumulate(out, index, Load(part, (Var(block),) + index))))
    return fills, split, left, adds, list(parts.values())


def _fresh(base: str, taken: set[str]) -> str:
    name = base
    while name in taken:
        name += "_"
    taken.add(name)
    return name
