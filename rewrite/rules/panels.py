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

import math
from dataclasses import dataclass, replace
from typing import Optional, Sequence

from .. import ir
from ..affine import Affine, affine
from ..ir import Call, For, If, Load, Seq, Stmt, Store, Window
from ..match import affine_expr, slow_dims
from ..names import Names


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


# The bytes of each source row a block's copy reads at a time (``_few``).
RUN = 512


def _few(loops: list, store: Store, taken: Optional[Names] = None) -> Optional[Stmt]:
    """The copy ``store`` (from a load; each loop variable in one index of the store and of
    the load) in the loops ``loops`` (outermost first, the source's order) run a few panels
    at a time: the loop that moves furthest through the panel (a B panel's tile index
    ``j_o``), where it runs inside another, is split into as many panels as read ``RUN``
    bytes of the source (or the largest divisor of its extent below that) inside, and the
    groups of them outermost::

        for k, j_o, j_i in grid(256, 32, 16):          for j_o_o, k, j_o_i, j_i in grid(4, 256, 8, 16):
            P[j_o, k, j_i] = B[k, j_i + 16 * j_o]   ->      P[8 * j_o_o + j_o_i, k, j_i] = \\
                                                                B[k, j_i + 16 * j_o_i + 128 * j_o_o]

    Each row of the source is then read 512 bytes at a time, and each step of the outer
    loops writes 8 panels. Measured on a 2048^3 product's B blocks (256 x 512 floats, Zen 3
    code on Zen 4, one thread, in turn with numpy): 169-194 ms so, 172-199 in the source's
    order. Not on a whole panel copied before the calls (``pack-panel``'s, B of 1024^3): its
    source comes from memory, and the copy alone, caches flushed before each run, took as
    long either way (0.59-0.64 ms against 0.59-0.60), and the whole product ran 1% slower
    (22.2-26.6 ms against 21.9-26.5, five runs in turn). (The copy alone with B in cache:
    0.28 against 0.52-0.60 ms.)

    Any order is the same copy: each iteration writes its own element and reads the source,
    which the copy does not write; the split loop runs each of its values once (``j_o = 8 *
    j_o_o + j_o_i``, the extent a multiple of 8). None where the panel's outermost axis
    already runs outermost, or the innermost loop does not run along both the panel's rows
    and the source's. ``taken``: names the new loops must not take."""
    panel, load = store.buffer, store.value
    at, src = [affine(i) for i in store.indices], [affine(i) for i in load.indices]

    def moves(var: str) -> int:
        return sum(m.coeff(var) * st for m, st in zip(at, panel.strides))

    def reads(var: str) -> int:
        return abs(sum(m.coeff(var) * st for m, st in zip(src, load.buffer.strides)))

    w = max(loops, key=lambda lp: moves(lp.var))
    if moves(w.var) <= moves(loops[0].var) or moves(loops[-1].var) != 1 or reads(loops[-1].var) != 1:
        return None  # (a transposing copy, whose innermost loop misses one side's rows, is left)
    step = reads(w.var) * ir.itemsize(load.buffer.dtype)
    most = min(RUN // max(1, step), w.extent // 2)
    g = next(n for n in range(most, 0, -1) if w.extent % n == 0) if most >= 2 else 1
    if g < 2:
        return None
    used = (taken or Names()).copy(lp.var for lp in loops)
    outer, inner = (used.fresh(f"{w.var}_{tag}") for tag in ("o", "i"))
    value = Affine(((outer, g), (inner, 1)), w.start)

    def put(e):
        m = affine(e)
        c = m.coeff(w.var)
        rest = Affine(tuple(t for t in m.terms if t[0] != w.var), m.const)
        return affine_expr(rest.plus(value.scale(c)) if c else m)

    body = Store(panel, tuple(put(i) for i in store.indices),
                 Load(load.buffer, tuple(put(i) for i in load.indices)))
    split = [For(outer, 0, w.extent // g, Seq(()))] + \
        [For(inner, 0, g, Seq(())) if lp is w else lp for lp in loops]
    return ir.wrap(split, body)


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


# ---------------------------------------------------------------------------
# panel-per-block: B's panel copied per L2 block, right before the tiles that read it
#
# ``pack-panel`` copies the whole panel before any tile runs: a 2048^3 product's B, 16 MB,
# goes to memory and comes back block by block. GotoBLAS's order copies each KC x NC block
# of B into a buffer L2 holds right before the tiles that read it. Where a panel copy's only
# reader is one loop nest whose steps read blocks of the panel that fit half of L2
# (``extract.l2_bytes``, as ``blocked_loops`` sizes its blocks), the whole copy goes and
# each block is copied, before the statement that reads it, into a buffer of one block per
# iteration of the nest's outermost loop::
#
#     for k, j_o, j_i in grid(2048, 128, 16):         for j_o_b, k_o in grid(4, 8):
#         B_panel[j_o, k, j_i] = B[k, 16 * j_o + j_i]      for j_o_o, k, j_o_i, j_i in grid(4, 256, 8, 16):
#     for j_o_b, k_o, i_o, j_o_i, k_i in              ->          B_block[j_o_b, 8 * j_o_o + j_o_i, k, j_i] = \
#             grid(4, 8, 342, 32, 256):                              B[k + 256 * k_o, j_i + 16 * j_o_i + 128 * j_o_o + 512 * j_o_b]
#         call(..., b=window(B_panel[32 * j_o_b           for i_o, j_o_i, k_i in grid(342, 32, 256):
#              + j_o_i, k_i + 256 * k_o, 0], ...))             call(..., b=window(B_block[j_o_b, j_o_i, k_i, 0], ...))
#
# The block is found from the windows: walking down the nest from its outermost loop, the
# first statement whose reads of the panel, for fixed values of the loops around it, lie in a
# box of constant extents small enough gets the copy of that box before it (of a sequence's
# parts, each longest run of them whose reads fit one); the box's corner is affine in the
# loops around. Taken only where every element is copied once in all (the boxes of all
# iterations no larger than the panel), the buffer is no larger than the panel, and the
# reads of one iteration of the outermost loop do not fit already (A's row blocks of a
# 1024^3 product on 8x32 tiles, 256 KB each, copied per row block: 22.1-23.1 ms against
# 22.1-23.1 whole, slower in two of three runs in turn).
#
# Sound: the copy ``P[at(m)] = X[src(m)]`` (``copy_of``) is the panel's only writer and the
# nest its only reader (no other statement mentions it, so its temporary can go), and
# nothing from the copy to the end of the nest writes ``X``, so every element a call read of
# ``P`` held ``X[src(m)]`` for the ``m`` with ``at(m)`` its index. Each box lies inside the
# copy's range (checked over the loops around it), and its copy stores, for each index ``p``
# in it, exactly that value at ``p`` less the box's corner; every read of the panel below
# the statement is in the box (that is how the box was found) and reads there, and no copy
# runs between it and its statement's reads (the copies of one statement's parts run before
# those parts, and nothing below a copied statement copies).
# The buffer's first index is the outermost loop's iteration, so the iterations of that loop
# (the parallel one) copy into their own blocks and share nothing.


def panels_per_block(stmts: list[Stmt], allocs: Sequence[ir.Buffer], names, budget: int):
    """panel-per-block (above) on the top-level statements ``stmts`` for the panels among
    ``allocs``, the buffers named from ``names``: the statements and the temporaries, changed
    or as they were."""
    stmts, allocs = list(stmts), list(allocs)
    temps = {b.name for b in allocs}
    for k, s in enumerate(stmts):
        copy = copy_of(s)
        if copy is None or copy.panel.name not in temps:
            continue
        both = {copy.panel.name, copy.source.name}
        readers = [j for j in range(k + 1, len(stmts)) if ir.mentions(stmts[j], copy.panel.name)]
        if len(readers) != 1 or any(ir.written_by(x) & both for x in stmts[k + 1:readers[0] + 1]) \
                or any(ir.mentions(x, copy.panel.name) for x in stmts[:k]):
            continue
        nest = stmts[readers[0]]
        if not isinstance(nest, For) or nest.extent < 1:
            continue
        blocks = _Blocks(s, nest, budget)
        if blocks.fits(blocks.box(nest.body, (nest,))):
            continue  # one block per outermost iteration: A's row blocks (measured no faster)
        found = blocks.find(nest.body, (nest,))
        if not found or blocks.copied > copy.panel.size:
            continue
        shape = tuple(max(b[1][d][2] - b[1][d][1] + 1 for b in found.values())
                      for d in range(copy.panel.ndim))
        buf = ir.Buffer(names.fresh(f"{copy.source.name}_block"), copy.panel.dtype,
                        (nest.extent,) + shape)
        if buf.size > copy.panel.size:
            continue
        body = blocks.rewrite(nest.body, found, buf)
        if body is None:
            continue
        stmts[readers[0]] = For(nest.var, nest.start, nest.stop, body)
        stmts[k] = Seq(())
        allocs = [b for b in allocs if b.name != copy.panel.name] + [buf]
    return [s for s in stmts if s != Seq(())], allocs


class _Blocks:
    """Where panel-per-block copies the blocks of ``copy``'s panel that ``nest`` reads."""

    def __init__(self, whole: Stmt, nest: For, budget: int):
        self.whole, self.copy, self.nest, self.budget = whole, copy_of(whole), nest, budget
        self.copied = 0  # elements copied in all
        self.taken = frozenset(x.var for x in ir.walk_stmts(nest) if isinstance(x, For))

    def find(self, s: Stmt, around: tuple) -> Optional[dict]:
        """The statements below ``s`` (``s`` included) that get a copy: its id -> (the loops
        around it, its box), or, for a run of a sequence's parts from the ``k``-th, ``(id of
        the sequence, k)`` -> (the loops, the box, the end of the run); None where some read
        of the panel gets none."""
        name = self.copy.panel.name
        if not ir.mentions(s, name):
            return {}
        box = self.box(s, around)
        if self.fits(box):
            self.copied += math.prod(hi - lo + 1 for _, lo, hi in box) * \
                math.prod(lp.extent for lp in around)
            return {id(s): (around, box)}
        if isinstance(s, For) and s.extent > 0:
            return self.find(s.body, around + (s,))
        if isinstance(s, Seq):  # each run of parts whose reads fit gets one copy
            out: dict = {}
            parts, k = s.stmts, 0
            while k < len(parts):
                end, box = k, None
                while end < len(parts) and self.fits(got := self.box(ir.seq(*parts[k:end + 1]), around)):
                    box, end = got, end + 1
                if box is not None and ir.mentions(ir.seq(*parts[k:end]), name):
                    self.copied += math.prod(hi - lo + 1 for _, lo, hi in box) * \
                        math.prod(lp.extent for lp in around)
                    out[(id(s), k)] = (around, box, end)
                    k = end
                    continue
                got = self.find(parts[k], around)
                if got is None:
                    return None
                out.update(got)
                k += 1
            return out
        return None

    def fits(self, box: Optional[list]) -> bool:
        """``box`` is one and fits the budget."""
        return box is not None and math.prod(hi - lo + 1 for _, lo, hi in box) * \
            ir.itemsize(self.copy.panel.dtype) <= self.budget

    def box(self, s: Stmt, around: tuple) -> Optional[list]:
        """Per index of the panel, ``(corner, lo, hi)``: every read of the panel below ``s``
        lies at ``corner + lo .. corner + hi`` there, ``corner`` affine in the loops
        ``around`` (the same for every read), ``lo`` and ``hi`` constants; within the copy's
        range for every value of those loops. None where the reads are not all calls'
        input windows, or their corners differ."""
        outside = {lp.var: (lp.start, lp.stop - 1) for lp in around}
        out: Optional[list] = None
        for x, loops in ir.walk_in_loops(s):
            if not ir.mentions(x, self.copy.panel.name):
                continue
            if not isinstance(x, Call) or any(lp.extent == 0 or lp.var in outside for lp in loops):
                return None
            inside = {lp.var: (lp.start, lp.stop - 1) for lp in loops}
            for op_name, w in x.operands:
                if w.buffer.name != self.copy.panel.name:
                    continue
                if op_name == x.output:
                    return None
                shape = next(o for o in x.intrinsic.operands if o.name == op_name).shape
                dims = []
                for d, e in enumerate(w.base):
                    m = affine(e)
                    if m is None:
                        return None
                    corner = Affine(tuple(t for t in m.terms if t[0] in outside), 0)
                    rest = Affine(tuple(t for t in m.terms if t[0] not in outside), m.const)
                    r = rest.bounds(lambda v: inside.get(v))
                    if r is None:
                        return None
                    lo, hi = r
                    for step, n in zip(w.steps, shape):
                        lo, hi = lo + min(0, step[d] * (n - 1)), hi + max(0, step[d] * (n - 1))
                    dims.append((corner, lo, hi))
                if out is None:
                    out = dims
                elif any(a[0] != b[0] for a, b in zip(out, dims)):
                    return None
                else:
                    out = [(a[0], min(a[1], b[1]), max(a[2], b[2])) for a, b in zip(out, dims)]
        if out is None:
            return None
        for (corner, lo, hi), m in zip(out, self.copy.at):
            (v, _), c = m.terms[0], m.const
            first, last = self.copy.span[v]
            r = corner.bounds(lambda a: outside.get(a))
            if r is None or r[0] + lo < first + c or r[1] + hi > last + c:
                return None
        return out

    def rewrite(self, s: Stmt, found: dict, buf: ir.Buffer) -> Optional[Stmt]:
        """``s`` with the copies ``found`` placed and the panel's windows read from ``buf``."""
        if id(s) in found:
            _, box = found[id(s)]
            body = self.reread(s, box, buf)
            return None if body is None else ir.seq(self.fill(box, buf), body)
        if isinstance(s, For) and ir.mentions(s, self.copy.panel.name):
            body = self.rewrite(s.body, found, buf)
            return None if body is None else replace(s, body=body)
        if isinstance(s, Seq) and ir.mentions(s, self.copy.panel.name):
            parts, k = [], 0
            while k < len(s.stmts):
                if (id(s), k) in found:
                    _, box, end = found[(id(s), k)]
                    parts += [self.fill(box, buf)] + [self.reread(x, box, buf) for x in s.stmts[k:end]]
                    k = end
                else:
                    parts.append(self.rewrite(s.stmts[k], found, buf))
                    k += 1
            return None if any(x is None for x in parts) else ir.seq(*parts)
        return s

    def first(self) -> Affine:
        """The buffer's first index: the outermost loop's iteration."""
        return Affine(((self.nest.var, 1),), -self.nest.start)

    def fill(self, box: list, buf: ir.Buffer) -> Stmt:
        """The copy of ``box`` into ``buf`` (at the outermost loop's iteration), its loops in
        the whole copy's order, a few panels at a time (``_few``)."""
        copy, used = self.copy, Names(self.taken)
        var = {m.terms[0][0]: d for d, m in enumerate(copy.at)}  # copy variable -> panel index
        names = [used.fresh(v) for v in sorted(var, key=var.get)]
        value = {}  # the copy's variable -> its value at offset t of the box
        for v, d in var.items():
            corner, lo, _ = box[d]
            value[v] = corner.plus(Affine(((names[d], 1),), lo - copy.at[d].const))
        src = []
        for m in copy.src:
            e = Affine((), m.const)
            for v, c in m.terms:
                e = e.plus(value[v].scale(c))
            src.append(affine_expr(e))
        store = Store(buf, (affine_expr(self.first()),) + tuple(ir.Var(n) for n in names),
                      Load(copy.source, tuple(src)))
        rank = {lp.var: n for n, lp in enumerate(ir.band(self.whole)[0])}
        order = sorted(range(len(names)), key=lambda d: rank[copy.at[d].terms[0][0]])
        loops = [For(names[d], 0, box[d][2] - box[d][1] + 1, Seq(())) for d in order]
        return _few(loops, store, used) or ir.wrap(loops, store)

    def reread(self, s: Stmt, box: list, buf: ir.Buffer) -> Optional[Stmt]:
        """``s`` with each window on the panel a window on ``buf`` at the box's corner."""
        panel = self.copy.panel.name
        failed = []

        def leaf(x: Stmt) -> Stmt:
            if not isinstance(x, Call):
                return x
            operands = []
            for op_name, w in x.operands:
                if w.buffer.name == panel:
                    base = [affine_expr(self.first())]
                    for e, (corner, lo, _) in zip(w.base, box):
                        base.append(affine_expr(affine(e).plus(corner.scale(-1)).plus(Affine((), -lo))))
                    w = Window(buf, tuple(base), tuple((0,) + st for st in w.steps))
                    op = next(o for o in x.intrinsic.operands if o.name == op_name)
                    if slow_dims(x.intrinsic, op, w.buffer, w.steps):
                        failed.append(op_name)
                operands.append((op_name, w))
            return replace(x, operands=tuple(operands))

        out = ir.map_stmt(s, leaf, lambda e: e)
        return None if failed else out
