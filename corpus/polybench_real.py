"""PolyBench/C 4.2 linear algebra as PolyBench writes it: triangular loops, scalar locals,
in-place updates, f32 (``DATA_TYPE float``), MEDIUM_DATASET sizes.

Each kernel is the body of PolyBench's ``kernel_*`` function, line for line: ``for (j = 0;
j <= i; j++)`` is ``for j in range(i + 1)``, a scalar ``temp2`` is a scalar local. alpha and
beta are the constants PolyBench's ``init_array`` sets (1.5 and 1.2), ``float_n`` the
dataset's N. The factorisations (lu, cholesky, trisolv, at MINI_DATASET size) first make
their matrix diagonally dominant, as PolyBench's ``init_array`` makes it positive definite,
so that factoring random inputs without pivoting stays well conditioned.
"""

from rewrite.script import prim_func, f32, sqrt


@prim_func
def pb_gemm(C: f32[200, 220], A: f32[200, 240], B: f32[240, 220]):
    """PolyBench ``gemm`` (NI=200, NJ=220, NK=240): ``C = beta * C + alpha * A @ B``."""
    for i in range(200):
        for j in range(220):
            C[i, j] *= 1.2
        for k in range(240):
            for j in range(220):
                C[i, j] += 1.5 * A[i, k] * B[k, j]


@prim_func
def pb_2mm(tmp: f32[180, 190], A: f32[180, 210], B: f32[210, 190], C: f32[190, 220],
           D: f32[180, 220]):
    """PolyBench ``2mm`` (NI=180, NJ=190, NK=210, NL=220): ``D = alpha * A @ B @ C + beta * D``."""
    for i in range(180):
        for j in range(190):
            tmp[i, j] = 0.0
            for k in range(210):
                tmp[i, j] += 1.5 * A[i, k] * B[k, j]
    for i in range(180):
        for j in range(220):
            D[i, j] *= 1.2
            for k in range(190):
                D[i, j] += tmp[i, k] * C[k, j]


@prim_func
def pb_3mm(E: f32[180, 190], A: f32[180, 200], B: f32[200, 190], F: f32[190, 210],
           C: f32[190, 220], D: f32[220, 210], G: f32[180, 210]):
    """PolyBench ``3mm`` (NI=180, NJ=190, NK=200, NL=210, NM=220): ``G = (A @ B) @ (C @ D)``."""
    for i in range(180):
        for j in range(190):
            E[i, j] = 0.0
            for k in range(200):
                E[i, j] += A[i, k] * B[k, j]
    for i in range(190):
        for j in range(210):
            F[i, j] = 0.0
            for k in range(220):
                F[i, j] += C[i, k] * D[k, j]
    for i in range(180):
        for j in range(210):
            G[i, j] = 0.0
            for k in range(190):
                G[i, j] += E[i, k] * F[k, j]


@prim_func
def pb_gemver(A: f32[400, 400], u1: f32[400], v1: f32[400], u2: f32[400], v2: f32[400],
              w: f32[400], x: f32[400], y: f32[400], z: f32[400]):
    """PolyBench ``gemver`` (N=400), alpha=1.5, beta=1.2: a rank-2 update of A, then
    ``x += beta * A.T @ y + z`` and ``w += alpha * A @ x``."""
    for i in range(400):
        for j in range(400):
            A[i, j] = A[i, j] + u1[i] * v1[j] + u2[i] * v2[j]
    for i in range(400):
        for j in range(400):
            x[i] = x[i] + 1.2 * A[j, i] * y[j]
    for i in range(400):
        x[i] = x[i] + z[i]
    for i in range(400):
        for j in range(400):
            w[i] = w[i] + 1.5 * A[i, j] * x[j]


@prim_func
def pb_syrk(C: f32[240, 240], A: f32[240, 200]):
    """PolyBench ``syrk`` (N=240, M=200): the lower triangle of ``C = beta * C + alpha * A @ A.T``."""
    for i in range(240):
        for j in range(i + 1):
            C[i, j] *= 1.2
        for k in range(200):
            for j in range(i + 1):
                C[i, j] += 1.5 * A[i, k] * A[j, k]


@prim_func
def pb_syr2k(C: f32[240, 240], A: f32[240, 200], B: f32[240, 200]):
    """PolyBench ``syr2k`` (N=240, M=200): the lower triangle of
    ``C = beta * C + alpha * (A @ B.T + B @ A.T)``."""
    for i in range(240):
        for j in range(i + 1):
            C[i, j] *= 1.2
        for k in range(200):
            for j in range(i + 1):
                C[i, j] += A[j, k] * 1.5 * B[i, k] + B[j, k] * 1.5 * A[i, k]


@prim_func
def pb_symm(C: f32[200, 240], A: f32[200, 200], B: f32[200, 240]):
    """PolyBench ``symm`` (M=200, N=240): ``C = alpha * A @ B + beta * C`` with A symmetric,
    stored in its lower triangle."""
    for i in range(200):
        for j in range(240):
            temp2 = 0.0
            for k in range(i):
                C[k, j] += 1.5 * B[i, j] * A[i, k]
                temp2 += B[k, j] * A[i, k]
            C[i, j] = 1.2 * C[i, j] + 1.5 * B[i, j] * A[i, i] + 1.5 * temp2


@prim_func
def pb_trmm(A: f32[200, 200], B: f32[200, 240]):
    """PolyBench ``trmm`` (M=200, N=240): ``B = alpha * A.T @ B`` with A unit lower
    triangular (its strictly lower triangle is read)."""
    for i in range(200):
        for j in range(240):
            for k in range(i + 1, 200):
                B[i, j] += A[k, i] * B[k, j]
            B[i, j] = 1.5 * B[i, j]


@prim_func
def pb_covariance(data: f32[260, 240], cov: f32[240, 240], mean: f32[240]):
    """PolyBench ``covariance`` (N=260 samples, M=240 variables, float_n=260)."""
    for j in range(240):
        mean[j] = 0.0
        for i in range(260):
            mean[j] += data[i, j]
        mean[j] /= 260.0
    for i in range(260):
        for j in range(240):
            data[i, j] -= mean[j]
    for i in range(240):
        for j in range(i, 240):
            cov[i, j] = 0.0
            for k in range(260):
                cov[i, j] += data[k, i] * data[k, j]
            cov[i, j] /= 260.0 - 1.0
            cov[j, i] = cov[i, j]


@prim_func
def pb_correlation(data: f32[260, 240], corr: f32[240, 240], mean: f32[240], stddev: f32[240]):
    """PolyBench ``correlation`` (N=260, M=240, float_n=260, eps=0.1)."""
    for j in range(240):
        mean[j] = 0.0
        for i in range(260):
            mean[j] += data[i, j]
        mean[j] /= 260.0
    for j in range(240):
        stddev[j] = 0.0
        for i in range(260):
            stddev[j] += (data[i, j] - mean[j]) * (data[i, j] - mean[j])
        stddev[j] /= 260.0
        stddev[j] = sqrt(stddev[j])
        stddev[j] = 1.0 if stddev[j] <= 0.1 else stddev[j]
    for i in range(260):
        for j in range(240):
            data[i, j] -= mean[j]
            data[i, j] /= sqrt(260.0) * stddev[j]
    for i in range(239):
        corr[i, i] = 1.0
        for j in range(i + 1, 240):
            corr[i, j] = 0.0
            for k in range(260):
                corr[i, j] += data[k, i] * data[k, j]
            corr[j, i] = corr[i, j]
    corr[239, 239] = 1.0


@prim_func
def pb_lu(A: f32[40, 40]):
    """PolyBench ``lu``, MINI_DATASET (N=40: the interpreter that checks it runs the
    carried loops one step at a time): Doolittle LU in place, no pivoting."""
    for i in range(40):
        A[i, i] += 40.0
    for i in range(40):
        for j in range(i):
            for k in range(j):
                A[i, j] -= A[i, k] * A[k, j]
            A[i, j] /= A[j, j]
        for j in range(i, 40):
            for k in range(i):
                A[i, j] -= A[i, k] * A[k, j]


@prim_func
def pb_cholesky(A: f32[40, 40]):
    """PolyBench ``cholesky``, MINI_DATASET (N=40, as lu): the lower Cholesky factor in
    place."""
    for i in range(40):
        A[i, i] += 40.0
    for i in range(40):
        for j in range(i):
            for k in range(j):
                A[i, j] -= A[i, k] * A[j, k]
            A[i, j] /= A[j, j]
        for k in range(i):
            A[i, i] -= A[i, k] * A[i, k]
        A[i, i] = sqrt(A[i, i])


@prim_func
def pb_trisolv(L: f32[40, 40], x: f32[40], b: f32[40]):
    """PolyBench ``trisolv``, MINI_DATASET (N=40, as lu): forward substitution ``L x = b``."""
    for i in range(40):
        L[i, i] += 40.0
    for i in range(40):
        x[i] = b[i]
        for j in range(i):
            x[i] -= L[i, j] * x[j]
        x[i] = x[i] / L[i, i]
