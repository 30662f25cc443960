"""The public Python surface as SPEC §3 writes it: ``from rewrite import parse_file, tensorize``
and a result that reports, prints, explains and compiles into a kernel on numpy arrays."""

from pathlib import Path

import numpy as np
import pytest

import intrinsics
from rewrite import parse, parse_file, tensorize

ROOT = Path(__file__).parent.parent


def test_the_spec_example_runs_as_written():
    funcs = parse_file(ROOT / "corpus" / "gemm.py")
    result = tensorize(funcs["gemm_64"], intrinsics=intrinsics.library("x86-avx2"))
    text = result.report()
    assert "coverage 1.00" in text and "x86.mm.f32.6x16x1" in text and "cost" in text
    assert parse(result.script()) == result.func
    assert result.explain() == "every nest with arithmetic runs on intrinsics"
    if not {"avx2", "fma"} <= intrinsics.host_features():
        return
    kernel = result.compile()
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((64, 64), np.float32), rng.standard_normal((64, 64), np.float32)
    c = np.zeros((64, 64), np.float32)
    kernel(A=a, B=b, C=c)
    np.testing.assert_allclose(c, a @ b, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="B"):
        kernel(A=a, B=b[:32], C=c)
