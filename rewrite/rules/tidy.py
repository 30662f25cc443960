"""Tidying the chosen program: passes over whole buffers that the stages leave behind, folded
into the statements that follow them, and two sweeps over one matrix made one.

A padded product (``rules/padding.py``) accumulates into a temporary started at ``-0.0`` and
adds its valid part into the nest's output afterwards; the nest's own initialisation, a
zero fill, and a copy of the result elsewhere (``doitgen``'s ``A[r, q, p] = sumx[r, q, p]``,
a scaled product's ``C += 1.5 * T``) each stay a pass of their own. Three passes over
``sumx`` (zero it, add the padded part, read it back) become one read of the padded
temporary, and ``sumx`` goes::

    for r, q, p in grid(50, 40, 60):                  for r_o, ... : call(..., c=sumx_pad[...])
        sumx[r, q, p] = 0.0                           for r, q, p in grid(50, 40, 60):
    for r_o, ... : call(..., c=sumx_pad[...])             A[r, q, p] = 0.0 + sumx_pad[r, q, p]
    for r, q, p in grid(50, 40, 60):          ->
        sumx[r, q, p] += sumx_pad[r, q, p]
    for r, q, p in grid(50, 40, 60):
        A[r, q, p] = sumx[r, q, p]

fold-fill
    A top-level nest that writes every element of a buffer ``T`` exactly once,
    ``T[v + s] = e1`` (the form ``fusion.producer`` recognises, on a parameter too; ``e1``
    may also read the element it writes, ``C[i, j] = C[i, j] * 1.2``), and the next
    top-level statement that mentions ``T``, a nest that adds into every element of ``T``
    exactly once, ``T[w + t] += e2``, become that second nest alone, storing
    ``T[w + t] = e1' + e2`` (``e1'``: ``e1`` at the element the second nest writes)::

        for i, j in grid(200, 220):                  for x0, x1 in grid(200, 220):
            C[i, j] = C[i, j] * 1.2          ->          C[x0, x1] = C[x0, x1] * 1.2 + 1.5 * T[x0, x1]
        ...  (nothing that mentions C)               ...
        for x0, x1 in grid(200, 220):
            C[x0, x1] += 1.5 * T[x0, x1]

    Sound when ``e2`` reads no element of ``T``, ``e1`` none but the one it writes, and no
    statement from the fill to the accumulation (the accumulation included) writes another
    buffer ``e1`` reads. In the program as it was, each element ``x`` of ``T`` gets
    ``e1(x)``, computed from ``T``'s old ``x`` and other buffers; the statements between do
    not mention ``T``, so the accumulation reads that value back and stores ``e1(x) +
    e2(x)``. The new nest computes, per element, the same addition of the same two values:
    ``e1'`` reads ``T``'s old ``x`` (no statement wrote it since) and what ``e1`` read (none
    of it written since), and each element is written once, so no element's ``e1'`` sees
    another's new value. The statements between never saw ``T``, so its intermediate value
    is no longer written anywhere; the last value of every element is the same.
forward-copy
    A temporary (never a parameter) whose fill is a copy, ``T[v + s] = X[f]`` or a copy
    plus or minus a constant (``0.0 + X[f]``, what fold-fill leaves), is read from ``X``
    instead wherever it is read, and dropped: ``fusion.inline_producers``' rule
    (``inline-producer``, whose conditions make it sound) on these cheap producers only,
    which cost each reader an addition at most, never a pass.

produce-into-copy
    A temporary (never a parameter) whose fill is any value, ``T[v + s] = e``, and whose
    every reader is a plain copy of it, ``U[g] = T[f]`` (a packed operand's panels, which
    the ``pack-panel`` stage writes after planning), is computed where it is copied:
    ``U[g] = e[v := f + s]``, and ``T`` goes. ``fusion.inline_producers``' rule
    (``inline-producer``, whose conditions make it sound) on producers read by copies alone
    and at most once per element in all (``_reads``): ``e`` is evaluated no more often than
    the fill did, and the pass that wrote ``T`` and the one that read it back are one::

        for k, j in grid(1024, 1024):                 for j_o, k, j_i in grid(32, 1024, 32):
            Bf[k, j] = f32(B[k, j])          ->           Bf_panel2[j_o, k, j_i] = f32(B[k, j_i + 32 * j_o])
        for j_o, k, j_i in grid(32, 1024, 32):
            Bf_panel2[j_o, k, j_i] = Bf[k, j_i + 32 * j_o]

    Inlining the cast into the product itself would leave it no intrinsic to run on (the
    ``inline`` family weighs that and keeps ``Bf``); into the copy the packing makes, it
    costs nothing: the cast pays only because the operand is packed.

fuse-sweeps
    Two products that read one matrix, one in blocks of rows and one row by row (atax, bicg,
    mvt: ``A x`` and ``A^T y``), become one sweep over its rows (``rules/sweeps.py``, which
    says why that is sound): the second reads each block from L1. The only rule here that
    reorders additions (a reassociation); fold-fill and forward-copy keep every bit.

Statements under an ``if`` (a finite-operand guard's branches, ``rules/finite.py``) are left
as they are, and a buffer an ``if`` mentions is neither folded nor forwarded. It runs last
of the ``alternatives`` families, on the chosen program's statements: the planned program is
what has the passes. It never adds work, so it is always kept; its price drops by what the
removed passes cost at a vector rate (``cost.padding``'s, the rate they run at; a fused
sweep is priced as the two were).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Optional, Sequence

from .. import cost, ir
from ..ir import Accumulate, Binary, Const, Expr, For, If, Load, PrimFunc, Stmt, Store
from .fusion import Producer, inline_producers, producer
from .sweeps import fuse_sweeps


def improve(best, search):
    """``best`` (``pipeline.Choice``) with its planned statements tidied."""
    planned = best.planned
    params = {b.name for b in best.func.params}
    temps = {b.name for b in best.func.allocs} | {b.name for b in planned.allocs}
    folded = forward_copies(fold_fills(list(planned.stmts), params | temps), temps)
    folded = produce_into_copies(folded, temps)
    stmts = fuse_sweeps(folded, search.library.values())
    if stmts == list(planned.stmts):
        return best
    before = {b.name: b for s in planned.stmts for b in ir.buffers_of(s)}
    used = {b.name for s in stmts for b in ir.buffers_of(s)}
    gone = [b for name, b in before.items() if name in temps and name not in used]
    # what the removed passes cost, and the zeros of a dropped temporary (cost.padding); a
    # fused sweep costs what its two sweeps did
    saved = passes_cost(planned.stmts) - passes_cost(folded) + \
        cost.PER_PADDED_ELEMENT * sum(b.size for b in gone)
    allocs = [b for b in planned.allocs if b.name in used]
    return replace(best, planned=replace(planned, stmts=stmts, allocs=allocs,
                                         cost=planned.cost - max(0.0, saved)))


def passes_cost(stmts: Sequence[Stmt]) -> float:
    """What the statements without intrinsic calls cost as passes at a vector rate
    (``cost.padding``); statements holding a call, or under an ``if``, count nothing."""
    return cost.padding([s for s in stmts if not isinstance(s, (If, ir.Call)) and
                         not any(isinstance(x, ir.Call) for x in ir.walk_stmts(s))], ())


def tidy(stmts: list[Stmt], params: set[str], temps: set[str]) -> list[Stmt]:
    """``stmts`` (top-level) with fold-fill applied wherever it may be, then forward-copy on
    the temporaries ``temps``, then fuse-sweeps; ``params`` are the function's parameters
    (fold-fill applies to them too)."""
    stmts = fold_fills(stmts, params | temps)
    stmts = produce_into_copies(forward_copies(stmts, temps), temps)
    return fuse_sweeps(stmts)


def fold_fills(stmts: list[Stmt], buffers: set[str]) -> list[Stmt]:
    """fold-fill (module doc) on each fill of one of ``buffers``, repeatedly."""
    k = 0
    while k < len(stmts):
        folded = _fold_at(stmts, k, buffers)
        if folded is None:
            k += 1
        else:
            stmts = folded  # the fill at k is gone: look at what is at k now
    return stmts


def _fold_at(stmts: list[Stmt], k: int, buffers: set[str]) -> Optional[list[Stmt]]:
    fill = _fill(stmts[k], k, buffers)
    if fill is None:
        return None
    name = fill.buffer.name
    later = [j for j in range(k + 1, len(stmts)) if ir.mentions(stmts[j], name)]
    if not later:
        return None
    j = later[0]
    acc = _accumulation(stmts[j], buffers)
    if acc is None or acc[1].buffer.name != name:
        return None
    loops, leaf = acc
    inputs = {x.buffer.name for x in ir.loads_of(fill.value)} - {name}
    if any(ir.written_by(s) & inputs for s in stmts[k + 1:j + 1]):
        return None
    value = Binary("+", _own(fill.at(leaf.indices), fill.buffer), leaf.value)
    return stmts[:k] + stmts[k + 1:j] + [ir.wrap(loops, Store(leaf.buffer, leaf.indices, value))] + \
        stmts[j + 1:]


def _fill(s: Stmt, k: int, buffers: set[str]) -> Optional[Producer]:
    """``s`` as a fill of one of ``buffers`` (``fusion.producer``), or as an update of each
    element from itself, ``T[v + s] = g(T[v + s], ...)``: then the producer's value reads
    the element it writes through a stand-in buffer (``_self``), which ``_own`` turns back
    into ``T``."""
    found = producer(s, k, buffers)
    if found is not None:
        return found
    loops: list[For] = []
    leaf = s
    while isinstance(leaf, For):
        loops.append(leaf)
        leaf = leaf.body
    if not isinstance(leaf, Store) or leaf.buffer.name not in buffers:
        return None
    own = [x for x in ir.loads_of(leaf.value) if x.buffer.name == leaf.buffer.name]
    if not own or any(x.indices != leaf.indices for x in own):
        return None
    stand_in = _self(leaf.buffer)
    value = ir.map_loads(leaf.value, lambda x: Load(stand_in, x.indices)
                         if x.buffer.name == leaf.buffer.name else x)
    found = producer(ir.wrap(loops, Store(leaf.buffer, leaf.indices, value)), k, buffers)
    return found


def _self(b: ir.Buffer) -> ir.Buffer:
    return ir.Buffer(b.name + " itself", b.dtype, b.shape)  # no program names a buffer so


def _own(e: Expr, b: ir.Buffer) -> Expr:
    stand_in = _self(b)
    return ir.map_loads(e, lambda x: Load(b, x.indices) if x.buffer == stand_in else x)


def _accumulation(s: Stmt, buffers: set[str]) -> Optional[tuple[list[For], Accumulate]]:
    """``s`` as loops around one ``T[w + t] += e`` that adds into every element of ``T``
    exactly once, ``e`` not reading ``T``: the loops and the statement; else None."""
    loops: list[For] = []
    leaf = s
    while isinstance(leaf, For):
        loops.append(leaf)
        leaf = leaf.body
    if not isinstance(leaf, Accumulate):
        return None
    # the same conditions as a fill's, on the statement read as a store
    if producer(ir.wrap(loops, Store(leaf.buffer, leaf.indices, leaf.value)), 0, buffers) is None:
        return None
    return loops, leaf


def _is_copy(e: Expr) -> bool:
    """A load, or a load plus or minus a constant."""
    if isinstance(e, Load):
        return True
    return isinstance(e, Binary) and e.op in ("+", "-") and (
        isinstance(e.a, Const) and isinstance(e.b, Load) or
        isinstance(e.a, Load) and isinstance(e.b, Const))


def forward_copies(stmts: list[Stmt], temps: set[str]) -> list[Stmt]:
    """forward-copy (module doc) on the temporaries ``temps`` no ``if`` mentions and whose
    readers read each element at most ``MAX_READS`` times, on average (each read then costs
    an addition more)."""
    return _inline_fills(stmts, temps, lambda fill, later: _is_copy(fill.value) and
                         _reads(stmts, fill.buffer.name) <= MAX_READS * fill.buffer.size)


def produce_into_copies(stmts: list[Stmt], temps: set[str]) -> list[Stmt]:
    """produce-into-copy (module doc) on the temporaries ``temps`` no ``if`` mentions."""
    def into(fill: Producer, later: list[Stmt]) -> bool:
        name = fill.buffer.name
        readers = [r for r in later if ir.mentions(r, name)]
        return bool(readers) and all(_copy_of(r, name) for r in readers) and \
            _reads(readers, name) <= fill.buffer.size

    return _inline_fills(stmts, temps, into)


def _inline_fills(stmts: list[Stmt], temps: set[str], accept) -> list[Stmt]:
    """``stmts`` with the fills (``fusion.producer``) of the temporaries ``temps`` that no
    ``if`` mentions and ``accept(fill, statements after it)`` takes inlined by
    ``fusion.inline_producers`` (whose conditions make it sound)."""
    guarded = {b.name for s in stmts if isinstance(s, If) for b in ir.buffers_of(s)}
    chosen = {}
    for k, s in enumerate(stmts):
        fill = producer(s, k, temps)
        if fill is not None and fill.buffer.name not in guarded and accept(fill, stmts[k + 1:]):
            chosen[fill.buffer.name] = fill.buffer
    if not chosen:
        return stmts
    func = PrimFunc("_", (), ir.seq(*stmts), tuple(chosen.values()))
    out = inline_producers(func)
    return stmts if out is func else list(ir.stmts_of(out.body))


def _copy_of(s: Stmt, name: str) -> bool:
    """``s`` is loops around one ``U[g] = name[f]`` with ``U`` another buffer."""
    while isinstance(s, For):
        s = s.body
    return isinstance(s, Store) and s.buffer.name != name and isinstance(s.value, Load) and \
        s.value.buffer.name == name


# Reads of a forwarded copy per element, at most: each read becomes a read of the source
# plus the copy's constant addition, if it has one.
MAX_READS = 2


def _reads(stmts: Sequence[Stmt], name: str) -> int:
    """How many loads of buffer ``name`` the statements run."""
    total = 0
    for s in stmts:
        for x, around in ir.walk_in_loops(s):
            n = sum(1 for e in ir.stmt_exprs(x) for ld in ir.loads_of(e) if ld.buffer.name == name)
            for lp in around:
                n *= lp.extent
            total += n
    return total
