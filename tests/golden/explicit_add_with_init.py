"""normalisation: C = bias + ..., then C = A*B + C; init distributed into its own nest."""

@prim_func
def biased(A: f32[12, 8], B: f32[8, 16], bias: f32[16], C: f32[12, 16]):
    for i, j in grid(12, 16):
        C[i, j] = bias[j]
        for k in range(8):
            C[i, j] = A[i, k] * B[k, j] + C[i, j]
