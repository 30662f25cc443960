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
  under hypothesis, and the ``tensorize fuzz`` command.

The strategies are re-exported here: ``from rewrite.fuzz import programs, disguised``.
"""

from .disguises import Disguised, Guarantee, NearMiss, could_fit, disguised, near_misses
from .random_programs import buffers, differentiable_programs, programs

__all__ = ["Disguised", "Guarantee", "NearMiss", "buffers", "could_fit", "differentiable_programs",
           "disguised",
           "near_misses", "programs"]
