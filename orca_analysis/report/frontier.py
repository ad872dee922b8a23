"""The cost frontier of a sweep: what each variant costs against its size, the frontier marked.

Size is the counted parameters; cost is the training step's FLOPs (counter, causal-aware) and its
simulated peak memory, both at the study's longest length. A variant is on the frontier when no other
has at least as many parameters for no more cost (results/derive.py, pareto_front). Where training
ran, the proxy's final validation loss against the same cost: the frontier there is the lowest loss
for the cost.
"""

from __future__ import annotations

import pandas as pd

from ..catalog.declared.flops import TRAIN_STEP_CAUSAL
from ..catalog.declared.memory import PEAK_TRAIN
from ..catalog.declared.params import PARAMS
from ..catalog.declared.training import VAL_LOSS_FINAL
from ..catalog.labels import Breakdown
from ..catalog.vocabulary import Method
from ..kit.figures import frontier_panels
from ..kit.format import Quantity
from ..kit.sections import Section, Table, variant_order
from ..results.derive import pareto_front
from ..results.query import Results

COSTS = (  # (metric, query, axis label, unit)
    (
        TRAIN_STEP_CAUSAL,
        {"method": Method.COUNTER, "component": Breakdown.TOTAL},
        "training-step FLOPs (causal)",
        "FLOP",
    ),
    (
        PEAK_TRAIN,
        {"method": Method.SIMULATED, "category": Breakdown.TOTAL},
        "training-step peak (simulated)",
        "bytes",
    ),
)


def _points(results: Results, study, n: int) -> pd.DataFrame:
    b = min(study.workloads.batch_sizes)
    rows = []
    for vid in variant_order(study):
        params = results.number(PARAMS, method=Method.COUNTER, component=Breakdown.TOTAL, variant=vid)
        costs = {m: results.number(m, variant=vid, seq_len=n, batch=b, **q) for m, q, _, _ in COSTS}
        if params is not None and any(v is not None for v in costs.values()):
            losses = results.values(VAL_LOSS_FINAL, variant=vid)
            loss = sum(v.value for v in losses) / len(losses) if losses else None
            rows.append(
                {
                    "variant": vid,
                    "params": params,
                    **costs,
                    "loss": loss,
                    "scale": losses[0].scale if losses else "",
                }
            )
    df = pd.DataFrame(rows)
    for metric, *_ in COSTS if rows else ():
        have = df[df[metric].notna()]
        df.loc[have.index, f"front_{metric}"] = pareto_front(
            list(zip(have["params"], have[metric], strict=True))
        )
    return df


def frontier_section(results: Results, study) -> Section | None:
    if len(study.variants()) < 3 or results.empty:
        return None
    n = max(study.workloads.seq_lens)
    df = _points(results, study, n)
    if len(df) < 3:
        return None
    panels = [(m, label, unit) for m, _, label, unit in COSTS if m in df and df[m].notna().sum() >= 3]
    fig = frontier_panels(df, panels, n)
    rows = [
        [
            r.variant,
            Quantity(r.params, "params"),
            *[Quantity(getattr(r, m), unit) if pd.notna(getattr(r, m)) else "n/a" for m, _, unit in panels],
            ", ".join(
                label.split(" (")[0] for m, label, _ in panels if getattr(r, f"front_{m}", False) is True
            )
            or "-",
        ]
        for r in df.itertuples()
    ]
    table = Table(
        f"Cost against size at {n} tokens",
        "Each variant's counted parameters and its training-step cost at the study's longest length; the last "
        "column names the frontiers it is on (no other variant has as many parameters for less).",
        ["variant", "parameters", *[label for _, label, _ in panels], "on the frontier of"],
        rows,
    )
    intro = (
        f"For a sweep: what each shape costs for its size, at {n} tokens, batch {min(study.workloads.batch_sizes)}. "
        "A variant off the frontier is dominated: another has at least as many parameters for no more cost."
    )
    if df["loss"].notna().sum() >= 3:
        intro += (
            " The last panel puts the final validation loss of each variant's training run "
            f"({df['scale'].iloc[0]} scale: a proxy of the model, not the model) against the same cost."
        )
    return Section("frontier", "Cost frontier", intro, [table], [f for f in (fig,) if f])
