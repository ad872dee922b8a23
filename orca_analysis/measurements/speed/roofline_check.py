"""The time forecast checked on this CPU: the CPU as a device whose peaks are measured (the GEMM ceiling, a
streaming copy, the per-operator cost of eager PyTorch with autograd), and, at each timed workload, the
roofline floor and the predicted time of the step from its operators (instruments/roofline.py), recorded
beside the measured median. The same method forecasts a GPU's step from its datasheet (the forecast
measurement); here it meets a measurement."""

from __future__ import annotations

from dataclasses import replace

from ...catalog.declared.speed import CALIBRATION_TOKENS, COPY_BANDWIDTH, COPY_TIME, MED, OP_OVERHEAD, STEP
from ...catalog.vocabulary import Method
from ...instruments.memtrack import run_steps
from ...instruments.roofline import (
    OpCost,
    Peaks,
    bandwidth_probe,
    floor_s,
    measured_peaks,
    overhead_probe,
    predicted_s,
)
from ...instruments.timing import Timing
from ...study.schema import ModelConfig
from ..recorder import Recorder
from .timed import Workload

CALIBRATION = (CALIBRATION_TOKENS, 1)  # tokens x batch of the design's own step that calibrates its op cost
METHOD = (
    "predicted: the step's operators from the no-allocation walk (instruments/roofline.py); floor = sum of "
    "max(FLOPs / the GEMM ceiling, bytes / the copy bandwidth); predicted = the floor plus the measured "
    "per-operator cost for each operator"
)


def device_peaks(rec: Recorder, device: str, gemm_flops_per_s: float) -> Peaks:
    """The measuring device's peaks, recorded: the copy bandwidth and the per-operator cost (the GEMM ceiling is
    the speed measurement's own). On a GPU they are what the forecast needs to be checked against its run."""
    copy, moved = bandwidth_probe(device)
    rec.timing(COPY_TIME, copy)
    rec.rate(COPY_BANDWIDTH, copy, moved)
    chain, ops = overhead_probe(device)
    rec.add(OP_OVERHEAD, chain.median / ops, MED, note=f"{ops} one-element operators per timed call")
    return measured_peaks(device, gemm_flops_per_s, moved / copy.median, chain.median / ops)


def _ops(cfg: ModelConfig, step: str, seq_len: int, batch: int) -> list[OpCost]:
    costs: dict = {}
    run_steps(cfg, "float32", {(seq_len, batch): (step,)}, costs=costs)
    return costs[(seq_len, batch)].get(step, [])


def op_cost(peaks: Peaks, cfg: ModelConfig, rec: Recorder, step: str, timing: Timing) -> float:
    """The per-operator cost of this design's own eager `step` on this machine: (the median of the step at
    CALIBRATION tokens x batch - its floor) / its operators, recorded. At two tokens the step is almost all
    per-operator cost (Python, dispatch, autograd, the optimizer's launches), which the one-element chain of
    op_overhead does not carry, and its matrix products run as at the lengths it predicts (at one token they
    are matrix-vector products, about twice as fast per weight byte on this CPU: catalog/declared/speed.py)."""
    ops = _ops(cfg, step, *CALIBRATION)
    floor = floor_s(ops, peaks)
    cost = max(0.0, (timing.median - floor) / len(ops))
    n, b = CALIBRATION
    note = (
        f"({timing.median * 1e3:.4g} ms measured - {floor * 1e3:.4g} ms floor) / {len(ops)} operators, at "
        f"{n} tokens x batch {b}"
    )
    rec.add(STEP[step].op_cost, cost, MED, note=note)
    return cost


def forecast_time(
    peaks: Peaks, cfg: ModelConfig, rec: Recorder, w: Workload, step: str, calibrated: float | None
) -> None:
    """The floor and the predicted time of `step` ("train" or "prefill") at the workload, beside its timing;
    with `calibrated` (the design's own per-operator cost, op_cost) also the calibrated prediction."""
    ops = _ops(cfg, step, w.seq_len, w.batch)
    named, note = STEP[step], f"{len(ops)} operators; {METHOD}"
    rec.add(named.floor, floor_s(ops, peaks), Method.PREDICTED, note=note, scale=w.analytic_scale)
    rec.add(named.predicted, predicted_s(ops, peaks), Method.PREDICTED, note=note, scale=w.analytic_scale)
    if calibrated is not None:
        own = replace(peaks, overhead_s=calibrated)
        rec.add(
            named.calibrated,
            predicted_s(ops, own),
            Method.PREDICTED,
            scale=w.analytic_scale,
            note=f"{len(ops)} operators; the floor plus {named.op_cost} per operator",
        )
