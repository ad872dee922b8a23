"""Quality and behaviour: probes on every variant, and short training runs of proxies.

Measurements `probes` and `training`. Categories are key=value lists (measure/_recorder.py).
"""

from __future__ import annotations

import pandas as pd

from ...measure._recorder import parse_category
from ..figures import lines, scatter
from . import Section, Table, ok_rows, pick, si, variant_order, with_parts


def _probe_cell(rows: pd.DataFrame, vid: str, metric: str, case: str | None = None) -> str:
    r = rows[(rows["variant_id"] == vid) & (rows["metric"] == metric)]
    if case:
        r = r[r["category"].str.startswith(f"case={case}")]
    r = r[r["status"] != "skipped"]
    if r.empty:
        return "not run"
    bad = r[r["status"] == "error"]
    if not bad.empty:
        return "FAIL: " + str(bad["error"].iloc[0])[:80]
    return f"pass (max |diff| {r['value'].max():.2g})"


def _probes_table(results: pd.DataFrame, study) -> list[Table]:
    rows = results[results.get("measurement") == "probes"].copy()
    if rows.empty:
        return []
    rows["category"] = rows["category"].fillna("").astype(str)
    out = [
        [
            vid,
            _probe_cell(rows, vid, "causality"),
            _probe_cell(rows, vid, "kernel_agreement"),
            _probe_cell(rows, vid, "kv_cache", "as_built"),
        ]
        for vid in variant_order(study)
        if vid in set(rows["variant_id"])
    ]
    tables = [
        Table(
            "Behaviour probes",
            "Causality: changing token t+1 must leave every output at positions <= t "
            "unchanged (max |logit change| shown). Kernel agreement: flash-enabled and math attention "
            "paths give the same logits within the dtype tolerance. KV cache: logits from cached "
            "incremental decoding against a full recompute; a crash is a result.",
            ["variant", "causality", "kernel agreement", "KV-cache decoding"],
            out,
        )
    ]
    cases = pick(rows, variant_id="base", metric="kv_cache")
    if not cases.empty:
        detail = [
            [
                parse_category(c).get("case", c),
                "pass" if s == "ok" else "FAIL",
                f"{v:.2g}" if pd.notna(v) else "-",
                str(e)[:100] if isinstance(e, str) else "",
            ]
            for c, s, v, e in zip(
                cases["category"], cases["status"], cases["value"], cases["error"], strict=True
            )
        ]
        tables.append(
            Table(
                "KV-cache decoding on the base, flag by flag",
                "The same probe with one flag removed (without=...) or with only a pair of flags on "
                "(only=...), to find which flags break cached decoding. Max |logit diff| in logits.",
                ["case", "result", "max |diff|", "error"],
                detail,
            )
        )
    return tables


def _mean_spread(rows: pd.DataFrame, vid: str, metric: str, digits: int = 3) -> str:
    r = pick(rows, variant_id=vid, metric=metric, method="aggregate")
    mean = r[r["category"].str.contains("seed=mean")]["value"]
    spread = r[r["category"].str.contains("seed=spread")]["value"]
    if mean.empty:
        return "n/a"
    text = f"{mean.iloc[0]:.{digits}f}"
    return f"{text} ± {spread.iloc[0]:.{digits}f}" if not spread.empty else text


def _scale_text(device: str) -> tuple[str, str]:
    """(title words, tokens) of the training scale a device's results come from (measure/_quality.py)."""
    if device.startswith("cuda"):
        return (
            f"full shapes on {device}",
            "BPE tokens of the study's vocabulary on the Python standard library's source",
        )
    return "CPU-scale proxies", "byte-level tokens on the Python standard library's source"


def _training_tables(rows: pd.DataFrame, study, device: str = "cpu") -> list[Table]:
    out = []
    for vid in variant_order(study):
        r = pick(rows, variant_id=vid)
        if r.empty:
            continue
        gap = with_parts(pick(r, metric="overfit_gap"))
        last_gap = gap.loc[gap["step"].astype(int).idxmax(), "value"] if not gap.empty else None
        proxy = pick(r, metric="proxy_params")
        proxy_text = (
            f"{si(proxy['value'].iloc[0], '')} params ({parse_category(proxy['category'].iloc[0]).get('dim')}"
            f" wide)"
            if not proxy.empty
            else "n/a"
        )
        out.append(
            [
                vid,
                proxy_text,
                _mean_spread(r, vid, "val_loss_final"),
                _mean_spread(r, vid, "val_loss_equal_flops"),
                f"{last_gap:.3f}" if last_gap is not None else "n/a",
            ]
        )
    scale, tokens = _scale_text(device)
    proxies = (
        " Proxies are scaled-down versions of each variant (see results `proxy_params` for the rule): "
        "trends, not the full-size losses."
        if scale.startswith("CPU")
        else ""
    )
    tables = [
        Table(
            f"Short training runs ({scale})",
            f"Validation loss in nats per token ({tokens}), "
            "mean ± spread over 2 seeds, at equal tokens (end of run) and at equal training FLOPs "
            "(6N + attention, Kaplan et al. 2020, read at the cheapest variant's budget). Overfit gap: "
            "validation minus training loss after repeated epochs on a small subset." + proxies,
            ["variant", "proxy", "val loss, equal tokens", "val loss, equal FLOPs", "overfit gap"],
            out,
        )
    ]
    ext = with_parts(pick(rows, variant_id="base", metric="extrapolation_val_loss", method="aggregate"))
    if not ext.empty:
        ext = ext[ext["seed"] == "mean"]
        wide = ext.pivot_table(index="pos", columns="eval_len", values="value", aggfunc="first")
        cols = sorted(wide.columns, key=int)
        tables.append(
            Table(
                f"Length extrapolation ({scale})",
                f"Trained at {ext['train_len'].iloc[0]} tokens, validation "
                "loss (nats/token, mean of 2 seeds) at longer lengths, by positional scheme.",
                ["positions", *[f"eval at {c}" for c in cols]],
                [[pos, *[f"{wide.loc[pos, c]:.3f}" for c in cols]] for pos in wide.index],
            )
        )
    tables += _head_ablation_table(rows, study, scale)
    return tables


def _head_ablation_table(rows: pd.DataFrame, study, scale: str) -> list[Table]:
    metrics = ("head_ablation_single_mean", "head_ablation_single_max", "head_ablation_quarter_mean")
    heads = {v.variant_id: v.config.heads for v in study.variants()}

    def first_seed(vid: str, metric: str) -> str:  # single-head ablations run on the first seed only
        r = pick(rows, variant_id=vid, metric=metric, method="measured")
        return f"{r['value'].iloc[0]:.4f}" if not r.empty else "n/a"

    out = [
        [
            vid,
            str(heads[vid]),
            *[first_seed(vid, m) for m in metrics[:2]],
            _mean_spread(rows, vid, metrics[2], 4),
        ]
        for vid in variant_order(study)
        if not pick(rows, variant_id=vid, metric=metrics[2]).empty
    ]
    if not out:
        return []
    return [
        Table(
            f"Head ablation ({scale})",
            "Rise in validation loss (nats/token) when heads of a trained proxy are silenced at "
            "evaluation (their outputs zeroed before the output projection; Michel et al. 2019): one head "
            "of one layer at a time (mean and worst over every head, first seed), and a random quarter of "
            "every layer's heads at once (mean ± spread over 2 seeds). A smaller rise means the model "
            "leans less on any single head.",
            ["variant", "heads", "one head: mean rise", "one head: worst rise", "a quarter of heads: rise"],
            out,
        )
    ]


def quality_section(results: pd.DataFrame, study) -> Section:
    section = Section(
        "quality",
        "Quality and behaviour",
        "Probes on every variant, and short seeded training "
        "runs of proxy models on a corpus every machine has (no download).",
    )
    section.tables += _probes_table(results, study)
    rows = ok_rows(results, "training")
    if not rows.empty:
        # one set of tables per device (CPU proxies and GPU full-scale runs are not comparable);
        # the figures show the GPU's where there are any
        devices = sorted(rows["device"].astype(str).unique(), key=lambda d: (not d.startswith("cuda"), d))
        for device in devices:
            section.tables += _training_tables(rows[rows["device"] == device], study, device)
        rows = rows[rows["device"] == devices[0]]
        scale, tokens = _scale_text(devices[0])
        curves = with_parts(rows[(rows["metric"] == "val_loss") & rows["category"].str.startswith("seed=0,")])
        if not curves.empty:
            curves["tokens"] = curves["tokens"].astype(int)
            fig = lines(
                curves,
                "tokens",
                "variant_id",
                "val_loss_curves",
                "Validation loss during training (seed 0)",
                "nats per token",
                f"{scale[0].upper()}{scale[1:]}, {tokens.split(' on ')[0]}, equal token budgets.",
                "training / val_loss",
                logy=False,
            )
            if fig:
                section.figures.append(fig)
        final = with_parts(rows[(rows["metric"] == "val_loss_final") & (rows["method"] == "measured")])
        if not final.empty and "flops" in final:
            final["flops"] = final["flops"].astype(float)
            pareto = (
                final.groupby("variant_id")
                .agg(flops=("flops", "first"), loss=("value", "mean"))
                .reset_index()
            )
            fig = scatter(
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
            if fig:
                section.figures.append(fig)
        grads = with_parts(pick(rows, variant_id="base", metric="grad_norm"))
        if not grads.empty:
            deepest = grads["depth"].astype(int).max()
            g = grads[
                (grads["depth"].astype(int) == deepest)
                & (grads["step"].astype(int) == grads["step"].astype(int).max())
            ].copy()
            g["block"] = g["block"].astype(int) + 1
            fig = lines(
                g,
                "block",
                "norm",
                "grad_norms",
                f"Gradient norm per block, depth {deepest}, end of the short run",
                "gradient L2 norm",
                f"Per-block gradient norms ({scale}) at the largest depth "
                "tested, for pre-norm (x-transformers default), plain post-norm and DeepNorm.",
                "training / grad_norm",
                logx=False,
                logy=True,
            )
            if fig:
                section.figures.append(fig)
    if not section.tables:
        section.missing = (
            "no quality results: add `probes` and `training` to the study's measurements and run it"
        )
    return section
