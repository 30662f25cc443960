"""contract-pair: a sum of products of three or more operands computed as two contractions,
a pair of the operands first.

An accumulation whose body multiplies three operands sums every product over all its loops.
Where two of them, ``x`` and ``y``, are the only ones that use some loops ``R`` (no other
operand and not the output index them), the sum over ``R`` can be taken of ``x * y`` alone,
into a temporary indexed by the other loops ``x`` and ``y`` use, and the rest multiplied in
afterwards (the order of an einsum path: one pairwise contraction, then the next)::

    for i, j, k in grid(64, 64, 64):             for j, k in grid(64, 64):
        s[0] += dC[i, j] * A[i, k] * B[k, j]         ct_T_0[j, k] = 0.0
                                            ->   for i, j, k in grid(64, 64, 64):
                                                     ct_T_0[j, k] += dC[i, j] * A[i, k]
                                                 for j, k in grid(64, 64):
                                                     s[0] += ct_T_0[j, k] * B[k, j]

The first nest is a matrix product an intrinsic covers; the nest as written, a three-operand
product summed into one element, has none. The gradient of a runtime scale factor
(``dalpha = sum(dC * (A @ B))``) has this form. Each pair of operands with such loops gives a
candidate; the cost model chooses among them and the nest as written (a ``sites``
family, ``choose.py``).

Sound because, with ``K`` the loops ``x`` and ``y`` use besides ``R``, the rest ``r`` of the
product (the other operands, constants and the sign) and the output index using no loop of
``R``::

    sum over all loops of x * y * r  =  sum over the loops but R of r * (sum over R of x * y)

(distributivity and the regrouping of a sum: exact on wrap-around integers, up to rounding on
floats). Each point of the loops but ``R`` adds ``r`` times that point's sum into the element
the nest as written adds its terms to, so the same terms reach the same elements, even where
several points share one element, and loops no operand uses repeat the terms as before. The
temporary is fresh and zeroed right before its sum; the nest writes only its output, which it
never reads (``nests.as_nest``), so every operand has the same value in all three nests.

On floats the regrouping moves NaN and Inf (``inf * 1 + inf * -1`` is NaN, ``inf * (1 + -1)``
too, but ``x * y`` overflowing to Inf in the sum while ``x * y * r`` did not is another
grouping's rounding). The rewritten nests run behind ``finite.guard`` on every operand, the
nest as written in the other branch; integers need no guard. A non-finite constant factor
(``inf * A * B * C``), which no scan sees, is refused.
"""

from __future__ import annotations

import itertools
import math

from .. import ir
from ..ir import Accumulate, Buffer, Const, Load, Store, Unary
from ..names import Names
from ..nests import AccNest, as_nest
from . import finite
from .scalars import _box_or_scalar, _factors, _loops


def candidates(nest: AccNest, names: Names) -> list[tuple[list, list[Buffer]]]:
    """For each pair of the product's operands that alone use some loop, the items computing
    ``nest`` with that pair contracted first (behind the finiteness guard on floats) and the
    temporaries they use; empty when the body is no product of three operands or more."""
    factors, negative = _factors(nest.value)
    dt = nest.out.dtype
    loads = [k for k, x in enumerate(factors) if isinstance(x, Load)]
    if len(loads) < 3 or any(x.dtype != dt for x in factors) or \
            any(not isinstance(x, (Load, Const)) for x in factors):
        return []
    if any(isinstance(x, Const) and ir.is_float(dt) and not math.isfinite(x.value) for x in factors):
        return []  # inf * A * B * C: the guard scans operands, and the regrouped infinite
        #            terms would meet in other sums
    out_vars = nest.out_vars
    out = []
    for a, b in itertools.combinations(loads, 2):
        pair = ir.var_names(factors[a]) | ir.var_names(factors[b])
        rest = [x for k, x in enumerate(factors) if k not in (a, b)]
        keep = pair & (set().union(*(ir.var_names(x) for x in rest)) | out_vars)
        if pair == keep:
            continue  # no loop of the pair's own: nothing summed first
        kept = [d for d in nest.dims if d.name in keep]
        shape, idx = _box_or_scalar(kept)  # a scalar sum where none is kept
        temp = Buffer(names.numbered("ct_T"), dt, shape)
        zero = _loops(kept, Store(temp, idx, Const(0, dt)))
        inner = as_nest(_loops([d for d in nest.dims if d.name in pair],
                               Accumulate(temp, idx, ir.Binary("*", factors[a], factors[b]))))
        value = ir.product(rest + [Load(temp, idx)])
        outer = as_nest(_loops([d for d in nest.dims if d.name in keep or d.name not in pair],
                               Accumulate(nest.out, nest.indices,
                                          Unary("neg", value) if negative else value)))
        if inner is None or outer is None:
            continue
        allocs = [temp]
        operands = [(nest, factors[k]) for k in loads]
        items = finite.guard(operands, [zero, inner, outer], [nest], names, allocs)
        out.append((items, allocs))
    return out


def rewrites(item, search) -> list:
    """A nest of a product of three operands or more with each of its pairs contracted first
    (the ``sites`` hook, ``choose.py``: the cost model chooses among them and the nest)."""
    return candidates(item, search.names) if isinstance(item, AccNest) else []
