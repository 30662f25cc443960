"""Grouped 2-D convolution in NHWC (GRP of the TensorIR paper's operator set).

Weights are [kh, kw, CI/groups, CO], as TVM's ``conv2d_nhwc`` with ``groups``
in ``meta_schedule/testing/te_workload.py``.
"""

from rewrite.script import prim_func, grid, alloc, f32


@prim_func
def grp_conv2d_nhwc(X: f32[1, 14, 14, 64], W: f32[3, 3, 16, 64], Y: f32[1, 14, 14, 64]):
    """GRP, te_workload config 2 (1x14x14, 256->256, kernel 3, stride 1, pad 1, 4 groups).

    Channels scaled 256 -> 64 (16 per group), groups kept at 4. The group is its own loop.
    1.8 M multiply-adds.
    """
    P = alloc(f32[1, 16, 16, 64])
    for n, h, w, c in grid(1, 16, 16, 64):
        P[n, h, w, c] = 0.0
    for n, h, w, c in grid(1, 14, 14, 64):
        P[n, h + 1, w + 1, c] = X[n, h, w, c]
    for n, h, w, g, c in grid(1, 14, 14, 4, 16):
        Y[n, h, w, 16 * g + c] = 0.0
        for rh, rw, rc in grid(3, 3, 16):
            Y[n, h, w, 16 * g + c] += P[n, h + rh, w + rw, 16 * g + rc] * W[rh, rw, rc, 16 * g + c]


@prim_func
def grp_conv2d_nhwc_divmod(X: f32[1, 14, 14, 64], W: f32[3, 3, 16, 64], Y: f32[1, 14, 14, 64]):
    """GRP, te_workload config 2, written as TVM indexes it: input channel ``co // 16 * 16 + rc``.

    Same shape and scaling as ``grp_conv2d_nhwc`` (channels 256 -> 64, 4 groups); the group
    is hidden in an integer division of the output channel. 1.8 M multiply-adds.
    """
    P = alloc(f32[1, 16, 16, 64])
    for n, h, w, c in grid(1, 16, 16, 64):
        P[n, h, w, c] = 0.0
    for n, h, w, c in grid(1, 14, 14, 64):
        P[n, h + 1, w + 1, c] = X[n, h, w, c]
    for n, h, w, co in grid(1, 14, 14, 64):
        Y[n, h, w, co] = 0.0
        for rh, rw, rc in grid(3, 3, 16):
            Y[n, h, w, co] += P[n, h + rh, w + rw, co // 16 * 16 + rc] * W[rh, rw, rc, co]
