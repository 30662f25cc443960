"""Random inputs to run a program on: an array for every parameter of a ``PrimFunc``, the
same arrays for the same seed.

``random_args(func, seed)`` draws finite values; ``special=True`` also sprinkles NaN, +-Inf,
+-0 and subnormals into the float arrays. ``--check`` (``runtime.check``), the benchmarks and
the tests compare the interpreter with compiled code on these.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from . import ir
from .ir import Buffer, PrimFunc

__all__ = ["random_args", "at_offset", "SPECIAL_VALUES"]

LINE = 64  # bytes of a cache line


def at_offset(arr: np.ndarray, offset: int) -> np.ndarray:
    """A C-contiguous copy of ``arr`` whose data starts ``offset`` bytes past a cache line
    (``0 <= offset < 64``, a multiple of the element size). numpy's large arrays start where
    the C allocator puts them, most often 16, 32 or 48 bytes past a line and now and then
    on one; kernels that read a matrix in place in 64-byte rows touch one line a row on a
    line and two past it, so benchmarks that compare runs fix the offset."""
    if not 0 <= offset < LINE or offset % arr.itemsize:
        raise ValueError(f"an offset of {offset} bytes: give a multiple of {arr.itemsize} below {LINE}")
    raw = np.empty(arr.nbytes + 2 * LINE, np.uint8)
    start = (-raw.ctypes.data) % LINE + offset
    out = raw[start:start + arr.nbytes].view(arr.dtype).reshape(arr.shape)
    out[...] = arr
    return out


def random_args(func: PrimFunc, seed: int = 0, special: bool = False,
                density: Optional[float] = None) -> dict[str, np.ndarray]:
    """Random arrays for every parameter (outputs too: ``C += ...`` may read before writing).

    Floats are in [-1, 1]; 8-bit integers span their range (programs widen them before
    accumulating); wider integers stay small so sums of products stay readable.
    ``special=True`` then overwrites a few elements of every float array (about the square
    root of its size over 4, at least one) with values drawn from ``SPECIAL_VALUES``: NaN,
    +-Inf, +-0 and +-a subnormal (a quarter of the smallest normal number, so that scaling it
    by a constant of the program does not round it to 0: overflow and underflow of finite
    values are rounding, which rewrites may change), so a few rows and columns of a product
    turn non-finite while the rest stays finite and comparable. ``density`` overwrites that
    fraction of the elements instead, so that elementwise code meets pairs such as
    ``Inf * 0`` at one index.
    """
    rng = np.random.default_rng(seed)
    out = {b.name: _random_array(rng, b) for b in func.params}
    if special:
        for b in func.params:
            if ir.is_float(b.dtype):
                _sprinkle(rng, out[b.name], density)
    return out


def _random_array(rng: np.random.Generator, b: Buffer) -> np.ndarray:
    dt = np.dtype(ir.numpy_dtype(b.dtype))
    if ir.is_float(b.dtype):
        return rng.uniform(-1.0, 1.0, b.shape).astype(dt)
    if ir.bits(b.dtype) == 8:
        info = np.iinfo(dt)
        return rng.integers(info.min, info.max, b.shape, endpoint=True, dtype=dt)
    lo = 0 if not ir.is_signed(b.dtype) else -100
    return rng.integers(lo, 100, b.shape, endpoint=True).astype(dt)


# What ``random_args(..., special=True)`` sprinkles into float arrays, in the array's dtype.
SPECIAL_VALUES = ("nan", "inf", "-inf", "0", "-0", "subnormal", "-subnormal")


def _sprinkle(rng: np.random.Generator, arr: np.ndarray, density: Optional[float]) -> None:
    tiny = np.finfo(arr.dtype).smallest_normal / 4
    values = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, tiny, -tiny], dtype=arr.dtype)
    count = int(arr.size ** 0.5) // 4 if density is None else int(arr.size * density)
    count = min(arr.size, max(1, count))
    where = rng.choice(arr.size, size=count, replace=False)
    arr.reshape(-1)[where] = values[rng.integers(0, len(values), size=count)]
