"""The runner killed and run twice on one store: nothing lost, nothing measured twice (the slow measurements and
the helpers: test_runner.py, whose module-level functions the worker processes import)."""

import random
import re
import sqlite3
import time

from test_runner import QUIET, SLOW, stored_units, with_measurements

from orca_analysis.executors.isolated import worker_context
from orca_analysis.results import results_frame
from orca_analysis.runner import run_sweep
from orca_analysis.study import load_study


def _sweep_in_child(study_path, out, log_path):
    with open(log_path, "a", buffering=1) as log:
        log.write("started\n")
        study = with_measurements(load_study(study_path), SLOW)
        run_sweep(study, out, measurements=SLOW, verbose=True, log=log)


def _wait_for(predicate, child, limit=30.0):
    deadline = time.monotonic() + limit
    while not predicate() and child.is_alive() and time.monotonic() < deadline:
        time.sleep(0.005)


def test_killing_a_real_run_ten_times_loses_nothing(tiny_study_path, write_study, tmp_path):
    grid = tiny_study_path.read_text().replace("mode: one_at_a_time", "mode: grid")
    grid = grid.replace("depth: [1, 2, 3]", "depth: [1, 2, 3]\n    heads: [2, 4]")
    path = str(write_study(grid))  # 2 dims x 3 depths x 2 heads = 12 variants, x 3 measurements = 36 calls
    folder, log_path = tmp_path / "tiny", tmp_path / "child.log"
    ctx, rng = worker_context(), random.Random(20261128)
    kept: dict = {}
    mid_run = 0
    for i in range(10):
        log_path.write_text("")
        child = ctx.Process(target=_sweep_in_child, args=(path, tmp_path, str(log_path)))
        child.start()
        # a random point: after 0, 1 or 2 measurements of this run, then up to 0.1 s into the next
        # one (planning, measuring, or committing); at most 3 finish per run, so each kill is mid-run
        after, delay = rng.randrange(3), rng.uniform(0.0, 0.1)
        _wait_for(
            lambda n=after: log_path.read_text().count(": ok") >= n and "started" in log_path.read_text(),
            child,
        )
        time.sleep(delay)
        alive = child.is_alive()
        mid_run += alive
        child.kill()  # SIGKILL: no handler, no cleanup
        child.join()
        db = sqlite3.connect(folder / "results.sqlite")
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        db.close()
        stored = stored_units(folder)
        announced = re.findall(r"\] (.+?): (\w+): ok", log_path.read_text())
        assert set(announced) <= set(stored)  # every measurement the run reported finished is stored
        assert kept.items() <= stored.items()  # nothing stored before is lost or measured again
        kept = stored
        print(
            f"kill {i + 1}: after {after} stored + {delay:.2f} s, {'mid-run' if alive else 'ended'}; {len(stored)}/36"
        )
    assert mid_run == 10
    final = run_sweep(with_measurements(load_study(path), SLOW), tmp_path, measurements=SLOW, log=QUIET())
    assert final.planned == 36 - len(kept) > 0 and len(stored_units(folder)) == 36
    frame = results_frame(folder)
    assert (
        frame.groupby(["variant_id", "measurement", "metric", "method", "labels", "seq_len"], dropna=False)
        .size()
        .max()
        == 1
    )
    work, depth = frame[frame.measurement == "per_workload"], frame[frame.measurement == "per_depth"]
    assert (work["value"] == work["seq_len"] * work["dim"]).all() and len(
        work
    ) == 24  # 12 variants x 2, batch 1
    assert (depth["value"] == depth["seq_len"] * depth["depth"]).all() and len(depth) == 24
    params = frame[
        (frame.measurement == "params")
        & (frame.metric == "params")
        & (frame.labels == '{"component":"total"}')
    ]
    assert (
        len(params) == 36 and (params.groupby("variant_id")["value"].nunique() == 1).all()
    )  # counter = closed form = library count


def test_a_second_run_on_the_same_store_waits_and_measures_nothing_twice(tiny_study_path, tmp_path):
    path, ctx = str(tiny_study_path), worker_context()
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    first = ctx.Process(target=_sweep_in_child, args=(path, tmp_path, str(logs[0])))
    first.start()
    _wait_for(lambda: ": ok" in logs[0].read_text() if logs[0].exists() else False, first)
    second = ctx.Process(target=_sweep_in_child, args=(path, tmp_path, str(logs[1])))
    second.start()
    for child in (first, second):
        child.join(60)
    first_log, second_log = (p.read_text() for p in logs)
    assert first.exitcode == second.exitcode == 0
    assert f"in use by another run (PID {first.pid} since" in second_log  # it names the holder, then waits
    assert "nothing new to measure" in second_log and ": ok" not in second_log  # it measured nothing
    ran = re.findall(r"\] (.+?): (\w+): ok", first_log)
    assert len(ran) == len(set(ran)) == len(stored_units(tmp_path / "tiny"))  # each unit measured once
    assert (tmp_path / "tiny" / ".lock").read_text() == ""  # released: the holder line is cleared
