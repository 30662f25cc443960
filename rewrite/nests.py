"""Accumulate nests: the places an intrinsic can run, found by normalising a function.

A function becomes a list of top-level items. An ``AccNest`` is a perfect loop nest whose
only statement is ``X[f] += e`` with ``e`` not reading ``X``: its iterations may run in any
order (reassociating the sum), so it is an order-free set of dimensions plus a body, the
form the matcher works on. Everything else is kept as it is.

Normalisation, each step exact, a reassociated sum, or licensed by the dependence analysis:

- ``X[f] = X[f] + e`` and ``X[f] = e + X[f]`` are ``X[f] += e`` (its definition), and
  ``X[f] = X[f] - e`` is ``X[f] += -e`` (``a - b`` is ``a + -b`` in IEEE arithmetic and in
  wrap-around integers, as ``-=`` is read); where ``X[f]`` is one added term of a longer sum
  (``X[f] = X[f] + a + b``, ``X[f] = a + X[f] - b``) the other terms are what is added,
  ``X[f] += a + b``, regrouped from ``(X + a) + b``: the licence of a reordered reduction.
  Never when another term reads ``X[f]`` too;
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

    def __hash__(self) -> int:
        """The fields' hash, computed once: the extractor keys its tables by nests, and an
        expression tree hashes all its nodes every time (``_cached_hash``)."""
        return _cached_hash(self, (self.dims, self.out, self.indices, self.value))

    def __getstate__(self) -> dict:
        return _without_hash(self)

    def stmt(self) -> Stmt:
        s: Stmt = Accumulate(self.out, self.indices, self.value)
        for d in reversed(self.dims):
            s = For(d.name, d.start, d.stop, s)
        return s

    @property
    def iterations(self) -> int:
        return math.prod(d.extent for d in self.dims)

    @property
    def out_vars(self) -> frozenset[str]:
        """The loop variables the output's indices use."""
        return frozenset().union(*(ir.var_names(i) for i in self.indices))

    @property
    def outer(self) -> tuple[Dim, ...]:
        """The dims the output's indices use, in the nest's order (the others are its
        reduction)."""
        used = self.out_vars
        return tuple(d for d in self.dims if d.name in used)


Item = Union[AccNest, Stmt]


def _cached_hash(obj, fields: tuple) -> int:
    """``hash(fields)``, kept in ``obj`` (a frozen dataclass with a ``__dict__``) after the
    first call. Not pickled (``_without_hash``): string hashes differ between processes."""
    h = obj.__dict__.get("_hash")
    if h is None:
        h = hash(fields)
        object.__setattr__(obj, "_hash", h)
    return h


def _without_hash(obj) -> dict:
    return {k: v for k, v in obj.__dict__.items() if k != "_hash"}


# ---------------------------------------------------------------------------
# X[f] = X[f] + e  ->  X[f] += e


_MISSING = object()


def _without(e: Expr, target: Load):
    """``e``, a sum holding ``target`` as one of its added (not subtracted) terms, with that
    term taken out: what is added to ``target``. ``None`` when ``e`` is ``target`` itself
    (nothing is left), ``_MISSING`` when ``target`` is no such term."""
    if e == target:
        return None
    if not (isinstance(e, Binary) and e.op in ("+", "-")):
        return _MISSING
    rest = _without(e.a, target)
    if rest is not _MISSING:  # target + b, target - b, or target deeper in a
        if rest is None:
            return e.b if e.op == "+" else ir.Unary("neg", e.b)
        return Binary(e.op, rest, e.b)
    if e.op == "+":
        rest = _without(e.b, target)
        if rest is not _MISSING:
            return e.a if rest is None else Binary("+", e.a, rest)
    return _MISSING


def _as_accumulate(s: Store) -> Optional[Accumulate]:
    target = Load(s.buffer, s.indices)
    rest = _without(s.value, target)
    if rest is _MISSING or rest is None or target in ir.walk_expr(rest):
        return None
    return Accumulate(s.buffer, s.indices, rest)


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


def blocked(func: PrimFunc) -> list[tuple[tuple[int, ...], For]]:
    """Per top-level statement, the first loop (pre-order) holding several statements that
    the dependence analysis does not let ``normalize`` distribute in any order: ``(path,
    loop)``. Empty on a normalised function whose every such loop was distributed."""
    out = []
    for k, s in enumerate(ir.stmts_of(func.body)):
        for path, loop in _multis(s, (k,)):
            if not analysis.can_distribute(func, path) and analysis.distribution_order(func, path) is None:
                out.append((path, loop))
                break
    return out


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
