"""Packing stages (``rules/layout.py``): an input copied into the layout an intrinsic needs,
chosen by the extractor only when the copy costs less than gathering the strided operand."""

from pathlib import Path

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import intrinsics
from rewrite import cost, inputs, interp, ir, nests, runtime
from rewrite.match import BodyMatch, bindings
from rewrite.names import Names
from rewrite.pipeline import tensorize
from rewrite.rules import layout
from rewrite.printer import show_expr
from rewrite.script import parse, parse_file, show
from rewrite.verify import verify

ROOT = Path(__file__).parent.parent
# the rows whose packing decisions these tests pin down (the matrix-vector form, added later,
# reads a transposed B at unit stride and needs no copy: tests/test_tensorize.py; the two-row
# int8 tile is the dot's blocked form, the four-row one reads widened copies: AVX2_INT8 below)
AVX2 = [d for d in intrinsics.library("x86-avx2")
        if d.name not in ("x86.gemv.f32.4x8", "x86.mm.u8i8i32.2x16x4", "x86.mm.u8i8i32.4x16x2")]
HOST_HAS_AVX2 = {"avx2", "fma"} <= intrinsics.host_features()


def _nt(m: int, n: int, k: int):
    """``C = A @ B^T`` reading ``B[j, k]``: the 6x16 outer product steps along j, which is
    B's slow index."""
    return parse(f"@prim_func\ndef nt(A: f32[{m}, {k}], B: f32[{n}, {k}], C: f32[{m}, {n}]):\n"
                 f"    for i, j, k in grid({m}, {n}, {k}):\n"
                 f"        C[i, j] += A[i, k] * B[j, k]\n")


def _calls(func: ir.PrimFunc) -> list[ir.Call]:
    return [s for s in ir.walk_stmts(func.body) if isinstance(s, ir.Call)]


def _flat(w: ir.Window, dim: int) -> int:
    """The element stride of operand dim ``dim`` of window ``w`` (row-major buffer)."""
    strides, n = [], 1
    for extent in reversed(w.buffer.shape):
        strides.append(n)
        n *= extent
    return sum(s * m for s, m in zip(w.steps[dim], reversed(strides)))


def _copies(func: ir.PrimFunc) -> list[ir.Store]:
    """Stores into the function's temporaries whose value is a bare load."""
    temps = {b.name for b in func.allocs}
    return [s for s in ir.walk_stmts(func.body) if isinstance(s, ir.Store)
            and s.buffer.name in temps and isinstance(s.value, ir.Load)]


def _interp_equal(func, out):
    args = inputs.random_args(func, seed=3)
    want = interp.run(func, **args)
    got = interp.run(out, **args)
    for buf in func.outputs:
        w, g = want[buf.name], got[buf.name]
        if np.issubdtype(w.dtype, np.integer):
            assert np.array_equal(w, g), buf.name
        else:
            assert np.allclose(w, g, rtol=1e-4, atol=1e-4 * np.abs(w).max()), buf.name


def _well_formed(result):
    verify(result.func)
    assert parse(show(result.func)) == result.func


# ---------------------------------------------------------------------------
# the copy pays: B^T packed once, every call reads it with unit stride


def test_transposed_b_is_packed_when_it_pays():
    func = _nt(96, 96, 96)
    result = tensorize(func, AVX2)
    _well_formed(result)
    (copy,) = _copies(result.func)
    assert copy.value.buffer.name == "B"  # B copied into a temporary ...
    (pk,) = result.func.allocs
    assert copy.buffer == pk and pk.shape == (96, 96)
    calls = _calls(result.func)
    assert {c.intrinsic.name for c in calls} == {"x86.mm.f32.6x16x1"}
    assert sum(s.calls for s in result.sites) == (96 // 6) * (96 // 16) * 96
    for c in calls:  # ... which every call reads along j with unit step
        b = c.window("b")
        assert b.buffer == pk
        assert _flat(b, 1) == 1
    # the copy comes before the calls
    body = ir.stmts_of(result.func.body)
    assert isinstance(body[0], ir.For) and not _calls(ir.PrimFunc("_", (), body[0]))
    assert result.coverage == 1.0


@pytest.mark.skipif(not HOST_HAS_AVX2, reason="needs AVX2 and FMA")
def test_packed_transposed_b_runs_like_the_interpreter():
    func = _nt(96, 96, 96)
    result = tensorize(func, AVX2)
    check = runtime.check(func, result.compile())
    assert check.ok, check.message


def test_packed_program_interprets_as_the_original():
    func = _nt(98, 100, 96)  # remainders on i and j read the packed copy too
    result = tensorize(func, AVX2)
    assert _copies(result.func)
    _interp_equal(func, result.func)


# ---------------------------------------------------------------------------
# the copy does not pay: the gather stays


@pytest.mark.parametrize("src", [
    # 32x32x32: gathered, 320 6x16 calls * 6 * GATHER_PENALTY plus 256 8-wide axpys * 4
    # for the last 2 rows = 8 704; packed, 32 * 32 copied + PER_PACKING + 1 920 + 256 =
    # 13 200 (measured 14.2 us gathered, 15.5 us packed).
    "@prim_func\ndef nt(A: f32[32, 32], B: f32[32, 32], C: f32[32, 32]):\n"
    "    for i, j, k in grid(32, 32, 32):\n        C[i, j] += A[i, k] * B[j, k]\n",
    # y = B @ x with B read as B[j, k] on 8-wide axpys: each element of B is read by exactly
    # one call, so copying it (N * K) costs more than the gather adds (3 * N * K / 8),
    # whatever the size.
    "@prim_func\ndef mv(x: f32[256], B: f32[64, 256], y: f32[64]):\n"
    "    for j, k in grid(64, 256):\n        y[j] += x[k] * B[j, k]\n",
])
def test_small_or_single_use_operands_stay_gathered(src):
    func = parse(src)
    result = tensorize(func, AVX2)
    _well_formed(result)
    assert not result.func.allocs and not _copies(result.func)
    calls = _calls(result.func)
    assert calls and all(c.window("b").buffer.name == "B" for c in calls)
    assert any(_flat(c.window("b"), len(c.window("b").steps) - 1) != 1 for c in calls)


def test_the_extractor_weighs_copy_against_gather():
    """At 32x32x32 the packed plan's cost (copy, stage, unit-stride calls) exceeds the
    gathered one, at 48x64x64 it is below it (as measured); the choice follows."""
    mm = AVX2[[d.name for d in AVX2].index("x86.mm.f32.6x16x1")]

    def costs(m, n, k):
        (nest,) = nests.items(nests.normalize(_nt(m, n, k)))
        a, b = [x for x in ir.loads_of(nest.value)]
        match = BodyMatch(0, mm.name, (a, b) if a.buffer.name == "A" else (b, a))
        binding = next(x for x in bindings(nest, mm, match) if dict(x.dims)["k"] == "k")
        assert not binding.unit_stride_ok
        packing = layout.pack(nest, layout.requests(nest, mm, binding), Names())
        gathered = cost.calls(mm, binding.tiles, False)
        packed = cost.packing(packing.copies) + cost.calls(mm, binding.tiles, True)
        return gathered, packed

    small, large = costs(32, 32, 32), costs(48, 64, 64)
    assert small[0] < small[1] and large[1] < large[0]


# ---------------------------------------------------------------------------
# u8 x i8: B[k, j] packed so the dot's 4-byte groups along k are contiguous


def test_int8_dense_packs_b_for_the_dot():
    func = parse_file(ROOT / "corpus" / "quantized.py")["qdense_u8i8"]
    result = tensorize(func, AVX2)
    _well_formed(result)
    (copy,) = _copies(result.func)
    assert copy.value.buffer.name == "B"
    calls = _calls(result.func)
    assert {c.intrinsic.name for c in calls} == {"x86.dot.u8i8i32.16x4"}
    for c in calls:
        b = c.window("b")
        assert b.buffer == copy.buffer and _flat(b, 1) == 1  # b[i, k]: k at unit stride
    _interp_equal(func, result.func)
    if HOST_HAS_AVX2:
        check = runtime.check(func, result.compile())
        assert check.ok, check.message


# ---------------------------------------------------------------------------
# the rule itself


def test_pack_duplicates_overlapping_windows_and_keeps_the_meaning():
    """A convolution's ``X[h + rh, w + rw, c]`` packed over (h, w, rh, rw, c): an explicit
    im2col, 6*6*3*3*4 elements from an 8*8*4 input, and the same result."""
    func = parse_file(ROOT / "tests" / "golden" / "conv_im2col.py")["conv"]
    (nest,) = nests.items(nests.normalize(func))
    x = next(x for x in ir.loads_of(nest.value) if x.buffer.name == "X")
    dims = {d.name: d for d in nest.dims}
    order = tuple(dims[n] for n in ("h", "w", "rh", "rw", "rc"))
    names = Names(b.name for b in func.buffers)
    packing = layout.pack(nest, ((x, order),), names)
    (buf,) = packing.buffers
    assert buf.name == "X_pack" and buf.name in names
    assert buf.shape == (6, 6, 3, 3, 4) and packing.elements > x.buffer.size
    assert x not in ir.loads_of(packing.nest.value)
    m = BodyMatch(0, "any", (x, next(y for y in ir.loads_of(nest.value) if y != x)))
    assert packing.match(m).loads[0] == dict(packing.loads)[x]
    out = ir.PrimFunc(func.name, func.params,
                      ir.seq(*packing.copies, packing.nest.stmt()), func.allocs + packing.buffers)
    verify(out)
    _interp_equal(func, out)


def test_pack_shifts_indices_by_the_dims_start():
    src = ("@prim_func\ndef f(A: f32[98, 96], B: f32[101, 96], C: f32[98, 101]):\n"
           "    for i in range(2, 98):\n        for j in range(5, 101):\n"
           "            for k in range(96):\n                C[i, j] += A[i, k] * B[j, k]\n")
    func = parse(src)
    result = tensorize(func, AVX2)
    (copy,) = _copies(result.func)
    assert copy.buffer.shape == (96, 96)  # k over 0..96, j over 5..101 at index j - 5
    assert copy.indices[1] == ir.Binary("-", ir.Var("j"), ir.Const(5, ir.INDEX))
    _well_formed(result)
    _interp_equal(func, result.func)


def test_output_is_never_packed():
    """``C[j, i]`` misses the 6x16 product's unit stride on c: no packing can fix that, so
    the rule declines and nothing is copied for it."""
    mm = AVX2[[d.name for d in AVX2].index("x86.mm.f32.6x16x1")]
    func = parse("@prim_func\ndef f(A: f32[48, 8], B: f32[64, 8], C: f32[64, 48]):\n"
                 "    for i, j, k in grid(48, 64, 8):\n        C[j, i] += A[i, k] * B[j, k]\n")
    (nest,) = nests.items(nests.normalize(func))
    a, b = sorted(ir.loads_of(nest.value), key=lambda x: x.buffer.name)
    found = [x for x in bindings(nest, mm, BodyMatch(0, mm.name, (a, b)))
             if dict(x.dims)["i"] == "i" and dict(x.dims)["j"] == "j"]
    assert found and all(layout.requests(nest, mm, x) is None for x in found)


# ---------------------------------------------------------------------------
# pack-panel: one tile's B over the whole reduction, contiguous


def _moves(w: ir.Window, var: str) -> int:
    """Elements between the windows of two calls one apart along loop ``var``."""
    from rewrite.analysis import affine
    return _flat(ir.Window(w.buffer, w.base, (tuple(affine(i).coeff(var) for i in w.base),)), 0)


def _mm_calls(func: ir.PrimFunc):
    """``func``'s one nest, its 6x16 binding on (i, j, k), the call loops, the tiling and
    the calls' windows, as the extractor builds them."""
    from rewrite.match import dims_after_tiling, window
    mm = AVX2[[d.name for d in AVX2].index("x86.mm.f32.6x16x1")]
    (nest,) = nests.items(nests.normalize(func))
    a, b = sorted(ir.loads_of(nest.value), key=lambda x: x.buffer.name)
    binding = next(x for x in bindings(nest, mm, BodyMatch(0, mm.name, (a, b)))
                   if dict(x.dims) == {"i": "i", "j": "j", "k": "k"})
    names = Names([buf.name for buf in func.buffers] + [d.name for d in nest.dims])
    loops, tiled = dims_after_tiling(nest, binding, mm, names)
    windows = {"c": window(nest.out, nest.indices, dict(binding.steps)["c"], tiled)}
    for op, load in binding.loads:
        windows[op] = window(load.buffer, load.indices, dict(binding.steps)[op], tiled)
    return mm, nest, binding, loops, tiled, windows


def _panelled(func: ir.PrimFunc) -> ir.PrimFunc:
    """``func``'s one nest as 6x16 calls with B read from a panel (``pack-panel`` applied
    directly, whatever the cost model says), its remainders left as scalar nests."""
    from rewrite.match import remainders
    mm, nest, binding, loops, tiled, windows = _mm_calls(func)
    (stream,) = [s for s in layout.streams(mm, windows, loops[-1]) if s.operand == "b"]
    assert not stream.contiguous  # B[k, 16 * j_o] jumps a row of B per k
    panel = layout.pack_panel(nest, mm, binding, tiled, ("b",), Names(b.name for b in func.buffers))
    windows.update(panel.windows)
    call: ir.Stmt = ir.Call(mm, tuple((op.name, windows[op.name]) for op in mm.operands), "c")
    for d in reversed(loops):
        call = ir.For(d.name, d.start, d.stop, call)
    rest = [r.stmt() for r in remainders(nest, binding, mm)]
    return ir.PrimFunc(func.name, func.params, ir.seq(*panel.copies, call, *rest),
                       func.allocs + panel.buffers)


def test_streamed_prices_what_was_measured():
    """B read in place costs extra where its tile's lines overflow the ways of their L2 sets
    the other operands leave it (512: 512 lines in 32 sets of 8 ways; 256 columns over 512
    rows: 512 lines in 64 sets; 64 over 2048: 2048 lines in 256 sets), not at 256 (256
    lines, 64 sets); A's six rows cost extra once they outgrow L1 (K = 2048: 48 KB), not at
    K = 1024 (24 KB)."""
    def extra(m, n, k):
        mm, nest, binding, loops, tiled, windows = _mm_calls(_nn(m, n, k))
        found = layout.streams(mm, windows, loops[-1], loops[-2])
        return {s.operand: cost.streamed(binding.tiles, (s,)) for s in found}

    assert extra(256, 256, 256) == {"a": 0.0, "b": 0.0}
    at512 = extra(510, 512, 512)
    held = 32 * (cost.L2_WAYS - cost.OTHER_WAYS)
    assert at512["a"] == 0.0 and at512["b"] == 85 * 32 * 512 * cost.PER_LINE_REFETCHED * (1 - held / 512)
    assert extra(60, 256, 512)["b"] > 0.0 and extra(60, 256, 256)["b"] == 0.0
    assert extra(60, 64, 1024)["a"] == 0.0 and extra(60, 64, 2048)["a"] > 0.0
    # 64 floats a row: 2048 lines over 256 sets, all 8 ways of them
    assert extra(60, 64, 2048)["b"] == 10 * 4 * 2048 * cost.PER_LINE_REFETCHED * (1 - 256 * 6 / 2048)


def test_panel_calls_read_consecutive_k_16_apart():
    out = _panelled(_nn(96, 64, 80))
    verify(out)
    assert parse(show(out)) == out
    (pb,) = out.allocs
    assert pb.name == "B_panel" and pb.shape == (4, 80, 16)  # [j_o, k, j_i]
    (copy,) = _copies(out)
    assert copy.buffer == pb and copy.value.buffer.name == "B"
    (call,) = _calls(out)
    b = call.window("b")
    assert b.buffer == pb and _flat(b, 1) == 1 and _moves(b, "k") == 16


def _source_strides(func: ir.PrimFunc, panel: str) -> list[tuple[str, int]]:
    """The loops of the copy that fills ``panel``, outermost first, each with the elements
    it moves through the copy's source."""
    from rewrite.analysis import affine
    (nest,) = [s for s in ir.stmts_of(func.body) if panel in ir.written_by(s)]
    loops = []
    while isinstance(nest, ir.For):
        loops.append(nest.var)
        nest = nest.body
    src = nest.value
    return [(v, abs(sum(affine(i).coeff(v) * st for i, st in zip(src.indices, src.buffer.strides))))
            for v in loops]


def test_panel_copies_read_their_source_row_after_row():
    """B[k, j] -> B_panel[j_o, k, j_i]: the copy runs k outermost and j_i innermost, so it
    reads B as it lies in memory (down a column of 64-byte pieces, a row apart, the hardware
    prefetchers stop at each page); the panel is the same whatever the order."""
    func = _nn(96, 64, 80)
    out = _panelled(func)
    moves = _source_strides(out, "B_panel")
    assert [v for v, _ in moves] == ["k", "j_o", "j_i"]
    assert [m for _, m in moves] == sorted((m for _, m in moves), reverse=True)
    _interp_equal(func, out)


def test_panelled_program_interprets_as_the_original():
    for shape in ((96, 64, 80), (98, 70, 33)):  # the second leaves remainders on i and j
        func = _nn(*shape)
        _interp_equal(func, _panelled(func))


@pytest.mark.skipif(not HOST_HAS_AVX2, reason="needs AVX2 and FMA")
def test_panelled_program_runs_like_the_interpreter():
    func = _nn(98, 70, 33)
    check = runtime.check(func, runtime.compile(_panelled(func)))
    assert check.ok, check.message


def test_gemm_512_reads_b_from_a_panel(zen4_caches):
    """At 512 a row of B is 2 KB: a tile's 512 lines share 32 of L2's sets, so the cost
    model copies B into [j_o, k, j_i] panels (measured 0.83-0.85 of the in-place time)."""
    func = parse_file(ROOT / "corpus" / "gemm.py")["gemm_256"]
    func = parse(show(func).replace("256", "512"))
    result = tensorize(func, AVX2)
    _well_formed(result)
    (pb,) = result.func.allocs
    assert pb.name.startswith("B_panel") and pb.shape == (32, 512, 16)
    (copy,) = _copies(result.func)
    assert copy.buffer == pb and copy.value.buffer.name == "B"
    mm = [c for c in _calls(result.func) if c.intrinsic.name == "x86.mm.f32.6x16x1"]
    assert mm
    for c in mm:
        b = c.window("b")
        # where the reduction is cut into cache blocks (extract.blocked_loops, by this CPU's
        # L1) the innermost loop is k_i, else k: either way a step moves one panel row
        red = "k_i" if any(v.name == "k_i" for e in b.base for v in ir.walk_expr(e)
                           if isinstance(v, ir.Var)) else "k"
        assert b.buffer == pb and _flat(b, 1) == 1 and _moves(b, red) == 16
    # the two rows past the last 6x16 tile read the same panel (read-panel, rules/panels.py)
    rest = [c for c in _calls(result.func) if c not in mm]
    assert rest and all(c.window("b").buffer == pb for c in rest)


@pytest.mark.parametrize("n", [64, 192])
def test_gemm_b_stays_in_place_where_the_panel_did_not_pay(n):
    """At 64 and 192 the copy measured slower (1.18 times; 0.99-1.06 times on Zen 3): B is
    read in place. A tile's rows of B span 144 KB at 192, within ``cost.DTLB_REACH``."""
    result = tensorize(_nn(n, n, n), AVX2)
    assert not any(c.value.buffer.name == "B" for c in _copies(result.func))
    assert all(c.window("b").buffer.name == "B" for c in _calls(result.func))


def test_gemm_256_reads_b_from_panels_its_rows_outspan_the_tlb():
    """At 256 a 6x16 tile's 256 rows of B span 256 KB, past ``cost.DTLB_REACH``: B is copied
    into [j_o, k, j_i] panels, which measured 0.81-0.89 of the in-place program's time on
    Zen 3 (the corpus's gemm_256, same-run least and median times), and the program still
    computes what the function does."""
    func = _nn(256, 256, 256)
    result = tensorize(func, AVX2)
    _well_formed(result)
    (copy,) = _copies(result.func)
    assert copy.value.buffer.name == "B" and copy.buffer.shape == (16, 256, 16)
    assert all(c.window("b").buffer == copy.buffer for c in _calls(result.func))
    _interp_equal(func, result.func)
    if HOST_HAS_AVX2:  # compiled: NaN, infinities and signed zeros land where they should
        from .test_nonfinite import _run_both, _same_pattern

        args = inputs.random_args(func, seed=2)
        args["A"][7, 30], args["A"][100, :] = np.nan, -0.0
        args["B"][200, 17], args["B"][3, 250] = np.inf, -np.inf
        want, got = _run_both(func, result.func, args)
        assert _same_pattern(want["C"], got["C"])
        assert np.isnan(want["C"][7]).all() and np.isinf(want["C"][:, 17]).any()
        finite = np.isfinite(want["C"])
        assert np.allclose(want["C"][finite], got["C"][finite], rtol=1e-4, atol=1e-3)


# ---------------------------------------------------------------------------
# pack-panel into blocks: the int8 dot loads its whole b window at once when it is one
# contiguous [16, 4] block (``Layout(contiguous=True)``), 16 rows of 4 bytes otherwise


def _dense_u8(m: int, n: int, k: int, nt: bool = False):
    b, idx = (f"i8[{n}, {k}]", "B[j, k]") if nt else (f"i8[{k}, {n}]", "B[k, j]")
    return parse(f"@prim_func\ndef q(A: u8[{m}, {k}], B: {b}, C: i32[{m}, {n}]):\n"
                 f"    for i, j, k in grid({m}, {n}, {k}):\n"
                 f"        C[i, j] += i32(A[i, k]) * i32({idx})\n")


def _dots(func: ir.PrimFunc) -> list[ir.Call]:
    return [c for c in _calls(func) if c.intrinsic.name == "x86.dot.u8i8i32.16x4"]


def test_is_block_reads_the_window_strides():
    dot = next(d for d in AVX2 if d.name == "x86.dot.u8i8i32.16x4")
    b = dot.operand("b")
    z = ir.Const(0, ir.INDEX)
    blk = ir.Buffer("P", "i8", (8, 16, 4))
    rows = ir.Buffer("Q", "i8", (128, 128))
    assert cost.is_block(b, ir.Window(blk, (z, z, z), ((0, 1, 0), (0, 0, 1))))
    assert not cost.is_block(b, ir.Window(rows, (z, z), ((1, 0), (0, 1))))
    windows = {"b": ir.Window(rows, (z, z), ((1, 0), (0, 1)))}
    assert cost.unblocked(dot, 10, windows) == 10 * 16 * cost.UNBLOCKED_PER_ROW  # 16 rows of b


def test_int8_dense_256_reads_b_in_contiguous_blocks():
    """B[k, j] copied into B_panel[j_o, k_o, j_i, k_i]: each call's b is one 64-byte block
    (element strides (4, 1)) and the next call along k_o reads the next block (measured
    1.90 against 2.18 ms with B_pack[j, k])."""
    func = parse_file(ROOT / "corpus" / "quantized.py")["qdense_u8i8_256"]
    result = tensorize(func, AVX2)
    _well_formed(result)
    (pb,) = result.func.allocs
    assert pb.shape == (16, 64, 16, 4)
    (copy,) = _copies(result.func)
    assert copy.buffer == pb and copy.value.buffer.name == "B"
    dots = _dots(result.func)
    assert dots
    for c in dots:
        b = c.window("b")
        assert b.buffer == pb and (_flat(b, 0), _flat(b, 1)) == (4, 1)
        assert _moves(b, "k_o") == 64


def test_block_packed_int8_program_keeps_the_meaning():
    """Remainders on j (70 = 4 * 16 + 6) and k (130 = 32 * 4 + 2) keep reading B (with
    padding off: it would round them up to whole blocks, tests/test_padding.py)."""
    for func in (parse_file(ROOT / "corpus" / "quantized.py")["qdense_u8i8"],
                 parse_file(ROOT / "corpus" / "quantized.py")["qconv_u8i8"],
                 _dense_u8(40, 70, 130)):
        result = tensorize(func, AVX2, rules_off={"padding"})
        _well_formed(result)
        dots = _dots(result.func)
        assert dots and all((_flat(c.window("b"), 0), _flat(c.window("b"), 1)) == (4, 1)
                            and c.window("b").buffer.name.endswith("_panel") for c in dots)
        _interp_equal(func, result.func)
        if HOST_HAS_AVX2:
            check = runtime.check(func, result.compile())
            assert check.ok, check.message


def test_int8_b_already_k_inner_stays_in_place_when_blocks_do_not_pay():
    """B[j, k] at 16 x 256 @ 256 x 64 (4 096 calls): the 16 K-element copy measured no
    faster (0.044 against 0.043 ms), so b is read in place, rows 256 apart; at 64 rows
    (16 384 calls, 0.130 against 0.140 ms) it is copied into blocks."""
    small = tensorize(_dense_u8(16, 64, 256, nt=True), AVX2)
    assert not small.func.allocs and not _copies(small.func)
    assert all(c.window("b").buffer.name == "B" and _flat(c.window("b"), 0) == 256
               for c in _dots(small.func))
    large = tensorize(_dense_u8(64, 64, 256, nt=True), AVX2)
    assert all(_flat(c.window("b"), 0) == 4 for c in _dots(large.func))


def test_long_reductions_are_cut_into_cache_blocks(monkeypatch):
    # 6x16 tiles: B's panel is 64 bytes a step; two thirds of a 32 KB L1 hold 341 steps, so
    # k = 512 is cut in two blocks of 256; 16 row tiles form groups of 8, each row tile
    # sweeping the 2 column tiles with its 256 steps of A in L1
    from rewrite import extract

    monkeypatch.setattr(extract, "l1_data_bytes", lambda: 32 * 1024)
    func = parse("@prim_func\ndef mm(A: f32[96, 512], B: f32[512, 32], C: f32[96, 32]):\n"
                 "    for i, j, k in grid(96, 32, 512):\n        C[i, j] += A[i, k] * B[k, j]\n")
    result = tensorize(func, AVX2)
    _well_formed(result)
    nest = next(s for s in ir.walk_stmts(result.func.body)
                if isinstance(s, ir.For) and any(isinstance(c, ir.Call) for c in ir.walk_stmts(s)))
    loops = []
    while isinstance(nest, ir.For):
        loops.append((nest.var, nest.extent))
        nest = nest.body
    assert [n for _, n in loops] == [2, 2, 8, 2, 256]
    assert loops[0][0].endswith("_b") and loops[-1][0].endswith("_i")
    assert loops[0][0].startswith("i") and loops[2][0].startswith("i") and loops[2][0].endswith("_i")
    _interp_equal(func, result.func)
    if HOST_HAS_AVX2:
        check = runtime.check(func, result.compile())
        assert check.ok, check.message


def test_short_reductions_keep_their_loop_order(monkeypatch):
    from rewrite import extract

    monkeypatch.setattr(extract, "l1_data_bytes", lambda: 32 * 1024)
    func = parse("@prim_func\ndef mm(A: f32[96, 256], B: f32[256, 32], C: f32[96, 32]):\n"
                 "    for i, j, k in grid(96, 32, 256):\n        C[i, j] += A[i, k] * B[k, j]\n")
    text = show(tensorize(func, AVX2).func)
    assert "k_i" not in text and "_b," not in text


# ---------------------------------------------------------------------------
# large products: B's blocks sized for L2, panels where rows lie a page or an L1 set apart

AVX512 = intrinsics.library("x86-avx512")
HOST_HAS_AVX512 = {"avx512f", "fma"} <= intrinsics.host_features()


def _nn(m: int, n: int, k: int, name: str = "mm"):
    return parse(f"@prim_func\ndef {name}(A: f32[{m}, {k}], B: f32[{k}, {n}], C: f32[{m}, {n}]):\n"
                 f"    for i, j, k in grid({m}, {n}, {k}):\n        C[i, j] += A[i, k] * B[k, j]\n")


def _call_loops(func: ir.PrimFunc, intrinsic: str) -> list[tuple[str, int]]:
    """The loops around the first call of ``intrinsic``, outermost first (through the
    statements beside it, such as a block's copy)."""
    def calls(s: ir.Stmt) -> bool:
        return any(isinstance(c, ir.Call) and c.intrinsic.name == intrinsic for c in ir.walk_stmts(s))

    nest = next(s for s in ir.walk_stmts(func.body) if isinstance(s, ir.For) and calls(s))
    loops = []
    while isinstance(nest, (ir.For, ir.Seq)):
        if isinstance(nest, ir.Seq):
            nest = next(s for s in nest.stmts if calls(s))
            continue
        loops.append((nest.var, nest.extent))
        nest = nest.body
    return loops



def _planned(func: ir.PrimFunc, library, intrinsic: str, native: bool):
    """``func`` tensorized with ``library``, well formed and computing what ``func`` does
    (``_agrees``), and the loops around its ``intrinsic`` calls."""
    result = tensorize(func, library)
    _well_formed(result)
    _agrees(func, result, native)
    return result, _call_loops(result.func, intrinsic)

def test_columns_are_cut_into_blocks_of_b_that_fit_half_of_l2(caches):
    # 8x32 tiles, 48 KB of L1: k blocks of 256 (B's panel: 32 KB); a block of B over all
    # 8 column tiles is 256 KB, more than half of a 256 KB L2, so the columns are cut into
    # blocks of 4 tiles (128 KB), outermost; each row tile sweeps a block with its A in L1
    caches(48 * 1024, 256 * 1024)
    _, loops = _planned(_nn(32, 256, 512), AVX512, "x86.avx512.mm.f32.8x32x1", HOST_HAS_AVX512)
    assert [n for _, n in loops] == [2, 2, 4, 4, 256]
    assert loops[0][0].endswith("_b") and loops[1][0] == "k_o" and loops[-1][0] == "k_i"


def test_row_tiles_with_no_group_still_get_column_blocks(caches):
    # 11 row tiles: no count of 2 to 8 divides them into groups, which only the order
    # without column blocks uses; the columns still want blocks (as above), so the rows
    # stay whole inside them (2048 rows on 6-row tiles, 341, were otherwise padded to 342)
    caches(48 * 1024, 256 * 1024)
    _, loops = _planned(_nn(88, 256, 512), AVX512, "x86.avx512.mm.f32.8x32x1", HOST_HAS_AVX512)
    assert loops == [("j_o_b", 2), ("k_o", 2), ("i_o", 11), ("j_o_i", 4), ("k_i", 256)]
    # the same on the AVX2 library's 6-row tiles (66 rows), compiled on an AVX2 host
    func = _nn(66, 192, 1024)
    result, loops = _planned(func, AVX2, "x86.mm.f32.6x16x1", HOST_HAS_AVX2)
    assert loops == [("j_o_b", 4), ("k_o", 2), ("i_o", 11), ("j_o_i", 3), ("k_i", 512)]
    if HOST_HAS_AVX2:  # NaN, infinities and signed zeros land where the interpreter puts them
        from .test_nonfinite import _run_both, _same_pattern

        args = inputs.random_args(func, seed=1)
        args["A"][3, 700], args["A"][40, 5] = np.nan, np.inf
        args["B"][600, 100], args["B"][9, :] = -np.inf, -0.0
        want, got = _run_both(func, result.func, args)
        assert _same_pattern(want["C"], got["C"])
        assert np.isnan(want["C"][3]).all() and np.isinf(want["C"][40]).any()


def test_column_blocks_come_in_an_even_number_where_one_close_to_the_largest_does(caches):
    # 12 column tiles, at most 4 a block (128 KB of a 256 KB L2): 3 blocks of 4 would leave
    # one of two threads idle at the end; 4 blocks of 3 do not
    caches(48 * 1024, 256 * 1024)
    func = _nn(32, 384, 512)
    result = tensorize(func, AVX512)
    loops = _call_loops(result.func, "x86.avx512.mm.f32.8x32x1")
    assert [n for _, n in loops] == [4, 2, 4, 3, 256]
    _interp_equal(func, result.func)


def test_a_widened_panel_keeps_its_whole_reduction_in_blocks_of_columns(caches):
    # u8 x i8 on the AVX2 four-row tile reads i16 copies: B's panel is 64 bytes a pair step,
    # and its 512 steps fill the 32 KB L1, which a widened panel may (two thirds for the f32
    # tiles, whose 512 steps are cut in two below); over all 32 column tiles that is 1 MB,
    # so the columns are cut into blocks of 8 tiles (256 KB, half of L2), the reduction whole
    caches(32 * 1024, 512 * 1024)
    _, loops = _planned(_dense_u8(64, 512, 1024), intrinsics.library("x86-avx2"),
                        "x86.mm.u8i8i32.4x16x2", HOST_HAS_AVX2)
    assert loops == [("j_o_b", 4), ("i_o", 16), ("j_o_i", 8), ("k_o", 512)]
    f32 = _nn(64, 512, 512)
    body = tensorize(f32, AVX2).func.body
    assert {(s.var, s.extent) for s in ir.walk_stmts(body) if isinstance(s, ir.For)} >= \
        {("k_o", 2), ("k_i", 256)}


@pytest.mark.parametrize("n, loops, rest", [
    # 7 column tiles, at most 4 a block: no divisor of 7 makes a block, so two blocks of 3
    # tiles run the blocked order and the last tile is a call nest of its own after them
    (224, [2, 2, 4, 3, 256], "32 * j_o + 192"),
    # 9: 3 blocks of 3 would leave one of two threads idle for the last third; 4 blocks of
    # 2, and the 9th tile a nest after them
    (288, [4, 2, 4, 2, 256], "32 * j_o + 256"),
])
def test_column_tiles_cut_into_equal_blocks_leave_the_rest_to_a_nest(caches, n, loops, rest):
    caches(48 * 1024, 256 * 1024)
    func = _nn(32, n, 512)
    result = tensorize(func, AVX512)
    _well_formed(result)
    nests = _row_tiles(result.func)
    assert len(nests) == 2
    got = _call_loops(result.func, "x86.avx512.mm.f32.8x32x1")
    assert [e for _, e in got] == loops, got
    windows = [dict(c.operands)[c.output] for c in ir.walk_stmts(nests[1]) if isinstance(c, ir.Call)]
    assert windows and all(show_expr(w.base[1]) == rest for w in windows)  # the last tile
    _agrees(func, result, HOST_HAS_AVX512)


def _b_rows(func: ir.PrimFunc) -> set[str]:
    """The row index of B in each call of ``func``."""
    calls = [c for c in ir.walk_stmts(func.body) if isinstance(c, ir.Call)]
    assert calls
    return {show_expr(dict(c.operands)["b"].base[0]) for c in calls}


def _agrees(func: ir.PrimFunc, result, native: bool) -> None:
    """``result`` computes what ``func`` does: interpreted, and compiled where ``native``."""
    _interp_equal(func, result.func)
    if native:
        check = runtime.check(func, result.compile())
        assert check.ok, check.message


def _vm(k: int, n: int):
    return parse(f"@prim_func\ndef vm(x: f32[{k}], B: f32[{k}, {n}], y: f32[{n}]):\n"
                 f"    for j in range({n}):\n        y[j] = 0.0\n        for k in range({k}):\n"
                 f"            y[j] += x[k] * B[k, j]\n")


@pytest.mark.parametrize("library", [AVX512, AVX2], ids=["avx512", "avx2"])
def test_a_vector_matrix_product_reads_b_eight_rows_at_a_time(caches, library):
    # B (96 x 512 floats, 2 KB a row, 192 KB) outgrows a 64 KB L2: the axpy calls run in
    # blocks of 8 rows of B, each over all the column tiles, in two halves for two threads
    caches(32 * 1024, 64 * 1024)
    func = _vm(96, 512)
    result = tensorize(func, library)
    _well_formed(result)
    text = show(result.func)
    assert "for j_o_b in range(2):" in text and "for k_o in range(1, 12):" in text
    assert _b_rows(result.func) <= {"k_i", "k_i + 8 * k_o"}  # B's row: 8 steps a block
    _agrees(func, result, HOST_HAS_AVX2)


def test_an_odd_count_of_vector_tiles_runs_its_last_tile_after_the_halves(caches):
    # 544 columns: 17 tiles of 32, two halves of 8 and the last tile on its own
    caches(32 * 1024, 64 * 1024)
    func = _vm(96, 544)
    result = tensorize(func, AVX2)
    _well_formed(result)
    windows = {show_expr(dict(c.operands)["c"].base[0]) for c in ir.walk_stmts(result.func.body)
               if isinstance(c, ir.Call)}
    assert windows == {"256 * j_o_b + 32 * j_o_i", "512"}
    assert _b_rows(result.func) <= {"k_i", "k_i + 8 * k_o"}
    _agrees(func, result, HOST_HAS_AVX2)


def test_a_row_vector_times_a_matrix_reads_b_eight_rows_at_a_time(caches):
    # C[i, j] over i in range(1): the one row is no loop of its own for the blocking (544
    # columns: 17 tiles, the last one after the two halves, in the row's loop too)
    caches(32 * 1024, 64 * 1024)
    func = _nn(1, 544, 96)
    result = tensorize(func, AVX2)
    _well_formed(result)
    assert _b_rows(result.func) == {"k_i + 8 * k_o"} and "for i, k_o, k_i in grid(1, 12, 8):" in show(result.func)
    _agrees(func, result, HOST_HAS_AVX2)


def test_a_vector_matrix_product_whose_b_fits_l2_keeps_its_loops(caches):
    caches(32 * 1024, 1024 * 1024)
    text = show(tensorize(_vm(96, 512), AVX512).func)
    assert "k_o" not in text and "_b" not in text and "for k in range(96):" in text


@pytest.mark.parametrize("tiles", range(2, 130))
def test_column_blocks_fit_and_leave_fewer_tiles_than_blocks(tiles):
    from rewrite.extract import _column_blocks

    for most in (n for n in (1, 2, 3, 5, 8, 23, 43, 64) if n < tiles):  # all tiles do not fit
        nc, blocks = _column_blocks(tiles, most)
        if nc is None:
            assert most < 2
            continue
        assert 2 <= nc <= most and blocks >= 1
        assert 0 <= tiles - blocks * nc < max(blocks, nc)  # the rest: less than a block


def test_a_few_odd_column_blocks_give_way_to_an_even_number_and_a_rest():
    from rewrite.extract import ODD_BLOCKS_KEPT, _column_blocks

    # 1250^3 on Zen 4: 39 tiles, 32 fit a block; 13 divides 39 only into 3 blocks, which
    # leave one of two threads idle for a third of the work: 2 blocks of 19 and 1 left
    assert _column_blocks(39, 32) == (19, 2)
    assert _column_blocks(45, 16) == (11, 4)  # 1440^3: not 3 blocks of 15
    assert _column_blocks(63, 16) == (15, 4)  # 2016^3: not 7 blocks of 9
    # many odd blocks are kept: 13 blocks of 3 idle a thread for 1/13 of the work only
    assert ODD_BLOCKS_KEPT <= 13 and _column_blocks(39, 4) == (3, 13)
    for tiles in range(2, 130):
        for most in range(2, tiles):
            nc, blocks = _column_blocks(tiles, most)
            fewest = -(-tiles // most)
            if blocks % 2 and 1 < blocks < ODD_BLOCKS_KEPT and fewest % 2 == 0:
                # an odd count below the bound only where no two tiles a block would be even
                assert tiles // fewest < 2, (tiles, most, nc, blocks)


def test_b_fitting_half_of_l2_keeps_the_row_groups(caches):
    caches(48 * 1024, 2 * 1024 * 1024)
    loops = _call_loops(tensorize(_nn(128, 256, 512), AVX512).func, "x86.avx512.mm.f32.8x32x1")
    assert [n for _, n in loops] == [2, 2, 8, 8, 256]
    assert [v[0] for v, _ in loops] == ["i", "k", "i", "j", "k"]


@pytest.mark.parametrize("m, loops", [
    # 9 row tiles in 3 groups of 3 (two threads: 2 / 1): 2 column blocks of 4 tiles instead
    (72, [("j_o_b", 2), ("k_o", 2), ("i_o", 9), ("j_o_i", 4), ("k_i", 128)]),
    # 15 row tiles, 3 groups of 5: the same
    (120, [("j_o_b", 2), ("k_o", 2), ("i_o", 15), ("j_o_i", 4), ("k_i", 128)]),
    # 10 row tiles, 2 groups of 5: even, so the row groups stay
    (80, [("i_o_b", 2), ("k_o", 2), ("i_o_i", 5), ("j_o", 8), ("k_i", 128)]),
])
def test_a_few_odd_row_groups_give_way_to_an_even_number_of_column_blocks(caches, m, loops):
    caches(32 * 1024, 1024 * 1024)  # Zen 4: KC 128; B's block (128 KB) fits half of L2
    _, got = _planned(_nn(m, 256, 256), AVX512, "x86.avx512.mm.f32.8x32x1", HOST_HAS_AVX512)
    assert got == loops


def _stays_along(func: ir.PrimFunc, intrinsic: str, operand: str) -> set[str]:
    """The call loops along which ``operand``'s window does not move."""
    call = next(c for c in _calls(func) if c.intrinsic.name == intrinsic)
    used = {v.name for e in call.window(operand).base for v in ir.walk_expr(e) if isinstance(v, ir.Var)}
    return {name for name, _ in _call_loops(func, intrinsic)} - used


@pytest.mark.parametrize("l1, l2, kc", [(32 * 1024, 1024 * 1024, 128),  # Zen 4: 8 ways
                                        (48 * 1024, 2048 * 1024, 256)])  # Xeon: 12 ways
def test_a_row_tile_sweeps_the_column_tiles_with_its_steps_of_a_in_l1(caches, l1, l2, kc):
    # 1024^3 on 8x32 tiles: KC from L1 (B's 128-byte panel rows in two thirds of it); B's
    # block over all 32 column tiles is KC x 1024 floats, half of L2 on both, so no column
    # blocks: row groups of 8, and inside a group each row tile runs every column tile
    # (the loop just outside k_i) on the same KC steps of A, which stay in L1
    caches(l1, l2)
    func = _nn(1024, 1024, 1024)
    out = tensorize(func, AVX512).func
    name = "x86.avx512.mm.f32.8x32x1"
    loops = _call_loops(out, name)
    assert [n for _, n in loops] == [16, 1024 // kc, 8, 32, kc]
    columns, k_i = loops[-2][0], loops[-1][0]
    assert columns in _stays_along(out, name, "a") and columns not in _stays_along(out, name, "b")
    assert loops[2][0] in _stays_along(out, name, "b") and k_i not in _stays_along(out, name, "a")


def _stream(**kw):
    base = dict(operand="b", stride=128, run=128, runs=1, steps=256)
    return layout.Stream(**{**base, **kw})


def test_paged_prices_panels_whose_rows_span_more_than_the_tlb_maps():
    # B's rows 4000 bytes apart (1000 floats), 250 steps: 977 KB, far past the 160 KB the
    # panel keeps in reach; 1024 bytes apart, 256 steps: 256 KB, past it too; 768 bytes apart
    # (192 floats), 192 steps: 144 KB, within it; a contiguous panel pays nothing
    far = _stream(stride=4000, steps=250)
    past = _stream(stride=1024, steps=256)
    near = _stream(stride=768, steps=192)
    panel = _stream(stride=128, steps=250)
    assert cost.DTLB_REACH == 160 * 1024
    assert cost.streamed(100, (), (far,)) == pytest.approx(
        100 * 2 * cost.PER_LINE_REFETCHED * (1 - cost.DTLB_REACH / (250 * 4000)))
    assert cost.streamed(100, (), (past,)) == pytest.approx(
        100 * 2 * cost.PER_LINE_REFETCHED * (1 - 160 / 256))
    assert cost.streamed(100, (), (near,)) == 0.0
    assert cost.streamed(100, (), (panel,)) == 0.0
    assert cost.streamed(100, (far,)) == 0.0  # priced on the order the calls run in only


def test_outgrown_prices_panels_read_in_place_from_a_buffer_past_l2():
    # 511^3's B: rows 2044 bytes apart, 73-row blocks (149 KB, within the TLB's reach), of a
    # 1 MB buffer: charged for the share L2 (512 KB here) does not hold; the same rows of a
    # buffer L2 holds, or a contiguous panel, pay nothing; past the TLB's reach too, the
    # larger of the two charges, not both
    l2 = 512 * 1024
    strip = _stream(stride=2044, run=64, steps=73, footprint=511 * 2044)
    assert cost.streamed(100, (), (strip,), l2) == pytest.approx(
        100 * 1 * cost.PER_LINE_REFETCHED * (1 - l2 / (511 * 2044)))
    assert cost.streamed(100, (), (replace(strip, footprint=l2),), l2) == 0.0
    assert cost.streamed(100, (), (replace(strip, stride=64, footprint=10 * l2),), l2) == 0.0
    both = replace(strip, stride=4000, steps=250, footprint=1000 * 4000)
    paged = 100 * cost.PER_LINE_REFETCHED * (1 - cost.DTLB_REACH / (250 * 4000))
    outgrown = 100 * cost.PER_LINE_REFETCHED * (1 - l2 / (1000 * 4000))
    assert cost.streamed(100, (), (both,), l2) == pytest.approx(max(paged, outgrown))


def test_gemm_511_reads_b_from_panels_its_buffer_outgrows_l2():
    """``C = A @ B`` at 511^3 blocks its reduction in 73 rows (511 = 7 x 73), whose span stays
    within the TLB's reach, but B (1 MB) outgrows a 512 KB L2: B is copied into panels, which measured
    2.98 against 3.55 ms in place on Zen 3 (in turns), 0.98-0.99 of numpy against 0.83-0.85."""
    from rewrite import extract

    if extract.l2_bytes() >= 511 * 511 * 4:
        pytest.skip(f"this CPU's L2 ({extract.l2_bytes() // 1024} KB) holds all of B")
    zero = "    for i, j in grid(511, 511):\n        C[i, j] = 0.0\n"
    src = show(_nn(511, 511, 511)).replace("    for i, j, k", zero + "    for i, j, k")
    result = tensorize(parse(src), intrinsics.library("x86-avx2"))  # the leftover columns' gemv too
    (panel,) = [c for c in _copies(result.func) if c.value.buffer.name == "B" and
                c.buffer.shape == (31, 511, 16)]
    assert all(c.window("b").buffer == panel.buffer for c in _calls(result.func)
               if c.intrinsic.name == "x86.mm.f32.6x16x1"), show(result.func)


def test_a_b_past_l2_read_from_panels_computes_what_the_function_does(monkeypatch):
    """``_outgrown`` where this CPU's L2 is taken to be 32 KB: ``C = A @ B`` at 200^3, whose B
    (160 KB) L2 would hold, reads B from panels instead, and the compiled program matches
    the interpreter, NaN, infinities and signed zeros among the inputs."""
    from rewrite import extract

    zero = "    for i, j in grid(200, 200):\n        C[i, j] = 0.0\n"
    func = parse(show(_nn(200, 200, 200)).replace("    for i, j, k", zero + "    for i, j, k"))
    library = intrinsics.library("x86-avx2")
    assert not [c for c in _copies(tensorize(func, library).func) if c.value.buffer.name == "B"]
    monkeypatch.setattr(extract, "l2_bytes", lambda: 32 * 1024)
    result = tensorize(func, library)
    (panel,) = [c for c in _copies(result.func) if c.value.buffer.name == "B" and c.buffer.ndim == 3]
    assert any(c.window("b").buffer == panel.buffer for c in _calls(result.func))
    check = runtime.check(func, result.compile())
    assert check.ok, check.message


def test_one_set_is_rows_a_multiple_of_4_kb_apart():
    rows = dict(operand="a", stride=4, run=4, runs=8, steps=256, unit=False)
    assert cost.one_set(layout.Stream(**rows, apart=8192))
    assert cost.one_set(layout.Stream(**rows, apart=4096))
    assert not cost.one_set(layout.Stream(**rows, apart=4000))
    assert not cost.one_set(layout.Stream(**{**rows, "runs": 1, "stride": 32, "run": 32}, apart=0))
    assert cost.streamed(10, (), (layout.Stream(**rows, apart=8192),)) == \
        10 * 8 * 4 / cost.LINE * cost.PER_LINE_REFETCHED


def test_a_whose_rows_share_an_l1_set_is_read_from_panels(caches):
    # 1024 floats a row: the 8 rows of a call fall into one L1 set; A is copied into
    # [i_o, k, i_i] panels, each call's 8 values one 32-byte run
    caches(48 * 1024, 2 * 1024 * 1024)
    func = _nn(64, 1024, 1024)
    result = tensorize(func, AVX512)
    _well_formed(result)
    mm = [c for c in _calls(result.func) if c.intrinsic.name == "x86.avx512.mm.f32.8x32x1"]
    a = mm[0].window("a")
    assert a.buffer.name.startswith("A_panel") and a.buffer.shape == (8, 1024, 8)
    assert _flat(a, 0) == 1  # the tile's rows side by side
    _interp_equal(func, result.func)
    if HOST_HAS_AVX512:
        check = runtime.check(func, result.compile())
        assert check.ok, check.message


def test_a_whose_rows_fall_into_different_sets_is_read_in_place(caches):
    caches(48 * 1024, 2 * 1024 * 1024)
    result = tensorize(_nn(64, 1024, 1000), AVX512)
    assert all(c.window("a").buffer.name == "A" for c in _calls(result.func)
               if c.intrinsic.name == "x86.avx512.mm.f32.8x32x1")


def test_b_rows_a_page_apart_are_read_from_panels(caches):
    # 1000^3: B's 250-row blocks span 1 MB at 4000 bytes a row; the panel copies the 31
    # whole column tiles, the last 8 columns read B as written
    caches(48 * 1024, 2 * 1024 * 1024)
    result = tensorize(_nn(1000, 1000, 1000), AVX512)
    mm = [c for c in _calls(result.func) if c.intrinsic.name == "x86.avx512.mm.f32.8x32x1"]
    b = mm[0].window("b")
    assert b.buffer.name.startswith("B_panel") and b.buffer.shape == (31, 1000, 32)


# ---------------------------------------------------------------------------
# u8 x i8 on the AVX2 four-row tile: A and B copied into panels widened to i16

AVX2_INT8 = intrinsics.library("x86-avx2")


def _int8_gemm(m: int, n: int, k: int) -> ir.PrimFunc:
    return parse(f"""
@prim_func
def q(A: u8[{m}, {k}], B: i8[{k}, {n}], C: i32[{m}, {n}]):
    for i, j in grid({m}, {n}):
        C[i, j] = 0
        for k in range({k}):
            C[i, j] += i32(A[i, k]) * i32(B[k, j])
""")


def _extreme_args(func, seed: int) -> dict:
    """Random u8 and i8 with whole rows and columns at 0, 255, -128 and 127."""
    args = inputs.random_args(func, seed=seed)
    a, b = args["A"], args["B"]
    a[0], a[-1], a[:, 1] = 255, 0, 255
    b[:, 0], b[:, -1], b[2] = -128, 127, -128
    return args


@pytest.mark.parametrize("m, n, k, panels", [(130, 128, 130, True), (126, 112, 134, True),
                                             (102, 96, 150, False)])
def test_int8_gemm_on_the_four_row_tile(m, n, k, panels):
    # the four-row tile reads A and B from i16 panels, each element copied once as its value
    # cast (i16(A[...]), i16(B[...])), or, where the model finds the copies dearer, the
    # sources themselves; the remainders (odd sizes) go to other rows. The program means
    # what the source does, in the interpreter and, where the host has AVX2, compiled, on
    # the extremes of u8 and i8
    func = _int8_gemm(m, n, k)
    result = tensorize(func, AVX2_INT8)
    _well_formed(result)
    tile = [c for c in _calls(result.func) if c.intrinsic.name == "x86.mm.u8i8i32.4x16x2"]
    assert tile
    widened = {s.buffer.name: s.value.a.buffer.name for s in ir.walk_stmts(result.func.body)
               if isinstance(s, ir.Store) and isinstance(s.value, ir.Cast) and s.buffer.dtype == "i16"
               and isinstance(s.value.a, ir.Load)}
    assert sorted(widened.values()) == (["A", "B"] if panels else [])
    for c in tile:
        a, b = c.window("a"), c.window("b")
        if panels:
            assert (widened.get(a.buffer.name), widened.get(b.buffer.name)) == ("A", "B")
            assert _flat(b, 1) == 1 and _flat(b, 0) == 2  # 16 x 2 blocks
        else:
            assert (a.buffer.name, b.buffer.name) == ("A", "B")
    args = _extreme_args(func, seed=m)
    want = interp.run(func, **args)["C"]
    assert np.array_equal(interp.run(result.func, **args)["C"], want)
    if HOST_HAS_AVX2:
        got = {n: np.array(v, copy=True) for n, v in args.items()}
        result.compile()(**got)
        assert np.array_equal(got["C"], want)


def test_widened_panel_only_for_the_operands_that_ask():
    # the 2x16x4 tile's b (contiguous, not widened) is copied as it is, in i8
    func = _int8_gemm(32, 32, 64)
    lib = [d for d in AVX2_INT8 if d.name != "x86.mm.u8i8i32.4x16x2"]
    result = tensorize(func, lib)
    _well_formed(result)
    assert all(b.dtype in ("u8", "i8") for b in result.func.allocs)
    assert not any(isinstance(s, ir.Store) and isinstance(s.value, ir.Cast)
                   for s in ir.walk_stmts(result.func.body))


def test_a_panel_no_other_tile_reads_is_charged_nothing_for_coming_back():
    # one row tile's B (every call loop but the reduction moves it): its whole lines are
    # fetched once whatever stays in reach, so neither L2's sets, the TLB nor L2's size
    # charge it; the same panel read again by another row tile is charged
    l2 = 512 * 1024
    reread = _stream(stride=8192, run=64, steps=2048, footprint=2048 * 8192)
    once = replace(reread, once=True)
    assert cost.streamed(100, (reread,), (reread,), l2) > 100 * cost.PER_LINE_REFETCHED
    assert cost.streamed(100, (once,), (once,), l2) == 0.0
    # runs shorter than a line share it with the next tile's: still charged
    short = replace(reread, run=24, unit=False)
    assert cost.streamed(100, (replace(short, once=True),), (), l2) == \
        cost.streamed(100, (short,), (), l2) > 0.0


def test_an_operand_broadcast_from_rows_far_apart_is_charged_as_a_panel_is():
    # the 6x16 tile on C's transpose broadcasts a from B[k, 6 * j_o]: 24 bytes of a line a
    # step, 8 KB apart (8 of L2's sets), of a 16 MB B: L2's sets and L2's size charge it as
    # they charge a vector panel, the page term does not (rows 960 bytes apart in 250 KB,
    # PolyBench's covariance, stay uncharged)
    l2 = 512 * 1024
    a = _stream(operand="a", stride=8192, run=24, steps=2048, unit=False, footprint=2048 * 8192)
    sets = 8 * (cost.L2_WAYS - cost.OTHER_WAYS)
    assert cost.streamed(100, (a,), (), l2) == pytest.approx(
        100 * cost.PER_LINE_REFETCHED * (1 - sets / 2048))
    assert cost.streamed(100, (), (a,), l2) == pytest.approx(
        100 * cost.PER_LINE_REFETCHED * (1 - l2 / (2048 * 8192)))
    cov = _stream(operand="a", stride=960, run=24, steps=260, unit=False, footprint=260 * 960)
    assert cost.streamed(100, (cov,), (cov,), l2) == 0.0
    assert cost.streamed(100, (), (replace(cov, unit=True, run=64),), l2) > 0.0  # as a vector panel


def _row_tiles(func: ir.PrimFunc) -> list[ir.For]:
    """The top-level nests of ``func`` that hold calls."""
    return [s for s in ir.stmts_of(func.body) if isinstance(s, ir.For)
            and any(isinstance(c, ir.Call) for c in ir.walk_stmts(s))]


def test_a_few_rows_times_a_wide_matrix_read_b_eight_rows_at_a_time_in_one_sweep(caches):
    """``C = A @ B`` at 10 x 256 x 1024 (B's rows 4 KB apart, 1 MB past a 64 KB L2): the 6-
    and the 4-row tile each run over all their column tiles per 8 rows of B, in two halves
    for two threads, the two fused so that each block of B is read by both while it is in
    cache (not C's transpose on A and C copied into 16-wide temporaries). At 10 x 2048 x 2048
    on Zen 3 that measured 1.0-1.5x numpy's speed against 0.4-0.5 (one thread, in turns)."""
    caches(32 * 1024, 64 * 1024)
    func = _nn(10, 1024, 256)
    result = tensorize(func, AVX2)
    _well_formed(result)
    assert not result.func.allocs, show(result.func)
    (nest,) = _row_tiles(result.func)
    assert {c.intrinsic.name for c in ir.walk_stmts(nest) if isinstance(c, ir.Call)} == \
        {"x86.mm.f32.6x16x1", "x86.mm.f32.4x16x1"}
    assert (nest.var, nest.extent) == ("j_o_b", 2)
    assert _b_rows(result.func) == {"k_i + 8 * k_o"}
    _agrees(func, result, HOST_HAS_AVX2)


def test_two_row_tiles_are_the_halves_of_the_sweep(caches):
    # 12 rows: a 6-row tile a thread, outermost, each swept over all the column tiles per
    # block of 8 rows of B (not the columns' halves, whose two threads read each row of B in
    # two runs); 48 KB of C is within half of a 128 KB L2
    caches(32 * 1024, 128 * 1024)
    result, loops = _row_halves(12)
    assert loops == [("i_o", 2), ("k_o", 32), ("j_o", 64), ("k_i", 8)], loops
    (nest,) = _row_tiles(result.func)
    assert (nest.var, nest.extent) == ("i_o", 2)


def test_four_row_tiles_are_cut_into_two_halves_of_rows(caches):
    # 24 rows of 6: two halves of two row tiles each, outermost; 96 KB of C within half of
    # a 256 KB L2
    caches(32 * 1024, 256 * 1024)
    result, loops = _row_halves(24)
    assert [n for _, n in loops] == [2, 32, 2, 64, 8] and loops[0][0].endswith("_b"), loops


@pytest.mark.parametrize("l2, m, n, apart", [
    # Zen 4: B's 128-row block over all its columns, 512 KB, fits half of L2
    (1024 * 1024, 32, 1024, False),
    (512 * 1024, 32, 1024, True),  # Zen 3: it does not
    (1024 * 1024, 16, 2048, True),  # 1 MB blocks past half of Zen 4's L2
])
def test_a_few_rows_read_b_eight_rows_at_a_time_only_where_its_block_outgrows_l2(caches, l2, m,
                                                                                   n, apart):
    caches(32 * 1024, l2)
    func = _nn(m, n, n)
    result = tensorize(func, AVX512)
    loops = _call_loops(result.func, "x86.avx512.mm.f32.8x32x1")
    steps = dict(loops)["k_i"]
    assert (steps == 8) == apart, loops  # eight rows of B a block, or GotoBLAS's KC (128)
    if not apart:
        assert steps == 128 and loops[0] == ("i_o_b", 2), loops  # two row groups
    if n == 1024:
        _agrees(func, result, HOST_HAS_AVX512)


@pytest.mark.parametrize("m, n, panels", [
    (64, 512, set()),  # B's 128-row blocks (256 KB) held in L2: read in place
    (64, 1024, {"A"}),  # A's rows 4 KB apart, one L1 set: A alone in panels
    (512, 512, {"B"}),  # 64 row tiles read each block of B: the copy pays
])
def test_b_held_in_l2_by_the_blocked_order_is_copied_only_where_many_row_tiles_read_it(
        caches, m, n, panels):
    caches(32 * 1024, 1024 * 1024)  # Zen 4
    func = _nn(m, n, n)
    result = tensorize(func, AVX512)
    copied = {b.name.split("_")[0] for b in result.func.allocs if "panel" in b.name}
    assert copied == panels, show(result.func)
    assert dict(_call_loops(result.func, "x86.avx512.mm.f32.8x32x1"))["k_i"] == 128  # blocked
    if m == 64:
        _agrees(func, result, HOST_HAS_AVX512)


def test_streamed_charges_an_operand_held_in_l2_for_its_pages_alone():
    from rewrite.rules.layout import Stream

    # B in place, rows 4 KB apart: 1024 steps as written, 128 a block
    written = Stream("b", 4096, 128, 1, 1024, True, False, 0, 4 << 20, False)
    blocked = Stream("b", 4096, 128, 1, 128, True, False, 0, 4 << 20, False)
    whole = cost.streamed(1000, (written,), (blocked,), 1 << 20)
    held = cost.streamed(1000, (written,), (blocked,), 1 << 20, frozenset({"b"}))
    assert held == cost._paged(1000, blocked) > 0  # 512 KB of rows past the TLB's reach
    assert whole > held + cost._outgrown(1000, blocked, 1 << 20) / 2


def _row_halves(m: int):
    """``C = A @ B`` at m x 1024 x 256 on the AVX2 tiles: the result, checked on two threads
    and on one (which runs the halves as one sweep, ``lower.one_sweep``) where the host runs
    AVX2, and the loops around its 6-row tile's calls."""
    func = _nn(m, 1024, 256)
    result = tensorize(func, AVX2)
    _well_formed(result)
    _agrees(func, result, HOST_HAS_AVX2)
    if HOST_HAS_AVX2:
        check = runtime.check(func, result.compile(threads=1))
        assert check.ok, check.message
    return result, _call_loops(result.func, "x86.mm.f32.6x16x1")


def test_all_rows_reads_the_tile_s_extent_along_the_buffer_axis_its_window_steps():
    from rewrite.extract import _all_rows

    (desc,) = [d for d in AVX512 if d.name == "x86.avx512.mm.f32.8x32x1"]  # c: 8 x 32
    rows = nests.Dim("i_o", 0, 2)
    i_o, j_o = ir.Var("i_o"), ir.Var("j_o")

    def covers(shape, base, steps) -> bool:
        c = ir.Window(ir.Buffer("C", "f32", shape), base, steps)
        return _all_rows(desc, rows, {desc.output.name: c})

    eight = (ir.Binary("*", ir.Const(8, ir.INDEX), i_o), ir.Binary("*", ir.Const(32, ir.INDEX), j_o))
    assert covers((16, 64), eight, ((1, 0), (0, 1)))
    assert not covers((20, 64), eight, ((1, 0), (0, 1)))  # 4 rows left to another nest
    # C's transpose: the tile's 8 rows step the buffer's second axis, which 2 tiles cover
    assert covers((64, 16), eight[::-1], ((0, 1), (1, 0)))
    assert not covers((64, 32), eight[::-1], ((0, 2), (1, 0)))  # every other row only


def test_rows_left_to_another_nest_keep_the_halves_of_the_columns(caches):
    # 16 rows: two 6-row tiles and 4 rows on the 4-row tile; the column halves stay, so that
    # both nests' blocks of B fuse into one sweep
    caches(32 * 1024, 128 * 1024)
    func = _nn(16, 1024, 256)
    result = tensorize(func, AVX2)
    (nest,) = _row_tiles(result.func)
    assert (nest.var, nest.extent) == ("j_o_b", 2), show(result.func)
    assert {c.intrinsic.name for c in ir.walk_stmts(nest) if isinstance(c, ir.Call)} == \
        {"x86.mm.f32.6x16x1", "x86.mm.f32.4x16x1"}
    _agrees(func, result, HOST_HAS_AVX2)


def test_rows_whose_output_outgrows_half_of_l2_keep_the_blocked_order(caches):
    # 48 rows of 1024 floats (192 KB of C) past half of a 128 KB L2: C's tiles would come from
    # L3 once per block of eight rows; the reduction is blocked as for any product
    caches(32 * 1024, 128 * 1024)
    result = tensorize(_nn(48, 1024, 256), AVX2)
    assert not _b_rows(result.func) & {"k_i + 8 * k_o"}, show(result.func)


def test_one_row_tile_over_a_wide_matrix_is_cut_into_column_blocks(caches):
    # 6 rows, B's rows 496 floats apart (under 2 KB: no sweep of eight rows), 1 MB: one row
    # tile, so only column blocks keep a reduction block of B in L2: 256 steps over 31 column
    # tiles (496 KB) past half of a 64 KB L2, cut into blocks of 2 tiles and a rest
    caches(32 * 1024, 64 * 1024)
    func = _nn(6, 496, 512)
    result = tensorize(func, AVX2)
    _well_formed(result)
    loops = _call_loops(result.func, "x86.mm.f32.6x16x1")
    assert [(v, n) for v, n in loops] == [("j_o_b", 15), ("k_o", 2), ("j_o_i", 2), ("k_i", 256)]
    _agrees(func, result, HOST_HAS_AVX2)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(m=st.integers(1, 14), tiles=st.integers(4, 9), extra=st.sampled_from([0, 8, 5]),
       k=st.sampled_from([16, 24, 40, 56, 72]))
def test_a_few_rows_swept_eight_rows_at_a_time_compute_what_the_function_does(caches, monkeypatch,
                                                                            m, tiles, extra, k):
    # small caches and rows of B "far apart" from 256 bytes on, so that small shapes take the
    # sweep of eight rows: a few rows, column tiles in two halves and an odd last one, the
    # rows left on other tiles in the same blocks, columns left over on other rows
    from rewrite import extract

    caches(32 * 1024, 32 * 1024)
    monkeypatch.setattr(extract, "ROWS_APART", 256)
    n = 16 * tiles + extra
    func = _nn(m, n, k)
    result = tensorize(func, AVX2)
    _well_formed(result)
    _agrees(func, result, HOST_HAS_AVX2)


def test_the_small_shapes_above_do_take_the_sweep(caches, monkeypatch):
    from rewrite import extract

    caches(32 * 1024, 32 * 1024)
    monkeypatch.setattr(extract, "ROWS_APART", 256)
    result = tensorize(_nn(10, 16 * 8, 72), AVX2)
    assert _b_rows(result.func) & {"k_i + 8 * k_o"}, show(result.func)
    (nest,) = _row_tiles(result.func)
    assert {c.intrinsic.name for c in ir.walk_stmts(nest) if isinstance(c, ir.Call)} == \
        {"x86.mm.f32.6x16x1", "x86.mm.f32.4x16x1"}


def test_a_tile_whose_output_rows_share_an_l1_set_is_charged_for_them():
    desc = next(d for d in AVX512 if d.name == "x86.avx512.mm.f32.8x32x1")
    y = ir.Buffer("Y", "f32", (1, 16, 16, 64))

    def window(steps):
        return ir.Window(y, tuple(ir.Const(0, ir.INDEX) for _ in range(4)), steps)

    along_h = window(((0, 1, 0, 0), (0, 0, 0, 1)))  # 8 rows 16 * 64 floats (4 KB) apart
    along_w = window(((0, 0, 1, 0), (0, 0, 0, 1)))  # 8 rows 256 bytes apart
    # 8 rows of two lines each, 16 lines in one 8-way set: loaded and stored, each line
    assert cost.output_one_set(10, desc, along_h) == 10 * 8 * 2 * 2 * cost.PER_LINE_REFETCHED
    assert cost.output_one_set(10, desc, along_w) == 0.0
    # the AVX2 6x16 tile's six rows of one line each fit one set's eight ways
    narrow = next(d for d in intrinsics.library("x86-avx2") if d.name == "x86.mm.f32.6x16x1")
    assert cost.output_one_set(10, narrow, along_h) == 0.0


def test_the_stem_convolution_runs_its_tiles_along_the_rows_of_its_output(zen4_caches):
    """ResNet's 7x7 stem, 16 x 16 x 64 out: its tiles' 8 rows along ``w`` (256 bytes apart),
    not along ``h`` (4 KB apart, one L1 set)."""
    func = parse_file(ROOT / "corpus" / "conv2d.py")["c2d_stem_7x7"]
    result = tensorize(func, AVX512)
    mm = [c for c in _calls(result.func) if c.intrinsic.name == "x86.avx512.mm.f32.8x32x1"]
    assert mm
    c = mm[0].window("c")
    assert c.buffer.name == "Y" and c.steps[0] == (0, 0, 1, 0), show(result.func)
    _interp_equal(func, result.func)
    if HOST_HAS_AVX512:
        check = runtime.check(func, result.compile())
        assert check.ok, check.message
