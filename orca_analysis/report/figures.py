"""Figures: matplotlib, one style, saved as SVG (inlined in HTML, linked from Markdown)."""

from __future__ import annotations

import io
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

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


def growth_exponent(x: list[float], y: list[float]) -> float:
    """Slope of log y on log x: y ~ x^k."""
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def params_vs_axes(params: pd.DataFrame, axes: list[str]) -> Figure | None:
    """Parameters against each swept shape axis, log-log, with the fitted exponent (others at base)."""
    axes = [a for a in axes if params[a].nunique() > 1]
    if not axes:
        return None
    with plt.rc_context(STYLE):
        fig, panels = plt.subplots(1, len(axes), figsize=(3.2 * len(axes), 3.2), squeeze=False)
        notes = []
        for ax, axis in zip(panels[0], axes, strict=True):
            sub = params[params["on_axis"].apply(lambda on, a=axis: a in on)].sort_values(axis)
            for comp, style in (("total", "-o"), ("layers", "--s")):
                ax.plot(sub[axis], sub[comp], style, label=comp)
            k = growth_exponent(sub[axis].tolist(), sub["layers"].tolist())
            notes.append(f"{axis}: layers ~ {axis}^{k:.2f}")
            ax.set(xscale="log", yscale="log", xlabel=axis, title=f"{axis} (layers ~ {axis}^{k:.2f})")
            ax.set_xticks(sub[axis].tolist(), [str(v) for v in sub[axis]])
            ax.minorticks_off()
        panels[0][0].set_ylabel("parameters")
        panels[0][0].legend(frameon=False)
        fig.tight_layout()
        svg = _to_svg(fig)
    return Figure(
        "params_vs_axes",
        "Parameters versus dim, depth and heads",
        "Counter values, log-log; 'layers' excludes the embedding and logits tables. Fitted "
        "exponents: " + "; ".join(notes) + ".",
        "params / counter",
        svg,
    )


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
