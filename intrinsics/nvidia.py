"""NVIDIA tensor-core intrinsics, emulated on the CPU from their semantics (the engine
targets CPUs; these let tensor-core tilings be matched, compiled and checked anywhere)."""

from __future__ import annotations

from rewrite.script import f16, f32, grid  # noqa: F401 - names the parser reads

from .base import intrinsic

# ---------------------------------------------------------------------------
# mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 (sm_80): f16 inputs, f32 accumulation.
# The products of two f16 values are exact in f32, so only the additions round.


@intrinsic("nvidia.mma.f16f32.16x8x16", isa=("sm_80",), cost=8.0)
def mma_f16f32_16x8x16(c: f32[16, 8], a: f16[16, 16], b: f16[16, 8]):
    for i, j, k in grid(16, 8, 16):
        c[i, j] += f32(a[i, k]) * f32(b[k, j])
