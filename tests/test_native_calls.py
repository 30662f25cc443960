"""Kernel calls bound and checked in native code (``codegen.add_caller``): every call the
native checks refuse must reach the Python path and raise its error there (or run there,
when the Python path accepts the arrays), never run on arrays that are not as compiled.
``Kernel.native_runs`` counts the calls the native path ran."""

from __future__ import annotations

import ctypes
import inspect
import sys
import sysconfig

import numpy as np
import pytest

from rewrite import codegen, runtime
from rewrite.inputs import random_args
from rewrite.interp import run
from rewrite.script import parse
from .test_runtime import TEMPS, on_two_threads
from .test_runtime import private_cache  # noqa: F401 - its autouse fixture: a cache per test

SQ = """
@prim_func
def sq(A: f32[16, 16], B: f32[16, 16], C: f32[16, 16]):
    for i, j in grid(16, 16):
        C[i, j] = 0.0
        for k in range(16):
            C[i, j] += A[i, k] * B[k, j]
"""


@pytest.fixture
def sq():
    if not runtime.native_calls():  # asserted where expected: test_the_native_path_is_taken...
        pytest.skip("no native calls on this interpreter (runtime.native_calls)")
    func = parse(SQ)
    k = runtime.compile(func, threads=1)
    assert k._native is not None
    return func, k


def product(a, b):
    return a.astype(np.float64) @ b.astype(np.float64)


def fresh(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((16, 16)).astype(np.float32) for _ in range(2)] + \
        [np.full((16, 16), np.nan, np.float32)]


def test_the_native_path_is_taken_on_this_host(sq):
    # 64-bit CPython with a GIL and numpy's usual layout: every x86-64 host this runs on
    expected = sys.implementation.name == "cpython" and sys.maxsize > 2**32 and \
        not sysconfig.get_config_var("Py_GIL_DISABLED")
    assert runtime.native_calls() == expected
    func, k = sq
    a, b, c = fresh()
    k(a, b, c)
    assert k.native_runs == 1
    np.testing.assert_allclose(c, product(a, b), rtol=1e-5, atol=1e-5)
    c[...] = np.nan
    k(A=a, B=b, C=c)
    k(a, B=b, C=c)
    k(C=c, B=b, A=a)
    assert k.native_runs == 4
    np.testing.assert_allclose(c, product(a, b), rtol=1e-5, atol=1e-5)


def test_the_signature_names_the_arrays_a_kernel_takes(sq):
    # __call__ is a builtin taking anything: the signature comes from the function
    func, k = sq
    sig = inspect.signature(k)
    assert list(sig.parameters) == ["A", "B", "C"]
    assert [p.annotation for p in sig.parameters.values()] == ["f32[16, 16]"] * 3
    a, b, c = fresh()
    bound = sig.bind(a, b, C=c)  # binds as a call does
    k(*bound.args, **bound.kwargs)
    np.testing.assert_allclose(c, product(a, b), rtol=1e-5, atol=1e-5)
    with pytest.raises(TypeError):
        sig.bind(a, b, c, a)
    pooled = runtime.compile(func, threads=2)  # a kernel with a pool: the same signature
    assert inspect.signature(pooled) == sig


def test_the_same_arrays_twice_and_other_arrays_after(sq):
    _, k = sq
    a, b, c = fresh(1)
    k(a, b, c)
    k(a, b, c)
    np.testing.assert_allclose(c, product(a, b), rtol=1e-5, atol=1e-5)
    a2, b2, c2 = fresh(2)
    k(a2, b2, c2)
    np.testing.assert_allclose(c2, product(a2, b2), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(c, product(a, b), rtol=1e-5, atol=1e-5)  # untouched
    assert k.native_runs == 3


@pytest.mark.parametrize("which, bad, words", [
    ("B", lambda x: x.astype(np.float64), ["buffer B", "dtype"]),
    ("A", lambda x: x.view(np.int32), ["buffer A", "dtype"]),
    ("B", lambda x: x.astype(">f4"), ["buffer B", "dtype"]),  # byte-swapped
    ("A", lambda x: np.zeros((16, 17), np.float32), ["buffer A", "shape"]),
    ("C", lambda x: np.zeros((16, 15), np.float32), ["buffer C", "shape"]),
    ("A", lambda x: x[:15], ["buffer A", "shape"]),  # rows of the right length: too few
    ("C", lambda x: np.zeros((17, 16), np.float32), ["buffer C", "shape"]),
    ("A", lambda x: x.reshape(256), ["buffer A", "shape"]),  # ndim
    ("B", lambda x: x.reshape(16, 16, 1), ["buffer B", "shape"]),
    ("A", lambda x: np.zeros((16, 32), np.float32)[:, ::2], ["buffer A", "C-contiguous"]),
    ("C", lambda x: np.zeros((32, 16), np.float32)[::2], ["buffer C", "C-contiguous"]),
    ("B", lambda x: x.T.copy().T, ["buffer B", "C-contiguous"]),
    ("A", lambda x: x.tolist(), ["buffer A", "numpy array"]),
    ("C", lambda x: None, ["buffer C", "numpy array"]),
    ("B", lambda x: 3.0, ["buffer B", "numpy array"]),
])
def test_arrays_not_as_compiled_raise_the_python_paths_error(sq, which, bad, words):
    _, k = sq
    arrays = dict(zip("ABC", fresh()))
    arrays[which] = bad(arrays[which])
    before = arrays["C"].copy() if which != "C" else None
    for call in (lambda: k(**arrays), lambda: k(arrays["A"], arrays["B"], arrays["C"])):
        with pytest.raises(ValueError) as err:
            call()
        for w in words:
            assert w in str(err.value)
    assert k.native_runs == 0
    if before is not None:  # nothing was written
        np.testing.assert_array_equal(arrays["C"], before)


def test_a_read_only_output_is_refused(sq):
    _, k = sq
    a, b, c = fresh()
    c.flags.writeable = False
    with pytest.raises(ValueError, match="buffer C.*read-only"):
        k(a, b, c)
    # a read-only input is fine
    a.flags.writeable = False
    c2 = np.zeros((16, 16), np.float32)
    k(a, b, c2)
    assert k.native_runs == 1
    np.testing.assert_allclose(c2, product(a, b), rtol=1e-5, atol=1e-5)


def test_an_output_sharing_memory_with_an_input_is_refused(sq):
    _, k = sq
    a, b, c = fresh()
    with pytest.raises(ValueError, match="buffer C shares memory with buffer A"):
        k(a, b, a)
    with pytest.raises(ValueError, match="buffer C shares memory with buffer B"):
        k(A=a, B=c, C=c)
    big = np.zeros(3 * 256, np.float32)
    inputs = big[:256].reshape(16, 16)
    inputs[...] = a
    overlapping = big[255:511].reshape(16, 16)  # one float in common with A
    with pytest.raises(ValueError, match="buffer C shares memory with buffer A"):
        k(inputs, b, overlapping)
    assert k.native_runs == 0
    # the same array for both inputs is fine, and so are views that merely touch
    adjacent = big[256:512].reshape(16, 16)
    k(inputs, inputs, adjacent)
    assert k.native_runs == 1
    np.testing.assert_allclose(adjacent, product(a, a), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(big[:256].reshape(16, 16), a)
    adjacent[...] = 0
    below = big[:256].reshape(16, 16)
    above = big[256:512].reshape(16, 16)
    above[...] = a
    k(above, above, below)
    np.testing.assert_allclose(below, product(a, a), rtol=1e-5, atol=1e-5)
    assert k.native_runs == 2


def test_an_array_changed_in_place_between_calls_is_checked_again(sq):
    _, k = sq
    a, b, c = fresh()
    k(a, b, c)
    flat = np.zeros(256, np.float32)
    for change, undo, words in [
        (lambda: setattr(a, "shape", (8, 32)), lambda: setattr(a, "shape", (16, 16)), "buffer A.*shape"),
        (lambda: setattr(b, "shape", (256,)), lambda: setattr(b, "shape", (16, 16)), "buffer B.*shape"),
        (lambda: setattr(b, "dtype", np.int32), lambda: setattr(b, "dtype", np.float32), "buffer B.*dtype"),
        (lambda: setattr(c.flags, "writeable", False), lambda: setattr(c.flags, "writeable", True),
         "buffer C.*read-only"),
        (lambda: setattr(flat, "shape", (16, 16)), lambda: setattr(flat, "shape", (256,)), None),
    ]:
        change()
        if words is None:  # a flat array reshaped in place to the compiled shape is fine
            k(a, b, flat)
            np.testing.assert_allclose(flat, product(a, b), rtol=1e-5, atol=1e-5)
        else:
            with pytest.raises(ValueError, match=words):
                k(a, b, c)
        undo()
    with pytest.raises(ValueError, match="buffer C.*shape"):
        k(a, b, flat)
    k(a, b, c)
    np.testing.assert_allclose(c, product(a, b), rtol=1e-5, atol=1e-5)
    assert k.native_runs == 3


def test_arrays_the_python_path_accepts_run_there(sq):
    """A subclass of ndarray, or a float32 dtype that is not numpy's own object (it carries
    metadata), fail the native checks (exact type, the dtype object itself) but pass the
    Python path's: they run, correctly, on the Python path."""
    _, k = sq
    a, b, c = fresh()

    class Sub(np.ndarray):
        pass

    odd = np.dtype(np.float32, metadata={"unit": "m"})
    assert odd == np.float32 and odd is not np.dtype(np.float32)
    for args in [(a.view(Sub), b, c), (a, b, c.view(Sub)), (a, b.astype(odd), c)]:
        c[...] = np.nan
        k(*args)
        np.testing.assert_allclose(c, product(a, b), rtol=1e-5, atol=1e-5)
    assert k.native_runs == 0


def test_missing_duplicate_unknown_and_extra_buffers(sq):
    _, k = sq
    a, b, c = fresh()
    with pytest.raises(ValueError, match="missing buffer"):
        k(A=a, B=b)
    with pytest.raises(ValueError, match="missing buffer"):
        k(a, b)
    with pytest.raises(ValueError, match="no buffer D"):
        k(A=a, B=b, C=c, D=c)
    with pytest.raises(ValueError, match="no buffer D"):
        k(A=a, B=b, D=c)
    with pytest.raises(ValueError, match="given twice"):
        k(a, b, c, C=c)
    with pytest.raises(ValueError, match="given twice"):
        k(a, b, A=a)
    with pytest.raises(ValueError, match="takes 3 buffers, 4 given"):
        k(a, b, c, c)
    assert k.native_runs == 0
    np.testing.assert_array_equal(c, np.full((16, 16), np.nan, np.float32))


def test_keywords_that_are_not_the_interned_names_are_bound_in_python(sq):
    _, k = sq
    a, b, c = fresh()
    names = ["".join(["A"]), "".join(["B", ""]), str(bytearray(b"C"), "ascii")]
    k(**dict(zip(names, (a, b, c))))
    np.testing.assert_allclose(c, product(a, b), rtol=1e-5, atol=1e-5)
    assert k.native_runs == 1  # bound in Python, then run natively


def test_temporaries_on_the_native_path():
    func = parse(TEMPS)
    k = runtime.compile(func, threads=1)
    assert k._native is not None
    a = random_args(func)
    want = run(func, **a)
    for _ in range(3):  # Z is zeroed again every call: A, not 2A, 3A
        a["B"][...] = np.nan
        a["C"][...] = np.nan
        k(**a)
        np.testing.assert_array_equal(a["B"], want["B"])
        np.testing.assert_array_equal(a["C"], want["C"])
    assert k.native_runs == 3


def _wrong_on_two_threads(k, func, calls: int) -> list:
    """``calls`` calls of ``k`` on each of two threads at once, each on its own inputs
    (seeds 1 and 2): the seeds of the calls whose ``B`` or ``C`` differ from the
    interpreter's."""
    errors = []

    def worker(seed):
        a = random_args(func, seed=seed)
        want = run(func, **a)
        for _ in range(calls):
            k(**a)
            if not (np.array_equal(a["B"], want["B"]) and np.array_equal(a["C"], want["C"])):
                errors.append(seed)

    on_two_threads(worker)
    return errors


def test_temporaries_are_private_to_each_calling_thread():
    func = parse(TEMPS)
    k = runtime.compile(func, threads=1)
    assert not _wrong_on_two_threads(k, func, 300)
    assert k.native_runs == 600


# TEMPS with temporaries past the stack's share (166 KB) and enough work to release the GIL
BIG_TEMPS = TEMPS.replace("8, 6", "320, 64").replace("8, 8", "320, 66").replace("8, 2", "320, 2") \
    .replace("j + 6", "j + 64")


def _area_in_use(kernel) -> np.ndarray:
    """The word of the kernel's area that says a call has it (``codegen.CALLER_AREA``)."""
    address = int(kernel._block[codegen.CALLER_AREA])
    return np.ctypeslib.as_array(ctypes.cast(address, ctypes.POINTER(ctypes.c_int64)), (1,))


def test_temporaries_past_the_stack_run_natively_in_the_kernels_area():
    func = parse(BIG_TEMPS)
    layout = codegen.caller_layout(func)
    assert layout["stack"] == 0 and layout["area"] > codegen.CALLER_MAX_TEMPORARY_BYTES
    k = runtime.compile(func, threads=1)
    assert k._native is not None and k._block[codegen.CALLER_RELEASE_GIL]
    a = random_args(func, special=True)
    want = run(func, **a)
    for _ in range(3):  # Z is zeroed again every call: A, not 2A, 3A
        a["B"][...] = np.nan
        a["C"][...] = np.nan
        k(**a)
        np.testing.assert_array_equal(a["B"], want["B"])
        np.testing.assert_array_equal(a["C"], want["C"])
    assert k.native_runs == 3
    assert _area_in_use(k)[0] == 0, "a call gives the area back"
    # held by a call on another thread: this one runs on the Python path's temporaries
    in_use = _area_in_use(k)
    in_use[0] = 1
    try:
        a["B"][...] = np.nan
        k(**a)
        np.testing.assert_array_equal(a["B"], want["B"])
        assert k.native_runs == 3 and k._local.temps
    finally:
        in_use[0] = 0
    k(**a)
    assert k.native_runs == 4


def test_a_kernels_area_is_used_by_one_call_at_a_time():
    func = parse(BIG_TEMPS)
    for threads in (1, 2):
        k = runtime.compile(func, threads=threads)
        assert not _wrong_on_two_threads(k, func, 100)
        assert _area_in_use(k)[0] == 0


def test_a_large_kernel_releases_the_gil_and_runs_from_two_threads():
    n = 96
    func = parse(f"""
@prim_func
def mm(A: f32[{n}, {n}], B: f32[{n}, {n}], C: f32[{n}, {n}]):
    for i, j in grid({n}, {n}):
        C[i, j] = 0.0
        for k in range({n}):
            C[i, j] += A[i, k] * B[k, j]
""")
    small = runtime.compile(parse(SQ), threads=1)
    assert not small._block[codegen.CALLER_RELEASE_GIL]  # 8192 operations
    for threads in (1, 2):
        k = runtime.compile(func, threads=threads)
        assert k._block[codegen.CALLER_RELEASE_GIL]
        errors = []

        def worker(seed):
            a = random_args(func, seed=seed)
            want = product(a["A"], a["B"])
            for _ in range(40):
                a["C"][...] = np.nan
                k(**a)
                if not np.allclose(a["C"], want, rtol=1e-4, atol=1e-4):
                    errors.append(seed)

        on_two_threads(worker)
        assert not errors
        assert k.native_runs == 80
        # refused calls reach the Python path
        a = random_args(func)
        with pytest.raises(ValueError, match="buffer C shares memory with buffer A"):
            k(a["A"], a["B"], a["A"])
        with pytest.raises(ValueError, match="buffer B.*dtype"):
            k(A=a["A"], B=a["B"].astype(np.float64), C=a["C"])
        k(**{"".join(["A"]): a["A"], "B": a["B"], "C": a["C"]})
        np.testing.assert_allclose(a["C"], product(a["A"], a["B"]), rtol=1e-4, atol=1e-4)
        assert k.native_runs == 81


def test_a_kernel_with_too_many_buffers_has_no_native_path():
    n = codegen.CALLER_MAX_BUFFERS + 1
    params = ", ".join(f"X{i}: f32[4]" for i in range(n - 1))
    body = " + ".join(f"X{i}[j]" for i in range(n - 1))
    func = parse(f"""
@prim_func
def many({params}, Y: f32[4]):
    for j in range(4):
        Y[j] = {body}
""")
    k = runtime.compile(func, threads=1)
    assert k._native is None
    a = random_args(func)
    k(**a)
    np.testing.assert_array_equal(a["Y"], run(func, **a)["Y"])


def test_a_layout_that_disagrees_leaves_the_python_path(monkeypatch):
    monkeypatch.setattr(runtime, "_layout_agrees", lambda: False)
    runtime.native_calls.cache_clear()
    try:
        assert not runtime.native_calls()
        func = parse(SQ)
        k = runtime.compile(func, threads=1)
        assert k._native is None
        a, b, c = fresh()
        k(a, b, c)
        np.testing.assert_allclose(c, product(a, b), rtol=1e-5, atol=1e-5)
        with pytest.raises(ValueError, match="buffer C shares memory"):
            k(a, b, a)
        assert k.native_runs == 0
    finally:
        monkeypatch.undo()
        runtime.native_calls.cache_clear()
    assert runtime.native_calls()


def test_the_layout_check_reads_this_processs_objects():
    assert runtime._layout_agrees()
    # a field said to be elsewhere is caught
    fields = dict(codegen.NDARRAY_FIELDS)
    for name in ("data", "nd", "descr", "flags"):
        moved = dict(fields, **{name: fields[name] + 8 if name != "flags" else 24})
        with pytest.MonkeyPatch.context() as m:
            m.setattr(codegen, "NDARRAY_FIELDS", moved)
            assert not runtime._layout_agrees(), name


def test_the_call_outlives_its_kernel(sq):
    """The builtin a kernel calls through holds what its code points to: taken from a
    kernel that is then dropped, it still checks, runs, and falls back to the Python path."""
    import gc

    k = runtime.compile(parse(SQ), threads=1)
    call = type(k).__call__
    del k
    gc.collect()
    a, b, c = fresh()
    call(a, b, c)
    np.testing.assert_allclose(c, product(a, b), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="buffer C shares memory"):
        call(A=a, B=b, C=a)
    with pytest.raises(ValueError, match="buffer A.*shape"):
        call(a[:15], b, c)
