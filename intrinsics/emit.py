"""Intrinsic implementations written as LLVM IR text, and intrinsics compiled into standalone
callables on numpy arrays.

The emitter protocol itself (``Emitter``, ``Ref``, the k-loop helpers) is the backend's and
lives in ``rewrite.emitter``; the emulation of any descriptor from its semantics is
``rewrite.codegen.Emulated`` (also ``rewrite.target.Emulated``); which of the two a host uses is
``rewrite.target``'s choice.
They are re-exported here, as ``intrinsics.Emitter`` and so on, for declarations::

    impl = compile_intrinsic("x86.fma.f32x8")      # native on this CPU, else emulated
    impl(c=c, a=a, b=b)                             # numpy arrays, any strides
"""

from __future__ import annotations

import ctypes
import hashlib
import itertools
from typing import Optional, Union

import llvmlite.binding as llvm
import numpy as np
from llvmlite import ir

from rewrite import target as targets
from rewrite.target import Emulated
from rewrite.emitter import I64, PTR, VOID, Emitter, Ref, as_value, call_function
from rewrite.ir import numpy_dtype

from .base import Intrinsic

__all__ = ["CompiledIntrinsic", "Emitter", "Emulated", "LlvmText", "Ref", "compile_intrinsic",
           "emitter_of", "jit_module", "new_symbol"]

_counter = itertools.count()


# ---------------------------------------------------------------------------
# an implementation written as LLVM IR text


class LlvmText(Emitter):
    """An implementation given as LLVM IR text. The contract:

    - The text defines exactly one function with external (the default) linkage: the
      implementation. Its name is free. Helper functions and globals it uses must be
      ``internal`` or ``private``; declarations (``declare <8 x float> @llvm.fma.v8f32(...)``)
      are allowed.
    - It returns ``void`` and takes, in the semantics' parameter order, each operand's base
      pointer (``ptr``), then each operand's strides (``i64``, one per operand dimension,
      outermost first, counted in **elements**, not bytes; negative and zero strides occur).
      For ``fma(c: f32[8], a: f32[8], b: f32[8])`` that is
      ``define void @impl(ptr %c, ptr %a, ptr %b, i64 %c_s0, i64 %a_s0, i64 %b_s0)``.
    - One call performs one call of the intrinsic: it adds into the output what the semantics
      add, and writes nothing else. Pointers are aligned to the element only, so a vector
      load or store must say so (``load <8 x float>, ptr %p, align 4``).

    The text is parsed and verified when the intrinsic is registered (an ``IntrinsicError``
    naming the intrinsic otherwise). At a call site the function is declared under a private
    symbol and called with the operands' pointers and strides; ``codegen.optimize`` links
    the text in, internal and ``alwaysinline``, so at O3 it is inlined and constant strides
    fold. The accumulator lives in memory: a k-loop makes one call per step.
    """

    def fingerprint(self) -> str:
        """What compiled code made with this emitter depends on beyond its class: the text
        (the runtime's disk cache keys on it, so editing the IR compiles again)."""
        return hashlib.sha256(str(self.text).encode()).hexdigest()

    def __init__(self, text: str):
        self.text = text
        self.operands: tuple[str, ...] = ()
        self.symbol: Optional[str] = None
        self.prepared: Optional[str] = None  # the text, renamed to ``symbol``, alwaysinline

    def bind(self, name: str, operands) -> None:
        """Check the text against the intrinsic's operands (called by ``register``); raise
        ``IntrinsicError`` naming ``name`` for anything wrong."""
        from .base import IntrinsicError

        def refuse(why: str) -> IntrinsicError:
            return IntrinsicError(f"intrinsic {name}: LLVM IR text {why}")

        names = tuple(o.name for o in operands)
        if self.symbol is not None:
            if names != self.operands:
                raise refuse(f"is already bound to operands ({', '.join(self.operands)})")
            return
        if not isinstance(self.text, str):
            raise refuse(f"must be a str, not {type(self.text).__name__}")
        try:
            mod = llvm.parse_assembly(self.text)
        except RuntimeError as e:
            raise refuse(f"does not parse: {_llvm_error(str(e))}") from None
        try:
            mod.verify()
        except RuntimeError as e:
            raise refuse(f"is not valid: {_llvm_error(str(e))}") from None
        defined = [f for f in mod.functions if not f.is_declaration and not _local(f)]
        if len(defined) != 1:
            found = ", ".join("@" + f.name for f in defined) or "none"
            raise refuse(f"must define exactly one external function (the implementation; "
                         f"helpers internal or private), found {found}")
        shared = [g.name for g in mod.global_variables if not g.is_declaration and not _local(g)]
        if shared:
            raise refuse(f"defines global @{shared[0]}, which must be internal or private")
        fn = defined[0]
        want = [f"ptr %{o.name}" for o in operands] + [
            f"i64 %{o.name}_s{d}" for o in operands for d in range(len(o.shape))]
        fnty = fn.global_value_type
        got = [str(t) for t in fnty.get_function_parameters()]
        ret = str(fnty.get_function_return())
        if fnty.is_function_vararg or ret != "void" or got != [w.split()[0] for w in want]:
            vararg = ", ..." if fnty.is_function_vararg else ""
            raise refuse(f"function @{fn.name} must be 'void ({', '.join(want)})', the base "
                         f"pointers then the element strides in the semantics' operand order; "
                         f"it is '{ret} ({', '.join(got)}{vararg})'")
        symbol = f"tensorize.llvm_text.{name}.{next(_counter)}"
        fn.name = symbol
        fn.add_function_attribute("alwaysinline")
        try:
            mod.verify()
        except RuntimeError as e:
            raise refuse(f"cannot be made alwaysinline: {_llvm_error(str(e))}") from None
        self.symbol, self.operands, self.prepared = symbol, names, str(mod)
        self._type = ir.FunctionType(VOID, [PTR] * len(names) + [I64] * (len(want) - len(names)))

    def load_acc(self, b, ops):
        return None

    def step(self, b, ops, acc):
        if self.symbol is None:
            raise ValueError("LlvmText emitter used before its intrinsic was registered")
        module = b.module
        fn = module.globals.get(self.symbol)
        if fn is None:
            fn = ir.Function(module, self._type, name=self.symbol)
            if not hasattr(module, "linked_ir"):
                module.linked_ir = []
            module.linked_ir.append(self.prepared)
        refs = [ops[n] for n in self.operands]
        b.call(fn, [r.ptr for r in refs] + [as_value(s) for r in refs for s in r.strides])
        return None

    def store_acc(self, b, ops, acc) -> None:
        pass



def _local(value) -> bool:
    return value.linkage in (llvm.Linkage.internal, llvm.Linkage.private)


def _llvm_error(message: str) -> str:
    """LLVM's multi-line report as one line: the first error, with its position."""
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    lines = [ln for ln in lines if ln not in ("LLVM IR parsing error",)]
    first = next((ln for ln in lines if "error:" in ln), lines[0] if lines else "invalid IR")
    if first.startswith("<string>:"):  # "<string>:2:12: error: ..." -> "line 2:12: ..."
        first = "line " + first[len("<string>:"):].replace(": error:", ":", 1)
    return first.rstrip("!")


def emitter_of(desc: Intrinsic, native: Optional[bool] = None) -> Emitter:
    """The emitter used on this host: the descriptor's own when the CPU has its ISA (or when
    ``native`` forces it), else the emulation."""
    return targets.host().emitter(desc, native)


# ---------------------------------------------------------------------------
# compiling


def jit_module(module: ir.Module, symbols: list[str]) -> list[int]:
    """Optimise ``module`` at O3 for this CPU, link it into the process, return addresses."""
    return targets.host().load(module, symbols)


def new_symbol(desc: Intrinsic, what: str) -> str:
    return f"tensorize.intrinsic.{desc.name}.{what}.{next(_counter)}"


_CALL = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)


class CompiledIntrinsic:
    """One intrinsic call on numpy arrays: ``impl(c=..., a=..., b=...)`` accumulates into
    the output in place. Any strides in whole elements and any alignment are accepted.

    ``specialize=True`` compiles once per stride pattern with the strides as constants (unit
    strides become vector loads); ``False`` compiles one function that reads strides at run
    time, the form a caller with unknown strides uses."""

    def __init__(self, desc: Intrinsic, native: Optional[bool] = None, specialize: bool = True):
        self.desc = desc
        self.emitter = emitter_of(desc, native)
        self.native = self.emitter is desc.emitter
        self.specialize = specialize
        self._functions: dict[tuple, object] = {}
        self._dtypes = {o.name: np.dtype(numpy_dtype(o.dtype)) for o in desc.operands}

    def __repr__(self) -> str:
        kind = "native" if self.native else "emulated"
        return f"<CompiledIntrinsic {self.desc.name} {kind}>"

    def __call__(self, **arrays: np.ndarray) -> None:
        strides = self._check(arrays)
        key = tuple(strides[o.name] for o in self.desc.operands) if self.specialize else ()
        fn = self._functions.get(key)
        if fn is None:
            fn = self._functions[key] = self._compile(strides if self.specialize else None)
        pointers = (ctypes.c_void_p * len(self.desc.operands))(
            *(arrays[o.name].ctypes.data for o in self.desc.operands))
        flat = [s for o in self.desc.operands for s in strides[o.name]]
        stride_array = (ctypes.c_int64 * max(1, len(flat)))(*flat)
        fn(pointers, stride_array)

    def _compile(self, strides: Optional[dict[str, tuple[int, ...]]]):
        module = targets.host().module(self.desc.name)
        symbol = new_symbol(self.desc, "call")
        call_function(module, self.desc, self.emitter, symbol, strides)
        (address,) = jit_module(module, [symbol])
        return _CALL(address)

    def _check(self, arrays: dict[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
        """Element strides of each operand; ValueError naming the operand for anything else."""
        names = [o.name for o in self.desc.operands]
        extra = sorted(set(arrays) - set(names))
        if extra:
            raise ValueError(f"{self.desc.name} has no operand {extra[0]}; its operands are "
                             f"{', '.join(names)}")
        strides = {}
        for o in self.desc.operands:
            if o.name not in arrays:
                raise ValueError(f"{self.desc.name}: operand {o.name} is missing")
            strides[o.name] = _element_strides(self.desc.name, o, arrays[o.name],
                                               self._dtypes[o.name])
        out = self.desc.output.name
        for o in self.desc.inputs:
            if np.may_share_memory(arrays[out], arrays[o.name]):
                raise ValueError(f"{self.desc.name}: output {out} shares memory with operand "
                                 f"{o.name}")
        return strides


def _element_strides(name: str, o, arr, want: np.dtype) -> tuple[int, ...]:
    if not isinstance(arr, np.ndarray):
        raise ValueError(f"{name}: operand {o.name} must be a numpy array, not {type(arr).__name__}")
    if arr.dtype != want:
        raise ValueError(f"{name}: operand {o.name} has dtype {arr.dtype}, {want} ({o.dtype}) "
                         f"expected")
    if arr.shape != o.shape:
        raise ValueError(f"{name}: operand {o.name} has shape {arr.shape}, {o.shape} expected")
    if any(s % arr.itemsize for s in arr.strides):
        raise ValueError(f"{name}: operand {o.name} has strides {arr.strides} bytes, not whole "
                         f"elements of {arr.itemsize} bytes")
    if o.role == "output":
        if not arr.flags.writeable:
            raise ValueError(f"{name}: output {o.name} is read-only")
        if any(s == 0 and n > 1 for s, n in zip(arr.strides, arr.shape)):
            raise ValueError(f"{name}: output {o.name} repeats elements (a zero stride)")
    return tuple(s // arr.itemsize for s in arr.strides)


def compile_intrinsic(desc: Union[Intrinsic, str], native: Optional[bool] = None,
                      specialize: bool = True) -> CompiledIntrinsic:
    """A standalone callable for ``desc``: native when this CPU has its ISA and it has an
    emitter (or as ``native`` forces), else emulated from its semantics."""
    if isinstance(desc, str):
        from .base import get
        desc = get(desc)
    return CompiledIntrinsic(desc, native, specialize)
