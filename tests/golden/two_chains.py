"""Two matmul chains split by an elementwise pass over the first one's output: each regroups
as X @ (Y @ Z) (X of 8 columns), and the program takes both."""

@prim_func
def two_chains(A: f32[96, 8], B: f32[8, 96], C: f32[96, 32], F: f32[8, 96], G: f32[96, 32],
               D: f32[96, 32], E: f32[96, 8], H: f32[96, 32]):
    T = alloc(f32[96, 96])
    for i, j in grid(96, 96):
        T[i, j] = 0.0
        for k in range(8):
            T[i, j] += A[i, k] * B[k, j]
    for i, j in grid(96, 32):
        D[i, j] = 0.0
        for k in range(96):
            D[i, j] += T[i, k] * C[k, j]
    for i, j in grid(96, 8):
        E[i, j] = max(D[i, j], 0.0)
    U = alloc(f32[96, 96])
    for i, j in grid(96, 96):
        U[i, j] = 0.0
        for k in range(8):
            U[i, j] += E[i, k] * F[k, j]
    for i, j in grid(96, 32):
        H[i, j] = 0.0
        for k in range(96):
            H[i, j] += U[i, k] * G[k, j]
