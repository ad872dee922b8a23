"""Helpers of scripts/device_run.sh, the one command for the lent GPU machine.

    python3 scripts/device_run.py preflight [--smoke]   versions, imports, CUDA; exit 1 if the run cannot work
    python3 scripts/device_run.py finish OUTDIR        fit OUTDIR to the return limits, print the summary

`finish` uses the standard library only: log.txt is cut to its last LOG_CAP bytes; a file over FILE_CAP is gzipped (`orca-analysis
import` reads results.csv.gz as it is); the limits on what comes back are checked (at most MAX_FILES
files, no folder below OUTDIR, names of letters, digits, '.', '_' and '-'); then a table of rows per
measurement and status, last, since only the tail of the output is shown.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import re
import shutil
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LOG_CAP = 1 << 20  # bytes of log.txt kept (its end)
FILE_CAP = 15 << 20  # a file back from the device may have 16 MiB
MAX_FILES = 8
NAME = re.compile(r"[A-Za-z0-9._-]+")
# What the device's python3 has (besides torch) that orca_analysis needs; the rest is carried in .whl/.
PRESENT = (
    "numpy",
    "pandas",
    "matplotlib",
    "jinja2",
    "pyyaml",
    "tqdm",
    "tokenizers",
    "sympy",
    "tabulate",
    "portalocker",
    "pillow",
    "typing-extensions",
    "packaging",
    "psutil",
    "pyarrow",
)


def preflight(smoke: bool) -> int:
    """One short block: interpreter, torch, CUDA, GPU, package versions, provenance; fails fast."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    import torch

    cuda = torch.cuda.is_available()
    print(f"python {platform.python_version()} ({sys.executable}); torch {torch.__version__}", end="")
    print(f", CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, cuda available: {cuda}")
    if cuda:
        p = torch.cuda.get_device_properties(0)
        memory = f"{p.total_memory / 2**30:.0f} GiB"
        print(f"gpu: {p.name}, {memory}, sm_{p.major}{p.minor}, {p.multi_processor_count} SMs")
    carried = [w.name.split("-")[0] for w in sorted((REPO / ".whl").glob("*.whl"))]
    found = []
    for name in [*carried, *PRESENT]:
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            found.append(f"{name} MISSING")
    print("packages: " + ", ".join(found))
    import orca_analysis.measurements  # every measurement, as the workers import them
    from orca_analysis.results.records import current_provenance

    prov = current_provenance("cuda" if cuda else "cpu")
    print(
        f"orca_analysis {prov.orca_analysis} at {Path(orca_analysis.measurements.__file__).parents[1]}, "
        f"x-transformers {prov.x_transformers}, git {prov.git_commit}, GPU plan: "
        f"{orca_analysis.measurements.gpu_plan()}"
    )
    if not cuda and not smoke:
        print("device_run: CUDA is not available: the full-size run needs the GPU (--smoke runs on a CPU)")
        return 1
    return 0


def _rows(path: Path) -> list[dict[str, str]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", newline="") as fh:
        return list(csv.DictReader(fh))


def _cap_log(log: Path) -> str:
    if not log.exists() or log.stat().st_size <= LOG_CAP:
        return ""
    data = log.read_bytes()
    cut = len(data) - LOG_CAP
    log.write_bytes(f"[device_run: the first {cut} bytes were cut]\n".encode() + data[cut:])
    return f"log.txt cut to its last {LOG_CAP >> 20} MiB"


def _fit(out: Path) -> list[str]:
    """Gzip what is too big; report what would not come back."""
    notes = []
    for f in sorted(p for p in out.iterdir() if p.is_file()):
        if f.stat().st_size > FILE_CAP and f.suffix != ".gz":
            with f.open("rb") as src, gzip.open(f.with_name(f.name + ".gz"), "wb") as dst:
                shutil.copyfileobj(src, dst)
            f.unlink()
            notes.append(f"{f.name} gzipped ({f.name}.gz)")
    files = [p for p in out.rglob("*") if p.is_file()]
    if len(files) > MAX_FILES:
        notes.append(f"WARNING: {len(files)} files in {out}, more than the {MAX_FILES} that come back")
    for p in out.rglob("*"):
        if p.is_dir():
            notes.append(f"WARNING: folder {p.relative_to(out)} in {out}: keep OUTDIR flat")
        elif not NAME.fullmatch(p.name) or p.stat().st_size > FILE_CAP + (1 << 20):
            notes.append(f"WARNING: {p.name} will not come back (name or size)")
    return notes


def summary(out: Path) -> str:
    """Per group its exit; per measurement its rows by status and its commonest errors; the files."""
    lines = []
    run = json.loads((out / "run.json").read_text()) if (out / "run.json").exists() else {}
    for g in run.get("groups", []):
        what = ",".join(g["measurements"])
        exits = [str(launch["exit"]) for launch in g.get("launches", [])]
        seconds = sum(launch["seconds"] for launch in g.get("launches", []))
        lines.append(f"group {g['group']:<10} exits {','.join(exits) or '-':<8} {seconds:>7.1f} s  {what}")
    found = [p for p in (out / "results.csv", out / "results.csv.gz") if p.exists()]
    rows = _rows(found[0]) if found else []
    counts: dict[str, Counter] = {}
    errors: dict[str, Counter] = {}
    for r in rows:
        counts.setdefault(r["measurement"], Counter())[r["status"]] += 1
        if r["status"] != "ok" and r["note"]:
            errors.setdefault(r["measurement"], Counter())[f"{r['status']}: {r['note'][:110]}"] += 1
    lines += ["commonest error and skipped rows:"] if errors else []
    for m, errs in errors.items():
        for text, n in errs.most_common(3):
            lines.append(f"  {m}: {n}x {text}")
    sizes = [f"{p.name} {p.stat().st_size / 2**20:.2f} MiB" for p in sorted(out.iterdir()) if p.is_file()]
    lines.append(f"files in {out}: {', '.join(sizes)}")
    lines.append(f"device: {', '.join(sorted({r['device_name'] for r in rows}))}")
    lines.append(f"{'measurement':<16} {'rows':>6} {'ok':>6} {'error':>6} {'skipped':>7}")
    for m, c in [*counts.items(), ("all", sum(counts.values(), Counter()))]:
        lines.append(f"{m:<16} {c.total():>6} {c['ok']:>6} {c['error']:>6} {c['skipped']:>7}")
    return "\n".join(lines)


def finish(out: Path) -> int:
    if not out.is_dir():
        print(f"device_run: {out} does not exist: the run wrote nothing")
        return 1
    notes = [_cap_log(out / "log.txt"), *_fit(out)]
    for n in filter(None, notes):
        print(f"device_run: {n}")
    print(summary(out))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("preflight").add_argument("--smoke", action="store_true")
    sub.add_parser("finish").add_argument("outdir", type=Path)
    args = p.parse_args(argv)
    return preflight(args.smoke) if args.command == "preflight" else finish(args.outdir)


if __name__ == "__main__":
    sys.exit(main())
