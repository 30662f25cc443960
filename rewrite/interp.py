"""Reference interpreter: the meaning of a ``PrimFunc``, run on numpy arrays.

The operations mean exactly what the ``ir`` module docstring says; this module is the
executable form of that text. Every value is a numpy array (or numpy scalar) of the
expression's dtype, so one evaluator serves both execution strategies below.

Speed comes from running many loop iterations as one numpy operation, but only where
that provably gives the same result as running them one at a time. The decision is made
from *concrete* addresses (an inspector), not from a dependence approximation:

- **batch** a loop whose iterations are independent (every address the loop body writes
  is touched by one iteration only): the loop variable becomes a numpy axis and the body
  runs once; inner loops are decided again, inside that context. Max-plus products and
  batched prefix sums run this way, with their carried loops sequential.
- **full** a loop subtree whose statements may run one after another over their whole
  iteration space (textual order), with ``+=`` applied by ``np.add.at`` in the loops'
  sequential order, so float sums keep the program's order. Legal iff no dependence
  changes direction (see ``_full_legal``). Long reductions run this way.
- otherwise run the loop one iteration at a time and decide again inside.

``interpret(..., vectorize=False)`` runs everything one iteration at a time (0-d values);
the tests compare the two paths.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from . import ir
from .affine import affine
from .ir import (Accumulate, Binary, Buffer, Cast, Compare, Const, For, If, Load, Logical,
                 PrimFunc, Select, Seq, Store, Unary, Var)

__all__ = ["evaluate", "instances", "interpret", "run"]

# A batch check or a fully vectorised subtree handles at most this many events (access
# instances) at once: large enough for a 128^3 matmul's reduction, small enough for memory.
EVENT_LIMIT = 1 << 22


# ---------------------------------------------------------------------------
# public API


def interpret(func: PrimFunc, arrays: Mapping[str, np.ndarray], *, vectorize: bool = True,
              max_steps: int | None = None) -> None:
    """Run ``func`` in place on ``arrays`` (one array per parameter, exact shape and dtype).

    Temporaries (``func.allocs``) start as zeros. ``vectorize=False`` forces the plain
    one-iteration-at-a-time path, which defines the result the vectorised path must match.
    ``max_steps`` bounds the loop iterations run one at a time (``BudgetError`` past it,
    budget ``check-steps``); vectorised loops do not count.
    """
    from .calls import expand_calls

    func = expand_calls(func)  # an intrinsic call means its semantics on the call's windows
    given, work = _bind(func, arrays)
    for b in func.allocs:
        work[b.name] = np.zeros(b.shape, ir.numpy_dtype(b.dtype))
    machine = _Machine(work, vectorize, func.name, max_steps)
    with np.errstate(all="ignore"):
        machine.exec(func.body, _Ctx())
    for name, arr in given.items():
        if work[name] is not arr:  # a contiguous working copy was used
            arr[...] = work[name]


def run(func: PrimFunc, /, **arrays: np.ndarray) -> dict[str, np.ndarray]:
    """Interpret on copies of ``arrays``; missing outputs start as zeros. Returns every parameter."""
    bound = {name: np.array(a, copy=True) for name, a in arrays.items()}
    for b in func.outputs:
        if b.name not in bound:
            bound[b.name] = np.zeros(b.shape, ir.numpy_dtype(b.dtype))
    interpret(func, bound)
    return {b.name: bound[b.name] for b in func.params}


def instances(func: PrimFunc) -> int:
    """Statement instances a run of ``func`` executes at most: each statement (an ``if``
    counts its condition and both branches) times the extents of its loops. Known before
    running, it is what ``--check``'s ``check-iterations`` budget counts.

    ``for i, j in grid(4, 8): C[i, j] = 0.0`` -> 32."""
    from .calls import expand_calls

    return ir.fold_stmt(expand_calls(func).body, lambda _: 1, guard=lambda _, arms: 1 + sum(arms))


def _bind(func: PrimFunc, arrays: Mapping[str, np.ndarray]):
    """Check the arrays against the parameters; returns (given arrays, working arrays)."""
    names = {b.name for b in func.params}
    for name in arrays:
        if name not in names:
            raise ValueError(f"{func.name}: {name!r} is not a parameter "
                             f"(parameters: {', '.join(b.name for b in func.params)})")
    written = func.written
    given: dict[str, np.ndarray] = {}
    work: dict[str, np.ndarray] = {}
    for b in func.params:
        if b.name not in arrays:
            raise ValueError(f"{func.name}: no array given for parameter {b.name!r}")
        a = arrays[b.name]
        want = np.dtype(ir.numpy_dtype(b.dtype))
        if not isinstance(a, np.ndarray):
            raise ValueError(f"{func.name}: {b.name} must be a numpy array, got {type(a).__name__}")
        if a.shape != b.shape:
            raise ValueError(f"{func.name}: {b.name} has shape {a.shape}, expected {b.shape}")
        if a.dtype != want:
            raise ValueError(f"{func.name}: {b.name} has dtype {a.dtype}, expected {want} ({b.dtype})")
        if b.name in written and not a.flags.writeable:
            raise ValueError(f"{func.name}: {b.name} is written but its array is read-only")
        given[b.name] = a
        # Strided views below assume C order; other layouts work on a copy.
        work[b.name] = a if a.flags.c_contiguous and a.flags.aligned else np.ascontiguousarray(a)
    _check_aliasing(func, given)
    return given, work


def _check_aliasing(func: PrimFunc, given: dict[str, np.ndarray]) -> None:
    # The program's meaning assumes distinct buffers; a shared array would make it depend
    # on evaluation order.
    outs = [b.name for b in func.outputs]
    for o in outs:
        for name, a in given.items():
            if name != o and np.may_share_memory(given[o], a):
                raise ValueError(f"{func.name}: {o} and {name} share memory")


# ---------------------------------------------------------------------------
# execution context


@dataclass
class _Ctx:
    """Where a statement runs: which loop variables are numpy axes, which are plain values.

    ``shape`` holds the sizes of the vectorised axes; every array value has either 0 or
    ``len(shape)`` dimensions, so broadcasting never misaligns axes. ``mask`` (if any) says
    which lanes execute. ``full``: inside a fully vectorised subtree, where targets of ``+=``
    may repeat across lanes.
    """

    shape: tuple[int, ...] = ()
    axes: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # var -> (axis, start, n)
    scalars: dict[str, int] = field(default_factory=dict)
    mask: np.ndarray | None = None
    full: bool = False
    _vars: dict[str, np.ndarray] = field(default_factory=dict)

    def with_axis(self, var: str, start: int, extent: int, full: bool | None = None) -> "_Ctx":
        axes = dict(self.axes)
        axes[var] = (len(self.shape), start, extent)
        scalars = {k: v for k, v in self.scalars.items() if k != var}
        mask = None if self.mask is None else self.mask[..., np.newaxis]
        return _Ctx(self.shape + (extent,), axes, scalars, mask,
                    self.full if full is None else full)

    def without_axis(self, var: str) -> "_Ctx":
        """A context where ``var`` (shadowed by an inner loop) is no longer an axis."""
        axes = {k: v for k, v in self.axes.items() if k != var}
        return _Ctx(self.shape, axes, dict(self.scalars), self.mask, self.full)

    def with_mask(self, mask: np.ndarray) -> "_Ctx":
        # Shares ``scalars``: same scope, only fewer lanes.
        return _Ctx(self.shape, self.axes, self.scalars, mask, self.full, self._vars)

    def var(self, name: str):
        if name in self.scalars:
            return np.int64(self.scalars[name])
        if name not in self.axes:
            raise NameError(f"loop variable {name!r} is not bound here")
        v = self._vars.get(name)
        if v is None:
            axis, start, n = self.axes[name]
            shape = [1] * len(self.shape)
            shape[axis] = n
            v = np.arange(start, start + n, dtype=np.int64).reshape(shape)
            self._vars[name] = v
        return v

    @property
    def lanes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


# ---------------------------------------------------------------------------
# operations


def _binary(op: str, a, b, dtype: str):
    if op == "+":
        return np.add(a, b)
    if op == "-":
        return np.subtract(a, b)
    if op == "*":
        return np.multiply(a, b)
    if op == "max":
        return np.maximum(a, b)  # propagates NaN, unlike Python's max
    if op == "min":
        return np.minimum(a, b)
    if op == "/":
        if not ir.is_float(dtype):
            raise TypeError(f"'/' is float-only, got {dtype} (use '//')")
        return np.true_divide(a, b)
    if op in ("//", "%"):
        if not ir.is_int(dtype):
            raise TypeError(f"{op!r} is integer-only, got {dtype}")
        zero = np.equal(b, 0)
        safe = np.where(zero, np.ones_like(b), b)
        # numpy's floor division already wraps MIN // -1 to MIN.
        r = np.floor_divide(a, safe) if op == "//" else np.remainder(a, safe)
        return np.where(zero, np.zeros_like(r), r)
    raise ValueError(f"unknown binary operator {op!r}")


def _unary(op: str, a, dtype: str):
    if op == "neg":
        return np.negative(a)
    if op == "abs":
        return np.abs(a)  # abs(MIN) wraps to MIN, as numpy does
    if op == "not":
        return np.logical_not(a)
    if op in ("exp", "sqrt"):
        if not ir.is_float(dtype):
            raise TypeError(f"{op} is float-only, got {dtype}")
        return np.exp(a) if op == "exp" else np.sqrt(a)
    raise ValueError(f"unknown unary operator {op!r}")


def evaluate(e, leaf):
    """The value of expression ``e`` with the interpreter's semantics, ``leaf(x)`` giving the
    value of each load, loop variable and ``and``/``or`` in it (numpy values that broadcast
    together): the interpreter's lanes, or a whole iteration space at once
    (``tools/numpy_steps.py``)."""
    if isinstance(e, (Load, Var, Logical)):
        return leaf(e)
    if isinstance(e, Const):
        return _const(e)
    if isinstance(e, Binary):
        if e.a.dtype != e.b.dtype:
            raise TypeError(f"operands of {e.op!r} differ: {e.a.dtype} and {e.b.dtype}")
        return _binary(e.op, evaluate(e.a, leaf), evaluate(e.b, leaf), e.dtype)
    if isinstance(e, Unary):
        return _unary(e.op, evaluate(e.a, leaf), e.a.dtype)
    if isinstance(e, Cast):
        return _cast(evaluate(e.a, leaf), e.a.dtype, e.dtype)
    if isinstance(e, Compare):
        return _COMPARE[e.op](evaluate(e.a, leaf), evaluate(e.b, leaf))
    if isinstance(e, Select):
        return np.where(evaluate(e.cond, leaf), evaluate(e.a, leaf), evaluate(e.b, leaf))
    raise TypeError(f"not an expression: {e!r}")


_COMPARE = {"<": np.less, "<=": np.less_equal, ">": np.greater, ">=": np.greater_equal,
            "==": np.equal, "!=": np.not_equal}


def _cast(x, src: str, dst: str):
    if src == dst:
        return x
    nd = np.dtype(ir.numpy_dtype(dst))
    if dst == ir.BOOL:
        return np.not_equal(x, 0)
    if ir.is_float(src) and ir.is_int(dst):
        return _float_to_int(x, nd)
    # int -> int wraps, anything -> float rounds to nearest, bool -> 0/1: numpy's astype.
    return np.asarray(x).astype(nd)


def _float_to_int(x, nd: np.dtype):
    """Truncate toward zero, saturate to the range of ``nd``, NaN gives 0.

    Works in float64, where every f16/f32/f64 value is exact and the comparisons with the
    integer bounds are exact too (2**63 - 1 rounds up to 2**63, which is what we need:
    every value below 2**63 fits in i64).
    """
    info = np.iinfo(nd)
    t = np.trunc(np.asarray(x, np.float64))
    hi = t >= float(info.max)
    lo = t <= float(info.min)
    out = np.where(hi | lo | np.isnan(t), 0.0, t).astype(nd)
    out = np.where(hi, nd.type(info.max), out)
    return np.where(lo, nd.type(info.min), out)


def _const(e: Const):
    if e.dtype == ir.BOOL:
        return np.bool_(e.value)
    # Through int64/float64 then astype: out-of-range integer literals wrap, floats round.
    return np.asarray(e.value).astype(ir.numpy_dtype(e.dtype))[()]


def _index_vars(exprs) -> frozenset[str]:
    return frozenset(x.name for e in exprs for x in ir.walk_expr(e) if isinstance(x, Var))


# ---------------------------------------------------------------------------
# the machine


class _Machine:
    def __init__(self, buffers: dict[str, np.ndarray], vectorize: bool, name: str = "",
                 max_steps: int | None = None):
        self.name, self.max_steps, self.steps = name, max_steps, 0
        self.bufs = buffers
        self.flat = {name: a.reshape(-1) for name, a in buffers.items()}
        self.vectorize = vectorize
        self._affine: dict[int, tuple | None] = {}
        self._info: dict[int, _LoopInfo] = {}
        self._decisions: dict[tuple, str] = {}

    # -- statements ---------------------------------------------------------

    def exec(self, s, ctx: _Ctx) -> None:
        if isinstance(s, Store):
            self.store(s, ctx, accumulate=False)
        elif isinstance(s, Accumulate):
            self.store(s, ctx, accumulate=True)
        elif isinstance(s, Seq):
            for c in s.stmts:
                self.exec(c, ctx)
        elif isinstance(s, For):
            self.exec_for(s, ctx)
        elif isinstance(s, If):
            self.exec_if(s, ctx)
        else:
            raise TypeError(f"not a statement: {s!r}")

    def exec_if(self, s: If, ctx: _Ctx) -> None:
        cond = self.eval(s.cond, ctx, ctx.mask)
        if np.ndim(cond) == 0:  # the same for every lane: an ordinary branch
            branch = s.then if bool(cond) else s.orelse
            if branch is not None:
                self.exec(branch, ctx)
            return
        for branch, taken in ((s.then, cond), (s.orelse, np.logical_not(cond))):
            if branch is None:
                continue
            m = taken if ctx.mask is None else np.logical_and(ctx.mask, taken)
            if m.any():
                self.exec(branch, ctx.with_mask(m))

    def exec_for(self, loop: For, ctx: _Ctx) -> None:
        if loop.extent == 0:
            return
        if ctx.full:
            self.exec(loop.body, ctx.with_axis(loop.var, loop.start, loop.extent))
            return
        mode = self.decide(loop, ctx) if self.vectorize and loop.extent > 1 else "seq"
        if mode != "seq":
            self.exec(loop.body, ctx.with_axis(loop.var, loop.start, loop.extent, mode == "full"))
            return
        self.steps += loop.extent
        if self.max_steps is not None and self.steps > self.max_steps:
            from .budgets import BudgetError

            raise BudgetError(f"the interpreter has run {self.steps:,} loop iterations one at a time "
                              f"(loop {loop.var} cannot be vectorised)", "check-steps", self.max_steps)
        inner = ctx.without_axis(loop.var) if loop.var in ctx.axes else ctx
        missing = object()
        saved = inner.scalars.get(loop.var, missing)
        for x in range(loop.start, loop.stop):
            inner.scalars[loop.var] = x
            self.exec(loop.body, inner)
        if saved is missing:
            del inner.scalars[loop.var]
        else:
            inner.scalars[loop.var] = saved

    def store(self, s: Store | Accumulate, ctx: _Ctx, accumulate: bool) -> None:
        b = s.buffer
        if s.value.dtype != b.dtype:
            raise TypeError(f"{b.name} is {b.dtype} but the value stored is {s.value.dtype}")
        arr = self.bufs[b.name]
        value = self.eval(s.value, ctx, ctx.mask)
        if not ctx.shape:
            idx = self.scalar_index(s.indices, b, ctx)
            arr[idx] = np.add(arr[idx], value) if accumulate else value
            return
        ordered = accumulate and ctx.full
        view = self.view(b, s.indices, ctx)
        if ordered and view is not None and _injective(view):
            np.copyto(view, _ordered_sum(view, value, ctx.mask, ctx.shape, b.dtype))
            return
        if view is not None and not ordered:
            if accumulate:
                value = np.add(view, value)
            elif np.may_share_memory(value, arr):
                value = np.array(value, copy=True)
            np.copyto(view, value, where=True if ctx.mask is None else ctx.mask)
            return
        # One entry per lane, even where index and value are the same in every lane: each
        # lane of an ordered ``+=`` contributes.
        idx = [np.broadcast_to(self.eval(i, ctx, ctx.mask), ctx.shape) for i in s.indices]
        value = np.broadcast_to(value, ctx.shape)
        if ctx.mask is None:
            idx, value = [i.ravel() for i in idx], value.ravel()
        else:
            m = np.broadcast_to(ctx.mask, ctx.shape)
            idx, value = [i[m] for i in idx], value[m]
        _check_bounds(idx, b, None)
        if ordered:
            # add.at applies repeated targets one after another in C order of the lanes,
            # which is the loops' sequential order.
            np.add.at(self.flat[b.name], np.ravel_multi_index(idx, b.shape), value)
        elif accumulate:
            arr[tuple(idx)] = np.add(arr[tuple(idx)], value)
        else:
            arr[tuple(idx)] = value

    # -- expressions --------------------------------------------------------

    def eval(self, e, ctx: _Ctx, mask):
        """Value of ``e`` in every lane of ``ctx``; lanes outside ``mask`` may hold anything."""
        def leaf(x):
            if isinstance(x, Load):
                return self.load(x, ctx, mask)
            if isinstance(x, Var):
                return ctx.var(x.name)
            return self.logical(x, ctx, mask)

        return evaluate(e, leaf)

    def logical(self, e: Logical, ctx: _Ctx, mask):
        # The right operand is only needed where the left one does not decide, so a guard
        # such as ``i >= 1 and X[i - 1] > 0`` never reads out of bounds.
        a = self.eval(e.a, ctx, mask)
        need = a if e.op == "and" else np.logical_not(a)
        if mask is not None:
            need = np.logical_and(mask, need)
        if not np.any(need):
            return a
        b = self.eval(e.b, ctx, need if np.ndim(need) else mask)
        return np.logical_and(a, b) if e.op == "and" else np.logical_or(a, b)

    def load(self, e: Load, ctx: _Ctx, mask):
        arr = self.bufs[e.buffer.name]
        if not ctx.shape:
            return arr[self.scalar_index(e.indices, e.buffer, ctx)]
        view = self.view(e.buffer, e.indices, ctx)
        if view is not None:
            return view
        idx = [self.eval(i, ctx, mask) for i in e.indices]
        return arr[tuple(_check_bounds(idx, e.buffer, mask))]

    def scalar_index(self, indices, b: Buffer, ctx: _Ctx) -> tuple[int, ...]:
        idx = tuple(int(self.eval(i, ctx, None)) for i in indices)
        for d, (i, n) in enumerate(zip(idx, b.shape)):
            if not 0 <= i < n:
                raise IndexError(f"{b.name}: index {d} is {i}, outside [0, {n})")
        return idx

    def view(self, b: Buffer, indices, ctx: _Ctx) -> np.ndarray | None:
        """The accessed elements as a strided view of the buffer, if the indices are affine
        and in bounds in every lane; None otherwise (the caller gathers instead)."""
        forms = []
        for i in indices:
            key = id(i)
            if key not in self._affine:
                # keep ``i`` alive so the id stays unique; a cast wraps, which a form cannot say
                self._affine[key] = (i, affine(i, casts=False))
            forms.append(self._affine[key][1])
        if any(f is None for f in forms):
            return None
        arr = self.bufs[b.name]
        shape = [1] * len(ctx.shape)
        strides = [0] * len(ctx.shape)
        offset = 0
        for d, form in enumerate(forms):
            step = arr.strides[d] // arr.itemsize
            base, span_lo, span_hi = form.const, 0, 0
            for var, c in form.terms:
                if var in ctx.scalars:
                    base += c * ctx.scalars[var]
                elif var in ctx.axes:
                    axis, start, n = ctx.axes[var]
                    base += c * start
                    span = c * (n - 1)
                    span_lo, span_hi = span_lo + min(span, 0), span_hi + max(span, 0)
                    if c:
                        shape[axis] = n
                        strides[axis] += c * step
                else:
                    raise NameError(f"loop variable {var!r} is not bound here")
            if base + span_lo < 0 or base + span_hi >= b.shape[d]:
                return None
            offset += base * step
        # Bounds were checked above, so the view stays inside the buffer.
        return np.ndarray(tuple(shape), arr.dtype, self.flat[b.name], offset * arr.itemsize,
                          tuple(s * arr.itemsize for s in strides))

    # -- vectorisation decisions -------------------------------------------

    def decide(self, loop: For, ctx: _Ctx) -> str:
        """"batch", "full" or "seq" for ``loop`` in ``ctx``; see the module docstring."""
        info = self.loop_info(loop)
        if not info.supported:
            return "seq"
        key = (id(loop), ctx.shape,
               tuple((v, ctx.axes.get(v), ctx.scalars.get(v)) for v in info.free_vars))
        mode = self._decisions.get(key)
        if mode is None:
            mode = self._decide(loop, info, ctx)
            self._decisions[key] = mode
        return mode

    def _decide(self, loop: For, info: "_LoopInfo", ctx: _Ctx) -> str:
        try:
            events = [self.events(a, loop, info, ctx) for a in info.accesses]
        except _TooBig:
            return "seq"
        if _batch_legal(info, events):
            return "batch"
        if ctx.lanes * info.slots <= EVENT_LIMIT and _full_legal(info, events):
            return "full"
        return "seq"

    def loop_info(self, loop: For) -> "_LoopInfo":
        info = self._info.get(id(loop))
        if info is None:
            info = _LoopInfo.of(loop)
            self._info[id(loop)] = info
        return info

    def events(self, a: "_Access", root: For, info: "_LoopInfo", ctx: _Ctx) -> "_Events":
        """Every instance of access ``a`` in ``root``'s subtree, run in ``ctx``.

        Loops whose variable the address does not use are not expanded: their instances
        share the address, so only the range of their times (and of ``root``'s iteration)
        is kept, as ``t_lo``/``t_hi`` and ``it_lo``/``it_hi``.
        """
        binder = {lp.var: lp for lp in a.path}  # the innermost loop of each name binds it
        ictx = ctx
        t_span = 0
        it_span = root.extent - 1
        axes = []
        for lp in a.path:
            if binder[lp.var] is lp and lp.var in a.vars:
                ictx = ictx.with_axis(lp.var, lp.start, lp.extent)
                axes.append(lp)
                if lp is root:
                    it_span = 0
            else:
                t_span += (lp.extent - 1) * info.stride[id(lp)]
        if ictx.lanes > EVENT_LIMIT:
            raise _TooBig
        shape = ictx.shape
        idx = [np.broadcast_to(self.eval(i, ictx, None), shape) for i in a.indices]
        valid = np.ones(shape, bool)
        addr = np.zeros(shape, np.int64)
        for i, n in zip(idx, a.buffer.shape):
            valid &= (i >= 0) & (i < n)
            addr = addr * n + i
        # Instances with an index out of bounds cannot run (it would be an error), so they
        # take part in no dependence.
        t = np.full(shape, a.base, np.int64)
        it = np.full(shape, root.start, np.int64)
        for lp in axes:
            x = ictx.var(lp.var) - lp.start
            t = t + x * info.stride[id(lp)]
            if lp is root:
                it = it + x
        t, it, addr = t[valid], np.broadcast_to(it, shape)[valid], addr[valid]
        return _Events(a, addr, t, t + t_span, it, it + it_span)


class _TooBig(Exception):
    pass


# ---------------------------------------------------------------------------
# the inspector: accesses of a loop subtree and the legality of vectorising it


@dataclass
class _Access:
    buffer: Buffer
    indices: tuple
    kind: str          # "read", "write" (Store target) or "acc" (Accumulate target)
    stmt: int          # position in textual order (an if-condition counts as a statement)
    path: tuple        # enclosing loops inside the subtree, outermost (the root) first
    base: int          # sequential time of the statement within one iteration of its loops
    vars: frozenset    # loop variables the indices use


@dataclass
class _LoopInfo:
    """Static facts about a loop subtree, computed once per loop.

    Sequential time: the statement instances of one run of the subtree, numbered in the
    order they execute. An instance's time is ``base + sum((x - start) * stride[loop])``
    over its enclosing loops, where ``stride`` is the number of instances in one
    iteration of that loop's body (an if counts its condition, then and else branches).
    """

    accesses: list[_Access]          # only accesses to buffers written in the subtree
    stride: dict[int, int]           # id(For) -> instances per iteration
    slots: int                       # instances in one run of the subtree
    free_vars: tuple[str, ...]       # outer variables the accesses' addresses depend on
    supported: bool                  # False when an address depends on loaded data

    @staticmethod
    def of(loop: For) -> "_LoopInfo":
        raw: list[_Access] = []
        stride: dict[int, int] = {}
        counter = [0]

        def reads(exprs, base, path, stmt):
            for e in exprs:
                for ld in ir.loads_of(e):
                    raw.append(_Access(ld.buffer, ld.indices, "read", stmt, path, base,
                                       _index_vars(ld.indices)))

        def walk(s, base: int, path: tuple) -> int:
            if isinstance(s, (Store, Accumulate)):
                stmt = counter[0]
                counter[0] += 1
                reads(s.indices + (s.value,), base, path, stmt)
                kind = "acc" if isinstance(s, Accumulate) else "write"
                raw.append(_Access(s.buffer, s.indices, kind, stmt, path, base,
                                   _index_vars(s.indices)))
                return 1
            if isinstance(s, Seq):
                off = base
                for c in s.stmts:
                    off += walk(c, off, path)
                return off - base
            if isinstance(s, For):
                stride[id(s)] = walk(s.body, base, path + (s,))
                return s.extent * stride[id(s)]
            if isinstance(s, If):
                stmt = counter[0]
                counter[0] += 1
                reads((s.cond,), base, path, stmt)
                n_then = walk(s.then, base + 1, path)
                n_else = 0 if s.orelse is None else walk(s.orelse, base + 1 + n_then, path)
                return 1 + n_then + n_else
            raise TypeError(f"not a statement: {s!r}")

        slots = walk(loop, 0, ())
        written = {a.buffer.name for a in raw if a.kind != "read"}
        accesses = [a for a in raw if a.buffer.name in written]
        supported = not any(isinstance(x, Load) for a in accesses
                            for i in a.indices for x in ir.walk_expr(i))
        free = sorted({v for a in accesses
                       for v in a.vars - {lp.var for lp in a.path}})
        return _LoopInfo(accesses, stride, slots, tuple(free), supported)


@dataclass
class _Events:
    access: _Access
    addr: np.ndarray
    t_lo: np.ndarray
    t_hi: np.ndarray
    it_lo: np.ndarray
    it_hi: np.ndarray


def _by_buffer(events: list[_Events]) -> dict[str, list[_Events]]:
    out: dict[str, list[_Events]] = {}
    for ev in events:
        out.setdefault(ev.access.buffer.name, []).append(ev)
    return out


class _Slots:
    """Dense per-address tables for the addresses some events touch."""

    def __init__(self, group: list[_Events]):
        addrs = [ev.addr for ev in group]
        total = sum(a.size for a in addrs)
        size = group[0].access.buffer.size
        if size <= 8 * total + 4096:
            self.keys, self.size = None, size
        else:  # a large buffer touched sparsely: number the touched addresses instead
            self.keys = np.unique(np.concatenate(addrs))
            self.size = self.keys.size

    def slot(self, addr: np.ndarray) -> np.ndarray:
        return addr if self.keys is None else np.searchsorted(self.keys, addr)

    def table(self, fill: int) -> np.ndarray:
        return np.full(self.size, fill, np.int64)


_NEVER = np.iinfo(np.int64).max


def _batch_legal(info: _LoopInfo, events: list[_Events]) -> bool:
    """Iterations are independent: every written address is touched by one iteration only."""
    for group in _by_buffer(events).values():
        slots = _Slots(group)
        first, last = slots.table(_NEVER), slots.table(-1)
        written = np.zeros(slots.size, bool)
        for ev in group:
            s = slots.slot(ev.addr)
            np.minimum.at(first, s, ev.it_lo)
            np.maximum.at(last, s, ev.it_hi)
            if ev.access.kind != "read":
                written[s] = True
        if np.any(written & (first < last)):
            return False
    return True


def _full_legal(info: _LoopInfo, events: list[_Events]) -> bool:
    """Running each statement over all its instances, in textual order, keeps every dependence.

    For each written buffer and each pair of conflicting instances (same address, at least
    one writes), the vectorised order must agree with the sequential one:
    - against earlier statements: no instance may come sequentially before a conflicting
      instance of a textually earlier statement;
    - within a Store: no address written twice, none read after it was written;
    - within an Accumulate (np.add.at keeps the order of its own targets): no target
      read by the value of a later instance.
    """
    for group in _by_buffer(events).values():
        slots = _Slots(group)
        max_write, max_any = slots.table(-1), slots.table(-1)
        stmts: dict[int, list[_Events]] = {}
        for ev in group:
            stmts.setdefault(ev.access.stmt, []).append(ev)
        for stmt in sorted(stmts):
            evs = stmts[stmt]
            reads = [ev for ev in evs if ev.access.kind == "read"]
            writes = [ev for ev in evs if ev.access.kind != "read"]
            for ev in reads:
                if np.any(ev.t_lo < max_write[slots.slot(ev.addr)]):
                    return False
            for ev in writes:
                if np.any(ev.t_lo < max_any[slots.slot(ev.addr)]):
                    return False
            if not _statement_legal(slots, reads, writes):
                return False
            for ev in evs:
                s = slots.slot(ev.addr)
                np.maximum.at(max_any, s, ev.t_hi)
                if ev.access.kind != "read":
                    np.maximum.at(max_write, s, ev.t_hi)
    return True


def _statement_legal(slots: _Slots, reads: list[_Events], writes: list[_Events]) -> bool:
    if not writes:
        return True
    (w,) = writes  # a statement has one target
    s = slots.slot(w.addr)
    if w.access.kind == "write":
        # A repeated target: two instances at one address, or one instance spanning a
        # loop the address does not use.
        if np.any(w.t_hi > w.t_lo) or np.unique(s).size != s.size:
            return False
    first = slots.table(_NEVER)
    np.minimum.at(first, s, w.t_lo)
    return not any(np.any(r.t_hi > first[slots.slot(r.addr)]) for r in reads)


def _injective(view: np.ndarray) -> bool:
    """No two elements of the strided view share memory (a sufficient test: each stride
    jumps past everything the smaller strides reach)."""
    reach = 0
    for stride, n in sorted((abs(st), n) for st, n in zip(view.strides, view.shape) if n > 1):
        if stride <= reach:
            return False
        reach += stride * (n - 1)
    return True


def _ordered_sum(target: np.ndarray, value, mask, lanes: tuple[int, ...], dtype: str) -> np.ndarray:
    """``target`` plus every lane of ``value`` that lands on it, added in C order of the lanes.

    The lanes that share a target are those along the axes where ``target`` has extent 1;
    np.add.accumulate adds strictly left to right, so moving those axes last and
    accumulating along them keeps the loops' sequential order.
    """
    shape = lanes
    if mask is not None:
        # -0.0 is the exact additive identity for floats (x + -0.0 == x, even for x = -0.0).
        identity = -0.0 if ir.is_float(dtype) else 0
        value = np.where(mask, value, np.asarray(identity).astype(target.dtype))
    value = np.broadcast_to(value, shape)
    red = [a for a in range(len(shape)) if target.shape[a] == 1 and shape[a] > 1]
    if not red:
        return np.add(target, value)
    keep = [a for a in range(len(shape)) if a not in red]
    kept = [shape[a] for a in keep]
    lanes = np.transpose(value, keep + red).reshape(kept + [-1])
    start = np.transpose(target, keep + red).reshape(kept + [1])
    total = np.add.accumulate(np.concatenate([start, lanes], axis=-1), axis=-1)[..., -1]
    return total.reshape(target.shape)


def _check_bounds(idx: list, b: Buffer, mask) -> list:
    """Raise if a lane inside ``mask`` indexes out of bounds; point lanes outside it at 0."""
    out = []
    for d, (i, n) in enumerate(zip(idx, b.shape)):
        bad = (i < 0) | (i >= n)
        if np.any(bad):
            inside = bad if mask is None else np.logical_and(bad, mask)
            if np.any(inside):
                values, where = np.broadcast_arrays(i, inside)
                raise IndexError(f"{b.name}: index {d} is {values[where][0]}, outside [0, {n})")
            i = np.where(mask, i, 0)
        out.append(i)
    return out
