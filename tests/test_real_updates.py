"""Updates as real code writes them: into another buffer (``out-of-place``,
``rewrite/rules/updates.py``) and scaled by factors read from memory (``scalar-factor``,
``rewrite/rules/scalars.py``). Golden normal forms, the coverage they bring, compiled code
against the interpreter (NaN and Inf in the scale included), and the programs each rule must
leave alone."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import intrinsics
from rewrite import inputs, interp, ir, nests, runtime
from rewrite.names import Names
from rewrite.nests import AccNest
from rewrite.pipeline import tensorize
from rewrite.rules import scalars, updates
from rewrite.rules.finite import Guarded
from rewrite.script import parse, show

ROOT = Path(__file__).resolve().parent.parent
AVX2 = intrinsics.library("x86-avx2")
ROWS = [d for d in AVX2 if d.name in (
    "x86.fma.f32x8", "x86.axpy.f32x8", "x86.mm.f32.6x16x1", "x86.dot.u8i8i32.16x4")]
HOST_HAS_AVX2 = {"avx2", "fma"} <= intrinsics.host_features()
needs_avx2 = pytest.mark.skipif(not HOST_HAS_AVX2, reason="the compiled rows need AVX2 and FMA")


def _text(func, parts) -> str:
    """``func`` with ``parts`` (items) as its body, printed."""
    def stmt(p):
        return p.stmt() if isinstance(p, (AccNest, Guarded)) else p
    return show(replace(func, body=ir.seq(*(stmt(p) for p in parts))))


def _out_of_place(src: str) -> str:
    func = nests.normalize(parse(src))
    return _text(func, updates.apply(nests.items(func), Names.of(func)))


def _nest(src: str) -> tuple[ir.PrimFunc, AccNest]:
    func = nests.normalize(parse(src))
    (nest,) = [p for p in nests.items(func) if isinstance(p, AccNest)]
    return func, nest


def _checked(func, result) -> None:
    if HOST_HAS_AVX2:
        check = runtime.check(func, result.compile())
        assert check.ok, check.message


# ---------------------------------------------------------------------------
# out-of-place

OOP_2D = '''
@prim_func
def oop(D: f32[64, 64], C: f32[64, 64], A: f32[64, 64], B: f32[64, 64]):
    for i, j in grid(64, 64):
        D[i, j] = C[i, j] + A[i, j] * B[i, j]
'''

OOP_1D = '''
@prim_func
def oop(D: f32[256], C: f32[256], A: f32[256], B: f32[256]):
    for i in range(256):
        D[i] = C[i] + B[i] * A[i]
'''


def test_an_out_of_place_update_is_a_copy_then_an_accumulation():
    assert _out_of_place(OOP_2D) == '''@prim_func
def oop(D: f32[64, 64], C: f32[64, 64], A: f32[64, 64], B: f32[64, 64]):
    for i, j in grid(64, 64):
        D[i, j] = C[i, j]
    for i, j in grid(64, 64):
        D[i, j] += A[i, j] * B[i, j]
'''


def test_the_update_on_the_left_and_a_subtracted_update():
    left = _out_of_place(OOP_1D.replace("C[i] + B[i] * A[i]", "B[i] * A[i] + C[i]"))
    assert left.splitlines()[2:] == ["    for i in range(256):", "        D[i] = C[i]",
                                     "    for i in range(256):", "        D[i] += B[i] * A[i]"]
    minus = _out_of_place(OOP_1D.replace("C[i] + B[i] * A[i]", "C[i] - B[i] * A[i]"))
    assert minus.splitlines()[2:] == ["    for i in range(256):", "        D[i] = C[i]",
                                      "    for i in range(256):", "        D[i] += -(B[i] * A[i])"]


def test_the_source_may_be_read_at_other_indices_the_copy_is_shifted():
    src = OOP_1D.replace("C: f32[256]", "C: f32[257]").replace("C[i] +", "C[i + 1] +")
    assert _out_of_place(src).splitlines()[2:] == [
        "    for i in range(256):", "        D[i] = C[i + 1]",
        "    for i in range(256):", "        D[i] += B[i] * A[i]"]
    result = tensorize(parse(src), ROWS)
    assert result.coverage == 1.0
    _checked(parse(src), result)


@pytest.mark.parametrize("src", [OOP_1D, OOP_2D], ids=["1d", "2d"])
def test_out_of_place_fma_is_fully_covered_and_checks(src):
    func = parse(src)
    result = tensorize(func, ROWS)
    assert {s.intrinsic for s in result.sites} == {"x86.fma.f32x8"}
    assert result.coverage == 1.0
    _checked(func, result)
    assert tensorize(func, ROWS, rules_off=("out-of-place",)).coverage == 0.0


def test_out_of_place_fma_program():
    result = tensorize(parse(OOP_1D), ROWS)
    assert show(result.func) == '''@prim_func
def oop(D: f32[256], C: f32[256], A: f32[256], B: f32[256]):
    for i in range(256):
        D[i] = C[i]
    for i_o in range(32):
        call("x86.fma.f32x8", c=window(D[8 * i_o], (1,)), a=window(A[8 * i_o], (1,)), b=window(B[8 * i_o], (1,)))
'''


REFUSED = {
    # D is read by the update: iterations would see each other's copies
    "reads_d": ("D: f32[256]", "D[i] = C[i] + A[i] * D[i]"),
    "d_is_an_operand": ("D: f32[256]", "D[i] = C[i] + D[i] * B[i]"),
    # D read at another element as the source: in place, and shifted
    "source_is_d": ("D: f32[257]", "D[i + 1] = D[i] + A[i] * B[i]"),
    # one element written by several iterations keeps the last value only
    "written_twice": ("D: f32[128]", "D[i // 2] = C[i] + A[i] * B[i]"),
    "written_at_one_element": ("D: f32[1]", "D[0] = C[i] + A[i] * B[i]"),
    # nothing for an intrinsic to read
    "constant_update": ("D: f32[256]", "D[i] = C[i] + 1.0"),
    # not an update of a copy
    "product": ("D: f32[256]", "D[i] = C[i] * A[i]"),
    "subtracted_source": ("D: f32[256]", "D[i] = A[i] * B[i] - C[i]"),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_out_of_place_is_refused(name):
    decl, stmt = REFUSED[name]
    src = f'''
@prim_func
def f({decl}, C: f32[256], A: f32[256], B: f32[256]):
    for i in range(256):
        {stmt}
'''
    func = nests.normalize(parse(src))
    parts = nests.items(func)
    assert updates.apply(parts, Names.of(func)) == parts
    result = tensorize(parse(src), ROWS)
    assert not any(s.intrinsic == "x86.fma.f32x8" for s in result.sites)
    _checked(parse(src), result)


PRODUCT_OVERWRITTEN = '''
@prim_func
def f(D: f32[32, 32], C: f32[32, 32], A: f32[32, 32], B: f32[32, 32]):
    for i, j in grid(32, 32):
        for k in range(32):
            D[i, j] = C[i, j] + A[i, k] * B[k, j]
'''


def test_a_product_overwritten_along_k_is_not_an_accumulation():
    # each k overwrites D[i, j]: what is left is C + A[:, 31] B[31, :], not C + A B
    func = parse(PRODUCT_OVERWRITTEN)
    normal = nests.normalize(func)
    assert updates.apply(nests.items(normal), Names.of(normal)) == nests.items(normal)
    result = tensorize(func, ROWS)
    assert not result.sites
    args = inputs.random_args(func, seed=3)
    want = (args["C"].astype(np.float64)
            + np.outer(args["A"][:, 31], args["B"][31, :]).astype(np.float64))
    got = {k: v.copy() for k, v in args.items()}
    result.compile()(**got)
    np.testing.assert_allclose(got["D"], want, rtol=1e-6, atol=1e-6)


def test_integer_updates_wrap_around_as_written():
    # + and - wrap around on integers, so the copy then the accumulation store the same
    # element, overflow included
    src = '''
@prim_func
def f(D: i32[64], C: i32[64], A: i32[64], B: i32[64]):
    for i in range(64):
        D[i] = C[i] - A[i] * B[i]
'''
    func = parse(src)
    assert _out_of_place(src).splitlines()[-1] == "        D[i] += -(A[i] * B[i])"
    result = tensorize(func, ROWS)
    args = {"D": np.zeros(64, np.int32), "C": np.full(64, -2**31 + 5, np.int32),
            "A": np.arange(64, dtype=np.int32) * 40_000, "B": np.full(64, 60_000, np.int32)}
    want = (args["C"].astype(np.int64) - args["A"].astype(np.int64) * args["B"].astype(np.int64))
    want = ((want + 2**31) % 2**32 - 2**31).astype(np.int32)
    got = {k: v.copy() for k, v in args.items()}
    result.compile()(**got)
    np.testing.assert_array_equal(got["D"], want)
    np.testing.assert_array_equal(interp.run(func, **args)["D"], want)


# ---------------------------------------------------------------------------
# scalar-factor

ALPHA_MM = '''
@prim_func
def alpha_mm(C: f32[64, 64], A: f32[64, 64], B: f32[64, 64], alpha: f32[1]):
    for i in range(64):
        for j in range(64):
            for k in range(64):
                C[i, j] += alpha[0] * A[i, k] * B[k, j]
'''

ALPHA_MM_MINUS = ALPHA_MM.replace("C[i, j] += alpha[0]", "C[i, j] -= alpha[0]")

POLYBENCH_GEMM = '''
@prim_func
def gemm(C: f32[60, 70], A: f32[60, 80], B: f32[80, 70], alpha: f32[1], beta: f32[1]):
    for i in range(60):
        for j in range(70):
            C[i, j] *= beta[0]
        for k in range(80):
            for j in range(70):
                C[i, j] += alpha[0] * A[i, k] * B[k, j]
'''


def test_the_runtime_factor_is_taken_out_of_the_product():
    _, nest = _nest(ALPHA_MM_MINUS)
    f = scalars.factored(nest)
    assert [ir.Load(x.buffer, x.indices) for x in f.taken] == [x for x in f.taken]
    assert [x.buffer.name for x in f.taken] == ["alpha"] and f.negative
    assert [x.buffer.name for x in f.rest] == ["A", "B"]


def test_scale_operand_normal_form():
    func, nest = _nest(ALPHA_MM_MINUS)
    items, allocs = scalars.scale_operand(scalars.factored(nest), Names.of(func))
    assert [b.name for b in allocs] == ["sc_P_0"]
    assert _text(func, items).splitlines()[2:] == [
        "    for i, k in grid(64, 64):",
        "        sc_P_0[i, k] = -(alpha[0] * A[i, k])",
        "    for i, j, k in grid(64, 64, 64):",
        "        C[i, j] += sc_P_0[i, k] * B[k, j]"]


def test_scale_temporary_normal_form():
    func, nest = _nest(ALPHA_MM_MINUS)
    items, allocs = scalars.scale_temporary(scalars.factored(nest), Names.of(func))
    assert [b.name for b in allocs] == ["sc_T_0", "sc_S_0", "st_fin_0"]
    assert _text(func, items).splitlines()[2:] == [
        "    for fin_c_0 in range(64):",
        "        st_fin_0[fin_c_0] = 0.0",
        "    st_fin_0[0] += alpha[0] * 0.0",
        # the operands too: as written alpha[0] * A[i, k] may underflow to 0 before B's Inf
        "    for i, k in grid(64, 64):",
        "        st_fin_0[k] += A[i, k] * 0.0",
        "    for k, j in grid(64, 64):",
        "        st_fin_0[j] += B[k, j] * 0.0",
        "    for fin_c_0 in range(1, 64):",
        "        st_fin_0[0] += st_fin_0[fin_c_0]",
        "    if st_fin_0[0] == 0.0:",
        "        for i, j in grid(64, 64):",
        "            sc_T_0[i, j] = 0.0",
        "        sc_S_0[0] = -alpha[0]",
        "        for i, j, k in grid(64, 64, 64):",
        "            sc_T_0[i, j] += A[i, k] * B[k, j]",
        "        for i, j in grid(64, 64):",
        "            C[i, j] += sc_S_0[0] * sc_T_0[i, j]",
        "    else:",
        "        for i, j, k in grid(64, 64, 64):",
        "            C[i, j] += -(alpha[0] * A[i, k] * B[k, j])"]


def test_scale_temporary_keeps_the_nan_of_a_factor_that_underflows_before_an_inf():
    # as written, alpha * A[0, 0] underflows to 0 and 0 * B[0, 0] = 0 * inf is NaN; A @ B
    # first is inf, and alpha * inf is inf: the guard's scan of B takes the nest as written
    func, nest = _nest(ALPHA_MM)
    items, allocs = scalars.scale_temporary(scalars.factored(nest), Names.of(func))
    body = ir.seq(*(p.stmt() if isinstance(p, (AccNest, Guarded)) else p for p in items))
    rewritten = replace(func, body=body, allocs=func.allocs + tuple(allocs))
    args = {n: np.zeros((64, 64), np.float32) for n in ("A", "B", "C")}
    args["alpha"] = np.array([2.0 ** -20], np.float32)
    args["A"][0, 0] = np.float32(1e-40)  # subnormal
    args["B"][0, 0] = np.inf
    want = interp.run(func, **{k: v.copy() for k, v in args.items()})["C"]
    got = interp.run(rewritten, **{k: v.copy() for k, v in args.items()})["C"]
    assert np.isnan(want[0, 0]) and np.array_equal(np.isnan(got), np.isnan(want))
    assert np.array_equal(got[~np.isnan(got)], want[~np.isnan(want)])


def test_a_single_scalar_is_read_in_place_and_a_per_row_scalar_is_scanned_per_row():
    func, nest = _nest(ALPHA_MM.replace("alpha: f32[1]", "alpha: f32[64]").replace(
        "alpha[0] * A[i, k]", "A[i, k] * alpha[i]"))
    (g,), allocs = scalars.scale_temporary(scalars.factored(nest), Names.of(func))
    assert [b.name for b in allocs] == ["sc_T_0", "st_fin_0"]  # no sc_S: alpha[i] is read as is
    lines = _text(func, [g]).splitlines()
    assert ["    for i in range(64):", "        st_fin_0[i] += alpha[i] * 0.0"] == lines[4:6]
    assert lines[-5:-3] == ["        for i, j in grid(64, 64):",
                            "            C[i, j] += alpha[i] * sc_T_0[i, j]"]


@pytest.mark.parametrize("src, floor", [(ALPHA_MM, 0.95), (ALPHA_MM_MINUS, 0.95),
                                        (POLYBENCH_GEMM, 0.95)],
                         ids=["alpha", "minus_alpha", "polybench_gemm"])
def test_runtime_alpha_reaches_the_matmul_rows_and_checks(src, floor):
    func = parse(src)
    result = tensorize(func, ROWS)
    assert "x86.mm.f32.6x16x1" in {s.intrinsic for s in result.sites}
    assert result.coverage >= floor, result.report()
    _checked(func, result)
    # contract-pair (A @ B first, alpha times it) is the other way there
    assert tensorize(func, ROWS, rules_off=("scalar-factor", "contract")).coverage < 0.01


def test_runtime_alpha_program_is_the_scaled_copy_when_cheaper():
    # a scaled copy of A (a multiply and a store per element) against a zeroed 64x64
    # temporary, 512 axpy calls and the guard's scans of alpha, A and B
    result = tensorize(parse(ALPHA_MM), ROWS)
    text = show(result.func)
    assert "sc_P_0[i, k] = alpha[0] * A[i, k]" in text and "sc_T" not in text
    assert result.coverage >= 0.99
    _checked(parse(ALPHA_MM), result)


def test_a_factor_per_output_element_is_taken_out_by_the_scaled_temporary():
    # W[i, j] moves with no operand's loops, so no copy of an operand can hold it: the
    # product accumulates into a temporary and one pass adds W * T, behind the scans of W,
    # A and B
    src = ALPHA_MM.replace("alpha: f32[1]", "W: f32[64, 64]").replace("alpha[0]", "W[i, j]")
    result = tensorize(parse(src), ROWS)
    text = show(result.func)
    assert "sc_T_0" in text and "sc_P" not in text
    assert "st_fin_0[j] += B[k, j] * 0.0" in text and "x86.fma.f32x8" in text
    assert result.coverage >= 0.95
    _checked(parse(src), result)


def test_an_elementwise_product_scales_one_operand():
    # no reduction: a temporary would be as large as the nest, so the copy is the rewrite
    src = '''
@prim_func
def f(D: f32[256], C: f32[256], A: f32[256], B: f32[256], alpha: f32[1]):
    for i in range(256):
        D[i] = C[i] + alpha[0] * A[i] * B[i]
'''
    func, nest = _nest(src.replace("D[i] = C[i] +", "D[i] +="))
    f = scalars.factored(nest)
    assert [x.buffer.name for x in f.taken] == ["alpha"]
    assert scalars.scale_temporary(f, Names.of(func)) is None
    result = tensorize(parse(src), ROWS)
    assert "sc_P_0[i] = alpha[0] * A[i]" in show(result.func)
    assert {s.intrinsic for s in result.sites} == {"x86.fma.f32x8"}
    _checked(parse(src), result)


def test_integer_runtime_factor_needs_no_guard():
    src = '''
@prim_func
def f(C: i32[32, 64], A: u8[32, 64], B: i8[64, 64], alpha: i32[1]):
    for i, j, k in grid(32, 64, 64):
        C[i, j] += alpha[0] * i32(A[i, k]) * i32(B[j, k])
'''
    func = parse(src)
    result = tensorize(func, ROWS)
    assert "if " not in show(result.func)
    assert "x86.dot.u8i8i32.16x4" in {s.intrinsic for s in result.sites}
    assert result.coverage > 0.9
    _checked(func, result)


@pytest.mark.parametrize("body", [
    "w[k] * A[i, k] * B[k, j]",           # varies along the reduction
    "inf * alpha[0] * A[i, k] * B[k, j]",  # a non-finite constant
    "1.5 * A[i, k] * B[k, j]",            # a constant only: the extractor's scale
    "alpha[0] * A[i, k] + B[k, j]",        # not a product
    "alpha[0] * alpha[0]",                # nothing left to sum but the factor
])
def test_scalar_factor_is_refused(body):
    src = f'''
@prim_func
def f(C: f32[64, 64], A: f32[64, 64], B: f32[64, 64], alpha: f32[1], w: f32[64]):
    for i, j, k in grid(64, 64, 64):
        C[i, j] += {body}
'''
    func, nest = _nest(src)
    assert scalars.factored(nest) is None
    _checked(parse(src), tensorize(parse(src), ROWS))


@needs_avx2
@pytest.mark.parametrize("src", [ALPHA_MM, ALPHA_MM_MINUS, POLYBENCH_GEMM],
                         ids=["alpha", "minus_alpha", "polybench_gemm"])
@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan, 0.0, -0.0])
def test_a_non_finite_or_zero_alpha_gives_the_pattern_as_written(src, value):
    func = parse(src)
    result = tensorize(func, ROWS)
    kernel = runtime.compile(result.func, threads=1)
    args = inputs.random_args(func, seed=2)
    args["alpha"][0] = value
    args["A"][:, 3] = 0.0  # inf * 0 in every row's sum
    args["B"][5, 7] = np.inf
    want = interp.run(func, **{k: v.copy() for k, v in args.items()})["C"]
    got = {k: v.copy() for k, v in args.items()}
    kernel(**got)
    np.testing.assert_array_equal(np.isnan(got["C"]), np.isnan(want))
    fin = np.isfinite(want)
    np.testing.assert_array_equal(np.where(np.isinf(want), want, 0), np.where(np.isinf(got["C"]), got["C"], 0))
    np.testing.assert_allclose(got["C"][fin], want[fin], rtol=1e-4, atol=1e-4)


def test_a_strassen_level_inside_the_scalar_guard_counts_as_covered():
    # the product accumulated into the temporary gets its own level behind its own guard;
    # coverage describes the path finite operands take through both guards
    func = parse(ALPHA_MM_MINUS.replace("64", "128"))
    result = tensorize(func, ROWS, strassen=1)
    assert result.strassen_levels == 1
    assert result.coverage > 0.9, result.report()
    _checked(func, result)


@needs_avx2
def test_the_scaled_temporary_alone_would_move_inf_times_zero():
    # the guard is needed: with alpha = inf, the terms as written are inf * 1 * 1 = inf and
    # inf * 1 * 0 = NaN, so every sum is NaN; alpha times the sum 1 is inf
    func, nest = _nest(ALPHA_MM)
    (g,), allocs = scalars.scale_temporary(scalars.factored(nest), Names.of(func))
    unguarded = replace(func, body=ir.seq(*(p.stmt() if isinstance(p, AccNest) else p
                                            for p in g.fast)),
                        allocs=func.allocs + tuple(allocs))
    args = inputs.random_args(func, seed=0)
    args["alpha"][0] = np.inf
    args["A"][:] = 1.0
    args["B"][:] = 0.0
    args["B"][0, :] = 1.0
    want = interp.run(func, **{k: v.copy() for k, v in args.items()})["C"]
    moved = interp.run(unguarded, **{k: v.copy() for k, v in args.items()})["C"]
    assert np.isnan(want).all() and np.isposinf(moved).all()
    got = {k: v.copy() for k, v in args.items()}
    runtime.compile(tensorize(func, ROWS).func, threads=1)(**got)
    assert np.isnan(got["C"]).all()


# ---------------------------------------------------------------------------
# divide-temporary: a product divided by a value per output element

DIVIDED = '''
@prim_func
def normalised(P: f32[64, 128], V: f32[128, 32], l: f32[64], O: f32[64, 32]):
    for i, d, j in grid(64, 32, 128):
        O[i, d] += P[i, j] * V[j, d] / l[i]
'''


def test_divide_temporary_normal_form():
    func, nest = _nest(DIVIDED)
    (g,), allocs = scalars.divide_temporary(nest, Names.of(func))
    assert [b.name for b in allocs] == ["sc_T_0", "st_fin_0"] and g.slow == (nest,)
    text = _text(func, [g]).splitlines()
    assert "        st_fin_0[i] += l[i] * 0.0 + select(l[i] == 0.0, 1.0, 0.0)" in text
    assert text[-6:] == [
        "            sc_T_0[i, d] += P[i, j] * V[j, d]",
        "        for i, d in grid(64, 32):",
        "            O[i, d] += sc_T_0[i, d] / l[i]",
        "    else:",
        "        for i, d, j in grid(64, 32, 128):",
        "            O[i, d] += P[i, j] * V[j, d] / l[i]"]


@pytest.mark.parametrize("value", [0.0, -0.0, np.inf, np.nan, 1e-30])
def test_a_divisor_zero_or_not_finite_gives_the_pattern_as_written(value):
    # with l[0] = 0 the terms are +-inf (NaN where P * V is 0), their sum NaN where signs
    # differ; the sum divided by 0 would be one infinity: the guard runs the nest as written
    func, nest = _nest(DIVIDED)
    (g,), allocs = scalars.divide_temporary(nest, Names.of(func))
    rewritten = replace(func, body=ir.seq(*(p.stmt() for p in [g])), allocs=func.allocs + tuple(allocs))
    args = inputs.random_args(func, seed=3)
    args["l"][0] = value
    want = interp.run(func, **{k: v.copy() for k, v in args.items()})["O"]
    got = interp.run(rewritten, **{k: v.copy() for k, v in args.items()})["O"]
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isposinf(got), np.isposinf(want))
    np.testing.assert_array_equal(np.isneginf(got), np.isneginf(want))
    fin = np.isfinite(want)
    np.testing.assert_allclose(got[fin], want[fin], rtol=1e-4, atol=1e-4)
    if value == 0.0:
        unguarded = replace(func, body=ir.seq(*(p.stmt() if isinstance(p, AccNest) else p
                                                for p in g.fast)), allocs=func.allocs + tuple(allocs))
        moved = interp.run(unguarded, **{k: v.copy() for k, v in args.items()})["O"]
        assert np.isnan(want[0]).any() and not np.isnan(moved[0]).all()  # what the guard is for


@pytest.mark.parametrize("body, found", [
    ("P[i, j] * V[j, d] / l[i]", True),
    ("-(P[i, j] * V[j, d] / 8.0)", True),  # a constant: no guard needed
    ("P[i, j] * V[j, d] / V[j, d]", False),  # the divisor moves with the reduction
    ("P[i, j] * V[j, d] / 0.0", False),
    ("l[i] / P[i, j]", False),
], ids=["per-row", "constant", "reduction", "zero", "divided-by-operand"])
def test_what_divide_temporary_takes(body, found):
    func, nest = _nest(DIVIDED.replace("P[i, j] * V[j, d] / l[i]", body))
    assert (scalars.divided(nest) is not None) == found


@needs_avx2
@pytest.mark.parametrize("body", ["P[i, j] * V[j, d] / l[i]", "P[i, j] * V[j, d] / 64.0"],
                         ids=["per-row", "constant"])
def test_a_divided_product_reaches_the_matmul_rows_and_checks(body):
    func = parse(DIVIDED.replace("P[i, j] * V[j, d] / l[i]", body))
    result = tensorize(func, ROWS)
    assert result.coverage > 0.9 and dict(result.choice.taken) == {"scalar-factor": 1}, result.report()
    assert tensorize(func, ROWS, rules_off=("scalar-factor",)).coverage == 0
    _checked(func, result)


# ---------------------------------------------------------------------------
# the corpus file, through the command line

TARGETS = {"oop_fma_1d": 1.0, "oop_fma_2d": 1.0, "gemm_alpha_runtime": 0.95,
           "gemm_minus_alpha_runtime": 0.95, "gemm_alpha_beta_runtime": 0.95,
           "gesummv_alpha_beta_runtime": 0.95}


@needs_avx2
def test_corpus_file_reaches_its_coverage_and_checks():
    r = subprocess.run([sys.executable, "-m", "rewrite.cli", "run", "corpus/real_updates.py",
                        "--check", "--json", "--target", "x86-avx2"], cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    out = {f["name"]: f for f in json.loads(r.stdout)["functions"]}
    assert set(out) == set(TARGETS)
    for name, floor in TARGETS.items():
        f = out[name]
        assert f["error"] is None and f["check"]["ok"] is True, (name, f)
        assert f["coverage"]["fraction"] >= floor - 1e-9, (name, f["coverage"])
