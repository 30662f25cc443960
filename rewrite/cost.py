"""The cost model, nothing else: what a nest costs as scalar code or as intrinsic calls.

Units are "scalar operations": a scalar nest costs its arithmetic (``lower.op_count``); an
intrinsic call costs its descriptor's ``cost``, which is stated in the same units for one
call (an 8-wide FMA: 1, the 6x16 register-blocked outer product: 6). A call whose operands
miss a unit-stride need of the descriptor is gathered element by element, so it pays
``GATHER_PENALTY`` times more. Packing into a temporary pays per element moved.
"""

from __future__ import annotations

from .lower import op_count
from .nests import AccNest

GATHER_PENALTY = 4.0
PER_ELEMENT_MOVED = 1.0


def scalar(nest: AccNest) -> float:
    return float(op_count(nest.stmt()))


def scalar_stmt(s) -> float:
    """A statement left as scalar code: its arithmetic, and one per element it writes (so
    copies and zero fills, which do no arithmetic, are not free)."""
    return float(op_count(s)) + moved(_writes(s))


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
