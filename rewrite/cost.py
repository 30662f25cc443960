"""The cost model, nothing else: what a nest costs as scalar code or as intrinsic calls.

Units are "scalar operations": a scalar nest costs its arithmetic (``lower.op_count``); an
intrinsic call costs its descriptor's ``cost``, which is stated in the same units for one
call (an 8-wide FMA: 1, the 6x16 register-blocked outer product: 6). A call whose operands
miss a unit-stride need of the descriptor is gathered element by element, so it pays
``GATHER_PENALTY`` times more. Packing into a temporary pays per element moved.

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
"""

from __future__ import annotations

from .lower import op_count
from .nests import AccNest

GATHER_PENALTY = 4.0
PER_ELEMENT_MOVED = 1.0
PER_PACKING = 10000.0


def scalar(nest: AccNest) -> float:
    return float(op_count(nest.stmt()))


def scalar_stmt(s) -> float:
    """A statement left as scalar code: its arithmetic, and one per element it writes (so
    copies and zero fills, which do no arithmetic, are not free)."""
    return float(op_count(s)) + moved(_writes(s))


def packing(copies) -> float:
    """Copy nests, each filling one packing temporary."""
    return sum(scalar_stmt(c) + PER_PACKING for c in copies)


def _writes(s) -> int:
    from .ir import Accumulate, For, If, Seq, Store

    if isinstance(s, For):
        return s.extent * _writes(s.body)
    if isinstance(s, Seq):
        return sum(_writes(c) for c in s.stmts)
    if isinstance(s, If):
        return _writes(s.then) + (_writes(s.orelse) if s.orelse is not None else 0)
    return 1 if isinstance(s, (Store, Accumulate)) else 0


def calls(desc, count: int, unit_stride_ok: bool) -> float:
    return count * desc.cost * (1.0 if unit_stride_ok else GATHER_PENALTY)


def moved(elements: int) -> float:
    return elements * PER_ELEMENT_MOVED
