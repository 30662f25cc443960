"""algebra: B*A matches c += a*b with a and b the other way round."""

@prim_func
def swapped(A: f32[12, 8], B: f32[8, 16], C: f32[12, 16]):
    for i, j, k in grid(12, 16, 8):
        C[i, j] += B[k, j] * A[i, k]
