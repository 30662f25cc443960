"""no match: a max-plus reduction stays scalar."""

@prim_func
def maxplus(A: f32[8, 8], B: f32[8, 8], C: f32[8, 8]):
    for i, j, k in grid(8, 8, 8):
        C[i, j] = max(C[i, j], A[i, k] + B[k, j])
