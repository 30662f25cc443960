"""A user's rule written from scratch: a shared left factor taken out of a sum of products."""

from rewrite.program import Matrix, rule


@rule("factor-shared-left", why="sum_k a[i, k] * b[k, j] + sum_k a[i, k] * c[k, j] = "
                                 "sum_k a[i, k] * (b[k, j] + c[k, j]), elementwise")
def factor_shared_left(a: Matrix, b: Matrix, c: Matrix):
    return a @ b + a @ c, a @ (b + c)
