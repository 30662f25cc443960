"""A user's rule for the program-level e-graph: a product read transposed is the product of the
transposed factors, in the other order. With the built-in associativity it regroups
``(A @ B).T @ C`` as ``B.T @ (A.T @ C)``."""

from rewrite.program import Matrix, rule


@rule("transpose-product", why="(A @ B).T[i, j] = sum_k A[j, k] * B[k, i] = (B.T @ A.T)[i, j]")
def transpose_product(a: Matrix, b: Matrix):
    return (a @ b).T, b.T @ a.T
