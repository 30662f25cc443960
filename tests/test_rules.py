"""The rule families (rewrite/rules/__init__.py): each kind documented, every family's hooks
load, and ``rules_off`` leaves a family out of the program chosen."""

import re
from pathlib import Path

import pytest

import intrinsics
from rewrite import rules, runtime
from rewrite.pipeline import tensorize
from rewrite.script import parse_file, show

GOLDEN = Path(__file__).parent / "golden"
ROWS = [d for d in intrinsics.library("x86-avx2") if d.name in (
    "x86.fma.f32x8", "x86.axpy.f32x8", "x86.mm.f32.6x16x1", "x86.dot.u8i8i32.16x4")]


def _golden(name: str):
    (func,) = parse_file(GOLDEN / f"{name}.py").values()
    return func


@pytest.mark.parametrize("family", rules.FAMILIES, ids=[f.name for f in rules.FAMILIES])
def test_every_family_is_of_a_documented_kind_and_its_hooks_load(family):
    assert f"``{family.kind}``: " in rules.__doc__
    hooks = family.load()
    assert len(hooks) == len(rules.KINDS[family.kind])
    assert all(callable(h) for h in hooks) or family.kind == rules.RULESET
    assert family.directive is None or callable(family.load_directive())


def test_family_names_are_unique():
    names = [f.name for f in rules.FAMILIES]
    assert len(set(names)) == len(names)


def test_an_unknown_family_is_refused_by_name():
    with pytest.raises(ValueError, match="no rule family or rule named strasen"):
        tensorize(_golden("matmul_chain"), ROWS, rules_off=["strasen"])


def test_strassen_off_turns_off_strassen_and_nothing_else():
    func = _golden("matmul_chain")
    auto = show(tensorize(func, ROWS).func)
    off = show(tensorize(func, ROWS, strassen="off").func)
    assert "mm_U" in off and off == auto  # the chain is still reassociated (the matmul family)
    assert show(tensorize(func, ROWS, rules_off=("strassen",)).func) == off
    assert "mm_U" not in show(tensorize(func, ROWS, rules_off=("matmul",)).func)


def test_inline_off_keeps_the_widened_temporaries():
    func = _golden("inline_cast")
    assert "Ai" not in show(tensorize(func, ROWS).func)
    assert "Ai" in show(tensorize(func, ROWS, rules_off=("inline",)).func)


def test_without_rulesets_the_bodies_are_matched_as_written():
    r = tensorize(_golden("swapped_operands"), ROWS, in_process=True, rules_off=("algebra",))
    assert (r.saturation.iterations, r.saturation.stop_reason) == (0, "saturated")


def test_a_strassen_level_splits_the_products_of_a_regrouped_chain():
    # the matmul family regroups the chain, then the strassen family splits the regrouped
    # product: composed, cheaper than the level on the chain as written, and the same values
    func = _golden("matmul_chain")
    both = tensorize(func, ROWS, strassen=1)
    alone = tensorize(func, ROWS, strassen=1, rules_off=("matmul",))
    assert "mm_U" in show(both.func) and both.strassen_levels == 1
    assert both.cost < alone.cost
    assert runtime.check(both.func).ok


def test_a_packed_copy_both_branches_of_a_guard_fill_is_declared_once():
    # the regrouped chain and the chain as written (the guard's other branch) both pack C
    src = """
@prim_func
def chain(A: f32[1024, 1024], B: f32[1024, 2048], C: f32[2048, 1024], D: f32[1024, 1024]):
    T = alloc(f32[1024, 2048])
    for i, j in grid(1024, 2048):
        T[i, j] = 0.0
        for k in range(1024):
            T[i, j] += A[i, k] * B[k, j]
    for i, j in grid(1024, 1024):
        D[i, j] = 0.0
        for k in range(2048):
            D[i, j] += T[i, k] * C[k, j]
"""
    from rewrite.script import parse

    result = tensorize(parse(src), ROWS, strassen="off")
    names = [b.name for b in result.func.allocs]
    assert "mm_U_0" in names and len(names) == len(set(names))


GEMVER_RANK2 = """
@prim_func
def gemver(A: f32[64, 64], u1: f32[64], v1: f32[64], u2: f32[64], v2: f32[64]):
    for i, j in grid(64, 64):
        A[i, j] += u1[i] * v1[j] + u2[i] * v2[j]
"""


def test_a_sum_of_products_is_split_into_products_the_rows_cover():
    from rewrite.script import parse

    func = parse(GEMVER_RANK2)
    split = tensorize(func, ROWS)
    whole = tensorize(func, ROWS, rules_off=("sums",))
    assert whole.ops_in_intrinsics == 0
    assert split.ops_in_intrinsics / split.ops_total > 0.9
    assert runtime.check(split.func).ok
    # a subtracted product is a term scaled by -1: covered too, behind a pass that scales it
    minus = tensorize(parse(GEMVER_RANK2.replace("+ u2", "- u2")), ROWS)
    assert minus.ops_in_intrinsics >= split.ops_in_intrinsics and runtime.check(minus.func).ok


def test_a_sum_that_reads_its_output_is_not_split():
    from dataclasses import replace

    from rewrite import ir, nests
    from rewrite.rules import sums
    from rewrite.script import parse

    def nest_of(src):
        (nest,) = [p for p in nests.items(nests.normalize(parse(src))) if isinstance(p, nests.AccNest)]
        return nest

    rank2 = nest_of(GEMVER_RANK2)
    reads_out = ir.Binary("+", rank2.value.a, ir.Load(rank2.out, tuple(reversed(rank2.indices))))
    assert sums.split(replace(rank2, value=reads_out)) is None
    a, b = sums.split(nest_of(GEMVER_RANK2.replace("+ u2", "- u2")))
    assert a.value.op == "*" and isinstance(b.value, ir.Unary) and b.value.op == "neg"



@pytest.mark.parametrize("update, normal", [
    ("y[i] = y[i] + x[i]", "y[i] += x[i]"),
    ("y[i] = x[i] + y[i]", "y[i] += x[i]"),
    ("y[i] = y[i] - x[i]", "y[i] += -x[i]"),                     # a - b is a + -b, exactly
    ("y[i] = y[i] + x[i] + z[i]", "y[i] += x[i] + z[i]"),        # (y + x) + z regrouped
    ("y[i] = x[i] + y[i] - z[i]", "y[i] += x[i] - z[i]"),
    ("y[i] = y[i] - x[i] - z[i]", "y[i] += -x[i] - z[i]"),
    ("y[i] = x[i] - y[i]", "y[i] = x[i] - y[i]"),                # y subtracted: not a sum into y
    ("y[i] = y[i] + y[i] * x[i]", "y[i] = y[i] + y[i] * x[i]"),  # another term reads y[i]
    ("y[i] = y[i] * 2.0 + x[i]", "y[i] = y[i] * 2.0 + x[i]"),    # y scaled, not added
])
def test_a_store_that_adds_to_its_own_element_is_an_accumulation(update, normal):
    from rewrite import nests
    from rewrite.script import parse

    func = parse(f"@prim_func\ndef f(x: f32[8], y: f32[8], z: f32[8]):\n    for i in range(8):\n"
                 f"        {update}\n")
    assert show(nests.normalize(func)).splitlines()[-1].strip() == normal

# ---------------------------------------------------------------------------
# expand: a temporary reused by every iteration gets a copy per iteration

ROWS_SRC = """
@prim_func
def rows(A: f32[5, 4, 16], C4: f32[16, 16], sum: f32[16]):
    for r in range(5):
        for q in range(4):
            for p in range(16):
                sum[p] = 0.0
                for s in range(16):
                    sum[p] += A[r, q, s] * C4[s, p]
            for p in range(16):
                A[r, q, p] = sum[p]
"""


def _expanded(src: str, limit: int | None = None):
    from rewrite import nests
    from rewrite.names import Names
    from rewrite.rules import expand
    from rewrite.script import parse

    func = nests.normalize(parse(src))
    if limit is None:
        return expand.expand(func, Names.of(func))
    return expand.expand(func, Names.of(func), limit)


def _same_results(f, g, seed=0) -> bool:
    """Both programs from the same random inputs, interpreted one iteration at a time."""
    import numpy as np

    from rewrite import inputs, interp

    args = inputs.random_args(f, seed)
    a = {k: v.copy() for k, v in args.items()}
    b = {k: v.copy() for k, v in args.items()}
    interp.interpret(f, a, vectorize=False)
    interp.interpret(g, b, vectorize=False)
    return all(np.array_equal(a[k], b[k], equal_nan=True) for k in a)


def test_expand_gives_every_iteration_its_own_row_and_restores_the_parameter():
    # the row gets the (r, q) dims in front; the loops then distribute into a zero fill, a
    # batched product and the copy back; sum, a parameter, is left as the last (r, q) left it
    assert show(_expanded(ROWS_SRC)) == """@prim_func
def rows(A: f32[5, 4, 16], C4: f32[16, 16], sum: f32[16]):
    sumx = alloc(f32[5, 4, 16])
    for r, q, p in grid(5, 4, 16):
        sumx[r, q, p] = 0.0
    for r, q, p, s in grid(5, 4, 16, 16):
        sumx[r, q, p] += A[r, q, s] * C4[s, p]
    for r, q, p in grid(5, 4, 16):
        A[r, q, p] = sumx[r, q, p]
    for p in range(16):
        sum[p] = sumx[4, 3, p]
"""
    # at these sizes the product exposed pays: the refusals below are not a matter of cost
    from rewrite.script import parse

    result = tensorize(parse(ROWS_SRC), ROWS)
    assert "sumx" in show(result.func) and result.coverage >= 0.9
    assert runtime.check(parse(ROWS_SRC), result.compile()).ok


def test_expand_of_a_temporary_needs_no_restore_and_offsets_a_loop_not_from_zero():
    src = ROWS_SRC.replace("C4: f32[16, 16], sum: f32[16]):", "C4: f32[16, 16]):\n    sum = alloc(f32[16])")
    src = src.replace("for q in range(4)", "for q in range(1, 4)")
    from rewrite.script import parse

    got = _expanded(src)
    text = show(got)
    # nothing reads the row after the loops: no restore; q runs 1..3, so the copy is q - 1
    assert "sumx = alloc(f32[5, 3, 16])" in text and "sumx[r, q - 1, p] += A[r, q, s] * C4[s, p]" in text
    assert "sum[p] = " not in text and "sum = alloc" not in text
    assert _same_results(parse(src), got)


def test_doitgen_as_written_runs_on_intrinsics_through_the_expanded_row():
    import intrinsics as lib
    from rewrite.script import parse_file

    func = parse_file(Path(__file__).parent.parent / "corpus" / "doitgen.py")["doitgen"]
    result = tensorize(func, lib.library("x86-avx2"))
    assert result.coverage >= 0.9, result.report()
    # the row restored from the expanded one's last (read from its padded copy where the
    # product pads its columns: tidy's forward-copy)
    assert re.search(r"sum\[p\] = (0\.0 \+ )?sumx(_pad)?\[49, 39, p\]", show(result.func))
    assert runtime.check(func, result.compile()).ok
    off = tensorize(func, lib.library("x86-avx2"), rules_off=("expand",))
    assert off.coverage == 0.0 and "sumx" not in show(off.func)


@pytest.mark.parametrize("body, why", [
    # the copy back reads the row before this iteration writes it: the previous iteration's
    # row, a value passed from one iteration to the next
    ("""            for p in range(16):
                A[r, q, p] = sum[p]
            for p in range(16):
                sum[p] = 0.0
                for s in range(16):
                    sum[p] += A[r, q, s] * C4[s, p]
""", "read before written"),
    # never zeroed: the sums run on across every (r, q), live from one iteration to the next
    ("""            for p in range(16):
                for s in range(16):
                    sum[p] += A[r, q, s] * C4[s, p]
            for p in range(16):
                A[r, q, p] = sum[p]
""", "live across iterations"),
    # sum is a parameter, so its final values count; the last store is guarded (r < 2), so
    # after the loops sum holds row (1, 3)'s 1.0s, not the last iteration's: no restore
    ("""            for p in range(16):
                sum[p] = 0.0
                for s in range(16):
                    sum[p] += A[r, q, s] * C4[s, p]
            for p in range(16):
                A[r, q, p] = sum[p]
            for p in range(16):
                if r < 2:
                    sum[p] = 1.0
""", "read after the loops, not restorable"),
])
def test_expand_is_refused(body, why):
    head, _, _ = ROWS_SRC.partition("            for p in range(16):\n                sum[p] = 0.0")
    src = head + body
    assert _expanded(src) is None, why
    from rewrite.script import parse

    result = tensorize(parse(src), ROWS)
    assert "sumx" not in show(result.func), why


def test_expand_refuses_a_copy_past_the_limit():
    assert _expanded(ROWS_SRC, limit=5 * 4 * 16 - 1) is None
    assert _expanded(ROWS_SRC, limit=5 * 4 * 16) is not None


def test_a_temporary_read_after_the_loops_is_restored_for_that_read():
    src = """
@prim_func
def f(A: f32[5, 4, 16], C4: f32[16, 16], out: f32[16]):
    sum = alloc(f32[16])
    for r, q in grid(5, 4):
        for p in range(16):
            sum[p] = 0.0
            for s in range(16):
                sum[p] += A[r, q, s] * C4[s, p]
        for p in range(16):
            A[r, q, p] = sum[p]
    for p in range(16):
        out[p] = 2.0 * sum[p]
"""
    from rewrite.script import parse

    got = show(_expanded(src))
    # the later read sees the last row's product, copied back right after the loops
    assert "    for p in range(16):\n        sum[p] = sumx[4, 3, p]\n    for p in range(16):\n" \
           "        out[p] = 2.0 * sum[p]\n" in got
    result = tensorize(parse(src), ROWS)
    assert result.coverage >= 0.9 and runtime.check(parse(src), result.compile()).ok


def test_expand_keeps_the_results_of_random_reuses():
    """Bodies of an (r, q) iteration drawn from stores, sums, guarded and partial stores and
    reads of a row T, a parameter or a temporary, sometimes read after the loops: wherever
    the rule expands, integer results (exact) are those of the program as written."""
    import random

    from rewrite.script import parse

    menu = [
        "for p in range(5):\n    T[p] = A[r, q, p] * 2",
        "for p in range(5):\n    T[p + 1] = A[r, q, p] + 1",
        "for p in range(1, 5):\n    T[p] = A[r, q, p] - i32(r)",
        "for p in range(5):\n    if q > 1:\n        T[p] = 7",
        "for p in range(5):\n    T[p] += A[r, q, p]",
        "for p in range(5):\n    A[r, q, p] = T[p] + i32(q)",
        "for p in range(5):\n    A[r, q, p] = T[p + 1] * 3",
        "for p in range(5):\n    T[5 - p] = A[r, q, p]",
        "for p in range(5):\n    T[p] = A[r, q, p]\n    for s in range(5):\n        T[p] += A[r, q, s] * C[s, p]",
    ]
    rng = random.Random(0)
    expanded = 0
    for _ in range(120):
        body = "\n".join(rng.choice(menu) for _ in range(rng.randint(2, 4)))
        param = rng.random() < 0.5
        after = rng.random() < 0.5
        src = ("@prim_func\ndef f(A: i32[3, 4, 5], C: i32[5, 5], O: i32[6]"
               + (", T: i32[6]):\n" if param else "):\n    T = alloc(i32[6])\n")
               + "    for r, q in grid(3, 4):\n"
               + "".join("        " + line + "\n" for line in body.splitlines())
               + ("    for p in range(6):\n        O[p] = T[p]\n" if after else ""))
        func = parse(src)
        got = _expanded(src)
        if got is not None:
            expanded += 1
            assert _same_results(func, got), src + "\n" + show(got)
    assert expanded >= 15  # the draw reaches the rule, not only its refusals


def test_each_sum_is_split_only_where_splitting_it_pays():
    from rewrite.script import parse

    # A's two outer products go onto the rows once split; B's two terms match no row, so
    # splitting B only adds a second pass over it: A split, B kept whole
    func = parse("""
@prim_func
def two_sums(A: f32[64, 64], u1: f32[64], v1: f32[64], u2: f32[64], v2: f32[64],
             B: f32[64, 64], z: f32[64, 64]):
    for i, j in grid(64, 64):
        A[i, j] += u1[i] * v1[j] + u2[i] * v2[j]
    for i, j in grid(64, 64):
        B[i, j] += max(z[i, j], 0.0) + max(z[j, i], 0.0)
""")
    result = tensorize(func, ROWS)
    text = show(result.func)
    assert text.count("B[i, j] +=") == 1 and "max(z[i, j], 0.0) + max(z[j, i], 0.0)" in text
    assert result.ops_in_intrinsics > 0 and "u2" in text and "A[i, j] +=" not in text
    assert runtime.check(func, runtime.compile(result.func)).ok
