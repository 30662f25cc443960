"""pad-to-tile: u8 x i8 30 x 30 x 30 on the 16 x 4 dot alone. j (30) and k (30) do not divide
16 and 4: both are rounded up to 32; B is copied into [16, 4] blocks (the dot's contiguous b),
C is computed into a zeroed 30 x 32 temporary whose valid 30 x 30 part is added back."""

@prim_func
def mm_i8(C: i32[30, 30], A: u8[30, 30], B: i8[30, 30]):
    for i in range(30):
        for j in range(30):
            for k in range(30):
                C[i, j] += i32(A[i, k]) * i32(B[k, j])
