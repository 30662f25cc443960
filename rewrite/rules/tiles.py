"""Tiles: a pass that fills a blocked product's output, folded into the product's tiles.

fill-into-tiles
    A top-level nest that fills every element of a buffer ``C`` with one constant,
    ``C[v] = z`` (``fusion.producer``'s form), and the next top-level statement that
    mentions ``C``, a band of loops around one intrinsic call whose output window is a tile
    of ``C``, become that band alone, each tile filled right before the first call that
    adds into it::

        for i, j in grid(1024, 1024):                for i_o_b in range(16):
            C[i, j] = 0.0                                for i_o_i, j_o in grid(8, 32):
        ... (nothing that mentions C)                        for t0, t1 in grid(8, 32):
        for i_o_b, k_o, i_o_i, j_o, k_i in          ->            C[64 * i_o_b + 8 * i_o_i + t0, 32 * j_o + t1] = 0.0
                grid(16, 8, 8, 32, 128):                      for k_i in range(128):
            call(..., c=window(C[64 * i_o_b                       call(..., k_o = 0)
                 + 8 * i_o_i, 32 * j_o], ...), ...)       for k_o in range(1, 8):
                                                             for i_o_i, j_o, k_i in grid(8, 32, 128):
                                                                 call(...)

    The pass over ``C`` goes, and where the call's emitter can start its accumulators from
    a constant (``Emitter.starts_fresh``) ``codegen`` folds each tile's fill into the first
    k-loop's accumulators, so the first reduction block never reads ``C`` (a GEMM's ``C =
    0`` then ``C += A @ B`` writes ``C`` once per block, as a BLAS with beta = 0 does).

    Sound when:

    - the call's output window is a box of ``C`` (each operand dim steps one buffer dim by 1,
      no two the same one), and the boxes the band's loops give partition ``C``: each
      buffer dim's base index is the variables of loops from 0 in mixed radix, the smallest
      coefficient the box's extent there, each next coefficient the one before times that
      loop's extent, the last times its extent ``C``'s own extent, no constant, each
      variable in one dim alone. Every element of ``C`` is then in exactly one tile, and a
      tile is one value of the loops that index it (its *tile loops*; the others are its
      *reduction loops*);
    - the band runs first tile loops only (``O``), then a reduction loop ``r``, then tile
      loops (``T``), then reduction loops (``R``). For one tile (fixed ``O`` and ``T``) the
      first call that adds into it is then the one at ``r``'s and ``R``'s first values,
      and peeling ``r``'s first value off keeps every call where it was in the order;
    - no input window of the call is on ``C``, and no statement between the fill and the
      band mentions ``C``.

    Then each tile is filled with ``z`` before any statement reads or adds into it, exactly
    as the fill had done (no statement between saw ``C``, and no call before the tile's
    first touches the tile), and every call adds the same values in the same order.

co-block (below) runs the rows a tiling leaves in the tiles' block loops, where that lets
panel-per-block (``panels.py``) copy their common panel block by block.

It applies to the function's parameters: a temporary filled in its tiles would be zeroed by
the runtime before the call instead (``analysis.filled_before_read`` reads whole-buffer fills
at the top level only), which saves nothing. Statements under an ``if`` are left as they are. The rule runs after ``tidy`` on the chosen
program's statements; it never adds work, so it is always kept; its price drops by what the
removed pass cost (``tidy.passes_cost``).
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import NamedTuple, Optional, Sequence

from .. import ir
from ..affine import Affine, affine
from ..ir import Call, Const, For, Seq, Stmt, Store
from ..match import affine_expr
from ..names import Names
from .fusion import substituted_index
from .. import extract
from .panels import panels_per_block, read_panels
from .tidy import passes_cost


def improve(best, search):
    """``best`` (``pipeline.Choice``) with read-panel, fill-into-tiles and panel-per-block
    (``panels.py``) applied to its planned statements."""
    planned = best.planned
    # parameters only: the runtime zeroes a temporary whose first statement is no fill of
    # it as a whole (analysis.filled_before_read), a pass as long as the one folded away
    params = {b.name for b in best.func.params}
    read = read_panels(planned.stmts)
    stmts = fill_into_tiles(read, params)
    budget = extract.l2_bytes() // 2  # as blocked_loops sizes the blocks
    # the nests that share a panel run in one set of blocks where that lets panel-per-block
    # copy it block by block, and as they were otherwise
    fused = fuse_blocks(fill_into_tiles(co_block(read), params))
    if fused != stmts and _blocked(fused, planned.allocs, search, budget) > \
            _blocked(stmts, planned.allocs, search, budget):
        stmts = fused
    else:  # nests blocked alike over one input L2 does not hold read each block together
        stmts = fuse_blocks(stmts, big=extract.l2_bytes())
        # and so do the rows a product's groups of row tiles leave, dealt out to the groups,
        # each such nest where it then runs in the groups' blocks
        base = list(read)
        for b, new in enumerate(co_block(read, deal=True)):
            if new is read[b]:
                continue
            trial = base[:b] + [new] + base[b + 1:]
            fused = fuse_blocks(fill_into_tiles(trial, params), big=extract.l2_bytes(), dealt=True)
            if len(fused) < len(stmts):
                base, stmts = trial, fused
    stmts, allocs = panels_per_block(stmts, planned.allocs, search.names, budget)
    if stmts == list(planned.stmts):
        return best
    saved = passes_cost(planned.stmts) - passes_cost(stmts)
    return replace(best, planned=replace(planned, stmts=stmts, allocs=allocs,
                                         cost=planned.cost - max(0.0, saved)))


def _blocked(stmts: list[Stmt], allocs, search, budget: int) -> int:
    """How many panels panel-per-block copies block by block in ``stmts``."""
    _, after = panels_per_block(stmts, allocs, search.names.copy(), budget)
    return len({b.name for b in allocs} - {b.name for b in after})


def fill_into_tiles(stmts: list[Stmt], buffers: set[str]) -> list[Stmt]:
    """fill-into-tiles (module doc) on each constant fill of one of ``buffers``."""
    k = 0
    while k < len(stmts):
        fill = _constant_fill(stmts[k], buffers)
        j = None if fill is None else _next_touching(stmts, k, fill)
        folded = _tiled(stmts[j], fill) if j is not None else None
        if folded is None:
            k += 1
            continue
        tiled, region = folded
        rest = [_box_fill(fill, box) for box in _outside(fill.box, region)]
        stmts = stmts[:k] + stmts[k + 1:j] + [tiled] + rest + stmts[j + 1:]
    return stmts


class _Fill(NamedTuple):
    """``buffer[box] = value``: a top-level nest storing one constant into a box of a buffer
    (per dim, ``[lo, hi)``), each element once."""

    buffer: ir.Buffer
    box: tuple[tuple[int, int], ...]
    value: Const


def _constant_fill(s: Stmt, buffers: set[str]) -> Optional[_Fill]:
    """``s`` as a constant fill of a box of one of ``buffers`` (each index one loop variable
    plus a constant, each variable in one index, every loop used), or None."""
    loops, store = ir.band(s)
    if not loops or not isinstance(store, Store) or store.buffer.name not in buffers:
        return None
    if not isinstance(store.value, Const) or store.value.dtype != store.buffer.dtype:
        return None
    by_var = {lp.var: lp for lp in loops}
    if len(by_var) != len(loops) or len(loops) != store.buffer.ndim:
        return None
    box, seen = [], set()
    for idx, whole in zip(store.indices, store.buffer.shape):
        m = affine(idx)
        if m is None or len(m.terms) != 1 or m.terms[0][1] != 1 or m.terms[0][0] in seen:
            return None
        lp = by_var.get(m.terms[0][0])
        if lp is None or lp.extent == 0 or lp.start + m.const < 0 or lp.stop + m.const > whole:
            return None
        seen.add(lp.var)
        box.append((lp.start + m.const, lp.stop + m.const))
    return _Fill(store.buffer, tuple(box), store.value)


def _next_touching(stmts: list[Stmt], k: int, fill: _Fill) -> Optional[int]:
    """The first statement after ``stmts[k]`` that mentions the fill's buffer, passing over
    constant fills of boxes of it that do not meet the fill's box (they write other
    elements and read none, so the fill moves past them unchanged)."""
    for j in range(k + 1, len(stmts)):
        if not ir.mentions(stmts[j], fill.buffer.name):
            continue
        other = _constant_fill(stmts[j], {fill.buffer.name})
        if other is None or _meets(other.box, fill.box):
            return j
    return None


def _meets(a, b) -> bool:
    return all(lo < b_hi and b_lo < hi for (lo, hi), (b_lo, b_hi) in zip(a, b))


def _outside(box, region) -> list:
    """The part of ``box`` outside ``region`` (a box inside it), as disjoint boxes: per
    dim, the slabs below and above the region there, within the region in the dims before."""
    out = []
    for d, ((lo, hi), (r_lo, r_hi)) in enumerate(zip(box, region)):
        inner = tuple(region[:d])
        tail = tuple(box[d + 1:])
        for piece in ((lo, r_lo), (r_hi, hi)):
            if piece[0] < piece[1]:
                out.append(inner + (piece,) + tail)
    return out


def _box_fill(fill: _Fill, box) -> Stmt:
    """``fill``'s constant stored into ``box`` of its buffer."""
    names = _names(set(), len(box))
    s: Stmt = Store(fill.buffer, tuple(affine_expr(Affine(((v, 1),), lo)) for v, (lo, _) in
                                       zip(names, box)), fill.value)
    for v, (lo, hi) in reversed(list(zip(names, box))):
        s = For(v, 0, hi - lo, s)
    return s


def _tiled(nest: Stmt, fill: _Fill) -> Optional[tuple[Stmt, tuple]]:
    """``nest`` with ``fill`` folded into its tiles, and the box of the buffer its tiles
    cover, or None where the rule does not apply."""
    loops, call = ir.band(nest)
    if not loops or not isinstance(call, Call):
        return None
    c = fill.buffer
    out = call.window(call.output)
    if out.buffer != c or any(w.buffer.name == c.name for n, w in call.operands if n != call.output):
        return None
    if len({lp.var for lp in loops}) != len(loops) or any(lp.start != 0 for lp in loops):
        return None
    box = _box(out, call.intrinsic.output.shape)  # per buffer dim, the tile's extent
    if box is None:
        return None
    extent = {lp.var: lp.extent for lp in loops}
    bases = [affine(e) for e in out.base]
    if any(m is None for m in bases) or any(n == 0 for n in extent.values()):
        return None
    region = _partition(bases, box, c.shape, extent)
    if region is None or any(lo < f_lo or hi > f_hi for (lo, hi), (f_lo, f_hi) in zip(region, fill.box)):
        return None
    tile = {v for m in bases for v, _ in m.terms}
    kinds = "".join("t" if lp.var in tile else "r" for lp in loops)
    # O r T R: tile loops, one reduction loop, tile loops, reduction loops
    p = kinds.find("r")
    if p >= 0 and not re.fullmatch("t*r*", kinds[p + 1:]):
        return None
    shape = call.intrinsic.output.shape
    tile_fill = _fill(out, shape, fill.value, _names({lp.var for lp in loops}, len(shape)))
    if p < 0:  # each tile is one call
        return ir.wrap(loops, ir.seq(tile_fill, call)), region
    outer, r, rest = loops[:p], loops[p], loops[p + 1:]
    t_in = [lp for lp in rest if lp.var in tile]
    r_in = [lp for lp in rest if lp.var not in tile]
    if not t_in:  # the reductions run back to back for each tile: fill, then all of them
        return ir.wrap(outer, ir.seq(tile_fill, ir.wrap(loops[p:], call))), region
    first = ir.wrap(t_in, ir.seq(tile_fill, ir.wrap(r_in, _at(call, r.var, r.start))))
    if r.extent == 1:
        return ir.wrap(outer, first), region
    others = For(r.var, r.start + 1, r.stop, ir.wrap(rest, call))
    return ir.wrap(outer, ir.seq(first, others)), region


def _box(w: ir.Window, shape: Sequence[int]) -> Optional[list[tuple[int, int]]]:
    """Per buffer dim of window ``w`` on an operand of ``shape``: ``(operand dim or -1, the
    tile's extent there)``; None unless each operand dim steps its own buffer dim by 1."""
    box = [(-1, 1)] * w.buffer.ndim
    for o, step in enumerate(w.steps):
        moved = [d for d, s in enumerate(step) if s]
        if shape[o] == 1 and not moved:
            continue
        if len(moved) != 1 or step[moved[0]] != 1 or box[moved[0]][0] >= 0:
            return None
        box[moved[0]] = (o, shape[o])
    return box


def _partition(bases: list[Affine], box, shape: Sequence[int], extent: dict[str, int]):
    """The box of a buffer of ``shape`` (per dim ``[lo, hi)``) that the boxes at ``bases``
    (affine in loops from 0 of ``extent``) partition, or None when they partition none:
    per dim, the variables in mixed radix from the box's extent up, a constant ``lo`` at
    least 0, each variable in one dim alone, the last step past ``lo`` within the buffer."""
    seen: set[str] = set()
    region = []
    for m, (_, size), whole in zip(bases, box, shape):
        if m.const < 0:
            return None
        step = size
        for v, coeff in sorted(m.terms, key=lambda t: t[1]):
            if v in seen or v not in extent or coeff != step:
                return None
            seen.add(v)
            step = coeff * extent[v]
        if m.const + step > whole:
            return None
        region.append((m.const, m.const + step))
    return tuple(region)


def _names(taken: set[str], n: int) -> list[str]:
    out: list[str] = []
    k = 0
    while len(out) < n:
        if f"t{k}" not in taken:
            out.append(f"t{k}")
        k += 1
    return out


def _fill(w: ir.Window, shape: Sequence[int], value: Const, names: list[str]) -> Stmt:
    """``value`` stored into every element of window ``w`` on an operand of ``shape``: one
    loop from 0 per operand dim, in order (what ``codegen`` folds into the calls)."""
    idx = []
    for d, e in enumerate(w.base):
        m = affine(e)
        for o, step in enumerate(w.steps):
            if step[d]:
                m = m.plus(Affine(((names[o], step[d]),), 0))
        idx.append(affine_expr(m))
    s: Stmt = Store(w.buffer, tuple(idx), value)
    for o in reversed(range(len(shape))):
        s = For(names[o], 0, shape[o], s)
    return s


def _at(call: Call, var: str, value: int) -> Call:
    """``call`` with loop ``var`` fixed at ``value``, its indices written canonically."""
    at = {var: Const(value, ir.INDEX)}
    return replace(call, operands=tuple(
        (n, replace(w, base=tuple(substituted_index(e, at) for e in w.base)))
        for n, w in call.operands))



# ---------------------------------------------------------------------------
# co-block: the rows a tiling leaves run in the tiles' blocks
#
# The rows a 6-row tiling leaves of a 1024^3 product run on their own nest after the tiles,
# reading B's panel over all its blocks (read-panel). panel-per-block (``panels.py``) copies
# B block by block only where one nest reads the panel; so those rows' calls are first
# ordered as the tiles' blocks are (``co_block``, before fill-into-tiles, which then fills
# both nests alike) and then run inside the tiles' block loops (``fuse_blocks``, after it)::
#
#     for j_o_b, k_o, i_o, j_o_i, k_i in grid(2, 4, 170, 32, 256):
#         call(6x16, c=C[6 * i_o, 512 * j_o_b + 16 * j_o_i], b=B_panel[32 * j_o_b + j_o_i, 256 * k_o + k_i, 0])
#     for j_o, k in grid(64, 1024):                                ->  for j_o_b, k_o, j_o_i, k_i in grid(2, 4, 32, 256):
#         call(4x16, c=C[1020, 16 * j_o], b=B_panel[j_o, k, 0])             call(4x16, c=C[1020, 16 * (32 * j_o_b + j_o_i)], ...)
#
# and after fill-into-tiles ``for j_o_b: (L0; for k_o: L1)`` and ``for j_o_b: (R0; for k_o:
# R1)`` become ``for j_o_b: (L0; R0; for k_o: (L1; R1))``.
#
# Sound. co_block reorders one nest of calls on their own: its calls' output tiles partition
# a box of the output (``_partition``: distinct tiles share no element), no input window is
# on the output, and it has one reduction loop (a loop not in the output's index), split
# into an outer part that goes out and an inner part that stays where it was. For one tile
# the calls then still run in increasing order of that loop; calls on distinct tiles touch
# no common element the other writes, so their order among each other is free. Dealing a
# nest's tiles out to the other's groups (``co_block(deal=True)``) splits one of its tile
# loops the same way, outer part out: a reordering of distinct tiles again.
# fuse_blocks interleaves two nests, ``L`` and the later ``R``, whose outermost loops have one
# range: where every part of ``R`` commutes with every part of ``L`` and with every statement
# between (no buffer one writes in a box the other reads or writes: ``_footprint``), moving
# ``R`` up to ``L`` and running each iteration of ``R``'s outer loop right after ``L``'s keeps
# the order within each and changes nothing else; the same below, loop by loop, where their
# bodies are sequences of as many parts.


def co_block(stmts: list[Stmt], deal: bool = False) -> list[Stmt]:
    """co-block (above) on the top-level statements ``stmts``; with ``deal``, only nests
    whose tiles are dealt out to the earlier nest's groups of rows (``_co_blocked``)."""
    stmts = list(stmts)
    for a, first in enumerate(stmts):
        for b in range(a + 1, len(stmts)):
            new = _co_blocked(first, stmts[b], deal)
            if new is not None:
                stmts[b] = new
    return stmts


def _co_blocked(first: Stmt, s: Stmt, deal: bool = False) -> Optional[Stmt]:
    """Nest ``s`` (a band around one call) in the block loops of ``first`` (another), where
    both read one panel and ``s``'s index of it splits as ``first``'s does; else None.

    ``deal``: where ``first``'s outermost loop is one that ``s`` has no loop for (the groups
    of row tiles of a product whose few rows left run in ``s``), and ``s``'s reduction
    splits into ``first``'s blocks, ``s``'s first tile loop whose extent that loop's divides
    is cut into as many runs of tiles, one a group, so that the two nests can share both
    loops (``fuse_blocks``); None otherwise. ``C = A @ B`` at 64 x 4096 x 64 (two groups of
    five 6-row tiles, four rows left on the 4-row tile), Zen 3, one thread, in turns: the
    rows left in their own nest, reading B's 1 MB again from L3, 483-496 us; in the tiles'
    blocks 442-444 us; numpy 411-419."""
    loops_l, call_l = ir.band(first)
    loops_r, call_r = ir.band(s)
    if not isinstance(call_l, Call) or not isinstance(call_r, Call) or len(loops_l) < 3:
        return None
    if len({lp.var for lp in loops_r}) != len(loops_r) or any(lp.start != 0 for lp in loops_r + loops_l):
        return None
    ext_l = {lp.var: lp.extent for lp in loops_l}
    ext_r = {lp.var: lp.extent for lp in loops_r}
    inputs_l = {w.buffer.name: w for n, w in call_l.operands if n != call_l.output}
    splits = [_split(inputs_l[w.buffer.name], w, ext_l, ext_r) for n, w in call_r.operands
              if n != call_r.output and w.buffer.name in inputs_l]
    split = max(splits, key=len, default={})  # s's variable -> (first's block variable, extent)
    if not split or any(o in ext_r for o, _ in split.values()):
        return None
    out = call_r.window(call_r.output)
    if deal:
        group = loops_l[0]
        if group.var in {o for o, _ in split.values()} or group.var in ext_r or group.extent < 2:
            return None
        tiles = [lp for lp in loops_r if lp.var not in split and
                 any(affine(e) is not None and affine(e).coeff(lp.var) for e in out.base)]
        dealt = next((lp for lp in tiles if lp.extent % group.extent == 0), None)
        if dealt is None:
            return None
        split = {**split, dealt.var: (group.var, dealt.extent // group.extent)}
    if any(w.buffer.name == out.buffer.name for n, w in call_r.operands if n != call_r.output):
        return None
    box = _box(out, call_r.intrinsic.output.shape)
    bases = [affine(e) for e in out.base]
    if box is None or any(m is None for m in bases) or \
            _partition(bases, box, out.buffer.shape, ext_r) is None:
        return None
    tile = {v for m in bases for v, _ in m.terms}
    reduction = [lp.var for lp in loops_r if lp.var not in tile]
    if len(reduction) != 1:
        return None
    taken = Names({lp.var for lp in loops_l} | set(ext_r))
    values, inner_loops = {}, {}
    for r, (outer, n) in split.items():
        name = taken.fresh(f"{r}_i")
        values[r] = affine_expr(Affine(((outer, n), (name, 1)), 0))
        inner_loops[r] = For(name, 0, n, Seq(()))
    outers = {o for o, _ in split.values()}
    outer_loops = [For(lp.var, 0, lp.extent, Seq(())) for lp in loops_l if lp.var in outers]
    new_loops = outer_loops + [inner_loops.get(lp.var, lp) for lp in loops_r]
    call = replace(call_r, operands=tuple((n, replace(w, base=tuple(substituted_index(e, values)
                                                                    for e in w.base)))
                                          for n, w in call_r.operands))
    return ir.wrap(new_loops, call)


def _split(w_l: ir.Window, w_r: ir.Window, ext_l: dict, ext_r: dict) -> dict:
    """Where window ``w_r`` of the later nest indexes a dim by one of its loops, ``r``, and
    ``w_l`` of the earlier by ``n * outer + inner`` (``inner``'s extent ``n``, ``r``'s
    that times ``outer``'s): ``r`` -> ``(outer, n)``."""
    split: dict = {}
    for e_l, e_r in zip(w_l.base, w_r.base):
        m_l, m_r = affine(e_l), affine(e_r)
        if m_l is None or m_r is None or len(m_l.terms) != 2 or m_l.const or \
                len(m_r.terms) != 1 or m_r.const or m_r.terms[0][1] != 1:
            continue
        (inner, one), (outer, n) = sorted(m_l.terms, key=lambda t: t[1])
        r = m_r.terms[0][0]
        if one == 1 and ext_l.get(inner) == n and r not in split and \
                ext_r.get(r) == n * ext_l.get(outer, 0):
            split[r] = (outer, n)
    return split


def fuse_blocks(stmts: list[Stmt], big: Optional[int] = None, dealt: bool = False) -> list[Stmt]:
    """fuse_blocks (co-block, above) on the top-level statements ``stmts``: each later nest
    co-blocked with an earlier one is fused into it. With ``big`` (bytes), only nests whose
    outermost loops step an input of more than ``big`` bytes alike (``_aligned``), or, with
    ``dealt``, whose last loops inside those do (the reduction blocks of a nest whose tiles
    ``co_block`` dealt out to the other's groups of rows)."""
    stmts = list(stmts)
    a = 0
    while a < len(stmts):
        first = stmts[a]
        for b in range(a + 1, len(stmts)):
            s = stmts[b]
            if not (isinstance(first, For) and isinstance(s, For) and
                    (first.start, first.stop) == (s.start, s.stop) and _shares_input(first, s)):
                continue
            if big is not None and not (_aligned(first, s, big) or
                                        dealt and _blocks_aligned(first, s, big)):
                continue
            if not all(_commute(s, x) for x in stmts[a:b]):
                continue
            fused = _fused(first, s, blocks_only=big is not None)
            if fused is None:
                continue
            stmts = stmts[:a] + [fused] + stmts[a + 1:b] + stmts[b + 1:]
            break
        else:
            a += 1
    return stmts


def _aligned(x: For, y: For, big: int) -> bool:
    """Loops ``x`` and ``y`` step an input of their calls of more than ``big`` bytes that both
    read alike: every window of it in either moves by the same offsets per step of its loop
    (not none). Fused, each step's block of it is read by both nests while it is in cache:
    ``C = A @ B`` at 10 x 2048 x 2048 on a 6- and a 4-row tile, each blocked alone, read
    B's 16 MB twice, 2.4-4.7 ms against 1.9-3.2 ms fused (Zen 3, one thread, in turns).
    Loops that merely have the same range, over other blocks of it, are left apart."""
    def steps(loop: For) -> dict:
        out: dict = {}
        for c in ir.walk_stmts(loop.body):
            if isinstance(c, Call):
                for n, w in c.operands:
                    if n != c.output and w.buffer.size * ir.itemsize(w.buffer.dtype) > big:
                        maps = [affine(e) for e in w.base]
                        move = None if any(m is None for m in maps) else \
                            tuple(m.coeff(loop.var) for m in maps)
                        out.setdefault(w.buffer.name, set()).add(move)
        return out
    sx, sy = steps(x), steps(y)
    return any(sx[name] == sy[name] and len(sx[name]) == 1 and None not in sx[name]
               and any(sx[name].copy().pop())
               for name in set(sx) & set(sy))


def _blocks_aligned(x: For, y: For, big: int) -> bool:
    """The last statements of loops ``x`` and ``y`` are loops of one range that step an input
    of more than ``big`` bytes alike (``_aligned``)."""
    bx, by = ir.stmts_of(x.body)[-1], ir.stmts_of(y.body)[-1]
    return isinstance(bx, For) and isinstance(by, For) and \
        (bx.start, bx.stop) == (by.start, by.stop) and _aligned(bx, by, big)


def _shares_input(x: Stmt, y: Stmt) -> bool:
    """Both hold calls, reading one input buffer in common."""
    def inputs(s):
        return {w.buffer.name for c in ir.walk_stmts(s) if isinstance(c, Call)
                for n, w in c.operands if n != c.output}
    return bool(inputs(x) & inputs(y))


def _fused(x: Stmt, y: Stmt, blocks_only: bool = False) -> Optional[Stmt]:
    """``x`` and then ``y`` zipped: loops of one range become one loop (``y``'s variable
    renamed), sequences of as many parts part by part, anything else one after the other.
    The loop right around a call stays each nest's own: zipped, two tiles would take turns
    step by step, their accumulators together more than the registers (a 6- and a 4-row
    tile's 20 of 16 ymm: 13.3 against 2.4-2.8 ms on 10 x 2048 x 2048, Zen 3).
    ``blocks_only``: a loop from one tile to the next (``_tile_loop``) stays each nest's own
    too, so that each nest sweeps its own tiles over the block: on that product, each block
    of 8 rows of B swept by the 6-row tiles and then by the 4-row ones ran 1.54-1.64 ms,
    the two taking turns tile by tile 2.44-2.47 ms (arrays 16 or 48 bytes past a line)."""
    if blocks_only and (_tile_loop(x) or _tile_loop(y)):
        return ir.seq(x, y)
    if isinstance(x, For) and isinstance(y, For) and (x.start, x.stop) == (y.start, y.stop) \
            and x.extent > 0 and not isinstance(x.body, Call) and not isinstance(y.body, Call):
        if x.var != y.var:
            if any(isinstance(z, For) and z.var == x.var for z in ir.walk_stmts(y.body)):
                return None
            body_y = ir.substitute_stmt(y.body, {y.var: ir.Var(x.var)})
        else:
            body_y = y.body
        body = _fused(x.body, body_y, blocks_only)
        return None if body is None else For(x.var, x.start, x.stop, body)
    if isinstance(x, Seq) and isinstance(y, Seq) and len(x.stmts) == len(y.stmts):
        parts = [_fused(a, b, blocks_only) for a, b in zip(x.stmts, y.stmts)]
        return None if any(p is None for p in parts) else ir.seq(*parts)
    return ir.seq(x, y)


def _tile_loop(s: Stmt) -> bool:
    """``s`` is a loop that steps some call's output window by one tile along a buffer dim
    (``C[0, 16 * j_o]`` over ``j_o`` on 16-column tiles), not by a block of them."""
    if not isinstance(s, For):
        return False
    for c in ir.walk_stmts(s.body):
        if not isinstance(c, Call):
            continue
        w = c.window(c.output)
        shape = next(o for o in c.intrinsic.operands if o.name == c.output).shape
        for d, e in enumerate(w.base):
            m = affine(e)
            step = 0 if m is None else abs(m.coeff(s.var))
            if step and step == max((n * abs(st[d]) for n, st in zip(shape, w.steps)), default=0):
                return True
    return False


def _commute(x: Stmt, y: Stmt) -> bool:
    """No buffer one of ``x`` and ``y`` writes lies, in a box it writes, in a box the other
    reads or writes (``_footprint``)."""
    fx, fy = _footprint(x), _footprint(y)
    for name in set(fx) & set(fy):
        (rx, wx), (ry, wy) = fx[name], fy[name]
        if any(_overlap(a, b) for a in wx for b in ry + wy) or \
                any(_overlap(a, b) for a in wy for b in rx):
            return False
    return True


def _overlap(a, b) -> bool:
    return a is None or b is None or all(lo <= h2 and l2 <= hi for (lo, hi), (l2, h2) in zip(a, b))


def _footprint(s: Stmt) -> dict:
    """Per buffer ``s`` touches, the boxes (inclusive bounds per dim, None: unknown) it
    reads and those it writes, over the ranges of the loops around each access."""
    out: dict = {}

    def add(buf, box, write):
        reads, writes = out.setdefault(buf.name, ([], []))
        (writes if write else reads).append(box)

    def bounds(indices, loops, extra=()):
        span = {lp.var: (lp.start, lp.stop - 1) for lp in loops}
        if any(lp.extent <= 0 for lp in loops):
            return ()  # never runs
        box = []
        for d, e in enumerate(indices):
            m = affine(e)
            r = None if m is None else m.bounds(lambda v: span.get(v))
            if r is None:
                return None
            lo, hi = r
            for step, n in extra:
                lo, hi = lo + min(0, step[d] * (n - 1)), hi + max(0, step[d] * (n - 1))
            box.append((lo, hi))
        return tuple(box)

    for x, loops in ir.walk_in_loops(s):
        for e in ir.stmt_exprs(x):
            for ld in ir.loads_of(e):
                b = bounds(ld.indices, loops)
                if b != ():
                    add(ld.buffer, b, False)
        if isinstance(x, (Store, ir.Accumulate)):
            b = bounds(x.indices, loops)
            if b != ():
                add(x.buffer, b, True)
                if isinstance(x, ir.Accumulate):
                    add(x.buffer, b, False)
        elif isinstance(x, Call):
            for n, w in x.operands:
                shape = next(o for o in x.intrinsic.operands if o.name == n).shape
                b = bounds(w.base, loops, tuple(zip(w.steps, shape)))
                if b == ():
                    continue
                add(w.buffer, b, False)
                if n == x.output:
                    add(w.buffer, b, True)
    return out
