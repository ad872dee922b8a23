"""Rules for the description claims: a value or an effect the notes state, against the model as built
(measurement `design`). Exact: the evidence is a count or a shape, so a verdict needs no interval."""

from __future__ import annotations

from typing import Any

from ..catalog.declared.design import FLAG_CHANGES_BUILD, SHIFT_OFFSET, SHIFTED_CHANNELS
from ..catalog.metrics import lookup
from ..catalog.vocabulary import Scale, Verdict
from ..results.query import Value
from .evidence import Evidence, Judgement
from .rules import register_rule


def _built(ev: Evidence, metric: str, **labels: Any) -> Value | None:
    return ev.results.one(metric, variant=ev.study.base_variant.variant_id, **labels)


@register_rule("asserted_value")
def asserted_value(ev: Evidence, metric: str, value: float, check: str = "") -> Judgement:
    """The claim states `value` for `metric`; the built base model has its own (exact). `check` names
    a pass metric (1/0) that must also hold, e.g. that a forward at the stated length runs."""
    built = _built(ev, metric)
    if built is None:
        return Judgement(
            Verdict.NOT_TESTED, f"{metric} of the built model is not measured (measurement `design`)"
        )
    unit = lookup(metric).unit
    rows = [
        {"label": "stated by the notes", "value": value, "unit": unit, "method": "catalogue"},
        {"label": "the built model", "value": built.value, "unit": unit, "method": built.method},
    ]
    if built.value != value:
        return Judgement(
            Verdict.CONTRADICTED,
            f"the notes state {value:,g} {unit}; the model as built has "
            f"{built.value:,g} ({built.method}, analytic)",
            rows,
            "design",
            scale=Scale.ANALYTIC,
        )
    text = f"the model as built has {built.value:,g} {unit}, as stated ({built.method}, analytic)"
    if check:
        ok = _built(ev, check)
        if ok is None:
            return Judgement(
                Verdict.NOT_TESTED, f"{text}; {check} is not measured", rows, "design", scale=Scale.ANALYTIC
            )
        rows.append({"label": check, "value": ok.value, "unit": lookup(check).unit, "method": ok.method})
        if not ok.value:
            return Judgement(
                Verdict.CONTRADICTED,
                f"{text}, but {check} failed: {ok.note}",
                rows,
                "design",
                scale=Scale.ANALYTIC,
            )
        text += f"; {ok.note}"
    return Judgement(Verdict.SUPPORTED, text, rows, "design", scale=Scale.ANALYTIC)


@register_rule("flag_acts")
def flag_acts(ev: Evidence, flag: str, differs_means: str = Verdict.QUALIFIED) -> Judgement:
    """The notes say the flag does something: building with and without it must differ, and the library
    must run it as the notes describe it (its fidelity entry)."""
    acts, entry = _built(ev, FLAG_CHANGES_BUILD, flag=flag), ev.fidelity.get(flag)
    if acts is None or entry is None:
        return Judgement(
            Verdict.NOT_TESTED, f"'{flag}' is not set on the base, or its build was not compared"
        )
    rows = [
        {"label": f"{flag} changes the build", "value": acts.value, "unit": "bool", "method": acts.method},
        {"label": flag, "value": entry["value"], "method": f"fidelity: {entry['status']}"},
    ]
    if not acts.value:
        return Judgement(
            Verdict.CONTRADICTED,
            f"building without '{flag}' gives the same model: it does nothing here",
            rows,
            "design",
            scale=Scale.ANALYTIC,
        )
    found = f"the build differs without it ({acts.note})"
    if entry["status"] == "unsupported":
        return Judgement(
            Verdict.CONTRADICTED, f"refused: {entry['how']}", rows, "design", scale=Scale.ANALYTIC
        )
    if entry["notes_differ"]:
        return Judgement(
            differs_means, f"{entry['notes_differ']}; {found}", rows, "design", scale=Scale.ANALYTIC
        )
    if entry["status"] == "realised":
        return Judgement(
            Verdict.QUALIFIED,
            f"x-transformers lacks it; orca-analysis realises it ({entry['how']}); {found}",
            rows,
            "design",
            scale=Scale.ANALYTIC,
        )
    return Judgement(Verdict.SUPPORTED, found, rows, "design", scale=Scale.ANALYTIC)


@register_rule("shifts_targets")
def shifts_targets(ev: Evidence) -> Judgement:
    """The notes read token shift as forming the targets by a one-token shift. What the built ShiftTokens
    does is measured: channels of position t taken from t - 1."""
    channels, offset = _built(ev, SHIFTED_CHANNELS), _built(ev, SHIFT_OFFSET)
    if channels is None or offset is None:
        return Judgement(Verdict.NOT_TESTED, "the built ShiftTokens was not probed (measurement `design`)")
    rows = [
        {
            "label": "channels at t from t - 1",
            "value": channels.value,
            "unit": "channels",
            "method": channels.method,
        },
        {"label": "largest offset", "value": offset.value, "unit": "tokens", "method": offset.method},
    ]
    if channels.value > 0:
        return Judgement(
            Verdict.CONTRADICTED,
            f"the flag shifts features, not targets: {channels.value:g} {channels.note} "
            f"come from the token {offset.value:g} back; the training targets are the next token "
            "with or without it (the loss's own shift)",
            rows,
            "design",
            scale=Scale.ANALYTIC,
        )
    return Judgement(
        Verdict.CONTRADICTED,
        "the built model shifts nothing between positions",
        rows,
        "design",
        scale=Scale.ANALYTIC,
    )
