"""read-panel (rules/panels.py): a call reading an operand in place reads the panel an earlier
copy made of it instead, and the tiles that leave rows of a product read the same panel."""

import math

import numpy as np
import pytest

import intrinsics
from rewrite import interp, ir, runtime
from rewrite.inputs import random_args
from rewrite.pipeline import tensorize
from rewrite.rules import tiles
from rewrite.rules.panels import copy_of, panels_per_block, read_panels
from rewrite.script import parse
from rewrite.verify import verify

from .test_intrinsics import needs_isa

AVX2 = intrinsics.library("x86-avx2")

PROGRAM = """
@prim_func
def f(A: f32[10, 64], B: f32[64, 64], C: f32[10, 64], D: f32[4]):
    B_panel = alloc({panel_type}[4, 64, 16])
    for k, j_o, j_i in grid(64, 4, 16):
        B_panel[j_o, k, j_i] = {copied}
    {between}
    for i_o, j_o, k in grid(1, 4, 64):
        call("x86.mm.f32.6x16x1", c=window(C[6 * i_o, 16 * j_o], (1, 0), (0, 1)),
             a=window(A[6 * i_o, k], (1, 0), (0, 1)), b=window(B_panel[j_o, k, 0], (0, 1, 0), (0, 0, 1)))
    for j_o, k in grid({cols}, 64):
        call("{rest}", c=window(C[6, {col}], (1, 0), (0, 1)),
             a=window(A[6, k], (1, 0), (0, 1)), b=window(B[k, {col}], (1, 0), (0, 1)))
"""


def _program(copied="B[k, j_i + 16 * j_o]", between="D[0] = 1.0", cols=4, col="16 * j_o",
             rest="x86.mm.f32.4x16x1", panel_type="f32"):
    return parse(PROGRAM.format(copied=copied, between=between, cols=cols, col=col, rest=rest,
                                panel_type=panel_type))


def _rewritten(func):
    stmts = list(ir.stmts_of(func.body))
    out = read_panels(stmts)
    return stmts, out, ir.PrimFunc(func.name, func.params, ir.seq(*out), func.allocs)


def _last_b(stmts) -> ir.Window:
    (call,) = [x for x in ir.walk_stmts(stmts[-1]) if isinstance(x, ir.Call)]
    return call.window("b")


def test_the_rows_left_read_the_panel_and_compute_the_same_bits():
    func = _program()
    before, after, got = _rewritten(func)
    assert after[:-1] == before[:-1]
    b = _last_b(after)
    assert b.buffer.name == "B_panel" and b.steps == ((0, 1, 0), (0, 0, 1))
    assert [str(ir.Var("j_o")) == str(e) for e in b.base][0]
    verify(got)
    args = random_args(func, seed=2)
    want, have = interp.run(func, **args)["C"], interp.run(got, **args)["C"]
    assert want.tobytes() == have.tobytes()


@pytest.mark.parametrize("cols, col", [(3, "16 * j_o + 16"), (2, "32 * j_o")])
def test_a_window_a_whole_number_of_panels_along_is_found_at_its_tile(cols, col):
    # columns 16..63 only: base 16 * j_o + 16 is panel j_o + 1; 32 * j_o is panel 2 * j_o
    func = _program(cols=cols, col=col)
    _, after, got = _rewritten(func)
    assert _last_b(after).buffer.name == "B_panel"
    args = random_args(func, seed=4)
    assert interp.run(func, **args)["C"].tobytes() == interp.run(got, **args)["C"].tobytes()


@pytest.mark.parametrize("change", [
    dict(between="B[3, 5] = 1.0"),                   # the source written after the copy
    dict(between="B_panel[0, 0, 0] = 1.0"),          # the panel written after the copy
    dict(cols=3, col="16 * j_o + 8"),                # straddles two panels: no unit stride
    dict(copied="B[k, j_i + 16 * j_o] * 2.0"),       # not a copy
    dict(copied="B[j_i + 16 * j_o, k]"),             # a copy of other elements (B transposed)
])
def test_what_it_cannot_prove_stays(change):
    func = _program(**change)
    before, after, _ = _rewritten(func)
    assert after == before


def test_a_copy_is_one_element_per_iteration():
    # the same panel element written by two iterations is not a copy the rule reads
    s = parse("@prim_func\ndef f(B: f32[8, 8], P: f32[8]):\n"
              "    for i, j in grid(8, 8):\n        P[i] = B[i, j]\n").body
    assert copy_of(s) is None
    s = parse("@prim_func\ndef f(B: f32[8, 8], P: f32[8, 8]):\n"
              "    for i, j in grid(8, 8):\n        P[j, i] = B[i, j]\n").body
    assert copy_of(s) is not None


BLOCKED = """
@prim_func
def f(A: f32[12, 64], B: f32[64, 64], C: f32[12, 64], D: f32[4]):
    B_panel = alloc(f32[4, 64, 16])
    {before}
    for k, j_o, j_i in grid(64, 4, 16):
        B_panel[j_o, k, j_i] = B[k, j_i + 16 * j_o]
    for i, j in grid(12, 64):
        C[i, j] = 0.0
    {between}
    for j_o_b, k_o, i_o, j_o_i, k_i in grid(2, {blocks}, 2, 2, {kc}):
        call("x86.mm.f32.6x16x1", c=window(C[6 * i_o, 32 * j_o_b + 16 * j_o_i], (1, 0), (0, 1)),
             a=window(A[6 * i_o, {kc} * k_o + k_i], (1, 0), (0, 1)),
             b=window(B_panel[2 * j_o_b + j_o_i, {kc} * k_o + k_i, 0], (0, 1, 0), (0, 0, 1)))
    {after}
"""

# a block of 2 panels by 16 rows of B: 2 KB
BLOCK = 2 * 16 * 16 * 4


def _blocked(between="D[0] = 1.0", after="D[1] = 2.0", kc=16, before="D[2] = 3.0"):
    return parse(BLOCKED.format(between=between, after=after, kc=kc, blocks=64 // kc,
                                before=before))


def _per_block(func, budget=BLOCK):
    from rewrite.names import Names

    stmts, allocs = panels_per_block(list(ir.stmts_of(func.body)), func.allocs, Names.of(func),
                                     budget)
    return stmts, ir.PrimFunc(func.name, func.params, ir.seq(*stmts), tuple(allocs))


def _same_c(func, got, seed):
    args = random_args(func, seed=seed)
    args["C"] = np.full_like(args["C"], np.nan)  # the program's own fill starts C
    want = interp.run(func, **args)["C"]
    assert not np.isnan(want).any()
    assert want.tobytes() == interp.run(got, **args)["C"].tobytes()
    return args, want


def test_a_panel_read_block_by_block_is_copied_block_by_block_before_its_tiles():
    func = _blocked()
    stmts, got = _per_block(func)
    verify(got)
    (buf,) = got.allocs
    assert buf.shape == (2, 2, 16, 16)  # one block per column block: its iterations share none
    assert not any(ir.mentions(s, "B_panel") for s in stmts)
    nest = stmts[-2]
    assert [lp.extent for lp in ir.band(nest)[0]] == [2, 4]  # the copy inside j_o_b, k_o
    calls = [x for x in ir.walk_stmts(nest) if isinstance(x, ir.Call)]
    assert {c.window("b").buffer.name for c in calls} == {buf.name}
    _same_c(func, got, seed=5)


@pytest.mark.parametrize("change, budget", [
    (dict(after="D[1] = B_panel[0, 0, 0]"), BLOCK),   # a second reader of the panel
    (dict(before="B_panel[0, 0, 0] = 1.0"), BLOCK),   # the panel's temporary used before it
    (dict(between="B[3, 5] = 1.0"), BLOCK),           # the source written after the copy
    (dict(), BLOCK // 2),                             # no block of the nest fits
    (dict(kc=64), BLOCK),      # the boxes that fit lie inside the row tiles' loop: B copied twice
])
def test_what_panel_per_block_cannot_prove_or_place_stays(change, budget):
    func = _blocked(**change)
    stmts, _ = _per_block(func, budget)
    assert stmts == list(ir.stmts_of(func.body))


def test_blocks_read_again_by_an_outer_loop_are_not_copied_again():
    # the row blocks outermost read every block of B once each: copying per block would copy
    # B twice
    func = parse(BLOCKED.format(between="D[0] = 1.0", after="D[1] = 2.0", kc=16, blocks=4,
                                before="D[2] = 3.0")
                 .replace("c=window(C[6 * i_o, 32 * j_o_b + 16 * j_o_i]",
                          "c=window(C[6 * j_o_b, 32 * i_o + 16 * j_o_i]")
                 .replace("a=window(A[6 * i_o,", "a=window(A[6 * j_o_b,")
                 .replace("B_panel[2 * j_o_b + j_o_i,", "B_panel[2 * i_o + j_o_i,"))
    stmts, _ = _per_block(func, 2 * BLOCK)
    assert stmts == list(ir.stmts_of(func.body))


@needs_isa("x86.mm.f32.6x16x1")
@pytest.mark.parametrize("threads", [1, 2])
def test_the_blocks_compiled_compute_what_the_interpreter_does(threads):
    func = _blocked()
    _, got = _per_block(func)
    args, want = _same_c(func, got, seed=7)
    runtime.compile(got, threads=threads)(**args)
    assert np.allclose(args["C"], want, rtol=1e-5, atol=1e-5)


LEFT = """
@prim_func
def f(A: f32[10, 64], B: f32[64, 64], C: f32[10, 64], D: f32[4]):
    B_panel = alloc(f32[4, 64, 16])
    for k, j_o, j_i in grid(64, 4, 16):
        B_panel[j_o, k, j_i] = B[k, j_i + 16 * j_o]
    for i, j in grid(10, 64):
        C[i, j] = 0.0
    for j_o_b, k_o, i_o, j_o_i, k_i in grid(2, 4, 1, 2, 16):
        call("x86.mm.f32.6x16x1", c=window(C[6 * i_o, 32 * j_o_b + 16 * j_o_i], (1, 0), (0, 1)),
             a=window(A[6 * i_o, 16 * k_o + k_i], (1, 0), (0, 1)),
             b=window(B_panel[2 * j_o_b + j_o_i, 16 * k_o + k_i, 0], (0, 1, 0), (0, 0, 1)))
    {between}
    for j_o, k in grid(4, 64):
        call("x86.mm.f32.4x16x1", c=window(C[6, {col}], (1, 0), (0, 1)),
             a=window(A[6, k], (1, 0), (0, 1)), b=window(B_panel[j_o, k, 0], (0, 1, 0), (0, 0, 1)))
"""


def _left(between="D[0] = 1.0", col="16 * j_o"):
    return parse(LEFT.format(between=between, col=col))


def _blocks_with_rows_left(func):
    from rewrite.names import Names

    stmts = list(ir.stmts_of(func.body))
    params = {b.name for b in func.params}
    fused = tiles.fuse_blocks(tiles.fill_into_tiles(tiles.co_block(stmts), params))
    out, allocs = panels_per_block(fused, func.allocs, Names.of(func), BLOCK)
    return fused, out, ir.PrimFunc(func.name, func.params, ir.seq(*out), tuple(allocs))


def test_the_rows_a_tiling_leaves_run_in_the_tiles_blocks_and_read_the_same_block():
    func = _left()
    _, stmts, got = _blocks_with_rows_left(func)
    verify(got)
    nests = [s for s in stmts if any(isinstance(x, ir.Call) for x in ir.walk_stmts(s))]
    assert len(nests) == 1  # the 4 rows' calls inside the tiles' block loops
    calls = [x for x in ir.walk_stmts(nests[0]) if isinstance(x, ir.Call)]
    assert {c.intrinsic.name for c in calls} == {"x86.mm.f32.6x16x1", "x86.mm.f32.4x16x1"}
    (buf,) = got.allocs
    assert {c.window("b").buffer.name for c in calls} == {buf.name}
    # one copy of each block for both sets of tiles: B copied once in all
    copies = [(x, around) for x, around in ir.walk_in_loops(nests[0])
              if isinstance(x, ir.Store) and x.buffer.name == buf.name]
    assert sum(math.prod(lp.extent for lp in around) for _, around in copies) == 64 * 64
    assert not any(isinstance(x, ir.Store) and x.buffer.name == "C" and isinstance(x.value, ir.Const)
                   and len(around) == 2 for x, around in ir.walk_in_loops(got.body))  # no pass over C
    _same_c(func, got, seed=9)


@pytest.mark.parametrize("change", [
    dict(between="A[6, 3] = 1.0"),    # the rows' input written between: they cannot move up
    dict(between="C[6, 0] = 2.0"),    # an element of the rows' tiles written between
])
def test_rows_left_that_cannot_move_into_the_blocks_stay_and_the_panel_stays_whole(change):
    func = _left(**change)
    fused, stmts, got = _blocks_with_rows_left(func)
    assert sum(1 for s in fused if any(isinstance(x, ir.Call) for x in ir.walk_stmts(s))) == 2
    assert [b.name for b in got.allocs] == ["B_panel"]
    _same_c(func, got, seed=10)


def test_rows_left_whose_tiles_overlap_keep_their_order():
    # 16-wide tiles 8 columns apart: two calls add into one element, so their order stays
    func = _left(col="8 * j_o")
    stmts = list(ir.stmts_of(func.body))
    assert tiles.co_block(stmts) == stmts


@needs_isa("x86.mm.f32.4x16x1")
@pytest.mark.parametrize("threads", [1, 2])
def test_the_rows_left_in_the_blocks_compiled_compute_what_the_interpreter_does(threads):
    func = _left()
    _, _, got = _blocks_with_rows_left(func)
    args, want = _same_c(func, got, seed=11)
    runtime.compile(got, threads=threads)(**args)
    assert np.allclose(args["C"], want, rtol=1e-5, atol=1e-5)


@needs_isa("x86.mm.f32.4x16x1")
@pytest.mark.parametrize("m", [70, 71, 69, 68])
def test_a_product_whose_rows_a_tile_leaves_reads_one_panel_compiled(m):
    # B's rows 4 KB apart: B goes into panels for the 6x16 tiles; the rows past the last
    # whole tile read the same panel, and C's fill goes into both sets of tiles
    func = parse(f"@prim_func\ndef mm(A: f32[{m}, 256], B: f32[256, 1024], C: f32[{m}, 1024]):\n"
                 f"    for i, j in grid({m}, 1024):\n        C[i, j] = 0.0\n"
                 f"        for k in range(256):\n            C[i, j] += A[i, k] * B[k, j]\n")
    got = tensorize(func, AVX2).func
    calls = [x for x in ir.walk_stmts(got.body) if isinstance(x, ir.Call)]
    panels = {c.window("b").buffer.name for c in calls if "mm.f32" in c.intrinsic.name}
    assert len(panels) == 1 and panels != {"B"}
    if m % 6 in (2, 4):
        assert any(c.intrinsic.name == f"x86.mm.f32.{m % 6}x16x1" for c in calls)
    check = runtime.check(got, runtime.compile(got))
    assert check.ok, check.message
    args = random_args(func, seed=m)
    out = dict(args, C=np.full_like(args["C"], np.nan))
    runtime.compile(got)(**out)  # C's old contents are never read
    assert np.allclose(out["C"], args["A"] @ args["B"], rtol=1e-4, atol=1e-3)
