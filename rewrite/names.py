"""Fresh names for what rewrites create: loop variables, temporaries, packed copies.

One ``Names`` is built from a program's names (``Names.of``), handed to every rewrite that
adds a buffer or a loop, and reserves each name it hands out, so no two rewrites pick the
same one. Two spellings, both visible in printed programs::

    names.fresh("T")          T, T2, T3, ...           extractor temporaries, packed copies,
                                                       split and blocked loops
    names.numbered("mm_U")    mm_U_0, mm_U_1, ...      temporaries of matmul and Strassen
                                                       rewrites and their guards

A name that only has to be unique within one nest (a loop variable) or that is only tried
is taken from a copy (``names.copy(nest_loops)``), which leaves the original untouched.
"""

from __future__ import annotations

from typing import Iterable

from .ir import For, PrimFunc, walk_stmts


class Names:
    """Names in use; ``fresh`` and ``numbered`` pick unused ones and reserve them."""

    __slots__ = ("_used",)

    def __init__(self, names: Iterable[str] = ()):
        self._used = set(names)

    @staticmethod
    def of(func: PrimFunc) -> "Names":
        """``func``'s buffer names and loop names, which a new temporary must not take either."""
        names = Names(b.name for b in func.buffers)
        names._used.update(s.var for s in walk_stmts(func.body) if isinstance(s, For))
        return names

    def __contains__(self, name: str) -> bool:
        return name in self._used

    def reserve(self, name: str) -> str:
        """Mark ``name`` as in use (it may be already) and return it."""
        self._used.add(name)
        return name

    def fresh(self, base: str) -> str:
        """``base`` if unused, else the first unused of ``base2``, ``base3``, ...; reserved."""
        name, k = base, 1
        while name in self._used:
            k += 1
            name = f"{base}{k}"
        return self.reserve(name)

    def numbered(self, base: str) -> str:
        """The first unused of ``base_0``, ``base_1``, ...; reserved."""
        k = 0
        while f"{base}_{k}" in self._used:
            k += 1
        return self.reserve(f"{base}_{k}")

    def copy(self, also: Iterable[str] = ()) -> "Names":
        """Another ``Names`` holding these names and ``also``: what it reserves stays there."""
        return Names(self._used.union(also))

    def __repr__(self) -> str:
        return f"Names({sorted(self._used)!r})"
