"""FLOPs: closed form by hand, counter == closed form, every SDPA backend alike, fvcore completed.

Tiny Orca-like shapes (tests/fixtures/tiny.yaml): d=64, L=2, h=4, one kv head, d_h=64 (the
x-transformers default), f=4d=256, V=256, ALiBi on a=2 heads, xPos rotary, SDPA.
"""

from __future__ import annotations

import resource

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils.flop_counter import FlopCounterMode

from orca_analysis.build import build_model, fake_model
from orca_analysis.formulas.flops import closed_form_flops, closed_form_kind, kaplan_6n, palm
from orca_analysis.instruments.flop_counter import causal_pairs, count_flops, count_ops
from orca_analysis.instruments.fvcore_flops import analysis, run_fvcore
from orca_analysis.kit.format import cell
from orca_analysis.measurements.flops import run as flops_measure
from orca_analysis.measurements.flops import summary as flops_summary
from orca_analysis.measurements.flops.section import flops_section
from orca_analysis.results.query import Results
from orca_analysis.study import load_study

METRICS = (
    "forward_dense",
    "forward_causal",
    "train_step_dense",
    "train_step_causal",
    "train_step_model_dense",
    "train_step_model_causal",
    "forward_executed",
    "train_step_executed",
)
aten = torch.ops.aten


@pytest.fixture(scope="module")
def tiny():
    from pathlib import Path

    return load_study(Path(__file__).parent / "fixtures" / "tiny.yaml", {})


def with_layers(cfg, **values):
    return cfg.with_values({("attn_layers", k): v for k, v in values.items()})


def closed(cfg, n, b, metric):
    step = "forward" if metric.startswith("forward") else "train_step"
    parts = closed_form_kind(cfg, n, b, metric.removeprefix(step + "_"))
    return {k: getattr(v, step) for k, v in parts.items()}


def assert_counter_matches_closed_form(cfg, n, b):
    count = count_flops(cfg, n, b)
    math = any(k.startswith("math") for k in count.attention_ops)
    for metric in METRICS:
        if math and metric.endswith("executed"):
            continue  # the math backend keeps the probabilities: it executes no recompute (see below)
        expected = closed(cfg, n, b, metric)
        got = {c: count.value(metric, c) for c in count.components()}
        assert set(got) <= set(expected), (metric, got)  # no `other`: every counted FLOP has a component
        assert {c: got.get(c, 0) for c in expected if c != "total"} == {
            c: v for c, v in expected.items() if c != "total"
        }, metric
        assert count.value(metric) == expected["total"], metric
    if not any(k.startswith("math") for k in count.attention_ops):  # (math: the recompute is added aside)
        assert count.mode_total == count.value("train_step_dense")  # FlopCounterMode's own sum
    return count


def test_closed_form_by_hand(tiny):
    f = closed_form_flops(tiny.base, 32, 1, causal=False)  # T = 32 tokens
    assert f["q_proj"].forward == 2 * 32 * 64 * 256 * 2 == 2_097_152  # 2 T d (h d_h) L
    assert f["k_proj"].forward == f["v_proj"].forward == 2 * 32 * 64 * 64 * 2 == 524_288  # one kv head
    assert f["out_proj"].forward == 2 * 32 * 256 * 64 * 2 == 2_097_152
    assert f["feedforward"].forward == (2 * 32 * 64 * 256 + 2 * 32 * 256 * 64) * 2 == 4_194_304
    assert f["logits"].forward == 2 * 32 * 64 * 256 == 1_048_576
    assert f["attention_core"].forward == 4 * 4 * 32 * 32 * 64 * 2 == 2_097_152  # 4 b h n^2 d_h L
    # backward: 2x forward + the recompute of Q K^T (2 b h n^2 d_h L): 2.5x forward
    assert f["attention_core"].backward == 2 * 2_097_152 + 1_048_576 == 5_242_880
    assert f["q_proj"].backward == 2 * f["q_proj"].forward
    # ALiBi per layer: sub, abs, neg over 32x32 + slopes over 2x32x32; fill and score add over 4x32x32
    assert f["alibi"].forward == 2 * (3 * 1024 + 2 * 1024) + 2 * 4096 + 2 * 4096 == 26_624
    assert f["alibi"].backward == 2 * 4096  # the recompute adds the bias again
    c = closed_form_flops(tiny.base, 32, 1, causal=True)
    assert c["attention_core"].forward == 4 * 4 * 528 * 64 * 2 == 1_081_344  # 32*33/2 = 528 pairs
    assert c["q_proj"] == f["q_proj"]  # causality changes attention only


def test_model_and_executed_flops_by_hand(tiny):
    """PaLM's model FLOPs leave the recompute out; HFU counts what the kernels run (T = 32 tokens)."""
    dense = closed_form_kind(tiny.base, 32, 1, "dense")
    model = closed_form_kind(tiny.base, 32, 1, "model_dense")
    # attention: forward 4 b h n^2 d_h L = 2,097,152, backward 2x without the recompute of Q K^T
    assert model["attention_core"].train_step == 3 * 2_097_152 == 6_291_456
    assert dense["attention_core"].train_step - model["attention_core"].train_step == 2 * 4 * 32 * 32 * 64 * 2
    assert model["alibi"].backward == 0  # the bias add of the backward is the recompute's
    causal = closed_form_kind(tiny.base, 32, 1, "model_causal")
    assert causal["attention_core"].train_step == 3 * 1_081_344  # 528 causal pairs per head
    # ALiBi passes a dense bias: SDPA computes every pair and recomputes, so executed = dense
    assert closed_form_kind(tiny.base, 32, 1, "executed") == dense
    no_alibi = with_layers(tiny.base, alibi_pos_bias=False)
    no_alibi.layers.pop("alibi_num_heads")
    # no bias: Attend passes is_causal and the kernel skips the masked blocks: the causal pairs, recompute in
    assert closed_form_kind(no_alibi, 32, 1, "executed") == closed_form_kind(no_alibi, 32, 1, "causal")
    einsum = with_layers(tiny.base, attn_flash=False)  # x-transformers' own path: dense, no recompute
    assert closed_form_kind(einsum, 32, 1, "executed") == closed_form_kind(einsum, 32, 1, "model_dense")
    with pytest.raises(KeyError, match="unknown FLOP count kind"):
        closed_form_kind(tiny.base, 32, 1, "useful")
    # counter against PaLM's 6N + 12LHQT: equal but for ALiBi's element-wise work and the 6 T x
    # (feed-forward biases 2*(256+64) + LayerNorm gains 2*2*64 = 896) parameters PaLM's N counts as matmuls
    count = count_flops(tiny.base, 32, 1)
    matmuls = count.value("train_step_model_dense") - count.value("train_step_model_dense", "alibi")
    assert palm(tiny.base, 32, 1).train_step - matmuls == 6 * 32 * 896 == 172_032


def test_estimates_by_hand(tiny):
    attn = 2 * 64 * 256 + 2 * 64 * 64  # W_q, W_o: 64 x (4*64); W_k, W_v: 64 x 64 (one kv head)
    ff = 64 * 256 + 256 + 256 * 64 + 64  # two Linears with biases
    n_kaplan = 2 * (attn + ff) + 2 * 2 * 64  # + a LayerNorm gain per sublayer (post-LN: no final norm)
    assert n_kaplan == 148_352
    assert kaplan_6n(tiny.base, 32, 1).train_step == 6 * n_kaplan * 32
    n_palm = n_kaplan + 64 * 256  # plus the logits matrix
    assert palm(tiny.base, 32, 1).train_step == (6 * n_palm + 12 * 2 * 4 * 64 * 32) * 32


def test_causal_pairs():
    assert causal_pairs(4, 4) == 4 + 3 + 2 + 1 == 10
    assert causal_pairs(2, 5) == 4 + 5 == 9  # bottom-right aligned, as with a KV cache
    assert causal_pairs(5, 2) == 1 + 2 == 3


def test_counter_matches_closed_form_every_tiny_variant(tiny):
    for variant in tiny.variants():
        for n in tiny.workloads.seq_lens:
            assert_counter_matches_closed_form(variant.config, n, 1)
    assert_counter_matches_closed_form(tiny.base, 48, 2)  # batch > 1


@pytest.mark.parametrize(
    "values",
    [
        dict(attn_one_kv_head=False, attn_kv_heads=2),  # GQA
        dict(ff_glu=True, ff_mult=2),
        dict(alibi_pos_bias=False, alibi_num_heads=None),
        dict(rotary_xpos=False),  # ALiBi cached after its first build
        dict(attn_flash=False),  # x-transformers' einsum path: no recompute
        dict(attn_value_dim_head=32),  # SDPA falls back to the math backend
    ],
)
def test_counter_matches_closed_form_options(tiny, values):
    cfg = with_layers(tiny.base, **values)
    if values.get("alibi_num_heads", 0) is None:
        cfg.layers.pop("alibi_num_heads")
    assert_counter_matches_closed_form(cfg, 40, 2)


def test_math_backend_counts_like_the_cpu_kernel(tiny):
    math = dict(enable_flash=False, enable_math=True, enable_mem_efficient=False)
    fused = count_flops(tiny.base, 32, 1)
    decomposed = count_flops(with_layers(tiny.base, attn_attend_sdp_kwargs=math), 32, 1)
    assert dict(fused.attention_ops) == {
        "_scaled_dot_product_flash_attention_for_cpu": 2,
        "_scaled_dot_product_flash_attention_for_cpu_backward": 2,
    }
    assert dict(decomposed.attention_ops) == {"math (decomposed into matmuls)": 2}
    for metric in METRICS[:6]:
        assert decomposed.value(metric) == fused.value(metric), metric
    # executed: the fused kernel recomputes S = Q K^T + bias in its backward, the math path does not:
    # 2 b h n^2 d_h L = 2*1*4*32*32*64*2 = 1,048,576 for the matmul, b h n^2 L = 8,192 for the bias add
    recompute = fused.value("train_step_dense") - fused.value("train_step_model_dense")
    assert recompute == 1_048_576 + 8_192
    assert fused.value("train_step_executed") - decomposed.value("train_step_executed") == recompute


def test_every_attention_kernel_counts_alike():
    b, h, n, d = 2, 4, 16, 8
    with FakeTensorMode():
        q, k, v = (torch.randn(b, h, n, d, requires_grad=True) for _ in range(3))
        bias = torch.randn(b, h, n, n)
        t = lambda x: x.transpose(1, 2)  # noqa: E731  (b, s, h, d), the layout of the kernels under SDPA
        kernels = {
            "cpu": lambda: aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, attn_mask=bias),
            "efficient": lambda: aten._scaled_dot_product_efficient_attention(q, k, v, bias, True),
            "cudnn": lambda: aten._scaled_dot_product_cudnn_attention(q, k, v, bias, True),
            "overrideable": lambda: aten._scaled_dot_product_fused_attention_overrideable(q, k, v, bias),
            "efficient_raw": lambda: aten._efficient_attention_forward(
                t(q), t(k), t(v), bias, None, None, n, n, 0.0, 0, True
            ),
        }
        for name, kernel in kernels.items():
            count = count_ops(lambda kernel=kernel: kernel()[0].sum().backward(), n)
            fwd, bwd = count.flops[("forward", "attention_core")], count.flops[("backward", "attention_core")]
            # forward 4 b h n^2 d = 65536 + the bias add b h n^2 = 2048; backward 10 b h n^2 d + 2048
            assert (fwd[0], bwd[0]) == (65_536 + 2048, 163_840 + 2048), name
            assert len(count.attention_ops) == 2, name  # its forward and its backward kernel
        flash = count_ops(lambda: aten._scaled_dot_product_flash_attention(q, k, v)[0].sum().backward(), n)
        raw = count_ops(
            lambda: (
                aten._flash_attention_forward(t(q), t(k), t(v), None, None, n, n, 0.0, False, False)[0]
                .sum()
                .backward()
            ),
            n,
        )
        causal = count_ops(lambda: aten._scaled_dot_product_flash_attention(q, k, v, 0.0, True)[0], n)
        with FlopCounterMode(display=False) as plain:  # torch 2.13 reads (b, s, h, d) as (b, h, s, d)
            aten._flash_attention_forward(t(q), t(k), t(v), None, None, n, n, 0.0, False, False)
    assert flash.value("train_step_dense") == raw.value("train_step_dense") == 65_536 + 163_840
    assert plain.get_total_flops() == 2 * 2 * 2 * 16 * 4 * 4 * 8 == 16_384  # its regression, fixed here
    assert causal.value("forward_causal") == 4 * 2 * 4 * 136 * 8 == 34_816  # 16*17/2 = 136 pairs


def test_entry_point_formula_when_not_decomposed():
    from orca_analysis.instruments.flop_counter import _Ledger

    formula = _Ledger(16, causal=False).mapping()[aten.scaled_dot_product_attention]
    with FakeTensorMode():
        q = torch.randn(2, 4, 16, 8)
        assert formula(q, q, q, out_val=None) == 4 * 2 * 4 * 16 * 16 * 8 == 65_536


def test_plain_counter_is_flop_counter_mode_as_shipped(tiny):
    count = count_flops(tiny.base, 32, 1)
    with fake_model(tiny.base) as (model, _):
        x = torch.randint(0, 256, (1, 32))
        with FlopCounterMode(display=False) as plain:
            torch.nn.functional.cross_entropy(model(x).transpose(1, 2), x).backward()
    assert count.plain["forward"] + count.plain["backward"] == plain.get_total_flops()
    # as shipped it misses the CPU attention kernel and the ALiBi work entirely
    missed = count.value("train_step_dense", "attention_core") + count.value("train_step_dense", "alibi")
    assert plain.get_total_flops() == count.value("train_step_dense") - missed


def test_counting_does_not_allocate(tiny):
    # dim 8192, 2 layers of the 55B shape: 1.4e9 parameters, 5.5 GB of float32 weights if real
    big = with_layers(
        tiny.base, dim=8192, heads=64, attn_dim_head=128, attn_one_kv_head=False, attn_kv_heads=8
    )
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    count = count_flops(big, 128, 1)
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown < 1024 * 1024  # under 1 GiB
    assert count.value("train_step_dense") == closed(big, 128, 1, "train_step_dense")["total"]


def test_fvcore_completed_matches_counter_and_plain_is_as_shipped(tiny):
    model = build_model(tiny.base).eval()
    x = torch.randint(0, 256, (2, 32))
    with torch.no_grad():
        fv = run_fvcore(model, x)
        plain = analysis(model, x, completed=False)
        plain_total = plain.total()
    count = count_flops(tiny.base, 32, 2)
    assert fv.total == count.value("forward_dense")
    assert fv.components == {
        **{c: count.value("forward_dense", c) for c in fv.components if c != "other"},
        "other": 0,
    }
    assert fv.plain_total == plain_total  # read from the same trace
    assert plain.unsupported_ops()["aten::scaled_dot_product_attention"] == 2  # one per attention layer
    assert fv.plain_unsupported["aten::scaled_dot_product_attention"] == 2
    assert "attn_layers.layers.0" in fv.table


def test_measure_flops_records(tiny, monkeypatch):
    variant = tiny.variants()[0]
    monkeypatch.setattr(
        flops_measure, "FVCORE_MAX_FORWARD_FLOP", closed(tiny.base, 32, 1, "forward_dense")["total"]
    )
    records = flops_measure.measure_flops(variant, tiny)  # workloads 32 and 64 tokens
    methods = {(r.seq_len, r.method, r.status) for r in records}
    assert (32, "fvcore", "ok") in methods and (64, "fvcore", "skipped") in methods
    skipped = next(r for r in records if r.seq_len == 64 and r.method == "fvcore_plain")
    assert "real weights" in skipped.note and skipped.value is None
    for method in ("counter", "closed_form", "counter_plain", "kaplan_6n", "palm"):
        assert any(r.method == method and r.status == "ok" for r in records), method
    results = Results.from_records(records)
    for n in (32, 64):
        for metric in METRICS:
            at = {"seq_len": n, "component": "total"}
            assert results.number(metric, method="counter", **at) == results.number(
                metric, method="closed_form", **at
            )
            assert results.number("closed_form_gap", seq_len=n, quantity=metric) == 0
    at32 = {"seq_len": 32, "component": "total"}
    assert results.number("forward_dense", method="fvcore", **at32) == results.number(
        "forward_dense", method="counter", **at32
    )
    assert results.number("fvcore_gap", seq_len=32) == 0
    # plain FlopCounterMode misses attention and ALiBi: its share of the dense step, stored once
    dense = results.number("train_step_dense", method="counter", **at32)
    plain = results.number("train_step_dense", method="counter_plain", **at32)
    assert results.number("plain_missed_share", seq_len=32, tool="flop_counter_mode") == pytest.approx(
        1 - plain / dense
    )
    per_token = results.number("train_step_causal_per_token", seq_len=64, component="total")
    assert (
        per_token == results.number("train_step_causal", method="counter", seq_len=64, component="total") / 64
    )
    assert all(r.unit for r in records)


def test_section_shows_the_stored_gaps(tiny, monkeypatch):
    monkeypatch.setattr(flops_measure, "FVCORE_MAX_FORWARD_FLOP", 0)  # fvcore skipped everywhere
    records = [r for v in tiny.variants()[:2] for r in flops_measure.measure_flops(v, tiny)]
    section = flops_section(Results.from_records(records), tiny)
    row = [cell(c) for c in section.tables[0].rows[0]]
    assert row[:2] == ["base", "32"] and row[5] == "+0.000%" and row[7:9] == ["not run", "not run"]
    assert {f.name for f in section.figures} == {"flops_vs_axes", "flops_components", "flops_vs_seq"}


def test_summary_and_text(tiny):
    s = flops_summary.flops_summary(tiny.base, 32, 1)
    assert s["totals"]["train_step_causal"]["relative_difference"] == 0
    assert {r["component"] for r in s["components"]} >= {"q_proj", "attention_core", "alibi", "logits"}
    assert s["fvcore"]["status"] == "ok" and s["fvcore"]["relative_difference_vs_counter"] == 0
    assert 0 < s["flop_counter_mode_plain"]["missed_share"] < 1
    text = flops_summary.flops_text(s)
    assert "attention_core" in text and "MFU" in text
