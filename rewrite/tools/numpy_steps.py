"""numpy's formulation of a loop program, statement by statement: the baseline ``tensorize
bench`` times where a function is not one contraction (a layer with its bias and ReLU, a
convolution, PolyBench's matrix-vector pairs, a softmax).

The function is normalised first (``nests.normalize``: its loops distributed as far as
legal), then each top-level statement becomes one numpy step over whole arrays::

    for i, j, k in grid(M, N, K):          factors evaluated over their own loops, then
        C[i, j] += (A[i, k] - mu[k]) * B[k, j]    np.matmul(A - mu, B) (BLAS)
    for n, h, w, c, r, s in grid(...):     a view of X with one axis a loop (h + r: the
        O[n, h, w, c] = max(O[...], X[n, h + r, w + s, c])    strides of h and of r summed)

- An index must be affine in the loops (``i + r``, ``2 * h + r``, ``k - 1``): a load is then
  a strided view of its buffer with one axis for each loop (``as_strided``, after checking
  that every address it names lies in the buffer), so that no element is copied to read it.
- ``O[f] += e``: each term of ``e`` split into its factors (the operands of its top-level
  products), each evaluated over its own loops, then multiplied and summed over the loops
  ``O`` does not use: ``np.matmul`` or ``np.tensordot`` (BLAS) where two factors make a
  matrix product, integer ones in doubles where that is exact (``in_doubles``), a window's
  taps one at a time where that times faster, ``np.einsum`` otherwise.
- ``O[f] = e`` over every loop ``O`` uses: ``e`` evaluated and stored; over more loops only
  as ``O[f] = max(O[f], e)`` or ``min`` (a max pool), ``e`` reduced over the others first.
- A guard that reads no buffer and only the loops ``O`` uses (``if j <= i``: a triangle of
  ``O``) keeps the unguarded result where it holds.
- Each store's indices name distinct loops, one each, so that no two iterations write one
  element; a statement reads the element it writes only at that element (no recurrence).

Anything else (a recurrence, a guard on a reduction, an index that is not affine) gives no
formulation. Expressions take the interpreter's semantics (``interp.evaluate``); sums are
reassociated as numpy sums them, so ``bench`` compares what the steps compute with what the
kernel computes (``runtime.compare_output``) before timing them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, NamedTuple, Optional

import numpy as np

from .. import ir, nests
from ..names import Names
from ..rules import expand
from ..affine import Affine, affine_index
from ..interp import evaluate
from ..ir import Accumulate, Binary, Expr, For, If, Load, PrimFunc, Stmt, Store, Unary, Var


# elements one step may hold in an array of its own (a factor evaluated over its loops)
MAX_ELEMENTS = 1 << 24
# taps of a window summed one at a time at most (``_by_taps``)
MAX_TAPS = 64


@dataclass
class Steps:
    """The steps of a function over ``arrays`` (copies of its parameters, and its
    temporaries); a call runs them all, in order, in place."""

    arrays: dict[str, np.ndarray]
    steps: list[Callable[[], None]]

    def __call__(self) -> None:
        with np.errstate(all="ignore"):  # overflow and NaN as the kernel meets them, silently
            for step in self.steps:
                step()


def formulate(func: PrimFunc, args: dict[str, np.ndarray]) -> Optional[Steps]:
    """``func`` as numpy steps on copies of ``args``, or None where one of its statements
    has no such step (module doc). Where a temporary every iteration of a loop reuses keeps
    the loop whole (PolyBench's ``doitgen``, one row ``sum`` a ``(r, q)``), the function
    with that temporary expanded (``rules/expand.py``, as the search does) is tried too."""
    steps = _formulated(func, args)
    if steps is None:
        expanded = expand.expand(func, Names.of(func))
        steps = None if expanded is None else _formulated(expanded, args)
    return steps


def _formulated(func: PrimFunc, args: dict[str, np.ndarray]) -> Optional[Steps]:
    normal = nests.normalize(func)
    arrays = {b.name: np.array(args[b.name], copy=True, order="C") for b in func.params}
    for b in normal.allocs:
        arrays[b.name] = np.zeros(b.shape, ir.numpy_dtype(b.dtype))
    bounds = _temporary_bounds(normal)
    steps = []
    for s in ir.stmts_of(normal.body):
        step = _step(s, arrays, bounds)
        if step is None:
            return None
        steps.append(step)
    return Steps(arrays, steps)


@dataclass(frozen=True)
class _Nest:
    loops: tuple[For, ...]
    guard: Optional[Expr]
    stmt: Stmt

    @property
    def vars(self) -> tuple[str, ...]:
        return tuple(f.var for f in self.loops)

    def extent(self, var: str) -> int:
        return next(f.extent for f in self.loops if f.var == var)


def _nest(s: Stmt) -> Optional[_Nest]:
    loops = []
    while isinstance(s, For):
        loops.append(s)
        s = s.body
    guard = None
    if isinstance(s, If) and s.orelse is None:
        guard, s = s.cond, s.then
    if not isinstance(s, (Store, Accumulate)):
        return None
    if len({f.var for f in loops}) != len(loops):
        return None
    return _Nest(tuple(loops), guard, s)


def _forms(indices, nest: _Nest) -> Optional[list[Affine]]:
    forms = [affine_index(i) for i in indices]
    if any(f is None or any(v not in nest.vars for v in f.vars) for f in forms):
        return None
    return forms


def _uses(e: Expr, nest: _Nest) -> Optional[tuple[str, ...]]:
    """The loops ``e`` depends on, in the nest's order; None where one of its loads has an
    index that is not affine in the loops."""
    used: set[str] = set()
    for x in ir.walk_expr(e):
        if isinstance(x, Var) and x.name in nest.vars:
            used.add(x.name)
        if isinstance(x, Load):
            forms = _forms(x.indices, nest)
            if forms is None:
                return None
            used |= {v for f in forms for v in f.vars}
    return tuple(v for v in nest.vars if v in used)


def _view(arr: np.ndarray, forms: list[Affine], axes: tuple[str, ...], nest: _Nest,
          ) -> Optional[np.ndarray]:
    """``arr`` read at ``forms`` as a view with one axis for each loop of ``axes`` (stride 0
    for a loop no index uses); None where an address would fall outside ``arr``."""
    first = {f.var: f.start for f in nest.loops}
    span = {f.var: (f.start, f.stop - 1) for f in nest.loops}
    steps = [st // arr.itemsize for st in arr.strides]
    offset = 0
    for d, form in enumerate(forms):
        lo, hi = form.bounds(span.get)
        if lo < 0 or hi >= arr.shape[d]:
            return None
        offset += (form.const + sum(c * first[v] for v, c in form.terms)) * steps[d]
    strides = [sum(form.coeff(v) * steps[d] for d, form in enumerate(forms)) * arr.itemsize
               for v in axes]
    flat = arr.reshape(-1)
    return np.lib.stride_tricks.as_strided(flat[offset:], [nest.extent(v) for v in axes],
                                           strides)


def _evaluator(e: Expr, axes: tuple[str, ...], nest: _Nest, arrays: dict
               ) -> Optional[Callable[[], np.ndarray]]:
    """A call giving ``e`` over the loops ``axes`` (an array of their extents), or None."""
    views: dict[Load, np.ndarray] = {}
    for x in ir.walk_expr(e):
        if isinstance(x, Load) and x not in views:
            forms = _forms(x.indices, nest)
            view = None if forms is None else _view(arrays[x.buffer.name], forms, axes, nest)
            if view is None:
                return None
            views[x] = view
    first = {f.var: f.start for f in nest.loops}
    shape = tuple(nest.extent(v) for v in axes)
    index = np.dtype(ir.numpy_dtype(ir.INDEX))

    def loop(v: str) -> np.ndarray:
        at = [1] * len(axes)
        at[axes.index(v)] = -1
        return np.arange(first[v], first[v] + nest.extent(v), dtype=index).reshape(at)

    def leaf(x):
        if isinstance(x, Load):
            return views[x]
        if isinstance(x, Var):
            return loop(x.name)
        a, b = evaluate(x.a, leaf), evaluate(x.b, leaf)  # Logical: both sides, no load out
        return np.logical_and(a, b) if x.op == "and" else np.logical_or(a, b)

    dtype = np.dtype(ir.numpy_dtype(e.dtype))
    return lambda: np.broadcast_to(np.asarray(evaluate(e, leaf), dtype), shape)


def _factors(e: Expr) -> list[Expr]:
    if isinstance(e, Binary) and e.op == "*":
        return _factors(e.a) + _factors(e.b)
    return [e]


def _step(s: Stmt, arrays: dict, bounds: dict) -> Optional[Callable[[], None]]:
    nest = _nest(s)
    if nest is None:
        return None
    st = nest.stmt
    if any(f.extent <= 0 for f in nest.loops):
        return lambda: None
    out_forms = _forms(st.indices, nest)
    if out_forms is None or any(len(f.terms) > 1 for f in out_forms):
        return None
    out_vars = tuple(v for v in nest.vars if any(f.coeff(v) for f in out_forms))
    if sum(len(f.terms) for f in out_forms) != len(out_vars):
        return None  # a loop in two indices: iterations that write one element twice
    target = _view(arrays[st.buffer.name], out_forms, out_vars, nest)
    if target is None:
        return None
    reduced = tuple(v for v in nest.vars if v not in out_vars)
    # the statement reads what it writes only at the element it writes
    own = [x for x in ir.walk_expr(st.value) if isinstance(x, Load) and x.buffer.name == st.buffer.name]
    if any(x.indices != st.indices for x in own) or (own and isinstance(st, Accumulate)):
        return None
    mask = None
    if nest.guard is not None:
        used = _uses(nest.guard, nest)
        if used is None or any(isinstance(x, Load) for x in ir.walk_expr(nest.guard)) or \
                not set(used) <= set(out_vars):
            return None
        mask = _evaluator(nest.guard, out_vars, nest, arrays)()
    if isinstance(st, Accumulate):
        ways = [w for w in (_summed(st, target, out_vars, mask, nest, arrays, bounds),
                            _by_taps(st, target, out_vars, mask, nest, arrays, bounds))
                if w is not None]
        return _fastest(ways, arrays[st.buffer.name])
    if reduced:
        return _extreme(st, target, out_vars, reduced, mask, nest, arrays)
    if isinstance(st.value, ir.Const) and mask is None:  # a fill
        fill = np.asarray(evaluate(st.value, None), target.dtype)
        return lambda: target.fill(fill)
    value = _evaluator(st.value, out_vars, nest, arrays)
    if value is None:
        return None

    def store() -> None:
        target[...] = value() if mask is None else np.where(mask, value(), target)
    return store


def _summed(st: Accumulate, target: np.ndarray, out_vars, mask, nest: _Nest, arrays: dict,
            bounds: dict):
    """``O[f] += e``, each term of ``e`` summed on its own (``_sum``)."""
    sums = [_sum(term, sign, target, out_vars, mask, nest, arrays, bounds)
            for term, sign in _terms(st.value)]
    if not sums or any(x is None for x in sums):
        return None
    return sums[0] if len(sums) == 1 else lambda: [x() for x in sums]


def _by_taps(st: Accumulate, target: np.ndarray, out_vars, mask, nest: _Nest, arrays: dict,
             bounds: dict):
    """``O[f] += e`` one tap of a window at a time: the loops summed that an index shares
    with another loop (``r`` and ``s`` in ``X[h + r, w + s, c]``) fixed to each of their
    values in turn, at most ``MAX_TAPS`` (a depthwise convolution, whose ``einsum`` over the
    window finds no matrix product, as nine multiply-adds of whole arrays)."""
    window = []
    for x in ir.walk_expr(st.value):
        if isinstance(x, Load):
            for form in _forms(x.indices, nest) or ():
                if len(form.terms) > 1:
                    window += [v for v in form.vars if v not in out_vars and v not in window]
    taps = [f for f in nest.loops if f.var in window]
    if not taps or np.prod([f.extent for f in taps], dtype=np.int64) > MAX_TAPS:
        return None
    rest = tuple(f for f in nest.loops if f.var not in window)
    ways = []
    for values in np.ndindex(*(f.extent for f in taps)):
        at = {f.var: ir.Const(f.start + int(k), ir.INDEX) for f, k in zip(taps, values)}
        one = _Nest(rest, None, ir.substitute_stmt(st, at))
        way = _summed(one.stmt, target, out_vars, mask, one, arrays, bounds)
        if way is None:
            return None
        ways.append(way)
    return lambda: [way() for way in ways]


def _fastest(ways: list[Callable[[], None]], written: np.ndarray) -> Optional[Callable[[], None]]:
    """The fastest of ``ways`` of one step (each timed after a first call; what they write
    into ``written`` restored after), or None where there is none."""
    if len(ways) < 2:
        return ways[0] if ways else None
    saved = written.copy()
    times = []
    for way in ways:
        way()
        t0 = time.perf_counter()
        way()
        times.append(time.perf_counter() - t0)
    written[...] = saved
    return ways[int(np.argmin(times))]


def _magnitude(e: Expr, bounds: dict) -> float:
    """The largest magnitude integer expression ``e`` can take, from its buffers' dtypes,
    the bounds known of temporaries (``bounds``: ``_temporary_bounds``) and its constants (a
    byte widened to i32: 255); its dtype's range where nothing tighter is known, infinity
    for floats."""
    if not ir.is_int(e.dtype):
        return float("inf")
    info = np.iinfo(ir.numpy_dtype(e.dtype))
    whole = float(max(-int(info.min), int(info.max)))
    if isinstance(e, Load):
        return min(whole, bounds.get(e.buffer.name, whole))
    if isinstance(e, ir.Const):
        return float(abs(int(e.value)))
    if isinstance(e, ir.Cast):
        return min(whole, _magnitude(e.a, bounds)) if ir.is_int(e.a.dtype) else whole
    if isinstance(e, Unary) and e.op in ("neg", "abs"):
        return min(whole, _magnitude(e.a, bounds) + 1)
    if isinstance(e, Binary) and e.op in ("+", "-", "*"):
        a, b = _magnitude(e.a, bounds), _magnitude(e.b, bounds)
        return min(whole, a + b if e.op != "*" else a * b)
    return whole


def _temporary_bounds(func: PrimFunc) -> dict[str, float]:
    """For each integer temporary of ``func`` only ever stored into (never ``+=``), the
    largest magnitude any stored value can take: every value it holds is one of them or its
    starting zero (a widened copy of bytes: 255). Twice, the second time with what the first
    found of the temporaries the stored values read."""
    temps = {b.name for b in func.allocs if ir.is_int(b.dtype)}
    bounds: dict[str, float] = {}
    for _ in range(2):
        found: dict[str, float] = {}
        for x in ir.walk_stmts(func.body):
            if isinstance(x, (Store, Accumulate)) and x.buffer.name in temps:
                m = _magnitude(x.value, bounds) if isinstance(x, Store) else float("inf")
                found[x.buffer.name] = max(found.get(x.buffer.name, 0.0), m)
        bounds = found
    return bounds


def _terms(e: Expr, sign: int = 1) -> list[tuple[Expr, int]]:
    """The terms of a sum, each with its sign: ``a * b + c`` is ``a * b`` and ``c``, each
    summed into ``O`` on its own (the sum regrouped)."""
    if isinstance(e, Binary) and e.op in ("+", "-"):
        return _terms(e.a, sign) + _terms(e.b, sign if e.op == "+" else -sign)
    if isinstance(e, Unary) and e.op == "neg":
        return _terms(e.a, -sign)
    return [(e, sign)]


def _sum(e: Expr, sign: int, target: np.ndarray, out_vars, mask, nest: _Nest, arrays: dict,
         bounds: dict):
    """``O[f] += e`` (``-= e`` with ``sign`` -1): ``e``'s factors, each over its own loops,
    multiplied and summed over the loops ``O`` does not use (``_product``); factors over no
    loop (``alpha[0]``, a constant) multiply the result."""
    factors, scalars = [], []
    for factor in _factors(e):
        axes = _uses(factor, nest)
        if axes is None or np.prod([nest.extent(v) for v in axes], dtype=np.int64) > MAX_ELEMENTS:
            return None
        call = _evaluator(factor, axes, nest, arrays)
        if call is None:
            return None
        if not axes:
            scalars.append(call)
        elif isinstance(factor, Load):  # a view of its buffer: the same every call
            view = call()
            factors.append(_Factor(axes, lambda view=view: view, True, _magnitude(factor, bounds)))
        else:
            factors.append(_Factor(axes, call, False, _magnitude(factor, bounds)))
    if len(nest.vars) > 26:
        return None
    if not factors:  # a scalar added at each iteration (``A[i, k] += 1.0``)
        one = np.ones((), target.dtype)
        factors.append(_Factor((), lambda: one, True, 1.0))
    product, kept = _product(factors, out_vars, nest)
    shape = [nest.extent(v) if v in kept else 1 for v in out_vars]
    # loops summed over that no factor uses add the same term that many times
    used = {v for f in factors for v in f.axes}
    times = np.prod([f.extent for f in nest.loops if f.var not in out_vars and f.var not in used],
                    dtype=np.int64)
    if times > 1:
        scalars.append(lambda: np.asarray(times, target.dtype))

    def accumulate() -> None:
        total = product().reshape(shape)
        for scalar in scalars:
            total = total * scalar()[()]
        if mask is not None:
            total = np.where(mask, total, np.zeros((), target.dtype))
        if sign > 0:
            target[...] += total
        else:
            target[...] -= total
    return accumulate


class _Factor(NamedTuple):
    """A factor of a term: its loops, a call giving its value over them, whether that value
    is the same array at every call (a view of a buffer), and its largest magnitude where it
    is an integer (``_magnitude``)."""

    axes: tuple[str, ...]
    call: Callable[[], np.ndarray]
    fixed: bool
    bound: float


def _product(factors: list[_Factor], out_vars, nest: _Nest) -> tuple[Callable[[], np.ndarray], list]:
    """A call multiplying ``factors`` and summing the loops not in ``out_vars``, and the
    loops of ``out_vars`` its result has, in order: nothing summed, a broadcast product;
    integers on BLAS in doubles where exact (``in_doubles``); two factors shaped as a matrix
    product, ``np.matmul`` on transposed views (prepared once where both stay the same) or
    ``np.tensordot`` (``as_product``); else ``einsum`` on the path found once (it looks for
    it again at each call otherwise, 10-20 us)."""
    present = {v for f in factors for v in f.axes}
    kept = [v for v in out_vars if v in present]  # a loop of O no factor uses: broadcast
    calls = [f.call for f in factors]
    if present <= set(out_vars):
        shapes = [[nest.extent(v) if v in f.axes else 1 for v in kept] for f in factors]

        def broadcast() -> np.ndarray:
            total = calls[0]().reshape(shapes[0])
            for call, shape in zip(calls[1:], shapes[1:]):
                total = total * call().reshape(shape)
            return total
        return broadcast, kept
    letters = {v: chr(ord("a") + k) for k, v in enumerate(nest.vars)}
    spec = ",".join("".join(letters[v] for v in f.axes) for f in factors)
    spec += "->" + "".join(letters[v] for v in kept)
    operands = [call() for call in calls]
    # the operands' bounds from what they are (a byte widened: 255), not from their values
    # now: a factor may read what an earlier step writes
    doubles = in_doubles(spec, operands, operands[0].dtype, calls, [f.bound for f in factors])
    if doubles is not None:
        return doubles, kept
    prepared = as_matmul(spec, operands) if all(f.fixed for f in factors) else None
    if prepared is not None:
        return prepared, kept  # on views that stay: transposed once
    product = as_product(spec, operands)
    if product is not None:
        return (lambda: product(*(call() for call in calls))), kept
    path = np.einsum_path(spec, *operands, optimize="greedy")[0]
    return (lambda: np.einsum(spec, *(call() for call in calls), optimize=path)), kept


def _extreme(st: Store, target: np.ndarray, out_vars, reduced, mask, nest: _Nest, arrays: dict):
    """``O[f] = max(O[f], e)`` (or ``min``) over loops ``O`` does not use: ``e`` reduced over
    them first."""
    v = st.value
    if not (isinstance(v, Binary) and v.op in ("max", "min")):
        return None
    own = Load(st.buffer, st.indices)
    if own not in (v.a, v.b):
        return None
    e = v.b if v.a == own else v.a
    axes = tuple(x for x in nest.vars if x in set(out_vars) | set(reduced))
    if np.prod([nest.extent(x) for x in axes], dtype=np.int64) > MAX_ELEMENTS:
        return None
    value = _evaluator(e, axes, nest, arrays)
    if value is None:
        return None
    fold = np.maximum if v.op == "max" else np.minimum
    where = tuple(axes.index(x) for x in reduced)

    def extreme() -> None:
        best = fold(target, fold.reduce(value(), axis=where))
        target[...] = best if mask is None else np.where(mask, best, target)
    return extreme


# ---------------------------------------------------------------------------
# matrix products on BLAS (also ``bench``'s and ``onnx_peer``'s)


@dataclass(frozen=True)
class ProductDims:
    """A two-operand einsum ``a,b->result`` split by role: ``batch`` dims (both operands and
    the output), ``contracted`` (both operands only), and each operand's ``free`` dims."""

    a: str
    b: str
    result: str
    batch: list
    contracted: list
    free_a: list
    free_b: list

    @staticmethod
    def of(spec: str) -> Optional["ProductDims"]:
        inputs, result = spec.split("->")
        parts = inputs.split(",")
        if len(parts) != 2 or any(len(set(x)) != len(x) for x in parts):
            return None
        a, b = parts
        return ProductDims(a, b, result, [d for d in result if d in a and d in b],
                           [d for d in a if d in b and d not in result],
                           [d for d in a if d not in b], [d for d in b if d not in a])

    def operands_as_matmul(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``x`` as ``[batch, m, k]`` and ``y`` as ``[batch, k, n]``, transposed views."""
        return (np.transpose(x, [self.a.index(d) for d in self.batch + self.free_a + self.contracted]),
                np.transpose(y, [self.b.index(d) for d in self.batch + self.contracted + self.free_b]))


def as_matmul(spec: str, operands: list[np.ndarray]) -> Optional[Callable[[], np.ndarray]]:
    """``spec`` (``"ik,jk->ij"``) as ``np.matmul`` on transposed views, or None.

    Dims fall into batch (both operands and the output), contracted (both operands only),
    and free dims of each operand; a product with one contracted dim and at most one free dim
    per operand is ``A[batch, m, k] @ B[batch, k, n]`` (m or n may be absent: a
    matrix-vector product), transposed back to the output's order."""
    dims = ProductDims.of(spec) if len(operands) == 2 else None
    if dims is None or dims.result == "" or len(dims.contracted) != 1 or len(dims.free_a) > 1 \
            or len(dims.free_b) > 1 or (dims.batch and not (dims.free_a and dims.free_b)):
        return None
    x, y = dims.operands_as_matmul(*operands)
    order = dims.batch + dims.free_a + dims.free_b
    back = [order.index(d) for d in dims.result]
    if back == sorted(back):
        return lambda: np.matmul(x, y)
    return lambda: np.transpose(np.matmul(x, y), back)


def as_product(spec: str, operands: list[np.ndarray]) -> Optional[Callable[..., np.ndarray]]:
    """A two-operand ``spec`` as a matrix product on BLAS, a function of the two operands:
    ``as_matmul``'s, or ``np.tensordot`` where either side has several free dims and no dim
    is batched (a convolution's tap, ``n, h, w`` by channels; doitgen's ``r, q`` by ``s``),
    which reshapes them into one matrix product, then the result's order. None elsewhere."""
    dims = ProductDims.of(spec) if len(operands) == 2 else None
    if dims is None:
        return None
    if as_matmul(spec, operands) is not None:
        return lambda x, y: as_matmul(spec, [x, y])()
    if dims.batch or not dims.contracted or sorted(dims.free_a + dims.free_b) != sorted(dims.result):
        return None
    axes = ([dims.a.index(d) for d in dims.contracted], [dims.b.index(d) for d in dims.contracted])
    order = dims.free_a + dims.free_b
    back = [order.index(d) for d in dims.result]
    return lambda x, y: np.transpose(np.tensordot(x, y, axes), back)


def in_doubles(spec: str, operands: list[np.ndarray], dtype: np.dtype,
               calls: Optional[list[Callable[[], np.ndarray]]] = None,
               bounds: Optional[list[float]] = None) -> Optional[Callable[[], np.ndarray]]:
    """An integer matrix product (``as_matmul``) run on BLAS in doubles and converted back to
    ``dtype``, where that is exact for these operands: every sum of products, its number of
    terms times the largest magnitude of each operand, below 2**53 (doubles hold it exactly)
    and within ``dtype`` (the integer product would not wrap either). numpy's integer
    ``matmul`` and ``einsum`` reach no BLAS: for bytes this is numpy's fastest way. None
    elsewhere. ``calls``: what gives the operands at each call, where they are computed,
    else ``operands`` themselves; ``bounds``: each operand's largest magnitude at any call
    (``_magnitude``), where its values may change, else read from ``operands``."""
    if not (np.issubdtype(dtype, np.integer) and all(np.issubdtype(a.dtype, np.integer)
                                                     for a in operands)):
        return None
    product = as_product(spec, operands)
    if product is None or any(a.size == 0 for a in operands):
        return None
    inputs, result = spec.split("->")
    sizes = {d: n for x, a in zip(inputs.split(","), operands) for d, n in zip(x, a.shape)}
    terms = int(np.prod([sizes[d] for d in sizes if d not in result], dtype=np.int64))
    bound = float(terms)
    for k, a in enumerate(operands):
        bound *= bounds[k] if bounds is not None else float(np.abs(a.astype(np.int64)).max())
    if bound >= min(2.0 ** 53, float(np.iinfo(dtype).max)):
        return None
    # converted at each call, as the kernel reads its bytes at each call
    calls = calls or [lambda a=a: a for a in operands]
    return lambda: product(*(call().astype(np.float64) for call in calls)).astype(dtype)
