"""Equality saturation with budgets, in a worker process that can be stopped.

egglog's ``run`` has no node limit or timeout of its own (DESIGN.md), so the schedule is
phased -- algebra one iteration at a time with a size and clock check between iterations,
then the generated matching rules -- and the whole job runs in a separate process. The
parent waits at most ``Budget.hard_seconds``; past that the worker is killed and a fresh one
started for the next function. The worker's address space is capped (``Budget.memory_bytes``)
so a runaway e-graph fails there, not here. ``EGraph`` objects do not pickle, so the two
processes exchange our IR.

The worker runs exactly the ``rewrite`` package this process loaded: it starts isolated
(``python -I``: no working directory, no ``PYTHON*`` variables on the import path) and is given
this process's import path explicitly, so a ``select.py`` or ``egglog.py`` next to the user's
script is never imported. It dies with its parent (``PR_SET_PDEATHSIG`` on Linux; the parent
also kills it at exit and when interrupted).

The worker runs other requests too (``call``): any picklable callable of the ``rewrite``
package, such as the program-level e-graph's saturation and extraction (``program.py``), under
the same budget; a budget stop there raises ``Stopped``.

Budget stops of a ``Job`` are reported, not raised: the worker killed past ``hard_seconds``, or
out of memory. Anything else -- the worker cannot start or import, breaks the protocol, raises, or
dies -- raises ``WorkerError``, which the caller reports as that function's error.
"""

from __future__ import annotations

import atexit
import ctypes
import json
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Optional

from .ir import Expr, is_float
from .match import BodyMatch, Pattern


@dataclass(frozen=True)
class Budget:
    iterations: int = 12
    enodes: int = 200_000
    seconds: float = 5.0  # soft: checked between iterations
    hard_seconds: float = 30.0  # the worker is killed past this
    memory_bytes: int = 2 << 30


@dataclass(frozen=True)
class SaturationReport:
    iterations: int
    enodes: int
    stop_reason: str  # saturated | iteration limit | node limit | time limit | memory limit
    #                   | killed: over N s | killed: memory limit
    seconds: float

    def to_json(self) -> dict:
        return {"iterations": self.iterations, "enodes": self.enodes,
                "stop_reason": self.stop_reason, "seconds": self.seconds}


@dataclass(frozen=True)
class Job:
    bodies: tuple[Expr, ...]
    patterns: tuple[Pattern, ...]
    budget: Budget = field(default_factory=Budget)
    rules_off: frozenset[str] = frozenset()  # rule families left out (rules/__init__.py)


# ---------------------------------------------------------------------------
# the work itself (runs in the worker)


_RELATIONS: dict[int, object] = {}
_COUNTER = [0]


def _relation(arity: int):
    """``match_n{arity}(nest, intrinsic, load ids..., scale)``, declared once per process."""
    from egglog import f64, i64, relation

    if arity not in _RELATIONS:
        _RELATIONS[arity] = relation(f"match_n{arity}", i64, i64, *([i64] * arity), f64)
    return _RELATIONS[arity]


def _root():
    from egglog import i64, relation

    from .egraph import Term

    if "root" not in _RELATIONS:
        _RELATIONS["root"] = relation("nest_root", Term, i64)
    return _RELATIONS["root"]


_MATCH_RULES: dict = {}  # patterns -> their ruleset, built once a process (a library's patterns
# are the same in every job; building the rules costs about 0.1 s)


def _match_rules(patterns: tuple[Pattern, ...]):
    """One rule per intrinsic, one for its constant-scaled form (``2.0 * A * B``; an integer
    constant for an integer body, ``2 * i32(A) * i32(B)``), and one for its negation (``-(A *
    B)``, what ``C -= A * B`` accumulates), read as the scale -1: the same value, since
    multiplying by -1 is exact as negation is. (``C -= 0.5 * A * B`` is the scaled form once
    the algebra has moved the sign into the constant, ``rules/algebra.py``.)"""
    if patterns not in _MATCH_RULES:
        if len(_MATCH_RULES) > 64:  # a long campaign over many libraries: bounded
            _MATCH_RULES.clear()
        _MATCH_RULES[patterns] = _build_match_rules(patterns)
    return _MATCH_RULES[patterns]


# the largest integer constant a match's scale (a double) holds exactly
_EXACT_INT = 2 ** 53


def _build_match_rules(patterns: tuple[Pattern, ...]):
    from egglog import String, eq, f64, i64, rule, ruleset, var

    from .egraph import Term, pattern

    _COUNTER[0] += 1
    rules = ruleset(name=f"match_{_COUNTER[0]}")
    root = _root()
    for k, p in enumerate(patterns):
        xs = [var(f"x{j}", i64) for j in range(len(p.inputs))]
        body = pattern(p.value, {name: Term.load(x) for name, x in zip(p.inputs, xs)})
        rel = _relation(len(xs))
        t, u = var("t", Term), var("u", Term)
        n, s, v, dt = var("n", i64), var("s", f64), var("v", i64), var("dt", String)
        rules.append(rule(root(t, n), eq(t).to(body)).then(rel(n, i64(k), *xs, f64(1.0))))
        if is_float(p.value.dtype):
            rules.append(rule(root(t, n), eq(t).to(Term.fconst(s, dt) * u), eq(u).to(body))
                         .then(rel(n, i64(k), *xs, s)))
        else:  # wrap-around integers: the scaled sum is the sum of the scaled terms, exactly;
            # a constant a double holds exactly, as the match keeps its scale in one
            rules.append(rule(root(t, n), eq(t).to(Term.iconst(v, dt) * u), eq(u).to(body),
                              v <= i64(_EXACT_INT), v >= i64(-_EXACT_INT))
                         .then(rel(n, i64(k), *xs, f64.from_i64(v))))
        rules.append(rule(root(t, n), eq(t).to(-u), eq(u).to(body))
                     .then(rel(n, i64(k), *xs, f64(-1.0))))
    return rules


def run_job(job: Job) -> tuple[list[BodyMatch], SaturationReport]:
    """Saturate the bodies under the ruleset families (``rules/__init__.py``: the algebra),
    then match every pattern."""
    from egglog import EGraph, get_callable_args, get_literal_value, i64

    from . import rules
    from .egraph import Encoder

    schedule = None  # the ruleset families in turn, once per iteration
    for family in rules.families(rules.RULESET, job.rules_off):
        (ruleset,) = family.load()
        schedule = ruleset if schedule is None else schedule + ruleset
    t0 = time.perf_counter()
    eg = EGraph()
    enc = Encoder()
    root = _root()
    for n, body in enumerate(job.bodies):
        eg.register(root(enc.encode(body), i64(n)))
    b = job.budget
    stop, iterations, size = "iteration limit", 0, 0
    if schedule is None:  # every ruleset family is off: the bodies are matched as written
        stop, size = "saturated", sum(sz for _, sz in eg.all_function_sizes())
    else:
        for iterations in range(1, b.iterations + 1):
            report = eg.run(schedule)
            size = sum(sz for _, sz in eg.all_function_sizes())
            if not report.updated:
                stop = "saturated"
                break
            if size > b.enodes:
                stop = "node limit"
                break
            if time.perf_counter() - t0 > b.seconds:
                stop = "time limit"
                break
    matches: list[BodyMatch] = []
    if job.patterns:
        eg.run(_match_rules(job.patterns))
        arities = sorted({len(p.inputs) for p in job.patterns})
        for arity in arities:
            for key in eg.function_values(_relation(arity)):
                vals = [get_literal_value(a) for a in get_callable_args(key)]
                nest, k, ids, scale = vals[0], vals[1], vals[2:-1], vals[-1]
                if len(job.patterns[k].inputs) != arity:
                    continue
                matches.append(BodyMatch(nest, job.patterns[k].name,
                                         tuple(enc.loads[i] for i in ids), float(scale)))
        size = sum(sz for _, sz in eg.all_function_sizes())
    matches.sort(key=lambda m: (m.nest, m.intrinsic, m.scale, repr(m.loads)))
    return matches, SaturationReport(iterations, size, stop, time.perf_counter() - t0)


# ---------------------------------------------------------------------------
# the worker process: ``python -m rewrite.saturate``, length-prefixed pickles on stdin/stdout
# (a plain subprocess rather than multiprocessing, which would re-import the caller's main
# module in the child)


def _send(stream, obj) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(struct.pack("<Q", len(data)) + data)
    stream.flush()


def _recv(stream):
    head = stream.read(8)
    if len(head) < 8:
        raise EOFError
    (n,) = struct.unpack("<Q", head)
    data = stream.read(n)
    if len(data) < n:
        raise EOFError
    return pickle.loads(data)


def _serve(argv: list[str]) -> None:
    """The worker's loop: ``argv`` is ``[memory_bytes, parent_pid]``."""
    memory = int(argv[0]) if argv else Budget().memory_bytes
    _die_with_parent(int(argv[1]) if len(argv) > 1 else os.getppid())
    # a Ctrl-C at the terminal reaches the whole process group: the parent decides, and
    # kills this process if it stops
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    except (ImportError, ValueError, OSError):
        pass
    out, inp = sys.stdout.buffer, sys.stdin.buffer
    sys.stdout = sys.stderr  # nothing else may write into the channel
    # what every saturation imports, imported before the first request arrives
    import egglog  # noqa: F401

    from . import egraph, rules  # noqa: F401
    while True:
        try:
            job = _recv(inp)
        except EOFError:  # the parent closed the channel (or is gone)
            return
        try:
            _send(out, ("ok", run_job(job) if isinstance(job, Job) else job()))
        except MemoryError:
            _send(out, ("error", _MEMORY))
        except Exception as e:  # reported to the parent, which raises it there
            _send(out, ("error", f"{type(e).__name__}: {e}"))


_MEMORY = "memory limit"
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with_parent(parent: int) -> None:
    """Ask the kernel to kill this process when its parent dies (Linux), and leave at once
    if the parent is already gone. Elsewhere the parent's exit handler and the end of the
    job channel stop the worker."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:
        os._exit(0)


# Run in the worker by ``python -I -c``: put the import path the parent gave first, then
# import the server from there (so pickled results name the parent's rewrite.saturate).
_BOOT = ("import sys, json; sys.path[:] = json.loads(sys.argv[1]); "
         "from rewrite import saturate; saturate._serve(sys.argv[2:])")


def import_path() -> list[str]:
    """The worker's ``sys.path``: the folder holding this ``rewrite`` package first, then this
    process's path made absolute, without ``''`` and the working directory (unless
    ``rewrite`` itself lives there)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cwd = os.getcwd()
    path = [root]
    for entry in sys.path:
        if not isinstance(entry, str) or not entry:
            continue
        entry = os.path.abspath(entry)
        if entry != cwd and entry not in path:
            path.append(entry)
    return path


class WorkerError(RuntimeError):
    """The saturation worker failed for a reason other than a budget."""


class Stopped(Exception):
    """A request the worker ran stopped at a budget: ``reason`` says which (``killed: over N
    s``, ``killed: memory limit``, ``memory limit``); ``seconds`` it ran."""

    def __init__(self, reason: str, seconds: float):
        super().__init__(reason)
        self.reason, self.seconds = reason, seconds


class Worker:
    """A saturation process, started on first use and replaced when it has to be killed.
    Calls are serialized. The kernel kills the process when the thread that started it ends,
    so a call after that thread has ended starts a new one."""

    def __init__(self) -> None:
        self._proc: Optional[subprocess.Popen] = None
        self._memory = 0
        self._owner: Optional[threading.Thread] = None
        self._stderr = None  # a temporary file: the worker's stderr, read when it fails
        self._lock = threading.RLock()

    def command(self, memory_bytes: int) -> list[str]:
        return [sys.executable, "-I", "-c", _BOOT, json.dumps(import_path()), str(memory_bytes),
                str(os.getpid())]

    def _start(self, memory_bytes: int) -> None:
        try:
            self._stderr = tempfile.TemporaryFile()
            self._proc = subprocess.Popen(self.command(memory_bytes), stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, stderr=self._stderr)
        except OSError as e:
            self._proc = None
            raise WorkerError(f"cannot start the saturation worker ({sys.executable}): {e}") from None
        self._memory = memory_bytes
        self._owner = threading.current_thread()

    def stop(self) -> None:
        with self._lock:
            if self._proc is not None:
                self._proc.kill()
                self._proc.wait()
                for stream in (self._proc.stdin, self._proc.stdout):
                    try:
                        stream.close()
                    except OSError:
                        pass
            if self._stderr is not None:
                self._stderr.close()
            self._proc, self._stderr = None, None

    @property
    def pid(self) -> Optional[int]:
        """The worker's process id while one runs."""
        return self._proc.pid if self._proc is not None else None

    def _stderr_tail(self) -> str:
        """The last line the worker wrote on stderr (a traceback's last line names the error)."""
        if self._stderr is None:
            return ""
        self._stderr.seek(0, os.SEEK_END)
        self._stderr.seek(max(0, self._stderr.tell() - 4096))
        lines = self._stderr.read().decode(errors="replace").strip().splitlines()
        return lines[-1].strip() if lines else ""

    def _died(self, t0: float):
        """The worker closed the channel without an answer: out of memory is a budget stop
        (``Stopped``), anything else an error (``WorkerError``)."""
        try:
            status = self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            status = None
        tail = self._stderr_tail()
        self.stop()
        # an allocation past RLIMIT_AS aborts in egglog's allocator; the kernel's OOM
        # killer sends SIGKILL (which this process never sends to a running job)
        if "memory allocation" in tail or "MemoryError" in tail or status == -signal.SIGKILL:
            raise Stopped(f"killed: {_MEMORY}", time.perf_counter() - t0)
        how = (f"was killed by signal {-status}" if status is not None and status < 0 else
               f"exited with status {status}" if status is not None else "closed its channel")
        raise WorkerError(f"the saturation worker {how}" + (f": {tail}" if tail else ""))

    def run(self, job: Job) -> tuple[list[BodyMatch], SaturationReport]:
        """``job``'s matches and report; a budget stop is reported with no matches."""
        try:
            return self.call(job, job.budget)
        except Stopped as e:
            return [], SaturationReport(0, 0, e.reason, e.seconds)

    def call(self, request, b: Budget):
        """What ``request`` (a ``Job``, or a picklable callable) returns when the worker runs
        it within ``b.hard_seconds`` and ``b.memory_bytes``; ``Stopped`` past either."""
        with self._lock:
            try:
                return self._run(request, b)
            except Stopped:
                raise
            except BaseException:
                # an interrupt or error part way leaves the channel in an unknown state
                self.stop()
                raise

    def start(self, memory_bytes: int = Budget().memory_bytes) -> None:
        """Have a worker running under ``memory_bytes``: start one now unless one is, and
        return without waiting for it. It imports what saturation needs while this process
        goes on, instead of while a request waits for it (``prestart``)."""
        with self._lock:
            if self._proc is None or self._proc.poll() is not None \
                    or self._memory != memory_bytes or not self._owner.is_alive():
                self.stop()
                self._start(memory_bytes)

    def _run(self, job, b: Budget):
        self.start(b.memory_bytes)
        t0 = time.perf_counter()
        try:
            _send(self._proc.stdin, job)
        except (BrokenPipeError, OSError):
            return self._died(t0)
        ready, _, _ = select.select([self._proc.stdout], [], [], b.hard_seconds)
        if not ready:
            self.stop()
            raise Stopped(f"killed: over {b.hard_seconds:g} s", time.perf_counter() - t0)
        try:
            reply = _recv(self._proc.stdout)
        except (EOFError, OSError):
            return self._died(t0)
        except Exception as e:  # pickle errors of all kinds
            self.stop()
            raise WorkerError(f"the saturation worker sent an unreadable reply ({e})") from None
        if not (isinstance(reply, tuple) and len(reply) == 2):
            self.stop()
            raise WorkerError("the saturation worker sent an unexpected reply")
        status, payload = reply
        if status == "ok":
            return payload
        self.stop()
        if payload == _MEMORY:
            raise Stopped(_MEMORY, time.perf_counter() - t0)
        raise WorkerError(f"saturation failed in the worker: {payload}")


_WORKER = Worker()


@atexit.register
def shutdown() -> None:
    """Stop the saturation worker (at exit, and when the command is interrupted)."""
    _WORKER.stop()


def prestart() -> None:
    """Start the saturation worker (under the default budget's memory) without waiting for
    it: a command about to tensorize calls this first, so that the worker's start, some
    0.7 s of imports, overlaps the command's own work up to its first request."""
    _WORKER.start()


def saturate(job: Job, in_process: bool = False) -> tuple[list[BodyMatch], SaturationReport]:
    """Matches of ``job``'s patterns in its bodies, with the saturation report."""
    if in_process:
        return run_job(job)
    return _WORKER.run(job)


def call(request, budget: Budget, in_process: bool = False):
    """What ``request()`` returns, run in the saturation worker under ``budget``'s hard
    seconds and memory (``Stopped`` past either), or here when ``in_process``. Requests that
    keep state between calls (an e-graph saturated by one, extracted by the next) find it in
    the worker until a budget stop replaces the worker."""
    if in_process:
        return request()
    return _WORKER.call(request, budget)


if __name__ == "__main__":
    # by hand: ``python -m rewrite.saturate [memory_bytes]`` (the parent starts ``_BOOT``)
    from rewrite import saturate as _this

    _this._serve(sys.argv[1:2])
