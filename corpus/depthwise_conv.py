"""Depthwise 2-D convolution in NHWC (DEP of the TensorIR paper's operator set).

Weights [factor=1, kh, kw, C], as TVM's ``depthwise_conv2d_nhwc`` in
``meta_schedule/testing/te_workload.py``. No reduction over channels: only the
3x3 window is summed, so a dot-product intrinsic finds little to cover.
"""

from rewrite.script import prim_func, grid, alloc, f32


@prim_func
def dep_conv2d_nhwc(X: f32[1, 112, 112, 32], W: f32[1, 3, 3, 32], Y: f32[1, 112, 112, 32]):
    """DEP, te_workload config 0 (MobileNet-v1 first depthwise layer: 112x112x32, 3x3, stride 1, pad 1).

    Unscaled. 3.6 M multiply-adds.
    """
    P = alloc(f32[1, 114, 114, 32])
    for n, h, w, c in grid(1, 114, 114, 32):
        P[n, h, w, c] = 0.0
    for n, h, w, c in grid(1, 112, 112, 32):
        P[n, h + 1, w + 1, c] = X[n, h, w, c]
    for n, h, w, c in grid(1, 112, 112, 32):
        Y[n, h, w, c] = 0.0
        for rh, rw in grid(3, 3):
            Y[n, h, w, c] += P[n, h + rh, w + rw, c] * W[0, rh, rw, c]


@prim_func
def dep_conv2d_nhwc_s2(X: f32[1, 112, 112, 64], W: f32[1, 3, 3, 64], Y: f32[1, 56, 56, 64]):
    """DEP, te_workload config 1 (MobileNet-v1 second depthwise layer: 112x112x64, 3x3, stride 2, pad 1).

    Unscaled. 1.8 M multiply-adds.
    """
    P = alloc(f32[1, 114, 114, 64])
    for n, h, w, c in grid(1, 114, 114, 64):
        P[n, h, w, c] = 0.0
    for n, h, w, c in grid(1, 112, 112, 64):
        P[n, h + 1, w + 1, c] = X[n, h, w, c]
    for n, h, w, c in grid(1, 56, 56, 64):
        Y[n, h, w, c] = 0.0
        for rh, rw in grid(3, 3):
            Y[n, h, w, c] += P[n, 2 * h + rh, 2 * w + rw, c] * W[0, rh, rw, c]
