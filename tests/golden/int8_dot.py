"""casts: u8 x i8 products widened to i32 match the exact dot intrinsic."""

@prim_func
def qdense(A: u8[4, 8], B: i8[8, 16], C: i32[4, 16]):
    for i, j, k in grid(4, 16, 8):
        C[i, j] += i32(A[i, k]) * i32(B[k, j])
