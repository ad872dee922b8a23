"""The runner on a real store: resume, changed studies, isolated workers that die, progress, kills.

The measurement functions below are module-level so that worker processes can import them.
"""

import dataclasses
import functools
import io
import os
import re
import signal
import time

import pytest

from orca_analysis.catalog.specs import Spec
from orca_analysis.executors.isolated import worker_context
from orca_analysis.executors.local import LocalExecutor
from orca_analysis.instruments.corpus import DEFAULT_LABEL, load_corpus, selected_corpus_label
from orca_analysis.measurements import MEASUREMENTS, Measurement, Schedule
from orca_analysis.results import Record, open_store, results_frame
from orca_analysis.results.environment import workload_key
from orca_analysis.runner import measurement_key, rectangles, run_sweep
from orca_analysis.study import load_study
from orca_analysis.study.schema import Sweep, Workloads


def tokens_x_dim(variant, study):
    """A workload-dependent stand-in: seq_len * batch * dim, e.g. 32 * 1 * 64 = 2048."""
    return [
        Record(
            study.name,
            variant.variant_id,
            "per_workload",
            "tokens_x_dim",
            "closed_form",
            s * b * variant.config.dim,
            "units",
            s,
            b,
            study.workloads.dtype,
            swept=variant.swept,
        )
        for s, b in study.workloads.pairs()
    ]


def slow_tokens_x_dim(variant, study):
    time.sleep(0.08)  # long enough that a kill lands between, and during, measurements
    return tokens_x_dim(variant, study)


def slow_tokens_x_depth(variant, study):
    """seq_len * batch * depth, e.g. 32 * 1 * 2 = 64, after the same pause."""
    time.sleep(0.08)
    return [
        Record(
            study.name,
            variant.variant_id,
            "per_depth",
            "tokens_x_depth",
            "closed_form",
            s * b * variant.config.depth,
            "units",
            s,
            b,
            study.workloads.dtype,
            swept=variant.swept,
        )
        for s, b in study.workloads.pairs()
    ]


@functools.cache
def stdlib_bytes():
    return load_corpus(None).n_bytes  # the default corpus (about 12 MB): read once per test session


def corpus_bytes(variant, study):
    """A corpus-dependent stand-in for `training`: the selected corpus's size in bytes."""
    n_bytes = load_corpus().n_bytes if os.environ.get("ORCA_CORPUS") else stdlib_bytes()
    return [
        Record(
            study.name,
            variant.variant_id,
            "corpus",
            "corpus_bytes",
            "counter",
            n_bytes,
            "bytes",
            s,
            b,
            study.workloads.dtype,
            swept=variant.swept,
        )
        for s, b in study.workloads.pairs()
    ]


def worker_pid(variant, study):
    (s, b), *_ = study.workloads.pairs()
    return [Record(study.name, variant.variant_id, "pid", "pid", "os", os.getpid(), "pid", s, b)]


def killed(variant, study):
    os.kill(os.getpid(), signal.SIGKILL)  # what the kernel's OOM killer does


def crashed(variant, study):
    os.kill(os.getpid(), signal.SIGSEGV)


def raises(variant, study):
    raise MemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nsecond line of the message")


def too_slow(variant, study):
    time.sleep(60)


def m(name, fn, isolated=False):
    return Measurement(Spec(name), name, fn, Schedule(isolated=isolated))


PER_WORKLOAD = {"params": MEASUREMENTS["params"], "per_workload": m("per_workload", tokens_x_dim)}
SLOW = {
    "params": MEASUREMENTS["params"],
    "per_workload": m("per_workload", slow_tokens_x_dim),
    "per_depth": m("per_depth", slow_tokens_x_depth),
}
QUIET = io.StringIO


def with_measurements(study, names):
    return dataclasses.replace(study, measurements=list(names))


def base_only(study, seq_lens):
    return dataclasses.replace(
        study, sweep=Sweep(), workloads=dataclasses.replace(study.workloads, seq_lens=seq_lens)
    )


def unit_ids(folder):
    with open_store(folder, create=False) as store:
        return [u.unit_id for u in store.units()]


def test_rectangles_cover_pairs_exactly():
    # seq_len 32 and 64 both have batches (1, 2); 128 only batch 1
    pairs = [(32, 1), (32, 2), (64, 1), (64, 2), (128, 1)]
    assert rectangles(pairs) == [([32, 64], [1, 2]), ([128], [1])]


def test_speed_takes_one_call_per_variant_on_a_cpu_and_one_per_workload_on_a_gpu(
    tiny_study_path, monkeypatch
):
    """On a CPU a speed call's set-up (the build, the ceilings, the calibration's walks) costs more than its
    scaled-down timings, and one calibration serves every length: one call per variant, over the workloads
    not stored yet. On a GPU, one per workload: a budget cut then loses one length."""
    from orca_analysis.runner import plan_calls

    study = dataclasses.replace(
        load_study(str(tiny_study_path)),
        measurements=("speed",),
        workloads=Workloads((16, 32), (1,), "float32"),
    )
    env = {False: "cpu-env", True: "gpu-env"}
    n = len(study.variants())
    for device, per_variant in (("cpu", [(16, 1), (32, 1)]), ("cuda", None)):
        monkeypatch.setenv("ORCA_DEVICE", device)
        calls, plan, _ = plan_calls(study, MEASUREMENTS, {}, env, "")
        assert len(plan) == 2 * n  # the plan lists every workload either way
        pairs = [c.pairs for c in calls]
        assert pairs == ([tuple(per_variant)] * n if per_variant else [((16, 1),), ((32, 1),)] * n)
    monkeypatch.setenv("ORCA_DEVICE", "cpu")  # one workload stored: the call measures the other alone
    base_key = measurement_key(study.base, MEASUREMENTS["speed"], "")
    stored = {(base_key, "speed", "gpu-env"): {workload_key(16, 1, "float32")}}
    calls, _, skipped = plan_calls(study, MEASUREMENTS, stored, env, "")
    assert skipped == 1 and calls[0].pairs == ((32, 1),) and calls[0].variant.variant_id == "base"


def test_rerun_skips_what_is_stored_and_force_remeasures(tiny_study_path, tmp_path):
    study = load_study(str(tiny_study_path))
    first = run_sweep(study, tmp_path, log=QUIET())
    assert (first.planned, first.failed, first.skipped) == (4, 0, 0)  # 4 variants x params
    ids, frame = unit_ids(tmp_path / "tiny"), results_frame(tmp_path / "tiny")
    log = QUIET()
    again = run_sweep(study, tmp_path, log=log)
    assert (again.planned, again.skipped) == (0, 8)  # 4 variants x 2 workloads, all stored
    assert "nothing new to measure" in log.getvalue()
    assert unit_ids(tmp_path / "tiny") == ids
    assert results_frame(tmp_path / "tiny")["value"].tolist() == frame["value"].tolist()
    forced = run_sweep(study, tmp_path, force=True, log=QUIET())
    # every unit measured anew and the old ones replaced (SQLite may hand a freed unit id out again: ids prove nothing)
    assert (forced.planned, forced.finished, forced.failed, len(unit_ids(tmp_path / "tiny"))) == (4, 4, 0, 4)
    assert len(results_frame(tmp_path / "tiny")) == len(frame)


def test_a_changed_study_measures_only_what_is_new(tiny_study_path, write_study, tmp_path):
    text = tiny_study_path.read_text()
    study = with_measurements(load_study(str(tiny_study_path)), PER_WORKLOAD)
    assert run_sweep(study, tmp_path, measurements=PER_WORKLOAD, log=QUIET()).planned == 8
    grown = text.replace("dim: [32, 64]", "dim: [32, 48, 64]").replace(
        "seq_lens: [32, 64]", "seq_lens: [32, 64, 128]"
    )
    study = with_measurements(load_study(str(write_study(grown))), PER_WORKLOAD)
    summary = run_sweep(study, tmp_path, measurements=PER_WORKLOAD, log=QUIET())
    # new variant dim=48: params + per_workload; the 4 others: per_workload at seq_len 128 only
    # (params covers every workload: its records have no seq_len). Skipped, per (variant,
    # measurement, workload): params 4 variants x 3 workloads + per_workload 4 x 2 = 20
    assert (summary.planned, summary.skipped) == (6, 4 * 3 + 4 * 2)
    frame = results_frame(tmp_path / "tiny")
    base = frame[(frame.variant_id == "base") & (frame.measurement == "per_workload")]
    assert base.set_index("seq_len")["value"].to_dict() == {32: 2048, 64: 4096, 128: 8192}  # s * 1 * 64
    assert (
        frame.groupby(["variant_id", "measurement", "metric", "method", "labels", "seq_len"], dropna=False)
        .size()
        .max()
        == 1
    )
    # a new base config makes every variant new; the report shows only the current configs
    rebased = with_measurements(
        load_study(str(write_study(grown.replace("num_tokens: 256", "num_tokens: 512")))), PER_WORKLOAD
    )
    assert run_sweep(rebased, tmp_path, measurements=PER_WORKLOAD, log=QUIET()).planned == 10
    frame = results_frame(tmp_path / "tiny")
    embedding = frame[(frame.variant_id == "base") & (frame.labels == '{"component":"embedding"}')]["value"]
    assert embedding.tolist() == [512 * 64, 512 * 64]  # num_tokens x dim, counter and closed form
    assert len(results_frame(tmp_path / "tiny", everything=True)) > len(frame)  # the old ones are kept


def test_a_new_corpus_remeasures_only_what_trains_on_it(tiny_study_path, tmp_path, monkeypatch):
    names = {
        "per_workload": m("per_workload", tokens_x_dim),
        "corpus": Measurement(Spec("corpus", uses_corpus=True), "", corpus_bytes),
    }
    study = with_measurements(load_study(str(tiny_study_path)), names)  # 4 variants x 2 workloads
    mine, folder = tmp_path / "mine.txt", tmp_path / "tiny"
    mine.write_text("a" * 100)
    per_workload = {1024, 2048, 4096}  # seq_len x dim: 32 x 32, 32 x 64 (or 64 x 32), 64 x 64

    def run(corpus):
        if corpus is None:
            monkeypatch.delenv("ORCA_CORPUS", raising=False)
        else:
            monkeypatch.setenv("ORCA_CORPUS", str(corpus))
        summary = run_sweep(study, tmp_path, measurements=names, log=QUIET())
        values = results_frame(folder).groupby("measurement")["value"].agg(set).to_dict()
        return (summary.planned, summary.skipped), values, stored_units(folder)

    counts, values, first = run(None)  # the default corpus
    assert (counts, values) == ((8, 0), {"per_workload": per_workload, "corpus": {stdlib_bytes()}})
    # --corpus mine.txt: only `corpus` is measured again (4 calls); per_workload's 4 x 2 results are reused
    counts, values, stored = run(mine)
    assert (counts, values) == ((4, 8), {"per_workload": per_workload, "corpus": {100}})
    assert stored[("base", "per_workload")] == first[("base", "per_workload")]
    # the default again: its results are still stored (nothing replaced them), reused and shown again
    before = unit_ids(folder)
    counts, values, _ = run(None)
    assert (counts, values) == ((0, 16), {"per_workload": per_workload, "corpus": {stdlib_bytes()}})
    assert unit_ids(folder) == before and len(before) == 12
    # the same path with other content is another corpus
    mine.write_text("c" * 40)
    counts, values, _ = run(mine)
    assert (counts, values) == ((4, 8), {"per_workload": per_workload, "corpus": {40}})
    with open_store(folder, create=False) as store:
        assert len(store.units()) == 16  # per_workload 4, corpus 4 for each of 3 corpora
    everything = results_frame(folder, everything=True)
    assert set(everything[everything.measurement == "corpus"]["value"]) == {stdlib_bytes(), 100, 40}


def test_a_bumped_measurement_version_remeasures_only_that_measurement(tiny_study_path, tmp_path):
    import dataclasses

    names = {"per_workload": m("per_workload", tokens_x_dim), "other": m("other", tokens_x_dim)}
    study = with_measurements(load_study(str(tiny_study_path)), names)  # 4 variants x 2 workloads each
    first = run_sweep(study, tmp_path, measurements=names, log=QUIET())
    assert (first.planned, first.skipped) == (8, 0)
    names["per_workload"] = dataclasses.replace(
        names["per_workload"], spec=Spec("per_workload", version=2)
    )  # its records changed
    again = run_sweep(study, tmp_path, measurements=names, log=QUIET())
    assert (again.planned, again.skipped) == (4, 8)  # per_workload's 4 calls anew; other's 8 results reused
    assert again.finished == 4 and len(results_frame(tmp_path / "tiny")) == 16  # shown: the new version's


def test_the_default_corpus_label_is_version_free_and_reads_nothing(monkeypatch, tmp_path):
    monkeypatch.delenv("ORCA_CORPUS", raising=False)
    assert selected_corpus_label() == DEFAULT_LABEL == "python-stdlib"
    (tmp_path / "c.txt").write_text("hello")
    label = selected_corpus_label(tmp_path / "c.txt")
    # path, then the first 12 hex digits of sha256(b"hello")
    assert label == f"{(tmp_path / 'c.txt').resolve()}@2cf24dba5fb0"


def test_isolated_workers_are_fresh_and_their_deaths_are_recorded(tiny_study_path, tmp_path):
    names = {
        "pid": m("pid", worker_pid, True),
        "killed": m("killed", killed, True),
        "crashed": m("crashed", crashed, True),
        "raises": m("raises", raises, True),
    }
    study = with_measurements(base_only(load_study(str(tiny_study_path)), [32, 64]), names)
    summary = run_sweep(
        study, tmp_path, measurements=names, executor=LocalExecutor(time_limit=120), log=QUIET()
    )
    assert (summary.planned, summary.failed) == (8, 6)  # 4 measurements x 2 workloads, one worker each
    frame = results_frame(tmp_path / "tiny")
    pids = frame[frame.measurement == "pid"]["value"].tolist()
    assert len(set(pids)) == 2 and os.getpid() not in pids  # a fresh process per measurement
    errors = frame[frame.status == "error"].groupby("measurement")["note"].agg(set).to_dict()
    assert errors == {
        "killed": {"worker killed (SIGKILL): out of memory, or killed from outside"},
        "crashed": {"worker crashed (SIGSEGV)"},
        "raises": {"MemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"},
    }
    assert sorted(frame[frame.measurement == "killed"]["seq_len"]) == [32, 64]  # which workload died
    retried = run_sweep(study, tmp_path, measurements=names, retry_failed=True, log=QUIET())
    assert (retried.planned, retried.skipped) == (6, 2)


def test_a_worker_past_its_time_limit_is_stopped(tiny_study_path, tmp_path):
    names = {"slow": m("slow", too_slow, True)}
    study = with_measurements(base_only(load_study(str(tiny_study_path)), [32]), names)
    worker_context().Process(target=time.sleep, args=(0,)).start()  # warm the forkserver first
    start = time.perf_counter()
    run_sweep(study, tmp_path, measurements=names, executor=LocalExecutor(time_limit=3), log=QUIET())
    assert time.perf_counter() - start < 30
    with open_store(tmp_path / "tiny", create=False) as store:
        (unit,) = store.units()
        (row,) = store.db.execute("SELECT error, source FROM units").fetchall()
    assert unit.status == "error" and row[0] == "time limit 3 s exceeded: worker stopped"
    with pytest.raises(ProcessLookupError):
        os.kill(int(row[1].split()[-1]), 0)  # the worker is gone


def test_progress_bar_on_a_terminal_a_line_per_measurement_elsewhere(tiny_study_path, tmp_path):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    study = load_study(str(tiny_study_path))
    term = Terminal()
    run_sweep(study, tmp_path / "a", log=term)
    assert re.search(r"tiny: 100%.*4/4 \[\d\d:\d\d<\d\d:\d\d", term.getvalue())  # count and ETA
    plain = QUIET()
    run_sweep(study, tmp_path / "b", log=plain)
    lines = plain.getvalue().splitlines()
    assert len(lines) == 4 + 1 and "\r" not in plain.getvalue()  # 4 finished measurements, then the summary
    assert all(" ok" in line for line in lines[:4]), lines


def stored_units(folder):
    """(variant_id, measurement) -> unit id, for what the store holds."""
    with open_store(folder, create=False) as store:
        rows = store.db.execute("SELECT variant_id, measurement, unit_id FROM units").fetchall()
    return {(v, name): unit_id for v, name, unit_id in rows}
