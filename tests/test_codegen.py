"""Compiled code against the reference interpreter: random programs, then every edge case of
the IR's meaning (wrap-around, floor division, saturating casts, f16, NaN)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings

from intrinsics import host_features
from rewrite import calls, codegen, lower, runtime, target
from rewrite.inputs import random_args
from rewrite.interp import run
from rewrite.ir import Accumulate, Unary, is_float, numpy_dtype, stmt_exprs, walk_expr, walk_stmts
from rewrite.script import parse, show
from rewrite.tools import intrinsic_bench
from .strategies import programs


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TENSORIZE_CACHE_DIR", str(tmp_path / "cache"))


def compiled_and_interpreted(func, args, threads=1):
    want = run(func, **args)
    got = {name: np.array(a, copy=True) for name, a in args.items()}
    runtime.compile(func, threads=threads)(**got)
    return want, got


# exp is not correctly rounded, here or in numpy, and a chain of exps (through a loop that
# stores exp(A[0]) back into A[0]) multiplies a one-ulp difference by every argument on
# the way: at most about 1000 ulps before the result overflows
EXP_RTOL = {"f16": 5e-2, "f32": 1e-3, "f64": 1e-9}


def assert_same(func, want, got, exact=True):
    beyond = runtime.beyond_roundoff(func)
    for b in func.outputs:
        if b.name in beyond:
            # hangs on a float sum rounded to an integer or compared, which roundoff may flip:
            # no tolerance bounds it
            continue
        w, g = want[b.name], got[b.name]
        if not exact and not np.issubdtype(w.dtype, np.floating):
            # a float sum rounded to an integer may move with the sum's roundoff
            allowed = runtime.integer_tolerance(func, w)
            diff = np.abs(g.astype(np.int64) - w.astype(np.int64))
            assert np.all(diff <= allowed), f"buffer {b.name} of\n{show(func)}\n{g} != {w}"
        elif exact or not np.issubdtype(w.dtype, np.floating):
            np.testing.assert_array_equal(g, w, err_msg=f"buffer {b.name} of\n{show(func)}")
        else:
            tol = runtime.tolerance(func, b.dtype, w)
            rtol = max((EXP_RTOL[x.dtype] for x in _exps(func)), default=0.0)
            np.testing.assert_allclose(g.astype(np.float64), w.astype(np.float64), rtol=rtol, atol=tol,
                                       err_msg=f"buffer {b.name} of\n{show(func)}")


def _exps(func) -> list:
    """Every exp in ``func``: its dtype, not the output's, sets the error (exp in f32 may be
    stored into f64)."""
    return [x for s in walk_stmts(func.body) for e in stmt_exprs(s) for x in walk_expr(e)
            if isinstance(x, Unary) and x.op == "exp"]


# ---------------------------------------------------------------------------
# random programs: the soundness backbone


def _exact(func) -> bool:
    """Without ``exp`` and ``+=`` into floats, compiled code is bit-identical to the interpreter
    (every other float operation is IEEE in program order)."""
    if _exps(func):
        return False
    return not any(isinstance(s, Accumulate) and is_float(s.buffer.dtype)
                   for s in walk_stmts(func.body))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs())
@example(parse("""
@prim_func
def fuzzed(A: f32[1], B: f16[1]):
    for x1, x2 in grid(2, 2):
        A[x1 % 1] = exp(A[x1 % 1])
"""))
def test_random_programs_match_the_interpreter(func):
    args = random_args(func, seed=1)
    want, got = compiled_and_interpreted(func, args)
    assert_same(func, want, got, exact=_exact(func))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs(dtypes=("i8", "u8", "i32", "i64")))
def test_random_integer_programs_are_exact(func):
    args = random_args(func, seed=2)
    want, got = compiled_and_interpreted(func, args)
    assert_same(func, want, got, exact=True)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs())
# an f32 sum contracted into FMAs, read as f64 and rounded to i32: roundoff of f32, not of
# the output's dtype, and an integer moved by it
@example(parse("""
@prim_func
def fuzzed(A: i32[6], B: f64[3], C: i32[3], D: f32[3, 1]):
    for x1 in range(2, 4):
        for x3 in range(2, 6):
            D[x1 - 1, 0] = 0.0
            if x3 < 5:
                C[x1 - 1] = i32(D[0, 0])
                B[x1 - 1] = f64(D[0, 0])
                D[0, 0] += D[0, 0] * f32(A[x1])
"""))
# the same sum, rounded to i32, its low bits fed back as a factor: the FMA's one rounding
# instead of two moves the sum by one unit (-10359292 for -10359291), its low bits (-4604 for
# -4603) and the result by one part in 4603, 57 times the roundoff tolerance; no
# tolerance bounds it (runtime.beyond_roundoff), and D is not compared
@example(parse("""
@prim_func
def fuzzed(A: i32[4], D: f32[1]):
    for x1 in range(4):
        D[0] += D[0] * f32(A[x1])
    D[0] += D[0] * f32(i16(i32(D[0])))
"""))
def test_random_programs_on_two_threads(func):
    # every loop the analysis proves parallel goes to the pool, however small
    original = lower.MIN_PARALLEL_OPS
    lower.MIN_PARALLEL_OPS = 0
    try:
        runtime.clear_memory_cache()
        args = random_args(func, seed=3)
        want, got = compiled_and_interpreted(func, args, threads=2)
    finally:
        lower.MIN_PARALLEL_OPS = original
        runtime.clear_memory_cache()
    assert_same(func, want, got, exact=_exact(func))


# ---------------------------------------------------------------------------
# edge cases, one operator at a time


def unary_kernel(src: str, dst: str, expr: str, n: int):
    return parse(f"""
@prim_func
def k(A: {src}[{n}], B: {dst}[{n}]):
    for i in range({n}):
        B[i] = {expr}
""")


def binary_kernel(dtype: str, out: str, expr: str, n: int):
    return parse(f"""
@prim_func
def k(A: {dtype}[{n}], B: {dtype}[{n}], C: {out}[{n}]):
    for i in range({n}):
        C[i] = {expr}
""")


INT_EDGES = {
    "i8": [-128, -127, -7, -2, -1, 0, 1, 2, 7, 126, 127],
    "u8": [0, 1, 2, 7, 127, 128, 200, 254, 255],
    "i16": [-32768, -32767, -300, -7, -1, 0, 1, 7, 300, 32767],
    "i32": [-2**31, -2**31 + 1, -100000, -7, -1, 0, 1, 7, 100000, 2**31 - 1],
    "i64": [-2**63, -2**63 + 1, -2**40, -7, -1, 0, 1, 7, 2**40, 2**63 - 1],
}


def pairs(dtype: str):
    values = INT_EDGES[dtype]
    a = np.array([x for x in values for _ in values], dtype=np.dtype(_np(dtype)))
    b = np.array([y for _ in values for y in values], dtype=np.dtype(_np(dtype)))
    return a, b


def _np(dtype: str) -> str:
    return numpy_dtype(dtype)


@pytest.mark.parametrize("dtype", sorted(INT_EDGES))
@pytest.mark.parametrize("expr", ["A[i] // B[i]", "A[i] % B[i]", "A[i] + B[i]", "A[i] - B[i]",
                                  "A[i] * B[i]", "max(A[i], B[i])", "min(A[i], B[i])",
                                  "-A[i]", "abs(A[i])"])
def test_integer_operators_wrap_and_floor(dtype, expr):
    a, b = pairs(dtype)
    func = binary_kernel(dtype, dtype, expr, a.size)
    want, got = compiled_and_interpreted(func, {"A": a, "B": b, "C": np.zeros_like(a)})
    assert_same(func, want, got)


def test_floor_division_corner_values():
    a, b = pairs("i32")
    func = binary_kernel("i32", "i32", "A[i] // B[i]", a.size)
    got = {"A": a, "B": b, "C": np.zeros_like(a)}
    runtime.compile(func, threads=1)(**got)
    lookup = dict(zip(zip(a.tolist(), b.tolist()), got["C"].tolist()))
    assert lookup[(-2**31, -1)] == -2**31  # wraps, no trap
    assert lookup[(7, 0)] == 0 and lookup[(-7, 0)] == 0
    assert lookup[(-7, 2 ** 31 - 1)] == -1  # floor, not truncation


@pytest.mark.parametrize("src", ["f16", "f32", "f64"])
@pytest.mark.parametrize("dst", ["i8", "u8", "i16", "i32", "i64"])
def test_float_to_int_casts_saturate(src, dst):
    values = [np.nan, np.inf, -np.inf, -0.0, 0.4, -0.6, 1.5, -1.5, 127.9, 128.0, -129.0, 255.5,
              256.0, 3e4, -3e4, 2.0**31, -2.0**31 - 4096, 2.0**63, -2.0**64, 1e300, -1e300]
    with np.errstate(over="ignore"):
        a = np.array(values, dtype=np.float64).astype(_np(src))
    func = unary_kernel(src, dst, f"{dst}(A[i])", a.size)
    want, got = compiled_and_interpreted(func, {"A": a, "B": np.zeros(a.size, _np(dst))})
    assert_same(func, want, got)


@pytest.mark.parametrize("src", sorted(INT_EDGES) + ["f16", "f32", "f64"])
@pytest.mark.parametrize("dst", sorted(INT_EDGES) + ["f16", "f32", "f64"])
def test_casts_between_every_pair(src, dst):
    if src in INT_EDGES:
        a = np.array(INT_EDGES[src], dtype=_np(src))
    else:
        # 1 + 2**-11 + 2**-40 rounds up to f16 once, but to 1.0 when rounded through f32
        values = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0 / 3, 65504.0, 65520.0, 1e-8, -2.5, 1e38,
                  6e-8, 1 + 2**-11 + 2**-40, -(1 + 2**-11 + 2**-40)]
        with np.errstate(over="ignore"):
            a = np.array(values, dtype=np.float64).astype(_np(src))
    func = unary_kernel(src, dst, f"{dst}(A[i])", a.size)
    want, got = compiled_and_interpreted(func, {"A": a, "B": np.zeros(a.size, _np(dst))})
    assert_same(func, want, got)


FLOAT_EDGES = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, -1.0, 0.1, 3.0, -2.5, 1e-3, 6.5e4]


def float_pairs(dtype: str):
    values = np.array(FLOAT_EDGES, dtype=np.float64).astype(_np(dtype))
    return np.repeat(values, values.size), np.tile(values, values.size)


@pytest.mark.parametrize("dtype", ["f16", "f32", "f64"])
@pytest.mark.parametrize("expr", ["A[i] + B[i]", "A[i] - B[i]", "A[i] * B[i]", "A[i] / B[i]",
                                  "max(A[i], B[i])", "min(A[i], B[i])", "-A[i]", "abs(A[i])",
                                  "sqrt(A[i])", "A[i] * B[i] + A[i] * 0.1",
                                  "select(A[i] != B[i], A[i], B[i] - 1.0)",
                                  "select(A[i] < B[i] and not (A[i] == 0.0) or B[i] >= 3.0, A[i], B[i])"])
def test_float_operators_are_ieee(dtype, expr):
    a, b = float_pairs(dtype)
    func = binary_kernel(dtype, dtype, expr, a.size)
    want, got = compiled_and_interpreted(func, {"A": a, "B": b, "C": np.zeros_like(a)})
    assert_same(func, want, got)


@pytest.mark.parametrize("dtype", ["f16", "f32", "f64"])
def test_exp_within_a_few_ulps(dtype):
    a = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, -1.0, 0.5, 10.0, -20.0, 80.0, 700.0,
                  -800.0, 1e-5], dtype=np.float64).astype(_np(dtype))
    func = unary_kernel(dtype, dtype, "exp(A[i])", a.size)
    want, got = compiled_and_interpreted(func, {"A": a, "B": np.zeros_like(a)})
    w, g = want["B"], got["B"]
    np.testing.assert_array_equal(np.isnan(g), np.isnan(w))
    finite = np.isfinite(w)
    np.testing.assert_array_equal(g[~finite], w[~finite])
    np.testing.assert_allclose(g[finite], w[finite], rtol=4 * np.finfo(w.dtype).eps)


@pytest.mark.parametrize("dtype", ["f32", "f64"])
def test_vectorised_exp_within_a_few_ulps_of_the_exact_value(dtype):
    # a loop long enough for LLVM to vectorise, whose vector exp runs on libmvec where the
    # host has it: every lane of every variant, against exp in a wider type
    rng = np.random.default_rng(7)
    top = 89.0 if dtype == "f32" else 710.0
    a = rng.uniform(-top - 16, top, 8192).astype(_np(dtype))
    specials = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-30, -1e-30, top - 0.3, top + 0.1,
                -top + 1.5, -top - 14.0, -top - 15.9]
    a[1000:1000 + len(specials)] = specials  # inside the vector loop, not its remainder
    func = unary_kernel(dtype, dtype, "exp(A[i])", a.size)
    ll = runtime.emit_llvm(func)
    # every vector width LLVM chose that libmvec has (for this CPU) calls libmvec; an AVX
    # CPU without AVX2 keeps LLVM's 8-lane exp, which libmvec's variants there do not take
    left = set(re.findall(r"@llvm\.exp\.(v\d+f\d+)\(", ll))
    assert not left & set(codegen.vector_math()), ll
    if codegen.vector_math() and not left:
        assert any(f"@{name}(" in ll for name in codegen.vector_math().values()), ll
    want, got = compiled_and_interpreted(func, {"A": a, "B": np.zeros_like(a)})
    g = got["B"]
    exact = np.exp(a.astype(np.longdouble if dtype == "f64" else np.float64))
    with np.errstate(over="ignore"):
        rounded = exact.astype(a.dtype)
    special = ~np.isfinite(rounded) | (rounded == 0)
    np.testing.assert_array_equal(g[special], want["B"][special])  # NaN, inf, 0 as numpy
    spacing = np.spacing(rounded[~special]).astype(exact.dtype)
    ulps = np.abs(g[~special].astype(exact.dtype) - exact[~special]) / spacing
    assert ulps.max() <= 4, ulps.max()


@pytest.mark.skipif(target.host_arch() != "x86", reason="compiles for an x86 CPU")
def test_vector_exp_variants_follow_the_cpu_code_is_generated_for():
    # Zen 3's code on any x86 host: its 8-lane exp on the AVX2 variant, never the AVX-512
    # one (whose vectors a call passes in zmm registers); a CPU named without its features
    # keeps LLVM's own exp, split into expf calls
    func = unary_kernel("f32", "f32", "exp(A[i])", 4096)
    here = codegen.vector_math()
    try:
        codegen.generate_for("znver3", frozenset({"avx", "avx2", "fma", "f16c"}))
        if codegen.vector_library():
            assert set(codegen.vector_math().values()) == {"_ZGVdN8v_expf", "_ZGVdN4v_exp"}
            assert "@_ZGVdN8v_expf(" in runtime.emit_llvm(func)
        codegen.generate_for("znver3")
        assert codegen.vector_math() == {}
        assert "@_ZGV" not in runtime.emit_llvm(func)
    finally:
        codegen.generate_for(None)
    assert codegen.vector_math() == here


@pytest.mark.parametrize("dtype", ["f16", "f32", "f64"])
def test_nan_propagates_through_max_and_min(dtype):
    func = binary_kernel(dtype, dtype, "max(A[i], B[i]) + min(B[i], A[i])", 3)
    a = np.array([np.nan, 1.0, 2.0], _np(dtype))
    b = np.array([1.0, np.nan, 3.0], _np(dtype))
    got = {"A": a, "B": b, "C": np.zeros(3, _np(dtype))}
    runtime.compile(func, threads=1)(**got)
    assert np.isnan(got["C"][0]) and np.isnan(got["C"][1]) and got["C"][2] == 5.0


def test_f16_rounds_after_every_operation():
    # 2048 + 1 is not an f16; a wider intermediate would give 2049 - 2048 = 1
    func = binary_kernel("f16", "f16", "(A[i] + B[i]) - A[i]", 1)
    got = {"A": np.array([2048], np.float16), "B": np.array([1], np.float16),
           "C": np.zeros(1, np.float16)}
    runtime.compile(func, threads=1)(**got)
    assert got["C"][0] == 0


def test_integer_compares_use_the_dtypes_signedness():
    func = binary_kernel("u8", "u8", "select(A[i] < B[i], A[i], B[i])", 2)
    a, b = np.array([200, 1], np.uint8), np.array([1, 200], np.uint8)
    want, got = compiled_and_interpreted(func, {"A": a, "B": b, "C": np.zeros(2, np.uint8)})
    assert_same(func, want, got)
    assert got["C"].tolist() == [1, 1]


def test_indices_with_floor_division_and_modulo():
    func = parse("""
@prim_func
def k(A: f32[4, 6], B: f32[24]):
    for i in range(24):
        B[i] = A[i // 6, i % 6] + A[(i + 5) // 8, (i * 5 + 3) % 6]
""")
    args = random_args(func)
    want, got = compiled_and_interpreted(func, args)
    assert_same(func, want, got)


def test_conditionals_loops_and_temporaries():
    func = parse("""
@prim_func
def k(A: i32[8], B: i32[8]):
    T = alloc(i32[8])
    for i in range(8):
        if i % 2 == 0:
            T[i] = A[i] * 3
        else:
            T[i] = T[i] - A[i]
    for i in range(1, 8):
        B[i] = T[i] + T[i - 1]
""")
    args = random_args(func)
    want, got = compiled_and_interpreted(func, args)
    assert_same(func, want, got)


@pytest.mark.parametrize("dtype", ["i8", "u8", "i16", "i32", "i64", "f16", "f32", "f64"])
def test_reductions_in_every_dtype(dtype):
    func = parse(f"""
@prim_func
def k(A: {dtype}[16, 33], B: {dtype}[16]):
    for i in range(16):
        B[i] = A[i, 0]
        for j in range(1, 33):
            B[i] += A[i, j]
""")
    args = random_args(func)
    want, got = compiled_and_interpreted(func, args)
    assert_same(func, want, got, exact=dtype[0] != "f")


# ---------------------------------------------------------------------------
# intrinsic calls: native where this CPU has the instructions, else emulated


def _calling(desc, repeat: int):
    """``for t in range(repeat): call(desc, ...)`` on operands stacked ``repeat`` times."""
    from rewrite.ir import Buffer, Call, Const, For, PrimFunc, Var, Window

    params, operands = [], []
    for o in desc.operands:
        buf = Buffer(o.name.upper(), o.dtype, (repeat,) + o.shape)
        steps = tuple(tuple(int(k == d + 1) for k in range(len(o.shape) + 1))
                      for d in range(len(o.shape)))
        base = (Var("t"),) + tuple(Const(0, "i64") for _ in o.shape)
        params.append(buf)
        operands.append((o.name, Window(buf, base, steps)))
    body = For("t", 0, repeat, Call(desc, tuple(operands), desc.output.name))
    return PrimFunc("calls", tuple(params), body)


def _intrinsic_names():
    import intrinsics

    return sorted(d.name for d in intrinsics.all())


@pytest.mark.parametrize("name", _intrinsic_names())
def test_intrinsic_calls_match_their_semantics(name):
    import intrinsics

    func = _calling(intrinsics.get(name), repeat=5)
    args = random_args(func, seed=4)
    want = run(calls.expand_calls(func), **args)
    for threads in (1, 2):
        got = {n: a.copy() for n, a in args.items()}
        runtime.compile(func, threads=threads)(**got)
        assert_same(func, want, got, exact=False)
    assert runtime.check(func).ok


def test_calls_are_expanded_for_analysis_and_counted():
    import intrinsics

    desc = intrinsics.get("x86.fma.f32x8")
    func = _calling(desc, repeat=3)
    expanded = calls.expand_calls(func)
    assert "+=" in show(expanded) and "call(" not in show(expanded)
    assert calls.op_count(func.body) == calls.op_count(expanded.body) == 3 * 16


# ---------------------------------------------------------------------------
# emitted text


MATMUL = """
@prim_func
def mm(A: f32[64, 64], B: f32[64, 64], C: f32[64, 64]):
    for i, j in grid(64, 64):
        C[i, j] = 0.0
    for i, k, j in grid(64, 64, 64):
        C[i, j] += A[i, k] * B[k, j]
"""


def test_emit_llvm_is_vectorised_for_this_cpu():
    text = runtime.emit_llvm(parse(MATMUL))
    lanes = {int(n) for n in re.findall(r"<(\d+) x float>", text)}
    # as wide as this CPU's vectors go, or LLVM's preferred width for it: 8 lanes on AVX2, 8 or
    # 16 with AVX-512 (LLVM prefers 256-bit vectors on some AVX-512 CPUs)
    assert lanes and max(lanes) >= (8 if "avx2" in host_features() else 4)
    assert max(lanes) <= (16 if "avx512f" in host_features() else 8)
    assert "noalias" in runtime.emit_llvm(parse(MATMUL), optimized=False)


def test_emit_asm_uses_fma():
    assert "vfmadd" in runtime.emit_asm(parse(MATMUL))


@pytest.mark.skipif(target.host_arch() != "x86", reason="compiles for an x86 CPU")
def test_code_generated_for_a_named_cpu():
    # Zen 3's code (AVX2 and FMA, 16 vector registers), as an AVX2 host compiles it, on any
    # x86 host (compiled, not run): no 512-bit register and none past ymm15; the cache key
    # names the CPU; None goes back to this CPU
    host = codegen.target_id()
    try:
        codegen.generate_for("znver3")
        assert codegen.target_id() != host and "znver3" in codegen.target_id()
        asm = runtime.emit_asm(parse(MATMUL))
        assert "vfmadd" in asm and not re.search(r"%zmm|%ymm(1[6-9]|2\d|3[01])", asm)
        assert not intrinsic_bench._zmm()  # the FMA peak is then measured on 8 lanes
    finally:
        codegen.generate_for(None)
    assert codegen.target_id() == host


def test_op_count_and_reduction_length():
    func = parse(MATMUL)
    assert calls.op_count(func.body) == 2 * 64 ** 3
    assert calls.reduction_length(func) == 64


def test_a_sum_written_as_a_store_of_itself_is_a_reduction_too():
    from rewrite import runtime

    # the near miss ``tensorize fuzz --intrinsic x86.avx512.gemv.f32.8x16 --examples 100
    # --seed 12 --unit 0`` drew: C[w] summed over v as ``C[w] = C[w] + ...``, and alpha
    # reset to it after each row; counted as one addition, its roundoff failed the check
    func = parse("""
@prim_func
def near_miss(A: f32[8, 32], B: f32[32], alpha: f32[1], C: f32[8]):
    for w in range(8):
        for v in range(32):
            C[w] = C[w] + alpha[0] * (A[w, v] * B[v])
        alpha[0] = C[w]
""")
    assert calls.reduction_length(func) == 32
    plain = parse("@prim_func\ndef f(A: f32[8, 32], C: f32[8]):\n    for w, v in grid(8, 32):\n"
                  "        C[w] = A[w, v] + A[w, 0]\n")
    assert calls.reduction_length(plain) == 1  # a store that reads other elements: no chain
    assert runtime.check(func, runtime.compile(func), seed=0).ok


def test_what_hangs_on_a_rounded_or_compared_sum_is_beyond_roundoff():
    func = parse("""
@prim_func
def f(A: i32[4], S: f32[1], C: i32[1], E: f32[1], F: f32[1], G: f32[1], H: i32[1]):
    for k in range(4):
        S[0] += S[0] * f32(A[k])
    C[0] = i32(S[0])
    E[0] = f32(i16(i32(S[0])))
    if S[0] > 0.5:
        F[0] = 1.0
    G[0] = S[0] * 2.0
    if C[0] > 3:
        H[0] = 1
""")
    # C: one unit plus roundoff; G: roundoff; the rest hang on a decision roundoff may flip
    assert runtime.beyond_roundoff(func) == {"E", "F", "H"}
    # and a check says which outputs it could not compare
    assert runtime.check(func).unchecked == ("E", "F", "H")
    # without a float sum or exp, compiled code rounds as the interpreter: nothing is beyond
    assert runtime.beyond_roundoff(parse("""
@prim_func
def f(S: f32[1], E: f32[1]):
    E[0] = f32(i16(i32(S[0] * 3.0)))
""")) == set()


# ---------------------------------------------------------------------------
# intrinsic calls along a reduction: accumulators kept in registers (codegen.call_loop)

HAS_AVX2 = {"avx2", "fma"} <= host_features()

DOT_K_LOOP = '''
@prim_func
def dots(A: u8[3, 64], B: i8[16, 64], C: i32[3, 16]):
    for i, k_o in grid(3, 16):
        call("x86.dot.u8i8i32.16x4", c=window(C[i, 0], (0, 1)), a=window(A[i, 4 * k_o], (0, 1)),
             b=window(B[0, 4 * k_o], (1, 0), (0, 1)))
'''

# the input reads the output block itself: each call must see the previous call's result
SELF_READ = '''
@prim_func
def self_read(B: f32[8, 8], C: f32[8]):
    for k in range(8):
        call("x86.fma.f32x8", c=window(C[0], (1,)), a=window(C[0], (1,)), b=window(B[k, 0], (0, 1)))
'''

EMULATED_K_LOOP = '''
@prim_func
def sdots(A: i8[8, 32], B: i8[8, 32], C: i32[8]):
    for i_o, k_o in grid(2, 8):
        call("arm.neon.sdot.i8i32.4x4", c=window(C[4 * i_o], (1,)),
             a=window(A[4 * i_o, 4 * k_o], (1, 0), (0, 1)), b=window(B[4 * i_o, 4 * k_o], (1, 0), (0, 1)))
'''


@pytest.mark.parametrize("text", [DOT_K_LOOP, SELF_READ, EMULATED_K_LOOP],
                         ids=["dot", "self_read", "emulated"])
def test_calls_along_a_reduction_match_the_interpreter(text):
    if "x86" in text and not HAS_AVX2:
        pytest.skip("the host has no AVX2+FMA")
    func = parse(text)
    check = runtime.check(func, runtime.compile(func, threads=1))
    assert check.ok, check.message


def test_only_a_reduction_no_input_reads_keeps_accumulators_in_registers():
    # phi_loop names its blocks "kloop": the accumulators are carried in phi nodes there
    assert "kloop" in runtime.emit_llvm(parse(DOT_K_LOOP), optimized=False)
    assert "kloop" in runtime.emit_llvm(parse(EMULATED_K_LOOP), optimized=False)
    assert "kloop" not in runtime.emit_llvm(parse(SELF_READ), optimized=False)


INTERLEAVE = """
@prim_func
def pack(B: i8[64, 48], P: i8[16, 48, 4], Q: f32[8, 40], R: f32[40, 8], S: f32[16, 40],
         T: f32[40, 16]):
    for k4, j, kk in grid(16, 48, 4):
        P[k4, j, kk] = B[4 * k4 + kk, j]
    for i, j in grid(40, 8):
        R[i, j] = Q[j, i]
    for i, j in grid(40, 16):
        T[i, j] = S[j, i]
"""


def test_a_copy_interleaving_a_few_rows_has_its_innermost_loop_unrolled():
    func = parse(INTERLEAVE)
    plan = lower.lower(func)
    body = show(plan.func)
    # the four rows of each group of k are copied in one iteration of j, each a row read
    # along j, and so are the eight of a transpose; sixteen rows are no longer a few
    for kk in range(4):
        assert f"P[k4, j, {kk}] = B[" in body
    assert "for k4, j, kk in grid" not in body and "R[i, 7] = Q[7, i]" in body
    assert "for i, j in grid(40, 16):" in body
    args = random_args(func, 0, special=True)  # NaN, infinities and signed zeros copied bit for bit
    want = run(func, **args)
    kernel = runtime.compile(func, threads=1)
    kernel(**args)
    for name in ("P", "R", "T"):
        assert args[name].tobytes() == want[name].tobytes()


# a call loop of an emitter whose step hands its partial sums on to the other set
# (x86 ``_alternate``) runs two steps an iteration: odd and even counts, and a single step
ALTERNATING_K_LOOP = '''
@prim_func
def rows(A: f32[{k}, 70], x: f32[{k}], y: f32[64], B: f32[4, {n}], v: f32[{n}], q: f32[8]):
    for i in range({k}):
        call("x86.axpy.f32x8", c=window(y[8], (1,)), a=window(x[i], (0,)), b=window(A[i, 3], (0, 1)))
    for j_o in range({k}):
        call("x86.gemv.f32.4x8", c=window(q[2], (1,)), a=window(B[0, 8 * j_o], (1, 0), (0, 1)),
             b=window(v[8 * j_o], (1,)))
'''


@pytest.mark.parametrize("k", [1, 2, 5, 8])
def test_alternating_call_loops_unrolled_by_two_match_the_interpreter(k):
    if not HAS_AVX2:
        pytest.skip("the host has no AVX2+FMA")
    func = parse(ALTERNATING_K_LOOP.format(k=k, n=8 * k))
    check = runtime.check(func, runtime.compile(func, threads=1))
    assert check.ok, check.message
    # the formula: y[8:16] += A[:, 3:11]^T x and q[2:6] += B v
    args = {n: np.asarray(v) for n, v in random_args(func, seed=3).items()}
    want_y, want_q = args["y"].astype(np.float64), args["q"].astype(np.float64)
    want_y[8:16] += args["x"].astype(np.float64) @ args["A"][:, 3:11].astype(np.float64)
    want_q[2:6] += args["B"].astype(np.float64) @ args["v"].astype(np.float64)
    runtime.compile(func, threads=1)(**args)
    np.testing.assert_allclose(args["y"], want_y, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(args["q"], want_q, rtol=1e-5, atol=1e-4)


def test_alternating_partial_sums_stay_in_their_registers():
    # unrolled by two, no phi of a loop takes another phi as its next value: with one step
    # an iteration every partial sum is such a copy
    if not HAS_AVX2:
        pytest.skip("the host has no AVX2+FMA")
    text = runtime.emit_llvm(parse(ALTERNATING_K_LOOP.format(k=9, n=72)))
    phis = {m[0]: (m[1], m[2]) for m in re.findall(
        r"(%[\w.]+) = phi [^\[]*\[ ([^,]+), %[\w.]+ \], \[ ([^,]+), %[\w.]+ \]", text)}
    assert len(phis) >= 4, text
    assert not any(v in phis for incoming in phis.values() for v in incoming), text


# accumulators carried through a loop that holds other statements too (codegen.carry_loop)

CARRIED = '''
@prim_func
def carried(A: f32[16, 48], p: f32[48], r: f32[16], s: f32[48], q: f32[16]):
    for i_o in range(2):
        for j_o in range(6):
            call("x86.gemv.f32.4x8", c=window(q[8 * i_o], (1,)), a=window(A[8 * i_o, 8 * j_o], (1, 0), (0, 1)), b=window(p[8 * j_o], (1,)))
            for i_i in range(8):
                call("x86.axpy.f32x8", c=window(s[8 * j_o], (1,)), a=window(r[8 * i_o + i_i], (0,)), b=window(A[8 * i_o + i_i, 8 * j_o], (0, 1)))
        for h in range(2):
            for j_o in range(3):
                call("x86.gemv.f32.4x8", c=window(q[8 * i_o + 4], (1,)), a=window(A[8 * i_o + 4, 24 * h + 8 * j_o], (1, 0), (0, 1)), b=window(p[24 * h + 8 * j_o], (1,)))
            s[h] = s[h] + 1.0
'''

# the same loop, but a statement in it reads the block the gemv adds into: carrying the
# block in registers would hide the gemv's sums from it
CARRIED_READ = CARRIED.replace("s[h] = s[h] + 1.0", "s[h] = q[8 * i_o + 5]")


@pytest.mark.parametrize("text", [CARRIED, CARRIED_READ], ids=["carried", "read_inside"])
def test_calls_carried_through_loops_match_the_interpreter(text):
    if not HAS_AVX2:
        pytest.skip("the host has no AVX2+FMA")
    func = parse(text)
    check = runtime.check(func, runtime.compile(func, threads=1))
    assert check.ok, check.message
    # the formula for q: q += A p, the rows 8 * i_o + 4 to 8 * i_o + 8 in two halves of columns
    args = {n: np.asarray(v) for n, v in random_args(func, seed=5).items()}
    a, p, r = (args[n].astype(np.float64) for n in "Apr")
    want_q = args["q"].astype(np.float64)
    for rows in (slice(0, 4), slice(4, 8), slice(8, 12), slice(12, 16)):
        want_q[rows] += a[rows] @ p
    runtime.compile(func, threads=1)(**args)
    np.testing.assert_allclose(args["q"], want_q, rtol=1e-5, atol=1e-4)


def test_only_a_block_nothing_else_in_the_loop_touches_is_carried():
    # carried: the first j_o loop and the h loop each keep their gemv's block in phi nodes
    # ("kloop" blocks) where they hold other statements; read inside: the h loop does not
    def kloops(text):
        text = runtime.emit_llvm(parse(text), optimized=False)
        return len(re.findall(r'^"?kloop\.end[\w.]*"?:', text, re.M))
    assert kloops(CARRIED) > kloops(CARRIED_READ) > 0


def test_code_for_another_cpu_is_refused_where_this_machine_lacks_its_instructions(monkeypatch, capsys):
    from rewrite.tools import on_cpu

    with pytest.raises(SystemExit) as stop:
        on_cpu.main(["pentium4", "rewrite.cli"])
    assert stop.value.code == 2 and "no CPU 'pentium4'" in capsys.readouterr().err
    monkeypatch.setattr(on_cpu, "host_features", lambda: frozenset({"avx2", "fma", "bmi2"}))
    with pytest.raises(SystemExit) as stop:
        on_cpu.main(["znver4", "rewrite.cli"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1
    assert re.search(r"znver4's code would use .*avx512f.*which this machine lacks", err)
    assert codegen._cpu is None  # nothing was generated for it


@pytest.mark.skipif(not {"avx", "avx2", "fma"} <= target.host_features(), reason="needs AVX2 and FMA")
def test_the_host_library_for_another_cpus_code_holds_only_the_rows_it_can_run():
    # on an AVX-512 host, Zen 3's code must not get the host's AVX-512 rows (LLVM cannot
    # compile them for it and stops the process): library("host") follows the named CPU
    import intrinsics
    from rewrite.pipeline import tensorize
    from rewrite.tools import on_cpu

    mine = {d.name for d in intrinsics.library("host")}
    try:
        codegen.generate_for("znver3", on_cpu.features_of("znver3"))
        theirs = {d.name for d in intrinsics.library("host")}
        assert theirs == {d.name for d in intrinsics.library("x86-avx2")}
        func = parse("""
@prim_func
def q(A: u8[64, 64], B: i8[64, 64], C: i32[64, 64]):
    for i, j, k in grid(64, 64, 64):
        C[i, j] += i32(A[i, k]) * i32(B[k, j])
""")
        result = tensorize(func)
        assert {s.intrinsic for s in result.sites} <= theirs and result.sites
        asm = runtime.emit_asm(result.func)
        assert "vpmaddwd" in asm and not re.search(r"%zmm|vpdp", asm)
    finally:
        codegen.generate_for(None)
    assert {d.name for d in intrinsics.library("host")} == mine
