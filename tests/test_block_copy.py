"""Transposing copies emitted in blocks: a block of the store's contiguous elements read as
a few contiguous runs of the source and permuted by one shufflevector (``codegen.block_copy``),
and transposes in square blocks of runs read along one loop and stored along the other
(``codegen.block_transpose``). Every such copy, compiled, is the interpreter's copy bit for
bit; the int8 product's A panel and the packing of a transposed operand take those paths,
and copies that read in their store's order do not."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from rewrite import lower, runtime
from rewrite.codegen import block_copy, block_transpose
from rewrite.inputs import random_args
from rewrite.ir import Call, For, Load, Store, walk_stmts
from rewrite.script import parse
from .test_codegen import compiled_and_interpreted

HEADER = "from rewrite.script import prim_func, grid, u8, i8, i16, i32, f32, f16, f64\n"


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TENSORIZE_CACHE_DIR", str(tmp_path / "cache"))


def _lowered(func, find) -> list:
    """What ``find`` says of each loop of ``func`` as codegen meets it (after lowering,
    which may reorder loops or unroll one across rows; a parallel body's outer loop
    included), where it says something."""
    return [x for body in lower.lower(func).bodies for s in walk_stmts(body.stmt)
            if isinstance(s, For) if (x := find(s)) is not None]


def blocks(func) -> list:
    """The copies of ``func`` that codegen emits in blocks."""
    return _lowered(func, block_copy)


def transposes(func) -> list:
    """The transposes of ``func`` that codegen emits in square blocks."""
    return _lowered(func, block_transpose)


def assert_compiled_is_interpreted(func, seed=0, threads=1):
    """Bit for bit, NaN payloads and signed zeros included: on finite inputs, and on inputs
    half of whose float elements are NaN, +-Inf, +-0 or subnormal."""
    for special in (False, True):
        args = random_args(func, seed, special=special, density=0.5 if special else None)
        want, got = compiled_and_interpreted(func, args, threads)
        for b in func.outputs:
            assert want[b.name].tobytes() == got[b.name].tobytes(), b.name


# the int8 A panel of the 4x16x2 tile: u8 widened to i16 pairs over four rows
INT8_A_PANEL = HEADER + """
@prim_func
def a_panel(A: u8[64, 96], P: i16[16, 48, 4, 2]):
    for i_o, k_o, i_i, k_i in grid(16, 48, 4, 2):
        P[i_o, k_o, i_i, k_i] = i16(A[i_i + 4 * i_o, k_i + 2 * k_o])
"""

# i8 sign-extended to i32 pairs, 13 pairs of columns: blocks of 4, the last one element by
# element
SIGNED_PANEL = HEADER + """
@prim_func
def a_panel(A: i8[12, 26], P: i32[3, 13, 4, 2]):
    for i_o, k_o, i_i, k_i in grid(3, 13, 4, 2):
        P[i_o, k_o, i_i, k_i] = i32(A[i_i + 4 * i_o, k_i + 2 * k_o])
"""

# a copy that reads in its store's order: LLVM's own vectoriser takes it
ROW_COPY = HEADER + """
@prim_func
def rows(A: f32[36, 32], P: f32[36, 32]):
    for i, k in grid(36, 32):
        P[i, k] = A[i, k]
"""


@pytest.mark.parametrize("src", [INT8_A_PANEL, SIGNED_PANEL])
def test_panel_copies_run_in_blocks_and_match_the_interpreter(src):
    func = parse(src)
    assert len(blocks(func)) == 1
    assert "shufflevector" in runtime.emit_llvm(func, optimized=False)
    for seed in range(3):
        assert_compiled_is_interpreted(func, seed)


def test_a_copy_in_store_order_is_left_to_llvm():
    assert blocks(parse(ROW_COPY)) == [] and transposes(parse(ROW_COPY)) == []


# packing a transposed operand: 8 x 8 blocks of f32, 5 rows and 3 columns left over, the
# source read from an offset
F32_TRANSPOSE = HEADER + """
@prim_func
def pack(B: f32[40, 40], P: f32[37, 35]):
    for k, j in grid(37, 35):
        P[k, j] = B[j + 4, k + 2]
"""

# u8 widened to i16 (16 x 16 bytes a block, capped at 8 x 8), and f64 (4 x 4)
WIDENING_TRANSPOSE = HEADER + """
@prim_func
def pack(B: u8[20, 19], P: i16[19, 20]):
    for k, j in grid(19, 20):
        P[k, j] = i16(B[j, k])
"""
F64_TRANSPOSE = HEADER + """
@prim_func
def pack(B: f64[10, 9], P: f64[9, 10]):
    for k, j in grid(9, 10):
        P[k, j] = B[j, k]
"""


# f16 converted to f32 as it is transposed (hoist-operand's copy of ``f32(B[j, k])``, a
# panel of a transposed f16 operand): fpext, exact, NaN payloads kept
F16_WIDENING_TRANSPOSE = HEADER + """
@prim_func
def pack(B: f16[21, 19], P: f32[19, 21]):
    for k, j in grid(19, 21):
        P[k, j] = f32(B[j, k])
"""


@pytest.mark.parametrize("src", [F32_TRANSPOSE, WIDENING_TRANSPOSE, F64_TRANSPOSE,
                                 F16_WIDENING_TRANSPOSE])
@pytest.mark.parametrize("threads", [1, 2])
def test_transposes_run_in_square_blocks_and_match_the_interpreter(src, threads):
    func = parse(src)
    assert len(transposes(func)) == 1
    assert "shufflevector" in runtime.emit_llvm(func, optimized=False)
    for seed in range(2):
        assert_compiled_is_interpreted(func, seed, threads)


def test_the_transposed_operands_packing_is_a_block_transpose():
    """``C = A @ B.T``: the chosen program packs B transposed, in square blocks, and the
    program compiled is the interpreter's."""
    from rewrite import tensorize
    src = HEADER + """
@prim_func
def nt(A: f32[64, 96], B: f32[80, 96], C: f32[64, 80]):
    for i, j in grid(64, 80):
        C[i, j] = 0.0
        for k in range(96):
            C[i, j] += A[i, k] * B[j, k]
"""
    func = tensorize(parse(src)).func
    packs = [s for s in walk_stmts(func.body) if isinstance(s, Store)
             and isinstance(s.value, Load) and s.value.buffer.name == "B"]
    assert packs, "the product reads B through a packed copy"
    # (lowering renames buffers: B is the f32[80, 96] one)
    assert any(t.load.buffer.shape == (80, 96) for t in transposes(func))
    # the product's sums are reassociated: within roundoff, not bit for bit
    result = runtime.check(func, runtime.compile(func, threads=2))
    assert result.ok, result.message


def test_the_int8_products_panel_copy_is_a_block_copy():
    """The chosen program of a u8 x i8 product at 256 (the corpus's ``qdense_u8i8_256``)
    copies A into a panel in blocks wherever its tile reads A as i16 pairs (the AVX2 tile),
    and the program compiled is the interpreter's, whatever this host's tiles."""
    from rewrite import tensorize
    src = HEADER + """
@prim_func
def q(A: u8[256, 256], B: i8[256, 256], C: i32[256, 256]):
    for i, j in grid(256, 256):
        C[i, j] = 0
        for k in range(256):
            C[i, j] += i32(A[i, k]) * i32(B[k, j])
"""
    func = tensorize(parse(src)).func
    tiles = {s.intrinsic.name for s in walk_stmts(func.body) if isinstance(s, Call)}
    if "x86.mm.u8i8i32.4x16x2" in tiles:
        widened = [b for b in blocks(func) if (b.load.dtype, b.store.buffer.dtype) == ("u8", "i16")]
        assert widened, "the A panel's widening copy runs in blocks"
    assert_compiled_is_interpreted(func, threads=2)


PAIRS = [("u8", "i16"), ("i8", "i16"), ("i8", "i32"), ("u8", "u8"), ("i16", "i32"),
         ("f32", "f32"), ("f16", "f16"), ("f64", "f64"), ("f16", "f32"), ("f32", "f64"),
         ("f16", "f64")]


@st.composite
def transposing_copies(draw):
    """``P[v0, ..., vn] = cast(A[...])``: the loops in the store's order, the source's
    dims a permutation of them, some split into an outer and an inner part (as panels
    are), each loop from an offset into a larger source."""
    src, dst = draw(st.sampled_from(PAIRS))
    rank = draw(st.integers(2, 4))
    extents = [draw(st.integers(1, 9)) for _ in range(rank)]
    starts = [draw(st.integers(0, 2)) for _ in range(rank)]
    order = draw(st.permutations(range(rank)))
    # source dim d is indexed by loop order[d], or by two loops when the next one is fused
    # into it as its inner part (``i_i + 4 * i_o``)
    fuse = draw(st.booleans()) and rank >= 3
    dims, index = [], []
    d = 0
    while d < rank:
        v = order[d]
        if fuse and d + 1 < rank:
            w = order[d + 1]
            dims.append((extents[v] + starts[v]) * (extents[w] + starts[w]))
            index.append(f"v{w} + {extents[w] + starts[w]} * v{v}")
            d += 2
            fuse = False
            continue
        dims.append(extents[v] + starts[v] + draw(st.integers(0, 2)))
        index.append(f"v{v}")
        d += 1
    loops = ", ".join(f"v{k}" for k in range(rank))
    shape = ", ".join(str(e + s) for e, s in zip(extents, starts))
    value = f"A[{', '.join(index)}]"
    if src != dst:
        value = f"{dst}({value})"
    lines = []
    for k in range(rank):
        r = f"range({starts[k]}, {starts[k] + extents[k]})"
        lines.append("    " * (k + 1) + f"for v{k} in {r}:")
    lines.append("    " * (rank + 1) + f"P[{loops}] = {value}")
    return HEADER + f"""
@prim_func
def copy(A: {src}[{', '.join(map(str, dims))}], P: {dst}[{shape}]):
""" + "\n".join(lines) + "\n"


@st.composite
def panels(draw, rows_first=st.booleans()):
    """A panel copy as a tile's operand reads it: ``P[o, k_o, <tile>] = cast(A[r + R * o,
    k + K * k_o])``, the tile's two loops (rows ``r``, columns ``k``) in either order, from
    offsets into the source."""
    src, dst = draw(st.sampled_from(PAIRS))
    rows, cols = draw(st.integers(1, 6)), draw(st.integers(1, 4))
    outer, along = draw(st.integers(1, 4)), draw(st.integers(1, 20))
    r0, c0 = draw(st.integers(0, 3)), draw(st.integers(0, 3))
    rows_first = draw(rows_first)
    tile = "r, k" if rows_first else "k, r"
    shape = f"{outer}, {along}, " + (f"{rows}, {cols}" if rows_first else f"{cols}, {rows}")
    value = f"A[r + {rows} * o + {r0}, k + {cols} * k_o + {c0}]"
    if src != dst:
        value = f"{dst}({value})"
    return HEADER + f"""
@prim_func
def panel(A: {src}[{rows * outer + r0}, {cols * along + c0}], P: {dst}[{shape}]):
    for o, k_o, {tile} in grid({shape}):
        P[o, k_o, {tile}] = {value}
"""


@st.composite
def transposes_2d(draw):
    """``P[k, j] = cast(A[j + a, k + b])``, either loop outside, from offsets."""
    src, dst = draw(st.sampled_from(PAIRS))
    rows, cols = draw(st.integers(1, 20)), draw(st.integers(1, 20))
    a, b = draw(st.integers(0, 3)), draw(st.integers(0, 3))
    loops = "k, j" if draw(st.booleans()) else "j, k"
    extents = f"{rows}, {cols}" if loops == "k, j" else f"{cols}, {rows}"
    value = f"A[j + {a}, k + {b}]"
    if src != dst:
        value = f"{dst}({value})"
    return HEADER + f"""
@prim_func
def pack(A: {src}[{cols + a}, {rows + b}], P: {dst}[{rows}, {cols}]):
    for {loops} in grid({extents}):
        P[k, j] = {value}
"""


@settings(max_examples=60, deadline=None)
@given(st.one_of(transposing_copies(), panels(), transposes_2d()), st.integers(0, 3))
def test_every_copy_compiled_is_the_interpreters(src, seed):
    assert_compiled_is_interpreted(parse(src), seed)


def test_the_random_panels_reach_the_block_path():
    """The strategy above is not idle: many of its panels whose tile walks columns inside
    rows take the block path (with rows inside columns, ``lower`` unrolls the rows)."""
    taken = []

    @settings(max_examples=60, deadline=None, database=None, derandomize=True)
    @given(panels(rows_first=st.just(True)))
    def count(src):
        taken.append(bool(blocks(parse(src))))

    count()
    assert sum(taken) >= 10, f"{sum(taken)} of {len(taken)} panels ran in blocks"


def test_the_random_transposes_reach_the_block_path():
    taken = []

    @settings(max_examples=60, deadline=None, database=None, derandomize=True)
    @given(transposes_2d())
    def count(src):
        taken.append(bool(transposes(parse(src))))

    count()
    assert sum(taken) >= 10, f"{sum(taken)} of {len(taken)} transposes ran in blocks"
