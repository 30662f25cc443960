"""LLVM IR for a lowered kernel, built with llvmlite, optimised at O3 for this CPU.

Every operation reproduces the meaning written in ``ir.py``:

- integers wrap (no ``nsw``/``nuw`` on values); ``//`` and ``%`` floor, with a zero divisor
  giving 0 and ``MIN // -1`` giving ``MIN``, through selects around a divide by a safe
  divisor, so no division can trap;
- float ``max``/``min`` are ``llvm.maximum``/``llvm.minimum`` (NaN in, NaN out); float to int
  casts are ``llvm.fptosi.sat``/``llvm.fptoui.sat`` (saturate, NaN gives 0); ``f16`` is
  ``half``, which LLVM rounds after every operation like the interpreter;
- loads and stores are aligned to the element size only, so numpy views at odd offsets work;
- a loop whose body is a guard bounding its variable by enclosing ones (a triangular loop,
  ``polytope.guarded_range``) runs only the values the guard admits.

Float reductions. The add of ``X[i] += v`` carries ``reassoc contract``: LLVM may then keep
a reduction in several vector lanes and fuse ``a * b + c`` into an FMA, so a sum over ``n``
terms may differ from the sequential one by a few ``n * eps`` relative to its terms. Every
other float operation is exact IEEE in program order (``X[i] += -(v)`` is ``X[i] - v``, the
same bits, so that LLVM does not push the negation into ``v`` and regroup its product).
``runtime.check`` scales its tolerance by the reduction length for this reason.

Kernel shape: ``void K(ptr args, ptr pool)``. Each body of the plan becomes an internal
function over ``noalias`` buffer pointers and an iteration range ``[lo, hi)`` (one body serves
every part that is the same code on other buffers: ``lower.shared_bodies``), run by a task
that finds its buffers' pointers; ``K`` walks a constant table of the parts, and hands a
parallel part to the pool's dispatcher (``pool.py``, reached through slot ``POOL_DISPATCH`` of
the block ``pool`` points at) when ``pool`` is not null. Each intrinsic call is emitted by the
emitter the caller's ``emitters`` gives for its descriptor (``target.Target.emitter``).
"""

from __future__ import annotations

import functools
import itertools
import math
import re
from dataclasses import dataclass, replace
from typing import Callable, Optional

import llvmlite
import llvmlite.binding as llvm
import numpy as np
from llvmlite import ir

from . import caches
from . import lower as lowering
from .affine import Affine, affine
from .descriptor import Descriptor
from .polytope import guarded_range
from .emitter import (Emitter, Ref, concat, counted_loop, declare, indirect, lltype, phi_loop,
                      shuffle)
from .ir import (BOOL, INDEX, Accumulate, Binary, Call, Cast, Compare, Const, Expr, For, If, Load,
                 Logical, Select, Seq, Stmt, Store, Unary, Var, bits, is_float, is_int,
                 band, is_signed, itemsize, stmt_exprs, walk_expr, walk_stmts)
from .ir import stmts_of as ir_stmts_of

# ---------------------------------------------------------------------------
# types

_I1, _I32, _I64 = ir.IntType(1), ir.IntType(32), ir.IntType(64)
_PTR = ir.PointerType()
_VOID = ir.VoidType()

# What the backend is given to emit a call: the emitter of each descriptor it meets (a
# ``target.Target`` gives the native one where the CPU runs it, else ``Emulated``).
Emitters = Callable[[Descriptor], Emitter]


# At most this many nested loops get bounds from their guards: LLVM's loop passes take
# seconds on 20 nested triangular loops and minutes on 30, while the same loops as boxes
# under guards compile in seconds (deeper loops keep their guards).
MAX_NARROWED = 12


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


_cpu: Optional[str] = None  # a CPU named by ``generate_for``, else None: this one
_cpu_features: Optional[frozenset] = None  # that CPU's features, if ``generate_for`` was told


def generate_for(cpu: Optional[str], features: Optional[frozenset] = None) -> None:
    """Generate code from now on for the CPU LLVM calls ``cpu`` (``"znver3"``), with that
    CPU's own features and registers, instead of for this one; None goes back to this CPU.
    For measuring here what another CPU's code does, such as the AVX2 code a Zen 3 gets on
    an AVX-512 host, where LLVM compiling for the host gives even the AVX2 intrinsics'
    IR the 32 vector registers, EVEX forms and ``vpdpwssd`` of AVX-512
    (``rewrite.tools.on_cpu``). Every instruction of the named CPU must run on this one.
    Call it before anything is compiled: code already linked into the process stays as it
    was. Compiled code is cached apart for each CPU (``target_id``). ``features``: the
    instruction-set features that CPU has, which ``target.host`` then gives as the host's,
    so that ``library("host")`` holds the rows its code can run."""
    global _cpu, _cpu_features
    _cpu = cpu
    _cpu_features = frozenset(features) if cpu is not None and features is not None else None
    target_machine.cache_clear()
    target_id.cache_clear()
    vector_math.cache_clear()


def generated_features() -> Optional[frozenset]:
    """The features of the CPU code is generated for (``generate_for``), if it was told."""
    return _cpu_features


def _cpu_and_features() -> tuple[str, str]:
    if _cpu is not None:
        return _cpu, ""  # LLVM's features of that CPU
    return llvm.get_host_cpu_name(), llvm.get_host_cpu_features().flatten()


@functools.lru_cache(maxsize=None)
def target_machine() -> llvm.TargetMachine:
    """This CPU by name *and* features: without features LLVM falls back to generic x86-64
    (no AVX, and FMA intrinsics become library calls)."""
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    target = llvm.Target.from_triple(llvm.get_process_triple())
    cpu, features = _cpu_and_features()
    return target.create_target_machine(cpu=cpu, features=features,
                                        opt=3, codemodel="jitdefault", jit=True)


@functools.lru_cache(maxsize=None)
def target_id() -> str:
    """What compiled code depends on besides the program; part of every cache key (L2's
    size: ``lower.one_sweep``)."""
    math_library = "+libmvec" if vector_math() else ""
    return "|".join((llvm.get_process_triple(), *_cpu_and_features(), f"l2-{caches.l2_bytes()}",
                     f"llvmlite-{llvmlite.__version__}{math_library}"))


# glibc's vector math library (libmvec) by the vector type of LLVM's exp intrinsic, with the
# host feature each variant needs (the x86-64 vector function ABI: ``b`` SSE, ``d`` AVX2,
# ``e`` AVX-512). LLVM's loop vectoriser turns a loop's ``llvm.exp.f32`` into
# ``llvm.exp.v8f32``, which the code generator would split into eight calls of ``expf``.
_VECTOR_EXP = {
    "v4f32": ("_ZGVbN4v_expf", "sse4.1"), "v8f32": ("_ZGVdN8v_expf", "avx2"),
    "v16f32": ("_ZGVeN16v_expf", "avx512f"),
    "v2f64": ("_ZGVbN2v_exp", "sse4.1"), "v4f64": ("_ZGVdN4v_exp", "avx2"),
    "v8f64": ("_ZGVeN8v_exp", "avx512f"),
}


@functools.lru_cache(maxsize=None)
def vector_library() -> bool:
    """Whether ``libmvec.so.1`` is loaded into the process, where the JIT finds its symbols
    (not where there is no glibc, or one older than 2.22)."""
    try:
        llvm.load_library_permanently("libmvec.so.1")
    except RuntimeError:
        return False
    return True


@functools.lru_cache(maxsize=None)
def vector_math() -> dict[str, str]:
    """The vector exp functions compiled code calls, by LLVM vector type (``v8f32``): the
    libmvec variants whose feature the CPU code is generated for has (this one's, or the
    features ``generate_for`` was told; none for a CPU named without them, whose vectors'
    registers in a call are not known here)."""
    if not vector_library():
        return {}
    if _cpu is None:
        have = {f for f, on in llvm.get_host_cpu_features().items() if on}
    elif _cpu_features is not None:
        have = set(_cpu_features)
    else:
        return {}
    return {ty: name for ty, (name, feature) in _VECTOR_EXP.items() if feature in have}


def _vector_exp_calls(ref: llvm.ModuleRef) -> llvm.ModuleRef:
    """``ref`` with each call of a vector exp intrinsic that libmvec has a variant for calling
    that variant: same arguments, same lanes, each lane libmvec's exp (measured within 2.5
    ulps of the exact value on f32 and 2.9 on f64, where numpy's f32 ``exp`` is within 2.4;
    NaN, infinities, overflow and subnormal results as numpy gives them)."""
    declared = {f.name for f in ref.functions if f.is_declaration}
    names = {f"llvm.exp.{ty}": name for ty, name in vector_math().items()
             if f"llvm.exp.{ty}" in declared}
    if not names:
        return ref
    text = re.sub(r"@(llvm\.exp\.v\d+f(?:32|64))\b",
                  lambda m: "@" + names.get(m.group(1), m.group(1)), str(ref))
    out = llvm.parse_assembly(text)
    out.verify()
    return out


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
    return _vector_exp_calls(ref)


def object_code(ref: llvm.ModuleRef) -> bytes:
    return target_machine().emit_object(ref)


def assembly(ref: llvm.ModuleRef) -> str:
    return target_machine().emit_assembly(ref)


# ---------------------------------------------------------------------------
# statements and expressions


# Bytes a block of a transposing copy stores at once (``block_copy``).
BLOCK_BYTES = 128
# Fewest source elements a run of such a block reads.
MIN_RUN = 4


@dataclass(frozen=True)
class BlockCopy:
    """How ``block_copy`` emits a copy nest: ``chunk`` iterations of its outer loop at a
    time, the loops ``loops`` (the outer one first) each at ``extent`` iterations in a
    block (the outer one at ``chunk``); the source read as one run of ``run``
    contiguous elements for each value of the loops ``others``; ``lanes``: the lane of the
    joined runs each stored element comes from, in the store's order."""

    store: Store
    load: Load
    loops: tuple[For, ...]
    chunk: int
    extent: dict
    others: tuple[str, ...]
    run: int
    lanes: tuple[int, ...]


def _flat(buffer, indices: tuple[Expr, ...]) -> Optional[Affine]:
    """The row-major element offset of an access as an affine form, or None."""
    out, stride = Affine(), 1
    for dim, idx in reversed(list(zip(buffer.shape, indices))):
        a = affine(idx, casts=False) if idx.dtype == INDEX else None
        if a is None:
            return None
        out, stride = out.plus(a.scale(stride)), stride * dim
    return out


def _copied(x: Store) -> Optional[tuple[Load, Affine, Affine]]:
    """For ``P[...] = A[...]``, or a widening cast of it (integer to integer, float to float:
    each value exact), from another buffer: the load and both accesses' element offsets as
    affine forms. Else None."""
    load = x.value.a if isinstance(x.value, Cast) else x.value
    src, dst = getattr(load, "dtype", None), x.buffer.dtype
    if not isinstance(load, Load) or load.buffer.name == x.buffer.name or BOOL in (src, dst):
        return None
    if not (src == dst or bits(dst) >= bits(src) and (is_int(src) and is_int(dst)
                                                       or is_float(src) and is_float(dst))):
        return None
    out, into = _flat(x.buffer, x.indices), _flat(load.buffer, load.indices)
    return None if out is None or into is None else (load, out, into)


@dataclass(frozen=True)
class Transpose:
    """How ``_BodyEmitter.transpose`` emits ``outer`` around ``inner`` around ``store``:
    square blocks of ``width`` x ``width`` iterations, stored along the loop ``stored`` (the
    other one is read along)."""

    store: Store
    load: Load
    outer: For
    inner: For
    stored: str
    width: int


# A transposed block's side: its rows fill a vector register of this many bytes, up to
# MAX_SIDE elements (32 x 32 bytes would be 32 loads and 1 024 lanes).
VECTOR_BYTES = 32
MAX_SIDE = 8


def block_transpose(s: For) -> Optional[Transpose]:
    """Whether ``s`` is the outer of two loops around a transpose that ``_BodyEmitter.transpose``
    emits in square blocks: ``P[..., s, t] = A[..., t, s]`` up to strides and offsets (``P``
    contiguous along one loop, ``A`` along the other), as the packing of a transposed
    operand ``B_pack[k, j] = B[j, k]`` is. Element by element, every load or every store of
    it is a row apart from the one before."""
    t = s.body
    if not isinstance(t, For) or not isinstance(t.body, Store):
        return None
    x = t.body
    if (copied := _copied(x)) is None:
        return None
    load, out, into = copied
    for stored, read in ((t, s), (s, t)):
        if out.coeff(stored.var) == 1 and into.coeff(read.var) == 1 and \
                into.coeff(stored.var) and out.coeff(read.var):
            break
    else:
        return None
    width = min(MAX_SIDE, VECTOR_BYTES // itemsize(x.buffer.dtype))
    if min(s.stop - s.start, t.stop - t.start) < width:
        return None
    return Transpose(x, load, s, t, stored.var, width)


def block_copy(s: For) -> Optional[BlockCopy]:
    """Whether ``s`` is a transposing copy that ``_BodyEmitter.block_copy`` emits in blocks:
    ``s`` and the loops it nests, nothing else, around ``P[...] = A[...]`` (or a widening
    integer cast of it) with ``P`` written contiguously in loop order and each block of
    ``A`` read as a few runs along another order, as the int8 tile's A panel
    ``P[i_o, k_o, i_i, k_i] = i16(A[4 * i_o + i_i, 2 * k_o + k_i])`` is: four rows, a pair of
    columns from each. LLVM's loop vectoriser takes the innermost loop alone, and leaves
    that copy element by element even with its two inner loops unrolled (lowering unrolls
    one loop across rows, ``lower._interleaved``, after which LLVM vectorises the loop
    around: the f32 panels). A copy that reads in its store's order, or broadcasts along
    it, is not one (LLVM vectorises it)."""
    loops, x = [s], s.body
    while isinstance(x, For):
        loops.append(x)
        x = x.body
    if not isinstance(x, Store) or len(loops) < 2 or (copied := _copied(x)) is None:
        return None
    load, out, into = copied
    dst = x.buffer.dtype
    extent = {loop.var: loop.stop - loop.start for loop in loops}
    if min(extent.values()) < 1:
        return None
    size = 1
    for loop in reversed(loops):  # the store's elements contiguous in loop order
        if extent[loop.var] > 1 and out.coeff(loop.var) != size:
            return None
        size *= extent[loop.var]
    inner = size // extent[s.var]
    chunk = 1
    while 2 * chunk <= extent[s.var] and 2 * chunk * inner * itemsize(dst) <= BLOCK_BYTES:
        chunk *= 2
    if chunk < 2:
        return None
    extent[s.var] = chunk
    run, rest = 1, [v for v in extent if extent[v] > 1]
    while (v := next((v for v in rest if into.coeff(v) == run), None)) is not None:
        rest.remove(v)
        run *= extent[v]
    if run < MIN_RUN or not any(into.coeff(v) for v in rest):
        return None  # the source read in the store's order, or broadcast along it
    lanes = []
    for at in itertools.product(*(range(extent[loop.var]) for loop in loops)):
        value = dict(zip(extent, at))
        which = 0
        for v in rest:  # the run's number: the other loops' values in row-major order
            which = which * extent[v] + value[v]
        lanes.append(which * run + sum(into.coeff(v) * value[v] for v in extent if v not in rest))
    return BlockCopy(x, load, tuple(loops), chunk, extent, tuple(rest), run, tuple(lanes))


def _anything(e: Expr) -> bool:
    return True


class _BodyEmitter:
    """Emits the statements of one part into a function whose buffer pointers are given,
    each intrinsic call with the emitter ``emitters`` gives for its descriptor."""

    def __init__(self, b: ir.IRBuilder, pointers: dict[str, ir.Value], emitters: Emitters):
        self.narrowing = 0  # triangular loops around the statement being emitted
        self.b = b
        self.module = b.module
        self.pointers = pointers
        self.emitters = emitters
        self.vars: dict[str, ir.Value] = {}
        # calls whose accumulators the loops being emitted carry (``carry_loop``): the id of
        # the call's node -> [its emitter, its output's ref, the accumulators now]
        self.carried: dict[int, list] = {}
        # calls (by id) that start from a constant their output block was just filled with
        # (``_fresh``) -> that constant
        self.fresh: dict[int, ir.Constant] = {}

    # -- statements -----------------------------------------------------------

    def stmt(self, s: Stmt) -> None:
        if isinstance(s, Seq):
            k = 0
            while k < len(s.stmts):
                call = self._fresh(s.stmts[k], s.stmts[k + 1]) if k + 1 < len(s.stmts) else None
                if call is not None:  # the fill: the calls after it start from its constant
                    k += 1
                self.stmt(s.stmts[k])
                if call is not None and id(call) in self.fresh:
                    raise AssertionError("codegen: a fill was left out, and its calls did not "
                                         "start from its constant")
                k += 1
        elif isinstance(s, For) and self._carries(s):
            self.thread_loop(s)
        elif isinstance(s, For) and self._reduction_call(s):
            self.call_loop(s)
        elif isinstance(s, For) and (calls := self._carriable(s)):
            self.carry_loop(s, calls)
        elif isinstance(s, For) and (block := block_copy(s)) is not None:
            self.block_copy(s, block)
        elif isinstance(s, For) and (square := block_transpose(s)) is not None:
            self.transpose(square, _i64(s.start), _i64(s.stop))
        elif isinstance(s, For) and self.narrowing < MAX_NARROWED and \
                (guarded := guarded_range(s)) is not None:
            # a triangular loop: run only the values its guard admits
            bounds, body = guarded
            start, stop = ir.Constant(_I64, s.start), ir.Constant(_I64, s.stop)
            for op, e in bounds:
                start, stop = self.narrowed(start, stop, op, self.expr(e))
            self.narrowing += 1
            self.loop(replace(s, body=body), start, stop)
            self.narrowing -= 1
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

    def _moved(self, first: ir.Value, k: int) -> ir.Value:
        """``first + k``, as an index (``first`` itself for 0)."""
        return self.b.add(first, _i64(k), flags=("nsw",)) if k else first

    def _run(self, load: Load, dst: str, n: int) -> ir.Value:
        """``n`` elements of ``load`` from where the loop variables now put it, one vector
        load widened to ``dst`` (a copy's widening cast, ``_copied``: ``fpext`` is exact, as
        the scalar cast is)."""
        src = load.dtype
        run = self.b.load(self.address(load.buffer, load.indices),
                          typ=ir.VectorType(lltype(src), n), align=itemsize(src))
        if bits(src) == bits(dst):
            return run
        wide = ir.VectorType(lltype(dst), n)
        if is_float(src):
            return self.b.fpext(run, wide)
        return self.b.sext(run, wide) if is_signed(src) else self.b.zext(run, wide)

    def block_copy(self, s: For, block: BlockCopy) -> None:
        """``s``'s iterations ``block.chunk`` at a time: each block of the store's elements
        read as contiguous runs of ``block.run`` elements of the source, cast, permuted into
        the store's order by one shufflevector, stored whole; the iterations left over
        element by element."""
        store, dst = block.store, block.store.buffer.dtype
        blocks = (s.stop - s.start) // block.chunk

        def place(first: ir.Value, at: dict) -> None:  # the loops' values at a block's corner
            for loop in block.loops:
                k = at.get(loop.var, 0)
                self.vars[loop.var] = self._moved(first, k) if loop is s else _i64(loop.start + k)

        def body(q: ir.Value) -> None:
            first = self.b.add(self.b.mul(q, _i64(block.chunk), flags=("nsw",)), _i64(s.start),
                               flags=("nsw",))
            runs = []
            for at in itertools.product(*(range(block.extent[v]) for v in block.others)):
                place(first, dict(zip(block.others, at)))
                runs.append(self._run(block.load, dst, block.run))
            place(first, {})
            self.b.store(shuffle(self.b, concat(self.b, runs), None, block.lanes),
                         self.address(store.buffer, store.indices), align=itemsize(dst))
            for loop in block.loops:
                del self.vars[loop.var]

        counted_loop(self.b, _i64(0), _i64(blocks), body, known_nonempty=True)
        if s.start + blocks * block.chunk < s.stop:
            self.loop(s, _i64(s.start + blocks * block.chunk), _i64(s.stop), known_nonempty=True)

    def transpose(self, tr: Transpose, start: ir.Value, stop: ir.Value) -> None:
        """``tr``'s loops, the outer one over ``[start, stop)``, in square blocks: each block
        read as ``width`` runs along one loop, cast, and stored as ``width`` runs along the
        other, each gathered from the runs read by a shufflevector; the rows and columns
        left over element by element."""
        s, t, w = tr.outer, tr.inner, tr.width
        read = t.var if tr.stored == s.var else s.var
        store, dst = tr.store, tr.store.buffer.dtype
        b = self.b
        rows = b.sdiv(b.sub(stop, start, flags=("nsw",)), _i64(w))
        cols = (t.stop - t.start) // w
        split = b.add(start, b.mul(rows, _i64(w), flags=("nsw",)), flags=("nsw",))

        def row(q: ir.Value) -> None:
            s0 = b.add(b.mul(q, _i64(w), flags=("nsw",)), start, flags=("nsw",))

            def block(r: ir.Value) -> None:
                t0 = b.add(b.mul(r, _i64(w), flags=("nsw",)), _i64(t.start), flags=("nsw",))
                first = {s.var: s0, t.var: t0}

                def at(i: int, j: int) -> None:  # i along the loop read, j along the other
                    self.vars[read] = self._moved(first[read], i)
                    self.vars[tr.stored] = self._moved(first[tr.stored], j)

                runs = []
                for j in range(w):  # lane j * w + i of the runs joined: A at (i, j)
                    at(0, j)
                    runs.append(self._run(tr.load, dst, w))
                joined = concat(b, runs)
                for i in range(w):
                    at(i, 0)
                    b.store(shuffle(b, joined, None, [j * w + i for j in range(w)]),
                            self.address(store.buffer, store.indices), align=itemsize(dst))
                del self.vars[s.var], self.vars[t.var]

            counted_loop(b, _i64(0), _i64(cols), block, known_nonempty=True)

        counted_loop(b, _i64(0), rows, row)
        if t.start + cols * w < t.stop:  # the columns left over, beside the blocks
            self.loop(replace(s, body=replace(t, start=t.start + cols * w)), start, split)
        self.loop(s, split, stop)  # the rows left over, below them

    def narrowed(self, start: ir.Value, stop: ir.Value, op: str, e: ir.Value) -> tuple[ir.Value, ir.Value]:
        """``[start, stop)`` cut to the values ``v`` with ``v op e``, ``e`` an i64 computed as
        the program computes it. ``e + 1`` is only used where it cannot wrap (where ``e`` is
        below ``stop``); an empty range has ``start >= stop``."""
        b = self.b
        one = ir.Constant(_I64, 1)
        below = b.icmp_signed("<", e, stop)        # e < stop, so e + 1 <= stop
        if op in ("<", "<=", "=="):
            high = e if op == "<" else b.select(below, b.add(e, one), stop)
            stop = b.select(b.icmp_signed("<", high, stop), high, stop)
        if op in (">", ">=", "=="):
            low = e if op != ">" else b.select(below, b.add(e, one), stop)
            start = b.select(b.icmp_signed(">", low, start), low, start)
        return start, stop

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
        negated = is_float(dtype) and isinstance(s.value, Unary) and s.value.op == "neg"
        value = self.expr(s.value.a if negated else s.value)
        old = self.b.load(ptr, typ=lltype(dtype), align=itemsize(dtype))
        if negated:
            # ``x += -(v)`` as ``x - v``, bit for bit the same: LLVM would otherwise push the
            # negation into ``v``'s product under the add's reassoc and regroup the product
            new = self.b.fsub(old, value, flags=("reassoc", "contract"))
        elif is_float(dtype):
            # The one reassociable float operation (see the module docstring).
            new = self.b.fadd(old, value, flags=("reassoc", "contract"))
        else:
            new = self.b.add(old, value)
        self.b.store(new, ptr, align=itemsize(dtype))

    def intrinsic(self, s: Call) -> None:
        """An intrinsic call: its emitter (native on this CPU, else the emulation from its
        semantics) given each window as a base pointer and an element stride per operand
        dimension."""
        carried = self.carried.get(id(s))
        if carried is not None:
            emitter, out, acc = carried
            carried[2] = emitter.step(self.b, {**self._refs(s), s.output: out}, acc)
            return
        emitter, refs = self.emitters(s.intrinsic), self._refs(s)
        if id(s) not in self.fresh:
            emitter.emit(self.b, refs)
            return
        acc, value = self._load(emitter, s, refs)
        self._store(emitter, refs, emitter.step(self.b, refs, acc), value)

    def _refs(self, s: Call) -> dict[str, Ref]:
        return {name: Ref(self.address(w.buffer, w.base), w.buffer.dtype, w.strides)
                for name, w in s.operands}

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

    def _fresh(self, fill: Stmt, then: Stmt) -> Optional[Call]:
        """The call, when ``fill`` stores one constant into exactly the output block of the one
        call in ``then`` (the call itself, or loops around it along a reduction, ``call_loop``
        and ``carry_loop``)
        and the call's emitter can start from a constant (``Emitter.starts_fresh``): then
        the call is marked to start from it (``self.fresh``) and ``fill`` need not run;
        else None.
        The fill writes the block's elements and nothing else (one loop from 0 over each
        operand dim, each stepping the window's element by that dim's step), so the block
        holds the constant when the calls start, which is what the emitter assumes."""
        call = then
        if isinstance(then, For):
            _, call = band(then)
            if not (self._reduction_call(then) or self._carriable(then) == [call]):
                return None
        if not isinstance(call, Call) or id(call) in self.carried or \
                not getattr(self.emitters(call.intrinsic), "starts_fresh", False):
            return None
        loops, store = band(fill)
        out = call.window(call.output)
        shape = call.intrinsic.output.shape
        if not isinstance(store, Store) or not isinstance(store.value, Const) or \
                store.buffer != out.buffer or len(loops) != len(shape) or \
                len({lp.var for lp in loops}) != len(loops) or \
                any(lp.start != 0 or lp.stop != n for lp, n in zip(loops, shape)):
            return None
        names = {lp.var for lp in loops}
        for d, (got, base) in enumerate(zip(store.indices, out.base)):
            # a subexpression that is no affine map of the loops (a collapsed parallel loop's
            # ``v // 2``) is one term of its own: equal forms are equal values
            want, have = affine(base, atom=_anything), affine(got, atom=_anything)
            if want is None or have is None or \
                    any(isinstance(x, Var) and x.name in names for x in walk_expr(base)):
                return None
            for lp, step in zip(loops, out.steps):
                want = want.plus(Affine(((lp.var, step[d]),), 0)) if step[d] else want
            if have != want:
                return None
        self.fresh[id(call)] = const(store.buffer.dtype, store.value.value)
        return call

    def call_loop(self, s: For) -> None:
        """``for v: call(...)`` along a reduction, the way the intrinsic's own k-loop runs:
        the output block loaded once into the emitter's accumulators, each call a ``step``
        on them (in phi nodes, so in registers), stored once -- work an emitter defers to
        ``store_acc`` (the int8 dot's folding of pair sums) is then done once per loop, not
        once per call. Exact: the calls add into one block no input reads, in the same order."""
        call = s.body
        emitter = self.emitters(call.intrinsic)
        start = ir.Constant(_I64, s.start)
        self.vars[s.var] = start
        first = self._refs(call)  # the output's ref is the same at every step

        def step(k: ir.Value, acc):
            self.vars[s.var] = self.b.add(k, start, flags=("nsw",))
            return emitter.step(self.b, {**self._refs(call), call.output: first[call.output]}, acc)

        acc, value = self._load(emitter, call, first)
        acc = phi_loop(self.b, ir.Constant(_I64, s.extent), acc, step, getattr(emitter, "unroll", 1))
        self._store(emitter, first, acc, value)
        del self.vars[s.var]

    def _load(self, emitter: Emitter, call: Call, ops: dict[str, Ref]) -> tuple:
        """``(accumulators, constant)`` for ``call``: loaded from its output block, or, where
        a fill just put a constant there (``_fresh``), started from that constant."""
        value = self.fresh.pop(id(call), None)
        if value is None:
            return emitter.load_acc(self.b, ops), None
        return emitter.fresh_acc(self.b, ops), value

    def _store(self, emitter: Emitter, ops: dict[str, Ref], acc, value) -> None:
        """Store ``acc`` as ``_load`` started it: into the block, or over the constant."""
        if value is None:
            emitter.store_acc(self.b, ops, acc)
        else:
            emitter.store_fresh(self.b, ops, acc, value)

    # -- accumulators carried through loops that hold other statements too --------

    def _carriable(self, s: For) -> list[Call]:
        """The calls in ``s`` whose accumulators ``s`` may carry in registers (``carry_loop``):
        each reached from ``s`` through loops and sequences only, once, its output window
        the same at every iteration of each of those loops, its emitter one whose
        accumulators are plain values (``Emitter.interleaves``), and its output buffer read
        or written by nothing else in ``s`` (its own inputs included)."""
        found: list[Call] = []

        def visit(x: Stmt, loops: set[str]) -> None:
            if isinstance(x, Seq):
                for c in x.stmts:
                    visit(c, loops)
            elif isinstance(x, For):
                visit(x.body, loops | {x.var})
            elif isinstance(x, Call) and getattr(self.emitters(x.intrinsic), "interleaves", False):
                out = x.window(x.output)
                if not any(isinstance(v, Var) and v.name in loops for e in out.base for v in walk_expr(e)):
                    found.append(x)

        visit(s.body, {s.var})
        every = list(walk_stmts(s.body))
        calls = []
        for c in found:
            out = c.window(c.output).buffer.name
            if sum(x is c for x in every) == 1 and \
                    all(w.buffer.name != out for n, w in c.operands if n != c.output) and \
                    not any(out in _touched(x) for x in every if x is not c):
                calls.append(c)
        return calls

    def _carries(self, s: For) -> bool:
        return bool(self.carried) and any(id(x) in self.carried for x in walk_stmts(s.body))

    def carry_loop(self, s: For, calls: list[Call]) -> None:
        """``s`` holding other statements besides intrinsic calls whose output stays where it
        is along ``s`` and along the loops inside it around them (a sweep's gemv next to the
        product that reads the same block): each such call's output block loaded once into
        its emitter's accumulators before ``s``, each call a ``step`` on them, carried in phi
        nodes through ``s`` and the loops inside it, stored once after ``s``. Exact, as
        ``call_loop``: nothing else in ``s`` reads or writes those blocks, so the deferred
        loads and stores change no value anything reads, and each call's steps come in the
        program's order."""
        values = {}
        for c in calls:
            w = c.window(c.output)
            emitter = self.emitters(c.intrinsic)
            out = Ref(self.address(w.buffer, w.base), w.buffer.dtype, w.strides)
            acc, values[id(c)] = self._load(emitter, c, {c.output: out})
            self.carried[id(c)] = [emitter, out, acc]
        self.thread_loop(s)
        for c in calls:
            emitter, out, acc = self.carried.pop(id(c))
            self._store(emitter, {c.output: out}, acc, values[id(c)])

    def thread_loop(self, s: For) -> None:
        """``s`` with the accumulators of the carried calls inside it in phi nodes; as many
        iterations of ``s`` a turn of the loop as the emitter of a carried call directly in
        its body asks for (``Emitter.unroll``)."""
        ids = list(dict.fromkeys(id(x) for x in walk_stmts(s.body) if id(x) in self.carried))
        start = ir.Constant(_I64, s.start)
        unroll = 1
        for x in ir_stmts_of(s.body):
            if id(x) in self.carried:
                unroll = math.lcm(unroll, getattr(self.carried[id(x)][0], "unroll", 1))

        def body(k: ir.Value, state):
            for i, acc in zip(ids, state):
                self.carried[i][2] = acc
            self.vars[s.var] = self.b.add(k, start, flags=("nsw",))
            self.stmt(s.body)
            return [self.carried[i][2] for i in ids]

        state = phi_loop(self.b, ir.Constant(_I64, s.extent), [self.carried[i][2] for i in ids],
                         body, unroll)
        for i, acc in zip(ids, state):
            self.carried[i][2] = acc
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
        fn = declare(self.module, f"llvm.{name}.{_suffix(dtype)}", lltype(dtype),
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
            fn = declare(self.module, f"llvm.abs.{_suffix(dtype)}", a.type, [a.type, _I1])
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
        fabs = declare(self.module, "llvm.fabs.f64", ir.DoubleType(), [ir.DoubleType()])
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
            # through f32, which holds every f16 exactly: LLVM lowers the saturating f16 cast
            # to AVX512-FP16's vcvttph2w on hosts that have it, which gives -32768 for NaN
            return self.cast(B.fpext(a, lltype("f32")), "f32", dst)
        if is_float(src) and is_int(dst):
            kind = "fptosi.sat" if is_signed(dst) else "fptoui.sat"
            fn = declare(self.module, f"llvm.{kind}.{_suffix(dst)}.{_suffix(src)}", ty, [a.type])
            return B.call(fn, [a])
        raise TypeError(f"codegen: no cast from {src} to {dst}")


# ---------------------------------------------------------------------------
# the kernel

# The pool pointer a kernel is given points at an array of i64 slots; slot POOL_DISPATCH holds
# the dispatcher (see ``pool.py``).
POOL_DISPATCH = 38

# Body signature: noalias buffer pointers, then the iteration range of a parallel part.
# Task signature (what the pool calls): the context (the kernel's pointer array, then the
# part's moves; see ``_entry``) and the range.
TASK_TYPE = ir.FunctionType(_VOID, [_PTR, _I64, _I64])
DISPATCH_TYPE = ir.FunctionType(_VOID, [_PTR, _PTR, _PTR, _I64, _I64])


def kernel_module(plan: lowering.Plan, symbol: str, emitters: Emitters) -> ir.Module:
    """The module whose one exported function ``symbol(ptr args, ptr pool)`` runs ``plan``,
    each intrinsic call emitted by ``emitters(descriptor)``. Each of the plan's bodies is one
    function, however many parts run it (``lower.shared_bodies``).

    The parts are data: a constant table of records (task, moves, range, parallel) that the
    entry walks in order. A body several parts run has one task for all of them, which reads
    each part's buffer slots and offsets from the record's moves; a body one part runs has a
    task of its own with them as constants, so LLVM still folds them into its addresses. A
    program of many parts (a Strassen level's products, copies and sums) is then a few
    functions, however many parts there are: LLVM's cost is per function, about a
    millisecond each even for a task of three instructions."""
    module = new_module(symbol)
    bodies = [_body(module, code, f"{symbol}.body{n}", emitters) for n, code in enumerate(plan.bodies)]
    tasks = {n: _task(module, code, bodies[n], f"{symbol}.task{n}")
             for n, code in enumerate(plan.bodies) if code.uses > 1}
    moves: list[int] = []
    records = []
    for n, part in enumerate(plan.parts):
        task = tasks.get(part.code)
        at = len(moves)
        if task is None:
            task = _task(module, plan.bodies[part.code], bodies[part.code], f"{symbol}.part{n}",
                         part)
        else:
            moves.extend(x for pair in part.args for x in pair)
        lo, hi = (part.body.start, part.body.stop) if part.parallel else (0, 0)
        records.append((task, at, lo, hi, int(part.parallel)))
    _entry(module, symbol, records, moves)
    return module


# A part's record in the entry's table: its task, where its moves start in the table of
# moves, the range of a parallel part and whether it is parallel.
_RECORD = ir.LiteralStructType([_PTR, _I64, _I64, _I64, _I64])


def _entry(module: ir.Module, symbol: str, records: list[tuple], moves: list[int]) -> None:
    """``symbol(args, pool)``: for each record in order, point the context ``{args, moves}``
    at the part's moves and run its task on it, through the pool's dispatcher when the part
    is parallel and ``pool`` is not null."""
    table = _constant_array(module, f"{symbol}.parts", _RECORD, [
        ir.Constant(_RECORD, [task, *(ir.Constant(_I64, x) for x in rest)])
        for task, *rest in records])
    moved = _constant_array(module, f"{symbol}.moves", _I64,
                            [ir.Constant(_I64, x) for x in moves or [0]])
    main = ir.Function(module, ir.FunctionType(_VOID, [_PTR, _PTR]), name=symbol)
    main.attributes.add("nounwind")
    b = ir.IRBuilder(main.append_basic_block("entry"))
    args, pool = main.args
    context = b.alloca(ir.ArrayType(_PTR, 2))
    b.store(args, b.gep(context, [_i64(0), _i64(0)]))
    alone = b.icmp_unsigned("==", pool, ir.Constant(_PTR, None))

    def run(n: ir.Value) -> None:
        def field(k: int) -> ir.Value:
            typ = _PTR if k == 0 else _I64
            return b.load(b.gep(table, [_i64(0), n, ir.Constant(_I32, k)]), typ=typ)

        task, at, lo, hi, parallel = (field(k) for k in range(5))
        b.store(b.gep(moved, [_i64(0), at]), b.gep(context, [_i64(0), _i64(1)]))
        shared = b.and_(b.icmp_unsigned("!=", parallel, _i64(0)), b.not_(alone))
        with b.if_else(shared) as (pooled, here):
            with pooled:
                slot = b.gep(pool, [_i64(POOL_DISPATCH)], source_etype=_I64)
                dispatch = indirect(b.load(slot, typ=_PTR, align=8), DISPATCH_TYPE)
                b.call(dispatch, [pool, task, context, lo, hi])
            with here:
                b.call(indirect(task, TASK_TYPE), [context, lo, hi])

    if records:
        counted_loop(b, _i64(0), _i64(len(records)), run, known_nonempty=True)
    b.ret_void()


def _i64(x: int) -> ir.Constant:
    return ir.Constant(_I64, x)


def _constant_array(module: ir.Module, name: str, typ: ir.Type, items: list) -> ir.GlobalVariable:
    array = ir.ArrayType(typ, len(items))
    g = ir.GlobalVariable(module, array, name=name)
    g.linkage = "internal"
    g.global_constant = True
    g.initializer = ir.Constant(array, items)
    return g


def _body(module: ir.Module, code: lowering.Body, name: str, emitters: Emitters) -> ir.Function:
    """``name(b0, b1, ..., lo, hi)``: the body's statements over its buffers' pointers, which
    are ``noalias`` (the runtime rejects outputs that overlap any other buffer, and a part
    passes each buffer once), kept by the inliner as alias scopes. A body that several parts
    run is never inlined: that is what makes LLVM optimise it once."""
    fn = ir.Function(module, ir.FunctionType(_VOID, [_PTR] * len(code.buffers) + [_I64, _I64]),
                     name=name)
    fn.linkage = "internal"
    fn.attributes.add("nounwind")
    if code.uses > 1:
        fn.attributes.add("noinline")
    for arg, buf in zip(fn.args, code.buffers):
        arg.name = buf.name
        arg.add_attribute("noalias")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    emitter = _BodyEmitter(b, {buf.name: arg for buf, arg in zip(code.buffers, fn.args)}, emitters)
    if code.parallel and (square := block_transpose(code.stmt)) is not None:
        emitter.transpose(square, fn.args[-2], fn.args[-1])
    elif code.parallel and code.whole is not None:
        lo, hi = fn.args[-2], fn.args[-1]
        whole = b.and_(b.icmp_signed("==", lo, _i64(code.stmt.start)),
                       b.icmp_signed("==", hi, _i64(code.stmt.stop)))
        with b.if_else(whole) as (alone, shared):
            with alone:
                emitter.stmt(code.whole)
            with shared:
                emitter.loop(code.stmt, lo, hi)
    elif code.parallel:
        emitter.loop(code.stmt, fn.args[-2], fn.args[-1])
    else:
        emitter.stmt(code.stmt)
    b.ret_void()
    return fn


def _context(b: ir.IRBuilder, context: ir.Value, k: int) -> ir.Value:
    return b.load(b.gep(context, [_i64(k)], source_etype=_PTR), typ=_PTR, align=8)


def _task(module: ir.Module, code: lowering.Body, body: ir.Function, name: str,
          part: Optional[lowering.Part] = None) -> ir.Function:
    """``name(context, lo, hi)``: calls ``body`` on the pointers of its buffers, each slot of
    the context's pointer array moved by its offset. A lone ``part``'s slots and offsets
    are constants; without one (the task of every part that runs ``body``) they are read
    from the context's second pointer, the part's moves: a slot and an offset a buffer."""
    task = ir.Function(module, TASK_TYPE, name=name)
    task.linkage = "internal"
    task.attributes.add("nounwind")
    # called directly and through the pool: inlining it into the entry would compile the
    # loop nest twice for nothing
    task.attributes.add("noinline")
    b = ir.IRBuilder(task.append_basic_block("entry"))
    context, lo, hi = task.args
    args = _context(b, context, 0)
    moves = _context(b, context, 1) if part is None else None
    pointers = []
    for n, buf in enumerate(code.buffers):
        if part is None:
            slot, offset = (b.load(b.gep(moves, [_i64(2 * n + j)], source_etype=_I64), typ=_I64)
                            for j in (0, 1))
        else:
            slot, offset = (_i64(x) for x in part.args[n])
        ptr = b.load(b.gep(args, [slot], source_etype=_PTR), typ=_PTR, align=8)
        if part is None or part.args[n][1]:
            ptr = b.gep(ptr, [offset], source_etype=lltype(buf.dtype))
        pointers.append(ptr)
    b.call(body, pointers + [lo, hi])
    b.ret_void()
    return task


def _touched(s: Stmt) -> set[str]:
    """The buffers statement ``s`` itself (not the statements inside it) reads or writes."""
    names = {x.buffer.name for e in stmt_exprs(s) for x in walk_expr(e) if isinstance(x, Load)}
    if isinstance(s, Call):
        names |= {w.buffer.name for _, w in s.operands}
    if isinstance(s, (Store, Accumulate)):
        names.add(s.buffer.name)
    return names


# ---------------------------------------------------------------------------
# emulation: the semantics nest on strided operands


class _StridedBody(_BodyEmitter):
    """The backend's statement emitter (so every operation means what the interpreter says),
    addressing each operand through its strides instead of a row-major shape."""

    def __init__(self, b: ir.IRBuilder, refs: dict[str, Ref]):
        super().__init__(b, {name: r.ptr for name, r in refs.items()}, _no_calls)
        self.refs = refs

    def address(self, buffer, indices):
        ref = self.refs[buffer.name]
        return ref.at(self.b, [0 if isinstance(i, Const) and i.value == 0 else self.index(i)
                               for i in indices])

    def expr(self, e: Expr) -> ir.Value:
        # an operand read from a widened copy (``Layout.widened``): its element, converted
        # from the copy's dtype, as the interpreter reads the call (``calls.expand_calls``
        # puts the copy's loads in the semantics), so ``i32(a)`` is the element's value
        load = e.a if isinstance(e, Cast) else e
        held = self.refs[load.buffer.name].dtype if isinstance(load, Load) else None
        if held is None or held == load.dtype:
            return super().expr(e)
        value = self.b.load(self.address(load.buffer, load.indices), typ=lltype(held),
                            align=itemsize(held))
        return self.cast(value, held, e.dtype)


def _no_calls(desc: Descriptor) -> Emitter:
    raise TypeError(f"the semantics of an intrinsic call another intrinsic ({desc.name})")


class Emulated(Emitter):
    """An implementation generated from the semantics: the loop nest itself, compiled by the
    backend. The accumulator stays in memory, so ``step`` is the whole call."""

    def __init__(self, desc: Descriptor):
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
# the caller: a kernel called from Python with the arrays themselves
#
# ``symbol.call`` is a CPython ``METH_FASTCALL | METH_KEYWORDS`` function (``runtime`` makes
# it a builtin bound to a block of process addresses, ``CALLER_*`` slots): it binds its
# arguments to the kernel's buffers, positionally or by keyword, checks each array as the
# Python path does (exact type ``numpy.ndarray``, rank, shape, strides, the builtin dtype,
# writeable if written, no written buffer overlapping another), then runs the kernel on the
# arrays' data and on temporaries on its own stack, and returns ``None``. Anything else
# touches nothing and goes to the Python path, which says what is wrong or runs what it
# accepts after all: the code calls the block's ``fallback`` on the same arguments and
# returns what it returns, or without one returns the ``fail`` object (then the caller
# takes that path itself). The field offsets below are numpy's and
# CPython's on 64-bit hosts; ``runtime`` checks them against real objects before any
# caller runs, and uses none on a process where one disagrees. Nothing here depends on the
# process (addresses come from the block), so the code is cached on disk with the kernel.

NDARRAY_FIELDS = {"ob_type": 8, "data": 16, "nd": 24, "dimensions": 32, "strides": 40,
                  "descr": 56, "flags": 64}
TUPLE_SIZE, TUPLE_ITEMS = 16, 24  # PyTupleObject's ob_size and ob_item
NPY_ARRAY_WRITEABLE = 0x0400
# the block ``self`` is (an int64 ndarray): one address or number a slot
CALLER_NDARRAY, CALLER_OK, CALLER_FAIL, CALLER_INCREF = 0, 1, 2, 3
CALLER_SAVE_THREAD, CALLER_RESTORE_THREAD, CALLER_POOL, CALLER_RUNS = 4, 5, 6, 7
CALLER_RELEASE_GIL = 8  # nonzero: run the kernel with the GIL released
# a refused call, when FALLBACK is not null, returns what ``PyObject_Vectorcall`` (slot
# VECTORCALL) of that Python callable on the same arguments returns (the Python path)
CALLER_FALLBACK, CALLER_VECTORCALL = 9, 10
# nonzero: calls accepted until the kernel's thread trial runs again, counted down by each
# call the checks accept; the one that brings it to zero is handed to FALLBACK instead
CALLER_COUNTDOWN = 11
# the kernel's area for temporaries too large for the stack: a word, nonzero while a call
# uses the area (set and cleared with the GIL held), then the temporaries from byte
# AREA_HEADER on; a call that finds it in use (another thread's, the GIL released around
# it) goes to FALLBACK, whose Python path keeps temporaries for each thread
CALLER_AREA = 12
CALLER_NAMES = 13  # then the buffers' names (interned str), then their dtypes (descr)
AREA_HEADER = 64
# A caller binds at most this many buffers (unrolled: names are compared pairwise), or the
# kernel has no caller and its calls take the Python path; and keeps temporaries on the
# calling thread's stack only up to this many bytes, every page probed in order
# (``probe-stack``), far under any thread's stack, and in the kernel's area past that.
CALLER_MAX_BUFFERS = 16
CALLER_MAX_TEMPORARY_BYTES = 32 * 1024
# Where each temporary starts: on a cache line, so that a padded or packed copy whose rows
# are a multiple of 64 bytes long (a B panel of 32 floats a row, a padded row of 224) is
# read by vector loads that never straddle two lines. numpy aligns to 16 bytes only; the
# 8 x 32 tile's calls on a misaligned B_pad of 2mm measured 113 to 116 us against 102.
TEMPORARY_ALIGNMENT = 64
_CALLER_TYPE = ir.FunctionType(_PTR, [_PTR, _PTR, _I64, _PTR])


class _ProbedAttributes(ir.FunctionAttributes):
    """Function attributes plus ``"probe-stack"="inline-asm"``: a frame larger than a page
    touches each page in turn, so it can never step over a thread's guard page."""

    def _to_list(self, ret_type):
        return super()._to_list(ret_type) + ['"probe-stack"="inline-asm"']


def caller_layout(func, filled: Optional[frozenset] = None) -> Optional[dict]:
    """What ``symbol.call`` compiled for ``func`` checks and builds: each buffer's shape,
    byte strides, byte size and whether the kernel writes it; each temporary's byte offset
    in the block of temporaries, size and whether it is zeroed first; the block's size on
    the stack (``stack``), or in the kernel's area (``area``: its bytes, ``AREA_HEADER``
    included; ``CALLER_AREA``). None when the kernel gets no caller (``CALLER_MAX_BUFFERS``).
    ``filled``: the temporaries the program fills before reading them
    (``analysis.filled_before_read``), if known."""
    from .analysis import filled_before_read

    params = func.params
    if not params or len(params) > CALLER_MAX_BUFFERS:
        return None
    offsets, top = [], 0
    for t in func.allocs:
        offsets.append(top)
        top += -(-max(t.nbytes, 1) // TEMPORARY_ALIGNMENT) * TEMPORARY_ALIGNMENT
    on_stack = top <= CALLER_MAX_TEMPORARY_BYTES
    if filled is None:
        filled = filled_before_read(func) if func.allocs else frozenset()
    temps = [(at, t.nbytes, t.name not in filled) for at, t in zip(offsets, func.allocs)]
    written = func.written
    return {"buffers": [(tuple(b.shape), tuple(s * itemsize(b.dtype) for s in b.strides),
                         b.nbytes, b.name in written) for b in params],
            "temporaries": temps, "stack": top if on_stack else 0,
            "area": 0 if on_stack else AREA_HEADER + top}


def add_caller(module: ir.Module, symbol: str, func) -> bool:
    """Add ``symbol.call`` (see above) running the kernel ``symbol`` of ``module`` on
    ``func``'s buffers; False when ``func`` gets none (``caller_layout``)."""
    layout = caller_layout(func)
    if layout is None:
        return False
    buffers, n = layout["buffers"], len(layout["buffers"])
    kernel = module.globals[symbol]
    fn = ir.Function(module, _CALLER_TYPE, name=f"{symbol}.call")
    # straight-line checks that gain little from O3, which took 17 ms on it per kernel
    # (a 96x80x72 product's whole compile: 21 ms, 46 with the caller optimised, 34 without);
    # a call costs the same 50 ns either way
    fn.attributes = _ProbedAttributes(["nounwind", "noinline", "optnone"])
    self_, args, nargs, kwnames = fn.args
    entry, with_kw, bind, fail = (fn.append_basic_block(s) for s in ("entry", "kw", "bind", "fail"))
    b = ir.IRBuilder(entry)
    c64 = functools.partial(ir.Constant, _I64)
    null = ir.Constant(_PTR, None)

    def at(base: ir.Value, offset, typ: ir.Type = _PTR) -> ir.Value:
        """The ``typ`` at byte ``offset`` (an int or an i64 value) of ``base``."""
        offset = offset if isinstance(offset, ir.Value) else c64(offset)
        return b.load(b.gep(base, [offset], source_etype=ir.IntType(8)), typ=typ,
                      align=4 if typ == _I32 else 8)

    def guard(ok: ir.Value) -> None:
        """Go on only where ``ok`` holds; else return the fail object."""
        go = fn.append_basic_block("ok")
        b.cbranch(ok, go, fail)
        b.position_at_start(go)

    def all_of(conds: list[ir.Value]) -> ir.Value:
        return functools.reduce(b.and_, conds)

    # the stack block first, in the entry block: a fixed frame, set up (and probed) once
    stack = None
    if layout["stack"]:
        stack = b.alloca(ir.ArrayType(ir.IntType(8), layout["stack"]), name="temporaries")
        stack.align = TEMPORARY_ALIGNMENT
    slot_type = ir.ArrayType(_PTR, n)
    slots = b.alloca(slot_type, name="arguments")
    temps = layout["temporaries"]
    pointers = b.alloca(ir.ArrayType(_PTR, n + len(temps)), name="pointers")
    block = at(self_, NDARRAY_FIELDS["data"])
    b.cbranch(b.icmp_unsigned("!=", kwnames, null), with_kw, bind)
    b.position_at_start(with_kw)
    size = at(kwnames, TUPLE_SIZE, _I64)
    b.branch(bind)
    b.position_at_start(bind)
    nkw = b.phi(_I64)
    nkw.add_incoming(c64(0), entry)
    nkw.add_incoming(size, with_kw)
    # as many arguments as buffers: ``args`` then holds n objects, all of them readable
    guard(b.icmp_unsigned("==", b.add(nargs, nkw), c64(n)))

    def slot(j) -> ir.Value:
        return b.gep(slots, [c64(0), j if isinstance(j, ir.Value) else c64(j)])

    # positional arguments bind the first buffers
    for j in range(n):
        positional = b.icmp_unsigned("<", c64(j), nargs)
        b.store(b.select(positional, at(args, 8 * j), null), slot(j))
    # each keyword binds the one buffer named by that very string object, not bound yet
    # (the names are interned; an equal string that is another object fails here, and the
    # Python path binds it); n arguments binding n buffers, each at most once, bind all
    names = [at(block, 8 * (CALLER_NAMES + j)) for j in range(n)]
    for i in range(n):
        with b.if_then(b.icmp_unsigned("<", c64(i), nkw)):
            name = at(kwnames, TUPLE_ITEMS + 8 * i)
            j = c64(n)  # none
            for k in reversed(range(n)):
                j = b.select(b.icmp_unsigned("==", name, names[k]), c64(k), j)
            guard(b.icmp_unsigned("<", j, c64(n)))
            guard(b.icmp_unsigned("==", b.load(slot(j), typ=_PTR, align=8), null))
            b.store(at(args, b.mul(b.add(nargs, c64(i)), c64(8))), slot(j))

    # each array as compiled: its type first (only an ndarray's fields are read), then rank,
    # dtype and writeability, then (the rank known) each dimension and stride
    ndarray = at(block, 8 * CALLER_NDARRAY)
    spans = []
    for j, (shape, strides, nbytes, written) in enumerate(buffers):
        obj = b.load(slot(j), typ=_PTR, align=8)
        guard(b.icmp_unsigned("!=", obj, null))
        guard(b.icmp_unsigned("==", at(obj, NDARRAY_FIELDS["ob_type"]), ndarray))
        descr = at(block, 8 * (CALLER_NAMES + n + j))
        conds = [b.icmp_unsigned("==", at(obj, NDARRAY_FIELDS["nd"], _I32), ir.Constant(_I32, len(shape))),
                 b.icmp_unsigned("==", at(obj, NDARRAY_FIELDS["descr"]), descr)]
        if written:
            flags = at(obj, NDARRAY_FIELDS["flags"], _I32)
            writeable = b.and_(flags, ir.Constant(_I32, NPY_ARRAY_WRITEABLE))
            conds.append(b.icmp_unsigned("!=", writeable, ir.Constant(_I32, 0)))
        guard(all_of(conds))
        if shape:
            dims, steps = at(obj, NDARRAY_FIELDS["dimensions"]), at(obj, NDARRAY_FIELDS["strides"])
            guard(all_of([b.icmp_unsigned("==", at(dims, 8 * k, _I64), c64(d)) for k, d in enumerate(shape)] +
                         [b.icmp_unsigned("==", at(steps, 8 * k, _I64), c64(s)) for k, s in enumerate(strides)]))
        data = at(obj, NDARRAY_FIELDS["data"])
        lo = b.ptrtoint(data, _I64)
        spans.append((data, lo, b.add(lo, c64(nbytes))))
    # no written buffer overlaps another (``Kernel._check_overlap``)
    apart = [b.or_(b.icmp_unsigned(">=", spans[j][1], spans[k][2]),
                   b.icmp_unsigned(">=", spans[k][1], spans[j][2]))
             for j, (_, _, _, written) in enumerate(buffers) if written for k in range(n) if k != j]
    if apart:
        guard(all_of(apart))

    # the trial's countdown (the Python path runs the call that ends it)
    countdown = b.gep(block, [c64(CALLER_COUNTDOWN)], source_etype=_I64)
    left = b.load(countdown, typ=_I64, align=8)
    with b.if_then(b.icmp_unsigned("!=", left, c64(0))):
        left = b.sub(left, c64(1))
        b.store(left, countdown)
        guard(b.icmp_unsigned("!=", left, c64(0)))
    # the kernel's area, when the temporaries are in it: taken, unless another call has it
    busy = None
    if layout["area"]:
        busy = at(block, 8 * CALLER_AREA)
        guard(b.icmp_unsigned("==", b.load(busy, typ=_I64, align=8), c64(0)))
        b.store(c64(1), busy)
        stack = b.gep(busy, [c64(AREA_HEADER)], source_etype=ir.IntType(8))
    # the pointer array: the arrays' data, then the temporaries (zeroed where the program
    # may read them before it writes them)
    starts = [data for data, _, _ in spans]
    memset = declare(module, "llvm.memset.p0.i64", _VOID, [_PTR, ir.IntType(8), _I64, _I1])
    for offset, nbytes, zeroed in temps:
        start = b.gep(stack, [c64(offset)], source_etype=ir.IntType(8))
        if zeroed and nbytes:
            b.call(memset, [start, ir.Constant(ir.IntType(8), 0), c64(nbytes), ir.Constant(_I1, 0)])
        starts.append(start)
    for k, p in enumerate(starts):
        b.store(p, b.gep(pointers, [c64(0), c64(k)]))
    # count the run (tests ask which path ran), then run, the GIL released if so asked
    runs = b.gep(block, [c64(CALLER_RUNS)], source_etype=_I64)
    b.store(b.add(b.load(runs, typ=_I64, align=8), c64(1)), runs)
    release = b.icmp_unsigned("!=", at(block, 8 * CALLER_RELEASE_GIL, _I64), c64(0))
    before = b.block
    with b.if_then(release):
        saving = b.block
        state = b.call(indirect(at(block, 8 * CALLER_SAVE_THREAD), ir.FunctionType(_PTR, [])), [])
    saved = b.phi(_PTR)
    saved.add_incoming(null, before)
    saved.add_incoming(state, saving)
    b.call(kernel, [pointers, at(block, 8 * CALLER_POOL)])
    with b.if_then(release):
        restore = indirect(at(block, 8 * CALLER_RESTORE_THREAD), ir.FunctionType(_VOID, [_PTR]))
        b.call(restore, [saved])
    if busy is not None:
        b.store(c64(0), busy)  # the GIL held again
    _return(b, block, CALLER_OK)
    b.position_at_start(fail)
    fallback = at(block, 8 * CALLER_FALLBACK)
    with b.if_then(b.icmp_unsigned("!=", fallback, null)):
        vectorcall = indirect(at(block, 8 * CALLER_VECTORCALL), _CALLER_TYPE)
        b.ret(b.call(vectorcall, [fallback, args, nargs, kwnames]))  # its reference, or NULL
    _return(b, block, CALLER_FAIL)
    return True


def _return(b: ir.IRBuilder, block: ir.Value, slot: int) -> None:
    """Return a new reference to the object in ``slot`` of the caller's block."""
    def word(k: int) -> ir.Value:
        return b.load(b.gep(block, [ir.Constant(_I64, k)], source_etype=_I64), typ=_PTR, align=8)

    obj = word(slot)
    b.call(indirect(word(CALLER_INCREF), ir.FunctionType(_VOID, [_PTR])), [obj])
    b.ret(obj)
