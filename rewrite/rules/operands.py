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
loops are the same loops.
"""

from __future__ import annotations

from typing import Optional

from .. import ir
from ..affine import Affine, affine
from ..ir import Binary, Buffer, Const, Expr, For, Load, Stmt, Store, Unary, Var
from ..match import affine_expr
from ..names import Names
from ..nests import AccNest, as_nest

# Computed factors of one nest offered at most (a product has two or three operands; a body
# with more would multiply the rewrites, each rewritten again)
MAX_FACTORS = 3


def _vars(e: Expr) -> set[str]:
    return {x.name for x in ir.walk_expr(e) if isinstance(x, Var)}


def _sites(e: Expr, path: tuple = ()) -> list[tuple[tuple, Expr]]:
    """The factors of ``e``'s product through ``*`` and the negations of products, each with
    its path from ``e`` (``"a"``/``"b"`` of a ``*``, ``"n"`` under a negation), in the order
    written."""
    if isinstance(e, Binary) and e.op == "*":
        return _sites(e.a, path + ("a",)) + _sites(e.b, path + ("b",))
    if isinstance(e, Unary) and e.op == "neg" and _under_negations(e.a):
        return _sites(e.a, path + ("n",))
    return [(path, e)]


def _parts(e: Expr, path: tuple = ()) -> list[tuple[tuple, Expr]]:
    """Every node of ``e``'s tree of products as ``_sites`` walks it (the products, the
    negations of products, the factors), outermost first, each with its path; ``e`` itself
    first."""
    out = [(path, e)]
    if isinstance(e, Binary) and e.op == "*":
        out += _parts(e.a, path + ("a",)) + _parts(e.b, path + ("b",))
    elif isinstance(e, Unary) and e.op == "neg" and _under_negations(e.a):
        out += _parts(e.a, path + ("n",))
    return out


def _computed(e: Expr) -> bool:
    """A factor computed as it is read: neither a load nor a constant, and reading memory."""
    return not isinstance(e, (Load, Const)) and any(True for _ in ir.loads_of(e))


def _under_negations(e: Expr) -> bool:
    """``e`` is a product, under negations or not (a negation of a factor, ``-f32(B)``, is
    part of that factor)."""
    while isinstance(e, Unary) and e.op == "neg":
        e = e.a
    return isinstance(e, Binary) and e.op == "*"


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
        used = _vars(e)
        if used and used < names and not any(ld.buffer == nest.out for ld in ir.loads_of(e)):
            out.append((path, e))
    return out


def _major_first(index: Expr) -> list[str]:
    """The loop variables of one index, the one of largest stride first (``i_i + 4 * i_o``:
    ``i_o``, then ``i_i``), so that the copy keeps the source's order of strides; by name
    where the index is not affine."""
    form = affine(index)
    if form is None:
        return sorted(_vars(index))
    out = [v for v, _ in sorted(form.terms, key=lambda t: (-abs(t[1]), str(t[0]))) if isinstance(v, str)]
    return out + sorted(_vars(index) - set(out))


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


def hoist(nest: AccNest, chosen: list[tuple[tuple, Expr]], names: Names
          ) -> Optional[tuple[list, list[Buffer]]]:
    """The items of ``hoist-operand`` copying the factors ``chosen`` (from ``hoistable``) and
    their temporaries, or None when the nest so rewritten is no accumulate nest."""
    value, items, temps = nest.value, [], []
    for path, e in chosen:
        fill, load, temp = _copy(nest, e, names)
        value = _replaced(value, path, load)
        items.append(fill)
        temps.append(temp)
    body: Stmt = ir.Accumulate(nest.out, nest.indices, value)
    for d in reversed(nest.dims):
        body = For(d.name, d.start, d.stop, body)
    new = as_nest(body)
    if new is None:
        return None
    return items + [new], temps


def rewrites(item, search) -> list:
    """A nest with computed operands, each copied out alone (the ``sites`` hook,
    ``choose.py``: the cost model chooses among them and the nest; a rewrite's nest is
    rewritten again, so two operands copied out is the rewrite of a rewrite)."""
    if not isinstance(item, AccNest):
        return []
    out = []
    for site in hoistable(item)[:MAX_FACTORS]:
        alt = hoist(item, [site], search.names)
        if alt is not None:
            out.append(alt)
    return out
