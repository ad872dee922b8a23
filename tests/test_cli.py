"""The command as a user runs it: exit codes, one-line errors, JSON shape, run -> report."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from orca_analysis.cli import main
from orca_analysis.results.query import load_results


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "orca_analysis", *args], capture_output=True, text=True, cwd=cwd
    )


def test_inspect_json_on_default_study(capsys):
    assert main(["inspect", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) >= {"variant", "fidelity", "params"}
    assert set(out["params"]) >= {"total", "embedding", "attention", "feedforward", "norm", "logits"}
    assert out["params"]["total"] == out["params"]["library_total"] == out["params"]["closed_form"]["total"]
    assert {"flag", "value", "status", "how"} <= set(out["fidelity"][0])
    assert {e["flag"]: e["status"] for e in out["fidelity"]}["deepnorm"] == "realised"


def test_inspect_text_table(capsys):
    assert main(["inspect", "--set", "depth=2"]) == 0
    text = capsys.readouterr().out
    assert "closed form matches counter: yes" in text and "realised" in text


B55_GQA = [
    "dim=8192",
    "depth=80",
    "heads=64",
    "attn_dim_head=128",
    "attn_kv_heads=8",
    "attn_one_kv_head=false",
    "alibi_num_heads=32",
]


def test_inspect_a_grouped_query_55b_variant_of_the_default_study(capsys):
    # kv heads 8 would not divide the sweep's heads=4 variant: only the inspected variant is validated
    assert main(["inspect", *(a for s in B55_GQA for a in ("--set", s)), "--only", "params", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"variant", "built", "fidelity", "params"}  # --only: nothing else is computed
    # per layer: q and out 2 * 8192 * 8192 = 134,217,728; k, v 2 * 8192 * (8 * 128) = 16,777,216;
    # feed-forward 2 * 8192 * 32768 + 32768 + 8192 = 536,911,872; two norms 2 * 8192 = 16,384:
    # 687,923,200 * 80 = 55,033,856,000, + embedding and logits 2 * 20000 * 8192 = 327,680,000
    assert out["params"]["total"] == out["params"]["closed_form"]["total"] == 55_361_536_000
    assert out["params"]["counted"] == "per block: walked at depths 1 and 2, checked at 3, extrapolated to 80"


def test_inspect_only_names_known_measurements():
    proc = cli("inspect", "--only", "params,flopz")
    assert proc.returncode == 2 and "unknown measurement(s) flopz" in proc.stderr


def test_bad_input_is_one_line_exit_2_no_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "base: {num_tokens: 10, max_seq_len: 8, attn_layers: {dim: 8, depth: 0}}\n"
        "workloads: {seq_lens: [8], batch_sizes: [1]}\n"
    )
    for args in (
        ["inspect", "--study", str(bad)],
        ["run", str(tmp_path / "missing.yaml")],
        ["inspect", "--set", "heads=3"],
        ["inspect", "--seq-len", "9000"],
    ):
        proc = cli(*args)
        assert proc.returncode == 2, args
        assert "Traceback" not in proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert lines and all(line.startswith("orca-analysis: error: ") for line in lines), proc.stderr


def test_run_then_report_end_to_end(tiny_study_path, tmp_path):
    out = tmp_path / "reports"
    assert main(["run", str(tiny_study_path), "--out", str(out)]) == 0
    results = pd.read_csv(out / "tiny" / "results.csv")
    required = {
        "study",
        "variant_id",
        "dim",
        "depth",
        "heads",
        "seq_len",
        "batch",
        "dtype",
        "device",
        "measurement",
        "metric",
        "method",
        "value",
        "unit",
        "status",
        "note",
        "labels",
        "scale",
        "torch",
        "x_transformers",
        "device_name",
        "date",
        "git_commit",
    }
    assert required <= set(results.columns)
    # base + dim=32 + depth=1 + depth=3 = 4 variants
    assert sorted(results["variant_id"].unique()) == ["base", "depth=1", "depth=3", "dim=32"]
    base = results[(results.variant_id == "base") & (results.metric == "params")]
    total = base[base["labels"] == '{"component":"total"}']
    assert (
        set(total["method"]) == {"counter", "closed_form", "library_count"} and total["value"].nunique() == 1
    )
    assert main(["report", str(tiny_study_path), "--out", str(out)]) == 0
    html = (out / "tiny" / "report.html").read_text()
    md = (out / "tiny" / "report.md").read_text()
    assert "<svg" in html and "realised" in html
    for link in [line.split("](")[1].rstrip(")") for line in md.splitlines() if line.startswith("![")]:
        assert (out / "tiny" / link).is_file(), link


def test_report_escapes_hostile_study_text(write_study, tiny_study_path, tmp_path):
    text = tiny_study_path.read_text().replace(
        "description: tiny Orca-like study", 'description: "<script>alert(1)</script> | x"'
    )
    path = write_study(text, "hostile.yaml")
    out = tmp_path / "r"
    assert main(["run", str(path), "--out", str(out)]) == 0
    assert main(["report", str(path), "--out", str(out)]) == 0
    assert "<script>alert" not in (out / "tiny" / "report.html").read_text()
    assert "<script>alert" not in (out / "tiny" / "report.md").read_text()


def test_report_without_results_says_run_first(tiny_study_path, tmp_path, capsys):
    assert main(["report", str(tiny_study_path), "--out", str(tmp_path)]) == 2
    assert "run `orca-analysis run` first" in capsys.readouterr().err


def test_failed_variant_is_recorded_and_the_sweep_goes_on(write_study, tiny_study_path, tmp_path, capsys):
    # flash attention with T5 relative bias is refused by x-transformers for every variant
    text = tiny_study_path.read_text().replace(
        "    alibi_pos_bias: true\n    alibi_num_heads: 2\n", "    rel_pos_bias: true\n"
    )
    path = write_study(text)
    out = tmp_path / "r"
    # every call ran and was stored; the command says by its status that measurements failed
    assert main(["run", str(path), "--out", str(out)]) == 1
    results = pd.read_csv(out / "tiny" / "results.csv")
    assert (results["status"] == "error").sum() == 4
    assert results["note"].str.contains("refused the config").all()
    assert (
        load_results("tiny", out).frame().empty
    )  # calls that measured nothing: records(status="error") has them
    assert (
        "4 failed; 0 (variant, measurement, workload) items reused from the store (--retry-failed reruns the failed ones)"
        in capsys.readouterr().err
    )
    # a re-run measures nothing new, still fails, and names the flag that reruns the failures
    assert main(["run", str(path), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert (
        "nothing new to measure" in err
        and "4 measurements that failed before are not rerun (--retry-failed" in err
    )
    assert main(["run", str(path), "--out", str(out), "--retry-failed"]) == 1  # refused again: 4 failed
    assert "0 of 4 measurements ok, 4 failed" in capsys.readouterr().err
    # the report leads with them, and the command that reruns them
    assert main(["report", str(path), "--out", str(out)]) == 0
    md = (out / "tiny" / "report.md").read_text()
    assert "**Failed measurements:** 4 (" in md and f"`orca-analysis run {path} --retry-failed`" in md
    assert (
        "no `params` results to show: 4 of its records failed (first: " in md
    )  # not "add params to the study"


def test_run_keeps_a_store_and_a_rerun_measures_nothing(tiny_study_path, tmp_path, capsys):
    out = tmp_path / "reports"
    assert main(["run", str(tiny_study_path), "--out", str(out)]) == 0
    assert "4 of 4 measurements ok" in capsys.readouterr().err
    assert main(["run", str(tiny_study_path), "--out", str(out)]) == 0
    assert (
        "nothing new to measure: all 8 (variant, measurement, workload) items are stored"
        in capsys.readouterr().err
    )
    assert main(["run", str(tiny_study_path), "--out", str(out), "--force"]) == 0
    assert "4 of 4 measurements ok" in capsys.readouterr().err
    db = sqlite3.connect(out / "tiny" / "results.sqlite")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert db.execute("SELECT count(*) FROM units").fetchone()[0] == 4  # the forced run replaced them


def test_export_then_import_elsewhere_keeps_results_and_provenance(tiny_study_path, tmp_path, capsys):
    here, there = tmp_path / "here", tmp_path / "there"
    assert main(["run", str(tiny_study_path), "--out", str(here)]) == 0
    assert main(["export", str(tiny_study_path), "--out", str(here), "-o", str(tmp_path / "x.csv")]) == 0
    exported = pd.read_csv(tmp_path / "x.csv")
    # a file written by another machine's script in the records' columns has no store keys
    exported.drop(columns=["variant_key", "env_id"]).to_csv(tmp_path / "gpu.csv", index=False)
    assert (
        main(["import", str(tmp_path / "gpu.csv"), "--study", str(tiny_study_path), "--out", str(there)]) == 0
    )
    # 4 variants x 17 params records: counter 7 components, closed form 6, library count, 3 derivations
    assert "imported 68 records (4 measurements)" in capsys.readouterr().out
    imported = pd.read_csv(there / "tiny" / "results.csv")
    pd.testing.assert_frame_equal(imported, exported)  # same values, same provenance, same keys
    # the import answers the study in this environment: a run there measures nothing
    assert main(["run", str(tiny_study_path), "--out", str(there)]) == 0
    assert "nothing new to measure" in capsys.readouterr().err
    pytest.importorskip("pyarrow", reason="parquet export needs the optional pyarrow")
    assert main(["export", "tiny", "--out", str(here), "--format", "parquet"]) == 0
    parquet = pd.read_parquet(here / "tiny" / "results.parquet")
    assert parquet["value"].tolist() == exported["value"].tolist()


def test_store_import_and_ray_errors_are_one_line_exit_2(tiny_study_path, tmp_path, capsys):
    (tmp_path / "cols.csv").write_text("a,b\n1,2\n")
    (tmp_path / "binary.csv").write_bytes(bytes(range(256)) * 4)
    corrupt = tmp_path / "reports" / "tiny"
    corrupt.mkdir(parents=True)
    (corrupt / "results.sqlite").write_bytes(b"not a database " * 100)
    cases = {
        ("import", str(tmp_path / "missing.csv")): "import file not found",
        ("import", str(tmp_path / "cols.csv")): "missing study, variant_id",
        ("import", str(tmp_path / "binary.csv")): "not a readable results file",
        ("export", "tiny", "--out", str(tmp_path)): "no results store at",
        ("export", "tiny", "--out", str(tmp_path / "reports")): "not a readable results store",
        ("run", str(tiny_study_path), "--out", str(tmp_path / "reports")): "not a readable results store",
        ("run", str(tiny_study_path), "--executor", "ray", "--address", "127.0.0.1:9"): "Ray",
    }
    for args, message in cases.items():
        assert main(list(args)) == 2, args
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("orca-analysis: error: ") and message in lines[0], (
            lines
        )


def test_bad_rows_name_their_line(tiny_study_path, tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["run", str(tiny_study_path), "--out", str(out)]) == 0
    rows = pd.read_csv(out / "tiny" / "results.csv")
    rows.loc[2, "status"] = "fine"
    rows.to_csv(tmp_path / "bad.csv", index=False)
    capsys.readouterr()
    assert main(["import", str(tmp_path / "bad.csv"), "--out", str(out)]) == 2
    assert "bad.csv line 4: status 'fine' is not one of ok, error, skipped" in capsys.readouterr().err


def _grid_run(tiny_study_path, write_study, tmp_path):
    """`run` of a 12-variant grid in isolated workers, as a subprocess: (process, out folder, study)."""
    grid = tiny_study_path.read_text().replace("mode: one_at_a_time", "mode: grid")
    path = write_study(grid.replace("depth: [1, 2, 3]", "depth: [1, 2, 3]\n    heads: [2, 4]"))  # 12 variants
    out = tmp_path / "r"
    args = ["run", str(path), "--out", str(out), "--executor", "isolated", "--verbose"]
    # a shell's background job (`cmd &`) inherits SIGINT ignored, and Python then keeps ignoring it, as `nohup`
    # users want: the child gets the default disposition back, as a terminal would give it
    proc = subprocess.Popen(
        [sys.executable, "-m", "orca_analysis", *args],
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    return proc, out, path


def test_ctrl_c_stops_a_real_run_and_the_next_one_resumes(tiny_study_path, write_study, tmp_path, capsys):
    proc, out, path = _grid_run(tiny_study_path, write_study, tmp_path)
    first = proc.stderr.readline()  # printed once the first measurement is stored
    proc.send_signal(signal.SIGINT)
    rest = proc.communicate(timeout=60)[1]
    assert first.startswith("[1/12] ") and proc.returncode == 130, first + rest
    assert "interrupted:" in rest and "Traceback" not in rest
    db = sqlite3.connect(out / "tiny" / "results.sqlite")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    stored = db.execute("SELECT count(*) FROM units").fetchone()[0]
    db.close()
    assert 1 <= stored < 12
    assert main(["run", str(path), "--out", str(out)]) == 0
    assert f"{12 - stored} of {12 - stored} measurements ok" in capsys.readouterr().err


def _descendants(pid: int) -> set[int]:
    """Live processes below `pid` (its forkserver and workers), from /proc."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended meanwhile
            continue
        if fields[0] != "Z":
            parents[int(stat.parent.name)] = int(fields[1])
    found, todo = set(), [pid]
    while todo:
        above = todo.pop()
        below = {child for child, parent in parents.items() if parent == above}
        todo += below - found
        found |= below
    return found


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        alive |= {pid} if state != "Z" else set()  # a zombie has stopped, only not been reaped
    return alive


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the workers through /proc")
def test_sigterm_stops_a_run_as_ctrl_c_does(tiny_study_path, write_study, tmp_path):
    proc, out, path = _grid_run(tiny_study_path, write_study, tmp_path)
    first = proc.stderr.readline()  # printed once the first measurement is stored
    workers = _descendants(proc.pid)  # the forkserver, and the worker of the next measurement
    proc.send_signal(signal.SIGTERM)  # what `kill` and a job scheduler send
    rest = proc.communicate(timeout=60)[1]
    assert first.startswith("[1/12] ") and proc.returncode == 143, first + rest
    assert "interrupted: " in rest and "run again to resume" in rest and "Traceback" not in rest
    db = sqlite3.connect(out / "tiny" / "results.sqlite")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    stored = db.execute("SELECT variant_id, status FROM units").fetchall()
    db.close()
    assert 1 <= len(stored) < 12 and {status for _, status in stored} == {"ok"}
    results = pd.read_csv(out / "tiny" / "results.csv")  # exported on the way out
    assert set(results["variant_id"]) == {variant for variant, _ in stored}
    assert workers  # none keeps running after the parent is gone
    deadline = time.monotonic() + 10
    while _alive(workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(workers)


def test_missing_corpus_and_claims_are_one_line_errors(tiny_study_path, tmp_path, capsys):
    assert (
        main(["run", str(tiny_study_path), "--out", str(tmp_path), "--corpus", str(tmp_path / "none")]) == 2
    )
    assert "corpus not found" in capsys.readouterr().err
    assert main(["run", str(tiny_study_path), "--out", str(tmp_path)]) == 0
    assert (
        main(["report", str(tiny_study_path), "--out", str(tmp_path), "--claims", str(tmp_path / "c.yaml")])
        == 2
    )
    assert "claims catalogue not found" in capsys.readouterr().err


def test_report_with_a_users_catalogue_escapes_its_text(tiny_study_path, tmp_path):
    catalogue = tmp_path / "claims.yaml"
    catalogue.write_text(
        "claims:\n  - {id: mine, subject: dim, kind: cost, claim: '<img src=x onerror=alert(1)> params grow',\n"
        "     rule: {name: grows_with, params: {metric: params, method: counter, axis: dim,\n"
        "            labels: {component: total}}}}\n"
    )
    assert main(["run", str(tiny_study_path), "--out", str(tmp_path)]) == 0
    assert main(["report", str(tiny_study_path), "--out", str(tmp_path), "--claims", str(catalogue)]) == 0
    html = (tmp_path / "tiny" / "report.html").read_text()
    assert "<img src=x" not in html and "&lt;img src=x" in html
    # tiny: dim 32 -> 64, params counter grows, so the user's claim is supported
    assert "supported" in html and f"catalogue: {catalogue}" in html


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the workers through /proc")
def test_a_killed_run_leaves_no_pool_worker(tiny_study_path, write_study, tmp_path):
    # the analytic pool's workers are the forkserver's children, not the run's: killed with SIGKILL (the
    # OOM killer), the run cannot stop them, and each would wait on its queue for ever (and keep its
    # forkserver alive) unless it watches the run's process itself
    grid = tiny_study_path.read_text().replace("mode: one_at_a_time", "mode: grid")
    grid = grid.replace("measurements: [params]", "measurements: [params, flops, memory]")
    path = write_study(grid.replace("depth: [1, 2, 3]", "depth: [1, 2, 3]\n    heads: [2, 4]"))
    args = ["run", str(path), "--out", str(tmp_path / "r"), "--verbose"]
    env = {**os.environ, "ORCA_ANALYTIC_WORKERS": "2"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "orca_analysis", *args], stderr=subprocess.PIPE, text=True, env=env
    )
    first = proc.stderr.readline()  # printed once the first measurement is stored: the pool is up
    below = _descendants(proc.pid)  # the forkserver and the two pool workers
    proc.kill()
    proc.wait(timeout=60)  # reaped: a zombie still answers kill(pid, 0), as a shell's killed job does not
    proc.stderr.close()  # the workers share it: reading to its end would wait for them
    assert first.startswith("[1/36] ") and len(below) >= 3, (first, below)
    deadline = time.monotonic() + 15
    while _alive(below) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(below)
