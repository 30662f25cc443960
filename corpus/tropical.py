"""Matrix products over the tropical semirings: ``+`` takes the place of ``*`` and
``max``/``min`` the place of ``+``. No multiply-accumulate intrinsic applies.

The reduction starts from the k = 0 term, since ``-inf``/``+inf`` are not writable.
"""

from rewrite.script import prim_func, grid, f32


@prim_func
def maxplus_matmul(A: f32[64, 64], B: f32[64, 64], C: f32[64, 64]):
    """Max-plus product ``C[i, j] = max_k A[i, k] + B[k, j]``: one step of longest-path /
    Viterbi dynamic programming over 64 states, 64x64x64."""
    for i, j in grid(64, 64):
        C[i, j] = A[i, 0] + B[0, j]
        for k in range(1, 64):
            C[i, j] = max(C[i, j], A[i, k] + B[k, j])


@prim_func
def minplus_matmul(A: f32[64, 64], B: f32[64, 64], C: f32[64, 64]):
    """Min-plus product ``C[i, j] = min_k A[i, k] + B[k, j]``: one squaring step of
    all-pairs shortest paths on a 64-node graph, 64x64x64."""
    for i, j in grid(64, 64):
        C[i, j] = A[i, 0] + B[0, j]
        for k in range(1, 64):
            C[i, j] = min(A[i, k] + B[k, j], C[i, j])
