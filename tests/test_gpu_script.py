"""The lent-GPU path: scripts/gpu_measure.py (its smoke run, plans, kills, deaths, relaunches, resumes)
and around it the carried wheels, the return limits, provenance from a source tree. Nothing here downloads
or needs a GPU; workers that hang or die are stand-ins, so only the smoke and the relaunch run real ones."""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from importlib.metadata import PackageNotFoundError, requires
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import orca_analysis
from orca_analysis.measure import MEASUREMENTS
from orca_analysis.results import records
from orca_analysis.results.records import columns

REPO = Path(__file__).resolve().parents[1]
# Runtime dependencies of orca_analysis (pyproject.toml) that the device's python3 lacks.
NOT_ON_DEVICE = ("x-transformers", "fvcore")
DEVICE_ENV = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
              "platform_system": "Linux", "extra": ""}  # fmt: skip


def _script(name: str = "device_run"):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _closure(names: tuple[str, ...], stop: set[str]) -> set[str]:
    """Every distribution `names` need at run time on the device (by the installed metadata), short of `stop`."""
    seen: set[str] = set()
    todo = [canonicalize_name(n) for n in names]
    while todo:
        name = todo.pop()
        if name in seen or name in stop:
            continue
        seen.add(name)
        try:
            reqs = [Requirement(r) for r in requires(name) or []]
        except PackageNotFoundError:
            continue
        todo += [canonicalize_name(r.name) for r in reqs if r.marker is None or r.marker.evaluate(DEVICE_ENV)]
    return seen


def test_device_wheels_are_the_pins_of_what_the_device_lacks():
    out = subprocess.run(
        ["bash", "scripts/device_wheels.sh", "--list"], cwd=REPO, check=True, capture_output=True, text=True
    )
    specs = out.stdout.split()
    pins = {line.strip() for line in (REPO / "constraints.txt").read_text().splitlines()}
    assert specs and all(s in pins for s in specs)  # the tested versions, read from constraints.txt
    listed = {canonicalize_name(s.split("==")[0]) for s in specs}
    on_device = {canonicalize_name(n) for n in (*_script().PRESENT, "torch")}
    assert _closure(NOT_ON_DEVICE, on_device) <= listed


def test_finish_merges_parts_caps_the_log_and_fits_the_return_limits(tmp_path, monkeypatch, capsys):
    script = _script()
    monkeypatch.setattr(script, "LOG_CAP", 100)
    out = tmp_path / "orca"
    (out / "parts").mkdir(parents=True)
    header = ["study", "variant_id", "measurement", "status", "error", "device_name"]
    for group, statuses in {"speed": ["ok", "ok", "error"], "memory": ["ok", "skipped"]}.items():
        with (out / "parts" / f"{group}.csv").open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(header)
            w.writerows(["orca", "base", group, s, "" if s == "ok" else "why", "GPU"] for s in statuses)
            fh.write("orca,base,memory,o")  # a line the kill cut off
    with (out / "parts" / "memory.plan.csv").open("w", newline="") as fh:  # the driver did not settle it
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(["orca", v, "memory", "skipped", "not reached", ""] for v in ("base", "dim=32"))
    (out / "log.txt").write_text("x" * 1000 + "the end\n")
    (out / "run.json").write_text(json.dumps({"groups": [{"group": "speed", "exit": 0, "seconds": 1.0,
                                                          "measurements": ["speed"]}]}))  # fmt: skip
    assert script.finish(out) == 0  # the driver was killed: no results.csv, parts/ only
    assert sorted(p.name for p in out.iterdir()) == ["log.txt", "results.csv", "run.json"]
    rows = _csv(out / "results.csv")  # the plan's item without a row got one, the plan itself is no part
    assert len(rows) == 6 and [r["variant_id"] for r in rows if r["measurement"] == "memory"][-1] == "dim=32"
    assert (out / "log.txt").stat().st_size < 200 and (out / "log.txt").read_text().endswith("the end\n")
    text = capsys.readouterr().out
    assert "merged here from 2 parts" in text and "speed: 1x error: why" in text
    assert re.search(r"^speed\s+3\s+2\s+1\s+0$", text, re.M)  # rows, ok, error, skipped
    assert re.search(r"^all\s+6\s+3\s+1\s+2$", text, re.M)


def test_provenance_from_a_source_tree(monkeypatch):
    """On the device the package is on PYTHONPATH, not installed, and the tree has no .git."""

    def not_installed(name: str) -> str:
        raise PackageNotFoundError(name)

    monkeypatch.setattr(records, "version", not_installed)
    assert records._pkg("orca-analysis") == orca_analysis.__version__
    assert records._pkg("x-transformers") == "not installed"
    monkeypatch.setenv("ORCA_GIT_COMMIT", "abc1234")
    no_git = subprocess.CompletedProcess([], 128, "", "fatal: not a git repository")
    monkeypatch.setattr(records.subprocess, "run", lambda *a, **k: no_git)
    records.git_commit.cache_clear()
    try:
        assert records.git_commit() == "abc1234"
    finally:
        records.git_commit.cache_clear()


def test_device_run_names_the_wheel_script_when_wheels_are_missing(tmp_path):
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "device_run.sh").write_text((REPO / "scripts" / "device_run.sh").read_text())
    out = subprocess.run(
        ["bash", "scripts/device_run.sh", str(tmp_path / "out")], cwd=tmp_path, capture_output=True, text=True
    )
    assert out.returncode == 1 and "scripts/device_wheels.sh" in out.stderr


# ---- scripts/gpu_measure.py ---------------------------------------------------------------------

# A stand-in worker: plans items a, b, c; measures a; then in b hangs past its deadline or segfaults.
# Started again (--resume), it measures what the part lacks.
STAND_IN = """
import csv, os, signal, sys, time
from pathlib import Path
parts, group = Path(sys.argv[1]) / "parts", sys.argv[sys.argv.index("--worker") + 1]
header = ["study", "variant_id", "measurement", "status", "error"]
def write(path, items, status, mode="w"):
    with path.open(mode, newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header) if mode == "w" else None
        w.writerows(["tiny", v, "fake", status, ""] for v in items)
write(parts / f"{group}.plan.csv", "abc", "skipped")
if "--resume" in sys.argv:
    done = {r["variant_id"] for r in csv.DictReader((parts / f"{group}.csv").open())}
    write(parts / f"{group}.csv", [v for v in "abc" if v not in done], "ok", "a")
    sys.exit(0)
write(parts / f"{group}.csv", "a", "ok")
if os.environ["STAND_IN"] == "hang":
    time.sleep(60)
os.kill(os.getpid(), signal.SIGSEGV)
"""


def _drive_stand_in(tmp_path, monkeypatch, mode: str) -> tuple[int, list[dict[str, str]], dict]:
    script = _script("gpu_measure")
    (tmp_path / "worker.py").write_text(STAND_IN)
    monkeypatch.setattr(script, "WORKER", [sys.executable, str(tmp_path / "worker.py")])
    monkeypatch.setattr(script, "GRACE_S", 1)
    monkeypatch.setenv("STAND_IN", mode)
    out = tmp_path / "gpu"
    rc = script.main([str(out), "--smoke", "--budget-s", "1"])
    assert sorted(p.name for p in (out / "parts").iterdir()) == ["all.csv"]  # the plan is settled, gone
    return rc, _csv(out / "results.csv"), json.loads((out / "run.json").read_text())["groups"][0]


def test_gpu_script_killed_worker_leaves_an_error_row_and_skips(tmp_path, monkeypatch):
    rc, rows, group = _drive_stand_in(tmp_path, monkeypatch, "hang")
    assert rc == 1 and [(r["variant_id"], r["status"]) for r in rows] == [
        ("a", "ok"),
        ("b", "error"),
        ("c", "skipped"),
    ]
    assert rows[1]["error"] == "worker killed past its deadline while measuring this"
    assert rows[2]["error"] == "not reached: the worker ended before it"
    assert group["exit"] == "killed: past its deadline" and len(group["launches"]) == 1
    assert group["unfinished"] == 2 and group["seconds"] < 10


def test_gpu_script_dead_worker_is_relaunched_after_its_item(tmp_path, monkeypatch):
    rc, rows, group = _drive_stand_in(tmp_path, monkeypatch, "segfault")
    assert [(r["variant_id"], r["status"]) for r in rows] == [("a", "ok"), ("b", "error"), ("c", "ok")]
    assert rows[1]["error"] == "worker died (exit -11, SIGSEGV) while measuring this"
    assert rc == 1 and [launch["exit"] for launch in group["launches"]] == [-11, 0] and group["exit"] == 0


def test_gpu_script_lost_cuda_context_ends_the_worker_and_a_fresh_one_resumes(tmp_path, tiny_study_path):
    """Real workers: params loses the CUDA context; the relaunched worker measures flops, not params again."""
    (tmp_path / "worker.py").write_text(f"""
import dataclasses, runpy, sys
from orca_analysis.measure import MEASUREMENTS
def lose_context(variant, study):
    raise RuntimeError("CUDA error: an illegal memory access was encountered\\nCompile with TORCH_USE_CUDA_DSA")
MEASUREMENTS["params"] = dataclasses.replace(MEASUREMENTS["params"], fn=lose_context)
sys.argv[0] = {str(REPO / "scripts" / "gpu_measure.py")!r}
runpy.run_path(sys.argv[0], run_name="__main__")
""")
    script = _script("gpu_measure")
    script.WORKER = [sys.executable, str(tmp_path / "worker.py")]
    out = tmp_path / "gpu"
    argv = [str(out), "--smoke", "--study", str(tiny_study_path), "--only", "params,flops"]
    assert script.main([*argv, "--budget-s", "300"]) == 1  # a launch failed
    rows = _csv(out / "results.csv")
    assert [r["error"] for r in rows if r["measurement"] == "params"] == [
        "RuntimeError: CUDA error: an illegal memory access was encountered"
    ]
    flops = [r for r in rows if r["measurement"] == "flops"]
    assert flops and all(r["status"] == "ok" for r in flops)
    group = json.loads((out / "run.json").read_text())["groups"][0]
    assert [launch["exit"] for launch in group["launches"]] == [3, 0] and group["unfinished"] == 0
    assert json.loads((out / "env.json").read_text())["device"] == "cpu"


def test_gpu_script_worker_plans_then_resumes_without_measuring_again(tmp_path, tiny_study_path, monkeypatch):
    """In process: the plan's placeholders, exit 3 on a lost CUDA context, a resume after it, $ORCA_DEADLINE."""
    script = _script("gpu_measure")
    monkeypatch.setenv("ORCA_DEADLINE", "")  # the worker sets it; restored after the test
    params, calls = MEASUREMENTS["params"], []

    def measured(variant, study):
        calls.append(variant.variant_id)
        if variant.variant_id == "dim=32" and len(calls) == 2:
            raise RuntimeError("CUDA error: device-side assert triggered")
        return params.fn(variant, study)

    monkeypatch.setitem(MEASUREMENTS, "params", dataclasses.replace(params, fn=measured))
    (tmp_path / "parts").mkdir()
    deadline = time.time() + 600
    argv = [str(tmp_path), "--study", str(tiny_study_path), "--worker", "all", "--only", "params"]
    argv += ["--deadline", str(deadline)]
    assert script.main(argv) == 3 and calls == ["base", "dim=32"]
    header = columns(["dim", "depth"])
    plan = tmp_path / "parts" / "all.plan.csv"
    assert plan.read_text().splitlines()[0].split(",") == header
    assert [(r["variant_id"], r["measurement"], r["status"]) for r in _csv(plan)] == [
        (v, "params", "skipped") for v in ("base", "dim=32", "depth=1", "depth=3")
    ]
    part = tmp_path / "parts" / "all.csv"
    with part.open("a") as fh:
        fh.write("tiny,depth=1,64,1")  # a line cut off by a kill: dropped, depth=1 measured
    assert script.main([*argv, "--resume"]) == 0 and calls == ["base", "dim=32", "depth=1", "depth=3"]
    assert part.read_text().splitlines()[0].split(",") == header  # one header, the part was appended to
    rows = _csv(part)
    assert [r["status"] for r in rows if r["variant_id"] == "dim=32"] == ["error"]
    assert {r["variant_id"] for r in rows if r["status"] == "ok"} == {"base", "depth=1", "depth=3"}
    assert all(r["study"] == "tiny" for r in rows) and rows[-1]["git_commit"]
    assert float(os.environ["ORCA_DEADLINE"]) == round(deadline, 1)


def test_gpu_script_worker_past_its_deadline_records_skips(tmp_path, tiny_study_path, monkeypatch):
    script = _script("gpu_measure")
    monkeypatch.setenv("ORCA_DEADLINE", "")  # the worker sets it; restored after the test
    (tmp_path / "parts").mkdir()
    argv = [str(tmp_path), "--study", str(tiny_study_path), "--worker", "speed", "--deadline", "0"]
    assert script.main(argv) == 0
    rows = _csv(tmp_path / "parts" / "speed.csv")
    assert len(rows) == 4  # the tiny study's 4 variants, none started
    assert {(r["status"], r["error"]) for r in rows} == {("skipped", "time budget of the GPU run exhausted")}
    assert "memory" in script.GROUPS["memory"]  # run when orca_analysis.measure.memory exists


def test_gpu_script_smoke_writes_tidy_results(tmp_path, tiny_study_path):
    out = tmp_path / "gpu"
    cmd = [
        "bash",
        "scripts/gpu_measure.sh",
        str(out),
        "--smoke",
        "--study",
        str(tiny_study_path),
        "--only",
        "speed,kernels,attention_speed",
    ]
    subprocess.run(cmd, cwd=REPO, check=True, capture_output=True, timeout=120)
    with (out / "results.csv").open() as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
    assert reader.fieldnames == columns(["dim", "depth"])
    assert {r["measurement"] for r in rows} == {"speed", "kernels", "attention_speed"}
    assert {r["variant_id"] for r in rows} == {"base"} and all(r["git_commit"] and r["date"] for r in rows)
    env = json.loads((out / "env.json").read_text())
    assert env["device"] == "cpu" and env["sdpa_backends"]["flash"] == "FLASH_ATTENTION"
    run = json.loads((out / "run.json").read_text())
    assert [g["exit"] for g in run["groups"]] == [0] and run["rows"] == len(rows)
    assert [len(g["launches"]) for g in run["groups"]] == [1] and not list(out.glob("parts/*.plan.csv"))
