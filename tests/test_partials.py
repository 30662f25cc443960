"""private-partials (``rules/partials.py``): a sum over a matrix split between the threads
along the rows the part before it wrote, each block adding into a private copy."""

from pathlib import Path

import numpy as np
import pytest

import intrinsics
from rewrite import interp, ir, lower, runtime
from rewrite.names import Names
from rewrite.pipeline import tensorize
from rewrite.rules import partials
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


def _sweep(reads_y: bool, n: int = 256):
    """One sweep over the ``n`` rows of A: ``tmp = A x`` row by row, each row's ``A^T tmp``
    added into ``y`` (atax's fused form); ``reads_y``: the row's product reads ``y`` too."""
    v = "y" if reads_y else "x"
    return parse(f"@prim_func\ndef f(A: f32[{n}, 256], x: f32[256], y: f32[256]):\n"
                 f"    tmp = alloc(f32[{n}])\n"
                 f"    for i in range({n}):\n"
                 "        tmp[i] = 0.0\n"
                 f"    for i in range({n}):\n"
                 "        for j in range(256):\n"
                 f"            tmp[i] += A[i, j] * {v}[j]\n"
                 "        for j in range(256):\n"
                 "            y[j] += A[i, j] * tmp[i]\n")


def test_blocks_are_even_and_leave_the_fewest_iterations():
    # two threads take as many blocks each; the iterations left over run after the blocks
    assert [partials._blocks(n) for n in (48, 50, 51, 97, 256, 6, 3, 2, 1)] == \
        [8, 2, 2, 8, 8, 6, 2, 2, None]


def test_rows_past_the_blocks_run_after_them_into_the_sum_itself():
    func = _sweep(reads_y=False, n=257)  # 8 blocks of 32 rows, the last row after them
    new = _rewritten(func)
    (part,) = [b for b in new.allocs if b.name.endswith("_part")]
    assert part.shape == (8, 256)
    stmts = ir.stmts_of(new.body)
    sweep = next(i for i, s in enumerate(stmts) if ir.mentions(s, part.name) and ir.mentions(s, "A"))
    after = stmts[sweep + 1]
    assert isinstance(after, ir.For) and (after.start, after.stop) == (256, 257), after
    assert ir.mentions(after, "y") and not ir.mentions(after, part.name)
    assert lower.runs_shared(stmts[sweep]) and not lower.runs_shared(after)
    args = {b.name: np.random.default_rng(4).standard_normal(b.shape).astype(np.float32)
            for b in func.params}
    want = interp.run(func, **{k: v.copy() for k, v in args.items()})
    for threads in (1, 2):
        got = {k: v.copy() for k, v in args.items()}
        runtime.compile(new, threads=threads)(**got)
        np.testing.assert_allclose(got["y"], want["y"], rtol=1e-4, atol=1e-3)


def test_a_sweep_on_one_thread_is_shared_by_rows_with_its_sum_apart():
    # the sweep's rows carry y's sum, so it ran on one thread; each block of rows now adds
    # into its own copy of y, in the rows' order as before
    func = _sweep(reads_y=False)
    assert not lower.runs_shared(ir.stmts_of(func.body)[1])
    new = _rewritten(func)
    parts = [b for b in new.allocs if b.name.endswith("_part")]
    assert [b.shape for b in parts] == [(8, 256)]
    sweep = next(s for s in ir.stmts_of(new.body) if ir.mentions(s, parts[0].name)
                 and ir.mentions(s, "A"))
    assert lower.runs_shared(sweep)
    for threads in (1, 2):
        check = runtime.check(new, runtime.compile(new, threads=threads))
        assert check.ok, check.message


def test_a_sweep_reading_its_sum_is_left():
    func = _sweep(reads_y=True)
    assert _rewritten(func) == func


HOST_AVX512 = {"avx512f", "avx512vl", "fma"} <= intrinsics.host_features()
HOST_AVX2 = {"avx2", "fma"} <= intrinsics.host_features()


@pytest.mark.parametrize("lib, runs", [("x86-avx512", HOST_AVX512), ("x86-avx2", HOST_AVX2)])
@pytest.mark.parametrize("name", ["atax", "bicg", "mvt"])
def test_atax_bicg_and_mvt_share_their_sweeps_and_sum_the_copies_on_rows(name, lib, runs):
    func = parse_file(CORPUS / "matvec.py")[name]
    library = intrinsics.library(lib)
    result = tensorize(func, intrinsics=library)
    (part,) = [b for b in result.func.allocs if b.name.endswith("_part")]
    k, n = part.shape
    # an even number of blocks (mvt's 50 tiles of eight rows: two blocks, not five; bicg's
    # 51: two of 25, the last tile after them, adding into s itself)
    assert k % 2 == 0, part
    # the copies are added on the axpy rows: what runs outside the library grows by at most
    # the few elements of each copy past the rows' widths (none on mvt's 400)
    plain = tensorize(func, intrinsics=library, rules_off={"partials"})
    assert not any(b.name.endswith("_part") for b in plain.func.allocs)
    outside = result.ops_total - result.ops_in_intrinsics
    assert outside <= plain.ops_total - plain.ops_in_intrinsics + k * (n % 8)
    if name == "mvt":
        assert result.coverage == plain.coverage == 1.0
    sums = [s for s in ir.stmts_of(result.func.body)
            if ir.mentions(s, part.name) and not ir.mentions(s, "A")]
    calls = {x.intrinsic.name for s in sums for x in ir.walk_stmts(s) if isinstance(x, ir.Call)}
    assert calls and all(".axpy." in c for c in calls), calls
    if runs:
        for threads in (1, 2):
            check = runtime.check(result.func, result.compile(threads=threads))
            assert check.ok, (name, check.message)


def test_the_copies_sums_on_rows_are_the_additions_bit_for_bit(monkeypatch):
    """``1.0 * p`` added on an axpy row is ``p`` added, for NaN, infinities and signed zeros
    too: the program with the sums on rows and the program with them as scalar additions,
    both compiled, give the same bits (NaN where NaN), and each agrees with the
    interpreter."""
    func = parse_file(CORPUS / "matvec.py")["mvt"]
    library = intrinsics.library("host")
    rows = tensorize(func, intrinsics=library)
    monkeypatch.setattr(partials._SumsOnRows, "__call__", lambda self, add: [add])
    scalar = tensorize(func, intrinsics=library)
    assert any(isinstance(x, ir.Call) and x.intrinsic.name.endswith(("f32x64", "f32x32", "f32x8"))
               and ir.mentions(x, "one") for x in ir.walk_stmts(rows.func.body))
    assert not any(ir.mentions(s, "one") for s in ir.stmts_of(scalar.func.body))
    assert ir.stmts_of(scalar.func.body)[:2] == ir.stmts_of(rows.func.body)[:2]  # fill, sweep
    rng = np.random.default_rng(5)
    args = {b.name: rng.standard_normal(b.shape).astype(np.float32) for b in func.params}
    specials = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0], np.float32)
    for name in ("x2", "A"):  # the transposed product's matrix and its output
        flat = args[name].reshape(-1)
        flat[rng.choice(flat.size, 6, replace=False)] = rng.choice(specials, 6)
    # x2's first eight: -0.0 plus -0.0 terms only, which keeps the sign
    args["y2"] = np.abs(args["y2"]) + np.float32(0.5)
    args["x2"][:8] = -0.0
    args["A"][:, :8] = -0.0
    outs = []
    for result in (rows, scalar):
        check = runtime.check(result.func, result.compile(threads=2))
        assert check.ok, check.message
        got = {k: v.copy() for k, v in args.items()}
        result.compile(threads=2)(**got)
        outs.append(got)
    for name in ("x1", "x2"):
        a, b = outs[0][name], outs[1][name]
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=name)
        keep = ~np.isnan(a)
        np.testing.assert_array_equal(a[keep].view(np.uint32), b[keep].view(np.uint32),
                                      err_msg=name)
    assert np.signbit(outs[0]["x2"][:8]).all() and (outs[0]["x2"][:8] == 0).all()


def _polybench(kind: str, m: int, n: int):
    """PolyBench's atax or bicg as PolyBench writes them, at ``m`` x ``n``."""
    if kind == "atax":
        return parse(f"@prim_func\ndef atax(A: f32[{m}, {n}], x: f32[{n}], y: f32[{n}]):\n"
                     f"    tmp = alloc(f32[{m}])\n"
                     f"    for j in range({n}):\n        y[j] = 0.0\n"
                     f"    for i in range({m}):\n        tmp[i] = 0.0\n"
                     f"        for j in range({n}):\n            tmp[i] += A[i, j] * x[j]\n"
                     f"        for j in range({n}):\n            y[j] += A[i, j] * tmp[i]\n")
    return parse(f"@prim_func\ndef bicg(A: f32[{m}, {n}], p: f32[{n}], r: f32[{m}], s: f32[{n}],"
                 f" q: f32[{m}]):\n"
                 f"    for j in range({n}):\n        s[j] = 0.0\n"
                 f"    for i in range({m}):\n        q[i] = 0.0\n"
                 f"        for j in range({n}):\n            s[j] += r[i] * A[i, j]\n"
                 "            q[i] += A[i, j] * p[j]\n")


@pytest.mark.parametrize("kind", ["atax", "bicg"])
@pytest.mark.parametrize("m, n", [(131, 150), (389, 211), (97, 300)])
def test_sweeps_of_odd_sizes_shared_by_blocks_compute_what_the_interpreter_does(kind, m, n):
    # row tiles no even number divides (rows left after the blocks), columns past the rows'
    # widths: every call, on one thread and on two, checked with NaN, infinities and zeros
    func = _polybench(kind, m, n)
    result = tensorize(func, intrinsics=intrinsics.library("host"))
    assert any(b.name.endswith("_part") for b in result.func.allocs), result.script()
    for threads in (1, 2):
        check = runtime.check(func, result.compile(threads=threads))
        assert check.ok, (threads, check.message)
