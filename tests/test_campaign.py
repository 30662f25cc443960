"""Campaigns on worker processes and on Ray (``rewrite.tools.campaign``): the same output as a
serial run, timings aside; a worker that dies or runs past its budget loses only its unit; the
disk cache shared by concurrent workers; fuzz failures reported with a command that replays
them."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rewrite import cli, jit
from rewrite.fuzz import properties
from rewrite.tools import campaign

ROOT = Path(__file__).parent.parent
SMALL_CORPUS = ["corpus/matvec.py", "corpus/tropical.py"]


def tensorize(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "rewrite.cli", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def without_seconds(report: dict) -> dict:
    """A JSON report with its timings taken out (they differ from run to run)."""
    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if k != "seconds"}
        if isinstance(x, list):
            return [strip(v) for v in x]
        return x
    return strip(report)


# ---------------------------------------------------------------------------
# the pool: order, lost units


def square_or_die(x: int) -> int:
    if x == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    return x * x


def square_or_hang(x: int) -> int:
    if x == 1:
        time.sleep(300)
    return x * x


def test_a_killed_worker_loses_its_unit_only():
    results = campaign.run(square_or_die, range(7), jobs=2)
    assert isinstance(results[2], campaign.Lost)
    assert "killed by SIGKILL" in results[2].reason
    assert [r for k, r in enumerate(results) if k != 2] == [0, 1, 9, 16, 25, 36]


def test_a_unit_past_its_budget_is_lost_and_the_rest_goes_on():
    t0 = time.monotonic()
    results = campaign.run(square_or_hang, range(4), jobs=2, budget=4.0)
    assert isinstance(results[1], campaign.Lost)
    assert "budget of 4 s" in results[1].reason
    assert [results[0], results[2], results[3]] == [0, 4, 9]
    assert time.monotonic() - t0 < 120  # the hung worker was stopped, not waited for


def square_or_raise(x: int) -> int:
    if x == 1:
        raise ValueError("no square for 1")
    return x * x


def test_the_pool_closes_once_its_workers_are_up_and_waits_for_no_other(monkeypatch):
    # closing waits for each worker started to come up (one still starting would find the
    # pool's locks gone); a unit that raised left its worker running, so no other is awaited
    monkeypatch.setattr(campaign, "STARTUP_SECONDS", 60.0)
    t0 = time.monotonic()
    results = campaign.run(square_or_raise, range(4), jobs=2)
    assert isinstance(results[1], campaign.Lost) and "no square for 1" in results[1].reason
    assert [results[0], results[2], results[3]] == [0, 4, 9]
    assert time.monotonic() - t0 < 40  # not the 60 s a worker that never comes up would cost


# ---------------------------------------------------------------------------
# the disk cache under concurrent writers


def fill_cache(k: int) -> list[str]:
    """Build or load the same twelve entries; every process starts with no key and no cache."""
    origins = []
    for n in range(12):
        def build(n=n):
            time.sleep(0.01)  # widen the window in which another process writes the same entry
            return f"object {n}".encode() * 1000, {"n": n}
        obj, meta, origin = jit.cached_object(f"{n:02x}" * 32, build)
        assert obj == f"object {n}".encode() * 1000 and meta == {"n": n}
        origins.append(origin)
    return origins


def load_cache(k: int) -> list[str]:
    def build():
        raise AssertionError("an entry was not on disk, or did not authenticate")
    return [jit.cached_object(f"{n:02x}" * 32, build)[2] for n in range(12)]


def test_the_disk_cache_is_safe_under_concurrent_writers(tmp_path, monkeypatch):
    """Entries are renamed into place whole, and the key is linked into place once: four
    processes writing the same entries at once leave twelve entries that authenticate, with
    one key, and no temporary file."""
    monkeypatch.setenv("TENSORIZE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    results = campaign.run(fill_cache, range(4), jobs=2)
    assert not any(isinstance(r, campaign.Lost) for r in results), results
    assert sorted(p.suffix for p in (tmp_path / "cache").iterdir()) == [".o"] * 12
    assert [p.name for p in (tmp_path / "config" / "tensorize").iterdir()] == ["cache.key"]
    # a fresh process finds every entry on disk, authenticated by the one key
    assert campaign.run(load_cache, [0, 1], jobs=2) == [["disk"] * 12] * 2


# ---------------------------------------------------------------------------
# tensorize run --jobs


def test_run_on_two_workers_prints_what_the_serial_run_prints():
    serial = tensorize("run", *SMALL_CORPUS, "--check", "--json", "--jobs", "1")
    parallel = tensorize("run", *SMALL_CORPUS, "--check", "--json", "--jobs", "2")
    assert serial.returncode == parallel.returncode == 0, parallel.stderr
    a, b = json.loads(serial.stdout), json.loads(parallel.stdout)
    assert len(a["functions"]) == 6
    assert all(f["check"]["ok"] for f in b["functions"])
    assert without_seconds(a) == without_seconds(b)


PLUGIN = '''
import os, signal, time
from intrinsics import intrinsic
from rewrite.emitter import Emitter, load_row, store_row
from rewrite.script import f32, i32


class {name}(Emitter):
    operands = ("c", "a")
    def load_acc(self, b, ops):
        {action}
        return load_row(b, ops["c"], [0], 0, 4)
    def step(self, b, ops, acc): return b.{op}(acc, load_row(b, ops["a"], [0], 0, 4))
    def store_acc(self, b, ops, acc): store_row(b, ops["c"], [0], 0, acc)


@intrinsic("{intrinsic}", isa=("avx2",), cost=1.0, emitter={name}())
def add4(c: {dtype}[4], a: {dtype}[4]):
    for i in range(4):
        c[i] += a[i]
'''


def plugin(**kw) -> str:
    return PLUGIN.format(**kw)


KILLER = plugin(name="Dies", action="os.kill(os.getpid(), signal.SIGKILL)", op="add",
                intrinsic="user.dies.add.i32x4", dtype="i32")
GOOD = plugin(name="Adds", action="pass", op="fadd", intrinsic="user.add.f32x4", dtype="f32")
WRONG = plugin(name="SubtractsInstead", action="pass", op="fsub", intrinsic="user.wrong.add.f32x4",
               dtype="f32")

ADDS = '''
@prim_func
def add_i32(C: i32[64], A: i32[64]):
    for i in range(64):
        C[i] += A[i]

@prim_func
def add_f32(C: f32[64], A: f32[64]):
    for i in range(64):
        C[i] += A[i]
'''


def test_a_worker_killed_on_one_function_loses_that_function_only(tmp_path):
    (tmp_path / "mine.py").write_text(KILLER + GOOD.split("\n", 4)[4])
    (tmp_path / "adds.py").write_text(ADDS)
    r = tensorize("run", "adds.py", "--intrinsics-file", "mine.py", "--json", "--check",
                  "--jobs", "2", cwd=tmp_path)
    assert r.returncode == 2
    lost, good = json.loads(r.stdout)["functions"]
    assert lost["name"] == "add_i32"
    assert lost["error"] == "adds.py:add_i32: lost: its worker died (killed by SIGKILL)"
    assert lost["error"] in r.stderr.splitlines()
    assert good["name"] == "add_f32" and good["error"] is None and good["check"]["ok"]
    assert [s["intrinsic"] for s in good["sites"]] == ["user.add.f32x4"]


def test_a_function_past_its_budget_is_that_functions_error(tmp_path):
    # the emitter sleeps far past the budget, so both units are stopped however fast the
    # machine is (a unit that merely compiles quickly can finish before the budget is noticed)
    (tmp_path / "mine.py").write_text(plugin(name="Sleeps", action="time.sleep(120)", op="fadd",
                                             intrinsic="user.slow.add.f32x4", dtype="f32"))
    (tmp_path / "adds.py").write_text(ADDS.replace("add_i32", "add_g").replace("i32", "f32"))
    r = tensorize("run", "adds.py", "--intrinsics-file", "mine.py", "--check", "--jobs", "2",
                  "--unit-timeout", "2", "--json", cwd=tmp_path)
    assert r.returncode == 2
    entries = json.loads(r.stdout)["functions"]
    assert [e["name"] for e in entries] == ["add_g", "add_f32"]
    for e in entries:
        assert e["error"] == (f"adds.py:{e['name']}: lost: ran past its budget of "
                              "2 s; its worker was stopped")


def test_ray_missing_is_one_line():
    code = ("import sys; sys.modules['ray'] = None\n"
            "from rewrite.cli import main; sys.exit(main(['fuzz', '--ray', 'auto']))")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2
    assert r.stderr == "tensorize fuzz: --ray needs Ray: pip install 'tensorize[cluster]'\n"
    assert r.stdout == ""


def test_an_unreachable_ray_address_is_one_line():
    r = tensorize("run", "corpus/scan.py", "--ray", "127.0.0.1:1")
    assert r.returncode == 2
    assert r.stderr.startswith("tensorize run: --ray 127.0.0.1:1: cannot reach a Ray cluster")
    assert len(r.stderr.splitlines()) == 1


# ---------------------------------------------------------------------------
# tensorize fuzz --jobs


def test_units_are_seeded_by_campaign_intrinsic_and_place_not_by_worker():
    assert properties.UNIT_EXAMPLES == 25
    units = properties.plan(["a", "b"], 60, seed=7)
    assert [(u.intrinsic, u.index, u.examples) for u in units] == [
        ("a", 0, 25), ("a", 1, 25), ("a", 2, 10), ("b", 0, 25), ("b", 1, 25), ("b", 2, 10)]
    assert len({u.seed for u in units}) == 6
    assert units == properties.plan(["a", "b"], 60, seed=7)
    assert [u.seed for u in properties.plan(["a"], 60, seed=8)] != [u.seed for u in units[:3]]
    assert units[4].replay() == "tensorize fuzz --intrinsic b --examples 60 --seed 7 --unit 1"


def test_fuzz_draws_the_same_programs_and_verdicts_whatever_the_jobs():
    args = ["fuzz", "--intrinsic", "x86.axpy.f32x8", "--examples", "30", "--seed", "3", "--json"]
    serial, parallel = tensorize(*args, "--jobs", "1"), tensorize(*args, "--jobs", "2")
    assert serial.returncode == parallel.returncode == 0, parallel.stdout + parallel.stderr
    a, b = json.loads(serial.stdout), json.loads(parallel.stdout)
    assert without_seconds(a) == without_seconds(b)
    (row,) = a["intrinsics"]
    assert row["examples"] == 30 == sum(row["kinds"].values())
    assert a["failures"] == [] and a["lost"] == []
    # the histograms name every transformation, drawn or not
    assert set(a["transformations"]) == set(properties.TRANSFORMATIONS)
    assert sum(a["transformations"].values()) > row["kinds"]["disguised"]
    assert sum(a["mutations"].values()) == row["kinds"]["near miss"]


def test_a_wrong_user_intrinsic_is_reported_with_a_command_that_replays_it(tmp_path):
    """An emitter that subtracts where its semantics add: each failing unit names the
    intrinsic, its seed, the shrunk program, and a command that fails the same way alone."""
    (tmp_path / "wrong.py").write_text(WRONG)
    r = tensorize("fuzz", "--intrinsics-file", "wrong.py", "--examples", "40", "--jobs", "2",
                  cwd=tmp_path)
    assert r.returncode == 1
    out = r.stdout.splitlines()
    assert out[-1].endswith(" examples, 1 intrinsics, 2 failures")  # each unit stops at its first
    failed = [k for k, line in enumerate(out) if line.startswith("FAILED ")]
    assert failed
    k = failed[0]
    assert out[k].startswith("FAILED soundness for user.wrong.add.f32x4 (")
    seed = int(out[k].rsplit("seed ", 1)[1])
    replay = next(line for line in out[k:] if line.startswith("replay: "))[len("replay: "):]
    unit = int(replay.rsplit(" ", 1)[1])
    assert seed == properties.unit_seed(0, "user.wrong.add.f32x4", unit)
    assert replay == ("tensorize fuzz --intrinsics-file wrong.py --intrinsic user.wrong.add.f32x4 "
                      f"--examples 40 --seed 0 --unit {unit}")
    program = out[out.index("@prim_func", k):out.index(next(l for l in out[k:] if l.startswith("replay: ")))]
    assert program[1].startswith("def disguised(") or program[1].startswith("def near_miss(")
    # the command, run alone: the same failure, the same minimal program
    words = shlex.split(replay)
    again = tensorize(*words[1:], cwd=tmp_path)
    assert again.returncode == 1
    lines = again.stdout.splitlines()
    k2 = next(i for i, l in enumerate(lines) if l.startswith("FAILED "))
    assert lines[k2] == out[k]
    assert lines[k2 + 3:k2 + 3 + len(program)] == program


def test_a_fuzz_unit_whose_worker_dies_is_reported_lost(tmp_path):
    (tmp_path / "mine.py").write_text(KILLER + GOOD.split("\n", 4)[4])
    r = tensorize("fuzz", "--intrinsics-file", "mine.py", "--examples", "5", "--jobs", "2",
                  "--json", cwd=tmp_path)
    assert r.returncode == 1
    report = json.loads(r.stdout)
    assert [(x["intrinsic"], x["unit"], x["reason"]) for x in report["lost"]] == [
        ("user.dies.add.i32x4", 0, "its worker died (killed by SIGKILL)")]
    assert report["lost"][0]["replay"].endswith("--intrinsic user.dies.add.i32x4 --examples 5 "
                                                "--seed 0 --unit 0")
    rows = {x["name"]: x for x in report["intrinsics"]}
    assert rows["user.add.f32x4"]["examples"] == 5 and rows["user.add.f32x4"]["failures"] == 0
    assert rows["user.dies.add.i32x4"]["lost_units"] == 1
    assert report["failures"] == []


# ---------------------------------------------------------------------------
# Ray: a local instance with this machine's two CPUs


# One local instance for both tests: run in parallel (pytest-xdist), they share one worker.
RAY_GROUP = pytest.mark.xdist_group("ray")


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray", reason="Ray is the optional extra 'cluster'")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


@RAY_GROUP
def test_a_fuzz_campaign_on_ray_reaches_the_serial_verdicts(local_ray, capsys):
    def report(execute) -> dict:
        args = cli.build_parser().parse_args(["fuzz", "--intrinsic", "x86.fma.f32x8",
                                              "--examples", "30", "--seed", "5", "--json"])
        assert properties.main(args, execute) == 0
        return without_seconds(json.loads(capsys.readouterr().out))

    serial = report(properties.serial)
    on_ray = report(lambda work, units: campaign.run(work, units, ray="auto"))
    assert serial == on_ray
    assert serial["examples"] == 30


@RAY_GROUP
def test_a_corpus_run_on_ray_is_the_serial_run(local_ray, capsys):
    def run(*extra) -> dict:
        assert cli.main(["run", *map(str, (ROOT / f for f in SMALL_CORPUS)), "--check", "--json",
                         *extra]) == 0
        return without_seconds(json.loads(capsys.readouterr().out))

    serial = run("--jobs", "1")
    assert run("--ray", "auto") == serial
    assert len(serial["functions"]) == 6


def test_bench_tensorizes_on_workers_and_times_every_function_in_order(tmp_path):
    out = tmp_path / "bench.json"
    r = tensorize("bench", "corpus/matvec.py", "corpus/tropical.py", "--runs", "1", "--jobs", "2",
                  "--json", out)
    assert r.returncode == 0, r.stderr
    results = json.loads(out.read_text())["results"]
    assert [x["name"] for x in results] == ["atax", "bicg", "mvt", "gesummv", "maxplus_matmul",
                                            "minplus_matmul"]
    assert all(x["runs"] >= 1 and x["median_s"] > 0 for x in results)


def test_a_worker_among_n_defaults_its_kernels_to_its_share_of_the_cores(monkeypatch):
    from rewrite import runtime

    monkeypatch.setattr(runtime, "_share", None)
    cores = runtime.default_threads()
    runtime.share_cores(2)
    assert runtime.default_threads() == max(1, cores // 2)
    runtime.share_cores(4 * cores)
    assert runtime.default_threads() == 1
