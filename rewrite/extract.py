"""The cheapest program for each accumulate nest, out of the matches the e-graph found.

For every nest the candidates are: the scalar nest itself, and every binding of every
matched intrinsic (``match.bindings``). A binding covers the divisible part of the bound
loops with calls; the remainder is again a nest with the same body, so it gets the same
choice, recursively (to ``MAX_DEPTH``) -- a 64-row matmul takes 10 tiles of the 6x16
outer product and its last 4 rows on 8-wide FMAs. A constant factor (``2.0 * A * B``) is
taken out of the reduction: the calls accumulate into a zeroed temporary and one
elementwise pass adds ``2.0 * T`` to the output (distributivity, licensed like
reassociation). A binding whose inputs miss the unit stride the intrinsic wants is weighed
twice: gathered as it is, and behind a packing stage (``rules/layout.py``) that copies those
inputs into a temporary where the stride is 1, planned again with no further packing. The
cost model (``cost.py``) decides.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from . import cost, ir
from .ir import Accumulate, Binary, Buffer, Call, Const, Expr, For, Load, Stmt, Store, Var
from .match import (BodyMatch, Binding, bindings, dims_after_tiling, remainders, semantics_value,
                    unused_name, window)
from .nests import AccNest
from .rules import layout

MAX_DEPTH = 3


@dataclass
class Plan:
    """Statements replacing one nest, the temporaries they need and what they cost."""

    stmts: list[Stmt]
    cost: float
    allocs: list[Buffer] = field(default_factory=list)


def _substitute(e: Expr, loads: dict[str, Load]) -> Expr:
    """The intrinsic's body with each operand load replaced by the program's load."""
    if isinstance(e, Load):
        return loads[e.buffer.name]
    if isinstance(e, Binary):
        return Binary(e.op, _substitute(e.a, loads), _substitute(e.b, loads))
    if isinstance(e, ir.Cast):
        return ir.Cast(e.dtype, _substitute(e.a, loads))
    if isinstance(e, ir.Unary):
        return ir.Unary(e.op, _substitute(e.a, loads))
    return e


class Extractor:
    def __init__(self, library: dict, taken: set[str]):
        self.library = library  # name -> descriptor
        self.taken = taken  # buffer names in use (temporaries get fresh ones)
        self._memo: dict = {}
        self._packs: dict = {}  # (nest, matches, what to copy) -> layout.Packing

    # -- one nest -------------------------------------------------------------------

    def best(self, nest: AccNest, matches: list[BodyMatch], depth: int = 0,
             pack: bool = True) -> Plan:
        # remainders of different bindings are often the same nest: plan each once
        key = (nest, tuple(matches), depth, pack)
        if key not in self._memo:
            self._memo[key] = self._best(nest, matches, depth, pack)
        plan = self._memo[key]
        return Plan(list(plan.stmts), plan.cost, list(plan.allocs))

    def _best(self, nest: AccNest, matches: list[BodyMatch], depth: int, pack: bool) -> Plan:
        best = Plan([nest.stmt()], cost.scalar(nest))
        if depth >= MAX_DEPTH:
            return best
        for m in matches:
            desc = self.library[m.intrinsic]
            for b in bindings(nest, desc, m):
                # its tiles alone cost more than the best plan so far: skip
                if cost.calls(desc, b.tiles, b.unit_stride_ok) < best.cost:
                    plan = self._scaled(nest, desc, b, matches, depth, pack) if b.scale != 1.0 \
                        else self._tiled(nest, desc, b, matches, depth, pack)
                    if plan is not None and plan.cost < best.cost:
                        best = plan
                if pack and not b.unit_stride_ok and b.scale == 1.0:
                    plan = self._packed(nest, desc, b, matches, depth, best.cost)
                    if plan is not None and plan.cost < best.cost:
                        best = plan
        return best

    def _packed(self, nest: AccNest, desc, b: Binding, matches, depth: int,
                bound: float) -> Optional[Plan]:
        """Copies of the inputs ``b`` reads without unit stride, then the nest on the copies,
        planned again without packing (its cheapest binding is now usually ``b`` unit-stride).
        Bindings that need the same copies share one temporary, so its name is made once."""
        reqs = layout.requests(nest, desc, b)
        if reqs is None:
            return None
        key = (nest, tuple(matches), reqs)
        if key not in self._packs:
            self._packs[key] = layout.pack(nest, reqs, self.taken)
        packing = self._packs[key]
        copies = cost.packing(packing.copies)
        if copies + cost.calls(desc, b.tiles, True) >= bound:
            return None  # the copies and unit-stride tiles alone cost more than the best plan
        sub = self.best(packing.nest, [packing.match(m) for m in matches], depth, pack=False)
        return Plan(list(packing.copies) + sub.stmts, copies + sub.cost,
                    list(packing.buffers) + sub.allocs)

    def _tiled(self, nest: AccNest, desc, b: Binding, matches, depth: int, pack: bool) -> Plan:
        taken = self.taken | {d.name for d in nest.dims}  # loop names only clash within a nest
        loops, tiled = dims_after_tiling(nest, b, desc, taken)
        steps = dict(b.steps)
        loads = dict(b.loads)
        operands = []
        for op in desc.operands:
            buf, idx = (nest.out, nest.indices) if op.role == "output" else \
                (loads[op.name].buffer, loads[op.name].indices)
            operands.append((op.name, window(buf, idx, steps[op.name], tiled)))
        s: Stmt = Call(desc.name, tuple(operands), desc.output.name)
        for d in reversed(loops):
            s = For(d.name, d.start, d.stop, s)
        plan = Plan([s], cost.calls(desc, b.tiles, b.unit_stride_ok))
        for rest in remainders(nest, b, desc):
            sub = self.best(rest, matches, depth + 1, pack)
            plan.stmts += sub.stmts
            plan.allocs += sub.allocs
            plan.cost += sub.cost
        return plan

    def _scaled(self, nest: AccNest, desc, b: Binding, matches, depth: int,
                pack: bool) -> Optional[Plan]:
        """``out += s * body`` as ``T = 0; T += body; out += s * T``."""
        if not ir.is_float(nest.out.dtype):
            return None
        temp = Buffer(unused_name("T", self.taken), nest.out.dtype, nest.out.shape)
        body = _substitute(semantics_value(desc), dict(b.loads))
        inner = AccNest(nest.dims, temp, nest.indices, body)
        unscaled = [BodyMatch(m.nest, m.intrinsic, m.loads, 1.0) for m in matches
                    if m.scale == b.scale]
        plan = self.best(inner, unscaled, depth, pack)
        if plan.cost >= cost.scalar(nest):
            return None
        names = [unused_name(f"x{k}", self.taken) for k in range(temp.ndim)]
        idx = tuple(Var(n) for n in names)
        zero: Stmt = Store(temp, idx, Const(0.0, temp.dtype))
        scale = Accumulate(nest.out, idx, Binary("*", Const(b.scale, temp.dtype), Load(temp, idx)))
        for n, extent in reversed(list(zip(names, temp.shape))):
            zero, scale = For(n, 0, extent, zero), For(n, 0, extent, scale)
        extra = cost.moved(2 * temp.size)
        return Plan([zero] + plan.stmts + [scale], plan.cost + extra, [temp] + plan.allocs)

