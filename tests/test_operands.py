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
from rewrite.printer import show_expr, show_stmt
from rewrite.rules import finite
from rewrite.script import parse, show

AVX2 = intrinsics.library("x86-avx2")
HOST_HAS_AVX2 = {"avx2", "fma"} <= intrinsics.host_features()


def _nest(src: str) -> tuple[ir.PrimFunc, AccNest]:
    func = nests.normalize(parse(src))
    (nest,) = [p for p in nests.items(func) if isinstance(p, AccNest)]
    return func, nest


def _rewritten(func: ir.PrimFunc, items, temps) -> ir.PrimFunc:
    body = ir.seq(*(p.stmt() if isinstance(p, (AccNest, finite.Guarded)) else p for p in items))
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


def _inputs(func: ir.PrimFunc, seed: int, special: bool = True) -> dict:
    """Each parameter three times a normal draw, with 15% of its elements from ``_SPECIAL``
    where ``special``, in its dtype."""
    rng = np.random.default_rng(seed)
    args = {}
    for p in func.params:
        x = rng.standard_normal(p.shape).astype(np.float32) * 3
        if special:
            marked = rng.random(p.shape) < 0.15
            x[marked] = rng.choice(_SPECIAL, int(marked.sum()))
        with np.errstate(over="ignore"):  # 7e4 is f16's infinity
            args[p.name] = x.astype(ir.numpy_dtype(p.dtype))
    return args


def _assert_hoisting_exact(src: str, seed: int, choices) -> None:
    """``src``'s nest rewritten by each of ``choices(sites)`` (lists of sites) computes its
    output bit for bit as the nest does, in the interpreter, on inputs three times a normal
    draw with 15% of their elements from ``_SPECIAL``."""
    func, nest = _nest(src)
    sites = operands.hoistable(nest)
    args = _inputs(func, seed)
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


# ---------------------------------------------------------------------------
# regroup-factors: a scale between two operands

SCALED = '''
@prim_func
def scaled(A: f32[M, K], B: f32[K, N], s: f32[K], c: f32[N], r: f32[M], alpha: f32[1],
           C: f32[M, N]):
    for i, j in grid(M, N):
        for k in range(K):
            C[i, j] += BODY
'''


def _scaled(body: str, m: int = 8, k: int = 6, n: int = 5) -> str:
    return (SCALED.replace("BODY", body).replace("M", str(m)).replace("K", str(k))
            .replace("N", str(n)))


def _groups(nest: AccNest) -> list[tuple[list[str], list[str]]]:
    """``regroupings`` with each factor printed."""
    def named(g):
        return [show_expr(operands._at(nest.value, p)) for p in g]
    return [(named(a), named(b)) for a, b in operands.regroupings(nest)]


def test_a_scale_between_two_operands_is_regrouped_with_either():
    func, nest = _nest(_scaled("A[i, k] * s[k] * B[k, j]"))
    # A * B would use every loop: not a grouping
    assert _groups(nest) == [(["A[i, k]", "s[k]"], ["B[k, j]"]), (["A[i, k]"], ["s[k]", "B[k, j]"])]
    first, second = operands.regroupings(nest)
    # the grouping as written is replaced in place: exact, no guard
    items, temps, copied = operands.regroup(nest, first, Names.of(func))
    assert _lines(func, items, temps) == [
        "    for i, k in grid(8, 6):",
        "        ho_P_0[i, k] = A[i, k] * s[k]",
        "    for i, j, k in grid(8, 5, 6):",
        "        C[i, j] += ho_P_0[i, k] * B[k, j]"]
    # the other one reassociates the product: behind a scan of the pair copied (three
    # factors split two and one), the nest as written in the other branch
    items, temps, copied = operands.regroup(nest, second, Names.of(func))
    (guarded,) = items
    assert isinstance(guarded, finite.Guarded) and guarded.slow == (nest,)
    fill, new = guarded.fast
    assert show_stmt(fill).splitlines()[1].strip() == "ho_P_0[k, j] = s[k] * B[k, j]"
    assert show_expr(new.value) == "A[i, k] * ho_P_0[k, j]"
    assert _scanned(guarded) - {t.name for t in temps} == {"s", "B"}
    # with four factors every operand is scanned
    func, nest = _nest(_scaled("A[i, k] * s[k] * B[k, j] * c[j]"))
    (groups,) = [g for g in operands.regroupings(nest) if len(g[0]) == 1]
    (guarded,), temps, _ = operands.regroup(nest, groups, Names.of(func))
    assert _scanned(guarded) - {t.name for t in temps} == {"A", "s", "B", "c"}


def _scanned(guarded) -> set[str]:
    """The buffers a guard's scan reads."""
    return {ld.buffer.name for st in guarded.scan for x in ir.walk_stmts(st)
            if isinstance(x, (ir.Accumulate, ir.Store)) for ld in ir.loads_of(x.value)}


@pytest.mark.parametrize("body, fill, product", [
    # a runtime scalar inside the grouping as written is copied with it
    ("alpha[0] * A[i, k] * s[k] * B[k, j]", "ho_P_0[i, k] = alpha[0] * A[i, k] * s[k]",
     "ho_P_0[i, k] * B[k, j]"),
    # a negation of the grouping is copied with it
    ("-(A[i, k] * s[k]) * B[k, j]", "ho_P_0[i, k] = -(A[i, k] * s[k])", "ho_P_0[i, k] * B[k, j]"),
    # a scale per row and one per reduction step, both on the left operand
    ("A[i, k] * r[i] * s[k] * B[k, j]", "ho_P_0[i, k] = A[i, k] * r[i] * s[k]",
     "ho_P_0[i, k] * B[k, j]"),
    # on the right as written
    ("A[i, k] * (s[k] * B[k, j])", "ho_P_0[k, j] = s[k] * B[k, j]", "A[i, k] * ho_P_0[k, j]"),
], ids=["runtime-scalar", "negated", "row-and-step", "right"])
def test_a_grouping_as_written_is_copied_exactly(body, fill, product):
    func, nest = _nest(_scaled(body))
    exact = [g for g in operands.regroupings(nest)
             if not isinstance(operands.regroup(nest, g, Names.of(func))[0][0], finite.Guarded)]
    assert exact, _groups(nest)
    items, temps, _ = operands.regroup(nest, exact[0], Names.of(func))
    lines = _lines(func, items, temps)
    assert lines[1] == f"        {fill}" and lines[-1] == f"        C[i, j] += {product}"


def test_a_regrouped_product_keeps_its_sign_and_scalars_outside_the_groups():
    # (A * B) * c[j]: only B * c[j] uses fewer loops; the sign and alpha stay in the nest
    func, nest = _nest(_scaled("-(alpha[0] * A[i, k] * B[k, j]) * c[j]"))
    assert _groups(nest) == [(["A[i, k]"], ["B[k, j]", "c[j]"])]
    (groups,) = operands.regroupings(nest)
    (guarded,), _, _ = operands.regroup(nest, groups, Names.of(func))
    assert show_expr(guarded.fast[-1].value) == "-(alpha[0] * A[i, k] * ho_P_0[k, j])"


@pytest.mark.parametrize("body", [
    "A[i, k] * B[k, j]",  # two operands already
    "A[i, k] * B[k, j] * C2[i, j]",  # every grouping uses every loop
    "A[i, k] * s[k] * B[k, j] * c[j] * r[i]",  # five factors vary: not enumerated
], ids=["two", "every-loop", "five"])
def test_what_regroup_factors_leaves_alone(body):
    src = _scaled(body).replace("C: f32[8, 5]", "C2: f32[8, 5], C: f32[8, 5]")
    _, nest = _nest(src)
    assert operands.regroupings(nest) == []


def test_a_nest_with_a_loop_that_never_runs_is_not_regrouped():
    _, nest = _nest(_scaled("A[i, k] * s[k] * B[k, j]"))
    empty = replace(nest, dims=nest.dims[:-1] + (Dim(nest.dims[-1].name, 3, 3),))
    assert operands.regroupings(nest) and operands.regroupings(empty) == []


GEMV = '''
@prim_func
def gemv(A: f32[16, 8], w: f32[8], x: f32[8], z: f32[8], y: f32[16]):
    for i, k in grid(16, 8):
        y[i] += BODY
'''


def test_a_scaled_matrix_vector_product_is_regrouped_behind_a_scan_of_the_pair_alone():
    func, nest = _nest(GEMV.replace("BODY", "A[i, k] * w[k] * x[k]"))
    ((copied, items, temps),) = operands.offered(nest, Names.of(func))
    assert [show_expr(e) for e in copied] == ["w[k] * x[k]"]
    (guarded,) = items
    assert _scanned(guarded) - {t.name for t in temps} == {"w", "x"}  # not A: read once
    assert show_expr(guarded.fast[-1].value) == "A[i, k] * ho_P_0[k]"
    # A's infinity meets w * x, which underflows to 0: as written Inf, regrouped NaN; the
    # scan sees the product lost and runs the nest as written
    args = {"A": np.full((16, 8), np.inf, np.float32), "w": np.full(8, 1e-30, np.float32),
            "x": np.full(8, 1e-20, np.float32), "z": np.ones(8, np.float32),
            "y": np.zeros(16, np.float32)}
    run = lambda f: interp.run(f, **{k: v.copy() for k, v in args.items()})["y"]  # noqa: E731
    want = run(func)
    assert np.isinf(want).all()
    np.testing.assert_array_equal(run(_rewritten(func, items, temps)), want)
    fast = _rewritten(func, list(guarded.fast), temps)
    assert np.isnan(run(fast)).all()  # what the guard is for


@pytest.mark.parametrize("body", ["A[i, k] * w[k] * x[k] * z[k]", "2.0 * A[i, k] * w[k] * x[k]"],
                         ids=["four-factors", "constant"])
def test_a_regrouping_that_must_scan_an_operand_read_once_is_not_offered(body):
    # four factors, or a constant among them: every operand is scanned, and the nest reads
    # A once, so the scan would cost what the nest does
    func, nest = _nest(GEMV.replace("BODY", body))
    assert operands.regroupings(nest) and operands.offered(nest, Names.of(func)) == []
    assert not operands.offers_regrouping(nest)


def test_a_scale_grouped_as_written_is_copied_exactly_whatever_the_nest_reads():
    func, nest = _nest(GEMV.replace("BODY", "A[i, k] * (w[k] * (x[k] * z[k]))"))
    ((copied, items, _),) = operands.offered(nest, Names.of(func))
    assert show_expr(copied[0]) == "w[k] * (x[k] * z[k])" and isinstance(items[-1], AccNest)


_POOL = ["A[i, k]", "G[i, k]", "B[k, j]", "D[k, j]", "s[k]", "t[k]", "r[i]", "c[j]"]


def _tree(draw, factors: list[str]) -> str:
    """``factors`` multiplied in a random grouping, some products and factors negated."""
    if len(factors) == 1:
        out = factors[0]
    else:
        cut = draw(st.integers(1, len(factors) - 1))
        out = f"({_tree(draw, factors[:cut])} * {_tree(draw, factors[cut:])})"
    return f"-{out}" if draw(st.integers(0, 4)) == 0 else out


@st.composite
def scaled_products(draw):
    """A product of three or four factors varying with ``i, j, k`` (two matrices and scales
    per row, column or reduction step, as a user writes them), maybe a runtime scalar or a
    constant, in any grouping."""
    m, k, n = (draw(st.integers(1, 5)) for _ in range(3))
    factors = draw(st.lists(st.sampled_from(_POOL), min_size=3, max_size=4, unique=True))
    factors += draw(st.sampled_from([[], ["alpha[0]"], ["1.5"]]))
    factors = draw(st.permutations(factors))
    return f'''
@prim_func
def f(A: f32[{m}, {k}], G: f32[{m}, {k}], B: f32[{k}, {n}], D: f32[{k}, {n}], s: f32[{k}],
      t: f32[{k}], r: f32[{m}], c: f32[{n}], alpha: f32[1], C: f32[{m}, {n}]):
    for i, j, k in grid({m}, {n}, {k}):
        C[i, j] += {_tree(draw, list(factors))}
'''


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scaled_products(), st.integers(0, 2**32 - 1), st.booleans())
def test_every_regrouping_offered_computes_what_the_nest_computes(src, seed, special):
    """A grouping as written gives the nest's output bit for bit. A reassociated one, with a
    NaN or an infinity among the inputs (``special``), runs the nest as written behind a
    guard that scans every operand (bit for bit again), and behind the scan of a pair alone
    gives NaN and each infinity where the nest does; with finite inputs it differs from the
    nest by rounding only, within a few ulps of the sum of the terms' magnitudes."""
    func, nest = _nest(src)
    args = _inputs(func, seed, special)
    if special:  # at least one non-finite input the nest reads
        args["alpha"][0] = np.inf if "alpha" in src else args["alpha"][0]
        loaded = sorted({ld.buffer.name for ld in ir.loads_of(nest.value)})
        args[loaded[seed % len(loaded)]].flat[0] = np.nan
    run = lambda f, a: interp.run(f, **{k: v.copy() for k, v in a.items()})["C"]  # noqa: E731
    want = run(func, args)
    size = np.abs(run(func, {k: np.abs(v) for k, v in args.items()}))
    offers = operands.offered(nest, Names.of(func))
    for copied, items, temps in offers:
        got = run(_rewritten(func, items, temps), args)
        guarded = items[0] if isinstance(items[0], finite.Guarded) else None
        # a guard scanning every operand runs the nest as written on a NaN or an infinity
        whole = guarded is not None and \
            {ld.buffer.name for ld in ir.loads_of(nest.value)} <= _scanned(guarded)
        if guarded is None or (special and whole):
            np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32), err_msg=src)
            continue
        # regrouped: NaN and each infinity where the nest has them, the rest within rounding
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=src)
        np.testing.assert_array_equal(np.isposinf(got), np.isposinf(want), err_msg=src)
        np.testing.assert_array_equal(np.isneginf(got), np.isneginf(want), err_msg=src)
        finite_ = np.isfinite(want)
        np.testing.assert_allclose(got[finite_], want[finite_], rtol=0,
                                   atol=1e-6 * float(size[np.isfinite(size)].max(initial=0)) + 1e-30,
                                   err_msg=src)


@pytest.mark.parametrize("body, shape", [
    ("A[i, k] * s[k] * B[k, j]", (48, 40, 64)),  # U diag(S) V^T
    ("A[i, k] * r[i] * s[k] * B[k, j]", (37, 29, 61)),  # a norm's row and gain, odd sizes
    ("s[k] * (A[i, k] * B[k, j])", (32, 48, 40)),  # regrouped: behind the guard
], ids=["diagonal", "row-and-step", "reassociated"])
def test_a_scaled_product_reaches_the_f32_tiles_and_checks(body, shape):
    m, k, n = shape
    func = parse(_scaled(body, m, k, n))
    result = tensorize(func, AVX2)
    assert "x86.mm.f32.6x16x1" in {s.intrinsic for s in result.sites}, result.report()
    assert dict(result.choice.taken).get("hoist-operand") == 1
    assert tensorize(func, AVX2, rules_off=("hoist-operand",)).coverage < 0.01
    assert ("st_fin" in show(result.func)) == body.startswith("s[k] *")
    if HOST_HAS_AVX2:
        check = runtime.check(func, result.compile())
        assert check.ok, check.message


def test_why_a_scaled_product_stays_is_explained():
    text = tensorize(parse(_scaled("A[i, k] * s[k] * B[k, j]", 16, 16, 16)), AVX2,
                     rules_off=("hoist-operand",)).explain()
    assert "3 factors that vary with the loops" in text and "were not chosen" in text
    gemv = parse(GEMV.replace("BODY", "A[i, k] * w[k] * x[k] * z[k]"))
    text = tensorize(gemv, AVX2).explain()
    assert "reads each of their elements once" in text
