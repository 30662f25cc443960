"""The backward of a convolution against its forward and against numpy: one thread each.

    python -m rewrite.tools.grad_bench [--size 56] [--channels 64] [--runs 10] [--nests]

The forward is a 3x3, stride-1, pad-1 NHWC convolution (ResNet-50's conv2_x at the defaults:
56x56x64 -> 64), written as the corpus writes it (a padding stage, then the window sum). Its
backward (dX and dW) is derived by ``rewrite.grad``, tensorized for the host and compiled
with one thread. numpy's best formulation, on one BLAS thread (``threadpoolctl``): the
forward as one product of the im2col windows (``sliding_window_view``) with the weights, the
weight gradient as the windows' product with dY, the data gradient as the transposed
convolution (dY padded by 2, windows, product with the flipped weights).

``--nests`` also times each top-level statement of both tensorized programs: the program
cut after it, less the program cut before it (shortest runs, which a loaded machine
disturbs least), with the multiply-adds' rate where it has any.
"""

from __future__ import annotations

import argparse

import numpy as np
from threadpoolctl import threadpool_limits

from .. import runtime
from ..autodiff import grad
from ..pipeline import tensorize
from ..script import parse
from .timing import measure

_FORWARD = """
@prim_func
def conv(X: f32[1, {n}, {n}, {c}], W: f32[3, 3, {c}, {c}], Y: f32[1, {n}, {n}, {c}]):
    P = alloc(f32[1, {p}, {p}, {c}])
    for n, h, w, c in grid(1, {p}, {p}, {c}):
        P[n, h, w, c] = 0.0
    for n, h, w, c in grid(1, {n}, {n}, {c}):
        P[n, h + 1, w + 1, c] = X[n, h, w, c]
    for n, h, w, co in grid(1, {n}, {n}, {c}):
        Y[n, h, w, co] = 0.0
        for rh, rw, rc in grid(3, 3, {c}):
            Y[n, h, w, co] += P[n, h + rh, w + rw, rc] * W[rh, rw, rc, co]
"""


def _windows(x: np.ndarray) -> np.ndarray:
    """[1, H+2, W+2, C] -> [H, W, 3, 3, C] windows (a view)."""
    v = np.lib.stride_tricks.sliding_window_view(x[0], (3, 3), axis=(0, 1))  # H, W, C, 3, 3
    return v.transpose(0, 1, 3, 4, 2)


def numpy_forward(x, w):
    cols = np.ascontiguousarray(_windows(np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))))
    h, wd = x.shape[1], x.shape[2]
    return (cols.reshape(h * wd, -1) @ w.reshape(-1, w.shape[3])).reshape(x.shape[:3] + (w.shape[3],))


def numpy_backward(x, w, dy):
    h, wd, c = x.shape[1], x.shape[2], x.shape[3]
    cols = np.ascontiguousarray(_windows(np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))))
    dw = (cols.reshape(h * wd, -1).T @ dy.reshape(h * wd, -1)).reshape(w.shape)
    dcols = np.ascontiguousarray(_windows(np.pad(dy, ((0, 0), (1, 1), (1, 1), (0, 0)))))
    wt = w[::-1, ::-1].transpose(0, 1, 3, 2).reshape(-1, c)  # flipped, [kh*kw*CO, CI]
    dx = (dcols.reshape(h * wd, -1) @ wt).reshape(x.shape)
    return dx, dw


def nest_times(func, args: dict, runs: int) -> list[tuple[str, float, int]]:
    """``(first line, seconds, operations)`` per top-level statement of ``func``, compiled for
    one thread: the shortest run of the program up to it, less that up to the one before."""
    from dataclasses import replace

    from ..calls import op_count
    from ..ir import For, seq, stmts_of
    from ..printer import show_stmt

    stmts = stmts_of(func.body)
    out, before = [], 0.0
    for k, s in enumerate(stmts):
        kernel = runtime.compile(replace(func, body=seq(*stmts[:k + 1])), threads=1)
        t = measure(lambda: kernel(**args), runs, 0.3).min_s
        lines = show_stmt(s).splitlines()
        head = " ".join(x.strip() for x in lines[:2]) if isinstance(s, For) else lines[0]
        calls = [x.strip() for x in lines[2:] if x.strip().startswith("call(")]
        if calls and "call(" not in head:  # the loops, then the call they run (not a tile's fill)
            head = f"{lines[0].strip()} ... {calls[0]}"
        out.append((head, t - before, op_count(s)))
        before = t
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=56)
    ap.add_argument("--channels", type=int, default=64)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--nests", action="store_true", help="also time each top-level statement")
    a = ap.parse_args(argv)
    import intrinsics

    n, c = a.size, a.channels
    fwd = parse(_FORWARD.format(n=n, c=c, p=n + 2))
    bwd = grad(fwd, ["X", "W"])
    lib = intrinsics.library("host")
    rf, rb = tensorize(fwd, lib), tensorize(bwd, lib)
    kf, kb = runtime.compile(rf.func, threads=1), runtime.compile(rb.func, threads=1)
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (1, n, n, c)).astype(np.float32)
    w = rng.uniform(-1, 1, (3, 3, c, c)).astype(np.float32)
    dy = rng.uniform(-1, 1, (1, n, n, c)).astype(np.float32)
    y = np.zeros_like(dy)
    dx, dw = np.zeros_like(x), np.zeros_like(w)
    kf(X=x, W=w, Y=y)
    kb(X=x, W=w, dY=dy, dX=dx, dW=dw)
    with threadpool_limits(1):
        ndx, ndw = numpy_backward(x, w, dy)
        ok = (np.allclose(y, numpy_forward(x, w), atol=1e-3) and np.allclose(dx, ndx, atol=1e-3)
              and np.allclose(dw, ndw, atol=1e-2))
        t_f = measure(lambda: kf(X=x, W=w, Y=y), a.runs, 1.0)
        t_b = measure(lambda: kb(X=x, W=w, dY=dy, dX=dx, dW=dw), a.runs, 1.0)
        t_nf = measure(lambda: numpy_forward(x, w), a.runs, 1.0)
        t_nb = measure(lambda: numpy_backward(x, w, dy), a.runs, 1.0)
    print(f"conv2d 3x3 {n}x{n}x{c} -> {c}, one thread; coverage forward {rf.coverage:.2f}, "
          f"backward {rb.coverage:.2f}; results agree with numpy: {ok}")
    for label, t in (("forward (ours)", t_f), ("backward dX+dW (ours)", t_b),
                     ("forward (numpy im2col)", t_nf), ("backward dX+dW (numpy)", t_nb)):
        print(f"  {label:24s} median {t.median_s * 1e3:8.2f} ms   min {t.min_s * 1e3:8.2f} ms   runs {t.runs}")
    print(f"  backward / forward (ours): {t_b.median_s / t_f.median_s:.2f}x   "
          f"backward ours / numpy: {t_b.median_s / t_nb.median_s:.2f}x")
    if a.nests:
        for label, r, args in (("forward", rf, dict(X=x, W=w, Y=y)),
                               ("backward", rb, dict(X=x, W=w, dY=dy, dX=dx, dW=dw))):
            print(f"  {label}, per top-level statement (shortest runs):")
            with threadpool_limits(1):
                for head, t, ops in nest_times(r.func, args, a.runs):
                    rate = f"{ops / t / 1e9:7.1f} GFLOP/s" if ops and t > 0 else " " * 15
                    print(f"    {t * 1e3:7.3f} ms {rate}  {head[:100]}")


if __name__ == "__main__":
    main()
