"""Where an adjoint goes: the adjoint of a read ``A[f(i)]``, ``dA[f(i)] += v`` over the
loops ``i``, as a gather wherever the index map solves over the integers, else as the
scatter, which needs no condition (``rewrite.autodiff`` builds on this).

- Every dimension a lone loop variable (plus a constant): the variables that index ``dA``
  become its outer loops, the rest reductions; with the gradient initialised in place when
  this is its only contribution and covers it::

      for i, j, k: dA[i, k] += dC[i, j] * B[k, j]   ->   for i, k: dA[i, k] = 0.0
                                                              for j: dA[i, k] += dC[i, j] * B[k, j]

- A window ``a * h + b * rh + c`` whose ``h`` only one load reads (the output's adjoint, at
  ``h`` alone): solved for ``h`` by reading that load through a copy padded, and spread by
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
    # the load a window is solved through: an adjoint's first (the transposed convolution)
    candidates = sorted(set(ir.loads_of(value)), key=lambda ld: (ld.buffer not in adjoints, str(ld)))
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
    red_loops = [l for l in loops if l[0] not in out_vars]
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
