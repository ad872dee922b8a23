"""Run calls on this machine: analytic ones on a small pool of long-lived workers (one per core),
then the rest one after another, in this process or each in a fresh worker."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator

from ..instruments.analytic import walk_blocks
from ..instruments.kept_walks import WalkCache
from ..results.environment import local_provenance
from ..results.records import Provenance
from ..study.kwargs import LAYERS
from . import DEFAULT_TIME_LIMIT_S
from .base import Call, Outcome, failure, one_line, run_call
from .isolated import run_isolated, run_isolated_many, start_worker, worker_context

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
    is_base = variant.role == "sweep" and call.study.is_base(variant)
    weight = 1.0 if variant.role == "sweep" else 0.3
    return is_base, weight * cfg.dim**2 * cfg.depth


def family(call: Call) -> str:
    """The variants that differ only in depth: per block, they share their small-depth walks."""
    return repr(call.variant.config.with_values({(LAYERS, "depth"): 0}))


def family_order(calls: list[Call]) -> list[Call]:
    """Each family's calls together, deepest first (its small walks then serve the shallower ones), in
    the order the families first appear; within one variant, those whose walks serve others first
    (Schedule.walks_first), then the plan's order."""
    first = {f: i for i, f in reversed(list(enumerate(map(family, calls))))}
    return sorted(
        calls,
        key=lambda c: (first[family(c)], -c.variant.config.depth, not c.measurement.schedule.walks_first),
    )


def _walk_cost(group: list[Call]) -> int:
    """A family's fake-tensor walks cost about their blocks (not their width): the blocks of its distinct
    depths, as the instrument walks them (instruments/analytic.py walk_blocks), plus one per call."""
    depths = {walk_blocks(c.variant.config.depth) for c in group}
    return sum(depths) + len(group)


def families_by_cost(calls: list[Call]) -> list[list[Call]]:
    """The calls in whole families (each in family_order), the costliest family first."""
    groups: dict[str, list[Call]] = {}
    for call in family_order(calls):
        groups.setdefault(family(call), []).append(call)
    return sorted(groups.values(), key=_walk_cost, reverse=True)


class _Worker:
    """A pool worker's own walk cache: made when its process starts, shared by the families it runs."""

    walks: WalkCache | None = None


def _start_pooled(parent_pid: int) -> None:
    start_worker(parent_pid)
    _Worker.walks = WalkCache()


def _run_pooled(call: Call) -> Outcome:
    return run_call(call, f"analytic worker pid {os.getpid()}", _Worker.walks)


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
        self.walks = WalkCache()  # the walks of the calls run in this process, kept for the executor's life

    def provenance(self, gpu: bool) -> Provenance:
        return local_provenance()

    def run(self, calls: list[Call]) -> Iterator[Outcome]:
        analytic = [c for c in calls if c.measurement.schedule.analytic and not self.isolate_all]
        pooled = analytic if self.workers >= 2 and len(analytic) >= 2 else []
        side_by_side = sorted(
            (c for c in calls if c.measurement.schedule.parallel and c not in analytic),
            key=expected_cost,
            reverse=True,
        )  # longest first: the last to start are the short ones, so both workers finish together
        yield from self._pool(pooled)
        in_turn = [c for c in calls if c not in pooled and c not in side_by_side]
        in_turn = family_order([c for c in in_turn if c in analytic]) + [
            c for c in in_turn if c not in analytic
        ]
        for call in in_turn:
            if self.isolate_all or call.measurement.schedule.isolated:
                yield run_isolated(call, self.time_limit)
            else:
                yield run_call(call, walks=self.walks)
        # last, with nothing else running: a fresh worker each, up to one per core at once
        yield from run_isolated_many(side_by_side, self.time_limit, self.workers)

    def _pool(self, calls: list[Call]) -> Iterator[Outcome]:
        """One single-process pool per worker; each takes a whole family (its calls share the worker's kept
        walks), and the next family, the costliest left, goes to whichever worker runs dry first."""
        if not calls:
            return
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

        ctx, families = worker_context(), deque(families_by_cost(calls))
        # the pid is the batch's: a pool worker's parent is the forkserver, and one left by a killed batch
        # would wait on its queue for ever, holding its forkserver up too
        pools = [
            ProcessPoolExecutor(1, mp_context=ctx, initializer=_start_pooled, initargs=(os.getpid(),))
            for _ in range(min(self.workers, len(families)))
        ]
        futures: dict = {}  # future -> (call, its pool)

        def feed(pool: ProcessPoolExecutor) -> None:
            if families and not any(p is pool for _, p in futures.values()):
                futures.update({pool.submit(_run_pooled, call): (call, pool) for call in families.popleft()})

        try:
            for pool in pools:
                feed(pool)
            while futures:
                done, _ = wait(futures, return_when=FIRST_COMPLETED)
                for future in done:
                    call, pool = futures.pop(future)
                    try:
                        yield future.result()
                    except Exception as exc:  # noqa: BLE001  (a worker died: out of memory, a crash)
                        reason = f"analytic worker died before returning a result: {one_line(exc)}"
                        yield failure(call, reason, 0.0, "analytic worker")
                    feed(pool)
        finally:
            for future in futures:
                future.cancel()
            for pool in pools:
                pool.shutdown(wait=True)

    def close(self) -> None:
        pass
