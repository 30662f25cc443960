"""The matcher fuzzer: its properties hold on a derandomised sample for every built-in and a
user's intrinsic, its certificates say what they should on hand-written cases, and it
reports a failure when a rule is planted wrong."""

import argparse
import inspect

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import intrinsics
from rewrite import extract, match, nests
from rewrite.fuzz import could_fit, disguised, near_misses, properties
from rewrite.fuzz.disguises import CLASSIC_MUTATIONS
from rewrite.ir import Accumulate, Binary, Load
from rewrite.script import parse
from rewrite.verify import verify

BUILT_IN = [d.name for d in intrinsics.all()]
EXAMPLES = 12

USER = '''
@prim_func
def gemv(c: f32[4], a: f32[4, 8], b: f32[8]):
    for i, k in grid(4, 8):
        c[i] += a[i, k] * b[k]
'''


@pytest.fixture
def user_intrinsic():
    desc = intrinsics.register("user.gemv.f32.4x8", USER, cost=1.0)
    yield desc
    intrinsics.unregister(desc.name)


@pytest.mark.parametrize("name", BUILT_IN)
def test_properties_hold_for_built_in(name):
    out = properties.fuzz_intrinsic(intrinsics.get(name), EXAMPLES)
    assert out.failure is None, out.failure.text()
    assert out.examples == EXAMPLES


def test_properties_hold_for_a_semantics_only_user_intrinsic(user_intrinsic):
    out = properties.fuzz_intrinsic(user_intrinsic, EXAMPLES)
    assert out.failure is None, out.failure.text()
    assert out.examples == EXAMPLES


def test_cases_are_well_formed_and_cover_every_kind():
    """Drawn programs verify; classic disguised ones in whole tiles guarantee the intrinsic (the
    forms of real code: ``test_fuzz_real.py``)."""
    desc = intrinsics.get("x86.mm.f32.6x16x1")
    kinds, guaranteed = set(), []

    @settings(max_examples=40, database=None, derandomize=True, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(st.one_of(disguised(desc, exact=True, kinds=["classic"]), near_misses(desc, CLASSIC_MUTATIONS)))
    def draw(case):
        verify(case.func)
        if case.kind == "near miss":
            kinds.add(case.mutation.split(":")[0])
        elif not any(n.startswith("scaled") for n in case.disguises):
            # a constant factor needs a temporary, which pays off only on long reductions
            guaranteed.append(desc.name in case.guarantee.must_use)

    draw()
    assert kinds == {"operator", "index", "dtype", "dependence"}
    assert guaranteed and all(guaranteed)


# ---------------------------------------------------------------------------
# the near-miss certificate on hand-written nests


def _nest(text):
    func = parse(text)
    s = func.body
    loops = []
    while hasattr(s, "var"):
        loops.append(s.var)
        s = s.body
    return loops, Load(s.buffer, s.indices), [x for x in _loads(s.value)]


def _loads(e):
    if isinstance(e, Load):
        yield e
    for c in (getattr(e, "a", None), getattr(e, "b", None)):
        if c is not None:
            yield from _loads(c)


MATMUL = '''
@prim_func
def f(A: f32[12, 4], B: f32[4, 16], C: f32[12, 16]):
    for i, j, k in grid(12, 16, 4):
        C[i, j] += {body}
'''


@pytest.mark.parametrize("body, fits", [
    ("A[i, k] * B[k, j]", True),
    ("B[k, j] * A[i, k]", True),
    ("A[i, k] * B[j % 4, i]", False),   # B no longer moves along j, and moves along i
    ("A[j % 12, k] * B[k, j]", False),  # only j moves C's columns, and it moves A too
])
def test_could_fit_on_matmul_bodies(body, fits):
    loops, out, loads = _nest(MATMUL.format(body=body))
    assert could_fit(intrinsics.get("x86.mm.f32.6x16x1"), loops, out, loads) is fits


def test_could_fit_refuses_other_dtypes():
    text = MATMUL.replace("f32", "f64").format(body="A[i, k] * B[k, j]")
    loops, out, loads = _nest(text)
    assert not could_fit(intrinsics.get("x86.mm.f32.6x16x1"), loops, out, loads)


# ---------------------------------------------------------------------------
# planted bugs: the fuzzer must catch them, through the functions the CLI uses


def test_catches_dropped_remainders(monkeypatch):
    """Without the remainder nests, extents that do not divide lose iterations."""
    monkeypatch.setattr(extract, "remainders", lambda nest, binding, desc: [])
    out = properties.fuzz_intrinsic(intrinsics.get("x86.mm.f32.6x16x1"), 40, shrink=False)
    assert out.failure is not None
    assert out.failure.prop == "soundness"


def _sloppy_as_accumulate(s):
    """A wrong normalisation: X[f] = X[g] + e taken as X[f] += e whatever g is."""
    v = s.value
    if isinstance(v, Binary) and v.op == "+":
        for mine, other in ((v.a, v.b), (v.b, v.a)):
            if isinstance(mine, Load) and mine.buffer.name == s.buffer.name:
                return Accumulate(s.buffer, s.indices, other)
    return None


def test_catches_a_dependence_ignored(monkeypatch):
    monkeypatch.setattr(nests, "_as_accumulate", _sloppy_as_accumulate)
    # the classic cases (the sloppy form misses X = X + a + b, a form of real code, before)
    out = properties.fuzz_intrinsic(intrinsics.get("x86.fma.f32x8"), 100, shrink=False,
                                    kinds=["classic"], mutations=CLASSIC_MUTATIONS)
    assert out.failure is not None
    assert out.failure.prop in ("no match", "soundness")
    assert out.failure.case.kind == "near miss"


def _without_line(monkeypatch, module, func_name: str, line: str, instead: str):
    """Plant a bug: recompile ``module.func_name`` with one piece of its source replaced."""
    src = inspect.getsource(getattr(module, func_name))
    assert line in src, f"{func_name} no longer has the line this test plants a bug in"
    namespace = dict(vars(module))
    exec(compile(src.replace(line, instead), module.__file__, "exec"), namespace)
    monkeypatch.setattr(module, func_name, namespace[func_name])


def test_catches_a_binding_check_skipped(monkeypatch):
    """Without "a bound dim the operand does not use must not move its access", operands that
    move along the wrong loop are read as broadcasts."""
    _without_line(monkeypatch, match, "_still",
                  "    return not any(it not in op.dims and any(coef[(op.name, p)]) for op in desc.operands)\n",
                  "    return True\n")
    # the classic cases, whose index mutation moves an operand along another loop
    out = properties.fuzz_intrinsic(intrinsics.get("x86.mm.f32.6x16x1"), 60, shrink=False,
                                    kinds=["classic"], mutations=CLASSIC_MUTATIONS)
    assert out.failure is not None
    assert out.failure.prop in ("no match", "soundness")


def test_cli_main_reports_a_planted_bug(monkeypatch, capsys):
    monkeypatch.setattr(extract, "remainders", lambda nest, binding, desc: [])
    parser = argparse.ArgumentParser()
    properties.add_arguments(parser)
    args = parser.parse_args(["--intrinsic", "x86.axpy.f32x8", "--examples", "25"])
    assert properties.main(args) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].endswith(" examples, 1 intrinsics, 1 failures")
    assert any(line.startswith("FAILED soundness") for line in out)
    assert any(line.startswith("def disguised(") for line in out)


def test_cli_main_summary_when_all_hold(capsys):
    parser = argparse.ArgumentParser()
    properties.add_arguments(parser)
    args = parser.parse_args(["--intrinsic", "x86.fma.f32x8", "--examples", "5"])
    assert properties.main(args) == 0
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert lines[-1] == "5 examples, 1 intrinsics, 0 failures"
    assert lines[0].split() == ["intrinsic", "examples", "disguised", "near", "miss", "failures",
                                "seconds"]
    assert lines[1].split()[:2] == ["x86.fma.f32x8", "5"]
