"""Casts on small scalar bodies, normalised before they are encoded into the e-graph (whose
terms do not carry the dtypes of loads, so these rules need the IR's types).

    i32(i16(A[i, k])) * i32(B[k, j])   ->   i32(A[i, k]) * i32(B[k, j])      A: u8, B: i8
"""

from __future__ import annotations

from .. import ir
from ..ir import Cast, Expr


def _exact(src: str, dst: str) -> bool:
    """``dst`` holds every value of ``src`` and is of the same kind (integer or float).

    The kind matters as much as the range: converting a value to an integer wraps when the
    value is an integer but saturates when it is a float (``u8(i8(-128))`` is 128,
    ``u8(f16(-128))`` is 0), so a step into another kind never disappears."""
    if src == dst:
        return True
    if ir.is_int(src) and ir.is_int(dst):
        lo, hi = ir.int_range(src)
        dlo, dhi = ir.int_range(dst)
        return dlo <= lo and hi <= dhi
    if ir.is_float(src) and ir.is_float(dst):
        return ir.bits(dst) >= ir.bits(src)
    return False


def normalize_casts(e: Expr) -> Expr:
    """Casts written in steps become one: ``i32(i16(a))`` is ``i32(a)`` for ``a: u8``.

    cast-widen-compose: when ``t1`` holds every value of ``a`` exactly and is of ``a``'s kind,
    ``t1(a)`` is ``a``'s value in the same kind, so ``t2(t1(a))`` and ``t2(a)`` convert the same
    value by the same rule -- equal for any ``t2``.
    cast-identity: a cast to the dtype a value already has is that value."""
    kids = ir.children(e)
    if kids:
        e = ir.with_children(e, tuple(normalize_casts(c) for c in kids))
    while isinstance(e, Cast) and isinstance(e.a, Cast) and _exact(e.a.a.dtype, e.a.dtype):
        e = Cast(e.dtype, e.a.a)
    if isinstance(e, Cast) and e.a.dtype == e.dtype:
        return e.a
    return e
