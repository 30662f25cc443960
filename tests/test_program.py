"""The program-level e-graph (rewrite/program.py, rules/matrices.py): terms, rules, budgets,
users' rules loaded from a file and checked for soundness (tensorize rules --check)."""

import json
import subprocess
import sys
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import pytest

import intrinsics
from rewrite import interp, ir, nests, program, runtime, saturate
from rewrite.cli import main
from rewrite.fuzz import rules as soundness
from rewrite.names import Names
from rewrite.pipeline import tensorize
from rewrite.program import Input, Op
from rewrite.rules import finite, matrices
from rewrite.script import parse, parse_file, show

HERE = Path(__file__).parent
RULES = HERE / "rules"
GOLDEN = HERE / "golden"
AVX2 = [d for d in intrinsics.library("x86-avx2") if d.name in (
    "x86.fma.f32x8", "x86.axpy.f32x8", "x86.mm.f32.6x16x1", "x86.dot.u8i8i32.16x4")]


def _only(path):
    (func,) = parse_file(path).values()
    return func


def _same_values(a, b, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {p.name: rng.integers(-3, 4, p.shape).astype(np.float32) for p in a.params}
    x, y = interp.run(a, **arrays), interp.run(b, **arrays)
    for o in a.outputs:
        np.testing.assert_allclose(x[o.name], y[o.name], rtol=1e-5, atol=1e-4)


# ---------------------------------------------------------------------------
# terms and extraction


def test_the_cheapest_grouping_of_a_chain_is_extracted():
    A, B, C = Input("A", 48, 8), Input("B", 8, 48), Input("C", 48, 16)
    chain = Op("@", (Op("@", (A, B)), C))
    ((out, best),), report = program.cheapest([("D", chain)], matrices.built_in(), matrices.multiply_adds)
    assert out == "D" and program.text(best) == "A @ (B @ C)"
    assert report.stop_reason == "saturated" and report.enodes > 0


def test_the_grouping_written_is_kept_when_it_is_the_cheapest():
    A, B, C = Input("A", 8, 48), Input("B", 48, 8), Input("C", 8, 48)
    chain = Op("@", (Op("@", (A, B)), C))  # 8*48*8 + 8*8*48 against 48*8*48 + 8*48*48
    ((_, best),), _ = program.cheapest([("D", chain)], matrices.built_in(), matrices.multiply_adds)
    assert best == chain


def test_saturation_stops_at_its_e_node_budget():
    # a sum of eight products under commutativity and associativity has thousands of forms
    terms = [Op("@", (Input(f"A{q}", 4, 4), Input(f"B{q}", 4, 4))) for q in range(8)]
    total = terms[0]
    for t in terms[1:]:
        total = Op("+", (total, t))
    _, report = program.cheapest([("C", total)], matrices.built_in(), matrices.multiply_adds,
                                 program.Budget(iterations=50, enodes=400, seconds=20.0))
    assert report.stop_reason == "e-node limit"
    assert report.iterations < 50


def test_a_rule_turned_off_by_name_is_not_applied():
    func = _only(GOLDEN / "matmul_chain.py")
    assert "mm_U" in show(tensorize(func, AVX2).func)
    off = tensorize(func, AVX2, rules_off=("assoc-right", "assoc-left"))
    assert "mm_U" not in show(off.func)


def test_the_report_gives_the_program_e_graph():
    result = tensorize(_only(GOLDEN / "matmul_chain.py"), AVX2)
    ((family, g),) = result.egraphs
    assert family == "matmul" and g.enodes > 0 and g.stop_reason == "saturated"
    assert "program e-graph (matmul)" in result.report()


# ---------------------------------------------------------------------------
# where the e-graph lives: the saturation worker, under its hard seconds and memory cap


def _sum_of_products(n: int, size: int = 8):
    terms = [Op("@", (Input(f"A{q}", size, size), Input(f"B{q}", size, size))) for q in range(n)]
    total = terms[0]
    for t in terms[1:]:
        total = Op("+", (total, t))
    return [("C", total)]


AC = ("comm-add", "assoc-add")  # a sum of n products has about 2^n forms under these two


def test_the_program_e_graph_is_saturated_and_extracted_in_the_worker(worker, monkeypatch):
    func = parse((GOLDEN / "matmul_distribute.py").read_text())
    parts, names = nests.items(nests.normalize(func)), Names.of(func)
    run = partial(saturate.call, budget=saturate.Budget())
    monkeypatch.setattr(matrices, "_flop_memo", {})  # nothing remembered from other tests
    there = matrices.alternatives(func, parts, names, reports=(theirs := []), run=run)
    assert worker.pid is not None and program._held == []  # no e-graph left in this process
    monkeypatch.setattr(matrices, "_flop_memo", {})
    here = matrices.alternatives(func, parts, names, reports=(mine := []))
    assert [a.note for a in there] == [a.note for a in here] == \
        ["C += A @ B1 + A @ B2 -> C += A @ (B1 + B2)"]
    assert [(r.iterations, r.enodes, r.stop_reason) for r in theirs] == \
        [(r.iterations, r.enodes, r.stop_reason) for r in mine]


def test_a_program_e_graph_past_the_hard_time_limit_is_killed(worker):
    rules = [r for r in matrices.built_in() if r.name in AC]
    unbounded = program.Budget(iterations=100, enodes=10 ** 9, seconds=600.0)
    run = partial(saturate.call, budget=saturate.Budget(hard_seconds=3.0))
    with pytest.raises(saturate.Stopped) as info:
        program.cheapest(_sum_of_products(12), rules, matrices.multiply_adds, unbounded, run=run)
    assert info.value.reason == "killed: over 3 s" and worker.pid is None
    # the next e-graph gets a fresh worker
    _, report = program.cheapest(_sum_of_products(3), rules, matrices.multiply_adds, run=run)
    assert report.stop_reason == "saturated" and worker.pid is not None


def test_a_program_e_graph_past_the_memory_cap_is_stopped(worker):
    rules = [r for r in matrices.built_in() if r.name in AC]
    unbounded = program.Budget(iterations=100, enodes=10 ** 9, seconds=600.0)
    # about 300 MB of address space for the interpreter and its libraries; 12 products
    # under AC reach 1.5 GB
    run = partial(saturate.call, budget=saturate.Budget(memory_bytes=700 << 20, hard_seconds=60))
    with pytest.raises(saturate.Stopped) as info:
        program.cheapest(_sum_of_products(12), rules, matrices.multiply_adds, unbounded, run=run)
    assert info.value.reason in ("memory limit", "killed: memory limit")
    assert info.value.seconds < 60 and worker.pid is None


def test_a_window_whose_e_graph_is_stopped_stays_as_written(worker):
    src = "@prim_func\ndef s(" + ", ".join(f"A{q}: f32[8, 8], B{q}: f32[8, 8]" for q in range(12)) + \
        ", C: f32[8, 8]):\n" + "".join(
            f"    for i, j, k in grid(8, 8, 8):\n        C[i, j] += A{q}[i, k] * B{q}[k, j]\n"
            for q in range(12))
    func = parse(src)
    rules = [r for r in matrices.built_in() if r.name in AC]
    run = partial(saturate.call, budget=saturate.Budget(hard_seconds=0.01))  # a fresh worker
    reports = []
    alts = matrices.alternatives(func, nests.items(nests.normalize(func)), Names.of(func), rules,
                                 reports=reports, memo={}, run=run)
    assert alts == [] and [r.stop_reason for r in reports] == ["killed: over 0.01 s"]


# ---------------------------------------------------------------------------
# what is lifted, and what is not


def _lifted(src):
    func = parse(src)
    return matrices.lift(func, nests.items(nests.normalize(func)))


CHAIN = """
@prim_func
def chain(A: f32[48, 8], B: f32[8, 48], C: f32[48, 16], D: f32[48, 16]{extra}):
    T = alloc(f32[48, 48])
    for i, j in grid(48, 48):
        T[i, j] = 0.0
        for k in range(8):
            T[i, j] += A[i, k] * B[k, j]
{between}
    for i, j in grid(48, 16):
        D[i, j] = 0.0
        for k in range(48):
            D[i, j] += T[i, k] * C[k, j]
"""


def test_a_chain_lifts_to_its_accumulations_with_the_temporary_a_fact():
    (w,) = _lifted(CHAIN.format(extra="", between=""))
    assert [(name, program.text(term)) for name, term in w.accumulations] == \
        [("T", "A @ B"), ("D", "T @ C")]
    assert list(w.temporaries) == ["T"]  # given to egglog as temporary("T")


def _inlined_or_kept(src, inline=True):
    func = parse(src)
    parts = nests.items(nests.normalize(func))
    return func, matrices.alternatives(func, parts, Names.of(func), inline=inline)


def test_the_temporary_is_inlined_by_the_rule_only_under_its_fact():
    # D = (A @ B) @ C with A 48 x 8: regrouped, A @ (B @ C) does 8x fewer multiply-adds, which
    # needs T's value inlined; without the fact temporary(T), T stays and nothing regroups
    func, (alt,) = _inlined_or_kept(CHAIN.format(extra="", between=""))
    assert alt.note == "T += A @ B; D += T @ C -> D += A @ (B @ C)"
    (guarded,) = [p for p in alt.parts if isinstance(p, finite.Guarded)]
    fast = ir.seq(*(p.stmt() if hasattr(p, "stmt") else p for p in guarded.fast))
    assert "T" not in {b.name for b in ir.buffers_of(fast)}  # the program as written: slow
    _computes_the_same(func, alt)
    assert _inlined_or_kept(CHAIN.format(extra="", between=""), inline=False)[1] == []
    (w,) = _lifted(CHAIN.format(extra="", between=""))
    out, report = program.cheapest(w.accumulations, matrices.built_in(), matrices.multiply_adds)
    assert out == w.accumulations and program.INLINE not in report.rules


SHARED = """
@prim_func
def shared(A: f32[{m}, {k}], B: f32[{k}, {n}], C: f32[{n}, {p}], E: f32[{n}, {p}],
           D1: f32[{m}, {p}], D2: f32[{m}, {p}]):
    T = alloc(f32[{m}, {n}])
    for i, j in grid({m}, {n}):
        T[i, j] = 0.0
        for k in range({k}):
            T[i, j] += A[i, k] * B[k, j]
    for i, j, k in grid({m}, {p}, {n}):
        D1[i, j] += T[i, k] * C[k, j]
    for i, j, k in grid({m}, {p}, {n}):
        D2[i, j] += T[i, k] * E[k, j]
"""


def test_a_temporary_read_twice_is_kept_or_inlined_by_what_each_costs():
    # T = A @ B read by two products: inlined, A @ B is paid at each read, which pays only
    # where both reads regroup into cheaper products (C and E of 2 columns)
    m, k, n = 32, 32, 32
    (w,) = _lifted(SHARED.format(m=m, k=k, n=n, p=32))
    out, report = program.cheapest(w.accumulations, matrices.built_in(), matrices.multiply_adds,
                                   temporaries=tuple(w.temporaries))
    assert [name for name, _ in out] == ["T", "D1", "D2"] and program.INLINE in report.rules
    assert out == w.accumulations  # kept: each regrouping costs more than the product shared
    func, (alt,) = _inlined_or_kept(SHARED.format(m=m, k=k, n=n, p=2))
    assert alt.note.endswith("-> D1 += A @ (B @ C); D2 += A @ (B @ E)")
    _computes_the_same(func, alt)


def test_inline_temporary_is_turned_off_by_name():
    func = parse(CHAIN.format(extra="", between=""))
    on, off = tensorize(func, AVX2), tensorize(func, AVX2, rules_off=["inline-temporary"])
    assert "mm_U" in show(on.func) and "mm_U" not in show(off.func)  # B @ C into a temporary
    assert "inline-temporary" in on.egraphs[0][1].rules
    assert "inline-temporary" not in off.egraphs[0][1].rules
    for result in (on, off):
        assert runtime.check(func, runtime.compile(result.func)).ok


TWO_CHAINS = """
@prim_func
def two_chains(A: f32[96, 8], B: f32[8, 96], C: f32[96, 32], F: f32[8, 96], G: f32[96, 32],
               D: f32[96, 32], E: f32[96, 8], H: f32[96, 32]):
    T = alloc(f32[96, 96])
    for i, j in grid(96, 96):
        T[i, j] = 0.0
        for k in range(8):
            T[i, j] += A[i, k] * B[k, j]
    for i, j in grid(96, 32):
        D[i, j] = 0.0
        for k in range(96):
            D[i, j] += T[i, k] * C[k, j]
    for i, j in grid(96, 8):
        E[i, j] = max(D[i, j], 0.0)
    U = alloc(f32[96, 96])
    for i, j in grid(96, 96):
        U[i, j] = 0.0
        for k in range(8):
            U[i, j] += E[i, k] * F[k, j]
    for i, j in grid(96, 32):
        H[i, j] = 0.0
        for k in range(96):
            H[i, j] += U[i, k] * G[k, j]
"""


def test_two_chains_apart_are_both_regrouped():
    # two windows, split by an elementwise pass over the first one's output: each regroups
    # (A @ (B @ C) with A of 8 columns), and the program takes both
    func = parse(TWO_CHAINS)
    parts = nests.items(nests.normalize(func))
    alts = matrices.alternatives(func, parts, Names.of(func))
    assert [a.note for a in alts][-1] == ("T += A @ B; D += T @ C -> D += A @ (B @ C); "
                                          "U += E @ F; H += U @ G -> H += E @ (F @ G)")
    result = tensorize(func, AVX2)
    fast = [p for p in _guards(result.func.body)]
    assert len(fast) == 2 and all({"T", "U"}.isdisjoint(_buffers(f)) for f in fast)
    assert runtime.check(func, runtime.compile(result.func)).ok


def _guards(s):
    """The first branch of each finiteness guard in ``s`` (the rewritten program)."""
    for x in ir.walk_stmts(s):
        if isinstance(x, ir.If):
            yield x.then


def _buffers(s):
    return {b.name for b in ir.buffers_of(s)}


def test_a_program_reading_a_temporary_it_does_not_compute_is_not_lowered():
    func = parse(CHAIN.format(extra="", between=""))
    parts = nests.items(nests.normalize(func))
    (w,) = matrices.lift(func, parts)
    D = dict(w.accumulations)["D"]
    assert matrices.lower(w, [("D", D)], parts, Names.of(func)) is None  # T never written
    kept = matrices.lower(w, w.accumulations, parts, Names.of(func))
    assert kept is not None
    _computes_the_same(func, kept)


def test_an_operand_written_between_the_products_is_not_lifted():
    between = "    for i, j in grid(48, 16):\n        C[i, j] = 2.0 * C[i, j]"
    assert _lifted(CHAIN.format(extra="", between=between)) == []


def test_the_temporary_read_between_the_products_is_no_internal_value():
    between = "    for i, j in grid(48, 48):\n        E[i, j] = T[i, j]"
    assert _lifted(CHAIN.format(extra=", E: f32[48, 48]", between=between)) == []
    func = parse(CHAIN.format(extra=", E: f32[48, 48]", between=between))
    result = tensorize(func, AVX2)
    assert "mm_U" not in show(result.func)  # T is needed whole: no regrouping
    _same_values(func, result.func)


def test_a_sink_read_after_its_first_product_stops_the_window():
    src = """
@prim_func
def two(A: f32[32, 16], B1: f32[16, 64], B2: f32[16, 64], C: f32[32, 64], E: f32[32, 64]):
    for i, j, k in grid(32, 64, 16):
        C[i, j] += A[i, k] * B1[k, j]
    for i, j in grid(32, 64):
        E[i, j] = C[i, j]
    for i, j, k in grid(32, 64, 16):
        C[i, j] += A[i, k] * B2[k, j]
"""
    assert _lifted(src) == []


def test_the_lowered_program_of_a_factored_sum_computes_the_same():
    src = (GOLDEN / "matmul_distribute.py").read_text()
    func = parse(src)
    (alt,) = matrices.alternatives(func, nests.items(nests.normalize(func)), Names.of(func))
    assert alt.note == "C += A @ B1 + A @ B2 -> C += A @ (B1 + B2)"
    result = tensorize(func, AVX2)
    assert runtime.check(func, runtime.compile(result.func)).ok


# ---------------------------------------------------------------------------
# soundness of rules


@pytest.mark.parametrize("name", matrices.BUILT_IN)
def test_every_built_in_rule_passes_the_soundness_check(name):
    (r,) = [x for x in matrices.built_in() if x.name == name]
    verdict = soundness.check(r, examples=25)
    assert verdict.ok, verdict.message


def test_inline_temporary_passes_its_check_and_a_broken_substitution_is_caught(monkeypatch):
    from egglog import String, i64, rewrite, ruleset

    from rewrite.program import Matrix, Program, temporary

    verdict = soundness.check_inline(examples=40)
    assert verdict.ok, verdict.message
    # the substitution without its condition that another input is no T: T's leaf stays
    # equal to its value everywhere, and extraction reads the T it no longer writes
    broken = ruleset(name="broken-inline")

    @broken.register
    def _(t: String, s: String, r: i64, c: i64, v: Matrix, a: Matrix, b: Matrix, p: Program,
          q: Program):
        yield rewrite(Program.acc(t, v).then(p)).to(p.put(t, v), temporary(t))
        yield rewrite(p.then(q).put(t, v)).to(p.put(t, v).then(q.put(t, v)))
        yield rewrite(Program.acc(s, a).put(t, v)).to(Program.acc(s, a.put(t, v)))
        yield rewrite(Matrix(t, r, c).put(t, v)).to(v)
        yield rewrite(Matrix(s, r, c).put(t, v)).to(Matrix(s, r, c))
        yield rewrite((a @ b).put(t, v)).to(a.put(t, v) @ b.put(t, v))
        yield rewrite(a.T.put(t, v)).to(a.put(t, v).T)

    monkeypatch.setattr(program, "_inline", broken)
    verdict = soundness.check_inline(examples=40)
    assert not verdict.ok and "T read but not computed" in verdict.message


def test_the_check_evaluates_a_side_as_numpy_does():
    rng = np.random.default_rng(1)
    a, b, c = rng.integers(-3, 4, (2, 3)).astype(float), rng.integers(-3, 4, (3, 4)).astype(float), \
        rng.integers(-3, 4, (2, 4)).astype(float)
    node = Op("+", (Op("*", (Op("@", (Input("a", 2, 3), Input("b", 3, 4))),), -0.5), Input("c", 2, 4)))
    got = soundness.evaluate(node, {"a": a, "b": b, "c": c})
    np.testing.assert_array_equal(got, -0.5 * (a @ b) + c)
    node = Op("@", (Op("T", (Input("b", 3, 4),)), Op("T", (Input("a", 2, 3),))))
    np.testing.assert_array_equal(soundness.evaluate(node, {"a": a, "b": b}), b.T @ a.T)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "rewrite.cli", *args], capture_output=True, text=True,
                          cwd=HERE.parent, timeout=600)


def test_a_wrong_rule_is_caught_with_its_counterexample():
    out = _cli("rules", "--rules-file", str(RULES / "wrong.py"), "--check", "--examples", "30")
    assert out.returncode == 1
    assert "rule commute-product is unsound: with a = [[" in out.stderr
    assert "b @ a gives" in out.stderr


def test_a_wrong_peel_is_caught_on_odd_instances(tmp_path):
    wrong = tmp_path / "wrong_peel.py"
    wrong.write_text("from rewrite.program import Matrix, rule\n\n"
                     "@rule('wrong-peel', odd=[('a', 'rows')], why='reads the row before the last')\n"
                     "def wrong_peel(a: Matrix, b: Matrix):\n"
                     "    return a @ b, (a.head_rows() @ b).above(a.head_rows().last_row() @ b)\n")
    out = _cli("rules", "--rules-file", str(wrong), "--check", "--examples", "30")
    assert out.returncode == 1
    assert "ok    rule peel-rows" in out.stdout  # the built-in one, sampled alike, holds
    (line,) = [x for x in out.stderr.splitlines() if "rule wrong-peel is unsound: with a = " in x]
    a = json.loads(line.split("with a = ")[1].split(", b = ")[0])
    assert len(a) % 2 == 1  # an odd number of rows, as the rule requires


def test_a_user_rule_loads_passes_the_check_and_changes_the_program():
    out = _cli("rules", "--rules-file", str(RULES / "transpose_product.py"), "--check",
               "--examples", "30", "--json")
    assert out.returncode == 0, out.stderr
    rows = {r["name"]: r for r in json.loads(out.stdout)["rules"]}
    mine = rows["transpose-product"]
    assert mine["rule"] == "(a @ b).T -> b.T @ a.T" and mine["check"]["ok"]
    assert mine["origin"].endswith("transpose_product.py")
    func = _only(RULES / "transposed_chain.py")
    plain = tensorize(func, AVX2)
    users = tensorize(func, AVX2, program_rules=program.load_file(RULES / "transpose_product.py"))
    assert "mm_U" not in show(plain.func) and "mm_U" in show(users.func)
    assert users.cost < plain.cost
    assert runtime.check(func, runtime.compile(users.func)).ok


def test_a_rule_written_from_scratch_does_the_work_of_the_built_in_one():
    func = _only(GOLDEN / "matmul_distribute.py")
    off = ("factor-left", "factor-right")
    assert "mm_S" not in show(tensorize(func, AVX2, rules_off=off).func)
    mine = program.load_file(RULES / "factor_shared.py")
    result = tensorize(func, AVX2, rules_off=off, program_rules=mine)
    assert "mm_S" in show(result.func)
    assert runtime.check(func, runtime.compile(result.func)).ok


def test_run_takes_a_rules_file(capsys):
    path = RULES / "transposed_chain.py"
    assert main(["run", str(path), "--rules-file", str(RULES / "transpose_product.py"),
                 "--emit", "script", "--jobs", "1"]) == 0
    assert "mm_U" in capsys.readouterr().out


@pytest.mark.parametrize("text, message", [
    ("from rewrite.program import Matrix, rule\n", "registers no rule"),
    ("def f(:\n", "Python syntax error"),
    ("from rewrite.program import Matrix, rule\n\n@rule('assoc-right', why='taken')\n"
     "def f(a: Matrix):\n    return a, a\n", "already registered"),
    ("from rewrite.program import Matrix, rule\n\n@rule('mine', why='x')\ndef f(a):\n"
     "    return a, a\n", "must be annotated Matrix or float"),
    ("from rewrite.program import Matrix, rule\n\n@rule('mine', why='x')\n"
     "def f(a: Matrix):\n    return a @ 3, a\n", "no terms over Matrix"),
    ("raise RuntimeError('boom')\n", "cannot load rules: boom"),
    ("from rewrite.program import Matrix, rule\n\n@rule('mine', why='x')\n"
     "def f(a: Matrix, b: Matrix):\n    return a @ a, a @ b\n", "right side uses b, which its left side"),
    ("from rewrite.program import Matrix, rule\n\n@rule('mine', why='x')\n"
     "def f(a: Matrix):\n    return a, a.T.T\n", "left side is a bare variable"),
    ("from rewrite.program import Matrix, rule\n\n@rule('mine', why='x', odd=[('c', 'rows')])\n"
     "def f(a: Matrix, b: Matrix):\n    return a @ b, a @ b\n", "names ['c'], no matrix parameter"),
    ("from rewrite.program import Matrix, rule\n\n@rule('mine', why='x', also_even=[('a', 'r')])\n"
     "def f(a: Matrix, b: Matrix):\n    return a @ b, a @ b\n", "take (matrix, 'rows' or 'cols')"),
])
def test_a_bad_rules_file_is_one_located_error(tmp_path, capsys, text, message):
    bad = tmp_path / "bad_rules.py"
    bad.write_text(text)
    assert main(["rules", "--rules-file", str(bad)]) == 2
    err = capsys.readouterr().err
    assert message in err and str(bad) in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert "mine" not in [r.name for r in program.registered()]  # nothing left behind


def test_a_missing_rules_file_is_bad_input(capsys):
    assert main(["rules", "--rules-file", "/nonexistent/rules.py"]) == 2
    assert "no such file" in capsys.readouterr().err


# ---------------------------------------------------------------------------
# Strassen, a rule of the program-level e-graph


def _strassen_rules(*names):
    return [r for r in matrices.built_in() if r.name in names]


def test_strassen_and_reassociation_together_beat_either_alone():
    # A @ (B @ C) with A 64 x 128, B and C 128 x 128: regrouped, two 64 x 128 x 128 products
    # instead of a 128^3 one; a level on each of those saves more than its additions cost
    A, B, C = Input("A", 64, 128), Input("B", 128, 128), Input("C", 128, 128)
    chain = [("D", Op("@", (A, Op("@", (B, C)))))]

    def best(*names):
        out, _ = program.cheapest(chain, _strassen_rules(*names), matrices.multiply_adds,
                                  program.Budget(iterations=12, enodes=20_000), at_least=2)
        return matrices.tree_cost(out, matrices.multiply_adds), out

    both, chosen = best("assoc-right", "assoc-left", "strassen-level")
    regrouped, _ = best("assoc-right", "assoc-left")
    levels, _ = best("strassen-level")
    assert both < regrouped < levels < matrices.tree_cost(chain, matrices.multiply_adds)
    ((_, term),) = chosen
    assert matrices.strassen_levels(term) >= 1 and program.text(term).endswith(" @ C")  # regrouped


def test_a_level_chosen_in_the_e_graph_is_lowered_to_the_same_values():
    func = parse(LEVEL_CHAIN)
    (alt,) = matrices.alternatives(func, nests.items(nests.normalize(func)), Names.of(func),
                                   _strassen_rules("strassen-level"), at_least=4)
    assert alt.levels == 1
    # T kept (its quadrants read in place): both products take a level, 5 of 7 products of
    # each read twice and so made into temporaries
    assert alt.note.split(" -> ")[1].startswith("T += ") and "T.block(0, 0)" in alt.note
    assert sum(1 for b in alt.allocs if b.shape == (64, 64) and b.name.startswith("mm_U")) == 10
    _computes_the_same(func, alt)


def _computes_the_same(func, alt):
    """``alt``'s program equals ``func`` interpreted, and compiled against the interpreter on
    the program as written, NaN/Inf/-0 rounds included."""
    body = ir.seq(*(p.stmt() if hasattr(p, "stmt") else p for p in alt.parts))
    temps = {b.name: b for b in ir.buffers_of(body) if b not in func.params}  # in first use order
    lowered = replace(func, body=body, allocs=tuple(temps.values()))
    _same_values(func, lowered)
    check = runtime.check(func, runtime.compile(lowered))
    assert check.ok, check.message


def test_strassen_in_the_e_graph_follows_the_strassen_option():
    from rewrite.pipeline import Search

    def names(strassen, off=frozenset()):
        search = Search({}, None, Names(), True, strassen, None, off)
        return {r.name for r in matrices.in_force(search)}

    assert "strassen-level" in names("auto")
    assert "strassen-level" not in names("off")
    assert "strassen-level" not in names(2)  # forced levels are the strassen family's
    assert "strassen-level" not in names("auto", frozenset({"strassen"}))
    assert names("off") == names("auto") - {"strassen-level", *matrices.PEELS}
    assert not set(matrices.PEELS) & names("auto", frozenset({"strassen-level"}))


LONE = """
@prim_func
def lone(A: f32[{m}, {k}], B: f32[{k}, {n}], C: f32[{m}, {n}]):
    for i, j, k in grid({m}, {n}, {k}):
        C[i, j] += A[i, k] * B[k, j]
"""


@pytest.mark.parametrize("m, k, n, peels, lifted", [
    (16, 16, 16, False, True),
    (16, 8, 16, False, False),  # k = 8 is under the smallest extent split
    (16, 18, 16, False, True),
    (16, 17, 16, False, False),  # an odd extent, and no rule to peel it
    (16, 17, 16, True, True),  # peel-inner leaves 16
    (17, 16, 33, True, True),
    (16, 15, 16, True, False),  # peeled, 14 is under the smallest extent split
])
def test_a_lone_product_lifts_where_strassen_level_splits_it(m, k, n, peels, lifted):
    func = parse(LONE.format(m=m, k=k, n=n))
    parts = nests.items(nests.normalize(func))
    rules = _strassen_rules("strassen-level", *(matrices.PEELS if peels else ()))
    alone = partial(matrices.splits_alone, rules=rules, at_least=16)
    windows = matrices.lift(func, parts, alone)
    assert [program.text(t) for w in windows for _, t in w.accumulations] == (["A @ B"] if lifted else [])
    assert matrices.lift(func, parts) == []  # no rule for a lone product: nothing lifted
    assert not matrices.splits_alone(matmul_of(parts), _strassen_rules("assoc-right"), 16)


def matmul_of(parts):
    from rewrite.rules.matmul import recognize

    (mm,) = [recognize(p) for p in parts if isinstance(p, nests.AccNest)]
    return mm


def test_a_level_on_a_lone_product_chosen_in_the_e_graph_computes_the_same():
    # 128^3: seven 64^3 products and the additions (a pass and a second read an element) cost
    # fewer operations than the product; a second level (seven 32^3 products for each) does not
    func = parse(LONE.format(m=128, k=128, n=128))
    (alt,) = matrices.alternatives(func, nests.items(nests.normalize(func)), Names.of(func),
                                   _strassen_rules("strassen-level"), at_least=8)
    assert alt.levels == 1
    assert alt.extra_cost > 0  # the block additions' second operand, as the strassen family charges
    _computes_the_same(func, alt)


LEVEL_CHAIN = """
@prim_func
def chain(A: f32[128, 128], B: f32[128, 128], C: f32[128, 128], D: f32[128, 128]):
    T = alloc(f32[128, 128])
    for i, j in grid(128, 128):
        T[i, j] = 0.0
        for k in range(128):
            T[i, j] += A[i, k] * B[k, j]
    for i, j in grid(128, 128):
        for k in range(128):
            D[i, j] += T[i, k] * C[k, j]
"""


@pytest.mark.parametrize("script", [LONE.format(m=128, k=128, n=128), LEVEL_CHAIN], ids=["lone", "chain"])
def test_the_e_graph_charges_a_levels_additions_as_the_lowered_program_is_charged(script):
    # each element of a materialised sum and of a quadrant pass: one operation and the second
    # operand's read, which the lowered program reports as its extra cost
    func = parse(script)
    parts = nests.items(nests.normalize(func))
    rules = _strassen_rules("strassen-level")
    (w,) = matrices.lift(func, parts, partial(matrices.splits_alone, rules=rules, at_least=8))
    best, _ = program.cheapest(w.accumulations, rules, matrices.multiply_adds, at_least=8)
    alt = matrices.lower(w, best, parts, Names.of(func))
    assert sum(matrices.strassen_levels(term) for _, term in best) == len(best)  # one a product
    additions = matrices.tree_cost(best, lambda m, k, n: 0.0)
    assert additions == (1 + program.ADDITION_TRAFFIC) / program.ADDITION_TRAFFIC * alt.extra_cost


def test_a_level_whose_saving_its_additions_second_read_eats_is_not_offered():
    # 128^3 with a product priced at 0.47 an operation: a level saves 0.47 * 128^3 / 8 = 123k,
    # more than its twenty quadrant passes at one operation an element (82k), less than at two
    func = parse(LONE.format(m=128, k=128, n=128))
    parts = nests.items(nests.normalize(func))
    rules = _strassen_rules("strassen-level")

    def offered(per_operation):
        return matrices.alternatives(func, parts, Names.of(func), rules,
                                     price=lambda m, k, n: per_operation * m * k * n, at_least=8)

    assert offered(0.47) == []
    assert [a.levels for a in offered(0.7)] == [1]


@pytest.mark.parametrize("per_operation, per_floor, levels", [
    (0.47, 0.47, []),  # no level pays even at the floor: the halves are never planned
    (0.47, 0.3, []),  # one might at the floor: planned, and refused by their price
    (0.7, 0.3, [1]),  # it pays: the same level as without a floor
])
def test_shapes_only_a_rewrite_makes_are_priced_where_their_floor_could_pay(per_operation, per_floor,
                                                                           levels):
    # 128^3: a level's 64^3 halves are priced only where the level could pay with every
    # shape the window does not have at its floor (a price no plan undercuts); the floor
    # changes which shapes are priced, never what is offered
    func = parse(LONE.format(m=128, k=128, n=128))
    parts = nests.items(nests.normalize(func))
    rules = _strassen_rules("strassen-level")
    priced = []

    def price(m, k, n):
        priced.append((m, k, n))
        return per_operation * m * k * n

    def offered(floor):
        priced.clear()
        return [a.levels for a in matrices.alternatives(func, parts, Names.of(func), rules,
                                                         price=price, at_least=8, floor=floor)]

    assert offered(None) == levels and (64, 64, 64) in priced
    assert offered((lambda m, k, n: per_floor * m * k * n, {})) == levels
    assert ((64, 64, 64) in priced) == (per_floor < per_operation)


def test_the_floor_of_a_product_is_its_cheapest_calls_bare_price():
    library = intrinsics.library("x86-avx2")
    bound = matrices.floor_price(library, "f32")
    tile = intrinsics.get("x86.mm.f32.6x16x1")  # the cheapest a multiply-add: 6 units a call of 96
    assert bound(6, 1, 16) == pytest.approx(tile.cost)
    assert bound(60, 100, 32) == pytest.approx(10 * 100 * 2 * tile.cost)
    assert matrices.floor_price(library, "f16") is None  # no intrinsic writes f16 there


@pytest.mark.parametrize("m, k, n", [(129, 128, 128), (128, 129, 128), (128, 128, 129),
                                     (129, 129, 129)])
def test_an_odd_extent_is_peeled_in_the_e_graph_and_its_even_part_takes_a_level(m, k, n):
    # as at 128^3 (above), a level on the even part costs fewer operations than the product
    func = parse(LONE.format(m=m, k=k, n=n))
    rules = _strassen_rules("strassen-level", *matrices.PEELS)
    parts = nests.items(nests.normalize(func))
    (alt,) = matrices.alternatives(func, parts, Names.of(func), rules, at_least=32)
    assert alt.levels == 1
    _computes_the_same(func, alt)
    (w,) = matrices.lift(func, parts, partial(matrices.splits_alone, rules=rules, at_least=32))
    ((_, term),), _ = program.cheapest(w.accumulations, rules, matrices.multiply_adds, at_least=32)
    slivers = set()  # (part, input) of every last row or column read

    def walk(node, kinds=()):
        if isinstance(node, Input):
            slivers.update((kind, node.name) for kind in kinds if kind.startswith("last"))
            return
        for a in node.args:
            walk(a, kinds + ((node.kind,) if node.kind in program.PARTS else ()))

    walk(term)
    expected = {("last_row", "A")} if m % 2 else set()
    expected |= {("last_col", "A"), ("last_row", "B")} if k % 2 else set()
    expected |= {("last_col", "B")} if n % 2 else set()
    assert slivers == expected and matrices.strassen_levels(term) == 1


def test_auto_levels_of_a_lone_product_are_the_e_graphs_and_the_family_keeps_batches():
    from rewrite.budgets import Budgets
    from rewrite.pipeline import Search
    from rewrite.rules import strassen
    from rewrite.rules.choose import Around
    from rewrite.saturate import Budget

    # 4096 on the 6-row tiles (no padding): a level pays (at 2048 the plain product, blocked
    # in place, is the cheaper: extract.blocked_loops)
    func = parse(LONE.format(m=4096, k=4096, n=4096))
    result = tensorize(func, AVX2, rules_off={"padding"})
    assert result.strassen_levels >= 1
    (report,) = [g for family, g in result.egraphs if family == "matmul"]
    assert "strassen-level" in report.rules and report.iterations >= 1
    temps = {b.name for b in result.func.allocs}
    # lowered from the e-graph's term (its temporaries mm_*), not by the strassen family (st_P*)
    assert any(t.startswith("mm_U") for t in temps) and not any(t.startswith("st_P") for t in temps)
    odd = tensorize(parse(LONE.format(m=4096, k=4095, n=4096)), AVX2, rules_off={"padding"})
    (report,) = [g for family, g in odd.egraphs if family == "matmul"]
    assert odd.strassen_levels >= 1 and "peel-inner" in report.rules
    assert not any(b.name.startswith("st_P") for b in odd.func.allocs)
    # the strassen family offers nothing for it under auto (the e-graph chose), nor for a
    # product with an odd extent (peeled in the e-graph), and keeps a batched product
    search = Search({d.name: d for d in AVX2}, Budget(), Names.of(func), True, "auto", Budgets(),
                    frozenset({"padding"}))
    batched = """
@prim_func
def bmm(A: f32[2, 1024, 1024], B: f32[2, 1024, 1024], C: f32[2, 1024, 1024]):
    for b, i, j, k in grid(2, 1024, 1024, 1024):
        C[b, i, j] += A[b, i, k] * B[b, k, j]
"""
    for src, offered in ((LONE.format(m=4096, k=4096, n=4096), False),
                         (LONE.format(m=4096, k=4095, n=4096), False), (batched, True)):
        f = parse(src)
        parts = search.items(nests.normalize(f))
        assert bool(strassen.spans(parts, Around(f), search)) == offered


def test_a_fused_dense_layer_takes_a_level_in_the_e_graph_under_its_epilogue():
    # dense + bias + relu at 4096 on the AVX2 tiles without padding: the product alone is
    # lifted, the e-graph takes a level, and the epilogue reads what the level accumulated
    n = 4096
    func = parse(f"""
@prim_func
def dense(X: f32[{n}, {n}], W: f32[{n}, {n}], b: f32[{n}], Y: f32[{n}, {n}]):
    for i, j in grid({n}, {n}):
        Y[i, j] = 0.0
        for k in range({n}):
            Y[i, j] += X[i, k] * W[k, j]
        Y[i, j] = max(Y[i, j] + b[j], 0.0)
""")
    result = tensorize(func, AVX2, rules_off={"padding"})
    assert result.strassen_levels == 1
    (report,) = [g for family, g in result.egraphs if family == "matmul"]
    assert "strassen-level" in report.rules
    assert sum(1 for b in result.func.allocs if b.name.startswith("mm_U")) == 5  # P1..P5, read twice
    script = result.script()
    assert "max(" in script.split("mm_U")[-1]  # the epilogue after the level's products
    rng = np.random.default_rng(0)
    X, W = (rng.standard_normal((n, n), np.float32) for _ in range(2))
    b = rng.standard_normal(n, np.float32)
    Y = np.zeros((n, n), np.float32)
    result.compile()(X=X, W=W, b=b, Y=Y)
    rows = np.arange(0, n, 97)  # rows in every quarter of the output, each level's product
    want = np.maximum(X[rows].astype(np.float64) @ W.astype(np.float64) + b, 0.0)
    # one level's rounding: within a few units of the f32 product's error, elementwise
    np.testing.assert_allclose(Y[rows], want, rtol=0, atol=2e-3 * np.sqrt(n))


def test_a_product_behind_a_scale_factors_guard_takes_its_level_in_the_e_graph():
    # C += W * (A @ B) with W read at run time, one factor per output element: scalar-factor
    # computes A @ B into a temporary behind a guard; the e-graph lifts that product on the
    # guard's fast path
    from rewrite.budgets import Budgets
    from rewrite.pipeline import Choice, Search
    from rewrite.rules import finite, scalars
    from rewrite.rules.choose import cheapest_sites
    from rewrite.saturate import Budget

    func = parse("""
@prim_func
def scaled(W: f32[128, 128], A: f32[128, 128], B: f32[128, 128], C: f32[128, 128]):
    for i, j, k in grid(128, 128, 128):
        C[i, j] += W[i, j] * A[i, k] * B[k, j]
""")
    normal = nests.normalize(func)
    search = Search({d.name: d for d in AVX2}, Budget(), Names.of(normal), True, "auto", Budgets())
    parts = search.items(normal)
    best = cheapest_sites(Choice(normal, parts, search.plan(parts)), search, [scalars.rewrites])
    (guard,) = [p for p in best.parts if isinstance(p, finite.Guarded)]
    (alt,) = matrices.alternatives(best.func, best.parts, search.names,
                                   _strassen_rules("strassen-level"), at_least=8)
    assert alt.levels == 1
    (new,) = [p for p in alt.parts if isinstance(p, finite.Guarded)]
    assert new.slow == guard.slow and not new.settled  # the scale factor's guard, kept
    assert any(isinstance(p, finite.Guarded) and p.settled for p in new.fast)  # the level's own
    _computes_the_same(func, alt)
    # at 4096 the pipeline takes that level (no padding, as in the dense layer above), and the
    # strassen family adds none of its own on the products the e-graph chose for
    big = parse(show(func).replace("128", "4096"))
    result = tensorize(big, AVX2, rules_off={"padding"})
    temps = [b.name for b in result.func.allocs]
    assert result.strassen_levels == 1 and any(t.startswith("sc_T") for t in temps)
    assert any(t.startswith("mm_U") for t in temps) and not any(t.startswith("st_P") for t in temps)


def test_a_product_the_program_plans_is_priced_from_that_plan(monkeypatch):
    # the e-graph prices each product shape by the matcher's plan of a plain product, planned
    # apart (names of its own): the shapes the program's own plan has (A @ B, T @ C) are not
    # planned again; those regrouping makes (B @ C, A @ U) are, then again in the program
    # chosen, whose names the trial's plans do not have
    from rewrite.extract import Extractor

    planned = []
    best = Extractor.best

    def recorded(self, nest, matches):
        planned.append(tuple(d.extent for d in nest.dims))
        return best(self, nest, matches)

    monkeypatch.setattr(Extractor, "best", recorded)
    result = tensorize(parse(CHAIN.format(extra="", between="")), AVX2)
    assert "call(\"x86.mm.f32.6x16x1\", c=window(D[6 * i_o, 0]" in show(result.func)  # D += A @ U
    assert sorted(planned) == [(8, 16, 48)] * 2 + [(48, 16, 8)] * 2 + [(48, 16, 48), (48, 48, 8)]
