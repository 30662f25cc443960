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

Parts that are the same code on other buffers share one *body* (``shared_bodies``): the
seven products of a Strassen level, their packing copies and their sums are each one
function, compiled once and called with each part's pointers (here ``S`` is ``f32[1024, 512]``,
so ``S[i + 512, j]`` is ``S[i, j]`` moved by 512 rows of 512)::

    for i, j in grid(512, 512):                     body0(b0, b1, b2):
        P1[i, j] += S[i, j] * T[i, j]       ->          for v0, v1 in grid(512, 512):
    for i, j in grid(512, 512):                             b0[v0, v1] += b1[v0, v1] * b2[v0, v1]
        P2[i, j] += S[i + 512, j] * T[i, j]         part0: body0(P1, S, T)
                                                    part1: body0(P2, S + 512 * 512, T)
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, replace
from typing import Optional

from . import analysis, caches
from .affine import affine, affine_index, first_constants, index_range
from .calls import expand_calls, op_count
from .ir import (INDEX, Accumulate, Binary, Buffer, Call, Const, Expr, For, If, Load, PrimFunc, Seq,
                 Stmt, Store, Unary, Var, Window, band, children, is_float, loads_of, seq, stmts_of,
                 itemsize, walk_expr, walk_in_loops, with_children, substitute_stmt, walk_stmts, wrap,
                 written_by, buffers_of, stmt_exprs)

# Below this many arithmetic operations a loop runs on the calling thread: waking the
# workers and joining them costs a few microseconds, which such a loop does not repay (a
# 30^3 product, 54 000 operations, takes 1 us on one thread of Zen 4 and 3-4 us on two).
MIN_PARALLEL_OPS = 1 << 16
# ... counting a call's operations at most this many per unit of its descriptor's cost: the
# f32 tiles' rate (the AVX-512 8x32 tile's 512 operations in 8 units), so that a product on
# a faster tile counts the time it takes, not its operations (the u8 x i8 VNNI tile does
# 2048 in 10 units). ``qgemm_u8i8_30`` (65 536 operations, 320 units at this rate) took
# 1.7-2.0 us on two Zen 4 threads and 0.64 us on one.
OPS_PER_UNIT = 64


@dataclass(frozen=True, slots=True)
class Part:
    """Top-level statements run as one unit; ``parallel`` means ``body`` is a ``For`` whose
    iterations may run on any thread in any order. The code that runs is ``Plan.bodies[code]``
    given, for each of its buffers, ``(k, offset)``: the kernel's buffer ``k`` moved by
    ``offset`` elements."""

    body: Stmt
    parallel: bool
    code: int = 0
    args: tuple[tuple[int, int], ...] = ()
    whole: Optional[Stmt] = None  # what one thread given the whole range runs (``one_sweep``)


@dataclass(frozen=True, slots=True)
class Body:
    """The code of one or more parts (``shared_bodies``): a part's statements over buffers
    named ``b0``, ``b1``, ... (shapes and dtypes kept) and loop variables ``v0``, ``v1``, ....
    A parallel body's outer loop runs over the range it is given; given the loop's whole
    range, it runs ``whole`` instead where there is one (``one_sweep``)."""

    stmt: Stmt
    parallel: bool
    buffers: tuple[Buffer, ...]
    uses: int  # parts that run it
    whole: Optional[Stmt] = None


@dataclass(frozen=True, slots=True)
class Plan:
    """What codegen emits for one function."""

    func: PrimFunc
    buffers: tuple[Buffer, ...]  # order of the kernel's pointer array: params, then allocs
    parts: tuple[Part, ...]
    bodies: tuple[Body, ...] = ()


def lower(func: PrimFunc) -> Plan:
    """Choose loop orders (``schedule``), then split the body into serial and parallel parts
    (see the module docstring)."""
    func = _without_unit_loops(_split_guards(_without_unit_loops(_interleaved(schedule(func)))))
    func = _shared_blocks(func)
    meaning = expand_calls(func)  # what the dependence analysis reads
    parallel = _parallel_loops(meaning)
    shared_at = _shared_positions(func, parallel)
    parts: list[Part] = []
    pending: list[Stmt] = []  # consecutive serial statements become one part
    for k, s in enumerate(stmts_of(func.body)):
        # a lone intrinsic call (no loop to split) stays serial, however much work it does
        swept = one_sweep(parallel, k, s)
        if k in shared_at:
            if pending:
                parts.append(Part(seq(*pending), False))
                pending = []
            shared = _collapsed(parallel, k, s)
            parts.append(Part(shared, True, whole=swept if shared is s else None))
        else:
            pending.append(swept or s)
    if pending:
        parts.append(Part(seq(*pending), False))
    buffers = func.params + func.allocs
    parts, bodies = shared_bodies(parts, buffers)
    return Plan(func, buffers, parts, bodies)


# A loop too small for threads that fills at least this many bytes of temporaries a later
# parallel part reads runs on the threads too (``_shared_positions``).
PRODUCED_BYTES = 32 * 1024


def _shared_positions(func: PrimFunc, parallel: set[tuple[int, ...]]) -> set[int]:
    """The positions of the top-level loops that run as parallel parts: those worth threads
    (``_worth_threads``), and below ``MIN_PARALLEL_OPS`` all the same a loop the dependence
    analysis finds parallel that writes only temporaries, at least ``PRODUCED_BYTES`` of
    them, which a later parallel part reads, and whose innermost loop reads every buffer at
    unit stride. Written on the
    calling thread alone, they sit in its core's cache, and the other thread's share of
    that part fetches them from there on every call; written by both, each thread's share
    stays where it was written. ``gemm_f16_f32acc`` (128^3: A and B converted into f32
    temporaries, 16 K elements each, then the tiles by rows) ran 30.3 us on two Zen 4
    threads and 24.2 with the conversions shared (one thread 38). Transposing copies
    (``bert_qk``'s K, 64 KB, split by heads as the product is) and a 16 KB scaled copy
    (``gemm_input_updated``) measured 4-9% slower shared, and are left on one thread."""
    temps = {b.name for b in func.allocs}
    body = list(stmts_of(func.body))
    out = {k for k, s in enumerate(body) if isinstance(s, For) and _worth_threads(parallel, k, s)}
    read_later = set()
    for k in reversed(range(len(body))):
        s = body[k]
        written = written_by(s)
        if k not in out and isinstance(s, For) and s.extent >= 2 and (k,) in parallel and \
                written and written <= temps and written & read_later and \
                written_bytes(s) >= PRODUCED_BYTES and _unit_reads(s):
            out.add(k)
        if k in out:
            read_later |= {b.name for b in buffers_of(s)} - written
    return out


def _unit_reads(s: Stmt) -> bool:
    """Every load in ``s`` walks memory at unit stride, or stays put, along its innermost
    loop (``_access_cost``)."""
    loops, _ = band(s)
    var = loops[-1].var
    return all(_access_cost(x.buffer, x.indices, var) != _STRIDED
               for st in walk_stmts(s) for e in stmt_exprs(st) for x in loads_of(e))


def _parallel_loops(func: PrimFunc) -> set[tuple[int, ...]]:
    """The paths of the loops of ``func`` that carry no dependence, each top-level statement
    analysed alone in its canonical form (``_canonical``), so that statements equal up to
    their buffers and a constant move of each buffer's accesses (a Strassen program's 49
    products, their copies and sums) are analysed once (``analysis.analyze`` caches by
    function). Exact: a loop carries a dependence only between two accesses inside it, so
    the statements around a loop's own statement take no part in its class; renaming
    buffers and loop variables, and moving all of one buffer's accesses by one constant,
    changes no address's equality with another."""
    out: set[tuple[int, ...]] = set()
    for k, s in enumerate(stmts_of(func.body)):
        if isinstance(s, For):
            out |= _parallel_paths(s, k)
    return out


def _parallel_paths(s: Stmt, position: int) -> set[tuple[int, ...]]:
    """The paths of the loops of ``s``, the top-level statement at ``position`` with its calls
    expanded, that carry no dependence (``_parallel_loops``)."""
    return {(position,) + info.path[1:] for info in analysis.analyze(_alone(s)).loops
            if info.kind == "parallel"}


def _alone(s: Stmt) -> PrimFunc:
    """A function of the one statement ``s`` in its canonical form (``_canonical``), for the
    dependence analysis: statements equal up to their buffers and a constant move of each
    buffer's accesses give equal functions, which ``analysis.analyze`` analyses once."""
    stmt, used, _ = _canonical(s)
    return PrimFunc("statement", tuple(Buffer(f"b{n}", b.dtype, b.shape)
                                       for n, (b, _) in enumerate(used)), stmt)


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


def one_sweep(parallel: set[tuple[int, ...]], position: int, s: Stmt) -> Optional[Stmt]:
    """What one thread runs of the top-level statement ``s``, a parallel loop of a few
    iterations that writes at most half of L2, when it runs all of them: the loop moved in,
    past every loop that does not move along the same buffer dimension as it, to just
    outside those that do (None where that changes nothing)::

        for j_o_b in range(2):                            for j_o_b, j_o_i in grid(2, 32):
            for j_o_i in range(32):                           ...  # y zeroed, k_o == 0
                ...  # y zeroed, k_o == 0             ->  for k_o in range(1, 256):
            for k_o in range(1, 256):                         for j_o_b, j_o_i, k_i in grid(2, 32, 8):
                for j_o_i, k_i in grid(32, 8):                    call(axpy, c=y[1024 * j_o_b + 32 * j_o_i],
                    call(axpy, c=y[1024 * j_o_b + 32 * j_o_i],         b=B[8 * k_o + k_i, ...])
                         b=B[8 * k_o + k_i, ...])

    Such a loop cuts the columns of a sweep over a few rows of a wide matrix in halves
    (``extract._rows_apart``) so that two threads share them; one thread running the
    halves one after the other reads each row of B in two runs, the second a whole pass
    over B later, where a single sweep reads it in one. Measured on Zen 3, one thread, in turns
    with numpy (medians, numpy's time over ours; halves / one sweep): ``x @ B`` at 2048
    0.94 / 0.98, 16 x 2048 x 2048 0.93 / 0.99, 4 rows 1.89 / 2.03, 10 x 4096 x 1024
    1.27 / 1.38, 4 x 8192 x 320 1.33 / 1.45; 24 rows the same. The output stays in cache
    in either order where it fits half of L2; a larger one (the column blocks of a large
    product, which keep a block of B in L2 across the row tiles) keeps the order written.
    Only nests of calls: a scalar nest's loop order is ``schedule``'s.

    Legal because the loop carries no dependence: each of its iterations keeps its own
    statements' order, and iterations that share no dependence may interleave in any
    order, which is what threads already do with them."""
    if not isinstance(s, For) or s.extent >= MIN_SHARED_ITERATIONS or (position,) not in parallel \
            or not any(isinstance(x, Call) for x in walk_stmts(s)) \
            or written_bytes(s) > caches.l2_bytes() // 2:
        return None
    out = _sunk(s, s.body)
    return out[0] if out is not None and out[1] else None


def _sunk(p: For, s: Stmt) -> Optional[tuple[Stmt, bool]]:
    """Loop ``p`` around ``s``, moved in through the loops that ``p`` does not move along with
    (``_moves_with``) to just outside one that it does, over each statement of a sequence;
    and whether it went past a reduction loop (one that moves nothing it writes: a row of
    B's blocks, not a fill's rows). It stops outside a loop that writes a buffer along a
    dimension after ``p``'s (``_writes_after``: a copy into panels, ``P[i_o, k_o, ...]``,
    would no longer write them in order). None where no loop moving with ``p`` is below:
    ``p`` would end up around a call or a store, taking a tile's reduction loop apart."""
    if isinstance(s, Seq):
        inner = [_sunk(p, t) for t in s.stmts]
        if all(x is None for x in inner):
            return None
        return (seq(*(For(p.var, p.start, p.stop, t) if x is None else x[0]
                      for t, x in zip(s.stmts, inner))),
                any(x is not None and x[1] for x in inner))
    if not isinstance(s, For) or s.var == p.var:
        return None
    if _moves_with(p.var, s) or _writes_after(p.var, s):
        return For(p.var, p.start, p.stop, s), False
    inner = _sunk(p, s.body)
    if inner is None:
        return None
    reduces = not any(_reads(i, s.var) for idx in _written(s) for i in idx)
    return For(s.var, s.start, s.stop, inner[0]), inner[1] or reduces


def _reads(e: Expr, name: str) -> bool:
    return any(isinstance(x, Var) and x.name == name for x in walk_expr(e))


def _written(s: Stmt):
    """The indices of each access ``s`` writes: stores, ``+=`` and calls' output windows."""
    for x in walk_stmts(s):
        if isinstance(x, (Store, Accumulate)):
            yield x.indices
        elif isinstance(x, Call):
            yield x.window(x.output).base


def _moves_with(var: str, loop: For) -> bool:
    """Whether some index of an access in ``loop`` reads both ``var`` and ``loop``'s
    variable: the two move along one dimension of a buffer."""
    return any(_reads(i, var) and _reads(i, loop.var) for _, idx in _accesses(loop) for i in idx)


def _writes_after(var: str, loop: For) -> bool:
    """Whether ``loop`` moves some access it writes along a dimension after the first that
    ``var`` moves it along."""
    for idx in _written(loop):
        along = [d for d, i in enumerate(idx) if _reads(i, var)]
        if along and any(_reads(i, loop.var) for i in idx[along[0] + 1:]):
            return True
    return False


def written_bytes(s: Stmt) -> int:
    """The bytes of the boxes of each buffer ``s`` writes, each box bounding what its
    stores, ``+=`` and calls' outputs reach over their loops' ranges (a whole dimension
    where an index is not affine in loop variables)."""
    boxes: dict[str, tuple[Buffer, list[list[int]]]] = {}
    for x, loops in walk_in_loops(s):
        if isinstance(x, (Store, Accumulate)):
            buf, reach = x.buffer, [(i, 0, 0) for i in x.indices]
        elif isinstance(x, Call):
            w = x.window(x.output)
            shape = next(op.shape for op in x.intrinsic.operands if op.name == x.output)
            buf = w.buffer
            reach = [(i, sum(min(0, st[d] * (n - 1)) for st, n in zip(w.steps, shape)),
                      sum(max(0, st[d] * (n - 1)) for st, n in zip(w.steps, shape)))
                     for d, i in enumerate(w.base)]
        else:
            continue
        ranges = {f.var: (f.start, f.stop - 1) for f in loops}
        box = boxes.setdefault(buf.name, (buf, [[n, -1] for n in buf.shape]))[1]
        for d, (i, below, above) in enumerate(reach):
            lo, hi = index_range(i, ranges, buf.shape[d])
            box[d] = [min(box[d][0], max(0, lo + below)), max(box[d][1], min(buf.shape[d] - 1, hi + above))]
    total = 0
    for buf, box in boxes.values():
        elements = 1
        for lo, hi in box:
            elements *= max(0, hi - lo + 1)
        total += elements * itemsize(buf.dtype)
    return total


# A parallel loop with fewer iterations than this is merged with the loop inside it, so
# that threads get even shares (7 row tiles split 4 / 3 between two threads).
MIN_SHARED_ITERATIONS = 16


def _collapsed(parallel: set[tuple[int, ...]], position: int, s: For) -> Stmt:
    """``s``, or, when it has few iterations and holds exactly one loop that is parallel too,
    the two as one loop over both, in the same order::

        for h_o in range(7):             for h_o_w in range(392):
            for w in range(56):     ->       ... h_o := h_o_w // 56, w := h_o_w % 56

    Legal because neither loop carries a dependence; each thread's share is then a run of
    consecutive (h_o, w) pairs, the order one thread would run them in."""
    inner = stmts_of(s.body)
    if s.extent >= MIN_SHARED_ITERATIONS or len(inner) != 1 or not isinstance(inner[0], For) \
            or inner[0].extent < 2 or (position, 0) not in parallel:
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


# The width of the blocks ``_shared_blocks`` cuts a sum's unit-stride loop into: a cache line
# of bytes at least, and a few vectors of floats. A block reads its inputs' rows apart; it is
# cut only where those rows are at most SHARED_ROW_BYTES apart: ResNet-50's global average
# pool (rows of 2048 floats, 8 KB) ran 5.0-7.1 -> 12.7 us on one Zen 4 thread in 64-channel
# blocks, each row a page of its own; a column sum of 256 bytes (qdense_zero_points' 256 x
# 256 int8 weights) 25.6 -> 24.6 us on one thread, 21.1 -> 20.1 on two.
SHARED_BLOCK = 64
SHARED_ROW_BYTES = 1024


def _shared_blocks(func: PrimFunc) -> PrimFunc:
    """Each top-level nest of one statement whose outermost loop carries a dependence while
    its innermost, unit-stride loop is parallel (a column sum, ``x[j] += A[i, j] * y[i]`` in
    scalar code), with the work of a parallel part, gets that innermost loop cut into blocks
    of ``SHARED_BLOCK``, the blocks outermost, so that the threads share them::

        for k, j in grid(256, 256):               for j_o, k, j_i in grid(4, 256, 64):
            s[j] += i32(B[k, j])         ->           s[64 * j_o + j_i] += i32(B[k, 64 * j_o + j_i])

    Legal where the innermost loop carries no dependence and could be moved outermost whole
    (``analysis.can_permute``, no reassociation): no dependence then goes from a column to
    an earlier one, so blocks in order, each in the order as written, keep every dependence;
    each element's sum adds the same terms in the same order. The threads share the blocks
    where no dependence joins two columns at all (the blocks' loop is then parallel)."""
    out, changed = [], False
    for s in stmts_of(func.body):
        blocked = _shared_block(s)
        changed = changed or blocked is not None
        out.append(s if blocked is None else blocked)
    return replace(func, body=seq(*out)) if changed else func


def _shared_block(s: Stmt) -> Optional[Stmt]:
    loops, body = band(s)
    if len(loops) < 2 or not isinstance(body, (Store, Accumulate)):
        return None
    inner = loops[-1]
    if inner.extent % SHARED_BLOCK or inner.extent < 2 * SHARED_BLOCK or \
            _access_cost(body.buffer, body.indices, inner.var) != _UNIT or \
            op_count(s, per_store=1, most_per_unit=OPS_PER_UNIT) < MIN_PARALLEL_OPS:
        return None
    # a block reads each row of its inputs apart from the others: rows far apart (a page or
    # more) defeat the prefetchers, where the nest as written streams through them
    reads = [(x.buffer, x.indices) for x in loads_of(body.value)]
    if any(_row_bytes(buf, idx, f.var) > SHARED_ROW_BYTES
           for buf, idx in reads for f in loops[:-1]):
        return None
    alone = _alone(s)
    kinds = {info.path: info.kind for info in analysis.analyze(alone).loops}
    if kinds.get((0,)) == "parallel" or kinds.get((0,) * len(loops)) != "parallel":
        return None
    # the innermost loop may go outermost whole: then its blocks may too
    outermost = [len(loops) - 1] + list(range(len(loops) - 1))
    if not analysis.can_permute(alone, (0,), outermost, allow_reassociation=False):
        return None
    taken = {f.var for f in loops} | {b.name for b in buffers_of(s)}
    outer, within = inner.var + "_o", inner.var + "_i"
    while outer in taken or within in taken or outer == within:
        outer, within = outer + "_", within + "_"
    at = Binary("+", Binary("*", Const(SHARED_BLOCK, INDEX), Var(outer)), Var(within))
    if inner.start:
        at = Binary("+", Const(inner.start, INDEX), at)
    return wrap([For(outer, 0, inner.extent // SHARED_BLOCK, body)] + loops[:-1] +
                [For(within, 0, SHARED_BLOCK, body)], substitute_stmt(body, {inner.var: at}))


def _row_bytes(buf: Buffer, indices: tuple[Expr, ...], var: str) -> int:
    """The bytes an access moves by when ``var`` steps by one (a dimension's whole extent
    where an index is not affine)."""
    stride, step = 0, 1
    for dim, idx in reversed(list(zip(buf.shape, indices))):
        m = affine(idx)
        if m is None:
            if any(isinstance(x, Var) and x.name == var for x in walk_expr(idx)):
                stride += dim * step
        else:
            stride += abs(m.coeff(var)) * step
        step *= dim
    return stride * itemsize(buf.dtype)


def runs_shared(s: Stmt) -> bool:
    """Whether ``s``, a top-level statement with no loop of one iteration around it, runs as
    a parallel part: its outermost loop shared between the threads."""
    if not isinstance(s, For) or s.extent < 2:
        return False
    meaning = expand_calls(PrimFunc("statement", (), s)).body
    return _worth_threads(_parallel_paths(meaning, 0), 0, s)


def _worth_threads(parallel: set[tuple[int, ...]], position: int, s: Stmt) -> bool:
    """``parallel``: the paths of the loops the dependence analysis finds parallel."""
    # a copy (a packing stage, a padded input) has no arithmetic but is worth threads too
    if not isinstance(s, For) or s.extent < 2 or \
            op_count(s, per_store=1, most_per_unit=OPS_PER_UNIT) < MIN_PARALLEL_OPS:
        return False
    return (position,) in parallel


# ---------------------------------------------------------------------------
# shared bodies


def shared_bodies(parts: list[Part], buffers: tuple[Buffer, ...]) -> tuple[tuple[Part, ...], tuple[Body, ...]]:
    """One ``Body`` per distinct part up to its buffers, its loop variables' names and a
    constant move of each buffer's accesses; each part says which body runs it and on what.

    Two parts share a body only when their canonical forms (``_canonical``) are equal and
    every float constant has the same bits (``0.0 == -0.0`` in Python, not in the code), so
    the shared code does, per element, the same operations in the same order on the same
    addresses as each part would alone."""
    index = {b.name: k for k, b in enumerate(buffers)}
    keyed: dict[tuple, int] = {}
    forms: list[tuple[Stmt, bool, tuple[Buffer, ...]]] = []
    uses: list[int] = []
    out: list[Part] = []
    for part in parts:
        stmt, used, floats = _canonical(part.body)
        whole = None
        if part.whole is not None:
            # the same accesses in the same order, so the same buffers and moves
            whole, whole_used, whole_floats = _canonical(part.whole)
            if (whole_used, whole_floats) != (used, floats):
                whole = None
        key = (part.parallel, stmt, floats, whole)
        code = keyed.get(key)
        if code is None:
            code = keyed[key] = len(forms)
            forms.append((stmt, part.parallel, tuple(Buffer(f"b{n}", b.dtype, b.shape)
                                                     for n, (b, _) in enumerate(used)), whole))
            uses.append(0)
        uses[code] += 1
        out.append(replace(part, code=code, args=tuple((index[b.name], off) for b, off in used)))
    return tuple(out), tuple(Body(s, p, bufs, n, w) for (s, p, bufs, w), n in zip(forms, uses))


def _canonical(s: Stmt) -> tuple[Stmt, list[tuple[Buffer, int]], tuple[bytes, ...]]:
    """``s`` with buffers renamed ``b0``, ``b1``, ... and loop variables ``v0``, ``v1``, ...
    in order of first appearance, every affine index written in one form (terms by variable,
    then the constant), and each buffer's accesses moved so that the first has constant 0 in
    every dimension, when all its accesses are affine and the move keeps its pointer within
    it. Also gives each buffer with its move in elements, and the bits of each float constant.

        C[i, j + 512] += A[i + 512, k] * A[i + 512, k + 1]
     -> b0[v0, v1] += b1[v0, v2] * b1[v0, v2 + 1]      with C moved by 512, A by 512 * K
    """
    accesses: dict[str, list[tuple[Expr, ...]]] = {}
    buffers: dict[str, Buffer] = {}
    for buf, idx in _accesses(s):
        buffers.setdefault(buf.name, buf)
        accesses.setdefault(buf.name, []).append(idx)
    shifts: dict[str, tuple[int, ...]] = {}
    for name, seen in accesses.items():
        buf = buffers[name]
        first = first_constants(seen)
        shift = (0,) * buf.ndim
        if first and 0 <= buf.offset(first) <= buf.size:
            shift = first
        shifts[name] = shift
    names = {name: Buffer(f"b{n}", buffers[name].dtype, buffers[name].shape)
             for n, name in enumerate(accesses)}
    floats: list[bytes] = []
    out = _Renamer(names, shifts, floats).stmt(s, {})
    used = [(buffers[name], buffers[name].offset(shifts[name])) for name in accesses]
    return out, used, tuple(floats)


def _accesses(s: Stmt):
    """Every buffer access of ``s`` as (buffer, indices), in one fixed order."""
    def expr(e: Expr):
        if isinstance(e, Load):
            yield e.buffer, e.indices
        for c in children(e):
            yield from expr(c)

    for x in walk_stmts(s):  # pre-order: an if's condition before its branches
        if isinstance(x, (Store, Accumulate)):
            yield x.buffer, x.indices
            for i in x.indices:
                yield from expr(i)
            yield from expr(x.value)
        elif isinstance(x, If):
            yield from expr(x.cond)
        elif isinstance(x, Call):
            for _, w in x.operands:
                yield w.buffer, w.base
                for i in w.base:
                    yield from expr(i)


class _Renamer:
    def __init__(self, names: dict[str, Buffer], shifts: dict[str, tuple[int, ...]], floats: list[bytes]):
        self.names, self.shifts, self.floats = names, shifts, floats
        self.depth = 0

    def stmt(self, s: Stmt, env: dict[str, str]) -> Stmt:
        if isinstance(s, (Store, Accumulate)):
            indices = self.indices(s.buffer, s.indices, env)
            return type(s)(self.names[s.buffer.name], indices, self.expr(s.value, env))
        if isinstance(s, For):
            # named by depth: unique along any path, whatever names the program reuses
            inner = {**env, s.var: f"v{self.depth}"}
            self.depth += 1
            body = self.stmt(s.body, inner)
            self.depth -= 1
            return For(inner[s.var], s.start, s.stop, body)
        if isinstance(s, Seq):
            return Seq(tuple(self.stmt(c, env) for c in s.stmts))
        if isinstance(s, If):
            return If(self.expr(s.cond, env), self.stmt(s.then, env),
                      None if s.orelse is None else self.stmt(s.orelse, env))
        return Call(s.intrinsic, tuple(
            (n, Window(self.names[w.buffer.name], self.indices(w.buffer, w.base, env), w.steps))
            for n, w in s.operands), s.output)

    def indices(self, buf: Buffer, indices: tuple[Expr, ...], env: dict[str, str]) -> tuple[Expr, ...]:
        return tuple(self.index(i, d, env) for i, d in zip(indices, self.shifts[buf.name]))

    def index(self, e: Expr, shift: int, env: dict[str, str]) -> Expr:
        form = affine_index(e)
        if form is None:
            return self.expr(e, env)  # its buffer is not moved (``_canonical``)
        terms = sorted((env.get(v, v), c) for v, c in form.terms)
        out = None
        for v, c in terms:
            term = Var(v) if abs(c) == 1 else Binary("*", Const(abs(c), INDEX), Var(v))
            if out is None:
                out = term if c > 0 else Unary("neg", term)
            else:
                out = Binary("+" if c > 0 else "-", out, term)
        k = form.const - shift
        if out is None:
            return Const(k, INDEX)
        return out if k == 0 else Binary("+" if k > 0 else "-", out, Const(abs(k), INDEX))

    def expr(self, e: Expr, env: dict[str, str]) -> Expr:
        if isinstance(e, Var):
            return Var(env.get(e.name, e.name))
        if isinstance(e, Const):
            if is_float(e.dtype):
                self.floats.append(struct.pack("<d", e.value))
            return e
        if isinstance(e, Load):
            return Load(self.names[e.buffer.name], self.indices(e.buffer, e.indices, env))
        kids = children(e)
        return with_children(e, tuple(self.expr(c, env) for c in kids)) if kids else e


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
    loops, body = band(s)
    if not loops:
        return [s]
    groups = stmts_of(body)
    nests = [wrap(loops, g) for g in groups] if len(groups) > 1 else [s]
    better = [_best_order(n) for n in nests]
    if all(b is None for b in better):
        return [s]
    if len(groups) > 1 and not _distributable(func, position, len(loops)):
        return [s]
    return [b if b is not None else n for b, n in zip(better, nests)]




# An innermost loop of at most this many iterations is unrolled where it interleaves rows
# (``_interleaved``).
INTERLEAVE = 8


def _interleaved(func: PrimFunc) -> PrimFunc:
    """Copies that interleave a few rows, each top-level nest whose body is one store and
    whose innermost loop (at most ``INTERLEAVE`` iterations) walks a load across rows while
    the loop around it walks along them, with that innermost loop unrolled::

        for j, k4, kk in grid(N, K // 4, 4):            for j, k4 in grid(N, K // 4):
            P[j, k4, kk] = B[4 * k4 + kk, j]      ->        P[j, k4, 0] = B[4 * k4, j]
                                                            ...
                                                            P[j, k4, 3] = B[4 * k4 + 3, j]

    (the layout of a 4-deep dot's operand). LLVM then vectorises the loop around, reading
    each row at unit stride and interleaving the rows in registers, where the innermost loop
    of four would gather a few bytes at a time: 2.7 times faster on a 256 x 256 int8 panel.
    The same stores run in the same order."""
    out = [_interleave(s) for s in stmts_of(func.body)]
    return func if out == list(stmts_of(func.body)) else replace(func, body=seq(*out))


def _interleave(s: Stmt) -> Stmt:
    loops, body = band(s)
    if len(loops) < 2 or not isinstance(body, Store) or loops[-1].extent > INTERLEAVE:
        return s
    inner, outer = loops[-1], loops[-2]
    loads = [(x.buffer, x.indices) for x in loads_of(body.value)]
    if not any(_access_cost(b, i, outer.var) == _UNIT and _access_cost(b, i, inner.var) == _STRIDED
               for b, i in loads):
        return s
    rows = [substitute_stmt(body, {inner.var: Const(v, INDEX)}) for v in range(inner.start, inner.stop)]
    return wrap(loops[:-1], seq(*rows))


def _distributable(func: PrimFunc, position: int, depth: int) -> bool:
    """Every dependence between two statements of the band's body runs forward."""
    prefix = (position,) + (0,) * (depth - 1)
    n = len(prefix)
    for d in analysis.analyze(func).dependences:
        a, b = d.source.path, d.sink.path
        if a[:n] == prefix and b[:n] == prefix and len(a) > n and len(b) > n and a[n] > b[n]:
            return False
    return True


# A sum into at most this many elements (a tile's leftover corner, a short row) runs with
# its reduction loops outermost (``_sum_outermost``).
FEW_SUMS = 64


def _best_order(nest: Stmt) -> Optional[Stmt]:
    """``nest`` with the cheapest loop innermost (the others keep their order), or None when
    the current order is as cheap or the cheaper one is illegal; a sum into a few elements
    with its reduction outermost (``_sum_outermost``) where that is legal."""
    loops, body = band(nest)
    if len(loops) < 2 or not isinstance(body, (Store, Accumulate)):
        return None
    costs = [_innermost_cost(body, f.var) for f in loops]
    best = min(range(len(loops)), key=lambda k: (costs[k], k != len(loops) - 1))
    order = [k for k in range(len(loops)) if k != best] + [best]
    outermost = _sum_outermost(loops, body, order)
    if outermost is not None and outermost != list(range(len(loops))) and \
            analysis.can_permute(_alone(nest), (0,), outermost, allow_reassociation=False):
        return wrap([loops[k] for k in outermost], body)
    if costs[best] >= costs[-1]:
        return None
    # legal for the nest alone: dependences between it and other statements keep their order
    if not analysis.can_permute(_alone(nest), (0,), order, allow_reassociation=False):
        return None
    return wrap([loops[k] for k in order], body)


def _sum_outermost(loops: list[For], body: Stmt, order: list[int]) -> Optional[list[int]]:
    """For an accumulation into at most ``FEW_SUMS`` elements over a reduction of at least
    ``FEW_SUMS`` terms, whose innermost loop in ``order`` runs over fewer than 8 elements (no
    vector's worth), ``order`` with the reduction loops (those the output's indices do not
    use) moved outermost, else None. Each element's float sum is a chain of dependent
    additions that LLVM may not reassociate; just outside a short loop over a few elements
    the chains run one after another, while a reduction outermost leaves every element's
    next addition independent of the others'. Each element still adds its terms in the same
    order. A tile's 3 x 3 leftover corner over 99 terms: 2.35 -> 0.91 us (Zen 4,
    one thread)."""
    if not isinstance(body, Accumulate) or not is_float(body.buffer.dtype):
        return None  # LLVM vectorises an integer sum itself, reassociated
    used = {v.name for i in body.indices for v in walk_expr(i) if isinstance(v, Var)}
    summed = [k for k in order if loops[k].var not in used]
    kept = [k for k in order if loops[k].var in used]
    # a sum innermost is one chain, in a register; a short loop over elements innermost
    # leaves a chain through memory for each
    if not summed or not kept or order[-1] in summed or loops[order[-1]].extent >= 8 or \
            math.prod(loops[k].extent for k in kept) > FEW_SUMS or \
            math.prod(loops[k].extent for k in summed) < FEW_SUMS:
        return None
    return summed + kept


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
