"""A deliberately wrong rule: matrix products do not commute."""

from rewrite.program import Matrix, rule


@rule("commute-product", why="(wrong) as if matrix products commuted")
def commute_product(a: Matrix, b: Matrix):
    return a @ b, b @ a
