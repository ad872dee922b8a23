"""The training section: per device, short runs, length extrapolation and head ablation; and figures.

CPU proxies and GPU full-scale runs are not comparable, so each device gets its own tables; the
figures show the GPU's where there are any. Means and spreads over seeds come from the query.
"""

from __future__ import annotations

import pandas as pd

from ...catalog.declared.training import (
    EXTRAPOLATION_VAL_LOSS,
    GRAD_NORM,
    HEAD_ABLATION_QUARTER_MEAN,
    HEAD_ABLATION_SINGLE_MAX,
    HEAD_ABLATION_SINGLE_MEAN,
    NGRAM_VAL_LOSS,
    OVERFIT_TRAIN_LOSS,
    OVERFIT_VAL_LOSS,
    PROXY_PARAMS,
    VAL_LOSS,
    VAL_LOSS_EQUAL_FLOPS,
    VAL_LOSS_FINAL,
    VAL_LOSS_TUNED,
)
from ...catalog.vocabulary import Status
from ...kit.figures import Figure, lines, scatter
from ...kit.format import Quantity, fixed, si
from ...kit.sections import Section, Table, axis_panels, variant_order
from ...results.query import Results, Value

TRAINING_METRICS = (
    VAL_LOSS_FINAL,
    VAL_LOSS_EQUAL_FLOPS,
    VAL_LOSS_TUNED,
    OVERFIT_VAL_LOSS,
    PROXY_PARAMS,
    HEAD_ABLATION_QUARTER_MEAN,
    EXTRAPOLATION_VAL_LOSS,
    GRAD_NORM,
)
CONTROLS = {
    "abs": "learned absolute positions (positive control)",
    "none": "no position information (positive control)",
}


def scale_text(device: str) -> tuple[str, str]:
    """(title words, tokens) of the training scale a device's results come from (instruments/proxy.py)."""
    if device.startswith("cuda"):
        return (
            f"full shapes on {device}",
            "BPE tokens of the study's vocabulary on the Python standard library's source",
        )
    return "CPU-scale proxies", "byte-level tokens on the Python standard library's source"


def seeds_text(values: list[Value]) -> str:
    """'2 seeds' (or '1-2 seeds'): how many seeds the values actually average."""
    ns = sorted({v.n for v in values}) or [0]
    count = str(ns[0]) if len(ns) == 1 else f"{ns[0]}-{ns[-1]}"
    return f"{count} seed{'' if ns[-1] == 1 else 's'}"


def mean_spread(v: Value | None, digits: int = 3) -> str:
    if v is None or v.value is None:
        return "n/a"
    text = fixed(v.value, digits)
    return f"{text} ± {fixed(v.spread, digits)}" if v.spread is not None else text


def loss_cell(results: Results, metric: str, at: dict) -> str:
    """mean ± spread over the seeds, with the learning rate where the value names one; else why it is
    missing (a test the run's quality tier does not power)."""
    v = results.one(metric, **at)
    if v is not None:
        return mean_spread(v) + (f" (lr {v.get('lr'):g})" if v.get("lr") is not None else "")
    skipped = results.values(metric, status=Status.SKIPPED, **at)
    return "not run at this tier" if skipped else "n/a"


def at_last_step(results: Results, metric: str, at: dict) -> Value | None:
    found = results.values(metric, **at)
    return max(found, key=lambda v: int(v.get("step"))) if found else None


def devices(results: Results) -> list[str]:
    """The devices with training results, GPUs first."""
    found = {v.device for m in TRAINING_METRICS for v in results.values(m)}
    return sorted(found, key=lambda d: (not d.startswith("cuda"), d))


def runs_table(results: Results, study, device: str) -> Table:
    scale, tokens = scale_text(device)
    rows, averaged = [], []
    for vid in variant_order(study):
        at = {"variant": vid, "device": device}
        if not any(results.values(m, status=None, **at) for m in TRAINING_METRICS):
            continue
        held, train = (
            at_last_step(results, OVERFIT_VAL_LOSS, at),
            at_last_step(results, OVERFIT_TRAIN_LOSS, at),
        )
        proxy = results.one(PROXY_PARAMS, **at)
        proxy_text = f"{si(proxy.value, '')} params ({proxy.get('dim')} wide)" if proxy else "n/a"
        averaged += [v for m in (VAL_LOSS_FINAL, VAL_LOSS_TUNED) if (v := results.one(m, **at)) is not None]
        overfit = (
            f"{fixed(held.value, 3)} / {fixed(train.value, 3)}"
            if held is not None and train is not None
            else "n/a"
        )
        rows.append(
            [
                vid,
                proxy_text,
                loss_cell(results, VAL_LOSS_FINAL, at),
                loss_cell(results, VAL_LOSS_TUNED, at),
                loss_cell(results, VAL_LOSS_EQUAL_FLOPS, at),
                overfit,
            ]
        )
    proxies = (
        " Proxies are scaled-down versions of each variant (see results `proxy_params` for the rule): "
        "trends, not the full-size losses."
        if scale.startswith("CPU")
        else ""
    )
    ref = results.values(NGRAM_VAL_LOSS, device=device)
    criterion = (
        f" Read criterion: a comparison is read only where every arm's loss lies below the "
        f"{ref[0].value:.3f} nats/token of a bigram count model of the same tokens (past the initial fall)."
        if ref
        else ""
    )
    return Table(
        f"Training runs ({scale})",
        f"Validation loss in nats per token ({tokens}), mean ± spread over {seeds_text(averaged)} that share "
        "their data order, evaluation windows and shared initial values (the comparisons are paired by seed): "
        "at equal tokens at the scale's learning rate (end of the annealed run); at equal tokens at the arm's own "
        "best learning rate (width and depth arms: a sweep on the first seed); at equal training FLOPs (6N + "
        "attention, Kaplan et al. 2020, the cheapest variant's budget, each its own annealed run). Small subset: "
        "held-out / training loss at the end of many passes over a small training subset (mean of seeds). "
        '"not run at this tier": `run --quality thorough` runs it.' + criterion + proxies,
        [
            "variant",
            "proxy",
            "val loss, equal tokens",
            "val loss, own best lr",
            "val loss, equal FLOPs",
            "small subset: held-out / training",
        ],
        rows,
    )


def extrapolation_table(results: Results, study, device: str) -> Table | None:
    found = results.values(EXTRAPOLATION_VAL_LOSS, variant=variant_order(study)[0], device=device)
    if not found:
        return None
    scale, _ = scale_text(device)
    cell = {(v.get("pos"), int(v.get("eval_len"))): v for v in found}
    cols = sorted({n for _, n in cell})
    positions = sorted({p for p, _ in cell}, key=lambda p: (p in CONTROLS, p))
    rows = [
        [
            CONTROLS.get(pos, pos),
            *(Quantity(cell[pos, n].value if (pos, n) in cell else None, "nats/token") for n in cols),
        ]
        for pos in positions
    ]
    return Table(
        f"Length extrapolation ({scale})",
        f"Trained at {found[0].get('train_len')} tokens with one positional scheme as the model's only position "
        f"information (token shift off), validation loss (nats/token, mean of {seeds_text(found)}) on the same "
        "tokens at longer lengths. The positive controls are known to fail beyond the training length (Press et "
        "al. 2022): where they do not rise beyond the claims' minimal effect, the test cannot see a failure.",
        ["positions", *[f"eval at {c}" for c in cols]],
        rows,
    )


def head_ablation_table(results: Results, study, device: str) -> Table | None:
    heads = {v.variant_id: v.config.heads for v in study.variants()}
    rows, quarters = [], []
    for vid in variant_order(study):
        at = {"variant": vid, "device": device}
        quarter = results.one(HEAD_ABLATION_QUARTER_MEAN, **at)
        if quarter is None:
            continue
        quarters.append(quarter)
        single = [results.one(m, **at) for m in (HEAD_ABLATION_SINGLE_MEAN, HEAD_ABLATION_SINGLE_MAX)]
        rows.append(
            [
                vid,
                str(heads[vid]),
                *(Quantity(v.value if v else None, "nats/token", digits=4) for v in single),
                mean_spread(quarter, 4),
            ]
        )
    if not rows:
        return None
    scale, _ = scale_text(device)
    return Table(
        f"Head ablation ({scale})",
        "Rise in validation loss (nats/token) when heads of a trained proxy are silenced at "
        "evaluation (their outputs zeroed before the output projection; Michel et al. 2019): one head "
        "of one layer at a time (mean and worst over every head, first seed), and a random quarter of "
        f"every layer's heads at once (mean ± spread over {seeds_text(quarters)}). A smaller rise means the "
        "model leans less on any single head.",
        ["variant", "heads", "one head: mean rise", "one head: worst rise", "a quarter of heads: rise"],
        rows,
    )


def figures(results: Results, study, device: str) -> list[Figure]:
    scale, tokens = scale_text(device)
    out: list[Figure | None] = []
    order = {vid: i for i, vid in enumerate(variant_order(study))}
    curves = sorted(results.values(VAL_LOSS, device=device, seed=0), key=lambda v: order.get(v.variant_id, 0))
    if curves:
        df = pd.DataFrame(
            [{"variant_id": v.variant_id, "tokens": int(v.get("tokens")), "value": v.value} for v in curves]
        )
        out.append(
            lines(
                df,
                "tokens",
                "variant_id",
                "val_loss_curves",
                "Validation loss during training (seed 0)",
                "nats per token",
                f"{scale[0].upper()}{scale[1:]}, {tokens.split(' on ')[0]}, equal token budgets.",
                "training / val_loss",
                logy=False,
                panels=axis_panels(study),
            )
        )
    final = results.values(VAL_LOSS_FINAL, device=device)
    if final:
        df = pd.DataFrame(
            [{"variant_id": v.variant_id, "flops": float(v.get("flops")), "loss": v.value} for v in final]
        )
        pareto = df.groupby("variant_id").agg(flops=("flops", "first"), loss=("loss", "mean")).reset_index()
        out.append(
            scatter(
                pareto,
                "flops",
                "loss",
                "variant_id",
                "quality_vs_compute",
                "Quality versus training compute",
                "training FLOPs of the run (6N + attention)",
                "final validation loss (nats/token, mean of seeds)",
                f"Each variant's final validation loss ({scale}) against the FLOPs its run spent; the dashed "
                "line is the Pareto front (the best loss reachable at that compute).",
                "training / val_loss_final",
            )
        )
    grads = results.values(GRAD_NORM, variant=variant_order(study)[0], device=device)
    if grads:
        deepest = max(int(v.get("depth")) for v in grads)
        first_seed = min(str(v.get("seed")) for v in grads)  # the deepest has every seed; one line each norm
        at_depth = [v for v in grads if int(v.get("depth")) == deepest and str(v.get("seed")) == first_seed]
        step = max(int(v.get("step")) for v in at_depth)
        df = pd.DataFrame(
            [
                {"block": int(v.get("block")) + 1, "norm": v.get("norm"), "value": v.value}
                for v in at_depth
                if int(v.get("step")) == step
            ]
        )
        out.append(
            lines(
                df,
                "block",
                "norm",
                "grad_norms",
                f"Gradient norm per block, depth {deepest}, end of the short run",
                "gradient L2 norm",
                f"Per-block gradient norms ({scale}) at the largest depth "
                f"tested, for pre-norm (x-transformers default), plain post-norm and DeepNorm (seed {first_seed}).",
                "training / grad_norm",
                logx=False,
                logy=True,
            )
        )
    return [f for f in out if f]


def training_section(results: Results, study) -> Section:
    section = Section(
        "training",
        "Short training runs",
        "Short seeded training runs of proxy models on a corpus every machine has (no download), and the "
        "study-wide ablations around the base: gradient health, length extrapolation, one KV head or many.",
    )
    found = devices(results)
    for device in found:
        tables = [
            runs_table(results, study, device),
            extrapolation_table(results, study, device),
            head_ablation_table(results, study, device),
        ]
        section.tables += [t for t in tables if t]
    if found:
        section.figures += figures(results, study, found[0])
    else:
        section.missing = "no `training` results: add `training` to the study's measurements and run it"
    return section
