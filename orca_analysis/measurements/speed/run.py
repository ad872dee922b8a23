"""End-to-end speed: training step, prefill and decode tokens/s, and utilisation.

Per workload (seq_len, batch), on the variant's real weights (bf16 on GPU, the study's dtype on
CPU; pure-dtype weights and AdamW states, no autocast):
- train: forward, next-token cross-entropy, backward, AdamW step, zero_grad;
- prefill: one forward over `seq_len` tokens under inference_mode;
- decode: cached (KV) decode checked against a full forward and timed, uncached where the cache
  fails (decode.py); for the base variant also multi-query against multi-head cached decoding;
- repeat (base variant): the training step timed again after the other phases, to show how far two
  timings of the same thing drift (`train_step_repeat_diff`).
Every timing stores each sample (`*_time`, label repeat); rates divide the work by the median.
Utilisation divides achieved FLOP/s by (a) a dense GEMM ceiling measured once per process and
(b) the datasheet peak. The numerator is the `flops` measurement's operator counter run at the
length actually timed, in three conventions (CONVENTIONS, the records' method; formulas/flops.py
MFU_CONVENTION_TEXT): PaLM's MFU (model FLOPs, every pair, no recompute), the causal-aware MFU (the
causal pairs) and HFU (what the kernels execute, recompute included). AdamW's elementwise work is
not counted.
A phase that raises (e.g. out of memory) is an error record on its headline metric with the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ...build import build_model
from ...catalog.declared.flops import FORWARD_CAUSAL, FORWARD_DENSE, FORWARD_EXECUTED
from ...catalog.declared.speed import (
    CONVENTION_METHODS,
    CPU_THREADS,
    DATASHEET_PEAK,
    DECODE_CACHED_TOKENS_PER_S,
    GEMM_CEILING,
    GEMM_TIME,
    KV_ABLATION_DECODE_SPEEDUP,
    PREFILL_TIME,
    PREFILL_TOKENS_PER_S,
    STEP,
    TRAIN_STEP_REPEAT_DIFF,
    TRAIN_STEP_TIME,
    TRAIN_TOKENS_PER_S,
)
from ...catalog.vocabulary import Method, Scale
from ...formulas.flops import HFU_CONVENTION, MFU_CAUSAL, MFU_CONVENTION
from ...instruments.decode import random_tokens, split
from ...instruments.device import exception_cause, on_measure_device, run_settings, speed_dtype
from ...instruments.flop_counter import count_flops
from ...instruments.roofline import Peaks
from ...instruments.timing import Timing, time_fn
from ...results import Record
from ...results.records import device_name
from ...study.schema import ModelConfig, Study, Variant
from ..recorder import Recorder
from .decode import decode_phase, kv_heads_phase
from .roofline_check import CALIBRATION, device_peaks, forecast_time, op_cost
from .timed import Workload, at_workload, datasheet_peak, gemm_ceiling, gemm_size, one_line, workloads

CPU_SEQ_CAP = 64
# method -> (training-step count, forward count) of instruments/flop_counter.py
CONVENTIONS = dict(
    zip(
        CONVENTION_METHODS,
        ((MFU_CONVENTION, FORWARD_DENSE), (MFU_CAUSAL, FORWARD_CAUSAL), (HFU_CONVENTION, FORWARD_EXECUTED)),
        strict=True,
    )
)
REPEAT_FIRST_FAILED = "the first timing of this step failed"


@dataclass
class Context:
    """What the phases of one variant's run share."""

    model: torch.nn.Module
    cfg: ModelConfig
    device: str
    dtype: str
    gemm: float  # measured GEMM FLOP/s
    peak: float | None  # datasheet FLOP/s
    peak_note: str
    train_timings: dict[tuple[int, int], Timing] = field(default_factory=dict)
    compatible: list = field(default_factory=list)  # the cache-compatible config, found at the first workload
    kv_models: dict[str, torch.nn.Module] = field(default_factory=dict)  # its mqa / mha builds
    roofline: Peaks | None = None  # this CPU's measured peaks (the time forecast's check)
    op_cost: dict[str, float] = field(default_factory=dict)  # step -> this design's per-operator cost here


Phase = Callable[[Context, Recorder, Workload], None]


def _decode_labels(w: Workload, device: str) -> dict[str, int]:
    prompt, new = split(w.seq_len, device)
    return {"new": new, "prompt": prompt}


# Where a phase's failure is recorded: (metric, method, labels at the workload).
TRAIN_FAILED = (TRAIN_STEP_TIME, Method.MEASURED, lambda w, d: {"repeat": 0})
PREFILL_FAILED = (PREFILL_TIME, Method.MEASURED, lambda w, d: {"repeat": 0})
DECODE_FAILED = (DECODE_CACHED_TOKENS_PER_S, Method.MEASURED_MEDIAN, _decode_labels)
KV_FAILED = (KV_ABLATION_DECODE_SPEEDUP, Method.DERIVED, lambda w, d: {"dropped": "n/a"})
REPEAT_FAILED = (TRAIN_STEP_REPEAT_DIFF, Method.TIMED_TWICE, lambda w, d: {})


@on_measure_device
def measure_speed(variant: Variant, study: Study, device: str) -> list[Record]:
    dtype = speed_dtype(study.workloads.dtype, device)
    cfg = variant.config
    rec = Recorder(study.name, variant, "speed", device=device, dtype=dtype, scale=Scale.MEASURED)
    if not device.startswith("cuda"):
        rec.add(CPU_THREADS, torch.get_num_threads(), Method.TORCH_GET_NUM_THREADS)
    gemm, peak, peak_note = _ceilings(rec, device, dtype)
    ctx = Context(build_model(cfg, device, dtype), cfg, device, dtype, gemm, peak, peak_note)
    peaks = device_peaks(rec, device, gemm)  # the time forecast's inputs, measured; its check on a CPU
    ctx.roofline = None if device.startswith("cuda") else peaks
    _calibrate(ctx, rec, peaks)  # on a GPU too: its per-operator cost, beside the forecast's assumed one
    phases: list[tuple[Phase, tuple]] = [
        (_train, TRAIN_FAILED),
        (_prefill, PREFILL_FAILED),
        (decode_phase, DECODE_FAILED),
    ]
    if study.is_base(variant):  # study-wide: the base only
        phases += [(kv_heads_phase, KV_FAILED), (_repeat, REPEAT_FAILED)]
    for w in workloads(study, variant, device, CPU_SEQ_CAP):
        at = at_workload(rec, w, CPU_SEQ_CAP)
        for phase, (metric, method, labels) in phases:
            try:
                phase(ctx, at, w)
            except Exception as exc:  # noqa: BLE001  (one phase failing, e.g. out of memory, is a result)
                name = phase.__name__.strip("_").removesuffix("_phase")
                why = f"{name}: {one_line(exc)}"
                at.failed(metric, method, why, labels(w, device), exception_cause(exc))
                if device.startswith("cuda"):
                    torch.cuda.empty_cache()
    return rec.records


def _calibrate(ctx: Context, rec: Recorder, peaks: Peaks) -> None:
    """The per-operator cost of this design's own training step and prefill at CALIBRATION (op_cost), for the
    calibrated prediction; a step that fails here gets no calibrated prediction (its failure is recorded)."""
    w = Workload(*CALIBRATION, CALIBRATION[:1])
    for step, timing in (("train", train_step_timing), ("prefill", prefill_timing)):
        try:
            ctx.op_cost[step] = op_cost(peaks, ctx.cfg, rec, step, timing(ctx.model, ctx.cfg, w, ctx.device))
        except Exception as exc:  # noqa: BLE001  (the step's own phase records its failure at each workload)
            why = f"calibration: {one_line(exc)}"
            rec.failed(STEP[step].op_cost, Method.MEASURED_MEDIAN, why, None, exception_cause(exc))


def _ceilings(rec: Recorder, device: str, dtype: str) -> tuple[float, float | None, str]:
    timing, n = gemm_ceiling(device, dtype)
    size = {"size": gemm_size(n, dtype)}
    rec.timing(GEMM_TIME, timing, size)
    rec.rate(GEMM_CEILING, timing, 2 * n**3, size)
    name = device_name(device)
    peak = datasheet_peak(name, dtype) if device.startswith("cuda") else None
    note = "" if peak else f"no datasheet entry for {name} in {dtype}"
    if peak:
        rec.add(DATASHEET_PEAK, peak, Method.DATASHEET, {"device_name": name}, scale=Scale.ANALYTIC)
    else:
        rec.skipped(DATASHEET_PEAK, Method.DATASHEET, note, {"device_name": name}, scale=Scale.ANALYTIC)
    return 2 * n**3 / timing.median, peak, note


def counted_flops(cfg: ModelConfig, seq_len: int, batch: int, training: bool) -> dict[str, float]:
    """FLOPs of one training step (forward, loss, backward) or one forward, by the operator counter,
    in each convention of CONVENTIONS."""
    count = count_flops(cfg, seq_len, batch, train=training)  # no allocation: FakeTensorMode
    return {method: float(count.value(pair[0 if training else 1])) for method, pair in CONVENTIONS.items()}


def _utilisation(
    ctx: Context, rec: Recorder, w: Workload, kind: str, timing: Timing, flops: dict[str, float]
) -> None:
    """Achieved FLOP/s over the GEMM ceiling and the datasheet, per convention (the method)."""
    for method, count in flops.items():
        achieved, note = count / timing.median, timing.note
        if achieved > ctx.gemm:  # possible on a shared CPU: the ceiling was timed under other contention
            note = "; ".join(filter(None, [timing.note, "above the measured GEMM ceiling"]))
        rec.add(STEP[kind].flops, count, method, scale=w.analytic_scale)
        rec.add(STEP[kind].flops_per_s, achieved, method, note=note)
        rec.add(STEP[kind].utilisation_vs_gemm, achieved / ctx.gemm, method, note=note)
        if ctx.peak:
            rec.add(STEP[kind].utilisation_vs_datasheet, achieved / ctx.peak, method, note=note)
        else:
            rec.skipped(STEP[kind].utilisation_vs_datasheet, method, ctx.peak_note)


def train_step_timing(model: torch.nn.Module, cfg: ModelConfig, w: Workload, device: str) -> Timing:
    """Forward, next-token cross-entropy, backward and AdamW, timed by the harness."""
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6)

    def step(tokens: torch.Tensor) -> None:  # tokens: (b, seq_len + 1)
        logits = model(tokens[:, :-1])  # (b, seq_len, vocab)
        F.cross_entropy(logits.flatten(0, 1).float(), tokens[:, 1:].flatten()).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    inputs = random_tokens(cfg.num_tokens, (w.batch, w.seq_len + 1), device)
    return time_fn(step, inputs, device=device, label="train_step", **run_settings(device))


def _train(ctx: Context, rec: Recorder, w: Workload) -> None:
    timing = train_step_timing(ctx.model, ctx.cfg, w, ctx.device)
    ctx.train_timings[(w.seq_len, w.batch)] = timing
    rec.timing(TRAIN_STEP_TIME, timing)
    rec.rate(TRAIN_TOKENS_PER_S, timing, w.batch * w.seq_len)
    _utilisation(ctx, rec, w, "train", timing, counted_flops(ctx.cfg, w.seq_len, w.batch, training=True))
    if ctx.roofline:
        forecast_time(ctx.roofline, ctx.cfg, rec, w, "train", ctx.op_cost.get("train"))


def prefill_timing(model: torch.nn.Module, cfg: ModelConfig, w: Workload, device: str) -> Timing:
    """One forward over the workload's tokens under inference_mode, timed by the harness."""
    model.eval()

    def forward(tokens: torch.Tensor) -> None:  # tokens: (b, seq_len)
        with torch.inference_mode():
            model(tokens)

    inputs = random_tokens(cfg.num_tokens, (w.batch, w.seq_len), device)
    return time_fn(forward, inputs, device=device, label="prefill", **run_settings(device))


def _prefill(ctx: Context, rec: Recorder, w: Workload) -> None:
    timing = prefill_timing(ctx.model, ctx.cfg, w, ctx.device)
    rec.timing(PREFILL_TIME, timing)
    rec.rate(PREFILL_TOKENS_PER_S, timing, w.batch * w.seq_len)
    _utilisation(ctx, rec, w, "prefill", timing, counted_flops(ctx.cfg, w.seq_len, w.batch, training=False))
    if ctx.roofline:
        forecast_time(ctx.roofline, ctx.cfg, rec, w, "prefill", ctx.op_cost.get("prefill"))


def repeat_record(rec: Recorder, first: Timing | None, again: Timing | None) -> None:
    """|second median - first median| / first median of the same training step timed twice in one
    process (the target on a GPU: within 3%)."""
    if first is None or again is None:
        rec.failed(TRAIN_STEP_REPEAT_DIFF, Method.TIMED_TWICE, REPEAT_FIRST_FAILED)
        return
    diff = abs(again.median - first.median) / first.median
    rec.add(
        TRAIN_STEP_REPEAT_DIFF,
        diff,
        Method.TIMED_TWICE,
        note=f"first {first.median:.4g} s, again {again.median:.4g} s",
    )


def _repeat(ctx: Context, rec: Recorder, w: Workload) -> None:
    first = ctx.train_timings.get((w.seq_len, w.batch))
    again = None if first is None else train_step_timing(ctx.model, ctx.cfg, w, ctx.device)
    repeat_record(rec, first, again)
