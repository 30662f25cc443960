"""Cast normalisation (``rewrite/rules/casts.py``): a chain of casts is collapsed only when
the inner step is exact, and the collapsed program computes the same values (interpreter,
over every value of 8-bit types and the edges of wider ones)."""

from dataclasses import replace

import numpy as np
from hypothesis import given, strategies as st

import intrinsics
from rewrite import ir
from rewrite.interp import run
from rewrite.ir import Cast
from rewrite.pipeline import tensorize
from rewrite.rules.casts import normalize_casts
from rewrite.script import parse

DTYPES = ir.FLOAT_DTYPES + ir.INT_DTYPES


def _values(dtype):
    if dtype in ("u8", "i8"):
        lo, hi = ir.int_range(dtype)
        return np.arange(lo, hi + 1)
    if ir.is_int(dtype):
        lo, hi = ir.int_range(dtype)
        return np.array([lo, lo + 1, -129, -1, 0, 1, 127, 128, 255, 256, 65535, 65536, hi - 1, hi])
    return np.array([-70000.5, -300.25, -1.5, -0.0, 0.0, 0.5, 2.75, 255.0, 65504.0, 1e9, 3.5e38])


@given(st.sampled_from(DTYPES), st.sampled_from(DTYPES), st.sampled_from(DTYPES))
def test_collapsed_casts_compute_the_same_values(src, mid, dst):
    values = _values(src)
    with np.errstate(all="ignore"):
        data = values.astype(ir.numpy_dtype(src))
    n = len(data)
    func = parse(f"@prim_func\ndef chain(A: {src}[{n}], Y: {dst}[{n}]):\n"
                 f"    for i in range({n}):\n        Y[i] = {dst}({mid}(A[i]))\n")
    store = func.body.body
    value = normalize_casts(store.value)
    new = replace(func, body=replace(func.body, body=replace(store, value=value)))
    want = run(func, A=data)["Y"]
    got = run(new, A=data)["Y"]
    np.testing.assert_array_equal(got, want)


def test_exact_steps_collapse_and_lossy_ones_stay():
    a_u8 = ir.Load(ir.Buffer("A", "u8", (4,)), (ir.Var("i"),))
    a_i32 = ir.Load(ir.Buffer("B", "i32", (4,)), (ir.Var("i"),))
    assert normalize_casts(Cast("i32", Cast("i16", a_u8))) == Cast("i32", a_u8)
    assert normalize_casts(Cast("f32", Cast("f32", a_u8))) == Cast("f32", a_u8)
    assert normalize_casts(Cast("i32", a_i32)) == a_i32
    # u8 -> i8 wraps, i32 -> f32 rounds: the inner step is kept
    assert normalize_casts(Cast("i32", Cast("i8", a_u8))) == Cast("i32", Cast("i8", a_u8))
    assert normalize_casts(Cast("i64", Cast("f32", a_i32))) == Cast("i64", Cast("f32", a_i32))


def test_widening_in_two_steps_reaches_the_dot_intrinsic():
    func = parse('''
@prim_func
def qdense_steps(A: u8[4, 8], B: i8[8, 16], C: i32[4, 16]):
    for i, j, k in grid(4, 16, 8):
        C[i, j] += i32(i16(A[i, k])) * i32(B[k, j])
''')
    result = tensorize(func, intrinsics.library("x86-avx2"))
    # the exact u8 x i8 -> i32 rows: the dot, or its two-row or four-row tile
    sites = {s.intrinsic for s in result.sites}
    assert sites and sites <= {"x86.dot.u8i8i32.16x4", "x86.mm.u8i8i32.2x16x4", "x86.mm.u8i8i32.4x16x2"}
    assert result.coverage == 1.0
