"""Run calls as Ray tasks (optional extra: `pip install "ray[default]"`), results streamed back.

Each call is one task; a GPU measurement (registered `gpu=True`) asks Ray for one GPU. An isolated
measurement runs in a process spawned by its task (fresh process, time limit, death reasons, as
locally). Outcomes come back to the driver as tasks finish, and the runner stores each at once.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from typing import Any

from ..errors import OrcaError
from ..results.environment import local_provenance
from ..results.records import Provenance
from .base import Call, Outcome, failure, one_line, run_call
from .isolated import run_isolated


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise OrcaError("--executor ray needs Ray: pip install 'ray[default]'") from None
    return ray


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail in seconds, with one line, where ray.init would retry for a minute."""
    if address in ("auto", "local"):
        return
    host, sep, port = address.split("://", 1)[-1].rpartition(":")
    if not sep or not host or not port.isdigit():
        raise OrcaError(f"Ray address '{address}' is not HOST:PORT (e.g. 127.0.0.1:6379)")
    try:
        socket.create_connection((host, int(port)), timeout).close()
    except OSError as exc:
        raise OrcaError(f"cannot reach a Ray cluster at {address}: {exc.strerror or exc}") from None


def _task(call: Call, time_limit: float) -> Outcome:  # runs on a Ray worker
    import ray

    if call.measurement.schedule.isolated:
        outcome = run_isolated(call, time_limit, method="spawn")  # sees this task's CUDA_VISIBLE_DEVICES
    else:
        outcome = run_call(call, f"worker pid {os.getpid()}")
    outcome.source = f"ray {ray.util.get_node_ip_address()} / {outcome.source}"
    return outcome


def _probe() -> Provenance:
    return local_provenance()


def ray_reason(exc: BaseException) -> str:
    ray = _import_ray()
    if isinstance(exc, ray.exceptions.OutOfMemoryError):
        return "Ray worker killed by Ray's memory monitor (out of memory)"
    if isinstance(exc, ray.exceptions.WorkerCrashedError):
        return "Ray worker died (crash, or killed from outside)"
    if isinstance(exc, ray.exceptions.TaskCancelledError):
        return "Ray task cancelled"
    if isinstance(exc, ray.exceptions.RayTaskError) and exc.cause is not None:
        return one_line(exc.cause)
    return one_line(exc)


class RayExecutor:
    name = "ray"

    def __init__(self, address: str | None, time_limit: float):
        ray = _import_ray()
        if address:
            check_reachable(address)
        options: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.ERROR}
        if not address:
            options["include_dashboard"] = False
        try:
            # no address: a new local cluster just for this run ("local"; plain None would attach to
            # whatever `ray start` last recorded on this machine, even a cluster long stopped)
            ray.init(address=address or "local", **options)
        except Exception as exc:  # noqa: BLE001
            raise OrcaError(
                f"cannot start Ray at {address or 'a new local cluster'}: {one_line(exc)}"
            ) from None
        self.ray, self.time_limit = ray, time_limit
        self.gpus = ray.cluster_resources().get("GPU", 0)
        self._task = ray.remote(max_retries=0)(_task)  # a crash is a result, not a retry
        self._probe = ray.remote(_probe)
        self._pending: dict[Any, Call] = {}
        self._provenance: dict[bool, Provenance] = {}

    def _gpus(self, gpu: bool) -> int:
        # without GPUs in the cluster the task would wait forever: run it anyway, as locally
        return 1 if gpu and self.gpus else 0

    def provenance(self, gpu: bool) -> Provenance:
        if gpu not in self._provenance:
            ref = self._probe.options(num_gpus=self._gpus(gpu)).remote()
            try:
                self._provenance[gpu] = self.ray.get(ref)
            except self.ray.exceptions.RayError as exc:  # e.g. orca-analysis missing on the nodes
                cause = getattr(exc, "cause", None) or exc
                text = str(cause).strip().splitlines()[-1] if str(cause).strip() else type(cause).__name__
                raise OrcaError(f"Ray workers cannot run orca-analysis: {text}") from None
        return self._provenance[gpu]

    def run(self, calls: list[Call]) -> Iterator[Outcome]:
        for call in calls:
            ref = self._task.options(num_gpus=self._gpus(call.gpu), name=call.label).remote(
                call, self.time_limit
            )
            self._pending[ref] = call
        while self._pending:
            ready, _ = self.ray.wait(list(self._pending), num_returns=1)
            for ref in ready:
                call = self._pending.pop(ref)
                try:
                    yield self.ray.get(ref)
                except self.ray.exceptions.RayError as exc:
                    yield failure(call, ray_reason(exc), 0.0, "ray")

    def close(self) -> None:
        for ref in self._pending:
            self.ray.cancel(ref, force=True)
        self._pending.clear()
        self.ray.shutdown()
