"""hoist-operand: an operand of an accumulation that is computed, not read, copied out of the
nest into a temporary over the loops it uses, which the nest reads instead.

A product whose operand is converted or computed as it is read matches no intrinsic: the
tiles multiply what lies in memory. Mixed precision writes such bodies all the time (f16
weights times f32 activations)::

    for i, j, k in grid(M, N, K):                  for k, j in grid(K, N):
        C[i, j] += A[i, k] * f32(B[k, j])              ho_P_0[k, j] = f32(B[k, j])
                                              ->   for i, j, k in grid(M, N, K):
                                                       C[i, j] += A[i, k] * ho_P_0[k, j]

The copy converts each element of ``B`` once where the nest converted it ``M`` times, and
the nest is an f32 product again; where the extractor then copies ``ho_P_0`` into panels,
``tidy``'s produce-into-copy converts straight into the panels and the temporary goes. A
``sites`` family (``choose.py``): the cost model weighs the nest as written against each
rewrite, so an operand an intrinsic converts itself (``i32(A[i, k]) * i32(B[k, j])`` on the
u8 x i8 dot) keeps its form where that is cheaper.

The operands are the factors of the body's product read through ``*`` and the negations of
products (each a maximal sub-expression that is neither; ``-f32(B[k, j])`` is one), and the
products of them as written: weights dequantised per column, ``A[i, k] * (f32(W[k, j]) *
s[j])``, copy ``f32(W[k, j]) * s[j]`` whole. Each is replaced in place: the tree of
multiplications is kept as written, one node replaced by a load of its copy. A node is
hoisted when one of its factors is computed (reads memory and is no plain load or constant:
a load is the packing stages' business, a scalar read at run time ``scalar-factor``'s) and
it uses fewer of the nest's loop variables than the nest has.

A factor that is a function of one element of one buffer (a cast, ``exp``, constants) read
through a sliding window, ``f32(X[h + r, ci])``, is copied over that buffer's elements
instead, the box its indices cover, where that holds fewer elements than the loops it uses
(an im2col of the converted input, three times its size for three taps): the nest reads the
copy at the original indices, shifted to the box.

regroup-factors, of the same family: a product of three or four factors that vary with the
loops, a scale per row or per reduction step between two operands (``U[i, k] * S[k] *
Vt[k, j]``, a norm's gain ``X[t, k] * r[t] * g[k] * W[k, j]``, an LDL^T update ``L[i, k] *
D[k] * L[j, k]``), is made a product of two operands: its varying factors split in two
groups, each group of several factors (or of one computed factor) copied out over the loops
it uses, where those are fewer than the nest's. Constants and scalars read at run time stay
in the nest (``scalar-factor``'s business). Where each group copied is a node of the product
as written (``(U[i, k] * S[k]) * Vt[k, j]``), it is replaced in place, as above: exact.
Otherwise (``U[i, k] * (S[k] * Vt[k, j])`` copied as ``U * S``) the product is
reassociated, which real numbers allow and floats allow up to rounding, except for the
NaN/Inf pattern: an intermediate that underflows to 0 before a product with an infinity
gives NaN in one grouping and an infinity in the other. So the reassociated program runs
behind ``finite.guard`` on every operand of the product, the nest as written in the other
branch: with finite operands only an intermediate's overflow can tell the groupings apart,
the licence of any reassociation (``finite.py``). The guard's scan is one pass over the
operands, which costs as much as a nest that reads each of their elements once (a matrix
times a vector, ``A[i, k] * w[k] * x[k]``), so such a grouping is offered only where the
nest reads every operand's elements more than once (a loop of its is not in the operand's
indices).

Three factors split two and one, ``Y * (f * g)`` (no constant, no runtime scalar), need
less: a guard on the copied pair alone (``finite.product_guard``: ``f * g`` finite, and zero
only where ``f`` or ``g`` is), a scan of no more elements than the copy. Then ``f`` and
``g`` are finite; for a NaN ``Y`` both groupings give NaN; for an infinite ``Y`` every
grouping gives an infinity of the sign the three signs make, or NaN where ``f`` or ``g`` is
zero -- as written, each product of ``Y`` with a finite nonzero factor stays infinite and
one with a zero is NaN; regrouped, ``Y * (f * g)`` is NaN exactly when ``f * g`` is zero,
which is exactly when ``f`` or ``g`` is; for a finite ``Y`` every operand is finite, the
licence above. Such a grouping is offered whatever the nest reads: ``A[i, k] * w[k] *
x[k]`` runs on the matrix-vector row behind a scan of ``w`` and ``x``.

Sound: the copy stores, at each point of the box of the loops a node uses, the node's value
there; the nest then reads, at each of its points, the element of the copy at that
point's values of those loops: the value the node had when the copy ran. The node reads
only buffers the nest does not write (an accumulate nest writes only its output, which it
never reads: ``nests.as_nest``), and the copy runs right before the nest, so each value is
the one the nest would have computed there, bit for bit (an expression has no effect and
is evaluated in its own dtype; the copy has the node's dtype). Every other loop of the
nest runs at least once (refused otherwise), so the copy evaluates the node at exactly
the points the nest evaluated it, each once: no load out of bounds, no division the nest
did not do. The nest's loops have constant bounds (an accumulate nest's box), so the copy's
loops are the same loops. A copy over a buffer's box stores at each element ``x`` the
factor's function of ``X[x]``; the nest reads it at the element its load read, so again
the same value. That copy also converts elements the nest never reads: each lies in the
buffer (every index's least and greatest values are taken at some iteration, whose load is
in bounds), and the function holds no operation that traps or is undefined on any value (no
integer division; IEEE operations do not trap).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Optional, Sequence

from .. import ir
from ..affine import Affine, affine
from ..ir import Binary, Buffer, Const, Expr, For, Load, Stmt, Store, Unary, Var
from ..match import affine_expr
from ..names import Names
from ..nests import AccNest, as_nest
from . import finite

# Computed factors of one nest offered at most (a product has two or three operands; a body
# with more would multiply the rewrites, each rewritten again)
MAX_FACTORS = 3


def _sites(e: Expr) -> list[tuple[tuple, Expr]]:
    """The factors of ``e``'s product through ``*`` and the negations of products (the leaves
    of ``_parts``), each with its path from ``e`` (``"a"``/``"b"`` of a ``*``, ``"n"`` under a
    negation), in the order written."""
    return [(path, x) for path, x in _parts(e) if not _product(x)]


def _parts(e: Expr, path: tuple = ()) -> list[tuple[tuple, Expr]]:
    """Every node of ``e``'s tree of products (the products, the negations of products, the
    factors), outermost first, each with its path; ``e`` itself first."""
    out = [(path, e)]
    if isinstance(e, Binary) and e.op == "*":
        out += _parts(e.a, path + ("a",)) + _parts(e.b, path + ("b",))
    elif _product(e):
        out += _parts(e.a, path + ("n",))
    return out


def _product(e: Expr) -> bool:
    """``e`` is a product, or the negation of one (a negation of a factor, ``-f32(B)``, is
    part of that factor)."""
    while isinstance(e, Unary) and e.op == "neg":
        e = e.a
    return isinstance(e, Binary) and e.op == "*"


def _computed(e: Expr) -> bool:
    """A factor computed as it is read: neither a load nor a constant, and reading memory."""
    return not isinstance(e, (Load, Const)) and any(True for _ in ir.loads_of(e))


def _replaced(e: Expr, path: tuple, by: Expr) -> Expr:
    """``e`` with the sub-expression at ``path`` (``_sites``) replaced by ``by``."""
    if not path:
        return by
    step, rest = path[0], path[1:]
    if step == "n":
        return Unary("neg", _replaced(e.a, rest, by))
    if step == "a":
        return Binary("*", _replaced(e.a, rest, by), e.b)
    return Binary("*", e.a, _replaced(e.b, rest, by))


def varying_factors(nest: AccNest) -> list[Expr]:
    """The factors of ``nest``'s product that use a loop variable (no constant, no scalar
    read at run time), in the order written; none when the body is no product."""
    sites = _sites(nest.value)
    return [e for _, e in sites if ir.var_names(e)] if len(sites) > 1 else []


def computed_factors(nest: AccNest) -> list[Expr]:
    """The factors of ``nest``'s product computed as they are read (``_computed``): what no
    intrinsic reads from memory (the explanation of a nest no row matched names them)."""
    sites = _sites(nest.value)
    return [e for _, e in sites if _computed(e)] if len(sites) > 1 else []


def hoistable(nest: AccNest) -> list[tuple[tuple, Expr]]:
    """The factors of ``nest``'s body, and the products of factors as written, that
    ``hoist-operand`` copies out (module doc), outermost first, with their paths; none when a
    loop of the nest runs no iteration or the body is no product."""
    if any(d.extent < 1 for d in nest.dims):
        return []
    names = {d.name for d in nest.dims}
    if len(_sites(nest.value)) < 2:
        return []  # no product: an elementwise body is no operand of one
    out = []
    for path, e in _parts(nest.value)[1:]:
        if not any(_computed(f) for _, f in _sites(e)):
            continue  # plain loads and constants: the packing stages' and scalar-factor's
        used = ir.var_names(e)
        if used and used < names and not any(ld.buffer == nest.out for ld in ir.loads_of(e)):
            out.append((path, e))
    return out


def _major_first(index: Expr) -> list[str]:
    """The loop variables of one index, the one of largest stride first (``i_i + 4 * i_o``:
    ``i_o``, then ``i_i``), so that the copy keeps the source's order of strides; by name
    where the index is not affine."""
    form = affine(index)
    if form is None:
        return sorted(ir.var_names(index))
    out = [v for v, _ in sorted(form.terms, key=lambda t: (-abs(t[1]), str(t[0]))) if isinstance(v, str)]
    return out + sorted(ir.var_names(index) - set(out))


def copied(nest: AccNest, e: Expr, names: Names) -> tuple[Stmt, Expr, Buffer]:
    """The copy of factor ``e`` as ``hoist-operand`` makes it (over the elements of the
    buffer it reads where that is smaller, else over the loops it uses), the expression
    reading it in the nest, its temporary."""
    return _buffer_copy(nest, e, names) or _copy(nest, e, names)


def _copy(nest: AccNest, e: Expr, names: Names) -> tuple[Stmt, Load, Buffer]:
    """The copy of factor ``e`` over the loops it uses (in the order its loads name them,
    the order of its first load's indices first, each index's largest stride first), the
    load reading it, its temporary."""
    order = [v for ld in ir.loads_of(e) for i in ld.indices for v in _major_first(i)]
    dims = [d for v in dict.fromkeys(order) for d in nest.dims if d.name == v]
    shape = tuple(d.extent for d in dims)
    idx = tuple(affine_expr(Affine(((d.name, 1),), -d.start)) for d in dims)
    temp = Buffer(names.numbered("ho_P"), e.dtype, shape)
    body: Stmt = Store(temp, idx, e)
    for d in reversed(dims):
        body = For(d.name, d.start, d.stop, body)
    return body, Load(temp, idx), temp


# what a conversion of a buffer's elements may compute besides its one load: operations that
# cannot trap or be undefined on elements the nest never read (no integer division)
_SAFE_UNARY = ("neg", "abs", "exp", "sqrt")
_SAFE_FLOAT = ("+", "-", "*", "/", "max", "min")
_SAFE_INT = ("+", "-", "*", "max", "min")


def _converted_load(e: Expr) -> Optional[Load]:
    """The one load of ``e`` when ``e`` is a function of that element alone (casts, the
    operations above, constants), its indices reading no memory; else None."""
    loads = list(ir.loads_of(e))
    if len(loads) != 1 or any(True for i in loads[0].indices for _ in ir.loads_of(i)):
        return None

    def ok(x: Expr) -> bool:
        if x is loads[0] or isinstance(x, Const):
            return True
        if isinstance(x, ir.Cast):
            return ok(x.a)
        if isinstance(x, Unary):
            return x.op in _SAFE_UNARY and ok(x.a)
        if isinstance(x, Binary):
            safe = _SAFE_FLOAT if ir.is_float(x.dtype) else _SAFE_INT
            return x.op in safe and ok(x.a) and ok(x.b)
        return False

    return loads[0] if ok(e) else None


def _box(nest: AccNest, load: Load) -> Optional[tuple[tuple[int, int], ...]]:
    """Per index of ``load``, the least and the greatest value it takes over the nest's loops
    (each affine in them); None where one is not."""
    ranges = {d.name: (d.start, d.stop - 1) for d in nest.dims}
    forms = [affine(index) for index in load.indices]
    out = tuple(None if f is None else f.bounds(ranges.get) for f in forms)
    return None if None in out else out


def _buffer_copy(nest: AccNest, e: Expr, names: Names) -> Optional[tuple[Stmt, Expr, Buffer]]:
    """The copy of factor ``e`` over the elements of the buffer it reads (the box its one
    load's indices cover), where that box holds fewer elements than the loops ``e`` uses (a
    sliding window, ``f32(X[h + r, w + s])``, reads each element several times): the copy,
    the load of it at the original indices, its temporary. None where ``e`` is no function of
    one element (``_converted_load``) or the box is no smaller."""
    load = _converted_load(e)
    box = _box(nest, load) if load is not None else None
    if box is None:
        return None
    loops = math.prod(d.extent for d in nest.dims if d.name in ir.var_names(e))
    if math.prod(hi - lo + 1 for lo, hi in box) >= loops:
        return None
    temp = Buffer(names.numbered("ho_P"), e.dtype, tuple(hi - lo + 1 for lo, hi in box))
    xs = [names.fresh(f"ho_x{k}") for k in range(len(box))]
    at = tuple(affine_expr(Affine(((x, 1),), -lo)) for x, (lo, _) in zip(xs, box))
    value = ir.map_loads(e, lambda ld: Load(ld.buffer, tuple(Var(x) for x in xs)))
    body: Stmt = Store(temp, at, value)
    for x, (lo, hi) in reversed(list(zip(xs, box))):
        body = For(x, lo, hi + 1, body)
    read = tuple(affine_expr(affine(i).plus(Affine((), -lo))) for i, (lo, _) in zip(load.indices, box))
    return body, Load(temp, read), temp


def hoist(nest: AccNest, chosen: list[tuple[tuple, Expr]], names: Names
          ) -> Optional[tuple[list, list[Buffer]]]:
    """The items of ``hoist-operand`` copying the factors ``chosen`` (from ``hoistable``) and
    their temporaries, or None when the nest so rewritten is no accumulate nest."""
    value, items, temps = nest.value, [], []
    for path, e in chosen:
        fill, load, temp = copied(nest, e, names)
        value = _replaced(value, path, load)
        items.append(fill)
        temps.append(temp)
    new = as_nest(replace(nest, value=value).stmt())
    if new is None:
        return None
    return items + [new], temps


# -- regroup-factors ---------------------------------------------------------------------

# A group of factors: the paths (``_sites``) of its factors, in the order written
Group = tuple[tuple, ...]


def regroupings(nest: AccNest) -> list[tuple[Group, Group]]:
    """``regroup-factors``: a product of three or four factors that vary with the loops (a
    scale per row or per column, ``A[i, k] * s[k] * B[k, j]``) as two operands: each way of
    splitting those factors in two groups where each group of more than one factor, or of
    one computed factor, uses fewer of the nest's loops than the nest has (it is copied out)
    and at least one group has several factors (a single computed factor alone is
    ``hoistable``'s). Factors using no loop (constants, scalars read at run time) are in no
    group. The groups in the order of their first factors."""
    if any(d.extent < 1 for d in nest.dims):
        return []
    sites = [(path, e) for path, e in _sites(nest.value) if ir.var_names(e)]
    if not 3 <= len(sites) <= MAX_FACTORS + 1:
        return []
    value, names = nest.value, {d.name for d in nest.dims}
    out = []
    first, rest = sites[0][0], [p for p, _ in sites[1:]]
    for mask in range(1, 1 << len(rest)):
        left = (first,) + tuple(p for k, p in enumerate(rest) if not mask >> k & 1)
        right = tuple(p for k, p in enumerate(rest) if mask >> k & 1)
        if max(len(left), len(right)) < 2:
            continue
        factors = [[_at(value, p) for p in g] for g in _copies(value, (left, right))]
        if all(set().union(*map(ir.var_names, f)) < names
               and not any(ld.buffer == nest.out for e in f for ld in ir.loads_of(e))
               for f in factors):
            out.append((left, right))
    return out


def _copies(value: Expr, groups: Sequence[Group]) -> list[Group]:
    """The groups copied out: all but a group of one plain load."""
    return [g for g in groups if len(g) > 1 or _computed(_at(value, g[0]))]


def _node(value: Expr, group: Group) -> Optional[tuple]:
    """The path of the outermost node of ``value``'s product whose factors that vary with the
    loops are exactly ``group`` (factors using no loop may be in it too), or None: the group
    as written, which copies bit for bit."""
    varying = {p for p, e in _sites(value) if ir.var_names(e)}
    for path, _ in _parts(value):
        inside = {p for p in varying if p[:len(path)] == path}
        if inside == set(group):
            return path
    return None


def _at(value: Expr, path: tuple) -> Expr:
    for step in path:
        value = value.b if step == "b" else value.a
    return value


def regroup(nest: AccNest, groups: tuple[Group, Group], names: Names
            ) -> Optional[tuple[list, list[Buffer], tuple[Expr, ...]]]:
    """The items of ``regroup-factors`` for ``groups`` (from ``regroupings``), their
    temporaries, and the expressions copied out; None when the nest so rewritten is no
    accumulate nest. Each group copied out is copied as ``hoist-operand`` copies a factor.
    Where each is a node of the product as written (``_node``), it is replaced in place and
    the rewrite is exact. Otherwise the product is regrouped: each group's factors
    multiplied in the order written, the nest reading ``scalars * first * second``, negated
    where the product was, behind ``finite.guard`` on every load of the body, the nest as
    written in the other branch (module doc)."""
    if not _admitted(nest, groups):
        return None
    value = nest.value
    copied = _copies(value, groups)
    exact = _exact(value, copied)
    pair = _pair(value, groups)
    items, temps, exprs, loads = [], [], [], {}
    for g in copied:
        # as written: the node, with the scalars and negations inside it; else the factors
        e = _at(value, _node(value, g)) if exact else ir.product([_at(value, p) for p in g])
        fill, load, temp = (_buffer_copy(nest, e, names) if len(g) == 1 else None) \
            or _copy(nest, e, names)
        items.append(fill)
        temps.append(temp)
        exprs.append(e)
        loads[g] = load
    if exact:
        new_value = value
        for g in copied:
            new_value = _replaced(new_value, _node(value, g), loads[g])
        new = as_nest(replace(nest, value=new_value).stmt())
        return None if new is None else (items + [new], temps, tuple(exprs))
    scalars = [e for _, e in _sites(value) if not ir.var_names(e)]
    operands = [loads.get(g) or _at(value, g[0]) for g in groups]
    product = ir.product(scalars + operands)
    negations = sum(1 for _, x in _parts(value) if isinstance(x, Unary) and _product(x))
    new = as_nest(replace(nest, value=Unary("neg", product) if negations % 2 else product).stmt())
    if new is None:
        return None
    if pair is not None:
        guarded = finite.product_guard(nest, [_at(value, p) for p in pair], items + [new], [nest],
                                       names, temps)
    else:
        guarded = finite.guard([(nest, ld) for ld in dict.fromkeys(ir.loads_of(value))],
                               items + [new], [nest], names, temps)
    return guarded, temps, tuple(exprs)


def _pair(value: Expr, groups: Sequence[Group]) -> Optional[Group]:
    """The group whose product alone the guard of a regrouping checks (module doc): where the
    product has three factors, all varying with the loops, split two and one, the two; else
    None (every operand is scanned)."""
    if any(not ir.var_names(e) for _, e in _sites(value)):
        return None
    one, two = sorted(groups, key=len)
    return two if (len(one), len(two)) == (1, 2) else None


def _exact(value: Expr, copied: Sequence[Group]) -> bool:
    """Each group copied out is a node of the product as written (``_node``)."""
    return all(_node(value, g) is not None for g in copied)


def guarded_pays(nest: AccNest) -> bool:
    """Whether a reassociated grouping is offered: its product reads no float (no guard:
    integer products reassociate exactly), or the nest reads each element of every operand
    more than once (``_reused``)."""
    loads = list(ir.loads_of(nest.value))
    return not any(ir.is_float(ld.dtype) for ld in loads) or all(_reused(nest, ld) for ld in loads)


def _admitted(nest: AccNest, groups: Sequence[Group]) -> bool:
    """Whether ``regroup-factors`` offers ``groups``: as written, behind the scan of a pair,
    or behind a scan of every operand that can pay."""
    return _exact(nest.value, _copies(nest.value, groups)) or _pair(nest.value, groups) is not None \
        or guarded_pays(nest)


def offers_regrouping(nest: AccNest) -> bool:
    """Whether ``regroup-factors`` offers a rewrite of ``nest`` (``_admitted``)."""
    return any(_admitted(nest, groups) for groups in regroupings(nest))


def _reused(nest: AccNest, load: Load) -> bool:
    """The nest reads each element ``load`` reads more than once: a loop of more than one
    iteration is not among those its indices use. (A guard's scan is one pass over its
    operands, as much memory traffic as a nest that reads each of their elements once, a
    matrix-vector product: behind a guard, regrouping pays only where the operands are read
    again.)"""
    used = set().union(*(ir.var_names(i) for i in load.indices))
    return any(d.extent > 1 and d.name not in used for d in nest.dims)


def offered(nest: AccNest, names: Names) -> list[tuple[tuple[Expr, ...], list, list[Buffer]]]:
    """What the family offers for ``nest``: each factor ``hoistable`` gives copied out alone,
    then each of ``regroupings``, as ``(the expressions copied, items, temporaries)``."""
    out = []
    for path, e in hoistable(nest)[:MAX_FACTORS]:
        alt = hoist(nest, [(path, e)], names)
        if alt is not None:
            out.append(((e,), *alt))
    for groups in regroupings(nest):
        alt = regroup(nest, groups, names)
        if alt is not None:
            items, temps, copied = alt
            out.append((copied, items, temps))
    return out


def rewrites(item, search) -> list:
    """A nest with computed operands, each copied out alone, and a product of several
    factors regrouped as two operands (the ``sites`` hook, ``choose.py``: the cost model
    chooses among them and the nest; a rewrite's nest is rewritten again, so two operands
    copied out is the rewrite of a rewrite)."""
    if not isinstance(item, AccNest):
        return []
    return [(items, temps) for _, items, temps in offered(item, search.names)]
