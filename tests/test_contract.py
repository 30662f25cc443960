"""contract-pair (rules/contract.py): a sum of products of three operands computed as two
contractions; its golden, the candidates it offers and refuses, values and the NaN/Inf
pattern against the interpreter, and the gradients it serves."""

from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import intrinsics
from rewrite import interp, ir, nests, runtime
from rewrite.autodiff import grad
from rewrite.inputs import random_args
from rewrite.names import Names
from rewrite.pipeline import tensorize
from rewrite.rules.contract import candidates
from rewrite.rules.finite import Guarded
from rewrite.script import parse, parse_file, show

ROOT = Path(__file__).parent.parent
GOLDEN = Path(__file__).parent / "golden" / "contract"
AVX512 = intrinsics.library("x86-avx512")
HOST = intrinsics.library("host")
AVX2 = intrinsics.library("x86-avx2")
HOST_FEATURES = intrinsics.host_features()


def _nests(src: str):
    func = parse(src)
    items = nests.items(nests.normalize(func))
    return func, [p for p in items if isinstance(p, nests.AccNest)]


def _with(func, items, allocs):
    """``func`` with its body replaced by ``items`` (statements, nests, guarded items)."""
    stmts = [p.stmt() if isinstance(p, (nests.AccNest, Guarded)) else p for p in items]
    return ir.PrimFunc(func.name, func.params, ir.seq(*stmts), tuple(allocs))


def test_golden_the_scale_gradient_is_a_product_then_a_dot(request):
    func = parse_file(GOLDEN / "scale_gradient.py")["scale_gradient"]
    result = tensorize(func, AVX512)
    got = show(result.func)
    expected = GOLDEN / "scale_gradient.expected"
    if request.config.getoption("--update-golden") or not expected.exists():
        expected.write_text(got)
    assert got == expected.read_text()
    # the 64x96x48 sum runs as a matrix product into a temporary, then one 2-d dot
    assert "x86.avx512.mm.f32.8x32x1" in got and "ct_T_" in got
    assert result.coverage >= 0.9  # the dot and the guard's scan stay plain loops
    off = tensorize(func, AVX512, rules_off={"contract"})
    assert off.coverage == 0.0 and result.cost < off.cost
    if {"avx512f", "fma"} <= HOST_FEATURES:
        check = runtime.check(func, result.compile())
        assert check.ok, check.message


SUM3 = """
@prim_func
def f(A: f32[6, 5], B: f32[5, 7], dC: f32[6, 7], s: f32[1]):
    for i, j, k in grid(6, 7, 5):
        s[0] += dC[i, j] * A[i, k] * B[k, j]
"""


def test_each_pair_with_loops_of_its_own_is_a_candidate_computing_the_same():
    func, (nest,) = _nests(SUM3)
    alts = candidates(nest, Names.of(func))
    # every pair has a loop only it uses: (dC, A) sums i, (dC, B) sums j, (A, B) sums k
    assert len(alts) == 3
    rng = np.random.default_rng(0)
    args = {p.name: rng.standard_normal(p.shape).astype(np.float32) for p in func.params}
    want = interp.run(func, **args)["s"]
    for items, allocs in alts:
        (g,) = items
        assert isinstance(g, Guarded) and g.slow == (nest,)
        fast = _with(func, list(g.fast), allocs)
        np.testing.assert_allclose(interp.run(fast, **args)["s"], want, rtol=1e-4)
        # the first contraction sums over a loop the temporary does not index
        inner = [p for p in g.fast if isinstance(p, nests.AccNest)][0]
        assert len(inner.dims) == 3 and len(inner.indices) == 2


@pytest.mark.parametrize("body", [
    # two operands: a matrix product as it is
    "for i, j, k in grid(6, 7, 5):\n        s[0] += A[i, k] * B[k, j]",
    # three operands moving together: no loop belongs to a pair alone
    "for i in range(6):\n        v[i] += A[i, 0] * A[i, 1] * dC[i, 0]",
    # a cast among the operands
    "for i, j, k in grid(6, 7, 5):\n        s[0] += dC[i, j] * A[i, k] * f32(n[k, j])",
    # a non-finite constant: regrouped, its infinite terms meet in other sums
    "for i, j, k in grid(6, 7, 5):\n        s[0] += inf * dC[i, j] * A[i, k] * B[k, j]",
    # a sum, not a product
    "for i, j, k in grid(6, 7, 5):\n        s[0] += dC[i, j] * (A[i, k] + B[k, j])",
])
def test_no_candidate_where_no_pair_can_be_summed_first(body):
    src = ("@prim_func\ndef f(A: f32[6, 5], B: f32[5, 7], dC: f32[6, 7], n: i32[5, 7], s: f32[1], "
           "v: f32[6]):\n    " + body + "\n")
    func, found = _nests(src)
    assert all(candidates(nest, Names.of(func)) == [] for nest in found)


def test_integer_contractions_need_no_guard():
    src = SUM3.replace("f32", "i32")
    func, (nest,) = _nests(src)
    for items, _ in candidates(nest, Names.of(func)):
        assert not any(isinstance(p, Guarded) for p in items)


def _regrouping_moves_nan(func) -> dict:
    """Inputs on which the product as written is NaN and a pair contracted first is +Inf:
    ``(dC[3, j] * B[5, j]) * A[3, 5]`` underflows to ``0 * inf``, while a pair holding
    ``A[3, 5]`` sums it with a tiny positive factor into ``inf``, then times positives."""
    rng = np.random.default_rng(1)
    args = {p.name: rng.uniform(0.5, 1.0, p.shape).astype(np.float32) for p in func.params}
    args["dC"][3, :] = 1e-30
    args["B"][5, :] = 1e-30
    args["A"][3, 5] = np.inf
    return args


def test_nan_and_inf_stay_where_the_program_as_written_puts_them():
    func = parse_file(GOLDEN / "scale_gradient.py")["scale_gradient"]
    result = tensorize(func, AVX2)  # rows every x86-64 host this project targets runs
    assert "ct_T_" in show(result.func)
    kernel = result.compile()
    cases = [_regrouping_moves_nan(func)] + [random_args(func, seed, special=True) for seed in range(3)]
    for args in cases:
        want = interp.run(func, **args)["dalpha"]
        mine = {k: v.copy() for k, v in args.items()}
        kernel(**mine)
        got = mine["dalpha"]
        assert np.isnan(got[0]) == np.isnan(want[0]) and np.isinf(got[0]) == np.isinf(want[0])
        if np.isfinite(want[0]):
            np.testing.assert_allclose(got, want, rtol=1e-4)
    # without the guard, the pairs holding A compute +Inf there
    _, (nest,) = _nests(show(func))
    args = _regrouping_moves_nan(func)
    assert np.isnan(interp.run(func, **args)["dalpha"][0])
    unguarded = [interp.run(_with(func, [func.body.stmts[0]] + list(items[0].fast), allocs),
                            **args)["dalpha"][0]
                 for items, allocs in candidates(nest, Names.of(func))]
    assert sum(np.isposinf(x) for x in unguarded) == 2


def test_the_gradient_of_a_runtime_scale_is_tensorized_like_the_forward():
    func = parse_file(ROOT / "corpus" / "real_updates.py")["gemm_alpha_runtime"]
    backward = grad(func, ["A", "B", "alpha", "C"], output="C")
    result = tensorize(backward, HOST)
    assert result.coverage >= 0.9
    check = runtime.check(backward, result.compile())
    assert check.ok, check.message


@st.composite
def contractions(draw):
    """``out[...] += X[...] * Y[...] * Z[...]`` (maybe a constant and a sign too) over two to
    four loops, each operand indexed by one or two of them, the output by none to two."""
    n = draw(st.integers(2, 4))
    dims = [f"d{q}" for q in range(n)]
    extents = [draw(st.integers(1, 6)) for _ in dims]
    def sub(lo, hi):
        return draw(st.lists(st.sampled_from(dims), min_size=lo, max_size=hi, unique=True))
    operands = [sub(1, 2) for _ in range(3)]
    out = sub(0, 2)
    size = dict(zip(dims, extents))
    def shape(idx):
        return "[" + ", ".join(str(size[d]) for d in idx) + "]" if idx else "[1]"
    def at(idx):
        return ", ".join(idx) if idx else "0"
    params = [f"X{q}: f32{shape(idx)}" for q, idx in enumerate(operands)] + [f"O: f32{shape(out)}"]
    product = " * ".join(f"X{q}[{at(idx)}]" for q, idx in enumerate(operands))
    if draw(st.booleans()):
        product = "1.5 * " + product
    op = draw(st.sampled_from(["+=", "-="]))
    grid = f"for {', '.join(dims)} in grid({', '.join(map(str, extents))}):"
    return (f"@prim_func\ndef f({', '.join(params)}):\n    {grid}\n"
            f"        O[{at(out)}] {op} {product}\n")


@given(contractions(), st.integers(0, 2 ** 16))
@settings(max_examples=40)
@example("@prim_func\ndef f(X0: f32[6], X1: f32[6], X2: f32[4, 6], O: f32[1]):\n"
         "    for d0, d1, d2, d3 in grid(6, 4, 4, 5):\n        O[0] += 1.5 * X0[d0] * X1[d0] * X2[d1, d0]\n",
         234)  # cancels: 3e-5 off in float32, against 1e-5 of an absolute tolerance
def test_every_candidate_computes_what_the_nest_does(src, seed):
    func, found = _nests(src)
    rng = np.random.default_rng(seed)
    args = {p.name: rng.uniform(-1, 1, p.shape).astype(np.float64).astype(np.float32)
            for p in func.params}
    want = interp.run(func, **args)["O"]
    # another order of the sum is off by float32 roundoff of the terms' magnitudes, which a
    # sum that cancels (480 terms of about 0.2 summing to 0.2) leaves well above ``want``'s
    terms = interp.run(func, **{name: np.abs(a) for name, a in args.items()})["O"]
    atol = 1e-5 * (1.0 + float(np.max(np.abs(terms))))
    for nest in found:
        for items, allocs in candidates(nest, Names.of(func)):
            for branch in ("fast", "slow"):
                got = interp.run(_with(func, list(getattr(items[0], branch)), allocs), **args)["O"]
                np.testing.assert_allclose(got, want, rtol=1e-4, atol=atol)


@given(contractions())
@settings(max_examples=8)
@example("@prim_func\ndef f(X0: f32[2], X1: f32[2], X2: f32[2], O: f32[1]):\n"
         "    for d0, d1, d2, d3 in grid(2, 2, 2, 2):\n"
         "        O[0] += X0[d0] * X1[d0] * X2[d1]\n")  # a pair summed into one element
@example("@prim_func\ndef f(X0: f32[5, 4], X1: f32[4, 4], X2: f32[4, 4], O: f32[4, 5]):\n"
         "    for d0, d1, d2 in grid(5, 4, 4):\n"
         "        O[d2, d0] -= X0[d0, d1] * X1[d1, d2] * X2[d1, d2]\n")  # (X0 * X1) * X2 kept
def test_random_contractions_compile_to_what_the_interpreter_computes(src):
    func = parse(src)
    result = tensorize(func, HOST)
    check = runtime.check(func, result.compile())
    assert check.ok, check.message + "\n" + show(result.func)
