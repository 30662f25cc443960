"""Reverse-mode automatic differentiation of loop programs: ``grad(func, wrt=[...])``.

(The module is not named ``grad``, so that ``rewrite.grad`` stays the function.)

The backward program is an ordinary ``PrimFunc`` named ``<name>_grad``. Its parameters are,
in order: the forward's parameters it reads (same names and shapes; forward outputs hold the
forward's results), the adjoint of the output ``d<output>``, and one gradient ``d<A>`` per
``wrt`` buffer, which it overwrites (SPEC §4)::

    C[i, j] = 0.0                              dA[i, k] = 0.0
    for k in range(K):                  ->     for j in range(N):
        C[i, j] += A[i, k] * B[k, j]               dA[i, k] += dC[i, j] * B[k, j]

A ``wrt`` buffer the forward also writes (PolyBench's ``data``, centred in place; ``C`` in
``C = beta C + alpha A B``) is differentiated with respect to its value on entry, which its
parameter in the backward then holds (not the forward's result; ``updated_in_place`` names
the outputs whose entry values matter). When it is the output itself, ``d<output>`` is one
parameter: the adjoint of the result comes in, the gradient with respect to the value on
entry goes out.

How it is derived:

- The forward is cut into nests, one statement each, distributing loops where every
  iteration touches its own elements of each buffer the loop writes (a row of a softmax, a
  pixel of a convolution). An outermost loop whose statements depend on each other across
  iterations (an RNN's time loop) is a recurrence: its nests are differentiated inside one
  loop that runs backwards in time. Where the loops cannot be cut so (a temporary every
  iteration reuses, a recurrence nested in another), the forward is taken as the pipeline
  normalises it (``normalised``: distributed in dependence order, the temporary expanded,
  reads of a buffer its own nest updates taken from a copy), which computes the same values;
  and where that does not help either, its loops are reversed whole, each statement's
  adjoint in its place, reading final values where the dependence analysis finds that no
  later statement overwrites them (``_reversed_whole``: lu, cholesky, trisolv).
- Nests are differentiated in reverse order. A statement's value is differentiated by the
  chain rule on its expression tree; ``max(a, b)`` and ``min`` send the adjoint to ``a`` on a
  tie, so a running maximum sends it to the FIRST maximal element (the first in the
  loops' order; the starting value counts as before every element); ``abs`` at 0 has
  derivative 1; ``select(c, a, b)`` sends it to the arm it took.
- The adjoint of a read ``A[f(i)]`` (placed by ``rewrite/gathers.py``) is a gather wherever
  the index map can be solved over the integers: the loops that produce the gradient's index are its outer loops, the others
  reductions (``dA[i, k] = 0; for j: dA[i, k] += ...``). A window ``h + rh`` (strided
  ``2 * h + rh``, dilated ``h + 2 * rh``) is solved for ``h`` by reading the output's adjoint
  through a copy padded (and, for a stride, spread out with zeros) so every read is in
  bounds: the transposed convolution. Where no such form exists (``//`` and ``%`` in an
  index, a variable in two dimensions, a stride on a lone variable) the adjoint keeps the
  forward's loops and scatters, which needs no condition.
- Sums over a reduction loop pass the adjoint through; running maxima and minima use a flag
  per element to find the first maximal one; other in-place updates (``B[i, j] = B[i, j] /
  S[i]``) scale the adjoint; a recurrence that reads elements it wrote in earlier iterations
  (a scan) is differentiated with its loops reversed, backwards in time.
- Values of the forward that the backward reads are taken from its parameters where they
  hold them; temporaries, and values later overwritten, are computed again at the start of
  the backward program by running the nests that produce them ("keep": each is stored once
  and read by every adjoint that needs it). The backward's docstring says which.

Refused with ``ScriptError`` (at the statement, ``file:line:col`` when it was parsed from a
file): a function without float parameters, gradients of integer buffers or of an integer
output, ``//`` and ``%`` in values on the path from the inputs to the output, casts from
floats to integers there, reductions by a product, and an adjoint that needs a value the
backward cannot have: an output's contents on entry that it is not differentiated with
respect to (the message says so: offered as ``wrt``, its parameter holds them), or, inside a
recurrence, a value a later statement overwrites (``x = x * y`` in place: ``y``'s partial is
the ``x`` overwritten). Of several attempts' reasons, the one given is a missing value on
entry, else a reason at a statement, else the recurrence's or the loops' form.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterable, Optional, Sequence

from . import ir
from .affine import Affine, affine
from .ir import (Accumulate, Binary, Buffer, Cast, Compare, Const, Expr, For, If,
                 Load, Logical, PrimFunc, Select, Seq, Stmt, Store, Unary, Var)
from .gathers import build_nest as _build_nest, copy_of as _copy, fconst as _fc, fill as _fill
from .gathers import compose_copies as _compose_copies, i64 as _i, place, trim_padding as _trim_padding
from .names import Names
from .script import ScriptError
from .verify import verify

__all__ = ["grad", "normalised", "updated_in_place"]


# ---------------------------------------------------------------------------
# errors


class _Refuse(Exception):
    """``kind``: ``structure`` where the loops could not be cut into nests, ``recurrence``
    where a recurrence's form is beyond the nest-wise derivation, ``entry`` where a value on
    entry is missing (the caller can offer it), ``final`` where no other form of the forward
    can help (a value without a derivative), else None (a reason at the statement)."""

    def __init__(self, message: str, stmt: object = None, kind: Optional[str] = None):
        super().__init__(message)
        self.message, self.stmt, self.kind = message, stmt, kind


def _script_error(func: PrimFunc, e: _Refuse) -> ScriptError:
    where = func.locate(e.stmt) if e.stmt is not None else None
    if where is None and func.locations:  # the function's first statement stands for it
        where = func.locations[0][1:]
    file, line, col = where if where is not None else (f"<{func.name}>", 0, 0)
    err = ScriptError(file, line, col, f"cannot differentiate {func.name}: {e.message}")
    err.name = func.name
    return err


# ---------------------------------------------------------------------------
# expressions


def _is(e: Expr, x: float) -> bool:
    return isinstance(e, Const) and e.value == x


def _mul(a: Expr, b: Expr) -> Expr:
    if _is(a, 1.0):
        return b
    if _is(b, 1.0):
        return a
    if _is(a, -1.0):
        return _neg(b)
    if _is(b, -1.0):
        return _neg(a)
    return Binary("*", a, b)


def _neg(a: Expr) -> Expr:
    if isinstance(a, Unary) and a.op == "neg":
        return a.a
    if isinstance(a, Const):
        return Const(-a.value, a.dtype)
    return Unary("neg", a)


def _add(a: Optional[Expr], b: Expr) -> Expr:
    if a is None:
        return b
    if isinstance(b, Unary) and b.op == "neg":
        return Binary("-", a, b.a)
    return Binary("+", a, b)


def _float_loads(e: Expr) -> list[Load]:
    return [x for x in ir.loads_of(e) if ir.is_float(x.dtype)]


def _nondiff(e: Expr) -> Optional[str]:
    """Why a value on the differentiation path has no derivative, or None."""
    for x in ir.walk_expr(e):
        if isinstance(x, Binary) and x.op in ("//", "%") and not _in_index(e, x):
            return f"'{x.op}' in a value has no derivative"
        if isinstance(x, Cast) and ir.is_int(x.dtype) and ir.is_float(x.a.dtype):
            return f"a cast from {x.a.dtype} to {x.dtype} has no derivative"
    return None


def _in_index(root: Expr, node: Expr) -> bool:
    for x in ir.walk_expr(root):
        if isinstance(x, Load) and any(node is y for i in x.indices for y in ir.walk_expr(i)):
            return True
    return False


def _partials(e: Expr, seed: Expr, out: dict[Load, Expr]) -> None:
    """Add ``seed * d e / d L`` to ``out[L]`` for every float load ``L`` in ``e``."""
    if isinstance(e, Load):
        if ir.is_float(e.dtype):
            out[e] = seed if e not in out else Binary("+", out[e], seed)
        return
    if not ir.is_float(e.dtype) or isinstance(e, (Const, Var)):
        return
    dt = e.dtype
    zero = _fc(0.0, dt)
    if isinstance(e, Binary):
        a, b = e.a, e.b
        if e.op == "+":
            _partials(a, seed, out), _partials(b, seed, out)
        elif e.op == "-":
            _partials(a, seed, out), _partials(b, _neg(seed), out)
        elif e.op == "*":
            _partials(a, _mul(seed, b), out), _partials(b, _mul(seed, a), out)
        elif e.op == "/":
            _partials(a, Binary("/", seed, b), out)
            _partials(b, Binary("/", _neg(_mul(seed, a)), Binary("*", b, b)), out)
        elif e.op in ("max", "min"):
            first = Compare(">=" if e.op == "max" else "<=", a, b)  # ties go to the left
            _partials(a, Select(first, seed, zero), out)
            _partials(b, Select(first, zero, seed), out)
        else:
            raise _Refuse(f"'{e.op}' in a value has no derivative", kind="final")
    elif isinstance(e, Unary):
        if e.op == "neg":
            _partials(e.a, _neg(seed), out)
        elif e.op == "abs":
            _partials(e.a, Select(Compare("<", e.a, zero), _neg(seed), seed), out)
        elif e.op == "exp":
            _partials(e.a, _mul(seed, e), out)
        elif e.op == "sqrt":
            _partials(e.a, Binary("/", seed, Binary("*", _fc(2.0, dt), e)), out)
    elif isinstance(e, Cast):
        if ir.is_float(e.a.dtype):
            _partials(e.a, seed if e.a.dtype == dt else Cast(e.a.dtype, seed), out)
    elif isinstance(e, Select):
        _partials(e.a, Select(e.cond, seed, zero), out)
        _partials(e.b, Select(e.cond, zero, seed), out)


# ---------------------------------------------------------------------------
# nests


@dataclass(frozen=True)
class _Nest:
    """One statement with the loops and conditions around it, outermost first."""

    loops: tuple[tuple[str, int, int], ...]
    conds: tuple[Expr, ...]
    stmt: Stmt          # the Store or Accumulate as written (for its location)
    buffer: Buffer
    index: tuple[Expr, ...]
    value: Expr         # the stored value: ``B[j] += v`` reads as ``B[j] = B[j] + v``
    region: Optional["_Region"] = None  # the recurrence around it, if any

    @property
    def vars(self) -> tuple[str, ...]:
        return tuple(v for v, _, _ in self.loops)

    def span(self, var: str) -> Optional[tuple[int, int]]:
        for v, lo, hi in self.loops:
            if v == var:
                return lo, hi - 1
        return None


@dataclass(frozen=True)
class _Region:
    """A loop whose statements depend on each other across iterations (an RNN's time loop):
    its nests are differentiated inside one loop that runs backwards in time."""

    first: int          # the index of its first nest
    loop: For

    @property
    def var(self) -> str:
        return self.loop.var


def _accesses(s: Stmt) -> Iterable[tuple[Buffer, tuple[Expr, ...]]]:
    for x in ir.walk_stmts(s):
        if isinstance(x, (Store, Accumulate)):
            yield x.buffer, x.indices
        for e in ir.stmt_exprs(x):
            for ld in ir.loads_of(e):
                yield ld.buffer, ld.indices


def _distributable(loop: For) -> bool:
    """Each iteration of ``loop`` touches its own elements of every buffer its body writes:
    some dimension is indexed alike by every access, with ``loop``'s variable outweighing
    what the loops inside it add."""
    spans = {s.var: (s.start, s.stop - 1) for s in ir.walk_stmts(loop.body) if isinstance(s, For)}
    inner = set(spans) | {loop.var}
    by_buffer: dict[str, list[tuple[Expr, ...]]] = {}
    owners: dict[str, set[int]] = {}
    writes: dict[str, list[tuple[Expr, ...]]] = {}
    for k, (leaf, _) in enumerate(ir.walk_in_loops(loop.body)):
        for b, idx in _accesses(leaf):
            by_buffer.setdefault(b.name, []).append(idx)
            owners.setdefault(b.name, set()).add(k)
        if isinstance(leaf, (Store, Accumulate)):
            writes.setdefault(leaf.buffer.name, []).append(leaf.indices)

    def elsewhere(idx: tuple[Expr, ...], name: str) -> bool:
        """A read of a slice no write in the loop touches (``H[t, j]`` while ``H[t + 1, i]``
        is written inside a loop over ``i``)."""
        return all(any(_apart(w, r, inner) for w, r in zip(widx, idx)) for widx in writes[name])

    for name in ir.written_by(loop.body):
        if len(owners[name]) == 1:  # one statement alone touches it: its order is kept
            continue
        idxs = [ix for ix in by_buffer[name] if ix in writes[name] or not elsewhere(ix, name)]
        ok = False
        for d in range(len(idxs[0])):
            if any(ix[d] != idxs[0][d] for ix in idxs):
                continue
            a = affine(idxs[0][d])
            if a is None or a.coeff(loop.var) == 0:
                continue
            # loops outside this one are fixed during an iteration: only inner ones spread
            rest = Affine(tuple(t for t in a.terms if t[0] in spans), 0).bounds(spans.get)
            if rest is not None and rest[1] - rest[0] < abs(a.coeff(loop.var)):
                ok = True
                break
        if not ok:
            return False
    return True


def _apart(w: Expr, r: Expr, moving: set[str]) -> bool:
    """Indices that differ by a nonzero constant and move with none of ``moving``."""
    a, b = affine(w), affine(r)
    if a is None or b is None or any(v in moving for v in a.vars + b.vars):
        return False
    d = a.plus(b.scale(-1))
    return not d.terms and d.const != 0


def _flatten(s: Stmt, loops: tuple, conds: tuple, out: list[_Nest], region=None) -> None:
    if isinstance(s, Seq):
        for c in s.stmts:
            _flatten(c, loops, conds, out, region)
    elif isinstance(s, For):
        if sum(not isinstance(x, If) for x, _ in ir.walk_in_loops(s.body)) > 1 and not _distributable(s):
            if region is not None or loops or conds:
                raise _Refuse(f"the statements in loop {s.var} depend on each other across its "
                              "iterations (a temporary reused by every iteration, or a recurrence "
                              "over several statements that is not the outermost loop)", s, "structure")
            # a recurrence over several statements: its iterations are reversed as a whole
            _flatten(s.body, (), (), out, _Region(len(out), s))
            return
        _flatten(s.body, loops + ((s.var, s.start, s.stop),), conds, out, region)
    elif isinstance(s, If):
        _flatten(s.then, loops, conds + (s.cond,), out, region)
        if s.orelse is not None:
            _flatten(s.orelse, loops, conds + (Unary("not", s.cond),), out, region)
    elif isinstance(s, Store):
        out.append(_Nest(loops, conds, s, s.buffer, s.indices, s.value, region))
    elif isinstance(s, Accumulate):
        out.append(_Nest(loops, conds, s, s.buffer, s.indices,
                         Binary("+", Load(s.buffer, s.indices), s.value), region))
    else:
        raise _Refuse("an intrinsic call has no derivative here: differentiate the program "
                      "before tensorizing it", s, "final")


def _one_to_one(index: Sequence[Affine], spans: dict) -> bool:
    """Distinct loop iterations write distinct elements (a mixed-radix test per dimension;
    a dimension of variables already seen adds nothing to tell apart, ``A[i, i]``)."""
    seen: set[str] = set()
    for a in index:
        if a.terms and all(v in seen for v, _ in a.terms):
            continue
        width = 0
        for v, c in sorted(a.terms, key=lambda t: abs(t[1])):
            if v in seen or v not in spans:
                return False
            seen.add(v)
            if abs(c) <= width:
                return False
            width += abs(c) * (spans[v][1] - spans[v][0])
    return True


def _box(nest: _Nest) -> Optional[list[tuple[int, int]]]:
    out = []
    for e in nest.index:
        a = affine(e)
        r = None if a is None else a.bounds(nest.span)
        if r is None:
            return None
        out.append(r)
    return out


def _overlap(a: _Nest, b: _Nest) -> bool:
    x, y = _box(a), _box(b)
    if x is None or y is None:
        return True
    return all(lo1 <= hi2 and lo2 <= hi1 for (lo1, hi1), (lo2, hi2) in zip(x, y))


# ---------------------------------------------------------------------------
# the derivation


@dataclass
class _Contribution:
    target: str                 # the forward buffer whose adjoint receives it
    index: tuple[Expr, ...]
    value: Expr
    nest: _Nest


@dataclass
class _State:
    func: PrimFunc
    nests: list[_Nest]
    names: Names
    out: Buffer
    active: set[str]
    relevant: set[str]
    adj: dict[str, Buffer] = field(default_factory=dict)
    needs: set[tuple[str, int]] = field(default_factory=set)
    sites: dict[tuple[str, int], int] = field(default_factory=dict)  # the first nest reading each
    entry: set[str] = field(default_factory=set)  # wrt buffers it writes: their values on entry
    reads: dict[tuple[str, int], int] = field(default_factory=dict)  # instances reading each
    recomputed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    extra_allocs: list[Buffer] = field(default_factory=list)


def grad(func: PrimFunc, wrt: Sequence[str], output: Optional[str] = None) -> PrimFunc:
    """The backward program of ``func`` for the gradients of ``wrt`` (see the module doc).

    ``output`` names the output to differentiate when ``func`` writes several. Bad names raise
    ``ValueError``; what cannot be differentiated raises ``ScriptError`` at the statement."""
    try:
        return _grad(func, list(wrt), output)
    except _Refuse as e:
        raise _script_error(func, e) from None


def _grad(func: PrimFunc, wrt: list[str], output: Optional[str]) -> PrimFunc:
    params = {b.name: b for b in func.params}
    if not wrt:
        if not any(ir.is_float(b.dtype) for b in func.params):
            kinds = ", ".join(dict.fromkeys(b.dtype for b in func.params))
            raise _Refuse(f"it has no float input to differentiate with respect to (its "
                          f"parameters are {kinds})")
        raise ValueError("name at least one buffer to differentiate with respect to (wrt)")
    for w in wrt:
        if w not in params:
            raise ValueError(f"{w} is not a parameter of {func.name} "
                             f"(parameters: {', '.join(params)})")
    if len(set(wrt)) != len(wrt):
        raise ValueError("a wrt buffer is named twice")
    outs = func.outputs
    if output is None:
        if len(outs) != 1:
            raise ValueError(f"{func.name} writes {', '.join(b.name for b in outs)}: "
                             "choose one with output=")
        out = outs[0]
    elif output not in params or params[output] not in outs:
        raise ValueError(f"{output} is not an output of {func.name} "
                         f"(outputs: {', '.join(b.name for b in outs)})")
    else:
        out = params[output]
    for w in wrt:
        b = params[w]
        if not ir.is_float(b.dtype):
            raise _Refuse(f"{w} is {b.dtype}: an integer buffer has no gradient")
    if not ir.is_float(out.dtype):
        raise _Refuse(f"its output {out.name} is {out.dtype}: an integer program has no derivative")
    taken = {b.name for b in func.buffers}
    for name in [out.name] + wrt:
        if "d" + name in taken:
            raise ValueError(f"the adjoint of {name} is named d{name}, which {func.name} already uses")

    # as written; else as the pipeline normalises it; else its loops reversed whole
    refusals: list[_Refuse] = []
    try:
        return _derive(func, wrt, out)
    except _Refuse as e:
        if e.kind == "final":
            raise
        refusals.append(e)
    prepared = normalised(func)
    if prepared is not None:
        try:
            return _derive(prepared, wrt, out, prepared=True)
        except _Refuse as e:
            e.stmt = _original(func, e.stmt)
            refusals.append(e)
    try:
        return _reversed_whole(func, wrt, out)
    except _Refuse as e:
        refusals.append(e)
    # the most telling reason: a value on entry the caller can offer, else a reason at a
    # statement (the earliest attempt's), else a recurrence's form, else the loops' structure
    rank = {"entry": 0, None: 1, "recurrence": 2, "structure": 3}
    raise min(refusals, key=lambda e: rank[e.kind]) from None


def _original(func: PrimFunc, stmt: object) -> object:
    """The statement of ``func`` as parsed that a statement of its normalised form comes from
    (the same store or loop, its form aside), so that a refusal points into the source."""
    if stmt is None or func.locate(stmt) is not None:
        return stmt
    located = [s for s, *_ in func.locations]
    if isinstance(stmt, For):
        return next((s for s in located if isinstance(s, For) and s.var == stmt.var), stmt)
    if isinstance(stmt, (Store, Accumulate)):
        for same in (lambda s: type(s) is type(stmt) and s.buffer.name == stmt.buffer.name and s.indices == stmt.indices,
                     lambda s: s.buffer.name == stmt.buffer.name and s.indices == stmt.indices,
                     lambda s: s.value == stmt.value,  # a temporary expanded (sum -> sumx)
                     lambda s: s.buffer.name == stmt.buffer.name):
            got = next((s for s in located if isinstance(s, (Store, Accumulate)) and same(s)), None)
            if got is not None:
                return got
    return stmt


def _derive(func: PrimFunc, wrt: list[str], out: Buffer, prepared: bool = False) -> PrimFunc:
    nests: list[_Nest] = []
    _flatten(func.body, (), (), nests)
    names = Names.of(func)
    for name in [out.name] + wrt:
        names.reserve("d" + name)
    st = _State(func, nests, names, out, *_flow(nests, set(wrt), out.name))
    written = ir.written_by(func.body)
    st.entry = {w for w in wrt if w in written}
    if prepared:
        st.notes.append("Derived from the forward as the pipeline normalises it (loops "
                        "distributed in dependence order, reused temporaries expanded, reads "
                        "of a buffer its nest updates taken from a copy), which computes the "
                        "same values.")
    _differentiable(st)
    return _assemble(st, wrt)


def _differentiable(st: _State) -> None:
    """Refuse a statement between the inputs and the output without a derivative."""
    for n in st.nests:
        if n.buffer.name in st.relevant and any(l.buffer.name in st.active for l in _float_loads(n.value)):
            if not ir.is_float(n.buffer.dtype):
                raise _Refuse(f"{n.buffer.name} is {n.buffer.dtype}: integer values between the "
                              "inputs and the output have no derivative", n.stmt, "final")
            why = _nondiff(n.value)
            if why:
                raise _Refuse(why, n.stmt, "final")


def updated_in_place(func: PrimFunc) -> tuple[Buffer, ...]:
    """The outputs of ``func`` whose values on entry its results depend on: a statement reads
    them before any writes them, or not every element is overwritten. (The others are written
    before they are read, so their gradients would be zero.) These, with the inputs, are what
    ``grad`` may differentiate with respect to."""
    nests = _nests_of(func)
    if nests is None:  # any output it reads
        read = {ld.buffer.name for s in ir.walk_stmts(func.body) for e in ir.stmt_exprs(s)
                for ld in ir.loads_of(e)}
        return tuple(b for b in func.outputs if b.name in read)
    st = _State(func, nests, Names.of(func), func.params[0], set(), set())
    out = []
    for b in func.outputs:
        mine = _writers(st, b.name)
        early = any(_state_at(st, b.name, m, False) == 0 and any(
            ld.buffer.name == b.name for e in (n.value,) + n.index + n.conds for ld in ir.loads_of(e))
            for m, n in enumerate(nests))
        if early or not _covers(st, b.name, mine):
            out.append(b)
    return tuple(out)


def _nests_of(func: PrimFunc) -> Optional[list[_Nest]]:
    """``func``'s nests, as written or else as the pipeline normalises it; None if neither."""
    for attempt in (lambda: func, lambda: normalised(func)):
        g = attempt()
        if g is None:
            continue
        nests: list[_Nest] = []
        try:
            _flatten(g.body, (), (), nests)
            return nests
        except _Refuse:
            continue
    return None


def normalised(func: PrimFunc) -> Optional[PrimFunc]:
    """``func`` as the pipeline normalises it, for a forward whose loops cannot be cut into
    nests as written: distributed in dependence order (``nests.normalize``), each temporary
    that every iteration reuses given one copy per iteration (``rules/expand.py``), and a
    nest that reads other elements of the buffer it writes, none of them a value it wrote,
    reading them from a copy taken before it (``rules/snapshot.py``, stores included). Each
    step computes the same values (the rules' own soundness arguments), so the derivative
    is the same; None when nothing changes, or when the dependence analysis would exceed its
    budget."""
    from . import nests as acc_nests
    from .budgets import BudgetError
    from .rules import expand, snapshot

    try:
        g = acc_nests.normalize(func)
        names = Names.of(g)
        g = expand.expand(g, names) or g
    except BudgetError:
        return None
    top: list[Stmt] = []
    allocs = list(g.allocs)
    for s in ir.stmts_of(g.body):
        leaf = next((x for x in ir.walk_stmts(s) if isinstance(x, (Store, Accumulate))), None)
        elsewhere = isinstance(s, For) and leaf is not None and any(
            ld.buffer.name == leaf.buffer.name and ld.indices != leaf.indices
            for ld in ir.loads_of(leaf.value))
        try:
            got = snapshot.snapshot(s, names, stores=True) if elsewhere else None
        except BudgetError:
            got = None
        if got is None:
            top.append(s)
            continue
        fill, nest = got
        allocs += [x.buffer for x in ir.walk_stmts(fill) if isinstance(x, Store)]
        top += [fill, nest.stmt() if isinstance(nest, acc_nests.AccNest) else nest]
    g = replace(g, body=ir.seq(*top), allocs=tuple(allocs))
    return None if g == func else g


def _flow(nests: list[_Nest], wrt: set[str], out: str) -> tuple[set[str], set[str]]:
    """Buffers that depend on ``wrt`` (active) and buffers the output depends on (relevant)."""
    active = set(wrt)
    changed = True
    while changed:
        changed = False
        for n in nests:
            if n.buffer.name not in active and any(l.buffer.name in active for l in _float_loads(n.value)):
                active.add(n.buffer.name)
                changed = True
    relevant = {out}
    changed = True
    while changed:
        changed = False
        for n in reversed(nests):
            if n.buffer.name in relevant:
                for l in _float_loads(n.value):
                    if l.buffer.name not in relevant:
                        relevant.add(l.buffer.name)
                        changed = True
    return active, relevant


def _writers(st: _State, name: str) -> list[int]:
    return [k for k, n in enumerate(st.nests) if n.buffer.name == name]


def _state_at(st: _State, name: str, k: int, after: bool) -> int:
    """How many nests have written ``name`` before nest ``k`` (or up to it, ``after``)."""
    return sum(1 for m in _writers(st, name) if m < k or (after and m == k))


def _live(st: _State, n: _Nest) -> bool:
    """Nest ``n``'s adjoint sends something towards a ``wrt`` buffer."""
    return n.buffer.name in st.relevant and any(
        l.buffer.name in st.active and l.buffer.name in st.relevant for l in _float_loads(n.value))


def _adj(st: _State, name: str) -> Buffer:
    return st.adj[name]


def _primal(st: _State, e: Expr, k: int, self_after: bool, site: Optional[int] = None) -> Expr:
    """``e`` with its loads marked by the state of the forward they read (as nest ``k`` saw
    it); ``_Versioned`` loads are resolved once every need is known. ``site``: the nest whose
    adjoint needs them (``k``'s own unless given)."""
    me = st.nests[k].buffer.name

    def mark(ld: Load) -> Expr:
        if _VBuf.parse(ld.buffer) is not None:
            return ld
        idx = tuple(_primal(st, i, k, self_after, site) for i in ld.indices)
        region = st.nests[k].region
        inside = [m for m, x in enumerate(st.nests) if x.region is region] if region else []
        if region is not None and any(st.nests[m].buffer.name == ld.buffer.name for m in inside):
            # written once per element by the recurrence: final once it has run
            s = _state_at(st, ld.buffer.name, inside[-1], True)
        else:
            s = _state_at(st, ld.buffer.name, k, self_after and ld.buffer.name == me)
        st.needs.add((ld.buffer.name, s))
        st.sites.setdefault((ld.buffer.name, s), k if site is None else site)
        trips = 1
        for _, lo, hi in st.nests[k].loops:
            trips *= hi - lo
        st.reads[(ld.buffer.name, s)] = st.reads.get((ld.buffer.name, s), 0) + trips
        return Load(_VBuf.of(ld.buffer, s), idx)

    return ir.map_loads(e, mark)


class _VBuf:
    """A forward buffer at one state, spelt as a buffer name until resolved."""

    @staticmethod
    def of(b: Buffer, s: int) -> Buffer:
        return Buffer(f"\x00{b.name}\x00{s}", b.dtype, b.shape)

    @staticmethod
    def parse(b: Buffer) -> Optional[tuple[str, int]]:
        if not b.name.startswith("\x00"):
            return None
        _, name, s = b.name.split("\x00")
        return name, int(s)


def _assemble(st: _State, wrt: list[str]) -> PrimFunc:
    func, out = st.func, st.out
    nests = st.nests
    # adjoint buffers: the output's is the seed parameter, wrt's are the results
    order = [b.name for b in func.buffers]
    for name in sorted(st.active & st.relevant | {out.name} | set(wrt), key=order.index):
        b = func.buffer(name)
        if name == out.name or name in wrt:
            st.adj[name] = Buffer("d" + name, b.dtype, b.shape)
        else:
            st.adj[name] = Buffer(st.names.fresh("d" + name), b.dtype, b.shape)
    sweep: list[Stmt] = []
    contributions: list[_Contribution] = []
    writes_seed = False
    k = len(nests) - 1
    while k >= 0:
        n = nests[k]
        if n.region is not None:  # a recurrence: its adjoint, in one loop backwards in time
            group = [m for m in range(k + 1) if nests[m].region is n.region]
            body: list[Stmt] = []
            for m in reversed(group):
                if not _live(st, nests[m]) and not (nests[m].buffer.name in st.adj and _needs_kill(st, m)):
                    continue
                stmts, _, _ = _adjoint_of(st, m)
                body.extend(_place(st, x, False, windows=False)[0] if isinstance(x, _Contribution)
                            else x for x in stmts)
            if body:
                loop = n.region.loop
                rev = {loop.var: Binary("-", _i(loop.start + loop.stop - 1), Var(loop.var))}
                sweep.append(For(loop.var, loop.start, loop.stop,
                                 ir.substitute_stmt(ir.seq(*body), rev)))
                st.notes.append(f"the recurrence over loop {loop.var}: differentiated "
                                "backwards in time.")
            k = group[0] - 1
            continue
        k -= 1
        if not _live(st, n) and not (n.buffer.name in st.adj and _needs_kill(st, k + 1)):
            continue
        stmts, contribs, wrote = _adjoint_of(st, k + 1)
        sweep.extend(stmts)
        contributions.extend(contribs)
        writes_seed = writes_seed or wrote
    # contributions: gathers where the index map can be solved, else scatters
    per_target: dict[str, int] = {out.name: 2}  # the seed holds the output's adjoint already
    for c in contributions:
        per_target[c.target] = per_target.get(c.target, 0) + 1
    for item in sweep:
        if not isinstance(item, _Contribution):
            for name, b in st.adj.items():
                if b.name in ir.written_by(item):
                    per_target[name] = per_target.get(name, 0) + 2
    fused: set[str] = set()
    body_adjoint: list[Stmt] = []
    for item in sweep:
        if isinstance(item, _Contribution):
            stmt, full = _place(st, item, per_target[item.target] == 1)
            if full:
                fused.add(item.target)
            body_adjoint.append(stmt)
        else:
            body_adjoint.append(item)
    # the output's adjoint, copied where the sweep writes it
    seed = st.adj[out.name]
    work = None
    if out.name not in wrt and any(seed.name in ir.written_by(s) for s in body_adjoint):
        work = Buffer(st.names.fresh("d" + out.name + "_acc"), seed.dtype, seed.shape)
        body_adjoint = [_rename_stmt(s, {seed.name: work}) for s in body_adjoint]
    inits: list[Stmt] = []
    allocs: list[Buffer] = []
    for name, b in st.adj.items():
        if name == out.name:
            continue
        if name not in wrt:
            allocs.append(b)
        if name not in fused:
            inits.append(_fill(b, _fc(0.0, b.dtype), st.names))
    if work is not None:
        allocs.append(work)
        inits.insert(0, _copy(work, seed, st.names))
    # the forward values the adjoints read
    replay, resolve, kept_allocs = _replay(st)
    allocs = kept_allocs + allocs
    body_adjoint = [_resolve_stmt(s, resolve) for s in body_adjoint]
    body = replay + inits + body_adjoint
    # gathers written straight into the copies that read them, padded copies cut to what
    # is read (the data gradient through a padding stage: rewrite/gathers.py)
    body, allocs = _compose_copies(body, allocs)
    body, allocs = _trim_padding(body, allocs)
    for s in body:
        for x in ir.walk_stmts(s):
            for e in ir.stmt_exprs(x):
                for ld in ir.loads_of(e):
                    assert _VBuf.parse(ld.buffer) is None
    used = {b.name for s in body for b, _ in _accesses(s)}
    fwd_params = [b for b in func.params if b.name in used]
    grads = [st.adj[w] for w in wrt if w != out.name]  # d<output> in, and out when wrt
    new_params = tuple(fwd_params) + (seed,) + tuple(grads)
    doc = _doc(st, func, out, wrt, work)
    g = PrimFunc(func.name + "_grad", new_params, ir.seq(*body), tuple(allocs), doc)
    verify(g)
    return g


def _doc(st: _State, func: PrimFunc, out: Buffer, wrt: list[str], work) -> str:
    lines = [f"Backward of {func.name}: d{out.name} in, " + ", ".join("d" + w for w in wrt) + " out."]
    if st.kept:
        lines.append("Kept (computed again here, stored once, read by the adjoints): "
                     + ", ".join(st.kept) + ".")
    if st.recomputed:
        lines.append("Recomputed where read (cheaper than keeping): " + ", ".join(st.recomputed) + ".")
    if not st.kept and not st.recomputed:
        lines.append("Reads the forward's parameters only: no temporary is kept or recomputed.")
    for name in sorted(st.entry, key=wrt.index):
        lines.append(f"d{name} is the gradient with respect to {name}'s value on entry, which "
                     f"the parameter {name} holds" + (f"; d{out.name} comes in as the adjoint of "
                     f"{name}'s result and is overwritten with it" if name == out.name else "") + ".")
    for note in st.notes:
        lines.append(note)
    return "\n".join(lines)


def _needs_kill(st: _State, k: int) -> bool:
    """A store at nest ``k`` ends the life of what earlier live nests wrote there, or of the
    value on entry of a ``wrt`` buffer."""
    n = st.nests[k]
    return n.buffer.name in st.entry or any(
        _live(st, st.nests[m]) and _overlap(st.nests[m], n)
        for m in _writers(st, n.buffer.name) if m < k)


def _self_loads(n: _Nest) -> tuple[list[Load], list[Load]]:
    """The loads of the stored buffer where the statement writes, and elsewhere. Inside a
    recurrence, a load of an earlier iteration's slice (``H[t, j]`` beside ``H[t + 1, i]``) is
    neither: it reads a value final by then, like any other buffer's."""
    at, other = [], []
    for ld in ir.loads_of(n.value):
        if ld.buffer.name != n.buffer.name:
            continue
        if ld.indices == n.index:
            at.append(ld)
        elif n.region is not None and _earlier(n, ld):
            continue
        else:
            other.append(ld)
    return at, other


def _earlier(n: _Nest, ld: Load) -> bool:
    """``ld`` reads, in some dimension, the slice an earlier iteration of the recurrence wrote."""
    for w, r in zip(n.index, ld.indices):
        if _apart(w, r, set(n.vars)):
            a = affine(w)
            c = a.coeff(n.region.var)
            gap = a.plus(affine(r).scale(-1)).const
            if c != 0 and gap * c > 0:
                return True
            raise _Refuse(f"the recurrence over loop {n.region.var} reads {n.buffer.name} ahead "
                          "of where it writes", n.stmt, "recurrence")
    return False


def _adjoint_of(st: _State, k: int) -> tuple[list, list[_Contribution], bool]:
    """The adjoint of nest ``k``: statements and contributions, in execution order, and
    whether it writes the adjoint of the buffer it stores to."""
    n = st.nests[k]
    B = n.buffer
    dB = _adj(st, B.name)
    seed = Load(dB, n.index)
    idx_aff = [affine(e) for e in n.index]
    spans = {v: (lo, hi - 1) for v, lo, hi in n.loops}
    if n.region is not None:
        spans[n.region.var] = (n.region.loop.start, n.region.loop.stop - 1)
    written_once = n.region is None or any(a is not None and a.coeff(n.region.var) for a in idx_aff)
    if any(a is None for a in idx_aff) or not _one_to_one(idx_aff, spans) or not written_once:
        raise _Refuse(f"{B.name} is written at an index that is not one-to-one in the loops "
                      "around it" + (f" (a recurrence must write each element once: index it "
                                     f"by {n.region.var})" if n.region else ""), n.stmt, "recurrence" if n.region else None)
    in_index = {v for a in idx_aff for v in a.vars}
    reduction = [v for v in n.vars if v not in in_index]
    at, other = _self_loads(n)
    if n.region is not None and other:
        raise _Refuse(f"a scan inside the recurrence over loop {n.region.var} is not "
                      "differentiated here", n.stmt, "recurrence")
    if at and other:
        raise _Refuse(f"the statement reads {B.name} both where it writes and elsewhere", n.stmt, "recurrence")
    active = lambda name: name in st.active and name in st.relevant  # noqa: E731

    def contributions(value: Expr, seed_expr: Expr, self_after: bool, skip_self: bool) -> list[_Contribution]:
        parts: dict[Load, Expr] = {}
        _partials(value, seed_expr, parts)
        out = []
        for ld, coeff in parts.items():
            if not active(ld.buffer.name):
                continue
            if skip_self and ld.buffer.name == B.name and ld.indices == n.index:
                continue
            out.append(_Contribution(ld.buffer.name, ld.indices,
                                     _primal_keep_adj(st, coeff, k, self_after), n))
        return out

    if other:  # a recurrence: reversed loops, backwards in time
        _check_order(n, other)
        cs = contributions(n.value, seed, True, False)
        body: list[Stmt] = [Accumulate(st.adj[c.target], c.index, c.value) for c in cs]
        if _needs_kill(st, k):
            body.append(Store(dB, n.index, _fc(0.0, B.dtype)))
        if not body:
            return [], [], False
        rev = {v: Binary("-", _i(lo + hi - 1), Var(v)) for v, lo, hi in n.loops}
        stmt = ir.substitute_stmt(_build_nest((), n.conds, ir.seq(*body)), rev)
        stmt = _build_nest(n.loops, (), stmt)
        st.notes.append(f"{B.name}: a recurrence, differentiated backwards in time.")
        return [stmt], [], True
    if not at:
        if reduction:
            raise _Refuse(f"the store to {B.name} is repeated over loop {reduction[0]}, "
                          "each iteration overwriting the last", n.stmt)
        cs = contributions(n.value, seed, False, False)
        items: list = list(cs)
        wrote = False
        if _needs_kill(st, k):
            items.append(_build_nest(n.loops, n.conds, Store(dB, n.index, _fc(0.0, B.dtype))))
            wrote = True
        return items, cs, wrote
    # in place: B[j] = g(B[j], ...)
    if n.region is not None and not (isinstance(n.value, Binary) and n.value.op == "+"
                                     and n.value.a == at[0] and at[0] not in list(ir.walk_expr(n.value.b))):
        raise _Refuse(f"an update of {B.name} in place inside the recurrence over loop "
                      f"{n.region.var} needs the value it overwrites: write the result to "
                      "another buffer", n.stmt, "recurrence")
    # ``at`` may hold one load several times (``B = B * B``, ``select(B <= 0.1, 1.0, B)``): the
    # partials add up under one key
    if reduction:
        v = n.value
        if isinstance(v, Binary) and v.op in ("+", "-") and v.a == at[0] and at[0] not in list(ir.walk_expr(v.b)):
            h = v.b if v.op == "+" else Unary("neg", v.b)
        elif isinstance(v, Binary) and v.op == "+" and v.b == at[0] and at[0] not in list(ir.walk_expr(v.a)):
            h = v.a
        elif isinstance(v, Binary) and v.op in ("max", "min") and at[0] in (v.a, v.b):
            if n.region is not None:
                raise _Refuse(f"a running {v.op}imum inside the recurrence over loop "
                              f"{n.region.var} is not differentiated here", n.stmt, "recurrence")
            return _chain_extremum(st, k, v.op, v.b if v.a == at[0] else v.a, reduction)
        else:
            op = v.op if isinstance(v, (Binary,)) else type(v).__name__.lower()
            raise _Refuse(f"a reduction of {B.name} by '{op}' over loop {reduction[0]} has no "
                          "derivative here (sums, max and min have)", n.stmt)
        cs = contributions(h, seed, False, False)
        return list(cs), cs, False
    cs = contributions(n.value, seed, False, True)
    parts: dict[Load, Expr] = {}
    _partials(n.value, _fc(1.0, B.dtype), parts)
    scale = parts.get(at[0])
    items = list(cs)
    wrote = False
    if scale is not None and not _is(scale, 1.0):
        items.append(_build_nest(n.loops, n.conds, Store(
            dB, n.index, _mul(seed, _primal_keep_adj(st, scale, k, False)))))
        wrote = True
    elif scale is None:
        items.append(_build_nest(n.loops, n.conds, Store(dB, n.index, _fc(0.0, B.dtype))))
        wrote = True
    return items, cs, wrote


def _primal_keep_adj(st: _State, e: Expr, k: int, self_after: bool) -> Expr:
    """Mark the forward loads of ``e`` by state; adjoint loads stay as they are."""
    forward = set(st.func.buffers)

    def mark(ld: Load) -> Expr:
        return _primal(st, ld, k, self_after) if ld.buffer in forward else ld

    return ir.map_loads(e, mark)


def _check_order(n: _Nest, other: list[Load]) -> None:
    """A recurrence may read only elements written by earlier iterations of its loops."""
    pos = {}
    for d, e in enumerate(n.index):
        a = affine(e)
        if a is None or len(a.terms) != 1 or a.terms[0][1] != 1:
            raise _Refuse(f"a recurrence over {n.buffer.name} must write it at plain loop "
                          "variables (such as Y[r, c])", n.stmt, "recurrence")
        pos[a.terms[0][0]] = d
    for ld in other:
        dist = {}
        for d, (w, r) in enumerate(zip(n.index, ld.indices)):
            delta = affine(Binary("-", w, r))
            if delta is None or delta.terms:
                raise _Refuse(f"the recurrence reads {n.buffer.name} at an index that is not "
                              "a constant step from where it writes", n.stmt, "recurrence")
            dist[affine(w).terms[0][0]] = delta.const
        for v in n.vars:
            step = dist.get(v, 0)
            if step > 0:
                break
            if step < 0:
                raise _Refuse(f"the recurrence reads {n.buffer.name} ahead of where it writes "
                              f"(loop {v})", n.stmt, "recurrence")


def _chain_extremum(st: _State, k: int, op: str, h: Expr, reduction: list[str]) -> tuple:
    """A running maximum (minimum) ``B[j] = max(B[j], h)`` over reduction loops: the adjoint
    goes to the FIRST element equal to the result, the starting value counting first."""
    n = st.nests[k]
    B = n.buffer
    dB = _adj(st, B.name)
    seed = Load(dB, n.index)
    final = _primal(st, Load(B, n.index), k, True)
    start = _primal(st, Load(B, n.index), k, False)
    flag = Buffer(st.names.fresh(B.name + "_first"), B.dtype, B.shape)
    st.extra_allocs.append(flag)
    one, zero = _fc(1.0, B.dtype), _fc(0.0, B.dtype)
    outer = [l for l in n.loops if l[0] not in reduction]
    hp = _primal_keep_adj(st, h, k, False)
    hit = Compare("==", hp, final)
    first = Select(Logical("and", Compare("==", Load(flag, n.index), zero), hit), seed, zero)
    parts: dict[Load, Expr] = {}
    _partials(h, first, parts)
    body: list[Stmt] = []
    for ld, coeff in parts.items():
        if ld.buffer.name in st.active and ld.buffer.name in st.relevant:
            body.append(Accumulate(st.adj[ld.buffer.name], ld.indices,
                                   _primal_keep_adj(st, coeff, k, False)))
    body.append(Store(flag, n.index, Select(hit, one, Load(flag, n.index))))
    stmts = [_build_nest(outer, n.conds, Store(flag, n.index, Select(Compare("==", start, final), one, zero))),
             _build_nest(n.loops, n.conds, ir.seq(*body))]
    wrote = False
    if _needs_kill(st, k):
        stmts.append(_build_nest(outer, n.conds, Store(dB, n.index, Select(Compare("==", start, final), seed, zero))))
        wrote = True
    st.notes.append(f"{B.name}: a running {op}imum; its adjoint goes to the first element equal "
                    f"to the result ({flag.name} marks it).")
    return stmts, [], wrote


# ---------------------------------------------------------------------------
# placing a contribution (rewrite/gathers.py)


def _place(st: _State, c: _Contribution, sole: bool, windows: bool = True) -> tuple[Stmt, bool]:
    n = c.nest
    stmt, full, allocs = place(st.adj[c.target], c.index, c.value, n.loops, n.conds,
                               adjoints=set(st.adj.values()), names=st.names, sole=sole,
                               windows=windows, label=_label)
    st.extra_allocs.extend(allocs)
    return stmt, full


def _label(b: Buffer) -> str:
    v = _VBuf.parse(b)
    return v[0] if v else b.name


# ---------------------------------------------------------------------------
# forward values: parameters where they hold them, else kept


def _closure(st: _State, needs: set[tuple[str, int]], available) -> set[int]:
    """The nests that must run again to reach the states ``needs`` (and what they read)."""
    func, nests = st.func, st.nests
    params = {b.name for b in func.params}
    needs = set(needs)
    sites = dict(st.sites)  # the nest whose adjoint, or whose running again, reads each state
    replayed: set[int] = set()
    changed = True
    while changed:
        changed = False
        for name, s in list(needs):
            if available(name, s):
                continue
            at = nests[sites[(name, s)]].stmt if (name, s) in sites else None
            if s == 0 and name not in params:
                raise _Refuse(f"the backward needs temporary {name} before {func.name} writes it", at)
            if s == 0:
                raise _Refuse(_entry_needed(func, name), at, "entry")
            for m0 in _writers(st, name)[:s]:
                r = nests[m0].region
                for m in ([x for x, y in enumerate(nests) if y.region is r] if r else [m0]):
                    if m in replayed:
                        continue
                    replayed.add(m)
                    changed = True
                    n = nests[m]
                    for e in (n.value,) + n.index + n.conds:
                        for ld in ir.loads_of(e):
                            key = (ld.buffer.name, _state_at(st, ld.buffer.name, m, False))
                            needs.add(key)
                            sites.setdefault(key, sites.get((name, s), m))
    return replayed


def _entry_needed(func: PrimFunc, name: str) -> str:
    return (f"the backward needs the contents {name} had before {func.name} wrote it, which it "
            f"cannot recover from {name}'s final value (differentiated with respect to {name} "
            f"as well, the backward takes {name} as it was on entry)")


# Statement instances enumerated, at most, to find the elements a nest writes (beyond: not
# counted as writing any, which can only refuse).
COVER_LIMIT = 1 << 24


def _covers(st: _State, name: str, writers: Iterable[int]) -> bool:
    """The nests ``writers`` together write every element of ``name``."""
    import numpy as np

    b = st.func.buffer(name)
    if b.size > COVER_LIMIT:
        return False
    mask = np.zeros(b.shape, dtype=bool)
    for m in writers:
        got = _written(st.nests[m])
        if got is not None:
            mask[got] = True
    return bool(mask.all())


def _written(n: _Nest):
    """The index arrays of the elements nest ``n`` writes (every instance enumerated, its
    conditions applied), or None when they cannot be enumerated (a condition or an index
    that is not affine in the loops, too many instances)."""
    import numpy as np

    loops = list(n.loops)
    if n.region is not None:
        loops.insert(0, (n.region.var, n.region.loop.start, n.region.loop.stop))
    forms = [affine(e) for e in n.index]
    conds = [_affine_cond(c) for c in n.conds]
    if any(f is None for f in forms) or any(c is None for c in conds):
        return None
    used = {v for f in forms for v in f.vars} | {v for c in conds for f, _ in c for v in f.vars}
    loops = [l for l in loops if l[0] in used]
    if any(v not in {l[0] for l in loops} for v in used):
        return None
    size = 1
    for _, lo, hi in loops:
        size *= max(hi - lo, 0)
    if size > COVER_LIMIT:
        return None
    grids = np.meshgrid(*[np.arange(lo, hi) for _, lo, hi in loops], indexing="ij") if loops else []
    env = {v: g.reshape(-1) for (v, _, _), g in zip(loops, grids)}

    def value(f: Affine):
        out = np.full(size, f.const, dtype=np.int64)
        for v, c in f.terms:
            out = out + c * env[v]
        return out

    keep = np.ones(size, dtype=bool)
    for c in conds:
        for f, op in c:
            x = value(f)
            keep &= {"==": x == 0, "!=": x != 0, ">=": x >= 0, ">": x > 0}[op]
    idx = tuple(value(f)[keep] for f in forms)
    shape = n.buffer.shape
    if any(((i < 0) | (i >= d)).any() for i, d in zip(idx, shape)):
        return None
    return idx


def _affine_cond(c: Expr) -> Optional[list[tuple[Affine, str]]]:
    """A condition as a conjunction of ``f op 0`` with ``f`` affine and ``op`` one of ``==``,
    ``!=``, ``>=``, ``>``; None when it is not one."""
    if isinstance(c, Logical) and c.op == "and":
        a, b = _affine_cond(c.a), _affine_cond(c.b)
        return None if a is None or b is None else a + b
    if not isinstance(c, Compare):
        return None
    a, b = affine(c.a), affine(c.b)
    if a is None or b is None:
        return None
    d = a.plus(b.scale(-1))
    flip = {"<": (">", -1), "<=": (">=", -1), ">": (">", 1), ">=": (">=", 1),
            "==": ("==", 1), "!=": ("!=", 1)}.get(c.op)
    if flip is None:
        return None
    return [(d.scale(flip[1]), flip[0])]


def _replay(st: _State) -> tuple[list[Stmt], dict[tuple[str, int], object], list[Buffer]]:
    """The nests to run again at the start of the backward (with snapshots of states later
    overwritten), how each forward state the adjoints read is reached, and the buffers kept."""
    func, nests = st.func, st.nests
    params = {b.name: b for b in func.params}
    total = {b.name: len(_writers(st, b.name)) for b in func.buffers}

    def available(name: str, s: int) -> bool:
        if total[name] == 0:
            return True
        if name in st.entry:  # its parameter holds its value on entry
            return s == 0
        return name in params and s == total[name]

    recompute = _recomputed(st, available)
    replayed = _closure(st, {k for k in st.needs if k not in recompute}, available)
    for key in list(recompute):  # its nest runs here anyway, and what it stores stays
        m = _writers(st, key[0])[key[1] - 1]
        if m in replayed and m == max(k for k in replayed if nests[k].buffer.name == key[0]):
            del recompute[key]
            st.recomputed = [r for r in st.recomputed
                             if not r.startswith(f"{key[0]} after its statement {key[1]} ")]
    replayed = _closure(st, {k for k in st.needs if k not in recompute}, available)
    shadows: dict[str, Buffer] = {}
    allocs: list[Buffer] = []
    for m in sorted(replayed):
        name = nests[m].buffer.name
        if name not in shadows:
            b = func.buffer(name)
            shadows[name] = b if name not in params else Buffer(st.names.fresh(name + "_fwd"), b.dtype, b.shape)
            allocs.append(shadows[name])
    out: list[Stmt] = []
    for name, b in shadows.items():  # a parameter run again from its value on entry
        if name in params and _reads_entry(st, name, replayed):
            out.append(_copy(b, params[name], st.names))
    resolve: dict[tuple[str, int], object] = dict(recompute)
    last = {name: max(m for m in replayed if nests[m].buffer.name == name) for name in shadows}
    done_regions: list[_Region] = []
    for m in sorted(replayed):
        n = nests[m]
        if n.region is not None:  # a recurrence runs again whole, in its own loop
            if n.region not in done_regions:
                done_regions.append(n.region)
                out.append(_replay_region(st, n.region, shadows, available))
            continue
        # a state the parameter holds is read there (final, or on entry): the shadow holds
        # only the states run again so far; the nest's own buffer is read from the shadow it
        # writes (an update in place over a reduction loop reads its running value)
        held = {x: b for x, b in shadows.items()
                if x == n.buffer.name or not available(x, _state_at(st, x, m, False))}
        ren = lambda e, held=held: _rename(e, held)  # noqa: E731
        stmt = n.stmt
        leaf = type(stmt)(shadows[n.buffer.name], tuple(ren(i) for i in stmt.indices), ren(stmt.value))
        out.append(_build_nest(n.loops, tuple(ren(c) for c in n.conds), leaf))
        name = n.buffer.name
        s = _state_at(st, name, m, True)
        if (name, s) in st.needs and (name, s) not in recompute and m != last[name]:
            snap = Buffer(st.names.fresh(f"{name}_{s}"), n.buffer.dtype, n.buffer.shape)
            allocs.append(snap)
            out.append(_copy(snap, shadows[name], st.names))
            resolve[(name, s)] = snap
            st.kept.append(f"{snap.name} ({name} after its statement {s})")
    for name, s in sorted(st.needs):
        if (name, s) in resolve:
            continue
        resolve[(name, s)] = shadows[name] if not available(name, s) else func.buffer(name)
    for name, b in shadows.items():
        st.kept.append(b.name if b.name == name else f"{b.name} ({name}'s values)")
    allocs += st.extra_allocs
    return out, resolve, allocs


def _replay_region(st: _State, region: _Region, shadows: dict[str, Buffer], available) -> Stmt:
    """A recurrence run again: what it writes on shadows; what it only reads, at a state
    its parameter holds, from the parameter (the shadow holds only the states run again)."""
    mine = {id(x.stmt): m for m, x in enumerate(st.nests) if x.region is region}
    inside = {st.nests[m].buffer.name for m in mine.values()}

    def leaf(x: Stmt) -> Stmt:
        if not isinstance(x, (Store, Accumulate)) or id(x) not in mine:
            return x
        m = mine[id(x)]
        held = {name: b for name, b in shadows.items()
                if name in inside or not available(name, _state_at(st, name, m, False))}
        return type(x)(shadows.get(x.buffer.name, x.buffer), tuple(_rename(i, held) for i in x.indices),
                       _rename(x.value, held))

    return ir.map_stmt(region.loop, leaf, lambda e: _rename(e, shadows))


def _reads_entry(st: _State, name: str, replayed: set[int]) -> bool:
    """Running ``replayed`` again reads elements of parameter ``name`` as they were on entry:
    one of them reads it before any writes it, or together they do not overwrite all of it.
    Refused unless ``name`` is differentiated with respect to (its parameter then holds that
    value)."""
    mine = sorted(m for m in replayed if st.nests[m].buffer.name == name)
    first = None
    for m in sorted(replayed):
        n = st.nests[m]
        if any(ld.buffer.name == name for e in (n.value,) + n.index + n.conds for ld in ir.loads_of(e)) \
                and _state_at(st, name, m, False) == 0:
            first = m
            break
    if first is None and _covers(st, name, mine):
        return False
    if name not in st.entry:
        raise _Refuse(_entry_needed(st.func, name), st.nests[first if first is not None else mine[0]].stmt,
                      "entry")
    return True


# Recompute rather than keep: a value stored by a plain elementwise nest over a whole buffer,
# of at most this many operations, when computing it at every read costs no more than
# computing it once, storing it and reading it back (ops * reads <= (ops + 2) * elements).
RECOMPUTE_MAX_OPS = 2


def _ops(e: Expr) -> int:
    """Arithmetic operations of a value (index arithmetic is address computation)."""
    if isinstance(e, Load):
        return 0
    return int(isinstance(e, (Binary, Unary, Cast, Select))) + sum(_ops(c) for c in ir.children(e))


def _recomputed(st: _State, available) -> dict[tuple[str, int], tuple[tuple[str, ...], Expr]]:
    out: dict[tuple[str, int], tuple[tuple[str, ...], Expr]] = {}
    for name, s in sorted(st.needs):
        if s == 0 or available(name, s):
            continue
        m = _writers(st, name)[s - 1]
        n = st.nests[m]
        b = n.buffer
        plain = all(isinstance(e, Var) for e in n.index) and len({e.name for e in n.index}) == b.ndim
        if not (isinstance(n.stmt, Store) and n.region is None and plain and not n.conds and len(n.loops) == b.ndim
                and all((v, 0, size) in n.loops for v, size in zip((e.name for e in n.index), b.shape))
                and not any(ld.buffer.name == name for ld in ir.loads_of(n.value))):
            continue
        ops = _ops(n.value)
        if ops > RECOMPUTE_MAX_OPS or ops * st.reads.get((name, s), 0) > (ops + 2) * b.size:
            continue
        out[(name, s)] = (tuple(e.name for e in n.index),
                          _primal(st, n.value, m, False, st.sites.get((name, s))))
        st.recomputed.append(f"{name} after its statement {s} (= {_show(n.value)})")
    return out


def _show(e: Expr) -> str:
    from .printer import show_expr
    return show_expr(e)


def _rename(e: Expr, to: dict[str, Buffer]) -> Expr:
    return ir.map_loads(e, lambda ld: Load(to.get(ld.buffer.name, ld.buffer),
                                           tuple(_rename(i, to) for i in ld.indices)))


def _rename_stmt(s: Stmt, to: dict[str, Buffer]) -> Stmt:
    def leaf(x: Stmt) -> Stmt:
        if isinstance(x, (Store, Accumulate)):
            return type(x)(to.get(x.buffer.name, x.buffer), tuple(_rename(i, to) for i in x.indices),
                           _rename(x.value, to))
        return x

    return ir.map_stmt(s, leaf, lambda e: _rename(e, to))


def _resolve_stmt(s: Stmt, resolve: dict[tuple[str, int], Buffer]) -> Stmt:
    def fix(e: Expr) -> Expr:
        def one(ld: Load) -> Expr:
            key = _VBuf.parse(ld.buffer)
            idx = tuple(fix(i) for i in ld.indices)
            if key is None:
                return Load(ld.buffer, idx)
            got = resolve[key]
            if isinstance(got, Buffer):
                return Load(got, idx)
            names, value = got  # recomputed: the defining expression at this index
            return fix(ir.substitute(value, dict(zip(names, idx))))
        return ir.map_loads(e, one)

    if isinstance(s, (Store, Accumulate)):
        return type(s)(s.buffer, tuple(fix(i) for i in s.indices), fix(s.value))
    if isinstance(s, For):
        return For(s.var, s.start, s.stop, _resolve_stmt(s.body, resolve))
    if isinstance(s, Seq):
        return Seq(tuple(_resolve_stmt(c, resolve) for c in s.stmts))
    if isinstance(s, If):
        return If(fix(s.cond), _resolve_stmt(s.then, resolve),
                  None if s.orelse is None else _resolve_stmt(s.orelse, resolve))
    return s


# ---------------------------------------------------------------------------
# the program reversed whole, reading final values (in-place factorisations, triangular solves)


def _reversed_whole(func: PrimFunc, wrt: list[str], out: Buffer) -> PrimFunc:
    """The backward as the forward's own loops run backwards, every statement's adjoint in
    place of the statement, for a forward whose recurrences are nested (LU: each element of
    a row reads the ones before it, each row the rows before it) and cannot be cut into nests.

    Reverse mode, statement instance by statement instance: running the instances in reverse
    order, each one's adjoint (``dL += c_L * dB[w]`` for each value ``L`` it reads, then
    ``dB[w] = c_B * dB[w]``, or 0 where it overwrites) is exact when each ``c`` is evaluated
    on the values the instance saw. Here they are read from the final values instead, which
    is sound where the dependence analysis finds that no later instance overwrites what a
    coefficient reads (no anti dependence from that read). An update in place ``x = x / y``,
    ``x = sqrt(x)`` is differentiated through its result (``-dx * x' / y``, ``dx / (2 x')``),
    which is final where no later instance writes ``x`` again (no output dependence). A
    coefficient that needs a value later overwritten, or a read of ``B`` that may be the
    element the statement writes (its adjoint would be overwritten), is refused at the
    statement. Final values come from the parameters that hold them, or from the forward's
    statements that write them run again first (from a ``wrt`` buffer's value on entry)."""
    from . import analysis, polytope
    from .budgets import BudgetError

    leaves: list[_Nest] = []
    _leaves(func.body, (), (), leaves)
    names = Names.of(func)
    for name in [out.name] + wrt:
        names.reserve("d" + name)
    st = _State(func, leaves, names, out, *_flow(leaves, set(wrt), out.name))
    st.entry = {w for w in wrt if w in ir.written_by(func.body)}
    _differentiable(st)
    try:
        an = analysis.analyze(func)
    except BudgetError as e:
        raise _Refuse(f"its recurrences are too large to check: {e}", kind="structure") from None
    anti = {d.source for d in an.dependences if d.kind == "anti"}
    rewritten = {d.source for d in an.dependences if d.kind in ("output", "accumulate")}
    reads: dict[int, list] = {}
    writes: dict[int, object] = {}
    for a in analysis.accesses(func):  # this func's statements (the analysis is cached by value)
        if a.kind == "read":
            reads.setdefault(id(a.stmt), []).append(a)
        else:
            writes[id(a.stmt)] = a
    written = ir.written_by(func.body)
    for s in ir.walk_stmts(func.body):
        if isinstance(s, If) and any(ld.buffer.name in written for ld in ir.loads_of(s.cond)):
            raise _Refuse("a condition reads a buffer the function writes: the backward, which "
                          "reads final values, cannot evaluate it as the forward did", s)
    for name in [out.name] + wrt:
        st.adj[name] = Buffer("d" + name, func.buffer(name).dtype, func.buffer(name).shape)
    for name in sorted(st.active & st.relevant):
        if name not in st.adj:
            b = func.buffer(name)
            st.adj[name] = Buffer(names.fresh("d" + name), b.dtype, b.shape)

    adjoint: dict[int, Stmt] = {}
    for n in leaves:
        if n.buffer.name not in st.adj:
            continue
        B, w = n.buffer, n.index
        dB = st.adj[B.name]
        seed = Load(dB, w)
        me = Load(B, w)
        in_place = any(ld == me for ld in ir.loads_of(n.value))
        # the value stored, marked apart from the one overwritten until both are checked
        after = Load(Buffer("\x01" + B.name, B.dtype, B.shape), w) \
            if in_place and isinstance(n.stmt, Store) else None
        parts: dict[Load, Expr] = {}
        if after is not None:
            _partials_through(n.value, seed, parts, after)
        else:
            _partials(n.value, seed, parts)
        scale = parts.pop(me, None)  # dB[w]'s new value (the partials carry the seed)
        if scale is None and in_place:
            scale = _fc(0.0, B.dtype)
        live = [ld for ld in parts if ld.buffer.name in st.active and ld.buffer.name in st.relevant]
        coeffs = [parts[ld] for ld in live] + [i for ld in live for i in ld.indices] + list(w)
        if scale is not None:
            coeffs.append(scale)
        # every forward value a coefficient (or an index it is sent to) reads must be final
        # when the statement runs
        mine = {(a.buffer.name, a.indices): a for a in reads.get(id(n.stmt), [])}
        for c in coeffs:
            for ld in ir.loads_of(c):
                if ld.buffer.name == dB.name or ld.buffer.name not in written:
                    continue
                if ld == after and after is not None:
                    if writes[id(n.stmt)] in rewritten:
                        raise _Refuse(f"the adjoint of this statement needs the value it stores in "
                                      f"{B.name}, which a later statement overwrites", n.stmt)
                    continue
                a = mine.get((ld.buffer.name, ld.indices))
                if a is None or a in anti:
                    what = f"the value it overwrites ({_show(ld)} before the statement)" if ld == me \
                        else f"{_show(ld)} as it read it, which a later statement overwrites"
                    raise _Refuse(f"the adjoint of this statement needs {what}", n.stmt)
        # a read of B that may be the element written: its adjoint would change the seed
        acc = writes[id(n.stmt)]
        box = {v: (lo, hi - 1) for v, lo, hi in n.loops}
        for ld in parts:
            if ld.buffer.name != B.name:
                continue
            eqs = [affine(Binary("-", x, y)) for x, y in zip(ld.indices, w)]
            if any(e is None for e in eqs) or polytope.feasible(
                    box, tuple(acc.facts) + tuple(f for e in eqs for f in (e, e.scale(-1)))):
                raise _Refuse(f"the statement reads {_show(ld)}, which may be the element it "
                              "writes", n.stmt)
        body: list[Stmt] = [Accumulate(st.adj[ld.buffer.name], ld.indices, c)
                            for ld, c in parts.items()
                            if ld.buffer.name in st.active and ld.buffer.name in st.relevant]
        if scale is None or _is(scale, 0.0):
            body.append(Store(dB, w, _fc(0.0, B.dtype)))
        elif scale != seed:
            body.append(Store(dB, w, scale))
        if body:
            stored = {after.buffer.name: B} if after is not None else {}
            adjoint[id(n.stmt)] = _rename_stmt(ir.seq(*body), stored)
    sweep = _mirror(func.body, adjoint)
    if sweep is None:
        raise _Refuse(f"the output {out.name} does not depend on " + ", ".join(wrt))

    # final values: the parameters that hold them, else the forward's writers run again
    finals: set[str] = set()
    for s in ir.walk_stmts(sweep):
        for e in ir.stmt_exprs(s):
            for ld in ir.loads_of(e):
                if ld.buffer.name in written and ld.buffer.name in {b.name for b in func.buffers} \
                        and (ld.buffer.name in st.entry or ld.buffer.name not in {p.name for p in func.params}):
                    finals.add(ld.buffer.name)
    replay, shadows, allocs = _run_again(st, finals)
    sweep = _rename_stmt(sweep, {k: b for k, b in shadows.items() if k in st.entry})
    seed_buf = st.adj[out.name]
    work = None
    if out.name not in wrt and seed_buf.name in ir.written_by(sweep):
        work = Buffer(names.fresh("d" + out.name + "_acc"), seed_buf.dtype, seed_buf.shape)
        sweep = _rename_stmt(sweep, {seed_buf.name: work})
    inits: list[Stmt] = []
    if work is not None:
        allocs.append(work)
        inits.append(_copy(work, seed_buf, names))
    for name, b in st.adj.items():
        if name == out.name:
            continue
        if name not in wrt:
            allocs.append(b)
        inits.append(_fill(b, _fc(0.0, b.dtype), names))
    body = replay + inits + [sweep]
    used = {b.name for s in body for b, _ in _accesses(s)}
    params = tuple(b for b in func.params if b.name in used) + (seed_buf,) + \
        tuple(st.adj[w] for w in wrt if w != out.name)
    st.notes.append("The forward's loops run backwards, each statement's adjoint in its place; "
                    "the coefficients read final values, which the dependence analysis finds "
                    "no later statement overwrites.")
    g = PrimFunc(func.name + "_grad", params, ir.seq(*body), tuple(allocs), _doc(st, func, out, wrt, work))
    verify(g)
    return g


def _leaves(s: Stmt, loops: tuple, conds: tuple, out: list[_Nest]) -> None:
    """Every store and ``+=`` with the loops and conditions around it (no distribution)."""
    if isinstance(s, Seq):
        for c in s.stmts:
            _leaves(c, loops, conds, out)
    elif isinstance(s, For):
        _leaves(s.body, loops + ((s.var, s.start, s.stop),), conds, out)
    elif isinstance(s, If):
        _leaves(s.then, loops, conds + (s.cond,), out)
        if s.orelse is not None:
            _leaves(s.orelse, loops, conds + (Unary("not", s.cond),), out)
    elif isinstance(s, Store):
        out.append(_Nest(loops, conds, s, s.buffer, s.indices, s.value))
    elif isinstance(s, Accumulate):
        out.append(_Nest(loops, conds, s, s.buffer, s.indices, Binary("+", Load(s.buffer, s.indices), s.value)))
    else:
        raise _Refuse("an intrinsic call has no derivative here: differentiate the program "
                      "before tensorizing it", s, "final")


def _partials_through(v: Expr, seed: Expr, out: dict[Load, Expr], after: Load) -> None:
    """``_partials`` of a value stored in place, written through its result ``after`` where
    that spares reading the operand it overwrites: ``a / b`` gives ``b`` the partial
    ``-seed * after / b``, ``sqrt(a)`` gives ``a`` ``seed / (2 after)``, ``exp(a)`` gives
    ``seed * after``."""
    dt = v.dtype
    if isinstance(v, Binary) and v.op == "/":
        _partials(v.a, Binary("/", seed, v.b), out)
        _partials(v.b, _neg(Binary("/", _mul(seed, after), v.b)), out)
    elif isinstance(v, Unary) and v.op == "sqrt":
        _partials(v.a, Binary("/", seed, Binary("*", _fc(2.0, dt), after)), out)
    elif isinstance(v, Unary) and v.op == "exp":
        _partials(v.a, _mul(seed, after), out)
    else:
        _partials(v, seed, out)


def _mirror(s: Stmt, adjoint: dict[int, Stmt]) -> Optional[Stmt]:
    """``s`` run backwards: each loop reversed, each sequence in reverse order, each
    statement replaced by its adjoint (dropped where it has none)."""
    if isinstance(s, Seq):
        parts = [m for c in reversed(s.stmts) if (m := _mirror(c, adjoint)) is not None]
        return ir.seq(*parts) if parts else None
    if isinstance(s, For):
        body = _mirror(s.body, adjoint)
        if body is None:
            return None
        rev = {s.var: Binary("-", _i(s.start + s.stop - 1), Var(s.var))}
        return For(s.var, s.start, s.stop, ir.substitute_stmt(body, rev))
    if isinstance(s, If):
        then = _mirror(s.then, adjoint)
        orelse = None if s.orelse is None else _mirror(s.orelse, adjoint)
        if then is None and orelse is None:
            return None
        if then is None:
            return If(Unary("not", s.cond), orelse)
        return If(s.cond, then, orelse)
    return adjoint.get(id(s))


def _run_again(st: _State, finals: set[str]) -> tuple[list[Stmt], dict[str, Buffer], list[Buffer]]:
    """The forward's top-level statements that write ``finals`` (and what those read), run
    again at the start of the backward: parameters on shadows (a ``wrt`` one started from its
    value on entry), temporaries as themselves."""
    func = st.func
    params = {b.name: b for b in func.params}
    top = list(ir.stmts_of(func.body))
    need = set(finals)
    chosen: set[int] = set()
    changed = bool(need)
    while changed:
        changed = False
        for k, s in enumerate(top):
            if k not in chosen and ir.written_by(s) & need:
                chosen.add(k)
                touched = {b.name for b, _ in _accesses(s)}
                if not touched <= need:
                    need |= touched
                changed = True
    shadows: dict[str, Buffer] = {}
    allocs: list[Buffer] = []
    out: list[Stmt] = []
    written = set().union(*(ir.written_by(top[k]) for k in chosen)) if chosen else set()
    for name in sorted(written, key=[b.name for b in func.buffers].index):
        b = func.buffer(name)
        if name in params:
            shadows[name] = Buffer(st.names.fresh(name + "_fwd"), b.dtype, b.shape)
            if name in st.entry:
                out.append(_copy(shadows[name], b, st.names))
            elif any(ld.buffer.name == name for k in chosen for x in ir.walk_stmts(top[k])
                     for e in ir.stmt_exprs(x) for ld in ir.loads_of(e)):
                site = next(x for k in sorted(chosen) for x in ir.walk_stmts(top[k])
                            if isinstance(x, (Store, Accumulate)) and x.buffer.name == name)
                raise _Refuse(_entry_needed(func, name), site, "entry")
            allocs.append(shadows[name])
            st.kept.append(f"{shadows[name].name} ({name}'s values)")
        else:
            allocs.append(b)
            st.kept.append(name)
    out += [_rename_stmt(top[k], shadows) for k in sorted(chosen)]
    return out, shadows, allocs
