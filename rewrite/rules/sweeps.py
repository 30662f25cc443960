"""fuse-sweeps: two products that read the same matrix, one in blocks of rows and one row by
row, run as one sweep over its rows, so that the second reads each block from L1 while the
first has just brought it there.

PolyBench's atax (``tmp = A x``, ``y = A^T tmp``), bicg (``q = A p``, ``s = A^T r``) and mvt
(``x1 += A y1``, ``x2 += A^T y2``) each read the whole matrix twice once their loops are
distributed into accumulate nests: the row form on a gemv row (eight rows a call) and the
transposed form as an axpy per row (the reduction over rows innermost, the output strip in
registers). A 400 x 400 f32 matrix is 640 KB, which L2 holds and L1 does not, so each
product streams it from L2. Run block by block, the axpy reads the eight rows the gemv has
just read::

    for i_o, j_o in grid(48, 51):                   for i_o in range(48):
        call(gemv8x8, c=tmp[8 * i_o],                   for j_o in range(51):
             a=A[8 * i_o, 8 * j_o], b=x[8 * j_o])            call(gemv8x8, c=tmp[8 * i_o], ...)
    for j_o, i in grid(6, 390):              ->         for j_o, i_i in grid(6, 8):
        call(axpy64, c=y[64 * j_o], a=tmp[i],               call(axpy64, c=y[64 * j_o],
             b=A[i, 64 * j_o])                                   a=tmp[8 * i_o + i_i],
                                                                 b=A[8 * i_o + i_i, 64 * j_o])
                                                for j_o, i in grid(6, 6):   (rows 384 to 390)
                                                    call(axpy64, ..., b=A[i + 384, 64 * j_o])

The row-by-row nest (``Q``: its innermost loop ``t`` moves the matrix's row, one row a call)
is split at the blocked nest's rows (``P``: its outermost loop ``u`` reads rows ``[R*u + c,
R*u + c + R)``): the rows before and after them stay a nest of their own each, those inside
become ``for u: (Q's other loops): for t_i in range(R)`` with ``t = R*u + c + t_i``, and that
loop is fused with ``P``'s. Statements between the two move before the first of them.

In the fused loop ``P``'s block comes first, also where ``Q`` came first in the program but
the two are independent (bicg's ``s = A^T r`` and ``q = A p``): ``P`` streams the block from
L2 on its rows, ``Q`` then reads it from L1. Measured on bicg (410 x 390, an AVX-512 Xeon,
one thread): 11.3 us a sweep against 11.9 with ``Q``'s block first.

Given a library (``fuse_sweeps(stmts, library)``, as ``tidy`` runs it), a fused block whose
``P`` is a loop of gemv calls and whose ``Q`` is the axpy over the same rows goes on the
library's gemv and gemvt rows (``c[j] += a[k, j] * b[k]``, the block read along its rows):
two independent products (bicg, mvt) as one loop over column blocks of a gemv call and a
gemvt call on the same block, each row of the block loaded once for both products' FMAs;
a ``Q`` that reads ``P``'s sums (atax) as a loop of gemvt calls after ``P``'s (``_merged``).
On bicg (410 x 390, AVX-512, one thread) the sweep took 9.4 us on the 8x16 rows against
11.3 for the gemv and the axpy one after the other::

    for i_o in range(51):
        for j_o1 in range(24):
            call("x86.avx512.gemv.f32.8x16", c=q[8 * i_o], a=A[8 * i_o, 16 * j_o1], b=p[16 * j_o1])
            call("x86.avx512.gemvt.f32.8x16", c=s[16 * j_o1], a=A[8 * i_o, 16 * j_o1], b=r[8 * i_o])

Sound, each step checked, not assumed:

- ``Q``'s instances are reordered (split, its loops permuted): allowed when ``Q`` adds into a
  buffer it does not otherwise read and writes none of its inputs, so that every order adds
  the same terms to each element: a reassociation, the licence of every reordered reduction
  (within each element, the rows still come in increasing order);
- a statement moved before another (a statement between the two, ``Q``'s rows before ``P``'s
  when ``P`` comes first, ``Q``'s rows after them when ``Q`` comes first, ``P``'s blocks
  before ``Q``'s when ``Q`` comes first) must commute with it: the dependence analysis, on
  the calls' meaning (``calls.expand_calls``), finds no dependence between them other than
  two additions into one element;
- the fusion itself is ``analysis.can_fuse`` on the two loops over ``u``, adjacent by then;
- a merged block interleaves ``P``'s and ``Q``'s calls only where the two commute as above,
  and reorders each product's calls within the block (the reassociation of the first
  point); it is used only once the terms it adds, enumerated on the first block (the
  windows that move with the block are ``P``'s and ``Q``'s own), are exactly those of the
  block it replaces, element by element (``_same_terms``).

It never adds work. It is part of ``tidy`` (``rules/tidy.py``), on the chosen program.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable, Optional, Sequence

import numpy as np

from .. import analysis, calls, ir
from ..calls import op_count
from ..affine import Affine, affine
from ..match import affine_expr
from ..descriptor import Descriptor
from ..ir import (INDEX, Accumulate, Binary, Buffer, Call, Const, For, Load, PrimFunc, Stmt,
                  Store, Var)

# A matrix smaller than this stays in L1 between two sweeps: nothing to gain.
MIN_MATRIX_BYTES = 64 * 1024
# A block of rows larger than this may be gone from L1 by the time the second sweep reads it.
BLOCK_BYTES = 32 * 1024


def fuse_sweeps(stmts: list[Stmt], library: Iterable[Descriptor] = ()) -> list[Stmt]:
    """``stmts`` (top-level) with every pair of sweeps over one matrix that may be fused
    fused, repeatedly (a fused sweep may take a third product's rows); independent
    products over one block are merged onto the gemv and gemvt rows of ``library`` where it
    has them (module doc)."""
    library = tuple(library)
    while True:
        done = _fuse_one(stmts, library)
        if done is None:
            return stmts
        stmts = done


def _fuse_one(stmts: list[Stmt], library: tuple = ()) -> Optional[list[Stmt]]:
    """One fusion, the biggest sweeps first; None when there is none to make."""
    written = {name for s in stmts for name in ir.written_by(s)}
    by_work = sorted(range(len(stmts)), key=lambda k: -op_count(stmts[k]))
    for pi in by_work:
        p = stmts[pi]
        for matrix in {b.name: b for b in ir.buffers_of(p) if b.ndim == 2}.values():
            if matrix.name in written or matrix.nbytes < MIN_MATRIX_BYTES:
                continue
            blocks = _blocks(p, matrix)
            if blocks is None or blocks[1] * matrix.nbytes // matrix.shape[0] > BLOCK_BYTES:
                continue
            for qi in by_work:
                if qi == pi:
                    continue
                fused = _fuse(stmts, pi, qi, matrix, blocks, library)
                if fused is not None:
                    return fused
    return None


# ---------------------------------------------------------------------------
# recognising the two sweeps




def _row_accesses(s: Stmt, matrix: Buffer) -> Optional[list[tuple[ir.Expr, int]]]:
    """Each access of ``matrix`` in ``s`` as (its row index, how many rows from there one
    access spans), or None when some access has a row index that is not affine."""
    out = []
    for x in ir.walk_stmts(s):
        if isinstance(x, Call):
            shape = {o.name: o.shape for o in x.intrinsic.operands}
            for name, w in x.operands:
                if w.buffer.name != matrix.name:
                    continue
                steps = [st[0] for st in w.steps]
                if any(st < 0 for st in steps):
                    return None
                span = 1 + sum(st * (e - 1) for st, e in zip(steps, shape[name]))
                out.append((w.base[0], span))
        for e in ir.stmt_exprs(x) if not isinstance(x, Call) else ():
            for ld in ir.loads_of(e):
                if ld.buffer.name == matrix.name:
                    out.append((ld.indices[0], 1))
        if isinstance(x, (Store, Accumulate)) and x.buffer.name == matrix.name:
            out.append((x.indices[0], 1))
    if any(affine(i) is None for i, _ in out):
        return None
    return out


@lru_cache(maxsize=4096)  # asked again for each pair of sweeps tried
def _row_by_row(q: Stmt) -> tuple[tuple[Buffer, For, Stmt], ...]:
    """The matrices ``q`` reads one row per innermost iteration, each as ``(matrix, t,
    q)``: ``q`` is loops around one intrinsic call whose innermost loop ``t`` moves every
    access of the matrix by one row, no other loop moves its row, and one call reads one
    row of it. Scalar code is left out: a scalar remainder of two columns (bicg's
    ``s[j] += r[i] * A[i, j]`` for j from 388 to 390) fused into the sweep measured 3 us
    slower on atax and bicg than left after it, though its rows then came from L1."""
    loops, leaf = ir.band(q)
    if len(loops) < 2 or not isinstance(leaf, Call):
        return []
    t = loops[-1]
    found = []
    for m in {b.name: b for b in ir.buffers_of(leaf) if b.ndim == 2}.values():
        rows = _row_accesses(leaf, m)
        if not rows or any(span != 1 for _, span in rows):
            continue
        maps = [affine(i) for i, _ in rows]
        if len({f.const for f in maps}) == 1 and all(
                f.coeff(t.var) == 1 and all(f.coeff(l.var) == 0 for l in loops[:-1]) for f in maps):
            found.append((m, t, q))
    return tuple(found)


@lru_cache(maxsize=4096)
def _blocks(p: Stmt, matrix: Buffer) -> Optional[tuple[For, int, int]]:
    """``(u, R, c)`` when ``p`` is a loop ``u`` whose iteration reads rows ``[R*u + c,
    R*u + c + R)`` of ``matrix`` and no others (each access's row affine in ``u`` with
    coefficient ``R``, the rest within the block over the loops inside), else None."""
    if not isinstance(p, For) or p.start != 0:
        return None
    rows = _row_accesses(p.body, matrix)
    if not rows:
        return None
    inner = {x.var: x for x in ir.walk_stmts(p.body) if isinstance(x, For)}
    first = None
    for index, span in rows:
        f = affine(index)
        r = f.coeff(p.var)
        if r < 2:
            return None
        lo = hi = f.const
        for v, c in f.terms:
            if v == p.var:
                continue
            loop = inner.get(v)
            if loop is None:
                return None
            a, b = sorted((c * loop.start, c * (loop.stop - 1)))
            lo, hi = lo + a, hi + b
        block = (r, lo)
        if first is None:
            first = block
        if block[0] != first[0] or lo < first[1] or hi + span > first[1] + first[0]:
            return None
    return p, first[0], first[1]


# ---------------------------------------------------------------------------
# the rewrite and its checks


def _fuse(stmts: list[Stmt], pi: int, qi: int, matrix: Buffer,
          blocks: tuple[For, int, int], library: tuple = ()) -> Optional[list[Stmt]]:
    """``stmts`` with the blocked sweep at ``pi`` fused with the statement at ``qi``: a sweep
    over the same blocks, or one over the matrix row by row, blocked for it (its rows
    before and after the blocks left as nests of their own); None when ``qi`` is neither or
    a check fails (module doc)."""
    p, q = stmts[pi], stmts[qi]
    u, rows, c = blocks
    head = tail = None
    same = _blocks(q, matrix)
    if same is not None and same[1:] == (rows, c) and (same[0].start, same[0].stop) == (0, u.extent):
        # another sweep over the same blocks: its loop is p's
        inner = ir.substitute_stmt(_renamed(q.body, {u.var}), {q.var: Var(u.var)})
    else:
        found = [(t, ordered) for m, t, ordered in _row_by_row(q) if m.name == matrix.name]
        if not found or not _reorderable(q):
            return None
        t, q = found[0]
        lo, hi = c, c + rows * u.extent  # the rows p reads
        if not (t.start <= lo and hi <= t.stop):
            return None
        loops, leaf = ir.band(_renamed(q, {u.var}))
        t = loops[-1]
        taken = {x.var for s in (p, q) for x in ir.walk_stmts(s) if isinstance(x, For)}
        t_i = _fresh(t.var + "_i", taken | {u.var})
        value = Binary("+", Binary("+", Const(c, INDEX), Binary("*", Const(rows, INDEX), Var(u.var))),
                       Var(t_i))
        inner = For(t_i, 0, rows, _substituted(leaf, {t.var: value}))
        for loop in reversed(loops[:-1]):
            inner = For(loop.var, loop.start, loop.stop, inner)
        head = _with_rows(q, t.start, lo)
        tail = _with_rows(q, hi, t.stop)
    blocked = For(u.var, 0, u.extent, inner)
    first, second = sorted((pi, qi))
    between = stmts[first + 1:second]
    if pi < qi:
        # the statements between and q's first rows move before p; q's last rows follow
        moved = between + ([head] if head is not None else [])
        if any(not _commute(s, p) for s in moved) or not _fusable(p, blocked):
            return None
        body = ir.seq(p.body, inner)
        if library and same is None:
            body = _merged(p.body, inner, u, library, _commute(stmts[qi], p)) or body
        new = moved + [For(u.var, 0, u.extent, body)]
    else:
        # q comes first: the statements between move before it, its last rows after p
        if any(not _commute(s, q) for s in between) or \
                (tail is not None and not _commute(tail, p)):
            return None
        if _commute(stmts[qi], p) and _fusable(p, blocked):
            # independent products (bicg): p's block first, as when p comes first
            body = ir.seq(p.body, inner)
            if library and same is None:
                body = _merged(p.body, inner, u, library, True) or body
        elif _fusable(blocked, p):
            body = ir.seq(inner, p.body)
        else:
            return None
        new = between + ([head] if head is not None else []) + [For(u.var, 0, u.extent, body)]
    return stmts[:first] + new + ([tail] if tail is not None else []) + stmts[second + 1:]


def _renamed(s: Stmt, avoid: set[str]) -> Stmt:
    """``s`` with each loop it binds whose name is in ``avoid`` given a fresh name."""
    taken = {x.var for x in ir.walk_stmts(s) if isinstance(x, For)} | avoid

    def go(x: Stmt) -> Stmt:
        if isinstance(x, For):
            body = go(x.body)
            if x.var not in avoid:
                return For(x.var, x.start, x.stop, body)
            name = _fresh(x.var, taken)
            taken.add(name)
            return For(name, x.start, x.stop, ir.substitute_stmt(body, {x.var: Var(name)}))
        if isinstance(x, ir.Seq):
            return ir.Seq(tuple(go(c) for c in x.stmts))
        if isinstance(x, ir.If):
            return ir.If(x.cond, go(x.then), None if x.orelse is None else go(x.orelse))
        return x

    return go(s)


def _fresh(base: str, taken: set[str]) -> str:
    name, n = base, 0
    while name in taken:
        n += 1
        name = f"{base}{n}"
    return name


def _substituted(s: Stmt, values: dict[str, ir.Expr]) -> Stmt:
    """``s`` with loop variables replaced, each affine index written canonically."""
    def canonical(e: ir.Expr) -> ir.Expr:
        f = affine(e)
        return e if f is None else affine_expr(f)

    def load(x: Load) -> ir.Expr:
        return Load(x.buffer, tuple(canonical(i) for i in x.indices))

    out = ir.substitute_stmt(s, values)
    if isinstance(out, Call):
        return Call(out.intrinsic, tuple(
            (n, ir.Window(w.buffer, tuple(canonical(i) for i in w.base), w.steps))
            for n, w in out.operands), out.output)
    assert isinstance(out, (Store, Accumulate))
    return type(out)(out.buffer, tuple(canonical(i) for i in out.indices),
                     ir.map_loads(out.value, load))


def _with_rows(q: Stmt, start: int, stop: int) -> Optional[Stmt]:
    """``q`` with its innermost loop over ``[start, stop)``, or None when that is empty."""
    if start >= stop:
        return None
    loops, leaf = ir.band(q)
    body: Stmt = For(loops[-1].var, start, stop, leaf)
    for loop in reversed(loops[:-1]):
        body = For(loop.var, loop.start, loop.stop, body)
    return body


def _reorderable(q: Stmt) -> bool:
    """Any order of ``q``'s instances (calls) adds the same terms into each element: the
    call adds into one buffer that none of its inputs reads."""
    _, leaf = ir.band(q)
    if isinstance(leaf, Call):
        out = leaf.window(leaf.output).buffer.name
        return all(w.buffer.name != out for n, w in leaf.operands if n != leaf.output)
    return False


def _meaning(stmts: Sequence[Stmt]) -> PrimFunc:
    body = ir.seq(*stmts)
    buffers = tuple({b.name: b for b in ir.buffers_of(body)}.values())
    return calls.expand_calls(PrimFunc("sweeps", buffers, body))


@lru_cache(maxsize=4096)
def _commute(a: Stmt, b: Stmt) -> bool:
    """``a`` and ``b`` (top-level) may run in either order: no dependence between an access
    of one and an access of the other but two additions into one element."""
    func = _meaning([a, b])
    # a dependence joins two accesses of one buffer, one of them a write: where every such
    # pair across the two adds into the buffer on both sides, none can be of another kind
    # (most pairs tried, the products of a split triangle adding into one C, are these)
    accs = analysis.accesses(func)
    if all(x.kind == y.kind == "accumulate" for x in accs for y in accs
           if x.path[0] == 0 and y.path[0] == 1 and x.buffer.name == y.buffer.name
           and (x.writes or y.writes)):
        return True
    for d in analysis.dependences(func):
        if d.source.path[0] != d.sink.path[0] and not (
                d.source.kind == d.sink.kind == "accumulate"):
            return False
    return True


def _fusable(a: For, b: For) -> bool:
    return analysis.can_fuse(_meaning([a, b]), (0,), (1,), allow_reassociation=True)


# ---------------------------------------------------------------------------
# merging two independent products over one block onto the gemv and gemvt rows


def _form(desc: Descriptor) -> Optional[tuple[str, int, int]]:
    """``(form, rows, width)`` of an f32 intrinsic that adds a product of two inputs into
    its output and nothing else: ``"gemv"`` for ``c[i] += a[i, k] * b[k]`` (``rows`` i,
    ``width`` k), ``"gemvt"`` for ``c[j] += a[k, j] * b[k]`` (rows k, width j), ``"axpy"``
    for ``c[j] += a[0] * b[j]`` (rows 1, width j); None for anything else."""
    if len(desc.operands) != 3 or any(o.dtype != "f32" for o in desc.operands):
        return None
    _, leaf = ir.band(desc.semantics.body)
    if not (isinstance(leaf, Accumulate) and isinstance(leaf.value, Binary) and leaf.value.op == "*"
            and all(isinstance(x, Load) for x in (leaf.value.a, leaf.value.b))):
        return None
    if {leaf.value.a.buffer.name, leaf.value.b.buffer.name} != {o.name for o in desc.inputs}:
        return None
    out = desc.output
    extent = {d.name: d.extent for d in desc.dims}
    kinds = {d.name: d.kind for d in desc.dims}
    dims = {o.name: o.dims for o in desc.inputs}
    if len(out.dims) != 1 or kinds.get(out.dims[0]) != "spatial":
        return None
    o = out.dims[0]
    shapes = sorted(dims.values(), key=len)
    if len(desc.dims) == 2 and len(shapes[0]) == 1 and len(shapes[1]) == 2:
        k = shapes[0][0]
        if k != o and kinds.get(k) == "reduction":
            if shapes[1] == (o, k):
                return "gemv", extent[o], extent[k]
            if shapes[1] == (k, o):
                return "gemvt", extent[k], extent[o]
    if len(desc.dims) == 1 and shapes == [(None,), (o,)]:
        return "axpy", 1, extent[o]
    return None


def _roles(desc: Descriptor) -> tuple[str, str, str]:
    """The names of the output, the matrix (the 2-D input or, for an axpy, the row) and the
    vector (the other input) of a ``_form`` intrinsic."""
    ins = sorted(desc.inputs, key=lambda o: (len(o.dims), o.dims != (None,)))
    return desc.output.name, ins[-1].name, ins[0].name


@dataclass(frozen=True)
class _Columns:
    """A loop of calls over one block of a fused sweep, column block by column block:
    ``loop`` (over the column blocks) around ``call``, whose matrix window starts at row
    ``row`` (affine, the block's first row) and column ``col0 + width * loop``, its output
    and vector windows at ``out0`` / ``vec0`` (affine) plus ``width * loop`` for the one of
    them the column moves. ``lo``/``hi``: the columns it covers."""

    loop: For
    call: Call
    row: Affine
    col0: int
    width: int
    out: ir.Window
    vec: ir.Window
    out0: Affine
    vec0: Affine

    @property
    def lo(self) -> int:
        return self.col0 + self.width * self.loop.start

    @property
    def hi(self) -> int:
        return self.col0 + self.width * self.loop.stop


def _minus(f: Affine, var: str) -> Affine:
    return f.plus(affine(Var(var)).scale(-f.coeff(var)))


def _one_call(body: Stmt, depth: int, kind: str):
    """``(loops, call, width, (out, matrix, vector) windows)`` when ``body`` is ``depth``
    loops around one call of a ``kind`` row (``_form``), else None."""
    loops, leaf = ir.band(body)
    if len(loops) != depth or not isinstance(leaf, Call):
        return None
    form = _form(leaf.intrinsic)
    if form is None or form[0] != kind:
        return None
    return loops, leaf, form[2], tuple(leaf.window(n) for n in _roles(leaf.intrinsic))


def _gemv_loop(p_body: Stmt) -> Optional[_Columns]:
    """``p_body`` as ``for j: call(gemv, c=out[row], a=M[row, w*j + col0], b=x[w*j + x0])``
    with unit steps, or None."""
    found = _one_call(p_body, 1, "gemv")
    if found is None:
        return None
    (j,), leaf, w, (out, mat, vec) = found
    if (out.steps, mat.steps, vec.steps) != (((1,),), ((1, 0), (0, 1)), ((1,),)):
        return None
    o, row, col, x = (affine(e) for e in (*out.base, *mat.base, *vec.base))
    if None in (o, row, col, x) or o.coeff(j.var) or row.coeff(j.var) or \
            col.coeff(j.var) != w or x.coeff(j.var) != w or _minus(col, j.var).vars or \
            _minus(x, j.var).vars:
        return None
    return _Columns(j, leaf, row, _minus(col, j.var).const, w, out, vec, o, _minus(x, j.var))


def _axpy_block(q_block: Stmt, rows: int) -> Optional[_Columns]:
    """``q_block`` as ``for j: for t in range(rows): call(axpy, c=out[w*j + o0], a=y[row +
    t], b=M[row + t, w*j + col0])`` with unit steps, or None. Its ``vec0`` is ``row``'s
    counterpart in y (t = 0) and ``row`` the block's first row."""
    found = _one_call(q_block, 2, "axpy")
    if found is None:
        return None
    (j, t), leaf, w, (out, mat, vec) = found
    if (t.start, t.stop) != (0, rows):
        return None
    if (out.steps, mat.steps, vec.steps) != (((1,),), ((0, 1),), ((0,),)):
        return None
    o, row, col, y = (affine(e) for e in (*out.base, *mat.base, *vec.base))
    if None in (o, row, col, y) or o.coeff(j.var) != w or o.coeff(t.var) or \
            row.coeff(t.var) != 1 or row.coeff(j.var) or col.coeff(j.var) != w or \
            col.coeff(t.var) or y.coeff(t.var) != 1 or y.coeff(j.var) or \
            _minus(col, j.var).vars or _minus(o, j.var).vars:
        return None
    return _Columns(j, leaf, _minus(row, t.var), _minus(col, j.var).const, w, out, vec,
                    _minus(o, j.var), _minus(y, t.var))


def _rows_of(library: tuple, form: str, rows: int) -> dict[int, Descriptor]:
    """The ``form`` intrinsics of ``library`` over ``rows`` rows, by width (the first met)."""
    out: dict[int, Descriptor] = {}
    for d in library:
        f = _form(d)
        if f is not None and f[:2] == (form, rows):
            out.setdefault(f[2], d)
    return out


def _call(desc: Descriptor, out: ir.Window, mat: ir.Window, vec: ir.Window) -> Call:
    ops = dict(zip(_roles(desc), (out, mat, vec)))
    return Call(desc, tuple((o.name, ops[o.name]) for o in desc.operands), desc.output.name)


def _block_calls(p: Optional[_Columns], q: _Columns, rows: int, library: tuple,
                 taken: set[str]) -> Optional[Stmt]:
    """q's columns as one loop over column blocks of a gemvt row of ``library``, with p's
    calls over the same columns on a gemv row of the same width in the same loop when p is
    given, the widest the columns allow; None when ``library`` has no such row."""
    gemvt = _rows_of(library, "gemvt", rows)
    gemv = _rows_of(library, "gemv", rows) if p is not None else {}
    widths = [w for w in gemvt if (q.hi - q.lo) % w == 0 and (p is None or w in gemv)]
    if not widths:
        return None
    w = max(widths)
    m = _fresh((p or q).loop.var, taken)
    col = lambda base: affine_expr(affine(Var(m)).scale(w).plus(Affine((), base)))  # noqa: E731
    mat = ir.Window(q.call.window(_roles(q.call.intrinsic)[1]).buffer,
                    (affine_expr(q.row), col(q.lo)), ((1, 0), (0, 1)))
    calls = []
    if p is not None:
        x0 = p.vec0.const + (q.lo - p.col0)
        calls.append(_call(gemv[w], p.out, mat, ir.Window(p.vec.buffer, (col(x0),), ((1,),))))
    o0 = q.out0.const + (q.lo - q.col0)
    calls.append(_call(gemvt[w], ir.Window(q.out.buffer, (col(o0),), ((1,),)), mat,
                       ir.Window(q.vec.buffer, (affine_expr(q.vec0),), ((1,),))))
    return For(m, 0, (q.hi - q.lo) // w, ir.seq(*calls))


def _merged(p_body: Stmt, q_block: Stmt, u: For, library: tuple,
            independent: bool) -> Optional[Stmt]:
    """One block of a fused sweep, ``p_body`` (a loop of gemv calls over the block's rows,
    column block after column block) then ``q_block`` (the transposed product over the
    same rows: a loop of axpy calls over the block's rows, column block by column block),
    on the gemv and gemvt rows of ``library``:

    - ``independent`` (neither reads what the other writes: bicg, mvt): one loop over
      column blocks of a gemv call and a gemvt call on the same block of the matrix, the
      widest the columns allow; p's columns outside q's stay a loop of their own. Each
      row of the block is loaded once for both products' FMAs, and the 16-float rows halve
      the FMAs: bicg (410 x 390, AVX-512, one thread) measured 9.4 us a sweep against 11.3
      for the gemv then the axpy.
    - otherwise (atax: q scales by what p sums over the block): p's loop as it is, then q's
      columns on the gemvt row, which measured 0.6 to 0.9 us faster on atax (of 12) than
      the 64-wide axpy, half its FMAs on 16-float rows.

    None when the block is not of that form or ``library`` has no such row. Within each
    product the terms of each element are reassociated (its calls reordered); the merged
    block is checked to add exactly the terms the two did into exactly the same elements
    (``_same_terms``, on the first block: the windows that move with the block are p's and
    q's own, unchanged) before it is used."""
    p = _gemv_loop(p_body)
    if p is None:
        return None
    rows = _form(p.call.intrinsic)[1]
    q = _axpy_block(q_block, rows)
    if q is None or q.call.window(_roles(q.call.intrinsic)[1]).buffer.name != \
            p.call.window(_roles(p.call.intrinsic)[1]).buffer.name or q.row != p.row:
        return None
    taken = {x.var for x in ir.walk_stmts(ir.seq(p_body, q_block)) if isinstance(x, For)} | {u.var}
    if independent and p.lo <= q.lo < q.hi <= p.hi and (q.lo - p.lo) % p.width == 0 and \
            (q.hi - p.lo) % p.width == 0:
        merged = _block_calls(p, q, rows, library, taken)
        if merged is None:
            return None
        j = p.loop
        before = For(j.var, j.start, (q.lo - p.col0) // p.width, p.call)
        after = For(j.var, (q.hi - p.col0) // p.width, j.stop, p.call)
        out = ir.seq(*[x for x in (before, merged, after) if x.extent > 0])
    else:
        retiled = _block_calls(None, q, rows, library, taken)
        if retiled is None:
            return None
        out = ir.seq(p_body, retiled)
    # the windows that depend on u are p's and q's own, unchanged: one block checks them all
    if not _same_terms(ir.seq(p_body, q_block), out, {u.var: 0}):
        return None
    return out


def _same_terms(a: Stmt, b: Stmt, env: dict[str, int]) -> bool:
    """``a`` and ``b`` (loops around calls of ``_form`` intrinsics) add the same terms into
    the same elements at the loop values ``env``: the same multiset of (output element, the
    two input elements multiplied). False when either holds more than ``MAX_TERMS``."""
    names: dict[str, int] = {}
    try:
        ta, tb = _terms(a, env, names), _terms(b, env, names)
    except (KeyError, _TooMany):
        return False
    if ta.shape != tb.shape:
        return False
    return bool((ta[np.lexsort(ta.T[::-1])] == tb[np.lexsort(tb.T[::-1])]).all())


# The merge is checked term by term (``_same_terms``) only on blocks up to this many terms;
# a larger block keeps the gemv and the axpy one after the other.
MAX_TERMS = 1 << 20


class _TooMany(Exception):
    pass


def _terms(s: Stmt, env: dict[str, int], names: dict[str, int]) -> np.ndarray:
    """The terms ``s`` adds at ``env``, one row each: output buffer, output element, then
    the two factors' buffers and elements in ascending order (buffers by ``names``, filled
    as met; elements as row-major offsets)."""
    rows: list[np.ndarray] = []
    count = 0

    def visit(x: Stmt, env: dict[str, int]) -> None:
        nonlocal count
        if isinstance(x, ir.Seq):
            for c in x.stmts:
                visit(c, env)
        elif isinstance(x, For):
            for v in range(x.start, x.stop):
                visit(x.body, {**env, x.var: v})
        elif isinstance(x, Call) and _form(x.intrinsic) is not None:
            desc = x.intrinsic
            count += desc.iterations
            if count > MAX_TERMS:
                raise _TooMany
            points = np.indices([d.extent for d in desc.dims]).reshape(len(desc.dims), -1).T
            cols = []
            for o in (desc.output, *desc.inputs):
                w = x.window(o.name)
                moves = {it: w.buffer.offset(w.steps[d]) for d, it in enumerate(o.dims) if it is not None}
                base = w.buffer.offset(tuple(_value(e, env) for e in w.base))
                offsets = base + points @ np.array([moves.get(d.name, 0) for d in desc.dims], np.int64)
                cols.append((np.full(len(points), names.setdefault(w.buffer.name, len(names))), offsets))
            (oid, ooff), (aid, aoff), (bid, boff) = cols
            swap = (aid > bid) | ((aid == bid) & (aoff > boff))  # the factors in one order
            rows.append(np.stack([oid, ooff, np.where(swap, bid, aid), np.where(swap, boff, aoff),
                                  np.where(swap, aid, bid), np.where(swap, aoff, boff)], axis=1))
        else:
            raise _TooMany  # nothing but such calls is compared

    visit(s, env)
    return np.concatenate(rows) if rows else np.zeros((0, 6), np.int64)


def _value(e: ir.Expr, env: dict[str, int]) -> int:
    f = affine(e)
    return f.const + sum(c * env[v] for v, c in f.terms)
