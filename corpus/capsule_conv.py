"""Capsule 2-D convolution (CAP of the TensorIR paper's operator set).

Each pixel holds a 4x4 pose matrix per channel; the convolution multiplies pose matrices
while summing over the window and input channels, as TVM's ``conv2d_capsule_nhwijc`` in
``meta_schedule/testing/te_workload.py``.
"""

from rewrite.script import prim_func, grid, alloc, f32


@prim_func
def cap_conv2d(X: f32[1, 16, 16, 4, 4, 8], W: f32[3, 3, 4, 4, 8, 8], Y: f32[1, 8, 8, 4, 4, 8]):
    """CAP, te_workload config 0 (matrix capsules with EM routing, ICLR 2018: 16x16, 32->32 capsules,
    kernel 3, stride 2, pad 1, 4x4 poses).

    Capsule channels scaled 32 -> 8; spatial size, kernel, stride, padding and pose size
    kept. 2.4 M multiply-adds.
    """
    P = alloc(f32[1, 18, 18, 4, 4, 8])
    for n, h, w, ci, cj, c in grid(1, 18, 18, 4, 4, 8):
        P[n, h, w, ci, cj, c] = 0.0
    for n, h, w, ci, cj, c in grid(1, 16, 16, 4, 4, 8):
        P[n, h + 1, w + 1, ci, cj, c] = X[n, h, w, ci, cj, c]
    for n, h, w, ci, cj, co in grid(1, 8, 8, 4, 4, 8):
        Y[n, h, w, ci, cj, co] = 0.0
        for rh, rw, ck, rc in grid(3, 3, 4, 8):
            Y[n, h, w, ci, cj, co] += P[n, 2 * h + rh, 2 * w + rw, ci, ck, rc] * W[rh, rw, ck, cj, rc, co]
