"""Algebra on small scalar bodies: commutativity, associativity, distributivity.

Soundness: on integers these are ring identities and hold exactly under wrap-around.
On floats, commutativity of ``+`` and ``*`` is exact in IEEE arithmetic; associativity
and distributivity change rounding only, the same licence a reordered reduction takes,
and ``--check`` compares with tolerances scaled by the reduction length for that reason.

A negation moved into a constant factor (neg-into-constant, ``-(0.5 * x) = -0.5 * x``) is
exact, as a sign flip is.

NaN and Inf: every rule but factor-mul keeps them where they are (a reordered sum or
product of values is NaN, or an infinity of one sign, whatever the order, unless a finite
intermediate overflows or underflows, which is rounding). factor-mul does not:
``Inf*0 + Inf*1`` is NaN, ``Inf*(0 + 1)`` is Inf. So a match on a float body is kept only
when it holds without factoring (``ieee_equal``), which no built-in intrinsic needs (their
bodies are products); factoring serves integer bodies and user intrinsics whose meaning is
written factored, on integers.

    2.0 * A[i, k] * B[k, j]   ==   2.0 * (A[i, k] * B[k, j])   ==   B[k, j] * A[i, k] * 2.0
"""

from __future__ import annotations

from egglog import String, f64, i64, rewrite, ruleset

from .. import ir
from ..egraph import Term

algebra = ruleset(name="algebra")


@algebra.register
def _algebra(a: Term, b: Term, c: Term, s: f64, v: i64, dt: String):
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
    # neg-into-constant: -(c * a) = (-c) * a, exact (a sign flip), so that C -= 0.5 * A * B
    # is the scaled product -0.5 * (A * B) the match rules read
    yield rewrite(-(Term.fconst(s, dt) * a)).to(Term.fconst(-s, dt) * a)
    yield rewrite(-(Term.iconst(v, dt) * a)).to(Term.iconst(i64(0) - v, dt) * a)


def _signed(factors: list) -> list:
    """A product's factors with the signs of its constants gathered into one factor -1 and
    its factors 1 dropped: ``-(0.5 * A)`` and ``-0.5 * A`` alike (a sign flip and a product
    by 1 are exact)."""
    negative, out = False, []
    for f in factors:
        if f[0] == "const":
            text = f[1][0]
            if text.startswith("-"):
                negative, text = not negative, text[1:]
            if text in ("1", "1.0"):
                continue
            f = ("const", [text])
        out.append(f)
    return out + [("const", ["-1"])] if negative else out or [("const", ["1"])]


def _canonical(e: ir.Expr):
    """``e`` up to comm-*, assoc-*, sub-as-add-neg and negation as the factor -1 (exact, as a
    sign flip is; the signs of a product's constants gathered, its factors 1 dropped): sums
    and products flattened into sorted operand lists (the AC normal form, which decides
    equality under those rules)."""
    if isinstance(e, ir.Binary) and e.op == "-":
        return _canonical(ir.Binary("+", e.a, ir.Unary("neg", e.b)))
    if isinstance(e, ir.Binary) and e.op in ("+", "*"):
        terms = []
        for x in (e.a, e.b):
            c = _canonical(x)
            terms += c[1] if c[0] == e.op else [c]
        if e.op == "*":
            terms = _signed(terms)
            if len(terms) == 1:  # 1 * x is x
                return terms[0]
        return (e.op, sorted(terms, key=repr))
    if isinstance(e, ir.Binary) and e.op in ("/", "max", "min"):  # terms, as egraph.py encodes
        return (e.op, [_canonical(e.a), _canonical(e.b)])
    if isinstance(e, ir.Unary) and e.op == "neg":  # -x is -1 * x, exactly (a sign flip)
        return _canonical(ir.Binary("*", ir.Const(-1.0, e.dtype), e.a))
    if isinstance(e, ir.Cast):
        return ("cast " + e.dtype, [_canonical(e.a)])
    if isinstance(e, ir.Const):
        return ("const", [repr(e.value)])
    return ("leaf", [repr(e)])  # a load, or a part the rules do not look into (as egraph.py)


def ieee_equal(a: ir.Expr, b: ir.Expr) -> bool:
    """``a`` equals ``b`` by the rules above other than factor-mul, the ones that keep NaN
    and Inf in place::

        ieee_equal(A * B + C, C + B * A)          -> True
        ieee_equal(A * B + A * C, A * (B + C))    -> False  (factor-mul)
    """
    return _canonical(a) == _canonical(b)
