"""Soundness of the program-level e-graph's rules (``tensorize rules --check``): random instances
of each rule's left side are lowered to loop programs as the ``matmul`` family lowers them
(``rules/matrices.py``), interpreted before and after the rewrite, and compared.

An instance gives each matrix of the rule a shape its left side allows (dims that ``@`` and
``+`` tie together get one size, 1 to 5), small integer entries and scalars that are binary
fractions, so that every sum and product is exact in float64: the two sides must then agree
exactly on any ring, and a difference is a wrong rule, never roundoff. Hypothesis draws the
instances and shrinks a counterexample to a small one::

    rule commute-mm is unsound: with a = [[0.0, 1.0]], b = [[0.0], [1.0]]:
      a @ b gives [[1.0]], b @ a gives [[0.0, 0.0], [0.0, 1.0]] (shape (2, 2), not (1, 1))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
from hypothesis import HealthCheck, find, settings
from hypothesis import strategies as st
from hypothesis.errors import NoSuchExample

from .. import interp, ir, program
from ..names import Names
from ..program import Input, ProgramRule, Sketch
from ..rules import matrices
from ..rules.matmul import Access

MAX_DIM = 5
SCALARS = (-2.0, -1.0, -0.5, 0.5, 1.0, 2.0, 3.0)


class _Dims:
    """Union-find over the dims of a rule's matrices: the sizes its left side ties together."""

    def __init__(self):
        self.parent: list[int] = []

    def new(self) -> int:
        self.parent.append(len(self.parent))
        return len(self.parent) - 1

    def find(self, d: int) -> int:
        while self.parent[d] != d:
            d = self.parent[d]
        return d

    def tie(self, a: int, b: int) -> None:
        self.parent[self.find(a)] = self.find(b)


class _Shape:
    """A matrix of a rule's side, by the dims of its rows and columns."""

    def __init__(self, dims: _Dims, rows: int, cols: int):
        self.dims, self.rows, self.cols = dims, rows, cols

    def __matmul__(self, other: "_Shape") -> "_Shape":
        self.dims.tie(self.cols, other.rows)
        return _Shape(self.dims, self.rows, other.cols)

    def __add__(self, other: "_Shape") -> "_Shape":
        self.dims.tie(self.rows, other.rows)
        self.dims.tie(self.cols, other.cols)
        return self

    def scaled(self, factor) -> "_Shape":
        return self

    def block(self, i, j) -> "_Shape":
        return _Shape(self.dims, self.dims.new(), self.dims.new())  # half of each: not tied

    def beside(self, other: "_Shape") -> "_Shape":
        self.dims.tie(self.rows, other.rows)
        return _Shape(self.dims, self.rows, self.dims.new())

    def above(self, other: "_Shape") -> "_Shape":
        self.dims.tie(self.cols, other.cols)
        return _Shape(self.dims, self.dims.new(), self.cols)

    def head_rows(self) -> "_Shape":
        return _Shape(self.dims, self.dims.new(), self.cols)  # one row fewer: not tied

    def last_row(self) -> "_Shape":
        return _Shape(self.dims, self.dims.new(), self.cols)

    def head_cols(self) -> "_Shape":
        return _Shape(self.dims, self.rows, self.dims.new())

    def last_col(self) -> "_Shape":
        return _Shape(self.dims, self.rows, self.dims.new())

    def strassen(self, *others: "_Shape") -> "_Shape":
        for o in others:
            self + o
        return _Shape(self.dims, self.dims.new(), self.dims.new())

    @property
    def T(self) -> "_Shape":
        return _Shape(self.dims, self.cols, self.rows)


@dataclass(frozen=True)
class Verdict:
    rule: Optional[ProgramRule]  # None for inline-temporary, which is no ProgramRule
    ok: bool
    examples: int
    message: str  # the counterexample, or what was checked


def _shapes(r: ProgramRule) -> tuple[_Dims, dict[str, tuple[int, int]]]:
    dims = _Dims()
    args, shapes = [], {}
    for name, kind in r.params:
        if kind == "matrix":
            s = _Shape(dims, dims.new(), dims.new())
            shapes[name] = (s.rows, s.cols)
            args.append(s)
        else:
            args.append(1.0)
    r.sides(*args)[0]  # the left side ties the dims; the right one is what is checked
    return dims, shapes


def _instances(r: ProgramRule):
    dims, shapes = _shapes(r)
    classes = sorted({dims.find(d) for pair in shapes.values() for d in pair})

    even = {dims.find(d) for name in r.even for d in shapes[name]}
    odd = {dims.find(shapes[name][0 if which == "rows" else 1]) for name, which in r.odd}
    even |= {dims.find(shapes[name][0 if which == "rows" else 1]) for name, which in r.also_even}

    @st.composite
    def draw(draw_):
        # an extent a rule halves is even: twice a drawn size; one it peels is odd, 3 or more
        size = {c: draw_(st.integers(1, MAX_DIM // 2 + 1)) * 2 if c in even else
                draw_(st.integers(1, MAX_DIM // 2)) * 2 + 1 if c in odd else
                draw_(st.integers(1, MAX_DIM)) for c in classes}
        values = {}
        for name, kind in r.params:
            if kind == "matrix":
                rows, cols = (size[dims.find(d)] for d in shapes[name])
                flat = draw_(st.lists(st.integers(-4, 4), min_size=rows * cols, max_size=rows * cols))
                values[name] = np.array(flat, dtype=np.float64).reshape(rows, cols)
            else:
                values[name] = draw_(st.sampled_from(SCALARS))
        return values

    return draw()


def _side(r: ProgramRule, values: dict, which: int):
    args = [Sketch(Input(n, *values[n].shape)) if kind == "matrix" else values[n] for n, kind in r.params]
    return r.sides(*args)[which].node


def evaluate(node, values: dict) -> np.ndarray:
    """``node`` lowered to a loop program (``matrices``' lowering) and interpreted on
    ``values`` (float64 matrices by input name). ``ValueError`` for a side that has no
    shape (a product of matrices that do not fit)."""
    arrays = {n: v for n, v in values.items() if isinstance(v, np.ndarray)}
    return run_lowered([("OUT", node)], arrays)["OUT"]


def run_lowered(accs: list, values: dict, temporaries: Optional[dict] = None) -> dict:
    """``accs`` (accumulations of terms into outputs that start at zero) lowered as the
    ``matmul`` family lowers an extracted program and interpreted on ``values``: the outputs
    but the temporaries. A temporary of ``temporaries`` (name -> shape) with an accumulation
    is zero-filled, then written; one read without it is ``matrices.Unlowerable``."""
    def whole(name: str, shape: tuple) -> Access:
        return Access(ir.Buffer(name, "f64", shape), (("_r", 0), ("_c", 0)))

    inputs = {n: whole(n, v.shape) for n, v in values.items()}
    sinks = {}
    for name, node in accs:
        rows, cols = program.shape(node)
        sinks[name] = (whole(name, (rows, cols)), rows, cols)
    temps = {t: whole(t, shape) for t, shape in (temporaries or {}).items()}
    lifted = matrices.Lifted(0, 0, [], sinks, {n: (a, None, None) for n, a in inputs.items()},
                             [], [], [], "f64", temps)
    low = matrices._Lowering(lifted, Names(list(inputs) + list(sinks)), matrices._product_uses(accs))
    for name, node in accs:
        access, rows, cols = sinks[name]
        low.accumulate(low.keep(name) if name in temps else access, rows, cols, node)
    body = ir.seq(*(p.stmt() if hasattr(p, "stmt") else p for p in low.items))
    outs = [sinks[n][0].buffer for n in sinks if n not in temps]
    func = ir.PrimFunc("program", tuple(a.buffer for a in inputs.values()) + tuple(outs), body,
                       tuple(low.allocs) + tuple(a.buffer for a in temps.values()))
    zeros = {b.name: np.zeros(b.shape) for b in outs}
    result = interp.run(func, **values, **zeros)
    return {b.name: result[b.name] for b in outs}


def _disagreement(r: ProgramRule, values: dict) -> Optional[str]:
    """What goes wrong on this instance, or None when the two sides agree."""
    lhs, rhs = _side(r, values, 0), _side(r, values, 1)
    try:
        before = evaluate(lhs, values)
    except ValueError:
        return None  # an instance the left side does not describe: the rule never sees it
    try:
        after = evaluate(rhs, values)
    except ValueError as e:
        return f"the right side has no value: {e}"
    if after.shape != before.shape:
        return (f"{program.text(lhs)} gives {before.tolist()}, {program.text(rhs)} gives "
                f"{after.tolist()} (shape {after.shape}, not {before.shape})")
    if not np.array_equal(before, after):
        worst = np.unravel_index(np.argmax(np.abs(before - after)), before.shape)
        return (f"{program.text(lhs)} gives {before.tolist()}, {program.text(rhs)} gives "
                f"{after.tolist()} (at {tuple(int(i) for i in worst)}: {before[worst]} against "
                f"{after[worst]})")
    return None


def check(r: ProgramRule, examples: int = 200) -> Verdict:
    """``r`` on ``examples`` random instances of its left side (derandomized: the same
    instances on every run); a failure shrinks to a small counterexample."""
    config = settings(max_examples=examples, database=None, derandomize=True, deadline=None,
                      suppress_health_check=list(HealthCheck), report_multiple_bugs=False)
    try:
        values = find(_instances(r), lambda v: _disagreement(r, v) is not None, settings=config)
    except NoSuchExample:
        return Verdict(r, True, examples, f"rule {r.name}: {examples} random instances agree")
    shown = ", ".join(f"{n} = {v.tolist() if isinstance(v, np.ndarray) else v}"
                      for n, v in values.items())
    return Verdict(r, False, examples, f"rule {r.name} is unsound: with {shown}:\n  "
                                       f"{_disagreement(r, values)}")


# ---------------------------------------------------------------------------
# inline-temporary: a rule over accumulations, conditioned on the fact temporary(T)

_FORMS = ("once", "twice", "transposed")


@st.composite
def _temporary_programs(draw):
    """``T += A @ B`` then its readers (``D += T @ C``; and ``D2 += T @ E``; or
    ``D += T.T @ F``), with small integer matrices: the accumulations and their inputs."""
    m, k, n, p = (draw(st.integers(1, MAX_DIM)) for _ in range(4))
    form = draw(st.sampled_from(_FORMS))
    shapes = {"A": (m, k), "B": (k, n), "C": (n, p)}
    if form == "twice":
        shapes["E"] = (n, p)
    if form == "transposed":
        shapes = {"A": (m, k), "B": (k, n), "F": (m, p)}
    values = {}
    for name, (rows, cols) in shapes.items():
        flat = draw(st.lists(st.integers(-4, 4), min_size=rows * cols, max_size=rows * cols))
        values[name] = np.array(flat, dtype=np.float64).reshape(rows, cols)
    leaf = {name: Input(name, *shape) for name, shape in shapes.items()}
    t = Input("T", m, n)
    accs = [("T", program.Op("@", (leaf["A"], leaf["B"])))]
    if form == "transposed":
        accs.append(("D", program.Op("@", (program.Op("T", (t,)), leaf["F"]))))
    else:
        accs.append(("D", program.Op("@", (t, leaf["C"]))))
    if form == "twice":
        accs.append(("D2", program.Op("@", (t, leaf["E"]))))
    return accs, values


def _put(node, name: str, value):
    """``node`` with the input ``name`` read as ``value``."""
    if isinstance(node, Input):
        return value if node.name == name else node
    return program.Op(node.kind, tuple(_put(a, name, value) for a in node.args), node.factor,
                      node.at)


def _inline_disagreement(accs: list, values: dict) -> Optional[str]:
    (t, v), rest = accs[0], accs[1:]
    expected = [(name, _put(node, t, v)) for name, node in rest]
    if not program.inlines_to(accs, [t], expected):
        return (f"the rule does not give {program.accumulations_text(expected)} for "
                f"{program.accumulations_text(accs)}")
    # the program extraction takes from the saturated e-graph (the inlined one: fewer nodes
    # at the same products), lowered as the family lowers it
    (chosen, _) = program.cheapest(accs, [], matrices.multiply_adds, temporaries=[t])
    shape = {t: program.shape(v)}
    kept = run_lowered(accs, values, shape)
    for how, program_ in (("inlined", expected), ("extracted", chosen)):
        try:
            got = run_lowered(program_, values, shape)
        except matrices.Unlowerable as e:
            return f"the {how} program {program.accumulations_text(program_)}: {e}"
        for name in kept:
            if not np.array_equal(kept[name], got[name]):
                return (f"{name} is {kept[name].tolist()} with {t} written, {got[name].tolist()} "
                        f"in the {how} program")
    return None


def check_inline(examples: int = 200) -> Verdict:
    """``inline-temporary`` on ``examples`` random programs of a temporary and its readers: the
    e-graph must reach the program with the temporary's value read in its place, and that
    program, lowered and interpreted, must give the outputs the program writing it gives."""
    config = settings(max_examples=examples, database=None, derandomize=True, deadline=None,
                      suppress_health_check=list(HealthCheck), report_multiple_bugs=False)
    try:
        accs, values = find(_temporary_programs(), lambda x: _inline_disagreement(*x) is not None,
                            settings=config)
    except NoSuchExample:
        return Verdict(None, True, examples,
                       f"rule {program.INLINE}: {examples} random instances agree")
    shown = ", ".join(f"{n} = {v.tolist()}" for n, v in values.items())
    return Verdict(None, False, examples, f"rule {program.INLINE} is unsound: with {shown}:\n  "
                                          f"{_inline_disagreement(accs, values)}")
