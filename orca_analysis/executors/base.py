"""What an executor runs (a Call) and what it hands back (an Outcome), and running one in-process.

A call is one measurement of one variant over a rectangle of workloads (all of them, or a single
one for an isolated measurement); the study it carries is narrowed to those workloads.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

from ..catalog.vocabulary import Cause
from ..errors import OrcaError
from ..instruments.device import exception_cause
from ..instruments.kept_walks import WalkCache
from ..measurements.registry import Measurement
from ..results.environment import local_provenance
from ..results.records import Provenance, Record
from ..study.schema import Study, Variant


@dataclass(frozen=True)
class Call:
    index: int
    study: Study  # workloads narrowed to this call's
    variant: Variant
    measurement: Measurement
    pairs: tuple[tuple[int, int], ...]  # (seq_len, batch) this call answers

    @property
    def gpu(self) -> bool:
        return self.measurement.schedule.gpu  # asks Ray for one GPU

    @property
    def label(self) -> str:
        where = f" @ seq_len={self.pairs[0][0]}, batch={self.pairs[0][1]}" if len(self.pairs) == 1 else ""
        return f"{self.variant.variant_id}: {self.measurement.name}{where}"


@dataclass
class Outcome:
    call_index: int
    records: list[Record]
    status: str  # "ok"; "error" when the measurement raised or its worker died; "skipped" (a budget)
    error: str
    seconds: float
    source: str  # where it ran: "in-process", "worker pid 123", "ray 10.0.0.2 / worker pid 7"
    provenance: Provenance = field(default_factory=local_provenance)


class Executor(Protocol):
    name: str

    def provenance(self, gpu: bool) -> Provenance:
        """Where calls (GPU ones when gpu) will run: keys what the store already holds."""
        ...

    def run(self, calls: list[Call]) -> Iterator[Outcome]:
        """Outcomes as calls finish, in any order."""
        ...

    def close(self) -> None: ...


def one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line if isinstance(exc, OrcaError) else f"{type(exc).__name__}: {line}"


def failure(
    call: Call, reason: str, seconds: float, source: str, status: str = "error", cause: Cause = Cause.NONE
) -> Outcome:
    """A failed call becomes a recorded result: one error record with its one-line reason and its cause (or,
    with status "skipped", one skipped record: a call a budget left out, which the next run measures)."""
    (seq_len, batch), single = (call.pairs[0] if call.pairs else (None, None)), len(call.pairs) == 1
    record = Record(
        study=call.study.name,
        variant_id=call.variant.variant_id,
        measurement=call.measurement.name,
        metric="",
        method="",
        value=None,
        unit="",
        seq_len=seq_len if single else None,
        batch=batch if single else None,
        dtype=call.study.workloads.dtype,
        status=status,
        note=reason,
        cause=str(cause),
        swept=call.variant.swept,
    )
    return Outcome(call.index, [record], status, reason, seconds, source)


def run_call(call: Call, source: str = "in-process", walks: WalkCache | None = None) -> Outcome:
    """Run a call here; an exception becomes a failure outcome, Ctrl-C stays Ctrl-C. `walks`: the cache of
    fake-tensor walks the calls run here share (instruments/kept_walks.py); a fresh one where not given."""
    start = time.perf_counter()
    try:
        records = call.measurement.measure(call.variant, call.study, walks)
    except Exception as exc:  # noqa: BLE001  (a failed variant is a result, not a crash)
        seconds = time.perf_counter() - start
        return failure(call, one_line(exc), seconds, source, cause=exception_cause(exc))
    return Outcome(call.index, list(records), "ok", "", time.perf_counter() - start, source)
