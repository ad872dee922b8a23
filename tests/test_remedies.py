"""The remedy catalogue (strict loading), remedies in a study, and the decisions of remedies/recommend.py
from records built by hand: each outcome, the grouping, the conflicts, and the combined design."""

import dataclasses

import pytest
from test_claims import rec, seeds

from orca_analysis.catalog.metrics import lookup
from orca_analysis.errors import StudyError
from orca_analysis.remedies.recommend import recommendation
from orca_analysis.results import Record
from orca_analysis.results.query import Results
from orca_analysis.study import load_study
from orca_analysis.study.remedies import RemedyError, load_remedies

CATALOGUE = """remedies:
  - id: cache-fix
    finding: cached-decoding
    metric: kv_cache
    group: cache
    problem: cached decoding is wrong.
    why: without token shift it is right.
    change: {shift_tokens: 0, alibi_pos_bias: false}
    expects:
      - {metric: kv_cache, labels: {case: as_built}, direction: pass}
      - {metric: val_loss_final, direction: no_worse, delta: 0.02}
  - id: alibi-off
    finding: alibi-dense-bias
    metric: alibi_share_of_peak
    group: bias
    problem: the bias is big.
    why: no bias, no tensor.
    change: {alibi_pos_bias: false}
    expects:
      - {metric: peak_train, method: simulated, labels: {category: total}, direction: lower}
  - id: xpos-on-alibi
    finding: alibi-dense-bias
    metric: alibi_share_of_peak
    group: bias2
    problem: the bias is big.
    why: a conflicting change, for the test.
    change: {alibi_pos_bias: true, alibi_num_heads: 1}
    expects:
      - {metric: peak_train, method: simulated, labels: {category: total}, direction: lower}
  - id: tie
    finding: embedding-share
    metric: embedding_and_logits_share
    problem: two tables.
    why: one table.
    change: {tie_embedding: true}
    expects:
      - {metric: params, method: counter, labels: {component: total}, direction: lower}
      - {metric: val_loss_final, direction: no_worse, delta: 0.02}
"""


def remedy_study(write_study, tiny_study_path, tmp_path):
    """tiny.yaml with the remedies of CATALOGUE."""
    (tmp_path / "remedies.yaml").write_text(CATALOGUE)
    text = tiny_study_path.read_text() + "remedies: remedies.yaml\n"
    return load_study(str(write_study(text)))


@pytest.fixture
def study(write_study, tiny_study_path, tmp_path):
    return remedy_study(write_study, tiny_study_path, tmp_path)


def test_a_study_makes_one_variant_per_remedy(study):
    fixes = {v.variant_id: v for v in study.remedy_variants()}
    assert list(fixes) == ["fix:cache-fix", "fix:alibi-off", "fix:xpos-on-alibi", "fix:tie"]
    cache = fixes["fix:cache-fix"]
    assert cache.role == "remedy" and cache.config.layers["shift_tokens"] == 0
    assert cache.config.layers["alibi_pos_bias"] is False and cache.config.layers["dim"] == 64
    assert fixes["fix:tie"].config.wrapper["tie_embedding"] is True
    assert study.variants()[0].config.layers["shift_tokens"] == 1  # the base is left alone


@pytest.mark.parametrize(
    "edit, message",
    [
        (("    group: cache\n", "    colour: red\n"), "unknown key 'colour'"),
        (("finding: cached-decoding", "finding: cache-bug"), "unknown finding 'cache-bug'"),
        (
            ("    metric: kv_cache\n    group", "    metric: params\n    group"),
            "is about metric 'kv_cache', not 'params'",
        ),
        (("{shift_tokens: 0, alibi_pos_bias: false}", "{shift_token: 0}"), "unknown key 'shift_token'"),
        (("direction: pass}", "direction: up}"), "direction must be one of"),
        (
            ("direction: no_worse, delta: 0.02}\n  - id: alibi", "direction: no_worse}\n  - id: alibi"),
            "needs 'delta'",
        ),
        (("{metric: kv_cache, labels", "{metric: kv_cash, labels"), "unknown metric 'kv_cash'"),
        (("id: tie\n", "id: alibi-off\n"), "duplicate id 'alibi-off'"),
    ],
)
def test_a_malformed_catalogue_names_each_problem(tmp_path, edit, message):
    path = tmp_path / "bad.yaml"
    path.write_text(CATALOGUE.replace(*edit, 1))
    with pytest.raises(RemedyError) as err:
        load_remedies(path)
    assert any(message in p and "line" in p for p in err.value.problems), err.value.problems


@pytest.mark.parametrize(
    "edit, message",
    [
        (("    why: one table.\n", "    why: one table.\n    applies_to: depth=7\n"), "does not have"),
        (("change: {tie_embedding: true}", "change: {shift_tokens: 1}"), "leaves variant 'base' unchanged"),
        (("change: {tie_embedding: true}", "change: {dim: 32}"), "makes the same model as dim=32"),
        (("change: {tie_embedding: true}", "change: {alibi_num_heads: 9}"), "cannot exceed 'heads'"),
    ],
)
def test_a_remedy_that_cannot_apply_is_a_study_error(write_study, tiny_study_path, tmp_path, edit, message):
    (tmp_path / "remedies.yaml").write_text(CATALOGUE.replace(*edit, 1))
    with pytest.raises(StudyError) as err:
        load_study(str(write_study(tiny_study_path.read_text() + "remedies: remedies.yaml\n")))
    assert any(message in p for p in err.value.problems), err.value.problems


def probe(study, vid, value, note=""):
    """A kv_cache probe record as probes writes it: a note with an exception's text marks a crash."""
    outcome = "pass" if value == 1.0 else "crash" if note else "fail"
    return _rec(
        study, vid, "kv_cache", "measured", value, {"case": "as_built", "outcome": outcome}, note=note
    )


def _rec(study, vid, metric, method, value, labels=None, seq_len=None, **kw):
    """rec() for any variant, remedy variants included (their swept values are the base's)."""
    if vid in {v.variant_id for v in study.variants()}:
        return rec(study, vid, metric, method, value, labels, seq_len, **kw)
    m = lookup(metric)
    return Record(
        study.name,
        vid,
        "x",
        metric,
        method,
        value,
        m.unit,
        seq_len,
        1 if seq_len else None,
        device="cpu",
        labels=labels or {},
        swept=study.variants()[0].swept,
        **kw,
    )


def peaks(study, vid, values):
    return [
        _rec(study, vid, "peak_train", "simulated", v, {"category": "total"}, s)
        for s, v in zip((32, 64), values, strict=True)
    ]


def losses(study, vid, values):
    out = seeds(study, "base", "val_loss_final", values, {"tokens": 32768, "flops": 1e9})
    return [dataclasses.replace(r, variant_id=vid) for r in out]


def params(study, vid, n):
    return _rec(study, vid, "params", "counter", n, {"component": "total"})


def results(study, **overrides):
    """Base: kv_cache crashes, peaks 100/400, loss 2.00 +- 0.01, 1000 params. Each remedy, as given."""
    records = [
        probe(study, "base", 0.0, "RuntimeError: shapes"),
        *peaks(study, "base", [100, 400]),
        *losses(study, "base", [1.99, 2.00, 2.01]),
        params(study, "base", 1000),
    ]
    for rs in overrides.values():
        records += rs
    return Results.from_records(records)


def test_each_outcome_and_the_combined_design(study):
    r = results(
        study,
        # passes: the probe passes; the loss moves +0.008, +0.010, +0.012 by seed (paired): below +0.02
        cache=[probe(study, "fix:cache-fix", 1.0), *losses(study, "fix:cache-fix", [1.998, 2.010, 2.022])],
        # passes: lower at both lengths
        alibi=peaks(study, "fix:alibi-off", [90, 100]),
        # fails: higher at 64 tokens
        xpos=peaks(study, "fix:xpos-on-alibi", [90, 450]),
        # fails: the loss is worse by 1.0 at every seed, interval [+1.0, +1.0] beyond +0.02
        tie=[params(study, "fix:tie", 600), *losses(study, "fix:tie", [2.99, 3.00, 3.01])],
    )
    rec_ = recommendation(r, study)
    status = {o.id: o.status for o in rec_.outcomes}
    assert status == {"cache-fix": "passes", "alibi-off": "passes", "xpos-on-alibi": "fails", "tie": "fails"}
    tie = next(o for o in rec_.outcomes if o.id == "tie")
    assert any("interval lies beyond +0.02" in why for why in tie.reasons)
    xpos = next(o for o in rec_.outcomes if o.id == "xpos-on-alibi")
    assert any("400 -> 450 at 64 tokens, not lower" in why for why in xpos.reasons)
    # cache-fix and alibi-off agree (alibi_pos_bias false): the design is cache-fix's own model
    assert rec_.taken == ["cache-fix", "alibi-off"]
    assert rec_.change == {"shift_tokens": 0, "alibi_pos_bias": False}
    assert rec_.variant.variant_id == "fix:cache-fix" and rec_.variant.only == ()
    cache = next(o for o in rec_.outcomes if o.id == "cache-fix")
    loss = next(c for c in cache.changes if c.metric == "val_loss_final")
    # paired by seed: +0.008, +0.010, +0.012: mean 0.010, sd 0.002, se 0.002 / sqrt(3) = 0.0011547;
    # t(0.975, 2) = 4.302653: half width 0.0049683, [+0.0050, +0.0150], below delta 0.02
    assert loss.effect.estimate == pytest.approx(0.01) and loss.effect.kind == "paired"
    assert loss.effect.ci_high - loss.effect.estimate == pytest.approx(4.302653 * 0.002 / 3**0.5, rel=1e-5)
    # the measured design: the remedy's own results against the base
    assert rec_.measured is not None and rec_.measured.probes == {"kv_cache": "pass"}


def test_a_conflicting_remedy_is_skipped_with_its_reason(study):
    r = results(
        study,
        cache=[probe(study, "fix:cache-fix", 1.0), *losses(study, "fix:cache-fix", [1.991, 2.000, 2.009])],
        alibi=peaks(study, "fix:alibi-off", [90, 450]),  # fails
        xpos=peaks(study, "fix:xpos-on-alibi", [90, 100]),  # passes, but sets alibi_pos_bias true
    )
    rec_ = recommendation(r, study)
    assert rec_.taken == ["cache-fix"]
    assert (
        "xpos-on-alibi",
        "conflicts with the remedies taken: it sets alibi_pos_bias otherwise",
    ) in rec_.skipped


def test_recommendations_json_has_the_issue_schema(study):
    from orca_analysis.report.recommendations_view import recommendations_view

    r = results(
        study,
        cache=[
            probe(study, "fix:cache-fix", 1.0),
            *losses(study, "fix:cache-fix", [2.00, 2.01, 2.02]),
            *peaks(study, "fix:cache-fix", [90, 100]),
        ],
        alibi=peaks(study, "fix:alibi-off", [90, 100]),
    )
    view = recommendations_view(r, study)
    doc = view.json
    cache = next(x for x in doc["remedies"] if x["id"] == "cache-fix")
    assert cache["change"] == {"shift_tokens": 0, "alibi_pos_bias": False}
    assert cache["probes"] == {"kv_cache": "pass"} and cache["status"] == "passes"
    peak = next(e for e in cache["effects"] if e["metric"] == "peak_train" and e["seq_len"] == 64)
    # before 400, after 100: bytes, the metric's declared unit; simulated; exact, so no interval
    assert (peak["before"], peak["after"], peak["unit"], peak["ci_low"]) == (400, 100, "bytes", None)
    # the loss: +0.01 at every seed, paired; the gate's delta beside it
    loss = next(e for e in cache["effects"] if e["metric"] == "val_loss_final")
    assert (loss["paired"], loss["n"], loss["ci_low"], loss["why_unpaired"]) == (
        True,
        3,
        pytest.approx(0.01),
        None,
    )
    gate = next(e for e in cache["expects"] if e["direction"] == "no_worse")
    assert (gate["metric"], gate["delta"]) == ("val_loss_final", 0.02)
    assert doc["recommended"]["change"] == {"shift_tokens": 0, "alibi_pos_bias": False}
    assert doc["recommended"]["probes"] == {"kv_cache": "pass"}
    assert "shift_tokens: 0" in doc["recommended"]["study_yaml"]
    # the one-screen review's headline: the training-step peak at the longest length, 400 -> 100 bytes
    assert any(h.metric == "training-step peak" and h.at == "64 tokens" for h in view.headline)


def test_the_orca_study_brings_the_builtin_remedies():
    study = load_study("orca")
    ids = [v.variant_id for v in study.remedy_variants()]
    assert ids == [
        "fix:cache-shift-off-alibi-off",
        "fix:cache-shift-off-xpos-off",
        "fix:cache-shift-off-alibi-in-kernel",
        "fix:alibi-in-kernel",
        "fix:alibi-off",
        "fix:tie-embedding",
        "fix:heads16-split-width",
        "fix:heads4-split-width",
    ]
    heads16 = study.remedy_variants()[-2].config
    assert heads16.heads * heads16.dim_head == heads16.dim  # 16 x 32 = 512: the heads split the width
