"""Linear-algebra kernels of PolyBench/C 4.2 in double precision (its default ``DATA_TYPE``).

f64 is a case where no f32 or int8 multiply-accumulate intrinsic applies; the kernels also
carry PolyBench's alpha/beta scaling, which folds a constant into the product.
"""

from rewrite.script import prim_func, grid, alloc, f64


@prim_func
def polybench_gemm(A: f64[60, 80], B: f64[80, 70], C: f64[60, 70]):
    """PolyBench ``gemm``, SMALL_DATASET (NI=60, NJ=70, NK=80), alpha=1.5, beta=1.2 as in its
    ``init_array``: ``C = beta * C + alpha * A @ B``. 336 k multiply-adds."""
    for i in range(60):
        for j in range(70):
            C[i, j] = C[i, j] * 1.2
        for k in range(80):
            for j in range(70):
                C[i, j] += 1.5 * A[i, k] * B[k, j]


@prim_func
def polybench_2mm(A: f64[40, 70], B: f64[70, 50], C: f64[50, 80], D: f64[40, 80]):
    """PolyBench ``2mm``, SMALL_DATASET (NI=40, NJ=50, NK=70, NL=80), alpha=1.5, beta=1.2:
    ``D = alpha * A @ B @ C + beta * D`` through a temporary. 300 k multiply-adds."""
    tmp = alloc(f64[40, 50])
    for i, j in grid(40, 50):
        tmp[i, j] = 0.0
        for k in range(70):
            tmp[i, j] += 1.5 * A[i, k] * B[k, j]
    for i, j in grid(40, 80):
        D[i, j] = D[i, j] * 1.2
        for k in range(50):
            D[i, j] += tmp[i, k] * C[k, j]


@prim_func
def dgemm_64(A: f64[64, 64], B: f64[64, 64], C: f64[64, 64]):
    """Plain f64 matmul, 64x64x64 (the SPEC's example matmul in double precision, the
    DGEMM of LAPACK's blocked factorisations)."""
    for i, j in grid(64, 64):
        C[i, j] = 0.0
        for k in range(64):
            C[i, j] += A[i, k] * B[k, j]
