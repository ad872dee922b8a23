"""Every outcome of the rules the claims tests do not already cover in full: grows_with, extrapolation,
gradient_health and kernel_ran, from records built by hand (the helpers of test_claims)."""

import pytest
from test_claims import ev, rec, seeds

from orca_analysis.claims.rules import RULES
from orca_analysis.study import load_study


@pytest.fixture
def study(tiny_study_path):
    return load_study(str(tiny_study_path))  # dim axis: dim=32 and the base (64)


def peak(study, vid, value):
    return rec(study, vid, "peak_train", "simulated", value, {"category": "total"}, 32)


def test_grows_with_every_outcome(study):
    rule, args = RULES["grows_with"], {"metric": "peak_train", "axis": "dim", "method": "simulated",
                                        "labels": {"category": "total"}}  # fmt: skip
    assert (
        rule(ev(study, [peak(study, "dim=32", 100), peak(study, "base", 150)]), **args).verdict == "supported"
    )
    assert (
        rule(ev(study, [peak(study, "dim=32", 150), peak(study, "base", 100)]), **args).verdict
        == "contradicted"
    )
    # exact and flat: the claimed rise is not there
    assert (
        rule(ev(study, [peak(study, "dim=32", 100), peak(study, "base", 100)]), **args).verdict
        == "contradicted"
    )
    differ = ev(study, [peak(study, "dim=32", 100), peak(study, "base", 150)])
    differ.fidelity = {"heads": {"notes_differ": "heads have a fixed width"}}
    v = rule(differ, **args, qualify_with_fidelity="heads")
    assert v.verdict == "qualified" and "fixed width" in v.reason
    assert rule(ev(study, []), **args).verdict == "not tested yet"
    # over seeds (proxy): a rise of 0.05 whose interval straddles 0 is no support
    gaps = [*seeds(study, "dim=32", "overfit_gap", [0.10, 0.30], {"step": 8, "tokens": 1, "subset_tokens": 1,
                                                                   "epochs": 1.0}),
            *seeds(study, "base", "overfit_gap", [0.12, 0.38], {"step": 8, "tokens": 1, "subset_tokens": 1,
                                                                 "epochs": 1.0})]  # fmt: skip
    v = RULES["grows_with"](ev(study, gaps), metric="overfit_gap", axis="dim", last_step=True, delta=0.01)
    assert v.verdict == "inconclusive" and v.scale == "proxy" and v.reason.startswith("proxy scale")


def test_grows_with_attributes_the_rise_to_its_parts(study):
    def part(vid, name, value):
        return rec(study, vid, "peak_train_part", "simulated", value, {"part": name}, 32)

    records = [
        peak(study, "dim=32", 100),
        peak(study, "base", 150),
        part("dim=32", "alibi_bias", 10),
        part("base", "alibi_bias", 40),  # +30 of the +50 rise: 60%
        part("dim=32", "weight_state", 50),
        part("base", "weight_state", 60),  # +10: 20%
        part("dim=32", "other", 40),
        part("base", "other", 50),
    ]  # fmt: skip  (+10: 20%)
    v = RULES["grows_with"](ev(study, records), metric="peak_train", axis="dim", method="simulated",
                            labels={"category": "total"}, parts="peak_train_part")  # fmt: skip
    assert v.verdict == "supported"
    assert v.reason.endswith("of the rise (32 tokens): alibi_bias 60.0%, other 20.0%, weight_state 20.0%")
    assert [r["value"] for r in v.evidence if r["method"] == "peak_train_part rise"] == [
        30.0,
        20.0 - 10.0,
        10.0,
    ]


def extrapolation(study, rises):
    """extrapolation_val_loss of each scheme at the training length (2.0) and at 4x, two seeds 0.01 apart."""
    out = []
    for pos, rise in rises.items():
        for eval_len, loss in ((16, 2.0), (64, 2.0 + rise)):
            out += seeds(study, "base", "extrapolation_val_loss", [loss - 0.005, loss + 0.005],
                         {"pos": pos, "train_len": 16, "eval_len": eval_len})  # fmt: skip
    return out


def test_extrapolation_every_outcome(study):
    rule = RULES["extrapolation"]
    # ref rise 0.50, alibi's 0.05: ref minus scheme 0.45, its Welch interval (4 groups of 2) well above 0
    assert (
        rule(ev(study, extrapolation(study, {"alibi": 0.05, "none": 0.50})), delta=0.01).verdict
        == "supported"
    )
    assert (
        rule(ev(study, extrapolation(study, {"alibi": 0.50, "none": 0.05})), delta=0.01).verdict
        == "contradicted"
    )
    # ref minus scheme 0.002; each group's variance 0.00005 over 2 seeds: se^2 = 4 * 0.00005 / 2 = 1e-4,
    # Welch df = 1e-8 / (4 * 0.000025^2) = 4, t(0.975, 4) = 2.776: 0.002 +- 0.028 straddles delta 0.01
    v = rule(ev(study, extrapolation(study, {"alibi": 0.050, "none": 0.052})), delta=0.01)
    assert v.verdict == "inconclusive" and v.effect.n == 2
    assert (round(v.effect.ci_low, 3), round(v.effect.ci_high, 3)) == (-0.026, 0.030)
    assert rule(ev(study, extrapolation(study, {"alibi": 0.05})), delta=0.01).verdict == "not tested yet"


def test_gradient_health_every_outcome(study):
    def rows(post, deep):
        return [rec(study, "base", "grad_norm_first_over_last", "measured", v,
                    {"norm": n, "depth": 48, "step": 11, "seed": seed}, scale="proxy")
                for n, vs in (("post_norm", post), ("deepnorm", deep)) for seed, v in enumerate(vs)]  # fmt: skip

    rule, sick = RULES["gradient_health"], [1e-5, 2e-5, 5e-6]  # |log10|: 5, 4.70, 5.30 decades (mean 5.0)
    # DeepNorm |log10| 0.40, 0.52, 0.30 (mean 0.41): removed 4.59 decades; se^2 = 0.0906/3 + 0.0124/3,
    # the Welch interval about [3.9, 5.3] lies beyond delta = 1 decade
    v = rule(ev(study, rows(sick, [0.4, 0.3, 0.5])), delta=1.0)
    assert v.verdict == "supported" and v.effect.n == 3 and v.effect.ci_low > 1.0
    assert v.reason.startswith("proxy scale") and "depth 48" in v.reason
    # plain post-norm within 2 decades: nothing to remedy at this depth (the condition is named)
    v = rule(ev(study, rows([0.5, 0.4, 0.3], [0.4, 0.5, 0.3])), delta=1.0)
    assert v.verdict == "qualified" and "only at depths beyond 48" in v.reason
    # DeepNorm at 2.40, 2.52, 2.30 decades: beyond delta but still sick, so it narrows the gap only
    v = rule(ev(study, rows(sick, [4e-3, 3e-3, 5e-3])), delta=1.0)
    assert v.verdict == "qualified" and "narrows" in v.reason
    # the same imbalance: effect 0, se^2 = 2 x 0.0906 / 3, df 4, t 2.776: [-0.68, +0.68] inside +-1
    v = rule(ev(study, rows(sick, sick)), delta=1.0)
    assert v.verdict == "contradicted" and abs(v.effect.ci_high - 0.68) < 0.01
    # |log10| 5, 3, 7 against 3, 1, 5: effect 2, each variance 4, se^2 = 8/3, df 4: 2 +- 4.53 straddles
    v = rule(ev(study, rows([1e-5, 1e-3, 1e-7], [1e-3, 1e-1, 1e-5])), delta=1.0)
    assert v.verdict == "inconclusive" and round(v.effect.ci_low, 2) == -2.53
    assert rule(ev(study, rows(sick, [])), delta=1.0).verdict == "not tested yet"


def test_kernel_ran_every_outcome(study):
    def ran(backend, device):
        return rec(study, "base", "ran_train", "profiler", 6, {"backend": backend}, 32, device=device)

    rule = RULES["kernel_ran"]
    assert rule(ev(study, [ran("flash", "cuda:0")]), expected="flash").verdict == "supported"
    assert rule(ev(study, [ran("efficient", "cuda:0")]), expected="flash").verdict == "contradicted"
    assert rule(ev(study, [ran("flash", "cpu")]), expected="flash").verdict == "qualified"
    assert rule(ev(study, []), expected="flash").verdict == "not tested yet"
