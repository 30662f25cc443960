"""The rules that take real code onto intrinsics: split-domain (triangles into boxes),
snapshot-reads (in-place updates that read what they have not yet written), statements
reordered for distribution, and the dependence analysis reading guards as facts. Each rule is
checked for what it produces, for what it must refuse, and by running the result."""

from __future__ import annotations

import numpy as np
import pytest

from rewrite import analysis, interp, nests
from rewrite.inputs import random_args
from rewrite.ir import For
from rewrite.names import Names
from rewrite.nests import AccNest
from rewrite.pipeline import tensorize
from rewrite.rules import snapshot, triangles
from rewrite.runtime import check
from rewrite.script import parse, show


def guarded_item(src: str):
    f = parse(src)
    (item,) = [p for p in nests.items(nests.normalize(f)) if isinstance(p, For)]
    return f, item


def points(item) -> list[tuple[int, ...]]:
    """The (i, j) points an item's accumulation runs at, by running its loops in Python."""
    if isinstance(item, AccNest):
        item = item.stmt()
    out = []

    def run(s, env):
        if isinstance(s, For):
            for v in range(s.start, s.stop):
                run(s.body, {**env, s.var: v})
        elif hasattr(s, "cond"):
            if interp_cond(s.cond, env):
                run(s.then, env)
        else:
            out.append(tuple(_index(i, env) for i in s.indices))
    run(item, {})
    return out


def _index(e, env):
    from rewrite.affine import affine
    a = affine(e)
    return a.const + sum(c * env[v] for v, c in a.terms)


def interp_cond(c, env):
    from rewrite.ir import Compare, Logical
    if isinstance(c, Logical):
        return interp_cond(c.a, env) and interp_cond(c.b, env)
    assert isinstance(c, Compare)
    a, b = _index(c.a, env), _index(c.b, env)
    return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b, "==": a == b}[c.op]


DOMAINS = {
    "lower": ("range(i + 1)", lambda i, j: j <= i),
    "strict upper": ("range(i + 1, 37)", lambda i, j: j > i),
    "band": ("range(i, 37)", lambda i, j: i <= j),
}


@pytest.mark.parametrize("name", sorted(DOMAINS))
@pytest.mark.parametrize("leaf", [4, 8, 16])
def test_the_boxes_and_remainders_partition_the_domain(name, leaf):
    bound, inside = DOMAINS[name]
    _, item = guarded_item(f'''
@prim_func
def f(C: f32[37, 37], A: f32[37, 5]):
    for i in range(37):
        for k in range(5):
            for j in {bound}:
                C[i, j] += A[i, k] * A[j, k]
''')
    g = triangles.guarded(item)
    pieces = triangles.split(g, Names(["i", "j", "k", "C", "A"]), leaf)
    got = sorted(p for piece in pieces for p in points(piece))
    want = sorted((i, j) for i in range(37) for k in range(5) for j in range(37) if inside(i, j))
    assert got == want  # every point once, none outside
    assert any(isinstance(p, AccNest) for p in pieces)


def test_equal_boxes_along_the_diagonal_are_one_nest():
    _, item = guarded_item('''
@prim_func
def f(C: f32[256, 256], A: f32[256, 8]):
    for i in range(256):
        for k in range(8):
            for j in range(i + 1):
                C[i, j] += A[i, k] * A[j, k]
''')
    pieces = triangles.split(triangles.guarded(item), Names(["i", "j", "k"]), 32)
    boxes = [p for p in pieces if isinstance(p, AccNest)]
    # halving 256 down to 32: boxes of 128, 64 (two), 32 (four), and 8 guarded 32-blocks
    assert sorted(tuple(d.extent for d in b.dims) for b in boxes) == [
        (2, 64, 8, 64), (4, 32, 8, 32), (128, 8, 128)]
    (rest,) = [p for p in pieces if not isinstance(p, AccNest)]
    # the guarded dims outermost, so the guard bounds the loop inside it
    assert show_stmt(rest) == """for t, i, j, k in grid(8, 32, 32, 8):
        if i >= j:
            C[i + 32 * t, j + 32 * t] += A[i + 32 * t, k] * A[j + 32 * t, k]"""


def show_stmt(s) -> str:
    from rewrite.ir import PrimFunc
    from rewrite.printer import show as show_func
    return show_func(PrimFunc("f", (), s)).split("\n", 2)[2].strip()


@pytest.mark.parametrize("body", [
    "if A[i, k] > 0.0:\n                    C[i, j] += A[i, k] * A[j, k]",   # a guard that reads memory
    "if j != i:\n                    C[i, j] += A[i, k] * A[j, k]",           # not a convex domain
    "if j <= i:\n                    C[i, j] += A[i, k] * C[j, i]",           # reads what it writes
])
def test_split_domain_refuses_what_it_cannot_cut(body):
    _, item = guarded_item(f'''
@prim_func
def f(C: f32[16, 16], A: f32[16, 4]):
    for i in range(16):
        for k in range(4):
            for j in range(16):
                {body}
''')
    assert triangles.guarded(item) is None


def test_the_polybench_triangles_reach_their_coverage_and_run_right():
    f = parse('''
@prim_func
def syr2k(C: f32[192, 192], A: f32[192, 40], B: f32[192, 40]):
    for i in range(192):
        for j in range(i + 1):
            C[i, j] *= 1.2
        for k in range(40):
            for j in range(i + 1):
                C[i, j] += A[j, k] * 1.5 * B[i, k] + B[j, k] * 1.5 * A[i, k]
''')
    r = tensorize(f)
    assert r.coverage >= 0.9, r.report()
    # ops_total counts the triangle, not its box: 192 * 193 / 2 elements
    assert r.ops_total < 192 * 192 * 40 * 7
    assert check(f, r.compile(), seed=3).ok
    assert check(f, r.compile(), seed=4).ok


# ---------------------------------------------------------------------------
# snapshot-reads


TRMM = '''
@prim_func
def trmm(A: f32[128, 128], B: f32[128, 64]):
    for i in range(128):
        for j in range(64):
            for k in range(i + 1, 128):
                B[i, j] += A[k, i] * B[k, j]
            B[i, j] = 1.5 * B[i, j]
'''


def test_an_update_reading_rows_it_writes_later_reads_a_copy():
    f = parse(TRMM)
    items = nests.items(nests.normalize(f))
    acc = [p for p in items if isinstance(p, For) and "+=" in show_stmt(p)]
    (item,) = acc
    copy, nest = snapshot.snapshot(item, Names.of(f))
    assert show_stmt(copy) == "for x0, x1 in grid(128, 64):\n        B_in[x0, x1] = B[x0, x1]"
    assert "B[i, j] += A[k, i] * B_in[k, j]" in show_stmt(nest)
    r = tensorize(f)
    assert r.coverage >= 0.9, r.report()
    assert check(f, r.compile(), seed=1).ok


def test_an_update_reading_what_it_wrote_keeps_its_order():
    # a prefix sum over rows: row i reads rows k < i, already updated
    f = parse('''
@prim_func
def f(B: f32[24, 20]):
    for i in range(24):
        for k in range(i):
            for j in range(20):
                B[i, j] += 0.5 * B[k, j]
''')
    (item,) = nests.items(nests.normalize(f))
    assert snapshot.snapshot(item, Names.of(f)) is None
    r = tensorize(f)
    assert "B_in" not in show(r.func)
    assert check(f, r.compile(), seed=2).ok


# ---------------------------------------------------------------------------
# the dependence analysis reads guards


COVARIANCE_TAIL = '''
@prim_func
def f(cov: f32[12, 12], data: f32[9, 12]):
    for i in range(12):
        for j in range(i, 12):
            cov[i, j] = 0.0
            for k in range(9):
                cov[i, j] += data[k, i] * data[k, j]
            cov[j, i] = cov[i, j]
'''


def test_guards_are_facts_of_the_dependence_test():
    f = nests.normalize(parse(COVARIANCE_TAIL))
    # the mirror copy writes the lower triangle the guarded statements never touch
    assert len(ir_stmts(f.body)) == 3
    g = parse(COVARIANCE_TAIL.replace("range(i, 12)", "range(12)"))
    # without the guard they do depend: the i loop stays around its three statements
    assert len(ir_stmts(nests.normalize(g).body)) == 1
    args = random_args(g, seed=5)
    np.testing.assert_allclose(interp.run(f, **args)["cov"],
                               interp.run(parse(COVARIANCE_TAIL), **args)["cov"], rtol=1e-6)


def ir_stmts(s):
    from rewrite.ir import stmts_of
    return stmts_of(s)


def test_a_dependence_the_guards_allow_is_still_found():
    # j < i: row i reads row j's upper part, which the second statement updated at iteration j
    f = parse('''
@prim_func
def f(X: f32[12, 12]):
    for i in range(12):
        for j in range(i):
            X[i, j] = X[j, i] * 0.5
        for j in range(i, 12):
            X[i, j] = X[i, j] + 1.0
''')
    assert not analysis.can_distribute(f, (0,))
    assert analysis.distribution_order(f, (0,)) == [1, 0]  # every update, then the copies
    args = random_args(f, seed=8)
    np.testing.assert_array_equal(interp.run(nests.normalize(f), **args)["X"], interp.run(f, **args)["X"])


def test_statements_that_feed_each_other_keep_their_loop():
    f = parse('''
@prim_func
def f(X: f32[13], Y: f32[12]):
    for i in range(12):
        Y[i] = X[i] + 1.0
        X[i + 1] = Y[i] * 2.0
''')
    assert analysis.distribution_order(f, (0,)) is None
    assert len(ir_stmts(nests.normalize(f).body)) == 1


def test_distribution_order_is_a_topological_order_of_the_dependences():
    src = '''
@prim_func
def f(X: f32[12], Y: f32[13], Z: f32[12]):
    for i in range(12):
        X[i] = Y[i] + 1.0
        Y[i + 1] = Z[i] * 2.0
'''
    f = parse(src)
    # X[i] reads Y[i], which the second statement wrote one iteration earlier
    assert not analysis.can_distribute(f, (0,))
    assert analysis.distribution_order(f, (0,)) == [1, 0]
    g = nests.normalize(f)
    assert show(g).split("\n", 2)[2] == '''    for i in range(12):
        Y[i + 1] = Z[i] * 2.0
    for i in range(12):
        X[i] = Y[i] + 1.0
'''
    args = random_args(f, seed=7)
    for name in ("X", "Y"):
        np.testing.assert_array_equal(interp.run(g, **args)[name], interp.run(f, **args)[name])
