"""``tensorize fuzz``: the matcher's completeness and soundness, checked on programs built to
hold an intrinsic in disguise (``disguises.disguised``) and on near misses
(``disguises.near_misses``).

Four properties, one function each; each raises ``PropertyFailed`` naming itself:

- ``completeness``: every intrinsic the construction guarantees appears among the sites, and
  coverage reaches the construction's lower bound;
- ``soundness``: the compiled tensorized program equals the interpreter on the original;
- ``no_match``: a near miss's mutated nest calls no intrinsic;
- ``round_trip``: ``parse(show(result.func)) == result.func``.

``fuzz_intrinsic`` runs them under hypothesis (no example database, derandomised unless a
seed is given) and returns the shrunk failing program, if any. The long campaign::

    tensorize fuzz --examples 2000 --seed 1          # every intrinsic, ~2000 programs each
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from hypothesis import seed as _seed
from hypothesis import strategies as st

from .. import ir
from ..pipeline import TensorizeResult, tensorize
from ..saturate import Budget
from ..script import parse, show
from .disguises import Disguised, NearMiss, disguised, near_misses

# Small bodies saturate in milliseconds; the limits only stop a runaway rule set.
FUZZ_BUDGET = Budget(iterations=12, enodes=50_000, seconds=5.0, hard_seconds=30.0)

Case = Union[Disguised, NearMiss]


class PropertyFailed(AssertionError):
    def __init__(self, prop: str, detail: str):
        super().__init__(f"{prop}: {detail}")
        self.prop = prop
        self.detail = detail


# ---------------------------------------------------------------------------
# the properties


def run_case(case: Case, library: Optional[Sequence] = None) -> TensorizeResult:
    """Tensorize the case's program with its intrinsic alone (or ``library``), in process so
    that rules changed in this process are the rules in force."""
    import intrinsics

    lib = list(library) if library is not None else [intrinsics.get(case.intrinsic)]
    return tensorize(case.func, lib, budget=FUZZ_BUDGET, in_process=True, strassen="off")


def completeness(case: Disguised, result: TensorizeResult) -> None:
    used = {s.intrinsic for s in result.sites}
    missing = case.guarantee.must_use - used
    if missing:
        raise PropertyFailed("completeness", f"{', '.join(sorted(missing))} not used "
                             f"(guaranteed: {case.guarantee.reason}); sites: {sorted(used) or 'none'}")
    if result.coverage < case.guarantee.min_coverage:
        raise PropertyFailed("completeness", f"coverage {result.coverage:.4f} below the "
                             f"guaranteed {case.guarantee.min_coverage:.4f} "
                             f"({case.guarantee.reason})")


def soundness(original: ir.PrimFunc, result: TensorizeResult, seed: int = 0) -> None:
    from .. import runtime

    got = runtime.check(original, result.compile(), seed=seed)
    if not got.ok:
        raise PropertyFailed("soundness", f"the tensorized program differs from the "
                             f"interpreter on the original: {got.message}")


def _calls(s: ir.Stmt):
    return [x for x in ir.walk_stmts(s) if isinstance(x, ir.Call)]


def no_match(case: NearMiss, result: TensorizeResult) -> None:
    bad = [c.intrinsic.name for c in _calls(result.func.body)
           if c.window(c.output).buffer.name == case.output and c.intrinsic.name == case.intrinsic]
    if bad:
        raise PropertyFailed("no match", f"{case.intrinsic} was used on the nest writing "
                             f"{case.output}, which it cannot compute ({case.mutation})")


def round_trip(result: TensorizeResult) -> None:
    text = show(result.func)
    if parse(text) != result.func:
        raise PropertyFailed("round trip", "parse(show(result.func)) != result.func")


def mixed_library(desc) -> list:
    """``desc`` among the host's intrinsics, so that several compete for one nest and its
    remainders."""
    import intrinsics

    return [desc] + [d for d in intrinsics.library("host") if d is not desc]


def check_case(case: Case, mixed: bool = True) -> TensorizeResult:
    """Every property that applies to ``case``; raises ``PropertyFailed`` on the first that
    fails (a crash of the tensorizer or the compiler is a failure too). With ``mixed``, the
    program is tensorized a second time with the host library beside the intrinsic: the
    construction's coverage bound assumes the intrinsic alone, so that run checks soundness,
    round trip and (near misses) no match."""
    import intrinsics

    desc = intrinsics.get(case.intrinsic)
    libraries = [[desc]] + ([mixed_library(desc)] if mixed else [])
    result = None
    for k, library in enumerate(libraries):
        try:
            got = run_case(case, library)
        except Exception as e:  # noqa: BLE001 - any crash is a finding
            raise PropertyFailed("crash", f"tensorize raised {type(e).__name__}: {e}") from e
        round_trip(got)
        if isinstance(case, NearMiss):
            no_match(case, got)
        elif k == 0:
            completeness(case, got)
        try:
            soundness(case.func, got)
        except PropertyFailed as e:
            if k > 0:
                e.detail += " (with the host library beside it)"
            raise
        except Exception as e:  # noqa: BLE001
            raise PropertyFailed("crash", f"compiling or running raised {type(e).__name__}: {e}") from e
        result = result or got
    return result


# ---------------------------------------------------------------------------
# hypothesis, driven programmatically


@dataclass
class Failure:
    intrinsic: str
    prop: str
    detail: str
    case: Case

    def text(self) -> str:
        lines = [f"FAILED {self.prop} for {self.intrinsic} ({self.case.kind})", self.detail]
        if isinstance(self.case, Disguised):
            lines.append("disguises: " + ", ".join(self.case.disguises))
        else:
            lines.append("mutation: " + self.case.mutation)
        lines.append(show(self.case.func).rstrip())
        return "\n".join(lines)


@dataclass
class Outcome:
    intrinsic: str
    examples: int
    seconds: float
    failure: Optional[Failure] = None


def cases(desc, near_miss_share: int = 3) -> st.SearchStrategy:
    """Disguised programs, and one near miss in ``near_miss_share``."""
    return st.integers(0, near_miss_share - 1).flatmap(
        lambda k: near_misses(desc) if k == 0 else disguised(desc))


def fuzz_intrinsic(desc, examples: int = 100, seed: Optional[int] = None, shrink: bool = True,
                   check: Callable[[Case], object] = check_case) -> Outcome:
    """Run ``check`` on ``examples`` drawn cases for ``desc``; the first failure, shrunk."""
    count = [0]
    last: list[Failure] = []

    phases = [Phase.explicit, Phase.generate] + ([Phase.shrink] if shrink else [])

    @settings(max_examples=examples, database=None, derandomize=seed is None, deadline=None,
              phases=phases, verbosity=Verbosity.quiet, print_blob=False,
              suppress_health_check=list(HealthCheck))
    @given(cases(desc))
    def prop(case: Case) -> None:
        count[0] += 1
        try:
            check(case)
        except PropertyFailed as e:
            last.append(Failure(desc.name, e.prop, e.detail, case))
            raise

    if seed is not None:
        prop = _seed(seed)(prop)
    t0 = time.perf_counter()
    try:
        prop()
    except PropertyFailed:
        pass
    except Exception as e:  # noqa: BLE001 - hypothesis' own errors (flaky failures, ...)
        if not last:
            raise
        last[-1].detail += f" (then hypothesis: {type(e).__name__})"
    return Outcome(desc.name, count[0], time.perf_counter() - t0, last[-1] if last else None)


# ---------------------------------------------------------------------------
# the command


def add_arguments(parser) -> None:
    """The options of ``tensorize fuzz``."""
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--intrinsic", metavar="NAME", default=None,
                       help="fuzz this intrinsic only (default: the host library and the "
                            "emulated built-ins)")
    which.add_argument("--intrinsics-file", metavar="PATH", default=None,
                       help="fuzz the intrinsics a Python module registers")
    parser.add_argument("--examples", type=int, default=100, metavar="N",
                        help="programs per intrinsic (default 100)")
    parser.add_argument("--seed", type=int, default=None, metavar="S",
                        help="random seed (default: derandomised, the same programs every run)")


def default_library() -> list:
    """The host's native intrinsics, then the emulated built-ins (cheap: small programs)."""
    import intrinsics

    native = intrinsics.library("host")
    return native + [d for d in intrinsics.all() if d not in native]


def main(args) -> int:
    import intrinsics

    intrinsic = getattr(args, "intrinsic", None)
    path = getattr(args, "intrinsics_file", None)
    examples = getattr(args, "examples", 100)
    seed = getattr(args, "seed", None)
    if examples is None or examples < 1:
        print("tensorize fuzz: --examples must be at least 1", file=sys.stderr)
        return 2
    try:
        descs = intrinsics.load_file(path) if path else []
        if path and not descs:
            print(f"tensorize fuzz: {path} registers no intrinsics", file=sys.stderr)
            return 2
        if intrinsic:
            descs = [intrinsics.get(intrinsic)]
        elif not path:
            descs = default_library()
    except (intrinsics.IntrinsicError, ValueError) as e:
        print(f"tensorize fuzz: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - a user's plugin failing as it loads
        print(f"tensorize fuzz: {path}: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    total, failures = 0, 0
    for desc in descs:
        out = fuzz_intrinsic(desc, examples, seed)
        total += out.examples
        status = "ok" if out.failure is None else f"FAILED ({out.failure.prop})"
        print(f"{desc.name}: {out.examples} examples, {out.seconds:.1f} s, {status}",
              file=sys.stderr, flush=True)
        if out.failure is not None:
            failures += 1
            print(out.failure.text(), flush=True)
    print(f"{total} examples, {len(descs)} intrinsics, {failures} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(prog="tensorize fuzz")
    add_arguments(p)
    sys.exit(main(p.parse_args()))
