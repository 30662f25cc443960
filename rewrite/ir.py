"""Loop IR: frozen, slotted dataclasses with structural equality and hashing.

Data, and the walks and folds over it that every pass shares. Parsing and printing live in
``script.py``, meaning in ``interp.py``, well-formedness in ``verify.py``.

Typing: every expression has a ``dtype``. Loop variables are ``i64``.
Comparisons and ``and``/``or``/``not`` give ``bool``. Binary arithmetic needs both
operands of one dtype (casts are written, never implied).

Meaning (the interpreter defines it; the compiled code must agree):

- integers are fixed width and wrap around (two's complement) in ``+ - *``, unary
  ``-`` and ``abs`` (``abs`` of the minimum value is the minimum value);
- ``//`` and ``%`` are integer-only floor division and modulo (Python's meaning,
  the remainder takes the divisor's sign); a zero divisor gives 0 for both, and
  ``MIN // -1`` wraps to ``MIN``;
- ``/``, ``exp`` and ``sqrt`` are float-only, IEEE; ``max``/``min`` on floats
  propagate NaN; every f16 operation rounds to f16;
- casts: int to int wraps (sign- or zero-extends by the source's signedness),
  to float rounds to nearest, float to int truncates toward zero and saturates
  to the target's range with NaN giving 0, ``bool`` to a number gives 0 or 1;
- ``X[i] += v`` is ``X[i] = X[i] + v`` in ``X``'s dtype; ``select`` evaluates
  both arms (they have no effects); every access is in bounds (checked statically).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Sequence, TypeVar, Union

if TYPE_CHECKING:  # a call holds its descriptor; the descriptor module builds on this one
    from .descriptor import Descriptor

# ---------------------------------------------------------------------------
# depth

# The deepest expression (root to deepest leaf, in nodes) the script parser accepts. Passes
# walk expressions recursively, about four Python frames per level through parse, tensorize,
# compile and check, so Python's default limit of 1,000 frames would not do: it is raised once,
# here, for every process that imports the IR (the saturation worker too), with room for
# rewrites that deepen an expression. Not further: some walks (hashing a frozen dataclass) also
# use about 0.5 KB of C stack per level, and 10,000 levels stay well inside the usual 8 MB.
MAX_EXPR_DEPTH = 1000
_RECURSION_LIMIT = 10 * MAX_EXPR_DEPTH
if sys.getrecursionlimit() < _RECURSION_LIMIT:
    sys.setrecursionlimit(_RECURSION_LIMIT)


# ---------------------------------------------------------------------------
# dtypes

FLOAT_DTYPES = ("f16", "f32", "f64")
INT_DTYPES = ("i8", "u8", "i16", "i32", "i64")
DTYPES = FLOAT_DTYPES + INT_DTYPES
BOOL = "bool"
INDEX = "i64"  # the dtype of loop variables and index arithmetic

_BITS = {"f16": 16, "f32": 32, "f64": 64, "i8": 8, "u8": 8, "i16": 16, "i32": 32, "i64": 64, BOOL: 1}
_NUMPY = {"f16": "float16", "f32": "float32", "f64": "float64", "i8": "int8", "u8": "uint8",
          "i16": "int16", "i32": "int32", "i64": "int64", BOOL: "bool"}


def is_float(dtype: str) -> bool:
    return dtype in FLOAT_DTYPES


def is_int(dtype: str) -> bool:
    return dtype in INT_DTYPES


def is_signed(dtype: str) -> bool:
    return dtype in FLOAT_DTYPES or (dtype in INT_DTYPES and not dtype.startswith("u"))


def bits(dtype: str) -> int:
    return _BITS[dtype]


def numpy_dtype(dtype: str) -> str:
    """Name of the numpy dtype that holds ``dtype`` (``"f32"`` -> ``"float32"``)."""
    return _NUMPY[dtype]


def int_range(dtype: str) -> tuple[int, int]:
    """The smallest and largest value of an integer dtype (``"u8"`` -> ``(0, 255)``)."""
    n = _BITS[dtype]
    if is_signed(dtype):
        return -(1 << (n - 1)), (1 << (n - 1)) - 1
    return 0, (1 << n) - 1


def itemsize(dtype: str) -> int:
    return max(1, _BITS[dtype] // 8)


# ---------------------------------------------------------------------------
# buffers


@dataclass(frozen=True, slots=True)
class Buffer:
    """A named n-d array with a static shape, e.g. ``A: f32[64, 64]``."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.size * itemsize(self.dtype)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def strides(self) -> tuple[int, ...]:
        """Row-major element strides: ``(K, 1)`` for ``f32[M, K]``."""
        out, n = [], 1
        for d in reversed(self.shape):
            out.append(n)
            n *= d
        return tuple(reversed(out))

    def offset(self, step: tuple[int, ...]) -> int:
        """Elements between two accesses whose indices differ by ``step`` (one per dim)."""
        return sum(c * s for c, s in zip(step, self.strides))


# ---------------------------------------------------------------------------
# expressions

BINARY_OPS = ("+", "-", "*", "/", "//", "%", "max", "min")
UNARY_OPS = ("neg", "abs", "exp", "sqrt", "not")
COMPARE_OPS = ("<", "<=", ">", ">=", "==", "!=")
LOGICAL_OPS = ("and", "or")


class _OperandDtype:
    """Base of the expressions whose dtype is that of their operand ``a``."""

    __slots__ = ()

    @property
    def dtype(self) -> str:
        return self.a.dtype


class _Condition:
    """Base of the expressions whose value is a ``bool``."""

    __slots__ = ()

    @property
    def dtype(self) -> str:
        return BOOL


@dataclass(frozen=True, slots=True)
class Var:
    """A loop variable; its value is an ``i64``."""

    name: str

    @property
    def dtype(self) -> str:
        return INDEX


@dataclass(frozen=True, slots=True)
class Const:
    """A literal of a given dtype. The value is normalised to ``float``, ``int`` or ``bool``."""

    value: Union[int, float, bool]
    dtype: str

    def __post_init__(self) -> None:
        if self.dtype in FLOAT_DTYPES:
            object.__setattr__(self, "value", float(self.value))
        elif self.dtype == BOOL:
            object.__setattr__(self, "value", bool(self.value))
        else:
            object.__setattr__(self, "value", int(self.value))


@dataclass(frozen=True, slots=True)
class Load:
    buffer: Buffer
    indices: tuple["Expr", ...]

    @property
    def dtype(self) -> str:
        return self.buffer.dtype


@dataclass(frozen=True, slots=True)
class _Infix:
    """``a op b``: the fields of ``Binary``, ``Compare`` and ``Logical``."""

    op: str
    a: "Expr"
    b: "Expr"


@dataclass(frozen=True, slots=True)
class Binary(_Infix, _OperandDtype):
    """``a op b`` for op in ``+ - * / // % max min``; both operands share one dtype."""


@dataclass(frozen=True, slots=True)
class Unary:
    """``-a`` (op ``neg``), ``abs(a)``, ``exp(a)``, ``sqrt(a)``, ``not a``."""

    op: str
    a: "Expr"

    @property
    def dtype(self) -> str:
        return BOOL if self.op == "not" else self.a.dtype


@dataclass(frozen=True, slots=True)
class Cast:
    """``f32(a)``: value conversion (floats to ints truncate toward zero and saturate; NaN gives 0)."""

    dtype: str
    a: "Expr"


@dataclass(frozen=True, slots=True)
class Select(_OperandDtype):
    """``select(cond, a, b)``: ``a`` where ``cond`` holds, else ``b``."""

    cond: "Expr"
    a: "Expr"
    b: "Expr"


@dataclass(frozen=True, slots=True)
class Compare(_Infix, _Condition):
    """``a op b`` for op in ``< <= > >= == !=``; both operands share one dtype."""


@dataclass(frozen=True, slots=True)
class Logical(_Infix, _Condition):
    """``a and b``, ``a or b``: both operands are conditions."""


Expr = Union[Var, Const, Load, Binary, Unary, Cast, Select, Compare, Logical]
EXPR_TYPES = (Var, Const, Load, Binary, Unary, Cast, Select, Compare, Logical)


# ---------------------------------------------------------------------------
# statements


@dataclass(frozen=True, slots=True)
class Store:
    """``buffer[indices] = value``."""

    buffer: Buffer
    indices: tuple[Expr, ...]
    value: Expr


@dataclass(frozen=True, slots=True)
class Accumulate:
    """``buffer[indices] += value``."""

    buffer: Buffer
    indices: tuple[Expr, ...]
    value: Expr


@dataclass(frozen=True, slots=True)
class For:
    """``for var in range(start, stop): body`` with constant bounds."""

    var: str
    start: int
    stop: int
    body: "Stmt"

    @property
    def extent(self) -> int:
        return max(0, self.stop - self.start)


@dataclass(frozen=True, slots=True)
class Seq:
    """Statements in order. Canonical form: at least two, none of them a ``Seq``."""

    stmts: tuple["Stmt", ...]


@dataclass(frozen=True, slots=True)
class If:
    cond: Expr
    then: "Stmt"
    orelse: "Stmt | None" = None


@dataclass(frozen=True, slots=True)
class Window:
    """A strided view of a buffer handed to an intrinsic as one operand.

    Element ``(o0, o1, ...)`` of the operand is ``buffer[base + o0*steps[0] + o1*steps[1] + ...]``:
    ``base`` is an index per buffer dimension (affine in loop variables), ``steps`` holds, per
    operand dimension, a constant step per buffer dimension. A transposed operand is just
    other steps. The operand's extents come from the intrinsic's declaration.
    """

    buffer: Buffer
    base: tuple[Expr, ...]
    steps: tuple[tuple[int, ...], ...]

    @property
    def strides(self) -> tuple[int, ...]:
        """Element stride of each operand dimension through the row-major buffer."""
        return tuple(self.buffer.offset(st) for st in self.steps)


@dataclass(frozen=True, slots=True)
class Call:
    """One invocation of an intrinsic: ``call("x86.fma.f32x8", c=window(...), ...)``.

    ``intrinsic`` is the descriptor itself (``descriptor.Descriptor``: name, semantics,
    operands, layout needs, cost, emitter), resolved once by the parser against the library
    in force. ``operands`` follow the intrinsic's parameter order; ``output`` names the
    operand the intrinsic accumulates into. Its meaning is the intrinsic's semantics run on
    the windows.
    """

    intrinsic: Descriptor
    operands: tuple[tuple[str, Window], ...]
    output: str

    def window(self, name: str) -> Window:
        for n, w in self.operands:
            if n == name:
                return w
        raise KeyError(name)


Stmt = Union[Store, Accumulate, For, Seq, If, Call]
STMT_TYPES = (Store, Accumulate, For, Seq, If, Call)


def seq(*stmts: Stmt) -> Stmt:
    """Build a canonical sequence: nested ``Seq`` flattened, a single statement unwrapped."""
    flat: list[Stmt] = []
    for s in stmts:
        if isinstance(s, Seq):
            flat.extend(s.stmts)
        else:
            flat.append(s)
    if not flat:
        raise ValueError("an empty statement sequence has no IR form")
    return flat[0] if len(flat) == 1 else Seq(tuple(flat))


def band(s: Stmt) -> tuple[list["For"], Stmt]:
    """The loops perfectly nested at the top of ``s``, outermost first, and what they hold."""
    loops = []
    while isinstance(s, For):
        loops.append(s)
        s = s.body
    return loops, s


def wrap(loops: Sequence["For"], body: Stmt) -> Stmt:
    """``body`` inside loops like ``loops`` (outermost first): the inverse of ``band``."""
    for lp in reversed(loops):
        body = For(lp.var, lp.start, lp.stop, body)
    return body


def stmts_of(s: Stmt) -> tuple[Stmt, ...]:
    """The statements of a body, whether it is a ``Seq`` or a single statement."""
    return s.stmts if isinstance(s, Seq) else (s,)


# ---------------------------------------------------------------------------
# functions


@dataclass(frozen=True, slots=True)
class PrimFunc:
    """A function over buffers. Parameters it writes are its outputs; the rest are inputs."""

    name: str
    params: tuple[Buffer, ...]
    body: Stmt
    allocs: tuple[Buffer, ...] = ()
    doc: str = field(default="", compare=False)
    # Where the parser read each statement: ``(statement, file, line, col)``. The statements
    # themselves are held, so ``locate`` can find one by identity; passes that build new
    # statements leave them unlocated. Not part of the program's meaning.
    locations: tuple = field(default=(), compare=False, repr=False)

    def locate(self, stmt: object) -> tuple[str, int, int] | None:
        """``(file, line, col)`` of a statement of this function as parsed, if known."""
        for s, file, line, col in self.locations:
            if s is stmt:
                return file, line, col
        return None

    @property
    def buffers(self) -> tuple[Buffer, ...]:
        return self.params + self.allocs

    def buffer(self, name: str) -> Buffer:
        for b in self.buffers:
            if b.name == name:
                return b
        raise KeyError(name)

    @property
    def written(self) -> frozenset[str]:
        """Names of every buffer some statement writes."""
        return written_by(self.body)

    @property
    def outputs(self) -> tuple[Buffer, ...]:
        w = self.written
        return tuple(b for b in self.params if b.name in w)

    @property
    def inputs(self) -> tuple[Buffer, ...]:
        w = self.written
        return tuple(b for b in self.params if b.name not in w)

    def script(self) -> str:
        from .printer import show

        return show(self)

    def __str__(self) -> str:
        return self.script()


# ---------------------------------------------------------------------------
# traversal


def walk_stmts(s: Stmt) -> Iterator[Stmt]:
    """Every statement in ``s``, pre-order."""
    yield s
    if isinstance(s, For):
        yield from walk_stmts(s.body)
    elif isinstance(s, Seq):
        for c in s.stmts:
            yield from walk_stmts(c)
    elif isinstance(s, If):
        yield from walk_stmts(s.then)
        if s.orelse is not None:
            yield from walk_stmts(s.orelse)


def buffers_of(s: Stmt) -> list[Buffer]:
    """Every buffer ``s`` (or a statement inside it) reads or writes, in the order met."""
    found: list[Buffer] = []
    for x in walk_stmts(s):
        if isinstance(x, Call):
            found += [w.buffer for _, w in x.operands]
        if isinstance(x, (Store, Accumulate)):
            found.append(x.buffer)
        for e in stmt_exprs(x):
            found += [ld.buffer for ld in loads_of(e)]
    return found


def mentions(s: Stmt, name: str) -> bool:
    """Whether ``s`` (or a statement inside it) reads or writes buffer ``name``."""
    return any(b.name == name for b in buffers_of(s))


def written_by(s: Stmt) -> frozenset[str]:
    """Names of the buffers ``s`` (or a statement inside it) writes."""
    out = set()
    for x in walk_stmts(s):
        if isinstance(x, (Store, Accumulate)):
            out.add(x.buffer.name)
        elif isinstance(x, Call):
            out.add(x.window(x.output).buffer.name)
    return frozenset(out)


def children(e: Expr) -> tuple[Expr, ...]:
    if isinstance(e, Load):
        return e.indices
    if isinstance(e, (Binary, Compare, Logical)):
        return (e.a, e.b)
    if isinstance(e, (Unary, Cast)):
        return (e.a,)
    if isinstance(e, Select):
        return (e.cond, e.a, e.b)
    return ()


def with_children(e: Expr, kids: tuple[Expr, ...]) -> Expr:
    """``e`` with its children (in the order ``children`` gives them) replaced."""
    if isinstance(e, Load):
        return Load(e.buffer, tuple(kids))
    if isinstance(e, Binary):
        return Binary(e.op, *kids)
    if isinstance(e, Compare):
        return Compare(e.op, *kids)
    if isinstance(e, Logical):
        return Logical(e.op, *kids)
    if isinstance(e, Unary):
        return Unary(e.op, *kids)
    if isinstance(e, Cast):
        return Cast(e.dtype, *kids)
    if isinstance(e, Select):
        return Select(*kids)
    return e


def map_loads(e: Expr, fn: Callable[[Load], Expr]) -> Expr:
    """``e`` with every load ``x`` replaced by ``fn(x)``."""
    if isinstance(e, Load):
        return fn(e)
    kids = children(e)
    if not kids:
        return e
    return with_children(e, tuple(map_loads(c, fn) for c in kids))


def substitute(e: Expr, values: dict[str, Expr]) -> Expr:
    """``e`` with each loop variable named in ``values`` replaced by its expression."""
    if isinstance(e, Var):
        return values.get(e.name, e)
    kids = children(e)
    if not kids:
        return e
    return with_children(e, tuple(substitute(c, values) for c in kids))


def map_stmt(s: Stmt, leaf: Callable[[Stmt], Stmt],
             cond: Callable[[Expr], Expr] = lambda e: e) -> Stmt:
    """``s`` rebuilt with each store, accumulate and call replaced by ``leaf(it)`` and each
    ``if``'s condition by ``cond(it)``; loops and sequences kept as they are."""
    if isinstance(s, For):
        return For(s.var, s.start, s.stop, map_stmt(s.body, leaf, cond))
    if isinstance(s, Seq):
        return Seq(tuple(map_stmt(c, leaf, cond) for c in s.stmts))
    if isinstance(s, If):
        return If(cond(s.cond), map_stmt(s.then, leaf, cond),
                  None if s.orelse is None else map_stmt(s.orelse, leaf, cond))
    return leaf(s)


def substitute_stmt(s: Stmt, values: dict[str, Expr]) -> Stmt:
    """``s`` with each loop variable named in ``values`` replaced by its expression (a loop
    that binds the same name hides it from its body)."""
    if isinstance(s, (Store, Accumulate)):
        return type(s)(s.buffer, tuple(substitute(i, values) for i in s.indices),
                       substitute(s.value, values))
    if isinstance(s, For):
        inner = {k: v for k, v in values.items() if k != s.var}
        return For(s.var, s.start, s.stop, substitute_stmt(s.body, inner))
    if isinstance(s, Seq):
        return Seq(tuple(substitute_stmt(c, values) for c in s.stmts))
    if isinstance(s, If):
        return If(substitute(s.cond, values), substitute_stmt(s.then, values),
                  None if s.orelse is None else substitute_stmt(s.orelse, values))
    return Call(s.intrinsic, tuple((n, Window(w.buffer, tuple(substitute(e, values) for e in w.base),
                                              w.steps)) for n, w in s.operands), s.output)


def walk_expr(e: Expr) -> Iterator[Expr]:
    """Every sub-expression of ``e``, pre-order (indices of loads included)."""
    yield e
    for c in children(e):
        yield from walk_expr(c)


def stmt_exprs(s: Stmt) -> tuple[Expr, ...]:
    """The expressions a statement holds directly (not those of nested statements)."""
    if isinstance(s, (Store, Accumulate)):
        return s.indices + (s.value,)
    if isinstance(s, If):
        return (s.cond,)
    if isinstance(s, Call):
        return tuple(e for _, w in s.operands for e in w.base)
    return ()


def loads_of(e: Expr) -> Iterator[Load]:
    for x in walk_expr(e):
        if isinstance(x, Load):
            yield x


def var_names(e: Expr) -> set[str]:
    """The names of the loop variables ``e`` reads (in its indices too)."""
    return {x.name for x in walk_expr(e) if isinstance(x, Var)}


def product(factors: Iterable[Expr]) -> Expr:
    """``((f0 * f1) * f2) ...``: ``factors`` (at least one) multiplied in order, grouped from
    the left."""
    first, *rest = factors
    for f in rest:
        first = Binary("*", first, f)
    return first


# ---------------------------------------------------------------------------
# folds over statements

T = TypeVar("T")


def _times_trips(loop: For, value):
    return loop.extent * value


def fold_stmt(s: Stmt, leaf: Callable[[Stmt], T], join: Callable[[Iterator[T]], T] = sum,
              loop: Callable[[For, T], T] = _times_trips,
              guard: Callable[[If, Iterator[T]], T] | None = None) -> T:
    """``s`` folded bottom-up: ``leaf(x)`` at each store, ``+=`` and call, ``loop(f, v)`` at a
    loop whose body folds to ``v``, ``join`` of a sequence's statements and of an ``if``'s arms,
    or ``guard(s, arms)`` at an ``if`` when given. ``join`` and ``guard`` get an iterator that
    folds each part as it is read, so a guard that ignores the arms never folds them. The
    defaults add the leaves' values up, each times the trip counts of the loops around it::

        fold_stmt(s, lambda x: 1)   # the stores, += and calls a run of s executes
    """
    if isinstance(s, For):
        return loop(s, fold_stmt(s.body, leaf, join, loop, guard))
    if isinstance(s, Seq):
        return join(fold_stmt(c, leaf, join, loop, guard) for c in s.stmts)
    if isinstance(s, If):
        arms = (fold_stmt(b, leaf, join, loop, guard) for b in (s.then, s.orelse) if b is not None)
        return join(arms) if guard is None else guard(s, arms)
    return leaf(s)


def walk_in_loops(s: Stmt, loops: tuple[For, ...] = ()) -> Iterator[tuple[Stmt, tuple[For, ...]]]:
    """Every statement in ``s`` that is not a loop or a sequence (stores, ``+=``, calls, and
    each ``if`` before what its arms hold), in program order, with the loops around it,
    outermost first (``loops`` are those around ``s``)."""
    if isinstance(s, For):
        yield from walk_in_loops(s.body, loops + (s,))
    elif isinstance(s, Seq):
        for c in s.stmts:
            yield from walk_in_loops(c, loops)
    else:
        yield s, loops
        if isinstance(s, If):
            yield from walk_in_loops(s.then, loops)
            if s.orelse is not None:
                yield from walk_in_loops(s.orelse, loops)
