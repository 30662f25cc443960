"""layout: a 3x3 NHWC convolution maps through its window accesses (implicit im2col)."""

@prim_func
def conv(X: f32[8, 8, 4], W: f32[3, 3, 4, 16], Y: f32[6, 6, 16]):
    for h, w, co, rh, rw, rc in grid(6, 6, 16, 3, 3, 4):
        Y[h, w, co] += X[h + rh, w + rw, rc] * W[rh, rw, rc, co]
