"""LLVM IR for a lowered kernel, built with llvmlite, optimised at O3 for this CPU.

Every operation reproduces the meaning written in ``ir.py``:

- integers wrap (no ``nsw``/``nuw`` on values); ``//`` and ``%`` floor, with a zero divisor
  giving 0 and ``MIN // -1`` giving ``MIN``, through selects around a divide by a safe
  divisor, so no division can trap;
- float ``max``/``min`` are ``llvm.maximum``/``llvm.minimum`` (NaN in, NaN out); float to int
  casts are ``llvm.fptosi.sat``/``llvm.fptoui.sat`` (saturate, NaN gives 0); ``f16`` is
  ``half``, which LLVM rounds after every operation like the interpreter;
- loads and stores are aligned to the element size only, so numpy views at odd offsets work.

Float reductions. The add of ``X[i] += v`` carries ``reassoc contract``: LLVM may then keep
a reduction in several vector lanes and fuse ``a * b + c`` into an FMA, so a sum over ``n``
terms may differ from the sequential one by a few ``n * eps`` relative to its terms. Every
other float operation is exact IEEE in program order. ``runtime.check`` scales its tolerance
by the reduction length for this reason.

Kernel shape: ``void K(ptr args, ptr pool)``. Each part of the plan becomes an internal
function over ``noalias`` buffer pointers and an iteration range ``[lo, hi)``; a parallel part
is handed to the pool's dispatcher (see ``pool_ir``) when ``pool`` is not null.
"""

from __future__ import annotations

import functools
from typing import Callable, Optional

import llvmlite
import llvmlite.binding as llvm
import numpy as np
from llvmlite import ir

from . import lower as lowering
from .ir import (BOOL, INDEX, Accumulate, Binary, Call, Cast, Compare, Const, Expr, For, If, Load,
                 Logical, PrimFunc, Select, Seq, Stmt, Store, Unary, Var, bits, is_float, is_int,
                 is_signed, itemsize, walk_expr)

# ---------------------------------------------------------------------------
# types

_I1, _I32, _I64 = ir.IntType(1), ir.IntType(32), ir.IntType(64)
_PTR = ir.PointerType()
_VOID = ir.VoidType()
_FLOAT_TYPES = {"f16": ir.HalfType(), "f32": ir.FloatType(), "f64": ir.DoubleType()}


def lltype(dtype: str) -> ir.Type:
    """LLVM type of a dtype: ``half``/``float``/``double``, ``iN`` (u8 is ``i8``), ``i1``."""
    if dtype == BOOL:
        return _I1
    return _FLOAT_TYPES.get(dtype) or ir.IntType(bits(dtype))


def _suffix(dtype: str) -> str:
    """The type part of an overloaded intrinsic's name (``llvm.smax.i8``, ``llvm.exp.f16``)."""
    return dtype if is_float(dtype) else f"i{bits(dtype)}"


def const(dtype: str, value) -> ir.Constant:
    """A constant, first rounded (floats) or wrapped (ints) to ``dtype`` as the interpreter does."""
    if dtype == BOOL:
        return ir.Constant(_I1, int(bool(value)))
    if is_float(dtype):
        # LLVM rejects a float literal its type cannot hold exactly: round like numpy.
        return ir.Constant(lltype(dtype), float(np.array(value, dtype=f"float{bits(dtype)}")))
    n = bits(dtype)
    wrapped = (int(value) + (1 << (n - 1))) % (1 << n) - (1 << (n - 1))
    return ir.Constant(ir.IntType(n), wrapped)


# ---------------------------------------------------------------------------
# the target


@functools.lru_cache(maxsize=None)
def target_machine() -> llvm.TargetMachine:
    """This CPU by name *and* features: without features LLVM falls back to generic x86-64
    (no AVX, and FMA intrinsics become library calls)."""
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    target = llvm.Target.from_triple(llvm.get_process_triple())
    return target.create_target_machine(cpu=llvm.get_host_cpu_name(),
                                        features=llvm.get_host_cpu_features().flatten(),
                                        opt=3, codemodel="jitdefault", jit=True)


@functools.lru_cache(maxsize=None)
def target_id() -> str:
    """What compiled code depends on besides the program; part of every cache key."""
    return "|".join((llvm.get_process_triple(), llvm.get_host_cpu_name(),
                     llvm.get_host_cpu_features().flatten(), f"llvmlite-{llvmlite.__version__}"))


def new_module(name: str) -> ir.Module:
    module = ir.Module(name=name)
    module.triple = llvm.get_process_triple()
    module.data_layout = str(target_machine().target_data)
    return module


def optimize(module: ir.Module) -> llvm.ModuleRef:
    """Parse and verify ``module``, then run the new pass manager's O3 pipeline with loop and
    SLP vectorisation for this CPU.

    ``module.linked_ir``, when set, lists LLVM IR texts (intrinsics written as text, see
    ``intrinsics.LlvmText``) linked in first; a function the module declares and a text
    defines becomes internal, so once inlined it leaves no symbol behind."""
    ref = llvm.parse_assembly(str(module))
    texts = getattr(module, "linked_ir", ())
    if texts:
        declared = {f.name for f in ref.functions if f.is_declaration}
        for text in texts:
            part = llvm.parse_assembly(text)
            part.triple, part.data_layout = ref.triple, ref.data_layout
            ref.link_in(part)
        for f in ref.functions:
            if f.name in declared and not f.is_declaration:
                f.linkage = llvm.Linkage.internal
    ref.verify()
    tuning = llvm.create_pipeline_tuning_options(speed_level=3)
    tuning.loop_vectorization = True
    tuning.slp_vectorization = True
    tuning.loop_interleaving = True
    tuning.loop_unrolling = False
    builder = llvm.create_pass_builder(target_machine(), tuning)
    builder.getModulePassManager().run(ref, builder)
    return ref


def object_code(ref: llvm.ModuleRef) -> bytes:
    return target_machine().emit_object(ref)


def assembly(ref: llvm.ModuleRef) -> str:
    return target_machine().emit_assembly(ref)


# ---------------------------------------------------------------------------
# small helpers for llvmlite


def _intrinsic(module: ir.Module, name: str, ret: ir.Type, args: list[ir.Type]) -> ir.Function:
    """Declare (once) an intrinsic by its full mangled name, e.g. ``llvm.maximum.f32``."""
    existing = module.globals.get(name)
    if existing is not None:
        return existing
    return ir.Function(module, ir.FunctionType(ret, args), name=name)


class _FunctionPointer:
    """A function pointer llvmlite can call: with opaque pointers ``call`` reads the callee's
    signature from ``function_type``, which only ``ir.Function`` carries."""

    def __init__(self, value: ir.Value, fnty: ir.FunctionType):
        self.value, self.type, self.function_type = value, value.type, fnty

    def get_reference(self) -> str:
        return self.value.get_reference()


def _indirect(pointer: ir.Value, fnty: ir.FunctionType) -> _FunctionPointer:
    return _FunctionPointer(pointer, fnty)


def counted_loop(b: ir.IRBuilder, start: ir.Value, stop: ir.Value, body: Callable[[ir.Value], None],
                 known_nonempty: bool = False) -> None:
    """``for v in range(start, stop): body(v)`` as a rotated loop (test at the bottom), the
    form LLVM's loop passes expect; guarded by ``start < stop`` unless known."""
    fn = b.function
    header = fn.append_basic_block("loop")
    exit_ = fn.append_basic_block("loop.end")
    if known_nonempty:
        b.branch(header)
    else:
        b.cbranch(b.icmp_signed("<", start, stop), header, exit_)
    entry = b.block
    b.position_at_end(header)
    v = b.phi(_I64)
    v.add_incoming(start, entry)
    body(v)
    nxt = b.add(v, ir.Constant(_I64, 1), flags=("nsw",))
    v.add_incoming(nxt, b.block)
    b.cbranch(b.icmp_signed("<", nxt, stop), header, exit_)
    b.position_at_end(exit_)


# ---------------------------------------------------------------------------
# statements and expressions




class _BodyEmitter:
    """Emits the statements of one part into a function whose buffer pointers are given."""

    def __init__(self, b: ir.IRBuilder, pointers: dict[str, ir.Value]):
        self.b = b
        self.module = b.module
        self.pointers = pointers
        self.vars: dict[str, ir.Value] = {}

    # -- statements -----------------------------------------------------------

    def stmt(self, s: Stmt) -> None:
        if isinstance(s, Seq):
            for c in s.stmts:
                self.stmt(c)
        elif isinstance(s, For) and self._reduction_call(s):
            self.call_loop(s)
        elif isinstance(s, For):
            self.loop(s, ir.Constant(_I64, s.start), ir.Constant(_I64, s.stop), known_nonempty=True)
        elif isinstance(s, If):
            self.branch(s)
        elif isinstance(s, Store):
            value = self.expr(s.value)
            self.b.store(value, self.address(s.buffer, s.indices), align=itemsize(s.buffer.dtype))
        elif isinstance(s, Accumulate):
            self.accumulate(s)
        elif isinstance(s, Call):
            self.intrinsic(s)
        else:
            raise TypeError(f"codegen: unknown statement {type(s).__name__}")

    def loop(self, s: For, start: ir.Value, stop: ir.Value, known_nonempty: bool = False) -> None:
        def body(v: ir.Value) -> None:
            self.vars[s.var] = v
            self.stmt(s.body)
            del self.vars[s.var]

        counted_loop(self.b, start, stop, body, known_nonempty)

    def branch(self, s: If) -> None:
        cond = self.expr(s.cond)
        if s.orelse is None:
            with self.b.if_then(cond):
                self.stmt(s.then)
        else:
            with self.b.if_else(cond) as (then, orelse):
                with then:
                    self.stmt(s.then)
                with orelse:
                    self.stmt(s.orelse)

    def accumulate(self, s: Accumulate) -> None:
        dtype = s.buffer.dtype
        ptr = self.address(s.buffer, s.indices)
        value = self.expr(s.value)
        old = self.b.load(ptr, typ=lltype(dtype), align=itemsize(dtype))
        if is_float(dtype):
            # The one reassociable float operation (see the module docstring).
            new = self.b.fadd(old, value, flags=("reassoc", "contract"))
        else:
            new = self.b.add(old, value)
        self.b.store(new, ptr, align=itemsize(dtype))

    def intrinsic(self, s: Call) -> None:
        """An intrinsic call: its emitter (native on this CPU, else the emulation from its
        semantics) given each window as a base pointer and an element stride per operand
        dimension."""
        import intrinsics  # the registry imports the backend, so not at module level

        intrinsics.emitter_of(intrinsics.get(s.intrinsic)).emit(self.b, self._refs(s))

    def _refs(self, s: Call) -> dict:
        import intrinsics

        refs = {}
        for name, w in s.operands:
            refs[name] = intrinsics.Ref(self.address(w.buffer, w.base), w.buffer.dtype, w.strides)
        return refs

    @staticmethod
    def _reduction_call(s: For) -> bool:
        """A loop around one call whose output window stays where it is and which no input
        reads: consecutive calls accumulate into the same block."""
        if not isinstance(s.body, Call):
            return False
        call = s.body
        out = call.window(call.output)
        moves = any(isinstance(x, Var) and x.name == s.var for e in out.base for x in walk_expr(e))
        reads_out = any(w.buffer.name == out.buffer.name for n, w in call.operands if n != call.output)
        return not moves and not reads_out

    def call_loop(self, s: For) -> None:
        """``for v: call(...)`` along a reduction, the way the intrinsic's own k-loop runs:
        the output block loaded once into the emitter's accumulators, each call a ``step``
        on them (in phi nodes, so in registers), stored once -- work an emitter defers to
        ``store_acc`` (the int8 dot's folding of pair sums) is then done once per loop, not
        once per call. Exact: the calls add into one block no input reads, in the same order."""
        import intrinsics
        from intrinsics.emit import phi_loop

        call = s.body
        emitter = intrinsics.emitter_of(intrinsics.get(call.intrinsic))
        start = ir.Constant(_I64, s.start)
        self.vars[s.var] = start
        first = self._refs(call)  # the output's ref is the same at every step

        def step(k: ir.Value, acc):
            self.vars[s.var] = self.b.add(k, start, flags=("nsw",))
            return emitter.step(self.b, {**self._refs(call), call.output: first[call.output]}, acc)

        acc = emitter.load_acc(self.b, first)
        acc = phi_loop(self.b, ir.Constant(_I64, s.extent), acc, step)
        emitter.store_acc(self.b, first, acc)
        del self.vars[s.var]

    def address(self, buffer, indices: tuple[Expr, ...]) -> ir.Value:
        """Row-major element address. Index arithmetic carries ``nsw``: every access is in
        bounds (verified statically), so no index computation overflows, and ``nsw`` lets
        LLVM's scalar evolution see affine strides."""
        offset: Optional[ir.Value] = None
        stride = 1
        for dim, idx in reversed(list(zip(buffer.shape, indices))):
            term = self.b.mul(self.index(idx), ir.Constant(_I64, stride), flags=("nsw",))
            offset = term if offset is None else self.b.add(offset, term, flags=("nsw",))
            stride *= dim
        if offset is None:
            offset = ir.Constant(_I64, 0)
        return self.b.gep(self.pointers[buffer.name], [offset], inbounds=True,
                          source_etype=lltype(buffer.dtype))

    def index(self, e: Expr) -> ir.Value:
        if isinstance(e, Binary) and e.op in ("+", "-", "*") and e.dtype == INDEX:
            a, b = self.index(e.a), self.index(e.b)
            op = {"+": self.b.add, "-": self.b.sub, "*": self.b.mul}[e.op]
            return op(a, b, flags=("nsw",))
        return self.expr(e)

    # -- expressions ----------------------------------------------------------

    def expr(self, e: Expr) -> ir.Value:
        if isinstance(e, Var):
            return self.vars[e.name]
        if isinstance(e, Const):
            return const(e.dtype, e.value)
        if isinstance(e, Load):
            return self.b.load(self.address(e.buffer, e.indices), typ=lltype(e.dtype),
                               align=itemsize(e.dtype))
        if isinstance(e, Binary):
            return self.binary(e.op, e.dtype, self.expr(e.a), self.expr(e.b))
        if isinstance(e, Unary):
            return self.unary(e.op, e.a.dtype, self.expr(e.a))
        if isinstance(e, Cast):
            return self.cast(self.expr(e.a), e.a.dtype, e.dtype)
        if isinstance(e, Select):
            return self.b.select(self.expr(e.cond), self.expr(e.a), self.expr(e.b))
        if isinstance(e, Compare):
            return self.compare(e.op, e.a.dtype, self.expr(e.a), self.expr(e.b))
        if isinstance(e, Logical):
            a, b = self.expr(e.a), self.expr(e.b)
            return self.b.and_(a, b) if e.op == "and" else self.b.or_(a, b)
        raise TypeError(f"codegen: unknown expression {type(e).__name__}")

    def call(self, name: str, dtype: str, args: list[ir.Value]) -> ir.Value:
        """Call the overloaded intrinsic ``llvm.<name>.<dtype>`` whose result has ``dtype``."""
        fn = _intrinsic(self.module, f"llvm.{name}.{_suffix(dtype)}", lltype(dtype),
                        [a.type for a in args])
        return self.b.call(fn, args)

    def binary(self, op: str, dtype: str, a: ir.Value, b: ir.Value) -> ir.Value:
        if is_float(dtype):
            if op in ("max", "min"):
                return self.call("maximum" if op == "max" else "minimum", dtype, [a, b])
            if op == "*":
                # contract lets an accumulation's add fuse with this product (FMA)
                return self.b.fmul(a, b, flags=("contract",))
            arith = {"+": self.b.fadd, "-": self.b.fsub, "/": self.b.fdiv}
            if op not in arith:
                raise TypeError(f"codegen: {op} is not defined on {dtype}")
            return arith[op](a, b)
        if op in ("+", "-", "*"):
            return {"+": self.b.add, "-": self.b.sub, "*": self.b.mul}[op](a, b)
        if op in ("max", "min"):
            kind = ("s" if is_signed(dtype) else "u") + op
            return self.call(kind, dtype, [a, b])
        if op in ("//", "%"):
            return self._floor_divmod(op, dtype, a, b)
        raise TypeError(f"codegen: {op} is not defined on {dtype}")

    def _floor_divmod(self, op: str, dtype: str, a: ir.Value, b: ir.Value) -> ir.Value:
        """Python's floor ``//`` and ``%`` without undefined behaviour: divide by 1 where the
        divisor is 0 (result 0) or -1 (``//`` is then ``-a``, wrapping, and ``%`` is 0)."""
        B, ty = self.b, a.type
        zero, one = ir.Constant(ty, 0), ir.Constant(ty, 1)
        is_zero = B.icmp_unsigned("==", b, zero)
        if not is_signed(dtype):
            safe = B.select(is_zero, one, b)
            r = B.udiv(a, safe) if op == "//" else B.urem(a, safe)
            return B.select(is_zero, zero, r)
        is_m1 = B.icmp_signed("==", b, ir.Constant(ty, -1))
        special = B.or_(is_zero, is_m1)
        safe = B.select(special, one, b)
        q, r = B.sdiv(a, safe), B.srem(a, safe)
        # truncated -> floored: step down when the remainder's sign differs from the divisor's
        adjust = B.and_(B.icmp_signed("!=", r, zero),
                        B.icmp_signed("<", B.xor(r, b), zero))
        if op == "//":
            floor = B.sub(q, B.zext(adjust, ty))
            return B.select(is_zero, zero, B.select(is_m1, B.sub(zero, a), floor))
        floor = B.add(r, B.select(adjust, b, zero))
        return B.select(special, zero, floor)

    def unary(self, op: str, dtype: str, a: ir.Value) -> ir.Value:
        if op == "not":
            return self.b.xor(a, ir.Constant(_I1, 1))
        if is_float(dtype):
            if op == "neg":
                return self.b.fneg(a)
            name = {"abs": "fabs", "exp": "exp", "sqrt": "sqrt"}[op]
            return self.call(name, dtype, [a])
        if op == "neg":
            return self.b.sub(ir.Constant(a.type, 0), a)
        if op == "abs":
            if not is_signed(dtype):
                return a
            # false: abs(MIN) is MIN (wraps), not poison
            fn = _intrinsic(self.module, f"llvm.abs.{_suffix(dtype)}", a.type, [a.type, _I1])
            return self.b.call(fn, [a, ir.Constant(_I1, 0)])
        raise TypeError(f"codegen: {op} is not defined on {dtype}")

    def _round_to_odd_f32(self, a: ir.Value) -> ir.Value:
        """``a`` (f64) to f32 rounding to odd: truncate toward zero, and set the last bit when
        inexact. Rounding that to f16 then rounds ``a`` correctly once (f32 has more than
        f16's 11 + 2 bits), which LLVM's own f64 -> f16 does only through a library call."""
        B = self.b
        near = B.fptrunc(a, ir.FloatType())
        back = B.fpext(near, ir.DoubleType())
        inexact = B.fcmp_unordered("!=", back, a)
        fabs = _intrinsic(self.module, "llvm.fabs.f64", ir.DoubleType(), [ir.DoubleType()])
        overshot = B.fcmp_ordered(">", B.call(fabs, [back]), B.call(fabs, [a]))
        raw = B.bitcast(near, _I32)
        toward_zero = B.select(overshot, B.sub(raw, ir.Constant(_I32, 1)), raw)
        odd = B.or_(toward_zero, ir.Constant(_I32, 1))
        return B.bitcast(B.select(inexact, odd, raw), ir.FloatType())

    def compare(self, op: str, dtype: str, a: ir.Value, b: ir.Value) -> ir.Value:
        if is_float(dtype):
            # != is the unordered compare: NaN != x holds, as in Python and numpy
            if op == "!=":
                return self.b.fcmp_unordered("!=", a, b)
            return self.b.fcmp_ordered(op, a, b)
        if dtype == BOOL or not is_signed(dtype):
            return self.b.icmp_unsigned(op, a, b)
        return self.b.icmp_signed(op, a, b)

    def cast(self, a: ir.Value, src: str, dst: str) -> ir.Value:
        B, ty = self.b, lltype(dst)
        if src == dst:
            return a
        if src == BOOL:
            return B.uitofp(a, ty) if is_float(dst) else B.zext(a, ty)
        if is_int(src) and is_int(dst):
            if bits(dst) < bits(src):
                return B.trunc(a, ty)
            if bits(dst) == bits(src):
                return a  # i8 <-> u8: the same bits
            return B.sext(a, ty) if is_signed(src) else B.zext(a, ty)
        if is_int(src) and dst == "f16":
            # through f32, which holds every integer below f16's overflow threshold exactly
            # (LLVM would otherwise call a runtime library function the process lacks)
            return B.fptrunc(self.cast(a, src, "f32"), ty)
        if is_int(src) and is_float(dst):
            return B.sitofp(a, ty) if is_signed(src) else B.uitofp(a, ty)
        if src == "f64" and dst == "f16":
            return B.fptrunc(self._round_to_odd_f32(a), ty)
        if is_float(src) and is_float(dst):
            return B.fpext(a, ty) if bits(dst) > bits(src) else B.fptrunc(a, ty)
        if src == "f16" and is_int(dst):
            # through f32, which holds every f16 exactly: on AVX-512 FP16, LLVM lowers
            # fptosi.sat.i16.f16 to vcvttph2w, which gives -32768 for NaN instead of 0
            return self.cast(B.fpext(a, _FLOAT_TYPES["f32"]), "f32", dst)
        if is_float(src) and is_int(dst):
            kind = "fptosi.sat" if is_signed(dst) else "fptoui.sat"
            fn = _intrinsic(self.module, f"llvm.{kind}.{_suffix(dst)}.{_suffix(src)}", ty, [a.type])
            return B.call(fn, [a])
        raise TypeError(f"codegen: no cast from {src} to {dst}")


# ---------------------------------------------------------------------------
# the kernel

# Part signature: noalias buffer pointers, then the iteration range of a parallel part.
# Task signature (what the pool calls): the pointer array and the range.
TASK_TYPE = ir.FunctionType(_VOID, [_PTR, _I64, _I64])
DISPATCH_TYPE = ir.FunctionType(_VOID, [_PTR, _PTR, _PTR, _I64, _I64])


def kernel_module(plan: lowering.Plan, symbol: str) -> ir.Module:
    """The module whose one exported function ``symbol(ptr args, ptr pool)`` runs ``plan``."""
    module = new_module(symbol)
    main = ir.Function(module, ir.FunctionType(_VOID, [_PTR, _PTR]), name=symbol)
    main.attributes.add("nounwind")
    b = ir.IRBuilder(main.append_basic_block("entry"))
    args, pool = main.args
    for n, part in enumerate(plan.parts):
        task = _task(module, plan, part, f"{symbol}.part{n}")
        if not part.parallel:
            b.call(task, [args, ir.Constant(_I64, 0), ir.Constant(_I64, 0)])
            continue
        loop: For = part.body
        lo, hi = ir.Constant(_I64, loop.start), ir.Constant(_I64, loop.stop)
        serial = b.icmp_unsigned("==", pool, ir.Constant(_PTR, None))
        with b.if_else(serial) as (alone, shared):
            with alone:
                b.call(task, [args, lo, hi])
            with shared:
                slot = b.gep(pool, [ir.Constant(_I64, POOL_DISPATCH)], source_etype=_I64)
                dispatch = _indirect(b.load(slot, typ=_PTR, align=8), DISPATCH_TYPE)
                b.call(dispatch, [pool, task, args, lo, hi])
    b.ret_void()
    return module


def _task(module: ir.Module, plan: lowering.Plan, part: lowering.Part, name: str) -> ir.Function:
    """``name(args, lo, hi)``: loads the buffer pointers and calls the part's body, whose
    pointer parameters are ``noalias`` (the runtime rejects outputs that overlap any other
    buffer), which the inliner keeps as alias scopes."""
    body_type = ir.FunctionType(_VOID, [_PTR] * len(plan.buffers) + [_I64, _I64])
    body = ir.Function(module, body_type, name=name + ".body")
    body.linkage = "internal"
    body.attributes.add("nounwind")
    for arg, buf in zip(body.args, plan.buffers):
        arg.name = buf.name
        arg.add_attribute("noalias")
    _emit_part(body, plan, part)

    task = ir.Function(module, TASK_TYPE, name=name)
    task.linkage = "internal"
    task.attributes.add("nounwind")
    # called directly and through the pool: inlining it into the entry would compile the
    # loop nest twice for nothing
    task.attributes.add("noinline")
    b = ir.IRBuilder(task.append_basic_block("entry"))
    args, lo, hi = task.args
    pointers = [b.load(b.gep(args, [ir.Constant(_I64, k)], source_etype=_PTR), typ=_PTR, align=8)
                for k in range(len(plan.buffers))]
    b.call(body, pointers + [lo, hi])
    b.ret_void()
    return task


def _emit_part(fn: ir.Function, plan: lowering.Plan, part: lowering.Part) -> None:
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    pointers = {buf.name: arg for buf, arg in zip(plan.buffers, fn.args)}
    emitter = _BodyEmitter(b, pointers)
    if part.parallel:
        lo, hi = fn.args[-2], fn.args[-1]
        emitter.loop(part.body, lo, hi)
    else:
        emitter.stmt(part.body)
    b.ret_void()


def emit_llvm(func: PrimFunc, optimized: bool = True) -> str:
    """LLVM IR of ``func``'s kernel (``--emit llvm``), after O3 unless ``optimized`` is false."""
    module = kernel_module(lowering.lower(func), _display_symbol(func))
    return str(optimize(module)) if optimized else str(module)


def emit_asm(func: PrimFunc) -> str:
    """Assembly of ``func``'s kernel for this CPU (``--emit asm``)."""
    return assembly(optimize(kernel_module(lowering.lower(func), _display_symbol(func))))


def _display_symbol(func: PrimFunc) -> str:
    return f"tensorize.{func.name}"


# ---------------------------------------------------------------------------
# the worker pool's native side

# Layout of the pool's control block: an array of i64 slots. Fields written by different
# threads sit on different 64-byte lines so that spinning on one does not slow the others.
POOL_TICKET = 0  # (generation << 32) | claim counter, see pool_ir
POOL_DONE = 8  # chunks finished in this generation
POOL_GEN = 16  # low 32 bits of the generation: the futex word workers sleep on
POOL_SLEEPERS = 24  # workers inside futex_wait
POOL_TASK, POOL_ARGS, POOL_LO, POOL_HI, POOL_CHUNK = 32, 33, 34, 35, 36
POOL_QUIT, POOL_DISPATCH, POOL_THREADS = 37, 38, 39
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
    module = new_module(prefix)
    _emit_worker(module, prefix)
    _emit_dispatch(module, prefix)
    _emit_stop(module, prefix)
    return module


class _Pool:
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
        fn = _intrinsic(self.module, "llvm.readcyclecounter", _I64, [])
        return self.b.call(fn, [])

    def pause(self) -> None:
        fn = _intrinsic(self.module, "llvm.x86.sse2.pause", _VOID, [])
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
        task = _indirect(b.inttoptr(self.load(POOL_TASK), _PTR), TASK_TYPE)
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
    p = _Pool(module, b, fn.args[0])
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


def _publish(p: _Pool, chunks: ir.Value) -> None:
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
    p = _Pool(module, b, pool)
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
    p = _Pool(module, b, fn.args[0])
    p.store(POOL_QUIT, ir.Constant(_I64, 1), "seq_cst")
    _publish(p, ir.Constant(_I64, 0))
    b.ret_void()
