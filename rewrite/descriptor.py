"""Intrinsic descriptors, as the IR sees them, and the library in force.

A descriptor is what a ``call(...)`` statement means: the intrinsic's name, its semantics
(one loop nest accumulating into one output, a ``PrimFunc``), its operands and iteration
dims read off those semantics, its layout needs and cost, and how the backend emits it (an
object following ``rewrite.emitter.Emitter``, or None: emulated from the semantics). An
``ir.Call`` holds its descriptor, so every pass after the parser reads the meaning of a call
from the call itself.

The library in force is the set of registered descriptors by name: the parser resolves
``call("x86.fma.f32x8", ...)`` against it. Nothing here knows any particular intrinsic:
libraries register themselves, and are found the way Python finds plugins, through the
entry points of group ``tensorize.intrinsics`` (the built-in library, ``intrinsics``, is
one; an installed package can add its own). Each is imported once, the first time the
library in force is read.
"""

from __future__ import annotations

import functools
import importlib.metadata
import math
import re
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any, Mapping, Optional

from . import ir
from .ir import Accumulate, Const, For, If, PrimFunc, Seq, Store, Var


class IntrinsicError(ValueError):
    """A descriptor the registry refuses, or a name it does not know."""


@dataclass(frozen=True)
class Layout:
    """What an operand's memory must look like for the native implementation to apply.

    ``unit_stride``: operand dimensions that must have stride 1 (in elements).
    ``align``: required byte alignment of the operand's base (the element size means none
    beyond what any numpy array has).
    ``contiguous``: the emitter reads the whole window with one load when it is one
    contiguous block in its own dim order (element strides those of the operand's shape,
    row-major: ``(4, 1)`` for a ``[16, 4]`` window), and row by row otherwise. Such a call
    still works on any strides, only slower (``cost.UNBLOCKED_PER_ROW``), and the extractor
    also weighs copying the operand into blocks (``rules/layout.py``, ``pack-panel``).
    ``widened``: a wider dtype of the same kind the emitter also reads the operand from, each
    element the operand's value (the AVX2 int8 tile's u8 and i8 as i16, ``vpmaddwd``'s
    input, and the f16 tile's f16 as f32, so that no call widens them again): ``pack-panel``
    stores its copy of the operand so, as the value cast (``i16(B[k, j])``, ``f32(B[k, j])``:
    exact, the wider type holding every value of the narrower). A call may read the operand
    from a buffer of either dtype (``verify``); the call means its semantics on the values
    the window holds (``calls.expand_calls``), and those of a widened copy are the source's.
    """

    unit_stride: tuple[int, ...] = ()
    align: int = 1
    contiguous: bool = False
    widened: Optional[str] = None

    def stored(self, dtype: str) -> str:
        """The dtype of a copy of an operand of ``dtype`` made for this layout."""
        return self.widened or dtype


@dataclass(frozen=True)
class IterDim:
    """One loop of the semantics nest: ``name < extent``; spatial dims index the output."""

    name: str
    extent: int
    kind: str  # "spatial" or "reduction"


@dataclass(frozen=True)
class Operand:
    """One parameter of the semantics: its role and how its dims map to iteration dims."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    role: str  # "input" or "output" (the accumulated one)
    dims: tuple[Optional[str], ...]  # iteration dim per operand dim; None: a unit dim indexed by 0

    @property
    def itemsize(self) -> int:
        return ir.itemsize(self.dtype)


@dataclass(frozen=True, eq=False)
class Descriptor:
    """A registered intrinsic. Equality is identity: two registrations are two intrinsics."""

    name: str
    semantics: PrimFunc
    operands: tuple[Operand, ...]  # in parameter order
    dims: tuple[IterDim, ...]  # loop order of the semantics, outermost first
    isa: tuple[str, ...]
    arch: str
    cost: float
    layout: Mapping[str, Layout]
    emitter: Any = None  # see rewrite.emitter.Emitter; None: emulated from the semantics
    source: str = ""  # "file:line" of the declaration

    @property
    def output(self) -> Operand:
        return next(o for o in self.operands if o.role == "output")

    @property
    def inputs(self) -> tuple[Operand, ...]:
        return tuple(o for o in self.operands if o.role == "input")

    def __repr__(self) -> str:
        return f"<Intrinsic {self.name}>"

    def operand(self, name: str) -> Operand:
        for o in self.operands:
            if o.name == name:
                return o
        raise KeyError(name)

    def accesses(self, dim: str) -> tuple[tuple[str, int], ...]:
        """(operand, operand dim) pairs that iteration dim ``dim`` indexes."""
        return tuple((o.name, d) for o in self.operands for d, it in enumerate(o.dims) if it == dim)

    @property
    def iterations(self) -> int:
        return math.prod(d.extent for d in self.dims)

    @property
    def ops(self) -> int:
        """Scalar multiply-accumulate work, counted as two operations per iteration."""
        return 2 * self.iterations


# ---------------------------------------------------------------------------
# reading operands and dims off the semantics: one nest accumulating into one output


def analyse(name: str, func: PrimFunc) -> tuple[tuple[Operand, ...], tuple[IterDim, ...]]:
    """The operands and iteration dims of semantics ``func``; ``IntrinsicError`` naming
    intrinsic ``name`` when ``func`` is not one nest accumulating into one output with every
    operand indexed by plain loop variables."""
    def refuse(why: str) -> IntrinsicError:
        return IntrinsicError(f"intrinsic {name}: {why}")

    if func.allocs:
        raise refuse("the semantics may not allocate temporaries")
    loops: list[For] = []
    s = func.body
    while isinstance(s, For):
        if s.start != 0:
            raise refuse(f"loop {s.var} must start at 0 (it starts at {s.start})")
        loops.append(s)
        s = s.body
    if isinstance(s, Seq):
        raise refuse(f"the semantics must be one accumulate statement inside the loops, "
                     f"found {len(s.stmts)} statements")
    if isinstance(s, If):
        raise refuse("the semantics may not contain an if: an intrinsic does the same work "
                     "at every iteration")
    if isinstance(s, Store):
        raise refuse(f"{s.buffer.name}[...] = ... overwrites; an intrinsic accumulates into its "
                     f"output with +=")
    if not isinstance(s, Accumulate):
        raise refuse(f"the semantics must be one accumulate statement, found {type(s).__name__}")
    extents = {lp.var: lp.extent for lp in loops}
    patterns: dict[str, tuple[Optional[str], ...]] = {}

    def bind(buf: ir.Buffer, indices: tuple) -> None:
        dims = tuple(_dim_of(refuse, buf, d, idx, extents) for d, idx in enumerate(indices))
        if patterns.setdefault(buf.name, dims) != dims:
            raise refuse(f"operand {buf.name} is accessed at two different positions")

    bind(s.buffer, s.indices)
    for load in ir.loads_of(s.value):
        if load.buffer.name == s.buffer.name:
            raise refuse(f"the output {s.buffer.name} may only be accumulated into, not read")
        bind(load.buffer, load.indices)
    out_dims = patterns[s.buffer.name]
    named = [d for d in out_dims if d is not None]
    if len(set(named)) != len(named):
        raise refuse(f"the output {s.buffer.name} uses a loop variable twice")
    used = {d for dims in patterns.values() for d in dims if d is not None}
    for lp in loops:
        if lp.var not in used:
            raise refuse(f"loop {lp.var} indexes no operand")
    operands = []
    for b in func.params:
        if b.name not in patterns:
            raise refuse(f"operand {b.name} is never used")
        role = "output" if b.name == s.buffer.name else "input"
        operands.append(Operand(b.name, b.dtype, b.shape, role, patterns[b.name]))
    dims = tuple(IterDim(lp.var, lp.extent, "spatial" if lp.var in out_dims else "reduction")
                 for lp in loops)
    return tuple(operands), dims


def _dim_of(refuse, buf: ir.Buffer, d: int, idx, extents: dict[str, int]) -> Optional[str]:
    """The iteration dim operand dim ``d`` follows; it must cover the whole operand dim."""
    if isinstance(idx, Var):
        if extents[idx.name] != buf.shape[d]:
            raise refuse(f"operand {buf.name} has extent {buf.shape[d]} in dim {d}, but loop "
                         f"{idx.name} runs {extents[idx.name]} times")
        return idx.name
    if isinstance(idx, Const) and idx.value == 0 and buf.shape[d] == 1:
        return None
    raise refuse(f"operand {buf.name} dim {d} must be indexed by a loop variable "
                 f"(or 0 when its extent is 1)")


def layouts(name: str, layout, operands: tuple[Operand, ...]) -> Mapping[str, Layout]:
    """Layout needs by operand, checked against the operands (``IntrinsicError`` naming
    ``name`` otherwise); a plain mapping ``{"unit_stride": ..., "align": ...}`` is accepted."""
    out: dict[str, Layout] = {}
    for op_name, need in (layout or {}).items():
        if isinstance(need, Mapping):
            need = Layout(tuple(need.get("unit_stride", ())), int(need.get("align", 1)))
        if not isinstance(need, Layout):
            raise IntrinsicError(f"intrinsic {name}: layout of {op_name} must be a Layout")
        op = next((o for o in operands if o.name == op_name), None)
        if op is None:
            raise IntrinsicError(f"intrinsic {name}: layout names {op_name}, which is not an operand")
        bad = [d for d in need.unit_stride if not 0 <= d < len(op.shape)]
        if bad:
            raise IntrinsicError(f"intrinsic {name}: layout of {op_name} asks for unit stride in "
                                 f"dim {bad[0]}, but {op_name} has {len(op.shape)} dims")
        if need.align < 1 or need.align & (need.align - 1):
            raise IntrinsicError(f"intrinsic {name}: alignment {need.align} is not a power of two")
        if need.widened is not None:
            ints = need.widened in ir.INT_DTYPES and ir.is_int(op.dtype) and \
                (ir.is_signed(need.widened) or not ir.is_signed(op.dtype))
            floats = need.widened in ir.FLOAT_DTYPES and ir.is_float(op.dtype)
            holds = (ints or floats) and ir.bits(need.widened) > ir.bits(op.dtype)
            if op.role != "input" or not holds:
                raise IntrinsicError(f"intrinsic {name}: {op_name} ({op.dtype}, {op.role}) cannot be "
                                     f"read widened to {need.widened}: only an input can, into a "
                                     f"wider type of its kind holding each of its values")
        out[op_name] = need
    return MappingProxyType(out)


# ---------------------------------------------------------------------------
# partial forms: an intrinsic on fewer rows or columns than it declares

# ``x86.avx512.mm.f32.8x32x1[2x26x1]``: the intrinsic's semantics with its loops run
# 2, 26 and 1 times (in the semantics' loop order), the operands shaped accordingly.
_PARTIAL = re.compile(r"(?P<parent>[^\[\]]+)\[(?P<extents>\d+(?:x\d+)*)\]")


def partial(desc: "Descriptor", extents: tuple[int, ...]) -> Optional["Descriptor"]:
    """``desc`` run on a smaller box of its spatial dims: its semantics with loop ``k`` run
    ``extents[k]`` times (each at most the declared extent, a reduction dim's exactly it),
    named ``name[e0xe1x...]``, the operands' shapes cut to match. Its meaning is a
    sub-computation of ``desc``'s: every output element it writes is one ``desc`` writes, from
    the same inputs (a spatial dim indexes the output, so dropping its last values drops
    whole output elements and the input elements only they read). None unless the emitter
    has a form for those shapes (``Emitter.partial``): an emulated partial call would be
    slower than the scalar code it stands for. The form costs ``desc.cost`` times the share
    of the emitter's instructions it issues (``Emitter.work``), at least the share of the
    iterations it runs, so that no partial form is priced below its parent's rate."""
    extents = tuple(extents)
    if len(extents) != len(desc.dims) or extents == tuple(d.extent for d in desc.dims):
        return None
    for d, n in zip(desc.dims, extents):
        if not 1 <= n <= d.extent or d.kind == "reduction" and n != d.extent:
            return None
    return _partial(desc, extents)


@functools.lru_cache(maxsize=None)
def _partial(desc: "Descriptor", extents: tuple[int, ...]) -> Optional["Descriptor"]:
    make = getattr(desc.emitter, "partial", None)
    if make is None:
        return None
    size = {d.name: n for d, n in zip(desc.dims, extents)}
    shapes = {o.name: tuple(1 if it is None else size[it] for it in o.dims) for o in desc.operands}
    emitter = make(shapes)
    if emitter is None:
        return None
    params = {b.name: ir.Buffer(b.name, b.dtype, shapes[b.name]) for b in desc.semantics.params}

    def cut(s):
        if isinstance(s, For):
            return For(s.var, s.start, s.start + size[s.var], cut(s.body))
        value = ir.map_loads(s.value, lambda x: ir.Load(params[x.buffer.name], x.indices))
        return Accumulate(params[s.buffer.name], s.indices, value)

    name = f"{desc.name}[{'x'.join(map(str, extents))}]"
    semantics = PrimFunc(name.replace(".", "_").replace("[", "_").replace("]", ""),
                         tuple(params[b.name] for b in desc.semantics.params), cut(desc.semantics.body))
    operands, dims = analyse(name, semantics)
    share = math.prod(extents) / desc.iterations
    parent_work, work = getattr(desc.emitter, "work", None), getattr(emitter, "work", None)
    if parent_work and work:
        share = max(share, work / parent_work)
    return replace(desc, name=name, semantics=semantics, operands=operands, dims=dims,
                   cost=desc.cost * share, emitter=emitter)


@functools.lru_cache(maxsize=None)
def signature(desc: "Descriptor") -> tuple:
    """What a descriptor computes, less its name: its operands (names, dtypes, shapes, roles,
    dims), its loops and its body. Two descriptors with one signature compute the same thing
    on the same windows (a partial form and a registered intrinsic of its shape: the 6 x 16
    tile on 4 rows and the 4 x 16 tile)."""
    body = desc.semantics.body
    while isinstance(body, For):
        body = body.body
    return (tuple((o.name, o.dtype, o.shape, o.role, o.dims) for o in desc.operands),
            tuple((d.name, d.extent, d.kind) for d in desc.dims), repr(body))


def parent_of(desc: "Descriptor") -> "Descriptor":
    """The registered intrinsic a partial form (``partial``) is cut from; ``desc`` itself
    for a registered one."""
    name = parent_name(desc.name)
    return desc if name == desc.name else lookup(name)


def parent_name(name: str) -> str:
    """The name of the registered intrinsic a call of intrinsic ``name`` runs: ``name`` less
    a partial form's extents (``partial``)."""
    m = _PARTIAL.fullmatch(name)
    return m["parent"] if m else name


# ---------------------------------------------------------------------------
# the library in force

_library: dict[str, Descriptor] = {}
_generation = [0]
ENTRY_POINTS = "tensorize.intrinsics"
_discovered = [False]


def _discover() -> None:
    """Import every intrinsic library installed under ``ENTRY_POINTS`` (once): importing
    one registers its intrinsics."""
    if _discovered[0]:
        return
    _discovered[0] = True
    for entry in sorted(importlib.metadata.entry_points(group=ENTRY_POINTS), key=lambda e: e.name):
        try:
            entry.load()
        except Exception as e:  # an installed plugin: its failure is named, not a traceback
            raise IntrinsicError(f"cannot load the intrinsic library {entry.name} "
                                 f"({entry.value}): {e}") from None


def check_free(name: str) -> None:
    """``IntrinsicError`` naming where ``name`` was registered, if it is in force (the
    installed libraries read first, so a user's intrinsic cannot take a built-in's name)."""
    _discover()
    if name in _library:
        raise IntrinsicError(f"intrinsic {name} is already registered (at {_library[name].source})")


def add(desc: Descriptor) -> Descriptor:
    """Put ``desc`` in force under its name (``IntrinsicError`` if the name is taken)."""
    check_free(desc.name)
    _library[desc.name] = desc
    _generation[0] += 1
    return desc


def remove(name: str) -> None:
    lookup(name)
    del _library[name]
    _generation[0] += 1


def lookup(name: str) -> Descriptor:
    """The descriptor in force under ``name``; ``IntrinsicError`` listing the names otherwise."""
    _discover()
    m = _PARTIAL.fullmatch(name)
    if m and name not in _library and m["parent"] in _library:
        parent = _library[m["parent"]]
        form = partial(parent, tuple(int(x) for x in m["extents"].split("x")))
        if form is None:
            raise IntrinsicError(f"intrinsic {parent.name} has no partial form {m['extents']} "
                                 f"(extents {'x'.join(str(d.extent) for d in parent.dims)} at "
                                 f"most, reduction dims whole, and an emitter that has the form)")
        return form
    try:
        return _library[name]
    except KeyError:
        raise IntrinsicError(f"no intrinsic named {name}; registered: "
                             f"{', '.join(sorted(_library)) or 'none'}") from None


def known(name: str) -> bool:
    """Whether an intrinsic is registered under ``name``."""
    _discover()
    return name in _library


def in_force() -> list[Descriptor]:
    """Every descriptor in force, in registration order."""
    _discover()
    return list(_library.values())


def generation() -> int:
    """A number that changes whenever an intrinsic is registered or unregistered."""
    return _generation[0]
