"""Speed: which attention kernel runs, attention throughput by backend, end-to-end tokens/s.

Measurements `kernels`, `attention_speed` and `speed`. On CPU the study's sequence lengths are scaled
down to fit (records `seq_len_requested` map them back); GPU results imported from data/gpu/ appear
beside the CPU ones, labelled by device.
"""

from __future__ import annotations

import pandas as pd

from ..figures import lines
from . import Section, Table, ok_rows, pick, share, si, value, variant_order, with_parts
from .gpu import gpu_coverage_table

REPEAT_TARGET = 0.03  # repeated GPU timings of one variant agree within 3% (issue 5)


def _requested(rows: pd.DataFrame, vid: str, seq: float) -> str:
    req = pick(rows, variant_id=vid, seq_len=seq, metric="seq_len_requested")
    return f"{int(req['value'].iloc[0])}" if not req.empty else f"{int(seq)}"


def _kernel_table(results: pd.DataFrame, study) -> Table | None:
    rows = ok_rows(results, "kernels")
    skipped = results[(results.get("measurement") == "kernels") & (results.get("status") == "skipped")]
    if rows.empty:
        return None
    out = []
    for vid in variant_order(study):
        for (device, seq), r in (
            pick(rows, variant_id=vid).dropna(subset=["seq_len"]).groupby(["device", "seq_len"])
        ):
            ran = ", ".join(
                f"{c} x{int(v)}"
                for c, v in zip(
                    r[r.metric == "ran_train"]["category"], r[r.metric == "ran_train"]["value"], strict=True
                )
            )
            elig = r[(r.metric == "eligible_inference") & (r.value > 0)]["category"].tolist()
            refused = r[(r.metric == "eligible_inference") & (r.value == 0)]["category"].tolist()
            na = pick(skipped, variant_id=vid, seq_len=seq, metric="eligible_inference")["category"].tolist()
            mask = r[r.metric == "sdpa_attn_mask_bytes"]
            out.append(
                [
                    vid,
                    device,
                    _requested(rows, vid, seq),
                    f"{int(seq)}",
                    ran or "none seen",
                    ", ".join(elig) or "none",
                    ", ".join(refused) or "-",
                    ", ".join(na) or "-",
                    f"{mask['category'].iloc[0]}, {si(mask['value'].iloc[0], 'B')}"
                    if not mask.empty
                    else "none",
                ]
            )
    return Table(
        "Which attention kernel ran, and which were eligible",
        "From the profiler's operator names during a training step (ran: backend x calls), and by forcing "
        "each backend on the variant's own attention call with torch.nn.attention.sdpa_kernel (eligible / "
        "refused; refusals carry torch's reason in the results). 'Not applicable' backends do not exist on "
        "that device. attn_mask is what x-transformers passes to scaled_dot_product_attention.",
        [
            "variant",
            "device",
            "seq len requested",
            "seq len measured",
            "ran (training)",
            "eligible",
            "refused",
            "not applicable",
            "attn_mask",
        ],
        out,
    )


def _speed_table(results: pd.DataFrame, study) -> Table | None:
    rows = ok_rows(results, "speed")
    errors = results[(results.get("measurement") == "speed") & (results.get("status") == "error")]
    if rows.empty:
        return None
    out = []
    for vid in variant_order(study):
        for (device, seq), r in (
            pick(rows, variant_id=vid).dropna(subset=["seq_len"]).groupby(["device", "seq_len"])
        ):
            cached = value(r, metric="decode_cached_tokens_per_s")
            err = pick(errors, variant_id=vid, seq_len=seq, metric="decode_cache_agreement")
            reason = str(err["error"].iloc[0]).split("failed: ")[-1].split(":")[0] if not err.empty else ""
            cached_text = (
                si(cached, "tok/s") if cached else (f"fails ({reason}; see probes)" if reason else "n/a")
            )
            out.append(
                [
                    vid,
                    device,
                    _requested(rows, vid, seq),
                    f"{int(seq)}",
                    si(value(r, metric="train_tokens_per_s"), "tok/s"),
                    si(value(r, metric="prefill_tokens_per_s"), "tok/s"),
                    cached_text,
                    si(value(r, metric="decode_uncached_tokens_per_s"), "tok/s"),
                    share(value(r, metric="train_utilisation_vs_gemm")),
                ]
            )
    ceiling = ok_rows(results, "speed")
    ceiling = ceiling[ceiling.metric == "gemm_ceiling"]
    ceil_text = ", ".join(
        f"{d}: {si(v, 'FLOP/s')}" for d, v in ceiling.groupby("device")["value"].median().items()
    )
    return Table(
        "End-to-end throughput",
        "Median of repeated timed runs (warm-up first; the spread is in the results, and rows the harness "
        "flags as noisy say so in `error`). Training step = forward, backward and AdamW. Decode: tokens "
        "after a prompt, with the KV cache and without it (full recompute); a cached decode that crashes "
        "or disagrees with the full forward is shown as a failure. Utilisation = FLOP/s by the operator counter "
        f"over the measured GEMM ceiling ({ceil_text}).",
        [
            "variant",
            "device",
            "seq len requested",
            "seq len measured",
            "training",
            "prefill",
            "decode, KV cache",
            "decode, no cache",
            "training utilisation vs GEMM",
        ],
        out,
    )


def _kv_heads_table(results: pd.DataFrame) -> Table | None:
    rows = ok_rows(results, "speed")
    rows = rows[rows["metric"].isin(["kv_ablation_decode_tokens_per_s", "kv_ablation_cache_bytes"])]
    if rows.empty:
        return None
    rows = with_parts(rows)
    out = []
    for (device, seq), r in rows.groupby(["device", "seq_len"]):
        speed = pick(r, metric="kv_ablation_decode_tokens_per_s").set_index("attn")["value"]
        cache = pick(r, metric="kv_ablation_cache_bytes").set_index("attn")["value"]
        ratio = speed.get("mqa") / speed.get("mha") if {"mqa", "mha"} <= set(speed.index) else None
        out.append(
            [
                device,
                _requested(results[results.get("measurement") == "speed"], "base", seq),
                f"{int(seq)}",
                str(r["dropped"].iloc[0]),
                si(speed.get("mqa"), "tok/s"),
                si(speed.get("mha"), "tok/s"),
                f"x{ratio:.2f}" if ratio else "n/a",
                f"{si(cache.get('mqa'), 'B')} / {si(cache.get('mha'), 'B')}",
            ]
        )
    return Table(
        "Multi-query against multi-head decoding (base)",
        "Cached decode tokens/s (median of timed runs) of the base with one KV head and with one KV head "
        "per query head, all else equal. Orca's flags break cached decoding, so the flags named under "
        "'flags off' are switched off in both (the first set whose cached logits match a full forward). "
        "KV cache: closed form, 2 x depth x batch x kv heads x tokens x head dim x bytes per element.",
        [
            "device",
            "seq len requested",
            "seq len measured",
            "flags off",
            "one KV head",
            "a KV head per head",
            "speed-up",
            "KV cache (one / per head)",
        ],
        out,
    )


def _repeat_table(results: pd.DataFrame) -> Table | None:
    rows = pick(ok_rows(results, "speed"), metric="train_step_repeat_diff")
    if rows.empty:
        return None
    speed = results[results.get("measurement") == "speed"]
    out = [
        [d, _requested(speed, "base", n), f"{int(n)}", c, share(v), "yes" if v <= REPEAT_TARGET else "no"]
        for d, n, c, v in zip(rows["device"], rows["seq_len"], rows["category"], rows["value"], strict=True)
    ]
    return Table(
        "Repeatability of the timings (base)",
        "The base's training step timed a second time in the same process, after every other phase: "
        f"relative difference of the two medians. Target on a GPU: within {REPEAT_TARGET:.0%} (issue 5); a "
        "shared CPU is noisier.",
        ["device", "seq len requested", "seq len measured", "medians", "difference", "within target"],
        out,
    )


def speed_section(results: pd.DataFrame, study) -> Section:
    section = Section(
        "speed",
        "Attention kernels and throughput",
        "Which scaled-dot-product-attention backend "
        "actually runs for each variant, how fast the variant's own attention call is by backend, and "
        "end-to-end tokens/s.",
    )
    devices = sorted(
        set(
            results.loc[
                results.get("measurement", pd.Series(dtype=str)).isin(
                    ["kernels", "attention_speed", "speed"]
                ),
                "device",
            ].dropna()
        )
    )
    tables = (_kernel_table(results, study), _speed_table(results, study), _kv_heads_table(results))
    for table in (*tables, _repeat_table(results), gpu_coverage_table(results, study)):
        if table:
            section.tables.append(table)
    att = ok_rows(results, "attention_speed")
    att = att[
        att["metric"].isin(["sdpa_forward_flops_per_s_with_bias", "sdpa_forward_flops_per_s_no_bias"])
        & (att["variant_id"] == "base")
    ].copy()
    if not att.empty:
        att["backend"] = att["category"] + " " + att["metric"].str.replace("sdpa_forward_flops_per_s_", "")
        fig = lines(
            att,
            "seq_len",
            "backend",
            "attention_by_backend",
            "Attention forward throughput by backend (base variant)",
            "useful FLOP/s",
            "The base variant's attention call (its heads, head dim, one KV head, causal), with and without "
            "the ALiBi bias it builds. Useful FLOPs = 4·b·h·n²·d halved for causal attention.",
            "attention_speed / sdpa_forward_flops_per_s_*",
        )
        if fig:
            section.figures.append(fig)
    step = ok_rows(results, "speed")
    step = step[(step["metric"] == "train_step_time") & (step["method"] == "measured_median")]
    fig = lines(
        step,
        "seq_len",
        "variant_id",
        "train_time_vs_seq",
        "Training-step time versus sequence length",
        "seconds per step",
        "Median wall time of a training step (forward, backward, AdamW), batch as in "
        "the study, at the lengths measured on this device; log-log.",
        "speed / train_step_time",
    )
    if fig:
        section.figures.append(fig)
    if not section.tables:
        section.missing = (
            "no speed results: add `kernels`, `attention_speed` and `speed` to the study and run it"
        )
    if devices and not any(d.startswith("cuda") for d in devices):
        section.intro += (
            " These are CPU figures (" + ", ".join(devices) + "), at CPU-sized sequence lengths. "
            "GPU results are missing: run scripts/gpu_measure.sh OUTDIR on a GPU machine and commit "
            "OUTDIR under data/gpu/<study>/ (make report imports it; see data/gpu/README.md)."
        )
    return section
