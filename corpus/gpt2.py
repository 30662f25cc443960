"""GPT-2 small (Radford et al. 2019: 12 heads of 64, context 1024) causal attention scores.

The causal mask is a ``select`` on the loop indices, filling the future with GPT-2's
``masked_bias`` of -10000.
"""

from rewrite.script import prim_func, grid, f32, select


@prim_func
def gpt2_causal_qk(Q: f32[2, 128, 64], K: f32[2, 128, 64], S: f32[2, 128, 128]):
    """GPT-2 small attention scores with the causal mask, heads [heads, seq, dim]; context
    scaled 1024 -> 128 and heads 12 -> 2, head dim 64 kept. 2.1 M multiply-adds."""
    for h, i, j in grid(2, 128, 128):
        S[h, i, j] = 0.0
        for d in range(64):
            S[h, i, j] += Q[h, i, d] * K[h, j, d]
        S[h, i, j] = select(j <= i, S[h, i, j] * 0.125, -10000.0)
