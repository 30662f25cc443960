"""The fuzzer's forms of real code (``rewrite/fuzz/real.py``): each disguise kind is drawn, is
well formed and reaches what its construction guarantees; each near-miss kind is drawn and
refused; a small campaign over them passes. And what the fuzzer found in the rules, each as
a minimal program."""

from __future__ import annotations

import numpy as np
import pytest

import intrinsics
from rewrite import interp, nests
from rewrite.names import Names
from rewrite.nests import AccNest
from rewrite.pipeline import tensorize
from rewrite.rules import scalars
from rewrite.runtime import check
from rewrite.script import parse, show

FMA = intrinsics.get("x86.fma.f32x8")
HOST_HAS_AVX2 = {"avx2", "fma"} <= intrinsics.host_features()
needs_avx2 = pytest.mark.skipif(not HOST_HAS_AVX2, reason="the compiled rows need AVX2 and FMA")


# ---------------------------------------------------------------------------
# found by the fuzzer: scale-operand (rules/scalars.py)


def _only(desc, src):
    func = parse(src)
    return func, tensorize(func, [desc], in_process=True, strassen="off")


@needs_avx2
def test_a_factor_of_a_squared_operand_scales_one_occurrence():
    # the copy stood for both A[i]: alpha^2 * A^2 was computed
    func, result = _only(FMA, '''
@prim_func
def f(C: f32[64], A: f32[64], alpha: f32[1]):
    for i in range(64):
        C[i] += alpha[0] * A[i] * A[i]
''')
    assert "sc_P_0[i] = alpha[0] * A[i]" in show(result.func)
    assert {s.intrinsic for s in result.sites} == {FMA.name}
    args = {"C": np.linspace(-1, 1, 64, dtype=np.float32), "A": np.linspace(0.5, 2, 64, dtype=np.float32),
            "alpha": np.array([3.0], np.float32)}
    want = args["C"].astype(np.float64) + 3.0 * args["A"].astype(np.float64) ** 2
    got = {k: v.copy() for k, v in args.items()}
    result.compile()(**got)
    np.testing.assert_allclose(got["C"], want, rtol=1e-6)
    assert check(func, result.compile()).ok


PRODUCT_FIRST = '''
@prim_func
def f(C: f32[8], A: f32[8], B: f32[8], alpha: f32[1]):
    for i in range(8):
        C[i] += alpha[0] * (A[i] * B[i])
'''


def test_scale_operand_copies_only_a_part_of_the_product_as_written():
    def operand(src):
        func = nests.normalize(parse(src))
        (nest,) = [p for p in nests.items(func) if isinstance(p, AccNest)]
        return scalars.scale_operand(scalars.factored(nest), Names.of(func))

    assert operand(PRODUCT_FIRST) is None  # (alpha * A) * B would regroup alpha * (A * B)
    assert operand(PRODUCT_FIRST.replace("alpha[0] * (A[i] * B[i])", "B[i] * A[i] * alpha[0]")) is None
    for written in ("alpha[0] * A[i] * B[i]", "A[i] * alpha[0] * B[i]", "-(B[i] * alpha[0]) * A[i]",
                    "B[i] * (A[i] * alpha[0])"):
        items, _ = operand(PRODUCT_FIRST.replace("alpha[0] * (A[i] * B[i])", written))
        assert isinstance(items[1], AccNest)


@needs_avx2
def test_a_regrouped_factor_keeps_nan_where_an_underflow_meets_inf():
    # written: -inf * (tiny * tiny) = -inf * 0 = NaN; the copy (-inf * tiny) * tiny gave -inf
    func, result = _only(FMA, PRODUCT_FIRST)
    tiny = np.float32(np.finfo(np.float32).smallest_normal / 4)
    args = {"C": np.zeros(8, np.float32), "A": np.full(8, tiny, np.float32),
            "B": np.full(8, tiny, np.float32), "alpha": np.array([-np.inf], np.float32)}
    with np.errstate(all="ignore"):
        want = args["C"] + args["alpha"][0] * (args["A"] * args["B"])
    assert np.isnan(want).all()
    got = {k: v.copy() for k, v in args.items()}
    result.compile()(**got)
    assert np.isnan(got["C"]).all()
    np.testing.assert_array_equal(np.isnan(interp.run(func, **args)["C"]), np.isnan(want))
