"""The remedy catalogue: a YAML data file with a schema, loaded strictly (like the claims catalogue). It is
part of the study: each remedy becomes a variant of the study (`fix:<id>`); remedies/ judges them.

Each remedy answers one finding of the report (by the finding's id and its declared metric) with a
change written as `--set` pairs, applied to one variant of the study (the base unless it says
otherwise). The changed model becomes a variant of its own, `fix:<id>`, and runs through the
measurements the remedy lists; `expects` says what the change should move, and which way.
Remedies of one `group` are alternatives: the recommended design takes the first that passes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..catalog.declared import SPECS
from ..catalog.files import BUILTIN_REMEDIES, catalogue_items
from ..catalog.findings import FINDINGS  # the findings a remedy may answer, with their metrics
from ..catalog.metrics import problems as metric_problems
from ..errors import OrcaError
from .kwargs import check_value, did_you_mean, resolve

DEFAULT_CATALOGUE = BUILTIN_REMEDIES["orca"]
REMEDY_KEYS = (
    "id",
    "finding",
    "metric",
    "problem",
    "change",
    "applies_to",
    "group",
    "expects",
    "measurements",
    "why",
)
EXPECT_KEYS = ("metric", "method", "labels", "direction", "delta")
EXPECT_DIRECTIONS = ("lower", "higher", "pass", "no_worse")  # pass: a probe that must pass after
# what a remedy's variant runs by default: every measurement whose catalogue spec is on_remedies
REMEDY_MEASUREMENTS = tuple(name for name, spec in SPECS.items() if spec.on_remedies)


class RemedyError(OrcaError):
    """The remedy catalogue is missing or malformed."""


def remedies_path(ref: str) -> Path:
    """A built-in catalogue's file, or the path itself."""
    return BUILTIN_REMEDIES.get(ref, Path(ref))


@dataclass(frozen=True)
class Expect:
    """What a remedy should move: `metric` (declared), read with `method` and `labels`, `direction`."""

    metric: str
    direction: str
    method: str | None = None
    labels: dict[str, Any] = field(default_factory=dict)
    delta: float = 0.0  # no_worse: the worsening, in the metric's unit, that counts as worse


@dataclass(frozen=True)
class Remedy:
    id: str
    finding: str  # the id of the finding it answers (report/findings.py)
    metric: str  # that finding's declared metric
    problem: str  # the problem, in one sentence
    change: dict[str, Any]  # `--set` keys as written -> values
    values: dict[tuple[str, str], Any]  # the same, resolved to (home, key)
    why: str  # why this change should fix it
    expects: tuple[Expect, ...]
    applies_to: str = "base"  # the variant id it changes
    group: str = ""  # alternatives share a group; "" = its own
    measurements: tuple[str, ...] = REMEDY_MEASUREMENTS  # what its variant runs (within the study's list)

    @property
    def variant_id(self) -> str:
        return f"fix:{self.id}"

    def change_text(self) -> str:
        return ", ".join(f"{k}={_yaml(v)}" for k, v in self.change.items())


def _yaml(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def load_remedies(path: Path) -> list[Remedy]:
    """The catalogue at `path`; every problem is collected, then raised as one RemedyError."""
    items, lines = catalogue_items(path, "remedies", RemedyError, "remedy catalogue", "a remedy catalogue")
    problems: list[str] = []
    remedies: list[Remedy] = []
    for i, item in enumerate(items):
        where = f"{path}: line {lines[i]}" if i < len(lines) else f"{path}: remedy {i + 1}"
        remedy = _read(item, where, problems)
        if remedy is None:
            continue
        if any(r.id == remedy.id for r in remedies):
            problems.append(f"{where}: duplicate id '{remedy.id}'")
        remedies.append(remedy)
    if problems:
        raise RemedyError(problems)
    return remedies


def _read(item: Any, where: str, problems: list[str]) -> Remedy | None:
    if not isinstance(item, dict):
        problems.append(f"{where}: a remedy must be a mapping with keys {', '.join(REMEDY_KEYS)}")
        return None
    for key in item:
        if key not in REMEDY_KEYS:
            problems.append(f"{where}: unknown key '{key}'{did_you_mean(str(key), list(REMEDY_KEYS))}")
    missing = [k for k in ("id", "finding", "metric", "problem", "change", "expects", "why") if k not in item]
    if missing:
        problems.append(f"{where}: missing {', '.join(missing)}")
        return None
    where = f"{where} ({item['id']})"
    before = len(problems)
    finding = str(item["finding"])
    if finding not in FINDINGS:
        problems.append(
            f"{where}: unknown finding '{finding}'{did_you_mean(finding, list(FINDINGS))} "
            f"(findings: {', '.join(FINDINGS)})"
        )
    elif item["metric"] != FINDINGS[finding]:
        problems.append(
            f"{where}: finding '{finding}' is about metric '{FINDINGS[finding]}', not '{item['metric']}'"
        )
    values = _change(item["change"], where, problems)
    expects = _expects(item["expects"], where, problems)
    names = item.get("measurements", list(REMEDY_MEASUREMENTS))
    if not isinstance(names, list) or not names or any(n not in REMEDY_MEASUREMENTS for n in names):
        problems.append(
            f"{where}: 'measurements' must be a non-empty list of {', '.join(REMEDY_MEASUREMENTS)}"
        )
        names = list(REMEDY_MEASUREMENTS)
    if len(problems) > before:
        return None
    return Remedy(
        str(item["id"]),
        finding,
        str(item["metric"]),
        str(item["problem"]).strip(),
        dict(item["change"]),
        values,
        str(item["why"]).strip(),
        expects,
        str(item.get("applies_to", "base")),
        str(item.get("group", "")),
        tuple(names),
    )


def _change(change: Any, where: str, problems: list[str]) -> dict[tuple[str, str], Any]:
    if not isinstance(change, dict) or not change:
        problems.append(f"{where}: 'change' must be a non-empty mapping of --set keys to values")
        return {}
    values = {}
    for key, value in change.items():
        try:
            spec = resolve(str(key))
        except KeyError as exc:
            problems.append(f"{where}: change: {exc.args[0]}")
            continue
        bad = check_value(spec, value)
        if bad:
            problems.append(f"{where}: change: {bad}")
            continue
        values[(spec.home, spec.key)] = value
    return values


def _expects(expects: Any, where: str, problems: list[str]) -> tuple[Expect, ...]:

    if not isinstance(expects, list) or not expects:
        problems.append(
            f"{where}: 'expects' must be a non-empty list of {{metric, direction, method, labels}}"
        )
        return ()
    out = []
    for e in expects:
        if not isinstance(e, dict) or "metric" not in e or "direction" not in e:
            problems.append(f"{where}: each expectation needs 'metric' and 'direction'")
            continue
        unknown = [k for k in e if k not in EXPECT_KEYS]
        if unknown:
            problems.append(
                f"{where}: unknown key '{unknown[0]}' in an expectation (allowed: {', '.join(EXPECT_KEYS)})"
            )
        if e["direction"] not in EXPECT_DIRECTIONS:
            problems.append(
                f"{where}: direction must be one of {', '.join(EXPECT_DIRECTIONS)}, got {e['direction']!r}"
            )
        labels = e.get("labels") or {}
        if not isinstance(labels, dict):
            problems.append(f"{where}: 'labels' must be a mapping of label to value")
            continue
        problems += metric_problems(str(e["metric"]), e.get("method"), labels, where)
        delta = e.get("delta", 0.0)
        if e["direction"] == "no_worse" and not (isinstance(delta, (int, float)) and delta > 0):
            problems.append(f"{where}: a no_worse expectation needs 'delta': the worsening that counts, > 0")
            continue
        out.append(Expect(str(e["metric"]), str(e["direction"]), e.get("method"), dict(labels), float(delta)))
    return tuple(out)
