"""Strassen's algorithm as a rewrite of matmul nests into seven smaller matmul nests.

One level splits M, N and K in halves and computes ``C += A @ B`` block-wise with seven
products instead of eight (the classic formulation, 18 block additions)::

    S1 = A11 + A22   T1 = B11 + B22   P1 = S1 @ T1
    S2 = A21 + A22                    P2 = S2 @ B11
                     T3 = B12 - B22   P3 = A11 @ T3
                     T4 = B21 - B11   P4 = A22 @ T4
    S5 = A11 + A12                    P5 = S5 @ B22
    S6 = A21 - A11   T6 = B11 + B12   P6 = S6 @ T6
    S7 = A12 - A22   T7 = B21 + B22   P7 = S7 @ T7
    C11 += P1 + P4 - P5 + P7          C12 += P3 + P5
    C21 += P2 + P4                    C22 += P1 - P2 + P3 + P6

Sound in any commutative ring (so exactly for wrap-around integers); on floats it changes
rounding, with the error bound of ``error_factor``. Each ``P = S @ T`` is an accumulate nest
``P[i, j] += S[i, k] * T[k, j]`` over zero-filled temporaries, so the ordinary matcher maps it
onto intrinsics, and a further level applies to it the same way. A block read as it is (``A11``)
is not copied: the product reads it in place, at an offset. Odd extents are peeled: Strassen
runs on the even part and the leftover row, column and slice of the reduction stay ordinary
accumulate nests.

Non-finite values: the block sums spread a NaN or an Inf of ``A`` or ``B`` over blocks of ``C``
the product as written leaves finite (one NaN in ``A[0, 0]`` makes two block rows of NaNs),
so on floats the levels run behind a scan of ``A`` and ``B`` (``finite.guard``) and the product
as written runs when one of their elements is NaN or Inf.

The ``strassen`` family (kind ``spans``, ``rules/__init__.py``) has two hooks. ``spans``,
under ``--strassen auto``: for each product it owns, the item with each level count that
blocks of at least ``AUTO_MIN_BLOCK`` allow, so that the one extraction (``choose.py``)
chooses each product's level count, none included, beside the other families' rewrites and
on the products they make (a runtime scale factor's product on the fast path of its guard,
a product a producer was inlined into, a regrouped chain's product)::

    C[b, i, j] += A[b, i, k] * B[b, k, j]    # 2 x 128^3: two levels
    Z[b, i, j] += X[b, i, k] * Y[b, k, j]    # 2 x 96^3: one level

The levels of a plain product whose every extent a level halves are the program-level
e-graph's (``strassen-level``, ``rules/matrices.py``), one product alone and odd extents
(peeled there) included; this family owns batched products and those whose ranges do not
start at 0. ``forced``, the family's directive, under ``--strassen N``: exactly N levels on
every matmul product of the program the extraction chose, whatever they cost.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Optional, Sequence

from .. import ir
from ..ir import Accumulate, Binary, Buffer, Const, Expr, For, Load, Store
from ..names import Names
from ..nests import AccNest, Dim
# an addition's second read, reported as a span's ``extra`` (``Alternative.extra_cost`` of
# forced levels) as the program-level e-graph charges it
from ..program import ADDITION_TRAFFIC
from . import finite, matmul
from .matmul import Access, Alternative, MatMul, _plain, recognize

# Under "auto", a level is only offered (and planned, which takes saturation time) when every
# block it creates has at least this extent in M, N and K; the cost model then decides.
# Measured on this machine (Zen 3, AVX2, one thread, ``strassen_bench``): at n = 512 one level
# ties with the plain program, from n = 1024 on one and two levels win (two by 2.5x at 1024,
# mostly because the smaller blocks fit in cache, which the plain program's loops are not
# tiled for; re-measure when lowering tiles for cache). The scalar cost model first prefers one level at
# n = 2048 (1.04x the plain cost at 1024, 0.96x at 2048), at or above the measured crossover.
AUTO_MIN_BLOCK = 512
# A forced level ("--strassen N") applies wherever the halves are at least this big.
FORCED_MIN_BLOCK = 2
MAX_AUTO_LEVELS = 3
# A forced level count above this is refused outright: blocks halve at every level, so even
# i64-sized extents run out of levels long before, and 7^N products are far past any budget.
MAX_LEVELS = 16

# Signed (row, col) blocks of A summed into S_k and of B into T_k; then the signed P_k per C block.
_S = (
    (((0, 0), 1), ((1, 1), 1)),
    (((1, 0), 1), ((1, 1), 1)),
    (((0, 0), 1),),
    (((1, 1), 1),),
    (((0, 0), 1), ((0, 1), 1)),
    (((1, 0), 1), ((0, 0), -1)),
    (((0, 1), 1), ((1, 1), -1)),
)
_T = (
    (((0, 0), 1), ((1, 1), 1)),
    (((0, 0), 1),),
    (((0, 1), 1), ((1, 1), -1)),
    (((1, 0), 1), ((0, 0), -1)),
    (((1, 1), 1),),
    (((0, 0), 1), ((0, 1), 1)),
    (((1, 0), 1), ((1, 1), 1)),
)
_C = {
    (0, 0): ((0, 1), (3, 1), (4, -1), (6, 1)),
    (0, 1): ((2, 1), (4, 1)),
    (1, 0): ((1, 1), (3, 1)),
    (1, 1): ((0, 1), (1, -1), (2, 1), (5, 1)),
}


# ---------------------------------------------------------------------------
# one level


def _halves(d: Dim) -> tuple[int, int]:
    """(half extent, even extent) of a dim."""
    h = d.extent // 2
    return h, 2 * h


def max_levels(mm: MatMul, min_block: int) -> int:
    """How many levels fit before some block is smaller than ``min_block``."""
    e = [mm.m.extent, mm.n.extent, mm.k.extent]
    lv = 0
    while all(x // 2 >= min_block for x in e):
        e = [x // 2 for x in e]
        lv += 1
    return lv


def _nest(dims: Sequence[Dim], body: ir.Stmt) -> ir.Stmt:
    for d in reversed(dims):
        body = For(d.name, d.start, d.stop, body)
    return body


def _restrict(nest: AccNest, ranges: dict[str, tuple[int, int]]) -> Optional[AccNest]:
    dims = tuple(Dim(d.name, *ranges[d.name]) if d.name in ranges else d for d in nest.dims)
    if any(d.extent <= 0 for d in dims):
        return None
    return replace(nest, dims=dims)


@dataclass
class _Out:
    parts: list = field(default_factory=list)
    allocs: list = field(default_factory=list)
    addition_elements: int = 0
    depth: int = 0


def _sum(terms: list[tuple[int, Expr]]) -> Expr:
    e = terms[0][1] if terms[0][0] > 0 else ir.Unary("neg", terms[0][1])
    for sign, t in terms[1:]:
        e = Binary("+" if sign > 0 else "-", e, t)
    return e


def strassen(mm: MatMul, levels: int, names: Names, min_block: int, out: _Out, depth: int = 1) -> None:
    """Append to ``out`` the items computing ``mm.nest`` with ``levels`` Strassen levels (fewer
    where blocks would fall under ``min_block``)."""
    nest = mm.nest
    hm, em = _halves(mm.m)
    hn, en = _halves(mm.n)
    hk, ek = _halves(mm.k)
    if levels <= 0 or min(hm, hn, hk) < min_block:
        out.parts.append(nest)
        return
    out.depth = max(out.depth, depth)
    m, n, k = mm.m, mm.n, mm.k
    dt = mm.dtype
    batch = tuple(Dim(d.name, 0, d.extent) for d in mm.batch)
    bshift = {d.name: d.start for d in mm.batch}
    order = [d.name for d in nest.dims]

    def dims(*named: tuple[str, int]) -> tuple[Dim, ...]:
        ds = {d.name: d for d in batch}
        ds.update({name: Dim(name, 0, ext) for name, ext in named})
        return tuple(ds[nm] for nm in order if nm in ds)

    def temp(kind: str, rows: tuple[str, int], cols: tuple[str, int]) -> Access:
        buf = Buffer(names.numbered(f"st_{kind}"), dt, tuple(d.extent for d in batch) + (rows[1], cols[1]))
        out.allocs.append(buf)
        return Access(buf, tuple((d.name, 0) for d in batch) + ((rows[0], 0), (cols[0], 0)))

    def block(acc: Access, rd: Dim, cd: Dim, h_r: int, h_c: int, r: int, c: int) -> Load:
        shift = dict(bshift)
        shift[rd.name] = rd.start + r * h_r
        shift[cd.name] = cd.start + c * h_c
        return acc.load(shift)

    def operand(acc: Access, rd: Dim, cd: Dim, h_r: int, h_c: int, terms, kind: str) -> Load:
        """A block of ``acc``, or a temporary holding the signed sum of blocks."""
        if len(terms) == 1 and terms[0][1] == 1:
            (r, c), _ = terms[0]
            return block(acc, rd, cd, h_r, h_c, r, c)
        t = temp(kind, (rd.name, h_r), (cd.name, h_c))
        value = _sum([(s, block(acc, rd, cd, h_r, h_c, r, c)) for (r, c), s in terms])
        out.parts.append(_nest(dims((rd.name, h_r), (cd.name, h_c)), Store(t.buffer, t.indices(), value)))
        out.addition_elements += t.buffer.size
        return t.load()

    products = []
    for s_terms, t_terms in zip(_S, _T):
        x = operand(mm.a, m, k, hm, hk, s_terms, "S")
        y = operand(mm.b, k, n, hk, hn, t_terms, "T")
        p = temp("P", (m.name, hm), (n.name, hn))
        out.parts.append(_nest(dims((m.name, hm), (n.name, hn)), Store(p.buffer, p.indices(), Const(0, dt))))
        sub = AccNest(dims((m.name, hm), (n.name, hn), (k.name, hk)), p.buffer, p.indices(),
                      matmul.product(mm.scale, x, y))
        sub_mm = recognize(sub)
        assert sub_mm is not None, "a Strassen product is a matmul by construction"
        strassen(sub_mm, levels - 1, names, min_block, out, depth + 1)
        products.append(p)
    for (r, c), terms in _C.items():
        shift = dict(bshift)
        shift[m.name] = m.start + r * hm
        shift[n.name] = n.start + c * hn
        value = _sum([(s, products[q].load()) for q, s in terms])
        body = Accumulate(mm.c.buffer, mm.c.indices(shift), value)
        out.parts.append(_nest(dims((m.name, hm), (n.name, hn)), body))
        out.addition_elements += products[0].buffer.size
    # leftovers of odd extents: the last row of M, then of N, then the last slice of K
    for piece in (
        {m.name: (m.start + em, m.stop)},
        {m.name: (m.start, m.start + em), n.name: (n.start + en, n.stop)},
        {m.name: (m.start, m.start + em), n.name: (n.start, n.start + en), k.name: (k.start + ek, k.stop)},
    ):
        rest = _restrict(nest, piece)
        if rest is not None:
            out.parts.append(rest)


# ---------------------------------------------------------------------------
# the pipeline's hook


Path = tuple[int, ...]  # an item's position: its index, then its index in a guard's fast path


def _matmuls(parts: Sequence, prefix: Path = ()) -> dict[Path, MatMul]:
    """The matmul nests among ``parts`` by position, those on the fast path of an earlier
    rewrite's guard (a regrouped chain's products) included."""
    found = {}
    for q, p in enumerate(parts):
        if isinstance(p, AccNest):
            mm = recognize(p)
            if mm is not None:
                found[prefix + (q,)] = mm
        elif isinstance(p, finite.Guarded):
            found.update(_matmuls(p.fast, prefix + (q,)))
    return found


def products(parts: Sequence, levels: int, min_block: int, only: Optional[set[Path]] = None) -> int:
    """Matmul products ``rewrite(parts, levels, ...)`` would create: 7 per level applied, the
    levels of each nest capped by its shapes (``max_levels``). Counted before any is built."""
    return sum(7 ** min(levels, max_levels(mm, min_block)) for q, mm in _matmuls(parts).items()
               if (only is None or q in only) and max_levels(mm, min_block) >= 1)


def rewrite(parts: Sequence, levels: int, names: Names, min_block: int,
            only: Optional[set[Path]] = None) -> Optional[Alternative]:
    """``parts`` with ``levels`` Strassen levels on every matmul nest (or those in ``only``),
    or None when no nest admits a level."""
    mms = _matmuls(parts)
    chosen = {q for q, mm in mms.items()
              if (only is None or q in only) and max_levels(mm, min_block) >= 1}
    if not chosen:
        return None
    out = _Out()
    out.parts = _rewritten(parts, (), mms, chosen, levels, names, min_block, out)
    return Alternative(out.parts, out.allocs, f"{levels} Strassen level(s)", levels,
                       ADDITION_TRAFFIC * out.addition_elements, out.depth)


def _rewritten(parts: Sequence, prefix: Path, mms: dict[Path, MatMul], chosen: set[Path],
               levels: int, names: Names, min_block: int, out: _Out) -> list:
    items = []
    for q, p in enumerate(parts):
        here = prefix + (q,)
        if isinstance(p, finite.Guarded):
            fast = _rewritten(p.fast, here, mms, chosen, levels, names, min_block, out)
            items.append(replace(p, fast=tuple(fast)))
            continue
        if here not in chosen:
            items.append(p)
            continue
        guarded, one = _guarded(p, mms[here], levels, names, min_block)
        out.allocs += one.allocs
        out.addition_elements += one.addition_elements
        out.depth = max(out.depth, one.depth)
        items += guarded
    return items


def _guarded(nest: AccNest, mm: MatMul, levels: int, names: Names,
             min_block: int) -> tuple[list, _Out]:
    """``nest`` (the product ``mm``) with ``levels`` Strassen levels, behind the finite guard
    on floats (Strassen's sums spread a NaN or Inf over other blocks: only on finite
    operands): the items, and the levels' ``_Out`` (its temporaries the guard's too)."""
    one = _Out()
    strassen(mm, levels, names, min_block, one)
    return finite.guard([(nest, mm.a.load()), (nest, mm.b.load())], one.parts, [nest], names,
                        one.allocs), one


def forced(best, search):
    """``best`` (``pipeline.Choice``) with exactly ``search.strassen`` levels on every matmul
    product when that is a level count (``--strassen N``), whatever they cost: a directive
    the pipeline applies to the program the one extraction chose (``Family.directive``,
    ``rules/__init__.py``), products whose levels an e-graph chose included; ``best`` as it
    is under ``"auto"`` and ``"off"``. Past ``budgets.Budgets.strassen_products`` matmul
    products it raises ``BudgetError``."""
    from ..budgets import BudgetError

    mode = search.strassen
    if not isinstance(mode, int) or mode == 0:
        return best
    need = products(best.parts, mode, FORCED_MIN_BLOCK)
    if need > search.budgets.strassen_products:
        raise BudgetError(f"{mode} Strassen level(s) make {need:,} matmul products",
                          "strassen-products", search.budgets.strassen_products)
    alt = rewrite(best.parts, mode, search.names, FORCED_MIN_BLOCK)
    if alt is None:
        return best
    planned = search.plan(alt.parts)
    planned.allocs = list(alt.allocs) + planned.allocs
    planned.cost += alt.extra_cost
    return replace(best, planned=planned, strassen_levels=alt.applied_levels)


# ---------------------------------------------------------------------------
# the spans hook: a product's level counts, chosen by the one extraction


def owned(item, rules: Sequence, path: Path = ()) -> list[tuple[Path, MatMul]]:
    """The matmul products of ``item`` (itself, or on the fast path of an unsettled guard,
    by their path in it) whose levels this family offers under ``--strassen auto``: not those
    the program-level e-graph splits alone (``matrices.splits_alone`` by ``rules``, the
    e-graph's rules in force), nor those on the fast path of a ``settled`` guard (an
    e-graph's extraction, or a level already taken)."""
    from . import matrices  # which imports this module

    if isinstance(item, finite.Guarded):
        if item.settled:
            return []
        return [x for r, p in enumerate(item.fast) for x in owned(p, rules, path + (r,))]
    if not isinstance(item, AccNest):
        return []
    mm = recognize(item)
    if mm is None or max_levels(mm, AUTO_MIN_BLOCK) < 1:
        return []
    if _plain(mm) and matrices.splits_alone(mm, rules):
        return []
    return [(path, mm)]


def _put(item, path: Path, new: list) -> list:
    """The items replacing ``item`` when its part at ``path`` becomes ``new``."""
    if not path:
        return new
    r, rest = path[0], path[1:]
    fast = item.fast[:r] + tuple(_put(item.fast[r], rest, new)) + item.fast[r + 1:]
    return [replace(item, fast=fast)]


def _at(item, path: Path):
    for r in path:
        item = item.fast[r]
    return item


def levelled(item, path: Path, mm: MatMul, levels: int, names: Names) -> tuple:
    """``item`` with ``levels`` Strassen levels on its product at ``path``, behind the finite
    guard on floats (marked settled: the span holds these levels): (its items, the
    temporaries they use, the additions' cost the plans do not show, the levels applied)."""
    guarded, out = _guarded(_at(item, path), mm, levels, names, AUTO_MIN_BLOCK)
    guarded = [replace(p, settled=True) if isinstance(p, finite.Guarded) else p for p in guarded]
    return (tuple(_put(item, path, guarded)), tuple(out.allocs),
            ADDITION_TRAFFIC * out.addition_elements, out.depth)


def spans(items, around, search) -> list:
    """Under ``--strassen auto``, for each product of ``items`` this family owns (``owned``),
    the item rewritten with each level count 1.. that blocks of at least ``AUTO_MIN_BLOCK``
    allow (at most ``MAX_AUTO_LEVELS``, and only while the level's ``7^levels`` products stay
    within ``budgets.Budgets.strassen_products``): the ``spans`` hook (``choose.py``), so that
    the one extraction chooses the level count of each product, none included, together with
    the other families' rewrites (a product another rewrite made, such as one a runtime scale
    factor was taken out of, on the fast path of its guard, included). Each rewrite is built
    once per item and search: equal items in the lists the extraction lays out share it."""
    from . import matrices  # which imports this module
    from .choose import Span

    if search.strassen != "auto":
        return []
    rules = [] if "matmul" in search.rules_off else matrices.in_force(search)
    made = search.memo.setdefault("strassen-levels", {})
    # the temporaries of the levels built: a product into one is a level's own, whose levels
    # the span of each level count holds (on floats its settled guard says so already)
    ours = search.memo.setdefault("strassen-temporaries", set())
    out = []
    for q, item in enumerate(items):
        if not isinstance(item, (AccNest, finite.Guarded)) or \
                isinstance(item, AccNest) and item.out.name in ours:
            continue
        for path, mm in owned(item, rules):
            top = min(max_levels(mm, AUTO_MIN_BLOCK), MAX_AUTO_LEVELS)
            for lv in range(1, top + 1):
                if 7 ** lv > search.budgets.strassen_products:
                    break
                key = (item, path, lv)
                if key not in made:
                    made[key] = levelled(item, path, mm, lv, search.names)
                    ours.update(b.name for b in made[key][1])
                new, temps, extra, applied = made[key]
                out.append(Span(q, q + 1, new, temps, extra, applied))
    return out


def error_factor(levels: int) -> float:
    """Bound on how much ``levels`` Strassen levels multiply the forward error of a matmul:
    each level at most 12 times (Higham, Accuracy and Stability of Numerical Algorithms,
    2nd ed., Theorem 23.3: ``|C - C^| <= [(n/n0)^log2(12) (n0^2 + 5 n0) - 5n] u |A||B|``, the
    ``(n/n0)^log2(12)`` factor being 12 per level against the ordinary product's ``n0``)."""
    return 12.0 ** levels
