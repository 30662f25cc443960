"""Declaring intrinsics: ``register`` and the ``@intrinsic`` decorator, plugin modules
(``load_file``), and the library for a target (``library``, ``describe``).

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

The descriptor data and the library in force that the parser reads are ``rewrite.descriptor``'s;
host detection and the ISA list are ``rewrite.target``'s.
"""

from __future__ import annotations

import ast
import inspect
import re
import textwrap
from typing import Callable, Iterable, Mapping, Optional, Union

from rewrite import descriptor, ir, plugins
from rewrite import target as targets
from rewrite.descriptor import Descriptor, IntrinsicError, IterDim, Layout, Operand
from rewrite.ir import PrimFunc
from rewrite.script import ScriptError, parse, show

__all__ = ["ARCHES", "TARGETS", "Intrinsic", "IntrinsicError", "IterDim", "Layout", "Operand",
           "all", "describe", "generation", "get", "host_features", "intrinsic", "library",
           "load_file", "register", "unregister"]


class Intrinsic(Descriptor):
    """A registered intrinsic (see ``rewrite.descriptor.Descriptor``), with what this host
    makes of it."""

    @property
    def native(self) -> bool:
        """This CPU runs the intrinsic's own instructions (not an emulation)."""
        return targets.host().runs(self)

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
# checking the emitter


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
    descriptor.check_free(name)  # before the semantics are read
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
    operands, dims = descriptor.analyse(name, func)
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
                     descriptor.layouts(name, layout, operands), emitter, source or f"<{name}>")
    return descriptor.add(desc)


def intrinsic(name: str, *, isa: Iterable[str] = (), cost: float = 1.0,
              layout: Optional[Mapping] = None, emitter=None, arch: Optional[str] = None):
    """Decorator form of ``register``: the function's body is the semantics; returns the
    descriptor."""
    def wrap(fn: Callable) -> Intrinsic:
        return register(name, fn, isa=isa, cost=cost, layout=layout, emitter=emitter, arch=arch)
    return wrap


def unregister(name: str) -> None:
    descriptor.remove(name)


def generation() -> int:
    """A number that changes whenever an intrinsic is registered or unregistered."""
    return descriptor.generation()


def get(name: str) -> Intrinsic:
    return descriptor.lookup(name)


def all() -> list[Intrinsic]:  # noqa: A001 - the public name is fixed
    return descriptor.in_force()


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
    before = {d.name for d in descriptor.in_force()}

    def undo() -> None:
        for d in descriptor.in_force():
            if d.name not in before:
                descriptor.remove(d.name)

    def explain(e: BaseException, where: str) -> Optional[str]:
        if isinstance(e, ScriptError):  # bad semantics: located in the plugin already
            return str(e)
        if isinstance(e, IntrinsicError):  # a registration the registry refused
            return f"{where}: {e}"
        return None

    try:
        plugins.load(path, "tensorize_plugin", "intrinsics", undo, explain)
    except plugins.PluginError as e:
        raise IntrinsicError(str(e)) from None
    return [d for d in descriptor.in_force() if d.name not in before]


# ---------------------------------------------------------------------------
# targets

ARCHES = targets.ARCHES
TARGETS = targets.TARGETS
host_features = targets.host_features


def library(target: str = "host") -> list[Intrinsic]:
    """The intrinsics for ``target``: ``"host"`` (what this CPU runs natively), ``"all"``,
    or an ISA name from ``TARGETS`` (every intrinsic that ISA provides, native here or not)."""
    if target == "all":
        return all()
    where = targets.named(target)
    if where.is_host:
        return [d for d in all() if where.runs(d)]
    return [d for d in all() if where.provides(d)]


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
