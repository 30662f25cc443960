"""Benchmarks: our compiled kernels against numpy on the same inputs.

    results = bench(parse_file("corpus/gemm.py").values())
    json.dump(to_json(results), f)

Each function is compiled, called once to warm up, then timed over an adaptive number of
runs (at least ``min_runs``, more while the total stays under about ``target_seconds``).
Throughput counts arithmetic operations (``lower.op_count``: ``2*M*N*K`` for a matmul).
A function that is one contraction, ``C[...] (+)= A[...] * B[...] * ...`` over full loop
ranges with an optional zero initialisation, is also run as ``np.einsum(...,
optimize=True)`` and timed the same way; ``ratio`` is numpy's median over ours (above 1:
we are faster).
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass
from typing import Callable, Iterable, Optional, Union

import numpy as np

from . import runtime
from .ir import (Accumulate, Binary, Buffer, Call, Cast, Const, Expr, For, If, Load, PrimFunc, Seq,
                 Stmt, Store, Var, is_float, numpy_dtype)
from .lower import op_count

Progress = Callable[[int, int, str], None]  # (functions done, total, name of the next one)


@dataclass(frozen=True)
class BenchResult:
    file: Optional[str]
    name: str
    runs: int
    min_s: float
    median_s: float
    max_s: float
    gflops: float  # GOP/s when the function computes on integers
    numpy_median_s: Optional[float]
    ratio: Optional[float]
    ops: int
    compile_s: float
    integer: bool


def bench(funcs: Iterable[Union[PrimFunc, tuple]], threads: Optional[int] = None,
          min_runs: int = 20, progress: Optional[Progress] = None,
          target_seconds: float = 0.3) -> list[BenchResult]:
    """Time every function, given alone, as ``(file, func)`` or as ``(file, func, chosen)``
    where ``chosen`` is the program to run in its place (e.g. the tensorized one); numpy's
    counterpart and the operation count always come from ``func``. See the module docstring."""
    items = [f if isinstance(f, tuple) else (None, f) for f in funcs]
    results = []
    for k, (file, func, *chosen) in enumerate(items):
        if progress is not None:
            progress(k, len(items), func.name)
        results.append(bench_one(func, file, threads, min_runs, target_seconds,
                                 chosen[0] if chosen else None))
    if progress is not None and items:
        progress(len(items), len(items), "")
    return results


def bench_one(func: PrimFunc, file: Optional[str] = None, threads: Optional[int] = None,
              min_runs: int = 20, target_seconds: float = 0.3,
              chosen: Optional[PrimFunc] = None) -> BenchResult:
    from .interp import random_args

    t0 = time.perf_counter()
    kernel = runtime.compile(chosen if chosen is not None else func, threads=threads)
    compile_s = time.perf_counter() - t0
    args = random_args(func, seed=0)
    ours = _time(lambda: kernel(**args), min_runs, target_seconds)
    theirs = None
    numpy_call = numpy_counterpart(func, args)
    if numpy_call is not None:
        theirs = float(np.median(_time(numpy_call, min_runs, target_seconds)))
    median = float(np.median(ours))
    ops = op_count(func.body)
    return BenchResult(
        file=file, name=func.name, runs=len(ours), min_s=float(min(ours)), median_s=median,
        max_s=float(max(ours)), gflops=ops / median / 1e9 if median > 0 else 0.0,
        numpy_median_s=theirs, ratio=theirs / median if theirs is not None and median > 0 else None,
        ops=ops, compile_s=compile_s, integer=not any(is_float(b.dtype) for b in func.outputs))


def _time(call: Callable[[], object], min_runs: int, target_seconds: float) -> list[float]:
    """Warm up once, then time ``call`` at least ``min_runs`` times and as often as fits in
    ``target_seconds`` (at most 10000 runs): medians of many runs tame a noisy machine."""
    start = time.perf_counter()
    call()
    first = time.perf_counter() - start
    runs = max(min_runs, min(10000, int(target_seconds / max(first, 1e-7))))
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    return times


# ---------------------------------------------------------------------------
# the numpy counterpart of a single contraction


@dataclass(frozen=True)
class Contraction:
    """``out (+)= einsum(spec, *operands)``; ``init`` when ``out`` is zeroed first."""

    spec: str
    out: str
    operands: tuple[str, ...]
    init: bool
    dtype: str  # the accumulation dtype (operands may be cast to it)


def contraction(func: PrimFunc) -> Optional[Contraction]:
    """The einsum that ``func`` computes, when it is one: a single ``+=`` of a product of
    loads (each possibly cast to the output's dtype) indexed by bare loop variables over
    their full ranges, optionally preceded by ``out[...] = 0`` over the whole output."""
    if func.allocs:
        return None
    found: list[tuple[Stmt, tuple[For, ...]]] = []
    if not _leaves(func.body, (), found):
        return None
    accs = [(s, loops) for s, loops in found if isinstance(s, Accumulate)]
    inits = [(s, loops) for s, loops in found if isinstance(s, Store)]
    if len(accs) != 1 or len(inits) > 1:
        return None
    acc, loops = accs[0]
    extents = {f.var: f.extent for f in loops}
    if any(f.start != 0 for f in loops):
        return None
    factors = _factors(acc.value, acc.buffer.dtype)
    accesses = [(acc.buffer, acc.indices)] + [(x.buffer, x.indices) for x in factors or []]
    if factors is None or not _full_axes(accesses, extents):
        return None
    used = {i.name for _, idx in accesses for i in idx}
    if used != set(extents) or len(set(i.name for i in acc.indices)) != len(acc.indices):
        return None
    if any(x.buffer.name == acc.buffer.name for x in factors):
        return None
    init = False
    if inits:
        store, init_loops = inits[0]
        if not _zeroes(store, init_loops, acc.buffer) or found.index(inits[0]) > found.index(accs[0]):
            return None
        init = True
    if len(extents) > 26:
        return None
    letters = {v: v for v in extents}  # loop variables that are letters keep their names
    if not all(len(v) == 1 and v.isascii() and v.isalpha() for v in extents):
        letters = {v: chr(ord("a") + k) for k, v in enumerate(sorted(extents))}
    spec = ",".join("".join(letters[i.name] for i in x.indices) for x in factors)
    spec += "->" + "".join(letters[i.name] for i in acc.indices)
    return Contraction(spec, acc.buffer.name, tuple(x.buffer.name for x in factors), init,
                       acc.buffer.dtype)


def numpy_counterpart(func: PrimFunc, args: dict[str, np.ndarray]) -> Optional[Callable[[], object]]:
    """A call running ``func``'s contraction with numpy on copies of ``args``, or None."""
    c = contraction(func)
    if c is None:
        return None
    operands = [args[n] for n in c.operands]
    out = np.array(args[c.out], copy=True)
    dtype = np.dtype(numpy_dtype(c.dtype))
    cast = any(a.dtype != dtype for a in operands)
    options = {"optimize": True}
    if cast:
        options.update(dtype=dtype, casting="unsafe")
    try:
        np.einsum(c.spec, *operands, **options)
    except (TypeError, ValueError):
        return None
    if c.init:
        return lambda: np.einsum(c.spec, *operands, out=out, **options)
    return lambda: np.add(out, np.einsum(c.spec, *operands, **options), out=out)


def _leaves(s: Stmt, loops: tuple[For, ...], out: list) -> bool:
    """Collect stores with their enclosing loops; False at an ``if`` or an intrinsic call."""
    if isinstance(s, For):
        return _leaves(s.body, loops + (s,), out)
    if isinstance(s, Seq):
        return all(_leaves(c, loops, out) for c in s.stmts)
    if isinstance(s, (If, Call)):
        return False
    out.append((s, loops))
    return True


def _factors(e: Expr, dtype: str) -> Optional[list[Load]]:
    """The loads of a product of (possibly cast) loads, or None."""
    if isinstance(e, Binary) and e.op == "*":
        a, b = _factors(e.a, dtype), _factors(e.b, dtype)
        return None if a is None or b is None else a + b
    if isinstance(e, Cast) and e.dtype == dtype and isinstance(e.a, Load):
        e = e.a
    if isinstance(e, Load) and all(isinstance(i, Var) for i in e.indices):
        return [e]
    return None


def _full_axes(accesses: list[tuple[Buffer, tuple[Expr, ...]]], extents: dict[str, int]) -> bool:
    """Every index is a bare loop variable running over its whole dimension."""
    for buf, idx in accesses:
        for dim, i in zip(buf.shape, idx):
            if not isinstance(i, Var) or extents.get(i.name) != dim:
                return False
    return True


def _zeroes(s: Store, loops: tuple[For, ...], out: Buffer) -> bool:
    """``out[i, j] = 0`` over loops that are exactly its indices, each over its full range."""
    if s.buffer.name != out.name or not isinstance(s.value, Const) or s.value.value != 0:
        return False
    extents = {f.var: f.extent for f in loops if f.start == 0}
    if len(extents) != len(loops) or not _full_axes([(out, s.indices)], extents):
        return False
    return {i.name for i in s.indices} == set(extents) and len(s.indices) == len(extents)


# ---------------------------------------------------------------------------
# reporting


def to_json(results: list[BenchResult]) -> dict:
    """``{"results": [{"file", "name", "runs", "min_s", "median_s", "max_s", "gflops",
    "numpy_median_s", "ratio"}]}`` (SPEC section 4)."""
    keys = ("file", "name", "runs", "min_s", "median_s", "max_s", "gflops", "numpy_median_s", "ratio")
    return {"results": [{k: asdict(r)[k] for k in keys} for r in results]}


def plot(results: list[BenchResult], path: str) -> bool:
    """Bar chart of GFLOP/s (ours and numpy's) saved to ``path``; True when written.
    matplotlib is optional: without it nothing is drawn and the result is False."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False  # the caller says so: the CLI prints one line, a library user gets False
    names = [r.name for r in results]
    ours = [r.gflops for r in results]
    theirs = [r.ops / r.numpy_median_s / 1e9 if r.numpy_median_s else 0.0 for r in results]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.5 * len(names)), 4.0))
    ax.bar(x - 0.2, ours, 0.4, label="tensorize")
    ax.bar(x + 0.2, theirs, 0.4, label="numpy einsum")
    ax.set_xticks(x, names, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("GFLOP/s (GOP/s for integers)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def format_table(results: list[BenchResult]) -> str:
    """A plain-text table, one line per function."""
    lines = [f"{'name':32s} {'runs':>5s} {'median':>10s} {'GFLOP/s':>8s} {'numpy':>10s} {'ratio':>6s}"]
    for r in results:
        numpy_s = f"{r.numpy_median_s * 1e3:8.3f}ms" if r.numpy_median_s else f"{'-':>10s}"
        ratio = f"{r.ratio:6.2f}" if r.ratio else f"{'-':>6s}"
        unit = "i" if r.integer else " "
        lines.append(f"{r.name:32s} {r.runs:5d} {r.median_s * 1e3:8.3f}ms {r.gflops:7.2f}{unit} "
                     f"{numpy_s} {ratio}")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> None:
    """``python -m rewrite.bench FILE... [--threads N]``: the table for quick measurements
    (the ``tensorize bench`` command is the full interface)."""
    import argparse

    from .script import parse_file

    parser = argparse.ArgumentParser(prog="python -m rewrite.bench")
    parser.add_argument("paths", nargs="+")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--func", default=None)
    opts = parser.parse_args(argv)
    funcs = [(p, f) for p in opts.paths for f in parse_file(p).values()
             if opts.func in (None, f.name)]
    results = bench(funcs, threads=opts.threads,
                    progress=lambda k, n, name: print(f"[{k}/{n}] {name}", file=sys.stderr)
                    if sys.stderr.isatty() else None)
    print(format_table(results))


if __name__ == "__main__":
    main()
