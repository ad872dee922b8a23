"""Remedies this device cannot measure: an expectation or a touched metric whose record's cause says it needs a
GPU (a memory error, a forecast's skip, a loss), named once each in the outcome and the report's view; the
cause decides, not the note's words (the catalogue and the helpers: test_remedies.py)."""

import dataclasses

import pytest
from test_remedies import probe, remedy_study, results

from orca_analysis.catalog.vocabulary import Cause
from orca_analysis.remedies.recommend import recommendation, short
from orca_analysis.results import Record
from orca_analysis.results.query import Results


@pytest.fixture
def study(write_study, tiny_study_path, tmp_path):
    return remedy_study(write_study, tiny_study_path, tmp_path)


def test_an_unmeasurable_expectation_needs_a_gpu_and_a_regressed_probe_fails(study):
    gpu = Record(
        study.name,
        "fix:alibi-off",
        "memory",
        "",
        "",
        None,
        "",
        None,
        None,
        device="cpu",
        status="error",
        note="NotImplementedError: FlexAttention does not support backward on CPU",
        cause=Cause.NEEDS_GPU,
    )
    # the cause decides, not the note's words: the same words without it are a plain failure ...
    plain = dataclasses.replace(gpu, cause="")
    alibi = next(
        o for o in recommendation(results(study, alibi=[plain]), study).outcomes if o.id == "alibi-off"
    )
    assert alibi.status == "not measured yet" and not alibi.needs_gpu
    # ... and the cause with other words needs a GPU all the same
    other = dataclasses.replace(gpu, note="the kernel has no backward here")
    alibi = next(
        o for o in recommendation(results(study, alibi=[other]), study).outcomes if o.id == "alibi-off"
    )
    assert alibi.status == "needs a GPU"
    r = results(study, alibi=[gpu], cache=[probe(study, "fix:cache-fix", 0.0)])
    outcomes = {o.id: o for o in recommendation(r, study).outcomes}
    status = {k: o.status for k, o in outcomes.items()}
    assert status["alibi-off"] == "needs a GPU"
    # the memory error names every touched memory metric it stands for, each once: the expected peak, and
    # the others the remedy does not expect to move (the prefill, the cached decode, ...)
    gpu = outcomes["alibi-off"].needs_gpu
    assert gpu[0].startswith("peak_train[category=total]: needs a GPU (NotImplementedError: FlexAttention")
    assert [g.split(":")[0] for g in gpu[1:]] == [
        "peak_train_part[part=alibi_bias]",
        "peak_prefill[category=total]",
        "peak_decode_cached[category=total]",
        "kv_cache_size",
        "cache_object",
    ]
    assert status["cache-fix"] == "fails"  # its probe still fails
    assert status["tie"] == "not measured yet"
    r = Results.from_records([probe(study, "base", 1.0), probe(study, "fix:cache-fix", 0.0)])
    cache = next(o for o in recommendation(r, study).outcomes if o.id == "cache-fix")
    assert "probe kv_cache passed before and fails after" in cache.reasons


def test_a_forecast_the_machine_cannot_make_is_named_with_its_reason(study):
    """A FlexAttention design's forecast is skipped with a reason (measurements/forecast/run.py FLEX); the
    remedy lists the touched forecast metric with that reason, as it lists a memory error."""
    from orca_analysis.measurements.forecast.run import FLEX

    labels = {"gpu": "h100-sxm-80gb", "compute": "bfloat16", "step": "train", "category": "total"}
    skipped = Record(
        study.name,
        "fix:alibi-off",
        "forecast",
        "gpu_peak",
        "predicted",
        None,
        "bytes",
        64,
        1,
        device="cpu",
        status="skipped",
        note=FLEX,
        cause=Cause.NEEDS_GPU,
        labels=labels,
    )
    other = Record(
        study.name,
        "fix:alibi-off",
        "forecast",
        "gpu_peak",
        "predicted",
        None,
        "bytes",
        64,
        1,
        device="cpu",
        status="skipped",
        note="another reason",
        labels={**labels, "step": "prefill"},
    )
    outcome = next(
        o
        for o in recommendation(results(study, alibi=[other, skipped]), study).outcomes
        if o.id == "alibi-off"
    )
    line = "gpu_peak[gpu=h100-sxm-80gb][compute=bfloat16][step=train][category=total]: needs a GPU (FlexAttention"
    assert [g for g in outcome.needs_gpu if g.startswith("gpu_peak")] == [
        line + short(FLEX)[len("FlexAttention") :] + ")"
    ]
    # the reason cut at a word: 160 characters at most, with an ellipsis
    assert short(FLEX).endswith(" ...") and len(short(FLEX)) <= 164 and FLEX.startswith(short(FLEX)[:-4])


def test_the_report_lists_each_thing_that_needs_a_gpu_once(study):
    """A loss that needs a GPU is a reason (its expectation) and stands in needs_gpu (the status); the report's
    view lists the needs_gpu lines that are not reasons already, the JSON every one."""
    from orca_analysis.report.recommendations_view import recommendations_view

    gpu = Record(
        study.name,
        "fix:cache-fix",
        "training",
        "",
        "",
        None,
        "",
        None,
        None,
        device="cpu",
        status="error",
        note="NotImplementedError: FlexAttention does not support backward on CPU",
        cause=Cause.NEEDS_GPU,
    )
    r = results(study, cache=[probe(study, "fix:cache-fix", 1.0), gpu])
    outcome = next(o for o in recommendation(r, study).outcomes if o.id == "cache-fix")
    view = next(v for v in recommendations_view(r, study).remedies if v.id == "cache-fix")
    said = [g for g in outcome.needs_gpu if g in outcome.reasons]
    assert said and view.needs_gpu == [g for g in outcome.needs_gpu if g not in said]
