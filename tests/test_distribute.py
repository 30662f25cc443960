"""distribute (``rewrite/rules/distribute.py``): integer products of sums multiplied out
(quantized products with zero points), their terms that skip an output loop summed once, and
bytes of one signedness shifted into the other.
Golden normal forms, what is left alone, the rewrite against the interpreter bit for bit
(hypothesis, with values that overflow), and zero-point products on the int8 tiles, compiled
and checked."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import intrinsics
from rewrite import interp, ir, nests, runtime
from rewrite.names import Names
from rewrite.nests import AccNest
from rewrite.pipeline import tensorize
from rewrite.printer import show_expr
from rewrite.rules import distribute
from rewrite.script import parse, show

AVX2 = intrinsics.library("x86-avx2")
HOST = intrinsics.host_features()
HOST_HAS_AVX2 = {"avx2", "fma"} <= HOST


def _nest(src: str) -> tuple[ir.PrimFunc, AccNest]:
    func = nests.normalize(parse(src))
    (nest,) = [p for p in nests.items(func) if isinstance(p, AccNest)]
    return func, nest


def _rewritten(func: ir.PrimFunc, items, temps) -> ir.PrimFunc:
    body = ir.seq(*(p.stmt() if isinstance(p, AccNest) else p for p in items))
    return replace(func, body=body, allocs=func.allocs + tuple(temps))


def _lines(func, items, temps) -> list[str]:
    return [x for x in show(_rewritten(func, items, temps)).splitlines()
            if x.startswith("    ") and "alloc(" not in x]


def _rewrites(func, nest) -> list:
    return distribute.rewrites(nest, SimpleNamespace(names=Names.of(func)))


QMM = '''
@prim_func
def qmm(A: u8[M, K], B: i8[K, N], za: i32[1], zb: i32[1], C: i32[M, N]):
    for i, j, k in grid(M, N, K):
        C[i, j] += BODY
'''


def _qmm(body: str, m: int = 4, k: int = 6, n: int = 5) -> str:
    return QMM.replace("BODY", body).replace("M", str(m)).replace("K", str(k)).replace("N", str(n))


# ---------------------------------------------------------------------------
# golden forms


def test_a_product_with_two_zero_points_is_the_byte_product_and_three_corrections():
    func, nest = _nest(_qmm("(i32(A[i, k]) - za[0]) * (i32(B[k, j]) - zb[0])"))
    ((items, temps),) = _rewrites(func, nest)
    assert [(t.name, t.shape) for t in temps] == [("sd_H_0", (4,)), ("sd_H_1", (5,)), ("sd_H_2", (1,))]
    # the zero points come out of the sums (integers), the constant term is K times itself,
    # and the corrections are added in one pass
    assert _lines(func, items, temps) == [
        "    for i, j, k in grid(4, 5, 6):",
        "        C[i, j] += i32(A[i, k]) * i32(B[k, j])",
        "    for i in range(4):",
        "        sd_H_0[i] = 0",
        "    for i, k in grid(4, 6):",
        "        sd_H_0[i] += i32(A[i, k])",
        "    for i in range(4):",
        "        sd_H_0[i] = -(zb[0] * sd_H_0[i])",
        "    for j in range(5):",
        "        sd_H_1[j] = 0",
        "    for j, k in grid(5, 6):",
        "        sd_H_1[j] += i32(B[k, j])",
        "    for j in range(5):",
        "        sd_H_1[j] = -(za[0] * sd_H_1[j])",
        "    sd_H_2[0] = 6 * za[0] * zb[0]",
        "    for i, j in grid(4, 5):",
        "        C[i, j] += sd_H_0[i] + sd_H_1[j] + sd_H_2[0]"]


def test_a_zero_point_per_column_is_multiplied_in_the_pass_over_the_output():
    func, nest = _nest(_qmm("i32(A[i, k]) * (i32(B[k, j]) - zc[j])").replace("zb: i32[1]", "zc: i32[5]"))
    ((items, temps),) = _rewrites(func, nest)
    assert _lines(func, items, temps)[-4:] == [
        "    for i, k in grid(4, 6):",
        "        sd_H_0[i] += i32(A[i, k])",
        "    for i, j in grid(4, 5):",
        "        C[i, j] += -(zc[j] * sd_H_0[i])"]


def test_a_term_repeated_more_times_than_the_dtype_holds_is_multiplied_by_the_count_wrapped():
    src = _qmm("(i32(A[i, k]) + za[0]) * 3").replace("grid(4, 5, 6)", "grid(4, 5, 6, 65536, 65537)") \
        .replace("for i, j, k in", "for i, j, k, p, q in")
    func, nest = _nest(src)
    ((items, temps),) = _rewrites(func, nest)
    count = (6 * 65536 * 65537 + 2**31) % 2**32 - 2**31  # 6 * 65536 * 65537 wrapped to i32
    assert f"    sd_H_1[0] = {count} * za[0] * 3" in _lines(func, items, temps)


@pytest.mark.parametrize("value, terms", [
    ("(a - za) * (b - zb)", ["a * b", "-(a * zb)", "-(za * b)", "za * zb"]),
    ("-(a + 3) * b", ["-(a * b)", "-(3 * b)"]),
    ("(a - -b) * -za", ["-(a * za)", "-(b * za)"]),
    ("(a + b) * (a + b) * (za + zb)",
     [f"{x} * {y} * {z}" for x in "ab" for y in "ab" for z in ("za", "zb")]),
])
def test_a_product_is_multiplied_out_term_by_term(value, terms):
    names = {n: ir.Load(ir.Buffer(n, "i32", (1,)), (ir.Const(0, ir.INDEX),)) for n in ("a", "b", "za", "zb")}
    expr = eval(value.replace("a", "A").replace("b", "Bv").replace("zA", "za").replace("zBv", "zb"),
                {"A": _E(names["a"]), "Bv": _E(names["b"]), "za": _E(names["za"]), "zb": _E(names["zb"])}).e
    got = [show_expr(t).replace("[0]", "") for t in distribute.multiplied_out(expr, "i32")]
    assert [t.replace("(", "").replace(")", "") for t in got] == [t.replace("(", "").replace(")", "")
                                                                  for t in terms]


class _E:
    """Python operators building i32 expressions, for the parametrised values above."""

    def __init__(self, e):
        self.e = e

    @staticmethod
    def _of(x):
        return x.e if isinstance(x, _E) else ir.Const(x, "i32")

    def __add__(self, o):
        return _E(ir.Binary("+", self.e, self._of(o)))

    def __sub__(self, o):
        return _E(ir.Binary("-", self.e, self._of(o)))

    def __mul__(self, o):
        return _E(ir.Binary("*", self.e, self._of(o)))

    def __neg__(self):
        return _E(ir.Unary("neg", self.e))


def test_a_float_nest_that_skips_an_output_loop_is_left_as_written():
    # summed once it would be a reassociation the fuzzer's bounds of batch dims do not count
    func, nest = _nest('''
@prim_func
def gemv_twice(A: f32[4, 6], x: f32[6], C: f32[4, 5]):
    for i, j, k in grid(4, 5, 6):
        C[i, j] += A[i, k] * x[k]
''')
    assert _rewrites(func, nest) == []


@pytest.mark.parametrize("body, dtypes", [
    # floats: multiplied out, (a - za) * b would cancel where a is close to za
    ("(A[i, k] - za[0]) * B[k, j]", ("f32", "f32", "f32")),
    # the difference is taken in u8 before it widens: wrapping at 256 is no ring of i32
    ("i32(A[i, k] - A[i, 0]) * i32(B[k, j])", ("u8", "i8", "i32")),
    # a plain product, and a quotient of a sum
    ("i32(A[i, k]) * i32(B[k, j])", ("u8", "i8", "i32")),
    ("(i32(A[i, k]) - za[0]) // i32(B[k, j])", ("u8", "i8", "i32")),
])
def test_what_distribute_product_leaves_alone(body, dtypes):
    a, b, c = dtypes
    src = _qmm(body).replace("A: u8", f"A: {a}").replace("B: i8", f"B: {b}") \
        .replace("za: i32", f"za: {c}").replace("C: i32", f"C: {c}")
    func, nest = _nest(src)
    assert distribute.distributed(nest) is None
    assert _rewrites(func, nest) == []  # and every output loop is used: nothing to sum once


def test_terms_of_an_elementwise_product_are_not_summed_once():
    # no reduction loop: each term is its own nest over every loop, nothing to share
    func, nest = _nest(_qmm("(i32(A[i, k]) - za[0]) * i32(B[k, j])").replace("C: i32[4, 5]", "C: i32[4, 5, 6]")
                       .replace("C[i, j] +=", "C[i, j, k] +="))
    ((items, temps),) = _rewrites(func, nest)
    assert temps == [] and _lines(func, items, temps) == [
        "    for i, j, k in grid(4, 5, 6):",
        "        C[i, j, k] += i32(A[i, k]) * i32(B[k, j])",
        "    for i, j, k in grid(4, 5, 6):",
        "        C[i, j, k] += -(za[0] * i32(B[k, j]))"]


# ---------------------------------------------------------------------------
# the rewrite against the interpreter, bit for bit

_ATOMS = {
    "i32": ["i32(A[i, k])", "i32(B[k, j])", "za[0]", "zb[j]", "zr[i]", "zk[k]", "2147483647", "-3"],
    "i16": ["i16(A[i, k])", "i16(B[k, j])", "i16(za[0])", "i16(zk[k])", "32767", "7"],
}


@st.composite
def zero_point_products(draw):
    """A product of two or three factors, each an atom or a sum or difference of two (maybe
    negated; one at least a sum), over i32 or i16, with runtime zero points along every kind
    of loop, the bytes ``A`` and ``B`` of either signedness (shift-bytes where they agree)."""
    dt = draw(st.sampled_from(["i32", "i16"]))
    atoms = _ATOMS[dt]

    def factor(sum_=False):
        a = draw(st.sampled_from(atoms))
        if sum_ or draw(st.booleans()):
            a = f"({a} {draw(st.sampled_from(['+', '-']))} {draw(st.sampled_from(atoms))})"
        return f"-{a}" if draw(st.integers(0, 4)) == 0 else a

    factors = [factor(True)] + [factor() for _ in range(draw(st.integers(1, 2)))]
    body = " * ".join(draw(st.permutations(factors)))
    m, k, n = (draw(st.integers(1, 4)) for _ in range(3))
    a, b = draw(st.sampled_from([("u8", "i8"), ("i8", "i8"), ("u8", "u8")]))
    return f'''
@prim_func
def f(A: {a}[{m}, {k}], B: {b}[{k}, {n}], za: i32[1], zb: i32[{n}], zr: i32[{m}], zk: i32[{k}],
      C: {dt}[{m}, {n}]):
    for i, j, k in grid({m}, {n}, {k}):
        C[i, j] += {body}
'''


def _drawn(func: ir.PrimFunc, seed: int, draw) -> dict:
    """Every parameter drawn by ``draw(rng, its dtype's iinfo, dtype, shape)``."""
    rng = np.random.default_rng(seed)
    args = {}
    for p in func.params:
        dt = np.dtype(ir.numpy_dtype(p.dtype))
        args[p.name] = draw(rng, np.iinfo(dt), dt, p.shape)
    return args


def _inputs(func: ir.PrimFunc, seed: int) -> dict:
    """Every parameter drawn over its dtype's whole range (products and sums overflow)."""
    return _drawn(func, seed, lambda rng, info, dt, shape:
                  rng.integers(info.min, info.max, shape, dtype=dt, endpoint=True))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(zero_point_products(), st.integers(0, 2**32 - 1))
def test_the_rewrites_compute_what_the_nest_computes_bit_for_bit(src, seed):
    func, nest = _nest(src)
    args = _inputs(func, seed)
    want = interp.run(func, **{k: v.copy() for k, v in args.items()})["C"]
    assert distribute.distributed(nest) is not None, src
    for items, temps in _rewrites(func, nest):
        got = interp.run(_rewritten(func, items, temps), **{k: v.copy() for k, v in args.items()})["C"]
        np.testing.assert_array_equal(got, want, err_msg=src)


def _extremes(func: ir.PrimFunc, seed: int) -> dict:
    """Every parameter drawn from its dtype's least and greatest values and a few between."""
    return _drawn(func, seed, lambda rng, info, dt, shape: rng.choice(
        np.array([info.min, info.min + 1, -1 if info.min else 1, 0, info.max - 1, info.max],
                 dtype=dt), shape))


@pytest.mark.parametrize("a, b, copy, read", [
    ("i8", "i8", "ho_P_0[i, k] = u8(i32(A[i, k]) + 128)", "i32(ho_P_0[i, k]) * i32(B[k, j])"),
    ("u8", "u8", "ho_P_0[i, k] = i8(i32(A[i, k]) - 128)", "i32(ho_P_0[i, k]) * i32(B[k, j])"),
])
def test_bytes_of_one_signedness_are_shifted_into_the_other_and_the_shift_taken_back(a, b, copy, read):
    src = _qmm("i32(A[i, k]) * i32(B[k, j])").replace("A: u8", f"A: {a}").replace("B: i8", f"B: {b}")
    func, nest = _nest(src)
    assert [x for _, x in distribute.byte_factors(nest)] == [ir.Cast("i32", ld) for ld in ir.loads_of(nest.value)]
    path, factor = distribute.byte_factors(nest)[0]
    items, temps = distribute.shifted(nest, path, factor, Names.of(func))
    lines = _lines(func, items, temps)
    assert lines[1] == "        " + copy
    assert "        C[i, j] += " + read in lines
    assert [t.dtype for t in temps][0] == ("u8" if a == "i8" else "i8")
    # on the dtypes' extremes (x + 128 and x - 128 at the ends of the 8-bit ranges), bit for bit
    for seed in range(3):
        args = _extremes(func, seed)
        want = interp.run(func, **{k: v.copy() for k, v in args.items()})["C"]
        got = interp.run(_rewritten(func, items, temps), **{k: v.copy() for k, v in args.items()})["C"]
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("src", [
    _qmm("i32(A[i, k]) * i32(B[k, j])"),  # u8 x i8: what the rows take as written
    _qmm("i32(A[i, k]) * za[0]").replace("A: u8", "A: i8"),  # one byte factor
])
def test_what_shift_bytes_leaves_alone(src):
    assert distribute.byte_factors(_nest(src)[1]) == []


def test_an_i16_product_of_bytes_is_shifted_too():
    src = _qmm("i16(A[i, k]) * i16(B[k, j])").replace("A: u8", "A: i8").replace("C: i32", "C: i16")
    func, nest = _nest(src)
    assert len(distribute.byte_factors(nest)) == 2  # -128..255 fits in 16 bits
    src8 = src.replace("C: i16", "C: i8").replace("i16(", "i8(")
    assert distribute.byte_factors(_nest(src8)[1]) == []  # the shift would wrap in 8 bits


# ---------------------------------------------------------------------------
# zero-point products on the int8 tiles

ZERO_POINTS = '''
@prim_func
def qmm_zp(A: u8[48, 64], B: i8[64, 40], za: u8[1], zb: i8[1], C: i32[48, 40]):
    for i, j in grid(48, 40):
        C[i, j] = 0
        for k in range(64):
            C[i, j] += BODY
'''
TWO_ZERO_POINTS = "(i32(A[i, k]) - i32(za[0])) * (i32(B[k, j]) - i32(zb[0]))"


def _on_the_int8_tiles(func):
    """``func`` tensorized on the AVX2 library: on its int8 tiles, covered but for the
    corrections (row and column sums and a pass over C, 8% of the work at this size), on
    none with the family off, and equal to the interpreter where the host runs AVX2."""
    result = tensorize(func, AVX2)
    assert {s.intrinsic for s in result.sites} & {"x86.mm.u8i8i32.4x16x2", "x86.mm.u8i8i32.2x16x4"}, \
        result.report()
    assert result.coverage >= 0.9, result.report()
    assert tensorize(func, AVX2, rules_off=("distribute",)).coverage < 0.01
    if HOST_HAS_AVX2:
        check = runtime.check(func, result.compile())
        assert check.ok, check.message
    return result


@pytest.mark.parametrize("body", [
    TWO_ZERO_POINTS,
    "(i32(A[i, k]) - 128) * i32(B[k, j])",
    "-(i32(B[k, j]) - i32(zb[0])) * (i32(A[i, k]) + 3)",
], ids=["two-zero-points", "constant", "negated-commuted"])
def test_a_product_with_zero_points_runs_on_the_int8_tiles_and_checks(body):
    result = _on_the_int8_tiles(parse(ZERO_POINTS.replace("BODY", body)))
    assert dict(result.choice.taken).get("distribute") == 1


@pytest.mark.parametrize("a, b", [("i8", "i8"), ("u8", "u8")])
def test_bytes_of_one_signedness_run_on_the_int8_tiles_and_check(a, b):
    _on_the_int8_tiles(parse(ZERO_POINTS.replace("BODY", "i32(A[i, k]) * i32(B[k, j])")
                             .replace("A: u8[48", f"A: {a}[48").replace("B: i8[64", f"B: {b}[64")))


@pytest.mark.skipif("avx512vnni" not in HOST,
                    reason="the host has no AVX-512 VNNI")
def test_on_a_vnni_host_the_zero_point_product_runs_on_vpdpbusd_and_checks():
    func = parse(ZERO_POINTS.replace("BODY", TWO_ZERO_POINTS))
    result = tensorize(func)
    assert any("avx512vnni" in s.intrinsic for s in result.sites), result.report()
    check = runtime.check(func, result.compile())
    assert check.ok, check.message
