"""ResNet-50 (He et al. 2016) convolution layers in NHWC with HWIO weights.

The two kinds of layer that make up the bottleneck blocks: a 3x3 convolution (padding 1)
and a 1x1 projection (a matmul over channels in disguise).
"""

from rewrite.script import prim_func, grid, alloc, f32


@prim_func
def resnet50_conv3x3(X: f32[1, 7, 7, 64], W: f32[3, 3, 64, 64], Y: f32[1, 7, 7, 64]):
    """ResNet-50 conv5_x bottleneck 3x3 (7x7, 512->512, stride 1, pad 1), channels scaled
    512 -> 64; spatial size, kernel, stride, padding kept. 1.8 M multiply-adds."""
    P = alloc(f32[1, 9, 9, 64])
    for n, h, w, c in grid(1, 9, 9, 64):
        P[n, h, w, c] = 0.0
    for n, h, w, c in grid(1, 7, 7, 64):
        P[n, h + 1, w + 1, c] = X[n, h, w, c]
    for n, h, w, co in grid(1, 7, 7, 64):
        Y[n, h, w, co] = 0.0
        for rh, rw, rc in grid(3, 3, 64):
            Y[n, h, w, co] += P[n, h + rh, w + rw, rc] * W[rh, rw, rc, co]


@prim_func
def resnet50_conv1x1(X: f32[1, 14, 14, 64], W: f32[1, 1, 64, 256], Y: f32[1, 14, 14, 256]):
    """ResNet-50 conv4_x bottleneck 1x1 expansion (14x14, 256->1024, stride 1), channels
    scaled 256 -> 64 and 1024 -> 256 (the 4x expansion kept). 3.2 M multiply-adds."""
    for n, h, w, co in grid(1, 14, 14, 256):
        Y[n, h, w, co] = 0.0
        for rh, rw, rc in grid(1, 1, 64):
            Y[n, h, w, co] += X[n, h + rh, w + rw, rc] * W[rh, rw, rc, co]
