"""The AMX int8 row (``x86.amx.mm.u8i8i32.32x32x64``): what the host library holds, the
permission Linux must grant first, the loop split that lets GEMMs reach it, and GEMMs on it
against the interpreter (native where the CPU has AMX, emulated elsewhere; exact either way).
The emitter against its semantics and its ``tdpbusd`` in the assembly are in
``test_intrinsics.py`` with the other rows."""

from __future__ import annotations

import llvmlite.binding as llvm
import numpy as np
import pytest

import intrinsics
from pathlib import Path

from rewrite import ir, nests, parse, parse_file, runtime, target, tensorize
from rewrite.names import Names
from rewrite.nests import AccNest
from rewrite.printer import show_expr
from rewrite.rules import loops

ROOT = Path(__file__).parent.parent

AMX = "x86.amx.mm.u8i8i32.32x32x64"
AMX_LIB = intrinsics.library("x86-amx")
QUANTIZED = parse_file(ROOT / "corpus" / "quantized.py")
NATIVE = target.host().runs(intrinsics.get(AMX))


def test_host_library_holds_the_row_exactly_when_the_host_may_run_amx():
    cpu = {k for k, on in llvm.get_host_cpu_features().items() if on}
    granted = {"amx-tile", "amx-int8"} <= cpu and target.amx_permitted()
    assert (AMX in {d.name for d in intrinsics.library("host")}) == granted
    assert intrinsics.get(AMX).native == granted


def test_amx_features_are_dropped_when_linux_refuses(monkeypatch):
    monkeypatch.setattr(target, "amx_permitted", lambda: False)
    assert not {f for f in target.host_features.__wrapped__() if f.startswith("amx")}


def test_x86_amx_target_adds_the_row_to_the_vnni_library():
    vnni = {d.name for d in intrinsics.library("x86-avx512vnni")}
    assert {d.name for d in AMX_LIB} == vnni | {AMX}


def test_split_for_intrinsic_splits_the_reduction_by_four():
    # for i, j, k in grid(64, 64, 256): C[i, j] += i32(A[i, k]) * i32(B[k, j])
    #   ->  for i, j, k_o, k_i in grid(64, 64, 64, 4): ... A[i, 4 * k_o + k_i] ... B[4 * k_o + k_i, j]
    f = parse(
        "@prim_func\n"
        "def g(A: u8[64, 256], B: i8[256, 64], C: i32[64, 64]):\n"
        "    for i, j, k in grid(64, 64, 256):\n"
        "        C[i, j] += i32(A[i, k]) * i32(B[k, j])\n")
    (nest,) = [x for x in nests.items(f) if isinstance(x, AccNest)]
    loads = {ld.buffer.name: ld for ld in ir.loads_of(nest.value)}
    desc = intrinsics.get(AMX)
    assert loops.grouped_dims(desc) == (("k4", "kk"),)
    (found,) = loops.split_for(nest, desc, {"a": loads["A"], "b": loads["B"]}, Names(set()))
    split, load_of = found
    k_o, k_i = [d.name for d in split.dims if d.name not in ("i", "j")]
    assert sorted(d.extent for d in split.dims) == [4, 64, 64, 64]
    a, b = load_of(loads["A"]), load_of(loads["B"])
    assert show_expr(a.indices[1]) == show_expr(b.indices[0]) == f"{k_i} + 4 * {k_o}"
    assert {a, b} <= set(ir.loads_of(split.value))
    # the output's loops are not split: no pair of the row's dims is used by c alone
    assert loops.split_for(nest, intrinsics.get("x86.avx512vnni.mm.u8i8i32.8x32x4"),
                           {"a": loads["A"], "b": loads["B"]}, Names(set())) == []


REMAINDERS = parse(
    "@prim_func\n"
    "def q_rem(A: u8[40, 136], B: i8[136, 48], C: i32[40, 48]):\n"
    "    for i, j in grid(40, 48):\n"
    "        C[i, j] = 0\n"
    "        for k in range(136):\n"
    "            C[i, j] += i32(A[i, k]) * i32(B[k, j])\n")


@pytest.mark.parametrize("func", [QUANTIZED["qdense_u8i8"], QUANTIZED["qdense_u8i8_nt"],
                                  QUANTIZED["qdense_u8i8_256"], REMAINDERS],
                         ids=lambda f: f.name)
def test_int8_gemm_runs_on_amx_tiles_and_equals_the_interpreter(func):
    result = tensorize(func, AMX_LIB)
    assert AMX in {s.intrinsic for s in result.sites}, result.script()
    assert parse(result.script()) == result.func
    check = runtime.check(func, result.compile())
    assert check.ok, check.message  # integers: bit for bit


def test_two_threads_share_the_permission():
    # Linux grants the tile state to the process: pool threads run AMX kernels as well
    func = QUANTIZED["qdense_u8i8_256"]
    result = tensorize(func, AMX_LIB)
    check = runtime.check(func, result.compile(threads=2))
    assert check.ok, check.message


@pytest.mark.skipif(not NATIVE, reason="the host cannot run AMX (amx-tile, amx-int8)")
def test_amx_kernel_assembly_holds_tdpbusd():
    result = tensorize(QUANTIZED["qdense_u8i8_256"], AMX_LIB)
    asm = runtime.emit_asm(result.func)
    assert "tdpbusd" in asm and "ldtilecfg" in asm and "tilerelease" in asm


def test_one_call_over_the_whole_program_stays_serial():
    # a program that is the row's own semantics becomes one call with no loop around it,
    # 65 536 multiply-adds: enough work for threads, but nothing to split between them
    func = parse(
        "@prim_func\n"
        "def one(A: u8[32, 16, 4], B: i8[16, 32, 4], C: i32[32, 32]):\n"
        "    for i, j, k4, kk in grid(32, 32, 16, 4):\n"
        "        C[i, j] += i32(A[i, k4, kk]) * i32(B[k4, j, kk])\n")
    result = tensorize(func, [intrinsics.get(AMX)])
    assert [s.intrinsic for s in result.sites] == [AMX]
    check = runtime.check(func, result.compile(threads=2))
    assert check.ok, check.message
