"""read-panel: a call that reads an input in place, where an earlier statement has copied
that input into a panel, reads the panel instead.

``pack-panel`` copies the divisible part of a product's operand into panels for the tiles'
calls; the remainder nests are planned on their own and read the operand where it lies.
The rows a 6-row tiling leaves of a 1024^3 product (``C[1020:1024, :]``) then walk B a row
(4 KB) per step, one new page each, where the panel the tiles read holds the same elements
contiguously along the reduction::

    for k, j_o, j_i in grid(1024, 64, 16):            (the copy, unchanged)
        B_panel[j_o, k, j_i] = B[k, j_i + 16 * j_o]
    ...
    for j_o, k in grid(64, 1024):                      for j_o, k in grid(64, 1024):
        call(..., b=window(B[k, 16 * j_o],      ->         call(..., b=window(B_panel[j_o, k, 0],
                           (1, 0), (0, 1)))                                   (0, 1, 0), (0, 0, 1)))

(Zen 3 code on Zen 4, one thread: those 4 rows took 1.5 ms on B in place, about 0.2 on the
panel; the whole product ran 4% faster.)

The copy is a top-level perfect nest ``P[at(m)] = X[src(m)]`` over loop variables ``m``,
each index of ``P`` one variable plus a constant (each variable in one index: every
iteration writes its own element), each index of ``X`` affine in the variables, each
variable in one index of ``X``. A window on ``X`` (element ``o`` at ``X[base + steps . o]``,
affine in the loops around the call) is rewritten when, per index of ``X``, its terms can be
given to the copy's variables of that index (each term a multiple of the variable's
coefficient), so that the values ``m(v, o)`` this gives satisfy ``src(m(v, o)) = base(v) +
steps . o`` term by term, and lie in the copy's loop ranges for every value of the loops
around the call (their ranges) and every offset ``o`` within the operand. The panel's
element ``P[at(m(v, o))]`` is then the one the copy stored from exactly the element of
``X`` the window read, and the new window reads it.

Sound when, besides: no statement from the copy to the call writes ``X`` or ``P`` (the
call's own statement included), so the panel still holds what the copy stored and ``X``
what the copy read; ``P`` and ``X`` have one dtype (a plain copy, no cast). The rewrite is
made only where the new window is at unit stride wherever the intrinsic's ``layout`` wants
it (the window on ``X`` was, or was gathered). It changes no value: each call reads the same
numbers from other addresses.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional, Sequence

from .. import ir
from ..affine import Affine, affine
from ..ir import Call, For, If, Load, Seq, Stmt, Store, Window
from ..match import affine_expr, slow_dims


@dataclass(frozen=True)
class Copy:
    """``for m: panel[at(m)] = source[src(m)]``: the copy's loop ranges (inclusive), its
    panel index per dim, its source index per dim."""

    panel: ir.Buffer
    source: ir.Buffer
    span: dict
    at: tuple[Affine, ...]
    src: tuple[Affine, ...]


def copy_of(s: Stmt) -> Optional[Copy]:
    """``s`` as a panel copy (module doc), or None."""
    loops, body = ir.band(s)
    if not loops or not isinstance(body, Store) or not isinstance(body.value, Load):
        return None
    names = [lp.var for lp in loops]
    if len(set(names)) != len(names) or any(lp.extent == 0 for lp in loops):
        return None
    panel, load = body.buffer, body.value
    if load.buffer.name == panel.name or load.buffer.dtype != panel.dtype:
        return None
    at = [affine(i) for i in body.indices]
    src = [affine(i) for i in load.indices]
    if any(m is None for m in at + src):
        return None
    if any(len(m.terms) != 1 or m.terms[0][1] != 1 for m in at):
        return None
    if sorted(m.terms[0][0] for m in at) != sorted(names):  # one element per iteration
        return None
    used = [v for m in src for v in m.vars]
    if len(used) != len(set(used)) or set(used) != set(names):  # each variable in one index
        return None
    span = {lp.var: (lp.start, lp.stop - 1) for lp in loops}
    return Copy(panel, load.buffer, span, tuple(at), tuple(src))


def read_panels(stmts: list[Stmt]) -> list[Stmt]:
    """read-panel (module doc) on the top-level statements ``stmts``."""
    stmts = list(stmts)
    for k, s in enumerate(stmts):
        copy = copy_of(s)
        if copy is None:
            continue
        names = {copy.panel.name, copy.source.name}
        for j in range(k + 1, len(stmts)):
            if ir.written_by(stmts[j]) & names:
                break
            stmts[j] = _reread(stmts[j], copy, {})
    return stmts


def _reread(s: Stmt, copy: Copy, spans: dict) -> Stmt:
    """``s`` with each call's windows on ``copy.source`` read from the panel where they can
    be (``spans``: the ranges of the loops around ``s``)."""
    if isinstance(s, For):
        if s.extent == 0:
            return s
        body = _reread(s.body, copy, {**spans, s.var: (s.start, s.stop - 1)})
        return s if body is s.body else replace(s, body=body)
    if isinstance(s, Seq):
        new = tuple(_reread(x, copy, spans) for x in s.stmts)
        return s if all(a is b for a, b in zip(new, s.stmts)) else Seq(new)
    if isinstance(s, If):
        then = _reread(s.then, copy, spans)
        orelse = None if s.orelse is None else _reread(s.orelse, copy, spans)
        return s if then is s.then and orelse is s.orelse else If(s.cond, then, orelse)
    if isinstance(s, Call):
        operands = []
        for name, w in s.operands:
            new = None
            if name != s.output and w.buffer.name == copy.source.name:
                op = next(o for o in s.intrinsic.operands if o.name == name)
                new = rebase(w, op.shape, copy, spans)
                if new is not None and slow_dims(s.intrinsic, op, new.buffer, new.steps):
                    new = None
            operands.append((name, new or w))
        if all(a[1] is b[1] for a, b in zip(operands, s.operands)):
            return s
        return replace(s, operands=tuple(operands))
    return s


def rebase(w: Window, shape: Sequence[int], copy: Copy, spans: dict) -> Optional[Window]:
    """Window ``w`` (on ``copy.source``, of an operand of ``shape``) as a window on the
    panel reading the same elements, or None (module doc). ``spans``: inclusive ranges of
    the loop variables ``w``'s base may use."""
    offsets = [f"#{q}" for q in range(len(shape))]  # the operand's offsets, as atoms
    ranges = {**spans, **{o: (0, n - 1) for o, n in zip(offsets, shape)}}
    value: dict[str, Affine] = {}  # copy variable -> its value, affine in loops and offsets
    for d, (e, src) in enumerate(zip(w.base, copy.src)):
        target = affine(e)
        if target is None or any(v not in spans for v in target.vars):
            return None
        for o, step in zip(offsets, w.steps):
            if step[d]:
                target = target.plus(Affine(((o, step[d]),), 0))
        coeff = dict(src.terms)
        if any(c <= 0 for c in coeff.values()):
            return None
        order = sorted(coeff, key=lambda m: -coeff[m])  # most significant first
        for m in order:
            value[m] = Affine()
        for atom, c in target.terms:
            m = next((m for m in order if c % coeff[m] == 0), None)
            if m is None:
                return None
            value[m] = value[m].plus(Affine(((atom, c // coeff[m]),), 0))
        rest = target.const - src.const
        for m in order:
            digit, rest = divmod(rest, coeff[m])
            value[m] = value[m].plus(Affine((), digit))
        if rest != 0:
            return None
        # term by term, src(value) is the window's index: check it, as the soundness rests on it
        back = Affine((), src.const)
        for m in order:
            back = back.plus(value[m].scale(coeff[m]))
        if back != target:
            return None
    if set(value) != set(copy.span):
        return None
    for m, (lo, hi) in copy.span.items():
        r = value[m].bounds(lambda a: ranges.get(a))
        if r is None or r[0] < lo or r[1] > hi:
            return None
    new = [value[m.terms[0][0]].plus(Affine((), m.const)) for m in copy.at]
    base = tuple(affine_expr(Affine(tuple(t for t in p.terms if t[0] not in offsets), p.const))
                 for p in new)
    steps = tuple(tuple(p.coeff(o) for p in new) for o in offsets)
    return Window(copy.panel, base, steps)
