"""The ``tensorize`` command line (SPEC §4): ``run``, ``intrinsics``, ``fuzz``, ``bench``, ``grad``.

Exit status: 0 done, 1 a ``--check`` failure, 2 bad input (one line per problem on
stderr, never a traceback). One bad function does not stop the others: its entry
carries ``"error"``. A function over one of its budgets (``budgets.Budgets``, raised with
``--budget NAME=N``) is bad input too: its error names the budget, exit status 2. SIGINT and
SIGTERM stop the command cleanly (the saturation worker is killed): exit status 130 and 143
(128 + the signal), ``interrupted`` on stderr.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

from . import analysis
from .budgets import BudgetError, Budgets, using
from .ir import PrimFunc
from .script import parse_file_lenient, show
from .target import TARGETS as ISAS

# What --target takes: this CPU's library, an ISA's (native here or emulated), every
# registered intrinsic, or none (plain loops).
TARGETS = ("host", *ISAS, "all", "none")


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
        from . import runtime
        from .calls import op_count

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
            from .pipeline import tensorize

            result = tensorize(func, opts.library, strassen=opts.strassen, budgets=opts.budgets,
                               rules_off=opts.rules_off)
            chosen = result.func
            entry.sites = [s.to_json() for s in result.sites]
            entry.ops_total, entry.ops_in_intrinsics = result.ops_total, result.ops_in_intrinsics
            entry.saturation = result.saturation.to_json()
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
    except BudgetError as e:  # too big for this run's budgets: bad input, said so
        entry.error = f"{unit.file}:{unit.name}: {e}"
    except (Exception, SystemExit, KeyboardInterrupt) as e:
        # a compiler bug, or a plugin's emitter raising anything, must not stop the others
        _stop_if_signalled(e)
        entry.error = f"{unit.file}:{unit.name}: internal error: {type(e).__name__}: {e}"
    entry.seconds["total"] = time.perf_counter() - t0
    return entry


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
    if e.check is not None and not e.check["ok"]:
        lines.append(f"  check failed: {e.check.get('message', '')}")
    if explain:
        lines += [f"  uncovered: {x}" for x in e.explanations] or ["  uncovered: nothing"]
    return "\n".join(lines)


def _used(e: Entry) -> str:
    used: dict[str, int] = {}
    for s in e.sites:
        used[s["intrinsic"]] = used.get(s["intrinsic"], 0) + s["calls"]
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


class Progress:
    """``[3/27] name`` on stderr, only when stderr is a terminal."""

    def __init__(self, total: int):
        self.total, self.done = total, 0
        self.live = sys.stderr.isatty()

    def step(self, label: str) -> None:
        self.done += 1
        if self.live:
            sys.stderr.write(f"\r\033[K[{self.done}/{self.total}] {label}")
            sys.stderr.flush()

    def finish(self) -> None:
        if self.live:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


# ---------------------------------------------------------------------------
# commands


class BadInput(Exception):
    """Input the command cannot use: one line on stderr, exit status 2."""


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM reached the command."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


_signals: list[int] = []  # signals received by this command, see main


def _on_signal(signum: int, frame) -> None:
    _signals.append(signum)
    raise Interrupted(signum)


def _stop_if_signalled(e: BaseException) -> None:
    """Re-raise ``e`` as an interrupt when a signal arrived while it was raised: only a real
    interrupt stops the command; a plugin's own ``KeyboardInterrupt`` is an error."""
    if isinstance(e, Interrupted):
        raise e
    if _signals:
        raise Interrupted(_signals[-1]) from None


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


def cmd_intrinsics(args: argparse.Namespace) -> int:
    import intrinsics

    load_intrinsics(argparse.Namespace(intrinsics_file=args.intrinsics_file))
    try:
        intrinsics.library(args.target)
    except intrinsics.IntrinsicError as e:
        raise BadInput(str(e)) from None
    if args.bench:
        names = [d.name for d in intrinsics.library(args.target) if d.native]
        from .tools import intrinsic_bench

        print(intrinsic_bench.format_rows(intrinsic_bench.throughput(names)))
    else:
        print(intrinsics.describe(args.target))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    library = load_intrinsics(args)
    budgets = Budgets()
    for option in args.budget or []:
        budgets = budgets.with_option(option)  # validated by _budget already
    opts = Options(library=None if args.target == "none" else library, check=args.check,
                   emit=args.emit, explain=args.explain, threads=args.threads,
                   strassen=int(args.strassen) if args.strassen.isdigit() else args.strassen,
                   budgets=budgets, rules_off=args.rules or frozenset())
    units = load_units(args.paths, args.func)
    progress = Progress(len(units))
    entries = []
    for u in units:
        progress.step(f"{Path(u.file).name}::{u.name or '?'}")
        entries.append(process(u, opts))
    progress.finish()
    for e in entries:
        if e.error:
            print(e.error, file=sys.stderr)
    if args.json:
        json.dump({"functions": [e.to_json() for e in entries]}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif args.emit:
        for e in entries:
            if e.emitted is not None:
                print(e.emitted)
    elif args.verbose:
        for e in entries:
            print(format_entry(e, args.explain))
            print()
    else:
        print(format_table(entries, args.explain))
    if not args.json and not args.emit:
        ok = sum(1 for e in entries if not e.error)
        checked = [e for e in entries if e.check is not None]
        failed = sum(1 for e in checked if not e.check["ok"])
        summary = f"{ok} of {len(entries)} functions compiled"
        if checked:
            summary += f", {len(checked) - failed} of {len(checked)} checks passed"
        print(summary)
    if any(e.error for e in entries):
        return 2
    if any(e.check is not None and not e.check["ok"] for e in entries):
        return 1
    return 0


def cmd_grad(args: argparse.Namespace) -> int:
    """The backward program of one function: printed as script, tensorized, checked."""
    from .autodiff import grad
    from .numgrad import gradcheck
    from .script import ScriptError

    funcs, errors = parse_file_lenient(args.file)
    for e in errors:
        if e.name in (None, args.func, args.backward):
            raise BadInput(str(e))
    if args.func not in funcs:
        raise BadInput(f"{args.file}: no function named {args.func}")
    forward = funcs[args.func]
    wrt = [w.strip() for w in args.wrt.split(",") if w.strip()]
    try:
        if args.backward:
            if args.backward not in funcs:
                raise BadInput(f"{args.file}: no function named {args.backward}")
            backward = funcs[args.backward]
        else:
            backward = grad(forward, wrt, output=args.output)
        live = sys.stderr.isatty()

        def progress(label: str) -> None:  # central differences take two runs per element
            if live:
                sys.stderr.write(f"\r\033[Kgradcheck {label}")
                sys.stderr.flush()

        checked = gradcheck(forward, backward, wrt, output=args.output, progress=progress) \
            if args.check else None
        if live and args.check:
            sys.stderr.write("\r\033[K")
    except (ScriptError, ValueError) as e:
        raise BadInput(str(e) if isinstance(e, ScriptError) else f"{args.file}:{args.func}: {e}") from None
    check_json = None if checked is None else {
        "ok": checked.ok, "tol": checked.tol, "message": checked.message(),
        "buffers": [{"name": b.name, "rel_error": b.rel_error, "worst_index": list(b.worst_index),
                     "numeric": b.numeric, "backward": b.analytic, "checked": b.checked}
                    for b in checked.buffers]}
    entries: list[Entry] = []
    if args.tensorize:
        opts = Options(library=None if args.target == "none" else load_intrinsics(args),
                       check=args.check, explain=args.explain, threads=args.threads)
        entries = [process(Unit(args.file, backward.name, func=backward), opts)]
        for e in entries:
            if e.error:
                print(e.error, file=sys.stderr)
    if args.json:
        json.dump({"forward": forward.name, "backward": backward.name, "wrt": wrt,
                   "script": show(backward), "gradcheck": check_json,
                   "functions": [e.to_json() for e in entries]}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif args.tensorize:
        print(format_table(entries, args.explain))
    else:
        print(show(backward))
    if checked is not None and not args.json:
        print(("# gradcheck: " if not args.tensorize else "gradcheck: ") + checked.message())
    if any(e.error for e in entries):
        return 2
    if (checked is not None and not checked.ok) or any(e.check is not None and not e.check["ok"] for e in entries):
        return 1
    return 0


def _writable(path: Optional[str], what: str) -> None:
    """Refuse an output path whose folder does not exist before any work is done."""
    if path is None:
        return
    target = Path(path)
    if target.is_dir():
        raise BadInput(f"{path}: cannot write the {what} there: it is a folder")
    if not target.parent.is_dir():
        raise BadInput(f"{path}: cannot write the {what}: no folder {target.parent}")


def cmd_bench(args: argparse.Namespace) -> int:
    from .tools import bench

    _writable(args.json, "results")
    _writable(args.plot, "plot")
    if args.onnxruntime:
        try:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
        except ImportError:
            raise BadInput("--onnxruntime needs ONNX Runtime: pip install 'tensorize[onnx]'") from None
    units = load_units(args.paths, args.func)
    for u in units:
        if u.error:
            print(u.error, file=sys.stderr)
    library = load_intrinsics(args)
    good = [u for u in units if u.func is not None]
    failed = any(u.error for u in units)
    live = sys.stderr.isatty()
    for line in bench.blas_report():
        print(line, file=sys.stderr)
    results = []
    for k, u in enumerate(good):
        if live:
            sys.stderr.write(f"\r\033[K[{k}/{len(good)}] {u.func.name}")
            sys.stderr.flush()
        try:  # as in ``run``, a function that fails is reported and the others go on
            chosen = None
            if args.target != "none":
                from .pipeline import tensorize

                with using(Budgets()):
                    chosen = tensorize(u.func, library).func
            results.append(bench.bench_one(u.func, u.file, args.threads, args.runs, chosen=chosen,
                                           onnxruntime=args.onnxruntime))
        except BudgetError as e:  # as in ``run``: the function's error, the others go on
            if live:
                sys.stderr.write("\r\033[K")
            print(f"{u.file}:{u.name}: {e}", file=sys.stderr)
            failed = True
        except Exception as e:
            if live:
                sys.stderr.write("\r\033[K")
            print(f"{u.file}:{u.name}: internal error: {type(e).__name__}: {e}", file=sys.stderr)
            failed = True
    if live:
        sys.stderr.write("\r\033[K")
    print(bench.format_table(results))
    if args.json:
        try:
            Path(args.json).write_text(json.dumps(bench.to_json(results), indent=2) + "\n")
        except OSError as e:  # e.g. no permission, or the folder went away meanwhile
            raise BadInput(f"{args.json}: cannot write the results: {e.strerror or e}") from None
    if args.plot:
        try:
            if not bench.plot(results, args.plot):
                print("note: --plot needs matplotlib (pip install 'tensorize[plot]'); no plot written",
                      file=sys.stderr)
        except (OSError, ValueError) as e:  # ValueError: an image format matplotlib does not know
            raise BadInput(f"{args.plot}: cannot write the plot: {getattr(e, 'strerror', None) or e}") from None
    return 2 if failed else 0


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {text!r}") from None
    if n <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {n}")
    return n


def _threads(text: str) -> int:
    from .runtime import MAX_THREADS

    n = _positive(text)
    if n > MAX_THREADS:
        raise argparse.ArgumentTypeError(f"at most {MAX_THREADS} threads, not {n}")
    return n


def _strassen(text: str) -> str:
    from .rules.strassen import MAX_LEVELS

    if text in ("auto", "off"):
        return text
    if text.isdigit() and int(text) <= MAX_LEVELS:
        return text
    raise argparse.ArgumentTypeError(f"expected auto, off or a number of levels up to {MAX_LEVELS}, "
                                     f"not {text!r}")


def _rules_off(text: str) -> frozenset:
    """``-strassen,-inline``: the rule families to turn off, each named with a leading ``-``."""
    from .rules import checked_off

    names = [n.strip() for n in text.split(",") if n.strip()]
    kept = [n for n in names if not n.startswith("-")]
    if kept or not names:
        raise argparse.ArgumentTypeError(f"expected -NAME,... (the families to turn off), not {text!r}")
    try:
        return checked_off(n[1:] for n in names)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _budget(text: str) -> str:
    try:
        Budgets().with_option(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


class _Parser(argparse.ArgumentParser):
    """argparse with bad options reported as one line (exit 2), not a usage block first."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="tensorize", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="verify, analyse, compile (and check) every function of scripts")
    run.add_argument("paths", nargs="+", metavar="PATH", help="script files or folders of scripts")
    run.add_argument("--func", metavar="NAME", help="only this function")
    run.add_argument("--target", choices=TARGETS, default="host",
                     help="intrinsic library to map onto; none compiles plain loops")
    run.add_argument("--intrinsics", metavar="NAME,...", help="pick intrinsics by name")
    run.add_argument("--intrinsics-file", metavar="PATH", help="a Python module registering intrinsics")
    run.add_argument("--emit", choices=("script", "llvm", "asm"), help="print the program instead of a report")
    run.add_argument("--check", action="store_true", help="compare compiled results with the interpreter")
    run.add_argument("--explain", action="store_true", help="say why uncovered nests match no intrinsic")
    run.add_argument("--json", action="store_true", help="one JSON object on stdout")
    run.add_argument("-v", "--verbose", action="store_true",
                     help="a block per function: buffers, loop classes, intrinsics, timings")
    run.add_argument("--strassen", type=_strassen, default="auto", metavar="auto|off|N")
    run.add_argument("--threads", type=_threads, metavar="N", help="threads for parallel loops")
    run.add_argument("--rules", type=_rules_off, metavar="-NAME,...",
                     help="turn rule families off by name (loops, algebra, pack-operand, "
                          "pack-panel, inline, strassen)")
    run.add_argument("--budget", type=_budget, action="append", metavar="NAME=N",
                     help=f"raise or lower a stage's budget ({', '.join(Budgets.names())}); repeatable")
    run.set_defaults(handler=cmd_run)

    intr = sub.add_parser("intrinsics", help="list registered intrinsics and their semantics")
    intr.add_argument("--target", default="all", metavar="T",
                      help="host, all, or an ISA name such as x86-avx2 (default: all)")
    intr.add_argument("--intrinsics-file", metavar="PATH", help="a Python module registering intrinsics")
    intr.add_argument("--bench", action="store_true",
                      help="measure each native intrinsic's throughput against the FMA peak")
    intr.set_defaults(handler=cmd_intrinsics)

    from .fuzz import properties

    fuzz = sub.add_parser("fuzz", help="fuzz matcher completeness and soundness with hypothesis")
    properties.add_arguments(fuzz)
    fuzz.set_defaults(handler=properties.main)

    bench = sub.add_parser("bench", help="time compiled functions against numpy")
    bench.add_argument("paths", nargs="+", metavar="PATH")
    bench.add_argument("--func", metavar="NAME", help="only this function")
    bench.add_argument("--json", metavar="FILE", help="write the results as JSON")
    bench.add_argument("--plot", metavar="FILE.png", help="draw the results (needs matplotlib)")
    bench.add_argument("--target", choices=TARGETS, default="host",
                       help="intrinsic library to map onto first; none times plain loops")
    bench.add_argument("--intrinsics", metavar="NAME,...", help="pick intrinsics by name")
    bench.add_argument("--intrinsics-file", metavar="PATH", help="a Python module registering intrinsics")
    bench.add_argument("--threads", type=_threads, metavar="N")
    bench.add_argument("--runs", type=_positive, default=20, metavar="N", help="at least this many timed runs")
    bench.add_argument("--onnxruntime", action="store_true",
                       help="also time ONNX Runtime on matrix products (pip install 'tensorize[onnx]')")
    bench.set_defaults(handler=cmd_bench)
    gr = sub.add_parser("grad", help="the backward program of a function (reverse-mode differentiation)")
    gr.add_argument("file", metavar="FILE", help="a script file")
    gr.add_argument("--func", required=True, metavar="NAME", help="the forward function")
    gr.add_argument("--wrt", required=True, metavar="BUF[,BUF]", help="the inputs to differentiate with respect to")
    gr.add_argument("--output", metavar="BUF", help="the output to differentiate, when the function writes several")
    gr.add_argument("--backward", metavar="NAME",
                    help="check this hand-written backward of the same file instead of deriving one")
    gr.add_argument("--check", action="store_true",
                    help="compare the gradients with central differences in float64 (exit 1 on a mismatch)")
    gr.add_argument("--emit", choices=("script",), default="script", help="print the backward program (default)")
    gr.add_argument("--tensorize", action="store_true",
                    help="tensorize and compile the backward program; report as tensorize run does")
    gr.add_argument("--target", choices=TARGETS, default="host", help="intrinsic library for --tensorize")
    gr.add_argument("--intrinsics", metavar="NAME,...", help="pick intrinsics by name")
    gr.add_argument("--intrinsics-file", metavar="PATH", help="a Python module registering intrinsics")
    gr.add_argument("--threads", type=_threads, metavar="N", help="threads for parallel loops")
    gr.add_argument("--explain", action="store_true", help="with --tensorize: why uncovered nests match nothing")
    gr.add_argument("--json", action="store_true", help="one JSON object on stdout")
    gr.set_defaults(handler=cmd_grad)
    return p


def _attached(argv: list[str]) -> list[str]:
    """``--rules -inline`` as ``--rules=-inline``: argparse reads a value that starts with a
    dash as an option of its own."""
    out, i = [], 0
    while i < len(argv):
        if argv[i] == "--rules" and i + 1 < len(argv):
            out.append(f"--rules={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(_attached(sys.argv[1:] if argv is None else list(argv)))
    handlers = _catch_signals()
    try:
        return args.handler(args)
    except BadInput as e:
        print(e, file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        if isinstance(e, Interrupted) or _signals:
            print("interrupted", file=sys.stderr)
            return 128 + (_signals[-1] if _signals else signal.SIGINT)
        print("error: KeyboardInterrupt raised by the code run (a plugin?)", file=sys.stderr)
        return 2
    except SystemExit as e:  # argparse is done: this is code (a plugin) calling sys.exit
        print(f"error: sys.exit({e.code!r}) called by the code run (a plugin?)", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
    finally:
        for signum in handlers:  # a second signal must not cut the cleanup short
            signal.signal(signum, signal.SIG_IGN)
        saturation = sys.modules.get(f"{__package__}.saturate")
        if saturation is not None:  # not only at exit: main may run in a longer-lived process
            saturation.shutdown()
        for signum, old in handlers.items():
            signal.signal(signum, old)
        _signals.clear()


def _catch_signals() -> dict:
    """SIGTERM stops the command like SIGINT: cleanly, the worker killed, a status of
    128 + the signal. Returns the handlers to restore."""
    old = {}
    try:
        for signum in (signal.SIGINT, signal.SIGTERM):
            old[signum] = signal.signal(signum, _on_signal)
    except ValueError:  # not the main thread: signals stay with whoever owns them
        pass
    return old


if __name__ == "__main__":
    sys.exit(main())
