"""Study-wide ablations around the base variant's proxy (run once, with the base variant).

Gradient health: per-block gradient norms at initialisation and late in a short run, for
  depths in scale.grad_depths, with pre-norm (x-transformers' default: the reference),
  post-norm (DeepNorm's layout without its alpha and beta) and the DeepNorm realisation.
Length extrapolation: train at T, score the same validation tokens in windows of T, 2T, 4T, by
  positional scheme, each the only position information its arm has (token shift off, which mixes
  in the previous token's features and so carries position too): each scheme the design itself sets
  (ALiBi, xPos rotary, plain rotary), alone, and two positive controls that are known to fail beyond
  T (Press et al. 2022): learned absolute positions (rows T..4T never trained) and no position
  information at all ("none": causal masking alone). Each arm's rise from T to 4T is a repeated
  measure of its own models, seed by seed.
Multi-query versus multi-head: validation loss against KV-cache bytes (closed form).
Runs that match the base's own settings reuse the base variant's runs instead of retraining.
"""

from __future__ import annotations

import torch

from ...build.variants import NORMS, kv_config, norm_config
from ...catalog.declared.training import (
    ATTN_KV_VAL_LOSS,
    EXTRAPOLATION_VAL_LOSS,
    GRAD_HEALTH_TRAIN_LOSS,
    GRAD_NORM,
    GRAD_NORM_FIRST_OVER_LAST,
    KV_CACHE_BYTES,
)
from ...catalog.labels import Attn
from ...catalog.vocabulary import Method, Scale
from ...formulas.memory import kv_cache_bytes
from ...instruments.corpus import TokenData
from ...instruments.proxy import BUDGET_SKIP, QualityScale, past_deadline, proxy_config
from ...instruments.trainer import RunResult, lm_loss, train_run
from ...study.schema import ModelConfig, Study
from ..recorder import Recorder

M, D = Method.MEASURED, Method.DERIVED
POSITIONS = {  # scheme -> its flags; every other positional flag off (token shift too)
    "alibi": {("attn_layers", "alibi_pos_bias"): True},
    "xpos": {("attn_layers", "rotary_pos_emb"): True, ("attn_layers", "rotary_xpos"): True},
    "rotary": {("attn_layers", "rotary_pos_emb"): True},
    "abs": {("wrapper", "use_abs_pos_emb"): True},  # positive control
    "none": {},  # positive control
}
CONTROLS = ("abs", "none")
OFF = {
    ("attn_layers", "alibi_pos_bias"): False,
    ("attn_layers", "rotary_pos_emb"): False,
    ("attn_layers", "rotary_xpos"): False,
    ("wrapper", "use_abs_pos_emb"): False,
    ("attn_layers", "shift_tokens"): 0,
}


def schemes(cfg: ModelConfig) -> list[str]:
    """The positional schemes the design sets (each tested alone), then the positive controls."""
    own = [
        ("alibi", cfg.get("alibi_pos_bias")),
        ("xpos", cfg.get("rotary_xpos")),
        ("rotary", cfg.get("rotary_pos_emb") and not cfg.get("rotary_xpos")),
    ]
    return [name for name, on in own if on] + list(CONTROLS)


TAIL = 5  # grad_health_train_loss: mean minibatch loss of the last TAIL steps


def grad_health(proxy: ModelConfig, scale: QualityScale, data: TokenData, rec: Recorder) -> None:
    """Every depth and norm on the first seed (the per-block picture); the deepest, which the claims
    compare, on every seed (an interval needs 3)."""
    last = scale.grad_steps - 1
    setup = f"last {TAIL} of {scale.grad_steps} steps at batch {scale.grad_batch}"
    deepest = max(scale.grad_depths)
    for depth, seed in [(d, scale.seeds[0]) for d in scale.grad_depths] + [
        (deepest, s) for s in scale.seeds[1:]
    ]:
        for norm in NORMS:
            if past_deadline():
                labels = {"norm": norm, "depth": depth, "step": last, "seed": seed}
                rec.skipped(GRAD_NORM_FIRST_OVER_LAST, D, BUDGET_SKIP, labels)
                continue
            cfg = norm_config(proxy.with_values({("attn_layers", "depth"): depth}), norm)
            run = train_run(cfg, data, scale, seed, steps=scale.grad_steps, evals=0, grad_steps={0, last})
            for step, norms in sorted(run.grad_norms.items()):
                for block, g in enumerate(norms):
                    labels = {"norm": norm, "depth": depth, "step": step, "block": block, "seed": seed}
                    rec.add(GRAD_NORM, g, M, labels)
                labels = {"norm": norm, "depth": depth, "step": step, "seed": seed}
                if norms[-1]:
                    rec.add(GRAD_NORM_FIRST_OVER_LAST, norms[0] / norms[-1], D, labels)
                else:
                    rec.skipped(GRAD_NORM_FIRST_OVER_LAST, D, "the last block's gradient norm is 0", labels)
            tail = run.losses[-TAIL:]
            labels = {"norm": norm, "depth": depth, "seed": seed}
            if run.diverged_at is not None or not tail:
                rec.failed(
                    GRAD_HEALTH_TRAIN_LOSS,
                    M,
                    f"loss not finite at step {run.diverged_at} ({setup})",
                    labels,
                )
            else:
                rec.add(GRAD_HEALTH_TRAIN_LOSS, sum(tail) / len(tail), M, labels, note=setup)


@torch.no_grad()
def context_losses(
    model: torch.nn.Module, val: torch.Tensor, lengths: list[int], spans: int
) -> dict[int, float]:
    """Loss on the same validation tokens at every length: `spans` spans of max(lengths) tokens,
    spread over the validation data, each read as windows of n (+1 target) tokens."""
    model.eval()
    span = max(lengths)
    device = next(model.parameters()).device
    starts = torch.linspace(0, len(val) - span - 1, spans).long().tolist()
    out = {}
    for n in lengths:
        windows = torch.stack([val[s + i : s + i + n + 1] for s in starts for i in range(0, span, n)])
        losses = [lm_loss(model, w.to(device)).item() for w in windows.split(32)]
        sizes = [len(w) for w in windows.split(32)]
        out[n] = sum(loss * k for loss, k in zip(losses, sizes, strict=True)) / len(windows)
    return out


def model_for(
    cfg: ModelConfig,
    base: ModelConfig,
    base_runs: dict[int, RunResult],
    seed: int,
    data: TokenData,
    scale: QualityScale,
) -> RunResult:
    run = base_runs.get(seed)
    if cfg == base and run is not None and run.model is not None:
        return run
    return train_run(cfg, data, scale, seed, evals=1, keep_model=True, init_from=base)


def scheme_config(proxy: ModelConfig, pos: str, longest: int) -> ModelConfig:
    """The proxy with `pos` as its only position information (token shift off); learned absolute
    positions get a table as long as the longest evaluation."""
    cfg = proxy.with_values({**OFF, **POSITIONS[pos]})
    return cfg.with_values({("wrapper", "max_seq_len"): longest}) if pos == "abs" else cfg


def reusable(cfg: ModelConfig, proxy: ModelConfig, seed: int, base_runs: dict[int, RunResult]) -> bool:
    """The base variant's own run answers this one: nothing new to train."""
    return cfg == proxy and seed in base_runs


def extrapolation(
    proxy: ModelConfig, scale: QualityScale, data: TokenData, rec: Recorder, base_runs: dict[int, RunResult]
) -> None:
    T = scale.seq_len
    lengths = [T] + [T * f for f in scale.extrap_factors]
    spans = max(1, scale.extrap_tokens // max(lengths))  # the same tokens at every length
    for pos in schemes(proxy):
        cfg = scheme_config(proxy, pos, max(lengths))
        for seed in scale.seeds:
            labels = {n: {"pos": pos, "train_len": T, "eval_len": n, "seed": seed} for n in lengths}
            if past_deadline() and not reusable(cfg, proxy, seed, base_runs):  # a new run would start
                for n in lengths:
                    rec.skipped(EXTRAPOLATION_VAL_LOSS, M, BUDGET_SKIP, labels[n])
                continue
            run = model_for(cfg, proxy, base_runs, seed, data, scale)
            if run.diverged_at is not None:
                for n in lengths:
                    rec.failed(
                        EXTRAPOLATION_VAL_LOSS, M, f"training diverged at step {run.diverged_at}", labels[n]
                    )
                continue
            for n, loss in context_losses(run.model, data.val, lengths, spans).items():
                rec.add(EXTRAPOLATION_VAL_LOSS, loss, M, labels[n])


def attention_kv(
    study: Study,
    proxy: ModelConfig,
    scale: QualityScale,
    data: TokenData,
    rec: Recorder,
    base_runs: dict[int, RunResult],
) -> None:
    context = study.base.max_seq_len  # the full context: workload-free, like every record here
    dtype = study.workloads.dtype
    for attn, one_kv in ((Attn.MQA, True), (Attn.MHA, False)):
        cfg = kv_config(proxy, one_kv)
        for seed in scale.seeds:
            if past_deadline() and not reusable(cfg, proxy, seed, base_runs):
                labels = {"attn": attn, "seed": seed, "tokens": scale.tokens_per_run}
                rec.skipped(ATTN_KV_VAL_LOSS, M, BUDGET_SKIP, labels)
                continue
            run = model_for(cfg, proxy, base_runs, seed, data, scale)
            if run.diverged_at is None:
                labels = {"attn": attn, "seed": seed, "tokens": run.final.tokens}
                rec.add(ATTN_KV_VAL_LOSS, run.final.val_loss, M, labels)
        full = kv_config(study.base, one_kv)
        for model, c in (("full", full), ("proxy", cfg)):
            labels = {
                "attn": attn,
                "model": model,
                "kv_heads": c.kv_heads,
                "context": context,
                "cache_batch": 1,
            }
            nbytes = kv_cache_bytes(c, context, 1, dtype)
            rec.add(KV_CACHE_BYTES, nbytes, Method.CLOSED_FORM, labels, dtype=dtype, scale=Scale.ANALYTIC)


def study_ablations(
    study: Study, scale: QualityScale, data: TokenData, rec: Recorder, base_runs: dict[int, RunResult]
) -> None:
    proxy = proxy_config(study.base, scale)
    extrapolation(proxy, scale, data, rec, base_runs)
    attention_kv(study, proxy, scale, data, rec, base_runs)
    grad_health(proxy, scale, data, rec)
