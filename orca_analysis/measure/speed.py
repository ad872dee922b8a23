"""End-to-end speed: training step, prefill and decode tokens/s, and utilisation.

Per workload (seq_len, batch), on the variant's real weights (bf16 on GPU, the study's dtype on
CPU; pure-dtype weights and AdamW states, no autocast):
- train: forward, next-token cross-entropy, backward, AdamW step, zero_grad;
- prefill: one forward over `seq_len` tokens under inference_mode;
- decode: cached (KV) decode tokens/s, checked against a full forward, uncached where caching
  fails (_decode.py); for the base variant also multi-query against multi-head cached decoding;
- repeat (base variant): the training step timed again after the other phases, to show how far two
  timings of the same thing drift (`train_step_repeat_diff`).
Utilisation divides achieved FLOP/s by (a) a dense GEMM ceiling measured once per process and
(b) the datasheet peak. The numerator is the `flops` measurement's operator counter run at the
length actually timed: training steps by `train_step_causal` (the MFU convention of
formulas/flops.py), prefill by `forward_causal`; AdamW's elementwise work is not counted.
"""

from __future__ import annotations

from dataclasses import replace
from functools import cache

import torch
import torch.nn.functional as F

from ..build import build_model
from ..build.builder import DTYPES
from ..results import Record
from ..results.records import device_name
from ..study.schema import ModelConfig, Study, Variant
from ._decode import cache_compatible, decode, kv_heads_decode, random_tokens
from ._flop_counter import count_flops
from ._timing import (
    Timing,
    base_record,
    cpu_threads,
    derive,
    measure_device,
    rate_record,
    run_settings,
    scale_records,
    scaled_seq_lens,
    speed_dtype,
    time_fn,
    timing_records,
    torch_threads,
)
from .registry import register_measurement

GEMM_N = {"cuda": 8192, "cpu": 1024}
FLOPS_METHOD = "counter_causal"  # measure/_flop_counter.py, causal-aware: formulas/flops.py MFU_CONVENTION
Ceilings = tuple[float, float | None]  # (measured GEMM FLOP/s, datasheet FLOP/s or None)
# Dense (no sparsity) 16-bit tensor-core peaks, FLOP/s: NVIDIA H200, H100 and A100 datasheets.
# Most specific name first: torch reports e.g. "NVIDIA H100 80GB HBM3", "NVIDIA H100 PCIe".
DATASHEET_PEAK_16BIT = (
    ("H200 NVL", 835e12),
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),
    ("A100", 312e12),
)


def datasheet_peak(name: str, dtype: str) -> float | None:
    if dtype not in ("bfloat16", "float16"):
        return None
    return next((peak for key, peak in DATASHEET_PEAK_16BIT if key.lower() in name.lower()), None)


@cache
def gemm_ceiling(device: str, dtype: str) -> tuple[Timing, int]:
    """The dense matmul ceiling: an n x n @ n x n GEMM (2 n^3 FLOP), timed once per process."""
    n = GEMM_N["cuda" if device.startswith("cuda") else "cpu"]
    g = torch.Generator(device=device).manual_seed(0)
    pairs = [
        tuple(torch.randn(n, n, generator=g, device=device, dtype=DTYPES[dtype]) for _ in range(2))
        for _ in range(2)
    ]  # two pairs, rotated
    return time_fn(lambda ab: ab[0] @ ab[1], pairs, device=device, label="gemm", **run_settings(device)), n


def _counted_flops(cfg: ModelConfig, seq_len: int, batch: int, training: bool) -> float:
    """FLOPs of one training step (forward, loss, backward) or one forward, by the operator counter."""
    count = count_flops(cfg, seq_len, batch, train=training)  # no allocation: FakeTensorMode
    return float(count.value("train_step_causal" if training else "forward_causal"))


def _matmul_params(model: torch.nn.Module, cfg: ModelConfig) -> int:
    total = sum(p.numel() for p in model.parameters())
    return total if cfg.get("tie_embedding") else total - model.token_emb.emb.weight.numel()


@register_measurement(
    "speed",
    "end-to-end training, prefill and decode tokens/s, and utilisation",
    isolated=True,
    version=2,  # 2: multi-query vs multi-head decoding and the repeated timing on the base
)
def measure_speed(variant: Variant, study: Study) -> list[Record]:
    device = measure_device()
    with torch_threads(cpu_threads(device)):
        return _speed(variant, study, device)


def _speed(variant: Variant, study: Study, device: str) -> list[Record]:
    dtype = speed_dtype(study.workloads.dtype, device)
    lengths = scaled_seq_lens(study.workloads.seq_lens, variant.config.max_seq_len, device, "speed")
    cfg = variant.config
    base = base_record(study, variant, "speed", dtype, device)
    records: list[Record] = []
    if not device.startswith("cuda"):
        records.append(
            derive(base, "cpu_threads", "torch.get_num_threads", torch.get_num_threads(), "threads")
        )
    ceilings, ceiling_records = _ceilings(base, device, dtype)
    records += ceiling_records
    model = build_model(cfg, device, dtype)
    n_matmul = _matmul_params(model, cfg)
    compatible: list = []  # the cache-compatible flags, found once at the first workload
    kv_models: dict = {}  # its multi-query and multi-head builds, kept across workloads

    def kv_heads(model, cfg: ModelConfig, at: Record, n_matmul: int, ceilings: Ceilings) -> list[Record]:
        if not compatible:
            compatible.append(cache_compatible(cfg, at))
        return kv_heads_decode(cfg, at, compatible[0], kv_models)

    def repeat(model, cfg: ModelConfig, at: Record, n_matmul: int, ceilings: Ceilings) -> list[Record]:
        first = [r for r in records if r.metric == "train_step_time" and r.method == "measured_median"]
        first = [r for r in first if (r.seq_len, r.batch) == (at.seq_len, at.batch) and r.value]
        return [repeatability(first[0].value if first else None, train_step_timing(model, cfg, at), at)]

    phases = (_train, _prefill, decode)
    if variant.variant_id == study.variants()[0].variant_id:  # study-wide: the base only
        phases += (kv_heads, repeat)
    for seq_len, requested in lengths.items():
        for batch in study.workloads.batch_sizes:
            at = replace(base, seq_len=seq_len, batch=batch)
            records += scale_records(at, requested, cfg.max_seq_len)
            for phase in phases:
                try:
                    records += phase(model, cfg, at, n_matmul, ceilings)
                except Exception as exc:  # noqa: BLE001  (one phase failing, e.g. out of memory, is a result)
                    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                    error = f"{type(exc).__name__}: {text}"
                    records.append(
                        derive(
                            at, phase.__name__.strip("_"), "measured", None, "", status="error", error=error
                        )
                    )
                    if device.startswith("cuda"):
                        torch.cuda.empty_cache()
    return records


def _ceilings(base: Record, device: str, dtype: str) -> tuple[Ceilings, list[Record]]:
    timing, n = gemm_ceiling(device, dtype)
    ceiling = 2 * n**3 / timing.median
    size = f"{n}x{n}x{n} {dtype}"
    sized = replace(base, category=size)
    records = timing_records(timing, "gemm_time", sized)
    records.append(rate_record(timing, "gemm_ceiling", 2 * n**3, "FLOP/s", sized, "measured_median"))
    name = device_name(device)
    peak = datasheet_peak(name, dtype) if device.startswith("cuda") else None
    missing = {} if peak else {"status": "skipped", "error": f"no datasheet entry for {name} in {dtype}"}
    records.append(derive(base, "datasheet_peak", "datasheet", peak, "FLOP/s", category=name, **missing))
    return (ceiling, peak), records


def _utilisation(timing: Timing, at: Record, kind: str, flops: float, ceilings: Ceilings) -> list[Record]:
    """Achieved FLOP/s (counted numerator, see FLOPS_METHOD) over the GEMM ceiling and the datasheet."""
    achieved, note = flops / timing.median, {"error": timing.note}
    gemm, peak = ceilings
    if achieved > gemm:  # possible on a shared CPU: the ceiling was timed under other contention
        note = {"error": "; ".join(filter(None, [timing.note, "above the measured GEMM ceiling"]))}
    records = [
        derive(at, f"{kind}_flops", FLOPS_METHOD, flops, "FLOP"),
        derive(at, f"{kind}_flops_per_s", FLOPS_METHOD, achieved, "FLOP/s", **note),
        derive(at, f"{kind}_utilisation_vs_gemm", FLOPS_METHOD, achieved / gemm, "fraction", **note),
    ]
    if peak:
        records.append(
            derive(at, f"{kind}_utilisation_vs_datasheet", FLOPS_METHOD, achieved / peak, "fraction", **note)
        )
    return records


def train_step_timing(model, cfg: ModelConfig, at: Record) -> Timing:
    """Forward, next-token cross-entropy, backward and AdamW, timed by the harness."""
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6)

    def step(tokens: torch.Tensor) -> None:  # tokens: (b, seq_len + 1)
        logits = model(tokens[:, :-1])  # (b, seq_len, vocab)
        F.cross_entropy(logits.flatten(0, 1).float(), tokens[:, 1:].flatten()).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    inputs = random_tokens(cfg.num_tokens, (at.batch, at.seq_len + 1), at.device)
    return time_fn(step, inputs, device=at.device, label="train_step", **run_settings(at.device))


def _train(model, cfg: ModelConfig, at: Record, n_matmul: int, ceilings: Ceilings) -> list[Record]:
    timing = train_step_timing(model, cfg, at)
    tokens = at.batch * at.seq_len
    flops = _counted_flops(cfg, at.seq_len, at.batch, training=True)
    return [
        *timing_records(timing, "train_step_time", at),
        rate_record(timing, "train_tokens_per_s", tokens, "tokens/s", at, "measured_median"),
        *_utilisation(timing, at, "train", flops, ceilings),
    ]


def repeatability(first: float | None, again: Timing, at: Record) -> Record:
    """|second median - first median| / first median of the same training step timed twice in one
    process (issue 5's target on a GPU: within 3%)."""
    if not first:
        return derive(at, "train_step_repeat_diff", "timed_twice", None, "fraction", status="error",
                      error="the first timing of this step failed")  # fmt: skip
    diff = abs(again.median - first) / first
    category = f"first {first:.4g} s, again {again.median:.4g} s"
    return derive(at, "train_step_repeat_diff", "timed_twice", diff, "fraction", category=category)


def _prefill(model, cfg: ModelConfig, at: Record, n_matmul: int, ceilings: Ceilings) -> list[Record]:
    model.eval()

    def forward(tokens: torch.Tensor) -> None:
        with torch.inference_mode():
            model(tokens)

    inputs = random_tokens(cfg.num_tokens, (at.batch, at.seq_len), at.device)
    timing = time_fn(forward, inputs, device=at.device, label="prefill", **run_settings(at.device))
    flops = _counted_flops(cfg, at.seq_len, at.batch, training=False)
    return [
        *timing_records(timing, "prefill_time", at),
        rate_record(timing, "prefill_tokens_per_s", at.batch * at.seq_len, "tokens/s", at, "measured_median"),
        *_utilisation(timing, at, "prefill", flops, ceilings),
    ]
