# the gradient of a runtime scale factor: dalpha = sum(dC * (A @ B)), as grad writes it
@prim_func
def scale_gradient(A: f32[64, 48], B: f32[48, 96], dC: f32[64, 96], dalpha: f32[1]):
    dalpha[0] = 0.0
    for i, j, k in grid(64, 96, 48):
        dalpha[0] += dC[i, j] * B[k, j] * A[i, k]
