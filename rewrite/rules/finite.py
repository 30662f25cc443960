"""A guard that keeps the NaN/Inf pattern of the program as written under rewrites that
would change it: the rewritten program runs only when its operands are all finite.

Strassen's products and the matmul algebra (reassociated chains, factored sums of products)
are identities of any ring, so they hold for finite floats up to rounding. They do not hold
for NaN and Inf: ``Inf * 0 + Inf * 1`` is NaN, ``Inf * (0 + 1)`` is Inf. With one NaN in
``A[0, 0]``, a Strassen level spreads it over ``S1 = A11 + A22``, ``S5`` and ``S6``, and so
over two block rows of ``C`` where the product has one row of NaNs. SPEC (Numerics) promises
the pattern of the program as written, so such a rewrite is emitted behind a scan of the
operands it regroups, the classical program in the other branch::

    for c in range(128):                      # before:  for i, j in grid(128, 128):
        fin[c] = 0.0                          #              C[i, j] = 0.0
    for i, k in grid(128, 128):               #          for i, j, k in grid(128, 128, 128):
        fin[k] += A[i, k] * 0.0               #              C[i, j] += A[i, k] * B[k, j]
    for k, j in grid(128, 128):
        fin[j] += B[k, j] * 0.0               # x * 0.0 is 0 for every finite x, NaN for
    for c in range(1, 128):                   # NaN and +-Inf; a sum of those is 0 exactly
        fin[0] += fin[c]                      # when every x is finite
    if fin[0] == 0.0:
        <Strassen's blocks>
    else:
        <the product as written>

The scan is one pass over the operands, vectorised along their rows (``fin[k]`` are
independent accumulators), against the O(n^3) product it guards; it runs where the rewritten
nests run, so it sees operands computed earlier in the program (temporaries) as they are
then. Integer programs need no guard: there the rewrites are exact. ``lower.py`` runs each
statement of either branch as its own part (a parallel loop stays parallel).

Two rewrites need a different condition, checked by the same kind of scan:
``regroup-factors`` (``operands.py``) reassociating ``Y * (f * g)`` needs only ``f * g``
finite and zero only where ``f`` or ``g`` is (``product_guard``), and ``divide-temporary``
(``scalars.py``) a divisor finite and nonzero (``nonzero_guard``).

What the guard does not cover is rounding: a finite intermediate that overflows to Inf (or
underflows to 0 before a product with Inf) may do so in one grouping and not in the other,
the same licence as reassociating a sum.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from .. import ir
from ..ir import (Accumulate, Binary, Buffer, Compare, Const, Expr, For, Load, Logical, Select, Stmt,
                  Store, Var)
from ..names import Names
from ..nests import AccNest


@dataclass(frozen=True)
class Guarded:
    """A pipeline item: ``scan``, then ``fast`` where ``cond`` holds, else ``slow``.

    ``fast`` and ``slow`` are lists of items themselves (accumulate nests and statements),
    planned by the pipeline like any other; the scan is plain statements."""

    scan: tuple[Stmt, ...]
    cond: Expr
    fast: tuple
    slow: tuple
    # the Strassen levels of the fast path's products are chosen, by the program-level
    # e-graph (``rules/matrices.py``) or as a level of the ``strassen`` family's span: under
    # ``--strassen auto`` neither family rewrites the fast path again
    settled: bool = False

    def stmt(self) -> Stmt:
        """The item as statements, its nests unplanned (as ``AccNest.stmt`` gives them)."""
        def body(items) -> Stmt:
            return ir.seq(*(p.stmt() if isinstance(p, (AccNest, Guarded)) else p for p in items))

        return ir.seq(*self.scan, ir.If(self.cond, body(self.fast), body(self.slow)))


def _dims_of(nest: AccNest, load: Load):
    used = {x.name for i in load.indices for x in ir.walk_expr(i) if isinstance(x, Var)}
    return tuple(d for d in nest.dims if d.name in used)


def _column(nest: AccNest, load: Load):
    """The dim in the last index of ``load`` that holds one (its row, for unit stride)."""
    for idx in reversed(load.indices):
        names = [x.name for x in ir.walk_expr(idx) if isinstance(x, Var)]
        for d in nest.dims:
            if d.name in names:
                return d
    return None


def guard(operands: Sequence[tuple[AccNest, Load]], fast: Sequence, slow: Sequence,
          names: Names, allocs: list) -> list:
    """The items running ``fast`` when every element each ``(nest, load)`` reads over the
    nest's dims is finite, else ``slow``: ``fast`` itself when no operand is a float. The
    flag's temporary is appended to ``allocs``."""
    floats = [(n, ld) for n, ld in operands if ir.is_float(ld.dtype)]
    if not floats:
        return list(fast)
    dt = floats[0][1].dtype
    zero = Const(0.0, dt)
    checks = [(_dims_of(n, ld), _column(n, ld), Binary("*", ld if ld.dtype == dt else ir.Cast(dt, ld), zero))
              for n, ld in floats]
    return _guarded(checks, dt, fast, slow, names, allocs)


def product_guard(nest: AccNest, factors: Sequence[Expr], fast: Sequence, slow: Sequence,
                  names: Names, allocs: list) -> list:
    """The items running ``fast`` when, at every point of the loops of ``nest`` that
    ``factors`` use, their product (in the order given) is finite, and zero only where one of
    them is (so each is finite, and the product neither overflows nor underflows to zero),
    else ``slow``: ``fast`` itself when the factors are integers. The flag's temporary is
    appended to ``allocs``."""
    dt = factors[0].dtype
    if not ir.is_float(dt):
        return list(fast)
    zero, one = Const(0.0, dt), Const(1.0, dt)
    product = ir.product(factors)
    nonzero = Compare("!=", factors[0], zero)
    for f in factors[1:]:
        nonzero = Logical("and", nonzero, Compare("!=", f, zero))
    lost = Select(Logical("and", Compare("==", product, zero), nonzero), one, zero)
    loads = [ld for f in factors for ld in ir.loads_of(f)]
    dims = tuple(d for d in nest.dims if any(d in _dims_of(nest, ld) for ld in loads))
    check = (dims, _column(nest, loads[0]), Binary("+", Binary("*", product, zero), lost))
    return _guarded([check], dt, fast, slow, names, allocs)


def nonzero_guard(nest: AccNest, load: Load, fast: Sequence, slow: Sequence, names: Names,
                  allocs: list) -> list:
    """The items running ``fast`` when every element ``load`` reads over ``nest``'s dims is
    finite and nonzero, else ``slow``. The flag's temporary is appended to ``allocs``."""
    dt = load.dtype
    zero, one = Const(0.0, dt), Const(1.0, dt)
    check = Binary("+", Binary("*", load, zero), Select(Compare("==", load, zero), one, zero))
    return _guarded([(_dims_of(nest, load), _column(nest, load), check)], dt, fast, slow, names,
                    allocs)


def _guarded(checks: Sequence[tuple], dt: str, fast: Sequence, slow: Sequence, names: Names,
             allocs: list) -> list:
    """``Guarded``: a scan adding each check's value (``(dims, column, value)``: 0 where the
    check holds) over its dims into a flag, one element a value of its column dim, then
    ``fast`` where the flag sums to 0, else ``slow``."""
    zero = Const(0.0, dt)
    width = max([1] + [col.extent for _, col, _ in checks if col is not None])
    flag = Buffer(names.numbered("st_fin"), dt, (width,))
    allocs.append(flag)
    c = names.numbered("fin_c")
    scan: list[Stmt] = [For(c, 0, width, Store(flag, (Var(c),), zero))]
    for dims, col, value in checks:
        at = Const(0, ir.INDEX) if col is None else \
            Var(col.name) if col.start == 0 else Binary("-", Var(col.name), Const(col.start, ir.INDEX))
        s: Stmt = Accumulate(flag, (at,), value)
        # the row's dim innermost: the scan runs along rows, vectorised
        for d in reversed(sorted(dims, key=lambda d: d == col)):
            s = For(d.name, d.start, d.stop, s)
        scan.append(s)
    if width > 1:
        scan.append(For(c, 1, width, Accumulate(flag, (Const(0, ir.INDEX),), Load(flag, (Var(c),)))))
    cond = Compare("==", Load(flag, (Const(0, ir.INDEX),)), zero)
    return [Guarded(tuple(scan), cond, tuple(fast), tuple(slow))]
