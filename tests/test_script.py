"""The script language: round trips, canonical text, and one error line per bad script."""

from pathlib import Path

import pytest
from hypothesis import given

from rewrite import ir
from rewrite.script import ScriptError, parse, parse_all, parse_file, show, show_file
from rewrite.verify import VerifyError, verify

from .strategies import programs

CORPUS = sorted((Path(__file__).parent.parent / "corpus").glob("*.py"))
CORPUS_FUNCS = [(p, name) for p in CORPUS for name in parse_file(p)]


@pytest.mark.parametrize("path,name", CORPUS_FUNCS, ids=[f"{p.stem}:{n}" for p, n in CORPUS_FUNCS])
def test_corpus_round_trip(path, name):
    f = parse_file(path)[name]
    assert parse(show(f)) == f
    assert show(parse(show(f))) == show(f)


def test_corpus_is_large_enough():
    assert len(CORPUS_FUNCS) >= 25


@given(programs())
def test_random_programs_round_trip(f):
    verify(f)
    assert parse(show(f)) == f


def test_show_file_round_trips_several_functions():
    fs = parse_all(MATMUL + "\n" + MATMUL.replace("def matmul", "def other"))
    assert parse_all(show_file(fs.values())) == fs


MATMUL = '''
from rewrite.script import prim_func, grid, f32

@prim_func
def matmul(A: f32[4, 8], B: f32[8, 2], C: f32[4, 2]):
    """A doc string."""
    for i, j in grid(4, 2):
        C[i, j] = 0.0
        for k in range(8):
            C[i, j] += A[i, k] * B[k, j]
'''


def test_parse_builds_the_expected_tree():
    f = parse(MATMUL)
    A, B, C = (ir.Buffer("A", "f32", (4, 8)), ir.Buffer("B", "f32", (8, 2)), ir.Buffer("C", "f32", (4, 2)))
    i, j, k = ir.Var("i"), ir.Var("j"), ir.Var("k")
    body = ir.For("i", 0, 4, ir.For("j", 0, 2, ir.Seq((
        ir.Store(C, (i, j), ir.Const(0.0, "f32")),
        ir.For("k", 0, 8, ir.Accumulate(C, (i, j), ir.Binary("*", ir.Load(A, (i, k)), ir.Load(B, (k, j)))))))))
    assert f == ir.PrimFunc("matmul", (A, B, C), body)
    assert f.doc == "A doc string."
    assert [b.name for b in f.outputs] == ["C"] and [b.name for b in f.inputs] == ["A", "B"]


def test_literals_take_the_dtype_of_their_context():
    f = parse('''
@prim_func
def g(A: i8[4], B: f32[4], C: i8[4]):
    for i in range(4):
        C[i] = A[i] * 3 + select(B[i] > 0, 1, -2)
''')
    store = f.body.body
    assert store.value.a.b == ir.Const(3, "i8")
    assert store.value.b.cond.b == ir.Const(0.0, "f32")
    assert store.value.b.b == ir.Const(-2, "i8")


@pytest.mark.parametrize("text,expected", [
    ("-A[i] * B[i]", "-A[i] * B[i]"),
    ("-(A[i] * B[i])", "-(A[i] * B[i])"),
    ("A[i] - (B[i] - A[i])", "A[i] - (B[i] - A[i])"),
    ("(A[i] - B[i]) - A[i]", "A[i] - B[i] - A[i]"),
    ("A[i] / (B[i] * A[i])", "A[i] / (B[i] * A[i])"),
    ("A[i] + -1.0", "A[i] + -1.0"),
    ("max(A[i], 0)", "max(A[i], 0.0)"),
    ("A[i] if A[i] > B[i] else B[i]", "select(A[i] > B[i], A[i], B[i])"),
])
def test_canonical_expression_text(text, expected):
    src = f"@prim_func\ndef g(A: f32[4], B: f32[4], C: f32[4]):\n    for i in range(4):\n        C[i] = {text}\n"
    f = parse(src)
    assert show(f).splitlines()[-1].strip() == f"C[i] = {expected}"
    assert parse(show(f)) == f


def test_conditions_keep_their_grouping():
    src = '''
@prim_func
def g(A: f32[8], C: f32[8]):
    for i in range(8):
        if i < 2 or (i > 4 and not A[i] == 0.0):
            C[i] = A[i]
        elif 0 <= i < 3:
            C[i] = 1.0
        else:
            C[i] = 2.0
'''
    f = parse(src)
    assert parse(show(f)) == f
    assert "if i < 2 or i > 4 and not A[i] == 0.0:" in show(f)


def _header(body: str, params: str = "A: f32[8, 8], B: f32[8, 8], C: f32[8, 8]") -> str:
    return f"@prim_func\ndef g({params}):\n" + body


# (script, line, col, words the message must contain). Lines count from 1, columns from 1.
BAD_SCRIPTS = [
    ("@prim_func\ndef g(A: f32[8]:\n    pass\n", 2, 16, "syntax error"),
    (_header("    for i in range(8):\n        C[i, 0] = D[i, 0]\n"), 4, 19, "unknown buffer D"),
    (_header("    for i in range(8):\n        C[i, 0] = A[q, 0]\n"), 4, 21, "unknown name q"),
    (_header("    for i in range(8):\n        C[i] = 0.0\n"), 4, 9, "2 dimensions but is indexed with 1"),
    (_header("    for i, j in grid(8, 8):\n        C[i, j] = A[i * j, 0]\n"), 4, 19, "not affine"),
    (_header("    for i in range(8):\n        C[i, 0] = A[i + 1, 0]\n"), 4, 19, "out of bounds"),
    (_header("    for i in range(8):\n        C[i, 0] = A[i, 0] + 1\n", "A: f32[8, 8], C: i32[8, 8]"),
     4, 19, "dtype mismatch"),
    (_header("    for i in range(8):\n        C[i, 0] = A[i, 0] + B[i, 0]\n",
             "A: f32[8, 8], B: i8[8, 8], C: f32[8, 8]"), 4, 19, "dtype mismatch"),
    (_header("    while True:\n        C[0, 0] = 0.0\n"), 3, 5, "while loops are not part"),
    (_header("    for i in range(8):\n        C[i, 0] = A.T[i, 0]\n"), 4, 19, "attribute access"),
    (_header("    for i in range(8):\n        C[i, 0] = foo(A[i, 0])\n"), 4, 19, "unknown function foo"),
    (_header("    for i in range(8):\n        C[i, 0] = A[i, 0] // B[i, 0]\n"), 4, 19, "integer-only"),
    (_header("    for i in range(8):\n        C[i, 0] **= A[i, 0]\n"), 4, 9, "+= -= *= /= //= %="),
    (_header("    for i in range(0, 8, 2):\n        C[i, 0] = 0.0\n"), 3, 14, "no step"),
    (_header("    for i in range(8):\n        for i in range(8):\n            C[i, 0] = 0.0\n"), 4, 13, "shadows"),
    (_header("    for i in range(8):\n        C[i, 0] = A[i, 0:2]\n"), 4, 24, "slices"),
    (_header("    for i in range(8):\n        if A[i, 0]:\n            C[i, 0] = 0.0\n"), 4, 12, "condition"),
    (_header("    for i in range(8):\n        C[i, 0] = exp(1)\n", "A: f32[8, 8], C: i32[8, 8]"),
     4, 19, "exp() takes a float"),
    (_header("    for i in range(8):\n        C[i, 0] = 300\n", "C: u8[8, 8]"), 4, 19, "does not fit u8"),
    ("@prim_func\ndef g(A: f32[8] = None):\n    A[0] = 0.0\n", 2, 19, "default arguments"),
    ("@other\ndef g(A: f32[8]):\n    A[0] = 0.0\n", 1, 2, "decorated with @prim_func"),
    ("import os\nos.system('touch x')\n", 2, 1, "top-level code"),
    ("@prim_func\ndef g(A: f32[0]):\n    A[0] = 0.0\n", 2, 14, "must be positive"),
    ("@prim_func\ndef g(A: float[8]):\n    A[0] = 0.0\n", 2, 10, "dtype with a shape"),
    (_header("    for i in range(8):\n        if i >= 1:\n            C[i, 0] = A[i - 1, 0]\n"
             "        else:\n            C[i, 0] = A[i - 1, 0]\n"), 7, 23, "out of bounds"),
]


@pytest.mark.parametrize("text,line,col,words", BAD_SCRIPTS,
                         ids=[w.replace(" ", "-") for *_, w in BAD_SCRIPTS])
def test_bad_script_reports_line_and_column(text, line, col, words):
    with pytest.raises(ScriptError) as info:
        parse_all(text, "bad.py")
    err = info.value
    assert (err.file, err.line, err.col) == ("bad.py", line, col), str(err)
    assert words in err.message
    assert str(err).startswith(f"bad.py:{line}:{col}: ")
    assert "\n" not in str(err) and "0x" not in str(err)


def test_guarded_access_is_in_bounds():
    f = parse(_header("    for i in range(8):\n        if i >= 1:\n            C[i, 0] = A[i - 1, 0]\n"))
    assert isinstance(f.body.body, ir.If)


def test_reading_a_script_never_runs_it(tmp_path):
    marker = tmp_path / "created"
    script = tmp_path / "evil.py"
    script.write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('x')\n"
        f"@prim_func\ndef g(A: f32[pathlib.Path({str(marker)!r}).write_text('y')]):\n    A[0] = 0.0\n")
    with pytest.raises(ScriptError):
        parse_file(script)
    assert not marker.exists()
    decorated = tmp_path / "decorated.py"
    decorated.write_text(f"@prim_func\ndef g(A: f32[4], B: f32[4] = open({str(marker)!r}, 'w')):\n"
                         "    A[0] = 0.0\n")
    with pytest.raises(ScriptError):
        parse_file(decorated)
    assert not marker.exists()


def test_missing_file_is_a_script_error(tmp_path):
    with pytest.raises(ScriptError, match="cannot read"):
        parse_file(tmp_path / "nope.py")


def test_verifier_rejects_malformed_ir():
    A = ir.Buffer("A", "f32", (4,))
    bad_index = ir.PrimFunc("g", (A,), ir.For("i", 0, 5, ir.Store(A, (ir.Var("i"),), ir.Const(0.0, "f32"))))
    with pytest.raises(VerifyError, match="out of bounds"):
        verify(bad_index)
    unbound = ir.PrimFunc("g", (A,), ir.Store(A, (ir.Var("i"),), ir.Const(0.0, "f32")))
    with pytest.raises(VerifyError, match="outside its loop"):
        verify(unbound)
    nested_seq = ir.PrimFunc("g", (A,), ir.Seq((ir.Store(A, (ir.Const(0, "i64"),), ir.Const(0.0, "f32")),)))
    with pytest.raises(VerifyError, match="two or more"):
        verify(nested_seq)
    mixed = ir.PrimFunc("g", (A,), ir.Store(A, (ir.Const(0, "i64"),), ir.Const(1, "i32")))
    with pytest.raises(VerifyError, match="dtype mismatch"):
        verify(mixed)


CALLS = '''
@prim_func
def mm(A: f32[12, 4], B: f32[32, 4], C: f32[12, 32]):
    for io, jo, k in grid(2, 2, 4):
        call("x86.mm.f32.6x16x1", c=window(C[6 * io, 16 * jo], (1, 0), (0, 1)), a=window(A[6 * io, k], (1, 0), (0, 1)), b=window(B[16 * jo, k], (0, 1), (1, 0)))
'''


def test_intrinsic_calls_round_trip_and_name_their_output():
    f = parse(CALLS)
    call = f.body.body.body.body
    assert isinstance(call, ir.Call) and call.output == "c"
    assert call.window("b").steps == ((0, 1), (1, 0))  # B is read transposed
    assert [b.name for b in f.outputs] == ["C"]
    assert parse(show(f)) == f


@pytest.mark.parametrize("change,words", [
    (("C[6 * io, 16 * jo]", "C[6 * io + 1, 16 * jo]"), "out of bounds"),
    (("x86.mm.f32.6x16x1", "x86.mm.f32.9x9"), "unknown intrinsic"),
    (("a=window", "q=window"), "has no operand q"),
    (("(1, 0), (0, 1)), b=", "(1, 0)), b="), "needs that many steps"),
])
def test_bad_intrinsic_calls(change, words):
    with pytest.raises(ScriptError, match=words):
        parse(CALLS.replace(*change))


UPDATES = """
@prim_func
def updates(A: f32[2, 2], q: f32[2], r: f32[2], X: i32[4], Y: f32[4]):
    for i, j in grid(2, 2):
        A[i, j] -= q[i] * r[j]
    for i in range(4):
        X[i] *= 3
        X[i] //= 2
        X[i] %= 5
        Y[i] /= 2.0
"""


def test_updates_other_than_plus_mean_what_python_says():
    import numpy as np

    from rewrite.interp import run

    f = parse(UPDATES)
    assert parse(show(f)) == f
    a = np.ones((2, 2), np.float32)
    out = run(f, A=a, q=np.array([1, 2], np.float32), r=np.array([3, 4], np.float32),
              X=np.array([1, 2, -7, 9], np.int32), Y=np.array([0, 1, 2, 3], np.float32))
    assert out["A"].tolist() == [[1 - 3, 1 - 4], [1 - 6, 1 - 8]]
    # x * 3 // 2 % 5 with Python's floor division and modulo
    assert out["X"].tolist() == [1, 3, 4, 3]
    assert out["Y"].tolist() == [0.0, 0.5, 1.0, 1.5]


def test_a_subtracted_product_stays_an_accumulation():
    (loop,) = [s for s in ir.walk_stmts(parse(UPDATES).body) if isinstance(s, ir.Accumulate)]
    assert isinstance(loop.value, ir.Unary) and loop.value.op == "neg"


def test_an_update_outside_the_language_is_named_where_it_is():
    src = "@prim_func\ndef f(X: f32[4]):\n    for i in range(4):\n        X[i] **= 2.0\n"
    with pytest.raises(ScriptError) as e:
        parse(src)
    assert (e.value.line, e.value.col) == (4, 9) and "+= -= *= /= //= %=" in e.value.message
