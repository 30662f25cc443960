"""Fuzzing: hypothesis strategies, and the properties ``tensorize fuzz`` checks with them.

- ``random_programs.py``: random well-formed loop programs (``programs``, ``buffers``), and
  float ones ``rewrite.grad`` accepts (``differentiable_programs``), the test
  suite's strategies (``tests/strategies.py``);
- ``disguises.py``: programs that hold a given intrinsic in disguise, with what their
  construction guarantees (``disguised``), and near misses that must not use it
  (``near_misses``, certified by ``could_fit``);
- ``real.py``: the forms of real code among those disguises and near misses (triangles,
  out-of-place updates, sums of products, runtime scale factors, snapshots, reused
  temporaries), each with the guarantee its rules imply;
- ``properties.py``: completeness, soundness, no match and round trip, run on those cases
  under hypothesis, and the ``tensorize fuzz`` command (its options: ``options.py``).

The strategies are re-exported here: ``from rewrite.fuzz import programs, disguised``.
"""

import importlib

# each name and the module that defines it: imported on first use, so that importing a
# module of this package (the command line's ``options``) does not import hypothesis
_WHERE = {"Disguised": "disguises", "Guarantee": "disguises", "NearMiss": "disguises",
          "could_fit": "disguises", "disguised": "disguises", "near_misses": "disguises",
          "buffers": "random_programs", "differentiable_programs": "random_programs",
          "programs": "random_programs"}


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)


__all__ = sorted(_WHERE)
