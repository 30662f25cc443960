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
from rewrite import cli, runtime, saturate
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


@pytest.fixture
def worker(monkeypatch):
    """A fresh saturation worker, stopped afterwards; tests replace its command."""
    w = saturate.Worker()
    monkeypatch.setattr(saturate, "_WORKER", w)
    yield w
    w.stop()


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


def test_a_job_past_the_hard_time_limit_is_a_budget_stop(worker):
    slow = saturate.Job(job().bodies, job().patterns, saturate.Budget(hard_seconds=0.001))
    matches, report = saturate.saturate(slow)
    assert matches == [] and report.stop_reason == "killed: over 0.001 s"
    assert worker.pid is None
    # the next job gets a fresh worker and its matches
    matches, report = saturate.saturate(job())
    assert matches and report.stop_reason == "saturated"
