"""scalar-factor: a factor read from memory at run time, taken out of an accumulation.

PolyBench and BLAS pass their scale factors as data: ``C[i, j] += alpha[0] * A[i, k] *
B[k, j]``. A constant factor (``1.5 * A * B``) the extractor already takes out of the sum
(``extract.py``: the calls accumulate into a temporary, one pass adds ``1.5 * T``); a factor
that is a load is no constant, so no intrinsic matched such a body. This family offers two
programs for a nest whose body is a product with such a factor, and keeps each where the
cost model finds it cheaper than the nest as written (a ``sites`` family, ``choose.py``):

scale-operand
    The factors taken out (runtime scalars, constants, a sign) multiply one occurrence of an
    operand ``X`` of the product into a copy, which the nest reads there instead::

        for i, j, k in grid(M, N, K):              for i, k in grid(M, K):
            C[i, j] += alpha[0] * A[i, k] * B[k, j]    sc_P_0[i, k] = alpha[0] * A[i, k]
                                              ->   for i, j, k in grid(M, N, K):
                                                       C[i, j] += sc_P_0[i, k] * B[k, j]

    Only where the copy is a part of the product as written: ``(alpha * A) * B`` above, up to
    the order of each multiplication's operands and where negations sit (IEEE ``*`` commutes
    exactly, and rounding is symmetric in sign). Sound: each term the nest adds is then the
    value the statement as written computes, bit for bit, one of its parts read from the
    copy, which holds that part's value at the point the term reads it (NaN and Inf
    included). A regrouped product would not keep the NaN/Inf pattern: written
    ``alpha[0] * (A[i] * B[i])`` with ``alpha = -inf`` and two subnormals is ``-inf * 0 =
    NaN``, grouped ``(alpha * A) * B`` it is ``-inf``. The copy runs right before the nest and
    reads what the nest would read: the nest writes only its output, which it never reads
    (``nests.as_nest``), and nothing runs in between. The scalars must be read at points the
    copy visits: their indices use only loop variables ``X`` uses. One occurrence only: in
    ``alpha[0] * A[i] * A[i]`` the copy stands for the first ``A[i]`` and the second is read
    as written.

scale-temporary
    The product without those factors accumulates into a zeroed temporary over the nest's
    dims, and one pass over the output adds ``s * T``::

        for i, j, k in grid(M, N, K):              for i, j in grid(M, N):
            C[i, j] -= alpha[0] * A[i, k] * B[k, j]    sc_T_0[i, j] = 0.0
                                              ->   sc_S_0[0] = -alpha[0]
                                                   for i, j, k in grid(M, N, K):
                                                       sc_T_0[i, j] += A[i, k] * B[k, j]
                                                   for i, j in grid(M, N):
                                                       C[i, j] += sc_S_0[0] * sc_T_0[i, j]

    (a factor that is not a single load, such as ``-alpha[0]`` or ``1.5 * alpha[0]``, is
    computed once into ``sc_S``). ``T``'s indices are the loops the output's indices use
    (``i, j``): the others (``k``) are the reduction, summed into each element of ``T``. The
    taken-out factors are the same for every term of one element's sum -- their indices use
    no reduction loop -- so ``sum(s * t) = s * sum(t)`` (distributivity: exact on wrap-around
    integers, up to rounding on floats). The last pass adds, for each point of the output
    loops, ``s`` times that point's sum: the same terms into the same elements as the nest,
    even where several points share one element. ``s`` is read right after the sum: nothing
    in between writes it (``T`` and ``sc_S`` are fresh, the output is not ``s``'s buffer,
    since an accumulate nest never reads its output).

    On floats distributivity moves NaN and Inf: ``inf * 0 + inf * 1`` is NaN, ``inf * (0 +
    1)`` is Inf, so with ``alpha = inf`` the two programs differ. For a finite ``s`` they
    agree: the class of a sum (finite, +Inf, -Inf, NaN) follows from its terms' classes, and
    ``s * t`` has ``t``'s class (sign flipped with ``s``) for ``s != 0``, NaN exactly for the
    non-finite ``t`` for ``s = 0``, where ``s * sum(t)`` is NaN exactly when some ``t`` is
    non-finite too. That holds for terms written ``s * t``; the program as written may apply
    ``s`` to an operand first, ``(alpha[0] * A[i, k]) * B[k, j]``, and ``alpha * A`` can
    underflow to 0 (a subnormal ``A``, a small ``alpha``) before a product with ``B = inf``:
    NaN as written, ``inf`` regrouped. So the rewritten nests run behind ``finite.guard`` on
    the scalars and the operands (a scan of each operand once, against the product's
    reduction), the nest as written in the other branch; with every input finite, only an
    intermediate overflow can move NaN/Inf, the licence of any reassociation. Integers need
    no guard.
    A non-finite constant factor (``inf``) is refused.

divide-temporary
    The same for a product divided by a value read per output element, or by a finite nonzero
    constant (an attention output normalised by its row sums, ``O[i, d] += P[i, j] * V[j, d]
    / l[i]``): the product accumulates into ``sc_T``, one pass adds ``T / s``. ``sum(t / s) =
    sum(t) / s`` up to rounding; for a finite nonzero ``s`` each ``t / s`` has ``t``'s class,
    so the NaN/Inf pattern is kept, but not for ``s = 0`` (``1/0 + -2/0`` is NaN, ``-1/0`` is
    ``-inf``): a divisor read at run time is scanned first (``finite.nonzero_guard``), the nest
    as written in the other branch.

Factors: the body's product is read as a list of factors through ``*`` and negation. The
factors taken out are the loads whose indices use only loops of the output's indices (a
per-row ``alpha[i]`` too) and the constants; when that leaves no load in the product (an
elementwise ``D[i] += alpha[0] * A[i] * B[i]``, whose loads all move with the output), only
the loads with constant indices are taken out. Each nest is weighed on its own (the items'
costs add up), then the program with every choice is planned once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from .. import ir
from ..affine import Affine
from ..ir import Binary, Buffer, Const, Expr, For, Load, Stmt, Store, Unary
from ..match import affine_expr
from ..names import Names
from ..nests import AccNest, as_nest
from . import finite


@dataclass(frozen=True)
class Factored:
    """``nest``'s body as ``scale * product(rest)``: ``scale`` is ``negative`` times the
    product of ``taken`` (runtime loads and constants, in the order written)."""

    nest: AccNest
    taken: tuple[Expr, ...]
    negative: bool
    rest: tuple[Expr, ...]

    @property
    def scalars(self) -> tuple[Load, ...]:
        return tuple(x for x in self.taken if isinstance(x, Load))

    def scale(self, times: Optional[Expr] = None) -> Expr:
        """``scale`` (times ``times`` when given) as one expression, in the order written."""
        out: Optional[Expr] = None
        for x in self.taken + (() if times is None else (times,)):
            out = x if out is None else Binary("*", out, x)
        assert out is not None
        return Unary("neg", out) if self.negative else out


def _factors(e: Expr) -> tuple[list[Expr], bool]:
    """The factors of a product through ``*`` and negation, and whether it is negated."""
    if isinstance(e, Binary) and e.op == "*":
        (a, na), (b, nb) = _factors(e.a), _factors(e.b)
        return a + b, na != nb
    if isinstance(e, Unary) and e.op == "neg":
        f, n = _factors(e.a)
        return f, not n
    return [e], False


def factored(nest: AccNest) -> Optional[Factored]:
    """``nest``'s body with its runtime scalar factors taken out (see the module doc), or
    None: no runtime scalar, nothing left to read, a non-finite constant."""
    factors, negative = _factors(nest.value)
    dt = nest.out.dtype
    if any(x.dtype != dt for x in factors):
        return None
    if any(isinstance(x, Const) and ir.is_float(dt) and not math.isfinite(x.value) for x in factors):
        return None  # inf * A * B: regrouped, its infinite terms meet in other sums
    out_vars = nest.out_vars

    def split(scalar) -> tuple[tuple, tuple]:
        taken = tuple(x for x in factors if isinstance(x, Const) or scalar(x))
        rest = tuple(x for x in factors if not (isinstance(x, Const) or scalar(x)))
        return taken, rest

    def reads(xs) -> bool:
        return any(True for x in xs for _ in ir.loads_of(x))

    taken, rest = split(lambda x: isinstance(x, Load) and ir.var_names(x) <= out_vars)
    if not reads(rest):
        taken, rest = split(lambda x: isinstance(x, Load) and not ir.var_names(x))
    if not reads(rest) or not any(isinstance(x, Load) for x in taken):
        return None
    return Factored(nest, taken, negative, rest)


def _box(dims) -> tuple[tuple[int, ...], tuple[Expr, ...]]:
    """The shape of a temporary with one axis per dim (its extent), and its indices
    (``d - start``)."""
    return (tuple(d.extent for d in dims),
            tuple(affine_expr(Affine(((d.name, 1),), -d.start)) for d in dims))


def _box_or_scalar(dims) -> tuple[tuple[int, ...], tuple[Expr, ...]]:
    """``_box`` of ``dims``, or one element read at 0 where there are none (a scalar)."""
    return _box(dims) if dims else ((1,), (Const(0, ir.INDEX),))


def _loops(dims, body: Stmt) -> Stmt:
    for d in reversed(dims):
        body = For(d.name, d.start, d.stop, body)
    return body


# ---------------------------------------------------------------------------
# scale-operand


def _unsigned(e: Expr) -> Expr:
    while isinstance(e, Unary) and e.op == "neg":
        e = e.a
    return e


def same_grouping(a: Expr, b: Expr) -> bool:
    """``a`` and ``b`` are the same products of the same parts, up to the order of each
    multiplication's operands and where negations sit: with the same sign, they evaluate to
    the same value bit for bit (IEEE ``*`` commutes exactly; rounding is symmetric in sign)."""
    a, b = _unsigned(a), _unsigned(b)
    if isinstance(a, Binary) and a.op == "*" and isinstance(b, Binary) and b.op == "*":
        return (same_grouping(a.a, b.a) and same_grouping(a.b, b.b)) or \
            (same_grouping(a.a, b.b) and same_grouping(a.b, b.a))
    return a == b


def scale_operand(f: Factored, names: Names) -> Optional[tuple[list, list[Buffer]]]:
    """The items of ``scale-operand`` for ``f`` and the copy's temporary, or None when no
    operand carries every index the scalars use, or none is multiplied by the factors first
    in the product as written. The operand copied is the smallest."""
    nest = f.nest
    need = set().union(*(ir.var_names(x) for x in f.scalars))
    best = None
    for k, x in enumerate(f.rest):
        if not isinstance(x, Load) or not need <= ir.var_names(x):
            continue
        scaled = ir.product(f.scale(x) if j == k else y for j, y in enumerate(f.rest))
        if not same_grouping(scaled, nest.value):
            continue  # the copy would regroup the product (module docstring)
        # the copy's axes: the dims the operand uses, in the order its indices name them
        order = [d for i in x.indices for v in sorted(ir.var_names(i)) for d in nest.dims if d.name == v]
        dims = list(dict.fromkeys(order))
        size = math.prod(d.extent for d in dims)
        if best is None or size < best[0]:
            best = (size, k, dims)
    if best is None:
        return None
    _, k, dims = best
    x = f.rest[k]
    shape, idx = _box(dims)
    copy = Buffer(names.numbered("sc_P"), nest.out.dtype, shape)
    fill = _loops(dims, Store(copy, idx, f.scale(x)))
    value = ir.product(Load(copy, idx) if j == k else y for j, y in enumerate(f.rest))
    new = as_nest(_loops(nest.dims, ir.Accumulate(nest.out, nest.indices, value)))
    if new is None:
        return None
    return [fill, new], [copy]


# ---------------------------------------------------------------------------
# scale-temporary


@dataclass(frozen=True)
class _Summed:
    """``nest``'s terms summed into a fresh temporary ``temp`` over the dims the output's
    indices use (``outer``, read at ``idx``): its zero fill and the accumulate nest."""

    temp: Buffer
    idx: tuple[Expr, ...]
    outer: list
    zero: Stmt
    inner: AccNest

    def then(self, nest: AccNest, value: Expr) -> Optional[AccNest]:
        """The pass over ``outer`` adding ``value`` (which reads the temporary) into ``nest``'s
        output, or None when that is no accumulate nest."""
        return as_nest(_loops(self.outer, ir.Accumulate(nest.out, nest.indices, value)))


def _summed(nest: AccNest, terms: Expr, names: Names) -> Optional[_Summed]:
    """``terms`` summed as ``nest`` sums its body, into ``sc_T`` over the dims the output's
    indices use: each element holds the terms of one point of those loops (the others are
    the reduction). None when the nest has no reduction loop (the temporary would be as
    large as the nest) or the sum is no accumulate nest."""
    outer = list(nest.outer)
    if len(outer) == len(nest.dims):
        return None
    dt = nest.out.dtype
    shape, idx = _box(outer)
    temp = Buffer(names.numbered("sc_T"), dt, shape)
    inner = as_nest(_loops(nest.dims, ir.Accumulate(temp, idx, terms)))
    if inner is None:
        return None
    return _Summed(temp, idx, outer, _loops(outer, Store(temp, idx, Const(0, dt))), inner)


def scale_temporary(f: Factored, names: Names) -> Optional[tuple[list, list[Buffer]]]:
    """The items of ``scale-temporary`` for ``f`` (behind ``finite.guard`` on float scalars)
    and the temporaries they use, or None when the nest has no reduction loop (the
    temporary would be as large as the nest: ``scale-operand`` is the rewrite for that)."""
    nest = f.nest
    summed = _summed(nest, ir.product(f.rest), names)
    if summed is None:
        return None
    temp, idx, dt = summed.temp, summed.idx, nest.out.dtype
    allocs = [temp]
    fast: list = [summed.zero]
    scale = f.scale()
    if not isinstance(scale, Load) and not any(ir.var_names(x) for x in f.scalars):
        s = Buffer(names.numbered("sc_S"), dt, (1,))
        allocs.append(s)
        at = (Const(0, ir.INDEX),)
        fast.append(Store(s, at, scale))
        scale = Load(s, at)
    last = summed.then(nest, Binary("*", scale, Load(temp, idx)))
    if last is None:
        return None
    fast += [summed.inner, last]
    # s * sum(t) moves NaN/Inf where s is not finite, and where the product as written
    # applies s to an operand first ((s * A) * B: s * A may underflow to 0 before B's Inf):
    # only on finite scalars and operands (finite.py)
    operands = list(f.scalars) + [ld for x in f.rest for ld in ir.loads_of(x)]
    items = finite.guard([(nest, x) for x in dict.fromkeys(operands)], fast, [nest], names, allocs)
    return items, allocs


# ---------------------------------------------------------------------------
# divide-temporary


def divided(nest: AccNest) -> Optional[tuple[Expr, Expr, bool]]:
    """``nest``'s body as ``p / s`` (negated where ``negative``), ``s`` a load whose indices
    use only loops of the output's indices or a finite nonzero float constant, ``p`` reading
    memory: ``(p, s, negative)``, or None."""
    value, negative = nest.value, False
    while isinstance(value, Unary) and value.op == "neg":
        value, negative = value.a, not negative
    if not (isinstance(value, Binary) and value.op == "/" and ir.is_float(value.dtype)):
        return None
    p, d = value.a, value.b
    out_vars = nest.out_vars
    if isinstance(d, Const):
        if not math.isfinite(d.value) or d.value == 0:
            return None
    elif not isinstance(d, Load) or not ir.var_names(d) <= out_vars:
        return None
    if not any(True for _ in ir.loads_of(p)):
        return None
    return p, d, negative


def divide_temporary(nest: AccNest, names: Names) -> Optional[tuple[list, list[Buffer]]]:
    """``C += p / s`` as ``T = 0; T += p; C += T / s`` (negated where the body is), behind a
    guard that ``s`` is finite and nonzero, the nest as written in the other branch; None
    where ``divided`` finds no such body or the nest has no reduction loop. ``T`` is indexed
    as ``scale-temporary``'s, so each element sums the terms of one point of the output's
    loops, and ``s`` is the same for each of them (its indices use no other loop):
    ``sum(t / s) = sum(t) / s`` up to rounding. For ``s`` finite and nonzero, ``t / s`` has
    ``t``'s class (finite, NaN, an infinity of ``t``'s sign times ``s``'s) but where it
    overflows, so the two sides have the same NaN/Inf pattern (the licence of any
    reassociation); for ``s = 0`` they do not (``1/0 + -2/0`` is NaN, ``-1/0`` is ``-inf``),
    hence the guard."""
    found = divided(nest)
    if found is None:
        return None
    p, d, negative = found
    summed = _summed(nest, p, names)
    if summed is None:
        return None
    allocs = [summed.temp]
    quotient: Expr = Binary("/", Load(summed.temp, summed.idx), d)
    last = summed.then(nest, Unary("neg", quotient) if negative else quotient)
    if last is None:
        return None
    fast = [summed.zero, summed.inner, last]
    if isinstance(d, Const):
        return fast, allocs
    return finite.nonzero_guard(nest, d, fast, [nest], names, allocs), allocs


# ---------------------------------------------------------------------------
# the pipeline's hook (a ``sites`` family, rules/__init__.py)


REWRITES = (scale_operand, scale_temporary)


def rewrites(item, search) -> list:
    """A nest with a runtime scalar factor by ``scale-operand`` and by ``scale-temporary``, a
    nest dividing by one by ``divide-temporary`` (the ``sites`` hook, ``choose.py``: the cost
    model chooses among them and the nest)."""
    if not isinstance(item, AccNest):
        return []
    out = []
    f = factored(item)
    if f is not None:
        out += [alt for alt in (rewrite(f, search.names) for rewrite in REWRITES) if alt is not None]
    alt = divide_temporary(item, search.names)
    return out + ([alt] if alt is not None else [])
