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
class Measurement:
    name: str
    description: str
    run: RunFn
    metrics: tuple[Metric, ...] = ()
    order: int = 100  # its place in the report and in the GPU plan
    section: SectionFn | None = None  # its part of the report
    summary: SummaryFn | None = None  # for `inspect`: a JSON-able dict
    summary_text: Callable[[dict[str, Any]], str] | None = None  # for `inspect` without --json
    isolated: bool = False  # True when a previous measurement in the same process could distort it
    analytic: bool = False  # deterministic and untimed: may run on the pool of workers beside others
    walks_first: bool = (
        False  # its walks are kept for others' (memory's training step counts FLOPs): runs first
    )
    parallel: bool = False  # isolated but untimed (one thread each): its calls may run side by side
    gpu: bool = False  # wants a GPU: the GPU run measures it, and the Ray executor asks for one
    gpu_group: str = ""  # measurements of one group share a worker in the GPU run
    gpu_share: float = 0.0  # of the GPU run's time budget
    cpu_seq_cap: int | None = None  # on a CPU, max_seq_len maps to this length (timed measurements)
    per_workload: bool = True  # False: one call per variant covers every workload
    uses_corpus: bool = False  # its results depend on the training corpus: stored per corpus
    by_role: bool = False  # measures a remedy (or the recommended design) less fully: stored per role
    # Bumped when the records it writes change (new metrics, another method): stored results of an
    # older version are then measured anew, and the other measurements' results are kept.
    version: int = 1
    # Its run and summary take the caller's walk cache (instruments/kept_walks.py) as `walks`: the calls one
    # worker runs share their fake-tensor walks through it.
    shares_walks: bool = False

    def measure(self, variant: Variant, study: Study, walks: WalkCache | None = None) -> list[Record]:
        """Its records for `variant`; `walks`, where it shares walks, is the cache they are kept in (a fresh one
        where not given)."""
        if not self.shares_walks:
            return self.run(variant, study)
        return self.run(variant, study, walks=WalkCache() if walks is None else walks)

    def summarise(
        self, cfg: ModelConfig, seq_len: int, batch: int, walks: WalkCache | None = None
    ) -> dict[str, Any]:
        """`summary` (for `inspect`), with `walks` where it shares walks."""
        if self.summary is None:
            raise ValueError(f"{self.name} has no summary")
        if not self.shares_walks:
            return self.summary(cfg, seq_len, batch)
        return self.summary(cfg, seq_len, batch, walks=WalkCache() if walks is None else walks)

    def for_worker(self) -> Measurement:
        """What a worker needs (summaries may be lambdas, which pickle refuses)."""
        from dataclasses import replace

        return replace(self, summary=None, summary_text=None)


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
    """Add `measurement`, under the spec and with the metrics the catalogue declares for it
    (catalog/declared/<name>.py)."""
    name, spec = measurement.name, SPECS.get(measurement.name)
    if name in MEASUREMENTS:
        raise ValueError(f"measurement '{name}' is registered twice")
    if spec is None:
        raise ValueError(
            f"measurement '{name}' has no spec in the catalogue: declare it in catalog/declared/{name}.py"
        )
    if (measurement.version, measurement.uses_corpus, measurement.by_role) != (
        spec.version,
        spec.uses_corpus,
        spec.by_role,
    ):
        raise ValueError(
            f"measurement '{name}': version, corpus use or keying by role differ from its catalogue spec {spec}"
        )
    if measurement.metrics != BUILTIN[name]:
        raise ValueError(f"measurement '{name}': its metrics are not those the catalogue declares for it")
    MEASUREMENTS[measurement.name] = measurement
    return measurement


def in_order() -> list[Measurement]:
    return sorted(MEASUREMENTS.values(), key=lambda m: (m.order, m.name))


def gpu_plan() -> dict[str, list[str]]:
    """The GPU run: group -> its measurements, groups in the order of their first measurement."""
    plan: dict[str, list[str]] = {}
    for m in in_order():
        if m.gpu:
            plan.setdefault(m.gpu_group or m.name, []).append(m.name)
    return plan
