"""fuse-sweeps (rules/sweeps.py): PolyBench's matrix-vector pairs become one sweep over the
matrix's rows, and the fusion is refused wherever it would change what is computed."""

from pathlib import Path

import numpy as np
import pytest

import intrinsics
from rewrite import ir, runtime
from rewrite.inputs import random_args
from rewrite.interp import run
from rewrite.pipeline import tensorize
from rewrite.rules.sweeps import fuse_sweeps
from rewrite.script import parse, parse_file, show
from rewrite.verify import verify

ROOT = Path(__file__).parent.parent
MATVEC = parse_file(ROOT / "corpus" / "matvec.py")
AVX512 = intrinsics.library("x86-avx512")
AVX2 = intrinsics.library("x86-avx2")
HOST_RUNS = {"avx512f", "avx512vl", "fma"} <= intrinsics.host_features()


def _close(a, b, seeds=(1, 2)):
    """The interpreter gives ``a`` and ``b`` the same results up to reassociation."""
    for seed in seeds:
        args = random_args(a, seed)
        want, got = run(a, **args), run(b, **args)
        for name, arr in want.items():
            np.testing.assert_allclose(got[name], arr, rtol=1e-4, atol=1e-4, err_msg=name)


def _top_loops(func):
    return [s for s in ir.stmts_of(func.body) if isinstance(s, ir.For)]


def _fused_loop(func, matrix="A"):
    """The top-level loop whose body holds more than one statement reading ``matrix``."""
    for s in _top_loops(func):
        inner = ir.stmts_of(s.body)
        if len([x for x in inner if matrix in {b.name for b in ir.buffers_of(x)}]) > 1:
            return s
    return None


# ---------------------------------------------------------------------------
# PolyBench: one sweep


@pytest.mark.parametrize("name", ["mvt", "atax", "bicg"])
def test_two_products_over_one_matrix_are_one_sweep(name, zen4_caches):
    func = MATVEC[name]
    # the sweep as fuse-sweeps makes it (private-partials then cuts it into blocks of rows:
    # tests/test_partials.py)
    result = tensorize(func, AVX512, rules_off={"partials"})
    loop = _fused_loop(result.func)
    assert loop is not None, result.script()
    inner = ir.stmts_of(loop.body)
    intrinsics_inside = {x.intrinsic.name for s in inner for x in ir.walk_stmts(s)
                         if isinstance(x, ir.Call)}
    if name == "atax":
        # the row form (eight rows a call), then the transposed form on the gemvt row,
        # block after block: it reads what the gemv has summed over the whole block
        assert {"x86.avx512.gemv.f32.8x8", "x86.avx512.gemvt.f32.8x16"} <= intrinsics_inside
    else:
        # independent products: merged, column block by column block, on the 8x16 pair
        assert {"x86.avx512.gemv.f32.8x16", "x86.avx512.gemvt.f32.8x16"} <= intrinsics_inside
    # eight rows of A an iteration
    assert loop.extent == {"mvt": 50, "atax": 48, "bicg": 51}[name]
    plain = tensorize(func, AVX512, rules_off={"tidy", "partials"})
    assert _fused_loop(plain.func) is None
    assert result.coverage == plain.coverage
    _close(plain.func, result.func)
    if HOST_RUNS:
        check = runtime.check(func, result.compile())
        assert check.ok, check.message


@pytest.mark.parametrize("name", ["mvt", "atax", "bicg"])
def test_the_avx2_library_sweeps_once_too(name):
    """AVX2 alone (no gemvt row; what an AVX2-only host plans on): the same single sweep, in
    blocks of the 4x8 gemv's four rows, the transposed product on the axpy rows of each
    block inside it, and the compiled program agrees with the interpreter."""
    func = MATVEC[name]
    result = tensorize(func, AVX2, rules_off={"partials"})
    loop = _fused_loop(result.func)
    assert loop is not None, result.script()
    inside = {x.intrinsic.name for x in ir.walk_stmts(loop.body) if isinstance(x, ir.Call)}
    assert {"x86.gemv.f32.4x8", "x86.axpy.f32x32"} <= inside, result.script()
    assert not any("avx512" in n for n in inside)
    rows = MATVEC[name].params[0].shape[0]  # A's rows
    assert loop.extent == rows // 4
    assert _fused_loop(tensorize(func, AVX2, rules_off={"tidy", "partials"}).func) is None
    if {"avx2", "fma"} <= intrinsics.host_features():
        check = runtime.check(func, result.compile())
        assert check.ok, check.message


def test_golden_mvt_sweep(zen4_caches):
    result = tensorize(MATVEC["mvt"], AVX512, rules_off={"partials"})
    assert show(result.func).split('"""')[-1] == '''
    for i_o in range(50):
        for j_o1 in range(24):
            call("x86.avx512.gemv.f32.8x16", c=window(x1[8 * i_o], (1,)), a=window(A[8 * i_o, 16 * j_o1], (1, 0), (0, 1)), b=window(y1[16 * j_o1], (1,)))
            call("x86.avx512.gemvt.f32.8x16", c=window(x2[16 * j_o1], (1,)), a=window(A[8 * i_o, 16 * j_o1], (1, 0), (0, 1)), b=window(y2[8 * i_o], (1,)))
        for j_o in range(48, 50):
            call("x86.avx512.gemv.f32.8x8", c=window(x1[8 * i_o], (1,)), a=window(A[8 * i_o, 8 * j_o], (1, 0), (0, 1)), b=window(y1[8 * j_o], (1,)))
        call("x86.avx512.gemvt.f32.8x16", c=window(x2[384], (1,)), a=window(A[8 * i_o, 384], (1, 0), (0, 1)), b=window(y2[8 * i_o], (1,)))
'''


# ---------------------------------------------------------------------------
# the rule on statements


def _f(body: str, params: str = "A: f32[128, 160], x: f32[160], y: f32[128], z: f32[160], w: f32[128]"):
    lines = body.strip("\n").splitlines()
    return parse("@prim_func\ndef f(" + params + "):\n" + "\n".join("    " + l for l in lines) + "\n")


ROWS = """
for i_o, j_o in grid(16, 20):
    call("x86.avx512.gemv.f32.8x8", c=window(y[8 * i_o], (1,)), a=window(A[8 * i_o, 8 * j_o], (1, 0), (0, 1)), b=window(x[8 * j_o], (1,)))
"""
COLUMNS = """
for j_o, i in grid(2, 128):
    call("x86.avx512.axpy.f32x64", c=window(z[64 * j_o], (1,)), a=window(w[i], (0,)), b=window(A[i, 64 * j_o], (0, 1)))
"""


def _fused(func) -> bool:
    stmts = list(ir.stmts_of(func.body))
    out = fuse_sweeps(stmts)
    if out == stmts:
        return False
    new = ir.PrimFunc(func.name, func.params, ir.seq(*out), func.allocs)
    verify(new)
    _close(func, new)
    return True


def test_rows_then_columns_fuse_and_keep_results():
    func = _f(ROWS + COLUMNS)
    assert _fused(func)
    (loop,) = fuse_sweeps(list(ir.stmts_of(func.body)))
    assert isinstance(loop, ir.For) and loop.extent == 16


def test_columns_then_rows_fuse_and_keep_results():
    assert _fused(_f(COLUMNS + ROWS))


def test_rows_beyond_the_blocks_stay_a_nest():
    # the column sweep runs over 136 rows, the blocks cover 128: the last 8 follow the loop
    func = _f(ROWS + COLUMNS.replace("grid(2, 128)", "grid(2, 136)"),
              params="A: f32[136, 160], x: f32[160], y: f32[128], z: f32[160], w: f32[136]")
    assert _fused(func)
    out = fuse_sweeps(list(ir.stmts_of(func.body)))
    assert len(out) == 2 and out[1].body.start == 128 and out[1].body.stop == 136


def test_a_product_that_reads_the_others_result_fuses_block_by_block():
    # atax: the column sweep reads y, which the row sweep writes eight rows at a time
    func = _f(ROWS + COLUMNS.replace("a=window(w[i]", "a=window(y[i]"))
    assert _fused(func)


@pytest.mark.parametrize("change", [
    # the column sweep writes what the row sweep reads: y[i] of later blocks read too early
    lambda r, c: r + c.replace("c=window(z[64 * j_o]", "c=window(x[64 * j_o]").replace(
        "z: f32[160]", ""),
    # the row sweep reads the column sweep's result in blocks it has not finished
    lambda r, c: r.replace("b=window(x[8 * j_o]", "b=window(z[8 * j_o]") + c,
])
def test_a_fusion_the_dependences_forbid_is_refused(change):
    assert not _fused(_f(change(ROWS, COLUMNS)))


def test_a_matrix_written_in_between_is_not_swept_once():
    func = _f(ROWS + "A[0, 0] = 1.0\n" + COLUMNS)
    assert not _fused(func)


def test_a_statement_between_that_does_not_commute_is_refused():
    # it reads y, which the row sweep writes: moving it before the sweep reads old values
    func = _f(ROWS + "w[0] = y[5]\n" + COLUMNS)
    assert not _fused(func)


def test_a_statement_between_that_commutes_moves_before():
    func = _f(ROWS + "z[3] = 0.0\n" + COLUMNS.replace("grid(2, 128)", "grid(2, 128)"))
    # z[3] = 0.0 then the column sweep adds into z: the fill must stay before it, and may
    # move before the row sweep, which does not touch z
    stmts = fuse_sweeps(list(ir.stmts_of(func.body)))
    assert len(stmts) == 2 and isinstance(stmts[0], ir.Store)
    _close(func, ir.PrimFunc("f", func.params, ir.seq(*stmts)))


def test_a_small_matrix_is_left_alone():
    func = _f(ROWS.replace("grid(16, 20)", "grid(4, 2)") +
              COLUMNS.replace("grid(2, 128)", "grid(1, 32)"),
              params="A: f32[32, 64], x: f32[16], y: f32[32], z: f32[64], w: f32[32]")
    assert not _fused(func)


def test_a_sweep_reading_its_own_output_is_not_reordered():
    # the axpy's scale is read from the buffer it adds into: its calls' order matters
    func = _f(ROWS + COLUMNS.replace("a=window(w[i], (0,))", "a=window(z[159], (0,))"))
    assert not _fused(func)


def test_scalar_code_is_not_swept():
    # a scalar nest over the rows stays where it is (measured slower inside the sweep)
    func = _f(ROWS + """
for j, i in grid(8, 128):
    z[j] += A[i, j] * w[i]
""")
    assert not _fused(func)


def _calls_in_order(loop) -> list[str]:
    return [x.intrinsic.name for x in ir.walk_stmts(loop.body) if isinstance(x, ir.Call)]


def test_independent_products_run_the_blocked_one_first():
    # the column sweep comes first in the program but neither reads what the other writes:
    # in the fused loop the gemv streams the block, then the axpy reads it again
    func = _f(COLUMNS + ROWS)
    assert _fused(func)
    (loop,) = fuse_sweeps(list(ir.stmts_of(func.body)))
    assert _calls_in_order(loop) == ["x86.avx512.gemv.f32.8x8", "x86.avx512.axpy.f32x64"]


def test_a_column_sweep_that_reads_the_old_rows_result_stays_first():
    # the column sweep scales by y before the row sweep adds into y: its block must run
    # before the row sweep's, which would otherwise change y[i] under it
    func = _f(COLUMNS.replace("a=window(w[i]", "a=window(y[i]") + ROWS)
    assert _fused(func)
    (loop,) = fuse_sweeps(list(ir.stmts_of(func.body)))
    assert _calls_in_order(loop) == ["x86.avx512.axpy.f32x64", "x86.avx512.gemv.f32.8x8"]


# ---------------------------------------------------------------------------
# merging independent products over one block onto the gemv and gemvt rows


def _merged_loop(func, library):
    out = fuse_sweeps(list(ir.stmts_of(func.body)), library)
    new = ir.PrimFunc(func.name, func.params, ir.seq(*out), func.allocs)
    verify(new)
    _close(func, new)
    return out


def test_golden_merged_block():
    # the axpy's 128 columns run with the gemv's, 16 at a time on the 8x16 pair; the gemv's
    # last 32 columns stay its own loop
    (loop,) = _merged_loop(_f(ROWS + COLUMNS), AVX512)
    assert show(ir.PrimFunc("f", (), loop)).split("):\n", 1)[1] == '''    for i_o in range(16):
        for j_o1 in range(8):
            call("x86.avx512.gemv.f32.8x16", c=window(y[8 * i_o], (1,)), a=window(A[8 * i_o, 16 * j_o1], (1, 0), (0, 1)), b=window(x[16 * j_o1], (1,)))
            call("x86.avx512.gemvt.f32.8x16", c=window(z[16 * j_o1], (1,)), a=window(A[8 * i_o, 16 * j_o1], (1, 0), (0, 1)), b=window(w[8 * i_o], (1,)))
        for j_o in range(16, 20):
            call("x86.avx512.gemv.f32.8x8", c=window(y[8 * i_o], (1,)), a=window(A[8 * i_o, 8 * j_o], (1, 0), (0, 1)), b=window(x[8 * j_o], (1,)))
'''


def test_merged_block_on_offset_columns_keeps_results():
    # the axpy over columns 32 to 160 of A into z[0:128]: the gemv's first 4 blocks of 8
    # columns before the merged loop, none after
    columns = COLUMNS.replace("b=window(A[i, 64 * j_o]", "b=window(A[i, 64 * j_o + 32]")
    (loop,) = _merged_loop(_f(ROWS + columns), AVX512)
    calls = [x.intrinsic.name for x in ir.walk_stmts(loop) if isinstance(x, ir.Call)]
    assert calls == ["x86.avx512.gemv.f32.8x8", "x86.avx512.gemv.f32.8x16", "x86.avx512.gemvt.f32.8x16"]


def test_a_product_that_reads_the_others_result_runs_after_it_on_the_gemvt_row():
    # atax: the axpy scales by y[i], which the gemv finishes only at the end of the block:
    # not merged into the gemv's loop, but its block on the 8x16 gemvt after it
    (loop,) = _merged_loop(_f(ROWS + COLUMNS.replace("a=window(w[i]", "a=window(y[i]")), AVX512)
    first, second = ir.stmts_of(loop.body)
    assert [x.intrinsic.name for x in ir.walk_stmts(first) if isinstance(x, ir.Call)] == \
        ["x86.avx512.gemv.f32.8x8"]
    assert [x.intrinsic.name for x in ir.walk_stmts(second) if isinstance(x, ir.Call)] == \
        ["x86.avx512.gemvt.f32.8x16"]
    assert second.extent == 8


def test_no_merge_without_a_gemvt_row():
    library = [d for d in AVX512 if "gemvt" not in d.name]
    out = _merged_loop(_f(ROWS + COLUMNS), library)
    calls = {x.intrinsic.name for s in out for x in ir.walk_stmts(s) if isinstance(x, ir.Call)}
    assert calls == {"x86.avx512.gemv.f32.8x8", "x86.avx512.axpy.f32x64"}


def test_the_terms_check_sees_a_column_block_added_twice():
    # the check the merge runs before it is used: the same calls, one of them twice
    from rewrite.rules.sweeps import _same_terms
    (rows,) = ir.stmts_of(_f(ROWS).body)
    twice = ir.For("i_o", 0, 16, ir.seq(rows.body, ir.For("j_o", 0, 1, rows.body.body)))
    assert _same_terms(rows, rows, {})
    assert not _same_terms(rows, twice, {})
