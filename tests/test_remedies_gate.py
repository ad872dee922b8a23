"""The remedies' quality gate, their probe outcomes, the builder's rules on a combination and the catalogue's
measurements, from records built by hand (the catalogue and the helpers: test_remedies.py)."""

import pytest
from test_remedies import _rec, losses, params, probe, remedy_study, results

from orca_analysis.catalog.vocabulary import Cause
from orca_analysis.remedies.recommend import _incompatible, probes, recommendation
from orca_analysis.report.recommendations_view import value_text
from orca_analysis.results.query import Results
from orca_analysis.study.kwargs import LAYERS


@pytest.fixture
def study(write_study, tiny_study_path, tmp_path):
    return remedy_study(write_study, tiny_study_path, tmp_path)


def test_a_loss_gate_passes_only_when_the_paired_interval_lies_below_delta(study):
    # +0.010, +0.020, +0.000 by seed: mean 0.01, sd 0.01, se 0.0057735, half width 0.024841:
    # [-0.0148, +0.0348] straddles +0.02: the data cannot tell, so the remedy is inconclusive, not taken
    r = results(
        study, cache=[probe(study, "fix:cache-fix", 1.0), *losses(study, "fix:cache-fix", [2.00, 2.02, 2.01])]
    )
    rec_ = recommendation(r, study)
    cache = next(o for o in rec_.outcomes if o.id == "cache-fix")
    assert cache.status == "inconclusive" and any("straddles +0.02" in why for why in cache.reasons)
    assert "cache-fix" not in rec_.taken


def test_a_loss_gate_before_the_initial_fall_is_not_testable(study):
    # the runs are at 2.00 nats/token; a bigram count model of the same tokens reaches 1.80
    bigram = _rec(
        study, "base", "ngram_val_loss", "count_model", 1.80, {"order": 2, "tokenizer": "byte"}, scale="proxy"
    )
    r = results(
        study,
        cache=[
            probe(study, "fix:cache-fix", 1.0),
            *losses(study, "fix:cache-fix", [1.998, 2.010, 2.022]),
            bigram,
        ],
    )
    cache = next(o for o in recommendation(r, study).outcomes if o.id == "cache-fix")
    assert cache.status == "not testable at this scale"
    assert any("not past the initial fall" in why for why in cache.reasons)


def test_the_recommended_design_is_held_to_the_quality_gate_of_its_remedies(study):
    # cache-fix passes on its own, and the combined design is cache-fix's own model; the recommended
    # variant's loss is read against the base's, seed by seed, with cache-fix's delta
    r = results(
        study,
        cache=[probe(study, "fix:cache-fix", 1.0), *losses(study, "fix:cache-fix", [1.998, 2.010, 2.022])],
    )
    rec_ = recommendation(r, study)
    assert rec_.measured.status == "passes"
    assert any("val_loss_final" in why and "lies below +0.02" in why for why in rec_.measured.reasons)


def test_a_remedy_whose_loss_the_proxy_cannot_judge_is_not_testable(study):
    # the training measurement did not train the tied variant: its vocabulary share on a byte proxy is far
    # from the design's; the skipped records say so in words and by their cause, which the gate acts on
    why = "not testable at this scale: the change acts through the vocabulary, which holds 4.8% of ..."

    def skipped(cause: str) -> list:
        return [
            _rec(
                study,
                "fix:tie",
                "val_loss_final",
                "measured",
                None,
                {"seed": s, "tokens": 32768, "flops": 1e9},
                status="skipped",
                note=why,
                cause=cause,
                scale="proxy",
            )
            for s in range(3)
        ]

    r = results(study, tie=[params(study, "fix:tie", 600), *skipped(Cause.NOT_TESTABLE)])
    rec_ = recommendation(r, study)
    tie = next(o for o in rec_.outcomes if o.id == "tie")
    assert tie.status == "not testable at this scale" and any(why in w for w in tie.reasons)
    assert "tie" not in rec_.taken
    # the same words without the cause: the gate no longer reads notes, so the loss is just not measured
    r = results(study, tie=[params(study, "fix:tie", 600), *skipped(Cause.NONE)])
    tie = next(o for o in recommendation(r, study).outcomes if o.id == "tie")
    assert tie.status == "not measured yet" and any(why in w for w in tie.reasons)


def test_a_fraction_reads_as_a_percentage():
    """The remedies' tables show a fraction (an MFU ceiling) as a percentage: 0.08129 -> 8.1%."""
    assert (value_text(0.08129, "fraction"), value_text(0.4303, "fraction")) == ("8.1%", "43.0%")


def test_a_probe_crash_is_read_from_its_outcome_label_not_its_note(study):
    """Before, 'crash' was told from 'fail' by 'Error' in the note: a note naming an error made a failure a crash,
    and an exception without 'Error' in its name (a StopIteration) made a crash a failure."""
    crashed = _rec(
        study,
        "base",
        "kv_cache",
        "measured",
        0.0,
        {"case": "as_built", "outcome": "crash"},
        note="StopIteration: the cache ran dry",
    )
    failed = _rec(
        study,
        "fix:cache-fix",
        "kv_cache",
        "measured",
        0.0,
        {"case": "as_built", "outcome": "fail"},
        note="max |diff| 0.3 > tol 1e-4 (an Error of the cache)",
    )
    r = Results.from_records([crashed, failed])
    assert probes(r, "base") == {"kv_cache": "crash"} and probes(r, "fix:cache-fix") == {"kv_cache": "fail"}


def test_a_combination_is_refused_by_the_builders_own_rules(study):
    """The recommendation checks a combination by the builder's rules (realisation_problems), not a copy of one
    of them: ALiBi in the kernel with attention dropout is refused (before, only a missing alibi_pos_bias was)."""
    cfg = study.base.with_values({(LAYERS, "alibi_pos_bias"): True, (LAYERS, "alibi_in_kernel"): True})
    assert _incompatible(cfg) == []
    dropout = cfg.with_values({(LAYERS, "attn_dropout"): 0.1})
    assert _incompatible(dropout) == [
        "'alibi_in_kernel' does not cover attention dropout (FlexAttention has no "
        "dropout): remove 'attn_dropout'"
    ]
    assert (
        "needs 'alibi_pos_bias: true'"
        in _incompatible(cfg.with_values({(LAYERS, "alibi_pos_bias"): False}))[0]
    )


def test_a_remedys_measurements_come_from_the_catalogue():
    """A remedy's variant runs every measurement whose spec is on_remedies: all but the timed end-to-end ones."""
    from orca_analysis.catalog.declared import SPECS
    from orca_analysis.study.remedies import REMEDY_MEASUREMENTS

    assert set(SPECS) - set(REMEDY_MEASUREMENTS) == {"speed", "attention_speed"}
