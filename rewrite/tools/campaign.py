"""Campaigns: the same units of work run here, on a pool of local worker processes
(``--jobs N``) or on a Ray cluster (``--ray auto|ADDRESS``), with the results in the order
of the units whatever order the workers finish in.

A unit is any picklable value and the work a module-level function of it (workers import
it by name), so a campaign's output depends on its units alone, never on how many workers
ran them or which one ran what. ``tensorize run`` makes one unit per function, ``tensorize
fuzz`` one per block of examples of one intrinsic (with a seed derived from the campaign's
seed and the block, see ``rewrite.fuzz.properties.plan``).

- ``jobs == 1`` without Ray runs the units here, one after the other (what tests that
  patch the code in this process need).
- Local workers are started with ``spawn``: this process may hold LLVM JIT state, threads
  and a saturation worker, none of which survive a ``fork``. As with any spawned pool, a
  script that calls this (or ``rewrite.cli.main``) must guard its entry point with
  ``if __name__ == "__main__":``: each worker imports the script's main module again. The pool is Pebble's, because
  unlike ``concurrent.futures.ProcessPoolExecutor`` (whose pool breaks, and every pending
  unit with it, when one worker dies) it loses only the unit of a worker that dies or runs
  past its budget, and starts another worker for the rest.
- A unit lost that way comes back as ``Lost(reason)``: the caller reports it as that unit's
  error, and the campaign goes on.
- The compile cache is shared by the workers: entries are written to a temporary file and
  renamed into place, so a reader sees a whole entry or none, and two workers that build
  the same entry write the same authenticated bytes (``rewrite.jit``).
- Progress (done/total, failures so far, rate, time left) is drawn on stderr by tqdm when
  stderr is a terminal.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence


class CampaignError(Exception):
    """The campaign cannot start (Ray missing or unreachable): one line for the user."""


@dataclass(frozen=True)
class Lost:
    """A unit whose worker died or ran past the unit's budget."""

    reason: str


def default_jobs() -> int:
    """The number of cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


class Progress:
    """done/total, failures so far, rate and time left on stderr, when it is a terminal."""

    def __init__(self, total: int, what: str, failed: Callable[[Any], bool]):
        self.failed, self.failures = failed, 0
        self.bar = None
        if sys.stderr.isatty() and total:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit=what, file=sys.stderr, leave=False,
                            dynamic_ncols=True, postfix={"failures": 0})

    def done(self, result: Any) -> None:
        if isinstance(result, Lost) or self.failed(result):
            self.failures += 1
            if self.bar is not None:
                self.bar.set_postfix(failures=self.failures, refresh=False)
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run(work: Callable[[Any], Any], units: Sequence[Any], *, jobs: int = 1,
        ray: Optional[str] = None, budget: Optional[float] = None, what: str = "unit",
        failed: Callable[[Any], bool] = lambda result: False) -> list:
    """``[work(u) for u in units]``, on ``jobs`` local processes or on Ray; a unit whose
    worker died or ran past ``budget`` seconds is ``Lost`` in its place."""
    units = list(units)
    progress = Progress(len(units), what, failed)
    try:
        if ray is not None:
            return _on_ray(work, units, ray, budget, progress)
        if jobs <= 1 or len(units) <= 1:
            results = []
            for u in units:
                results.append(work(u))
                progress.done(results[-1])
            return results
        return _on_pool(work, units, min(jobs, len(units)), budget, progress)
    finally:
        progress.close()


def _on_pool(work, units: list, jobs: int, budget: Optional[float], progress: Progress) -> list:
    from pebble import ProcessExpired, ProcessPool

    results: list = [None] * len(units)
    spawn = multiprocessing.get_context("spawn")
    started = spawn.Queue()  # a worker's pid once it is up (``_start``)
    pool = ProcessPool(max_workers=jobs, context=spawn, initializer=_start,
                       initargs=(jobs, started))
    try:
        futures = [pool.schedule(work, args=(u,), timeout=budget) for u in units]
        index = {f: k for k, f in enumerate(futures)}
        pending = set(futures)
        replaced = 0  # workers the pool started again, for a unit's that died or was stopped
        while pending:
            from concurrent.futures import FIRST_COMPLETED, wait

            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in finished:
                k = index[f]
                try:
                    results[k] = f.result()
                except FutureTimeout:
                    results[k] = Lost(f"ran past its budget of {budget:g} s; its worker was stopped")
                    replaced += 1
                except ProcessExpired as e:
                    results[k] = Lost(f"its worker died ({_exit_status(e.exitcode)})")
                    replaced += 1
                except Exception as e:  # noqa: BLE001 - the work raised, or its result did not pickle
                    results[k] = Lost(f"its worker failed: {type(e).__name__}: {e}")
                progress.done(results[k])
    except BaseException:
        pool.stop()  # interrupted: the workers go now
        pool.join()
        raise
    # Every unit is back. A worker still starting (the units went fast, on a loaded machine)
    # would read the pool's locks after the pool has let them go, and print a traceback:
    # closing waits until each worker started has come up (those that replaced a lost
    # unit's worker included), for at most STARTUP_SECONDS.
    _wait_started(started, jobs + replaced)
    pool.close()
    pool.join()
    return results


STARTUP_SECONDS = 60.0


def _start(jobs: int, started) -> None:
    """A worker's start: its kernels use its share of the cores (``jobs`` workers run side by
    side), and it says it is up."""
    from .. import runtime

    runtime.share_cores(jobs)
    started.put(os.getpid())


def _wait_started(started, workers: int) -> None:
    import queue

    deadline = time.monotonic() + STARTUP_SECONDS
    for _ in range(workers):
        try:
            started.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            return


def _exit_status(code: Optional[int]) -> str:
    if code is not None and code < 0:
        import signal

        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


# ---------------------------------------------------------------------------
# Ray


def _ray():
    try:
        import ray
    except ImportError:
        raise CampaignError("--ray needs Ray: pip install 'tensorize[cluster]'") from None
    return ray


def check_ray() -> None:
    """Fail early, before any work, when Ray is not installed."""
    _ray()


def _reachable(address: str, seconds: float = 5.0) -> None:
    """Refuse an address nothing answers at (Ray itself retries for minutes)."""
    if address == "auto":
        return
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise CampaignError(f"--ray {address}: expected auto or HOST:PORT (or ray://HOST:PORT)")
    import socket

    try:
        socket.create_connection((host, int(port)), timeout=seconds).close()
    except OSError as e:
        raise CampaignError(f"--ray {address}: cannot reach a Ray cluster there: "
                            f"{e.strerror or e}") from None


def _runtime_env() -> dict:
    """The workers find the code this process runs from where it was told to look for it."""
    path = os.environ.get("PYTHONPATH")
    return {"env_vars": {"PYTHONPATH": path}} if path else {}


def _on_ray(work, units: list, address: str, budget: Optional[float], progress: Progress) -> list:
    ray = _ray()
    started = False
    if not ray.is_initialized():
        _reachable(address)
        try:
            # "auto": the cluster this machine belongs to, else a local one started here
            ray.init(address=None if address == "auto" else address, include_dashboard=False,
                     log_to_driver=False, logging_level="ERROR", runtime_env=_runtime_env())
        except Exception as e:  # noqa: BLE001 - Ray's own errors: unreachable, refused, ...
            raise CampaignError(f"--ray {address}: cannot reach a Ray cluster: "
                                f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
        started = True
    try:
        remote = ray.remote(max_retries=0)(work)
        # as many units in flight as the cluster has CPUs, so that a unit starts when it is
        # submitted and its budget can be counted from there
        slots = max(1, int(ray.cluster_resources().get("CPU", 1)))
        results: list = [None] * len(units)
        todo = list(range(len(units)))[::-1]
        running: dict = {}  # ref -> (unit index, deadline)
        while todo or running:
            while todo and len(running) < slots:
                k = todo.pop()
                running[remote.remote(units[k])] = (k, None if budget is None else time.monotonic() + budget)
            deadlines = [d for _, d in running.values() if d is not None]
            wait_for = None if not deadlines else max(0.0, min(deadlines) - time.monotonic())
            ready, _ = ray.wait(list(running), num_returns=1, timeout=wait_for)
            for ref in ready:
                k, _ = running.pop(ref)
                try:
                    results[k] = ray.get(ref)
                except ray.exceptions.RayTaskError as e:  # the work raised
                    cause = e.cause if getattr(e, "cause", None) is not None else e
                    results[k] = Lost(f"its worker failed: {type(cause).__name__}: {cause}")
                except ray.exceptions.RayError as e:  # the worker or its node died
                    results[k] = Lost(f"its worker died ({type(e).__name__})")
                progress.done(results[k])
            now = time.monotonic()
            for ref, (k, deadline) in list(running.items()):
                if deadline is not None and now >= deadline:
                    ray.cancel(ref, force=True)
                    del running[ref]
                    results[k] = Lost(f"ran past its budget of {budget:g} s; its worker was stopped")
                    progress.done(results[k])
        return results
    finally:
        if started:
            ray.shutdown()
