"""The command line as a user runs it: exit codes, one-line errors, the JSON shape."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent

GOOD = '''
@prim_func
def scale(A: f32[16], B: f32[16]):
    """Doubling."""
    for i in range(16):
        B[i] = 2.0 * A[i]

@prim_func
def broken(A: f32[16], B: f32[16]):
    for i in range(16):
        B[i] = A[i + 1]

@prim_func
def acc(A: i32[8, 4], B: i32[8]):
    for i in range(8):
        B[i] = 0
        for k in range(4):
            B[i] += A[i, k]
'''


def tensorize(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "rewrite.cli", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def script(tmp_path):
    p = tmp_path / "mixed.py"
    p.write_text(GOOD)
    return p


def test_one_bad_function_does_not_stop_the_others(script):
    r = tensorize("run", script, "--json", "--check", "--target", "none")
    assert r.returncode == 2
    out = json.loads(r.stdout)
    by_name = {f["name"]: f for f in out["functions"]}
    assert set(by_name) == {"scale", "broken", "acc"}
    assert by_name["broken"]["error"].startswith(f"{script}:11:16: ")
    assert "out of bounds" in by_name["broken"]["error"]
    for name in ("scale", "acc"):
        f = by_name[name]
        assert f["error"] is None and f["check"]["ok"] is True
        assert set(f) >= {"file", "name", "sites", "coverage", "saturation", "strassen_levels",
                          "check", "seconds", "error"}
        assert f["seconds"]["total"] > 0
    assert by_name["acc"]["coverage"]["ops_total"] == 8 * 4  # one add per k iteration
    assert [l["kind"] for l in by_name["acc"]["loops"]] == ["parallel", "reduction"]
    # the error is one line on stderr, no traceback
    assert r.stderr.strip().splitlines()[-1] == by_name["broken"]["error"]
    assert "Traceback" not in r.stderr


def test_syntax_error_is_one_line_and_exit_2(tmp_path):
    p = tmp_path / "bad.py"
    p.write_text("@prim_func\ndef f(A: f32[4]:\n")
    r = tensorize("run", p)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith(f"{p}:2:")
    assert "Traceback" not in r.stderr


def test_missing_path_and_unknown_function(tmp_path, script):
    r = tensorize("run", tmp_path / "nope.py")
    assert r.returncode == 2 and "no such file" in r.stderr and "Traceback" not in r.stderr
    r = tensorize("run", script, "--func", "nothere")
    assert r.returncode == 2 and "no function named nothere" in r.stderr


def test_bad_option_is_usage_error(script):
    r = tensorize("run", script, "--threads", "0")
    assert r.returncode == 2 and "positive integer" in r.stderr and "Traceback" not in r.stderr


def test_emit_script_prints_parseable_text(script):
    from rewrite.script import parse, parse_file_lenient

    r = tensorize("run", script, "--func", "scale", "--emit", "script", "--target", "none")
    assert r.returncode == 0, r.stderr
    funcs, _ = parse_file_lenient(script)
    assert parse(r.stdout) == funcs["scale"]


def test_emit_llvm_names_the_kernel(script):
    r = tensorize("run", script, "--func", "acc", "--emit", "llvm", "--target", "none")
    assert r.returncode == 0, r.stderr
    assert "define" in r.stdout and "add" in r.stdout


def test_corpus_reports_every_function():
    from rewrite.script import parse_file

    expected = {(str(p.relative_to(ROOT)), n) for p in sorted((ROOT / "corpus").glob("*.py"))
                for n in parse_file(p)}
    r = tensorize("run", "corpus", "--json", "--target", "none")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert {(f["file"], f["name"]) for f in out["functions"]} == expected
    assert all(f["error"] is None for f in out["functions"])


def test_intrinsics_lists_the_host_library():
    r = tensorize("intrinsics", "--target", "all")
    assert r.returncode == 0, r.stderr
    for name in ("x86.fma.f32x8", "x86.mm.f32.6x16x1", "x86.dot.u8i8i32.16x4",
                 "arm.neon.sdot.i8i32.4x4", "nvidia.mma.f16f32.16x8x16"):
        assert name in r.stdout
    assert "c[i] += a[i] * b[i]" in r.stdout  # the semantics, printed as script
    r = tensorize("intrinsics", "--target", "bogus")
    assert r.returncode == 2 and "unknown target bogus" in r.stderr and "Traceback" not in r.stderr


def test_bad_intrinsics_options_are_bad_input(tmp_path, script):
    plugin = tmp_path / "plug.py"
    plugin.write_text("raise RuntimeError('boom')\n")
    r = tensorize("run", script, "--intrinsics-file", plugin)
    assert r.returncode == 2 and "cannot load intrinsics: boom" in r.stderr
    assert "Traceback" not in r.stderr
    r = tensorize("run", script, "--intrinsics", "nope.x1")
    assert r.returncode == 2 and "unknown intrinsic nope.x1" in r.stderr


def test_user_intrinsics_file_is_listed(tmp_path):
    plugin = tmp_path / "mine.py"
    plugin.write_text(
        "from intrinsics import intrinsic\n"
        "from rewrite.script import f32\n\n"
        "@intrinsic('my.dot.f32x4', isa=(), cost=1.0)\n"
        "def dot4(c: f32[1], a: f32[4], b: f32[4]):\n"
        "    for k in range(4):\n"
        "        c[0] += a[k] * b[k]\n")
    r = tensorize("intrinsics", "--intrinsics-file", plugin)
    assert r.returncode == 0, r.stderr
    assert "my.dot.f32x4" in r.stdout and "c[0] += a[k] * b[k]" in r.stdout


@pytest.mark.parametrize("argv, words", [
    (["run", "corpus/gemm.py", "--threads", "5000"], "at most 256 threads"),
    (["run", "corpus/gemm.py", "--strassen", "sideways"], "argument --strassen"),
    (["frob"], "invalid choice: 'frob'"),
])
def test_a_bad_option_is_one_line(argv, words, capsys):
    from rewrite.cli import main

    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0] and err[0].startswith("tensorize")


def test_rules_turns_families_off_by_name():
    golden = ROOT / "tests" / "golden" / "inline_cast.py"
    default = tensorize("run", golden, "--emit", "script")
    off = tensorize("run", golden, "--rules", "-inline", "--emit", "script")
    assert default.returncode == off.returncode == 0, default.stderr + off.stderr
    assert "Ai" not in default.stdout and "Ai" in off.stdout  # the widened temporary stays


def test_rules_refuses_an_unknown_family_and_a_family_turned_on():
    for value in ("-nosuch", "inline"):
        r = tensorize("run", ROOT / "corpus" / "gemm.py", "--rules", value)
        assert r.returncode == 2
        assert len(r.stderr.strip().splitlines()) == 1 and "--rules" in r.stderr


def test_verbose_says_what_each_e_graph_did(capsys):
    from rewrite.cli import main

    path = Path(__file__).parent / "golden" / "matmul_chain.py"
    assert main(["run", str(path), "-v", "--target", "x86-avx2"]) == 0
    out = capsys.readouterr().out
    (sat,) = [x for x in out.splitlines() if x.startswith("  saturation: ")]
    (prog,) = [x for x in out.splitlines() if x.startswith("  program e-graph (matmul): ")]
    for line in (sat, prog):
        assert re.search(r"\d+ iterations, \d+ e-nodes, saturated, \d+\.\d\d s$", line), line


def test_the_executable_runs_main_and_leaves_its_objects_to_the_system(script):
    # what the installed ``tensorize`` runs: main's status, then every object the command
    # made frozen out of the collection the interpreter would run as it shuts down
    probe = ("import gc, sys; from rewrite import cli; sys.argv[1:] = ['run', sys.argv[1], "
             "'--target', 'none']; status = cli.command(); print(status, gc.get_freeze_count())")
    done = subprocess.run([sys.executable, "-c", probe, str(script)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    status, frozen = done.stdout.split()[-2:]
    # the script's broken function makes main's status 2
    assert status == "2" and int(frozen) > 10_000, done.stdout + done.stderr
    entry = re.search(r'^tensorize = "([\w.:]+)"', (ROOT / "pyproject.toml").read_text(), re.M)
    assert entry and entry.group(1) == "rewrite.cli:command"
