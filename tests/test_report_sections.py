"""The report's measurement sections, built from a real (tiny) run of every fast measurement."""

import pandas as pd
import pytest

from orca_analysis.report import render_report
from orca_analysis.report.view import build_view
from orca_analysis.results.frame import results_frame
from orca_analysis.runner import run_study
from orca_analysis.study import load_study

FAST = "measurements: [params, flops, memory, kernels, attention_speed, speed, probes]"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from pathlib import Path

    text = (Path(__file__).parent / "fixtures" / "tiny.yaml").read_text()
    # one variant, one short workload: the sections need shape, not statistics
    text = text.replace("measurements: [params]", FAST).replace("dim: [32, 64]", "dim: [64]")
    text = text.replace("depth: [1, 2, 3]", "depth: [2]").replace("seq_lens: [32, 64]", "seq_lens: [32]")
    root = tmp_path_factory.mktemp("run")
    path = root / "tiny_all.yaml"
    path.write_text(text)
    study = load_study(str(path))
    run_study(study, root / "reports")
    return study, root / "reports"


def test_every_section_has_tables_and_units(tiny_run):
    study, out = tiny_run
    from orca_analysis.claims import load_catalogue

    view = build_view(study, results_frame(out / "tiny"), {}, load_catalogue(), "built-in")
    sections = {s["id"]: s for s in view["sections"]}
    assert set(sections) == {"flops", "memory", "speed", "quality"}
    for sec in ("flops", "memory", "speed"):
        assert sections[sec]["tables"] and not sections[sec]["missing"], sec
    flops = sections["flops"]["tables"][0]
    assert flops["rows"][0][5] == "+0.000%"  # counter and closed form agree on the tiny model
    memory = sections["memory"]["tables"][0]
    assert memory["rows"][0][2].endswith("MiB")
    probes = sections["quality"]["tables"][0]
    assert probes["rows"][0][1].startswith("pass")  # causality holds
    assert sections["quality"]["missing"] == ""


def test_findings_and_report_render(tiny_run):
    study, out = tiny_run
    html, md = render_report(study, out)
    text = html.read_text()
    assert 'id="flops"' in text and 'id="memory"' in text and 'id="speed"' in text
    assert "Cached (KV) decoding" in text  # the probe's finding reaches the summary
    links = [line.split("](")[1].rstrip(")") for line in md.read_text().splitlines() if line.startswith("![")]
    assert len(links) >= 3 and all((md.parent / link).is_file() for link in links)


def test_gpu_coverage_says_what_is_missing(tiny_run):
    from orca_analysis.report.sections.gpu import gpu_coverage_table

    study, out = tiny_run
    results = results_frame(out / "tiny")
    table = gpu_coverage_table(results, study)
    # the tiny study measures everything but training; no GPU has measured anything yet
    assert table.columns == ["variant", "speed", "kernels", "attention_speed", "memory", "probes"]
    assert table.rows == [["base", "missing", "missing", "missing", "missing", "missing"]]
    # rows imported from a GPU: the speed rows on "cuda", one skipped kernels row
    speed = results[results["measurement"] == "speed"].assign(device="cuda", device_name="NVIDIA H200")
    skipped = results[results["measurement"] == "kernels"].head(1)
    skipped = skipped.assign(device="cuda", status="skipped", error="time budget of the GPU run exhausted")
    row = gpu_coverage_table(pd.concat([results, speed, skipped]), study).rows[0]
    ok = (speed["status"] == "ok").sum()
    assert (
        row[1].startswith(f"measured ({ok} values)")
        and row[2] == "skipped: time budget of the GPU run exhausted"
    )


def test_cpu_proxies_and_gpu_runs_get_their_own_training_tables(tiny_study_path):
    from orca_analysis.report.sections.quality import quality_section

    study = load_study(str(tiny_study_path))
    rows = [
        {"variant_id": "base", "measurement": "training", "metric": "val_loss_final", "method": "aggregate",
         "value": v, "status": "ok", "category": f"seed={k}", "device": d, "seq_len": None}
        for d, mean in (("cpu", 2.5), ("cuda", 4.25))
        for v, k in ((mean, "mean"), (0.01, "spread"))
    ]  # fmt: skip
    section = quality_section(pd.DataFrame(rows), study)
    runs = {t.title: t for t in section.tables if t.title.startswith("Short training runs")}
    assert list(runs) == [
        "Short training runs (full shapes on cuda)",
        "Short training runs (CPU-scale proxies)",
    ]
    assert runs["Short training runs (full shapes on cuda)"].rows[0][2] == "4.250 ± 0.010"
    assert runs["Short training runs (CPU-scale proxies)"].rows[0][2] == "2.500 ± 0.010"
