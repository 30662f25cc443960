"""Throughput of the native intrinsics, each in a tight compiled loop over L1-resident data.

    from rewrite.tools import intrinsic_bench
    rows = intrinsic_bench.throughput()      # every intrinsic this CPU runs natively
    print(intrinsic_bench.format_rows(rows))

Intrinsics with a reduction dimension run as a micro-kernel: the output is loaded once,
kept in registers through ``steps`` consecutive calls along the reduction (inputs advancing,
packed), and stored once - the shape a lowering gives a GEMM inner loop. Intrinsics without
one run as a stream of independent calls over tiles that all fit in L1, each loading and
storing its output. Figures are per core, against the FMA peak measured on this machine.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

import numpy as np

from intrinsics.base import Intrinsic, get, library
from intrinsics.emit import jit_module as jit, new_symbol

from .. import codegen
from ..emitter import declare, kloop_function
from ..ir import is_float, numpy_dtype
from .timing import best_of, rate, time_once

# Peak: independent chains of FMAs on this CPU's widest float vectors (16 lanes with
# AVX-512F, 8 with AVX2), in a loop with no loads, measured once per process. Integer work is
# reported against the same figure: it is the machine's peak rate of multiply-accumulate
# lanes, the quantity the intrinsics compete for (f64 work against half of it, its lanes
# twice as wide). 16 chains with AVX-512's 32 registers;
# 12 with AVX2's 16, where 16 chains and their operand are one register too many and
# LLVM's spills and register moves every iteration halved the rate (Zen 3 code on Zen 4).
_CHAINS = {16: 16, 8: 12}
_peak: Optional[float] = None


def peak_gflops() -> float:
    """This core's f32 FMA rate in GFLOP/s, measured (the best of a few timed runs)."""
    global _peak
    if _peak is None:
        from llvmlite import ir

        from intrinsics.base import host_features

        lanes = 16 if "avx512f" in host_features() and _zmm() else 8
        vec = ir.VectorType(ir.FloatType(), lanes)

        def fma(module, b, x, acc):
            return b.call(declare(module, f"llvm.fma.v{lanes}f32", vec, [vec] * 3), [x, x, acc])

        _peak = _chained("fma", vec, _CHAINS[lanes], fma) * lanes * 2 / 1e9
    return _peak


_ceiling: Optional[float] = None


def pmaddwd_ceiling() -> Optional[float]:
    """This core's ``vpmaddwd`` rate on ymm in GOP/s, counting its 16 u8 x i8 multiply-adds
    (the exact int8 method's products of i16 copies) as two operations each: the ceiling of
    the AVX2 int8 tiles, which need a ``vpaddd`` beside each besides. None without AVX2."""
    global _ceiling
    from intrinsics.base import host_features

    if _ceiling is None and "avx2" in host_features():
        from llvmlite import ir

        i32x8, i16x16 = ir.VectorType(ir.IntType(32), 8), ir.VectorType(ir.IntType(16), 16)

        def pmaddwd(module, b, x, acc):  # each chain's product is its next operand
            f = declare(module, "llvm.x86.avx2.pmadd.wd", i32x8, [i16x16, i16x16])
            return b.call(f, [b.bitcast(acc, i16x16), b.bitcast(x, i16x16)])

        _ceiling = _chained("pmaddwd", i32x8, _CHAINS[8], pmaddwd) * 32 / 1e9
    return _ceiling


# iterations of the ceiling's loop in one call of ``pmaddwd_loop``'s (half a millisecond on Zen 3)
LOOP_ITERATIONS = 1 << 18


def pmaddwd_loop() -> Optional[tuple[Callable[[], None], float]]:
    """The loop ``pmaddwd_ceiling`` times, as a call to time beside others (``tensorize bench
    --turns``), and the operations one call does, counted as the ceiling counts them. None
    without AVX2."""
    from intrinsics.base import host_features

    if "avx2" not in host_features():
        return None
    pmaddwd_ceiling()  # compiles the loop
    run = _loops["pmaddwd"]
    return (lambda: run(LOOP_ITERATIONS)), LOOP_ITERATIONS * _CHAINS[8] * 32.0


def _chained(what: str, vec, chains: int, step) -> float:
    """Instructions a second on this core: ``chains`` independent chains, each value
    ``step(module, builder, x, previous)``, in a loop with no loads (the best of a few
    timed runs). ``what`` names the function: one name per loop, as they are linked into
    one process."""
    run = _chained_loop(what, vec, chains, step)
    iterations = 1 << 20
    best = best_of(lambda: run(iterations), 5)
    return iterations * chains / best


_loops: dict[str, Callable[[int], None]] = {}


def _chained_loop(what: str, vec, chains: int, step) -> Callable[[int], None]:
    """``_chained``'s loop, compiled once a process: a call runs ``n`` iterations."""
    if what in _loops:
        return _loops[what]
    from llvmlite import ir

    symbol = f"tensorize_peak_{what}"
    module = codegen.new_module(symbol)
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [ir.PointerType(), ir.IntType(64)]),
                     name=symbol)
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    out, n = fn.args
    x = b.load(out, typ=vec, align=4)  # opaque to the optimiser: nothing folds
    head, body, done = (fn.append_basic_block(k) for k in ("head", "body", "done"))
    b.branch(head)
    b.position_at_end(head)
    i = b.phi(ir.IntType(64))
    accs = [b.phi(vec) for _ in range(chains)]
    b.cbranch(b.icmp_signed("<", i, n), body, done)
    b.position_at_end(body)
    new = [step(module, b, x, a) for a in accs]
    next_i = b.add(i, ir.Constant(ir.IntType(64), 1))
    b.branch(head)
    i.add_incoming(ir.Constant(ir.IntType(64), 0), fn.entry_basic_block)
    i.add_incoming(next_i, body)
    for a, v in zip(accs, new):
        a.add_incoming(x, fn.entry_basic_block)
        a.add_incoming(v, body)
    b.position_at_end(done)
    total = accs[0]
    for a in accs[1:]:
        total = b.fadd(total, a) if isinstance(vec.element, ir.FloatType) else b.add(total, a)
    b.store(total, out, align=4)
    b.ret_void()
    (address,) = jit(module, [symbol])
    native = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int64)(address)
    buf = np.zeros(64, np.uint8)
    _loops[what] = lambda iterations: native(buf.ctypes.data, iterations)
    return _loops[what]


def _zmm() -> bool:
    """The code generator gives <16 x float> one 512-bit register (not so when it compiles
    for an AVX2 CPU: ``codegen.generate_for``)."""
    from llvmlite import ir

    vec = ir.VectorType(ir.FloatType(), 16)
    module = codegen.new_module("widest")
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [ir.PointerType()]), name="tensorize_widest")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    x = b.load(fn.args[0], typ=vec, align=4)
    b.store(b.fadd(x, x), fn.args[0], align=4)
    b.ret_void()
    return "%zmm" in codegen.assembly(codegen.optimize(module))


_STEPS = 256  # consecutive calls per repeat; every operand's data stays within 32 KB of L1
_KERNEL = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64)


@dataclass(frozen=True)
class Row:
    name: str
    mode: str  # "k-loop" (accumulators in registers) or "stream" (independent calls)
    gops: float  # 10^9 operations per second, a multiply-accumulate counting two
    unit: str  # "GFLOP/s" or "GOP/s"
    fraction_of_peak: float
    seconds: float  # time of the best run


def _packed_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    strides, n = [], 1
    for d in reversed(shape):
        strides.append(n)
        n *= d
    return tuple(reversed(strides))


def _tile(desc: Intrinsic, name: str) -> int:
    n = 1
    for d in desc.operand(name).shape:
        n *= d
    return n


def _array(rng: np.random.Generator, dtype: str, n: int, held: Optional[str] = None) -> np.ndarray:
    """Random values of ``dtype`` (held as ``held``, if given) in a 64-byte aligned array:
    vectors that straddle cache lines measured at half the rate here, and that would be the
    allocator's doing, not the intrinsic's."""
    dt = np.dtype(numpy_dtype(held or dtype))
    raw = np.empty(n * dt.itemsize + 64, np.uint8)
    start = -raw.ctypes.data % 64
    out = raw[start:start + n * dt.itemsize].view(dt)
    if is_float(dtype):
        out[:] = rng.uniform(-1.0, 1.0, n)
    else:
        info = np.iinfo(np.dtype(numpy_dtype(dtype)))
        out[:] = rng.integers(max(info.min, -100), min(info.max, 100), n, endpoint=True)
    return out


def _measure(desc: Intrinsic, runs: int, target_seconds: float) -> Row:
    keep_acc = any(d.kind == "reduction" for d in desc.dims)
    out = desc.output.name
    # packed operands, each call's tile right after the previous one; a kept output stays put
    advance = {o.name: _tile(desc, o.name) for o in desc.operands if not (keep_acc and o.name == out)}
    strides = {o.name: _packed_strides(o.shape) for o in desc.operands}
    module = codegen.new_module(desc.name)
    symbol = new_symbol(desc, "bench")
    # each operand as the GEMM's copies hold it (``Layout.widened``), values in its own range
    held = {o.name: desc.layout[o.name].stored(o.dtype) if o.name in desc.layout else o.dtype
            for o in desc.operands}
    kloop_function(module, desc, desc.emitter, symbol, strides, advance, keep_acc=keep_acc,
                   dtypes=held)
    kernel = _KERNEL(jit(module, [symbol])[0])

    rng = np.random.default_rng(0)
    arrays = [_array(rng, o.dtype, _tile(desc, o.name) * (_STEPS if o.name in advance else 1),
                     held[o.name]) for o in desc.operands]
    pointers = (ctypes.c_void_p * len(arrays))(*(a.ctypes.data for a in arrays))
    repeats = 1
    while True:  # grow the repeat count until one run is long enough to time
        elapsed = time_once(lambda: kernel(pointers, _STEPS, repeats))
        if elapsed >= target_seconds or repeats >= 1 << 30:
            break
        repeats *= 2 if elapsed <= 0 else max(2, min(64, int(target_seconds / elapsed) + 1))
    best = min(elapsed, best_of(lambda: kernel(pointers, _STEPS, repeats), runs - 1))
    gops = rate(desc.ops * _STEPS * repeats, best)
    unit = "GFLOP/s" if is_float(desc.output.dtype) else "GOP/s"
    # a register holds half as many doubles: f64 work against half the (f32) peak
    peak = peak_gflops() / (2 if desc.output.dtype == "f64" else 1)
    return Row(desc.name, "k-loop" if keep_acc else "stream", gops, unit, gops / peak, best)


def throughput(names: Optional[Iterable[str]] = None, runs: int = 5,
               target_seconds: float = 0.05) -> list[Row]:
    """One row per intrinsic (default: every one this CPU runs natively). An intrinsic
    without a native implementation here is refused: timing an emulation says nothing
    about the instruction."""
    descs = library("host") if names is None else [get(n) for n in names]
    for d in descs:
        if not d.native:
            raise ValueError(f"intrinsic {d.name} has no native implementation on this CPU")
    return [_measure(d, runs, target_seconds) for d in descs]


def format_rows(rows: list[Row]) -> str:
    if not rows:
        return "no native intrinsics on this CPU\n"
    width = max(len(r.name) for r in rows)
    lines = [f"{'intrinsic':<{width}}  {'mode':<7}  {'rate':>16}  {'of peak':>7}"]
    for r in rows:
        lines.append(f"{r.name:<{width}}  {r.mode:<7}  {r.gops:8.1f} {r.unit:<7}  "
                     f"{100 * r.fraction_of_peak:6.1f}%")
    lines.append(f"peak: {peak_gflops():.0f} GFLOP/s, FMA on one core of this CPU, measured")
    ceiling = pmaddwd_ceiling()
    if ceiling is not None:
        lines.append(f"vpmaddwd: {ceiling:.0f} GOP/s on one core (16 u8 x i8 multiply-adds an "
                     "instruction, two operations each), measured: the AVX2 int8 tiles' ceiling")
    return "\n".join(lines) + "\n"
