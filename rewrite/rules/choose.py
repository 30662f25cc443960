"""The one choice that the ``sites`` and ``spans`` families share: every stretch of the
program replaced by the cheapest of itself and the rewrites those families give for it,
their rewrites' items rewritten again, all chosen together by one extraction in egglog.

Not a family itself. A ``sites`` family says, for one item, which lists of items compute
what it computes: ``triangles.py`` (split-domain: a triangle's boxes), ``sums.py``
(split-sum: a sum's terms), ``scalars.py`` (scale-operand, scale-temporary), ``contract.py``
(contract-pair). A ``spans`` family says it for stretches of a list of items:
``expand.py`` (scalar expansion) and ``fusion.py`` (inline-producer), whose rewrites are
new functions, all of whose items are rewritten again, ``matrices.py`` (a window of
products the program-level e-graph rewrites) and ``strassen.py`` (a product with each
Strassen level count it admits, so that each product gets its own; forced levels are its
directive, after this step). This module lays the program out as a chain of positions,
each position an e-class of what runs from there to the end::

    from(k)  =  item k ; from(k + 1)
             |  rewrite r of items k..j - 1 ; from(j)       for each rewrite r starting at k
    rewrite r = its items in the same form, their own rewrites unioned in

and egglog extracts the cheapest ``from(0)`` (``plans.PlanGraph``: each item a leaf whose
price, its plan by ``search.plan``, is set inside egglog with ``set_cost``; a rewrite's
head is a leaf priced by what its items' plans do not show). Items' costs add up (each is
planned alone, as the pipeline plans a program item by item), so the extraction is the
cheapest combination: a triangle split beside one left whole, a triangle's boxes with their
sums split, a sum of three-operand products split and each term contracted, a product taken
out of a runtime scale factor's nest and given a Strassen level, a producer inlined and
the scale factor it applied then taken out of the product, two producers inlined and a
third kept, two batched products given two Strassen levels and one. The program so chosen
is planned once and kept where it is cheaper than ``best``.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Callable, Optional, Sequence

from .. import ir
from ..ir import Buffer, PrimFunc
from ..plans import NestRef, PlanGraph

# an item's rewrites: (the items computing it, the temporaries they use), each
Rewrites = Callable[[object, object], list[tuple[list, list[Buffer]]]]

# how many times a rewrite may be rewritten again (a triangle's box whose sum is split,
# whose terms have a scalar factor taken out)
DEPTH = 3
# Positions laid out before no rewrite is offered any more (each list still to be laid out
# keeps its items as they are), so that a program with many items, each with rewrites
# whose items have rewrites, inside each of many sets of producers inlined, cannot grow the
# graph without bound. A 30-item program with a rewrite each lays out about 120 positions,
# six producers in sets about 1 000.
MAX_POSITIONS = 20_000


@dataclass(frozen=True)
class Span:
    """``items[lo:hi]`` of a list computed by ``items`` instead, with the fresh temporaries
    ``temps``; ``extra``: a cost their plans do not show (the memory traffic of a Strassen
    level's additions); ``levels``: the Strassen levels they apply. ``func``: the new
    function whose items ``items`` all are, when the rewrite is one of all of a function's
    items (``lo`` 0, ``hi`` their count): the families that decide legality on the whole
    function then rewrite them again.
    ``pays(planned, before)``: whether the program chosen with this rewrite (its plan) is
    worth taking against the program before the extraction (``best``'s plan), beyond its
    cost being lower; a rewrite it refuses is not taken, and the extraction runs again.
    ``family``: the family that offered it (set here, for the report)."""

    lo: int
    hi: int
    items: tuple
    temps: tuple = ()
    extra: float = 0.0
    levels: int = 0
    func: Optional[PrimFunc] = None
    pays: Optional[Callable] = None
    family: str = ""


@dataclass(frozen=True)
class Report:
    """What the one extraction weighed: its positions (e-classes of "from here to the
    end"), the distinct items it holds (each priced by its plan when any rewrite is
    offered), the rewrites each family offered and how many of them the chosen program
    takes, the extractions run (none when nothing is offered; one more after each refusal
    by a rewrite's ``pays``), the seconds of the whole step (planning included), and
    whether it stopped offering rewrites at ``MAX_POSITIONS``."""

    positions: int
    items: int
    offered: tuple[tuple[str, int], ...]
    taken: tuple[tuple[str, int], ...]
    extractions: int
    seconds: float
    stop_reason: str = "complete"  # or "position limit": rewrites left unoffered

    def to_json(self) -> dict:
        return {"positions": self.positions, "items": self.items,
                "offered": dict(self.offered), "taken": dict(self.taken),
                "extractions": self.extractions, "seconds": round(self.seconds, 4),
                "stop_reason": self.stop_reason}

    def __str__(self) -> str:
        return describe(self.to_json())


def describe(report: dict) -> str:
    """A ``Report``'s JSON in one line."""
    def counts(d: dict) -> str:
        return ", ".join(f"{name} {n}" for name, n in d.items()) or "none"

    n = report["extractions"]
    return (f"{report['positions']} positions, {report['items']} distinct items, rewrites "
            f"offered: {counts(report['offered'])}; taken: {counts(report['taken'])}; {n} "
            f"extraction{'s' if n != 1 else ''}, {report['stop_reason']}, "
            f"{report['seconds']:.3f} s")


@dataclass(frozen=True)
class Around:
    """Where a list of items sits: the function, the buffers the items around it touch
    (none for a whole function's items), whether it is all of the function's items
    (``top``), how deep in rewrites of items (``depth``), the families whose rewrites of
    the whole function led to it, in order (``made_by``: ``expand``, then ``inline``; they
    do not count in ``depth``, so that the items of the function they give are rewritten
    as deep as the program's own), and the program-level e-graphs' reports, (family,
    report) each."""

    func: PrimFunc
    outside: frozenset = frozenset()
    top: bool = True
    depth: int = 0
    reports: list = field(default_factory=list, compare=False)
    made_by: tuple[str, ...] = ()


def replaced(old: Sequence, new: Sequence, **kw) -> Optional[Span]:
    """The span of ``old`` that ``new`` rewrites (their common head and tail kept), or None
    when they are the same."""
    old, new = list(old), list(new)
    if old == new:
        return None
    lo = 0
    while lo < min(len(old), len(new)) and old[lo] == new[lo]:
        lo += 1
    tail = 0
    while tail < min(len(old), len(new)) - lo and old[-1 - tail] == new[-1 - tail]:
        tail += 1
    return Span(lo, len(old) - tail, tuple(new[lo:len(new) - tail]), **kw)


def touched(items: Sequence) -> frozenset[str]:
    """The buffers ``items`` (pipeline items or statements) read or write."""
    return frozenset(b.name for p in items for b in ir.buffers_of(p.stmt() if hasattr(p, "stmt") else p))


class _Sites:
    """The position chains of a program and of every rewrite reached, in one ``PlanGraph``;
    its leaves are priced once all are known."""

    def __init__(self, search, rewrites: Sequence[tuple[str, Rewrites]], spans: Sequence):
        self.search = search
        self.rewrites = rewrites
        self.spans = spans
        self.found: dict = {}  # item -> its rewrites, (family, items, temporaries) each
        self.graph = PlanGraph()
        self.leaves: dict = {}  # item -> its leaf
        self.heads: dict[int, Span] = {}  # a rewrite's head leaf -> the rewrite
        self.end = self.graph.leaf([], 0.0)
        self.offered: Counter = Counter()  # rewrites offered, by family
        self.stopped = False  # past MAX_POSITIONS

    def of(self, item) -> list:
        if item not in self.found:
            self.found[item] = [(name, alt, temps) for name, r in self.rewrites
                                for alt, temps in r(item, self.search) if alt != [item]]
        return self.found[item]

    def chain(self, items: Sequence, around: Around) -> NestRef:
        """The e-class of ``items`` run in order, each stretch as it is or rewritten
        (rewrites of rewrites up to ``DEPTH``: a rewrite may give back what it was given)."""
        items = list(items)
        starting: dict[int, list[Span]] = {}
        if len(self.graph.alternatives) + len(items) > MAX_POSITIONS:
            self.stopped = True
        elif around.depth < DEPTH and len(around.made_by) < DEPTH:
            for k, item in enumerate(items):
                for name, alt, temps in self.of(item):
                    starting.setdefault(k, []).append(Span(k, k + 1, tuple(alt), tuple(temps),
                                                           family=name))
            for name, spans in self.spans:
                for s in spans(items, around, self.search):
                    starting.setdefault(s.lo, []).append(replace(s, family=name))
        self.offered.update(s.family for here in starting.values() for s in here)
        at = [self.graph.nest() for _ in range(len(items) + 1)]
        self.graph.add(at[-1], self.end)
        for k in reversed(range(len(items))):
            item = items[k]
            if item not in self.leaves:
                self.leaves[item] = self.graph.leaf([item], 0.0)  # priced by ``price``
            self.graph.add(at[k], self.leaves[item], at[k + 1])
            for s in starting.get(k, ()):
                head = self.graph.leaf([], s.extra, s.temps)
                self.heads[head] = s
                if s.func is not None:  # a new function: its items all, from the top
                    assert (s.lo, s.hi) == (0, len(items)) and around.top, s
                    inner = Around(s.func, frozenset(), True, around.depth, around.reports,
                                   around.made_by + (s.family,))
                else:
                    inner = Around(around.func,
                                   around.outside | touched(items[:s.lo] + items[s.hi:]),
                                   False, around.depth + 1, around.reports, around.made_by)
                self.graph.add(at[k], head, self.chain(s.items, inner), at[s.hi])
        return at[0]

    def drop(self, heads: set[int]) -> None:
        """The rewrites whose head leaves are ``heads`` taken out of the graph."""
        for nest, alts in self.graph.alternatives.items():
            self.graph.alternatives[nest] = [a for a in alts if not heads & set(a)]

    def price(self) -> None:
        """Each item's leaf priced by planning all the items at once (one saturation of their
        bodies; a plan's items' costs add up)."""
        planned = self.search.plan(list(self.leaves))
        for k, c in zip(self.leaves.values(), planned.costs):
            self.graph.leaves[k].cost = c


def _named(hooks: Sequence) -> list[tuple[str, Callable]]:
    """Hooks as (family, hook): given as pairs, or bare (named by their module)."""
    return [h if isinstance(h, tuple) else (h.__module__.rsplit(".", 1)[-1], h) for h in hooks]


def cheapest_sites(best, search, rewrites: Sequence, spans: Sequence = ()):
    """``best`` (``pipeline.Choice``) with each item replaced by the cheapest of itself and
    what ``rewrites`` (each ``(item, search) -> [(items, temporaries)]``) make of it, and
    each stretch of items by what ``spans`` (each ``(items, around, search) -> [Span]``) make
    of it, again on the items they give (up to ``DEPTH``), chosen by one extraction, when the
    program so chosen, planned once, is cheaper. Hooks are given bare or as (family, hook);
    the result's ``choice`` is the extraction's ``Report``."""
    t0 = time.perf_counter()
    sites = _Sites(search, _named(rewrites), _named(spans))
    around = Around(best.func)
    root = sites.chain(best.parts, around)
    egraphs = best.egraphs
    if around.reports:  # the e-graphs of the families that ran on this program
        ran = {family for family, _ in around.reports}
        egraphs = tuple(e for e in best.egraphs if e[0] not in ran) + tuple(around.reports)
    extractions, taken = 0, []

    def report() -> Report:
        return Report(len(sites.graph.alternatives), len(sites.leaves),
                      tuple(sorted(sites.offered.items())),
                      tuple(sorted(Counter(s.family for s in taken).items())),
                      extractions, time.perf_counter() - t0,
                      "position limit" if sites.stopped else "complete")

    if not sites.heads:
        return replace(best, egraphs=egraphs, choice=report())
    sites.price()
    while True:
        chosen, _ = sites.graph.cheapest(root)
        extractions += 1
        leaves = [sites.graph.leaves[k] for k in chosen]
        taken = [sites.heads[k] for k in chosen if k in sites.heads]
        items = [p for leaf in leaves for p in leaf.stmts]
        if not taken:
            return replace(best, egraphs=egraphs, choice=report())
        planned = search.plan(items)
        planned.cost += sum(s.extra for s in taken)
        if planned.cost >= best.planned.cost:
            taken = []
            return replace(best, egraphs=egraphs, choice=report())
        refused = {k for k in chosen if k in sites.heads and sites.heads[k].pays is not None
                   and not sites.heads[k].pays(planned, best.planned)}
        if not refused:
            break
        sites.drop(refused)
    temps = tuple(b for leaf in leaves for b in leaf.allocs)
    return replace(best, func=replace(best.func, allocs=best.func.allocs + temps), parts=items,
                   planned=planned, egraphs=egraphs, choice=report(),
                   strassen_levels=max([best.strassen_levels] + [s.levels for s in taken]))
