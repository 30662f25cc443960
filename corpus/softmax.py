"""Row softmax (SFM of the TensorIR paper's operator set).

As TVM's ``softmax_mn`` (``topi.nn.softmax`` over axis 1) in
``meta_schedule/testing/te_workload.py``: row maximum, exponentials, row sum, division.
The maximum starts from the row's first element, since ``-inf`` is not writable.
"""

from rewrite.script import prim_func, alloc, f32, exp


@prim_func
def sfm_mn(A: f32[256, 256], B: f32[256, 256]):
    """SFM, te_workload config 0 (M=256, N=256), unscaled."""
    M = alloc(f32[256])
    S = alloc(f32[256])
    for i in range(256):
        M[i] = A[i, 0]
        for j in range(1, 256):
            M[i] = max(M[i], A[i, j])
        S[i] = 0.0
        for j in range(256):
            B[i, j] = exp(A[i, j] - M[i])
            S[i] += B[i, j]
        for j in range(256):
            B[i, j] = B[i, j] / S[i]
