"""pad-to-tile: f32 30 x 30 x 30 on the 6 x 16 outer product alone. j (30) is rounded up to 32:
B is copied with two zero columns, C computed into a temporary started at -0.0 whose valid
30 x 30 part is added to C's zeros in the same pass (``rules/tidy.py``: fold-fill)."""

@prim_func
def mm30(A: f32[30, 30], B: f32[30, 30], C: f32[30, 30]):
    for i, j in grid(30, 30):
        C[i, j] = 0.0
        for k in range(30):
            C[i, j] += A[i, k] * B[k, j]
