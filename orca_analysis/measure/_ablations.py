"""Study-wide ablations around the base variant's proxy (run once, with the base variant).

Gradient health: per-block gradient norms at initialisation and late in a short run, for
  depths in scale.grad_depths, with pre-norm (x-transformers' default: the reference),
  post-norm (DeepNorm's layout without its alpha and beta) and the DeepNorm realisation.
Length extrapolation: train at T, score the same validation tokens in windows of T, 2T, 4T,
  for ALiBi + xPos, ALiBi only, xPos only and neither (positions then come from causal
  masking alone: Orca has no absolute position table).
Multi-query versus multi-head: validation loss against KV-cache bytes (closed form).
Runs that match the base's own settings reuse the base variant's runs instead of retraining.
"""

from __future__ import annotations

import torch

from ..study.schema import ModelConfig, Study
from ._corpus import TokenData
from ._quality import BUDGET_SKIP, QualityScale, kv_cache_bytes, past_deadline, proxy_config
from ._recorder import Recorder, cat
from ._trainer import RunResult, lm_loss, train_run

NORMS = ("pre_norm", "post_norm", "deepnorm")
POSITIONS = {
    "alibi+xpos": (True, True),
    "alibi": (True, False),
    "xpos": (False, True),
    "none": (False, False),
}
_NORM_KEYS = ("deepnorm", "pre_norm", "scale_residual_constant")
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def norm_config(cfg: ModelConfig, norm: str) -> ModelConfig:
    layers = {k: v for k, v in cfg.layers.items() if k not in _NORM_KEYS}
    if norm == "post_norm":
        layers["pre_norm"] = False
    elif norm == "deepnorm":
        layers["deepnorm"] = True
    return ModelConfig(cfg.wrapper, layers)


def position_config(cfg: ModelConfig, alibi: bool, xpos: bool) -> ModelConfig:
    layers = {**cfg.layers, "alibi_pos_bias": alibi, "rotary_xpos": xpos}
    if "rotary_pos_emb" in layers:
        layers["rotary_pos_emb"] = xpos
    return ModelConfig(cfg.wrapper, layers)


def kv_config(cfg: ModelConfig, one_kv_head: bool) -> ModelConfig:
    layers = {k: v for k, v in cfg.layers.items() if k != "attn_kv_heads"}
    layers["attn_one_kv_head"] = one_kv_head
    return ModelConfig(cfg.wrapper, layers)


def grad_health(proxy: ModelConfig, scale: QualityScale, data: TokenData, rec: Recorder) -> None:
    last = scale.grad_steps - 1
    for depth in scale.grad_depths:
        for norm in NORMS:
            if past_deadline():
                c = cat(norm=norm, depth=depth)
                rec.add(
                    "grad_norm_first_over_last",
                    None,
                    "ratio",
                    category=c,
                    status="skipped",
                    error=BUDGET_SKIP,
                )
                continue
            cfg = norm_config(proxy.with_values({("attn_layers", "depth"): depth}), norm)
            run = train_run(
                cfg,
                data,
                scale,
                scale.seeds[0],
                steps=scale.grad_steps,
                evals=0,
                grad_steps={0, last},
            )
            for step, norms in sorted(run.grad_norms.items()):
                for block, g in enumerate(norms):
                    c = cat(norm=norm, depth=depth, step=step, block=block)
                    rec.add("grad_norm", g, "L2 norm", category=c)
                ratio = norms[0] / norms[-1] if norms[-1] else None
                c = cat(norm=norm, depth=depth, step=step)
                rec.add("grad_norm_first_over_last", ratio, "ratio", category=c)
            tail = run.losses[-5:]  # mean minibatch loss of the last 5 steps
            diverged = run.diverged_at is not None
            status = (
                dict(status="error", error=f"loss not finite at step {run.diverged_at}") if diverged else {}
            )
            c = cat(norm=norm, depth=depth, steps=scale.grad_steps, batch=scale.grad_batch)
            rec.add(
                "grad_health_train_loss",
                sum(tail) / len(tail) if tail else None,
                category=c,
                **status,
            )


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


def _model_for(
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
    return train_run(cfg, data, scale, seed, evals=1, keep_model=True)


def extrapolation(
    proxy: ModelConfig, scale: QualityScale, data: TokenData, rec: Recorder, base_runs: dict[int, RunResult]
) -> None:
    T = scale.seq_len
    lengths = [T] + [T * f for f in scale.extrap_factors]
    spans = max(1, scale.eval_windows * T // max(lengths))  # as many tokens as a validation eval
    for pos, (alibi, xpos) in POSITIONS.items():
        cfg = position_config(proxy, alibi, xpos)
        per_len: dict[int, list[float]] = {n: [] for n in lengths}
        for seed in scale.seeds:
            if past_deadline() and not (cfg == proxy and seed in base_runs):  # a new run would start
                c = cat(pos=pos, seed=seed)
                rec.add("extrapolation_val_loss", None, category=c, status="skipped", error=BUDGET_SKIP)
                continue
            run = _model_for(cfg, proxy, base_runs, seed, data, scale)
            if run.diverged_at is not None:
                rec.add(
                    "extrapolation_val_loss",
                    None,
                    status="error",
                    category=cat(pos=pos, seed=seed),
                    error=f"training diverged at step {run.diverged_at}",
                )
                continue
            for n, loss in context_losses(run.model, data.val, lengths, spans).items():
                per_len[n].append(loss)
                rec.add(
                    "extrapolation_val_loss",
                    loss,
                    category=cat(pos=pos, seed=seed, train_len=T, eval_len=n),
                )
        for n, values in per_len.items():
            if values:
                rec.seed_stats(
                    "extrapolation_val_loss",
                    values,
                    category=cat(pos=pos, train_len=T, eval_len=n),
                )


def attention_kv(
    study: Study,
    proxy: ModelConfig,
    scale: QualityScale,
    data: TokenData,
    rec: Recorder,
    base_runs: dict[int, RunResult],
) -> None:
    seq_len = study.base.max_seq_len  # the full context: workload-free, like every record here
    nbytes = DTYPE_BYTES[study.workloads.dtype]
    for attn, one_kv in (("mqa", True), ("mha", False)):
        cfg = kv_config(proxy, one_kv)
        values = []
        for seed in scale.seeds:
            if past_deadline() and not (cfg == proxy and seed in base_runs):
                c = cat(attn=attn, seed=seed)
                rec.add("attn_kv_val_loss", None, category=c, status="skipped", error=BUDGET_SKIP)
                continue
            run = _model_for(cfg, proxy, base_runs, seed, data, scale)
            if run.diverged_at is None:
                values.append(run.final.val_loss)
                rec.add(
                    "attn_kv_val_loss",
                    run.final.val_loss,
                    category=cat(attn=attn, seed=seed, tokens=run.final.tokens),
                )
        if values:
            rec.seed_stats("attn_kv_val_loss", values, category=cat(attn=attn))
        full = kv_config(study.base, one_kv)
        for scale_name, c in (("full", full), ("proxy", cfg)):
            rec.add(
                "kv_cache_bytes",
                kv_cache_bytes(c, seq_len, 1, nbytes),
                "bytes",
                method="closed_form",
                dtype=study.workloads.dtype,
                category=cat(attn=attn, scale=scale_name, kv_heads=c.kv_heads, context=seq_len, batch=1),
            )


def study_ablations(
    study: Study, scale: QualityScale, data: TokenData, rec: Recorder, base_runs: dict[int, RunResult]
) -> None:
    proxy = proxy_config(study.base, scale)
    extrapolation(proxy, scale, data, rec, base_runs)
    attention_kv(study, proxy, scale, data, rec, base_runs)
    grad_health(proxy, scale, data, rec)
