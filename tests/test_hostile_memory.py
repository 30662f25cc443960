"""No kernel reads or writes outside its arguments, and the compiled code means what the
interpreter means.

Two ways a verified program used to escape: index arithmetic that wraps in 64 bits (the bound
check computed with exact integers), and intrinsic calls whose windows alias (the emitters load
a block, compute and store it, where the semantics go element by element). Both are refused
now, with one located line. The property tests place guard zones around every argument and
check that running the kernel leaves them as they were.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import intrinsics
from rewrite import runtime
from rewrite.inputs import random_args
from rewrite.interp import run
from rewrite.ir import INDEX, Binary, Buffer, Call, Const, For, Load, PrimFunc, Store, Var, Window, numpy_dtype
from rewrite.pipeline import tensorize
from rewrite.script import ScriptError, parse, parse_all, parse_file
from rewrite.verify import VerifyError, index_overflow, verify

from .strategies import programs
from .test_codegen import _exact, assert_same

ROOT = Path(__file__).parent.parent
MAX = 9223372036854775807


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TENSORIZE_CACHE_DIR", str(tmp_path / "cache"))


def refusal(src: str) -> str:
    with pytest.raises(ScriptError) as e:
        parse(src, "t.py")
    return str(e.value)


# ---------------------------------------------------------------------------
# 1. index arithmetic: the bound check and the wrapping code must agree


def test_wrapping_floor_division_index_is_refused():
    # accepted before (exactly: 2**63 // 2**23 - 2**40 == 0) and it segfaulted: in 64 bits
    # i + MAX + 1 wraps to -2**63, and the store landed 2**41 elements before B
    msg = refusal("""
@prim_func
def f(A: f32[1], B: f32[1]):
    for i in range(1):
        B[(i + 9223372036854775807 + 1) // 8388608 - 1099511627776] = A[0]
""")
    assert msg == ("t.py:5:12: index (i + 9223372036854775807 + 1) // 8388608 - 1099511627776 of B "
                   "computes i + 9223372036854775807 + 1, which can reach "
                   "9223372036854775808..9223372036854775808: index arithmetic must stay within "
                   "the 64-bit range")


def test_wrapping_modulo_index_is_refused():
    # exactly 2**63 % 5 - 3 == 0, in 64 bits (-2**63) % 5 - 3 == -1: B[-1] is big[0] for a
    # view B = big[1:3]
    msg = refusal("""
@prim_func
def f(A: f32[2], B: f32[2]):
    for i in range(1):
        B[(i + 9223372036854775807 + 1) % 5 - 3] = A[i]
""")
    assert msg.startswith("t.py:5:12: index (i + 9223372036854775807 + 1) % 5 - 3 of B computes "
                          "i + 9223372036854775807 + 1, which can reach")
    assert "\n" not in msg


@pytest.mark.parametrize("line, where, words", [
    # an intermediate sum past the top, though the final index is 0
    ("B[i + 9223372036854775807 - 9223372036854775807] = A[0]", "5:11", "i + 9223372036854775807"),
    # a product past the top inside the operand of %
    ("B[(4611686018427387904 * (i + 1)) % 2] = A[0]", "5:12", "4611686018427387904 * (i + 1)"),
    # the same on a load
    ("B[0] = A[(i + 9223372036854775807) // 9223372036854775807]", "5:19", "i + 9223372036854775807"),
    # a literal that is no i64 at all
    ("B[i + 9223372036854775808] = A[0]", "5:15", "the literal 9223372036854775808 does not fit i64"),
    ("B[i - 9223372036854775809] = A[0]", "5:15", "does not fit i64"),
])
def test_index_values_past_64_bits_are_refused(line, where, words):
    msg = refusal(f"""
@prim_func
def f(A: f32[2], B: f32[2]):
    for i in range(2):
        {line}
""")
    assert msg.startswith(f"t.py:{where}: ") and words in msg and "\n" not in msg


def test_negation_of_the_smallest_value_is_refused():
    msg = refusal("""
@prim_func
def f(A: f32[1], B: f32[1]):
    for i in range(-9223372036854775808, -9223372036854775807):
        B[-i - 9223372036854775807 - 1] = A[0]
""")
    assert msg.startswith("t.py:5:11: ") and "computes -i, which can reach 9223372036854775808" in msg


def test_loop_bounds_past_64_bits_are_refused():
    # the loop counter reaches ``stop``: range(.., 2**63) would wrap it
    msg = refusal("""
@prim_func
def f(A: f32[1], B: f32[2]):
    for i in range(9223372036854775806, 9223372036854775808):
        B[i - 9223372036854775806] = A[0]
""")
    assert msg == ("t.py:4:41: a loop bound must fit i64 (-9223372036854775808..9223372036854775807); "
                   "the literal 9223372036854775808 does not")
    # a program built through the API, which no parser saw, meets the verifier's own check
    f = parse("@prim_func\ndef f(A: f32[1], B: f32[2]):\n    for i in range(2):\n        B[i] = A[0]\n")
    loop = f.body if isinstance(f.body, For) else f.body.stmts[0]
    wide = For(loop.var, 2**63 - 2, 2**63, loop.body)
    with pytest.raises(VerifyError, match="must lie within the 64-bit range"):
        verify(PrimFunc(f.name, f.params, wide, f.allocs))


def test_large_values_that_never_wrap_are_accepted_and_agree():
    # every intermediate value fits: the compiled code and the interpreter agree with the check
    f = parse("""
@prim_func
def f(A: f32[4], B: f32[4]):
    for i in range(9223372036854775803, 9223372036854775807):
        B[(i - 9223372036854775803) % 4] = A[3 - (9223372036854775806 - i) // 1]
""")
    a = np.arange(4, dtype=np.float32)
    want = run(f, A=a)["B"]
    got = np.zeros(4, np.float32)
    runtime.compile(f, threads=1)(A=a, B=got)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got, a)


def test_index_overflow_reports_the_innermost_offender():
    i = Var("i")
    e = Binary("//", Binary("+", Binary("+", i, Const(MAX, INDEX)), Const(1, INDEX)), Const(8, INDEX))
    from rewrite.verify import Interval

    sub, r = index_overflow(e, {"i": Interval(0, 0)})
    assert sub == e.a and (r.lo, r.hi) == (MAX + 1, MAX + 1)
    assert index_overflow(e, {"i": Interval(-1, -1)}) is None


def test_compile_refuses_an_unverified_program_before_running_anything():
    # a program built by hand, never parsed: compile checks it as the parser does
    a, b = Buffer("A", "f32", (1,)), Buffer("B", "f32", (1,))
    i = Var("i")
    idx = Binary("-", Binary("//", Binary("+", Binary("+", i, Const(MAX, INDEX)), Const(1, INDEX)),
                             Const(8388608, INDEX)), Const(1099511627776, INDEX))
    f = PrimFunc("f", (a, b), For("i", 0, 1, Store(b, (idx,), Load(a, (Const(0, INDEX),)))))
    with pytest.raises(VerifyError, match="64-bit range"):
        runtime.compile(f, threads=1)


# ---------------------------------------------------------------------------
# 5. intrinsic calls: what the emitters cannot honour is refused


FMA = 'call("x86.fma.f32x8", c={c}, a={a}, b={b})'


def fma_program(c: str, a: str, b: str = "window(B[0], (1,))", loop: str = "") -> str:
    body = FMA.format(c=c, a=a, b=b)
    if loop:
        body = f"{loop}\n        {body}"
    return f"""
@prim_func
def f(A: f32[32], B: f32[32], C: f32[32]):
    {body}
"""


def test_output_window_overlapping_an_input_window_is_refused():
    msg = refusal(fma_program("window(C[1], (1,))", "window(C[0], (1,))"))
    assert msg == ("t.py:4:51: operand a of x86.fma.f32x8 overlaps the output c on C: windows may share "
                   "an element only where one step of the intrinsic both reads and writes it")


def test_output_window_with_step_zero_is_refused():
    msg = refusal(fma_program("window(C[0], (0,))", "window(A[0], (1,))"))
    assert msg == ("t.py:4:29: the output window of x86.fma.f32x8 on C gives two of its elements one "
                   "address (steps (0,)): each output element needs its own")


def test_output_window_folding_onto_itself_is_refused():
    # steps (1, 0) and (0, 1) on a [6, 16] output over a buffer whose rows are 8 wide: row i+1
    # starts where column 8 of row i is
    msg = refusal("""
@prim_func
def f(A: f32[6, 1], B: f32[1, 16], C: f32[16, 8]):
    call("x86.mm.f32.6x16x1", c=window(C[0, 0], (1, 0), (0, 0)), a=window(A[0, 0], (1, 0), (0, 1)), b=window(B[0, 0], (1, 0), (0, 1)))
""")
    assert msg.startswith("t.py:4:33: the output window of x86.mm.f32.6x16x1 on C gives two")


def test_overlap_depending_on_the_loop_is_decided_exactly():
    # a at C[8 * (3 - j)], c at C[8 * j]: distinct blocks for every j, though their hulls meet
    ok = fma_program("window(C[8 * j], (1,))", "window(C[24 - 8 * j], (1,))",
                     loop="for j in range(4):")
    parse(ok)
    # a at C[13 - 4 * j]: at j = 1, a[i] is c[i + 1]
    bad = fma_program("window(C[8 * j], (1,))", "window(C[13 - 4 * j], (1,))",
                      loop="for j in range(3):")
    assert "operand a of x86.fma.f32x8 overlaps the output c on C" in refusal(bad)


@pytest.mark.parametrize("c, a", [
    # even elements written, odd elements read: one buffer, no shared address
    ("window(C[0], (2,))", "window(C[1], (2,))"),
    # c[i] += c[i] * b[i]: each shared element is read and written by one step only
    ("window(C[3], (1,))", "window(C[3], (1,))"),
], ids=["interleaved", "same"])
def test_windows_sharing_a_buffer_safely_are_accepted_and_agree(c, a):
    f = parse(fma_program(c, a))
    a_, b_, c_ = (np.arange(32, dtype=np.float32) % 5 - 2 for _ in range(3))
    want = run(f, A=a_, B=b_, C=c_)["C"]
    got = c_.copy()
    runtime.compile(f, threads=1)(A=a_, B=b_, C=got)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("c, a", [
    ("window(C[0], (1,))", "window(C[7], (-1,))"),  # a[i] is c[7 - i]: read and written at two steps
    ("window(C[0], (1,))", "window(C[1], (1,))"),   # a[i] is c[i + 1]: read before it is written
])
def test_windows_sharing_elements_across_steps_are_refused(c, a):
    assert "operand a of x86.fma.f32x8 overlaps the output c on C" in refusal(fma_program(c, a))


def test_a_broadcast_input_on_an_output_element_is_refused():
    # axpy reads a[0] at every step; C[7] is written at step 7 only
    msg = refusal("""
@prim_func
def f(B: f32[8], C: f32[8]):
    call("x86.axpy.f32x8", c=window(C[0], (1,)), a=window(C[7], (0,)), b=window(B[0], (1,)))
""")
    assert msg.startswith("t.py:4:52: operand a of x86.axpy.f32x8 overlaps the output c on C")


def test_window_step_past_64_bits_is_refused():
    msg = refusal("""
@prim_func
def f(A: f32[1], B: f32[8], C: f32[8]):
    call("x86.axpy.f32x8", c=window(C[0], (1,)), a=window(A[0], (9223372036854775808,)), b=window(B[0], (1,)))
""")
    assert msg.startswith("t.py:4:66: a step of a window on A must fit i64")


def test_cli_reports_each_bad_function_on_one_line_and_compiles_the_rest(tmp_path):
    src = tmp_path / "hostile.py"
    src.write_text("""
@prim_func
def wraps(A: f32[1], B: f32[1]):
    for i in range(1):
        B[(i + 9223372036854775807 + 1) // 8388608 - 1099511627776] = A[0]

@prim_func
def overlaps(A: f32[32], B: f32[32], C: f32[32]):
    call("x86.fma.f32x8", c=window(C[1], (1,)), a=window(C[0], (1,)), b=window(B[0], (1,)))

@prim_func
def folds(A: f32[32], B: f32[32], C: f32[32]):
    call("x86.fma.f32x8", c=window(C[0], (0,)), a=window(A[0], (1,)), b=window(B[0], (1,)))

@prim_func
def fine(A: f32[8], B: f32[8]):
    for i in range(8):
        B[i] = A[7 - i]
""")
    p = subprocess.run([sys.executable, "-m", "rewrite.cli", "run", str(src), "--target", "none", "--check"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 2
    assert "Traceback" not in p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert [ln.split(": ", 1)[0] for ln in lines] == [f"{src}:5:12", f"{src}:9:51", f"{src}:13:29"]
    assert "hostile.py::fine" in p.stdout and "1 of 4 functions compiled, 1 of 1 checks passed" in p.stdout


# ---------------------------------------------------------------------------
# guard zones: every argument is a view into a larger array whose margins hold a sentinel


SENTINELS = (0xFF, 0x7F, 0xA5)  # NaN / -1, huge / 127, an arbitrary pattern


class Guarded:
    """Each array in ``args`` copied into the middle of a byte buffer with ``before`` and
    ``after`` sentinel bytes around it (``before`` need not be a multiple of the element
    size: kernels accept any alignment)."""

    def __init__(self, args: dict[str, np.ndarray], before: int, after: int, fill: int):
        self.raw, self.views, self.spans = {}, {}, {}
        for name, a in args.items():
            raw = np.full(before + a.nbytes + after, fill, np.uint8)
            view = np.ndarray(a.shape, a.dtype, raw.data, before)
            view[...] = a
            self.raw[name], self.views[name], self.spans[name] = raw, view, (before, before + a.nbytes)
        self.fill = fill

    def assert_intact(self, where: str) -> None:
        for name, raw in self.raw.items():
            lo, hi = self.spans[name]
            for part, zone in (("before", raw[:lo]), ("after", raw[hi:])):
                bad = np.flatnonzero(zone != self.fill)
                assert bad.size == 0, f"{where}: {bad.size} guard bytes {part} {name} changed"


def run_guarded(func: PrimFunc, args: dict[str, np.ndarray], before: int, after: int, fill: int,
                threads: int = 1) -> dict[str, np.ndarray]:
    g = Guarded(args, before, after, fill)
    runtime.compile(func, threads=threads)(**g.views)
    g.assert_intact(func.name)
    return {name: np.array(v) for name, v in g.views.items()}


def test_guard_zones_catch_a_write_one_element_before_a_buffer(monkeypatch):
    # the harness itself: with the verifier bypassed, B[i - 1] at i = 0 lands in the margin
    monkeypatch.setattr(runtime, "verify", lambda f: f)
    a, b = Buffer("A", "f32", (2,)), Buffer("B", "f32", (2,))
    i = Var("i")
    f = PrimFunc("stray", (a, b), For("i", 0, 2, Store(b, (Binary("-", i, Const(1, INDEX)),), Load(a, (i,)))))
    with pytest.raises(AssertionError, match="guard bytes before B changed"):
        run_guarded(f, {"A": np.ones(2, np.float32), "B": np.zeros(2, np.float32)}, 8, 8, 0xA5)


guards = st.tuples(st.integers(1, 64), st.integers(1, 64), st.sampled_from(SENTINELS))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs(max_nest=2), guards)
def test_random_programs_stay_inside_their_arguments(func, guard):
    args = random_args(func, seed=4)
    want = run(func, **args)
    got = run_guarded(func, args, *guard)
    assert_same(func, want, got, exact=_exact(func))


GOLDEN = sorted((Path(__file__).parent / "golden").glob("*.expected"))


@pytest.mark.parametrize("path", GOLDEN, ids=[p.stem for p in GOLDEN])
def test_tensorized_golden_programs_stay_inside_their_arguments(path):
    # the tensorizer's own output for each rule family: calls, packing, remainders
    (func,) = parse_all(path.read_text(), str(path)).values()
    args = random_args(func, seed=5)
    want = run(func, **args)
    for k, fill in enumerate(SENTINELS):
        got = run_guarded(func, args, 3 + 5 * k, 17, fill, threads=1 + k % 2)
        assert_same(func, want, got, exact=False)


@pytest.mark.parametrize("name", ["gemm_odd_37x61x29", "gemm_transposed_b", "qdense_widened",
                                  "c2d_nhwc"])
def test_tensorized_corpus_functions_stay_inside_their_arguments(name):
    corpus = {n: f for p in sorted((ROOT / "corpus").glob("*.py")) for n, f in parse_file(p).items()}
    result = tensorize(corpus[name], intrinsics.library("host"))
    func = result.func
    args = random_args(func, seed=6)
    want = run(func, **args)
    got = run_guarded(func, args, 7, 64, 0xFF, threads=2)
    assert_same(func, want, got, exact=False)


# ---------------------------------------------------------------------------
# random calls: the verifier refuses exactly the aliasing ones, and runs the rest right

CALLS = {  # f32 intrinsics, so every operand may sit in any buffer
    "x86.fma.f32x8": {"c": (8,), "a": (8,), "b": (8,)},
    "x86.axpy.f32x8": {"c": (8,), "a": (1,), "b": (8,)},
    "x86.mm.f32.6x16x1": {"c": (6, 16), "a": (6, 1), "b": (1, 16)},
}


@st.composite
def calls(draw):
    """One call, maybe in a loop ``for j in range(n)`` moving some bases by a multiple of j,
    its windows spread over at most two buffers (so they often share one), in bounds."""
    name = draw(st.sampled_from(sorted(CALLS)))
    shapes = CALLS[name]
    nbuf = draw(st.integers(1, 2))
    ndim = draw(st.integers(1, 2))
    trips = draw(st.integers(1, 3))
    owner = {op: draw(st.integers(0, nbuf - 1)) for op in shapes}
    steps = {op: tuple(tuple(draw(st.integers(-2, 2)) for _ in range(ndim)) for _ in shape)
             for op, shape in shapes.items()}
    moves = {op: tuple(draw(st.integers(0, 3)) for _ in range(ndim)) for op in shapes}

    def span(op, d):
        lo = sum(min(0, (n - 1) * st_[d]) for n, st_ in zip(shapes[op], steps[op]))
        hi = sum(max(0, (n - 1) * st_[d]) for n, st_ in zip(shapes[op], steps[op]))
        return lo, hi + moves[op][d] * (trips - 1)

    dims = [[max([span(op, d)[1] - span(op, d)[0] + 1 for op in shapes if owner[op] == k] + [1])
             + draw(st.integers(0, 4)) for d in range(ndim)] for k in range(nbuf)]
    bufs = [Buffer("XY"[k], "f32", tuple(dims[k])) for k in range(nbuf)]
    j = Var("j")
    operands = []
    for op in shapes:
        base = []
        for d in range(ndim):
            lo, hi = span(op, d)
            start = draw(st.integers(-lo, dims[owner[op]][d] - 1 - hi))
            e = Const(start, INDEX)
            if moves[op][d]:
                e = Binary("+", e, Binary("*", Const(moves[op][d], INDEX), j))
            base.append(e)
        operands.append((op, Window(bufs[owner[op]], tuple(base), steps[op])))
    body = For("j", 0, trips, Call(intrinsics.get(name), tuple(operands), "c"))
    return PrimFunc("calls", tuple(bufs), body)


def _aliases(func: PrimFunc) -> bool:
    """By brute force over every call instance and every step of the semantics: two output
    elements at one address, or an address of the output's buffer that an input reads and
    the output writes at different steps (or writes at several)."""
    loop: For = func.body
    call: Call = loop.body
    desc = call.intrinsic
    out = call.window(call.output)
    for j in range(loop.start, loop.stop):
        def address(w: Window, element) -> tuple:
            return w.buffer.name, tuple(_value(b, j) + sum(k * st_[d] for k, st_ in zip(element, w.steps))
                                        for d, b in enumerate(w.base))

        written = [address(out, o) for o in np.ndindex(*desc.output.shape)]
        if len(set(written)) != len(written):
            return True
        touches: dict[tuple, list] = {}  # address -> steps that read or write it
        for t, it in enumerate(np.ndindex(*(d.extent for d in desc.dims))):
            at = dict(zip((d.name for d in desc.dims), it))
            for op in desc.operands:
                element = tuple(0 if dim is None else at[dim] for dim in op.dims)
                touches.setdefault(address(call.window(op.name), element), []).append((op.name, t))
        for addr, who in touches.items():
            writes = [t for name, t in who if name == call.output]
            reads = [t for name, t in who if name != call.output]
            if writes and reads and len(set(writes + reads)) > 1:
                return True
    return False


def _value(e, j: int) -> int:
    if isinstance(e, Const):
        return e.value
    if isinstance(e, Var):
        return j
    a, b = _value(e.a, j), _value(e.b, j)
    return a + b if e.op == "+" else a * b


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(calls(), guards)
def test_random_calls_are_refused_exactly_when_their_windows_alias(func, guard):
    try:
        verify(func)
        refused = None
    except VerifyError as e:
        refused = e.message
    assert (refused is not None) == _aliases(func), refused
    if refused is not None:
        return
    # small integers in f32: a fused and an unfused multiply-add round alike
    rng = np.random.default_rng(7)
    args = {b.name: rng.integers(-3, 4, b.shape).astype(np.float32) for b in func.params}
    want = run(func, **args)
    got = run_guarded(func, args, *guard)
    for b in func.params:
        np.testing.assert_array_equal(got[b.name], want[b.name], err_msg=b.name)
