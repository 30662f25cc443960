"""The thread pool kernels run their parallel loops on.

A top-level loop the dependence analysis proves parallel is cut into chunks shared by the
calling thread and ``threads - 1`` workers. Each worker is a Python thread that enters the
native worker loop once (ctypes releases the GIL) and then waits on a control block in native
code (spinning, then sleeping on a futex), so a dispatch costs microseconds, not a Python
round trip. The native side is LLVM IR built here (``pool_module``); a kernel reaches the
dispatcher through slot ``codegen.POOL_DISPATCH`` of the block.
"""

from __future__ import annotations

import atexit
import ctypes
import threading

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
        self.lock = threading.Lock()  # one dispatch at a time per pool
        raw = np.zeros(POOL_SLOTS + 8, np.int64)
        start = (-raw.ctypes.data % 64) // 8  # the control block on its own cache lines
        self.block = raw[start:start + POOL_SLOTS]
        self.block[POOL_THREADS] = threads
        self.block[POOL_DISPATCH] = addresses["dispatch"]
        self.address = self.block.ctypes.data
        self._raw = raw
        worker = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(addresses["worker"])
        self._stop = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(addresses["stop"])
        self.workers = [threading.Thread(target=worker, args=(self.address,), daemon=True,
                                         name=f"tensorize-worker-{k}") for k in range(threads - 1)]
        for t in self.workers:
            t.start()

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
            obj, _, _ = jit.cached_object(jit.key("pool"), lambda: (codegen.object_code(
                codegen.optimize(pool_module(_POOL_PREFIX))), {}))
            names = ("worker", "dispatch", "stop")
            addresses = jit.load(obj, [f"{_POOL_PREFIX}.{n}" for n in names])
            _pools[threads] = _Pool(threads, dict(zip(names, addresses)))
        return _pools[threads]


@atexit.register
def _close_pools() -> None:
    for pool in _pools.values():
        pool.close()




# ---------------------------------------------------------------------------
# the native side

# Layout of the pool's control block: an array of i64 slots. Fields written by different
# threads sit on different 64-byte lines so that spinning on one does not slow the others.
POOL_TICKET = 0  # (generation << 32) | claim counter, see pool_ir
POOL_DONE = 8  # chunks finished in this generation
POOL_GEN = 16  # low 32 bits of the generation: the futex word workers sleep on
POOL_SLEEPERS = 24  # workers inside futex_wait
POOL_TASK, POOL_ARGS, POOL_LO, POOL_HI, POOL_CHUNK = 32, 33, 34, 35, 36
POOL_QUIT, POOL_THREADS = 37, 39  # POOL_DISPATCH (38) is the kernel's, see codegen
POOL_SLOTS = 48

_CLAIM_BASE = 1 << 31  # a claim below this is a chunk; the counter starts at BASE - chunks
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
    - ``prefix.dispatch(pool, task, args, lo, hi)``: publishes ``task`` over ``[lo, hi)`` cut
      into chunks, claims chunks itself, and returns when every chunk has finished.
    - ``prefix.stop(pool)``: tells the workers to return.

    Claims. The ticket holds the generation in its high half and a claim counter in its low
    half, set to ``BASE - chunks`` on publication; one ``fetch_add`` both claims a chunk and
    says which generation it belongs to, so a worker that woke late can never run a chunk of
    a generation with another generation's task: claims at or past ``BASE`` are empty, and a
    valid claim pins its generation, which the dispatcher cannot retire before it finishes.
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
        # built directly: llvmlite's store_atomic still compares typed-pointer pointees
        store = ir.instructions.StoreAtomicInstr(self.b.block, value, self.slot(index), ordering,
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

    def claim_loop(self, on_empty: ir.Block) -> ir.Value:
        """Claim and run chunks; branch to ``on_empty`` when a claim comes back empty.
        Returns the claimed ticket's generation (i32), valid in ``on_empty``."""
        b = self.b
        fn = b.function
        claim, run = fn.append_basic_block("claim"), fn.append_basic_block("run")
        b.branch(claim)
        b.position_at_end(claim)
        ticket = b.atomic_rmw("add", self.slot(POOL_TICKET), ir.Constant(_I64, 1), "acq_rel")
        generation = b.trunc(b.lshr(ticket, ir.Constant(_I64, 32)), _I32)
        counter = b.and_(ticket, ir.Constant(_I64, 0xFFFFFFFF))
        b.cbranch(b.icmp_unsigned("<", counter, ir.Constant(_I64, _CLAIM_BASE)), run, on_empty)
        b.position_at_end(run)
        chunk = b.sub(ir.Constant(_I64, _CLAIM_BASE - 1), counter)
        size = self.load(POOL_CHUNK)
        lo = b.add(self.load(POOL_LO), b.mul(chunk, size))
        end = b.add(lo, size)
        hi = self.load(POOL_HI)
        hi = b.select(b.icmp_signed("<", end, hi), end, hi)
        task = indirect(b.inttoptr(self.load(POOL_TASK), _PTR), TASK_TYPE)
        b.call(task, [b.inttoptr(self.load(POOL_ARGS), _PTR), lo, hi])
        b.atomic_rmw("add", self.slot(POOL_DONE), ir.Constant(_I64, 1), "release")
        b.branch(claim)
        return generation


def _emit_worker(module: ir.Module, prefix: str) -> None:
    fn = ir.Function(module, ir.FunctionType(_VOID, [_PTR]), name=f"{prefix}.worker")
    fn.attributes.add("nounwind")
    entry, wait, spin, pause, sleep, woke, exit_ = (
        fn.append_basic_block(n) for n in ("entry", "wait", "spin", "pause", "sleep", "woke", "exit"))
    b = ir.IRBuilder(entry)
    p = _Block(module, b, fn.args[0])
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
    b.cbranch(b.icmp_unsigned("<", waited, ir.Constant(_I64, _SPIN_CYCLES)), pause, sleep)
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
    generation = p.claim_loop(empty)
    b.position_at_end(empty)
    seen.add_incoming(generation, empty)
    since.add_incoming(p.cycles(), empty)
    b.branch(wait)

    b.position_at_end(exit_)
    b.ret_void()


def _publish(p: _Block, chunks: ir.Value) -> None:
    """Start a new generation with ``chunks`` claims and wake sleeping workers."""
    b = p.b
    generation = b.add(b.lshr(p.load(POOL_TICKET), ir.Constant(_I64, 32)), ir.Constant(_I64, 1))
    generation = b.and_(generation, ir.Constant(_I64, 0xFFFFFFFF))
    ticket = b.or_(b.shl(generation, ir.Constant(_I64, 32)),
                   b.sub(ir.Constant(_I64, _CLAIM_BASE), chunks))
    p.store(POOL_TICKET, ticket, "seq_cst")
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
    one = ir.Constant(_I64, 1)
    n = b.sub(hi, lo)
    pieces = b.mul(p.load(POOL_THREADS), ir.Constant(_I64, _CHUNKS_PER_THREAD))
    size = b.sdiv(b.add(n, b.sub(pieces, one)), pieces)
    size = b.select(b.icmp_signed("<", size, one), one, size)
    chunks = b.sdiv(b.add(n, b.sub(size, one)), size)
    p.store(POOL_TASK, b.ptrtoint(task, _I64))
    p.store(POOL_ARGS, b.ptrtoint(args, _I64))
    p.store(POOL_LO, lo)
    p.store(POOL_HI, hi)
    p.store(POOL_CHUNK, size)
    p.store(POOL_DONE, ir.Constant(_I64, 0))
    _publish(p, chunks)

    empty, wait, pause, done = (fn.append_basic_block(n) for n in ("empty", "wait", "pause", "done"))
    p.claim_loop(empty)
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
    b.ret_void()


def _emit_stop(module: ir.Module, prefix: str) -> None:
    fn = ir.Function(module, ir.FunctionType(_VOID, [_PTR]), name=f"{prefix}.stop")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    p = _Block(module, b, fn.args[0])
    p.store(POOL_QUIT, ir.Constant(_I64, 1), "seq_cst")
    _publish(p, ir.Constant(_I64, 0))
    b.ret_void()
