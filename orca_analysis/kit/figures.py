"""Figures: matplotlib, one style, saved as SVG (inlined in HTML, linked from Markdown)."""

from __future__ import annotations

import io
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ..results.derive import growth_exponent, pareto_front  # noqa: E402

STYLE = {
    "figure.figsize": (8, 3.6),
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "font.size": 10,
    "svg.fonttype": "none",
    "svg.hashsalt": "orca-analysis",
}
COLOURS = {
    "embedding": "#4C72B0",
    "attention": "#DD8452",
    "feedforward": "#55A868",
    "norm": "#8172B2",
    "logits": "#C44E52",
    "other": "#937860",
}


@dataclass
class Figure:
    name: str  # file stem, e.g. "params_vs_axes"
    title: str
    caption: str
    sources: str  # which results it came from
    svg: str


def _to_svg(fig: plt.Figure) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg") :]  # drop the XML prolog and DOCTYPE so it can be inlined


def vs_axes(
    table: pd.DataFrame,
    axes: list[str],
    series: dict[str, str],
    fit: str,
    name: str,
    title: str,
    ylabel: str,
    caption: str,
    sources: str,
) -> Figure | None:
    """`series` columns against each swept shape axis (others at base), log-log, with the exponent of `fit`."""
    axes = [a for a in axes if a in table and table[a].nunique() > 1]
    if not axes:
        return None
    with plt.rc_context(STYLE):
        fig, panels = plt.subplots(1, len(axes), figsize=(3.2 * len(axes), 3.2), squeeze=False)
        notes = []
        for ax, axis in zip(panels[0], axes, strict=True):
            sub = table[table["on_axis"].apply(lambda on, a=axis: a in on)].sort_values(axis)
            for (label, col), style in zip(series.items(), ("-o", "--s", ":^"), strict=False):
                ax.plot(sub[axis], sub[col], style, label=label)
            k = growth_exponent(sub[axis].tolist(), sub[fit].tolist())
            notes.append(f"{axis}: {fit} ~ {axis}^{k:.2f}")
            ax.set(xscale="log", yscale="log", xlabel=axis, title=f"{axis} ({fit} ~ {axis}^{k:.2f})")
            ax.set_xticks(sub[axis].tolist(), [str(v) for v in sub[axis]])
            ax.minorticks_off()
        panels[0][0].set_ylabel(ylabel)
        panels[0][0].legend(frameon=False)
        fig.tight_layout()
        svg = _to_svg(fig)
    return Figure(name, title, f"{caption} Fitted exponents: " + "; ".join(notes) + ".", sources, svg)


def params_vs_axes(params: pd.DataFrame, axes: list[str]) -> Figure | None:
    """Parameters against each swept shape axis, with the fitted exponent of the layers' share."""
    return vs_axes(
        params,
        axes,
        {"total": "total", "layers": "layers"},
        "layers",
        "params_vs_axes",
        "Parameters versus dim, depth and heads",
        "parameters",
        "Counter values, log-log; 'layers' excludes the embedding and logits tables.",
        "params / counter",
    )


def scatter(
    df: pd.DataFrame,
    x: str,
    y: str,
    label: str,
    name: str,
    title: str,
    xlabel: str,
    ylabel: str,
    caption: str,
    sources: str,
) -> Figure | None:
    """Labelled points, log x: e.g. quality against training compute, with the Pareto front drawn."""
    if df.empty:
        return None
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(8, 3.8))
        ax.scatter(df[x], df[y])
        for _, row in df.iterrows():
            ax.annotate(
                str(row[label]), (row[x], row[y]), textcoords="offset points", xytext=(4, 4), fontsize=8
            )
        front = df.sort_values(x)
        front = front[front[y] <= front[y].cummin()]  # the best loss reachable at each compute
        ax.plot(front[x], front[y], "--", color="grey", label="Pareto front")
        ax.set(xscale="log", xlabel=xlabel, ylabel=ylabel)
        ax.legend(frameon=False)
        fig.tight_layout()
        svg = _to_svg(fig)
    return Figure(name, title, caption, sources, svg)


def param_split(params: pd.DataFrame) -> Figure:
    """Stacked bars of the parameter split per variant."""
    comps = ["embedding", "logits", "attention", "feedforward", "norm"]
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(8, 3.4))
        bottom = np.zeros(len(params))
        for comp in comps:
            values = params[comp].to_numpy() / 1e6
            ax.bar(params["variant_id"], values, bottom=bottom, label=comp, color=COLOURS[comp])
            bottom += values
        ax.set_ylabel("parameters (millions)")
        ax.legend(frameon=False, ncols=5, loc="upper left", fontsize=8)
        ax.set_ylim(0, bottom.max() * 1.18)
        ax.tick_params(axis="x", labelrotation=30)
        fig.tight_layout()
        svg = _to_svg(fig)
    return Figure(
        "param_split",
        "Where the parameters are",
        "Counter values per variant, split into embedding and logits tables versus the layers.",
        "params / counter",
        svg,
    )


MAX_SERIES = 6  # lines per panel: beyond it a chart becomes small multiples
XLABELS = {"seq_len": "sequence length (tokens)", "tokens": "tokens trained", "block": "block (1 = first)"}


def _palette(n: int) -> list:
    """n distinct colours: tab10, or tab20 beyond ten (no colour serves two series of one chart)."""
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(i) for i in range(n)]


def _chunks(names: list[str], size: int) -> list[list[str]]:
    k = -(-len(names) // size)  # panels needed; the series are spread evenly over them
    return [names[i::k] for i in range(k)]


def lines(
    df: pd.DataFrame,
    x: str,
    series: str,
    name: str,
    title: str,
    ylabel: str,
    caption: str,
    sources: str,
    logx: bool = True,
    logy: bool = True,
    style_by: str | None = None,
    panels: dict[str, list[str]] | None = None,
) -> Figure | None:
    """One line per `series` value (e.g. a variant), `value` against `x`; optional dash style per `style_by`.

    Small multiples where one panel would hold more than MAX_SERIES lines: one panel per entry of
    `panels` (title -> the series it shows, e.g. one per sweep axis with the base in each), else the
    series spread evenly. Each series keeps one colour in every panel, and no two share one."""
    if df.empty or df[x].nunique() < 2:
        return None
    dashes = ["-", "--", ":", "-."]
    names = list(dict.fromkeys(df[series].astype(str)))
    styles = {v: dashes[i % 4] for i, v in enumerate(sorted(df[style_by].unique()))} if style_by else {}
    per_name = len(styles) or 1
    if panels:
        groups = {t: [n for n in members if n in names] for t, members in panels.items()}
        groups = {t: g for t, g in groups.items() if g}
    elif len(names) * per_name > MAX_SERIES:
        chunks = _chunks(names, max(1, MAX_SERIES // per_name))
        groups = {f"{i + 1} of {len(chunks)}": g for i, g in enumerate(chunks)}
    else:
        groups = {"": names}
    colour = dict(zip(names, _palette(len(names)), strict=True))
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(
            1,
            len(groups),
            figsize=(8 if len(groups) == 1 else 3.3 * len(groups), 3.8),
            sharey=True,
            squeeze=False,
        )
        for ax, (panel, members) in zip(axes[0], groups.items(), strict=True):
            sub_df = df[df[series].astype(str).isin(members)].sort_values(x)
            keys = [series, style_by] if style_by else [series]
            for key, sub in sub_df.groupby(keys, sort=False):
                key = key if isinstance(key, tuple) else (key,)
                label = " / ".join(map(str, key))
                style = styles.get(key[1], "-") if style_by else "-"
                ax.plot(
                    sub[x],
                    sub["value"],
                    style,
                    marker="o",
                    markersize=3,
                    label=label,
                    color=colour[str(key[0])],
                )
            ax.set(xlabel=XLABELS.get(x, x), title=panel)
            if logx:
                ax.set_xscale("log", base=2)
            if logy:
                ax.set_yscale("log")
            ax.legend(frameon=False, fontsize=7, ncols=1 if len(groups) > 1 else 2, loc="best")
        axes[0][0].set_ylabel(ylabel)
        fig.tight_layout()
        svg = _to_svg(fig)
    return Figure(name, title, caption, sources, svg)


def stacked(
    df: pd.DataFrame,
    x: str,
    stack: str,
    name: str,
    title: str,
    ylabel: str,
    caption: str,
    sources: str,
    scale: float = 1.0,
) -> Figure | None:
    """Stacked bars of `value` per `x`, split by `stack` (e.g. a memory category)."""
    if df.empty:
        return None
    wide = (
        df.pivot_table(index=x, columns=stack, values="value", aggfunc="first", sort=False).fillna(0) / scale
    )
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(8, 3.6))
        bottom = np.zeros(len(wide))
        palette = plt.get_cmap("tab10")
        for k, col in enumerate(wide.columns):
            ax.bar(
                [str(i) for i in wide.index],
                wide[col].to_numpy(),
                bottom=bottom,
                label=str(col),
                color=COLOURS.get(str(col), palette(k % 10)),
            )
            bottom += wide[col].to_numpy()
        ax.set_ylabel(ylabel)
        ax.set_ylim(0, bottom.max() * 1.2 if bottom.max() > 0 else 1)
        ax.legend(frameon=False, ncols=4, fontsize=8, loc="upper left")
        ax.tick_params(axis="x", labelrotation=30)
        fig.tight_layout()
        svg = _to_svg(fig)
    return Figure(name, title, caption, sources, svg)


def _major_ticks_only(ax) -> None:
    """Log axes labelled at 1, 2 and 5 of each decade in engineering notation (20 M, 5 T): readable over
    a narrow range (no decade inside it) and uncrowded over a wide one."""
    from matplotlib.ticker import EngFormatter, LogLocator, NullFormatter

    for axis, scale in ((ax.xaxis, ax.get_xscale()), (ax.yaxis, ax.get_yscale())):
        if scale == "log":
            axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            axis.set_major_formatter(EngFormatter(sep=" "))
            axis.set_minor_formatter(NullFormatter())


def frontier_panels(df: pd.DataFrame, panels: list[tuple[str, str, str]], seq_len: int) -> Figure | None:
    """Cost against size, one panel per cost (and loss against the first cost where there is loss);
    the frontier's points filled and joined, the dominated ones hollow. Log-log."""
    if not panels:
        return None
    loss = df["loss"].notna().sum() >= 3
    count = len(panels) + loss
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, count, figsize=(4.2 * count, 3.6), squeeze=False)
        for ax, (metric, label, unit) in zip(axes[0], panels, strict=False):
            have = df[df[metric].notna()]
            front = have[have[f"front_{metric}"] == True].sort_values("params")  # noqa: E712
            rest = have[have[f"front_{metric}"] != True]  # noqa: E712
            scale = 2**30 if unit == "bytes" else 1
            ax.scatter(
                rest["params"],
                rest[metric] / scale,
                facecolors="none",
                edgecolors="#4C72B0",
                label="dominated",
            )
            ax.plot(front["params"], front[metric] / scale, "o-", color="#C44E52", label="frontier")
            ax.set(
                xscale="log",
                yscale="linear" if unit == "bytes" else "log",
                xlabel="parameters (counted)",
                ylabel=f"{label} ({'GiB' if unit == 'bytes' else unit})",
                title=f"{label.split(' (')[0]}, {seq_len} tokens",
            )
            ax.legend(frameon=False, fontsize=8)
            _major_ticks_only(ax)
        if loss:
            ax, (metric, label, unit) = axes[0][-1], panels[0]
            have = df[df["loss"].notna() & df[metric].notna()]
            on = pd.Series(
                pareto_front(list(zip(have[metric], have["loss"], strict=True)), ("lower", "lower")),
                index=have.index,
            )
            ax.scatter(
                have[~on][metric],
                have[~on]["loss"],
                facecolors="none",
                edgecolors="#4C72B0",
                label="dominated",
            )
            front = have[on].sort_values(metric)
            ax.plot(front[metric], front["loss"], "o-", color="#55A868", label="frontier (lowest loss)")
            ax.set(
                xscale="log",
                xlabel=f"{label} ({unit})",
                ylabel="proxy final validation loss (nats/token)",
                title="Loss against cost",
            )
            ax.legend(frameon=False, fontsize=8)
            _major_ticks_only(ax)
        for ax in axes[0][count:]:
            ax.remove()
        fig.tight_layout()
        svg = _to_svg(fig)
    return Figure(
        "cost_frontier",
        "Cost against size, frontier marked",
        f"Each variant's training-step cost at {seq_len} tokens against its counted parameters (log-log); "
        "filled and joined: the frontier (no other variant has as many parameters for less); hollow: dominated."
        + (
            " Last panel: the proxy's final validation loss (mean of seeds) against the first cost."
            if loss
            else ""
        ),
        "params / flops (train_step_causal, counter) / memory (peak_train, simulated) / training (val_loss_final)",
        svg,
    )
