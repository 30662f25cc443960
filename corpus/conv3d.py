"""3-D convolution in NDHWC (C3D of the TensorIR paper's operator set).

Weights are DHWIO, as TVM's ``conv3d_ndhwc`` in ``meta_schedule/testing/te_workload.py``.
"""

from rewrite.script import prim_func, grid, alloc, f32


@prim_func
def c3d_ndhwc(X: f32[1, 8, 7, 7, 16], W: f32[3, 3, 3, 16, 16], Y: f32[1, 8, 7, 7, 16]):
    """C3D, te_workload config 3 (1x16x7x7, 512->512, kernel 3, stride 1, pad 1).

    Depth scaled 16 -> 8 and channels 512 -> 16; kernel, stride, padding kept.
    2.7 M multiply-adds.
    """
    P = alloc(f32[1, 10, 9, 9, 16])
    for n, d, h, w, c in grid(1, 10, 9, 9, 16):
        P[n, d, h, w, c] = 0.0
    for n, d, h, w, c in grid(1, 8, 7, 7, 16):
        P[n, d + 1, h + 1, w + 1, c] = X[n, d, h, w, c]
    for n, d, h, w, co in grid(1, 8, 7, 7, 16):
        Y[n, d, h, w, co] = 0.0
        for rd, rh, rw, rc in grid(3, 3, 3, 16):
            Y[n, d, h, w, co] += P[n, d + rd, h + rh, w + rw, rc] * W[rd, rh, rw, rc, co]
