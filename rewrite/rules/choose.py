"""The one choice that the ``sites`` families share: every item of the program replaced by
the cheapest of itself and the rewrites those families give for it, their rewrites'
items rewritten again, all chosen together by one extraction in egglog.

Not a family itself: ``triangles.py`` (split-domain), ``sums.py`` (split-sum),
``scalars.py`` (scale-operand, scale-temporary) and ``contract.py`` (contract-pair) say,
for one item, which lists of items compute what it computes (a triangle's boxes, a sum's
terms, ...). This module lays the program out as a chain of positions, each position an
e-class of what runs from there to the end::

    from(k)  =  item k ; from(k + 1)
             |  rewrite r of item k ; from(k + 1)        for each rewrite r of item k
    rewrite r = its items in the same form, their own rewrites unioned in

and egglog extracts the cheapest ``from(0)`` (``plans.PlanGraph``: each item a leaf whose
price, its plan by ``search.plan``, is set inside egglog with ``set_cost``). Items' costs
add up (each is planned alone, as the pipeline plans a program item by item), so the
extraction is the cheapest combination: a triangle's boxes whose sums are split, one
triangle split and another not, a sum split beside one that is not. The program so chosen
is planned once and kept where it is cheaper than ``best``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, Sequence

from ..ir import Buffer
from ..plans import NestRef, PlanGraph

# an item's rewrites: (the items computing it, the temporaries they use), each
Rewrites = Callable[[object, object], list[tuple[list, list[Buffer]]]]

# how many times an item's rewrite may be rewritten again (a triangle's box whose sum is
# split, whose terms have a scalar factor taken out)
DEPTH = 3


class _Sites:
    """The position chains of a program and of every rewrite reached, in one ``PlanGraph``;
    its leaves are priced once all are known."""

    def __init__(self, search, rewrites: Sequence[Rewrites]):
        self.search = search
        self.rewrites = rewrites
        self.found: dict = {}  # item -> its rewrites
        self.graph = PlanGraph()
        self.leaves: dict = {}  # item -> its leaf
        self.end = self.graph.leaf([], 0.0)

    def of(self, item) -> list:
        if item not in self.found:
            self.found[item] = [(alt, temps) for r in self.rewrites
                                for alt, temps in r(item, self.search) if alt != [item]]
        return self.found[item]

    def chain(self, items: Sequence, depth: int) -> NestRef:
        """The e-class of ``items`` run in order, each as it is or rewritten (rewrites of
        rewrites up to ``DEPTH``: a rewrite may give back what it was given, further down)."""
        rest = self.graph.nest()
        self.graph.add(rest, self.end)
        for item in reversed(items):
            if item not in self.leaves:
                self.leaves[item] = self.graph.leaf([item], 0.0)  # priced by ``price``
            here = self.graph.nest()
            self.graph.add(here, self.leaves[item], rest)
            for alt, temps in self.of(item) if depth < DEPTH else ():
                head = self.graph.leaf([], 0.0, temps)  # what the rewrite allocates
                self.graph.add(here, head, self.chain(alt, depth + 1), rest)
            rest = here
        return rest

    def price(self) -> None:
        """Each item's leaf priced by planning all the items at once (one saturation of their
        bodies; a plan's items' costs add up)."""
        planned = self.search.plan(list(self.leaves))
        for k, c in zip(self.leaves.values(), planned.costs):
            self.graph.leaves[k].cost = c


def cheapest_sites(best, search, rewrites: Sequence[Rewrites]):
    """``best`` (``pipeline.Choice``) with each item replaced by the cheapest of itself and
    what ``rewrites`` (each ``(item, search) -> [(items, temporaries)]``) make of it, again
    on the items they give (up to ``DEPTH``), chosen by one extraction, when the program so
    chosen, planned once, is cheaper."""
    sites = _Sites(search, rewrites)
    root = sites.chain(best.parts, 0)
    if not any(sites.found.values()):
        return best
    sites.price()
    chosen, _ = sites.graph.cheapest(root)
    leaves = [sites.graph.leaves[k] for k in chosen]
    items = [p for leaf in leaves for p in leaf.stmts]
    temps = [b for leaf in leaves for b in leaf.allocs]
    if items == list(best.parts):
        return best
    planned = search.plan(items)
    if planned.cost >= best.planned.cost:
        return best
    return replace(best, func=replace(best.func, allocs=best.func.allocs + tuple(temps)),
                   parts=items, planned=planned)
