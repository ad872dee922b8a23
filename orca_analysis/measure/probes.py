"""Behaviour probes, every variant: causality, KV-cache decoding, attention-kernel agreement.

Each probe is a record whose status is the verdict: ok = pass, error = fail (with the numbers
in `error`), skipped = not applicable here. `value` is the maximum absolute logit difference.
  causality: change token t+1 (t = 0, T/2, T-2); logits at positions <= t must not move
    (`causality`), and later ones must (`causality_downstream` > 0, else the probe is blind).
  kv_cache: decode the second half one token at a time with x-transformers' cache
    (`cache=`, `return_intermediates=True`) and compare with one full forward; a crash is a
    fail with its message. For the base variant each flag is also switched off alone
    (`case=without=<flag>`), and each flag and each pair of flags switched on alone over a
    plain decoder (`case=only=<flag>[+<flag>]`), to name the flags behind a failure.
  kernel_agreement: the same weights through x-transformers' own attention (attn_flash off,
    the reference) and through scaled_dot_product_attention forced to each backend.
Tolerance: torch.testing's default atol + rtol * max|reference| for the dtype; for a reduced
dtype, plus twice the reference path's own error against float32 (rounding it already has).
Models are the training proxies (see _quality.py) at CPU scale, the full variant at GPU scale;
inputs are (probe_batch, probe_seq) random tokens. Nothing depends on the study's workloads, so
records carry no seq_len or batch.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from itertools import combinations
from typing import Any

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from x_transformers.attend import Attend

from ..build import DTYPES, build_model
from ..results import Record
from ..study.schema import ModelConfig, Study, Variant
from ._quality import QualityScale, proxy_config, quality_scale, torch_threads
from ._recorder import Recorder, cat
from ._timing import speed_dtype
from .params import counted_params
from .registry import register_measurement

# torch.testing.assert_close defaults (torch/testing/_comparison.py): dtype -> (rtol, atol)
TOLERANCES = {torch.float32: (1.3e-6, 1e-5), torch.bfloat16: (1.6e-2, 1e-5), torch.float16: (1e-3, 1e-5)}
FLAGS_OFF = {
    "alibi_pos_bias": False,
    "rotary_xpos": False,
    "shift_tokens": 0,
    "deepnorm": False,
    "attn_one_kv_head": False,
    "attn_flash": False,
}  # the Orca flags, each switched off
BACKENDS = {
    "cpu": (SDPBackend.MATH, SDPBackend.FLASH_ATTENTION),
    "cuda": (
        SDPBackend.MATH,
        SDPBackend.FLASH_ATTENTION,
        SDPBackend.EFFICIENT_ATTENTION,
        SDPBackend.CUDNN_ATTENTION,
    ),
}


def tolerance(ref: torch.Tensor, dtype: torch.dtype = torch.float32) -> float:
    rtol, atol = TOLERANCES[dtype]
    return atol + rtol * ref.abs().max().item()


def _one_line(exc: BaseException) -> str:
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
def kv_cache_diff(model: torch.nn.Module, x: torch.Tensor) -> tuple[float, float]:
    """(max |cached - full| over the decoded positions, tolerance); raises what decoding raises."""
    full = model(x)  # (B, T, V)
    prefix = x.shape[1] // 2
    logits, cache = model(x[:, :prefix], return_intermediates=True)
    steps = [logits[:, -1]]
    for i in range(prefix + 1, x.shape[1]):
        logits, cache = model(x[:, :i], return_intermediates=True, cache=cache)
        steps.append(logits[:, -1])
    cached = torch.stack(steps, dim=1)  # predictions after tokens prefix-1 .. T-2
    return (cached - full[:, prefix - 1 : -1]).abs().max().item(), tolerance(full)


def force_backend(model: torch.nn.Module, backend: SDPBackend | None) -> None:
    """Route every flash Attend through one sdpa backend (None: x-transformers' own choice).

    An outer `sdpa_kernel` is not enough: x-transformers enters its own around each call.
    """
    for module in model.modules():
        if isinstance(module, Attend) and module.flash:
            if not hasattr(module, "_orca_default_sdp"):
                module._orca_default_sdp = module.sdp_context_manager
            module.sdp_context_manager = (
                module._orca_default_sdp if backend is None else partial(sdpa_kernel, [backend])
            )


def _verdict(diff: float, tol: float) -> dict[str, Any]:
    return {} if diff <= tol else {"status": "error", "error": f"max |diff| {diff:.3g} > tolerance {tol:.2g}"}


def _guarded(
    rec: Recorder, metric: str, case: str, fn: Callable[[], tuple[float, float]], **fields: Any
) -> None:
    try:
        diff, tol = fn()
    except Exception as exc:  # noqa: BLE001  (a refusing kernel or crashing cache is the finding)
        # a forced backend that refuses this call (dtype, mask) has nothing to agree on: `kernels`
        # records the refusal as ineligible, so here it is skipped, not failed
        status = "skipped" if "No available kernel" in str(exc) else "error"
        rec.add(metric, None, "logit", category=cat(case=case), status=status, error=_one_line(exc), **fields)
        return
    rec.add(metric, diff, "logit", category=cat(case=case, tol=f"{tol:.2g}"), **_verdict(diff, tol), **fields)


def kernel_probes(
    cfg: ModelConfig, scale: QualityScale, x: torch.Tensor, dtype: str, rec: Recorder, **fields: Any
) -> None:
    flash = build_model(cfg.with_values({("attn_layers", "attn_flash"): True}), scale.device).eval()
    ref = build_model(cfg.with_values({("attn_layers", "attn_flash"): False}), scale.device).eval()
    ref.load_state_dict(flash.state_dict())
    with torch.no_grad():
        ref32 = ref(x)
        tol = tolerance(ref32, DTYPES[dtype])
        if dtype != "float32":
            flash, ref = flash.to(DTYPES[dtype]), ref.to(DTYPES[dtype])
            tol += 2 * (ref(x).float() - ref32).abs().max().item()
    for backend in (None, *BACKENDS["cuda"]):
        name = "default" if backend is None else backend.name.lower()
        if backend is not None and backend not in BACKENDS.get(x.device.type, ()):
            rec.add(
                "kernel_agreement",
                None,
                "logit",
                category=cat(case=name),
                status="skipped",
                error=f"{name} is not implemented on {x.device.type}",
                dtype=dtype,
                **fields,
            )
            continue
        force_backend(flash, backend)

        def run() -> tuple[float, float]:
            with torch.no_grad():
                return (flash(x).float() - ref32).abs().max().item(), tol

        _guarded(rec, "kernel_agreement", name, run, dtype=dtype, **fields)


def variant_probes(
    cfg: ModelConfig, scale: QualityScale, dtype: str, rec: Recorder, attribute: bool = False
) -> None:
    """All probes on the scale's build of `cfg`; `attribute` adds the per-flag KV-cache cases."""
    x = tokens(cfg.num_tokens, scale.probe_batch, scale.probe_seq).to(scale.device)
    model = build_model(cfg, scale.device).eval()
    leak, seen, tol = causality(model, x, cfg.num_tokens)
    rec.add(
        "causality",
        leak,
        "logit",
        category=cat(case="as_built", tol=f"{tol:.2g}"),
        **_verdict(leak, tol),
    )
    blind = {} if seen > tol else {"status": "error", "error": "changing a token changed nothing after it"}
    rec.add("causality_downstream", seen, "logit", category=cat(case="as_built"), **blind)
    _guarded(rec, "kv_cache", "as_built", lambda: kv_cache_diff(model, x))
    kernel_probes(cfg, scale, x, dtype, rec)
    if attribute:
        for case, layers in attribution_cases(cfg):
            m = build_model(ModelConfig(cfg.wrapper, layers), scale.device).eval()
            _guarded(rec, "kv_cache", case, lambda m=m: kv_cache_diff(m, x))


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
    rec = Recorder(variant, study.name, scale, measurement="probes")
    cfg = proxy_config(variant.config, scale)
    n = counted_params(cfg)["library_total"]
    if n > scale.probe_max_params:
        reason = f"probe model has {n:,} parameters, over the {scale.name} scale's {scale.probe_max_params:,}"
        for metric in ("causality", "kv_cache", "kernel_agreement"):
            rec.add(metric, None, "logit", category=cat(case="as_built"), status="skipped", error=reason)
        return rec.records
    is_base = variant.variant_id == study.variants()[0].variant_id
    dtype = speed_dtype(study.workloads.dtype, scale.device)  # bf16 on a GPU, where flash needs it
    with torch_threads(scale):
        variant_probes(cfg, scale, dtype, rec, attribute=is_base)
    return rec.records


INSPECT_MAX_PARAMS = 20_000_000  # `inspect` stays quick: larger builds are left to `run`


def _summary(cfg: ModelConfig, seq_len: int, batch: int) -> dict[str, Any]:
    scale = quality_scale()
    probe_cfg = proxy_config(cfg, scale)
    n = counted_params(probe_cfg)["library_total"]
    if n > INSPECT_MAX_PARAMS:
        return {
            "skipped": {
                "passed": False,
                "status": "skipped",
                "max_abs_diff": None,
                "error": f"probe model has {n:,} parameters; `orca-analysis run` probes it",
            }
        }
    rec = Recorder(Variant("inspect", cfg, {}), "inspect", scale, measurement="probes")
    with torch_threads(scale):
        variant_probes(probe_cfg, scale, "float32", rec)
    return {
        f"{r.metric}[{r.category.split(',')[0].removeprefix('case=')}]": {
            "passed": r.status == "ok",
            "status": r.status,
            "max_abs_diff": r.value,
            "error": r.error,
        }
        for r in rec.records
    }


def _summary_text(s: dict[str, Any]) -> str:
    lines = ["probes (pass/fail, max |logit diff|):"]
    for name, r in s.items():
        value = "-" if r["max_abs_diff"] is None else f"{r['max_abs_diff']:.3g}"
        lines.append(f"  {name:<36} {'pass' if r['passed'] else r['status']:<8} {value:>10}  {r['error']}")
    return "\n".join(lines)


@register_measurement(
    "probes",
    "behaviour probes: causality, KV-cache decoding vs full recompute, attention-kernel agreement",
    summary=_summary,
    summary_text=_summary_text,
    per_workload=False,
)
def measure_probes(variant: Variant, study: Study) -> list[Record]:
    return probe_records(variant, study)
