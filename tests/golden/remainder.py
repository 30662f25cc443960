"""loops: 7 rows and 20 columns do not divide 6 and 16; the rest runs on smaller intrinsics."""

@prim_func
def odd(A: f32[7, 3], B: f32[3, 20], C: f32[7, 20]):
    for i, j, k in grid(7, 20, 3):
        C[i, j] += A[i, k] * B[k, j]
