"""The cheapest program for each accumulate nest, out of the matches the e-graph found.

For every nest the candidates are: the scalar nest itself, and every binding of every
matched intrinsic (``match.bindings``). A binding covers the divisible part of the bound
loops with calls; the remainder is again a nest with the same body, so it gets the same
choice, recursively (to ``MAX_DEPTH``) -- a 64-row matmul takes 10 tiles of the 6x16
outer product and its last 4 rows on 8-wide FMAs. A constant factor (``2.0 * A * B``) is
taken out of the reduction: the calls accumulate into a zeroed temporary and one
elementwise pass adds ``2.0 * T`` to the output (distributivity, licensed like
reassociation). A binding whose inputs miss the unit stride the intrinsic wants is weighed
twice: gathered as it is, and behind a packing stage (``rules/layout.py``) that copies those
inputs into a temporary where the stride is 1, planned again with no further packing.
A binding whose unit-stride input jumps far between consecutive calls along the reduction
(``B[k, 16 * j_o]`` moves a row of B per k) is also weighed behind a ``pack-panel`` stage
that copies, for the divisible part, each tile's panel contiguously; ``cost.streamed``
prices the strided panel, so the copy is taken only where it measured faster. The same
stage copies an operand that wants one contiguous block per call (``Layout.contiguous``)
into blocks, weighed against ``cost.unblocked``. A binding that leaves remainders (or binds a
loop shorter than its dim, down to half of it) is also weighed behind ``pad-to-tile``
(``rules/padding.py``): its loops rounded up to the tile on zero-padded copies, the padded
nest planned again on that intrinsic, the output's valid part added back; on the nests the
function has, not on remainders (``Family.depth``). The stages are the ``nest-stage`` and
``calls-stage`` rule families (``rules/__init__.py``); the extractor runs those in force.

The candidates are not compared here: each nest becomes an e-class of alternatives in a plan
e-graph (``plans.py``), every piece of code a leaf priced by ``cost.py`` and weighted by its
trip count, and egglog's extraction takes the cheapest program. The pruning done in Python
is exact: a binding whose calls alone cost as much as the scalar nest cannot win; each
candidate of a nest has a floor (a lower bound on every program it leads to), candidates
are planned cheapest floor first, and one whose floor exceeds the nest's cheapest program
found so far is not planned (branch and bound, ``_Builder``); and ``plans.near_cheapest``
hands egglog only the alternatives within a few percent of their nest's cheapest. A scaled
product's bindings share one inner nest (``_Builder._scaled``).
"""

from __future__ import annotations

import functools
import heapq
import math
from dataclasses import dataclass, field
from typing import Callable, NamedTuple, Optional

from . import cost, descriptor, ir, rules
from .caches import l1_data_bytes, l2_bytes
from .calls import op_count
from .affine import affine
from .plans import NestRef, PlanGraph
from .ir import INDEX, Accumulate, Binary, Buffer, Call, Const, Expr, For, Load, Stmt, Store, Var
from .match import (BodyMatch, Binding, affine_expr, bindings, dims_after_tiling, dtypes_agree,
                    moved_index, remainders, semantics_value, slow_dims, window)
from .names import Names
from .nests import AccNest, Dim
from .rules import layout, loops

MAX_DEPTH = 3
PRUNE = True  # branch and bound in ``_Builder.nest`` (off: every candidate planned, for tests)


@dataclass
class Plan:
    """Statements replacing one nest, the temporaries they need and what they cost."""

    stmts: list[Stmt]
    cost: float
    allocs: list[Buffer] = field(default_factory=list)


def _substitute(e: Expr, loads: dict[str, Load]) -> Expr:
    """The intrinsic's body with each operand load replaced by the program's load."""
    return ir.map_loads(e, lambda x: loads[x.buffer.name])


class _Stage(NamedTuple):
    """A stage family's hooks: what it would change (``requests`` of a nest stage,
    ``operands`` of a calls stage), the change itself, and (a nest stage's) its price."""

    name: str
    pick: Callable
    build: Callable
    price: Optional[Callable] = None
    depth: Optional[int] = None  # the deepest remainder level a nest stage is weighed on
    deeper: Optional[Callable] = None  # its builds at that depth -> weighed one level deeper


class Extractor:
    def __init__(self, library: dict, names: Names, rules_off: frozenset[str] = frozenset()):
        self.library = library  # name -> descriptor
        self.names = names  # names in use (temporaries get fresh ones)
        # the stage families (rules/__init__.py), in their order
        self.nest_stages = [_Stage(f.name, *f.load(), f.depth, f.load_deeper())
                            for f in rules.families(rules.NEST_STAGE, rules_off)]
        self.calls_stages = [_Stage(f.name, *f.load())
                             for f in rules.families(rules.CALLS_STAGE, rules_off)]
        self._packs: dict = {}  # (stage, nest, matches, what to copy) -> layout.Packing
        self._temps: dict = {}  # (nest, scale) -> the scaled product's temporary
        self._panels: dict = {}  # (stage, nest, binding, tiling, operands) -> layout.Panel
        self._panel_names: dict = {}  # stage -> what a panel holds -> its temporary's name
        self.split_loops = "loops" not in rules_off  # split-for-intrinsic, with the loop rules
        # other forms of the intrinsics (partial forms, masked edges: ``rules/edges.py``)
        self.forms = [f.load() for f in rules.families(rules.FORMS, rules_off)]
        # a form that computes what an intrinsic of the library does is that intrinsic, at
        # its own price (the 6 x 16 tile cut to 4 rows is the 4 x 16 tile)
        self.registered = {descriptor.signature(d): d for d in library.values()}
        # nest stages name their temporaries here, provisionally: many are built, few kept
        self.trial_names = names.copy()
        self._trial: set[str] = set()  # the provisional names handed out
        self._final: dict[str, str] = {}  # a provisional name kept -> its name in the program

    def best(self, nest: AccNest, matches: list[BodyMatch]) -> Plan:
        """The cheapest program for ``nest`` given the e-graph's ``matches``."""
        graph = PlanGraph()
        root = _Builder(self, graph).nest(nest, tuple(matches), 0, True)
        leaves, total = graph.cheapest(root)
        plan = Plan([], total)
        for k in leaves:
            plan.stmts += graph.leaves[k].stmts
            plan.allocs += graph.leaves[k].allocs
        return self._named(plan)

    def stage_names(self) -> Names:
        """Where a nest stage takes its temporaries' names: provisional ones, which ``best``
        replaces, in the chosen program, by fresh names in order of appearance (``B_pad``,
        not the ``B_pad7`` of the seventh candidate built)."""
        return _Recording(self.trial_names, self._trial)

    def _named(self, plan: Plan) -> Plan:
        """``plan`` with the provisional names of nest stages' temporaries replaced (and
        those of temporaries named after them, a panel of a padded copy)."""
        rename = self._final  # the same temporary chosen again (a guard's other branch)
        for b in plan.allocs:  # keeps the name it was given
            if b.name in self._trial and b.name not in rename:
                rename[b.name] = self.names.fresh(_base(b.name))
        for b in plan.allocs:
            head = next((t for t in self._trial if b.name.startswith(t + "_") and t in rename), None)
            if head is not None and b.name not in rename:
                rename[b.name] = self.names.fresh(rename[head] + _base(b.name[len(head):]))
        if not any(b.name in rename for b in plan.allocs):
            return plan
        to = {b.name: Buffer(rename[b.name], b.dtype, b.shape) for b in plan.allocs if b.name in rename}
        return Plan([renamed(st, to) for st in plan.stmts], plan.cost,
                    [to.get(b.name, b) for b in plan.allocs])


class _Recording(Names):
    """A ``Names`` that also notes, in ``handed``, each name it hands out."""

    __slots__ = ("_handed",)

    def __init__(self, names: Names, handed: set[str]):
        self._used = names._used  # shares the names in use with ``names``
        self._handed = handed

    def reserve(self, name: str) -> str:
        self._handed.add(name)
        return super().reserve(name)


def _base(name: str) -> str:
    """``B_pad`` for ``B_pad7``: the name without the number ``Names.fresh`` appended."""
    return name.rstrip("0123456789") or name


def renamed(s: Stmt, to: dict[str, Buffer], moves: Optional[dict[str, tuple[int, ...]]] = None) -> Stmt:
    """``s`` with the buffers named in ``to`` replaced, and each access of a buffer named in
    ``moves`` moved by its constants (``X[i, k]`` by (512, 0): ``X[i + 512, k]``)."""
    moves = moves or {}

    def indices(b: Buffer, idx: tuple[Expr, ...]) -> tuple[Expr, ...]:
        out = tuple(expr(i) for i in idx)
        by = moves.get(b.name)
        return out if by is None else tuple(_plus(i, d) for i, d in zip(out, by))

    def expr(e: Expr) -> Expr:
        return ir.map_loads(e, lambda x: Load(to.get(x.buffer.name, x.buffer),
                                              indices(x.buffer, x.indices)))

    def leaf(x: Stmt) -> Stmt:
        if isinstance(x, (Store, Accumulate)):
            return type(x)(to.get(x.buffer.name, x.buffer), indices(x.buffer, x.indices),
                           expr(x.value))
        if isinstance(x, Call):
            return Call(x.intrinsic, tuple((n, ir.Window(to.get(w.buffer.name, w.buffer),
                                                         indices(w.buffer, w.base), w.steps))
                                           for n, w in x.operands), x.output)
        return x

    return ir.map_stmt(s, leaf, expr)


def _plus(e: Expr, d: int) -> Expr:
    """``e + d``, folded into ``e``'s constant when ``e`` is affine (``match.moved_index``)."""
    return e if d == 0 else moved_index(e, d)


def _calls(desc, loops, windows) -> Stmt:
    s: Stmt = Call(desc, tuple((op.name, windows[op.name]) for op in desc.operands),
                   desc.output.name)
    for d in reversed(loops):
        s = For(d.name, d.start, d.stop, s)
    return s


# Cache blocking of a call nest, GotoBLAS's loops on the calls: the reduction is cut into
# blocks of KC steps, KC sized on this CPU's L1 data cache by the widest input's panel (B's
# KC x tile width fills two thirds of it), and the row tiles into groups of at most
# ROW_TILES. Measured on the 8x32 tile, an AVX-512 Xeon with 48 KB of L1, one thread, with
# B's panel kept in L1 across a group's row tiles: 2048^3 ran 161 ms with KC = 128 and
# groups of 16, 134 ms with KC = 256 and groups of 8 (numpy 115); 1024^3 17.9 and 17.2 ms
# (numpy 15.4). Each row tile now sweeps the column tiles with its own KC steps of A in L1
# instead (``blocked_loops``); that panel is a quarter of B's for the same KC (8 rows
# against 32 columns), so this KC leaves it a sixth of L1.
KC_MIN, ROW_TILES = 64, 8


def _call_bytes(op, windows: dict) -> int:
    """The bytes of operand ``op`` one call reads, as its window's buffer holds them (a
    widened copy's elements are wider: ``Layout.widened``)."""
    return math.prod(op.shape) * ir.itemsize(windows[op.name].buffer.dtype)


def _window_vars(w: ir.Window) -> set[str]:
    """The loop variables a window's base moves with."""
    return {x.name for e in w.base for x in ir.walk_expr(e) if isinstance(x, Var)}


class Blocked(NamedTuple):
    """A call nest's loops and windows in their blocked order, and ``rest``: the call nests
    (``(loops, windows)`` each) of the column tiles that no whole column block holds, run
    after it; ``held``: the inputs whose reduction blocks the order keeps in L2 while the
    row tiles sweep them (GotoBLAS's order: B's KC x NC block), which ``cost.streamed``
    does not charge as coming back from L3."""

    loops: list
    windows: dict
    rest: tuple = ()
    held: frozenset = frozenset()


def blocked_calls(desc, blocked: Blocked) -> list[Stmt]:
    """The call nests of ``blocked``, in order."""
    return [_calls(desc, blocked.loops, blocked.windows)] + [_calls(desc, *r) for r in blocked.rest]


def blocked_loops(desc, loops: list, windows: dict, names: Names) -> Blocked:
    """``(loops, windows)`` in the blocked order ``rows_b, k_o, rows_i, other tiles, k_i`` when
    the reduction outgrows its block (``l1_data_bytes``), else as given. ``loops`` hold the loops that move the
    output first, then the reduction; the windows' bases are rewritten for the split loops.

    Before -> after, on 8x32 tiles of a 1024^3 product (32 KB of L1: KC = 128)::

        for i_o, j_o, k in grid(128, 32, 1024): call(..., a=window(A[8 * i_o, k], ...), ...)
        for i_b, k_o, i_i, j_o, k_i in grid(16, 8, 8, 32, 128):
            call(..., a=window(A[64 * i_b + 8 * i_i, 128 * k_o + k_i], ...), ...)

    Each row tile keeps its KC steps of A (the operand the tile broadcasts, 8 x KC floats)
    in L1 while it sweeps the column tiles, whose block of B (KC rows over all columns, at
    most half of L2 here) every row tile of the group reads from L2. A's panel is a quarter
    of B's for the same KC (8 rows against 32 columns: 4 KB of a 32 KB 8-way L1 at KC =
    128, one way), so L1 keeps most of its ways for B's stream and C's tile; the other way
    round (GotoBLAS's and BLIS's loop around the micro-kernel), B's panel (KC x 32 floats,
    half of that L1) stays in L1 across the group's row tiles and the group's A comes from
    L2. That measured slower on a Zen 4 core (32 KB 8-way L1, 1 MB L2, KC = 128; one thread
    on a loaded machine, each run timed on the thread's CPU clock, the two orders and numpy
    interleaved; numpy's least time over ours, B's panel in L1 / A's): 512^3 1.03 / 1.07,
    1000^3 0.93 / 0.97, 1024^3 0.93 / 0.99, 512x768x768 1.02 / 1.06, 4096x256x512 1.07 /
    1.10 (medians: 1024^3 26.5 / 24.1 ms, numpy 22.4); on the AVX-512 Xeon, A's panel in
    L1 across a block of B was the faster of the two at 2048^3 (below).

    When one reduction block of the widest input over all its column tiles (B's KC rows)
    is more than half of L2, the column tiles are cut into blocks that fit it too
    (``cols_b``), outermost, GotoBLAS's NC: ``cols_b, k_o, rows, cols_i, k_i``. Each row
    tile then reads the B block from L2, not L3, and its own KC steps of A stay in L1
    across the block's column tiles. On 8x32 tiles of 2048^3 (2 MB of L2; loaded machine,
    same-run ratios to numpy) that measured 0.90 against 0.70 of numpy's speed on one
    thread (0.87 with the rows in groups: ``cols_b, k_o, rows_b, cols_i, rows_i, k_i``),
    1.03-1.10 against 0.80-0.83 on two. That order needs no row groups, so a count of row
    tiles that none of 2 to ``ROW_TILES`` divides (2048 rows on 6-row tiles: 341) still
    gets it; such a product was padded to rows that group (342 tiles, A and C copied out
    and back) and now runs in place: 2048^3 on one Zen 3 thread, 0.97-0.99 of the padded
    program's time (least and median times, the two taking turns). One row tile (a few rows:
    ``C[0, 16 * j_o]`` over ``j_o, k``) is cut into column blocks the same way, ``cols_b,
    k_o, cols_i, k_i``, where no sweep of eight rows applies (``_rows_apart``): on Zen 3 (one
    thread, in turns with numpy) 6 x 4096 x 496 ran at 2.0 times numpy's speed against 1.65
    down whole columns of B, 4 x 8192 x 320 at 1.34-1.41 against 0.89-0.97.

    Column tiles whose count has no divisor that makes blocks of at least half the size
    that fits (a prime such as 1504's 47 tiles of 32 columns, where no block fit and each
    row tile read B's 565 KB from L3 again) are cut into the fewest equal blocks that fit
    (an even number of them where that costs no more than half a block: two threads), and
    the few tiles left over (fewer than the blocks) are a call nest of their own after
    them, blocked again the same way (``Blocked.rest``): 1504^3 on one Zen 4 thread, 1.0 MB
    of L2, 0.95 of numpy's speed against 0.78 with no column blocks.

    An input read from a widened copy (``Layout.widened``: the AVX2 int8 tile's i16 copies,
    twice the bytes of the int8 data, 64 bytes of B a step of four cycles against the f32
    tile's six) may fill all of L1 with its KC steps, and a reduction that fits so is one
    block, the columns still cut for L2: on Zen 3 (32 KB L1, 512 KB L2, one thread, each
    program taking turns with a loop of ``vpmaddwd``, 15-21 rounds) u8 x i8 1024^3 ran
    0.548-0.557 of the ``vpmaddwd`` ceiling with its 512 pair steps whole in blocks of 128
    columns, against 0.494-0.503 in two blocks of 256 steps over 256 columns; with B's panel
    copied into L1 and never moved, 0.548-0.573, so the longer stream is what the shorter
    blocks lost, not L2's capacity (the 256-step blocks laid out contiguously: no faster).
    512^3 0.493-0.546 against 0.503-0.545 (unchanged), 2048^3 0.484 against 0.465. The f32
    tiles keep two thirds: their 2048^3 with 512 steps measured 1.03-1.05 of 256's, 1024^3
    no faster, within this machine's noise.

    Each output element still sums over k in increasing order: only the order in which
    different output tiles are visited changes. The outermost loop still moves the output,
    so it stays the parallel one."""
    moves = _window_vars(windows[desc.output.name])
    moving = [d for d in loops if d.name in moves]
    reduction = [d for d in loops if d.name not in moves]
    if len(reduction) > 1 and moving:
        return Blocked(_reductions_outside(desc, loops, moving, reduction, windows), windows)
    wide = [d for d in moving if d.extent > 1]  # a row vector's one row (``C[i, 64 * j_o]``) aside
    if len(reduction) == 1 and len(wide) == 1 and len(desc.output.shape) == 1:
        found = _rows_apart(desc, wide[0], reduction[0], windows, names)
        if found is None:
            return Blocked(loops, windows)
        unit = [d for d in moving if d.extent == 1]
        return Blocked(unit + found.loops, found.windows,
                       tuple((unit + list(loops), w) for loops, w in found.rest))
    steps = _reduction_blocks(desc, reduction[0], windows) if len(reduction) == 1 else None
    if len(reduction) == 1 and 1 <= len(wide) <= 2 and _output_bytes(desc, moving) <= l2_bytes() // 2:
        for cols in wide:  # a few rows of tiles: as a vector-matrix product's row tiles
            rows = next((d for d in wide if d is not cols), None)
            if rows is not None and _block_fits_l2(steps, reduction[0], cols, windows):
                continue
            found = _rows_apart(desc, cols, reduction[0], windows, names, rows)
            if found is not None:
                unit = [d for d in moving if d.extent == 1]
                return Blocked(unit + found.loops, found.windows,
                               tuple((unit + list(loops), w) for loops, w in found.rest))
    if len(reduction) != 1 or not moving:
        return Blocked(loops, windows)
    (r,) = reduction

    def uses(op) -> set[str]:
        return _window_vars(windows[op.name])

    if steps is None:
        return Blocked(loops, windows)
    widest, step, kc_max, whole, kc = steps
    rows = next((d for d in moving if d.name not in uses(widest)), None)
    group = next((n for n in range(min(ROW_TILES, rows.extent // 2), 1, -1)
                  if rows.extent % n == 0), None) if rows is not None else None
    if kc is None or (rows is None and len(moving) > 1) or (r.extent <= kc_max and not whole):
        return Blocked(loops, windows)
    others = [d for d in moving if d is not rows]
    cols = next((d for d in others if d.name in uses(widest)), None) if len(others) == 1 else None
    nc = blocks = None
    if cols is not None and kc * step * cols.extent > l2_bytes() // 2:
        nc, blocks = _column_blocks(cols.extent, max(1, l2_bytes() // 2 // (kc * step)))
    elif cols is not None and cols.extent >= 4 and group is not None and not whole \
            and _few_odd(rows.extent // group):
        nc, blocks = _column_blocks(cols.extent, cols.extent // 2)  # see _few_odd
    if nc is None and (group is None or whole):  # column blocks leave the rows whole: no group needed
        return Blocked(loops, windows)
    if rows is None and nc is None:  # one row tile: only column blocks would change anything
        return Blocked(loops, windows)
    k_o, k_i = names.fresh(f"{r.name}_o"), names.fresh(f"{r.name}_i")
    rows_b, rows_i = (None, None) if rows is None else \
        (names.fresh(f"{rows.name}_b"), names.fresh(f"{rows.name}_i"))

    values = {} if whole else {r.name: _split(r, k_o, k_i, kc)}
    if group is not None:
        values[rows.name] = _split(rows, rows_b, rows_i, group)

    rest: tuple = ()
    if nc is not None:
        if blocks * nc < cols.extent:  # the tiles left over: a nest of their own, blocked again
            left = Dim(cols.name, 0, cols.extent - blocks * nc)
            past = {cols.name: Binary("+", Var(cols.name), Const(cols.start + blocks * nc, INDEX))}
            after = blocked_loops(desc, [left if d is cols else d for d in loops],
                                  {name: _rebased(w, past) for name, w in windows.items()}, names)
            rest = ((after.loops, after.windows),) + after.rest
        cols_b, cols_i = names.fresh(f"{cols.name}_b"), names.fresh(f"{cols.name}_i")
        values = {**({} if whole else {r.name: values[r.name]}), cols.name: _split(cols, cols_b, cols_i, nc)}
        order = [Dim(cols_b, 0, blocks)] + ([] if whole else [Dim(k_o, 0, r.extent // kc)]) + \
            ([] if rows is None else [rows]) + [Dim(cols_i, 0, nc), r if whole else Dim(k_i, 0, kc)]
    else:
        order = ([Dim(rows_b, 0, rows.extent // group), Dim(k_o, 0, r.extent // kc),
                  Dim(rows_i, 0, group)] + others + [Dim(k_i, 0, kc)])
    return Blocked(order, {name: _rebased(w, values) for name, w in windows.items()}, rest,
                   frozenset({widest.name}))


# A reduction whose steps read an input rows apart (``ROWS_APART`` bytes or more) runs in
# blocks of ``ROW_STEPS`` steps, each block over all the output's tiles (``_rows_apart``).
ROWS_APART, ROW_STEPS = 2048, 8


def _output_bytes(desc, moving: list) -> int:
    """The bytes of the output all the calls' tiles write, one tile per value of ``moving``."""
    return math.prod(d.extent for d in moving) * math.prod(desc.output.shape) * \
        ir.itemsize(desc.output.dtype)


def _rows_apart(desc, cols: Dim, r: Dim, windows: dict, names: Names,
                rows: Optional[Dim] = None) -> Optional[Blocked]:
    """A vector-matrix product's calls (``y[64 * j_o] += x[k] * B[k, 64 * j_o]``: one loop
    moving the output, the reduction reading B a row further each step) in blocks of
    ``ROW_STEPS`` rows of B, each block swept over all the output's tiles::

        for j_o, k in grid(32, 2048):            for j_o_b, k_o, j_o_i, k_i in grid(2, 256, 16, 8):
            call(axpy, c=y[64 * j_o],      ->        call(axpy, c=y[64 * (16 * j_o_b + j_o_i)],
                 b=B[k, 64 * j_o], ...)                   b=B[8 * k_o + k_i, 64 * (16 * j_o_b + j_o_i)], ...)

    As given, each tile walks a column strip of B down 2048 rows, 8 KB apart, a new page
    each step, where no hardware prefetcher follows; in blocks, B is read 8 rows at a time
    whole, left to right. The output's tile is loaded and stored once a block instead of
    once. The tiles are cut into two halves, outermost, so that two threads each take one
    (the reduction loop cannot be shared); an odd count's last tile runs after them.
    Measured on Zen 4, one thread, the AVX-512 axpy, numpy's ``x @ B`` time over ours:
    2048 x 2048 0.38 as given against 1.04 in blocks of 8 (4 rows: 0.64, 16: 0.77, 32:
    0.53, 64: 0.44, row by row 0.81), 1024 x 4096 0.38 against 1.09, 1000 x 1000 0.80
    against 1.02; two halves as fast as one sweep, four 0.90, eight 0.68.

    A 2-D tile takes the same order where its tiles' whole output is at most half of L2
    (``blocked_loops``: a few rows of a wide product, whose C then stays in cache from block
    to block), its row tiles (``rows``) inside each block, outside the column tiles that
    read the block's rows of B, ``k_o, rows, cols, k_i``. ``C = A @ B`` at M x 2048 x 2048
    on Zen 3 (6x16 tiles and the 4- and 2-row ones for the rows left; one thread, in turns
    with numpy, medians) ran at 3.3 (M = 2), 1.7-2.1 (4, 6, 7), 1.1 (8, 12), 1.07 (16) and
    0.85-0.88 (24) times numpy's speed, against 0.2-0.6 before (B read down its columns,
    or C's transpose on 16-wide copies of A and C); the nests of the rows left, blocked
    alike, run in the same blocks (``rules/tiles.py``'s ``fuse_blocks``). Blocks of 16 and
    32 rows measured slower at 10, 16 and 24 rows. A 2-D tile's leftover rows otherwise
    (``C[1020, 16 * j_o]`` over ``j_o, k``, under a large product) read B's panel with the
    tiles instead, ``rules/tiles.py``'s co-block. Where an even number of row tiles covers
    all of the output's rows, the two halves are the row tiles' (``k_o, rows_i, cols, k_i``
    inside ``rows_b``), not the columns': each thread then reads all of B, 8 rows at a time
    whole, where the columns' halves read each row of B in two runs, one a thread, and the
    two threads ran only 1.3-1.6 times as fast as one. Zen 4, the 8x32 tile, in turns, wall
    clock, two threads: 16 x 2048 x 2048 1.34 against 0.98 ms with the rows' halves, 32 x 2048
    x 2048 3.9 against 2.7, 16 x 4096 x 8192 14.3 against 8.6 (B, 128 MB, read by both
    threads at once from memory), 32 x 1024 x 4096 2.7 against 2.2. One thread runs either
    as one sweep (``lower.one_sweep``). Where rows are left to another nest, the columns'
    halves stay, so that nest's blocks still fuse with these (``fuse_blocks``).

    Each output element still sums over the reduction in order. None where it does not apply: an input read rows apart that the tile loop moves along and that outgrows L2
    (one that L2 holds is read from there in any order: PolyBench's 400 x 400 ``mvt``, whose
    two products share each read of A, ``rules/tidy.py``'s fuse-sweeps), a reduction longer
    than a block that some block size from ``ROW_STEPS`` down to half of it divides."""
    def moves(op, var: str) -> int:
        return abs(layout._moves(windows[op.name], var)) * ir.itemsize(windows[op.name].buffer.dtype)

    def outgrows_l2(op) -> bool:
        buf = windows[op.name].buffer
        return buf.size * ir.itemsize(buf.dtype) > l2_bytes()

    far = [op for op in desc.inputs if moves(op, r.name) >= ROWS_APART and moves(op, cols.name)
           and outgrows_l2(op) and (rows is None or not moves(op, rows.name))]
    kc = next((n for n in range(ROW_STEPS, ROW_STEPS // 2 - 1, -1) if r.extent % n == 0), None)
    if not far or kc is None or r.extent <= kc or cols.extent < 2:
        return None
    k_o, k_i = names.fresh(f"{r.name}_o"), names.fresh(f"{r.name}_i")
    values = {r.name: _split(r, k_o, k_i, kc)}
    around = [] if rows is None else [rows]
    order = [Dim(k_o, 0, r.extent // kc)] + around + [cols, Dim(k_i, 0, kc)]
    rest: tuple = ()
    if rows is not None and rows.extent % 2 == 0 and _all_rows(desc, rows, windows):
        if rows.extent == 2:  # a row tile a thread: the row loop itself
            order = [rows, order[0], cols, order[-1]]
        else:
            r_b, r_i = names.fresh(f"{rows.name}_b"), names.fresh(f"{rows.name}_i")
            half = rows.extent // 2
            values[rows.name] = _split(rows, r_b, r_i, half)
            order = [Dim(r_b, 0, 2), order[0], Dim(r_i, 0, half), cols, order[-1]]
    elif cols.extent >= 4:
        c_b, c_i = names.fresh(f"{cols.name}_b"), names.fresh(f"{cols.name}_i")
        half = cols.extent // 2
        values[cols.name] = _split(cols, c_b, c_i, half)
        order = [Dim(c_b, 0, 2), order[0]] + around + [Dim(c_i, 0, half), order[-1]]
        if cols.extent % 2:  # an odd count's last tile: a nest of its own after the halves
            last = {r.name: values[r.name], cols.name: Const(cols.start + 2 * half, INDEX)}
            rest = (([order[1]] + around + [order[-1]],
                     {name: _rebased(w, last) for name, w in windows.items()}),)
    return Blocked(order, {name: _rebased(w, values) for name, w in windows.items()}, rest)


def _all_rows(desc, rows: Dim, windows: dict) -> bool:
    """The tiles along ``rows`` write every row of the output's buffer, from its first: one
    axis of the output's window moves with ``rows`` by the tile's extent along it (one
    operand dim stepping that axis by 1), from 0 at ``rows.start`` to the buffer's extent
    at its end."""
    w = windows[desc.output.name]
    for axis, e in enumerate(w.base):
        m = affine(e)
        if m is None:
            return False
        step = m.coeff(rows.name)
        if step:
            along = [(n, s[axis]) for n, s in zip(desc.output.shape, w.steps) if s[axis]]
            at_start = m.const + step * rows.start  # the other loops at 0: their first tile
            others = [v for v in m.vars if v != rows.name]
            return along == [(step, 1)] and not others and at_start == 0 and \
                step * rows.extent == w.buffer.shape[axis]
    return False


def _split(d: Dim, outer: str, inner: str, n: int) -> Expr:
    """``d``'s variable as the loops ``outer`` (steps of ``n``) and ``inner`` that split it."""
    scaled = Binary("*", Const(n, INDEX), Var(outer))
    return Binary("+", Binary("+", Const(d.start, INDEX), scaled), Var(inner))


def _rebased(w: ir.Window, values: dict) -> ir.Window:
    """``w`` with the loop variables ``values`` names replaced by their values."""
    return ir.Window(w.buffer, tuple(affine_expr(affine(ir.substitute(e, values))) for e in w.base),
                     w.steps)


# An odd number of column blocks leaves one of two threads idle for the last block; from
# this many on, the idle share (1/9 and less) costs less than equal blocks and a nest of the
# tiles left over, which reads all of A once more. Zen 4, the 8x32 tile, two threads
# against one (in turns, wall clock, medians of 11-21 rounds, ms), the odd blocks of a
# divisor / an even number of equal blocks and the rest: 1056^3 (33 tiles, 3 blocks / 4 and
# 1 left) 15.7 / 12.4 on two threads, 24.3 / 24.4 on one; 1250^3 (39, 3 / 2 and 1) 24.6 /
# 19.5, 37.3 / 37.7; 1440^3 (45, 3 / 4 and 1) 40.4 / 31.3, 61.4 / 62.9; 1760^3 (55, 5 / 4
# and 3) 66.5 / 57.9, 113 / 113; 2016^3 (63, 7 / 4 and 3) 106 / 86, 160 / 164.
ODD_BLOCKS_KEPT = 9


def _few_odd(groups: int) -> bool:
    """Row groups (``blocked_loops``' outermost loop, the one threads share) too few and odd
    to share evenly: one of two threads would idle for the last group (72 rows on 8-row
    tiles: 3 groups of 3, split 2 / 1). The columns are then cut into an even number of
    blocks instead (``_column_blocks`` at half the tiles), outermost, the rows whole inside
    each: GotoBLAS's NC order, which the threads share as they do a large product's L2
    blocks, each thread reading half of B and all of A (a few rows). Zen 4, 8x32 tiles, the
    programs before and after taking turns (medians of 7 rounds, wall clock, ms): two
    threads 72 x 1024 x 1024 1.09 -> 0.81, 120 x 1024 x 1024 1.68 -> 1.28, 200 x 1000 x 1000
    (5 groups; 31 column tiles: 4 blocks of 7 and 3 left) 2.30 -> 1.92, 280 x 512 x 512
    0.82 -> 0.71, u8 x i8 72 x 1024 x 1024 0.275 -> 0.217; one thread within 1% either way."""
    return groups % 2 == 1 and groups < ODD_BLOCKS_KEPT


class _Steps(NamedTuple):
    """How ``blocked_loops`` cuts a reduction: the widest input along it (B), the bytes one
    call reads of it, the most steps of it a block holds, whether the reduction is one
    block (a widened panel's that fits), the block's steps (None: no size fits)."""

    widest: object
    step: int
    kc_max: int
    whole: bool
    kc: Optional[int]


def _reduction_blocks(desc, r: Dim, windows: dict) -> Optional[_Steps]:
    """The reduction ``r``'s blocks (``_Steps``), None where no input moves along it."""
    size = functools.partial(_call_bytes, windows=windows)
    widest = max((op for op in desc.inputs if r.name in _window_vars(windows[op.name])), key=size,
                 default=None)
    if widest is None:
        return None
    step = size(widest)
    # B's KC steps fill at most two thirds of L1; a widened copy's all of it (see above)
    widened = ir.itemsize(windows[widest.name].buffer.dtype) > ir.itemsize(widest.dtype)
    kc_max = (l1_data_bytes() if widened else 2 * l1_data_bytes() // 3) // step
    # a widened panel's whole reduction that fits is one block, the columns still cut
    whole = widened and r.extent <= kc_max
    kc = r.extent if whole else \
        next((n for n in range(min(kc_max, r.extent // 2), KC_MIN - 1, -1) if r.extent % n == 0), None)
    return _Steps(widest, step, kc_max, whole, kc)


def _block_fits_l2(steps: Optional[_Steps], r: Dim, cols: Dim, windows: dict) -> bool:
    """The reduction ``r`` is cut into ``steps`` (``_reduction_blocks``) of which one, over all
    the column tiles ``cols``, fits half of L2: GotoBLAS's order then keeps B's block in
    L2, whole rows of it, while the row tiles sweep it, and a few rows of tiles take that
    order, not ``_rows_apart``'s (B eight rows at a time, C's tiles loaded and stored every
    eight steps). Zen 4 (1 MB L2), 8x32 tiles, in turns (medians of 9 rounds, us), B 1024 x
    1024 (KC 128: 512 KB), eight rows at a time / the order taken now: 16 rows 506 / 336
    (the tiles' order as written: two row tiles make no groups) on one thread, 270 / 210
    on two; 32 rows 724 / 658 and 711 / 379 (row groups); 24 rows 922 / 733 and 1091 / 463
    (the extractor's choice then: C's transpose on padded 32-wide copies). With B 2048 x
    2048 (1 MB blocks, past half of L2) B eight rows at a time stays, and was the faster
    there: 16 rows 1865 against 2530 us in the tiles' order as written, 4096 x 4096 13.3
    against 27.5 ms. On Zen 3's 512 KB L2 the 1024 x 1024 blocks are past half of it too."""
    if steps is None or steps.kc is None or (r.extent <= steps.kc_max and not steps.whole):
        return False
    return cols.name in _window_vars(windows[steps.widest.name]) and \
        steps.kc * steps.step * cols.extent <= l2_bytes() // 2


def _column_blocks(tiles: int, most: int) -> tuple[Optional[int], Optional[int]]:
    """(tiles a column block holds, whole blocks) for ``tiles`` column tiles of which at most
    ``most`` fit a block (``blocked_loops``): the largest divisor of ``tiles`` up to
    ``most`` and ``tiles // 2``, an even number of blocks preferred (the blocks are what the
    threads share; an even number, if a block at least half the largest gives one, keeps
    two threads busy to the end); where no divisor makes blocks at least half the size of
    the fewest equal blocks that fit, or only an odd number of them under
    ``ODD_BLOCKS_KEPT`` where an even number of equal blocks fits, those fewest blocks, an
    even number of them where a block loses no more than half its size by it, the tiles
    left over (fewer than the blocks) not in any; blocks of ``most`` where those would hold
    one tile each. (None, None): fewer than two tiles fit a block."""
    fits = [n for n in range(min(most, tiles // 2), 1, -1) if tiles % n == 0]
    count = -(-tiles // most)  # the fewest blocks that fit
    if count % 2 and 2 * (tiles // (count + 1)) >= tiles // count:
        count += 1
    even = tiles // count
    if fits and 2 * fits[0] >= even:
        nc = next((n for n in fits if (tiles // n) % 2 == 0 and 2 * n >= fits[0]), fits[0])
        if (tiles // nc) % 2 and tiles // nc < ODD_BLOCKS_KEPT and count % 2 == 0 and even >= 2:
            return even, count  # no divisor gives an even count: equal blocks and a rest
        return nc, tiles // nc
    if even >= 2:
        return even, count
    return (most, tiles // most) if most >= 2 else (None, None)


def _reductions_outside(desc, loops: list, moving: list, reduction: list, windows: dict) -> list:
    """Several reduction loops (a weight gradient's ``n, h, w``) over an output smaller than
    one tile's input panel (``dW``, 3x3x64x64 floats, against the 3136 rows of ``dY`` one tile
    of it reads): the outer reductions go outside every output loop but one, the widest,
    which stays outermost (the parallel one), so that each step of them reads one slice of
    the inputs (a row of ``dY`` and three of the padded input) from L1 for all the tiles,
    where the order as given streams the whole panel again for every tile::

        for rh, rw, rc_o, co_o, n, h, w in grid(3, 3, 8, 2, 1, 56, 56): call(...)
        ->  for rc_o, n, h, rh, rw, co_o, w in grid(8, 1, 56, 3, 3, 2, 56): call(...)

    Each output element still sums its reduction in the order given (the loops between
    the reductions move other tiles). Measured on the weight gradient of a 3x3 convolution,
    56x56x64 -> 64, 8x32 tiles, one thread: 1.9-2.0 ms -> 1.5-1.6 ms. Not where the output
    outgrows the panel (a forward convolution's 56x56x64 output against a 576-row panel of
    weights): there the order as given measured faster (1.56 against 1.80 ms); nor where
    the panel fits in L1 anyway, nor where no output loop left inside shares the widest
    input's slice (a 7x7 convolution's tiles along ``w`` and ``co_o``, each with its own
    weights: 0.039 against 0.034 ms)."""
    size = functools.partial(_call_bytes, windows=windows)
    widest = max((op for op in desc.inputs), key=size)
    panel = math.prod(d.extent for d in reduction) * size(widest)
    out = math.prod(d.extent for d in moving) * math.prod(desc.output.shape) * ir.itemsize(desc.output.dtype)
    if out >= panel or panel <= l1_data_bytes() or reduction[-1].extent < KC_MIN // 4:
        return loops
    top = max(moving, key=lambda d: d.extent)
    inside = [d for d in moving if d is not top]
    reads = _window_vars(windows[widest.name])
    if math.prod(d.extent for d in inside if d.name not in reads) < 2:
        return loops
    return [top] + reduction[:-1] + inside + reduction[-1:]


def _streams(desc, windows, loops) -> tuple:
    """``layout.streams`` for calls in ``loops`` (innermost last)."""
    inner, outer = (loops[-1] if loops else None), (loops[-2] if len(loops) > 1 else None)
    return layout.streams(desc, windows, inner, outer, loops[:-1])


def _price(desc, b: Binding, windows, unit_ok: bool, streams, blocked: Blocked) -> float:
    """The binding's calls on these windows: their cost, strided panels (priced on the
    nest's own order, as ``cost.streamed`` was fitted, but for the inputs the ``blocked``
    order holds in L2), inputs read again (on the blocked order the calls run in), split
    blocks."""
    return cost.calls(desc, b.tiles, unit_ok) + \
        cost.streamed(b.tiles, streams, _streams(desc, blocked.windows, blocked.loops), l2_bytes(),
                      blocked.held) + \
        cost.unblocked(desc, b.tiles, windows)


@functools.lru_cache(maxsize=4096)
def _bindings(nest: AccNest, desc, m: BodyMatch, short: bool) -> tuple[Binding, ...]:
    """``match.bindings``, once per nest: a nest comes again as another binding's remainder
    and behind stages."""
    return tuple(bindings(nest, desc, m, short=short))


class _Builder:
    """Candidates of one nest and, recursively, of the nests they leave, into a plan graph.

    Branch and bound: each candidate of a nest (a binding's calls and remainders, a scaled
    product's inner nest, a split nest, a stage) comes with a floor, the least any program
    it leads to can cost; they are planned cheapest floor first, and one whose floor exceeds
    the cheapest alternative the nest already has is not planned at all (``_beaten``). The
    floors are lower bounds (``_floor``, ``_tiled_floor``, ``_nest_floor``), so no candidate
    that could have been the cheapest is dropped: the plan chosen is the one planning
    everything would choose."""

    def __init__(self, ex: Extractor, graph: PlanGraph):
        self.ex, self.graph = ex, graph
        self._nests: dict = {}  # remainders of different bindings are often the same nest
        self._least: dict[int, float] = {}  # a nest's id -> its cheapest alternative so far
        self._candidates: dict = {}  # a nest's key -> its candidates, once listed
        # (nest, matches, depth) -> the stages its remainders are weighed with past their depth
        self._remainder_pack: dict = {}

    def nest(self, nest: AccNest, matches: tuple, depth: int, pack: bool,
             split: bool = True) -> NestRef:
        key = (nest, matches, depth, pack, split)
        if key in self._nests:
            return self._nests[key]
        ref = self._nests[key] = self.graph.nest()
        self.graph.add(ref, self.graph.leaf([nest.stmt()], cost.scalar(nest)))
        self._least[ref.id] = cost.scalar(nest)
        candidates = self._listed(key)
        if not PRUNE:
            for _, plan, _ in candidates:
                self._planned(ref, plan)
            return ref
        # the most promising first, so that the bound soon prunes the rest; a candidate's
        # floor is refined (``_tiled_floor``'s remainders listed) before it is planned, and
        # it goes back in line when that raises it
        todo = [(floor, k, False) for k, (floor, _, _) in enumerate(candidates)]
        heapq.heapify(todo)
        while todo:
            floor, k, refined = heapq.heappop(todo)
            if self._beaten(floor, ref):
                break  # the others' floors are no lower
            _, plan, refine = candidates[k]
            if refine is not None and not refined:
                heapq.heappush(todo, (max(floor, refine()), k, True))
                continue
            self._planned(ref, plan)
        return ref

    def _listed(self, key) -> list:
        """The candidates of the nest ``key`` stands for, as ``(floor, plan, refine)``:
        ``plan(ref)`` adds the candidate's alternatives to the nest's e-class ``ref``;
        ``refine()``, where given, is a higher floor that costs more to find. Stages come
        after the rest (in the order planned when not pruning)."""
        if key in self._candidates:
            return self._candidates.pop(key)
        nest, matches, depth, pack, split = key
        if depth >= MAX_DEPTH:
            return []
        scalar = cost.scalar(nest)
        # ``pack`` is True, or the names of the stages a nest above let one level deeper
        stages = [s for s in self.ex.nest_stages if s.depth is None or depth <= s.depth
                  or (isinstance(pack, frozenset) and s.name in pack and depth <= s.depth + 1)]
        candidates: list = []
        staged = []  # (desc, binding) for the nest stages
        inner: set = set()  # scaled products' inner nests listed
        for m in matches:
            desc = self.ex.library[m.intrinsic]
            if not dtypes_agree(nest, desc, m):
                continue  # no binding, and none in the nests a split of it would make
            for b in _bindings(nest, desc, m, False):
                if cost.calls(desc, b.tiles, b.unit_stride_ok) < scalar:
                    if b.scale != 1.0:
                        candidates += self._scaled(nest, desc, b, matches, depth, pack, inner)
                    else:
                        candidates.append((
                            self._tiled_floor(nest, desc, b, matches),
                            functools.partial(self._tiled, nest=nest, desc=desc, b=b,
                                              matches=matches, depth=depth, pack=pack),
                            functools.partial(self._tiled_floor, nest, desc, b, matches,
                                              depth + 1, pack)))
                        if pack is not False and self.ex.forms and remainders(nest, b, desc):
                            candidates.append(self._masked(nest, desc, b, matches, depth, pack))
                if pack and b.scale == 1.0 and stages:
                    staged.append((desc, b))
            for form, b in self._other_forms(nest, desc, m) if pack is not False else ():
                if cost.calls(form, b.tiles, b.unit_stride_ok) < scalar:
                    candidates.append(self._masked(nest, form, b, matches, depth, pack))
            if pack and m.scale == 1.0 and stages:
                # loops shorter than the intrinsic's dims, which only a stage can make whole
                # tiles of (pad-to-tile)
                staged += [(desc, b) for b in _bindings(nest, desc, m, True)]
            if split and self.ex.split_loops:
                candidates += self._split(nest, desc, m, matches, depth, pack)
        seen: set = set()  # bindings that need the same copies stage the same nest
        built: dict = {}  # stage name -> what it built for this nest
        for desc, b in staged:
            for stage in stages:
                candidates += self._packed(stage, nest, desc, b, matches, depth, seen, built)
        deeper = frozenset(s.name for s in stages if s.deeper is not None and depth == s.depth
                           and s.deeper(built.get(s.name, [])))
        if deeper and pack is True:
            self._remainder_pack[(nest, matches, depth)] = deeper
        return candidates

    def _other_forms(self, nest: AccNest, desc, m: BodyMatch):
        """``(form, binding)`` for each other form of ``desc`` the ``forms`` families give
        for ``nest`` (``rules/edges.py``: partial forms cut to its loops shorter than the
        intrinsic's dims), and each binding of it to ``nest``. A form stays out of the
        library (whose descriptors are the e-graph's patterns): the calls that use it hold
        it."""
        if m.scale != 1.0:
            return
        for forms, _ in self.ex.forms:
            for form in forms(nest, desc, m):
                if descriptor.signature(form) in self.ex.registered:
                    continue  # bound as that intrinsic already, where the library has it
                for b in _bindings(nest, form, BodyMatch(m.nest, form.name, m.loads), False):
                    yield form, b

    def _masked(self, nest: AccNest, desc, b: Binding, matches, depth: int, pack) -> tuple:
        """The candidate ``b`` with masked edges: its calls, and each nest its tiles leave
        run on the same intrinsic cut to that nest's extents (``_edge``), not planned
        again: one more way to run ``nest`` whose price is known once its calls are. Its
        floor: ``_tiled_floor``'s (the edges' calls cost no less than their iterations at
        the intrinsic's best rate)."""
        return (self._tiled_floor(nest, desc, b, matches),
                functools.partial(self._tiled, nest=nest, desc=desc, b=b, matches=matches,
                                  depth=depth, pack=pack, masked=True), None)

    def _edge(self, nest: AccNest, desc, b: Binding, matches, depth: int, pack) -> NestRef:
        """The nest ``nest`` (a remainder of ``b``'s tiles) on the form of ``desc`` for it
        (``edge_form`` of the ``forms`` family: ``rules/edges.py`` cuts ``desc``'s parent to
        its extents along the dims ``b`` binds), bound as ``b`` is, its own remainders again
        so (``_tiled`` with ``masked``); beside its scalar code. Planned as usual where no
        such form or binding exists."""
        form = next((f for f in (edge(desc, dict(b.dims), nest) for _, edge in self.ex.forms)
                     if f is not None), None)
        if form is not None:
            form = self.ex.registered.get(descriptor.signature(form), form)
        key = ("edge", nest, form, b.dims, matches, depth, pack)
        if key in self._nests:
            return self._nests[key]
        match = BodyMatch(0, form.name, tuple(ld for _, ld in b.loads)) if form else None
        again = None if form is None else next(
            (x for x in _bindings(nest, form, match, False) if x.dims == b.dims), None)
        if again is None:
            return self.nest(nest, matches, depth + 1, self._below(nest, matches, depth, pack))
        ref = self._nests[key] = self.graph.nest()
        self.graph.add(ref, self.graph.leaf([nest.stmt()], cost.scalar(nest)))
        self._least[ref.id] = cost.scalar(nest)
        self._planned(ref, functools.partial(self._tiled, nest=nest, desc=form, b=again,
                                             matches=matches, depth=depth + 1, pack=pack,
                                             masked=True))
        return ref

    def _below(self, nest: AccNest, matches, depth: int, pack):
        """The ``pack`` the remainders of ``nest``'s tiles are planned with: the stages that
        ``nest``'s own candidates let one level deeper (a nest stage's ``deeper``), else
        ``pack`` as it is."""
        return self._remainder_pack.get((nest, matches, depth), pack)

    def _nest_floor(self, nest: AccNest, matches: tuple, depth: int, pack: bool,
                    split: bool = True) -> float:
        """No program for the nest costs less: its cheapest once planned, else the least of
        its scalar price and its candidates' floors."""
        key = (nest, matches, depth, pack, split)
        if key in self._nests:
            return self._least[self._nests[key].id]
        if key not in self._candidates:
            self._candidates[key] = self._listed(key)
        return min([cost.scalar(nest)] + [floor for floor, _, _ in self._candidates[key]])

    def _planned(self, ref: NestRef, plan: Callable[[NestRef], None]) -> None:
        """Run ``plan``, which adds alternatives to ``ref``, and keep ``ref``'s cheapest
        alternative up to date (the nests in them are finished, their cheapest known)."""
        alternatives = self.graph.alternatives[ref.id]
        first = len(alternatives)
        plan(ref)
        for parts in alternatives[first:]:
            total = sum(self._least[p.id] if isinstance(p, NestRef) else self.graph.leaves[p].cost
                        for p in parts)
            self._least[ref.id] = min(self._least[ref.id], total)

    def _beaten(self, floor: float, ref: NestRef) -> bool:
        """A candidate none of whose programs costs less than ``floor`` cannot be ``ref``'s
        cheapest: the cheapest alternative found so far costs less, by more than egglog's
        integer prices can blur (``plans.SCALE``: each leaf's price rounded to 1/1024, each
        leaf counted; the margin is one whole operation and a billionth of the cost).

        Exact: every program the candidate would add costs at least ``floor``, so it would
        lose to the cheaper alternative already there, which is kept; pruning inside a nest
        only removes alternatives costlier than its cheapest, so the cheapest of every nest,
        and of the whole plan, is what it was."""
        best = self._least[ref.id]
        return PRUNE and floor > best + 1.0 + 1e-9 * abs(best)

    def _split(self, nest: AccNest, desc, m: BodyMatch, matches, depth: int,
               pack: bool) -> list:
        """``split-for-intrinsic`` (``rules/loops.py``): ``nest`` with one loop split in two
        for an intrinsic that reads it as two dims (``tdpbusd``'s groups of four k), planned
        again, with every match, as another way to run the same nest. The candidates, each
        with the split nest's floor."""
        loads = dict(zip((o.name for o in desc.inputs), m.loads))
        out = []
        for split, load_of in loops.split_for(nest, desc, loads, self.ex.names):
            moved = tuple(BodyMatch(x.nest, x.intrinsic, tuple(load_of(ld) for ld in x.loads),
                                    x.scale) for x in matches)

            def plan(ref, split=split, moved=moved):
                self.graph.add(ref, self.nest(split, moved, depth, pack, False))

            out.append((self._nest_floor(split, moved, depth, pack, False), plan, None))
        return out

    def _packed(self, stage, nest: AccNest, desc, b: Binding, matches, depth: int,
                seen: set, built: Optional[dict] = None) -> list:
        """A nest stage (``pack-operand``: copies of the inputs ``b`` reads without unit
        stride; ``pad-to-tile``: zero-padded copies over extents ``b``'s tile divides), then
        the nest it gives, planned again without nest stages (its cheapest binding is now
        usually ``b`` unit-stride, or without remainders), then what the stage runs after it
        (padding's writeback). Its floor: the stage's price and ``_nest_floor`` of its nest.
        Bindings that need the same copies share one temporary, so its name is made once,
        and one candidate (``seen``)."""
        picked = stage.pick(nest, desc, b)
        keys = [] if picked is None else picked if isinstance(picked, list) else [picked]
        return [c for reqs in keys
                for c in self._staged(stage, nest, reqs, matches, depth, seen, built)]

    def _staged(self, stage, nest: AccNest, reqs, matches, depth: int, seen: set,
                built: Optional[dict] = None) -> list:
        """``_packed``'s candidate for one key ``reqs`` of ``stage`` (what it builds also
        goes into ``built[stage.name]``)."""
        key = (stage.name, nest, matches, reqs)
        if key in seen:
            return []
        seen.add(key)
        if key not in self.ex._packs:
            self.ex._packs[key] = stage.build(nest, reqs, self.ex.stage_names())
        packing = self.ex._packs[key]
        if built is not None:
            built.setdefault(stage.name, []).append(packing)
        copies = stage.price(packing)  # what runs after the nest included
        moved = tuple(x for x in (packing.match(m, self.ex.library[m.intrinsic]) for m in matches)
                      if x is not None)

        def plan(ref):
            sub = self.nest(packing.nest, moved, depth, False)
            parts = [self.graph.leaf(list(packing.copies), copies, list(packing.buffers)), sub]
            if packing.after:
                parts.append(self.graph.leaf(list(packing.after), 0.0))
            self.graph.add(ref, *parts)

        return [(copies + self._nest_floor(packing.nest, moved, depth, False), plan, None)]

    def _floor(self, nest: AccNest, matches) -> float:
        """No program for ``nest`` with ``matches`` costs less: every iteration at the lower of
        its scalar price and the cheapest call's price per iteration it covers (calls at unit
        stride; copies, gathers and remainders only add), or, for a match with a constant
        factor, the scalar price of the product without it (``_scaled``'s inner nest, whose
        zeroing and scaling passes only add). Stages keep this: a packed nest has the same
        body and iterations, a padded one more iterations, a split one the same."""
        return nest.iterations * min([cost.scalar(nest) / max(1, nest.iterations)]
                                     + [_per_iteration(self.ex.library[m.intrinsic], m.scale)
                                        for m in matches])

    def _tiled_floor(self, nest: AccNest, desc, b: Binding, matches, depth: Optional[int] = None,
                     pack: bool = True) -> float:
        """No program ``_tiled`` makes of ``b`` costs less: its calls at their bare price
        (``_price`` only adds streamed panels and split blocks) or, gathered, at unit stride
        behind a calls stage's copies (``cost.packing``: at least ``PER_PACKING``), and its
        remainders at ``_floor``, or, given the remainders' ``depth`` and ``pack``, at
        ``_nest_floor`` (which lists their candidates)."""
        calls = cost.calls(desc, b.tiles, b.unit_stride_ok)
        if self.ex.calls_stages:
            calls = min(calls, cost.calls(desc, b.tiles, True) + cost.PER_PACKING)
        if depth is None:
            return calls + sum(self._floor(r, matches) for r in remainders(nest, b, desc))
        below = self._below(nest, matches, depth - 1, pack)
        return calls + sum(self._nest_floor(r, matches, depth, below)
                           for r in remainders(nest, b, desc))

    def _tiled(self, ref, nest: AccNest, desc, b: Binding, matches, depth: int, pack: bool,
               masked: bool = False) -> None:
        """The calls of ``b`` and the plans of its remainders (``masked``: each on the same
        intrinsic's partial form, ``_edge``); again behind each calls stage that has
        operands to rewrite (``pack-panel``: inputs whose windows lie far apart along the
        reduction)."""
        names = self.ex.names.copy(d.name for d in nest.dims)  # loop names only clash within a nest
        loops, tiled = dims_after_tiling(nest, b, desc, names)
        steps = dict(b.steps)
        loads = dict(b.loads)
        windows = {}
        for op in desc.operands:
            buf, idx = (nest.out, nest.indices) if op.role == "output" else \
                (loads[op.name].buffer, loads[op.name].indices)
            windows[op.name] = window(buf, idx, steps[op.name], tiled)
        # the nest is order-free, so its calls may run in any order: loops that leave the
        # output window where it is go innermost, where the emitter keeps the accumulators
        # in registers across them (a nest written k-outermost would store C every step)
        moves = _window_vars(windows[desc.output.name])
        loops = [d for d in loops if d.name in moves] + [d for d in loops if d.name not in moves]
        blocked = blocked_loops(desc, loops, windows, names)
        found = _streams(desc, windows, loops)
        # calls that leave the output window put run in one tile, in registers
        tiles = b.tiles / math.prod(d.extent for d in loops if d.name not in moves)
        price = _price(desc, b, windows, b.unit_stride_ok, found, blocked) + \
            cost.output_one_set(tiles, desc, windows[desc.output.name])
        calls = self.graph.leaf(blocked_calls(desc, blocked), price)
        below = self._below(nest, matches, depth, pack)
        rest = [self._edge(r, desc, b, matches, depth, pack) if masked else
                self.nest(r, matches, depth + 1, below) for r in remainders(nest, b, desc)]
        self.graph.add(ref, calls, *rest)
        for stage in self.ex.calls_stages:
            far = stage.pick(desc, windows, found)
            # all of them, and those the blocked order does not hold in L2: A's rows one L1
            # set apart want panels where B's rows, held, may be cheaper read in place
            others = tuple(op for op in far if op not in blocked.held)
            for some in [far] + ([others] if others and others != far else []):
                self._panel(stage, ref, nest, desc, b, loops, tiled, windows, some, price, rest)

    def _panel(self, stage, ref, nest: AccNest, desc, b: Binding, loops, tiled, windows, far,
               price: float, rest) -> None:
        """The divisible part's calls reading the copies a calls stage makes of the inputs
        ``far`` (``pack-panel``: panels), after the copies; the remainders are the unpacked
        plan's. Skipped when the copies and calls alone cost as much as the unpacked calls."""
        order = tuple(d.name for d in loops)
        key = (stage.name, nest, b, tuple(sorted(tiled.items())), far, order)
        known = self.ex._panel_names.setdefault(stage.name, {})
        panel = self.ex._panels.get(key)
        if panel is None:  # named once it is kept: a trial on a copy of the names in use
            panel = stage.build(nest, desc, b, tiled, far, self.ex.names.copy(), dict(known), order)
            if panel is None:
                return
        windows = {**windows, **dict(panel.windows)}
        unit_ok = not any(slow_dims(desc, op, windows[op.name].buffer, windows[op.name].steps)
                          for op in desc.operands)
        copies = cost.packing(panel.copies)
        loop_names = {d.name for d in nest.dims}
        blocked = blocked_loops(desc, loops, windows, self.ex.names.copy(loop_names))
        calls = _price(desc, b, windows, unit_ok, _streams(desc, windows, loops), blocked)
        if copies + calls >= price:
            return
        if key not in self.ex._panels:  # the panel for real, under its final names
            panel = self.ex._panels[key] = stage.build(nest, desc, b, tiled, far, self.ex.names,
                                                       known, order)
            windows.update(panel.windows)
            blocked = blocked_loops(desc, loops, windows, self.ex.names.copy(loop_names))
        self.graph.add(ref, self.graph.leaf(list(panel.copies), copies, list(panel.buffers)),
                       self.graph.leaf(blocked_calls(desc, blocked), calls), *rest)

    def _scaled(self, nest: AccNest, desc, b: Binding, matches, depth: int, pack: bool,
                listed: set) -> list:
        """``out += s * body`` as ``T = 0; T += body; out += s * T``, ``T`` indexed by the
        dims that index ``out`` (``_output_dims``): ``C[64 * t + i, j]`` over ``t, i, j`` sums
        into ``T[t, i, j]``, then ``C[64 * t + i, j] += s * T[t, i, j]``. Each element of ``T``
        holds the terms of one iteration of those dims, which the last pass adds where the
        nest added them (several to one element of ``out`` when the index map is not
        one-to-one), so ``T`` is never bigger than the nest's share of the work.

        Not for an infinite ``s`` (a literal such as ``1e999``): ``sum(inf * a * b)`` is NaN
        as soon as two terms differ in sign, ``inf * sum(a * b)`` is not. A finite ``s``
        keeps the NaN/Inf pattern (a sum of terms is non-finite iff one term is).

        ``body`` is the intrinsic's, on the binding's loads, of the first binding with this
        factor; every match with it says the same of the nest's body (``s * body``, up to the
        order of its factors), and bindings, stages and prices read the loads, not the
        order, so each binding's inner nest would get the same plans: one inner nest serves
        them all (``listed``: the inner nests already candidates of this nest). The
        candidate's floor: the two passes, and the inner nest's iterations each at the
        least of its scalar price and its matches' calls (``_per_iteration``)."""
        if not math.isfinite(b.scale) or (not ir.is_float(nest.out.dtype) and b.scale != int(b.scale)):
            return []
        key = (nest, b.scale)
        if key in listed:
            return []
        listed.add(key)
        dims = _output_dims(nest)
        size = math.prod(d.extent for d in dims)
        unscaled = tuple(BodyMatch(m.nest, m.intrinsic, m.loads, 1.0) for m in matches
                         if m.scale == b.scale)
        body = _substitute(semantics_value(desc), dict(b.loads))
        scalar = cost.scalar(AccNest((), nest.out, (Const(0, INDEX),), body))
        per = min([scalar] + [_per_iteration(self.ex.library[m.intrinsic], 1.0) for m in unscaled])
        floor = 2 * cost.moved(size) + per * nest.iterations

        def plan(ref):
            if key not in self.ex._temps:
                temp = Buffer(self.ex.names.fresh("T"), nest.out.dtype,
                              tuple(d.extent for d in dims) or (1,))
                self.ex._temps[key] = (temp, [self.ex.names.fresh(f"x{k}") for k in range(len(dims))],
                                       body)
            temp, names, value = self.ex._temps[key]
            inner = AccNest(nest.dims, temp, tuple(_shifted(Var(d.name), -d.start) for d in dims)
                            or (Const(0, INDEX),), value)
            idx = tuple(Var(n) for n in names) or (Const(0, INDEX),)
            at = {d.name: _shifted(Var(n), d.start) for d, n in zip(dims, names)}
            out_idx = tuple(ir.substitute(i, at) for i in nest.indices)
            zero: Stmt = Store(temp, idx, Const(0.0, temp.dtype))
            factor = b.scale if ir.is_float(temp.dtype) else int(b.scale)
            scale = Accumulate(nest.out, out_idx, Binary("*", Const(factor, temp.dtype),
                                                         Load(temp, idx)))
            for n, d in reversed(list(zip(names, dims))):
                zero, scale = For(n, 0, d.extent, zero), For(n, 0, d.extent, scale)
            self.graph.add(ref, self.graph.leaf([zero], cost.moved(temp.size), [temp]),
                           self.nest(inner, unscaled, depth, pack),
                           self.graph.leaf([scale], cost.moved(temp.size)))

        return [(floor, plan, None)]


def _per_iteration(desc, scale: float) -> float:
    """The least a program of a nest matched by ``desc`` (times ``scale``) can pay per
    iteration: a call's price over the iterations it covers, or, with a constant factor,
    the scalar price of the inner nest of ``_scaled`` (the intrinsic's body, and its
    ``+=``)."""
    per = desc.cost / desc.iterations
    if scale != 1.0:
        body = semantics_value(desc)
        per = min(per, float(op_count(Accumulate(Buffer("_", body.dtype, (1,)),
                                                 (Const(0, INDEX),), body))))
    return per


def _output_dims(nest: AccNest) -> list[Dim]:
    """The dims that appear in ``nest``'s output indices, in the order they first do."""
    used: list[str] = []
    for i in nest.indices:
        for x in ir.walk_expr(i):
            if isinstance(x, Var) and x.name not in used:
                used.append(x.name)
    dims = {d.name: d for d in nest.dims}
    return [dims[n] for n in used if n in dims]


def _shifted(e, k: int):
    """``e + k`` as an index (``e`` itself for 0)."""
    if k == 0:
        return e
    return Binary("+" if k > 0 else "-", e, Const(abs(k), INDEX))

