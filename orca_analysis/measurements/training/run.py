"""Training ablations: what more dim, depth or heads buy, and whether each flag does its job.

Per variant (a proxy at CPU scale, see instruments/proxy.py), over the scale's seeds (one record per
seed, label `seed`):
  train_loss / val_loss curves (labels seed, step, tokens, flops) at an equal token budget;
  val_loss_final: the loss at the end of that budget;
  val_loss_equal_flops: the loss when the variant has spent the study's common FLOP budget
    (the smallest variant's full run), from a run of that budget with its own schedule, read at its
    end (every run is warmup-stable-decay: it ends annealed, Hagele et al. 2024);
  overfit_*: train vs validation loss when training on a deliberately small subset (every seed);
  head_ablation_*: the validation loss rise when heads are silenced after training (instruments/heads.py).
For the base variant only, the study-wide ablations of ablations.py: gradient health versus
depth and norm, length extrapolation, multi-query versus multi-head attention.
Losses are in nats per token of the scale's tokeniser (bytes at CPU scale).
"""

from __future__ import annotations

from pathlib import Path
from statistics import mean
from typing import Any

from ...formulas.flops import kaplan_train_flops_per_token
from ...formulas.memory import kv_cache_bytes
from ...instruments.corpus import TokenData, fixed_windows, load_corpus, tokenized
from ...instruments.heads import HeadAblation, head_ablation
from ...instruments.proxy import (
    BUDGET_SKIP,
    QualityScale,
    describe,
    past_deadline,
    proxy_config,
    proxy_rule,
    proxy_vocab,
    quality_scale,
    torch_threads,
)
from ...instruments.trainer import RunResult, train_run
from ...results import Record
from ...study.schema import ModelConfig, Study, Variant
from ..params.run import counted_params
from ..recorder import Recorder
from . import ablations

M, D = "measured", "derived"
FLOPS_FORMULA = "6N+6*L*T*d_attn (Kaplan et al. 2020 arXiv 2001.08361 Table 1)"


def flops_label(flops: float) -> float:
    """FLOPs as a label: 4 significant digits (a label names a point; the exact count is not the finding)."""
    return float(f"{flops:.4g}")


def record_scale(scale: QualityScale) -> str:
    """The records' scale: the variant's own shapes (measured) or a reduced proxy."""
    return "measured" if scale.divisor == 1 else "proxy"


def study_data(study: Study, scale: QualityScale, corpus: str | Path | None = None) -> TokenData:
    """The corpus tokenised for this scale; vocab = the study's num_tokens for BPE."""
    return tokenized(load_corpus(corpus), scale.tokenizer, proxy_vocab(study.base, scale))


_NON_EMBEDDING: dict[str, int] = {}  # config repr -> count: the equal-FLOP budget asks for every variant


def non_embedding_params(cfg: ModelConfig) -> int:
    key = repr(cfg.as_nested())
    if key not in _NON_EMBEDDING:
        counts = counted_params(cfg)
        _NON_EMBEDDING[key] = counts["library_total"] - counts["embedding"]
    return _NON_EMBEDDING[key]


def flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    n = non_embedding_params(cfg)
    return kaplan_train_flops_per_token(n, cfg.depth, seq_len, cfg.heads * cfg.dim_head)


def run_setup(scale: QualityScale) -> str:
    """The training set-up every run of this measurement shares (the note of `proxy_params`)."""
    s = scale
    return (
        f"scale={s.name},train_len={s.seq_len},batch={s.batch},steps={s.steps},lr={s.lr},warmup={s.warmup},"
        f"matmul={s.matmul_precision},rule={proxy_rule(s)}"
    )


def common_flop_budget(study: Study, scale: QualityScale) -> float:
    """The FLOPs the smallest variant spends on the full token budget: every variant gets this much."""
    cheapest = min(flops_per_token(proxy_config(v.config, scale), scale.seq_len) for v in study.variants())
    return cheapest * scale.tokens_per_run


def curve_records(rec: Recorder, run: RunResult, fpt: float, prefix: str = "") -> None:
    for p in run.points:
        labels = {"seed": run.seed, "step": p.step, "tokens": p.tokens, "flops": flops_label(p.tokens * fpt)}
        rec.add(f"{prefix}train_loss", p.train_loss, M, labels)
        rec.add(f"{prefix}val_loss", p.val_loss, M, labels)
    if run.diverged_at is not None:
        tokens = run.diverged_at * run.batch * run.seq_len
        labels = {
            "seed": run.seed,
            "step": run.diverged_at,
            "tokens": tokens,
            "flops": flops_label(tokens * fpt),
        }
        rec.failed(f"{prefix}val_loss", M, f"loss not finite at step {run.diverged_at}", labels)


def ablation_records(rec: Recorder, ab: HeadAblation, seed: int) -> None:
    for layer, head, rise in ab.single:
        rec.add("head_ablation_single_increase", rise, M, {"layer": layer, "head": head, "seed": seed})
    for draw, rise in enumerate(ab.quarter):
        labels = {"heads_off": f"{ab.heads_off}/{ab.heads}", "draw": draw, "seed": seed}
        rec.add("head_ablation_quarter_increase", rise, M, labels)
    rec.add("head_ablation_quarter_mean", mean(ab.quarter), D, {"seed": seed})
    if ab.single:
        rises = [rise for _, _, rise in ab.single]
        rec.add("head_ablation_single_mean", mean(rises), D, {"seed": seed})
        rec.add("head_ablation_single_max", max(rises), D, {"seed": seed})
    rec.add("head_ablation_base_loss", ab.base_loss, M, {"seed": seed})


def setup_records(
    rec: Recorder, proxy: ModelConfig, fpt: float, scale: QualityScale, data: TokenData
) -> None:
    """What was trained, how, and on what: the proxy, its FLOPs per token, the corpus."""
    shape = {"dim": proxy.dim, "depth": proxy.depth, "heads": proxy.heads, "dim_head": proxy.dim_head,
             "vocab": proxy.num_tokens}  # fmt: skip
    rec.add("proxy_params", counted_params(proxy)["library_total"], "counter", shape, note=run_setup(scale))
    rec.add("train_flops_per_token", fpt, "closed_form", note=FLOPS_FORMULA)
    corpus = {"corpus": data.corpus.name, "sha256": data.corpus.sha256[:12], "tokenizer": data.tokenizer}
    rest = f"bytes={data.corpus.n_bytes},train_tokens={len(data.train)},val_tokens={len(data.val)}"
    rec.add("corpus_tokens", len(data.train) + len(data.val), "counter", corpus, note=rest)


def variant_runs(
    variant: Variant,
    study: Study,
    scale: QualityScale,
    data: TokenData,
    rec: Recorder,
    keep_models: bool = False,
) -> dict[int, RunResult]:
    """Equal-token and equal-FLOP curves over the seeds, then the overfitting view (every seed)."""
    proxy = proxy_config(variant.config, scale)
    fpt = flops_per_token(proxy, scale.seq_len)
    budget = common_flop_budget(study, scale)
    equal_step = max(1, min(scale.steps, int(budget // (fpt * scale.batch * scale.seq_len))))
    setup_records(rec, proxy, fpt, scale, data)
    runs: dict[int, RunResult] = {}
    val_windows = fixed_windows(data.val, scale.eval_windows, scale.seq_len + 1).to(scale.device)
    for seed in scale.seeds:
        if past_deadline():
            labels = {
                "seed": seed,
                "tokens": scale.tokens_per_run,
                "flops": flops_label(scale.tokens_per_run * fpt),
            }
            rec.skipped("val_loss_final", M, BUDGET_SKIP, labels)
            continue
        run = train_run(proxy, data, scale, seed, keep_model=True)
        runs[seed] = run
        curve_records(rec, run, fpt)
        if run.diverged_at is None:
            single = seed == scale.seeds[0]  # one head at a time costs depth x heads evaluations
            ablation_records(
                rec, head_ablation(run.model, val_windows, scale.batch, seed, single=single), seed
            )
        if not keep_models:
            run.model = None  # the ablation has used it; only the base's are kept (study-wide ablations)
        if run.diverged_at is not None:
            continue
        # each budget its own annealed run, read at its end (never a mid-run read of a longer run)
        point = (
            run.final if equal_step == scale.steps else equal_budget_run(proxy, data, scale, seed, equal_step)
        )
        labels = {"seed": seed, "flops": flops_label(budget), "step": equal_step, "tokens": point.tokens}
        rec.add("val_loss_equal_flops", point.val_loss, M, labels)
        labels = {"seed": seed, "tokens": run.final.tokens, "flops": flops_label(run.final.tokens * fpt)}
        rec.add("val_loss_final", run.final.val_loss, M, labels)
    if past_deadline():
        subset = min(scale.overfit_tokens, len(data.train))
        tokens = scale.overfit_steps * scale.batch * scale.seq_len
        labels = {"seed": scale.seeds[0], "step": scale.overfit_steps, "tokens": tokens, "subset_tokens": subset,
                  "epochs": round(tokens / subset, 1)}  # fmt: skip
        rec.skipped("overfit_gap", D, BUDGET_SKIP, labels)
    else:
        overfit(proxy, data, scale, fpt, rec)
    return runs


def remedy_runs(variant: Variant, scale: QualityScale, data: TokenData, rec: Recorder) -> None:
    """A remedy's variant (or the recommended design): the equal-token runs over the seeds, read at their
    end, which is what its before -> after compares with the variant it changes. The rest of the
    training measurement (budgets, overfitting, ablations) is the sweep's."""
    proxy = proxy_config(variant.config, scale)
    fpt = flops_per_token(proxy, scale.seq_len)
    setup_records(rec, proxy, fpt, scale, data)
    for seed in scale.seeds:
        labels = {
            "seed": seed,
            "tokens": scale.tokens_per_run,
            "flops": flops_label(scale.tokens_per_run * fpt),
        }
        if past_deadline():
            rec.skipped("val_loss_final", M, BUDGET_SKIP, labels)
            continue
        run = train_run(proxy, data, scale, seed)
        curve_records(rec, run, fpt)
        if run.diverged_at is None:
            labels = {"seed": seed, "tokens": run.final.tokens, "flops": flops_label(run.final.tokens * fpt)}
            rec.add("val_loss_final", run.final.val_loss, M, labels)


def equal_budget_run(proxy: ModelConfig, data: TokenData, scale: QualityScale, seed: int, steps: int):
    """The end of a run of `steps` steps with its own schedule (its cooldown ends at the budget)."""
    return train_run(proxy, data, scale, seed, steps=steps, evals=1).final


def overfit(proxy: ModelConfig, data: TokenData, scale: QualityScale, fpt: float, rec: Recorder) -> None:
    """The train/validation gap on a deliberately small subset, over every seed (the claims compare it
    across variants with an interval)."""
    subset = data.train[: scale.overfit_tokens]
    for seed in scale.seeds:
        run = train_run(proxy, data, scale, seed, steps=scale.overfit_steps, train_tokens=subset)
        curve_records(rec, run, fpt, prefix="overfit_")
        for p in run.points:
            labels = {"seed": run.seed, "step": p.step, "tokens": p.tokens, "subset_tokens": len(subset),
                      "epochs": round(p.tokens / len(subset), 1)}  # fmt: skip
            rec.add("overfit_gap", p.val_loss - p.train_loss, D, labels)


def training_records(
    variant: Variant, study: Study, scale: QualityScale | None = None, corpus: str | Path | None = None
) -> list[Record]:
    """The variant's training records; `corpus`: a text file or folder (default: $ORCA_CORPUS, else
    the Python standard library's sources)."""
    scale = scale or quality_scale()
    rec = Recorder(
        study.name, variant, "training", device=scale.device, dtype="float32", scale=record_scale(scale)
    )
    proxy = proxy_config(variant.config, scale)
    n = counted_params(proxy)["library_total"]
    if n > scale.train_max_params:
        reason = f"proxy has {n:,} parameters, over the {scale.name} scale's {scale.train_max_params:,}"
        flops = flops_label(scale.tokens_per_run * flops_per_token(proxy, scale.seq_len))
        for seed in scale.seeds:
            rec.skipped(
                "val_loss_final", M, reason, {"seed": seed, "tokens": scale.tokens_per_run, "flops": flops}
            )
        return rec.records
    data = study_data(study, scale, corpus)
    if variant.role != "sweep":
        with torch_threads(scale):
            remedy_runs(variant, scale, data, rec)
        return rec.records
    is_base = variant.variant_id == study.variants()[0].variant_id  # study-wide ablations run once
    with torch_threads(scale):
        runs = variant_runs(variant, study, scale, data, rec, keep_models=is_base)
        if is_base:
            ablations.study_ablations(study, scale, data, rec, base_runs=runs)
    return rec.records


def measure_training(variant: Variant, study: Study) -> list[Record]:
    return training_records(variant, study)


def summary(cfg: ModelConfig, seq_len: int, batch: int) -> dict[str, Any]:
    """What `training` would train for this variant (nothing is trained here)."""
    scale = quality_scale()
    proxy = proxy_config(cfg, scale)
    return {
        "scale": scale.name,
        "proxy_rule": proxy_rule(scale),
        "proxy": describe(proxy),
        "proxy_params": counted_params(proxy)["library_total"],
        "train_flops_per_token": flops_per_token(proxy, scale.seq_len),
        "flops_formula": FLOPS_FORMULA,
        "tokens_per_run": scale.tokens_per_run,
        "seeds": list(scale.seeds),
        "kv_cache_bytes_full_bf16": kv_cache_bytes(cfg, seq_len, batch, "bfloat16"),
    }


def summary_text(s: dict[str, Any]) -> str:
    return (
        f"training ({s['scale']} scale): {s['proxy_rule']}\n  proxy {s['proxy']}, {s['proxy_params']:,} params, "
        f"{s['train_flops_per_token']:.3g} FLOP/token ({s['flops_formula']}), "
        f"{s['tokens_per_run']:,} tokens per run, seeds {s['seeds']}"
    )
