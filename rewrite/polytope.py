"""Loop domains that are not boxes: the range of an affine form over a box cut by affine facts.

A triangular loop ``for j in range(i + 1)`` runs ``j`` over the box ``0..N-1`` under the
fact ``i - j >= 0`` (the parser writes it as a guard, ``script.py``). The bound check must be
exact over such a domain, where interval arithmetic over the box is not: ``X[i - j]`` under
``j <= i`` never goes below 0, while the box alone says it reaches ``-(N - 1)``.

``span(form, box, facts)`` is the smallest and largest value of ``form`` over the rational
points of ``{box} ∩ {fact >= 0 for each fact}``, rounded inwards to integers, by
Fourier-Motzkin elimination in exact fractions; None when that set is empty. It bounds the
integer points' values from outside, so a check built on it is sound whatever the facts. It
is also exact when the constraints are differences ``u - v >= c`` and bounds on one variable
(triangles, trapezoids, bands; what loop bounds written as ``range(i + 1)``, ``range(i, N)``
or ``range(j, i)`` give): such a system is totally unimodular, so its vertices, where a
linear form takes its extremes, are integer points.

Elimination multiplies constraints pairwise, so it is for the few variables and facts of a
loop nest (at most ``verify.MAX_LOOP_DEPTH`` variables), not for general programs.
"""

from __future__ import annotations

import math
from fractions import Fraction
from math import ceil, floor
from typing import Optional

import numpy as np

from .affine import Affine, affine
from .ir import INDEX, Compare, Expr, For, If, Logical, Stmt, Unary, Var

__all__ = ["conjuncts", "count", "facts", "feasible", "guarded_range", "span"]

# A constraint ``sum(coef * var) + const >= 0`` as (coefficients, const).
_Row = tuple[dict[str, Fraction], Fraction]

# Beyond this many constraints an elimination step gives up (and ``span`` answers with the
# box alone, which bounds the domain from outside too).
_MAX_ROWS = 4096

_T = "\0objective"  # a name no loop variable has


def span(form: Affine, box: dict[str, tuple[int, int]],
         facts: tuple[Affine, ...]) -> Optional[tuple[int, int]]:
    """``(lo, hi)`` of ``form`` over ``box`` (inclusive ranges per variable) and ``facts``
    (each ``>= 0``), or None when no point satisfies them all."""
    names = set(form.vars) | {v for f in facts for v in f.vars}
    rows: list[_Row] = []
    for v in sorted(names):
        lo, hi = box[v]
        rows.append(({v: Fraction(1)}, Fraction(-lo)))     # v - lo >= 0
        rows.append(({v: Fraction(-1)}, Fraction(hi)))     # hi - v >= 0
    rows.extend(_row(f) for f in facts)
    lo = _extreme(rows, form, names, box, upper=False)
    if lo is None:
        return None
    hi = _extreme(rows, form, names, box, upper=True)
    if hi is None:
        return None
    return ceil(lo), floor(hi)


# ``count`` enumerates at most this many values of all but one guarded variable.
_MAX_COUNTED = 1 << 22


def count(box: dict[str, tuple[int, int]], facts: tuple[Affine, ...]) -> int:
    """The integer points of ``box`` (inclusive ranges) where every fact is ``>= 0``: how many
    times a statement under a triangular loop's guard runs. Exact: the guarded variables but
    the widest are enumerated (numpy), and the widest counted between its bounds; the box's
    size (an upper bound) when that enumeration would pass ``_MAX_COUNTED`` values."""
    extent = {v: hi - lo + 1 for v, (lo, hi) in box.items()}
    total = math.prod(extent.values())
    guarded = sorted({v for f in facts for v in f.vars})
    if not guarded or total == 0:
        return total
    reach = max(max(abs(lo), abs(hi)) for lo, hi in box.values())
    if any(abs(f.const) + sum(abs(c) for _, c in f.terms) * reach >= 1 << 62 for f in facts):
        return total  # values past what numpy's int64 holds exactly: the box bounds them
    last = max(guarded, key=lambda v: (extent[v], v))
    rest = [v for v in guarded if v != last]
    if math.prod(extent[v] for v in rest) > _MAX_COUNTED:
        return total
    axes = np.meshgrid(*(np.arange(box[v][0], box[v][1] + 1, dtype=np.int64) for v in rest),
                       indexing="ij")
    values = {v: a.ravel() for v, a in zip(rest, axes)}
    points = math.prod(extent[v] for v in rest)
    lo = np.full(points, box[last][0], dtype=np.int64)
    hi = np.full(points, box[last][1], dtype=np.int64)
    ok = np.ones(points, dtype=bool)
    for f in facts:
        r = np.full(points, f.const, dtype=np.int64)
        for v, c in f.terms:
            if v != last:
                r = r + c * values[v]
        c = f.coeff(last)
        if c == 0:
            ok &= r >= 0
        elif c > 0:      # c * last + r >= 0: last >= ceil(-r / c)
            lo = np.maximum(lo, -(r // c))
        else:            # r - |c| * last >= 0: last <= floor(r / |c|)
            hi = np.minimum(hi, r // -c)
    runs = np.where(ok, np.maximum(hi - lo + 1, 0), 0).sum()
    return int(runs) * (total // math.prod(extent[v] for v in guarded))


def facts(cond: Expr, positive: bool = True) -> list[Affine]:
    """Affine forms ``>= 0`` that hold inside ``if cond`` (or its ``else`` when ``positive`` is
    false): one per comparison of two affine indices, ``j <= i`` giving ``i - j``, for the
    comparisons and conjunctions a branch can rely on. Anything else gives no fact, which is
    safe: the bound check then looks at more values."""
    if isinstance(cond, Logical) and cond.op == "and" and positive:
        return facts(cond.a, True) + facts(cond.b, True)
    if isinstance(cond, Unary) and cond.op == "not":
        return facts(cond.a, not positive)
    if not (isinstance(cond, Compare) and cond.a.dtype == INDEX):
        return []
    a, b = affine(cond.a, casts=False), affine(cond.b, casts=False)
    if a is None or b is None or any(not isinstance(v, str) for v in a.vars + b.vars):
        return []
    op = cond.op if positive else {"<": ">=", "<=": ">", ">": "<=", ">=": "<", "==": "!=",
                                   "!=": "=="}[cond.op]
    diff = a.plus(b.scale(-1))  # a - b
    return {"<": [diff.scale(-1).plus(Affine((), -1))], "<=": [diff.scale(-1)],
            ">": [diff.plus(Affine((), -1))], ">=": [diff], "==": [diff, diff.scale(-1)],
            "!=": []}[op]


def guarded_range(loop: For) -> Optional[tuple[list[tuple[str, Expr]], Stmt]]:
    """A loop whose body is ``if cond:`` (no ``else``) with comparisons of its variable against
    expressions of the enclosing ones (a triangular loop as the parser writes it):
    ``(bounds, body)``, each bound ``(op, e)`` meaning the body runs only where ``var op e``
    (``op`` one of ``< <= > >= ==``, the variable moved to the left), ``body`` keeping the
    comparisons that are no such bound. None when the loop is not of that form::

        for j in range(64):              bounds [("<", i + 1)],
            if j < i + 1 and A[j] > 0:   body: if A[j] > 0: ...

    ``e`` is the program's own expression, so evaluated as the program evaluates it (64-bit
    wrap-around), the bounds admit exactly the values the comparisons admit."""
    if not (isinstance(loop.body, If) and loop.body.orelse is None):
        return None
    flip = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "=="}
    bounds: list[tuple[str, Expr]] = []
    rest: list[Expr] = []
    for c in conjuncts(loop.body.cond):
        found = None
        if isinstance(c, Compare) and c.op in flip and c.a.dtype == INDEX:
            for op, v, e in ((c.op, c.a, c.b), (flip[c.op], c.b, c.a)):
                if v == Var(loop.var) and _bound_expr(e, loop.var):
                    found = (op, e)
                    break
        if found is None:
            rest.append(c)
        else:
            bounds.append(found)
    if not bounds:
        return None
    body = loop.body.then
    if rest:
        cond = rest[0]
        for c in rest[1:]:
            cond = Logical("and", cond, c)
        body = If(cond, body)
    return bounds, body


def _bound_expr(e: Expr, var: str) -> bool:
    """An index expression of loop variables and constants, not reading ``var``."""
    from .ir import Binary, Const, Var as V, walk_expr

    return all(isinstance(x, (V, Const, Binary, Unary)) and not (isinstance(x, V) and x.name == var)
               for x in walk_expr(e))


def conjuncts(cond: Expr) -> list[Expr]:
    if isinstance(cond, Logical) and cond.op == "and":
        return conjuncts(cond.a) + conjuncts(cond.b)
    return [cond]


def feasible(box: dict[str, tuple[int, int]], facts: tuple[Affine, ...]) -> bool:
    """Whether some rational point of ``box`` (inclusive ranges) satisfies every fact (``>= 0``);
    False proves that no integer point does. ``span``'s elimination in integers, without an
    objective: the dependence analysis asks this of every pair of guarded accesses. True
    where the elimination would pass ``_MAX_ROWS`` rows (the sound answer)."""
    names = sorted({v for f in facts for v in f.vars})
    index = {v: k for k, v in enumerate(names)}
    rows: set[tuple[tuple[int, ...], int]] = set()

    def add(coeffs: list[int], const: int) -> bool:
        g = math.gcd(*coeffs, const)
        if g > 1:
            coeffs, const = [c // g for c in coeffs], const // g
        if not any(coeffs):
            return const >= 0
        rows.add((tuple(coeffs), const))
        return True

    for v in names:
        lo, hi = box[v]
        unit = [0] * len(names)
        unit[index[v]] = 1
        add(unit, -lo)
        add([-c for c in unit], hi)
    for f in facts:
        coeffs = [0] * len(names)
        for v, c in f.terms:
            coeffs[index[v]] += c
        if not add(coeffs, f.const):
            return False
    for k in range(len(names)):
        pos = [r for r in rows if r[0][k] > 0]
        neg = [r for r in rows if r[0][k] < 0]
        rest = {r for r in rows if r[0][k] == 0}
        if len(rest) + len(pos) * len(neg) > _MAX_ROWS:
            return True
        rows = rest
        for pc, pk in pos:
            for nc, nk in neg:
                a, b = pc[k], -nc[k]
                if not add([b * x + a * y for x, y in zip(pc, nc)], b * pk + a * nk):
                    return False
    return True


def _row(f: Affine) -> _Row:
    return {v: Fraction(c) for v, c in f.terms}, Fraction(f.const)


def _extreme(rows: list[_Row], form: Affine, names: set[str], box: dict[str, tuple[int, int]],
             upper: bool) -> Optional[Fraction]:
    """max (``upper``) or min of ``form`` over ``rows``; None when they are infeasible."""
    # a new variable t <= form (for the max) or t >= form (for the min); once every loop
    # variable is eliminated, the rows left bound t alone
    sign = 1 if upper else -1
    link = {v: Fraction(sign * c) for v, c in form.terms}
    link[_T] = Fraction(-sign)
    system = rows + [(link, Fraction(sign * form.const))]
    for v in sorted(names):
        system = _eliminate(system, v)
        if system is None:  # too many rows: the box's own bound is the answer
            return _box_bound(box, form, upper)
    best: Optional[Fraction] = None
    for coeffs, const in system:
        c = coeffs.get(_T, Fraction(0))
        if c == 0:
            if const < 0:
                return None  # 0 <= const < 0: the domain is empty
            continue
        # c * t + const >= 0: an upper bound on t when c < 0, a lower one when c > 0
        if (c < 0) == upper:
            bound = -const / c
            best = bound if best is None or (bound < best if upper else bound > best) else best
    assert best is not None, "the box bounds every variable, so the objective is bounded"
    return best


def _eliminate(system: list[_Row], v: str) -> Optional[list[_Row]]:
    pos, neg, rest = [], [], []
    for row in system:
        c = row[0].get(v, Fraction(0))
        (pos if c > 0 else neg if c < 0 else rest).append(row)
    if len(rest) + len(pos) * len(neg) > _MAX_ROWS:
        return None
    out = set()
    for p in pos:
        for n in neg:
            a, b = p[0][v], -n[0][v]
            coeffs: dict[str, Fraction] = {}
            for row, k in ((p, b), (n, a)):
                for u, c in row[0].items():
                    if u != v:
                        coeffs[u] = coeffs.get(u, Fraction(0)) + k * c
            const = b * p[1] + a * n[1]
            out.add(_normal(coeffs, const))
    out.update(_normal(dict(r[0]), r[1]) for r in rest)
    return [(dict(c), k) for c, k in out]


def _normal(coeffs: dict[str, Fraction], const: Fraction) -> tuple:
    """A hashable row scaled so its largest coefficient is 1 (duplicates then meet)."""
    coeffs = {u: c for u, c in coeffs.items() if c}
    scale = max((abs(c) for c in coeffs.values()), default=Fraction(1))
    return tuple(sorted((u, c / scale) for u, c in coeffs.items())), const / scale


def _box_bound(box: dict[str, tuple[int, int]], form: Affine, upper: bool) -> Fraction:
    total = Fraction(form.const)
    for v, c in form.terms:
        lo, hi = box[v]
        total += c * (hi if (c > 0) == upper else lo)
    return total
