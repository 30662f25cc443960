"""The machine kernels are built for: its architecture, its features, which emitter each
intrinsic gets there, and its thread pool. The one place where host detection and the ISA
lists live; the CLI, the intrinsic library and the runtime read them from here.

    host = target.host()                 # this CPU, its features read once through LLVM
    host.runs(desc)                      # the CPU runs desc's own instructions
    host.emitter(desc)                   # desc's emitter if so, else the emulation
    target.named("x86-avx512vnni")       # an ISA: what intrinsic libraries are chosen by

A new ISA is one line in ``TARGETS``: its architecture and the LLVM feature names it implies.
"""

from __future__ import annotations

import ctypes
import functools
import platform
import sys
from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping, Optional

import llvmlite.binding as llvm
from llvmlite import ir

from . import codegen, jit
from . import pool as _pool
from .codegen import Emulated
from .descriptor import Descriptor, IntrinsicError
from .emitter import Emitter

# Feature sets use LLVM's names (what get_host_cpu_features reports) for x86.
_AVX2 = frozenset({"sse2", "sse4.1", "sse4.2", "avx", "avx2", "fma", "f16c"})
_AVX512 = _AVX2 | {"avx512f", "avx512bw", "avx512dq", "avx512vl"}
TARGETS: Mapping[str, tuple[str, frozenset]] = MappingProxyType({
    "x86-avx2": ("x86", _AVX2),
    "x86-avx512": ("x86", _AVX512),
    "x86-avx512vnni": ("x86", _AVX512 | {"avx512vnni"}),
    "x86-amx": ("x86", _AVX512 | {"avx512vnni", "amx-tile", "amx-int8"}),
    "arm-neon": ("arm", frozenset({"neon"})),
    "arm-dotprod": ("arm", frozenset({"neon", "dotprod"})),
    "nvidia-sm80": ("nvidia", frozenset({"sm_80"})),
})
ARCHES = ("x86", "arm", "nvidia")


# Features whose register state Linux hands out only on request (the AMX tiles: 8 KB per
# thread, so a process asks first; its first AMX instruction otherwise stops it on SIGILL).
_AMX = frozenset({"amx-tile", "amx-int8", "amx-bf16", "amx-fp16", "amx-complex"})
_SYS_ARCH_PRCTL, _ARCH_REQ_XCOMP_PERM, _XFEATURE_XTILEDATA = 158, 0x1023, 18


@functools.lru_cache(maxsize=None)
def amx_permitted() -> bool:
    """Ask Linux once for this process's permission to use the AMX tile data (granted to
    every thread, present and future, of the process). False on any other system, or when
    the kernel refuses or predates the request (before Linux 5.16)."""
    if not sys.platform.startswith("linux") or platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.syscall(ctypes.c_long(_SYS_ARCH_PRCTL), ctypes.c_long(_ARCH_REQ_XCOMP_PERM),
                            ctypes.c_long(_XFEATURE_XTILEDATA)) == 0
    except (OSError, AttributeError):
        return False


@functools.lru_cache(maxsize=None)
def host_features() -> frozenset[str]:
    """The CPU's features as LLVM names them, less those this process may not use: the AMX
    ones unless Linux granted the tile state (``amx_permitted``), so that no row using them
    is native and none can stop the process."""
    found = frozenset(k for k, on in llvm.get_host_cpu_features().items() if on)
    if found & _AMX and not amx_permitted():
        found -= _AMX
    return found


@functools.lru_cache(maxsize=None)
def host_arch() -> str:
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64", "i386", "i686"):
        return "x86"
    if machine in ("aarch64", "arm64") or machine.startswith("arm"):
        return "arm"
    return machine


@dataclass(frozen=True)
class Target:
    """A machine: ``host()`` (this CPU, where kernels are built and run) or an ISA from
    ``TARGETS`` (what a library of intrinsics is chosen for)."""

    name: str
    arch: str
    features: frozenset[str]

    @property
    def is_host(self) -> bool:
        return self.name == "host"

    def provides(self, desc: Descriptor) -> bool:
        """The machine has ``desc``'s ISA (whether or not ``desc`` has a native emitter)."""
        return desc.arch in (self.arch, "any") and set(desc.isa) <= self.features

    def runs(self, desc: Descriptor) -> bool:
        """The machine runs ``desc``'s own instructions, not an emulation."""
        return desc.emitter is not None and self.provides(desc)

    def emitter(self, desc: Descriptor, native: Optional[bool] = None) -> Emitter:
        """The emitter a kernel built here uses for ``desc``: its own where the machine runs
        it (or as ``native`` forces), else the emulation from its semantics."""
        self._host_only("kernels are built")
        use_native = self.runs(desc) if native is None else native
        if use_native and desc.emitter is None:
            raise ValueError(f"intrinsic {desc.name} has no native emitter")
        if use_native and not self.runs(desc):
            # its instructions would stop the process with an illegal-instruction signal
            raise ValueError(f"intrinsic {desc.name} needs {'+'.join(desc.isa)}, which this CPU lacks")
        return desc.emitter if use_native else Emulated(desc)

    def module(self, name: str) -> ir.Module:
        """An empty LLVM module for this machine (its triple and data layout)."""
        self._host_only("kernels are built")
        return codegen.new_module(name)

    def load(self, module: ir.Module, symbols: list[str]) -> list[int]:
        """Optimise ``module`` at O3 for this machine, link it into the process and return the
        addresses of ``symbols``."""
        self._host_only("kernels are built")
        with jit.compile_lock:
            obj = codegen.object_code(codegen.optimize(module))
        return jit.load(obj, symbols)

    def _host_only(self, what: str) -> None:
        if not self.is_host:
            raise ValueError(f"{what} for the host, not for {self.name}")

    def pool(self, threads: int):
        """The thread pool parallel kernels run on with ``threads`` threads."""
        self._host_only("kernels run")
        return _pool.get(threads)


def host() -> Target:
    """This CPU, or the one code is generated for (``codegen.generate_for``) where its
    features were given: what compiled code may use (not cached: it follows
    ``generate_for``; the features themselves are read once)."""
    told = codegen.generated_features()
    return Target("host", host_arch(), host_features() if told is None else told)


def named(name: str) -> Target:
    """``"host"`` or an ISA name from ``TARGETS``; ``IntrinsicError`` listing them otherwise."""
    if name == "host":
        return host()
    if name not in TARGETS:
        raise IntrinsicError(f"unknown target {name}; targets are host, all, {', '.join(TARGETS)}")
    arch, features = TARGETS[name]
    return Target(name, arch, features)
