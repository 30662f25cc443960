"""Matrix multiplication in its plain forms (GMM of the TensorIR paper's operator set, and the
GEMMs used for benchmarking)."""

from rewrite.script import prim_func, grid, f32


@prim_func
def gemm_64(A: f32[64, 64], B: f32[64, 64], C: f32[64, 64]):
    """The SPEC's example matmul, 64x64x64. 262 k multiply-adds."""
    for i, j in grid(64, 64):
        C[i, j] = 0.0
        for k in range(64):
            C[i, j] += A[i, k] * B[k, j]


@prim_func
def gemm_256(A: f32[256, 256], B: f32[256, 256], C: f32[256, 256]):
    """Square SGEMM at 256 (the smallest size of the benchmark sweep; DESIGN's OpenBLAS
    baseline is measured from n=256). 16.8 M multiply-adds."""
    for i, j in grid(256, 256):
        C[i, j] = 0.0
        for k in range(256):
            C[i, j] += A[i, k] * B[k, j]


@prim_func
def gmm_nkkm(X: f32[1, 128, 128], Y: f32[1, 128, 128], Z: f32[1, 128, 128]):
    """GMM, te_workload config 0 (``batch_matmul_nkkm``: B=1, N=M=K=128), unscaled.
    2.1 M multiply-adds."""
    for b, i, j in grid(1, 128, 128):
        Z[b, i, j] = 0.0
        for k in range(128):
            Z[b, i, j] += X[b, i, k] * Y[b, k, j]


@prim_func
def matmul_relu(A: f32[128, 128], B: f32[128, 128], D: f32[128, 128]):
    """TVM te_workload ``matmul_relu`` (n=m=k=128; the shape meta-schedule's tests use):
    a matmul into the output followed by an in-place ReLU. 2.1 M multiply-adds."""
    for i, j in grid(128, 128):
        D[i, j] = 0.0
        for k in range(128):
            D[i, j] += A[i, k] * B[k, j]
        D[i, j] = max(D[i, j], 0.0)


@prim_func
def bmm_4x64(A: f32[4, 64, 64], B: f32[4, 64, 64], C: f32[4, 64, 64]):
    """Batched matmul, 4 independent 64x64x64 products (BERT-base per-head attention, 4 heads
    of dim 64 with the sequence scaled 128 -> 64). 1 M multiply-adds."""
    for b, i, j in grid(4, 64, 64):
        C[b, i, j] = 0.0
        for k in range(64):
            C[b, i, j] += A[b, i, k] * B[b, k, j]
