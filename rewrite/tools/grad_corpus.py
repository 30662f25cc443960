"""Every differentiable corpus function: its backward derived (and how long that took), checked
by central differences in float64, and optionally tensorized for the host.

    python -m rewrite.tools.grad_corpus [corpus] [--samples 8] [--tensorize]

A function is differentiated with respect to all its float inputs and the float outputs it
updates in place (``autodiff.updated_in_place``: PolyBench's ``data``, ``C`` in ``C = beta C
+ ...``), each with respect to its value on entry, for the output its last statement writes
(its result: ``cov`` rather than the ``data`` it centres first). Integer programs, and any
other grad refuses, are listed as refused, with the reason.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from .. import ir
from ..autodiff import grad, normalised, updated_in_place
from ..numgrad import gradcheck
from ..script import ScriptError, parse_file


def result(f) -> str:
    """The output the function's last statement writes."""
    outs = {b.name for b in f.outputs}
    return [s.buffer.name for s in ir.walk_stmts(f.body)
            if isinstance(s, (ir.Store, ir.Accumulate)) and s.buffer.name in outs][-1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus", nargs="?", default="corpus")
    ap.add_argument("--samples", type=int, default=8, help="elements checked per gradient")
    ap.add_argument("--tensorize", action="store_true", help="also tensorize the backward for the host")
    a = ap.parse_args(argv)
    failed = 0
    for path in sorted(Path(a.corpus).glob("*.py")):
        for name, f in parse_file(path).items():
            updated = updated_in_place(f)
            wrt = [b.name for b in f.params
                   if ir.is_float(b.dtype) and (b in f.inputs or b in updated)]
            out = result(f)
            t = time.perf_counter()
            try:
                g = grad(f, wrt, output=out)
            except (ScriptError, ValueError) as e:
                print(f"{name:28s} refused: {e}", flush=True)
                continue
            dt = time.perf_counter() - t
            t = time.perf_counter()
            check = gradcheck(f, g, wrt, output=out, samples=a.samples, perturbed=normalised(f))
            failed += not check.ok
            line = (f"{name:28s} grad {dt * 1e3:6.1f} ms  gradcheck {'ok' if check.ok else 'FAILED'} "
                    f"rel {check.worst.rel_error:.1e} ({time.perf_counter() - t:.1f} s)")
            if a.tensorize:
                import intrinsics
                from .. import runtime
                from ..pipeline import tensorize

                r = tensorize(g, intrinsics.library("host"))
                line += f"  coverage {r.coverage:.2f} check {'ok' if runtime.check(g, r.compile()).ok else 'FAILED'}"
            print(line if check.ok else line + "  " + check.message(), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
