"""Scalar bodies of loop nests as egglog terms, and back.

Loop structure stays out of the e-graph: a nest is an order-free set of dimensions
(``nests.py``) and only its small scalar body is encoded here, so algebra on it stays
cheap (DESIGN.md: flat AC over unrolled sums explodes; small structured bodies do not).

Every distinct load of a body becomes ``Term.load(id)`` with the id into a table of
``ir.Load`` nodes kept on the Python side; matches are read back through relations that
carry these primitive ids, never through extracted terms.

    C[i, j] += 2.0 * A[i, k] * B[k, j]
    ->  Term.fconst(2.0, "f32") * Term.load(0) * Term.load(1)     loads = [A[i, k], B[k, j]]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from egglog import Expr, StringLike, f64Like, i64Like

from . import ir
from .ir import Binary, Cast, Const, Expr as IrExpr, Load, Unary


class Term(Expr):
    """A scalar value of a loop body."""

    @classmethod
    def load(cls, ref: i64Like) -> Term: ...

    @classmethod
    def fconst(cls, value: f64Like, dtype: StringLike) -> Term: ...

    @classmethod
    def iconst(cls, value: i64Like, dtype: StringLike) -> Term: ...

    @classmethod
    def cast(cls, dtype: StringLike, a: Term) -> Term: ...

    @classmethod
    def opaque(cls, ref: i64Like) -> Term:
        """A sub-expression the rules do not look into (``exp``, ``select``, ...)."""

    def __add__(self, other: Term) -> Term: ...

    def __sub__(self, other: Term) -> Term: ...

    def __mul__(self, other: Term) -> Term: ...

    def __truediv__(self, other: Term) -> Term: ...

    def __neg__(self) -> Term: ...

    @classmethod
    def max(cls, a: Term, b: Term) -> Term: ...

    @classmethod
    def min(cls, a: Term, b: Term) -> Term: ...


_BINARY = {"+": Term.__add__, "-": Term.__sub__, "*": Term.__mul__, "/": Term.__truediv__,
           "max": Term.max, "min": Term.min}


def to_term(e: IrExpr, leaf: Callable[[IrExpr], Term]) -> Term:
    """The one translation of an IR expression into a term: constants, casts, ``+ - * /
    max min`` and negation become term nodes; loads and everything else are ``leaf(e)``."""
    if isinstance(e, Const) and ir.is_float(e.dtype):
        return Term.fconst(float(e.value), e.dtype)
    if isinstance(e, Const) and ir.is_int(e.dtype):
        return Term.iconst(int(e.value), e.dtype)
    if isinstance(e, Cast):
        return Term.cast(e.dtype, to_term(e.a, leaf))
    if isinstance(e, Binary) and e.op in _BINARY:
        return _BINARY[e.op](to_term(e.a, leaf), to_term(e.b, leaf))
    if isinstance(e, Unary) and e.op == "neg":
        return -to_term(e.a, leaf)
    return leaf(e)


@dataclass
class Encoder:
    """Encodes bodies into terms, sharing one table of loads and opaque parts."""

    loads: list[Load] = field(default_factory=list)
    opaques: list[IrExpr] = field(default_factory=list)

    def _ref(self, table: list, e) -> int:
        for k, x in enumerate(table):
            if x == e:
                return k
        table.append(e)
        return len(table) - 1

    def encode(self, e: IrExpr) -> Term:
        return to_term(e, self._leaf)

    def _leaf(self, e: IrExpr) -> Term:
        if isinstance(e, Load):
            return Term.load(self._ref(self.loads, e))
        return Term.opaque(self._ref(self.opaques, e))


def pattern(e: IrExpr, operand_vars: dict[str, Term]) -> Term:
    """The semantics body of an intrinsic as an egglog pattern: each operand's load is the
    pattern variable ``operand_vars[name]`` (a ``Term.load(x)`` with ``x`` a variable)."""
    def leaf(x: IrExpr) -> Term:
        if isinstance(x, Load):
            return operand_vars[x.buffer.name]
        raise ValueError(f"the intrinsic body {e} has no e-graph pattern")

    return to_term(e, leaf)
