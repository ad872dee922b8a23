"""FLOPs per variant and workload: operator counter, fvcore and closed form, side by side.

Methods: `counter` (FlopCounterMode completed for attention and ALiBi, on the storage-less model:
instruments/flop_counter.py), `counter_plain` (what FlopCounterMode as shipped reports for the same
run), `closed_form` (formulas/flops.py), `fvcore` (FlopCountAnalysis on real weights with this
project's handles, 2 FLOPs per multiply-add), `fvcore_plain` (fvcore as shipped, converted to 2 per
multiply-add; `fvcore_forward_as_shipped` keeps its own number), and the estimates `kaplan_6n` and
`palm`. Metrics forward_dense, forward_causal, train_step_dense, train_step_causal, the model FLOPs
train_step_model_dense / _causal (no recompute: the MFU numerators) and forward_ / train_step_executed
(what the kernels run: the HFU numerator); see formulas/flops.py MFU_CONVENTION_TEXT. Each by
component (label `component`, "total" for the sum).
fvcore runs the model for real, so it runs only where the forward is at most
FVCORE_MAX_FORWARD_FLOP; elsewhere its records say `skipped` and why.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ...build import build_model
from ...catalog.declared.flops import (
    CLOSED_FORM_GAP,
    FORWARD_DENSE,
    FORWARD_ESTIMATE,
    FVCORE_FORWARD_AS_SHIPPED,
    FVCORE_GAP,
    PLAIN_MISSED_SHARE,
    STEP_COUNTS,
    TRAIN_STEP_CAUSAL,
    TRAIN_STEP_CAUSAL_ATTENTION,
    TRAIN_STEP_CAUSAL_PER_TOKEN,
    TRAIN_STEP_DENSE,
    TRAIN_STEP_ESTIMATE,
)
from ...catalog.labels import Breakdown
from ...catalog.vocabulary import Method
from ...formulas.flops import COMPONENTS, closed_form_kind, kaplan_6n, palm
from ...instruments.analytic import analytic_flops
from ...instruments.device import exception_cause
from ...instruments.flop_counter import FlopCount
from ...instruments.fvcore_flops import FvcoreResult, run_fvcore
from ...instruments.kept_walks import WalkCache
from ...results import Record
from ...study.schema import ModelConfig, Study, Variant
from ..recorder import Recorder

FVCORE_MAX_FORWARD_FLOP = 3.2e10  # Orca base at 512 tokens is 3.0e10; at 8192, fvcore takes ~1 min, 5.6 GB
FVCORE_SKIP = (
    "fvcore runs the model on real weights (forward {flop:.3g} FLOP here, above the {cap:.0e} "
    "this measurement allows); benchmarks/flops_bench.py runs it at full size"
)


def closed(cfg: ModelConfig, seq_len: int, batch: int, metric: str) -> dict[str, int]:
    step = "forward" if metric.startswith("forward") else "train_step"
    parts = closed_form_kind(cfg, seq_len, batch, metric.removeprefix(step + "_"))
    return {k: getattr(v, step) for k, v in parts.items()}


def counted(count: FlopCount, metric: str) -> dict[str, int]:
    comps = [*COMPONENTS, *(c for c in count.components() if c not in COMPONENTS)]
    return {**{c: count.value(metric, c) for c in comps}, "total": count.value(metric)}


def fvcore_allowed(cfg: ModelConfig, seq_len: int, batch: int) -> tuple[bool, str]:
    flop = closed(cfg, seq_len, batch, FORWARD_DENSE)["total"]
    ok = flop <= FVCORE_MAX_FORWARD_FLOP
    return ok, "" if ok else FVCORE_SKIP.format(flop=flop, cap=FVCORE_MAX_FORWARD_FLOP)


def fvcore_for(model: torch.nn.Module, cfg: ModelConfig, seq_len: int, batch: int) -> FvcoreResult:
    model.eval()  # fvcore traces the forward; no dropout in the trace
    with torch.no_grad():
        return run_fvcore(model, torch.randint(0, cfg.num_tokens, (batch, seq_len)))


def _gap(a: float, b: float) -> float:
    return (a - b) / b if b else 0.0


def workload_records(
    rec: Recorder, cfg: ModelConfig, n: int, b: int, model_fn: Callable, walks: WalkCache | None
) -> None:
    """One workload's counts by every method, and the gaps between them (computed here, once)."""
    count, how = None, ""
    try:
        count, how = analytic_flops(cfg, n, b, rec.defaults["dtype"], walks=walks)
    except Exception as exc:  # noqa: BLE001  (the library refusing the config is a result, not a crash)
        rec.failed(
            TRAIN_STEP_CAUSAL,
            Method.COUNTER,
            f"{type(exc).__name__}: {exc}",
            {"component": Breakdown.TOTAL},
            exception_cause(exc),
        )
    by_closed = {m: closed(cfg, n, b, m) for m in STEP_COUNTS}
    for metric in STEP_COUNTS:
        for comp, v in by_closed[metric].items():
            rec.add(metric, v, Method.CLOSED_FORM, {"component": comp})
    if count is not None:
        by_counter = {m: counted(count, m) for m in STEP_COUNTS}
        for metric in STEP_COUNTS:
            for comp, v in by_counter[metric].items():
                rec.add(metric, v, Method.COUNTER, {"component": comp}, note=how if comp == "total" else "")
            rec.add(
                CLOSED_FORM_GAP,
                _gap(by_closed[metric]["total"], by_counter[metric]["total"]),
                Method.DERIVED,
                {"quantity": metric},
            )
        step = by_counter[TRAIN_STEP_CAUSAL]
        for comp, v in step.items():
            rec.add(TRAIN_STEP_CAUSAL_PER_TOKEN, v / (n * b), Method.COUNTER, {"component": comp})
        rec.add(TRAIN_STEP_CAUSAL_ATTENTION, step["attention_core"] + step["alibi"], Method.COUNTER)
        plain_step = count.plain["forward"] + count.plain["backward"]
        rec.add(FORWARD_DENSE, count.plain["forward"], Method.COUNTER_PLAIN, {"component": Breakdown.TOTAL})
        rec.add(TRAIN_STEP_DENSE, plain_step, Method.COUNTER_PLAIN, {"component": Breakdown.TOTAL})
        dense = by_counter[TRAIN_STEP_DENSE]["total"]
        rec.add(PLAIN_MISSED_SHARE, 1 - plain_step / dense, Method.DERIVED, {"tool": "flop_counter_mode"})
    k, p = kaplan_6n(cfg, n, b), palm(cfg, n, b)
    rec.add(FORWARD_ESTIMATE, k.forward, Method.KAPLAN_6N)
    rec.add(TRAIN_STEP_ESTIMATE, k.train_step, Method.KAPLAN_6N)
    rec.add(FORWARD_ESTIMATE, p.forward, Method.PALM)
    rec.add(TRAIN_STEP_ESTIMATE, p.train_step, Method.PALM)
    ok, why = fvcore_allowed(cfg, n, b)
    real = rec.at(device="cpu", dtype="float32")  # fvcore's trace runs real float32 weights on the CPU
    if not ok:
        for method in ("fvcore", "fvcore_plain"):
            real.skipped(FORWARD_DENSE, method, why, {"component": Breakdown.TOTAL})
        return
    try:
        fv = fvcore_for(model_fn(), cfg, n, b)
    except Exception as exc:  # noqa: BLE001
        real.failed(
            FORWARD_DENSE,
            Method.FVCORE,
            f"{type(exc).__name__}: {exc}",
            {"component": Breakdown.TOTAL},
            exception_cause(exc),
        )
        return
    real.add(FORWARD_DENSE, fv.total, Method.FVCORE, {"component": Breakdown.TOTAL})
    for comp, v in fv.components.items():
        real.add(FORWARD_DENSE, v, Method.FVCORE, {"component": comp})
    real.add(FORWARD_DENSE, 2 * fv.plain_total, Method.FVCORE_PLAIN, {"component": Breakdown.TOTAL})
    real.add(FVCORE_FORWARD_AS_SHIPPED, fv.plain_total, Method.FVCORE_PLAIN)
    if count is not None:
        fwd_dense = count.value(FORWARD_DENSE)
        real.add(FVCORE_GAP, _gap(fv.total, fwd_dense), Method.DERIVED)
        real.add(PLAIN_MISSED_SHARE, 1 - 2 * fv.plain_total / fwd_dense, Method.DERIVED, {"tool": "fvcore"})


def measure_flops(variant: Variant, study: Study, walks: WalkCache | None = None) -> list[Record]:
    cfg, dtype = variant.config, study.workloads.dtype
    model: list[torch.nn.Module] = []  # real weights, built once, only if fvcore runs somewhere

    def model_fn() -> torch.nn.Module:
        if not model:
            model.append(build_model(cfg, "cpu", "float32"))
        return model[0]

    rec = Recorder(study.name, variant, "flops", device="none", dtype=dtype)  # counted on the fake model
    for seq_len, batch in study.workloads.pairs():
        workload_records(rec.at(seq_len=seq_len, batch=batch), cfg, seq_len, batch, model_fn, walks)
    return rec.records
