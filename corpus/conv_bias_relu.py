"""Convolution + bias + batch norm (inference) + ReLU in NHWC (CBR of the TensorIR paper's
operator set).

As TVM's ``conv2d_nhwc_bn_relu`` in ``meta_schedule/testing/te_workload.py``: padding,
convolution into a temporary, then one elementwise epilogue
``relu((conv + bias) * bn_scale + bn_offset)`` per output channel.
"""

from rewrite.script import prim_func, grid, alloc, f32


@prim_func
def cbr_nhwc(X: f32[1, 56, 56, 16], W: f32[3, 3, 16, 32], bias: f32[32], bn_scale: f32[32],
             bn_offset: f32[32], Y: f32[1, 28, 28, 32]):
    """CBR, te_workload config 1 (ResNet-18 conv3_x entry: 56x56, 64->128, kernel 3, stride 2, pad 1).

    Channels scaled 64 -> 16 in and 128 -> 32 out; spatial size, kernel, stride and
    padding kept (output 28x28). 3.6 M multiply-adds.
    """
    P = alloc(f32[1, 58, 58, 16])
    C = alloc(f32[1, 28, 28, 32])
    for n, h, w, c in grid(1, 58, 58, 16):
        P[n, h, w, c] = 0.0
    for n, h, w, c in grid(1, 56, 56, 16):
        P[n, h + 1, w + 1, c] = X[n, h, w, c]
    for n, h, w, co in grid(1, 28, 28, 32):
        C[n, h, w, co] = 0.0
        for rh, rw, rc in grid(3, 3, 16):
            C[n, h, w, co] += P[n, 2 * h + rh, 2 * w + rw, rc] * W[rh, rw, rc, co]
    for n, h, w, co in grid(1, 28, 28, 32):
        Y[n, h, w, co] = max((C[n, h, w, co] + bias[co]) * bn_scale[co] + bn_offset[co], 0.0)
