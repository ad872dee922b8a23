"""GPU answers without a GPU: the device catalogue, and the SDPA backend CUDA would pick for each attention
call (torch 2.13's selection rules, instruments/sdpa_rules.py), each case with the rule that decides it."""

import dataclasses
import functools

import pytest

from orca_analysis.cli import main
from orca_analysis.devices import DeviceError, device, load_devices
from orca_analysis.instruments.attention_forecast import attention_calls
from orca_analysis.instruments.gpu_forecast import simulate
from orca_analysis.instruments.sdpa_rules import XT_ENABLED, AttentionCall, predict
from orca_analysis.measurements.forecast import run as forecast_run
from orca_analysis.measurements.forecast.run import measure_forecast
from orca_analysis.measurements.forecast.section import forecast_section
from orca_analysis.results.query import Results, _Row
from orca_analysis.results.store import StoredUnit
from orca_analysis.study import load_study

ALL = ("flash", "efficient", "math", "cudnn")  # torch's defaults: every backend on
CALL = AttentionCall(
    "bfloat16", 1, 8, 8, 2048, 2048, 64, 64, is_causal=True, training=True
)  # a plain causal call
H100, A100 = device("h100"), device("a100")


@functools.cache
def _tiny_records() -> tuple:
    """The forecast measurement of tiny's base, made once for the tests that read it (records are frozen)."""
    study = load_study("tests/fixtures/tiny.yaml")
    return tuple(measure_forecast(study.variants()[0], study))


T4 = dataclasses.replace(A100, id="t4", compute_capability=(7, 5))  # sm75
RTX3090 = dataclasses.replace(A100, id="rtx3090", compute_capability=(8, 6))  # sm86


def test_the_catalogue_states_each_device_with_its_source():
    devices = load_devices()
    assert set(devices) == {"a100-sxm-80gb", "h100-sxm-80gb", "h200-sxm-141gb", "l4", "rtx-4090"}
    assert all(d.source.startswith("https://") and d.peak_flops["float32"] for d in devices.values())
    assert (H100.sm, H100.memory_bytes, H100.peak_flops["bfloat16"]) == (90, 80_000_000_000, 9.895e14)
    assert A100.peak_flops["float8"] is None  # Ampere has no FP8 unit
    assert device("h200").unverified == ("sms",)


def test_a_users_device_file_is_loaded_as_strictly(tmp_path):
    mine = tmp_path / "mine.yaml"
    mine.write_text(
        "devices:\n  my-gpu:\n    name: Mine\n    memory_bytes: 48000000000\n    bandwidth_bytes_per_s: 9.6e+11\n"
        "    sms: 84\n    compute_capability: '8.6'\n    peak_flops: {float32: 3.8e+13, bfloat16: 1.5e+14}\n"
        "    source: my bench\n"
    )
    assert device("my-gpu", mine).sm == 86 and "h100-sxm-80gb" in load_devices(mine)
    mine.write_text(mine.read_text().replace("sms: 84", "smz: 84").replace("'8.6'", "8.6.1"))
    with pytest.raises(DeviceError) as exc:
        load_devices(mine)
    assert any("unknown key 'smz'; did you mean 'sms'" in p for p in exc.value.problems)
    assert any("missing required key 'sms'" in p for p in exc.value.problems)
    with pytest.raises(DeviceError, match="unknown device 'tpu'"):
        device("tpu")


def test_flash_for_a_plain_bf16_causal_call_on_sm90_under_x_transformers():
    # flash's checks all pass: no mask, head dim 64 <= 256, sm90 in [sm80, sm121], square causal, bf16
    assert predict(CALL, H100).backend == "flash"
    # with every backend on, sm90 and cuDNN 9.20 > 9.15 put cuDNN first (check_prefer_cudnn_attention);
    # x-transformers switches cuDNN off (sdpa_kernel([FLASH, MATH, EFFICIENT]))
    assert predict(CALL, H100, ALL).backend == "cudnn" and "cudnn" not in XT_ENABLED
    assert predict(CALL, H100).method.endswith("not observed; switched off by the caller: cudnn")


def test_float32_is_no_flash():
    p = predict(dataclasses.replace(CALL, dtype="float32"), H100)
    assert (
        p.backend == "efficient"
    )  # check_dtypes_low_precision refuses flash; efficient takes float32 on sm80+
    assert p.refused["flash"].startswith("Expected query, key and value to all be of dtype: {Half, BFloat16}")


def test_a_float_mask_goes_to_the_memory_efficient_kernel():
    p = predict(dataclasses.replace(CALL, mask="float", mask_dims=4, is_causal=False), H100)
    assert (p.backend, p.refused) == (
        "efficient",
        {"flash": "Flash Attention does not support non-null attn_mask."},
    )


def test_head_dim_320_is_no_flash_and_no_cudnn():
    p = predict(dataclasses.replace(CALL, head_dim=320, head_dim_v=320), H100, ALL)
    assert p.backend == "efficient"  # cuDNN: head_dim <= 256 on sm90; flash: <= 256; efficient: 320 % 8 == 0
    assert p.refused["cudnn"] == "head_dim should be no more than 256" and "256" in p.refused["flash"]


def test_older_and_consumer_gpus():
    assert predict(dataclasses.replace(CALL, dtype="float16"), T4).backend == "efficient"  # flash needs sm80+
    hd256 = dataclasses.replace(CALL, head_dim=256, head_dim_v=256)
    assert predict(hd256, RTX3090).backend == "flash"  # head dim in (224, 256] trains on sm86 without dropout
    assert predict(dataclasses.replace(hd256, dropout=0.1), RTX3090).backend == "efficient"
    # grouped-query heads handed over unexpanded with enable_gqa: flash takes them, efficient (2.13) does not
    gqa = dataclasses.replace(CALL, heads_kv=2, enable_gqa=True)
    assert predict(gqa, H100).backend == "flash"
    assert predict(dataclasses.replace(gqa, dtype="float32"), H100).backend == "math"


def test_another_torch_version_is_unknown_not_guessed():
    p = predict(CALL, H100, torch_version="2.14.1+cu130")
    assert p.backend == "unknown" and "written for 2.13" in p.method


def test_the_calls_x_transformers_makes_for_three_designs():
    orca = load_study("tests/fixtures/tiny.yaml").base  # ALiBi: a dense float mask, causal folded in
    (call,), enabled = attention_calls(orca, 32, 2, "bfloat16", training=True)
    assert (call.mask, call.mask_dims, call.is_causal, call.dtype, call.heads_kv) == (
        "float",
        4,
        False,
        "bfloat16",
        4,
    )
    assert enabled == ("flash", "efficient", "math")  # the library's own sdpa_kernel list
    gpt2 = load_study("tests/fixtures/gpt2-tiny.yaml").base
    calls, _ = attention_calls(gpt2, 64, 1, "bfloat16", training=True)
    assert [(c.mask, c.is_causal, n) for c, n in calls.items()] == [("none", True, 2)]  # one per layer
    llama = load_study("tests/fixtures/llama-tiny.yaml").base  # 2 KV heads, expanded to the 4 query heads
    ((call, n),) = attention_calls(llama, 64, 1, "bfloat16", training=True)[0].items()
    assert (call.heads_q, call.heads_kv, call.enable_gqa, n) == (4, 4, False, 2)
    assert predict(call, H100).backend == "flash"


def test_inspect_device_prints_the_forecast(capsys, tmp_path):
    assert (
        main(["inspect", "--study", "tests/fixtures/tiny.yaml", "--only", "params", "--device", "h100"]) == 0
    )
    out = capsys.readouterr().out
    assert "On NVIDIA H100 80GB SXM5 (bfloat16, training step, 32 tokens x batch 1)" in out
    assert "-> efficient (flash refused: Flash Attention does not support non-null attn_mask.)" in out
    assert main(["inspect", "--device", "tpu"]) == 2
    assert "unknown device 'tpu'" in capsys.readouterr().err


def test_the_forecast_measurement_and_its_section():
    """tiny (ALiBi, 2 layers), 2 lengths x 2 compute dtypes x 5 catalogue GPUs: each one kernel record,
    efficient x2; the GPU memory of the training step and prefill (tiny's cached decode fails: ALiBi with
    rotary) in 8 categories; the largest batch of both steps at the longest length."""
    study = load_study("tests/fixtures/tiny.yaml")
    records = _tiny_records()
    kernels = [r for r in records if r.metric == "sdpa_predicted_calls"]
    peaks = [r for r in records if r.metric == "gpu_peak"]
    largest = [r for r in records if r.metric == "gpu_max_batch"]
    assert len(kernels) == 2 * 2 * 5 and {(r.labels["backend"], r.value) for r in kernels} == {
        ("efficient", 2.0)
    }
    assert all(
        r.method == "predicted" and "flash refused: Flash Attention does not support" in r.note
        for r in kernels
    )
    assert len(peaks) == 2 * 2 * 2 * 8 * 5 and len(largest) == 2 * 2 * 5
    assert {r.labels["search"] for r in largest} == {"replayed"}  # tiny's timelines at batch 2 and 3 agree
    assert {r.labels["step"] for r in peaks} == {"train", "prefill"}
    # the stored peak is the simulation's, one walk shared by the GPUs that run the same kernels
    sim, _ = simulate(study.base, H100, "bfloat16", 64, 1, ("train",))
    stored = {
        r.labels["gpu"]: r.value
        for r in peaks
        if r.seq_len == 64
        and r.labels["compute"] == "bfloat16"
        and r.labels["step"] == "train"
        and r.labels["category"] == "total"
    }
    assert set(stored.values()) == {sim["train"].peak} and len(stored) == 5
    section = forecast_section(Results.from_records(records), study)
    table, refusals, memory, times, batches = section.tables
    assert (
        table.rows[0][:4] == ["base", "32 x 1", "bfloat16", "efficient x2"]
        and table.rows[0][-1] == "no GPU run"
    )
    assert refusals.rows == [["flash refused: Flash Attention does not support non-null attn_mask."]]
    assert memory.rows[0][:4] == ["base", "32 x 1", "bfloat16", "train"] and all(
        c.endswith(", fits") for r in memory.rows for c in r[4:]
    )
    assert [r[:4] for r in batches.rows] == [
        ["base", 64, c, s] for c in ("bfloat16", "float32") for s in ("prefill", "train")
    ]
    assert all(int(c) > 1000 for r in batches.rows for c in r[4:])
    assert times.rows[0][:4] == ["base", "32 x 1", "bfloat16", "train"] and "MFU ≤" in times.rows[0][4]
    floors = {
        (r.seq_len, r.labels["gpu"], r.labels["compute"], r.labels["step"]): r.value
        for r in records
        if r.metric == "gpu_step_floor"
    }
    predicted = {
        (r.seq_len, r.labels["gpu"], r.labels["compute"], r.labels["step"]): r.value
        for r in records
        if r.metric == "gpu_step_predicted"
    }
    assert floors.keys() == predicted.keys() and all(0 < floors[k] < predicted[k] for k in floors)
    kernel = [
        r.value for r in records if r.metric == "gpu_mfu_ceiling" and r.labels["convention"] == "kernel"
    ]
    assert kernel and all(0 < v <= 1 for v in kernel)


def test_a_gpu_run_is_shown_beside_the_prediction_and_a_mismatch_is_a_finding():
    """What scripts/gpu_measure.sh stores (the kernels measurement's profiler counts, device cuda) fills the
    observed column with no further code; a backend other than the predicted one is listed as a mismatch."""
    study = load_study("tests/fixtures/tiny.yaml")
    records = _tiny_records()
    seen = dataclasses.replace(
        records[0],
        measurement="kernels",
        metric="ran_train",
        method="profiler",
        device="cuda",
        labels={"backend": "flash"},
        unit="calls",
        value=2.0,
        note="",
    )
    rows = [_Row(r, None) for r in records] + [_Row(seen, _unit("NVIDIA H100 80GB HBM3"))]
    section = forecast_section(Results(rows), study)
    table, *_, mismatch = section.tables
    row = next(r for r in table.rows if r[1] == "32 x 1" and r[2] == "bfloat16")
    assert row[-1] == "flash x2" and mismatch.rows == [
        ["base", "32 x 1", "h100-sxm-80gb", "efficient x2", "flash x2"]
    ]


def _unit(device_name: str) -> StoredUnit:
    return StoredUnit(1, "k", "kernels", "env", "ok", "", {}, frozenset(), device_name)


def test_two_batch_sizes_are_two_rows(write_study, tiny_study_path, monkeypatch):
    text = tiny_study_path.read_text().replace("batch_sizes: [1]", "batch_sizes: [1, 2]")
    study = load_study(str(write_study(text.replace("measurements: [params]", "measurements: [forecast]"))))
    monkeypatch.setattr(forecast_run, "_largest_batch", lambda *a: None)  # the kernel rows are under test
    section = forecast_section(Results.from_records(measure_forecast(study.variants()[0], study)), study)
    rows = section.tables[0].rows
    assert [r[1] for r in rows if r[2] == "bfloat16"] == ["32 x 1", "32 x 2", "64 x 1", "64 x 2"]
    assert all(
        cell == "efficient x2" for r in rows for cell in r[3:-1]
    )  # one layer's call each, never summed


def test_a_gpu_runs_memory_is_shown_beside_the_memory_forecast():
    """memory_measured on an H100 (max_memory_allocated, float32): the float32 forecast beside it, with the
    error. The measured value here is made 10% below the forecast: error = 1 / 0.9 - 1 = +11.1%."""
    study = load_study("tests/fixtures/tiny.yaml")
    records = _tiny_records()
    forecast = next(
        r
        for r in records
        if r.metric == "gpu_peak"
        and r.seq_len == 64
        and r.labels == {"gpu": "h100-sxm-80gb", "compute": "float32", "step": "train", "category": "total"}
    )
    seen = dataclasses.replace(
        forecast,
        measurement="memory_measured",
        metric="peak_train",
        method="measured",
        device="cuda",
        labels={"category": "total"},
        value=0.9 * forecast.value,
        note="",
    )
    rows = [_Row(r, None) for r in records] + [_Row(seen, _unit("NVIDIA H100 80GB HBM3"))]
    checked = next(t for t in forecast_section(Results(rows), study).tables if "against a GPU run" in t.title)
    assert checked.rows == [
        [
            "base",
            "64 x 1",
            "train",
            "h100-sxm-80gb",
            f"{forecast.value / 1e9:.2f} GB",
            f"{0.9 * forecast.value / 1e9:.2f} GB",
            "+11.1%",
        ]
    ]


def test_a_gpu_runs_peaks_are_set_beside_the_forecasts_assumptions():
    """The speed measurement on an H100 records its GEMM ceiling (bfloat16), copy bandwidth and per-operator
    costs; the section sets each beside the forecast's assumed input. H100 SXM datasheet: 989.4e12 bf16
    FLOP/s x 0.70 = 693 TFLOP/s assumed; measured 600e12: 600 / 692.6 - 1 = -13%. Bandwidth 3.35e12 B/s x
    0.80 = 2680 GB/s; measured 2.9e12: +8%. Launch cost 5 us assumed; measured 10 us and 30 us: +100%, +500%."""
    study = load_study("tests/fixtures/tiny.yaml")
    records = _tiny_records()
    base = dataclasses.replace(
        records[0],
        measurement="speed",
        device="cuda",
        labels={},
        note="",
        seq_len=None,
        batch=None,
        method="measured_median",
    )
    seen = [
        dataclasses.replace(base, metric="copy_bandwidth", unit="bytes/s", value=2.9e12, dtype="bfloat16"),
        dataclasses.replace(
            base,
            metric="gemm_ceiling",
            unit="FLOP/s",
            value=600e12,
            dtype="bfloat16",
            labels={"size": "8192x8192x8192 bfloat16"},
        ),
        dataclasses.replace(base, metric="op_overhead", unit="s", value=10e-6, dtype="bfloat16"),
        dataclasses.replace(base, metric="train_step_op_cost", unit="s", value=30e-6, dtype="bfloat16"),
    ]
    h100 = device("h100")
    rows = [_Row(r, None) for r in records] + [_Row(r, _unit("NVIDIA H100 80GB HBM3")) for r in seen]
    table = next(t for t in forecast_section(Results(rows), study).tables if "inputs" in t.title)
    gemm = 0.70 * h100.peak_flops["bfloat16"]
    assert table.rows == [
        ["h100-sxm-80gb", "bfloat16 GEMM, TFLOP/s", f"{gemm / 1e12:.0f}", "600", f"{600e12 / gemm - 1:+.0%}"],
        [
            "h100-sxm-80gb",
            "bandwidth, GB/s",
            f"{0.8 * h100.bandwidth_bytes_per_s / 1e9:.0f}",
            "2900",
            f"{2.9e12 / (0.8 * h100.bandwidth_bytes_per_s) - 1:+.0%}",
        ],
        ["h100-sxm-80gb", "seconds per one-element operator, us", "5", "10.0", "+100%"],
        [
            "h100-sxm-80gb",
            "seconds per operator of the design's training step at 2 tokens, us",
            "5",
            "30.0",
            "+500%",
        ],
    ]


def test_a_flexattention_design_gets_one_reason_not_a_failure():
    """ALiBi inside the kernel (FlexAttention, compiled): no SDPA call and no walk this machine can make; each
    forecast record says why, and the section names the variant and the reason."""
    study = load_study("tests/fixtures/tiny.yaml")
    base = study.variants()[0]
    layers = {**base.config.layers, "alibi_in_kernel": True}
    flex = dataclasses.replace(
        base, variant_id="fix:flex", config=dataclasses.replace(base.config, layers=layers)
    )
    records = measure_forecast(flex, study)
    assert {(r.metric, r.status) for r in records} == {
        ("sdpa_predicted_calls", "ok"),
        ("gpu_peak", "skipped"),
        ("gpu_step_floor", "skipped"),
        ("gpu_step_predicted", "skipped"),
        ("gpu_mfu_ceiling", "skipped"),
    }
    # every GPU x compute x step, and both conventions of the MFU ceiling
    conventions = {r.labels["convention"] for r in records if r.metric == "gpu_mfu_ceiling"}
    assert conventions == {"palm", "kernel"}
    assert all("FlexAttention (alibi_in_kernel)" in r.note for r in records)
    section = forecast_section(Results.from_records(records), study)
    assert "No GPU memory or time forecast for fix:flex: FlexAttention" in section.intro
