"""Paired comparisons, positive controls and the read criterion, on made-up per-seed numbers whose
intervals are derived by hand beside each assertion (claims/stats.py, claims/rules_quality.py)."""

import pytest
from test_claims import ev, final_loss, rec, seeds

from orca_analysis.catalog.vocabulary import Verdict
from orca_analysis.claims.rules import RULES
from orca_analysis.claims.stats import PAIRED, UNPAIRED, contrast, paired, paired_t
from orca_analysis.study import load_study

# t quantiles used below (scipy.stats.t.ppf): t(0.975, 2) = 4.302653, t(0.80, 2) = 1.060660
T975_2, T80_2 = 4.302653, 1.060660


@pytest.fixture
def study(tiny_study_path):
    return load_study(str(tiny_study_path))  # dim axis: dim=32 and the base (64)


def test_paired_interval_by_hand_excludes_delta_where_welch_straddles():
    # seed:            0     1     2
    after = {0: 2.44, 1: 2.55, 2: 2.63}
    before = {0: 2.40, 1: 2.50, 2: 2.60}
    # per-seed differences 0.04, 0.05, 0.03: mean 0.04, sd sqrt((0 + 0.01^2 + 0.01^2) / 2) = 0.01,
    # se = 0.01 / sqrt(3) = 0.0057735; half width 4.302653 * 0.0057735 = 0.024841: [0.015159, 0.064841]
    e = paired([after, before], [1, -1])
    assert e.kind == PAIRED and e.n == 3 and e.df == 2 and "paired t" in e.method
    assert (e.estimate, e.ci_low, e.ci_high) == pytest.approx((0.04, 0.015159, 0.064841), abs=1e-6)
    # minimal detectable effect at 80% power: (4.302653 + 1.060660) * 0.0057735 = 0.030965
    assert e.mde == pytest.approx((T975_2 + T80_2) * 0.01 / 3**0.5, abs=1e-6)
    # unpaired, the same numbers: variances 0.01 (before) and 0.0091 (after: deviations -0.1, 0.01, 0.09);
    # se^2 = 0.01/3 + 0.0091/3 = 0.0063667 (se 0.079791); Welch df = se^4 / ((0.01/3)^2/2 + (0.0091/3)^2/2)
    # = 3.991; t(0.975, 3.991) = 2.7776: 0.04 +- 0.22163 = [-0.18173, +0.26173]
    w = contrast([list(after.values()), list(before.values())], [1, -1])
    assert w.kind == UNPAIRED and (w.ci_low, w.ci_high) == pytest.approx((-0.18173, 0.26173), abs=1e-5)
    delta = 0.01  # the paired interval lies beyond delta; the unpaired one straddles it (and 0)
    assert e.ci_low > delta and w.ci_low < 0 < delta < w.ci_high


def test_arms_that_share_too_few_seeds_fall_back_to_welch_and_say_why():
    e = paired([{0: 1.0, 1: 2.0}, {1: 1.5, 2: 3.0}], [1, -1])  # seed 1 alone is common
    assert e.kind == UNPAIRED and "share 1 seed" in e.why_unpaired and "unpaired" in e.method


def test_decreases_with_pairs_the_arms_by_seed(study):
    # dim=32 -> base (64): per seed 2.44 -> 2.40, 2.55 -> 2.50, 2.63 -> 2.60: falls 0.04, 0.05, 0.03, the
    # interval of the first test, [+0.0152, +0.0648]: beyond delta 0.01 (Welch's [-0.18, +0.26] is not)
    records = [
        *final_loss(study, "dim=32", [2.44, 2.55, 2.63]),
        *final_loss(study, "base", [2.40, 2.50, 2.60]),
    ]
    v = RULES["decreases_with"](ev(study, records), metric="val_loss_final", axis="dim", delta=0.01)
    assert v.verdict == "supported" and v.effect.kind == PAIRED
    assert (v.effect.ci_low, v.effect.ci_high) == pytest.approx((0.015159, 0.064841), abs=1e-6)


def ngram(study, value, device="cpu"):
    return rec(
        study,
        "base",
        "ngram_val_loss",
        "count_model",
        value,
        {"order": 2, "tokenizer": "byte"},
        device=device,
        scale="proxy",
    )


def test_a_comparison_is_read_only_past_the_initial_fall(study):
    records = [
        *final_loss(study, "dim=32", [2.44, 2.55, 2.63]),
        *final_loss(study, "base", [2.40, 2.50, 2.60]),
    ]
    # a bigram count model reaches 2.45 nats/token: dim=32's mean 2.54 is not below it
    v = RULES["decreases_with"](
        ev(study, [*records, ngram(study, 2.45)]), metric="val_loss_final", axis="dim", delta=0.01
    )
    assert v.verdict == Verdict.NOT_TESTABLE and "dim=32 2.540 (bigram 2.450)" in v.reason
    # below a bigram at 2.60: read as before
    v = RULES["decreases_with"](
        ev(study, [*records, ngram(study, 2.60)]), metric="val_loss_final", axis="dim", delta=0.01
    )
    assert v.verdict == "supported"


def extrapolation(study, rises):
    """extrapolation_val_loss per scheme at 16 and 64 tokens, three seeds: the loss at 16 is 2.0 + 0.1 * seed
    (models differ by seed), at 64 that plus the scheme's per-seed rise."""
    out = []
    for pos, per_seed in rises.items():
        for eval_len in (16, 64):
            losses = [2.0 + 0.1 * s + (r if eval_len == 64 else 0.0) for s, r in enumerate(per_seed)]
            out += seeds(
                study,
                "base",
                "extrapolation_val_loss",
                losses,
                {"pos": pos, "train_len": 16, "eval_len": eval_len},
            )
    return out


def test_extrapolation_is_not_testable_when_a_positive_control_fails(study):
    fails = (0.20, 0.22, 0.18)  # rise 0.20, sd 0.02: se 0.011547, half 0.049683: [+0.150, +0.250]
    flat = (0.011, 0.009, 0.010)  # rise 0.010, sd 0.001: [+0.0075, +0.0125]: not beyond delta 0.01
    keeps = (-0.02, -0.01, -0.03)  # rise -0.02, sd 0.01: half 0.024841: [-0.0448, +0.0048]: below 0.01
    records = extrapolation(study, {"alibi": keeps, "abs": fails, "none": fails})
    v = RULES["extrapolation"](ev(study, records), scheme="alibi", controls=("abs", "none"), delta=0.01)
    assert v.verdict == "supported" and v.effect.kind == PAIRED
    assert (v.effect.ci_low, v.effect.ci_high) == pytest.approx((-0.044841, 0.004841), abs=1e-6)
    assert v.control.shows_power and v.control.effect.ci_low == pytest.approx(0.150317, abs=1e-6)
    # learned absolute positions barely rise at this budget: the test cannot see a failure
    records = extrapolation(study, {"alibi": keeps, "abs": flat, "none": fails})
    v = RULES["extrapolation"](ev(study, records), scheme="alibi", controls=("abs", "none"), delta=0.01)
    assert v.verdict == Verdict.NOT_TESTABLE and not v.control.shows_power and "abs" in v.reason
    assert v.control.effect.ci_low == pytest.approx(0.010 - T975_2 * 0.001 / 3**0.5, abs=1e-6)


def test_head_robustness_needs_heads_that_matter(study, monkeypatch):
    import dataclasses

    from orca_analysis.study.schema import Sweep

    study = dataclasses.replace(study, sweep=Sweep("one_at_a_time", {("attn_layers", "heads"): [2, 8]}))
    ids = {v.config.heads: v.variant_id for v in study.variants()}

    def verdict(few, many):
        records = [
            *seeds(study, ids[2], "head_ablation_quarter_mean", few),
            *seeds(study, ids[8], "head_ablation_quarter_mean", many),
        ]
        return RULES["ablation_robustness"](
            ev(study, records), metric="head_ablation_quarter_mean", axis="heads", delta=0.01
        )

    # 2 heads: silencing a quarter costs 0.0087 on average: below delta 0.01, so no fall beyond it is possible
    v = verdict([0.0085, 0.0087, 0.0089], [0.0001, 0.0002, 0.0003])
    assert v.verdict == Verdict.NOT_TESTABLE and "barely matter" in v.reason
    # 2 heads: 0.20, 0.21, 0.19 (control [0.175, 0.225]); 8 heads 0.05 +- 0.01: falls 0.15 +- 0 per seed
    v = verdict([0.20, 0.21, 0.19], [0.05, 0.06, 0.04])
    assert v.verdict == "supported" and v.control.shows_power and v.effect.estimate == pytest.approx(0.15)


def test_paired_t_of_one_seed_has_no_interval():
    e = paired_t([0.5])
    assert e.ci_low is None and e.n == 1


def test_the_read_criterion_reference_by_hand():
    import math

    import numpy as np

    from orca_analysis.instruments.ngram import ngram_loss

    train, val = np.array([0, 1, 0, 1, 0, 1]), np.array([0, 1])
    # unigrams, add-one: p(1) = (3 + 1) / (6 + 2) = 0.5; bigram context 0 was followed 3 times (always by
    # 1: c(0, 1) = 3, c(0) = 3, T(0) = 1 distinct follower): Witten-Bell p(1 | 0) = (3 + 1 x 0.5) / (3 + 1)
    assert ngram_loss(train, val, 2, 2) == pytest.approx(-math.log(3.5 / 4))
    assert ngram_loss(train, val, 2, 1) == pytest.approx(
        -math.log(0.5)
    )  # order 1 scores both tokens: 0.5 each
    # an unseen context falls back to the unigram: token 1 after 1 never happened (c(1) = 2, T(1) = 1 ...)
    # p(1 | 1) = (0 + 1 x 0.5) / (2 + 1) = 1/6
    assert ngram_loss(train, np.array([1, 1]), 2, 2) == pytest.approx(-math.log(0.5 / 3))


def overfit_curves(study, vid, held_out, train=None):
    """overfit_val_loss (and overfit_train_loss) at steps 8, 16, 24 over three seeds: held_out[k] is the
    per-seed values at the k-th step."""
    out = []
    for k, (step, values) in enumerate(zip((8, 16, 24), held_out, strict=True)):
        labels = {"step": step, "tokens": step * 1024, "flops": 1e6}
        out += seeds(study, vid, "overfit_val_loss", values, labels)
        out += seeds(study, vid, "overfit_train_loss", train[k] if train else [2.0 - 0.5 * k] * 3, labels)
    return out


def test_overfitting_reads_held_out_loss_and_needs_overfitting_to_happen(study):
    # dim=32 -> base (64): the base's held-out loss goes 3.0 -> 2.9 -> 3.4 (+0.5 past its best point);
    # dim=32's 3.0 -> 2.95 -> 3.1: at the end the wider base is worse by 0.30 +- 0 per seed
    narrow = overfit_curves(study, "dim=32", [[3.0] * 3, [2.95] * 3, [3.10, 3.11, 3.09]])
    wide = overfit_curves(study, "base", [[3.0] * 3, [2.90] * 3, [3.40, 3.41, 3.39]])
    v = RULES["overfitting"](ev(study, narrow + wide), axis="dim", delta=0.01)
    assert v.verdict == "supported" and v.effect.estimate == pytest.approx(0.30)
    assert v.control.shows_power and v.control.effect.estimate == pytest.approx(0.50)
    assert any(r["label"] == "dim=64: training" for r in v.evidence)  # the training loss beside it
    # the held-out loss still falls at the end: no overfitting to compare, whatever the training loss does
    narrow = overfit_curves(study, "dim=32", [[3.0] * 3, [2.95] * 3, [2.90, 2.91, 2.89]])
    wide = overfit_curves(study, "base", [[3.0] * 3, [2.90] * 3, [2.80, 2.81, 2.79]])
    v = RULES["overfitting"](ev(study, narrow + wide), axis="dim", delta=0.01)
    assert v.verdict == Verdict.NOT_TESTABLE and "no overfitting to see" in v.reason


def test_the_summary_counts_not_testable_apart():
    from orca_analysis.claims import ClaimResult, Judgement, load_catalogue
    from orca_analysis.report.claims_view import claims_json, verdict_counts, verdict_counts_by_scale

    claims = load_catalogue()[:4]
    verdicts = [
        Judgement(Verdict.NOT_TESTABLE, "control failed", scale="proxy"),
        Judgement("inconclusive", "", scale="proxy"),
        Judgement("supported", "", scale="analytic"),
        Judgement(Verdict.NOT_TESTABLE, "tier", scale="proxy"),
    ]
    results = [ClaimResult(c, v) for c, v in zip(claims, verdicts, strict=True)]
    counts = {c.verdict: c.count for c in verdict_counts(results)}
    assert counts[Verdict.NOT_TESTABLE] == 2 and counts["inconclusive"] == 1 and counts["supported"] == 1
    by_scale = {s.scale: {c.verdict: c.count for c in s.counts} for s in verdict_counts_by_scale(results)}
    assert by_scale == {
        "full": {**dict.fromkeys(counts, 0), "supported": 1},
        "proxy": {**dict.fromkeys(counts, 0), Verdict.NOT_TESTABLE: 2, "inconclusive": 1},
    }
    # claims.json: an exact or missing effect has null interval fields, its kind included
    row = claims_json(results)[0]
    assert row["verdict"] == Verdict.NOT_TESTABLE and row["paired"] is None and row["control"] is None


def test_claims_json_carries_the_interval_kind_n_delta_and_the_control(study):
    from orca_analysis.claims import evaluate, load_catalogue
    from orca_analysis.report.claims_view import claims_json
    from orca_analysis.results.query import Results

    (claim,) = [c for c in load_catalogue() if c.id == "purpose-alibi"]
    records = extrapolation(
        study, {"alibi": (-0.02, -0.01, -0.03), "abs": (0.20, 0.22, 0.18), "none": (0.20, 0.22, 0.18)}
    )
    (row,) = claims_json(evaluate([claim], Results.from_records(records), study))
    assert row["verdict"] == "supported" and row["paired"] is True and row["why_unpaired"] is None
    assert row["n"] == 3 and row["delta"] == 0.01 and row["interval"].startswith("paired t")
    assert row["mde"] == pytest.approx((T975_2 + T80_2) * 0.01 / 3**0.5, abs=1e-6)  # sd 0.01 of the rises
    assert row["control"]["shows_power"] and row["control"]["name"].startswith("abs")
