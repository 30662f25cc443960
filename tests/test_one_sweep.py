"""A parallel part that one thread runs whole runs as one sweep (``lower.one_sweep``): the
few-iteration loop that shares it between threads moved in, past the loops that do not move
along with it. The order of each iteration's own statements is kept, so the outputs are the
same, bit for bit, in the interpreter; which order runs is decided by the range a thread is
given."""

from __future__ import annotations

import textwrap
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import intrinsics
from rewrite import caches, lower, runtime
from rewrite.calls import expand_calls
from rewrite.inputs import random_args
from rewrite.interp import run
from rewrite.ir import Accumulate, Unary, map_stmt, seq, stmts_of
from rewrite.pipeline import tensorize
from rewrite.script import parse, show

from .strategies import programs


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TENSORIZE_CACHE_DIR", str(tmp_path / "cache"))


def _swept(func):
    """``func`` with each top-level statement that ``one_sweep`` moves replaced by what it
    gives, and how many it moved."""
    parallel = lower._parallel_loops(expand_calls(func))
    out, moved = [], 0
    for k, s in enumerate(stmts_of(func.body)):
        swept = lower.one_sweep(parallel, k, s)
        moved += swept is not None
        out.append(s if swept is None else swept)
    return replace(func, body=seq(*out)), moved


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).view(np.uint8)


# halves of the columns of x @ B, as extract._rows_apart cuts them for two threads, in
# scalar code; 2 x 128 x 256 multiply-adds make it a parallel part (lower.MIN_PARALLEL_OPS)
HALVES = """
@prim_func
def halves(x: f32[128], B: f32[128, 512], y: f32[512]):
    for j_b in range(2):
        for j_i in range(256):
            y[256 * j_b + j_i] = x[0] * B[0, 256 * j_b + j_i]
        for k in range(1, 128):
            for j_i in range(256):
                y[256 * j_b + j_i] += x[k] * B[k, 256 * j_b + j_i]
"""

# what one thread runs: the halves after each other along each row of B
SWEPT = """
@prim_func
def halves(x: f32[128], B: f32[128, 512], y: f32[512]):
    for j_b, j_i in grid(2, 256):
        y[256 * j_b + j_i] = x[0] * B[0, 256 * j_b + j_i]
    for k in range(1, 128):
        for j_b, j_i in grid(2, 256):
            y[256 * j_b + j_i] += x[k] * B[k, 256 * j_b + j_i]
"""


def test_the_halves_of_a_sweep_run_as_one_when_one_thread_runs_them():
    func = parse(HALVES)
    plan = lower.lower(func)
    assert [p.parallel for p in plan.parts] == [True]
    assert show(replace(func, body=plan.parts[0].whole)) == show(parse(SWEPT))


def test_one_thread_runs_the_sweep_and_two_threads_their_halves(monkeypatch):
    """The body is compiled in both orders and the range it is given picks one: with a
    ``whole`` that negates every sum, one thread gives the negated sums, two the true ones."""
    func = parse(HALVES.replace("def halves", "def halves_negated"))
    found = lower.one_sweep

    def negated(parallel, position, s):
        out = found(parallel, position, s)
        flip = lambda x: replace(x, value=Unary("neg", x.value)) if isinstance(x, Accumulate) else x
        return None if out is None else map_stmt(out, flip)

    monkeypatch.setattr(lower, "one_sweep", negated)
    args = random_args(func, seed=3)
    want = run(func, **{k: np.array(v, copy=True) for k, v in args.items()})["y"]
    got = {}
    for threads in (1, 2):
        arrays = {k: np.array(v, copy=True) for k, v in args.items()}
        runtime.compile(func, threads=threads)(**arrays)
        got[threads] = arrays["y"]
    first = args["x"][0] * args["B"][0]  # the store, which the negation leaves alone
    np.testing.assert_allclose(got[2], want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got[1], 2 * first - want, rtol=1e-4, atol=1e-4)


def test_the_sweep_computes_what_the_halves_do_on_one_and_two_threads():
    func = parse(HALVES.replace("def halves", "def halves_checked"))
    for threads in (1, 2):
        kernel = runtime.compile(func, threads=threads)
        assert runtime.check(func, kernel).ok


def test_a_vector_matrix_product_is_planned_in_halves_and_swept_whole(monkeypatch):
    """The plan's own halves (``extract._rows_apart``, B past an L2 taken to be 64 KB)."""
    from rewrite import extract

    monkeypatch.setattr(extract, "l2_bytes", lambda: 64 * 1024)
    func = parse("""
@prim_func
def vm(x: f32[128], B: f32[128, 1024], y: f32[1024]):
    for j in range(1024):
        y[j] = 0.0
        for k in range(128):
            y[j] += x[k] * B[k, j]
""")
    planned = tensorize(func, intrinsics=intrinsics.library("host")).func
    plan = lower.lower(planned)
    wholes = [p.whole for p in plan.parts if p.whole is not None]
    assert len(wholes) == 1
    # the block loop over the rows of B is outermost in the sweep; in the halves, the halves are
    assert stmts_of(wholes[0])[-1].var.startswith("k_o")
    assert not stmts_of(planned.body)[0].var.startswith("k_o")
    for threads in (1, 2):
        assert runtime.check(planned, runtime.compile(planned, threads=threads)).ok


def test_an_output_past_half_of_l2_keeps_the_order_written(monkeypatch):
    """A large product's column blocks keep a block of B in L2 across the row tiles: they
    are not swept. 512 floats of y are 2 KB."""
    func = parse(HALVES)
    parallel = lower._parallel_loops(expand_calls(func))
    s = stmts_of(func.body)[0]
    assert lower.one_sweep(parallel, 0, s) is not None
    monkeypatch.setattr(caches, "l2_bytes", lambda: 4 * 1024 - 8)
    assert lower.one_sweep(parallel, 0, s) is None


def test_a_loop_of_many_iterations_or_that_would_split_a_reduction_or_a_copy_stays():
    many = parse(HALVES.replace("range(2)", f"range({lower.MIN_SHARED_ITERATIONS})")
                 .replace("512]", f"{256 * lower.MIN_SHARED_ITERATIONS}]"))
    # j around k around the store: moving j in would take each sum's loop apart
    around_sum = parse("""
@prim_func
def rows(x: f32[128], B: f32[128, 4], y: f32[4]):
    for j in range(4):
        for k in range(128):
            y[j] += x[k] * B[k, j]
""")
    # moving i_o in past k_o would write the panel out of its order
    panel = parse("""
@prim_func
def panel(A: i8[12, 26], P: i32[3, 13, 4, 2]):
    for i_o, k_o, i_i, k_i in grid(3, 13, 4, 2):
        P[i_o, k_o, i_i, k_i] = i32(A[i_i + 4 * i_o, k_i + 2 * k_o])
""")
    for func in (many, around_sum, panel):
        parallel = lower._parallel_loops(expand_calls(func))
        assert (0,) in parallel
        assert lower.one_sweep(parallel, 0, stmts_of(func.body)[0]) is None


def test_written_bytes_bound_what_a_part_writes():
    func = parse(HALVES)
    assert lower.written_bytes(func.body) == 512 * 4
    tiles = parse("""
@prim_func
def tiles(A: f32[12, 64], B: f32[64, 64], C: f32[16, 64]):
    for i_o, j_o in grid(2, 4):
        for k in range(64):
            call("x86.mm.f32.6x16x1", c=window(C[6 * i_o, 16 * j_o], (1, 0), (0, 1)),
                 a=window(A[6 * i_o, k], (1, 0), (0, 1)), b=window(B[k, 16 * j_o], (1, 0), (0, 1)))
""")
    assert lower.written_bytes(tiles.body) == 12 * 64 * 4  # rows 0-11 of C's 16


# statements of one iteration of the shared loop ``p``, each writing only its block of Y
# and Z: loops along the block (``j``) and across it (``k``, ``i``), reads of another
# element of the block (an order inside the iteration that must be kept), a sequence
# inside a loop, a statement with no loop at all
_IN_BLOCK = (
    "for j in range({H}):\n    Y[{H} * p + j] = X[0, {H} * p + j]",
    "for k in range({R}):\n    for j in range({H}):\n        Y[{H} * p + j] += X[k, {H} * p + j] * Y[{H} * p]",
    "for k in range({R}):\n    for j in range({H}):\n        Y[{H} * p + j] = Y[{H} * p + j] * X[k, j] - X[k, {H} * p + j]",
    "for k in range({R}):\n    for i in range(2):\n        for j in range({H}):\n"
    "            Z[i, {H} * p + j] += Y[{H} * p + j] * X[k, {H} * p + j]",
    "for k in range({R}):\n    for j in range({H}):\n        Y[{H} * p + j] += X[k, {H} * p + j]\n"
    "    for j in range({H}):\n        Z[1, {H} * p + j] = Y[{H} * p + j] - Z[0, {H} * p + {H} - 1]",
    "Y[{H} * p] = Y[{H} * p] * 0.5",
)


@st.composite
def shared_loops(draw):
    """A top-level loop over blocks of Y and Z, its iterations independent."""
    n, h, r = draw(st.integers(2, 4)), draw(st.integers(1, 4)), draw(st.integers(1, 3))
    picked = draw(st.lists(st.sampled_from(_IN_BLOCK), min_size=1, max_size=4))
    body = "\n".join(textwrap.indent(t.format(H=h, R=r), "        ") for t in picked)
    return parse(f"""
@prim_func
def blocks(X: f32[{r}, {n * h}], Y: f32[{n * h}], Z: f32[2, {n * h}]):
    for p in range({n}):
{body}
""")


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(shared_loops(), programs()))
@example(parse(HALVES))
def test_a_sweep_computes_what_the_program_does_bit_for_bit(func):
    """Interpreted, bit for bit; compiled (the sweep in place of the loop, a part too small
    for threads), within roundoff."""
    swept, moved = _swept(func)
    if not moved:
        return
    args = random_args(func, seed=4)
    want = run(func, **{k: np.array(v, copy=True) for k, v in args.items()})
    got = run(swept, **{k: np.array(v, copy=True) for k, v in args.items()})
    for b in func.outputs:
        assert np.array_equal(_bits(got[b.name]), _bits(want[b.name])), f"{b.name} of\n{show(func)}"
    assert runtime.check(func, runtime.compile(func, threads=1)).ok
