"""distributivity: A @ B1 + A @ B2 -> A @ (B1 + B2), one 96x32x32 product instead of two, for one 32x32 addition."""

@prim_func
def dist(A: f32[96, 32], B1: f32[32, 32], B2: f32[32, 32], C: f32[96, 32]):
    for i, j in grid(96, 32):
        C[i, j] = 0.0
        for k in range(32):
            C[i, j] += A[i, k] * B1[k, j]
        for k in range(32):
            C[i, j] += A[i, k] * B2[k, j]
