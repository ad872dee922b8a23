"""The time forecast checked on this CPU: the CPU as a device whose peaks are measured (the GEMM ceiling, a
streaming copy, the per-operator cost of eager PyTorch with autograd), and, at each timed workload, the
roofline floor and the predicted time of the step from its operators (instruments/roofline.py), recorded
beside the measured median. The same method forecasts a GPU's step from its datasheet (the forecast
measurement); here it meets a measurement."""

from __future__ import annotations

from ...instruments.memtrack import run_steps
from ...instruments.roofline import (
    Peaks,
    bandwidth_probe,
    floor_s,
    measured_peaks,
    overhead_probe,
    predicted_s,
)
from ...study.schema import ModelConfig
from ..recorder import Recorder
from .timed import Workload

MED = "measured_median"
METHOD = ("predicted: the step's operators from the no-allocation walk (instruments/roofline.py); floor = sum of "
          "max(FLOPs / the GEMM ceiling, bytes / the copy bandwidth); predicted = the floor plus the measured "
          "per-operator cost for each operator")  # fmt: skip


def device_peaks(rec: Recorder, device: str, gemm_flops_per_s: float) -> Peaks:
    """The measuring device's peaks, recorded: the copy bandwidth and the per-operator cost (the GEMM ceiling is
    the speed measurement's own). On a GPU they are what the forecast needs to be checked against its run."""
    copy, moved = bandwidth_probe(device)
    rec.timing("copy_time", copy)
    rec.rate("copy_bandwidth", copy, moved)
    chain, ops = overhead_probe(device)
    rec.add("op_overhead", chain.median / ops, MED, note=f"{ops} one-element operators per timed call")
    return measured_peaks(device, gemm_flops_per_s, moved / copy.median, chain.median / ops)


def forecast_time(peaks: Peaks, cfg: ModelConfig, rec: Recorder, w: Workload, step: str) -> None:
    """The floor and the predicted time of `step` ("train" or "prefill") at the workload, beside its timing."""
    costs: dict = {}
    run_steps(cfg, "float32", {(w.seq_len, w.batch): (step,)}, costs=costs)
    ops = costs[(w.seq_len, w.batch)].get(step, [])
    name = "train_step" if step == "train" else "prefill"
    note = f"{len(ops)} operators; {METHOD}"
    rec.add(f"{name}_floor", floor_s(ops, peaks), "predicted", note=note, scale=w.analytic_scale)
    rec.add(f"{name}_predicted", predicted_s(ops, peaks), "predicted", note=note, scale=w.analytic_scale)
