"""``tensorize()``: a function in, the cheapest equivalent program with intrinsic calls out.

    verify(func)                           # a well-formed program or a clear error
    normalize(func)                        # += made explicit, loops distributed where legal
    Search.items(func)                     # accumulate nests (order-free) and other statements,
                                           #   then the normalize families (out-of-place: a copy
                                           #   and +=; loops: split-divmod, merge-reductions)
    saturate(Job(bodies, patterns))        # e-graph: the ruleset families (algebra), then
                                           #   generated match rules
    Extractor.best(nest, matches)          # bindings, remainders, scale, the stage families
                                           #   (pack-operand, pack-panel): a plan e-graph from
                                           #   which egglog extracts the cheapest
    improve(best, search)                  # the sites and spans families chosen together
                                           #   by one extraction: reused temporaries
                                           #   expanded (expand), producers inlined (inline),
                                           #   triangles split into boxes (triangles), sums
                                           #   split (sums), runtime scale factors taken out
                                           #   (scalar-factor), pairs contracted (contract),
                                           #   windows of products rewritten by the
                                           #   program-level e-graph (matmul), each product's
                                           #   Strassen levels (strassen), on floats behind a
                                           #   finite-operand guard; then forced levels
                                           #   (--strassen N)
    verify(result)                         # the output is a well-formed program too

The rule families, their kinds and their order are listed in ``rules/__init__.py``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Iterable, Optional, Sequence, Union

from . import analysis, cost, descriptor, ir, lower, nests, rules, target
from .budgets import Budgets, using
from .extract import Extractor, renamed
from .ir import Call, For, PrimFunc, Stmt
from .calls import op_count
from .affine import first_constants
from .match import BodyMatch, Pattern, bindings, moved_index, semantics_value
from .names import Names
from .nests import AccNest
from .rules.finite import Guarded
from .saturate import Budget, Job, SaturationReport, saturate
from .printer import show, show_expr, show_stmt
from .verify import verify


@dataclass(frozen=True)
class Site:
    """One place in the chosen program that calls an intrinsic."""

    intrinsic: str
    calls: int  # invocations at run time
    where: str  # the loops around the call and its output window

    def to_json(self) -> dict:
        return {"intrinsic": self.intrinsic, "calls": self.calls, "where": self.where}


@dataclass(frozen=True)
class Explanation:
    """Why a nest runs without intrinsics: the nearest intrinsic and the first reason."""

    nest: str
    nearest: Optional[str]
    reason: str

    def __str__(self) -> str:
        near = f"nearest {self.nearest}: " if self.nearest else ""
        return f"{self.nest}\n    {near}{self.reason}"


@dataclass
class TensorizeResult:
    original: PrimFunc
    func: PrimFunc
    sites: list[Site]
    ops_total: int
    ops_in_intrinsics: int
    saturation: SaturationReport
    explanations: list[Explanation] = field(default_factory=list)
    seconds: dict = field(default_factory=dict)
    strassen_levels: int = 0
    # the program-level e-graphs saturated (rules/matrices.py): (family, program.Report)
    egraphs: tuple = ()
    # what the one extraction of the sites and spans families weighed (rules/choose.py)
    choice: Optional[object] = None
    cost: float = 0.0  # of the chosen program, by cost.py (scalar-operation units)
    scalar_cost: float = 0.0  # of the same function as scalar code, for comparison

    @property
    def coverage(self) -> float:
        return self.ops_in_intrinsics / self.ops_total if self.ops_total else 0.0

    def script(self) -> str:
        return show(self.func)

    def compile(self, threads: Optional[int] = None):
        from . import runtime

        return runtime.compile(self.func, threads=threads)

    def explain(self) -> str:
        if not self.explanations:
            return "every nest with arithmetic runs on intrinsics"
        return "\n".join(str(e) for e in self.explanations)

    def report(self) -> str:
        lines = [f"{self.original.name}: coverage {self.coverage:.2f} "
                 f"({self.ops_in_intrinsics} of {self.ops_total} ops in intrinsics)"]
        for s in self.sites:
            lines.append(f"  {s.intrinsic} x{s.calls} at {s.where}")
        lines.append(f"  cost {self.cost:,.0f} (as scalar code {self.scalar_cost:,.0f})")
        r = self.saturation
        lines.append(f"  saturation: {r.iterations} iterations, {r.enodes} e-nodes, "
                     f"{r.stop_reason}, {r.seconds:.3f} s")
        for family, g in self.egraphs:
            lines.append(f"  program e-graph ({family}): {g.iterations} iterations, {g.enodes} "
                         f"e-nodes, {g.stop_reason}, {g.seconds:.3f} s, {len(g.rules)} rules")
        if self.choice is not None:
            lines.append(f"  one extraction: {self.choice}")
        return "\n".join(lines)


# ---------------------------------------------------------------------------


def _buffers_used(body: Stmt) -> set[str]:
    return {b.name for b in ir.buffers_of(body)}


def _sites(body: Stmt) -> list[Site]:
    """Each intrinsic call in ``body``, with how often it runs and where."""
    out = []
    for s, around in ir.walk_in_loops(body):
        if isinstance(s, Call):
            calls = 1
            for lp in around:
                calls *= lp.extent
            w = s.window(s.output)
            where = ", ".join(f"{lp.var}<{lp.extent}>" for lp in around) or "top level"
            base = ", ".join(show_expr(i) for i in w.base)
            out.append(Site(s.intrinsic.name, calls, f"{where}: {w.buffer.name}[{base}]"))
    return out


def _intrinsic_ops(s: Stmt) -> int:
    """The operations ``s`` does in intrinsic calls, those under an ``if`` not counted."""
    return ir.fold_stmt(s, lambda x: op_count(x) if isinstance(x, Call) else 0, guard=lambda x, arms: 0)


@dataclass
class Planned:
    """Statements for a list of items, with what they need and cost."""

    stmts: list[Stmt]
    allocs: list
    explanations: list[Explanation]
    report: SaturationReport
    cost: float
    guards: list = field(default_factory=list)  # the ``If``s of ``finite.Guarded`` items
    costs: list = field(default_factory=list)  # of each item planned, in order (they add up)


def _nests_in(parts: Sequence) -> list[AccNest]:
    """The accumulate nests among ``parts``, those of guarded items' branches included, in
    the order ``plan_items`` meets them."""
    out = []
    for p in parts:
        if isinstance(p, Guarded):
            out += _nests_in(p.fast) + _nests_in(p.slow)
        elif isinstance(p, AccNest):
            out.append(p)
    return out


def _declare(allocs: list, more: Sequence) -> None:
    """Add the temporaries ``more`` to ``allocs`` once each: the two branches of a guard, or
    two nests, may fill the same packed copy (the extractor names equal copies alike)."""
    for b in more:
        if b not in allocs:
            allocs.append(b)


def plan_items(parts: Sequence, library: dict, budget: Budget, names: Names,
               in_process: bool = False, rules_off: frozenset[str] = frozenset(),
               memo: Optional[dict] = None) -> Planned:
    """Saturate the bodies of the accumulate nests among ``parts``, then take the cheapest
    program for each; other statements stay as they are. A guarded item (``rules/finite.py``)
    becomes its scan and an ``if`` over its two branches, each planned the same way; it costs
    the scan and the fast branch (the other one runs only on non-finite operands).
    ``rules_off``: rule families (ruleset and stage kinds) to leave out. ``memo``: plans of
    nests planned before with the same matches and ``names`` (a search plans many programs
    that share most of their nests), reused as they are: equal nests may share
    temporaries, since each plan fills its temporaries before it reads them."""
    memo = {} if memo is None else memo
    acc = _nests_in(parts)
    bodies, which, leaves = _distinct_bodies(acc)
    # a row binds a nest only where each operand's dtype is that of what it reads there
    # (``match.dtypes_agree``): the rows of other dtypes are matched only for an explanation
    # that needs them (``_explain_nest``), not in the saturation every program runs
    held = {n.out.dtype for n in acc} | {x.buffer.dtype for n in acc for x in ir.loads_of(n.value)}
    fitting = [d for d in library.values() if {o.dtype for o in d.operands} <= held]
    others = [d for d in library.values() if d not in fitting] if fitting else []

    def matched(rows: list) -> tuple[list[BodyMatch], SaturationReport]:
        job = Job(bodies, tuple(Pattern.of(d) for d in rows), budget, rules_off)
        found, report = saturate(job, in_process=in_process) if acc and rows else \
            ([], SaturationReport(0, 0, "nothing to match", 0.0))
        by_body: dict[int, list] = {}
        for m in found:
            by_body.setdefault(m.nest, []).append(m)
        out = [BodyMatch(n, m.intrinsic, tuple(leaves[n][x] for x in m.loads), m.scale)
               for n, u in enumerate(which) for m in by_body.get(u, ())]
        out.sort(key=lambda m: (m.nest, m.intrinsic, m.scale, repr(m.loads)))  # as saturate's
        # on floats, a match that holds only by factoring would move NaN/Inf (rules/algebra.py)
        return [m for m in out if _ieee_match(acc[m.nest], m, library)], report

    matches, report = matched(fitting or list(library.values()))
    kept = ("other-rows", tuple(d.name for d in others), rules_off)

    def explained(nest: AccNest, k: int, mine: list) -> Explanation:
        stage, explanation = _explain_nest(nest, mine, library)
        if stage >= 2 or not others:
            return explanation
        # no row of fitting dtypes got past the dtypes: a row of others may be nearer. Their
        # matches of each nest are kept in ``memo``, for the search's other plans
        if kept + (nest,) not in memo:
            found = matched(others)[0]
            for n, each in enumerate(acc):
                memo[kept + (each,)] = tuple(replace(m, nest=0) for m in found if m.nest == n)
        near = [replace(m, nest=k) for m in memo[kept + (nest,)]]
        return _explain_nest(nest, mine + near, library)[1]

    extractor = Extractor(library, names, rules_off)
    counter = iter(range(len(acc)))

    def plan(items: Sequence) -> Planned:
        out = Planned([], [], [], report, 0.0)
        for p in items:
            before = out.cost
            add(p, out)
            out.costs.append(out.cost - before)
        return out

    def add(p, out: Planned) -> None:
        if isinstance(p, Guarded):
            fast, slow = plan(p.fast), plan(p.slow)
            branch = ir.If(p.cond, ir.seq(*fast.stmts), ir.seq(*slow.stmts))
            out.stmts += list(p.scan) + [branch]
            _declare(out.allocs, fast.allocs + slow.allocs)
            out.cost += cost.scan(p.scan) + fast.cost
            out.explanations += fast.explanations
            out.guards += fast.guards + slow.guards + [branch]
            return
        if not isinstance(p, AccNest):
            out.stmts.append(p)
            out.cost += cost.scalar_stmt(p)
            if op_count(p) > 0:
                out.explanations.append(_explain_other(p, library, rules_off))
            return
        k = next(counter)
        mine = [m for m in matches if m.nest == k]
        key = (p, tuple((m.intrinsic, m.loads, m.scale) for m in mine))
        if key not in memo:
            memo[key] = _alike(p, mine, memo, extractor)
        plan_ = memo[key]
        out.stmts += plan_.stmts
        _declare(out.allocs, plan_.allocs)
        out.cost += plan_.cost
        if not any(isinstance(s, Call) for st in plan_.stmts for s in ir.walk_stmts(st)):
            out.explanations.append(explained(p, k, mine))

    return plan(parts)


def _distinct_bodies(acc: Sequence[AccNest]) -> tuple[tuple, list[int], list[dict]]:
    """The bodies of ``acc`` up to the loads they read: each load replaced by a stand-in
    numbered in order of first appearance (the e-graph sees a load as an opaque leaf, so
    bodies equal up to their loads saturate and match alike: Strassen's 49 products of one
    shape are one body). Returns the distinct bodies, the one of each nest, and for each nest
    its stand-ins' loads."""
    index: dict = {}
    which, leaves = [], []
    for nest in acc:
        mine: dict = {}  # the nest's load -> its stand-in

        def stand_in(x: ir.Load) -> ir.Load:
            if x not in mine:
                mine[x] = ir.Load(ir.Buffer(f"#{len(mine)}", x.buffer.dtype, ()), ())
            return mine[x]

        body = ir.map_loads(nest.value, stand_in)
        which.append(index.setdefault(body, len(index)))
        leaves.append({v: k for k, v in mine.items()})
    return tuple(index), which, leaves


def _alike(nest: AccNest, matches: list, memo: dict, extractor: Extractor):
    """The plan of ``nest``: that of a nest planned before which differs only in the buffers
    it reads and writes (equal dtypes and shapes, in the same places) and in a constant move
    of each buffer's accesses (Strassen's 49 products of one shape, which read quadrants of
    ``A`` and ``B`` or whole temporaries; a batch of equal layers), its buffers renamed and
    moved; else the extractor's. Buffer names take no part in a plan's choice, nor do the
    constants of affine indices (a plan reads a buffer through the nest's own indices and
    chooses by extents and strides), and temporaries the two plans share are filled by each
    before it reads them, as with equal nests."""
    real: dict[str, ir.Buffer] = {}  # this nest's buffers, by name, in order of appearance
    moves = _moves(nest)

    def canon(b: ir.Buffer) -> ir.Buffer:
        real.setdefault(b.name, b)
        return ir.Buffer(f"#{list(real).index(b.name)}", b.dtype, b.shape)

    def indices(b: ir.Buffer, idx: tuple) -> tuple:
        move = moves.get(b.name)
        if move is None:
            return tuple(ir.map_loads(i, load) for i in idx)
        return tuple(moved_index(i, -m) for i, m in zip(idx, move))

    def load(x: ir.Load) -> ir.Load:
        return ir.Load(canon(x.buffer), indices(x.buffer, x.indices))

    body = AccNest(nest.dims, canon(nest.out), indices(nest.out, nest.indices),
                   ir.map_loads(nest.value, load))
    found = tuple((m.intrinsic, tuple(load(x) for x in m.loads), m.scale) for m in matches)
    shape = (body, found)
    # The matches come in the order of their loads' text, buffer names included, which may
    # break a tie between equal plans; a memo that prices alone (``Search.trial``) also
    # finds a nest whose matches differ only in that order.
    anyhow = (body, tuple(sorted(found, key=repr)))
    first = memo.get(("alike", shape))
    if first is None and getattr(memo, "prices_only", False):
        first = memo.get(("alike-in-any-order", anyhow))
    if first is None:
        plan = extractor.best(nest, matches)
        memo[("alike", shape)] = memo[("alike-in-any-order", anyhow)] = (plan, list(real), moves)
        return plan
    plan, names, first_moves = first  # the first nest's buffer names, in this one's order
    to = {old: b for old, b in zip(names, real.values()) if old != b.name}
    by = {}  # the first nest's buffer -> how far this one's accesses of it are moved
    for old, name in zip(names, real):
        if name in moves:
            by[old] = tuple(m - f for m, f in zip(moves[name], first_moves[old]))
    by = {old: d for old, d in by.items() if any(d)}
    if not to and not by:
        return plan
    return replace(plan, stmts=[renamed(st, to, by) for st in plan.stmts])


def _moves(nest: AccNest) -> dict[str, tuple[int, ...]]:
    """For each buffer ``nest`` reaches only through affine indices over loop variables, the
    constants of its first access (``C[i, j + 512]``: (0, 512)), by which ``_alike`` moves
    all its accesses."""
    seen: dict[str, list] = {}
    for b, idx in [(nest.out, nest.indices)] + [(x.buffer, x.indices)
                                                for x in ir.loads_of(nest.value)]:
        seen.setdefault(b.name, []).append(idx)
    firsts = {name: first_constants(accesses) for name, accesses in seen.items()}
    return {name: first for name, first in firsts.items() if first}


def _ieee_match(nest: AccNest, m, library: dict) -> bool:
    """``m`` holds for ``nest`` without factor-mul, or ``nest`` has no float arithmetic."""
    from .rules import algebra  # imports egglog, which the pipeline otherwise loads on use

    if not any(ir.is_float(x.dtype) for x in ir.walk_expr(nest.value) if not isinstance(x, ir.Var)):
        return True
    desc = library[m.intrinsic]
    loads = dict(zip((o.name for o in desc.inputs), m.loads))
    value = ir.map_loads(semantics_value(desc), lambda x: loads[x.buffer.name])
    if m.scale != 1.0:
        value = ir.Binary("*", ir.Const(m.scale, nest.value.dtype), value)
    return algebra.ieee_equal(nest.value, value)


def _fast_path(body: Stmt, guards: Sequence) -> Stmt:
    """``body`` with each guard's ``if`` replaced by its first branch: what runs on finite
    operands, which coverage describes. A guard inside a guard's first branch (a Strassen
    level on a product a scalar factor was taken out of) is replaced too."""
    if not guards:
        return body
    out: list[Stmt] = []
    for s in ir.stmts_of(body):
        if isinstance(s, ir.If) and s in guards:
            out += ir.stmts_of(_fast_path(s.then, guards))
        else:
            out.append(s)
    return ir.seq(*out)


@dataclass(frozen=True)
class Choice:
    """The program chosen so far: the function, its items, their plan, and the Strassen levels
    it applies. An ``alternatives`` rule family returns it or one it found cheaper."""

    func: PrimFunc
    parts: list
    planned: Planned
    strassen_levels: int = 0
    egraphs: tuple = ()  # (family, program.Report) of each program-level e-graph saturated
    choice: Optional[object] = None  # the one extraction's choose.Report


@dataclass(frozen=True)
class Search:
    """What an ``alternatives`` rule family is given to build and price other programs: the
    names in use, the pipeline's own normalisation and planning, ``tensorize``'s options."""

    library: dict
    budget: Budget
    names: Names
    in_process: bool
    strassen: Union[str, int]
    budgets: Budgets
    rules_off: frozenset[str] = frozenset()
    memo: dict = field(default_factory=dict, compare=False)  # plan_items' plans of nests
    program_rules: tuple = ()  # users' rules of the program-level e-graph (program.load_file)

    def items(self, func: PrimFunc) -> list:
        """The items of a normalised function, the normalize families applied in turn."""
        parts = nests.items(func)
        for family in rules.families(rules.NORMALIZE, self.rules_off):
            (apply,) = family.load()
            parts = apply(parts, self.names)
        return parts

    def plan(self, parts: Sequence) -> Planned:
        """``plan_items`` on ``parts``, with the names, budget and families of this search."""
        return plan_items(parts, self.library, self.budget, self.names, self.in_process,
                          self.rules_off, self.memo)

    @staticmethod
    def runs_shared(s: Stmt) -> bool:
        """Whether the backend runs top-level statement ``s`` as a parallel part, its
        outermost loop shared between the threads (``lower.runs_shared``): the search is
        below the backend and reads its choice through here."""
        return lower.runs_shared(s)

    def trial(self) -> Search:
        """This search for pricing alone: names of its own, and a memo that finds this
        search's plans and keeps its own apart (a trial's plans, named apart, never reach the
        program; the program's price the trial's nests equal to them)."""
        return replace(self, names=Names(), memo=_ReadThrough(self.memo))


class _ReadThrough(dict):
    """A dict that also finds what ``under`` holds and adds to itself alone; a trial's memo,
    whose plans are priced and never kept (``prices_only``)."""

    prices_only = True

    def __init__(self, under: dict):
        super().__init__()
        self.under = under

    def __missing__(self, key):
        return self.under[key]

    def __contains__(self, key) -> bool:
        return dict.__contains__(self, key) or key in self.under

    def get(self, key, default=None):
        return self[key] if key in self else default


def tensorize(func: PrimFunc, intrinsics: Optional[Sequence] = None,
              budget: Budget = Budget(), in_process: bool = False,
              strassen: Union[str, int] = "auto", budgets: Budgets = Budgets(),
              rules_off: Iterable[str] = (), program_rules: Sequence = ()) -> TensorizeResult:
    """The cheapest program equivalent to ``func`` using ``intrinsics`` (default: what this
    CPU runs natively). ``strassen``: ``"auto"`` lets the cost model decide, ``"off"`` never,
    an integer applies that many levels wherever shapes allow. ``budget`` bounds saturation,
    ``budgets`` the other stages (``BudgetError`` past one). ``rules_off`` names rule families
    (``rules/__init__.py``) to leave out, or built-in rules of the program-level e-graph;
    ``ValueError`` for a name that is neither. ``program_rules``: users' rules of that e-graph
    (``program.load_file``)."""
    off = rules.checked_off(rules_off)
    with using(budgets):  # for the stages deep inside others, such as the dependence analysis
        return _tensorize(func, intrinsics, budget, in_process, strassen, budgets, off,
                          tuple(program_rules))


def _tensorize(func: PrimFunc, intrinsics: Optional[Sequence], budget: Budget, in_process: bool,
               strassen: Union[str, int], budgets: Budgets, off: frozenset[str],
               program_rules: tuple = ()) -> TensorizeResult:
    if intrinsics is None:  # what this CPU runs natively, as intrinsics.library("host")
        host = target.host()
        intrinsics = [d for d in descriptor.in_force() if host.runs(d)]
    library = {d.name: d for d in intrinsics}
    t0 = time.perf_counter()
    verify(func)
    normal = nests.normalize(func)
    search = Search(library, budget, Names.of(normal), in_process, strassen, budgets, off,
                    program_rules=program_rules)
    parts = search.items(normal)
    t1 = time.perf_counter()
    best = Choice(normal, parts, search.plan(parts))
    # other programs, where the cost model finds them cheaper (rules/__init__.py): chosen
    # together by one extraction (rules/choose.py), reused temporaries expanded
    # (rules/expand.py), producers inlined (rules/fusion.py), triangles split into boxes
    # (rules/triangles.py), sums split (rules/sums.py), runtime scale factors taken out
    # (rules/scalars.py), pairs contracted (rules/contract.py), stretches of matrix
    # products rewritten in the program-level e-graph (rules/matrices.py) and each product's
    # Strassen levels (rules/strassen.py); then the levels --strassen N forces
    for _, step in rules.improvements(off):
        best = step(best, search)
    normal, parts, chosen = best.func, best.parts, best.planned
    t2 = time.perf_counter()
    body = ir.seq(*chosen.stmts)
    used = _buffers_used(body)
    # a rewrite (a reassociated chain) may leave one of the function's temporaries unused
    kept = tuple(b for b in normal.allocs if b.name in used)
    declared = {b.name for b in normal.params + kept + tuple(chosen.allocs)}
    # temporaries a normalize family made (rules/snapshot.py's copies)
    made = tuple({b.name: b for b in ir.buffers_of(body) if b.name not in declared}.values())
    result = replace(normal, body=body, allocs=kept + tuple(chosen.allocs) + made)
    verify(result)
    # sites and coverage describe what runs on finite inputs (a guard's first branch)
    taken_path = _fast_path(result.body, chosen.guards)
    sites = _sites(taken_path)
    t3 = time.perf_counter()
    out = TensorizeResult(func, result, sites, op_count(taken_path), _intrinsic_ops(taken_path),
                          chosen.report, chosen.explanations,
                          {"normalize": t1 - t0, "saturate+extract": t2 - t1, "verify": t3 - t2,
                           "tensorize": t3 - t0})
    out.strassen_levels = best.strassen_levels
    out.egraphs = best.egraphs
    out.choice = best.choice
    out.cost = chosen.cost
    out.scalar_cost = _scalar_cost(parts)
    return out


def _scalar_cost(items) -> float:
    """What ``items`` cost as scalar code; a guarded rewrite counts as its program as written."""
    return sum(cost.scalar(p) if isinstance(p, AccNest) else
               _scalar_cost(p.slow) if isinstance(p, Guarded) else cost.scalar_stmt(p)
               for p in items)


# ---------------------------------------------------------------------------
# explanations


def _head(s: Stmt) -> str:
    body = [l.strip() for l in show_stmt(s).splitlines()]
    return " / ".join(body[:3]) + (" ..." if len(body) > 3 else "")


def _line(s: Stmt) -> str:
    """A statement's first line in script syntax (``if c:`` for an ``if``)."""
    return show_stmt(s).splitlines()[0].strip()


# what an access does to its element, for the messages
_VERB = {"read": "read", "write": "written", "accumulate": "added to"}
_ADDS = "every intrinsic in the library adds into its output (c[...] += ...)"


def _explain_other(s: Stmt, library: dict, rules_off: frozenset[str] = frozenset()) -> Explanation:
    """Why a statement that is no accumulate nest runs as scalar code: the first thing on
    its way to one (a guard, statements that could not be split apart, an operator no
    intrinsic applies), said in script terms."""
    loops: list[For] = []
    leaf = s
    while isinstance(leaf, For):
        loops.append(leaf)
        leaf = leaf.body
    if isinstance(leaf, ir.If):
        why = (f"structure: the statements are under a guard (`{_line(leaf)}`), and only loop "
               "nests without conditions are matched")
    elif isinstance(leaf, ir.Seq):
        why = _why_not_split(s, loops, rules_off)
    elif isinstance(leaf, ir.Store):
        why = _why_store(s, leaf, loops)
    elif isinstance(leaf, ir.Accumulate):
        own = [x for x in ir.loads_of(leaf.value) if x.buffer.name == leaf.buffer.name]
        if own:
            why = (f"access pattern: `{_line(leaf)}` reads {show_expr(own[0])} of "
                   f"{leaf.buffer.name}, the buffer it adds into, so its iterations cannot be "
                   "reordered into intrinsic tiles")
        elif not loops:
            why = f"structure: `{_line(leaf)}` is outside any loop, so no intrinsic runs along one"
        else:  # a nest every program as written gives the matcher: a rewrite's own step
            why = (f"structure: `{_line(leaf)}` is a step a rewrite added as plain loops (the "
                   "additions of a Strassen level, a guard's scan of the operands)")
    else:
        why = "structure: it is not a loop nest of one statement"
    return Explanation(_head(s), None, why)


def _why_not_split(s: Stmt, loops: list[For], rules_off: frozenset[str]) -> str:
    """Loops around several statements that normalisation could not distribute: the
    temporaries they reuse, or the first dependence that forbids it (``analysis``)."""
    if not loops:
        return "structure: several statements that are not loop nests"
    func = PrimFunc("_", (), s)
    path = (0,) * len(loops)
    loop = loops[-1]
    reuses = analysis.reused(func, path)
    blockers = list(analysis.distribution_blockers(func, path))
    reused = {r.buffer.name for r in reuses}
    named = [d for d in blockers if d.source.buffer.name not in reused]
    if named:
        d = named[0]
        x, y = d.source, d.sink
        return (f"structure: the loop over {loop.var} cannot be split into one loop per "
                f"statement: {x.element} is {_VERB[x.kind]} by `{_line(x.stmt)}`, and "
                f"{y.element} is {_VERB[y.kind]} in a later iteration of {loop.var} by "
                f"`{_line(y.stmt)}`, which comes before it")
    if blockers:
        blocking = {d.source.buffer.name for d in blockers}
        mine = [r for r in reuses if r.buffer.name in blocking]
        names = ", ".join(r.buffer.name for r in mine)
        around = sorted({l for r in mine for l in r.loops}, key=lambda l: len(l.path))
        over = ", ".join(l.var for l in around)  # outermost first
        what, it = (f"the temporary {names} is", "it") if len(mine) == 1 else \
            (f"the temporaries {names} are", "them")
        why = (f"structure: {what} reused by every iteration of {over} (each writes {it} before "
               f"reading {it}), so the loops cannot be split into one nest per statement")
        if "expand" in rules_off:
            return why + "; the expand rule, which gives each iteration its own copy, is off"
        return why + "; a copy per iteration (the expand rule) was refused or did not pay here"
    return (f"structure: the loop over {loop.var} holds several statements, which were not "
            "split into separate nests")


def _why_store(s: Stmt, leaf: ir.Store, loops: list[For]) -> str:
    """A loop nest around ``X[f] = e``: what ``e`` does with ``X``."""
    target = ir.Load(leaf.buffer, leaf.indices)
    stmt = _line(leaf)
    if target in ir.walk_expr(leaf.value):
        # the operation applied to the element, the element itself printed as ...
        shown = show_expr(ir.map_loads(leaf.value, lambda x: ir.Var("...") if x == target else x))
        used = {v.name for i in leaf.indices for v in ir.walk_expr(i) if isinstance(v, ir.Var)}
        over = [l.var for l in loops if l.var not in used]
        if over:
            return (f"operator: `{stmt}` reduces {show_expr(target)} over {', '.join(over)} "
                    f"with {shown}, not a sum; {_ADDS}")
        return (f"operator: `{stmt}` updates each element of {leaf.buffer.name} in place with "
                f"{shown}; {_ADDS}")
    others = [x for x in ir.loads_of(leaf.value) if x.buffer.name == leaf.buffer.name]
    if others and loops:
        # the loops that carry a value from this store to a read of another element
        carried = list(dict.fromkeys(
            d.loops[d.carrier].var for d in analysis.dependences(PrimFunc("_", (), s))
            if d.kind == "flow" and d.carrier is not None
            and d.source.buffer.name == d.sink.buffer.name == leaf.buffer.name))
        if carried:
            return (f"operator: `{stmt}` reads {show_expr(others[0])}, which an earlier "
                    f"iteration of {', '.join(carried)} wrote (a recurrence); {_ADDS}")
    return f"operator: `{stmt}` overwrites {show_expr(target)} with =; {_ADDS}"


_STAGES = ("operator", "dtype", "access pattern", "extent", "layout")


def _computed_note(nest: AccNest) -> str:
    """Why an operand computed as it is read stays so (``rules/operands.py``), when the body
    has one: an intrinsic multiplies what memory holds."""
    from .rules import operands

    computed = operands.computed_factors(nest)
    if not computed:
        varying = operands.varying_factors(nest)
        if len(varying) < 3:
            return ""
        what = ", ".join(show_expr(e) for e in varying)
        head = f"; its product has {len(varying)} factors that vary with the loops ({what})"
        if operands.offers_regrouping(nest):
            return (f"{head}, and regroup-factors' two operands of them were not chosen (they "
                    f"did not pay, or the hoist-operand family is turned off)")
        if operands.regroupings(nest):
            return (f"{head}; regroup-factors would regroup them only behind a scan of the "
                    f"operands for NaN and Inf, a pass that costs what this nest does, since it "
                    f"reads each of their elements once")
        return (f"{head}, and regroup-factors makes two operands of them only where each one "
                f"copied uses fewer loops than the nest")
    what = ", ".join(show_expr(e) for e in computed)
    if operands.hoistable(nest):
        return (f"; {what} is computed as it is read, and hoist-operand's copy of it was not "
                f"chosen (it did not pay, or the family is turned off)")
    return (f"; {what} is computed as it is read, and hoist-operand copies such an operand "
            f"out only where it uses fewer loops than the nest")


def _explain_nest(nest: AccNest, matches: list, library: dict) -> tuple[int, Explanation]:
    """The nearest row to ``nest`` and the first reason it does not apply, with how far it
    got (an index into ``_STAGES``; -1 for an empty library)."""
    best: tuple[int, str, str] = (-1, "", "")
    for name, desc in library.items():
        stage, why = _first_failure(nest, desc, [m for m in matches if m.intrinsic == name])
        if stage > best[0]:
            best = (stage, name, why)
    if best[0] < 0:
        return -1, Explanation(_head(nest.stmt()), None, "no intrinsic is registered for this target")
    return best[0], Explanation(_head(nest.stmt()), best[1], f"{_STAGES[best[0]]}: {best[2]}")


def _first_failure(nest: AccNest, desc, matches: list) -> tuple[int, str]:
    sem = show_expr(semantics_value(desc))
    if not matches:
        return 0, (f"the body computes {show_expr(nest.value)}, which is not "
                   f"(a constant times) {sem} for any choice of operands, even after "
                   "commuting, reassociating and factoring" + _computed_note(nest))
    for m in matches:
        for op, load in zip(desc.inputs, m.loads):
            if load.buffer.dtype != op.dtype:
                return 1, (f"{load.buffer.name} is {load.buffer.dtype} but operand {op.name} of "
                           f"{desc.name} is {op.dtype}")
        if nest.out.dtype != desc.output.dtype:
            return 1, (f"{nest.out.name} is {nest.out.dtype} but the output {desc.output.name} "
                       f"of {desc.name} is {desc.output.dtype}")
    if not any(True for m in matches for _ in bindings(nest, desc, m, check_extents=False)):
        return 2, (f"no way to run its loops as {desc.name}'s dims "
                   f"({', '.join(f'{d.name}<{d.extent}>' for d in desc.dims)}): an operand's "
                   "index does not move along the loop the intrinsic needs, or the output would "
                   "be written twice by one call")
    if not any(True for m in matches for _ in bindings(nest, desc, m)):
        loops = {d.name: d for d in nest.dims}
        shortest = None  # the binding with the fewest dims along too short a loop
        for m in matches:
            for b in bindings(nest, desc, m, check_extents=False):
                short = [f"{d.name}<{d.extent}> along {p}<{loops[p].extent}>"
                         for d in desc.dims for name, p in b.dims
                         if name == d.name and p is not None and loops[p].extent < d.extent]
                if shortest is None or len(short) < len(shortest):
                    shortest = short
        return 3, (f"its loops are too short for {desc.name}, which would run "
                   f"{', '.join(shortest or ['its dims'])}")
    return 4, (f"{desc.name} applies but costs more than scalar code here: operands without the "
               "unit stride it needs would be gathered element by element, and copying them "
               "into a packed temporary does not pay at these sizes")

