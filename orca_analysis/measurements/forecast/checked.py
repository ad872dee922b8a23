"""The forecast checked against a GPU run: the simulated memory beside max_memory_allocated, the predicted
step time beside the timed one, and the device peaks the forecast assumed beside those the run measured."""

from __future__ import annotations

import re

from ...catalog.declared.forecast import (
    GPU_PEAK,
    GPU_STEP_FLOOR,
    GPU_STEP_PREDICTED,
)
from ...catalog.declared.memory import PEAK
from ...catalog.declared.speed import (
    CALIBRATION_TOKENS,
    COPY_BANDWIDTH,
    GEMM_CEILING,
    OP_OVERHEAD,
    PREFILL_TIME,
    TRAIN_STEP_OP_COST,
    TRAIN_STEP_TIME,
)
from ...catalog.labels import Breakdown
from ...catalog.vocabulary import Method
from ...devices import load_devices
from ...instruments.roofline import GPU_EFFICIENCY, GPU_OVERHEAD_S
from ...kit.sections import Section, Table
from ...results.query import Results


def model_of(gpu_id: str) -> str:
    """The model token of a catalogue id: the first part with a digit ("h100-sxm-80gb" -> h100, "rtx-4090" -> 4090)."""
    return next((part for part in gpu_id.split("-") if any(ch.isdigit() for ch in part)), gpu_id)


def gb(value: float) -> str:
    return f"{value / 1e9:.2f} GB"


def catalogue_gpu(device_name: str, gpus: list[str]) -> str:
    """The catalogue id a GPU run's device name names ("NVIDIA H100 80GB HBM3" -> h100-sxm-80gb), or ""."""
    tokens = set(re.split(r"[^a-z0-9]+", device_name.lower()))
    return next((g for g in gpus if model_of(g) in tokens), "")


def checked_on_a_gpu(section: Section, results: Results, gpus: list[str]) -> None:
    """The float32 forecast beside max_memory_allocated of a GPU run (memory_measured, study dtype float32)."""
    rows = []
    for step in ("train", "prefill"):
        for v in results.values(PEAK[step], method=Method.MEASURED):
            if not v.device.startswith("cuda") or v.dtype != "float32" or v.value is None:
                continue
            gpu = catalogue_gpu(v.device_name, gpus)
            at = {"variant": v.variant_id, "seq_len": v.seq_len, "batch": v.batch, "step": step}
            forecast = (
                results.values(GPU_PEAK, gpu=gpu, compute="float32", category=Breakdown.TOTAL, **at)
                if gpu
                else []
            )
            if forecast:
                err = forecast[0].value / v.value - 1
                rows.append(
                    [
                        v.variant_id,
                        f"{v.seq_len} x {v.batch}",
                        step,
                        gpu,
                        gb(forecast[0].value),
                        gb(v.value),
                        f"{err:+.1%}",
                    ]
                )
    _time_checked(section, results, gpus)
    _inputs_checked(section, results, gpus)
    if rows:
        section.tables.append(
            Table(
                "GPU memory: forecast against a GPU run",
                "float32: the simulated peak beside torch.cuda.max_memory_allocated of the memory_measured "
                "measurement on that GPU (which includes no CUDA context either). Error: forecast / measured - 1.",
                ["variant", "tokens x batch", "step", "GPU", "forecast", "measured", "error"],
                rows,
            )
        )


def _time_checked(section: Section, results: Results, gpus: list[str]) -> None:
    """The bfloat16 floor and prediction beside the speed measurement's median step time on that GPU."""
    rows = []
    for step, metric in (("train", TRAIN_STEP_TIME), ("prefill", PREFILL_TIME)):
        for v in results.values(metric):
            if not v.device.startswith("cuda") or v.value is None:
                continue
            gpu = catalogue_gpu(v.device_name, gpus)
            at = {"variant": v.variant_id, "seq_len": v.seq_len, "batch": v.batch, "step": step, "gpu": gpu}
            floor = results.values(GPU_STEP_FLOOR, compute="bfloat16", **at) if gpu else []
            pred = results.values(GPU_STEP_PREDICTED, compute="bfloat16", **at) if gpu else []
            if floor and pred:
                rows.append(
                    [
                        v.variant_id,
                        f"{v.seq_len} x {v.batch}",
                        step,
                        gpu,
                        f"{floor[0].value * 1e3:.3g} ms",
                        f"{pred[0].value * 1e3:.3g} ms",
                        f"{v.value * 1e3:.3g} ms",
                        f"{floor[0].value / v.value:.2f}"
                        + (" (ABOVE: a bug)" if floor[0].value > v.value else ""),
                        f"{pred[0].value / v.value - 1:+.0%}",
                    ]
                )
    if rows:
        section.tables.append(
            Table(
                "Step time: forecast against a GPU run",
                "The bfloat16 floor and prediction beside the speed measurement's median on that GPU. The speed "
                "measurement builds the model in bfloat16; the forecast walks bfloat16 autocast over float32 weights "
                "(it counts autocast's casts and float32 optimizer state, which the measured run does not have).",
                [
                    "variant",
                    "tokens x batch",
                    "step",
                    "GPU",
                    "floor",
                    "predicted",
                    "measured",
                    "floor / measured",
                    "prediction error",
                ],
                rows,
            )
        )


def _inputs_checked(section: Section, results: Results, gpus: list[str]) -> None:
    """What the time forecast assumes on a catalogue GPU beside what a run on that GPU measured: the GEMM
    ceiling against the datasheet peak at the assumed GEMM efficiency, the copy bandwidth against the
    datasheet bandwidth at the assumed one, and the per-operator cost against the assumed launch cost."""
    devices, rows, done = load_devices(), [], set()
    for v in sorted(results.values(COPY_BANDWIDTH), key=lambda v: v.device_name or ""):
        gpu = catalogue_gpu(v.device_name, gpus) if v.device.startswith("cuda") else ""
        if not gpu or gpu in done:  # one run's inputs per GPU (each variant's speed call measures them again)
            continue
        done.add(gpu)
        d, at = devices[gpu], {"device": v.device, "variant": v.variant_id}
        gemm = results.values(GEMM_CEILING, dtype="bfloat16", **at)
        if gemm and d.peak_flops.get("bfloat16"):
            assumed = GPU_EFFICIENCY["gemm"][0] * d.peak_flops["bfloat16"]
            rows.append(
                [
                    gpu,
                    "bfloat16 GEMM, TFLOP/s",
                    f"{assumed / 1e12:.0f}",
                    f"{gemm[0].value / 1e12:.0f}",
                    f"{gemm[0].value / assumed - 1:+.0%}",
                ]
            )
        assumed = GPU_EFFICIENCY["memory"][0] * d.bandwidth_bytes_per_s
        rows.append(
            [
                gpu,
                "bandwidth, GB/s",
                f"{assumed / 1e9:.0f}",
                f"{v.value / 1e9:.0f}",
                f"{v.value / assumed - 1:+.0%}",
            ]
        )
        for metric, what in (
            (OP_OVERHEAD, "one-element operator"),
            (TRAIN_STEP_OP_COST, f"operator of the design's training step at {CALIBRATION_TOKENS} tokens"),
        ):
            for cost in results.values(metric, **at)[:1]:
                rows.append(
                    [
                        gpu,
                        f"seconds per {what}, us",
                        f"{GPU_OVERHEAD_S[0] * 1e6:.0f}",
                        f"{cost.value * 1e6:.1f}",
                        f"{cost.value / GPU_OVERHEAD_S[0] - 1:+.0%}",
                    ]
                )
    if rows:
        section.tables.append(
            Table(
                "The time forecast's inputs against a GPU run",
                "Assumed: the datasheet figure at the forecast's stated efficiency (instruments/roofline.py "
                "GPU_EFFICIENCY), and its per-operator launch cost. Measured: the speed measurement on that GPU (its "
                "GEMM ceiling, a streaming copy, a chain of one-element operators, the design's own one-token step). "
                "Error: measured / assumed - 1.",
                ["GPU", "input", "assumed", "measured", "error"],
                rows,
            )
        )
