"""Intrinsic descriptors become matching rules; matches become bindings of dimensions.

Users register semantics, never patterns. From ``c[i, j] += a[i, k] * b[k, j]`` this module
generates, with no per-intrinsic code:

1. an e-graph rule (``body_rules``): the body of a nest, modulo the algebra rules, equals
   the intrinsic's body with each operand load a pattern variable -- optionally times a
   constant (``2.0 * A * B``). A match records the nest, the intrinsic and the program load
   standing for each input operand, as primitive ids in a relation;
2. a dimension binding (``bindings``): which program loop each intrinsic dimension runs
   along, checked on the affine index maps: a dimension an operand does not use must not
   move that operand's access; a dimension it uses gives the operand window's step. The
   output window may not alias itself. Extents that do not divide leave a remainder.

Operand roles, dtypes and layout needs (unit stride) are honoured here; loop order is not a
constraint at all, because nests are order-free sets of dimensions.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from typing import Iterator, Optional

from . import ir
from .affine import Affine, affine, affine_index
from .ir import Binary, Buffer, Const, Expr, Load, Var, Window
from .names import Names
from .nests import AccNest, Dim, _cached_hash, _without_hash


@dataclass(frozen=True)
class Pattern:
    """What the e-graph needs of a descriptor: its body and input operand names, in order."""

    name: str
    value: Expr
    inputs: tuple[str, ...]

    @staticmethod
    def of(desc) -> "Pattern":
        return Pattern(desc.name, semantics_value(desc), tuple(o.name for o in desc.inputs))


def semantics_value(desc) -> Expr:
    """The value an intrinsic accumulates: ``a[i, k] * b[k, j]`` for ``c[i, j] += a[i, k] * b[k, j]``."""
    body = desc.semantics.body
    while isinstance(body, ir.For):
        body = body.body
    return body.value


@dataclass(frozen=True)
class BodyMatch:
    """The body of nest ``nest`` equals ``scale *`` the body of ``intrinsic`` with each input
    operand standing for the program load ``loads[k]``."""

    nest: int
    intrinsic: str
    loads: tuple[Load, ...]
    scale: float = 1.0

    def __hash__(self) -> int:  # computed once, as a nest's (nests._cached_hash)
        return _cached_hash(self, (self.nest, self.intrinsic, self.loads, self.scale))

    def __getstate__(self) -> dict:
        return _without_hash(self)


# ---------------------------------------------------------------------------
# dimension bindings


@dataclass(frozen=True)
class Binding:
    """A way to run ``desc`` inside ``nest``: intrinsic dim -> program dim (None: a unit dim
    with no program loop), the windows' steps, and how much of the nest it covers."""

    intrinsic: str
    dims: tuple[tuple[str, Optional[str]], ...]
    steps: tuple[tuple[str, tuple[tuple[int, ...], ...]], ...]  # operand -> per operand dim
    tiles: int  # intrinsic calls in the divisible part
    unit_stride_ok: bool
    scale: float
    loads: tuple[tuple[str, Load], ...]  # input operand -> program load

    def bound(self) -> dict[str, Optional[str]]:
        return dict(self.dims)


def _coef_vector(maps: tuple[Optional[Affine], ...], dim: str) -> tuple[int, ...]:
    return tuple(m.coeff(dim) for m in maps)


@functools.lru_cache(maxsize=4096)
def _injective(shape: tuple[int, ...], steps: tuple[tuple[int, ...], ...], buf: Buffer) -> bool:
    flat = [buf.offset(st) for st in steps]
    seen = set()
    for point in itertools.product(*(range(n) for n in shape)):
        addr = sum(p * f for p, f in zip(point, flat))
        if addr in seen:
            return False
        seen.add(addr)
    return True


@functools.lru_cache(maxsize=8192)
def _affine_maps(indices: tuple[Expr, ...]) -> tuple[Optional[Affine], ...]:
    """The affine map of each index: a nest's remainders and stages ask for the same ones."""
    return tuple(affine(i) for i in indices)


def dtypes_agree(nest: AccNest, desc, match: BodyMatch) -> bool:
    """Whether each operand of ``desc`` is of the dtype of what it reads in ``nest`` for this
    body match (the output its buffer, each input its load): no binding of it otherwise."""
    if nest.out.dtype != desc.output.dtype:
        return False
    return all(load.buffer.dtype == op.dtype for op, load in zip(desc.inputs, match.loads))


def bindings(nest: AccNest, desc, match: BodyMatch, check_extents: bool = True,
             short: bool = False) -> Iterator[Binding]:
    """Every legal binding of ``desc``'s dimensions to ``nest``'s loops for one body match
    (``check_extents=False`` also yields bindings to loops too short, for explanations;
    ``short`` only those with a loop shorter than its dim but at least half as long, which
    ``pad-to-tile`` can round up to one tile, ``rules/padding.py``)."""
    found = _steps_along_loops(nest, desc, match)
    if found is None:
        return
    accesses, maps, coef = found
    prog = {d.name: d for d in nest.dims}
    # Loops with the same range that move every access alike are interchangeable: a binding
    # to one is, renamed, a binding to another. Offering at most as many of each kind as the
    # intrinsic has dims bounds the bindings tried by the kinds of loops, not the nest's depth
    # (200 loops of extent 1 made 200^3 bindings to test).
    kinds: dict[tuple, int] = {}
    offered = []
    for p in nest.dims:
        kind = (p.start, p.stop, tuple(coef[(name, p.name)] for name in maps))
        kinds[kind] = kinds.get(kind, 0) + 1
        if kinds[kind] <= len(desc.dims):
            offered.append(p)
    choices = []
    for d in desc.dims:
        options: list[Optional[str]] = [p.name for p in offered
                                        if (p.extent >= d.extent or not check_extents
                                            or short and 2 * p.extent >= d.extent)
                                        and _still(desc, d.name, p.name, coef)]
        if d.extent == 1:
            options.append(None)
        choices.append(options)
    extent = {p.name: p.extent for p in offered}
    for assignment in itertools.product(*choices):
        named = [p for p in assignment if p is not None]
        if len(set(named)) != len(named):
            continue
        if short and all(p is None or extent[p] >= d.extent for d, p in zip(desc.dims, assignment)):
            continue
        b = _check(nest, desc, match, dict(zip((d.name for d in desc.dims), assignment)),
                   accesses, coef, prog, short)
        if b is not None:
            yield b


def _steps_along_loops(nest: AccNest, desc, match: BodyMatch):
    """``(accesses, maps, coef)``: what each operand of ``desc`` accesses in ``nest`` for this
    body match (buffer and indices), the affine map of each index, and each operand's step
    along each loop of ``nest``; None where the dtypes differ or an index is not affine."""
    if not dtypes_agree(nest, desc, match):
        return None
    accesses: dict[str, tuple[Buffer, tuple[Expr, ...]]] = {desc.output.name: (nest.out, nest.indices)}
    for op, load in zip(desc.inputs, match.loads):
        accesses[op.name] = (load.buffer, load.indices)
    maps = {name: _affine_maps(idx) for name, (_, idx) in accesses.items()}
    if any(m is None for ms in maps.values() for m in ms):
        return None
    coef = {(name, p.name): _coef_vector(ms, p.name) for name, ms in maps.items() for p in nest.dims}
    return accesses, maps, coef


def short_loops(nest: AccNest, desc, match: BodyMatch) -> dict[str, tuple[int, ...]]:
    """For each spatial dim of ``desc``, the extents of the loops of ``nest`` shorter than it
    that it could run along (``_still``): the cuts of its partial forms that could bind."""
    found = _steps_along_loops(nest, desc, match)
    if found is None:
        return {}
    coef = found[2]
    out = {}
    for d in desc.dims:
        if d.kind == "spatial":
            cuts = sorted({p.extent for p in nest.dims
                           if 1 <= p.extent < d.extent and _still(desc, d.name, p.name, coef)})
            if cuts:
                out[d.name] = tuple(cuts)
    return out


def _still(desc, it: str, p: str, coef: dict) -> bool:
    """Intrinsic dim ``it`` may run along program loop ``p``: a bound program dim an operand
    does not use must not move its access (a pair at a time, so checked before the
    assignments are enumerated)."""
    return not any(it not in op.dims and any(coef[(op.name, p)]) for op in desc.operands)


def _check(nest, desc, match, bound, accesses, coef, prog, short=False) -> Optional[Binding]:
    """The binding ``bound`` (intrinsic dim -> program loop or None), each pair allowed by
    ``_still``, if its output windows do not alias (None otherwise); ``coef``: each
    operand's steps along each program loop."""
    steps = {}
    unit_ok = True
    for op in desc.operands:
        buf = accesses[op.name][0]
        op_steps = []
        for it in op.dims:
            p = bound.get(it) if it is not None else None
            op_steps.append(coef[(op.name, p)] if p is not None else (0,) * buf.ndim)
        # (a window past a short loop may wrap onto the next row; padding writes it into a
        # temporary of the padded extents, where the padded nest is bound again)
        if op.role == "output" and not short and not _injective(op.shape, tuple(op_steps), buf):
            return None
        if slow_dims(desc, op, buf, op_steps):
            unit_ok = False
        steps[op.name] = tuple(op_steps)
    tiles = 1
    for it in desc.dims:
        p = bound[it.name]
        tiles *= (prog[p].extent // it.extent) if p is not None else 1
    for d in nest.dims:
        if d.name not in bound.values():
            tiles *= d.extent
    return Binding(desc.name, tuple(bound.items()), tuple(steps.items()), tiles, unit_ok,
                   match.scale, tuple(zip((o.name for o in desc.inputs), match.loads)))


def slow_dims(desc, op, buf: Buffer, op_steps) -> tuple[int, ...]:
    """The dims of operand ``op`` that its descriptor's ``layout`` wants at unit stride but
    that step otherwise through ``buf`` (row-major) with these per-dim steps."""
    need = desc.layout.get(op.name)
    if need is None:
        return ()
    return tuple(k for k in need.unit_stride if op.shape[k] > 1 and buf.offset(op_steps[k]) != 1)


# ---------------------------------------------------------------------------
# building the call


def affine_expr(m: Affine) -> Expr:
    """Canonical index text for an affine map: ``2 * i + k - 1``."""
    out: Optional[Expr] = None
    for v, c in m.terms:
        term: Expr = Var(v) if c == 1 else Binary("*", Const(c, ir.INDEX), Var(v))
        out = term if out is None else Binary("+", out, term)
    if out is None:
        return Const(m.const, ir.INDEX)
    if m.const > 0:
        return Binary("+", out, Const(m.const, ir.INDEX))
    if m.const < 0:
        return Binary("-", out, Const(-m.const, ir.INDEX))
    return out


def moved_index(e: Expr, by: int) -> Expr:
    """``e + by``, in canonical form (``affine_expr``) when ``e`` is affine over loop variables."""
    form = affine_index(e)
    if form is None:
        return e if by == 0 else Binary("+", e, Const(by, ir.INDEX))
    return affine_expr(Affine(form.terms, form.const + by))


def tile_base(index: Expr, tiled: dict[str, tuple[str, int, int]]) -> Expr:
    """``index`` at the first element of a tile: each tiled program dim ``p`` becomes
    ``n * p_outer + start`` (or ``start`` when there is a single tile)."""
    m = affine(index)
    assert m is not None
    terms: dict[str, int] = {}
    const = m.const
    for v, c in m.terms:
        if v in tiled:
            outer, n, start = tiled[v]
            const += c * start
            if outer:
                terms[outer] = terms.get(outer, 0) + c * n
        else:
            terms[v] = terms.get(v, 0) + c
    return affine_expr(Affine(tuple(sorted((v, c) for v, c in terms.items() if c)), const))


def window(buf: Buffer, indices: tuple[Expr, ...], steps, tiled) -> Window:
    return Window(buf, tuple(tile_base(i, tiled) for i in indices), steps)


def dims_after_tiling(nest: AccNest, binding: Binding, desc, names: Names):
    """Loops of the divisible part, in the nest's order, and the tiling map for windows; an
    outer tile loop takes a fresh name from ``names``."""
    extent_of = {d.name: d.extent for d in desc.dims}
    by_prog = {p: it for it, p in binding.dims if p is not None}
    loops: list[Dim] = []
    tiled: dict[str, tuple[str, int, int]] = {}
    for d in nest.dims:
        it = by_prog.get(d.name)
        if it is None:
            loops.append(d)
            continue
        n = extent_of[it]
        if n == 1:  # a unit intrinsic dim: the program loop stays as it is
            loops.append(d)
            tiled[d.name] = (d.name, 1, 0)
            continue
        count = d.extent // n
        outer = names.fresh(f"{d.name}_o") if count > 1 else ""
        if outer:
            loops.append(Dim(outer, 0, count))
        tiled[d.name] = (outer, n, d.start)
    return loops, tiled


def remainders(nest: AccNest, binding: Binding, desc) -> list[AccNest]:
    """The iterations the tiles leave out, as nests with narrowed ranges (disjoint)."""
    extent_of = {d.name: d.extent for d in desc.dims}
    by_prog = {p: it for it, p in binding.dims if p is not None}
    out = []
    ranges = {d.name: (d.start, d.stop) for d in nest.dims}
    for d in nest.dims:
        it = by_prog.get(d.name)
        if it is None:
            continue
        main_stop = d.start + (d.extent // extent_of[it]) * extent_of[it]
        if main_stop < d.stop:
            narrowed = dict(ranges)
            narrowed[d.name] = (main_stop, d.stop)
            out.append(AccNest(tuple(Dim(x.name, *narrowed[x.name]) for x in nest.dims),
                               nest.out, nest.indices, nest.value))
        ranges[d.name] = (d.start, main_stop)  # later pieces take only the divisible part here
    return out
