"""The prepared GPU run: the registry's GPU measurements of a study on one GPU, within a time budget.

    scripts/gpu_measure.sh OUTDIR [--study orca] [--budget-s 450] [--smoke] [--only speed,kernels]

The same runner as `orca-analysis run`, with the budgeted launcher (orca_analysis/executors/budgeted.py:
groups, shares, deadlines, relaunches, nothing dropped) and a store of its own; then OUTDIR gets
results.csv (every record, with provenance: what `orca-analysis import` reads), env.json (GPU, driver,
versions, SDPA switches) and run.json (groups, launches, exits, the budget). --smoke: the base variant
at length 32, runnable on a CPU (CI rehearses the GPU path with it); --only names measurements.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from orca_analysis.errors import OrcaError
from orca_analysis.executors.budgeted import BudgetedExecutor
from orca_analysis.instruments.device import measure_device
from orca_analysis.measurements import MEASUREMENTS, gpu_plan
from orca_analysis.results.frame import export
from orca_analysis.results.records import current_provenance
from orca_analysis.runner import run_sweep
from orca_analysis.study import Sweep, Workloads, load_study


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("outdir", type=Path)
    p.add_argument("--study", default="orca")
    p.add_argument("--budget-s", type=float, default=450.0)
    p.add_argument("--smoke", action="store_true", help="the base variant at length 32 (runs on a CPU)")
    p.add_argument("--only", help="comma-separated measurements (default: the registry's GPU plan)")
    return p.parse_args(argv)


def environment(device: str) -> dict:
    """Facts about the machine and libraries the numbers were measured with."""
    import torch

    from orca_analysis.instruments.sdpa import BACKENDS, OP_BACKEND

    facts = {
        **current_provenance(device).as_dict(),
        "device": device,
        "platform": platform.platform(),
        "torch_cuda": torch.version.cuda,
        "cpu_threads": torch.get_num_threads(),
        "sdpa_backends": {k: b.name for k, b in BACKENDS.items()},
        "sdpa_operators": OP_BACKEND,
    }
    if device.startswith("cuda"):
        props, sdp = torch.cuda.get_device_properties(0), torch.backends.cuda
        smi = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        ).stdout.strip()
        facts |= {
            "gpu_name": props.name,
            "gpu_memory_bytes": props.total_memory,
            "gpu_capability": f"{props.major}.{props.minor}",
            "gpu_sm_count": props.multi_processor_count,
            "cudnn": torch.backends.cudnn.version(),
            "driver": smi or "unknown",
            "sdpa_enabled": {
                "flash": sdp.flash_sdp_enabled(),
                "efficient": sdp.mem_efficient_sdp_enabled(),
                "cudnn": sdp.cudnn_sdp_enabled(),
                "math": sdp.math_sdp_enabled(),
            },
        }
    return facts


def main(argv: list[str] | None = None) -> int:
    args, start = _args(argv), time.time()
    try:
        study = load_study(args.study)
        names = args.only.split(",") if args.only else [m for ms in gpu_plan().values() for m in ms]
        unknown = [n for n in names if n not in MEASUREMENTS]
        if unknown:
            raise OrcaError(
                f"unknown measurement(s) {', '.join(unknown)} (available: {', '.join(MEASUREMENTS)})"
            )
        study = dataclasses.replace(study, measurements=names)
        if args.smoke:
            study = dataclasses.replace(
                study,
                sweep=Sweep(study.sweep.mode, {}),
                workloads=Workloads([32], [1], study.workloads.dtype),
            )
    except OrcaError as exc:
        print(f"gpu_measure: error: {'; '.join(exc.problems)}", file=sys.stderr)
        return 2
    args.outdir.mkdir(parents=True, exist_ok=True)
    (args.outdir / "env.json").write_text(json.dumps(environment(measure_device()), indent=2) + "\n")
    executor = BudgetedExecutor(args.budget_s)
    with tempfile.TemporaryDirectory(prefix="orca-gpu-") as root:
        summary = run_sweep(study, Path(root), executor=executor, verbose=True, log=sys.stderr)
        frame_path = export(summary.store.parent, output=args.outdir / "results.csv", everything=True)
    rows = sum(1 for _ in frame_path.open()) - 1
    facts = {
        "argv": sys.argv[1:],
        "smoke": args.smoke,
        "study": study.name,
        "budget_s": args.budget_s,
        "seconds": round(time.time() - start, 1),
        "rows": rows,
        "groups": executor.launches,
    }
    (args.outdir / "run.json").write_text(json.dumps(facts, indent=2) + "\n")
    print(f"[gpu_measure] {rows} rows in {frame_path} after {facts['seconds']} s", file=sys.stderr)
    return 0 if all(launch["exit"] == 0 for g in executor.launches for launch in g["launches"]) else 1


if __name__ == "__main__":
    sys.exit(main())
