"""Dilated 2-D convolution in NHWC (DIL of the TensorIR paper's operator set).

As TVM's ``conv2d_nhwc`` with ``dilation=2`` in ``meta_schedule/testing/te_workload.py``.
"""

from rewrite.script import prim_func, grid, alloc, f32


@prim_func
def dil_conv2d_nhwc(X: f32[1, 14, 14, 32], W: f32[3, 3, 32, 32], Y: f32[1, 12, 12, 32]):
    """DIL, te_workload config 2 (1x14x14, 256->256, kernel 3, stride 1, pad 1, dilation 2).

    Channels scaled 256 -> 32; kernel, stride, padding and dilation kept (output 12x12).
    1.3 M multiply-adds.
    """
    P = alloc(f32[1, 16, 16, 32])
    for n, h, w, c in grid(1, 16, 16, 32):
        P[n, h, w, c] = 0.0
    for n, h, w, c in grid(1, 14, 14, 32):
        P[n, h + 1, w + 1, c] = X[n, h, w, c]
    for n, h, w, co in grid(1, 12, 12, 32):
        Y[n, h, w, co] = 0.0
        for rh, rw, rc in grid(3, 3, 32):
            Y[n, h, w, co] += P[n, h + 2 * rh, w + 2 * rw, rc] * W[rh, rw, rc, co]
