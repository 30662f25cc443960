"""The thread pool kernels run their parallel loops on.

A top-level loop the dependence analysis proves parallel is cut into chunks shared by the
calling thread and ``threads - 1`` workers. Thread ``t`` owns the ``t``-th run of consecutive
chunks and claims its own first, in order, then what is left of the others' (see
``pool_module``): each thread works on the same part of the iteration space in each
parallel loop and in each call, so data one loop left in a core's cache is read there by
the next (a padded input written by rows, then convolved by rows, stays in each core's
L2). Each worker is a Python thread that enters the native worker loop once (ctypes
releases the GIL) and then waits on a control block in native code (spinning, then
sleeping on a futex), so a dispatch costs microseconds, not a Python round trip. The
native side is LLVM IR built here (``pool_module``); a kernel reaches the dispatcher through
slot ``codegen.POOL_DISPATCH`` of the block.
"""

from __future__ import annotations

import atexit
import ctypes
import hashlib
import os
import threading
from pathlib import Path

import numpy as np
from llvmlite import ir

from . import codegen, jit
from .codegen import DISPATCH_TYPE, POOL_DISPATCH, TASK_TYPE
from .emitter import declare, indirect

_I32, _I64 = ir.IntType(32), ir.IntType(64)
_PTR = ir.PointerType()
_VOID = ir.VoidType()


# ---------------------------------------------------------------------------
# the Python side


class _Pool:
    """``threads - 1`` workers parked in native code plus the calling thread."""

    def __init__(self, threads: int, addresses: dict[str, int]):
        self.threads = threads
        slots = POOL_TICKETS + TICKET_STRIDE * threads
        raw = np.zeros(slots + 8, np.int64)
        start = (-raw.ctypes.data % 64) // 8  # the control block on its own cache lines
        self.block = raw[start:start + slots]
        self.block[POOL_THREADS] = threads
        self.block[POOL_NEXT_ID] = 1  # the calling thread is thread 0
        self.block[POOL_DISPATCH] = addresses["dispatch"]
        self.address = self.block.ctypes.data
        self._raw = raw
        self._worker = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(addresses["worker"])
        self._stop = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(addresses["stop"])
        self._start_workers()

    def _start_workers(self) -> None:
        self.workers = [threading.Thread(target=self._worker, args=(self.address,), daemon=True,
                                         name=f"tensorize-worker-{k}")
                        for k in range(self.threads - 1)]
        for t in self.workers:
            t.start()

    def after_fork(self) -> None:
        """In a child process, which has only the thread that forked: new workers on the
        same control block (kernels compiled before the fork point at it), with nothing
        held, nobody asleep and every ticket's chunks claimed, so that no worker runs a
        chunk of a dispatch the parent had under way."""
        block = self.block
        block[POOL_LOCK] = 0
        block[POOL_SLEEPERS] = 0
        block[POOL_NEXT_ID] = 1
        block[POOL_DONE] = block[POOL_CHUNKS] = 0
        generation = int(block[POOL_GEN]) & 0xFFFFFFFF
        for t in range(self.threads):
            block[POOL_TICKETS + TICKET_STRIDE * t] = (generation << 32) | _CLAIM_BASE
        self._start_workers()

    def rest(self) -> None:
        """Waiting workers sleep now rather than spin until the next dispatch wakes them
        (``POOL_REST``)."""
        self.block[POOL_REST] = 1

    def close(self) -> None:
        self._stop(self.address)
        for t in self.workers:
            t.join(timeout=1.0)


_pools: dict[int, _Pool] = {}
_POOL_PREFIX = "tensorize.pool"


def get(threads: int) -> _Pool:
    """The pool of ``threads`` threads (the caller's included), started on first use."""
    with jit.compile_lock:  # building the pool's code shares LLVM with kernel compiles
        if threads not in _pools:
            # this file is not among jit.CODE_MODULES (it imports jit): its source keys its code
            source = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()
            obj, _, _ = jit.cached_object(jit.key(f"pool {source}"), lambda: (codegen.object_code(
                codegen.optimize(pool_module(_POOL_PREFIX))), {}))
            names = ("worker", "dispatch", "stop")
            addresses = jit.load(obj, [f"{_POOL_PREFIX}.{n}" for n in names])
            _pools[threads] = _Pool(threads, dict(zip(names, addresses)))
        return _pools[threads]


@atexit.register
def _close_pools() -> None:
    for pool in _pools.values():
        pool.close()


def _after_fork_in_child() -> None:
    for pool in _pools.values():
        pool.after_fork()


# a process forked from one that ran kernels (multiprocessing's default on Linux) runs
# them on as many threads as the parent did, not on its one thread behind a pool of none
os.register_at_fork(after_in_child=_after_fork_in_child)



# ---------------------------------------------------------------------------
# the native side

# Layout of the pool's control block: an array of i64 slots. Fields written by different
# threads sit on different 64-byte lines so that spinning on one does not slow the others.
# nonzero while a dispatch runs: one at a time per pool; a dispatch that finds it taken (a
# kernel called from another thread meanwhile) runs its loop on its own thread instead
POOL_LOCK = 0
POOL_DONE = 8  # chunks finished in this generation
POOL_GEN = 16  # low 32 bits of the generation: the futex word workers sleep on
POOL_SLEEPERS = 24  # workers inside futex_wait
POOL_TASK, POOL_ARGS, POOL_LO, POOL_HI, POOL_CHUNKS = 32, 33, 34, 35, 36
POOL_QUIT, POOL_THREADS = 37, 39  # POOL_DISPATCH (38) is the kernel's, see codegen
POOL_NEXT_ID = 40  # the id the next worker to start takes
# nonzero: waiting workers sleep now instead of spinning (a kernel that runs on the calling
# thread alone for a while: a spinning worker slows the core beside it on some hosts); the
# next dispatch clears it
POOL_REST = 41
# thread t's ticket, (generation << 32) | claim counter, at POOL_TICKETS + TICKET_STRIDE * t
POOL_TICKETS, TICKET_STRIDE = 48, 8

_CLAIM_BASE = 1 << 31  # a claim below this is a chunk; a counter starts at BASE - its chunks
# A waiting worker spins this many cycles (about a millisecond) before it sleeps in the
# kernel: calls that follow each other closely (a benchmark, a model's layers) then find it
# awake, and waking a sleeper costs tens of microseconds. Counted in cycles, not in pause
# instructions, whose cost differs by two orders of magnitude between CPUs.
_SPIN_CYCLES = 1 << 22
_CHUNKS_PER_THREAD = 4  # small enough chunks to even out threads that start late
_SYS_FUTEX, _FUTEX_WAIT_PRIVATE, _FUTEX_WAKE_PRIVATE = 202, 128, 129  # Linux x86-64
_SYS_SCHED_YIELD = 24


def pool_module(prefix: str) -> ir.Module:
    """Three functions over a control block (layout above):

    - ``prefix.worker(pool)``: entered once per worker thread, returns only when told to quit.
      It waits for a new generation (spinning, then sleeping on a futex), claims chunks
      until none are left, and waits again.
    - ``prefix.dispatch(pool, task, args, lo, hi)``: takes the pool (``POOL_LOCK``), publishes
      ``task`` over ``[lo, hi)`` cut into chunks, claims chunks itself, and returns when every
      chunk has finished; where another thread holds the pool, runs ``task`` on ``[lo, hi)``
      itself (the iterations of a parallel part are independent: the same values either way).
    - ``prefix.stop(pool)``: tells the workers to return.

    Claims. The ``chunks`` chunks of a loop are dealt out as runs: thread ``t`` owns chunks
    ``t * chunks // threads`` up to ``(t + 1) * chunks // threads``, claimed through its own
    ticket (the caller is thread 0, workers number themselves from 1 as they start). A
    ticket holds the generation in its high half and a claim counter in its low half, set to
    ``BASE - owned`` on publication; one ``fetch_add`` both claims the owner's next chunk and
    says which generation it belongs to, so a worker that woke late can never run a chunk of
    a generation with another generation's task: claims at or past ``BASE`` are empty, and a
    valid claim pins its generation, which the dispatcher cannot retire before it finishes.
    A thread whose own chunks are claimed claims on the next thread's ticket, and so on
    around; the dispatcher does so after publishing every ticket, so each chunk is run.
    """
    module = codegen.new_module(prefix)
    _emit_worker(module, prefix)
    _emit_dispatch(module, prefix)
    _emit_stop(module, prefix)
    return module


class _Block:
    """Accessors for the control block and the atomics over it."""

    def __init__(self, module: ir.Module, b: ir.IRBuilder, pool: ir.Value):
        self.b, self.pool, self.module = b, pool, module

    def slot(self, index: int, ty: ir.Type = _I64) -> ir.Value:
        return self.b.gep(self.pool, [ir.Constant(_I64, index)], source_etype=_I64)

    def load(self, index: int, ordering: str = "monotonic", ty: ir.Type = _I64) -> ir.Value:
        return self.b.load_atomic(self.slot(index), ordering, align=ty.width // 8, typ=ty)

    def store(self, index: int, value: ir.Value, ordering: str = "monotonic") -> None:
        self.store_at(self.slot(index), value, ordering)

    def store_at(self, ptr: ir.Value, value: ir.Value, ordering: str = "monotonic") -> None:
        # built directly: llvmlite's store_atomic still compares typed-pointer pointees
        store = ir.instructions.StoreAtomicInstr(self.b.block, value, ptr, ordering,
                                                 value.type.width // 8)
        self.b._insert(store)

    def cycles(self) -> ir.Value:
        fn = declare(self.module, "llvm.readcyclecounter", _I64, [])
        return self.b.call(fn, [])

    def pause(self) -> None:
        fn = declare(self.module, "llvm.x86.sse2.pause", _VOID, [])
        self.b.call(fn, [])

    def syscall(self, number: int, *args: ir.Value) -> None:
        fn = self.module.globals.get("syscall") or ir.Function(
            self.module, ir.FunctionType(_I64, [_I64], var_arg=True), name="syscall")
        self.b.call(fn, [ir.Constant(_I64, number), *args])

    def futex(self, op: int, value: ir.Value) -> None:
        # every variadic argument is 64-bit: glibc's syscall reads them all as long
        self.syscall(_SYS_FUTEX, self.slot(POOL_GEN), ir.Constant(_I64, op), value,
                     ir.Constant(_PTR, None))

    def ticket(self, thread: ir.Value) -> ir.Value:
        index = self.b.add(ir.Constant(_I64, POOL_TICKETS),
                           self.b.mul(thread, ir.Constant(_I64, TICKET_STRIDE)))
        return self.b.gep(self.pool, [index], source_etype=_I64)

    def first_chunk(self, thread: ir.Value, chunks: ir.Value, threads: ir.Value) -> ir.Value:
        """The first of the chunks thread ``thread`` owns: ``thread * chunks // threads``."""
        return self.b.udiv(self.b.mul(thread, chunks), threads)

    def claim_loop(self, me: ir.Value, on_empty: ir.Block) -> ir.Value:
        """Claim and run chunks, thread ``me``'s own first, then those left of threads ``me +
        1``, ``me + 2``, ... (wrapping around); branch to ``on_empty`` once a claim on each
        ticket in turn came back empty. Returns the generation (i32) of the last ticket
        claimed on, valid in ``on_empty``."""
        b = self.b
        fn = b.function
        before = b.block
        claim, run, other, next_ = (fn.append_basic_block(n)
                                    for n in ("claim", "run", "other", "next"))
        threads = self.load(POOL_THREADS)
        b.branch(claim)

        # owner: whose ticket is claimed on; left: tickets to try before giving up
        b.position_at_end(claim)
        owner, left = b.phi(_I64), b.phi(_I64)
        owner.add_incoming(me, before)
        left.add_incoming(threads, before)
        ticket = b.atomic_rmw("add", self.ticket(owner), ir.Constant(_I64, 1), "acq_rel")
        generation = b.trunc(b.lshr(ticket, ir.Constant(_I64, 32)), _I32)
        counter = b.and_(ticket, ir.Constant(_I64, 0xFFFFFFFF))
        b.cbranch(b.icmp_unsigned("<", counter, ir.Constant(_I64, _CLAIM_BASE)), run, other)

        # the owner's chunks run from first(owner) to first(owner + 1), claimed in order
        b.position_at_end(run)
        chunks = self.load(POOL_CHUNKS)
        end = self.first_chunk(b.add(owner, ir.Constant(_I64, 1)), chunks, threads)
        chunk = b.sub(end, b.sub(ir.Constant(_I64, _CLAIM_BASE), counter))
        lo, hi = self.load(POOL_LO), self.load(POOL_HI)
        n = b.sub(hi, lo)
        # chunk c covers [lo + c * n // chunks, lo + (c + 1) * n // chunks): sizes differ by 1
        start = b.add(lo, b.udiv(b.mul(chunk, n), chunks))
        stop = b.add(lo, b.udiv(b.mul(b.add(chunk, ir.Constant(_I64, 1)), n), chunks))
        task = indirect(b.inttoptr(self.load(POOL_TASK), _PTR), TASK_TYPE)
        b.call(task, [b.inttoptr(self.load(POOL_ARGS), _PTR), start, stop])
        b.atomic_rmw("add", self.slot(POOL_DONE), ir.Constant(_I64, 1), "release")
        owner.add_incoming(owner, run)
        left.add_incoming(left, run)
        b.branch(claim)

        b.position_at_end(other)
        remaining = b.sub(left, ir.Constant(_I64, 1))
        b.cbranch(b.icmp_unsigned("==", remaining, ir.Constant(_I64, 0)), on_empty, next_)
        b.position_at_end(next_)
        following = b.add(owner, ir.Constant(_I64, 1))
        wrapped = b.icmp_unsigned("==", following, threads)
        following = b.select(wrapped, ir.Constant(_I64, 0), following)
        owner.add_incoming(following, next_)
        left.add_incoming(remaining, next_)
        b.branch(claim)
        return generation


def _emit_worker(module: ir.Module, prefix: str) -> None:
    fn = ir.Function(module, ir.FunctionType(_VOID, [_PTR]), name=f"{prefix}.worker")
    fn.attributes.add("nounwind")
    entry, wait, spin, pause, sleep, woke, exit_ = (
        fn.append_basic_block(n) for n in ("entry", "wait", "spin", "pause", "sleep", "woke", "exit"))
    b = ir.IRBuilder(entry)
    p = _Block(module, b, fn.args[0])
    me = b.atomic_rmw("add", p.slot(POOL_NEXT_ID), ir.Constant(_I64, 1), "monotonic")
    start = p.cycles()
    b.branch(wait)

    # seen: the generation last worked on; since: when this wait began (cycle counter)
    b.position_at_end(wait)
    seen, since = b.phi(_I32), b.phi(_I64)
    seen.add_incoming(ir.Constant(_I32, 0), entry)
    since.add_incoming(start, entry)
    current = p.load(POOL_GEN, "acquire", _I32)
    b.cbranch(b.icmp_unsigned("!=", current, seen), woke, spin)

    b.position_at_end(spin)
    waited = b.sub(p.cycles(), since)
    patient = b.icmp_unsigned("<", waited, ir.Constant(_I64, _SPIN_CYCLES))
    awake = b.icmp_unsigned("==", p.load(POOL_REST), ir.Constant(_I64, 0))
    b.cbranch(b.and_(patient, awake), pause, sleep)
    b.position_at_end(pause)
    p.pause()
    seen.add_incoming(seen, pause)
    since.add_incoming(since, pause)
    b.branch(wait)

    # futex_wait returns at once if the generation moved on after we read it; the
    # sleeper count is seq_cst on both sides, so the dispatcher's wake cannot be missed
    b.position_at_end(sleep)
    b.atomic_rmw("add", p.slot(POOL_SLEEPERS), ir.Constant(_I64, 1), "seq_cst")
    p.futex(_FUTEX_WAIT_PRIVATE, b.zext(seen, _I64))
    b.atomic_rmw("sub", p.slot(POOL_SLEEPERS), ir.Constant(_I64, 1), "seq_cst")
    seen.add_incoming(seen, b.block)
    since.add_incoming(p.cycles(), b.block)
    b.branch(wait)

    b.position_at_end(woke)
    quit_ = b.icmp_unsigned("!=", p.load(POOL_QUIT, "acquire"), ir.Constant(_I64, 0))
    work = fn.append_basic_block("work")
    b.cbranch(quit_, exit_, work)
    b.position_at_end(work)
    empty = fn.append_basic_block("empty")
    generation = p.claim_loop(me, empty)
    b.position_at_end(empty)
    seen.add_incoming(generation, empty)
    since.add_incoming(p.cycles(), empty)
    b.branch(wait)

    b.position_at_end(exit_)
    b.ret_void()


def _publish(p: _Block, chunks: ir.Value) -> None:
    """Start a new generation: each thread's ticket set to claim its run of the ``chunks``
    chunks, then the generation itself published and sleeping workers woken."""
    b = p.b
    fn = b.function
    generation = b.add(b.zext(p.load(POOL_GEN, ty=_I32), _I64), ir.Constant(_I64, 1))
    generation = b.and_(generation, ir.Constant(_I64, 0xFFFFFFFF))
    high = b.shl(generation, ir.Constant(_I64, 32))
    threads = p.load(POOL_THREADS)
    before = b.block
    each, published = fn.append_basic_block("each_ticket"), fn.append_basic_block("published")
    b.branch(each)
    b.position_at_end(each)
    t = b.phi(_I64)
    t.add_incoming(ir.Constant(_I64, 0), before)
    following = b.add(t, ir.Constant(_I64, 1))
    owned = b.sub(p.first_chunk(following, chunks, threads), p.first_chunk(t, chunks, threads))
    ticket = b.or_(high, b.sub(ir.Constant(_I64, _CLAIM_BASE), owned))
    p.store_at(p.ticket(t), ticket, "seq_cst")
    t.add_incoming(following, b.block)
    b.cbranch(b.icmp_unsigned("<", following, threads), each, published)
    b.position_at_end(published)
    p.store(POOL_GEN, b.trunc(generation, _I32), "seq_cst")
    sleepers = p.load(POOL_SLEEPERS, "seq_cst")
    with b.if_then(b.icmp_unsigned("!=", sleepers, ir.Constant(_I64, 0))):
        p.futex(_FUTEX_WAKE_PRIVATE, ir.Constant(_I64, 0x7FFFFFFF))


def _emit_dispatch(module: ir.Module, prefix: str) -> None:
    fn = ir.Function(module, DISPATCH_TYPE, name=f"{prefix}.dispatch")
    fn.attributes.add("nounwind")
    pool, task, args, lo, hi = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    p = _Block(module, b, pool)
    taken = b.cmpxchg(p.slot(POOL_LOCK), ir.Constant(_I64, 0), ir.Constant(_I64, 1),
                      "acquire", "monotonic")
    shared, alone = fn.append_basic_block("shared"), fn.append_basic_block("alone")
    b.cbranch(b.extract_value(taken, 1), shared, alone)
    b.position_at_end(alone)
    b.call(indirect(task, TASK_TYPE), [args, lo, hi])
    b.ret_void()
    b.position_at_end(shared)
    n = b.sub(hi, lo)
    pieces = b.mul(p.load(POOL_THREADS), ir.Constant(_I64, _CHUNKS_PER_THREAD))
    chunks = b.select(b.icmp_signed("<", n, pieces), n, pieces)
    none = ir.Constant(_I64, 0)
    chunks = b.select(b.icmp_signed("<", chunks, none), none, chunks)  # an empty range
    p.store(POOL_TASK, b.ptrtoint(task, _I64))
    p.store(POOL_ARGS, b.ptrtoint(args, _I64))
    p.store(POOL_LO, lo)
    p.store(POOL_HI, hi)
    p.store(POOL_CHUNKS, chunks)
    p.store(POOL_DONE, ir.Constant(_I64, 0))
    p.store(POOL_REST, ir.Constant(_I64, 0))
    _publish(p, chunks)

    empty, wait, pause, done = (fn.append_basic_block(n) for n in ("empty", "wait", "pause", "done"))
    p.claim_loop(ir.Constant(_I64, 0), empty)
    b.position_at_end(empty)
    # the chunks are all claimed; wait for the ones other threads still run, yielding the
    # CPU after a while in case their thread waits for it (more threads than free cores)
    began = p.cycles()
    b.branch(wait)
    b.position_at_end(wait)
    finished = p.load(POOL_DONE, "acquire")
    b.cbranch(b.icmp_unsigned("==", finished, chunks), done, pause)
    b.position_at_end(pause)
    p.pause()
    patient = b.icmp_unsigned("<", b.sub(p.cycles(), began), ir.Constant(_I64, _SPIN_CYCLES))
    with b.if_then(b.not_(patient)):
        p.syscall(_SYS_SCHED_YIELD)
    b.branch(wait)
    b.position_at_end(done)
    p.store(POOL_LOCK, none, "release")
    b.ret_void()


def _emit_stop(module: ir.Module, prefix: str) -> None:
    fn = ir.Function(module, ir.FunctionType(_VOID, [_PTR]), name=f"{prefix}.stop")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    p = _Block(module, b, fn.args[0])
    p.store(POOL_QUIT, ir.Constant(_I64, 1), "seq_cst")
    _publish(p, ir.Constant(_I64, 0))
    b.ret_void()
