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
    loops = math.prod(d.extent for d in nest.dims if d.name in _vars(e))
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
        fill, load, temp = _buffer_copy(nest, e, names) or _copy(nest, e, names)
        value = _replaced(value, path, load)
        items.append(fill)
        temps.append(temp)
    new = as_nest(replace(nest, value=value).stmt())
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
