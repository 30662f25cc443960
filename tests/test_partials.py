"""private-partials (``rules/partials.py``): a sum over a matrix split between the threads
along the rows the part before it wrote, each block adding into a private copy."""

from pathlib import Path

import numpy as np
import pytest

import intrinsics
from rewrite import interp, ir, lower, runtime
from rewrite.names import Names
from rewrite.pipeline import tensorize
from rewrite.rules.partials import private_partials
from rewrite.script import parse, parse_file
from rewrite.verify import verify

CORPUS = Path(__file__).resolve().parents[1] / "corpus"


def _program(update: str, n: int = 256):
    """A rank-1 update of ``A`` (``update``: its loops, rows outermost or columns), then
    ``x += A^T y`` over ``x``'s elements."""
    return parse(f"@prim_func\ndef f(A: f32[{n}, {n}], u: f32[{n}], v: f32[{n}], y: f32[{n}],"
                 f" x: f32[{n}]):\n"
                 f"    for {update} in grid({n}, {n}):\n"
                 "        A[i, j] = A[i, j] + u[i] * v[j]\n"
                 f"    for j, i in grid({n}, {n}):\n"
                 "        x[j] += A[i, j] * y[i]\n")


def _rewritten(func: ir.PrimFunc) -> ir.PrimFunc:
    stmts, allocs = private_partials(list(ir.stmts_of(func.body)), list(func.allocs),
                                     Names.of(func), lower.runs_shared)
    return ir.PrimFunc(func.name, func.params, ir.seq(*stmts), tuple(allocs))


def test_a_sum_over_rows_written_by_rows_is_split_by_rows():
    func = _program("i, j")
    new = _rewritten(func)
    fill, split, add = ir.stmts_of(new.body)[1:]
    (part,) = new.allocs
    assert part.shape == (8, 256)
    # the shared loop is the block of rows, and each block reads its own 32 rows of A
    assert isinstance(split, ir.For) and split.extent == 8
    a_rows = {ld.indices[0] for x in ir.walk_stmts(split) if isinstance(x, ir.Accumulate)
              for ld in ir.loads_of(x.value) if ld.buffer.name == "A"}
    assert all(split.var in ir.var_names(i) for i in a_rows)
    assert ir.written_by(fill) == {part.name} and ir.written_by(add) == {"x"}
    for threads in (1, 2):
        check = runtime.check(new, runtime.compile(new, threads=threads))
        assert check.ok, check.message


@pytest.mark.parametrize("why, func", [
    ("A written by columns, as the sum splits it", _program("j, i")),
    ("A only read", parse("@prim_func\ndef f(A: f32[256, 256], y: f32[256], x: f32[256]):\n"
                          "    for j, i in grid(256, 256):\n        x[j] += A[i, j] * y[i]\n")),
    ("A too small to be worth it", _program("i, j", n=96)),
])
def test_left_alone(why, func):
    assert _rewritten(func) == func, why


def test_an_element_no_term_changes_keeps_its_sign_and_nan_spreads():
    # every term is -0.0 (-1 * +0): summed as written, x stays -0.0; partial sums started
    # at +0.0 would give +0.0 (+0 + -0), which -0.0 + +0.0 makes of x
    new = _rewritten(_program("i, j"))
    kernel = runtime.compile(new, threads=2)
    n = 256
    a = {"A": np.full((n, n), -1.0, np.float32), "u": np.zeros(n, np.float32),
         "v": np.zeros(n, np.float32), "y": np.zeros(n, np.float32),
         "x": np.full(n, -0.0, np.float32)}
    kernel(**a)
    assert (a["x"] == 0).all() and np.signbit(a["x"]).all()
    a["y"][200] = np.nan  # a row of the last block: NaN reaches every element
    kernel(**a)
    assert np.isnan(a["x"]).all()


def test_gemver_reads_a_by_rows_on_every_part_that_shares_it():
    func = parse_file(CORPUS / "polybench_real.py")["pb_gemver"]
    result = tensorize(func, intrinsics=intrinsics.library("host"))
    chosen = result.func
    parts = [b for b in chosen.allocs if b.name.endswith("_part")]
    assert [b.shape for b in parts] == [(8, 400)]
    kernel = result.compile(threads=2)
    check = runtime.check(chosen, kernel)
    assert check.ok, check.message
    # and what it computes is what the program as written does
    args = {b.name: np.random.default_rng(3).standard_normal(b.shape).astype(np.float32)
            for b in func.params}
    want = interp.run(func, **{k: v.copy() for k, v in args.items()})
    kernel(**args)
    for name in ("A", "x", "w"):
        np.testing.assert_allclose(args[name], want[name], rtol=2e-4, atol=2e-3)


def test_its_loops_take_no_buffers_name():
    # a vector named b, as a dense layer's bias often is: the block loop is named otherwise
    func = parse("@prim_func\ndef f(A: f32[256, 256], u: f32[256], v: f32[256], b: f32[256],"
                 " x: f32[256]):\n"
                 "    for i, j in grid(256, 256):\n        A[i, j] = A[i, j] + u[i] * v[j]\n"
                 "    for j, i in grid(256, 256):\n        x[j] += A[i, j] * b[i]\n")
    new = _rewritten(func)
    assert len(new.allocs) == 1
    verify(new)  # a loop named like a buffer is refused here
    loops = {s.var for s in ir.walk_stmts(new.body) if isinstance(s, ir.For)}
    assert "b" not in loops
