"""The speed section: end-to-end tokens/s, multi-query against multi-head decoding, repeatability."""

from __future__ import annotations

import statistics

import pandas as pd

from ...catalog.declared.speed import (
    DECODE_CACHE_PASS,
    DECODE_CACHED_TOKENS_PER_S,
    DECODE_UNCACHED_TOKENS_PER_S,
    GEMM_CEILING,
    KV_ABLATION_CACHE_BYTES,
    KV_ABLATION_DECODE_SPEEDUP,
    KV_ABLATION_DECODE_TOKENS_PER_S,
    KV_ABLATION_GENERATE_CACHE,
    PREFILL_TOKENS_PER_S,
    TRAIN_STEP_REPEAT_DIFF,
    TRAIN_STEP_TIME,
    TRAIN_TOKENS_PER_S,
    TRAIN_UTILISATION_VS_GEMM,
)
from ...catalog.labels import Attn
from ...catalog.vocabulary import Method
from ...formulas.flops import MFU_CONVENTION_TEXT
from ...kit.figures import lines
from ...kit.format import Quantity, fixed, si
from ...kit.sections import Section, Table, axis_panels, variant_order
from ...results.query import Results, prefer_device
from .roofline_section import forecast_check_table
from .run import CONVENTIONS, CPU_SEQ_CAP
from .timed import first, points, requested_text

REPEAT_TARGET = 0.03  # repeated GPU timings of one variant agree within 3%
TIMED = ("kernels", "attention_speed", "speed")
_POINTS = (TRAIN_TOKENS_PER_S, PREFILL_TOKENS_PER_S, DECODE_CACHE_PASS, DECODE_UNCACHED_TOKENS_PER_S)


def _cached_cell(results: Results, at: dict) -> Quantity | str:
    passed = results.values(DECODE_CACHE_PASS, **at)
    if passed and passed[0].value == 0:
        reason = passed[0].note.split("failed: ")[-1].split(":")[0]
        return f"fails ({reason}; see probes)"
    return Quantity(first(results, DECODE_CACHED_TOKENS_PER_S, **at), "tokens/s")


def _speed_table(results: Results, study) -> Table | None:
    rows = []
    for vid in variant_order(study):
        for device, seq in points(results, _POINTS, variant=vid):
            at = {"variant": vid, "device": device, "seq_len": seq}
            rows.append(
                [
                    vid,
                    device,
                    requested_text(results, vid, device, seq, CPU_SEQ_CAP),
                    f"{int(seq)}",
                    Quantity(first(results, TRAIN_TOKENS_PER_S, **at), "tokens/s"),
                    Quantity(first(results, PREFILL_TOKENS_PER_S, **at), "tokens/s"),
                    _cached_cell(results, at),
                    Quantity(first(results, DECODE_UNCACHED_TOKENS_PER_S, **at), "tokens/s"),
                    *(
                        Quantity(first(results, TRAIN_UTILISATION_VS_GEMM, method=m, **at), "fraction")
                        for m in CONVENTIONS
                    ),
                ]
            )
    if not rows:
        return None
    by_device: dict[str, list[float]] = {}
    for v in results.values(GEMM_CEILING):
        by_device.setdefault(v.device, []).append(v.value)
    ceiling = ", ".join(f"{d}: {si(statistics.median(vs), 'FLOP/s')}" for d, vs in sorted(by_device.items()))
    return Table(
        "End-to-end throughput",
        "Median of repeated timed runs (warm-up first; every sample is in the results, and values the harness "
        "flags as noisy say so in their note). Training step = forward, backward and AdamW. Decode: tokens "
        "after a prompt, with the KV cache and without it (full recompute); a cached decode that crashes "
        "or disagrees with the full forward is shown as a failure. Utilisation = FLOP/s by the operator counter "
        f"over the measured GEMM ceiling ({ceiling}), in three conventions. {MFU_CONVENTION_TEXT}",
        [
            "variant",
            "device",
            "seq len requested",
            "seq len measured",
            "training",
            "prefill",
            "decode, KV cache",
            "decode, no cache",
            "training MFU (PaLM) vs GEMM",
            "training MFU, causal pairs, vs GEMM",
            "training HFU vs GEMM",
        ],
        rows,
    )


def _kv_heads_table(results: Results, base: str) -> Table | None:
    rows = []
    for device, seq in points(
        results, (KV_ABLATION_DECODE_TOKENS_PER_S, KV_ABLATION_CACHE_BYTES), variant=base
    ):
        at = {"variant": base, "device": device, "seq_len": seq}
        speed = {v.get("attn"): v for v in results.values(KV_ABLATION_DECODE_TOKENS_PER_S, **at)}
        cache = {v.get("attn"): v for v in results.values(KV_ABLATION_CACHE_BYTES, **at)}
        dropped = next(iter({**cache, **speed}.values())).get("dropped")
        up = first(results, KV_ABLATION_DECODE_SPEEDUP, dropped=dropped, **at)
        rate = {a: speed[a].value if a in speed else None for a in (Attn.MQA, Attn.MHA)}
        nbytes = {a: cache[a].value if a in cache else None for a in (Attn.MQA, Attn.MHA)}
        held = {
            (v.get("attn"), v.get("part")): v.value
            for v in results.values(KV_ABLATION_GENERATE_CACHE, method=Method.MEASURED, **at)
        }
        rows.append(
            [
                device,
                requested_text(results, base, device, seq, CPU_SEQ_CAP),
                f"{int(seq)}",
                str(dropped),
                Quantity(rate[Attn.MQA], "tokens/s"),
                Quantity(rate[Attn.MHA], "tokens/s"),
                f"x{fixed(up, 2)}" if up is not None else "n/a",
                f"{si(nbytes[Attn.MQA], 'B')} / {si(nbytes[Attn.MHA], 'B')}",
                *(
                    f"{si(held.get((Attn.MQA, part)), 'B')} / {si(held.get((Attn.MHA, part)), 'B')}"
                    for part in ("kv", "object")
                ),
            ]
        )
    if not rows:
        return None
    return Table(
        "Multi-query against multi-head decoding (base)",
        "Cached decode tokens/s (median of timed runs) of the base with one KV head (multi-query) and with one "
        "KV head per query head (multi-head), all else equal. Where the base's flags break cached decoding, the "
        "flags named under 'flags off' are switched off in both (the first set whose cached logits match a full "
        "forward). "
        "Speed-up: the multi-head median decode time over the multi-query one. "
        "KV cache: closed form, 2 x depth x batch x kv heads x tokens x head dim x bytes per element. During "
        "generate: the cache x-transformers really keeps between steps of generate(cache_kv=True), weighed on its "
        "tensors: its K/V at the last step, and the whole cache object at its largest (the prompt's, whose "
        "hidden states cover every position); the closed forms at the same tokens are in the results.",
        [
            "device",
            "seq len requested",
            "seq len measured",
            "flags off",
            "one KV head",
            "a KV head per head",
            "speed-up",
            "KV cache (one / per head)",
            "K/V during generate (one / per head)",
            "cache object during generate (one / per head)",
        ],
        rows,
    )


def _repeat_table(results: Results, base: str) -> Table | None:
    found = sorted(results.values(TRAIN_STEP_REPEAT_DIFF, variant=base), key=lambda v: (v.device, v.seq_len))
    if not found:
        return None
    rows = [
        [
            v.device,
            requested_text(results, base, v.device, v.seq_len, CPU_SEQ_CAP),
            f"{int(v.seq_len)}",
            v.note,
            Quantity(v.value, "fraction"),
            "yes" if v.value <= REPEAT_TARGET else "no",
        ]
        for v in found
    ]
    return Table(
        "Repeatability of the timings (base)",
        "The base's training step timed a second time in the same process, after every other phase: "
        f"relative difference of the two medians. Target on a GPU: within {REPEAT_TARGET:.0%}; a "
        "shared CPU is noisier.",
        ["device", "seq len requested", "seq len measured", "medians", "difference", "within target"],
        rows,
    )


def _train_time_figure(results: Results, study):
    steps = prefer_device(results.values(TRAIN_STEP_TIME))
    frame = pd.DataFrame(
        [{"seq_len": v.seq_len, "variant_id": v.variant_id, "value": v.value} for v in steps]
    )
    if frame.empty:
        return None
    return lines(
        frame,
        "seq_len",
        "variant_id",
        "train_time_vs_seq",
        "Training-step time versus sequence length",
        "seconds per step",
        "Median wall time of a training step (forward, backward, AdamW), batch as in "
        "the study, at the lengths measured on this device; log-log.",
        "speed / train_step_time",
        panels=axis_panels(study),
    )


def speed_section(results: Results, study) -> Section:
    section = Section(
        "speed", "Throughput", "End-to-end tokens/s of training, prefill and decoding, and utilisation."
    )
    base = variant_order(study)[0]
    tables = (
        _speed_table(results, study),
        _kv_heads_table(results, base),
        _repeat_table(results, base),
        forecast_check_table(results, study),
    )
    section.tables += [t for t in tables if t]
    fig = _train_time_figure(results, study)
    if fig:
        section.figures.append(fig)
    if not section.tables:
        section.missing = "no `speed` results: add `speed` to the study's measurements and run it"
    devices = sorted({r.device for m in TIMED for r in results.records(m)} - {"none"})
    if devices and not any(d.startswith("cuda") for d in devices):
        section.intro += (
            " These are CPU figures (" + ", ".join(devices) + "), at CPU-sized sequence lengths. "
            "GPU results are missing: run scripts/gpu_measure.sh OUTDIR on a GPU machine and commit "
            "OUTDIR under data/gpu/<study>/ (make report imports it; see data/gpu/README.md)."
        )
    return section
