"""Intrinsic descriptors and the registry.

An intrinsic is declared by its meaning, written in the script language, and by how to emit
it (an emitter, see ``emit.py``, such as ``LlvmText`` for an implementation written as LLVM
IR text; none means an emulated implementation is generated from the meaning)::

    @intrinsic("x86.fma.f32x8", isa=("avx2", "fma"), cost=1.0, emitter=FmaF32x8())
    def fma_f32x8(c: f32[8], a: f32[8], b: f32[8]):
        for i in range(8):
            c[i] += a[i] * b[i]

The body is read from the source text with the script parser and is never run as Python.
Registration checks that the meaning is one loop nest accumulating into one output, that
every operand is indexed by plain loop variables, and that the emitter fits; anything else is
refused with a message naming the intrinsic.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import inspect
import itertools
import os
import platform
import re
import sys
import textwrap
import traceback
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping, Optional, Union

import llvmlite.binding as llvm

from rewrite import ir
from rewrite.ir import Accumulate, Const, For, If, PrimFunc, Seq, Store, Var
from rewrite.script import ScriptError, parse, show


class IntrinsicError(ValueError):
    """A descriptor the registry refuses, or a name it does not know."""


# ---------------------------------------------------------------------------
# the descriptor


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
    """

    unit_stride: tuple[int, ...] = ()
    align: int = 1
    contiguous: bool = False


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
class Intrinsic:
    """A registered intrinsic. Equality is identity: two registrations are two intrinsics."""

    name: str
    semantics: PrimFunc
    operands: tuple[Operand, ...]  # in parameter order
    dims: tuple[IterDim, ...]  # loop order of the semantics, outermost first
    isa: tuple[str, ...]
    arch: str
    cost: float
    layout: Mapping[str, Layout]
    emitter: Any = None  # see emit.Emitter; None: emulated from the semantics
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
        n = 1
        for d in self.dims:
            n *= d.extent
        return n

    @property
    def ops(self) -> int:
        """Scalar multiply-accumulate work, counted as two operations per iteration."""
        return 2 * self.iterations

    @property
    def native(self) -> bool:
        """This CPU runs the intrinsic's own instructions (not an emulation)."""
        return self.emitter is not None and self.arch in (host_arch(), "any") \
            and set(self.isa) <= host_features()

    def script(self) -> str:
        return show(self.semantics)


# ---------------------------------------------------------------------------
# reading the semantics from a Python function's source


def _semantics_from_function(name: str, fn: Callable) -> PrimFunc:
    """Parse ``fn``'s body as a script, with errors at their real file and line."""
    try:
        lines, first = inspect.getsourcelines(fn)
        file = inspect.getsourcefile(fn) or "<unknown>"
    except (OSError, TypeError) as e:
        raise IntrinsicError(f"intrinsic {name}: cannot read the source of {fn!r} ({e}); "
                             "declare it in a file, or pass the semantics as script text") from None
    text = textwrap.dedent("".join(lines))
    try:
        tree = ast.parse(text)
    except SyntaxError as e:
        raise _located(name, ScriptError(file, first + (e.lineno or 1) - 1, e.offset or 1,
                                         f"Python syntax error: {e.msg}")) from None
    fn_def = tree.body[0] if tree.body else None
    if not isinstance(fn_def, ast.FunctionDef):
        raise IntrinsicError(f"intrinsic {name}: the semantics must be a plain def, "
                             f"found {type(fn_def).__name__} at {file}:{first}")
    # Keep the def and its body only; blank lines put the def at its real line number, so
    # every location the parser reports is one in the user's file.
    def_line = first + fn_def.lineno - 1
    body = text.splitlines(keepends=True)[fn_def.lineno - 1:]
    script = "\n" * (def_line - 2) + "@prim_func\n" + "".join(body)
    return _parse(name, script, file, indent=_indent(lines))


def _indent(lines: list[str]) -> int:
    """Columns ``textwrap.dedent`` removed, so reported columns match the file."""
    first = next((ln for ln in lines if ln.strip()), "")
    return len(first) - len(first.lstrip())


def _parse(name: str, text: str, file: str, indent: int = 0) -> PrimFunc:
    _check_dtypes(name, text, file, indent)
    try:
        return parse(text, file)
    except ScriptError as e:
        raise _located(name, ScriptError(e.file, e.line, e.col + indent, e.message)) from None


def _check_dtypes(name: str, text: str, file: str, indent: int) -> None:
    """Name an unknown dtype outright: the parser only says the annotation is not a type."""
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return  # the parser reports it
    for node in ast.walk(tree):
        if isinstance(node, ast.arg) and isinstance(node.annotation, ast.Subscript):
            head = node.annotation.value
            if isinstance(head, ast.Name) and head.id not in ir.DTYPES:
                raise _located(name, ScriptError(
                    file, head.lineno, head.col_offset + 1 + indent,
                    f"unknown dtype {head.id} for operand {node.arg}; "
                    f"the dtypes are {', '.join(ir.DTYPES)}"))


def _located(name: str, e: ScriptError) -> ScriptError:
    return ScriptError(e.file, e.line, e.col, f"intrinsic {name}: {e.message}")


# ---------------------------------------------------------------------------
# checking the semantics: one nest accumulating into one output


def _analyse(name: str, func: PrimFunc) -> tuple[tuple[Operand, ...], tuple[IterDim, ...]]:
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
    assert isinstance(s, Accumulate)
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


# ---------------------------------------------------------------------------
# checking the rest


def _layouts(name: str, layout, operands: tuple[Operand, ...]) -> Mapping[str, Layout]:
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
        out[op_name] = need
    return MappingProxyType(out)


def _check_emitter(name: str, emitter, operands: tuple[Operand, ...]) -> None:
    if emitter is None:
        return
    if not callable(getattr(emitter, "emit", None)):
        raise IntrinsicError(f"intrinsic {name}: the emitter has no emit(builder, operands) method")
    bind = getattr(emitter, "bind", None)
    if callable(bind):  # an emitter that learns its operands from the semantics (LlvmText)
        bind(name, operands)
    want = tuple(o.name for o in operands)
    got = tuple(getattr(emitter, "operands", ()))
    if sorted(got) != sorted(want):
        raise IntrinsicError(f"intrinsic {name}: the emitter takes operands ({', '.join(got)}) "
                             f"but the semantics have ({', '.join(want)})")
    for o in operands:
        shape = getattr(emitter, "shapes", {}).get(o.name)
        if shape is not None and tuple(shape) != o.shape:
            raise IntrinsicError(f"intrinsic {name}: the emitter expects {o.name} of shape "
                                 f"{tuple(shape)}, the semantics declare {o.shape}")
        dtype = getattr(emitter, "dtypes", {}).get(o.name)
        if dtype is not None and dtype != o.dtype:
            raise IntrinsicError(f"intrinsic {name}: the emitter expects {o.name} as {dtype}, "
                                 f"the semantics declare {o.dtype}")


def _arch_of(name: str) -> str:
    head = name.split(".", 1)[0]
    return head if head in ARCHES else "any"


# ---------------------------------------------------------------------------
# the registry

_registry: dict[str, Intrinsic] = {}

# What a name may be: it is printed in tables and in ``call("x86.fma.f32x8", ...)`` statements,
# and becomes part of symbol names, so quotes, spaces and newlines are out.
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*", re.ASCII)


def register(name: str, semantics: Union[PrimFunc, str, Callable], *, isa: Iterable[str] = (),
             cost: float = 1.0, layout: Optional[Mapping] = None, emitter=None,
             arch: Optional[str] = None) -> Intrinsic:
    """Check and register an intrinsic. ``semantics``: a PrimFunc, script text holding one
    ``@prim_func``, or a Python function whose body is script (read from its source)."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise IntrinsicError(f"intrinsic name {name!r} is not a dotted name such as "
                             f"x86.fma.f32x8 (ASCII letters, digits and _, parts joined by dots)")
    if name in _registry:
        raise IntrinsicError(f"intrinsic {name} is already registered (at {_registry[name].source})")
    source = ""
    if isinstance(semantics, str):
        func = _parse(name, semantics, f"<intrinsic {name}>")
    elif isinstance(semantics, PrimFunc):
        func = semantics
    elif callable(semantics):
        func = _semantics_from_function(name, semantics)
        code = getattr(semantics, "__code__", None)
        source = f"{code.co_filename}:{code.co_firstlineno}" if code else ""
    else:
        raise IntrinsicError(f"intrinsic {name}: semantics must be a PrimFunc, script text or a "
                             f"function, not {type(semantics).__name__}")
    operands, dims = _analyse(name, func)
    if not isinstance(cost, (int, float)) or not cost > 0:
        raise IntrinsicError(f"intrinsic {name}: cost must be a positive number, not {cost!r}")
    if isinstance(isa, str):
        isa = (isa,)
    arch = arch or _arch_of(name)
    if arch not in ARCHES and arch != "any":
        raise IntrinsicError(f"intrinsic {name}: unknown architecture {arch}; "
                             f"known: {', '.join(ARCHES)}, any")
    _check_emitter(name, emitter, operands)
    desc = Intrinsic(name, func, operands, dims, tuple(isa), arch, float(cost),
                     _layouts(name, layout, operands), emitter, source or f"<{name}>")
    _registry[name] = desc
    _generation[0] += 1
    return desc


def intrinsic(name: str, *, isa: Iterable[str] = (), cost: float = 1.0,
              layout: Optional[Mapping] = None, emitter=None, arch: Optional[str] = None):
    """Decorator form of ``register``: the function's body is the semantics; returns the
    descriptor."""
    def wrap(fn: Callable) -> Intrinsic:
        return register(name, fn, isa=isa, cost=cost, layout=layout, emitter=emitter, arch=arch)
    return wrap


def unregister(name: str) -> None:
    get(name)
    del _registry[name]
    _generation[0] += 1


def generation() -> int:
    """A number that changes whenever an intrinsic is registered or unregistered: compiled
    programs calling intrinsics are only reused within one generation."""
    return _generation[0]


_generation = [0]


def get(name: str) -> Intrinsic:
    try:
        return _registry[name]
    except KeyError:
        raise IntrinsicError(f"no intrinsic named {name}; registered: "
                             f"{', '.join(sorted(_registry)) or 'none'}") from None


def all() -> list[Intrinsic]:  # noqa: A001 - the public name is fixed
    return list(_registry.values())


def load_file(path) -> list[Intrinsic]:
    """Import a user's Python module (trusted plugin code) and return what it registered.

    The module is imported as any module is: under a name of its own
    (``tensorize_plugin_<n>_<stem>``) in ``sys.modules``, so its classes have a source file
    (the runtime keys compiled code on an emitter's source). Whatever the module raises --
    ``SystemExit`` and ``KeyboardInterrupt`` included -- becomes one ``IntrinsicError`` line
    naming the file and, where known, the line: ``mine.py:4:2: Python syntax error: ...``,
    ``mine.py:7:1: cannot load intrinsics: boom (RuntimeError)``. A module that fails leaves
    no intrinsics and no module behind.
    """
    path = str(path)
    if not os.path.isfile(path):
        raise IntrinsicError(f"{path}: no such file")
    stem = re.sub(r"\W", "_", os.path.splitext(os.path.basename(path))[0], flags=re.ASCII)
    module_name = f"tensorize_plugin_{next(_plugins)}_{stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise IntrinsicError(f"{path}: not a Python module (a .py file is expected)")
    module = importlib.util.module_from_spec(spec)
    before = set(_registry)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as e:  # plugin code: anything it raises is bad input
        # all or nothing: a module that fails half way leaves no intrinsics behind
        for name in set(_registry) - before:
            del _registry[name]
        _generation[0] += 1
        sys.modules.pop(module_name, None)
        raise IntrinsicError(_plugin_failure(path, e)) from None
    return [d for n, d in _registry.items() if n not in before]


_plugins = itertools.count(1)


def _plugin_failure(path: str, e: BaseException) -> str:
    """One line for what a plugin raised while loading, located where Python says."""
    if isinstance(e, ScriptError):  # bad semantics: located in the plugin already
        return str(e)
    if isinstance(e, SyntaxError):
        file = e.filename or path
        where = f"{file}:{e.lineno or 1}:{e.offset or 1}"
        also = "" if _same_file(file, path) else f" (imported by {path})"
        return f"{where}: Python syntax error: {e.msg}{also}"
    frames = [f for f in traceback.extract_tb(e.__traceback__) if _same_file(f.filename, path)]
    where = path
    if frames:
        where += f":{frames[-1].lineno}"
        if getattr(frames[-1], "colno", None) is not None:
            where += f":{frames[-1].colno + 1}"
    if isinstance(e, IntrinsicError):  # a registration the registry refused
        return f"{where}: {e}"
    if isinstance(e, SystemExit):
        return f"{where}: cannot load intrinsics: the module called sys.exit({e.code!r})"
    message = str(e).replace("\n", " ").strip()
    what = f"{message} ({type(e).__name__})" if message else f"{type(e).__name__} raised"
    return f"{where}: cannot load intrinsics: {what}"


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


# ---------------------------------------------------------------------------
# targets

# Feature sets use LLVM's names (what get_host_cpu_features reports) for x86.
_AVX2 = frozenset({"sse2", "sse4.1", "sse4.2", "avx", "avx2", "fma", "f16c"})
_AVX512 = _AVX2 | {"avx512f", "avx512bw", "avx512dq", "avx512vl"}
TARGETS: Mapping[str, tuple[str, frozenset]] = MappingProxyType({
    "x86-avx2": ("x86", _AVX2),
    "x86-avx512": ("x86", _AVX512),
    "x86-avx512vnni": ("x86", _AVX512 | {"avx512vnni"}),
    "arm-neon": ("arm", frozenset({"neon"})),
    "arm-dotprod": ("arm", frozenset({"neon", "dotprod"})),
    "nvidia-sm80": ("nvidia", frozenset({"sm_80"})),
})
ARCHES = ("x86", "arm", "nvidia")


@functools.lru_cache(maxsize=None)
def host_features() -> frozenset[str]:
    return frozenset(k for k, on in llvm.get_host_cpu_features().items() if on)


@functools.lru_cache(maxsize=None)
def host_arch() -> str:
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64", "i386", "i686"):
        return "x86"
    if machine in ("aarch64", "arm64") or machine.startswith("arm"):
        return "arm"
    return machine


def library(target: str = "host") -> list[Intrinsic]:
    """The intrinsics for ``target``: ``"host"`` (what this CPU runs natively), ``"all"``, or an
    ISA name from ``TARGETS`` (every intrinsic that ISA provides, native here or not)."""
    if target == "all":
        return all()
    if target == "host":
        return [d for d in _registry.values() if d.native]
    if target not in TARGETS:
        raise IntrinsicError(f"unknown target {target}; targets are host, all, "
                             f"{', '.join(TARGETS)}")
    arch, features = TARGETS[target]
    return [d for d in _registry.values() if d.arch in (arch, "any") and set(d.isa) <= features]


def describe(target: str = "all") -> str:
    """The table ``tensorize intrinsics [--target T]`` prints: one header line per intrinsic
    (name, ISA, native or emulated on this host, cost), then its semantics as script."""
    rows = library(target)
    if not rows:
        return f"no intrinsics for target {target}\n"
    width = max(len(d.name) for d in rows)
    out = [f"{'name':<{width}}  {'isa':<22}  {'on this host':<12}  cost"]
    for d in rows:
        isa = "+".join(d.isa) or "-"
        here = "native" if d.native else "emulated"
        out.append(f"{d.name:<{width}}  {isa:<22}  {here:<12}  {d.cost:g}")
        out.extend("    " + line if line else "" for line in d.script().splitlines())
        out.append("")
    return "\n".join(out)
