"""fusion: operands widened into i32 temporaries are inlined, so the product of the casts
matches the exact u8 x i8 dot intrinsic and the temporaries are dropped."""

@prim_func
def qdense_widened(A: u8[4, 8], B: i8[8, 16], C: i32[4, 16]):
    Ai = alloc(i32[4, 8])
    Bi = alloc(i32[8, 16])
    for i, k in grid(4, 8):
        Ai[i, k] = i32(A[i, k])
    for k, j in grid(8, 16):
        Bi[k, j] = i32(B[k, j])
    for i, j, k in grid(4, 16, 8):
        C[i, j] += Ai[i, k] * Bi[k, j]
