"""The `orca-analysis` command: inspect a variant, run a study, export/import results, render a report."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import OrcaError
from .executors import DEFAULT_TIME_LIMIT_S, EXECUTORS
from .instruments.tiers import TIERS

EXIT_FAILED = 1  # `run`: a measurement failed (stored as an error record; --retry-failed reruns it)
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C
EXIT_TERMINATED = 143  # 128 + SIGTERM
FORMATS = ("csv", "parquet")


class Terminated(KeyboardInterrupt):
    """SIGTERM (a job scheduler, `kill`), raised where Ctrl-C would be: the same clean stop."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """While `run` runs, SIGTERM stops it as Ctrl-C does: what finished is stored, results.csv exported,
    workers stopped. Only in the main thread (where Python delivers signals); the old handler after."""
    try:
        previous, installed = signal.signal(signal.SIGTERM, _terminate), True
    except ValueError:  # not the main thread (e.g. main() called from a thread): leave SIGTERM alone
        previous, installed = None, False
    try:
        yield
    finally:
        if installed:
            signal.signal(signal.SIGTERM, previous)


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
    inspect.add_argument(
        "--only", metavar="NAME,...", help="the measurements to summarise (default: the study's list)"
    )
    inspect.add_argument(
        "--device",
        metavar="NAME",
        help="forecast on this GPU of the device catalogue (e.g. h100, a100, l4): the attention kernel per call",
    )
    inspect.add_argument(
        "--dtype",
        choices=("float32", "bfloat16"),
        default="bfloat16",
        help="compute dtype of the forecast (bfloat16: autocast over float32 weights; default)",
    )
    inspect.add_argument(
        "--devices", metavar="FILE", help="your own device catalogue (YAML), added to the built-in"
    )

    for name, text in (("run", "measure what a study's store lacks"), ("report", "render a study's report")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("study", nargs="?", default="orca", help="built-in study name or YAML path")
        cmd.add_argument(
            "--out", type=Path, default=Path("reports"), help="reports folder (default: reports)"
        )
    _run_options(sub.choices["run"])
    sub.choices["report"].add_argument(
        "--claims",
        type=Path,
        default=None,
        metavar="FILE",
        help="your own claims catalogue (YAML, the schema of orca_analysis/claims/catalogue.yaml)",
    )

    export = sub.add_parser("export", help="write a study's stored results as CSV or Parquet")
    export.add_argument("study", nargs="?", default="orca", help="study name or YAML path (default: orca)")
    export.add_argument("--out", type=Path, default=Path("reports"), help="reports folder (default: reports)")
    export.add_argument(
        "--format", choices=FORMATS, default="csv", help="csv (default) or parquet (needs pyarrow)"
    )
    export.add_argument(
        "--output", "-o", type=Path, help="file to write (default: reports/<study>/results.<format>)"
    )
    export.add_argument(
        "--all", action="store_true", help="every stored record, not only the current study's"
    )

    imp = sub.add_parser("import", help="bring results measured elsewhere (CSV/Parquet) into a study's store")
    imp.add_argument("file", type=Path, help="records' columns with provenance, as `export` writes them")
    imp.add_argument("--study", help="study name or YAML path the results belong to (default: the file's)")
    imp.add_argument("--out", type=Path, default=Path("reports"), help="reports folder (default: reports)")
    return p


def _run_options(run: argparse.ArgumentParser) -> None:
    run.add_argument("--force", action="store_true", help="remeasure what the store already holds")
    run.add_argument("--retry-failed", action="store_true", help="remeasure what failed last time")
    run.add_argument(
        "--executor", choices=EXECUTORS, default="local", help="local (default), isolated or ray"
    )
    run.add_argument("--address", help="Ray cluster address HOST:PORT (default: start a local one)")
    run.add_argument(
        "--time-limit",
        type=float,
        default=DEFAULT_TIME_LIMIT_S,
        metavar="S",
        help=f"seconds an isolated measurement may run (default: {DEFAULT_TIME_LIMIT_S:g})",
    )
    run.add_argument("--verbose", "-v", action="store_true", help="one line per stored measurement")
    run.add_argument(
        "--corpus",
        type=Path,
        default=None,
        metavar="PATH",
        help="text file or folder for the training runs (default: the Python standard library's sources)",
    )
    run.add_argument(
        "--quality",
        choices=TIERS,
        default=None,
        help="standard (default: the quality tests the make report budget powers) or thorough (every test "
        "this machine can: longer runs, five seeds, a learning-rate sweep per width and depth arm)",
    )


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "inspect":
            return _inspect(args)
        if args.command == "run":
            with _sigterm_interrupts():
                return _run(args)
        if args.command == "export":
            return _export(args)
        if args.command == "import":
            return _import(args)
        return _report(args)
    except OrcaError as exc:
        for line in exc.problems:
            print(f"orca-analysis: error: {line}", file=sys.stderr)
        return EXIT_USAGE
    except Terminated:
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _inspect(args: argparse.Namespace) -> int:
    from .inspect import inspect_variant, render_text
    from .study import load_study

    study = load_study(args.study, args.overrides, base_only=True)
    only = [n.strip() for n in args.only.split(",") if n.strip()] if args.only else None
    seq_len = args.seq_len or study.workloads.seq_lens[0]
    batch = args.batch or study.workloads.batch_sizes[0]
    if seq_len < 1 or batch < 1:
        raise OrcaError(f"--seq-len and --batch must be at least 1, got {seq_len} and {batch}")
    if seq_len > study.base.max_seq_len:
        raise OrcaError(f"--seq-len {seq_len} exceeds the model's max_seq_len {study.base.max_seq_len}")
    target = None
    if args.devices and not args.device:
        raise OrcaError("--devices FILE adds devices to forecast on: name one with --device NAME")
    if args.device:
        from .devices import device

        target = device(args.device, args.devices)
    report = inspect_variant(study, seq_len, batch, only, target, args.dtype)
    print(json.dumps(report, indent=2, default=str) if args.json else render_text(report))
    return 0


def _run(args: argparse.Namespace) -> int:
    if args.executor in ("local", "isolated"):
        from .executors.forkserver import start_early

        start_early()  # its imports overlap ours: the first worker is ready seconds sooner
    from .executors import make_executor
    from .runner import run_sweep
    from .study import load_study

    study = load_study(args.study)
    if args.time_limit <= 0:
        raise OrcaError(f"--time-limit must be positive, got {args.time_limit:g}")
    if args.corpus is not None:
        if not args.corpus.exists():
            raise OrcaError(f"corpus not found: {args.corpus} (give a text file or a folder of text files)")
        os.environ["ORCA_CORPUS"] = str(
            args.corpus.resolve()
        )  # read by instruments/corpus.py, workers inherit it
    if args.quality is not None:
        from .instruments.proxy import scale_for_tier

        os.environ["ORCA_QUALITY_SCALE"] = scale_for_tier(args.quality)  # workers inherit it
    executor = make_executor(args.executor, args.address, args.time_limit)
    summary = run_sweep(
        study,
        args.out,
        executor=executor,
        force=args.force,
        retry_failed=args.retry_failed,
        verbose=args.verbose,
    )
    # a failed measurement is stored as such (the report lists it); the command says so by its status
    return EXIT_FAILED if summary.failed or summary.stored_failures else 0


def _study_name(ref: str) -> str:
    """A study's folder name without loading it when a name is given (its YAML may be elsewhere)."""
    if ref.endswith((".yaml", ".yml")) or "/" in ref:
        from .study import load_study

        return load_study(ref).name
    return ref


def _export(args: argparse.Namespace) -> int:
    from .results import export, study_dir

    path = export(study_dir(_study_name(args.study), args.out), args.format, args.output, args.all)
    print(f"exported: {path}")
    return 0


def _import(args: argparse.Namespace) -> int:
    from .results import export
    from .results.importer import import_results

    summary = import_results(args.file, args.out, args.study)
    print(f"imported {summary.records} records ({summary.units} measurements) into {summary.store}")
    if summary.unresolved:
        print(
            f"note: variants not in the study, stored but not reported: {', '.join(summary.unresolved)}",
            file=sys.stderr,
        )
    export(summary.store.parent)  # keep results.csv in step with the store
    return 0


def _stored_study(ref: str, out: Path):  # -> Study
    """A built-in name or a YAML path; else a study name whose store is <out>/<name>: the study file its last
    run read (`report NAME` works where `export NAME` and `load_results(NAME)` do)."""
    from .results.store import STUDY_SOURCE, open_store, study_dir
    from .study import load_study
    from .study.load import StudyError

    try:
        return load_study(ref)
    except StudyError:
        folder = study_dir(ref, out)
        if ref.endswith((".yaml", ".yml")) or "/" in ref or not (folder / "results.sqlite").is_file():
            raise
    with open_store(folder, create=False) as store:
        source = store.meta(STUDY_SOURCE)
    if source is None:
        raise OrcaError(f"{folder}: its runs did not record their study file; give the study's YAML path")
    if source.startswith("builtin:"):
        return load_study(source.removeprefix("builtin:"))
    if not Path(source).is_file():
        raise OrcaError(f"the study file that made {folder} is gone ({source}); give the study's YAML path")
    return load_study(source)


def _report(args: argparse.Namespace) -> int:
    from .report import render_report

    paths = render_report(_stored_study(args.study, args.out), args.out, args.claims)
    for path in paths:
        print(f"report: {path}")
    return 0


def entry() -> None:
    """The console script and `python -m orca_analysis`: main(), then out at once. Everything is stored,
    written and closed by then; what is left, the interpreter freeing torch's modules and objects one by
    one, took 1.2 to 2.3 s of every command on a 2-core machine."""
    code = main()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except OSError:  # a reader that left early (`| head`): what it did not read is not ours to keep
            pass
    logging.shutdown()
    _remove_multiprocessing_tempdir()
    os._exit(code)


def _remove_multiprocessing_tempdir() -> None:
    """The /tmp/pymp-* folder multiprocessing made for the forkserver's socket: its own finalizer would remove
    it at a normal exit, which os._exit skips."""
    import shutil
    from multiprocessing import process

    folder = process.current_process()._config.get("tempdir")
    if folder:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    entry()
