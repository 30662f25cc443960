"""Real code as it is written: triangular loops, scalar locals, and the exact bound check over
their domains. Each program is checked three ways: the parser's IR (printed), the interpreter
against a numpy formula written from what the program means, and the compiled kernel against
the interpreter."""

from __future__ import annotations

import numpy as np
import pytest

from rewrite import interp, polytope
from rewrite.pipeline import tensorize
from rewrite.affine import Affine
from rewrite.inputs import random_args
from rewrite.ir import For
from rewrite.runtime import check as _check
from rewrite.script import ScriptError, parse, show, show_expr

def check(f, seed: int = 0):
    """The tensorized program, compiled, against the interpreter on ``f`` as written."""
    return _check(f, tensorize(f).compile(), seed=seed)


SYRK = '''
@prim_func
def syrk(C: f32[9, 9], A: f32[9, 5]):
    for i in range(9):
        for j in range(i + 1):
            C[i, j] *= 1.2
        for k in range(5):
            for j in range(i + 1):
                C[i, j] += 1.5 * A[i, k] * A[j, k]
'''


def test_a_triangular_loop_is_its_box_under_a_guard():
    f = parse(SYRK)
    assert show(f) == '''@prim_func
def syrk(C: f32[9, 9], A: f32[9, 5]):
    for i in range(9):
        for j in range(9):
            if j < i + 1:
                C[i, j] = C[i, j] * 1.2
        for k, j in grid(5, 9):
            if j < i + 1:
                C[i, j] += 1.5 * A[i, k] * A[j, k]
'''
    assert parse(show(f)) == f


def test_every_form_of_triangular_bound_runs_what_python_runs():
    # the loops of the program, run by Python itself, are the reference
    f = parse('''
@prim_func
def bands(Y: f32[8, 8], X: f32[8]):
    for i in range(8):
        for j in range(i):
            Y[i, j] += X[i - j - 1]
        for j in range(i + 1, 8):
            Y[i, j] += 2.0 * X[j - i - 1]
        for j in range(i, 8):
            Y[j, i] += 3.0 * X[j]
        for j in range(2, i - 1):
            for k in range(j, i):
                Y[k, j] += X[k - j]
''')
    args = random_args(f, seed=3)
    Y, X = args["Y"].astype(np.float64), args["X"].astype(np.float64)
    for i in range(8):
        for j in range(i):
            Y[i, j] += X[i - j - 1]
        for j in range(i + 1, 8):
            Y[i, j] += 2.0 * X[j - i - 1]
        for j in range(i, 8):
            Y[j, i] += 3.0 * X[j]
        for j in range(2, i - 1):
            for k in range(j, i):
                Y[k, j] += X[k - j]
    out = interp.run(f, **args)
    np.testing.assert_allclose(out["Y"], Y, rtol=1e-5, atol=1e-5)
    assert check(f, seed=3).ok


def test_syrk_as_written_is_the_lower_triangle_of_a_product():
    f = parse(SYRK)
    args = random_args(f, seed=1)
    C, A = args["C"].astype(np.float64), args["A"].astype(np.float64)
    lower = np.tril(np.ones((9, 9), bool))
    want = np.where(lower, 1.2 * C + 1.5 * A @ A.T, C)
    np.testing.assert_allclose(interp.run(f, **args)["C"], want, rtol=1e-5, atol=1e-5)
    assert check(f, seed=1).ok


def test_the_bound_check_is_exact_over_the_triangle():
    ok = '''
@prim_func
def f(Y: f32[8], X: f32[8]):
    for i in range(8):
        for j in range(i + 1):
            Y[i - j] += X[j]
'''
    parse(ok)  # i - j spans 0..7 over the triangle, -7..7 over its box
    with pytest.raises(ScriptError) as e:
        parse(ok.replace("Y[i - j]", "Y[i - j - 1]"))
    assert e.value.message == ("Y[i - j - 1] can go out of bounds: index i - j - 1 takes values -1..6 "
                               "but dimension 0 of Y is 0..7")
    assert (e.value.line, e.value.col) == (6, 13)


@pytest.mark.parametrize("bound, message", [
    ("range(i * i)", "loop bounds must be integer constants or affine expressions of enclosing loop "
                     "variables, such as range(i + 1) or range(i, 64)"),
    ("range(N)", "loop bounds must be integer constants or affine expressions of enclosing loop "
                 "variables, such as range(i + 1) or range(i, 64); N is not an enclosing loop variable"),
    ("range(i, i)", "loop j over range(i, i) never runs"),
    ("range(i + 9, 9)", "loop j over range(i + 9, 9) never runs"),
    ("grid(i + 1)", "grid() extents must be integer constants; bounds that depend on an enclosing "
                    "loop are written with nested range() loops"),
])
def test_bad_triangular_bounds_are_refused_where_they_are_written(bound, message):
    with pytest.raises(ScriptError) as e:
        parse(f'''
@prim_func
def f(C: f32[8]):
    for i in range(8):
        for j in {bound}:
            C[i] = 1.0
''')
    assert e.value.message == message
    assert e.value.line == 5


def test_a_guard_that_bounds_the_loop_becomes_its_range():
    f = parse('''
@prim_func
def f(C: f32[8, 8], A: f32[8]):
    for i in range(8):
        for j in range(1, i + 1):
            if A[j] > 0.0:
                C[i, j] = A[j]
''')
    outer = f.body
    inner = outer.body
    assert isinstance(inner, For) and (inner.start, inner.stop) == (1, 8)
    bounds, body = polytope.guarded_range(inner)
    assert [(op, show_expr(e)) for op, e in bounds] == [("<", "i + 1")]
    assert show(f).count("if ") == 2 and "A[j] > 0.0" in show(f)
    assert body.cond.op == ">"  # the data-dependent test stays a guard
    assert check(f, seed=2).ok


def test_span_is_exact_on_difference_constraints_and_sees_empty_domains():
    box = {"i": (0, 9), "j": (0, 9)}
    below = (Affine((("i", 1), ("j", -1)), -1),)  # j < i
    assert polytope.span(Affine((("i", 1), ("j", -1))), box, below) == (1, 9)
    assert polytope.span(Affine((("j", 1),)), box, below) == (0, 8)
    assert polytope.span(Affine((("i", 1),)), box, below) == (1, 9)
    empty = below + (Affine((("j", 1), ("i", -1))),)  # and j >= i
    assert polytope.span(Affine((("j", 1),)), box, empty) is None


# ---------------------------------------------------------------------------
# scalar locals


SYMM = '''
@prim_func
def symm(C: f32[12, 10], A: f32[12, 12], B: f32[12, 10]):
    for i in range(12):
        for j in range(10):
            temp2 = 0.0
            for k in range(i):
                C[k, j] += 1.5 * B[i, j] * A[i, k]
                temp2 += B[k, j] * A[i, k]
            C[i, j] = 1.2 * C[i, j] + 1.5 * B[i, j] * A[i, i] + 1.5 * temp2
'''


def test_a_scalar_local_is_a_one_element_temporary():
    f = parse(SYMM)
    (t,) = f.allocs
    assert (t.name, t.dtype, t.shape) == ("temp2", "f32", (1,))
    text = show(f)
    assert "temp2 = alloc(f32[1])" in text and "temp2[0] += B[k, j] * A[i, k]" in text
    assert parse(text) == f


def test_symm_as_polybench_writes_it_matches_its_formula():
    f = parse(SYMM)
    args = random_args(f, seed=4)
    C, A, B = (args[n].astype(np.float64) for n in "CAB")
    # symm: C = alpha * A_sym @ B + beta * C, with A's lower triangle holding the symmetric A
    low = np.tril(A)
    sym = low + np.tril(A, -1).T
    want = 1.5 * sym @ B + 1.2 * C
    np.testing.assert_allclose(interp.run(f, **args)["C"], want, rtol=1e-4, atol=1e-4)
    assert check(f, seed=4).ok


@pytest.mark.parametrize("body, message, where", [
    ("t = 0.0\n        C[i] = t", "the scalar t needs a dtype: the function has several float buffer "
                                  "types, so write a cast such as t = f32(0.0)", (5, 13)),
    ("C[i] = t", "unknown name t", (5, 16)),
    ("t += 1.0", "t is not a buffer or scalar yet: give it a value first (t = 0.0)", (5, 9)),
    ("t = C[i] > 0.0", "the scalar t would hold a condition; scalars hold numbers", (5, 13)),
])
def test_scalar_locals_are_refused_clearly(body, message, where):
    with pytest.raises(ScriptError) as e:
        parse(f'''
@prim_func
def f(C: f32[8], D: f64[8]):
    for i in range(8):
        {body}
''')
    assert e.value.message == message
    assert (e.value.line, e.value.col) == where


def test_a_typed_scalar_local_in_a_mixed_precision_function():
    f = parse('''
@prim_func
def f(C: f32[8], D: f64[8]):
    for i in range(8):
        t = f64(0.0)
        t += D[i] * D[i]
        C[i] = f32(t)
''')
    args = random_args(f, seed=5)
    want = (args["D"].astype(np.float64) ** 2).astype(np.float32)
    np.testing.assert_allclose(interp.run(f, **args)["C"], want, rtol=1e-6)


def test_a_triangle_differentiates_and_gradchecks():
    from rewrite.autodiff import grad
    from rewrite.numgrad import gradcheck

    f = parse(SYRK)
    g = grad(f, ["A"], output="C")
    assert "if " in show(g)  # the backward program keeps the triangle's guard
    check = gradcheck(f, g, ["A"], output="C", samples=6)
    assert check.ok, check.message()


def test_statements_are_reordered_where_that_lets_their_loop_distribute():
    from rewrite import nests

    f = parse('''
@prim_func
def symm(C: f32[20, 24], A: f32[20, 20], B: f32[20, 24], temp2: f32[20, 24]):
    for i in range(20):
        for j in range(24):
            temp2[i, j] = 0.0
            for k in range(i):
                C[k, j] += 1.5 * B[i, j] * A[i, k]
                temp2[i, j] += B[k, j] * A[i, k]
            C[i, j] = 1.2 * C[i, j] + 1.5 * B[i, j] * A[i, i] + 1.5 * temp2[i, j]
''')
    # C[i, j] is final before any later i adds to it, so its statement may run before them
    assert show(nests.normalize(f)).split("\n", 2)[2] == '''    for i, j in grid(20, 24):
        temp2[i, j] = 0.0
    for i, j, k in grid(20, 24, 19):
        if k < i:
            temp2[i, j] += B[k, j] * A[i, k]
    for i, j in grid(20, 24):
        C[i, j] = 1.2 * C[i, j] + 1.5 * B[i, j] * A[i, i] + 1.5 * temp2[i, j]
    for i, j, k in grid(20, 24, 19):
        if k < i:
            C[k, j] += 1.5 * B[i, j] * A[i, k]
'''
    assert check(f, seed=6).ok


def test_thirty_nested_triangular_loops_compile_without_hanging_llvm():
    # LLVM's loop passes take minutes on 30 nested loops bounded by their guards; beyond
    # codegen.MAX_NARROWED the loops keep their guards (the program is never run: its
    # iteration count is astronomical)
    import subprocess
    import sys

    n = 30
    lines = ["@prim_func", "def deep(X: f32[64]):", "    for v0 in range(64):"]
    for k in range(1, n):
        lines.append("    " * (k + 1) + f"for v{k} in range(v{k - 1}, 64):")
    lines.append("    " * (n + 1) + f"X[v{n - 1} - v0] += 1.0")
    code = ("import sys; from rewrite.script import parse; from rewrite import runtime\n"
            "runtime.compile(parse(sys.stdin.read()))\nprint('compiled')")
    r = subprocess.run([sys.executable, "-c", code], input="\n".join(lines) + "\n",
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "compiled", r.stderr
