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
seed is given) and returns the shrunk failing program, if any.

A campaign (``tensorize fuzz``) is cut into units of ``UNIT_EXAMPLES`` programs of one
intrinsic, each drawn under a seed derived from the campaign's seed, the intrinsic and the
unit's place (``plan``), so that the same seed draws the same programs and reaches the same
verdicts whatever the number of workers that run the units. A failure is shrunk in its unit
and reported with the unit's seed, the minimal program as script and the command that
replays the unit. The long campaign::

    tensorize fuzz --examples 2000 --seed 1          # every intrinsic, ~2000 programs each
"""

from __future__ import annotations

import hashlib
import json
import shlex
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence, Union

from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from hypothesis import seed as _seed
from hypothesis import strategies as st

from .. import descriptor, ir
from ..pipeline import TensorizeResult, tensorize
from ..saturate import Budget
from ..script import parse, show
from .disguises import MUTATIONS, TRANSFORMATIONS, Disguised, NearMiss, disguised, near_misses, transformation
from .options import UNIT_EXAMPLES, add_arguments  # noqa: F401 (add_arguments: its options)

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
    used = {descriptor.parent_name(s.intrinsic) for s in result.sites}  # a partial form too
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


def cases(desc, near_miss_share: int = 3, kinds: Optional[Sequence[str]] = None,
          mutations: Sequence[str] = MUTATIONS) -> st.SearchStrategy:
    """Disguised programs (of ``kinds``, default all: ``disguises.DISGUISE_KINDS``), and one
    near miss (of ``mutations``) in ``near_miss_share``."""
    return st.integers(0, near_miss_share - 1).flatmap(
        lambda k: near_misses(desc, mutations) if k == 0 else disguised(desc, kinds=kinds))


def fuzz_intrinsic(desc, examples: int = 100, seed: Optional[int] = None, shrink: bool = True,
                   check: Callable[[Case], object] = check_case,
                   kinds: Optional[Sequence[str]] = None, mutations: Sequence[str] = MUTATIONS) -> Outcome:
    """Run ``check`` on ``examples`` drawn cases for ``desc`` (of ``kinds`` and ``mutations``,
    as ``cases``); the first failure, shrunk."""
    count = [0]
    last: list[Failure] = []

    phases = [Phase.explicit, Phase.generate] + ([Phase.shrink] if shrink else [])

    @settings(max_examples=examples, database=None, derandomize=seed is None, deadline=None,
              phases=phases, verbosity=Verbosity.quiet, print_blob=False,
              report_multiple_bugs=False, suppress_health_check=list(HealthCheck))
    @given(cases(desc, kinds=kinds, mutations=mutations))
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
# campaigns: units of examples, each with its own seed


@dataclass(frozen=True)
class FuzzUnit:
    """``examples`` programs for one intrinsic, drawn under ``seed``: unit ``index`` of a
    campaign of ``campaign_examples`` per intrinsic under ``campaign_seed``."""

    intrinsic: str
    index: int
    examples: int
    seed: int
    campaign_seed: int
    campaign_examples: int
    intrinsics_file: Optional[str] = None

    def replay(self) -> str:
        """The command that runs this unit alone, here, as the campaign ran it."""
        words = ["tensorize", "fuzz"]
        if self.intrinsics_file:
            words += ["--intrinsics-file", self.intrinsics_file]
        words += ["--intrinsic", self.intrinsic, "--examples", str(self.campaign_examples),
                  "--seed", str(self.campaign_seed), "--unit", str(self.index)]
        return " ".join(shlex.quote(w) for w in words)


def unit_seed(seed: int, intrinsic: str, index: int) -> int:
    """The seed of a unit: from the campaign's seed, the intrinsic and the unit's place, never
    from the worker that runs it, so that any number of workers draws the same programs."""
    digest = hashlib.blake2b(f"{seed}\0{intrinsic}\0{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def plan(names: Sequence[str], examples: int, seed: int,
         intrinsics_file: Optional[str] = None) -> list[FuzzUnit]:
    """The units of a campaign of ``examples`` programs per intrinsic, in report order."""
    units = []
    for name in names:
        for k, start in enumerate(range(0, examples, UNIT_EXAMPLES)):
            n = min(UNIT_EXAMPLES, examples - start)
            units.append(FuzzUnit(name, k, n, unit_seed(seed, name, k), seed, examples,
                                  intrinsics_file))
    return units


@dataclass
class UnitReport:
    """What one unit drew and found; plain data, so that it comes back from any worker."""

    intrinsic: str
    index: int
    examples: int  # drawn before the first failure, the failing one included
    seconds: float
    kinds: dict[str, int] = field(default_factory=dict)
    transformations: dict[str, int] = field(default_factory=dict)
    mutations: dict[str, int] = field(default_factory=dict)
    failure: Optional[dict] = None  # property, detail, kind, drawn, script (the shrunk program)


def _ensure_loaded(unit: FuzzUnit) -> None:
    """A worker process loads the user's module the first time one of its units needs it."""
    import intrinsics

    known = {d.name for d in intrinsics.all()}
    if unit.intrinsics_file and unit.intrinsic not in known:
        intrinsics.load_file(unit.intrinsics_file)


def run_unit(unit: FuzzUnit) -> UnitReport:
    """Check ``unit``'s programs; a failure is shrunk here, where it was found."""
    import intrinsics

    _ensure_loaded(unit)
    desc = intrinsics.get(unit.intrinsic)
    report = UnitReport(unit.intrinsic, unit.index, 0, 0.0)
    failing = [False]

    def check(case: Case):
        if not failing[0]:  # count what was drawn, not the shrinker's attempts
            report.examples += 1
            _add(report.kinds, case.kind)
            if isinstance(case, Disguised):
                for note in case.disguises:
                    _add(report.transformations, transformation(note))
            else:
                _add(report.mutations, case.mutation.split(":")[0])
        try:
            return check_case(case)
        except PropertyFailed:
            failing[0] = True
            raise

    t0 = time.perf_counter()
    try:
        out = fuzz_intrinsic(desc, unit.examples, unit.seed, check=check)
    except Exception as e:  # noqa: BLE001 - hypothesis' own errors (unsatisfiable, ...)
        report.seconds = time.perf_counter() - t0
        report.failure = {"property": "hypothesis", "detail": f"{type(e).__name__}: {e}",
                          "kind": "no program", "drawn": [], "script": ""}
        return report
    report.seconds = out.seconds
    if out.failure is not None:
        f = out.failure
        report.failure = {
            "property": f.prop, "detail": f.detail, "kind": f.case.kind,
            "drawn": list(f.case.disguises) if isinstance(f.case, Disguised) else [f.case.mutation],
            "script": show(f.case.func).rstrip()}
    return report


def _add(counts: dict, key: str, n: int = 1) -> None:
    counts[key] = counts.get(key, 0) + n


@dataclass
class Campaign:
    """The report of a campaign: its units' reports (or why a unit was lost), in plan order."""

    seed: int
    examples: int  # asked for, per intrinsic
    units: list[FuzzUnit]
    results: list  # UnitReport, or an object with a ``reason`` (the unit was lost)

    def reports(self) -> list[tuple[FuzzUnit, UnitReport]]:
        return [(u, r) for u, r in zip(self.units, self.results) if isinstance(r, UnitReport)]

    def lost(self) -> list[tuple[FuzzUnit, str]]:
        return [(u, r.reason) for u, r in zip(self.units, self.results)
                if not isinstance(r, UnitReport)]

    def failures(self) -> list[tuple[FuzzUnit, dict]]:
        return [(u, r.failure) for u, r in self.reports() if r.failure is not None]

    def per_intrinsic(self) -> dict[str, dict]:
        rows: dict[str, dict] = {}
        for u in self.units:
            rows.setdefault(u.intrinsic, {"examples": 0, "kinds": {"disguised": 0, "near miss": 0},
                                          "failures": 0, "lost_units": 0, "seconds": 0.0})
        for u, r in self.reports():
            row = rows[u.intrinsic]
            row["examples"] += r.examples
            for k, n in r.kinds.items():
                _add(row["kinds"], k, n)
            row["failures"] += r.failure is not None
            row["seconds"] += r.seconds
        for u, _ in self.lost():
            rows[u.intrinsic]["lost_units"] += 1
        return rows

    def histogram(self, which: str, names: Sequence[str]) -> dict[str, int]:
        """How often each transformation (``which="transformations"``) or near-miss mutation
        (``"mutations"``) was drawn; those never drawn are there with 0."""
        counts = {n: 0 for n in names}
        for _, r in self.reports():
            for k, n in getattr(r, which).items():
                _add(counts, k, n)
        return counts

    def total(self) -> int:
        return sum(r.examples for _, r in self.reports())

    def to_json(self) -> dict:
        return {
            "seed": self.seed, "examples_per_intrinsic": self.examples,
            "intrinsics": [{"name": n, **row} for n, row in self.per_intrinsic().items()],
            "transformations": self.histogram("transformations", TRANSFORMATIONS),
            "mutations": self.histogram("mutations", MUTATIONS),
            "failures": [{"intrinsic": u.intrinsic, "unit": u.index, "seed": u.seed, **f,
                          "replay": u.replay()} for u, f in self.failures()],
            "lost": [{"intrinsic": u.intrinsic, "unit": u.index, "seed": u.seed, "reason": why,
                      "replay": u.replay()} for u, why in self.lost()],
            "examples": self.total(),
        }

    def text(self) -> str:
        rows = [("intrinsic", "examples", "disguised", "near miss", "failures", "seconds")]
        for name, row in self.per_intrinsic().items():
            failures = str(row["failures"]) + (f" ({row['lost_units']} units lost)"
                                               if row["lost_units"] else "")
            rows.append((name, str(row["examples"]), str(row["kinds"].get("disguised", 0)),
                         str(row["kinds"].get("near miss", 0)), failures, f"{row['seconds']:.1f}"))
        widths = [max(len(r[k]) for r in rows) for k in range(len(rows[0]))]
        lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                           for i, (c, w) in enumerate(zip(r, widths))).rstrip() for r in rows]
        for title, which, names in (("transformations drawn (disguised programs)",
                                     "transformations", TRANSFORMATIONS),
                                    ("mutations drawn (near misses)", "mutations", MUTATIONS)):
            counts = self.histogram(which, names)
            lines += ["", title + ":"]
            width = max(len(n) for n in counts)
            top = max(counts.values()) or 1
            for n, c in counts.items():
                bar = "#" * round(30 * c / top)
                lines.append(f"  {n.ljust(width)}  {c:>7}  {bar if c else '(never drawn)'}".rstrip())
        for u, f in self.failures():
            lines += ["", f"FAILED {f['property']} for {u.intrinsic} ({f['kind']}), "
                          f"unit {u.index}, seed {u.seed}", f["detail"]]
            if f["drawn"]:
                lines.append(("disguises: " if f["kind"] == "disguised" else "mutation: ")
                             + ", ".join(f["drawn"]))
            lines += [f["script"]] if f["script"] else []
            lines.append(f"replay: {u.replay()}")
        for u, why in self.lost():
            lines += ["", f"LOST unit {u.index} of {u.intrinsic} ({u.examples} examples, "
                          f"seed {u.seed}): {why}", f"replay: {u.replay()}"]
        lost = len(self.lost())
        lines += ["", f"{self.total()} examples, {len(self.per_intrinsic())} intrinsics, "
                      f"{len(self.failures())} failures" + (f", {lost} units lost" if lost else "")]
        return "\n".join(lines)


# ---------------------------------------------------------------------------
# the command


def default_library() -> list:
    """The host's native intrinsics, then the emulated built-ins (cheap: small programs)."""
    import intrinsics

    native = intrinsics.library("host")
    return native + [d for d in intrinsics.all() if d not in native]


def serial(work: Callable, units: Sequence) -> list:
    return [work(u) for u in units]


def main(args, execute: Callable[[Callable, Sequence], list] = serial) -> int:
    """``tensorize fuzz``: plan the campaign, have ``execute(run_unit, units)`` run its units
    (here one after the other, or on workers: ``rewrite.tools.campaign``), report."""
    import intrinsics

    intrinsic = getattr(args, "intrinsic", None)
    path = getattr(args, "intrinsics_file", None)
    examples = getattr(args, "examples", 100)
    seed = getattr(args, "seed", 0)
    seed = 0 if seed is None else seed
    only = getattr(args, "unit", None)
    if examples is None or examples < 1:
        print("tensorize fuzz: --examples must be at least 1", file=sys.stderr)
        return 2
    if only is not None and not 0 <= only * UNIT_EXAMPLES < examples:
        print(f"tensorize fuzz: --unit {only}: a campaign of {examples} examples has units 0 to "
              f"{(examples - 1) // UNIT_EXAMPLES}", file=sys.stderr)
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
    units = plan([d.name for d in descs], examples, seed, path)
    if only is not None:
        units = [u for u in units if u.index == only]
    report = Campaign(seed, examples, units, execute(run_unit, units))
    if getattr(args, "json", False):
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(report.text())
    return 1 if report.failures() or report.lost() else 0


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(prog="tensorize fuzz")
    add_arguments(p)
    sys.exit(main(p.parse_args()))
