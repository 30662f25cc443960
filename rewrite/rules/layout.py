"""Packing stages: an input operand copied into the layout an intrinsic needs (``pack-operand``),
or into panels its calls read contiguously along the reduction (``pack-panel``, below).

``pack-operand``: when a binding reads an input through a window that misses the unit stride
the descriptor's ``layout`` asks for, copy the elements the nest reads into a fresh temporary
whose last index runs along the intrinsic's unit-stride dim, and read the copy instead::

    for i, j, k in grid(48, 64, 64):            for k, j in grid(64, 64):
        C[i, j] += A[i, k] * B[j, k]       ->       B_pack[k, j] = B[j, k]
                                                for i, j, k in grid(48, 64, 64):
                                                    C[i, j] += A[i, k] * B_pack[k, j]

The copy runs over the program dims the load depends on (one axis each, its extent, its index
shifted by the dim's start), so an overlapping access (a convolution's ``X[h + rh, ...]``) is
duplicated: an explicit im2col. The extractor weighs the copy (``cost.py``, per element moved)
against the gather penalty of the unpacked calls, and keeps the gather when it is cheaper.

Sound: an ``AccNest`` never reads the buffer it writes (``nests.as_nest``), so the nest does
not write ``X``; the copy runs immediately before the nest and covers every point of every
dim the load depends on, so each read of ``B_pack[...]`` sees exactly the value ``X[...]``
would have had. Only input operands are packed; the output is never copied.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from .. import cost, ir
from ..affine import Affine, affine
from ..ir import Buffer, Expr, For, Load, Stmt, Store, Var, Window
from ..match import BodyMatch, Binding, affine_expr, slow_dims
from ..names import Names
from ..nests import AccNest, Dim

# One operand to pack: the program load, and the program dims of the copy, outermost first
# (the dim the intrinsic wants at unit stride last).
Request = tuple[Load, tuple[Dim, ...]]


@dataclass(frozen=True)
class Packing:
    """Copies to run before ``nest``, the temporaries they fill, and ``nest`` reading them."""

    copies: tuple[Stmt, ...]
    buffers: tuple[Buffer, ...]
    nest: AccNest
    loads: tuple[tuple[Load, Load], ...]  # original load -> load of the packed copy

    @property
    def elements(self) -> int:
        return sum(b.size for b in self.buffers)

    @property
    def after(self) -> tuple[Stmt, ...]:
        return ()  # the nest reads the copies; nothing to bring back

    def match(self, m: BodyMatch, desc=None) -> BodyMatch:
        """``m`` with its operand loads read from the packed copies (of any intrinsic
        ``desc``)."""
        new = dict(self.loads)
        return BodyMatch(m.nest, m.intrinsic, tuple(new.get(x, x) for x in m.loads), m.scale)


def requests(nest: AccNest, desc, b: Binding) -> Optional[tuple[Request, ...]]:
    """What ``pack-operand`` would copy for binding ``b``: each input operand that misses a
    unit stride, with the dims of its copy. None when packing cannot make the calls
    unit-stride: every operand already is, the output misses (it is never packed), one load
    stands for two operands that need different copies, or the load reads the output."""
    steps, loads = dict(b.steps), dict(b.loads)
    bound, dims = b.bound(), {d.name: d for d in nest.dims}
    if not b.tiles:  # a loop shorter than the intrinsic's dim: no call to run at unit stride
        return None
    if slow_dims(desc, desc.output, nest.out, steps[desc.output.name]):
        return None
    out: dict[Load, tuple[Dim, ...]] = {}
    for op in desc.inputs:
        load = loads[op.name]
        slow = slow_dims(desc, op, load.buffer, steps[op.name])
        if not slow:
            continue
        if load.buffer.name == nest.out.name:
            return None
        maps = [affine(i) for i in load.indices]
        if any(m is None for m in maps):
            return None
        unit = bound.get(op.dims[slow[-1]])  # only one dim can be innermost
        if unit is None:
            return None
        used = [d for d in nest.dims if d.name != unit and any(m.coeff(d.name) for m in maps)]
        order = tuple(used) + (dims[unit],)
        if out.get(load, order) != order:
            return None
        out[load] = order
    return tuple(out.items()) or None


def pack(nest: AccNest, reqs: tuple[Request, ...], names: Names) -> Packing:
    """``pack-operand`` for each request: a fresh temporary (named from ``names``),
    the copy nest filling it, and ``nest`` reading it in place of the original load."""
    copies, buffers, loads = [], [], []
    for load, order in reqs:
        buf = Buffer(names.fresh(f"{load.buffer.name}_pack"), load.buffer.dtype,
                     tuple(d.extent for d in order))
        idx = tuple(affine_expr(Affine(((d.name, 1),), -d.start)) for d in order)
        s: Stmt = Store(buf, idx, load)
        for d in reversed(order):
            s = For(d.name, d.start, d.stop, s)
        copies.append(s)
        buffers.append(buf)
        loads.append((load, Load(buf, idx)))
    value = _replace_loads(nest.value, dict(loads))
    return Packing(tuple(copies), tuple(buffers), AccNest(nest.dims, nest.out, nest.indices, value),
                   tuple(loads))


def price(p: Packing) -> float:
    """What ``pack-operand``'s copies cost (``cost.packing``)."""
    return cost.packing(p.copies)


def _replace_loads(e: Expr, new: dict[Load, Load]) -> Expr:
    return ir.map_loads(e, lambda x: new.get(x, x))


# ---------------------------------------------------------------------------
# pack-panel: each tile's operand over the whole reduction, contiguous
#
# A binding's calls run in loops whose innermost one is the reduction (codegen keeps the
# accumulators in registers across it). An input whose window is unit-stride can still jump
# far between consecutive calls: the 6x16 product's ``b=window(B[k, 16 * j_o], ...)`` moves
# a whole row of B (2 KB at N = 512) per k, so the 512 lines one tile reads fall into 32 of
# L2's 1024 sets and come again from L3 for every tile (``cost.streamed`` says when that
# costs more than a copy, as measured). ``pack-panel`` copies the operand, for
# the divisible part only, into a panel where each tile's data is contiguous over the
# reduction; the remainder nests keep reading the original::
#
#     for i_o, j_o, k in grid(85, 32, 512):          for j_o, k, j_i in grid(32, 512, 16):
#         call(..., b=window(B[k, 16 * j_o],   ->         B_panel[j_o, k, j_i] = B[k, 16 * j_o + j_i]
#                            (1, 0), (0, 1)))        for i_o, j_o, k in grid(85, 32, 512):
#                                                        call(..., b=window(B_panel[j_o, k, 0],
#                                                                           (0, 1, 0), (0, 0, 1)))
#
# The panel's axes: the tile index of every tiled dim the load uses (the call loops' own
# outer variables) and the other dims it uses (the reduction, unit intrinsic dims, free
# loops; index shifted by the dim's start), in the call loops' order, then the in-tile
# offset of each tiled dim in the operand's dim order, so the intrinsic's unit-stride dim
# stays last. Every index stays affine in the call loops' variables.
#
# The same copy gives blocks: an operand whose ``Layout`` asks for one ``contiguous``
# window (the u8 x i8 dot's ``b[16, 4]``, one 64-byte load) with both its dims tiled gets
# ``B_panel[j_o, k_o, j_i, k_i] = B[4 * k_o + k_i, 16 * j_o + j_i]``: each call's window is
# one block, element strides (4, 1), and the next call along ``k_o`` reads the next block.
# ``cost.unblocked`` prices the row-by-row window it replaces.
#
# An operand whose ``Layout`` names a ``widened`` dtype (the AVX2 int8 tile's u8 and i8, read
# as i16) is copied so, each element the value cast (``i16(B[k, j])``), and copied even when
# its windows need no other change: every call then loads what ``vpmaddwd`` takes, where it
# would otherwise widen each block again (``cost.unwidened`` prices that). The cast is exact
# (i16 holds every u8 and i8 value) and the call means its semantics on the values its
# window holds, so the calls compute what they did on the source.
#
# Sound: as for ``pack-operand`` the nest does not write the operand's buffer and the copy
# runs right before the calls. Each call reads the panel at (tile t, other dims x, offset o)
# for o below the intrinsic extent; the copy stored there the load at p = n * t + o + start,
# which is exactly the element the original window's base ``n * t + start`` plus step o
# addressed. The copy covers every tile of the divisible part and every value of the other
# dims, so every element a call reads was written; the remainders read no panel.



@dataclass(frozen=True)
class Stream:
    """How one input's windows move along the call loops' innermost loop (the reduction):
    bytes from one call's window to the next, bytes of each contiguous run a call reads,
    runs per call, calls in a row (the loop's extent); whether the descriptor wants it at
    unit stride (and it has it); whether the next loop out leaves it in place, so the
    next tile reads the same panel again."""

    operand: str
    stride: int
    run: int
    runs: int
    steps: int
    unit: bool = True
    reused: bool = False
    apart: int = 0  # bytes between a call's runs (rows of A), 0 for one run
    footprint: int = 0  # bytes of the buffer it reads
    once: bool = False  # no other tile reads its windows: every call loop but one moves it

    @property
    def contiguous(self) -> bool:
        """Consecutive calls read adjacent memory (or the same: an invariant operand)."""
        return self.stride <= self.run * self.runs


@dataclass(frozen=True)
class Panel:
    """Copies filling the panels, the temporaries, and the calls' windows on them."""

    copies: tuple[Stmt, ...]
    buffers: tuple[Buffer, ...]
    windows: tuple[tuple[str, Window], ...]  # operand -> its window on the panel

    @property
    def elements(self) -> int:
        return sum(b.size for b in self.buffers)


def _moves(w: Window, var: str) -> int:
    maps = [affine(i) for i in w.base]
    return w.buffer.offset(tuple(m.coeff(var) if m is not None else 0 for m in maps))


def streams(desc, windows: dict[str, Window], inner: Optional[Dim],
            outer: Optional[Dim] = None, around: Optional[Sequence[Dim]] = None) -> tuple[Stream, ...]:
    """The stream of each input not gathered, when ``inner`` (the innermost call loop) is a
    reduction: the output's window stays put along it, so consecutive calls accumulate in
    registers. ``outer``: the call loop around ``inner``, if any; ``around``: all the call
    loops around it, where known (``Stream.once``)."""
    if inner is None or inner.extent < 2 or _moves(windows[desc.output.name], inner.name):
        return ()
    out = []
    for op in desc.inputs:
        w, need = windows[op.name], desc.layout.get(op.name)
        if slow_dims(desc, op, w.buffer, w.steps):
            continue
        flat = list(w.strides)
        if need is not None and len(need.unit_stride) == 1:
            unit = need.unit_stride[0]
        else:  # the last dim stepping by one element, if any, runs contiguously
            unit = next((k for k in reversed(range(len(flat))) if abs(flat[k]) == 1), None)
        size = ir.itemsize(w.buffer.dtype)
        runs = 1
        for k, extent in enumerate(op.shape):
            if k != unit and flat[k]:
                runs *= extent
        reused = outer is not None and outer.extent > 1 and not _moves(w, outer.name)
        apart = min((abs(flat[k]) for k, extent in enumerate(op.shape)
                     if k != unit and flat[k] and extent > 1), default=0) * size
        out.append(Stream(op.name, abs(_moves(w, inner.name)) * size,
                          (op.shape[unit] if unit is not None else 1) * size, runs, inner.extent,
                          need is not None and bool(need.unit_stride), reused, apart,
                          w.buffer.size * size,
                          around is not None and all(_moves(w, d.name) or d.extent < 2
                                                     for d in around)))
    return tuple(out)


def panel_operands(desc, windows: dict[str, Window], found: tuple[Stream, ...]) -> tuple[str, ...]:
    """The inputs of a binding's calls that ``pack-panel`` copies, in the descriptor's order:
    each unit-stride input whose windows lie far apart along the reduction (``found``: the
    calls' ``streams``), each whose rows all fall into one L1 set (``cost.one_set``: A's 8
    rows at 2048 floats a row), and each whose ``Layout`` wants one contiguous block per
    call that its window (in ``windows``) is not."""
    far = {s.operand for s in found if s.unit and not s.contiguous}
    far |= {s.operand for s in found if cost.one_set(s)}
    far |= {op.name for op in desc.inputs if desc.layout.get(op.name) is not None
            and desc.layout[op.name].contiguous and not cost.is_block(op, windows[op.name])}
    far |= {op.name for op in desc.inputs if cost.unwidened(desc, op, windows[op.name])}
    return tuple(op.name for op in desc.inputs if op.name in far)


def _source_order(axes: list, source: Load) -> list:
    """The panel's outer ``axes`` in the order the copy runs them: the one that moves
    furthest through the source outermost (stable among equals). The copy then reads its
    source row after row, as it lies in memory; the panel's own order would walk a B panel
    down a column of 128-byte pieces, a row (often a page) apart, where the hardware
    prefetchers stop at every page: 0.54 against 0.86 ms for the 4 MB panels of a 1024^3
    product's B on Zen 4. Any order writes the same element once, so the copy is the same."""
    strides = source.buffer.strides

    def moves(axis) -> int:
        return abs(sum(affine(i).coeff(axis[0]) * st for i, st in zip(source.indices, strides)))

    return sorted(axes, key=moves, reverse=True)


def pack_panel(nest: AccNest, desc, b: Binding, tiled: dict[str, tuple[str, int, int]],
               operands: tuple[str, ...], names: Names,
               panels: Optional[dict] = None, order: tuple[str, ...] = ()) -> Optional[Panel]:
    """``pack-panel`` for each input in ``operands`` of the calls of binding ``b`` (tiled
    as ``match.dims_after_tiling`` says): a temporary per operand, the copy filling it,
    and the operand's window on it. A temporary is named fresh (from ``names``) unless
    ``panels`` already holds a name for a panel of the same content. ``order``: the call
    loops, outermost first; the panel's outer axes follow it. None when an operand
    has no tiled dim, or its window on the panel would miss a unit stride."""
    panels = {} if panels is None else panels
    bound, loads = b.bound(), dict(b.loads)
    extent_of = {d.name: d.extent for d in desc.dims}
    dims = {d.name: d for d in nest.dims}
    loop_names = Names(set(dims) | {outer for outer, _, _ in tiled.values() if outer})
    copies, buffers, windows = [], [], []
    for op in desc.inputs:
        if op.name not in operands:
            continue
        load = loads[op.name]
        maps = [affine(i) for i in load.indices]
        if any(m is None for m in maps):
            return None
        uses = lambda p: any(m.coeff(p) for m in maps)
        inner = [(bound[it], extent_of[it]) for it in op.dims  # in-tile, operand dim order
                 if it is not None and bound.get(it) is not None and extent_of[it] > 1
                 and uses(bound[it])]
        if not inner:
            return None
        tiles = [(tiled[p][0], dims[p].extent // n) for p, n in inner if tiled[p][0]]
        middle = [d for d in nest.dims if uses(d.name) and d.name not in dict(inner)]
        # outer axes: (loop variable, its start, extent, index on the panel)
        axes = [(t, 0, c, Var(t)) for t, c in tiles] + \
            [(d.name, d.start, d.extent, affine_expr(Affine(((d.name, 1),), -d.start)))
             for d in middle]
        if order:  # the calls' loop order: consecutive calls read adjacent blocks
            rank = {v: k for k, v in enumerate(order)}
            axes.sort(key=lambda a: rank.get(a[0], len(rank)))
        offsets = [loop_names.fresh(f"{p}_i") for p, _ in inner]
        zero = ir.Const(0, ir.INDEX)
        need = desc.layout.get(op.name)
        dtype = need.stored(load.buffer.dtype) if need is not None else load.buffer.dtype
        content = (load, tuple((p, n, tiled[p]) for p, n in inner), tuple(middle),
                   tuple(a[0] for a in axes), dtype)
        if content not in panels:
            panels[content] = names.fresh(f"{load.buffer.name}_panel")
        buf = Buffer(panels[content], dtype, tuple(a[2] for a in axes) + tuple(n for _, n in inner))
        # the element at (tile t, offset o) of tiled dim p is the load at p = n * t + o + start
        at = {}
        for (p, n), off in zip(inner, offsets):
            outer, _, start = tiled[p]
            terms = ((outer, n), (off, 1)) if outer else ((off, 1),)
            at[p] = affine_expr(Affine(tuple(sorted(terms)), start))
        idx = tuple(a[3] for a in axes) + tuple(Var(o) for o in offsets)
        source = ir.substitute(load, at)
        s: Stmt = Store(buf, idx, source if dtype == source.dtype else ir.Cast(dtype, source))
        loops = [(v, lo, lo + n) for v, lo, n, _ in _source_order(axes, source)] \
            + [(o, 0, n) for o, (_, n) in zip(offsets, inner)]
        for var, lo, hi in reversed(loops):
            s = For(var, lo, hi, s)
        axis = {p: len(axes) + k for k, (p, _) in enumerate(inner)}
        axis.update({a[0]: k for k, a in enumerate(axes)})
        steps = []
        for it in op.dims:
            p = bound.get(it) if it is not None else None
            steps.append(tuple(int(p in axis and a == axis[p]) for a in range(buf.ndim)))
        if slow_dims(desc, op, buf, steps):
            return None
        base = tuple(a[3] for a in axes) + (zero,) * len(inner)
        copies.append(s)
        buffers.append(buf)
        windows.append((op.name, Window(buf, base, tuple(steps))))
    return Panel(tuple(copies), tuple(buffers), tuple(windows)) if windows else None
