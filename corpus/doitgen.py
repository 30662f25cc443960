"""PolyBench/C 4.2 ``doitgen`` (multiresolution analysis kernel) in single precision,
MEDIUM_DATASET (NQ=40, NR=50, NP=60), written as PolyBench writes it: one row ``sum`` reused
by every ``(r, q)``, then copied back into ``A``.

The reused row is what keeps the loops from being distributed; the ``expand`` rule
(``rewrite/rules/expand.py``) gives each iteration its own row, after which the product is a
batched matmul over the rows ``(r, q)``.
"""

from rewrite.script import prim_func, alloc, f32


@prim_func
def doitgen(A: f32[50, 40, 60], C4: f32[60, 60], sum: f32[60]):
    """PolyBench ``doitgen``, MEDIUM_DATASET (NR=50, NQ=40, NP=60): each row ``A[r, q, :]``
    becomes ``A[r, q, :] @ C4`` through the row ``sum``, a parameter as in PolyBench (it is
    left holding the last row's product). 7.2 M multiply-adds."""
    for r in range(50):
        for q in range(40):
            for p in range(60):
                sum[p] = 0.0
                for s in range(60):
                    sum[p] += A[r, q, s] * C4[s, p]
            for p in range(60):
                A[r, q, p] = sum[p]


@prim_func
def doitgen_local_sum(A: f32[50, 40, 60], C4: f32[60, 60]):
    """``doitgen`` as above with the row a temporary of the function (``alloc``), so nothing
    needs its last value. 7.2 M multiply-adds."""
    sum = alloc(f32[60])
    for r in range(50):
        for q in range(40):
            for p in range(60):
                sum[p] = 0.0
                for s in range(60):
                    sum[p] += A[r, q, s] * C4[s, p]
            for p in range(60):
                A[r, q, p] = sum[p]
