"""Transpose + batch matmul (TBG of the TensorIR paper's operator set).

As TVM's ``transpose_batch_matmul`` in ``meta_schedule/testing/te_workload.py``: query and
value arrive as [batch, seq, heads, dim], are transposed into temporaries, then multiplied
per head: ``C[b, h, i, j] = sum_k QT[b, h, i, k] * VT[b, h, k, j]``.
"""

from rewrite.script import prim_func, grid, alloc, f32


@prim_func
def tbg(query: f32[1, 128, 2, 64], value: f32[1, 128, 2, 64], C: f32[1, 2, 128, 128]):
    """TBG, te_workload config 0 (BERT-base attention scores: batch 1, seq 128, 12 heads, dim 64).

    Heads scaled 12 -> 2; sequence length and head dim kept. 2.1 M multiply-adds.
    """
    QT = alloc(f32[1, 2, 128, 64])
    VT = alloc(f32[1, 2, 64, 128])
    for b, h, l, d in grid(1, 2, 128, 64):
        QT[b, h, l, d] = query[b, l, h, d]
    for b, h, d, l in grid(1, 2, 64, 128):
        VT[b, h, d, l] = value[b, l, h, d]
    for b, h, i, j in grid(1, 2, 128, 128):
        C[b, h, i, j] = 0.0
        for k in range(64):
            C[b, h, i, j] += QT[b, h, i, k] * VT[b, h, k, j]
