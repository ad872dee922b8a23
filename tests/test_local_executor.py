"""The local executor: analytic calls on a pool of long-lived workers give the in-process numbers, and
everything else starts only once the pool has exited (nothing runs beside a timed measurement)."""

import dataclasses
import io
import os

from orca_analysis.catalog.specs import Spec
from orca_analysis.executors.local import LocalExecutor, analytic_workers
from orca_analysis.measurements import MEASUREMENTS
from orca_analysis.measurements.registry import Measurement, Schedule
from orca_analysis.results.frame import results_frame
from orca_analysis.results.query import Results
from orca_analysis.results.store import open_store
from orca_analysis.runner import run_sweep
from orca_analysis.study import load_study


def _unit_sources(folder):
    with open_store(folder, create=False) as store:
        return store.db.execute("SELECT measurement, source FROM units").fetchall()


def _sources(folder):
    return dict(_unit_sources(folder))  # measurement -> the source of its last unit


def _running(pid: int) -> bool:
    try:
        return open(f"/proc/{pid}/stat").read().split(") ")[1][0] != "Z"  # gone, or a zombie: not running
    except FileNotFoundError:
        return False


def after_the_pool(variant, study):
    """Not analytic (in this process): which of the pool's workers still run when it starts."""
    pids = {int(s.rsplit(" ", 1)[1]) for _, s in _unit_sources(after_the_pool.folder) if "analytic" in s}
    after_the_pool.seen.append((len(pids), [p for p in pids if _running(p)]))
    return []


def _run(study, out, workers):
    names = {
        "params": MEASUREMENTS["params"],
        "flops": MEASUREMENTS["flops"],
        "later": Measurement(Spec("later"), "later", after_the_pool),
    }
    study = dataclasses.replace(study, measurements=list(names))
    after_the_pool.folder, after_the_pool.seen = out / study.name, []
    run_sweep(study, out, executor=LocalExecutor(workers=workers), measurements=names, log=io.StringIO())
    sources = _sources(out / study.name)
    frame = results_frame(out / study.name)
    return frame.sort_values(["variant_id", "metric", "method", "labels", "seq_len"]), sources


def test_pooled_analytic_calls_equal_in_process_ones(tiny_study_path, tmp_path):
    study = load_study(str(tiny_study_path))  # 4 variants x (params, flops): 8 analytic calls
    pooled, sources = _run(study, tmp_path / "pooled", workers=2)
    # the two workers had exited before the first non-analytic call started (one per variant: 4)
    assert after_the_pool.seen == [(2, [])] * 4
    alone, alone_sources = _run(study, tmp_path / "alone", workers=1)
    cols = ["variant_id", "measurement", "metric", "method", "labels", "seq_len", "value", "note"]
    assert len(pooled) == len(alone) > 0
    assert pooled[cols].reset_index(drop=True).equals(alone[cols].reset_index(drop=True))
    assert sources["params"].startswith("analytic worker pid") and alone_sources["params"] == "in-process"
    assert sources["later"] == "in-process"


def test_worker_count_from_the_environment(monkeypatch):
    monkeypatch.setenv("ORCA_ANALYTIC_WORKERS", "1")
    assert analytic_workers() == 1
    monkeypatch.delenv("ORCA_ANALYTIC_WORKERS")
    assert 1 <= analytic_workers() <= min(8, os.cpu_count())


def started_and_ended(variant, study):
    """Untimed, isolated, side by side: records when it started and ended (epoch seconds)."""
    import time

    from orca_analysis.results.records import Record

    start = time.time()
    time.sleep(0.5)
    return [
        Record(study.name, variant.variant_id, "side", "window", "clock", v, "s", labels={"end": k})
        for k, v in (("start", start), ("end", time.time()))
    ]


def test_parallel_isolated_calls_run_side_by_side_at_the_end(tiny_study_path, tmp_path):
    side = Measurement(
        Spec("side"), "side", started_and_ended, Schedule(isolated=True, parallel=True, per_workload=False)
    )
    names = {"side": side, "later": Measurement(Spec("later"), "later", after_the_pool)}
    study = dataclasses.replace(load_study(str(tiny_study_path)), measurements=list(names))
    after_the_pool.folder, after_the_pool.seen = tmp_path / study.name, []
    run_sweep(study, tmp_path, executor=LocalExecutor(workers=2), measurements=names, log=io.StringIO())
    windows: dict = {}
    for r in Results.from_store(tmp_path / study.name).records(measurement="side"):
        windows.setdefault(r.variant_id, {})[r.labels["end"]] = r.value
    assert len(windows) == 4  # one fresh worker per variant, two at a time
    first, second = sorted(windows.values(), key=lambda w: w["start"])[:2]
    assert second["start"] < first["end"]  # the second started before the first ended: side by side
    sources = [s for m, s in _unit_sources(tmp_path / study.name) if m == "side"]
    assert len(set(sources)) == 4 and all(s.startswith("worker pid") for s in sources)
    # nothing ran beside them: every non-parallel call finished before the first of them started
    with open_store(tmp_path / study.name, create=False) as store:
        order = [m for (m,) in store.db.execute("SELECT measurement FROM units ORDER BY unit_id")]
    assert order == ["later"] * 4 + ["side"] * 4
