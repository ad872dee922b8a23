"""Speed measurements (kernels, attention_speed, speed): harness statistics, kernel truth, refusals,
record structure, and the sections built from the records.

No test asserts a timing: only structure, statistics on synthetic samples, backend detection and
refusal recording, and exact relations between records (rate = work / median of the samples).
"""

import dataclasses
import os
import statistics

import pytest
from speed_common import TINY, _pick, _run, _study

from orca_analysis.formulas.flops import sdpa_useful_flops
from orca_analysis.instruments.flop_counter import count_flops
from orca_analysis.kit.format import Quantity, cell, si
from orca_analysis.measurements import MEASUREMENTS, gpu_plan
from orca_analysis.measurements.speed.timed import datasheet_peak
from orca_analysis.results.query import Results
from orca_analysis.study import load_study

# ---- registration -------------------------------------------------------------------------


ORDER_KEYS = ("gpu", "gpu_group", "gpu_share", "cpu_seq_cap", "isolated")


def test_registration_follows_the_gpu_plan():
    got = {
        n: (m.shown.order, *(getattr(m.schedule, k) for k in ORDER_KEYS), m.spec.version)
        for n, m in MEASUREMENTS.items()
        if n in ("kernels", "attention_speed", "speed")
    }
    assert got == {
        "kernels": (40, True, "attention", 0.05, 32, False, 1),
        "attention_speed": (50, True, "attention", 0.10, 1024, False, 2),
        "speed": (60, True, "speed", 0.40, 64, True, 7),  # 7: the time forecast calibrated at 2 tokens
    }
    plan = gpu_plan()
    assert plan["attention"] == ["kernels", "attention_speed"] and plan["speed"] == ["speed"]


# ---- attention microbenchmark -----------------------------------------------------------------


def test_attention_speed_structure(base_records):
    # b=1, h=4, n=32, d=64, causal: 4*1*4*32*32*64 / 2 = 524,288
    assert sdpa_useful_flops((1, 4, 32, 64), 32, causal=True) == 524_288
    study, runs = base_records
    recs = runs["attention_speed"]
    results = Results.from_records(recs)
    (ceiling,) = _pick(recs, "attention_gemm_ceiling")
    for case in ("with_bias", "no_bias"):
        (flops,) = _pick(recs, "sdpa_forward_flops", case=case)
        # attention_speed's CPU cap 1024 is above max_seq_len 128: the study's 32 tokens, not scaled
        assert (flops.value, flops.seq_len, flops.scale) == (524_288, 32, "analytic")
        timed = {v.get("backend") for v in results.values("sdpa_forward_time", case=case)}
        assert timed == {"flash", "math"}
        skipped = results.values("sdpa_forward_time", status="skipped", case=case)
        assert {v.get("backend") for v in skipped} == {"efficient", "cudnn"}
        assert all(v.note == "not applicable on cpu: CUDA-only kernel" for v in skipped)
        assert {v.cause for v in skipped} == {"not applicable"}
        median = {}
        for backend in ("flash", "math"):
            v = results.one("sdpa_forward_time", case=case, backend=backend)
            assert v.n >= 3 and v.value == statistics.median(v.samples) and v.scale == "measured"
            median[backend] = v.value
            rate = results.number("sdpa_forward_flops_per_s", case=case, backend=backend)
            assert rate == pytest.approx(524_288 / v.value)
        best = results.one("sdpa_best_vs_gemm", case=case)
        fastest = min(median, key=median.get)
        assert best.get("backend") == fastest
        assert best.value == pytest.approx(524_288 / median[fastest] / ceiling.value)


def test_attention_speed_section(base_records):
    study, runs = base_records
    results = Results.from_records(runs["attention_speed"])
    section = MEASUREMENTS["attention_speed"].shown.section(results, study)
    (table,) = section.tables
    rows = {r[3]: r for r in table.rows}
    assert list(rows) == ["with_bias", "no_bias"]
    for case, row in rows.items():
        flash = results.number("sdpa_forward_flops_per_s", case=case, backend="flash")
        assert row[:3] == ["cpu", "32", "32"] and row[4] == Quantity(flash, "FLOP/s")
        assert row[5:7] == ["not applicable", "not applicable"]
        best = results.one("sdpa_best_vs_gemm", case=case)
        assert row[8] == f"{cell(Quantity(best.value, 'fraction'))} ({best.get('backend')})"
    assert not section.figures  # one length: no line to draw
    # a kernel that refuses the call (its cause, whatever its note says) reads "refused"
    refused = [
        dataclasses.replace(r, cause="refused") if r.labels.get("backend") == "efficient" else r
        for r in runs["attention_speed"]
    ]
    section = MEASUREMENTS["attention_speed"].shown.section(Results.from_records(refused), study)
    assert [r[5:7] for r in section.tables[0].rows] == [["refused", "not applicable"]] * 2
    two = _study(seq_lens=(16, 32))
    section = MEASUREMENTS["attention_speed"].shown.section(
        Results.from_records(_run("attention_speed", two)), two
    )
    assert [f.name for f in section.figures] == ["attention_by_backend"]


# ---- end-to-end ------------------------------------------------------------------------------


def test_utilisation_numerator_is_the_flop_counter_and_datasheet():
    from orca_analysis.formulas.flops import closed_form_kind
    from orca_analysis.measurements.speed.run import counted_flops

    cfg = load_study(str(TINY)).base  # depth 2, heads 4, dim_head 64
    # the counter agrees with the closed form (tests/test_flops.py) in each convention
    train, prefill = counted_flops(cfg, 32, 2, training=True), counted_flops(cfg, 32, 2, training=False)
    for method, kind, forward in (
        ("mfu_palm", "model_dense", "dense"),
        ("mfu_causal", "model_causal", "causal"),
        ("hfu", "executed", "executed"),
    ):
        assert train[method] == closed_form_kind(cfg, 32, 2, kind)["total"].train_step, method
        assert prefill[method] == closed_form_kind(cfg, 32, 2, forward)["total"].forward, method
    assert datasheet_peak("NVIDIA H100 80GB HBM3", "bfloat16") == 989e12
    assert datasheet_peak("NVIDIA H100 PCIe", "bfloat16") == 756e12
    assert datasheet_peak("NVIDIA H200", "float16") == 989e12
    assert datasheet_peak("NVIDIA A100-SXM4-80GB", "bfloat16") == 312e12
    assert datasheet_peak("NVIDIA H100 80GB HBM3", "float32") is None
    assert datasheet_peak("Tesla T4", "bfloat16") is None


def test_speed_records_and_cached_decoding_as_a_result(base_records):
    study, runs = base_records
    recs = runs["speed"]
    results = Results.from_records(recs)
    # seq 32 scaled by the speed cap 64 / max_seq_len 128: 16 tokens per training step
    step = results.one("train_step_time")
    assert (step.seq_len, step.scale, step.value) == (16, "proxy", statistics.median(step.samples))
    train = results.one("train_tokens_per_s")
    assert (train.seq_len, train.unit) == (16, "tokens/s") and train.value == pytest.approx(16 / step.value)
    assert results.number("seq_len_requested", seq_len=16, cap=64) == 32
    gemm = results.one("gemm_ceiling")
    times = results.one("gemm_time")
    assert gemm.value == pytest.approx(2 * 1024**3 / times.value)  # 2 n^3 FLOP / median, n = 1024 on CPU
    assert gemm.get("size") == times.get("size") == "1024x1024x1024 float32"
    for method in ("mfu_palm", "mfu_causal", "hfu"):
        flops = results.one("train_flops", method=method)
        rate = results.number("train_flops_per_s", method=method)
        assert flops.value == pytest.approx(rate * step.value)
        assert results.number("train_utilisation_vs_gemm", method=method) == pytest.approx(rate / gemm.value)
    # the tiny base passes ALiBi as a dense bias: the kernel computes every pair and recomputes Q K^T, so
    # HFU's numerator is the FlashAttention-convention dense count, above PaLM's model FLOPs, above causal
    count = count_flops(study.base, 16, 1)
    assert results.number("train_flops", method="hfu") == count.value("train_step_dense")
    assert results.number("train_flops", method="mfu_palm") == count.value("train_step_model_dense")
    assert results.number("train_flops", method="mfu_causal") == count.value("train_step_model_causal")
    assert (
        count.value("train_step_dense")
        > count.value("train_step_model_dense")
        > count.value("train_step_model_causal")
    )
    assert results.number("cpu_threads") == int(os.environ.get("ORCA_CPU_THREADS", "1"))
    (peak,) = _pick(recs, "datasheet_peak", status=None)
    assert peak.status == "skipped" and peak.note.startswith("no datasheet entry")  # no datasheet for a CPU
    assert _pick(recs, "train_utilisation_vs_datasheet", status="skipped")
    # ALiBi + KV cache: x-transformers' cached step crashes: a finding (pass 0, the exception in the note),
    # and decode is timed without the cache
    (passed,) = _pick(recs, "decode_cache_pass")
    assert (passed.value, passed.unit, passed.labels) == (0.0, "pass", {"new": 4, "prompt": 12})
    assert passed.note.startswith("cached decoding failed: RuntimeError")
    assert _pick(recs, "decode_cache_agreement", status="skipped")
    uncached = results.one("decode_uncached_tokens_per_s")
    assert uncached.labels == {"new": 4, "prompt": 12}  # 4 tokens after a 12-token prompt
    assert uncached.value == pytest.approx(4 / results.number("decode_uncached_time"))
    # the base also decodes with one KV head and with 4, on the first flag set whose cache agrees:
    # token shift off is not enough (ALiBi + xPos crash), token shift and xPos off is
    kv = results.values("kv_ablation_decode_tokens_per_s")
    drop = "shift_tokens+rotary_xpos"
    assert [v.labels for v in kv] == [
        {"attn": "mqa", "kv_heads": 1, "dropped": drop, "new": 4, "prompt": 12},
        {"attn": "mha", "kv_heads": 4, "dropped": drop, "new": 4, "prompt": 12},
    ]
    assert all(v.value > 0 for v in kv)
    assert [v.value for v in results.values("kv_ablation_cache_pass")] == [1.0, 1.0]
    assert all(v.value <= 1e-3 for v in results.values("kv_ablation_cache_agreement"))
    # closed form: 2 (K, V) x depth 2 x batch 1 x kv_heads x 16 tokens x dim_head 64 x 4 bytes
    assert [v.value for v in results.values("kv_ablation_cache_bytes")] == [
        2 * 2 * 1 * 1 * 16 * 64 * 4,
        2 * 2 * 1 * 4 * 16 * 64 * 4,
    ]
    # the cache generate() really kept equals its closed form at the same tokens: part kv, the last step's
    # 15 tokens; part prompt_object, the prompt's 12 with its 2L+1 = 5 hidden states (b, n, d)
    held = {
        (v.get("attn"), v.get("part")): v
        for v in results.values("kv_ablation_generate_cache", method="measured")
    }
    assert {k: (v.get("tokens"), v.value) for k, v in held.items() if k[1] != "object"} == {
        ("mqa", "kv"): (15, 2 * 2 * 1 * 15 * 64 * 4),
        ("mqa", "prompt_object"): (12, 12_288 + 5 * 12 * 64 * 4),
        ("mha", "kv"): (15, 2 * 2 * 4 * 15 * 64 * 4),
        ("mha", "prompt_object"): (12, 49_152 + 5 * 12 * 64 * 4),
    }
    closed = results.values("kv_ablation_generate_cache", method="closed_form")
    assert [v.value for v in closed] == [v.value for k, v in held.items() if k[1] != "object"]
    # the largest object: with 4 KV heads a cached step's (15 tokens of K/V, 61,440 B, one position's hidden
    # states as views of the 15-position embeddings, 15 x 64 x 4 = 3,840 B, and each layer's values and
    # hidden views) outgrows the prompt's; with one it is the prompt's
    assert held["mha", "object"].get("tokens") == 15 and held["mha", "object"].value > 61_440 + 3_840
    assert held["mqa", "object"].value == held["mqa", "prompt_object"].value
    # the speed-up, stored once: multi-head median time / multi-query median time
    t = {v.get("attn"): v.value for v in results.values("kv_ablation_decode_time")}
    up = results.one("kv_ablation_decode_speedup", dropped=drop)
    assert (up.unit, up.method, up.value) == ("ratio", "derived", pytest.approx(t["mha"] / t["mqa"]))
    # the base's training step is timed a second time: the relative difference of the two medians
    rep = results.one("train_step_repeat_diff")
    first, again = (float(x.split(" s")[0]) for x in rep.note.removeprefix("first ").split(", again "))
    assert first == pytest.approx(step.value, rel=5e-4)  # the note rounds to 4 significant digits
    assert rep.value == pytest.approx(abs(again - step.value) / step.value, abs=1e-3)
    assert not [r for r in recs if r.status == "error"]
    other = _run("speed", study, variant=1)
    assert not _pick(other, "kv_ablation_decode_tokens_per_s")  # once per study, on the base
    assert not _pick(other, "train_step_repeat_diff")


@pytest.mark.parametrize(("shift", "passed", "uncached"), [(0, 1.0, "skipped"), (1, 0.0, "ok")])
def test_cached_decoding_checked_against_the_full_forward(shift, passed, uncached):
    # Without ALiBi the cache runs; with token shift it silently disagrees (the shifted-in
    # previous token is missing in a one-token step), which must show as a failed check.
    study = _study(["alibi_pos_bias=false", f"shift_tokens={shift}", "depth=1"])
    recs = _run("speed", study)
    (check,) = _pick(recs, "decode_cache_pass")
    (agreement,) = _pick(recs, "decode_cache_agreement")
    assert check.value == passed and agreement.value is not None
    assert (agreement.value <= 1e-3) == (passed == 1.0)
    assert bool(check.note) == (passed == 0.0) and check.note == agreement.note
    # a disagreeing cache is still timed, and says what its rate is worth
    (cached,) = _pick(recs, "decode_cached_tokens_per_s")
    assert ("disagree" in cached.note) == (passed == 0.0)
    assert _pick(recs, "decode_uncached_tokens_per_s", status=None)[0].status == uncached


def test_a_failing_phase_is_an_error_record_and_the_others_still_run(monkeypatch):
    from orca_analysis.measurements.speed import decode, run

    def oom(*args, **kwargs):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore")

    monkeypatch.setattr(run, "counted_flops", oom)
    monkeypatch.setattr(decode, "cache_compatible", lambda *a: None)
    study = _study()
    recs = _run("speed", study)
    errors = [(r.metric, r.method, r.labels, r.note) for r in recs if r.status == "error"]
    assert errors[:2] == [
        (
            "train_step_time",
            "measured",
            {"repeat": 0},
            "train: RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB",
        ),
        (
            "prefill_time",
            "measured",
            {"repeat": 0},
            "prefill: RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB",
        ),
    ]
    # no cache-compatible model: an error record with what was tried
    assert errors[2][:3] == ("kv_ablation_decode_speedup", "derived", {"dropped": "n/a"})
    assert errors[2][3].startswith(
        "no cache-compatible model found (flags dropped, tried: none; shift_tokens;"
    )
    assert len(errors) == 3
    # the timings before the failure are kept, and the step is still timed twice
    assert (
        _pick(recs, "train_step_time")
        and _pick(recs, "decode_cache_pass")
        and _pick(recs, "train_step_repeat_diff")
    )


def test_speed_section(base_records):
    study, runs = base_records
    results = Results.from_records(runs["speed"])
    section = MEASUREMENTS["speed"].shown.section(results, study)
    assert [t.title for t in section.tables] == [
        "End-to-end throughput",
        "Multi-query against multi-head decoding (base)",
        "Repeatability of the timings (base)",
        "The time forecast checked on this machine",
    ]
    assert "These are CPU figures (cpu)" in section.intro and "scripts/gpu_measure.sh" in section.intro
    speed, kv, repeat, check = section.tables
    # every timed training step and prefill with its floor below the measured median (a floor above is a bug)
    assert check.rows and all(float(r[7]) < 1 for r in check.rows)
    # the calibrated prediction's error is (calibrated / measured - 1), from the stored records
    for r in check.rows:
        name = "train_step" if r[4] == "training step" else "prefill"
        at = {"variant": r[0], "seq_len": int(r[3].split(" x ")[0])}
        cal = results.number(f"{name}_calibrated", **at)
        measured = results.number("train_step_time" if name == "train_step" else "prefill_time", **at)
        assert r[10] == f"{cal * 1e3:.3g} ms" and r[11] == f"{cal / measured - 1:+.0%}"
    assert {r[4] for r in check.rows} == {"training step", "prefill"}
    (row,) = speed.rows
    at = {"variant": "base", "seq_len": 16}
    assert row[:4] == ["base", "cpu", "32", "16"]
    assert row[4] == Quantity(results.number("train_tokens_per_s", **at), "tokens/s")
    assert row[5] == Quantity(results.number("prefill_tokens_per_s", **at), "tokens/s")
    assert row[6] == "fails (RuntimeError; see probes)"  # the exception's type, from the pass check's note
    assert row[7] == Quantity(results.number("decode_uncached_tokens_per_s", **at), "tokens/s")
    assert row[8:] == [
        Quantity(results.number("train_utilisation_vs_gemm", method=m, **at), "fraction")
        for m in ("mfu_palm", "mfu_causal", "hfu")
    ]
    assert row[8].value < row[10].value  # HFU's numerator counts the dense bias's pairs and the recompute
    assert f"(cpu: {cell(Quantity(results.number('gemm_ceiling'), 'FLOP/s'))})" in speed.caption
    (row,) = kv.rows
    up = results.number("kv_ablation_decode_speedup")
    # 1 x 1 x 16 x 64 x 2 x 2 x 4 = 16,384 B -> 16.4 kB; x4 KV heads = 65,536 B -> 65.5 kB
    assert row[:4] == ["cpu", "32", "16", "shift_tokens+rotary_xpos"]
    # during generate (12-token prompt, 4 new): the K/V of the last step's 15 tokens, 15,360 B and x4 heads
    # 61,440 B; the largest cache objects as stored above
    object_cell = (
        f"27.6 kB / {si(results.number('kv_ablation_generate_cache', part='object', attn='mha'), 'B')}"
    )
    assert row[6:] == [f"x{up:.2f}", "16.4 kB / 65.5 kB", "15.4 kB / 61.4 kB", object_cell]
    (row,) = repeat.rows
    diff = results.one("train_step_repeat_diff")
    assert row == [
        "cpu",
        "32",
        "16",
        diff.note,
        Quantity(diff.value, "fraction"),
        "yes" if diff.value <= 0.03 else "no",
    ]
    assert not section.figures  # one length: no line to draw
    empty = MEASUREMENTS["speed"].shown.section(Results.from_records([]), study)
    assert not empty.tables and "no `speed` results" in empty.missing and "CPU figures" not in empty.intro


def test_train_time_figure_over_lengths():
    study = _study(["depth=1"], seq_lens=(32, 64))
    recs = _run("speed", study, variant=1)
    section = MEASUREMENTS["speed"].shown.section(Results.from_records(recs), study)
    assert [f.name for f in section.figures] == ["train_time_vs_seq"]
    # 32 and 64 scaled by 64 / 128: 16 and 32 tokens
    assert [r[3] for r in section.tables[0].rows] == ["16", "32"]
