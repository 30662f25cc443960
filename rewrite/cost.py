"""The cost model, nothing else: what a nest costs as scalar code or as intrinsic calls.

Units are "scalar operations": a scalar nest costs its arithmetic (``calls.op_count``); an
intrinsic call costs its descriptor's ``cost``, which is stated in the same units for one
call (an 8-wide FMA: 1, the 6x16 register-blocked outer product: 6). A call whose operands
miss a unit-stride need of the descriptor is gathered element by element, so it pays
``GATHER_PENALTY`` times more; one whose operand wants one ``contiguous`` block and does not
have it pays ``UNBLOCKED_PER_ROW`` for each row it loads apart (``unblocked``). Packing into a temporary pays per
element moved.

A packing stage (``rules/layout.py``) is a plain copy, costed like any scalar statement
(``scalar_stmt``: no arithmetic, one per element written), plus ``PER_PACKING`` for the stage
itself. That constant is fitted, not derived. On the 6x16 outer product reading a transposed
``B[j, k]`` (one thread, this machine, medians of 300 calls) packing measured slower at
32x32x32 (15.5 us against 14.2 us gathered) and faster from 48x64x64 on (23.6 against 25.0,
64^3: 28.5 against 32.1, 128^3: 131 against 160 us); in these units the copy saves about
4 700 at 32^3 and 33 000 at 48x64x64, so the break-even lies near 10 000. The stage pays a
kernel's temporaries being zeroed on every call and the copy's own loop overhead, and
``GATHER_PENALTY`` overstates the gather of that intrinsic (its gathered calls measured 1.6
times, not 4 times, the unit-stride ones). The u8 x i8 dot gains more from packing (64^3: 47
against 94 us). An operand each call reads once (an 8-wide FMA, a matrix-vector product)
never pays for its copy.

Padding to a tile (``rules/padding.py``) pays for its fills, copies and writeback per element,
at a vector rate where they move along rows, and per temporary (``padding``): fitted on its
own measurements, not on ``PER_PACKING``.

A unit-stride input can still cost more than its calls: ``streamed`` charges a tile's panel
read at a large stride along the reduction whose lines do not stay in L2, which a
``pack-panel`` copy (contiguous panels, ``rules/layout.py``) avoids, and an input the next
tile reads again that has outgrown L1 (a long reduction's rows of A).
"""

from __future__ import annotations

import functools
import math

from .caches import l2_bytes
from .calls import op_count
from .ir import Accumulate, For, Store, fold_stmt, itemsize, walk_expr, written_by
from .nests import AccNest

GATHER_PENALTY = 4.0
UNBLOCKED_PER_ROW = 0.25
UNWIDENED_PER_ROW = 0.75
PER_ELEMENT_MOVED = 1.0
PER_PACKING = 10000.0
PER_PADDED_TEMP = 300.0
PER_PADDED_ELEMENT = 0.25
VECTOR_RUN = 8
# A padding stage whose temporaries outgrow twice L2 (``padding``): its row copies, fills
# and writeback stream from L3 and memory at about three times the in-cache rate.
PADDED_FAR = 3.0

# L1 and L2 of one Zen 3 core: 32 KB; 512 KB, 8 ways of 1024 sets; 64-byte lines (``streamed``).
LINE, L1_BYTES, L2_SETS, L2_WAYS = 64, 32 * 1024, 1024, 8
PER_LINE_REFETCHED = 2.0
# Of those ways, what the tile's other operands take in the same sets (``streamed``): a
# panel that would fill all 8 does not stay. On 4096x256x512 (B's 512 rows 1 KB apart, 512
# lines a tile in 64 sets: exactly 8 ways) B read in place measured 12.9 ms against 10.4 with
# B in panels (6x16 tiles, Zen 3 code on Zen 4, one thread, same-run medians).
OTHER_WAYS = 2
PER_LINE_FROM_L2 = 8.0
# 4 KB pages; the span of a panel's rows that stays in reach of the first-level data TLB
# (``_paged``): 40 of its 64 entries, the others taken by the tile's other operands and
# the stack (fitted, see ``_paged``); bytes between two addresses in the same L1 set (32 KB
# of 8 ways, 48 KB of 12: both 4 KB, ``one_set``).
PAGE, DTLB_REACH, L1_SET_PERIOD = 4096, 40 * 4096, 4096


def scalar(nest: AccNest) -> float:
    return float(op_count(nest.stmt()))


def scalar_stmt(s) -> float:
    """A statement left as scalar code: its arithmetic, and one per element it writes (so
    copies and zero fills, which do no arithmetic, are not free)."""
    return float(op_count(s)) + moved(_writes(s))


def packing(copies) -> float:
    """Copy nests, each filling one packing temporary."""
    return sum(scalar_stmt(c) + PER_PACKING for c in copies)


def padding(stmts, temps, relaid=()) -> float:
    """``pad-to-tile``'s fills, copies and writeback (``stmts``) and its temporaries
    ``temps``: each element written and each operation at ``PER_PADDED_ELEMENT`` where the
    innermost loop runs at least ``VECTOR_RUN`` times (a vectorised row), else at
    ``PER_ELEMENT_MOVED``; each element of a temporary at ``PER_PADDED_ELEMENT`` where the
    runtime still zeroes it before each call (``_zeroed``: not where the stage fills it
    whole itself, the usual case); and
    ``PER_PADDED_TEMP`` per temporary. A temporary laid out otherwise than what it copies
    (``relaid``: transposed, in blocks, an im2col that repeats elements) is also a packing
    copy, and it and its statements are priced as ``pack-operand`` and ``pack-panel`` price
    theirs (``packing``): a padded, transposed B otherwise undercut packing B alone and
    measured 1.3 times slower where another intrinsic covered the leftover columns, and a
    7 x 7 f32 convolution padded to the 8-row tile through an im2col copy measured 55
    against 42 us on the 6-row one.

    Fitted on GEMMs of u8 x i8 (12^3 to 255^3, odd shapes; the host's rows and the 16 x 4
    dot alone) and f32 (5 x 10 x 7 to 255^3) on an AVX-512 Xeon, one thread, medians of
    three medians: padding measured faster wherever these prices choose it (u8 x i8 30^3:
    4.2 against 13.9 us; 255^3: 126 against 832 us; f32 30^3: 4.2 against 5.4 us; 255^3:
    298 against 321 us) and is not chosen where it was not (f32 100 x 70 x 50, 64 x 65 x 64).
    Measured per element: a fill, a row copy or the writeback 0.1 ns (0.25 units, the tile
    calls running at about 0.36 ns a unit); a transposing copy 0.5 ns, a copy into [16, 4]
    blocks 0.25 ns; each temporary about 0.3 us of zeroing before the call then, 1000 units.
    Since, the runtime zeroes no temporary the stage fills whole, and the native caller
    keeps them on its stack or in the kernel's area: a temporary is its loops' set-up, 300
    units. At 1000, 37 x 29 x 61 and 45 x 33 x 47 kept their leftover columns on 8 x 32 and
    axpy calls reading A's columns element by element (3.09 and 3.35 us, Zen 4, one
    thread) where padded whole they run in 2.08-2.18 and 2.60 (numpy 2.35 and 2.38);
    padded 30^3 takes the 8 x 32 tile instead of the 6 x 16 one (0.98 -> 1.03-1.06 us,
    numpy 1.57), and no other corpus program, nor a square product from 50^3 to 700^3 or
    the tall and skinny ones of the sweep, changed. A 512 x 254
    matrix-vector product whose last 6 columns of A would be copied row by row measured
    12.1 against 10.4 us, which the price of short rows refuses."""
    names = {t.name for t in relaid}
    rate = functools.partial(_vector_rate, far=PADDED_FAR if far(temps) else 1.0)
    work = sum(scalar_stmt(s) if written_by(s) & names else
               fold_stmt(s, lambda x: op_count(x) + 1, loop=rate) for s in stmts)
    per_temp = sum(PER_PACKING if t in relaid else PER_PADDED_TEMP for t in temps)
    return work + PER_PADDED_ELEMENT * sum(t.size for t in _zeroed(stmts, temps)) + per_temp


def far(temps) -> bool:
    """The temporaries ``temps`` together outgrow twice L2: their passes run at L3's and
    memory's pace, not L2's. Measured on Zen 4 (1 MB of L2; a padded product's fills, copies
    and writeback timed alone, one thread): 0.12-0.13 ns an element with 0.3-1.5 MB of
    temporaries (150^3 to 350^3), 0.38 with 5.9 MB (700^3), 0.51 with 14.7 MB (1100^3).
    Priced in cache, the padded 700^3, 1100^3 and 1500^3 products were chosen over their
    remainders and measured 7%, 9% and 3% slower than them (8.42 against 7.87 ms, 28.0
    against 25.5, 69.9 against 68.1; in turns, thread CPU time, 9-15 rounds)."""
    return sum(t.nbytes for t in temps) > 2 * l2_bytes()


def _zeroed(stmts, temps) -> list:
    """The temporaries among ``temps`` whose zeros the runtime still writes before each call:
    those ``stmts`` do not fill whole before reading (``analysis.filled_before_read``). The
    stage's own fills and copies cover its temporaries, the pads included, so this is
    usually none (since the runtime stopped zeroing such temporaries: 2mm's four padded
    temporaries were 0.16 M elements of memset a call)."""
    from .analysis import filled_before_read
    from .ir import PrimFunc, seq

    temps = list(temps)
    if not temps or not stmts:
        return temps
    filled = filled_before_read(PrimFunc("_", (), seq(*stmts), tuple(temps)))
    return [t for t in temps if t.name not in filled]


def scan(stmts) -> float:
    """A guard's scan of its operands (``rules/finite.py``): a multiply and an add per
    element, vectorised where the innermost loop runs along rows (``_vector_rate``). Measured
    0.11 ns an element on a 512 x 512 f32 operand (AVX-512 Xeon, one thread), as a row copy."""
    return sum(fold_stmt(s, lambda x: op_count(x) + 1, loop=_vector_rate) for s in stmts)


def _vector_rate(loop, inner: float, far: float = 1.0) -> float:
    """``inner`` (the price of one run of ``loop``'s body) times the trip count, at
    ``PER_PADDED_ELEMENT`` (times ``far``) when ``loop`` is an innermost loop of at least
    ``VECTOR_RUN`` along which every access of its statement moves by one element or stays
    (a row copied, not a column: a transposing or blocking copy pays per element)."""
    innermost = not isinstance(loop.body, For)
    rate = 1.0
    if innermost and loop.stop - loop.start >= VECTOR_RUN and _unit_stride(loop.body, loop.var):
        rate = PER_PADDED_ELEMENT * far
    return (loop.stop - loop.start) * inner * rate


def _unit_stride(s, var: str) -> bool:
    from .affine import affine
    from .ir import Load, loads_of

    if not isinstance(s, (Store, Accumulate)):
        return False
    for x in [Load(s.buffer, s.indices), *loads_of(s.value)]:
        maps = [affine(i) for i in x.indices]
        if any(m is None and any(getattr(v, "name", None) == var for v in walk_expr(i))
               for m, i in zip(maps, x.indices)):
            return False
        coeffs = [m.coeff(var) if m is not None else 0 for m in maps]
        if any(coeffs[:-1]) or coeffs[-1] not in (0, 1):
            return False
    return True


def _writes(s) -> int:
    from .ir import Accumulate, Store, fold_stmt

    return fold_stmt(s, lambda x: 1 if isinstance(x, (Store, Accumulate)) else 0)


def calls(desc, count: int, unit_stride_ok: bool) -> float:
    return count * desc.cost * (1.0 if unit_stride_ok else GATHER_PENALTY)


def unblocked(desc, count: int, windows) -> float:
    """What ``count`` calls pay for operands whose ``Layout`` asks for one ``contiguous``
    block (the u8 x i8 dot's ``b``) but whose window is not one: the emitter loads the
    window row by row, ``UNBLOCKED_PER_ROW`` per row and call. The loads cost the same
    whatever instruction then consumes them, so the price does not scale with the
    descriptor's ``cost`` (a one-instruction ``vpdpbusd`` dot pays the AVX2 dot's 16 loads).

    Fitted on the dot's ``b`` read in rows (16 rows of 4 bytes, 16 loads a call) against
    ``B_panel[j_o, k_o, j_i, k_i]`` (one 64-byte load), one thread, this machine, medians.
    Where B needs a copy anyway (``B[k, j]``) the blocks cost nothing more: 256^3 2.18
    against 1.90 ms (8.3 against 7.3 ns a call), 64x128x128 0.171 against 0.135 ms, the
    3x3 ``qconv_u8i8`` 0.289 against 0.230 ms. Where B is already ``[j, k]`` (M x 256 @
    256 x 64, a 16 K-element copy: 26 000 units) the blocks measured 0.043 against 0.044 ms
    at M = 16 (4 096 calls), 0.072 against 0.075 at M = 32 and 0.130 against 0.140-0.164
    at M = 64 (16 384 calls): break-even near 8 000 calls, about 3 units a call against
    this copy's price. The copy's price overstates a byte copy (``PER_PACKING`` was fitted
    on f32 programs), so 2 units a call (break-even 13 000 calls) kept the marginal M = 32
    case unpacked. The two-row int8 tile (``x86.mm.u8i8i32.2x16x4``, an AVX-512 Xeon, one
    thread) reads the same 16 rows a call for twice the work, and there the rows cost more:
    ``qdense_u8i8_nt`` (M = 64, 8 192 calls) ran 0.051 ms on B's rows against 0.019 ms on
    blocks, which at 2 units a call the model kept on rows; 4 units a call (16 rows at
    ``UNBLOCKED_PER_ROW``) packs it. A gathered operand already pays ``GATHER_PENALTY``.

    An operand the emitter reads fastest from a widened copy (``Layout.widened``) but whose
    window is not on one is loaded and widened in each call, ``UNWIDENED_PER_ROW`` per row
    (instead of the above). Fitted on the four-row int8 tile, Zen 3 code on Zen 4, one thread
    (a loaded machine, the least of 15 runs): ``qdense_u8i8_nt``'s B rows (16 two-byte loads
    and inserts a call, 8 192 calls) ran 0.046 ms against 0.019 on the 2x16x4 tile's blocks,
    which the rows at 0.25 (4 units a call) had chosen; at 0.75 (12) the blocks are chosen
    again. B read in place along its rows (102x96x150, ``B[k, j]``: two loads a call,
    interleaved) stays on the unwidened tile there, and measured 0.030 against 0.032 ms on
    the 2x16x4's blocks."""
    extra = 0.0
    for op in desc.inputs:
        need = desc.layout.get(op.name)
        if need is None or op.name not in windows:
            continue
        w = windows[op.name]
        if unwidened(desc, op, w):
            extra += count * math.prod(op.shape[:-1]) * UNWIDENED_PER_ROW
        elif need.contiguous and not is_block(op, w):
            extra += count * math.prod(op.shape[:-1]) * UNBLOCKED_PER_ROW
    return extra


def unwidened(desc, op, w) -> bool:
    """Window ``w`` of operand ``op`` is not on the widened copy its ``Layout`` asks for."""
    need = desc.layout.get(op.name)
    return need is not None and need.widened is not None and w.buffer.dtype != need.widened


def is_block(op, w) -> bool:
    """Window ``w`` of operand ``op`` is one contiguous block in the operand's dim order."""
    strides, want = w.strides, 1
    for k in reversed(range(len(op.shape))):
        if op.shape[k] > 1 and strides[k] != want:
            return False
        want *= op.shape[k]
    return True


def moved(elements: int) -> float:
    return elements * PER_ELEMENT_MOVED


# Held in L2 (``streamed``'s ``held``): a panel read in place whose reduction blocks the
# calls' order keeps in L2 (``extract.blocked_loops``' GotoBLAS order: B's KC rows over a
# block of columns that fits half of L2, swept by every row tile of a group before the next
# block) is not charged as coming back from L3, neither for the sets one tile's lines fall
# into (``streamed``'s set term, fitted on the calls in their unblocked order) nor for its
# buffer outgrowing L2 (``_outgrown``): the block's rows are whole runs of columns, over all
# of L2's sets. What stays is the span of its KC rows past the TLB's reach (``_paged``),
# charged on the blocked steps.
#
# Measured on Zen 4 (1 MB L2), 8x32 tiles in GotoBLAS's order, B in place against B copied
# into panels first (the programs taking turns, medians of 7-15 rounds, us or ms, one thread /
# two): 64 x 512 x 512 294 / 337 and 149 / 199 us, 128 x 512 x 512 586 / 629 and 294 / 343 us,
# 64 x 1024 x 1024 (A in panels either way) 1.25 / 1.39 and 0.62 / 0.79 ms, 128 x 1024 x 1024
# 2.52 / 2.60 and 1.26 / 1.40, 256 x 1024 x 1024 5.13 / 5.03 and 2.54 / 2.62, 512 x 1024 x
# 1024 10.5 / 10.0 and 5.24 / 5.05, 1024^3 21.9 / 19.8 and 10.4 / 9.8: the copy (a pass over
# B, ``PER_ELEMENT_MOVED`` an element) pays from a few hundred rows on, as every row tile of
# B's block reads its rows in place a page a step. With ``_paged`` alone it is taken from 93
# rows on at 1024 columns (span 512 KB) and 170 at 512 (256 KB): later than measured, never
# where it lost. Not measured on Zen 3.
def streamed(calls: int, streams, reread_streams=None, l2: int = L2_SETS * L2_WAYS * LINE,
             held=frozenset()) -> float:
    """What a tile's strided panel adds to ``calls`` calls (``layout.streams``), and what
    rereading an input that outgrew L1 adds, on ``reread_streams`` when given (the calls'
    streams once cache-blocked, whose reduction blocks bound what is read again).
    ``held``: the inputs whose blocks the blocked order keeps in L2 (``extract.Blocked``),
    charged for their pages alone (held in L2, above).

    An input whose consecutive calls along the reduction lie a line or more apart (the 6x16
    product's ``B[k, 16 * j_o]``: one row of B per k) touches ``runs * ceil(run / LINE)``
    lines per call, ``steps`` calls per tile. At a stride of ``s`` lines those lines fall
    into only ``L2_SETS / gcd(s, L2_SETS)`` of L2's sets; when one tile's lines are more
    than those sets hold, the panel is gone before the next tile over it comes back, and
    its lines come again from L3, one per call, at a stride the prefetcher does not follow.
    Each call pays ``PER_LINE_REFETCHED`` per line times the share of the panel that does
    not fit. A contiguous panel (``pack-panel``'s copy) streams and pays nothing.

    Fitted on square f32 GEMMs (6x16 calls in ``i_o, j_o, k`` order, remainders on 8-wide
    axpys), B read in place against B copied into ``[j_o, k, j_i]`` panels; one thread,
    this machine, each the median of 3 medians of 21 to 1145 calls; the programs are the
    ones ``tensorize`` emits with this term forced to 0 and to infinity. Panelled / in place:

        n      64    96    128   192   256   384         512         640   768   1024
        ratio  1.18  1.09  1.05  1.04  1.04  1.02, 0.91  0.83, 0.85  1.05  0.96  0.76

    Packing pays only at 512 and 1024 (stride 32 and 64 lines: 32 and 16 L2 sets for 512
    and 1024 lines, so half and 7/8 of the panel do not fit) and a little at 768 (48 lines,
    64 sets, a third does not fit); everywhere else the panel fits its sets and the copy is
    pure overhead. L1's own aliasing does not predict it: at 256 a tile's 256 lines share 4
    L1 sets (32 lines) and the copy still lost, the L2 hits being cheap enough (since the
    copy reads its source in order, ``layout._source_order``, it wins there: ``_paged``
    charges the panel's span, which this fit left at zero). The saved
    time per call, 0.9 ns at 512 and 1.5 ns at 1024, is about 1 and 1.7 units (the in-place
    512 program's 8.4 million units ran in 7.5 ms); over the share that does not fit (1/2,
    7/8) that is 2 per line. At 768 it predicts 0.7 units a call where 0.2 was measured:
    the copy is still chosen there, and it still measured faster."""
    extra = sum(_reread(calls, s) for s in (streams if reread_streams is None else reread_streams))
    # on the order the calls run in, once it is known (the blocked one)
    extra += sum(max(_paged(calls, s), 0.0 if s.operand in held else _outgrown(calls, s, l2))
                 + _aliased(calls, s) for s in reread_streams or ())
    for s in streams:
        if s.operand in held:
            continue
        if _strided(s) or _broadcast_far(s):
            lines = s.runs * math.ceil(s.run / LINE)
            sets = L2_SETS // math.gcd(s.stride // LINE, L2_SETS) if s.stride % LINE == 0 else L2_SETS
            extra += _refetched(calls, s, sets * (L2_WAYS - OTHER_WAYS), s.steps * lines)
    return extra


def _strided(s) -> bool:
    """A panel read in place, a line or more from one step to the next."""
    return s.unit and not s.contiguous and s.stride >= LINE


def _broadcast_far(s) -> bool:
    """An input the tile broadcasts element by element (no unit stride asked), a line or
    more from one step to the next: the 6x16 product on ``C``'s transpose reads its ``a``
    from ``B[k, 6 * j_o]``, six floats of a line a step. Its lines fall into L2's sets as a
    vector panel's do and come again from L3 once the buffer outgrows L2 (``streamed``'s
    set term, ``_outgrown``), where nothing was charged: ``C = A @ B`` at 12 x 2048 x 2048
    took that product, A and C copied into 16-wide temporaries, 4.3-5.4 ms against 1.7-1.8
    on 6x16 tiles along ``B[k, 16 * j_o]`` (Zen 3, one thread, in turns). The page term
    (``_paged``) is not charged for it: on PolyBench's covariance (``data`` 260 x 240, rows
    960 bytes apart in 250 KB) it padded the tiles to save calls, 3-6% slower."""
    return not s.unit and not s.contiguous and s.stride >= LINE


def _refetched(calls: int, s, held: float, size: float) -> float:
    """A strided panel (``_strided``) of which ``held`` out of ``size`` stays within reach
    (of L2's sets, the TLB, L2): each call pays ``PER_LINE_REFETCHED`` per line it reads for
    the share past it.

    Nothing where no other tile reads the panel (``Stream.once``: one row tile's B, the
    ``C = A @ B`` of 10 x 2048 x 2048 on 6- and 4-row tiles) and its runs are whole lines:
    its lines are fetched once whatever stays in reach, as every program that reads them
    pays. (Runs shorter than a line share it with the next tile's.) Charging it there
    chose the 6x16 tile on ``C``'s transpose (B broadcast from ``B[k, 6 * j_o]``, A and C
    copied into 16-wide temporaries), which measured 4.07-4.63 ms against 3.43-4.59 on
    the rows (Zen 3, one thread, in turns)."""
    if not (_strided(s) or _broadcast_far(s)) or (s.once and s.run >= LINE) or size <= held:
        return 0.0
    return calls * s.runs * math.ceil(s.run / LINE) * PER_LINE_REFETCHED * (1.0 - held / size)


def _reread(calls: int, s) -> float:
    """An input that walks through its lines (less than a line per call) and that the next
    tile reads again, like the 6x16 product's six rows of A across ``j_o``, stays in L1 only
    while its ``runs * steps * stride`` bytes fit; the share that does not is read again
    from L2, ``runs * stride / LINE`` lines per call at ``PER_LINE_FROM_L2`` each.

    Fitted on f32 GEMMs of 1020 x 1024 x K, B in panels, one thread, medians of 7 calls:
    6x16 calls took 4.35 ns each at K = 1024 (A's rows: 24 KB), 4.67 at 1280 (30 KB), 4.59
    at 1536 (36 KB), 5.23 at 2048 (48 KB), 5.79 at 3072 (72 KB): 2.6 ns a call over the
    share of A that does not fit (1/3, 5/9), 3.3 units (0.8 ns each at K = 1024) for
    0.375 lines, 8 per line. This is why the plain 2048^3 product (501-550 ms, B in panels)
    loses to one Strassen level (391-414 ms) whose 1024 blocks keep A's rows in L1."""
    if not s.reused or s.stride == 0 or s.stride >= LINE:
        return 0.0
    footprint = s.runs * s.steps * s.stride
    if footprint <= L1_BYTES:
        return 0.0
    return calls * s.runs * s.stride / LINE * PER_LINE_FROM_L2 * (1.0 - L1_BYTES / footprint)


def _paged(calls: int, s) -> float:
    """A panel read at a stride of a line or more whose steps along one tile's reduction
    (B's ``KC`` rows) span more pages than the first-level TLB maps: a step is a page walk
    whenever a tile reads it again, and the prefetcher, which stops at page boundaries,
    does not follow. Each call pays ``PER_LINE_REFETCHED`` per line for the share of the
    span out of reach. Measured on 8x32 tiles of a 1000^3 f32 product (B's rows 4000 bytes
    apart, 250-row blocks: 1 MB, 244 pages), one thread, loaded machine, same-run ratios to
    numpy: B in panels 0.78-0.82, in place 0.53-0.63.

    The reach (``DTLB_REACH``) was fitted on Zen 3 (6x16 tiles, one thread, each program
    taking turns with the other in one process, least and median times of 41 rounds, two
    runs): square products with B in panels against B in place measured 1.04-1.10 times
    slower at 128 (64 KB spans) and 0.99-1.06 at 192 (144 KB), but 0.81-0.89 times the time
    at 256 (256 KB, 64 pages, where a reach of all 64 entries charged nothing) and 0.86-0.90
    at 384 (B's 192-row blocks: 288 KB). The tile's rows of A and C and the stack hold
    entries too; 40 pages (160 KB) puts the crossover between 192 and 256. Unmeasured on
    other CPUs (Zen 4's first-level TLB has 72 entries)."""
    return _refetched(calls, s, DTLB_REACH, s.steps * s.stride) if _strided(s) else 0.0


def _outgrown(calls: int, s, l2: int) -> float:
    """A panel read in place at a stride of a line or more, from a buffer that outgrows L2
    (``l2`` bytes): the tiles come back to its rows from L3, a line or two a step at that
    stride, which the prefetcher, stopping at page boundaries, does not follow (a panel's
    copy streams). Each call pays ``PER_LINE_REFETCHED`` per line for the share of the
    buffer L2 does not hold, as ``_paged`` charges the span out of the TLB's reach (the
    larger of the two is charged). Measured on Zen 3 (6x16 tiles, one thread, in turns
    with B in panels, least times of 41 rounds): 511^3, whose 73-row reduction blocks span
    149 KB (below ``DTLB_REACH``), 3.55 ms in place against 2.98 ms in panels; 553^3
    (79-row blocks, 175 KB) 4.01 against 3.72 ms; 192^3 (144 KB, all of B in L2) neutral."""
    return _refetched(calls, s, l2, s.footprint)


def one_set(s) -> bool:
    """A call reads several runs (rows) a multiple of ``L1_SET_PERIOD`` apart: all of them
    fall into one L1 set, which they share with the panel the tile keeps in L1."""
    return s.runs > 1 and s.apart > 0 and s.apart % L1_SET_PERIOD == 0 and s.stride < LINE


L1_WAYS = 8


def output_one_set(tiles: float, desc, w) -> float:
    """A tile's output rows (``w``, the output's window) a multiple of ``L1_SET_PERIOD``
    apart, more lines than an L1 set holds: every line of the tile falls into one set, so
    loading the tile and storing it back evicts its own lines, ``PER_LINE_REFETCHED`` each
    way for each. ResNet's 7x7 stem (16 x 16 x 64 out) on 8 x 32 tiles with their rows along
    ``h`` (8 rows 4 KB apart, 16 lines in 8 ways) ran 95.5 us against 77.7 with the rows
    along ``w`` (256 bytes apart; Zen 4, one thread, in turns)."""
    size = itemsize(w.buffer.dtype)
    flat = list(w.strides)
    shape = desc.output.shape
    unit = next((k for k in reversed(range(len(flat))) if abs(flat[k]) == 1), None)
    if unit is None:
        return 0.0
    rows = [k for k, extent in enumerate(shape) if k != unit and flat[k] and extent > 1]
    if len(rows) != 1:
        return 0.0
    runs, apart = shape[rows[0]], abs(flat[rows[0]]) * size
    lines = math.ceil(shape[unit] * size / LINE)
    if apart % L1_SET_PERIOD or runs * lines <= L1_WAYS:
        return 0.0
    return tiles * runs * lines * 2 * PER_LINE_REFETCHED


def _aliased(calls: int, s) -> float:
    """An input whose rows share one L1 set (``one_set``: the 8x32 tile's 8 rows of A at
    2048 floats a row, 8 KB apart) evicts the lines of the other operands from that set and
    is evicted by them: each call pays ``PER_LINE_REFETCHED`` for the lines its rows walk
    through. On 8x32 tiles of 2048^3 (blocked, loaded machine, same-run ratios to numpy) A
    copied into [i_o, k, i_i] panels measured 0.86 against 0.78 read in place with row
    tiles in groups under B's panel, 0.91-0.94 against 0.88-0.89 with each row tile's A
    kept in L1 across a block of B (``extract.blocked_loops``): about 1 unit a call."""
    if not one_set(s):
        return 0.0
    return calls * s.runs * s.stride / LINE * PER_LINE_REFETCHED
