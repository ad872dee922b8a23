"""Records of the quality measurements: shared fields filled in, categories as key=value lists."""

from __future__ import annotations

from statistics import mean
from typing import Any

from ..results import Record
from ..study.schema import Variant
from ._quality import QualityScale


def cat(**parts: Any) -> str:
    """A record category from key=value parts; `parse_category` reads it back."""
    return ",".join(f"{k}={v}" for k, v in parts.items())


def parse_category(category: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in category.split(",") if "=" in part)


class Recorder:
    """Builds this measurement's records for one variant with the shared fields filled in."""

    def __init__(self, variant: Variant, study: str, scale: QualityScale, measurement: str = "training"):
        self.records: list[Record] = []
        self.common = dict(
            study=study,
            variant_id=variant.variant_id,
            measurement=measurement,
            swept=variant.swept,
            dtype="float32",
            device=scale.device,
        )

    def add(self, metric: str, value: float | None, unit: str = "nats/token", **fields: Any) -> None:
        fields.setdefault("method", "measured")
        self.records.append(Record(metric=metric, value=value, unit=unit, **{**self.common, **fields}))

    def seed_stats(self, metric: str, values: list[float], unit: str = "nats/token", **fields: Any) -> None:
        """Mean and spread (max - min) over seeds, as two aggregate records."""
        prefix = fields.pop("category", "")
        sep = "," if prefix else ""
        self.add(metric, mean(values), unit, method="aggregate", category=f"{prefix}{sep}seed=mean", **fields)
        self.add(
            metric,
            max(values) - min(values),
            unit,
            method="aggregate",
            category=f"{prefix}{sep}seed=spread",
            **fields,
        )
