"""The training instruments: corpus, tokenisers, proxy rule, schedules, gradient norms, extrapolation scoring."""

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from orca_analysis.build import build_model
from orca_analysis.build.variants import norm_config
from orca_analysis.formulas.flops import kaplan_train_flops_per_token
from orca_analysis.formulas.memory import kv_cache_bytes
from orca_analysis.instruments.corpus import (
    CorpusError,
    _split,
    load_corpus,
    stdlib_files,
    tokenized,
)
from orca_analysis.instruments.proxy import CPU, proxy_config, tiny_scale
from orca_analysis.instruments.trainer import (
    block_grad_norms,
    eval_schedule,
    lm_loss,
    lr_at,
    share_init,
    train_run,
)
from orca_analysis.measurements.training.ablations import context_losses, scheme_config, schemes
from orca_analysis.study import load_study

TINY = Path(__file__).parent / "fixtures" / "tiny.yaml"


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
    # dim 512 / 8 = 64; head width 64 / 8 = 8 is raised to the floor of 16 (rotary turns 8 of it)
    got = (cfg.dim, cfg.dim_head, cfg.depth, cfg.heads, cfg.kv_heads, cfg.num_tokens)
    assert got == (64, 16, 6, 8, 1, 256)
    assert cfg.layers["alibi_pos_bias"] and cfg.layers["deepnorm"]


def test_flops_and_kv_cache_closed_forms():
    # 6 * 1000 + 6 * 2 layers * 16 tokens * 32 = 6000 + 6144
    assert kaplan_train_flops_per_token(1000, 2, 16, 32) == 12144
    # Orca: 2 (K, V) * 6 layers * 1 kv head * 8192 tokens * 64 dims * 2 bytes (bfloat16) = 12,582,912
    assert kv_cache_bytes(load_study("orca").base, 8192, 1, "bfloat16") == 12_582_912


def test_schedules():
    assert eval_schedule(10, 4) == {2, 5, 8, 10}  # round(2.5) = 2, round(7.5) = 8
    assert eval_schedule(10, 0, extra=[3, 11]) == {3}
    scale = tiny_scale()  # lr 3e-3, warm-up 2 steps, cooldown 0.2
    # a 20-step run: warm-up (step 0: 1/2), constant, then the last round(0.2 * 20) = 4 steps decay
    # linearly: step 16 + k has (20 - (16 + k)) / 5 of the rate: 4/5, 3/5, 2/5, 1/5
    lrs = [lr_at(s, scale, 20) for s in (0, 1, 15, 16, 17, 18, 19)]
    assert lrs == pytest.approx([1.5e-3, 3e-3, 3e-3, 2.4e-3, 1.8e-3, 1.2e-3, 0.6e-3])
    # a 5-step run (another budget) anneals at its own end: its last step, 1 of 1 cooldown step: 1/2
    assert lr_at(4, scale, 5) == pytest.approx(1.5e-3) and lr_at(3, scale, 5) == pytest.approx(3e-3)


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


def test_a_budget_gets_its_own_annealed_run(tiny_study_path, corpus_dir, tmp_path):
    """The equal-FLOP read of a bigger variant is the end of a run of that budget (its own cooldown),
    not a point in the middle of its longer run."""
    study, scale = load_study(str(tiny_study_path)), tiny_scale()
    data = tokenized(load_corpus(corpus_dir), "byte", cache_dir=tmp_path)
    cfg = proxy_config(study.base, scale)
    short = train_run(cfg, data, scale, 0, steps=4, evals=1).final
    long = train_run(cfg, data, scale, 0, eval_steps=[4])
    mid = next(p for p in long.points if p.step == 4)
    assert short.step == mid.step == 4 and short.tokens == mid.tokens  # the same budget ...
    # ... but the short run's last step ran at its cooled rate (round(0.2 * 4) = 1 step, at 1/2),
    # the long run's at the full rate: the same seed and batches, other weights
    assert short.val_loss != mid.val_loss


def test_arms_of_one_seed_share_their_batches_and_initial_values(tiny_study_path, corpus_dir, tmp_path):
    """Common random numbers: the base proxy and an arm without token shift or ALiBi (the cached-decoding
    remedy) see the same training windows in the same order on a seed, and start from the same values of
    every parameter they share; another seed draws other windows."""
    study, scale = load_study(str(tiny_study_path)), tiny_scale()
    data = tokenized(load_corpus(corpus_dir), "byte", cache_dir=tmp_path)
    base = proxy_config(study.base, scale)
    arm = base.with_values({("attn_layers", "shift_tokens"): 0, ("attn_layers", "alibi_pos_bias"): False})
    a, b = train_run(base, data, scale, 0), train_run(arm, data, scale, 0, init_from=base)
    assert a.batch_digest == b.batch_digest and len(a.batch_digest) == 40
    assert train_run(arm, data, scale, 1, init_from=base).batch_digest != a.batch_digest
    # every parameter of the arm has a namesake in the base (token shift's wrapper aside): all shared
    assert b.shared == len(list(build_model(arm).parameters())) and a.shared == 0  # the base is the reference
    model, reference = build_model(arm, seed=0), build_model(base, seed=0)
    assert share_init(model, reference) == b.shared
    q = dict(model.named_parameters())["attn_layers.layers.0.1.to_q.weight"]
    assert torch.equal(q, dict(reference.named_parameters())["attn_layers.layers.0.1.fn.to_q.weight"])
    # the extrapolation's control with learned absolute positions (no rotary, no ALiBi): its position
    # table is its own, the base has none to share; every other parameter is shared
    with_table = build_model(scheme_config(base, "abs", 64), seed=0)
    assert "pos_emb.emb.weight" in dict(with_table.named_parameters())
    assert share_init(with_table, reference) == len(list(with_table.parameters())) - 1


def test_extrapolation_tests_the_schemes_the_design_sets(tiny_study_path):
    # the tiny Orca-like design sets ALiBi and xPos: each is tested alone, then the two controls
    base = proxy_config(load_study(str(tiny_study_path)).base, tiny_scale())
    assert schemes(base) == ["alibi", "xpos", "abs", "none"]
    # a Llama-like design (plain rotary, no ALiBi) is tested on its own scheme, never on ALiBi
    llama = base.with_values(
        {
            ("attn_layers", "alibi_pos_bias"): False,
            ("attn_layers", "rotary_xpos"): False,
            ("attn_layers", "rotary_pos_emb"): True,
        }
    )
    assert schemes(llama) == ["rotary", "abs", "none"]
    rotary = scheme_config(llama, "rotary", 64)
    assert (rotary.get("rotary_pos_emb"), rotary.get("alibi_pos_bias"), rotary.get("shift_tokens")) == (
        True,
        False,
        0,
    )
