"""hoist-operand (``rewrite/rules/operands.py``): a computed operand of a product (a cast, an
``exp``, a sum, a negated load) copied out of the nest over the loops it uses. Golden normal
forms, what is left alone, the rewrite against the interpreter bit for bit (NaN and Inf
included, hypothesis), and mixed-precision products reaching the f32 tiles, compiled and
checked."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import intrinsics
from rewrite import interp, ir, nests, runtime
from rewrite.names import Names
from rewrite.nests import AccNest, Dim
from rewrite.pipeline import tensorize
from rewrite.rules import operands
from rewrite.script import parse, show

AVX2 = intrinsics.library("x86-avx2")
HOST_HAS_AVX2 = {"avx2", "fma"} <= intrinsics.host_features()


def _nest(src: str) -> tuple[ir.PrimFunc, AccNest]:
    func = nests.normalize(parse(src))
    (nest,) = [p for p in nests.items(func) if isinstance(p, AccNest)]
    return func, nest


def _rewritten(func: ir.PrimFunc, items, temps) -> ir.PrimFunc:
    body = ir.seq(*(p.stmt() if isinstance(p, AccNest) else p for p in items))
    return replace(func, body=body, allocs=func.allocs + tuple(temps))


def _lines(func, items, temps) -> list[str]:
    """The rewritten function's body, printed (allocations and signature left out)."""
    return [x for x in show(_rewritten(func, items, temps)).splitlines()
            if x.startswith("    ") and "alloc(" not in x]


MIXED = '''
@prim_func
def mixed(A: f32[M, K], B: f16[K, N], C: f32[M, N]):
    for i, j in grid(M, N):
        for k in range(K):
            C[i, j] += BODY
'''


def _mixed(body: str, m: int = 8, k: int = 6, n: int = 5, a: str = "f32", b: str = "f16") -> str:
    return (MIXED.replace("BODY", body).replace("M", str(m)).replace("K", str(k))
            .replace("N", str(n)).replace("A: f32", f"A: {a}").replace("B: f16", f"B: {b}"))


def test_a_converted_operand_is_copied_out_over_its_own_loops():
    func, nest = _nest(_mixed("A[i, k] * f32(B[k, j])"))
    ((path, factor),) = operands.hoistable(nest)
    items, temps = operands.hoist(nest, [(path, factor)], Names.of(func))
    assert [(t.name, t.dtype, t.shape) for t in temps] == [("ho_P_0", "f32", (6, 5))]
    assert _lines(func, items, temps) == [
        "    for k, j in grid(6, 5):",
        "        ho_P_0[k, j] = f32(B[k, j])",
        "    for i, j, k in grid(8, 5, 6):",
        "        C[i, j] += A[i, k] * ho_P_0[k, j]"]


@pytest.mark.parametrize("body, fill, product", [
    # a negated factor is one factor, its sign copied with it
    ("A[i, k] * -f32(B[k, j])", "ho_P_0[k, j] = -f32(B[k, j])", "A[i, k] * ho_P_0[k, j]"),
    # a negated product keeps its sign where it is written
    ("-(A[i, k] * f32(B[k, j]))", "ho_P_0[k, j] = f32(B[k, j])", "-(A[i, k] * ho_P_0[k, j])"),
    # the product's grouping is kept: the factor is replaced in place
    ("2.0 * (exp(A[i, k]) * f32(B[k, j]))", "ho_P_0[i, k] = exp(A[i, k])",
     "2.0 * (ho_P_0[i, k] * f32(B[k, j]))"),
    ("A[i, k] * (f32(B[k, j]) + f32(B[k, j]))", "ho_P_0[k, j] = f32(B[k, j]) + f32(B[k, j])",
     "A[i, k] * ho_P_0[k, j]"),
], ids=["negated-factor", "negated-product", "grouping", "sum"])
def test_the_first_computed_factor_is_replaced_in_place(body, fill, product):
    func, nest = _nest(_mixed(body))
    site = operands.hoistable(nest)[0]
    items, temps = operands.hoist(nest, [site], Names.of(func))
    lines = _lines(func, items, temps)
    assert lines[1] == f"        {fill}"
    assert lines[-1] == f"        C[i, j] += {product}"


def test_weights_dequantised_per_column_are_copied_as_one_product():
    # f32(W) * s[j] uses k, j: the product as written is one operand, copied whole (its
    # grouping kept), and the nest is a plain product; its factor f32(W) alone is offered too
    func, nest = _nest('''
@prim_func
def dq(A: f32[8, 6], W: i8[6, 5], s: f32[5], C: f32[8, 5]):
    for i, j, k in grid(8, 5, 6):
        C[i, j] += A[i, k] * (f32(W[k, j]) * s[j])
''')
    sites = operands.hoistable(nest)
    (_, whole), (_, part) = sites
    assert isinstance(whole, ir.Binary) and part == whole.a
    items, temps = operands.hoist(nest, sites[:1], Names.of(func))
    assert _lines(func, items, temps) == [
        "    for k, j in grid(6, 5):",
        "        ho_P_0[k, j] = f32(W[k, j]) * s[j]",
        "    for i, j, k in grid(8, 5, 6):",
        "        C[i, j] += A[i, k] * ho_P_0[k, j]"]


def test_a_product_of_loads_alone_is_left_to_scalar_factor():
    # alpha[0] * A[i, k] is no computed factor: scale-operand's copy, behind its reasoning
    _, nest = _nest('''
@prim_func
def sc(A: f32[8, 6], B: f32[6, 5], alpha: f32[1], C: f32[8, 5]):
    for i, j, k in grid(8, 5, 6):
        C[i, j] += (alpha[0] * A[i, k]) * B[k, j]
''')
    assert operands.hoistable(nest) == []


def test_the_copy_of_a_transposed_read_loops_in_the_reads_order():
    func, nest = _nest('''
@prim_func
def nt(A: f32[8, 6], B: f16[5, 6], C: f32[8, 5]):
    for i, j, k in grid(8, 5, 6):
        C[i, j] += A[i, k] * f32(B[j, k])
''')
    items, temps = operands.hoist(nest, operands.hoistable(nest), Names.of(func))
    assert temps[0].shape == (5, 6)
    assert _lines(func, items, temps)[:2] == ["    for j, k in grid(5, 6):",
                                              "        ho_P_0[j, k] = f32(B[j, k])"]


def test_the_copy_keeps_the_sources_order_of_strides_within_an_index():
    # B[k_i + 4 * k_o, j]: k_o steps four rows, k_i one; a copy over (k_i, k_o, j) would
    # read B's rows out of order and store k_o's neighbours far apart
    func, nest = _nest('''
@prim_func
def split(A: f32[8, 24], B: f16[24, 5], C: f32[8, 5]):
    for i, j, k_o, k_i in grid(8, 5, 6, 4):
        C[i, j] += A[i, k_i + 4 * k_o] * f32(B[k_i + 4 * k_o, j])
''')
    items, temps = operands.hoist(nest, operands.hoistable(nest), Names.of(func))
    assert temps[0].shape == (6, 4, 5)
    assert _lines(func, items, temps)[:2] == [
        "    for k_o, k_i, j in grid(6, 4, 5):",
        "        ho_P_0[k_o, k_i, j] = f32(B[k_i + 4 * k_o, j])"]


@pytest.mark.parametrize("src", [
    _mixed("A[i, k] * f32(B[k, j])".replace("f32(B[k, j])", "B[k, j]"), b="f32"),  # plain loads
    _mixed("A[i, k] * f32(B[0, 0])"),  # no loop: a runtime scalar (scalar-factor's)
    _mixed("f32(B[k, j])"),  # no product
    '''
@prim_func
def every_loop(A: f32[8, 6], B: f16[8, 6], C: f32[8]):
    for i, k in grid(8, 6):
        C[i] += A[i, k] * f32(B[i, k])
''',  # the factor uses every loop: nothing to save
], ids=["loads", "constant-index", "no-product", "every-loop"])
def test_what_hoist_operand_leaves_alone(src):
    _, nest = _nest(src)
    assert operands.hoistable(nest) == []


def test_a_nest_with_a_loop_that_never_runs_is_left_alone():
    # the copy would evaluate the factor where the nest never did
    _, nest = _nest(_mixed("A[i, k] * f32(B[k, j])"))
    empty = replace(nest, dims=nest.dims[:-1] + (Dim(nest.dims[-1].name, 3, 3),))
    assert operands.hoistable(nest) and operands.hoistable(empty) == []


# ---------------------------------------------------------------------------
# the rewrite against the interpreter, bit for bit

def _factor(draw, depth: int, top: bool = True) -> str:
    """A computed expression of ``A[i, k]``, ``f32(B[k, j])``, ``f32(H[k, j])``: at the top
    no plain load."""
    leaf = draw(st.sampled_from(["A[i, k]", "f32(B[k, j])", "f32(H[k, j])"]))
    if depth == 0:
        return leaf
    op = draw(st.sampled_from(["cast", "exp", "neg", "sum", "max", "abs"] + ([] if top else ["leaf"])))
    inner = _factor(draw, depth - 1, False)
    return {"cast": f"f32(f16({inner}))", "exp": f"exp({inner})", "neg": f"-{inner}",
            "sum": f"({inner} + {_factor(draw, depth - 1, False)})", "max": f"max({inner}, 0.5)",
            "abs": f"abs({inner})", "leaf": leaf}[op]


@st.composite
def computed_products(draw):
    """A product of a plain operand and a computed one (over ``i, k`` or ``k, j``, never
    mixing them: a factor must use fewer loops than the nest), each maybe negated."""
    m, k, n = (draw(st.integers(1, 5)) for _ in range(3))
    side = draw(st.sampled_from(["A", "B"]))
    computed = _factor(draw, draw(st.integers(1, 3)))
    if side == "A":  # the computed factor over i, k
        computed = computed.replace("f32(B[k, j])", "A[i, k]").replace("f32(H[k, j])", "G[i, k]")
        plain = "f32(B[k, j])" if draw(st.booleans()) else "D[k, j]"
    else:
        computed = computed.replace("A[i, k]", "f32(B[k, j])")
        plain = "A[i, k]"
    if draw(st.booleans()):  # a product of factors over the same loops, as one operand
        other = "D[k, j]" if side == "B" else "G[i, k]"
        computed = f"({computed} * {other})" if draw(st.booleans()) else f"({other} * {computed})"
    a, b = (computed, plain) if draw(st.booleans()) else (plain, computed)
    body = f"{a} * {b}"
    if draw(st.booleans()):
        body = f"-({body})"
    src = f'''
@prim_func
def f(A: f32[{m}, {k}], G: f32[{m}, {k}], B: f16[{k}, {n}], H: f16[{k}, {n}], D: f32[{k}, {n}],
      C: f32[{m}, {n}]):
    for i, j, k in grid({m}, {n}, {k}):
        C[i, j] += {body}
'''
    return src


# beside NaN, +-Inf, +-0 and a subnormal, f16's largest value and one past it (f16's Inf)
_SPECIAL = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-40, 65504.0, 7e4], np.float32)


def _assert_hoisting_exact(src: str, seed: int, choices) -> None:
    """``src``'s nest rewritten by each of ``choices(sites)`` (lists of sites) computes its
    output bit for bit as the nest does, in the interpreter, on inputs three times a normal
    draw with 15% of their elements from ``_SPECIAL``."""
    func, nest = _nest(src)
    sites = operands.hoistable(nest)
    rng = np.random.default_rng(seed)
    args = {}
    for p in func.params:
        x = rng.standard_normal(p.shape).astype(np.float32) * 3
        special = rng.random(p.shape) < 0.15
        x[special] = rng.choice(_SPECIAL, int(special.sum()))
        with np.errstate(over="ignore"):  # 7e4 is f16's infinity
            args[p.name] = x.astype(ir.numpy_dtype(p.dtype))
    want = interp.run(func, **{k: v.copy() for k, v in args.items()})["C"]
    for chosen in choices(sites):
        items, temps = operands.hoist(nest, chosen, Names.of(func))
        got = interp.run(_rewritten(func, items, temps), **{k: v.copy() for k, v in args.items()})["C"]
        np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32), err_msg=src)


def _each_and_all_apart(sites) -> list:
    """Each site alone, and every site not inside another one together."""
    apart = [x for x in sites if not any(y != x and x[0][:len(y[0])] == y[0] for y in sites)]
    return [[s] for s in sites] + [apart]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(computed_products(), st.integers(0, 2**32 - 1))
def test_hoisting_computes_what_the_nest_computes_bit_for_bit(src, seed):
    assert operands.hoistable(_nest(src)[1]), src  # every drawn product has a site
    _assert_hoisting_exact(src, seed, _each_and_all_apart)


# ---------------------------------------------------------------------------
# mixed precision on the tiles

@pytest.mark.parametrize("body, a, b, shape", [
    ("A[i, k] * f32(B[k, j])", "f32", "f16", (48, 40, 64)),
    ("f32(A[i, k]) * B[k, j]", "f16", "f32", (37, 29, 61)),
    ("A[i, k] * -f32(B[k, j])", "f32", "f16", (32, 32, 32)),
    ("exp(A[i, k]) * B[k, j]", "f32", "f32", (40, 24, 32)),
], ids=["f16-weights", "f16-activations-odd", "negated", "exp"])
def test_a_computed_operand_reaches_the_f32_tiles_and_checks(body, a, b, shape):
    m, k, n = shape
    func = parse(_mixed(body, m, k, n, a, b))
    result = tensorize(func, AVX2)
    assert "x86.mm.f32.6x16x1" in {s.intrinsic for s in result.sites}, result.report()
    assert result.coverage >= 0.9, result.report()
    assert dict(result.choice.taken).get("hoist-operand") == 1
    # without the rule no f32 row takes the product
    assert tensorize(func, AVX2, rules_off=("hoist-operand",)).coverage < 0.01
    if HOST_HAS_AVX2:
        check = runtime.check(func, result.compile())
        assert check.ok, check.message


@pytest.mark.skipif(not HOST_HAS_AVX2, reason="the host library's f32 tiles are the x86 AVX2 and "
                                               "AVX-512 ones")
def test_on_the_host_library_the_f16_weights_product_runs_on_intrinsics_and_checks():
    func = parse(_mixed("A[i, k] * f32(B[k, j])", 64, 96, 80))
    result = tensorize(func)
    assert result.coverage >= 0.9, result.report()
    check = runtime.check(func, result.compile())
    assert check.ok, check.message


def test_an_operand_an_intrinsic_converts_itself_keeps_its_form():
    # u8 x i8 into i32: the int8 rows read the bytes and widen them; copies of i32 would
    # quadruple the operands' bytes and lose the dot row, and the cost model says so
    func = parse('''
@prim_func
def q(A: u8[32, 64], B: i8[64, 32], C: i32[32, 32]):
    for i, j, k in grid(32, 32, 64):
        C[i, j] += i32(A[i, k]) * i32(B[k, j])
''')
    result = tensorize(func, AVX2)
    assert "ho_P" not in show(result.func)
    assert result.sites and all("u8i8i32" in s.intrinsic for s in result.sites)
    assert "hoist-operand" in dict(result.choice.offered)


def test_weights_dequantised_per_column_run_on_the_f32_tiles_without_a_guard():
    # the scale taken out instead (scalar-factor) needs a finite guard and a pass over C;
    # copying the dequantised weights whole is exact and cheaper
    func = parse('''
@prim_func
def dq(A: f32[48, 64], W: i8[64, 40], s: f32[40], C: f32[48, 40]):
    for i, j in grid(48, 40):
        C[i, j] = 0.0
        for k in range(64):
            C[i, j] += A[i, k] * (f32(W[k, j]) * s[j])
''')
    result = tensorize(func, AVX2)
    text = show(result.func)
    assert "f32(W[" in text and "* s[" in text and "fin" not in text, text
    assert result.coverage >= 0.9 and dict(result.choice.taken) == {"hoist-operand": 1}
    if HOST_HAS_AVX2:
        check = runtime.check(func, result.compile())
        assert check.ok, check.message


# ---------------------------------------------------------------------------
# a sliding window: the buffer's elements converted once

CONV = '''
@prim_func
def conv(X: f16[H2, 6], W: f32[3, 6, 5], C: f32[H, 5]):
    for h, c, r, ci in grid(H, 5, 3, 6):
        C[h, c] += BODY * W[r, ci, c]
'''


def _conv(body: str, h: int = 8) -> str:
    return CONV.replace("H2", str(h + 2)).replace("H", str(h)).replace("BODY", body)


def test_a_sliding_window_is_converted_over_the_buffer_not_the_loops():
    # f32(X[h + r, ci]) over the loops h, r, ci would hold each element up to three times
    # (an im2col, 8 * 3 * 6); over X's own elements it holds each once (10 * 6), read at the
    # nest's indices
    func, nest = _nest(_conv("f32(X[h + r, ci])"))
    items, temps = operands.hoist(nest, operands.hoistable(nest), Names.of(func))
    assert temps[0].shape == (10, 6)
    assert _lines(func, items, temps) == [
        "    for ho_x0, ho_x1 in grid(10, 6):",
        "        ho_P_0[ho_x0, ho_x1] = f32(X[ho_x0, ho_x1])",
        "    for h, c, r, ci in grid(8, 5, 3, 6):",
        "        C[h, c] += ho_P_0[h + r, ci] * W[r, ci, c]"]


@pytest.mark.parametrize("body", [
    "f32(X[h + r, ci]) * f32(X[h + r, ci])",  # two loads: a function of more than one element
    "f32(X[h + r, ci] // X[h + r, ci])",  # an integer division, where X is an integer
    "f32(X[4 * h + r, ci])",  # strided past the window: the box is no smaller than the loops
], ids=["two-loads", "division", "strided"])
def test_what_is_copied_over_the_loops_instead(body):
    src = _conv(body)
    if "//" in body:
        src = src.replace("X: f16", "X: i16")
    if "4 * h" in body:
        src = src.replace("X: f16[10, 6]", "X: f16[31, 6]")
    func, nest = _nest(src)
    sites = operands.hoistable(nest)
    items, temps = operands.hoist(nest, sites[:1], Names.of(func))
    assert not any(x.startswith("ho_x") for x in (getattr(s, "var", "") for s in ir.walk_stmts(items[0])))


@st.composite
def sliding_windows(draw):
    h, taps, ci, c = draw(st.integers(1, 6)), draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 3))
    g = draw(st.sampled_from(["f32(X[h + r, ci])", "exp(f32(X[h + r, ci]))", "-f32(X[h + r, ci])",
                              "abs(f32(X[h + r, ci])) * 2.0", "sqrt(abs(f32(X[h + r, ci])))",
                              "max(f32(X[h + r, ci]), 0.5) - 1.0", "f32(X[h + r, ci]) / 3.0"]))
    pre = draw(st.booleans())
    off = draw(st.integers(0, 2))  # the window read from an offset: the box starts past 0
    if off:
        g = g.replace("h + r", f"h + r + {off}")
    body = f"{g} * W[r, ci, c]" if pre else f"W[r, ci, c] * {g}"
    return f'''
@prim_func
def conv(X: f16[{h + taps - 1 + off}, {ci}], W: f32[{taps}, {ci}, {c}], C: f32[{h}, {c}]):
    for h, c, r, ci in grid({h}, {c}, {taps}, {ci}):
        C[h, c] += {body}
'''


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sliding_windows(), st.integers(0, 2**32 - 1))
def test_a_converted_window_computes_what_the_nest_computes_bit_for_bit(src, seed):
    _assert_hoisting_exact(src, seed, lambda sites: [[s] for s in sites])


def test_a_converted_operand_left_in_the_product_is_named_in_the_explanation():
    elementwise = parse('''
@prim_func
def ew(A: f16[64], B: f32[64], C: f32[64]):
    for i in range(64):
        C[i] += f32(A[i]) * B[i]
''')
    text = tensorize(elementwise, AVX2).explain()
    assert "f32(A[i]) is computed as it is read" in text and "fewer loops" in text
    product = parse(_mixed("A[i, k] * f32(B[k, j])", 16, 16, 16))
    text = tensorize(product, AVX2, rules_off=("hoist-operand",)).explain()
    assert "f32(B[k, j]) is computed as it is read" in text and "was not chosen" in text
