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
from rewrite.ir import For, Store, Unary, map_stmt, seq, stmts_of, walk_stmts
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


AXPY = 'call("x86.axpy.f32x8", c=window(y[256 * j_b + 8 * j_i], (1,)), a=window(x[k], (0,)), ' \
    'b=window(B[k, 256 * j_b + 8 * j_i], (0, 1)))'

# halves of the columns of x @ B, as extract._rows_apart cuts them for two threads: row 0
# stored, the others added on 8-wide calls; 2 x 128 x 256 multiply-adds make it a
# parallel part (lower.MIN_PARALLEL_OPS)
HALVES = f"""
@prim_func
def halves(x: f32[128], B: f32[128, 512], y: f32[512]):
    for j_b in range(2):
        for j in range(256):
            y[256 * j_b + j] = x[0] * B[0, 256 * j_b + j]
        for k in range(1, 128):
            for j_i in range(32):
                {AXPY}
"""

# what one thread runs: the halves after each other along each row of B
SWEPT = f"""
@prim_func
def halves(x: f32[128], B: f32[128, 512], y: f32[512]):
    for j_b, j in grid(2, 256):
        y[256 * j_b + j] = x[0] * B[0, 256 * j_b + j]
    for k in range(1, 128):
        for j_b, j_i in grid(2, 32):
            {AXPY}
"""


def test_the_halves_of_a_sweep_run_as_one_when_one_thread_runs_them():
    func = parse(HALVES)
    plan = lower.lower(func)
    assert [p.parallel for p in plan.parts] == [True]
    assert show(replace(func, body=plan.parts[0].whole)) == show(parse(SWEPT))


def test_one_thread_runs_the_sweep_and_two_threads_their_halves(monkeypatch):
    """The body is compiled in both orders and the range it is given picks one: with a
    ``whole`` that negates what row 0 stores, one thread gives that result, two the true one."""
    func = parse(HALVES.replace("def halves", "def halves_negated"))
    found = lower.one_sweep

    def negated(parallel, position, s):
        out = found(parallel, position, s)
        flip = lambda x: replace(x, value=Unary("neg", x.value)) if isinstance(x, Store) else x
        return None if out is None else map_stmt(out, flip)

    monkeypatch.setattr(lower, "one_sweep", negated)
    args = random_args(func, seed=3)
    want = run(func, **{k: np.array(v, copy=True) for k, v in args.items()})["y"]
    got = {}
    for threads in (1, 2):
        arrays = {k: np.array(v, copy=True) for k, v in args.items()}
        runtime.compile(func, threads=threads)(**arrays)
        got[threads] = arrays["y"]
    first = args["x"][0] * args["B"][0]
    np.testing.assert_allclose(got[2], want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got[1], want - 2 * first, rtol=1e-4, atol=1e-4)


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


def test_a_loop_of_many_iterations_one_around_a_call_or_a_scalar_nest_stays():
    many = parse(HALVES.replace("range(2)", f"range({lower.MIN_SHARED_ITERATIONS})")
                 .replace("512]", f"{256 * lower.MIN_SHARED_ITERATIONS}]"))
    # j around k around the call: moving j in would take the call's k-loop apart
    around_call = parse("""
@prim_func
def rows(x: f32[128], B: f32[128, 32], y: f32[32]):
    for j in range(4):
        for k in range(128):
            call("x86.axpy.f32x8", c=window(y[8 * j], (1,)), a=window(x[k], (0,)), b=window(B[k, 8 * j], (0, 1)))
""")
    # scalar code: its loop order is lower.schedule's
    scalar = parse("""
@prim_func
def halves(x: f32[128], B: f32[128, 512], y: f32[512]):
    for j_b in range(2):
        for k in range(128):
            for j in range(256):
                y[256 * j_b + j] += x[k] * B[k, 256 * j_b + j]
""")
    for func in (many, around_call, scalar):
        parallel = lower._parallel_loops(expand_calls(func))
        assert (0,) in parallel
        assert lower.one_sweep(parallel, 0, stmts_of(func.body)[0]) is None


def test_the_loop_stops_outside_a_loop_that_writes_after_its_dimension():
    """Past the reduction ``k``, but not past ``r``, which writes Z along a dimension after
    ``i_o``'s: moved past it, Z's rows would be written out of their order."""
    func = parse("""
@prim_func
def rows(X: f32[4, 8], V: f32[4, 64], Z: f32[2, 4, 64]):
    for i_o in range(2):
        for k in range(4):
            for r in range(4):
                for j in range(4):
                    call("x86.axpy.f32x8", c=window(Z[i_o, r, 32 * i_o + 8 * j], (0, 0, 1)), a=window(X[k, 0], (0, 0)), b=window(V[k, 32 * i_o + 8 * j], (0, 1)))
""")
    parallel = lower._parallel_loops(expand_calls(func))
    swept = lower.one_sweep(parallel, 0, stmts_of(func.body)[0])
    assert [x.var for x in walk_stmts(swept) if isinstance(x, For)] == ["k", "i_o", "r", "j"]


def test_written_bytes_bound_what_a_part_writes():
    func = parse(HALVES)
    assert lower.written_bytes(func.body) == 512 * 4  # the stores' and the calls' boxes, one
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


# calls along the block, over rows of V
_CALL = ("for k in range({R}):\n    for j in range({H}):\n"
         "        call(\"x86.axpy.f32x8\", c=window(W[{H8} * p + 8 * j], (1,)), a=window(X[k, j], (0, 0)), "
         "b=window(V[k, {H8} * p + 8 * j], (0, 1)))")


@st.composite
def shared_loops(draw):
    """A top-level loop over blocks of Y, Z and W, its iterations independent, with calls
    (``one_sweep`` moves nests of calls only)."""
    n, h, r = draw(st.integers(2, 4)), draw(st.integers(1, 4)), draw(st.integers(1, 3))
    picked = draw(st.lists(st.sampled_from(_IN_BLOCK), min_size=0, max_size=4))
    picked.insert(draw(st.integers(0, len(picked))), _CALL)
    body = "\n".join(textwrap.indent(t.format(H=h, R=r, H8=8 * h), "        ") for t in picked)
    return parse(f"""
@prim_func
def blocks(X: f32[{r}, {n * h}], Y: f32[{n * h}], Z: f32[2, {n * h}], V: f32[{r}, {8 * n * h}],
           W: f32[{8 * n * h}]):
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


# 32 x 32 x 32 on 8 x 32 tiles: 65 536 operations either way, lower.MIN_PARALLEL_OPS
TILES = """
@prim_func
def tiles(A: {a}[32, 32], B: {b}, C: {c}[32, 32]):
    for i_o, k_o in grid(4, {steps}):
        call("{tile}", c=window(C[8 * i_o, 0], (1, 0), (0, 1)), a=window(A[8 * i_o, {k} * k_o], (1, 0), (0, 1)), b=window({window}))
"""


def test_a_part_is_worth_threads_by_the_time_its_calls_take_not_their_operations():
    f32 = TILES.format(a="f32", b="f32[32, 32]", c="f32", steps=32, k=1,
                       tile="x86.avx512.mm.f32.8x32x1", window="B[k_o, 0], (1, 0), (0, 1)")
    u8i8 = TILES.format(a="u8", b="i8[8, 32, 4]", c="i32", steps=8, k=4,
                        tile="x86.avx512vnni.mm.u8i8i32.8x32x4",
                        window="B[k_o, 0, 0], (0, 1, 0), (0, 0, 1)")
    parts = {name: lower.lower(parse(text)).parts for name, text in (("f32", f32), ("u8i8", u8i8))}
    assert [p.parallel for p in parts["f32"]] == [True]
    # the same operations on the VNNI tile take a third of the time (10 units a call for
    # 2048 operations against 8 for 512): the part runs on the calling thread
    assert [p.parallel for p in parts["u8i8"]] == [False]
