"""Memory: closed form by hand, closed form vs simulated, simulated vs measured (real CPU tensors),
the records the measurement writes and the section it reads them back into."""

import re

import pytest

from orca_analysis.catalog.metrics import lookup
from orca_analysis.formulas import FORMULAS
from orca_analysis.formulas import memory as fm
from orca_analysis.instruments.memtrack import run_steps
from orca_analysis.kit.format import cell
from orca_analysis.measurements import MEASUREMENTS
from orca_analysis.measurements.memory.run import TOLERANCE, measure_memory
from orca_analysis.measurements.memory.section import memory_section
from orca_analysis.measurements.memory.summary import memory_summary, memory_summary_text
from orca_analysis.measurements.memory_measured.run import measure_memory_measured
from orca_analysis.results.query import Results
from orca_analysis.study import load_study
from orca_analysis.study.load import BUILTIN_DIR
from orca_analysis.study.schema import ModelConfig

# tiny: V=256, d=64, L=2, h=4, ALiBi a=2, one kv head, d_h=64 (i = h*d_h = 256), f=256,
# rotary r = 32 with xPos, shift_tokens=1.
# P = 2*256*64 (table, logits) + 2*(64*256 + 64*64 + 64*64 + 256*64) (attention)
#   + 2*(64*256 + 256 + 256*64 + 64) (feed-forward) + 2*2*64 (norms) = 181,120


def tiny(*overrides: str):
    return load_study("tests/fixtures/tiny.yaml", list(overrides)).base


@pytest.fixture(scope="module")
def orca(tmp_path_factory):
    """The built-in Orca base (a copy of its study measuring memory only: the config is the same)."""
    text = (BUILTIN_DIR / "orca.yaml").read_text()
    path = tmp_path_factory.mktemp("orca") / "orca.yaml"
    path.write_text(re.sub(r"(?m)^measurements: .*$", "measurements: [memory]", text))
    return load_study(str(path)).base


@pytest.fixture(scope="module")
def tiny_records():
    study = load_study("tests/fixtures/tiny.yaml")
    base = study.variants()[0]  # the analytic measurement and its real-tensor check
    return study, measure_memory(base, study) + measure_memory_measured(base, study)


def test_closed_form_terms_by_hand():
    m = fm.dims(tiny(), n=32, b=1)
    assert (m.params, m.i, m.r, m.a, m.kv) == (181_120, 256, 32, 2, 1)
    assert fm.kv_cache(m, 32) == 2 * 1 * 64 * 32 * 1 * 2 * 4 == 32_768  # L * kv * d_h * n * b * (k, v) * 4
    assert fm.alibi_mask(m) == 1 * 4 * 32**2 * 4 == 16_384  # (b, h, n, n) fp32, per layer
    # int64 |j - i| twice = 16n^2 = 16,384; + slopes (a, n, n): 8n^2 + 2*4n^2 = 16,384; (a+h) n^2 * 4 = 24,576
    assert fm.alibi_build(m) == 24_576
    assert fm.logits(m) == 32 * 256 * 4 == 32_768  # (b, n, V)
    # per attention sublayer: x_in 2048 + q 8192 + k, v 2*2048 + SDPA out and merged copy 2*8192
    # + residual sum and normalised 2*2048 = 34,816 elements * 4 = 139,264; + lse 4*4*32 = 512
    # + LN mean, rstd 8*32 = 256; + rotary cos, sin (q, k) and 1/xPos scale 5*32*32*4 = 20,480
    assert fm.attention_saved(m) == 139_264 + 512 + 256 + 20_480 == 160_512
    # feed-forward: (3 * 2048 + 2 * 32*256) * 4 + 8*32 = 90,368
    assert fm.feedforward_saved(m) == 90_368
    # Korthikanti eq. 1, sbh(34 + 5as/h), at 4 bytes: 32*64*(34 + 5*4*32/64) * 2 = 180,224
    assert fm.korthikanti_layer(m) == 180_224


def test_zero_sixteen_bytes_per_parameter():
    m = fm.dims(tiny(), 1, 1)
    steps = 4 * (2 + 10 * 2)  # one fp32 step counter per parameter tensor: 22 tensors
    for name in ("fp32", "bf16_mixed"):  # 4 + 4 + 8 and ZeRO's 2 + 2 + (4 + 4 + 4)
        p = fm.PRECISIONS[name]
        assert fm.weights(m, p) + fm.gradients(m, p) + fm.optimizer_state(m, p) == 16 * 181_120 + steps
    names = ("weights", "kv_cache", "alibi_mask", "logits", "alibi_at_peak")
    assert all(f"memory.{k}" in FORMULAS for k in names)


def test_alibi_at_peak_by_hand():
    # backward_start (tiny, 64 tokens): the L = 2 saved (b, h, n, n) fp32 masks, 1*4*64^2*4 = 65,536 each
    assert fm.train_peak(tiny(), 64, 1).phase == "backward_start"
    assert fm.alibi_at_peak(tiny(), 64, 1) == 2 * 65_536 == 131_072
    # optimizer (tiny, 32 tokens): no activation is alive, and with rotary nothing is cached
    assert fm.train_peak(tiny(), 32, 1).phase == "optimizer"
    assert fm.alibi_at_peak(tiny(), 32, 1) == 0
    # without rotary the (h, n, n) bias is a buffer, alive at every phase: 4*32^2*4 = 16,384
    assert fm.alibi_at_peak(tiny("rotary_xpos=false"), 32, 1) == 16_384
    # forward_attention (V=16, 64 tokens: the logits no longer dominate): layer 2 is at its peak,
    # layer 1's mask is saved (65,536). Layer 2's moments: SDPA holds q*scale and its output
    # 2*64*256*4 + lse 4*4*64 = 132,096; at to_out also the merged copy 64*256*4 = 65,536 and to_out's
    # output 64*64*4 = 16,384, so to_out (132,096 + ALiBi + 81,920) beats SDPA (132,096 + ALiBi) and the
    # build (6*64^2*4 = 98,304). ALiBi at to_out: the (h, n, n) bias 4*64^2*4 = 65,536 + the masked
    # bias 65,536 (SDPA's bool causal mask, 64^2 = 4,096 bytes, is freed by then).
    cfg = tiny("num_tokens=16")
    assert fm.train_peak(cfg, 64, 1).phase == "forward_attention"
    _, moments = fm._attention_moments(fm.dims(cfg, 64, 1))
    assert moments == {
        "build": (98_304, 98_304),
        "sdpa": (132_096 + 135_168, 65_536 + 4_096 + 65_536),
        "out": (132_096 + 131_072 + 81_920, 131_072),
    }
    assert fm.alibi_at_peak(cfg, 64, 1) == 65_536 + 131_072 == 196_608
    assert fm.alibi_at_peak(tiny("alibi_pos_bias=false"), 64, 1) == 0


@pytest.mark.parametrize(
    "overrides",
    [[], ["depth=1"], ["dim=32"], ["rotary_xpos=false"], ["alibi_pos_bias=false"], ["attn_kv_heads=2"]],
    ids=lambda o: ",".join(o) or "tiny",
)
def test_closed_form_within_target_of_simulated(overrides):
    if overrides == ["attn_kv_heads=2"]:
        overrides = ["attn_one_kv_head=false", "attn_kv_heads=2"]
    cfg = tiny(*overrides)
    sims = run_steps(cfg, "float32", {(128, 2): ("train", "prefill"), (64, 1): ("train", "prefill")})
    for (n, b), res in sims.items():
        # measured on these shapes: within 4% (the target is 15%)
        assert fm.train_peak(cfg, n, b).total == pytest.approx(res["train"].total, rel=0.05)
        assert fm.prefill_peak(cfg, n, b).total == pytest.approx(res["prefill"].total, rel=0.07)
        assert sum(res["train"].categories.values()) == res["train"].total


def test_closed_form_on_orca_is_tight(orca):
    res = run_steps(orca, "float32", {(1024, 1): ("train", "prefill")})[(1024, 1)]
    train, prefill = fm.train_peak(orca, 1024, 1), fm.prefill_peak(orca, 1024, 1)
    assert train.total == pytest.approx(res["train"].total, rel=0.01)
    assert prefill.total == pytest.approx(res["prefill"].total, rel=0.01)
    # 6 dense (1, 8, 1024, 1024) fp32 masks, 32 MiB each, are saved for backward
    assert 6 * fm.alibi_mask(fm.dims(orca, 1024, 1)) == 6 * 8 * 1024**2 * 4
    # at 1024 tokens the peak is the start of the backward: exactly those 6 masks are the ALiBi bytes
    assert fm.train_peak(orca, 1024, 1).phase == "backward_start"
    assert fm.alibi_at_peak(orca, 1024, 1) == 6 * 8 * 1024**2 * 4
    # at 8192 it is the last layer's SDPA call: 5 saved masks (2 GiB each), and that layer's (h, n, n)
    # bias (2 GiB), bool causal mask (n^2 bytes) and masked (b, h, n, n) bias (2 GiB); not the build
    assert fm.train_peak(orca, 8192, 1).phase == "forward_attention"
    mask = 8 * 8192**2 * 4
    assert fm.alibi_at_peak(orca, 8192, 1) == 5 * mask + mask + 8192**2 + mask == 15_099_494_400


def test_simulated_equals_measured_on_cpu():
    cfg = tiny()
    jobs = {(64, 4): ("train", "prefill")}  # activations dominate here, so the check bites
    sim, real = (
        run_steps(cfg, "float32", jobs)[(64, 4)],
        run_steps(cfg, "float32", jobs, device="cpu")[(64, 4)],
    )
    assert sim["train"].categories["activations"] > sim["train"].categories["parameters"]
    for step in ("train", "prefill"):
        assert sim[step].total == pytest.approx(real[step].total, rel=0.05)
        for phase, value in real[step].phases.items():
            assert sim[step].phases[phase] == pytest.approx(value, rel=0.05)


def test_cached_decoding_failure_is_a_result_and_kv_cache_is_exact():
    res = run_steps(tiny(), "float32", {(32, 1): ("prefill", "decode")})[(32, 1)]
    assert res["decode"].startswith("x-transformers") and "cached decoding failed" in res["decode"]
    assert res["prefill"].extra["kv_cache"] == 32_768  # as derived by hand above
    # x-transformers keeps 2L+1 = 5 hidden states (1, 32, 64) fp32 too: 5 * 8192 = 40,960 more
    assert res["prefill"].extra["cache_object"] == 32_768 + 40_960
    works = run_steps(tiny("rotary_xpos=false"), "float32", {(32, 1): ("prefill", "decode")})[(32, 1)]
    assert not isinstance(works["decode"], str)  # ALiBi without positions decodes with the cache


def test_fits_comes_from_the_simulation_and_a_gap_says_why():
    """A 7B-like Llama with x-transformers' default attn_flash=false: the closed form (which models flash
    attention) gives a 127 GB training peak, 'fits 141 GB'; the simulation keeps every layer's (1, 32, 4096, 4096)
    fp32 scores and probabilities (2 GiB each) and peaks above 300 GB: it does not fit, and the gap is named."""
    llama7b = ModelConfig(
        {"num_tokens": 32000, "max_seq_len": 4096, "use_abs_pos_emb": False},
        {
            "dim": 4096,
            "depth": 32,
            "heads": 32,
            "rotary_pos_emb": True,
            "use_rmsnorm": True,
            "ff_glu": True,
            "ff_swish": True,
            "ff_no_bias": True,
        },
    )
    s = memory_summary(llama7b, 4096, 1)
    assert s["train"]["closed_form"] < fm.DEVICE_MEMORY["141GB"] < 300e9 < s["train"]["simulated"]
    assert s["fits"]["141GB"] == {"train": False, "inference": False}
    assert any(
        g.startswith("training step: the closed form is -") and "attn_flash=false" in g for g in s["gaps"]
    )


def test_declaration():
    m, real = MEASUREMENTS["memory"], MEASUREMENTS["memory_measured"]
    # memory is deterministic (closed form, simulation): it runs in the sweep's process, on no GPU
    s = m.schedule
    assert (m.shown.order, s.gpu, s.isolated, s.per_workload, m.spec.version) == (30, False, False, False, 4)
    r = real.schedule
    assert (real.shown.order, r.gpu, r.gpu_group, r.gpu_share, r.isolated, r.per_workload) == (
        35,
        True,
        "memory",
        0.15,
        True,
        False,
    )
    assert real.metrics and set(real.metrics) <= set(m.metrics)
    assert r.parallel  # untimed: it may share the end of a run with training
    assert lookup("peak_train").labels == ("category",) and lookup("memory_rel_error").unit == "fraction"


def test_measure_memory_records(tiny_records):
    study, records = tiny_records
    results = Results.from_records(records)
    assert all(r.unit == lookup(r.metric).unit for r in records)
    assert {r.scale for r in records if r.method in ("closed_form", "simulated", "derived")} <= {
        "analytic",
        "measured",
    }
    assert {r.scale for r in records if r.method == "measured"} == {"measured"}
    assert all(r.scale == "analytic" for r in records if r.method in ("closed_form", "simulated"))
    cf_sim = results.values("memory_rel_error", quantity="peak_train", pair="closed_form_vs_simulated")
    # 32, 64: the study's lengths; 128: the sweep to max_seq_len, simulated for the base variant's training
    assert {v.seq_len for v in cf_sim} == {32, 64, 128} and all(v.get("phase") == "all" for v in cf_sim)
    for v in (
        cf_sim
    ):  # stored once: closed form / simulated - 1, within its tolerance here; past 1%, the note says why
        at = {"seq_len": v.seq_len, "category": "total"}
        cf, sim = (results.number("peak_train", method=m, **at) for m in ("closed_form", "simulated"))
        assert v.value == pytest.approx(cf / sim - 1) and abs(v.value) <= TOLERANCE[v.get("pair")]
        assert v.note.startswith("misses ") if abs(v.value) > 0.01 else not v.note
    prefill = {
        v.method: v for v in results.values("peak_prefill", seq_len=128, category="total", status=None)
    }
    assert prefill["closed_form"].value > 0 and prefill["simulated"].status == "skipped"
    assert prefill["simulated"].note
    measured = results.values("memory_rel_error", pair="simulated_vs_measured")
    assert {v.get("phase") for v in measured} >= {"all", "forward", "backward"}
    assert measured and all(abs(v.value) <= 0.05 for v in measured)
    decode = results.values("peak_decode_cached", method="simulated", status=None)
    assert decode and all(
        v.status == "error" and v.value is None and "cached decoding failed" in v.note for v in decode
    )
    state = results.values("training_state", precision="fp32")
    assert sum(v.value for v in state) == 16 * 181_120 + 4 * 22  # weights, gradients, AdamW: 16 B/param
    fits = results.values("fits_train", seq_len=32)
    assert {v.get("capacity"): v.value for v in fits} == {"80GB": 1.0, "141GB": 1.0}


def test_alibi_share_is_of_the_closed_form_peak_at_that_moment(tiny_records):
    _, records = tiny_records
    results = Results.from_records(records)
    shares = results.values("alibi_share_of_peak", method="closed_form")
    # every length with a closed form: the study's 32, 64 and the sweep's 128
    assert {v.seq_len for v in shares} == {32, 64, 128}
    for v in shares:
        at = {"seq_len": v.seq_len, "batch": v.batch}
        alibi = results.number("alibi_bytes_at_peak", method="closed_form", **at)
        assert alibi == fm.alibi_at_peak(tiny(), v.seq_len, 1)
        assert v.value == alibi / results.number("peak_train", method="closed_form", category="total", **at)
    # 64 tokens: the two saved masks (131,072 bytes) of a 3,538,520-byte peak (backward_start)
    assert results.number("alibi_share_of_peak", seq_len=64, method="closed_form") == pytest.approx(
        131_072 / 3_538_520
    )


def test_alibi_at_the_simulated_peak_is_the_tracker_s_and_the_parts_sum(tiny_records):
    _, records = tiny_records
    results = Results.from_records(records)
    sim = {"method": "simulated", "batch": 1}
    # 64 tokens (backward_start): the tracker finds the two saved (b, h, n, n) masks alive, 2 * 65,536 bytes,
    # which is the closed form's count: the two methods agree exactly
    assert (
        results.number("alibi_bytes_at_peak", seq_len=64, **sim) == 131_072 == fm.alibi_at_peak(tiny(), 64, 1)
    )
    assert results.number("memory_rel_error", seq_len=64, quantity="alibi_bytes_at_peak") == 0
    for seq_len in (32, 64):
        total = results.number("peak_train", category="total", seq_len=seq_len, **sim)
        parts = {v.get("part"): v.value for v in results.values("peak_train_part", seq_len=seq_len, **sim)}
        assert set(parts) == {"alibi_bias", "weight_state", "other"} and sum(parts.values()) == total
        cats = ("parameters", "gradients", "optimizer_state")
        assert parts["weight_state"] == sum(
            results.number("peak_train", category=c, seq_len=seq_len, **sim) for c in cats
        )
        assert results.number("alibi_share_of_peak", seq_len=seq_len, **sim) == parts["alibi_bias"] / total


def test_unmodelled_gap_is_named(tiny_study_path):
    study = load_study(str(tiny_study_path), ["attn_flash=false"])
    results = Results.from_records(measure_memory(study.variants()[0], study))
    errors = results.values("memory_rel_error", pair="closed_form_vs_simulated")
    bad = [v for v in errors if abs(v.value) > TOLERANCE["closed_form_vs_simulated"]]
    # beyond its tolerance: still an ok value, the note says by how much and what the closed form misses
    assert bad and all(v.status == "ok" and "beyond 15%: misses" in v.note for v in bad)
    assert all("attn_flash=false" in v.note for v in bad)


def test_section_reads_the_stored_values(tiny_records):
    study, records = tiny_records
    results = Results.from_records(records)
    section = memory_section(results, study)
    peaks, gaps, held, check = section.tables
    assert peaks.title == "Training-step and inference peaks" and len(peaks.columns) == 10
    assert gaps.title == "Where the closed form and the simulation differ by more than 1%"
    assert gaps.rows and all(abs(r[3].value) > 0.01 and r[4].startswith("misses ") for r in gaps.rows)
    # what the peak holds at the longest length (the sweep's 128 tokens), for the base only (simulated there)
    assert held.title == "What the training-step peak holds at 128 tokens" and [r[0] for r in held.rows] == [
        "base"
    ]
    at = {"seq_len": 128, "method": "simulated"}
    parts = {v.get("part"): v.value for v in results.values("peak_train_part", **at)}
    assert (
        held.rows[0][1].value == sum(parts.values()) == results.number("peak_train", category="total", **at)
    )
    assert [q.value for q in held.rows[0][2:5]] == [
        parts["alibi_bias"],
        parts["weight_state"],
        parts["other"],
    ]
    row = [cell(c) for c in peaks.rows[1]]  # base, 64 tokens
    err = results.number(
        "memory_rel_error", seq_len=64, quantity="peak_train", pair="closed_form_vs_simulated", phase="all"
    )
    assert row[:2] == ["base", "64"] and row[4] == f"{err * 100:+.2f}%"
    cf = results.number("peak_train", method="closed_form", seq_len=64, category="total")
    assert row[2] == f"{cf / 2**20:,.1f} MiB" and row[9] == "80GB: yes, 141GB: yes"
    assert [cell(c) for c in peaks.rows[2]][2:] == ["n/a"] * 7 + ["80GB: n/a, 141GB: n/a"]  # dim=32: not run
    assert check.columns == ["variant", "device", "tokens x batch", "simulated", "measured", "error"]
    assert [cell(c) for c in check.rows[0]][:3] == ["base", "cpu", "32 x 1"]
    assert [f.name for f in section.figures] == ["memory_breakdown"]  # the sweep has one length here (128)
    assert "At 128 tokens the largest activation term of the base model is 'attention'" in section.intro
    empty = memory_section(Results.from_records([]), study)
    assert empty.missing and not empty.tables


def test_summary_for_inspect():
    summary = memory_summary(tiny(), 64, 1)
    assert (
        summary["inference"]["kv_cache_closed_form"] == summary["inference"]["kv_cache_simulated"] == 65_536
    )
    assert summary["train"]["simulated"] == sum(summary["train"]["simulated_categories"].values())
    assert "KV cache" in memory_summary_text(summary)


@pytest.mark.parametrize(
    "overrides", [[], ["rotary_xpos=false"], ["alibi_pos_bias=false"]], ids=lambda o: ",".join(o) or "tiny"
)
def test_lean_tracker_equals_upstream_dispatch(overrides, monkeypatch):
    # the lean dispatch and two-level snapshot copy must not change one byte or FLOP: every phase peak,
    # category, module and ALiBi tally, and the counted training FLOPs, equal upstream's own path
    from orca_analysis.instruments.memtrack import _Tracker

    cfg = tiny(*overrides)
    jobs = {(128, 2): ("train", "prefill", "decode"), (64, 1): ("train",)}
    runs = {}
    for lean in (True, False):
        monkeypatch.setattr(_Tracker, "lean", lean)
        flops: dict = {}
        runs[lean] = (run_steps(cfg, "float32", jobs, flops=flops), flops)
    assert runs[True] == runs[False]
    assert runs[True][0][(128, 2)]["train"].total > 0 and set(runs[True][0]) == set(jobs)


def test_absolute_positions_at_the_context_limit_skip_the_decode_step_only(write_study, tiny_study_path):
    """A GPT-2-like design (learned absolute positions, no rotary, no ALiBi) at seq_len == max_seq_len: the
    cached decode step has no position left (a skipped record saying so), and every other memory record, at
    that length and below, is measured (regression: the whole measurement was lost, and `inspect` crashed)."""
    text = (
        tiny_study_path.read_text()
        .replace("use_abs_pos_emb: false", "use_abs_pos_emb: true")
        .replace("    alibi_pos_bias: true\n    alibi_num_heads: 2\n    rotary_xpos: true\n", "")
        .replace("seq_lens: [32, 64]", "seq_lens: [64, 128]")
    )  # fmt: skip  (max_seq_len: 128)
    study = load_study(str(write_study(text)))
    base = study.variants()[0]
    results = Results.from_records(measure_memory(base, study))
    (skipped,) = results.values("peak_decode_cached", method="simulated", seq_len=128, status="skipped")
    assert "fills the absolute position table (128 positions)" in skipped.note
    assert results.one("peak_decode_cached", method="simulated", seq_len=64, category="total").value > 0
    for n in (64, 128):
        assert results.one("peak_train", method="simulated", seq_len=n, category="total").value > 0
        assert results.one("peak_prefill", method="simulated", seq_len=n, category="total").value > 0
    assert not results.records(status="error")
    text = memory_summary_text(memory_summary(base.config, 128, 1))  # `inspect` prints one line for it
    assert "cached decode step: " in text and "no position is left for a cached token" in text
