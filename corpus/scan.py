"""Prefix sums: a loop-carried dependence (each element reads the one before it), so the
scan loop is neither parallel nor a plain reduction."""

from rewrite.script import prim_func, f32


@prim_func
def prefix_sum_1d(X: f32[4096], Y: f32[4096]):
    """Inclusive scan over a 4096-token sequence: Longformer (Beltagy et al. 2020, maximum
    length 4096) numbers positions with a cumulative sum over the padding mask, as RoBERTa
    does. Unscaled."""
    Y[0] = X[0]
    for i in range(1, 4096):
        Y[i] = Y[i - 1] + X[i]


@prim_func
def cumsum_rows(X: f32[32, 256], Y: f32[32, 256]):
    """Row-wise inclusive scan: cumulative probabilities of nucleus (top-p) sampling
    (Holtzman et al. 2020) for a batch of 32, vocabulary scaled 50257 -> 256."""
    for r in range(32):
        Y[r, 0] = X[r, 0]
        for c in range(1, 256):
            Y[r, c] = Y[r, c - 1] + X[r, c]
