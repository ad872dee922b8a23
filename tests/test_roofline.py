"""Time from the operator graph: per-operator FLOPs and bytes from the walk, the roofline floor, the
prediction, the MFU ceiling; and the floor checked against this CPU's measured step times."""

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from orca_analysis.devices import device
from orca_analysis.instruments import memtrack
from orca_analysis.instruments.flop_counter import count_flops
from orca_analysis.instruments.gpu_forecast import walk
from orca_analysis.instruments.roofline import (
    CostRecorder,
    OpCost,
    Peaks,
    floor_s,
    gpu_peaks,
    model_flops,
    predicted_s,
)
from orca_analysis.measurements import MEASUREMENTS
from orca_analysis.study import load_study


def test_one_matmul_is_recorded_with_its_flops_and_bytes():
    """(64 x 128) @ (128 x 256) float32: 2 * 64 * 128 * 256 = 4,194,304 FLOPs; bytes read 64*128*4 + 128*256*4
    = 32,768 + 131,072, written 64*256*4 = 65,536: 229,376. The transpose is a view: no operator."""
    rec = CostRecorder()
    with FakeTensorMode():
        a, b = torch.randn(64, 128), torch.randn(256, 128)
        with rec.step("x"):
            a @ b.t()
    (op,) = rec.steps["x"]
    assert (op.cls, op.flops, op.executed, op.bytes, op.out_bytes) == (
        "gemm",
        4_194_304,
        4_194_304,
        229_376,
        65_536,
    )


def test_an_expanded_input_is_read_once():
    """k expanded from 1 to 8 heads (stride 0): the kernel reads 1 x 32 x 16 x 4 = 2,048 bytes of it, not 8x."""
    rec = CostRecorder()
    with FakeTensorMode():
        q = torch.randn(1, 8, 32, 16)
        k = torch.randn(1, 1, 32, 16).expand(1, 8, 32, 16)
        with rec.step("x"):
            torch.ops.aten._scaled_dot_product_efficient_attention(q, k, k, None, False, 0.0, True)
    (op,) = rec.steps["x"]
    # read: q 16,384 B + k and v (one storage) 2,048 B; written: out 16,384 B and the philox seed and offset
    # (2 x 8 B); no logsumexp (compute_log_sumexp=False: an empty tensor)
    assert op.cls == "attention:efficient" and op.bytes == 16_384 + 2_048 + 16_384 + 16
    # torch's formula: 4 b h n^2 d = 4 * 8 * 32^2 * 16 = 524,288 dense; is_causal and no mask: the kernel runs
    # the causal pairs, 32 * 33 / 2 of 32^2: 524,288 * 528 / 1024 = 270,336
    assert (op.flops, op.executed) == (524_288, 270_336)


def test_floor_and_prediction_by_hand():
    """A GEMM of 1e12 FLOPs and 1e9 bytes, and a copy of 4e9 bytes, on 1e15 FLOP/s and 2e12 B/s:
    floor = max(1 ms, 0.5 ms) + max(0, 2 ms) = 3 ms; predicted at GEMM 0.5 and memory 0.8, 1 us per operator:
    max(2 ms, 0.625 ms) + 2.5 ms + 2 us = 4.502 ms."""
    ops = [
        OpCost("mm", "gemm", "bfloat16", 10**12, 10**12, 10**9),
        OpCost("copy", "memory", "bfloat16", 0, 0, 4 * 10**9),
    ]
    peaks = Peaks("x", {"bfloat16": 1e15}, 2e12, 1e-6, {"gemm": 0.5, "memory": 0.8})
    assert floor_s(ops, peaks) == pytest.approx(3e-3) and predicted_s(ops, peaks) == pytest.approx(4.502e-3)


@pytest.mark.parametrize(
    "path", ["tests/fixtures/gpt2-tiny.yaml", "tests/fixtures/llama-tiny.yaml", "tests/fixtures/tiny.yaml"]
)
def test_model_flops_from_the_walk_equal_the_counter(path):
    """PaLM's model FLOPs from the memory walk's operators against the operator counter's (flops measurement).
    The counter also counts ALiBi's element-wise work (bias construction and fills: tiny at 64 x 2, 172,032
    FLOPs); matmuls and attention agree exactly."""
    cfg = load_study(path).base
    costs = {}
    memtrack.run_steps(cfg, "float32", {(64, 2): ("train", "prefill")}, costs=costs)
    count = count_flops(cfg, 64, 2)
    alibi = 172_032 if cfg.layers.get("alibi_pos_bias") else 0
    assert model_flops("train", costs[(64, 2)]["train"]) == count.value("train_step_model_dense") - alibi
    assert model_flops("prefill", costs[(64, 2)]["prefill"]) == count.value("forward_dense") - alibi


def test_the_floor_is_below_the_measured_cpu_step_times_of_a_tiny_model():
    """The speed measurement on this CPU records, beside each timed training step and prefill, the floor and
    the prediction from this CPU's measured peaks. A floor above a measurement would be a bug."""
    study = load_study("tests/fixtures/tiny.yaml")
    records = MEASUREMENTS["speed"].run(study.variants()[0], study)
    by = {
        (r.metric, r.seq_len): r.value
        for r in records
        if r.value is not None and r.labels.get("repeat") is None
    }
    timed = {(r.metric, r.seq_len): r for r in records if r.metric in ("train_step_time", "prefill_time")}
    pairs = 0
    for name, metric in (("train_step", "train_step_time"), ("prefill", "prefill_time")):
        for (m, n), _ in timed.items():
            if m != metric:
                continue
            median = sorted(r.value for r in records if r.metric == metric and r.seq_len == n)
            median = median[len(median) // 2]
            assert (
                0 < by[(f"{name}_floor", n)] < median
                and by[(f"{name}_predicted", n)] > by[(f"{name}_floor", n)]
            )
            # calibrated = floor + the design's own per-operator cost (measured at 1 token) x the operators
            cal = next(r for r in records if r.metric == f"{name}_calibrated" and r.seq_len == n)
            ops = int(cal.note.split(" operators")[0])
            cost = by[(f"{name}_op_cost", None)]
            assert cost > 0 and cal.value == pytest.approx(by[(f"{name}_floor", n)] + cost * ops, rel=1e-12)
            pairs += 1
    assert pairs >= 2
    assert any(r.metric == "copy_bandwidth" and r.value > 1e8 for r in records)


def test_a_gpu_step_is_not_faster_than_its_floor_and_its_mfu_ceiling_is_a_fraction():
    cfg = load_study("tests/fixtures/llama-tiny.yaml").base
    w = walk(cfg, device("h100"), "bfloat16", 64, 2)
    for t in w.times(device("h100"), "bfloat16").values():
        assert 0 < t.floor_s < t.predicted_s and 0 < t.mfu_ceiling_kernel <= t.mfu_ceiling
    assert gpu_peaks(device("h100")).flops["bfloat16"] == 9.895e14
