"""Choosing among candidate programs inside egglog: trip-count-weighted costs, cheapest wins.

The extractor (``extract.py``) proposes, for every accumulate nest, its candidate programs:
the scalar nest, and each intrinsic binding as its calls followed by the plans of the
remainder nests (themselves nests with candidates), a packing stage before a nest, a scaled
product's temporary and epilogue around one. This module puts those alternatives into an
e-graph -- each nest an e-class, each candidate a term unioned into it -- with every piece
of code a leaf whose cost (``cost.py``'s price, weighted by how often it runs) is set inside
egglog with its public ``set_cost``, from a table of prices a rule reads. egglog's extraction
then sums and minimises: the chosen term is the cheapest program, read back leaf by leaf. Prices are kept
to 1/1024 of a scalar operation and each leaf's id adds 1/1024 more, so plans within
a fraction of an operation tie. No Python cost callback runs during extraction
(DESIGN.md: such a callback was 36x slower than costs computed inside egglog).

    nest 0  =  leaf 0 (scalar: 8192)                         cost 8192
            |  leaf 1 (6x16 calls: 384) ; nest 1            cost 384 + min(nest 1)
    nest 1  =  leaf 2 (scalar: 256)  |  leaf 3 (fma calls: 16)
    ->  leaf 1 ; leaf 3                                      cost 400
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union


# Leaf costs are integers inside egglog: prices are kept to 1/SCALE of a scalar operation.
SCALE = 1024


@dataclass
class Leaf:
    """Code that runs as it is: statements, the temporaries they need, their price."""

    stmts: list
    allocs: list
    cost: float


Part = Union["NestRef", int]  # a nest (by id) or a leaf (by index)


@dataclass(frozen=True)
class NestRef:
    id: int


@dataclass
class PlanGraph:
    """Nests with their alternatives; an alternative is a sequence of leaves and nests."""

    leaves: list[Leaf] = field(default_factory=list)
    alternatives: dict[int, list[tuple[Part, ...]]] = field(default_factory=dict)

    def leaf(self, stmts: list, cost: float, allocs: list = ()) -> int:
        self.leaves.append(Leaf(list(stmts), list(allocs), cost))
        return len(self.leaves) - 1

    def nest(self) -> NestRef:
        ref = NestRef(len(self.alternatives))
        self.alternatives[ref.id] = []
        return ref

    def add(self, nest: NestRef, *parts: Part) -> None:
        self.alternatives[nest.id].append(tuple(parts))

    def cheapest(self, root: NestRef) -> tuple[list[int], float]:
        """The leaves of the cheapest program for ``root``, in order, and its cost."""
        return _extract(self, root)


_SORTS: dict = {}


def _sorts():
    """The plan sort, its price table and the rule that costs leaves from it, declared on first
    use (egglog is loaded when a plan is chosen, not when the pipeline is imported)."""
    if _SORTS:
        return _SORTS["Plan"], _SORTS["leaf_price"], _SORTS["prices"]
    from egglog import Expr, function, i64, i64Like, method, rule, ruleset, set_cost

    class Plan(Expr):
        """A program for a nest: a leaf, a nest (by id), or one part then the rest."""

        @method(unextractable=True)
        @classmethod
        def nest(cls, id: i64Like) -> Plan: ...

        @classmethod
        def leaf(cls, id: i64Like) -> Plan: ...

        @method(cost=0)
        def then(self, rest: Plan) -> Plan: ...

    # each leaf's price (scaled to integers), set once; a rule gives it to the leaf as its cost
    @function(merge=lambda old, new: old)
    def leaf_price(id: i64Like) -> i64: ...

    prices = ruleset(name="plan-prices")

    @prices.register
    def _price_rules(k: i64, p: i64):
        yield rule(Plan.leaf(k), leaf_price(k) == p).then(set_cost(Plan.leaf(k), p))

    _SORTS.update(Plan=Plan, leaf_price=leaf_price, prices=prices)
    return Plan, leaf_price, prices


def _term(Plan, parts: tuple[Part, ...]):
    terms = [Plan.nest(p.id) if isinstance(p, NestRef) else Plan.leaf(p) for p in parts]
    out = terms[-1]
    for t in reversed(terms[:-1]):
        out = t.then(out)
    return out


# Alternatives kept for egglog: those within this share of their nest's cheapest. egglog
# 13.2 spends about 1 ms on each top-level command and 4 on each ``set``, so a conv2d's
# 3 000 candidates of five intrinsics and their remainders took 35 s to choose among; all but
# a few of them are far from the cheapest, and dropping those cannot change the choice.
KEEP_WITHIN = 0.05


def near_cheapest(graph: PlanGraph, root: NestRef) -> dict[int, list[tuple[Part, ...]]]:
    """The alternatives of the nests ``root`` can reach that cost at most ``KEEP_WITHIN`` more
    than their nest's cheapest (each nest's cheapest computed bottom-up over the acyclic
    graph). Every alternative of a cheapest program survives, so the choice among what is
    left is the choice among all."""
    best: dict[int, float] = {}

    def cost(parts: tuple[Part, ...]) -> float:
        return sum(nest_cost(p.id) if isinstance(p, NestRef) else graph.leaves[p].cost for p in parts)

    def nest_cost(nid: int) -> float:
        if nid not in best:
            best[nid] = min(cost(parts) for parts in graph.alternatives[nid])
        return best[nid]

    kept: dict[int, list[tuple[Part, ...]]] = {}
    todo = [root.id]
    while todo:
        nid = todo.pop()
        if nid in kept:
            continue
        limit = nest_cost(nid) * (1 + KEEP_WITHIN) + 1.0 / SCALE
        kept[nid] = [parts for parts in graph.alternatives[nid] if cost(parts) <= limit]
        todo.extend(p.id for parts in kept[nid] for p in parts if isinstance(p, NestRef))
    return kept


def _leaves_of(best) -> list[int]:
    """The leaves of an extracted plan, in program order (``then`` is (first, rest))."""
    from egglog import get_callable_args, get_literal_value

    out, todo = [], [best]
    while todo:
        e = todo.pop()
        args = get_callable_args(e)
        if len(args) == 2:
            todo += [args[1], args[0]]
        else:
            out.append(int(get_literal_value(args[0])))
    return out


def _extract(graph: PlanGraph, root: NestRef) -> tuple[list[int], float]:
    """The cheapest plan for ``root`` among ``near_cheapest``'s alternatives, by egglog."""
    from egglog import EGraph, set_, union

    Plan, leaf_price, prices = _sorts()
    kept = near_cheapest(graph, root)
    leaves = sorted({p for alts in kept.values() for parts in alts for p in parts if isinstance(p, int)})
    # egglog sums prices in i64: capped so that a plan's sum cannot overflow (a leaf at the cap
    # runs trillions of operations, where which one wins no longer matters)
    cap = (1 << 62) // max(1, len(leaves))
    actions = [set_(leaf_price(k)).to(min(cap, max(0, round(graph.leaves[k].cost * SCALE))))
               for k in leaves]
    actions += [union(Plan.nest(nid)).with_(_term(Plan, parts)) for nid, alts in kept.items() for parts in alts]
    egraph = EGraph()
    egraph.register(*actions)
    egraph.run(prices.saturate())
    chosen = _leaves_of(egraph.extract(Plan.nest(root.id)))
    return chosen, sum(graph.leaves[k].cost for k in chosen)
