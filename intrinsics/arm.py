"""Arm intrinsics. None has a native emitter here: on other CPUs they run emulated from
their semantics, which is what lets programs tensorized for Arm be compiled and checked on
any machine."""

from __future__ import annotations

from rewrite.script import grid, i8, i32  # noqa: F401 - names the parser reads

from .base import Layout, intrinsic

# ---------------------------------------------------------------------------
# NEON dot product (FEAT_DotProd): SDOT Vd.4S, Vn.16B, Vm.16B
# Each 32-bit lane accumulates the dot product of its own four signed bytes of both sources.


@intrinsic("arm.neon.sdot.i8i32.4x4", isa=("neon", "dotprod"), cost=1.0,
           layout={"c": Layout((0,), 4), "a": Layout((1,), 1), "b": Layout((1,), 1)})
def neon_sdot_i8i32_4x4(c: i32[4], a: i8[4, 4], b: i8[4, 4]):
    for i, k in grid(4, 4):
        c[i] += i32(a[i, k]) * i32(b[i, k])
