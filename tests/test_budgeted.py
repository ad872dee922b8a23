"""The budgeted launcher of the GPU run (executors/budgeted.py), through the runner and the store as
`scripts/gpu_measure.py` uses them: deadlines, kills, deaths, relaunches, lost CUDA contexts, skips.
Stand-in measurements hang, die or lose their context; nothing here needs a GPU."""

from __future__ import annotations

import dataclasses
import io
import os
import signal
import time
from pathlib import Path

from orca_analysis.catalog.specs import Spec
from orca_analysis.executors.budgeted import BUDGET_SKIP, KILLED, NOT_REACHED, BudgetedExecutor
from orca_analysis.measurements import MEASUREMENTS, Measurement, Schedule, gpu_plan
from orca_analysis.results import Record, results_frame
from orca_analysis.runner import run_sweep
from orca_analysis.study import load_study


def _record(variant, study, value=1.0):
    (s, b), *_ = study.workloads.pairs()
    return [Record(study.name, variant.variant_id, "fake", "fake", "stand_in", value, "x", s, b)]


def hangs_on_dim32(variant, study):
    if variant.variant_id == "dim=32":
        time.sleep(60)
    return _record(variant, study, os.getpid())


def dies_once_on_dim32(variant, study):
    mark = Path(study.description)  # a file beside the test's store (workers do not see its environment)
    if variant.variant_id == "dim=32" and not mark.exists():
        mark.touch()
        os.kill(os.getpid(), signal.SIGSEGV)
    return _record(variant, study, os.getpid())


def loses_context_on_dim32(variant, study):
    if variant.variant_id == "dim=32":
        raise RuntimeError("CUDA error: an illegal memory access was encountered")
    return _record(variant, study, os.getpid())


def _run(tiny_study_path, tmp_path, fn, budget_s: float, grace_s: float = 1.0):
    study = load_study(str(tiny_study_path))
    workloads = dataclasses.replace(study.workloads, seq_lens=[32])
    study = dataclasses.replace(
        study, measurements=["fake"], workloads=workloads, description=str(tmp_path / "died")
    )
    fake = {
        "fake": Measurement(Spec("fake"), "a stand-in", fn, Schedule(gpu=True, gpu_group="g", gpu_share=1.0))
    }
    executor = BudgetedExecutor(budget_s, groups={"g": ["fake"]}, shares={"g": 1.0}, grace_s=grace_s)
    run_sweep(study, tmp_path, executor=executor, measurements=fake, log=io.StringIO())
    frame = results_frame(tmp_path / "tiny", everything=True)
    rows = {
        v: (st, note) for v, st, note in zip(frame["variant_id"], frame["status"], frame["note"], strict=True)
    }
    return rows, frame, executor.launches[0]


def test_a_worker_past_its_deadline_is_killed_its_call_an_error_the_rest_skipped(tiny_study_path, tmp_path):
    rows, _, group = _run(tiny_study_path, tmp_path, hangs_on_dim32, budget_s=10.0)  # worker start included
    assert rows["base"][0] == "ok"
    assert rows["dim=32"] == ("error", KILLED)
    assert rows["depth=1"] == rows["depth=3"] == ("skipped", BUDGET_SKIP)  # never reached, budget gone
    assert [launch["exit"] for launch in group["launches"]] == ["killed"] and group["unfinished"] == 2


def test_a_dead_worker_is_relaunched_after_its_call(tiny_study_path, tmp_path):
    rows, frame, group = _run(tiny_study_path, tmp_path, dies_once_on_dim32, budget_s=120.0)
    assert rows["dim=32"] == ("error", "worker crashed (SIGSEGV) while measuring this")
    assert {rows[v][0] for v in ("base", "depth=1", "depth=3")} == {"ok"}
    assert [launch["exit"] for launch in group["launches"]] == [-11, 0]
    pids = dict(zip(frame["variant_id"], frame["value"], strict=True))
    assert pids["base"] != pids["depth=1"] == pids["depth=3"]  # a fresh worker after the death


def test_a_lost_cuda_context_ends_the_worker_and_a_fresh_one_resumes(tiny_study_path, tmp_path):
    rows, _, group = _run(tiny_study_path, tmp_path, loses_context_on_dim32, budget_s=120.0)
    assert rows["dim=32"] == ("error", "RuntimeError: CUDA error: an illegal memory access was encountered")
    assert {rows[v][0] for v in ("base", "depth=1", "depth=3")} == {"ok"}
    assert [launch["exit"] for launch in group["launches"]] == [3, 0] and group["unfinished"] == 0


def test_no_budget_skips_everything_and_the_next_run_measures_it(tiny_study_path, tmp_path):
    rows, _, group = _run(tiny_study_path, tmp_path, hangs_on_dim32, budget_s=0.0)
    assert set(rows.values()) == {("skipped", BUDGET_SKIP)} and group["launches"] == []
    rows, _, _ = _run(tiny_study_path, tmp_path, loses_context_on_dim32, budget_s=120.0)
    assert rows["base"][0] == "ok"  # skipped units answer nothing: measured this time
    assert NOT_REACHED  # the note for calls a worker that ended early never reached


def test_the_gpu_plan_comes_from_the_registry():
    plan = gpu_plan()
    assert plan == {
        "memory": ["memory_measured"],
        "attention": ["kernels", "attention_speed"],
        "speed": ["speed"],
        "quality": ["probes", "training"],
    }
    shares = {g: sum(MEASUREMENTS[m].schedule.gpu_share for m in ms) for g, ms in plan.items()}
    assert abs(sum(shares.values()) - 1.0) < 1e-9  # the whole budget is shared out
