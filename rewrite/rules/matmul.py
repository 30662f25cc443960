"""Matmuls recognised in accumulate nests, whatever their loop order, layout or disguise.

An ``AccNest`` is a (batched) matmul when its body is ``scale * X[..] * Y[..]`` and its dims
sort into the four roles a matmul needs, read off the affine index maps::

    for k, j, i in grid(K, N, M):             MatMul(batch=(), m=i, n=j, k=k,
        C[i, j] += 2.0 * B[j, k] * A[i, k]  ->        a=A[i, k], b=B[j, k] (transposed),
                                                      c=C[i, j], scale=2.0)

Roles (each dim has exactly one, with unit coefficient, in exactly one index position of every
buffer it appears in, and nowhere else):

- batch: in C, A and B;  m: in C and A only;  n: in C and B only;  k: in A and B only.

Which operand is ``a`` is decided by the output: ``a`` holds the dim of C's first non-batch
index. Swapped operands (``B*A``) and a transposed operand are therefore the same MatMul.
Every other index position must be a constant. ``C = C + A*B`` reaches here already as ``+=``
(``nests.normalize``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from .. import ir
from ..affine import affine
from ..ir import Binary, Const, Expr, Load, Unary, Var
from ..names import Names
from ..nests import AccNest, Dim

# An index position: (dim name or None, constant offset).
Slot = tuple[Optional[str], int]


@dataclass(frozen=True)
class Access:
    """A buffer read or written through unit-coefficient slots."""

    buffer: ir.Buffer
    slots: tuple[Slot, ...]

    def position(self, dim: str) -> int:
        return [s[0] for s in self.slots].index(dim)

    def renamed(self, names: dict[str, str]) -> "Access":
        return Access(self.buffer, tuple((None if d is None else names[d], c) for d, c in self.slots))

    def load(self, shift: dict[str, int] | None = None) -> Load:
        return Load(self.buffer, self.indices(shift))

    def indices(self, shift: dict[str, int] | None = None) -> tuple[Expr, ...]:
        """The index expressions, with each dim ``d`` read at ``d + shift[d]``."""
        shift = shift or {}
        return tuple(index_expr(None if d is None else Var(d), c + shift.get(d, 0))
                     for d, c in self.slots)


def index_expr(base: Optional[Expr], offset: int) -> Expr:
    if base is None:
        return Const(offset, "i64")
    if offset == 0:
        return base
    if offset < 0:
        return Binary("-", base, Const(-offset, "i64"))
    return Binary("+", base, Const(offset, "i64"))


@dataclass(frozen=True)
class MatMul:
    """``c[batch, m, n] += scale * a[batch, m, k] * b[batch, k, n]`` in some layout."""

    nest: AccNest
    batch: tuple[Dim, ...]
    m: Dim
    n: Dim
    k: Dim
    a: Access
    b: Access
    c: Access
    scale: Optional[Const]

    @property
    def dtype(self) -> str:
        return self.c.buffer.dtype

    @property
    def flops(self) -> int:
        return 2 * self.nest.iterations


def _slots(indices: tuple[Expr, ...]) -> Optional[tuple[Slot, ...]]:
    out = []
    for e in indices:
        m = affine(e)
        if m is None or len(m.terms) > 1:
            return None  # not affine, or two dims in one index (a convolution, a diagonal)
        if m.terms:
            (v, coeff), = m.terms
            if coeff != 1:
                return None  # strided access: not a dense block of a matrix
            out.append((v, m.const))
        else:
            out.append((None, m.const))
    return tuple(out)


def _factors(e: Expr) -> Optional[tuple[list[Load], float]]:
    """The loads and the constant factor of a pure product, or None."""
    if isinstance(e, Load):
        return [e], 1.0
    if isinstance(e, Const):
        return [], float(e.value)
    if isinstance(e, Unary) and e.op == "neg":
        f = _factors(e.a)
        return None if f is None else (f[0], -f[1])
    if isinstance(e, Binary) and e.op == "*":
        x, y = _factors(e.a), _factors(e.b)
        if x is None or y is None:
            return None
        return x[0] + y[0], x[1] * y[1]
    return None


def recognize(nest: AccNest) -> Optional[MatMul]:
    """The matmul ``nest`` computes, or None when it is not one (see the module docstring)."""
    if not ir.is_float(nest.out.dtype) and not ir.is_int(nest.out.dtype):
        return None
    f = _factors(nest.value)
    if f is None or len(f[0]) != 2:
        return None
    (x, y), scale = f
    if x.dtype != nest.out.dtype or y.dtype != nest.out.dtype:
        return None
    sc, sx, sy = _slots(nest.indices), _slots(x.indices), _slots(y.indices)
    if sc is None or sx is None or sy is None:
        return None
    names = [d.name for d in nest.dims]
    if len(set(names)) != len(names):
        return None
    where = {}
    for d in names:
        counts = [sum(1 for v, _ in s if v == d) for s in (sc, sx, sy)]
        if any(c > 1 for c in counts):
            return None  # a dim twice in one buffer: a diagonal
        where[d] = tuple(c == 1 for c in counts)
    if any(v is not None and v not in where for s in (sc, sx, sy) for v, _ in s):
        return None
    batch = [d for d in nest.dims if where[d.name] == (True, True, True)]
    ms = [d for d in nest.dims if where[d.name] == (True, True, False)]
    ns = [d for d in nest.dims if where[d.name] == (True, False, True)]
    ks = [d for d in nest.dims if where[d.name] == (False, True, True)]
    if len(batch) + len(ms) + len(ns) + len(ks) != len(nest.dims):
        return None  # a dim in one buffer only (a sum over it), or in none
    if not (len(ns) == 1 and len(ms) == 1 and len(ks) == 1):
        return None  # a matrix-vector product, a dot, or several dims in one role
    m, n, k = ms[0], ns[0], ks[0]
    a, b = Access(x.buffer, sx), Access(y.buffer, sy)
    c = Access(nest.out, sc)
    # a is the operand holding the dim of C's first non-batch index
    first = next(v for v, _ in sc if v is not None and v in (m.name, n.name))
    if first == n.name:
        m, n = n, m
        a, b = b, a
    if m.name not in [v for v, _ in a.slots]:
        a, b = b, a
    const = None if scale == 1.0 else Const(scale, nest.out.dtype) if ir.is_float(nest.out.dtype) \
        else Const(int(scale), nest.out.dtype)
    if const is not None and ir.is_int(nest.out.dtype) and float(int(scale)) != scale:
        return None
    if not math.isfinite(scale):
        return None  # 1e999 * A * B: regrouped, its infinite terms meet in other sums
    return MatMul(nest, tuple(batch), m, n, k, a, b, c, const)


def product(scale: Optional[Const], x: Expr, y: Expr) -> Expr:
    e = Binary("*", x, y)
    return e if scale is None else Binary("*", scale, e)


# ---------------------------------------------------------------------------
# whole nests rewritten, offered to the pipeline as alternative programs (the matmul algebra
# itself runs in the program-level e-graph: rules/matrices.py)


@dataclass
class Alternative:
    """Items replacing the pipeline's (a regrouped chain, a factored sum, Strassen levels:
    ``matrices.py``, ``strassen.py``), the temporaries they need, what the scalar cost model
    does not see of them (``extra_cost``: the memory traffic of a level's block additions),
    the Strassen levels asked for and the deepest applied (below ``levels`` where blocks ran
    out)."""

    parts: list
    allocs: list
    note: str
    levels: int = 0
    extra_cost: float = 0.0
    applied_levels: int = 0


def build(c: Access, a: Access, b: Access, m: int, n: int, k: int, scale: Optional[Const]) -> AccNest:
    """``c[i, j] += scale * a[i, k] * b[k, j]`` from accesses written in the dims i, j, k."""
    return AccNest((Dim("i", 0, m), Dim("j", 0, n), Dim("k", 0, k)), c.buffer, c.indices(),
                   product(scale, a.load(), b.load()))


def _temporary(names: Names, prefix: str, dtype: str, rows: tuple[str, int],
               cols: tuple[str, int]) -> Access:
    """A fresh matrix ``<prefix>_<n>``, its shape the two extents given, accessed as
    ``[r, c]`` in the two dims named."""
    (r, m), (c, n) = rows, cols
    return Access(ir.Buffer(names.numbered(prefix), dtype, (m, n)), ((r, 0), (c, 0)))


def _filling(t: Access, value: Expr) -> ir.Stmt:
    """``t[r, c] = value`` for every element of the matrix ``t`` (a ``_temporary``)."""
    (r, _), (c, _) = t.slots
    m, n = t.buffer.shape
    return ir.For(r, 0, m, ir.For(c, 0, n, ir.Store(t.buffer, t.indices(), value)))


def _plain(mm: MatMul) -> bool:
    """No batch, dims from 0: the shapes the algebra below handles."""
    return not mm.batch and all(d.start == 0 for d in (mm.m, mm.n, mm.k))


def _roles(mm: MatMul) -> dict[str, str]:
    return {mm.m.name: "i", mm.n.name: "j", mm.k.name: "k"}


def _zero_fill(s, buf: ir.Buffer) -> bool:
    """``s`` is a loop nest setting every element of ``buf`` to 0."""
    dims = []
    while isinstance(s, ir.For):
        dims.append(s)
        s = s.body
    if not (isinstance(s, ir.Store) and s.buffer.name == buf.name and isinstance(s.value, Const)
            and s.value.value == 0):
        return False
    slots = _slots(s.indices)
    return (slots is not None and len(slots) == buf.ndim
            and all(v is not None and off == 0 for v, off in slots)
            and sorted(v for v, _ in slots) == sorted(d.var for d in dims)
            and all(d.start == 0 and d.stop == buf.shape[slots.index((d.var, 0))] for d in dims))


def transposes(func: ir.PrimFunc, parts: list, names: Names) -> list[Alternative]:
    """``C[i, j] += A[i, k] * B[j, k]``  ->  ``Bt[k, j] = B[j, k]; C[i, j] += A[i, k] * Bt[k, j]``
    (and ``A[k, i]`` into ``At[i, k]``): the operand copied once into the layout whose last index
    the intrinsics step along with unit stride. Sound: a copy read in place of the original,
    which no one writes (the nest reads it only). One alternative per nest, for the cost model
    to weigh the copy against intrinsic calls on a strided operand. Not offered by
    ``alternatives``: ``cost.GATHER_PENALTY`` makes the copy win even on a 6x16x8 product,
    which nothing measured yet supports."""
    out = []
    for q, p in enumerate(parts):
        mm = recognize(p) if isinstance(p, AccNest) else None
        if mm is None or not _plain(mm):
            continue
        roles = _roles(mm)
        a, b, c = (x.renamed(roles) for x in (mm.a, mm.b, mm.c))
        M, N, K = mm.m.extent, mm.n.extent, mm.k.extent
        dims = [v for v, _ in b.slots if v is not None]
        if dims[-1] == "k":  # B read as B[j, k]
            t = _temporary(names, "mm_Bt", mm.dtype, ("k", K), ("j", N))
            fill = _filling(t, b.load())
            new = build(c, a, t, M, N, K, mm.scale)
            note = "B read as B[j, k] -> copied to Bt[k, j]"
        elif [v for v, _ in a.slots if v is not None][-1] == "i":  # A read as A[k, i]
            t = _temporary(names, "mm_At", mm.dtype, ("i", M), ("k", K))
            fill = _filling(t, a.load())
            new = build(c, t, b, M, N, K, mm.scale)
            note = "A read as A[k, i] -> copied to At[i, k]"
        else:
            continue
        out.append(Alternative(parts[:q] + [fill, new] + parts[q + 1:], [t.buffer], note))
    return out
