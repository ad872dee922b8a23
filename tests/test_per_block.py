"""Per-block FLOPs and memory: equal to the full walk, exactly, or refused with a reason (and then
the full walk's numbers). Tiny CPU shapes: d = 32 or 64, depth 4-6, 16 or 48 tokens."""

from __future__ import annotations

from pathlib import Path

import pytest

from orca_analysis.instruments import analytic as route
from orca_analysis.instruments import kept_walks, memtrack
from orca_analysis.instruments import per_block as pb
from orca_analysis.instruments.flop_counter import count_flops
from orca_analysis.instruments.memtrack import run_steps
from orca_analysis.study import load_study
from orca_analysis.study.schema import ModelConfig

METRICS = ("forward_dense", "forward_causal", "train_step_dense", "train_step_causal")
N, B = 16, 1  # tokens, batch
TRAIN = {(N, B): ("train",)}
# The memory cases' jobs. Orca-like at 48 tokens: its training step peaks in the backward up to
# depth 5 and in the forward at depth 6 (see test_memory_exact_where_the_peak_phase_moves_with_depth).
JOBS = {
    "orca_like": {(48, 1): ("train", "prefill")},
    "plain_pre_norm": {(N, B): ("train", "prefill", "decode")},
    "gqa_glu_tied": {(N, B): ("train",)},
}
TINY = load_study(
    str(Path(__file__).parent / "fixtures" / "tiny.yaml")
).base  # ALiBi + xPos + DeepNorm + token shift + one KV head
PLAIN = {"dim": 32, "depth": 6, "heads": 4}  # pre-norm, absolute positions, LayerNorm, GELU


def config(base: ModelConfig | None = None, wrapper: dict | None = None, **layers) -> ModelConfig:
    if base is None:
        base = ModelConfig({"num_tokens": 256, "max_seq_len": 128}, dict(PLAIN))
    return ModelConfig({**base.wrapper, **(wrapper or {})}, {**base.layers, **layers})


CASES = {
    "orca_like": config(TINY, depth=6),
    "plain_pre_norm": config(),
    "grouped_query": config(attn_kv_heads=2, attn_flash=True),
    "glu": config(TINY, depth=6, dim=32, ff_glu=True),
    "tied": config(TINY, {"tie_embedding": True}, depth=6, dim=32),
}
# Memory costs ~3 small walks + 1 full walk per case: grouped-query, GLU and tied are one case there.
MEMORY = {
    "orca_like": CASES["orca_like"],
    "plain_pre_norm": CASES["plain_pre_norm"],
    "gqa_glu_tied": config(wrapper={"tie_embedding": True}, attn_kv_heads=2, ff_glu=True),
}


def flop_table(c) -> dict:
    """Every number of a FlopCount: each metric by component, the raw cells, plain, ops, mode total."""
    by_metric = {(m, comp): c.value(m, comp) for m in METRICS for comp in [None, *c.components()]}
    return {
        "metric": by_metric,
        "cells": {k: list(v) for k, v in c.flops.items()},
        "plain": dict(c.plain),
        "ops": dict(c.attention_ops),
        "mode_total": c.mode_total,
    }


@pytest.fixture(scope="module")
def flop_pairs():
    """Per case: (shortcut, note) and the full count (the FLOPs check is at depth 3: depth 4 will do,
    but for the Orca-like config, counted at its depth 6)."""
    cfgs = {k: c if k == "orca_like" else pb.at_depth(c, 4) for k, c in CASES.items()}
    return {k: (pb.count_flops_per_block(c, N, B), count_flops(c, N, B)) for k, c in cfgs.items()}


@pytest.mark.parametrize("name", CASES)
def test_flops_shortcut_equals_full_walk(flop_pairs, name):
    (got, note), full = flop_pairs[name]
    assert note == ""
    assert flop_table(got) == flop_table(full)


def test_flops_by_hand_on_the_orca_like_config(flop_pairs):
    (got, _), _ = flop_pairs["orca_like"]
    # per block: W_q (d, h d_h) = (64, 256): 2 T d (h d_h) = 2*16*64*256 = 524,288; six blocks
    assert got.value("forward_dense", "q_proj") == 6 * 524_288 == 3_145_728
    # outside the blocks, once whatever the depth: W_out (64, 256): 2*16*64*256 = 524,288
    assert got.value("forward_dense", "logits") == 524_288
    assert got.value("train_step_dense", "logits") == 3 * 524_288  # + grad input + grad weight


@pytest.fixture(scope="module")
def memory_pairs():
    out = {}
    for name, cfg in MEMORY.items():
        out[name] = (pb.simulate_per_block(cfg, "float32", JOBS[name]), run_steps(cfg, "float32", JOBS[name]))
    return out


@pytest.mark.parametrize("name", MEMORY)
def test_memory_shortcut_equals_full_walk(memory_pairs, name):
    (got, note), full = memory_pairs[name]
    assert note == ""
    assert got.keys() == full.keys()
    for wl, steps in full.items():
        assert got[wl].keys() == steps.keys()
        for step, want in steps.items():  # Tracked is a dataclass: every field, every integer
            assert got[wl][step] == want, (name, wl, step)
    cfg, (wl,) = MEMORY[name], JOBS[name]  # token_emb, attn_layers, to_logits (none when tied), blocks
    assert len(got[wl]["train"].modules) == 3 + 2 * cfg.depth - ("tie_embedding" in cfg.wrapper)


def test_memory_by_hand(memory_pairs):
    (got, _), _ = memory_pairs["orca_like"]
    prefill = got[(48, 1)]["prefill"]
    # KV cache: per layer k and v (b, h_kv, n, d_h) in fp32, one KV head, d_h = 64 (the default):
    # 6 * 2 * (1 * 1 * 48 * 64) * 4 = 147,456
    assert prefill.extra["kv_cache"] == 6 * 2 * 1 * 1 * 48 * 64 * 4 == 147_456
    # the cache object adds the 2L + 1 hidden states (b, n, d): 147,456 + 13 * 48 * 64 * 4 = 307,200
    assert prefill.extra["cache_object"] == 147_456 + 13 * 48 * 64 * 4 == 307_200
    (got, _), _ = memory_pairs["plain_pre_norm"]
    assert not isinstance(got[(N, B)]["decode"], str)  # no ALiBi: cached decoding runs, and is extrapolated


def test_memory_exact_where_the_peak_phase_moves_with_depth(memory_pairs):
    # Orca-like, 48 tokens: up to depth 5 the training step peaks at the start of the backward (the
    # logits and their gradients); at depth 6 the saved activations (ALiBi's (b, h, n, n) masks) make
    # the forward the peak. Extrapolating the small depths' peak would take the wrong phase and the
    # wrong categories; extrapolating each region, then taking the max, does not.
    (got, note), full = memory_pairs["orca_like"]
    at_5 = run_steps(pb.at_depth(MEMORY["orca_like"], 5), "float32", {(48, 1): ("train",)})
    assert (at_5[(48, 1)]["train"].phase, full[(48, 1)]["train"].phase) == ("backward", "forward")
    assert note == "" and got == full


REFUSED = {
    # (depth 2 is cheap, and the setting is refused before the depth is looked at)
    "per_layer_shift": (
        config(TINY, depth=2, dim=32, shift_tokens=[1, 0, 0, 1]),
        "shift_tokens=[1, 0, 0, 1]",
    ),
    "custom_layers": (config(depth=2, custom_layers=["a", "f", "f"]), "custom layer pattern"),
    "par_ratio": (config(depth=2, par_ratio=2), "par_ratio=2 sets a custom layer pattern"),
    "shallow": (config(TINY, depth=3, dim=32), "depth 3 <= "),
    "not_allow_listed": (
        config(depth=2, attn_gate_values=True),
        "'attn_gate_values' is not on the allow-list",
    ),
}


STUBBED_STEPS = {(N, B): ("full walk of", "run_steps")}  # full_walks' run_steps, on TRAIN


@pytest.fixture
def full_walks(monkeypatch):
    """The full walk of the config under test, stubbed: what it was asked, and the object it returned."""
    asked, real_flops, real_steps = [], kept_walks.count_flops, memtrack.run_steps

    def stub(real):
        def call(cfg, *args, **kwargs):
            if cfg is not full_walks.target:  # at_depth makes new configs: the small walks are real
                return real(cfg, *args, **kwargs)
            asked.append(real.__name__)
            if real is real_steps:  # run_steps answers per workload (jobs, its third argument)
                return {wl: ("full walk of", "run_steps") for wl in args[1]}
            return ("full walk of", real.__name__)

        return call

    monkeypatch.setattr(kept_walks, "count_flops", stub(real_flops))
    monkeypatch.setattr(memtrack, "run_steps", stub(real_steps))
    full_walks.asked = asked
    return full_walks


@pytest.mark.parametrize("name", REFUSED)
def test_refusals_fall_back_to_the_full_walk(name, full_walks):
    cfg, want = REFUSED[name]
    full_walks.target = cfg
    count, note = pb.count_flops_per_block(cfg, N, B)
    assert want in note and count == ("full walk of", "count_flops")
    sim, note = pb.simulate_per_block(cfg, "float32", TRAIN)
    assert want in note and sim == STUBBED_STEPS
    assert full_walks.asked == ["count_flops", "run_steps"]  # refused before any small walk


def test_a_refusal_returns_the_full_walks_numbers():
    cfg, _ = REFUSED["per_layer_shift"]
    count, note = pb.count_flops_per_block(cfg, N, B)
    assert note and flop_table(count) == flop_table(count_flops(cfg, N, B))
    sim, note = pb.simulate_per_block(cfg, "float32", TRAIN)
    assert note and sim == run_steps(cfg, "float32", TRAIN)


def test_memory_refuses_up_to_its_check_depth():
    cfg = config(depth=5)  # memory fits at 3 and 4 and checks at 5; FLOPs (1, 2; 3) take the shortcut
    assert pb.refusal(cfg, pb.MEM_DEPTHS) == "depth 5 <= 5 (the check depth): nothing to extrapolate"
    assert pb.refusal(cfg, pb.FLOP_DEPTHS) == ""
    assert pb.refusal(config(macaron=False, layer_dropout=0.0), pb.FLOP_DEPTHS) == ""  # defaults are fine


def test_flop_check_depth_catches_a_block_that_differs(monkeypatch, full_walks):
    full_walks.target = CASES["plain_pre_norm"]
    real = kept_walks.count_flops  # (the stub: small depths are real)

    def one_more_at_three(cfg, *args):
        count = real(cfg, *args)
        if cfg.depth == 3 and cfg is not full_walks.target:  # as if the third block did one FLOP more
            count.flops[("forward", "feedforward")][0] += 1
        return count

    monkeypatch.setattr(kept_walks, "count_flops", one_more_at_three)
    count, note = pb.count_flops_per_block(full_walks.target, N, B)
    assert note == "check at depth 3 failed: ('flops', 'forward', 'feedforward', 0) is not linear in depth"
    assert count == ("full walk of", "count_flops") and full_walks.asked == ["count_flops"]


def test_memory_check_depth_catches_a_block_that_differs(monkeypatch, full_walks):
    full_walks.target, real = CASES["plain_pre_norm"], pb._observe

    def eight_more_in_block_three(t, tracked):
        obs = real(t, tracked)
        key = ("region", "forward", 6, True)  # sublayer 6 = block 3, a middle block at depth 5 only
        if ("region", "forward", 9, True) in obs:  # (sublayer 9 exists at depth 5, not at 3 or 4)
            obs[key] = {**obs[key], "Total": obs[key]["Total"] + 8}  # not a peak: only the check sees it
        return obs

    monkeypatch.setattr(pb, "_observe", eight_more_in_block_three)
    got, note = pb.simulate_per_block(full_walks.target, "float32", TRAIN)
    assert note == (
        "at depth 5, the memory of sublayer 6 (block 3) in the forward is not what depths 3 and 4 predict"
    )
    assert got == STUBBED_STEPS and full_walks.asked == ["run_steps"]


def test_the_recording_tracker_gets_memtracks_numbers():
    """The recording tracker is memtrack's with bookkeeping added, handed to run_steps as an argument (no
    module global is swapped): the same Tracked, to the byte."""
    cfg = pb.at_depth(CASES["plain_pre_norm"], 2)
    made: list = []
    recorded = run_steps(cfg, "float32", TRAIN, tracker=pb._recording(made))
    assert memtrack._Tracker is not pb._RegionTracker and len(made) == 1 and made[0].regions
    assert recorded == run_steps(cfg, "float32", TRAIN)


@pytest.mark.parametrize("name", list(CASES))
def test_params_shortcut_equals_full_walk(name):
    from orca_analysis.measurements.params.run import _walked

    cfg = config(CASES[name], depth=9)  # at least PARAMS_MIN_DEPTH (8): the shortcut is taken
    counts, how = route.analytic_params(cfg, _walked)
    assert how == "per block: walked at depths 1 and 2, checked at 3, extrapolated to 9"
    assert counts == _walked(cfg)


def test_params_refusal_and_check_fall_back_to_the_full_walk():
    from orca_analysis.measurements.params.run import _walked

    cfg, want = REFUSED["per_layer_shift"]
    deep = config(cfg, depth=max(8, cfg.depth))
    counts, how = route.analytic_params(deep, _walked)
    assert how.startswith("full walk: the per-block shortcut refused (") and want in how
    assert counts == _walked(deep)
    # a count whose third block differs (one parameter more at depth 3) fails the check: full walk
    odd = lambda c: {**_walked(c), "norm": _walked(c)["norm"] + (c.depth == 3)}  # noqa: E731
    counts, how = route.analytic_params(config(CASES["plain_pre_norm"], depth=9), odd)
    assert (
        how
        == "full walk: the per-block shortcut refused (check at depth 3 failed: 'norm' is not linear in depth)"
    )


def test_a_step_that_cannot_run_alike_at_every_depth_is_that_reason_not_a_refusal():
    """A step the device cannot run (its reason a NeedsGpu or Skip, both str) at every small depth alike is
    that reason at the target depth; reasons that differ refuse the shortcut."""
    from orca_analysis.instruments.device import cpu_cannot
    from orca_analysis.instruments.memtrack import NeedsGpu, Skip

    why = NeedsGpu("NotImplementedError: FlexAttention does not support backward on CPU")
    got = pb._step(pb.MEM_DEPTHS, 12, [why] * 3, [{}] * 3)
    assert got == why and isinstance(got, NeedsGpu)
    assert isinstance(pb._step(pb.MEM_DEPTHS, 12, [Skip("no position left")] * 3, [{}] * 3), Skip)
    with pytest.raises(pb.Refused, match="differently"):
        pb._step(pb.MEM_DEPTHS, 12, [why, why, NeedsGpu("another")], [{}] * 3)
    # the CPU lacks FlexAttention's backward (a GPU has it); other words of torch's are no such cause
    assert cpu_cannot(NotImplementedError(why.removeprefix("NotImplementedError: ")))
    assert not cpu_cannot(NotImplementedError("Returning max scores is not supported on CPU/MPS."))
    assert not cpu_cannot(RuntimeError("FlexAttention does not support backward on CPU"))
