"""The numpy calling convention, caches, threads, check() and the benchmark harness."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

from rewrite import codegen, runtime
from rewrite.inputs import random_args
from rewrite.interp import run
from rewrite.ir import For, written_by
from rewrite.script import parse, parse_file, show
from rewrite.tools import bench, numpy_steps

CORPUS = Path(__file__).resolve().parent.parent / "corpus"

MATMUL = """
@prim_func
def mm(A: f32[96, 80], B: f32[80, 72], C: f32[96, 72]):
    for i, j in grid(96, 72):
        C[i, j] = 0.0
        for k in range(80):
            C[i, j] += A[i, k] * B[k, j]
"""

SCAN = """
@prim_func
def scan(A: i32[4096], B: i32[4096]):
    B[0] = A[0]
    for i in range(1, 4096):
        B[i] = B[i - 1] + A[i]
"""


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TENSORIZE_CACHE_DIR", str(tmp_path / "cache"))
    runtime.clear_memory_cache()


@pytest.fixture
def mm():
    return parse(MATMUL)


def arrays(func, seed=0):
    return random_args(func, seed=seed)


# ---------------------------------------------------------------------------
# calling convention


def test_positional_and_keyword_calls_agree(mm):
    k = runtime.compile(mm, threads=1)
    a = arrays(mm)
    by_name = {n: x.copy() for n, x in a.items()}
    k(**by_name)
    c = a["C"].copy()
    k(a["A"], a["B"], c)
    np.testing.assert_array_equal(c, by_name["C"])
    c2 = a["C"].copy()
    k(a["A"], B=a["B"], C=c2)
    np.testing.assert_array_equal(c2, by_name["C"])
    np.testing.assert_allclose(c, a["A"] @ a["B"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bad, words", [
    (dict(A=np.zeros((96, 81), np.float32)), ["buffer A", "shape"]),
    (dict(B=np.zeros((80, 72), np.float64)), ["buffer B", "dtype"]),
    (dict(C=np.zeros((96, 72), np.float32).T.copy().T), ["buffer C", "C-contiguous"]),
    (dict(A=np.zeros((96, 160), np.float32)[:, ::2]), ["buffer A", "C-contiguous"]),
    (dict(A=[[0.0] * 80] * 96), ["buffer A", "numpy array"]),
    (dict(B=np.zeros((80, 72), np.dtype(">f4"))), ["buffer B", "dtype"]),
])
def test_wrong_arrays_raise_value_error_naming_the_buffer(mm, bad, words):
    k = runtime.compile(mm, threads=1)
    a = arrays(mm)
    a.update(bad)
    with pytest.raises(ValueError) as err:
        k(**a)
    for w in words:
        assert w in str(err.value)


def test_missing_unknown_and_duplicate_buffers(mm):
    k = runtime.compile(mm, threads=1)
    a = arrays(mm)
    with pytest.raises(ValueError, match="missing buffer"):
        k(A=a["A"], B=a["B"])
    with pytest.raises(ValueError, match="no buffer D"):
        k(**a, D=a["C"])
    with pytest.raises(ValueError, match="given twice"):
        k(a["A"], a["B"], a["C"], C=a["C"])


def test_read_only_and_overlapping_outputs_are_rejected(mm):
    k = runtime.compile(mm, threads=1)
    a = arrays(mm)
    c = a["C"].copy()
    c.flags.writeable = False
    with pytest.raises(ValueError, match="buffer C.*read-only"):
        k(A=a["A"], B=a["B"], C=c)
    square = parse("""
@prim_func
def sq(A: f32[16], B: f32[16]):
    for i in range(16):
        B[i] = A[i] * A[i]
""")
    x = np.ones(16, np.float32)
    with pytest.raises(ValueError, match="shares memory"):
        runtime.compile(square, threads=1)(A=x, B=x)


def test_the_same_arrays_are_checked_again_on_every_call(mm):
    """The pointers of arrays seen before are reused (``Kernel._pointers``), not their
    checks: an array changed in place since the last call is refused like a new one."""
    k = runtime.compile(mm, threads=1)
    a = arrays(mm)
    k(**a)
    c = a["C"]
    c.flags.writeable = False
    with pytest.raises(ValueError, match="buffer C.*read-only"):
        k(**a)
    c.flags.writeable = True
    a["A"].shape = (80, 96)
    with pytest.raises(ValueError, match="buffer A.*shape"):
        k(**a)
    a["A"].shape = (96, 80)
    a["B"].dtype = np.int32
    with pytest.raises(ValueError, match="buffer B.*dtype"):
        k(a["A"], a["B"], c)
    a["B"].dtype = np.float32
    k(a["A"], a["B"], c)
    np.testing.assert_allclose(c, a["A"] @ a["B"], rtol=1e-5, atol=1e-5)


def test_calls_alternating_between_arrays_write_each_its_own_output():
    """A kernel with temporaries keeps one pointer array per set of arrays it was last
    called with; alternating sets, each call reads and writes its own."""
    func = parse("""
@prim_func
def t(A: f32[8, 6], B: f32[8, 6]):
    P = alloc(f32[8, 8])
    for i, j in grid(8, 2):
        P[i, j + 6] = 0.0
    for i, j in grid(8, 6):
        P[i, j] = A[i, j]
    for i, j in grid(8, 6):
        B[i, j] = P[i, j] * 2.0 + P[i, j + 2]
""")
    k = runtime.compile(func, threads=1)
    sets = [arrays(func, seed=s) for s in range(3)]
    for _ in range(2):
        for a in sets:
            a["B"][...] = np.nan
            k(**a)
            pad = np.concatenate([a["A"], np.zeros((8, 2), np.float32)], axis=1)
            np.testing.assert_array_equal(a["B"], pad[:, :6] * 2 + pad[:, 2:])


@pytest.mark.parametrize("name", ["_k_last", "_k_self", "self", "kernel", "type", "len"])
def test_buffer_names_of_any_spelling_are_called(name):
    func = parse(f"""
@prim_func
def t(A: f32[4], {name}: f32[4]):
    for i in range(4):
        {name}[i] = A[i] + 1.0
""")
    k = runtime.compile(func, threads=1)
    x, y = np.arange(4, dtype=np.float32), np.zeros(4, np.float32)
    k(**{"A": x, name: y})
    np.testing.assert_array_equal(y, x + 1)
    y[:] = 0
    k(x, y)
    np.testing.assert_array_equal(y, x + 1)
    with pytest.raises(ValueError, match="missing buffer"):
        k(A=x)


@pytest.mark.parametrize("name", ["lambda", "None", "class"])
def test_a_hand_built_program_whose_buffer_is_named_by_a_keyword_is_called(name):
    # no script can name a parameter so, but an IR built in Python can: the kernel call
    # takes its general path instead of writing the name into generated code
    from rewrite import ir

    out, odd = ir.Buffer("B", "f32", (4,)), ir.Buffer(name, "f32", (4,))
    i = ir.Var("i")
    func = ir.PrimFunc("t", (odd, out), ir.For("i", 0, 4, ir.Store(
        out, (i,), ir.Binary("+", ir.Load(odd, (i,)), ir.Const(1.0, "f32")))), ())
    k = runtime.compile(func, threads=1)
    x, y = np.arange(4, dtype=np.float32), np.zeros(4, np.float32)
    k(x, y)
    np.testing.assert_array_equal(y, x + 1)
    y[:] = 0
    k(**{name: x, "B": y})
    np.testing.assert_array_equal(y, x + 1)


def unaligned(shape, dtype):
    """An array whose data sits one byte past an aligned address."""
    dtype = np.dtype(dtype)
    n = int(np.prod(shape))
    raw = np.empty(n * dtype.itemsize + 1, np.uint8)
    view = raw[1:].view(dtype).reshape(shape)
    assert view.ctypes.data % dtype.itemsize != 0
    return view


@pytest.mark.parametrize("threads", [1, 2])
def test_unaligned_arrays_give_correct_results(mm, threads):
    a = arrays(mm)
    A, B, C = unaligned((96, 80), np.float32), unaligned((80, 72), np.float32), unaligned((96, 72), np.float32)
    A[...], B[...], C[...] = a["A"], a["B"], 0
    runtime.compile(mm, threads=threads)(A=A, B=B, C=C)
    np.testing.assert_allclose(C, run(mm, **a)["C"], rtol=1e-5, atol=1e-5)


def test_unaligned_wide_vectors():
    func = parse("""
@prim_func
def ew(A: f64[1000], B: f64[1000], C: f64[1000]):
    for i in range(1000):
        C[i] = max(A[i] * B[i] + 1.0, 0.0)
""")
    a = arrays(func)
    A, B, C = (unaligned((1000,), np.float64) for _ in range(3))
    A[...], B[...] = a["A"], a["B"]
    runtime.compile(func, threads=1)(A, B, C)
    np.testing.assert_array_equal(C, run(func, **a)["C"])


def test_temporaries_start_at_zero_on_every_call():
    func = parse("""
@prim_func
def t(A: f32[8], B: f32[8]):
    T = alloc(f32[8])
    for i in range(8):
        T[i] += A[i]
        B[i] = T[i]
""")
    k = runtime.compile(func, threads=1)
    a = arrays(func)
    k(**a)
    first = a["B"].copy()
    k(**a)
    np.testing.assert_array_equal(a["B"], first)


# P filled whole before it is read, Z read (added into) first
TEMPS = """
@prim_func
def t(A: f32[8, 6], B: f32[8, 6], C: f32[8, 6]):
    P = alloc(f32[8, 8])
    Z = alloc(f32[8, 6])
    for i, j in grid(8, 2):
        P[i, j + 6] = -0.0
    for i, j in grid(8, 6):
        P[i, j] = A[i, j]
    for i, j in grid(8, 6):
        Z[i, j] += A[i, j]
    for i, j in grid(8, 6):
        B[i, j] = P[i, j] * 2.0 + P[i, j + 2]
        C[i, j] = Z[i, j]
"""


def on_two_threads(worker) -> None:
    """``worker(seed)`` run on two threads at once, with seeds 1 and 2; returns when both end."""
    ts = [threading.Thread(target=worker, args=(seed,)) for seed in (1, 2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


def test_temporaries_the_program_fills_first_keep_their_results_across_calls():
    """A temporary the program writes whole before reading it is not zeroed by the runtime
    (``analysis.filled_before_read``); one it reads first still starts at zero each call."""
    func = parse(TEMPS)
    from rewrite import analysis

    assert analysis.filled_before_read(func) == {"P"}
    k = runtime.compile(func, threads=1)
    a = arrays(func)
    want = run(func, **a)
    for _ in range(3):
        k(**a)
        np.testing.assert_array_equal(a["B"], want["B"])
        np.testing.assert_array_equal(a["C"], want["C"])  # Z zeroed again: A, not 2A, 3A


def test_temporaries_start_on_a_cache_line():
    func = parse("""
@prim_func
def t(A: f32[7, 5], B: f32[7, 5]):
    P = alloc(f32[7, 8])
    Q = alloc(i8[3])
    R = alloc(f64[5, 9])
    for i, j in grid(7, 5):
        P[i, j] = A[i, j]
    for i, j in grid(7, 5):
        B[i, j] = P[i, j] + f32(Q[0]) + f32(R[0, 0])
""")
    k = runtime.compile(func, threads=1)
    a = arrays(func)
    k(**a)
    np.testing.assert_array_equal(a["B"], a["A"])
    # the native caller keeps them on its stack, each at an offset of the aligned block
    layout = codegen.caller_layout(func)
    assert [off % runtime.TEMPORARY_ALIGNMENT for off, _, _ in layout["temporaries"]] == [0, 0, 0]
    assert [size for _, size, _ in layout["temporaries"]] == [7 * 8 * 4, 3, 5 * 9 * 8]
    # the Python path keeps its own, one set a thread
    k._native = None
    a["B"][...] = 0
    runtime.Kernel.__call__(k, **a)
    np.testing.assert_array_equal(a["B"], a["A"])
    temps = k._local.temps
    assert [t.shape for t in temps] == [(7, 8), (3,), (5, 9)]
    assert [str(t.dtype) for t in temps] == ["float32", "int8", "float64"]
    assert all(t.ctypes.data % runtime.TEMPORARY_ALIGNMENT == 0 for t in temps)
    assert all(t.flags.c_contiguous and t.flags.writeable for t in temps)


# ---------------------------------------------------------------------------
# threads


def corpus_functions():
    funcs = []
    for path in sorted(CORPUS.glob("*.py")):
        funcs.extend(parse_file(path).values())
    return funcs


@pytest.mark.parametrize("threads", [2, 3])
def test_parallel_results_are_identical_to_serial(mm, threads):
    for func in [mm, parse(SCAN)] + corpus_functions()[:12]:
        a = arrays(func, seed=3)
        serial = {n: x.copy() for n, x in a.items()}
        parallel = {n: x.copy() for n, x in a.items()}
        runtime.compile(func, threads=1)(**serial)
        runtime.compile(func, threads=threads)(**parallel)
        for b in func.outputs:
            np.testing.assert_array_equal(parallel[b.name], serial[b.name], err_msg=func.name)


def test_parallel_loops_are_chosen_by_the_dependence_analysis(mm):
    from rewrite.lower import lower

    assert lower(mm).parts[-1].parallel  # the i, k, j nest; i carries nothing
    assert not any(p.parallel for p in lower(parse(SCAN)).parts)


def test_many_parallel_calls_from_two_python_threads(mm):

    k = runtime.compile(mm, threads=2)
    a = arrays(mm)
    want = run(mm, **a)["C"]
    errors = []

    def worker(_seed):
        c = np.zeros((96, 72), np.float32)
        for _ in range(200):
            k(A=a["A"], B=a["B"], C=c)
            if not np.allclose(c, want, rtol=1e-5, atol=1e-5):
                errors.append("mismatch")

    on_two_threads(worker)
    assert not errors


def test_temporaries_are_private_to_each_calling_thread():
    """Temporaries are kept across calls, one set per thread: two threads calling one
    serial kernel must not zero or fill each other's. The temporary is large so that one
    thread's zeroing overlaps the other's kernel (a shared temporary failed here about one
    call in forty)."""
    n = 1 << 20
    func = parse(f"""
@prim_func
def t(A: f32[{n}], B: f32[{n}]):
    T = alloc(f32[{n}])
    for i in range({n}):
        T[i] += A[i]
    for i in range({n}):
        B[i] = T[i] + T[i]
""")
    k = runtime.compile(func, threads=1)
    errors = []

    def worker(seed):
        a = arrays(func, seed=seed)
        want = 2 * a["A"]
        for _ in range(60):
            k(**a)
            if not np.array_equal(a["B"], want):
                errors.append(seed)

    on_two_threads(worker)
    assert not errors


def test_schedule_moves_the_unit_stride_loop_innermost(mm):
    from rewrite.lower import schedule
    from rewrite.script import show

    text = show(schedule(mm))
    assert "for i, k, j in grid(96, 80, 72):" in text
    assert schedule(parse(SCAN)) == parse(SCAN)


PRODUCED = """
@prim_func
def produced(A: f16[128, 128], K: f32[128, 128], S: f32[64, 64], C: f32[128, 128], D: f32[64, 64]):
    Af = alloc(f32[128, 128])
    Kt = alloc(f32[128, 128])
    Sf = alloc(f32[64, 64])
    for i, k in grid(128, 128):
        Af[i, k] = f32(A[i, k])
    for k, j in grid(128, 128):
        Kt[k, j] = K[j, k]
    for i, k in grid(64, 64):
        Sf[i, k] = 2.0 * S[i, k]
    for i, j in grid(128, 128):
        C[i, j] = 0.0
        for k in range(128):
            C[i, j] += Af[i, k] * Kt[k, j]
    for i, j in grid(64, 64):
        D[i, j] = 0.0
        for k in range(64):
            D[i, j] += Sf[i, k] * Sf[k, j]
"""


def test_temporaries_a_parallel_part_reads_are_written_by_the_threads_that_read_them(monkeypatch):
    """A loop too small for threads that fills 32 KB or more of temporaries a parallel part
    then reads runs on the threads too, each writing its share where it will read it: the
    f16 -> f32 conversion of A (64 KB). A transposing copy (read at a stride along its
    innermost loop) and a 16 KB one stay on the calling thread. Every way computes the same
    bits as one thread."""
    from rewrite import lower

    func = parse(PRODUCED)
    parts = lower.lower(func).parts
    seen = [(sorted(written_by(p.body)), p.parallel) for p in parts]
    assert (["Af"], True) in seen, seen
    assert any({"Kt", "Sf"} <= set(w) and not shared for w, shared in seen), seen
    monkeypatch.setattr(lower, "PRODUCED_BYTES", 1 << 60)  # as before: Af written alone
    assert (["Af"], True) not in [(sorted(written_by(p.body)), p.parallel)
                                  for p in lower.lower(func).parts]
    monkeypatch.undo()
    monkeypatch.setattr(runtime, "THREAD_TRIAL_CALLS", 0)  # the pool, every call
    a = random_args(func, special=True)
    one, two = {n: v.copy() for n, v in a.items()}, {n: v.copy() for n, v in a.items()}
    runtime.compile(func, threads=1)(**one)
    kernel = runtime.compile(func, threads=2)
    for _ in range(3):
        kernel(**two)
        np.testing.assert_array_equal(two["C"], one["C"])
        np.testing.assert_array_equal(two["D"], one["D"])
    want = run(func, **a)
    for name in ("C", "D"):
        assert runtime.compare_output(func, func.buffer(name), want[name], two[name])[1] == "", name



CORNER = """
@prim_func
def corner(A: {t}[99, 99], B: {t}[99, 99], C: {t}[99, 99]):
    for i in range(96, 99):
        for j in range(96, 99):
            for k in range(99):
                C[i, j] += A[i, k] * B[k, j]
    for i in range(90, 92):
        for k in range(99):
            C[i, 0] += A[i, k] * B[k, 0]
"""


def test_a_float_sum_into_a_few_elements_runs_with_its_reduction_outermost(monkeypatch):
    """A tile's 3 x 3 leftover corner: its nine float sums, each a chain of additions LLVM
    may not reorder, run side by side with ``k`` outermost instead of one after another
    behind a three-element loop; each still adds its terms in the same order, so the
    results are those of the order before, bit for bit (and the interpreter's within the
    check's tolerance: the kernel fuses multiply-adds). A sum innermost along a row (one
    chain, in a register) keeps its order, and so does an integer sum (vectorised by LLVM
    itself)."""
    from rewrite import lower
    from rewrite.lower import schedule
    from rewrite.script import show

    func = parse(CORNER.format(t="f32"))
    text = show(schedule(func))
    assert "for k in range(99):\n        for i in range(96, 99):\n            for j in range(96, 99):" in text
    assert "for i in range(90, 92):\n        for k in range(99):" in text
    k = runtime.compile(func, threads=1)
    a = random_args(func, special=True)  # NaN, infinities and signed zeros among the terms
    want = run(func, **a)["C"]
    before = {n: v.copy() for n, v in a.items()}
    k(**a)
    assert runtime.compare_output(func, func.buffer("C"), want, a["C"])[1] == ""
    monkeypatch.setattr(lower, "FEW_SUMS", 0)  # the order before, compiled under another name
    old = parse(CORNER.format(t="f32").replace("def corner", "def corner_as_before"))
    assert "for i in range(96, 99):\n        for k in range(99):" in show(schedule(old))
    runtime.compile(old, threads=1)(**before)
    np.testing.assert_array_equal(a["C"], before["C"])
    ints = parse(CORNER.format(t="i32"))
    assert "for i in range(96, 99):\n        for k in range(99):" in show(schedule(ints))



# ---------------------------------------------------------------------------
# caches


def test_memory_cache_hit(mm):
    runtime.compile(mm, threads=1)
    again = runtime.compile(mm, threads=1)
    assert again.source == "memory"


def test_disk_cache_hit_gives_the_same_results(mm, tmp_path):
    fresh = runtime.compile(mm, threads=1)
    assert fresh.source == "compiled"
    runtime.clear_memory_cache()
    cached = runtime.compile(mm, threads=1)
    assert cached.source == "disk"
    a = arrays(mm)
    x, y = {n: v.copy() for n, v in a.items()}, {n: v.copy() for n, v in a.items()}
    fresh(**x)
    cached(**y)
    np.testing.assert_array_equal(x["C"], y["C"])
    assert list((tmp_path / "cache").glob("*.o"))


def test_disk_cache_is_used_by_a_new_process(tmp_path):
    script = f"""
import json, numpy as np
from rewrite import runtime
from rewrite.script import parse
k = runtime.compile(parse('''{MATMUL}'''), threads=1)
a = np.ones((96, 80), np.float32); b = np.ones((80, 72), np.float32); c = np.zeros((96, 72), np.float32)
k(a, b, c)
print(json.dumps([k.source, float(c[0, 0])]))
"""
    env = {"TENSORIZE_CACHE_DIR": str(tmp_path / "shared"), "PATH": "/usr/bin:/bin"}
    root = str(Path(__file__).resolve().parent.parent)
    outs = [json.loads(subprocess.run([sys.executable, "-c", script], cwd=root, env=env | {"PYTHONPATH": root},
                                      capture_output=True, text=True, check=True).stdout)
            for _ in range(2)]
    assert outs == [["compiled", 80.0], ["disk", 80.0]]


def test_a_damaged_cache_file_is_recompiled(mm, tmp_path):
    runtime.compile(mm, threads=1)
    runtime.clear_memory_cache()
    for f in (tmp_path / "cache").glob("*.o"):
        f.write_bytes(f.read_bytes()[:-7] + b"damaged")
    again = runtime.compile(mm, threads=1)
    assert again.source == "compiled"
    assert runtime.check(mm, kernel=again).ok


# ---------------------------------------------------------------------------
# check() and the benchmark harness


def test_check_agrees_with_the_interpreter_on_the_corpus():
    for func in corpus_functions()[:20]:
        result = runtime.check(func)
        assert result.ok, (func.name, result)


def test_check_reports_a_wrong_kernel(mm):
    other = parse(MATMUL.replace("A[i, k] * B[k, j]", "A[i, k] + B[k, j]"))
    result = runtime.check(mm, kernel=runtime.compile(other, threads=1))
    assert not result.ok and result.max_abs_error > 1


def test_contraction_detection():
    funcs = {f.name: f for f in corpus_functions()}
    c = bench.contraction(parse(MATMUL))
    assert (c.spec, c.out, c.operands, c.init) == ("ik,kj->ij", "C", ("A", "B"), True)
    assert bench.contraction(parse(SCAN)) is None
    if "gemm_transposed_b" in funcs:
        assert bench.contraction(funcs["gemm_transposed_b"]) is not None


@pytest.mark.parametrize("spec, shapes", [
    ("ik,kj->ij", [(5, 7), (7, 3)]), ("ik,jk->ij", [(5, 7), (3, 7)]), ("ki,kj->ij", [(7, 5), (7, 3)]),
    ("ik,kj->ji", [(5, 7), (7, 3)]), ("bik,bkj->bij", [(2, 5, 7), (2, 7, 3)]),
    ("bik,bjk->bij", [(2, 5, 7), (2, 3, 7)]), ("ij,j->i", [(5, 7), (7,)]), ("ij,i->j", [(5, 7), (5,)]),
    ("j,ij->i", [(7,), (5, 7)])])
def test_matmul_formulation_equals_einsum(spec, shapes):
    rng = np.random.default_rng(0)
    operands = [rng.standard_normal(s) for s in shapes]
    product = numpy_steps.as_matmul(spec, operands)
    assert product is not None
    np.testing.assert_allclose(product(), np.einsum(spec, *operands), rtol=1e-12, atol=1e-12)


def test_a_product_of_converted_operands_is_also_timed_as_a_matmul_of_the_conversions(monkeypatch):
    # ``C += A * f32(B)`` with B in f16: numpy's fastest way is ``A @ B.astype(f32)`` (BLAS),
    # not the einsum casting as it goes
    func = parse(MATMUL.replace("B: f32", "B: f16").replace("A[i, k] * B[k, j]",
                                                            "A[i, k] * f32(B[k, j])"))
    args = random_args(func, seed=0)
    products = []
    monkeypatch.setattr(bench, "_accumulating", lambda product, out, init: products.append(product))
    bench.numpy_formulations(func, args)
    (product,) = products
    want = run(func, **{k: v.copy() for k, v in args.items()})["C"]
    np.testing.assert_allclose(product(), want, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("spec", ["ij,jk,kl->il", "ii,ij->j", "ijk,k->i", "bik,kj->bij"])
def test_matmul_formulation_refuses_what_it_is_not(spec):
    shapes = {"i": 3, "j": 4, "k": 5, "l": 2, "b": 2}
    inputs = spec.split("->")[0].split(",")
    operands = [np.ones([shapes[d] for d in x]) for x in inputs]
    assert numpy_steps.as_matmul(spec, operands) is None


def test_blas_report_warns_of_slowing_variables(monkeypatch):
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    monkeypatch.delenv("OPENBLAS_L2_SIZE", raising=False)
    lines = bench.blas_report()
    assert any(line.startswith("warning: OPENBLAS_CORETYPE=Haswell") for line in lines)
    assert not any("OPENBLAS_L2_SIZE" in line for line in lines)
    assert lines[0].startswith("numpy's BLAS: ")


@pytest.mark.parametrize("src, spec", [
    (MATMUL, "f32"),
    (MATMUL.replace("f32", "i32").replace("= 0.0", "= 0").replace("A: i32", "A: u8")
     .replace("B: i32", "B: i8").replace("A[i, k] * B[k, j]", "i32(A[i, k]) * i32(B[k, j])"), "int8")])
def test_onnxruntime_counterpart_computes_the_function(src, spec):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    func = parse(src)
    call = bench.onnxruntime_counterpart(func, runtime.compile(func, threads=1), threads=1)
    assert call is not None
    (got,) = call()
    want = run(func, **call.args)["C"]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)


def test_onnxruntime_flag_without_the_extra_is_one_line(monkeypatch, capsys, tmp_path):
    from rewrite import cli

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    path = tmp_path / "mm.py"
    path.write_text(MATMUL)
    assert cli.main(["bench", str(path), "--onnxruntime"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "--onnxruntime needs ONNX Runtime: pip install 'tensorize[onnx]'"]


def test_bench_reports_in_the_spec_shape(mm):
    results = bench.bench([("x.py", mm), parse(SCAN)], threads=1, min_runs=20, target_seconds=0.01)
    doc = bench.to_json(results)
    assert json.loads(json.dumps(doc)) == doc
    first, second = doc["results"]
    assert set(first) == {"file", "name", "runs", "min_s", "median_s", "max_s", "gflops",
                          "numpy_median_s", "ratio"}
    assert first["file"] == "x.py" and first["runs"] >= 20 and first["ratio"] > 0
    assert first["min_s"] <= first["median_s"] <= first["max_s"]
    assert second["numpy_median_s"] is None and second["ratio"] is None
    assert results[0].ops == 2 * 96 * 80 * 72


def test_calls_in_turns_take_turns_every_round_and_are_timed_on_the_cpu_clock():
    from rewrite.tools.timing import in_turns

    order = []

    def spin(name, seconds):  # busy for ``seconds`` of this thread's CPU time
        def call():
            order.append(name)
            t0 = time.thread_time()
            while time.thread_time() - t0 < seconds:
                pass
        return call

    slow, fast = in_turns([spin("a", 0.002), spin("b", 0.001)], rounds=4, batch_seconds=0.004)
    assert slow.runs == fast.runs == 4
    # a warm-up and a sizing call each, then four rounds: a batch of a, then one of b
    batches = [(name, len(list(calls))) for name, calls in itertools.groupby(order[4:])]
    assert batches == batches[:2] * 4 and [name for name, _ in batches[:2]] == ["a", "b"]
    assert 1.5 < slow.median_s / fast.median_s < 3.0


def test_a_warm_up_runs_untimed_for_its_seconds_before_the_timed_runs():
    from rewrite.tools.timing import measure

    calls = []

    def call():
        calls.append(time.perf_counter())
        time.sleep(0.005)

    t0 = time.perf_counter()
    t = measure(call, min_runs=3, target_seconds=0.0, warm_seconds=0.05)
    assert t.runs == 3 and len(calls) >= 3 + 8  # about ten 5 ms calls warm it up, untimed
    assert calls[-3] - t0 >= 0.05  # the timed runs start once the warm-up is over
    calls.clear()
    assert measure(call, min_runs=3, target_seconds=0.0).runs == 3 and len(calls) == 4


def test_bench_on_threads_warms_each_callable_up_before_timing_it(mm, monkeypatch):
    # a peer's worker threads spin on after its last call: on more than one thread, ours
    # and each peer run WARM_SECONDS untimed first, in BLOCKS blocks taking turns, whose
    # times are pooled; on one thread each is timed once, nothing warmed
    from rewrite.tools.timing import Timing

    warmed, order = [], []

    def measured(call, min_runs, target_seconds, warm_seconds=0.0):
        warmed.append(warm_seconds)
        order.append(call)
        return Timing((0.001 * len(order),) * min_runs)

    monkeypatch.setattr(bench, "measure", measured)
    r = bench.bench_one(mm, threads=2, min_runs=6)
    timed = order[-2 * bench.BLOCKS:]  # (numpy's formulations are first sorted by a quick timing)
    assert bench.BLOCKS > 1 and timed[0] is not timed[1] and timed[::2] == [timed[0]] * bench.BLOCKS
    assert timed[1::2] == [timed[1]] * bench.BLOCKS  # ours, numpy, ours, numpy, ...
    assert warmed[-2 * bench.BLOCKS:] == [bench.WARM_SECONDS] * (2 * bench.BLOCKS)
    assert bench.WARM_SECONDS > 0
    assert r.runs == 6  # the blocks' runs pooled
    warmed.clear()
    bench.bench_one(mm, threads=1)
    assert warmed[-2:] == [0.0, 0.0]


def test_bench_in_turns_reports_the_peers_least_times(mm):
    r = bench.bench_one(mm, "x.py", threads=1, turns=3)
    assert r.runs == 3 and r.turns == 3
    assert r.numpy_min_s is not None and r.numpy_min_s <= r.numpy_median_s
    (row,) = bench.to_json([r])["results"]
    assert row["turns"] == 3 and row["numpy_min_s"] == r.numpy_min_s and row["ratio"] > 0
    header, line = bench.format_table([r]).splitlines()
    assert header.split()[-1] == "least" and float(line.split()[-1]) == pytest.approx(
        r.numpy_min_s / r.min_s, abs=0.006)
    with pytest.raises(ValueError, match="threads must be 1"):
        bench.bench_one(mm, threads=2, turns=3)



def test_integer_work_in_turns_is_given_its_share_of_the_vpmaddwd_ceiling(monkeypatch):
    # the ceiling's loop takes its turn in each round; the share is the median over the rounds
    # of our rate over the loop's, each round's two times a moment apart
    from rewrite.tools.timing import Timing

    q = parse("@prim_func\ndef q(A: u8[16, 32], B: i8[32, 16], C: i32[16, 16]):\n"
              "    for i, j, k in grid(16, 16, 32):\n        C[i, j] += i32(A[i, k]) * i32(B[k, j])\n")
    ours, loop = (0.001, 0.004, 0.002), (0.002, 0.002, 0.001)
    monkeypatch.setattr(bench, "pmaddwd_ceiling_loop", lambda: (lambda: None, 1e6))
    monkeypatch.setattr(bench, "in_turns", lambda calls, rounds: [
        Timing(ours), *(Timing((0.5, 0.5, 0.5)) for _ in calls[1:-1]), Timing(loop)])
    r = bench.bench_one(q, threads=1, turns=3)
    ops = 2 * 16 * 16 * 32
    shares = [(ops / t) / (1e6 / c) for t, c in zip(ours, loop)]  # 0.0327, 0.0082, 0.0082
    assert r.pmaddwd_ratio == pytest.approx(sorted(shares)[1])
    (row,) = bench.to_json([r])["results"]
    assert row["pmaddwd_ratio"] == r.pmaddwd_ratio
    header, line = bench.format_table([r]).splitlines()
    assert header.split()[-1] == "vpmaddwd" and float(line.split()[-1]) == pytest.approx(
        r.pmaddwd_ratio, abs=0.006)
    assert bench.bench_one(q, threads=1).pmaddwd_ratio is None  # not in turns: no loop


def test_the_ceiling_loop_is_timed_only_where_it_is_the_int8_tiles_ceiling():
    import intrinsics

    features = intrinsics.host_features()
    found = bench.pmaddwd_ceiling_loop()
    if "avx2" not in features or "avx512vnni" in features:
        assert found is None
    else:
        call, ops = found
        t0 = time.perf_counter()
        call()
        assert ops == 12 * 32 * (1 << 18) and 0 < time.perf_counter() - t0 < 1.0


def test_float_work_in_turns_has_no_ceiling_column(mm):
    r = bench.bench_one(mm, threads=1, turns=2)
    assert r.pmaddwd_ratio is None and "pmaddwd_ratio" not in bench.to_json([r])["results"][0]
    assert "vpmaddwd" not in bench.format_table([r])

@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint8])
def test_an_array_at_an_offset_starts_that_far_past_a_cache_line(dtype):
    from rewrite.inputs import at_offset

    a = np.arange(3 * 37, dtype=dtype).reshape(3, 37)
    for offset in (0, 16, 32, 48):
        b = at_offset(a, offset)
        assert b.ctypes.data % 64 == offset and b.flags.c_contiguous
        assert np.array_equal(a, b) and b.dtype == a.dtype
    for bad in (64, -16, 4 if np.dtype(dtype).itemsize == 8 else 65):
        with pytest.raises(ValueError, match="offset"):
            at_offset(a, bad)


def test_bench_at_an_offset_gives_ours_and_numpy_the_same_placed_inputs(mm, monkeypatch):
    seen = []
    real = bench.numpy_counterpart

    def spy(func, args):
        seen.append({name: a.ctypes.data % 64 for name, a in args.items()})
        return real(func, args)

    monkeypatch.setattr(bench, "numpy_counterpart", spy)
    r = bench.bench_one(mm, threads=1, min_runs=3, target_seconds=0.01, offset=48)
    assert seen == [{b.name: 48 for b in mm.params}] and r.ratio > 0


def test_bench_offset_is_one_of_four(tmp_path, capsys):
    from rewrite import cli

    path = tmp_path / "mm.py"
    path.write_text(MATMUL)
    with pytest.raises(SystemExit) as stop:
        cli.main(["bench", str(path), "--offset", "8"])
    assert stop.value.code == 2 and "--offset" in capsys.readouterr().err


def test_bench_turns_needs_one_thread(tmp_path, capsys):
    from rewrite import cli

    path = tmp_path / "mm.py"
    path.write_text(MATMUL)
    assert cli.main(["bench", str(path), "--turns", "3"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "--turns compares one thread with one (each call timed on the thread's CPU clock): give --threads 1")


def test_plot_without_matplotlib_is_skipped(mm, tmp_path):
    results = bench.bench([mm], threads=1, min_runs=20, target_seconds=0.01)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert bench.plot(results, str(tmp_path / "p.png")) is False
        assert not (tmp_path / "p.png").exists()
    else:
        assert bench.plot(results, str(tmp_path / "p.png")) is True


UNIT_BATCH = """
@prim_func
def conv1x1(X: f32[1, 32, 16, 8], W: f32[8, 64], Y: f32[1, 32, 16, 64]):
    for n, h, w, co in grid(1, 32, 16, 64):
        Y[n, h, w, co] = 0.0
        for ci in range(8):
            Y[n, h, w, co] += X[n, h, w, ci] * W[ci, co]
"""


def test_a_unit_batch_loop_does_not_keep_the_nest_off_the_threads():
    from rewrite import lower

    func = parse(UNIT_BATCH)
    plan = lower.lower(func)
    parallel = [p.body for p in plan.parts if p.parallel]
    assert parallel and all(isinstance(b, For) and b.var == "h" for b in parallel)
    args = random_args(func, seed=3)
    want = run(func, **args)["Y"]
    for threads in (1, 2):
        got = {k: v.copy() for k, v in args.items()}
        runtime.compile(func, threads=threads)(**got)
        np.testing.assert_allclose(got["Y"], want, rtol=1e-5, atol=1e-5)


SMALL_OUTER = """
@prim_func
def rows(A: f32[7, 40, 128], B: f32[7, 40, 128]):
    for i, j, k in grid(7, 40, 128):
        B[i, j, k] = A[i, j, k] * 2.0 + 1.0
"""


def test_a_short_parallel_loop_is_merged_with_the_one_inside_it():
    # 7 iterations would split 4 / 3 between two threads; 280 split evenly
    from rewrite import lower

    func = parse(SMALL_OUTER)
    (part,) = lower.lower(func).parts
    assert part.parallel and isinstance(part.body, For) and part.body.extent == 7 * 40
    assert "//" in ir_text(part.body) and "%" in ir_text(part.body)
    args = random_args(func, seed=4)
    want = run(func, **args)["B"]
    for threads in (1, 2):
        got = {k: v.copy() for k, v in args.items()}
        runtime.compile(func, threads=threads)(**got)
        np.testing.assert_array_equal(got["B"], want)


def ir_text(s) -> str:
    from rewrite.ir import PrimFunc

    return PrimFunc("_", (), s).script()


def test_a_deep_function_checked_before_does_not_break_a_check_from_deep_in_the_stack(monkeypatch):
    """The interpreted rounds are kept by function: a function whose expression nests as
    deep as the parser allows, checked first, then a small one checked from a stack that
    leaves fewer frames than hashing the deep one takes (a check under hypothesis, deep in
    pytest). Remembering the small one's rounds must not hash the deep one's key again."""
    from rewrite.script import MAX_EXPR_DEPTH

    monkeypatch.setattr(runtime, "_interpreted", OrderedDict())
    deep = parse("@prim_func\ndef deep(A: f32[8], B: f32[8]):\n    for i in range(8):\n"
                 "        B[i] = " + " + ".join(["A[i]"] * (MAX_EXPR_DEPTH - 2)) + "\n")
    assert runtime.check(deep).ok
    small = parse("@prim_func\ndef small(A: f32[8], B: f32[8]):\n    for i in range(8):\n"
                  "        B[i] = A[i] * 2.0\n")
    kernel = runtime.compile(small)

    def frames() -> int:
        depth, f = 0, sys._getframe()
        while f is not None:
            depth, f = depth + 1, f.f_back
        return depth

    def hashes_within(n: int) -> bool:  # hashing the deep function fits in n more frames
        def nested(k: int) -> bool:
            if k > 0:
                return nested(k - 1)
            try:
                hash(deep)
                return True
            except RecursionError:
                return False
        return nested(sys.getrecursionlimit() - frames() - n)

    room = next(n for n in range(100, sys.getrecursionlimit(), 100) if hashes_within(n))

    def nested(k: int):
        return runtime.check(small, kernel) if k <= 0 else nested(k - 1)

    # leave room for the check itself, but not for hashing the deep function again
    result = nested(sys.getrecursionlimit() - frames() - room // 2 - 200)
    assert result.ok
    assert len(runtime._interpreted) == 6  # three rounds of each function


def test_a_function_checked_again_is_not_interpreted_again(monkeypatch):
    from rewrite import interp

    func = parse("""
@prim_func
def f(A: f32[8, 8], B: f32[8]):
    for i, j in grid(8, 8):
        B[i] += A[i, j] * A[j, i]
""")
    kernel = runtime.compile(func)
    calls = []
    real = interp.interpret
    monkeypatch.setattr(interp, "interpret", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    # an empty memory of interpreted rounds for this test; the suite's own comes back after
    # (other tests check the corpus functions again, on other kernels)
    monkeypatch.setattr(runtime, "_interpreted", OrderedDict())
    assert runtime.check(func, kernel).ok
    rounds = len(calls)
    assert rounds == 3  # finite inputs, a few special values, many
    assert runtime.check(func, kernel).ok and len(calls) == rounds
    # a kernel that is wrong is still caught with the remembered values
    wrong = runtime.compile(parse(show(func).replace("A[j, i]", "A[i, j]")))
    assert not runtime.check(func, wrong).ok and len(calls) == rounds
    # another seed: other inputs, interpreted
    assert runtime.check(func, kernel, seed=1).ok and len(calls) == 2 * rounds
