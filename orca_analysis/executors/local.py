"""Run calls on this machine: analytic ones on a small pool of long-lived workers (one per core),
then the rest one after another, in this process or each in a fresh worker."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

from ..results.environment import local_provenance
from ..results.records import Provenance
from . import DEFAULT_TIME_LIMIT_S
from .base import Call, Outcome, failure, one_line, run_call
from .isolated import run_isolated, run_isolated_many, worker_context

MAX_ANALYTIC_WORKERS = 8


def analytic_workers() -> int:
    """Workers for the analytic calls: ORCA_ANALYTIC_WORKERS, else the cores this process may use (at
    most 8). 1 runs them in this process."""
    env = os.environ.get("ORCA_ANALYTIC_WORKERS", "")
    if env.strip():
        return max(1, int(env))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(cores, MAX_ANALYTIC_WORKERS))


def expected_cost(call: Call) -> tuple[bool, float]:
    """A rough order of the untimed side-by-side calls: the base's (the study-wide ablations run with it)
    first, then by width^2 x depth, a remedy's (fewer runs) at a third of a sweep variant's."""
    cfg, variant = call.variant.config, call.variant
    is_base = variant.role == "sweep" and variant.variant_id == call.study.variants()[0].variant_id
    weight = 1.0 if variant.role == "sweep" else 0.3
    return is_base, weight * cfg.dim**2 * cfg.depth


def _quiet_worker() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle


def _run_pooled(call: Call) -> Outcome:
    return run_call(call, f"analytic worker pid {os.getpid()}")


class LocalExecutor:
    """Measurements registered `analytic=True` (deterministic, untimed) share a pool of workers that
    lives for the batch: no worker per variant, every core busy, and the pool has exited before any
    other call starts, so nothing runs beside a timed measurement. Then `isolated=True` ones (or every
    one, with isolate_all) run in a fresh worker each, the others in this process; `parallel=True` ones
    (isolated, untimed: training) come last, a fresh worker each, one per core at once."""

    name = "local"

    def __init__(
        self, isolate_all: bool = False, time_limit: float = DEFAULT_TIME_LIMIT_S, workers: int | None = None
    ):
        self.isolate_all, self.time_limit = isolate_all, time_limit
        self.workers = analytic_workers() if workers is None else workers

    def provenance(self, gpu: bool) -> Provenance:
        return local_provenance()

    def run(self, calls: list[Call]) -> Iterator[Outcome]:
        pooled = [c for c in calls if getattr(c.measurement, "analytic", False) and not self.isolate_all]
        if self.workers < 2 or len(pooled) < 2:
            pooled = []
        side_by_side = sorted(
            (c for c in calls if getattr(c.measurement, "parallel", False) and c not in pooled),
            key=expected_cost,
            reverse=True,
        )  # longest first: the last to start are the short ones, so both workers finish together
        yield from self._pool(pooled)
        for call in (c for c in calls if c not in pooled and c not in side_by_side):
            if self.isolate_all or call.measurement.isolated:
                yield run_isolated(call, self.time_limit)
            else:
                yield run_call(call)
        # last, with nothing else running: a fresh worker each, up to one per core at once
        yield from run_isolated_many(side_by_side, self.time_limit, self.workers)

    def _pool(self, calls: list[Call]) -> Iterator[Outcome]:
        if not calls:
            return
        from concurrent.futures import ProcessPoolExecutor, as_completed

        ctx = worker_context()
        with ProcessPoolExecutor(
            min(self.workers, len(calls)), mp_context=ctx, initializer=_quiet_worker
        ) as pool:
            futures = {pool.submit(_run_pooled, call): call for call in calls}
            try:
                for future in as_completed(futures):
                    try:
                        yield future.result()
                    except Exception as exc:  # noqa: BLE001  (a worker died: out of memory, a crash)
                        reason = f"analytic worker died before returning a result: {one_line(exc)}"
                        yield failure(futures[future], reason, 0.0, "analytic worker")
            finally:
                for future in futures:
                    future.cancel()

    def close(self) -> None:
        pass
