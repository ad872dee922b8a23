"""Run a study: plan what the store lacks, run it on an executor, store each result as it finishes.

Resume: a (variant config, measurement, workload) already stored for this environment is skipped
(for a measurement that trains on the corpus, `uses_corpus`, only when stored for the same corpus; for
a measurement whose `version` was bumped, only when stored by that version);
`force` remeasures everything, `retry_failed` remeasures what failed. A measurement that fails
(an exception, a worker that died) becomes an `error` record with its one-line reason; the sweep
goes on. After the run (or an interrupt) `results.csv` is exported from the store.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from tqdm import tqdm

from .catalog.vocabulary import Status
from .executors.base import Call, Executor, Outcome
from .executors.local import LocalExecutor
from .instruments.corpus import selected_corpus_label
from .instruments.device import measure_device
from .instruments.proxy import scale_key
from .measurements import MEASUREMENTS, Measurement
from .results.environment import ALL_WORKLOADS, Environment, results_key, workload_key
from .results.frame import export
from .results.lock import store_lock
from .results.store import STUDY_SOURCE, Store, Unit, open_store, study_dir
from .study.schema import ModelConfig, Study, Variant, Workloads


@dataclass
class RunSummary:
    store: Path
    csv: Path
    planned: int  # calls run this time
    failed: int
    skipped: int  # (variant, measurement, workload) already stored
    finished: int  # calls stored this time (less than planned when interrupted)
    seconds: float
    stored_failures: int = 0  # calls of this plan that failed in an earlier run (--retry-failed reruns them)


def rectangles(pairs: list[tuple[int, int]]) -> list[tuple[list[int], list[int]]]:
    """Cover (seq_len, batch) pairs exactly with seq_lens x batches products (what a Workloads holds)."""
    by_seq: dict[int, tuple[int, ...]] = {}
    for s, b in pairs:
        by_seq[s] = (*by_seq.get(s, ()), b)
    groups: dict[tuple[int, ...], list[int]] = {}
    for s, batches in by_seq.items():
        groups.setdefault(batches, []).append(s)
    return [(seqs, list(batches)) for batches, seqs in groups.items()]


def corpus_for(study: Study, measurements: Mapping[str, Measurement]) -> str | None:
    """The selected corpus's label when one of the study's measurements trains on it, else None; with the
    quality scale where it is not the device's default (`run --quality thorough` keeps its own results)."""
    if any(measurements[n].spec.uses_corpus for n in study.measurements):
        return selected_corpus_label() + scale_key()  # a user corpus is read and hashed: once per run
    return None


def measurement_key(
    config: ModelConfig, measurement: Measurement, corpus: str | None, role: str = "sweep"
) -> str:
    """The key a measurement's results for this config are stored under: the variant key, combined with
    the corpus label for a measurement that trains on the corpus (`corpus`: that label, None: look it up),
    and with the variant's role for a measurement that measures a remedy less fully (`by_role`)."""
    spec = measurement.spec
    if spec.uses_corpus and corpus is None:
        corpus = selected_corpus_label() + scale_key()
    return results_key(config, spec, corpus, role)


def plan_calls(
    study: Study,
    measurements: Mapping[str, Measurement],
    covered: Mapping[tuple[str, str, str], set[str]],
    env_ids: Mapping[bool, str],
    corpus: str | None = None,
    variants: list[Variant] | None = None,
) -> tuple[list[Call], list[tuple[str, str, str, str]], int]:
    """The calls still to run, the study's plan (for the store) and how many items are stored already.

    `corpus`: the label from `corpus_for` (None: looked up here, when a measurement needs it);
    `variants`: default the sweep and its remedies (the recommended design is planned after them)."""
    corpus = corpus if corpus is not None else corpus_for(study, measurements)
    on_cpu = not measure_device().startswith("cuda")
    dtype = study.workloads.dtype
    pairs = study.workloads.pairs()
    calls: list[Call] = []
    plan: list[tuple[str, str, str, str]] = []
    skipped = 0
    for variant in variants if variants is not None else study.variants() + study.remedy_variants():
        for name in (n for n in study.measurements if not variant.only or n in variant.only):
            # only what a worker needs: `inspect` summaries may be lambdas, which pickle refuses
            m = measurements[name].for_worker()
            vkey = measurement_key(variant.config, m, corpus, variant.role)
            have = covered.get((vkey, name, env_ids[m.schedule.gpu]), set())
            plan += [(vkey, variant.variant_id, name, workload_key(s, b, dtype)) for s, b in pairs]
            todo = [] if ALL_WORKLOADS in have else [p for p in pairs if workload_key(*p, dtype) not in have]
            skipped += len(pairs) - len(todo)
            if not m.schedule.per_workload:
                shapes = [(study.workloads.seq_lens, study.workloads.batch_sizes)] if todo else []
            elif on_cpu and not m.schedule.per_workload_on_cpu:  # the workloads not stored, in few calls
                shapes = rectangles(todo)
            else:
                shapes = [([s], [b]) for s, b in todo] if m.schedule.isolated else rectangles(todo)
            for seqs, batches in shapes:
                sub = dataclasses.replace(study, workloads=Workloads(seqs, batches, dtype))
                calls.append(Call(len(calls), sub, variant, m, tuple((s, b) for s in seqs for b in batches)))
    return calls, plan, skipped


def unit_for(call: Call, outcome: Outcome, corpus: str | None = None) -> Unit:
    """The stored unit of a finished call; `corpus` as for `plan_calls`, so it lands where the plan looks."""
    records = outcome.records
    workload_free = (
        outcome.status == Status.OK
        and records
        and all(r.seq_len is None and r.batch is None for r in records)
    )
    dtype = call.study.workloads.dtype
    workloads = (ALL_WORKLOADS,) if workload_free else tuple(workload_key(s, b, dtype) for s, b in call.pairs)
    return Unit(
        measurement_key(call.variant.config, call.measurement, corpus, call.variant.role),
        call.variant.variant_id,
        call.measurement.name,
        workloads,
        outcome.status,
        outcome.error,
        outcome.seconds,
        outcome.provenance,
        outcome.source,
    )


class Progress:
    """A bar with an ETA on a terminal (failures, and with `verbose` every line, above it); elsewhere (piped,
    a CI log) one line per finished measurement, so long work is never silent."""

    def __init__(self, total: int, desc: str, log: IO[str], verbose: bool):
        self.total, self.log, self.verbose = total, log, verbose
        self.done = self.failed = 0
        terminal = getattr(log, "isatty", lambda: False)()
        self.bar = tqdm(total=total, desc=desc, unit="meas", file=log) if terminal else None

    def finished(self, call: Call, outcome: Outcome) -> None:
        self.done += 1
        self.failed += outcome.status != Status.OK
        line = f"[{self.done}/{self.total}] {call.label}: {outcome.status} ({outcome.seconds:.1f} s)"
        if self.bar:
            self.bar.update(1)
            self.bar.set_postfix_str(call.label, refresh=False)
        if outcome.status != Status.OK or self.verbose or not self.bar:
            text = f"{line}: {outcome.error}" if outcome.error else line
            if self.bar:
                self.bar.write(text, file=self.log)
            else:
                print(text, file=self.log, flush=True)

    def add(self, calls: int) -> None:
        self.total += calls
        if self.bar:
            self.bar.total = self.total
            self.bar.refresh()

    def close(self) -> None:
        if self.bar:
            self.bar.close()


def run_sweep(
    study: Study,
    out_root: Path | None = None,
    *,
    executor: Executor | None = None,
    force: bool = False,
    retry_failed: bool = False,
    verbose: bool = False,
    log: IO[str] | None = None,
    measurements: Mapping[str, Measurement] = MEASUREMENTS,
) -> RunSummary:
    start = time.perf_counter()
    log = log or sys.stderr  # looked up now, so a redirected stderr is honoured
    folder = study_dir(study.name, out_root)
    executor = executor or LocalExecutor()
    progress = None
    try:
        corpus = corpus_for(study, measurements)  # before the store opens: a bad corpus leaves no trace
        # one run per store: a second waits here, then plans against what the first stored
        with store_lock(folder, log), open_store(folder, replace_old=force) as store:
            store.set_meta(
                STUDY_SOURCE,
                study.source if study.source.startswith("builtin:") else str(Path(study.source).resolve()),
            )  # `report NAME` finds the study by it
            try:
                gpu_kinds = {measurements[n].schedule.gpu for n in study.measurements}
                env_ids = {g: Environment.of(executor.provenance(g)).env_id for g in gpu_kinds}
                covered = {} if force else store.covered(set(env_ids.values()), ok_only=retry_failed)
                calls, plan, skipped = plan_calls(study, measurements, covered, env_ids, corpus)
                ok_only = {} if force else store.covered(set(env_ids.values()), ok_only=True)
                stored_failures = len(plan_calls(study, measurements, ok_only, env_ids, corpus)[0]) - len(
                    calls
                )
                store.set_plan(plan)
                progress = Progress(len(calls), study.name, log, verbose)
                _run_calls(executor, calls, store, corpus, progress)
                if study.fixes:  # the remedies are measured: combine those that pass, measure that
                    rec_calls, rec_plan, rec_skipped = _recommended_calls(
                        study, folder, measurements, covered, env_ids, corpus
                    )
                    store.set_plan(plan + rec_plan)
                    calls += rec_calls
                    skipped += rec_skipped
                    progress.add(len(rec_calls))
                    _run_calls(executor, rec_calls, store, corpus, progress)
            except KeyboardInterrupt:
                done = progress.done if progress else 0
                print(
                    f"interrupted: {done} measurements stored this run in {store.path}; run again to resume",
                    file=log,
                )
                raise
            finally:
                if progress:
                    progress.close()
                csv = _export_csv(store, folder)
    finally:
        executor.close()
    done, failed = progress.done, progress.failed
    summary = RunSummary(
        store.path, csv, len(calls), failed, skipped, done, time.perf_counter() - start, stored_failures
    )
    if calls:
        text = f"{done - failed} of {len(calls)} measurements ok, {failed} failed; {skipped} (variant, measurement, workload) items reused from the store"
    else:
        text = (
            f"nothing new to measure: all {skipped} (variant, measurement, workload) items are stored for this environment "
            "(--force remeasures)"
        )
    if stored_failures:
        text += (
            f"; {stored_failures} measurements that failed before are not rerun (--retry-failed reruns them)"
        )
    elif failed:
        text += " (--retry-failed reruns the failed ones)"
    print(f"{text}; {summary.seconds:.1f} s; store {store.path}; results {csv}", file=log)
    return summary


def _run_calls(
    executor: Executor, calls: list[Call], store: Store, corpus: str | None, progress: Progress
) -> None:
    for outcome in executor.run(calls):
        call = calls[outcome.call_index]
        store.commit(unit_for(call, outcome, corpus), outcome.records)  # stored before it is reported
        progress.finished(call, outcome)


def _recommended_calls(study: Study, folder: Path, measurements, covered, env_ids, corpus):
    """The recommended design (the remedies that pass, combined; remedies/recommend.py), planned once the
    remedies' results are stored; no calls when nothing passes."""
    from .remedies.recommend import recommendation
    from .results.query import Results

    rec = recommendation(Results.from_store(folder), study)
    if not rec.values:
        return [], [], 0
    calls, plan, skipped = plan_calls(study, measurements, covered, env_ids, corpus, [rec.variant])
    return calls, plan, skipped


def _export_csv(store: Store, folder: Path) -> Path:
    """results.csv after every run, so readers of the CSV see what the store holds."""
    path = folder / "results.csv"
    if store.plan():
        export(folder)
    return path


def run_study(study: Study, out_root: Path | None = None, log: IO[str] | None = None, **options) -> Path:
    """Measure what the store lacks; returns `reports/<study>/results.csv` (exported from the store)."""
    return run_sweep(study, out_root, log=log, **options).csv
