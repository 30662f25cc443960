"""layout: B read as B[j, k] is a window with swapped steps, not a different intrinsic."""

@prim_func
def nt(A: f32[6, 8], B: f32[16, 8], C: f32[6, 16]):
    for i, j, k in grid(6, 16, 8):
        C[i, j] += A[i, k] * B[j, k]
