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
    rule, args = (
        RULES["grows_with"],
        {"metric": "peak_train", "axis": "dim", "method": "simulated", "labels": {"category": "total"}},
    )
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
    gaps = [
        *seeds(
            study,
            "dim=32",
            "overfit_gap",
            [0.10, 0.30],
            {"step": 8, "tokens": 1, "subset_tokens": 1, "epochs": 1.0},
        ),
        *seeds(
            study,
            "base",
            "overfit_gap",
            [0.12, 0.38],
            {"step": 8, "tokens": 1, "subset_tokens": 1, "epochs": 1.0},
        ),
    ]
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
    v = RULES["grows_with"](
        ev(study, records),
        metric="peak_train",
        axis="dim",
        method="simulated",
        labels={"category": "total"},
        parts="peak_train_part",
    )
    assert v.verdict == "supported"
    assert v.reason.endswith("of the rise (32 tokens): alibi_bias 60.0%, other 20.0%, weight_state 20.0%")
    assert [r["value"] for r in v.evidence if r["method"] == "peak_train_part rise"] == [
        30.0,
        20.0 - 10.0,
        10.0,
    ]


def extrapolation(study, rises):
    """extrapolation_val_loss per scheme at 16 and 64 tokens over three seeds: 2.0 + 0.1 * seed at 16 (the
    models differ by seed), that plus the scheme's rise at 64, the rise itself varying by +-0.01 by seed."""
    out = []
    for pos, rise in rises.items():
        for eval_len in (16, 64):
            losses = [
                2.0 + 0.1 * s + (rise + d if eval_len == 64 else 0.0) for s, d in enumerate((0, 0.01, -0.01))
            ]
            out += seeds(
                study,
                "base",
                "extrapolation_val_loss",
                losses,
                {"pos": pos, "train_len": 16, "eval_len": eval_len},
            )
    return out


def test_extrapolation_every_outcome(study):
    rule = RULES["extrapolation"]
    # each rise's per-seed values: rise, rise + 0.01, rise - 0.01: sd 0.01, se 0.0057735, half width
    # t(0.975, 2) 4.302653 x 0.0057735 = 0.024841; the controls rise 0.50: [+0.475, +0.525] beyond 0.01
    controls = {"abs": 0.50, "none": 0.50}
    # alibi's rise -0.05: [-0.0748, -0.0252], below +0.01: it keeps its loss beyond the training length
    v = rule(ev(study, extrapolation(study, {"alibi": -0.05, **controls})), delta=0.01)
    assert v.verdict == "supported" and v.control.shows_power
    # alibi's rise 0.30: [+0.275, +0.325] beyond +0.01
    assert (
        rule(ev(study, extrapolation(study, {"alibi": 0.30, **controls})), delta=0.01).verdict
        == "contradicted"
    )
    # alibi's rise 0.002: [-0.0228, +0.0268] straddles +0.01
    v = rule(ev(study, extrapolation(study, {"alibi": 0.002, **controls})), delta=0.01)
    assert v.verdict == "inconclusive" and v.effect.n == 3
    assert (round(v.effect.ci_low, 4), round(v.effect.ci_high, 4)) == (-0.0228, 0.0268)
    # no fall to see: "none" rises 0.005 ([-0.0198, +0.0298] does not lie beyond 0.01)
    v = rule(ev(study, extrapolation(study, {"alibi": -0.05, "abs": 0.50, "none": 0.005})), delta=0.01)
    assert v.verdict == "not testable at this scale" and "none does not fail" in v.reason
    assert rule(ev(study, extrapolation(study, {"alibi": 0.05})), delta=0.01).verdict == "not tested yet"


def test_gradient_health_every_outcome(study):
    def rows(post, deep):
        return [
            rec(
                study,
                "base",
                "grad_norm_first_over_last",
                "measured",
                v,
                {"norm": n, "depth": 48, "step": 11, "seed": seed},
                scale="proxy",
            )
            for n, vs in (("post_norm", post), ("deepnorm", deep))
            for seed, v in enumerate(vs)
        ]

    rule, sick = RULES["gradient_health"], [1e-5, 2e-5, 5e-6]  # |log10|: 5, 4.699, 5.301 decades (mean 5.0)
    # DeepNorm |log10| 0.398, 0.523, 0.301: removed 4.602, 4.176, 5.000 by seed (mean 4.593, sd 0.412,
    # se 0.238, half width 1.024): the paired interval about [3.57, 5.62] lies beyond delta = 1 decade
    v = rule(ev(study, rows(sick, [0.4, 0.3, 0.5])), delta=1.0)
    assert v.verdict == "supported" and v.effect.n == 3 and v.effect.kind == "paired"
    assert v.effect.ci_low == pytest.approx(3.57, abs=0.01) and v.control.shows_power
    assert v.reason.startswith("proxy scale") and "depth 48" in v.reason
    # the positive control fails: plain post-norm within 2 decades, so there is nothing to remedy here
    v = rule(ev(study, rows([0.5, 0.4, 0.3], [0.4, 0.5, 0.3])), delta=1.0)
    assert v.verdict == "not testable at this scale" and "not sick at this depth" in v.reason
    # DeepNorm at 2.40, 2.52, 2.30 decades: beyond delta but still sick, so it narrows the gap only
    v = rule(ev(study, rows(sick, [4e-3, 3e-3, 5e-3])), delta=1.0)
    assert v.verdict == "qualified" and "narrows" in v.reason
    # the same imbalance at every seed: differences 0, 0, 0, the interval [0, 0] inside +-1
    v = rule(ev(study, rows(sick, sick)), delta=1.0)
    assert v.verdict == "contradicted" and v.effect.ci_high == pytest.approx(0.0, abs=1e-9)
    # |log10| 5, 5.3, 4.7 against 3, 5.2, 1.7: removed 2.0, 0.1, 3.0 (mean 1.7, sd 1.473, se 0.8505):
    # 1.7 +- 4.302653 x 0.8505 = [-1.96, +5.36] straddles delta
    post, deep = [1e-5, 10**-5.3, 10**-4.7], [1e-3, 10**-5.2, 10**-1.7]
    v = rule(ev(study, rows(post, deep)), delta=1.0)
    assert v.verdict == "inconclusive" and round(v.effect.ci_low, 2) == -1.96
    assert rule(ev(study, rows(sick, [])), delta=1.0).verdict == "not tested yet"


def test_kernel_ran_every_outcome(study):
    def ran(backend, device):
        return rec(study, "base", "ran_train", "profiler", 6, {"backend": backend}, 32, device=device)

    rule = RULES["kernel_ran"]
    assert rule(ev(study, [ran("flash", "cuda:0")]), expected="flash").verdict == "supported"
    assert rule(ev(study, [ran("efficient", "cuda:0")]), expected="flash").verdict == "contradicted"
    assert rule(ev(study, [ran("flash", "cpu")]), expected="flash").verdict == "qualified"
    assert rule(ev(study, []), expected="flash").verdict == "not tested yet"
