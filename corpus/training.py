"""Training workloads: layers whose backward programs ``tensorize grad`` derives.

A recurrence over several statements (an RNN's time loop) and a two-layer perceptron with a
kept hidden activation: the backward of the first runs backwards in time, the second's is a
chain of matrix products through a relu's mask.
"""

from rewrite.script import prim_func, grid, alloc, f32


@prim_func
def rnn_relu_elman(X: f32[8, 16], H0: f32[32], Wh: f32[32, 32], Wx: f32[16, 32], b: f32[32],
                   H: f32[9, 32]):
    """Elman RNN with a relu (Elman 1990; PyTorch's ``nn.RNN(nonlinearity="relu")``), unrolled
    over time as its word language model example trains it (bptt 35, hidden 200), scaled to
    8 steps, hidden 32, input 16. ``H[t + 1] = relu(H[t] Wh + X[t] Wx + b)``; the
    pre-activation of each step goes through a temporary indexed by time. 12 k multiply-adds."""
    A = alloc(f32[8, 32])
    for i in range(32):
        H[0, i] = H0[i]
    for t in range(8):
        for i in range(32):
            A[t, i] = b[i]
            for j in range(32):
                A[t, i] += H[t, j] * Wh[j, i]
            for k in range(16):
                A[t, i] += X[t, k] * Wx[k, i]
            H[t + 1, i] = max(A[t, i], 0.0)


@prim_func
def mlp_two_layer(X: f32[64, 128], W1: f32[128, 64], b1: f32[64], W2: f32[64, 16], b2: f32[16],
                  Y: f32[64, 16]):
    """Two-layer perceptron (PyTorch's MNIST example's ``fc1``/``fc2``: 9216 -> 128 -> 10,
    batch 64), inputs scaled 9216 -> 128, hidden 128 -> 64, classes 10 -> 16. The hidden
    activation is a temporary the backward keeps. 590 k multiply-adds."""
    Hd = alloc(f32[64, 64])
    for i, j in grid(64, 64):
        Hd[i, j] = b1[j]
        for k in range(128):
            Hd[i, j] += X[i, k] * W1[k, j]
        Hd[i, j] = max(Hd[i, j], 0.0)
    for i, j in grid(64, 16):
        Y[i, j] = b2[j]
        for k in range(64):
            Y[i, j] += Hd[i, k] * W2[k, j]
