"""The lent-GPU path: scripts/gpu_measure.py (its smoke run, plans, kills, deaths, relaunches, resumes)
and around it the carried wheels, the return limits, provenance from a source tree. Nothing here downloads
or needs a GPU; workers that hang or die are stand-ins, so only the smoke and the relaunch run real ones."""

from __future__ import annotations

import csv
import importlib.util
import json
import re
import subprocess
from importlib.metadata import PackageNotFoundError, requires
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import orca_analysis
from orca_analysis.results import records
from orca_analysis.results.records import columns

REPO = Path(__file__).resolve().parents[1]
# Runtime dependencies of orca_analysis (pyproject.toml) that the device's python3 lacks.
NOT_ON_DEVICE = ("x-transformers", "fvcore")
DEVICE_ENV = {
    "python_version": "3.12",
    "python_full_version": "3.12.3",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "extra": "",
}


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


def test_finish_caps_the_log_and_fits_the_return_limits(tmp_path, monkeypatch, capsys):
    script = _script()
    monkeypatch.setattr(script, "LOG_CAP", 100)
    out = tmp_path / "orca"
    out.mkdir()
    header = ["study", "variant_id", "measurement", "status", "note", "device_name"]
    with (out / "results.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        for group, statuses in {"speed": ["ok", "ok", "error"], "memory": ["ok", "skipped"]}.items():
            w.writerows(["orca", "base", group, s, "" if s == "ok" else "why", "GPU"] for s in statuses)
    (out / "log.txt").write_text("x" * 1000 + "the end\n")
    (out / "run.json").write_text(
        json.dumps(
            {
                "groups": [
                    {"group": "speed", "measurements": ["speed"], "launches": [{"exit": 0, "seconds": 1.0}]}
                ]
            }
        )
    )
    assert script.finish(out) == 0
    assert sorted(p.name for p in out.iterdir()) == ["log.txt", "results.csv", "run.json"]
    assert (out / "log.txt").stat().st_size < 200 and (out / "log.txt").read_text().endswith("the end\n")
    text = capsys.readouterr().out
    assert "speed: 1x error: why" in text and re.search(r"^group speed\s+exits 0", text, re.M)
    assert re.search(r"^speed\s+3\s+2\s+1\s+0$", text, re.M)  # rows, ok, error, skipped
    assert re.search(r"^all\s+5\s+3\s+1\s+1$", text, re.M)


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


# ---- scripts/gpu_measure.py (the launcher itself is tested in test_budgeted.py) ------------------


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
    subprocess.run(cmd, cwd=REPO, check=True, capture_output=True, timeout=300)
    with (out / "results.csv").open() as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
    assert reader.fieldnames == [*columns(["dim", "depth"]), "variant_key", "env_id"]  # what `export` writes
    assert {r["measurement"] for r in rows} == {"speed", "kernels", "attention_speed"}
    assert {r["variant_id"] for r in rows} == {"base"} and all(r["git_commit"] and r["date"] for r in rows)
    env = json.loads((out / "env.json").read_text())
    assert env["device"] == "cpu" and env["sdpa_backends"]["flash"] == "FLASH_ATTENTION"
    run = json.loads((out / "run.json").read_text())
    assert [g["group"] for g in run["groups"]] == ["attention", "speed"]  # the registry's GPU plan, in order
    assert all([launch["exit"] for launch in g["launches"]] == [0] for g in run["groups"])
    assert run["rows"] == len(rows) and sorted(p.name for p in out.iterdir()) == [
        "env.json",
        "results.csv",
        "run.json",
    ]
