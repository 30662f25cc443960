"""Padding to the intrinsic's tile (``pad-to-tile``): a nest whose loops do not divide by the
tile of an intrinsic runs that intrinsic over extents rounded up to the tile, on zero-padded
copies of its operands, instead of leaving remainder nests to other code.

A binding of an intrinsic leaves, for each bound loop whose extent the intrinsic's dim does
not divide, a remainder nest (``match.remainders``). This nest stage rounds those loops up
instead (a loop shorter than one tile, but at least half of one, is rounded up to it, see
``match.bindings(short=True)``): every input it reads along a rounded loop is copied into a
temporary with one axis per loop its index uses (as ``pack-operand`` does; the axis the
intrinsic wants at unit stride last, or in the intrinsic's blocks where it reads one
contiguous block a call, as ``pack-panel`` lays them out), filled with a pad value past the
real extents; the nest runs over the padded extents on the copies. When a rounded loop moves
the output, the nest accumulates into a padded temporary instead, started at ``-0.0`` (``0``
on integers), and only its valid part is added to the output afterwards; when only
reduction loops are rounded, the nest accumulates into the output itself. The u8 x i8
product of 30 x 30 x 30 on the 16 x 4 dot (``tests/golden/padding/int8_dot_30.expected``)::

    for i, j, k in grid(30, 30, 30):              A_pad[i, k] = A[i, k], 0 for k >= 30
        C[i, j] += i32(A[i, k]) * i32(B[k, j])    B_pad[j_o, k_o, j_i, k_i] = B[4 * k_o + k_i,
                                                      16 * j_o + j_i], 0 past 30
                                        ->        C_pad[i, j] = 0                   (30 x 32)
                                                  for i, j_o, k_o in grid(30, 2, 8):
                                                      call(dot, c=C_pad[i, 16 * j_o],
                                                           a=A_pad[i, 4 * k_o],
                                                           b=B_pad[j_o, k_o, 0, 0])
                                                  for i, j in grid(30, 30):
                                                      C[i, j] += C_pad[i, j]

and the padded nest is planned again (``extract.py``), on that intrinsic alone: here 480 dot
calls and nothing left over, where the remainders left 14 of the 30 columns to scalar code.
The extractor weighs the stage against the remainders on ``cost.py``'s prices
(``cost.padding``) and keeps the remainders where they are cheaper (a last column of a large
product): padding is never forced. It pads the nests the function has, not remainder nests:
on u8 x i8 products a padded remainder (``k`` from 28 to 30 of a 64 x 64 x 30 product)
measured slower than the nest padded whole (8.0 against 4.5 us) and than the remainder
left to scalar code, which the model prices too high for integers (LLVM vectorises it).
On f32 a padded remainder was a little faster than the nest padded whole (30^3: 3.8 against
4.2 us; 255^3: 282 against 298 us), both faster than the remainders (5.4, 321 us).

Sound. Write ``D`` for the nest's iteration box and ``D'`` for the padded box.

- Each copy holds, at a point of ``D`` (projected on the loops its load uses), exactly the
  value the load reads there: the nest does not write the operand's buffer
  (``nests.as_nest``) and the copy runs immediately before it, as for ``pack-operand``. At
  every other point of ``D'`` it holds the pad value.
- A point of ``D'`` whose output loops all lie in ``D`` but one of whose reduction loops is
  rounded lies past the real extent of that loop; every load uses every rounded reduction
  loop (else the stage is refused), so every load reads its pad, and the pads are chosen so
  that the body evaluates there, by the interpreter's own arithmetic (``_zero_term``), to
  exactly ``0`` on integers and ``-0.0`` on floats: both operands of a product are padded
  along k, so a padded term is ``0 * 0``, never ``0 * x`` with an ``x`` that could be Inf or
  NaN. ``x + 0`` is ``x`` on wrap-around integers, and ``x + (-0.0)`` is ``x`` for every
  float ``x``: NaN, both infinities and both zeros included (``+0.0`` would not be: it turns
  a ``-0.0`` sum into ``+0.0``). Where no choice of pads gives ``-0.0`` (a float body built
  from casts of integers: ``f32(0)`` is ``+0.0``), reduction loops are not padded.
- A point of ``D'`` with an output loop past its real extent accumulates into an element of
  the padded temporary past the output's valid part, which is never added back: whatever it
  holds (even ``0 * Inf``) is discarded.
- The points of ``D`` accumulate their terms exactly as the nest did, into the output or
  into the temporary, which starts at ``-0.0`` (``0`` on integers): a sum of terms started
  at ``-0.0`` is the sum of the terms, signed zeros included. Adding the temporary to the
  output regroups the output's sum, as every reassociation the nests are licensed to make
  (``nests.py``); the output's elements each receive every term of ``D`` once, also when
  the output's index is not injective (each temporary element is added back once).

So the output gets, up to reassociation, exactly the nest's terms plus terms that are the
identity of its addition: the same value, the same NaN/Inf pattern, the same signed zeros.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass, replace
from typing import Optional, Sequence

import numpy as np

from .. import cost, ir
from ..affine import Affine, affine
from ..ir import Accumulate, Buffer, Const, Expr, For, Load, Stmt, Store, Var
from ..match import BodyMatch, Binding, affine_expr, semantics_value
from ..names import Names
from ..printer import show_expr
from ..nests import AccNest, Dim


# One axis of a padded copy: a loop, and which part of it: "" the loop itself (shifted by its
# start), "o" and "i" the tile and the offset in the tile of a loop split by the tile.
Axis = tuple[str, str]


@dataclass(frozen=True)
class Request:
    """What ``pad-to-tile`` does to one nest, for ``intrinsic``: the loops it rounds up
    (name, padded extent), the loops it splits into tile and offset (name, tile extent),
    each load it copies with its copy's axes (outermost first) and whether its pad is
    ``-0.0``, and the axes of the output's temporary (None: the nest accumulates into the
    output itself)."""

    intrinsic: str
    padded: tuple[tuple[str, int], ...]
    split: tuple[tuple[str, int], ...]
    loads: tuple[tuple[Load, tuple[Axis, ...], bool], ...]
    out_axes: Optional[tuple[Axis, ...]]
    # the padded nest is planned on ``intrinsic`` alone, or, where some loops are left as
    # they are, also on its siblings along the dims bound to those loops (``siblings``)
    family: Optional[tuple] = None


@dataclass(frozen=True)
class Padding:
    """Copies and fills to run before ``nest``, the temporaries they fill, ``nest`` over the
    padded extents reading them, and ``after``: the output's valid part added back."""

    copies: tuple[Stmt, ...]
    buffers: tuple[Buffer, ...]
    nest: AccNest
    loads: tuple[tuple[Load, Load], ...]  # original load -> load of the padded copy
    after: tuple[Stmt, ...]
    intrinsic: str  # the one the extents were rounded for
    # temporaries laid out otherwise than what they copy: transposed, in blocks, duplicated
    relaid: tuple[Buffer, ...] = ()
    family: Optional[tuple] = None  # ``Request.family``

    @property
    def elements(self) -> int:
        return sum(b.size for b in self.buffers)

    def match(self, m: BodyMatch, desc) -> Optional[BodyMatch]:
        """``m`` (of intrinsic ``desc``) with its operand loads read from the padded copies;
        None for a match of another intrinsic than the one the extents were rounded for,
        unless, where loops were left unrounded, it is a sibling of that one along them
        (``siblings``): the other intrinsics had the unpadded nest."""
        if m.intrinsic != self.intrinsic and (
                self.family is None or siblings(desc, self.family[0]) != self.family):
            return None
        new = dict(self.loads)
        return BodyMatch(m.nest, m.intrinsic, tuple(new.get(x, x) for x in m.loads), m.scale)


def _uses(m: Affine, d: str) -> bool:
    return bool(m.coeff(d))


def _axes(maps, dims: tuple[Dim, ...], last: Optional[str]) -> tuple[Axis, ...]:
    """The loops an access with index maps ``maps`` uses, in the order of the first index
    that uses each (so ``B[k, j]`` keeps B's own layout), ``last`` moved to the end."""
    used = [d.name for d in dims if any(_uses(m, d.name) for m in maps)]
    first = {d: next(k for k, m in enumerate(maps) if _uses(m, d)) for d in used}
    order = sorted(used, key=lambda d: (first[d], used.index(d)))
    if last is not None and last in order:
        order.remove(last)
        order.append(last)
    return tuple((d, "") for d in order)


def _blocked_axes(maps, dims: tuple[Dim, ...], inner: list[str], moving: set[str]) -> tuple[Axis, ...]:
    """The axes of a copy read one contiguous block per call: the tile of each loop in
    ``inner`` and every other loop the access uses (those that move the output first, then
    the reduction, so consecutive calls along it read consecutive blocks), then the offsets
    in the tiles, in ``inner``'s order (the operand's dims)."""
    used = [d.name for d in dims if any(_uses(m, d.name) for m in maps)]
    outer = sorted(used, key=lambda d: (d not in moving, used.index(d)))
    return tuple((d, "o" if d in inner else "") for d in outer) + tuple((d, "i") for d in inner)


def _bound_dim(op, k: int, bound: dict) -> Optional[str]:
    it = op.dims[k]
    return bound.get(it) if it is not None else None


def _unit_dim(desc, op, bound: dict) -> Optional[str]:
    """The program loop that operand ``op`` of ``desc`` wants at unit stride, if any."""
    need = desc.layout.get(op.name)
    if need is None or not need.unit_stride:
        return None
    return _bound_dim(op, need.unit_stride[-1], bound)


def candidates(nest: AccNest, desc, b: Binding) -> list[Request]:
    """The ways ``pad-to-tile`` may pad ``nest`` for binding ``b``: every bound loop the
    intrinsic's dim does not divide rounded up (``requests``), then each proper subset of
    those loops that holds the loops shorter than their dim and the reduction loops, the
    output's loops left out running as remainders on the intrinsic and its ``siblings``
    along them. A batched
    product of 50 x 40 rows of 60 columns on the 6 x 16 tile pads its columns to 64 and
    leaves the 2 rows past 48 to the 4-row tile, where rounding the rows too would copy
    every row of A. A reduction loop left to a remainder splits every output tile's sum
    in two nests, which the prices undercharge: an int8 convolution with 30 input and
    output channels that rounded its output channels alone, its last input channels on
    the 4 x 16 x 2 tile, measured 85 against 44 us padded whole (Zen 3)."""
    whole = requests(nest, desc, b)
    if whole is None:
        return []
    extent_of = {d.name: d.extent for d in desc.dims}
    dims = {d.name: d for d in nest.dims}
    moving = {d for d in dims if any(_uses(affine(i), d) for i in nest.indices)}
    kept = {p for it, p in b.dims if p is not None and dims[p].extent < extent_of[it]}
    loops = [d for d, _ in whole.padded]
    kept |= {d for d in loops if d not in moving}
    out = [whole]
    for k in range(1, len(loops)):
        for some in itertools.combinations(loops, k):
            if kept <= set(some):
                req = requests(nest, desc, b, frozenset(some))
                if req is not None:
                    left = tuple(sorted(it for it, p in b.dims if p in loops and p not in some))
                    out.append(replace(req, family=siblings(desc, left)))
    return out


def siblings(desc, dims: tuple[str, ...]) -> tuple:
    """What ``desc`` shares with the intrinsics that differ from it only in the extents of
    its iteration dims ``dims`` (the 4- and 2-row f32 tiles of the 6-row one, along its
    rows): the loops a padded nest leaves unrounded keep remainders that run on those, the
    kernel of the same shape on fewer rows. Any other intrinsic reads the operands
    otherwise (a 4 x 16 x 2 int8 tile's remainder on the 2 x 16 x 4 one read its input in
    place, two bytes a step, and measured twice as slow as padding the nest whole)."""
    return (dims,
            tuple((d.name, d.kind, None if d.name in dims else d.extent) for d in desc.dims),
            tuple((o.name, o.dtype, o.role, o.dims) for o in desc.operands),
            tuple(sorted((k, repr(v)) for k, v in desc.layout.items())),
            show_expr(semantics_value(desc)))


def requests(nest: AccNest, desc, b: Binding,
             rounds: Optional[frozenset[str]] = None) -> Optional[Request]:
    """What ``pad-to-tile`` would do for binding ``b``: round up every bound loop the
    intrinsic's dim does not divide (of ``rounds``, when given). None when no loop needs
    it, an index is not affine, or a rounded reduction loop cannot be padded soundly (a
    load that does not use it, or no pads giving a zero term: see the module's docstring).
    An input whose ``Layout`` wants one contiguous block per call is copied in blocks: the
    loops of its tiled dims are split by the tile."""
    extent_of = {d.name: d.extent for d in desc.dims}
    dims = {d.name: d for d in nest.dims}
    padded: dict[str, int] = {}
    for it, p in b.dims:
        if p is None or (rounds is not None and p not in rounds):
            continue
        n, e = extent_of[it], dims[p].extent
        if e % n:
            padded[p] = -(-e // n) * n
    if not padded:
        return None
    out_maps = [affine(i) for i in nest.indices]
    loads = list(dict.fromkeys(ir.loads_of(nest.value)))
    maps = {ld: [affine(i) for i in ld.indices] for ld in loads}
    if any(m is None for m in out_maps) or any(m is None for ms in maps.values() for m in ms):
        return None
    moving = {d for d in dims if any(_uses(m, d) for m in out_maps)}
    reduction = [p for p in padded if p not in moving]
    if any(not any(_uses(m, p) for m in maps[ld]) for ld in loads for p in reduction):
        return None
    negative = _zero_pads(nest, loads) if reduction else frozenset()
    if negative is None:
        return None
    bound = b.bound()
    operand = {ld: op for op in desc.inputs for name, ld in b.loads if name == op.name}
    split: dict[str, int] = {}
    copied = []
    for ld in loads:
        if not any(_uses(m, p) for m in maps[ld] for p in padded):
            continue
        op = operand.get(ld)
        need = desc.layout.get(op.name) if op is not None else None
        inner = [] if need is None or not need.contiguous else \
            [p for k, p in enumerate(_bound_dim(op, k, bound) for k in range(len(op.dims)))
             if p is not None and op.shape[k] > 1]
        if inner:
            split.update((p, extent_of[op.dims[k]]) for k, p in
                         enumerate(_bound_dim(op, k, bound) for k in range(len(op.dims)))
                         if p in inner)
            axes = _blocked_axes(maps[ld], nest.dims, inner, moving)
        else:
            axes = _axes(maps[ld], nest.dims, _unit_dim(desc, op, bound) if op else None)
        copied.append((ld, axes, ld in negative))
    if any((padded.get(p) or dims[p].extent) % n for p, n in split.items()):
        return None  # a loop copied in blocks of the tile but left unrounded
    out_axes = None
    if len(reduction) < len(padded):
        out_axes = _axes(out_maps, nest.dims, _unit_dim(desc, desc.output, bound))
    order = [d.name for d in nest.dims]
    by_order = lambda x: order.index(x[0])
    return Request(desc.name, tuple(sorted(padded.items(), key=by_order)),
                   tuple(sorted(split.items(), key=by_order)), tuple(copied), out_axes)


def _zero_pads(nest: AccNest, loads: list[Load]) -> Optional[frozenset[Load]]:
    """The loads to pad with ``-0.0`` (the rest with zero) so that the body, with every load
    reading its pad, is exactly ``0`` (integers) or ``-0.0`` (floats); None if none do.
    Tried: all zeros, then each float load alone at ``-0.0``."""
    tries = [frozenset()] + [frozenset([ld]) for ld in loads if ir.is_float(ld.dtype)]
    for negative in tries:
        if _zero_term(nest, negative):
            return negative
    return None


def _pad_const(dtype: str, negative: bool) -> Const:
    return Const(-0.0 if negative else 0.0, dtype) if ir.is_float(dtype) else Const(0, dtype)


def _zero_term(nest: AccNest, negative: frozenset[Load]) -> bool:
    """The body with each load replaced by its pad, evaluated by the reference interpreter,
    is ``0`` on an integer output and ``-0.0`` on a float one."""
    return _is_zero(nest.value, nest.out.dtype, negative)


# keyed by the body and the loads padded with -0.0, not by the body with its pads put in: a
# literal -0.0 equals 0.0 in Python, and so would two bodies that differ only in pads
@functools.lru_cache(maxsize=1024)
def _is_zero(body: Expr, dtype: str, negative: frozenset[Load]) -> bool:
    from ..interp import run

    value = ir.map_loads(body, lambda ld: _pad_const(ld.dtype, ld in negative))
    out = Buffer("x", dtype, (1,))
    got = run(ir.PrimFunc("pad_term", (out,), Store(out, (Const(0, ir.INDEX),), value)))["x"][0]
    if ir.is_float(dtype):
        return bool(got == 0 and np.signbit(got))
    return bool(got == 0)


def pad(nest: AccNest, req: Request, names: Names) -> Padding:
    """``pad-to-tile`` as ``req`` says: the temporaries (named from ``names``), their fills
    and copies, the nest over the padded extents reading them, and the output's
    writeback."""
    dims = {d.name: d for d in nest.dims}
    size = dict(req.padded)
    extent = lambda d: size.get(d, dims[d].extent)
    # a loop that is one tile needs no split: it is its own offset in the tile
    tile = {d: n for d, n in req.split if extent(d) > n}
    whole = lambda axes: tuple((d, "") if d not in tile and p else (d, p) for d, p in axes
                               if not (p == "o" and d not in tile))
    within = Names(dims)
    parts = {d: (within.fresh(f"{d}_o"), within.fresh(f"{d}_i")) for d in tile}
    new_dims: list[Dim] = []
    for d in nest.dims:
        if d.name in tile:
            new_dims += [Dim(parts[d.name][0], 0, extent(d.name) // tile[d.name]),
                         Dim(parts[d.name][1], 0, tile[d.name])]
        else:
            new_dims.append(Dim(d.name, d.start, d.start + extent(d.name)))
    # a split loop d runs as start + n * d_o + d_i in the padded nest
    moved = {d: affine_expr(Affine(tuple(sorted(((parts[d][0], n), (parts[d][1], 1)))), dims[d].start))
             for d, n in tile.items()}

    def copy_index(a: Axis) -> Expr:  # in the copy, over the loops as the nest had them
        d, _ = a
        return affine_expr(Affine(((d, 1),), -dims[d].start))

    def nest_index(a: Axis) -> Expr:  # in the padded nest
        d, part = a
        if part:
            return Var(parts[d][0 if part == "o" else 1])
        if d in tile:
            return affine_expr(Affine(((parts[d][0], tile[d]), (parts[d][1], 1))))
        return affine_expr(Affine(((d, 1),), -dims[d].start))

    def used(axes: tuple[Axis, ...]) -> list[str]:
        return list(dict.fromkeys(d for d, _ in axes))

    def shape(axes: tuple[Axis, ...]) -> tuple[int, ...]:
        return tuple(extent(d) if p == "" else extent(d) // tile[d] if p == "o" else tile[d]
                     for d, p in axes)

    copies: list[Stmt] = []
    buffers: list[Buffer] = []
    relaid: list[Buffer] = []
    loads: list[tuple[Load, Load]] = []
    for load, axes, negative in req.loads:
        axes = whole(axes)
        buf = Buffer(names.fresh(f"{load.buffer.name}_pad"), load.buffer.dtype, shape(axes))
        own = _axes([affine(i) for i in load.indices], nest.dims, None)
        if axes != own or not _plain(load):
            relaid.append(buf)
        pad_value = _pad_const(buf.dtype, negative)
        if any(p for _, p in axes):  # in blocks: the whole copy at the pad, then tile by tile
            copies.append(_loops(Store(buf, tuple(Var(v) for v in _vars(axes, parts)), pad_value),
                                 [Dim(v, 0, n) for v, n in zip(_vars(axes, parts), buf.shape)]))
            copies += _blocked_copies(buf, axes, load, dims, tile, parts)
        else:  # the pad strips, then the copy walking the source in its own order
            idx = tuple(copy_index(a) for a in axes)
            loops = [dims[d] for d, _ in own]
            copies += _strips(Store(buf, idx, pad_value), loops, extent)
            copies.append(_loops(Store(buf, idx, load), loops))
        buffers.append(buf)
        loads.append((load, Load(buf, tuple(nest_index(a) for a in axes))))
    for load in dict.fromkeys(ir.loads_of(nest.value)):  # the others, on the split loops
        if load not in dict(loads) and tile:
            loads.append((load, Load(load.buffer, tuple(_canonical(ir.substitute(i, moved))
                                                        for i in load.indices))))
    new = dict(loads)
    value = ir.map_loads(nest.value, lambda x: new.get(x, x))
    after: list[Stmt] = []
    out, indices = nest.out, tuple(_canonical(ir.substitute(i, moved)) for i in nest.indices)
    if req.out_axes is not None:
        axes = req.out_axes
        out = Buffer(names.fresh(f"{nest.out.name}_pad"), nest.out.dtype, shape(axes))
        loops = [Dim(d, 0, extent(d)) for d in used(axes)]
        zero = _pad_const(out.dtype, True)  # the identity of the sum: -0.0, or 0
        copies.append(_loops(Store(out, tuple(Var(d) for d, _ in axes), zero), loops))
        after.append(_loops(Accumulate(nest.out, nest.indices, Load(out, tuple(copy_index(a) for a in axes))),
                            [dims[d] for d in used(axes)]))
        buffers.append(out)
        if axes != _axes([affine(i) for i in nest.indices], nest.dims, None):
            relaid.append(out)
        indices = tuple(nest_index(a) for a in axes)
    return Padding(tuple(copies), tuple(buffers), AccNest(tuple(new_dims), out, indices, value),
                   tuple(loads), tuple(after), req.intrinsic, tuple(relaid), req.family)


def _plain(x: Load) -> bool:
    """Each index of ``x`` is one loop (``i``, ``k + 2``) or a constant, no loop twice: a copy
    over its loops is the buffer's own box, not a duplicating one (``X[h + rh]``: im2col)."""
    seen = []
    for i in x.indices:
        m = affine(i)
        if m is None or len(m.terms) > 1 or any(c != 1 for _, c in m.terms):
            return False
        seen += [v for v, _ in m.terms]
    return len(seen) == len(set(seen))


def _vars(axes: tuple[Axis, ...], parts: dict) -> list[str]:
    """A loop variable per axis: a split loop's tile or offset variable, else the loop's."""
    return [parts[d][0 if p == "o" else 1] if p else d for d, p in axes]


def _blocked_copies(buf: Buffer, axes: tuple[Axis, ...], load: Load, dims: dict, tile: dict,
                    parts: dict) -> list[Stmt]:
    """``load`` copied into ``buf`` laid out in tiles (``axes``), looping in ``buf``'s order
    with affine indices (a loop of ``j // 16`` and ``j % 16`` stores measured three times
    slower): for each split loop, its whole tiles and its last, partial tile, each a nest."""
    split = [d for d in dict.fromkeys(d for d, p in axes if p) if d in tile]
    pieces = []
    for d in split:
        n, e = tile[d], dims[d].extent
        pieces.append([x for x in (("whole", e // n, n), ("part", e // n, e % n)) if x[1 if x[0] == "whole" else 2]])
    out = []
    for choice in itertools.product(*pieces):
        how = dict(zip(split, choice))
        loops, idx = [], []
        for d, p in axes:
            if not p:
                loops.append(dims[d])
                idx.append(affine_expr(Affine(((d, 1),), -dims[d].start)))
                continue
            kind, count, size = how[d]
            var = parts[d][0 if p == "o" else 1]
            if p == "o" and kind == "part":
                idx.append(Const(count, ir.INDEX))  # the partial tile is the last one
                continue
            loops.append(Dim(var, 0, count if p == "o" else size))
            idx.append(Var(var))
        at = {}
        for d in split:
            kind, count, _ = how[d]
            o, i = parts[d]
            terms = ((o, tile[d]), (i, 1)) if kind == "whole" else ((i, 1),)
            const = dims[d].start + (0 if kind == "whole" else tile[d] * count)
            at[d] = affine_expr(Affine(tuple(sorted(terms)), const))
        value = Load(load.buffer, tuple(_canonical(ir.substitute(i, at)) for i in load.indices))
        out.append(_loops(Store(buf, tuple(idx), value), loops))
    return out


def _canonical(e: Expr) -> Expr:
    m = affine(e)
    return e if m is None else affine_expr(m)


def price(p: Padding) -> float:
    """What the fills, copies and writeback of ``p`` cost (``cost.padding``)."""
    return cost.padding(p.copies + p.after, p.buffers, p.relaid)


def pads_remainders(paddings: Sequence[Padding]) -> bool:
    """Whether the remainder nests a nest's tiles leave are weighed for padding too, given
    ``paddings``, the ways of padding that nest whole: only where there is one and each is
    priced out of cache (``cost.far``: its temporaries outgrow twice L2, copies of whole
    operands). There a strip padded alone pays: 1500^3 on one Zen 4 thread, whose last 28
    columns ran on the 6 x 16 tile and, for 12 of them, on a transposed copy of B through
    the 4 x 8 matrix-vector row (31 GFLOP/s), took 62.9 against 64.7 ms with those columns
    padded to one 8 x 32 tile; 999^3 0.973 of the time before, 1900^3 0.983, 750^3 0.978,
    700^3 0.986 (in turns, the same arrays, 15 rounds, medians); 600^3, 850^3 and 1300^3,
    whose strips of 24, 26 and 20 columns are rounded to 32, within 1% either way; u8 x i8
    1000^3, padded whole before (C's 4 MB copy), 0.906 on the VNNI tiles and 0.979 on the
    AVX2 ones, 777 x 555 x 999 within 2%. Where
    padding whole stays in cache, that is the one weighed: padding remainders there as well
    measured slower where the model preferred them, since what runs after planning joins
    the pieces it prices apart (doitgen: the whole nest's writeback fused into its copy, 7%
    faster than a strip padded alone; 12 x 2048 x 2048: the 4 rows the 8-row tile leaves run
    in its blocks of B, 5% faster than those rows padded to 8 in a pass of their own over
    B), and, on Zen 4, where the 6 x 16 tile runs nearly as fast a multiply-add as the
    8 x 32 one (91 against 102 GFLOP/s), 400^3's last 16 columns ran 7% slower padded to 32;
    small products' strips padded alone also measured faster in places (30^3, PolyBench
    gemm: 0.82-0.89 of the time), which this does not take."""
    return bool(paddings) and all(cost.far(p.buffers) for p in paddings)


def _loops(s: Stmt, dims: list[Dim]) -> Stmt:
    for d in reversed(dims):
        s = For(d.name, d.start, d.stop, s)
    return s


def _strips(fill: Stmt, loops: list[Dim], extent) -> list[Stmt]:
    """``fill`` (a store of the pad, indexed by ``loops`` as the nest had them) over every
    point of the padded box outside the real one: one strip per rounded loop, the loops
    before it over their real ranges and those after it over their padded ones."""
    out = []
    for t, d in enumerate(loops):
        if extent(d.name) == d.extent:
            continue
        ranges = loops[:t] + [Dim(d.name, d.stop, d.start + extent(d.name))] + \
            [Dim(x.name, x.start, x.start + extent(x.name)) for x in loops[t + 1:]]
        out.append(_loops(fill, ranges))
    return out
