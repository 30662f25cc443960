"""The timing every benchmark here shares: a call timed after a warm-up, as often as a time
budget allows, summarised as min / median / max, and the rate those seconds give.

    t = measure(lambda: kernel(**args), min_runs=20, target_seconds=0.3)
    t.runs, t.min_s, t.median_s, t.max_s
    rate(ops, t.median_s)                       # 10^9 operations per second
    best_of(lambda: kernel(n), runs=5)          # the shortest of a few runs

Medians of many runs tame a noisy machine: they compare functions (``bench.py``). The
shortest of a few runs measures what the hardware can do: peaks and throughput
(``intrinsic_bench.py``). Where the machine's speed itself drifts, ``in_turns`` times
several calls in rounds in which they take turns (``tensorize bench --turns``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

MAX_RUNS = 10_000


@dataclass(frozen=True)
class Timing:
    """The seconds each timed run of one call took."""

    times: tuple[float, ...]

    @property
    def runs(self) -> int:
        return len(self.times)

    @property
    def min_s(self) -> float:
        return float(min(self.times))

    @property
    def median_s(self) -> float:
        return float(np.median(self.times))

    @property
    def max_s(self) -> float:
        return float(max(self.times))


def in_turns(calls: list[Callable[[], object]], rounds: int, batch_seconds: float = 0.01,
             clock: Callable[[], float] = time.thread_time) -> list[Timing]:
    """Each of ``calls`` timed in ``rounds`` rounds in which they take turns, a batch of calls
    each (as many as take about ``batch_seconds``, the same number every round), on ``clock``
    (the calling thread's CPU time): a ``Timing`` of the seconds a call took in each round.

    On a machine whose speed drifts (other tenants, the clock), calls timed one after the
    other each meet another machine; in turns, every round meets all of them with about the
    same one, and the CPU clock leaves out the time the scheduler gives other work."""
    for call in calls:
        call()  # warm up
    batches = [max(1, int(batch_seconds / max(time_once(call), 1e-7))) for call in calls]
    times: list[list[float]] = [[] for _ in calls]
    for _ in range(rounds):
        for call, n, out in zip(calls, batches, times):
            t0 = clock()
            for _ in range(n):
                call()
            out.append((clock() - t0) / n)
    return [Timing(tuple(t)) for t in times]


def time_once(call: Callable[[], object]) -> float:
    """The seconds one call of ``call`` takes."""
    t0 = time.perf_counter()
    call()
    return time.perf_counter() - t0


def measure(call: Callable[[], object], min_runs: int, target_seconds: float,
            warm_seconds: float = 0.0) -> Timing:
    """Warm up once, and go on calling ``call`` untimed until ``warm_seconds`` have passed,
    then time it at least ``min_runs`` times and as often as fits in ``target_seconds`` (at
    most ``MAX_RUNS`` runs)."""
    end = time.perf_counter() + warm_seconds
    first = time_once(call)
    while time.perf_counter() < end:
        first = time_once(call)
    runs = max(min_runs, min(MAX_RUNS, int(target_seconds / max(first, 1e-7))))
    return Timing(tuple(time_once(call) for _ in range(runs)))


def best_of(call: Callable[[], object], runs: int) -> float:
    """The shortest of ``runs`` timed calls (infinite for none)."""
    return min((time_once(call) for _ in range(runs)), default=float("inf"))


def rate(ops: float, elapsed: float) -> float:
    """``ops`` operations in ``elapsed`` seconds, in 10^9 per second (GFLOP/s, or GOP/s on
    integers); 0 when no time was measured."""
    return ops / elapsed / 1e9 if elapsed > 0 else 0.0
