"""Pooling layers of ResNet-50 (He et al. 2016) in NHWC: reductions by ``max`` and by a mean,
with no multiply-accumulate for an intrinsic to take."""

from rewrite.script import prim_func, grid, alloc, f32


@prim_func
def resnet50_maxpool(X: f32[1, 112, 112, 64], Y: f32[1, 56, 56, 64]):
    """ResNet-50 stem max pool (112x112x64, window 3, stride 2, pad 1), unscaled. The
    padding holds the lowest f32 (-FLT_MAX), so it never wins; the maximum starts from
    the window's first element, since ``-inf`` is not writable."""
    P = alloc(f32[1, 114, 114, 64])
    for n, h, w, c in grid(1, 114, 114, 64):
        P[n, h, w, c] = -3.4028234663852886e38
    for n, h, w, c in grid(1, 112, 112, 64):
        P[n, h + 1, w + 1, c] = X[n, h, w, c]
    for n, h, w, c in grid(1, 56, 56, 64):
        Y[n, h, w, c] = P[n, 2 * h, 2 * w, c]
        for rh, rw in grid(3, 3):
            Y[n, h, w, c] = max(Y[n, h, w, c], P[n, 2 * h + rh, 2 * w + rw, c])


@prim_func
def resnet50_global_avgpool(X: f32[1, 7, 7, 2048], Y: f32[1, 2048]):
    """ResNet-50 global average pool before the classifier (7x7x2048 -> 2048), unscaled."""
    for n, c in grid(1, 2048):
        Y[n, c] = 0.0
        for h, w in grid(7, 7):
            Y[n, c] += X[n, h, w, c]
        Y[n, c] = Y[n, c] / 49.0
