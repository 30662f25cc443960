"""x86 intrinsics: AVX2 + FMA, and AVX-512 VNNI (native where the CPU has it, emulated elsewhere).

Every load and store is aligned to the element size only: numpy buffers can sit at any
element offset, and an LLVM vector load that assumes natural alignment faults on them.
Non-unit strides are gathered element by element, so an emitter is correct for any layout;
the ``layout`` of each descriptor tells the matcher where it is fast.
"""

from __future__ import annotations

from typing import Optional

from llvmlite import ir

from rewrite.emitter import (Emitter, concat, declare, load_row, load_scalar, lltype, shuffle, splat,
                             store_row)
from rewrite.ir import itemsize
from rewrite.script import f16, f32, f64, grid, i8, i16, i32, u8  # noqa: F401 - names the parser reads

from .base import Layout, intrinsic

AVX2_FMA = ("avx", "avx2", "fma")


def _fma(b: ir.IRBuilder, x: ir.Value, y: ir.Value, z: ir.Value) -> ir.Value:
    """x * y + z, rounded once: ``vfmadd231ps`` (``pd`` on doubles) once the target has FMA."""
    ty = x.type
    element = "f64" if isinstance(ty.element, ir.DoubleType) else "f32"
    fn = declare(b.module, f"llvm.fma.v{ty.count}{element}", ty, [ty, ty, ty])
    return b.call(fn, [x, y, z])


def _negative_zeros(dtype: str, n: int) -> ir.Constant:
    """``n`` lanes of -0.0: x + -0.0 is x for every x, -0.0 included (an accumulator's start)."""
    return ir.Constant(ir.VectorType(lltype(dtype), n), [-0.0] * n)


NEG_ZERO = _negative_zeros("f32", 8)


def _alternate(b: ir.IRBuilder, acc: list, update) -> list:
    """One step of a reduction whose partial sums alternate between two sets: the step
    updates ``acc[0]`` and puts it last, so each FMA waits for the one two steps back and
    twice as many chains cover the FMA latency. That reassociates the sum (as every BLAS
    does); the sets are added once, at the end (``_joined``). An emitter whose step does this
    sets ``unroll = 2``: a loop of calls then runs two steps an iteration, each set back in
    its own registers, where one step an iteration ends in a copy of every partial sum."""
    return [acc[1], update(acc[0])]


def _joined(b: ir.IRBuilder, acc: list):
    first, second = acc
    if isinstance(first, list):
        return [b.fadd(x, y) for x, y in zip(first, second)]
    return b.fadd(first, second)


# ---------------------------------------------------------------------------
# FMA family: element-wise and broadcast multiply-add on one <8 x float>


class _RowF32x8(Emitter):
    """c (8 floats) += what ``step`` adds, held as two alternating partial sums (``_alternate``)."""

    operands = ("c", "a", "b")
    dtypes = {"c": "f32", "a": "f32", "b": "f32"}
    unroll = 2
    interleaves = True  # plain vector values

    def load_acc(self, b, ops):
        return [load_row(b, ops["c"], (0,), 0, 8), NEG_ZERO]

    def store_acc(self, b, ops, acc):
        store_row(b, ops["c"], (0,), 0, _joined(b, acc))


class FmaF32x8(_RowF32x8):
    shapes = {"c": (8,), "a": (8,), "b": (8,)}

    def step(self, b, ops, acc):
        return _alternate(b, acc, lambda c: _fma(b, load_row(b, ops["a"], (0,), 0, 8),
                                                 load_row(b, ops["b"], (0,), 0, 8), c))


@intrinsic("x86.fma.f32x8", isa=AVX2_FMA, cost=1.0, emitter=FmaF32x8(),
           layout={"c": Layout((0,), 4), "a": Layout((0,), 4), "b": Layout((0,), 4)})
def fma_f32x8(c: f32[8], a: f32[8], b: f32[8]):
    for i in range(8):
        c[i] += a[i] * b[i]


class AxpyF32x8(_RowF32x8):
    """``vbroadcastss`` of a[0], then one FMA."""

    shapes = {"c": (8,), "a": (1,), "b": (8,)}

    def step(self, b, ops, acc):
        scale = splat(b, load_scalar(b, ops["a"], (0,)), 8)
        return _alternate(b, acc, lambda c: _fma(b, scale, load_row(b, ops["b"], (0,), 0, 8), c))


@intrinsic("x86.axpy.f32x8", isa=AVX2_FMA, cost=1.0, emitter=AxpyF32x8(),
           layout={"c": Layout((0,), 4), "b": Layout((0,), 4)})
def axpy_f32x8(c: f32[8], a: f32[1], b: f32[8]):
    for j in range(8):
        c[j] += a[0] * b[j]


# ---------------------------------------------------------------------------
# register-blocked outer product: the 6x16 GEMM micro-kernel step


def _prefetch_rows(b: ir.IRBuilder, ref, rows: int, width: int) -> None:
    """Ask for every cache line of ``ref``'s ``rows`` rows of ``width`` elements, for writing
    (``prefetchw`` where the CPU has it, else ``prefetcht0``): a hint, never a fault, and no
    change to any value. A row's first, last and every 64th byte between name all its lines,
    wherever it starts."""
    fn = declare(b.module, "llvm.prefetch.p0", ir.VoidType(),
                 [ir.PointerType(), ir.IntType(32), ir.IntType(32), ir.IntType(32)])
    write, keep, data = (ir.Constant(ir.IntType(32), v) for v in (1, 3, 1))
    per_line = 64 // itemsize(ref.dtype)
    for i in range(rows):
        for j in sorted(set(range(0, width, per_line)) | {width - 1}):
            b.call(fn, [ref.at(b, (i, j)), write, keep, data])


class MmF32(Emitter):
    """c (rows x width*halves) += a (rows x 1) * b (1 x width*halves): the register-blocked
    GEMM micro-kernel step. The accumulators are rows x halves vectors of ``width`` floats;
    ``step`` is ``halves`` loads of b, ``rows`` broadcasts of a and rows x halves independent
    FMAs, enough chains to cover the FMA latency on two pipes.

    AVX2 (16 ymm registers): 6 x 16 is 12 accumulators, two b registers and a broadcast,
    15 of 16. AVX-512 (32 zmm registers): 8 x 32 is 16 accumulators, two b registers and
    a broadcast, with each FMA twice as wide; 8 rows divide the usual sizes. On doubles
    (``dtype`` f64) a register holds half the elements: 6 x 8 and 8 x 16, the same FMAs.

    The accumulators start at -0.0 and c is added in ``store_acc``, once, after the k-loop;
    ``load_acc`` only prefetches c's lines (``_prefetch_rows``). A GEMM's c rows are a matrix
    row apart, beyond what the hardware prefetchers follow, so a c block is rarely in cache
    when its k-loop starts, and loading it there stalls every row's first FMA until it
    arrives. Adding c last reassociates the sum ``c + p1 + ... + pk`` as ``c + (p1 + ... +
    pk)``, as every BLAS does (README, Numerics); -0.0 is the identity of addition for every
    float, so an element whose products are all -0.0 keeps c, signed zero included."""

    operands = ("c", "a", "b")

    def __init__(self, rows: int, width: int, halves: int = 2, sets: int = 1, dtype: str = "f32",
                 inputs: Optional[str] = None, cols: Optional[int] = None):
        self.rows, self.width, self.halves, self.sets = rows, width, halves, sets
        # ``cols`` short of ``width * halves``: the last vector's lanes past it are never
        # loaded nor stored (masked), a partial form's edge of C and B (``partial``)
        self.cols = width * halves if cols is None else cols
        assert (halves - 1) * width < self.cols <= halves * width
        self.shapes = {"c": (rows, self.cols), "a": (rows, 1), "b": (1, self.cols)}
        self.dtype = dtype
        self.inputs = inputs
        self.dtypes = {"c": dtype, "a": inputs or dtype, "b": inputs or dtype}
        # two alternating sets of partial sums (``_alternate``) where rows x halves FMAs are
        # too few chains for the FMA latency: each chain then waits on the FMA two steps back
        self.unroll = sets
        # a step's instructions: the FMAs, the loads of b and the broadcasts of a
        self.work = rows * halves + halves + rows

    def partial(self, shapes: dict) -> Optional["MmF32"]:
        """The same step on ``rows`` x ``cols`` of c (at most this one's): fewer rows of
        accumulators, and as many vectors as cover the columns, the last one's lanes past
        them masked in every load of b and c and every store of c. Two alternating sets of
        partial sums where fewer than 8 FMAs a step would leave the FMA pipes idle."""
        rows, cols = shapes["c"]
        if shapes["a"] != (rows, 1) or shapes["b"] != (1, cols):
            return None
        # vectors as narrow as cover the columns (down to 128 bits), so that 8 columns of an
        # AVX-512 tile are one 256-bit vector with no mask, rather than half a masked one
        width = self.width
        while width > 16 // itemsize(self.dtype) and 2 * cols <= width:
            width //= 2
        halves = -(-cols // width)
        sets = 2 if rows * halves < 8 else 1
        return MmF32(rows, width, halves, sets, self.dtype, self.inputs, cols)

    def _lanes(self, h: int) -> int:
        """How many lanes of vector ``h`` of a row are columns of c."""
        return min(self.width, self.cols - self.width * h)

    def _wide(self, b, ref, value):
        """``value``, loaded from ``ref``, in the accumulators' dtype: an f16 operand read
        where no widened copy holds it converted (exact), else as it is."""
        if ref.dtype == self.dtype:
            return value
        ty = lltype(self.dtype)
        return b.fpext(value, ir.VectorType(ty, value.type.count) if isinstance(
            value.type, ir.VectorType) else ty)

    def load_acc(self, b, ops):
        _prefetch_rows(b, ops["c"], self.rows, self.cols)
        return self.fresh_acc(b, ops)

    def step(self, b, ops, acc):
        w = self.width
        cols = [self._wide(b, ops["b"], load_row(b, ops["b"], (0, w * h), 1, w, self._lanes(h)))
                for h in range(self.halves)]

        def update(acc):
            out = []
            for i in range(self.rows):
                a_i = splat(b, self._wide(b, ops["a"], load_scalar(b, ops["a"], (i, 0))), w)
                out.append([_fma(b, a_i, cols[h], acc[i][h]) for h in range(self.halves)])
            return out

        return update(acc) if self.sets == 1 else _alternate(b, acc, update)

    def store_acc(self, b, ops, acc):
        self._added(b, ops, acc, None)

    # A block filled with a constant just before (the first reduction block of ``C = 0;
    # C += A @ B``, ``rules/tiles.py``) is neither prefetched nor read: the constant is
    # added where c would be, so every element is what the fill and store_acc give.
    starts_fresh = True

    def fresh_acc(self, b, ops):
        zero = _negative_zeros(self.dtype, self.width)
        one = [[zero] * self.halves for _ in range(self.rows)]
        return one if self.sets == 1 else [one, [list(r) for r in one]]

    def store_fresh(self, b, ops, acc, value):
        self._added(b, ops, acc, splat(b, value, self.width))

    def _added(self, b, ops, acc, c) -> None:
        """c's block (``c`` for each of its vectors, if given) plus ``acc``, stored into c."""
        w = self.width
        if self.sets == 2:  # the two sets of partial sums, added once
            acc = [[b.fadd(x, y) for x, y in zip(r0, r1)] for r0, r1 in zip(*acc)]
        for i in range(self.rows):
            for h in range(self.halves):
                lanes = self._lanes(h)
                old = load_row(b, ops["c"], (i, w * h), 1, w, lanes) if c is None else c
                store_row(b, ops["c"], (i, w * h), 1, b.fadd(old, acc[i][h]), lanes)


@intrinsic("x86.mm.f32.6x16x1", isa=AVX2_FMA, cost=6.0, emitter=MmF32(rows=6, width=8),
           layout={"c": Layout((1,), 4), "b": Layout((1,), 4)})
def mm_f32_6x16x1(c: f32[6, 16], a: f32[6, 1], b: f32[1, 16]):
    for i, j, k in grid(6, 16, 1):
        c[i, j] += a[i, k] * b[k, j]


# The rows a 6-row tiling leaves (M mod 6 of 4 or 5: 1024, 1000, 256), on the same B panels
# (``rules/panels.py``): 8 independent FMAs a step, the chains two FMA pipes of latency 4
# need. Its k-loop in L1 ran at 0.92 of the FMA peak against the 6x16's 0.98 (Zen 3 code on
# Zen 4), and it reads B's 64 bytes a step for 8 FMAs instead of 12: priced above 4 units
# (the 6x16's rate), so that it takes the rows the 6x16 leaves, not the 6x16's own.
@intrinsic("x86.mm.f32.4x16x1", isa=AVX2_FMA, cost=4.5, emitter=MmF32(rows=4, width=8),
           layout={"c": Layout((1,), 4), "b": Layout((1,), 4)})
def mm_f32_4x16x1(c: f32[4, 16], a: f32[4, 1], b: f32[1, 16]):
    for i, j, k in grid(4, 16, 1):
        c[i, j] += a[i, k] * b[k, j]


# The rows a 6-row tiling leaves where M mod 6 is 2 (2048, 512, 128): 4 FMAs a step, in two
# alternating sets of partial sums for 8 chains; 4 loads a step (2 of b, 2 broadcasts) for
# 4 FMAs bound it below the FMA rate.
@intrinsic("x86.mm.f32.2x16x1", isa=AVX2_FMA, cost=2.5, emitter=MmF32(rows=2, width=8, sets=2),
           layout={"c": Layout((1,), 4), "b": Layout((1,), 4)})
def mm_f32_2x16x1(c: f32[2, 16], a: f32[2, 1], b: f32[1, 16]):
    for i, j, k in grid(2, 16, 1):
        c[i, j] += a[i, k] * b[k, j]


# Twice the lanes per FMA: 256 multiply-adds in 16 FMAs where the 6x16 step does 96 in 12,
# so 8 units (what 16 of the 6x16's FMAs cost) where the CPU runs a 512-bit FMA at the rate
# of a 256-bit one; CPUs that split it in two (Zen 4) run it no slower than the 6x16.
@intrinsic("x86.avx512.mm.f32.8x32x1", isa=("avx512f", "fma"), cost=8.0,
           emitter=MmF32(rows=8, width=16),
           layout={"c": Layout((1,), 4), "b": Layout((1,), 4)})
def avx512_mm_f32_8x32x1(c: f32[8, 32], a: f32[8, 1], b: f32[1, 32]):
    for i, j, k in grid(8, 32, 1):
        c[i, j] += a[i, k] * b[k, j]


# f16 products into f32 (mixed precision): the f32 tiles on f32 copies of A and B
# (``Layout.widened``: ``pack-panel`` converts each element once, exactly), where AVX2 has no
# f16 arithmetic. A product of two f16 values is exact in f32 (11-bit significands, a
# 22-bit product), so each FMA adds what ``f32(a) * f32(b)`` is. Read from f16 in place,
# each step converts its operands itself (``vcvtph2ps``): correct, and slower.
_F16_WIDENED = {"c": Layout((1,), 4), "a": Layout(align=2, widened="f32"),
                "b": Layout((1,), 2, widened="f32")}


@intrinsic("x86.mm.f16f32.6x16x1", isa=AVX2_FMA + ("f16c",), cost=6.0,
           emitter=MmF32(rows=6, width=8, inputs="f16"), layout=_F16_WIDENED)
def mm_f16f32_6x16x1(c: f32[6, 16], a: f16[6, 1], b: f16[1, 16]):
    for i, j, k in grid(6, 16, 1):
        c[i, j] += f32(a[i, k]) * f32(b[k, j])


@intrinsic("x86.mm.f16f32.4x16x1", isa=AVX2_FMA + ("f16c",), cost=4.5,
           emitter=MmF32(rows=4, width=8, inputs="f16"), layout=_F16_WIDENED)
def mm_f16f32_4x16x1(c: f32[4, 16], a: f16[4, 1], b: f16[1, 16]):
    for i, j, k in grid(4, 16, 1):
        c[i, j] += f32(a[i, k]) * f32(b[k, j])


@intrinsic("x86.mm.f16f32.2x16x1", isa=AVX2_FMA + ("f16c",), cost=2.5,
           emitter=MmF32(rows=2, width=8, sets=2, inputs="f16"), layout=_F16_WIDENED)
def mm_f16f32_2x16x1(c: f32[2, 16], a: f16[2, 1], b: f16[1, 16]):
    for i, j, k in grid(2, 16, 1):
        c[i, j] += f32(a[i, k]) * f32(b[k, j])


@intrinsic("x86.avx512.mm.f16f32.8x32x1", isa=("avx512f", "fma", "f16c"), cost=8.0,
           emitter=MmF32(rows=8, width=16, inputs="f16"), layout=_F16_WIDENED)
def avx512_mm_f16f32_8x32x1(c: f32[8, 32], a: f16[8, 1], b: f16[1, 32]):
    for i, j, k in grid(8, 32, 1):
        c[i, j] += f32(a[i, k]) * f32(b[k, j])


# The same tiles on doubles: a ymm register holds 4, so the 6-row tile is 6 x 8 for the same
# 12 FMAs a step (PolyBench's programs are f64), and its remainder rows alike.
_F64_TILE = {"c": Layout((1,), 8), "b": Layout((1,), 8)}

@intrinsic("x86.mm.f64.6x8x1", isa=AVX2_FMA, cost=6.0,
           emitter=MmF32(rows=6, width=4, dtype="f64"),
           layout=_F64_TILE)
def mm_f64_6x8x1(c: f64[6, 8], a: f64[6, 1], b: f64[1, 8]):
    for i, j, k in grid(6, 8, 1):
        c[i, j] += a[i, k] * b[k, j]


@intrinsic("x86.mm.f64.4x8x1", isa=AVX2_FMA, cost=4.5,
           emitter=MmF32(rows=4, width=4, dtype="f64"),
           layout=_F64_TILE)
def mm_f64_4x8x1(c: f64[4, 8], a: f64[4, 1], b: f64[1, 8]):
    for i, j, k in grid(4, 8, 1):
        c[i, j] += a[i, k] * b[k, j]


@intrinsic("x86.mm.f64.2x8x1", isa=AVX2_FMA, cost=2.5,
           emitter=MmF32(rows=2, width=4, sets=2, dtype="f64"),
           layout=_F64_TILE)
def mm_f64_2x8x1(c: f64[2, 8], a: f64[2, 1], b: f64[1, 8]):
    for i, j, k in grid(2, 8, 1):
        c[i, j] += a[i, k] * b[k, j]


@intrinsic("x86.avx512.mm.f64.8x16x1", isa=("avx512f", "fma"), cost=8.0,
           emitter=MmF32(rows=8, width=8, dtype="f64"),
           layout=_F64_TILE)
def avx512_mm_f64_8x16x1(c: f64[8, 16], a: f64[8, 1], b: f64[1, 16]):
    for i, j, k in grid(8, 16, 1):
        c[i, j] += a[i, k] * b[k, j]


# ---------------------------------------------------------------------------
# matrix-vector product with the matrix read along its rows


class GemvF32(Emitter):
    """c (rows) += a (rows x width) @ b (width): rows of a row-major matrix against one
    vector, every operand read at unit stride (the axpy form reads a column of the matrix,
    one gather per element). The accumulator is c plus ``sets`` (two: alternating,
    ``_alternate``) sets of one ``width``-float partial sum per row: ``step`` is one load
    of b, a row load and an independent FMA per row; the partial sums are added across
    lanes into c once, in ``store_acc``, so a k-loop of calls does no shuffles. That
    reassociates each row's sum, as every BLAS does. One set leaves 16 more registers to
    the gemvt call that a merged sweep runs beside it (``rules/sweeps.py``): two sets of 16
    zmm partial sums there spilled its eight broadcasts."""

    operands = ("c", "a", "b")
    interleaves = True  # plain vector values

    def __init__(self, rows: int, width: int, sets: int = 2, dtype: str = "f32"):
        self.rows, self.width, self.sets = rows, width, sets
        self.unroll = sets  # the sets trade places every step
        self.shapes = {"c": (rows,), "a": (rows, width), "b": (width,)}
        self.dtypes = {"c": dtype, "a": dtype, "b": dtype}
        self.zero = _negative_zeros(dtype, width)

    def load_acc(self, b, ops):
        return [load_row(b, ops["c"], (0,), 0, self.rows), [[self.zero] * self.rows] * self.sets]

    def step(self, b, ops, acc):
        x = load_row(b, ops["b"], (0,), 0, self.width)
        update = lambda part: [  # noqa: E731
            _fma(b, load_row(b, ops["a"], (i, 0), 1, self.width), x, part[i])
            for i in range(self.rows)]
        if self.sets == 1:
            return [acc[0], [update(acc[1][0])]]
        return [acc[0], _alternate(b, acc[1], update)]

    def store_acc(self, b, ops, acc):
        c, partial = acc[0], (acc[1][0] if self.sets == 1 else _joined(b, acc[1]))
        sums = []
        for v in partial:  # halve the vector until one lane is left
            n = self.width // 2
            while n:
                v = b.fadd(shuffle(b, v, None, range(n)), shuffle(b, v, None, range(n, 2 * n)))
                n //= 2
            sums.append(v)
        store_row(b, ops["c"], (0,), 0, b.fadd(c, concat(b, sums)))


@intrinsic("x86.gemv.f32.4x8", isa=AVX2_FMA, cost=4.0, emitter=GemvF32(rows=4, width=8),
           layout={"a": Layout((1,), 4), "b": Layout((0,), 4)})
def gemv_f32_4x8(c: f32[4], a: f32[4, 8], b: f32[8]):
    for i, k in grid(4, 8):
        c[i] += a[i, k] * b[k]


# The same on doubles, four to a register: the matrix-vector form of f64 programs and the
# columns an f64 tiling leaves (read from a transposed copy, as the f32 ones).
@intrinsic("x86.gemv.f64.4x4", isa=AVX2_FMA, cost=4.0, emitter=GemvF32(rows=4, width=4, dtype="f64"),
           layout={"a": Layout((1,), 8), "b": Layout((0,), 8)})
def gemv_f64_4x4(c: f64[4], a: f64[4, 4], b: f64[4]):
    for i, k in grid(4, 4):
        c[i] += a[i, k] * b[k]


# AVX-512: eight rows of 8 floats, 16 ymm partial sums (two alternating sets of eight) in
# AVX-512VL's 32 registers, where AVX2's 16 would spill: 64 multiply-adds in 8 FMAs and 9
# loads, b loaded once for eight rows. 256-bit loads, not 512: numpy's rows start anywhere
# in a cache line, and a 64-byte load off a line's start reads two lines every time, a
# 32-byte one half the time (or never, 32 bytes in). Measured on an AVX-512 Xeon (one
# thread, 400 x 400 in L2, the rows 0, 16, 32 and 48 bytes into a line): 8.7, 10.3, 8.8,
# 10.3 us a product, against 8.5, 10.9, 10.8, 10.9 on eight rows of 16 (zmm) and 9.7,
# 11.9, 9.8, 11.9 on the 4x8 row: 7 units where four 4x8 calls cost 8.
@intrinsic("x86.avx512.gemv.f32.8x8", isa=("avx512f", "avx512vl", "fma"), cost=7.0,
           emitter=GemvF32(rows=8, width=8),
           layout={"a": Layout((1,), 4), "b": Layout((0,), 4)})
def avx512_gemv_f32_8x8(c: f32[8], a: f32[8, 8], b: f32[8]):
    for i, k in grid(8, 8):
        c[i] += a[i, k] * b[k]


# The 8x8 row on zmm: eight rows of 16 floats, 128 multiply-adds in 8 FMAs. On its own a
# product runs no faster on it (the 64-byte loads above), so it is priced above two 8x8
# calls and the extractor keeps those; a sweep that runs the transposed product on the
# same block (``rules/sweeps.py``) uses it with the 8x16 gemvt, where half the FMAs pay.
@intrinsic("x86.avx512.gemv.f32.8x16", isa=("avx512f", "fma"), cost=15.0,
           emitter=GemvF32(rows=8, width=16, sets=1),
           layout={"a": Layout((1,), 4), "b": Layout((0,), 4)})
def avx512_gemv_f32_8x16(c: f32[8], a: f32[8, 16], b: f32[16]):
    for i, k in grid(8, 16):
        c[i] += a[i, k] * b[k]


# ---------------------------------------------------------------------------
# matrix-vector product with the matrix read along its columns: axpy over rows


class AxpyRows(Emitter):
    """c (vectors x width floats) += a[0] * b: one row of a row-major matrix scaled by one
    element of the vector, the form of ``y[j] += A[i, j] * x[i]`` that reads A at unit
    stride. Along a k-loop of calls (the rows i) the accumulator stays in ``vectors``
    registers, in two alternating sets (``_alternate``): 2 x ``vectors`` independent FMA
    chains, where the 8-wide axpy's two chains leave it waiting on the FMA latency."""

    operands = ("c", "a", "b")
    unroll = 2
    interleaves = True  # plain vector values

    def __init__(self, vectors: int, width: int, dtype: str = "f32"):
        self.vectors, self.width = vectors, width
        n = vectors * width
        self.shapes = {"c": (n,), "a": (1,), "b": (n,)}
        self.dtypes = {"c": dtype, "a": dtype, "b": dtype}
        self.zero = _negative_zeros(dtype, width)

    def load_acc(self, b, ops):
        w = self.width
        return [[load_row(b, ops["c"], (w * v,), 0, w) for v in range(self.vectors)],
                [self.zero] * self.vectors]

    def step(self, b, ops, acc):
        w = self.width
        scale = splat(b, load_scalar(b, ops["a"], (0,)), w)
        return _alternate(b, acc, lambda part: [
            _fma(b, scale, load_row(b, ops["b"], (w * v,), 0, w), part[v])
            for v in range(self.vectors)])

    def store_acc(self, b, ops, acc):
        for v, total in enumerate(_joined(b, acc)):
            store_row(b, ops["c"], (self.width * v,), 0, total)


# AVX2: four ymm of a row per call, 32 multiply-adds in 4 FMAs, 5 loads, 8 chains.
# Measured (y += A^T x, 400 x 400, as the gemv rows): 9.5, 12.7, 9.5, 12.6 us against
# 13.3, 17.8, 13.4, 17.9 on the 8-wide axpy.
@intrinsic("x86.axpy.f32x32", isa=AVX2_FMA, cost=3.0, emitter=AxpyRows(vectors=4, width=8),
           layout={"c": Layout((0,), 4), "b": Layout((0,), 4)})
def axpy_f32x32(c: f32[32], a: f32[1], b: f32[32]):
    for j in range(32):
        c[j] += a[0] * b[j]


# On doubles: four ymm of four, 16 multiply-adds a call.
@intrinsic("x86.axpy.f64x16", isa=AVX2_FMA, cost=3.0, emitter=AxpyRows(vectors=4, width=4, dtype="f64"),
           layout={"c": Layout((0,), 8), "b": Layout((0,), 8)})
def axpy_f64x16(c: f64[16], a: f64[1], b: f64[16]):
    for j in range(16):
        c[j] += a[0] * b[j]


# AVX-512: eight ymm of a row per call in AVX-512VL's 32 registers (16 accumulators),
# 64 multiply-adds in 8 FMAs and 9 loads; ymm for rows that start anywhere in a line, as
# the 8x8 gemv: 9.2, 11.6, 9.2, 11.7 us against 8.1, 12.0, 11.9, 12.0 with zmm.
@intrinsic("x86.avx512.axpy.f32x64", isa=("avx512f", "avx512vl", "fma"), cost=5.0,
           emitter=AxpyRows(vectors=8, width=8),
           layout={"c": Layout((0,), 4), "b": Layout((0,), 4)})
def avx512_axpy_f32x64(c: f32[64], a: f32[1], b: f32[64]):
    for j in range(64):
        c[j] += a[0] * b[j]


class GemvtF32(Emitter):
    """c (width) += a (rows x width)^T @ b (rows): a block of rows of a row-major matrix
    against one element of the vector each, the block read along its rows (``s[j] += r[i] *
    A[i, j]`` over ``rows`` rows at once). ``step`` broadcasts each b, loads each row of the
    block and runs one FMA per row into a partial sum of its own (``rows`` chains, the
    first starting from c), added together once, in ``store_acc``. A single call (``emit``)
    is two chains, the even rows' from c and the odd rows', added at the end: the block of
    a sweep that another product over the same rows reads too (``rules/sweeps.py``), the
    rows' loads then shared with it. Both reassociate each element's sum, as every BLAS does."""

    operands = ("c", "a", "b")
    dtypes = {"c": "f32", "a": "f32", "b": "f32"}

    def __init__(self, rows: int, width: int):
        self.rows, self.width = rows, width
        self.shapes = {"c": (width,), "a": (rows, width), "b": (rows,)}
        self.zero = _negative_zeros("f32", width)

    def _terms(self, b, ops):
        return [(splat(b, load_scalar(b, ops["b"], (i,)), self.width),
                 load_row(b, ops["a"], (i, 0), 1, self.width)) for i in range(self.rows)]

    def load_acc(self, b, ops):
        return [load_row(b, ops["c"], (0,), 0, self.width)] + [self.zero] * (self.rows - 1)

    def step(self, b, ops, acc):
        return [_fma(b, x, row, part) for (x, row), part in zip(self._terms(b, ops), acc)]

    def store_acc(self, b, ops, acc):
        while len(acc) > 1:  # pairwise
            acc = [b.fadd(acc[i], acc[i + 1]) if i + 1 < len(acc) else acc[i]
                   for i in range(0, len(acc), 2)]
        store_row(b, ops["c"], (0,), 0, acc[0])

    def emit(self, b, ops):
        chains = [load_row(b, ops["c"], (0,), 0, self.width), self.zero]
        for i, (x, row) in enumerate(self._terms(b, ops)):
            chains[i % 2] = _fma(b, x, row, chains[i % 2])
        store_row(b, ops["c"], (0,), 0, b.fadd(chains[0], chains[1]))


# Eight rows of 8 (AVX-512VL, ymm) or 16 floats (zmm): 64 or 128 multiply-adds in 8 FMAs,
# 8 row loads and 8 broadcasts. Priced above the 64-wide axpy (5 for 64) and 8-wide ones
# (1 for 8), which read the matrix at unit stride along whole rows: a product on its own is
# planned on those; these rows serve a sweep that reads the same block for a gemv
# (``rules/sweeps.py``), which measured (bicg, 410 x 390, one thread) 9.4 us a sweep on the
# 8x16 pair against 11.3 on the gemv and the axpy one after the other.
@intrinsic("x86.avx512.gemvt.f32.8x8", isa=("avx512f", "avx512vl", "fma"), cost=9.0,
           emitter=GemvtF32(rows=8, width=8),
           layout={"c": Layout((0,), 4), "a": Layout((1,), 4)})
def avx512_gemvt_f32_8x8(c: f32[8], a: f32[8, 8], b: f32[8]):
    for k, j in grid(8, 8):
        c[j] += a[k, j] * b[k]


@intrinsic("x86.avx512.gemvt.f32.8x16", isa=("avx512f", "fma"), cost=17.0,
           emitter=GemvtF32(rows=8, width=16),
           layout={"c": Layout((0,), 4), "a": Layout((1,), 4)})
def avx512_gemvt_f32_8x16(c: f32[16], a: f32[8, 16], b: f32[8]):
    for k, j in grid(8, 16):
        c[j] += a[k, j] * b[k]


# ---------------------------------------------------------------------------
# u8 x i8 -> i32 dot products (the meaning of VNNI vpdpbusd)


def _b_block(b: ir.IRBuilder, ref, first: int = 0) -> ir.Value:
    """Rows ``first`` to ``first + 15`` of an int8 b[rows, 4] as one <64 x i8>, rows after
    each other: one load when rows are packed (the ``contiguous`` layout of ``b``), 16 row
    loads otherwise."""
    if ref.strides == (4, 1):
        return load_row(b, ref, (first, 0), 1, 64)  # unit inner stride: one 64-byte load
    return concat(b, [load_row(b, ref, (first + i, 0), 1, 4) for i in range(16)])


def _widened_chunks(b: ir.IRBuilder, ref) -> list:
    """The dot's b[16, 4] sign-extended to i16, as four <16 x i16> chunks of four rows each."""
    wide = b.sext(_b_block(b, ref), ir.VectorType(ir.IntType(16), 64))
    return [shuffle(b, wide, None, range(16 * r, 16 * r + 16)) for r in range(4)]


def _widened_a(b: ir.IRBuilder, ref, index, dim: int) -> ir.Value:
    """Four u8 of ``ref`` (from ``index`` along ``dim``) zero-extended to i16 and repeated
    four times, as one <16 x i16>: the four bytes broadcast as one i32 (``vpbroadcastd``
    from memory, a load) and spread into words by one ``vpshufb`` whose mask bytes with the
    high bit set write zeros. Zero-extending first and broadcasting the 64 bits after
    (``vmovd``, ``vpmovzxbw``, ``vpbroadcastq``) is two shuffles a row where this is one,
    and the AVX2 tiles' k-loops are bound by their shuffles and vpmaddwd."""
    i8x32 = ir.VectorType(ir.IntType(8), 32)
    word = b.bitcast(load_row(b, ref, index, dim, 4), ir.IntType(32))
    spread = [v for n in range(16) for v in (n % 4, -128)]  # word n: byte n % 4, then a zero
    pshufb = declare(b.module, "llvm.x86.avx2.pshuf.b", i8x32, [i8x32, i8x32])
    words = b.call(pshufb, [b.bitcast(splat(b, word, 8), i8x32), ir.Constant(i8x32, spread)])
    return b.bitcast(words, ir.VectorType(ir.IntType(16), 16))


def _pair_sums(b: ir.IRBuilder, ref, index, dim: int, chunks: list) -> ir.Value:
    """``vpmaddwd`` of four u8 of ``ref`` (from ``index`` along ``dim``), zero-extended and
    repeated for four rows (``_widened_a``), with each chunk: 32 i32 pair sums. Chunk r holds
    rows 4r..4r+3; lane m of its result is row 4r + m//2, pair m%2, so lane n of the joined
    result is row n//2."""
    i16x16, i32x8 = ir.VectorType(ir.IntType(16), 16), ir.VectorType(ir.IntType(32), 8)
    pmadd = declare(b.module, "llvm.x86.avx2.pmadd.wd", i32x8, [i16x16, i16x16])
    a16 = _widened_a(b, ref, index, dim)  # a, 4 rows' worth
    return concat(b, [b.call(pmadd, [a16, chunk]) for chunk in chunks])


def _folded(b: ir.IRBuilder, pairs: ir.Value) -> ir.Value:
    """32 pair sums (lane n: row n//2) as 16 row sums."""
    return b.add(shuffle(b, pairs, None, range(0, 32, 2)), shuffle(b, pairs, None, range(1, 32, 2)))


class _DotU8I8I32_16x4(Emitter):
    """The operands of c[i] += sum_k u8 a[k] * i8 b[i, k], which AVX2 and VNNI emit each
    their own way."""

    operands = ("c", "a", "b")
    shapes = {"c": (16,), "a": (4,), "b": (16, 4)}
    dtypes = {"c": "i32", "a": "u8", "b": "i8"}


class DotU8I8I32_16x4(_DotU8I8I32_16x4):
    """c[i] += sum_k u8 a[k] * i8 b[i, k], exactly.

    AVX2 has no vpdpbusd. vpmaddubsw would multiply u8 by i8 directly, but it adds pairs with
    int16 saturation (255 * -128 * 2 does not fit). Instead both sides are widened to i16
    (u8 zero-extends, i8 sign-extends; every product fits in i32) and vpmaddwd multiplies
    and adds adjacent pairs into i32 with no saturation.

    The accumulator is c plus 32 pair sums (two per row). ``step`` only adds vpmaddwd results
    to the pair sums; folding each row's two pairs into c happens once, in ``store_acc``, so
    a k-loop of calls does no shuffles. i32 addition wraps and is associative: still exact."""

    PAIRS = ir.VectorType(ir.IntType(32), 32)

    def load_acc(self, b, ops):
        return [load_row(b, ops["c"], (0,), 0, 16), ir.Constant(self.PAIRS, [0] * 32)]

    def step(self, b, ops, acc):
        pairs = _pair_sums(b, ops["a"], (0,), 0, _widened_chunks(b, ops["b"]))
        return [acc[0], b.add(acc[1], pairs)]

    def store_acc(self, b, ops, acc):
        c, pairs = acc
        store_row(b, ops["c"], (0,), 0, b.add(c, _folded(b, pairs)))


@intrinsic("x86.dot.u8i8i32.16x4", isa=AVX2_FMA, cost=4.0, emitter=DotU8I8I32_16x4(),
           layout={"c": Layout((0,), 4), "b": Layout((1,), 1, contiguous=True)})
def dot_u8i8i32_16x4(c: i32[16], a: u8[4], b: i8[16, 4]):
    for i, k in grid(16, 4):
        c[i] += i32(a[k]) * i32(b[i, k])


class DotU8I8I32_2x16x4(Emitter):
    """c (2x16) += a (2x4) @ b (16x4)^T in u8 x i8 -> i32, exactly: the 16x4 dot for two rows of
    A at once. b's block is loaded and widened to i16 once per step and feeds both rows'
    ``vpmaddwd``; each row keeps 32 pair sums (four ymm registers), folded into c once, in
    ``store_acc``. With the widened block (four registers), a row's broadcast operand and
    the ``vpshufb`` mask that widens it (``_widened_a``) that is 14 of the 16 ymm registers,
    and a ``vpmaddwd`` result is the 15th; a third row would spill."""

    rows = 2
    operands = ("c", "a", "b")
    shapes = {"c": (2, 16), "a": (2, 4), "b": (16, 4)}
    dtypes = {"c": "i32", "a": "u8", "b": "i8"}
    PAIRS = ir.VectorType(ir.IntType(32), 32)

    def load_acc(self, b, ops):
        return [[load_row(b, ops["c"], (r, 0), 1, 16), ir.Constant(self.PAIRS, [0] * 32)]
                for r in range(self.rows)]

    def step(self, b, ops, acc):
        chunks = _widened_chunks(b, ops["b"])  # once, for both rows
        return [[c, b.add(pairs, _pair_sums(b, ops["a"], (r, 0), 1, chunks))]
                for r, (c, pairs) in enumerate(acc)]

    def store_acc(self, b, ops, acc):
        for r, (c, pairs) in enumerate(acc):
            store_row(b, ops["c"], (r, 0), 1, b.add(c, _folded(b, pairs)))


# two rows of the 16x4 dot (cost 4) for the widening of one block of b
@intrinsic("x86.mm.u8i8i32.2x16x4", isa=AVX2_FMA, cost=7.0, emitter=DotU8I8I32_2x16x4(),
           layout={"c": Layout((1,), 4), "b": Layout((1,), 1, contiguous=True)})
def mm_u8i8i32_2x16x4(c: i32[2, 16], a: u8[2, 4], b: i8[16, 4]):
    for i, j, k in grid(2, 16, 4):
        c[i, j] += i32(a[i, k]) * i32(b[j, k])


class VnniDotU8I8I32_16x4(_DotU8I8I32_16x4):
    """c[i] += sum_k u8 a[k] * i8 b[i, k] in one ``vpdpbusd``: lane i of the 512-bit
    instruction multiplies the four u8 bytes of its first source by the four i8 bytes of
    its second and adds the four products (each fits in i16, their sum in i32) to c[i] with
    wrapping i32 addition: the semantics exactly, with no intermediate saturation (that is
    ``vpdpbusds``). a's four bytes are one i32 broadcast to the 16 lanes; b is the 64-byte
    block of rows. Along k the accumulator is c plus a second sum, in two zmm registers."""

    I32X16 = ir.VectorType(ir.IntType(32), 16)
    unroll = 2  # the two sums trade places every step

    def load_acc(self, b, ops):
        return [load_row(b, ops["c"], (0,), 0, 16), ir.Constant(self.I32X16, [0] * 16)]

    def step(self, b, ops, acc):
        # the pre-LLVM-21 operand types, which LLVM still reads (and upgrades) today
        dpbusd = declare(b.module, "llvm.x86.avx512.vpdpbusd.512", self.I32X16,
                         [self.I32X16, self.I32X16, self.I32X16])
        a = splat(b, b.bitcast(load_row(b, ops["a"], (0,), 0, 4), ir.IntType(32)), 16)
        rows = b.bitcast(_b_block(b, ops["b"]), self.I32X16)
        # two alternating accumulators cover vpdpbusd's latency; i32 addition wraps and is
        # associative, so the split sum is still exact
        return [acc[1], b.call(dpbusd, [acc[0], a, rows])]

    def store_acc(self, b, ops, acc):
        store_row(b, ops["c"], (0,), 0, b.add(acc[0], acc[1]))


class _I32Blocks(Emitter):
    """An int8 tile whose accumulators are ``rows`` x ``halves`` vectors of ``lanes`` i32,
    started at zero, with c added once after the k-loop: ``load_acc`` only prefetches c's
    lines, and a block just filled with a constant (``starts_fresh``, as ``MmF32``'s) is
    neither prefetched nor read. i32 addition wraps and is associative, so adding c last
    is the same sum."""

    lanes: int
    starts_fresh = True

    def load_acc(self, b, ops):
        _prefetch_rows(b, ops["c"], self.rows, self.lanes * self.halves)
        return self.fresh_acc(b, ops)

    def fresh_acc(self, b, ops):
        zero = ir.Constant(ir.VectorType(ir.IntType(32), self.lanes), [0] * self.lanes)
        return [[zero] * self.halves for _ in range(self.rows)]

    def store_acc(self, b, ops, acc):
        self._added(b, ops, acc, None)

    def store_fresh(self, b, ops, acc, value):
        self._added(b, ops, acc, splat(b, value, self.lanes))

    def _added(self, b, ops, acc, c) -> None:
        """c's block (``c`` for each of its vectors, if given) plus ``acc``, stored into c."""
        n = self.lanes
        for i in range(self.rows):
            for h in range(self.halves):
                old = load_row(b, ops["c"], (i, n * h), 1, n) if c is None else c
                store_row(b, ops["c"], (i, n * h), 1, b.add(old, acc[i][h]))


class _VnniTile(_I32Blocks):
    """An 8x32 tile on AVX-512 VNNI: 16 zmm accumulators (8 rows, two halves of 16 columns);
    ``step`` loads b's 128-byte block once (two zmm, ``b_half``), broadcasts each row's 32
    bits of a as one i32 (``a_row``) and runs 16 independent ``instruction``: each b element
    loaded feeds 8 rows."""

    rows, halves, lanes = 8, 2, 16
    operands = ("c", "a", "b")
    I32X16 = ir.VectorType(ir.IntType(32), 16)
    instruction: str

    def b_half(self, b, ref, first: int) -> ir.Value:
        raise NotImplementedError

    def a_row(self, b, ref, i: int) -> ir.Value:
        raise NotImplementedError

    def step(self, b, ops, acc):
        fn = declare(b.module, self.instruction, self.I32X16, [self.I32X16, self.I32X16, self.I32X16])
        halves = [b.bitcast(self.b_half(b, ops["b"], 16 * h), self.I32X16) for h in range(self.halves)]
        out = []
        for i in range(self.rows):
            a_i = splat(b, b.bitcast(self.a_row(b, ops["a"], i), ir.IntType(32)), 16)
            out.append([b.call(fn, [acc[i][h], a_i, halves[h]]) for h in range(self.halves)])
        return out


class VnniMmU8I8I32_8x32x4(_VnniTile):
    """c (8x32) += a (8x4) @ b (32x4)^T in u8 x i8 -> i32, the register-blocked int8 tile:
    ``_VnniTile`` with ``vpdpbusd``, each row's four bytes of a broadcast: each b byte loaded
    feeds 8 rows, where the 16x4 dot reloads it per row. Exact, as the dot (wrapping i32
    sums of products that fit in i16).

    The accumulators start at zero and c is added in ``store_acc``, once, after the k-loop;
    ``load_acc`` only prefetches c's lines. A GEMM's c block is rarely in cache when its
    k-loop starts (the rows are a matrix row apart, beyond what the hardware prefetchers
    follow), and a load there stalls the first ``vpdpbusd`` of every row until it arrives;
    the prefetch has the whole k-loop to land. i32 addition wraps and is associative, so
    adding c last is the same sum."""

    shapes = {"c": (8, 32), "a": (8, 4), "b": (32, 4)}
    dtypes = {"c": "i32", "a": "u8", "b": "i8"}
    instruction = "llvm.x86.avx512.vpdpbusd.512"

    def b_half(self, b, ref, first):
        return _b_block(b, ref, first)

    def a_row(self, b, ref, i):
        return load_row(b, ref, (i, 0), 1, 4)


# 1024 multiply-adds in 16 vpdpbusd, 2 block loads and 8 broadcasts, where 16 dots need 16
# vpdpbusd and 32 loads
@intrinsic("x86.avx512vnni.mm.u8i8i32.8x32x4", isa=("avx512f", "avx512vnni"), cost=10.0,
           emitter=VnniMmU8I8I32_8x32x4(),
           layout={"c": Layout((1,), 4), "a": Layout((1,), 1), "b": Layout((1,), 1, contiguous=True)})
def avx512vnni_mm_u8i8i32_8x32x4(c: i32[8, 32], a: u8[8, 4], b: i8[32, 4]):
    for i, j, k in grid(8, 32, 4):
        c[i, j] += i32(a[i, k]) * i32(b[j, k])


@intrinsic("x86.avx512vnni.dot.u8i8i32.16x4", isa=("avx512f", "avx512vnni"), cost=1.0,
           emitter=VnniDotU8I8I32_16x4(),
           layout={"c": Layout((0,), 4), "b": Layout((1,), 1, contiguous=True)})
def avx512vnni_dot_u8i8i32_16x4(c: i32[16], a: u8[4], b: i8[16, 4]):
    for i, k in grid(16, 4):
        c[i] += i32(a[k]) * i32(b[i, k])


# ---------------------------------------------------------------------------
# u8 x i8 -> i32 from i16 copies: the AVX2 GEMM tile


def _i16_pairs(b: ir.IRBuilder, ref, index, n: int) -> ir.Value:
    """``n`` pairs of ``ref`` (a [.., 2] operand) from ``index`` (pair after pair along the
    first dim, the two elements of each along the second) as <2n x i16>, each element's
    value: a plain load from a block of an i16 copy (strides (2, 1)); otherwise the pairs
    loaded as they lie (the two rows of ``n`` along the first dim and interleaved, when that
    dim is the unit-stride one: B[k, j] read in place) and sign- or zero-extended as their
    dtype says."""
    i16 = ir.IntType(16)
    if ref.dtype == "i16" and ref.strides[-1] == 1 and (n == 1 or ref.strides[0] == 2):
        return load_row(b, ref, index, len(index) - 1, 2 * n)
    first = index[0]
    if n > 1 and ref.strides[0] == 1 and ref.strides[-1] != 1:
        rows = [load_row(b, ref, (first, index[1] + q), 0, n) for q in range(2)]
        pairs = shuffle(b, rows[0], rows[1], [v for i in range(n) for v in (i, n + i)])
    else:
        pairs = concat(b, [load_row(b, ref, (first + i,) + tuple(index[1:]), len(index) - 1, 2)
                           for i in range(n)])
    if ref.dtype == "i16":
        return pairs
    wide = ir.VectorType(i16, 2 * n)
    return b.zext(pairs, wide) if ref.dtype == "u8" else b.sext(pairs, wide)


class MmU8I8I32Pairs(_I32Blocks):
    """c (rows x 16) += a (rows x 2) @ b (16 x 2)^T in u8 x i8 -> i32, exactly, from i16 copies
    of a and b (``Layout.widened``: ``pack-panel`` sign- or zero-extends each element once,
    where the 2x16x4 tile widens every block of b again for each call).

    ``vpmaddwd`` of a row's pair ``(a[i, 0], a[i, 1])``, broadcast as one i32 to the eight
    lanes (``vpbroadcastd`` from memory: a load, no shuffle), with the eight columns' pairs
    ``(b[j, 0], b[j, 1])`` (one 32-byte load) is each column's whole two-term sum: one
    ``vpaddd`` into its accumulator, no pair sums to fold and no shuffle in the step. The
    products of i16 values fit in i32 and vpmaddwd adds the two without saturation (its one
    overflow, both pairs -32768 * -32768, wraps as i32 addition does, and a u8 or i8 value
    never gives it), so every accumulator is the exact wrapping i32 sum.

    Four rows: eight accumulators, two b vectors, a broadcast and a product, 12 of the 16
    ymm registers; every step is 8 ``vpmaddwd``, 8 ``vpaddd``, two loads and four
    broadcasts. Measured on Zen 4 with Zen 3 code, the k-loop in L1 (``intrinsics --bench``)
    ran 0.76-0.79 of the ``vpmaddwd`` ceiling on four rows, five rows or six (12
    accumulators, the 16 registers), against 0.54 for the 2x16x4 tile; 24 or 32 columns
    (four or three rows) ran 0.45-0.5. Of the 1024^3 product on one core, four rows
    ran 13.5-13.8 ms, six (the product padded to 1026 rows) 13.7-14.2. The
    accumulators start at zero and c is added once, after the k-loop (prefetched before it),
    as ``VnniMmU8I8I32_8x32x4`` does. Read from u8 and i8 (a window no copy widened), each
    step widens its operands itself: correct, and slow."""

    operands = ("c", "a", "b")
    dtypes = {"c": "i32", "a": "u8", "b": "i8"}
    lanes = 8
    I32X8 = ir.VectorType(ir.IntType(32), 8)
    I16X16 = ir.VectorType(ir.IntType(16), 16)

    def __init__(self, rows: int, halves: int = 2):
        self.rows, self.halves = rows, halves
        self.shapes = {"c": (rows, 8 * halves), "a": (rows, 2), "b": (8 * halves, 2)}

    def step(self, b, ops, acc):
        pmadd = declare(b.module, "llvm.x86.avx2.pmadd.wd", self.I32X8, [self.I16X16, self.I16X16])
        cols = [_i16_pairs(b, ops["b"], (8 * h, 0), 8) for h in range(self.halves)]
        out = []
        for i in range(self.rows):
            pair = b.bitcast(_i16_pairs(b, ops["a"], (i, 0), 1), ir.IntType(32))
            a_i = b.bitcast(splat(b, pair, 8), self.I16X16)
            out.append([b.add(acc[i][h], b.call(pmadd, [a_i, cols[h]])) for h in range(self.halves)])
        return out


_WIDENED = {"c": Layout((1,), 4), "a": Layout((1,), 1, widened="i16"),
            "b": Layout((1,), 1, contiguous=True, widened="i16")}


# 128 multiply-adds, as the 2x16x4 tile (cost 7), at 1.45 times its rate in L1
@intrinsic("x86.mm.u8i8i32.4x16x2", isa=AVX2_FMA, cost=5.0, emitter=MmU8I8I32Pairs(rows=4),
           layout=_WIDENED)
def mm_u8i8i32_4x16x2(c: i32[4, 16], a: u8[4, 2], b: i8[16, 2]):
    for i, j, k in grid(4, 16, 2):
        c[i, j] += i32(a[i, k]) * i32(b[j, k])


class MmI16I32Pairs(MmU8I8I32Pairs):
    """c (rows x 16) += a (rows x 2) @ b (16 x 2)^T in i16 x i16 -> i32, exactly:
    ``MmU8I8I32Pairs``'s steps on operands that are ``vpmaddwd``'s own input, read as they
    lie (a window of i16 pairs, ``_i16_pairs``). Exact: each product of two i16 values fits
    in i32, and the pair's sum overflows only for both pairs -32768 * -32768, 2^31, which
    ``vpmaddwd`` wraps to -2^31 as i32 addition does. Int16 activations or weights (TFLite's
    16-bit quantization, audio and DSP fixed point) multiply on it."""

    dtypes = {"c": "i32", "a": "i16", "b": "i16"}


# the pairs of b contiguous (its 16 x 2 block one 64-byte load pair): pack-panel lays b out so
_I16_PAIRS = {"c": Layout((1,), 4), "a": Layout((1,), 2), "b": Layout((1,), 2, contiguous=True)}


@intrinsic("x86.mm.i16i32.4x16x2", isa=AVX2_FMA, cost=5.0, emitter=MmI16I32Pairs(rows=4),
           layout=_I16_PAIRS)
def mm_i16i32_4x16x2(c: i32[4, 16], a: i16[4, 2], b: i16[16, 2]):
    for i, j, k in grid(4, 16, 2):
        c[i, j] += i32(a[i, k]) * i32(b[j, k])


class VnniMmI16I32_8x32x2(_VnniTile):
    """c (8x32) += a (8x2) @ b (32x2)^T in i16 x i16 -> i32, the register-blocked 16-bit
    tile on AVX-512 VNNI: ``_VnniTile`` with ``vpdpwssd``, which adds the two products of
    each lane's i16 pair into its i32 accumulator, each row's pair of a broadcast as one
    i32. Exact: each product fits in i32 and the sum wraps as i32 addition does
    (``vpdpwssd`` does not saturate)."""

    shapes = {"c": (8, 32), "a": (8, 2), "b": (32, 2)}
    dtypes = {"c": "i32", "a": "i16", "b": "i16"}
    instruction = "llvm.x86.avx512.vpdpwssd.512"

    def b_half(self, b, ref, first):
        return _i16_pairs(b, ref, (first, 0), 16)

    def a_row(self, b, ref, i):
        return _i16_pairs(b, ref, (i, 0), 1)


# 512 multiply-adds in 16 vpdpwssd, 2 block loads and 8 broadcasts
@intrinsic("x86.avx512vnni.mm.i16i32.8x32x2", isa=("avx512f", "avx512vnni"), cost=10.0,
           emitter=VnniMmI16I32_8x32x2(),
           layout={"c": Layout((1,), 4), "a": Layout((1,), 2), "b": Layout((1,), 2, contiguous=True)})
def avx512vnni_mm_i16i32_8x32x2(c: i32[8, 32], a: i16[8, 2], b: i16[32, 2]):
    for i, j, k in grid(8, 32, 2):
        c[i, j] += i32(a[i, k]) * i32(b[j, k])


# i16 activations times i8 weights (TFLite's 16x8 quantization): the i16 tiles' steps, b
# widened to i16 once by pack-panel (``Layout.widened``, exact) or as each step reads it


class MmI16I8I32Pairs(MmU8I8I32Pairs):
    """``MmI16I32Pairs`` with b in i8, sign-extended to i16 (``_i16_pairs``)."""

    dtypes = {"c": "i32", "a": "i16", "b": "i8"}


class VnniMmI16I8I32_8x32x2(VnniMmI16I32_8x32x2):
    """``VnniMmI16I32_8x32x2`` with b in i8, sign-extended to i16 (``_i16_pairs``)."""

    dtypes = {"c": "i32", "a": "i16", "b": "i8"}


_I16_I8 = {"c": Layout((1,), 4), "a": Layout((1,), 2), "b": Layout((1,), 1, contiguous=True, widened="i16")}


@intrinsic("x86.mm.i16i8i32.4x16x2", isa=AVX2_FMA, cost=5.0, emitter=MmI16I8I32Pairs(rows=4),
           layout=_I16_I8)
def mm_i16i8i32_4x16x2(c: i32[4, 16], a: i16[4, 2], b: i8[16, 2]):
    for i, j, k in grid(4, 16, 2):
        c[i, j] += i32(a[i, k]) * i32(b[j, k])


@intrinsic("x86.avx512vnni.mm.i16i8i32.8x32x2", isa=("avx512f", "avx512vnni"), cost=10.0,
           emitter=VnniMmI16I8I32_8x32x2(), layout=_I16_I8)
def avx512vnni_mm_i16i8i32_8x32x2(c: i32[8, 32], a: i16[8, 2], b: i8[32, 2]):
    for i, j, k in grid(8, 32, 2):
        c[i, j] += i32(a[i, k]) * i32(b[j, k])
