"""The backend seam: how an intrinsic is emitted into a kernel, and the helpers emitters use.

An emitter writes one intrinsic call into an ``llvmlite.ir.IRBuilder``, given each operand as
a ``Ref``: a base pointer plus a stride per operand dimension, in elements. A stride is a
Python ``int`` when known at compile time (then unit strides become vector loads) or an
``i64`` value.

Emitters have three phases so that a caller can keep the accumulated output in registers
across consecutive calls along a reduction (the micro-kernel shape of a GEMM)::

    acc = e.load_acc(b, ops)          # the output block into SSA values
    for k ...: acc = e.step(b, ops_k, acc)
    e.store_acc(b, ops, acc)

``emit(b, ops)`` is the three phases once; ``phi_loop`` runs the middle one with the
accumulators in phi nodes, and ``kloop_function`` builds a whole micro-kernel around an
emitter. A kernel's backend (``codegen``) is given the emitter of each descriptor it meets
(by a ``target.Target``: the native one where the CPU runs it, else ``codegen.Emulated``),
so nothing here knows any particular intrinsic, and an emitter needs nothing but this module.

An emitter may also set ``operands`` (the semantics' parameter names), ``shapes`` and
``dtypes`` (checked against the semantics at registration), ``bind(name, operands)`` (called
at registration), and ``fingerprint()`` (text its generated code depends on beyond its class's
source, for the compile cache).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

from llvmlite import ir

from .descriptor import Descriptor
from .ir import BOOL, bits, itemsize

I64 = ir.IntType(64)
PTR = ir.PointerType()
VOID = ir.VoidType()
_I1 = ir.IntType(1)
_FLOAT_TYPES = {"f16": ir.HalfType(), "f32": ir.FloatType(), "f64": ir.DoubleType()}

Stride = Union[int, ir.Value]


def lltype(dtype: str) -> ir.Type:
    """LLVM type of a dtype: ``half``/``float``/``double``, ``iN`` (u8 is ``i8``), ``i1``."""
    if dtype == BOOL:
        return _I1
    return _FLOAT_TYPES.get(dtype) or ir.IntType(bits(dtype))



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
        return b.gep(self.ptr, [off], source_etype=lltype(self.dtype))

    def advanced(self, b: ir.IRBuilder, elements: ir.Value) -> "Ref":
        ptr = b.gep(self.ptr, [elements], source_etype=lltype(self.dtype))
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
            terms.append(b.mul(as_value(i), as_value(s)))
    if not terms:
        return const
    total = terms[0]
    for t in terms[1:]:
        total = b.add(total, t)
    return b.add(total, ir.Constant(I64, const)) if const else total


def as_value(x: Stride) -> ir.Value:
    """A stride or index as an ``i64`` value."""
    return ir.Constant(I64, x) if isinstance(x, int) else x


class Emitter:
    """Base of every emitter. Subclasses set ``operands`` (the semantics' parameter names)
    and may set ``shapes``/``dtypes`` so registration checks they fit the semantics."""

    operands: tuple[str, ...] = ()
    shapes: dict = {}
    dtypes: dict = {}
    # consecutive steps a loop of calls runs per iteration (``phi_loop``): 2 for a step that
    # hands its accumulators on to the next slot (two alternating sets of partial sums)
    unroll: int = 1
    # whether the accumulators are plain SSA values that other code may run between two
    # steps of (``codegen`` then carries them through a loop that holds other statements
    # too); not so for state such as AMX tile configuration
    interleaves: bool = False
    # whether the emitter can run a loop of calls on an output block the program has just
    # filled with one constant without reading the block (``fresh_acc``, ``store_fresh``):
    # ``codegen`` then leaves out the fill right before such a loop (``rules/tiles.py``)
    starts_fresh: bool = False

    # An emitter may also have ``partial(shapes)``: an emitter of the same kind for operands
    # of the smaller ``shapes`` (each dim at most the declared one), or None where it has no
    # such form. It must touch no element outside those shapes: the partial form
    # (``descriptor.partial``) is called on windows that end at a buffer's edge. ``work``,
    # if set: the instructions one call issues, which prices a partial form against its
    # parent.
    work: Optional[float] = None

    def load_acc(self, b: ir.IRBuilder, ops: dict[str, Ref]):
        raise NotImplementedError

    def fresh_acc(self, b: ir.IRBuilder, ops: dict[str, Ref]):
        """The accumulators ``load_acc`` would give for an output block holding one
        constant everywhere, for ``store_fresh`` to finish, without reading the block."""
        raise NotImplementedError

    def store_fresh(self, b: ir.IRBuilder, ops: dict[str, Ref], acc, value) -> None:
        """Store what ``store_acc`` would, had the output block held ``value`` (an LLVM
        constant of the output's element type) everywhere, without reading the block."""
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
    """Declare (once) a function by its full name, e.g. the LLVM intrinsic ``llvm.maximum.f32``."""
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


def indirect(pointer: ir.Value, fnty: ir.FunctionType) -> _FunctionPointer:
    """A callee for ``b.call`` from a function pointer value of type ``fnty``."""
    return _FunctionPointer(pointer, fnty)


def load_row(b: ir.IRBuilder, ref: Ref, index: Sequence[int], dim: int, n: int,
             valid: Optional[int] = None) -> ir.Value:
    """``n`` elements along ``dim`` from ``index``, as one vector. A unit stride is one load
    aligned to the element only (numpy gives no more); other strides gather element-wise.
    ``valid``: only the first ``valid`` lanes are read (a masked load at unit stride), the
    others are zero; no byte past them is touched."""
    ety, size = lltype(ref.dtype), itemsize(ref.dtype)
    vty = ir.VectorType(ety, n)
    valid = n if valid is None else valid
    if ref.strides[dim] == 1 and valid == n:
        return b.load(ref.at(b, index), typ=vty, align=size)
    if ref.strides[dim] == 1:
        fn = declare(b.module, f"llvm.masked.load.{_vector_suffix(vty)}.p0", vty,
                     [PTR, ir.IntType(32), ir.VectorType(_I1, n), vty])
        return b.call(fn, [ref.at(b, index), ir.Constant(ir.IntType(32), size), _lanes(n, valid),
                           ir.Constant(vty, None)])
    vec = ir.Constant(vty, ir.Undefined if valid == n else None)
    for lane in range(valid):
        idx = list(index)
        idx[dim] += lane
        vec = b.insert_element(vec, b.load(ref.at(b, idx), typ=ety, align=size),
                               ir.Constant(ir.IntType(32), lane))
    return vec


def store_row(b: ir.IRBuilder, ref: Ref, index: Sequence[int], dim: int, vec: ir.Value,
              valid: Optional[int] = None) -> None:
    """``vec`` stored along ``dim`` from ``index``; ``valid``: its first ``valid`` lanes only
    (a masked store at unit stride), no byte past them touched."""
    n, size = vec.type.count, itemsize(ref.dtype)
    valid = n if valid is None else valid
    if ref.strides[dim] == 1 and valid == n:
        b.store(vec, ref.at(b, index), align=size)
        return
    if ref.strides[dim] == 1:
        fn = declare(b.module, f"llvm.masked.store.{_vector_suffix(vec.type)}.p0", VOID,
                     [vec.type, PTR, ir.IntType(32), ir.VectorType(_I1, n)])
        b.call(fn, [vec, ref.at(b, index), ir.Constant(ir.IntType(32), size), _lanes(n, valid)])
        return
    for lane in range(valid):
        idx = list(index)
        idx[dim] += lane
        b.store(b.extract_element(vec, ir.Constant(ir.IntType(32), lane)), ref.at(b, idx),
                align=size)


def _lanes(n: int, valid: int) -> ir.Constant:
    """The mask of the first ``valid`` of ``n`` lanes."""
    return ir.Constant(ir.VectorType(_I1, n), [int(k < valid) for k in range(n)])


def _vector_suffix(vty: ir.VectorType) -> str:
    """LLVM's overload suffix of a vector type: ``v16f32``, ``v8i32``."""
    e = vty.element
    kind = {ir.FloatType: "f32", ir.DoubleType: "f64", ir.HalfType: "f16"}.get(type(e)) or f"i{e.width}"
    return f"v{vty.count}{kind}"


def load_scalar(b: ir.IRBuilder, ref: Ref, index: Sequence[int]) -> ir.Value:
    return b.load(ref.at(b, index), typ=lltype(ref.dtype), align=itemsize(ref.dtype))


def shuffle(b: ir.IRBuilder, x: ir.Value, y: Optional[ir.Value], lanes: Sequence[int]) -> ir.Value:
    mask = ir.Constant(ir.VectorType(ir.IntType(32), len(lanes)), [int(v) for v in lanes])
    return b.shuffle_vector(x, y if y is not None else ir.Constant(x.type, ir.Undefined), mask)


def splat(b: ir.IRBuilder, scalar: ir.Value, n: int) -> ir.Value:
    one = b.insert_element(ir.Constant(ir.VectorType(scalar.type, 1), ir.Undefined), scalar,
                           ir.Constant(ir.IntType(32), 0))
    return shuffle(b, one, None, [0] * n)


def concat(b: ir.IRBuilder, parts: Sequence[ir.Value]) -> ir.Value:
    """Join equal-width vectors end to end (pairwise, as shufflevector needs equal types); an
    odd count is made even with an undefined vector at the end, so that the ``k``-th part's
    lanes are lanes ``k * width ...`` of the result whatever the count."""
    parts = list(parts)
    while len(parts) > 1:
        n = parts[0].type.count
        if len(parts) % 2:
            parts.append(ir.Constant(parts[0].type, ir.Undefined))
        parts = [shuffle(b, parts[i], parts[i + 1], range(2 * n)) for i in range(0, len(parts), 2)]
    return parts[0]


# ---------------------------------------------------------------------------
# loops


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
    v = b.phi(I64)
    v.add_incoming(start, entry)
    body(v)
    nxt = b.add(v, ir.Constant(I64, 1), flags=("nsw",))
    v.add_incoming(nxt, b.block)
    b.cbranch(b.icmp_signed("<", nxt, stop), header, exit_)
    b.position_at_end(exit_)


def phi_loop(b: ir.IRBuilder, n: ir.Value, state, body, unroll: int = 1):
    """``for k < n: state = body(k, state)`` with ``state`` (a nested list of SSA values) in
    phi nodes; returns the final state.

    ``unroll``: steps per iteration of the loop, the last ``n % unroll`` steps after it. A
    body that moves values from one slot of the state to another (``Emitter.unroll``) leaves
    every value in its own register only once the loop runs whole turns of that rotation;
    otherwise each iteration ends in a register copy per moved value."""
    if unroll > 1:
        return _unrolled(b, n, state, body, unroll)
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


def _unrolled(b: ir.IRBuilder, n: ir.Value, state, body, unroll: int):
    """``phi_loop`` with ``unroll`` steps an iteration; the same steps in the same order."""
    known = n.constant if isinstance(n, ir.Constant) else None
    if known is not None:
        turns, done = ir.Constant(I64, known // unroll), ir.Constant(I64, known // unroll * unroll)
    else:
        turns = b.sdiv(n, ir.Constant(I64, unroll))
        done = b.mul(turns, ir.Constant(I64, unroll), flags=("nsw",))

    def turn(i: ir.Value, st):
        first = b.mul(i, ir.Constant(I64, unroll), flags=("nsw",))
        for j in range(unroll):
            st = body(first if j == 0 else b.add(first, ir.Constant(I64, j), flags=("nsw",)), st)
        return st

    if known is None or known >= unroll:
        state = phi_loop(b, turns, state, turn)
    if known is not None:
        for k in range(known // unroll * unroll, known):  # straight-line, fewer than unroll
            state = body(ir.Constant(I64, k), state)
        return state
    return phi_loop(b, b.sub(n, done, flags=("nsw",)), state,
                    lambda k, st: body(b.add(k, done, flags=("nsw",)), st))


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
# functions around an emitter

# Standalone call: void f(ptr pointers, ptr strides); strides are i64, operand after operand.
CALL_TYPE = ir.FunctionType(VOID, [PTR, PTR])
# Micro-kernel: void f(ptr pointers, i64 steps, i64 repeats).
KLOOP_TYPE = ir.FunctionType(VOID, [PTR, I64, I64])


def _refs(b: ir.IRBuilder, desc: Descriptor, pointers: ir.Value,
          strides: Union[dict[str, tuple[int, ...]], ir.Value],
          dtypes: Optional[dict[str, str]] = None) -> dict[str, Ref]:
    """Operand refs read from the pointer array; strides either fixed or read from memory;
    element dtypes the operands' own unless ``dtypes`` names another (``Layout.widened``)."""
    dtypes = dtypes or {}
    refs, slot = {}, 0
    for n, o in enumerate(desc.operands):
        ptr = b.load(b.gep(pointers, [ir.Constant(I64, n)], source_etype=PTR), typ=PTR, align=8)
        if isinstance(strides, dict):
            st = tuple(strides[o.name])
        else:
            st = tuple(b.load(b.gep(strides, [ir.Constant(I64, slot + d)], source_etype=I64),
                              typ=I64, align=8) for d in range(len(o.shape)))
        slot += len(o.shape)
        refs[o.name] = Ref(ptr, dtypes.get(o.name, o.dtype), st)
    return refs


def call_function(module: ir.Module, desc: Descriptor, emitter: Emitter, symbol: str,
                  strides: Optional[dict[str, tuple[int, ...]]]) -> ir.Function:
    """One call of the intrinsic. ``strides`` fixed at compile time, or None: read at run time."""
    fn = ir.Function(module, CALL_TYPE, name=symbol)
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    refs = _refs(b, desc, fn.args[0], strides if strides is not None else fn.args[1])
    emitter.emit(b, refs)
    b.ret_void()
    return fn


def kloop_function(module: ir.Module, desc: Descriptor, emitter: Emitter, symbol: str,
                   strides: dict[str, tuple[int, ...]], advance: dict[str, int],
                   keep_acc: bool = True, dtypes: Optional[dict[str, str]] = None) -> ir.Function:
    """``repeats`` times: ``steps`` consecutive calls, operand ``x`` moving ``advance[x]``
    elements per call. With ``keep_acc`` the output is loaded once, carried in phi nodes
    (registers) through the steps and stored once: what a lowering does for consecutive
    calls along a reduction. Without it, every call loads and stores its output. ``dtypes``:
    operands held in another dtype than their own (``_refs``)."""
    fn = ir.Function(module, KLOOP_TYPE, name=symbol)
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    pointers, steps, repeats = fn.args
    refs = _refs(b, desc, pointers, strides, dtypes)
    out = desc.output.name

    def moved(k: ir.Value) -> dict[str, Ref]:
        return {n: r.advanced(b, b.mul(k, ir.Constant(I64, advance.get(n, 0))))
                if advance.get(n, 0) else r for n, r in refs.items()}

    def one_repeat(_: ir.Value) -> None:
        if not keep_acc:
            counted_loop(b, ir.Constant(I64, 0), steps, lambda k: emitter.emit(b, moved(k)))
            return
        acc = emitter.load_acc(b, refs)
        acc = phi_loop(b, steps, acc, lambda k, a: emitter.step(b, {**moved(k), out: refs[out]}, a),
                       getattr(emitter, "unroll", 1))
        emitter.store_acc(b, refs, acc)

    counted_loop(b, ir.Constant(I64, 0), repeats, one_repeat)
    b.ret_void()
    return fn
