"""Fresh names: the two spellings printed programs show, and copies that leave the original."""

from rewrite.names import Names
from rewrite.script import parse

SRC = """
@prim_func
def f(A: f32[4, 4], T: f32[4]):
    for i, k in grid(4, 4):
        T[i] += A[i, k]
"""


def test_names_of_a_function_are_its_buffers_and_loops():
    names = Names.of(parse(SRC))
    assert all(n in names for n in ("A", "T", "i", "k")) and "j" not in names


def test_fresh_counts_from_two_and_numbered_from_zero():
    names = Names(["T", "mm_U_0"])
    assert [names.fresh("T"), names.fresh("T"), names.fresh("x0")] == ["T2", "T3", "x0"]
    assert [names.numbered("mm_U"), names.numbered("mm_U")] == ["mm_U_1", "mm_U_2"]
    assert all(n in names for n in ("T2", "T3", "x0", "mm_U_1", "mm_U_2"))


def test_a_copy_reserves_apart_from_the_original():
    names = Names(["k"])
    within = names.copy(["i"])
    assert within.fresh("i") == "i2" and within.fresh("k") == "k2"
    assert "i2" not in names and "i" not in names
    assert names.reserve("k_o") == "k_o" and "k_o" in names and "k_o" not in within
