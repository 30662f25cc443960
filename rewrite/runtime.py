"""JIT, caches, the numpy calling convention, and the worker pool.

    kernel = compile(func)             # LLVM O3 for this CPU; cached in memory and on disk
    kernel(A=a, B=b, C=c)              # or kernel(a, b, c): outputs are written in place

Arrays must be C-contiguous numpy arrays of exactly the declared dtype and shape; anything
else raises ``ValueError`` naming the buffer before native code runs. Non-contiguous views
are rejected rather than copied, since a copy of an output would silently drop the writes.
Any alignment works. An output may not share memory with another buffer (the compiled code
assumes it does not). Temporaries are allocated zeroed for every call.

Disk cache: object code under ``$TENSORIZE_CACHE_DIR``, else ``$XDG_CACHE_HOME/tensorize``,
else ``~/.cache/tensorize``, named by a hash of the program, of the compiler's own source
(analysis, lowering, codegen, and the emitters of the intrinsics it calls), and of the target
(CPU name, features, llvmlite version). A second run loads the object code without LLVM.

Threads: a top-level loop the dependence analysis proves parallel is cut into chunks shared
by the calling thread and ``threads - 1`` workers. Each worker is a Python thread that enters
the native worker loop once (ctypes releases the GIL) and then waits on the control block in
native code, so a dispatch costs microseconds, not a Python round trip.
"""

from __future__ import annotations

import atexit
import ctypes
import hashlib
import inspect
import json
import os
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Optional

import llvmlite.binding as llvm
import numpy as np

from . import analysis, codegen
from . import lower as lowering
from .budgets import BudgetError, Budgets, format_bytes
from .ir import Buffer, Call, PrimFunc, is_float, numpy_dtype, walk_stmts

emit_llvm = codegen.emit_llvm
emit_asm = codegen.emit_asm

_ENTRY = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)


# ---------------------------------------------------------------------------
# the JIT: one engine per process, object code added to it


class _Jit:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        tm = codegen.target_machine()
        self.engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), tm)
        self.loaded: dict[str, int] = {}

    def load(self, obj: bytes, symbols: list[str]) -> list[int]:
        """Link ``obj`` into the process and return the addresses of ``symbols``; code already
        linked (symbols are named by content) is not linked twice."""
        with self.lock:
            if not all(s in self.loaded for s in symbols):
                self.engine.add_object_file(llvm.ObjectFileRef.from_data(obj))
                self.engine.finalize_object()
                self.loaded.update((s, self.engine.get_function_address(s)) for s in symbols)
            addresses = [self.loaded[s] for s in symbols]
        if not all(addresses):
            raise RuntimeError(f"compiled code lacks a symbol among {symbols}")
        return addresses


_jit: Optional[_Jit] = None
_jit_lock = threading.Lock()


def _engine() -> _Jit:
    global _jit
    with _jit_lock:
        if _jit is None:
            _jit = _Jit()
        return _jit


# ---------------------------------------------------------------------------
# caches


def cache_dir() -> Path:
    explicit = os.environ.get("TENSORIZE_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tensorize"


def _code_version() -> str:
    """Compiled code changes when the code generator does: its source is part of the key."""
    global _CODE_VERSION
    if _CODE_VERSION is None:
        h = hashlib.sha256()
        for module in (codegen, lowering, analysis):
            h.update(Path(module.__file__).read_bytes())
        _CODE_VERSION = h.hexdigest()
    return _CODE_VERSION


_CODE_VERSION: Optional[str] = None


def _intrinsics_version(func: PrimFunc) -> str:
    """What the code of the intrinsics ``func`` calls depends on: each one's semantics, the
    source of the module that emits it (a user's plugin as much as the built-ins), and what
    the emitter says it depends on beyond that (``fingerprint()``: an LLVM IR text)."""
    names = sorted({s.intrinsic for s in walk_stmts(func.body) if isinstance(s, Call)})
    if not names:
        return ""
    import intrinsics

    parts = []
    for name in names:
        desc = intrinsics.get(name)
        emitter = intrinsics.emitter_of(desc)
        source = inspect.getsourcefile(type(emitter)) or ""
        digest = hashlib.sha256(Path(source).read_bytes()).hexdigest() if source else ""
        fingerprint = getattr(emitter, "fingerprint", lambda: "")()  # e.g. LLVM IR text
        parts.append(f"{name}|{desc.script()}|{type(emitter).__qualname__}|{digest}|{fingerprint}")
    return "\n".join(parts)


def _key(what: str) -> str:
    h = hashlib.sha256()
    for part in (_code_version(), codegen.target_id(), what):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def _object(key: str, build: Callable[[], tuple[bytes, dict]]) -> tuple[bytes, dict, str]:
    """Object code and its metadata for ``key``: from disk, or built by ``build()`` and saved.
    Also says where they came from (``"disk"`` or ``"compiled"``)."""
    path = cache_dir() / f"{key[:40]}.o"
    try:
        data = path.read_bytes()
        # the file starts with the digest of the rest: LLVM aborts the process on a
        # damaged object file, so a damaged cache entry must never reach it
        if hashlib.sha256(data[32:]).digest() == data[:32]:
            header, _, obj = data[32:].partition(b"\n")
            return obj, json.loads(header), "disk"
    except (OSError, ValueError):
        pass
    obj, meta = build()
    payload = json.dumps(meta).encode() + b"\n" + obj
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # write then rename: a concurrent reader never sees half a file
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(hashlib.sha256(payload).digest() + payload)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache only costs recompiling
    return obj, meta, "compiled"


# ---------------------------------------------------------------------------
# the worker pool


class _Pool:
    """``threads - 1`` workers parked in native code plus the calling thread."""

    def __init__(self, threads: int, addresses: dict[str, int]):
        self.threads = threads
        self.lock = threading.Lock()  # one dispatch at a time per pool
        raw = np.zeros(codegen.POOL_SLOTS + 8, np.int64)
        start = (-raw.ctypes.data % 64) // 8  # the control block on its own cache lines
        self.block = raw[start:start + codegen.POOL_SLOTS]
        self.block[codegen.POOL_THREADS] = threads
        self.block[codegen.POOL_DISPATCH] = addresses["dispatch"]
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


def _pool(threads: int) -> _Pool:
    with _compile_lock:  # building the pool's code shares LLVM with kernel compiles
        if threads not in _pools:
            key = _key("pool")
            obj, _, _ = _object(key, lambda: (codegen.object_code(
                codegen.optimize(codegen.pool_module(_POOL_PREFIX))), {}))
            names = ("worker", "dispatch", "stop")
            addresses = _engine().load(obj, [f"{_POOL_PREFIX}.{n}" for n in names])
            _pools[threads] = _Pool(threads, dict(zip(names, addresses)))
        return _pools[threads]


@atexit.register
def _close_pools() -> None:
    for pool in _pools.values():
        pool.close()


# Threads a kernel may use: each is an OS thread parked in native code, so a few thousand
# take seconds to start and only contend for the cores.
MAX_THREADS = 256


def default_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


# ---------------------------------------------------------------------------
# compiling


@dataclass(frozen=True)
class _Compiled:
    address: int
    parallel: bool  # some part runs on the pool
    source: str  # "compiled" or "disk"
    seconds: float


_memory: dict = {}  # see _memory_key
_compile_lock = threading.RLock()


def clear_memory_cache() -> None:
    """Forget compiled functions (their code stays loaded); the next compile reads the disk."""
    _memory.clear()


def _build(func: PrimFunc, symbol: str) -> tuple[bytes, dict]:
    plan = lowering.lower(func)
    obj = codegen.object_code(codegen.optimize(codegen.kernel_module(plan, symbol)))
    return obj, {"parallel": any(p.parallel for p in plan.parts)}


def _memory_key(func: PrimFunc):
    """A program calling intrinsics is reused only while no intrinsic was registered or
    unregistered since (a name registered again may have another implementation)."""
    if not any(isinstance(s, Call) for s in walk_stmts(func.body)):
        return func
    import intrinsics

    return func, intrinsics.generation()


def _compiled(func: PrimFunc) -> tuple[_Compiled, bool]:
    key = _memory_key(func)
    hit = _memory.get(key)
    if hit is not None:
        return hit, True
    # one compile at a time: LLVM's target machine and the engine are shared
    with _compile_lock:
        hit = _memory.get(key)
        return (hit, True) if hit is not None else (_compile_now(func, key), False)


def _compile_now(func: PrimFunc, memory_key) -> _Compiled:
    t0 = time.perf_counter()
    # lowering is a function of the program and of the code version in the key, so a disk
    # hit skips it along with LLVM
    key = _key(repr(replace(func, doc="")) + _intrinsics_version(func))
    symbol = f"tensorize.k{key[:24]}"
    obj, meta, source = _object(key, lambda: _build(func, symbol))
    (address,) = _engine().load(obj, [symbol])
    done = _Compiled(address, bool(meta["parallel"]), source, time.perf_counter() - t0)
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
    return Kernel(func, compiled, _pool(threads) if uses_pool else None, threads,
                  "memory" if in_memory else compiled.source)


class Kernel:
    """A compiled function, called with numpy arrays by keyword or position."""

    def __init__(self, func: PrimFunc, compiled: _Compiled, pool: Optional[_Pool], threads: int,
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
        self._dtypes = [np.dtype(numpy_dtype(b.dtype)) for b in func.params]
        self._last: Optional[tuple] = None  # see _pointers
        self._local = threading.local()  # see _with_temporaries

    def __repr__(self) -> str:
        return f"<Kernel {self.func.name} threads={self.threads} from {self.source}>"

    def __call__(self, *args: np.ndarray, **kwargs: np.ndarray) -> None:
        arrays = self._bind(args, kwargs)
        for buf, want, arr in zip(self._params, self._dtypes, arrays):
            _check_array(buf, want, arr, buf.name in self._writes)
        pointers = self._pointers(arrays)
        if self._allocs:
            pointers = self._with_temporaries(pointers)
        if self._pool is None:
            self._entry(pointers, None)
        else:
            with self._pool.lock:
                self._entry(pointers, self._pool.address)

    def _with_temporaries(self, pointers):
        """``pointers`` followed by the temporaries', zeroed (the IR says temporaries start as
        zeros). Each thread keeps its own temporaries across calls: allocating them and
        reading their addresses cost several microseconds a call, and fresh large arrays
        fault their pages in again every time."""
        local = self._local
        temps = getattr(local, "temps", None)
        if temps is None:
            temps = local.temps = [np.zeros(b.shape, numpy_dtype(b.dtype)) for b in self._allocs]
            local.addresses = [t.ctypes.data for t in temps]
            local.combined = (None, None)
        else:
            for t in temps:
                t.fill(0)
        if local.combined[0] is not pointers:
            n = len(pointers) + len(temps)
            local.combined = (pointers, (ctypes.c_void_p * n)(*pointers, *local.addresses))
        return local.combined[1]

    def _pointers(self, arrays: list[np.ndarray]):
        """The pointer array for ``arrays``, reused when the same array objects come again
        (reading an address from numpy costs microseconds; a benchmark loop calls with the same
        arrays). The remembered arrays are held, so their memory cannot move or be reused."""
        last = self._last
        if last is not None and all(x is y for x, y in zip(last[0], arrays)):
            return last[1]
        addresses = [a.ctypes.data for a in arrays]
        self._check_overlap(arrays, addresses)
        pointers = (ctypes.c_void_p * len(arrays))(*addresses)
        self._last = (tuple(arrays), pointers)
        return pointers

    def _bind(self, args: tuple, kwargs: dict) -> list[np.ndarray]:
        names = [b.name for b in self._params]
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


# Float outputs may differ from the interpreter by this many units of roundoff per term of
# the longest reduction (reassociated sums and FMA, see codegen), relative to the largest
# output magnitude (at least 1), plus a floor for library functions such as exp.
_ULPS_PER_TERM = 4
_ULPS_FLOOR = 16


def tolerance(func: PrimFunc, dtype: str, reference: np.ndarray) -> float:
    finite = reference[np.isfinite(reference)]
    scale = max(1.0, float(np.max(np.abs(finite.astype(np.float64)))) if finite.size else 1.0)
    eps = float(np.finfo(numpy_dtype(dtype)).eps)
    return eps * (_ULPS_FLOOR + _ULPS_PER_TERM * lowering.reduction_length(func)) * scale


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
    """Run ``func`` compiled and interpreted on ``random_args(func, seed)`` and compare every
    output: integers exactly, floats within ``tolerance`` (NaN where NaN, equal infinities).
    ``BudgetError`` before anything runs when that is over ``budgets`` (``check_budgets``),
    or while interpreting past ``budgets.check_steps``."""
    from .interp import interpret, random_args

    check_budgets(func, budgets)
    kernel = kernel if kernel is not None else compile(func)
    args = random_args(func, seed=seed)
    expected = {name: np.array(a, copy=True) for name, a in args.items()}
    # an intrinsic call means its semantics
    interpret(lowering.expand_calls(func), expected, max_steps=budgets.check_steps)
    got = {name: np.array(a, copy=True) for name, a in args.items()}
    kernel(**{b.name: got[b.name] for b in func.params})
    worst, problems = 0.0, []
    for buf in func.outputs:
        error, ok = _compare(func, buf, np.asarray(expected[buf.name]), got[buf.name])
        worst = max(worst, error)
        if not ok:
            problems.append(f"{buf.name}: max abs error {error:g}")
    return CheckResult(not problems, worst, "; ".join(problems))


def _compare(func: PrimFunc, buf: Buffer, want: np.ndarray, got: np.ndarray) -> tuple[float, bool]:
    if not is_float(buf.dtype):
        diff = np.abs(want.astype(np.int64) - got.astype(np.int64)) if want.size else np.zeros(1)
        error = float(diff.max())
        return error, error == 0
    w, g = want.astype(np.float64), got.astype(np.float64)
    same_special = np.array_equal(np.isnan(w), np.isnan(g)) and \
        np.array_equal(np.where(np.isinf(w), w, 0), np.where(np.isinf(g), g, 0))
    finite = np.isfinite(w) & np.isfinite(g)
    error = float(np.max(np.abs(w[finite] - g[finite]))) if finite.any() else 0.0
    if not same_special:
        return float("inf"), False
    return error, error <= tolerance(func, buf.dtype, want)
