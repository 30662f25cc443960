"""pad-to-tile below one tile: u8 x i8 12 x 12 x 12 on the 16 x 4 dot alone. j (12) is shorter
than the dot's 16 but at least half of it: it is rounded up to one tile."""

@prim_func
def mm_i8_12(C: i32[12, 12], A: u8[12, 12], B: i8[12, 12]):
    for i, j, k in grid(12, 12, 12):
        C[i, j] += i32(A[i, k]) * i32(B[k, j])
