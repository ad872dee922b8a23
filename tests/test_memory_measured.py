"""memory_measured: the training step and prefill with real tensors beside the simulation; on a GPU machine
the CUDA allocator's peak, here with the device and its allocator faked."""

import dataclasses
import types

from orca_analysis.kit.format import cell
from orca_analysis.measurements.memory.run import measure_memory
from orca_analysis.measurements.memory.section import memory_section
from orca_analysis.measurements.memory_measured import run
from orca_analysis.measurements.memory_measured.run import measure_memory_measured
from orca_analysis.results.query import Results
from orca_analysis.study import load_study


def test_cuda_records_without_a_gpu(monkeypatch, tiny_study_path):
    """The CUDA branch's records, with the device and its allocator faked: allocated = 1.05 x simulated."""
    study = load_study(str(tiny_study_path))
    simulate = run.run_steps

    def steps(cfg, dtype, jobs, device=None):
        out = simulate(cfg, dtype, jobs)
        for res in out.values() if device == "cuda" else ():
            for step in ("train", "prefill"):
                extra = {"allocated": int(res[step].total * 1.05), "reserved": 2 * res[step].total}
                res[step] = dataclasses.replace(res[step], extra=extra)
        return out

    monkeypatch.setattr(run, "run_steps", steps)
    monkeypatch.setattr(run, "measure_device", lambda: "cuda")
    monkeypatch.setattr(
        run.torch.cuda, "get_device_properties", lambda i: types.SimpleNamespace(total_memory=10**6)
    )
    results = Results.from_records(measure_memory_measured(study.variants()[0], study))
    # 10^6 bytes of device: both study lengths are predicted over 90% of it, so neither is tried
    skipped = results.values("peak_train", method="measured", status="skipped")
    assert {v.seq_len for v in skipped} == {32, 64} and all("predicted" in v.note for v in skipped)
    monkeypatch.setattr(
        run.torch.cuda, "get_device_properties", lambda i: types.SimpleNamespace(total_memory=10**9)
    )
    base = study.variants()[0]
    results = Results.from_records(measure_memory(base, study) + measure_memory_measured(base, study))
    measured = results.values("peak_train", method="measured", category="total")
    assert {(v.seq_len, v.device, v.scale) for v in measured} == {
        (32, "cuda", "measured"),
        (64, "cuda", "measured"),
    }
    errors = results.values("memory_rel_error", pair="simulated_vs_measured_cuda", quantity="peak_train")
    assert [round(v.value, 3) for v in errors] == [round(1 / 1.05 - 1, 3)] * 2 and not any(
        v.note for v in errors
    )
    assert results.values("peak_train_reserved", seq_len=64) and not results.values(
        "memory_rel_error", pair="simulated_vs_measured"
    )  # on a GPU machine only the GPU is measured
    table = memory_section(results, study).tables[-1]
    assert [cell(c) for c in table.rows[0]][1:3] == ["cuda", "32 x 1"]
