"""What the remedies' reading produces (remedies/recommend.py): a remedy's status, each metric's change before ->
after, a remedy's outcome, and the recommended design."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from ..catalog.vocabulary import NOT_TESTABLE_AT_THIS_SCALE
from ..claims.stats import Effect
from ..results.query import Value
from ..study.remedies import Remedy
from ..study.schema import Variant


class RemedyStatus(StrEnum):
    """What a remedy's reading concluded, in the report's order (remedies/recommend.py says when each holds)."""

    PASSES = "passes"
    FAILS = "fails"
    INCONCLUSIVE = "inconclusive"  # the proxy loss's interval straddles its delta
    NOT_TESTABLE = NOT_TESTABLE_AT_THIS_SCALE  # the proxy cannot judge its quality
    NEEDS_A_GPU = "needs a GPU"
    NOT_MEASURED = "not measured yet"


STATUSES = tuple(RemedyStatus)
PASSES, FAILS, INCONCLUSIVE = RemedyStatus.PASSES, RemedyStatus.FAILS, RemedyStatus.INCONCLUSIVE
NEEDS_A_GPU, NOT_MEASURED = RemedyStatus.NEEDS_A_GPU, RemedyStatus.NOT_MEASURED


@dataclass(frozen=True)
class Change:
    """One metric before -> after at one point (a length, or none)."""

    metric: str
    unit: str
    method: str
    labels: dict[str, Any]
    seq_len: int | None
    before: float
    after: float
    scale: str  # analytic | measured | proxy
    effect: Effect  # after - before (exact, or the interval over seeds: paired where they share seeds)
    arms: tuple[Value, Value] | None = None  # the before and after values read
    drift: float | None = None  # speed: the relative drift of a step timed twice on that device

    @property
    def moved(self) -> bool:
        if self.drift is not None and self.before:
            return abs(self.after - self.before) / abs(self.before) > self.drift
        return self.before != self.after if self.effect.exact else True

    def as_json(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "unit": self.unit,
            "method": self.method,
            "labels": self.labels,
            "seq_len": self.seq_len,
            "before": self.before,
            "after": self.after,
            "scale": self.scale,
            **{k: v for k, v in self.effect.as_json().items() if k != "estimate"},
            "drift": self.drift,
        }


@dataclass
class Outcome:
    """A remedy (or the recommended design) measured against what it changes."""

    id: str
    before_id: str
    after_id: str
    status: str
    reasons: list[str]
    changes: list[Change]
    probes: dict[str, str]  # probe[case] -> pass | fail | crash | skipped, on the changed variant
    probes_before: dict[str, str]
    remedy: Remedy | None = None
    needs_gpu: list[str] = field(default_factory=list)  # measurements this device could not run
    caveats: list[str] = field(default_factory=list)  # what the change gives up that no gate here measures


@dataclass
class Recommendation:
    values: dict[tuple[str, str], Any]  # the combined change, (home, key) -> value
    change: dict[str, Any]  # the same, `--set` keys as the catalogue writes them
    taken: list[str]
    skipped: list[tuple[str, str]]  # (remedy id, why it is not in the design)
    variant: Variant | None
    outcomes: list[Outcome]
    measured: Outcome | None = None  # the recommended variant against the base
