"""Compiling programs into kernels, the numpy calling convention, and checking kernels
against the interpreter.

    kernel = compile(func)             # LLVM O3 for this CPU; cached in memory and on disk
    kernel(A=a, B=b, C=c)              # or kernel(a, b, c): outputs are written in place

Arrays must be C-contiguous numpy arrays of exactly the declared dtype and shape; anything
else raises ``ValueError`` naming the buffer before native code runs. Non-contiguous views
are rejected rather than copied, since a copy of an output would silently drop the writes.
Any alignment works. An output may not share memory with another buffer (the compiled code
assumes it does not). Temporaries are allocated zeroed for every call.

Compiled code is kept in memory per program and on disk (``jit.py``) under a key made of the
program, the compiler's own source, the target, and the fingerprint of every intrinsic the
program calls (``fingerprint``: its semantics and its emitter's source). A second run loads
the object code without LLVM. Programs calling an emitter whose source cannot be read are
not cached on disk.

Threads: a parallel top-level loop runs on the host's thread pool (``pool.py``), whose
dispatch costs microseconds, not a Python round trip.

Calls: a kernel's arguments are bound and checked in native code compiled with it
(``codegen.add_caller``; the kernel's own ``__call__``), which runs the kernel when every
array is as compiled; a call it refuses takes the Python path, which checks the same things
and says what is wrong. A do-nothing kernel of three buffers costs about 0.05 us a
positional call and 0.16 us by keyword that way, against 1.3 and 1.6 us on the Python path.
"""

from __future__ import annotations

import builtins
import ctypes
import functools
import hashlib
import keyword
import inspect
import operator
import os
import struct
import sys
import sysconfig
import uuid
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

import numpy as np

from . import analysis, calls, codegen, jit, target
from . import lower as lowering
from .descriptor import Descriptor
from .emitter import Emitter
from .printer import show
from .target import Target
from .budgets import BudgetError, Budgets, format_bytes
from .ir import (Accumulate, Buffer, Call, Cast, Compare, Const, Expr, For, If, Load, PrimFunc, Seq,
                 Stmt, Store, Unary, children, is_float, numpy_dtype, stmt_exprs, walk_expr,
                 walk_stmts)
from .verify import verify


_ENTRY = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)


def emit_llvm(func: PrimFunc, optimized: bool = True) -> str:
    """LLVM IR of ``func``'s kernel (``--emit llvm``), after O3 unless ``optimized`` is false."""
    module = codegen.kernel_module(lowering.lower(func), _display_symbol(func), target.host().emitter)
    return str(codegen.optimize(module)) if optimized else str(module)


def emit_asm(func: PrimFunc) -> str:
    """Assembly of ``func``'s kernel for this CPU (``--emit asm``)."""
    module = codegen.kernel_module(lowering.lower(func), _display_symbol(func), target.host().emitter)
    return codegen.assembly(codegen.optimize(module))


def _display_symbol(func: PrimFunc) -> str:
    return f"tensorize.{func.name}"


def fingerprint(desc: Descriptor, emitter: Emitter) -> Optional[str]:
    """What compiled code calling ``desc`` through ``emitter`` depends on: the intrinsic's
    name and semantics, the source of the module that defines the emitter's class (a user's
    plugin as much as the built-ins), and what the emitter says it depends on beyond that
    (``fingerprint()``: an LLVM IR text). None when the emitter's source cannot be read (a
    class made at run time, a module without a file): then nothing on disk can be known to
    match."""
    try:
        source = inspect.getsourcefile(type(emitter))
        digest = hashlib.sha256(Path(source).read_bytes()).hexdigest() if source else None
    except (TypeError, OSError):
        digest = None
    if digest is None:
        return None
    extra = getattr(emitter, "fingerprint", lambda: "")()  # e.g. LLVM IR text
    return f"{desc.name}|{show(desc.semantics)}|{type(emitter).__qualname__}|{digest}|{extra}"


def _intrinsics_version(func: PrimFunc, where: Target) -> Optional[str]:
    """The fingerprints of the intrinsics ``func`` calls, with the emitters ``where`` gives
    them; None when one cannot be known (see ``fingerprint``)."""
    descs = {s.intrinsic for s in walk_stmts(func.body) if isinstance(s, Call)}
    parts = [fingerprint(d, where.emitter(d)) for d in sorted(descs, key=lambda d: d.name)]
    return None if None in parts else "\n".join(parts)




# Threads a kernel may use: each is an OS thread parked in native code, so a few thousand
# take seconds to start and only contend for the cores.
MAX_THREADS = 256


def default_threads() -> int:
    """The threads a kernel uses unless told: the CPUs this process may run on, or its share
    of them when it is one of several processes working side by side (``share_cores``)."""
    return _cpus() if _share is None else _share


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


_share: Optional[int] = None


def share_cores(processes: int) -> None:
    """This process is one of ``processes`` that run side by side (a campaign's workers): its
    kernels default to its share of the CPUs, since more threads only contend (and the pool's
    workers spin a while before they sleep)."""
    global _share
    _share = max(1, _cpus() // max(1, processes))


# ---------------------------------------------------------------------------
# compiling


# A kernel with a pool times its first calls on the pool and on the calling thread alone,
# this many of each counted, in runs of THREAD_TRIAL_RUN calls whose first is not counted,
# and keeps the faster (``Kernel._trial_call``);
# 0 keeps the pool. A call on the pool longer than THREAD_TRIAL_SECONDS ends the trial on the
# pool at once: moving data between cores costs microseconds, not milliseconds, and the
# calls on one thread would cost the most there.
THREAD_TRIAL_CALLS = 8
THREAD_TRIAL_RUN = 3
THREAD_TRIAL_SECONDS = 1e-3
# The trial runs again THREAD_RETRIAL_CALLS calls after a choice, then after twice as many
# calls each time it keeps the same way (THREAD_RETRIAL_MOST at most), and after
# THREAD_RETRIAL_CALLS again where it changes: a virtual machine's second CPU is slow now
# and then for seconds, and a choice made then would stay. 0: the first choice stays.
THREAD_RETRIAL_CALLS = 1 << 12
THREAD_RETRIAL_MOST = 1 << 20
_clock = time.perf_counter


@dataclass(frozen=True)
class _Compiled:
    address: int
    parallel: bool  # some part runs on the pool
    caller: int  # the address of ``codegen.add_caller``'s function, 0 when it has none
    source: str  # "compiled" or "disk"
    seconds: float


_memory: dict = {}  # see _compiled


def clear_memory_cache() -> None:
    """Forget compiled functions (their code stays loaded); the next compile reads the disk."""
    _memory.clear()


def _build(func: PrimFunc, symbol: str) -> tuple[bytes, dict]:
    plan = lowering.lower(func)
    module = codegen.kernel_module(plan, symbol, target.host().emitter)
    caller = codegen.add_caller(module, symbol, func)
    obj = codegen.object_code(codegen.optimize(module))
    return obj, {"parallel": any(p.parallel for p in plan.parts), "caller": caller}


def _compiled(func: PrimFunc) -> tuple[_Compiled, bool]:
    # A program is its own key in memory: a call holds its descriptor, and descriptors are
    # equal only to themselves, so an intrinsic registered again compiles again. Its float
    # constants are also keyed by their bits: 0.0 == -0.0 in Python, not in the code.
    key = (func, _float_bits(func))
    hit = _memory.get(key)
    if hit is not None:
        return hit, True
    # one compile at a time: LLVM's target machine and the engine are shared
    with jit.compile_lock:
        hit = _memory.get(key)
        return (hit, True) if hit is not None else (_compile_now(func, key), False)


def _float_bits(func: PrimFunc) -> tuple[bytes, ...]:
    return tuple(struct.pack("<d", x.value) for s in walk_stmts(func.body) for e in stmt_exprs(s)
                 for x in walk_expr(e) if isinstance(x, Const) and is_float(x.dtype))


def _compile_now(func: PrimFunc, memory_key) -> _Compiled:
    t0 = time.perf_counter()
    # codegen trusts the static bound check (every access in bounds, no index wraps), so a
    # program built by hand is checked here as a parsed one is: a VerifyError, not a stray write
    verify(func)
    # lowering is a function of the program and of the code version in the key, so a disk
    # hit skips it along with LLVM
    version = _intrinsics_version(func, target.host())
    if version is None:
        # an emitter with no readable source: compile, never from or to disk, under a
        # symbol of its own (the JIT reuses code by symbol)
        key = jit.key(repr(replace(func, doc="")) + uuid.uuid4().hex)
        symbol = f"tensorize.k{key[:24]}"
        (obj, meta), source = _build(func, symbol), "compiled"
    else:
        key = jit.key(repr(replace(func, doc="")) + version)
        symbol = f"tensorize.k{key[:24]}"
        obj, meta, source = jit.cached_object(key, lambda: _build(func, symbol))
    symbols = [symbol, f"{symbol}.call"] if meta.get("caller") else [symbol]
    address, *caller = jit.load(obj, symbols)
    done = _Compiled(address, bool(meta["parallel"]), caller[0] if caller else 0, source,
                     time.perf_counter() - t0)
    _memory[memory_key] = done
    return done


def compile(func: PrimFunc, threads: Optional[int] = None) -> "Kernel":
    """JIT-compile ``func`` for this CPU. ``threads``: threads for parallel loops (default:
    the CPUs this process may run on; 1 runs everything on the calling thread)."""
    threads = default_threads() if threads is None else int(threads)
    if not 1 <= threads <= MAX_THREADS:
        raise ValueError(f"threads must be from 1 to {MAX_THREADS} (runtime.MAX_THREADS), not {threads}")
    compiled, in_memory = _compiled(func)
    uses_pool = threads > 1 and compiled.parallel
    return Kernel(func, compiled, target.host().pool(threads) if uses_pool else None, threads,
                  "memory" if in_memory else compiled.source)


_NDARRAY = np.ndarray  # read once: a call compares every array's type with it

# A native call (``codegen.add_caller``) of a kernel doing fewer operations than this
# (``calls.op_count``, a copied element counting one) keeps the GIL: releasing and taking it
# again costs about 50 ns, 5% of a 30^3 product's 1 us call, while other threads would wait
# at most some 100 us (scalar code) for so small a kernel, far under Python's own switch
# interval of 5 ms. Larger kernels release it, as ctypes' calls on the Python path do.
GIL_HELD_OPS = 100_000


# ---------------------------------------------------------------------------
# native calls (``codegen.add_caller``)


class _MethodDef(ctypes.Structure):
    """CPython's ``PyMethodDef``."""
    _fields_ = [("ml_name", ctypes.c_char_p), ("ml_meth", ctypes.c_void_p),
                ("ml_flags", ctypes.c_int), ("ml_doc", ctypes.c_char_p)]


_METH_FASTCALL_KEYWORDS = 0x0080 | 0x0002  # METH_FASTCALL | METH_KEYWORDS
_new_builtin = ctypes.PYFUNCTYPE(ctypes.py_object, ctypes.c_void_p, ctypes.py_object,
                                 ctypes.py_object)(("PyCFunction_NewEx", ctypes.pythonapi))
_C_API = {name: ctypes.cast(getattr(ctypes.pythonapi, name, None), ctypes.c_void_p).value
          for name in ("Py_IncRef", "PyEval_SaveThread", "PyEval_RestoreThread",
                       "PyObject_Vectorcall")}  # (None where this interpreter lacks one)


@functools.lru_cache(maxsize=None)
def native_calls() -> bool:
    """Whether kernels take their arrays in native code here (``codegen.add_caller``): on
    64-bit CPython with a GIL, when every field offset that code reads
    (``codegen.NDARRAY_FIELDS``, ``TUPLE_*``, the writeable flag) is where this process's
    numpy and CPython keep it, read back from real arrays and tuples. Otherwise every call
    takes the Python path."""
    if sys.implementation.name != "cpython" or struct.calcsize("P") != 8 or \
            sysconfig.get_config_var("Py_GIL_DISABLED") or not all(_C_API.values()):
        return False
    return _layout_agrees()


def _layout_agrees() -> bool:
    fields = codegen.NDARRAY_FIELDS
    # every field read lies inside the object
    if np.ndarray.__basicsize__ < fields["flags"] + 4 or tuple.__basicsize__ < codegen.TUPLE_ITEMS:
        return False

    def word(address: int) -> int:
        return ctypes.c_uint64.from_address(address).value

    def half(address: int) -> int:
        return ctypes.c_int32.from_address(address).value

    base = np.arange(48, dtype=np.float32).reshape(6, 8)
    read_only = np.ones((3, 5), np.int8)
    read_only.flags.writeable = False
    arrays = [base, base[1:, ::3], base.T, read_only, np.zeros((2, 3, 4), np.float64),
              np.zeros(7, np.uint8)]
    for a in arrays:
        p = id(a)
        if (word(p + fields["ob_type"]) != id(type(a)) or word(p + fields["data"]) != a.ctypes.data
                or half(p + fields["nd"]) != a.ndim or word(p + fields["descr"]) != id(a.dtype)):
            return False
        flags = half(p + fields["flags"])
        if bool(flags & codegen.NPY_ARRAY_WRITEABLE) != a.flags.writeable:
            return False
        # only now, the first fields agreeing, follow the pointers to shape and strides
        dims, steps = word(p + fields["dimensions"]), word(p + fields["strides"])
        if not dims or not steps:
            return False
        if tuple(word(dims + 8 * k) for k in range(a.ndim)) != a.shape or \
                tuple(ctypes.c_int64.from_address(steps + 8 * k).value for k in range(a.ndim)) != a.strides:
            return False
    base.flags.writeable = False  # the flag read is the live one
    if half(id(base) + fields["flags"]) & codegen.NPY_ARRAY_WRITEABLE:
        return False
    held = tuple(arrays)
    return word(id(held) + codegen.TUPLE_SIZE) == len(held) and all(
        word(id(held) + codegen.TUPLE_ITEMS + 8 * k) == id(a) for k, a in enumerate(held))


class Kernel:
    """A compiled function, called with numpy arrays by keyword or position."""

    def __init__(self, func: PrimFunc, compiled: _Compiled, pool, threads: int,
                 source: str):
        self.func = func
        self.threads = threads
        self.source = source  # where the code came from: "compiled", "disk" or "memory"
        self.compile_seconds = compiled.seconds if source != "memory" else 0.0
        self._entry = _ENTRY(compiled.address)
        self._pool = pool
        self._writes = func.written
        self._params = func.params
        self._allocs = func.allocs
        # the temporaries whose zeros the program may read; the others it fills itself first
        filled = analysis.filled_before_read(func)
        self._zeroed = [b.name not in filled for b in func.allocs]
        self._dtypes = [np.dtype(numpy_dtype(b.dtype)) for b in func.params]
        self._strides = [tuple(n * d.itemsize for n in b.strides) for b, d in zip(func.params, self._dtypes)]
        self._written = [b.name in self._writes for b in func.params]
        self._names = [b.name for b in func.params]
        self._specs = list(zip(self._params, self._dtypes, self._strides,
                               [b.shape for b in func.params], self._written))
        self._last: Optional[tuple] = None  # see _pointers
        self._pick, self._run = _fast_path(self._names, self._specs)
        self._local = threading.local()  # see _with_temporaries
        self._native = self._block = None  # see _native_call
        self._ways: Optional[dict] = None  # see _native_call
        self._own_class = False  # see _native_call
        if compiled.caller and native_calls():
            self._native_call(compiled.caller, filled)
        # where the parallel parts run: the pool's control block, or 0 for the calling
        # thread alone; decided by the first calls (see _trial_call)
        self._pool_address = pool.address if pool is not None else 0
        self._trial: Optional[list] = [[], []] if pool is not None and THREAD_TRIAL_CALLS else None
        # calls until the trial runs again on the Python path (0 at the end: never; the
        # native checks count in their block), the last interval, the way the last trial
        # kept (True: the pool)
        self._retrial_in, self._retrial_every, self._kept = 0, 0, None
        if pool is not None and self._trial is None:
            self._keep(True, 0)

    def _native_call(self, address: int, filled: frozenset) -> None:
        """Make ``_native``, the builtin function of ``codegen.add_caller``'s code bound to
        ``_block`` (its ``CALLER_*`` slots: this process's addresses), when what that code
        checks is what the Python path checks; else leave it None. ``filled``: what
        ``analysis.filled_before_read`` gave for the kernel's function."""
        layout = codegen.caller_layout(self.func, filled)
        expected = [(b.shape, strides, b.size * d.itemsize, written)
                    for b, d, strides, written in zip(self._params, self._dtypes, self._strides,
                                                      self._written)]
        # each dtype must be the builtin one an array of it carries (a native check compares
        # the dtype object itself)
        if layout is None or layout["buffers"] != expected or \
                any(np.empty(0, d).dtype is not d for d in self._dtypes):
            return
        n = len(self._names)
        names = [sys.intern(name) for name in self._names]
        block = np.zeros(codegen.CALLER_NAMES + 2 * n, np.int64)
        block[codegen.CALLER_NDARRAY] = id(np.ndarray)
        block[codegen.CALLER_OK] = id(None)
        block[codegen.CALLER_FAIL] = id(False)
        block[codegen.CALLER_INCREF] = _C_API["Py_IncRef"]
        block[codegen.CALLER_SAVE_THREAD] = _C_API["PyEval_SaveThread"]
        block[codegen.CALLER_RESTORE_THREAD] = _C_API["PyEval_RestoreThread"]
        block[codegen.CALLER_POOL] = self._pool.address if self._pool is not None else 0
        block[codegen.CALLER_RELEASE_GIL] = calls.op_count(self.func.body, per_store=1) >= GIL_HELD_OPS
        area = None
        if layout["area"]:  # the temporaries past the stack's share, the same for both ways
            area = _aligned_bytes(layout["area"])
            block[codegen.CALLER_AREA] = area.ctypes.data
        block[codegen.CALLER_NAMES:codegen.CALLER_NAMES + n] = [id(x) for x in names]
        block[codegen.CALLER_NAMES + n:] = [id(d) for d in self._dtypes]
        # The builtin is this kernel's own class's ``__call__`` (a builtin binds no ``self``):
        # a call goes from the interpreter straight into the native checks, and one they
        # refuse calls ``_fallback`` from there, on the same arguments. A kernel with a pool
        # has two (``_ways``): on the pool, whose dispatcher takes it for one call at a time
        # (``pool.POOL_LOCK``), and on the calling thread alone, a block of its own pointing
        # at no pool; while its thread trial runs, its class's ``__call__`` is the Python
        # one, and after it the kept way's builtin, which counts the calls to the next trial
        # (``CALLER_COUNTDOWN``) and hands the one that ends the count to ``_fallback``.
        direct = type(self) is Kernel
        fallback = self._fallback if direct else None
        if direct:
            block[codegen.CALLER_FALLBACK] = id(fallback)
            block[codegen.CALLER_VECTORCALL] = _C_API["PyObject_Vectorcall"]
        method = _MethodDef(self.func.name.encode(), address, _METH_FASTCALL_KEYWORDS, None)
        # the builtin holds its block (its ``self``) and, as its ``__module__``, everything
        # else the block or the code points to: they live as long as it does, whoever holds it
        native = _new_builtin(ctypes.addressof(method), block, (method, names, fallback, area))
        self._native, self._block = native, block
        if self._pool is not None:
            alone_block = block.copy()
            alone_block[codegen.CALLER_POOL] = 0
            alone = _new_builtin(ctypes.addressof(method), alone_block,
                                 (method, names, fallback, area))
            self._ways = {True: (native, block), False: (alone, alone_block)}
        if direct:
            # a class of its own, whose ``__call__`` only this kernel's trial switches
            self.__class__ = type("Kernel", (Kernel,), {"__slots__": (), "__module__": __name__})
            self._own_class = True
            if self._pool is None:
                type(self).__call__ = native

    @property
    def native_runs(self) -> int:
        """How many calls ran through ``codegen.add_caller``'s checks (0 without them)."""
        if self._ways is not None:
            return sum(int(block[codegen.CALLER_RUNS]) for _, block in self._ways.values())
        return int(self._block[codegen.CALLER_RUNS]) if self._block is not None else 0

    def __repr__(self) -> str:
        return f"<Kernel {self.func.name} threads={self.threads} from {self.source}>"

    @property
    def __signature__(self) -> inspect.Signature:
        """The function's parameters, in order, each annotated with its dtype and shape as
        the script writes them (``f32[64, 64]``): what ``inspect.signature`` (and the tools
        built on it) shows, since ``__call__`` takes any arguments (it may be a builtin)."""
        kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
        return inspect.Signature(
            [inspect.Parameter(b.name, kind, annotation=f"{b.dtype}[{', '.join(map(str, b.shape))}]")
             for b in self._params], return_annotation=None)

    @property
    def threads_in_use(self) -> Optional[int]:
        """The threads the parallel parts run on: ``threads``, or 1 where the first calls
        found the calling thread alone faster (``_trial_call``); None while they are being
        timed (the first calls, and again from time to time)."""
        if self._trial is not None:
            return None
        return self.threads if self._pool_address else 1

    def __call__(self, /, *args: np.ndarray, **kwargs: np.ndarray) -> None:
        # A kernel with native checks (``codegen.add_caller``) has them as its class's
        # ``__call__``, but while a kernel with a pool times its calls (``_trial_call``): then
        # it comes here, and so does a kernel without them. The checks bind and check the
        # arrays, and run the kernel, in native code; ``None`` when they did. Anything they
        # refuse takes the Python path, which says what is wrong or runs what it accepts.
        if self._trial is not None:
            self._trial_call(args, kwargs)
            return
        self._retrial_in -= 1
        if self._retrial_in == 0:
            self._start_trial()
            self._trial_call(args, kwargs)
            return
        native = self._native
        if native is not None and native(*args, **kwargs) is None:
            return
        self._python_call(args, kwargs)

    def _trial_call(self, args: tuple, kwargs: dict) -> None:
        """One of the first calls of a kernel with a pool: they run its parallel parts on
        the pool and on the calling thread alone in turn, in runs of ``THREAD_TRIAL_RUN``
        calls, timed, and the faster way is kept for the calls after them (at least
        ``THREAD_TRIAL_CALLS`` each by medians, the first call of each run not counted: it
        finds the data in the caches the other way left it in). A call on the pool of more
        than ``THREAD_TRIAL_SECONDS`` ends the trial there. Both ways compute the same
        values: a parallel part's iterations are independent and each does the same
        operations on either. Threads do not always pay: a part of a few microseconds whose
        other threads read what a serial part just wrote moves those lines between the
        cores each call (PolyBench ``gemm`` at 60 x 70 x 80), and a virtual machine's second
        CPU is now and then slow for a while. The workers are not put to sleep for the
        calls alone, though a spinning worker slows the core beside it a little on some
        hosts: a worker woken from sleep there runs slowly for many calls after, which
        would charge the pool far more; a close call thus goes to the pool. The trial runs
        again later (``THREAD_RETRIAL_CALLS``), so that a choice made while the machine was
        slow does not stay."""
        times = self._trial
        calls = len(times[0]) + len(times[1])
        on_pool = calls // THREAD_TRIAL_RUN % 2 == 0
        self._use_pool(on_pool)
        start = _clock()
        native = self._native
        if native is None or native(*args, **kwargs) is not None:
            self._python_call(args, kwargs)
        seconds = _clock() - start
        times[0 if on_pool else 1].append(seconds)
        if on_pool and seconds > THREAD_TRIAL_SECONDS:
            self._trial = None  # on the pool, as this call was
        elif calls + 1 == 2 * THREAD_TRIAL_RUN * -(-THREAD_TRIAL_CALLS // (THREAD_TRIAL_RUN - 1)):
            pooled, alone = (float(np.median([x for n, x in enumerate(t) if n % THREAD_TRIAL_RUN]))
                             for t in times)
            self._trial = None
            kept = pooled <= alone
            if not kept:
                self._pool.rest()  # a worker spinning beside the caller would slow it
            every = THREAD_RETRIAL_CALLS if kept != self._kept else \
                min(2 * self._retrial_every, THREAD_RETRIAL_MOST)
            self._keep(kept, every)

    def _keep(self, kept: bool, every: int) -> None:
        """Run the calls after a trial on the pool (``kept``) or alone, until the trial runs
        again ``every`` calls on (0: never): counted by the kept way's native checks, which
        become the class's ``__call__``, or by ``__call__`` on the Python path."""
        self._use_pool(kept)
        self._kept, self._retrial_every = kept, every
        if self._ways is not None and self._own_class:
            self._retrial_in = 0
            self._block[codegen.CALLER_COUNTDOWN] = every
            type(self).__call__ = self._native
        else:
            self._retrial_in = every

    def _start_trial(self) -> None:
        """The trial again: this call is timed, the first of it, and so are the calls
        after it, which go through the Python ``__call__`` until it ends."""
        self._trial = [[], []]
        if self._ways is not None and self._own_class:
            type(self).__call__ = Kernel.__call__

    def _use_pool(self, on: bool) -> None:
        self._pool_address = self._pool.address if on else 0
        if self._ways is not None:
            self._native, self._block = self._ways[on]

    def _fallback(self, /, *args, **kwargs) -> None:
        """What the native checks call on the arguments they refuse, and on the call that
        ends the count to the next thread trial (``_keep``), which starts that trial."""
        if self._trial is None and self._retrial_every and self._ways is not None \
                and self._block[codegen.CALLER_COUNTDOWN] == 0:
            self._start_trial()
            self._trial_call(args, kwargs)
            return
        self._python_call(args, kwargs)

    def _python_call(self, args: tuple, kwargs: dict) -> None:
        """The Python path: binding, checks (raising where an array is wrong) and the
        native entry. Keywords that are not the interned names are bound here, then given
        to the native checks again."""
        # A small product is a few microseconds of native code, so the Python around it is
        # what ``_fast_path`` wrote for this kernel: Python's own argument binding, then each
        # array's type, strides, shape, dtype and (for an output) writeability compared
        # with what was compiled, unrolled; anything else takes the full check, which says
        # what is wrong. Binding that fails (a wrong name, a buffer missing or given twice)
        # takes the general path, whose error names the buffer.
        native = self._native
        try:
            arrays = self._pick(*args, **kwargs)
        except TypeError:
            arrays = self._bind(args, kwargs)
        if kwargs and native is not None and native(*arrays) is None:
            return
        self._run(self, *arrays)

    def _enter(self, last: tuple) -> None:
        """Run the native entry on ``last`` (``_pointers``), given the pointer array's
        address as an integer (ctypes converts an integer faster than an array object)."""
        pointers = self._with_temporaries(last) if self._allocs else last[1]
        self._entry(pointers, self._pool_address or None)

    def _with_temporaries(self, last: tuple) -> int:
        """The address of ``last``'s pointers (``_pointers``) followed by the temporaries',
        zeroed (the IR says temporaries start as zeros) unless the program writes every
        element before it reads any (``analysis.filled_before_read``: padded and packed
        copies, a product's temporary started at zero by the program itself). Each thread
        keeps its own temporaries across calls: allocating them and reading their addresses
        cost several microseconds a call, and fresh large arrays fault their pages in again
        every time."""
        local = self._local
        try:
            combined = local.combined
        except AttributeError:
            temps = local.temps = [_aligned_zeros(b) for b in self._allocs]
            local.addresses = [t.ctypes.data for t in temps]
            combined = local.combined = (None, None, 0)
            local.zeroed = [t for t, zeroed in zip(temps, self._zeroed) if zeroed]
        else:
            for t in local.zeroed:
                t.fill(0)
        if combined[0] is not last:  # held in ``combined``: its identity is never reused
            n = len(last[2]) + len(local.addresses)
            held = (ctypes.c_void_p * n)(*last[2], *local.addresses)
            combined = local.combined = (last, held, ctypes.addressof(held))
        return combined[2]

    def _pointers(self, arrays) -> tuple:
        """``(arrays, address of their pointer array, the pointer array)``, kept as
        ``_last`` and reused while the same array objects come again (reading an address
        from numpy costs microseconds; a benchmark loop calls with the same arrays). The
        remembered arrays are held, so their memory cannot move or be reused."""
        addresses = [a.ctypes.data for a in arrays]
        self._check_overlap(arrays, addresses)
        held = (ctypes.c_void_p * len(arrays))(*addresses)
        self._last = (tuple(arrays), ctypes.addressof(held), held)
        return self._last

    def _bind(self, args: tuple, kwargs: dict) -> list[np.ndarray]:
        names = self._names
        if not args and len(kwargs) == len(names):
            try:
                return [kwargs[n] for n in names]
            except KeyError:
                pass  # a wrong name: the general path says which
        if len(args) > len(names):
            raise ValueError(f"{self.func.name} takes {len(names)} buffers, {len(args)} given")
        bound = dict(zip(names, args))
        for name, value in kwargs.items():
            if name not in names:
                raise ValueError(f"{self.func.name} has no buffer {name}; its buffers are "
                                 f"{', '.join(names)}")
            if name in bound:
                raise ValueError(f"buffer {name} given twice")
            bound[name] = value
        missing = [n for n in names if n not in bound]
        if missing:
            raise ValueError(f"{self.func.name}: missing buffer(s) {', '.join(missing)}")
        return [bound[n] for n in names]

    def _check_overlap(self, arrays: list[np.ndarray], addresses: list[int]) -> None:
        spans = [(p, p + a.nbytes) for a, p in zip(arrays, addresses)]
        for buf, (lo, hi) in zip(self._params, spans):
            if buf.name not in self._writes:
                continue
            for other, (olo, ohi) in zip(self._params, spans):
                if other is not buf and lo < ohi and olo < hi:
                    raise ValueError(f"buffer {buf.name} shares memory with buffer {other.name}; "
                                     f"the kernel writes {buf.name}, so pass separate arrays")


# Where each temporary starts: on a cache line (``codegen.TEMPORARY_ALIGNMENT``).
TEMPORARY_ALIGNMENT = codegen.TEMPORARY_ALIGNMENT


def _aligned_bytes(n: int) -> np.ndarray:
    """``n`` zero bytes starting on a cache line (``TEMPORARY_ALIGNMENT``)."""
    raw = np.zeros(n + TEMPORARY_ALIGNMENT, np.uint8)
    start = -raw.ctypes.data % TEMPORARY_ALIGNMENT
    return raw[start:start + n]


def _aligned_zeros(b: Buffer) -> np.ndarray:
    """A zeroed array for temporary ``b`` whose first element starts on a cache line."""
    dtype = np.dtype(numpy_dtype(b.dtype))
    return _aligned_bytes(b.size * dtype.itemsize).view(dtype).reshape(b.shape)


def _fast_path(names: list[str], specs: list) -> tuple:
    """``(pick, run)`` for a kernel on buffers ``names`` (``Kernel._specs``): ``pick(*args,
    **kwargs)`` binds its arguments as a Python function of those parameters would (a
    ``TypeError`` if it cannot) and returns them in order; ``run(kernel, *arrays)`` checks
    each array, unrolled, against what was compiled (``_check_array`` on anything else:
    it raises where the array is wrong), finds the pointer array (``Kernel._pointers``,
    reused while the same array objects come again) and enters the native code. A loop
    over the buffers, zips and a ``map`` cost 1-2 us a call on a 30^3 product whose native
    code runs in under one; written out, the checks of three buffers cost a few hundred
    nanoseconds. Buffer names are script identifiers, so they are valid parameters; the
    generated code names nothing else but its helpers, whose names start with ``_k_`` (a
    buffer named ``type`` or ``len`` shadows nothing it uses), and a buffer named so, one
    whose name is no Python parameter (an IR built by hand), or none at all, takes the
    general loop instead: no name reaches the generated code that could be anything but a
    parameter."""
    if not names or any(n.startswith("_k_") or not n.isidentifier() or keyword.iskeyword(n)
                        for n in names):  # (a name that is no parameter: an IR built by hand)
        def pick(*args, **kwargs):
            raise TypeError("general path")

        def run(kernel, *arrays):
            for arr, (buf, want, strides, shape, written) in zip(arrays, specs):
                if type(arr) is not _NDARRAY or arr.strides != strides or arr.shape != shape \
                        or (arr.dtype is not want and arr.dtype != want) \
                        or written and not arr.flags.writeable:
                    _check_array(buf, want, arr, written)
            last = kernel._last
            if last is None or not all(map(operator.is_, last[0], arrays)):
                last = kernel._pointers(arrays)
            kernel._enter(last)
        return pick, run
    env: dict = {"_k_nd": _NDARRAY, "_k_check": _check_array, "_k_type": type}
    params = ", ".join(names)
    lines = [f"def _k_pick({params}):", f"    return ({params},)",
             f"def _k_run(_k_self, {params}):"]
    for k, (name, (buf, want, strides, shape, written)) in enumerate(zip(names, specs)):
        env.update({f"_k_b{k}": buf, f"_k_d{k}": want, f"_k_s{k}": strides, f"_k_h{k}": shape})
        test = (f"_k_type({name}) is not _k_nd or {name}.strides != _k_s{k}"
                f" or {name}.shape != _k_h{k}"
                f" or ({name}.dtype is not _k_d{k} and {name}.dtype != _k_d{k})")
        if written:
            test += f" or not {name}.flags.writeable"
        lines += [f"    if {test}:", f"        _k_check(_k_b{k}, _k_d{k}, {name}, {written})"]
    same = " or ".join(f"_k_last[0][{k}] is not {name}" for k, name in enumerate(names))
    lines += ["    _k_last = _k_self._last",
              f"    if _k_last is None or {same}:",
              f"        _k_last = _k_self._pointers(({params},))",
              "    _k_self._enter(_k_last)"]
    exec(builtins.compile("\n".join(lines), "<kernel call>", "exec"), env)
    return env["_k_pick"], env["_k_run"]


def _check_array(buf: Buffer, want: np.dtype, arr, written: bool) -> None:
    if not isinstance(arr, np.ndarray):
        raise ValueError(f"buffer {buf.name}: expected a numpy array, got {type(arr).__name__}")
    if arr.dtype != want:
        raise ValueError(f"buffer {buf.name}: dtype {arr.dtype} given, {want} ({buf.dtype}) expected")
    if arr.shape != buf.shape:
        raise ValueError(f"buffer {buf.name}: shape {arr.shape} given, {buf.shape} expected")
    if not arr.flags.c_contiguous:
        raise ValueError(f"buffer {buf.name}: the array is not C-contiguous; "
                         f"pass np.ascontiguousarray(...) (outputs must be contiguous to be written)")
    if written and not arr.flags.writeable:
        raise ValueError(f"buffer {buf.name}: the kernel writes it, but the array is read-only")


# ---------------------------------------------------------------------------
# checking against the interpreter


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    max_abs_error: float
    message: str = ""
    unchecked: tuple[str, ...] = ()  # outputs no roundoff bound covers (``beyond_roundoff``)


# Float outputs may differ from the interpreter by this many units of roundoff per term of
# the longest reduction (reassociated sums and FMA, see codegen), relative to the largest
# output magnitude (at least 1), plus a floor for library functions such as exp.
_ULPS_PER_TERM = 4
_ULPS_FLOOR = 16


def tolerance(func: PrimFunc, dtype: str, reference: np.ndarray) -> float:
    """How far a float output may be from the interpreter's: in units of roundoff of the
    output's dtype or, if coarser, of the float accumulations that may feed it (an f64 output
    holding an f32 sum that codegen contracted into FMAs differs by f32 roundoff)."""
    finite = reference[np.isfinite(reference)]
    scale = max(1.0, float(np.max(np.abs(finite.astype(np.float64)))) if finite.size else 1.0)
    return _roundoff(func, _float_sums(func) | {dtype}) * scale


def _float_sums(func: PrimFunc) -> set[str]:
    """The dtypes of ``func``'s float accumulations (``X[i] += ...`` into a float buffer)."""
    return {s.buffer.dtype for s in walk_stmts(func.body)
            if isinstance(s, Accumulate) and is_float(s.buffer.dtype)}


def _roundoff(func: PrimFunc, dtypes: set[str]) -> float:
    """Relative roundoff allowed in ``func``'s results computed in ``dtypes`` (the coarsest)."""
    eps = max(float(np.finfo(numpy_dtype(d)).eps) for d in dtypes)
    return eps * (_ULPS_FLOOR + _ULPS_PER_TERM * calls.reduction_length(func))


def integer_tolerance(func: PrimFunc, reference: np.ndarray):
    """How far an integer output may be from the interpreter's: 0, unless ``func`` rounds a
    float to an integer after a float accumulation or an ``exp`` (a quantised epilogue), where
    their roundoff (a sum reassociated, contracted into FMAs; exp not correctly rounded) can
    move the integer: then one unit plus that roundoff relative to the value. What is computed
    from such an integer is ``beyond_roundoff``."""
    exprs = [x for s in walk_stmts(func.body) for e in stmt_exprs(s) for x in walk_expr(e)]
    sources = _float_sums(func) | {x.dtype for x in exprs if isinstance(x, Unary) and x.op == "exp"}
    rounds = any(isinstance(x, Cast) and not is_float(x.dtype) and is_float(x.a.dtype)
                 for x in exprs)
    if not (sources and rounds):
        return 0
    return 1 + _roundoff(func, sources) * np.abs(reference.astype(np.float64))


def beyond_roundoff(func: PrimFunc) -> frozenset[str]:
    """The buffers whose values no tolerance bounds: computed from a *decision* (a float cast
    to an integer, a float comparison) on a value that compiled code may round otherwise than
    the interpreter (a float sum, reassociated and contracted into FMAs; ``exp``, not correctly
    rounded). Roundoff flips a decision near its threshold, and what depends on it moves by
    whatever the program makes of one unit or one branch: the low bits of a rounded sum, a
    factor it feeds back into the sum, another element, another branch. An integer stored
    directly as such a rounded value moves by one unit plus roundoff (``integer_tolerance``);
    what reads it is beyond. ``check`` does not compare these outputs::

        for k in range(4):
            S[0] += S[0] * f32(A[k])       # f32 roundoff (an FMA rounds once, not twice)
        C[0] = i32(S[0])                   # one unit plus that roundoff
        E[0] = f32(i16(i32(S[0])))         # beyond: S's low bits, whose one unit may be all of E
        if S[0] > 0.5:
            F[0] = 1.0                     # beyond: roundoff may take the other branch

    Flow-insensitive (a buffer is beyond everywhere once any write to it is), over the
    program's writes, their indices and the conditions around them, to a fixed point."""
    writes: list[tuple[Stmt, tuple[Expr, ...]]] = []

    def collect(s: Stmt, conds: tuple[Expr, ...]) -> None:
        if isinstance(s, For):
            collect(s.body, conds)
        elif isinstance(s, Seq):
            for c in s.stmts:
                collect(c, conds)
        elif isinstance(s, If):
            for c in (s.then, s.orelse):
                if c is not None:
                    collect(c, conds + (s.cond,))
        elif isinstance(s, (Store, Accumulate)):
            writes.append((s, conds))

    collect(calls.expand_calls(func).body, ())
    noisy: set[str] = set()  # floats holding a value compiled code may round otherwise
    rounded: set[str] = set()  # integers stored directly as such a value, rounded
    beyond: set[str] = set()

    def flow(e: Expr) -> tuple[bool, bool]:
        """Whether ``e`` may carry roundoff, and whether it may jump (hang on a decision)."""
        if isinstance(e, Load):
            name = e.buffer.name
            return name in noisy, (name in rounded or name in beyond
                                   or any(flow(i)[1] for i in e.indices))
        kids = [flow(c) for c in children(e)]
        noise = any(n for n, _ in kids) or (isinstance(e, Unary) and e.op == "exp")
        jump = any(j for _, j in kids)
        if (isinstance(e, Cast) and is_float(e.a.dtype) and not is_float(e.dtype)) or \
                (isinstance(e, Compare) and is_float(e.a.dtype)):
            return False, jump or noise
        return noise, jump

    changed = True
    while changed:
        changed = False
        for s, conds in writes:
            name, v = s.buffer.name, s.value
            control = any(flow(e)[1] for e in conds + s.indices)
            direct = isinstance(s, Store) and isinstance(v, Cast) and is_float(v.a.dtype) \
                and not is_float(v.dtype)
            noise, jump = flow(v.a if direct else v)
            grown = ((noisy, is_float(s.buffer.dtype) and (isinstance(s, Accumulate) or noise)),
                     (rounded, direct and noise),
                     (beyond, jump or control))
            for into, holds in grown:
                if holds and name not in into:
                    into.add(name)
                    changed = True
    return frozenset(beyond)


def check_budgets(func: PrimFunc, budgets: Budgets) -> None:
    """``BudgetError`` when checking ``func`` would allocate or run more than ``budgets``
    allow (``check-memory``, ``check-iterations``): decided before anything is allocated."""
    from .interp import instances

    params = sum(b.size * np.dtype(numpy_dtype(b.dtype)).itemsize for b in func.params)
    temps = sum(b.size * np.dtype(numpy_dtype(b.dtype)).itemsize for b in func.allocs)
    need = 3 * params + temps  # inputs, the interpreter's copy, the kernel's copy
    if need > budgets.check_memory:
        raise BudgetError(f"--check would allocate {format_bytes(need)} (three copies of the "
                          "parameters, and the temporaries)", "check-memory", budgets.check_memory)
    n = instances(func)
    if n > budgets.check_iterations:
        raise BudgetError(f"--check would interpret {n:,} statement instances", "check-iterations",
                          budgets.check_iterations)


def check(func: PrimFunc, kernel: Optional[Kernel] = None, seed: int = 0,
          budgets: Budgets = Budgets()) -> CheckResult:
    """Run ``func`` compiled and interpreted on random inputs and compare every output
    roundoff bounds (not those ``beyond_roundoff``): integers exactly (or within
    ``integer_tolerance``), floats within ``tolerance`` with NaN where NaN and equal infinities.
    ``BudgetError`` before anything runs when that is over ``budgets`` (``check_budgets``),
    or while interpreting past ``budgets.check_steps``.

    Rounds: ``random_args(func, seed)`` (finite values); then, when ``func`` has float
    parameters, the same with a few NaN, +-Inf, +-0 and subnormals sprinkled in
    (``special=True``), and with half the elements such values (``density``: pairs like
    ``Inf * 0`` at one index); their NaN/Inf pattern must match exactly (SPEC, Numerics)."""
    check_budgets(func, budgets)
    kernel = kernel if kernel is not None else compile(func)
    worst, problems = _check_round(func, kernel, seed, False, None, budgets)
    if any(is_float(b.dtype) for b in func.params):
        for density, what in ((None, "a few"), (SPECIAL_DENSITY, "many")):
            error, more = _check_round(func, kernel, seed, True, density, budgets)
            worst = max(worst, error)
            problems += [f"{p} (inputs with {what} NaN/Inf)" for p in more]
    unchecked = tuple(sorted(beyond_roundoff(func) & {b.name for b in func.outputs}))
    return CheckResult(not problems, worst, "; ".join(problems), unchecked)


# The share of special values in the last round of ``check``.
SPECIAL_DENSITY = 0.5

# What the interpreter computed for a function on one round's inputs (the inputs follow from
# the seed): a function checked again under other options, or against another kernel, is not
# interpreted again. The least recently used go past INTERPRETED_BYTES.
INTERPRETED_BYTES = 256 << 20
_interpreted: "OrderedDict[_Key, dict]" = OrderedDict()


class _Key:
    """A key of ``_interpreted`` whose hash is computed once. A function's hash walks its
    whole tree, one Python frame per level of its deepest expression, and an OrderedDict
    hashes every key again when its values are iterated: a deep function's key, hashed again
    from deep in another check (under hypothesis, say), ran out of frames."""

    __slots__ = ("parts", "digest")

    def __init__(self, *parts) -> None:
        self.parts = parts
        self.digest = hash(parts)

    def __hash__(self) -> int:
        return self.digest

    def __eq__(self, other) -> bool:
        return isinstance(other, _Key) and self.digest == other.digest and self.parts == other.parts


def _remember(key: _Key, arrays: dict) -> None:
    _interpreted[key] = arrays
    size = lambda d: sum(a.nbytes for a in d.values())  # noqa: E731
    total = sum(size(d) for d in _interpreted.values())
    while total > INTERPRETED_BYTES and len(_interpreted) > 1:
        _, old = _interpreted.popitem(last=False)
        total -= size(old)


def _check_round(func: PrimFunc, kernel: Kernel, seed: int, special: bool,
                 density: Optional[float], budgets: Budgets) -> tuple[float, list[str]]:
    from .inputs import random_args
    from .interp import interpret

    args = random_args(func, seed=seed, special=special, density=density)
    key = _Key(func, seed, special, density, budgets.check_steps)
    expected = _interpreted.get(key)
    if expected is None:
        expected = {name: np.array(a, copy=True) for name, a in args.items()}
        # an intrinsic call means its semantics
        interpret(calls.expand_calls(func), expected, max_steps=budgets.check_steps)
        _remember(key, expected)
    else:
        _interpreted.move_to_end(key)
    got = {name: np.array(a, copy=True) for name, a in args.items()}
    kernel(**{b.name: got[b.name] for b in func.params})
    worst, problems = 0.0, []
    for buf in func.outputs:
        error, problem = compare_output(func, buf, np.asarray(expected[buf.name]), got[buf.name])
        worst = max(worst, error)
        if problem:
            problems.append(f"{buf.name}: {problem}")
    return worst, problems


def compare_output(func: PrimFunc, buf: Buffer, want: np.ndarray, got: np.ndarray) -> tuple[float, str]:
    """The largest difference over the elements finite on both sides, and what is wrong
    ("" when nothing): integers must be equal, floats NaN where NaN, the same infinities
    (sign included) and within ``tolerance`` elsewhere; nothing is compared on an output
    ``beyond_roundoff``."""
    if buf.name in beyond_roundoff(func):
        return 0.0, ""
    if not is_float(buf.dtype):
        diff = np.abs(want.astype(np.int64) - got.astype(np.int64)) if want.size else np.zeros(1)
        error = float(diff.max())
        allowed = integer_tolerance(func, want)
        return error, "" if np.all(diff <= allowed) else f"max abs error {error:g}"
    w, g = want.astype(np.float64), got.astype(np.float64)
    finite = np.isfinite(w) & np.isfinite(g)
    error = float(np.max(np.abs(w[finite] - g[finite]))) if finite.any() else 0.0
    nan = np.isnan(w) != np.isnan(g)
    inf = np.where(np.isinf(w), w, 0) != np.where(np.isinf(g), g, 0)
    if nan.any() or inf.any():
        at = tuple(int(x) for x in np.argwhere(nan | inf)[0])
        return error, (f"NaN/Inf pattern differs at {int(np.count_nonzero(nan | inf))} elements, "
                       f"first {list(at)}: {w[at]} expected, {g[at]} computed")
    if error > tolerance(func, buf.dtype, want):
        return error, f"max abs error {error:g}"
    return error, ""
