"""Frobenius norm of each matrix in a batch (NRM of the TensorIR paper's operator set).

As TVM's ``norm_bmn`` in ``meta_schedule/testing/te_workload.py``: a sum of squares over
two reduction loops, then a square root.
"""

from rewrite.script import prim_func, grid, alloc, f32, sqrt


@prim_func
def nrm_bmn(A: f32[1, 256, 256], D: f32[1]):
    """NRM, te_workload config 0 (B=1, M=256, N=256), unscaled. 65 k multiply-adds."""
    C = alloc(f32[1])
    for b in range(1):
        C[b] = 0.0
        for i, j in grid(256, 256):
            C[b] += A[b, i, j] * A[b, i, j]
    for b in range(1):
        D[b] = sqrt(C[b])
