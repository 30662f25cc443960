"""The choice that ``alternatives`` families of per-nest rewrites make: each nest replaced by
the cheapest of itself and its rewrites, then the whole program kept where it is cheaper.

Not a family itself: ``scalars.py`` (scale-operand, scale-temporary) and ``contract.py``
(contract-pair) give, for each nest, the rewrites they can make of it.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

from ..ir import Buffer
from ..nests import AccNest

# a nest's rewrites: (the items computing it, the temporaries they use), each
Rewrites = Callable[[AccNest], list[tuple[list, list[Buffer]]]]


def cheapest_per_nest(best, search, rewrites: Rewrites):
    """``best`` (``pipeline.Choice``) with each nest replaced by the cheapest of itself and
    ``rewrites(nest)`` (``search.plan`` prices each alone: the items' costs add up), when the
    program so chosen, planned once, is cheaper."""
    items: list = []
    temps: list[Buffer] = []
    changed = False
    for p in best.parts:
        alts = rewrites(p) if isinstance(p, AccNest) else []
        if not alts:
            items.append(p)
            continue
        choice, cheapest, extra = [p], search.plan([p]).cost, []
        for alt, allocs in alts:
            cost = search.plan(alt).cost
            if cost < cheapest:
                choice, cheapest, extra = alt, cost, allocs
        items += choice
        temps += extra
        changed = changed or choice[0] is not p
    if not changed:
        return best
    planned = search.plan(items)
    if planned.cost >= best.planned.cost:
        return best
    return replace(best, func=replace(best.func, allocs=best.func.allocs + tuple(temps)),
                   parts=items, planned=planned)
