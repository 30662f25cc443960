"""A sum over rows whose unit-stride loop is parallel (``lower._shared_blocks``): its
columns cut into blocks, outermost, for the threads to share."""

import numpy as np
import pytest

from rewrite import interp, lower, runtime
from rewrite.printer import show_stmt
from rewrite.script import parse


def _sum(rows: int, cols: int, dtype: str = "f32", acc: str = "f32"):
    cast = f"{acc}(A[k, j])" if acc != dtype else "A[k, j]"
    return parse(f"@prim_func\ndef colsum(A: {dtype}[{rows}, {cols}], s: {acc}[{cols}]):\n"
                 f"    for k, j in grid({rows}, {cols}):\n        s[j] += {cast}\n")


def _parallel_parts(func) -> list[str]:
    return [show_stmt(p.body).split("\n")[0] for p in lower.lower(func).parts if p.parallel]


@pytest.mark.parametrize("dtype, acc", [("f32", "f32"), ("i8", "i32")])
def test_a_column_sum_is_shared_by_blocks_of_columns(dtype, acc):
    func = _sum(256, 256, dtype, acc)
    assert _parallel_parts(func) == ["for j_o, k, j_i in grid(4, 256, 64):"]
    rng = np.random.default_rng(0)
    if dtype == "f32":
        a = rng.standard_normal((256, 256)).astype(np.float32)
    else:
        a = rng.integers(-128, 128, (256, 256)).astype(np.int8)
    zeros = np.zeros(256, np.float32 if acc == "f32" else np.int32)
    want = interp.run(func, A=a, s=zeros)
    for threads in (1, 2):
        got = np.zeros(256, want["s"].dtype)
        runtime.compile(func, threads=threads)(A=a, s=got)
        # each column adds the same terms in the same order: equal to the bit
        assert np.array_equal(got, want["s"])
        # and with NaN, infinities and signed zeros among the inputs
        check = runtime.check(func, runtime.compile(func, threads=threads))
        assert check.ok, check.message


def test_rows_a_page_apart_and_sums_already_shared_are_left():
    # rows of 2048 floats (8 KB): a block would read each from a page of its own
    assert _parallel_parts(_sum(64, 2048)) == []
    # a sum along the rows is shared by its rows already
    rowsum = parse("@prim_func\ndef rowsum(A: f32[256, 256], s: f32[256]):\n"
                   "    for i, k in grid(256, 256):\n        s[i] += A[i, k]\n")
    assert _parallel_parts(rowsum) == ["for i, k in grid(256, 256):"]
    # too little work for a parallel part
    assert _parallel_parts(_sum(16, 128)) == []


def test_a_dependence_from_a_column_to_an_earlier_one_keeps_the_order():
    # iteration (k, j) reads B[k, j + 1], which (k - 1, j + 1) wrote: blocks of columns run
    # one after another would read column 64 before the block holding it wrote it
    func = parse("@prim_func\ndef skew(B: f32[256, 256]):\n"
                 "    for k, j in grid(255, 192):\n        B[k + 1, j] = B[k, j + 1] * 0.5 + 1.0\n")
    assert not any("j_o" in line for line in _parallel_parts(func))
    assert "j_o" not in show_stmt(lower._shared_blocks(func).body)
    b = np.random.default_rng(1).standard_normal((256, 256)).astype(np.float32)
    want = interp.run(func, B=b.copy())["B"]
    got = b.copy()
    kernel = runtime.compile(func, threads=2)
    kernel(B=got)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    check = runtime.check(func, kernel)
    assert check.ok, check.message
