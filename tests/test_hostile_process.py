"""Process safety: what runs, what survives, what the exit status says.

- Nothing in the working directory is imported: the saturation worker starts isolated.
- A worker that fails is an error the user sees; a worker stopped by a budget is a stop reason.
- SIGINT / SIGTERM stop the command promptly, and the worker dies with it.
- A plugin that exits or raises anything is bad input (exit 2, one line naming the file);
  a plugin's Python emitter compiles; intrinsic names that would break the table are refused.
- The disk cache leaves no temporary files, and only loads entries this user's key signed.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import intrinsics
from intrinsics import Emitter, IntrinsicError
from rewrite import cli, jit, runtime, saturate
from rewrite.script import parse

ROOT = Path(__file__).resolve().parent.parent
LINUX = sys.platform.startswith("linux") and Path("/proc/self/stat").exists()


@pytest.fixture(autouse=True)
def private_dirs(tmp_path, monkeypatch):
    """A cache and a config folder (where the cache key lives) of the test's own."""
    monkeypatch.setenv("TENSORIZE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    runtime.clear_memory_cache()


def env(tmp_path: Path) -> dict:
    """The environment of a command run from another folder: this checkout's code, private
    cache and key."""
    return {**os.environ, "PYTHONPATH": str(ROOT), "TENSORIZE_CACHE_DIR": str(tmp_path / "cache"),
            "XDG_CONFIG_HOME": str(tmp_path / "config")}


def tensorize(tmp_path: Path, *args, cwd=None, timeout=300) -> subprocess.CompletedProcess:
    # -P: the command itself does not import from its working directory either
    return subprocess.run([sys.executable, "-P", "-m", "rewrite.cli", *map(str, args)],
                          cwd=cwd or tmp_path, env=env(tmp_path), capture_output=True, text=True,
                          timeout=timeout)


# ---------------------------------------------------------------------------
# the working directory is never imported


HIJACK = "open({marker!r}, 'w').write(__name__)\nraise ImportError('hijacked')\n"


def test_files_in_the_working_directory_are_not_imported(tmp_path):
    work = tmp_path / "work"
    (work / "rewrite").mkdir(parents=True)
    markers = {name: tmp_path / f"imported-{name}" for name in ("select", "egglog", "rewrite")}
    (work / "select.py").write_text(HIJACK.format(marker=str(markers["select"])))
    (work / "egglog.py").write_text(HIJACK.format(marker=str(markers["egglog"])))
    (work / "rewrite" / "__init__.py").write_text(HIJACK.format(marker=str(markers["rewrite"])))
    (work / "gemm.py").write_text((ROOT / "corpus" / "gemm.py").read_text())
    args = ("run", "gemm.py", "--func", "gemm_64", "--target", "x86-avx2", "--json")
    r = tensorize(tmp_path, *args, cwd=work)
    assert [m.name for m in markers.values() if m.exists()] == []
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    (entry,) = json.loads(r.stdout)["functions"]
    assert entry["error"] is None
    # the same coverage as a run from a clean folder
    (work / "clean").mkdir()
    (work / "clean" / "gemm.py").write_text((work / "gemm.py").read_text())
    clean = tensorize(tmp_path, *args, cwd=work / "clean")
    assert entry["coverage"] == json.loads(clean.stdout)["functions"][0]["coverage"]
    assert entry["coverage"]["fraction"] > 0.9


def test_worker_import_path_leaves_out_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", ["", str(tmp_path), "."] + sys.path)
    path = saturate.import_path()
    assert path[0] == str(ROOT)  # the rewrite package this process runs
    assert "" not in path and str(tmp_path) not in path


# ---------------------------------------------------------------------------
# a failing worker is an error; a budget stop is not

SCALE = """
@prim_func
def axpy(A: f32[64], B: f32[64], C: f32[64]):
    for i in range(64):
        C[i] += A[i] * B[i]
"""

BOOT_RAISING = ("import sys, json; sys.path[:] = json.loads(sys.argv[1]); "
                "from rewrite import saturate; saturate.run_job = lambda job: 1 / 0; "
                "saturate._serve(sys.argv[2:])")


def job() -> saturate.Job:
    from rewrite.match import Pattern

    desc = intrinsics.get("x86.fma.f32x8")
    body = parse(SCALE).body.body.value
    return saturate.Job((body,), (Pattern.of(desc),))


@pytest.mark.parametrize("command, words", [
    (lambda w, m: [sys.executable, "-I", "-c", "import no_such_module_for_the_worker"],
     ["exited with status 1", "No module named 'no_such_module_for_the_worker'"]),
    (lambda w, m: [str(ROOT / "no-such-python")], ["cannot start the saturation worker"]),
    (lambda w, m: [sys.executable, "-I", "-c", BOOT_RAISING, json.dumps(saturate.import_path()),
                   str(m), str(os.getpid())], ["saturation failed in the worker: ZeroDivisionError"]),
    (lambda w, m: [sys.executable, "-I", "-c", "import os; os.kill(os.getpid(), 11)"],
     ["killed by signal 11"]),
], ids=["import-error", "cannot-start", "raises", "crashes"])
def test_a_failing_worker_is_an_error(worker, monkeypatch, command, words):
    monkeypatch.setattr(saturate.Worker, "command", command)
    with pytest.raises(saturate.WorkerError) as info:
        saturate.saturate(job())
    for w in words:
        assert w in str(info.value)
    assert "\n" not in str(info.value)
    assert worker.pid is None  # nothing left running


def test_a_failing_worker_fails_the_function_on_the_command_line(worker, monkeypatch, tmp_path,
                                                                  capsys):
    monkeypatch.setattr(saturate.Worker, "command",
                        lambda w, m: [sys.executable, "-I", "-c", "import no_such_module_xyz"])
    script = tmp_path / "axpy.py"
    script.write_text(SCALE)
    status = cli.main(["run", str(script), "--json", "--target", "x86-avx2"])
    out, err = capsys.readouterr()
    assert status == 2
    (entry,) = json.loads(out)["functions"]
    assert "no_such_module_xyz" in entry["error"]
    assert entry["error"] in err.splitlines()
    assert "Traceback" not in err


def test_a_started_worker_imports_egglog_before_its_first_request(worker):
    saturate.prestart()
    pid = worker.pid
    assert pid is not None
    deadline = time.monotonic() + 60
    while "egglog" not in Path(f"/proc/{pid}/maps").read_text():
        assert time.monotonic() < deadline, "the worker never loaded egglog on its own"
        time.sleep(0.05)
    matches, report = saturate.saturate(job())  # served by that worker, not a new one
    assert matches and report.stop_reason == "saturated"
    assert worker.pid == pid


@pytest.mark.parametrize("target, starts", [("x86-avx2", True), ("none", False)])
def test_the_run_command_starts_its_worker_before_loading_and_uses_it(worker, monkeypatch,
                                                                       tmp_path, target, starts):
    from rewrite.tools import run

    events = []
    start, load, call = worker._start, run.load_intrinsics, worker._run
    monkeypatch.setattr(worker, "_start", lambda m: (events.append("start"), start(m)))
    monkeypatch.setattr(cli, "load_intrinsics", lambda a: (events.append("load"), load(a))[1])
    monkeypatch.setattr(worker, "_run", lambda job, b: (events.append("job"), call(job, b))[1])
    script = tmp_path / "axpy.py"
    script.write_text(SCALE)
    assert cli.main(["run", str(script), "--json", "--target", target]) == 0
    # one worker, started first, which then did the saturation
    assert events == (["start", "load", "job"] if starts else ["load"])


def test_grad_starts_the_worker_before_deriving_when_it_tensorizes(worker, monkeypatch, tmp_path):
    from rewrite import autodiff

    events = []
    start, derive, call = worker._start, autodiff.grad, worker._run
    monkeypatch.setattr(worker, "_start", lambda m: (events.append("start"), start(m)))
    monkeypatch.setattr(autodiff, "grad", lambda *a, **k: (events.append("grad"), derive(*a, **k))[1])
    monkeypatch.setattr(worker, "_run", lambda job, b: (events.append("job"), call(job, b))[1])
    script = tmp_path / "mm.py"
    script.write_text("""
@prim_func
def mm(A: f32[32, 32], B: f32[32, 32], C: f32[32, 32]):
    for i, j, k in grid(32, 32, 32):
        C[i, j] += A[i, k] * B[k, j]
""")
    assert cli.main(["grad", str(script), "--func", "mm", "--wrt", "A", "--json",
                     "--tensorize", "--target", "x86-avx2"]) == 0
    assert events[:2] == ["start", "grad"] and "job" in events and events.count("start") == 1
    events.clear()
    assert cli.main(["grad", str(script), "--func", "mm", "--wrt", "A", "--json"]) == 0
    assert events == ["grad"]  # nothing to tensorize: no worker


def test_a_job_past_the_hard_time_limit_is_a_budget_stop(worker):
    slow = saturate.Job(job().bodies, job().patterns, saturate.Budget(hard_seconds=0.001))
    matches, report = saturate.saturate(slow)
    assert matches == [] and report.stop_reason == "killed: over 0.001 s"
    assert worker.pid is None
    # the next job gets a fresh worker and its matches
    matches, report = saturate.saturate(job())
    assert matches and report.stop_reason == "saturated"


# ---------------------------------------------------------------------------
# signals: a prompt, clean exit, and no worker left behind


def heavy_script(tmp_path: Path) -> Path:
    """One nest whose saturation runs for seconds (a 12-term sum under commutativity and
    associativity), so a signal arrives while the worker is busy."""
    terms = " + ".join(f"A[i, {k}] * B[{k}, j]" for k in range(12))
    path = tmp_path / "heavy.py"
    path.write_text(f"@prim_func\ndef heavy(A: f32[16, 12], B: f32[12, 16], C: f32[16, 16]):\n"
                    f"    for i, j in grid(16, 16):\n        C[i, j] += {terms}\n")
    return path


def children(pid: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2:].split()[1]) == pid:
                out.append(int(d))
    return out


def running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"  # a zombie has released its memory


def start_and_wait_for_worker(tmp_path: Path) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, "-P", "-m", "rewrite.cli", "run", "--target", "x86-avx2",
                             str(heavy_script(tmp_path))], cwd=tmp_path, env=env(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not children(proc.pid):
        assert proc.poll() is None and time.monotonic() < deadline, "no worker started"
        time.sleep(0.02)
    (worker_pid,) = children(proc.pid)
    time.sleep(0.5)  # inside the saturation
    assert running(worker_pid)
    return proc, worker_pid


def gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while running(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.skipif(not LINUX, reason="reads /proc")
@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)],
                         ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_the_command_and_its_worker(tmp_path, signum, status):
    proc, worker_pid = start_and_wait_for_worker(tmp_path)
    t0 = time.monotonic()
    proc.send_signal(signum)
    try:
        _, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert time.monotonic() - t0 < 5
    assert proc.returncode == status
    assert err.strip().splitlines() == ["interrupted"]
    assert not running(worker_pid)  # killed and waited for by the command itself


@pytest.mark.skipif(not LINUX, reason="the kernel's parent-death signal is Linux's")
def test_the_worker_dies_with_a_killed_parent(tmp_path):
    proc, worker_pid = start_and_wait_for_worker(tmp_path)
    proc.kill()
    proc.communicate(timeout=10)
    assert gone_within(worker_pid, 3)


# ---------------------------------------------------------------------------
# plugins: whatever they raise is bad input, one located line

VMUL = """
@prim_func
def vmul(C: f32[24], A: f32[24], B: f32[24]):
    for i in range(24):
        C[i] += A[i] * B[i]
"""


@pytest.mark.parametrize("body, words", [
    ("import sys\nsys.exit(0)\n", [":2:", "sys.exit(0)"]),
    ("import sys\nsys.exit(3)\n", [":2:", "sys.exit(3)"]),
    ("raise SystemExit\n", [":1:", "sys.exit(None)"]),
    ("raise KeyboardInterrupt\n", [":1:", "KeyboardInterrupt"]),
    ("x = 1\nraise RuntimeError('boom')\n", [":2:", "cannot load intrinsics: boom (RuntimeError)"]),
    ("import no_such_module_in_a_plugin\n", [":1:", "no_such_module_in_a_plugin"]),
    ("x = 1\ndef f(:\n", [":2:7: Python syntax error"]),
], ids=["exit0", "exit3", "SystemExit", "KeyboardInterrupt", "raises", "import", "syntax"])
def test_a_plugin_that_exits_or_raises_is_bad_input(tmp_path, body, words):
    plugin = tmp_path / "plugin.py"
    plugin.write_text(body)
    script = tmp_path / "vmul.py"
    script.write_text(VMUL)
    r = tensorize(tmp_path, "run", script, "--intrinsics-file", plugin)
    assert r.returncode == 2
    assert r.stdout == ""
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith(f"{plugin}:")
    for w in words:
        assert w in line
    assert line.count("cannot load intrinsics") <= 1


def test_a_plugin_failure_leaves_no_module_behind(tmp_path):
    plugin = tmp_path / "half.py"
    plugin.write_text("import sys\nsys.exit(0)\n")
    before = set(sys.modules)
    with pytest.raises(IntrinsicError):
        intrinsics.load_file(plugin)
    assert set(sys.modules) == before


PYTHON_EMITTER = """
from intrinsics import Emitter, intrinsic
from rewrite.emitter import load_row, store_row
from rewrite.script import f32


class PlainFma(Emitter):
    operands = ("c", "a", "b")

    def load_acc(self, b, ops):
        return load_row(b, ops["c"], (0,), 0, 8)

    def step(self, b, ops, acc):
        return b.fadd(acc, b.fmul(load_row(b, ops["a"], (0,), 0, 8),
                                  load_row(b, ops["b"], (0,), 0, 8)))

    def store_acc(self, b, ops, acc):
        store_row(b, ops["c"], (0,), 0, acc)


@intrinsic("user.plugin.fma.f32x8", emitter=PlainFma())
def fma(c: f32[8], a: f32[8], b: f32[8]):
    for i in range(8):
        c[i] += a[i] * b[i]
"""


def test_a_plugin_with_a_python_emitter_compiles(tmp_path):
    plugin = tmp_path / "emitter_plugin.py"
    plugin.write_text(PYTHON_EMITTER)
    script = tmp_path / "vmul.py"
    script.write_text(VMUL)
    for _ in range(2):  # compiled, then from the disk cache
        r = tensorize(tmp_path, "run", script, "--intrinsics-file", plugin,
                      "--intrinsics", "user.plugin.fma.f32x8", "--check", "--json")
        assert r.returncode == 0, r.stderr
        (entry,) = json.loads(r.stdout)["functions"]
        assert entry["error"] is None and entry["check"]["ok"]
        assert [s["intrinsic"] for s in entry["sites"]] == ["user.plugin.fma.f32x8"]
        assert entry["coverage"]["fraction"] == 1.0


def test_an_emitter_without_source_compiles_without_the_disk_cache():
    from rewrite.emitter import load_row, store_row

    class Add(Emitter):
        operands = ("c", "a")

        def load_acc(self, b, ops):
            return load_row(b, ops["c"], (0,), 0, 8)

        def step(self, b, ops, acc):
            return b.fadd(acc, load_row(b, ops["a"], (0,), 0, 8))

        def store_acc(self, b, ops, acc):
            store_row(b, ops["c"], (0,), 0, acc)

    Add.__module__ = "not_a_module"  # as a class made at run time: inspect finds no source
    desc = intrinsics.register("user.nosource.add.f32x8", """
@prim_func
def add(c: f32[8], a: f32[8]):
    for i in range(8):
        c[i] += a[i]
""", emitter=Add())
    try:
        from rewrite.pipeline import tensorize as run_tensorize

        func = parse("""
@prim_func
def add16(C: f32[16], A: f32[16]):
    for i in range(16):
        C[i] += A[i]
""")
        chosen = run_tensorize(func, [desc]).func
        assert "user.nosource.add.f32x8" in chosen.script()
        first = runtime.compile(chosen, threads=1)
        runtime.clear_memory_cache()
        second = runtime.compile(chosen, threads=1)
        assert (first.source, second.source) == ("compiled", "compiled")
        c, a = np.ones(16, np.float32), np.arange(16, dtype=np.float32)
        second(C=c, A=a)
        np.testing.assert_array_equal(c, 1 + np.arange(16))
    finally:
        intrinsics.unregister("user.nosource.add.f32x8")


# ---------------------------------------------------------------------------
# intrinsic names

BUILT_IN = ["x86.fma.f32x8", "x86.axpy.f32x8", "x86.mm.f32.6x16x1", "x86.dot.u8i8i32.16x4",
            "x86.avx512vnni.dot.u8i8i32.16x4", "arm.neon.sdot.i8i32.4x4",
            "nvidia.mma.f16f32.16x8x16"]


def test_built_in_names_are_valid_names():
    for name in BUILT_IN:
        assert intrinsics.base.NAME.fullmatch(name), name
        assert intrinsics.get(name).name == name


@pytest.mark.parametrize("name", ['bad"name', "two\nlines", "x86.fma\n", "with space", "",
                                  ".lead", "trail.", "a..b", "9lives", "x86.f\u00e9"])
def test_names_that_break_the_table_are_refused(name):
    before = {d.name for d in intrinsics.all()}
    with pytest.raises(IntrinsicError) as info:
        intrinsics.register(name, VMUL.replace("vmul(C: f32[24], A: f32[24], B: f32[24])",
                                               "v(C: f32[8], A: f32[8], B: f32[8])")
                            .replace("range(24)", "range(8)"))
    assert "\n" not in str(info.value) and "not a dotted name" in str(info.value)
    assert {d.name for d in intrinsics.all()} == before


# ---------------------------------------------------------------------------
# the disk cache

MATMUL = """
@prim_func
def mm(A: f32[8, 8], B: f32[8, 8], C: f32[8, 8]):
    for i, j in grid(8, 8):
        C[i, j] = 0.0
        for k in range(8):
            C[i, j] += A[i, k] * B[k, j]
"""


def cache_files(tmp_path: Path, pattern: str) -> list[Path]:
    return sorted((tmp_path / "cache").glob(pattern))


def test_a_compile_leaves_no_temporary_file(tmp_path, monkeypatch):
    runtime.compile(parse(MATMUL), threads=1)
    assert cache_files(tmp_path, "*.o") and cache_files(tmp_path, "*.tmp") == []

    def fail(src, dst):
        raise OSError("no rename today")

    runtime.clear_memory_cache()
    monkeypatch.setattr(jit.os, "replace", fail)
    other = parse(MATMUL.replace("mm(", "mm2(").replace("0.0", "1.0"))
    assert runtime.compile(other, threads=1).source == "compiled"  # the write failed quietly
    assert cache_files(tmp_path, "*.tmp") == []

    def interrupt(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(jit.os, "replace", interrupt)
    with pytest.raises(KeyboardInterrupt):
        runtime.compile(parse(MATMUL.replace("0.0", "2.0")), threads=1)
    assert cache_files(tmp_path, "*.tmp") == []


def test_stale_temporary_files_are_swept(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    folder.mkdir()
    stale, fresh = folder / "tmpabc.tmp", folder / "tmpdef.tmp"
    stale.write_bytes(b"")
    fresh.write_bytes(b"")
    old = time.time() - 2 * jit._STALE_SECONDS
    os.utime(stale, (old, old))
    monkeypatch.setattr(jit, "_swept", set())
    runtime.compile(parse(MATMUL), threads=1)
    assert not stale.exists() and fresh.exists()  # a fresh one may be another process's write


# Compile, and report where the code came from and one result.
COMPILE = f"""
import json, numpy as np
from rewrite import runtime
from rewrite.script import parse
k = runtime.compile(parse('''{MATMUL}'''), threads=1)
a = np.ones((8, 8), np.float32); c = np.zeros((8, 8), np.float32)
k(a, a, c)
print(json.dumps([k.source, float(c[0, 0])]))
"""


def compile_in_a_new_process(tmp_path: Path) -> list:
    r = subprocess.run([sys.executable, "-P", "-c", COMPILE], cwd=tmp_path, env=env(tmp_path),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr  # a crash would be -11
    return json.loads(r.stdout)


def test_a_consistent_but_forged_cache_entry_is_compiled_again(tmp_path):
    assert compile_in_a_new_process(tmp_path) == ["compiled", 8.0]
    assert compile_in_a_new_process(tmp_path) == ["disk", 8.0]
    for entry in cache_files(tmp_path, "*.o"):
        # a bad object file under a header that checks: the digest of the rest, or any
        # MAC under a key that is not this user's
        data = entry.read_bytes()
        header, _, obj = data[32:].partition(b"\n")
        payload = header + b"\n" + obj[:64] + b"\xff" * (len(obj) - 64)
        entry.write_bytes(hashlib.sha256(payload).digest() + payload)
    assert compile_in_a_new_process(tmp_path) == ["compiled", 8.0]
    assert compile_in_a_new_process(tmp_path) == ["disk", 8.0]  # rewritten, signed


def test_the_cache_key_is_private_and_outside_the_cache(tmp_path):
    runtime.compile(parse(MATMUL), threads=1)
    key = jit.secret_file()
    assert key.is_file() and (tmp_path / "cache") not in key.parents
    assert key.stat().st_mode & 0o777 == 0o600
    assert len(key.read_bytes()) == 32
    assert list(key.parent.glob("*.tmp")) == []


def test_a_key_others_can_read_is_not_used(tmp_path, monkeypatch):
    key = jit.secret_file()
    key.parent.mkdir(parents=True)
    key.write_bytes(os.urandom(32))
    key.chmod(0o644)
    monkeypatch.setattr(jit, "_secrets", {})
    runtime.compile(parse(MATMUL), threads=1)
    runtime.clear_memory_cache()
    assert runtime.compile(parse(MATMUL), threads=1).source == "compiled"
    assert cache_files(tmp_path, "*.o") == []


# ---------------------------------------------------------------------------
# a signal that arrives while native code runs

SLOW_LLVM = """
import pathlib
import rewrite.codegen as codegen

codegen.MAX_NARROWED = 100  # LLVM's loop passes then take minutes on the nest below
_optimize = codegen.optimize


def optimize(module):
    pathlib.Path({marker!r}).write_text("optimizing")
    return _optimize(module)


codegen.optimize = optimize
"""


def deep_triangles(n: int = 30) -> str:
    lines = ["@prim_func", "def deep(X: f32[64]):", "    for v0 in range(64):"]
    for k in range(1, n):
        lines.append("    " * (k + 1) + f"for v{k} in range(v{k - 1}, 64):")
    lines.append("    " * (n + 1) + f"X[v{n - 1} - v0] += 1.0")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)],
                         ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_the_command_inside_native_code(tmp_path, signum, status):
    marker = tmp_path / "optimizing"
    (tmp_path / "slow.py").write_text(SLOW_LLVM.format(marker=str(marker)))
    (tmp_path / "deep.py").write_text(deep_triangles())
    proc = subprocess.Popen([sys.executable, "-P", "-m", "rewrite.cli", "run", "deep.py", "--jobs", "1",
                             "--intrinsics-file", "slow.py"], cwd=tmp_path, env=env(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        time.sleep(0.5)  # inside LLVM's optimiser, which Python's handlers cannot interrupt
        t0 = time.monotonic()
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == status
    assert err.strip().splitlines() == ["interrupted (stopped inside native code)"]
    assert time.monotonic() - t0 < cli.STOP_GRACE_SECONDS + 10
