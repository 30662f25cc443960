"""A kernel with a pool times its first calls on the pool and on the calling thread alone and
keeps the faster way (``runtime.Kernel._trial_call``). The clock is replaced here, so what
is asserted is the choice made from given times, not this machine's speed; every call, in
either way, computes what the interpreter does."""

import threading

import numpy as np
import pytest

from rewrite import pool, runtime
from rewrite.inputs import random_args
from rewrite.interp import run
from rewrite.script import parse

SOURCE = '''
@prim_func
def scale_add(A: f32[256, 256], B: f32[256, 256], C: f32[256, 256]):
    for i, j in grid(256, 256):
        C[i, j] = A[i, j] * B[i, j] + 1.5
'''


@pytest.fixture(scope="module")
def func():
    return parse(SOURCE)


class _Clock:
    """Each call of the kernel "takes" ``pooled`` seconds on the pool, ``alone`` without it:
    the trial reads the clock once before and once after each call."""

    def __init__(self, pooled: float, alone: float):
        self.kernel, self.pooled, self.alone, self.t, self.reads = None, pooled, alone, 0.0, 0

    def __call__(self) -> float:
        self.reads += 1
        if self.reads % 2 == 0:
            self.t += self.pooled if self.kernel._pool_address else self.alone
        return self.t


def _trial_calls() -> int:
    per_run = runtime.THREAD_TRIAL_RUN - 1
    return 2 * runtime.THREAD_TRIAL_RUN * -(-runtime.THREAD_TRIAL_CALLS // per_run)


def _kernel(func, monkeypatch, pooled: float, alone: float):
    clock = _Clock(pooled, alone)
    monkeypatch.setattr(runtime, "_clock", clock)
    kernel = runtime.compile(func, threads=2)
    assert kernel._pool is not None, "the loop should run on the pool"
    clock.kernel = kernel
    return kernel, clock


SPECIAL = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0], np.float32)


def _call_and_check(kernel, func, seed: int) -> None:
    """One call, on random inputs with NaN, infinities and signed zeros scattered in, equal
    to the interpreter's result: the same values, the same signs of zeros."""
    args = random_args(func, seed)
    rng = np.random.default_rng(seed)
    for name in ("A", "B"):
        flat = args[name].reshape(-1)
        at = rng.choice(flat.size, 64, replace=False)
        flat[at] = SPECIAL[rng.integers(0, SPECIAL.size, at.size)]
    want = run(func, **args)["C"]
    kernel(**args)
    got = args["C"]
    np.testing.assert_array_equal(got, want)
    numbers = ~np.isnan(want)
    np.testing.assert_array_equal(np.signbit(got[numbers]), np.signbit(want[numbers]))


def test_a_pool_slower_than_one_thread_is_left(func, monkeypatch):
    kernel, clock = _kernel(func, monkeypatch, pooled=6e-6, alone=4e-6)
    n = _trial_calls()
    ways = []
    for k in range(n):
        assert kernel.threads_in_use is None
        _call_and_check(kernel, func, k)
        ways.append(bool(kernel._pool_address))
    # both ways were run in turns, in runs of THREAD_TRIAL_RUN calls (the way a call took
    # stays set until the next; the last call set the choice)
    assert ways[:-1] == [k // runtime.THREAD_TRIAL_RUN % 2 == 0 for k in range(n - 1)]
    assert kernel.threads_in_use == 1
    assert kernel._pool_address == 0
    if kernel._block is not None:
        assert kernel._block[runtime.codegen.CALLER_POOL] == 0
    # the worker was told to sleep rather than spin beside the caller
    assert kernel._pool.block[pool.POOL_REST] == 1
    reads = clock.reads
    _call_and_check(kernel, func, 100)
    assert clock.reads == reads, "no call is timed after the trial"
    assert kernel.threads_in_use == 1


def test_a_faster_pool_is_kept(func, monkeypatch):
    kernel, _ = _kernel(func, monkeypatch, pooled=3e-6, alone=5e-6)
    for k in range(_trial_calls()):
        _call_and_check(kernel, func, k)
    assert kernel.threads_in_use == 2
    assert kernel._pool_address == kernel._pool.address
    if kernel._block is not None:
        assert kernel._block[runtime.codegen.CALLER_POOL] == kernel._pool.address
    # a dispatch clears the rest flag another kernel may have set
    kernel._pool.rest()
    _call_and_check(kernel, func, 7)
    assert kernel._pool.block[pool.POOL_REST] == 0


def test_runs_whose_first_call_differs_are_judged_by_the_rest(func, monkeypatch):
    """The first call of each run is not counted: here it is the slow one on the pool. In
    runs of two, counting it would put the pool's median at 53 us."""
    monkeypatch.setattr(runtime, "THREAD_TRIAL_RUN", 2)
    kernel, clock = _kernel(func, monkeypatch, pooled=3e-6, alone=5e-6)
    base = clock.__call__

    calls = {"n": 0}

    def first_slow() -> float:
        t = base()
        if clock.reads % 2 == 0:
            calls["n"] += 1
            if (calls["n"] - 1) % runtime.THREAD_TRIAL_RUN == 0 and kernel._pool_address:
                clock.t += 1e-4  # the first call of a run on the pool: 100 us more
                t = clock.t
        return t

    monkeypatch.setattr(runtime, "_clock", first_slow)
    for k in range(_trial_calls()):
        _call_and_check(kernel, func, k)
    assert kernel.threads_in_use == 2


def test_a_long_call_on_the_pool_ends_the_trial(func, monkeypatch):
    kernel, clock = _kernel(func, monkeypatch, pooled=2 * runtime.THREAD_TRIAL_SECONDS, alone=1e-6)
    _call_and_check(kernel, func, 0)
    assert kernel.threads_in_use == 2
    assert clock.reads == 2
    _call_and_check(kernel, func, 1)
    assert clock.reads == 2


def test_no_trial_when_turned_off(func, monkeypatch):
    monkeypatch.setattr(runtime, "THREAD_TRIAL_CALLS", 0)
    kernel, clock = _kernel(func, monkeypatch, pooled=6e-6, alone=1e-6)
    assert kernel.threads_in_use == 2
    _call_and_check(kernel, func, 0)
    assert clock.reads == 0


def test_one_thread_has_no_trial(func):
    kernel = runtime.compile(func, threads=1)
    assert kernel.threads_in_use == 1
    _call_and_check(kernel, func, 0)


def test_the_trial_runs_again_and_follows_the_machine(func, monkeypatch):
    """A choice made while the pool was slow (a virtual machine's second CPU busy elsewhere)
    is tried again ``THREAD_RETRIAL_CALLS`` calls later, and the pool is taken back once it
    is the faster; a re-trial that keeps the same way waits twice as long for the next."""
    monkeypatch.setattr(runtime, "THREAD_RETRIAL_CALLS", 5)
    kernel, clock = _kernel(func, monkeypatch, pooled=6e-6, alone=4e-6)
    n = _trial_calls()
    for k in range(n):
        _call_and_check(kernel, func, k)
    assert kernel.threads_in_use == 1
    reads = clock.reads
    for k in range(4):  # untimed calls on the way kept
        _call_and_check(kernel, func, 20 + k)
    assert clock.reads == reads and kernel.threads_in_use == 1
    clock.pooled = 3e-6  # the machine recovered
    for k in range(n):  # the fifth call after the choice starts the trial again
        _call_and_check(kernel, func, 30 + k)
        assert (kernel.threads_in_use is None) == (k < n - 1)
    assert clock.reads == reads + 2 * n
    assert kernel.threads_in_use == 2 and kernel._pool_address == kernel._pool.address
    # the way changed: the next trial again after 5 calls; it keeps the pool, and the one
    # after that comes after 10
    for k in range(4 + n):
        _call_and_check(kernel, func, 60 + k)
    assert kernel.threads_in_use == 2 and clock.reads == reads + 4 * n
    for k in range(9):
        _call_and_check(kernel, func, 80 + k)
    assert clock.reads == reads + 4 * n
    _call_and_check(kernel, func, 99)
    assert clock.reads == reads + 4 * n + 2 and kernel.threads_in_use is None


def test_no_trial_again_when_turned_off(func, monkeypatch):
    monkeypatch.setattr(runtime, "THREAD_RETRIAL_CALLS", 0)
    kernel, clock = _kernel(func, monkeypatch, pooled=6e-6, alone=4e-6)
    for k in range(_trial_calls()):
        _call_and_check(kernel, func, k)
    reads = clock.reads
    for k in range(40):
        kernel(**random_args(func, k))
    assert clock.reads == reads and kernel.threads_in_use == 1


def test_after_the_trial_the_native_checks_are_the_call_and_each_way_has_its_block(func, monkeypatch):
    """After the trial a call goes from the interpreter straight into the kept way's native
    checks (the kernel's class's ``__call__``, no Python frame): kept alone, on a block
    that points at no pool, and not held up while another thread holds the pool; kept on
    the pool, on the pool's block. The runs of both ways are counted."""
    kernel, _ = _kernel(func, monkeypatch, pooled=6e-6, alone=4e-6)
    if kernel._ways is None:
        pytest.skip("no native checks for this kernel on this host")
    n = _trial_calls()
    assert type(kernel).__call__ is runtime.Kernel.__call__, "the trial's calls are timed in Python"
    for k in range(n):
        _call_and_check(kernel, func, k)
    assert kernel.threads_in_use == 1
    assert type(kernel).__call__ is kernel._native
    assert type(kernel._native).__name__ == "builtin_function_or_method"
    assert kernel._block[runtime.codegen.CALLER_POOL] == 0
    taken = kernel._pool.block
    taken[pool.POOL_LOCK] = 1  # the pool held elsewhere
    try:
        done = []
        caller = threading.Thread(target=lambda: (_call_and_check(kernel, func, 50),
                                                  done.append(1)))
        caller.start()
        caller.join(timeout=10)
        assert done == [1], "a call alone waited for the pool"
        kernel._keep(True, 0)
        assert type(kernel).__call__ is kernel._native
        assert kernel._block[runtime.codegen.CALLER_POOL] == kernel._pool.address
        # on the pool's way too, a call that finds the pool held runs its loop itself
        caller = threading.Thread(target=lambda: (_call_and_check(kernel, func, 51),
                                                  done.append(2)))
        caller.start()
        caller.join(timeout=10)
        assert done == [1, 2], "a call on the pool waited for a pool held elsewhere"
    finally:
        taken[pool.POOL_LOCK] = 0
    _call_and_check(kernel, func, 52)
    assert kernel.native_runs == n + 3


def test_the_native_countdown_hands_the_last_call_to_the_trial(func, monkeypatch):
    """The kept way's checks count the calls to the next trial in their block; the call
    that ends the count runs in the trial (timed), and so do the trial's others."""
    monkeypatch.setattr(runtime, "THREAD_RETRIAL_CALLS", 3)
    kernel, clock = _kernel(func, monkeypatch, pooled=3e-6, alone=4e-6)
    if kernel._ways is None:
        pytest.skip("no native checks for this kernel on this host")
    for k in range(_trial_calls()):
        _call_and_check(kernel, func, k)
    assert kernel.threads_in_use == 2 and kernel._block[runtime.codegen.CALLER_COUNTDOWN] == 3
    reads, runs = clock.reads, kernel.native_runs
    for k in range(2):
        _call_and_check(kernel, func, 10 + k)
    assert clock.reads == reads and kernel._block[runtime.codegen.CALLER_COUNTDOWN] == 1
    _call_and_check(kernel, func, 12)
    assert clock.reads == reads + 2 and kernel.threads_in_use is None
    assert type(kernel).__call__ is runtime.Kernel.__call__
    assert kernel.native_runs == runs + 3, "every call ran natively, the trial's too"
