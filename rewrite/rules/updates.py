"""out-of-place: an update written into another buffer is a copy, then an accumulation.

PolyBench and BLAS-style code write ``D = C + A * B`` into a fresh output rather than
``C += A * B`` in place. Such a statement is no accumulate nest, so no intrinsic sees it.
When every iteration writes its own element of ``D``, it is a copy followed by the
accumulation over the same loops::

    for i, j in grid(M, N):                            for i, j in grid(M, N):
        D[i, j] = C[i, j] + A[i, j] * B[i, j]    ->        D[i, j] = C[i, j]
                                                       for i, j in grid(M, N):
                                                           D[i, j] += A[i, j] * B[i, j]

``e + C[g]`` is the same (``+`` commutes exactly, in IEEE arithmetic and on wrap-around
integers), and ``C[g] - e`` accumulates ``-(e)`` (``x - y`` is ``x + -y`` exactly, negation
being exact), as ``X[f] -= e`` does.

Sound when, for the perfect nest ``for loops: D[f] = C[g] + e``:

- ``D`` is neither ``C`` nor any buffer the value reads (``e``'s operands, an index): then
  the nest writes only ``D`` and reads only other buffers, so no iteration sees what another
  wrote, and running all copies before all accumulations reorders nothing observable;
- every iteration writes a different element of ``D``: the dependence analysis finds that no
  loop of the nest carries anything (each loop ``parallel``; it errs towards "carried", so
  an index it cannot decide refuses the rule). Then each element is written by exactly one
  iteration, which stores ``C[g]`` and then adds ``e``: ``D[f] = C[g] + e`` with one rounding,
  the value the statement as written stores (bit for bit, NaN and Inf included; on integers
  ``+`` wraps around either way).

A nest that writes one element in several iterations overwrites it, and keeps only the last
value: ``for k: D[i, j] = C[i, j] + A[i, k] * B[k, j]`` leaves ``C + A[i, K-1] * B[K-1, j]``,
not a sum over ``k``, and is refused (some loop carries an output dependence).

``C`` may be read at other indices than ``D`` is written (``D[i] = C[i + 1] + e``, a
transposed ``C[j, i]``): ``C`` is not written by the nest, so the copy reads the same values
the statement would have, and the copy is then a shifted or transposed copy -- still an
ordinary statement. The rule only needs ``f`` to hit each element once.

The copy runs as an ordinary statement; the accumulation is an ``AccNest`` that the matcher
sees. A normalize family (``rules/__init__.py``): it applies wherever it is legal and the
update reads some buffer (``D[i] = C[i] + 1.0`` has nothing for an intrinsic to read).
"""

from __future__ import annotations

from typing import Optional, Sequence

from .. import analysis, ir
from ..ir import Accumulate, Binary, Expr, For, Load, PrimFunc, Stmt, Store, Unary
from ..names import Names
from ..nests import AccNest, as_nest


def apply(parts: Sequence, names: Names) -> list:
    """``parts`` (top-level items) with each out-of-place update split into its copy and its
    accumulate nest."""
    out: list = []
    for p in parts:
        pieces = None if isinstance(p, AccNest) else split(p)
        out += pieces or [p]
    return out


def _source_and_update(s: Store) -> Optional[tuple[Load, Expr]]:
    """``(C[g], e)`` when ``s`` stores ``C[g] + e``, ``e + C[g]`` or ``C[g] - e`` (then ``e``
    is ``-(e)``), ``C`` not being ``s``'s buffer and of its dtype; else None."""
    v = s.value
    if not isinstance(v, Binary) or v.op not in ("+", "-"):
        return None

    def source(x: Expr) -> bool:
        return isinstance(x, Load) and x.buffer.name != s.buffer.name and x.dtype == s.buffer.dtype

    if v.op == "-":
        return (v.a, Unary("neg", v.b)) if source(v.a) else None
    if source(v.a):
        return v.a, v.b
    if source(v.b):
        return v.b, v.a
    return None


def _writes_each_element_once(nest: Stmt) -> bool:
    """No loop of ``nest`` carries a dependence (the nest alone, as a function): with only
    one write, to a buffer it does not read, that is: no two iterations write one element."""
    return all(info.kind == "parallel" for info in analysis.loops(PrimFunc("_", (), nest)))


def split(s: Stmt) -> Optional[list]:
    """``[copy, accumulate nest]`` for ``s`` when it is an out-of-place update (see the module
    docstring), else None."""
    loops: list[For] = []
    leaf = s
    while isinstance(leaf, For):
        loops.append(leaf)
        leaf = leaf.body
    if not loops or not isinstance(leaf, Store):
        return None
    found = _source_and_update(leaf)
    if found is None:
        return None
    src, update = found
    d = leaf.buffer.name
    reads = [x.buffer.name for x in ir.loads_of(leaf.value)]
    reads += [x.buffer.name for i in leaf.indices for x in ir.loads_of(i)]
    if d in reads:
        return None  # D is C, or the update reads D: the iterations would see each other
    if not any(True for _ in ir.loads_of(update)):
        return None  # nothing for an intrinsic to read
    if not _writes_each_element_once(s):
        return None  # an element overwritten by later iterations keeps only the last value

    acc = as_nest(ir.wrap(loops, Accumulate(leaf.buffer, leaf.indices, update)))
    if acc is None:
        return None
    return [ir.wrap(loops, Store(leaf.buffer, leaf.indices, src)), acc]
