"""Dependence analysis: affine accesses, direction vectors, loop classes, and a legality oracle.

Paths. A statement is named by its path from the function body, since loop variables may
repeat in sibling loops. The k-th statement of a body (the function's, a loop's) adds ``k``;
inside an ``if``, the branch (0 then, 1 else) comes before the position within it::

    for i in range(8):          # (0,)
        T[i] = X[i]             # (0, 0)
        if i > 0:               # (0, 1)
            Y[i] = T[i - 1]     # (0, 1, 0, 0)
    for i in range(8): ...      # (1,)

Directions. For accesses ``a`` and ``b`` and the loops they share, a direction vector holds,
per shared loop, how ``b``'s iteration compares with ``a``'s: ``<`` (b runs in a later
iteration), ``=``, ``>``, or ``*`` (any of the three may hold). A ``Dependence`` is oriented
from the access that runs first; its first component other than ``=`` is never ``*``.

Cost. The set of direction vectors can be exponential in the depth (``B[0] += A[k]`` in a nest
of depth n has all 3^n), so it is never enumerated blindly: loops that no equation couples are
refined apart (the feasible set is a product over groups of coupled loops), a group's
refinement stops after ``REFINE_LIMIT`` tests (the untested rest becomes ``*``), and a set
of more than ``DIRECTION_LIMIT`` vectors is summarised by one vector per carrying loop and
direction, later components becoming ``*`` where they differ. Both only lose precision, in the
sound direction; a pair of accesses costs polynomial time in the depth.

Soundness. Whenever an answer is uncertain the analysis assumes a dependence: indices with
``//``, ``%`` or loads, conditions of ``if`` (a guarded write is assumed to happen, except
that comparisons of affine indices, a triangular loop's bounds, are facts every dependence
must satisfy: ``_within_guards``), and
coupled subscripts on large iteration spaces (GCD and Banerjee bounds are tested per
dimension) all err towards "carried" and "not legal". Small spaces (``ENUMERATION_LIMIT``
instance pairs) are enumerated, which is exact for any index expression without loads.

Reductions. A loop is a reduction only when everything it carries is ``+=`` into the same
element, so ``C[i, j] = max(C[i, j], A[i, k] + B[k, j])`` makes ``k`` *carried*: max is as
reorderable as ``+``, but the IR cannot tell a max-reduction from any other read-then-write.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Iterator, Sequence

import numpy as np

from . import polytope
from .affine import Affine, affine  # the accesses' index maps; re-exported
from .ir import (INDEX, Accumulate, Binary, Buffer, Call, Cast, Const, Expr, For, If, PrimFunc,
                 Seq, Stmt, Store, Unary, Var, is_int, loads_of, stmts_of, walk_stmts)
from .printer import show_expr

__all__ = ["Access", "Affine", "Analysis", "Dependence", "Loop", "LoopInfo", "Reuse", "SplitCheck",
           "accesses", "affine", "analyze", "can_distribute", "can_fuse", "can_interchange",
           "can_parallelize", "can_permute", "can_split", "covers", "dependences", "describe",
           "direction_summary", "directions", "distribution_blockers", "filled_before_read",
           "find_loop", "loop_at",
           "loop_info", "loops", "reused", "stmt_at", "written_before_read"]

Path = tuple[int, ...]

DIRECTIONS = ("<", "=", ">")

# Pairs of instances up to which two accesses are compared element by element (exact).
ENUMERATION_LIMIT = 1 << 18
# Direction vectors kept exact per pair of accesses; more are summarised per carrying loop.
DIRECTION_LIMIT = 256
# Feasibility tests spent refining one group of coupled loops; past it the rest stays ``*``.
REFINE_LIMIT = 256
# In all, for one function (``analyze``): instance pairs enumerated and feasibility tests
# spent. Past either, the remaining pairs of accesses get the cheaper, coarser answer (GCD
# and Banerjee without enumeration; ``*`` without refinement), so that a function of many
# statements costs bounded time per pair.
ENUMERATION_BUDGET = 1 << 26
REFINE_BUDGET = 1 << 16


@dataclass
class _Effort:
    """What is left of ``ENUMERATION_BUDGET`` and ``REFINE_BUDGET`` for one function, and
    what was computed per access, so that each pair of accesses does not redo it."""

    enumerated: int = ENUMERATION_BUDGET
    tests: int = REFINE_BUDGET
    memo: dict = field(default_factory=dict)

    def of(self, what, access: "Access"):
        """``what(access)``, computed once (the memo holds the access, so its id stays its own)."""
        hit = self.memo.get((what, id(access)))
        if hit is None or hit[0] is not access:
            hit = self.memo[(what, id(access))] = (access, what(access))
        return hit[1]


# ---------------------------------------------------------------------------
# statements by path


@dataclass(frozen=True, slots=True)
class Loop:
    """A loop as seen from an access inside it."""

    path: Path
    var: str
    start: int
    stop: int

    @property
    def extent(self) -> int:
        return max(0, self.stop - self.start)


def _children(s: Stmt) -> list[tuple[Path, Stmt]]:
    if isinstance(s, For):
        return [((k,), c) for k, c in enumerate(stmts_of(s.body))]
    if isinstance(s, Seq):
        return [((k,), c) for k, c in enumerate(s.stmts)]
    if isinstance(s, If):
        branches = [s.then] + ([] if s.orelse is None else [s.orelse])
        return [((b, k), c) for b, branch in enumerate(branches) for k, c in enumerate(stmts_of(branch))]
    return []


def stmt_at(func: PrimFunc, path: Path) -> Stmt:
    """The statement at ``path``; ValueError when there is none."""
    level = [((k,), c) for k, c in enumerate(stmts_of(func.body))]
    rest = tuple(path)
    while rest:
        for sub, s in level:
            if rest[:len(sub)] == sub:
                rest = rest[len(sub):]
                if not rest:
                    return s
                level = _children(s)
                break
        else:
            break
    raise ValueError(f"{func.name}: no statement at path {tuple(path)}")


def loop_at(func: PrimFunc, path: Path) -> For:
    s = stmt_at(func, path)
    if not isinstance(s, For):
        raise ValueError(f"{func.name}: the statement at path {tuple(path)} is not a loop")
    return s


def find_loop(func: PrimFunc, var: str) -> Path:
    """The path of the only loop over ``var``; ValueError when there are none or several."""
    found = [info.path for info in loops(func) if info.var == var]
    if len(found) != 1:
        raise ValueError(f"{func.name}: {len(found)} loops over {var!r}, expected exactly one")
    return found[0]


# ---------------------------------------------------------------------------
# accesses


@dataclass(frozen=True, slots=True)
class Access:
    """One load, store or ``+=`` of a buffer element, with its loops and affine index maps.

    ``order`` is the access's rank in execution order within one iteration of all its loops
    (a statement's loads come before its write), so it orders loop-independent dependences.
    """

    order: int
    path: Path
    buffer: Buffer
    kind: str  # "read", "write" or "accumulate"
    loops: tuple[Loop, ...]
    indices: tuple[Expr, ...]
    maps: tuple[Affine | None, ...]
    stmt: Stmt = field(compare=False, repr=False)
    # affine forms of its loops' variables, each >= 0 wherever it runs: what the conditions
    # of the ``if``s around it say about them (``polytope.facts``; a triangular loop's bound)
    facts: tuple[Affine, ...] = field(default=(), compare=False, repr=False)

    @property
    def writes(self) -> bool:
        return self.kind != "read"

    @property
    def is_affine(self) -> bool:
        return all(m is not None for m in self.maps)

    @property
    def element(self) -> str:
        """The element in script syntax, e.g. ``C[i, j]``."""
        return f"{self.buffer.name}[{', '.join(show_expr(i) for i in self.indices)}]"

    def __str__(self) -> str:
        return self.element + {"read": "", "write": " =", "accumulate": " +="}[self.kind]


def accesses(func: PrimFunc) -> list[Access]:
    """Every buffer access, in execution order, including loads in conditions and selects."""
    out: list[Access] = []

    facts: tuple[Affine, ...] = ()

    def add(path: Path, stmt: Stmt, buffer: Buffer, kind: str, loops_: tuple[Loop, ...],
            indices: tuple[Expr, ...]) -> None:
        maps = tuple(affine(i) for i in indices)
        out.append(Access(len(out), path, buffer, kind, loops_, indices, maps, stmt, facts))

    def add_loads(path: Path, stmt: Stmt, loops_: tuple[Loop, ...], exprs: Sequence[Expr]) -> None:
        for e in exprs:
            for load in loads_of(e):
                add(path, stmt, load.buffer, "read", loops_, load.indices)

    def visit(s: Stmt, path: Path, loops_: tuple[Loop, ...]) -> None:
        nonlocal facts
        if isinstance(s, For):
            loops_ = loops_ + (Loop(path, s.var, s.start, s.stop),)
        elif isinstance(s, If):
            add_loads(path, s, loops_, (s.cond,))
        elif isinstance(s, (Store, Accumulate)):
            add_loads(path, s, loops_, s.indices + (s.value,))
            kind = "write" if isinstance(s, Store) else "accumulate"
            add(path, s, s.buffer, kind, loops_, s.indices)
        outer = facts
        for sub, c in _children(s):
            if isinstance(s, If):  # sub[0] is the branch: 0 then, 1 else
                facts = outer + tuple(polytope.facts(s.cond, sub[0] == 0))
            visit(c, path + sub, loops_)
        facts = outer

    for k, s in enumerate(stmts_of(func.body)):
        visit(s, (k,), ())
    return out


# ---------------------------------------------------------------------------
# the dependence test
#
# Accesses a (iterations I over a.loops) and b (J over b.loops) with their first `aligned`
# loops running in step: the loops they share, or two sibling loops about to be fused. For
# each affine dimension: sum(alpha*I) - sum(beta*J) == rhs.


@dataclass(frozen=True, slots=True)
class _Equation:
    alpha: tuple[int, ...]
    beta: tuple[int, ...]
    rhs: int


def _coefficients(access: Access, m: Affine) -> tuple[int, ...] | None:
    coeffs = [0] * len(access.loops)
    for var, c in m.terms:
        # the innermost loop of that name binds it
        k = next((k for k in reversed(range(len(access.loops))) if access.loops[k].var == var), None)
        if k is None:
            return None
        coeffs[k] += c
    return tuple(coeffs)


def _rows(access: Access) -> tuple[tuple[int, ...] | None, ...]:
    """Per index dimension, its coefficients per loop of ``access`` (None: not affine)."""
    return tuple(None if m is None else _coefficients(access, m) for m in access.maps)


def _equations(a: Access, b: Access, effort: _Effort | None = None) -> list[_Equation]:
    """One equation per dimension both sides index affinely; the others constrain nothing."""
    effort = _Effort() if effort is None else effort
    eqs = []
    for ma, mb, alpha, beta in zip(a.maps, b.maps, effort.of(_rows, a), effort.of(_rows, b)):
        if alpha is not None and beta is not None:
            eqs.append(_Equation(alpha, beta, mb.const - ma.const))
    return eqs


def _gcd_ok(eq: _Equation, dirs: Sequence[str]) -> bool:
    n = len(dirs)
    coeffs = [c for k, x in enumerate(eq.alpha) for c in
              ([x - eq.beta[k]] if k < n and dirs[k] == "=" else [x] if k >= n else [x, eq.beta[k]])]
    coeffs += eq.beta[n:]
    g = math.gcd(*coeffs) if coeffs else 0
    return eq.rhs == 0 if g == 0 else eq.rhs % g == 0


def _pair_range(x: int, y: int, lo: int, hi: int, d: str) -> tuple[int, int]:
    """Bounds of x*I - y*J for I, J in [lo, hi] related by d (corners of the region)."""
    corners = {"*": [(lo, lo), (lo, hi), (hi, lo), (hi, hi)],
               "=": [(lo, lo), (hi, hi)],
               "<": [(lo, lo + 1), (lo, hi), (hi - 1, hi)],
               ">": [(lo + 1, lo), (hi, lo), (hi, hi - 1)]}[d]
    values = [x * i - y * j for i, j in corners]
    return min(values), max(values)


def _banerjee_ok(eq: _Equation, a: Access, b: Access, dirs: Sequence[str]) -> bool:
    lo = hi = 0
    for k, loop in enumerate(a.loops):
        if k < len(dirs):
            l, h = _pair_range(eq.alpha[k], eq.beta[k], loop.start, loop.stop - 1, dirs[k])
        else:
            l, h = sorted((eq.alpha[k] * loop.start, eq.alpha[k] * (loop.stop - 1)))
        lo, hi = lo + l, hi + h
    for k in range(len(dirs), len(b.loops)):
        loop = b.loops[k]
        l, h = sorted((-eq.beta[k] * loop.start, -eq.beta[k] * (loop.stop - 1)))
        lo, hi = lo + l, hi + h
    return lo <= eq.rhs <= hi


def _feasible(eqs: list[_Equation], a: Access, b: Access, dirs: Sequence[str]) -> bool:
    if any(d in "<>" and a.loops[k].extent < 2 for k, d in enumerate(dirs)):
        return False
    return all(_gcd_ok(eq, dirs) and _banerjee_ok(eq, a, b, dirs) for eq in eqs)


def _groups(eqs: list[_Equation], aligned: int) -> list[tuple[int, ...]]:
    """The aligned loops partitioned into groups that equations couple (union-find); a loop
    no equation uses is a group of its own. The feasible directions are their product."""
    parent = list(range(aligned))

    def root(k: int) -> int:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    for eq in eqs:
        used = [k for k in range(aligned) if eq.alpha[k] or eq.beta[k]]
        for k in used[1:]:
            parent[root(k)] = root(used[0])
    groups: dict[int, list[int]] = {}
    for k in range(aligned):
        groups.setdefault(root(k), []).append(k)
    return [tuple(g) for g in groups.values()]


def _refine_group(eqs: list[_Equation], a: Access, b: Access, aligned: int,
                  dims: tuple[int, ...], effort: _Effort) -> list[tuple[str, ...]]:
    """Directions of the loops ``dims`` (the others ``*``) GCD and Banerjee cannot rule out,
    refined one loop at a time; after ``REFINE_LIMIT`` tests the untested rest is ``*``."""
    used = [eq for eq in eqs if any(eq.alpha[k] or eq.beta[k] for k in dims)]
    found: list[tuple[str, ...]] = []
    tests = [0]
    allowed = min(REFINE_LIMIT, effort.tests)

    def go(prefix: tuple[str, ...]) -> None:
        full = ["*"] * aligned
        for k, d in zip(dims, prefix):
            full[k] = d
        tests[0] += 1
        if not _feasible(used, a, b, full):
            return
        if len(prefix) == len(dims) or tests[0] >= allowed:
            found.append(prefix + ("*",) * (len(dims) - len(prefix)))
            return
        # "=" first: under the limit, the vectors left unrefined then are those whose carrier
        # is already known (a "<" or ">" further out), which is what loop classes need
        for d in ("=", "<", ">"):
            go(prefix + (d,))

    go(())
    effort.tests -= tests[0]
    return found


def _refine(a: Access, b: Access, aligned: int, effort: _Effort) -> frozenset[tuple[str, ...]]:
    """Direction vectors GCD and Banerjee cannot rule out, refined per group of coupled loops."""
    eqs = _equations(a, b, effort)
    if not _feasible(eqs, a, b, ("*",) * aligned):
        return frozenset()
    groups = [(dims, _refine_group(eqs, a, b, aligned, dims, effort)) for dims in _groups(eqs, aligned)]
    if math.prod(len(v) for _, v in groups) <= DIRECTION_LIMIT:
        out = set()
        for choice in itertools.product(*(v for _, v in groups)):
            vector = ["="] * aligned
            for (dims, _), part in zip(groups, choice):
                for k, d in zip(dims, part):
                    vector[k] = d
            out.add(tuple(vector))
        return frozenset(out)
    return _summary([(dims, _codes(v)) for dims, v in groups], aligned)


# Direction components as small integers for the numpy summary below.
_CODE = {"<": 0, "=": 1, ">": 2, "*": 3}
_SYMBOL = "<=>*"


def _codes(vectors) -> np.ndarray:
    return np.array([[_CODE[d] for d in v] for v in vectors], dtype=np.int8).reshape(len(vectors), -1)


def _summary(groups: list[tuple[tuple[int, ...], np.ndarray]], aligned: int) -> frozenset[tuple[str, ...]]:
    """One vector per carrier standing for the product of the groups' vectors: for each loop p
    and direction d in ``<``, ``>``, the vectors ``=`` before p and d at p, summarised (later
    components ``*`` where they differ); and the all-``=`` vector if present. A superset of the
    product, exact up to the carrier, at most ``2 * aligned + 1`` vectors.

    ``groups``: the loops each group covers and its vectors (rows of ``_CODE`` values)."""
    eq, star = _CODE["="], _CODE["*"]
    out = set()
    for p in list(range(aligned)) + [aligned]:
        for d in (("<", ">") if p < aligned else ("=",)):
            tail: list[set[int]] = [set() for _ in range(aligned)]
            for dims, rows in groups:
                cols = np.array(dims)
                before, at = cols < p, cols == p
                ok = np.all((rows[:, before] == eq) | (rows[:, before] == star), axis=1)
                if at.any():
                    ok &= np.any((rows[:, at] == _CODE[d]) | (rows[:, at] == star), axis=1)
                kept = rows[ok]
                if kept.shape[0] == 0:
                    break
                for j, k in enumerate(dims):
                    tail[k].update(np.unique(kept[:, j]).tolist())
            else:
                out.add(tuple("=" if k < p else d if k == p else
                              (_SYMBOL[next(iter(tail[k]))] if len(tail[k]) == 1 else "*")
                              for k in range(aligned)))
    return frozenset(out)


def _eval_index(e: Expr, env: dict[str, np.ndarray]) -> np.ndarray | None:
    """Index expression over every instance; None when it reads memory or is not integer."""
    if isinstance(e, Var):
        return env.get(e.name)
    if isinstance(e, Const):
        return np.int64(e.value) if is_int(e.dtype) else None
    if isinstance(e, Unary) and e.op in ("neg", "abs"):
        a = _eval_index(e.a, env)
        return None if a is None else (-a if e.op == "neg" else np.abs(a))
    if isinstance(e, Cast) and e.dtype == INDEX and is_int(e.a.dtype):
        return _eval_index(e.a, env)
    if isinstance(e, Binary) and e.op in ("+", "-", "*", "//", "%", "max", "min"):
        a, b = _eval_index(e.a, env), _eval_index(e.b, env)
        if a is None or b is None:
            return None
        if e.op in ("//", "%"):
            safe = np.where(b == 0, 1, b)  # the IR defines x // 0 == x % 0 == 0
            q = np.floor_divide(a, safe) if e.op == "//" else np.mod(a, safe)
            return np.where(b == 0, 0, q)
        ops = {"+": np.add, "-": np.subtract, "*": np.multiply, "max": np.maximum, "min": np.minimum}
        return ops[e.op](a, b)
    return None


def _instances(access: Access) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """Loop values and index values of every instance of an access (flattened)."""
    n = math.prod(l.extent for l in access.loops)
    flat = np.arange(n, dtype=np.int64)
    grids, inner = [], 1  # row-major: the last loop varies fastest
    for l in reversed(access.loops):
        grids.append(l.start + (flat // inner) % l.extent)
        inner *= l.extent
    grids.reverse()
    env = {l.var: g for l, g in zip(access.loops, grids)}  # later (inner) loops shadow outer
    indices = []
    for e in access.indices:
        v = _eval_index(e, env)
        if v is None:
            return grids, None
        indices.append(np.broadcast_to(v, (n,)))
    return grids, indices


def _enumerate(a: Access, b: Access, aligned: int, limit: int,
               effort: _Effort) -> frozenset[tuple[str, ...]] | None:
    """Exact direction vectors by comparing every pair of instances; None when too many."""
    na = math.prod(l.extent for l in a.loops)
    nb = math.prod(l.extent for l in b.loops)
    if na * nb > limit:
        return None
    loops_a, idx_a = effort.of(_instances, a)
    loops_b, idx_b = effort.of(_instances, b)
    if idx_a is None or idx_b is None:
        return None
    same = np.ones((na, nb), dtype=bool)
    for x, y in zip(idx_a, idx_b):
        same &= x[:, None] == y[None, :]
    pa, pb = np.nonzero(same)
    if pa.size == 0:
        return frozenset()
    if aligned == 0:
        return frozenset({()})
    # 0, 1, 2 for <, =, > (the codes of _CODE)
    codes = np.stack([1 - np.sign(loops_b[k][pb] - loops_a[k][pa]) for k in range(aligned)], axis=1)
    rows = np.unique(codes.astype(np.int8), axis=0)
    if rows.shape[0] > DIRECTION_LIMIT:
        return _summary([(tuple(range(aligned)), rows)], aligned)
    return frozenset(tuple(_SYMBOL[c] for c in row) for row in rows.tolist())


def directions(a: Access, b: Access, aligned: int | None = None, limit: int | None = None,
               effort: _Effort | None = None) -> frozenset[tuple[str, ...]]:
    """Direction vectors (b's iteration against a's, per aligned loop) for which some instance
    of ``a`` and some instance of ``b`` touch the same element. Empty: independent.

    ``aligned`` defaults to the loops both accesses are in; a larger value pairs a's and b's
    next loops as if they were one (the loops must have equal ranges), which is how fusion
    is tested. Reads against reads are compared too: this is about elements, not order.
    A component ``*`` stands for all three directions (some of which may be infeasible).
    ``effort``: the allowance left for the function the pair belongs to (spent here).
    """
    if aligned is None:
        aligned = _common(a, b)
    if any((x.start, x.stop) != (y.start, y.stop) for x, y in zip(a.loops[:aligned], b.loops[:aligned])):
        raise ValueError("aligned loops must have equal ranges")
    if a.buffer.name != b.buffer.name or any(l.extent == 0 for l in a.loops + b.loops):
        return frozenset()
    effort = _Effort() if effort is None else effort
    limit = min(ENUMERATION_LIMIT if limit is None else limit, effort.enumerated)
    exact = _enumerate(a, b, aligned, limit, effort)
    if exact is not None:
        effort.enumerated -= math.prod(l.extent for l in a.loops) * math.prod(l.extent for l in b.loops)
        found = exact
    else:
        found = _refine(a, b, aligned, effort)
    if a.facts or b.facts:
        found = _within_guards(a, b, aligned, found)
    return found


# A vector with more ``*`` than this is kept whole by ``_within_guards``, not split.
_GUARD_SPLIT_STARS = 4


def _within_guards(a: Access, b: Access, aligned: int,
                   vectors: frozenset[tuple[str, ...]]) -> frozenset[tuple[str, ...]]:
    """The vectors for which instances of ``a`` and ``b`` that their guards admit can touch one
    element, each ``*`` split into its three directions where there are few: the equations
    of the indices, the loops' ranges, the directions and the guards' facts must have a
    rational solution (``polytope.span``; none means no integer one either, so dropping the
    vector is sound)."""
    out = set()
    for v in vectors:
        stars = [k for k, d in enumerate(v) if d == "*"]
        if len(stars) > _GUARD_SPLIT_STARS:
            out.add(v)
            continue
        for picks in itertools.product("<=>", repeat=len(stars)):
            w = list(v)
            for k, d in zip(stars, picks):
                w[k] = d
            if _guards_admit(a, b, aligned, tuple(w)):
                out.add(tuple(w))
    return frozenset(out)


def _guards_admit(a: Access, b: Access, aligned: int, vector: tuple[str, ...]) -> bool:
    names_a = {l.var: f"a{k}" for k, l in enumerate(a.loops)}  # the innermost of a name wins
    names_b = {l.var: f"b{k}" for k, l in enumerate(b.loops)}
    box = {f"a{k}": (l.start, l.stop - 1) for k, l in enumerate(a.loops)}
    box.update({f"b{k}": (l.start, l.stop - 1) for k, l in enumerate(b.loops)})

    def renamed(f: Affine, names: dict[str, str]) -> Affine | None:
        if any(not isinstance(v, str) or v not in names for v in f.vars):
            return None
        return Affine(tuple(sorted((names[v], c) for v, c in f.terms)), f.const)

    facts = []
    for f, names in [(f, names_a) for f in a.facts] + [(f, names_b) for f in b.facts]:
        g = renamed(f, names)
        if g is not None:
            facts.append(g)
    for ma, mb in zip(a.maps, b.maps):
        fa = None if ma is None else renamed(ma, names_a)
        fb = None if mb is None else renamed(mb, names_b)
        if fa is not None and fb is not None:
            diff = fa.plus(fb.scale(-1))
            facts += [diff, diff.scale(-1)]
    for k, d in enumerate(vector[:aligned]):
        step = Affine(tuple(sorted(((f"b{k}", 1), (f"a{k}", -1)))), 0)  # b's iteration - a's
        if d == "<":
            facts.append(step.plus(Affine((), -1)))
        elif d == ">":
            facts.append(step.scale(-1).plus(Affine((), -1)))
        elif d == "=":
            facts += [step, step.scale(-1)]
    return polytope.feasible(box, tuple(facts))


def direction_summary(vectors: frozenset[tuple[str, ...]]) -> tuple[str, ...]:
    """One vector standing for several: a component they disagree on becomes ``*``."""
    if not vectors:
        raise ValueError("no direction vectors: the accesses are independent")
    return tuple(col[0] if len(set(col)) == 1 else "*" for col in zip(*sorted(vectors)))


def _common(a: Access, b: Access) -> int:
    n = 0
    while n < min(len(a.loops), len(b.loops)) and a.loops[n].path == b.loops[n].path:
        n += 1
    return n


# ---------------------------------------------------------------------------
# dependences


@dataclass(frozen=True, slots=True)
class Dependence:
    """``sink`` touches an element ``source`` touched earlier, at least one of them writing.

    ``direction`` has one entry per common loop (``loops``): how the sink's iteration compares
    with the source's. ``distance`` is the sink's iteration minus the source's where it is a
    known constant (``=`` gives 0), else None.
    """

    source: Access
    sink: Access
    loops: tuple[Loop, ...]
    direction: tuple[str, ...]
    distance: tuple[int | None, ...]

    @property
    def kind(self) -> str:
        """``flow``, ``anti``, ``output``, or ``accumulate`` (``+=`` after ``+=``)."""
        if self.source.kind == self.sink.kind == "accumulate":
            return "accumulate"
        if self.source.writes and self.sink.writes:
            return "output"
        return "flow" if self.source.writes else "anti"

    @property
    def carrier(self) -> int | None:
        """Position in ``loops`` of the loop that carries it; None when loop-independent."""
        return next((k for k, d in enumerate(self.direction) if d != "="), None)

    def __str__(self) -> str:
        return f"{self.kind} {self.source} -> {self.sink} ({', '.join(self.direction)})"


def _distances(a: Access, b: Access, aligned: int, effort: _Effort) -> dict[int, int]:
    """J - I per loop that an equation pins alone, with equal coefficients (strong SIV)."""
    known = {}
    for eq in _equations(a, b, effort):
        used = [k for k in range(max(len(eq.alpha), len(eq.beta)))
                if (k < len(eq.alpha) and eq.alpha[k]) or (k < len(eq.beta) and eq.beta[k])]
        if len(used) == 1 and used[0] < aligned:
            k = used[0]
            if eq.alpha[k] == eq.beta[k] and eq.rhs % eq.alpha[k] == 0:
                known[k] = -eq.rhs // eq.alpha[k]
    return known


def _flip(v: tuple[str, ...]) -> tuple[str, ...]:
    return tuple({"<": ">", ">": "<", "=": "=", "*": "*"}[d] for d in v)


def _leading(v: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
    """``v`` split until its first component other than ``=`` is ``<`` or ``>`` (or none is):
    a leading ``*`` becomes ``<``, ``>`` and ``=`` followed by the rest, split again."""
    for k, d in enumerate(v):
        if d == "=":
            continue
        if d != "*":
            break
        yield v[:k] + ("<",) + v[k + 1:]
        yield v[:k] + (">",) + v[k + 1:]
        v = v[:k] + ("=",) + v[k + 1:]
    yield v


def _pair_dependences(a: Access, b: Access, limit: int, effort: _Effort) -> Iterator[Dependence]:
    """Dependences between ``a`` and ``b`` (``a.order <= b.order``), oriented by execution."""
    n = _common(a, b)
    known = _distances(a, b, n, effort)
    for v in (w for u in directions(a, b, n, limit, effort) for w in _leading(u)):
        dist = tuple(0 if d == "=" else None if d == "*" else known.get(k) for k, d in enumerate(v))
        first = next((d for d in v if d != "="), "=")
        if first == "<" or (first == "=" and a.order < b.order):
            yield Dependence(a, b, a.loops[:n], v, dist)
        elif first == ">":
            yield Dependence(b, a, a.loops[:n], _flip(v), tuple(None if x is None else -x for x in dist))


# ---------------------------------------------------------------------------
# loop classes


@dataclass(frozen=True, slots=True)
class LoopInfo:
    """A loop and its class: ``parallel`` (carries no dependence), ``reduction`` (carries only
    ``+=`` into the same element) or ``carried``; ``reason`` names what it carries."""

    path: Path
    var: str
    start: int
    stop: int
    depth: int
    kind: str
    reason: str = ""

    @property
    def extent(self) -> int:
        return max(0, self.stop - self.start)


@dataclass(frozen=True)
class Analysis:
    func: PrimFunc
    accesses: tuple[Access, ...]
    dependences: tuple[Dependence, ...]
    loops: tuple[LoopInfo, ...]


def _all_loops(func: PrimFunc) -> Iterator[tuple[Path, For, int]]:
    def visit(s: Stmt, path: Path, depth: int) -> Iterator[tuple[Path, For, int]]:
        if isinstance(s, For):
            yield path, s, depth
            depth += 1
        for sub, c in _children(s):
            yield from visit(c, path + sub, depth)

    for k, s in enumerate(stmts_of(func.body)):
        yield from visit(s, (k,), 0)


def _classify(path: Path, loop: For, depth: int, carried: Sequence[Dependence]) -> LoopInfo:
    """The class of a loop from the dependences it carries."""
    blocking = [d for d in carried if d.kind != "accumulate"]
    if blocking:
        kind, reason = "carried", str(blocking[0])
    elif carried:
        kind, reason = "reduction", "+= into " + ", ".join(sorted({d.sink.element for d in carried}))
    else:
        kind, reason = "parallel", ""
    return LoopInfo(path, loop.var, loop.start, loop.stop, depth, kind, reason)


def _pairs(acc: Sequence[Access]) -> int:
    """Pairs ``_analyze`` compares: per buffer, each write with itself and every later access
    of the buffer, so (w + 1) * w / 2 + w * r for w writes and r reads."""
    writes: dict[str, int] = {}
    reads: dict[str, int] = {}
    for a in acc:
        into = writes if a.writes else reads
        into[a.buffer.name] = into.get(a.buffer.name, 0) + 1
    return sum(w * (w + 1) // 2 + w * reads.get(name, 0) for name, w in writes.items())


@lru_cache(maxsize=32)
def _analyze(func: PrimFunc, limit: int, max_pairs: int) -> Analysis:
    acc = accesses(func)
    pairs = _pairs(acc)
    if pairs > max_pairs:
        from .budgets import BudgetError

        raise BudgetError(f"the dependence analysis of {func.name} would compare {pairs:,} pairs of "
                          "accesses", "analysis-pairs", max_pairs)
    effort = _Effort()
    deps: dict[Dependence, None] = {}  # ordered set: a self-pair yields each dependence twice
    for i, a in enumerate(acc):
        for b in acc[i:]:
            if a.buffer.name == b.buffer.name and (a.writes or b.writes):
                deps.update(dict.fromkeys(_pair_dependences(a, b, limit, effort)))
    dep_list = tuple(deps)
    by_carrier: dict[Path, list[Dependence]] = {}  # one pass, not one per loop
    for d in dep_list:
        if d.carrier is not None:
            by_carrier.setdefault(d.loops[d.carrier].path, []).append(d)
    infos = tuple(_classify(p, l, d, by_carrier.get(p, ())) for p, l, d in _all_loops(func))
    return Analysis(func, tuple(acc), dep_list, infos)


def analyze(func: PrimFunc) -> Analysis:
    """Accesses, dependences and loop classes of a function (cached per function).
    ``BudgetError`` when it would compare more pairs of accesses than the ``analysis-pairs``
    budget in force (``budgets.using``) allows."""
    from .budgets import active

    return _analyze(func, ENUMERATION_LIMIT, active().analysis_pairs)


def dependences(func: PrimFunc) -> list[Dependence]:
    return list(analyze(func).dependences)


def loops(func: PrimFunc) -> list[LoopInfo]:
    """Every loop, pre-order, with its class."""
    return list(analyze(func).loops)


def loop_info(func: PrimFunc, path: Path) -> LoopInfo:
    for info in analyze(func).loops:
        if info.path == tuple(path):
            return info
    loop_at(func, path)  # raises the precise error
    raise AssertionError("unreachable")


def describe(func: PrimFunc) -> list[str]:
    """One line per loop, indented by depth: ``k: reduction (+= into C[i, j])``."""
    return ["  " * info.depth + f"{info.var}: {info.kind}" + (f" ({info.reason})" if info.reason else "")
            for info in analyze(func).loops]


# ---------------------------------------------------------------------------
# legality oracle


def _ignored(x: Access, y: Access, allow_reassociation: bool) -> bool:
    """``+=`` into one element may be reordered: the sum is the same up to rounding."""
    return allow_reassociation and x.kind == y.kind == "accumulate"


def can_parallelize(func: PrimFunc, path: Path) -> bool:
    """Iterations of the loop may run concurrently (it carries no dependence)."""
    return loop_info(func, path).kind == "parallel"


def _band(func: PrimFunc, path: Path, depth: int) -> None:
    loop = loop_at(func, path)
    for _ in range(depth - 1):
        body = stmts_of(loop.body)
        if len(body) != 1 or not isinstance(body[0], For):
            raise ValueError(f"{func.name}: the loops at {tuple(path)} are not a perfect nest of depth {depth}")
        loop = body[0]


def can_permute(func: PrimFunc, path: Path, order: Sequence[int], allow_reassociation: bool = True) -> bool:
    """Whether a perfect nest of ``len(order)`` loops starting at ``path`` may be reordered so
    that position t holds original loop ``order[t]`` (``(1, 0)`` swaps two loops).

    Illegal when a dependence not carried further out would become lexicographically negative.
    """
    if sorted(order) != list(range(len(order))):
        raise ValueError(f"not a permutation: {tuple(order)}")
    _band(func, path, len(order))
    depth = loop_info(func, path).depth
    for d in analyze(func).dependences:
        if _ignored(d.source, d.sink, allow_reassociation) or d.carrier is None or d.carrier < depth:
            continue
        if d.loops[depth].path != tuple(path):
            continue
        band = d.direction[depth:depth + len(order)]
        moved = [band[t] for t in order]
        if next((x for x in moved if x != "="), "=") in (">", "*"):  # "*" may be ">"
            return False
    return True


def can_interchange(func: PrimFunc, outer_path: Path, inner_path: Path, allow_reassociation: bool = True) -> bool:
    """Whether two perfectly nested loops may swap: no dependence has direction ``(<, >)`` on
    them (and ``=`` further out)."""
    if tuple(inner_path) != tuple(outer_path) + (0,):
        raise ValueError(f"{func.name}: {tuple(inner_path)} is not the loop directly inside {tuple(outer_path)}")
    return can_permute(func, outer_path, (1, 0), allow_reassociation)


@dataclass(frozen=True, slots=True)
class SplitCheck:
    """Splitting ``for i in range(n)`` by ``factor`` into ``outer_extent`` x ``factor`` keeps the
    order of iterations, so it is legal; ``remainder`` iterations need a guard or a tail loop."""

    legal: bool
    factor: int
    outer_extent: int
    remainder: int

    def __bool__(self) -> bool:
        return self.legal


def can_split(func: PrimFunc, path: Path, factor: int) -> SplitCheck:
    loop = loop_at(func, path)
    if factor < 1:
        return SplitCheck(False, factor, 0, 0)
    return SplitCheck(True, factor, -(-loop.extent // factor), loop.extent % factor)


def distribution_order(func: PrimFunc, path: Path, allow_reassociation: bool = True) -> list[int] | None:
    """An order of the loop's body statements in which it may become one loop per statement,
    or None when there is none (its statements depend on each other in a cycle).

    Statement ``a`` must come before ``b`` when an access of ``a`` touches an element before an
    access of ``b`` touches it (at least one writing) in the same iterations of the enclosing
    loops: in an earlier iteration of this loop, or in the same one with ``a`` written first.
    Any topological order of that graph keeps every dependence's source loop ahead of its
    sink's (Allen and Kennedy's loop distribution); ties keep the written order, so a loop
    ``can_distribute`` accepts keeps its order.
    """
    path = tuple(path)
    loop = loop_at(func, path)
    count = len(stmts_of(loop.body))
    if count < 2:
        return list(range(count))
    depth = loop_info(func, path).depth
    position = len(path)
    inside = [x for x in analyze(func).accesses if _inside(x, path)]
    after: dict[int, set[int]] = {k: set() for k in range(count)}
    for x in inside:
        for y in inside:
            a, b = x.path[position], y.path[position]
            if a >= b or x.buffer.name != y.buffer.name or not (x.writes or y.writes):
                continue
            if _ignored(x, y, allow_reassociation):
                continue
            for v in directions(x, y):
                if not set(v[:depth]) <= {"=", "*"}:
                    continue  # an enclosing loop carries it: distribution keeps it
                d = v[depth]
                if d in ("<", "*", "="):
                    after[a].add(b)  # y's iteration is later (or the same: a is written first)
                if d in (">", "*"):
                    after[b].add(a)
    order: list[int] = []
    waiting = {k: sum(k in after[j] for j in range(count)) for k in range(count)}
    ready = [k for k in range(count) if waiting[k] == 0]
    while ready:
        k = min(ready)
        ready.remove(k)
        order.append(k)
        for j in after[k]:
            waiting[j] -= 1
            if waiting[j] == 0:
                ready.append(j)
    return order if len(order) == count else None


def _inside(x: Access, path: Path) -> bool:
    return any(l.path == tuple(path) for l in x.loops)


def can_fuse(func: PrimFunc, path_a: Path, path_b: Path, allow_reassociation: bool = True) -> bool:
    """Whether two adjacent sibling loops may become one running a's body then b's body.

    False when the ranges differ, or when an instance of b's body touches an element an
    instance of a's body touched in a *later* iteration, at least one writing: fusion would
    run them in the other order.
    """
    path_a, path_b = tuple(path_a), tuple(path_b)
    a, b = loop_at(func, path_a), loop_at(func, path_b)
    if path_b != path_a[:-1] + (path_a[-1] + 1,):
        raise ValueError(f"{func.name}: loops {path_a} and {path_b} are not adjacent siblings")
    if (a.start, a.stop) != (b.start, b.stop):
        return False
    depth = loop_info(func, path_a).depth
    acc = analyze(func).accesses
    in_b = [y for y in acc if _inside(y, path_b)]
    for x in (x for x in acc if _inside(x, path_a)):
        for y in in_b:
            if x.buffer.name != y.buffer.name or not (x.writes or y.writes) or _ignored(x, y, allow_reassociation):
                continue
            if any(v[depth] in (">", "*") and set(v[:depth]) <= {"=", "*"}
                   for v in directions(x, y, depth + 1)):
                return False
    return True


def can_distribute(func: PrimFunc, path: Path, allow_reassociation: bool = True) -> bool:
    """Whether a loop may become one loop per statement of its body, in order.

    Illegal when a later statement touches, in some iteration, an element an earlier statement
    touches in a later iteration (a backward carried dependence), at least one writing.
    """
    return next(distribution_blockers(func, path, allow_reassociation), None) is None


def distribution_blockers(func: PrimFunc, path: Path,
                          allow_reassociation: bool = True) -> Iterator[Dependence]:
    """The dependences that forbid distributing the loop at ``path`` (``can_distribute``),
    lazily: each runs from an access of a later statement of the body (``source``) to an
    access of an earlier one (``sink``) in a later iteration of the loop, the same element,
    at least one writing. Its direction is ``=`` on the loops around the loop and ``<`` on
    the loop itself."""
    path = tuple(path)
    loop = loop_at(func, path)
    if len(stmts_of(loop.body)) < 2:
        return
    depth = loop_info(func, path).depth
    inside = [x for x in analyze(func).accesses if _inside(x, path)]
    position = len(path)
    for x in inside:
        for y in inside:
            if y.path[position] >= x.path[position] or x.buffer.name != y.buffer.name:
                continue
            if not (x.writes or y.writes) or _ignored(x, y, allow_reassociation):
                continue
            for v in directions(x, y):
                if v[depth] in ("<", "*") and set(v[:depth]) <= {"=", "*"}:
                    vector = ("=",) * depth + ("<",) + v[depth + 1:]
                    yield Dependence(x, y, x.loops[:len(v)], vector,
                                     tuple(0 if d == "=" else None for d in vector))
                    break


# ---------------------------------------------------------------------------
# temporaries written before they are read in every iteration


def _branches(func: PrimFunc, path: Path) -> list[Path]:
    """For each ``if`` around the statement at ``path``, the path of the branch it lies in
    (the ``if``'s path and the branch's index): another statement runs under the same
    evaluation of that condition, in the same branch, exactly when its path starts with it."""
    out = []
    for n in range(1, len(path)):
        try:
            s = stmt_at(func, path[:n])
        except ValueError:  # a branch index, not a statement
            continue
        if isinstance(s, If):
            out.append(tuple(path[:n + 1]))
    return out


def _constant_bounds(loops: Sequence[Loop]) -> bool:
    return all(isinstance(l.start, int) and isinstance(l.stop, int) for l in loops)


def _span(coeffs: Sequence[int], loops: Sequence[Loop], const: int) -> tuple[int, int]:
    """Least and greatest value of ``const + sum(coeffs[k] * loop k)`` over the loops' box."""
    lo = hi = const
    for c, l in zip(coeffs, loops):
        a, b = sorted((c * l.start, c * (l.stop - 1)))
        lo, hi = lo + a, hi + b
    return lo, hi


def covers(func: PrimFunc, write: Access, read: Access) -> bool:
    """Whether every instance of ``read`` (a load or a ``+=``) reads an element that
    ``write`` (a plain store) wrote earlier in the same iteration of every loop the two
    share: a sufficient test, so False may only mean "not proven".

    It holds when ``write`` comes first in the body and runs whenever ``read`` runs (every
    ``if`` around it is around ``read`` too, in the same branch), its own loops (those it does
    not share with ``read``) run at least once with constant bounds, and per index dimension
    either both sides index alike by the shared loops, or the write's side is one of its own
    loops (coefficient 1 or -1, that loop in no other dimension) whose range holds every value
    the read's side takes. The write's whole nest then runs, in each iteration of the shared
    loops, before the read, and has written the element the read reads."""
    if write.kind != "write" or read.kind == "write" or write.order >= read.order:
        return False
    if write.buffer.name != read.buffer.name or not (write.is_affine and read.is_affine):
        return False
    if any(read.path[:len(b)] != b for b in _branches(func, write.path)):
        return False
    n = _common(write, read)
    own = write.loops[n:]
    if not _constant_bounds(write.loops + read.loops) or any(l.extent < 1 for l in own):
        return False
    rows_w, rows_r = _rows(write), _rows(read)
    if any(r is None for r in rows_w + rows_r):
        return False
    used: set[int] = set()
    for mw, mr, aw, br in zip(write.maps, read.maps, rows_w, rows_r):
        mine = [k for k in range(n, len(write.loops)) if aw[k]]
        # what the write's own loop must equal: the read's index minus the write's shared part
        rest = [b - (aw[k] if k < n else 0) for k, b in enumerate(br)]
        lo, hi = _span(rest, read.loops, mr.const - mw.const)
        if not mine:
            if (lo, hi) != (0, 0):
                return False
            continue
        if len(mine) > 1 or mine[0] in used or abs(aw[mine[0]]) != 1:
            return False
        k = mine[0]
        used.add(k)
        lo, hi = (lo, hi) if aw[k] == 1 else (-hi, -lo)
        if not write.loops[k].start <= lo <= hi <= write.loops[k].stop - 1:
            return False
    return True


def _calls_touch(s: Stmt, name: str) -> bool:
    """An intrinsic call in ``s`` has an operand in buffer ``name`` (calls are not accesses
    here, so such a buffer is not analysed)."""
    return any(isinstance(x, Call) and any(w.buffer.name == name for _, w in x.operands)
               for x in walk_stmts(s))


def written_before_read(func: PrimFunc, path: Path, name: str) -> bool:
    """Whether each iteration of the loop at ``path`` (with the loops around it) writes every
    element of buffer ``name`` that it reads before reading it: each load and ``+=`` of the
    buffer inside the loop is covered (``covers``) by a store of the same iteration. No value
    then flows from one iteration to another through the buffer, whatever it held before."""
    path = tuple(path)
    loop = loop_at(func, path)
    if _calls_touch(loop, name):
        return False
    inside = [x for x in analyze(func).accesses if _inside(x, path) and x.buffer.name == name]
    writes = [x for x in inside if x.kind == "write"]
    return all(any(covers(func, w, r) for w in writes) for r in inside if r.kind != "write")


@dataclass(frozen=True)
class Reuse:
    """A buffer that every iteration of a loop writes before it reads it
    (``written_before_read``) and that some of the loops around it, ``loops``, carry a
    dependence on: each iteration reuses the same elements and none passes a value to the next.

    ``same_writes``: every iteration writes the same elements, unconditionally (no ``if``
    inside the loops around it, indices that do not move with them), so after the loops the
    buffer holds what their last iteration wrote wherever any iteration wrote."""

    buffer: Buffer
    loops: tuple[Loop, ...]
    same_writes: bool


def reused(func: PrimFunc, path: Path) -> list[Reuse]:
    """The buffers the loop at ``path`` and the loops around it reuse (``Reuse``), in the
    order of their first access."""
    path = tuple(path)
    loop_at(func, path)
    result = analyze(func)
    inside = [x for x in result.accesses if _inside(x, path)]
    if not inside:
        return []
    depth = loop_info(func, path).depth
    band = inside[0].loops[:depth + 1]
    out = []
    for name in dict.fromkeys(x.buffer.name for x in inside if x.writes):
        carried = {d.loops[d.carrier].path for d in result.dependences
                   if d.source.buffer.name == name and d.carrier is not None
                   and d.loops[d.carrier].path in {l.path for l in band}}
        if not carried or not written_before_read(func, path, name):
            continue
        writes = [x for x in inside if x.buffer.name == name and x.writes]
        same = all(x.is_affine and _constant_bounds(x.loops)
                   and all(r is not None and not any(r[:depth + 1]) for r in _rows(x))
                   and not any(len(b) > len(path) for b in _branches(func, x.path))
                   for x in writes)
        buffer = writes[0].buffer
        out.append(Reuse(buffer, tuple(l for l in band if l.path in carried), same))
    return out


# ---------------------------------------------------------------------------
# temporaries filled before they are read


def filled_before_read(func: PrimFunc) -> frozenset[str]:
    """The temporaries (``func.allocs``) every element of which the top-level statements
    write, with plain stores, before any statement reads or adds into any element: the
    zeros a temporary starts with (``ir``) are then never seen, so the runtime need not
    write them (``runtime.Kernel``).

    The top-level statements run in order, each to its end before the next. A statement
    that mentions a temporary not yet filled (a load, a ``+=``, an intrinsic call's window,
    an index or a condition reading it) must be a *fill* of it: a nest of loops around one
    ``T[f] = e`` with ``e`` and the indices reading no temporary not yet filled and no
    ``if``, each index a loop variable plus a constant (each dimension its own variable)
    or a constant, so that the elements it writes are a box of ``T``, written whatever
    the values involved; otherwise the temporary needs its zeros. The boxes written so far
    are marked on a mask of ``T``; once the mask is full, ``T`` is filled, and what any
    later statement reads of it was written by the program itself."""
    pending = {b.name: np.zeros(b.shape, dtype=bool) for b in func.allocs if b.size}
    filled = {b.name for b in func.allocs if not b.size}
    for s in stmts_of(func.body):
        if not pending:
            break
        box = _filled_box(s)
        reads = {x.buffer.name for st in walk_stmts(s) for e in _exprs(st) for x in loads_of(e)}
        reads |= {w.buffer.name for x in walk_stmts(s) if isinstance(x, Call) for _, w in x.operands}
        reads |= {x.buffer.name for x in walk_stmts(s) if isinstance(x, Accumulate)}
        writes = {x.buffer.name for x in walk_stmts(s) if isinstance(x, Store)}
        for name in list(pending):
            if name in reads or (name in writes and (box is None or box[0] != name)):
                del pending[name]  # seen (or written where the mask cannot tell) before filled
            elif box is not None and box[0] == name:
                pending[name][box[1]] = True
                if pending[name].all():
                    filled.add(name)
                    del pending[name]
    return frozenset(filled)


def _exprs(s: Stmt) -> tuple[Expr, ...]:
    return s.indices + (s.value,) if isinstance(s, (Store, Accumulate)) else \
        (s.cond,) if isinstance(s, If) else \
        tuple(e for _, w in s.operands for e in w.base) if isinstance(s, Call) else ()


def _filled_box(s: Stmt) -> tuple[str, tuple[slice, ...]] | None:
    """``(T, box)`` when ``s`` is loops around one plain ``T[f] = e`` whose indices are each
    a distinct loop variable plus a constant, or a constant: the elements it writes, as
    slices of ``T``. None for anything else (loops that never run write nothing: None)."""
    loops: dict[str, For] = {}
    while isinstance(s, For):
        if s.var in loops or s.extent < 1:
            return None
        loops[s.var] = s
        s = s.body
    if not isinstance(s, Store):
        return None
    box, used = [], set()
    for idx, size in zip(s.indices, s.buffer.shape):
        m = affine(idx)
        if m is None:
            return None
        if not m.terms:
            if not 0 <= m.const < size:
                return None
            box.append(slice(m.const, m.const + 1))
            continue
        if len(m.terms) != 1 or m.terms[0][1] != 1 or m.terms[0][0] not in loops \
                or m.terms[0][0] in used:
            return None
        loop = loops[m.terms[0][0]]
        used.add(loop.var)
        if not 0 <= loop.start + m.const <= loop.stop + m.const <= size:
            return None
        box.append(slice(loop.start + m.const, loop.stop + m.const))
    return s.buffer.name, tuple(box)
