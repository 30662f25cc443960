"""Disguises of real code, and their near misses: the forms PolyBench and BLAS-style loops
take, drawn around any descriptor's semantics (``disguises.disguised`` and
``disguises.near_misses`` draw them beside the classic disguises and mutations).

Kinds (``KINDS``), each with the rule that sees through it:

- ``triangular loop bounds``: ``for w in range(o + 1)``, ``range(o)``, ``range(o + 1, N)``,
  ``range(o, N)``, as the parser writes them (the box under a guard, ``script.py``);
  ``triangle written as a guard``: the same domains under an explicit ``if w <= o:`` (in one
  of several spellings) -- ``rules/triangles.py`` (split-domain);
- ``out-of-place update``: ``D[f] = S[g] + e``, ``e + S[g]``, ``S[g] - e`` (``rules/updates.py``);
- ``sum of two products``: ``C += a + b``, ``C = C + a + b``, ``C = a + C + b``, each term the
  intrinsic's body over its own buffers (``nests.py``, ``rules/sums.py``);
- ``runtime scale factor``: ``alpha[0]`` multiplying the body, with ``+=``, ``-=``, ``X = X - e``
  (``rules/scalars.py``);
- ``reads rows it writes later``: one operand is the output itself, read at rows a triangular
  loop only writes later (PolyBench trmm; ``rules/snapshot.py``, then split-domain);
- ``reused temporary under carried loops``: one temporary row per batch iteration, zeroed,
  accumulated and copied out (PolyBench doitgen; ``rules/expand.py``);
- ``scalar local``: ``t = 0.0; for k: t += ...; C[f] = t`` (a one-element temporary,
  ``rules/expand.py``);
- ``operand stored narrower``: one float input of the product kept in a narrower float and
  converted as it is read, ``A[i, k] * f32(B[k, j])`` with ``B`` in f16 (mixed precision;
  ``rules/operands.py``, hoist-operand);
- ``operand scaled along a loop``: one input of the product times a scale along one of its
  loops, ``A[i, k] * sc[k] * B[k, j]`` (a diagonal between two matrices, a norm's gain;
  ``rules/operands.py``, regroup-factors);
- ``zero points``: an integer product of widened loads with a zero point (a runtime scalar
  or a constant) subtracted from one operand or both, ``(i32(A) - z0[0]) * (i32(B) - 7)``
  (quantized inference; ``rules/distribute.py``, distribute-product).

What each construction guarantees follows from the rules' own preconditions and the cost
model's prices (``cost.py``), argued in each ``_*_guarantee`` below; where a figure depends on
what the rule does along a triangle's diagonal, only the boxes its first two cuts make are
counted, which the rule's documented halving fixes.

Near misses (``NEAR_MISSES``), each breaking the precondition of one of those rules, with
why no call of the intrinsic may write the output (``NearMiss.mutation``):

- ``output in a guard``: ``if C[f] > 0.0: C[f] += ...`` inside a reduction loop (one is added
  when the shape has none): whether a term is added depends on the sum so far, so the nest
  is no accumulation, and a call adds its terms whatever the output holds (a program that
  undid the updates whose guard fails could still call it: that is a rewrite no rule makes,
  and this near miss asserts none treats the guard as one it may drop or hoist);
- ``aliasing out-of-place``: ``D[f] = D[f'] + e`` (or, on integers, ``D[f] = S[g] + A *
  D[f']``), ``f'`` the element the previous iteration along a loop wrote;
- ``triangle reads its own writes``: a triangle whose accumulation reads the element the
  previous iteration along a loop wrote (added, or on integers in place of an operand);
- ``factor written by the nest``: ``C[f] += alpha[0] * ...; alpha[0] = C[f]``: every element
  is scaled by the one before it in iteration order;
- ``temporary read before written``: ``C[f] = tmp; tmp = 0.0; tmp += ...`` (each iteration
  reads the previous one's ``tmp``, so it may not be expanded; the output of the near miss is
  ``tmp``, which has one element and so is no call's output window, ``could_fit``).

Where the certificate is a dependence, the loop carrying it is one that every tiling of the
unmutated nest must run along inside a call (``spanned``, from ``could_fit``'s choices): a call
would read elements it writes itself, and no tile can be placed without one. (A dependence
along a loop some tiling avoids, a batch loop, would leave tiles a blocked solve could use.)
On floats the output read back is added, not multiplied: a product of the output's own
values is a recurrence whose rounding compounds past ``runtime.check``'s tolerance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace as _replace
from typing import Optional

from hypothesis import assume, strategies as st

from .. import cost as _cost, ir
from ..ir import Accumulate, Binary, Buffer, Cast, Const, Expr, For, Load, PrimFunc, Stmt, Store, Unary, Var
from .disguises import (_INPUT_NAMES, _ITERATION_LIMIT, _LOOP_NAMES, REAL_FORMS, REAL_KINDS,
                        REAL_MUTATIONS, Disguised, Guarantee, NearMiss, Triangle, _Axis, _Operand, _Shape,
                        _axes, _body, _commuted, _gathered, _guarantee, _hoisted_factor, _hoists, _nest,
                        _ops_per_iteration, _picks, _program, _reload, _shape, _substitute, could_fit)

KINDS = REAL_KINDS
FORMS = REAL_FORMS  # notes of the forms these kinds are written in, as campaign reports count them
NEAR_MISSES = REAL_MUTATIONS

_BASE_LIMIT = _ITERATION_LIMIT // 16  # a triangle's two loops are drawn again, longer
# Programs whose iterations the interpreter must run one by one (a temporary reused, a
# near miss's dependence): one tile per dim where a tile is already large (AMX: 65 536).
_SEQUENTIAL_LIMIT = _ITERATION_LIMIT // 16


# -- shapes ---------------------------------------------------------------------------------


def _operands(s: _Shape) -> list[_Operand]:
    return [s.out, *s.inputs.values(), *s.extra.values()] + ([s.source] if s.source else [])


def _resize(s: _Shape, var: str, n: int) -> None:
    """Loop ``var`` gets extent ``n``; reversed axes along it start from its new end."""
    old = s.extents[var]
    s.extents[var] = n

    def fix(op: _Operand) -> _Operand:
        return _replace(op, axes=tuple(_replace(a, offset=a.offset + (n - old))
                                       if a.var == var and a.coef < 0 else a for a in op.axes))

    s.out = fix(s.out)
    s.inputs = {k: fix(o) for k, o in s.inputs.items()}
    s.extra = {k: fix(o) for k, o in s.extra.items()}
    s.source = fix(s.source) if s.source is not None else None


def _fresh(s: _Shape) -> str:
    return next(n for n in _LOOP_NAMES if n not in s.extents)


def _iterations(s: _Shape) -> int:
    return math.prod(s.extents.values())


@st.composite
def _add_batch(draw, s: _Shape, lo: int = 1, hi: int = 3) -> Optional[str]:
    """A new loop indexing the output (and maybe some inputs), or None past the limit."""
    room = _ITERATION_LIMIT // max(1, _iterations(s))
    if room < lo:
        return None
    b = _fresh(s)
    s.extents[b] = draw(st.integers(lo, min(hi, room)))
    s.batch.append(b)
    axes = list(s.out.axes)
    axes.insert(draw(st.integers(0, len(axes))), _Axis(b))
    s.out = _replace(s.out, axes=tuple(axes))
    inputs = {}
    for k, o in s.inputs.items():
        if draw(st.booleans()):
            ax = list(o.axes)
            ax.insert(draw(st.integers(0, len(ax))), _Axis(b))
            o = _replace(o, axes=tuple(ax))
        inputs[k] = o
    s.inputs = inputs
    s.order.insert(draw(st.integers(0, len(s.order))), b)
    s.value = _reload(s.value, {o.name: o for o in s.inputs.values()}, s.extents)
    return b


def _structural(note: str) -> bool:
    """Notes about the nest's structure, which the builders of temporaries replace."""
    return note.startswith(("perfect nest", "init/reduction/epilogue", "init ", "relu"))


def _tiles(s: _Shape) -> dict[str, int]:
    return {s.dim_of[d.name]: d.extent for d in s.desc.dims}


def _whole(ranges: dict[str, tuple[int, int]], tiles: dict[str, int]) -> int:
    """Iterations of the box ``ranges`` (inclusive) that whole tiles cover."""
    out = 1
    for v, (lo, hi) in ranges.items():
        k = tiles.get(v, 1)
        out *= (hi - lo + 1) // k * k
    return out


def _tiled(s: _Shape, loops) -> tuple[int, int]:
    """The iterations of the nest over ``loops`` (``(var, start, stop)``), and those whole
    tiles of the intrinsic cover."""
    return (math.prod(b - a for _, a, b in loops),
            _whole({v: (a, b - 1) for v, a, b in loops}, _tiles(s)))


def _rho(s: _Shape, gathered: Optional[bool] = None) -> tuple[float, float]:
    """The intrinsic's price per iteration, and what this layout pays (gathered or not)."""
    desc = s.desc
    rho = desc.cost / desc.iterations
    g = _gathered(s) if gathered is None else gathered
    return rho, rho * (_cost.GATHER_PENALTY if g else 1.0)


def _covered(dd: int, rho: float, rho_g: float, scalar: float, extra: float = 0.0) -> float:
    """Iterations the cheapest plan covers at least, when some program the search weighs
    runs ``dd`` iterations in tiles at ``rho_g`` each and the rest at ``scalar`` each, for
    ``extra`` more than a program that leaves them all scalar at ``scalar``: no plan covers
    an iteration for less than ``rho`` or leaves one for less than ``scalar``, so ``c``
    covered iterations cost at least ``rho c + scalar (n - c)``, which may not exceed that
    program's ``rho_g dd + scalar (n - dd) + extra``."""
    if dd <= 0 or rho_g >= scalar:
        return 0.0
    return max(0.0, (dd * (scalar - rho_g) - extra) / (scalar - rho))


def _bound(desc, covered: float, total: float, reason: str) -> Guarantee:
    if covered <= 0:
        return Guarantee(frozenset(), 0.0, "no whole tile is guaranteed to pay for itself: " + reason)
    s_desc = _ops_per_iteration(_body(desc))
    return Guarantee(frozenset({desc.name}), covered * s_desc / total * (1 - 1e-9),
                     f"at least {covered:g} iterations in whole tiles ({reason}); at most "
                     f"{total:g} ops in all")


def _op_count(s: Stmt) -> int:
    from ..calls import op_count

    return op_count(s)


def _spatial_points(s: _Shape) -> int:
    return math.prod(s.extents[v] for v in s.spatial)


# -- triangles ------------------------------------------------------------------------------


def halving(ranges: dict[str, tuple[int, int]], tri: Triangle, depth: int = 2) -> list[dict]:
    """The boxes that split-domain keeps whole among those its first ``depth`` cuts make
    (``rules/triangles.py``, as its docstring states the halving: a box on which the guard
    holds everywhere is kept, one where it holds nowhere dropped, any other cut in two along
    its longest guarded dimension (ties: the later name) at half its extent, a multiple of
    16 and at least 16 once the extent reaches 32, unless that extent is the leaf's or less:
    ``leaf_extent``, 8 for dimensions up to 256). Later cuts only cut the boxes not kept, so
    these are boxes of the rule's own decomposition."""
    coefs, const = tri.fact()
    guarded = sorted(coefs)
    longest = max(ranges[v][1] - ranges[v][0] + 1 for v in guarded)
    leaf = min(64, max(8, 8 * math.ceil(longest / 32 / 8)))
    out: list[dict] = []

    def visit(box: dict[str, tuple[int, int]], level: int) -> None:
        lo = const + sum(c * (box[v][0] if c > 0 else box[v][1]) for v, c in coefs.items())
        hi = const + sum(c * (box[v][1] if c > 0 else box[v][0]) for v, c in coefs.items())
        if hi < 0:
            return
        if lo >= 0:
            out.append(box)
            return
        if level == depth:
            return
        v = max(guarded, key=lambda x: (box[x][1] - box[x][0], x))
        extent = box[v][1] - box[v][0] + 1
        if extent <= leaf:
            return
        half = extent // 2
        if extent >= 32:
            half = max(16, half // 16 * 16)
        a, b = box[v]
        visit({**box, v: (a, a + half - 1)}, level + 1)
        visit({**box, v: (a + half, b)}, level + 1)

    visit(dict(ranges), 0)
    return out


def _triangle_guarantee(s: _Shape, func: PrimFunc, loops: list[tuple[str, int, int]],
                        acc: Stmt) -> Guarantee:
    """A triangle: split-domain splits it whenever the split is cheaper (an ``alternatives``
    family), and it always is when a box holds a whole tile that pays: each box is an
    accumulate nest, priced at its arithmetic (``cost.scalar``) where the guarded nest as
    written pays its arithmetic over the same iterations plus a store per iteration of its
    box (``cost.scalar_stmt``), and the guarded remainders pay what they did. So the
    program's cost is at most the split's with those tiles on the intrinsic: ``_covered``
    over the boxes of the first two cuts (``halving``). The total is bounded by the whole box
    of the loops (a masked remainder sums its whole box into a temporary, ``_masked``), one
    addition per element for the masked adds, and the other statements."""
    desc = s.desc
    if _guard_above_statements(func.body):
        return Guarantee(frozenset(), 0.0, "the guard holds a loop over several statements, which "
                                           "normalisation does not distribute (a guard moves onto "
                                           "the statements of a sequence only, nests._guards_inward)")
    rho, rho_g = _rho(s)
    s_prog = _op_count(acc)
    ranges = {v: (a, b - 1) for v, a, b in loops}
    boxes = halving(ranges, s.tri)
    dd = sum(_whole(box, _tiles(s)) for box in boxes)
    covered = _covered(dd, rho, rho_g, s_prog)
    n_box = math.prod(b - a for _, a, b in loops)
    points = math.prod(b - a for v, a, b in loops if v in s.spatial)
    other = _op_count(func.body) - _admitted(loops, s.tri) * s_prog
    total = n_box * s_prog + points + max(0, other)
    shown = ", ".join("x".join(str(hi - lo + 1) for lo, hi in box.values()) for box in boxes) or "none"
    return _bound(desc, covered, total, f"boxes {shown} of the halving inside the triangle, at "
                                        f"{rho_g:g} per iteration against {s_prog} scalar ops")


def _guard_above_statements(s: Stmt) -> bool:
    """Some ``if`` holds loops around several statements: ``if c: for w: S1; S2``."""
    for x in ir.walk_stmts(s):
        if isinstance(x, ir.If):
            inner = x.then
            while isinstance(inner, For):
                inner = inner.body
            if inner is not x.then and len(ir.stmts_of(inner)) > 1:
                return True
    return False


def _admitted(loops: list[tuple[str, int, int]], tri: Triangle) -> int:
    """Iterations of the nest over ``loops`` that the triangle admits."""
    ranges = {v: (a, b) for v, a, b in loops}
    pairs = sum(1 for o in range(*ranges[tri.outer]) for w in range(*ranges[tri.inner])
                if tri.holds({tri.outer: o, tri.inner: w}))
    return pairs * math.prod(b - a for v, a, b in loops if v not in (tri.outer, tri.inner))


@st.composite
def _triangle(draw, s: _Shape, written: str, rel: Optional[str] = None,
              pair: Optional[tuple[str, str]] = None) -> Optional[Triangle]:
    """Cut ``s``'s accumulation domain by a triangle over two of its loops, both made N long."""
    nesting = s.order if s.perfect else s.spatial + s.reduction
    if len(nesting) < 2:
        if draw(_add_batch(s)) is None:
            return None
        nesting = s.order if s.perfect else s.spatial + s.reduction
    if pair is None:
        k = draw(st.integers(0, len(nesting) - 2))
        m = draw(st.integers(k + 1, len(nesting) - 1))
        pair = (nesting[k], nesting[m])  # the inner loop's range reads the outer one
    o, w = pair
    others = _iterations(s) // (s.extents[o] * s.extents[w])
    cap = min(40, math.isqrt(_ITERATION_LIMIT // max(1, others)))
    if cap < 3:
        return None
    n = draw(st.one_of(st.integers(3, cap), st.integers(max(3, cap // 2), cap)))
    _resize(s, o, n)
    _resize(s, w, n)
    rel = rel or draw(st.sampled_from(["<=", "<", ">", ">="]))
    tri = Triangle(o, w, rel, written, draw(st.integers(0, 3)))
    s.tri = tri
    s.value = _reload(s.value, {op.name: op for op in s.inputs.values()}, s.extents)
    return tri


@st.composite
def _triangle_kind(draw, desc, exact, written: str) -> Disguised:
    s = draw(_shape(desc, exact, plain=True, limit=_BASE_LIMIT))
    tri = draw(_triangle(s, written))
    assume(tri is not None)
    func, nests, acc = _program(s)
    (loops,) = nests
    n = s.extents[tri.outer]
    note = (f"triangular loop bounds: for {tri.inner} in {tri.bound(n)}" if written == "range" else
            f"triangle written as a guard: if {_cond_text(tri)}")
    s.notes.insert(0, note)
    return Disguised(func, desc.name, _triangle_guarantee(s, func, loops, acc), tuple(s.notes))


def _cond_text(tri: Triangle) -> str:
    from ..printer import show_expr

    c = tri.cond()
    return f"{show_expr(c.a)} {c.op} {show_expr(c.b)}"


# -- reads rows it writes later (snapshot) --------------------------------------------------


def _snapshot_route(desc) -> Optional[tuple[str, Optional[str], Optional[str]]]:
    """``(input, d_u, d_r)``: an input of the output's dtype that is the output with one dim
    ``d_u`` read along the reduction dim ``d_r`` (the 6x16 product's ``b[k, j]`` for
    ``c[i, j]``), or with the same dims (``d_u``, ``d_r`` None: a batch loop of the output
    is read along a new loop); None when the descriptor has neither."""
    out = desc.output
    if None in out.dims:
        return None
    reduction = [d.name for d in desc.dims if d.name not in out.dims]
    for op in desc.inputs:
        if op.dtype != out.dtype or None in op.dims:
            continue
        mine, theirs = set(op.dims), set(out.dims)
        if len(reduction) == 1 and mine - theirs == {reduction[0]} and len(theirs - mine) == 1:
            return op.name, next(iter(theirs - mine)), reduction[0]
    for op in desc.inputs:
        if op.dtype == out.dtype and None not in op.dims and set(op.dims) == set(out.dims) \
                and not any(d.extent > 1 for d in desc.dims if d.name not in out.dims):
            return op.name, None, None
    return None


@st.composite
def _snapshot_shape(draw, desc, exact) -> Optional[_Shape]:
    """A shape whose input ``X`` is the output read along loop ``r`` where the output is
    written along ``u``, over the triangle ``r > u``: rows the nest writes only later
    (trmm)."""
    route = _snapshot_route(desc)
    if route is None:
        return None
    name, d_u, d_r = route
    s = draw(_shape(desc, exact, plain=True, limit=_BASE_LIMIT))
    s.init = None  # a fill before the reads would have to stay before them
    if d_u is not None:
        u, r = s.dim_of[d_u], s.dim_of[d_r]
    else:
        u = draw(_add_batch(s, 2, 3)) if not s.batch else s.batch[0]
        if u is None:
            return None
        r = _fresh(s)
        s.extents[r] = 1
        s.order.insert(draw(st.integers(0, len(s.order))), r)
    if [v for v in s.reduction if v != r]:
        return None  # another reduction loop would read rows at other times
    if sum(1 for a in s.out.axes if a.var == u) != 1 or any(a.slide for a in s.out.axes):
        return None
    nesting = s.order if s.perfect else s.spatial + s.reduction
    pair = (u, r) if nesting.index(u) < nesting.index(r) else (r, u)
    rel = ">" if pair == (u, r) else "<"  # r > u
    tri = draw(_triangle(s, draw(st.sampled_from(["range", "guard"])), rel, pair))
    if tri is None:
        return None
    # X is the output with u read along r (both N long now): same buffer, same shape
    x = _Operand("C", s.out.dtype, tuple(_replace(a, var=r) if a.var == u else a for a in s.out.axes))
    old = s.inputs[name].name
    s.inputs = {**s.inputs, name: x}
    s.value = _reload(s.value, {**{o.name: o for o in s.inputs.values()}, old: x}, s.extents)
    return s


@st.composite
def _snapshot_kind(draw, desc, exact) -> Disguised:
    s = draw(_snapshot_shape(desc, exact))
    assume(s is not None)
    func, nests, acc = _program(s)
    (loops,) = nests
    tri = s.tri
    x = next(o for o in s.inputs.values() if o.name == "C")
    read = ", ".join(_text(a.index()) for a in x.axes)
    s.notes.insert(0, f"reads rows it writes later: C[{read}] over {tri.inner} {tri.rel} {tri.outer} "
                      f"({tri.written})")
    return Disguised(func, desc.name, _triangle_guarantee(s, func, loops, acc), tuple(s.notes))


def _text(e: Expr) -> str:
    from ..printer import show_expr

    return show_expr(e)


# -- out-of-place ---------------------------------------------------------------------------


def _oop_applies(desc) -> bool:
    return all(d.extent == 1 for d in desc.dims if d.name not in desc.output.dims)


@st.composite
def _oop_shape(draw, desc, exact, batched: bool = True) -> Optional[_Shape]:
    """A perfect nest in which every iteration writes its own element: the reduction loops
    (dims the output does not index, all of extent 1 in the descriptor) run once."""
    if not _oop_applies(desc):
        return None
    s = draw(_shape(desc, exact, plain=True, batched=batched))
    for v in s.reduction:
        _resize(s, v, 1)
    s.value = _reload(s.value, {o.name: o for o in s.inputs.values()}, s.extents)
    s.perfect, s.init = True, None
    axes = [_replace(a, offset=a.offset + draw(st.integers(0, 1))) for a in s.out.axes]
    if len(axes) > 1 and draw(st.booleans()):
        axes = list(draw(st.permutations(axes)))
    s.source = _Operand("S", s.out.dtype, tuple(axes))
    s.notes = [n for n in s.notes if not _structural(n) or n == "relu epilogue"]
    return s


@st.composite
def _oop_kind(draw, desc, exact) -> Disguised:
    s = draw(_oop_shape(desc, exact))
    assume(s is not None)
    s.form = draw(st.sampled_from(["D = S + e", "D = e + S", "D = S - e"]))
    func, nests, acc = _program(s)
    C = s.out.buffer(s.extents)
    idx = tuple(a.index() for a in s.out.axes)
    value = _reload(s.value, {o.name: o for o in s.inputs.values()}, s.extents)
    minus = s.form == "D = S - e"
    normal = Accumulate(C, idx, Unary("neg", value) if minus else value)
    other = _spatial_points(s) if s.epilogue else 0
    # out-of-place is a normalize family: it applies whenever it is legal, and here it is
    # (the source is another buffer, the value reads no output, each element is written
    # once), leaving the copy (no arithmetic) and this accumulate nest, priced as any;
    # ``-`` is a factor of -1, paid for by a temporary as a constant factor is
    guarantee = _guarantee(s, func, nests, normal, other=other, scaled=minus)
    s.notes[:0] = [f"out-of-place update: {s.form}", f"written {s.form}"]
    return Disguised(func, desc.name, guarantee, tuple(s.notes))


# -- a sum of two products ------------------------------------------------------------------


@st.composite
def _sum_kind(draw, desc, exact) -> Disguised:
    s = draw(_shape(desc, exact, plain=True, limit=_ITERATION_LIMIT // 2))
    used = {o.name for o in s.inputs.values()}
    names = [n for n in _INPUT_NAMES if n not in used]
    second = {op.name: _Operand(names[k], op.dtype, draw(_axes(op, False, s.extents, s.dim_of, s.batch)))
              for k, op in enumerate(desc.inputs)}
    term = draw(_commuted(_substitute(_body(desc), {k: o.load(s.extents) for k, o in second.items()})))
    s.extra = {o.name: o for o in second.values()}
    first = s.value
    a, b = (first, term) if draw(st.booleans()) else (term, first)
    s.value = Binary("+", a, b)
    s.terms = (a, b)
    s.form = draw(st.sampled_from(["+=", "X = X + a + b", "X = a + X + b"]))
    func, nests, acc = _program(s)
    guarantee = _sum_guarantee(s, second, func, nests, acc)
    s.notes = [n for n in s.notes if not n.startswith("written ")]
    s.notes[:0] = ["sum of two products"] + ([f"written {s.form}"] if s.form != "+=" else [])
    return Disguised(func, desc.name, guarantee, tuple(s.notes))


def _sum_guarantee(s: _Shape, second: dict, func: PrimFunc, nests, acc) -> Guarantee:
    """Two products in one update: split-sum (an ``alternatives`` family) weighs one nest
    per term and keeps them when cheaper; each term's nest can run its whole tiles at its
    own layout's price. As written, the nest pays the two terms' arithmetic per iteration
    (``2 s``), split each nest ``s``: any plan covers a term-iteration for at least ``rho``
    or leaves it for at least ``s``, so ``_covered`` adds up over the two terms."""
    desc = s.desc
    if _is_sum(_body(desc)):
        return Guarantee(frozenset(), 0.0, "the intrinsic's body is a sum itself: split-sum "
                                           "splits it too, into terms that are not its body")
    (loops,) = nests
    n, dd = _tiled(s, loops)
    s_term = _ops_per_iteration(_body(desc))
    covered = 0.0
    for inputs in (s.inputs, second):
        rho, rho_g = _rho(_replace(s, inputs=inputs))
        covered += _covered(dd, rho, rho_g, s_term)
    other = _op_count(func.body) - n * _op_count(acc)
    return _bound(desc, covered, n * 2 * s_term + other, f"two terms of {n} iterations, {dd} in "
                                                         f"whole tiles")


def _is_sum(e: Expr) -> bool:
    """``e`` is a sum or a difference, or the negation of one (what split-sum cuts apart)."""
    while isinstance(e, Unary) and e.op == "neg":
        e = e.a
    return isinstance(e, Binary) and e.op in ("+", "-")


# -- a runtime scale factor -----------------------------------------------------------------


def _factors(e: Expr) -> list[Expr]:
    if isinstance(e, Binary) and e.op == "*":
        return _factors(e.a) + _factors(e.b)
    return [e]


@st.composite
def _factor_kind(draw, desc, exact) -> Disguised:
    s = draw(_shape(desc, exact, plain=True))
    assume(s.value.dtype == s.out.dtype)
    alpha = _Operand("alpha", s.out.dtype, (_Axis(None),))
    s.extra = {"alpha": alpha}
    a = alpha.load(s.extents)
    where = draw(st.sampled_from(["left", "right", "inside"]))
    v = s.value
    if where == "inside" and isinstance(v, Binary) and v.op == "*":
        value = Binary("*", Binary("*", v.a, a), v.b)
    elif where == "right":
        value = Binary("*", v, a)
    else:
        value = Binary("*", a, v)
    s.value = value
    s.form = draw(st.sampled_from(["+=", "-=", "X = X - e", "X = X + e", "X = e + X"]))
    func, nests, acc = _program(s)
    guarantee = _factor_guarantee(s, func, nests, v)
    s.notes = [n for n in s.notes if not n.startswith("written ")]
    s.notes[:0] = [f"runtime scale factor: alpha[0] on the {where}"] + \
        ([f"written {s.form}"] if s.form != "+=" else [])
    return Disguised(func, desc.name, guarantee, tuple(s.notes))


def _factor_guarantee(s: _Shape, func: PrimFunc, nests, product: Expr) -> Guarantee:
    """``alpha[0]`` times the body. scalar-factor (an ``alternatives`` family) keeps the
    cheapest of the nest as written and two rewrites, each paying an extra price on top of
    the product without the factor (``s`` per scalar iteration):

    - ``scale-operand``, where a scaled copy of one load is a part of the product as
      written (``alpha * A * B`` is ``(alpha * A) * B``): a multiply (and a negation for
      ``-``) and a store per element of the copy, exactly;
    - ``scale-temporary``, with a reduction loop: a store and two ops per output point, a
      scan of ``alpha`` and its negated copy, at most 8 more, and the guard's scan of each
      operand (three per element) with its flag (at most three per element of one extent).

    Which factors it takes out is its docstring's rule (loads indexed by output loops only,
    and constants; when that leaves no load, loads with constant indices only): when that
    takes an operand of the intrinsic out with ``alpha`` (an axpy's scalar ``a``), what is
    left is not the intrinsic's body, and nothing is guaranteed. Otherwise the cheaper
    rewrite with its whole tiles on the intrinsic costs ``opt``; when that is under the nest
    as written (``s + 1`` or ``s + 2`` per iteration), the program chosen costs no more, so
    either it takes the factor out (paying at least the smaller extra price: ``_covered``
    with the difference of the two prices) or it runs the nest as written with some tiles
    on the intrinsic (``rho c + (s + 1) (n - c) <= opt``). The total is the largest of the
    three programs' arithmetic. contract-pair, chosen in the same extraction, may sum the
    body once where the nest sums it once per batch point: ``_contracted``."""
    desc = s.desc
    (loops,) = nests
    ext = s.extents
    n, dd = _tiled(s, loops)
    body = _reload(product, {o.name: o for o in s.inputs.values()}, ext)
    alpha = s.extra["alpha"].load(ext)
    factors = [alpha] + _factors(body)
    out_vars = set().union(*(ir.var_names(a.index()) for a in s.out.axes))

    def split(scalar):
        return [f for f in factors if isinstance(f, Const) or scalar(f)], \
               [f for f in factors if not (isinstance(f, Const) or scalar(f))]

    taken, rest = split(lambda f: isinstance(f, Load) and ir.var_names(f) <= out_vars)
    if not any(isinstance(x, Load) for f in rest for x in ir.walk_expr(f)):
        taken, rest = split(lambda f: isinstance(f, Load) and not ir.var_names(f))
    if taken != [alpha]:
        return Guarantee(frozenset(), 0.0, "scalar-factor takes an operand of the intrinsic out "
                                           "with the factor")
    s_t = _ops_per_iteration(body)
    minus = s.form in ("-=", "X = X - e")
    s_prog = s_t + 1 + (1 if minus else 0)
    points = _spatial_points(s)
    prices, totals = [], [n * s_prog]  # (lowest, highest) extra price of each rewrite
    from ..rules.scalars import same_grouping
    written = _reload(s.value, {**{o.name: o for o in s.inputs.values()}, **s.extra}, ext)
    for k, x in enumerate(_factors(body)):
        if isinstance(x, Load) and same_grouping(
                _times(_factors(body), k, Binary("*", alpha, x)), written):
            size = math.prod(ext[v] for v in ir.var_names(x))
            per = 2 if minus else 1
            prices.append((size * (per + 1), size * (per + 1)))
            totals.append(n * s_t + size * per)
    if s.reduction:
        # the guard scans alpha and each operand once (an add and a multiply into the flag
        # per element, and a store), its flag as wide as one extent: initialised, then summed
        scans = dict.fromkeys(x for f in _factors(body) for x in ir.walk_expr(f)
                              if isinstance(x, Load))
        scan = sum(math.prod(ext[v] for v in ir.var_names(x)) for x in scans)
        width = max(ext.values())
        prices.append((3 * points + 3 * scan, 3 * points + 8 + 3 * scan + 3 * width))
        totals.append(n * s_t + 2 * points + 4 + 2 * scan + width)
    rho, rho_g = _rho(s)
    if not prices or dd <= 0 or rho_g >= s_t:
        return Guarantee(frozenset(), 0.0, "no rewrite of the factor is guaranteed to pay")
    low, high = min(p[0] for p in prices), min(p[1] for p in prices)
    if _hoisted_factor(func, s.out.name, s_prog):
        # hoist-operand copies out a product of converted operands (with the factor or
        # without it, over loops a batch dim is not among): the nest left does less work an
        # iteration, binds no tile (the intrinsic reads the narrow operands), and may be
        # rewritten again (its sum taken once per batch point): programs not counted here
        return Guarantee(frozenset(), 0.0, "hoist-operand copies a product of converted operands "
                                           "out, which this bound does not count")
    opt = rho_g * dd + s_t * (n - dd) + high
    if opt >= n * s_prog:
        return Guarantee(frozenset(), 0.0, f"taking the factor out costs {high} or more, the "
                                           f"nest as written {n * s_prog}")
    covered = min(_covered(dd, rho, rho_g, s_t, high - low), (n * s_prog - opt) / (s_prog - rho))
    other = _op_count(func.body) - n * s_prog
    kept = _bound(desc, covered, max(totals) + max(0, other),
                  f"{dd} of {n} iterations in whole tiles at {rho_g:g} against {s_t} scalar ops, "
                  f"the factor taken out for {low} to {high}, against {n * s_prog} as written")
    return _contracted(s, kept, loops, body, alpha, minus, opt, max(0, other))


def _contracted(s: _Shape, kept: Guarantee, loops, body: Expr, alpha: Load, minus: bool,
                best: float, other: int) -> Guarantee:
    """``kept`` (what the nest as written and scalar-factor's rewrites guarantee), or less
    where contract-pair (``rules/contract.py``, a ``sites`` family chosen in the same
    extraction) may win. Its rewrite sums the body's two loads ``x * y`` first, over the
    loops they use (``P``), into a temporary ``ct_T`` over those of them the output uses
    (``K``), and adds ``alpha[0] * ct_T[K]`` over the output's loops (on floats behind the
    finite guard, left out here)::

        for t, w, v in grid(3, 4, 8):               for w in range(4):
            C[t, w] += alpha[0] * A[w, v] * B[v]        ct_T[w] = 0.0
                                               ->   for w, v in grid(4, 8):
                                                        ct_T[w] += A[w, v] * B[v]
                                                    for t, w in grid(3, 4):
                                                        C[t, w] += alpha[0] * ct_T[w]

    When a batch loop ``t`` of the output is no loop of ``x`` or ``y``, the product is summed
    once where the nest as written sums it once per ``t``: fewer operations in all, and so
    fewer of them on the intrinsic. The bound of the nest as written counts each of its
    ``n`` iterations as covered or scalar, which this program does not run, so it holds only
    for programs of the other families. A program of this one is at least as cheap as the
    same program with the whole tiles of the pair's nest on the intrinsic (the extraction
    plans each item for itself and adds their prices): ``_covered`` over that nest's
    iterations, against at most its arithmetic, the guard's scan of ``alpha``, ``x`` and
    ``y`` (two ops per element scanned, and the flag's sum), and the last nest's (a multiply
    and an add per iteration, a negation for ``-``, and a scaled copy of ``ct_T`` should
    scale-operand rewrite it). The guarantee is the smaller of the two bounds: the
    extraction keeps one program. This family is left out when it cannot be chosen: its
    cheapest conceivable program (the scan at the vector rate, ``ct_T``'s fill, every
    iteration of the pair's nest at ``rho``, and of the last one at ``min(rho, 1)``, or at
    its add where the intrinsic cannot fit it, ``could_fit``: scalar code, or scale-operand's
    ``C += copy``, whose one load no product of the intrinsic's operands is) costs more than
    ``best``, a program of the other families. Where contract-pair would pair
    ``alpha`` with an operand instead, the last nest holds the intrinsic's body over a
    temporary, and no bound is stated."""
    from itertools import combinations

    desc = s.desc
    ext = s.extents
    factors = [alpha] + _factors(body)
    loads = [k for k, f in enumerate(factors) if isinstance(f, Load)]
    if len(loads) < 3 or any(not isinstance(f, (Load, Const)) or f.dtype != s.out.dtype for f in factors):
        return kept  # contract-pair applies to products of three loads or more, of one dtype
    out_vars = set().union(*(ir.var_names(a.index()) for a in s.out.axes))
    pairs = []
    for a, b in combinations(loads, 2):
        pair = ir.var_names(factors[a]) | ir.var_names(factors[b])
        rest = set().union(*(ir.var_names(f) for k, f in enumerate(factors) if k not in (a, b)))
        keep = pair & (rest | out_vars)
        if pair != keep:
            pairs.append((a, b, pair, keep))
    if not pairs:
        return kept
    if len(factors) != 3 or [(a, b) for a, b, _, _ in pairs] != [(1, 2)]:
        return Guarantee(frozenset(), 0.0, "contract-pair may sum alpha[0] with an operand of "
                                           "the intrinsic first, which this model does not bound")
    _, _, pair, keep = pairs[0]
    order = [v for v, _, _ in loops]
    inner = [v for v in order if v in pair]
    outer = [v for v in order if v in keep or v not in pair]
    if not set(outer) <= out_vars:
        return Guarantee(frozenset(), 0.0, "contract-pair leaves a loop no operand uses around "
                                           "alpha[0] * ct_T, which this model does not bound")
    n_in = math.prod(ext[v] for v in inner)
    n_out = math.prod(ext[v] for v in outer)
    size = math.prod(ext[v] for v in order if v in keep)
    tiles = _tiles(s)
    whole = all(v in pair for v, k in tiles.items() if k > 1)
    dd = _whole({v: (0, ext[v] - 1) for v in inner}, tiles) if whole else 0
    temp = _Operand("ct_T", s.out.dtype, tuple(_Axis(v) for v in order if v in keep) or (_Axis(None),))
    rho, rho_g = _rho(_replace(s, out=temp))
    s_t = _ops_per_iteration(body)
    # the guard scans the three loads, on floats only (integers need none: finite.guard)
    scanned = sum(math.prod(ext[v] for v in ir.var_names(factors[k])) for k in loads) \
        if ir.is_float(s.out.dtype) else 0
    fits = could_fit(desc, outer, s.out.load(ext), [alpha, temp.load(ext)])
    lowest = (_cost.PER_PADDED_ELEMENT * 3 * scanned + _cost.moved(size) + rho * n_in
              + (min(rho, 1.0) if fits else 1.0) * n_out)
    if lowest > best:
        return kept
    neg = 1 if minus else 0
    total = (2 * scanned + (max(ext.values()) - 1 if scanned else 0) + n_in * s_t + n_out * (2 + neg)
             + size * (1 + neg) + other)
    contracted = _bound(desc, _covered(dd, rho, rho_g, s_t), total,
                        f"contract-pair summing {' * '.join(_text(factors[k]) for k in (1, 2))} "
                        f"first: {dd} of {n_in} iterations in whole tiles at {rho_g:g} against "
                        f"{s_t} scalar ops, then {n_out} of alpha[0] * ct_T")
    if contracted.min_coverage >= kept.min_coverage:
        return kept
    return _replace(contracted, reason=f"{contracted.reason}; the other programs: {kept.reason}")


def _times(factors: list[Expr], k: int, part: Expr) -> Expr:
    """The product of ``factors`` (as ``scale-operand`` writes it) with the ``k``-th one
    replaced by ``part``."""
    out = None
    for j, f in enumerate(factors):
        f = part if j == k else f
        out = f if out is None else Binary("*", out, f)
    return out


# -- temporaries ----------------------------------------------------------------------------


def _temp_program(s: _Shape, kind: str, init: str, out_form: str, name: str = "disguised",
                  read_first: bool = False):
    """A temporary per iteration of loops around it: ``kind`` "scalar" (``t[0]`` inside every
    loop of the output) or "row" (``T`` over the output's dims, inside its batch loops,
    doitgen). ``init``: "zero" or "load" (the output's value); ``out_form``: "=", "+=",
    "relu". ``read_first``: the output takes the temporary before this iteration writes it.
    Returns the program, the accumulation's loops and statement, and the temporary's layout
    once expanded (its loops' axes, then its own)."""
    ext = s.extents
    C = s.out.buffer(ext)
    idx = tuple(a.index() for a in s.out.axes)
    value = _reload(s.value, {o.name: o for o in s.inputs.values()}, ext)
    if kind == "scalar":
        around = list(s.spatial)
        own: list[str] = []
        t_axes: tuple[_Axis, ...] = (_Axis(None),)
        T = Buffer("tmp", C.dtype, (1,))
    else:
        around = [v for v in s.order if v in s.batch]
        own = [v for v in s.spatial if v not in s.batch]
        by_axis = [a.var for a in s.out.axes if a.var is not None and a.var not in s.batch]
        t_axes = tuple(_Axis(v) for v in by_axis) or (_Axis(None),)
        T = Buffer("T", C.dtype, tuple(ext[v] for v in by_axis) or (1,))
    t_idx = tuple(a.index() for a in t_axes)
    tload = Load(T, t_idx)
    first = Store(T, t_idx, Const(0, C.dtype) if init == "zero" else Load(C, idx))
    acc = Accumulate(T, t_idx, value) if s.form == "+=" else Store(T, t_idx, Binary("+", tload, value))
    out = {"=": Store(C, idx, tload), "+=": Accumulate(C, idx, tload),
           "relu": Store(C, idx, Binary("max", tload, Const(0, C.dtype)))}[out_form]
    full = lambda vs: [(v, 0, ext[v]) for v in vs]  # noqa: E731
    red = [v for v in s.order if v not in s.spatial]
    if kind == "scalar":
        stmts = ([out] if read_first else []) + [first, _nest(full(red), acc)] + ([] if read_first else [out])
        body = _nest(full(around), ir.seq(*stmts))
        loops = full(around) + full(red)
    else:
        inner_order = [v for v in s.order if v not in s.batch]
        if s.perfect:
            parts = [_nest(full(own), first), _nest(full(inner_order), acc), _nest(full(own), out)]
        else:
            parts = [_nest(full(own), ir.seq(first, _nest(full(red), acc))), _nest(full(own), out)]
        if read_first:
            parts = [parts[-1]] + parts[:-1]
        body = _nest(full(around), ir.seq(*parts))
        loops = full(around) + full(inner_order)
    params = [o.buffer(ext) for o in s.inputs.values()] + [C]
    func = PrimFunc(name, tuple(params), body, allocs=(T,))
    expanded = _Operand(T.name, C.dtype, tuple(_Axis(v) for v in around) + t_axes)
    return func, loops, acc, expanded


def _temp_guarantee(s: _Shape, func: PrimFunc, loops, acc: Stmt, expanded: _Operand,
                    other: int) -> Guarantee:
    """A reused temporary: expand (an ``alternatives`` family) gives it a copy per iteration
    of the loops that reuse it (every iteration writes it before reading it, and nothing
    reads it after them: no restore), the loops distribute, and the accumulation into the
    copy is an accumulate nest, in the copy's layout. The expanded program is kept when it
    is cheaper and has more on intrinsics: as written, the blocked loop is one statement
    that pays its arithmetic and a store per iteration of the accumulation; expanded, the
    fill and the copy out pay what they did, the accumulation only its arithmetic, and the
    tiles that pay run on the intrinsic. So ``_covered`` on the expanded nest."""
    desc = s.desc
    pseudo = _replace(s, out=expanded)
    rho, rho_g = _rho(pseudo)
    s_prog = _op_count(acc)
    n, dd = _tiled(s, loops)
    covered = _covered(dd, rho, rho_g, s_prog)
    return _bound(desc, covered, n * s_prog + other,
                  f"{dd} of {n} iterations in whole tiles of the expanded nest at {rho_g:g} "
                  f"against {s_prog} scalar ops")


@st.composite
def _temp_kind(draw, desc, exact, kind: str) -> Disguised:
    s = draw(_shape(desc, exact, plain=True, limit=_SEQUENTIAL_LIMIT))
    if kind == "row" and not any(s.extents[b] >= 2 for b in s.batch):
        assume(draw(_add_batch(s, 2, 3)) is not None)
    init = draw(st.sampled_from(["zero", "zero", "load"]))
    out_form = draw(st.sampled_from(["=", "relu"] + (["+="] if init == "zero" else [])))
    s.form = draw(st.sampled_from(["+=", "X = X + e"]))
    func, loops, acc, expanded = _temp_program(s, kind, init, out_form)
    points = _spatial_points(s)
    other = points if out_form != "=" else 0
    guarantee = _temp_guarantee(s, func, loops, acc, expanded, other)
    notes = [n for n in s.notes if not _structural(n) and not n.startswith("written ")]
    t = "tmp" if kind == "scalar" else "T"
    head = ("scalar local" if kind == "scalar" else "reused temporary under carried loops") + \
        f": {t} = {'0' if init == 'zero' else 'C'}, {t} += ..., C {out_form} {t}"
    return Disguised(func, desc.name, guarantee, tuple([head] + notes + (
        [f"written {s.form}"] if s.form != "+=" else [])))


# -- an operand stored narrower --------------------------------------------------------------

# the narrower float an input of each dtype is stored in
NARROWER = {"f32": "f16", "f64": "f32"}


@dataclass(frozen=True)
class _Narrow(_Operand):
    """An operand stored in the narrower ``dtype`` and read converted to ``wide``."""

    wide: str = "f32"

    def load(self, extents: dict[str, int]) -> Expr:
        return Cast(self.wide, super().load(extents))


def _narrowable(desc) -> list[str]:
    """The intrinsic's inputs of a dtype with a narrower float that its body reads unconverted
    as a factor of its product (of two factors or more)."""
    factors = _factors(_body(desc))
    if len(factors) < 2:
        return []
    return [op.name for op in desc.inputs if op.dtype in NARROWER and
            any(isinstance(f, Load) and f.buffer.name == op.name for f in factors)]


@st.composite
def _narrow_kind(draw, desc, exact) -> Disguised:
    s = draw(_shape(desc, exact, plain=True))
    name = draw(st.sampled_from(_narrowable(desc)))
    o = s.inputs[name]
    s.inputs = {**s.inputs, name: _Narrow(o.name, NARROWER[o.dtype], o.axes, o.dtype)}
    func, nests, _ = _program(s)
    guarantee = _narrow_guarantee(s, func, nests, name)
    s.notes[:0] = [f"operand stored narrower: {o.name} in {NARROWER[o.dtype]}, read as "
                   f"{o.dtype}({o.name}[...])"]
    return Disguised(func, desc.name, guarantee, tuple(s.notes))


def _read_copy(s: _Shape, name: str, items: list, temps: list) -> Optional[tuple[float, float]]:
    """``_rho`` of ``s`` with its input ``name`` read from the one temporary of a rewrite of
    hoist-operand's family (``items``: its copy, then the nest reading it), laid out as the
    copy is: its loops in the order the rule writes them, unit steps. None where the nest
    reads the copy other than once at its loops."""
    reads = [ld for ld in ir.loads_of(items[-1].value) if ld.buffer.name == temps[0].name]
    if len(reads) != 1 or not all(isinstance(i, Var) for i in reads[0].indices):
        return None
    laid = _Operand(temps[0].name, temps[0].dtype, tuple(_Axis(i.name) for i in reads[0].indices))
    return _rho(_replace(s, inputs={**s.inputs, name: laid}))


def _narrow_guarantee(s: _Shape, func: PrimFunc, loops_of, name: str) -> Guarantee:
    """One input converted as it is read: no tile binds the nest as written (the intrinsic
    reads the wide dtype from memory), which costs ``s`` per iteration (a conversion is no
    operation, ``calls.op_count``). hoist-operand (``rules/operands.py``, a ``sites``
    family) offers the copy of the converted operand over the loops it uses, where those are
    fewer than the nest's, priced as the pipeline prices that statement
    (``cost.scalar_stmt``: an element moved per element), then the nest reading the copy, a
    plain product again, laid out as the copy is (its loops in the order the rule writes
    them, unit steps: a strided, reversed or offset source is laid out plainly). That program
    with the whole tiles on the intrinsic costs ``copy + rho' dd + s (n - dd)``. Where that
    is under ``s n``, the extraction chooses a program no dearer, which then is that copy and
    a plan of the new nest (the nest as written covers nothing and costs ``s n``), so the
    plan covers ``c`` iterations with ``rho c + s (n - c) <= rho' dd + s (n - dd)``."""
    desc = s.desc
    (loops,) = loops_of
    n, dd = _tiled(s, loops)
    buffer = s.inputs[name].name
    hoists = _hoists(func, s.out.name)
    if len({id(nest) for nest, *_ in hoists}) > 1:
        return Guarantee(frozenset(), 0.0, "the accumulation is not one nest once normalised")
    if not any(any(ld.buffer.name == buffer for e in copied for ld in ir.loads_of(e))
               for _, copied, _, _ in hoists):
        return Guarantee(frozenset(), 0.0, f"hoist-operand copies no factor reading {buffer} out "
                                           f"(it uses every loop of the nest)")
    if len(hoists) != 1 or len(hoists[0][1]) != 1 or not isinstance(hoists[0][1][0], Cast):
        # a product of factors copied whole would leave the nest fewer operations than the
        # bound below counts: not argued
        return Guarantee(frozenset(), 0.0, "hoist-operand may copy more than the conversion")
    ((nest, _, items, temps),) = hoists
    fill = items[0]
    copy = _cost.scalar_stmt(fill)
    laid = _read_copy(s, name, items, temps)
    if laid is None:
        return Guarantee(frozenset(), 0.0, "the copy is read at other than its loops")
    rho, rho_g = laid
    s_t = _ops_per_iteration(nest.value)
    if dd <= 0 or rho_g >= s_t:
        return Guarantee(frozenset(), 0.0, "no whole tile is cheaper than the scalar body")
    if copy >= dd * (s_t - rho_g):
        return Guarantee(frozenset(), 0.0, f"the copy costs {copy:g}, the whole tiles save at most "
                                           f"{dd * (s_t - rho_g):g}")
    other = max(0, _op_count(func.body) - n * s_t)
    return _bound(desc, _covered(dd, rho, rho_g, s_t), n * s_t + other + _op_count(fill),
                  f"the converted {buffer} copied out for {copy:g}; {dd} of {n} iterations in whole "
                  f"tiles at {rho_g:g} against {s_t} scalar ops")


# -- an operand scaled along a loop ----------------------------------------------------------


def _scalable(s: _Shape) -> list[str]:
    """The inputs read as a factor of the body (a plain load) that use some but not all of
    the nest's loops: a scale along one of their loops is copied in with them."""
    loops = set(s.extents)
    factors = _factors(s.value)
    return [name for name, o in s.inputs.items()
            if o.load(s.extents) in factors and 0 < len(ir.var_names(o.load(s.extents))) < len(loops)]


@st.composite
def _scaled_kind(draw, desc, exact) -> Disguised:
    s = draw(_shape(desc, exact, plain=True))
    names = _scalable(s)
    assume(names)
    name = draw(st.sampled_from(names))
    o = s.inputs[name]
    x = o.load(s.extents)
    var = draw(st.sampled_from(sorted(ir.var_names(x))))
    sc = _Operand("sc", o.dtype, (_Axis(var),))
    s.extra = {"sc": sc}
    f = sc.load(s.extents)
    scaled = Binary("*", x, f) if draw(st.booleans()) else Binary("*", f, x)
    s.value = ir.map_loads(s.value, lambda ld: scaled if ld == x else ld)
    func, nests, _ = _program(s)
    guarantee = _scaled_guarantee(s, func, nests, name)
    s.notes[:0] = [f"operand scaled along a loop: {o.name}[...] times sc[{var}]"]
    return Disguised(func, desc.name, guarantee, tuple(s.notes))


def _stmt_of(item) -> Stmt:
    """A program item (a statement, or a nest or guard as its statement) as a statement."""
    return item.stmt() if hasattr(item, "stmt") else item


def _statements_ops(items) -> int:
    return sum(_op_count(_stmt_of(p)) for p in items)


def _scaled_guarantee(s: _Shape, func: PrimFunc, loops_of, name: str) -> Guarantee:
    """One input times a scale along one of its loops, ``(X * sc[v]) * Y``: no tile binds the
    nest as written (three factors), which costs ``s`` per iteration. regroup-factors
    (``rules/operands.py``, in the hoist-operand family) offers, among others, the copy of
    ``X * sc`` over ``X``'s loops, exact, priced as the pipeline prices that statement
    (``cost.scalar_stmt``), then the nest reading the copy, a product of two operands laid
    out as the copy is; that program with the whole tiles on the intrinsic costs ``copy +
    rho' dd + t (n - dd)``, ``t`` the intrinsic body's scalar price per iteration (a
    multiply-add). The extraction chooses a program no dearer. Every program leaves an
    iteration for ``t`` at least and covers one for ``rho`` at least, and pays no copy at
    least, so its ``c`` covered iterations satisfy ``rho c + t (n - c) <= copy + rho' dd + t
    (n - dd)``: the bound is the best such offer's. The programs counted for the coverage's
    denominator: the nest as written and each offer's items (a regrouping behind a guard
    counts its scan and both branches)."""
    desc = s.desc
    (loops,) = loops_of
    n, dd = _tiled(s, loops)
    buffer = s.inputs[name].name
    offers = _hoists(func, s.out.name)
    if len({id(nest) for nest, *_ in offers}) > 1:
        return Guarantee(frozenset(), 0.0, "the accumulation is not one nest once normalised")
    t = _ops_per_iteration(_body(desc))
    s_prog = _ops_per_iteration(offers[0][0].value) if offers else t + 1
    best, why = 0.0, f"regroup-factors offers no exact copy of {buffer} scaled"
    for _, copied, items, temps in offers:
        if len(temps) != 1 or not isinstance(items[0], Stmt):  # a guard: not counted
            continue
        if not any(ld.buffer.name == buffer for e in copied for ld in ir.loads_of(e)):
            continue
        laid = _read_copy(s, name, items, temps)
        if laid is None:
            continue
        rho, rho_g = laid
        copy = _cost.scalar_stmt(items[0])
        c = _covered(dd, rho, rho_g, t, copy)
        if c > best:
            best, why = c, (f"{buffer} scaled, copied out for {copy:g}; {dd} of {n} iterations in "
                            f"whole tiles at {rho_g:g} against {t} scalar ops")
    if best <= 0:
        return Guarantee(frozenset(), 0.0, why)
    other = max(0, _op_count(func.body) - n * s_prog)
    most = max([n * s_prog] + [_statements_ops(items) for _, _, items, _ in offers])
    return _bound(desc, best, most + other, why)


# -- zero points ----------------------------------------------------------------------------


def _widened_bytes(body: Expr) -> list[Cast]:
    """The factors of ``body`` that are loads widened to its integer dtype, when the body is
    the product of two such loads and no other factor; else none."""
    factors = _factors(body)
    if not ir.is_int(body.dtype) or ir.bits(body.dtype) < 16 or len(factors) != 2:
        return []
    if not all(isinstance(f, Cast) and f.dtype == body.dtype and isinstance(f.a, Load) for f in factors):
        return []
    return factors


def _zero_points_apply(desc) -> bool:
    """An integer product of two widened loads, other than bytes of one signedness (those
    are also shift-bytes' to rewrite, which this kind's bound does not count)."""
    factors = _widened_bytes(_body(desc))
    dtypes = {f.a.dtype for f in factors}
    return bool(factors) and not (len(dtypes) == 1 and dtypes <= {"i8", "u8"})


@st.composite
def _zero_kind(draw, desc, exact) -> Disguised:
    s = draw(_shape(desc, exact, plain=True))
    factors = _widened_bytes(s.value)
    assume(len(factors) == 2 and s.value.dtype == s.out.dtype)
    dt = s.out.dtype
    sides = draw(st.sampled_from([(0,), (1,), (0, 1)]))
    s.extra, notes = {}, []
    shifted = {}
    for k in sides:
        if draw(st.booleans()):
            z = _Operand(f"z{k}", dt, (_Axis(None),))
            s.extra[z.name] = z
            zero: Expr = z.load(s.extents)
        else:
            zero = Const(draw(st.integers(1, 200)), dt)
        shifted[factors[k]] = Binary("-", factors[k], zero)
        notes.append(f"{factors[k].a.buffer.name} less {_text(zero)}")
    s.value = ir.product(shifted.get(f, f) for f in _factors(s.value))
    func, nests, _ = _program(s)
    guarantee = _zero_guarantee(s, func, nests)
    s.notes[:0] = [f"zero points: {', '.join(notes)}"]
    return Disguised(func, desc.name, guarantee, tuple(s.notes))


def _zero_guarantee(s: _Shape, func: PrimFunc, loops_of) -> Guarantee:
    """Zero points subtracted from the intrinsic's widened operands, ``(i32(a) - za) *
    (i32(b) - zb)``: no row reads a difference, and the nest as written costs ``s`` per
    iteration. distribute-product (``rules/distribute.py``) offers the body multiplied out:
    the intrinsic's body over the operands as laid out (``a * b``, ``n`` iterations) and the
    corrections, each priced here as the statement it is left as scalar code
    (``cost.scalar_stmt``; the extraction plans each item no dearer). The extraction chooses a
    program no dearer than that one. Every program runs the ``n`` products, as written, over
    hoist-operand's i32 copies of the differences, or multiplied out (shift-bytes does not
    apply: the operands differ in signedness), leaving each for ``t`` at least or covering
    it for ``rho`` at least, and pays no correction at least: ``_covered`` with the
    corrections' price. The denominator: the largest of the nest as written and the
    multiplied-out program, plus hoist-operand's copies, plus the corrections again (a
    correction rewritten deeper costs a few operations an element more at most)."""
    from .. import nests as _nests
    from ..names import Names
    from ..rules import distribute

    desc = s.desc
    (loops,) = loops_of
    n, dd = _tiled(s, loops)
    norm = _nests.normalize(func)
    accs = [p for p in _nests.items(norm) if isinstance(p, _nests.AccNest) and p.out.name == s.out.name]
    if len(accs) != 1:
        return Guarantee(frozenset(), 0.0, "the accumulation is not one nest once normalised")
    (nest,) = accs
    offer = distribute.multiplied(nest, Names.of(norm))
    if offer is None:
        return Guarantee(frozenset(), 0.0, "distribute-product offers nothing for this body")
    items, _ = offer
    # the bytes' product: summed once where the operands leave an output loop out (a batch
    # dim), fewer products than written, which this bound does not count
    bare = [p for p in items if isinstance(p, _nests.AccNest) and p.dims == nest.dims and _widened_bytes(p.value)]
    if len(bare) != 1:
        return Guarantee(frozenset(), 0.0, "distribute-product sums the bytes' product once per "
                                           "point of the loops its operands use")
    corrections = [p for p in items if p is not bare[0]]
    price = sum(_cost.scalar_stmt(_stmt_of(p)) for p in corrections)
    rho, rho_g = _rho(s)
    t = _ops_per_iteration(_body(desc))
    covered = _covered(dd, rho, rho_g, t, price)
    s_prog = _ops_per_iteration(nest.value)
    corrections_ops = _statements_ops(corrections)
    copies = sum(_statements_ops(offer_items[:-1]) for _, _, offer_items, _ in _hoists(func, s.out.name))
    other = max(0, _op_count(func.body) - n * s_prog)
    total = max(n * s_prog, n * t + corrections_ops) + copies + corrections_ops + other
    return _bound(desc, covered, total,
                  f"multiplied out, the corrections priced {price:g}; {dd} of {n} iterations in "
                  f"whole tiles at {rho_g:g} against {t} scalar ops")


# -- the kinds, drawn -----------------------------------------------------------------------


def applies(desc, kind: str) -> bool:
    """Whether ``kind`` (of ``KINDS`` or ``NEAR_MISSES``) can be drawn for ``desc``."""
    if kind in ("out-of-place update", "aliasing out-of-place"):
        return _oop_applies(desc)
    if kind == "reads rows it writes later":
        return _snapshot_route(desc) is not None
    if kind in ("runtime scale factor", "factor written by the nest"):
        return _ops_per_iteration(_body(desc)) >= 2 and _body(desc).dtype == desc.output.dtype
    if kind == "operand stored narrower":
        return bool(_narrowable(desc))
    if kind == "operand scaled along a loop":
        body = _body(desc)
        return ir.is_float(body.dtype) and sum(isinstance(f, Load) for f in _factors(body)) >= 2
    if kind == "zero points":
        return _zero_points_apply(desc)
    return True


@st.composite
def real_disguised(draw, desc, kind: str, exact: Optional[bool] = None) -> Disguised:
    """A program holding ``desc`` in the disguise ``kind`` (one of ``KINDS``)."""
    if kind == "triangular loop bounds":
        return draw(_triangle_kind(desc, exact, "range"))
    if kind == "triangle written as a guard":
        return draw(_triangle_kind(desc, exact, "guard"))
    if kind == "out-of-place update":
        return draw(_oop_kind(desc, exact))
    if kind == "sum of two products":
        return draw(_sum_kind(desc, exact))
    if kind == "runtime scale factor":
        return draw(_factor_kind(desc, exact))
    if kind == "reads rows it writes later":
        return draw(_snapshot_kind(desc, exact))
    if kind == "reused temporary under carried loops":
        return draw(_temp_kind(desc, exact, "row"))
    if kind == "scalar local":
        return draw(_temp_kind(desc, exact, "scalar"))
    if kind == "operand stored narrower":
        return draw(_narrow_kind(desc, exact))
    if kind == "operand scaled along a loop":
        return draw(_scaled_kind(desc, exact))
    if kind == "zero points":
        return draw(_zero_kind(desc, exact))
    raise ValueError(f"no disguise kind {kind!r} (there are: {', '.join(KINDS)})")


# -- near misses ----------------------------------------------------------------------------


def spanned(desc, loops, out: Load, loads) -> Optional[set[str]]:
    """The loops every fitting choice of loops for the intrinsic's dims uses (``could_fit``'s
    choices): a call always runs along them. None when nothing fits."""
    picks = [set(p) for p in _picks(desc, loops, out, loads)]
    if not picks:
        return None
    return set.intersection(*picks)


def _nest_loads(s: _Shape) -> tuple[Load, list[Load]]:
    return s.out.load(s.extents), [ld for ld in ir.walk_expr(s.value) if isinstance(ld, Load)]


@st.composite
def _carried_loop(draw, s: _Shape) -> Optional[str]:
    """A loop every tile of ``s``'s nest runs along, of extent 2 at least; the output's axis
    along it is moved one element on, so that the element one step back exists."""
    out, loads = _nest_loads(s)
    every = spanned(s.desc, list(s.extents), out, loads)
    options = sorted(v for v in every or () if s.extents[v] >= 2 and
                     sum(1 for a in s.out.axes if a.var == v) == 1)
    if not options:
        return None
    p = draw(st.sampled_from(options))
    s.out = _replace(s.out, axes=tuple(
        (_replace(a, offset=a.offset + a.coef) if a.coef > 0 else _replace(a, pad=a.pad - a.coef))
        if a.var == p else a for a in s.out.axes))
    return p


def _same_dtype_input(s: _Shape) -> Optional[str]:
    """An input the output one step back can stand for: of the output's dtype, and integer
    (on floats a product of the output's own values is a recurrence whose rounding
    compounds, past what ``runtime.check`` allows for a reduction; added, it does not)."""
    if ir.is_float(s.out.dtype):
        return None
    for o in s.inputs.values():
        if o.dtype == s.out.dtype:
            return o.name
    return None


@st.composite
def _output_in_guard(draw, desc) -> Optional[NearMiss]:
    s = draw(_shape(desc, exact=True, plain=True, limit=_SEQUENTIAL_LIMIT))
    if not any(s.extents[v] >= 2 for v in s.reduction):
        r = _fresh(s)
        s.extents[r] = draw(st.integers(2, 3))
        s.order.insert(draw(st.integers(0, len(s.order))), r)
    s.out_guard = draw(st.sampled_from([">", ">=", "<"]))
    func, _, _ = _program(s, name="near_miss")
    return NearMiss(func, desc.name, "C",
                    f"output in a guard: each term is added under if C[...] {s.out_guard} 0, which "
                    "reads the sum so far, so the nest is no accumulation; a call adds its terms "
                    "whatever C holds (only another program, one that undoes the updates whose "
                    "guard fails, could use it)")


@st.composite
def _aliasing_oop(draw, desc) -> Optional[NearMiss]:
    s = draw(_oop_shape(desc, True, batched=False))  # no batch loop for a tile to run along instead
    if s is None:
        return None
    p = draw(_carried_loop(s))
    if p is None:
        return None
    x = _same_dtype_input(s)
    if x is not None and draw(st.booleans()):
        s.prev = (p, x)
        s.form = draw(st.sampled_from(["D = S + e", "D = e + S"]))
        what = f"the update reads C one step back along {p} in place of {x}"
    else:
        s.prev, s.source, s.form = (p, None), None, "+="
        what = f"the update starts from C one step back along {p} instead of another buffer"
    func, _, _ = _program(s, name="near_miss")
    if s.prev[1] is None:  # C[f] = C[f'] + e: written out, not as an accumulation of C[f]
        func = _as_store(func)
    return NearMiss(func, desc.name, "C",
                    f"aliasing out-of-place: {what}, which the previous iteration wrote; every "
                    f"tile runs along {p}, so a call would read elements it writes itself")


def _as_store(func: PrimFunc) -> PrimFunc:
    """``C[f] += C[f'] + e`` written ``C[f] = C[f'] + e``."""
    def leaf(s: Stmt) -> Stmt:
        if isinstance(s, Accumulate) and isinstance(s.value, Binary) and s.value.op == "+":
            return Store(s.buffer, s.indices, s.value)
        return s
    return _replace(func, body=ir.map_stmt(func.body, leaf, lambda e: e))


@st.composite
def _add_reduction(draw, s: _Shape) -> str:
    """A new loop the output does not move along, read by one input along a new axis."""
    r = _fresh(s)
    s.extents[r] = draw(st.integers(2, 3))
    name = draw(st.sampled_from(sorted(s.inputs)))
    op = s.inputs[name]
    axes = list(op.axes)
    axes.insert(draw(st.integers(0, len(axes))), _Axis(r))
    s.inputs = {**s.inputs, name: _replace(op, axes=tuple(axes))}
    s.order.insert(draw(st.integers(0, len(s.order))), r)
    s.value = _reload(s.value, {o.name: o for o in s.inputs.values()}, s.extents)
    return r


@st.composite
def _triangle_own_writes(draw, desc) -> Optional[NearMiss]:
    s = draw(_shape(desc, exact=True, plain=True, limit=_BASE_LIMIT, batched=False))
    if len(s.order) < 2:
        draw(_add_reduction(s))
    tri = draw(_triangle(s, draw(st.sampled_from(["range", "guard"]))))
    if tri is None:
        return None
    p = draw(_carried_loop(s))
    if p is None:
        return None
    x = _same_dtype_input(s)
    s.prev = (p, x)
    func, _, _ = _program(s, name="near_miss")
    what = f"in place of {x}" if x is not None else "added to the update"
    return NearMiss(func, desc.name, "C",
                    f"triangle reads its own writes: over {tri.inner} {tri.rel} {tri.outer}, the "
                    f"accumulation reads C one step back along {p} ({what}), which the previous "
                    f"iteration wrote; every tile runs along {p}, so a call would read elements "
                    "it writes itself")


@st.composite
def _factor_written(draw, desc) -> Optional[NearMiss]:
    s = draw(_shape(desc, exact=True, plain=True, limit=_SEQUENTIAL_LIMIT))
    if s.value.dtype != s.out.dtype:
        return None
    alpha = _Operand("alpha", s.out.dtype, (_Axis(None),))
    s.extra = {"alpha": alpha}
    s.value = Binary("*", alpha.load(s.extents), s.value)
    s.perfect, s.factor_written = False, True
    func, _, _ = _program(s, name="near_miss")
    return NearMiss(func, desc.name, "C",
                    "factor written by the nest: each element is scaled by alpha[0], which the "
                    "element before it in iteration order set to its own final value, so every "
                    "element depends on the one before it and no call computes two of them")


@st.composite
def _temp_read_first(draw, desc) -> Optional[NearMiss]:
    s = draw(_shape(desc, exact=True, plain=True, limit=_SEQUENTIAL_LIMIT))
    out_form = draw(st.sampled_from(["=", "+="]))
    s.form = draw(st.sampled_from(["+=", "X = X + e"]))
    func, loops, acc, _ = _temp_program(s, "scalar", "zero", out_form, name="near_miss",
                                        read_first=True)
    tl = Load(acc.buffer, acc.indices)
    if could_fit(desc, [v for v, _, _ in loops], tl, [ld for ld in ir.walk_expr(s.value)
                                                      if isinstance(ld, Load)]):
        return None
    return NearMiss(func, desc.name, "tmp",
                    "temporary read before written: C takes tmp before the iteration writes it, "
                    "so tmp carries values from one iteration to the next and may not be "
                    "expanded; tmp has one element, which no call's output window can be")


_NEAR = {"output in a guard": _output_in_guard, "aliasing out-of-place": _aliasing_oop,
         "triangle reads its own writes": _triangle_own_writes,
         "factor written by the nest": _factor_written,
         "temporary read before written": _temp_read_first}


@st.composite
def real_near_miss(draw, desc, kind: str) -> NearMiss:
    """A near miss of kind ``kind`` (one of ``NEAR_MISSES``)."""
    if kind not in _NEAR:
        raise ValueError(f"no near-miss kind {kind!r} (there are: {', '.join(NEAR_MISSES)})")
    case = draw(_NEAR[kind](desc))
    assume(case is not None)
    return case
