"""The command as a user runs it: exit codes, one-line errors, JSON shape, run -> report."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

from orca_analysis.cli import main


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
        "error",
        "torch",
        "x_transformers",
        "device_name",
        "date",
        "git_commit",
    }
    assert required <= set(results.columns)
    # base + dim=32 + depth=1 + depth=3 = 4 variants
    assert sorted(results["variant_id"].unique()) == ["base", "depth=1", "depth=3", "dim=32"]
    base = results[(results.variant_id == "base") & (results.metric == "total")]
    assert set(base["method"]) == {"counter", "closed_form"} and base["value"].nunique() == 1
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


def test_failed_variant_is_recorded_and_the_sweep_goes_on(write_study, tiny_study_path, tmp_path):
    # flash attention with T5 relative bias is refused by x-transformers for every variant
    text = tiny_study_path.read_text().replace(
        "    alibi_pos_bias: true\n    alibi_num_heads: 2\n", "    rel_pos_bias: true\n"
    )
    path = write_study(text)
    out = tmp_path / "r"
    assert main(["run", str(path), "--out", str(out)]) == 0
    results = pd.read_csv(out / "tiny" / "results.csv")
    assert (results["status"] == "error").sum() == 4
    assert results["error"].str.contains("refused the config").all()
