"""``tensorize run --explain``: each message names what keeps a statement off the
intrinsics (a guard, a reused temporary, a named dependence, the operator the statement
applies), in script terms, for programs written as a user writes them.

The expected messages are written out in full from what each program does: which loop
carries what, which element an iteration reads."""

import subprocess
import sys
from pathlib import Path

import pytest

import intrinsics
from rewrite.pipeline import tensorize
from rewrite.script import parse

ROOT = Path(__file__).parent.parent
AVX2 = intrinsics.library("x86-avx2")
ADDS = "every intrinsic in the library adds into its output (c[...] += ...)"


def reasons(src: str, **options) -> list[str]:
    return [e.reason for e in tensorize(parse(src), AVX2, **options).explanations]


GUARDED = """
@prim_func
def guarded(A: f32[64, 64], x: f32[64], y: f32[64]):
    for i in range(64):
        if x[i] > 0.0:
            for j in range(64):
                y[i] += A[i, j] * x[j]
"""


def test_a_nest_under_a_guard_is_said_to_be_under_the_guard():
    # no dependence at all: the condition, which reads memory, is what keeps the nest from
    # being matched
    assert reasons(GUARDED) == [
        "structure: the statements are under a guard (`if x[i] > 0.0:`), and only loop nests "
        "without conditions are matched"]


def test_a_guard_on_loop_variables_alone_is_no_obstacle():
    # i >= 0 always holds: split-domain keeps the one box inside it
    src = GUARDED.replace("if x[i] > 0.0:", "if i >= 0:")
    r = tensorize(parse(src), AVX2)
    assert r.coverage >= 0.99 and not r.explanations


def _doitgen(nr: int, nq: int, np_: int) -> str:
    return f"""
@prim_func
def doitgen(A: f32[{nr}, {nq}, {np_}], C4: f32[{np_}, {np_}], sum: f32[{np_}]):
    for r in range({nr}):
        for q in range({nq}):
            for p in range({np_}):
                sum[p] = 0.0
                for s in range({np_}):
                    sum[p] += A[r, q, s] * C4[s, p]
            for p in range({np_}):
                A[r, q, p] = sum[p]
"""


REUSED = ("structure: the temporary sum is reused by every iteration of r, q (each writes it "
          "before reading it), so the loops cannot be split into one nest per statement")


def test_a_reused_temporary_is_named_with_the_loops_that_reuse_it():
    # PolyBench's doitgen: the dependences on sum are those of one row reused by every
    # (r, q), not values passed between iterations
    assert reasons(_doitgen(50, 40, 60), rules_off=("expand",)) == [
        REUSED + "; the expand rule, which gives each iteration its own copy, is off"]
    # so small that the batched product does not pay for the copy per iteration (on tiles
    # without masked edges: with them, a 4-wide product of 3 x 2 rows pays already)
    assert reasons(_doitgen(3, 2, 4), rules_off=("edges",)) == [
        REUSED + "; a copy per iteration (the expand rule) was refused or did not pay here"]
    assert reasons(_doitgen(50, 40, 60)) == []  # expanded: every nest runs on intrinsics


def test_a_dependence_that_forbids_distribution_is_named_with_its_statements():
    src = """
@prim_func
def carried(A: f32[64, 64], x: f32[64]):
    for i in range(1, 64):
        for j in range(64):
            A[i, j] = A[i - 1, j] * x[j]
        x[i] = A[i, 0]
"""
    # iteration i writes x[i]; iteration i + 1 reads it as x[j] (j == i) in the first
    # statement, which distribution would run for every i before any second statement
    assert reasons(src) == [
        "structure: the loop over i cannot be split into one loop per statement: x[i] is "
        "written by `x[i] = A[i, 0]`, and x[j] is read in a later iteration of i by "
        "`A[i, j] = A[i - 1, j] * x[j]`, which comes before it"]


@pytest.mark.parametrize("update, coverage", [
    ("A[i, j] = A[i, j] + u1[i] * v1[j] + u2[i] * v2[j]", 0.9),  # gemver's rank-2 update
    ("A[i, j] = u1[i] * v1[j] + A[i, j] + u2[i] * v2[j]", 0.9),
    # a subtracted product runs on the rows into a temporary, then a pass scales it by -1
    # (one multiply per element, as many as the outer product's): half the operations
    ("A[i, j] = A[i, j] - u1[i] * v1[j] - u2[i] * v2[j]", 0.5),
    ("A[i, j] -= u1[i] * v1[j] + u2[i] * v2[j]", 0.5),
])
def test_a_sum_with_the_output_as_one_term_is_an_accumulation(update, coverage):
    # X = X + a + b adds a + b to X (regrouped): no message, and the products run on the
    # matmul rows once the sum is split
    src = f"""
@prim_func
def gemver(A: f32[64, 64], u1: f32[64], v1: f32[64], u2: f32[64], v2: f32[64]):
    for i, j in grid(64, 64):
        {update}
"""
    result = tensorize(parse(src), AVX2)
    assert result.explain() == "every nest with arithmetic runs on intrinsics"
    assert result.coverage >= coverage
    from rewrite import runtime

    assert runtime.check(parse(src), result.compile()).ok


@pytest.mark.parametrize("update, message", [
    # a max over j into y[i]
    ("y[i] = max(y[i], A[i, j])",
     "operator: `y[i] = max(y[i], A[i, j])` reduces y[i] over j with max(..., A[i, j]), not "
     f"a sum; {ADDS}"),
    # the running value is scaled before each addition: a recurrence, not a sum
    ("y[i] = y[i] * 0.5 + A[i, j]",
     "operator: `y[i] = y[i] * 0.5 + A[i, j]` reduces y[i] over j with ... * 0.5 + A[i, j], "
     f"not a sum; {ADDS}"),
    # the added term reads y[i] too
    ("y[i] = y[i] + y[i] * A[i, j]",
     "operator: `y[i] = y[i] + y[i] * A[i, j]` reduces y[i] over j with ... + ... * A[i, j], "
     f"not a sum; {ADDS}"),
])
def test_a_reduction_that_is_not_a_sum_says_what_it_applies(update, message):
    src = f"""
@prim_func
def red(A: f32[64, 64], y: f32[64]):
    for i, j in grid(64, 64):
        {update}
"""
    assert reasons(src) == [message]


CORRELATION = """
@prim_func
def correlation(data: f32[32, 28], corr: f32[28, 28], mean: f32[28], stddev: f32[28]):
    for j in range(28):
        mean[j] = 0.0
        for i in range(32):
            mean[j] += data[i, j]
        mean[j] /= 32.0
    for j in range(28):
        stddev[j] = 0.0
        for i in range(32):
            stddev[j] += (data[i, j] - mean[j]) * (data[i, j] - mean[j])
        stddev[j] /= 32.0
        stddev[j] = sqrt(stddev[j])
        stddev[j] = select(stddev[j] <= 0.1, 1.0, stddev[j])
    for i, j in grid(32, 28):
        data[i, j] -= mean[j]
        data[i, j] /= sqrt(32.0) * stddev[j]
    for i, j in grid(28, 28):
        corr[i, j] = 0.0
        for k in range(32):
            corr[i, j] += data[k, i] * data[k, j]
"""


def test_correlation_names_sqrt_and_the_divisions_in_script_terms():
    # PolyBench correlation (f32), with the product over every (i, j) instead of the upper
    # triangle: the in-place steps on mean and stddev are what no intrinsic computes
    got = reasons(CORRELATION)
    for message in [
        f"operator: `mean[j] = mean[j] / 32.0` updates each element of mean in place with "
        f"... / 32.0; {ADDS}",
        f"operator: `stddev[j] = stddev[j] / 32.0` updates each element of stddev in place "
        f"with ... / 32.0; {ADDS}",
        f"operator: `stddev[j] = sqrt(stddev[j])` updates each element of stddev in place with "
        f"sqrt(...); {ADDS}",
        "operator: `data[i, j] = data[i, j] / (sqrt(32.0) * stddev[j])` updates each element "
        f"of data in place with ... / (sqrt(32.0) * stddev[j]); {ADDS}",
    ]:
        assert message in got
    for internal in ("Unary", "Binary", "Select", "Load", "Store", "Accumulate", "Const", "Var"):
        assert not any(internal in m for m in got), internal


def test_a_recurrence_an_update_of_its_own_buffer_and_a_plain_store():
    prefix = """
@prim_func
def prefix(X: f32[64], Y: f32[64]):
    Y[0] = X[0]
    for i in range(1, 64):
        Y[i] = Y[i - 1] + X[i]
"""
    # iteration i reads what iteration i - 1 stored
    assert reasons(prefix) == [
        "operator: `Y[i] = Y[i - 1] + X[i]` reads Y[i - 1], which an earlier iteration of i "
        f"wrote (a recurrence); {ADDS}"]
    selfacc = """
@prim_func
def selfacc(y: f32[64]):
    for i in range(1, 64):
        y[i] += y[i - 1] * 0.5
"""
    assert reasons(selfacc) == [
        "access pattern: `y[i] += y[i - 1] * 0.5` reads y[i - 1] of y, the buffer it adds into, "
        "so its iterations cannot be reordered into intrinsic tiles"]
    relu = """
@prim_func
def relu(X: f32[64], Y: f32[64]):
    for i in range(64):
        Y[i] = max(X[i], 0.0)
"""
    assert reasons(relu) == [f"operator: `Y[i] = max(X[i], 0.0)` overwrites Y[i] with =; {ADDS}"]


def test_loops_too_short_name_the_intrinsic_dim_and_the_loop():
    src = """
@prim_func
def sumsq(A: f32[1, 64, 64], C: f32[1]):
    for b, i, j in grid(1, 64, 64):
        C[b] += A[b, i, j] * A[b, i, j]
"""
    # the 8-wide FMA runs its i along the output's index, and the only loop indexing C is b
    (e,) = tensorize(parse(src), AVX2).explanations
    assert (e.nearest, e.reason) == (
        "x86.fma.f32x8",
        "extent: its loops are too short for x86.fma.f32x8, which would run i<8> along b<1>")


def test_the_command_line_prints_the_message(tmp_path):
    path = tmp_path / "guarded.py"
    path.write_text(GUARDED)
    r = subprocess.run([sys.executable, "-m", "rewrite.cli", "run", str(path), "--explain",
                        "--target", "x86-avx2"], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert "structure: the statements are under a guard (`if x[i] > 0.0:`)" in r.stdout
