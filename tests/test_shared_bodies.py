"""Parts of a kernel that are the same code on other buffers share one compiled body
(``lower.shared_bodies``); parts that differ in anything the code depends on do not."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import pytest

import intrinsics
import rewrite
from rewrite import analysis, codegen, ir, jit, lower, runtime
from rewrite.inputs import random_args
from rewrite.interp import run
from rewrite.ir import Call, walk_stmts
from rewrite.pipeline import tensorize
from rewrite.script import parse, show
from rewrite.tools.strassen_bench import matmul_source


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TENSORIZE_CACHE_DIR", str(tmp_path / "cache"))


def _bits(a: np.ndarray) -> np.ndarray:
    """The array's bytes, so that -0.0 and 0.0 differ."""
    return np.ascontiguousarray(a).view(np.uint8)


def _assert_compiled_is_interpreted(func, threads=(1, 2), seed=0):
    """Every output of the compiled kernel bit for bit the interpreter's (no reduction in
    these programs, so no reassociation either)."""
    args = random_args(func, seed=seed)
    want = run(func, **{k: np.array(v, copy=True) for k, v in args.items()})
    for n in threads:
        got = {k: np.array(v, copy=True) for k, v in args.items()}
        runtime.compile(func, threads=n)(**got)
        for b in func.outputs:
            assert np.array_equal(_bits(got[b.name]), _bits(want[b.name])), \
                f"{b.name} with {n} threads of\n{show(func)}"


def _functions_with(text: str, needle: str) -> list[str]:
    """Names of the functions of an LLVM module whose bodies contain ``needle``."""
    out = []
    for m in re.finditer(r'^define [^@]*@"?([^"(]+)"?\(.*?^}', text, re.M | re.S):
        if needle in m.group(0):
            out.append(m.group(1))
    return out


# Three nests of one shape on other buffers and at other offsets; each is large enough to be
# a parallel part of its own (lower.MIN_PARALLEL_OPS).
THREE = """
@prim_func
def f(A: f32[256, 256], B: f32[256, 256], C: f32[256, 256], D: f32[256, 256], E: f32[256, 256]):
    for i, j in grid(128, 256):
        C[i, j] = A[i, j] * B[i + 128, j] - A[i + 1, j]
    for p, q in grid(128, 256):
        D[p + 128, q] = B[p + 16, q] * A[p, q] - B[p + 17, q]
    for i, j in grid(128, 256):
        E[i, j] = C[i + 100, j] * D[i + 128, j] - C[i + 101, j]
"""


def test_identical_nests_on_other_buffers_compile_to_one_body():
    func = parse(THREE)
    plan = lower.lower(func)
    assert len(plan.parts) == 3 and all(p.parallel for p in plan.parts)
    (body,) = plan.bodies
    assert body.uses == 3
    # each part passes its buffers moved to where its first access starts
    assert [p.args for p in plan.parts] == [
        ((2, 0), (0, 0), (1, 128 * 256)),
        ((3, 128 * 256), (1, 16 * 256), (0, 0)),
        ((4, 0), (2, 100 * 256), (3, 128 * 256)),
    ]
    # the loop nest's arithmetic is in one function of the optimised module, not three
    text = runtime.emit_llvm(func)
    assert len(_functions_with(text, "fmul")) == 1
    assert len(_functions_with(text, "fsub")) == 1
    _assert_compiled_is_interpreted(func)


def test_the_strassen_products_share_their_bodies_and_match_the_interpreter():
    # 48³ products: whole 6x16 (AVX2) tiles, and enough work for each to be a parallel part
    # (lower.MIN_PARALLEL_OPS) on 8x32 (AVX-512) tiles too; parts run serially in one body
    func = parse(matmul_source(192))
    result = tensorize(func, intrinsics.library("host"), strassen=2)
    assert result.strassen_levels == 2
    plan = lower.lower(result.func)
    calling = [b for b in plan.bodies if any(isinstance(s, Call) for s in walk_stmts(b.stmt))]
    parts = sum(b.uses for b in calling)
    assert parts >= 49  # 49 products, and the unguarded fallback
    assert 3 * len(calling) <= parts
    for threads in (1, 2):
        kernel = runtime.compile(result.func, threads=threads)
        assert runtime.check(result.func, kernel).ok



def test_a_kernel_of_many_parts_is_a_few_functions(monkeypatch):
    # 30 parallel copies of one nest on other buffers and at other offsets, each followed by
    # a recurrence (a serial part, also one code at other offsets), and one nest of its own:
    # 61 parts, three bodies; the kernel walks its parts as data, so the module has a
    # function per body and per task of a shared body, whatever the number of parts
    monkeypatch.setattr(lower, "MIN_PARALLEL_OPS", 1 << 10)
    lines = []
    for n in range(30):
        out = "C" if n % 2 else "D"
        lines.append(f"    for i, j in grid(32, 64):\n"
                     f"        {out}[i + {n}, j] = A[i + {n % 7}, j] * 2.0 - B[i + {n}, j]")
        lines.append(f"    for i in range(30):\n        X[i + 1, {n}] = X[i, {n}] + A[i, {n}]")
    lines.append("    for i, j in grid(32, 64):\n        E[i, j] = C[i, j] + D[i + 29, j] * A[i, j]")
    src = ("@prim_func\ndef f(A: f32[64, 64], B: f32[64, 64], C: f32[64, 64], D: f32[64, 64], "
           "E: f32[32, 64], X: f32[31, 30]):\n" + "\n".join(lines) + "\n")
    func = parse(src)
    plan = lower.lower(func)
    assert len(plan.parts) == 61 and sum(p.parallel for p in plan.parts) == 31
    assert sorted(b.uses for b in plan.bodies) == [1, 30, 30]
    module = codegen.kernel_module(plan, "k", rewrite.target.host().emitter)
    defined = [f.name for f in module.functions if not f.is_declaration]
    # three bodies, a task for each of the two shared ones, the lone nest's task, the entry
    assert len(defined) == 7, defined
    _assert_compiled_is_interpreted(func)
    # NaN, infinities and signed zeros, bit for bit where the interpreter puts them
    args = random_args(func, seed=5)
    args["A"][3, 7], args["A"][20, :], args["B"][10, 5] = np.nan, -0.0, np.inf
    args["B"][40, 60], args["X"][0, 2] = -np.inf, -0.0
    want = run(func, **{k: np.array(v, copy=True) for k, v in args.items()})
    for threads in (1, 2):
        got = {k: np.array(v, copy=True) for k, v in args.items()}
        runtime.compile(func, threads=threads)(**got)
        for b in func.outputs:
            assert np.array_equal(_bits(got[b.name]), _bits(want[b.name])), (b.name, threads)
    assert np.isnan(want["X"][4:, 7]).all() and np.isneginf(want["D"][10, 5])


def test_each_statements_loops_are_classed_alone_and_equal_statements_once(monkeypatch):
    # a parallel nest, a recurrence, the same recurrence on other buffers at another offset,
    # a reduction, and statements that read what earlier ones wrote (dependences between
    # statements, carried by no loop): per statement, the classes the whole function's
    # analysis gives, with the two recurrences analysed as one
    src = """
@prim_func
def f(A: f32[300, 64], B: f32[300, 64], X: f32[300, 64], Y: f32[300, 64], s: f32[64]):
    for i, j in grid(256, 64):
        B[i, j] = A[i, j] * 2.0
    for i, j in grid(255, 64):
        X[i + 1, j] = X[i, j] + B[i, j]
    for i, j in grid(255, 64):
        Y[i + 20, j] = Y[i + 19, j] + A[i + 7, j]
    for j, i in grid(64, 256):
        s[j] += X[i, j] * Y[i, j]
    for i, j in grid(256, 64):
        A[i, j] = X[i, j] + s[j]
"""
    func = parse(src)
    whole = {info.path for info in analysis.analyze(func).loops if info.kind == "parallel"}
    seen = []
    analyze = analysis.analyze
    monkeypatch.setattr(analysis, "analyze", lambda f: seen.append(f) or analyze(f))
    assert lower._parallel_loops(func) == whole
    assert {(0,), (0, 0), (1, 0), (2, 0), (3,), (4,), (4, 0)} == whole  # the test's premise
    assert len(seen) == 5 and len(set(seen)) == 4  # the second recurrence is the first moved



def test_each_nests_loop_order_is_decided_alone_and_equal_nests_once(monkeypatch):
    # two copies that read A down its columns, at other offsets: j goes innermost in both,
    # decided by one analysis; a nest whose reads run against its writes (X[i + 1, j] from
    # X[i, j + 1]) keeps its order, which moving j inward would break
    src = """
@prim_func
def f(A: f32[300, 64], B: f32[300, 64], C: f32[300, 64], X: f32[300, 64]):
    for j, i in grid(64, 256):
        B[i, j] = A[i, j] * 2.0
    for j, i in grid(64, 256):
        C[i + 40, j] = A[i + 7, j] * 2.0
    for j, i in grid(63, 256):
        X[i + 1, j] = X[i, j + 1] + 1.0
"""
    func = parse(src)
    seen = []
    can_permute = analysis.can_permute
    monkeypatch.setattr(analysis, "can_permute",
                        lambda f, *a, **k: seen.append(f) or can_permute(f, *a, **k))
    ordered = lower.schedule(func)
    assert [s.var for s in ir.stmts_of(ordered.body)] == ["i", "i", "j"]
    assert len(seen) == 3 and len(set(seen)) == 2
    _assert_compiled_is_interpreted(func)
    # NaN, infinities and signed zeros, bit for bit where the interpreter puts them
    args = random_args(func, seed=4)
    args["A"][7, 3], args["A"][50, 9], args["A"][100, :] = np.nan, -np.inf, -0.0
    args["X"][0, 5], args["X"][20, 1] = np.inf, -0.0
    want = run(func, **{k: np.array(v, copy=True) for k, v in args.items()})
    got = {k: np.array(v, copy=True) for k, v in args.items()}
    runtime.compile(func, threads=2)(**got)
    for b in func.outputs:
        assert np.array_equal(_bits(got[b.name]), _bits(want[b.name])), b.name
    assert np.isnan(want["B"][7, 3]) and np.signbit(want["C"][100 - 7 + 40, 0])


BASE = """
    for i, j in grid(128, 256):
        C[i, j] = A[i, j] * 2.0 + A[i + 1, j]
"""

# A second nest that differs from BASE in one thing the code depends on, over buffers of
# the same names where the difference allows. Merging it with BASE would compute the wrong
# thing somewhere, which the comparison with the interpreter then sees.
DIFFERENT = {
    "constant": "D[i, j] = A[i, j] * 3.0 + A[i + 1, j]",
    "signed zero": ("D[i, j] = A[i, j] * 0.0 + A[i + 1, j]", "D[i, j] = A[i, j] * -0.0 + A[i + 1, j]"),
    "operation": "D[i, j] = A[i, j] * 2.0 - A[i + 1, j]",
    "relative offset": "D[i, j] = A[i, j] * 2.0 + A[i + 2, j]",
    "stride": "D[i, j] = A[j, i] * 2.0 + A[j, i + 1]",
    "one buffer for two": "D[i, j] = A[i, j] * 2.0 + B[i + 1, j]",
    "shape": "W[i, j] = V[i, j] * 2.0 + V[i + 1, j]",
    "dtype": "F[i, j] = G[i, j] * 2.0 + G[i + 1, j]",
    "extent": "D[i, j] = A[i, j] * 2.0 + A[i + 1, j]",
    "floor division": "D[i, j] = A[i // 2, j] * 2.0 + A[i + 1, j]",
    # a buffer read at a non-affine index is never moved: the offsets stay in the code
    "offset beside a floor division": ("D[i, j] = A[i // 2, j] * 2.0 + A[i + 1, j]",
                                       "C[i, j] = A[i // 2 + 1, j] * 2.0 + A[i + 2, j]"),
}


@pytest.mark.parametrize("what", sorted(DIFFERENT))
def test_nests_that_differ_are_not_merged(what, monkeypatch):
    # each nest a parallel part whatever the threshold (the "extent" one is a column short)
    monkeypatch.setattr(lower, "MIN_PARALLEL_OPS", 1 << 12)
    first, second = (BASE.strip().splitlines()[1].strip(), DIFFERENT[what]) \
        if isinstance(DIFFERENT[what], str) else DIFFERENT[what]
    grid = "grid(128, 256)" if what != "extent" else "grid(128, 255)"
    src = f"""
@prim_func
def f(A: f32[256, 256], B: f32[256, 256], C: f32[256, 256], D: f32[256, 256],
      V: f32[256, 512], W: f32[256, 512], G: f64[256, 256], F: f64[256, 256]):
    for i, j in grid(128, 256):
        {first}
    for i, j in {grid}:
        {second}
"""
    func = parse(src)
    plan = lower.lower(func)
    assert len(plan.parts) == 2 and all(p.parallel for p in plan.parts)
    assert len(plan.bodies) == 2, what
    args = random_args(func, seed=1)
    want = run(func, **{k: np.array(v, copy=True) for k, v in args.items()})
    got = {k: np.array(v, copy=True) for k, v in args.items()}
    runtime.compile(func, threads=1)(**got)
    for b in func.outputs:
        assert np.array_equal(_bits(got[b.name]), _bits(want[b.name])), b.name


def test_the_same_nest_at_another_offset_is_merged():
    # the control for the tests above: only the first access's offset differs
    src = """
@prim_func
def f(A: f32[256, 256], C: f32[256, 256], D: f32[256, 256]):
    for i, j in grid(128, 256):
        C[i, j] = A[i, j] * 2.0 + A[i + 1, j]
    for i, j in grid(128, 256):
        D[i + 100, j] = A[i + 7, j] * 2.0 + A[i + 8, j]
"""
    func = parse(src)
    assert [b.uses for b in lower.lower(func).bodies] == [2]
    _assert_compiled_is_interpreted(func)


def test_a_move_that_would_leave_the_buffer_is_not_made():
    # the first access starts one element before B: its pointer is not moved there, and the
    # part addresses B from its start as written
    src = """
@prim_func
def f(A: f32[256, 256], B: f32[256, 256], C: f32[256, 256]):
    for i in range(1, 129):
        for j in range(256):
            C[i, j] = B[i - 1, j] * 2.0 + A[i, j]
    for i in range(1, 129):
        for j in range(256):
            A[i + 100, j] = B[i - 1, j] * 3.0 + B[i, j]
"""
    func = parse(src)
    plan = lower.lower(func)
    assert all(off >= 0 for p in plan.parts for _, off in p.args)
    _assert_compiled_is_interpreted(func)


def test_programs_that_differ_in_the_sign_of_a_zero_get_their_own_kernels():
    # 0.0 == -0.0 for Python's equality, which keys the kernels kept in memory
    src = """
@prim_func
def f(A: f32[8], C: f32[8]):
    for i in range(8):
        C[i] = A[i] * {}
"""
    a = np.ones(8, np.float32)
    signs = []
    for zero in ("0.0", "-0.0"):
        c = np.full(8, 5.0, np.float32)
        runtime.compile(parse(src.format(zero)), threads=1)(A=a, C=c)
        signs.append(bool(np.signbit(c).all()))
    assert signs == [False, True]


def _imports(module: str) -> set[str]:
    """The ``rewrite`` modules ``module`` imports, at its top or inside a function."""
    tree = ast.parse((Path(rewrite.__file__).parent / f"{module}.py").read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            out.update([node.module.split(".")[0]] if node.module else [a.name for a in node.names])
    return out


def test_the_disk_cache_key_covers_every_module_the_code_generator_reads():
    # lowering's canonical forms read affine.py, codegen's loops emitter.py: a change to
    # either changes compiled code, so it must change the key of every entry
    closure, todo = set(), ["codegen", "lower"]
    while todo:
        m = todo.pop()
        if m not in closure and (Path(rewrite.__file__).parent / f"{m}.py").exists():
            closure.add(m)
            todo += sorted(_imports(m))
    keyed = {Path(m.__file__).stem for m in jit.CODE_MODULES}
    assert {"affine", "emitter", "lower", "codegen"} <= closure
    assert closure <= keyed, closure - keyed
