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

from rewrite import analysis
from rewrite.script import parse

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


# ---------------------------------------------------------------------------
# dependence analysis: polynomial in the depth


@pytest.mark.parametrize("depth", [12, 14, 50])
def test_deep_reduction_nest_is_analysed_quickly(depth):
    # Every loop of `B[0] += A[v_last]` accumulates into one element: 3^depth direction
    # vectors if enumerated; refined per loop, a handful.
    f = parse(grid_nest(depth, f"B[0] += A[v{depth - 1}]", "A: f32[2], B: f32[1]"))
    t0 = time.perf_counter()
    kinds = [info.kind for info in analysis.loops(f)]
    assert time.perf_counter() - t0 < HANG
    assert kinds == ["reduction"] * depth


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
    # the rest is assumed ("*"), which is sound: B[sum] += ... stays a reduction everywhere.
    depth = 40
    f = parse(grid_nest(depth, f"B[{' + '.join(f'v{k}' for k in range(depth))}] += A[v0]",
                        f"A: f32[2], B: f32[{depth + 1}]"))
    assert {info.kind for info in analysis.loops(f)} == {"reduction"}


def test_cli_deep_nest_compiles(tmp_path):
    p = tmp_path / "deep.py"
    p.write_text(grid_nest(50, "B[0] += A[v49]", "A: f32[2], B: f32[1]"))
    r = tensorize("run", p, "--target", "none")
    assert r.returncode == 0, r.stderr
    assert "1 of 1 functions compiled" in r.stdout
