"""(A @ B).T @ C: the product T = A @ B read transposed by the second product. As written it
costs 48*8*48 + 48*48*16 multiply-adds; as B.T @ (A.T @ C), 8*48*16 + 48*8*16."""

@prim_func
def transposed_chain(A: f32[48, 8], B: f32[8, 48], C: f32[48, 16], E: f32[48, 16]):
    T = alloc(f32[48, 48])
    for i, j in grid(48, 48):
        T[i, j] = 0.0
        for k in range(8):
            T[i, j] += A[i, k] * B[k, j]
    for n, l in grid(48, 16):
        E[n, l] = 0.0
        for m in range(48):
            E[n, l] += T[m, n] * C[m, l]
