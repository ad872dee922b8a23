"""The `orca-analysis` command: inspect one variant, run a study, render its report."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import OrcaError

EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="orca-analysis", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    inspect = sub.add_parser("inspect", help="fidelity entries and parameter breakdown of one variant")
    inspect.add_argument("--study", default="orca", help="built-in study name or YAML path (default: orca)")
    inspect.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a keyword of the base model, e.g. --set depth=12 (repeatable)",
    )
    inspect.add_argument(
        "--seq-len", type=int, default=None, help="sequence length (default: the study's first)"
    )
    inspect.add_argument("--batch", type=int, default=None, help="batch size (default: the study's first)")
    inspect.add_argument("--json", action="store_true", help="print one JSON object")

    for name, text in (("run", "measure every variant of a study"), ("report", "render a study's report")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("study", nargs="?", default="orca", help="built-in study name or YAML path")
        cmd.add_argument(
            "--out", type=Path, default=Path("reports"), help="reports folder (default: reports)"
        )
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "inspect":
            return _inspect(args)
        if args.command == "run":
            return _run(args)
        return _report(args)
    except OrcaError as exc:
        for line in exc.problems:
            print(f"orca-analysis: error: {line}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


def _inspect(args: argparse.Namespace) -> int:
    from .inspect import inspect_variant, render_text
    from .study import load_study

    study = load_study(args.study, args.overrides)
    seq_len = args.seq_len or study.workloads.seq_lens[0]
    batch = args.batch or study.workloads.batch_sizes[0]
    if seq_len < 1 or batch < 1:
        raise OrcaError(f"--seq-len and --batch must be at least 1, got {seq_len} and {batch}")
    if seq_len > study.base.max_seq_len:
        raise OrcaError(f"--seq-len {seq_len} exceeds the model's max_seq_len {study.base.max_seq_len}")
    report = inspect_variant(study, seq_len, batch)
    print(json.dumps(report, indent=2, default=str) if args.json else render_text(report))
    return 0


def _run(args: argparse.Namespace) -> int:
    from .runner import run_study
    from .study import load_study

    run_study(load_study(args.study), args.out)
    return 0


def _report(args: argparse.Namespace) -> int:
    from .report import render_report
    from .study import load_study

    paths = render_report(load_study(args.study), args.out)
    for path in paths:
        print(f"report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
