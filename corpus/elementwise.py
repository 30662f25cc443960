"""Elementwise epilogues: ``relu(x * scale + bias)`` chains with no reduction, where only
vector (not matrix) intrinsics can help."""

from rewrite.script import prim_func, grid, f32


@prim_func
def scale_bias_relu_1d(X: f32[4096], scale: f32[4096], bias: f32[4096], Y: f32[4096]):
    """VGG-16 fc6 epilogue: 4096 activations, per-unit scale (folded batch norm) and bias,
    then ReLU. Unscaled."""
    for i in range(4096):
        Y[i] = max(X[i] * scale[i] + bias[i], 0.0)


@prim_func
def scale_bias_relu_2d(X: f32[128, 768], scale: f32[768], bias: f32[768], Y: f32[128, 768]):
    """Per-channel scale, bias and ReLU over a BERT-base activation (seq 128, hidden 768),
    the parameters broadcast along the rows. Unscaled."""
    for i, j in grid(128, 768):
        Y[i, j] = max(X[i, j] * scale[j] + bias[j], 0.0)


@prim_func
def bn_add_relu_nhwc(X: f32[1, 14, 14, 256], scale: f32[256], shift: f32[256],
                     R: f32[1, 14, 14, 256], Y: f32[1, 14, 14, 256]):
    """End of a ResNet-50 conv4_x bottleneck block (14x14x1024): inference batch norm, the
    shortcut added, then ReLU; channels scaled 1024 -> 256."""
    for n, h, w, c in grid(1, 14, 14, 256):
        Y[n, h, w, c] = max(X[n, h, w, c] * scale[c] + shift[c] + R[n, h, w, c], 0.0)
