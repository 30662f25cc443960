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

It applies to the function's parameters: a temporary filled in its tiles would be zeroed by
the runtime before the call instead (``analysis.filled_before_read`` reads whole-buffer fills
at the top level only), which saves nothing. Statements under an ``if`` are left as they are. The rule runs after ``tidy`` on the chosen
program's statements; it never adds work, so it is always kept; its price drops by what the
removed pass cost (``tidy.passes_cost``).
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Optional, Sequence

from .. import ir
from ..affine import Affine, affine
from ..ir import Call, Const, For, Stmt, Store
from ..match import affine_expr
from .fusion import Producer, producer, substituted_index
from .tidy import passes_cost


def improve(best, search):
    """``best`` (``pipeline.Choice``) with fill-into-tiles applied to its planned statements."""
    planned = best.planned
    # parameters only: the runtime zeroes a temporary whose first statement is no fill of
    # it as a whole (analysis.filled_before_read), a pass as long as the one folded away
    stmts = fill_into_tiles(list(planned.stmts), {b.name for b in best.func.params})
    if stmts == list(planned.stmts):
        return best
    saved = passes_cost(planned.stmts) - passes_cost(stmts)
    return replace(best, planned=replace(planned, stmts=stmts, cost=planned.cost - max(0.0, saved)))


def fill_into_tiles(stmts: list[Stmt], buffers: set[str]) -> list[Stmt]:
    """fill-into-tiles (module doc) on each constant fill of one of ``buffers``."""
    k = 0
    while k < len(stmts):
        fill = _constant_fill(stmts[k], k, buffers)
        later = [] if fill is None else \
            [j for j in range(k + 1, len(stmts)) if ir.mentions(stmts[j], fill.buffer.name)]
        tiled = _tiled(stmts[later[0]], fill) if later else None
        if tiled is None:
            k += 1
            continue
        j = later[0]
        stmts = stmts[:k] + stmts[k + 1:j] + [tiled] + stmts[j + 1:]
    return stmts


def _constant_fill(s: Stmt, k: int, buffers: set[str]) -> Optional[Producer]:
    fill = producer(s, k, buffers)
    return fill if fill is not None and isinstance(fill.value, Const) else None


def _tiled(nest: Stmt, fill: Producer) -> Optional[Stmt]:
    """``nest`` with ``fill`` folded into its tiles, or None where the rule does not apply."""
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
    if any(m is None for m in bases) or not _partition(bases, box, c.shape, extent):
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
        return ir.wrap(loops, ir.seq(tile_fill, call))
    outer, r, rest = loops[:p], loops[p], loops[p + 1:]
    t_in = [lp for lp in rest if lp.var in tile]
    r_in = [lp for lp in rest if lp.var not in tile]
    if not t_in:  # the reductions run back to back for each tile: fill, then all of them
        return ir.wrap(outer, ir.seq(tile_fill, ir.wrap(loops[p:], call)))
    first = ir.wrap(t_in, ir.seq(tile_fill, ir.wrap(r_in, _at(call, r.var, r.start))))
    if r.extent == 1:
        return ir.wrap(outer, first)
    others = For(r.var, r.start + 1, r.stop, ir.wrap(rest, call))
    return ir.wrap(outer, ir.seq(first, others))


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


def _partition(bases: list[Affine], box, shape: Sequence[int], extent: dict[str, int]) -> bool:
    """Whether the boxes at ``bases`` (affine in loops from 0 of ``extent``) partition a
    buffer of ``shape``: per dim, the variables in mixed radix from the box's extent up to
    the buffer's, no constant, each variable in one dim alone."""
    seen: set[str] = set()
    for m, (_, size), whole in zip(bases, box, shape):
        if m.const != 0:
            return False
        step = size
        for v, coeff in sorted(m.terms, key=lambda t: t[1]):
            if v in seen or v not in extent or coeff != step:
                return False
            seen.add(v)
            step = coeff * extent[v]
        if step != whole:
            return False
    return True


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

