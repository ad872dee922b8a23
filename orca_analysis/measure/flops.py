"""FLOPs per variant and workload: operator counter, fvcore and closed form, side by side.

Methods (the records' `method`): `counter` (FlopCounterMode completed for attention and ALiBi,
on the storage-less model: _flop_counter.py), `counter_plain` (what FlopCounterMode as shipped
reports for the same run), `closed_form` (formulas/flops.py), `fvcore` (FlopCountAnalysis on real
weights with this project's handles, 2 FLOPs per multiply-add) and `fvcore_plain` (fvcore as
shipped, converted to 2 per multiply-add; `forward_dense_as_shipped` keeps its own number),
`kaplan_6n` and `palm` (estimates). Metrics: forward_dense, forward_causal, train_step_dense,
train_step_causal (see formulas/flops.py for dense vs causal); `category` names the component.
fvcore runs the model for real, so it runs only where the forward is at most
FVCORE_MAX_FORWARD_FLOP; elsewhere its records say `skipped` and why.
"""

from __future__ import annotations

from typing import Any

import torch

from ..build import build_model
from ..formulas.flops import (
    COMPONENTS,
    MFU_CONVENTION,
    MFU_CONVENTION_TEXT,
    closed_form_flops,
    kaplan_6n,
    palm,
)
from ..results import Record
from ..study.schema import ModelConfig, Study, Variant
from ._flop_counter import FlopCount, count_flops
from ._fvcore_flops import FvcoreResult, run_fvcore
from .registry import register_measurement

METRICS = ("forward_dense", "forward_causal", "train_step_dense", "train_step_causal")
FVCORE_MAX_FORWARD_FLOP = 3.2e10  # Orca base at 512 tokens is 3.0e10; at 8192, fvcore takes ~1 min, 5.6 GB
FVCORE_SKIP = (
    "fvcore runs the model on real weights (forward {flop:.3g} FLOP here, above the {cap:.0e} "
    "this measurement allows); benchmarks/flops_bench.py runs it at full size"
)


def _closed(cfg: ModelConfig, seq_len: int, batch: int, metric: str) -> dict[str, int]:
    parts = closed_form_flops(cfg, seq_len, batch, causal=metric.endswith("causal"))
    step = "forward" if metric.startswith("forward") else "train_step"
    return {k: getattr(v, step) for k, v in parts.items()}


def _counted(count: FlopCount, metric: str) -> dict[str, int]:
    comps = [*COMPONENTS, *(c for c in count.components() if c not in COMPONENTS)]
    return {**{c: count.value(metric, c) for c in comps}, "total": count.value(metric)}


def fvcore_allowed(cfg: ModelConfig, seq_len: int, batch: int) -> tuple[bool, str]:
    flop = _closed(cfg, seq_len, batch, "forward_dense")["total"]
    ok = flop <= FVCORE_MAX_FORWARD_FLOP
    return ok, "" if ok else FVCORE_SKIP.format(flop=flop, cap=FVCORE_MAX_FORWARD_FLOP)


def fvcore_for(model: torch.nn.Module, cfg: ModelConfig, seq_len: int, batch: int) -> FvcoreResult:
    model.eval()  # fvcore traces the forward; no dropout in the trace
    with torch.no_grad():
        return run_fvcore(model, torch.randint(0, cfg.num_tokens, (batch, seq_len)))


def _workload_records(
    cfg: ModelConfig, seq_len: int, batch: int, dtype: str, model_fn
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []  # Record fields less the common ones

    def add(method: str, metric: str, value: float | None, category: str = "", **kw: Any) -> None:
        rows.append(dict(method=method, metric=metric, value=value, category=category, **kw))

    try:
        count = count_flops(cfg, seq_len, batch, dtype)
        for metric in METRICS:
            for comp, v in _counted(count, metric).items():
                add("counter", metric, v, "" if comp == "total" else comp)
        add("counter_plain", "forward_dense", count.plain["forward"])
        add("counter_plain", "train_step_dense", count.plain["forward"] + count.plain["backward"])
    except Exception as exc:  # a result (e.g. the library refusing the config), not a crash
        add("counter", "train_step_causal", None, status="error", error=f"{type(exc).__name__}: {exc}"[:300])
    for metric in METRICS:
        for comp, v in _closed(cfg, seq_len, batch, metric).items():
            add("closed_form", metric, v, "" if comp == "total" else comp)
    k, p = kaplan_6n(cfg, seq_len, batch), palm(cfg, seq_len, batch)
    add("kaplan_6n", "forward", k.forward)
    add("kaplan_6n", "train_step", k.train_step)
    add("palm", "forward_dense", p.forward)
    add("palm", "train_step_dense", p.train_step)
    ok, why = fvcore_allowed(cfg, seq_len, batch)
    if not ok:
        for method in ("fvcore", "fvcore_plain"):
            add(method, "forward_dense", None, status="skipped", error=why, device="cpu", dtype="float32")
        return rows
    try:
        fv = fvcore_for(model_fn(), cfg, seq_len, batch)
    except Exception as exc:
        add("fvcore", "forward_dense", None, status="error", error=f"{type(exc).__name__}: {exc}"[:300])
        return rows
    real = dict(device="cpu", dtype="float32")  # fvcore's trace runs real float32 weights on the CPU
    add("fvcore", "forward_dense", fv.total, **real)
    for comp, v in fv.components.items():
        add("fvcore", "forward_dense", v, comp, **real)
    add("fvcore_plain", "forward_dense", 2 * fv.plain_total, **real)
    add(
        "fvcore_plain",
        "forward_dense_as_shipped",
        fv.plain_total,
        unit="fvcore flop (= multiply-add)",
        **real,
    )
    return rows


def _rel(a: float, b: float) -> float:
    return (a - b) / b if b else 0.0


def flops_summary(cfg: ModelConfig, seq_len: int, batch: int) -> dict[str, Any]:
    """For `inspect`: the per-component table, totals and agreement, what the plain tools miss."""
    count, tokens = count_flops(cfg, seq_len, batch), seq_len * batch
    counted = {m: _counted(count, m) for m in METRICS}
    closed = {m: _closed(cfg, seq_len, batch, m) for m in METRICS}
    step = counted[MFU_CONVENTION]
    table = [
        {
            "component": c,
            **{m: counted[m][c] for m in METRICS},
            f"closed_form_{MFU_CONVENTION}": closed[MFU_CONVENTION].get(c, 0),
            "per_token_" + MFU_CONVENTION: step[c] / tokens,
            "share": step[c] / step["total"],
        }
        for c in counted[MFU_CONVENTION]
        if c != "total"
    ]
    plain_step = count.plain["forward"] + count.plain["backward"]
    k, p = kaplan_6n(cfg, seq_len, batch), palm(cfg, seq_len, batch)
    out: dict[str, Any] = {
        "seq_len": seq_len,
        "batch": batch,
        "tokens": tokens,
        "convention": "2 FLOPs per multiply-add; matrix products plus the ALiBi element-wise work",
        "mfu_convention": MFU_CONVENTION,
        "mfu_convention_text": MFU_CONVENTION_TEXT,
        "components": table,
        "totals": {
            m: {
                "counter": counted[m]["total"],
                "closed_form": closed[m]["total"],
                "relative_difference": _rel(counted[m]["total"], closed[m]["total"]),
                "per_token": counted[m]["total"] / tokens,
            }
            for m in METRICS
        },
        "estimates": {
            "kaplan_6n": {"forward": k.forward, "train_step": k.train_step},
            "palm": {"forward_dense": p.forward, "train_step_dense": p.train_step},
        },
        "attention_kernels": dict(count.attention_ops),
        "flop_counter_mode_plain": {
            "forward_dense": count.plain["forward"],
            "train_step_dense": plain_step,
            "missed_share": 1 - plain_step / counted["train_step_dense"]["total"],
        },
    }
    ok, why = fvcore_allowed(cfg, seq_len, batch)
    if not ok:
        out["fvcore"] = {"status": "skipped", "reason": why}
        return out
    fv = fvcore_for(build_model(cfg, "cpu", "float32"), cfg, seq_len, batch)
    dense = counted["forward_dense"]["total"]
    out["fvcore"] = {
        "status": "ok",
        "forward_dense": fv.total,
        "components": fv.components,
        "relative_difference_vs_counter": _rel(fv.total, dense),
        "plain_forward_dense": 2 * fv.plain_total,
        "plain_as_shipped": fv.plain_total,
        "plain_missed_share": 1 - 2 * fv.plain_total / dense,
        "plain_unsupported": fv.plain_unsupported,
        "table": fv.table,
    }
    return out


def flops_text(s: dict[str, Any]) -> str:
    def g(x: float) -> str:
        return f"{x:.4g}"

    head = ["component", *METRICS, "closed form", "share"]
    rows = [
        [
            r["component"],
            *(g(r[m]) for m in METRICS),
            g(r[f"closed_form_{MFU_CONVENTION}"]),
            f"{r['share']:.1%}",
        ]
        for r in s["components"]
    ]
    rows.append(
        [
            "total",
            *(g(s["totals"][m]["counter"]) for m in METRICS),
            g(s["totals"][MFU_CONVENTION]["closed_form"]),
            "100.0%",
        ]
    )
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=True)]
    lines = [
        f"FLOPs at {s['seq_len']} tokens x batch {s['batch']} (counter; closed form = {MFU_CONVENTION})",
        *(
            "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
            for r in [head, ["-" * w for w in widths], *rows]
        ),
    ]
    lines += [
        "counter vs closed form: "
        + ", ".join(f"{m} {s['totals'][m]['relative_difference']:+.3%}" for m in METRICS),
        f"per token: {g(s['totals'][MFU_CONVENTION]['per_token'])} FLOP ({MFU_CONVENTION}); "
        f"attention kernels seen: {s['attention_kernels'] or 'none (einsum path)'}",
        f"Kaplan 6N: {g(s['estimates']['kaplan_6n']['train_step'])}; "
        f"PaLM 6N+12LHQT: {g(s['estimates']['palm']['train_step_dense'])} per training step",
        f"plain FlopCounterMode misses {s['flop_counter_mode_plain']['missed_share']:.1%} of the dense step",
        f"MFU convention: {s['mfu_convention_text']}",
    ]
    fv = s["fvcore"]
    if fv["status"] != "ok":
        return "\n".join([*lines, f"fvcore: skipped ({fv['reason']})"])
    return "\n".join(
        [
            *lines,
            f"fvcore (completed) vs counter, forward dense: "
            f"{fv['relative_difference_vs_counter']:+.3%}; plain fvcore misses "
            f"{fv['plain_missed_share']:.1%} (unsupported: {fv['plain_unsupported']})",
            fv["table"],
        ]
    )


@register_measurement(
    "flops",
    "FLOPs by component, forward and training step, dense and causal: counter, fvcore, closed form",
    summary=flops_summary,
    summary_text=flops_text,
)
def measure_flops(variant: Variant, study: Study) -> list[Record]:
    cfg, dtype = variant.config, study.workloads.dtype
    model: list[torch.nn.Module] = []  # real weights, built once, only if fvcore runs somewhere

    def model_fn() -> torch.nn.Module:
        if not model:
            model.append(build_model(cfg, "cpu", "float32"))
        return model[0]

    records = []
    for seq_len, batch in study.workloads.pairs():
        for row in _workload_records(cfg, seq_len, batch, dtype, model_fn):
            row.setdefault("unit", "FLOP")
            row.setdefault("device", "none")  # counted on the storage-less (fake) model
            row.setdefault("dtype", dtype)
            records.append(
                Record(
                    study=study.name,
                    variant_id=variant.variant_id,
                    measurement="flops",
                    seq_len=seq_len,
                    batch=batch,
                    swept=variant.swept,
                    **row,
                )
            )
    return records
