"""Fusion rules: a producer nest inlined into the statements that read what it wrote.

inline-producer
    A top-level perfect nest that fills a function temporary element by element::

        for v1, ..., vn in grid(...):
            T[v1 - s1, ..., vn - sn] = e

    where each index of ``T`` is a distinct loop variable plus a constant and the loops cover
    ``T``'s whole shape exactly once, defines ``T[x1, ..., xn]`` as ``e`` with
    ``v_d := x_d + s_d`` (the map from iterations to elements is a bijection). Every later
    load ``T[f]`` may then read ``e[v := f + s]`` instead, provided the value ``e`` had when the
    producer ran is the value it has at the load:

    - ``T`` is a temporary (``func.allocs``), never a parameter: a parameter's contents are
      visible to the caller, so its stores must stay;
    - ``e`` does not read ``T`` (each element is defined from other buffers alone);
    - no other statement writes ``T`` (the element read is the one the producer stored) and
      none reads it before the producer (it would see the contents the producer overwrites);
    - no statement from the producer up to the last one reading ``T`` writes a buffer ``e``
      reads, so ``e``'s loads see the same values later as when the producer ran;
    - every read of ``T`` is an ordinary load with affine indices (an intrinsic call's window
      is not rewritten).

    Expressions have no effects, and a load ``T[f]`` is in bounds, so ``f + s`` lies in the
    producer's loop ranges, where ``e``'s own loads are in bounds. Once every load is
    rewritten ``T`` is read nowhere, so the producer is dropped with the temporary::

        Ai = alloc(i32[M, K])
        for i, k in grid(M, K):                            for i, j, k in grid(M, N, K):
            Ai[i, k] = i32(A[i, k])                  ->        C[i, j] += i32(A[i, k]) * B[k, j]
        for i, j, k in grid(M, N, K):
            C[i, j] += Ai[i, k] * B[k, j]

    Inlining recomputes ``e`` at every iteration of the consumer, so it is an alternative the
    pipeline weighs with the cost model (``improve``, the ``inline`` family): it pays when the
    consumer then runs on an intrinsic (the exact u8 x i8 dot over widened operands) or when
    ``e`` is as cheap as the load it replaces, and not when an expensive ``e`` lands in a big
    reduction whose operand was a plain temporary.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from typing import Iterable, Optional, Sequence, Union

from .. import ir
from ..affine import Affine, affine
from ..ir import Binary, Buffer, Call, Const, Expr, For, Load, PrimFunc, Stmt, Store, Var
from ..nests import AccNest, as_nest


@dataclass(frozen=True)
class Producer:
    """``for vars: buffer[vars[d] + shifts[d] for each dim d] = value`` at top-level ``index``."""

    index: int
    buffer: Buffer
    vars: tuple[str, ...]  # per dim of ``buffer``, the loop variable indexing it
    shifts: tuple[int, ...]  # per dim, the constant added to that variable
    value: Expr

    def at(self, indices: Sequence[Expr]) -> Expr:
        """The value the producer stored at ``buffer[indices]`` (indices affine)."""
        values = {}
        for v, s, f in zip(self.vars, self.shifts, indices):
            m = affine(f)
            assert m is not None
            values[v] = f if s == 0 else _index(m.plus(Affine((), -s)))
        return _rewrite(self.value, values)


# ---------------------------------------------------------------------------
# index rewriting


def substituted_index(index: Expr, values: dict[str, Expr]) -> Expr:
    """``index`` with loop variables replaced, written canonically if it changed and is affine
    (``i + 1 - 1`` -> ``i``); an index the substitution leaves alone keeps its text."""
    new = ir.substitute(index, values)
    if new == index:
        return index
    m = affine(new)
    return new if m is None else _index(m)


def _index(m: Affine) -> Expr:
    """Readable index text for an affine map: ``i + 2 * k - 1``, ``3 - j``, ``-j``."""
    def term(v: str, c: int) -> Expr:
        return Var(v) if c == 1 else Binary("*", Const(c, ir.INDEX), Var(v))

    pos = [(v, c) for v, c in m.terms if c > 0]
    neg = [(v, -c) for v, c in m.terms if c < 0]
    out: Optional[Expr] = None
    for v, c in pos:
        out = term(v, c) if out is None else Binary("+", out, term(v, c))
    const = m.const
    if out is None and (const > 0 or not neg):
        out, const = Const(const, ir.INDEX), 0
    for v, c in neg:
        out = ir.Unary("neg", term(v, c)) if out is None else Binary("-", out, term(v, c))
    if const > 0:
        out = Binary("+", out, Const(const, ir.INDEX))
    elif const < 0:
        out = Binary("-", out, Const(-const, ir.INDEX))
    return out


def _rewrite(e: Expr, values: dict[str, Expr]) -> Expr:
    """``e`` with loop variables replaced, indices of its loads written canonically."""
    if isinstance(e, Var):
        return values.get(e.name, e)
    if isinstance(e, Load):
        return Load(e.buffer, tuple(substituted_index(i, values) for i in e.indices))
    kids = ir.children(e)
    return ir.with_children(e, tuple(_rewrite(k, values) for k in kids)) if kids else e


# ---------------------------------------------------------------------------
# finding producers


def producer(s: Stmt, index: int, temporaries: Iterable[str]) -> Optional[Producer]:
    """``s`` as a producer of a temporary, or None when it is not one (see the module doc)."""
    loops: list[For] = []
    while isinstance(s, For):
        loops.append(s)
        s = s.body
    if not loops or not isinstance(s, Store) or s.buffer.name not in set(temporaries):
        return None
    t = s.buffer
    if len(loops) != t.ndim or s.value.dtype != t.dtype:
        return None
    if any(load.buffer.name == t.name for load in ir.loads_of(s.value)):
        return None  # e reads T: not a definition from other buffers
    by_var = {lp.var: lp for lp in loops}
    if len(by_var) != len(loops):
        return None  # a loop variable shadowed by an inner loop
    names, shifts = [], []
    for d, idx in enumerate(s.indices):
        m = affine(idx)
        if m is None or len(m.terms) != 1 or m.terms[0][1] != 1:
            return None
        v = m.terms[0][0]
        lp = by_var.get(v)
        # T[v + c] for v in [start, stop) must be exactly T's dimension [0, shape)
        if lp is None or v in names or lp.start + m.const != 0 or lp.stop + m.const != t.shape[d]:
            return None
        names.append(v)
        shifts.append(m.const)
    return Producer(index, t, tuple(names), tuple(shifts), s.value)


def _loads(s: Stmt, name: str) -> Optional[list[Load]]:
    """Loads of buffer ``name`` in ``s``; None when some read of it could not be rewritten
    (an intrinsic call's window, a non-affine index)."""
    found: list[Load] = []
    for x in ir.walk_stmts(s):
        if isinstance(x, Call) and any(w.buffer.name == name for _, w in x.operands):
            return None
        for e in ir.stmt_exprs(x):
            for load in ir.loads_of(e):
                if load.buffer.name == name:
                    if any(affine(i) is None for i in load.indices):
                        return None
                    found.append(load)
    return found


def _legal(stmts: Sequence[Stmt], p: Producer) -> bool:
    name = p.buffer.name
    reads = [_loads(s, name) for s in stmts]
    if any(r is None for r in reads) or any(reads[: p.index]):
        return False  # an unrewritable read, or one before the producer
    if any(name in ir.written_by(s) for k, s in enumerate(stmts) if k != p.index):
        return False  # T written twice: a load may see the other store
    consumers = [k for k in range(p.index + 1, len(stmts)) if reads[k]]
    if not consumers:
        return False  # nothing to inline into (a dead store is not this rule's business)
    inputs = {load.buffer.name for load in ir.loads_of(p.value)}
    return not any(ir.written_by(stmts[k]) & inputs for k in range(p.index + 1, consumers[-1] + 1))


def _producers(stmts: Sequence[Stmt], temporaries: set[str]) -> list[Producer]:
    out = []
    for k, s in enumerate(stmts):
        p = producer(s, k, temporaries)
        if p is not None and _legal(stmts, p):
            out.append(p)
    return out


# ---------------------------------------------------------------------------
# rewriting


def _inline_expr(e: Expr, p: Producer) -> Expr:
    return ir.map_loads(e, lambda x: p.at(x.indices) if x.buffer.name == p.buffer.name else x)


def _inline_stmt(s: Stmt, p: Producer) -> Stmt:
    if isinstance(s, Store):
        return Store(s.buffer, s.indices, _inline_expr(s.value, p))
    if isinstance(s, ir.Accumulate):
        return ir.Accumulate(s.buffer, s.indices, _inline_expr(s.value, p))
    if isinstance(s, For):
        return replace(s, body=_inline_stmt(s.body, p))
    if isinstance(s, ir.Seq):
        return ir.Seq(tuple(_inline_stmt(c, p) for c in s.stmts))
    if isinstance(s, ir.If):
        return ir.If(_inline_expr(s.cond, p), _inline_stmt(s.then, p),
                     None if s.orelse is None else _inline_stmt(s.orelse, p))
    return s


def _inline(stmts: list[Stmt], temporaries: set[str],
            only: Optional[set[str]]) -> tuple[list[Stmt], set[str]]:
    """The statements with producers inlined, and the temporaries they filled."""
    done: set[str] = set()
    # one producer at a time: inlining one may rewrite another producer (a chain T1 -> T2)
    while True:
        ps = [p for p in _producers(stmts, temporaries) if only is None or p.buffer.name in only]
        if not ps:
            return stmts, done
        p = ps[0]
        stmts = stmts[: p.index] + [_inline_stmt(s, p) for s in stmts[p.index + 1:]]
        done.add(p.buffer.name)


def candidates(func: PrimFunc) -> list[str]:
    """Temporaries of ``func`` whose producer ``inline_producers`` may inline, in program order."""
    stmts = list(ir.stmts_of(func.body))
    return [p.buffer.name for p in _producers(stmts, {b.name for b in func.allocs})]


def inline_producers(func_or_items: Union[PrimFunc, Sequence],
                     temporaries: Optional[Iterable[str]] = None,
                     only: Optional[Iterable[str]] = None):
    """Every legal producer (``only``: of these temporaries) inlined into its consumers and
    dropped; see the module doc for when a producer is legal. Returns its argument itself when
    nothing is inlined.

    On a ``PrimFunc`` the temporaries are its allocs (a parameter never qualifies), further
    narrowed by ``temporaries`` if given, and the allocs of inlined temporaries are dropped. On
    a list of top-level items (``nests.items``), ``temporaries`` names the buffers that may be
    inlined away, and items come back as items.
    """
    keep = None if only is None else set(only)
    if isinstance(func_or_items, PrimFunc):
        func = func_or_items
        temps = {b.name for b in func.allocs}
        if temporaries is not None:
            temps &= set(temporaries)
        stmts, dropped = _inline(list(ir.stmts_of(func.body)), temps, keep)
        if not dropped:
            return func
        return replace(func, body=ir.seq(*stmts),
                       allocs=tuple(b for b in func.allocs if b.name not in dropped))
    if temporaries is None:
        raise ValueError("inline_producers on items needs the names of the temporaries")
    stmts = [p.stmt() if isinstance(p, AccNest) else p for p in func_or_items]
    out, dropped = _inline(stmts, set(temporaries), keep)
    if not dropped:
        return func_or_items
    return [as_nest(s) or s for s in out]


# ---------------------------------------------------------------------------
# the pipeline's hook (a ``spans`` family, rules/__init__.py)

# Sets of producers inlined that one rewrite offers at most, each a new function whose
# items are planned (each distinct item once): every set of up to six producers.
MAX_SETS = 64


def producer_sets(temps: Sequence[str], limit: int = MAX_SETS) -> list[frozenset[str]]:
    """Sets of the producers ``temps`` to inline, at most ``limit``: each alone, all of
    them, all but one, then the others by size (every set when there are few)."""
    n = len(temps)
    out = [frozenset([t]) for t in temps]
    if n > 1:
        out.append(frozenset(temps))
    if n > 2:
        out += [frozenset(temps) - {t} for t in temps]
    for size in range(2, n - 1):
        out += [frozenset(c) for c in itertools.combinations(temps, size)]
        if len(out) >= limit:
            break
    return out[:limit]


def spans(items, around, search) -> list:
    """The program with sets of its inlinable producers inlined (``producer_sets``: each
    alone, all of them, since two casts may pay only together, all but one, ...), each a
    rewrite of the whole function (the ``spans`` hook, ``choose.py``, on a whole function's
    items alone, the program's or an expanded one's: legality is decided on the whole
    function). The rewrite holds all the items, not the stretch from a producer to its last
    reader, so that the other families rewrite the inlined items together with those around
    them: a chain of products whose first operand was a transposed copy is reassociated over
    the inlined read. Inlining recomputes the producer's value at every use, which pays when
    the consumer then runs on an intrinsic and not when an expensive value lands in a big
    reduction; the cost model chooses, set by set."""
    from .choose import Span

    if not around.top or "inline" in around.made_by:  # every set is offered at once
        return []
    func = around.func
    out, seen = [], set()
    for only in producer_sets(candidates(func)):
        inlined = inline_producers(func, only=set(only))
        if inlined is not func:
            new = tuple(search.items(inlined))
            if new not in seen:
                seen.add(new)
                out.append(Span(0, len(items), new, func=inlined))
    return out
