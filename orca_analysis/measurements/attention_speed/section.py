"""The attention-speed section: the base variant's attention call, useful FLOP/s by backend and length."""

from __future__ import annotations

import pandas as pd

from ...catalog.declared.attention_speed import SDPA_BEST_VS_GEMM, SDPA_FORWARD_FLOPS_PER_S, SDPA_FORWARD_TIME
from ...catalog.vocabulary import Cause, Status
from ...instruments.sdpa import BACKENDS
from ...kit.figures import lines
from ...kit.format import Quantity, share
from ...kit.sections import Section, Table, variant_order
from ...results.query import Results, prefer_device
from ..speed.timed import requested_text
from .run import CPU_SEQ_CAP


def _cell(results: Results, at: dict, case: str, backend: str) -> Quantity | str:
    rate = results.values(SDPA_FORWARD_FLOPS_PER_S, case=case, backend=backend, **at)
    if rate:
        return Quantity(rate[0].value, "FLOP/s")
    skipped = results.values(SDPA_FORWARD_TIME, status=Status.SKIPPED, case=case, backend=backend, **at)
    if skipped:
        return str(Cause.REFUSED) if skipped[0].cause == Cause.REFUSED else str(Cause.NOT_APPLICABLE)
    return "n/a"


def _bias(study) -> str:
    """What the base's own call passes (the table is the base's call)."""
    layers = study.base_variant.config.layers
    alibi = layers.get("alibi_pos_bias") and not layers.get("alibi_in_kernel")
    return "ALiBi as a dense float mask" if alibi else "with its mask, if any"


def _table(results: Results, base: str, rates: list, bias: str) -> Table:
    rows = []
    cases = {"with_bias": 0, "no_bias": 1}
    keys = {(v.device, v.seq_len, v.get("case")) for v in rates}
    for device, seq, case in sorted(keys, key=lambda k: (k[0], k[1], cases.get(k[2], 2))):
        at = {"variant": base, "device": device, "seq_len": seq}
        best = results.values(SDPA_BEST_VS_GEMM, case=case, **at)
        rows.append(
            [
                device,
                requested_text(results, base, device, seq, CPU_SEQ_CAP),
                f"{int(seq)}",
                case,
                *(_cell(results, at, case, b) for b in BACKENDS),
                f"{share(best[0].value)} ({best[0].get('backend')})" if best else "n/a",
            ]
        )
    return Table(
        "Attention forward throughput by backend (base)",
        "Useful FLOP/s (4·b·h·n²·d, halved for causal attention) of the base variant's own attention call with "
        "each backend forced: median of timed runs, forward only. with_bias: the call as x-transformers makes "
        f"it ({bias}); no_bias: the same q, k, v, plain causal. 'refused': torch refused "
        "the forced backend (its reason in the results); best vs GEMM: the fastest backend's FLOP/s over a "
        "dense GEMM timed in the same process.",
        ["device", "seq len requested", "seq len measured", "case", *BACKENDS, "best vs GEMM"],
        rows,
    )


def attention_speed_section(results: Results, study) -> Section:
    section = Section(
        "attention_speed",
        "Attention throughput by backend",
        "How fast the variant's own attention call is with each scaled-dot-product-attention backend.",
    )
    base = variant_order(study)[0]
    rates = prefer_device(results.values(SDPA_FORWARD_FLOPS_PER_S, variant=base))
    if not rates:
        section.missing = (
            "no `attention_speed` results: add `attention_speed` to the study's measurements and run it"
        )
        return section
    section.tables.append(_table(results, base, rates, _bias(study)))
    frame = pd.DataFrame(
        [
            {"seq_len": v.seq_len, "backend": f"{v.get('backend')} {v.get('case')}", "value": v.value}
            for v in rates
        ]
    )
    fig = lines(
        frame,
        "seq_len",
        "backend",
        "attention_by_backend",
        "Attention forward throughput by backend (base variant)",
        "useful FLOP/s",
        "The base variant's attention call (its heads, head dim, KV heads, causal), with and without the "
        + ("ALiBi bias it builds. " if _bias(study).startswith("ALiBi") else "mask it passes, if any. ")
        + "Useful FLOPs = 4·b·h·n²·d halved for causal attention.",
        "attention_speed / sdpa_forward_flops_per_s",
    )
    if fig:
        section.figures.append(fig)
    return section
