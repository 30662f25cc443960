"""algebra: a constant factor is taken out of the reduction into an epilogue."""

@prim_func
def scaled(A: f32[6, 4], B: f32[4, 16], C: f32[6, 16]):
    for i, j, k in grid(6, 16, 4):
        C[i, j] += A[i, k] * 0.5 * B[k, j]
