"""Loop rules: which accumulate nests there are, before matching.

Nests are order-free sets of dimensions (``nests.py``), so *interchange* needs no rule: every
loop order of a nest is the same nest, and an intrinsic may run along any of its dims.
Descriptor-directed *splitting* by an intrinsic's extents, with remainder nests where they do
not divide, happens when a binding is built (``match.dims_after_tiling``, ``match.remainders``).
The rules here change the nests themselves; each is exact or takes only the licence of a
reordered reduction:

split-divmod
    ``for c in range(N * G)`` whose indices use ``c // G`` or ``c % G`` becomes
    ``for c_o, c_i in grid(N, G)`` with ``c = G * c_o + c_i`` (when the loop ranges alone
    already decide every quotient, no split is needed). It enumerates the same
    iterations (a bijection), and with ``0 <= c_i < G`` floor division and modulo simplify
    exactly: ``(G * c_o + c_i) // G = c_o``, ``(G * c_o + c_i) % G = c_i``. The indices become
    affine, so the matcher sees them::

        for co, rc in grid(64, 16):                    for co_o, co_i, rc in grid(4, 16, 16):
            Y[co] += P[co // 16 * 16 + rc] * W[rc, co]  ->  Y[16*co_o + co_i] += P[16*co_o + rc] * W[rc, 16*co_o + co_i]

split-for-intrinsic
    An intrinsic may read one program loop as two of its dims: ``tdpbusd`` reads k as
    ``4 * k4 + kk`` (groups of four bytes), declared ``a[i, k4, kk]``, ``b[k4, j, kk]``. Two
    dims of a descriptor that the same operands use, the outer before the inner in each, can
    run along one program loop split by the inner extent (``split_for``, weighed by the
    extractor beside the nest as it is)::

        for i, j, k in grid(64, 64, 256):          for i, j, k_o, k_i in grid(64, 64, 64, 4):
            C[i, j] += A[i, k] * B[k, j]      ->       C[i, j] += A[i, 4*k_o + k_i] * B[4*k_o + k_i, j]

    The same bijection as split-divmod (``k = 4 * k_o + k_i``, ``0 <= k_i < 4``), so the nest
    enumerates the same iterations.

merge-reductions
    Two adjacent nests that add the same body into the same output, over ranges of one
    dimension that join up, are one nest over the joined range. Both only add into ``out``
    and neither reads it (an ``AccNest`` never reads its output), so the merged nest performs
    the same additions in another order -- reassociation, the licence every reordered
    reduction takes. A second loop written on shifted indices (``A[i, k + 32]`` for
    ``k in range(32)``) is brought onto the first one's variable first::

        for i, j, k in grid(64, 64, 32): C[i, j] += A[i, k] * B[k, j]
        for i, j, k in grid(64, 64, 32): C[i, j] += A[i, k + 32] * B[k + 32, j]
        ->  for i, j, k in grid(64, 64, 64): C[i, j] += A[i, k] * B[k, j]
"""

from __future__ import annotations

from dataclasses import replace
from typing import Optional, Sequence

from .. import ir
from ..affine import Affine, affine
from ..ir import Binary, Const, Expr, Load, Var
from ..match import affine_expr
from ..names import Names
from ..nests import AccNest, Dim


def apply(parts: Sequence, names: Names) -> list:
    """``parts`` (top-level items) with the loop rules applied to its accumulate nests."""
    out = [split_divmod(p, names) if isinstance(p, AccNest) else p for p in parts]
    return merge_reductions(out)


# ---------------------------------------------------------------------------
# split-divmod


def _nest_exprs(nest: AccNest) -> list[Expr]:
    return list(nest.indices) + [nest.value]


def _divisors(nest: AccNest) -> list[tuple[str, int]]:
    """(loop variable, G) for each ``x // G`` or ``x % G`` whose numerator moves with it."""
    names = {d.name for d in nest.dims}
    found: list[tuple[str, int]] = []
    for top in _nest_exprs(nest):
        for e in ir.walk_expr(top):
            if isinstance(e, Binary) and e.op in ("//", "%") and isinstance(e.b, Const) \
                    and ir.is_int(e.b.dtype) and e.b.value > 1:
                for v in ir.walk_expr(e.a):
                    if isinstance(v, Var) and v.name in names and (v.name, e.b.value) not in found:
                        found.append((v.name, int(e.b.value)))
    return found


def simplify_divmod(e: Expr, ranges: dict[str, tuple[int, int]]) -> Expr:
    """``e`` with ``x // G`` and ``x % G`` (``x`` affine, ``G > 0``) written affinely where the
    loop ranges (inclusive bounds) decide the quotient: ``x = G * q + r`` with ``r``'s range
    inside one multiple of ``G``."""
    kids = ir.children(e)
    if kids:
        e = ir.with_children(e, tuple(simplify_divmod(c, ranges) for c in kids))
    if not (isinstance(e, Binary) and e.op in ("//", "%") and isinstance(e.b, Const)
            and ir.is_int(e.b.dtype) and e.b.value > 0):
        return e
    x = affine(e.a)
    if x is None:
        return e
    g = int(e.b.value)
    q = Affine(tuple((v, c // g) for v, c in x.terms if c % g == 0))
    r = Affine(tuple((v, c) for v, c in x.terms if c % g), x.const)
    span = r.bounds(ranges.get)
    if span is None or span[0] // g != span[1] // g:
        return e
    m = span[0] // g  # floor, so r - G * m lies in [0, G)
    if e.op == "//":
        return affine_expr(q.plus(Affine((), m)))
    return affine_expr(r.plus(Affine((), -g * m)))


def _all_affine(nest: AccNest) -> bool:
    idx = list(nest.indices) + [i for ld in ir.loads_of(nest.value) for i in ld.indices]
    return all(affine(i) is not None for i in idx)


def split_divmod(nest: AccNest, names: Names) -> AccNest:
    """``nest`` with loops split so that ``//`` and ``%`` by constants leave its indices, when
    that makes every index affine; otherwise ``nest`` unchanged. The split loops are named
    fresh within the nest, the last pair reserved in ``names``."""
    if _all_affine(nest):
        return nest
    ranges = {d.name: (d.start, d.stop - 1) for d in nest.dims}
    simplified = _rewritten(nest, nest.dims, lambda x: _canonical(simplify_divmod(x, ranges)))
    if _all_affine(simplified):
        return simplified  # the ranges alone decide every quotient (``x // 1``, ``(i + 1) // 8``)
    current = nest
    for var, g in _divisors(nest):
        dim = next((d for d in current.dims if d.name == var), None)
        if dim is None or dim.start % g or dim.extent % g:
            continue
        within = names.copy(d.name for d in current.dims)
        outer, inner = within.fresh(f"{var}_o"), within.fresh(f"{var}_i")
        value = {var: Binary("+", Binary("*", Const(g, ir.INDEX), Var(outer)), Var(inner))}
        dims: list[Dim] = []
        for d in current.dims:
            dims += [Dim(outer, d.start // g, d.stop // g), Dim(inner, 0, g)] if d is dim else [d]
        ranges = {d.name: (d.start, d.stop - 1) for d in dims}

        def rewrite(x: Expr) -> Expr:
            return _canonical(simplify_divmod(ir.substitute(x, value), ranges))

        current = _rewritten(current, tuple(dims), rewrite)
        if _all_affine(current):
            names.reserve(outer)
            names.reserve(inner)
            return current
    return nest


def grouped_dims(desc) -> tuple[tuple[str, str], ...]:
    """Pairs (outer, inner) of ``desc``'s dims, both longer than 1, that the same operands
    use, the outer before the inner in each: one program loop split in two can run them."""
    users = {d.name: frozenset(o.name for o in desc.operands if d.name in o.dims)
             for d in desc.dims if d.extent > 1}
    out = []
    for outer in users:
        for inner in users:
            if outer != inner and users[outer] == users[inner] and users[outer] and all(
                    o.dims.index(outer) < o.dims.index(inner)
                    for o in desc.operands if o.name in users[outer]):
                out.append((outer, inner))
    return tuple(out)


def split_for(nest: AccNest, desc, loads: dict[str, Load], names: Names) -> list:
    """``split-for-intrinsic``: for each pair of ``grouped_dims(desc)``, each loop of ``nest``
    that moves exactly the accesses of the operands using the pair (``loads``: input operand
    -> program load) and divides by the inner extent, split by it. Returns
    ``(nest, rewrite)`` pairs, ``rewrite`` mapping a load of ``nest`` to its load in the
    split nest."""
    out = []
    extent = {d.name: d.extent for d in desc.dims}
    for outer, inner in grouped_dims(desc):
        g = extent[inner]
        users = {o.name for o in desc.operands if inner in o.dims}
        for dim in nest.dims:
            if dim.extent % g or dim.extent // g < extent[outer]:
                continue
            moves = {o.name for o in desc.operands
                     if any(dim.name in ir.var_names(i) for i in
                            (nest.indices if o.role == "output" else loads[o.name].indices))}
            if moves != users:
                continue
            within = names.copy(d.name for d in nest.dims)
            k_o, k_i = within.fresh(f"{dim.name}_o"), within.fresh(f"{dim.name}_i")
            value = {dim.name: Binary("+", Binary("+", Const(dim.start, ir.INDEX),
                                                  Binary("*", Const(g, ir.INDEX), Var(k_o))),
                                      Var(k_i))}

            def rewrite(x: Expr, value=value) -> Expr:
                return _canonical(ir.substitute(x, value))

            dims = []
            for d in nest.dims:
                dims += [Dim(k_o, 0, d.extent // g), Dim(k_i, 0, g)] if d is dim else [d]
            split = _rewritten(nest, tuple(dims), rewrite)
            out.append((split, lambda x, rewrite=rewrite: Load(x.buffer, tuple(rewrite(i) for i in x.indices))))
    return out


def _rewritten(nest: AccNest, dims: tuple[Dim, ...], fn) -> AccNest:
    """``nest`` over ``dims`` with ``fn`` applied to every index."""
    return AccNest(tuple(dims), nest.out, tuple(fn(i) for i in nest.indices),
                   _map_indices(nest.value, fn))


def _canonical(index: Expr) -> Expr:
    m = affine(index)
    return index if m is None else affine_expr(m)


def _map_indices(e: Expr, fn) -> Expr:
    """``e`` with ``fn`` applied to every index of every load."""
    return ir.map_loads(e, lambda x: Load(x.buffer, tuple(fn(i) for i in x.indices)))


# ---------------------------------------------------------------------------
# merge-reductions


def _shifted(nest: AccNest, dim: Dim, onto: str, shift: int) -> AccNest:
    """``nest`` over variable ``onto`` with ``dim = onto - shift``, indices canonical."""
    value = {dim.name: Binary("-", Var(onto), Const(shift, ir.INDEX))} if shift else \
        {dim.name: Var(onto)}

    def rewrite(x: Expr) -> Expr:
        return _canonical(ir.substitute(x, value))

    dims = tuple(Dim(onto, dim.start + shift, dim.stop + shift) if d == dim else d for d in nest.dims)
    return AccNest(dims, nest.out, tuple(rewrite(i) for i in nest.indices),
                   _map_indices(nest.value, rewrite))


def _without_indices(e: Expr) -> Expr:
    return ir.map_loads(e, lambda x: Load(x.buffer, ()))


def merge_pair(a: AccNest, b: AccNest) -> Optional[AccNest]:
    """One nest doing what ``a`` then ``b`` do, when they differ only in the range of one dim."""
    if a.out != b.out or len(a.dims) != len(b.dims):
        return None
    # shifting a dim changes indices only: values that differ elsewhere never merge (checked
    # first, as canonicalising every index for every pair of dims is what costs)
    if _without_indices(a.value) != _without_indices(b.value):
        return None
    for da in a.dims:
        others_a = {d for d in a.dims if d != da}
        for db in b.dims:
            if {d for d in b.dims if d != db} != others_a:
                continue
            same = _shifted(a, da, da.name, 0)
            # place b's range right after a's, or right before it
            for shift in (da.stop - db.start, da.start - db.stop):
                moved = _shifted(b, db, da.name, shift)
                if moved.indices == same.indices and moved.value == same.value:
                    lo = min(da.start, db.start + shift)
                    hi = max(da.stop, db.stop + shift)
                    return replace(same, dims=tuple(Dim(da.name, lo, hi) if d == da else d
                                                    for d in a.dims))
    return None


def merge_reductions(parts: Sequence) -> list:
    """Adjacent accumulate nests merged wherever ``merge_pair`` allows, repeatedly."""
    out: list = []
    for p in parts:
        if out and isinstance(p, AccNest) and isinstance(out[-1], AccNest):
            merged = merge_pair(out[-1], p)
            if merged is not None:
                out[-1] = merged
                continue
        out.append(p)
    return out
