"""pad-to-tile along the reduction only: u8 x i8 64 x 64 x 30 on the 16 x 4 dot alone. k (30) is
rounded up to 32, both operands padded with zeros along it (each padded term is 0 * 0); j
divides 16, so the calls accumulate into C itself: no temporary for C, no writeback."""

@prim_func
def mm_i8_k(C: i32[64, 64], A: u8[64, 30], B: i8[30, 64]):
    for i, j, k in grid(64, 64, 30):
        C[i, j] += i32(A[i, k]) * i32(B[k, j])
