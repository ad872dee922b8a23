"""The timing harness (instruments/timing.py) and the CPU length scaling (instruments/device.py)."""

import time

import pytest
import torch
from speed_common import _pick, _study

from orca_analysis.instruments.device import scaled_seq_lens
from orca_analysis.instruments.timing import Timing, time_fn
from orca_analysis.measurements import MEASUREMENTS
from orca_analysis.measurements.recorder import Recorder
from orca_analysis.results.query import Results

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


def test_every_timing_sample_is_a_record_and_the_query_takes_their_median():
    study = _study()
    rec = Recorder(study.name, study.variants()[0], "speed", device="cpu", dtype="float32", scale="proxy")
    timing = Timing.from_values([1.0, 2.0, 3.0, 4.0, 5.0])
    rec.at(seq_len=16, batch=1).timing("prefill_time", timing)
    rec.at(seq_len=16, batch=1).rate("prefill_tokens_per_s", timing, 16)
    samples = _pick(rec.records, "prefill_time")
    assert [(r.labels["repeat"], r.value, r.method, r.unit) for r in samples] == [
        (i, float(i + 1), "measured", "s") for i in range(5)
    ]
    assert all(r.status == "ok" and r.note.startswith("noisy") for r in samples)  # IQR 2 = 67% of 3
    v = Results.from_records(rec.records).one("prefill_time")
    assert (v.value, v.n, v.spread, v.sample_ids) == (3.0, 5, 4.0, (0, 1, 2, 3, 4))
    # 16 tokens / median 3 s
    assert Results.from_records(rec.records).number("prefill_tokens_per_s") == pytest.approx(16 / 3)


def test_cpu_lengths_are_scaled_to_the_cap_and_gpu_lengths_kept():
    cap = {n: MEASUREMENTS[n].schedule.cpu_seq_cap for n in ("kernels", "attention_speed", "speed")}
    # speed cap 64 at max_seq_len 8192: 512*64/8192 = 4, floored at 8; 2048 -> 16; 8192 -> 64
    assert scaled_seq_lens([512, 2048, 8192], 8192, "cpu", cap["speed"]) == {8: [512], 16: [2048], 64: [8192]}
    # kernels cap 32: 512 -> 2 and 2048 -> 8 both floor at 8; 8192 -> 32
    assert scaled_seq_lens([512, 2048, 8192], 8192, "cpu", cap["kernels"]) == {8: [512, 2048], 32: [8192]}
    assert scaled_seq_lens([512, 2048], 8192, "cuda", cap["speed"]) == {512: [512], 2048: [2048]}
    assert scaled_seq_lens([32, 64], 128, "cpu", cap["attention_speed"]) == {32: [32], 64: [64]}  # never up
