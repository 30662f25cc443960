"""BERT-base encoder layer pieces (Devlin et al. 2019: hidden 768, 12 heads of 64, FFN 3072,
sequence 128).

Activations are [seq, hidden] (batch 1); attention keeps the heads interleaved as
[seq, heads, dim], as the reshape of the QKV projection leaves them, so no transpose is
materialised.
"""

from rewrite.script import prim_func, grid, alloc, f32, sqrt


@prim_func
def bert_ffn_dense_bias_relu(X: f32[32, 128], W: f32[128, 512], bias: f32[512], Y: f32[32, 512]):
    """BERT-base FFN up-projection (128x768 @ 768x3072 + bias, then the activation), scaled:
    sequence 128 -> 32, hidden 768 -> 128, FFN 3072 -> 512 (ratio 4 kept); GELU replaced by
    ReLU. The epilogue runs in the same nest after the reduction. 2.1 M multiply-adds."""
    for i, j in grid(32, 512):
        Y[i, j] = 0.0
        for k in range(128):
            Y[i, j] += X[i, k] * W[k, j]
        Y[i, j] = max(Y[i, j] + bias[j], 0.0)


@prim_func
def bert_qk(Q: f32[128, 2, 64], K: f32[128, 2, 64], S: f32[2, 128, 128]):
    """BERT-base attention scores Q K^T / sqrt(64) per head (seq 128, head dim 64), heads
    scaled 12 -> 2. K is read along its head dim (a transposed operand). 2.1 M multiply-adds."""
    for h, i, j in grid(2, 128, 128):
        S[h, i, j] = 0.0
        for d in range(64):
            S[h, i, j] += Q[i, h, d] * K[j, h, d]
        S[h, i, j] = S[h, i, j] * 0.125


@prim_func
def bert_attn_v(P: f32[2, 128, 128], V: f32[128, 2, 64], O: f32[128, 2, 64]):
    """BERT-base attention probabilities times values per head (seq 128, head dim 64), heads
    scaled 12 -> 2; the output lands interleaved [seq, heads, dim]. 2.1 M multiply-adds."""
    for i, h, d in grid(128, 2, 64):
        O[i, h, d] = 0.0
        for j in range(128):
            O[i, h, d] += P[h, i, j] * V[j, h, d]


@prim_func
def bert_layernorm(X: f32[128, 768], gamma: f32[768], beta: f32[768], Y: f32[128, 768]):
    """BERT-base LayerNorm over the hidden size (seq 128, hidden 768, eps 1e-12), unscaled.
    Mean and variance go through temporaries."""
    mean = alloc(f32[128])
    var = alloc(f32[128])
    for i in range(128):
        mean[i] = 0.0
        for j in range(768):
            mean[i] += X[i, j]
        mean[i] = mean[i] / 768.0
        var[i] = 0.0
        for j in range(768):
            var[i] += (X[i, j] - mean[i]) * (X[i, j] - mean[i])
        var[i] = var[i] / 768.0
        for j in range(768):
            Y[i, j] = (X[i, j] - mean[i]) / sqrt(var[i] + 1e-12) * gamma[j] + beta[j]
