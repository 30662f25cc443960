"""associativity: (A @ B) @ C costs 48*8*48 + 48*48*16 multiply-adds, A @ (B @ C) 8*48*16 + 48*8*16."""

@prim_func
def chain(A: f32[48, 8], B: f32[8, 48], C: f32[48, 16], D: f32[48, 16]):
    T = alloc(f32[48, 48])
    for i, j in grid(48, 48):
        T[i, j] = 0.0
        for k in range(8):
            T[i, j] += A[i, k] * B[k, j]
    for i, j in grid(48, 16):
        D[i, j] = 0.0
        for k in range(48):
            D[i, j] += T[i, k] * C[k, j]
