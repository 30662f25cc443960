"""Matmuls in disguise: the same contraction written the ways real code writes it.

Each function computes a (possibly scaled, biased or accumulated) ``A @ B``; what changes is
how it is spelled: operand order, loop order, ``C = C + ...`` instead of ``+=``, a bias in
the initialisation, a reduction split over two loops, transposed operands, sizes that divide
no vector width. TVM's pattern-based tensorize misses most of these (and silently
miscompiles the split reduction); a tensorizer that matches modulo rewriting must not.
Unless stated otherwise the shape is the SPEC's 64x64x64 example matmul.
"""

from rewrite.script import prim_func, grid, f32


@prim_func
def gemm_swapped_operands(A: f32[64, 64], B: f32[64, 64], C: f32[64, 64]):
    """64x64x64 with the product written ``B[k, j] * A[i, k]`` (operands swapped)."""
    for i, j in grid(64, 64):
        C[i, j] = 0.0
        for k in range(64):
            C[i, j] += B[k, j] * A[i, k]


@prim_func
def gemm_k_outermost(A: f32[64, 64], B: f32[64, 64], C: f32[64, 64]):
    """64x64x64 with the reduction loop outermost (k, i, j: rank-1 updates) and the
    initialisation in its own nest."""
    for i, j in grid(64, 64):
        C[i, j] = 0.0
    for k, i, j in grid(64, 64, 64):
        C[i, j] += A[i, k] * B[k, j]


@prim_func
def gemm_jik(A: f32[64, 64], B: f32[64, 64], C: f32[64, 64]):
    """64x64x64 with loops declared j, i, k (column-major traversal of C)."""
    for j in range(64):
        for i in range(64):
            C[i, j] = 0.0
            for k in range(64):
                C[i, j] += A[i, k] * B[k, j]


@prim_func
def gemm_explicit_add(A: f32[64, 64], B: f32[64, 64], C: f32[64, 64]):
    """64x64x64 accumulating with ``C[i, j] = C[i, j] + A * B`` instead of ``+=``."""
    for i, j in grid(64, 64):
        C[i, j] = 0.0
        for k in range(64):
            C[i, j] = C[i, j] + A[i, k] * B[k, j]


@prim_func
def gemm_add_on_left(A: f32[64, 64], B: f32[64, 64], C: f32[64, 64]):
    """64x64x64 accumulating with ``C[i, j] = A * B + C[i, j]`` (the sum's operands swapped too)."""
    for i, j in grid(64, 64):
        C[i, j] = 0.0
        for k in range(64):
            C[i, j] = A[i, k] * B[k, j] + C[i, j]


@prim_func
def gemm_bias_init(A: f32[64, 64], B: f32[64, 64], bias: f32[64], C: f32[64, 64]):
    """A dense layer, 64x64x64, whose bias is the reduction's initial value
    (``C[i, j] = bias[j]`` then ``+=``), as frameworks fuse ``addmm``."""
    for i, j in grid(64, 64):
        C[i, j] = bias[j]
        for k in range(64):
            C[i, j] += A[i, k] * B[k, j]


@prim_func
def gemm_accumulate_into(A: f32[64, 64], B: f32[64, 64], C: f32[64, 64]):
    """64x64x64 BLAS-style ``C += A @ B`` (beta = 1): no initialisation, C is read and written."""
    for i, j, k in grid(64, 64, 64):
        C[i, j] += A[i, k] * B[k, j]


@prim_func
def gemm_odd_37x61x29(A: f32[37, 29], B: f32[29, 61], C: f32[37, 61]):
    """37x61x29: prime-ish sizes that are multiples of neither 8 nor 16, so every intrinsic
    needs remainder loops or padding. 65 k multiply-adds."""
    for i, j in grid(37, 61):
        C[i, j] = 0.0
        for k in range(29):
            C[i, j] += A[i, k] * B[k, j]


@prim_func
def gemm_split_reduction(A: f32[64, 64], B: f32[64, 64], C: f32[64, 64]):
    """64x64x64 with the reduction split over two loops into the same output
    (k in [0, 32) then k in [32, 64)); TVM silently miscompiles this one."""
    for i, j in grid(64, 64):
        C[i, j] = 0.0
        for k in range(0, 32):
            C[i, j] += A[i, k] * B[k, j]
        for k in range(32, 64):
            C[i, j] += A[i, k] * B[k, j]


@prim_func
def gemm_transposed_a(A: f32[64, 64], B: f32[64, 64], C: f32[64, 64]):
    """64x64x64 ``C = A^T @ B`` reading ``A[k, i]`` (the TN GEMM of backward passes)."""
    for i, j in grid(64, 64):
        C[i, j] = 0.0
        for k in range(64):
            C[i, j] += A[k, i] * B[k, j]


@prim_func
def gemm_transposed_b(A: f32[64, 64], B: f32[64, 64], C: f32[64, 64]):
    """64x64x64 ``C = A @ B^T`` reading ``B[j, k]`` (the NT GEMM of ``torch.nn.Linear``,
    whose weight is [out, in])."""
    for i, j in grid(64, 64):
        C[i, j] = 0.0
        for k in range(64):
            C[i, j] += A[i, k] * B[j, k]


@prim_func
def gemm_transposed_b_256(A: f32[256, 256], B: f32[256, 256], C: f32[256, 256]):
    """256x256x256 ``C = A @ B^T`` reading ``B[j, k]``: ``gemm_transposed_b`` at the size of
    ``gemm_256`` (corpus/gemm.py), to set a transposed operand against the plain layout.
    16.8 M multiply-adds."""
    for i, j in grid(256, 256):
        C[i, j] = 0.0
        for k in range(256):
            C[i, j] += A[i, k] * B[j, k]


@prim_func
def gemm_scaled(A: f32[64, 64], B: f32[64, 64], C: f32[64, 64]):
    """64x64x64 with a constant factor inside the product, ``2.0 * A * B`` (BLAS alpha)."""
    for i, j in grid(64, 64):
        C[i, j] = 0.0
        for k in range(64):
            C[i, j] += 2.0 * A[i, k] * B[k, j]


@prim_func
def gemm_all_disguises(A: f32[64, 48], B: f32[80, 64], C: f32[48, 80]):
    """48x80x64 ``C = 0.5 * A^T @ B^T`` with everything at once: loops j, k, i with the
    initialisation in its own nest, both operands transposed and swapped, an explicit
    ``C = ... + C``, and the scale in the middle of the product."""
    for j, i in grid(80, 48):
        C[i, j] = 0.0
    for j in range(80):
        for k in range(64):
            for i in range(48):
                C[i, j] = B[j, k] * 0.5 * A[k, i] + C[i, j]
