"""Updates as real code writes them, in single precision: into another buffer
(``D = C + A * B``, the BLAS/PolyBench out-of-place form) and scaled by factors passed as data
(PolyBench's ``alpha`` and ``beta``, here one-element arrays read as ``alpha[0]``) rather than
written as constants.

The first need the ``out-of-place`` rule (a copy, then an accumulation), the others the
``scalar-factor`` family (``rewrite/rules/updates.py``, ``rewrite/rules/scalars.py``).
"""

from rewrite.script import prim_func, grid, alloc, f32


@prim_func
def oop_fma_1d(D: f32[4096], C: f32[4096], A: f32[4096], B: f32[4096]):
    """A fused multiply-add into a fresh vector, ``D = C + A * B`` (numpy's
    ``np.add(C, A * B, out=D)``, a vector length of 4096). 4 k multiply-adds."""
    for i in range(4096):
        D[i] = C[i] + B[i] * A[i]


@prim_func
def oop_fma_2d(D: f32[128, 128], C: f32[128, 128], A: f32[128, 128], B: f32[128, 128]):
    """The same on a 128 x 128 matrix, the update written on the left:
    ``D = A * B + C`` elementwise. 16 k multiply-adds."""
    for i, j in grid(128, 128):
        D[i, j] = A[i, j] * B[i, j] + C[i, j]


@prim_func
def gemm_alpha_runtime(C: f32[64, 64], A: f32[64, 64], B: f32[64, 64], alpha: f32[1]):
    """BLAS ``sgemm`` with ``beta = 1`` and ``alpha`` passed at run time, 64 x 64 x 64:
    ``C += alpha A B``. 262 k multiply-adds."""
    for i in range(64):
        for j in range(64):
            for k in range(64):
                C[i, j] += alpha[0] * A[i, k] * B[k, j]


@prim_func
def gemm_minus_alpha_runtime(C: f32[64, 64], A: f32[64, 64], B: f32[64, 64], alpha: f32[1]):
    """The Schur-complement update of a blocked LU or Cholesky factorisation with a runtime
    scale, 64 x 64 x 64: ``C -= alpha A B``. 262 k multiply-adds."""
    for i, j, k in grid(64, 64, 64):
        C[i, j] -= alpha[0] * A[i, k] * B[k, j]


@prim_func
def gemm_alpha_beta_runtime(C: f32[60, 70], A: f32[60, 80], B: f32[80, 70], alpha: f32[1],
                            beta: f32[1]):
    """PolyBench ``gemm`` as PolyBench writes it, SMALL_DATASET (NI=60, NJ=70, NK=80), with
    ``alpha`` and ``beta`` read from memory: ``C = beta C + alpha A B``, the scaling by beta
    in the same i loop as the product. 336 k multiply-adds."""
    for i in range(60):
        for j in range(70):
            C[i, j] *= beta[0]
        for k in range(80):
            for j in range(70):
                C[i, j] += alpha[0] * A[i, k] * B[k, j]


@prim_func
def gesummv_alpha_beta_runtime(A: f32[250, 250], B: f32[250, 250], x: f32[250], y: f32[250],
                               alpha: f32[1], beta: f32[1]):
    """PolyBench ``gesummv`` (N=250) as PolyBench writes it, ``alpha`` and ``beta`` read from
    memory and the sums written ``tmp[i] = A[i, j] * x[j] + tmp[i]``: ``y = alpha A x + beta
    B x``. 125 k multiply-adds."""
    tmp = alloc(f32[250])
    for i in range(250):
        tmp[i] = 0.0
        y[i] = 0.0
        for j in range(250):
            tmp[i] = A[i, j] * x[j] + tmp[i]
            y[i] = B[i, j] * x[j] + y[i]
        y[i] = alpha[0] * tmp[i] + beta[0] * y[i]
