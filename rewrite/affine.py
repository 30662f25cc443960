"""Affine forms of index expressions: ``2 * i + k - 1`` is ``Affine((("i", 2), ("k", 1)), -1)``.

``affine(e)`` reads an index expression as a sum of terms, each a coefficient times an atom,
plus a constant; None when it is not of that form (``i * j``, a load, float arithmetic). An
atom is a loop variable (its name) or, where a caller admits it, a subexpression taken as a
whole (the bound check's ``(i + 1) // 8``). Collecting coefficients keeps ``i - i`` exact::

    2 * (i + 1) - i + k     ->  Affine((("i", 1), ("k", 1)), 2)

The dependence analysis, the interpreter's strided views, the bound check, the matcher and
the loop rules all read indices through this one extractor; ``Affine.bounds`` gives the
range of a form over ranges of its atoms.
"""

from __future__ import annotations

import functools

from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

from .ir import INDEX, Binary, Cast, Const, Expr, Unary, Var, is_int, walk_expr

__all__ = ["Affine", "Atom", "affine", "affine_index", "first_constants"]

# A loop variable's name, or a subexpression a caller of ``affine`` takes as one term.
Atom = Union[str, Expr]


@dataclass(frozen=True, slots=True)
class Affine:
    """``sum(coefficient * atom) + const``; no zero coefficients, ``terms`` sorted by variable
    (atoms that are subexpressions follow the variables, in the order they were met)."""

    terms: tuple[tuple[Atom, int], ...] = ()
    const: int = 0

    def coeff(self, var: Atom) -> int:
        return dict(self.terms).get(var, 0)

    @property
    def vars(self) -> tuple[Atom, ...]:
        return tuple(v for v, _ in self.terms)

    def plus(self, other: Affine) -> Affine:
        merged = dict(self.terms)
        for v, c in other.terms:
            merged[v] = merged.get(v, 0) + c
        return Affine(_terms(merged), self.const + other.const)

    def scale(self, k: int) -> Affine:
        return Affine(_terms({v: c * k for v, c in self.terms}), self.const * k)

    def bounds(self, span: Callable[[Atom], Optional[tuple[int, int]]]) -> Optional[tuple[int, int]]:
        """Smallest and largest value of the form when each atom ``a`` ranges over
        ``span(a) = (lo, hi)`` (inclusive); None when ``span`` gives None for one of them."""
        lo = hi = self.const
        for v, c in self.terms:
            r = span(v)
            if r is None:
                return None
            a, b = c * r[0], c * r[1]
            lo, hi = lo + min(a, b), hi + max(a, b)
        return lo, hi

    def to_expr(self) -> Expr:
        """The form as an index expression over loop variables: ``i + 1``, ``64 - i``,
        ``2 * j - i``."""
        out: Optional[Expr] = None
        for v, c in self.terms:
            assert isinstance(v, str), "only a form over loop variables is written back"
            term = Var(v) if abs(c) == 1 else Binary("*", Const(abs(c), INDEX), Var(v))
            if out is None:
                out = term if c > 0 else Unary("neg", term)
            else:
                out = Binary("+" if c > 0 else "-", out, term)
        if out is None:
            return Const(self.const, INDEX)
        if self.const:
            out = Binary("+" if self.const > 0 else "-", out, Const(abs(self.const), INDEX))
        return out

    def __str__(self) -> str:
        parts = [str(v) if c == 1 else f"-{v}" if c == -1 else f"{c}*{v}" for v, c in self.terms]
        if self.const or not parts:
            parts.append(str(self.const))
        return " + ".join(parts).replace("+ -", "- ")


def _order(term: tuple[Atom, int]) -> tuple:
    v = term[0]
    return (0, v) if isinstance(v, str) else (1, "")  # a stable sort keeps the atoms' order


def _terms(coeffs: dict[Atom, int]) -> tuple[tuple[Atom, int], ...]:
    return tuple(sorted(((v, c) for v, c in coeffs.items() if c), key=_order))


def affine(e: Expr, *, casts: bool = True, atom: Optional[Callable[[Expr], bool]] = None) -> Affine | None:
    """The affine form of an index expression, or None when it is not affine in loop
    variables (``//``, ``%``, ``max``, loads, float arithmetic).

    ``casts``: read through a cast to the index type of an integer expression, as the
    dependence analysis does. ``casts=False`` refuses it, for the interpreter and the bound
    check, which must agree with the wrap-around of the narrower type under the cast.
    ``atom``: a subexpression that is not affine otherwise but for which ``atom`` holds is
    one term of its own (the bound check's ``x // 8`` and ``x % 8``)."""
    if isinstance(e, Var):
        return Affine(((e.name, 1),))
    if isinstance(e, Const):
        return Affine((), e.value) if is_int(e.dtype) else None
    if isinstance(e, Unary) and e.op == "neg":
        a = affine(e.a, casts=casts, atom=atom)
        return None if a is None else a.scale(-1)
    if casts and isinstance(e, Cast) and e.dtype == INDEX and is_int(e.a.dtype):
        return affine(e.a, casts=casts, atom=atom)
    if isinstance(e, Binary) and e.op in ("+", "-", "*"):
        a, b = affine(e.a, casts=casts, atom=atom), affine(e.b, casts=casts, atom=atom)
        if a is None or b is None:
            return None
        if e.op == "+":
            return a.plus(b)
        if e.op == "-":
            return a.plus(b.scale(-1))
        if not a.terms:
            return b.scale(a.const)
        if not b.terms:
            return a.scale(b.const)
        return None  # a product of two variables
    if atom is not None and atom(e):
        return Affine(((e, 1),))
    return None


@functools.lru_cache(maxsize=1 << 16)
def affine_index(e: Expr) -> Affine | None:
    """The affine form of an index computed in the index type throughout (no casts read
    through: a narrower type under a cast wraps differently), over loop variables alone;
    else None. Two indices with forms that differ only in their constants address the same
    buffer one constant move apart (``lower._canonical``, ``match.moved_index``)."""
    if e.dtype != INDEX or any(isinstance(x, Const) and x.dtype != INDEX for x in walk_expr(e)):
        return None
    return affine(e, casts=False)


def index_range(e: Expr, ranges: dict[str, tuple[int, int]], extent: int) -> tuple[int, int]:
    """The least and greatest value of index ``e`` while each loop variable ``v`` runs over
    ``ranges[v]`` (first, last): the whole dimension, ``(0, extent - 1)``, where ``e`` is not
    affine in those variables."""
    form = affine_index(e)
    if form is None or any(v not in ranges for v, _ in form.terms):
        return 0, extent - 1
    ends = [(c * ranges[v][0], c * ranges[v][1]) for v, c in form.terms]
    return form.const + sum(min(x) for x in ends), form.const + sum(max(x) for x in ends)


def first_constants(accesses: Sequence[Sequence[Expr]]) -> Optional[tuple[int, ...]]:
    """The constants of the first of one buffer's ``accesses`` (each its indices), when every
    index of every access is affine over loop variables (``affine_index``): moving all of
    them by those constants leaves the first at 0 (``C[i, j + 512]``: (0, 512)). Else None."""
    forms = [[affine_index(i) for i in idx] for idx in accesses]
    if not forms or any(f is None for idx in forms for f in idx):
        return None
    return tuple(f.const for f in forms[0])
