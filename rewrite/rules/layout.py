"""Packing stages: an input operand copied into the layout an intrinsic needs.

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
from typing import Optional

from .. import ir
from ..analysis import Affine, affine
from ..ir import Buffer, Expr, For, Load, Stmt, Store
from ..match import BodyMatch, Binding, affine_expr, slow_dims, unused_name
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

    def match(self, m: BodyMatch) -> BodyMatch:
        """``m`` with its operand loads read from the packed copies."""
        new = dict(self.loads)
        return BodyMatch(m.nest, m.intrinsic, tuple(new.get(x, x) for x in m.loads), m.scale)


def requests(nest: AccNest, desc, b: Binding) -> Optional[tuple[Request, ...]]:
    """What ``pack-operand`` would copy for binding ``b``: each input operand that misses a
    unit stride, with the dims of its copy. None when packing cannot make the calls
    unit-stride: every operand already is, the output misses (it is never packed), one load
    stands for two operands that need different copies, or the load reads the output."""
    steps, loads = dict(b.steps), dict(b.loads)
    bound, dims = b.bound(), {d.name: d for d in nest.dims}
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


def pack(nest: AccNest, reqs: tuple[Request, ...], taken: set[str]) -> Packing:
    """``pack-operand`` for each request: a fresh temporary (its name added to ``taken``),
    the copy nest filling it, and ``nest`` reading it in place of the original load."""
    copies, buffers, loads = [], [], []
    for load, order in reqs:
        buf = Buffer(unused_name(f"{load.buffer.name}_pack", taken), load.buffer.dtype,
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


def _replace_loads(e: Expr, new: dict[Load, Load]) -> Expr:
    if isinstance(e, Load) and e in new:
        return new[e]
    kids = ir.children(e)
    return ir.with_children(e, tuple(_replace_loads(c, new) for c in kids)) if kids else e
