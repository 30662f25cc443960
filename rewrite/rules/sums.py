"""split-sum: an accumulation of a sum is one accumulation per term.

    for i, j in grid(M, N):                       for i, j in grid(M, N):
        A[i, j] += u1[i] * v1[j] + u2[i] * v2[j]  ->   A[i, j] += u1[i] * v1[j]
                                                   for i, j in grid(M, N):
                                                       A[i, j] += u2[i] * v2[j]

(gemver's rank-2 update, syr2k's body): each term is then a product a matmul or outer-product
row can cover, where the sum as one body matches none.

Sound when no term reads the accumulated buffer: every element then gets the same terms
added, regrouped from ``A + (a + b)`` to ``(A + a) + b`` (exact on integers, a reassociation
on floats, which rewrites may do; a NaN or Inf among the terms reaches the element either
way, and ``inf + -inf`` is NaN in both orders). ``a - b`` is ``a + -b``, so a subtracted
product is a term scaled by -1; ``-(a + b)`` (``A[i, j] -= a + b``) is ``-a + -b``, exactly:
negation is exact and IEEE rounding is symmetric, and on integers both wrap alike. It is a ``sites`` family: a split is kept
only where the cost model finds it cheaper (``choose.py``), since a term no intrinsic covers
then costs a second pass over the output.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Optional

from .. import ir
from ..nests import AccNest


def terms(e: ir.Expr) -> list[ir.Expr]:
    """The terms of a sum, ``a - b`` read as ``a + -b`` and ``-(a + b)`` as ``-a + -b``."""
    if isinstance(e, ir.Binary) and e.op == "+":
        return terms(e.a) + terms(e.b)
    if isinstance(e, ir.Binary) and e.op == "-":
        return terms(e.a) + [_neg(t) for t in terms(e.b)]
    if isinstance(e, ir.Unary) and e.op == "neg":
        inner = terms(e.a)
        if len(inner) > 1:
            return [_neg(t) for t in inner]
    return [e]


def _neg(t: ir.Expr) -> ir.Expr:
    """``-t``, a negated term's negation undone (``--a`` is ``a``, exactly)."""
    return t.a if isinstance(t, ir.Unary) and t.op == "neg" else ir.Unary("neg", t)


def split(nest: AccNest) -> Optional[list[AccNest]]:
    """One nest per term of ``nest``'s sum, or None: no sum, or a term reads the output."""
    parts = terms(nest.value)
    if len(parts) < 2:
        return None
    if any(load.buffer.name == nest.out.name for t in parts for load in ir.loads_of(t)):
        return None
    return [replace(nest, value=t) for t in parts]


def rewrites(item, search) -> list:
    """An accumulation of a sum as one accumulation per term (the ``sites`` hook,
    ``choose.py``: the split is taken where it costs less, nest by nest: a sum of products is
    split beside a sum no intrinsic covers, which splitting only gives a second pass over its
    output)."""
    pieces = split(item) if isinstance(item, AccNest) else None
    return [(pieces, [])] if pieces else []
