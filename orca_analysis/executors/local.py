"""Run calls on this machine, one after another: in this process, or each in a fresh worker."""

from __future__ import annotations

from collections.abc import Iterator

from ..results.environment import local_provenance
from ..results.records import Provenance
from . import DEFAULT_TIME_LIMIT_S
from .base import Call, Outcome, run_call
from .isolated import run_isolated


class LocalExecutor:
    """Measurements registered `isolated=True` (or every one, with isolate_all) run in a fresh worker."""

    name = "local"

    def __init__(self, isolate_all: bool = False, time_limit: float = DEFAULT_TIME_LIMIT_S):
        self.isolate_all, self.time_limit = isolate_all, time_limit

    def provenance(self, gpu: bool) -> Provenance:
        return local_provenance()

    def run(self, calls: list[Call]) -> Iterator[Outcome]:
        for call in calls:
            if self.isolate_all or call.measurement.isolated:
                yield run_isolated(call, self.time_limit)
            else:
                yield run_call(call)

    def close(self) -> None:
        pass
