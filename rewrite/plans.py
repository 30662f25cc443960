"""Choosing among candidate programs inside egglog: trip-count-weighted costs, cheapest wins.

The extractor (``extract.py``) proposes, for every accumulate nest, its candidate programs:
the scalar nest, and each intrinsic binding as its calls followed by the plans of the
remainder nests (themselves nests with candidates), a packing stage before a nest, a scaled
product's temporary and epilogue around one. This module puts those alternatives into an
e-graph -- each nest an e-class, each candidate a term unioned into it -- with every piece
of code a leaf whose cost (``cost.py``'s price, weighted by how often it runs) is set inside
egglog, in its cost table (what ``set_cost`` writes). egglog's extraction then sums and
minimises: the chosen term is the cheapest program, read back leaf by leaf. Prices are kept
to 1/1024 of a scalar operation and each leaf's id adds 1/1024 more, so plans within
a fraction of an operation tie. No Python cost callback runs during extraction
(DESIGN.md: such a callback was 36x slower than costs computed inside egglog).

    nest 0  =  leaf 0 (scalar: 8192)                         cost 8192
            |  leaf 1 (6x16 calls: 384) ; nest 1            cost 384 + min(nest 1)
    nest 1  =  leaf 2 (scalar: 256)  |  leaf 3 (fma calls: 16)
    ->  leaf 1 ; leaf 3                                      cost 400
"""

from __future__ import annotations

import re
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


# The plan sort, written in egglog's own language: the Python expression builder costs about
# half a millisecond a node, the text a few microseconds. ``cost_table_Leaf`` is how egglog
# stores ``set_cost``; extraction adds each leaf's price from it (and 1 for its i64 id).
_DECLARATIONS = """
(sort Plan)
(constructor Nest (i64) Plan :unextractable)
(constructor Then (Plan Plan) Plan :cost 0)
(constructor Leaf (i64) Plan)
(function cost_table_Leaf (i64) i64 :no-merge)
"""

_LEAF = re.compile(r"\(Leaf (\d+)\)")


def _term(parts: tuple[Part, ...]) -> str:
    terms = [f"(Nest {p.id})" if isinstance(p, NestRef) else f"(Leaf {p})" for p in parts]
    out = terms[-1]
    for t in reversed(terms[:-1]):
        out = f"(Then {t} {out})"
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


def program(graph: PlanGraph, root: NestRef) -> str:
    """The egglog program that finds the cheapest plan for ``root`` (``near_cheapest``'s
    alternatives)."""
    kept = near_cheapest(graph, root)
    leaves = sorted({p for alts in kept.values() for parts in alts for p in parts if isinstance(p, int)})
    lines = [_DECLARATIONS]
    # egglog sums prices in i64: capped so that a plan's sum cannot overflow (a leaf at the cap
    # runs trillions of operations, where which one wins no longer matters)
    cap = (1 << 62) // max(1, len(leaves))
    for k in leaves:
        lines.append(f"(set (cost_table_Leaf {k}) {min(cap, max(0, round(graph.leaves[k].cost * SCALE)))})")
    for nid, alts in kept.items():
        for parts in alts:
            lines.append(f"(union (Nest {nid}) {_term(parts)})")
    lines.append(f"(extract (Nest {root.id}) 0)")
    return "\n".join(lines)


def _extract(graph: PlanGraph, root: NestRef) -> tuple[list[int], float]:
    from egglog import bindings

    egraph = bindings.EGraph()
    best = egraph.run_program(*egraph.parse_program(program(graph, root)))[-1]
    text = best.termdag.to_string(best.term)
    leaves = [int(k) for k in _LEAF.findall(text)]  # in program order: Then is (first rest)
    return leaves, sum(graph.leaves[k].cost for k in leaves)
