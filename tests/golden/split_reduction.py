"""loops: one reduction split over two loops into the same output is merged into one."""

@prim_func
def split(A: f32[6, 8], B: f32[8, 16], C: f32[6, 16]):
    for i, j in grid(6, 16):
        C[i, j] = 0.0
        for k in range(0, 4):
            C[i, j] += A[i, k] * B[k, j]
        for k in range(4, 8):
            C[i, j] += A[i, k] * B[k, j]
