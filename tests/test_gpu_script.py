"""The lent-GPU path around scripts/gpu_measure.sh: the carried wheels, the return limits, provenance
from a source tree. Nothing here downloads or needs a GPU (tests/test_speed.py runs the smoke itself)."""

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

REPO = Path(__file__).resolve().parents[1]
# Runtime dependencies of orca_analysis (pyproject.toml) that the device's python3 lacks.
NOT_ON_DEVICE = ("x-transformers", "fvcore")
DEVICE_ENV = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
              "platform_system": "Linux", "extra": ""}  # fmt: skip


def _script():
    spec = importlib.util.spec_from_file_location("device_run", REPO / "scripts" / "device_run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
    (out / "log.txt").write_text("x" * 1000 + "the end\n")
    (out / "run.json").write_text(json.dumps({"groups": [{"group": "speed", "exit": 0, "seconds": 1.0,
                                                          "measurements": ["speed"]}]}))  # fmt: skip
    assert script.finish(out) == 0  # the driver was killed: no results.csv, parts/ only
    assert sorted(p.name for p in out.iterdir()) == ["log.txt", "results.csv", "run.json"]
    with (out / "results.csv").open() as fh:
        assert len(list(csv.DictReader(fh))) == 5
    assert (out / "log.txt").stat().st_size < 200 and (out / "log.txt").read_text().endswith("the end\n")
    text = capsys.readouterr().out
    assert "merged here from 2 parts" in text and "speed: 1x error: why" in text
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
