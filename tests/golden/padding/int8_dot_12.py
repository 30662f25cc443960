"""pad-to-tile below one tile: u8 x i8 64 x 12 x 64 on the 16 x 4 dot alone. j (12) is shorter
than the dot's 16 but at least half of it: it is rounded up to one tile, B copied into the
dot's [16, 4] blocks, C computed into a 64 x 16 temporary whose valid part is added back."""

@prim_func
def mm_i8_12(C: i32[64, 12], A: u8[64, 64], B: i8[64, 12]):
    for i, j, k in grid(64, 12, 64):
        C[i, j] += i32(A[i, k]) * i32(B[k, j])
