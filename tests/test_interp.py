"""The reference interpreter against independent numpy formulas and hand-computed values.

Every expected value here comes from numpy or plain Python written in the test, never from
the interpreter. Programs that must not be vectorised are also run with
``vectorize=False`` (one iteration at a time), and the two paths must agree bit for bit
(up to which NaN a NaN result is).
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import given

from rewrite import ir
from rewrite.inputs import random_args
from rewrite.interp import interpret, run
from rewrite.ir import Binary, Buffer, Compare, Const, For, If, Load, PrimFunc, Store, Var
from rewrite.script import parse

from rewrite.fuzz import programs

BOTH = pytest.mark.parametrize("vectorize", [True, False], ids=["vector", "scalar"])


def interp(func: PrimFunc, vectorize: bool = True, **arrays: np.ndarray) -> dict[str, np.ndarray]:
    """Run on copies of ``arrays`` (outputs default to zeros) with the chosen path."""
    bound = {b.name: np.zeros(b.shape, ir.numpy_dtype(b.dtype)) for b in func.params}
    bound.update({k: np.array(v, copy=True) for k, v in arrays.items()})
    interpret(func, bound, vectorize=vectorize)
    return bound


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Identical bits, except that any NaN equals any NaN: IEEE leaves open which operand's
    NaN (sign, payload) an operation returns, and numpy's loops differ in that choice."""
    if a.dtype.kind != "f":
        return a.tobytes() == b.tobytes()
    nan = np.isnan(a)
    return np.array_equal(nan, np.isnan(b)) and a[~nan].tobytes() == b[~nan].tobytes()


def both_paths(func: PrimFunc, args: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run both paths, require identical results (see ``same_bits``), return the result."""
    vec = interp(func, True, **args)
    ref = interp(func, False, **args)
    for name in vec:
        assert same_bits(vec[name], ref[name]), f"{name} differs between paths"
    return vec


def unary_kernel(expr_text: str, src: str, dst: str, n: int) -> PrimFunc:
    return parse(f"""
@prim_func
def k(X: {src}[{n}], Y: {dst}[{n}]):
    for i in range({n}):
        Y[i] = {expr_text}
""")


def binary_kernel(expr_text: str, dtype: str, n: int, out: str | None = None) -> PrimFunc:
    return parse(f"""
@prim_func
def k(A: {dtype}[{n}], B: {dtype}[{n}], Y: {out or dtype}[{n}]):
    for i in range({n}):
        Y[i] = {expr_text}
""")


def wrap(values, dtype: str) -> np.ndarray:
    """Python integers reduced to ``dtype``'s two's complement range, by arithmetic."""
    bits = ir.bits(dtype)
    out = []
    for v in values:
        v %= 1 << bits
        if ir.is_signed(dtype) and v >= 1 << (bits - 1):
            v -= 1 << bits
        out.append(v)
    return np.array(out, dtype=ir.numpy_dtype(dtype))


# ---------------------------------------------------------------------------
# integer arithmetic wraps around


@BOTH
@pytest.mark.parametrize("dtype", ["i8", "u8", "i16", "i32", "i64"])
@pytest.mark.parametrize("op", ["+", "-", "*"])
def test_integer_arithmetic_wraps(dtype, op, vectorize):
    info = np.iinfo(ir.numpy_dtype(dtype))
    a = [info.max, info.min, info.max, 7, info.min, 0, 3]
    b = [1, -1 if info.min else 1, info.max, -9 if info.min else 9, info.min, info.min, 5]
    f = binary_kernel(f"A[i] {op} B[i]", dtype, len(a))
    A, B = np.array(a, dtype=info.dtype), np.array(b, dtype=info.dtype)
    py = {"+": lambda x, y: x + y, "-": lambda x, y: x - y, "*": lambda x, y: x * y}[op]
    want = wrap([py(x, y) for x, y in zip(a, b)], dtype)
    assert np.array_equal(interp(f, vectorize, A=A, B=B)["Y"], want)


@BOTH
@pytest.mark.parametrize("dtype", ["i8", "i32", "i64"])
def test_negation_and_abs_of_the_minimum_wrap(dtype, vectorize):
    info = np.iinfo(ir.numpy_dtype(dtype))
    x = np.array([info.min, -5, 0, info.max], dtype=info.dtype)
    neg = interp(unary_kernel("-X[i]", dtype, dtype, 4), vectorize, X=x)["Y"]
    ab = interp(unary_kernel("abs(X[i])", dtype, dtype, 4), vectorize, X=x)["Y"]
    assert np.array_equal(neg, wrap([-int(v) for v in x], dtype))
    assert np.array_equal(ab, wrap([abs(int(v)) for v in x], dtype))
    assert ab[0] == info.min


@BOTH
@pytest.mark.parametrize("dtype", ["i8", "i32", "i64"])
def test_floor_division_and_modulo(dtype, vectorize):
    info = np.iinfo(ir.numpy_dtype(dtype))
    a = [7, -7, 7, -7, 5, info.min, info.min, info.max, 0, -1]
    b = [2, 2, -2, -2, 0, -1, 0, -1, -3, 3]
    A, B = np.array(a, dtype=info.dtype), np.array(b, dtype=info.dtype)
    q = interp(binary_kernel("A[i] // B[i]", dtype, len(a)), vectorize, A=A, B=B)["Y"]
    r = interp(binary_kernel("A[i] % B[i]", dtype, len(a)), vectorize, A=A, B=B)["Y"]
    # Python's // and % are floor division; a zero divisor gives 0 by definition.
    assert np.array_equal(q, wrap([x // y if y else 0 for x, y in zip(a, b)], dtype))
    assert np.array_equal(r, wrap([x % y if y else 0 for x, y in zip(a, b)], dtype))
    assert q[5] == info.min  # MIN // -1 wraps
    assert list(q[:4]) == [3, -4, -4, 3] and list(r[:4]) == [1, 1, -1, -1]


@BOTH
def test_unsigned_floor_division(vectorize):
    A = np.array([255, 200, 7, 0], np.uint8)
    B = np.array([16, 0, 255, 3], np.uint8)
    f = binary_kernel("A[i] // B[i]", "u8", 4)
    assert list(interp(f, vectorize, A=A, B=B)["Y"]) == [15, 0, 0, 0]


# ---------------------------------------------------------------------------
# casts


SPECIALS = [0.0, -0.0, 0.7, -0.7, 1.5, -1.5, 127.9, 128.0, -128.5, -129.0, 255.9, 256.0,
            2147483520.0, 2147483648.0, -2147483648.0, -2147483904.0, 3e38, -3e38,
            float("inf"), float("-inf"), float("nan")]


def saturate(x: float, dtype: str) -> int:
    """The documented float -> int cast, from first principles."""
    info = np.iinfo(ir.numpy_dtype(dtype))
    if x != x:
        return 0
    if x == float("inf"):
        return int(info.max)
    if x == float("-inf"):
        return int(info.min)
    return max(int(info.min), min(int(info.max), int(x)))  # int() truncates toward zero


@BOTH
@pytest.mark.parametrize("src", ["f32", "f64", "f16"])
@pytest.mark.parametrize("dst", ["i8", "u8", "i16", "i32", "i64"])
def test_float_to_int_casts_saturate(src, dst, vectorize):
    with np.errstate(over="ignore"):  # the largest specials become inf in f16, on purpose
        x = np.array(SPECIALS, dtype=ir.numpy_dtype(src))
    f = unary_kernel(f"{dst}(X[i])", src, dst, len(SPECIALS))
    got = interp(f, vectorize, X=x)["Y"]
    want = [saturate(float(v), dst) for v in x]
    assert [int(v) for v in got] == want


@BOTH
def test_casts_to_i64_at_the_edge_of_its_range(vectorize):
    x = np.array([2.0**63, -2.0**63, 2.0**62, -(2.0**63) - 4096.0, 9.2e18], np.float64)
    got = interp(unary_kernel("i64(X[i])", "f64", "i64", 5), vectorize, X=x)["Y"]
    assert [int(v) for v in got] == [2**63 - 1, -2**63, 2**62, -2**63, 9200000000000000000]


@BOTH
def test_int_to_int_casts_wrap_and_extend_by_source_signedness(vectorize):
    x = np.array([-1, 127, -128, 5], np.int8)
    u = interp(unary_kernel("u8(X[i])", "i8", "u8", 4), vectorize, X=x)["Y"]
    w = interp(unary_kernel("i32(X[i])", "i8", "i32", 4), vectorize, X=x)["Y"]
    assert list(u) == [255, 127, 128, 5] and list(w) == [-1, 127, -128, 5]
    y = np.array([255, 128, 0, 7], np.uint8)
    assert list(interp(unary_kernel("i32(X[i])", "u8", "i32", 4), vectorize, X=y)["Y"]) == \
        [255, 128, 0, 7]
    z = np.array([300, -129, 2**31 - 1, 128], np.int32)
    assert list(interp(unary_kernel("i8(X[i])", "i32", "i8", 4), vectorize, X=z)["Y"]) == \
        [44, 127, -1, -128]


@BOTH
def test_int_to_float_rounds_to_nearest(vectorize):
    big = 2**60 + 2**36 + 1  # just above a tie in f32: rounds up, a double-rounding bug rounds down
    x = np.array([big, 2**24 + 1, -(2**24) - 3, 16777217], np.int64)
    got = interp(unary_kernel("f32(X[i])", "i64", "f32", 4), vectorize, X=x)["Y"]
    assert float(got[0]) == 2**60 + 2**37
    assert [float(v) for v in got[1:]] == [2**24, -(2**24) - 4, 2**24]


@BOTH
def test_bool_to_number_gives_zero_or_one(vectorize):
    x = np.array([-1.0, 0.0, 2.0, np.nan], np.float32)
    got = interp(unary_kernel("f32(X[i] > 0.0) + f32(X[i] == X[i])", "f32", "f32", 4),
                 vectorize, X=x)["Y"]
    assert list(got) == [1.0, 1.0, 2.0, 0.0]


# ---------------------------------------------------------------------------
# floats


@BOTH
def test_f16_rounds_after_every_operation(vectorize):
    rng = np.random.default_rng(1)
    a = rng.uniform(-4, 4, 64).astype(np.float16)
    b = rng.uniform(-4, 4, 64).astype(np.float16)
    got = interp(binary_kernel("A[i] * B[i] + A[i]", "f16", 64), vectorize, A=a, B=b)["Y"]
    # An f16 product and sum are exact in f64; rounding each to f16 is the meaning.
    want = [np.float16(float(np.float16(float(x) * float(y))) + float(x)) for x, y in zip(a, b)]
    assert got.tobytes() == np.array(want, np.float16).tobytes()
    # With a single rounding at the end some results differ, so the test can tell.
    once = np.array([float(x) * float(y) + float(x) for x, y in zip(a, b)]).astype(np.float16)
    assert not np.array_equal(once, got)


@BOTH
def test_f16_accumulation_rounds_each_step(vectorize):
    f = parse("""
@prim_func
def total(X: f16[2048], S: f16[1]):
    for k in range(2048):
        S[0] += X[k]
""")
    # 1024 ones, then halves: 1024.5 is a tie between f16 neighbours 1024 and 1025 and
    # rounds to even, so rounding after each step keeps the sum at 1024.
    x = np.full(2048, 1.0, np.float16)
    x[1024:] = 0.5
    s = 0.0
    for v in x:
        s = float(np.float16(s + float(v)))
    got = interp(f, vectorize, X=x)["S"]
    assert float(got[0]) == s
    assert s != 1024 + 512


@BOTH
def test_max_and_min_propagate_nan(vectorize):
    a = np.array([np.nan, 1.0, 2.0, np.nan, -0.5], np.float32)
    b = np.array([1.0, np.nan, 3.0, np.nan, -0.25], np.float32)
    mx = interp(binary_kernel("max(A[i], B[i])", "f32", 5), vectorize, A=a, B=b)["Y"]
    mn = interp(binary_kernel("min(A[i], B[i])", "f32", 5), vectorize, A=a, B=b)["Y"]
    assert np.isnan(mx[[0, 1, 3]]).all() and np.isnan(mn[[0, 1, 3]]).all()
    assert list(mx[[2, 4]]) == [3.0, -0.25] and list(mn[[2, 4]]) == [2.0, -0.5]


@BOTH
def test_float_division_exp_and_sqrt_are_ieee(vectorize):
    a = np.array([1.0, -1.0, 0.0, 3.0], np.float32)
    b = np.array([0.0, 0.0, 0.0, 4.0], np.float32)
    q = interp(binary_kernel("A[i] / B[i]", "f32", 4), vectorize, A=a, B=b)["Y"]
    assert q[0] == np.inf and q[1] == -np.inf and np.isnan(q[2]) and q[3] == np.float32(0.75)
    x = np.array([4.0, -1.0, 0.0, 100.0], np.float64)
    r = interp(unary_kernel("sqrt(X[i])", "f64", "f64", 4), vectorize, X=x)["Y"]
    e = interp(unary_kernel("exp(X[i])", "f64", "f64", 4), vectorize, X=x)["Y"]
    assert r[0] == 2.0 and np.isnan(r[1]) and r[2] == 0.0
    assert e[2] == 1.0 and e[3] == np.exp(100.0) and e[1] == np.exp(-1.0)


@BOTH
def test_select_comparisons_and_logic(vectorize):
    f = parse("""
@prim_func
def k(A: i32[6], B: i32[6], Y: i32[6]):
    for i in range(6):
        Y[i] = select(A[i] < B[i] and not A[i] == 0 or B[i] >= 5, A[i] - B[i], A[i] * B[i])
""")
    a = np.array([1, 0, 4, 7, -3, 2], np.int32)
    b = np.array([2, 1, 3, 5, 6, 2], np.int32)
    want = [x - y if (x < y and not x == 0) or y >= 5 else x * y for x, y in zip(a, b)]
    assert list(interp(f, vectorize, A=a, B=b)["Y"]) == want


# ---------------------------------------------------------------------------
# workloads against numpy


def matmul_script(n: int, m: int, k: int, dtype: str = "f32") -> PrimFunc:
    return parse(f"""
@prim_func
def matmul(A: {dtype}[{n}, {k}], B: {dtype}[{k}, {m}], C: {dtype}[{n}, {m}]):
    for i, j in grid({n}, {m}):
        C[i, j] = 0.0
        for k in range({k}):
            C[i, j] += A[i, k] * B[k, j]
""")


def sequential_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Sums in the program's order (k ascending), each step rounded to the dtype."""
    c = np.zeros((a.shape[0], b.shape[1]), a.dtype)
    for k in range(a.shape[1]):
        c = c + a[:, k:k + 1] * b[k:k + 1, :]
    return c


@BOTH
def test_matmul_small(vectorize):
    f = matmul_script(6, 5, 7)
    args = random_args(f, seed=3)
    c = interp(f, vectorize, **args)["C"]
    assert c.tobytes() == sequential_matmul(args["A"], args["B"]).tobytes()
    assert np.allclose(c, args["A"].astype(np.float64) @ args["B"], atol=1e-5)


def test_matmul_128_exact_order_and_close_to_numpy():
    f = matmul_script(128, 128, 128)
    args = random_args(f, seed=0)
    t = time.perf_counter()
    c = run(f, **args)["C"]
    elapsed = time.perf_counter() - t
    print(f"128^3 matmul interpreted in {elapsed:.3f} s")
    assert c.tobytes() == sequential_matmul(args["A"], args["B"]).tobytes()
    assert np.allclose(c, args["A"].astype(np.float64) @ args["B"], atol=1e-4)


def test_integer_matmul_widened_from_int8():
    f = parse("""
@prim_func
def qmm(A: u8[16, 32], B: i8[32, 24], C: i32[16, 24]):
    for i, j, k in grid(16, 24, 32):
        C[i, j] += i32(A[i, k]) * i32(B[k, j])
""")
    args = random_args(f, seed=5)
    want = args["C"].astype(np.int64) + args["A"].astype(np.int64) @ args["B"].astype(np.int64)
    got = both_paths(f, args)["C"]
    assert np.array_equal(got, want.astype(np.int32))


def test_conv2d_nhwc_against_slicing():
    f = parse("""
@prim_func
def conv(X: f32[1, 10, 12, 8], W: f32[3, 3, 8, 16], Y: f32[1, 10, 12, 16]):
    P = alloc(f32[1, 12, 14, 8])
    for n, h, w, c in grid(1, 10, 12, 8):
        P[n, h + 1, w + 1, c] = X[n, h, w, c]
    for n, h, w, co in grid(1, 10, 12, 16):
        Y[n, h, w, co] = 0.0
        for rh, rw, rc in grid(3, 3, 8):
            Y[n, h, w, co] += P[n, h + rh, w + rw, rc] * W[rh, rw, rc, co]
""")
    args = random_args(f, seed=1)
    x, w = args["X"].astype(np.float64), args["W"].astype(np.float64)
    p = np.pad(x, [(0, 0), (1, 1), (1, 1), (0, 0)])
    want = sum(p[:, rh:rh + 10, rw:rw + 12, :] @ w[rh, rw] for rh in range(3) for rw in range(3))
    got = both_paths(f, args)["Y"]
    assert np.allclose(got, want, atol=1e-5)


def test_max_plus_product():
    f = parse("""
@prim_func
def tropical(A: f32[20, 30], B: f32[30, 25], C: f32[20, 25]):
    for i, j in grid(20, 25):
        C[i, j] = -1000.0
        for k in range(30):
            C[i, j] = max(C[i, j], A[i, k] + B[k, j])
""")
    args = random_args(f, seed=2)
    want = np.maximum.reduce(args["A"][:, :, None] + args["B"][None, :, :], axis=1)
    assert np.array_equal(both_paths(f, args)["C"], want)


def test_prefix_sum_stays_sequential():
    f = parse("""
@prim_func
def scan(X: f32[300], Y: f32[300]):
    Y[0] = X[0]
    for i in range(1, 300):
        Y[i] = Y[i - 1] + X[i]
""")
    args = random_args(f, seed=4)
    # float32 cumsum adds left to right, the program's order.
    assert np.array_equal(both_paths(f, args)["Y"], np.cumsum(args["X"], dtype=np.float32))


def test_batched_prefix_sums():
    f = parse("""
@prim_func
def scan_rows(X: f32[16, 64], Y: f32[16, 64]):
    for b in range(16):
        Y[b, 0] = X[b, 0]
        for i in range(1, 64):
            Y[b, i] = Y[b, i - 1] + X[b, i]
""")
    args = random_args(f, seed=6)
    assert np.array_equal(both_paths(f, args)["Y"], np.cumsum(args["X"], axis=1, dtype=np.float32))


def test_softmax_rows():
    f = parse("""
@prim_func
def softmax(X: f32[8, 40], Y: f32[8, 40]):
    M = alloc(f32[8])
    S = alloc(f32[8])
    for i in range(8):
        M[i] = X[i, 0]
        for j in range(40):
            M[i] = max(M[i], X[i, j])
        for j in range(40):
            Y[i, j] = exp(X[i, j] - M[i])
            S[i] += Y[i, j]
        for j in range(40):
            Y[i, j] = Y[i, j] / S[i]
""")
    args = random_args(f, seed=7)
    x = args["X"].astype(np.float64)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    got = both_paths(f, args)["Y"]
    assert np.allclose(got, e / e.sum(axis=1, keepdims=True), rtol=1e-5)


def test_long_dot_product_keeps_program_order():
    f = parse("""
@prim_func
def dot(A: f32[20000], B: f32[20000], S: f32[1]):
    S[0] = 0.0
    for k in range(20000):
        S[0] += A[k] * B[k]
""")
    args = random_args(f, seed=8)
    s = np.float32(0.0)
    for p in args["A"] * args["B"]:
        s = np.float32(s + p)
    got = run(f, **args)["S"]
    assert got[0] == s
    assert np.isclose(got[0], np.dot(args["A"].astype(np.float64), args["B"]), atol=1e-3)


# ---------------------------------------------------------------------------
# programs whose loops must not (all) run as one vector step


def test_in_place_stencil_reads_what_it_just_wrote():
    f = parse("""
@prim_func
def smear(X: i32[50]):
    for i in range(1, 50):
        X[i] = X[i - 1] + X[i]
""")
    args = random_args(f, seed=9)
    assert np.array_equal(both_paths(f, args)["X"], np.cumsum(args["X"], dtype=np.int32))


def test_write_after_read_shift():
    f = parse("""
@prim_func
def shift(X: f32[40]):
    for i in range(39):
        X[i] = X[i + 1] * 2.0
""")
    args = random_args(f, seed=10)
    want = args["X"].copy()
    want[:-1] = args["X"][1:] * np.float32(2.0)
    assert np.array_equal(both_paths(f, args)["X"], want)


def test_two_statements_whose_order_matters():
    f = parse("""
@prim_func
def ping(A: f32[33], B: f32[33]):
    for i in range(32):
        B[i] = A[i] + 1.0
        A[i + 1] = B[i] * 2.0
""")
    args = random_args(f, seed=11)
    a, b = args["A"].copy(), args["B"].copy()
    for i in range(32):
        b[i] = a[i] + np.float32(1.0)
        a[i + 1] = b[i] * np.float32(2.0)
    got = both_paths(f, args)
    assert np.array_equal(got["A"], a) and np.array_equal(got["B"], b)


def test_reading_a_later_statement_of_the_previous_iteration():
    f = parse("""
@prim_func
def lag(X: f32[30], Y: f32[31], Z: f32[30]):
    for i in range(30):
        Z[i] = Y[i] * 3.0
        Y[i + 1] = X[i] + Z[i]
""")
    args = random_args(f, seed=12)
    y, z = args["Y"].copy(), args["Z"].copy()
    for i in range(30):
        z[i] = y[i] * np.float32(3.0)
        y[i + 1] = args["X"][i] + z[i]
    got = both_paths(f, args)
    assert np.array_equal(got["Y"], y) and np.array_equal(got["Z"], z)


def test_reduction_split_into_two_loops():
    f = parse("""
@prim_func
def split(A: f32[12, 50], S: f32[12]):
    for i in range(12):
        S[i] = 0.0
    for i, k in grid(12, 20):
        S[i] += A[i, k]
    for i, k in grid(12, 30):
        S[i] += A[i, k + 20]
""")
    args = random_args(f, seed=13)
    want = np.zeros(12, np.float32)
    for k in range(50):
        want = want + args["A"][:, k]
    assert np.array_equal(both_paths(f, args)["S"], want)


def test_accumulate_whose_value_reads_its_own_target():
    f = parse("""
@prim_func
def grow(X: f32[1]):
    for k in range(10):
        X[0] += X[0]
""")
    x = np.array([0.75], np.float32)
    assert both_paths(f, {"X": x})["X"][0] == 0.75 * 2**10


def test_if_else_and_temporaries():
    f = parse("""
@prim_func
def relu_or_square(X: f32[64], Y: f32[64]):
    T = alloc(f32[64])
    for i in range(64):
        if X[i] > 0.0:
            T[i] = X[i]
        else:
            T[i] = X[i] * X[i]
    for i in range(64):
        if i % 2 == 0:
            Y[i] = T[i] + T[63 - i]
        else:
            Y[i] = -T[i]
""")
    args = random_args(f, seed=14)
    x = args["X"]
    t = np.where(x > 0, x, x * x)
    want = np.where(np.arange(64) % 2 == 0, t + t[::-1], -t)
    assert np.array_equal(both_paths(f, args)["Y"], want)


def test_temporaries_start_at_zero():
    f = parse("""
@prim_func
def count(X: f32[8], Y: f32[8]):
    T = alloc(f32[8])
    for i in range(8):
        T[i] += X[i]
        Y[i] = T[i]
""")
    x = np.arange(8, dtype=np.float32)
    assert np.array_equal(both_paths(f, {"X": x})["Y"], x)


def test_guard_keeps_loads_in_bounds():
    # The verifier rejects this program text (X[i - 1] at i = 0), so it is built directly:
    # the interpreter must still only read where the condition holds.
    x, y = Buffer("X", "f32", (16,)), Buffer("Y", "f32", (16,))
    i = Var("i")
    cond = Compare(">=", i, Const(1, "i64"))
    body = If(cond, Store(y, (i,), Load(x, (Binary("-", i, Const(1, "i64")),))),
              Store(y, (i,), Const(-1.0, "f32")))
    f = PrimFunc("shift", (x, y), For("i", 0, 16, body))
    xs = np.arange(16, dtype=np.float32)
    got = both_paths(f, {"X": xs})["Y"]
    assert got[0] == -1.0 and np.array_equal(got[1:], xs[:-1])


def test_and_guards_its_right_operand():
    x, y = Buffer("X", "i32", (8,)), Buffer("Y", "i32", (8,))
    i = Var("i")
    read = Load(x, (Binary("-", i, Const(1, "i64")),))
    cond = ir.Logical("and", Compare(">", i, Const(0, "i64")), Compare(">", read, Const(3, "i32")))
    f = PrimFunc("g", (x, y), For("i", 0, 8, If(cond, Store(y, (i,), Const(1, "i32")))))
    xs = np.arange(8, dtype=np.int32)
    assert list(both_paths(f, {"X": xs})["Y"]) == [0, 0, 0, 0, 0, 1, 1, 1]


def test_out_of_bounds_access_raises():
    x, y = Buffer("X", "f32", (4,)), Buffer("Y", "f32", (4,))
    i = Var("i")
    f = PrimFunc("bad", (x, y), For("i", 0, 4, Store(y, (i,), Load(x, (Binary("+", i, Const(1, "i64")),)))))
    for vectorize in (True, False):
        with pytest.raises(IndexError, match="X"):
            interp(f, vectorize, X=np.zeros(4, np.float32))


# ---------------------------------------------------------------------------
# random programs: both paths agree


@given(programs())
def test_vector_and_scalar_paths_agree_on_random_programs(func):
    both_paths(func, random_args(func, seed=0))


# ---------------------------------------------------------------------------
# the calling convention


def test_wrong_arguments_raise_value_error_naming_the_buffer():
    f = matmul_script(4, 4, 4)
    good = random_args(f)
    bad_cases = [
        ({**good, "A": np.zeros((4, 5), np.float32)}, "A"),
        ({**good, "B": np.zeros((4, 4), np.float64)}, "B"),
        ({k: v for k, v in good.items() if k != "C"}, "C"),
        ({**good, "D": np.zeros(3)}, "D"),
        ({**good, "A": [[0.0] * 4] * 4}, "A"),
    ]
    for arrays, name in bad_cases:
        with pytest.raises(ValueError, match=name):
            interpret(f, arrays)
    ro = good["C"].copy()
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="C"):
        interpret(f, {**good, "C": ro})
    with pytest.raises(ValueError, match="C"):
        interpret(f, {**good, "C": good["A"]})


def test_interpret_runs_in_place_even_on_strided_arrays():
    f = matmul_script(4, 4, 4)
    args = random_args(f, seed=1)
    big = np.zeros((4, 8), np.float32)
    c = big[:, ::2]  # not contiguous
    interpret(f, {"A": args["A"], "B": args["B"], "C": c})
    assert np.allclose(big[:, ::2], args["A"].astype(np.float64) @ args["B"], atol=1e-5)
    assert not big[:, 1::2].any()


def test_run_fills_missing_outputs_and_leaves_inputs_alone():
    f = matmul_script(3, 3, 3)
    a = np.eye(3, dtype=np.float32)
    b = np.arange(9, dtype=np.float32).reshape(3, 3)
    out = run(f, A=a, B=b)
    assert set(out) == {"A", "B", "C"}
    assert np.array_equal(out["C"], b) and out["A"] is not a
    with pytest.raises(ValueError, match="B"):
        run(f, A=a)


def test_random_args_cover_every_parameter_with_its_dtype():
    f = parse("""
@prim_func
def mix(A: u8[40, 40], B: i8[40, 40], H: f16[7], D: f64[3, 2], C: i32[5]):
    for i in range(5):
        C[i] = i32(A[i, 0]) + i32(B[i, 0]) + i32(H[i]) + i32(D[0, 0])
""")
    args = random_args(f, seed=3)
    assert {k: (v.dtype, v.shape) for k, v in args.items()} == {
        b.name: (np.dtype(ir.numpy_dtype(b.dtype)), b.shape) for b in f.params}
    assert args["A"].min() < 30 and args["A"].max() > 225  # full u8 range
    assert args["B"].min() < -100 and args["B"].max() > 100
    assert np.abs(args["H"]).max() <= 1 and np.abs(args["D"]).max() <= 1
    assert args["C"].any()  # outputs are filled too: they may be read first
    again = random_args(f, seed=3)
    assert all(np.array_equal(args[k], again[k]) for k in args)


def test_statement_instances_fold_and_walk():
    """Counted by hand: 4 * (1 + 3) stores of T, 4 ifs, and the if's arm 3 times, 4 times."""
    from rewrite.interp import instances

    func = parse("""
@prim_func
def f(A: f32[4, 3], T: f32[4, 3]):
    for i in range(4):
        T[i, 0] = 0.0
        for j in range(3):
            T[i, j] = A[i, j]
        if i > 1:
            for j in range(3):
                T[i, j] += A[i, j]
""")
    assert instances(func) == 4 * (1 + 3) + 4 * (1 + 3)
    assert ir.fold_stmt(func.body, lambda s: 1) == 4 * (1 + 3 + 3)  # the if's arm, not the if
    assert ir.fold_stmt(func.body, lambda s: 1, guard=lambda s, arms: 0) == 4 * (1 + 3)
    walked = [(type(s).__name__, [lp.var for lp in loops]) for s, loops in ir.walk_in_loops(func.body)]
    assert walked == [("Store", ["i"]), ("Store", ["i", "j"]), ("If", ["i"]), ("Accumulate", ["i", "j"])]
