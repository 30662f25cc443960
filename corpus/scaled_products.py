"""Products scaled per row or per column on the way in: a diagonal matrix between two
operands, written as the third factor of each term, as models and factorisations write it.

No intrinsic multiplies three factors; the ``regroup-factors`` rule
(``rewrite/rules/operands.py``) copies the scale into one operand first (``X[t, k] * r[t] *
g[k]`` over ``t, k``), so that the product runs on the matrix tiles.
"""

from rewrite.script import prim_func, grid, alloc, f32, sqrt


@prim_func
def rmsnorm_linear(X: f32[64, 512], g: f32[512], W: f32[512, 512], Y: f32[64, 512]):
    """LLaMA's RMSNorm followed by a projection, ``(x / rms(x) * g) @ W``, with the norm's
    gain and the row's inverse rms left as factors of the product as a fused kernel writes
    it. TinyLlama's hidden size 2048 scaled to 512, 64 tokens. 16.8 M multiply-adds."""
    r = alloc(f32[64])
    for t in range(64):
        r[t] = 0.0
        for k in range(512):
            r[t] += X[t, k] * X[t, k]
    for t in range(64):
        r[t] = 1.0 / sqrt(r[t] / 512.0 + 1e-6)
    for t, j in grid(64, 512):
        Y[t, j] = 0.0
        for k in range(512):
            Y[t, j] += X[t, k] * r[t] * g[k] * W[k, j]


@prim_func
def svd_reconstruct(U: f32[256, 64], S: f32[64], Vt: f32[64, 256], A: f32[256, 256]):
    """A rank-64 approximation rebuilt from its SVD, ``U diag(S) Vt`` (numpy's
    ``(U * S) @ Vt``), of a 256 x 256 matrix. 4.2 M multiply-adds."""
    for i, j in grid(256, 256):
        A[i, j] = 0.0
        for k in range(64):
            A[i, j] += U[i, k] * S[k] * Vt[k, j]


@prim_func
def ldlt_update(L: f32[256, 64], D: f32[64], A: f32[256, 256]):
    """The trailing update of a blocked LDL^T factorisation (LAPACK ``ssytrf``'s ``A22 -=
    L21 D1 L21^T``, lower triangle, as ``slasyf`` forms it), a 64-column panel over a 256 x
    256 trailing matrix. 2.1 M multiply-adds."""
    for i in range(256):
        for j in range(i + 1):
            for k in range(64):
                A[i, j] -= L[i, k] * D[k] * L[j, k]
