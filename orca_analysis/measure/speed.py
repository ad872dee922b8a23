"""End-to-end speed: training step, prefill and decode tokens/s, and utilisation.

Per workload (seq_len, batch), on the variant's real weights (bf16 on GPU, the study's dtype on
CPU; pure-dtype weights and AdamW states, no autocast):
- train: forward, next-token cross-entropy, backward, AdamW step, zero_grad;
- prefill: one forward over `seq_len` tokens under inference_mode;
- decode: `DECODE_TOKENS` single-token steps after a (seq_len - G)-token prompt, teacher-forced
  on a fixed random continuation (sampling cost excluded), with x-transformers' KV cache
  (`return_intermediates=True`, `cache=`). The cached logits are checked against one full
  forward; where caching fails or disagrees that is recorded (status error) and decode is
  also timed without the cache (a full forward per new token).
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

DECODE_TOKENS = {"cuda": 32, "cpu": 4}  # new tokens per decode sample
AGREEMENT_TOL = {"float32": 1e-3, "bfloat16": 3e-2, "float16": 3e-2}  # max |dlogit| / max |logit|
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


def _tokens(num_tokens: int, shape: tuple[int, int], device: str, k: int = 3) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randint(0, num_tokens, shape, generator=g).to(device) for _ in range(k)]


@register_measurement(
    "speed", "end-to-end training, prefill and decode tokens/s, and utilisation", isolated=True
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
    for seq_len, requested in lengths.items():
        for batch in study.workloads.batch_sizes:
            at = replace(base, seq_len=seq_len, batch=batch)
            records += scale_records(at, requested, cfg.max_seq_len)
            for phase in (_train, _prefill, _decode):
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


def _train(model, cfg: ModelConfig, at: Record, n_matmul: int, ceilings: Ceilings) -> list[Record]:
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6)

    def step(tokens: torch.Tensor) -> None:  # tokens: (b, seq_len + 1)
        logits = model(tokens[:, :-1])  # (b, seq_len, vocab)
        F.cross_entropy(logits.flatten(0, 1).float(), tokens[:, 1:].flatten()).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    inputs = _tokens(cfg.num_tokens, (at.batch, at.seq_len + 1), at.device)
    timing = time_fn(step, inputs, device=at.device, label="train_step", **run_settings(at.device))
    tokens = at.batch * at.seq_len
    flops = _counted_flops(cfg, at.seq_len, at.batch, training=True)
    return [
        *timing_records(timing, "train_step_time", at),
        rate_record(timing, "train_tokens_per_s", tokens, "tokens/s", at, "measured_median"),
        *_utilisation(timing, at, "train", flops, ceilings),
    ]


def _prefill(model, cfg: ModelConfig, at: Record, n_matmul: int, ceilings: Ceilings) -> list[Record]:
    model.eval()

    def forward(tokens: torch.Tensor) -> None:
        with torch.inference_mode():
            model(tokens)

    inputs = _tokens(cfg.num_tokens, (at.batch, at.seq_len), at.device)
    timing = time_fn(forward, inputs, device=at.device, label="prefill", **run_settings(at.device))
    flops = _counted_flops(cfg, at.seq_len, at.batch, training=False)
    return [
        *timing_records(timing, "prefill_time", at),
        rate_record(timing, "prefill_tokens_per_s", at.batch * at.seq_len, "tokens/s", at, "measured_median"),
        *_utilisation(timing, at, "prefill", flops, ceilings),
    ]


def _cached_steps(model, seq: torch.Tensor, prompt: int, cache_in) -> list[torch.Tensor]:
    """Last-position logits of each single-token step from prompt+1 .. len(seq) tokens."""
    cache_state, out = cache_in, []
    for end in range(prompt + 1, seq.shape[1] + 1):
        logits, cache_state = model(seq[:, :end], return_intermediates=True, cache=cache_state)
        out.append(logits[:, -1])
    return out


def _cache_check(model, seq: torch.Tensor, prompt: int, tol: float) -> tuple[float | None, str]:
    """(max |dlogit| / max |logit| of cached vs full-forward logits, problem or "")."""
    try:
        cache_state = model(seq[:, :prompt], return_intermediates=True)[1]
        got = torch.stack(_cached_steps(model, seq, prompt, cache_state), 1)  # (b, new, vocab)
        ref = model(seq)[:, prompt:]  # the full forward's logits at the same positions
    except Exception as exc:  # noqa: BLE001  (cached decoding failing is a result)
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return None, f"cached decoding failed: {type(exc).__name__}: {text}"
    rel = ((got - ref).abs().max() / ref.abs().max()).item()
    if rel <= tol:
        return rel, ""
    return (
        rel,
        f"cached decoding disagrees with the full forward: max |dlogit| is {rel:.2%} of max |logit| "
        + (f"(tolerance {tol:.1%})"),
    )


def _decode(model, cfg: ModelConfig, at: Record, n_matmul: int, ceilings: Ceilings) -> list[Record]:
    model.eval()
    new = DECODE_TOKENS["cuda" if at.device.startswith("cuda") else "cpu"]
    prompt = at.seq_len - new if at.seq_len > new else at.seq_len // 2
    new = at.seq_len - prompt
    seqs = _tokens(cfg.num_tokens, (at.batch, at.seq_len), at.device)
    what = replace(at, category=f"{new} tokens after a {prompt}-token prompt")
    settings = run_settings(at.device)
    with torch.inference_mode():
        rel, problem = _cache_check(model, seqs[0], prompt, AGREEMENT_TOL[at.dtype])
        status = {"status": "error", "error": problem} if problem else {}
        records = [
            derive(what, "decode_cache_agreement", "cached_vs_full_forward", rel, "fraction", **status)
        ]
        if rel is None:  # failed: nothing to time with the cache
            records.append(
                derive(what, "decode_cached_tokens_per_s", "measured_median", None, "tokens/s", **status)
            )
        else:
            prefilled = [model(s[:, :prompt], return_intermediates=True)[1] for s in seqs]
            timing = time_fn(
                lambda i: _cached_steps(model, seqs[i], prompt, prefilled[i]),
                range(len(seqs)),
                device=at.device,
                label="decode_cached",
                **settings,
            )
            records += [replace(r, **status) for r in _decode_records(timing, what, "decode_cached", new)]
        if not problem:
            why = "cached decoding agrees with the full forward; uncached not needed"
            return [
                *records,
                derive(
                    what,
                    "decode_uncached_tokens_per_s",
                    "measured_median",
                    None,
                    "tokens/s",
                    status="skipped",
                    error=why,
                ),
            ]

        def uncached(i: int) -> None:  # a full forward per new token
            for end in range(prompt + 1, at.seq_len + 1):
                model(seqs[i][:, :end])

        timing = time_fn(uncached, range(len(seqs)), device=at.device, label="decode_uncached", **settings)
    return [*records, *_decode_records(timing, what, "decode_uncached", new)]


def _decode_records(timing: Timing, what: Record, name: str, new: int) -> list[Record]:
    tokens = what.batch * new
    return [
        *timing_records(timing, f"{name}_time", what),
        rate_record(timing, f"{name}_tokens_per_s", tokens, "tokens/s", what, "measured_median"),
    ]
