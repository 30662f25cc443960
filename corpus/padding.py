"""Products whose sizes divide no intrinsic's tile: the remainders are a large share of the
work, so running the intrinsic over extents rounded up to its tile, on zero-padded copies
(``rewrite/rules/padding.py``), competes with remainder code on cost."""

from rewrite.script import prim_func, grid, u8, i8, i32, f32


@prim_func
def qgemm_u8i8_30(C: i32[30, 30], A: u8[30, 30], B: i8[30, 30]):
    """u8 x i8 -> i32, 30 x 30 x 30, accumulated into C: the int8 product of TVM's tensorize
    tests that its VNNI intrinsic (16 x 4) cannot tile, 14 of 30 columns and 2 of 30 k left
    over. 27 k multiply-adds."""
    for i in range(30):
        for j in range(30):
            for k in range(30):
                C[i, j] += i32(A[i, k]) * i32(B[k, j])


@prim_func
def sgemm_30(A: f32[30, 30], B: f32[30, 30], C: f32[30, 30]):
    """f32 30 x 30 x 30, the smallest size of the GEMM benchmark (README, Measured): 30 is a
    multiple of neither the 6 x 16 nor the 8 x 32 tile. 27 k multiply-adds."""
    for i, j in grid(30, 30):
        C[i, j] = 0.0
        for k in range(30):
            C[i, j] += A[i, k] * B[k, j]


@prim_func
def sgemm_odd_100x70x50(A: f32[100, 50], B: f32[50, 70], C: f32[100, 70]):
    """f32 100 x 70 x 50: a rectangular product with a remainder along every tile dimension
    (100 = 12 * 8 + 4 rows, 70 = 2 * 32 + 6 columns of the 8 x 32 tile). 350 k
    multiply-adds."""
    for i, j in grid(100, 70):
        C[i, j] = 0.0
        for k in range(50):
            C[i, j] += A[i, k] * B[k, j]
