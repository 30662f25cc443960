"""layout: B read as B[j, k] at 96x96x96 is copied once so the calls read it at unit step."""

@prim_func
def nt(A: f32[96, 96], B: f32[96, 96], C: f32[96, 96]):
    for i, j, k in grid(96, 96, 96):
        C[i, j] += A[i, k] * B[j, k]
