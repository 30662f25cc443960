"""Rewrite rules, one module per concern, and ``FAMILIES``: every family the pipeline runs.

A family is a named group of rules of one kind. The kind says what the family's hooks (the
module attributes named in its ``Family``) receive and return, where the pipeline runs them,
and what the family must prove. At that point the pipeline runs every family of the kind in
``FAMILIES`` order, minus those named in ``tensorize(..., rules_off=...)``; a new rule of an
existing kind is a module here and one line in ``FAMILIES``.

Kinds
-----

``normalize``: ``apply(items, names) -> items``
    Top-level items of a normalised function (``nests.items``: accumulate nests and other
    statements) in, items out; fresh loop names come from ``names`` (``rewrite/names.py``).
    Runs before saturation, on the function and on every function a family of the later kinds
    builds (``pipeline.Search.items``). Obligation: the items compute what they computed,
    exactly or up to reassociating a sum.

``ruleset``: ``ruleset``, an egglog ruleset over ``egraph.Term``
    Rewrites of the small scalar bodies of nests. ``saturate.py`` runs the ruleset families
    together, one iteration at a time within the budget, before the match rules generated from
    the intrinsics. Obligation: each rule equates terms equal on wrap-around integers and, on
    floats, up to rounding; one that moves NaN or Inf (``factor-mul``) is caught by the
    pipeline's IEEE check of each match (``algebra.ieee_equal``).

``nest-stage``: ``requests(nest, desc, binding) -> key | list of keys | None``,
``build(nest, key, names) -> staged``, ``price(staged) -> float``
    A rewrite the extractor (``extract.py``) weighs for each binding of an intrinsic that
    carries no constant factor (also for bindings to loops shorter than the intrinsic's dims
    but at least half as long, ``match.bindings(short=True)``): ``requests`` says what to
    change (None: nothing it can do; a list: each key is its own candidate); the extractor
    builds it once per key, nest and matches, and plans ``staged.nest`` again, without nest
    stages, after ``staged.copies`` (statements filling the temporaries ``staged.buffers``)
    and before ``staged.after`` (statements reading them back), each match read through
    ``staged.match(match, desc)`` (``desc`` its intrinsic; None: that match is not planned
    on the new nest). ``price`` is what the copies and ``after`` cost (``cost.py``); a
    stage whose price and cheapest conceivable calls exceed the best plan found so far is
    not planned (``extract._Builder``). ``Family.depth`` bounds the remainder nests it is
    weighed on; ``Family.deeper`` names a hook that, given what the stage built for a nest
    at that depth, may let it weigh that nest's remainders too (``pad-to-tile``'s
    ``pads_remainders``: where each way of padding the nest whole is priced far).
    Obligation: the copies, the new nest and ``after`` together compute what the nest did
    (``pack-operand``: the new nest's binding runs at unit stride; ``pad-to-tile``: over
    extents the intrinsic divides).

``forms``: ``forms(nest, desc, match) -> [desc]``, ``edge_form(desc, bound, nest) -> desc | None``
    Other forms of an intrinsic than the one registered, which the extractor binds like it:
    ``forms`` gives those for a nest whose loops are shorter than some of the intrinsic's
    dims; ``edge_form`` the one for a remainder nest of a binding of ``desc`` (dims bound to
    loops as ``bound`` says), which the extractor weighs each binding with remainders with
    (the remainders run on it, their own remainders again, not planned as nests). Obligation:
    a form's semantics compute, on the windows of any binding ``match.bindings`` checks, a
    part of what its parent's would, and its emitter touches no element outside its
    operands' shapes.

``calls-stage``: ``operands(desc, windows, streams) -> names``,
``build(nest, desc, binding, tiled, operands, names, known, order) -> staged | None``
    A rewrite of the windows of a binding's tiled calls (their divisible part), weighed by the
    extractor against the calls as they are: ``operands`` picks the inputs to rewrite from the
    calls' windows and ``layout.streams``; ``staged.copies`` fill ``staged.buffers`` before
    the calls, which then read ``staged.windows``. ``build`` runs once on a copy of the names
    to price it, again on the real names when kept; ``known`` maps what a temporary holds to
    its name, so equal copies share one. Obligation: each call reads the values the original
    windows held.

``alternatives``: ``improve(best, search) -> best``
    Other programs for the whole function. ``best`` (``pipeline.Choice``) is the program
    chosen so far: function, items, their plan, Strassen levels; ``search``
    (``pipeline.Search``) normalises (``items``) and plans (``plan``) a program as the pipeline
    does, and carries the names in use and ``tensorize``'s options. Runs after the function is
    planned, each family on the previous one's result; returns ``best`` or a program it found
    cheaper by the cost model. Obligation: every program it returns computes what ``best``
    does, up to reassociation, with the NaN/Inf pattern of the program as written
    (``finite.guard`` where a rewrite would move it).

``sites``: ``rewrites(item, search) -> [(items, temporaries)]``
    Other items for one item of the program: each list computes what the item computes,
    using the fresh ``temporaries``; an item it cannot rewrite gives ``[]``. The families of
    this kind that come one after another in ``FAMILIES`` run as one step, where the
    alternatives families would run one of them (``choose.py``): every item of the program,
    and every item of a rewrite again, gets the rewrites of all of them, and one
    extraction in egglog takes the cheapest combination. Obligation: as for
    ``alternatives``, item by item.

``spans``: ``spans(items, around, search) -> [choose.Span]``
    Other items for stretches of a list of items: each ``Span(lo, hi, items, temps, extra,
    levels)`` computes what ``items[lo:hi]`` computes, using the fresh ``temps``, at the cost
    of its items' plans plus ``extra`` (what they do not show, such as a Strassen level's
    additions). ``around`` (``choose.Around``) says where the list sits: the function, the
    buffers the items around it touch (``outside``), whether it is the program's own list
    (``top``), and where a program-level e-graph's report goes (``reports``). The list may
    be the program's items or a rewrite's, of either kind. These families run in the same
    step as adjacent ``sites`` families, in the same extraction. A span of the whole
    function (``expand``'s: a new function, its temporaries and its items) names it as
    ``func``, and its items are then rewritten as the program's own; ``pays`` may refuse a
    rewrite the extraction chose by more than its cost. Obligation: as for ``sites``,
    stretch by stretch, with the buffers in ``outside`` read and written as before.

A ``sites`` or ``spans`` family may also name a *directive* (``Family.directive``):
``(best, search) -> best``, run on the program its step chose, right after that step, for
what ``tensorize``'s options force whatever the cost model says. ``strassen``'s is
``forced``: under ``--strassen N`` the family offers no spans and the directive applies
exactly N levels to every matmul product of the chosen program (under ``auto`` the
extraction chooses each product's level count among the family's spans). Turning the
family off turns its directive off. Obligation: as for ``alternatives``.

Modules that are no family: ``casts.py`` (the normal form of a body's casts, which
``nests.as_nest`` gives every nest it forms: part of what a nest is, not a choice),
``finite.py`` (the guard that ``matmul.py``, ``strassen.py``, ``scalars.py`` and ``contract.py``
put around their rewrites),
``matmul.py`` (the matmul recognition that the ``matmul`` family, ``matrices.py``, and the
``strassen`` family read), ``choose.py`` (the one extraction of the ``sites`` and ``spans``
families).

The hooks are looked up when a stage runs, not when this package is imported: the rule
modules import ``nests`` and ``match``, which import this package (``casts``).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

NORMALIZE = "normalize"
RULESET = "ruleset"
NEST_STAGE = "nest-stage"
FORMS = "forms"
CALLS_STAGE = "calls-stage"
ALTERNATIVES = "alternatives"
SITES = "sites"
SPANS = "spans"

# kind -> the hooks a family of that kind names, in this order
KINDS = {
    NORMALIZE: ("apply",),
    RULESET: ("ruleset",),
    NEST_STAGE: ("requests", "build", "price"),
    FORMS: ("forms", "edge_form"),
    CALLS_STAGE: ("operands", "build"),
    ALTERNATIVES: ("improve",),
    SITES: ("rewrites",),
    SPANS: ("spans",),
}


@dataclass(frozen=True)
class Family:
    """Rules of one ``kind`` (see ``KINDS``) in ``rewrite.rules.<module>``, whose attributes
    ``hooks`` are the kind's hooks in the kind's order."""

    name: str
    kind: str
    module: str
    hooks: tuple[str, ...]
    rules: str  # the rules it holds, as their docstrings name them
    # a nest stage: the deepest remainder nest it is weighed on (0: the nests the function
    # has; None: every remainder the extractor plans)
    depth: Optional[int] = None
    # a nest stage with a ``depth``: the module attribute ``(builds) -> bool`` saying, from
    # what the stage built for a nest at that depth (its candidates), whether the
    # remainders of that nest's tiles are weighed too, one level deeper
    deeper: Optional[str] = None
    # a ``sites`` or ``spans`` family: the module attribute ``(best, search) -> best`` that the
    # pipeline applies to the program the family's step chose, right after that step: what
    # ``tensorize``'s options force whatever it costs (``--strassen N``), ``best`` otherwise
    directive: Optional[str] = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS or len(self.hooks) != len(KINDS[self.kind]):
            raise ValueError(f"rule family {self.name}: kind {self.kind!r} takes hooks "
                             f"{KINDS.get(self.kind)}, not {self.hooks}")
        if self.directive is not None and self.kind not in (SITES, SPANS):
            raise ValueError(f"rule family {self.name}: a directive runs after the one "
                             f"extraction of sites and spans families, not after kind "
                             f"{self.kind!r}")

    def load(self) -> tuple:
        """The hooks themselves, importing the module."""
        module = importlib.import_module(f"{__name__}.{self.module}")
        return tuple(getattr(module, h) for h in self.hooks)

    def load_deeper(self) -> Optional[Callable]:
        """The ``deeper`` hook itself (None when the family has none), importing the module."""
        if self.deeper is None:
            return None
        return getattr(importlib.import_module(f"{__name__}.{self.module}"), self.deeper)

    def load_directive(self):
        """The directive itself (None when the family has none), importing the module."""
        if self.directive is None:
            return None
        return getattr(importlib.import_module(f"{__name__}.{self.module}"), self.directive)


# The pipeline runs the families of one kind in this order.
FAMILIES = (
    Family("out-of-place", NORMALIZE, "updates", ("apply",), "out-of-place"),
    Family("loops", NORMALIZE, "loops", ("apply",),
           "split-divmod, merge-reductions; split-for-intrinsic (in the extractor)"),
    Family("snapshot", NORMALIZE, "snapshot", ("apply",), "snapshot-reads"),
    Family("algebra", RULESET, "algebra", ("algebra",),
           "comm-*, assoc-*, factor-mul, sub-as-add-neg, neg-into-constant"),
    Family("pack-operand", NEST_STAGE, "layout", ("requests", "pack", "price"), "pack-operand"),
    # padding the nests the function has, and their remainders only where each way of
    # padding the nest whole is priced out of cache (rules/padding.py, ``pads_remainders``)
    Family("padding", NEST_STAGE, "padding", ("candidates", "pad", "price"), "pad-to-tile",
           depth=0, deeper="pads_remainders"),
    Family("edges", FORMS, "edges", ("forms", "edge_form"), "masked-edge"),
    Family("pack-panel", CALLS_STAGE, "layout", ("panel_operands", "pack_panel"), "pack-panel"),
    Family("expand", SPANS, "expand", ("spans",), "scalar expansion"),
    Family("inline", SPANS, "fusion", ("spans",), "inline-producer"),
    Family("triangles", SITES, "triangles", ("rewrites",), "split-domain"),
    Family("sums", SITES, "sums", ("rewrites",), "split-sum"),
    Family("distribute", SITES, "distribute", ("rewrites",), "distribute-product (its terms summed once), shift-bytes"),
    Family("scalar-factor", SITES, "scalars", ("rewrites",), "scale-operand, scale-temporary, divide-temporary"),
    Family("hoist-operand", SITES, "operands", ("rewrites",), "hoist-operand, regroup-factors"),
    Family("contract", SITES, "contract", ("rewrites",), "contract-pair"),
    Family("matmul", SPANS, "matrices", ("spans",),
           "the program-level e-graph: assoc-*, factor-*, comm-add, assoc-add, scale-*, and rules "
           "loaded with --rules-file"),
    # forced levels (--strassen N) are a directive on the program the extraction chose
    Family("strassen", SPANS, "strassen", ("spans",), "strassen levels", directive="forced"),
    Family("tidy", ALTERNATIVES, "tidy", ("improve",),
           "fold-fill, forward-copy, produce-into-copy, fuse-sweeps"),
    Family("tiles", ALTERNATIVES, "tiles", ("improve",),
           "fill-into-tiles, read-panel, co-block, panel-per-block"),
    Family("partials", ALTERNATIVES, "partials", ("improve",), "private-partials"),
)


def checked_off(names: Iterable[str]) -> frozenset[str]:
    """``names`` (one name alone too) as a set of names of families or of the built-in rules
    of the program-level e-graph (``matrices.RULE_NAMES``), or ``ValueError`` naming one that is
    neither."""
    from .matrices import RULE_NAMES  # imports egglog: only when a name is given

    off = frozenset([names] if isinstance(names, str) else names)
    if not off:
        return off
    unknown = sorted(off - {f.name for f in FAMILIES} - set(RULE_NAMES))
    if unknown:
        raise ValueError(f"no rule family or rule named {', '.join(unknown)} (families: "
                         f"{', '.join(f.name for f in FAMILIES)}; rules of the matmul family: "
                         f"{', '.join(RULE_NAMES)})")
    return off


def families(kind: str, off: Iterable[str] = ()) -> list[Family]:
    """The families of ``kind`` in ``FAMILIES`` order, without those named in ``off``."""
    if kind not in KINDS:
        raise ValueError(f"no rule kind {kind!r} (there are: {', '.join(KINDS)})")
    off = frozenset(off)
    return [f for f in FAMILIES if f.kind == kind and f.name not in off]


def improvements(off: Iterable[str] = ()) -> list[tuple[tuple[str, ...], object]]:
    """The steps that run after the function is planned, in ``FAMILIES`` order, without the
    families named in ``off``: each ``alternatives`` family's ``improve``, and one step for
    each run of ``sites`` and ``spans`` families (``choose.cheapest_sites`` over their
    rewrites together), followed by the directives of its families, one step each. Each
    step is (the names of its families, ``step(best, search) -> best``)."""
    off = frozenset(off)
    runs: list[list[Family]] = []
    for f in FAMILIES:
        if f.kind not in (ALTERNATIVES, SITES, SPANS) or f.name in off:
            continue
        if f.kind in (SITES, SPANS) and runs and runs[-1][0].kind in (SITES, SPANS):
            runs[-1].append(f)
        else:
            runs.append([f])
    steps = []
    for run in runs:
        steps.append((tuple(f.name for f in run), _step(run)))
        steps += [((f.name,), f.load_directive()) for f in run if f.directive is not None]
    return steps


def _step(run: list[Family]):
    if run[0].kind == ALTERNATIVES:
        (improve,) = run[0].load()
        return improve

    def sites(best, search):
        from .choose import cheapest_sites

        return cheapest_sites(best, search, [(f.name, f.load()[0]) for f in run if f.kind == SITES],
                              [(f.name, f.load()[0]) for f in run if f.kind == SPANS])

    return sites
