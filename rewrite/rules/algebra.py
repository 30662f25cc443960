"""Algebra on small scalar bodies: commutativity, associativity, distributivity.

Soundness: on integers these are ring identities and hold exactly under wrap-around.
On floats, commutativity of ``+`` and ``*`` is exact in IEEE arithmetic; associativity
and distributivity change rounding only, the same licence a reordered reduction takes,
and ``--check`` compares with tolerances scaled by the reduction length for that reason.

    2.0 * A[i, k] * B[k, j]   ==   2.0 * (A[i, k] * B[k, j])   ==   B[k, j] * A[i, k] * 2.0
"""

from __future__ import annotations

from egglog import rewrite, ruleset

from ..egraph import Term

algebra = ruleset(name="algebra")


@algebra.register
def _algebra(a: Term, b: Term, c: Term):
    # comm-mul, comm-add: exact in IEEE and in wrap-around integers
    yield rewrite(a * b).to(b * a)
    yield rewrite(a + b).to(b + a)
    # assoc-mul, assoc-add: exact on integers; float rounding as in any reordered reduction
    yield rewrite((a * b) * c).to(a * (b * c))
    yield rewrite(a * (b * c)).to((a * b) * c)
    yield rewrite((a + b) + c).to(a + (b + c))
    yield rewrite(a + (b + c)).to((a + b) + c)
    # factor-mul: a*b + a*c = a*(b + c), so a shared operand can be found
    yield rewrite(a * b + a * c).to(a * (b + c))
    # sub-as-add-neg: a - b = a + (-b), exact in IEEE and in wrap-around integers
    yield rewrite(a - b).to(a + (-b))
