"""numpy's statement-by-statement formulation (``rewrite/tools/numpy_steps.py``), the baseline
``tensorize bench`` times where a function is not one contraction: what it computes is
compared with the reference interpreter, and what it cannot formulate it refuses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rewrite import interp, runtime
from rewrite.inputs import random_args
from rewrite.script import parse, parse_file
from rewrite.tools import bench, numpy_steps

CORPUS = Path(__file__).resolve().parents[1] / "corpus"


def _f(params: str, body: str):
    lines = body.strip("\n").splitlines()
    return parse("@prim_func\ndef f(" + params + "):\n" + "\n".join("    " + x for x in lines) + "\n")


def _agrees(func, seed: int = 1) -> numpy_steps.Steps:
    """The steps of ``func`` on random inputs, run once, equal to the interpreter's results
    within the check's tolerances (integers exactly)."""
    args = random_args(func, seed=seed)
    steps = numpy_steps.formulate(func, args)
    assert steps is not None
    want = {k: v.copy() for k, v in args.items()}
    interp.interpret(func, want)
    steps()
    for buf in func.outputs:
        error, problem = runtime.compare_output(func, buf, want[buf.name], steps.arrays[buf.name])
        assert not problem, (buf.name, problem)
    return steps


PROGRAMS = {
    # a strided, padded convolution: a view whose axis h and r share one dimension
    "strided_conv": ("X: f32[1, 17, 17, 3], W: f32[3, 3, 3, 4], O: f32[1, 8, 8, 4]", """
for n, h, w, co in grid(1, 8, 8, 4):
    O[n, h, w, co] = 0.0
for n, h, w, co, r, s, ci in grid(1, 8, 8, 4, 3, 3, 3):
    O[n, h, w, co] += X[n, 2 * h + r, 2 * w + s, ci] * W[r, s, ci, co]
"""),
    # a depthwise convolution with dilation (summed one tap at a time or by einsum)
    "dilated_depthwise": ("X: f32[2, 12, 12, 5], W: f32[3, 3, 5], O: f32[2, 8, 8, 5]", """
for n, h, w, c, r, s in grid(2, 8, 8, 5, 3, 3):
    O[n, h, w, c] += X[n, h + 2 * r, w + 2 * s, c] * W[r, s, c]
"""),
    # a reversed index and a loop that starts past zero
    "reversed": ("A: f32[16], B: f32[16]", """
for i in range(2, 16):
    B[i] = A[15 - i] * 2.0 + B[i]
"""),
    # a triangle of the output, a runtime scale factor, a sum of two products
    "syr2k_like": ("A: f32[12, 7], B: f32[12, 7], alpha: f32[1], C: f32[12, 12]", """
for i, j, k in grid(12, 12, 7):
    if j <= i:
        C[i, j] += A[j, k] * alpha[0] * B[i, k] + B[j, k] * alpha[0] * A[i, k]
"""),
    # a max pool: a store that reduces over the window
    "maxpool": ("X: f32[1, 9, 9, 2], O: f32[1, 4, 4, 2]", """
for n, h, w, c in grid(1, 4, 4, 2):
    O[n, h, w, c] = -3.0e38
for n, h, w, c, r, s in grid(1, 4, 4, 2, 3, 3):
    O[n, h, w, c] = max(O[n, h, w, c], X[n, 2 * h + r, 2 * w + s, c])
"""),
    # bytes widened and multiplied into i32 sums (wrapping as the kernel's)
    "u8i8": ("A: u8[8, 32], B: i8[32, 8], C: i32[8, 8]", """
for i, j, k in grid(8, 8, 32):
    C[i, j] += i32(A[i, k]) * i32(B[k, j])
"""),
    # a loop variable and a select in the value, an exp, a column sum of a computed factor
    "computed": ("A: f32[6, 10], s: f32[10]", """
for i, j in grid(6, 10):
    A[i, j] = exp(A[i, j]) if j >= i else f32(i) * A[i, j]
for i, j in grid(6, 10):
    s[j] += A[i, j] - 0.5
"""),
    # a scalar added at each iteration of a loop the output does not use, and a product
    # no index of which names the loop summed over (added that many times)
    "counted": ("x: f32[5], a: f32[5], b: f32[5], y: f32[5]", """
for i, j in grid(5, 7):
    x[i] += 1.0
for i, j in grid(5, 3):
    y[i] += a[i] * b[i]
"""),
}


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_each_kind_of_statement_computes_what_the_interpreter_does(name):
    _agrees(_f(*PROGRAMS[name]))


CORPUS_FUNCS = {name: func for path in sorted(CORPUS.glob("*.py"))
                for name, func in parse_file(path).items()}


@pytest.mark.parametrize("name", ["c2d_nhwc", "dep_conv2d_nhwc_s2", "resnet50_maxpool", "sfm_mn",
                                  "bert_layernorm", "pb_gemver", "pb_syrk", "atax",
                                  "qdense_zero_points", "t2d_nhwc", "maxplus_matmul",
                                  "doitgen"])
def test_corpus_programs_compute_what_the_interpreter_does(name):
    _agrees(CORPUS_FUNCS[name])


def test_a_two_operand_product_runs_on_blas(monkeypatch):
    func = _f("A: f32[64, 48], B: f32[48, 32], C: f32[64, 32]", """
for i, j, k in grid(64, 32, 48):
    C[i, j] += A[i, k] * B[k, j]
""")
    steps = _agrees(func)
    assert len(steps.steps) == 1
    calls = []
    real = np.matmul
    monkeypatch.setattr(np, "matmul", lambda *a, **k: calls.append(1) or real(*a, **k))
    steps()  # prepared on transposed views: one call of np.matmul, no einsum
    assert calls == [1]


@pytest.mark.parametrize("params, body", [
    # a recurrence: each element reads the one before it
    ("x: f32[16]", "for i in range(1, 16):\n    x[i] = x[i - 1] + x[i]\n"),
    # two loops in one index of the output: iterations that write one element twice
    ("a: f32[8], b: f32[8], c: f32[15]", "for i, j in grid(8, 8):\n    c[i + j] += a[i] * b[j]\n"),
    # a guard on the loop summed over
    ("A: f32[8, 8], x: f32[8]", "for i, k in grid(8, 8):\n    if k > i:\n        x[i] += A[i, k]\n"),
    # an index that is not affine
    ("A: f32[8, 4], x: f32[8]", "for i in range(8):\n    x[i] = A[i // 2, i % 4]\n"),
])
def test_what_it_cannot_formulate_is_refused(params, body):
    func = _f(params, body)
    assert numpy_steps.formulate(func, random_args(func)) is None


def test_bench_times_the_steps_and_marks_them():
    func = CORPUS_FUNCS["atax"]
    result = bench.bench_one(func, min_runs=3, target_seconds=0.01)
    assert result.numpy_steps and result.numpy_median_s and result.ratio
    assert "*" in bench.format_table([result])
    assert bench.to_json([result])["results"][0]["numpy_formulation"] == "statements"
    # a contraction keeps its own formulation, unmarked
    gemm = CORPUS_FUNCS["gemm_64"]
    plain = bench.bench_one(gemm, min_runs=3, target_seconds=0.01)
    assert not plain.numpy_steps and plain.numpy_median_s
    assert "numpy_formulation" not in bench.to_json([plain])["results"][0]


def test_steps_that_disagree_with_the_kernel_are_no_baseline(capsys):
    func = CORPUS_FUNCS["atax"]
    kernel = runtime.compile(func)
    args = random_args(func, seed=0)
    assert bench.steps_counterpart(func, kernel, args) is not None

    def wrong(**arrays):  # a kernel that leaves y as it was
        kernel(**arrays)
        arrays["y"][3] += 1.0

    assert bench.steps_counterpart(func, wrong, args) is None
    assert "disagree" in capsys.readouterr().err


def test_an_integer_product_runs_in_doubles_where_that_is_exact():
    rng = np.random.default_rng(2)
    a = rng.integers(0, 256, (40, 300)).astype(np.uint8)
    b = rng.integers(-128, 128, (300, 24)).astype(np.int8)
    ops = [a.astype(np.int32), b.astype(np.int32)]
    call = numpy_steps.in_doubles("ik,kj->ij", ops, np.dtype(np.int32))
    assert call is not None
    got = call()
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, ops[0] @ ops[1])
    # sums that could pass 2**31 (the integer product would wrap) are not done in doubles
    big = [np.full((4, 3), 1 << 15, np.int32), np.full((3, 4), 1 << 15, np.int32)]
    assert numpy_steps.in_doubles("ik,kj->ij", big, np.dtype(np.int32)) is None
    # nor floats, nor what is no matrix product
    assert numpy_steps.in_doubles("ik,kj->ij", [x.astype(np.float32) for x in ops],
                                  np.dtype(np.float32)) is None
    assert numpy_steps.in_doubles("ij,ij->ij", [ops[0], ops[0]], np.dtype(np.int32)) is None


def test_a_byte_product_is_timed_in_doubles_too():
    func = _f("A: u8[16, 64], B: i8[64, 8], C: i32[16, 8]", """
for i, j in grid(16, 8):
    C[i, j] = 0
for i, j, k in grid(16, 8, 64):
    C[i, j] += i32(A[i, k]) * i32(B[k, j])
""")
    args = random_args(func, seed=3)
    ways = bench.numpy_formulations(func, args)
    assert len(ways) == 3  # the integer matmul, the same in doubles, einsum
    # what the statement-by-statement steps compute on BLAS in doubles is the exact product
    want = args["A"].astype(np.int64) @ args["B"].astype(np.int64)
    steps = numpy_steps.formulate(func, args)
    steps()
    np.testing.assert_array_equal(steps.arrays["C"], want)


def test_a_byte_convolution_runs_its_taps_in_doubles():
    func = _f("X: u8[1, 10, 10, 16], W: i8[3, 3, 16, 8], O: i32[1, 8, 8, 8]", """
for n, h, w, co, r, s, ci in grid(1, 8, 8, 8, 3, 3, 16):
    O[n, h, w, co] += i32(X[n, h + r, w + s, ci]) * i32(W[r, s, ci, co])
""")
    _agrees(func)
    x = np.arange(2 * 3 * 5, dtype=np.int32).reshape(2, 3, 5)
    y = np.arange(5 * 4, dtype=np.int32).reshape(5, 4) - 7
    call = numpy_steps.in_doubles("abc,cd->abd", [x, y], np.dtype(np.int32))
    assert call is not None
    np.testing.assert_array_equal(call(), np.einsum("abc,cd->abd", x, y))


def test_a_product_of_what_an_earlier_step_writes_is_not_bounded_by_its_values_before():
    """When the steps are formulated the temporary ``T`` is still zero, yet at each call it
    holds values whose products wrap in i32: the bound for doubles comes from what a factor
    is (an i32 load: any value), so the product runs in integers and wraps as the kernel's."""
    func = _f("A: i32[8, 16], B: i32[16, 4], C: i32[8, 4]", """
T = alloc(i32[8, 16])
for i, k in grid(8, 16):
    T[i, k] = A[i, k] * 100000
for i, j, k in grid(8, 4, 16):
    C[i, j] += T[i, k] * B[k, j]
""")
    rng = np.random.default_rng(0)
    args = {"A": rng.integers(1000, 2000, (8, 16)).astype(np.int32),
            "B": rng.integers(1000, 2000, (16, 4)).astype(np.int32),
            "C": np.zeros((8, 4), np.int32)}
    want = interp.run(func, **{k: v.copy() for k, v in args.items()})["C"]
    exact = (args["A"].astype(np.int64) * 100000) @ args["B"].astype(np.int64)
    assert not np.array_equal(want.astype(np.int64), exact)  # the kernel's sums wrap
    steps = numpy_steps.formulate(func, args)
    steps()
    np.testing.assert_array_equal(steps.arrays["C"], want)


def test_several_free_dims_make_one_matrix_product():
    # doitgen's A[r, q, s] by C4[s, p] (once its row sum is expanded): tensordot, one dgemm
    x = np.random.default_rng(0).standard_normal((5, 4, 6))
    y = np.random.default_rng(1).standard_normal((6, 3))
    product = numpy_steps.as_product("abd,dc->abc", [x, y])
    assert product is not None
    np.testing.assert_allclose(product(x, y), np.einsum("abd,dc->abc", x, y))
    assert numpy_steps.as_product("abd,bd->ab", [x, x[0]]) is None  # b batched


def test_bytes_widened_into_temporaries_keep_their_bounds():
    func = CORPUS_FUNCS["qdense_widened"]  # Ai = i32(A), Bi = i32(B), C += Ai * Bi
    assert numpy_steps._temporary_bounds(func) == {"Ai": 255.0, "Bi": 128.0}
    _agrees(func)
    # a temporary also added into, or stored from an i32 parameter, has no bound but its range
    accumulated = _f("A: u8[4, 4], B: i32[4], C: i32[4]", """
T = alloc(i32[4])
U = alloc(i32[4])
for i, k in grid(4, 4):
    T[i] += i32(A[i, k])
for i in range(4):
    U[i] = B[i] * 2
    C[i] = T[i] + U[i]
""")
    assert numpy_steps._temporary_bounds(accumulated) == {"T": float("inf"), "U": float(2 ** 31)}
