"""Measuring tools, outside the compiler: benchmarks of compiled functions against numpy
(``bench.py``, ``tensorize bench``), of each native intrinsic against the FMA peak
(``intrinsic_bench.py``, ``tensorize intrinsics --bench``) and of Strassen levels
(``strassen_bench.py``), all timed by ``timing.py``."""
