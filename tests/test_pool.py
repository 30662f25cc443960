"""The thread pool's dispatcher, called directly with a native task that records, for each
index of the range, which thread ran it, where its chunk began and when (a number drawn
from a shared counter as each chunk starts)."""

import ctypes
import threading

import numpy as np
import pytest
from llvmlite import ir

from rewrite import codegen, jit, pool
from rewrite.codegen import POOL_DISPATCH, TASK_TYPE

_I64, _PTR = ir.IntType(64), ir.PointerType()
_SYS_GETTID = 186  # Linux x86-64
_SPIN = 3000  # cycles of work an index, so that both threads are busy at once


def _task_address() -> int:
    """``task(args, lo, hi)``: ``n = args[2][0]++`` (atomic), then for each i in [lo, hi),
    ``args[0][i] = gettid()``, ``args[1][i] = lo``, ``args[3][i] = n``, then spin for
    ``_SPIN`` cycles."""
    module = codegen.new_module("test_pool_task")
    fn = ir.Function(module, TASK_TYPE, name="test_pool_task")
    args, lo, hi = fn.args
    syscall = ir.Function(module, ir.FunctionType(_I64, [_I64], var_arg=True), name="syscall")
    cycles = ir.Function(module, ir.FunctionType(_I64, []), name="llvm.readcyclecounter")
    entry, loop, spin, done = (fn.append_basic_block(n) for n in ("entry", "loop", "spin", "done"))
    b = ir.IRBuilder(entry)
    tids = b.load(b.gep(args, [ir.Constant(_I64, 0)], source_etype=_PTR), typ=_PTR)
    los = b.load(b.gep(args, [ir.Constant(_I64, 1)], source_etype=_PTR), typ=_PTR)
    counter = b.load(b.gep(args, [ir.Constant(_I64, 2)], source_etype=_PTR), typ=_PTR)
    seqs = b.load(b.gep(args, [ir.Constant(_I64, 3)], source_etype=_PTR), typ=_PTR)
    tid = b.call(syscall, [ir.Constant(_I64, _SYS_GETTID)])
    seq = b.atomic_rmw("add", counter, ir.Constant(_I64, 1), "monotonic")
    b.cbranch(b.icmp_signed("<", lo, hi), loop, done)
    b.position_at_end(loop)
    i = b.phi(_I64)
    i.add_incoming(lo, entry)
    b.store(tid, b.gep(tids, [i], source_etype=_I64))
    b.store(lo, b.gep(los, [i], source_etype=_I64))
    b.store(seq, b.gep(seqs, [i], source_etype=_I64))
    began = b.call(cycles, [])
    b.branch(spin)
    b.position_at_end(spin)
    waited = b.sub(b.call(cycles, []), began)
    more = b.icmp_unsigned("<", waited, ir.Constant(_I64, _SPIN))
    after = b.add(i, ir.Constant(_I64, 1))
    next_ = fn.append_basic_block("next")
    b.cbranch(more, spin, next_)
    b.position_at_end(next_)
    i.add_incoming(after, next_)
    b.cbranch(b.icmp_signed("<", after, hi), loop, done)
    b.position_at_end(done)
    b.ret_void()
    with jit.compile_lock:
        obj = codegen.object_code(codegen.optimize(module))
    return jit.load(obj, ["test_pool_task"])[0]


@pytest.fixture(scope="module")
def dispatch():
    task = _task_address()
    threads = pool.get(2)
    call = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                            ctypes.c_int64, ctypes.c_int64)(int(threads.block[POOL_DISPATCH]))

    def run(lo: int, hi: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        tids, los, seqs = (np.full(max(hi, 1), -1, np.int64) for _ in range(3))
        counter = np.zeros(1, np.int64)
        args = (ctypes.c_void_p * 4)(tids.ctypes.data, los.ctypes.data, counter.ctypes.data,
                                     seqs.ctypes.data)
        call(threads.address, task, ctypes.addressof(args), lo, hi)
        return tids[:hi], los[:hi], seqs[:hi]

    run.block = threads.block
    return run


@pytest.mark.parametrize("lo, hi", [(0, 0), (0, 1), (0, 3), (5, 12), (0, 50), (3, 1003)])
def test_every_index_runs_once_in_even_chunks(dispatch, lo, hi):
    tids, los, _ = dispatch(lo, hi)
    assert (tids[:lo] == -1).all() and (tids[lo:] > 0).all()
    n = hi - lo
    chunks = min(n, 2 * pool._CHUNKS_PER_THREAD)
    starts = [lo + c * n // chunks for c in range(chunks)]
    # each index was run by the chunk holding it (sizes differ by one at most)
    want = np.repeat(starts, np.diff(starts + [hi])) if n else np.zeros(0, np.int64)
    assert (los[lo:] == want).all()


def test_each_thread_claims_its_own_chunks_first_in_order(dispatch):
    # thread t owns chunks t * 8 // 2 .. (t + 1) * 8 // 2 (the caller is thread 0): it runs
    # its own in order, then the other's that are left, in order. So in each call and each
    # loop a thread works on the same part of the range, unless another was kept from its
    # own. (Claimed from one shared counter, from the last chunk down, the chunks went to
    # whichever thread asked.) Which chunks a thread runs depends on timing; their order
    # does not.
    me = threading.get_native_id()
    n, chunks = 400, 2 * pool._CHUNKS_PER_THREAD
    starts = [c * n // chunks for c in range(chunks)]
    for _ in range(20):
        tids, los, seqs = dispatch(0, n)
        for thread, rank in [(me, 0)] + [(t, 1) for t in np.unique(tids) if t != me]:
            ran = sorted({(int(seqs[s]), starts.index(s)) for s in starts if tids[s] == thread})
            order = [c for _, c in ran]
            # rank of the owner counted from this thread's own, then the chunk
            keys = [((c * 2 // chunks - rank) % 2, c) for c in order]
            assert keys == sorted(keys), (thread == me, order)


def test_a_dispatch_finding_the_pool_held_runs_the_range_itself(dispatch):
    """One dispatch at a time per pool (``POOL_LOCK``): one that finds it taken runs every
    index of its range on its own thread, as one chunk, and never waits; a dispatch that
    took it gives it back."""
    me = threading.get_native_id()
    dispatch.block[pool.POOL_LOCK] = 1
    try:
        tids, los, _ = dispatch(3, 40)
    finally:
        dispatch.block[pool.POOL_LOCK] = 0
    assert (tids[:3] == -1).all() and (tids[3:] == me).all() and (los[3:] == 3).all()
    tids, _, _ = dispatch(0, 400)
    assert dispatch.block[pool.POOL_LOCK] == 0 and (tids > 0).all()


def test_dispatches_from_two_threads_at_once_each_run_every_index(dispatch):
    """Callers on two threads share the pool: each range runs whole, whichever of them held
    the pool, and neither hangs."""
    results, errors = {}, []

    def caller(name: str) -> None:
        try:
            for k in range(20):
                tids, los, _ = dispatch(0, 300)
                assert (tids > 0).all() and (los >= 0).all()
            results[name] = True
        except AssertionError as e:  # reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=caller, args=(n,)) for n in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors and results == {"a": True, "b": True}
    assert dispatch.block[pool.POOL_LOCK] == 0


def test_a_forked_child_dispatches_on_workers_of_its_own(dispatch):
    """A child process has only the thread that forked; the pool starts new workers on the
    same block there (``os.register_at_fork``), so kernels compiled before the fork still
    share their loops, here even with the pool held by a dispatch under way in the parent
    at the fork."""
    import os
    import time

    dispatch(0, 8)  # the pool started and used in the parent
    held = threading.Event()
    release = threading.Event()

    def hold():  # a dispatch under way on another thread of the parent while it forks
        dispatch.block[pool.POOL_LOCK] = 1
        held.set()
        release.wait(10)
        dispatch.block[pool.POOL_LOCK] = 0

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(10)
    pid = os.fork()
    if pid == 0:  # the child: status 0 when a worker ran some of the range
        status = 1
        try:
            me = threading.get_native_id()
            for _ in range(50):
                tids, _, _ = dispatch(0, 400)
                if (tids > 0).all() and (tids != me).any():
                    status = 0
                    break
        finally:
            os._exit(status)
    release.set()
    holder.join()
    deadline = time.monotonic() + 60
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung")
        time.sleep(0.05)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, "no worker ran in the child"
