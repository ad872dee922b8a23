"""Training ablations: corpus, proxies, FLOP estimate, repeatable runs, the records and the section."""

from pathlib import Path

import pytest
import torch
from corpus_common import TEXT, _write_corpus

from orca_analysis.build import build_model
from orca_analysis.instruments.corpus import (
    fixed_windows,
    load_corpus,
    tokenized,
)
from orca_analysis.instruments.heads import QUARTER_DRAWS, attention_modules, head_ablation, heads_masked
from orca_analysis.instruments.proxy import CPU, proxy_config, tiny_scale
from orca_analysis.instruments.trainer import train_run
from orca_analysis.kit.format import cell
from orca_analysis.measurements.recorder import Recorder
from orca_analysis.measurements.training.run import ablation_records, training_records
from orca_analysis.measurements.training.section import training_section
from orca_analysis.results.query import Results
from orca_analysis.results.records import Record
from orca_analysis.study import load_study

TINY = Path(__file__).parent / "fixtures" / "tiny.yaml"


THOROUGH = {"lr_factors": (2.0,), "equal_flops": True}  # the thorough tier's arms, at the tiny scale


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The tiny study's base and one other variant, trained once at the tiny scale with the thorough tier's
    learning-rate sweep and equal-FLOP runs (module-wide)."""
    tmp = tmp_path_factory.mktemp("training")
    corpus = _write_corpus(tmp / "corpus")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ORCA_CACHE_DIR", str(tmp / "cache"))
        mp.delenv("ORCA_DEADLINE", raising=False)
        study, scale = load_study(str(TINY)), tiny_scale(**THOROUGH)
        base, other = study.variants()[0], study.variants()[1]
        records = {v.variant_id: training_records(v, study, scale, corpus=corpus) for v in (base, other)}
    return study, records


def test_training_records(trained):
    study, by_variant = trained
    recs = by_variant["base"]
    metrics = {r.metric for r in recs}
    assert {
        "train_loss",
        "val_loss",
        "val_loss_final",
        "val_loss_equal_flops",
        "overfit_gap",
        "grad_norm",
        "kv_cache_bytes",
        "extrapolation_val_loss",
        "attn_kv_val_loss",
        "train_flops_per_token",
        "head_ablation_single_increase",
        "head_ablation_quarter_increase",
        "head_ablation_quarter_mean",
        "head_ablation_base_loss",
        "proxy_params",
        "corpus_tokens",
        "val_loss_tuned",
        "lr_sweep_val_loss",
        "lr_chosen",
        "ngram_val_loss",
        "proxy_embedding_share",
        "overfit_val_loss",
    } <= metrics
    assert all(r.unit and r.measurement == "training" and r.status == "ok" for r in recs)
    # the learning-rate sweep: the scale's 3e-3 and 2 x 3e-3 on the first seed, the lower loss chosen
    results = Results.from_records(recs)
    swept = {v.get("lr"): v.value for v in results.values("lr_sweep_val_loss")}
    assert set(swept) == {3e-3, 6e-3} and results.number("lr_chosen") == min(swept, key=swept.get)
    tuned = results.one("val_loss_tuned")
    assert tuned.sample_ids == (0, 1, 2) and tuned.get("lr") == results.number("lr_chosen")
    assert tuned.samples[0] == swept[tuned.get("lr")]  # the first seed's run is the sweep's own
    # nothing depends on the study's workloads: the store keeps such records once per variant
    assert all(r.seq_len is None and r.batch is None for r in recs)
    assert {r.scale for r in recs if r.metric != "kv_cache_bytes"} == {"proxy"}  # the tiny scale: a proxy
    # grad norms: depths 2 and 4 on the first seed x 3 norms x 2 steps (init, last) x depth blocks = 3 * 2 * (2 + 4),
    # and the deepest (4) on the two other seeds: 2 * 3 * 2 * 4
    assert sum(r.metric == "grad_norm" for r in recs) == 36 + 48 == 84
    results = Results.from_records(recs)
    for gap in results.values("overfit_gap"):
        step = gap.get("step")
        tr, va = (
            results.number("overfit_train_loss", step=step),
            results.number("overfit_val_loss", step=step),
        )
        assert gap.value == pytest.approx(va - tr)
    # head ablation: one head at a time on the first seed (2 layers x 4 heads), a quarter on every seed
    singles = [r for r in recs if r.metric == "head_ablation_single_increase"]
    assert len(singles) == 8 and {r.labels["seed"] for r in singles} == {0}
    quarters = [r for r in recs if r.metric == "head_ablation_quarter_increase"]
    assert {r.labels["seed"] for r in quarters} == {0, 1, 2}
    assert {r.labels["heads_off"] for r in quarters} == {"1/4"}
    other_metrics = {r.metric for r in by_variant["dim=32"]}
    assert "grad_norm" not in other_metrics and "val_loss_final" in other_metrics  # ablations run once


def test_seeds_are_samples_of_one_value(trained):
    # every label but the seed is the same for each seed of a variant: the query puts the seeds together
    _, by_variant = trained
    results = Results.from_records(by_variant["base"])
    seeds = tiny_scale().seeds
    for metric in (
        "val_loss_final",
        "val_loss_equal_flops",
        "head_ablation_quarter_mean",
        "head_ablation_base_loss",
    ):
        (v,) = results.values(metric)
        assert v.sample_ids == seeds and v.value == pytest.approx(sum(v.samples) / len(seeds))
        assert v.spread == max(v.samples) - min(v.samples)
    # tiny scale: 6 steps of 2 x 16 tokens = 192 tokens at the end of the run, on every seed
    assert results.one("val_loss_final").get("tokens") == 192
    for attn in ("mqa", "mha"):
        assert results.one("attn_kv_val_loss", attn=attn).n == len(seeds)
    extrapolated = results.values("extrapolation_val_loss")
    # 4 positional schemes (alibi, xpos and the controls abs and none) x eval lengths 16, 32, 64
    # (train_len 16 x (1, 2, 4)), each over every seed
    assert {v.get("pos") for v in extrapolated} == {"alibi", "xpos", "abs", "none"}
    assert len(extrapolated) == 4 * 3 and all(v.n == 3 and v.get("train_len") == 16 for v in extrapolated)
    curve = results.values("val_loss", step=6)
    assert len(curve) == 1 and curve[0].n == 3


def test_setup_and_closed_form_records(trained):
    study, by_variant = trained
    results = Results.from_records(by_variant["base"])
    proxy = results.one("proxy_params")
    # tiny base at dim/8: dim 64 / 8 = 8, head dim 64 (x-transformers' default) / 8 = 8 raised to the floor
    # of 16, depth 2, heads 4, bytes (vocab 256)
    assert proxy.labels == {"dim": 8, "depth": 2, "heads": 4, "dim_head": 16, "vocab": 256}
    assert "scale=tiny" in proxy.note and "rule=proxy: dim/8" in proxy.note and "lr_sweep=2" in proxy.note
    # embedding 256 x 8 = 2,048 and logits 8 x 256 = 2,048 (no bias) of the proxy's 7,792 parameters
    assert proxy.value == 7792 and results.number("proxy_embedding_share") == pytest.approx(4096 / 7792)
    # the read criterion's reference: a bigram count model of the corpus's bytes
    assert results.one("ngram_val_loss").labels == {"order": 2, "tokenizer": "byte"}
    corpus = results.one("corpus_tokens")
    assert corpus.value == 2 * len(TEXT) + 1 and corpus.get("tokenizer") == "byte"  # bytes: one token each
    assert len(corpus.get("sha256")) == 12 and corpus.note.startswith(f"bytes={2 * len(TEXT) + 1},")
    assert "Kaplan" in results.one("train_flops_per_token").note
    # tiny base, full size, context 128, one sequence, float32: 2 (K, V) x 2 layers x kv heads x 128 x 64 x 4
    assert results.number("kv_cache_bytes", attn="mqa", model="full") == 2 * 2 * 1 * 128 * 64 * 4
    assert results.number("kv_cache_bytes", attn="mha", model="full") == 2 * 2 * 4 * 128 * 64 * 4
    assert results.one("kv_cache_bytes", attn="mha", model="proxy").get("kv_heads") == 4
    ratios = results.values("grad_norm_first_over_last", depth=4, step=1)
    assert {(v.get("norm"), v.get("seed")) for v in ratios} == {
        (n, s) for n in ("pre_norm", "post_norm", "deepnorm") for s in (0, 1, 2)
    }
    assert {v.get("seed") for v in results.values("grad_norm_first_over_last", depth=2)} == {0}
    for v in ratios:
        at = {"norm": v.get("norm"), "depth": 4, "step": 1, "seed": v.get("seed")}
        norms = {g.get("block"): g.value for g in results.values("grad_norm", **at)}
        assert v.value == pytest.approx(norms[0] / norms[3])  # stored once, by the measurement


def test_head_mask_zeroes_exactly_that_heads_slice():
    # Orca proxy at depth 2: 8 heads of width 64 / 8 = 8; masking head 1 of layer 0 zeroes columns 8..15 of the
    # merged head outputs entering layer 0's output projection, and nothing else.
    model = build_model(proxy_config(load_study("orca").base.with_values({("attn_layers", "depth"): 2}), CPU))
    model = model.eval()
    attn = attention_modules(model)
    assert [a.heads for a in attn] == [8, 8]
    seen = {}

    def keep_input(module, args, out) -> None:  # returns None: the output stays the module's own
        seen["x"] = args[0].clone()

    attn[0].to_out.register_forward_hook(keep_input)
    x = torch.randint(0, 256, (1, 6))
    with heads_masked(attn, [[1], []]):
        model(x)
    width = attn[0].to_out.in_features // 8
    assert torch.all(seen["x"][..., width : 2 * width] == 0)
    assert (
        torch.count_nonzero(seen["x"][..., :width]) > 0
        and torch.count_nonzero(seen["x"][..., 2 * width :]) > 0
    )
    with torch.no_grad():
        with heads_masked(attn, [[1], []]):
            masked = model(x)
        with heads_masked(attn, [[], []]):  # silencing nothing changes nothing
            same = model(x)
        plain = model(x)  # the mask is gone after its context
    assert torch.equal(same, plain) and not torch.equal(masked, plain)
    assert torch.count_nonzero(seen["x"][..., width : 2 * width]) > 0


def test_head_ablation_records(tiny_study_path, corpus_dir, tmp_path):
    study, scale = load_study(str(tiny_study_path)), tiny_scale()
    data = tokenized(load_corpus(corpus_dir), "byte", cache_dir=tmp_path)
    cfg = proxy_config(study.base, scale)  # depth 2, heads 4
    run = train_run(cfg, data, scale, 0, keep_model=True)
    windows = fixed_windows(data.val, scale.eval_windows, scale.seq_len + 1)
    ablation = head_ablation(run.model, windows, scale.batch, 0)
    rec = Recorder(study.name, study.variants()[0], "training", scale="proxy")
    ablation_records(rec, ablation, 0)
    results = Results.from_records(rec.records)
    singles = results.values("head_ablation_single_increase")
    quarters = results.values("head_ablation_quarter_increase")
    assert len(singles) == 2 * 4 and len(quarters) == QUARTER_DRAWS  # every (layer, head); 1 of 4 heads
    assert all(v.get("heads_off") == "1/4" for v in quarters)
    assert results.number("head_ablation_single_max") == max(v.value for v in singles)
    assert results.number("head_ablation_single_mean") == pytest.approx(sum(v.value for v in singles) / 8)
    assert results.number("head_ablation_quarter_mean") == pytest.approx(sum(v.value for v in quarters) / 4)
    # the unmasked loss is the run's own final validation loss (same model, same windows)
    assert results.number("head_ablation_base_loss") == pytest.approx(run.final.val_loss, abs=1e-4)
    assert any(v.value != 0 for v in singles)  # a trained head matters somewhere


def _final(vid: str, device: str, seed: int, value: float) -> Record:
    return Record(
        "tiny",
        vid,
        "training",
        "val_loss_final",
        "measured",
        value,
        "nats/token",
        device=device,
        scale="measured" if device == "cuda" else "proxy",
        labels={"seed": seed, "tokens": 64, "flops": 1e6},
    )


def test_cpu_proxies_and_gpu_runs_get_their_own_training_tables(tiny_study_path):
    study = load_study(str(tiny_study_path))
    rows = [
        _final("base", "cuda", 0, 4.245),
        _final("base", "cuda", 1, 4.255),
        _final("base", "cpu", 0, 2.495),
        _final("base", "cpu", 1, 2.505),
        _final("base", "cpu", 2, 2.5),
    ]
    section = training_section(Results.from_records(rows), study)
    runs = {t.title: t for t in section.tables if t.title.startswith("Training runs")}
    assert list(runs) == ["Training runs (full shapes on cuda)", "Training runs (CPU-scale proxies)"]
    gpu, cpu = runs.values()
    assert gpu.rows[0][2] == "4.250 ± 0.010"  # mean of 4.245 and 4.255, spread 0.010
    assert cpu.rows[0][2] == "2.500 ± 0.010"
    assert "mean ± spread over 2 seeds" in gpu.caption and "over 3 seeds" in cpu.caption  # the seeds it has
    assert [cell(c) for c in cpu.rows[0][3:]] == [
        "n/a",
        "n/a",
        "n/a",
    ]  # no tuned rate, equal FLOPs, overfit run
    assert [f.name for f in section.figures] == ["quality_vs_compute"]  # the GPU's, where there are any
    assert training_section(Results.from_records([]), study).missing.startswith("no `training` results")


def test_section_reads_the_stored_values(trained):
    study, by_variant = trained
    results = Results.from_records([r for recs in by_variant.values() for r in recs])
    section = training_section(results, study)
    runs, extrapolation, heads = section.tables
    rows = {r[0]: [cell(c) for c in r] for r in runs.rows}
    assert list(rows) == ["base", "dim=32"]
    final = results.one("val_loss_final", variant="base")
    assert rows["base"][2] == f"{final.value:.3f} ± {final.spread:.3f}"
    tuned = results.one("val_loss_tuned", variant="dim=32")
    assert rows["dim=32"][3] == f"{tuned.value:.3f} ± {tuned.spread:.3f} (lr {tuned.get('lr'):g})"
    held = max(results.values("overfit_val_loss", variant="dim=32"), key=lambda v: v.get("step"))
    train = max(results.values("overfit_train_loss", variant="dim=32"), key=lambda v: v.get("step"))
    assert rows["dim=32"][5] == f"{held.value:.3f} / {train.value:.3f}"  # the last step's, mean of seeds
    assert rows["base"][1].endswith(" params (8 wide)")
    assert "bigram count model" in runs.caption
    assert extrapolation.columns == ["positions", "eval at 16", "eval at 32", "eval at 64"]
    assert [r[0] for r in extrapolation.rows] == [
        "alibi",
        "xpos",
        "learned absolute positions (positive control)",
        "no position information (positive control)",
    ]
    quarter = results.one("head_ablation_quarter_mean", variant="base")
    assert [cell(c) for c in heads.rows[0]][4] == f"{quarter.value:.4f} ± {quarter.spread:.4f}"
    assert [f.name for f in section.figures] == ["val_loss_curves", "quality_vs_compute", "grad_norms"]
