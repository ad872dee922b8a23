"""The arms of the training comparisons that the quality tier decides: each width and depth arm at its own
best learning rate, and equal-FLOP runs.

Width and depth arms (instruments/proxy.py LR_AXES, the base among them) are compared at a fair learning
rate: at the thorough tier each is trained on the first seed at the scale's rate times 1 and each of
`lr_factors`; the rate of the lowest held-out loss is kept (`lr_chosen`), and the other seeds train at it
(`val_loss_tuned`, every seed; the first seed's run is the sweep's own, so it is read at the rate chosen
on it, alike for every arm). At the standard tier these arms are recorded as skipped, with the reason:
the comparisons that need them are "not testable at this scale" there, never read at one shared rate.

Equal FLOPs: every variant gets the study's common budget (the cheapest variant's full run at the
scale's token budget), each in an annealed run of its own, read at its end (`val_loss_equal_flops`).
"""

from __future__ import annotations

from ...catalog.declared.training import LR_CHOSEN, LR_SWEEP_VAL_LOSS, VAL_LOSS_EQUAL_FLOPS, VAL_LOSS_TUNED
from ...catalog.vocabulary import Method
from ...instruments.corpus import TokenData
from ...instruments.proxy import BUDGET_SKIP, LR_AXES, QualityScale, past_deadline
from ...instruments.trainer import RunResult, train_run
from ...study.schema import ModelConfig, Study, Variant
from ..recorder import Recorder

M = Method.MEASURED
NOT_POWERED_LR = (
    "not run at this quality tier: a width or depth arm is compared only at its own best learning "
    "rate, which `run --quality thorough` sweeps"
)
NOT_POWERED_FLOPS = (
    "not run at this quality tier: equal-FLOP runs give the deeper and wider arms too few steps "
    "to leave their initial fall; `run --quality thorough` runs them"
)


def lr_arm(variant: Variant, study: Study) -> bool:
    """The variant is compared along a width or depth axis (the base, or a variant that changes one)."""
    base = study.base_variant
    on_axes = [k for k in variant.swept if k in LR_AXES]
    if variant.variant_id == base.variant_id:
        return bool(on_axes)
    return bool(on_axes) and any(variant.swept[k] != base.swept[k] for k in on_axes)


def tuned_runs(
    proxy: ModelConfig,
    data: TokenData,
    scale: QualityScale,
    rec: Recorder,
    main: dict[int, RunResult],
    init_from: ModelConfig,
) -> float | None:
    """The learning-rate sweep on the first seed, the chosen rate on every seed (`main`: the runs at the
    scale's own rate, reused where that rate is chosen); or, at a tier without a sweep, skipped records.
    The rate chosen, or None."""
    if not scale.lr_factors:
        for seed in scale.seeds:
            rec.skipped(
                VAL_LOSS_TUNED,
                M,
                NOT_POWERED_LR,
                {"seed": seed, "lr": scale.lr, "tokens": scale.tokens_per_run},
            )
        return None
    first = scale.seeds[0]
    tried: dict[float, RunResult] = {}
    for factor in (1.0, *scale.lr_factors):
        lr = scale.lr * factor
        run = main.get(first) if factor == 1.0 else None
        run = run or train_run(proxy, data, scale, first, lr=lr, evals=1, init_from=init_from)
        tried[lr] = run
        if run.diverged_at is None:
            rec.add(LR_SWEEP_VAL_LOSS, run.final.val_loss, M, {"lr": lr, "seed": first})
        else:
            rec.failed(
                LR_SWEEP_VAL_LOSS,
                M,
                f"loss not finite at step {run.diverged_at}",
                {"lr": lr, "seed": first},
            )
    finite = {lr: r for lr, r in tried.items() if r.diverged_at is None}
    if not finite:
        return None
    best = min(finite, key=lambda lr: finite[lr].final.val_loss)
    rates = ", ".join(f"{lr:g}" for lr in tried)
    rec.add(
        LR_CHOSEN, best, M, {"candidates": rates}, note=f"lowest held-out loss on seed {first} of {rates}"
    )
    for seed in scale.seeds:
        if past_deadline():
            rec.skipped(
                VAL_LOSS_TUNED, M, BUDGET_SKIP, {"seed": seed, "lr": best, "tokens": scale.tokens_per_run}
            )
            continue
        run = finite[best] if seed == first else main.get(seed) if best == scale.lr else None
        run = run or train_run(proxy, data, scale, seed, lr=best, evals=1, init_from=init_from)
        if run.diverged_at is None:
            rec.add(
                VAL_LOSS_TUNED,
                run.final.val_loss,
                M,
                {"seed": seed, "lr": best, "tokens": run.final.tokens},
            )
    return best


def equal_flop_runs(
    proxy: ModelConfig,
    data: TokenData,
    scale: QualityScale,
    rec: Recorder,
    main: dict[int, RunResult],
    steps: int,
    labels: dict,
    lr: float | None,
    init_from: ModelConfig,
) -> None:
    """Each seed's run of `steps` steps (the common FLOP budget), annealed at its own end."""
    for seed in scale.seeds:
        at = {
            "seed": seed,
            **labels,
            "step": steps,
            "tokens": steps * scale.batch * scale.seq_len,
            "lr": lr or scale.lr,
        }
        if not scale.equal_flops:
            rec.skipped(VAL_LOSS_EQUAL_FLOPS, M, NOT_POWERED_FLOPS, at)
            continue
        if past_deadline():
            rec.skipped(VAL_LOSS_EQUAL_FLOPS, M, BUDGET_SKIP, at)
            continue
        same = steps == scale.steps and (lr or scale.lr) == scale.lr
        run = main.get(seed) if same else None
        run = run or train_run(proxy, data, scale, seed, steps=steps, evals=1, lr=lr, init_from=init_from)
        if run.diverged_at is None:
            rec.add(VAL_LOSS_EQUAL_FLOPS, run.final.val_loss, M, at)
