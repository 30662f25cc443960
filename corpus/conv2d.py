"""2-D convolution in NHWC (C2D of the TensorIR paper's operator set).

Weights are HWIO, as TVM's ``conv2d_nhwc`` in ``meta_schedule/testing/te_workload.py``.
The convolution is written directly over the padded input window: there is no im2col
copy for a tensorizer to lean on. Padding is a separate stage into a temporary.
"""

from rewrite.script import prim_func, grid, alloc, f32


@prim_func
def c2d_nhwc(X: f32[1, 14, 14, 32], W: f32[3, 3, 32, 32], Y: f32[1, 14, 14, 32]):
    """C2D, te_workload config 2 (ResNet-18 conv4_x 3x3: 1x14x14, 256->256, stride 1, pad 1).

    Channels scaled 256 -> 32 to interpret quickly; spatial size, kernel, stride and padding
    kept. 1.8 M multiply-adds.
    """
    P = alloc(f32[1, 16, 16, 32])
    for n, h, w, c in grid(1, 16, 16, 32):
        P[n, h, w, c] = 0.0
    for n, h, w, c in grid(1, 14, 14, 32):
        P[n, h + 1, w + 1, c] = X[n, h, w, c]
    for n, h, w, co in grid(1, 14, 14, 32):
        Y[n, h, w, co] = 0.0
        for rh, rw, rc in grid(3, 3, 32):
            Y[n, h, w, co] += P[n, h + rh, w + rw, rc] * W[rh, rw, rc, co]


@prim_func
def c2d_stem_7x7(X: f32[1, 32, 32, 3], W: f32[7, 7, 3, 64], Y: f32[1, 16, 16, 64]):
    """C2D, te_workload config 0 (ResNet-18 stem: 224x224x3 -> 64, kernel 7, stride 2, pad 3).

    Input scaled 224x224 -> 32x32 (output 16x16); channels (3 -> 64), kernel, stride and
    padding kept. Three input channels divide no vector width. 2.4 M multiply-adds.
    """
    P = alloc(f32[1, 38, 38, 3])
    for n, h, w, c in grid(1, 38, 38, 3):
        P[n, h, w, c] = 0.0
    for n, h, w, c in grid(1, 32, 32, 3):
        P[n, h + 3, w + 3, c] = X[n, h, w, c]
    for n, h, w, co in grid(1, 16, 16, 64):
        Y[n, h, w, co] = 0.0
        for rh, rw, rc in grid(7, 7, 3):
            Y[n, h, w, co] += P[n, 2 * h + rh, 2 * w + rw, rc] * W[rh, rw, rc, co]
