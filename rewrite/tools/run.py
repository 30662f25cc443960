"""What ``tensorize run`` and ``tensorize bench`` do with each function, apart from reading
the command line: the units of a run (one function of one file), the options, processing a
function (tensorize, compile, check) into its report entry, the table, and the jobs the
workers run (``campaign.py`` runs them here, on ``--jobs`` processes or on Ray). Also the two
ways a command stops that the workers share with it: ``BadInput`` (one line, exit 2) and
``Interrupted`` (SIGINT/SIGTERM, exit 130/143).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator, Optional

from .. import analysis
from ..budgets import BudgetError, Budgets, using
from ..descriptor import parent_name
from ..ir import PrimFunc
from ..script import parse_file_lenient, show
from . import campaign


# ---------------------------------------------------------------------------
# inputs


@dataclass
class Unit:
    """One function to process, or the error that kept it from being read."""

    file: str
    name: Optional[str]
    func: Optional[PrimFunc] = None
    error: Optional[str] = None


def script_files(paths: list[str]) -> Iterator[tuple[str, Optional[str]]]:
    """``(file, error)`` for each script named directly or found (recursively) in a folder."""
    for p in paths:
        path = Path(p)
        if path.is_dir():
            found = sorted(q for q in path.rglob("*.py") if q.is_file())
            if not found:
                yield p, f"{p}: no script files (*.py) in this folder"
            for q in found:
                yield str(q), None
        elif path.is_file():
            yield p, None
        else:
            yield p, f"{p}: no such file or folder"


def load_units(paths: list[str], only: Optional[str]) -> list[Unit]:
    units: list[Unit] = []
    for file, error in script_files(paths):
        if error:
            units.append(Unit(file, None, error=error))
            continue
        funcs, errors = parse_file_lenient(file)
        units.extend(Unit(file, e.name, error=str(e)) for e in errors if only in (None, e.name)
                     or e.name is None)
        units.extend(Unit(file, name, func=f) for name, f in funcs.items() if only in (None, name))
    if only is not None and not any(u.name == only for u in units):
        units.append(Unit(", ".join(paths), only, error=f"no function named {only} in {', '.join(paths)}"))
    return units


# ---------------------------------------------------------------------------
# one function


@dataclass
class Options:
    library: Optional[list] = None  # intrinsics to map onto; None: plain loops
    check: bool = False
    emit: Optional[str] = None
    explain: bool = False
    threads: Optional[int] = None
    strassen: object = "auto"
    budgets: Budgets = field(default_factory=Budgets)
    rules_off: frozenset = frozenset()  # rule families turned off (--rules -NAME,...)
    rules_file: Optional[str] = None  # rules added to the program-level e-graph (--rules-file)


@dataclass
class Entry:
    file: str
    name: Optional[str]
    error: Optional[str] = None
    buffers: list[dict] = field(default_factory=list)
    loops: list[dict] = field(default_factory=list)
    sites: list[dict] = field(default_factory=list)
    ops_total: int = 0
    ops_in_intrinsics: int = 0
    strassen_levels: int = 0
    saturation: Optional[dict] = None
    program_egraphs: list[dict] = field(default_factory=list)  # rules/matrices.py's e-graphs
    choice: Optional[dict] = None  # the one extraction's report (rules/choose.py)
    explanations: list[str] = field(default_factory=list)
    check: Optional[dict] = None
    seconds: dict = field(default_factory=dict)
    emitted: Optional[str] = None

    @property
    def fraction(self) -> float:
        return self.ops_in_intrinsics / self.ops_total if self.ops_total else 0.0

    def to_json(self) -> dict:
        return {
            "file": self.file, "name": self.name,
            "sites": self.sites,
            "coverage": {"ops_total": self.ops_total, "ops_in_intrinsics": self.ops_in_intrinsics,
                         "fraction": self.fraction},
            "saturation": self.saturation,
            "program_egraphs": self.program_egraphs,
            "choice": self.choice,
            "strassen_levels": self.strassen_levels,
            "check": self.check,
            "seconds": self.seconds,
            "explain": self.explanations,
            "buffers": self.buffers,
            "loops": self.loops,
            "error": self.error,
        }


def process(unit: Unit, opts: Options) -> Entry:
    """Analyse, tensorize, compile and (optionally) check one function, under its budgets."""
    with using(opts.budgets):
        return _process(unit, opts)


def _process(unit: Unit, opts: Options) -> Entry:
    entry = Entry(unit.file, unit.name, error=unit.error)
    if unit.func is None:
        return entry
    func = unit.func
    t0 = time.perf_counter()
    try:
        if opts.library is not None:
            from .. import saturate

            saturate.prestart()  # boots while this process analyses and begins to tensorize
        from .. import runtime
        from ..calls import op_count

        outputs = {b.name for b in func.outputs}
        entry.buffers = [{"name": b.name, "dtype": b.dtype, "shape": list(b.shape),
                          "role": "output" if b.name in outputs else
                          ("temporary" if b in func.allocs else "input")} for b in func.buffers]
        entry.loops = [{"var": l.var, "start": l.start, "stop": l.stop, "kind": l.kind,
                        "depth": l.depth} for l in analysis.loops(func)]
        entry.ops_total = op_count(func.body)
        entry.seconds["analysis"] = time.perf_counter() - t0
        chosen = func
        if opts.library is not None:
            from ..pipeline import tensorize

            from ..rules import matrices

            result = tensorize(func, opts.library, strassen=opts.strassen, budgets=opts.budgets,
                               rules_off=opts.rules_off,
                               program_rules=matrices.user_rules(opts.rules_file))
            chosen = result.func
            entry.sites = [s.to_json() for s in result.sites]
            entry.ops_total, entry.ops_in_intrinsics = result.ops_total, result.ops_in_intrinsics
            entry.saturation = result.saturation.to_json()
            entry.program_egraphs = [{"family": f, **g.to_json()} for f, g in result.egraphs]
            entry.choice = None if result.choice is None else result.choice.to_json()
            entry.explanations = [str(e) for e in result.explanations]
            entry.strassen_levels = result.strassen_levels
            entry.seconds.update(result.seconds)
        if opts.emit == "script":
            entry.emitted = show(chosen)
        t1 = time.perf_counter()
        kernel = runtime.compile(chosen, threads=opts.threads)
        entry.seconds["compile"] = time.perf_counter() - t1
        if opts.emit == "llvm":
            entry.emitted = runtime.emit_llvm(chosen)
        elif opts.emit == "asm":
            entry.emitted = runtime.emit_asm(chosen)
        if opts.check:
            # the chosen program, compiled, against the interpreter on the function as written
            t2 = time.perf_counter()
            result = runtime.check(func, kernel, budgets=opts.budgets)
            entry.seconds["check"] = time.perf_counter() - t2
            entry.check = {"ok": bool(result.ok), "max_abs_error": float(result.max_abs_error)}
            if not result.ok:
                entry.check["message"] = result.message
            if result.unchecked:  # outputs computed from a decision on a rounded float sum
                entry.check["unchecked"] = list(result.unchecked)
    except BudgetError as e:  # too big for this run's budgets: bad input, said so
        entry.error = f"{unit.file}:{unit.name}: {e}"
    except (Exception, SystemExit, KeyboardInterrupt) as e:
        # a compiler bug, or a plugin's emitter raising anything, must not stop the others
        _stop_if_signalled(e)
        entry.error = f"{unit.file}:{unit.name}: internal error: {type(e).__name__}: {e}"
    entry.seconds["total"] = time.perf_counter() - t0
    return entry


# ---------------------------------------------------------------------------
# many functions: here, or on workers (rewrite.tools.campaign)


@dataclass(frozen=True)
class Job:
    """One function for a worker process: the unit without its parsed program (the worker
    reads the file again) and the options without the library (the worker makes it again
    from the options that chose it)."""

    unit: Unit
    opts: Options
    library: tuple  # (target, --intrinsics, --intrinsics-file)


_libraries: dict = {}  # this process's intrinsic libraries, by what chose them
_parsed: dict = {}  # this process's parsed files: (funcs, errors)


def _read(unit: Unit) -> Unit:
    """The unit with its program, read again from its file (once a process)."""
    if unit.func is not None or unit.error is not None:
        return unit
    if unit.file not in _parsed:
        _parsed[unit.file] = parse_file_lenient(unit.file)
    func = _parsed[unit.file][0].get(unit.name)
    if func is None:
        return Unit(unit.file, unit.name, error=f"{unit.file}:{unit.name}: the function changed "
                                                "while the run went on")
    return Unit(unit.file, unit.name, func=func)


def _library(choice: tuple) -> Optional[list]:
    """The intrinsic library ``(target, --intrinsics, --intrinsics-file)`` chose, made once a
    process; None for plain loops."""
    target, names, path = choice
    if target == "none":
        return None
    if choice not in _libraries:
        _libraries[choice] = load_intrinsics(argparse.Namespace(
            target=target, intrinsics=names, intrinsics_file=path))
    return _libraries[choice]


def run_job(job: Job) -> Entry:
    """A worker's unit of ``tensorize run``: ``process`` on the function the job names."""
    unit = _read(job.unit)
    if unit.func is None:
        return Entry(unit.file, unit.name, error=unit.error)
    try:
        library = _library(job.library)
    except BadInput as e:
        return Entry(unit.file, unit.name, error=str(e))
    return process(unit, job.opts if library is None else replace(job.opts, library=library))


def in_process(units: list[Unit], args: argparse.Namespace) -> bool:
    """Whether ``run_units`` processes ``units`` in this process."""
    jobs = getattr(args, "jobs", 1) or campaign.default_jobs()
    return getattr(args, "ray", None) is None and (jobs <= 1 or len(units) <= 1)


def run_units(units: list[Unit], opts: Options, args: argparse.Namespace) -> list[Entry]:
    """``process`` on each unit, here or on ``--jobs`` workers or ``--ray``, in unit order."""
    jobs, ray = getattr(args, "jobs", 1) or campaign.default_jobs(), getattr(args, "ray", None)
    failed = lambda e: bool(e.error) or (e.check is not None and not e.check["ok"])  # noqa: E731
    if in_process(units, args):
        return campaign.run(lambda u: process(u, opts), units, what="function", failed=failed)
    choice = (getattr(args, "target", "host"), getattr(args, "intrinsics", None),
              getattr(args, "intrinsics_file", None))
    _libraries[choice] = opts.library  # for units run in this process
    bare = replace(opts, library=None)
    work = [Job(u if u.func is None else Unit(u.file, u.name), bare, choice) for u in units]
    results = campaign.run(run_job, work, jobs=jobs, ray=ray, budget=args.unit_timeout,
                           what="function", failed=failed)
    return [r if isinstance(r, Entry) else
            Entry(u.file, u.name, error=f"{u.file}:{u.name}: lost: {r.reason}")
            for u, r in zip(units, results)]


# ---------------------------------------------------------------------------
# output


def _tensorize_seconds(e: Entry) -> Optional[float]:
    return e.seconds.get("tensorize")


def _ms(seconds: Optional[float]) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.0f} ms"


def _count(n: int) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return str(n)


def _egraph(report: dict) -> str:
    """An e-graph's report (``to_json``) as the ``-v`` block says it."""
    return (f"{report['iterations']} iterations, {report['enodes']} e-nodes, "
            f"{report['stop_reason']}, {report['seconds']:.2f} s")


def format_entry(e: Entry, explain: bool = False) -> str:
    if e.error:
        return f"{e.file}::{e.name or '?'}\n  error: {e.error}"
    ins = ", ".join(f"{b['name']} {b['dtype']}{b['shape']}" for b in e.buffers if b["role"] == "input")
    outs = ", ".join(f"{b['name']} {b['dtype']}{b['shape']}" for b in e.buffers if b["role"] == "output")
    tmps = ", ".join(f"{b['name']} {b['dtype']}{b['shape']}" for b in e.buffers if b["role"] == "temporary")
    nests: list[list[str]] = []
    for l in e.loops:
        if l["depth"] == 0 or not nests:
            nests.append([])
        span = str(l["stop"]) if l["start"] == 0 else f"{l['start']}:{l['stop']}"
        nests[-1].append(f"{l['var']}<{span}> {l['kind']}")
    check = "-" if e.check is None else ("ok" if e.check["ok"] else "FAILED") + \
        f" (max abs error {e.check['max_abs_error']:.2g})"
    used: dict[str, int] = {}
    for s in e.sites:
        used[s["intrinsic"]] = used.get(s["intrinsic"], 0) + s["calls"]
    intrinsics = ", ".join(f"{n} x{c}" for n, c in used.items()) or "none"
    lines = [f"{e.file}::{e.name}",
             f"  in:  {ins or '-'}",
             f"  out: {outs or '-'}" + (f"   temporaries: {tmps}" if tmps else ""),
             *(f"  nest: {', '.join(n)}" for n in nests),
             f"  intrinsics: {intrinsics}",
             f"  ops: {_count(e.ops_total)}   coverage: {e.fraction:.2f}   check: {check}   "
             f"tensorize: {_ms(_tensorize_seconds(e))}   compile: {_ms(e.seconds.get('compile'))}"]
    if e.saturation:
        lines.append(f"  saturation: {_egraph(e.saturation)}")
    lines += [f"  program e-graph ({g['family']}): {_egraph(g)}" for g in e.program_egraphs]
    if e.choice:
        from ..rules.choose import describe

        lines.append(f"  one extraction: {describe(e.choice)}")
    if e.check is not None and not e.check["ok"]:
        lines.append(f"  check failed: {e.check.get('message', '')}")
    if explain:
        lines += [f"  uncovered: {x}" for x in e.explanations] or ["  uncovered: nothing"]
    return "\n".join(lines)


def _used(e: Entry) -> str:
    """The intrinsics a function calls, a partial form (``rules/edges.py``) under its
    parent's name; ``-v`` and ``--json`` name each form."""
    used: dict[str, int] = {}
    for s in e.sites:
        name = parent_name(s["intrinsic"])
        used[name] = used.get(name, 0) + s["calls"]
    return ", ".join(used) or "-"


def format_table(entries: list[Entry], explain: bool = False) -> str:
    """One row per function: intrinsics used, coverage, check, tensorize and compile time."""
    rows = [("function", "intrinsics", "coverage", "check", "tensorize", "compile")]
    notes: dict[int, list[str]] = {}
    for e in entries:
        name = f"{Path(e.file).name}::{e.name or '?'}"
        if e.error:
            rows.append((name, "error (see stderr)", "-", "-", "-", "-"))
            continue
        check = "-" if e.check is None else ("ok" if e.check["ok"] else "FAILED")
        rows.append((name, _used(e), f"{e.fraction:.2f}", check,
                     _ms(_tensorize_seconds(e)), _ms(e.seconds.get("compile"))))
        if explain and e.explanations:
            notes[len(rows) - 1] = e.explanations
    widths = [max(len(r[k]) for r in rows) for k in range(len(rows[0]))]
    lines = []
    for k, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(r, widths))).rstrip())
        for note in notes.get(k, []):
            lines.extend("    " + l for l in note.splitlines())
    return "\n".join(lines)



# ---------------------------------------------------------------------------
# stopping


class BadInput(Exception):
    """Input the command cannot use: one line on stderr, exit status 2."""


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM reached the command."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


signals: list[int] = []  # signals received by this command, see main


def on_signal(signum: int, frame) -> None:
    signals.append(signum)
    raise Interrupted(signum)


def _stop_if_signalled(e: BaseException) -> None:
    """Re-raise ``e`` as an interrupt when a signal arrived while it was raised: only a real
    interrupt stops the command; a plugin's own ``KeyboardInterrupt`` is an error."""
    if isinstance(e, Interrupted):
        raise e
    if signals:
        raise Interrupted(signals[-1]) from None


def load_intrinsics(args: argparse.Namespace) -> list:
    """The intrinsic library the options ask for (user modules loaded first)."""
    import intrinsics

    if getattr(args, "intrinsics_file", None):
        try:
            intrinsics.load_file(args.intrinsics_file)
        except intrinsics.IntrinsicError as e:  # names the file, and the line where it can
            _stop_if_signalled(e)
            raise BadInput(str(e)) from None
    target = getattr(args, "target", "all")
    library = [] if target == "none" else intrinsics.library(target)
    names = getattr(args, "intrinsics", None)
    if names:
        wanted = [n.strip() for n in names.split(",") if n.strip()]
        known = {d.name for d in intrinsics.all()}
        unknown = [n for n in wanted if n not in known]
        if unknown:
            raise BadInput(f"unknown intrinsic{'s' * (len(unknown) > 1)} {', '.join(unknown)}; "
                           "tensorize intrinsics lists them")
        library = [intrinsics.get(n) for n in wanted]
    return library



# ---------------------------------------------------------------------------
# bench: tensorize and compile on workers, time here


class Reported(Exception):
    """A function's error, already worded."""


@dataclass(frozen=True)
class BenchJob:
    unit: Unit  # without its parsed program: the worker reads the file again
    library: tuple  # (target, --intrinsics, --intrinsics-file)


def tensorize_for_bench(job: BenchJob):
    """A worker's unit of ``tensorize bench``: the chosen program, tensorized and compiled
    (into the disk cache), as script text; or the error that stopped it, worded."""
    from .. import runtime
    from ..pipeline import tensorize

    u = _read(job.unit)
    if u.func is None:
        return ("error", u.error)
    try:
        library = _library(job.library)
        with using(Budgets()):
            chosen = tensorize(u.func, library).func
        runtime.compile(chosen)
        return ("ok", show(chosen))
    except BadInput as e:
        return ("error", str(e))
    except BudgetError as e:
        return ("error", f"{u.file}:{u.name}: {e}")
    except Exception as e:  # noqa: BLE001 - as in ``run``: this function's error
        return ("error", f"{u.file}:{u.name}: internal error: {type(e).__name__}: {e}")


def prepare_bench(good: list[Unit], args: argparse.Namespace) -> list:
    """For each unit, the chosen program (tensorized and compiled on ``--jobs`` workers or
    ``--ray``), the error that stopped it (a string), or None: tensorize it here."""
    from ..script import parse

    jobs = args.jobs or campaign.default_jobs()
    if args.ray is None and (jobs <= 1 or len(good) <= 1):
        return [None] * len(good)
    choice = (args.target, args.intrinsics, args.intrinsics_file)
    work = [BenchJob(Unit(u.file, u.name), choice) for u in good]
    done = campaign.run(tensorize_for_bench, work, jobs=jobs, ray=args.ray,
                        budget=args.unit_timeout, what="function",
                        failed=lambda r: r[0] != "ok")
    out = []
    for u, r in zip(good, done):
        if isinstance(r, campaign.Lost):
            out.append(f"{u.file}:{u.name}: lost: {r.reason}")
        elif r[0] == "ok":
            out.append(parse(r[1], u.file))
        else:
            out.append(r[1])
    return out
