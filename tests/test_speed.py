"""Speed measurements: harness statistics, kernel truth, refusals, record structure.

No test asserts a timing: only structure, statistics on synthetic samples, backend detection
and refusal recording, and exact relations between records (rate = work / median).
"""

import dataclasses
import os
import time

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from orca_analysis.measure import MEASUREMENTS
from orca_analysis.measure._timing import Timing, scaled_seq_lens, time_fn, timing_records
from orca_analysis.measure.attention_speed import sdpa_useful_flops
from orca_analysis.measure.kernels import SdpaCall, backends_ran, eligibility, refusal_reason
from orca_analysis.measure.speed import _counted_flops, datasheet_peak
from orca_analysis.results.records import Record
from orca_analysis.study import load_study
from orca_analysis.study.schema import Workloads


def _study(path, sets=(), seq_lens=(32,)):
    study = load_study(str(path), list(sets))
    return dataclasses.replace(study, workloads=Workloads(list(seq_lens), [1], "float32"))


def _pick(records, **match):
    return [r for r in records if all(getattr(r, k) == v for k, v in match.items())]


# ---- harness ------------------------------------------------------------------------------


def test_statistics_by_hand():
    t = Timing.from_values([5.0, 1.0, 4.0, 2.0, 3.0])
    # sorted 1..5; linear quantiles at positions 0.25*4=1, 2, 3 -> 2, 3, 4
    assert (t.q1, t.median, t.q3, t.iqr) == (2.0, 3.0, 4.0, 2.0)
    assert t.rel_iqr == pytest.approx(2 / 3) and t.noisy and t.note.startswith("noisy: IQR is 67%")
    t = Timing.from_values([1.0, 2.0, 3.0, 10.0])
    # positions 0.75, 1.5, 2.25: 1 + 0.75*1 = 1.75; (2+3)/2 = 2.5; 3 + 0.25*7 = 4.75
    assert (t.q1, t.median, t.q3) == (1.75, 2.5, 4.75)
    t = Timing.from_values([1.00, 1.01, 1.02, 1.03, 1.04])
    # IQR 1.03 - 1.01 = 0.02 = 1.96% of 1.02 < 10%
    assert not t.noisy and t.note == ""
    assert Timing.from_values([1.0, 1.0]).note == "noisy: only 2 sample(s), spread unknown"
    with pytest.raises(ValueError):
        Timing.from_values([])


def test_time_fn_rotates_inputs_and_counts_calls():
    seen = []
    t = time_fn(seen.append, ["a", "b", "c"], repeats=4, warmup=2, min_sample_s=0.0, threads=1)
    # 2 warm-up calls from the start of the rotation, then 4 samples of 1 call each
    assert seen == ["a", "b", "a", "b", "c", "a"]
    assert (t.n, t.number, t.warmup, t.threads, t.clock) == (4, 1, 2, 1, "perf_counter")


def test_time_fn_batches_fast_calls_and_restores_threads():
    before = torch.get_num_threads()
    calls = []
    t = time_fn(calls.append, [None], repeats=3, warmup=1, min_sample_s=1e-3, threads=1)
    assert t.number > 1  # a ~1 us call is repeated to fill a 1 ms sample
    assert len(calls) == 1 + 3 * t.number
    assert torch.get_num_threads() == before


def test_time_fn_cuts_samples_to_the_time_budget_but_not_below_the_floor():
    t = time_fn(lambda _: time.sleep(0.02), [None], repeats=10, min_repeats=2, max_time_s=0.05, warmup=1)
    assert t.n == 2  # 0.05 s fits at most 2 calls of >= 0.02 s; the floor is 2
    with pytest.raises(ValueError):
        time_fn(lambda _: None, [None], repeats=2, min_repeats=3)
    with pytest.raises(ValueError):
        time_fn(lambda _: None, [])


def test_timing_records_carry_median_iqr_and_noise_flag():
    base = Record("s", "base", "speed", "", "", None, "")
    median, iqr = timing_records(Timing.from_values([1.0, 2.0, 3.0, 4.0, 5.0]), "prefill_time", base)
    assert (median.method, median.value, median.unit, median.status) == ("measured_median", 3.0, "s", "ok")
    assert median.error.startswith("noisy")
    assert (iqr.method, iqr.value) == ("measured_iqr", 2.0)


def test_cpu_lengths_are_scaled_to_the_cap_and_gpu_lengths_kept():
    # speed cap 64 at max_seq_len 8192: 512*64/8192 = 4, floored at 8; 2048 -> 16; 8192 -> 64
    assert scaled_seq_lens([512, 2048, 8192], 8192, "cpu", "speed") == {8: [512], 16: [2048], 64: [8192]}
    # kernels cap 32: 512 -> 2 and 2048 -> 8 both floor at 8; 8192 -> 32
    assert scaled_seq_lens([512, 2048, 8192], 8192, "cpu", "kernels") == {8: [512, 2048], 32: [8192]}
    assert scaled_seq_lens([512, 2048], 8192, "cuda", "speed") == {512: [512], 2048: [2048]}
    assert scaled_seq_lens([32, 64], 128, "cpu", "attention_speed") == {32: [32], 64: [64]}  # never up


# ---- kernel truth -------------------------------------------------------------------------


def test_profiler_tells_backends_apart():
    class Forced(torch.nn.Module):
        def __init__(self, backend):
            super().__init__()
            self.q = torch.nn.Parameter(torch.randn(1, 2, 8, 4))
            self.backend = backend

        def forward(self, _tokens):
            with sdpa_kernel([self.backend]):
                return F.scaled_dot_product_attention(self.q, self.q, self.q, is_causal=True)

    assert backends_ran(Forced(SDPBackend.MATH), None, train=True) == {"math": 1}
    assert backends_ran(Forced(SDPBackend.FLASH_ATTENTION), None, train=False) == {"flash": 1}


def test_refusal_is_recorded_with_torchs_reason():
    q = torch.randn(1, 2, 16, 8)
    k = torch.randn(1, 2, 8, 16).transpose(-1, -2)  # last-dim stride 16: fused kernels refuse
    call = SdpaCall((q, k, q), {"is_causal": True})
    ok, reason = eligibility(call, "flash", train=False)
    assert not ok and "stride 1" in reason
    assert eligibility(call, "math", train=True) == (True, "")


def test_refusal_reason_keeps_the_forced_backends_section():
    msgs = [  # torch's warnings when a forced CUDA backend is refused (sdp_utils.cpp)
        "Memory efficient kernel not used because: (Triggered internally at sdp_utils.cpp:1.)",
        "Memory efficient attention requires attn_mask stride alignment. (Triggered internally at x.cpp:2.)",
        "Flash attention kernel not used because: (Triggered internally at sdp_utils.cpp:3.)",
        "Flash attention does not support non-null attn_mask. (Triggered internally at x.cpp:4.)",
        "cuDNN attention kernel not used because: (Triggered internally at sdp_utils.cpp:5.)",
        "cuDNN attention has been runtime disabled. (Triggered internally at x.cpp:6.)",
    ]
    assert refusal_reason(msgs, "flash", "err") == "Flash attention does not support non-null attn_mask."
    assert refusal_reason(msgs, "cudnn", "err") == "cuDNN attention has been runtime disabled."
    assert refusal_reason(msgs, "efficient", "err").startswith("Memory efficient attention requires")
    assert refusal_reason([], "flash", "No available kernel. Aborting execution.") == (
        "No available kernel. Aborting execution."
    )


def test_kernels_on_the_tiny_orca_model(tiny_study_path):
    study = _study(tiny_study_path)
    recs = MEASUREMENTS["kernels"].fn(study.variants()[0], study)
    # depth 2: one SDPA call per layer, the CPU flash kernel (it takes the float ALiBi mask)
    assert [(r.category, r.value) for r in _pick(recs, metric="ran_train")] == [("flash", 2)]
    # on CPU seq 32 is scaled by the kernels cap 32 / max_seq_len 128: 32 * 32 / 128 = 8 tokens
    assert [(r.seq_len, r.value) for r in _pick(recs, metric="seq_len_requested")] == [(8, 32)]
    # ALiBi as a dense float mask: 4 heads x 8 x 8 x 4 bytes = 1,024 bytes, is_causal False
    mask = _pick(recs, metric="sdpa_attn_mask_bytes")[0]
    assert (mask.value, mask.category) == (1_024, "float32 (1, 4, 8, 8)")
    assert _pick(recs, metric="sdpa_is_causal")[0].value == 0
    assert _pick(recs, metric="sdpa_kv_heads_seen")[0].value == 4  # the one KV head expanded to 4
    eligible = {r.category: (r.value, r.status) for r in _pick(recs, metric="eligible_train")}
    assert eligible == {
        "flash": (1, "ok"),
        "math": (1, "ok"),
        "efficient": (0, "skipped"),
        "cudnn": (0, "skipped"),
    }
    assert "not applicable on cpu" in _pick(recs, metric="eligible_train", category="cudnn")[0].error
    enabled = {r.category: r.value for r in _pick(recs, metric="enabled_by_library")}
    assert enabled == {"flash": 1, "efficient": 1, "cudnn": 0, "math": 1}  # x-transformers' sdp_kwargs


# ---- attention microbenchmark and end-to-end ------------------------------------------------


def test_attention_speed_structure(tiny_study_path):
    # b=1, h=4, n=32, d=64, causal: 4*1*4*32*32*64 / 2 = 524,288
    assert sdpa_useful_flops((1, 4, 32, 64), 32, causal=True) == 524_288
    study = _study(tiny_study_path)
    recs = MEASUREMENTS["attention_speed"].fn(study.variants()[0], study)
    for case in ("with_bias", "no_bias"):
        assert _pick(recs, metric=f"sdpa_forward_flops_{case}")[0].value == 524_288
        timed = {
            r.category
            for r in _pick(recs, metric=f"sdpa_forward_time_{case}", method="measured_median")
            if r.status == "ok"
        }
        assert timed == {"flash", "math"}
        median = _pick(recs, metric=f"sdpa_forward_time_{case}", method="measured_median", category="math")[0]
        rate = _pick(recs, metric=f"sdpa_forward_flops_per_s_{case}", category="math")[0]
        assert rate.value == pytest.approx(524_288 / median.value)
        assert _pick(recs, metric=f"sdpa_best_vs_gemm_{case}")[0].value > 0


def test_utilisation_numerator_is_the_flop_counter_and_datasheet():
    from orca_analysis.formulas.flops import closed_form_flops

    cfg = load_study("tests/fixtures/tiny.yaml").base  # depth 2, heads 4, dim_head 64
    closed = closed_form_flops(cfg, 32, 2, causal=True)["total"]
    # the counter agrees with the closed form (tests/test_flops.py); training = forward + backward
    assert _counted_flops(cfg, 32, 2, training=True) == pytest.approx(
        closed.forward + closed.backward, rel=1e-9
    )
    assert _counted_flops(cfg, 32, 2, training=False) == pytest.approx(closed.forward, rel=1e-9)
    assert datasheet_peak("NVIDIA H100 80GB HBM3", "bfloat16") == 989e12
    assert datasheet_peak("NVIDIA H100 PCIe", "bfloat16") == 756e12
    assert datasheet_peak("NVIDIA H200", "float16") == 989e12
    assert datasheet_peak("NVIDIA A100-SXM4-80GB", "bfloat16") == 312e12
    assert datasheet_peak("NVIDIA H100 80GB HBM3", "float32") is None
    assert datasheet_peak("Tesla T4", "bfloat16") is None


def test_speed_records_and_cached_decoding_as_a_result(tiny_study_path):
    study = _study(tiny_study_path)
    recs = MEASUREMENTS["speed"].fn(study.variants()[0], study)
    # seq 32 scaled by the speed cap 64 / max_seq_len 128: 16 tokens per training step
    train = _pick(recs, metric="train_tokens_per_s")[0]
    step = _pick(recs, metric="train_step_time", method="measured_median")[0]
    assert (train.seq_len, train.unit) == (16, "tokens/s") and train.value == pytest.approx(16 / step.value)
    gemm = _pick(recs, metric="gemm_ceiling")[0].value
    util = _pick(recs, metric="train_utilisation_vs_gemm")[0].value
    assert util == pytest.approx(_pick(recs, metric="train_flops_per_s")[0].value / gemm)
    assert _pick(recs, metric="datasheet_peak")[0].status == "skipped"  # no datasheet for a CPU
    # ALiBi + KV cache: x-transformers' cached step fails; recorded, and decode timed without the cache
    agreement = _pick(recs, metric="decode_cache_agreement")[0]
    assert agreement.status == "error" and agreement.error.startswith("cached decoding failed")
    uncached = _pick(recs, metric="decode_uncached_tokens_per_s")[0]
    assert uncached.status == "ok" and uncached.category == "4 tokens after a 12-token prompt"
    # the base also decodes with one KV head and with 4, on the first flag set whose cache agrees:
    # token shift off is not enough (ALiBi + xPos crash), token shift and xPos off is
    kv = _pick(recs, metric="kv_ablation_decode_tokens_per_s")
    assert [r.category for r in kv] == [
        "attn=mqa,kv_heads=1,dropped=shift_tokens+rotary_xpos,new=4,prompt=12",
        "attn=mha,kv_heads=4,dropped=shift_tokens+rotary_xpos,new=4,prompt=12",
    ]
    assert all(r.status == "ok" and r.value > 0 for r in kv)
    agree = _pick(recs, metric="kv_ablation_cache_agreement")
    assert all(r.status == "ok" and r.value <= 1e-3 for r in agree)
    # closed form: 2 (K, V) x depth 2 x batch 1 x kv_heads x 16 tokens x dim_head 64 x 4 bytes
    assert [r.value for r in _pick(recs, metric="kv_ablation_cache_bytes")] == [
        2 * 2 * 1 * 1 * 16 * 64 * 4,
        2 * 2 * 1 * 4 * 16 * 64 * 4,
    ]
    # the base's training step is timed a second time: the relative difference of the two medians
    (rep,) = _pick(recs, metric="train_step_repeat_diff")
    again = float(rep.category.split("again ")[1].split(" s")[0])
    # (the category rounds to 4 significant digits: 5e-4 of the median at most)
    assert rep.status == "ok" and rep.value == pytest.approx(abs(again - step.value) / step.value, abs=1e-3)
    other = MEASUREMENTS["speed"].fn(study.variants()[1], study)
    assert not _pick(other, metric="kv_ablation_decode_tokens_per_s")  # once per study, on the base
    assert not _pick(other, metric="train_step_repeat_diff")


@pytest.mark.parametrize(("shift", "status", "uncached"), [(0, "ok", "skipped"), (1, "error", "ok")])
def test_cached_decoding_checked_against_the_full_forward(tiny_study_path, shift, status, uncached):
    # Without ALiBi the cache runs; with token shift it silently disagrees (the shifted-in
    # previous token is missing in a one-token step), which must show as an error record.
    sets = ["alibi_pos_bias=false", f"shift_tokens={shift}", "depth=1"]
    study = _study(tiny_study_path, sets)
    recs = MEASUREMENTS["speed"].fn(study.variants()[0], study)
    agreement = _pick(recs, metric="decode_cache_agreement")[0]
    assert agreement.status == status and agreement.value is not None
    assert (agreement.value <= 1e-3) == (status == "ok")
    assert _pick(recs, metric="decode_uncached_tokens_per_s")[0].status == uncached


def test_profiler_chatter_is_dropped_and_other_stderr_kept(capfd):
    from orca_analysis.measure.kernels import profiler_chatter_dropped

    with profiler_chatter_dropped():
        os.write(2, b"USDT:2026-12-01 SyncActivityProfilerHandler.cpp:52] profiler_start\nkeep me\n")
    err = capfd.readouterr().err
    assert "keep me" in err and "USDT:" not in err
