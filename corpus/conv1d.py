"""1-D convolution (C1D of the TensorIR paper's operator set).

Layout NLC with weights [kernel, CI, CO], as in TVM's
``meta_schedule/testing/te_workload.py`` (``conv1d_nlc``). Zero padding is a
separate stage into a temporary, as TVM's ``topi.nn.pad`` produces it.
"""

from rewrite.script import prim_func, grid, alloc, f32


@prim_func
def c1d_nlc(X: f32[1, 256, 64], W: f32[3, 64, 128], Y: f32[1, 128, 128]):
    """C1D, te_workload config 0: N=1, L=256, CI=64, CO=128, kernel 3, stride 2, pad 1 (unscaled).

    Derived by TVM from ResNet-18's first 3x3 stride-2 layer; 3.1 M multiply-adds.
    """
    P = alloc(f32[1, 258, 64])
    for n, l, c in grid(1, 258, 64):
        P[n, l, c] = 0.0
    for n, l, c in grid(1, 256, 64):
        P[n, l + 1, c] = X[n, l, c]
    for n, l, co in grid(1, 128, 128):
        Y[n, l, co] = 0.0
        for rl, rc in grid(3, 64):
            Y[n, l, co] += P[n, 2 * l + rl, rc] * W[rl, rc, co]
