"""distribute: products of integer sums multiplied out, and sums that do not move with an
output loop computed once.

Quantized inference subtracts zero points before it multiplies (ONNX ``MatMulInteger`` with
``a_zero_point`` and ``b_zero_point``, gemmlowp, TFLite's asymmetric int8)::

    for i, j, k in grid(M, N, K):
        C[i, j] += (i32(A[i, k]) - za[0]) * (i32(B[k, j]) - zb[0])

No int8 row matches that body: its operands are differences, not the bytes the row widens.
Multiplied out, the sum is the product of the bytes and three cheap corrections, which is
how those libraries compute it::

    sum_k (a - za)(b - zb) = sum_k a b  -  zb sum_k a  -  za sum_k b  +  sum_k za zb

distribute-product
    An accumulation over an integer dtype whose body is a product (through ``*`` and
    negation) with a sum or difference among its factors is one accumulation per term of the
    product multiplied out (at most ``MAX_TERMS`` terms). Each term then goes its own way:
    ``a * b`` to the int8 tiles, the others through ``sum-once`` below, their sums added in
    one pass over the output (``C[i, j] += H0[i] + H1[j] + H2[0]``). Sound because the
    integers of one dtype with wrap-around ``+``, ``-`` and ``*`` are a commutative ring
    (integers modulo 2^bits): distributivity and the regrouping of the sum are exact, bit for
    bit, whatever overflows. Only ``+``, ``-``, ``*`` and negation in the body's own dtype are
    multiplied out; a cast (``i32(A[i, k] - 3)`` subtracts in ``u8``, wrapping at 256, before
    it widens) and every other operation are atoms. Floats are left alone: multiplied out,
    ``(a - za) * b`` cancels catastrophically where ``a`` is close to ``za``.

sum-once (the terms of distribute-product)
    A term that does not use one of the loops the output's indices use, where the nest has a
    reduction loop, adds the same sum once per value of that output loop, so it is summed once
    into a temporary with one element per point of the output loops it uses; the factors
    that stay put along the reduction (``zb[0]``, a zero point per column ``zb[j]``) are
    multiplied in afterwards, and a term constant along it is the reduction's count times
    the term (``sd_H_2[0] = K * za[0] * zb[0]``, the count wrapped into the dtype)::

        for i, j, k in grid(M, N, K):             for i in range(M):
            C[i, j] += -(zb[0] * A[i, k])                 sd_H_0[i] = 0
                                            ->    for i, k in grid(M, K):
                                                      sd_H_0[i] += A[i, k]
                                                  for i in range(M):
                                                      sd_H_0[i] = -(zb[0] * sd_H_0[i])
                                                  for i, j in grid(M, N):
                                                      C[i, j] += sd_H_0[i]

    For each point of the output loops the nest adds, into the element the output's indices
    name there, the terms of every reduction point; the rewrite adds their sum, read from
    the element of the points the term depends on, times the factors taken out: the same
    terms into the same elements, regrouped and factored, exact in the ring. The temporary
    is fresh and the term reads neither it nor the output (``nests.as_nest``), so the order
    of the passes changes nothing else. On floats the regrouping would be a reassociation
    and the factoring would move NaN and Inf (``scalars.py``): this family leaves floats
    alone, and offers no nest as written summed once (the fuzzer's bounds, ``fuzz/real.py``,
    count a nest's batch dims as the iterations written).

shift-bytes
    Every int8 row multiplies u8 by i8 (``vpdpbusd``, ``vpmaddubsw``, AMX's ``tdpbusd``): a
    product of two i8 or two u8 operands, widened to a dtype of 16 bits or more, matches
    none. One of them is copied into the other 8-bit dtype, shifted by 128, and the shift
    taken back in the product, which distribute-product then multiplies out (the 128 times a
    column or row sum of the other operand)::

        C[i, j] += i32(A[i, k]) * i32(B[k, j])    ->    As[i, k] = u8(i32(A[i, k]) + 128)
        (A and B both i8)                               C[i, j] += (i32(As[i, k]) - 128) * i32(B[k, j])

    Exact: an i8 ``x`` plus 128 is in 0..255, which u8 holds, and widened back less 128 it is
    ``x``; a u8 ``x`` less 128 is in -128..127, which i8 holds, and plus 128 it is ``x``. This
    is how oneDNN and ONNX Runtime run signed int8 products on VNNI.

All are ``sites`` rewrites (``choose.py``): the cost model keeps them where they cost less
than the nest as written, and their nests are rewritten again by the other families.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from .. import ir
from ..ir import Binary, Buffer, Cast, Const, Expr, Load, Store, Unary
from ..names import Names
from ..nests import AccNest, as_nest
from .operands import _replaced, _sites, copied
from .scalars import _box_or_scalar, _factors, _loops
from .sums import _neg

# Terms of a product multiplied out, at most: two differences multiplied make four.
MAX_TERMS = 8


def multiplied_out(e: Expr, dtype: str) -> list[Expr]:
    """The terms of ``e`` with its products of sums multiplied out, over ``+``, ``-``, ``*``
    and negation in ``dtype`` (everything else an atom); the terms add up to ``e`` on
    wrap-around integers."""
    if isinstance(e, Binary) and e.dtype == dtype and e.op in "+-":
        right = multiplied_out(e.b, dtype)
        return multiplied_out(e.a, dtype) + (right if e.op == "+" else [_neg(t) for t in right])
    if isinstance(e, Unary) and e.op == "neg":
        return [_neg(t) for t in multiplied_out(e.a, dtype)]
    if isinstance(e, Binary) and e.dtype == dtype and e.op == "*":
        left, right = multiplied_out(e.a, dtype), multiplied_out(e.b, dtype)
        if len(left) * len(right) > MAX_TERMS:
            return [e]
        return [_signed_product(x, y) for x in left for y in right]
    return [e]


def _signed_product(x: Expr, y: Expr) -> Expr:
    """``x * y`` with the negations of both factors taken in front (exact on integers)."""
    negative = False
    while isinstance(x, Unary) and x.op == "neg":
        x, negative = x.a, not negative
    while isinstance(y, Unary) and y.op == "neg":
        y, negative = y.a, not negative
    p: Expr = Binary("*", x, y)
    return Unary("neg", p) if negative else p


def distributed(nest: AccNest) -> Optional[list[Expr]]:
    """The terms of ``nest``'s integer body multiplied out, or None where it is no product
    with a sum among its factors, or would have more than ``MAX_TERMS`` terms."""
    dt = nest.out.dtype
    if not ir.is_int(dt) or nest.value.dtype != dt:
        return None
    value = nest.value
    while isinstance(value, Unary) and value.op == "neg":
        value = value.a
    if not (isinstance(value, Binary) and value.op == "*"):
        return None  # a sum is split-sum's; a lone load has nothing to multiply out
    parts = multiplied_out(nest.value, dt)
    if len(parts) < 2 or len(parts) > MAX_TERMS:
        return None
    return parts


@dataclass(frozen=True)
class _Once:
    """A term summed once: the temporaries' zero fills and accumulate nests (``fill``), and
    the value each point of the output loops adds (``read``)."""

    fill: list
    read: Expr
    temps: list


def _once(nest: AccNest, names: Names) -> Optional[_Once]:
    """``nest``'s term summed once over the output loops it uses (on integers, the sum of its
    factors that move along the reduction, the others multiplied in afterwards), or None where
    that sum uses every output loop or the nest has no reduction loop."""
    outer = list(nest.outer)
    if len(outer) == len(nest.dims):
        return None
    dt = nest.out.dtype
    reduction = [d for d in nest.dims if d not in outer]
    summed, scale, negative = nest.value, [], False
    if ir.is_int(dt):
        factors, negative = _factors(nest.value)
        if any(x.dtype != dt for x in factors):
            factors, negative = [nest.value], False
        moving = {d.name for d in reduction}
        inner = [x for x in factors if ir.var_names(x) & moving]
        scale = [x for x in factors if not ir.var_names(x) & moving]
        if not inner:  # the same term at every reduction point: that many times the term
            count = math.prod(d.extent for d in reduction)
            return _scaled_read([_wrapped(count, dt)] + scale, negative, outer, dt, names)
        summed = ir.product(inner)
    kept = [d for d in outer if d.name in ir.var_names(summed)]
    if len(kept) == len(outer):
        return None
    temp, idx = _temporary(kept, dt, names)
    fill: list = [_loops(kept, Store(temp, idx, Const(0, dt)))]
    nest_once = as_nest(_loops(kept + reduction, ir.Accumulate(temp, idx, summed)))
    if nest_once is None:
        return None
    fill.append(nest_once)
    read: Expr = Load(temp, idx)
    if scale and set().union(*map(ir.var_names, scale)) <= {d.name for d in kept}:
        # scaled in place, once an element, so that the pass over the output only adds
        fill.append(_loops(kept, Store(temp, idx, _signed(ir.product(scale + [read]), negative))))
    elif scale or negative:
        read = _signed(ir.product(scale + [read]), negative)
    return _Once(fill, read, [temp])


def _scaled_read(factors: list, negative: bool, outer: list, dt: str, names: Names) -> _Once:
    """The product of ``factors`` (signed) computed into a temporary over the output loops
    they use, read at every point of ``outer``; computed where it is read when they use
    every output loop."""
    value = _signed(ir.product(factors), negative)
    used = set().union(*map(ir.var_names, factors))
    kept = [d for d in outer if d.name in used]
    if len(kept) == len(outer):
        return _Once([], value, [])
    temp, idx = _temporary(kept, dt, names)
    return _Once([_loops(kept, Store(temp, idx, value))], Load(temp, idx), [temp])


def _temporary(dims: list, dt: str, names: Names) -> tuple[Buffer, tuple[Expr, ...]]:
    """A fresh ``sd_H`` with an element per point of ``dims`` (one where there are none),
    and its indices there."""
    shape, idx = _box_or_scalar(dims)
    return Buffer(names.numbered("sd_H"), dt, shape), idx


def _signed(e: Expr, negative: bool) -> Expr:
    return Unary("neg", e) if negative else e


def _wrapped(count: int, dtype: str) -> Const:
    """``count`` as a constant of the integer ``dtype``, wrapped into its range (the same
    element of the ring)."""
    lo, hi = ir.int_range(dtype)
    return Const((count - lo) % (hi - lo + 1) + lo, dtype)


def _added(nest: AccNest, values: list[Expr]) -> Optional[AccNest]:
    """One pass over ``nest``'s output loops adding the sum of ``values`` (each read at every
    point of them) into its output."""
    total = values[0]
    for v in values[1:]:
        total = Binary("+", total, v)
    return as_nest(_loops(nest.outer, ir.Accumulate(nest.out, nest.indices, total)))


def multiplied(nest: AccNest, names: Names) -> Optional[tuple[list, list[Buffer]]]:
    """``distribute-product``'s items for ``nest`` and their temporaries, or None: the terms
    each summed in their own nest, those that skip an output loop summed once and added in
    one pass over the output (their sum regrouped: exact, the terms being integers)."""
    parts = distributed(nest)
    if parts is None:
        return None
    items: list = []
    onces: list[_Once] = []
    for term in parts:
        alone = AccNest(nest.dims, nest.out, nest.indices, term)
        once = _once(alone, names)
        if once is None:
            items.append(alone)
        else:
            onces.append(once)
    if onces:
        last = _added(nest, [o.read for o in onces])
        if last is None:
            return None
        items += [x for o in onces for x in o.fill] + [last]
    return items, [t for o in onces for t in o.temps]


# ---------------------------------------------------------------------------
# shift-bytes

# The 8-bit dtypes, each with the other one and how its values move into it: an i8 ``x`` is
# the u8 ``x + 128`` less 128, a u8 ``x`` the i8 ``x - 128`` plus 128.
_SHIFTED = {"i8": ("u8", "+"), "u8": ("i8", "-")}


def byte_factors(nest: AccNest) -> list[tuple[tuple, Expr]]:
    """The factors of ``nest``'s integer product that are 8-bit loads widened to its dtype,
    with their paths (``operands._sites``), where every such factor has the same signedness
    and there are at least two (an int8 row multiplies u8 by i8: ``i8 x i8`` and ``u8 x u8``
    products match none as written)."""
    dt = nest.out.dtype
    if not ir.is_int(dt) or ir.bits(dt) < 16 or nest.value.dtype != dt:
        return []
    found = [(path, x) for path, x in _sites(nest.value)
             if isinstance(x, Cast) and x.dtype == dt and isinstance(x.a, Load) and x.a.dtype in _SHIFTED]
    if len(found) < 2 or len({x.a.dtype for _, x in found}) != 1:
        return []
    return found


def shifted(nest: AccNest, path: tuple, factor: Cast, names: Names) -> Optional[tuple[list, list[Buffer]]]:
    """``shift-bytes``: ``factor`` (a widened 8-bit load) read from a copy in the other
    8-bit dtype, shifted by 128, and the 128 taken back in the product, which is then
    multiplied out (``multiplied``)."""
    dt = nest.out.dtype
    other, op = _SHIFTED[factor.a.dtype]
    offset = Const(128, dt)
    fill, read, temp = copied(nest, Cast(other, Binary(op, factor, offset)), names)
    back = Binary("-" if op == "+" else "+", Cast(dt, read), offset)
    new = as_nest(AccNest(nest.dims, nest.out, nest.indices, _replaced(nest.value, path, back)).stmt())
    out = multiplied(new, names) if new is not None else None
    if out is None:
        return None
    items, temps = out
    return [fill] + items, [temp] + temps


def rewrites(item, search) -> list:
    """A nest over integers whose product multiplies sums, each term its own nest (each
    summed once where it can be), and an integer product of bytes of one signedness shifted
    (the ``sites`` hook, ``choose.py``)."""
    if not isinstance(item, AccNest):
        return []
    found = [multiplied(item, search.names)]
    found += [shifted(item, path, x, search.names) for path, x in byte_factors(item)[:2]]
    return [x for x in found if x is not None]
