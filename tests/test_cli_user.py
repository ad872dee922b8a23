"""The command from a user's side: a study reported by its name, results read from a store's path, and no
temporary folder left behind by a run."""

import os
import subprocess
import sys

import pytest

from orca_analysis.catalog.metrics import MetricError
from orca_analysis.cli import main
from orca_analysis.results.query import load_results


def test_report_by_name_and_results_by_path(tiny_study_path, tmp_path, capsys):
    """`report NAME` finds the study file its store's last run read; load_results takes the store's path."""
    out = tmp_path / "reports"
    assert main(["run", str(tiny_study_path), "--out", str(out)]) == 0
    assert main(["report", "tiny", "--out", str(out)]) == 0
    assert (out / "tiny" / "report.md").is_file()
    assert main(["report", "nope", "--out", str(out)]) == 2  # neither built in, a file, nor a store
    assert "no study named 'nope'" in capsys.readouterr().err
    results = load_results(str(out / "tiny" / "results.sqlite"))
    assert results.number("params", variant="base", method="counter", component="total") == 181_120
    with pytest.raises(MetricError, match="no variant 'bse' in these results; did you mean 'base'"):
        results.one("params", variant="bse", method="counter", component="total")


def test_no_multiprocessing_tempdir_is_left_behind(tiny_study_path, tmp_path):
    """`run` leaves through os._exit, which skips multiprocessing's own finalizer: its /tmp/pymp-* folder (the
    forkserver's socket) is removed first."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {**os.environ, "TMPDIR": str(temp)}
    args = ["run", str(tiny_study_path), "--out", str(tmp_path / "r")]
    proc = subprocess.run(
        [sys.executable, "-m", "orca_analysis", *args], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert not list(temp.glob("pymp-*"))
