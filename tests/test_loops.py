"""Loop rules (``rewrite/rules/loops.py``): split-divmod and merge-reductions preserve what
a program computes (interpreter before and after), apply where they should, and refuse
where they must."""

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, strategies as st

import intrinsics
from rewrite import ir, nests
from rewrite.analysis import affine
from rewrite.inputs import random_args
from rewrite.interp import run
from rewrite.ir import Binary, Const, Var
from rewrite.names import Names
from rewrite.nests import AccNest
from rewrite.pipeline import tensorize
from rewrite.rules import loops
from rewrite.script import parse

AVX2 = intrinsics.library("x86-avx2")


def _rebuilt(func):
    """``func`` after the loop rules, as a function again."""
    normal = nests.normalize(func)
    parts = loops.apply(nests.items(normal), Names(b.name for b in func.buffers))
    body = ir.seq(*(p.stmt() if isinstance(p, AccNest) else p for p in parts))
    return replace(normal, body=body), parts


def _same_results(a, b, seed=1):
    args = random_args(a, seed=seed)
    want, got = run(a, **args), run(b, **args)
    for buf in a.outputs:
        np.testing.assert_allclose(got[buf.name], want[buf.name], rtol=1e-5, atol=1e-5)


def _nests(parts):
    return [p for p in parts if isinstance(p, AccNest)]


# ---------------------------------------------------------------------------
# split-divmod

def _eval(e, env):
    """Index arithmetic as Python evaluates it (floor division, modulo by a positive)."""
    if isinstance(e, Var):
        return env[e.name]
    if isinstance(e, Const):
        return e.value
    ops = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b,
           "//": lambda a, b: a // b, "%": lambda a, b: a % b}
    return ops[e.op](_eval(e.a, env), _eval(e.b, env))


def _var(name, coef):
    return Binary("*", Const(coef, ir.INDEX), Var(name))


@given(st.integers(-6, 6), st.integers(-6, 6), st.integers(-9, 9), st.integers(2, 7),
       st.integers(0, 4), st.integers(1, 9), st.sampled_from(["//", "%"]))
def test_simplify_divmod_is_exact_wherever_it_rewrites(cu, cv, k, g, lo, n, op):
    x = Binary("+", Binary("+", _var("u", cu), _var("v", cv)), Const(k, ir.INDEX))
    e = Binary(op, x, Const(g, ir.INDEX))
    ranges = {"u": (lo, lo + n - 1), "v": (0, g - 1)}
    out = loops.simplify_divmod(e, ranges)
    for u in range(lo, lo + n):
        for v in range(g):
            assert _eval(out, {"u": u, "v": v}) == _eval(e, {"u": u, "v": v})


def test_simplify_divmod_rewrites_a_split_loop_variable():
    # (16*co_o + co_i) // 16 == co_o and % 16 == co_i when 0 <= co_i < 16
    x = Binary("+", _var("co_o", 16), Var("co_i"))
    ranges = {"co_o": (0, 3), "co_i": (0, 15)}
    q = loops.simplify_divmod(Binary("//", x, Const(16, ir.INDEX)), ranges)
    r = loops.simplify_divmod(Binary("%", x, Const(16, ir.INDEX)), ranges)
    assert affine(q) is not None and affine(q).terms == (("co_o", 1),)
    assert affine(r) is not None and affine(r).terms == (("co_i", 1),)
    # without the range fact it must not rewrite
    wide = {"co_o": (0, 3), "co_i": (0, 16)}
    assert loops.simplify_divmod(Binary("//", x, Const(16, ir.INDEX)), wide).op == "//"


GROUPED = '''
@prim_func
def grouped(P: f32[8, 64], W: f32[16, 64], Y: f32[8, 64]):
    for h, co in grid(8, 64):
        Y[h, co] = 0.0
        for rc in range(16):
            Y[h, co] += P[h, co // 16 * 16 + rc] * W[rc, co]
'''

MOD_OUTPUT = '''
@prim_func
def folded(A: f32[12, 64], B: f32[64], Y: f32[16, 4, 12]):
    for c, i in grid(64, 12):
        Y[c % 16, c // 16, i] += A[i, c] * B[c]
'''

NOT_DIVISIBLE = '''
@prim_func
def ragged(P: f32[8, 80], W: f32[16, 60], Y: f32[8, 60]):
    for h, co in grid(8, 60):
        Y[h, co] = 0.0
        for rc in range(16):
            Y[h, co] += P[h, co // 16 * 16 + rc] * W[rc, co]
'''


@pytest.mark.parametrize("text", [GROUPED, MOD_OUTPUT], ids=["grouped", "mod_output"])
def test_split_divmod_makes_indices_affine_and_keeps_results(text):
    func = parse(text)
    new, parts = _rebuilt(func)
    (nest,) = [n for n in _nests(parts) if any(d.extent == 16 for d in n.dims)][:1]
    assert loops._all_affine(nest)
    assert not any(isinstance(e, Binary) and e.op in ("//", "%")
                   for s in ir.walk_stmts(new.body) for x in ir.stmt_exprs(s) for e in ir.walk_expr(x))
    _same_results(func, new)


def test_split_divmod_leaves_a_loop_it_cannot_split_evenly():
    func = parse(NOT_DIVISIBLE)
    _, parts = _rebuilt(func)
    (nest,) = _nests(parts)
    assert not loops._all_affine(nest)
    result = tensorize(func, AVX2)
    assert result.coverage == 0.0
    assert "access pattern" in result.explain()


def test_grouped_conv_with_divmod_reaches_the_matmul_intrinsic():
    result = tensorize(parse(GROUPED), AVX2)
    assert "x86.mm.f32.6x16x1" in {s.intrinsic for s in result.sites}
    assert result.coverage == 1.0


# ---------------------------------------------------------------------------
# merge-reductions

SPLIT = '''
@prim_func
def split(A: f32[6, 40], B: f32[40, 16], C: f32[6, 16]):
    for i, j in grid(6, 16):
        C[i, j] = 0.0
        for k in range({a}, {b}):
            C[i, j] += A[i, {k1}] * B[{k1}, j]
        for k in range({c}, {d}):
            C[i, j] += A[i, {k2}] * B[{k2}, j]
'''


def _split(a, b, c, d, k1="k", k2="k"):
    return parse(SPLIT.format(a=a, b=b, c=c, d=d, k1=k1, k2=k2))


@pytest.mark.parametrize("args, merged_range", [
    ((0, 20, 20, 40), (0, 40)),                       # written as in the corpus
    ((0, 20, 0, 20, "k", "k + 20"), (0, 40)),         # the second loop on shifted indices
    ((20, 40, 0, 20), (0, 40)),                       # the later half written first
    ((3, 11, 11, 40), (3, 40)),                       # uneven halves, not starting at 0
])
def test_adjacent_parts_of_one_reduction_merge(args, merged_range):
    func = _split(*args)
    new, parts = _rebuilt(func)
    (nest,) = _nests(parts)
    k = [d for d in nest.dims if d.extent not in (6, 16)]
    assert [(d.start, d.stop) for d in k] == [merged_range]
    _same_results(func, new)


@pytest.mark.parametrize("args", [
    (0, 20, 21, 40),                 # a gap: k = 20 is never added
    (0, 20, 10, 30),                 # an overlap: the bodies would be added twice
    (0, 20, 0, 20, "k", "k + 19"),   # shifted by the wrong amount
])
def test_parts_that_do_not_join_stay_apart(args):
    func = _split(*args)
    new, parts = _rebuilt(func)
    assert len(_nests(parts)) == 2
    _same_results(func, new)


def test_different_bodies_do_not_merge():
    text = SPLIT.format(a=0, b=20, c=20, d=40, k1="k", k2="k")
    func = parse(text.replace("C[i, j] += A[i, k] * B[k, j]\n", "C[i, j] += A[i, k] * B[k, j] * 2.0\n", 1))
    _, parts = _rebuilt(func)
    assert len(_nests(parts)) == 2


def test_a_statement_between_the_parts_blocks_the_merge():
    func = parse('''
@prim_func
def between(A: f32[6, 8], B: f32[8, 16], C: f32[6, 16], D: f32[6, 16]):
    for i, j, k in grid(6, 16, 4):
        C[i, j] += A[i, k] * B[k, j]
    for i, j in grid(6, 16):
        D[i, j] = C[i, j]
    for i, j, k in grid(6, 16, 4):
        C[i, j] += A[i, k + 4] * B[k + 4, j]
''')
    new, parts = _rebuilt(func)
    assert len(_nests(parts)) == 2
    _same_results(func, new)


@given(st.lists(st.integers(1, 7), min_size=2, max_size=4), st.booleans())
def test_any_split_of_a_reduction_merges_back_into_one(pieces, shifted):
    """A reduction over k in [0, sum(pieces)) written as consecutive loops, each either on its
    own range or on range(n) with shifted indices, is one nest again and computes the same."""
    total = sum(pieces)
    loops_text, start = [], 0
    for n in pieces:
        if shifted:
            idx = f"k + {start}" if start else "k"
            loops_text.append(f"    for i, k in grid(3, {n}):\n        C[i] += A[i, {idx}] * B[{idx}]")
        else:
            loops_text.append(f"    for i in range(3):\n        for k in range({start}, {start + n}):\n"
                              f"            C[i] += A[i, k] * B[k]")
        start += n
    func = parse(f"@prim_func\ndef pieces(A: f32[3, {total}], B: f32[{total}], C: f32[3]):\n"
                 + "\n".join(loops_text) + "\n")
    new, parts = _rebuilt(func)
    (nest,) = _nests(parts)
    assert nest.iterations == 3 * total
    _same_results(func, new)


def test_split_reduction_in_the_corpus_becomes_one_intrinsic_loop():
    func = _split(0, 20, 20, 40)
    result = tensorize(func, AVX2)
    calls = [s for s in result.sites if s.intrinsic == "x86.mm.f32.6x16x1"]
    assert len(calls) == 1 and calls[0].calls == 40


def test_indices_the_ranges_already_decide_need_no_split():
    func = parse('''
@prim_func
def decided(A: f32[6, 8], B: f32[8, 16], C: f32[6, 16]):
    for i, j, k in grid(6, 16, 8):
        C[i // 1, j] += A[i, k - (k + 1) // 9] * B[(k + 8) % 8, j]
''')
    new, parts = _rebuilt(func)
    (nest,) = _nests(parts)
    assert loops._all_affine(nest) and [d.name for d in nest.dims] == ["i", "j", "k"]
    _same_results(func, new)
    assert tensorize(func, AVX2).coverage == 1.0
