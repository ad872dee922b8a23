"""The claims catalogue: a YAML data file with a schema, loaded strictly.

Each claim restates one statement of the design notes, names the measurements that test it and
the rule (claims/rules.py) that turns stored results into a verdict.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..catalog.files import BUILTIN_CLAIMS, catalogue_items
from ..catalog.metrics import METRICS, problems
from ..errors import OrcaError
from ..study.kwargs import did_you_mean

DEFAULT_CATALOGUE = BUILTIN_CLAIMS["orca"]


def catalogue_path(ref: str) -> Path:
    """A built-in catalogue's file, or the path itself."""
    return BUILTIN_CLAIMS.get(ref, Path(ref))


KINDS = ("benefit", "cost", "description")
CLAIM_KEYS = ("id", "subject", "kind", "claim", "tests", "needs", "rule", "weight", "delta")


class ClaimsError(OrcaError):
    """The claims catalogue is missing or malformed."""


@dataclass(frozen=True)
class Rule:
    name: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Claim:
    id: str
    subject: str  # dim | depth | heads | flag:<name>
    kind: str  # benefit | cost | description
    claim: str  # our restatement of the notes
    tests: list[str]  # measurements that test it
    needs: str  # what would test it, shown while it is not tested yet
    rule: Rule
    weight: int = 1
    delta: float | None = None  # the minimal effect of interest, in the unit of the rule's metric


def load_catalogue(path: Path | None = None) -> list[Claim]:
    from .rules import RULES  # rules import results code; keep schema import light

    path = path or DEFAULT_CATALOGUE
    items, lines = catalogue_items(path, "claims", ClaimsError, "claims catalogue", "a catalogue")
    problems, claims, seen = [], [], set()
    for i, item in enumerate(items):
        where = f"{path}: line {lines[i]}" if i < len(lines) else f"{path}: claim {i + 1}"
        if not isinstance(item, dict):
            problems.append(f"{where}: must be a mapping with keys {', '.join(CLAIM_KEYS)}")
            continue
        for key in item:
            if key not in CLAIM_KEYS:
                problems.append(f"{where}: unknown key '{key}'{did_you_mean(str(key), list(CLAIM_KEYS))}")
        missing = [k for k in ("id", "subject", "kind", "claim", "rule") if k not in item]
        if missing:
            problems.append(f"{where}: missing {', '.join(missing)}")
            continue
        rule = item["rule"]
        if not isinstance(rule, dict) or rule.get("name") not in RULES:
            name = rule.get("name") if isinstance(rule, dict) else rule
            problems.append(
                f"{where} ({item['id']}): unknown rule {name!r}"
                f"{did_you_mean(str(name), list(RULES))} (rules: {', '.join(RULES)})"
            )
            continue
        problems += _metric_problems(rule.get("params") or {}, f"{where} ({item['id']})")
        delta, why = _delta(item.get("delta"), rule.get("params") or {})
        if why:
            problems.append(f"{where} ({item['id']}): {why}")
        if item["kind"] not in KINDS:
            problems.append(f"{where} ({item['id']}): kind must be one of {', '.join(KINDS)}")
        if item["id"] in seen:
            problems.append(f"{where}: duplicate id '{item['id']}'")
        seen.add(item["id"])
        claims.append(
            Claim(
                str(item["id"]),
                str(item["subject"]),
                str(item["kind"]),
                str(item["claim"]),
                list(item.get("tests") or []),
                str(item.get("needs") or ""),
                Rule(rule["name"], dict(rule.get("params") or {})),
                int(item.get("weight", 1)),
                delta,
            )
        )
    if problems:
        raise ClaimsError(problems)
    return claims


def _metric_problems(params: dict[str, Any], where: str) -> list[str]:
    """A rule parameter naming a metric must name a declared one, with its methods and labels."""

    if "metric" not in params:
        return []
    labels = params.get("labels") or {}
    if not isinstance(labels, dict):
        return [f"{where}: 'labels' must be a mapping of label to value"]
    return problems(str(params["metric"]), params.get("method"), labels, where)


def _delta(value: Any, params: dict[str, Any]) -> tuple[float | None, str]:
    """`delta: {value: 0.02, unit: nats/token}`: a number, in the unit of the metric the rule names."""
    if value is None:
        return None, ""
    if (
        not isinstance(value, dict)
        or set(value) != {"value", "unit"}
        or not isinstance(value["value"], (int, float))
    ):
        return None, "delta must be {value: NUMBER, unit: UNIT}"
    if "metric" in params:
        want = METRICS[params["metric"]].unit if params["metric"] in METRICS else None
        if want is not None and value["unit"] != want:
            return None, f"delta's unit '{value['unit']}' is not the unit of {params['metric']} ('{want}')"
    return float(value["value"]), ""
