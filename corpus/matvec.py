"""Matrix-vector kernels of PolyBench/C 4.2 in single precision, MEDIUM_DATASET sizes,
written as PolyBench writes them (one nest per kernel, the matrix row-major).

A product that reads the matrix along its rows (``y[i] += A[i, j] * x[j]``) and one that
reads it along its columns (``s[j] += r[i] * A[i, j]``) each appear in most of them.
"""

from rewrite.script import prim_func, grid, alloc, f32


@prim_func
def atax(A: f32[390, 410], x: f32[410], y: f32[410]):
    """PolyBench ``atax`` (M=390, N=410): ``y = A^T (A x)``. 320 k multiply-adds."""
    tmp = alloc(f32[390])
    for j in range(410):
        y[j] = 0.0
    for i in range(390):
        tmp[i] = 0.0
        for j in range(410):
            tmp[i] += A[i, j] * x[j]
        for j in range(410):
            y[j] += A[i, j] * tmp[i]


@prim_func
def bicg(A: f32[410, 390], p: f32[390], r: f32[410], s: f32[390], q: f32[410]):
    """PolyBench ``bicg`` (M=390, N=410): ``s = A^T r`` and ``q = A p`` in one sweep over A.
    320 k multiply-adds."""
    for j in range(390):
        s[j] = 0.0
    for i in range(410):
        q[i] = 0.0
        for j in range(390):
            s[j] += r[i] * A[i, j]
            q[i] += A[i, j] * p[j]


@prim_func
def mvt(A: f32[400, 400], y1: f32[400], y2: f32[400], x1: f32[400], x2: f32[400]):
    """PolyBench ``mvt`` (N=400): ``x1 += A y1`` and ``x2 += A^T y2``. 320 k multiply-adds."""
    for i, j in grid(400, 400):
        x1[i] += A[i, j] * y1[j]
    for i, j in grid(400, 400):
        x2[i] += A[j, i] * y2[j]


@prim_func
def gesummv(A: f32[250, 250], B: f32[250, 250], x: f32[250], y: f32[250]):
    """PolyBench ``gesummv`` (N=250), alpha=1.5, beta=1.2: ``y = alpha A x + beta B x``.
    125 k multiply-adds."""
    tmp = alloc(f32[250])
    for i in range(250):
        tmp[i] = 0.0
        y[i] = 0.0
        for j in range(250):
            tmp[i] += A[i, j] * x[j]
            y[i] += B[i, j] * x[j]
        y[i] = 1.5 * tmp[i] + 1.2 * y[i]
