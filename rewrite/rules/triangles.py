"""split-domain: an accumulation over a triangle (or any domain cut by affine guards) is one
accumulation per box of a decomposition, with a guarded remainder along the cut.

    for i, k, j in grid(240, 200, 240):         for i, k, j in grid(112, 200, 128):   # a box
        if j < i + 1:                       ->       C[i + 128, j] += ... (as dims 128..239, 0..127)
            C[i, j] += 1.5 * A[i, k] * A[j, k]    ... boxes of halving sizes toward the diagonal
                                                for i, k, j in grid(16, 200, 16):     # remainder
                                                    if j < i + 1:
                                                        C[i, j] += ...

(syrk, syr2k, covariance and correlation as PolyBench writes them: ``for j in range(i + 1)``
is a box under the guard ``j < i + 1``, ``script.py``). Each box lies wholly inside the guarded
domain, so it is an ordinary accumulate nest the matcher covers like any matmul; only the
small boxes the cut crosses keep the guard.

The boxes come from halving: a box is kept whole when every guard holds on all of it (its
minimum over the box, ``Affine.bounds``, is >= 0), dropped when one holds nowhere (its
maximum is < 0), and otherwise cut in two along its longest guarded dimension, at a multiple
of 16 where the extent allows (so boxes fit intrinsic tiles), until the box is small
(``leaf``); such a box keeps the guards that do not hold on all of it.

Sound when the accumulation does not read the accumulated buffer (what makes it an
accumulate nest at all, ``nests.as_nest``): the boxes and remainders partition the guarded
domain, since each halving splits a box in two disjoint halves and nothing is dropped where
a guard can hold, so every element gets the same terms added, in another order (exact on
integers, a reassociation on floats, which rewrites may do). It is a ``sites``
family: each triangle is split where the cost model finds its boxes cheaper (``choose.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Optional

from .. import ir, nests, polytope
from ..affine import Affine
from ..ir import Accumulate, Compare, For, If, Stmt
from ..names import Names
from ..nests import AccNest, Dim

ALIGN = 16  # cut points are multiples of this where the extent allows: intrinsic tiles fit


@dataclass(frozen=True)
class Guarded:
    """``for dims: if facts: out[indices] += value``: a perfect nest under affine guards."""

    dims: tuple[Dim, ...]
    facts: tuple[Affine, ...]
    acc: Accumulate


def guarded(s: Stmt) -> Optional[Guarded]:
    """``s`` as a perfect nest of loops with one ``if`` (no ``else``) whose conditions all
    compare affine forms of the loops' variables, around an accumulation that does not read
    what it accumulates; None otherwise."""
    dims: list[Dim] = []
    cond = None
    while True:
        if isinstance(s, For):
            dims.append(Dim(s.var, s.start, s.stop))
            s = s.body
        elif isinstance(s, If) and s.orelse is None and cond is None:
            cond, s = s.cond, s.then
        else:
            break
    if cond is None or not dims or not isinstance(s, Accumulate):
        return None
    if any(load.buffer.name == s.buffer.name for load in ir.loads_of(s.value)):
        return None
    facts: list[Affine] = []
    names = {d.name for d in dims}
    for c in polytope.conjuncts(cond):
        found = polytope.facts(c) if isinstance(c, Compare) and c.op != "!=" else []
        if not found or any(not set(f.vars) <= names for f in found):
            return None
        facts += found
    return Guarded(tuple(dims), tuple(facts), s)


def leaf_extent(g: Guarded) -> int:
    """Boxes are cut no smaller than this along a guarded dimension: the remainder along a
    triangle's diagonal is then about 1/16 of it, in at most a few dozen boxes."""
    guarded_dims = {v for f in g.facts for v in f.vars}
    longest = max(d.extent for d in g.dims if d.name in guarded_dims)
    return min(64, max(8, 8 * math.ceil(longest / 32 / 8)))


def boxes(g: Guarded, leaf: Optional[int] = None) -> list[tuple[dict, list[Affine]]]:
    """The halving of ``g``'s domain: ``(box, guards)`` pairs, ``box`` a dim's inclusive range
    per dim name, ``guards`` the facts that do not hold on all of it (none for a box inside
    the domain)."""
    leaf = leaf_extent(g) if leaf is None else leaf
    out: list = []

    def visit(box: dict[str, tuple[int, int]]) -> None:
        pending = []
        for f in g.facts:
            lo, hi = f.bounds(lambda v: box[v])
            if hi < 0:
                return  # the guard holds nowhere in this box
            if lo < 0:
                pending.append(f)
        cut = {v for f in pending for v in f.vars}
        longest = max(cut, key=lambda v: (box[v][1] - box[v][0], v), default=None)
        if longest is None or box[longest][1] - box[longest][0] + 1 <= leaf:
            out.append((box, pending))
            return
        lo, hi = box[longest]
        extent = hi - lo + 1
        half = extent // 2
        if extent >= 2 * ALIGN:
            half = max(ALIGN, half // ALIGN * ALIGN)
        visit({**box, longest: (lo, lo + half - 1)})
        visit({**box, longest: (lo + half, hi)})

    visit({d.name: (d.start, d.stop - 1) for d in g.dims})
    return out


def split(g: Guarded, names: Names, leaf: Optional[int] = None, masked: bool = False) -> list:
    """The items that compute ``g``: an ``AccNest`` per run of equal boxes inside the domain,
    and guarded remainders (statements) where the cut crosses a box; with ``masked``, where
    the guards read only dims that index the output, each remainder is instead its whole box
    summed into a temporary and added to the output under the guards (``_masked``).

    Boxes of equal extents whose corners step evenly (the halving puts them along the
    diagonal) are one nest with a loop ``t`` over them, so a level of the halving is planned
    and compiled once: ``for t, i, k, j in grid(7, 16, 200, 16): C[32 * t + i + 32, ...]``."""
    groups: dict = {}
    for box, pending in boxes(g, leaf):
        key = (tuple(box[d.name][1] - box[d.name][0] + 1 for d in g.dims), tuple(pending))
        groups.setdefault(key, []).append(tuple(box[d.name][0] for d in g.dims))
    out: list = []
    outputs = _output_vars(g)
    for (extents, pending), corners in groups.items():
        for run in _runs(sorted(corners)):
            if masked and pending and all(set(f.vars) <= outputs for f in pending):
                out += _masked(g, extents, list(pending), run, names)
            else:
                out.append(_batched(g, extents, list(pending), run, names))
    return out


def maskable(g: Guarded) -> bool:
    """Whether ``g``'s guards read only dims that index its output (``_masked`` applies)."""
    outputs = _output_vars(g)
    return all(set(f.vars) <= outputs for f in g.facts)


def _output_vars(g: Guarded) -> set[str]:
    """The loop variables in ``g``'s output indices."""
    return {x.name for i in g.acc.indices for x in ir.walk_expr(i) if isinstance(x, ir.Var)}


def _masked(g: Guarded, extents: tuple[int, ...], pending: list[Affine],
            corners: list[tuple[int, ...]], names: Names) -> list:
    """mask-remainder: the boxes at ``corners`` summed whole into a temporary ``T``, which is
    then added to the output where the guards hold::

        T[t, i, j] = 0.0
        T[t, i, j] += A[i + 8 * t, k] * A[j + 8 * t, k]     (over t, i, k, j: a batch of products)
        if i >= j: C[i + 8 * t, j + 8 * t] += T[t, i, j]

    Sound when the guards read only dims that index the output (not the reduction): each
    element of ``T`` is the sum the guarded nest adds to one output element, or, where the
    guard fails, a sum no output element receives. The product does up to twice the
    arithmetic of the remainder it replaces, on intrinsics instead of scalar code."""
    t = names.fresh("t") if len(corners) > 1 else None  # one batch loop for all three
    whole = _batched(g, extents, [], corners, names, t)
    nest = whole if isinstance(whole, AccNest) else nests.as_nest(whole)
    outputs = [d for d in nest.dims
               if any(x.name == d.name for i in nest.indices for x in ir.walk_expr(i) if isinstance(x, ir.Var))]
    temp = ir.Buffer(names.fresh("T"), nest.out.dtype, tuple(d.extent for d in outputs))
    idx = tuple(ir.Var(d.name) for d in outputs)
    zero: Stmt = ir.Store(temp, idx, ir.Const(0.0 if ir.is_float(temp.dtype) else 0, temp.dtype))
    guarded_add = _batched(Guarded(g.dims, g.facts, Accumulate(g.acc.buffer, g.acc.indices, ir.Const(
        0.0 if ir.is_float(temp.dtype) else 0, temp.dtype))), extents, pending, corners, names, t)
    # the guarded add's loops are the box's; its value is the temporary
    add = _with_value(guarded_add, nest, temp, idx)
    for d in reversed(outputs):
        zero = For(d.name, 0, d.extent, zero)
    return [zero, replace(nest, out=temp, indices=idx), add]


def _with_value(s: Stmt, nest: AccNest, temp, idx) -> Stmt:
    """The guarded nest ``s`` (over the box's dims) reduced to the output dims of ``nest``,
    adding ``temp[idx]``."""
    keep = {x.name for x in idx}
    if isinstance(s, For):
        inner = _with_value(s.body, nest, temp, idx)
        return For(s.var, s.start, s.stop, inner) if s.var in keep else inner
    if isinstance(s, If):
        return If(s.cond, _with_value(s.then, nest, temp, idx))
    return Accumulate(s.buffer, s.indices, ir.Load(temp, idx))


def _runs(corners: list[tuple[int, ...]]) -> list[list[tuple[int, ...]]]:
    """``corners`` cut into runs of even steps, greedily in order."""
    runs: list[list[tuple[int, ...]]] = []
    for c in corners:
        run = runs[-1] if runs else None
        if run is not None and (len(run) == 1 or _step(run[-2], run[-1]) == _step(run[-1], c)):
            run.append(c)
        else:
            runs.append([c])
    return runs


def _step(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(y - x for x, y in zip(a, b))


def _batched(g: Guarded, extents: tuple[int, ...], pending: list[Affine],
             corners: list[tuple[int, ...]], names: Names, t: Optional[str] = None):
    """One nest for the boxes of ``extents`` at ``corners`` (evenly stepped): each dim ``v``
    runs from 0, read as ``v + corner + step * t`` with ``t`` over the boxes (no ``t`` for one
    box)."""
    first = corners[0]
    step = _step(corners[0], corners[1]) if len(corners) > 1 else (0,) * len(first)
    if len(corners) > 1 and t is None:
        t = names.fresh("t")
    if len(corners) == 1:
        t = None
    at: dict[str, Affine] = {}
    for d, c, st in zip(g.dims, first, step):
        terms = [(d.name, 1)] + ([(t, st)] if t is not None and st else [])
        at[d.name] = Affine(tuple(sorted(terms)), c)
    values = {v: a.to_expr() for v, a in at.items()}
    acc = Accumulate(g.acc.buffer, tuple(ir.substitute(i, values) for i in g.acc.indices),
                     ir.substitute(g.acc.value, values))
    s: Stmt = acc
    if pending:
        cond = None
        for f in pending:
            shifted = Affine((), f.const)
            for v, c in f.terms:
                shifted = shifted.plus(at[v].scale(c))
            c = _condition(shifted)
            cond = c if cond is None else ir.Logical("and", cond, c)
        s = If(cond, s)
    order = list(zip(g.dims, extents))
    if pending:
        order = _remainder_order(g, order, pending)
    for d, e in reversed(order):
        s = For(d.name, 0, e, s)
    if t is not None:
        s = For(t, 0, len(corners), s)
    return nests.as_nest(s) or s


def _remainder_order(g: Guarded, order: list, pending: list[Affine]) -> list:
    """A guarded remainder's loops (it is scalar code, whose loop order the lowering keeps):
    the guarded dims outermost, so the guard bounds the loops inside it, and the dim of the
    output's last index innermost, where memory moves by one element. Any order computes
    the same sums: the nest does not read what it accumulates."""
    cut = {v for f in pending for v in f.vars}
    last = len(g.acc.indices) - 1

    def place(item) -> tuple:
        d = item[0]
        if d.name in cut:
            return (0, 0)
        where = [k for k, i in enumerate(g.acc.indices)
                 for x in ir.walk_expr(i) if isinstance(x, ir.Var) and x.name == d.name]
        return (1, max(where, default=-1) - last)

    return sorted(order, key=place)


def _condition(f: Affine) -> Compare:
    """``f >= 0`` written with the positive terms on the left: ``i - j >= 0`` is ``i >= j``."""
    pos = Affine(tuple((v, c) for v, c in f.terms if c > 0), max(f.const, 0))
    neg = Affine(tuple((v, -c) for v, c in f.terms if c < 0), max(-f.const, 0))
    return Compare(">=", pos.to_expr(), neg.to_expr())


def rewrites(item, search) -> list:
    """A guarded accumulation split into boxes, its remainders guarded, and again with its
    remainders masked where they can be (the ``sites`` hook, ``choose.py``: each triangle is
    split or not on its own, its boxes rewritten again by the other ``sites`` families,
    their sums split, ...)."""
    g = guarded(item) if isinstance(item, For) else None
    if g is None:
        return []
    return [(split(g, search.names, masked=masked), []) for masked in (False, True)
            if not masked or maskable(g)]
