"""The time forecast against the measured step times of this machine: floor, prediction, measurement."""

from __future__ import annotations

from ...catalog.declared.speed import (
    CALIBRATION_TOKENS,
    OP_OVERHEAD,
    PREFILL_FLOOR,
    STEP,
    TRAIN_STEP_FLOOR,
)
from ...kit.sections import Table, variant_order
from ...results.query import Results
from .run import CPU_SEQ_CAP
from .timed import requested_text

TOLERANCE = 0.25  # the prediction's target: within 25% of the measured median
WHAT = {"train": "training step", "prefill": "prefill"}


def _error(results: Results, metric: str, at: dict, measured: float) -> tuple[str, str, bool]:
    """(the prediction, its error against the measurement, within TOLERANCE), or dashes where none is stored."""
    found = results.values(metric, **at)
    if not found or found[0].value is None:
        return "-", "-", False
    p = found[0].value
    return f"{p * 1e3:.3g} ms", f"{p / measured - 1:+.0%}", abs(p / measured - 1) <= TOLERANCE


def forecast_check_table(results: Results, study) -> Table | None:  # noqa: ANN001
    """Every (variant, length, step) timed with a floor and predictions beside it."""
    rows, above, close, own, n = [], 0, 0, 0, 0
    for vid in variant_order(study):
        for floor in sorted(
            results.values(TRAIN_STEP_FLOOR, variant=vid) + results.values(PREFILL_FLOOR, variant=vid),
            key=lambda v: (v.device, v.seq_len, v.metric),
        ):
            named, what = next((STEP[k], w) for k, w in WHAT.items() if STEP[k].floor == floor.metric)
            at = {"variant": vid, "device": floor.device, "seq_len": floor.seq_len, "batch": floor.batch}
            meas = results.values(named.time, **at)
            if not meas or meas[0].value is None:
                continue
            m, f = meas[0].value, floor.value
            pred, pred_err, pred_ok = _error(results, named.predicted, at, m)
            cal, cal_err, cal_ok = _error(results, named.calibrated, at, m)
            n, above, close, own = n + 1, above + (f > m), close + pred_ok, own + cal_ok
            rows.append(
                [
                    vid,
                    floor.device,
                    requested_text(results, vid, floor.device, floor.seq_len, CPU_SEQ_CAP),
                    f"{floor.seq_len} x {floor.batch}",
                    what,
                    f"{f * 1e3:.3g} ms",
                    f"{m * 1e3:.3g} ms",
                    f"{f / m:.2f}" + (" (ABOVE: a bug)" if f > m else ""),
                    pred,
                    pred_err,
                    cal,
                    cal_err,
                ]
            )
    if not rows:
        return None
    peaks = "; ".join(sorted({v.note.split(";")[0] for v in results.values(OP_OVERHEAD)})) or ""
    return Table(
        "The time forecast checked on this machine",
        "The method that forecasts a GPU's step time (instruments/roofline.py), applied to this CPU with its "
        "measured peaks: the GEMM ceiling, the bandwidth of a streaming copy (copy_bandwidth) and the cost of "
        f"one eager operator with autograd (op_overhead; {peaks}). Floor: the sum over the step's operators of "
        "max(FLOPs / GEMM ceiling, bytes / bandwidth); it must stay below the measured median. Predicted: the "
        "floor plus op_overhead per operator, from probes alone. Calibrated: the floor plus the design's own "
        f"per-operator cost, measured on its step at {CALIBRATION_TOKENS} tokens (train_step_op_cost, prefill_op_cost: Python, "
        "dispatch and autograd between the operators, which the one-element chain does not carry); the "
        "lengths checked are not the one it was calibrated at. Error: prediction / measured - 1. "
        f"Floor below the measurement in {n - above} of {n}; within {TOLERANCE:.0%}: the prediction from probes "
        f"in {close} of {n}, the calibrated one in {own} of {n}.",
        [
            "variant",
            "device",
            "seq len requested",
            "tokens x batch",
            "step",
            "floor",
            "measured",
            "floor / measured",
            "predicted from probes",
            "its error",
            "calibrated",
            "its error",
        ],
        rows,
    )
