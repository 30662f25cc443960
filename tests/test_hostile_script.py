"""Hostile scripts against the front end, and what ``bench`` does with bad outputs.

Generated pathological scripts -- deep, wide, huge literals, odd encodings, empty files --
each give one located line ``file:line:col: sentence`` (in characters, not UTF-8 bytes) and
exit status 2, never a traceback. The deepest expressions the parser accepts go through the
whole pipeline (parse, tensorize, compile, check) without running out of stack.
"""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

import intrinsics
from rewrite import ir, runtime
from rewrite.pipeline import tensorize
from rewrite.script import (MAX_EXPR_DEPTH, ScriptError, parse, parse_all, parse_file, parse_file_lenient,
                            show)

ROOT = Path(__file__).parent.parent
LIMIT = MAX_EXPR_DEPTH

HEAD = ("from rewrite.script import *\n\n@prim_func\n"
        "def f(A: f32[8], B: f32[8]):\n    for i in range(8):\n")  # statements: line 6, column 9


def body(*lines: str, params: str = "A: f32[8], B: f32[8]") -> str:
    head = HEAD.replace("A: f32[8], B: f32[8]", params)
    return head + "".join("        " + l + "\n" for l in lines)


def cli(*args, cwd=ROOT, timeout=300):
    return subprocess.run([sys.executable, "-m", "rewrite.cli", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def ir_depth(func: ir.PrimFunc) -> int:
    """The deepest expression of a function, in nodes (a loop, so it holds at any depth)."""
    deepest = 0
    for s in ir.walk_stmts(func.body):
        todo = [(e, 1) for e in ir.stmt_exprs(s)]
        while todo:
            e, d = todo.pop()
            deepest = max(deepest, d)
            todo.extend((c, d + 1) for c in ir.children(e))
    return deepest


def selects(n: int) -> str:
    s = "A[i]"
    for k in range(n):
        s = f"select(i < {k % 8}, {s}, A[i])"
    return s


def big_line(n: int, sep: str = " + ", term: str = "A[i]") -> str:
    return sep.join([term] * n)


# ---------------------------------------------------------------------------
# refused: (id, script, line, column, words of the message)

_RHS = 16  # column of the value in "        B[i] = ..."

BAD = [
    # depth: chains the parser refuses past the limit, pointing at the whole expression
    ("sum-5000", body("B[i] = " + big_line(5000)), 6, _RHS, "nests 5001 levels deep, past the limit of"),
    ("sum-limit+1", body("B[i] = " + big_line(LIMIT)), 6, _RHS, f"nests {LIMIT + 1} levels deep"),
    ("neg-limit+1", body("B[i] = " + "-" * (LIMIT - 1) + "A[i]"), 6, _RHS, f"nests {LIMIT + 1} levels deep"),
    ("and-5000", body("if " + big_line(5000, " and ", "i < 4") + ":", "    B[i] = A[i]"), 6, 12,
     "nests 5001 levels deep"),
    ("compare-chain-5000", body("if " + big_line(5000, " < ", "i") + ":", "    B[i] = A[i]"), 6, 12,
     "nests 5000 levels deep"),
    ("index-5000", body("B[i] = A[" + big_line(5000, " + ", "i") + "]"), 6, _RHS, "nests 5001 levels deep"),
    ("target-index-5000", body("B[" + big_line(5000, " + ", "i") + "] = A[i]"), 6, 9, "nests 5001 levels deep"),
    ("ifexp-chain-limit+1", body("B[i] = " + " else ".join(["A[i] if i < 4"] * (LIMIT - 1)) + " else A[i]"),
     6, _RHS, f"nests {LIMIT + 1} levels deep"),
    ("deep-shape", "@prim_func\ndef f(A: f32[" + big_line(3000, " + ", "1") + "]):\n    A[0] = 0.0\n", 2, 10,
     "nests 3001 levels deep"),
    # past what Python's own parser can build: located by the tokenizer instead
    ("sum-40000", body("B[i] = " + big_line(40000)), 6, _RHS, "too deeply for Python's parser"),
    ("neg-10000", body("B[i] = " + "-" * 10000 + "A[i]"), 6, _RHS, "too deeply for Python's parser"),
    ("not-10000", body("if " + "not " * 10000 + "i < 4:", "    B[i] = A[i]"), 6, 12, "too deeply for Python's parser"),
    # Python's parser allows 200 nested brackets: select 200 deep is one too many with the
    # bracket of the innermost A[i], which is where Python points
    ("select-200", body("B[i] = " + selects(200)), 6, _RHS + 200 * len("select(i < 1, ") + 1,
     "too many nested parentheses"),
    # huge literals: each must fit its dtype, and is described, not printed
    ("int-4000-index", body("B[i] = A[i + " + "9" * 4000 + "]"), 6, 22, "a literal of about 4000 digits does not fit i64"),
    ("int-4000-f32", body("B[i] = A[i] * " + "9" * 4000), 6, 23, "a literal of about 4000 digits does not fit f32"),
    ("int-4301-digits", body("B[i] = A[i + " + "9" * 4301 + "]"), 6, 22, "a literal of 4301 digits does not fit any dtype"),
    ("hex-5000-digits", body("B[i] = A[i] * 0x" + "f" * 5000), 6, 23, "a literal of about 6021 digits does not fit f32"),
    ("float-1e400", body("B[i] = A[i] * 1e400"), 6, 23, "too large for any float dtype; infinity is written inf"),
    ("float-4000-digits", body("B[i] = A[i] * " + "9" * 4000 + ".0"), 6, 23, "too large for any float dtype"),
    ("f32-1e39", body("B[i] = A[i] * 1e39"), 6, 23, "the literal 1e+39 does not fit f32"),
    ("f32-minus-1e39", body("B[i] = A[i] * -1e39"), 6, 23, "the literal -1e+39 does not fit f32"),
    ("f16-70000", body("B[i] = A[i] + 70000.0", params="A: f16[8], B: f16[8]"), 6, 23,
     "the literal 70000.0 does not fit f16"),
    ("int-to-f32-1e39", body("B[i] = A[i] * " + "1" + "0" * 39), 6, 23, "does not fit f32"),
    ("loop-bound-2**64", body("for j in range(18446744073709551616):", "    B[0] = A[0]"), 6, 24,
     "a loop bound must fit i64"),
    ("shape-2**70", "@prim_func\ndef f(A: f32[1180591620717411303424]):\n    A[0] = 0.0\n", 2, 14,
     "a dimension of A must fit i64"),
    ("shape-hex-huge", "@prim_func\ndef f(A: f32[0x" + "f" * 5000 + "]):\n    A[0] = 0.0\n", 2, 14,
     "a dimension of A must fit i64"),
    # shapes: a negative one is a sign problem, not a type problem
    ("shape-negative", "@prim_func\ndef f(A: f32[-4]):\n    A[0] = 0.0\n", 2, 14, "the shape of A must be positive, not -4"),
    ("shape-float", "@prim_func\ndef f(A: f32[4.0]):\n    A[0] = 0.0\n", 2, 14, "must be positive integer constants"),
    # columns count characters: each é is two UTF-8 bytes before the error
    ("utf8-unknown-name", HEAD.replace("for i", "for é") + "        B[é] = A[é] + q\n", 6, 23, "unknown name q"),
    ("utf8-out-of-bounds", HEAD.replace("for i", "for é") + "        B[é] = A[é] + A[é + 1]\n", 6, 23, "out of bounds"),
    ("utf8-top-level", '"""é"""; import os; os.system("x")\n', 1, 21, "top-level code"),
    ("utf8-syntax-error", 'x = "é" + $\n', 1, 11, "Python syntax error"),
]


@pytest.mark.parametrize("text,line,col,words", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_hostile_script_gives_one_located_line(text, line, col, words):
    start = time.perf_counter()
    with pytest.raises(ScriptError) as info:
        parse_all(text, "bad.py")
    assert time.perf_counter() - start < 20  # refused quickly, not after a long walk
    err = info.value
    assert (err.line, err.col) == (line, col), str(err)[:300]
    assert words in err.message, err.message[:300]
    assert str(err).startswith(f"bad.py:{line}:{col}: ") and "\n" not in str(err)
    assert len(str(err)) < 300  # a literal of thousands of digits is described, not printed


def test_the_cli_reports_every_hostile_script_on_one_line_and_exits_2(tmp_path):
    folder = tmp_path / "hostile"
    folder.mkdir()
    expected = {}
    for name, text, line, col, words in BAD:
        path = folder / f"{name}.py"
        path.write_text(text, encoding="utf-8")
        expected[str(path)] = (f"{path}:{line}:{col}: ", words)
    r = cli("run", folder, "--target", "none", "--json", timeout=600)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and "RecursionError" not in r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == len(BAD)
    for l in lines:
        prefix, words = expected.pop(l.split(":", 1)[0])
        assert l.startswith(prefix) and words in l, l[:300]
    assert not expected
    out = json.loads(r.stdout)["functions"]
    assert len(out) == len(BAD) and all(f["error"] for f in out)


# ---------------------------------------------------------------------------
# accepted at the limit: parse -> tensorize -> compile -> check

# each builds a script whose deepest expression nests exactly n levels
AT_DEPTH = {
    # a sum of k loads nests k + 1 levels: k - 1 additions, a load, its index
    "sum": lambda n: body("B[i] = " + big_line(n - 1)),
    "neg": lambda n: body("B[i] = " + "-" * (n - 2) + "A[i]"),
    "and": lambda n: body("if " + big_line(n - 1, " and ", "i < 4") + ":", "    B[i] = A[i]"),
    "compare-chain": lambda n: body("if " + big_line(n, " < ", "i") + ":", "    B[i] = A[i]"),
    "index": lambda n: body("B[i] = A[" + big_line(n - 2, " + ", "i") + f" - {n - 3} * i]"),
    "ifexp-chain": lambda n: body("B[i] = " + " else ".join(["A[i] if i < 4"] * (n - 2)) + " else A[i]"),
    # a reduction, so the expression goes through the e-graph too
    "accumulate-neg": lambda n: body("B[0] += " + "-" * (n - 2) + "A[i]"),
}


@pytest.mark.parametrize("name", sorted(AT_DEPTH))
def test_an_expression_at_the_depth_limit_goes_through_the_whole_pipeline(name):
    func = parse(AT_DEPTH[name](LIMIT), f"{name}.py")
    assert ir_depth(func) == LIMIT  # at the limit, not below it
    assert show(func)  # printing walks the expression too
    result = tensorize(func, intrinsics.library("host"))
    kernel = runtime.compile(result.func)
    check = runtime.check(func, kernel)
    assert check.ok, check.message


@pytest.mark.parametrize("name", sorted(AT_DEPTH))
def test_one_level_past_the_limit_is_refused(name):
    with pytest.raises(ScriptError, match=f"^{name}.py:6:(12|16|17): this expression nests "
                                          f"{LIMIT + 1} levels deep, past the limit of {LIMIT}"):
        parse(AT_DEPTH[name](LIMIT + 1), f"{name}.py")


def test_the_deepest_select_python_parses_compiles_and_checks():
    func = parse(body("B[i] = " + selects(199)))  # 200 brackets deep: Python's own limit
    kernel = runtime.compile(tensorize(func, intrinsics.library("host")).func)
    assert runtime.check(func, kernel).ok


def test_unrolled_code_of_400_terms_runs_from_the_cli(tmp_path):
    """The issue's reproducers, as files a user runs: a 400-term sum and 900 nested minus signs."""
    (tmp_path / "sum400.py").write_text(body("B[i] = " + big_line(400, " + ", "A[i] * 2.0")))
    (tmp_path / "neg900.py").write_text(body("B[i] = " + "-" * 900 + "A[i]"))
    (tmp_path / "limit.py").write_text(AT_DEPTH["accumulate-neg"](LIMIT))
    r = cli("run", tmp_path, "--check", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    out = json.loads(r.stdout)["functions"]
    assert len(out) == 3 and all(f["error"] is None and f["check"]["ok"] for f in out)


# ---------------------------------------------------------------------------
# encodings: what Python accepts as a source file, the parser accepts


def test_a_byte_order_mark_is_skipped_and_columns_count_from_after_it(tmp_path):
    good = tmp_path / "bom.py"
    good.write_bytes(b"\xef\xbb\xbf" + body("B[i] = A[i]").encode())
    assert list(parse_file(good)) == ["f"]
    bad = tmp_path / "bom_bad.py"
    bad.write_bytes(b"\xef\xbb\xbfx = 1\n")
    funcs, errors = parse_file_lenient(bad)
    assert not funcs and [str(e) for e in errors][0].startswith(f"{bad}:1:1: top-level code")


def test_a_coding_declaration_is_honoured(tmp_path):
    p = tmp_path / "latin1.py"
    p.write_bytes(b"# -*- coding: latin-1 -*-\n" + body("B[i] = A[i]").replace(
        "def f(A: f32[8], B: f32[8]):\n", 'def f(A: f32[8], B: f32[8]):\n    """caf\xe9"""\n').encode("latin-1"))
    assert parse_file(p)["f"].doc == "caf\xe9"
    r = cli("run", p, "--target", "none")
    assert r.returncode == 0 and not r.stderr


@pytest.mark.parametrize("data,line,words", [
    (b"# coding: no-such-codec\n", 1, "unknown encoding"),
    (b"\xef\xbb\xbf# coding: latin-1\n", 1, "encoding problem"),
    (b'"""ok"""\n\n"""caf\xe9"""\n', 3, "not valid utf-8"),
], ids=["unknown-codec", "mark-contradicts-declaration", "not-utf8"])
def test_an_undecodable_file_is_one_located_line(tmp_path, data, line, words):
    p = tmp_path / "enc.py"
    p.write_bytes(data)
    funcs, errors = parse_file_lenient(p)
    assert not funcs and len(errors) == 1
    assert str(errors[0]).startswith(f"{p}:{line}:1: cannot read the script") and words in str(errors[0])
    assert "\n" not in str(errors[0])


# ---------------------------------------------------------------------------
# a file without a function is bad input, as an empty folder is


@pytest.mark.parametrize("text", ["", "\n\n", '"""Only a docstring."""\nfrom rewrite.script import prim_func\n'],
                         ids=["empty", "blank", "docstring-and-import"])
def test_a_file_without_a_function_exits_2_like_an_empty_folder(tmp_path, text):
    p = tmp_path / "nothing.py"
    p.write_text(text)
    r = cli("run", p)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.splitlines() == [f"{p}:1:1: no @prim_func function in this file"]
    with pytest.raises(ScriptError, match="no @prim_func function"):
        parse_file(p)
    empty = tmp_path / "empty_folder"
    empty.mkdir()
    assert cli("run", empty).returncode == 2


# ---------------------------------------------------------------------------
# bench: outputs checked before the work, a failing function does not stop the others

GOOD = '''from rewrite.script import *

@prim_func
def double(A: f32[16], B: f32[16]):
    for i in range(16):
        B[i] = 2.0 * A[i]
'''


def test_bench_json_into_a_missing_folder_is_one_line_before_any_work(tmp_path):
    script = tmp_path / "good.py"
    script.write_text(GOOD)
    target = tmp_path / "missing" / "out.json"
    r = cli("bench", script, "--runs", "1", "--json", target)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.splitlines() == [f"{target}: cannot write the results: no folder {target.parent}"]
    assert r.stdout == ""  # refused before timing anything
    assert not target.parent.exists()
    r = cli("bench", script, "--runs", "1", "--json", tmp_path)
    assert r.returncode == 2 and r.stderr.splitlines() == [f"{tmp_path}: cannot write the results there: it is a folder"]


def test_bench_reports_a_function_that_fails_and_times_the_others(tmp_path):
    # 33 nested loops: more than numpy (and the interpreter) can broadcast
    names = ", ".join(f"v{k}" for k in range(33))
    script = tmp_path / "mixed.py"
    script.write_text(GOOD + f'''
@prim_func
def deep(A: f32[16], B: f32[16]):
    for {names} in grid({", ".join(["1"] * 33)}):
        B[0] += A[v32]
''')
    out = tmp_path / "out.json"
    r = cli("bench", script, "--runs", "1", "--target", "none", "--json", out)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    # besides the report of numpy's BLAS (and its warnings), one line: the failing function
    errors = [line for line in r.stderr.splitlines()
              if not line.startswith(("numpy's BLAS:", "warning: OPENBLAS"))]
    assert len(errors) == 1 and errors[0].startswith(f"{script}:"), r.stderr[-2000:]
    assert "double" in r.stdout
    assert [x["name"] for x in json.loads(out.read_text())["results"]] == ["double"]
