"""x86 AMX (Advanced Matrix Extensions): int8 matrix products on tile registers.

A tile register holds up to 16 rows of 64 bytes. ``tdpbusd`` multiplies a tile of u8 rows
(16 rows of 64 k) by a tile of i8 laid out four k at a time per column (16 rows of
``[j][k % 4]``, one row per group of four k) and adds the i32 dot products of each group
of four, 16 x 16 of them, into an accumulator tile: 16 x 16 x 64 multiply-adds, exactly
(each group of four products fits in i32 and the sums wrap, as the semantics say).

The tiles are configured in memory (``ldtilecfg``: palette 1, rows and bytes per row of each
tile) and the process must ask Linux for the AMX state before its first AMX instruction;
``rewrite.target`` does that once and reports the AMX features only if it was granted, so a
kernel using these rows never stops on an illegal instruction.

LLVM's register-number forms of the intrinsics (``llvm.x86.tileloadd64``, ``llvm.x86.tdpbusd``,
...) name each tile by an immediate and need no ``x86_amx`` values: the accumulators stay in
their tile registers across a k-loop of calls (``load_acc`` loads them, ``step`` only loads
operands and multiplies, ``store_acc`` stores them), so the phi nodes carry nothing.
"""

from __future__ import annotations

from llvmlite import ir

from rewrite.emitter import (I64, Emitter, Ref, concat, counted_loop, declare, load_row, shuffle,
                             store_row)
from rewrite.script import grid, i8, i32, u8  # noqa: F401 - names the parser reads

from .base import Layout, intrinsic

I8 = ir.IntType(8)
PTR = ir.PointerType()
VOID = ir.VoidType()
ROWS, ROW_BYTES = 16, 64  # every tile here: 16 rows of 64 bytes


def _tile_config(module: ir.Module) -> ir.GlobalVariable:
    """The 64-byte configuration ``ldtilecfg`` reads: palette 1, and for each of the 8 tiles
    16 rows of 64 bytes (bytes 16-31: bytes per row, u16 per tile; bytes 48-55: rows)."""
    name = "tensorize.amx.config"
    existing = module.globals.get(name)
    if existing is not None:
        return existing
    data = bytearray(64)
    data[0] = 1  # palette 1
    for t in range(8):
        data[16 + 2 * t] = ROW_BYTES  # little-endian u16
        data[48 + t] = ROWS
    ty = ir.ArrayType(I8, 64)
    g = ir.GlobalVariable(module, ty, name)
    g.global_constant = True
    g.linkage = "private"
    g.align = 64
    g.initializer = ir.Constant(ty, bytearray(data))
    return g


_SIGNATURES = {"ldtilecfg": [PTR], "tilerelease": [], "tileloadd64": [I8, PTR, I64],
               "tilestored64": [I8, PTR, I64], "tdpbusd": [I8, I8, I8]}


def _amx(b: ir.IRBuilder, name: str, args: list) -> None:
    """Call ``llvm.x86.<name>``: tile numbers (Python ints) as i8 immediates, then pointers
    and strides."""
    fn = declare(b.module, f"llvm.x86.{name}", VOID, _SIGNATURES[name])
    b.call(fn, [ir.Constant(I8, a) if isinstance(a, int) else a for a in args])


def _scratch(b: ir.IRBuilder, dtype: str) -> ir.Value:
    """One tile's worth (1 KB) of ``dtype`` elements in the function's entry, so a loop of
    calls reuses it."""
    ety = _element(dtype)
    with b.goto_entry_block():
        ptr = b.alloca(ety, size=ROWS * ROW_BYTES // _size(dtype))
        ptr.align = 64
    return ptr


def _element(dtype: str) -> ir.Type:
    return ir.IntType(8 * _size(dtype))


def _size(dtype: str) -> int:
    return 4 if dtype == "i32" else 1


def _rows_stride(b: ir.IRBuilder, ref: Ref, size: int) -> ir.Value:
    """Bytes from one tile row to the next: the operand's first stride."""
    s = ref.strides[0]
    if isinstance(s, int):
        return ir.Constant(I64, s * size)
    return b.mul(s, ir.Constant(I64, size))


def _row_at(b: ir.IRBuilder, scratch: ir.Value, vec: ir.VectorType, row: ir.Value) -> ir.Value:
    """Row ``row`` of ``scratch``, as a pointer to a 64-byte vector ``vec``."""
    ety = vec.element
    at = b.gep(scratch, [b.mul(row, ir.Constant(I64, ROW_BYTES // (ety.width // 8)))],
               source_etype=ety)
    return b.bitcast(at, vec.as_pointer())


def _rows_in(b: ir.IRBuilder, ref: Ref, first: int, middle: int, scratch: ir.Value) -> None:
    """Tile rows of an int8 operand ``x[row, m, kk]`` (16 rows from ``first`` along dim 0,
    16 of dim 1 from ``middle``, 4 of dim 2) into ``scratch``, 64 bytes a row ordered
    ``[m][kk]``, in a loop over the rows: where dim 2 runs at unit stride (``B[j, k]``), 16
    runs of 4 bytes joined; else four runs of 16 along dim 1 (one load each at unit stride,
    ``B[k, j]``; gathered otherwise) interleaved by one shuffle."""
    def row(r: ir.Value) -> None:
        at = b.add(r, ir.Constant(I64, first))
        if ref.strides[2] == 1:
            line = concat(b, [load_row(b, ref, (at, middle + m, 0), 2, 4) for m in range(16)])
        else:
            runs = [load_row(b, ref, (at, middle, kk), 1, 16) for kk in range(4)]
            line = shuffle(b, concat(b, runs), None,
                           [16 * kk + m for m in range(16) for kk in range(4)])
        b.store(line, _row_at(b, scratch, line.type, r), align=1)

    counted_loop(b, ir.Constant(I64, 0), ir.Constant(I64, ROWS), row, known_nonempty=True)


def _rows_c(b: ir.IRBuilder, ref: Ref, origin: tuple, scratch: ir.Value, into: bool) -> None:
    """A 16 x 16 block of the i32 output at ``origin`` to (``into``) or from ``scratch``, a
    row of 16 at a time (one vector at unit stride, element by element otherwise)."""
    vec = ir.VectorType(ir.IntType(32), 16)

    def row(r: ir.Value) -> None:
        at = (b.add(r, ir.Constant(I64, origin[0])), origin[1])
        there = _row_at(b, scratch, vec, r)
        if into:
            b.store(load_row(b, ref, at, 1, 16), there, align=4)
        else:
            store_row(b, ref, at, 1, b.load(there, typ=vec, align=4))

    counted_loop(b, ir.Constant(I64, 0), ir.Constant(I64, ROWS), row, known_nonempty=True)


class AmxMmU8I8I32(Emitter):
    """c (32x32) += a (32x64) @ b (64x32) in u8 x i8 -> i32: four accumulator tiles (2 x 2
    blocks of 16 x 16 i32), two tiles of a (16 rows of 64 u8 each) and two of b (16 groups of
    four k, 16 columns each), four ``tdpbusd`` per step: each tile loaded feeds two products.

    ``a[i, k4, kk]`` is row i's byte ``4 * k4 + kk``; ``b[k4, j, kk]`` is the layout
    ``tdpbusd`` reads (a tile row holds four consecutive k of 16 columns). Rows come straight
    from the operands when their inner strides are those of the shape ((4, 1) for a, (4, 1)
    for b's columns and bytes: a packed block), else through a scratch block."""

    operands = ("c", "a", "b")
    shapes = {"c": (32, 32), "a": (32, 16, 4), "b": (16, 32, 4)}
    dtypes = {"c": "i32", "a": "u8", "b": "i8"}
    C0, A0, B0 = 0, 4, 6  # tile numbers: accumulators 0-3, a 4-5, b 6-7

    def _config(self, b: ir.IRBuilder) -> None:
        _amx(b, "ldtilecfg", [_tile_config(b.module)])

    def _load(self, b, tile: int, ref: Ref, origin: tuple, fast: bool) -> None:
        size = _size(ref.dtype)
        if fast:
            _amx(b, "tileloadd64", [tile, ref.at(b, origin), _rows_stride(b, ref, size)])
            return
        scratch = _scratch(b, ref.dtype)
        if ref.dtype == "i32":
            _rows_c(b, ref, origin, scratch, True)
        else:
            _rows_in(b, ref, origin[0], origin[1], scratch)
        _amx(b, "tileloadd64", [tile, scratch, ir.Constant(I64, ROW_BYTES)])

    @staticmethod
    def _c_fast(ref: Ref) -> bool:
        return ref.strides[1] == 1

    @staticmethod
    def _in_fast(ref: Ref) -> bool:
        return ref.strides[1:] == (4, 1)

    def load_acc(self, b, ops):
        self._config(b)
        c = ops["c"]
        for t in range(4):
            r, h = divmod(t, 2)
            self._load(b, self.C0 + t, c, (16 * r, 16 * h), self._c_fast(c))
        return []

    def step(self, b, ops, acc):
        a, bb = ops["a"], ops["b"]
        for t in range(2):
            self._load(b, self.A0 + t, a, (16 * t, 0, 0), self._in_fast(a))
        # b's half t: columns 16t..16t+15 of every group of four k; packed, a tile row of 64
        # bytes starts 64t bytes into the group's 128
        for t in range(2):
            self._load(b, self.B0 + t, bb, (0, 16 * t, 0), self._in_fast(bb))
        for r in range(2):
            for h in range(2):
                _amx(b, "tdpbusd", [self.C0 + 2 * r + h, self.A0 + r, self.B0 + h])
        return acc

    def store_acc(self, b, ops, acc):
        c = ops["c"]
        for t in range(4):
            r, h = divmod(t, 2)
            origin = (16 * r, 16 * h)
            if self._c_fast(c):
                _amx(b, "tilestored64", [self.C0 + t, c.at(b, origin), _rows_stride(b, c, 4)])
            else:
                scratch = _scratch(b, c.dtype)
                _amx(b, "tilestored64", [self.C0 + t, scratch, ir.Constant(I64, ROW_BYTES)])
                _rows_c(b, c, origin, scratch, False)
        _amx(b, "tilerelease", [])


# 65 536 multiply-adds in four tdpbusd and four tile loads. In a k-loop on one core of a
# Xeon with AMX it ran 4.8 times the 8x32x4 VNNI tile (1 400 against 290 GOP/s, same run),
# whose cost of 10 per 1 024 would make 640 here: 130.
@intrinsic("x86.amx.mm.u8i8i32.32x32x64", isa=("amx-tile", "amx-int8"), cost=130.0,
           emitter=AmxMmU8I8I32(),
           layout={"c": Layout((1,), 4), "a": Layout((2,), 1),
                   "b": Layout((2,), 1, contiguous=True)})
def amx_mm_u8i8i32_32x32x64(c: i32[32, 32], a: u8[32, 16, 4], b: i8[16, 32, 4]):
    for i, j, k4, kk in grid(32, 32, 16, 4):
        c[i, j] += i32(a[i, k4, kk]) * i32(b[k4, j, kk])
