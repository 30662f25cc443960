"""Intrinsic descriptors, the registry, and every implementation against its own semantics.

The reference is always the interpreter running the descriptor's semantics on packed copies;
the implementation under test runs on views in other layouts (transposed, reversed,
every other element, unaligned), and must agree exactly for integers and within the
rounding a reassociated or fused float sum allows.
"""

from __future__ import annotations

import ctypes
import inspect
import re
import textwrap

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import intrinsics
from intrinsics import emit
from intrinsics.base import IntrinsicError, host_features
from intrinsics.x86 import FmaF32x8
from rewrite import codegen, emitter, ir, target
from rewrite.interp import run
from rewrite.ir import is_float, numpy_dtype
from rewrite.script import ScriptError, f32, grid, i16, i64  # noqa: F401 - read by the parser
from rewrite.tools import intrinsic_bench

X86_AVX2 = ["x86.fma.f32x8", "x86.axpy.f32x8", "x86.mm.f32.6x16x1", "x86.dot.u8i8i32.16x4"]
X86_AVX2 += ["x86.gemv.f32.4x8", "x86.mm.u8i8i32.2x16x4", "x86.axpy.f32x32", "x86.mm.f32.4x16x1"]
X86_AVX2 += ["x86.mm.f32.2x16x1", "x86.mm.u8i8i32.4x16x2"]
X86_AVX2 += ["x86.mm.f64.6x8x1", "x86.mm.f64.4x8x1", "x86.mm.f64.2x8x1", "x86.gemv.f64.4x4",
             "x86.axpy.f64x16"]
X86_AVX2 += ["x86.mm.f16f32.6x16x1", "x86.mm.f16f32.4x16x1", "x86.mm.f16f32.2x16x1"]
X86_AVX2 += ["x86.mm.i16i32.4x16x2", "x86.mm.i16i8i32.4x16x2"]
X86_AVX512 = ["x86.avx512.mm.f32.8x32x1", "x86.avx512.gemv.f32.8x8", "x86.avx512.axpy.f32x64"]
X86_AVX512 += ["x86.avx512.gemv.f32.8x16", "x86.avx512.gemvt.f32.8x8", "x86.avx512.gemvt.f32.8x16"]
X86_AVX512 += ["x86.avx512.mm.f64.8x16x1", "x86.avx512.mm.f16f32.8x32x1"]
X86_VNNI = ["x86.avx512vnni.dot.u8i8i32.16x4", "x86.avx512vnni.mm.u8i8i32.8x32x4",
            "x86.avx512vnni.mm.i16i32.8x32x2", "x86.avx512vnni.mm.i16i8i32.8x32x2"]
X86_AMX = ["x86.amx.mm.u8i8i32.32x32x64"]
X86_NATIVE = X86_AVX2 + X86_AVX512 + X86_VNNI + X86_AMX  # native emitters, where the CPU has the ISA
NEVER_NATIVE = ["arm.neon.sdot.i8i32.4x4", "nvidia.mma.f16f32.16x8x16"]
EMULATED = X86_VNNI + X86_AMX + NEVER_NATIVE  # also checked as emulations on every host
HAS_AVX2 = {"avx2", "fma"} <= host_features()
needs_avx2 = pytest.mark.skipif(not HAS_AVX2, reason="the host has no AVX2 + FMA")


def needs_isa(name: str):
    """Skip unless this CPU runs ``name``'s instructions, saying which features it lacks."""
    missing = set(intrinsics.get(name).isa) - host_features()
    return pytest.mark.skipif(bool(missing), reason=f"the host lacks {', '.join(sorted(missing))}")


def on_isa(*names: str) -> list:
    """``names`` as parameters, each skipped (``needs_isa``) unless this CPU runs it."""
    return [pytest.param(n, marks=needs_isa(n)) for n in names]


# ---------------------------------------------------------------------------
# inputs and layouts

LAYOUTS = ("packed", "transposed", "reversed", "every-other", "unaligned")
SENTINEL = 7


def elements(dtype: str):
    """Full range for integers; floats large enough to round, small enough not to overflow."""
    dt = np.dtype(numpy_dtype(dtype))
    if dt.kind in "iu":
        info = np.iinfo(dt)
        return st.integers(int(info.min), int(info.max))
    if dtype == "f16":
        return st.floats(-1e3, 1e3, width=16, allow_subnormal=False)
    return st.floats(-1e6, 1e6, width=dt.itemsize * 8, allow_subnormal=False)


def operand_arrays(desc):
    return st.fixed_dictionaries({
        o.name: hnp.arrays(numpy_dtype(o.dtype), o.shape, elements=elements(o.dtype))
        for o in desc.operands})


def operand_layouts(desc):
    return st.fixed_dictionaries({o.name: st.sampled_from(LAYOUTS) for o in desc.operands})


def place(values: np.ndarray, layout: str) -> tuple[np.ndarray, np.ndarray]:
    """A view holding ``values`` in ``layout``, and the whole buffer behind it."""
    if layout == "packed":
        view = values.copy()
        return view, view
    if layout == "transposed":  # the last dim varies slowest in memory
        base = np.ascontiguousarray(values.T)
        return base.T, base
    if layout == "reversed":  # negative strides in every dim
        base = np.flip(values).copy()
        return np.flip(base), base
    if layout == "every-other":
        base = np.full(tuple(2 * n for n in values.shape), SENTINEL, values.dtype)
        view = base[tuple(slice(None, None, 2) for _ in values.shape)]
        view[...] = values
        return view, base
    assert layout == "unaligned"  # one element past a 64-byte boundary
    raw = np.zeros(values.nbytes + 128, np.uint8)
    start = (-raw.ctypes.data) % 64 + values.itemsize
    view = raw[start:start + values.nbytes].view(values.dtype).reshape(values.shape)
    view[...] = values
    return view, view


def tolerance(desc, arrays: dict[str, np.ndarray]) -> np.ndarray:
    """Per output element: a few ulps of the sum of the magnitudes of its terms (the
    interpreter on absolute values), times the number of terms."""
    absolute = run(desc.semantics, **{n: np.abs(a) for n, a in arrays.items()})[desc.output.name]
    terms = desc.iterations // int(np.prod(desc.output.shape))
    eps = np.finfo(absolute.dtype).eps
    return 4 * (terms + 1) * eps * absolute.astype(np.float64) + 1e-30


def check_against_semantics(desc, impl, arrays, layouts) -> None:
    want = run(desc.semantics, **arrays)[desc.output.name]
    placed = {n: place(a, layouts[n]) for n, a in arrays.items()}
    impl(**{n: view for n, (view, _) in placed.items()})
    out_view, out_base = placed[desc.output.name]
    got = np.array(out_view)
    if is_float(desc.output.dtype):
        err = np.abs(got.astype(np.float64) - want.astype(np.float64))
        assert (err <= tolerance(desc, arrays)).all(), (got, want)
    else:
        np.testing.assert_array_equal(got, want)
    if layouts[desc.output.name] == "every-other":  # nothing written between the elements
        rest = out_base.copy()
        rest[tuple(slice(None, None, 2) for _ in rest.shape)] = SENTINEL
        assert (rest == SENTINEL).all()
    for name, (view, _) in placed.items():  # inputs untouched
        if name != desc.output.name:
            np.testing.assert_array_equal(view, arrays[name])


_impls: dict[tuple, emit.CompiledIntrinsic] = {}


def implementation(name: str, mode: str) -> emit.CompiledIntrinsic:
    """Compiled once per test session; each keeps its functions per stride pattern."""
    key = (name, mode)
    if key not in _impls:
        _impls[key] = intrinsics.compile_intrinsic(
            name, native=(mode == "native"), specialize=(mode != "runtime-strides"))
    return _impls[key]


def verify(name: str, mode: str, data) -> None:
    desc = intrinsics.get(name)
    arrays = data.draw(operand_arrays(desc), label="arrays")
    layouts = data.draw(operand_layouts(desc), label="layouts")
    check_against_semantics(desc, implementation(name, mode), arrays, layouts)


# ---------------------------------------------------------------------------
# every built-in implementation against its semantics

CASES = ([pytest.param(n, "native", marks=needs_isa(n)) for n in X86_NATIVE]
         + [pytest.param(n, "emulated") for n in X86_NATIVE + NEVER_NATIVE]
         + [pytest.param(n, "runtime-strides", marks=needs_isa(n)) for n in X86_NATIVE]
         + [pytest.param(n, "runtime-strides", marks=pytest.mark.skipif(
             not set(intrinsics.get(n).isa) - host_features(), reason="native on this host"))
            for n in EMULATED])


@pytest.mark.parametrize("name, mode", CASES)
@settings(max_examples=15)
@given(data=st.data())
def test_implementation_matches_semantics(name, mode, data):
    verify(name, mode, data)


@pytest.mark.parametrize("name, mode", [pytest.param("x86.dot.u8i8i32.16x4", "native",
                                                     marks=needs_avx2),
                                        ("x86.dot.u8i8i32.16x4", "emulated"),
                                        pytest.param("x86.avx512vnni.dot.u8i8i32.16x4", "native",
                                                     marks=needs_isa(X86_VNNI[0])),
                                        ("x86.avx512vnni.dot.u8i8i32.16x4", "emulated")])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_u8_i8_extremes_are_exact(name, mode, layout):
    # 255 * -128 = -32640, four times: -130560. Two such products already leave int16
    # (vpmaddubsw would saturate at -32768).
    impl = implementation(name, mode)
    c = place(np.full(16, 5, np.int32), layout)[0]
    impl(c=c, a=place(np.full(4, 255, np.uint8), layout)[0],
         b=place(np.full((16, 4), -128, np.int8), layout)[0])
    assert (c == 5 - 130560).all()


def test_sdot_extremes_are_exact():
    impl = implementation("arm.neon.sdot.i8i32.4x4", "emulated")
    c = np.array([0, 1, -1, 2**31 - 1], np.int32)
    a = np.full((4, 4), -128, np.int8)
    impl(c=c, a=a, b=a.copy())
    # (-128)^2 * 4 = 65536; the last lane wraps around like i32 addition
    np.testing.assert_array_equal(c, np.array([65536, 65537, 65535, -2**31 + 65535], np.int32))


@needs_avx2
def test_native_fma_rounds_once():
    # (1 + 2^-12)^2 = 1 + 2^-11 + 2^-24: the last term is lost when the product rounds
    # first; a fused multiply-add keeps it against c = -1.
    x = np.float32(1 + 2**-12)
    c = np.full(8, -1, np.float32)
    implementation("x86.fma.f32x8", "native")(c=c, a=np.full(8, x), b=np.full(8, x))
    assert (c == np.float32(2**-11 + 2**-24)).all()


def test_mma_f16_inputs():
    impl = implementation("nvidia.mma.f16f32.16x8x16", "emulated")
    a = np.full((16, 16), 0.5, np.float16)
    b = np.full((16, 8), -3.0, np.float16)
    c = np.ones((16, 8), np.float32)
    impl(c=c, a=a, b=b)
    assert (c == 1 + 16 * 0.5 * -3.0).all()


# ---------------------------------------------------------------------------
# the k-loop micro-kernel: accumulators carried through consecutive calls


def kloop(name: str, strides, advance, dtypes=None, emulated=False):
    """``name``'s k-loop, compiled (the emulation from its semantics if ``emulated``);
    ``dtypes``: operands held in another dtype than their own (``Layout.widened``)."""
    desc = intrinsics.get(name)
    module = codegen.new_module("kloop")
    symbol = "kloop_test_" + name.replace(".", "_") + "".join(f"_{k}{v}" for k, v in sorted((dtypes or {}).items()))
    symbol += "_emulated" if emulated else ""
    emitter.kloop_function(module, desc, codegen.Emulated(desc) if emulated else desc.emitter, symbol,
                           strides, advance, dtypes=dtypes)
    (address,) = emit.jit_module(module, [symbol])
    return ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64)(address)


def pointers(*arrays):
    return (ctypes.c_void_p * len(arrays))(*(a.ctypes.data for a in arrays))


@needs_avx2
def test_mm_kloop_is_a_gemm_micro_kernel():
    rng = np.random.default_rng(1)
    k = 37
    a_packed = rng.uniform(-1, 1, (k, 6)).astype(np.float32)  # a[i, 0] of step s at s*6 + i
    b_packed = rng.uniform(-1, 1, (k, 16)).astype(np.float32)
    c = rng.uniform(-1, 1, (6, 16)).astype(np.float32)
    want = c.astype(np.float64) + a_packed.T.astype(np.float64) @ b_packed.astype(np.float64)
    fn = kloop("x86.mm.f32.6x16x1", {"c": (16, 1), "a": (1, 6), "b": (16, 1)}, {"a": 6, "b": 16})
    fn(pointers(c, a_packed, b_packed), k, 2)  # twice: c += 2 * A @ B
    want = want + a_packed.T.astype(np.float64) @ b_packed.astype(np.float64)
    np.testing.assert_allclose(c, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", on_isa("x86.axpy.f32x32", "x86.avx512.axpy.f32x64"))
def test_axpy_kloop_is_a_row_of_the_transposed_product(name):
    # y[j] += sum_i x[i] * A[i, j] along a k-loop over the rows i, an odd count of them, so
    # that the two alternating sets of partial sums end unevenly before they are joined
    rng = np.random.default_rng(2)
    n, k = intrinsics.get(name).output.shape[0], 37
    a = rng.uniform(-1, 1, (k, n + 3)).astype(np.float32)  # rows longer than one call
    x = rng.uniform(-1, 1, k).astype(np.float32)
    c = rng.uniform(-1, 1, n).astype(np.float32)
    want = c.astype(np.float64) + x.astype(np.float64) @ a[:, :n].astype(np.float64)
    fn = kloop(name, {"c": (1,), "a": (1,), "b": (1,)}, {"a": 1, "b": n + 3})
    fn(pointers(c, x, a), k, 1)
    np.testing.assert_allclose(c, want, rtol=1e-5, atol=1e-5)


@needs_isa("x86.avx512.gemv.f32.8x8")
def test_avx512_gemv_kloop_sums_each_row():
    name = "x86.avx512.gemv.f32.8x8"
    rng = np.random.default_rng(3)
    k = 7  # 7 steps of 8 columns: 56 columns of 8 rows
    a = rng.uniform(-1, 1, (8, 8 * k + 5)).astype(np.float32)
    x = rng.uniform(-1, 1, 8 * k).astype(np.float32)
    c = rng.uniform(-1, 1, 8).astype(np.float32)
    want = c.astype(np.float64) + a[:, :8 * k].astype(np.float64) @ x.astype(np.float64)
    fn = kloop(name, {"c": (1,), "a": (8 * k + 5, 1), "b": (1,)}, {"a": 8, "b": 8})
    fn(pointers(c, a, x), k, 1)
    np.testing.assert_allclose(c, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", on_isa("x86.avx512.gemvt.f32.8x8", "x86.avx512.gemvt.f32.8x16"))
def test_gemvt_kloop_adds_each_block_of_rows(name):
    # s[j] += sum_i r[i] * A[i, j] along a k-loop over blocks of 8 rows: each step's eight
    # partial sums, one per row, are added together once at the end
    rng = np.random.default_rng(4)
    width, k = intrinsics.get(name).output.shape[0], 5
    a = rng.uniform(-1, 1, (8 * k, width + 3)).astype(np.float32)  # rows longer than a call
    r = rng.uniform(-1, 1, 8 * k).astype(np.float32)
    c = rng.uniform(-1, 1, width).astype(np.float32)
    want = c.astype(np.float64) + r.astype(np.float64) @ a[:, :width].astype(np.float64)
    fn = kloop(name, {"c": (1,), "a": (width + 3, 1), "b": (1,)}, {"a": 8 * (width + 3), "b": 8})
    fn(pointers(c, a, r), k, 1)
    np.testing.assert_allclose(c, want, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------
# the registry and targets


@pytest.mark.parametrize("name", on_isa("x86.avx512vnni.dot.u8i8i32.16x4", "x86.dot.u8i8i32.16x4"))
def test_dot_kloop_is_exact(name):
    rng = np.random.default_rng(2)
    k = 50
    a = rng.integers(0, 256, (k, 4), dtype=np.uint8)
    b = rng.integers(-128, 128, (k, 16, 4), dtype=np.int8)
    a[0], b[0] = 255, -128
    c = np.zeros(16, np.int32)
    fn = kloop(name, {"c": (1,), "a": (1,), "b": (4, 1)}, {"a": 4, "b": 64})
    fn(pointers(c, a, b), k, 1)
    want = np.einsum("sk,sik->i", a.astype(np.int64), b.astype(np.int64))
    np.testing.assert_array_equal(c, want)


@pytest.mark.parametrize("name, k, seed", [
    pytest.param("x86.avx512vnni.mm.u8i8i32.8x32x4", 40, 3,
                 marks=needs_isa("x86.avx512vnni.mm.u8i8i32.8x32x4")),
    pytest.param("x86.mm.u8i8i32.2x16x4", 45, 4, marks=needs_isa("x86.mm.u8i8i32.2x16x4"))])
def test_int8_tile_kloop_is_exact(name, k, seed):
    # every byte of a at its own value (a shuffle that mixed a's bytes or rows, or dropped the
    # zero extension, would show), and the extremes 255 * -128 four times at the first step
    rows, cols = intrinsics.get(name).output.shape
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (rows, 4 * k), dtype=np.uint8)  # row-major A: a step moves 4 bytes
    b = rng.integers(-128, 128, (k, cols, 4), dtype=np.int8)  # B in blocks of cols x 4 bytes
    a[:, :4], b[0] = 255, -128
    c = rng.integers(-1000, 1000, (rows, cols)).astype(np.int32)
    want = c + np.einsum("isq,sjq->ij", a.reshape(rows, k, 4).astype(np.int64), b.astype(np.int64))
    fn = kloop(name, {"c": (cols, 1), "a": (4 * k, 1), "b": (4, 1)}, {"a": 4, "b": 4 * cols})
    fn(pointers(c, a, b), k, 1)
    np.testing.assert_array_equal(c, want.astype(np.int32))


@pytest.mark.parametrize("held, emulated", [
    pytest.param({"a": "i16", "b": "i16"}, False, marks=needs_isa("x86.mm.u8i8i32.4x16x2")),
    pytest.param({}, False, marks=needs_isa("x86.mm.u8i8i32.4x16x2")),
    ({"a": "i16", "b": "i16"}, True)])
def test_widened_int8_tile_kloop_is_exact(held, emulated):
    # the four-row tile on the i16 copies pack-panel makes of a and b (``Layout.widened``)
    # and on the u8 and i8 themselves (a window no copy widened), and its emulation (a host
    # without AVX2) on the copies: the extremes 0 and 255
    # against -128 and 127 at the first steps, so a lost zero or sign extension, or a
    # saturating add, shows; every other element at its own random value
    name, k = "x86.mm.u8i8i32.4x16x2", 53
    rng = np.random.default_rng(5)
    a = rng.integers(0, 256, (4, 2 * k)).astype(np.uint8)  # row-major A: a step moves 2
    b = rng.integers(-128, 128, (k, 16, 2)).astype(np.int8)  # B in blocks of 16 x 2
    a[:, :4], b[0], b[1] = 255, -128, 127
    a[1, 4:6], b[2, :8] = 0, -128
    c = rng.integers(-2**31, 2**31, (4, 16), dtype=np.int64).astype(np.int32)
    c[0, :4] = 2**31 - 1  # the sum wraps, as i32 addition does
    want = c + np.einsum("isq,sjq->ij", a.reshape(4, k, 2).astype(np.int64), b.astype(np.int64))
    given = {"a": a.astype(np.int16) if "a" in held else a, "b": b.astype(np.int16) if "b" in held else b}
    fn = kloop(name, {"c": (16, 1), "a": (2 * k, 1), "b": (2, 1)}, {"a": 2, "b": 32}, held, emulated)
    fn(pointers(c, given["a"], given["b"]), k, 1)
    np.testing.assert_array_equal(c, want.astype(np.int32))


def _i16_rows(*names):
    """Each name native (where this CPU runs it) and emulated; the i16 x i8 rows also on b
    held as i16 (pack-panel's widened copy)."""
    for name in names:
        held = [{}, {"b": "i16"}] if "i16i8" in name else [{}]
        for h in held:
            tag = "-held" if h else ""
            yield pytest.param(name, False, h, marks=needs_isa(name), id=f"{name}{tag}")
            yield pytest.param(name, True, h, id=f"{name}{tag}-emulated")


@pytest.mark.parametrize("name, emulated, held", list(_i16_rows(
    "x86.mm.i16i32.4x16x2", "x86.avx512vnni.mm.i16i32.8x32x2",
    "x86.mm.i16i8i32.4x16x2", "x86.avx512vnni.mm.i16i8i32.8x32x2")))
def test_i16_tile_kloop_is_exact(name, emulated, held):
    # the extremes: -32768 * -32768 twice in one pair is 2^31, which wraps to -2^31 as i32
    # addition does (vpmaddwd's one overflow), and 32767 * -32768 (-128 for an i8 b);
    # accumulators near the ends of i32 so that the sums wrap; every other element at its
    # own random value
    desc = intrinsics.get(name)
    rows, cols = desc.output.shape
    b_dtype = np.dtype(ir.numpy_dtype([o for o in desc.inputs if o.name == "b"][0].dtype))
    lo, hi = np.iinfo(b_dtype).min, np.iinfo(b_dtype).max
    k = 37
    rng = np.random.default_rng(11)
    a = rng.integers(-2**15, 2**15, (rows, 2 * k)).astype(np.int16)  # row-major A: a step moves 2
    b = rng.integers(lo, hi + 1, (k, cols, 2)).astype(b_dtype)  # B in blocks of cols x 2
    a[:, :2], b[0] = -2**15, lo
    a[0, 2:4], b[1, :4] = 2**15 - 1, lo
    b[2, :4] = hi
    c = rng.integers(-2**31, 2**31, (rows, cols), dtype=np.int64).astype(np.int32)
    c[0, :4] = 2**31 - 1
    want = c + np.einsum("isq,sjq->ij", a.reshape(rows, k, 2).astype(np.int64), b.astype(np.int64))
    given = b.astype(np.int16) if held else b
    fn = kloop(name, {"c": (cols, 1), "a": (2 * k, 1), "b": (2, 1)}, {"a": 2, "b": 2 * cols}, held, emulated)
    fn(pointers(c, a, given), k, 1)
    np.testing.assert_array_equal(c, want.astype(np.int32))


def test_widened_int8_tile_kloop_is_loads_and_vpmaddwd():
    # compiled for Zen 3 (AVX2, 16 vector registers; not run), so every host checks it: on
    # the i16 copies each step is b's two 32-byte loads, a broadcast from memory a row and
    # 8 vpmaddwd + vpaddd: no widening shuffle, nothing spilled, no AVX-512 register
    strides, steps = {"c": (1024, 1), "a": (1024, 1), "b": (2, 1)}, {"a": 2, "b": 32}
    desc = intrinsics.get("x86.mm.u8i8i32.4x16x2")
    module = codegen.new_module("asm")
    emitter.kloop_function(module, desc, desc.emitter, "k", strides, steps, dtypes={"a": "i16", "b": "i16"})
    body, rest = _assembly_loop(module, "znver3", "vpmaddwd")
    assert _count(r"vpmaddwd", body) == 8 and _count(r"vpaddd", body) == 8
    assert _count(r"vpbroadcastd\s+[^,]*\(", body) == 4
    assert _count(r"vmovdqu\s+[^,]*\(", body) + _count(r"vpmaddwd\s+[^,]*\(", body) == 2
    assert _count(r"vpshufb|vpmov[sz]x|vpunpck|vperm|vpsh|vpbroadcast[bwq]|%rsp|%ymm(1[6-9]|2\d|3[01])", body) == 0
    assert _count(r"vpaddd\s[^\n]*\(", rest) == 8 and _count(r"prefetch(w|t0)\s", rest) >= 8


# CPUs that LLVM knows to have each ISA, and what the emitter's assembly must hold there
# (the 512-bit registers for the AVX-512 tile): checked on any host
CPU_WITH = {"x86.avx512vnni.dot.u8i8i32.16x4": ("znver4", "vpdpbusd"),
            "x86.avx512vnni.mm.u8i8i32.8x32x4": ("znver4", "vpdpbusd"),
            "x86.dot.u8i8i32.16x4": ("haswell", "vpmaddwd"),
            "x86.mm.f32.6x16x1": ("haswell", "vfmadd231ps"),
            "x86.avx512.mm.f32.8x32x1": ("skylake-avx512", r"vfmadd231ps\s[^\n]*%zmm"),
            "x86.mm.f64.6x8x1": ("haswell", r"vfmadd231pd\s[^\n]*%ymm"),
            "x86.gemv.f64.4x4": ("haswell", r"vfmadd\d+pd\s[^\n]*%ymm"),
            "x86.axpy.f64x16": ("haswell", r"vfmadd\d+pd\s[^\n]*%ymm"),
            # read in place as f16, each step converts (F16C)
            "x86.mm.f16f32.6x16x1": ("haswell", r"vcvtph2ps"),
            "x86.avx512.mm.f16f32.8x32x1": ("skylake-avx512", r"vcvtph2ps\s[^\n]*%zmm"),
            "x86.avx512.mm.f64.8x16x1": ("skylake-avx512", r"vfmadd231pd\s[^\n]*%zmm"),
            "x86.gemv.f32.4x8": ("haswell", "vfmadd231ps"),
            "x86.axpy.f32x32": ("haswell", r"vfmadd231ps\s[^\n]*%ymm"),
            # 256-bit, in the registers only AVX-512VL names (ymm16 to ymm31)
            "x86.avx512.gemv.f32.8x8": ("skylake-avx512", r"vfmadd\d+ps\s[^\n]*%ymm(1[6-9]|2\d|3[01])"),
            "x86.avx512.axpy.f32x64": ("skylake-avx512", r"vfmadd\d+ps\s[^\n]*%ymm(1[6-9]|2\d|3[01])"),
            "x86.avx512.gemv.f32.8x16": ("skylake-avx512", r"vfmadd\d+ps\s[^\n]*%zmm"),
            "x86.avx512.gemvt.f32.8x16": ("skylake-avx512", r"vfmadd\d+ps\s[^\n]*%zmm"),
            "x86.mm.u8i8i32.2x16x4": ("haswell", "vpmaddwd"),
            "x86.mm.u8i8i32.4x16x2": ("znver3", "vpmaddwd"),
            "x86.mm.i16i32.4x16x2": ("znver3", "vpmaddwd"),
            "x86.avx512vnni.mm.i16i32.8x32x2": ("znver4", r"vpdpwssd\s[^\n]*%zmm"),
            "x86.mm.i16i8i32.4x16x2": ("znver3", "vpmaddwd"),
            "x86.avx512vnni.mm.i16i8i32.8x32x2": ("znver4", r"vpdpwssd\s[^\n]*%zmm"),
            "x86.amx.mm.u8i8i32.32x32x64": ("sapphirerapids", "tdpbusd")}


def _kloop_assembly(name: str, cpu: str, strides: dict, steps: dict, marker: str):
    """The assembly of ``name``'s k-loop function compiled for ``cpu`` (not run, so every
    host checks it): ``(body, rest)``, the lines of the loop that holds the first line with
    ``marker`` and all the others."""
    desc = intrinsics.get(name)
    module = codegen.new_module("asm")
    emitter.kloop_function(module, desc, desc.emitter, "k", strides, steps)
    return _assembly_loop(module, cpu, marker)


def _assembly_loop(module, cpu: str, marker: str):
    """``module`` compiled for ``cpu``: ``_kloop_assembly``'s ``(body, rest)``."""
    import llvmlite.binding as llvm

    machine = llvm.Target.from_triple("x86_64-unknown-linux-gnu").create_target_machine(
        cpu=cpu, features="", opt=3)
    ref = llvm.parse_assembly(str(module))
    ref.triple = "x86_64-unknown-linux-gnu"
    lines = machine.emit_assembly(ref).splitlines()
    first = next(n for n, line in enumerate(lines) if marker in line)
    head = max(n for n in range(first) if re.match(r"\.LBB\w+:", lines[n]))
    label = lines[head].rstrip(":")
    back = next(n for n in range(first, len(lines)) if re.search(r"\sj\w+\s+" + re.escape(label) + "$", lines[n]))
    return lines[head:back + 1], lines[:head] + lines[back + 1:]


def _count(pattern: str, lines: list) -> int:
    return sum(bool(re.search(pattern, line)) for line in lines)


@pytest.mark.parametrize("name, cpu, fma, width", [
    ("x86.avx512.mm.f32.8x32x1", "znver4", 16, 32), ("x86.mm.f32.6x16x1", "znver3", 12, 16),
    ("x86.mm.f32.4x16x1", "znver3", 8, 16), ("x86.mm.f64.6x8x1", "znver3", 12, 8),
    ("x86.avx512.mm.f64.8x16x1", "znver4", 16, 16)])
def test_float_tile_reads_c_after_its_kloop(name, cpu, fma, width):
    # compiled for a CPU with the tile's ISA (not run), so every host checks it: the k-loop's
    # body holds the FMAs and no access to c; c's lines are prefetched and c is added once per
    # accumulator, outside the loop
    add = "vaddpd" if ".f64." in name else "vaddps"
    body, rest = _kloop_assembly(name, cpu, {"c": (1024, 1), "a": (1024, 1), "b": (width, 1)},
                                 {"a": 1, "b": width}, "vfmadd")
    assert _count(r"vfmadd", body) == fma
    assert _count(add + r"\s[^\n]*\(", rest) == fma and _count(r"prefetch(w|t0)\s", rest) >= fma // 2
    assert _count(r"prefetch|vadd", body) == 0


def test_f16_tile_reads_its_f32_copies_without_converting():
    # on the f32 panels pack-panel makes (``Layout.widened``) the f16 tile's k-loop is the f32
    # tile's: 12 FMAs, no conversion; read in place as f16 it converts b and each row of a
    desc = intrinsics.get("x86.mm.f16f32.6x16x1")
    strides = {"c": (1024, 1), "a": (1, 6), "b": (16, 1)}
    for dtypes, converts in (({"a": "f32", "b": "f32"}, 0), (None, 8)):
        module = codegen.new_module("asm")
        emitter.kloop_function(module, desc, desc.emitter, "k", strides, {"a": 6, "b": 16},
                               dtypes=dtypes)
        body, _ = _assembly_loop(module, "znver3", "vfmadd")
        assert _count(r"vfmadd", body) == 12
        assert _count(r"vcvtph2ps", body) == converts


def test_f32_tile_keeps_c_where_every_product_is_negative_zero():
    # the accumulators start at -0.0, the identity of addition: c = -0.0 plus products that
    # are all -0.0 stays -0.0 (from +0.0 it would be +0.0), and c = +0.0 stays +0.0
    name = "x86.avx512.mm.f32.8x32x1" if {"avx512f", "fma"} <= host_features() else "x86.mm.f32.6x16x1"
    if not HAS_AVX2:
        pytest.skip("this host runs neither f32 tile")
    desc = intrinsics.get(name)
    rows, cols = desc.emitter.rows, desc.emitter.width * desc.emitter.halves
    c = np.where(np.arange(rows * cols).reshape(rows, cols) % 2 == 0, -0.0, 0.0).astype(np.float32)
    want = c.copy()
    a = np.full((rows, 1), -0.0, np.float32)
    b = np.full((1, cols), 0.0, np.float32)
    intrinsics.compile_intrinsic(name)(c=c, a=a, b=b)
    assert np.array_equal(np.signbit(c), np.signbit(want)) and not c.any()


def test_int8_tile_reads_c_after_its_kloop():
    # compiled for Zen 4 (not run), so every host checks it: the k-loop's body is b's two
    # 64-byte blocks, a's 8 broadcasts and 16 vpdpbusd on accumulators that start at zero;
    # c's lines are prefetched (8 rows of 128 bytes: at least two each) and c is added
    # once per accumulator, both outside the loop
    body, rest = _kloop_assembly("x86.avx512vnni.mm.u8i8i32.8x32x4", "znver4",
                                 {"c": (1024, 1), "a": (1024, 1), "b": (4, 1)}, {"a": 4, "b": 128},
                                 "vpdpbusd")
    assert _count(r"vpdpbusd", body) == 16 and _count(r"vpdpbusd", rest) == 0
    assert _count(r"vpbroadcastd\s", body) == 8 and _count(r"vmovdqu\w*\s+[^,]*\(", body) == 2
    assert _count(r"vpaddd\s[^\n]*\(", rest) == 16 and _count(r"prefetch(w|t0)\s", rest) >= 16
    assert _count(r"prefetch|vpaddd", body) == 0


@pytest.mark.parametrize("name, rows", [("x86.dot.u8i8i32.16x4", 1), ("x86.mm.u8i8i32.2x16x4", 2)])
def test_avx2_int8_kloop_widens_a_with_one_shuffle_a_row(name, rows):
    # compiled for Zen 3 (AVX2, 16 vector registers; not run), so every host checks it: each
    # row's four bytes of a are one vpbroadcastd from memory and one vpshufb, not vmovd,
    # vpmovzxbw and vpbroadcastq; b's block is four vpmovsxbw for all rows; nothing spills
    body, _ = _kloop_assembly(name, "znver3", {"c": (16, 1) if rows > 1 else (1,), "a": (1024, 1) if rows > 1 else (1,),
                                               "b": (4, 1)}, {"a": 4, "b": 64}, "vpmaddwd")
    assert _count(r"vpmaddwd", body) == 4 * rows and _count(r"vpaddd", body) == 4 * rows
    assert _count(r"vpbroadcastd\s+[^,]*\(", body) == rows and _count(r"vpshufb", body) == rows
    assert _count(r"vpmovsxbw\s+[^,]*\(", body) == 4
    assert _count(r"vpmovzxbw|vpbroadcastq|vmovd\s|%rsp|%ymm(1[6-9]|2\d|3[01])", body) == 0


@pytest.mark.parametrize("name", sorted(CPU_WITH))
def test_native_emitter_uses_its_instruction(name):
    # compiled for a CPU that has the ISA (not run), so hosts without it check the emitter too
    import llvmlite.binding as llvm

    cpu, instruction = CPU_WITH[name]
    desc = intrinsics.get(name)
    module = codegen.new_module("asm")
    packed = {p.name: p.strides for p in desc.semantics.params}
    emitter.kloop_function(module, desc, desc.emitter, "k", packed, {})
    machine = llvm.Target.from_triple("x86_64-unknown-linux-gnu").create_target_machine(
        cpu=cpu, features="", opt=3)
    ref = llvm.parse_assembly(str(module))
    ref.triple = "x86_64-unknown-linux-gnu"
    asm = machine.emit_assembly(ref)
    assert re.search(instruction, asm), f"{name} compiled for {cpu} has no {instruction}"


def test_host_library_is_what_this_cpu_runs():
    names = [d.name for d in intrinsics.library("host")]
    features = host_features()
    for n in X86_NATIVE:
        runs_here = set(intrinsics.get(n).isa) <= features and target.host_arch() == "x86"
        assert (n in names) == runs_here, n
    for n in NEVER_NATIVE:
        assert n not in names


def test_all_holds_the_whole_built_in_library():
    names = {d.name for d in intrinsics.library("all")}
    assert set(X86_NATIVE + EMULATED) <= names
    assert {d.name for d in intrinsics.all()} == names


def test_isa_targets():
    assert {d.name for d in intrinsics.library("x86-avx2")} >= set(X86_AVX2)
    assert "x86.avx512vnni.dot.u8i8i32.16x4" not in {d.name for d in intrinsics.library("x86-avx2")}
    assert "x86.avx512vnni.dot.u8i8i32.16x4" in {d.name for d in intrinsics.library("x86-avx512vnni")}
    assert [d.name for d in intrinsics.library("arm-dotprod")] == ["arm.neon.sdot.i8i32.4x4"]
    assert [d.name for d in intrinsics.library("nvidia-sm80")] == ["nvidia.mma.f16f32.16x8x16"]
    with pytest.raises(IntrinsicError, match="unknown target riscv"):
        intrinsics.library("riscv")


def test_unknown_name():
    with pytest.raises(IntrinsicError, match="no intrinsic named x86.nope"):
        intrinsics.get("x86.nope")


def test_descriptor_fields():
    mm = intrinsics.get("x86.mm.f32.6x16x1")
    assert [(d.name, d.extent, d.kind) for d in mm.dims] == \
        [("i", 6, "spatial"), ("j", 16, "spatial"), ("k", 1, "reduction")]
    assert mm.output.name == "c" and [o.name for o in mm.inputs] == ["a", "b"]
    assert [(o.name, o.dims, o.shape, o.dtype) for o in mm.operands] == [
        ("c", ("i", "j"), (6, 16), "f32"), ("a", ("i", "k"), (6, 1), "f32"),
        ("b", ("k", "j"), (1, 16), "f32")]
    assert mm.layout["b"].unit_stride == (1,)
    assert mm.accesses("k") == (("a", 1), ("b", 0))
    assert mm.accesses("j") == (("c", 1), ("b", 1))
    axpy = intrinsics.get("x86.axpy.f32x8")
    assert axpy.operand("a").dims == (None,)  # a[0]: a unit dim, no loop
    dot = intrinsics.get("x86.dot.u8i8i32.16x4")
    assert [(o.name, o.dtype) for o in dot.operands] == [("c", "i32"), ("a", "u8"), ("b", "i8")]
    assert intrinsics.get("nvidia.mma.f16f32.16x8x16").emitter is None


def test_describe_lists_semantics_and_where_it_runs():
    text = intrinsics.describe("all")
    for n in X86_NATIVE + EMULATED:
        assert n in text
    assert "c[i] += a[i] * b[i]" in text
    assert "c[i, j] += f32(a[i, k]) * f32(b[k, j])" in text
    line = next(ln for ln in text.splitlines() if ln.startswith("nvidia.mma"))
    assert "emulated" in line and "sm_80" in line
    if HAS_AVX2:
        line = next(ln for ln in text.splitlines() if ln.startswith("x86.fma.f32x8"))
        assert "native" in line


# ---------------------------------------------------------------------------
# a user's intrinsic, semantics only: emulated and verified like the built-ins


def widening_gemv(c: i64[5], a: i16[3, 5], b: i16[3]):
    for i, k in grid(5, 3):
        c[i] += i64(a[k, i]) * i64(b[k])


@pytest.fixture
def user_intrinsic():
    desc = intrinsics.register("user.gemv.i16i64.5x3", widening_gemv, cost=2.0)
    yield desc
    intrinsics.unregister(desc.name)


def test_user_intrinsic_is_registered_and_emulated(user_intrinsic):
    assert not user_intrinsic.native
    assert user_intrinsic.arch == "any"
    assert user_intrinsic in intrinsics.library("all")
    assert user_intrinsic not in intrinsics.library("host")
    assert user_intrinsic.source.endswith(f"{__file__}:{widening_gemv.__code__.co_firstlineno}")


@settings(max_examples=20)
@given(data=st.data())
def test_user_intrinsic_matches_semantics(data):
    name = "user.gemv.i16i64.5x3.h"
    intrinsics.register(name, widening_gemv)
    try:
        verify(name, "emulated", data)
    finally:  # registered for this example only: a library read by a later test stays as built
        intrinsics.unregister(name)


def test_load_file(tmp_path):
    path = tmp_path / "mine.py"
    path.write_text(textwrap.dedent("""\
        from intrinsics import intrinsic
        from rewrite.script import f64

        @intrinsic("user.file.scale.f64x2", cost=3.0)
        def scale(c: f64[2], a: f64[2]):
            for i in range(2):
                c[i] += 2.0 * a[i]
        """))
    try:
        loaded = intrinsics.load_file(path)
        assert [d.name for d in loaded] == ["user.file.scale.f64x2"]
        c = np.array([1.0, 2.0])
        intrinsics.compile_intrinsic("user.file.scale.f64x2")(c=c, a=np.array([0.25, -4.0]))
        np.testing.assert_array_equal(c, [1.5, -6.0])
    finally:
        intrinsics.unregister("user.file.scale.f64x2")


def test_load_file_missing(tmp_path):
    with pytest.raises(IntrinsicError, match="no such file"):
        intrinsics.load_file(tmp_path / "absent.py")


def test_load_file_is_all_or_nothing(tmp_path):
    path = tmp_path / "half.py"
    path.write_text(textwrap.dedent("""\
        from intrinsics import intrinsic
        from rewrite.script import f64

        @intrinsic("user.half.first", cost=1.0)
        def first(c: f64[2], a: f64[2]):
            for i in range(2):
                c[i] += a[i]

        @intrinsic("user.half.second", cost=1.0)
        def second(c: f64[2], a: f64[2]):
            for i in range(2):
                c[i] = a[i]
        """))
    with pytest.raises(IntrinsicError, match="user.half.second"):
        intrinsics.load_file(path)
    assert "user.half.first" not in {d.name for d in intrinsics.all()}


# ---------------------------------------------------------------------------
# registration errors: each bad descriptor, and words its message must hold


def two_statements(c: f32[8], a: f32[8]):
    for i in range(8):
        c[i] += a[i]
        c[i] += a[i]


def overwrites(c: f32[8], a: f32[8]):
    for i in range(8):
        c[i] = a[i]


def has_if(c: f32[8], a: f32[8]):
    for i in range(8):
        if i < 4:
            c[i] += a[i]


def unknown_dtype(c: bf16[8], a: f32[8]):  # noqa: F821 - bf16 is the error under test
    for i in range(8):
        c[i] += f32(a[i])


def reads_output(c: f32[8], a: f32[8]):
    for i in range(8):
        c[i] += c[i] * a[i]


def shifted_index(c: f32[8], a: f32[8]):
    for i in range(8):
        c[i] += a[7 - i]


def unused_operand(c: f32[8], a: f32[8], b: f32[8]):
    for i in range(8):
        c[i] += a[i]


def fma16(c: f32[16], a: f32[16], b: f32[16]):
    for i in range(16):
        c[i] += a[i] * b[i]


def fma8(c: f32[8], a: f32[8], b: f32[8]):
    for i in range(8):
        c[i] += a[i] * b[i]


def dot_i16(c: i32[4], a: u8[4], b: i8[4]):
    for i in range(4):
        c[i] += i32(a[i]) * i32(b[i])


class TwoOperandEmitter(emit.Emitter):
    operands = ("c", "a")


BAD = [
    ("bad.two", two_statements, {}, ["bad.two", "one accumulate", "2 statements"]),
    ("bad.store", overwrites, {}, ["bad.store", "+="]),
    ("bad.if", has_if, {}, ["bad.if", "if"]),
    ("bad.dtype", unknown_dtype, {}, ["bad.dtype", "unknown dtype bf16", "operand c"]),
    ("bad.reads", reads_output, {}, ["bad.reads", "output c", "accumulated into"]),
    ("bad.index", shifted_index, {}, ["bad.index", "operand a", "loop variable"]),
    ("bad.unused", unused_operand, {}, ["bad.unused", "operand b", "never used"]),
    ("bad.arity", fma8, {"emitter": TwoOperandEmitter()},
     ["bad.arity", "emitter takes operands (c, a)", "(c, a, b)"]),
    ("bad.shape", fma16, {"emitter": FmaF32x8()}, ["bad.shape", "emitter expects c of shape (8,)"]),
    ("bad.layout", fma8, {"layout": {"d": intrinsics.Layout((0,))}},
     ["bad.layout", "d", "not an operand"]),
    ("bad.layout.dim", fma8, {"layout": {"a": intrinsics.Layout((1,))}},
     ["bad.layout.dim", "dim 1", "1 dims"]),
    ("bad.cost", fma8, {"cost": -1}, ["bad.cost", "cost must be a positive number"]),
    # a widened copy holds every value of the operand in a wider type of its kind, and only
    # an input has one
    ("bad.widened.float", fma8, {"layout": {"a": intrinsics.Layout(widened="i32")}},
     ["bad.widened.float", "a (f32, input)", "widened to i32"]),
    ("bad.widened.float.narrow", fma8, {"layout": {"a": intrinsics.Layout(widened="f16")}},
     ["bad.widened.float.narrow", "a (f32, input)", "widened to f16"]),
    ("bad.widened.output", dot_i16, {"layout": {"c": intrinsics.Layout(widened="i64")}},
     ["bad.widened.output", "c (i32, output)"]),
    ("bad.widened.narrow", dot_i16, {"layout": {"a": intrinsics.Layout(widened="i8")}},
     ["bad.widened.narrow", "a (u8, input)", "widened to i8"]),
    ("bad.widened.sign", dot_i16, {"layout": {"b": intrinsics.Layout(widened="u8")}},
     ["bad.widened.sign", "b (i8, input)", "widened to u8"]),
    ("x86.fma.f32x8", fma8, {}, ["x86.fma.f32x8", "already registered"]),
]


@pytest.mark.parametrize("name, fn, options, words", BAD, ids=[c[0] for c in BAD])
def test_bad_descriptor_is_refused(name, fn, options, words):
    before = {d.name for d in intrinsics.all()}
    with pytest.raises((IntrinsicError, ScriptError)) as info:
        intrinsics.register(name, fn, **options)
    for w in words:
        assert w in str(info.value)
    assert {d.name for d in intrinsics.all()} == before


def not_script(c: f32[8], a: f32[8]):
    for i in range(8):
        print(a[i])  # bad script here


def test_bad_script_points_into_the_users_file():
    with pytest.raises(ScriptError) as info:
        intrinsics.register("bad.script", not_script)
    lines, first = inspect.getsourcelines(not_script)
    where = first + next(n for n, ln in enumerate(lines) if "bad script here" in ln)
    err = info.value
    assert err.file == __file__ and err.line == where
    assert err.col == lines[where - first].index("print") + 1
    assert "bad.script" in str(err) and f"{__file__}:{where}:" in str(err)


def test_decorator_returns_the_descriptor():
    @intrinsics.intrinsic("user.decorated.f32x4", isa=(), cost=1.5)
    def add4(c: f32[4], a: f32[4]):
        for i in range(4):
            c[i] += a[i]

    try:
        assert add4 is intrinsics.get("user.decorated.f32x4")
        assert add4.cost == 1.5 and add4.semantics.name == "add4"
        c = np.zeros(4, np.float32)
        intrinsics.compile_intrinsic(add4)(c=c, a=np.arange(4, dtype=np.float32))
        np.testing.assert_array_equal(c, [0, 1, 2, 3])
    finally:
        intrinsics.unregister("user.decorated.f32x4")


def test_script_text_semantics():
    desc = intrinsics.register("user.text.i32x2", textwrap.dedent("""\
        @prim_func
        def neg2(c: i32[2], a: i32[2]):
            for i in range(2):
                c[i] += -a[i]
        """))
    try:
        assert desc.script().startswith("@prim_func\ndef neg2(")
    finally:
        intrinsics.unregister(desc.name)


# ---------------------------------------------------------------------------
# the standalone callable refuses what it cannot run


def _readonly() -> np.ndarray:
    a = np.zeros(8, np.float32)
    a.setflags(write=False)
    return a


def _zero_stride() -> np.ndarray:
    return np.lib.stride_tricks.as_strided(np.zeros(1, np.float32), (8,), (0,))


REFUSALS = [
    ("shape", lambda ops: ops.update(a=np.zeros(7, np.float32)), ["operand a", "shape (7,)"]),
    ("dtype", lambda ops: ops.update(b=np.zeros(8, np.float64)), ["operand b", "dtype float64"]),
    ("missing", lambda ops: ops.pop("c"), ["operand c", "missing"]),
    ("extra", lambda ops: ops.update(d=np.zeros(8, np.float32)), ["no operand d"]),
    ("list", lambda ops: ops.update(a=[0.0] * 8), ["operand a", "numpy array"]),
    ("read-only", lambda ops: ops.update(c=_readonly()), ["output c", "read-only"]),
    ("repeats", lambda ops: ops.update(c=_zero_stride()), ["output c", "zero stride"]),
    ("aliased", lambda ops: ops.update(c=ops["a"]), ["output c", "shares memory", "operand a"]),
]


@pytest.mark.parametrize("change, words", [c[1:] for c in REFUSALS], ids=[c[0] for c in REFUSALS])
def test_callable_refuses_bad_operands(change, words):
    impl = implementation("x86.fma.f32x8", "emulated")
    ops = {n: np.zeros(8, np.float32) for n in "cab"}
    change(ops)
    with pytest.raises(ValueError) as info:
        impl(**ops)
    for w in words:
        assert w in str(info.value)


def test_callable_refuses_strides_that_split_elements():
    impl = implementation("x86.fma.f32x8", "emulated")
    raw = np.zeros(64, np.uint8)
    odd = np.lib.stride_tricks.as_strided(raw.view(np.float32), (8,), (6,))
    with pytest.raises(ValueError, match="operand b has strides"):
        impl(c=np.zeros(8, np.float32), a=np.zeros(8, np.float32), b=odd)


# ---------------------------------------------------------------------------
# the throughput benchmark


@needs_avx2
def test_throughput_rows():
    rows = intrinsic_bench.throughput(["x86.mm.f32.6x16x1", "x86.fma.f32x8"], runs=1,
                                      target_seconds=0.005)
    assert [r.name for r in rows] == ["x86.mm.f32.6x16x1", "x86.fma.f32x8"]
    assert rows[0].mode == "k-loop" and rows[1].mode == "stream"
    assert all(r.gops > 0 and r.unit == "GFLOP/s" for r in rows)
    text = intrinsic_bench.format_rows(rows)
    assert "x86.mm.f32.6x16x1" in text and "%" in text


@needs_avx2
def test_the_table_ends_with_the_fma_peak_and_the_vpmaddwd_ceiling(monkeypatch):
    monkeypatch.setattr(intrinsic_bench, "_ceiling", None)
    ceiling = intrinsic_bench.pmaddwd_ceiling()
    assert ceiling is not None and ceiling > 0
    rows = intrinsic_bench.throughput(["x86.mm.u8i8i32.4x16x2"], runs=1, target_seconds=0.005)
    last = intrinsic_bench.format_rows(rows).splitlines()[-2:]
    assert last[0].startswith("peak: ") and last[1].startswith(f"vpmaddwd: {ceiling:.0f} GOP/s")


def test_no_vpmaddwd_ceiling_without_avx2(monkeypatch):
    import intrinsics.base

    monkeypatch.setattr(intrinsic_bench, "_ceiling", None)
    monkeypatch.setattr(intrinsics.base, "host_features", lambda: frozenset({"sse2"}))
    assert intrinsic_bench.pmaddwd_ceiling() is None


def test_native_is_refused_without_the_isa():
    with pytest.raises(ValueError, match="no native emitter"):
        intrinsics.compile_intrinsic("arm.neon.sdot.i8i32.4x4", native=True)


def test_lambda_semantics_are_refused():
    with pytest.raises(IntrinsicError, match="user.lambda: the semantics must be a plain def"):
        intrinsics.register("user.lambda", lambda c: None)


def test_throughput_refuses_emulated():
    with pytest.raises(ValueError, match="no native implementation"):
        intrinsic_bench.throughput(["nvidia.mma.f16f32.16x8x16"])
