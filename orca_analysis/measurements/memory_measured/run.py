"""Memory measured with real tensors: the check of the simulation, apart from the analytic `memory`.

On a CPU: the training step and the prefill at a small workload (cpu_workload: 64 tokens, batch 1,
for variants up to CPU_PARAMS parameters; the others are recorded as skipped, with why), under the
same tracker on real tensors, beside the simulation of that same workload (recorded here: `memory`
simulates the study's lengths, this the check's). On CUDA: torch.cuda.max_memory_allocated/reserved
around the same steps (reset between) at the study's lengths; the simulation it is compared with is
`memory`'s, recomputed here (deterministic, the same bytes) for the error only, not stored again.
Isolated from everything else: real runs allocate.
"""

from __future__ import annotations

import torch

from ...catalog.declared.memory import PEAK, PEAK_TRAIN, RESERVED, TOTAL
from ...catalog.vocabulary import Method, Scale
from ...formulas import memory as fm
from ...instruments.analytic import analytic_memory
from ...instruments.device import measure_device
from ...instruments.kept_walks import WalkCache
from ...instruments.memtrack import cause_of, run_steps
from ...results import Record
from ...study.schema import ModelConfig, Study, Variant
from ..memory.run import _gap, _peak, _rel
from ..recorder import Recorder

CPU_BUDGET = 1 << 30  # bytes a real CPU run may take on a shared machine
CPU_PARAMS = 40_000_000  # above this the real AdamW step alone takes seconds on 2 cores


def cpu_workload(cfg: ModelConfig, study: Study) -> tuple[int, int] | str:
    """Real CPU run: n = min(64, shortest study length), halved until the predicted peak fits CPU_BUDGET."""
    if (params := fm.dims(cfg, 1, 1).params) > CPU_PARAMS:
        return f"skipped on CPU: {params / 1e6:.0f}M parameters > {CPU_PARAMS / 1e6:.0f}M (AdamW time budget)"
    n = min(64, *study.workloads.seq_lens)
    while n >= 8 and fm.train_peak(cfg, n, 1, fm.DTYPE_PRECISION[study.workloads.dtype]).total > CPU_BUDGET:
        n //= 2
    return (n, 1) if n >= 8 else f"skipped on CPU: predicted peak above {CPU_BUDGET >> 20} MiB at 8 tokens"


def _measured_cpu(rec: Recorder, sim_rec: Recorder, cfg: ModelConfig, study: Study) -> None:
    wl = cpu_workload(cfg, study)
    if isinstance(wl, str):
        rec.skipped(PEAK_TRAIN, Method.MEASURED, wl, TOTAL)
        return
    (n, b), dtype = wl, study.workloads.dtype
    sims = run_steps(cfg, dtype, {wl: ("train", "prefill")})[wl]  # small: the full walk
    res = run_steps(cfg, dtype, {wl: ("train", "prefill")}, device="cpu")[wl]
    at, sim_at = rec.at(seq_len=n, batch=b), sim_rec.at(seq_len=n, batch=b)
    for step in ("train", "prefill"):
        meas, sim = res[step], sims[step]
        if isinstance(meas, str) or isinstance(sim, str):  # the device cannot run the step (run_steps)
            why = meas if isinstance(meas, str) else sim
            at.failed(PEAK[step], Method.MEASURED, why, TOTAL, cause_of(why))
            continue
        _peak(sim_at, PEAK[step], Method.SIMULATED, sim)
        _peak(at, PEAK[step], Method.MEASURED, meas)
        _rel(at, PEAK[step], "simulated_vs_measured", sim.total, meas.total, _gap(sim, meas))
        for ph in sorted(set(sim.phases) & set(meas.phases)):  # each phase too, so small shapes still check
            _rel(at, PEAK[step], "simulated_vs_measured", sim.phases[ph], meas.phases[ph], phase=ph)


def _measured_cuda(rec: Recorder, cfg: ModelConfig, study: Study, walks: WalkCache) -> None:
    capacity, runnable, dtype = torch.cuda.get_device_properties(0).total_memory, {}, study.workloads.dtype
    for n, b in study.workloads.pairs():
        predicted = fm.train_peak(cfg, n, b, fm.DTYPE_PRECISION[dtype]).total
        if predicted > 0.9 * capacity:  # marked from the prediction, never tried
            why = f"predicted {predicted / 1e9:.1f} GB > 90% of the device's {capacity / 1e9:.1f} GB"
            rec.at(seq_len=n, batch=b).skipped(PEAK_TRAIN, Method.MEASURED, why, TOTAL)
        else:
            runnable[(n, b)] = ("train", "prefill")
    if not runnable:
        return
    sims, _ = analytic_memory(cfg, dtype, runnable, walks)
    for (n, b), res in run_steps(cfg, dtype, runnable, device="cuda").items():
        at = rec.at(seq_len=n, batch=b)
        for step in ("train", "prefill"):
            if isinstance(res[step], str):
                at.failed(PEAK[step], Method.MEASURED, res[step], TOTAL, cause_of(res[step]))
                continue
            alloc = res[step].extra["allocated"]
            at.add(PEAK[step], alloc, Method.MEASURED, TOTAL)
            at.add(RESERVED[step], res[step].extra["reserved"], Method.MEASURED)
            _rel(
                at,
                PEAK[step],
                "simulated_vs_measured_cuda",
                sims[(n, b)][step].total,
                alloc,
                "kernel workspaces (the simulation dispatches CPU kernels)",
            )


def measure_memory_measured(variant: Variant, study: Study, walks: WalkCache | None = None) -> list[Record]:
    # On a GPU machine only the GPU is measured: the CPU check of the simulator is the CPU machine's,
    # and its rows would carry the GPU's name in their provenance. Each is its own result.
    device = "cuda" if measure_device().startswith("cuda") else "cpu"
    sim = Recorder(
        study.name,
        variant,
        "memory_measured",
        dtype=study.workloads.dtype,
        device="cpu",
        scale=Scale.ANALYTIC,
    )
    real = sim.at(device=device, scale=Scale.MEASURED)
    try:
        if device == "cuda":
            _measured_cuda(real, variant.config, study, walks)
        else:
            _measured_cpu(real, sim, variant.config, study)
    except (RuntimeError, torch.OutOfMemoryError) as exc:  # a real run failing is a result
        real.failed(PEAK_TRAIN, Method.MEASURED, str(exc).strip().splitlines()[0][:200], TOTAL)
    return sim.records
