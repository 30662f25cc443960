"""The ``tensorize`` command line (SPEC §4): the arguments, the commands (``run``,
``intrinsics``, ``fuzz``, ``bench``, ``grad``, ``rules``), the exit status.
What a run does with each function is ``tools/run.py``'s.

Exit status: 0 done, 1 a ``--check`` failure, 2 bad input (one line per problem on
stderr, never a traceback). One bad function does not stop the others: its entry
carries ``"error"``. A function over one of its budgets (``budgets.Budgets``, raised with
``--budget NAME=N``) is bad input too: its error names the budget, exit status 2. SIGINT and
SIGTERM stop the command cleanly (the saturation worker is killed): exit status 130 and 143
(128 + the signal), ``interrupted`` on stderr.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import signal
import sys
from functools import partial
from pathlib import Path
from typing import Optional

from .budgets import BudgetError, Budgets, using
from .target import TARGETS as ISAS
from .tools import campaign
from .tools.campaign import CampaignError
from .script import parse_file_lenient, show
from .tools.run import (BadInput, Entry, Interrupted, Options, Reported, Unit, format_entry,
                        format_table, in_process, load_intrinsics, load_units, on_signal,
                        prepare_bench, process, run_units, signals)

# What --target takes: this CPU's library, an ISA's (native here or emulated), every
# registered intrinsic, or none (plain loops).
TARGETS = ("host", *ISAS, "all", "none")


# ---------------------------------------------------------------------------
# commands


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


def _program_rules(path: Optional[str]) -> tuple:
    """The rules a ``--rules-file`` registers (loaded here once, so that a bad file is one
    clear error before any work), or none."""
    if not path:
        return ()
    from . import program
    from .rules import matrices

    try:
        return matrices.user_rules(path)
    except program.RuleError as e:
        raise BadInput(str(e)) from None


def cmd_rules(args: argparse.Namespace) -> int:
    """The rewrite rules in force: the families, and the rules of the program-level e-graph
    (built-in, and a ``--rules-file``'s); ``--check`` tests each of the latter on random
    instances (exit status 1 when one is unsound)."""
    from . import program, rules
    from .rules import matrices

    mine = _program_rules(args.rules_file)
    graph = matrices.built_in() + list(mine)
    rows = []
    for r in graph:
        lhs, rhs = _sides_text(r)
        rows.append({"name": r.name, "family": "matmul", "origin": r.origin,
                     "rule": f"{lhs} -> {rhs}", "why": r.why})
    # a rule over accumulations, conditioned on a fact of the dependence analysis: --check
    # samples programs of a temporary and its readers (fuzz/rules.check_inline)
    rows.append({"name": program.INLINE, "family": "matmul", "origin": "built-in",
                 "rule": "T += v; rest -> rest with T read as v, where temporary(T)",
                 "why": program.INLINE_WHY})
    verdicts = {}
    if args.check:
        from .fuzz import rules as soundness

        checks = [(r.name, partial(soundness.check, r)) for r in graph]
        for name, check in checks + [(program.INLINE, soundness.check_inline)]:
            verdicts[name] = v = check(args.examples)
            if not args.json:
                print(("ok    " if v.ok else "FAIL  ") + v.message, file=sys.stdout if v.ok else sys.stderr)
    if args.json:
        for row in rows:
            if row["name"] in verdicts:
                v = verdicts[row["name"]]
                row["check"] = {"ok": v.ok, "examples": v.examples, "message": v.message}
        json.dump({"families": [{"name": f.name, "kind": f.kind, "rules": f.rules}
                                for f in rules.FAMILIES], "rules": rows}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif not args.check:
        print("rule families (turn one off with tensorize run --rules -NAME):")
        for f in rules.FAMILIES:
            print(f"  {f.name:<14} {f.kind:<13} {f.rules}")
        print("\nrules of the program-level e-graph (family matmul; --rules -NAME turns a "
              "built-in one off):")
        for row in rows:
            origin = "" if row["origin"] == "built-in" else f"  [{row['origin']}]"
            print(f"  {row['name']:<16} {row['rule']}{origin}\n  {'':<16} {row['why']}")
    return 1 if any(not v.ok for v in verdicts.values()) else 0


def _sides_text(r) -> tuple[str, str]:
    """A rule's two sides in the constructors' notation, over its parameters' names."""
    from . import program

    lhs, rhs = program.sketch(r)
    return program.text(lhs), program.text(rhs)


def cmd_run(args: argparse.Namespace) -> int:
    from . import saturate

    here = args.target != "none" and args.ray is None
    if here:  # the saturation worker boots while the intrinsics and scripts load
        saturate.prestart()
    library = load_intrinsics(args)
    budgets = Budgets()
    for option in args.budget or []:
        budgets = budgets.with_option(option)  # validated by _budget already
    opts = Options(library=None if args.target == "none" else library, check=args.check,
                   emit=args.emit, explain=args.explain, threads=args.threads,
                   strassen=int(args.strassen) if args.strassen.isdigit() else args.strassen,
                   budgets=budgets, rules_off=args.rules or frozenset(),
                   rules_file=args.rules_file)
    _program_rules(args.rules_file)  # a bad file: one error, before any work
    units = load_units(args.paths, args.func)
    if here and not in_process(units, args):
        saturate.shutdown()  # the functions go to workers, each with a saturation worker
    entries = run_units(units, opts, args)
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


def cmd_fuzz(args: argparse.Namespace) -> int:
    """``tensorize fuzz``: the campaign ``rewrite.fuzz.properties`` plans and reports, its
    units run here or on workers."""
    from .fuzz import properties

    def execute(work, units):
        return campaign.run(work, units, jobs=args.jobs or campaign.default_jobs(), ray=args.ray,
                            budget=args.unit_timeout, what="unit",
                            failed=lambda r: getattr(r, "failure", None) is not None)

    return properties.main(args, execute)


def cmd_grad(args: argparse.Namespace) -> int:
    """The backward program of one function: printed as script, tensorized, checked."""
    from . import saturate
    from .autodiff import grad, normalised
    from .numgrad import gradcheck
    from .script import ScriptError

    if args.tensorize and args.target != "none":  # boots while the backward is derived
        saturate.prestart()
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

        checked = gradcheck(forward, backward, wrt, output=args.output, progress=progress,
                            perturbed=normalised(forward)) if args.check else None
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
    library = None if args.target == "none" or not (args.tensorize or args.bench) else load_intrinsics(args)
    if args.tensorize:
        opts = Options(library=library, check=args.check, explain=args.explain, threads=args.threads)
        entries = [process(Unit(args.file, backward.name, func=backward), opts)]
        for e in entries:
            if e.error:
                print(e.error, file=sys.stderr)
    timed = _bench_grad(forward, backward, library, args) if args.bench else None
    if args.json:
        json.dump({"forward": forward.name, "backward": backward.name, "wrt": wrt,
                   "script": show(backward), "gradcheck": check_json,
                   "functions": [e.to_json() for e in entries],
                   **({"bench": timed[0]} if timed else {})}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        if args.tensorize:
            print(format_table(entries, args.explain))
        if timed:
            print(timed[1])
        if not (args.tensorize or timed):
            print(show(backward))
    if checked is not None and not args.json:
        print(("# gradcheck: " if not args.tensorize else "gradcheck: ") + checked.message())
    if any(e.error for e in entries):
        return 2
    if (checked is not None and not checked.ok) or any(e.check is not None and not e.check["ok"] for e in entries):
        return 1
    return 0


def _bench_grad(forward, backward, library, args) -> tuple[dict, str]:
    """The forward and the backward timed on the same inputs, each tensorized on ``library``
    (plain loops without one) and compiled with ``--threads``: their results as JSON and as
    a table with the backward's time over the forward's."""
    from .pipeline import tensorize
    from .tools import bench

    for line in bench.blas_report():
        print(line, file=sys.stderr)
    results = []
    for func in (forward, backward):
        with using(Budgets()):
            chosen = tensorize(func, library).func if library is not None else func
        results.append(bench.bench_one(func, args.file, args.threads, args.runs, chosen=chosen))
    ratio = results[1].median_s / results[0].median_s if results[0].median_s > 0 else None
    text = bench.format_table(results)
    if ratio is not None:
        text += f"\nbackward / forward: {ratio:.2f} (the backward's median time over the forward's)"
    return {**bench.to_json(results), "backward_over_forward": ratio}, text


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
    if args.turns and args.threads != 1:
        raise BadInput("--turns compares one thread with one (each call timed on the thread's "
                       "CPU clock): give --threads 1")
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
    if args.turns:
        print(f"timing in {args.turns} turns, each call on the thread's CPU clock, numpy's BLAS "
              "on one thread", file=sys.stderr)
    if args.offset is not None:
        print(f"every input {args.offset} bytes past a cache line", file=sys.stderr)
    # tensorize and compile on workers (the disk cache keeps what they compiled); time here,
    # one function at a time, so that no measurement shares the machine with another
    prepared = prepare_bench(good, args) if args.target != "none" else [None] * len(good)
    results = []
    for k, (u, chosen) in enumerate(zip(good, prepared)):
        if live:
            sys.stderr.write(f"\r\033[K[{k}/{len(good)}] {u.func.name}")
            sys.stderr.flush()
        try:  # as in ``run``, a function that fails is reported and the others go on
            if isinstance(chosen, str):  # what kept it from being tensorized
                raise Reported(chosen)
            if chosen is None and args.target != "none":
                from .pipeline import tensorize

                with using(Budgets()):
                    chosen = tensorize(u.func, library).func
            results.append(bench.bench_one(u.func, u.file, args.threads, args.runs, chosen=chosen,
                                           onnxruntime=args.onnxruntime, turns=args.turns or 0,
                                           offset=args.offset))
        except Reported as e:
            if live:
                sys.stderr.write("\r\033[K")
            print(e, file=sys.stderr)
            failed = True
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


def _campaign_arguments(parser: argparse.ArgumentParser, unit: str, budget: float) -> None:
    """--jobs, --ray and the budget of one unit of work (SPEC §4)."""
    parser.add_argument("--jobs", type=_positive, default=None, metavar="N",
                        help="worker processes (default: the number of cores); the output is "
                             "the same whatever N, timings aside")
    parser.add_argument("--ray", metavar="auto|ADDRESS",
                        help="run on a Ray cluster: auto (this machine's, else a local one) or "
                             "its address (pip install 'tensorize[cluster]')")
    parser.add_argument("--unit-timeout", type=_seconds, default=budget, metavar="SECONDS",
                        help=f"a worker still on one {unit} after this long is stopped and the "
                             f"{unit} reported lost (default {budget:g})")


def _seconds(text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, not {text!r}") from None
    if not x > 0 or x == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, not {text!r}")
    return x


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
                     help="a block per function: buffers, loop classes, intrinsics, timings, "
                          "what each e-graph did")
    run.add_argument("--strassen", type=_strassen, default="auto", metavar="auto|off|N")
    run.add_argument("--threads", type=_threads, metavar="N", help="threads for parallel loops")
    from .rules import FAMILIES

    run.add_argument("--rules", type=_rules_off, metavar="-NAME,...",
                     help="turn rule families off by name "
                          f"({', '.join(f.name for f in FAMILIES)})")
    run.add_argument("--rules-file", metavar="PATH",
                     help="a Python module adding rules to the program-level e-graph "
                          "(tensorize rules --check tests them)")
    run.add_argument("--budget", type=_budget, action="append", metavar="NAME=N",
                     help=f"raise or lower a stage's budget ({', '.join(Budgets.names())}); repeatable")
    _campaign_arguments(run, "function", 900)
    run.set_defaults(handler=cmd_run)

    intr = sub.add_parser("intrinsics", help="list registered intrinsics and their semantics")
    intr.add_argument("--target", default="all", metavar="T",
                      help="host, all, or an ISA name such as x86-avx2 (default: all)")
    intr.add_argument("--intrinsics-file", metavar="PATH", help="a Python module registering intrinsics")
    intr.add_argument("--bench", action="store_true",
                      help="measure each native intrinsic's throughput against the FMA peak")
    intr.set_defaults(handler=cmd_intrinsics)

    from .fuzz import options as fuzz_options

    fuzz = sub.add_parser("fuzz", help="fuzz matcher completeness and soundness with hypothesis")
    fuzz_options.add_arguments(fuzz)
    _campaign_arguments(fuzz, "unit of examples", 900)
    fuzz.set_defaults(handler=cmd_fuzz)

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
    bench.add_argument("--turns", type=_positive, metavar="N",
                       help="time ours and each peer in N rounds in which they take turns, on the "
                            "thread's CPU clock, numpy's BLAS on one thread (for a machine whose "
                            "speed drifts; needs --threads 1); adds the ratio of least times and, "
                            "for integer work on an AVX2 host without VNNI, the share of the "
                            "vpmaddwd ceiling (its loop taking a turn in each round)")
    bench.add_argument("--onnxruntime", action="store_true",
                       help="also time ONNX Runtime on the layers it has an operator for: matrix products, "
                            "dense layers with bias and ReLU, 2-D convolutions (pip install 'tensorize[onnx]')")
    bench.add_argument("--offset", type=int, choices=(0, 16, 32, 48), metavar="BYTES",
                       help="start every input BYTES (0, 16, 32 or 48) past a 64-byte cache line, "
                            "the same for ours and the peers (default: where numpy's allocator put "
                            "it, which moves from run to run; a kernel reading a matrix in place "
                            "can run 1.2-1.5x faster on a line)")
    _campaign_arguments(bench, "function", 900)
    bench.set_defaults(handler=cmd_bench)
    gr = sub.add_parser("grad", help="the backward program of a function (reverse-mode differentiation)")
    gr.add_argument("file", metavar="FILE", help="a script file")
    gr.add_argument("--func", required=True, metavar="NAME", help="the forward function")
    gr.add_argument("--wrt", required=True, metavar="BUF[,BUF]",
                    help="the inputs to differentiate with respect to (a buffer the function updates "
                         "in place: its value on entry, which the backward's parameter holds)")
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
    gr.add_argument("--bench", action="store_true",
                    help="time the forward and the backward, each tensorized for --target and "
                         "compiled, on the same inputs; numpy too where it has a counterpart")
    gr.add_argument("--runs", type=_positive, default=20, metavar="N",
                    help="with --bench: at least this many timed runs")
    gr.add_argument("--json", action="store_true", help="one JSON object on stdout")
    gr.set_defaults(handler=cmd_grad)

    rl = sub.add_parser("rules", help="the rewrite rules in force; --check tests their soundness")
    rl.add_argument("--rules-file", metavar="PATH", help="a Python module adding rules")
    rl.add_argument("--check", action="store_true",
                    help="interpret random instances of each rule's two sides and compare "
                         "(exit 1 on an unsound rule)")
    rl.add_argument("--examples", type=_positive, default=100, metavar="N",
                    help="random instances per rule (default 100)")
    rl.add_argument("--json", action="store_true", help="one JSON object on stdout")
    rl.set_defaults(handler=cmd_rules)
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
        if getattr(args, "ray", None) is not None:
            campaign.check_ray()  # before any work: Ray is an optional extra
        return args.handler(args)
    except BadInput as e:
        print(e, file=sys.stderr)
        return 2
    except CampaignError as e:  # Ray missing or out of reach
        print(f"tensorize {args.command}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        if isinstance(e, Interrupted) or signals:
            print("interrupted", file=sys.stderr)
            return 128 + (signals[-1] if signals else signal.SIGINT)
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
        _watchdog.disarm()
        signals.clear()


# Python runs a signal handler between bytecodes only: a command stuck in native code (LLVM
# optimising a pathological kernel) would never see SIGINT or SIGTERM. A watchdog thread
# hears the signal at once (``signal.set_wakeup_fd``) and, when the command has not stopped
# cleanly this long after it, ends the process with the same status.
STOP_GRACE_SECONDS = 5.0


def _catch_signals() -> dict:
    """SIGTERM stops the command like SIGINT: cleanly, the worker killed, a status of
    128 + the signal; if it cannot stop within ``STOP_GRACE_SECONDS`` (native code), the
    watchdog ends it. Returns the handlers to restore."""
    old = {}
    try:
        for signum in (signal.SIGINT, signal.SIGTERM):
            old[signum] = signal.signal(signum, on_signal)
    except ValueError:  # not the main thread: signals stay with whoever owns them
        return old
    _watchdog.arm()
    return old


class _Watchdog:
    def __init__(self) -> None:
        self.pipe: Optional[tuple[int, int]] = None
        self.previous = -1

    def arm(self) -> None:
        import threading

        r, w = os.pipe()
        os.set_blocking(w, False)
        try:
            self.previous = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
        except ValueError:
            os.close(r)
            os.close(w)
            return
        self.pipe = (r, w)
        threading.Thread(target=self._watch, args=(r,), daemon=True).start()

    def _watch(self, r: int) -> None:
        import time

        try:
            while True:
                got = os.read(r, 1)
                if not got:  # disarmed: the write end was closed
                    return
                if got[0] in (signal.SIGINT, signal.SIGTERM):
                    break  # another signal with a Python handler (a pool's SIGCHLD): not ours
            time.sleep(STOP_GRACE_SECONDS)
            if self.pipe is None or self.pipe[0] != r:
                return  # the command stopped cleanly meanwhile
            os.write(2, b"interrupted (stopped inside native code)\n")
            os._exit(128 + got[0])
        except OSError:
            return
        finally:
            try:
                os.close(r)
            except OSError:
                pass

    def disarm(self) -> None:
        if self.pipe is None:
            return
        r, w = self.pipe
        self.pipe = None
        signal.set_wakeup_fd(self.previous)
        os.close(w)  # the watching thread reads end-of-file, closes its end and returns


_watchdog = _Watchdog()


def command() -> int:
    """The ``tensorize`` executable: ``main`` on the process's arguments. The process ends
    right after, so the objects it made (programs, plans, e-graph terms, LLVM wrappers) are
    frozen out of the garbage collector: the collection the interpreter runs as it shuts down
    would walk all of them for memory the system reclaims anyway (0.3-0.4 s after a two-level
    Strassen program at 2048). Objects still freed as their references go; ``main`` has
    stopped the saturation worker and the pools."""
    status = main()
    gc.freeze()
    return status


if __name__ == "__main__":
    sys.exit(command())
