"""The program-level e-graph: the matrix values a program computes, as egglog terms, the rules
that equate them, and one extraction of the cheapest program.

A stretch of a program made of matrix products (``rules/matmul.py`` finds it) is a set of
accumulations, each a term over the public constructors below::

    T = 0; T += A @ B; D += T @ C        ->  Program.acc("D", (A @ B) @ C)
    C += A @ B1; C += A @ B2             ->  Program.acc("C", A @ B1 + A @ B2)

Rules (``rule``: a name, its soundness argument, and a function giving the two sides) equate
terms: ``(a @ b) @ c == a @ (b @ c)``, ``a @ b + a @ c == a @ (b + c)``, ... Built-in rules are
registered by ``rules/matmul.py``; users add theirs in a Python module loaded with
``--rules-file`` (``load_file``), written against the same constructors::

    from rewrite.program import Matrix, rule

    @rule("factor-left", why="A@B + A@C = A@(B + C) elementwise: a sum regrouped")
    def factor_left(a: Matrix, b: Matrix, c: Matrix):
        return a @ b + a @ c, a @ (b + c)

Rules may also be conditioned on facts the dependence analysis gives egglog as relations:
``temporary(T)`` says the lifted stretch alone touches the buffer ``T``, zero before its one
accumulation and read only after it, and the rule ``inline-temporary`` (``INLINE``) then
equates ``T += v; rest`` with ``rest`` reading ``v`` in place of ``T`` (an explicit
substitution, ``put``, pushed down to the inputs and never extracted itself).

The same function builds the egglog rewrite (called with pattern variables) and the random
instances ``tensorize rules --check`` compares (called with numpy matrices,
``rewrite/fuzz/rules.py``). Saturation runs under a budget; then every product shape the
graph holds is priced once by the caller (the intrinsic matcher's plan of that product), the
prices go into egglog as a table, a rule sets each product's cost from it (``set_cost``), and
the whole program is extracted once: no Python runs during extraction. The two halves are
requests (``Saturation``, ``Extraction``) that the caller runs where it likes: the pipeline
runs them in the saturation worker (``saturate.call``), under its hard seconds and memory cap.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from egglog import (EGraph, Expr, String, StringLike, f64, f64Like, function,
                    get_callable_args, get_callable_fn, get_literal_value, i64, i64Like, method, ne,
                    relation, rewrite, rule as egg_rule, ruleset, set_, set_cost, var)

from . import plugins


class Matrix(Expr):
    """A matrix value: an input (a buffer, or a block of one, read whole), a product, a sum,
    a scaled or a transposed matrix, a quadrant of a matrix of even extents, two matrices
    side by side or one above the other."""

    def __init__(self, name: StringLike, rows: i64Like, cols: i64Like) -> None: ...

    def __matmul__(self, other: Matrix) -> Matrix: ...

    def __add__(self, other: Matrix) -> Matrix: ...

    def scaled(self, factor: f64Like) -> Matrix: ...

    @property
    def T(self) -> Matrix: ...

    def block(self, i: i64Like, j: i64Like) -> Matrix:
        """Quadrant ``(i, j)`` (each 0 or 1) of a matrix whose extents are even."""

    def beside(self, other: Matrix) -> Matrix:
        """``[self other]``: equal rows, the columns of both."""

    def above(self, other: Matrix) -> Matrix:
        """``[self; other]``: equal columns, the rows of both."""

    def head_rows(self) -> Matrix:
        """Every row but the last."""

    def last_row(self) -> Matrix:
        """The last row."""

    def head_cols(self) -> Matrix:
        """Every column but the last."""

    def last_col(self) -> Matrix:
        """The last column."""

    def strassen(self, p2: Matrix, p3: Matrix, p4: Matrix, p5: Matrix, p6: Matrix,
                 p7: Matrix) -> Matrix:
        """Strassen's seven products combined into the quadrants of the product they make
        (``self`` is P1): ``[[P1 + P4 - P5 + P7, P3 + P5], [P2 + P4, P1 - P2 + P3 + P6]]``.
        One node holds the seven, so that extraction counts each product once."""

    @method(unextractable=True)
    def put(self, name: StringLike, value: Matrix) -> Matrix:
        """This matrix with the input ``name`` read as ``value`` (``inline-temporary``'s
        substitution, pushed down to the inputs by rules; never extracted itself)."""


class Program(Expr):
    """Accumulations into outputs, in order: ``Program.acc("D", v)`` is ``D += v``."""

    @classmethod
    def acc(cls, name: StringLike, value: Matrix) -> Program: ...

    def then(self, other: Program) -> Program: ...

    @method(unextractable=True)
    def put(self, name: StringLike, value: Matrix) -> Program:
        """These accumulations with the input ``name`` read as ``value``."""


# Shapes, an analysis: a term's rows and columns (a sound rule never equates two shapes; the
# first one set is kept, so that a wrong user rule cannot stop saturation)
@function(merge=lambda old, new: old)
def rows(m: Matrix) -> i64: ...


@function(merge=lambda old, new: old)
def cols(m: Matrix) -> i64: ...


_product_shape = relation("product_shape", i64, i64, i64)


@function(merge=lambda old, new: old)
def product_price(m: i64Like, k: i64Like, n: i64Like) -> i64: ...


_shapes = ruleset(name="program-shapes")


@_shapes.register
def _shape_rules(s: StringLike, r: i64, c: i64, r2: i64, c2: i64, i: i64, j: i64, a: Matrix,
                 b: Matrix, f: f64):
    yield egg_rule(Matrix(s, r, c)).then(set_(rows(Matrix(s, r, c))).to(r),
                                         set_(cols(Matrix(s, r, c))).to(c))
    yield egg_rule(a @ b, rows(a) == r, cols(b) == c).then(set_(rows(a @ b)).to(r),
                                                          set_(cols(a @ b)).to(c))
    yield egg_rule(a + b, rows(a) == r, cols(a) == c).then(set_(rows(a + b)).to(r),
                                                          set_(cols(a + b)).to(c))
    yield egg_rule(a.scaled(f), rows(a) == r, cols(a) == c).then(set_(rows(a.scaled(f))).to(r),
                                                          set_(cols(a.scaled(f))).to(c))
    yield egg_rule(a.T, rows(a) == r, cols(a) == c).then(set_(rows(a.T)).to(c),
                                                        set_(cols(a.T)).to(r))
    yield egg_rule(a.block(i, j), rows(a) == r, cols(a) == c).then(
        set_(rows(a.block(i, j))).to(r / 2), set_(cols(a.block(i, j))).to(c / 2))
    yield egg_rule(a.beside(b), rows(a) == r, cols(a) == c, cols(b) == c2).then(
        set_(rows(a.beside(b))).to(r), set_(cols(a.beside(b))).to(c + c2))
    yield egg_rule(a.above(b), rows(a) == r, cols(a) == c, rows(b) == r2).then(
        set_(rows(a.above(b))).to(r + r2), set_(cols(a.above(b))).to(c))
    yield egg_rule(a.head_rows(), rows(a) == r, cols(a) == c).then(
        set_(rows(a.head_rows())).to(r - 1), set_(cols(a.head_rows())).to(c))
    yield egg_rule(a.last_row(), rows(a) == r, cols(a) == c).then(
        set_(rows(a.last_row())).to(i64(1)), set_(cols(a.last_row())).to(c))
    yield egg_rule(a.head_cols(), rows(a) == r, cols(a) == c).then(
        set_(rows(a.head_cols())).to(r), set_(cols(a.head_cols())).to(c - 1))
    yield egg_rule(a.last_col(), rows(a) == r, cols(a) == c).then(
        set_(rows(a.last_col())).to(r), set_(cols(a.last_col())).to(i64(1)))
    p = [var(f"p{k}", Matrix) for k in range(2, 8)]
    yield egg_rule(a.strassen(*p), rows(a) == r, cols(a) == c).then(
        set_(rows(a.strassen(*p))).to(r * 2), set_(cols(a.strassen(*p))).to(c * 2))


_products = ruleset(name="program-products")


@_products.register
def _product_rules(a: Matrix, b: Matrix, m: i64, k: i64, n: i64):
    yield egg_rule(a @ b, rows(a) == m, cols(a) == k, cols(b) == n).then(_product_shape(m, k, n))


# ---------------------------------------------------------------------------
# a temporary inlined: a rule conditioned on a fact of the dependence analysis

# ``temporary(T)``: the lifted window is the only code that touches the buffer ``T``; it is
# zero-filled once, then written whole by the one accumulation into it, and read only by the
# accumulations after that one (``rules/matrices.py`` decides it, from the window's items).
temporary = relation("temporary", String)

INLINE = "inline-temporary"
INLINE_WHY = ("where temporary(T) holds, T is zero before its one accumulation T += v and read "
              "only after it, so every later read of T is v's value; nothing outside reads T, "
              "so leaving T unwritten and reading v in its place computes the same outputs")

_inline = ruleset(name="program-inline")


@_inline.register
def _inline_rules(t: String, s: String, r: i64, c: i64, i: i64, j: i64, f: f64, v: Matrix,
                  a: Matrix, b: Matrix, p: Program, q: Program):
    yield rewrite(Program.acc(t, v).then(p)).to(p.put(t, v), temporary(t))
    # the substitution pushed down to the inputs
    yield rewrite(p.then(q).put(t, v)).to(p.put(t, v).then(q.put(t, v)))
    yield rewrite(Program.acc(s, a).put(t, v)).to(Program.acc(s, a.put(t, v)))
    yield rewrite(Matrix(t, r, c).put(t, v)).to(v)
    yield rewrite(Matrix(s, r, c).put(t, v)).to(Matrix(s, r, c), ne(s).to(t))
    yield rewrite((a @ b).put(t, v)).to(a.put(t, v) @ b.put(t, v))
    yield rewrite((a + b).put(t, v)).to(a.put(t, v) + b.put(t, v))
    yield rewrite(a.scaled(f).put(t, v)).to(a.put(t, v).scaled(f))
    yield rewrite(a.T.put(t, v)).to(a.put(t, v).T)
    yield rewrite(a.block(i, j).put(t, v)).to(a.put(t, v).block(i, j))
    yield rewrite(a.beside(b).put(t, v)).to(a.put(t, v).beside(b.put(t, v)))
    yield rewrite(a.above(b).put(t, v)).to(a.put(t, v).above(b.put(t, v)))
    yield rewrite(a.head_rows().put(t, v)).to(a.put(t, v).head_rows())
    yield rewrite(a.last_row().put(t, v)).to(a.put(t, v).last_row())
    yield rewrite(a.head_cols().put(t, v)).to(a.put(t, v).head_cols())
    yield rewrite(a.last_col().put(t, v)).to(a.put(t, v).last_col())
    p_ = [var(f"p{k}", Matrix) for k in range(2, 8)]
    yield rewrite(a.strassen(*p_).put(t, v)).to(a.put(t, v).strassen(*[x.put(t, v) for x in p_]))


def inlines_to(accumulations: Sequence[tuple[str, object]], temporaries: Sequence[str],
               expected: Sequence[tuple[str, object]]) -> bool:
    """Whether ``inline-temporary`` alone, given ``temporary(t)`` for each of ``temporaries``,
    makes ``accumulations`` equal to ``expected`` in the e-graph (``tensorize rules --check``
    samples it so)."""
    egraph = EGraph()
    root = egraph.let("program", _chained(accumulations))
    for t in temporaries:
        egraph.register(temporary(t))
    egraph.run(_shapes.saturate())
    egraph.run(_inline.saturate())
    return egraph.check_bool(root == _chained(expected))


def _chained(accumulations: Sequence[tuple[str, object]]) -> Program:
    """``a.then(b.then(c))``: each accumulation first, then the rest."""
    root = None
    for out, node in reversed(accumulations):
        term = Program.acc(out, build(node))
        root = term if root is None else term.then(root)
    return root


# Price units: a scalar operation costs PRICE_SCALE (egglog's costs are integers)
PRICE_SCALE = 16
# Cost, in scalar operations, of one element of a block addition beyond the one operation and
# write its pass is planned at: the second operand read. The lowered program is charged it
# (``rules/matrices.py``, ``rules/strassen.py``: an alternative's ``extra_cost``), and so is
# every materialised sum here, so that the e-graph does not prefer a rewrite by additions
# that the plan of the lowered program then charges twice over.
ADDITION_TRAFFIC = 1.0
# An element of a materialised sum, in PRICE_SCALE units: the pass and the second read.
ADDITION_PRICE = round((1 + ADDITION_TRAFFIC) * PRICE_SCALE)
# A Strassen level's additions into its four quadrants: the five products read twice (P1 to
# P5) are made into temporaries and each added into two quadrants, ten quadrant passes; P6
# and P7 are accumulated straight into theirs.
STRASSEN_QUADRANT_PASSES = 10

_costs = ruleset(name="program-costs")


@_costs.register
def _cost_rules(s: StringLike, a: Matrix, b: Matrix, m: i64, k: i64, n: i64, p: i64, f: f64,
                i: i64, j: i64):
    # a product: what the matcher's plan of that shape costs (``product_price``, set per shape)
    yield egg_rule(a @ b, rows(a) == m, cols(a) == k, cols(b) == n,
                   product_price(m, k, n) == p).then(set_cost(a @ b, p))
    # a sum is materialised: one pass over its elements (at the top of an accumulation it is
    # two accumulations and costs nothing more: charged alike to every candidate)
    yield egg_rule(a + b, rows(a) == m, cols(a) == n).then(set_cost(a + b, m * n * ADDITION_PRICE))
    # a transposed matrix is read the other way round, and a scale goes into the store of the
    # product that makes it: both free (one cost per e-node, so the scaled sum that the
    # lowering materialises is undercharged; the pipeline prices the lowered program anyway)
    yield egg_rule(a.scaled(f)).then(set_cost(a.scaled(f), 1))
    yield egg_rule(a.T).then(set_cost(a.T, 1))
    # a quadrant is read in place; blocks side by side or stacked are written in place
    yield egg_rule(a.block(i, j)).then(set_cost(a.block(i, j), 1))
    yield egg_rule(a.beside(b)).then(set_cost(a.beside(b), 1))
    yield egg_rule(a.above(b)).then(set_cost(a.above(b), 1))
    # so are the rows or columns of a matrix
    for part in (a.head_rows(), a.last_row(), a.head_cols(), a.last_col()):
        yield egg_rule(part).then(set_cost(part, 1))
    # the seven products into four quadrants: the temporaries of P1..P5 each added into two
    p = [var(f"p{k}", Matrix) for k in range(2, 8)]
    yield egg_rule(a.strassen(*p), rows(a) == m, cols(a) == n).then(
        set_cost(a.strassen(*p), m * n * STRASSEN_QUADRANT_PASSES * ADDITION_PRICE))


# ---------------------------------------------------------------------------
# rules


class RuleError(ValueError):
    """A rule that cannot be used, or a rules file that cannot be loaded: one line, located."""


@dataclass(frozen=True)
class ProgramRule:
    """``sides(*params)`` gives the two sides of an equality, ``lhs -> rhs``. ``params``: each
    parameter's name and kind (``"matrix"`` or ``"scalar"``). ``why``: its soundness argument.
    ``origin``: ``"built-in"`` or the file that registered it."""

    name: str
    why: str
    sides: Callable
    params: tuple[tuple[str, str], ...]
    origin: str
    even: tuple[str, ...] = ()  # matrices whose extents must be even (quadrants are taken)
    at_least: int = 1  # and at least this
    odd: tuple[tuple[str, str], ...] = ()  # (matrix, "rows" or "cols") odd, and at least this
    also_even: tuple[tuple[str, str], ...] = ()  # (matrix, "rows" or "cols") even, any size

    def rewrite(self, at_least: Optional[int] = None):
        """The egglog rewrite ``lhs -> rhs`` over pattern variables, under the rule's
        conditions (``at_least`` overrides the rule's own minimum extent)."""
        args = [var(f"{self.name}:{p}", Matrix if kind == "matrix" else f64) for p, kind in self.params]
        low = self.at_least if at_least is None else at_least
        try:
            lhs, rhs = self.sides(*args)
            conditions = []
            names = [p for p, _ in self.params]
            for name in self.even:
                m = args[names.index(name)]
                for extent in (rows(m), cols(m)):
                    conditions += [extent % 2 == i64(0), extent >= i64(max(2, low))]
            for name, which in self.odd:
                m = args[names.index(name)]
                extent = rows(m) if which == "rows" else cols(m)
                conditions += [extent % 2 == i64(1), extent >= i64(max(3, low))]
            for name, which in self.also_even:
                m = args[names.index(name)]
                conditions.append((rows(m) if which == "rows" else cols(m)) % 2 == i64(0))
            return rewrite(lhs).to(rhs, *conditions)
        except Exception as e:  # noqa: BLE001 -- a user's rule: say which one, and why
            raise RuleError(f"{self.where}: rule {self.name}: its sides are no terms over "
                            f"Matrix: {e} ({type(e).__name__})") from None

    def __reduce__(self):
        # by name and where it is registered: a worker process finds it there (the function
        # of a rules file lives in a module only ``load_file`` can import)
        return _registered_rule, (self.name, self.origin, self.sides.__module__)

    @property
    def where(self) -> str:
        """Where the rule is written: its file and line (``built-in`` for the built-in ones)."""
        if self.origin == "built-in":
            return self.origin
        try:
            return f"{self.origin}:{inspect.getsourcelines(self.sides)[1]}"
        except (OSError, TypeError):
            return self.origin


_registry: dict[str, ProgramRule] = {}
_loading: list[str] = []  # the rules file being loaded, if any


def rule(name: str, why: str, even: Sequence[str] = (), at_least: int = 1,
         odd: Sequence[tuple[str, str]] = (), also_even: Sequence[tuple[str, str]] = ()) -> Callable:
    """Register the decorated function as a rule named ``name``, sound for the reason ``why``:
    it takes matrices (parameters annotated ``Matrix``) and scalars (``float``) and returns
    the two sides ``(lhs, rhs)``, written with ``@``, ``+``, ``.scaled(s)``, ``.T``, and
    ``.block(i, j)``, ``.beside(m)``, ``.above(m)``, ``.strassen(...)``, ``.head_rows()``,
    ``.last_row()``, ``.head_cols()``, ``.last_col()``. The rule applies only where the
    matrices named in ``even`` have even extents of at least ``at_least``, where each
    ``(matrix, "rows" or "cols")`` in ``odd`` is an odd extent of at least ``at_least``, and
    each in ``also_even`` an even one."""
    def register(fn: Callable) -> Callable:
        origin = _loading[-1] if _loading else "built-in"
        if not re.fullmatch(r"[a-z][a-z0-9-]*", name or ""):
            raise RuleError(f"rule name {name!r}: lower-case words joined by '-' expected "
                            f"(assoc-left, factor-right)")
        if not (why or "").strip():
            raise RuleError(f"rule {name}: say why it is sound (why=...)")
        if name in _registry:
            raise RuleError(f"rule {name} is already registered ({_registry[name].origin})")
        params = []
        for p in inspect.signature(fn).parameters.values():
            kind = {"Matrix": "matrix", "float": "scalar"}.get(
                p.annotation if isinstance(p.annotation, str) else getattr(p.annotation, "__name__", ""))
            if kind is None:
                raise RuleError(f"rule {name}: parameter {p.name} must be annotated Matrix or float")
            params.append((p.name, kind))
        extents = list(odd) + list(also_even)
        unknown = [e for e in list(even) + [m for m, _ in extents] if (e, "matrix") not in params]
        if unknown:
            raise RuleError(f"rule {name}: even=, odd= or also_even= names {unknown}, no matrix "
                            f"parameter")
        if any(which not in ("rows", "cols") for _, which in extents):
            raise RuleError(f"rule {name}: odd= and also_even= take (matrix, 'rows' or 'cols') "
                            f"pairs")
        _registry[name] = ProgramRule(name, why.strip(), fn, tuple(params), origin, tuple(even),
                                      at_least, tuple(tuple(x) for x in odd),
                                      tuple(tuple(x) for x in also_even))
        return fn

    return register


def registered(origin: Optional[str] = None) -> list[ProgramRule]:
    """The rules registered so far (built-in ones once ``rules/matrices.py`` is imported), in
    order; those of one ``origin`` only when given."""
    return [r for r in _registry.values() if origin is None or r.origin == origin]


def _registered_rule(name: str, origin: str, module: str) -> ProgramRule:
    """The rule registered as ``name`` by ``origin``: a built-in one once its ``module`` is
    imported, a user's once its file is loaded."""
    if name not in _registry:
        if origin == "built-in":
            importlib.import_module(module)
        else:
            load_file(origin)
    found = _registry.get(name)
    if found is None or found.origin != origin:
        raise RuleError(f"{origin}: no rule {name} is registered there")
    return found


_files: dict[str, list[ProgramRule]] = {}


def load_file(path) -> list[ProgramRule]:
    """Import a user's rules module (trusted plugin code, like ``--intrinsics-file``) once per
    process and return the rules it registered. What it raises becomes one ``RuleError``
    naming the file and line; a module that fails leaves no rules behind."""
    path = os.path.abspath(str(path))
    if path in _files:
        return _files[path]
    before = set(_registry)

    def undo() -> None:
        for n in set(_registry) - before:
            del _registry[n]

    def explain(e: BaseException, where: str) -> Optional[str]:
        if isinstance(e, RuleError):
            return str(e) if str(e).startswith(path) else f"{where}: {e}"
        return None

    _loading.append(path)
    try:
        plugins.load(path, "tensorize_rules", "rules", undo, explain)
        mine = [r for n, r in _registry.items() if n not in before]
        if not mine:
            raise plugins.PluginError(f"{path}: the module registers no rule (decorate "
                                      f"functions with rewrite.program.rule)")
        for r in mine:
            try:
                r.rewrite()  # its sides must be terms: said now, not in the middle of a run
                _bound(r)
            except RuleError as e:
                raise plugins.PluginError(str(e)) from None
    except plugins.PluginError as e:
        undo()
        raise RuleError(str(e)) from None
    finally:
        _loading.pop()
    _files[path] = mine
    return mine


def _bound(r: ProgramRule) -> None:
    """``r``'s left side is a term (not a bare variable) that binds every variable its right
    side uses; else ``RuleError``."""
    try:
        lhs, rhs = sketch(r)
    except Exception as e:  # noqa: BLE001 -- a user's rule
        raise RuleError(f"{r.where}: rule {r.name}: its sides are no terms over Matrix: {e} "
                        f"({type(e).__name__})") from None
    if isinstance(lhs, Input):
        raise RuleError(f"{r.where}: rule {r.name}: its left side is a bare variable, which "
                        f"would match every matrix; write the term it rewrites")
    unbound = sorted(inputs_of(rhs) - inputs_of(lhs))
    if unbound:
        raise RuleError(f"{r.where}: rule {r.name}: its right side uses {', '.join(unbound)}, "
                        f"which its left side does not bind")


# ---------------------------------------------------------------------------
# terms read back


@dataclass(frozen=True)
class Input:
    name: str
    rows: int
    cols: int


@dataclass(frozen=True)
class Op:
    """``kind``: ``"@"``, ``"+"``, ``"*"`` (``args[0]`` scaled by ``factor``), ``"T"``,
    ``"block"`` (quadrant ``at`` of ``args[0]``), ``"beside"``, ``"above"``, ``"strassen"``
    (seven products: ``Matrix.strassen``), or a part of rows or columns (``PARTS``)."""

    kind: str
    args: tuple
    factor: float = 1.0
    at: tuple = ()


# a matrix's rows or columns, by the method that takes them: its kind of ``Op``
PARTS = ("head_rows", "last_row", "head_cols", "last_col")


class Sketch:
    """A side of a rule written over nodes (``Input``, ``Op``) instead of egglog terms: what
    ``tensorize rules`` prints and ``--check`` lowers."""

    def __init__(self, node):
        self.node = node

    def __matmul__(self, other: "Sketch") -> "Sketch":
        return Sketch(Op("@", (self.node, other.node)))

    def __add__(self, other: "Sketch") -> "Sketch":
        return Sketch(Op("+", (self.node, other.node)))

    def scaled(self, factor) -> "Sketch":
        return Sketch(Op("*", (self.node,), factor if isinstance(factor, str) else float(factor)))

    @property
    def T(self) -> "Sketch":
        return Sketch(Op("T", (self.node,)))

    def block(self, i: int, j: int) -> "Sketch":
        return Sketch(Op("block", (self.node,), at=(int(i), int(j))))

    def beside(self, other: "Sketch") -> "Sketch":
        return Sketch(Op("beside", (self.node, other.node)))

    def above(self, other: "Sketch") -> "Sketch":
        return Sketch(Op("above", (self.node, other.node)))

    def head_rows(self) -> "Sketch":
        return Sketch(Op("head_rows", (self.node,)))

    def last_row(self) -> "Sketch":
        return Sketch(Op("last_row", (self.node,)))

    def head_cols(self) -> "Sketch":
        return Sketch(Op("head_cols", (self.node,)))

    def last_col(self) -> "Sketch":
        return Sketch(Op("last_col", (self.node,)))

    def strassen(self, *others: "Sketch") -> "Sketch":
        return Sketch(Op("strassen", (self.node, *(o.node for o in others))))


def sketch(r: "ProgramRule", rows: int = 1, cols: int = 1) -> tuple:
    """The two sides of ``r`` as nodes over its parameters' names (matrices ``rows x cols``,
    scalars by name)."""
    args = [Sketch(Input(n, rows, cols)) if kind == "matrix" else n for n, kind in r.params]
    lhs, rhs = r.sides(*args)
    return lhs.node, rhs.node


def inputs_of(node) -> set:
    """The names of the inputs and of the scalars a node reads."""
    if isinstance(node, Input):
        return {node.name}
    out = {node.factor} if node.kind == "*" and isinstance(node.factor, str) else set()
    return out.union(*(inputs_of(a) for a in node.args))


def shape(node) -> tuple[int, int]:
    """``node``'s rows and columns; ``ValueError`` saying where when its parts do not fit (a
    product of matrices that do not chain, a quadrant of an odd extent, ...)."""
    if isinstance(node, Input):
        return node.rows, node.cols
    shapes = [shape(a) for a in node.args]
    if node.kind == "@":
        if shapes[0][1] != shapes[1][0]:
            raise ValueError(f"{text(node)} multiplies a {shapes[0]} by a {shapes[1]} matrix")
        return shapes[0][0], shapes[1][1]
    if node.kind == "+":
        if shapes[0] != shapes[1]:
            raise ValueError(f"{text(node)} adds a {shapes[0]} and a {shapes[1]} matrix")
        return shapes[0]
    if node.kind == "T":
        return shapes[0][1], shapes[0][0]
    if node.kind == "block":
        if shapes[0][0] % 2 or shapes[0][1] % 2:
            raise ValueError(f"{text(node)} takes a quadrant of a {shapes[0]} matrix")
        return shapes[0][0] // 2, shapes[0][1] // 2
    if node.kind == "beside":
        if shapes[0][0] != shapes[1][0]:
            raise ValueError(f"{text(node)} puts a {shapes[0]} beside a {shapes[1]} matrix")
        return shapes[0][0], shapes[0][1] + shapes[1][1]
    if node.kind == "strassen":
        if len(set(shapes)) != 1:
            raise ValueError(f"{text(node)} combines products of shapes {sorted(set(shapes))}")
        return 2 * shapes[0][0], 2 * shapes[0][1]
    if node.kind == "above":
        if shapes[0][1] != shapes[1][1]:
            raise ValueError(f"{text(node)} puts a {shapes[0]} above a {shapes[1]} matrix")
        return shapes[0][0] + shapes[1][0], shapes[0][1]
    if node.kind in PARTS:
        r, c = shapes[0]
        if (r if "row" in node.kind else c) < 2:
            raise ValueError(f"{text(node)} splits a {shapes[0]} matrix")
        return {"head_rows": (r - 1, c), "last_row": (1, c), "head_cols": (r, c - 1),
                "last_col": (r, 1)}[node.kind]
    return shapes[0]


def text(node) -> str:
    """The term in the constructors' own notation (Python's precedence: ``@`` before ``+``)."""
    if isinstance(node, Input):
        return node.name
    if node.kind == "T":
        return f"{_atom(node.args[0])}.T"
    if node.kind == "*":
        factor = node.factor if isinstance(node.factor, str) else repr(node.factor)
        return f"{_atom(node.args[0])}.scaled({factor})"
    if node.kind == "block":
        return f"{_atom(node.args[0])}.block({node.at[0]}, {node.at[1]})"
    if node.kind in PARTS:
        return f"{_atom(node.args[0])}.{node.kind}()"
    if node.kind in ("beside", "above", "strassen"):
        return f"{_atom(node.args[0])}.{node.kind}({', '.join(text(a) for a in node.args[1:])})"
    if node.kind == "+":  # left to right; a sum on the right is grouped
        a, b = node.args
        right = f"({text(b)})" if isinstance(b, Op) and b.kind == "+" else text(b)
        return f"{text(a)} + {right}"
    return " @ ".join(_atom(a) for a in node.args)


def accumulations_text(accumulations, term: Callable = text) -> str:
    """``D += A @ B; E += ...``, each term written by ``term``."""
    return "; ".join(f"{name} += {term(node)}" for name, node in accumulations)


def _atom(node) -> str:
    simple = isinstance(node, Input) or node.kind in ("T", "*", "block", "beside", "above",
                                                      "strassen") + PARTS
    return text(node) if simple else f"({text(node)})"


def _kinds() -> dict:
    x = Matrix("x", 1, 1)
    return {get_callable_fn(x @ x): "@", get_callable_fn(x + x): "+",
            get_callable_fn(x.scaled(1.0)): "*", get_callable_fn(x.T): "T", Matrix: "input",
            get_callable_fn(x.block(0, 0)): "block", get_callable_fn(x.beside(x)): "beside",
            get_callable_fn(x.above(x)): "above", get_callable_fn(x.strassen(*[x] * 6)): "strassen",
            **{get_callable_fn(getattr(x, part)()): part for part in PARTS},
            get_callable_fn(Program.acc("x", x)): "acc",
            get_callable_fn(Program.acc("x", x).then(Program.acc("x", x))): "then"}


_KINDS = _kinds()


def _kind(expr) -> str:
    kind = _KINDS.get(get_callable_fn(expr))
    if kind is None:
        raise ValueError(f"not a program term: {expr}")
    return kind


def _read(expr):
    """A ``Matrix`` term extracted from egglog as ``Input`` / ``Op`` nodes."""
    kind, args = _kind(expr), get_callable_args(expr)
    if kind == "input":
        n, r, c = (get_literal_value(a) for a in args)
        return Input(n, int(r), int(c))
    if kind == "*":
        return Op("*", (_read(args[0]),), float(get_literal_value(args[1])))
    if kind == "block":
        return Op("block", (_read(args[0]),), at=tuple(int(get_literal_value(a)) for a in args[1:]))
    return Op(kind, tuple(_read(a) for a in args))


def build(node):
    """The egglog term of a node (the inverse of ``_read``)."""
    if isinstance(node, Input):
        return Matrix(node.name, node.rows, node.cols)
    a = [build(x) for x in node.args]
    return {"@": lambda: a[0] @ a[1], "+": lambda: a[0] + a[1], "*": lambda: a[0].scaled(node.factor),
            "T": lambda: a[0].T, "block": lambda: a[0].block(*node.at),
            "beside": lambda: a[0].beside(a[1]), "above": lambda: a[0].above(a[1]),
            **{part: (lambda part=part: getattr(a[0], part)()) for part in PARTS},
            "strassen": lambda: a[0].strassen(*a[1:])}[node.kind]()


# ---------------------------------------------------------------------------
# saturation and extraction


@dataclass(frozen=True)
class Budget:
    iterations: int = 12
    enodes: int = 5_000
    seconds: float = 2.0


@dataclass(frozen=True)
class Report:
    """What the program-level e-graph did: e-nodes, iterations, why it stopped, seconds."""

    iterations: int
    enodes: int
    stop_reason: str
    seconds: float
    rules: tuple[str, ...]

    def to_json(self) -> dict:
        return {"iterations": self.iterations, "enodes": self.enodes,
                "stop_reason": self.stop_reason, "seconds": round(self.seconds, 4),
                "rules": list(self.rules)}


_rulesets: dict = {}


def _ruleset(rules: tuple, at_least: Optional[int]):
    """One egglog ruleset per set of rules, built once (egglog knows a ruleset by its name)."""
    key = (tuple(r.name for r in rules), at_least)
    if key not in _rulesets:
        _rulesets[key] = ruleset(*[r.rewrite(at_least) for r in rules],
                                 name=f"program-rules-{len(_rulesets)}")
    return _rulesets[key]


def _enodes(egraph: EGraph) -> int:
    """The e-graph's size as its budget counts it: the terms' e-nodes and the rows of the
    shape analysis (``rows``, ``cols``) together."""
    return sum(n for _, n in egraph.all_function_sizes())


def cheapest(accumulations: Sequence[tuple[str, object]], rules: Sequence[ProgramRule],
             price: Callable[[int, int, int], float],
             budget: Budget = Budget(),
             at_least: Optional[int] = None,
             run: Optional[Callable] = None,
             temporaries: Sequence[str] = ()) -> tuple[list[tuple[str, object]], Report]:
    """The cheapest program equal to ``accumulations`` (``(output, node)`` pairs: ``output +=
    node`` in order) by ``rules``, each product priced by ``price(m, k, n)`` (scalar-operation
    units, called once per shape the saturated graph holds). ``at_least``: the smallest
    extent a rule that takes quadrants splits, instead of the rule's own. ``temporaries``:
    the outputs for which ``temporary`` holds (``inline-temporary`` may inline them).

    The e-graph lives where ``run`` runs its two requests (``run(request)`` returns
    ``request()``; ``saturate.call`` runs them in the saturation worker, whose hard seconds
    and memory cap then bound it): a ``Saturation``, which answers the product shapes to
    price, then an ``Extraction`` given their prices. ``price`` runs here, between them.
    Without ``run``, both run in this process."""
    run = run or (lambda request: request())
    t0 = time.perf_counter()
    shapes, iterations, stop = run(Saturation(tuple(accumulations), tuple(rules), budget, at_least,
                                              tuple(temporaries)))
    prices = tuple((shape, max(1, round(price(*shape) * PRICE_SCALE))) for shape in shapes)
    out, enodes = run(Extraction(prices))
    return out, Report(iterations, enodes, stop, time.perf_counter() - t0,
                       tuple(r.name for r in rules) + ((INLINE,) if temporaries else ()))


# The e-graph a ``Saturation`` built, until the ``Extraction`` that follows it: (e-graph,
# its root). One per process; a request runs to its end before the next starts.
_held: list = []


@dataclass(frozen=True)
class Saturation:
    """A request: build the e-graph of ``accumulations``, saturate it under ``rules`` within
    ``budget``, keep it for the ``Extraction`` that follows, and answer the product shapes
    it holds (``(m, k, n)`` each), the iterations run and why saturation stopped. It pickles
    (the rules by their names and where they are registered, ``ProgramRule.__reduce__``), so
    a worker process can run it."""

    accumulations: tuple
    rules: tuple
    budget: Budget
    at_least: Optional[int]
    temporaries: tuple = ()

    def __call__(self) -> tuple[list[tuple[int, int, int]], int, str]:
        t0 = time.perf_counter()
        _held.clear()
        egraph = EGraph()
        root = egraph.let("program", _chained(self.accumulations))
        for t in self.temporaries:
            egraph.register(temporary(t))
        algebra = _ruleset(self.rules, self.at_least) if self.rules else None
        if self.temporaries:
            algebra = _inline if algebra is None else algebra | _inline
        iterations, stop = 0, "saturated"
        while True:
            egraph.run(_shapes.saturate())
            if algebra is None:
                break
            if iterations >= self.budget.iterations:
                stop = "iteration limit"
                break
            if _enodes(egraph) > self.budget.enodes:
                stop = "e-node limit"
                break
            if time.perf_counter() - t0 > self.budget.seconds:
                stop = "time limit"
                break
            report = egraph.run(algebra)
            iterations += 1
            if not report.updated:
                break
        egraph.run(_shapes.saturate())
        egraph.run(_products.saturate())
        shapes = [tuple(int(get_literal_value(a)) for a in get_callable_args(key))
                  for key in egraph.function_values(_product_shape)]
        _held.append((egraph, root))
        return shapes, iterations, stop


@dataclass(frozen=True)
class Extraction:
    """A request: the cheapest program in the e-graph the last ``Saturation`` built, each
    product shape costing its price (``((m, k, n), price)`` pairs, in ``PRICE_SCALE`` units),
    as accumulations, with the e-graph's size."""

    prices: tuple

    def __call__(self) -> tuple[list[tuple[str, object]], int]:
        if not _held:
            raise RuntimeError("no saturated program e-graph to extract from")
        egraph, root = _held.pop()
        for (m, k, n), p in self.prices:
            egraph.register(set_(product_price(m, k, n)).to(p))
        egraph.run(_costs.saturate())
        return _accs(egraph.extract(root)), _enodes(egraph)


def _accs(expr) -> list:
    """``then(acc, then(acc, acc))`` (or grouped otherwise) read back as the accumulations
    in order."""
    if _kind(expr) == "then":
        first, rest = get_callable_args(expr)
        return _accs(first) + _accs(rest)
    name, value = get_callable_args(expr)
    return [(get_literal_value(name), _read(value))]
