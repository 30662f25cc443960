"""Transposed 2-D convolution in NHWC (T2D of the TensorIR paper's operator set).

Written as TVM's ``conv2d_transpose_nhwc`` in ``meta_schedule/testing/te_workload.py``
computes it: the input is dilated by the stride and padded into a temporary, then an
ordinary convolution runs over it with the kernel flipped (``W[3 - rh, 3 - rw, ...]``).
"""

from rewrite.script import prim_func, grid, alloc, f32


@prim_func
def t2d_nhwc(X: f32[1, 4, 4, 64], W: f32[4, 4, 64, 32], Y: f32[1, 8, 8, 32]):
    """T2D, te_workload config 0 (DCGAN generator layer: 4x4, 512->256, kernel 4, stride 2, pad 1).

    Channels scaled 512 -> 64 in, 256 -> 32 out; kernel, stride and padding kept
    (output 8x8). 2.1 M multiply-adds counting the dilation's zeros.
    """
    D = alloc(f32[1, 11, 11, 64])
    for n, h, w, c in grid(1, 11, 11, 64):
        D[n, h, w, c] = 0.0
    for n, h, w, c in grid(1, 4, 4, 64):
        D[n, 2 * h + 2, 2 * w + 2, c] = X[n, h, w, c]
    for n, h, w, co in grid(1, 8, 8, 32):
        Y[n, h, w, co] = 0.0
        for rh, rw, rc in grid(4, 4, 64):
            Y[n, h, w, co] += D[n, h + rh, w + rw, rc] * W[3 - rh, 3 - rw, rc, co]
