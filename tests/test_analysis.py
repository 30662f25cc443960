"""Dependence analysis: every expected class and answer below is worked out by hand from the
program's meaning (the comment next to it says why), never read off the analysis' output.

Most cases run twice: with exact enumeration of instance pairs, and with enumeration off so
the GCD and Banerjee tests alone must reach the same answer.
"""

from dataclasses import fields, is_dataclass, replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rewrite import analysis, inputs
from rewrite.analysis import (Affine, affine, can_distribute, can_fuse, can_interchange,
                              can_parallelize, can_permute, can_split, dependences, describe,
                              direction_summary, directions, find_loop, loops, stmt_at)
from rewrite.fuzz import programs
from rewrite.ir import Binary, Const, For, Select, Store, Var, seq, stmts_of
from rewrite.script import parse, parse_file

CORPUS = Path(__file__).resolve().parent.parent / "corpus"


@pytest.fixture(params=["exact", "bounds"])
def engine(request, monkeypatch):
    """Run a test with enumeration allowed, and again with only GCD + Banerjee."""
    if request.param == "bounds":
        monkeypatch.setattr(analysis, "ENUMERATION_LIMIT", 0)
    return request.param


def kinds(func) -> dict[str, str]:
    """Loop class by variable (the programs below use each name once)."""
    return {info.var: info.kind for info in loops(func)}


# ---------------------------------------------------------------------------
# affine maps

def test_affine_maps():
    f = parse("""
@prim_func
def f(X: f32[64]):
    for i, k in grid(4, 4):
        X[2*i + k - 1 + 1] = X[-(i - 3)] + X[3 * (i + 1)] + X[i // 2] + X[i % 2]
""")
    store = stmt_at(f, (0, 0, 0))
    loads = [x for x in analysis.accesses(f) if x.kind == "read"]
    assert affine(store.indices[0]) == Affine((("i", 2), ("k", 1)), 0)
    assert [x.maps[0] for x in loads] == [Affine((("i", -1),), 3), Affine((("i", 3),), 3), None, None]
    assert affine(Const(1.5, "f32")) is None
    assert str(Affine((("i", 2), ("j", -1)), -3)) == "2*i - j - 3"


def test_affine_views_and_bounds():
    """The one extractor's views: the analysis reads through a cast to i64, the interpreter
    and the bound check do not; the bound check admits ``//`` and ``%`` terms as atoms."""
    from rewrite.affine import affine as extract
    from rewrite.ir import Cast

    i, j = Var("i"), Var("j")
    cast = Cast("i64", Const(3, "i32"))
    assert extract(Binary("+", i, cast)) == Affine((("i", 1),), 3)
    assert extract(Binary("+", i, cast), casts=False) is None
    half = Binary("//", Binary("+", i, Const(1, "i64")), Const(2, "i64"))
    index = Binary("-", Binary("+", Binary("*", Const(2, "i64"), half), j), half)  # 2*h + j - h
    assert extract(index) is None
    form = extract(index, atom=lambda e: isinstance(e, Binary) and e.op == "//")
    assert form == Affine((("j", 1), (half, 1)), 0)
    spans = {"j": (0, 3), half: (0, 4)}
    assert form.bounds(spans.get) == (0, 7)
    assert Affine((("i", -2),), 1).bounds({"i": (0, 3)}.get) == (-5, 1)
    assert Affine((("k", 1),)).bounds({"i": (0, 3)}.get) is None


# ---------------------------------------------------------------------------
# paths and accesses

PATHS = parse("""
@prim_func
def paths(X: f32[8], T: f32[8], Y: f32[8]):
    for i in range(8):
        T[i] = X[i]
        if i > 0:
            Y[i] = T[i - 1]
        else:
            Y[i] = select(X[i] > 1.0, X[0], 0.0)
    for i in range(8):
        Y[i] += T[i]
""")


def test_paths_name_statements_and_branches():
    assert isinstance(stmt_at(PATHS, (0,)), For) and isinstance(stmt_at(PATHS, (1,)), For)
    assert stmt_at(PATHS, (0, 0)).buffer.name == "T"
    assert isinstance(stmt_at(PATHS, (0, 1, 0, 0)), Store)
    assert stmt_at(PATHS, (0, 1, 0, 0)).value.indices == (Binary("-", Var("i"), Const(1, "i64")),)
    assert isinstance(stmt_at(PATHS, (0, 1, 1, 0)).value, Select)
    with pytest.raises(ValueError):
        stmt_at(PATHS, (0, 5))
    with pytest.raises(ValueError):
        find_loop(PATHS, "i")  # two sibling loops over i: a name does not identify a loop
    with pytest.raises(ValueError):
        can_parallelize(PATHS, (0, 0))  # a store, not a loop


def test_accesses_in_execution_order_with_loops():
    acc = analysis.accesses(PATHS)
    # a statement's loads come before its write; `i > 0` loads nothing; the select loads twice
    assert [(x.buffer.name, x.kind) for x in acc] == [
        ("X", "read"), ("T", "write"),
        ("T", "read"), ("Y", "write"),
        ("X", "read"), ("X", "read"), ("Y", "write"),
        ("T", "read"), ("Y", "accumulate")]
    assert [x.order for x in acc] == list(range(9))
    assert [x.path for x in acc] == [(0, 0)] * 2 + [(0, 1, 0, 0)] * 2 + [(0, 1, 1, 0)] * 3 + [(1, 0)] * 2
    assert [l.path for l in acc[-1].loops] == [(1,)]
    assert acc[2].maps == (Affine((("i", 1),), -1),)
    assert acc[5].maps == (Affine((), 0),)


def test_loads_in_conditions_are_accesses():
    f = parse("""
@prim_func
def f(X: f32[8], Y: f32[8]):
    for i in range(8):
        if X[i] > 0.0:
            Y[i] = 1.0
""")
    assert [(x.buffer.name, x.kind, x.path) for x in analysis.accesses(f)] == [
        ("X", "read", (0, 0)), ("Y", "write", (0, 0, 0, 0))]


# ---------------------------------------------------------------------------
# loop classes: the cases the rewrites depend on

def test_prefix_sum_is_carried(engine):
    f = parse("""
@prim_func
def prefix(X: f32[16], Y: f32[16]):
    for i in range(1, 16):
        Y[i] = Y[i - 1] + X[i]
""")
    # iteration i reads what iteration i-1 wrote: a flow dependence at distance 1
    assert kinds(f) == {"i": "carried"}
    (dep,) = [d for d in dependences(f) if d.carrier is not None]
    assert (dep.kind, dep.direction, dep.distance) == ("flow", ("<",), (1,))
    assert not can_parallelize(f, (0,))


def test_in_place_stencil_is_carried(engine):
    f = parse("""
@prim_func
def stencil(X: f32[16]):
    for i in range(1, 15):
        X[i] = X[i - 1] + X[i + 1]
""")
    # X[i-1] was written by iteration i-1 (flow); X[i+1] is overwritten by iteration i+1 (anti)
    carried = {(d.kind, d.direction, d.distance) for d in dependences(f) if d.carrier == 0}
    assert carried == {("flow", ("<",), (1,)), ("anti", ("<",), (1,))}
    assert kinds(f) == {"i": "carried"}


MATMUL = """
@prim_func
def matmul(A: f32[N, N], B: f32[N, N], C: f32[N, N]):
    for i, j in grid(N, N):
        C[i, j] = 0.0
        for k in range(N):
            C[i, j] += A[i, k] * B[k, j]
"""


@pytest.mark.parametrize("n", [8, 64])
def test_matmul_ij_parallel_k_reduction(engine, n):
    f = parse(MATMUL.replace("N", str(n)))
    # distinct (i, j) touch distinct C elements; all k of one (i, j) add into the same one
    assert kinds(f) == {"i": "parallel", "j": "parallel", "k": "reduction"}
    assert describe(f) == ["i: parallel", "  j: parallel", "    k: reduction (+= into C[i, j])"]
    assert can_parallelize(f, (0,)) and can_parallelize(f, (0, 0)) and not can_parallelize(f, (0, 0, 1))


TWO_REDUCTIONS = parse("""
@prim_func
def two(A: i32[8, 8], B: i32[8, 8], D: i32[8, 8], E: i32[8, 8], C: i32[8, 8]):
    for i, j in grid(8, 8):
        C[i, j] = 0
        for k in range(8):
            C[i, j] += A[i, k] * B[k, j]
        for k in range(8):
            C[i, j] += D[i, k] * E[k, j]
""")


def test_two_reductions_into_one_output(engine):
    infos = loops(TWO_REDUCTIONS)
    assert [(x.path, x.var, x.kind) for x in infos] == [
        ((0,), "i", "parallel"), ((0, 0), "j", "parallel"),
        ((0, 0, 1), "k", "reduction"), ((0, 0, 2), "k", "reduction")]
    # fused, k-loop 2's terms interleave with loop 1's: the same sum in another order
    assert can_fuse(TWO_REDUCTIONS, (0, 0, 1), (0, 0, 2), allow_reassociation=True)
    assert not can_fuse(TWO_REDUCTIONS, (0, 0, 1), (0, 0, 2), allow_reassociation=False)


def test_max_plus_is_carried_not_a_reduction(engine):
    f = parse("""
@prim_func
def maxplus(A: f32[8, 8], B: f32[8, 8], C: f32[8, 8]):
    for i, j, k in grid(8, 8, 8):
        C[i, j] = max(C[i, j], A[i, k] + B[k, j])
""")
    # a Store that reads its own target: only `+=` counts as a reduction
    assert kinds(f) == {"i": "parallel", "j": "parallel", "k": "carried"}


def test_same_element_written_twice(engine):
    every_iteration = parse("""
@prim_func
def last(X: f32[8], Y: f32[1]):
    for i in range(8):
        Y[0] = X[i]
""")
    twice_per_iteration = parse("""
@prim_func
def twice(X: f32[8], Y: f32[8]):
    for i in range(8):
        Y[i] = 0.0
        Y[i] = X[i]
""")
    # the last iteration's value must win: an output dependence between iterations
    assert kinds(every_iteration) == {"i": "carried"}
    assert dependences(every_iteration)[0].kind == "output"
    # both writes of one element are in the same iteration, in order: nothing is carried
    assert kinds(twice_per_iteration) == {"i": "parallel"}
    (dep,) = dependences(twice_per_iteration)
    assert (dep.kind, dep.direction, dep.source.order < dep.sink.order) == ("output", ("=",), True)


def test_conditional_writes(engine):
    maybe_same = parse("""
@prim_func
def f(X: f32[8], Y: f32[1]):
    for i in range(8):
        if X[i] > 0.0:
            Y[0] = X[i]
""")
    distinct = parse("""
@prim_func
def g(X: f32[8], Y: f32[8]):
    for i in range(8):
        if i % 2 == 0:
            Y[i] = X[i]
""")
    # which iteration writes last depends on the data: assume the guarded writes happen
    assert kinds(maybe_same) == {"i": "carried"}
    assert kinds(distinct) == {"i": "parallel"}


def test_floor_div_and_mod_indices():
    halves = parse("""
@prim_func
def halves(X: f32[8], Y: f32[4]):
    for i in range(8):
        Y[i // 2] = X[i]
""")
    split = parse("""
@prim_func
def split(X: f32[8], Y: f32[4, 2]):
    for i in range(8):
        Y[i // 2, i % 2] = X[i]
""")
    # i = 0 and i = 1 both write Y[0]
    assert kinds(halves) == {"i": "carried"}
    # (i // 2, i % 2) is a different element for every i: exact enumeration sees it
    assert kinds(split) == {"i": "parallel"}


def test_floor_div_and_mod_are_conservative_without_enumeration(monkeypatch):
    monkeypatch.setattr(analysis, "ENUMERATION_LIMIT", 0)
    split = parse("""
@prim_func
def split(X: f32[8], Y: f32[4, 2]):
    for i in range(8):
        Y[i // 2, i % 2] = X[i]
""")
    assert kinds(split) == {"i": "carried"}


def test_reduction_read_inside_its_loop_is_carried(engine):
    running = parse("""
@prim_func
def running(X: i32[8], C: i32[1], Y: i32[8]):
    for k in range(8):
        C[0] += X[k]
        Y[k] = C[0]
""")
    doubling = parse("""
@prim_func
def doubling(C: i32[1]):
    for k in range(8):
        C[0] += C[0]
""")
    # Y[k] sees the partial sum after k+1 terms: reordering the terms changes it
    assert kinds(running) == {"k": "carried"}
    # each term is the running value itself (C doubles), not an independent addend
    assert kinds(doubling) == {"k": "carried"}


def test_independent_by_gcd_and_by_bounds(engine):
    gcd = parse("""
@prim_func
def gcd(Y: f32[16]):
    for i in range(8):
        Y[2 * i] = Y[2 * i + 1]
""")
    bounds = parse("""
@prim_func
def bounds(Y: f32[16]):
    for i in range(8):
        Y[i] = Y[i + 8]
""")
    # even elements are written, odd ones read; the halves [0, 8) and [8, 16) never meet
    assert kinds(gcd) == {"i": "parallel"} and dependences(gcd) == []
    assert kinds(bounds) == {"i": "parallel"} and dependences(bounds) == []


def test_in_place_transpose_is_carried(engine):
    f = parse("""
@prim_func
def transpose(A: f32[6, 6]):
    for i, j in grid(6, 6):
        A[i, j] = A[j, i]
""")
    # A[1, 0] is read at (i, j) = (0, 1) and written later at (1, 0): an anti dependence on i
    assert kinds(f)["i"] == "carried"
    # for fixed i, j ranges over distinct A[i, j] and reads A[j, i]: they meet only at j == i,
    # where the read precedes the write in the same iteration
    # (GCD and Banerjee test each dimension alone and cannot see that coupling)
    assert kinds(f)["j"] == ("parallel" if engine == "exact" else "carried")


def test_single_iteration_and_empty_loops_are_parallel(engine):
    f = parse("""
@prim_func
def f(X: f32[8], Y: f32[1]):
    for i in range(3, 4):
        Y[0] = X[i]
    for j in range(8):
        for k in range(2, 4):
            Y[0] = X[j]
""")
    f = rebuild(f, (1, 0), lambda k: replace(k, stop=2))  # the script rejects empty loops; the IR may not
    # one iteration cannot depend on another; an empty loop never runs its body
    assert kinds(f) == {"i": "parallel", "j": "parallel", "k": "parallel"}


# ---------------------------------------------------------------------------
# direction vectors and interchange

def test_anti_diagonal_dependence_blocks_interchange(engine):
    f = parse("""
@prim_func
def f(A: i32[8, 8]):
    for i in range(1, 8):
        for j in range(0, 7):
            A[i, j] = A[i - 1, j + 1] + 1
""")
    # A[i, j] is read back at (i + 1, j - 1): direction (<, >); swapped it would be (>, <)
    (dep,) = dependences(f)
    assert (dep.kind, dep.direction, dep.distance) == ("flow", ("<", ">"), (1, -1))
    assert not can_interchange(f, (0,), (0, 0))
    assert kinds(f) == {"i": "carried", "j": "parallel"}


@pytest.mark.parametrize("read, direction", [("A[i - 1, j - 1]", ("<", "<")), ("A[i, j - 1]", ("=", "<")),
                                              ("A[i - 1, j]", ("<", "=")), ("A[i - 1, 7 - j]", None)])
def test_interchange_legal_without_a_lt_gt_dependence(engine, read, direction):
    f = parse(f"""
@prim_func
def f(A: i32[8, 8]):
    for i in range(1, 8):
        for j in range(1, 7):
            A[i, j] = {read} + 1
""")
    if direction is not None:
        # one dependence at a fixed distance; swapping keeps it lexicographically positive
        assert [d.direction for d in dependences(f)] == [direction]
        assert can_interchange(f, (0,), (0, 0))
    else:
            # A[i, j] is read back at (i + 1, 7 - j): a later j for j <= 3, an earlier one for j >= 4
        assert ("<", ">") in {d.direction for d in dependences(f)}
        assert not can_interchange(f, (0,), (0, 0))


def test_interchange_of_a_reduction_needs_reassociation(engine):
    f = parse("""
@prim_func
def total(A: i32[8, 8], C: i32[1]):
    for k, i in grid(8, 8):
        C[0] += A[k, i]
""")
    # every pair of iterations adds into C[0], including (<, >): k-major and i-major orders
    # differ only in the order of the terms
    assert can_interchange(f, (0,), (0, 0), allow_reassociation=True)
    assert not can_interchange(f, (0,), (0, 0), allow_reassociation=False)


def test_matmul_permutations():
    f = parse("""
@prim_func
def mm(A: f32[16, 16], B: f32[16, 16], C: f32[16, 16]):
    for i, j, k in grid(16, 16, 16):
        C[i, j] += A[i, k] * B[k, j]
""")
    # the only dependences are (=, =, <) between += of one element: every order keeps them
    for order in [(0, 2, 1), (2, 0, 1), (1, 2, 0), (2, 1, 0)]:
        assert can_permute(f, (0,), order, allow_reassociation=False)
    with pytest.raises(ValueError):
        can_permute(f, (0,), (0, 0, 1))
    with pytest.raises(ValueError):
        can_interchange(f, (0,), (0, 0, 0))  # not directly nested


def test_interchange_needs_a_perfect_nest():
    f = parse("""
@prim_func
def f(Y: i32[4, 4]):
    for i in range(4):
        for j in range(4):
            Y[i, j] = 0
        Y[i, 0] += 1
""")
    with pytest.raises(ValueError):
        can_interchange(f, (0,), (0, 0))  # i's body holds more than the j loop


def test_directions_between_two_accesses(engine):
    f = parse("""
@prim_func
def f(A: i32[8, 8]):
    for i, j in grid(8, 8):
        A[i, j] = A[j, 0] + 1
""")
    read, write = analysis.accesses(f)
    # A[i, j] == A[j', 0] at write (i, j), read (i', j'): j == 0 and j' == i, i' is free.
    # With i == 0 the read's (i', 0) is at or after (0, 0); with i > 0, j' = i > j = 0.
    exact = {("=", "="), ("<", "="), ("<", "<"), ("=", "<"), (">", "<")}
    if engine == "exact":
        assert directions(write, read) == exact
    else:
        assert directions(write, read) >= exact
    assert directions(read, write) >= {("=", "="), (">", "="), (">", ">"), ("=", ">"), ("<", ">")}
    # both components take more than one value; a component all vectors share stays
    assert direction_summary(exact) == ("*", "*")
    assert direction_summary(frozenset({("=", "<"), ("<", "<")})) == ("*", "<")


# ---------------------------------------------------------------------------
# fusion and distribution

def producer_consumer(read: str, lo: int = 0, hi: int = 8) -> str:
    return f"""
@prim_func
def pc(X: i32[9], Y: i32[9]):
    T = alloc(i32[9])
    for i in range({lo}, {hi}):
        T[i] = X[i] * 2
    for i in range({lo}, {hi}):
        Y[i] = {read} + 1
"""


@pytest.mark.parametrize("read, lo, legal", [
    ("T[i]", 0, True),       # the consumer reads what the same iteration just produced
    ("T[i - 1]", 1, True),   # produced one iteration earlier: still before, once fused
    ("T[i + 1]", 0, False),  # produced one iteration later: fused, it would be read too early
    ("T[0]", 0, True),       # produced by iteration 0, which runs before every reader
    ("T[7]", 0, False),      # produced by the last iteration: fused, iterations 0..6 miss it
])
def test_fusing_producer_and_consumer(engine, read, lo, legal):
    f = parse(producer_consumer(read, lo))
    assert can_fuse(f, (0,), (1,)) == legal


def test_fusion_preconditions():
    f = parse("""
@prim_func
def f(X: i32[8], Y: i32[8], Z: i32[8]):
    for i in range(8):
        Y[i] = X[i]
    for i in range(1, 8):
        Z[i] = X[i]
    for i in range(1, 8):
        Z[i] += X[i]
""")
    assert not can_fuse(f, (0,), (1,))  # different ranges
    assert can_fuse(f, (1,), (2,))
    with pytest.raises(ValueError):
        can_fuse(f, (0,), (2,))  # not adjacent


def test_fusion_under_a_common_outer_loop(engine):
    f = parse("""
@prim_func
def f(X: i32[4, 8], Y: i32[4, 8]):
    T = alloc(i32[4, 8])
    for r in range(4):
        for i in range(7):
            T[r, i] = X[r, i]
        for i in range(7):
            Y[r, i] = T[r, i + 1]
""")
    # within one r the consumer reads T[r, i + 1], produced one iteration later: illegal, even
    # though T[r + 1, ...] from a later r would not matter
    assert not can_fuse(f, (0, 0), (0, 1))
    g = parse("""
@prim_func
def g(X: i32[4, 8], Y: i32[4, 8]):
    T = alloc(i32[4, 8])
    for r in range(1, 4):
        for i in range(7):
            T[r, i] = X[r, i]
        for i in range(7):
            Y[r, i] = T[r - 1, i + 1]
""")
    # T[r - 1, i + 1] was produced in the previous r: fusion inside r does not reorder that
    assert can_fuse(g, (0, 0), (0, 1))


@pytest.mark.parametrize("body, legal", [
    ("A[i] = B[i - 1]\n        B[i] = X[i]", False),  # B[i-1] read before iteration i-1's write moves
    ("B[i] = X[i]\n        A[i] = B[i - 1]", True),   # the write comes first either way
    ("B[i] = X[i]\n        A[i] = B[i]", True),       # same iteration, in order
    ("A[i] = B[i + 1]\n        B[i] = X[i]", True),   # anti: read B[i+1] before iteration i+1 writes it
])
def test_distribution(engine, body, legal):
    f = parse(f"""
@prim_func
def f(X: i32[9], A: i32[9], B: i32[9]):
    for i in range(1, 8):
        {body}
""")
    assert can_distribute(f, (0,)) == legal


def test_distribution_of_two_accumulations(engine):
    f = parse("""
@prim_func
def f(X: i32[8], Y: i32[8], C: i32[1]):
    for i in range(8):
        C[0] += X[i]
        C[0] += Y[i]
""")
    # all X terms then all Y terms: a different order of the same sum
    assert can_distribute(f, (0,), allow_reassociation=True)
    assert not can_distribute(f, (0,), allow_reassociation=False)


def test_split_is_always_legal_and_reports_the_remainder():
    f = parse("""
@prim_func
def f(X: f32[10], Y: f32[10]):
    for i in range(10):
        Y[i] = X[i]
""")
    check = can_split(f, (0,), 4)
    assert check and (check.outer_extent, check.remainder) == (3, 2)
    assert (can_split(f, (0,), 5).outer_extent, can_split(f, (0,), 5).remainder) == (2, 0)
    assert not can_split(f, (0,), 0)


# ---------------------------------------------------------------------------
# the corpus: every function analyses, and the plain matmuls classify as expected

def test_corpus_functions_analyse():
    funcs = {name: f for path in sorted(CORPUS.glob("*.py")) for name, f in parse_file(path).items()}
    assert funcs
    for f in funcs.values():
        for info in loops(f):
            assert info.kind in ("parallel", "reduction", "carried")
    gemm = funcs["gemm_64"]
    assert kinds(gemm) == {"i": "parallel", "j": "parallel", "k": "reduction"}


# ---------------------------------------------------------------------------
# soundness: whenever the oracle says legal, the transformed program computes the same

def _interp():
    return pytest.importorskip("rewrite.interp")


def substitute(node, var: str, by):
    """``node`` with loop variable ``var`` replaced by the expression ``by``."""
    if isinstance(node, Var):
        return by if node.name == var else node
    if isinstance(node, tuple):
        return tuple(substitute(x, var, by) for x in node)
    if not is_dataclass(node) or node.__class__.__name__ == "Buffer":
        return node
    if isinstance(node, For) and node.var == var:
        return node  # shadowed
    return replace(node, **{f.name: substitute(getattr(node, f.name), var, by) for f in fields(node)})


def edit_block(func, path, edit):
    """``func`` with the block holding the statement at ``path`` replaced by
    ``edit(statements, position)`` (a list of statements)."""
    def go(stmts, path):
        k = path[0]
        if len(path) == 1:
            return edit(list(stmts), k)
        s = stmts[k]
        if isinstance(s, For):
            s = replace(s, body=seq(*go(stmts_of(s.body), path[1:])))
        elif path[1] == 0:
            s = replace(s, then=seq(*go(stmts_of(s.then), path[2:])))
        else:
            s = replace(s, orelse=seq(*go(stmts_of(s.orelse), path[2:])))
        return list(stmts[:k]) + [s] + list(stmts[k + 1:])
    return replace(func, body=seq(*go(stmts_of(func.body), tuple(path))))


def rebuild(func, path, make):
    """``func`` with the statement at ``path`` replaced by ``make(stmt)`` (a statement or a
    tuple of statements spliced in its place)."""
    def edit(stmts, k):
        r = make(stmts[k])
        return stmts[:k] + list(r if isinstance(r, tuple) else (r,)) + stmts[k + 1:]
    return edit_block(func, path, edit)


def interchange(func, path):
    return rebuild(func, path, lambda o: replace(o.body, body=replace(o, body=o.body.body)))


def fuse(func, path):
    """Fuse the loop at ``path`` with the next one, renaming the second loop's variable."""
    def edit(stmts, k):
        a, b = stmts[k], stmts[k + 1]
        fused = replace(a, body=seq(a.body, substitute(b.body, b.var, Var(a.var))))
        return stmts[:k] + [fused] + stmts[k + 2:]
    return edit_block(func, path, edit)


def distribute(func, path):
    return rebuild(func, path, lambda l: tuple(replace(l, body=s) for s in stmts_of(l.body)))


def reverse(func, path):
    def flip(l):
        mirrored = Binary("-", Const(l.start + l.stop - 1, "i64"), Var(l.var))
        return replace(l, body=substitute(l.body, l.var, mirrored))
    return rebuild(func, path, flip)


def same_results(f, g, seed=0) -> bool:
    """Both programs from the same random inputs, one iteration at a time (the reference path)."""
    interp = _interp()
    args = inputs.random_args(f, seed)
    a = {k: v.copy() for k, v in args.items()}
    b = {k: v.copy() for k, v in args.items()}
    interp.interpret(f, a, vectorize=False)
    interp.interpret(g, b, vectorize=False)
    return all(np.array_equal(a[k], b[k], equal_nan=True) for k in a)


@st.composite
def index(draw, vars_, size):
    """An in-bounds affine index ``sum(c * v) + offset`` over loop variables in [0, n)."""
    coeffs = {v: draw(st.sampled_from([-1, 0, 0, 1, 2])) for v, n in vars_}
    lo = sum(min(0, c * (n - 1)) for (v, n), c in zip(vars_, coeffs.values()))
    hi = sum(max(0, c * (n - 1)) for (v, n), c in zip(vars_, coeffs.values()))
    offset = draw(st.integers(-lo, size - 1 - hi))
    terms = [f"{c}*{v}" for v, c in coeffs.items() if c]
    return " + ".join(terms + [str(offset)])


@st.composite
def statement(draw, vars_, size, ndim):
    """``X[..] = Y[..] * 3 + c`` or ``+=``, over buffers X, Y (read and written) and Z (read)."""
    target = draw(st.sampled_from("XY"))
    op = draw(st.sampled_from(["=", "+="]))
    lhs = ", ".join(draw(index(vars_, size)) for _ in range(ndim))
    source = draw(st.sampled_from("XYZ"))
    rhs = ", ".join(draw(index(vars_, size)) for _ in range(ndim))
    return f"{target}[{lhs}] {op} {source}[{rhs}] * 3 + {draw(st.integers(-2, 2))}"


def program(body: str, ndim: int, size: int) -> str:
    shape = ", ".join([str(size)] * ndim)
    return (f"@prim_func\ndef f(X: i32[{shape}], Y: i32[{shape}], Z: i32[{shape}]):\n"
            + "\n".join("    " + line for line in body.splitlines()))


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_interchange_and_reversal_sound(data):
    vars_ = [("i", 3), ("j", 3)]
    stmts = [data.draw(statement(vars_, 9, 2)) for _ in range(data.draw(st.integers(1, 2)))]
    f = parse(program("for i in range(3):\n    for j in range(3):\n" + "\n".join("        " + s for s in stmts), 2, 9))
    if can_interchange(f, (0,), (0, 0)):
        assert same_results(f, interchange(f, (0,)))
    for info in loops(f):
        if info.kind != "carried":  # parallel or an integer reduction: any order, same result
            assert same_results(f, reverse(f, info.path))


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_fusion_and_distribution_sound(data):
    vars_ = [("i", 4)]
    first = data.draw(statement(vars_, 7, 1))
    second = data.draw(statement(vars_, 7, 1))
    two_loops = parse(program(f"for i in range(4):\n    {first}\nfor i in range(4):\n    {second}", 1, 7))
    one_loop = parse(program(f"for i in range(4):\n    {first}\n    {second}", 1, 7))
    if can_fuse(two_loops, (0,), (1,)):
        assert same_results(two_loops, fuse(two_loops, (0,)))
    if can_distribute(one_loop, (0,)):
        assert same_results(one_loop, distribute(one_loop, (0,)))


def check_every_legal_answer(f, reassociate: bool) -> None:
    """Apply every rewrite the oracle allows in ``f`` and compare all results bit for bit."""
    for info in loops(f):
        loop = stmt_at(f, info.path)
        if info.kind == "parallel" or (reassociate and info.kind == "reduction"):
            assert same_results(f, reverse(f, info.path)), info  # any order, so the reverse too
        body = stmts_of(loop.body)
        if len(body) == 1 and isinstance(body[0], For) and \
                can_interchange(f, info.path, info.path + (0,), allow_reassociation=reassociate):
            assert same_results(f, interchange(f, info.path)), info
        if can_distribute(f, info.path, allow_reassociation=reassociate):
            assert same_results(f, distribute(f, info.path)), info
        after = info.path[:-1] + (info.path[-1] + 1,)
        try:
            nxt = stmt_at(f, after)
        except ValueError:
            continue
        if isinstance(nxt, For) and can_fuse(f, info.path, after, allow_reassociation=reassociate):
            assert same_results(f, fuse(f, info.path)), info


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(programs(dtypes=("i32", "i16", "u8"), max_nest=2))
def test_legal_rewrites_keep_integer_results(f):
    """Random programs with //, %, conditions, selects and temporaries; integer sums are
    exact in any order, so reductions may be reordered too."""
    check_every_legal_answer(f, reassociate=True)


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(programs(max_nest=2))
def test_legal_rewrites_keep_float_results_without_reassociation(f):
    """Any dtype, floats included: without reassociation every allowed rewrite keeps the
    order of every pair of dependent operations, so results are identical bit for bit."""
    check_every_legal_answer(f, reassociate=False)


# ---------------------------------------------------------------------------
# temporaries written before they are read in every iteration (rules/expand.py reads these)


def _row_program(body: str, after: str = "", temp: str = "sum: f32[6]") -> str:
    """A doitgen-like nest: rows A[r, q, :] through a row ``sum`` (a parameter unless ``temp``
    is empty, then a temporary); ``body`` is the (r, q) iteration, indented by 8."""
    params = "A: f32[5, 4, 6], C4: f32[6, 6], out: f32[6]" + (f", {temp}" if temp else "")
    alloc = "" if temp else "    sum = alloc(f32[6])\n"
    return (f"@prim_func\ndef f({params}):\n{alloc}    for r, q in grid(5, 4):\n{body}"
            + (f"    {after}\n" if after else ""))


PRODUCT = """        for p in range(6):
            sum[p] = 0.0
            for s in range(6):
                sum[p] += A[r, q, s] * C4[s, p]
"""
COPY_BACK = """        for p in range(6):
            A[r, q, p] = sum[p]
"""


@pytest.mark.parametrize("body, private", [
    # doitgen: each (r, q) zeroes sum[p] before adding into it and before copying it back
    (PRODUCT + COPY_BACK, True),
    # the copy reads the row before this iteration writes it: the previous iteration's row
    (COPY_BACK + PRODUCT, False),
    # no zeroing: the sums run on over every iteration, a value live across them
    (PRODUCT.replace("            sum[p] = 0.0\n", "") + COPY_BACK, False),
    # zeroed only when q > 0: at q == 0 the row still holds the previous iteration's sums
    (PRODUCT.replace("            sum[p] = 0.0\n", "            if q > 0:\n"
                     "                sum[p] = 0.0\n") + COPY_BACK, False),
    # zeroed for p >= 1 only: sum[0] is read as whatever it held before
    (PRODUCT.replace("for p in range(6):\n            sum[p] = 0.0",
                     "for p in range(1, 6):\n            sum[p] = 0.0") + COPY_BACK, False),
    # written backwards (p -> 5 - p) in a loop of its own: every element, before the reads
    ("""        for p in range(6):
            sum[5 - p] = A[r, q, p]
        for p in range(6):
            A[r, q, p] = sum[p] * 2.0
""", True),
    # the read in the statement that writes: sum[p] = sum[p] + ... reads the old value
    ("""        for p in range(6):
            sum[p] = sum[p] + A[r, q, p]
        for p in range(6):
            A[r, q, p] = sum[p]
""", False),
])
def test_written_before_read(engine, body, private):
    f = parse(_row_program(body))
    assert analysis.written_before_read(f, (0, 0), "sum") == private
    assert [r.buffer.name for r in analysis.reused(f, (0, 0))] == (["sum"] if private else [])


def test_reuse_names_the_loops_that_carry_it_and_whether_every_iteration_writes_alike(engine):
    f = parse(_row_program(PRODUCT + COPY_BACK))
    # the row of A is read (A[r, q, s]) before this iteration writes it (A[r, q, p])
    assert not analysis.written_before_read(f, (0, 0), "A")
    (reuse,) = analysis.reused(f, (0, 0))
    # every (r, q) rewrites the same sum[0..5]: both loops carry the reuse, all rows alike
    assert [l.var for l in reuse.loops] == ["r", "q"] and reuse.same_writes
    guarded = parse(_row_program(PRODUCT + COPY_BACK + """        for p in range(6):
            if r < 2:
                sum[p] = 1.0
"""))
    # the extra store runs for r < 2 only: the last iteration does not write it
    (reuse,) = analysis.reused(guarded, (0, 0))
    assert not reuse.same_writes
    per_r = parse("""
@prim_func
def f(A: f32[5, 4, 6], T: f32[5, 6]):
    for r, q in grid(5, 4):
        for p in range(6):
            T[r, p] = A[r, q, p] * 2.0
        for p in range(6):
            A[r, q, p] = T[r, p]
""")
    # row r of T is private to r already: only q reuses it, and its stores move with r
    (reuse,) = analysis.reused(per_r, (0, 0))
    assert [l.var for l in reuse.loops] == ["q"] and not reuse.same_writes


def test_distribution_blockers_name_the_dependence(engine):
    f = parse("""
@prim_func
def f(A: f32[8, 8], x: f32[8]):
    for i in range(1, 8):
        for j in range(8):
            A[i, j] = A[i - 1, j] * x[j]
        x[i] = A[i, 0]
""")
    # x[i] written by the second statement is read as x[j] (j == i') by the first one of a
    # later iteration i' > i: backwards, so the loop cannot be distributed
    (d,) = [d for d in analysis.distribution_blockers(f, (0,)) if d.source.buffer.name == "x"]
    assert (d.source.element, d.source.kind, d.sink.element, d.sink.kind) == \
        ("x[i]", "write", "x[j]", "read")
    assert d.kind == "flow" and d.direction[0] == "<"
    fine = parse("""
@prim_func
def f(A: f32[8], B: f32[8], X: f32[8]):
    for i in range(1, 8):
        B[i] = X[i]
        A[i] = B[i - 1]
""")
    assert list(analysis.distribution_blockers(fine, (0,))) == []


# ---------------------------------------------------------------------------
# filled_before_read


def _temps(body: str, allocs: str = "T = alloc(f32[4, 6])") -> frozenset:
    from rewrite.analysis import filled_before_read

    lines = "\n".join("    " + l for l in body.strip().splitlines())
    return filled_before_read(parse(f"""
@prim_func
def f(A: f32[6, 4], B: f32[4, 6], S: f32[1]):
    {allocs}
{lines}
"""))


def test_a_temporary_written_whole_before_any_read_is_filled():
    assert _temps("""
for i, j in grid(4, 6):
    T[i, j] = A[j, i]
for i, j in grid(4, 6):
    B[i, j] = T[i, j]
""") == {"T"}


def test_a_temporary_filled_by_two_boxes_is_filled():
    assert _temps("""
for i, j in grid(4, 2):
    T[i, j + 4] = 0.0
for i, j in grid(4, 4):
    T[i, j] = A[j, i]
for i, j in grid(4, 6):
    B[i, j] = T[i, j]
""") == {"T"}


@pytest.mark.parametrize("body", [
    # a column is never written: its zero is read
    "for i, j in grid(4, 5):\n    T[i, j] = 1.0\nfor i, j in grid(4, 6):\n    B[i, j] = T[i, j]",
    # += reads the zero it starts from
    "for i, j in grid(4, 6):\n    T[i, j] += A[j, i]",
    # read before the fill
    "S[0] = T[0, 0]\nfor i, j in grid(4, 6):\n    T[i, j] = 1.0",
    # the fill reads what it overwrites
    "for i, j in grid(4, 6):\n    T[i, j] = T[i, j] + 1.0",
    # a guarded store may not run
    "for i, j in grid(4, 6):\n    if A[0, 0] > 0.0:\n        T[i, j] = 1.0",
    # every other element only
    "for i, j in grid(2, 6):\n    T[2 * i, j] = 1.0\nfor i, j in grid(2, 6):\n    T[2 * i + 1, j] = 1.0",
])
def test_a_temporary_whose_zeros_may_be_read_is_not_filled(body):
    assert _temps(body) == frozenset()


def test_an_intrinsic_call_into_a_temporary_reads_it():
    assert _temps("""
for i in range(4):
    call("x86.fma.f32x8", c=window(T[0, 0], (0, 1)), a=window(U[0], (1,)), b=window(U[0], (1,)))
for i, j in grid(4, 6):
    T[i, j] = 1.0
""", "T = alloc(f32[4, 8])\n    U = alloc(f32[8])") == frozenset()
