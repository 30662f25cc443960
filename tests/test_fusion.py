"""Producer inlining (rules/fusion.py): results kept, legality, and the cost model's choice."""

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, strategies as st

import intrinsics
from rewrite import nests, runtime
from rewrite.inputs import random_args
from rewrite.interp import run
from rewrite.pipeline import tensorize
from rewrite.rules.fusion import candidates, inline_producers
from rewrite.script import parse, parse_file, show
from rewrite.verify import verify

ROOT = Path(__file__).parent.parent
FUSION = parse_file(ROOT / "corpus" / "fusion.py")
AVX2 = intrinsics.library("x86-avx2")
HOST_HAS_AVX2 = {"avx2", "fma"} <= intrinsics.host_features()


def _same_results(a, b, seed=1):
    args = random_args(a, seed)
    got, want = run(b, **args), run(a, **args)
    for name, arr in want.items():
        np.testing.assert_allclose(got[name], arr, rtol=1e-6, atol=1e-6, err_msg=name)


# ---------------------------------------------------------------------------
# the corpus


@pytest.mark.parametrize("name", sorted(FUSION))
def test_inlining_keeps_the_interpreters_results(name):
    func = FUSION[name]
    for f in (func, nests.normalize(func)):
        out = inline_producers(f)
        verify(out)
        _same_results(f, out)


def test_widened_operands_are_inlined_and_temporaries_dropped():
    out = inline_producers(FUSION["qdense_widened"])
    assert out.allocs == ()
    assert "C[i, j] += i32(A[i, k]) * i32(B[k, j])" in show(out)


def test_widened_int8_product_runs_on_the_dot_intrinsic():
    func = FUSION["qdense_widened"]
    result = tensorize(func, AVX2)
    # the exact u8 x i8 -> i32 rows: the dot, or its two-row tile
    sites = {s.intrinsic for s in result.sites}
    assert sites and sites <= {"x86.dot.u8i8i32.16x4", "x86.mm.u8i8i32.2x16x4"}
    assert result.coverage == 1.0
    assert not {"Ai", "Bi"} & {b.name for b in result.func.allocs}  # gone with their producers
    if HOST_HAS_AVX2:
        check = runtime.check(func, result.compile())
        assert check.ok, check.message


def test_prescaled_input_becomes_a_scaled_product():
    func = FUSION["gemm_prescaled"]
    result = tensorize(func, AVX2)
    assert "As" not in {b.name for b in result.func.allocs}
    assert "x86.mm.f32.6x16x1" in {s.intrinsic for s in result.sites}
    assert "0.5 *" in show(result.func)
    if HOST_HAS_AVX2:
        check = runtime.check(func, result.compile())
        assert check.ok, check.message


def test_input_updated_in_between_is_not_inlined():
    func = FUSION["gemm_input_updated"]
    assert candidates(nests.normalize(func)) == []
    assert inline_producers(func) is func
    result = tensorize(func, AVX2)
    assert "As" in {b.name for b in result.func.allocs}
    if HOST_HAS_AVX2:
        check = runtime.check(func, result.compile())
        assert check.ok, check.message


def test_expensive_shared_producer_is_legal_but_does_not_pay():
    func = FUSION["gemm_exp_shared"]
    assert candidates(nests.normalize(func)) == ["X"]
    result = tensorize(func, AVX2)
    assert "X" in {b.name for b in result.func.allocs}
    assert "X[i, k] = exp(A[i, k])" in show(result.func)
    assert result.coverage >= 0.9
    if HOST_HAS_AVX2:
        check = runtime.check(func, result.compile())
        assert check.ok, check.message


# ---------------------------------------------------------------------------
# legality


def _f(body: str, params: str = "A: f32[8], C: f32[8]", allocs: str = "T = alloc(f32[8])"):
    lines = allocs.splitlines()
    lines += body.strip("\n").splitlines()
    text = "@prim_func\ndef f(" + params + "):\n" + "\n".join("    " + l for l in lines) + "\n"
    return parse(text)


def _inlined(func) -> bool:
    out = inline_producers(func)
    verify(out)
    _same_results(func, out)
    return out != func


def test_plain_producer_is_inlined():
    func = _f("""
for i in range(8):
    T[i] = A[i] * 2.0
for i in range(8):
    C[i] = T[i] + 1.0
""")
    out = inline_producers(func)
    assert show(out).endswith("for i in range(8):\n        C[i] = A[i] * 2.0 + 1.0\n")
    assert out.allocs == ()
    assert _inlined(func)


def test_not_inlined_when_the_buffer_is_a_parameter():
    func = _f("""
for i in range(8):
    T[i] = A[i] * 2.0
for i in range(8):
    C[i] = T[i] + 1.0
""", params="A: f32[8], T: f32[8], C: f32[8]", allocs="")
    assert not _inlined(func)
    assert candidates(func) == []


def test_not_inlined_when_the_temporary_is_written_twice():
    func = _f("""
for i in range(8):
    T[i] = A[i] * 2.0
for i in range(4):
    T[i] = 0.0
for i in range(8):
    C[i] = T[i] + 1.0
""")
    assert not _inlined(func)


def test_not_inlined_when_an_input_is_written_in_between():
    func = _f("""
for i in range(8):
    T[i] = A[i] * 2.0
for i in range(8):
    A[i] = 3.0
for i in range(8):
    C[i] = T[i] + 1.0
""")
    assert not _inlined(func)


def test_not_inlined_when_a_consumer_writes_an_input():
    # A[i + 1] = T[i] inlined would read the A it has just written: a recurrence
    func = _f("""
for i in range(8):
    T[i] = A[i] * 2.0
for i in range(7):
    A[i + 1] = T[i]
""", params="A: f32[8]")
    assert not _inlined(func)


def test_not_inlined_when_the_producer_reads_the_temporary():
    func = _f("""
for i in range(8):
    T[i] = A[i] * T[7 - i]
for i in range(8):
    C[i] = T[i] + 1.0
""")
    assert not _inlined(func)


def test_not_inlined_when_read_before_the_producer():
    func = _f("""
for i in range(8):
    C[i] = T[i]
for i in range(8):
    T[i] = A[i] * 2.0
for i in range(8):
    C[i] = C[i] * T[i]
""")
    assert not _inlined(func)


def test_not_inlined_when_the_producer_covers_part_of_the_temporary():
    func = _f("""
for i in range(8):
    T[i] = 0.0
for i in range(4):
    T[i] = A[i]
for i in range(8):
    C[i] = T[i]
""")
    assert not _inlined(func)


def test_not_inlined_when_an_index_is_not_a_shifted_loop_variable():
    func = _f("""
for i in range(4):
    T[2 * i] = A[i]
    T[2 * i + 1] = A[i]
for i in range(8):
    C[i] = T[i]
""")
    assert not _inlined(func)


def test_shifted_and_permuted_producers_are_inlined():
    func = _f("""
for i in range(1, 9):
    for j in range(4):
        T[j, i - 1] = A[i - 1, j] + 1.0
for i, j in grid(8, 4):
    C[i, j] = T[j, i] * T[3 - j, i]
""", params="A: f32[8, 4], C: f32[8, 4]", allocs="T = alloc(f32[4, 8])")
    out = inline_producers(func)
    assert "C[i, j] = (A[i, j] + 1.0) * (A[i, 3 - j] + 1.0)" in show(out)
    assert _inlined(func)


def test_a_chain_of_producers_is_inlined_through():
    func = _f("""
for i in range(8):
    T[i] = A[i] * 2.0
for i in range(8):
    U[i] = T[i] + 1.0
for i in range(8):
    C[i] = U[i] * U[i]
""", allocs="T = alloc(f32[8])\nU = alloc(f32[8])")
    out = inline_producers(func)
    assert out.allocs == ()
    assert "C[i] = (A[i] * 2.0 + 1.0) * (A[i] * 2.0 + 1.0)" in show(out)
    assert _inlined(func)


def test_only_names_the_producers_to_inline():
    func = _f("""
for i in range(8):
    T[i] = A[i] * 2.0
for i in range(8):
    U[i] = A[i] + 1.0
for i in range(8):
    C[i] = T[i] * U[i]
""", allocs="T = alloc(f32[8])\nU = alloc(f32[8])")
    out = inline_producers(func, only={"U"})
    assert [b.name for b in out.allocs] == ["T"]
    _same_results(func, out)


def test_items_are_inlined_given_the_temporaries():
    func = nests.normalize(FUSION["qdense_widened"])
    parts = nests.items(func)
    assert inline_producers(parts, temporaries=()) == parts
    out = inline_producers(parts, temporaries={"Ai", "Bi"})
    assert len(out) == 2 and isinstance(out[1], nests.AccNest)
    with pytest.raises(ValueError):
        inline_producers(parts)


# ---------------------------------------------------------------------------
# a property: on random producer / consumer programs inlining keeps every result


_VALUES = ("{a}", "2.0 * {a}", "{a} * {a} + 1.0", "max({a}, 0.0)", "abs({a}) - B[{i0}]")
_BETWEEN = ("", "A[i, j] = 0.5", "B[i] = 1.0", "T[i, j] = 0.0", "C[i, j] = {t} + 1.0")
_CONSUMERS = ("C[i, j] = {t} * 2.0", "C[i, j] += {t}", "D[i] += {t} * {t2}",
              "C[i, j] = select(i > j, {t}, 0.0)")


def _shift(v: str, s: int) -> str:
    return v if s == 0 else f"{v} + {s}" if s > 0 else f"{v} - {-s}"


@st.composite
def producer_consumer(draw):
    """``T[u + su, w + sw] = e(A[u + su, w + sw])`` over exactly T's shape (or T transposed),
    maybe a statement writing A, B, T or C, then one or two nests reading T, some of them
    reversed; T a temporary or a parameter."""
    n, m = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    su, sw = draw(st.integers(-2, 2)), draw(st.integers(-2, 2))
    swap = draw(st.booleans())
    a_idx = f"{_shift('u', su)}, {_shift('w', sw)}"
    t_idx = f"{_shift('w', sw)}, {_shift('u', su)}" if swap else a_idx
    t_shape = (m, n) if swap else (n, m)
    value = draw(st.sampled_from(_VALUES)).format(a=f"A[{a_idx}]", i0=_shift("u", su))
    lines = [f"for u in range({-su}, {n - su}):",
             f"    for w in range({-sw}, {m - sw}):",
             f"        T[{t_idx}] = {value}"]

    def t_at(i: str, j: str) -> str:  # T's element for A's element (i, j)
        return f"T[{j}, {i}]" if swap else f"T[{i}, {j}]"

    between = draw(st.sampled_from(_BETWEEN))
    if between:
        rows, cols = t_shape if between.startswith("T") else (n, m)
        lines += [f"for i, j in grid({rows}, {cols}):", "    " + between.format(t=t_at("i", "j"))]
    for _ in range(draw(st.integers(1, 2))):
        t = t_at(f"{n - 1} - i", "j") if draw(st.booleans()) else t_at("i", "j")
        consumer = draw(st.sampled_from(_CONSUMERS))
        lines += [f"for i, j in grid({n}, {m}):",
                  "    " + consumer.format(t=t, t2=t_at("i", f"{m - 1} - j"))]
    params = [f"A: f32[{n}, {m}]", f"B: f32[{n}]", f"C: f32[{n}, {m}]", f"D: f32[{n}]"]
    temp = draw(st.booleans())
    if temp:
        lines.insert(0, f"T = alloc(f32[{t_shape[0]}, {t_shape[1]}])")
    else:
        params.append(f"T: f32[{t_shape[0]}, {t_shape[1]}]")
    return parse("@prim_func\ndef f(" + ", ".join(params) + "):\n"
                 + "".join(f"    {l}\n" for l in lines))


@given(producer_consumer(), st.integers(0, 3))
def test_inlining_keeps_results_on_random_programs(func, seed):
    for f in (func, nests.normalize(func)):
        out = inline_producers(f)
        verify(out)
        _same_results(f, out, seed)
        if "T" not in {b.name for b in f.allocs}:
            assert out is f  # a parameter is never inlined away
