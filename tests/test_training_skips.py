"""The training measurement where it does not train: proxies too large, deadlines, tiers without power, byte
proxies of vocabulary-bound remedies, a device that cannot train (the fixtures: test_training.py)."""

from collections import Counter

import pytest

from orca_analysis.instruments.proxy import proxy_config, tiny_scale
from orca_analysis.measurements.training.run import training_records
from orca_analysis.study import load_study


def test_oversized_proxy_is_skipped_not_trained(tiny_study_path):
    study = load_study(str(tiny_study_path))
    recs = training_records(study.variants()[0], study, tiny_scale(train_max_params=10))
    assert [(r.metric, r.labels["seed"], r.status) for r in recs] == [
        ("val_loss_final", 0, "skipped"),
        ("val_loss_final", 1, "skipped"),
        ("val_loss_final", 2, "skipped"),
    ]
    assert all("over the tiny scale's 10" in r.note for r in recs)


def test_past_the_deadline_sub_runs_are_skipped_not_lost(tiny_study_path, corpus_dir, monkeypatch, tmp_path):
    # scripts/gpu_measure.py sets ORCA_DEADLINE; once it has passed, nothing new is trained and every
    # sub-run says so (the measurement still returns, so the worker stores its records)
    monkeypatch.setenv("ORCA_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("ORCA_DEADLINE", "1.0")  # 1970: long past
    study, scale = load_study(str(tiny_study_path)), tiny_scale()
    recs = training_records(study.variants()[0], study, scale, corpus=corpus_dir)
    skipped = Counter((r.metric, r.labels.get("seed")) for r in recs if r.status == "skipped")
    assert skipped[("val_loss_final", 0)] == skipped[("val_loss_final", 1)] == 1
    assert skipped[("overfit_val_loss", 0)] == skipped[("overfit_val_loss", 2)] == 1
    # every eval length of every positional scheme and seed, and both attention layouts for every seed
    assert skipped[("extrapolation_val_loss", 0)] == 4 * 3 and skipped[("attn_kv_val_loss", 1)] == 2
    # (2 depths on the first seed + the deepest on 2 more seeds) x 3 norms, all skipped
    assert sum(r.metric == "grad_norm_first_over_last" for r in recs) == (2 + 2) * 3
    tier = ("val_loss_tuned", "val_loss_equal_flops")  # what the standard tier does not run at all
    assert all(
        r.note == "time budget of the GPU run exhausted"
        for r in recs
        if r.status == "skipped" and r.metric not in tier
    )
    trained = ("val_loss", "grad_norm", "head_ablation_single_increase")
    assert not any(r.metric in trained for r in recs)  # none trained
    assert {r.status for r in recs} == {"ok", "skipped"}  # set-up and closed forms still recorded


def test_the_standard_tier_records_what_it_does_not_power(tiny_study_path, corpus_dir, monkeypatch, tmp_path):
    """Without a learning-rate sweep a width arm is not trained at all (never read at a shared rate), and no
    equal-FLOP run is made: each is a skipped record saying which tier runs it."""
    monkeypatch.setenv("ORCA_CACHE_DIR", str(tmp_path))
    study, scale = load_study(str(tiny_study_path)), tiny_scale(extrap_factors=(2,), grad_depths=(2,))
    narrow = next(v for v in study.variants() if v.variant_id == "dim=32")
    recs = training_records(narrow, study, scale, corpus=corpus_dir)
    skipped = Counter((r.metric, r.note.split(":")[0]) for r in recs if r.status == "skipped")
    assert skipped == {
        ("val_loss_final", "not run at this quality tier"): 3,
        ("val_loss_tuned", "not run at this quality tier"): 3,
        ("val_loss_equal_flops", "not run at this quality tier"): 3,
    }
    assert "--quality thorough" in next(r.note for r in recs if r.metric == "val_loss_tuned")
    assert not any(r.metric == "val_loss" for r in recs)  # nothing trained on the corpus at full length ...
    assert {r.labels["seed"] for r in recs if r.metric == "overfit_val_loss"} == {
        0,
        1,
        2,
    }  # ... but overfitting


def remedy_of(study, variant_id: str, flag: tuple[str, str]):
    """A remedy's variant of the study's base with `flag` (home, key) set true."""
    import dataclasses

    config = study.base.with_values({flag: True})
    return dataclasses.replace(study.variants()[0], variant_id=variant_id, role="remedy", config=config)


def test_a_vocabulary_bound_remedy_is_not_trained_on_a_byte_proxy(
    tiny_study_path, corpus_dir, monkeypatch, tmp_path
):
    from orca_analysis.measurements.training.run import embedding_share

    monkeypatch.setenv("ORCA_CACHE_DIR", str(tmp_path))
    study, scale = load_study(str(tiny_study_path)), tiny_scale()
    tied = remedy_of(study, "fix:tie", ("wrapper", "tie_embedding"))
    recs = training_records(tied, study, scale, corpus=corpus_dir)
    ((why, cause),) = {(r.note, r.cause) for r in recs if r.metric == "val_loss_final"}
    assert cause == "not testable at this scale"  # typed: the remedy's gate acts on it
    full, proxy = embedding_share(study.base), embedding_share(proxy_config(study.base, scale))
    assert why.startswith("not testable at this scale") and f"{proxy:.1%}" in why and f"{full:.1%}" in why
    assert not any(r.metric == "val_loss" for r in recs)


def test_quality_tiers_select_a_scale_and_key_their_results_apart(monkeypatch):
    from orca_analysis.instruments.proxy import THOROUGH, quality_scale, scale_for_tier, scale_key

    monkeypatch.delenv("ORCA_QUALITY_SCALE", raising=False)
    monkeypatch.setenv("ORCA_DEVICE", "cpu")
    assert scale_for_tier("standard") == "cpu" and scale_for_tier("thorough") == "thorough"
    assert quality_scale().name == "cpu" and scale_key() == ""  # the default keeps the stores' keys
    monkeypatch.setenv("ORCA_QUALITY_SCALE", "thorough")
    assert quality_scale() is THOROUGH and scale_key() == "|quality=thorough"
    # the thorough tier: twice the steps on five seeds, the width and depth arms' rate sweep, equal FLOPs
    assert (THOROUGH.steps, len(THOROUGH.seeds), THOROUGH.lr_factors, THOROUGH.equal_flops) == (
        512,
        5,
        (0.5, 2.0),
        True,
    )
    with pytest.raises(ValueError, match="unknown quality tier 'best'"):
        scale_for_tier("best")


def test_a_model_this_device_cannot_train_is_skipped_saying_it_needs_a_gpu(
    tiny_study_path, corpus_dir, monkeypatch, tmp_path
):
    monkeypatch.setenv("ORCA_CACHE_DIR", str(tmp_path))
    study, scale = load_study(str(tiny_study_path)), tiny_scale()
    kernel = remedy_of(study, "fix:kernel", ("attn_layers", "alibi_in_kernel"))
    recs = training_records(kernel, study, scale, corpus=corpus_dir)  # FlexAttention: no backward on a CPU
    finals = [r for r in recs if r.metric == "val_loss_final"]
    assert [r.status for r in finals] == ["skipped"] * 3 and not any(r.status == "error" for r in recs)
    assert all(r.note.startswith("needs a GPU: NotImplementedError") for r in finals)
    assert {r.cause for r in finals} == {"needs a GPU"}  # typed, for the remedies to act on
    assert {r.metric for r in recs} <= {
        "val_loss_final",
        "proxy_params",
        "proxy_embedding_share",
        "train_flops_per_token",
        "corpus_tokens",
    }
