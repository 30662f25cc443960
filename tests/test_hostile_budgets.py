"""Hostile inputs that used to hang the compiler or grow without bound, and limits that used to
surface as internal errors. Each case asserts the contract (exit status, one clear line, no
traceback) within a generous wall-clock bound: the bound only keeps a regression from hanging
the suite, it says nothing about speed."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dataclasses import replace

from rewrite import analysis, budgets
from rewrite.budgets import BudgetError, Budgets
from rewrite.ir import For
from rewrite.script import ScriptError, parse

ROOT = Path(__file__).parent.parent

# Generous: each case finishes in a few seconds; the bound only turns a hang into a failure.
HANG = 120


def tensorize(*args, timeout=HANG):
    """The CLI of this checkout, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "rewrite.cli", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def one_line_error(r: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in r.stderr, r.stderr
    assert "internal error" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    return lines[0]


def grid_nest(depth: int, body: str, params: str, extent: int = 2, name: str = "deep") -> str:
    names = ", ".join(f"v{k}" for k in range(depth))
    return (f"@prim_func\ndef {name}({params}):\n"
            f"    for {names} in grid({', '.join([str(extent)] * depth)}):\n"
            f"        {body}\n")


def deeper(f, extra: int, extent: int = 2):
    """``f`` with ``extra`` more loops around its body: deeper than a script may nest, which
    the analysis must still handle when a program is built as IR."""
    body = f.body
    for k in reversed(range(extra)):
        body = For(f"w{k}", 0, extent, body)
    return replace(f, body=body)


# ---------------------------------------------------------------------------
# dependence analysis: polynomial in the depth


@pytest.mark.parametrize("depth", [12, 14, 32])
def test_deep_reduction_nest_is_analysed_quickly(depth):
    # Every loop of `B[0] += A[v_last]` accumulates into one element: 3^depth direction
    # vectors if enumerated; refined per loop, a handful.
    f = parse(grid_nest(depth, f"B[0] += A[v{depth - 1}]", "A: f32[2], B: f32[1]"))
    t0 = time.perf_counter()
    kinds = [info.kind for info in analysis.loops(f)]
    assert time.perf_counter() - t0 < HANG
    assert kinds == ["reduction"] * depth


def test_deeper_than_scripts_nest_as_ir():
    f = deeper(parse(grid_nest(30, "B[0] += A[v29]", "A: f32[2], B: f32[1]")), 20)
    assert [info.kind for info in analysis.loops(f)] == ["reduction"] * 50


def test_deep_nest_keeps_exact_carriers():
    # X[v] = X[1 - v] per dimension: the write and the read differ in every dimension, so
    # only the outermost loop carries the dependence; all the others are parallel.
    depth = 30
    names = [f"v{k}" for k in range(depth)]
    f = parse(grid_nest(depth, f"X[{', '.join(names)}] = X[{', '.join('1 - ' + v for v in names)}] + 1.0",
                        f"X: f32[{', '.join(['2'] * depth)}]"))
    kinds = [info.kind for info in analysis.loops(f)]
    assert kinds == ["carried"] + ["parallel"] * (depth - 1)


def test_coupled_deep_nest_is_bounded():
    # One subscript couples all the loops: the refinement of that group stops at its limit and
    # the rest is assumed ("*"), which is sound. The carriers stay exact: B[sum] is touched
    # again by a later iteration of every loop but the innermost (with all outer loops equal,
    # the sum fixes it), so += makes reductions and = carried loops, the innermost parallel.
    depth = 32
    subscript = " + ".join(f"v{k}" for k in range(depth))
    f = parse(grid_nest(depth, f"B[{subscript}] += A[v0]", f"A: f32[2], B: f32[{depth + 1}]"))
    assert [info.kind for info in analysis.loops(f)] == ["reduction"] * (depth - 1) + ["parallel"]
    f = parse(grid_nest(depth, f"B[{subscript}] = A[v0]", f"A: f32[2], B: f32[{depth + 1}]"))
    assert [info.kind for info in analysis.loops(f)] == ["carried"] * (depth - 1) + ["parallel"]


def test_many_statements_on_one_buffer_are_bounded():
    # 700 loops accumulating into B: 245,350 pairs of accesses, each enumerable; the function's
    # enumeration allowance runs out and the rest get GCD and Banerjee bounds.
    body = "\n".join(f"    for i in range(512):\n        B[i] += A[i] * {k}.0" for k in range(700))
    f = parse(f"@prim_func\ndef f(A: f32[512], B: f32[512]):\n{body}\n")
    assert {info.kind for info in analysis.loops(f)} == {"parallel"}


def test_analysis_pairs_budget(tmp_path):
    # 2,000 statements on one buffer: 2,001,000 pairs, over the budget: refused before any
    # is compared, as this function's error; the other function still compiles.
    body = "\n".join(f"    B[{k % 64}] += A[{k % 64}] * 2.0" for k in range(2000))
    p = tmp_path / "many.py"
    p.write_text(f"@prim_func\ndef many(A: f32[64], B: f32[64]):\n{body}\n\n"
                 "@prim_func\ndef fine(A: f32[4], B: f32[4]):\n    for i in range(4):\n        B[i] = A[i]\n")
    r = tensorize("run", p, "--json")
    assert r.returncode == 2
    line = one_line_error(r)
    assert "2,001,000 pairs" in line and "analysis-pairs" in line and "--budget analysis-pairs=N" in line
    by_name = {f["name"]: f for f in json.loads(r.stdout)["functions"]}
    assert "analysis-pairs" in by_name["many"]["error"]
    assert by_name["fine"]["error"] is None
    with budgets.using(Budgets(analysis_pairs=100)):
        with pytest.raises(BudgetError, match="analysis-pairs"):
            analysis.loops(parse(p.read_text().split("\n\n@prim_func")[0]))


def test_cli_deep_nest_compiles(tmp_path):
    p = tmp_path / "deep.py"
    p.write_text(grid_nest(32, "B[0] += A[v31]", "A: f32[2], B: f32[1]", extent=1))
    r = tensorize("run", p, "--check")
    assert r.returncode == 0, r.stderr
    assert "1 of 1 functions compiled, 1 of 1 checks passed" in r.stdout


def test_deep_nest_of_unit_loops_tensorizes(tmp_path):
    # Binding an intrinsic's dims to 32 interchangeable loops of extent 1 used to try 32^3
    # assignments per match; interchangeable loops are offered once per intrinsic dim.
    p = tmp_path / "unit.py"
    p.write_text(grid_nest(32, "B[v31] += A[v31] * A[v0]", "A: f32[2], B: f32[2]", extent=1)
                 .replace("grid(1, " + "1, " * 30 + "1)", "grid(" + "1, " * 31 + "2)"))
    r = tensorize("run", p, "--check", "--target", "all")
    assert r.returncode == 0, r.stderr
    assert "1 of 1 checks passed" in r.stdout


# ---------------------------------------------------------------------------
# limits the verifier states with a location


def test_more_than_32_nested_loops_is_a_located_error(tmp_path):
    p = tmp_path / "deep.py"
    p.write_text(grid_nest(33, "B[0] += A[0]", "A: f32[1], B: f32[1]", extent=1))
    r = tensorize("run", p)
    assert r.returncode == 2
    assert one_line_error(r) == f"{p}:3:5: loop v32 is nested 33 deep: at most 32 nested loops are supported"
    with pytest.raises(ScriptError, match="at most 32 nested loops"):
        parse(grid_nest(1000, "B[0] += A[0]", "A: f32[1], B: f32[1]", extent=1))


@pytest.mark.parametrize("source, where, words", [
    # an extent of 2^70: the i64 index type cannot count it (the parser refuses the literal)
    ("def f(A: f32[1], B: f32[1]):\n    for i in range(1180591620717411303424):\n        B[0] += A[0]\n",
     "3:20", "a loop bound must fit i64"),
    ("def f(A: f32[1], B: f32[1]):\n    for i in range(-9223372036854775809, 0):\n        B[0] += A[0]\n",
     "3:20", "a loop bound must fit i64"),
    # an extent that fits while range(start, stop) is wider than i64 counts
    ("def f(A: f32[1], B: f32[1]):\n    for i in range(-9223372036854775807, 9223372036854775807):\n"
     "        B[0] += A[0]\n", "3:5", "must lie within the 64-bit range"),
    # shapes whose element count, or byte size, does not fit i64
    ("def f(A: f32[1180591620717411303424], B: f32[1]):\n    B[0] = A[0]\n", "2:14",
     "a dimension of A must fit i64"),
    ("def f(A: f32[4294967296, 4294967296], B: f32[1]):\n    B[0] = A[0, 0]\n", "2:10", "too big"),
    ("def f(A: f64[1152921504606846976], B: f64[1]):\n    B[0] = A[0]\n", "2:10", "too big"),
])
def test_extents_and_sizes_must_fit_i64(tmp_path, source, where, words):
    p = tmp_path / "huge.py"
    p.write_text("@prim_func\n" + source)
    r = tensorize("run", p)
    assert r.returncode == 2
    line = one_line_error(r)
    assert line.startswith(f"{p}:{where}: ") and words in line, line


def test_largest_extents_compile(tmp_path):
    # An extent of 2^62 and a buffer of 2^60 f32 (2^62 bytes) fit: they compile (the plan
    # e-graph's i64 prices are capped rather than overflowing).
    p = tmp_path / "big.py"
    p.write_text("@prim_func\ndef big(A: f32[1152921504606846976], B: f32[1]):\n"
                 "    for i in range(4611686018427387904):\n        B[0] += A[i // 4]\n")
    r = tensorize("run", p)
    assert r.returncode == 0, r.stderr
    assert "1 of 1 functions compiled" in r.stdout


# ---------------------------------------------------------------------------
# Strassen: levels bounded by the shapes, products by a budget


MM64 = """@prim_func
def mm(A: f32[64, 64], B: f32[64, 64], C: f32[64, 64]):
    for i, j, k in grid(64, 64, 64):
        C[i, j] += A[i, k] * B[k, j]
"""


def test_strassen_levels_are_capped_by_shapes():
    from rewrite import nests
    from rewrite.names import Names
    from rewrite.rules import loops, strassen

    f = parse(MM64)
    parts = loops.apply(nests.items(nests.normalize(f)), Names())
    # blocks of 64 halve 5 times before falling under FORCED_MIN_BLOCK: 99 levels are 5
    assert strassen.products(parts, 99, strassen.FORCED_MIN_BLOCK) == 7 ** 5
    assert strassen.products(parts, 2, strassen.FORCED_MIN_BLOCK) == 49


@pytest.mark.parametrize("levels, products", [("3", "343"), ("16", "16,807")])
def test_strassen_over_budget_is_the_functions_error(tmp_path, levels, products):
    p = tmp_path / "mm.py"
    p.write_text(MM64)
    r = tensorize("run", p, "--strassen", levels, "--json")
    assert r.returncode == 2
    line = one_line_error(r)
    assert f"{levels} Strassen level(s) make {products} matmul products" in line
    assert "--budget strassen-products=N" in line
    assert json.loads(r.stdout)["functions"][0]["error"].endswith(line.split(": ", 1)[1])


def test_strassen_budget_from_the_api():
    import intrinsics
    from rewrite.pipeline import tensorize as tensorize_api

    with pytest.raises(BudgetError, match="strassen-products budget of 10;"):
        tensorize_api(parse(MM64), intrinsics.library("all"), strassen=2,
                      budgets=Budgets(strassen_products=10))


def test_absurd_strassen_levels_are_refused():
    r = tensorize("run", ROOT / "corpus" / "gemm.py", "--strassen", "99")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert "--strassen: expected auto, off or a number of levels up to 16, not '99'" in r.stderr


# ---------------------------------------------------------------------------
# --check: the interpreter's work and memory are known before it starts


def test_check_of_a_2_to_40_iteration_loop_is_refused(tmp_path):
    p = tmp_path / "long.py"
    p.write_text("@prim_func\ndef long(A: f32[1], B: f32[1]):\n    for i in range(1099511627776):\n"
                 "        B[0] += A[0]\n\n"
                 "@prim_func\ndef fine(A: f32[4], B: f32[4]):\n    for i in range(4):\n        B[i] = A[i]\n")
    r = tensorize("run", p, "--check", "--target", "none", "--json")
    assert r.returncode == 2
    line = one_line_error(r)
    assert "1,099,511,627,776 statement instances" in line and "--budget check-iterations=N" in line
    by_name = {f["name"]: f for f in json.loads(r.stdout)["functions"]}
    assert by_name["fine"]["check"]["ok"] and by_name["fine"]["error"] is None


def test_check_of_a_2_to_40_element_buffer_is_refused_before_allocating(tmp_path):
    p = tmp_path / "wide.py"
    p.write_text("@prim_func\ndef wide(A: f32[1099511627776], B: f32[1]):\n    B[0] = A[0]\n")
    r = tensorize("run", p, "--check", "--target", "none")
    assert r.returncode == 2
    line = one_line_error(r)
    assert "--check would allocate 12.0 TiB" in line and "--budget check-memory=BYTES" in line
    # without --check the program is fine: nothing is allocated
    assert tensorize("run", p, "--target", "none").returncode == 0


def test_check_steps_budget_stops_a_long_sequential_loop(tmp_path):
    # A carried loop runs one iteration at a time in the interpreter; past check-steps it stops.
    p = tmp_path / "scan.py"
    p.write_text("@prim_func\ndef scan(A: f32[4096], B: f32[4097]):\n    for i in range(4096):\n"
                 "        B[i + 1] = B[i] * 0.5 + A[i]\n")
    r = tensorize("run", p, "--check", "--target", "none", "--budget", "check-steps=1000")
    assert r.returncode == 2
    line = one_line_error(r)
    assert "4,096 loop iterations one at a time" in line and "check-steps budget of 1,000" in line
    r = tensorize("run", p, "--check", "--target", "none", "--budget", "check-steps=5000")
    assert r.returncode == 0, r.stderr


def test_check_budgets_from_the_api():
    from rewrite import runtime

    f = parse("@prim_func\ndef f(A: f32[1024], B: f32[1024]):\n    for i in range(1024):\n        B[i] = A[i]\n")
    with pytest.raises(BudgetError, match="check-memory"):
        runtime.check_budgets(f, Budgets(check_memory=1000))
    with pytest.raises(BudgetError, match="check-iterations"):
        runtime.check_budgets(f, Budgets(check_iterations=1000))
    runtime.check_budgets(f, Budgets())


@pytest.mark.parametrize("option, words", [
    ("nonsense=3", "expected NAME=N with NAME one of analysis-pairs, strassen-products"),
    ("check-memory=lots", "budget check-memory: expected a positive integer, not 'lots'"),
    ("check-steps=0", "budget check-steps: expected a positive integer, not 0"),
])
def test_bad_budget_option(option, words):
    r = tensorize("run", ROOT / "corpus" / "gemm.py", "--budget", option)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and words in r.stderr


# ---------------------------------------------------------------------------
# threads


def test_threads_are_capped():
    from rewrite import runtime

    r = tensorize("run", ROOT / "corpus" / "gemm.py", "--threads", "5000")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert f"--threads: at most {runtime.MAX_THREADS} threads, not 5000" in r.stderr
    f = parse("@prim_func\ndef f(A: f32[4], B: f32[4]):\n    for i in range(4):\n        B[i] = A[i]\n")
    with pytest.raises(ValueError, match="threads must be from 1 to 256"):
        runtime.compile(f, threads=5000)
