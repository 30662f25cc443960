"""fold-fill and forward-copy: PolyBench's doitgen (NR=5, NQ=16, NP=30) on the AVX-512 rows.
The reused row ``sum`` is expanded (``sumx``), the product padded to the 32-wide tile; what
is left of ``sumx`` (its zero fill, the padded part added into it, its copy into ``A``) is one
pass from the padded temporary into ``A``, and ``sumx`` is gone."""

@prim_func
def doitgen(A: f32[5, 16, 30], C4: f32[30, 30], sum: f32[30]):
    for r in range(5):
        for q in range(16):
            for p in range(30):
                sum[p] = 0.0
                for s in range(30):
                    sum[p] += A[r, q, s] * C4[s, p]
            for p in range(30):
                A[r, q, p] = sum[p]
