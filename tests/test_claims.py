"""Claims: strict catalogue loading and verdicts computed from results (records built by hand, read
through the query as the report reads them)."""

import dataclasses

import pytest

from orca_analysis.catalog.metrics import lookup
from orca_analysis.claims import ClaimsError, evaluate, load_catalogue
from orca_analysis.claims.evidence import Evidence
from orca_analysis.claims.rules import RULES
from orca_analysis.results import Record
from orca_analysis.results.query import Results
from orca_analysis.study import load_study
from orca_analysis.study.schema import Sweep


@pytest.fixture
def study(tiny_study_path):
    return load_study(str(tiny_study_path))


def rec(study, vid, metric, method, value, labels=None, seq_len=None, device="cpu", **kw):
    """A record of a declared metric for variant `vid` of `study` (its swept values filled in)."""
    swept = {v.variant_id: v.swept for v in study.variants()}[vid]
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
        device=device,
        labels=labels or {},
        swept=swept,
        **kw,
    )


def ev(study, records) -> Evidence:
    return Evidence(Results.from_records(records), study, {})


def with_heads(study, values):
    return dataclasses.replace(study, sweep=Sweep("one_at_a_time", {("attn_layers", "heads"): values}))


def test_default_catalogue_covers_every_claim_of_the_notes():
    claims = load_catalogue()
    by_subject = {s: [c for c in claims if c.subject == s] for s in ("dim", "depth", "heads")}
    # the notes list 2 benefits + 3 costs for dim, 2 + 4 for depth, 2 + 3 for heads
    assert [len(by_subject[s]) for s in ("dim", "depth", "heads")] == [5, 6, 5]
    flags = {c.subject for c in claims if c.subject.startswith("flag:")}
    assert {"flag:attn_flash", "flag:deepnorm", "flag:shift_tokens", "flag:attn_one_kv_head"} <= flags


def test_catalogue_loading_is_strict(tmp_path):
    bad = tmp_path / "c.yaml"
    bad.write_text(
        "claims:\n  - {id: x, subject: dim, kind: benefit, claim: c, rule: {name: grows_wth}, wieght: 1}\n"
    )
    with pytest.raises(ClaimsError) as exc:
        load_catalogue(bad)
    text = " ".join(exc.value.problems)
    assert "did you mean 'weight'" in text and "unknown rule 'grows_wth'; did you mean 'grows_with'" in text
    with pytest.raises(ClaimsError, match="not found"):
        load_catalogue(tmp_path / "missing.yaml")


def test_a_catalogue_naming_an_undeclared_metric_fails_at_load_with_its_line(tmp_path):
    bad = tmp_path / "c.yaml"
    bad.write_text(
        "claims:\n"
        "  - {id: ok, subject: dim, kind: cost, claim: c, rule: {name: fidelity, params: {flag: dim}}}\n"
        "  - {id: typo, subject: dim, kind: cost, claim: c,\n"
        "     rule: {name: grows_with, params: {metric: peak_trian, axis: dim}}}\n"
        "  - {id: label, subject: dim, kind: cost, claim: c,\n"
        "     rule: {name: grows_with, params: {metric: peak_train, axis: dim, labels: {categry: total}}}}\n"
    )
    with pytest.raises(ClaimsError) as exc:
        load_catalogue(bad)
    assert exc.value.problems == [
        f"{bad}: line 3 (typo): unknown metric 'peak_trian'; did you mean 'peak_train'?",
        f"{bad}: line 5 (label): metric 'peak_train' has no label 'categry' (labels: category)",
    ]


def test_grows_with_supported_and_contradicted(study):
    # tiny study: base dim 64, variant dim=32; one-at-a-time so depth/heads stay at base (2, 4)
    total = {"component": "total"}
    records = [
        rec(study, "base", "forward_dense", "counter", 400, total, 32),
        rec(study, "dim=32", "forward_dense", "counter", 100, total, 32),
        rec(study, "depth=3", "forward_dense", "counter", 999, total, 32),  # off the dim axis
    ]
    v = RULES["grows_with"](ev(study, records), metric="forward_dense", axis="dim", labels=total)
    # 100 -> 400 as dim doubles: exponent log(4)/log(2) = 2
    assert v.verdict == "supported" and "~dim^2.00" in v.reason and len(v.evidence) == 2
    records[1] = rec(study, "dim=32", "forward_dense", "counter", 500, total, 32)
    v = RULES["grows_with"](ev(study, records), metric="forward_dense", axis="dim", labels=total)
    assert v.verdict == "contradicted"


def test_missing_measurement_is_not_tested_yet_with_what_would_test_it(study):
    claims = [c for c in load_catalogue() if c.id == "dim-compute"]
    (result,) = evaluate(claims, Results(), study)
    assert result.verdict.verdict == "not tested yet" and "measurement `flops`" in result.verdict.reason


def test_heads_memory_names_what_grows(study):
    claims = [c for c in load_catalogue() if c.id == "heads-memory"]
    study = with_heads(study, [4, 8])

    def part(vid, name, value):
        return rec(study, vid, "peak_train_part", "simulated", value, {"part": name}, 32)

    records = [
        rec(study, "base", "peak_train", "simulated", 1000, {"category": "total"}, 32),
        rec(study, "heads=8", "peak_train", "simulated", 1500, {"category": "total"}, 32),
        rec(study, "heads=8", "peak_train", "simulated", 9, {"category": "activations"}, 32),
        part("base", "alibi_bias", 400),
        part("heads=8", "alibi_bias", 800),  # +400 of +500: 80%
        part("base", "weight_state", 300),
        part("heads=8", "weight_state", 350),  # +50: 10%
        part("base", "other", 300),
        part("heads=8", "other", 350),  # +50: 10%
    ]
    (r,) = evaluate(claims, Results.from_records(records), study)
    # the whole-model values only (category total): 1000 -> 1500 bytes as heads double, and the parts' rise
    assert r.verdict.verdict == "supported" and "x1.50" in r.verdict.reason
    assert r.verdict.reason.endswith("alibi_bias 80.0%, other 10.0%, weight_state 10.0%")


def seeds(study, vid, metric, values, labels=None, device="cpu"):
    return [
        rec(study, vid, metric, "measured", v, {**(labels or {}), "seed": i}, device=device, scale="proxy")
        for i, v in enumerate(values)
    ]


def final_loss(study, vid, values, device="cpu"):
    return seeds(study, vid, "val_loss_final", values, {"tokens": 32768, "flops": 1e9}, device)


def test_diminishing_returns_never_calls_a_null_result_support(study):
    study = with_heads(study, [2, 8, 16])  # heads 2, 4 (base), 8, 16 on one axis
    ids = ["heads=2", "base", "heads=8", "heads=16"]

    def verdict(means):  # two seeds each, 0.01 apart (Welch intervals over them)
        records = [
            r
            for vid, m in zip(ids, means, strict=True)
            for r in final_loss(study, vid, [m - 0.005, m + 0.005])
        ]
        return RULES["diminishing_returns"](ev(study, records), metric="val_loss_final", axis="heads")

    assert (
        verdict([3.0, 2.7, 2.6, 2.58]).verdict == "supported"
    )  # gains 0.30, 0.10, 0.02: each step buys less
    # gains 0.10, 0.20, 0.05: the first exceeds the last, but they do not shrink at every step
    assert verdict([3.0, 2.9, 2.7, 2.65]).verdict == "qualified"
    assert verdict([3.0, 2.95, 2.85, 2.55]).verdict == "contradicted"  # gains 0.05, 0.10, 0.30: they grow
    # every step within the seeds' noise: no gain at all, which is not a diminishing one
    v = verdict([3.0, 3.004, 2.998, 3.002])
    assert v.verdict == "inconclusive" and "cannot tell" in v.reason


def test_quality_rules_respect_the_seed_spread(study):
    # base: mean 2.50, spread 0.05; dim=32: mean 2.53, spread 0.04
    records = [*final_loss(study, "base", [2.475, 2.525]), *final_loss(study, "dim=32", [2.51, 2.55])]
    v = RULES["decreases_with"](ev(study, records), metric="val_loss_final", axis="dim")
    # paired by seed: falls 2.51 - 2.475 = 0.035 and 2.55 - 2.525 = 0.025: mean 0.03, sd 0.0070711,
    # se = 0.0070711 / sqrt(2) = 0.005; t(0.975, 1) = 12.706: 0.03 +- 0.0635 = [-0.0335, +0.0935]
    # straddles 0: a null result, never support
    e = v.effect
    assert v.verdict == "inconclusive" and (e.n, round(e.estimate, 4)) == (2, 0.03)
    assert (round(e.ci_low, 4), round(e.ci_high, 4)) == (-0.0335, 0.0935) and "cannot tell" in v.reason
    # falls 0.205 and 0.195 with the same se: [+0.1365, +0.2635] lies beyond 0
    records = [*final_loss(study, "base", [2.475, 2.525]), *final_loss(study, "dim=32", [2.68, 2.72])]
    assert (
        RULES["decreases_with"](ev(study, records), metric="val_loss_final", axis="dim").verdict
        == "supported"
    )


def test_gradient_health_reads_the_deepest_run(study):
    def row(norm, depth, step, v, seed=0):
        return rec(
            study,
            "base",
            "grad_norm_first_over_last",
            "measured",
            v,
            {"norm": norm, "depth": depth, "step": step, "seed": seed},
            scale="proxy",
        )

    rows = [
        *(row("post_norm", 48, 11, v, s) for s, v in enumerate([1e-5, 2e-5, 5e-6])),
        *(row("deepnorm", 48, 11, v, s) for s, v in enumerate([0.4, 0.3, 0.5])),
        row("post_norm", 6, 11, 0.5),
        row("deepnorm", 48, 0, 1e-9),
    ]  # fmt: skip  (step 0 and depth 6 must be ignored)
    v = RULES["gradient_health"](ev(study, rows), delta=1.0)
    assert v.verdict == "supported" and "depth 48" in v.reason and v.effect.n == 3
    # the mean imbalance per layout, in decades: (5 + 4.699 + 5.301) / 3 = 5.0 for post-norm
    assert [r["value"] for r in v.evidence] == pytest.approx([0.4075, 5.0], abs=1e-3)


def test_kernel_rule_is_qualified_without_gpu_results(study):
    cpu = rec(study, "base", "ran_train", "profiler", 6, {"backend": "flash"}, 32)
    v = RULES["kernel_ran"](ev(study, [cpu]), expected="flash")
    assert v.verdict == "qualified" and "no GPU results" in v.reason
    gpu = rec(study, "base", "ran_train", "profiler", 6, {"backend": "efficient"}, 512, device="cuda:0")
    assert RULES["kernel_ran"](ev(study, [cpu, gpu]), expected="flash").verdict == "contradicted"


def test_heads_robustness_claim_reads_the_head_ablation(study):
    (claim,) = [c for c in load_catalogue() if c.id == "heads-robust"]
    study = with_heads(study, [2, 4, 8])
    ids = {v.config.heads: v.variant_id for v in study.variants()}
    rises = {2: (0.39, 0.41), 4: (0.185, 0.215), 8: (0.24, 0.26)}  # means 0.40, 0.20, 0.25; spread <= 0.03
    records = [
        r for h, vals in rises.items() for r in seeds(study, ids[h], "head_ablation_quarter_mean", vals)
    ]
    (r,) = evaluate([claim], Results.from_records(records), study)
    # 0.40 -> 0.25 falls by more than the 0.03 spread, but 4 -> 8 heads rises: not at every step
    assert r.verdict.verdict == "qualified" and "not at every step" in r.verdict.reason
    rises[8] = (0.09, 0.11)
    records = [
        r for h, vals in rises.items() for r in seeds(study, ids[h], "head_ablation_quarter_mean", vals)
    ]
    (r,) = evaluate([claim], Results.from_records(records), study)
    assert r.verdict.verdict == "supported" and "0.4000 -> 0.1000" in r.verdict.reason


def mqa_training(study, mqa=(2.500, 2.502), mha=(2.499, 2.501)):
    """MQA's loss 0.001 above MHA's at both seeds: mha - mqa = -0.001 by seed, paired interval
    [-0.001, -0.001], above the catalogue's -0.02: quality kept."""
    out = [
        r
        for a, vals in (("mqa", mqa), ("mha", mha))
        for r in seeds(study, "base", "attn_kv_val_loss", vals, {"attn": a, "tokens": 32768})
    ]
    out += [
        rec(
            study,
            "base",
            "kv_cache_bytes",
            "closed_form",
            v,
            {"attn": a, "model": "full", "kv_heads": k, "context": 128, "cache_batch": 1},
        )
        for a, v, k in (("mqa", 1e6, 1), ("mha", 8e6, 8))
    ]
    return out


def decode(study, mqa_s, mha_s, spread):
    """Samples of both timings with the given relative IQR, at two lengths (the rule reads the longest)."""
    out = []
    for seq in (16, 64):
        for a, t in (("mqa", mqa_s), ("mha", mha_s)):
            base = t * seq / 64
            # five samples whose quartiles are base*(1 -+ spread/2): IQR / median = spread
            for i, f in enumerate((1 - spread, 1 - spread / 2, 1, 1 + spread / 2, 1 + spread)):
                labels = {
                    "attn": a,
                    "kv_heads": 1 if a == "mqa" else 4,
                    "dropped": "shift_tokens",
                    "new": 4,
                    "prompt": seq - 4,
                    "repeat": i,
                }
                out.append(rec(study, "base", "kv_ablation_decode_time", "measured", base * f, labels, seq))
        out.append(
            rec(
                study,
                "base",
                "kv_ablation_decode_speedup",
                "derived",
                mha_s / mqa_s,
                {"dropped": "shift_tokens"},
                seq,
            )
        )
    return out


def test_mqa_claim_needs_faster_decoding_beyond_the_timing_noise(study):
    (claim,) = [c for c in load_catalogue() if c.id == "purpose-one-kv-head"]
    (r,) = evaluate([claim], Results.from_records(mqa_training(study)), study)
    assert r.verdict.verdict == "qualified" and "not measured yet" in r.verdict.reason
    # mha 0.012 s / mqa 0.010 s = x1.20, beyond 2 x 5% noise
    records = mqa_training(study) + decode(study, 0.010, 0.012, 0.05)
    (r,) = evaluate([claim], Results.from_records(records), study)
    assert (
        r.verdict.verdict == "supported"
        and "x1.20 as fast (cpu, seq_len 64, timing noise 10%)" in r.verdict.reason
    )
    records = mqa_training(study) + decode(study, 0.010, 0.0105, 0.05)
    (r,) = evaluate([claim], Results.from_records(records), study)
    assert r.verdict.verdict == "inconclusive" and "beyond the timing noise" in r.verdict.reason
    records = mqa_training(study) + decode(study, 0.012, 0.010, 0.05)  # x0.83: one KV head decodes slower
    (r,) = evaluate([claim], Results.from_records(records), study)
    assert r.verdict.verdict == "contradicted" and "decodes slower" in r.verdict.reason
    # mha - mqa by seed: +0.01 and -0.03 (mean -0.01, sd 0.0283, se 0.02, t(0.975, 1) = 12.706):
    # [-0.264, +0.244] reaches beyond the minimal effect, whatever the speed
    records = mqa_training(study, (2.50, 2.52), (2.51, 2.49)) + decode(study, 0.010, 0.012, 0.05)
    (r,) = evaluate([claim], Results.from_records(records), study)
    assert r.verdict.verdict == "inconclusive" and r.verdict.effect.n == 2


def test_cpu_proxies_and_gpu_runs_never_meet_in_one_comparison(study):
    # dim 32 and 64 trained on both devices; the GPU (full scale, other tokens) covers both points, so
    # the rule reads the GPU's losses alone: 3.0 -> 2.0, not a median of proxy and full-scale values
    records = []
    for vid, cpu, gpu in (("dim=32", 1.0, 3.0), ("base", 1.5, 2.0)):
        records += final_loss(study, vid, [cpu - 0.005, cpu + 0.005])
        records += final_loss(study, vid, [gpu - 0.005, gpu + 0.005], device="cuda")
    v = RULES["decreases_with"](ev(study, records), metric="val_loss_final", axis="dim")
    assert v.verdict == "supported" and "3.000 -> 2.000" in v.reason
    # the GPU run reached only the base: the CPU covers more of the axis and is read instead
    partial = [r for r in records if not (r.device == "cuda" and r.variant_id == "dim=32")]
    v = RULES["decreases_with"](ev(study, partial), metric="val_loss_final", axis="dim")
    assert v.verdict == "contradicted" and "1.000 -> 1.500" in v.reason


def test_mqa_speedup_must_beat_the_drift_of_a_repeated_timing(study):
    (claim,) = [c for c in load_catalogue() if c.id == "purpose-one-kv-head"]
    records = mqa_training(study) + decode(study, 0.010, 0.011, 0.01)  # quality kept (see mqa_training)
    (r,) = evaluate([claim], Results.from_records(records), study)
    # x1.10 against timings whose IQRs are 1% each
    assert r.verdict.verdict == "supported" and "timing noise 2%" in r.verdict.reason
    # the same step timed twice differed by 15%: a 10% gain is within that
    drift = rec(study, "base", "train_step_repeat_diff", "timed_twice", 0.15, {}, 64)
    (r,) = evaluate([claim], Results.from_records([*records, drift]), study)
    assert r.verdict.verdict == "inconclusive" and "timing noise 15%" in r.verdict.reason
