"""Equality saturation with budgets, in a worker process that can be stopped.

egglog's ``run`` has no node limit or timeout of its own (DESIGN.md), so the schedule is
phased -- algebra one iteration at a time with a size and clock check between iterations,
then the generated matching rules -- and the whole job runs in a separate process. The
parent waits at most ``Budget.hard_seconds``; past that the worker is killed and a fresh one
started for the next function. The worker's address space is capped (``Budget.memory_bytes``)
so a runaway e-graph fails there, not here. ``EGraph`` objects do not pickle, so the two
processes exchange our IR.
"""

from __future__ import annotations

import pickle
import select
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Optional

from .ir import Expr
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
    stop_reason: str  # saturated | iteration limit | node limit | time limit | killed: ...
    seconds: float

    def to_json(self) -> dict:
        return {"iterations": self.iterations, "enodes": self.enodes,
                "stop_reason": self.stop_reason, "seconds": self.seconds}


@dataclass(frozen=True)
class Job:
    bodies: tuple[Expr, ...]
    patterns: tuple[Pattern, ...]
    budget: Budget = field(default_factory=Budget)


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


def _match_rules(patterns: tuple[Pattern, ...]):
    """One rule per intrinsic, and one for its constant-scaled form (``2.0 * A * B``)."""
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
        n, s, dt = var("n", i64), var("s", f64), var("dt", String)
        rules.append(rule(root(t, n), eq(t).to(body)).then(rel(n, i64(k), *xs, f64(1.0))))
        rules.append(rule(root(t, n), eq(t).to(Term.fconst(s, dt) * u), eq(u).to(body))
                     .then(rel(n, i64(k), *xs, s)))
    return rules


def run_job(job: Job) -> tuple[list[BodyMatch], SaturationReport]:
    """Saturate the bodies under the algebra rules, then match every pattern."""
    from egglog import EGraph, get_callable_args, get_literal_value, i64

    from .egraph import Encoder
    from .rules.algebra import algebra

    t0 = time.perf_counter()
    eg = EGraph()
    enc = Encoder()
    root = _root()
    for n, body in enumerate(job.bodies):
        eg.register(root(enc.encode(body), i64(n)))
    b = job.budget
    stop, iterations, size = "iteration limit", 0, 0
    for iterations in range(1, b.iterations + 1):
        report = eg.run(algebra)
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


def _serve() -> None:
    memory = int(sys.argv[1]) if len(sys.argv) > 1 else Budget().memory_bytes
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    except (ImportError, ValueError, OSError):
        pass
    out, inp = sys.stdout.buffer, sys.stdin.buffer
    sys.stdout = sys.stderr  # nothing else may write into the channel
    while True:
        try:
            job = _recv(inp)
        except EOFError:
            return
        try:
            _send(out, ("ok", run_job(job)))
        except MemoryError:
            _send(out, ("error", "memory limit"))
        except Exception as e:  # reported to the parent, which keeps going
            _send(out, ("error", f"{type(e).__name__}: {e}"))


class Worker:
    """A saturation process, started on first use and replaced when it has to be killed."""

    def __init__(self) -> None:
        self._proc: Optional[subprocess.Popen] = None
        self._memory = 0

    def _start(self, memory_bytes: int) -> None:
        self._proc = subprocess.Popen([sys.executable, "-m", "rewrite.saturate", str(memory_bytes)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL)
        self._memory = memory_bytes

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    def _died(self, why: str, t0: float) -> tuple[list[BodyMatch], SaturationReport]:
        self.stop()
        return [], SaturationReport(0, 0, why, time.perf_counter() - t0)

    def run(self, job: Job) -> tuple[list[BodyMatch], SaturationReport]:
        b = job.budget
        if self._proc is None or self._proc.poll() is not None or self._memory != b.memory_bytes:
            self.stop()
            self._start(b.memory_bytes)
        t0 = time.perf_counter()
        try:
            _send(self._proc.stdin, job)
        except (BrokenPipeError, OSError):
            return self._died("killed: the worker died", t0)
        ready, _, _ = select.select([self._proc.stdout], [], [], b.hard_seconds)
        if not ready:
            return self._died(f"killed: over {b.hard_seconds:g} s", t0)
        try:
            status, payload = _recv(self._proc.stdout)
        except (EOFError, OSError, pickle.UnpicklingError):
            return self._died("killed: the worker died (memory limit?)", t0)
        if status != "ok":
            return self._died(f"failed: {payload}", t0)
        return payload


_WORKER = Worker()


def saturate(job: Job, in_process: bool = False) -> tuple[list[BodyMatch], SaturationReport]:
    """Matches of ``job``'s patterns in its bodies, with the saturation report."""
    if in_process:
        return run_job(job)
    return _WORKER.run(job)


if __name__ == "__main__":
    # run the imported module's server, so pickled results name rewrite.saturate's classes
    from rewrite import saturate as _this

    _this._serve()
