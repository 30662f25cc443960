"""Where an adjoint goes: the adjoint of a read ``A[f(i)]``, ``dA[f(i)] += v`` over the
loops ``i``, as a gather wherever the index map solves over the integers, else as the
scatter, which needs no condition (``rewrite.autodiff`` builds on this).

- Every dimension a lone loop variable (plus a constant): the variables that index ``dA``
  become its outer loops, the rest reductions; with the gradient initialised in place when
  this is its only contribution and covers it::

      for i, j, k: dA[i, k] += dC[i, j] * B[k, j]   ->   for i, k: dA[i, k] = 0.0
                                                              for j: dA[i, k] += dC[i, j] * B[k, j]

- A window ``a * h + b * rh + c`` whose ``h`` only one load reads (the output's adjoint, at
  ``h`` alone), a factor of the whole value: solved for ``h`` by reading that load through
  a copy padded, and spread by
  the stride ``a``, so that every read is in bounds and lands on zeros where no forward
  iteration was (the transposed convolution)::

      for h, rh: dP[h + rh] += dY[h] * W[rh]  ->  dY_pad[h + 2] = dY[h]
                                                  for h, rh: dP[h] += dY_pad[h - rh + 2] * W[rh]

- Anything else (``//`` or ``%`` in the index, a variable in two dimensions, a stride on a
  lone variable): the scatter over the forward's loops.
"""

from __future__ import annotations

from typing import Callable, Collection, Optional

from . import ir
from .affine import Affine, affine
from .ir import INDEX, Accumulate, Binary, Buffer, Const, Expr, For, If, Load, Stmt, Store, Unary, Var
from .names import Names

__all__ = ["build_nest", "copy_of", "fconst", "fill", "i64", "index_expr", "place"]


# ---------------------------------------------------------------------------
# building IR


def i64(n: int) -> Const:
    return Const(n, INDEX)


def index_expr(a: Affine) -> Expr:
    """An index expression from an affine form, terms with positive coefficients first."""
    out: Optional[Expr] = None
    for v, c in sorted(a.terms, key=lambda t: t[1] < 0):
        term: Expr = Var(v) if abs(c) == 1 else Binary("*", i64(abs(c)), Var(v))
        if out is None:
            out = term if c > 0 else Unary("neg", term)
        else:
            out = Binary("+" if c > 0 else "-", out, term)
    if out is None:
        return i64(a.const)
    if a.const:
        out = Binary("+" if a.const > 0 else "-", out, i64(abs(a.const)))
    return out


def fconst(x: float, dtype: str) -> Const:
    return Const(x, dtype)


def build_nest(loops, conds, body: Stmt) -> Stmt:
    for c in reversed(conds):
        body = If(c, body)
    for v, lo, hi in reversed(loops):
        body = For(v, lo, hi, body)
    return body




def fill(b: Buffer, value: Expr, names: Names) -> Stmt:
    """``b[...] = value`` over the whole buffer, on loop names fresh in ``names``."""
    fresh = names.copy()
    vs = [fresh.fresh(x) for x in ("i", "j", "k", "l", "m", "n", "o", "p")[:b.ndim]] if b.ndim <= 8 \
        else [fresh.fresh("i") for _ in range(b.ndim)]
    return build_nest([(v, 0, s) for v, s in zip(vs, b.shape)], (),
                      Store(b, tuple(Var(v) for v in vs), value))


def copy_of(dst: Buffer, src: Buffer, names: Names) -> Stmt:
    """``dst[...] = src[...]`` over the whole buffer."""
    s = fill(dst, fconst(0.0, dst.dtype), names)
    leaf = [x for x in ir.walk_stmts(s) if isinstance(x, Store)][0]
    return _swap_leaf(s, Store(dst, leaf.indices, Load(src, leaf.indices)))


def _swap_leaf(s: Stmt, leaf: Stmt) -> Stmt:
    if isinstance(s, For):
        return For(s.var, s.start, s.stop, _swap_leaf(s.body, leaf))
    return leaf


# ---------------------------------------------------------------------------
# placing a contribution: gather, or scatter


def place(target: Buffer, index: tuple[Expr, ...], value: Expr, loops: tuple, conds: tuple, *,
          adjoints: Collection[Buffer], names: Names, sole: bool, windows: bool = True,
          label: Callable[[Buffer], str] = lambda b: b.name) -> tuple[Stmt, bool, list[Buffer]]:
    """``target[index] += value`` over ``loops`` (``(var, start, stop)``, outermost first)
    under ``conds``, as a gather where the index map solves over the integers: the statement,
    whether it also initialises all of ``target`` (only when ``sole``: no other statement
    writes it), and the temporaries it needs (a padded adjoint). ``windows=False`` solves no
    window (inside a recurrence, whose variable stays fixed); ``adjoints`` are the loads a
    window is solved through first; ``label`` names a padded copy after its buffer."""
    affs = [affine(e) for e in index]
    scatter = build_nest(loops, conds, Accumulate(target, index, value))
    if any(a is None for a in affs):
        return scatter, False, []
    spans = {v: (lo, hi - 1) for v, lo, hi in loops}
    count: dict[str, int] = {}
    for a in affs:
        for v in a.vars:
            if v in spans:
                count[v] = count.get(v, 0) + 1
    if any(x > 1 for x in count.values()):
        return scatter, False, []
    cond_vars = {x.name for e in conds for x in ir.walk_expr(e) if isinstance(x, Var)}
    # the load a window is solved through: an adjoint's first (the transposed convolution);
    # only a factor of the whole value, whose padding zeros make the whole term zero where
    # no forward iteration was (in ``dY * (A + B)`` a zero of B's padding leaves ``dY * A``)
    candidates = sorted(_factor_loads(value), key=lambda ld: (ld.buffer not in adjoints, str(ld)))
    for src in [None] + (candidates if windows else []):
        placed = _solve(affs, index, spans, value, cond_vars, src)
        if placed is not None:
            break
    else:
        return scatter, False, []
    out_loops, new_index, eliminate = placed
    allocs: list[Buffer] = []
    pre: list[Stmt] = []
    if eliminate:
        pre, repl, pad = _stuff(names, loops, src, eliminate, spans, label)
        allocs.append(pad)
        value = ir.map_loads(value, lambda ld: repl if ld == src else ld)
    out_vars = {v for v, _, _ in out_loops}
    # reductions along a row (the last, contiguous index of a load) run innermost: a
    # transposed convolution sums over its channels inside the window, as a forward one does
    red_loops = sorted((l for l in loops if l[0] not in out_vars), key=lambda l: _along_rows(value, l[0]))
    full = (sole and not conds and len(out_loops) == len(new_index) == target.ndim
            and all(isinstance(e, Var) and e.name == v for e, (v, _, _) in zip(new_index, out_loops))
            and all(lo == 0 and hi == size for (_, lo, hi), size in zip(out_loops, target.shape)))
    idx = tuple(new_index)
    if full:
        if red_loops:
            inner = ir.seq(Store(target, idx, fconst(0.0, target.dtype)),
                           build_nest(red_loops, (), Accumulate(target, idx, value)))
        else:
            inner = Store(target, idx, value)
    else:
        inner = build_nest(red_loops, conds, Accumulate(target, idx, value))
    return ir.seq(*pre, build_nest(out_loops, (), inner)), full, allocs


def _solve(affs: list[Affine], index: tuple[Expr, ...], spans: dict, value: Expr,
           cond_vars: set[str], src: Optional[Load]):
    """The gather's output loops and index, and the window variables solved through the
    load ``src`` (None: no window); None when the index map does not solve this way."""
    out_loops: list[tuple[str, int, int]] = []
    new_index: list[Expr] = []
    eliminate: dict[str, tuple[int, Affine]] = {}  # var -> (coefficient, the dimension's form)
    for d, a in enumerate(affs):
        if not a.terms:
            new_index.append(i64(a.const))
            continue
        if not any(v in spans for v in a.vars):  # a recurrence's variable: fixed here
            new_index.append(index[d])
            continue
        if any(v not in spans for v in a.vars):
            return None
        if len(a.terms) == 1 and a.terms[0][1] == 1:
            v = a.terms[0][0]
            lo, hi = spans[v]
            out_loops.append((v, lo, hi + 1))
            new_index.append(index[d])
            continue
        if len(a.terms) == 1 or src is None:  # a stride on a lone variable: scatter
            return None
        # a window: solve for a variable that only ``src`` reads, at unit stride
        pick = None
        for v, coef in a.terms:
            if v in cond_vars:
                continue
            users = [ld for ld in ir.loads_of(value) if any(
                isinstance(x, Var) and x.name == v for i in ld.indices for x in ir.walk_expr(i))]
            if users == [src] and _unit_in_one_dim(src, v):
                pick = (v, coef)
                break
        if pick is None:
            return None
        v, coef = pick
        lo_hi = a.bounds(spans.get)
        eliminate[v] = (coef, a)
        out_loops.append((v, lo_hi[0], lo_hi[1] + 1))
        new_index.append(Var(v))
    if src is not None and not eliminate:
        return None
    return out_loops, new_index, eliminate


def _factor_loads(e: Expr) -> set[Load]:
    """The loads that multiply the whole of ``e``: through products, negations and casts
    (a zero there makes ``e`` zero), not into sums, quotients or other operations."""
    if isinstance(e, Load):
        return {e}
    if isinstance(e, Binary) and e.op == "*":
        return _factor_loads(e.a) | _factor_loads(e.b)
    if isinstance(e, Unary) and e.op == "neg":
        return _factor_loads(e.a)
    if isinstance(e, ir.Cast):
        return _factor_loads(e.a)
    return set()


def _along_rows(value: Expr, v: str) -> bool:
    """``v`` indexes the last dimension of a load in ``value``."""
    return any(ld.indices and any(isinstance(x, Var) and x.name == v for x in ir.walk_expr(ld.indices[-1]))
               for ld in ir.loads_of(value))


def _unit_in_one_dim(ld: Load, v: str) -> bool:
    dims = [affine(i) for i in ld.indices]
    hits = [a for a in dims if a is None or a.coeff(v) != 0]
    return len(hits) == 1 and hits[0] is not None and hits[0].coeff(v) == 1 and len(hits[0].terms) == 1


def _stuff(names: Names, loops: tuple, src: Load, eliminate: dict[str, tuple[int, Affine]],
           spans: dict, label: Callable[[Buffer], str]) -> tuple[list[Stmt], Load, Buffer]:
    """A copy of ``src``'s buffer padded (and spread by the stride) so that the window's
    solved index reads it in bounds, zeros where no forward iteration was; and the load that
    replaces ``src`` in the gather."""
    b = src.buffer
    shape = list(b.shape)
    copy_loops, copy_dst, copy_src, new_idx = [], [], [], list(src.indices)
    fresh = names.copy([v for v, _, _ in loops])
    for d, e in enumerate(src.indices):
        a = affine(e)
        v = next((x for x in (a.vars if a else ()) if x in eliminate), None)
        if v is None:
            plain = isinstance(e, Var) and all(e.name != l[0] for l in copy_loops) \
                and not any(isinstance(x, Var) and x.name == e.name for o in src.indices if o is not e
                            for x in ir.walk_expr(o))
            var = e.name if plain else fresh.fresh("i")
            copy_loops.append((var, 0, b.shape[d]))
            copy_dst.append(Var(var))
            copy_src.append(Var(var))
            continue
        coef, form = eliminate[v]
        # g = x - (form - coef * v): equals coef * v wherever a forward iteration lands
        rest = Affine(tuple(t for t in form.terms if t[0] != v), form.const)
        x_lo, x_hi = form.bounds(spans.get)
        r_lo, r_hi = rest.bounds(spans.get)
        g_lo, g_hi = x_lo - r_hi, x_hi - r_lo
        off = -g_lo
        shape[d] = g_hi - g_lo + 1
        lo, hi = spans[v]
        copy_loops.append((v, lo, hi + 1))
        copy_dst.append(index_expr(Affine(((v, coef),), off)))
        copy_src.append(e)
        new_idx[d] = index_expr(Affine(((v, 1),), off).plus(rest.scale(-1)))
    g = Buffer(names.fresh(label(b) + "_pad"), b.dtype, tuple(shape))
    zero = fill(g, fconst(0.0, g.dtype), names)
    copy = build_nest(copy_loops, (), Store(g, tuple(copy_dst), Load(b, tuple(copy_src))))
    return [zero, copy], Load(g, tuple(new_idx)), g


# ---------------------------------------------------------------------------
# tidying a backward program: gathers composed into the copies that read them, padded
# copies trimmed to what is read


def compose_copies(body: list[Stmt], allocs: list[Buffer]) -> tuple[list[Stmt], list[Buffer]]:
    """Each copy ``G[j] = T[j + c]`` of a temporary ``T`` that one earlier nest computes
    element by element (``for i: T[i] = e(i); ...T[i] += v(i)...``) becomes that nest over
    ``G``'s elements, written straight into ``G`` (``for j: G[j] = e(j + c); ...``), in the
    nest's place; ``T`` goes. The data gradient through a padding stage is the one use: the
    transposed convolution over the padded input's adjoint ``dP``, then ``dX`` copied out of
    its interior, is one gather over ``dX``'s elements, without ``dP``'s border or the copy::

        for n, h, w, c: dP[n, h, w, c] = 0.0            for n, h, w, c: dX[n, h, w, c] = 0.0
            for co, rh, rw: dP[...] += dY_pad[n, h - rh + 2, ...] * W[...]            ->
        for n, h, w, c: dX[n, h, w, c] = dP[n, h + 1, w + 1, c]
                                                            for co, rh, rw: dX[...] += dY_pad[n, h - rh + 3, ...] * W[...]

    Sound, element by element: the nest's iteration ``i`` writes ``T[i]`` and nothing else,
    its first write there a plain store, and reads neither ``T`` nor ``G``, so ``T[i]`` after
    it is a function of ``i`` and of buffers the nest does not write; the copy makes ``G[j]``
    that function at ``i = j + c`` for every element of ``G`` (its loops cover ``G``), which is
    what the composed nest stores there, reading the same buffers at the same point of the
    program. Required besides: ``T`` is a temporary no other statement writes or reads, and no
    statement between the nest and the copy reads or writes ``G`` (the composed nest writes it
    earlier). Elements of ``T`` the copy does not read were never used."""
    body = [x for s in body for x in ir.stmts_of(s)]
    k = 0
    while k < len(body):
        hit = _composable(body, allocs, k)
        if hit is None:
            k += 1
            continue
        p, new = hit
        t = _copy_source(body[k])
        body[p] = new
        del body[k]
        allocs = [b for b in allocs if b.name != t.name]
        k = p + 1
    return body, allocs


def _copy_source(s: Stmt) -> Optional[Buffer]:
    loops, leaf = ir.band(s)
    return leaf.value.buffer if isinstance(leaf, Store) and isinstance(leaf.value, Load) else None


def _composable(body: list[Stmt], allocs: list[Buffer], k: int) -> Optional[tuple[int, Stmt]]:
    """``(p, composed nest)`` when ``body[k]`` is a copy out of a temporary that ``body[p]``
    computes as ``compose_copies`` requires, else None."""
    loops, leaf = ir.band(body[k])
    if not (isinstance(leaf, Store) and isinstance(leaf.value, Load)):
        return None
    g, t = leaf.buffer, leaf.value.buffer
    if t not in allocs or g.name == t.name or t.ndim != g.ndim or t.dtype != g.dtype or len(loops) != g.ndim:
        return None
    # the copy: G's dims each on its own loop over all of G, T read at that loop plus a constant
    shift = []
    for d, (loop, gi, ti) in enumerate(zip(loops, leaf.indices, leaf.value.indices)):
        a = affine(ti)
        if not (isinstance(gi, Var) and gi.name == loop.var and loop.start == 0 and loop.stop == g.shape[d]
                and a is not None and a.terms == ((loop.var, 1),)):
            return None
        shift.append(a.const)
    touching = [q for q, s in enumerate(body) if t.name in {b.name for b in ir.buffers_of(s)}]
    if len(touching) != 2 or touching[1] != k or t.name not in ir.written_by(body[touching[0]]):
        return None
    p = touching[0]
    if any(g.name in {b.name for b in ir.buffers_of(body[q])} for q in range(p + 1, k)):
        return None
    prod, _ = ir.band(body[p])
    if len(prod) < t.ndim:
        return None
    prod, inner = prod[:t.ndim], prod[t.ndim - 1].body
    us = [l.var for l in prod]
    if any(l.start != 0 or l.stop != n for l, n in zip(prod, t.shape)) or len(set(us)) != len(us):
        return None
    at = tuple(Var(u) for u in us)
    # the iteration writes T[i] alone, first by a plain store, and reads neither T nor G
    first = next(iter(ir.walk_in_loops(inner)), (None, ()))[0]
    if not (isinstance(first, Store) and first.buffer.name == t.name and first.indices == at):
        return None
    for x, _ in ir.walk_in_loops(inner):
        if isinstance(x, (Store, Accumulate)):
            if x.buffer.name != t.name or x.indices != at:
                return None
        elif not isinstance(x, If):
            return None
    if any(b.name in (t.name, g.name) for b in _read_buffers(inner)) \
            or any(isinstance(x, For) and x.var in us for x in ir.walk_stmts(inner)):
        return None
    values = {u: index_expr(Affine(((u, 1),), c)) for u, c in zip(us, shift)}
    composed = _tidy_indices(ir.map_stmt(ir.substitute_stmt(inner, values),
                                         lambda x: type(x)(g, at, x.value)))
    return p, build_nest([(u, 0, n) for u, n in zip(us, g.shape)], (), composed)


def _read_buffers(s: Stmt) -> list[Buffer]:
    """The buffers ``s`` loads from (in values, indices and conditions)."""
    return [ld.buffer for x in ir.walk_stmts(s) for e in ir.stmt_exprs(x) for ld in ir.loads_of(e)]


def _tidy_indices(s: Stmt) -> Stmt:
    """Every affine index of a load or store in ``s`` in its tidy form (``h + 1 - rh + 2`` is
    ``h - rh + 3``)."""
    def tidy(e: Expr) -> Expr:
        a = affine(e)
        return index_expr(a) if a is not None and all(isinstance(v, str) for v in a.vars) else e

    def expr(e: Expr) -> Expr:
        return ir.map_loads(e, lambda ld: Load(ld.buffer, tuple(tidy(expr(i)) for i in ld.indices)))

    return ir.map_stmt(s, lambda x: type(x)(x.buffer, tuple(tidy(expr(i)) for i in x.indices), expr(x.value))
                       if isinstance(x, (Store, Accumulate)) else x, expr)


def trim_padding(body: list[Stmt], allocs: list[Buffer]) -> tuple[list[Stmt], list[Buffer]]:
    """Each temporary cut down to the box its reads span, when that box is smaller: the
    padded copy of an output's adjoint keeps only the border the gather reads (a transposed
    3x3 convolution composed into ``dX``, ``compose_copies``, reads ``dY`` padded by 1, not
    the 2 its gather over the padded input needed). Indices move by the box's corner.

    Sound: every element read lies in the box and receives the same writes as before, moved
    with it: a fill of the whole temporary with a constant (``T[i] = 0.0``, one loop per
    dimension over all of it) fills just the box, and every other write must lie in the box
    already (else the temporary is left as it is). Elements outside the box were written
    but never read, and a temporary is no result."""
    body = [x for s in body for x in ir.stmts_of(s)]
    out_allocs = []
    for t in allocs:
        box = _read_box(body, t)
        if box is None or all(lo == 0 and hi == n - 1 for (lo, hi), n in zip(box, t.shape)):
            out_allocs.append(t)
            continue
        new = Buffer(t.name, t.dtype, tuple(hi - lo + 1 for lo, hi in box))
        moved = [_moved(s, t, new, box) for s in body]
        if any(m is None for m in moved):
            out_allocs.append(t)
            continue
        body = moved
        out_allocs.append(new)
    return body, out_allocs


def _read_box(body: list[Stmt], t: Buffer) -> Optional[list[tuple[int, int]]]:
    """Per dimension, the lowest and highest index ``body`` reads ``t`` at (an accumulation
    into ``t`` reads it too); None when some index is not affine in the loops around it."""
    box = [None] * t.ndim
    for s in body:
        for x, loops in ir.walk_in_loops(s):
            spans = {l.var: (l.start, l.stop - 1) for l in loops}
            reads = [ld.indices for e in ir.stmt_exprs(x) for ld in ir.loads_of(e) if ld.buffer.name == t.name]
            if isinstance(x, Accumulate) and x.buffer.name == t.name:
                reads.append(x.indices)
            if isinstance(x, ir.Call) and any(w.buffer.name == t.name for _, w in x.operands):
                return None
            for idx in reads:
                for d, e in enumerate(idx):
                    a = affine(e)
                    r = a.bounds(spans.get) if a is not None else None
                    if r is None or any(l.stop <= l.start for l in loops):
                        return None
                    box[d] = r if box[d] is None else (min(box[d][0], r[0]), max(box[d][1], r[1]))
    if any(b is None for b in box):
        return None
    return box


def _moved(s: Stmt, t: Buffer, new: Buffer, box: list[tuple[int, int]]) -> Optional[Stmt]:
    """``s`` on the trimmed ``new`` in place of ``t``; None when it writes ``t`` outside the box
    other than by a whole fill with a constant."""
    if t.name not in {b.name for b in ir.buffers_of(s)}:
        return s
    loops, leaf = ir.band(s)
    if (isinstance(leaf, Store) and leaf.buffer.name == t.name and isinstance(leaf.value, Const)
            and len(loops) == t.ndim
            and all(isinstance(i, Var) and i.name == l.var and l.start == 0 and l.stop == n
                    for i, l, n in zip(leaf.indices, loops, t.shape))):
        return build_nest([(l.var, 0, n) for l, n in zip(loops, new.shape)], (),
                          Store(new, leaf.indices, leaf.value))
    corner = [lo for lo, _ in box]

    def moved(idx: tuple[Expr, ...]) -> tuple[Expr, ...]:
        return tuple(index_expr(affine(e).plus(Affine((), -c))) if c else e for e, c in zip(idx, corner))

    def expr(e: Expr) -> Expr:
        return ir.map_loads(e, lambda ld: Load(new, moved(tuple(expr(i) for i in ld.indices)))
                            if ld.buffer.name == t.name else Load(ld.buffer, tuple(expr(i) for i in ld.indices)))

    for x, loops in ir.walk_in_loops(s):
        if isinstance(x, (Store, Accumulate)) and x.buffer.name == t.name:
            spans = {l.var: (l.start, l.stop - 1) for l in loops}
            for e, (lo, hi) in zip(x.indices, box):
                a = affine(e)
                r = a.bounds(spans.get) if a is not None else None
                if r is None or r[0] < lo or r[1] > hi:
                    return None

    def leaf_of(x: Stmt) -> Stmt:
        if isinstance(x, (Store, Accumulate)):
            on_t = x.buffer.name == t.name
            idx = tuple(expr(i) for i in x.indices)
            return type(x)(new if on_t else x.buffer, moved(idx) if on_t else idx, expr(x.value))
        return x

    return ir.map_stmt(s, leaf_of, expr)
