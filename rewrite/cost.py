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


def calls(desc, count: int, unit_stride_ok: bool) -> float:
    return count * desc.cost * (1.0 if unit_stride_ok else GATHER_PENALTY)


def moved(elements: int) -> float:
    return elements * PER_ELEMENT_MOVED
