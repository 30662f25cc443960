# i16 weights widened to f32 before an f32 product: at 512 the product packs its right
# operand's panels, and the widening runs in the copy that packs them
@prim_func
def cast_pack(A: f32[512, 512], B: i16[512, 512], C: f32[512, 512]):
    Bf = alloc(f32[512, 512])
    for k, j in grid(512, 512):
        Bf[k, j] = f32(B[k, j])
    for i, j, k in grid(512, 512, 512):
        C[i, j] += A[i, k] * Bf[k, j]
