"""Training ablations: what more dim, depth or heads buy, and whether each flag does its job.

Per variant (a proxy at CPU scale, see _quality.py), over the scale's seeds:
  train_loss / val_loss curves (category seed, step, tokens, flops) at an equal token budget;
  val_loss_equal_flops: the loss when the variant has spent the study's common FLOP budget
    (the smallest variant's full run), read from the same run;
  overfit_*: train vs validation loss when training on a deliberately small subset;
  head_ablation_*: the validation loss rise when heads are silenced after training (_heads.py).
For the base variant only, the study-wide ablations of _ablations.py: gradient health versus
depth and norm, length extrapolation, multi-query versus multi-head attention.
Losses are in nats per token of the scale's tokeniser (bytes at CPU scale).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..results import Record
from ..study.schema import ModelConfig, Study, Variant
from . import _ablations
from ._corpus import TokenData, fixed_windows, load_corpus, tokenized
from ._heads import head_ablation
from ._quality import (
    BUDGET_SKIP,
    QualityScale,
    describe,
    kv_cache_bytes,
    past_deadline,
    proxy_config,
    proxy_rule,
    proxy_vocab,
    quality_scale,
    torch_threads,
    train_flops_per_token,
)
from ._recorder import Recorder, cat
from ._trainer import RunResult, train_run
from .params import counted_params
from .registry import register_measurement

FLOPS_FORMULA = "6N+6*L*T*d_attn (Kaplan et al. 2020 arXiv 2001.08361 Table 1)"  # no commas: a category


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
    return train_flops_per_token(n, cfg.depth, seq_len, cfg.heads * cfg.dim_head)


def run_setup(scale: QualityScale) -> str:
    """The training set-up every run of this measurement shares, as category parts."""
    s = scale
    return cat(
        scale=s.name,
        train_len=s.seq_len,
        batch=s.batch,
        steps=s.steps,
        lr=s.lr,
        warmup=s.warmup,
        matmul=s.matmul_precision,
    )


def common_flop_budget(study: Study, scale: QualityScale) -> float:
    """The FLOPs the smallest variant spends on the full token budget: every variant gets this much."""
    cheapest = min(flops_per_token(proxy_config(v.config, scale), scale.seq_len) for v in study.variants())
    return cheapest * scale.tokens_per_run


def _curve_records(rec: Recorder, run: RunResult, fpt: float, scale: QualityScale, prefix: str = "") -> None:
    for p in run.points:
        c = cat(seed=run.seed, step=p.step, tokens=p.tokens, flops=f"{p.tokens * fpt:.4g}")
        for metric, value in ((f"{prefix}train_loss", p.train_loss), (f"{prefix}val_loss", p.val_loss)):
            rec.add(metric, value, category=c)
    if run.diverged_at is not None:
        rec.add(
            f"{prefix}val_loss",
            None,
            category=cat(seed=run.seed),
            status="error",
            error=f"loss not finite at step {run.diverged_at}",
        )


def variant_runs(
    variant: Variant,
    study: Study,
    scale: QualityScale,
    data: TokenData,
    rec: Recorder,
    keep_models: bool = False,
) -> dict[int, RunResult]:
    """Equal-token and equal-FLOP curves over the seeds, then the overfitting view (first seed)."""
    proxy = proxy_config(variant.config, scale)
    fpt = flops_per_token(proxy, scale.seq_len)
    budget = common_flop_budget(study, scale)
    equal_step = max(1, min(scale.steps, int(budget // (fpt * scale.batch * scale.seq_len))))
    rec.add(
        "proxy_params",
        counted_params(proxy)["library_total"],
        "params",
        method="counter",
        category=f"{describe(proxy)},{run_setup(scale)},rule={proxy_rule(scale)}",
    )
    rec.add(
        "train_flops_per_token",
        fpt,
        "FLOP/token",
        method="closed_form",
        category=f"formula={FLOPS_FORMULA}",
    )
    rec.add(
        "corpus_tokens", len(data.train) + len(data.val), "tokens", method="counter", category=data.describe()
    )
    runs: dict[int, RunResult] = {}
    finals, at_budget, ablations = [], [], []
    val_windows = fixed_windows(data.val, scale.eval_windows, scale.seq_len + 1).to(scale.device)
    for seed in scale.seeds:
        if past_deadline():
            rec.add("val_loss_final", None, category=cat(seed=seed), status="skipped", error=BUDGET_SKIP)
            continue
        run = train_run(proxy, data, scale, seed, eval_steps=[equal_step], keep_model=True)
        runs[seed] = run
        _curve_records(rec, run, fpt, scale)
        if run.diverged_at is None:
            single = seed == scale.seeds[0]
            ablations.append(head_ablation(run.model, val_windows, scale.batch, seed, rec, single=single))
        if not keep_models:
            run.model = None  # the ablation has used it; only the base's are kept (study-wide ablations)
        if run.diverged_at is not None:
            continue
        point = next(p for p in run.points if p.step == equal_step)
        at_budget.append(point.val_loss)
        finals.append(run.final.val_loss)
        rec.add(
            "val_loss_equal_flops",
            point.val_loss,
            category=cat(seed=seed, flops=f"{budget:.4g}", step=equal_step, tokens=point.tokens),
        )
        rec.add(
            "val_loss_final",
            run.final.val_loss,
            category=cat(seed=seed, tokens=run.final.tokens, flops=f"{run.final.tokens * fpt:.4g}"),
        )
    if finals:
        rec.seed_stats("val_loss_final", finals)
        rec.seed_stats("val_loss_equal_flops", at_budget, category=f"flops={budget:.4g}")
    quarters = [a["head_ablation_quarter_mean"] for a in ablations]
    if quarters:
        rec.seed_stats("head_ablation_quarter_mean", quarters)
    if past_deadline():
        rec.add("overfit_gap", None, status="skipped", error=BUDGET_SKIP)
    else:
        _overfit(proxy, data, scale, fpt, rec)
    return runs


def _overfit(proxy: ModelConfig, data: TokenData, scale: QualityScale, fpt: float, rec: Recorder) -> None:
    subset = data.train[: scale.overfit_tokens]
    run = train_run(proxy, data, scale, scale.seeds[0], steps=scale.overfit_steps, train_tokens=subset)
    _curve_records(rec, run, fpt, scale, prefix="overfit_")
    for p in run.points:
        c = cat(
            seed=run.seed,
            step=p.step,
            tokens=p.tokens,
            subset_tokens=len(subset),
            epochs=f"{p.tokens / len(subset):.1f}",
        )
        rec.add("overfit_gap", p.val_loss - p.train_loss, category=c)


def training_records(
    variant: Variant, study: Study, scale: QualityScale | None = None, corpus: str | Path | None = None
) -> list[Record]:
    """The variant's training records; `corpus`: a text file or folder (default: $ORCA_CORPUS, else
    the Python standard library's sources)."""
    scale = scale or quality_scale()
    rec = Recorder(variant, study.name, scale)
    n = counted_params(proxy_config(variant.config, scale))["library_total"]
    if n > scale.train_max_params:
        reason = f"proxy has {n:,} parameters, over the {scale.name} scale's {scale.train_max_params:,}"
        rec.add("val_loss_final", None, status="skipped", error=reason)
        return rec.records
    data = study_data(study, scale, corpus)
    is_base = variant.variant_id == study.variants()[0].variant_id  # study-wide ablations run once
    with torch_threads(scale):
        runs = variant_runs(variant, study, scale, data, rec, keep_models=is_base)
        if is_base:
            _ablations.study_ablations(study, scale, data, rec, base_runs=runs)
    return rec.records


def _summary(cfg: ModelConfig, seq_len: int, batch: int) -> dict[str, Any]:
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
        "kv_cache_bytes_full_bf16": kv_cache_bytes(cfg, seq_len, batch),
    }


def _summary_text(s: dict[str, Any]) -> str:
    return (
        f"training ({s['scale']} scale): {s['proxy_rule']}\n  proxy {s['proxy']}, {s['proxy_params']:,} params, "
        f"{s['train_flops_per_token']:.3g} FLOP/token ({s['flops_formula']}), "
        f"{s['tokens_per_run']:,} tokens per run, seeds {s['seeds']}"
    )


@register_measurement(
    "training",
    "short seeded training runs of proxies: loss curves, overfitting, gradients, extrapolation, MQA",
    summary=_summary,
    summary_text=_summary_text,
    isolated=True,
    per_workload=False,
    uses_corpus=True,
    version=2,  # 2: head ablation, matmul precision in the set-up
)
def measure_training(variant: Variant, study: Study) -> list[Record]:
    return training_records(variant, study)
