"""Masked edges (``rewrite/rules/edges.py``, ``masked-edge``): the partial forms of an intrinsic
(``descriptor.partial``), their emitters (masked at the edge, nothing touched past it), and the
programs that run a tiling's remainders on them, checked against the interpreter on special
values and at a buffer's very end.
"""

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import intrinsics
from rewrite import codegen, descriptor, emitter, inputs, interp, ir, runtime
from rewrite.pipeline import tensorize
from rewrite.script import ScriptError, parse, show
from rewrite.target import host_features

from .test_intrinsics import _assembly_loop, needs_isa
from .test_padding import _calls, _minus_zero_args, _run_both, _s, _same_pattern

MM = "x86.mm.f32.6x16x1"
WIDE = "x86.avx512.mm.f32.8x32x1"
TILES = [MM, "x86.mm.f32.4x16x1", "x86.mm.f32.2x16x1", WIDE, "x86.mm.f64.6x8x1",
         "x86.avx512.mm.f64.8x16x1", "x86.mm.f16f32.6x16x1", "x86.avx512.mm.f16f32.8x32x1"]
AVX2 = intrinsics.library("x86-avx2")
AVX512 = intrinsics.library("x86-avx512")
RUNS_AVX512 = {"avx512f", "fma"} <= host_features()


# ---------------------------------------------------------------------------
# the forms


def test_a_partial_form_is_its_parents_semantics_on_a_smaller_box():
    wide = intrinsics.get(WIDE)
    form = descriptor.partial(wide, (2, 26, 1))
    assert form.name == WIDE + "[2x26x1]"
    assert {o.name: o.shape for o in form.operands} == {"c": (2, 26), "a": (2, 1), "b": (1, 26)}
    assert [(d.name, d.extent, d.kind) for d in form.dims] == [
        ("i", 2, "spatial"), ("j", 26, "spatial"), ("k", 1, "reduction")]
    assert descriptor.parent_of(form) is wide and descriptor.parent_name(form.name) == WIDE
    # one form per cut, looked up by its name as the parser does
    assert descriptor.lookup(form.name) is form and descriptor.partial(wide, (2, 26, 1)) is form
    # priced at no better a rate than its parent, at most its parent's price
    assert form.cost / form.iterations >= wide.cost / wide.iterations
    assert form.cost <= wide.cost


@pytest.mark.parametrize("extents", [(8, 32, 1), (9, 32, 1), (8, 33, 1), (0, 32, 1), (8, 32),
                                     (8, 32, 2)])
def test_no_partial_form_past_the_tile_nor_of_its_reduction(extents):
    assert descriptor.partial(intrinsics.get(WIDE), extents) is None


def test_an_intrinsic_whose_emitter_has_no_forms_has_none():
    assert descriptor.partial(intrinsics.get("x86.gemv.f32.4x8"), (2, 8)) is None
    with pytest.raises(ScriptError, match=r"has no partial form 2x8"):
        parse("""
@prim_func
def f(A: f32[4, 8], x: f32[8], y: f32[4]):
    call("x86.gemv.f32.4x8[2x8]", c=window(y[0], (1,)), a=window(A[0, 0], (1, 0), (0, 1)), b=window(x[0], (1,)))
""")


def test_a_program_with_partial_calls_prints_and_parses_back():
    func = tensorize(_s(90, 90, 90), AVX512).func
    names = {c.intrinsic.name for c in _calls(func)}
    assert {WIDE + "[2x32x1]", WIDE + "[8x26x1]", WIDE + "[2x26x1]"} <= names
    assert parse(show(func)) == func


# ---------------------------------------------------------------------------
# the emitters: each form against the interpreter, at a buffer's last element


def _edge_program(name: str, rows: int, cols: int) -> ir.PrimFunc:
    """Seven steps of ``name`` cut to ``rows`` x ``cols``, its windows ending at the last
    row and column of C and B (and A's last row)."""
    desc = intrinsics.get(name)
    c, a = desc.operand("c"), desc.operand("a")
    m, n = rows + 3, cols + 5
    return parse(f"""
@prim_func
def edge(A: {a.dtype}[{m}, 7], B: {a.dtype}[7, {n}], C: {c.dtype}[{m}, {n}]):
    for k in range(7):
        call("{name}[{rows}x{cols}x1]", c=window(C[{m - rows}, {n - cols}], (1, 0), (0, 1)), a=window(A[{m - rows}, k], (1, 0), (0, 1)), b=window(B[k, {n - cols}], (1, 0), (0, 1)))
""")


@settings(max_examples=12, deadline=None)
@given(data=st.data())
@pytest.mark.parametrize("name", TILES)
def test_each_partial_form_computes_its_semantics_and_nothing_else(name, data):
    desc = intrinsics.get(name)
    rows_max, cols_max = desc.operand("c").shape
    rows = data.draw(st.integers(1, rows_max), "rows")
    cols = data.draw(st.integers(1, cols_max), "cols")
    if (rows, cols) == (rows_max, cols_max):
        return
    func = _edge_program(name, rows, cols)
    args = inputs.random_args(func, seed=data.draw(st.integers(0, 9), "seed"), special=True)
    want = interp.run(func, **args)["C"]
    got = {k: v.copy() for k, v in args.items()}
    runtime.compile(func)(**got)
    # emulated where the host lacks the ISA; either way the values of the semantics, and
    # every element outside the window as it was
    assert _same_pattern(want, got["C"])
    finite = np.isfinite(want)
    assert np.allclose(got["C"][finite], want[finite], rtol=1e-2 if "f16" in name else 1e-5, atol=1e-5)
    m, n = want.shape
    assert np.array_equal(got["C"][:m - rows], args["C"][:m - rows], equal_nan=True)
    assert np.array_equal(got["C"][:, :n - cols], args["C"][:, :n - cols], equal_nan=True)


_GUARDED = textwrap.dedent("""
    import ctypes, mmap, sys
    import numpy as np
    from rewrite import runtime
    from rewrite.script import parse
    name, rows, cols = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    page = mmap.PAGESIZE
    # two pages, the second unreadable: an array ending at the first page's end faults on
    # any byte read or written past it
    buf = mmap.mmap(-1, 2 * page, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    base = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    libc = ctypes.CDLL(None)
    assert libc.mprotect(ctypes.c_void_p(base + page), page, 0) == 0
    def at_end(shape):
        n = int(np.prod(shape))
        return np.frombuffer(buf, np.float32, n, page - 4 * n).reshape(shape)
    func = parse(f'''
    @prim_func
    def edge(A: f32[{rows}, 5], B: f32[5, {cols}], C: f32[{rows}, {cols}]):
        for k in range(5):
            call("{name}[{rows}x{cols}x1]", c=window(C[0, 0], (1, 0), (0, 1)), a=window(A[0, k], (1, 0), (0, 1)), b=window(B[k, 0], (1, 0), (0, 1)))
    ''')
    kernel = runtime.compile(func)
    A = np.ones((rows, 5), np.float32)
    for which in "BC":
        B = np.ones((5, cols), np.float32)
        C = np.zeros((rows, cols), np.float32)
        if which == "B":
            B = at_end((5, cols)); B[...] = 1.0
        else:
            C = at_end((rows, cols)); C[...] = 0.0
        kernel(A=A, B=B, C=C)
        assert (C == 5.0).all(), C
    print("ok")
""")


@pytest.mark.parametrize("name, rows, cols", [
    pytest.param(MM, 3, 13, marks=needs_isa(MM)), pytest.param(MM, 6, 5, marks=needs_isa(MM)),
    pytest.param(WIDE, 2, 26, marks=needs_isa(WIDE)), pytest.param(WIDE, 8, 17, marks=needs_isa(WIDE))])
def test_a_masked_edge_touches_no_byte_past_the_buffer(name, rows, cols):
    # B and then C end exactly where an unreadable page starts (in a child process: a fault
    # would stop it); the native form's masked loads and stores never reach that page
    done = subprocess.run([sys.executable, "-c", _GUARDED, name, str(rows), str(cols)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


@pytest.mark.parametrize("name, cpu, pattern", [
    (WIDE, "znver4", r"vmovups\s[^\n]*\{%k\d\}"),
    (MM, "znver3", r"vmaskmovps")])
def test_the_edge_lanes_are_masked_in_the_assembly(name, cpu, pattern):
    # compiled for a CPU with the ISA (not run), so every host checks it: the last vector of
    # B's row is a masked load, and C's last vector a masked load and store
    import re

    form = descriptor.partial(intrinsics.get(name), (3, 13, 1) if name == MM else (2, 26, 1))
    width = form.operand("b").shape[1]
    module = codegen.new_module("asm")
    emitter.kloop_function(module, form, form.emitter, "k", {"c": (1024, 1), "a": (1024, 1),
                                                            "b": (width, 1)}, {"a": 1, "b": width})
    body, rest = _assembly_loop(module, cpu, "vfmadd")
    assert any(re.search(pattern, line) for line in body)  # B's masked row, every step
    assert sum(bool(re.search(pattern, line)) for line in rest) >= 2 * form.operand("c").shape[0]


# ---------------------------------------------------------------------------
# the programs


def test_a_product_the_tile_does_not_divide_runs_its_edges_masked_not_padded():
    result = tensorize(_s(90, 90, 90), AVX512)
    assert not result.func.allocs and result.coverage == 1.0
    assert {descriptor.parent_name(s.intrinsic) for s in result.sites} == {WIDE}
    # with the rule off by name, padding takes the edges, at a higher price
    off = tensorize(_s(90, 90, 90), AVX512, rules_off=("edges",))
    assert {b.name for b in off.func.allocs} == {"A_pad", "B_pad", "C_pad"}
    assert result.cost < off.cost
    if RUNS_AVX512:
        check = runtime.check(_s(90, 90, 90), result.compile())
        assert check.ok, check.message


def test_forms_stay_out_of_the_search_library(monkeypatch):
    # the library the extractor is given is also the e-graph's pattern set: a form put in
    # it would be matched by every later planning (the corpus took 95 s to tensorize so)
    from rewrite import extract

    given = []
    init = extract.Extractor.__init__

    def recording(self, library, *args, **kwargs):
        given.append(library)
        init(self, library, *args, **kwargs)

    monkeypatch.setattr(extract.Extractor, "__init__", recording)
    result = tensorize(_s(90, 90, 90), AVX512)
    assert any("[" in s.intrinsic for s in result.sites)
    assert given and not any("[" in name for library in given for name in library)


def test_a_product_smaller_than_the_tile_runs_on_its_partial_forms():
    result = tensorize(_s(5, 10, 7), AVX2)
    assert not result.func.allocs and result.coverage == 1.0
    assert [s.intrinsic for s in result.sites] == [MM + "[5x10x1]"]


def test_a_partial_form_that_is_a_registered_intrinsic_is_that_intrinsic():
    # the 6 x 16 tile cut to 4 rows computes what the 4 x 16 tile does: the program calls
    # the registered one (at its own price), never the form
    result = tensorize(_s(10, 16, 8), AVX2)
    names = {s.intrinsic for s in result.sites}
    assert "x86.mm.f32.4x16x1" in names and MM + "[4x16x1]" not in names


@pytest.mark.parametrize("shape", [(90, 90, 90), (37, 29, 61), (45, 33, 47), (30, 30, 30),
                                   (7, 3, 20), (99, 99, 99), (13, 17, 11)])
@pytest.mark.parametrize("library", ["avx2", "host"])
def test_odd_products_on_masked_edges_check_with_special_values(shape, library):
    m, k, n = shape
    func = _s(m, n, k)
    result = tensorize(func, AVX2 if library == "avx2" else intrinsics.library("host"))
    kernel = result.compile()
    for seed in range(2):
        args = inputs.random_args(func, seed=seed, special=True, density=0.2)
        want = interp.run(func, **args)["C"]
        got = {x: v.copy() for x, v in args.items()}
        kernel(**got)
        assert _same_pattern(want, got["C"])
        finite = np.isfinite(want)
        assert np.allclose(got["C"][finite], want[finite], rtol=1e-4, atol=1e-3)


def test_minus_zero_outputs_stay_minus_zero_on_the_masked_edges():
    # C starts at -0.0 and A's row 0 is +0.0 against a negative B: every term of row 0 is
    # -0.0, and so is its sum, on the edge tiles as on the others (their accumulators start
    # at -0.0 and C is added once, masked)
    func = _s(30, 30, 30, init=False)
    result = tensorize(func, AVX2)
    assert not result.func.allocs
    want, got = _run_both(func, result.func, _minus_zero_args(func, "A", "B", "C"))
    assert np.signbit(want["C"][0]).all() and np.array_equal(np.signbit(want["C"]), np.signbit(got["C"]))


def test_the_rule_is_turned_off_by_name_from_the_command_line(tmp_path, capsys):
    import json

    from rewrite.cli import main

    path = tmp_path / "mm.py"
    path.write_text(show(_s(30, 30, 30)))
    assert main(["run", str(path), "--target", "x86-avx2", "--json", "--check"]) == 0
    on = json.loads(capsys.readouterr().out)
    assert main(["run", str(path), "--target", "x86-avx2", "--json", "--rules", "-edges"]) == 0
    off = json.loads(capsys.readouterr().out)

    def used(report):
        return {s["intrinsic"] for f in report["functions"] for s in f["sites"]}

    assert any("[" in name for name in used(on)) and not any("[" in name for name in used(off))
