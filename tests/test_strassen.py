"""Tensor-level rewrites: matmul recognition, Strassen levels, matmul algebra, their numerics
and the cost model's choice between them."""

from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import intrinsics
from rewrite import calls, inputs, interp, ir, nests, runtime
from rewrite.budgets import Budgets
from rewrite.names import Names
from rewrite.pipeline import Search, tensorize
from rewrite.rules import matmul, matrices, strassen
from rewrite.rules.choose import Around
from rewrite.rules.finite import Guarded
from rewrite.saturate import Budget
from rewrite.tools.strassen_bench import matmul_source
from rewrite.script import parse, parse_file

AVX2 = intrinsics.library("x86-avx2")
HOST_HAS_AVX2 = {"avx2", "fma"} <= intrinsics.host_features()
GOLDEN = Path(__file__).parent / "golden"


def _nest(src: str) -> nests.AccNest:
    func = parse(src)
    (nest,) = [p for p in nests.items(nests.normalize(func)) if isinstance(p, nests.AccNest)]
    return nest


def _mm(M, N, K, body="C[i, j] += A[i, k] * B[k, j]", a="A: f32[{M}, {K}]", b="B: f32[{K}, {N}]",
        c="C: f32[{M}, {N}]", loops="for i, j, k in grid({M}, {N}, {K}):", dtype="f32"):
    sig = ", ".join(x.format(M=M, N=N, K=K) for x in (a, b, c))
    return (f"@prim_func\ndef f({sig}):\n    {loops.format(M=M, N=N, K=K)}\n        {body}\n")


def _program(func, alt):
    """``func`` with its items replaced by an alternative's."""
    body = ir.seq(*(p.stmt() if isinstance(p, (nests.AccNest, Guarded)) else p for p in alt.parts))
    return replace(func, body=body, allocs=tuple(func.allocs) + tuple(alt.allocs))


def _products(func) -> int:
    """Strassen products in a program: its zero-filled product temporaries."""
    return sum(1 for b in func.allocs if b.name.startswith("st_P"))


# ---------------------------------------------------------------------------
# recognition


@pytest.mark.parametrize("loops, body, a, b, roles", [
    ("for i, j, k in grid(4, 6, 8):", "C[i, j] += A[i, k] * B[k, j]",
     "A: f32[4, 8]", "B: f32[8, 6]", ("i", "j", "k", "A", "B")),
    # swapped operands, loops in another order
    ("for k, j, i in grid(8, 6, 4):", "C[i, j] += B[k, j] * A[i, k]",
     "A: f32[4, 8]", "B: f32[8, 6]", ("i", "j", "k", "A", "B")),
    # transposed B
    ("for i, j, k in grid(4, 6, 8):", "C[i, j] += A[i, k] * B[j, k]",
     "A: f32[4, 8]", "B: f32[6, 8]", ("i", "j", "k", "A", "B")),
    # transposed A, other names
    ("for p, q, r in grid(4, 6, 8):", "C[p, q] += A[r, p] * B[r, q]",
     "A: f32[8, 4]", "B: f32[8, 6]", ("p", "q", "r", "A", "B")),
    # C = C + A*B is += after normalisation
    ("for i, j, k in grid(4, 6, 8):", "C[i, j] = C[i, j] + A[i, k] * B[k, j]",
     "A: f32[4, 8]", "B: f32[8, 6]", ("i", "j", "k", "A", "B")),
])
def test_recognises_disguised_matmuls(loops, body, a, b, roles):
    mm = matmul.recognize(_nest(_mm(4, 6, 8, body, a, b, loops=loops)))
    assert mm is not None
    assert (mm.m.name, mm.n.name, mm.k.name, mm.a.buffer.name, mm.b.buffer.name) == roles
    assert (mm.m.extent, mm.n.extent, mm.k.extent) == (4, 6, 8)
    assert mm.scale is None and mm.batch == ()


def test_recognises_scale_and_batch():
    src = """
@prim_func
def f(A: f32[3, 4, 8], B: f32[3, 8, 6], C: f32[3, 4, 6]):
    for b, i, j, k in grid(3, 4, 6, 8):
        C[b, i, j] += 2.0 * (A[b, i, k] * -B[b, k, j])
"""
    mm = matmul.recognize(_nest(src))
    assert mm is not None
    assert [d.name for d in mm.batch] == ["b"]
    assert mm.scale is not None and mm.scale.value == -2.0
    assert mm.a.buffer.name == "A" and mm.k.name == "k"


def test_output_decides_which_operand_is_a():
    # C[j, i] = (A @ B)^T = B^T @ A^T: the operand holding C's first index is ``a``
    mm = matmul.recognize(_nest(_mm(4, 6, 8, "C[j, i] += A[i, k] * B[k, j]", c="C: f32[{N}, {M}]")))
    assert (mm.a.buffer.name, mm.m.name, mm.n.name) == ("B", "j", "i")


@pytest.mark.parametrize("body, a, b, c", [
    ("C[i, j] += A[i, k] * B[i, k]", "A: f32[4, 8]", "B: f32[4, 8]", "C: f32[4, 6]"),  # j nowhere
    ("C[i, j] += A[i, k] + B[k, j]", "A: f32[4, 8]", "B: f32[8, 6]", "C: f32[4, 6]"),  # not a product
    ("C[i, j] += A[i + k, 0] * B[k, j]", "A: f32[12, 1]", "B: f32[8, 6]", "C: f32[4, 6]"),  # conv
    ("C[i, j] += A[2 * i, k] * B[k, j]", "A: f32[8, 8]", "B: f32[8, 6]", "C: f32[4, 6]"),  # strided
    ("C[i, j] += A[i, k] * B[k, j] * B[k, j]", "A: f32[4, 8]", "B: f32[8, 6]", "C: f32[4, 6]"),
    ("C[i, j] += A[i, k] * B[k, k]", "A: f32[4, 8]", "B: f32[8, 8]", "C: f32[4, 6]"),  # diagonal
    ("C[i, j] += A[i, k] * B[i, j]", "A: f32[4, 8]", "B: f32[4, 6]", "C: f32[4, 6]"),  # k in A only
])
def test_rejects_non_matmuls(body, a, b, c):
    assert matmul.recognize(_nest(_mm(4, 6, 8, body, a, b, c))) is None


def test_rejects_elementwise_product():
    src = """
@prim_func
def f(A: f32[4, 8], B: f32[4, 8], C: f32[4]):
    for i, k in grid(4, 8):
        C[i] += A[i, k] * B[i, k]
"""
    assert matmul.recognize(_nest(src)) is None


# ---------------------------------------------------------------------------
# Strassen against the interpreter


@pytest.mark.skipif(not HOST_HAS_AVX2, reason="compiles AVX2 intrinsic calls")
@pytest.mark.parametrize("n, levels", [(32, 1), (34, 2)])
def test_strassen_compiled_matches_interpreter(n, levels):
    func = parse(matmul_source(n))
    result = tensorize(func, AVX2, strassen=levels)
    assert result.strassen_levels == levels
    assert _products(result.func) == sum(7 ** lv for lv in range(1, levels + 1))
    assert result.sites, "the products run on intrinsics"
    check = runtime.check(func, result.compile())
    assert check.ok, check.message


@pytest.mark.parametrize("n, levels", [(33, 1), (34, 1), (48, 2), (66, 1)])
def test_strassen_program_interpreted_matches_original(n, levels):
    func = parse(matmul_source(n))
    result = tensorize(func, AVX2, strassen=levels)
    assert result.strassen_levels == levels
    assert _products(result.func) == sum(7 ** lv for lv in range(1, levels + 1))
    _interp_equal(func, result.func)


def _interp_equal(func, result_func, rtol=1e-4):
    args = inputs.random_args(func, seed=1)
    want = interp.run(func, **{k: np.array(v, copy=True) for k, v in args.items()})
    got = interp.run(calls.expand_calls(result_func), **{k: np.array(v, copy=True) for k, v in args.items()})
    for buf in func.outputs:
        w, g = np.asarray(want[buf.name]), np.asarray(got[buf.name])
        if np.issubdtype(w.dtype, np.integer):
            assert np.array_equal(w, g), buf.name
        else:
            assert np.allclose(w, g, rtol=rtol, atol=rtol * np.abs(w).max()), buf.name


@pytest.mark.parametrize("src, levels, products", [
    # rectangular, all three extents odd, and a transposed, scaled, swapped disguise
    (_mm(37, 34, 41, "C[i, j] += 2.0 * (B[j, k] * A[i, k])", b="B: f32[{N}, {K}]"), 1, 7),
    # a range that does not start at 0
    (_mm(20, 20, 20, "C[i, j] += A[i, k] * B[k, j]", a="A: f32[{M}, {K}]",
         loops="for i, j, k in grid({M}, {N}, {K}):"), 2, 56),
    # batched
    ("@prim_func\ndef f(A: f32[2, 8, 6], B: f32[2, 6, 10], C: f32[2, 8, 10]):\n"
     "    for b, i, j, k in grid(2, 8, 10, 6):\n        C[b, i, j] += A[b, i, k] * B[b, k, j]\n", 1, 7),
    # integers: Strassen holds in any commutative ring, exactly
    (_mm(16, 16, 16, a="A: i32[{M}, {K}]", b="B: i32[{K}, {N}]", c="C: i32[{M}, {N}]"), 2, 56),
])
def test_strassen_interpreted_matches_original(src, levels, products):
    func = parse(src)
    parts = nests.items(nests.normalize(func))
    alt = strassen.rewrite(parts, levels, Names(b.name for b in func.buffers), strassen.FORCED_MIN_BLOCK)
    assert alt is not None
    assert sum(1 for b in alt.allocs if b.name.startswith("st_P")) == products
    out = _program(func, alt)
    _interp_equal(func, out)


def test_strassen_offset_ranges():
    src = """
@prim_func
def f(A: f32[24, 24], B: f32[24, 24], C: f32[24, 24]):
    for i in range(2, 22):
        for j in range(3, 21):
            for k in range(1, 23):
                C[i, j] += A[i, k] * B[k, j]
"""
    func = parse(src)
    result = tensorize(func, AVX2, strassen=1)
    assert result.strassen_levels == 1
    _interp_equal(func, result.func)


def test_forced_levels_go_as_deep_as_blocks_allow():
    func = parse(matmul_source(6))  # 6 -> 3, then 3 -> 1: below the smallest forced block
    alt = strassen.rewrite(nests.items(nests.normalize(func)), 2, Names(), strassen.FORCED_MIN_BLOCK)
    assert (alt.levels, alt.applied_levels, sum(1 for b in alt.allocs if b.name.startswith("st_P"))) == (2, 1, 7)
    _interp_equal(func, tensorize(func, AVX2, strassen=2).func)


def test_forced_levels_that_do_not_fit_leave_the_program_alone():
    func = parse(matmul_source(3))
    result = tensorize(func, AVX2, strassen=2)
    assert result.strassen_levels == 0 and _products(result.func) == 0


# ---------------------------------------------------------------------------
# numerics


def _higham_bound(n: int, levels: int) -> float:
    """Higham, Accuracy and Stability of Numerical Algorithms (2nd ed.), Thm 23.3: with
    recursion down to blocks of n0 = n / 2**levels multiplied conventionally,
    max|C - fl(C)| <= [(n/n0)**log2(12) * (n0**2 + 5*n0) - 5n] * u * max|A| * max|B|."""
    n0 = n / 2 ** levels
    return ((n / n0) ** np.log2(12) * (n0 ** 2 + 5 * n0) - 5 * n) if levels else n


@pytest.mark.parametrize("levels", [1, 2])
def test_strassen_error_within_bound(levels):
    n = 64
    func = parse(matmul_source(n))
    parts = nests.items(nests.normalize(func))
    alt = strassen.rewrite(parts, levels, Names(b.name for b in func.buffers), strassen.FORCED_MIN_BLOCK)
    prog = _program(func, alt)
    rng = np.random.default_rng(7)
    a = rng.uniform(-1, 1, (n, n)).astype(np.float32)
    b = rng.uniform(-1, 1, (n, n)).astype(np.float32)
    exact = a.astype(np.float64) @ b.astype(np.float64)
    got = interp.run(prog, A=a, B=b, C=np.zeros((n, n), np.float32))["C"].astype(np.float64)
    u = np.finfo(np.float32).eps / 2
    error = np.abs(got - exact).max()
    assert error <= _higham_bound(n, levels) * u * np.abs(a).max() * np.abs(b).max()
    # and within what --check allows today (tolerance from the original reduction length)
    assert error <= runtime.tolerance(func, "f32", exact)


# ---------------------------------------------------------------------------
# matmul algebra, decided by the cost model


def _only(name):
    (func,) = parse_file(GOLDEN / f"{name}.py").values()
    return func


def test_chain_reassociates_to_fewer_multiply_adds():
    from .test_tensorize import GOLDEN_ROWS  # the rows the golden programs are written on

    func = _only("matmul_chain")
    result = tensorize(func, GOLDEN_ROWS)
    assert any(b.name.startswith("mm_U") for b in result.func.allocs)
    assert (GOLDEN / "matmul_chain.expected").read_text() == result.script()
    _interp_equal(func, result.func)


def test_chain_kept_when_already_cheaper():
    # (A @ B) @ C with A: 8x48, B: 48x8, C: 8x48 costs 8*48*8 + 8*8*48; the other order far more
    src = """
@prim_func
def chain(A: f32[8, 48], B: f32[48, 8], C: f32[8, 48], D: f32[8, 48]):
    T = alloc(f32[8, 8])
    for i, j in grid(8, 8):
        T[i, j] = 0.0
        for k in range(48):
            T[i, j] += A[i, k] * B[k, j]
    for i, j in grid(8, 48):
        D[i, j] = 0.0
        for k in range(8):
            D[i, j] += T[i, k] * C[k, j]
"""
    func = parse(src)
    parts = nests.items(nests.normalize(func))
    assert matrices.alternatives(func, parts, Names()) == []


def test_chain_needs_a_private_temporary():
    # T is an output: reassociating would leave it unwritten
    src = """
@prim_func
def chain(A: f32[48, 8], B: f32[8, 48], C: f32[48, 16], T: f32[48, 48], D: f32[48, 16]):
    for i, j in grid(48, 48):
        T[i, j] = 0.0
        for k in range(8):
            T[i, j] += A[i, k] * B[k, j]
    for i, j in grid(48, 16):
        D[i, j] = 0.0
        for k in range(48):
            D[i, j] += T[i, k] * C[k, j]
"""
    func = parse(src)
    assert matrices.alternatives(func, nests.items(nests.normalize(func)), Names()) == []


def test_chain_needs_the_whole_temporary_read():
    # the second product reads 4 of T's 32 columns: T[:, :4] @ C is no regrouping of A @ B @ C
    src = """
@prim_func
def chain(A: f32[32, 2], B: f32[2, 32], C: f32[4, 2], D: f32[32, 2]):
    T = alloc(f32[32, 32])
    for i, j in grid(32, 32):
        T[i, j] = 0.0
        for k in range(2):
            T[i, j] += A[i, k] * B[k, j]
    for i, j in grid(32, 2):
        D[i, j] = 0.0
        for k in range(4):
            D[i, j] += T[i, k] * C[k, j]
"""
    func = parse(src)
    assert matrices.alternatives(func, nests.items(nests.normalize(func)), Names()) == []
    _interp_equal(func, tensorize(func, AVX2).func)


def test_distributivity_factors_a_shared_operand():
    func = _only("matmul_distribute")
    result = tensorize(func, AVX2)
    assert any(b.name.startswith("mm_S") for b in result.func.allocs)
    assert (GOLDEN / "matmul_distribute.expected").read_text() == result.script()
    _interp_equal(func, result.func)


def test_distributivity_on_the_left_operand():
    src = """
@prim_func
def dist(A1: f32[128, 16], A2: f32[128, 16], B: f32[16, 96], C: f32[128, 96]):
    for i, j in grid(128, 96):
        for k in range(16):
            C[i, j] += A1[i, k] * B[k, j]
        for k in range(16):
            C[i, j] += A2[i, k] * B[k, j]
"""
    func = parse(src)
    (alt,) = matrices.alternatives(func, nests.items(nests.normalize(func)), Names())
    assert alt.note == "C += A1 @ B + A2 @ B -> C += (A1 + A2) @ B"
    assert tensorize(func, AVX2).func.allocs  # the cost model takes it: 128*96*16 MACs saved
    _interp_equal(func, tensorize(func, AVX2).func)


def test_distributivity_not_taken_when_the_addition_costs_more():
    # two 24x128x32 products on the 6x16 kernel cost less than one plus a 32x128 addition
    src = (GOLDEN / "matmul_distribute.py").read_text().replace("96", "24")
    result = tensorize(parse(src), AVX2)
    assert not result.func.allocs


# ---------------------------------------------------------------------------
# auto: the cost model's decision


def _search(func, strassen="auto", budgets=Budgets(), library=AVX2):
    return Search({d.name: d for d in library}, Budget(), Names.of(func), True, strassen, budgets)


def test_auto_leaves_small_matmuls_alone():
    for n in (64, 256):
        func = parse(matmul_source(n))
        parts = nests.items(nests.normalize(func))
        assert strassen.spans(parts, Around(func), _search(func)) == []
        assert tensorize(func, AVX2).strassen_levels == 0


@pytest.mark.parametrize("blocks, off", [(8, {"padding"}), (8, set())])
def test_auto_takes_strassen_on_large_matmuls(blocks, off):
    # at 2048 the 6-row tile leaves 2 rows (2048 = 341 * 6 + 2): padded to 2052 or blocked
    # with the rows in place, the plain product is cheaper than a level (measured 221 against
    # 276 ms on an AVX-512 Xeon, one thread, padded; on Zen 3, in place, a level took 1.00-1.06
    # of the plain time); at 4096 a level pays
    n = blocks * strassen.AUTO_MIN_BLOCK
    result = tensorize(parse(matmul_source(n)), AVX2, rules_off=off)
    assert result.strassen_levels >= 1


# ---------------------------------------------------------------------------
# auto: each product's level count, chosen by the one extraction (rules/choose.py)
#
# Without intrinsics a level pays from about n = 64 by the cost model (the scalar product's
# multiply-adds against the block additions); with AUTO_MIN_BLOCK at 4 the products below
# admit two or three levels, so these programs stay small enough to compile and check.


def _batched(n: int, out: str = "C", a: str = "A", b: str = "B") -> str:
    return (f"    for b, i, j, k in grid(2, {n}, {n}, {n}):\n"
            f"        {out}[b, i, j] += {a}[b, i, k] * {b}[b, k, j]\n")


def _bmm(n: int) -> str:
    return (f"@prim_func\ndef bmm(A: f32[2, {n}, {n}], B: f32[2, {n}, {n}], C: f32[2, {n}, {n}]):\n"
            + _batched(n))


def _level_shapes(result) -> Counter:
    """Strassen products by shape: 7 of half the size per level of each product."""
    return Counter(b.shape for b in result.func.allocs if b.name.startswith("st_P"))


def _compiled_equal(func, result) -> None:
    """``result`` compiled and compared with the interpreter (NaN and Inf among the inputs:
    the guard keeps their pattern)."""
    check = runtime.check(func, result.compile())
    assert check.ok, check.message


def test_two_batched_products_take_each_its_own_level_count(monkeypatch):
    monkeypatch.setattr(strassen, "AUTO_MIN_BLOCK", 4)
    func = parse("@prim_func\ndef two(A: f32[2, 128, 128], B: f32[2, 128, 128], C: f32[2, 128, 128], "
                 "X: f32[2, 96, 96], Y: f32[2, 96, 96], Z: f32[2, 96, 96]):\n"
                 + _batched(128) + _batched(96, "Z", "X", "Y"))
    parts = nests.items(nests.normalize(func))
    assert [strassen.max_levels(matmul.recognize(p), 4) for p in parts] == [5, 4]
    result = tensorize(func, [])
    # two levels on the 128 product, one on the 96 product
    assert _level_shapes(result) == {(2, 64, 64): 7, (2, 32, 32): 49, (2, 48, 48): 7}
    assert result.strassen_levels == 2 and dict(result.choice.taken) == {"strassen": 2}
    assert dict(result.choice.offered) == {"strassen": 4}  # 1 and 2 levels each (budget: 100)
    # one level count for every product, as alternatives of the whole program gave: dearer
    for levels in (1, 2):
        assert result.cost < tensorize(func, [], strassen=levels).cost
    _compiled_equal(func, result)


SCALED_BATCH = """
@prim_func
def scaled(W: f32[2, 96, 96], A: f32[2, 96, 96], B: f32[2, 96, 96], C: f32[2, 96, 96]):
    for b, i, j, k in grid(2, 96, 96, 96):
        C[b, i, j] += W[b, i, j] * A[b, i, k] * B[b, k, j]
"""

TRANSPOSED_COPY_BATCH = """
@prim_func
def tcopy(At: f32[2, 96, 96], B: f32[2, 96, 96], C: f32[2, 96, 96]):
    T = alloc(f32[2, 96, 96])
    for b, i, k in grid(2, 96, 96):
        T[b, i, k] = At[b, k, i]
    for b, i, j, k in grid(2, 96, 96, 96):
        C[b, i, j] += T[b, i, k] * B[b, k, j]
"""


@pytest.mark.parametrize("src, taken, alone, temps", [
    # a runtime scale factor taken out (the product into the temporary sc_T_0, behind the
    # factor's guard), then a level on that product, on the guard's fast path
    (SCALED_BATCH, {"scalar-factor": 1, "strassen": 1}, [{"strassen"}, {"scalar-factor", "contract"}],
     {"sc_T_0"}),
    # a transposed copy inlined into the product (a rewrite of the whole function: the copy T
    # is gone), then a level on the product that reads the copy's source in place
    (TRANSPOSED_COPY_BATCH, {"inline": 1, "strassen": 1}, [{"strassen"}, {"inline"}], set()),
], ids=["scale-factor", "inline"])
def test_a_level_composes_with_another_family_in_the_one_extraction(monkeypatch, src, taken,
                                                                      alone, temps):
    monkeypatch.setattr(strassen, "AUTO_MIN_BLOCK", 4)
    func = parse(src)
    result = tensorize(func, [])
    assert dict(result.choice.taken) == taken and result.strassen_levels == 1
    assert _level_shapes(result) == {(2, 48, 48): 7}
    assert {b.name for b in result.func.allocs if not b.name.startswith("st_")} == temps
    for off in alone:  # either family alone: dearer
        assert result.cost < tensorize(func, [], rules_off=off).cost
    _compiled_equal(func, result)


def test_the_products_budget_stops_deeper_levels(monkeypatch):
    monkeypatch.setattr(strassen, "AUTO_MIN_BLOCK", 4)
    func = parse(_bmm(128))
    full = tensorize(func, [])
    assert full.strassen_levels == 2 and dict(full.choice.offered) == {"strassen": 2}
    # two levels make 49 products, past 48: only one level is offered, and taken
    capped = tensorize(func, [], budgets=Budgets(strassen_products=48))
    assert capped.strassen_levels == 1 and dict(capped.choice.offered) == {"strassen": 1}
    assert _level_shapes(capped) == {(2, 64, 64): 7}
    none = tensorize(func, [], budgets=Budgets(strassen_products=6))
    assert none.strassen_levels == 0 and none.choice.offered == ()
    _compiled_equal(func, capped)


def test_forced_levels_apply_where_the_cost_model_refuses_them(monkeypatch):
    monkeypatch.setattr(strassen, "AUTO_MIN_BLOCK", 4)
    func = parse(_bmm(32))
    auto = tensorize(func, [])
    assert dict(auto.choice.offered) == {"strassen": 2} and auto.strassen_levels == 0  # refused
    forced = tensorize(func, [], strassen=1)
    assert forced.strassen_levels == 1 and _level_shapes(forced) == {(2, 16, 16): 7}
    assert forced.cost > auto.cost
    # the family turned off turns its forced levels off too
    assert tensorize(func, [], strassen=1, rules_off={"strassen"}).strassen_levels == 0
    _compiled_equal(func, forced)


@pytest.mark.parametrize("body, a, b, note", [
    ("C[i, j] += A[i, k] * B[j, k]", "A: f32[12, 8]", "B: f32[16, 8]", "B read as B[j, k] -> copied to Bt[k, j]"),
    ("C[i, j] += 3.0 * A[k, i] * B[k, j]", "A: f32[8, 12]", "B: f32[8, 16]", "A read as A[k, i] -> copied to At[i, k]"),
])
def test_transposed_operand_copied_into_the_intrinsic_layout(body, a, b, note):
    src = f"@prim_func\ndef f({a}, {b}, C: f32[12, 16]):\n    for i, j, k in grid(12, 16, 8):\n        {body}\n"
    func = parse(src)
    (alt,) = matmul.transposes(func, nests.items(nests.normalize(func)), Names())
    assert alt.note == note
    (nest,) = [p for p in alt.parts if isinstance(p, nests.AccNest)]
    mm = matmul.recognize(nest)
    assert [v for v, _ in mm.a.slots] == [mm.m.name, mm.k.name]
    assert [v for v, _ in mm.b.slots] == [mm.k.name, mm.n.name]
    out = _program(func, alt)
    _interp_equal(func, out)


def test_a_fused_dense_layer_takes_a_level_under_its_epilogue():
    # dense + bias + relu: the product is split by a level, the epilogue reads what the
    # level's blocks accumulated, and the whole equals the layer as written
    src = """
@prim_func
def dense(X: f32[64, 32], W: f32[32, 48], b: f32[48], Y: f32[64, 48]):
    for i, j in grid(64, 48):
        Y[i, j] = 0.0
        for k in range(32):
            Y[i, j] += X[i, k] * W[k, j]
        Y[i, j] = max(Y[i, j] + b[j], 0.0)
"""
    func = parse(src)
    result = tensorize(func, AVX2, strassen=1)
    assert result.strassen_levels == 1
    assert sum(1 for b in result.func.allocs if b.name.startswith("st_P")) == 7
    assert "max(" in result.script()
    _interp_equal(func, result.func)
    assert runtime.check(func, runtime.compile(result.func)).ok
