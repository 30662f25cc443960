"""Square f32 matmuls with 0, 1 and 2 Strassen levels side by side, and where Strassen starts
to win on this machine. Each program is timed as ``tensorize bench`` times one (``bench.bench``).

    python -m rewrite.tools.strassen_bench [--sizes 128,256,512,1024,2048] [--threads 1]
"""

from __future__ import annotations

import argparse
import sys
import time

import intrinsics

from ..pipeline import tensorize
from ..script import parse
from .bench import bench

MODES = ("off", 1, 2)
WIN_MARGIN = 0.05


def matmul_source(n: int) -> str:
    return f"""
@prim_func
def mm_{n}(A: f32[{n}, {n}], B: f32[{n}, {n}], C: f32[{n}, {n}]):
    for i, j in grid({n}, {n}):
        C[i, j] = 0.0
        for k in range({n}):
            C[i, j] += A[i, k] * B[k, j]
"""


def run(sizes, threads: int = 1, min_runs: int = 5, target_seconds: float = 1.0, out=sys.stdout):
    lib = intrinsics.library("host")
    rows = []
    print(f"{'n':>6} {'strassen':>8} {'runs':>5} {'min ms':>9} {'median ms':>10} {'max ms':>9} "
          f"{'GFLOP/s':>8}", file=out, flush=True)
    for n in sizes:
        func = parse(matmul_source(n))
        for mode in MODES:
            t = time.perf_counter()
            chosen = tensorize(func, lib, strassen=mode)
            if mode != "off" and chosen.strassen_levels != mode:
                continue  # too small for that many levels
            (r,) = bench([(None, func, chosen.func)], threads=threads, min_runs=min_runs,
                         target_seconds=target_seconds)
            rows.append((n, mode, r))
            print(f"{n:>6} {str(mode):>8} {r.runs:>5} {r.min_s * 1e3:>9.2f} {r.median_s * 1e3:>10.2f} "
                  f"{r.max_s * 1e3:>9.2f} {r.gflops:>8.1f}   (tensorize+compile "
                  f"{time.perf_counter() - t - r.runs * r.median_s:.1f} s)", file=out, flush=True)
    best = {}
    for n, mode, r in rows:
        best.setdefault(n, {})[mode] = r.median_s
    crossover = None
    for n in sorted(best):
        # a win is a median at least WIN_MARGIN below the plain program's: ties are noise here
        wins = any(best[n].get(m, float("inf")) < (1 - WIN_MARGIN) * best[n]["off"] for m in MODES[1:])
        if wins and crossover is None:
            crossover = n
        elif not wins:
            crossover = None
    print(f"crossover (smallest n from which a Strassen level is 5% faster at every larger size measured): "
          f"{crossover if crossover is not None else 'none up to ' + str(max(best))}", file=out)
    return rows, crossover


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="128,256,512,1024,1536,2048")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--min-runs", type=int, default=5)
    a = p.parse_args(argv)
    run([int(s) for s in a.sizes.split(",")], a.threads, a.min_runs)


if __name__ == "__main__":
    main()
