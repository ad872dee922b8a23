"""`inspect`'s view of FLOPs: the per-component table, totals and agreement, what the plain tools miss."""

from __future__ import annotations

from typing import Any

from ...build import build_model
from ...catalog.declared.flops import FORWARD_DENSE, PLAIN_MISSED_SHARE, STEP_COUNTS, TRAIN_STEP_DENSE
from ...formulas.flops import MFU_CONVENTION, MFU_CONVENTION_TEXT, kaplan_6n, palm
from ...instruments.analytic import analytic_flops
from ...instruments.kept_walks import WalkCache
from ...study.schema import ModelConfig
from . import run
from .run import fvcore_allowed, fvcore_for


def _rel(a: float, b: float) -> float:
    return (a - b) / b if b else 0.0


def flops_summary(
    cfg: ModelConfig, seq_len: int, batch: int, walks: WalkCache | None = None
) -> dict[str, Any]:
    """For `inspect`: the per-component table, totals and agreement, what the plain tools miss."""
    (count, how), tokens = analytic_flops(cfg, seq_len, batch, walks=walks), seq_len * batch
    counted = {m: run.counted(count, m) for m in STEP_COUNTS}
    closed = {m: run.closed(cfg, seq_len, batch, m) for m in STEP_COUNTS}
    step = counted[MFU_CONVENTION]
    table = [
        {
            "component": c,
            **{m: counted[m][c] for m in STEP_COUNTS},
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
        "counted": how,
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
            for m in STEP_COUNTS
        },
        "estimates": {
            "kaplan_6n": {"forward": k.forward, "train_step": k.train_step},
            "palm": {"forward": p.forward, "train_step": p.train_step},  # the estimates as Kaplan's
        },
        "attention_kernels": dict(count.attention_ops),
        "flop_counter_mode_plain": {
            FORWARD_DENSE: count.plain["forward"],
            TRAIN_STEP_DENSE: plain_step,
            "missed_share": 1 - plain_step / counted[TRAIN_STEP_DENSE]["total"],
        },
    }
    ok, why = fvcore_allowed(cfg, seq_len, batch)
    if not ok:
        out["fvcore"] = {"status": "skipped", "reason": why}
        return out
    fv = fvcore_for(build_model(cfg, "cpu", "float32"), cfg, seq_len, batch)
    dense = counted[FORWARD_DENSE]["total"]
    out["fvcore"] = {
        "status": "ok",
        FORWARD_DENSE: fv.total,
        "components": fv.components,
        "relative_difference_vs_counter": _rel(fv.total, dense),
        "plain_forward_dense": 2 * fv.plain_total,
        "plain_as_shipped": fv.plain_total,
        PLAIN_MISSED_SHARE: 1 - 2 * fv.plain_total / dense,
        "plain_unsupported": fv.plain_unsupported,
        "table": fv.table,
    }
    return out


def flops_text(s: dict[str, Any]) -> str:
    def g(x: float) -> str:
        return f"{x:.4g}"

    head = ["component", *STEP_COUNTS, "closed form", "share"]
    rows = [
        [
            r["component"],
            *(g(r[m]) for m in STEP_COUNTS),
            g(r[f"closed_form_{MFU_CONVENTION}"]),
            f"{r['share']:.1%}",
        ]
        for r in s["components"]
    ]
    rows.append(
        [
            "total",
            *(g(s["totals"][m]["counter"]) for m in STEP_COUNTS),
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
        + ", ".join(f"{m} {s['totals'][m]['relative_difference']:+.3%}" for m in STEP_COUNTS),
        f"counted by: {s['counted']}",
        f"per token: {g(s['totals'][MFU_CONVENTION]['per_token'])} FLOP ({MFU_CONVENTION}); "
        f"attention kernels seen: {s['attention_kernels'] or 'none (einsum path)'}",
        f"Kaplan 6N: {g(s['estimates']['kaplan_6n']['train_step'])}; "
        f"PaLM 6N+12LHQT: {g(s['estimates']['palm']['train_step'])} per training step",
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
            f"{fv[PLAIN_MISSED_SHARE]:.1%} (unsupported: {fv['plain_unsupported']})",
            fv["table"],
        ]
    )
