"""Hypothesis strategies shared by the test suite; the implementation is
``rewrite/fuzz/random_programs.py``, exported as ``rewrite.fuzz``."""

from rewrite.fuzz import buffers, programs

__all__ = ["buffers", "programs"]
