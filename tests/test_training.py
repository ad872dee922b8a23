"""Training ablations: corpus, proxies, FLOP estimate, repeatable runs, and the records."""

import numpy as np
import pytest
import torch
from torch import nn

from orca_analysis.build import build_model
from orca_analysis.measure._ablations import context_losses, norm_config
from orca_analysis.measure._corpus import (
    CorpusError,
    _split,
    fixed_windows,
    load_corpus,
    stdlib_files,
    tokenized,
)
from orca_analysis.measure._heads import QUARTER_DRAWS, attention_modules, head_ablation, heads_masked
from orca_analysis.measure._quality import (
    CPU,
    kv_cache_bytes,
    proxy_config,
    tiny_scale,
    train_flops_per_token,
)
from orca_analysis.measure._recorder import Recorder, parse_category
from orca_analysis.measure._trainer import block_grad_norms, eval_schedule, lm_loss, lr_at, train_run
from orca_analysis.measure.training import training_records
from orca_analysis.study import load_study


@pytest.fixture
def corpus_dir(tmp_path):
    text = "".join(f"def f{i}(x):\n    return x * {i} + {i % 7}\n\n" for i in range(400))  # ~14 kB
    (tmp_path / "a.py").write_text(text)
    (tmp_path / "b.txt").write_text(text.upper())
    (tmp_path / "skip.bin").write_bytes(b"\x00\x01")
    return tmp_path


def test_missing_corpus_is_one_line_error(tmp_path):
    with pytest.raises(CorpusError, match=f"corpus not found: {tmp_path / 'nope'}"):
        load_corpus(tmp_path / "nope")


def test_user_corpus_folder_and_env_var(corpus_dir, tmp_path, monkeypatch):
    corpus = load_corpus(corpus_dir)
    assert [f.name for f in corpus.files] == ["a.py", "b.txt"]  # .bin is not text
    a, b = (corpus_dir / "a.py").stat().st_size, (corpus_dir / "b.txt").stat().st_size
    assert corpus.n_bytes == a + 1 + b  # files joined by one newline
    monkeypatch.setenv("ORCA_CORPUS", str(corpus_dir / "a.py"))
    assert load_corpus().n_bytes == a
    data = tokenized(load_corpus(), "byte", cache_dir=tmp_path / "cache")
    assert len(data.train) + len(data.val) == a and data.vocab == 256
    assert (tmp_path / "cache").glob("*-byte.npy")


def test_default_corpus_is_the_stdlib():
    files = stdlib_files()
    assert len(files) > 100 and not any("site-packages" in f.parts for f in files)
    assert any(f.name == "os.py" for f in files)


def test_split_holds_out_every_tenth_chunk():
    # 100 tokens -> max(100 // 8192, 10) = 10 chunks of 10; chunk 9 (tokens 90..99) is validation
    train, val = _split(np.arange(100))
    assert list(val) == list(range(90, 100)) and len(train) == 90


def test_bpe_tokenizer_trained_locally_and_cached(corpus_dir, tmp_path):
    pytest.importorskip("tokenizers")
    corpus = load_corpus(corpus_dir)
    data = tokenized(corpus, "bpe", vocab=300, cache_dir=tmp_path)
    assert data.tokenizer == "bpe-300" and int(data.train.max()) < 300
    # 300 - 256 = 44 merges ('return', 'def f', ...) make this repetitive text ~2x shorter than its bytes
    assert len(data.train) + len(data.val) < 0.75 * corpus.n_bytes
    assert len(list(tmp_path.glob("*.tokenizer.json"))) == 1


def test_proxy_rule_divides_width_only():
    cfg = proxy_config(load_study("orca").base, CPU)
    assert (cfg.dim, cfg.dim_head, cfg.depth, cfg.heads, cfg.kv_heads, cfg.num_tokens) == (
        64,
        8,
        6,
        8,
        1,
        256,
    )
    assert cfg.layers["alibi_pos_bias"] and cfg.layers["deepnorm"]


def test_flops_and_kv_cache_closed_forms():
    # 6 * 1000 + 6 * 2 layers * 16 tokens * 32 = 6000 + 6144
    assert train_flops_per_token(1000, 2, 16, 32) == 12144
    # Orca: 2 (K, V) * 6 layers * 1 kv head * 8192 tokens * 64 dims * 2 bytes = 12,582,912
    assert kv_cache_bytes(load_study("orca").base, 8192) == 12_582_912


def test_schedules():
    assert eval_schedule(10, 4) == {2, 5, 8, 10}  # round(2.5) = 2, round(7.5) = 8
    assert eval_schedule(10, 0, extra=[3, 11]) == {3}
    scale = tiny_scale()  # lr 3e-3, warm-up 2 steps
    assert [lr_at(s, scale) for s in (0, 1, 5)] == [pytest.approx(1.5e-3), 3e-3, 3e-3]


def test_same_seed_same_curve(tiny_study_path, corpus_dir, tmp_path):
    study, scale = load_study(str(tiny_study_path)), tiny_scale()
    data = tokenized(load_corpus(corpus_dir), "byte", cache_dir=tmp_path)
    cfg = proxy_config(study.base, scale)
    a, b, c = (train_run(cfg, data, scale, seed) for seed in (0, 0, 1))
    assert a.points == b.points and a.losses == b.losses
    assert a.losses != c.losses
    assert [p.step for p in a.points] == [3, 6] and a.points[-1].tokens == 6 * 2 * 16


def test_block_grad_norms_match_manual():
    model = build_model(proxy_config(load_study("orca").base.with_values({("attn_layers", "depth"): 2}), CPU))
    lm_loss(model, torch.randint(0, 256, (2, 9))).backward()
    norms = block_grad_norms(model)
    manual = [
        torch.cat([p.grad.flatten() for p in model.attn_layers.layers[2 * b : 2 * b + 2].parameters()]).norm()
        for b in range(2)
    ]
    assert norms == pytest.approx([m.item() for m in manual], rel=1e-5)


def test_norm_configs(tiny_study_path):
    base = load_study(str(tiny_study_path)).base
    assert "pre_norm" not in norm_config(base, "pre_norm").layers  # x-transformers default: pre-norm
    assert not norm_config(base, "pre_norm").layers.get("deepnorm")
    assert norm_config(base, "post_norm").layers["pre_norm"] is False
    assert norm_config(base, "deepnorm").layers["deepnorm"] is True


class PreviousTokenOnly(nn.Module):
    """Logits depend on the current input token alone: context length cannot matter."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(256, 256)

    def forward(self, x):
        return self.emb(x)


def test_extrapolation_scores_the_same_tokens_at_every_length():
    # Every length scores targets s+1 .. s+span of each span with the same previous token,
    # so a context-free model gets the same loss at lengths 4, 8 and 16.
    val = torch.randint(0, 256, (200,), generator=torch.Generator().manual_seed(0))
    losses = context_losses(PreviousTokenOnly(), val, [4, 8, 16], spans=3)
    assert losses[8] == pytest.approx(losses[4], rel=1e-6) and losses[16] == pytest.approx(
        losses[4], rel=1e-6
    )


def test_training_records(tiny_study_path, corpus_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("ORCA_CACHE_DIR", str(tmp_path))
    study, scale = load_study(str(tiny_study_path)), tiny_scale()
    base, other = study.variants()[0], study.variants()[1]
    recs = training_records(base, study, scale, corpus=corpus_dir)
    metrics = {r.metric for r in recs}
    assert {
        "train_loss",
        "val_loss",
        "val_loss_equal_flops",
        "overfit_gap",
        "grad_norm",
        "kv_cache_bytes",
        "extrapolation_val_loss",
        "attn_kv_val_loss",
        "train_flops_per_token",
        "head_ablation_increase",
        "head_ablation_quarter_mean",
    } <= metrics
    assert all(r.unit and r.measurement == "training" for r in recs)
    # nothing depends on the study's workloads: the store keeps such records once per variant
    assert all(r.seq_len is None and r.batch is None for r in recs)
    # grad norms: depths 2 and 4 x 3 norms x 2 steps (init, last) x depth blocks = 3 * 2 * (2 + 4)
    assert sum(r.metric == "grad_norm" for r in recs) == 36
    gaps = [r for r in recs if r.metric == "overfit_gap"]
    for gap in gaps:
        step = parse_category(gap.category)["step"]
        tr = next(r.value for r in recs if r.metric == "overfit_train_loss" and f"step={step}," in r.category)
        va = next(r.value for r in recs if r.metric == "overfit_val_loss" and f"step={step}," in r.category)
        assert gap.value == pytest.approx(va - tr)
    # head ablation: one head at a time on the first seed (2 layers x 4 heads), a quarter on both
    ablated = [parse_category(r.category) for r in recs if r.metric == "head_ablation_increase"]
    assert sum(a["pattern"] == "single" for a in ablated) == 8 and {
        a["seed"] for a in ablated if a["pattern"] == "single"
    } == {"0"}
    assert {a["seed"] for a in ablated if a["pattern"] == "quarter"} == {"0", "1"}
    other_metrics = {r.metric for r in training_records(other, study, scale, corpus=corpus_dir)}
    assert "grad_norm" not in other_metrics and "val_loss_final" in other_metrics  # ablations run once


def test_oversized_proxy_is_skipped_not_trained(tiny_study_path):
    study = load_study(str(tiny_study_path))
    (rec,) = training_records(study.variants()[0], study, tiny_scale(train_max_params=10))
    assert rec.status == "skipped" and "over the tiny scale's 10" in rec.error


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
    rec = Recorder(study.variants()[0], study.name, scale)
    windows = fixed_windows(data.val, scale.eval_windows, scale.seq_len + 1)
    summary = head_ablation(run.model, windows, scale.batch, 0, rec)
    singles = [r for r in rec.records if "pattern=single" in r.category]
    quarters = [r for r in rec.records if "pattern=quarter" in r.category]
    assert len(singles) == 2 * 4 and len(quarters) == QUARTER_DRAWS  # every (layer, head); 1 of 4 heads
    assert all("heads_off=1/4" in r.category for r in quarters)
    assert summary["head_ablation_single_max"] == max(r.value for r in singles)
    assert summary["head_ablation_single_mean"] == pytest.approx(sum(r.value for r in singles) / 8)
    # the unmasked loss is the run's own final validation loss (same model, same windows)
    (base_rec,) = [r for r in rec.records if r.metric == "head_ablation_single_mean"]
    assert float(parse_category(base_rec.category)["base_loss"]) == pytest.approx(
        run.final.val_loss, abs=1e-4
    )
    assert any(r.value != 0 for r in singles)  # a trained head matters somewhere


def test_past_the_deadline_sub_runs_are_skipped_not_lost(tiny_study_path, corpus_dir, monkeypatch, tmp_path):
    # scripts/gpu_measure.py sets ORCA_DEADLINE; once it has passed, nothing new is trained and every
    # sub-run says so (the measurement still returns, so the worker stores its records)
    monkeypatch.setenv("ORCA_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("ORCA_DEADLINE", "1.0")  # 1970: long past
    study, scale = load_study(str(tiny_study_path)), tiny_scale()
    recs = training_records(study.variants()[0], study, scale, corpus=corpus_dir)
    skipped = {(r.metric, r.category) for r in recs if r.status == "skipped"}
    assert {("val_loss_final", "seed=0"), ("val_loss_final", "seed=1"), ("overfit_gap", "")} <= skipped
    assert ("extrapolation_val_loss", "pos=alibi+xpos,seed=0") in skipped and (
        "attn_kv_val_loss",
        "attn=mha,seed=1",
    ) in skipped
    assert sum(r.metric == "grad_norm_first_over_last" for r in recs) == 2 * 3  # depths x norms, all skipped
    assert all(r.error == "time budget of the GPU run exhausted" for r in recs if r.status == "skipped")
    assert not any(
        r.metric in ("val_loss", "grad_norm", "head_ablation_increase") for r in recs
    )  # none trained
