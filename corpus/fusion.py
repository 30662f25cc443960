"""Producers materialised into temporaries before the nest that reads them: widening casts,
a scale, an elementwise function. Inlining a producer into its consumer is legal here only
where nothing it reads changes in between, and worth it only where the cost model says so."""

from rewrite.script import prim_func, grid, alloc, exp, u8, i8, i32, f32


@prim_func
def qdense_widened(A: u8[64, 128], B: i8[128, 128], C: i32[64, 128]):
    """The int8 dense layer of ``quantized.qdense_u8i8`` (Q8BERT scaled to 64x128 @ 128x128)
    with both operands first widened to i32 temporaries, as a framework's dequantize-free
    lowering writes it; inlined, the casts become the exact u8 x i8 dot. 1 M multiply-adds."""
    Ai = alloc(i32[64, 128])
    Bi = alloc(i32[128, 128])
    for i, k in grid(64, 128):
        Ai[i, k] = i32(A[i, k])
    for k, j in grid(128, 128):
        Bi[k, j] = i32(B[k, j])
    for i, j in grid(64, 128):
        C[i, j] = 0
        for k in range(128):
            C[i, j] += Ai[i, k] * Bi[k, j]


@prim_func
def gemm_prescaled(A: f32[64, 256], B: f32[256, 32], C: f32[64, 32]):
    """A projection onto one attention head (d_model 256 -> d_head 32, 64 tokens: BERT's
    768 -> 64 scaled down) whose input is scaled by 0.5 first and materialised. Inlined, the
    scale leaves the reduction: the product runs on the outer-product intrinsic and 0.5 is
    applied once per output element (64x32) instead of once per input element (64x256).
    524 k multiply-adds."""
    As = alloc(f32[64, 256])
    for i, k in grid(64, 256):
        As[i, k] = 0.5 * A[i, k]
    for i, j in grid(64, 32):
        C[i, j] = 0.0
        for k in range(256):
            C[i, j] += As[i, k] * B[k, j]


@prim_func
def gemm_input_updated(A: f32[64, 64], B: f32[64, 64], C: f32[64, 64]):
    """A scaled copy of A taken before A is updated in place (a residual step, A += 1), then a
    64x64x64 matmul over the copy. Inlining ``As`` would read the updated A, so it must not
    happen. 262 k multiply-adds."""
    As = alloc(f32[64, 64])
    for i, k in grid(64, 64):
        As[i, k] = 0.5 * A[i, k]
    for i, k in grid(64, 64):
        A[i, k] = A[i, k] + 1.0
    for i, j in grid(64, 64):
        C[i, j] = 0.0
        for k in range(64):
            C[i, j] += As[i, k] * B[k, j]


@prim_func
def gemm_exp_shared(A: f32[64, 64], B: f32[64, 64], D: f32[64, 64], C: f32[64, 64],
                    E: f32[64, 64]):
    """exp(A) computed once and read by two 64x64x64 matmuls (an attention-like pair of
    products over shared unnormalised weights). Inlining the exponential would recompute it
    64 times per element and lose the intrinsics, so the cost model keeps the temporary.
    524 k multiply-adds."""
    X = alloc(f32[64, 64])
    for i, k in grid(64, 64):
        X[i, k] = exp(A[i, k])
    for i, j in grid(64, 64):
        C[i, j] = 0.0
        for k in range(64):
            C[i, j] += X[i, k] * B[k, j]
    for i, j in grid(64, 64):
        E[i, j] = 0.0
        for k in range(64):
            E[i, j] += X[i, k] * D[k, j]
