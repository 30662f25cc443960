"""distributivity: A @ B1 + A @ B2 -> A @ (B1 + B2), one 96x128x32 product instead of two,
for one 32x128 addition and a scan of A (on floats the factored product runs only when A is
finite, rules/finite.py)."""

@prim_func
def dist(A: f32[96, 32], B1: f32[32, 128], B2: f32[32, 128], C: f32[96, 128]):
    for i, j in grid(96, 128):
        C[i, j] = 0.0
        for k in range(32):
            C[i, j] += A[i, k] * B1[k, j]
        for k in range(32):
            C[i, j] += A[i, k] * B2[k, j]
