"""Run a tensorize module with its code generated for another CPU, one this machine runs the
instructions of: what that CPU's compiler output does, measured here.

    python -m rewrite.tools.on_cpu znver3 rewrite.cli bench FILE... --target x86-avx2 --jobs 1
    python -m rewrite.tools.on_cpu znver3 rewrite.cli intrinsics --target x86-avx2 --bench
    python -m rewrite.tools.on_cpu znver3 rewrite.tools.polybench_bench --target x86-avx2

On an AVX-512 host, ``--target x86-avx2`` restricts the library to the AVX2 intrinsics, but
LLVM still compiles for the host: their k-loops get the registers only AVX-512 names
(ymm16-ymm31), EVEX encodings, and the int8 tiles' ``vpmaddwd`` + ``vpaddd`` become one
AVX-512 VNNI ``vpdpwssd``. Generated for ``znver3`` (AVX2 and FMA, 16 vector registers) the
code is what an AVX2 host compiles, run on this host's cores and caches. The CPU is set
in this process only: ``bench`` needs ``--jobs 1`` (its worker processes would compile for
the host).
"""

from __future__ import annotations

import runpy
import sys

from .. import codegen
from ..target import host_features

# The CPUs this tool generates for, with the vector features LLVM gives each one's code: a
# CPU whose code would use an instruction this machine lacks is refused (it would die on the
# first one) rather than run.
CPUS = {
    "haswell": {"avx2", "fma", "bmi2"},
    "znver3": {"avx2", "fma", "bmi2"},
    "skylake-avx512": {"avx2", "fma", "bmi2", "avx512f", "avx512bw", "avx512dq", "avx512vl"},
    "znver4": {"avx2", "fma", "bmi2", "avx512f", "avx512bw", "avx512dq", "avx512vl",
               "avx512vnni", "avx512bf16"},
}


def features_of(cpu: str) -> frozenset[str]:
    """What ``library("host")`` reads as the host's features for ``cpu``'s code: this
    machine's, less the extensions past AVX2 (the AVX-512 and AMX families) ``cpu`` lacks.
    Without it, the host's AVX-512 rows would be compiled for a CPU without them, which
    LLVM cannot do (it stops the process)."""
    return frozenset(f for f in host_features()
                     if not f.startswith(("avx512", "amx")) or f in CPUS[cpu])


def _refuse(message: str) -> None:
    """Bad input, as the command line says it: one line on stderr, exit status 2."""
    print(message, file=sys.stderr)
    raise SystemExit(2)


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if len(argv) < 2:
        _refuse("usage: python -m rewrite.tools.on_cpu CPU MODULE [ARGS...]")
    cpu, module, *rest = argv
    if cpu not in CPUS:
        _refuse(f"on_cpu: no CPU {cpu!r} here (one of {', '.join(sorted(CPUS))})")
    missing = CPUS[cpu] - host_features()
    if missing:
        _refuse(f"on_cpu: {cpu}'s code would use {', '.join(sorted(missing))}, "
                f"which this machine lacks")
    codegen.generate_for(cpu, features_of(cpu))
    sys.argv = [module, *rest]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
