"""grad: a 3x3 stride-2 max pool; the adjoint goes to the first maximal element of each
window (the starting value first), found with a flag per output."""

@prim_func
def maxpool(X: f32[1, 8, 8, 4], Y: f32[1, 4, 4, 4]):
    P = alloc(f32[1, 10, 10, 4])
    for n, h, w, c in grid(1, 10, 10, 4):
        P[n, h, w, c] = -3.4028234663852886e38
    for n, h, w, c in grid(1, 8, 8, 4):
        P[n, h + 1, w + 1, c] = X[n, h, w, c]
    for n, h, w, c in grid(1, 4, 4, 4):
        Y[n, h, w, c] = P[n, 2 * h, 2 * w, c]
        for rh, rw in grid(3, 3):
            Y[n, h, w, c] = max(Y[n, h, w, c], P[n, 2 * h + rh, 2 * w + rw, c])
