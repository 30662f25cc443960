"""Padding to the intrinsic's tile (``rewrite/rules/padding.py``, ``pad-to-tile``): the staged
programs (padded temporaries, copies, fills, writeback), the coverage they bring, the compiled
kernels against the interpreter at odd sizes, where the remainder stays because it is cheaper,
where padding is refused because it would not be sound, and non-finite inputs and signed zeros.

Padding is weighed here alone, without masked edges (``rules/edges.py``, tested in
``test_edges.py``), which run most of these remainders on the tiles' partial forms instead.
"""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import intrinsics
from rewrite import cost, inputs, interp, ir, nests, runtime
from rewrite.cli import main
from rewrite.match import BodyMatch, bindings
from rewrite.names import Names
from rewrite import pipeline
from rewrite.rules import padding
from rewrite.script import parse, parse_file, show
from rewrite.verify import verify

GOLDEN = Path(__file__).parent / "golden" / "padding"
DOT = "x86.avx512vnni.dot.u8i8i32.16x4"  # emulated where the CPU has no AVX-512 VNNI
MM = "x86.mm.f32.6x16x1"
GEMV = "x86.gemv.f32.4x8"
# the rows of an AVX2 machine: what these tests expect padding to do does not depend on the host
AVX2 = intrinsics.library("x86-avx2")
HOST = intrinsics.library("host")



def tensorize(func, library=None, rules_off=(), **options):
    """``pipeline.tensorize`` with masked edges off (see above)."""
    return pipeline.tensorize(func, library, rules_off=set(rules_off) | {"edges"}, **options)


# golden programs -> the intrinsics they are tensorized onto
GOLDEN_ROWS = {"int8_dot_30": [DOT], "int8_dot_12": [DOT], "int8_dot_k_30": [DOT],
               "f32_mm_30": [MM]}


def _rows(*names: str) -> list:
    return [intrinsics.get(n) for n in names]


def _q(m: int, n: int, k: int):
    """u8 x i8 -> i32, accumulated into C."""
    return parse(f"@prim_func\ndef q(C: i32[{m}, {n}], A: u8[{m}, {k}], B: i8[{k}, {n}]):\n"
                 f"    for i, j, k in grid({m}, {n}, {k}):\n"
                 f"        C[i, j] += i32(A[i, k]) * i32(B[k, j])\n")


def _s(m: int, n: int, k: int, init: bool = True):
    """f32 ``C = A @ B`` (``init=False``: ``C += A @ B``)."""
    zero = f"    for i, j in grid({m}, {n}):\n        C[i, j] = 0.0\n" if init else ""
    return parse(f"@prim_func\ndef s(A: f32[{m}, {k}], B: f32[{k}, {n}], C: f32[{m}, {n}]):\n"
                 f"{zero}    for i, j, k in grid({m}, {n}, {k}):\n"
                 f"        C[i, j] += A[i, k] * B[k, j]\n")


def _gemv(m: int, k: int):
    return parse(f"@prim_func\ndef g(A: f32[{m}, {k}], x: f32[{k}], y: f32[{m}]):\n"
                 f"    for i, k in grid({m}, {k}):\n"
                 f"        y[i] += A[i, k] * x[k]\n")


def _padded(func) -> list[ir.Buffer]:
    return [b for b in func.allocs if "_pad" in b.name]


def _calls(func) -> list[ir.Call]:
    return [s for s in ir.walk_stmts(func.body) if isinstance(s, ir.Call)]


def _nest(func) -> nests.AccNest:
    (nest,) = [p for p in nests.items(nests.normalize(func)) if isinstance(p, nests.AccNest)]
    return nest


def _binding(nest, name: str, loads, **kw):
    """The binding of intrinsic ``name`` whose operands are ``loads`` (by buffer name, in the
    descriptor's input order) and whose dims are the nest's first matching ones."""
    desc = intrinsics.get(name)
    by_name = {ld.buffer.name: ld for ld in ir.loads_of(nest.value)}
    match = BodyMatch(0, name, tuple(by_name[x] for x in loads))
    return desc, next(bindings(nest, desc, match, **kw))


def _staged(func, name: str, loads, **kw):
    """``func`` with its one nest replaced by what ``pad-to-tile`` makes of it for intrinsic
    ``name``, the padded nest left as plain loops; the request and the stage too."""
    nest = _nest(func)
    desc, b = _binding(nest, name, loads, **kw)
    req = padding.requests(nest, desc, b)
    assert req is not None
    return _assemble(func, nest, req), req


def _assemble(func, nest, req):
    stage = padding.pad(nest, req, Names.of(func))
    others = [s for s in ir.stmts_of(nests.normalize(func).body) if nests.as_nest(s) is None]
    body = ir.seq(*others, *stage.copies, stage.nest.stmt(), *stage.after)
    return ir.PrimFunc(func.name, func.params, body, func.allocs + stage.buffers)


# ---------------------------------------------------------------------------
# the staged programs


@pytest.mark.parametrize("stem", sorted(GOLDEN_ROWS))
def test_golden(stem, request):
    (func,) = parse_file(GOLDEN / f"{stem}.py").values()
    result = tensorize(func, _rows(*GOLDEN_ROWS[stem]))
    got = show(result.func)
    expected = GOLDEN / f"{stem}.expected"
    if request.config.getoption("--update-golden") or not expected.exists():
        expected.write_text(got)
    assert got == expected.read_text()
    assert parse(got) == result.func
    check = runtime.check(func, result.compile())
    assert check.ok, check.message


def test_int8_30_on_the_16x4_dot_pads_j_and_k_to_32():
    """The issue's product: the dot covers 16 of the 30 columns and 28 of the 30 k without
    padding (coverage 0.50); padded, every multiply-add runs in a dot."""
    func = _q(30, 30, 30)
    before = tensorize(func, _rows(DOT), rules_off={"padding"})
    assert round(before.coverage, 2) == 0.50
    result = tensorize(func, _rows(DOT))
    assert result.coverage >= 0.9 and result.cost < before.cost
    shapes = {b.name: (b.dtype, b.shape) for b in result.func.allocs}
    # A along k to 32; B along j and k, in the dot's [16, 4] blocks; C along j
    assert shapes == {"A_pad": ("u8", (30, 32)), "B_pad": ("i8", (2, 8, 16, 4)),
                      "C_pad": ("i32", (30, 32))}
    assert [s.calls for s in result.sites] == [30 * 2 * 8]
    for call in _calls(result.func):
        assert {w.buffer.name for _, w in call.operands} == {"A_pad", "B_pad", "C_pad"}
        assert call.window("b").strides == (4, 1)  # one contiguous block a call
    # the valid 30 x 30 part of C_pad is added to C once, last
    last = ir.stmts_of(result.func.body)[-1]
    (wb,) = [s for s in ir.walk_stmts(last) if isinstance(s, ir.Accumulate)]
    assert wb.buffer.name == "C" and wb.value == ir.Load(shapes_buffer(result, "C_pad"), wb.indices)
    assert [(lp.start, lp.stop) for _, lps in ir.walk_in_loops(last) for lp in lps] == [(0, 30), (0, 30)]
    assert ir.written_by(ir.seq(*ir.stmts_of(result.func.body)[:-1])) == {"A_pad", "B_pad", "C_pad"}
    check = runtime.check(func, result.compile())
    assert check.ok, check.message


def shapes_buffer(result, name: str) -> ir.Buffer:
    return next(b for b in result.func.allocs if b.name == name)


def test_reduction_only_padding_accumulates_into_the_output():
    result = tensorize(_q(64, 64, 30), _rows(DOT))
    assert {b.name for b in result.func.allocs} == {"A_pad", "B_pad"}
    assert all(c.window("c").buffer.name == "C" for c in _calls(result.func))
    assert not [s for s in ir.walk_stmts(result.func.body)
                if isinstance(s, ir.Accumulate)]  # no writeback
    assert result.coverage == 1.0


def test_the_copies_hold_the_operands_padded_with_zeros():
    """The fills and copies, run by the interpreter on operands whose elements all differ:
    A_pad is A with two zero columns; B_pad is B (30 x 30, read [k, j]) padded to 32 x 32 and
    cut into [16, 4] blocks, [j_o, k_o, j_i, k_i]."""
    func = _q(30, 30, 30)
    nest = _nest(func)
    desc, b = _binding(nest, DOT, ("A", "B"))
    stage = padding.pad(nest, padding.requests(nest, desc, b), Names.of(func))
    copies = [s for s in stage.copies if ir.written_by(s) <= {"A_pad", "B_pad"}]
    ins = tuple(p for p in func.params if p.name in ("A", "B"))
    outs = tuple(x for x in stage.buffers if x.name in ("A_pad", "B_pad"))
    prog = ir.PrimFunc("copies", ins + outs, ir.seq(*copies))
    verify(prog)
    a = (np.arange(900) % 251).astype(np.uint8).reshape(30, 30)
    b = (np.arange(900) % 251 - 125).astype(np.int8).reshape(30, 30)
    got = interp.run(prog, A=a, B=b, A_pad=np.full((30, 32), 7, np.uint8),
                     B_pad=np.full((2, 8, 16, 4), 7, np.int8))
    np.testing.assert_array_equal(got["A_pad"], np.pad(a, ((0, 0), (0, 2))))
    bt = np.pad(b, ((0, 2), (0, 2))).T  # [j, k]
    np.testing.assert_array_equal(got["B_pad"], bt.reshape(2, 16, 8, 4).transpose(0, 2, 1, 3))


def test_a_loop_shorter_than_the_tile_is_rounded_up_to_one():
    result = tensorize(_q(64, 12, 64), _rows(DOT))
    assert result.coverage >= 0.9
    assert {b.name: b.shape for b in result.func.allocs} == {"B_pad": (16, 16, 4), "C_pad": (64, 16)}
    check = runtime.check(_q(64, 12, 64), result.compile())
    assert check.ok, check.message


def test_a_loop_under_half_a_tile_is_not_rounded_up():
    """6 columns for a 16-wide dot would be 10 of 16 lanes wasted: no binding is offered."""
    nest = _nest(_q(8, 6, 8))
    desc = intrinsics.get(DOT)
    loads = tuple(sorted(ir.loads_of(nest.value), key=lambda ld: ld.buffer.name))
    assert not list(bindings(nest, desc, BodyMatch(0, DOT, loads), short=True))
    result = tensorize(_q(8, 6, 8), _rows(DOT))
    assert not _padded(result.func) and result.coverage == 0.0


QCONV_30 = """@prim_func
def qconv(X: u8[1, 16, 16, 30], W: i8[3, 3, 30, 30], Y: i32[1, 14, 14, 30]):
    for n, h, w, co in grid(1, 14, 14, 30):
        for rh, rw, ci in grid(3, 3, 30):
            Y[n, h, w, co] += i32(X[n, h + rh, w + rw, ci]) * i32(W[rh, rw, ci, co])
"""


def test_an_int8_convolution_with_30_channels_is_padded_through_an_im2col_copy():
    """30 input and output channels: rounded up to 32, X copied window by window (the copy
    repeats elements, so it is priced as a packing copy), W in blocks, Y through a padded
    temporary; without padding half the work stays scalar."""
    func = parse(QCONV_30)
    off = tensorize(func, AVX2, rules_off={"padding"})
    result = tensorize(func, AVX2)
    assert off.coverage < 0.6 and result.coverage >= 0.9
    shapes = {b.name: b.shape for b in result.func.allocs}
    assert shapes["X_pad"] == (1, 14, 3, 14, 3, 32) and shapes["Y_pad"] == (1, 14, 14, 32)
    check = runtime.check(func, result.compile())
    assert check.ok, check.message


def test_copies_that_change_the_layout_are_priced_as_packing_copies():
    """A_pad[i, k] is A's own box; B_pad in blocks and X_pad's im2col are packing copies."""
    nest = _nest(_q(30, 30, 30))
    desc, b = _binding(nest, DOT, ("A", "B"))
    stage = padding.pad(nest, padding.requests(nest, desc, b), Names(["A", "B", "C"]))
    assert {t.name for t in stage.relaid} == {"B_pad"}
    conv = parse(QCONV_30)
    nest = _nest(conv)
    desc, b = _binding(nest, DOT, ("X", "W"))
    stage = padding.pad(nest, padding.requests(nest, desc, b), Names(["X", "W", "Y"]))
    assert "X_pad" in {t.name for t in stage.relaid}
    plain = replace(stage, relaid=())
    assert padding.price(stage) > padding.price(plain) + cost.PER_PACKING - cost.PER_PADDED_TEMP


def test_candidates_are_the_whole_padding_then_each_proper_subset_of_its_loops():
    """f32 30 x 30 x 30 on the 6 x 16 tile rounds j alone (6 divides 30), one candidate;
    31 x 30 rounds i and j, then i alone and j alone (the loop left as it is keeps a
    remainder)."""
    nest = _nest(_s(30, 30, 30))
    desc, b = _binding(nest, MM, ("A", "B"))
    (whole,) = padding.candidates(nest, desc, b)
    assert whole == padding.requests(nest, desc, b) and whole.family is None
    nest = _nest(_s(31, 30, 30))
    desc, b = _binding(nest, MM, ("A", "B"))
    whole, *some = padding.candidates(nest, desc, b)
    assert whole.family is None and {x for x, _ in whole.padded} == {"i", "j"}
    assert [x.padded for x in some] == [(("i", 36),), (("j", 32),)]
    # each planned on the tile and its siblings along the loop left as it is: i rounded
    # alone leaves j's remainder to tiles of other widths, j alone i's to the 4- and 2-row
    rows = [intrinsics.get(n) for n in (MM, "x86.mm.f32.4x16x1", "x86.mm.f32.2x16x1")]
    assert [x.family == padding.siblings(rows[1], x.family[0]) for x in some] == [False, True]
    assert some[1].family == padding.siblings(rows[2], ("i",)) != padding.siblings(
        intrinsics.get("x86.mm.u8i8i32.4x16x2"), ("i",))
    # j rounded alone copies B and the output, not A
    assert {ld.buffer.name for ld, _, _ in some[1].loads} == {"B"}


def test_a_subset_keeps_the_short_loops_and_the_loops_copied_in_blocks():
    """u8 x i8 64 x 12 x 30 on the 16 x 4 dot: j (12 < 16) must be rounded in every
    candidate; 30 x 30 x 30: B is copied in [16, 4] blocks of j and k, so neither is left
    unrounded (a block copy of 30 columns in blocks of 16 would index past its temporary)."""
    nest = _nest(_q(64, 12, 30))
    desc, b = _binding(nest, DOT, ("A", "B"), short=True)
    assert all(dict(x.padded).get("j") == 16 for x in padding.candidates(nest, desc, b))
    nest = _nest(_q(30, 30, 30))
    desc, b = _binding(nest, DOT, ("A", "B"))
    assert [dict(x.padded) for x in padding.candidates(nest, desc, b)] == [{"j": 32, "k": 32}]


def test_doitgen_pads_its_columns_and_leaves_its_rows_to_the_other_tiles():
    """doitgen's 50 x 40 rows of 60 columns: C4 padded to 64 columns, the output padded
    with it, A read in place (no copy of its rows), the two rows past 48 on tiles along q;
    nothing scalar but the copy back, and the kernel checks."""
    func = parse_file(Path(__file__).parents[1] / "corpus" / "doitgen.py")["doitgen_local_sum"]
    result = tensorize(func, AVX2)
    shapes = {b.name: b.shape for b in result.func.allocs}
    assert shapes == {"C4_pad": (60, 64), "sumx_pad": (50, 40, 64)}, show(result.func)
    assert {c.intrinsic.name for c in _calls(result.func)} <= {MM, "x86.mm.f32.4x16x1"}
    assert all(c.window("a").buffer.name == "A" for c in _calls(result.func))
    off = tensorize(func, AVX2, rules_off={"padding"})
    assert result.cost < off.cost
    check = runtime.check(func, result.compile())
    assert check.ok, check.message


def test_padding_off_by_name_keeps_the_remainders():
    result = tensorize(_q(30, 30, 30), _rows(DOT), rules_off={"padding"})
    assert not result.func.allocs


# ---------------------------------------------------------------------------
# compiled kernels against the interpreter at odd sizes


@pytest.mark.parametrize("shape", [(30, 30, 30), (12, 12, 12), (7, 20, 13), (50, 50, 50),
                                   (64, 30, 64), (33, 17, 9)])
@pytest.mark.parametrize("library", ["avx2", "host"])
def test_int8_checks_at_odd_sizes(shape, library):
    func = _q(*shape)
    result = tensorize(func, AVX2 if library == "avx2" else HOST)
    check = runtime.check(func, result.compile())
    assert check.ok, check.message
    assert parse(show(result.func)) == result.func


@pytest.mark.parametrize("shape", [(30, 30, 30), (100, 70, 50), (5, 10, 7), (13, 17, 11),
                                   (64, 63, 64), (30, 31, 29)])
@pytest.mark.parametrize("library", ["avx2", "host"])
def test_f32_checks_at_odd_sizes(shape, library):
    func = _s(*shape)
    result = tensorize(func, AVX2 if library == "avx2" else HOST)
    check = runtime.check(func, result.compile())
    assert check.ok, check.message


def _batched(dtype: str, b: int, m: int, n: int, k: int):
    """``C[r, i, j] += A[r, i, s] * B[s, j]`` (int8: u8 x i8 into i32), written into a
    temporary and copied out, as doitgen's expanded row is."""
    acc, a, w, cast = ("f32", "f32", "f32", "") if dtype == "f32" else ("i32", "u8", "i8", "i32")
    term = f"{cast}(A[r, i, s]) * {cast}(B[s, j])" if cast else "A[r, i, s] * B[s, j]"
    return parse(f"@prim_func\ndef bt(A: {a}[{b}, {m}, {k}], B: {w}[{k}, {n}], C: {acc}[{b}, {m}, {n}]):\n"
                 f"    T = alloc({acc}[{b}, {m}, {n}])\n"
                 f"    for r, i, j in grid({b}, {m}, {n}):\n        T[r, i, j] = 0\n"
                 f"    for r, i, j, s in grid({b}, {m}, {n}, {k}):\n        T[r, i, j] += {term}\n"
                 f"    for r, i, j in grid({b}, {m}, {n}):\n        C[r, i, j] = T[r, i, j]\n")


@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(dtype=st.sampled_from(["f32", "i8"]), b=st.integers(1, 5), m=st.integers(1, 30),
       n=st.integers(9, 40), k=st.integers(1, 24))
# columns padded, rows left to the 4- and 2-row tiles
@example(dtype="f32", b=4, m=23, n=62, k=36)
@example(dtype="f32", b=5, m=10, n=46, k=37)
@example(dtype="i8", b=5, m=27, n=39, k=13)
def test_batched_products_of_odd_sizes_check(dtype, b, m, n, k):
    """Batched products whose extents the tiles do not divide, where the padding stage may
    round some loops and leave others to remainders: each compiled program computes what
    the interpreter does, and prints as a script that parses back to itself."""
    func = _batched(dtype, b, m, n, k)
    result = tensorize(func, AVX2)
    check = runtime.check(func, result.compile())
    assert check.ok, (check.message, show(result.func))
    assert parse(show(result.func)) == result.func


@pytest.mark.parametrize("make", [lambda: _q(30, 30, 30), lambda: _s(30, 30, 30),
                                  lambda: _s(64, 63, 64)])
def test_padding_is_chosen_and_pays_by_the_cost_model(make):
    func = make()
    off = tensorize(func, AVX2, rules_off={"padding"})
    on = tensorize(func, AVX2)
    assert _padded(on.func) and on.cost < off.cost and on.coverage >= 0.95
    check = runtime.check(func, on.compile(threads=2))
    assert check.ok, check.message


def test_int8_30_reaches_coverage_on_the_host_with_check_from_the_command_line(capsys):
    import json

    corpus = Path(__file__).parent.parent / "corpus" / "padding.py"
    assert main(["run", str(corpus), "--func", "qgemm_u8i8_30", "--check", "--json"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)["functions"]
    assert entry["coverage"]["fraction"] >= 0.9 and entry["check"]["ok"]


# ---------------------------------------------------------------------------
# where the remainder is cheaper, it stays


@pytest.mark.parametrize("make", [lambda: _s(64, 65, 64), lambda: _s(96, 97, 96),
                                  lambda: _s(128, 129, 128)])
def test_one_extra_column_keeps_its_remainder(make):
    """Rounding 65 columns up to 80 (or 97 to 112) would run 15 columns of zeros and copy B
    and C for one real column: the remainder nest is cheaper, and stays."""
    func = make()
    result = tensorize(func, AVX2)
    assert not _padded(result.func)
    n = func.params[1].shape[1]
    assert any(lp.var == "j" and lp.stop == n and lp.start > 0
               for _, lps in ir.walk_in_loops(result.func.body) for lp in lps)


def test_the_price_of_short_rows_is_not_the_vector_rate():
    """A copy of 6 elements a row pays full price per element; 64 a row, the vector rate."""
    buf = ir.Buffer("X", "f32", (64, 64))

    def copy(n):
        s = ir.Store(buf, (ir.Var("i"), ir.Var("k")), ir.Const(0.0, "f32"))
        return ir.For("i", 0, 64, ir.For("k", 0, n, s))

    assert cost.padding([copy(6)], []) == 64 * 6
    assert cost.padding([copy(64)], []) == 64 * 64 * cost.PER_PADDED_ELEMENT
    assert cost.padding([], [buf]) == cost.PER_PADDED_TEMP + buf.size * cost.PER_PADDED_ELEMENT


def test_passes_over_temporaries_past_twice_l2_pay_the_far_rate(caches):
    """A row copy into a 1 MB temporary: at the vector rate where L2 is 1 MB (twice L2 holds
    it), at ``PADDED_FAR`` times that rate where L2 is 256 KB; rows too short to vectorise
    pay full price either way (as do the runtime's zeros), and a stage without temporaries
    is never far."""
    buf = ir.Buffer("X", "f32", (512, 512))

    def copy(n):
        s = ir.Store(buf, (ir.Var("i"), ir.Var("k")), ir.Const(0.0, "f32"))
        return ir.For("i", 0, 512, ir.For("k", 0, n, s))

    caches(32 * 1024, 1024 * 1024)
    assert cost.padding([copy(512)], [buf]) == \
        512 * 512 * cost.PER_PADDED_ELEMENT + cost.PER_PADDED_TEMP
    caches(32 * 1024, 256 * 1024)
    assert cost.PADDED_FAR > 1
    assert cost.padding([copy(512)], [buf]) == \
        512 * 512 * cost.PER_PADDED_ELEMENT * cost.PADDED_FAR + cost.PER_PADDED_TEMP
    # (a copy that leaves most of X unwritten also pays for the runtime's zeros of it)
    assert cost.padding([copy(6)], [buf]) == \
        512 * 6 + buf.size * cost.PER_PADDED_ELEMENT + cost.PER_PADDED_TEMP
    assert cost.padding([copy(512)], []) == 512 * 512 * cost.PER_PADDED_ELEMENT


def test_a_large_product_keeps_its_remainders_once_its_padded_copies_outgrow_l2(caches):
    """1100^3 on the 8 x 32 tile: padding copies A, B and C into 14.7 MB of temporaries, whose
    passes measured 0.51 ns an element on Zen 4 (1 MB L2), and the padded program 28.0 against
    25.5 ms with remainders. With 1 MB of L2 the product is not padded whole (no copy of A,
    no temporary as wide as C), only the strip of columns its tiles leave (below); with 8 MB,
    where the temporaries would stay in cache, the whole product is: the footprint decides."""
    func = _s(1100, 1100, 1100)
    library = intrinsics.library("x86-avx512")
    caches(32 * 1024, 1024 * 1024)
    padded = _padded(tensorize(func, library).func)
    assert padded and all(b.shape[-1] <= 32 for b in padded)  # a strip of 12 columns, rounded
    caches(32 * 1024, 8 * 1024 * 1024)
    padded = _padded(tensorize(func, library).func)
    assert any(b.shape == (1104, 1100) for b in padded)  # A's rows rounded to the 8-row tile


def test_remainders_are_padded_only_where_padding_whole_is_priced_far(caches):
    """``pads_remainders``: a nest's remainders are weighed for padding where there is a way to
    pad the nest whole and every such way is far (its temporaries outgrow twice L2)."""
    from types import SimpleNamespace

    def pads(*kb):
        return SimpleNamespace(buffers=[ir.Buffer(f"T{n}", "f32", (k * 256,)) for n, k in enumerate(kb)])

    caches(32 * 1024, 512 * 1024)  # far past 1 MB
    assert padding.pads_remainders([pads(800, 300), pads(1100)])
    assert not padding.pads_remainders([pads(800, 300), pads(600)])  # one stays in cache
    assert not padding.pads_remainders([])  # nothing to pad the nest whole with
    caches(32 * 1024, 1024 * 1024)
    assert not padding.pads_remainders([pads(800, 300), pads(1100)])


@pytest.mark.parametrize("l2_kb, strip", [(16, True), (1024, False)])
def test_the_column_strip_of_a_product_too_large_to_pad_whole_is_padded_alone(caches, l2_kb, strip):
    """90 x 60 x 60 on the 8 x 32 tile (and the others of the AVX-512 library) leaves 28
    columns and 2 rows to remainders. With 16 KB of L2 each way of padding the product whole
    is far, and the 28 columns run padded to one 8 x 32 tile (a temporary of 32 columns, none
    of A), as 1500^3's do with Zen 4's 1 MB; with 1 MB of L2 padding whole stays in cache and
    no remainder is padded. Compiled, either program agrees with the interpreter."""
    func = _s(90, 60, 60)
    caches(32 * 1024, l2_kb * 1024)
    out = tensorize(func, intrinsics.library("x86-avx512")).func
    padded = _padded(out)
    strips = [b for b in padded if b.shape[-1] == 32 and b.shape[0] < 90]
    assert bool(strips) == strip
    if strip:
        assert all(b.shape[-1] == 32 for b in padded)  # the strip's, no copy of the whole
    check = runtime.check(func, runtime.compile(out))
    assert check.ok, check.message


@settings(max_examples=10, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(dtype=st.sampled_from(["f32", "i8"]), m=st.integers(40, 100), n=st.integers(40, 100),
       k=st.integers(20, 70), host=st.booleans())
@example(dtype="f32", m=90, n=60, k=60, host=False)  # a strip of 12 columns, padded to 16
@example(dtype="f32", m=90, n=60, k=60, host=True)  # 28 columns, padded to 32
def test_products_whose_strips_are_padded_alone_check(caches, dtype, m, n, k, host):
    """With 8 KB of L2 every way of padding these products whole is priced far, so the
    strips their tiles leave are weighed for padding alone: whatever the extractor makes of
    them computes what the interpreter does."""
    caches(32 * 1024, 8 * 1024)
    func = _s(m, n, k) if dtype == "f32" else _q(m, n, k)
    result = tensorize(func, HOST if host else AVX2)
    check = runtime.check(func, result.compile())
    assert check.ok, (check.message, show(result.func))


# ---------------------------------------------------------------------------
# refused where it would not be sound


def test_a_load_that_does_not_use_the_padded_reduction_refuses_it():
    """``s[0]`` does not move with k: at a padded k the term would be 0 * s[0], NaN where
    s[0] is infinite. Padding along k is refused; the product keeps its meaning."""
    func = parse("@prim_func\ndef g(A: f32[32, 30], s: f32[1], y: f32[32]):\n"
                 "    for i, k in grid(32, 30):\n"
                 "        y[i] += A[i, k] * s[0]\n")
    nest = _nest(func)
    desc, b = _binding(nest, GEMV, ("A", "s"))
    assert dict(b.dims)["k"] == "k"
    assert padding.requests(nest, desc, b) is None
    args = inputs.random_args(func, seed=1)
    args["s"][0] = np.inf
    want = interp.run(func, **args)["y"]
    result = tensorize(func, _rows(GEMV))
    got = {k: v.copy() for k, v in args.items()}
    result.compile()(**got)
    assert np.array_equal(np.isnan(want), np.isnan(got["y"]))
    assert np.array_equal(np.isinf(want), np.isinf(got["y"]))


@pytest.fixture
def int_to_float_gemv():
    """A user's matrix-vector form whose terms are casts of integers to f32: a product of
    padded zeros is +0.0 whatever their pads, never the -0.0 a sum is neutral to."""
    desc = intrinsics.register(
        "user.pad.gemv.i8f32.4x8",
        "@prim_func\ndef g(c: f32[4], a: i8[4, 8], b: i8[8]):\n"
        "    for i, k in grid(4, 8):\n"
        "        c[i] += f32(a[i, k]) * f32(b[k])\n")
    yield desc
    intrinsics.unregister(desc.name)


def _int_gemv(m: int, k: int):
    return parse(f"@prim_func\ndef h(A: i8[{m}, {k}], x: i8[{k}], y: f32[{m}]):\n"
                 f"    for i, k in grid({m}, {k}):\n"
                 f"        y[i] += f32(A[i, k]) * f32(x[k])\n")


def test_no_pads_giving_minus_zero_refuse_the_reduction(int_to_float_gemv):
    nest = _nest(_int_gemv(32, 30))
    desc, b = _binding(nest, int_to_float_gemv.name, ("A", "x"))
    assert padding.requests(nest, desc, b) is None
    # along the output it is sound: padded rows are discarded
    nest = _nest(_int_gemv(30, 32))
    desc, b = _binding(nest, int_to_float_gemv.name, ("A", "x"))
    req = padding.requests(nest, desc, b)
    assert req is not None and req.padded == (("i", 32),) and req.out_axes == (("i", ""),)


def test_a_nest_that_reads_its_output_is_never_padded():
    """``C[i, j] += C[i, k] * B[k, j]`` reads what it writes: no accumulate nest, no stage."""
    func = parse("@prim_func\ndef r(B: f32[30, 30], C: f32[30, 30]):\n"
                 "    for i, j, k in grid(30, 30, 30):\n"
                 "        C[i, j] += C[i, k] * B[k, j]\n")
    assert not [p for p in nests.items(nests.normalize(func)) if isinstance(p, nests.AccNest)]
    result = tensorize(func, AVX2)
    assert not result.func.allocs
    check = runtime.check(func, result.compile())
    assert check.ok, check.message


# ---------------------------------------------------------------------------
# non-finite inputs and signed zeros


def _run_both(func, prog, args):
    want = interp.run(func, **{k: v.copy() for k, v in args.items()})
    got = {k: v.copy() for k, v in args.items()}
    runtime.compile(prog, threads=1)(**got)
    return want, got


def _same_pattern(want, got) -> bool:
    return (np.array_equal(np.isnan(want), np.isnan(got))
            and np.array_equal(np.where(np.isinf(want), want, 0), np.where(np.isinf(got), got, 0)))


@pytest.mark.parametrize("where", ["A last k", "B last k", "B last column", "A last row",
                                   "A first row"])
@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan])
def test_non_finite_next_to_the_padding_keeps_the_pattern(where, value):
    """Infinities beside the padded strips: padded terms are 0 * 0 along k, and the products
    of an infinity with a padded zero (0 * Inf = NaN) land in padded columns of C_pad, which
    are never added back."""
    func = _s(30, 30, 30)
    result = tensorize(func, _rows(MM))
    assert "C_pad" in {b.name for b in result.func.allocs}
    args = inputs.random_args(func, seed=2)
    name, at = {"A last k": ("A", (3, 29)), "B last k": ("B", (29, 4)),
                "B last column": ("B", (5, 29)), "A last row": ("A", (29, 7)),
                "A first row": ("A", (0, 0))}[where]
    args[name][at] = value
    want, got = _run_both(func, result.func, args)
    assert _same_pattern(want["C"], got["C"])
    assert not np.isfinite(got["C"]).all()


def test_special_values_everywhere_keep_the_pattern():
    for func, rows in ((_s(30, 30, 30), [MM]), (_s(13, 17, 11), [MM]), (_gemv(30, 30), [GEMV])):
        result = tensorize(func, _rows(*rows))
        for seed in range(3):
            args = inputs.random_args(func, seed=seed, special=True, density=0.3)
            want, got = _run_both(func, result.func, args)
            out = func.outputs[0].name
            assert _same_pattern(want[out], got[out])


def test_minus_zero_outputs_stay_minus_zero_through_the_padded_output():
    """C starts at -0.0 and row 0 of A is +0.0 against a negative B: every term of row 0 is
    -0.0, and so is its sum. C_pad starts at -0.0 (not +0.0, which would give +0.0 there)."""
    func = _s(30, 30, 30, init=False)
    result = tensorize(func, _rows(MM))
    assert "C_pad" in {b.name for b in result.func.allocs}
    fills = [s for s in ir.walk_stmts(result.func.body)
             if isinstance(s, ir.Store) and s.buffer.name == "C_pad"]
    assert fills and all(np.signbit(s.value.value) for s in fills)
    args = _minus_zero_args(func, "A", "B", "C")
    want, got = _run_both(func, result.func, args)
    assert np.signbit(want["C"][0]).all() and np.array_equal(np.signbit(want["C"]), np.signbit(got["C"]))


def _minus_zero_args(func, a: str, b: str, c: str):
    args = inputs.random_args(func, seed=4)
    args[a][0] = 0.0
    args[b][...] = -np.abs(args[b]) - 0.5
    args[c][...] = -0.0
    return args


def test_minus_zero_pads_along_the_reduction():
    """``y += A @ x`` padded along k: A's pad is -0.0 and x's +0.0, so each padded term is
    -0.0, which leaves every sum as it is, a -0.0 sum included; with +0.0 pads the padded
    term turns y[0] from -0.0 into +0.0 (the reason for the -0.0)."""
    func = _gemv(32, 30)
    staged, req = _staged(func, GEMV, ("A", "x"))
    assert req.out_axes is None and req.padded == (("k", 32),)
    assert {ld.buffer.name: neg for ld, _, neg in req.loads} == {"A": True, "x": False}
    fills = {s.buffer.name: s.value.value for s in ir.walk_stmts(staged.body)
             if isinstance(s, ir.Store) and isinstance(s.value, ir.Const)}
    assert np.signbit(fills["A_pad"]) and not np.signbit(fills["x_pad"])
    args = _minus_zero_args(func, "A", "x", "y")
    want = interp.run(func, **args)["y"]
    assert np.signbit(want[0])
    for prog in (staged, tensorize(staged, _rows(GEMV)).func):
        got = interp.run(prog, **args)["y"]
        assert np.array_equal(np.signbit(want), np.signbit(got)) and np.allclose(want, got)
    # the same stage with +0.0 pads everywhere
    plus = _assemble(func, _nest(func), replace(req, loads=tuple((ld, a, False) for ld, a, _ in req.loads)))
    got = interp.run(plus, **args)["y"]
    assert not np.signbit(got[0]) and np.allclose(want, got)


def test_minus_zero_pads_compiled():
    """The same, compiled: the padded nest as loops, and on the matrix-vector calls."""
    func = _gemv(32, 30)
    staged, _ = _staged(func, GEMV, ("A", "x"))
    for prog in (staged, tensorize(staged, _rows(GEMV)).func):
        args = _minus_zero_args(func, "A", "x", "y")
        want, got = _run_both(func, prog, args)
        assert np.signbit(want["y"][0]) and np.array_equal(np.signbit(want["y"]), np.signbit(got["y"]))
        check = runtime.check(func, runtime.compile(prog))
        assert check.ok, check.message


# ---------------------------------------------------------------------------
# the extractor's pruning of stages


@pytest.mark.parametrize("make", [lambda: _q(30, 30, 30), lambda: _s(30, 30, 30),
                                  lambda: _s(64, 63, 64), lambda: _q(50, 50, 50),
                                  lambda: parse_file(Path(__file__).parent.parent / "corpus"
                                                     / "conv2d.py")["c2d_nhwc"]])
def test_stages_skipped_by_the_bound_could_not_have_won(make, monkeypatch):
    """A stage is not planned when its copies and the cheapest conceivable calls cost more
    than the best plan found so far: planning every candidate finds no cheaper program, and
    the same one."""
    from rewrite import extract

    func = make()
    pruned = tensorize(func, AVX2)
    monkeypatch.setattr(extract, "PRUNE", False)
    full = tensorize(func, AVX2)
    assert pruned.cost == pytest.approx(full.cost, rel=1e-9)
    assert show(pruned.func) == show(full.func)
