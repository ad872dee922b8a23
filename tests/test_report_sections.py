"""The report's sections, built from a real (tiny) run of every fast measurement, read through the query."""

import dataclasses

import pytest

from orca_analysis.catalog.metrics import MetricError
from orca_analysis.claims import load_catalogue
from orca_analysis.kit.format import cell
from orca_analysis.report import render_report
from orca_analysis.report.gpu import gpu_section
from orca_analysis.report.view import build_view
from orca_analysis.results import Record
from orca_analysis.results.query import Results
from orca_analysis.runner import run_study
from orca_analysis.study import load_study

FAST = "measurements: [params, flops, memory, memory_measured, kernels, attention_speed, speed, probes]"


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
    view = build_view(study, Results.from_store(out / "tiny"), {}, load_catalogue(), "built-in")
    sections = {s["id"]: s for s in view["sections"]}
    listed = FAST.split("[")[1].rstrip("]").split(", ")  # memory_measured's rows are in the memory section
    assert list(sections) == [*(n for n in listed if n != "memory_measured"), "gpu"]  # the registry's order
    for sec in ("params", "flops", "memory", "kernels", "attention_speed", "speed", "probes"):
        assert sections[sec]["tables"] and not sections[sec]["missing"], sec
    check = sections["memory"]["tables"][-1]  # simulated against measured: memory_measured's rows
    assert [cell(c) for c in check["rows"][0]][:3] == ["base", "cpu", "32 x 1"]
    flops = sections["flops"]["tables"][0]
    assert cell(flops["rows"][0][5]) == "+0.000%"  # counter and closed form agree on the tiny model
    memory = sections["memory"]["tables"][0]
    assert cell(memory["rows"][0][2]).endswith("MiB")
    probes = sections["probes"]["tables"][0]
    assert cell(probes["rows"][0][1]).startswith("pass")  # causality holds
    assert [m["name"] for m in view["missing"]] == []


def test_findings_and_report_render(tiny_run):
    study, out = tiny_run
    html, md = render_report(study, out)
    text = html.read_text()
    assert 'id="flops"' in text and 'id="memory"' in text and 'id="speed"' in text
    assert "Cached (KV) decoding" in text  # the probe's finding reaches the summary
    links = [line.split("](")[1].rstrip(")") for line in md.read_text().splitlines() if line.startswith("![")]
    assert len(links) >= 3 and all((md.parent / link).is_file() for link in links)


def test_a_section_asking_for_an_undeclared_metric_fails_loudly(tiny_run):
    study, out = tiny_run
    results = Results.from_store(out / "tiny")
    with pytest.raises(MetricError, match="unknown metric 'peak_trian'; did you mean 'peak_train'"):
        results.values("peak_trian")
    with pytest.raises(MetricError, match="has no method 'measured_mean'"):
        results.values("train_step_time", method="measured_mean")


def test_gpu_coverage_says_what_is_missing(tiny_run):
    study, out = tiny_run
    results = Results.from_store(out / "tiny")
    table = gpu_section(results, study).tables[0]
    # the registry's GPU measurements the tiny study runs; no GPU has measured anything yet
    assert table.columns == ["variant", "memory_measured", "kernels", "attention_speed", "speed", "probes"]
    assert table.rows == [["base", "missing", "missing", "missing", "missing", "missing"]]
    # records imported from a GPU: the speed records on "cuda", one skipped kernels record
    speed = [dataclasses.replace(r, device="cuda") for r in results.records("speed")]
    skipped = dataclasses.replace(
        results.records("kernels")[0],
        device="cuda",
        status="skipped",
        note="time budget of the GPU run exhausted",
        value=None,
    )
    row = gpu_section(Results.from_records([*results.records(), *speed, skipped]), study).tables[0].rows[0]
    ok = sum(r.status == "ok" for r in speed)
    assert (
        row[4].startswith(f"measured ({ok} values)")
        and row[2] == "skipped: time budget of the GPU run exhausted"
    )


def test_cpu_proxies_and_gpu_runs_get_their_own_training_tables(tiny_study_path):
    from orca_analysis.measurements.training.section import training_section

    study = load_study(str(tiny_study_path))
    swept = study.variants()[0].swept
    records = [
        Record(
            "tiny",
            "base",
            "training",
            "val_loss_final",
            "measured",
            mean + d,
            "nats/token",
            device=device,
            scale="proxy" if device == "cpu" else "measured",
            labels={"seed": i, "tokens": 64, "flops": 1e6},
            swept=swept,
        )
        for device, mean in (("cpu", 2.5), ("cuda", 4.25))
        for i, d in enumerate((-0.005, 0.005))
    ]
    section = training_section(Results.from_records(records), study)
    runs = {t.title: t for t in section.tables if t.title.startswith("Training runs")}
    assert list(runs) == [
        "Training runs (full shapes on cuda)",
        "Training runs (CPU-scale proxies)",
    ]
    assert cell(runs["Training runs (full shapes on cuda)"].rows[0][2]) == "4.250 ± 0.010"
    assert cell(runs["Training runs (CPU-scale proxies)"].rows[0][2]) == "2.500 ± 0.010"
