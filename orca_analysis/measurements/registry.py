"""The registry of measurements: each measurement package declares itself once, here.

A declaration holds everything the rest of the tool reads about a measurement: its run function,
its metrics (declared in catalog/declared/, checked here), its report section, its run settings
(isolation, GPU need, the longest length it runs on a CPU) and, for the GPU run, its group and share of the budget. The
report's sections, the GPU coverage table, the GPU plan and the Ray resources all come from here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..catalog.declared import BUILTIN, SPECS
from ..catalog.metrics import Metric
from ..catalog.specs import Spec
from ..instruments.kept_walks import WalkCache
from ..results.records import Record
from ..study.schema import ModelConfig, Study, Variant

if TYPE_CHECKING:
    from ..kit.sections import Section
    from ..results.query import Results

RunFn = Callable[[Variant, Study], list[Record]]
SummaryFn = Callable[[ModelConfig, int, int], dict[str, Any]]
SectionFn = Callable[["Results", Study], "Section"]


@dataclass(frozen=True)
class Schedule:
    """How the runner and the executors run a measurement's calls, and the GPU run's share of them."""

    isolated: bool = False  # True when a previous measurement in the same process could distort it
    analytic: bool = False  # deterministic and untimed: may run on the pool of workers beside others
    walks_first: bool = (
        False  # its walks are kept for others' (memory's training step counts FLOPs): runs first
    )
    parallel: bool = False  # isolated but untimed (one thread each): its calls may run side by side
    per_workload: bool = True  # False: one call per variant covers every workload
    # False: on a CPU, one call per variant covers every workload (per_workload on a GPU, where a budget cut then
    # loses one length): the CPU lengths are scaled to a few tokens, so what each call repeats (the build, the
    # ceilings, the calibration's walks) costs more than its timings, and one calibration serves every length
    per_workload_on_cpu: bool = True
    # Its run and summary take the caller's walk cache (instruments/kept_walks.py) as `walks`: the calls one
    # worker runs share their fake-tensor walks through it.
    shares_walks: bool = False
    cpu_seq_cap: int | None = None  # on a CPU, max_seq_len maps to this length (timed measurements)
    gpu: bool = False  # wants a GPU: the GPU run measures it, and the Ray executor asks for one
    gpu_group: str = ""  # measurements of one group share a worker in the GPU run
    gpu_share: float = 0.0  # of the GPU run's time budget


@dataclass(frozen=True)
class Shown:
    """How a measurement is shown: its place in the report and the GPU plan, its section, its `inspect` summary."""

    order: int = 100
    section: SectionFn | None = None  # its part of the report
    summary: SummaryFn | None = None  # for `inspect`: a JSON-able dict
    summary_text: Callable[[dict[str, Any]], str] | None = None  # for `inspect` without --json


@dataclass(frozen=True)
class Measurement:
    """What it measures (its spec and metrics, declared in the catalogue), how it runs, how it is shown."""

    spec: Spec  # catalog/declared/<name>.py: its name, the version its results are stored under, its keying
    description: str
    run: RunFn
    schedule: Schedule = Schedule()
    shown: Shown = Shown()

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def metrics(self) -> tuple[Metric, ...]:
        """Its metrics, as the catalogue declares them."""
        return BUILTIN.get(self.spec.name, ())

    def measure(self, variant: Variant, study: Study, walks: WalkCache | None = None) -> list[Record]:
        """Its records for `variant`; `walks`, where it shares walks, is the cache they are kept in (a fresh one
        where not given)."""
        if not self.schedule.shares_walks:
            return self.run(variant, study)
        return self.run(variant, study, walks=WalkCache() if walks is None else walks)

    def summarise(
        self, cfg: ModelConfig, seq_len: int, batch: int, walks: WalkCache | None = None
    ) -> dict[str, Any]:
        """`summary` (for `inspect`), with `walks` where it shares walks."""
        summary = self.shown.summary
        if summary is None:
            raise ValueError(f"{self.name} has no summary")
        if not self.schedule.shares_walks:
            return summary(cfg, seq_len, batch)
        return summary(cfg, seq_len, batch, walks=WalkCache() if walks is None else walks)

    def for_worker(self) -> Measurement:
        """What a worker needs (summaries may be lambdas, which pickle refuses)."""
        from dataclasses import replace

        return replace(self, shown=replace(self.shown, summary=None, summary_text=None))


@dataclass(frozen=True)
class LazySection:
    """A section function imported at first call: sections draw charts (matplotlib, pandas), which
    `inspect` and the workers never need, and which cost about a second to import. (Picklable.)"""

    module: str
    name: str

    def __call__(self, results: Results, study: Study) -> Section:
        from importlib import import_module

        return getattr(import_module(self.module), self.name)(results, study)


def lazy_section(module: str, name: str) -> SectionFn:
    return LazySection(module, name)


MEASUREMENTS: dict[str, Measurement] = {}


def register(measurement: Measurement) -> Measurement:
    """Add `measurement`, under the spec the catalogue declares for it (catalog/declared/<name>.py), with the
    metrics declared there."""
    name, spec = measurement.name, SPECS.get(measurement.name)
    if name in MEASUREMENTS:
        raise ValueError(f"measurement '{name}' is registered twice")
    if spec is None:
        raise ValueError(
            f"measurement '{name}' has no spec in the catalogue: declare it in catalog/declared/{name}.py"
        )
    if measurement.spec != spec:
        raise ValueError(f"measurement '{name}': its spec {measurement.spec} is not the catalogue's {spec}")
    MEASUREMENTS[measurement.name] = measurement
    return measurement


def in_order() -> list[Measurement]:
    return sorted(MEASUREMENTS.values(), key=lambda m: (m.shown.order, m.name))


def gpu_plan() -> dict[str, list[str]]:
    """The GPU run: group -> its measurements, groups in the order of their first measurement."""
    plan: dict[str, list[str]] = {}
    for m in in_order():
        if m.schedule.gpu:
            plan.setdefault(m.schedule.gpu_group or m.name, []).append(m.name)
    return plan
