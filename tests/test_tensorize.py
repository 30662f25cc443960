"""The tensorizer: golden programs per rule family, the corpus coverage table, every
tensorized corpus function checked against the interpreter, budgets on pathological input."""

from pathlib import Path

import numpy as np
import pytest

import intrinsics
from rewrite import runtime
from rewrite.pipeline import tensorize
from rewrite.ir import Cast, Load, Store, walk_stmts
from rewrite.saturate import Budget
from rewrite.printer import show_stmt
from rewrite.script import parse, parse_file, show

ROOT = Path(__file__).parent.parent
GOLDEN = sorted((Path(__file__).parent / "golden").glob("*.py"))
AVX2 = intrinsics.library("x86-avx2")
# the rows the goldens were written against: a row added to the library later may be cheaper
# for a golden (the matrix-vector form on a transposed B) without the rule under test changing
GOLDEN_ROWS = [d for d in AVX2 if d.name in (
    "x86.fma.f32x8", "x86.axpy.f32x8", "x86.mm.f32.6x16x1", "x86.dot.u8i8i32.16x4")]
HOST_HAS_AVX2 = {"avx2", "fma"} <= intrinsics.host_features()


def _only(path: Path):
    (func,) = parse_file(path).values()
    return func


@pytest.mark.parametrize("path", GOLDEN, ids=[p.stem for p in GOLDEN])
def test_golden(path, request):
    func = _only(path)
    result = tensorize(func, GOLDEN_ROWS)
    got = show(result.func)
    expected_path = path.with_suffix(".expected")
    if request.config.getoption("--update-golden") or not expected_path.exists():
        expected_path.write_text(got)
    assert got == expected_path.read_text()
    assert parse(got) == result.func
    if HOST_HAS_AVX2:
        check = runtime.check(func, result.compile())
        assert check.ok, check.message


def test_golden_outputs_use_the_expected_intrinsics():
    def used(name):
        r = tensorize(_only(Path(__file__).parent / "golden" / f"{name}.py"), GOLDEN_ROWS)
        return {s.intrinsic for s in r.sites}, r.coverage

    assert used("swapped_operands") == ({"x86.mm.f32.6x16x1"}, 1.0)
    assert used("transposed_b") == ({"x86.mm.f32.6x16x1"}, 1.0)
    assert used("packed_b") == ({"x86.mm.f32.6x16x1"}, 1.0)
    assert used("int8_dot") == ({"x86.dot.u8i8i32.16x4"}, 1.0)
    assert used("conv_im2col")[0] == {"x86.mm.f32.6x16x1"}
    assert used("not_a_product") == (set(), 0.0)
    sites, cov = used("remainder")
    assert "x86.mm.f32.6x16x1" in sites and cov > 0.5


# ---------------------------------------------------------------------------
# the corpus

# Functions whose arithmetic is a multiply-accumulate some host intrinsic performs (f32 FMA
# family or exact u8 x i8 -> i32 dot), in some disguise; they must reach 0.9.
HOST_COVERED = {
    "bert_ffn_dense_bias_relu", "bert_qk", "bert_attn_v", "cap_conv2d", "c1d_nlc", "c2d_nhwc",
    "c2d_stem_7x7", "c3d_ndhwc", "cbr_nhwc", "dep_conv2d_nhwc", "dep_conv2d_nhwc_s2",
    "dil_conv2d_nhwc", "gemm_64", "gemm_256", "gmm_nkkm", "matmul_relu", "bmm_4x64",
    "gemm_swapped_operands", "gemm_k_outermost", "gemm_jik", "gemm_explicit_add",
    "gemm_add_on_left", "gemm_bias_init", "gemm_accumulate_into", "gemm_odd_37x61x29",
    "gemm_split_reduction", "gemm_transposed_a", "gemm_transposed_b", "gemm_transposed_b_256",
    "gemm_scaled",
    "gemm_all_disguises", "gpt2_causal_qk", "grp_conv2d_nhwc", "grp_conv2d_nhwc_divmod",
    "qdense_u8i8", "qdense_u8i8_nt", "qconv_u8i8", "qdense_u8i8_256", "resnet50_conv3x3", "resnet50_conv1x1", "tbg", "t2d_nhwc",
    "qdense_widened", "gemm_prescaled", "gemm_input_updated", "gemm_exp_shared",
    "atax", "bicg", "mvt", "gesummv", "mlp_two_layer", "doitgen", "doitgen_local_sum",
    # triangles: split into boxes of a halving, the diagonal's remainder left scalar
    "pb_syrk", "pb_syr2k", "pb_covariance", "pb_correlation",
    "pb_gemm", "pb_2mm", "pb_3mm", "pb_gemver",
    # in place: the rows it reads are read from a copy (rules/snapshot.py)
    "pb_trmm",
    # its scalar temp2 expanded, statements reordered so the loops distribute, two triangles
    "pb_symm",
    # real_updates.py: out-of-place updates and runtime scale factors
    "oop_fma_1d", "oop_fma_2d", "gemm_alpha_runtime", "gemm_minus_alpha_runtime",
    "gemm_alpha_beta_runtime", "gesummv_alpha_beta_runtime",
    # padding.py: remainders padded to the tile
    "qgemm_u8i8_30", "sgemm_30", "sgemm_odd_100x70x50",
    # polybench.py: f64 products (the f64 tiles)
    "polybench_gemm", "polybench_2mm", "dgemm_64",
    # mixed_precision.py: f16 products into f32 (the f16 tiles on f32 copies)
    "gemm_f16_f32acc", "gemm_f16_f32acc_nt",
    # scaled_products.py: a scale between two operands copied into one (regroup-factors)
    "rmsnorm_linear", "svd_reconstruct", "ldlt_update",
    # quantized.py: zero points multiplied out (distribute-product)
    "qdense_zero_points",
}
# No multiply-accumulate of a host intrinsic's dtypes: normalisation, softmax, pooling, scans,
# tropical products, elementwise chains.
HOST_NONE = {
    "bert_layernorm", "scale_bias_relu_1d", "scale_bias_relu_2d", "bn_add_relu_nhwc", "nrm_bmn",
    "sfm_mn", "resnet50_maxpool", "resnet50_global_avgpool", "prefix_sum_1d", "cumsum_rows",
    "maxplus_matmul", "minplus_matmul",
    # a recurrence over several statements: its nests cannot be split apart
    "rnn_relu_elman",
}
# Known misses, each with the reason --explain must give.
HOST_MISSED: dict[str, str] = {
    # factorisations: each step reads what the previous ones wrote
    name: "structure: the loop over i cannot be split into one loop per statement"
    for name in ("pb_lu", "pb_cholesky", "pb_trisolv")
}

CORPUS = {name: f for p in sorted((ROOT / "corpus").glob("*.py")) for name, f in parse_file(p).items()}


def test_coverage_table_names_every_corpus_function():
    assert set(CORPUS) == HOST_COVERED | HOST_NONE | set(HOST_MISSED)


# In parallel runs (pytest-xdist) a function's checks here and in tests/test_nonfinite.py run on
# one worker, which then interprets it once (runtime's cache of interpreted results).
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.xdist_group(n))
                                  for n in sorted(CORPUS)])
def test_corpus_function_tensorizes_and_checks(name):
    func = CORPUS[name]
    result = tensorize(func, AVX2)
    if name in HOST_COVERED:
        assert result.coverage >= 0.9, result.report()
    elif name in HOST_NONE:
        assert result.coverage == 0.0 and not result.sites
    else:
        assert result.coverage == 0.0
        assert HOST_MISSED[name] in result.explain()
    assert parse(show(result.func)) == result.func
    if HOST_HAS_AVX2:
        check = runtime.check(func, result.compile())
        assert check.ok, check.message


def test_f16_matmul_maps_onto_emulated_mma_with_target_all():
    func = CORPUS["gemm_f16_f32acc"]
    result = tensorize(func, intrinsics.library("all"))
    assert {s.intrinsic for s in result.sites} == {"nvidia.mma.f16f32.16x8x16"}
    assert result.coverage == 1.0
    assert runtime.check(func, result.compile()).ok


def test_explain_names_the_operator_for_max_plus():
    result = tensorize(CORPUS["maxplus_matmul"], AVX2)
    assert "operator" in result.explain()


def test_dtype_reason_for_f16():
    # an f16 product: the f32 rows' bodies, the wrong dtype (no f16 row on x86)
    func = parse("@prim_func\ndef mm16(A: f16[16, 16], B: f16[16, 16], C: f16[16, 16]):\n"
                 "    for i, j, k in grid(16, 16, 16):\n        C[i, j] += A[i, k] * B[k, j]\n")
    text = tensorize(func, AVX2).explain()
    assert "dtype" in text and "f16" in text


def test_rows_of_other_dtypes_still_explain_a_nest():
    """The saturation matches only the rows whose dtypes the program holds; a nest no such
    row gets past the dtypes for is explained against the others too: i8 x i8 is nearest
    the u8 x i8 dot, not the f32 FMA the program's f32 product fits (with shift-bytes off:
    it copies P into u8 shifted by 128, and the product runs on the int8 tiles)."""
    func = parse(
        "@prim_func\n"
        "def mixed(A: f32[32, 32], B: f32[32, 32], C: f32[32, 32], P: i8[32, 32], Q: i8[32, 32],\n"
        "          R: i32[32, 32]):\n"
        "    for i, j, k in grid(32, 32, 32):\n        C[i, j] += A[i, k] * B[k, j]\n"
        "    for i, j, k in grid(32, 32, 32):\n        R[i, j] += i32(P[i, k]) * i32(Q[k, j])\n")
    result = tensorize(func, AVX2, rules_off=("distribute",))
    assert "x86.mm.f32.6x16x1" in {s.intrinsic for s in result.sites}
    assert "nearest x86.dot.u8i8i32.16x4: dtype: P is i8 but operand a" in result.explain()
    shifted = tensorize(func, AVX2)
    assert {"x86.mm.u8i8i32.4x16x2", "x86.mm.u8i8i32.2x16x4"} & {s.intrinsic for s in shifted.sites}


I16_PRODUCT = """
@prim_func
def i16_mm(A: i16[37, 64], B: BD[BT], C: i32[37, 29]):
    for i, j in grid(37, 29):
        C[i, j] = 0
        for k in range(64):
            C[i, j] += i32(A[i, k]) * i32(B[BI])
"""


@pytest.mark.parametrize("bd, tiles", [("i16", ("x86.mm.i16i32.4x16x2", "x86.avx512vnni.mm.i16i32.8x32x2")),
                                       ("i8", ("x86.mm.i16i8i32.4x16x2", "x86.avx512vnni.mm.i16i8i32.8x32x2"))])
@pytest.mark.parametrize("bt, bi", [("64, 29", "k, j"), ("29, 64", "j, k")], ids=["nn", "nt"])
def test_an_i16_product_runs_on_the_i16_tiles_and_checks(bd, tiles, bt, bi):
    # i16 x i16, and i16 activations times i8 weights (TFLite's 16x8 quantization)
    func = parse(I16_PRODUCT.replace("BD", bd).replace("BT", bt).replace("BI", bi))
    result = tensorize(func, AVX2)
    assert tiles[0] in {s.intrinsic for s in result.sites}, result.report()
    assert result.coverage >= 0.95
    if HOST_HAS_AVX2:
        check = runtime.check(func, result.compile())  # integers: bit for bit
        assert check.ok, check.message
    if "avx512vnni" in intrinsics.host_features():  # the host's own row: vpdpwssd
        best = tensorize(func)
        assert tiles[1] in {s.intrinsic for s in best.sites}
        check = runtime.check(func, best.compile())
        assert check.ok, check.message


def test_f16_products_run_on_f32_copies():
    """An f16 product into f32 runs on tiles that read f32 copies of A and B, each element
    converted once (exact): the f16 tiles over panels pack-panel converts, or the f32 tiles
    over the copies hoist-operand makes, whichever the cost model prices lower (at 128^3,
    on the AVX2 library, the latter)."""
    result = tensorize(CORPUS["gemm_f16_f32acc"], AVX2)
    assert {s.intrinsic for s in result.sites} <= {
        "x86.mm.f16f32.6x16x1", "x86.mm.f16f32.4x16x1", "x86.mm.f16f32.2x16x1",
        "x86.mm.f32.6x16x1", "x86.mm.f32.4x16x1", "x86.mm.f32.2x16x1"}
    assert result.coverage == 1.0
    widened = {s.value.a.buffer.name for s in walk_stmts(result.func.body)
               if isinstance(s, Store) and s.buffer.dtype == "f32" and isinstance(s.value, Cast)
               and isinstance(s.value.a, Load) and s.value.a.dtype == "f16"}
    assert widened == {"A", "B"}


def test_f64_products_run_on_the_f64_tiles():
    """dgemm_64 maps onto the f64 6x8 tile (and its 4-row remainder), every multiply-add."""
    result = tensorize(CORPUS["dgemm_64"], AVX2)
    assert {s.intrinsic for s in result.sites} == {"x86.mm.f64.6x8x1", "x86.mm.f64.4x8x1"}
    assert result.coverage == 1.0


@pytest.mark.parametrize("body, row", [("y[i] += A[i, k] * x[k]", "x86.gemv.f64.4x4"),
                                       ("y[k] += A[i, k] * x[i]", "x86.axpy.f64x16")])
def test_f64_matrix_vector_products_run_on_the_f64_rows(body, row):
    # A read along its rows either way: four rows against x, or a row scaled by x[i]
    func = parse("@prim_func\ndef mv(A: f64[64, 64], x: f64[64], y: f64[64]):\n"
                 f"    for i, k in grid(64, 64):\n        {body}\n")
    result = tensorize(func, AVX2)
    assert {s.intrinsic for s in result.sites} == {row} and result.coverage == 1.0
    if HOST_HAS_AVX2:
        check = runtime.check(func, result.compile())
        assert check.ok, check.message


# ---------------------------------------------------------------------------
# budgets


def test_unrolled_sum_stops_at_the_node_budget():
    terms = " + ".join(f"A[i, {k}] * B[{k}]" for k in range(64))
    func = parse(f"@prim_func\ndef unrolled(A: f32[4, 64], B: f32[64], C: f32[4]):\n"
                 f"    for i in range(4):\n        C[i] += {terms}\n")
    result = tensorize(func, AVX2, Budget(enodes=50_000))
    assert result.saturation.stop_reason in ("node limit", "time limit")
    assert runtime.check(func, result.compile()).ok


def test_deep_nest_is_matched_within_budget():
    loops = "\n".join("    " * (k + 1) + f"for v{k} in range(2):" for k in range(9))
    idx = ", ".join(f"v{k}" for k in range(9)) + ", w"
    shape = ", ".join(["2"] * 9) + ", 8"
    func = parse(f"@prim_func\ndef deep(A: f32[{shape}], B: f32[{shape}], C: f32[{shape}]):\n{loops}\n"
                 f"{'    ' * 10}for w in range(8):\n{'    ' * 11}C[{idx}] += A[{idx}] * B[{idx}]\n")
    result = tensorize(func, AVX2)
    assert result.saturation.stop_reason == "saturated"
    assert result.coverage == 1.0
    assert runtime.check(func, result.compile()).ok


def test_hard_limit_kills_the_worker_and_the_program_stays_correct():
    terms = " + ".join(f"A[i, {k}] * B[{k}]" for k in range(32))
    func = parse(f"@prim_func\ndef unrolled(A: f32[4, 32], B: f32[32], C: f32[4]):\n"
                 f"    for i in range(4):\n        C[i] += {terms}\n")
    result = tensorize(func, AVX2, Budget(enodes=10**9, seconds=1e9, iterations=1000, hard_seconds=0.5))
    assert result.saturation.stop_reason.startswith("killed")
    assert result.coverage == 0.0
    assert runtime.check(func, result.compile()).ok
    # the next function gets a fresh worker
    assert tensorize(_only(GOLDEN[0]), AVX2).saturation.stop_reason == "saturated"


def test_interpreter_runs_tensorized_programs_like_the_originals():
    from rewrite.inputs import random_args
    from rewrite.interp import run

    for path in GOLDEN:
        func = _only(path)
        result = tensorize(func, AVX2)
        args = random_args(func, seed=3)
        want, got = run(func, **args), run(result.func, **args)
        for b in func.outputs:
            np.testing.assert_allclose(got[b.name], want[b.name], rtol=1e-5, atol=1e-5)


def _windows_on(func, name):
    """The windows of buffer ``name`` that ``func``'s intrinsic calls read, with the calls."""
    from rewrite import ir

    return [(s.intrinsic.name, w) for s in ir.walk_stmts(func.body) if isinstance(s, ir.Call)
            for _, w in s.operands if w.buffer.name == name]


@pytest.mark.parametrize("library,rows,axpys", [
    ("x86-avx2", {"x86.gemv.f32.4x8"}, {"x86.axpy.f32x32", "x86.axpy.f32x8"}),
    # the two products merged by fuse-sweeps onto the 8x16 gemv and gemvt (rules/sweeps.py)
    ("x86-avx512", {"x86.avx512.gemv.f32.8x8", "x86.avx512.gemv.f32.8x16"},
     {"x86.avx512.axpy.f32x64", "x86.avx512.gemvt.f32.8x16", "x86.axpy.f32x8"}),
])
def test_matrix_vector_products_read_the_matrix_at_unit_stride(library, rows, axpys):
    # x1 += A y1 reads rows of A: a gemv row; x2 += A^T y2 reads rows of A as an axpy's b
    # (or a gemvt's a), the widest that keeps enough FMA chains going (the 8-wide axpy only
    # for the last 16 columns). Neither gathers a column: every window on A moves by one
    # along its rows.
    result = tensorize(CORPUS["mvt"], intrinsics.library(library))
    sites = {s.intrinsic for s in result.sites}
    assert sites & rows and sites <= rows | axpys and sites & axpys - {"x86.axpy.f32x8"}
    assert result.coverage == 1.0
    on_a = _windows_on(result.func, "A")
    assert on_a and all(w.strides[-1] == 1 for _, w in on_a), on_a
    features = {"x86-avx2": {"avx2", "fma"}, "x86-avx512": {"avx512f", "fma"}}[library]
    if features <= intrinsics.host_features():
        check = runtime.check(CORPUS["mvt"], result.compile())
        assert check.ok, check.message


@pytest.mark.skipif(not HOST_HAS_AVX2, reason="needs AVX2+FMA to run the native rows")
def test_a_subtracted_product_is_a_product_scaled_by_minus_one():
    src = """
@prim_func
def f(A: f32[64, 64], B: f32[64, 64], C: f32[64, 64]):
    for i, j, k in grid(64, 64, 64):
        C[i, j] -= A[i, k] * B[k, j]
"""
    result = tensorize(parse(src), AVX2)
    assert result.ops_in_intrinsics / result.ops_total > 0.9
    assert "-1.0 *" in show(result.func)
    assert runtime.check(result.func).ok


@pytest.mark.parametrize("update", [
    "C[i, j] -= 0.5 * A[k, i] * B[k, j]",
    "C[i, j] -= A[k, i] * (0.5 * B[k, j])",
    "C[i, j] = C[i, j] - 0.5 * A[k, i] * B[k, j]",
], ids=["scaled", "scale-inside", "written-out"])
def test_a_subtracted_scaled_product_is_a_product_scaled_by_minus_the_constant(update):
    src = f"""
@prim_func
def f(A: f32[64, 48], B: f32[64, 40], C: f32[48, 40]):
    for i, j, k in grid(48, 40, 64):
        {update}
"""
    result = tensorize(parse(src), AVX2)
    assert result.coverage > 0.9, result.report()
    assert "-0.5 *" in show(result.func)
    if HOST_HAS_AVX2:
        check = runtime.check(result.func)
        assert check.ok, check.message


@pytest.mark.parametrize("update, factor", [
    ("C[i, j] -= i32(A[i, k]) * i32(B[k, j])", "-1 *"),
    ("C[i, j] += 2 * i32(A[i, k]) * i32(B[k, j])", "2 *"),
    ("C[i, j] -= i32(A[i, k]) * (3 * i32(B[k, j]))", "-3 *"),
], ids=["subtracted", "scaled", "subtracted-scaled"])
def test_an_int8_product_with_a_constant_factor_runs_on_the_int8_rows(update, factor):
    # wrap-around integers: the sum of the scaled terms is the scaled sum, exactly
    src = f"""
@prim_func
def q(A: u8[32, 64], B: i8[64, 32], C: i32[32, 32]):
    for i, j, k in grid(32, 32, 64):
        {update}
"""
    result = tensorize(parse(src), AVX2)
    assert result.coverage > 0.9 and all("u8i8i32" in s.intrinsic for s in result.sites), result.report()
    assert f"{factor} T" in show(result.func)
    if HOST_HAS_AVX2:
        check = runtime.check(result.func)
        assert check.ok and check.max_abs_error == 0, check.message


# the extractor's branch and bound (extract._Builder): exact, and it prunes
_PRUNED_SRC = {
    # a scaled product with remainders along every loop, and a product of its result
    "scaled_chain": """
@prim_func
def f(A: f32[37, 45], B: f32[45, 29], C: f32[29, 50], T: f32[37, 29], D: f32[37, 50]):
    for i, j in grid(37, 29):
        T[i, j] = 0.0
    for i, j, k in grid(37, 29, 45):
        T[i, j] += 1.5 * A[i, k] * B[k, j]
    for i, j, k in grid(37, 50, 29):
        D[i, j] += T[i, k] * C[k, j]
""",
    # a transposed operand (packing weighed against gathers) and a matrix-vector product
    "transposed_gemv": """
@prim_func
def f(A: f32[40, 70], B: f32[33, 70], C: f32[40, 33], x: f32[70], y: f32[40]):
    for i, j, k in grid(40, 33, 70):
        C[i, j] += A[i, k] * B[j, k]
    for i, k in grid(40, 70):
        y[i] += 2.0 * A[i, k] * x[k]
""",
}


@pytest.mark.parametrize("name", sorted(_PRUNED_SRC))
def test_the_extractors_bound_prunes_and_keeps_the_cheapest_plan(name, monkeypatch):
    """Candidates whose floor exceeds the cheapest plan found are not planned (fewer
    binding plans than planning everything), and the program chosen is the one planning
    everything chooses, at the same cost, on the AVX-512 rows (the matrix-vector and wide
    axpy rows give many candidates)."""
    from rewrite import extract

    library = intrinsics.library("x86-avx512")
    planned = []
    tiled = extract._Builder._tiled

    def counting(self, *a, **kw):
        planned.append(1)
        return tiled(self, *a, **kw)

    monkeypatch.setattr(extract._Builder, "_tiled", counting)
    pruned = tensorize(parse(_PRUNED_SRC[name]), library)
    n_pruned, planned[:] = len(planned), []
    monkeypatch.setattr(extract, "PRUNE", False)
    full = tensorize(parse(_PRUNED_SRC[name]), library)
    assert n_pruned < len(planned) / 2
    assert pruned.cost == pytest.approx(full.cost, rel=1e-12)
    assert show(pruned.func) == show(full.func)
    assert pruned.ops_in_intrinsics == full.ops_in_intrinsics > 0


def test_nests_equal_up_to_their_loads_saturate_once_and_match_their_own_loads():
    from rewrite import nests
    from rewrite.pipeline import _distinct_bodies, plan_items
    from rewrite.names import Names

    func = parse("""
@prim_func
def three(A: f32[16, 16], B: f32[16, 16], C: f32[16, 16], E: f32[32, 16], F: f32[16, 16],
          D: f32[16, 16], x: f32[16], y: f32[16]):
    for i, j, k in grid(16, 16, 16):
        C[i, j] += A[i, k] * B[k, j]
    for i, j, k in grid(16, 16, 16):
        D[i, j] += E[i + 16, k] * F[k, j]
    for i in range(16):
        y[i] += x[i] * x[i]
""")
    acc = [p for p in nests.items(nests.normalize(func)) if isinstance(p, nests.AccNest)]
    bodies, which, leaves = _distinct_bodies(acc)
    assert len(bodies) == 2 and which == [0, 0, 1]  # x * x is no a * b
    assert sorted(x.buffer.name for x in leaves[1].values()) == ["E", "F"]
    assert [x.buffer.name for x in leaves[2].values()] == ["x"]
    lib = [d for d in intrinsics.library("x86-avx2") if d.name == "x86.mm.f32.6x16x1"]
    planned = plan_items(acc, {d.name: d for d in lib}, Budget(), Names.of(func), in_process=True)
    text = "\n".join(show_stmt(s) for s in planned.stmts)
    assert "E[" in text and "x86.mm.f32.6x16x1" in text
    result = tensorize(func, lib)
    assert runtime.check(func, runtime.compile(result.func)).ok


def test_products_on_other_quadrants_share_one_plan_moved(monkeypatch):
    # three products on quadrants of A, B and C, and one on a temporary of another shape:
    # the extractor plans two nests, the others take the first plan with their accesses
    # moved, and the program computes what the function does
    from rewrite.extract import Extractor

    func = parse("""
@prim_func
def quads(A: f32[96, 96], B: f32[96, 96], C: f32[96, 96], T: f32[48, 48], D: f32[48, 48]):
    for i, j, k in grid(48, 48, 48):
        C[i, j] += A[i, k] * B[k, j]
    for i, j, k in grid(48, 48, 48):
        C[i + 48, j + 48] += A[i + 48, k + 48] * B[k + 48, j + 48]
    for i, j, k in grid(48, 48, 48):
        C[i, j + 48] += A[i + 48, k] * B[k, j + 48]
    for i, j, k in grid(48, 48, 48):
        D[i, j] += T[i, k] * B[k + 48, j]
""")
    planned = []
    best = Extractor.best
    monkeypatch.setattr(Extractor, "best", lambda self, n, m: planned.append(n.out.name) or best(self, n, m))
    lib = [d for d in intrinsics.library("x86-avx2") if d.name == "x86.mm.f32.6x16x1"]
    result = tensorize(func, lib, strassen="off")
    assert planned == ["C", "D"]
    assert result.ops_in_intrinsics == result.ops_total
    text = show(result.func)
    assert "A[6 * i_o + 48, k + 48]" in text and "B[k, 16 * j_o + 48]" in text, text
    assert runtime.check(func, runtime.compile(result.func)).ok
    # NaN, infinities and signed zeros in each quadrant land where the interpreter puts them
    from rewrite.inputs import random_args
    from .test_nonfinite import _run_both, _same_pattern

    args = random_args(func, seed=2)
    args["A"][50, 60], args["A"][10, 5] = np.nan, np.inf
    args["B"][70, 90], args["B"][3, :] = -np.inf, -0.0
    args["T"][4, 7] = np.nan
    want, got = _run_both(func, result.func, args)
    for out in ("C", "D"):
        assert _same_pattern(want[out], got[out]), out
    assert np.isnan(want["C"][50, 48:]).all() and np.isnan(want["D"][4]).all()
