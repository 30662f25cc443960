"""read-panel (rules/panels.py): a call reading an operand in place reads the panel an earlier
copy made of it instead, and the tiles that leave rows of a product read the same panel."""

import numpy as np
import pytest

import intrinsics
from rewrite import interp, ir, runtime
from rewrite.inputs import random_args
from rewrite.pipeline import tensorize
from rewrite.rules.panels import copy_of, read_panels
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
