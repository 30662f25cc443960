"""Accumulate nests: the places an intrinsic can run, found by normalising a function.

A function becomes a list of top-level items. An ``AccNest`` is a perfect loop nest whose
only statement is ``X[f] += e`` with ``e`` not reading ``X``: its iterations may run in any
order (reassociating the sum), so it is an order-free set of dimensions plus a body, the
form the matcher works on. Everything else is kept as it is.

Normalisation, each step exact or licensed by the dependence analysis:

- ``X[f] = X[f] + e`` and ``X[f] = e + X[f]`` are ``X[f] += e`` (its definition), and
  ``X[f] = X[f] + a + b`` is ``X[f] += a + b`` (a sum regrouped, as rewrites may);
- a guard that reads no buffer (``if j >= i:``, a triangular loop) holding several statements
  guards each of them;
- casts written in steps are one cast where the steps are exact (``rules/casts.py``);
- a loop whose body holds several statements is distributed into one loop per statement
  when ``analysis.can_distribute`` says no dependence runs backwards, or else in the order
  ``analysis.distribution_order`` finds, where the statements' dependences allow one::

      for i, j in grid(N, M):              for i, j in grid(N, M):
          C[i, j] = 0.0                        C[i, j] = 0.0
          for k in range(K):         ->    for i, j, k in grid(N, M, K):
              C[i, j] += A[i, k] * B[k, j]     C[i, j] += A[i, k] * B[k, j]
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Optional, Union

from . import analysis, ir
from .ir import Accumulate, Binary, Buffer, Expr, For, Load, PrimFunc, Seq, Stmt, Store
from .rules import casts


@dataclass(frozen=True)
class Dim:
    name: str
    start: int
    stop: int

    @property
    def extent(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class AccNest:
    """``for dims: out[indices] += value``, the dims in their written order."""

    dims: tuple[Dim, ...]
    out: Buffer
    indices: tuple[Expr, ...]
    value: Expr

    def stmt(self) -> Stmt:
        s: Stmt = Accumulate(self.out, self.indices, self.value)
        for d in reversed(self.dims):
            s = For(d.name, d.start, d.stop, s)
        return s

    @property
    def iterations(self) -> int:
        return math.prod(d.extent for d in self.dims)


Item = Union[AccNest, Stmt]


# ---------------------------------------------------------------------------
# X[f] = X[f] + e  ->  X[f] += e


def _as_accumulate(s: Store) -> Optional[Accumulate]:
    v = s.value
    if not (isinstance(v, Binary) and v.op == "+"):
        return None
    target = Load(s.buffer, s.indices)
    if v.a == target and target not in ir.walk_expr(v.b):
        return Accumulate(s.buffer, s.indices, v.b)
    if v.b == target and target not in ir.walk_expr(v.a):
        return Accumulate(s.buffer, s.indices, v.a)
    # X = X + a + b (gemver's rank-2 update): X += a + b, the sum regrouped
    terms = _sum_terms(v)
    if sum(t == target for t in terms) != 1:
        return None
    rest = [t for t in terms if t != target]
    if any(target in ir.walk_expr(t) for t in rest):
        return None
    value = rest[0]
    for t in rest[1:]:
        value = Binary("+", value, t)
    return Accumulate(s.buffer, s.indices, value)


def _sum_terms(e: Expr) -> list[Expr]:
    if isinstance(e, Binary) and e.op == "+":
        return _sum_terms(e.a) + _sum_terms(e.b)
    return [e]


def _accumulates(s: Stmt) -> Stmt:
    if isinstance(s, Store):
        return _as_accumulate(s) or s
    if isinstance(s, For):
        return replace(s, body=_accumulates(s.body))
    if isinstance(s, Seq):
        return ir.seq(*(_accumulates(c) for c in s.stmts))
    if isinstance(s, ir.If):
        return replace(s, then=_accumulates(s.then),
                       orelse=None if s.orelse is None else _accumulates(s.orelse))
    return s


# ---------------------------------------------------------------------------
# distribution


def _distribute_once(func: PrimFunc) -> Optional[PrimFunc]:
    """Distribute the first loop (pre-order) whose body holds several statements, if legal."""
    top = ir.stmts_of(func.body)
    for k, s in enumerate(top):
        for path, loop in _multis(s, (k,)):
            body = ir.stmts_of(loop.body)
            if not analysis.can_distribute(func, path):
                order = analysis.distribution_order(func, path)
                if order is None:
                    continue
                body = [body[j] for j in order]
            parts = [For(loop.var, loop.start, loop.stop, c) for c in body]
            new = _replace_at(s, path[1:], parts)
            return replace(func, body=ir.seq(*top[:k], *new, *top[k + 1:]))
    return None


def _multis(s: Stmt, path: tuple[int, ...]):
    """The loops inside ``s`` (itself included) whose body is a sequence, outermost first,
    with their paths."""
    if not isinstance(s, For):
        return
    if isinstance(s.body, Seq):
        yield path, s
    for k, c in enumerate(ir.stmts_of(s.body)):
        yield from _multis(c, path + (k,))


def _replace_at(s: Stmt, rest: tuple[int, ...], parts: list[Stmt]) -> list[Stmt]:
    if not rest:
        return parts
    assert isinstance(s, For)
    kids = ir.stmts_of(s.body)
    k = rest[0]
    return [replace(s, body=ir.seq(*kids[:k], *_replace_at(kids[k], rest[1:], parts), *kids[k + 1:]))]


def _guards_inward(s: Stmt) -> Stmt:
    """``if c: S1; S2`` as ``if c: S1`` then ``if c: S2`` when ``c`` reads no buffer (a
    triangular loop's bound): the statements cannot change it, so each runs exactly when it
    did, and a loop around them can then be distributed."""
    if isinstance(s, For):
        return replace(s, body=_guards_inward(s.body))
    if isinstance(s, Seq):
        return ir.seq(*(_guards_inward(c) for c in s.stmts))
    if isinstance(s, ir.If) and s.orelse is None and not any(ir.loads_of(s.cond)):
        inner = _guards_inward(s.then)
        if isinstance(inner, Seq):
            return ir.seq(*(ir.If(s.cond, c) for c in inner.stmts))
        return replace(s, then=inner)
    return s


def normalize(func: PrimFunc, max_steps: int = 64) -> PrimFunc:
    """``func`` with ``+=`` made explicit, guards that read no buffer moved onto each
    statement they hold, and loops distributed as far as legal."""
    func = replace(func, body=_guards_inward(_accumulates(func.body)))
    for _ in range(max_steps):
        nxt = _distribute_once(func)
        if nxt is None:
            break
        func = nxt
    return func


# ---------------------------------------------------------------------------
# items


def as_nest(s: Stmt) -> Optional[AccNest]:
    dims = []
    while isinstance(s, For):
        dims.append(Dim(s.var, s.start, s.stop))
        s = s.body
    if not dims or not isinstance(s, Accumulate):
        return None
    if any(load.buffer.name == s.buffer.name for load in ir.loads_of(s.value)):
        return None  # the body reads what it accumulates: iterations are not reorderable
    return AccNest(tuple(dims), s.buffer, s.indices, casts.normalize_casts(s.value))


def items(func: PrimFunc) -> list[Item]:
    """The top-level items of a normalised function."""
    return [as_nest(s) or s for s in ir.stmts_of(func.body)]
