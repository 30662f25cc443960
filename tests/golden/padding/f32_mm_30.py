"""pad-to-tile on a remainder: f32 30 x 30 x 30 on the 6 x 16 outer product alone. The first
16 columns are whole tiles; the remainder nest's 14 columns are rounded up to one tile of 16,
computed into a temporary started at -0.0 whose valid 30 x 14 part is added to C."""

@prim_func
def mm30(A: f32[30, 30], B: f32[30, 30], C: f32[30, 30]):
    for i, j in grid(30, 30):
        C[i, j] = 0.0
        for k in range(30):
            C[i, j] += A[i, k] * B[k, j]
