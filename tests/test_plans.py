"""The plan e-graph (``rewrite/plans.py``): egglog's extraction returns the cheapest program,
compared with a direct recursion over the same alternatives on random plan graphs."""

import functools

from hypothesis import given, strategies as st

from rewrite.plans import NestRef, PlanGraph


@st.composite
def graphs(draw):
    """Acyclic plan graphs: nest k's alternatives only use nests with larger ids."""
    g = PlanGraph()
    n = draw(st.integers(1, 6))
    refs = [g.nest() for _ in range(n)]
    for k, ref in enumerate(refs):
        g.add(ref, g.leaf([f"scalar{k}"], draw(st.integers(0, 10_000))))  # always one way
        for _ in range(draw(st.integers(0, 3))):
            parts = [g.leaf([f"calls{k}"], draw(st.integers(0, 10_000)))]
            for _ in range(draw(st.integers(0, 2))):
                if k + 1 < n:
                    parts.append(refs[draw(st.integers(k + 1, n - 1))])
            g.add(ref, *draw(st.permutations(parts)))
    return g


def _reference(g: PlanGraph, root: NestRef) -> float:
    @functools.lru_cache(maxsize=None)
    def best(nid: int) -> float:
        return min(sum(best(p.id) if isinstance(p, NestRef) else g.leaves[p].cost for p in parts)
                   for parts in g.alternatives[nid])
    return best(root.id)


@given(graphs())
def test_extraction_finds_the_cheapest_plan(g):
    root = NestRef(0)
    leaves, cost = g.cheapest(root)
    assert cost == _reference(g, root)
    assert cost == sum(g.leaves[k].cost for k in leaves)


def test_leaves_come_back_in_program_order():
    g = PlanGraph()
    a, b = g.nest(), g.nest()
    g.add(a, g.leaf(["scalar"], 1000))
    first, last = g.leaf(["copy"], 10), g.leaf(["epilogue"], 10)
    g.add(a, first, b, last)
    g.add(b, g.leaf(["slow"], 500))
    g.add(b, g.leaf(["fast"], 5))
    leaves, cost = g.cheapest(a)
    assert [g.leaves[k].stmts[0] for k in leaves] == ["copy", "fast", "epilogue"]
    assert cost == 25


def test_alternatives_far_from_the_cheapest_do_not_reach_egglog():
    from rewrite import plans

    g = PlanGraph()
    a, b = g.nest(), g.nest()
    g.add(a, g.leaf(["scalar"], 10_000))
    g.add(a, g.leaf(["calls"], 100), b)
    g.add(b, g.leaf(["slow remainder"], 500))
    g.add(b, g.leaf(["fast remainder"], 20))
    g.add(b, g.leaf(["tied remainder"], 20.5))  # within KEEP_WITHIN: egglog still chooses
    kept = plans.near_cheapest(g, a)
    assert kept == {0: [(1, b)], 1: [(3,), (4,)]}
    leaves, cost = g.cheapest(a)
    assert [g.leaves[k].stmts[0] for k in leaves] == ["calls", "fast remainder"] and cost == 120
