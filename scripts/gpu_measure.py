"""The prepared GPU run: speed, kernel, attention, memory and (full-scale) quality measurements of a study.

    scripts/gpu_measure.sh OUTDIR [--study orca] [--budget-s 450] [--smoke] [--only speed,kernels]

Writes into OUTDIR:
  results.csv  tidy records, the columns of orca_analysis.results.records.columns(), provenance included
  env.json     GPU name, driver, torch / CUDA / cuDNN / x-transformers versions, SDPA backend switches
  run.json     what ran: groups, exit codes, seconds, the time budget, what the budget cut
  parts/       one CSV per worker (merged into results.csv), log.txt
The driver (this file without --worker) imports only the standard library; each group of
measurements runs in a fresh worker process so one cannot distort the next: [speed] first,
then [kernels, attention_speed], then [memory], then [probes, training]. Each worker stops starting new work at its
deadline and the driver kills it 20 s later, so the whole run ends within the budget (default
450 s, inside the 8 minutes the GPU is lent for). A CPU machine can run it with --smoke: the
study's base variant only, sequence length 32, all groups in one worker -- what the test does.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GROUPS = {
    "speed": ["speed"],
    "attention": ["kernels", "attention_speed"],
    "memory": ["memory"],
    # last: full-scale training runs (QualityScale is `gpu` when CUDA is present); the budget cuts what does not fit
    "quality": ["probes", "training"],
}
SHARES = {
    "speed": 0.40,
    "attention": 0.55,
    "memory": 0.70,
    "quality": 1.0,
}  # cumulative share of the budget at each deadline
GRACE_S = 20


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("outdir", type=Path)
    p.add_argument("--study", default="orca")
    p.add_argument("--budget-s", type=float, default=450.0)
    p.add_argument("--smoke", action="store_true", help="tiny shapes, base variant only (runs on a CPU)")
    p.add_argument("--only", help="comma-separated measurements to run (default: all of the groups)")
    p.add_argument("--worker", help=argparse.SUPPRESS)  # internal: a group name, or "all"
    p.add_argument("--deadline", type=float, help=argparse.SUPPRESS)  # internal: epoch seconds
    p.add_argument("--env", action="store_true", help=argparse.SUPPRESS)  # internal: write env.json
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    if args.worker:
        return run_worker(args)
    return drive(args)


def drive(args: argparse.Namespace) -> int:
    start = time.time()
    out: Path = args.outdir
    (out / "parts").mkdir(parents=True, exist_ok=True)
    wanted = set(args.only.split(",")) if args.only else None
    groups = {"all": [m for ms in GROUPS.values() for m in ms]} if args.smoke else dict(GROUPS)
    groups = {g: [m for m in ms if wanted is None or m in wanted] for g, ms in groups.items()}
    groups = {g: ms for g, ms in groups.items() if ms}  # run.json lists what each worker was asked for
    runs = []
    with (out / "log.txt").open("w") as log:
        for name in groups:
            deadline = start + args.budget_s * (1.0 if args.smoke else SHARES[name])
            cmd = [
                sys.executable,
                str(Path(__file__).resolve()),
                str(out),
                "--study",
                args.study,
                "--worker",
                name,
                "--deadline",
                f"{deadline:.1f}",
            ] + (["--smoke"] if args.smoke else [])
            cmd += ["--only", args.only] if args.only else []
            cmd += ["--env"] if not runs else []  # the first worker records the environment
            t = time.time()
            try:
                rc = subprocess.run(
                    cmd,
                    cwd=REPO,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    timeout=max(1.0, deadline - t + GRACE_S),
                ).returncode
            except subprocess.TimeoutExpired:
                rc = "killed: past its deadline"
            runs.append(
                {
                    "group": name,
                    "measurements": groups[name],
                    "exit": rc,
                    "seconds": round(time.time() - t, 1),
                }
            )
            print(
                f"[gpu_measure] {name}: exit {rc} after {runs[-1]['seconds']} s", file=sys.stderr, flush=True
            )
    rows = merge(sorted((out / "parts").glob("*.csv")), out / "results.csv")
    summary = {
        "argv": sys.argv[1:],
        "smoke": args.smoke,
        "study": args.study,
        "budget_s": args.budget_s,
        "seconds": round(time.time() - start, 1),
        "rows": rows,
        "groups": runs,
    }
    (out / "run.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"[gpu_measure] {rows} rows in {out / 'results.csv'} after {summary['seconds']} s", file=sys.stderr)
    return 0 if all(r["exit"] == 0 for r in runs) else 1


def merge(parts: list[Path], target: Path) -> int:
    """Concatenate the workers' CSVs (same study, so the same columns) into one file."""
    header: list[str] | None = None
    rows: list[dict[str, str]] = []
    for part in parts:
        with part.open(newline="") as fh:
            reader = csv.DictReader(fh)
            header = header or list(reader.fieldnames or [])
            rows += [r for r in reader if None not in r.values()]  # not a line cut off by a kill
    with target.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=header or [], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


def run_worker(args: argparse.Namespace) -> int:
    """One group of measurements in this (fresh) process; rows are flushed as each finishes."""
    import dataclasses
    import gc

    import torch

    from orca_analysis.measure import MEASUREMENTS
    from orca_analysis.measure._timing import measure_device
    from orca_analysis.results.records import Record, columns, current_provenance, to_row
    from orca_analysis.study import load_study
    from orca_analysis.study.schema import Workloads

    study = load_study(args.study)
    variants = study.variants()
    if args.smoke:
        study = dataclasses.replace(study, workloads=Workloads([32], [1], study.workloads.dtype))
        variants = variants[:1]
    device = measure_device()
    names = [m for ms in GROUPS.values() for m in ms] if args.worker == "all" else GROUPS[args.worker]
    names = [n for n in names if not args.only or n in args.only.split(",")]
    if args.env:
        (args.outdir / "env.json").write_text(json.dumps(environment(device), indent=2) + "\n")
    provenance = current_provenance(device)
    path = args.outdir / "parts" / f"{args.worker}.csv"
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns(list(variants[0].swept)), extrasaction="ignore")
        writer.writeheader()
        for name in names:
            if name not in MEASUREMENTS:
                print(f"[worker {args.worker}] {name}: not available in this checkout, skipped", flush=True)
                continue
            for variant in variants:
                t = time.time()

                def outcome(status: str, error: str, variant=variant, name=name) -> list[Record]:
                    return [Record(study.name, variant.variant_id, name, "", "", None, "", device=device,
                                   status=status, error=error, swept=variant.swept)]  # fmt: skip

                if t > args.deadline:
                    records = outcome("skipped", "time budget of the GPU run exhausted")
                else:
                    try:
                        records = MEASUREMENTS[name].fn(variant, study)
                    except Exception as exc:  # noqa: BLE001  (a failed measurement is a result)
                        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                        records = outcome("error", f"{type(exc).__name__}: {text}")
                writer.writerows(to_row(r, provenance) for r in records)
                fh.flush()
                print(
                    f"[worker {args.worker}] {variant.variant_id} {name}: {len(records)} records, "
                    f"{time.time() - t:.1f} s",
                    flush=True,
                )
                gc.collect()
                if device.startswith("cuda"):
                    torch.cuda.empty_cache()
    return 0


def environment(device: str) -> dict:
    """Facts about the machine and libraries the numbers were measured with."""
    import platform

    import torch

    from orca_analysis.measure.kernels import BACKENDS, OP_BACKEND
    from orca_analysis.results.records import current_provenance

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
        props = torch.cuda.get_device_properties(0)
        facts |= {
            "gpu_name": props.name,
            "gpu_memory_bytes": props.total_memory,
            "gpu_capability": f"{props.major}.{props.minor}",
            "gpu_sm_count": props.multi_processor_count,
            "cudnn": torch.backends.cudnn.version(),
            "driver": _driver(),
            "sdpa_enabled": {
                "flash": torch.backends.cuda.flash_sdp_enabled(),
                "efficient": torch.backends.cuda.mem_efficient_sdp_enabled(),
                "cudnn": torch.backends.cuda.cudnn_sdp_enabled(),
                "math": torch.backends.cuda.math_sdp_enabled(),
            },
        }
    return facts


def _driver() -> str:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        return out.stdout.strip().splitlines()[0] if out.stdout.strip() else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
