"""Intrinsics implemented as LLVM IR text (``intrinsics.LlvmText``): verified against their
semantics like the built-ins, used by the tensorizer, and refused with one clear line when
the text is wrong."""

from __future__ import annotations

import ctypes
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import intrinsics
from intrinsics import IntrinsicError, LlvmText, emit
from rewrite import codegen, emitter, runtime
from rewrite.pipeline import tensorize
from rewrite.script import f32, parse  # noqa: F401 - f32 is read by the parser

from .test_intrinsics import verify

ROOT = Path(__file__).parent.parent

# c[i] += a[i] * b[i], i < 8: one <8 x float> step when every stride is 1 (constant strides
# fold the test away at O3), else a scalar loop over the strides.
VECTOR_FMA = """
define void @fma8(ptr %c, ptr %a, ptr %b, i64 %cs, i64 %as, i64 %bs) {
entry:
  %c1 = icmp eq i64 %cs, 1
  %a1 = icmp eq i64 %as, 1
  %b1 = icmp eq i64 %bs, 1
  %ca1 = and i1 %c1, %a1
  %unit = and i1 %ca1, %b1
  br i1 %unit, label %vector, label %loop
vector:
  %cv = load <8 x float>, ptr %c, align 4
  %av = load <8 x float>, ptr %a, align 4
  %bv = load <8 x float>, ptr %b, align 4
  %pv = fmul <8 x float> %av, %bv
  %rv = fadd <8 x float> %cv, %pv
  store <8 x float> %rv, ptr %c, align 4
  ret void
loop:
  %i = phi i64 [ 0, %entry ], [ %next, %loop ]
  %ci = mul i64 %i, %cs
  %ai = mul i64 %i, %as
  %bi = mul i64 %i, %bs
  %cp = getelementptr float, ptr %c, i64 %ci
  %ap = getelementptr float, ptr %a, i64 %ai
  %bp = getelementptr float, ptr %b, i64 %bi
  %cx = load float, ptr %cp, align 4
  %ax = load float, ptr %ap, align 4
  %bx = load float, ptr %bp, align 4
  %px = fmul float %ax, %bx
  %rx = fadd float %cx, %px
  store float %rx, ptr %cp, align 4
  %next = add i64 %i, 1
  %done = icmp eq i64 %next, 8
  br i1 %done, label %exit, label %loop
exit:
  ret void
}
"""

# c[j] += a[0] * b[j], j < 8, through an internal helper and a declared LLVM intrinsic.
SCALAR_AXPY = """
declare float @llvm.fmuladd.f32(float, float, float)

define internal float @madd(float %x, float %y, float %z) {
  %r = call float @llvm.fmuladd.f32(float %x, float %y, float %z)
  ret float %r
}

define void @axpy8(ptr %c, ptr %a, ptr %b, i64 %cs, i64 %as, i64 %bs) {
entry:
  %s = load float, ptr %a, align 4
  br label %loop
loop:
  %j = phi i64 [ 0, %entry ], [ %next, %loop ]
  %cj = mul i64 %j, %cs
  %bj = mul i64 %j, %bs
  %cp = getelementptr float, ptr %c, i64 %cj
  %bp = getelementptr float, ptr %b, i64 %bj
  %cx = load float, ptr %cp, align 4
  %bx = load float, ptr %bp, align 4
  %r = call float @madd(float %s, float %bx, float %cx)
  store float %r, ptr %cp, align 4
  %next = add i64 %j, 1
  %done = icmp eq i64 %next, 8
  br i1 %done, label %exit, label %loop
exit:
  ret void
}
"""


def fma_f32x8(c: f32[8], a: f32[8], b: f32[8]):
    for i in range(8):
        c[i] += a[i] * b[i]


def axpy_f32x8(c: f32[8], a: f32[1], b: f32[8]):
    for j in range(8):
        c[j] += a[0] * b[j]


FMA, AXPY = "user.text.fma.f32x8", "user.text.axpy.f32x8"


@pytest.fixture(scope="module", autouse=True)
def text_intrinsics():
    descs = [intrinsics.register(FMA, fma_f32x8, emitter=LlvmText(VECTOR_FMA)),
             intrinsics.register(AXPY, axpy_f32x8, emitter=LlvmText(SCALAR_AXPY))]
    yield descs
    for d in descs:
        intrinsics.unregister(d.name)


# ---------------------------------------------------------------------------
# the implementations against their semantics, on strided and unaligned operands


@pytest.mark.parametrize("name", [FMA, AXPY])
@pytest.mark.parametrize("mode", ["native", "runtime-strides"])
@settings(max_examples=25)
@given(data=st.data())
def test_text_matches_semantics(name, mode, data):
    assert intrinsics.get(name).native  # the text is the implementation, not the emulation
    verify(name, mode, data)


def test_kloop_calls_the_text_each_step():
    desc = intrinsics.get(FMA)
    module = codegen.new_module("kloop")
    emitter.kloop_function(module, desc, desc.emitter, "kloop_text", {"c": (1,), "a": (1,), "b": (1,)},
                        {"a": 8, "b": 8})
    (address,) = emit.jit_module(module, ["kloop_text"])
    fn = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64)(address)
    rng = np.random.default_rng(3)
    a, b = (rng.uniform(-1, 1, (5, 8)).astype(np.float32) for _ in range(2))
    c = np.zeros(8, np.float32)
    fn((ctypes.c_void_p * 3)(c.ctypes.data, a.ctypes.data, b.ctypes.data), 5, 2)
    np.testing.assert_allclose(c, 2 * (a * b).sum(0), rtol=1e-5, atol=1e-5)


def test_each_text_has_its_own_fingerprint():
    # the disk cache keys compiled code on it: a changed text must not reuse old code
    assert LlvmText(VECTOR_FMA).fingerprint() == LlvmText(VECTOR_FMA).fingerprint()
    assert LlvmText(VECTOR_FMA).fingerprint() != LlvmText(SCALAR_AXPY).fingerprint()


# ---------------------------------------------------------------------------
# programs using them

VMUL = parse('''
@prim_func
def vmul(C: f32[5, 24], A: f32[5, 24], B: f32[24, 5]):
    for i in range(5):
        for j in range(24):
            C[i, j] += A[i, j] * B[j, i]
''')


def test_program_tensorized_with_a_text_intrinsic(text_intrinsics, tmp_path, monkeypatch):
    monkeypatch.setenv("TENSORIZE_CACHE_DIR", str(tmp_path / "cache"))
    result = tensorize(VMUL, [intrinsics.get(FMA)])
    assert result.coverage == 1.0
    assert f'call("{FMA}"' in result.script()
    check = runtime.check(VMUL, result.compile())
    assert check.ok, check.message
    # linked in, internal and inlined: no call of the text's function is left
    assert intrinsics.get(FMA).emitter.symbol not in runtime.emit_llvm(result.func)


def test_two_texts_with_same_named_helpers_in_one_kernel(tmp_path, monkeypatch):
    monkeypatch.setenv("TENSORIZE_CACHE_DIR", str(tmp_path / "cache"))
    other = intrinsics.register("user.text.axpy2.f32x8", axpy_f32x8,
                                emitter=LlvmText(SCALAR_AXPY.replace("@axpy8", "@other")))
    try:
        func = parse(f'''
@prim_func
def both(C: f32[2, 8], A: f32[2], B: f32[2, 8]):
    call("{AXPY}", c=window(C[0, 0], (0, 1)), a=window(A[0], (1,)), b=window(B[0, 0], (0, 1)))
    call("user.text.axpy2.f32x8", c=window(C[1, 0], (0, 1)), a=window(A[1], (1,)),
         b=window(B[1, 0], (0, 1)))
    call("{AXPY}", c=window(C[1, 0], (0, 1)), a=window(A[0], (1,)), b=window(B[0, 0], (0, 1)))
''')
        check = runtime.check(func)
        assert check.ok, check.message
    finally:
        intrinsics.unregister(other.name)


def test_a_changed_text_is_compiled_again(tmp_path, monkeypatch):
    monkeypatch.setenv("TENSORIZE_CACHE_DIR", str(tmp_path / "cache"))
    name = "user.text.changing.f32x8"
    program = f'''
@prim_func
def once(C: f32[8], A: f32[8], B: f32[8]):
    call("{name}", c=window(C[0], (1,)), a=window(A[0], (1,)), b=window(B[0], (1,)))
'''
    wrong = VECTOR_FMA.replace("%rv = fadd <8 x float> %cv, %pv", "%rv = fsub <8 x float> %cv, %pv")
    for text, ok in ((VECTOR_FMA, True), (wrong, False)):
        intrinsics.register(name, fma_f32x8, emitter=LlvmText(text))
        try:
            runtime.clear_memory_cache()  # the disk cache must see the new text by itself
            assert runtime.check(parse(program)).ok is ok
        finally:
            intrinsics.unregister(name)
    runtime.clear_memory_cache()


def test_a_name_registered_again_is_compiled_again_in_the_same_process():
    # no clear_memory_cache here: the in-memory cache must notice the new registration
    name = "user.text.reregistered.f32x8"
    program = f'''
@prim_func
def once(C: f32[8], A: f32[8], B: f32[8]):
    call("{name}", c=window(C[0], (1,)), a=window(A[0], (1,)), b=window(B[0], (1,)))
'''
    wrong = VECTOR_FMA.replace("%rv = fadd <8 x float> %cv, %pv", "%rv = fsub <8 x float> %cv, %pv")
    for text, ok in ((VECTOR_FMA, True), (wrong, False), (VECTOR_FMA, True)):
        intrinsics.register(name, fma_f32x8, emitter=LlvmText(text))
        try:
            assert runtime.check(parse(program)).ok is ok
        finally:
            intrinsics.unregister(name)


# ---------------------------------------------------------------------------
# bad text: refused at registration, naming the intrinsic

SIGNATURE = "(ptr %c, ptr %a, ptr %b, i64 %cs, i64 %as, i64 %bs)"

BAD = [
    ("syntax", f"define void @f{SIGNATURE} {{\n  ret void oops\n}}", ["does not parse", "line 2"]),
    ("too few", "define void @f(ptr %c, ptr %a, ptr %b, i64 %cs) { ret void }",
     ["@f must be", "ptr %c, ptr %a, ptr %b, i64 %c_s0, i64 %a_s0, i64 %b_s0", "it is"]),
    ("wrong type", "define void @f(ptr %c, ptr %a, ptr %b, i32 %cs, i64 %as, i64 %bs) "
     "{ ret void }", ["i32"]),
    ("returns", f"define float @f{SIGNATURE} {{ ret float 0.0 }}", ["float (ptr"]),
    ("no function", "declare void @f(ptr, ptr, ptr, i64, i64, i64)", ["exactly one", "none"]),
    ("empty", "", ["exactly one"]),
    ("two", f"define void @f{SIGNATURE} {{ ret void }}\ndefine void @g() {{ ret void }}",
     ["exactly one", "@f, @g"]),
    ("invalid", f"define void @f{SIGNATURE} {{\n  %x = add i64 %y, 1\n  %y = add i64 %x, 1\n"
     "  ret void\n}", ["is not valid", "dominate"]),
    ("global", f"@g = global i32 0\ndefine void @f{SIGNATURE} {{ ret void }}",
     ["global @g, which must be internal"]),
    ("not text", 42, ["str"]),
]


@pytest.mark.parametrize("text, words", [(t, w) for _, t, w in BAD], ids=[c for c, _, _ in BAD])
def test_bad_text_is_refused(text, words):
    name = "user.text.bad.f32x8"
    with pytest.raises(IntrinsicError) as info:
        intrinsics.register(name, fma_f32x8, emitter=LlvmText(text))
    message = str(info.value)
    assert message.startswith(f"intrinsic {name}: LLVM IR text ")
    assert "\n" not in message
    for w in words:
        assert w in message
    assert name not in {d.name for d in intrinsics.all()}


def test_bad_text_in_a_plugin_is_one_line_on_the_command_line(tmp_path):
    script = tmp_path / "vmul.py"
    script.write_text("@prim_func\ndef vmul(C: f32[24], A: f32[24], B: f32[24]):\n"
                      "    for i in range(24):\n        C[i] += A[i] * B[i]\n")
    plugin = tmp_path / "bad.py"
    plugin.write_text(
        "from intrinsics import LlvmText, intrinsic\n"
        "from rewrite.script import f32\n\n"
        "@intrinsic('user.cli.fma.f32x8', emitter=LlvmText('define void @f(ptr %c) { ret }'))\n"
        "def fma(c: f32[8], a: f32[8], b: f32[8]):\n"
        "    for i in range(8):\n"
        "        c[i] += a[i] * b[i]\n")
    r = subprocess.run([sys.executable, "-m", "rewrite.cli", "run", str(script),
                        "--intrinsics-file", str(plugin)],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "intrinsic user.cli.fma.f32x8: LLVM IR text does not parse: line 1" in lines[0]
