"""Gradient checking: ``gradcheck(forward, backward, wrt=[...])``.

The forward and the backward are both run in float64 through the reference interpreter
(every float buffer, constant and cast of the two programs widened to ``f64``), on random
inputs (``inputs.random_args``) and a random adjoint of the output. The backward's gradient
of each ``wrt`` buffer is compared with central differences of ``sum(dY * Y)``::

    (L(A + h e) - L(A - h e)) / 2h        e: one element of A, h = 1e-4

on every element of a buffer of at most ``samples`` elements, else on ``samples`` of them
drawn at random. The differences are taken per output element before they are summed, so
outputs the element does not reach cancel exactly. Where an output's one-sided differences
disagree, a kink (``max``, a relu) lies inside the step, which is then retried ten, a hundred
and a thousand times smaller. Where the backward disagrees with a difference, the difference
is taken again with half the step and the two extrapolated (Richardson), so that a central
difference's own error on a curved function is not taken for a wrong gradient. The relative error of a buffer is the largest absolute difference over the
largest magnitude of either gradient there (at least ``ABS_FLOOR``); the check fails past ``tol`` and names the
buffer and the worst index. The backward follows the convention ``grad`` produces (SPEC §4):
forward parameters by name (outputs hold the forward's results, except a ``wrt`` buffer the
forward writes, which holds its value on entry), ``d<output>``, ``d<A>`` per ``wrt`` buffer
(``d<output>`` itself when the output is one: the adjoint in, the gradient out); a
hand-written one is checked the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np

from . import ir
from .inputs import random_args
from .interp import interpret
from .ir import (Accumulate, Buffer, Cast, Const, Expr, For, If, Load, PrimFunc, Seq, Stmt, Store)

__all__ = ["GradCheck", "BufferCheck", "gradcheck", "widened"]

# Gradients smaller than this everywhere are compared with it instead: a gradient that is
# zero in exact arithmetic comes out as a rounding error of about 1e-16 on either side.
ABS_FLOOR = 1e-8
# A ``perturbed`` program stands for the forward when their outputs differ by at most this
# (relative): rounding of a reassociated sum in float64, far below what the check resolves.
SAME_OUTPUT = 1e-10


@dataclass(frozen=True)
class BufferCheck:
    """One gradient's comparison."""

    name: str
    rel_error: float
    worst_index: tuple[int, ...]
    numeric: float        # at the worst index
    analytic: float
    checked: int          # elements compared

    def __str__(self) -> str:
        return (f"d{self.name}: relative error {self.rel_error:.2e} over {self.checked} elements, "
                f"worst at {list(self.worst_index)} (numeric {self.numeric:.9g}, backward {self.analytic:.9g})")


@dataclass(frozen=True)
class GradCheck:
    ok: bool
    tol: float
    buffers: tuple[BufferCheck, ...] = field(default=())

    @property
    def worst(self) -> BufferCheck:
        return max(self.buffers, key=lambda b: b.rel_error)

    def message(self) -> str:
        if self.ok:
            return f"gradients match (worst relative error {self.worst.rel_error:.2e} <= {self.tol:g})"
        w = self.worst
        return (f"gradient of {w.name} is wrong: relative error {w.rel_error:.2e} > {self.tol:g} "
                f"at {w.name}{list(w.worst_index)} (numeric {w.numeric:.9g}, backward {w.analytic:.9g})")

    def __bool__(self) -> bool:
        return self.ok


def gradcheck(forward: PrimFunc, backward: PrimFunc, wrt: Sequence[str], output: Optional[str] = None,
              *, seed: int = 0, tol: float = 1e-6, samples: int = 64, step: float = 1e-4,
              progress: Optional[Callable[[str], None]] = None,
              perturbed: Optional[PrimFunc] = None) -> GradCheck:
    """Compare ``backward``'s gradients of ``wrt`` with central differences of ``forward``.
    ``progress(label)`` is called before each element is perturbed (two forward runs).

    ``perturbed``: a program with ``forward``'s parameters that computes the same values (the
    forward as the pipeline normalises it, ``autodiff.normalised``, whose distributed loops
    the interpreter runs as whole arrays where it runs the forward's carried loops a step at
    a time), used for the perturbed runs when its output at the unperturbed inputs agrees
    with the forward's (relative difference at most ``SAME_OUTPUT``), else ignored."""
    fwd, bwd = widened(forward), widened(backward)
    outs = fwd.outputs
    if output is None:
        if len(outs) != 1:
            raise ValueError(f"{forward.name} writes several outputs: choose one with output=")
        output = outs[0].name
    if output not in {b.name for b in outs}:
        raise ValueError(f"{output} is not an output of {forward.name}")
    bparams = {b.name: b for b in bwd.params}
    for name in ["d" + output] + ["d" + w for w in wrt]:
        if name not in bparams:
            raise ValueError(f"{backward.name} has no parameter {name} "
                             "(a backward takes d<output> and writes d<input> per gradient)")
    rng = np.random.default_rng(seed)
    args = random_args(fwd, seed)
    inputs = {b.name: args[b.name] for b in fwd.params}
    out_shape = fwd.buffer(output).shape
    dy = rng.uniform(-1.0, 1.0, out_shape)

    def outputs(arrays: dict[str, np.ndarray], func: Optional[PrimFunc] = None) -> np.ndarray:
        work = {k: v.copy() for k, v in arrays.items()}
        interpret(func or fwd, work)
        return work[output]

    ran = {k: v.copy() for k, v in inputs.items()}
    interpret(fwd, ran)
    y0 = ran[output]
    if perturbed is not None:
        fast = widened(perturbed)
        got = outputs(inputs, fast)
        if np.allclose(got, y0, rtol=SAME_OUTPUT, atol=SAME_OUTPUT * float(np.max(np.abs(y0), initial=1.0)),
                       equal_nan=True):
            fwd, y0 = fast, got
    written = ir.written_by(forward.body)
    bargs = {}
    for b in bwd.params:
        if b.name == "d" + output:
            bargs[b.name] = dy.copy()
        elif b.name in ("d" + w for w in wrt):
            bargs[b.name] = np.zeros(b.shape)
        elif b.name in wrt and b.name in written:  # differentiated: its value on entry
            bargs[b.name] = inputs[b.name].copy()
        elif b.name in ran:
            bargs[b.name] = ran[b.name].copy()
        else:
            raise ValueError(f"{backward.name} takes {b.name}, which is neither a parameter of "
                             f"{forward.name}, d{output} nor a gradient")
    interpret(bwd, bargs)
    checks = []
    for w in wrt:
        analytic = bargs["d" + w]
        size = analytic.size
        flat = np.arange(size) if size <= samples else rng.choice(size, samples, replace=False)
        numeric, steps = np.empty(len(flat)), np.empty(len(flat))

        def difference(at: tuple, h: float) -> tuple[float, bool]:
            """The central difference at ``at`` with step ``h``, and whether an output's
            one-sided differences disagree there (a kink, a relu or ``max``, inside the
            step)."""
            plus = {k: v.copy() for k, v in inputs.items()}
            minus = {k: v.copy() for k, v in inputs.items()}
            plus[w][at] += h
            minus[w][at] -= h
            yp, ym = outputs(plus), outputs(minus)
            # differences taken per output element, so the unaffected ones cancel exactly
            central = float(np.sum(dy * (yp - ym))) / (2 * h)
            a, b = yp - y0, y0 - ym
            noise = 64 * np.finfo(np.float64).eps * np.abs(y0)
            return central, bool(np.any(np.abs(a - b) > 0.1 * (np.abs(a) + np.abs(b)) + noise))

        for t, f in enumerate(flat):
            at = np.unravel_index(f, analytic.shape)
            if progress is not None:
                progress(f"d{w}[{', '.join(str(int(x)) for x in at)}] ({t + 1}/{len(flat)})")
            for h in (step, step / 10, step / 100, step / 1000):
                numeric[t], kink = difference(at, h)
                steps[t] = h
                if not kink:
                    break
        got = analytic.reshape(-1)[flat]
        # A central difference is off by about h^2 f''' / 6: relative to a small gradient of
        # a curved function (1 / (2 + x^4) near x = 0.1: 1.5e-6 at h = 1e-4) that is past
        # ``tol`` though the backward is right. Where the backward disagrees, the difference
        # is taken again with half the step and the two extrapolated (Richardson:
        # (4 D(h/2) - D(h)) / 3, off by h^4 terms only).
        scale = max(float(np.max(np.abs(numeric), initial=0.0)), float(np.max(np.abs(got), initial=0.0)))
        for t in np.flatnonzero(~(np.abs(got - numeric) <= tol * max(scale, ABS_FLOOR))):
            at = np.unravel_index(flat[t], analytic.shape)
            half, kink = difference(at, steps[t] / 2)
            if not kink:
                numeric[t] = (4 * half - numeric[t]) / 3
        diff = np.abs(got - numeric)
        diff = np.where(np.isnan(diff), np.inf, diff)
        k = int(np.argmax(diff))
        scale = max(float(np.max(np.abs(numeric), initial=0.0)), float(np.max(np.abs(got), initial=0.0)))
        rel = float(diff[k] / max(scale, ABS_FLOOR))
        checks.append(BufferCheck(w, rel, tuple(int(x) for x in np.unravel_index(flat[k], analytic.shape)),
                                  float(numeric[k]), float(got[k]), len(flat)))
    ok = all(c.rel_error <= tol for c in checks)
    return GradCheck(ok, tol, tuple(checks))


# ---------------------------------------------------------------------------
# float64


def widened(func: PrimFunc) -> PrimFunc:
    """``func`` with every float buffer, constant and cast in ``f64`` (casts between floats
    then vanish): the program's meaning without rounding, for checking derivatives."""
    def buf(b: Buffer) -> Buffer:
        return Buffer(b.name, "f64", b.shape) if ir.is_float(b.dtype) else b

    def expr(e: Expr) -> Expr:
        if isinstance(e, Const) and ir.is_float(e.dtype):
            return Const(e.value, "f64")
        if isinstance(e, Load):
            return Load(buf(e.buffer), tuple(expr(i) for i in e.indices))
        if isinstance(e, Cast):
            a = expr(e.a)
            if ir.is_float(e.dtype):
                return a if a.dtype == "f64" else Cast("f64", a)
            return Cast(e.dtype, a)
        kids = ir.children(e)
        return ir.with_children(e, tuple(expr(c) for c in kids)) if kids else e

    def stmt(s: Stmt) -> Stmt:
        if isinstance(s, (Store, Accumulate)):
            return type(s)(buf(s.buffer), tuple(expr(i) for i in s.indices), expr(s.value))
        if isinstance(s, For):
            return For(s.var, s.start, s.stop, stmt(s.body))
        if isinstance(s, Seq):
            return Seq(tuple(stmt(c) for c in s.stmts))
        if isinstance(s, If):
            return If(expr(s.cond), stmt(s.then), None if s.orelse is None else stmt(s.orelse))
        raise ValueError("gradcheck runs programs without intrinsic calls")

    return PrimFunc(func.name, tuple(buf(b) for b in func.params), stmt(func.body),
                    tuple(buf(b) for b in func.allocs), func.doc)
