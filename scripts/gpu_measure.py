"""The prepared GPU run: speed, kernel, attention, memory and (full-scale) quality measurements of a study.

    scripts/gpu_measure.sh OUTDIR [--study orca] [--budget-s 450] [--smoke] [--only speed,kernels]

Writes into OUTDIR:
  results.csv  tidy records, the columns of orca_analysis.results.records.columns(), provenance included
  env.json     GPU name, driver, torch / CUDA / cuDNN / x-transformers versions, SDPA backend switches
  run.json     what ran: groups, their launches (exit codes, seconds), the time budget, what the budget cut
  parts/       one CSV per worker (merged into results.csv), log.txt
The driver (this file without --worker) imports only the standard library; each group of
measurements runs in a fresh worker process so one cannot distort the next: [speed] first,
then [kernels, attention_speed], then [memory], then [probes, training]. Each worker stops starting new work at its
deadline (and sets $ORCA_DEADLINE, epoch seconds, for measurements that run long) and the driver kills it 20 s
later, so the whole run ends within the budget (default 450 s: a loan is 15 minutes, machine start included,
and one device command at most 10).

Nothing planned is dropped: a worker first writes its plan, parts/<group>.plan.csv, one placeholder row per
(measurement, variant), then appends each item's rows to parts/<group>.csv as it finishes. When a worker ends
abnormally the driver records the item it was measuring as an `error` (killed past its deadline, or died with
exit N) and every item it did not reach as `skipped`. An item whose error reads like a lost CUDA context
(LOST_CONTEXT: every later CUDA call of that process would fail too) ends its worker with exit 3. After exit 3
or a death (a segfault, the OOM killer; its item recorded as that error) the driver starts a fresh worker for
the group, which resumes after the items parts/<group>.csv holds, while the group's deadline has not passed,
at most MAX_LAUNCHES launches a group; run.json lists each launch.

A CPU machine can run it with --smoke: the study's base variant only, sequence length 32, all groups in one
worker -- what the tests do; with --smoke, --only may also name measurements outside the groups (params).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, TextIO

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
# A worker is this script; the tests swap in stand-ins.
WORKER = [sys.executable, str(Path(__file__).resolve())]
# Per group: the first worker, and at most two fresh ones after a lost CUDA context or a death.
MAX_LAUNCHES = 3
LOST_CONTEXT_EXIT = 3
# Error text after which a process's CUDA context is unusable: later items of that worker would fail as well.
LOST_CONTEXT = (
    "CUDA error",
    "illegal memory access",
    "device-side assert",
    "CUBLAS_STATUS_EXECUTION_FAILED",
    "cudaErrorLaunchFailure",
)
KILLED = "killed: past its deadline"  # a group's exit in run.json when the driver had to kill its worker
BUDGET_SKIP = "time budget of the GPU run exhausted"
NOT_REACHED = "not reached: the worker ended before it"
PLAN_SUFFIX = ".plan.csv"


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
    p.add_argument("--resume", action="store_true", help=argparse.SUPPRESS)  # internal: keep the part's rows
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    if args.worker:
        return run_worker(args)
    return drive(args)


def group_measurements(group: str, only: str | None) -> list[str]:
    """What the worker of `group` measures; "all" (the --smoke run's one worker) takes every group's
    measurements and any other that --only names, so a test can pick a cheap one."""
    wanted = only.split(",") if only else None
    if group == "all":
        names = [m for ms in GROUPS.values() for m in ms]
        names += [m for m in wanted or [] if m not in names]
    else:
        names = GROUPS[group]
    return [m for m in names if wanted is None or m in wanted]


def drive(args: argparse.Namespace) -> int:
    start = time.time()
    out: Path = args.outdir
    (out / "parts").mkdir(parents=True, exist_ok=True)
    (out / "env.json").unlink(missing_ok=True)  # written afresh by the first worker that gets to it
    groups = {g: group_measurements(g, args.only) for g in (["all"] if args.smoke else GROUPS)}
    groups = {g: ms for g, ms in groups.items() if ms}  # run.json lists what each worker was asked for
    runs = []
    with (out / "log.txt").open("w") as log:
        for name, measurements in groups.items():
            deadline = start + args.budget_s * (1.0 if args.smoke else SHARES[name])
            runs.append({"group": name, "measurements": measurements, **run_group(args, name, deadline, log)})
    parts = [p for p in (out / "parts" / f"{g}.csv" for g in groups) if p.exists()]  # not a stale part
    rows = merge(parts, out / "results.csv")
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
    return 0 if all(launch["exit"] == 0 for r in runs for launch in r["launches"]) else 1


def run_group(args: argparse.Namespace, name: str, deadline: float, log: TextIO) -> dict[str, Any]:
    """Launch the group's worker, a fresh one again after it lost its CUDA context or died, while time is
    left; then give every planned item without a row one. Returns run.json's facts about the group."""
    parts = args.outdir / "parts"
    for stale in (parts / f"{name}.csv", plan_path(parts, name)):  # from an earlier run into this OUTDIR
        stale.unlink(missing_ok=True)
    launches: list[dict[str, Any]] = []
    unfinished = 0
    while True:
        t = time.time()
        rc = _launch(_worker_cmd(args, name, deadline, resume=bool(launches)), deadline, log)
        launches.append({"exit": rc, "seconds": round(time.time() - t, 1)})
        again = (
            rc not in (0, KILLED)
            and plan_path(parts, name).exists()  # a worker that died before its plan would die again
            and len(launches) < MAX_LAUNCHES
            and time.time() < deadline
        )
        unfinished += settle(parts, name, rc, last=not again)
        _note(log, f"{name}: exit {rc} after {launches[-1]['seconds']} s" + (", relaunched" if again else ""))
        if not again:
            break
    plan_path(parts, name).unlink(missing_ok=True)  # its rows are in the part now
    seconds = round(sum(launch["seconds"] for launch in launches), 1)
    return {"exit": rc, "seconds": seconds, "launches": launches, "unfinished": unfinished}


def _worker_cmd(args: argparse.Namespace, name: str, deadline: float, resume: bool) -> list[str]:
    cmd = [*WORKER, str(args.outdir), "--study", args.study, "--worker", name]
    cmd += ["--deadline", f"{deadline:.1f}"]
    cmd += ["--smoke"] if args.smoke else []
    cmd += ["--only", args.only] if args.only else []
    cmd += ["--resume"] if resume else []
    cmd += ["--env"] if not (args.outdir / "env.json").exists() else []  # the first worker records it
    return cmd


def _launch(cmd: list[str], deadline: float, log: TextIO) -> int | str:
    try:
        return subprocess.run(
            cmd,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=max(1.0, deadline - time.time() + GRACE_S),
        ).returncode
    except subprocess.TimeoutExpired:
        return KILLED


def _note(log: TextIO, text: str) -> None:
    print(f"[gpu_measure] {text}", file=sys.stderr, flush=True)
    print(f"[gpu_measure] {text}", file=log, flush=True)  # between the workers' lines, in order


def plan_path(parts: Path, group: str) -> Path:
    return parts / f"{group}{PLAN_SUFFIX}"


def settle(parts: Path, group: str, rc: int | str | None, last: bool) -> int:
    """Append to the group's part a row for each planned item it lacks: an `error` for the item the worker
    was measuring when it was killed or died, and after its last launch `skipped` for the items it did not
    reach. `rc` None: how the worker ended is unknown (no in-flight error). Returns the rows appended."""
    plan = plan_path(parts, group)
    if not plan.exists():
        return 0
    header, planned = read_rows(plan)
    part = parts / f"{group}.csv"
    done = done_items(part)
    missing = [r for r in planned if (r["variant_id"], r["measurement"]) not in done]
    rows = []
    why = _in_flight_error(rc)
    if why and missing:  # the worker measures in plan order: the first missing item was in flight
        rows.append({**missing.pop(0), "status": "error", "error": why})
    if last:
        rows += [{**r, "status": "skipped", "error": NOT_REACHED} for r in missing]
    append_rows(part, header, rows)
    return len(rows)


def _in_flight_error(rc: int | str | None) -> str:
    if rc == KILLED:
        return "worker killed past its deadline while measuring this"
    if rc in (0, LOST_CONTEXT_EXIT, None):  # exit 3: the worker recorded that item's error itself
        return ""
    text = f"exit {rc}"
    if isinstance(rc, int) and -rc in signal.valid_signals():
        text += f", {signal.Signals(-rc).name}"
    return f"worker died ({text}) while measuring this"


def read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        rows = [r for r in reader if None not in r.values()]  # not a line cut off by a kill
        return list(reader.fieldnames or []), rows


def done_items(part: Path) -> set[tuple[str, str]]:
    """The (variant_id, measurement) items a part CSV holds rows of."""
    return {(r["variant_id"], r["measurement"]) for r in read_rows(part)[1]} if part.exists() else set()


def append_rows(path: Path, header: list[str], rows: list[dict[str, Any]]) -> None:
    """Append rows to a part CSV, with the header when the file is new; a line cut off by a kill goes first."""
    _drop_cut_line(path)
    new = not path.exists() or path.stat().st_size == 0
    with path.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=header, extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerows(rows)


def _drop_cut_line(path: Path) -> None:
    """Truncate to the last newline: rows appended after a half-written line would be glued to it."""
    if not path.exists():
        return
    with path.open("rb+") as fh:
        if fh.seek(0, os.SEEK_END) == 0:
            return
        fh.seek(-1, os.SEEK_END)
        if fh.read(1) == b"\n":
            return
        fh.seek(0)
        fh.truncate(fh.read().rfind(b"\n") + 1)


def write_plan(path: Path, header: list[str], rows: list[dict[str, Any]]) -> None:
    tmp = path.with_name(path.name + ".tmp")  # replaced whole: the driver never reads half a plan
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=header, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def merge(parts: list[Path], target: Path) -> int:
    """Concatenate the workers' CSVs (same study, so the same columns) into one file; plans are not parts."""
    header: list[str] | None = None
    rows: list[dict[str, str]] = []
    for part in (p for p in parts if not p.name.endswith(PLAN_SUFFIX)):
        names, found = read_rows(part)
        header = header or names
        rows += found
    with target.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=header or [], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


def lost_cuda_context(exc: BaseException) -> bool:
    text = f"{type(exc).__name__}: {exc}"
    return any(s in text for s in LOST_CONTEXT)


def run_worker(args: argparse.Namespace) -> int:
    """One group of measurements in this (fresh) process: its plan first, then each item's rows as it
    finishes. Exit 3 after an item lost the CUDA context, for the driver to start a fresh worker."""
    import dataclasses
    import gc

    import torch

    from orca_analysis.measure import MEASUREMENTS
    from orca_analysis.measure._timing import measure_device
    from orca_analysis.results.records import Record, columns, current_provenance, to_row
    from orca_analysis.study import load_study
    from orca_analysis.study.schema import Variant, Workloads

    study = load_study(args.study)
    variants = study.variants()
    if args.smoke:
        study = dataclasses.replace(study, workloads=Workloads([32], [1], study.workloads.dtype))
        variants = variants[:1]
    device = measure_device()
    names = group_measurements(args.worker, args.only)
    for name in (n for n in names if n not in MEASUREMENTS):
        print(f"[worker {args.worker}] {name}: not available in this checkout, skipped", flush=True)
    items = [(name, v) for name in names if name in MEASUREMENTS for v in variants]
    provenance = current_provenance(device)
    header = columns(list(variants[0].swept))

    def outcome(name: str, variant: Variant, status: str, error: str) -> dict[str, Any]:
        record = Record(study.name, variant.variant_id, name, "", "", None, "", device=device,
                        status=status, error=error, swept=variant.swept)  # fmt: skip
        return to_row(record, provenance)

    def measure(name: str, variant: Variant) -> tuple[list[dict[str, Any]], bool]:
        """The item's rows, and whether it lost the CUDA context."""
        if time.time() > args.deadline:
            return [outcome(name, variant, "skipped", BUDGET_SKIP)], False
        try:
            records = MEASUREMENTS[name].fn(variant, study)
        except Exception as exc:  # noqa: BLE001  (a failed measurement is a result)
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            return [outcome(name, variant, "error", f"{type(exc).__name__}: {text}")], lost_cuda_context(exc)
        # Every item leaves a row: the driver takes an item without one for unfinished.
        empty = [outcome(name, variant, "skipped", "the measurement returned no records")]
        return [to_row(r, provenance) for r in records] or empty, False

    parts = args.outdir / "parts"
    plan = [outcome(n, v, "skipped", NOT_REACHED) for n, v in items]
    write_plan(plan_path(parts, args.worker), header, plan)
    part = parts / f"{args.worker}.csv"
    if not args.resume:
        part.unlink(missing_ok=True)
    done = done_items(part)
    if args.env:
        (args.outdir / "env.json").write_text(json.dumps(environment(device), indent=2) + "\n")
    os.environ["ORCA_DEADLINE"] = f"{args.deadline:.1f}"  # long measurements (training) stop starting work
    for name, variant in items:
        if (variant.variant_id, name) in done:  # measured by an earlier worker of this group
            continue
        t = time.time()
        rows, lost = measure(name, variant)
        append_rows(part, header, rows)
        print(f"[worker {args.worker}] {variant.variant_id} {name}: {len(rows)} records, {time.time() - t:.1f} s",
              flush=True)  # fmt: skip
        if lost:
            print(f"[worker {args.worker}] lost the CUDA context: exit {LOST_CONTEXT_EXIT}", flush=True)
            return LOST_CONTEXT_EXIT
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
    code = main()
    if code == LOST_CONTEXT_EXIT:  # skip the interpreter's teardown: with a lost CUDA context it can abort
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
