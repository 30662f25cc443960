"""Printing programs in the script language: ``show(PrimFunc) -> text``, which
``script.parse`` reads back to an equal program, and ``show_expr`` for one expression.

Expressions get the parentheses Python's precedence needs and no more; loops of one nest
that all start at 0 print as one ``grid``; constants print so that they parse back to the
same value and dtype.
"""

from __future__ import annotations

import math
from typing import Iterable

from .ir import (BOOL, Accumulate, Binary, Buffer, Call, Cast, Compare, Const, Expr, For, If,
                 Load, Logical, PrimFunc, Select, Seq, Stmt, Store, Unary, Var, Window)


# ---------------------------------------------------------------------------
# printing

# Python precedence levels, loosest first; a child binding looser than its parent gets parentheses.
_OR, _AND, _NOT, _CMP, _ADD, _MUL, _NEG, _ATOM = range(1, 9)
_LEVEL = {"+": _ADD, "-": _ADD, "*": _MUL, "/": _MUL, "//": _MUL, "%": _MUL}


def _const_text(c: Const) -> str:
    if c.dtype == BOOL:
        return "True" if c.value else "False"
    if isinstance(c.value, float):
        if math.isinf(c.value):
            return "inf" if c.value > 0 else "-inf"
        if math.isnan(c.value):
            raise ValueError("NaN constants cannot be written in the script language")
        return repr(c.value)
    return str(c.value)


def _level(e: Expr) -> int:
    if isinstance(e, Binary):
        return _LEVEL.get(e.op, _ATOM)
    if isinstance(e, Unary):
        return {"neg": _NEG, "not": _NOT}.get(e.op, _ATOM)
    if isinstance(e, Compare):
        return _CMP
    if isinstance(e, Logical):
        return _AND if e.op == "and" else _OR
    if isinstance(e, Const) and (e.value < 0 if e.dtype != BOOL else False):
        return _NEG
    return _ATOM


def _wrap(e: Expr, min_level: int) -> str:
    text = show_expr(e)
    return f"({text})" if _level(e) < min_level else text


def show_expr(e: Expr) -> str:
    """Canonical text of one expression."""
    if isinstance(e, Var):
        return e.name
    if isinstance(e, Const):
        return _const_text(e)
    if isinstance(e, Load):
        return f"{e.buffer.name}[{', '.join(show_expr(i) for i in e.indices)}]"
    if isinstance(e, Binary):
        if e.op in ("max", "min"):
            return f"{e.op}({show_expr(e.a)}, {show_expr(e.b)})"
        lvl = _LEVEL[e.op]
        return f"{_wrap(e.a, lvl)} {e.op} {_wrap(e.b, lvl + 1)}"
    if isinstance(e, Unary):
        if e.op == "neg":
            return f"-{_wrap(e.a, _NEG)}"
        if e.op == "not":
            return f"not {_wrap(e.a, _NOT)}"
        return f"{e.op}({show_expr(e.a)})"
    if isinstance(e, Cast):
        return f"{e.dtype}({show_expr(e.a)})"
    if isinstance(e, Select):
        return f"select({show_expr(e.cond)}, {show_expr(e.a)}, {show_expr(e.b)})"
    if isinstance(e, Compare):
        # comparisons do not chain in the IR: both sides bind tighter than a comparison
        return f"{_wrap(e.a, _CMP + 1)} {e.op} {_wrap(e.b, _CMP + 1)}"
    if isinstance(e, Logical):
        lvl = _AND if e.op == "and" else _OR
        return f"{_wrap(e.a, lvl)} {e.op} {_wrap(e.b, lvl + 1)}"
    raise TypeError(f"not an expression: {e!r}")


def _show_stmt(s: Stmt, indent: int, out: list[str]) -> None:
    pad = "    " * indent
    if isinstance(s, Seq):
        for c in s.stmts:
            _show_stmt(c, indent, out)
    elif isinstance(s, (Store, Accumulate)):
        op = "=" if isinstance(s, Store) else "+="
        idx = ", ".join(show_expr(i) for i in s.indices)
        out.append(f"{pad}{s.buffer.name}[{idx}] {op} {show_expr(s.value)}")
    elif isinstance(s, Call):
        args = ", ".join(f"{n}={_show_window(w)}" for n, w in s.operands)
        out.append(f'{pad}call("{s.intrinsic.name}", {args})')
    elif isinstance(s, For):
        loops = [s]
        while isinstance(loops[-1].body, For) and loops[-1].start == 0 and loops[-1].body.start == 0:
            loops.append(loops[-1].body)
        if len(loops) > 1:
            names = ", ".join(f.var for f in loops)
            extents = ", ".join(str(f.stop) for f in loops)
            out.append(f"{pad}for {names} in grid({extents}):")
        elif s.start == 0:
            out.append(f"{pad}for {s.var} in range({s.stop}):")
        else:
            out.append(f"{pad}for {s.var} in range({s.start}, {s.stop}):")
        _show_stmt(loops[-1].body, indent + 1, out)
    elif isinstance(s, If):
        keyword = "if"
        while True:
            out.append(f"{pad}{keyword} {show_expr(s.cond)}:")
            _show_stmt(s.then, indent + 1, out)
            if isinstance(s.orelse, If):
                keyword, s = "elif", s.orelse
                continue
            if s.orelse is not None:
                out.append(f"{pad}else:")
                _show_stmt(s.orelse, indent + 1, out)
            break
    else:
        raise TypeError(f"not a statement: {s!r}")


def show_stmt(s: Stmt) -> str:
    """``s`` as script lines, its first at no indent."""
    out: list[str] = []
    _show_stmt(s, 0, out)
    return "\n".join(out)


def _show_window(w: Window) -> str:
    base = ", ".join(show_expr(i) for i in w.base)
    steps = "".join(", (" + ", ".join(map(str, st)) + ("," if len(st) == 1 else "") + ")" for st in w.steps)
    return f"window({w.buffer.name}[{base}]{steps})"


def _buffer_type(b: Buffer) -> str:
    return f"{b.dtype}[{', '.join(str(d) for d in b.shape)}]"


def _docstring(doc: str) -> str:
    if '"""' in doc or "\\" in doc or doc.endswith('"'):
        return repr(doc)
    lines = doc.split("\n")
    return '"""' + "\n".join([lines[0]] + [("    " + l) if l else "" for l in lines[1:]]) + '"""'


def show(func: PrimFunc) -> str:
    """Canonical script text of a function; ``parse(show(f)) == f``."""
    params = ", ".join(f"{b.name}: {_buffer_type(b)}" for b in func.params)
    out = ["@prim_func", f"def {func.name}({params}):"]
    if func.doc:
        out.append("    " + _docstring(func.doc))
    for b in func.allocs:
        out.append(f"    {b.name} = alloc({_buffer_type(b)})")
    _show_stmt(func.body, 1, out)
    return "\n".join(out) + "\n"


def show_file(funcs: Iterable[PrimFunc]) -> str:
    """A whole script file: the import line for linters, then every function."""
    funcs = list(funcs)
    names = sorted({b.dtype for f in funcs for b in f.buffers}
                   | {"prim_func"} | ({"grid"} if any("grid(" in show(f) for f in funcs) else set()))
    head = f"from rewrite.script import {', '.join(names)}\n"
    return head + "".join("\n\n" + show(f) for f in funcs)
