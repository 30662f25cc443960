"""Half-precision inputs with single-precision accumulation (the meaning of tensor-core
``mma.f16.f32``): each product is formed on f32 casts of the f16 operands."""

from rewrite.script import prim_func, grid, f16, f32


@prim_func
def gemm_f16_f32acc(A: f16[128, 128], B: f16[128, 128], C: f32[128, 128]):
    """FP16 BERT-base attention output projection (128x768 @ 768x768, mixed-precision
    inference), hidden scaled 768 -> 128: 128x128x128. 2.1 M multiply-adds."""
    for i, j in grid(128, 128):
        C[i, j] = 0.0
        for k in range(128):
            C[i, j] += f32(A[i, k]) * f32(B[k, j])


@prim_func
def gemm_f16_f32acc_nt(A: f16[64, 96], B: f16[48, 96], C: f32[64, 48]):
    """FP16 ``torch.nn.Linear`` (weight [out, in]) with f32 accumulation, 64x48x96: GPT-2's
    head dim 64 by a 96-wide input (sizes not multiples of the 16x8x16 mma tile in N).
    295 k multiply-adds."""
    for i, j in grid(64, 48):
        C[i, j] = 0.0
        for k in range(96):
            C[i, j] += f32(A[i, k]) * f32(B[j, k])
