"""fill-into-tiles (rules/tiles.py): a constant fill of a blocked product's output folded into
its tiles, and codegen starting those tiles' accumulators from the constant."""

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import intrinsics
from rewrite import codegen, interp, ir, lower, runtime
from rewrite.affine import affine
from rewrite.inputs import random_args
from rewrite.pipeline import tensorize
from rewrite.rules.tiles import fill_into_tiles
from rewrite.script import parse, show
from rewrite.verify import verify

from .test_intrinsics import needs_isa

AVX2 = intrinsics.library("x86-avx2")
AVX512 = intrinsics.library("x86-avx512")


def _gemm(m: int, n: int, k: int, fill: str = "0.0"):
    return parse(f"@prim_func\ndef mm(A: f32[{m}, {k}], B: f32[{k}, {n}], C: f32[{m}, {n}]):\n"
                 f"    for i, j in grid({m}, {n}):\n        C[i, j] = {fill}\n"
                 f"        for k in range({k}):\n            C[i, j] += A[i, k] * B[k, j]\n")


def _top_fills(func: ir.PrimFunc, name: str) -> list:
    """Top-level nests that store into ``name`` and do nothing else."""
    out = []
    for s in ir.stmts_of(func.body):
        _, leaf = ir.band(s)
        if isinstance(leaf, ir.Store) and leaf.buffer.name == name:
            out.append(s)
    return out


def _tile_fills(func: ir.PrimFunc, name: str) -> list:
    """Stores of a constant into ``name`` nested under a loop that also holds calls."""
    return [x for s in ir.stmts_of(func.body) if any(isinstance(y, ir.Call) for y in ir.walk_stmts(s))
            for x in ir.walk_stmts(s) if isinstance(x, ir.Store) and x.buffer.name == name
            and isinstance(x.value, ir.Const)]


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.tobytes() == b.tobytes()


# ---------------------------------------------------------------------------
# the rule, on the chosen program


def test_a_blocked_gemm_fills_each_tile_before_its_first_reduction_block(caches):
    # caches fixed (48 KB L1, 2 MB L2) so that k is cut into blocks whatever the host
    caches(48 * 1024, 2048 * 1024)
    func = _gemm(128, 128, 1024)
    result = tensorize(func, AVX512)
    plain = tensorize(func, AVX512, rules_off={"tiles"})
    assert _top_fills(plain.func, "C") and _tile_fills(plain.func, "C") == []
    got = result.func
    verify(got)
    assert parse(show(got)) == got
    assert _top_fills(got, "C") == []  # the pass over C is gone ...
    (fill,) = _tile_fills(got, "C")  # ... into the first block of each tile
    text = show(got)
    assert "for k_o in range(1, " in text  # the other reduction blocks, peeled
    args = random_args(func, seed=1)
    assert _same_bits(interp.run(got, **args)["C"], interp.run(plain.func, **args)["C"])


def test_the_rule_keeps_every_bit_on_random_shapes_and_fills():
    # the calls add the same values in the same order: interpreted, the program with the
    # fill in its tiles gives the same bits as the one with the pass, signed zeros included
    @settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(m=st.integers(1, 40), n=st.integers(1, 70), k=st.integers(1, 40),
           fill=st.sampled_from(["0.0", "-0.0", "2.5"]), lib=st.sampled_from(["avx2", "avx512"]))
    def check(m, n, k, fill, lib):
        func = _gemm(m, n, k, fill)
        library = AVX2 if lib == "avx2" else AVX512
        got = tensorize(func, library).func
        plain = tensorize(func, library, rules_off={"tiles"}).func
        verify(got)
        args = random_args(func, seed=m * n + k)
        assert _same_bits(interp.run(got, **args)["C"], interp.run(plain, **args)["C"])

    check()


PRODUCT = """
@prim_func
def f(A: f32[16, 64], B: f32[64, 64], C: f32[16, {cols}], D: f32[16, 64]):
    for i, j in grid(16, {filled}):
        C[i, j] = {value}
    {between}
    for i_o, {order} in grid({extents}):
        call("x86.avx512.mm.f32.8x32x1", c=window(C[8 * i_o, 32 * j_o], (1, 0), (0, 1)),
             a=window(A[8 * i_o, 16 * k_o + k_i], (1, 0), (0, 1)),
             b=window(B[16 * k_o + k_i, 32 * j_o], (1, 0), (0, 1)))
"""


def _product(cols=64, value="0.0", between="", order="k_o, j_o, k_i", filled=None):
    extents = {"k_o, j_o, k_i": "2, 4, 2, 16", "k_o, k_i, j_o": "2, 4, 16, 2"}[order]
    src = PRODUCT.format(cols=cols, value=value, between=between or "D[0, 0] = 1.0",
                         order=order, extents=extents, filled=cols if filled is None else filled)
    return list(ir.stmts_of(parse(src).body))


def test_the_rule_peels_the_first_reduction_block():
    stmts = _product()
    out = fill_into_tiles(stmts, {"C", "D"})
    assert len(out) == len(stmts) - 1 and out[0] == stmts[1]  # the fill is gone
    i_o = out[-1]
    assert isinstance(i_o, ir.For) and i_o.var == "i_o"
    first, others = ir.stmts_of(i_o.body)
    assert isinstance(others, ir.For) and (others.var, others.start, others.stop) == ("k_o", 1, 4)
    assert first.var == "j_o"
    fill, calls = ir.stmts_of(first.body)
    assert isinstance(ir.band(fill)[1], ir.Store)
    loops, call = ir.band(calls)
    assert [lp.var for lp in loops] == ["k_i"]  # k_o fixed at 0 in the first block
    assert affine(call.window("a").base[1]) == affine(ir.Var("k_i"))


def test_columns_the_tiles_leave_keep_a_fill_of_their_own():
    # the tiles cover columns 0..63 of 70: their fill goes into them, columns 64..69 keep
    # theirs, stored after the tiles (which never touch them)
    stmts = _product(cols=70, value="1.5")
    out = fill_into_tiles(stmts, {"C", "D"})
    assert out[0] == stmts[1] and len(out) == len(stmts)
    loops, store = ir.band(out[-1])
    assert isinstance(store, ir.Store) and store.buffer.name == "C"
    assert [(lp.start, lp.stop) for lp in loops] == [(0, 16), (0, 6)]
    assert affine(store.indices[1]) == affine(ir.Var(loops[1].var)).plus(affine(ir.Const(64, ir.INDEX)))
    func = parse(PRODUCT.format(cols=70, value="1.5", between="D[0, 0] = 1.0", order="k_o, j_o, k_i",
                                extents="2, 4, 2, 16", filled=70))
    got = ir.PrimFunc(func.name, func.params, ir.seq(*out), func.allocs)
    verify(got)
    args = random_args(func, seed=3)
    assert _same_bits(interp.run(got, **args)["C"], interp.run(func, **args)["C"])


@pytest.mark.parametrize("change", [
    dict(value="A[i, j] * 2.0"),            # not a constant
    dict(between="D[0, 0] = C[3, 3]"),      # C read between the fill and the product
    dict(filled=48),                        # the tiles reach past the filled columns
    dict(order="k_o, k_i, j_o"),            # a tile loop inside the inner reduction
    dict(between="C[3, 3] = 1.0"),          # C written between
])
def test_the_rule_leaves_what_it_cannot_prove(change):
    stmts = _product(**change)
    assert fill_into_tiles(stmts, {"C", "D"}) == stmts


# ---------------------------------------------------------------------------
# codegen: a tile filled just before its calls starts from the constant


FRESH = """
@prim_func
def f(A: {at}[16, {k}], B: {bt}[{bk}, {bn}], C: {ct}[16, 64]):
    for i_o, j_o in grid(2, 2):
        for t0, t1 in grid(8, {cols}):
            C[8 * i_o + t0, 32 * j_o + t1] = {value}
        for k in range({steps}):
            call("{name}", c=window(C[8 * i_o, 32 * j_o], (1, 0), (0, 1)), a={a}, b={b})
"""


def _fresh_program(name: str, value: str, cols: int = 32):
    if "u8i8" in name:
        return parse(FRESH.format(at="u8", bt="i8", ct="i32", k=64, bk=64, bn=64, cols=cols,
                                  value=value, steps=16, name=name,
                                  a="window(A[8 * i_o, 4 * k], (1, 0), (0, 1))",
                                  b="window(B[32 * j_o, 4 * k], (1, 0), (0, 1))"))
    return parse(FRESH.format(at="f32", bt="f32", ct="f32", k=48, bk=48, bn=64, cols=cols,
                              value=value, steps=48, name=name,
                              a="window(A[8 * i_o, k], (1, 0), (0, 1))",
                              b="window(B[k, 32 * j_o], (1, 0), (0, 1))"))


def _ir_text(func) -> str:
    """The kernel's LLVM IR with every intrinsic's native emitter, whatever the host."""
    return str(codegen.kernel_module(lower.lower(func), "k", lambda d: d.emitter))


@pytest.mark.parametrize("name", ["x86.avx512.mm.f32.8x32x1", "x86.avx512vnni.mm.u8i8i32.8x32x4"])
def test_a_tile_filled_before_its_calls_is_never_read(name):
    # the tiles' emitters prefetch c before a k-loop and add it after; started from the
    # fill's constant, they do neither, and the fill's stores are gone
    fresh = _ir_text(_fresh_program(name, "7" if "u8i8" in name else "1.5"))
    assert "llvm.prefetch" not in fresh
    # a fill one column short of the tile is a plain fill: stored, then c read as usual
    short = _ir_text(_fresh_program(name, "7" if "u8i8" in name else "1.5", cols=31))
    assert "llvm.prefetch" in short


@pytest.mark.parametrize("name, value", [
    pytest.param(name, value, marks=needs_isa(name))
    for name, value in [("x86.avx512.mm.f32.8x32x1", "1.5"), ("x86.avx512.mm.f32.8x32x1", "-0.0"),
                        ("x86.avx512.mm.f32.8x32x1", "0.0"),
                        ("x86.avx512vnni.mm.u8i8i32.8x32x4", "7"),
                        ("x86.avx512vnni.mm.u8i8i32.8x32x4", "-3")]])
def test_a_tile_started_from_its_fill_runs_like_the_interpreter(name, value):
    for cols in (32, 31):
        func = _fresh_program(name, value, cols)
        check = runtime.check(func, runtime.compile(func))
        assert check.ok, check.message


@needs_isa("x86.avx512.mm.f32.8x32x1")
def test_signed_zero_fill_is_kept_where_every_product_is_negative_zero():
    func = _fresh_program("x86.avx512.mm.f32.8x32x1", "-0.0")
    args = {"A": np.full((16, 48), -0.0, np.float32), "B": np.full((48, 64), 0.0, np.float32),
            "C": np.ones((16, 64), np.float32)}
    runtime.compile(func)(**args)
    assert not args["C"].any() and np.signbit(args["C"]).all()


FUSE_SRC = '''
@prim_func
def two(A: f32[10, 64], B: f32[64, 2048], C: f32[10, 2048]):
    for j_o_b in range(2):
        for k_o, j_o_i, k_i in grid(8, 64, 8):
            call("x86.mm.f32.6x16x1", c=window(C[0, 1024 * j_o_b + 16 * j_o_i], (1, 0), (0, 1)), a=window(A[0, k_i + 8 * k_o], (1, 0), (0, 1)), b=window(B[k_i + 8 * k_o, 1024 * j_o_b + 16 * j_o_i], (1, 0), (0, 1)))
    for j_o_b in range(2):
        for k_o, j_o_i, k_i in grid(8, 64, 8):
            call("x86.mm.f32.4x16x1", c=window(C[6, 1024 * j_o_b + 16 * j_o_i], (1, 0), (0, 1)), a=window(A[6, k_i + 8 * k_o], (1, 0), (0, 1)), b=window(B[k_i + 8 * k_o, 1024 * j_o_b + 16 * j_o_i], (1, 0), (0, 1)))
'''


def _fuse_func(src: str):
    return parse(src)


def test_nests_blocked_alike_over_a_big_input_are_fused_down_to_their_tiles_loops():
    # both nests step B's columns by 1024 per j_o_b, its rows by 8 per k_o: fused, each
    # block of B is read by the 6-row tiles and then by the 4-row ones; the loops from tile
    # to tile (j_o_i) and right around each call (k_i) stay each nest's own
    from rewrite.rules.tiles import fuse_blocks

    func = _fuse_func(FUSE_SRC)
    (fused,) = fuse_blocks(list(func.body.stmts), big=64 * 1024)
    assert [(s.var, s.extent) for s in ir.walk_stmts(fused) if isinstance(s, ir.For)][:2] == \
        [("j_o_b", 2), ("k_o", 8)]
    inner = [s for s in ir.walk_stmts(fused) if isinstance(s, ir.For) and isinstance(s.body, ir.For)
             and s.var == "j_o_i"]
    assert [s.body.body.intrinsic.name for s in inner] == ["x86.mm.f32.6x16x1", "x86.mm.f32.4x16x1"]
    args = random_args(func, seed=1)
    assert np.array_equal(interp.run(replace(func, body=fused), **args)["C"],
                          interp.run(func, **args)["C"])
    # an input L2 holds gives no reason to fuse
    assert len(fuse_blocks(list(func.body.stmts), big=1 << 30)) == 2


def test_nests_whose_loops_only_share_a_range_are_not_fused_for_a_big_input():
    # the second nest's outer loop walks B's rows (k_o), the first's its columns (j_o_b):
    # the same range, other blocks; fused they would share nothing
    from rewrite.rules.tiles import fuse_blocks

    src = FUSE_SRC.replace(
        "    for j_o_b in range(2):\n        for k_o, j_o_i, k_i in grid(8, 64, 8):\n            call(\"x86.mm.f32.4x16x1\"",
        "    for k_h in range(2):\n        for j_o_b, k_o, j_o_i, k_i in grid(2, 4, 64, 8):\n            call(\"x86.mm.f32.4x16x1\"")
    src = src.replace("A[6, k_i + 8 * k_o]", "A[6, k_i + 8 * k_o + 32 * k_h]").replace(
        "B[k_i + 8 * k_o, 1024 * j_o_b + 16 * j_o_i], (1, 0), (0, 1)))\n'''",
        "B[k_i + 8 * k_o + 32 * k_h, 1024 * j_o_b + 16 * j_o_i], (1, 0), (0, 1)))\n'''")
    func = _fuse_func(src)
    assert "k_h" in show(func)
    assert len(fuse_blocks(list(func.body.stmts), big=64 * 1024)) == 2


# two groups of two 6-row tiles over rows 0-23, and the four rows left on the 4-row tile,
# each over all of the reduction (as the extractor plans a product of 28 rows)
DEAL_SRC = '''
@prim_func
def deal(A: f32[28, 32], B: f32[32, 64], C: f32[28, 64]):
    for i_o_b, k_o, i_o_i, j_o, k_i in grid(2, 4, 2, 4, 8):
        call("x86.mm.f32.6x16x1", c=window(C[12 * i_o_b + 6 * i_o_i, 16 * j_o], (1, 0), (0, 1)), a=window(A[12 * i_o_b + 6 * i_o_i, k_i + 8 * k_o], (1, 0), (0, 1)), b=window(B[k_i + 8 * k_o, 16 * j_o], (1, 0), (0, 1)))
    for j_o, k in grid(4, 32):
        call("x86.mm.f32.4x16x1", c=window(C[24, 16 * j_o], (1, 0), (0, 1)), a=window(A[24, k], (1, 0), (0, 1)), b=window(B[k, 16 * j_o], (1, 0), (0, 1)))
'''


def test_the_rows_a_group_tiling_leaves_are_dealt_to_the_groups_and_fused_into_their_blocks():
    from rewrite.rules.tiles import co_block, fuse_blocks

    func = parse(DEAL_SRC)
    main, rest = func.body.stmts
    dealt = co_block([main, rest], deal=True)
    assert dealt[0] is main
    loops, call = ir.band(dealt[1])
    # the group loop and the reduction blocks outermost, each group two of the four tiles
    assert [(lp.var, lp.extent) for lp in loops][:2] == [("i_o_b", 2), ("k_o", 4)]
    assert [lp.extent for lp in loops][2:] == [2, 8]
    assert affine(call.window("c").base[1]).coeff("i_o_b") == 32
    args = random_args(func, seed=2)
    want = interp.run(func, **args)["C"]
    assert np.array_equal(interp.run(replace(func, body=ir.seq(*dealt)), **args)["C"], want)
    # B (8 KB here) taken as past L2: the two nests share each group's reduction blocks
    (fused,) = fuse_blocks(dealt, big=4 * 1024, dealt=True)
    assert np.array_equal(interp.run(replace(func, body=fused), **args)["C"], want)
    assert len(fuse_blocks(dealt, big=4 * 1024)) == 2  # not without dealt
    assert len(fuse_blocks(dealt, big=1 << 20, dealt=True)) == 2  # nor where L2 holds B


def test_tiles_no_group_count_divides_are_not_dealt():
    from rewrite.rules.tiles import co_block

    func = parse(DEAL_SRC.replace("grid(4, 32)", "grid(3, 32)"))
    assert co_block(list(func.body.stmts), deal=True) == list(func.body.stmts)


def test_a_product_of_few_rows_over_a_deep_reduction_runs_the_rows_left_in_the_groups_blocks(caches):
    """64 x 4096 x 64 on Zen 3's caches: B (1 MB) outgrows L2, so the four rows the 6-row
    tiles leave run in the tiles' reduction blocks, half of their columns in each group;
    with a 2 MB L2 they keep their own nest."""
    def tiles_by_statement(func):
        return [sorted({c.intrinsic.name for c in ir.walk_stmts(s) if isinstance(c, ir.Call)})
                for s in ir.stmts_of(func.body) if any(isinstance(c, ir.Call) for c in ir.walk_stmts(s))]

    caches(32 * 1024, 512 * 1024)
    func = tensorize(_gemm(64, 64, 4096), intrinsics=AVX2).func
    assert tiles_by_statement(func) == [["x86.mm.f32.4x16x1", "x86.mm.f32.6x16x1"]]
    for threads in (1, 2):
        assert runtime.check(func, runtime.compile(func, threads=threads)).ok
    caches(32 * 1024, 2048 * 1024)
    func = tensorize(_gemm(64, 64, 4096), intrinsics=AVX2).func
    assert tiles_by_statement(func) == [["x86.mm.f32.6x16x1"], ["x86.mm.f32.4x16x1"]]
