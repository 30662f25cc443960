"""PolyBench as PolyBench writes it, tensorized, against numpy: one thread each.

    python -m rewrite.tools.polybench_bench [--runs 10] [--only pb_syrk,pb_trmm] [--target x86-avx2]

Each kernel of ``corpus/polybench_real.py`` (and the matrix-vector ones of
``corpus/matvec.py``) is tensorized for the host and compiled for one thread; numpy runs the
formula a numpy user writes for it, on one BLAS thread (``threadpoolctl``): whole products
with ``@`` where PolyBench computes a triangle, LAPACK (``np.linalg``) for the factorisations.
Both start each run from the same inputs (the kernels update their buffers in place, so
ours copies them back first, and numpy's formula copies what it updates). The outputs are
compared before timing (``agree``; ``-`` where the formula's result is no buffer of the
kernel's, as the factorisations'). The two are timed in turn, a few rounds each, so a change
of load on a shared machine hits both alike. ``ratio`` is numpy's median over ours: above
1, ours is faster. ``--target`` plans on a smaller library than the host's (the AVX2 rows
alone on an AVX-512 host), to compare the two on one machine.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

import numpy as np
from threadpoolctl import threadpool_limits

from .. import runtime
from ..inputs import random_args
from ..pipeline import tensorize
from ..script import parse_file
from .timing import Timing, measure

CORPUS = Path(__file__).resolve().parents[2] / "corpus"


def _tril(n: int) -> np.ndarray:
    return np.tril(np.ones((n, n), bool))


def _correlation(a):
    d = a["data"]
    mean = d.mean(axis=0)
    std = np.sqrt(((d - mean) ** 2).mean(axis=0))
    std = np.where(std <= 0.1, np.float32(1.0), std)
    scaled = (d - mean) / (np.sqrt(np.float32(260.0)) * std)
    corr = scaled.T @ scaled
    np.fill_diagonal(corr, 1.0)
    return corr


def _gemver(a):
    A = a["A"] + np.outer(a["u1"], a["v1"]) + np.outer(a["u2"], a["v2"])
    x = a["x"] + np.float32(1.2) * (A.T @ a["y"]) + a["z"]
    return a["w"] + np.float32(1.5) * (A @ x)


# name -> (numpy formula on float32 inputs, the output it computes: a buffer's name, the
# names of a tuple's, or None where the result is no buffer of the kernel's)
FORMULAS: dict[str, tuple[Callable, str]] = {
    "pb_gemm": (lambda a: np.float32(1.2) * a["C"] + np.float32(1.5) * (a["A"] @ a["B"]), "C"),
    "pb_2mm": (lambda a: np.float32(1.2) * a["D"] + (np.float32(1.5) * (a["A"] @ a["B"])) @ a["C"], "D"),
    "pb_3mm": (lambda a: (a["A"] @ a["B"]) @ (a["C"] @ a["D"]), "G"),
    "pb_gemver": (_gemver, "w"),
    "pb_syrk": (lambda a: np.where(_tril(240), np.float32(1.2) * a["C"]
                                   + np.float32(1.5) * (a["A"] @ a["A"].T), a["C"]), "C"),
    "pb_syr2k": (lambda a: np.where(_tril(240), np.float32(1.2) * a["C"] + np.float32(1.5) * (
        (ab := a["A"] @ a["B"].T) + ab.T), a["C"]), "C"),
    "pb_symm": (lambda a: np.float32(1.2) * a["C"] + np.float32(1.5) * (
        (np.tril(a["A"]) + np.tril(a["A"], -1).T) @ a["B"]), "C"),
    "pb_trmm": (lambda a: np.float32(1.5) * (a["B"] + np.triu(a["A"].T, 1) @ a["B"]), "B"),
    "pb_covariance": (lambda a: ((d := a["data"] - a["data"].mean(axis=0)).T @ d) / np.float32(259.0), "cov"),
    "pb_correlation": (_correlation, "corr"),
    "pb_cholesky": (lambda a: np.linalg.cholesky(
        np.tril(m := a["A"] + np.float32(40.0) * np.eye(40, dtype=np.float32)) + np.tril(m, -1).T), None),
    "pb_trisolv": (lambda a: np.linalg.solve(
        np.tril(a["L"] + np.float32(40.0) * np.eye(40, dtype=np.float32)), a["b"]), "x"),
    "doitgen": (lambda a: (a["A"].reshape(-1, 60) @ a["C4"]).reshape(a["A"].shape), "A"),
    "doitgen_local_sum": (lambda a: (a["A"].reshape(-1, 60) @ a["C4"]).reshape(a["A"].shape), "A"),
    "atax": (lambda a: a["A"].T @ (a["A"] @ a["x"]), "y"),
    "bicg": (lambda a: (a["A"].T @ a["r"], a["A"] @ a["p"]), ("s", "q")),
    "mvt": (lambda a: (a["x1"] + a["A"] @ a["y1"], a["x2"] + a["A"].T @ a["y2"]), ("x1", "x2")),
    "gesummv": (lambda a: np.float32(1.5) * (a["A"] @ a["x"]) + np.float32(1.2) * (a["B"] @ a["x"]), "y"),
}


def agrees(work: dict, result, out) -> bool:
    """``result`` (one array, or a tuple of them for ``out``'s tuple of names) matches the
    kernel's buffers ``work`` to single precision."""
    names, results = (out, result) if isinstance(out, tuple) else ((out,), (result,))
    assert len(names) == len(results), (names, len(results))
    return all(np.allclose(work[n], r, rtol=1e-3, atol=1e-2) for n, r in zip(names, results))


def in_turn(calls: list, runs: int, seconds: float, rounds: int = 5) -> list:
    """Each of ``calls`` timed ``rounds`` times over in turn (``measure``, at least ``runs``
    runs and ``seconds`` in all), the runs of all rounds pooled."""
    times: list = [[] for _ in calls]
    for _ in range(rounds):
        for call, t in zip(calls, times):
            t.extend(measure(call, max(1, runs // rounds), seconds / rounds).times)
    return [Timing(tuple(t)) for t in times]


def native_library(name: str) -> list:
    """The intrinsics of target ``name``, all of which this CPU must run natively: an
    emulated intrinsic would time its emulation. ``SystemExit`` naming those it does not."""
    import intrinsics

    library = intrinsics.library(name)
    missing = [d.name for d in library if not d.native]
    if not library:
        raise SystemExit(f"no intrinsics for target {name}")
    if missing:
        raise SystemExit(f"this CPU does not run {', '.join(missing)} of {name}")
    return library


def kernels() -> dict:
    funcs = {}
    for name in ("polybench_real.py", "matvec.py", "doitgen.py"):
        path = CORPUS / name
        if path.exists():
            funcs.update(parse_file(path))
    return funcs


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--only", default="", help="comma-separated kernel names")
    ap.add_argument("--target", default="host",
                    help="plan on this ISA's library (one the host runs natively), not the host's")
    a = ap.parse_args(argv)
    library = None if a.target == "host" else native_library(a.target)
    funcs = kernels()
    names = [n for n in FORMULAS if n in funcs] + [n for n in funcs if n not in FORMULAS]
    if a.only:
        names = [n for n in names if n in a.only.split(",")]
    print(f"{'kernel':16s} {'coverage':>8s} {'ours ms':>9s} {'numpy ms':>9s} {'ratio':>6s}  agree")
    for name in names:
        func = funcs[name]
        result = tensorize(func, library)
        kernel = runtime.compile(result.func, threads=1)
        args = {k: np.asarray(v) for k, v in random_args(func, seed=0).items()}
        work = {k: v.copy() for k, v in args.items()}

        def ours():
            for k, v in args.items():
                np.copyto(work[k], v)
            kernel(**work)

        ours()
        formula, out = FORMULAS.get(name, (None, None))
        line = f"{name:16s} {result.coverage:8.2f}"
        with threadpool_limits(1):
            if formula is None:
                t = measure(ours, a.runs, 1.0)
                print(line + f" {t.median_s * 1e3:9.3f} {'-':>9s} {'-':>6s}  (no numpy peer)")
                continue
            theirs = formula({k: v.copy() for k, v in args.items()})
            agree = "-" if out is None else str(agrees(work, theirs, out))
            t, tn = in_turn([ours, lambda: formula({k: v.copy() for k, v in args.items()})],
                            a.runs, 2.0)
        print(line + f" {t.median_s * 1e3:9.3f} {tn.median_s * 1e3:9.3f}"
              f" {tn.median_s / t.median_s:6.2f}  {agree}")


if __name__ == "__main__":
    main()
