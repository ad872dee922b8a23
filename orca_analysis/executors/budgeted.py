"""A budgeted launcher: the GPU run's calls in groups, each group in a fresh worker, all within a budget.

The groups and their shares of the budget come from the registry (`gpu_group`, `gpu_share`); a group's
deadline is the start plus its cumulative share. Its worker runs the group's calls one after another
and sends each outcome back as it finishes (the runner stores it at once), stops starting calls at the
deadline (they come back `skipped`, and the next run measures them) and sets $ORCA_DEADLINE so a long
measurement stops starting sub-runs there. The launcher kills a worker GRACE_S past its deadline.
Nothing planned is dropped: the call in flight when a worker is killed or dies becomes an `error`
outcome with the reason; after a death, or a call whose error reads like a lost CUDA context (every
later CUDA call of that process would fail too: the worker exits with LOST_CONTEXT_EXIT), a fresh
worker resumes the group while its deadline allows, at most MAX_LAUNCHES a group; calls no worker
reached are `skipped`. `launches` keeps what happened, for run.json.
"""

from __future__ import annotations

import os
import pickle
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from typing import Any

from ..catalog.vocabulary import Status
from ..results.environment import local_provenance
from ..results.records import Provenance
from .base import Call, Outcome, failure, one_line, run_call
from .isolated import death_reason, start_worker, worker_context

GRACE_S = 20.0
MAX_LAUNCHES = 3
LOST_CONTEXT_EXIT = 3
LOST_CONTEXT = (
    "CUDA error",
    "illegal memory access",
    "device-side assert",
    "CUBLAS_STATUS_EXECUTION_FAILED",
    "cudaErrorLaunchFailure",
)
BUDGET_SKIP = "time budget of the GPU run exhausted"
NOT_REACHED = "not reached: the worker ended before it"
KILLED = "worker killed past its deadline while measuring this"


def lost_cuda_context(text: str) -> bool:
    return any(s in text for s in LOST_CONTEXT)


def _group_worker(payload: bytes, conn: Connection, parent_pid: int, deadline: float) -> None:
    start_worker(parent_pid)
    os.environ["ORCA_DEADLINE"] = f"{deadline:.1f}"  # long measurements stop starting sub-runs
    calls: list[Call] = pickle.loads(payload)
    for call in calls:
        if time.time() > deadline:
            conn.send(failure(call, BUDGET_SKIP, 0.0, f"worker pid {os.getpid()}", status=Status.SKIPPED))
            continue
        outcome = run_call(call, f"worker pid {os.getpid()}")
        conn.send(outcome)
        if outcome.status == Status.ERROR and lost_cuda_context(outcome.error):
            conn.close()
            os._exit(LOST_CONTEXT_EXIT)  # skip teardown: with a lost CUDA context it can abort
        _free_memory()
    conn.close()


def _free_memory() -> None:
    import gc

    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover
        pass


class BudgetedExecutor:
    name = "budgeted"

    def __init__(
        self,
        budget_s: float,
        groups: dict[str, list[str]] | None = None,
        shares: dict[str, float] | None = None,
        grace_s: float = GRACE_S,
        max_launches: int = MAX_LAUNCHES,
    ):
        from ..measurements import MEASUREMENTS, gpu_plan

        self.budget_s, self.grace_s, self.max_launches = budget_s, grace_s, max_launches
        self.groups = groups if groups is not None else gpu_plan()
        self.shares = shares or {
            g: sum(MEASUREMENTS[m].schedule.gpu_share for m in ms if m in MEASUREMENTS)
            for g, ms in self.groups.items()
        }
        self.launches: list[dict[str, Any]] = []  # per group: its measurements and each launch

    def provenance(self, gpu: bool) -> Provenance:
        return local_provenance()

    def _grouped(self, calls: list[Call]) -> dict[str, list[Call]]:
        out: dict[str, list[Call]] = {g: [] for g in self.groups}
        group_of = {m: g for g, ms in self.groups.items() for m in ms}
        for call in calls:
            out.setdefault(group_of.get(call.measurement.name, "other"), []).append(call)
        return {g: cs for g, cs in out.items() if cs}

    def run(self, calls: list[Call]) -> Iterator[Outcome]:
        start = time.time()
        grouped = self._grouped(calls)
        total = sum(self.shares.get(g, 0.0) for g in grouped) or 1.0
        spent = 0.0
        for group, members in grouped.items():
            share = self.shares.get(group, 0.0) or (total / len(grouped))
            spent += share
            deadline = start + self.budget_s * min(1.0, spent / total)
            yield from self._group(group, members, deadline)

    def _group(self, group: str, calls: list[Call], deadline: float) -> Iterator[Outcome]:
        facts: dict[str, Any] = {
            "group": group,
            "measurements": sorted({c.measurement.name for c in calls}),
            "launches": [],
            "unfinished": 0,
        }
        self.launches.append(facts)
        pending = list(calls)
        while pending and len(facts["launches"]) < self.max_launches and time.time() < deadline:
            t = time.time()
            rc = yield from self._launch(pending, deadline)
            facts["launches"].append({"exit": rc, "seconds": round(time.time() - t, 1)})
            if rc in (0, "killed"):
                break
        for call in pending:  # no worker reached them
            facts["unfinished"] += 1
            why = BUDGET_SKIP if time.time() >= deadline else NOT_REACHED
            yield failure(call, why, 0.0, "budgeted launcher", status=Status.SKIPPED)

    def _launch(self, pending: list[Call], deadline: float):  # a generator that returns the worker's exit
        try:
            payload = pickle.dumps(pending)
        except Exception as exc:  # noqa: BLE001  (a call that cannot be sent is a result)
            yield failure(
                pending.pop(0), f"cannot send the measurement to a worker: {one_line(exc)}", 0.0, ""
            )
            return "unsent"
        ctx = worker_context()
        receive, send = ctx.Pipe(duplex=False)
        proc = ctx.Process(
            target=_group_worker, args=(payload, send, os.getpid(), deadline), name="orca-group"
        )
        proc.start()
        send.close()
        source = f"worker pid {proc.pid}"
        t0 = time.perf_counter()
        try:
            while pending:
                if receive.poll(0.2):
                    try:
                        outcome = receive.recv()
                    except EOFError:
                        break
                    pending[:] = [c for c in pending if c.index != outcome.call_index]
                    t0 = time.perf_counter()
                    yield outcome
                elif time.time() > deadline + self.grace_s:
                    proc.kill()
                    proc.join()
                    yield failure(pending.pop(0), KILLED, time.perf_counter() - t0, source)
                    return "killed"
            proc.join(10)
            if pending:  # it died (or lost its CUDA context) with calls left: the first was in flight
                if proc.exitcode != LOST_CONTEXT_EXIT:
                    yield failure(
                        pending.pop(0),
                        f"{death_reason(proc.exitcode)} while measuring this",
                        time.perf_counter() - t0,
                        source,
                    )
            return proc.exitcode
        finally:
            if proc.is_alive():
                proc.kill()
                proc.join()
            receive.close()

    def close(self) -> None:
        pass
