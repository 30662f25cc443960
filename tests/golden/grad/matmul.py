"""grad: the backward of a matmul is two matmuls, gathers with their own initialisation."""

@prim_func
def matmul(A: f32[8, 12], B: f32[12, 16], C: f32[8, 16]):
    for i, j in grid(8, 16):
        C[i, j] = 0.0
        for k in range(12):
            C[i, j] += A[i, k] * B[k, j]
