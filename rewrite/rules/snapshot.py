"""snapshot-reads: an accumulation that reads other elements of the buffer it accumulates
into reads them from a copy taken before its loops, when each of those elements is read
before the nest writes it.

    for i, j in grid(200, 240):                     B_in[...] = B[...]          # a copy
        for k in range(200):                 ->     for i, j in grid(200, 240):
            if k >= i + 1:                              for k in range(200):
                B[i, j] += A[k, i] * B[k, j]                if k >= i + 1:
                                                                B[i, j] += A[k, i] * B_in[k, j]

(PolyBench's ``trmm``: row ``i`` is updated from rows ``k > i``, which are updated only later.)
The nest as written is no accumulate nest, since its iterations must run in order; reading
the copy, they may run in any order, and the split-domain and matmul rules apply.

Sound when no read of the buffer in the nest's value can see a value the nest wrote: the
dependence analysis (guards' affine facts included) finds no flow dependence from the nest's
accumulation to those reads. Each such read then sees the value the buffer held before the
nest, which the copy holds. A ``normalize`` family: the copy costs one pass over the buffer,
against a nest that is a product; it is applied wherever legal.

``snapshot(s, names, stores=True)`` takes a store the same way (``cov[j, i] = cov[i, j]``
over ``j >= i``, a triangle mirrored, whose diagonal reads what it writes), by the same
argument: no read sees a value the nest wrote. The family applies it to accumulations only;
``grad`` uses it on stores too, so that each of those reads is one of the buffer's earlier
state.
"""

from __future__ import annotations

from typing import Optional

from .. import analysis, ir, nests
from ..ir import Accumulate, Buffer, For, If, Load, PrimFunc, Stmt, Store, Var
from ..names import Names


def apply(items: list, names: Names) -> list:
    out: list = []
    for p in items:
        got = snapshot(p, names) if isinstance(p, For) else None
        out += got if got is not None else [p]
    return out


def _bottom(s: Stmt, stores: bool = False) -> Optional[Accumulate | Store]:
    """The accumulation (or store, ``stores``) of a chain of loops and ``if``s without
    ``else``, else None."""
    while isinstance(s, (For, If)):
        if isinstance(s, If) and s.orelse is not None:
            return None
        s = s.body if isinstance(s, For) else s.then
    return s if isinstance(s, (Accumulate, Store) if stores else Accumulate) else None


def _rebuilt(s: Stmt, acc: Accumulate | Store) -> Stmt:
    if isinstance(s, For):
        return For(s.var, s.start, s.stop, _rebuilt(s.body, acc))
    if isinstance(s, If):
        return If(s.cond, _rebuilt(s.then, acc))
    return acc


def snapshot(s: Stmt, names: Names, stores: bool = False) -> Optional[list]:
    """``[copy, nest]`` for ``s`` reading a copy of its output buffer, or None: ``s`` is no
    such chain, reads no other element of its output, or one of those reads can see a value
    ``s`` wrote. ``stores``: a chain ending in a store is taken too."""
    acc = _bottom(s, stores)
    if acc is None:
        return None
    out = acc.buffer
    if not any(ld.buffer.name == out.name for ld in ir.loads_of(acc.value)):
        return None
    buffers = {b.name: b for b in ir.buffers_of(s)}
    func = PrimFunc("nest", tuple(buffers[n] for n in sorted(buffers)), s)
    for d in analysis.analyze(func).dependences:
        if d.kind == "flow" and d.source.buffer.name == out.name and d.sink.kind == "read":
            return None
    copy = Buffer(names.fresh(f"{out.name}_in"), out.dtype, out.shape)
    idx = tuple(Var(names.fresh(f"x{k}")) for k in range(out.ndim))
    fill: Stmt = Store(copy, idx, Load(out, idx))
    for v, n in reversed(list(zip(idx, out.shape))):
        fill = For(v.name, 0, n, fill)
    value = ir.map_loads(acc.value, lambda x: Load(copy, x.indices) if x.buffer.name == out.name else x)
    nest = _rebuilt(s, type(acc)(out, acc.indices, value))
    return [fill, nests.as_nest(nest) or nest]

