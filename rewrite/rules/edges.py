"""Edges: the rows and columns a tiling leaves, run on the same intrinsic with its edge masked.

masked-edge
    A binding of an intrinsic to a nest whose loops its tile does not divide leaves
    remainder nests: the last ``E mod T`` rows (or columns) of a loop of ``E`` cut into tiles
    of ``T``. Each remainder may instead run on the intrinsic's *partial form* cut to its
    extents (``descriptor.partial``): ``x86.avx512.mm.f32.8x32x1[2x26x1]`` is the 8 x 32
    tile's semantics with its loops run 2, 26 and 1 times, emitted by the same emitter with
    fewer rows of accumulators and the lanes past the 26th column masked in every load and
    store (``Emitter.partial``), so that no element outside the window is touched::

        for i, j, k in grid(90, 90, 90):           for i_o, j_o, k in grid(11, 2, 90):
            C[i, j] += A[i, k] * B[k, j]      ->        call("...8x32x1", c=C[8 * i_o, 32 * j_o], ...)
                                                    for i_o, k in grid(11, 90):
                                                        call("...8x32x1[8x26x1]", c=C[8 * i_o, 64], ...)
                                                    for j_o, k in grid(2, 90):
                                                        call("...8x32x1[2x32x1]", c=C[88, 32 * j_o], ...)
                                                    for k in range(90):
                                                        call("...8x32x1[2x26x1]", c=C[88, 64], ...)

    It is what padding (``padding.py``) does without the padded copies: the same tiles, the
    rows and columns past the edge neither read nor written instead of zeros computed and
    thrown away. The extractor weighs each binding with remainders (``extract._Builder``)
    also with its edges so run, each edge's own remainders again (the corner); and a nest
    whose loops are all shorter than some dims of a tile (a 30 x 30 product and the 8 x 32
    tile), on the partial forms cut to those loops (``forms``). The edges are not planned
    again as nests: a masked candidate is one program whose price is its calls'.

    Sound: a partial form's semantics are its parent's loop nest over a smaller box of its
    spatial dims (those that index the output; a reduction dim is never cut). Each output
    element it writes is one the parent would write, accumulating the same products over
    the same reduction; an input element it reads is one indexed by a spatial dim inside
    the box or by a reduction dim, which the parent reads too. The binding of a partial form
    to a remainder is checked like any other (``match.bindings``): the form's semantics
    on the windows compute the remainder nest's iterations, each once. The emitter's form
    must touch nothing outside the cut operands (``Emitter.partial``), and a call's windows
    are checked against the cut shapes like any call's (``verify``), so a window may end at
    a buffer's last element.

Forms exist only where the intrinsic's emitter has them: an emulated partial call would run
the scalar code it stands for, slower.
"""

from __future__ import annotations

import itertools

from .. import descriptor
from ..match import BodyMatch, short_loops
from ..nests import AccNest


def has_forms(desc) -> bool:
    """Whether the registered intrinsic ``desc`` has partial forms (its emitter can cut
    itself, ``Emitter.partial``)."""
    return getattr(desc.emitter, "partial", None) is not None


def forms(nest: AccNest, desc, match: BodyMatch) -> list:
    """The partial forms of ``desc`` with each spatial dim whole or cut to the extent of a
    loop of ``nest`` shorter than it that it could run along (``match.short_loops``)."""
    if not has_forms(desc):
        return []
    cuts = short_loops(nest, desc, match)
    if not cuts:
        return []
    options = [(d.extent,) + cuts.get(d.name, ()) for d in desc.dims]
    found = (descriptor.partial(desc, cut) for cut in itertools.product(*options))
    return [f for f in found if f is not None]


def edge_form(desc, bound: dict, nest: AccNest):
    """The form of ``desc``'s parent (``descriptor.parent_of``) for ``nest``, a remainder of
    a binding of ``desc`` with dims bound to loops as ``bound`` says: each bound dim cut to
    its loop's extent in ``nest`` where that is shorter. The parent itself where nothing is
    cut; None where the parent has no such form."""
    parent = descriptor.parent_of(desc)
    extent = {d.name: d.extent for d in nest.dims}
    cut = tuple(d.extent if bound.get(d.name) is None else min(d.extent, extent[bound[d.name]])
                for d in parent.dims)
    if cut == tuple(d.extent for d in parent.dims):
        return parent
    return descriptor.partial(parent, cut)
