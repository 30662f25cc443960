"""Emitting intrinsics as LLVM IR, and compiling them into standalone callables.

An emitter writes one intrinsic call into an ``ir.IRBuilder``, given each operand as a base
pointer plus a stride per operand dimension, in elements. A stride is a Python ``int`` when
known at compile time (then unit strides become vector loads) or an ``i64`` value.

Emitters have three phases so that a caller can keep the accumulated output in registers
across consecutive calls along a reduction (the micro-kernel shape of a GEMM)::

    acc = e.load_acc(b, ops)          # the output block into SSA values
    for k ...: acc = e.step(b, ops_k, acc)
    e.store_acc(b, ops, acc)

``emit(b, ops)`` is the three phases once. ``kloop_function`` builds that loop with the
accumulators as phi nodes; ``Emulated`` implements any descriptor from its semantics.
A lowering emits a call site as::

    emitter_of(desc).emit(builder, {"c": Ref(c_ptr, "f32", (16, 1)), "a": ..., "b": ...})

``emitter_of`` picks the native emitter when this CPU has the descriptor's ISA, else the
emulation, so the same call site compiles on any machine. ``LlvmText`` is an emitter whose
implementation is LLVM IR text (one function of the base pointers and element strides).
"""

from __future__ import annotations

import ctypes
import hashlib
import itertools
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import llvmlite.binding as llvm
import numpy as np
from llvmlite import ir

from rewrite import codegen, runtime
from rewrite.ir import Const, itemsize, numpy_dtype

from .base import Intrinsic

I64 = ir.IntType(64)
PTR = ir.PointerType()
VOID = ir.VoidType()

Stride = Union[int, ir.Value]


@dataclass(frozen=True)
class Ref:
    """An operand at emit time: base pointer, element dtype, and a stride per dimension."""

    ptr: ir.Value
    dtype: str
    strides: tuple[Stride, ...]

    def at(self, b: ir.IRBuilder, index: Sequence[Stride]) -> ir.Value:
        """Address of element ``index`` (ints or i64 values)."""
        offset = _offset(b, index, self.strides)
        if isinstance(offset, int) and offset == 0:
            return self.ptr
        off = ir.Constant(I64, offset) if isinstance(offset, int) else offset
        return b.gep(self.ptr, [off], source_etype=codegen.lltype(self.dtype))

    def advanced(self, b: ir.IRBuilder, elements: ir.Value) -> "Ref":
        ptr = b.gep(self.ptr, [elements], source_etype=codegen.lltype(self.dtype))
        return Ref(ptr, self.dtype, self.strides)


def _offset(b: ir.IRBuilder, index: Sequence[Stride], strides: Sequence[Stride]) -> Stride:
    """Sum of index * stride, folded to an ``int`` while everything is known."""
    const, terms = 0, []
    for i, s in zip(index, strides):
        if isinstance(i, int) and isinstance(s, int):
            const += i * s
        elif isinstance(i, int) and i == 0 or isinstance(s, int) and s == 0:
            continue
        else:
            terms.append(b.mul(_value(i), _value(s)))
    if not terms:
        return const
    total = terms[0]
    for t in terms[1:]:
        total = b.add(total, t)
    return b.add(total, ir.Constant(I64, const)) if const else total


def _value(x: Stride) -> ir.Value:
    return ir.Constant(I64, x) if isinstance(x, int) else x


class Emitter:
    """Base of every emitter. Subclasses set ``operands`` (the semantics' parameter names)
    and may set ``shapes``/``dtypes`` so registration checks they fit the semantics."""

    operands: tuple[str, ...] = ()
    shapes: dict = {}
    dtypes: dict = {}

    def load_acc(self, b: ir.IRBuilder, ops: dict[str, Ref]):
        raise NotImplementedError

    def step(self, b: ir.IRBuilder, ops: dict[str, Ref], acc):
        raise NotImplementedError

    def store_acc(self, b: ir.IRBuilder, ops: dict[str, Ref], acc) -> None:
        raise NotImplementedError

    def emit(self, b: ir.IRBuilder, ops: dict[str, Ref]) -> None:
        self.store_acc(b, ops, self.step(b, ops, self.load_acc(b, ops)))


# ---------------------------------------------------------------------------
# vector helpers shared by native emitters


def declare(module: ir.Module, name: str, ret: ir.Type, args: list[ir.Type]) -> ir.Function:
    """Declare (once) an LLVM intrinsic by its full mangled name."""
    existing = module.globals.get(name)
    if existing is not None:
        return existing
    return ir.Function(module, ir.FunctionType(ret, args), name=name)


def load_row(b: ir.IRBuilder, ref: Ref, index: Sequence[int], dim: int, n: int) -> ir.Value:
    """``n`` elements along ``dim`` from ``index``, as one vector. A unit stride is one load
    aligned to the element only (numpy gives no more); other strides gather element-wise."""
    ety, size = codegen.lltype(ref.dtype), itemsize(ref.dtype)
    if ref.strides[dim] == 1:
        return b.load(ref.at(b, index), typ=ir.VectorType(ety, n), align=size)
    vec = ir.Constant(ir.VectorType(ety, n), ir.Undefined)
    for lane in range(n):
        idx = list(index)
        idx[dim] += lane
        vec = b.insert_element(vec, b.load(ref.at(b, idx), typ=ety, align=size),
                               ir.Constant(ir.IntType(32), lane))
    return vec


def store_row(b: ir.IRBuilder, ref: Ref, index: Sequence[int], dim: int, vec: ir.Value) -> None:
    n, size = vec.type.count, itemsize(ref.dtype)
    if ref.strides[dim] == 1:
        b.store(vec, ref.at(b, index), align=size)
        return
    for lane in range(n):
        idx = list(index)
        idx[dim] += lane
        b.store(b.extract_element(vec, ir.Constant(ir.IntType(32), lane)), ref.at(b, idx),
                align=size)


def load_scalar(b: ir.IRBuilder, ref: Ref, index: Sequence[int]) -> ir.Value:
    return b.load(ref.at(b, index), typ=codegen.lltype(ref.dtype), align=itemsize(ref.dtype))


def shuffle(b: ir.IRBuilder, x: ir.Value, y: Optional[ir.Value], lanes: Sequence[int]) -> ir.Value:
    mask = ir.Constant(ir.VectorType(ir.IntType(32), len(lanes)), [int(v) for v in lanes])
    return b.shuffle_vector(x, y if y is not None else ir.Constant(x.type, ir.Undefined), mask)


def splat(b: ir.IRBuilder, scalar: ir.Value, n: int) -> ir.Value:
    one = b.insert_element(ir.Constant(ir.VectorType(scalar.type, 1), ir.Undefined), scalar,
                           ir.Constant(ir.IntType(32), 0))
    return shuffle(b, one, None, [0] * n)


def concat(b: ir.IRBuilder, parts: Sequence[ir.Value]) -> ir.Value:
    """Join equal-width vectors end to end (pairwise, as shufflevector needs equal types)."""
    parts = list(parts)
    while len(parts) > 1:
        n = parts[0].type.count
        parts = [shuffle(b, parts[i], parts[i + 1], range(2 * n)) for i in range(0, len(parts), 2)]
    return parts[0]


# ---------------------------------------------------------------------------
# emulation: the semantics nest on strided operands


class _StridedBody(codegen._BodyEmitter):
    """The backend's statement emitter (so every operation means what the interpreter says),
    addressing each operand through its strides instead of a row-major shape."""

    def __init__(self, b: ir.IRBuilder, refs: dict[str, Ref]):
        super().__init__(b, {name: r.ptr for name, r in refs.items()})
        self.refs = refs

    def address(self, buffer, indices):
        ref = self.refs[buffer.name]
        return ref.at(self.b, [0 if isinstance(i, Const) and i.value == 0 else self.index(i)
                               for i in indices])


class Emulated(Emitter):
    """An implementation generated from the semantics: the loop nest itself, compiled by the
    backend. The accumulator stays in memory, so ``step`` is the whole call."""

    def __init__(self, desc: Intrinsic):
        self.desc = desc
        self.operands = tuple(o.name for o in desc.operands)

    def load_acc(self, b, ops):
        return None

    def step(self, b, ops, acc):
        _StridedBody(b, ops).stmt(self.desc.semantics.body)
        return None

    def store_acc(self, b, ops, acc) -> None:
        pass


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
        b.call(fn, [r.ptr for r in refs] + [_value(s) for r in refs for s in r.strides])
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
    use_native = desc.native if native is None else native
    if use_native and desc.emitter is None:
        raise ValueError(f"intrinsic {desc.name} has no native emitter")
    if use_native and not desc.native:
        # its instructions would stop the process with an illegal-instruction signal
        raise ValueError(f"intrinsic {desc.name} needs {'+'.join(desc.isa)}, which this CPU lacks")
    return desc.emitter if use_native else Emulated(desc)


# ---------------------------------------------------------------------------
# functions around an emitter

# Standalone call: void f(ptr pointers, ptr strides); strides are i64, operand after operand.
CALL_TYPE = ir.FunctionType(VOID, [PTR, PTR])
# Micro-kernel: void f(ptr pointers, i64 steps, i64 repeats).
KLOOP_TYPE = ir.FunctionType(VOID, [PTR, I64, I64])


def _refs(b: ir.IRBuilder, desc: Intrinsic, pointers: ir.Value,
          strides: Union[dict[str, tuple[int, ...]], ir.Value]) -> dict[str, Ref]:
    """Operand refs read from the pointer array; strides either fixed or read from memory."""
    refs, slot = {}, 0
    for n, o in enumerate(desc.operands):
        ptr = b.load(b.gep(pointers, [ir.Constant(I64, n)], source_etype=PTR), typ=PTR, align=8)
        if isinstance(strides, dict):
            st = tuple(strides[o.name])
        else:
            st = tuple(b.load(b.gep(strides, [ir.Constant(I64, slot + d)], source_etype=I64),
                              typ=I64, align=8) for d in range(len(o.shape)))
        slot += len(o.shape)
        refs[o.name] = Ref(ptr, o.dtype, st)
    return refs


def call_function(module: ir.Module, desc: Intrinsic, emitter: Emitter, symbol: str,
                  strides: Optional[dict[str, tuple[int, ...]]]) -> ir.Function:
    """One call of the intrinsic. ``strides`` fixed at compile time, or None: read at run time."""
    fn = ir.Function(module, CALL_TYPE, name=symbol)
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    refs = _refs(b, desc, fn.args[0], strides if strides is not None else fn.args[1])
    emitter.emit(b, refs)
    b.ret_void()
    return fn


def kloop_function(module: ir.Module, desc: Intrinsic, emitter: Emitter, symbol: str,
                   strides: dict[str, tuple[int, ...]], advance: dict[str, int],
                   keep_acc: bool = True) -> ir.Function:
    """``repeats`` times: ``steps`` consecutive calls, operand ``x`` moving ``advance[x]``
    elements per call. With ``keep_acc`` the output is loaded once, carried in phi nodes
    (registers) through the steps and stored once: what a lowering does for consecutive
    calls along a reduction. Without it, every call loads and stores its output."""
    fn = ir.Function(module, KLOOP_TYPE, name=symbol)
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    pointers, steps, repeats = fn.args
    refs = _refs(b, desc, pointers, strides)
    out = desc.output.name

    def moved(k: ir.Value) -> dict[str, Ref]:
        return {n: r.advanced(b, b.mul(k, ir.Constant(I64, advance.get(n, 0))))
                if advance.get(n, 0) else r for n, r in refs.items()}

    def one_repeat(_: ir.Value) -> None:
        if not keep_acc:
            codegen.counted_loop(b, ir.Constant(I64, 0), steps, lambda k: emitter.emit(b, moved(k)))
            return
        acc = emitter.load_acc(b, refs)
        acc = phi_loop(b, steps, acc, lambda k, a: emitter.step(b, {**moved(k), out: refs[out]}, a))
        emitter.store_acc(b, refs, acc)

    codegen.counted_loop(b, ir.Constant(I64, 0), repeats, one_repeat)
    b.ret_void()
    return fn


def phi_loop(b: ir.IRBuilder, n: ir.Value, state, body):
    """``for k < n: state = body(k, state)`` with ``state`` (a nested list of SSA values) in
    phi nodes; returns the final state."""
    flat, rebuild = _flatten(state)
    fn = b.function
    entry = b.block
    header, done = fn.append_basic_block("kloop"), fn.append_basic_block("kloop.end")
    b.cbranch(b.icmp_signed("<", ir.Constant(I64, 0), n), header, done)
    b.position_at_end(header)
    k = b.phi(I64)
    phis = [b.phi(v.type) for v in flat]
    k.add_incoming(ir.Constant(I64, 0), entry)
    for p, v in zip(phis, flat):
        p.add_incoming(v, entry)
    new_flat, _ = _flatten(body(k, rebuild(phis)))
    latch = b.block
    k_next = b.add(k, ir.Constant(I64, 1))
    k.add_incoming(k_next, latch)
    for p, v in zip(phis, new_flat):
        p.add_incoming(v, latch)
    b.cbranch(b.icmp_signed("<", k_next, n), header, done)
    b.position_at_end(done)
    finals = [b.phi(v.type) for v in flat]
    for f, v0, v1 in zip(finals, flat, new_flat):
        f.add_incoming(v0, entry)
        f.add_incoming(v1, latch)
    return rebuild(finals)


def _flatten(state):
    """A nested list/tuple of values as a flat list, and how to rebuild the nesting."""
    if state is None:
        return [], lambda vals: None
    if isinstance(state, (list, tuple)):
        parts = [_flatten(s) for s in state]
        sizes = [len(p[0]) for p in parts]

        def rebuild(vals):
            out, pos = [], 0
            for (_, rb), size in zip(parts, sizes):
                out.append(rb(vals[pos:pos + size]))
                pos += size
            return out
        return [v for p in parts for v in p[0]], rebuild
    return [state], lambda vals: vals[0]


# ---------------------------------------------------------------------------
# compiling


_counter = itertools.count()


def jit(module: ir.Module, symbols: list[str]) -> list[int]:
    """Optimise ``module`` at O3 for this CPU, link it into the process, return addresses."""
    obj = codegen.object_code(codegen.optimize(module))
    return runtime._engine().load(obj, symbols)


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
        module = codegen.new_module(self.desc.name)
        symbol = new_symbol(self.desc, "call")
        call_function(module, self.desc, self.emitter, symbol, strides)
        (address,) = jit(module, [symbol])
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
