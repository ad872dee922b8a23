"""Behaviour probes, every variant: causality, KV-cache decoding, attention-kernel agreement.

Each probe P writes `P` (pass: 1.0 pass, 0.0 fail; the note says the numbers or the exception),
`P_max_diff` (the maximum absolute logit difference; not written when the probe crashed) and
`P_tolerance`, all labelled by `case`:
  causality: change token t+1 (t = 0, T/2, T-2); logits at positions <= t must not move, and later
    ones must (`causality_downstream`, `causality_sensitive`: else the probe is blind).
  kv_cache: decode the second half one token at a time with x-transformers' cache
    (`cache=`, `return_intermediates=True`) and compare with one full forward; a crash is a fail
    with its message. For the base variant each flag is also switched off alone
    (`case=without=<flag>`), and each flag and each pair of flags switched on alone over a
    plain decoder (`case=only=<flag>[+<flag>]`), to name the flags behind a failure.
  kernel_agreement: the same weights through x-transformers' own attention (attn_flash off,
    the reference) and through scaled_dot_product_attention forced to each backend; a backend
    not implemented on the device, or refusing the call, is skipped with the reason.
Tolerance: torch.testing's default atol + rtol * max|reference| for the dtype; for a reduced
dtype, plus twice the reference path's own error against float32 (rounding it already has).
Models are the training proxies (instruments/proxy.py) at CPU scale, the full variant at GPU
scale; inputs are (probe_batch, probe_seq) random tokens. Nothing depends on the study's
workloads, so records carry no seq_len or batch.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import combinations
from typing import Any

import torch
from torch.nn.attention import SDPBackend

from ...build import DTYPES, build_model
from ...build.variants import FLAGS_OFF
from ...catalog.declared.probes import (
    CAUSALITY,
    CAUSALITY_DOWNSTREAM,
    CAUSALITY_SENSITIVE,
    KERNEL_AGREEMENT,
    KV_CACHE,
    MAX_DIFF,
    PROBES,
    TOLERANCE,
)
from ...catalog.labels import Case
from ...catalog.vocabulary import Method, ProbeOutcome, Scale
from ...instruments.device import speed_dtype
from ...instruments.proxy import QualityScale, proxy_config, quality_scale, torch_threads
from ...instruments.sdpa import force_backend
from ...results import Record
from ...study.schema import ModelConfig, Study, Variant
from ..params.run import counted_params
from ..recorder import Recorder

M = Method.MEASURED
# torch.testing.assert_close defaults (torch/testing/_comparison.py): dtype -> (rtol, atol)
TOLERANCES = {torch.float32: (1.3e-6, 1e-5), torch.bfloat16: (1.6e-2, 1e-5), torch.float16: (1e-3, 1e-5)}
KERNEL_BACKENDS = {
    "cpu": (SDPBackend.MATH, SDPBackend.FLASH_ATTENTION),
    "cuda": (
        SDPBackend.MATH,
        SDPBackend.FLASH_ATTENTION,
        SDPBackend.EFFICIENT_ATTENTION,
        SDPBackend.CUDNN_ATTENTION,
    ),
}


def record_scale(scale: QualityScale) -> str:
    """The records' scale: the variant's own shapes (measured) or a reduced proxy."""
    return Scale.MEASURED if scale.divisor == 1 else Scale.PROXY


def tolerance(ref: torch.Tensor, dtype: torch.dtype = torch.float32) -> float:
    rtol, atol = TOLERANCES[dtype]
    return atol + rtol * ref.abs().max().item()


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:300]


def tokens(vocab: int, batch: int, length: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def causality(model: torch.nn.Module, x: torch.Tensor, vocab: int) -> tuple[float, float, float]:
    """When token t+1 changes: (max change at positions <= t, min over t of the max change after
    t, tolerance)."""
    T = x.shape[1]
    ts = sorted({0, T // 2, T - 2})
    changed = []
    for t in ts:
        x2 = x.clone()
        x2[:, t + 1] = (x2[:, t + 1] + 1) % vocab
        changed.append(x2)
    out = model(torch.cat([x, *changed]))  # one forward: (B * (1 + len(ts)), T, V)
    ref, outs = out[: len(x)], out[len(x) :].split(len(x))
    leak = max((o[:, : t + 1] - ref[:, : t + 1]).abs().max().item() for t, o in zip(ts, outs, strict=True))
    seen = min((o[:, t + 1 :] - ref[:, t + 1 :]).abs().max().item() for t, o in zip(ts, outs, strict=True))
    return leak, seen, tolerance(ref)


@torch.no_grad()
def cached_decode(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Logits predicted after tokens prefix-1 .. T-2 (prefix = T // 2), decoding one token at a time
    on x-transformers' cache; raises what decoding raises."""
    prefix = x.shape[1] // 2
    logits, cache = model(x[:, :prefix], return_intermediates=True)
    steps = [logits[:, -1]]
    for i in range(prefix + 1, x.shape[1]):
        logits, cache = model(x[:, :i], return_intermediates=True, cache=cache)
        steps.append(logits[:, -1])
    return torch.stack(steps, dim=1)


@torch.no_grad()
def kv_cache_diff(model: torch.nn.Module, x: torch.Tensor) -> tuple[float, float]:
    """(max |cached - full| over the decoded positions, tolerance); raises what decoding raises."""
    full = model(x)  # (B, T, V)
    prefix = x.shape[1] // 2
    return (cached_decode(model, x) - full[:, prefix - 1 : -1]).abs().max().item(), tolerance(full)


def verdict_note(diff: float, tol: float) -> str:
    return f"max |diff| {diff:.3g} {'<=' if diff <= tol else '>'} tolerance {tol:.2g}"


def probe_result(
    rec: Recorder, probe: str, case: str, tol: float | None, diff_fn: Callable[[], float], **fields: Any
) -> None:
    """Run one probe case: pass/fail with its numbers; a crash is a fail with the exception's text.

    A forced backend that refuses the call (dtype, mask) has nothing to agree on: `kernels` records the
    refusal as ineligible, so here it is skipped, not failed."""
    labels = {"case": case}
    try:
        diff = diff_fn()
    except Exception as exc:  # noqa: BLE001  (a refusing kernel or crashing cache is the finding)
        if "No available kernel" in str(exc):
            rec.skipped(probe, M, one_line(exc), {**labels, "outcome": ProbeOutcome.NONE}, **fields)
            return
        rec.add(probe, 0.0, M, {**labels, "outcome": ProbeOutcome.CRASH}, note=one_line(exc), **fields)
    else:
        outcome = ProbeOutcome.PASS if diff <= tol else ProbeOutcome.FAIL
        rec.add(
            probe,
            float(diff <= tol),
            M,
            {**labels, "outcome": outcome},
            note=verdict_note(diff, tol),
            **fields,
        )
        rec.add(MAX_DIFF[probe], diff, M, labels, **fields)
    if tol is not None:
        rec.add(TOLERANCE[probe], tol, M, labels, **fields)


def causality_probe(rec: Recorder, model: torch.nn.Module, x: torch.Tensor, vocab: int) -> None:
    leak, seen, tol = causality(model, x, vocab)
    probe_result(rec, CAUSALITY, Case.AS_BUILT, tol, lambda: leak)
    rec.add(CAUSALITY_DOWNSTREAM, seen, M, {"case": Case.AS_BUILT})
    blind = "" if seen > tol else f"changing a token changed nothing after it (max {seen:.3g} <= {tol:.2g})"
    rec.add(CAUSALITY_SENSITIVE, float(seen > tol), M, {"case": Case.AS_BUILT}, note=blind)


def kv_cache_probe(rec: Recorder, model: torch.nn.Module, x: torch.Tensor, case: str) -> None:
    with torch.no_grad():
        full = model(x)  # (B, T, V): the reference every cached step is compared with
    prefix = x.shape[1] // 2
    diff = lambda: (cached_decode(model, x) - full[:, prefix - 1 : -1]).abs().max().item()  # noqa: E731
    probe_result(rec, KV_CACHE, case, tolerance(full), diff)


def kernel_probes(cfg: ModelConfig, scale: QualityScale, x: torch.Tensor, dtype: str, rec: Recorder) -> None:
    flash = build_model(cfg.with_values({("attn_layers", "attn_flash"): True}), scale.device).eval()
    ref = build_model(cfg.with_values({("attn_layers", "attn_flash"): False}), scale.device).eval()
    ref.load_state_dict(flash.state_dict())
    with torch.no_grad():
        ref32 = ref(x)
        tol = tolerance(ref32, DTYPES[dtype])
        if dtype != "float32":
            flash, ref = flash.to(DTYPES[dtype]), ref.to(DTYPES[dtype])
            tol += 2 * (ref(x).float() - ref32).abs().max().item()
    for backend in (None, *KERNEL_BACKENDS["cuda"]):
        name = "default" if backend is None else backend.name.lower()
        if backend is not None and backend not in KERNEL_BACKENDS.get(x.device.type, ()):
            why = f"{name} is not implemented on {x.device.type}"
            rec.skipped(KERNEL_AGREEMENT, M, why, {"case": name, "outcome": ProbeOutcome.NONE}, dtype=dtype)
            continue
        force_backend(flash, backend)

        def diff() -> float:
            with torch.no_grad():
                return (flash(x).float() - ref32).abs().max().item()

        probe_result(rec, KERNEL_AGREEMENT, name, tol, diff, dtype=dtype)


def variant_probes(
    cfg: ModelConfig, scale: QualityScale, dtype: str, rec: Recorder, attribute: bool = False
) -> None:
    """All probes on the scale's build of `cfg`; `attribute` adds the per-flag KV-cache cases."""
    x = tokens(cfg.num_tokens, scale.probe_batch, scale.probe_seq).to(scale.device)
    model = build_model(cfg, scale.device).eval()
    causality_probe(rec, model, x, cfg.num_tokens)
    kv_cache_probe(rec, model, x, Case.AS_BUILT)
    kernel_probes(cfg, scale, x, dtype, rec)
    if attribute:
        for case, layers in attribution_cases(cfg):
            kv_cache_probe(rec, build_model(ModelConfig(cfg.wrapper, layers), scale.device).eval(), x, case)


def attribution_cases(cfg: ModelConfig) -> list[tuple[str, dict[str, Any]]]:
    """Decoder kwargs with each set flag switched off alone, and each flag or pair of flags on alone."""
    flags = [f for f in FLAGS_OFF if cfg.layers.get(f)]
    plain = {**cfg.layers, **FLAGS_OFF}
    cases = [(f"without={f}", {**cfg.layers, f: FLAGS_OFF[f]}) for f in flags]
    for k in (1, 2):
        for combo in combinations(flags, k):
            cases.append((f"only={'+'.join(combo)}", {**plain, **{f: cfg.layers[f] for f in combo}}))
    return cases


def probe_records(variant: Variant, study: Study, scale: QualityScale | None = None) -> list[Record]:
    scale = scale or quality_scale()
    rec = Recorder(
        study.name, variant, "probes", device=scale.device, dtype="float32", scale=record_scale(scale)
    )
    cfg = proxy_config(variant.config, scale)
    n = counted_params(cfg)["library_total"]
    if n > scale.probe_max_params:
        reason = f"probe model has {n:,} parameters, over the {scale.name} scale's {scale.probe_max_params:,}"
        for probe in PROBES:
            rec.skipped(probe, M, reason, {"case": Case.AS_BUILT, "outcome": ProbeOutcome.NONE})
        return rec.records
    is_base = study.is_base(variant)
    dtype = speed_dtype(study.workloads.dtype, scale.device)  # bf16 on a GPU, where flash needs it
    with torch_threads(scale):
        variant_probes(cfg, scale, dtype, rec, attribute=is_base)
    return rec.records


def measure_probes(variant: Variant, study: Study) -> list[Record]:
    return probe_records(variant, study)


INSPECT_MAX_PARAMS = 20_000_000  # `inspect` stays quick: larger builds are left to `run`


def summary(cfg: ModelConfig, seq_len: int, batch: int) -> dict[str, Any]:
    scale = quality_scale()
    probe_cfg = proxy_config(cfg, scale)
    n = counted_params(probe_cfg)["library_total"]
    if n > INSPECT_MAX_PARAMS:
        why = f"probe model has {n:,} parameters; `orca-analysis run` probes it"
        return {
            "skipped": {
                "passed": False,
                "status": "skipped",
                "outcome": "n/a",
                "max_abs_diff": None,
                "note": why,
            }
        }
    rec = Recorder(
        "inspect", Variant("inspect", cfg, {}), "probes", device=scale.device, scale=record_scale(scale)
    )
    with torch_threads(scale):
        variant_probes(probe_cfg, scale, "float32", rec)
    diffs = {(r.metric, r.labels["case"]): r.value for r in rec.records if r.metric in MAX_DIFF.values()}
    return {
        f"{r.metric}[{r.labels['case']}]": {
            "passed": r.value == 1.0,
            "status": r.status,
            "outcome": r.labels["outcome"],
            "max_abs_diff": diffs.get((MAX_DIFF[r.metric], r.labels["case"])),
            "note": r.note,
        }
        for r in rec.records
        if r.metric in PROBES
    }


def summary_text(s: dict[str, Any]) -> str:
    lines = ["probes (pass/fail, max |logit diff|):"]
    for name, r in s.items():
        value = "-" if r["max_abs_diff"] is None else f"{r['max_abs_diff']:.3g}"
        result = r["outcome"] if r["status"] == "ok" else r["status"]  # pass, fail or crash; skipped
        lines.append(f"  {name:<36} {result:<8} {value:>10}  {r['note']}")
    return "\n".join(lines)
