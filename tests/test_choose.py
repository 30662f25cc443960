"""The sites and spans families chosen together (rules/choose.py): one extraction over every
item and every rewrite of a rewrite, against brute force, and compositions that families run
one after another could not find."""

import itertools

import pytest
from hypothesis import given, settings, strategies as st

import intrinsics
from rewrite import runtime
from rewrite.budgets import Budgets
from rewrite.names import Names
from rewrite import nests
from rewrite.pipeline import Choice, Search, tensorize
from rewrite.rules import contract, scalars, sums, triangles
from rewrite.rules.choose import Around, Span, cheapest_sites
from rewrite.saturate import Budget
from rewrite.script import parse

HOST_FEATURES = intrinsics.host_features()
AVX2 = intrinsics.library("x86-avx2")
REWRITES = [triangles.rewrites, sums.rewrites, scalars.rewrites, contract.rewrites]


def _checked(func, result) -> None:
    """``result`` compiled and compared with the interpreter (NaN, Inf and signed zeros
    among the inputs), where this CPU runs the AVX2 library."""
    if {"avx2", "fma"} <= HOST_FEATURES:
        check = runtime.check(func, result.compile())
        assert check.ok, check.message

# the gradient of two runtime scale factors summed into one element: a sum of products of
# three operands, which no intrinsic covers as written nor split (each term is still a
# three-operand product) nor contracted (the body is a sum); split, then each term
# contracted, both run as matrix products
TWO_SCALE_GRADIENTS = """
@prim_func
def two_grads(dC: f32[64, 64], A: f32[64, 64], B: f32[64, 64], dD: f32[64, 64], X: f32[64, 64], s: f32[1]):
    for i, j, k in grid(64, 64, 64):
        s[0] += dC[i, j] * A[i, k] * B[k, j] + dD[i, j] * X[i, k] * B[k, j]
"""


def test_a_sum_split_then_each_term_contracted_is_found_and_computes_what_the_program_does():
    func = parse(TWO_SCALE_GRADIENTS)
    result = tensorize(func, AVX2)
    assert result.coverage >= 0.9
    assert result.script().count("ct_T_") >= 4  # two contraction temporaries, each used
    assert dict(result.choice.taken) == {"sums": 1, "contract": 2}
    assert result.choice.extractions == 1 and "taken: contract 2, sums 1" in result.report()
    for off in ("sums", "contract"):
        alone = tensorize(func, AVX2, rules_off={off})
        assert alone.coverage == 0.0 and result.cost < alone.cost / 10
    _checked(func, result)


MIXED = """
@prim_func
def mixed(u1: f32[96], v1: f32[128], u2: f32[96], v2: f32[128], A: f32[96, 128],
          x: f32[96], y: f32[128], z: f32[128], Bm: f32[96, 128],
          alpha: f32[1], P: f32[64, 64], Q: f32[64, 64], C: f32[64, 64]):
    for i, j in grid(96, 128):
        A[i, j] += u1[i] * v1[j] + u2[i] * v2[j]
    for i, j in grid(96, 128):
        Bm[i, j] += x[i] / y[j] + x[i] / z[j]
    for i, j, k in grid(64, 64, 64):
        C[i, j] += alpha[0] * P[i, k] * Q[k, j]
"""


def _search(func):
    normal = nests.normalize(func)
    search = Search({d.name: d for d in AVX2}, Budget(), Names.of(normal), True, "auto", Budgets())
    parts = search.items(normal)
    return Choice(normal, parts, search.plan(parts)), search


def test_the_extraction_is_at_least_as_cheap_as_every_combination_of_one_rewrite_per_item():
    best, search = _search(parse(MIXED))
    chosen = cheapest_sites(best, search, REWRITES)
    # brute force over each item as it is or rewritten once (rewrites of rewrites are the
    # extraction's too, so it may only do better)
    options = [[[p]] + [alt for r in REWRITES for alt, _ in r(p, search)] for p in best.parts]
    assert all(len(o) > 1 for o in options)  # every item has a rewrite to weigh
    costs = {pick: search.plan([p for alt in pick for p in alt]).cost
             for pick in itertools.product(*(map(tuple, o) for o in options))}
    cheapest = min(costs.values())
    assert chosen.planned.cost <= cheapest * (1 + 1e-9)
    assert chosen.planned.cost < best.planned.cost
    # and the choice is item by item: the rank-2 update split, the sum of quotients not
    # (a second pass over Bm for nothing), the scaled product rewritten
    into = [p.out.name for p in chosen.parts if isinstance(p, nests.AccNest)]
    assert into.count("A") == 2 and into.count("Bm") == 1
    assert not _reads_alpha_into_c(chosen.parts)


def _reads_alpha_into_c(parts) -> bool:
    """Whether a nest of ``parts`` adds into C reading alpha (the scaled product as written)."""
    from rewrite.rules.choose import touched

    return any(isinstance(p, nests.AccNest) and p.out.name == "C" and "alpha" in touched([p])
               for p in parts)


def test_the_choice_computes_what_the_program_does():
    func = parse(MIXED)
    result = tensorize(func, AVX2)
    assert result.cost < tensorize(func, AVX2, rules_off={"sums", "scalar-factor"}).cost
    _checked(func, result)


def test_a_rewrite_its_check_refuses_is_not_taken_and_the_others_are_still_chosen():
    best, search = _search(parse(MIXED))
    others = [triangles.rewrites, scalars.rewrites, contract.rewrites]

    def refused_sums(items, around, search):  # sums' rewrites, each refused by its check
        return [Span(k, k + 1, tuple(alt), tuple(temps), pays=lambda planned, before: False)
                for k, p in enumerate(items) for alt, temps in sums.rewrites(p, search)]

    with_sums = cheapest_sites(best, search, REWRITES)
    refused = cheapest_sites(best, search, others, [("refused-sums", refused_sums)])
    without = cheapest_sites(best, search, others)
    assert with_sums.planned.cost < without.planned.cost  # the split would pay
    assert refused.planned.cost == without.planned.cost < best.planned.cost
    assert refused.choice.extractions == 2 and without.choice.extractions == 1
    assert dict(refused.choice.offered)["refused-sums"] == dict(with_sums.choice.offered)["sums"]
    assert "refused-sums" not in dict(refused.choice.taken)
    into = [p.out.name for p in refused.parts if isinstance(p, nests.AccNest)]
    assert into.count("A") == 1  # the rank-2 update left whole
    assert not _reads_alpha_into_c(refused.parts)


ONE_STEP = {"expand", "inline", "triangles", "sums", "distribute", "scalar-factor", "hoist-operand", "contract",
            "matmul", "strassen"}


@pytest.mark.parametrize("off", sorted(ONE_STEP))
def test_a_family_of_the_one_extraction_turned_off_offers_nothing(off):
    from rewrite import rules

    steps = dict(rules.improvements({off}))
    names = [n for run in steps for n in run]
    assert off not in names
    assert ONE_STEP - {off} in [set(run) for run in steps]  # the others in one step


# a runtime scale factor applied to the big operand of a product with few columns: inlined
# alone, the product reads ``alpha[0] * A[i, k]`` and no intrinsic covers it, so inlining
# does not pay; inlined and then the factor taken out, the product runs on the matmul row
# and the 256 x 16 result is scaled once instead of the 256 x 1024 operand
PRESCALED = """
@prim_func
def prescaled(A: f32[256, 1024], B: f32[1024, 16], alpha: f32[1], C: f32[256, 16]):
    As = alloc(f32[256, 1024])
    for i, k in grid(256, 1024):
        As[i, k] = alpha[0] * A[i, k]
    for i, j in grid(256, 16):
        C[i, j] = 0.0
    for i, j, k in grid(256, 16, 1024):
        C[i, j] += As[i, k] * B[k, j]
"""


def test_a_producer_inlined_because_its_factor_then_comes_out_is_found_and_computes_the_same():
    func = parse(PRESCALED)
    result = tensorize(func, AVX2)
    assert "As = alloc" not in result.script()
    assert dict(result.choice.taken) == {"inline": 1, "scalar-factor": 1}
    # inlining alone, or the factor taken out (scalar-factor, or contract-pair: A and B
    # summed first) alone, leaves the producer
    for off in ({"inline"}, {"scalar-factor", "contract"}):
        alone = tensorize(func, AVX2, rules_off=off)
        assert "As = alloc" in alone.script()
        assert result.cost < alone.cost / 1.5
    _checked(func, result)


# a chain whose first operand is a transposed copy: (T @ B) @ C is 2 M multiply-adds,
# T @ (B @ C) 131 K; the copy inlined (the product reads At transposed) and the chain
# reassociated over the inlined read are chosen together, the inlining a rewrite of the
# whole function so that the chain's window holds both products
TRANSPOSED_CHAIN = """
@prim_func
def tchain(At: f32[16, 256], B: f32[16, 256], C: f32[256, 16], D: f32[256, 16]):
    T = alloc(f32[256, 16])
    U = alloc(f32[256, 256])
    for i, k in grid(256, 16):
        T[i, k] = At[k, i]
    for i, j in grid(256, 256):
        U[i, j] = 0.0
    for i, j, k in grid(256, 256, 16):
        U[i, j] += T[i, k] * B[k, j]
    for i, l in grid(256, 16):
        D[i, l] = 0.0
    for i, l, j in grid(256, 16, 256):
        D[i, l] += U[i, j] * C[j, l]
"""


def test_a_chain_is_reassociated_over_an_inlined_copy_and_computes_the_same():
    func = parse(TRANSPOSED_CHAIN)
    result = tensorize(func, AVX2)
    script = result.script()
    assert "T = alloc" not in script and "mm_U_" in script
    assert dict(result.choice.taken) == {"inline": 1, "matmul": 1}
    for off in ("inline", "matmul"):
        assert result.cost < tensorize(func, AVX2, rules_off={off}).cost
    _checked(func, result)


def test_run_reports_what_the_one_extraction_weighed_and_took(tmp_path, capsys):
    import json

    from rewrite.cli import main

    path = tmp_path / "prescaled.py"
    path.write_text(PRESCALED)
    assert main(["run", str(path), "--target", "x86-avx2", "--json", "--jobs", "1"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)["functions"]
    choice = entry["choice"]
    assert choice["taken"] == {"inline": 1, "scalar-factor": 1}
    assert choice["offered"]["inline"] >= 1 and choice["positions"] > choice["items"] > 0
    assert main(["run", str(path), "--target", "x86-avx2", "-v", "--jobs", "1"]) == 0
    assert "one extraction: " in capsys.readouterr().out


# three producers: two scales whose inlining pays (the scale leaves the reduction) and an
# exponential whose inlining does not (it would be recomputed in every term of a product);
# each set of them inlined is a rewrite of the whole function, so the two that pay are
# inlined together and the third kept
THREE_PRODUCERS = """
@prim_func
def three(A: f32[64, 256], B: f32[256, 32], C: f32[64, 32], A2: f32[64, 256], C2: f32[64, 32],
          Xa: f32[64, 64], Xb: f32[64, 64], E: f32[64, 64]):
    As = alloc(f32[64, 256])
    As2 = alloc(f32[64, 256])
    X = alloc(f32[64, 64])
    for i, k in grid(64, 256):
        As[i, k] = 0.5 * A[i, k]
    for i, k in grid(64, 256):
        As2[i, k] = 0.25 * A2[i, k]
    for i, k in grid(64, 64):
        X[i, k] = exp(Xa[i, k])
    for i, j in grid(64, 32):
        C[i, j] = 0.0
        for k in range(256):
            C[i, j] += As[i, k] * B[k, j]
    for i, j in grid(64, 32):
        C2[i, j] = 0.0
        for k in range(256):
            C2[i, j] += As2[i, k] * B[k, j]
    for i, j in grid(64, 64):
        E[i, j] = 0.0
        for k in range(64):
            E[i, j] += X[i, k] * Xb[k, j]
"""


def test_the_producers_that_pay_are_inlined_together_and_the_one_that_does_not_is_kept():
    func = parse(THREE_PRODUCERS)
    result = tensorize(func, AVX2)
    kept = {b.name for b in result.func.allocs}
    assert "X" in kept and not {"As", "As2"} & kept
    assert dict(result.choice.taken)["inline"] == 1  # the set of the two
    _checked(func, result)


@pytest.mark.parametrize("n", range(1, 8))
def test_every_set_of_up_to_six_producers_is_offered_and_no_more_than_the_limit(n):
    from rewrite.rules.fusion import MAX_SETS, producer_sets

    temps = [f"T{q}" for q in range(n)]
    sets = producer_sets(temps)
    assert len(set(sets)) == len(sets) and all(s and s <= set(temps) for s in sets)
    if n <= 6:
        assert len(sets) == 2 ** n - 1  # every non-empty set, once
    else:
        assert len(sets) == MAX_SETS
        # each alone, all, and all but one come first
        assert {frozenset(temps)} | {frozenset([t]) for t in temps} | \
            {frozenset(temps) - {t} for t in temps} <= set(sets)


# ---------------------------------------------------------------------------
# random compositions: producers (scales by a constant or a runtime factor, a transposed
# copy, an exponential) feeding one or two products, a chain among them; whatever the one
# extraction takes, the compiled program computes what the interpreter does

_PRODUCERS = {
    "none": None,
    "scale": "P[i, k] = 0.5 * A[i, k]",
    "runtime scale": "P[i, k] = alpha[0] * A[i, k]",
    "transposed copy": "P[i, k] = At[k, i]",
    "exponential": "P[i, k] = exp(A[i, k] * 0.125)",
}


@st.composite
def composed_programs(draw):
    m, k, n = (draw(st.sampled_from([8, 12, 16, 20])) for _ in range(3))
    producer = draw(st.sampled_from(sorted(_PRODUCERS)))
    a = "A" if producer == "none" else "P"
    lines = [f"for i, j in grid({m}, {n}):", "    C[i, j] = 0.0",
             f"for i, j, k in grid({m}, {n}, {k}):", f"    C[i, j] += {a}[i, k] * B[k, j]"]
    if producer != "none":
        lines = ["P = alloc(f32[%d, %d])" % (m, k), f"for i, k in grid({m}, {k}):",
                 "    " + _PRODUCERS[producer]] + lines
    second = draw(st.sampled_from(["none", "shared operand", "chain"]))
    if second == "shared operand":  # another product of the same operand
        lines += [f"for i, j in grid({m}, {n}):", "    D[i, j] = 0.0",
                  f"for i, j, k in grid({m}, {n}, {k}):", f"    D[i, j] += {a}[i, k] * E[k, j]"]
    elif second == "chain":  # C's product read by another: a chain, C an output too
        lines += [f"for i, j in grid({m}, {n}):", "    D[i, j] = 0.0",
                  f"for i, l, j in grid({m}, {n}, {n}):", "    D[i, l] += C[i, j] * F[j, l]"]
    params = [f"A: f32[{m}, {k}]", f"At: f32[{k}, {m}]", f"B: f32[{k}, {n}]", "alpha: f32[1]",
              f"C: f32[{m}, {n}]", f"D: f32[{m}, {n}]", f"E: f32[{k}, {n}]", f"F: f32[{n}, {n}]"]
    return parse("@prim_func\ndef composed(" + ", ".join(params) + "):\n"
                 + "".join(f"    {l}\n" for l in lines))


@pytest.mark.skipif(not {"avx2", "fma"} <= HOST_FEATURES, reason="this CPU lacks AVX2 and FMA")
@settings(max_examples=25, deadline=None)
@given(composed_programs())
def test_whatever_the_one_extraction_takes_computes_what_the_program_does(func):
    result = tensorize(func, AVX2)
    check = runtime.check(func, result.compile())
    assert check.ok, check.message + "\n" + result.script()


def test_past_the_position_limit_no_rewrite_is_offered_and_the_report_says_so(monkeypatch):
    from rewrite.rules import choose

    func = parse(TWO_SCALE_GRADIENTS)  # one item: the split's two terms would be a second chain
    monkeypatch.setattr(choose, "MAX_POSITIONS", 3)
    bounded = tensorize(func, AVX2)
    assert bounded.choice.stop_reason == "position limit" and "position limit" in bounded.report()
    assert dict(bounded.choice.offered) == {"sums": 1}  # the terms' contractions never offered
    assert bounded.coverage == 0.0
    monkeypatch.undo()
    full = tensorize(func, AVX2)
    assert full.choice.stop_reason == "complete" and full.coverage >= 0.9
    assert bounded.choice.positions < full.choice.positions
    _checked(func, bounded)


def test_with_producer_sets_the_extraction_is_at_least_as_cheap_as_every_combination():
    from rewrite.rules import fusion

    best, search = _search(parse(THREE_PRODUCERS))
    chosen = cheapest_sites(best, search, REWRITES, [("inline", fusion.spans)])
    # brute force: the program as written or with one set of producers inlined, each of
    # its items as it is or rewritten once by a sites family
    functions = [list(best.parts)] + [list(s.items) for s in
                                      fusion.spans(best.parts, Around(best.func), search)]
    assert len(functions) == 8  # the program and its 7 sets of three producers
    costs = []
    for parts in functions:
        options = [[[p]] + [alt for r in REWRITES for alt, _ in r(p, search)] for p in parts]
        costs += [search.plan([p for alt in pick for p in alt]).cost
                  for pick in itertools.product(*(map(tuple, o) for o in options))]
    assert chosen.planned.cost <= min(costs) * (1 + 1e-9) and chosen.planned.cost < best.planned.cost
