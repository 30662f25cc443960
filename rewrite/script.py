"""The script language: ``parse(text) -> PrimFunc``; ``show(PrimFunc) -> text`` is ``printer.py``'s.

Scripts are read with Python's ``ast`` module and never executed: top-level code,
default arguments and decorators are not run. Every error is a ``ScriptError``
carrying ``file:line:col`` and one sentence.

    @prim_func
    def scale(A: f32[8], B: f32[8]):
        for i in range(8):
            B[i] = 2.0 * A[i]

The names below (``prim_func``, ``grid``, ``f32``, ...) exist only so that editors
and linters can read script files; the parser recognises them by name.
"""

from __future__ import annotations

import ast
import io
import math
import tokenize
from typing import Iterable, Optional

import numpy as np

from . import descriptor, ir
from .ir import (BOOL, DTYPES, INDEX, Accumulate, Binary, Buffer, Call, Cast, Compare, Const, Expr,
                 For, If, Load, Logical, PrimFunc, Select, Stmt, Store, Unary, Var, Window)
from . import polytope
from .affine import Affine, affine
from .printer import show, show_expr, show_file  # noqa: F401 - the language's public face
from .verify import INDEX_MAX, INDEX_MIN, VerifyError, verify


# ---------------------------------------------------------------------------
# names for editors and linters; the parser never calls them


def prim_func(fn):
    """Marks a script function. Scripts are parsed, not run: this only returns ``fn``."""
    return fn


def grid(*extents):
    raise RuntimeError("grid() is script syntax: parse the file with rewrite.script.parse_file")


def alloc(buffer_type):
    raise RuntimeError("alloc() is script syntax: parse the file with rewrite.script.parse_file")


def select(cond, a, b):
    raise RuntimeError("select() is script syntax: parse the file with rewrite.script.parse_file")


def exp(x):
    raise RuntimeError("exp() is script syntax: parse the file with rewrite.script.parse_file")


def sqrt(x):
    raise RuntimeError("sqrt() is script syntax: parse the file with rewrite.script.parse_file")


class _DType:
    def __init__(self, name: str):
        self.name = name

    def __getitem__(self, shape):
        return (self.name, shape)

    def __repr__(self) -> str:
        return self.name


f16, f32, f64, i8, u8, i16, i32, i64 = (_DType(d) for d in DTYPES)


# ---------------------------------------------------------------------------
# errors


class ScriptError(Exception):
    """A bad script: ``file:line:col: one sentence``."""

    def __init__(self, file: str, line: int, col: int, message: str):
        super().__init__(f"{file}:{line}:{col}: {message}")
        self.file, self.line, self.col, self.message = file, line, col, message
        self.name: Optional[str] = None  # the function it is about, when known


_UNARY_FUNCS = {"abs": "abs", "exp": "exp", "sqrt": "sqrt"}
_BINOPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//",
           ast.Mod: "%"}
_CMPOPS = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!="}
_RESERVED = set(DTYPES) | {"range", "grid", "alloc", "select", "max", "min", "abs", "exp", "sqrt",
                           "prim_func", "inf", "True", "False", "call", "window"}
_FUNCTIONS_SENTENCE = ("the language has max, min, abs, exp, sqrt, select and the casts "
                       + ", ".join(f"{d}(...)" for d in DTYPES))


def _is_literal(node: ast.AST) -> bool:
    while isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        node = node.operand  # a loop, not recursion: a literal may carry many minus signs
    if isinstance(node, ast.Name) and node.id == "inf":
        return True
    return isinstance(node, ast.Constant) and type(node.value) in (int, float, bool)


def _literal_text(value) -> str:
    """A literal for a message; one of thousands of digits is described, not printed (Python
    refuses to turn an int of more than 4,300 digits into text)."""
    if type(value) is int and value.bit_length() > 128:
        return f"a literal of about {round(value.bit_length() * math.log10(2))} digits"
    return f"the literal {value!r}"


# ---------------------------------------------------------------------------
# limits and positions

# The deepest expression a script may hold, counted in IR nodes from the root to the deepest
# leaf: ``A[i] + A[i] + A[i]`` nests 4 levels (two additions, a load, its index), and an ``and``
# or a sum of n terms about n. Every later stage may recurse along an expression; this bound,
# checked once here, keeps them within the interpreter's stack (see ``ir.MAX_EXPR_DEPTH``).
MAX_EXPR_DEPTH = ir.MAX_EXPR_DEPTH

_DEEP_HINT = "split it into several statements"


class _Source:
    """The lines of a script, to turn ``ast`` positions into the columns a person counts.

    ``ast`` gives ``col_offset`` in UTF-8 bytes; messages count characters from 1, as
    editors and Python's own syntax errors do:

    >>> _Source("x = 'é' + y").col(1, 11)
    11
    """

    def __init__(self, text: str):
        # Python's line breaks, and only those (str.splitlines also splits at \f, \x1c, ...)
        self.lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        self.encoded: dict[int, bytes] = {}

    def col(self, line: int, byte_offset: int) -> int:
        text = self.lines[line - 1] if 0 < line <= len(self.lines) else ""
        if text.isascii():
            return byte_offset + 1
        if line not in self.encoded:
            self.encoded[line] = text.encode("utf-8")
        return len(self.encoded[line][:byte_offset].decode("utf-8", "ignore")) + 1

    def where(self, node: ast.AST) -> tuple[int, int]:
        return node.lineno, self.col(node.lineno, node.col_offset)


def _depth_of(node: ast.AST, depth: dict[int, int], literals: set[int]) -> int:
    """IR nesting of one node, given the nesting of its children (0 for nodes outside expressions).

    ``a and b and c`` and ``a < b < c`` are flat in ``ast`` but become chains in the IR;
    ``----1`` is one constant. ``literals`` holds the literals found so far, and grows."""
    def d(x: ast.AST) -> int:
        return depth[id(x)]

    if not isinstance(node, ast.expr):
        return max((d(c) for c in ast.iter_child_nodes(node)), default=0)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        literal = id(node.operand) in literals  # the operand came first: no walk down the signs
    else:
        literal = _is_literal(node)
    if literal:
        literals.add(id(node))
        return 1
    if isinstance(node, ast.BoolOp):
        k = len(node.values)  # folded from the left: value i (from 0) sits under k - max(i, 1) ands
        return max(d(v) + k - max(i, 1) for i, v in enumerate(node.values))
    if isinstance(node, ast.Compare):
        terms = [node.left] + list(node.comparators)
        m = len(node.ops)
        # comparison j (from 1) sits under the ands that join it to the later ones
        return max(1 + max(d(terms[j - 1]), d(terms[j])) + m - max(j, 2) + 1 for j in range(1, m + 1))
    if isinstance(node, ast.Tuple):  # the indices of a subscript: no node of their own
        return max((d(e) for e in node.elts), default=0)
    if isinstance(node, ast.Subscript):
        return 1 + d(node.slice)
    if isinstance(node, ast.Call):
        return 1 + max([d(a) for a in node.args] + [d(k.value) for k in node.keywords], default=0)
    return 1 + max((d(c) for c in ast.iter_child_nodes(node)), default=0)


def _check_depth(fn: ast.FunctionDef, src: "_Source", file: str) -> None:
    """Refuse an expression nesting deeper than ``MAX_EXPR_DEPTH``, at its outermost node.

    Runs before anything recursive sees the function: two passes with explicit stacks."""
    depth: dict[int, int] = {}
    literals: set[int] = set()
    stack: list[tuple[ast.AST, bool]] = [(fn, False)]
    while stack:  # post-order: children first
        node, ready = stack.pop()
        if ready:
            depth[id(node)] = _depth_of(node, depth, literals)
            continue
        stack.append((node, True))
        stack.extend((c, False) for c in ast.iter_child_nodes(node))
    todo: list[ast.AST] = [fn]
    while todo:  # pre-order, source order: the first outermost expression past the limit
        node = todo.pop()
        if isinstance(node, ast.expr):
            if depth[id(node)] > MAX_EXPR_DEPTH:
                line, col = src.where(node)
                raise ScriptError(file, line, col,
                                  f"this expression nests {depth[id(node)]} levels deep, past the "
                                  f"limit of {MAX_EXPR_DEPTH}; {_DEEP_HINT}")
            continue
        todo.extend(reversed(list(ast.iter_child_nodes(node))))


# tokens that make an expression one level deeper; used only when Python's parser gives up
_NESTING_OPS = {"+", "-", "*", "/", "//", "%", "**", "@", "<", "<=", ">", ">=", "==", "!=",
                "~", "<<", ">>", "&", "|", "^"}
_NESTING_WORDS = {"and", "or", "not", "is", "lambda", "await"}
_EXPR_STARTS = {"=", ":", "+=", "-=", "*=", "/=", "//=", "%=", "**=", "@=", "&=", "|=", "^=",
                ">>=", "<<=", ":=", "->"}
_EXPR_WORDS = {"if", "elif", "else", "while", "for", "in", "return", "assert", "del", "with",
               "yield", "raise", "import", "from", "as"}


def _long_number(text: str, line: int) -> tuple[int, int, int]:
    """Line, column and length of the longest decimal literal on ``line`` (Python's parser
    refuses one of more than 4,300 digits without saying where)."""
    best = (line, 1, 0)
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.start[0] > line:
                break
            digits = sum(c.isdigit() for c in tok.string)
            if tok.type == tokenize.NUMBER and tok.start[0] == line and digits > best[2]:
                best = (line, tok.start[1] + 1, digits)
    except (tokenize.TokenError, SyntaxError):
        pass
    return best


def _deep_expression(text: str) -> tuple[int, int]:
    """Where an expression too deep for Python's parser starts (``ast.parse`` does not say).

    Python's parser gives up on a few thousand nested signs, or tens of thousands of chained
    additions, with no position. The tokenizer is a loop: count nesting operators per expression (a segment of a logical line
    between ``=``, ``:``, keywords such as ``if``, and the line's end) and point at the first
    expression holding more than ``MAX_EXPR_DEPTH``; (1, 1) if none does."""
    start, count, brackets = None, 0, 0
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            kind, s = tok.type, tok.string
            if kind in (tokenize.NEWLINE, tokenize.ENDMARKER) or (
                    brackets == 0 and ((kind == tokenize.OP and s in _EXPR_STARTS)
                                       or (kind == tokenize.NAME and s in _EXPR_WORDS))):
                start, count = None, 0
                continue
            if kind in (tokenize.NL, tokenize.COMMENT, tokenize.INDENT, tokenize.DEDENT):
                continue
            if start is None:
                start = tok.start
            if s in "([{":
                brackets += 1
            elif s in ")]}":
                brackets -= 1
            elif (kind == tokenize.OP and s in _NESTING_OPS) or (kind == tokenize.NAME and s in _NESTING_WORDS):
                count += 1
                if count > MAX_EXPR_DEPTH:
                    return start[0], start[1] + 1
    except (tokenize.TokenError, SyntaxError):
        pass
    return 1, 1


# ---------------------------------------------------------------------------
# parsing


class _FunctionParser:
    """Turns one ``@prim_func`` definition into a ``PrimFunc``."""

    def __init__(self, file: str, fn: ast.FunctionDef, src: _Source):
        self.file = file
        self.fn = fn
        self.src = src
        self.buffers: dict[str, Buffer] = {}
        self.allocs: list[Buffer] = []
        self.loop_vars: list[str] = []
        self.loop_boxes: dict[str, tuple[int, int]] = {}  # each loop variable's range, inclusive
        self.loop_facts: list[Affine] = []  # affine forms >= 0 that triangular bounds add
        self.locals: set[str] = set()  # scalar locals: one-element temporaries read as plain names
        self.locations: dict[int, tuple[int, int]] = {}

    # -- errors and locations ------------------------------------------------

    def error(self, node: ast.AST, message: str) -> ScriptError:
        line, col = self.src.where(node if hasattr(node, "lineno") else self.fn)
        return ScriptError(self.file, line, col, message)

    def at(self, node: ast.AST, value):
        """Remember where an IR node came from, so later checks can point at it."""
        self.locations[id(value)] = self.src.where(node)
        return value

    # -- the function ----------------------------------------------------------

    def parse(self) -> PrimFunc:
        fn = self.fn
        _check_depth(fn, self.src, self.file)  # first: what follows recurses along expressions
        args = fn.args
        if args.vararg or args.kwarg or args.kwonlyargs or args.posonlyargs:
            raise self.error(fn, f"function {fn.name} may only take buffer parameters (no *args, **kwargs or keyword-only parameters)")
        if args.defaults or args.kw_defaults:
            raise self.error(args.defaults[0] if args.defaults else fn,
                             f"default arguments are not part of the language (function {fn.name})")
        if fn.returns is not None:
            raise self.error(fn.returns, f"function {fn.name} returns nothing: remove the return annotation")
        params = []
        for a in args.args:
            if a.annotation is None:
                raise self.error(a, f"parameter {a.arg} needs a buffer type such as f32[64, 64]")
            buf = self.buffer_type(a.annotation, a.arg)
            self.declare_buffer(a, buf)
            params.append(buf)
        body = list(fn.body)
        doc = ""
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                and isinstance(body[0].value.value, str):
            doc = ast.get_docstring(fn) or ""
            body = body[1:]
        stmts = []
        for node in body:
            if self.is_alloc(node):
                self.alloc(node)
            else:
                stmts.extend(self.stmt(node))
        if not stmts:
            raise self.error(fn, f"function {fn.name} has no statements")
        body = ir.seq(*stmts)
        located = tuple((s, self.file, *self.locations[id(s)]) for s in ir.walk_stmts(body)
                        if id(s) in self.locations)
        func = PrimFunc(fn.name, tuple(params), body, tuple(self.allocs), doc, located)
        try:
            verify(func)
        except VerifyError as e:
            line, col = self.locations.get(id(e.node)) or self.src.where(fn)
            raise ScriptError(self.file, line, col, e.message) from None
        return func

    def buffer_type(self, node: ast.AST, name: str) -> Buffer:
        if not (isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name)
                and node.value.id in DTYPES):
            raise self.error(node, f"the type of {name} must be a dtype with a shape, such as f32[64, 64]")
        dims = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        shape = []
        for d in dims:
            if not (_is_literal(d) and type(self.literal_value(d)) is int):
                raise self.error(d, f"the shape of {name} must be positive integer constants")
            value = self.int_literal(d, f"a dimension of {name}")
            if value <= 0:
                raise self.error(d, f"the shape of {name} must be positive, not {value}")
            shape.append(value)
        return self.at(node, Buffer(name, node.value.id, tuple(shape)))

    def declare_buffer(self, node: ast.AST, buf: Buffer) -> None:
        if buf.name in self.buffers:
            raise self.error(node, f"buffer {buf.name} is declared twice")
        if buf.name in _RESERVED:
            raise self.error(node, f"{buf.name} is a reserved name and cannot name a buffer")
        self.buffers[buf.name] = buf

    @staticmethod
    def is_alloc(node: ast.stmt) -> bool:
        return (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)
                and isinstance(node.value.func, ast.Name) and node.value.func.id == "alloc")

    def alloc(self, node: ast.Assign) -> None:
        call = node.value
        if len(node.targets) != 1 or not isinstance(node.targets[0], ast.Name):
            raise self.error(node, "alloc() must be assigned to one name: T = alloc(f32[64])")
        name = node.targets[0].id
        if len(call.args) != 1 or call.keywords:
            raise self.error(call, "alloc() takes one buffer type, such as alloc(f32[64, 64])")
        buf = self.buffer_type(call.args[0], name)
        self.declare_buffer(node.targets[0], buf)
        self.allocs.append(buf)

    # -- statements -------------------------------------------------------------

    def block(self, nodes: list[ast.stmt], owner: ast.AST) -> Stmt:
        stmts = []
        for node in nodes:
            stmts.extend(self.stmt(node))
        if not stmts:
            raise self.error(owner, "an empty block has no meaning here: remove it")
        return ir.seq(*stmts)

    def stmt(self, node: ast.stmt) -> list[Stmt]:
        if isinstance(node, ast.For):
            return [self.for_(node)]
        if isinstance(node, ast.Assign):
            if self.is_alloc(node):
                raise self.error(node, "alloc() is only allowed at the top level of a function body")
            if len(node.targets) != 1:
                raise self.error(node, "assign to one buffer element at a time")
            if isinstance(node.targets[0], ast.Name) and node.targets[0].id not in self.buffers \
                    and node.targets[0].id not in self.loop_vars:
                self.declare_local(node.targets[0], node.value)
            buf, idx = self.target(node.targets[0])
            value = self.expr(node.value, buf.dtype)
            self.check_value_dtype(node.value, value, buf)
            return [self.at(node, Store(buf, idx, value))]
        if isinstance(node, ast.AugAssign):
            return [self.update(node)]
        if isinstance(node, ast.If):
            cond = self.condition(node.test)
            then = self.block(node.body, node)
            orelse = self.block(node.orelse, node) if node.orelse else None
            return [self.at(node, If(cond, then, orelse))]
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) \
                and isinstance(node.value.value, str):
            return []  # a string used as a comment
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call) \
                and isinstance(node.value.func, ast.Name) and node.value.func.id == "call":
            return [self.intrinsic_call(node.value)]
        if isinstance(node, ast.Pass):
            raise self.error(node, "pass is not part of the language: remove it")
        what = {ast.While: "while loops", ast.Return: "return", ast.FunctionDef: "nested functions",
                ast.AnnAssign: "annotated assignments", ast.With: "with blocks",
                ast.Import: "imports inside functions", ast.ImportFrom: "imports inside functions",
                ast.Break: "break", ast.Continue: "continue", ast.Try: "try blocks",
                ast.Delete: "del", ast.Global: "global", ast.Nonlocal: "nonlocal",
                ast.Assert: "assert", ast.Raise: "raise"}.get(type(node))
        if isinstance(node, ast.Expr):
            what = "expression statements (only stores X[...] = e and X[...] += e)"
        raise self.error(node, f"{what or type(node).__name__} {'are' if what else 'is'} not part of the script language")

    def update(self, node: ast.AugAssign) -> Stmt:
        """``X[i] += e`` accumulates; ``X[i] -= e`` accumulates ``-(e)`` (the same value: IEEE
        negation is exact and integers wrap alike), so a product it subtracts is still a product
        accumulated; ``X[i] op= e`` for the other operators is ``X[i] = X[i] op (e)``."""
        if isinstance(node.op, (ast.Add, ast.Sub)):
            buf, idx = self.target(node.target)
            operand = node.value if isinstance(node.op, ast.Add) else \
                ast.copy_location(ast.UnaryOp(ast.USub(), node.value), node.value)
            value = self.expr(operand, buf.dtype)
            self.check_value_dtype(node.value, value, buf)
            return self.at(node, Accumulate(buf, idx, value))
        if type(node.op) not in _BINOPS:
            raise self.error(node, f"{type(node.op).__name__} updates are not part of the language; "
                                   f"the updates are += -= *= /= //= %=")
        read = ast.copy_location(ast.Subscript(node.target.value, node.target.slice, ast.Load()),
                                 node.target) if isinstance(node.target, ast.Subscript) else node.target
        assign = ast.copy_location(ast.Assign([node.target], ast.copy_location(
            ast.BinOp(read, node.op, node.value), node)), node)
        (s,) = self.stmt(assign)
        return s

    def intrinsic_call(self, node: ast.Call) -> Stmt:
        """``call("x86.fma.f32x8", c=window(C[i, 8 * j], (0, 1)), a=..., b=...)``."""
        if len(node.args) != 1 or not (isinstance(node.args[0], ast.Constant)
                                       and isinstance(node.args[0].value, str)):
            raise self.error(node, 'call() takes the intrinsic\'s name as a string, then its operands '
                                   'by keyword: call("x86.fma.f32x8", c=window(...), ...)')
        name = node.args[0].value
        try:
            desc = descriptor.lookup(name)
        except descriptor.IntrinsicError as e:
            if descriptor.parent_name(name) != name and descriptor.known(descriptor.parent_name(name)):
                raise self.error(node.args[0], str(e)) from None  # a partial form it has not
            raise self.error(node.args[0], f"unknown intrinsic {name}; tensorize intrinsics lists them") from None
        given = {}
        for kw in node.keywords:
            if kw.arg is None:
                raise self.error(kw.value, "call() takes operands as name=window(...)")
            if kw.arg not in {o.name for o in desc.operands}:
                raise self.error(kw.value, f"intrinsic {name} has no operand {kw.arg}; its operands are "
                                           + ", ".join(o.name for o in desc.operands))
            given[kw.arg] = self.window(kw.value)
        missing = [o.name for o in desc.operands if o.name not in given]
        if missing:
            raise self.error(node, f"intrinsic {name} needs operand{'s' * (len(missing) > 1)} {', '.join(missing)}")
        operands = tuple((o.name, given[o.name]) for o in desc.operands)
        return self.at(node, Call(desc, operands, desc.output.name))

    def window(self, node: ast.AST) -> Window:
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "window"
                and node.args and isinstance(node.args[0], ast.Subscript) and not node.keywords):
            raise self.error(node, "an operand is window(BUF[base indices], (steps of operand dim 0), ...)")
        buf, base = self.subscript(node.args[0])
        steps = []
        for t in node.args[1:]:
            elts = t.elts if isinstance(t, ast.Tuple) else None
            if elts is None or not all(_is_literal(e) and type(self.literal_value(e)) is int for e in elts):
                raise self.error(t, f"each step of a window on {buf.name} is a tuple of integers, one per dimension of {buf.name}")
            steps.append(tuple(self.int_literal(e, f"a step of a window on {buf.name}") for e in elts))
        return self.at(node, Window(buf, base, tuple(steps)))

    def check_value_dtype(self, node: ast.AST, value: Expr, buf: Buffer) -> None:
        if value.dtype != buf.dtype:
            hint = f"; write a cast such as {buf.dtype}(...)" if value.dtype != BOOL else ""
            raise self.error(node, f"dtype mismatch: {buf.name} holds {buf.dtype} but the value "
                                   f"stored is {value.dtype}{hint}")

    def declare_local(self, name: ast.Name, value: ast.AST) -> None:
        """``temp = 0.0``, the first assignment to a new name, declares a scalar local: a
        one-element temporary ``temp = alloc(f32[1])`` that ``temp`` reads and writes as
        ``temp[0]``. It holds the dtype of its first value; a bare literal takes the function's
        one float (or integer) dtype, and must be cast where the function has several."""
        if name.id in _RESERVED:
            raise self.error(name, f"{name.id} is a reserved name and cannot name a variable")
        if _is_literal(value):
            literal = self.literal_value(value)
            floaty = type(literal) is float
            kinds = sorted({b.dtype for b in self.buffers.values()
                            if (ir.is_float(b.dtype) if floaty else ir.is_int(b.dtype))})
            if len(kinds) != 1:
                example = "f32(0.0)" if floaty else "i32(0)"
                raise self.error(value, f"the scalar {name.id} needs a dtype: the function has "
                                        f"{'several' if kinds else 'no'} {'float' if floaty else 'integer'} "
                                        f"buffer types, so write a cast such as {name.id} = {example}")
            dtype = kinds[0]
        else:
            dtype = self.expr(value, None).dtype
            if dtype == BOOL:
                raise self.error(value, f"the scalar {name.id} would hold a condition; scalars hold numbers")
        buf = self.at(name, Buffer(name.id, dtype, (1,)))
        self.declare_buffer(name, buf)
        self.allocs.append(buf)
        self.locals.add(name.id)

    def target(self, node: ast.AST) -> tuple[Buffer, tuple[Expr, ...]]:
        if isinstance(node, ast.Name) and node.id in self.locals:
            return self.buffers[node.id], (Const(0, INDEX),)
        if isinstance(node, ast.Name):
            if node.id in self.buffers:
                raise self.error(node, f"assign to an element of {node.id}, e.g. {node.id}[i] = ...")
            raise self.error(node, f"{node.id} is not a buffer or scalar yet: give it a value first ({node.id} = 0.0)")
        if not isinstance(node, ast.Subscript):
            raise self.error(node, "the target of an assignment must be a buffer element such as C[i, j]")
        return self.subscript(node)

    def for_(self, node: ast.For) -> Stmt:
        if node.orelse:
            raise self.error(node.orelse[0], "for ... else is not part of the language")
        names = node.target.elts if isinstance(node.target, ast.Tuple) else [node.target]
        for n in names:
            if not isinstance(n, ast.Name):
                raise self.error(n, "loop variables must be plain names")
        it = node.iter
        if not (isinstance(it, ast.Call) and isinstance(it.func, ast.Name)
                and it.func.id in ("range", "grid")):
            raise self.error(it, "loops iterate over range(...) or grid(...)")
        if it.keywords:
            raise self.error(it, f"{it.func.id}() takes no keyword arguments")
        bounds = [self.loop_bound(a) for a in it.args]
        if it.func.id == "range":
            if len(names) != 1:
                raise self.error(node.target, "range() binds one loop variable; use grid(N, M) for several")
            if len(bounds) == 1:
                ranges = [(0, bounds[0])]
            elif len(bounds) == 2:
                ranges = [(bounds[0], bounds[1])]
            else:
                raise self.error(it, "range() takes an extent or a start and a stop (no step)")
        else:
            if len(bounds) != len(names):
                raise self.error(it, f"grid() has {len(bounds)} extents for {len(names)} loop variables")
            for a, b in zip(it.args, bounds):
                if not isinstance(b, int):
                    raise self.error(a, "grid() extents must be integer constants; bounds that depend on "
                                        "an enclosing loop are written with nested range() loops")
            ranges = [(0, b) for b in bounds]
        guards, mark = [], len(self.loop_facts)
        for n, (lo, hi) in zip(names, ranges):
            box, facts = self.loop_domain(it, n.id, lo, hi)
            self.bind_var(n)
            self.loop_boxes[n.id] = box
            self.loop_facts.extend(facts)
            guards.append((box, self.bound_guard(it, n.id, lo, hi)))
        try:
            body = self.block(node.body, node)
        finally:
            del self.loop_vars[-len(names):]
            for n in names:
                self.loop_boxes.pop(n.id, None)
            del self.loop_facts[mark:]
        for n, (box, guard) in reversed(list(zip(names, guards))):
            if guard is not None:
                body = self.at(node, If(guard, body))
            body = self.at(node, For(n.id, box[0], box[1] + 1, body))
        return body

    def loop_bound(self, node: ast.AST) -> int | Affine:
        """A loop bound: an integer constant, or an affine form of the enclosing loop
        variables (``i + 1``, ``N - i``) for a triangular or trapezoidal loop."""
        if _is_literal(node) and type(self.literal_value(node)) is int:
            return self.int_literal(node, "a loop bound")
        message = ("loop bounds must be integer constants or affine expressions of enclosing loop "
                   "variables, such as range(i + 1) or range(i, 64)")
        if isinstance(node, ast.Name) and node.id not in self.loop_vars:
            raise self.error(node, f"{message}; {node.id} is not an enclosing loop variable")
        try:
            e = self.expr(node, INDEX)
        except ScriptError as err:
            raise self.error(node, f"{message} ({err.message})") from None
        form = affine(e, casts=False) if e.dtype == INDEX else None
        if form is None or any(not isinstance(v, str) for v in form.vars):
            raise self.error(node, message)
        if not form.terms:
            return form.const
        return form

    def loop_domain(self, node: ast.AST, var: str, lo: int | Affine,
                    hi: int | Affine) -> tuple[tuple[int, int], list[Affine]]:
        """The box a loop's variable ranges over (inclusive) and the facts that cut it to the
        values the loop runs (``var - lo >= 0``, ``hi - 1 - var >= 0``), each bound taken over
        the enclosing loops' domain."""
        facts = self.bound_facts(var, lo, hi)
        ends = []
        for bound, pick in ((lo, 0), (hi, 1)):
            if isinstance(bound, int):
                ends.append(bound)
                continue
            r = polytope.span(bound, self.loop_boxes, tuple(self.loop_facts))
            if r is None:
                ends.append(None)
                break
            ends.append(r[pick])
        if None in ends or ends[1] <= ends[0]:
            raise self.error(node, f"loop {var} over range({_show_bound(lo)}, {_show_bound(hi)}) never runs")
        box = (ends[0], ends[1] - 1)
        inner = dict(self.loop_boxes)
        inner[var] = box
        if facts and polytope.span(Affine(((var, 1),)), inner, tuple(self.loop_facts) + tuple(facts)) is None:
            raise self.error(node, f"loop {var} over range({_show_bound(lo)}, {_show_bound(hi)}) never runs")
        for end in box if facts else ():  # constant bounds: verify checks them
            if not INDEX_MIN <= end <= INDEX_MAX - 1:
                raise self.error(node, f"the bounds of loop {var} must lie within the 64-bit range "
                                       f"{INDEX_MIN}..{INDEX_MAX}")
        return box, facts

    @staticmethod
    def bound_facts(var: str, lo: int | Affine, hi: int | Affine) -> list[Affine]:
        out = []
        if not isinstance(lo, int):
            out.append(Affine(((var, 1),)).plus(lo.scale(-1)))
        if not isinstance(hi, int):
            out.append(hi.plus(Affine(((var, -1),), -1)))
        return out

    def bound_guard(self, node: ast.AST, var: str, lo: int | Affine, hi: int | Affine) -> Optional[Expr]:
        """The condition a triangular loop's body runs under: ``var >= lo`` and ``var < hi``
        for the bounds that are not constants."""
        conds = []
        if not isinstance(lo, int):
            conds.append(self.at(node, Compare(">=", Var(var), lo.to_expr())))
        if not isinstance(hi, int):
            conds.append(self.at(node, Compare("<", Var(var), hi.to_expr())))
        out = None
        for c in conds:
            out = c if out is None else self.at(node, Logical("and", out, c))
        return out

    def int_literal(self, node: ast.AST, what: str) -> int:
        """An integer literal that is a count (shape, bound, step): it must fit ``i64``."""
        value = self.literal_value(node)
        lo, hi = ir.int_range(INDEX)
        if not lo <= value <= hi:
            raise self.error(node, f"{what} must fit {INDEX} ({lo}..{hi}); {_literal_text(value)} does not")
        return value

    def bind_var(self, n: ast.Name) -> None:
        if n.id in self.buffers:
            raise self.error(n, f"loop variable {n.id} has the name of a buffer")
        if n.id in _RESERVED:
            raise self.error(n, f"{n.id} is a reserved name and cannot name a loop variable")
        if n.id in self.loop_vars:
            raise self.error(n, f"loop variable {n.id} shadows an enclosing loop's variable")
        self.loop_vars.append(n.id)

    # -- expressions --------------------------------------------------------------

    def subscript(self, node: ast.Subscript) -> tuple[Buffer, tuple[Expr, ...]]:
        if isinstance(node.value, ast.Attribute):
            raise self.error(node.value, "attribute access is not part of the script language")
        if not isinstance(node.value, ast.Name):
            raise self.error(node.value, "only buffers can be indexed")
        name = node.value.id
        if name not in self.buffers:
            if name in self.loop_vars:
                raise self.error(node.value, f"{name} is a loop variable, not a buffer")
            raise self.error(node.value, f"unknown buffer {name}")
        buf = self.buffers[name]
        elts = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        if len(elts) != buf.ndim:
            raise self.error(node, f"{name} has {buf.ndim} dimension{'s' * (buf.ndim != 1)} but is indexed with {len(elts)}")
        return buf, tuple(self.index(e, name) for e in elts)

    def index(self, node: ast.AST, name: str) -> Expr:
        if isinstance(node, ast.Slice):
            raise self.error(node, f"slices are not part of the language: index {name} element by element")
        e = self.expr(node, INDEX)
        if e.dtype != INDEX:
            raise self.error(node, f"an index of {name} must be an integer expression of loop variables, not {e.dtype}")
        return e

    def condition(self, node: ast.AST) -> Expr:
        e = self.expr(node, None)
        if e.dtype != BOOL:
            raise self.error(node, "a condition must be a comparison, such as i < 4 or A[i] > 0.0")
        return e

    def literal_value(self, node: ast.AST):
        """The value of a literal (``_is_literal``): ``-`` signs, ``inf`` or a constant."""
        signs, inner = 0, node
        while isinstance(inner, ast.UnaryOp):
            signs, inner = signs + 1, inner.operand
        v = math.inf if isinstance(inner, ast.Name) else inner.value
        if signs and type(v) is bool:
            raise self.error(node, "negating a boolean is written not x")
        if isinstance(inner, ast.Constant) and type(v) is float and math.isinf(v):
            raise self.error(inner, "this float literal is too large for any float dtype; "
                                    "infinity is written inf")
        return -v if signs % 2 else v

    def literal(self, node: ast.AST, expected: Optional[str]) -> Const:
        value = self.literal_value(node)
        if type(value) is bool:
            return self.at(node, Const(value, BOOL))
        if type(value) is float:
            dtype = expected if expected in ir.FLOAT_DTYPES else None
            if dtype is None:
                if expected is None or expected == BOOL:
                    dtype = "f64"
                else:
                    raise self.error(node, f"the float literal {value!r} appears where {expected} is needed; write an integer or a cast")
            self.check_float_fits(node, value, dtype)
            return self.at(node, Const(value, dtype))
        dtype = expected if expected in DTYPES else INDEX
        if ir.is_int(dtype):
            lo, hi = ir.int_range(dtype)
            if not lo <= value <= hi:
                raise self.error(node, f"{_literal_text(value)} does not fit {dtype} ({lo}..{hi})")
        else:
            try:
                float(value)
            except OverflowError:
                raise self.error(node, f"{_literal_text(value)} does not fit {dtype}") from None
            self.check_float_fits(node, float(value), dtype)
        return self.at(node, Const(value, dtype))

    def check_float_fits(self, node: ast.AST, value: float, dtype: str) -> None:
        """A finite literal must stay finite in its dtype: 1e39 is no f32 (it would be inf)."""
        if math.isinf(value) or dtype == "f64":
            return
        with np.errstate(over="ignore"):
            rounded = np.array(value, ir.numpy_dtype(dtype))
        if np.isinf(rounded):
            raise self.error(node, f"{_literal_text(value)} does not fit {dtype}")

    def pair(self, a: ast.AST, b: ast.AST, expected: Optional[str]) -> tuple[Expr, Expr]:
        """Operands of one binary operation: a literal takes the dtype of the other side."""
        la, lb = _is_literal(a), _is_literal(b)
        if la and lb:
            if expected is None or expected == BOOL:
                floaty = any(type(self.literal_value(x)) is float for x in (a, b))
                expected = "f64" if floaty else INDEX
            return self.literal(a, expected), self.literal(b, expected)
        if la:
            eb = self.expr(b, expected)
            return self.literal(a, eb.dtype), eb
        ea = self.expr(a, expected)
        if lb:
            return ea, self.literal(b, ea.dtype)
        return ea, self.expr(b, expected)

    def mismatch(self, node: ast.AST, what: str, x: Expr, y: Expr) -> ScriptError:
        return self.error(node, f"dtype mismatch in {what}: {x.dtype} and {y.dtype}; "
                                f"casts are written, e.g. {x.dtype}(...)")

    def expr(self, node: ast.AST, expected: Optional[str]) -> Expr:
        if _is_literal(node):
            return self.literal(node, expected)
        if isinstance(node, ast.Name):
            if node.id in self.loop_vars:
                return self.at(node, Var(node.id))
            if node.id in self.locals:
                return self.at(node, Load(self.buffers[node.id], (Const(0, INDEX),)))
            if node.id in self.buffers:
                raise self.error(node, f"buffer {node.id} is used without an index")
            raise self.error(node, f"unknown name {node.id}")
        if isinstance(node, ast.Subscript):
            buf, idx = self.subscript(node)
            return self.at(node, Load(buf, idx))
        if isinstance(node, ast.BinOp):
            return self.binop(node, expected)
        if isinstance(node, ast.UnaryOp):
            return self.unaryop(node, expected)
        if isinstance(node, ast.Compare):
            return self.compare(node)
        if isinstance(node, ast.BoolOp):
            op = "and" if isinstance(node.op, ast.And) else "or"
            values = [self.condition(v) for v in node.values]
            out = values[0]
            for v in values[1:]:
                out = self.at(node, Logical(op, out, v))
            return out
        if isinstance(node, ast.Call):
            return self.call(node, expected)
        if isinstance(node, ast.IfExp):
            cond = self.condition(node.test)
            a, b = self.pair(node.body, node.orelse, expected)
            if a.dtype != b.dtype:
                raise self.mismatch(node, "a conditional expression", a, b)
            return self.at(node, Select(cond, a, b))
        if isinstance(node, ast.Attribute):
            raise self.error(node, "attribute access is not part of the script language")
        if isinstance(node, ast.Constant):
            raise self.error(node, f"{type(node.value).__name__} literals are not part of the language")
        raise self.error(node, f"{type(node).__name__} expressions are not part of the script language")

    def binop(self, node: ast.BinOp, expected: Optional[str]) -> Expr:
        op = _BINOPS.get(type(node.op))
        if op is None:
            raise self.error(node, f"the operator {type(node.op).__name__} is not part of the language")
        a, b = self.pair(node.left, node.right, expected)
        if a.dtype != b.dtype:
            raise self.mismatch(node, f"a {op} b", a, b)
        if a.dtype == BOOL:
            raise self.error(node, f"{op} does not apply to conditions; use and, or, not")
        if op == "/" and not ir.is_float(a.dtype):
            raise self.error(node, f"/ is float division but its operands are {a.dtype}; use // for integers")
        if op in ("//", "%") and not ir.is_int(a.dtype):
            raise self.error(node, f"{op} is integer-only but its operands are {a.dtype}")
        return self.at(node, Binary(op, a, b))

    def unaryop(self, node: ast.UnaryOp, expected: Optional[str]) -> Expr:
        if isinstance(node.op, ast.Not):
            return self.at(node, Unary("not", self.condition(node.operand)))
        if isinstance(node.op, ast.USub):
            a = self.expr(node.operand, expected)
            if a.dtype == BOOL:
                raise self.error(node, "negating a condition is written not x")
            return self.at(node, Unary("neg", a))
        raise self.error(node, f"the unary operator {type(node.op).__name__} is not part of the language")

    def compare(self, node: ast.Compare) -> Expr:
        if any(type(op) not in _CMPOPS for op in node.ops):
            raise self.error(node, "only < <= > >= == != comparisons are part of the language")
        terms = [node.left] + list(node.comparators)
        out = None
        for op, l, r in zip(node.ops, terms, terms[1:]):
            a, b = self.pair(l, r, None)
            if a.dtype != b.dtype:
                raise self.mismatch(node, "a comparison", a, b)
            c = self.at(node, Compare(_CMPOPS[type(op)], a, b))
            out = c if out is None else self.at(node, Logical("and", out, c))
        return out

    def call(self, node: ast.Call, expected: Optional[str]) -> Expr:
        if not isinstance(node.func, ast.Name):
            raise self.error(node.func, f"only the built-in functions can be called: {_FUNCTIONS_SENTENCE}")
        name = node.func.id
        if node.keywords:
            raise self.error(node, f"{name}() takes no keyword arguments")
        args = node.args

        def arity(n: int) -> None:
            if len(args) != n:
                raise self.error(node, f"{name}() takes {n} argument{'s' * (n != 1)}, not {len(args)}")

        if name in ("max", "min"):
            arity(2)
            a, b = self.pair(args[0], args[1], expected)
            if a.dtype != b.dtype:
                raise self.mismatch(node, f"{name}()", a, b)
            if a.dtype == BOOL:
                raise self.error(node, f"{name}() takes numbers, not conditions")
            return self.at(node, Binary(name, a, b))
        if name in _UNARY_FUNCS:
            arity(1)
            a = self.expr(args[0], expected)
            if name in ("exp", "sqrt") and not ir.is_float(a.dtype):
                raise self.error(node, f"{name}() takes a float, not {a.dtype}; cast first, e.g. f32(...)")
            if a.dtype == BOOL:
                raise self.error(node, f"{name}() takes a number, not a condition")
            return self.at(node, Unary(name, a))
        if name in DTYPES:
            arity(1)
            return self.at(node, Cast(name, self.expr(args[0], None)))
        if name == "select":
            arity(3)
            cond = self.condition(args[0])
            a, b = self.pair(args[1], args[2], expected)
            if a.dtype != b.dtype:
                raise self.mismatch(node, "select()", a, b)
            return self.at(node, Select(cond, a, b))
        if name in ("range", "grid"):
            raise self.error(node, f"{name}() is only used as the iterable of a for loop")
        if name == "alloc":
            raise self.error(node, "alloc() is only allowed as T = alloc(f32[...]) at the top of a function body")
        raise self.error(node, f"unknown function {name}: {_FUNCTIONS_SENTENCE}")


def _show_bound(bound: int | Affine) -> str:
    return str(bound) if isinstance(bound, int) else show_expr(bound.to_expr())


def _is_prim_func_decorator(node: ast.AST) -> bool:
    return isinstance(node, ast.Name) and node.id == "prim_func"


def _read_functions(text: str, file: str) -> Iterable[PrimFunc | ScriptError]:
    """Each function of a script, or the error that stops it; a syntax error stops the file."""
    if text.startswith("\ufeff"):  # a byte-order mark read as text: Python skips it in files
        text = text[1:]
    try:
        module = ast.parse(text, filename=file)
    except SyntaxError as e:
        if "integer string conversion" in e.msg:  # Python names the line only, and a remedy of its own
            line, col, digits = _long_number(text, e.lineno or 1)
            raise ScriptError(file, line, col, f"a literal of {digits} digits does not fit any dtype") from None
        raise ScriptError(file, e.lineno or 1, e.offset or 1, f"Python syntax error: {e.msg}") from None
    except ValueError as e:  # e.g. a NUL byte
        raise ScriptError(file, 1, 1, f"unreadable script: {e}") from None
    except (RecursionError, MemoryError):  # Python's parser ran out of stack, and says not where
        line, col = _deep_expression(text)
        raise ScriptError(file, line, col, f"this expression nests too deeply for Python's parser; "
                                           f"the limit is {MAX_EXPR_DEPTH} levels: {_DEEP_HINT}") from None
    src = _Source(text)
    seen: set[str] = set()
    for i, node in enumerate(module.body):
        try:
            func = _read_top_level(file, src, i, node, seen)
        except ScriptError as e:
            e.name = getattr(node, "name", None)
            yield e
            continue
        if func is not None:
            seen.add(func.name)
            yield func


def _read_top_level(file: str, src: _Source, i: int, node: ast.stmt, seen: set[str]) -> Optional[PrimFunc]:
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return None
    if i == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) \
            and isinstance(node.value.value, str):
        return None
    if isinstance(node, ast.FunctionDef):
        decorators = node.decorator_list
        if len(decorators) != 1 or not _is_prim_func_decorator(decorators[0]):
            at = decorators[0] if decorators else node
            raise ScriptError(file, *src.where(at),
                              f"function {node.name} must be decorated with @prim_func and nothing else")
        if node.name in seen:
            raise ScriptError(file, *src.where(node), f"function {node.name} is defined twice")
        return _FunctionParser(file, node, src).parse()
    what = "async functions" if isinstance(node, ast.AsyncFunctionDef) else "top-level code"
    raise ScriptError(file, *src.where(node),
                      f"{what} is not part of the script language: a file holds imports, "
                      "docstrings and @prim_func functions")


def parse_all(text: str, file: str = "<script>") -> dict[str, PrimFunc]:
    """Every ``@prim_func`` of a script text, by name, in order; the first error raises."""
    funcs: dict[str, PrimFunc] = {}
    for item in _read_functions(text, file):
        if isinstance(item, ScriptError):
            raise item
        funcs[item.name] = item
    return funcs


def _read_text(path: str) -> str:
    """A script file's text, decoded as Python decodes a source file: UTF-8 unless a
    byte-order mark or a coding declaration (PEP 263) says otherwise."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ScriptError(path, 1, 1, f"cannot read the script: {e.strerror or e}") from None
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
    except SyntaxError as e:  # an unknown encoding, or one that contradicts the mark
        raise ScriptError(path, e.lineno or 1, 1, f"cannot read the script: {e.msg}") from None
    try:
        return data.decode(encoding)  # "utf-8-sig" when there is a mark: it drops it
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise ScriptError(path, line, 1, f"cannot read the script: it is not valid {encoding}: "
                                         f"{e.reason} (byte {e.start})") from None


_NO_FUNCTION = "no @prim_func function in this file"


def parse_file_lenient(path) -> tuple[dict[str, PrimFunc], list[ScriptError]]:
    """Every function of a script file that reads cleanly, and an error for each that does not.

    One bad function does not hide the others; an unreadable file or a Python syntax
    error gives no functions and one error, and so does a file with no function at all
    (a script holds at least one: an empty one is most likely the wrong file).
    """
    path = str(path)
    funcs: dict[str, PrimFunc] = {}
    errors: list[ScriptError] = []
    try:
        for item in _read_functions(_read_text(path), path):
            if isinstance(item, ScriptError):
                errors.append(item)
            else:
                funcs[item.name] = item
    except ScriptError as e:
        errors.append(e)
    if not funcs and not errors:
        errors.append(ScriptError(path, 1, 1, _NO_FUNCTION))
    return funcs, errors


def parse(text: str, file: str = "<script>") -> PrimFunc:
    """The one ``@prim_func`` of a script text."""
    funcs = parse_all(text, file)
    if len(funcs) != 1:
        raise ScriptError(file, 1, 1, f"expected exactly one @prim_func function, found {len(funcs)}")
    return next(iter(funcs.values()))


def parse_file(path) -> dict[str, PrimFunc]:
    """Every ``@prim_func`` of a script file, by name; a file without one is an error."""
    path = str(path)
    funcs = parse_all(_read_text(path), path)
    if not funcs:
        raise ScriptError(path, 1, 1, _NO_FUNCTION)
    return funcs
