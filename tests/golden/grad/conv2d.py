"""grad: a padded 3x3 convolution; the data gradient is the transposed convolution over a
padded copy of dY, the weight gradient a gather over the kept padded input."""

@prim_func
def conv2d(X: f32[1, 6, 6, 4], W: f32[3, 3, 4, 8], Y: f32[1, 6, 6, 8]):
    P = alloc(f32[1, 8, 8, 4])
    for n, h, w, c in grid(1, 8, 8, 4):
        P[n, h, w, c] = 0.0
    for n, h, w, c in grid(1, 6, 6, 4):
        P[n, h + 1, w + 1, c] = X[n, h, w, c]
    for n, h, w, co in grid(1, 6, 6, 8):
        Y[n, h, w, co] = 0.0
        for rh, rw, rc in grid(3, 3, 4):
            Y[n, h, w, co] += P[n, h + rh, w + rw, rc] * W[rh, rw, rc, co]
