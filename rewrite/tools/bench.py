"""Benchmarks: our compiled kernels against numpy on the same inputs.

    results = bench(parse_file("corpus/gemm.py").values())
    json.dump(to_json(results), f)

Each function is compiled, called once to warm up, then timed over an adaptive number of
runs (at least ``min_runs``, more while the total stays under about ``target_seconds``;
``timing.measure``).
Throughput counts arithmetic operations (``calls.op_count``: ``2*M*N*K`` for a matmul).
A function that is one contraction, ``C[...] (+)= A[...] * B[...] * ...`` over full loop
ranges with an optional zero initialisation, is also run as ``np.einsum(...,
optimize=True)`` and, when it is a matrix or matrix-vector product, as ``np.matmul`` (BLAS);
the faster of the two is timed the same way (a function of several such contractions in
turn, each touching none of the others' outputs, runs each its fastest way). Any other
function numpy runs statement by statement where it can (``numpy_steps``: whole-array
steps, BLAS for the sums that are matrix products), where what that computes agrees with
our kernel; the table
marks those times with ``*``, the JSON with ``"numpy_formulation": "statements"``. ``ratio`` is
numpy's median over ours (above 1: we are faster). ``blas_report`` says which BLAS numpy runs, with which kernels and threads,
and warns of the environment variables that slow it.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass
from typing import Callable, Iterable, Optional, Union

import numpy as np

from .. import runtime
from ..calls import op_count
from ..ir import (Accumulate, Binary, Buffer, Call, Cast, Const, Expr, For, If, Load, PrimFunc, Store,
                  Var, buffers_of, is_float, numpy_dtype, stmts_of, walk_in_loops, written_by)
from . import numpy_steps
from .numpy_steps import as_matmul, in_doubles
from .timing import Timing, in_turns, measure, rate

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
    onnxruntime_median_s: Optional[float] = None  # with ``onnxruntime=True``, where it applies
    turns: int = 0  # rounds in which ours and the peers took turns (``turns=``), else 0
    numpy_min_s: Optional[float] = None  # in turns: the peers' least times too
    onnxruntime_min_s: Optional[float] = None
    # in turns, on an AVX2 host without VNNI, for integer work: the median over the rounds of
    # our rate over the vpmaddwd ceiling's (its loop taking its turn in each round)
    pmaddwd_ratio: Optional[float] = None
    # numpy ran the function statement by statement (``numpy_steps``), not as a contraction
    numpy_steps: bool = False


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


# With more than one thread, each of ours and the peers runs this long untimed before its
# timed runs: the previous one's worker threads go on spinning after its last call and
# share the cores with whatever runs next (OpenBLAS's for about a tenth of a second). On a
# 2-core Zen 4, 1900^3 on two threads timed right after numpy's calls took 74 ms by median,
# 64-67 ms after 0.2 s of its own calls, numpy 64-66 ms after its own.
WARM_SECONDS = 0.25
# ... and ours and the peers take turns in this many blocks, each warmed up, their times
# pooled: a slow spell of the machine (a virtual CPU coming back from idle) then meets one
# block of each, not all of one. The same 1900^3 program timed in one block after another
# function's calls measured 74.5 ms and, the run after, 65.5 (numpy 68.6 and 67.5); in
# alternating blocks of eight calls, 63.1-63.2 against numpy's 63.9-64.8.
BLOCKS = 3


def bench_one(func: PrimFunc, file: Optional[str] = None, threads: Optional[int] = None,
              min_runs: int = 20, target_seconds: float = 0.3,
              chosen: Optional[PrimFunc] = None, onnxruntime: bool = False,
              turns: int = 0, offset: Optional[int] = None) -> BenchResult:
    """``func`` (or ``chosen`` in its place) compiled and timed, then each peer. With
    ``turns``, ours and the peers are timed instead in that many rounds in which they take
    turns, each on the calling thread's CPU clock (``timing.in_turns``), numpy's BLAS held
    to one thread: one thread against one, so ``threads`` must be 1. Otherwise each is timed
    in a block of runs; on more than one thread in ``BLOCKS`` blocks taking turns, each after
    ``WARM_SECONDS`` of untimed calls.
    ``offset``: every
    input starts that many bytes past a cache line (``inputs.at_offset``), else where numpy
    put it."""
    from ..inputs import at_offset, random_args

    if turns and threads != 1:
        raise ValueError("timing in turns compares one thread with one: threads must be 1")
    t0 = time.perf_counter()
    kernel = runtime.compile(chosen if chosen is not None else func, threads=threads)
    compile_s = time.perf_counter() - t0
    args = random_args(func, seed=0)
    if offset is not None:
        args = {name: at_offset(a, offset) for name, a in args.items()}
    numpy_call = numpy_counterpart(func, args)
    steps = numpy_call is None
    if steps:
        numpy_call = steps_counterpart(func, kernel, args)
    ort_call = onnxruntime_counterpart(func, kernel, threads or 1) if onnxruntime else None
    calls = [c for c in (lambda: kernel(**args), numpy_call, ort_call) if c is not None]
    integer = not any(is_float(b.dtype) for b in func.outputs)
    ceiling = pmaddwd_ceiling_loop() if turns and integer else None
    if turns:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1):
            timings = iter(in_turns(calls + ([ceiling[0]] if ceiling else []), turns))
    elif (threads or 1) > 1:
        blocks = [[measure(c, -(-min_runs // BLOCKS), target_seconds / BLOCKS, WARM_SECONDS)
                   for c in calls] for _ in range(BLOCKS)]
        timings = iter(Timing(tuple(t for block in blocks for t in block[k].times))
                       for k in range(len(calls)))
    else:
        timings = iter(measure(c, min_runs, target_seconds) for c in calls)
    ours = next(timings)
    theirs = next(timings) if numpy_call is not None else None
    ort = next(timings) if ort_call is not None else None
    median = ours.median_s
    ops = op_count(func.body)
    of_ceiling = None
    if ceiling is not None:  # each round's two rates, measured a moment apart
        loop = next(timings)
        of_ceiling = float(np.median([(ops / t) / (ceiling[1] / c)
                                      for t, c in zip(ours.times, loop.times)]))
    return BenchResult(
        file=file, name=func.name, runs=ours.runs, min_s=ours.min_s, median_s=median,
        max_s=ours.max_s, gflops=rate(ops, median),
        numpy_median_s=theirs and theirs.median_s,
        ratio=theirs.median_s / median if theirs is not None and median > 0 else None,
        ops=ops, compile_s=compile_s, integer=integer,
        onnxruntime_median_s=ort and ort.median_s, turns=turns,
        numpy_min_s=theirs.min_s if turns and theirs else None,
        onnxruntime_min_s=ort.min_s if turns and ort else None, pmaddwd_ratio=of_ceiling,
        numpy_steps=steps and numpy_call is not None)


def pmaddwd_ceiling_loop() -> Optional[tuple[Callable[[], None], float]]:
    """The ``vpmaddwd`` ceiling's loop and the operations a call of it does, where it is the
    ceiling of the host's int8 tiles: an AVX2 host without AVX-512 VNNI (whose tiles run
    ``vpdpbusd``, past it); else None."""
    from intrinsics.base import host_features

    from . import intrinsic_bench

    if "avx512vnni" in host_features():
        return None
    return intrinsic_bench.pmaddwd_loop()


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
    found = list(walk_in_loops(func.body))
    if any(isinstance(s, (If, Call)) for s, _ in found):
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
        if not zeroes(store, init_loops, acc.buffer) or found.index(inits[0]) > found.index(accs[0]):
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
    """A call running ``func``'s contraction with numpy on copies of ``args``, or None: the
    fastest of its formulations (``numpy_formulations``), timed briefly here; for a function
    that is several contractions in turn (a backward's ``dA`` and ``dB``), each one's."""
    calls = numpy_formulations(func, args)
    if len(calls) > 1:
        calls.sort(key=lambda call: measure(call, 5, 0.05).median_s)
    return calls[0] if calls else _in_turn(func, args)


def _in_turn(func: PrimFunc, args: dict[str, np.ndarray]) -> Optional[Callable[[], object]]:
    """``func`` as contractions one after another, each top-level statement one and none
    reading or writing what another writes, each run its fastest way; None when it is not
    so."""
    stmts = list(stmts_of(func.body))
    if func.allocs or len(stmts) < 2:
        return None
    written = [written_by(s) for s in stmts]
    for k, s in enumerate(stmts):
        touched = {b.name for b in buffers_of(s)}
        if any(touched & w for j, w in enumerate(written) if j != k):
            return None
    calls = [numpy_counterpart(PrimFunc(func.name, func.params, s, ()), args) for s in stmts]
    if any(c is None for c in calls):
        return None
    return lambda: [c() for c in calls]


def steps_counterpart(func: PrimFunc, kernel, args: dict[str, np.ndarray]) -> Optional[Callable[[], object]]:
    """numpy's statement-by-statement formulation of ``func`` (``numpy_steps``) on copies of
    ``args``, where what it computes from them agrees with what ``kernel`` computes
    (``runtime.compare_output``: the check's tolerances); else None, with one line on
    stderr where they disagree."""
    try:
        steps = numpy_steps.formulate(func, args)
        if steps is None:
            return None
        steps()
    except (ValueError, TypeError, IndexError, MemoryError) as e:
        print(f"bench: {func.name}: no numpy formulation ({type(e).__name__}: {e})", file=sys.stderr)
        return None
    ours = {name: np.array(a, copy=True) for name, a in args.items()}
    kernel(**ours)
    for buf in func.outputs:
        _, problem = runtime.compare_output(func, buf, steps.arrays[buf.name], ours[buf.name])
        if problem:
            print(f"bench: {func.name}: numpy's steps disagree with the kernel on {buf.name} "
                  f"({problem}); no numpy column", file=sys.stderr)
            return None
    return steps


def numpy_formulations(func: PrimFunc, args: dict[str, np.ndarray]) -> list[Callable[[], object]]:
    """The ways numpy computes ``func``'s contraction: ``np.matmul`` on transposed views when
    it is a (batched) matrix or matrix-vector product, which reaches BLAS with its transpose
    flags (operands of another dtype converted first, at each call: ``A @ B.astype(f32)``),
    an integer product in doubles on BLAS where that is exact (``numpy_steps.in_doubles``),
    and ``np.einsum(..., optimize=True)`` always. Empty when it is no contraction."""
    c = contraction(func)
    if c is None:
        return []
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
        return []
    found = []
    product = as_matmul(c.spec, operands)  # a matmul or not by the spec and shapes alone
    if cast and product is not None:
        # operands of other dtypes converted at each call, then the matrix product
        def product():
            return as_matmul(c.spec, [a if a.dtype == dtype else a.astype(dtype)
                                       for a in operands])()
    if product is not None:
        found.append(_accumulating(product, out, c.init))
    doubles = in_doubles(c.spec, operands, dtype)  # integers on BLAS, where exact
    if doubles is not None:
        found.append(_accumulating(doubles, out, c.init))
    if c.init:
        found.append(lambda: np.einsum(c.spec, *operands, out=out, **options))
    else:
        found.append(lambda: np.add(out, np.einsum(c.spec, *operands, **options), out=out))
    return found


def onnxruntime_counterpart(func: PrimFunc, kernel, threads: int) -> Optional[Callable[[], object]]:
    """``func``'s layer run by ONNX Runtime (the ``onnx`` extra; ``onnx_peer`` says which
    layers it has), on ``func``'s bench inputs, with ``threads`` intra-op threads; None where
    it has none, or where its output on those inputs is not what ``kernel`` (ours) computes,
    said on stderr. The call's ``args`` are the function's inputs it was checked on.

    ONNX Runtime's u8 x i8 kernels for CPUs without VNNI add pairs of products in saturating
    16-bit arithmetic, so on full-range u8 inputs they give other sums. Where the model
    differs there but agrees on u8 inputs below 128 (a pair then fits in 16 bits), it is
    timed on those, and stderr says so: the time does not depend on the values."""
    from ..inputs import random_args
    from . import onnx_peer

    args = random_args(func, seed=0)
    model = onnx_peer.layer(func, args)
    if model is None:
        return None
    ops = "/".join(n[0] for n in model.nodes)
    call, differ = _checked_counterpart(func, kernel, threads, args, model)
    if differ and any(a.dtype == np.uint8 for a in args.values()):
        halved = {name: a >> 1 if a.dtype == np.uint8 else a for name, a in args.items()}
        retry, _ = _checked_counterpart(func, kernel, threads, halved, onnx_peer.layer(func, halved))
        if retry is not None:
            print(f"note: {func.name}: ONNX Runtime's {ops} differs from this function on "
                  f"full-range u8 inputs ({differ}) and agrees on u8 inputs below 128; timed on "
                  "those", file=sys.stderr)
            return retry
    if call is None:
        print(f"warning: {func.name}: ONNX Runtime's {ops} gives other values than this "
              f"function ({differ}); no ONNX Runtime figure", file=sys.stderr)
    return call


def _checked_counterpart(func: PrimFunc, kernel, threads: int, args: dict, model):
    """``(call, "")`` for ``model`` run by ONNX Runtime on ``args`` where it computes what
    ``kernel`` does, else ``(None, how many elements differ)``."""
    from . import onnx_peer

    call = onnx_peer.counterpart(func, model, threads)
    ours = {name: np.array(a, copy=True) for name, a in args.items()}  # what the model reads stays
    kernel(**ours)
    want = ours[model.output]
    wrong = onnx_peer.differing(call, want)
    if wrong:
        return None, f"{wrong} of {want.size} elements"
    call.args = args
    return call, ""


def _accumulating(product: Callable[[], np.ndarray], out: np.ndarray, init: bool):
    if init:
        return lambda: np.copyto(out, product())
    return lambda: np.add(out, product(), out=out)


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


def zeroes(s: Store, loops: tuple[For, ...], out: Buffer) -> bool:
    """``out[i, j] = 0`` over loops that are exactly its indices, each over its full range."""
    if s.buffer.name != out.name or not isinstance(s.value, Const) or s.value.value != 0:
        return False
    extents = {f.var: f.extent for f in loops if f.start == 0}
    if len(extents) != len(loops) or not _full_axes([(out, s.indices)], extents):
        return False
    return {i.name for i in s.indices} == set(extents) and len(s.indices) == len(extents)


# ---------------------------------------------------------------------------
# reporting

# set on some machines for old OpenBLAS builds; both slow a current numpy
SLOWING_VARIABLES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def blas_report() -> list[str]:
    """Lines saying which BLAS numpy runs (library, version, kernels, threads; threadpoolctl
    reads it from the loaded library), then a warning per variable that slows it."""
    import os

    lines = []
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        lines.append("numpy's BLAS: unknown (install threadpoolctl to see it)")
    else:
        for pool in threadpool_info():
            if pool.get("user_api") == "blas":
                lines.append(f"numpy's BLAS: {pool.get('internal_api')} {pool.get('version')}, "
                             f"{pool.get('architecture') or 'generic'} kernels, "
                             f"{pool.get('num_threads')} threads")
    for name in SLOWING_VARIABLES:
        if os.environ.get(name):
            lines.append(f"warning: {name}={os.environ[name]} is set; it slows a current numpy's "
                         f"BLAS (unset it for this command to compare with numpy at its best)")
    return lines


def to_json(results: list[BenchResult]) -> dict:
    """``{"results": [{"file", "name", "runs", "min_s", "median_s", "max_s", "gflops",
    "numpy_median_s", "ratio"}]}`` (SPEC section 4)."""
    keys = ("file", "name", "runs", "min_s", "median_s", "max_s", "gflops", "numpy_median_s", "ratio")
    out = []
    for r in results:
        row = {k: asdict(r)[k] for k in keys}
        if r.numpy_steps:  # numpy ran it statement by statement (numpy_steps)
            row["numpy_formulation"] = "statements"
        if r.onnxruntime_median_s is not None:  # only with --onnxruntime
            row["onnxruntime_median_s"] = r.onnxruntime_median_s
        if r.turns:  # only with --turns: the rounds, and the peers' least times
            row["turns"] = r.turns
            row["numpy_min_s"] = r.numpy_min_s
            if r.onnxruntime_median_s is not None:
                row["onnxruntime_min_s"] = r.onnxruntime_min_s
            if r.pmaddwd_ratio is not None:
                row["pmaddwd_ratio"] = r.pmaddwd_ratio
        out.append(row)
    return {"results": out}


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
    theirs = [rate(r.ops, r.numpy_median_s) if r.numpy_median_s else 0.0 for r in results]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.5 * len(names)), 4.0))
    ax.bar(x - 0.2, ours, 0.4, label="tensorize")
    ax.bar(x + 0.2, theirs, 0.4, label="numpy")
    ax.set_xticks(x, names, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("GFLOP/s (GOP/s for integers)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def format_table(results: list[BenchResult]) -> str:
    """A plain-text table, one line per function; ONNX Runtime's columns where it ran. Timed
    in turns, each ratio of medians is followed by the ratio of least times (``least``), and
    integer work on an AVX2 host by its share of the ``vpmaddwd`` ceiling (``vpmaddwd``)."""
    ort = any(r.onnxruntime_median_s for r in results)
    turns = any(r.turns for r in results)

    def ratio(peer: Optional[float], ours: float, width: int = 6) -> str:
        return f" {peer / ours:{width}.2f}" if peer and ours > 0 else f" {'-':>{width}s}"

    ceiling = any(r.pmaddwd_ratio is not None for r in results)
    least = f" {'least':>6s}" if turns else ""
    head = f"{'name':32s} {'runs':>5s} {'median':>10s} {'GFLOP/s':>8s} {'numpy':>10s} {'ratio':>6s}"
    lines = [head + least + (f" {'onnxrt':>10s} {'ratio':>6s}" + least if ort else "")
             + (f" {'vpmaddwd':>8s}" if ceiling else "")]
    for r in results:
        numpy_s = f"{r.numpy_median_s * 1e3:8.3f}ms" if r.numpy_median_s else f"{'-':>10s}"
        numpy_s = numpy_s[1:] + "*" if r.numpy_steps else numpy_s
        unit = "i" if r.integer else " "
        line = (f"{r.name:32s} {r.runs:5d} {r.median_s * 1e3:8.3f}ms {r.gflops:7.2f}{unit} "
                f"{numpy_s}" + ratio(r.numpy_median_s, r.median_s))
        if turns:
            line += ratio(r.numpy_min_s, r.min_s)
        if ort:
            o = r.onnxruntime_median_s
            line += f" {o * 1e3:8.3f}ms" if o else f" {'-':>10s}"
            line += ratio(o, r.median_s) + (ratio(r.onnxruntime_min_s, r.min_s) if turns else "")
        if ceiling:
            line += f" {r.pmaddwd_ratio:8.2f}" if r.pmaddwd_ratio is not None else f" {'-':>8s}"
        lines.append(line)
    if any(r.numpy_steps for r in results):
        lines.append("* numpy ran the function statement by statement (whole-array steps, "
                     "BLAS for matrix products), checked against ours")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> None:
    """``python -m rewrite.tools.bench FILE... [--threads N]``: the table for quick measurements
    (the ``tensorize bench`` command is the full interface)."""
    import argparse

    from ..script import parse_file

    parser = argparse.ArgumentParser(prog="python -m rewrite.tools.bench")
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
