"""Quantized int8 inference: unsigned 8-bit activations times signed 8-bit weights,
accumulated exactly in int32 (the meaning of x86 ``vpdpbusd``), casts written out."""

from rewrite.script import prim_func, grid, alloc, u8, i8, i32


@prim_func
def qdense_u8i8(A: u8[64, 128], B: i8[128, 128], C: i32[64, 128]):
    """Int8 BERT dense layer (Q8BERT, Zafrir et al. 2019: 128x768 @ 768x768), scaled to
    64x128 @ 128x128; weights [in, out]. 1 M multiply-adds."""
    for i, j in grid(64, 128):
        C[i, j] = 0
        for k in range(128):
            C[i, j] += i32(A[i, k]) * i32(B[k, j])


@prim_func
def qdense_u8i8_nt(A: u8[64, 256], B: i8[64, 256], C: i32[64, 64]):
    """Int8 dense layer with weights [out, in] (the ``torch.nn.Linear`` / oneDNN layout that
    VNNI's 4-byte groups read along), BERT-base 768-wide input scaled to 64x256 @ 256x64.
    1 M multiply-adds."""
    for i, j in grid(64, 64):
        C[i, j] = 0
        for k in range(256):
            C[i, j] += i32(A[i, k]) * i32(B[j, k])


@prim_func
def qconv_u8i8(X: u8[1, 14, 14, 32], W: i8[3, 3, 32, 32], Y: i32[1, 14, 14, 32]):
    """Int8 ResNet-50 conv4_x 3x3 (14x14, 256->256, stride 1, pad 1) in NHWC/HWIO, channels
    scaled 256 -> 32; zero point 0, so padding is 0. 1.8 M multiply-adds."""
    P = alloc(u8[1, 16, 16, 32])
    for n, h, w, c in grid(1, 16, 16, 32):
        P[n, h, w, c] = 0
    for n, h, w, c in grid(1, 14, 14, 32):
        P[n, h + 1, w + 1, c] = X[n, h, w, c]
    for n, h, w, co in grid(1, 14, 14, 32):
        Y[n, h, w, co] = 0
        for rh, rw, rc in grid(3, 3, 32):
            Y[n, h, w, co] += i32(P[n, h + rh, w + rw, rc]) * i32(W[rh, rw, rc, co])


@prim_func
def qdense_u8i8_256(A: u8[256, 256], B: i8[256, 256], C: i32[256, 256]):
    """Square int8 GEMM at 256 with i32 accumulation, the smallest size of the benchmark
    sweep (as ``gemm_256`` for f32). 16.8 M multiply-adds."""
    for i, j in grid(256, 256):
        C[i, j] = 0
        for k in range(256):
            C[i, j] += i32(A[i, k]) * i32(B[k, j])


@prim_func
def qdense_zero_points(A: u8[64, 256], B: i8[256, 256], za: u8[1], zb: i8[1], C: i32[64, 256]):
    """Asymmetric int8 dense layer, ONNX ``MatMulInteger`` with both zero points (TFLite's
    asymmetric activations, gemmlowp): each byte less its tensor's zero point, the products
    summed exactly in int32. Multiplied out (rules/distribute.py), the bytes' product runs on
    the int8 tiles and the zero points become a row sum, a column sum and a constant.
    4.2 M multiply-adds."""
    for i, j in grid(64, 256):
        C[i, j] = 0
        for k in range(256):
            C[i, j] += (i32(A[i, k]) - i32(za[0])) * (i32(B[k, j]) - i32(zb[0]))
