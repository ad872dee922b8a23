"""Kept walks (instruments/kept_walks.py): through the walk cache a caller hands in, a family of variants
that differ only in depth shares its small walks, the memory simulation's training step counts the FLOPs
too, and every number equals a fresh walk's, exactly; without one, nothing is shared. Tiny CPU shapes:
d = 32 or 64, depth 2-12, 16 to 48 tokens."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from orca_analysis.executors.local import families_by_cost, family_order
from orca_analysis.instruments import analytic as route
from orca_analysis.instruments import memtrack
from orca_analysis.instruments import per_block as pb
from orca_analysis.instruments.flop_counter import count_flops
from orca_analysis.instruments.kept_walks import FLOPS, RECORDED, WalkCache
from orca_analysis.measurements import MEASUREMENTS
from orca_analysis.study import load_study
from orca_analysis.study.schema import ModelConfig

TINY = load_study(str(Path(__file__).parent / "fixtures" / "tiny.yaml")).base  # ALiBi + xPos, one KV head
PLAIN = ModelConfig({"num_tokens": 256, "max_seq_len": 128}, {"dim": 32, "depth": 2, "heads": 4})


def table(c) -> dict:
    """Every number of a FlopCount."""
    return {
        "cells": {k: list(v) for k, v in c.flops.items()},
        "plain": dict(c.plain),
        "ops": dict(c.attention_ops),
        "mode_total": c.mode_total,
    }


COUNTED = {
    "orca_like": TINY,  # ALiBi with rotary: the bias is rebuilt every step, as count_flops sees it
    "plain": PLAIN,
    "grouped_query": ModelConfig(PLAIN.wrapper, {**PLAIN.layers, "attn_kv_heads": 2, "attn_flash": True}),
}


@pytest.mark.parametrize("name", COUNTED)
def test_the_memory_walk_counts_the_flops_count_flops_counts(name):
    cfg, jobs = COUNTED[name], {(16, 1): ("train", "prefill"), (48, 2): ("train",)}
    flops: dict = {}
    tracked = memtrack.run_steps(cfg, "float32", jobs, flops=flops)
    assert flops.keys() == jobs.keys()
    for (n, b), count in flops.items():
        assert table(count) == table(count_flops(cfg, n, b))
    assert tracked == memtrack.run_steps(cfg, "float32", jobs)  # the counter changes no byte of the memory


def test_no_count_where_alibi_caches_its_bias():
    # without rotary, ALiBi's (h, n, n) bias is cached before the step (steady state): count_flops builds
    # it inside its step, so the two steps differ and the memory walk counts nothing
    cfg = ModelConfig(TINY.wrapper, {**TINY.layers, "rotary_xpos": False})
    flops: dict = {}
    memtrack.run_steps(cfg, "float32", {(16, 1): ("train",)}, flops=flops)
    assert memtrack.alibi_cached(cfg) and flops == {}
    walks = WalkCache()
    walks.steps(cfg, "float32", {(16, 1): ("train",)})
    assert len(walks) == 1 and not walks.is_kept(FLOPS, cfg, 16, 1, "float32", True)


def test_workloads_walked_apart_equal_walked_together():
    # kept_walks keeps memory per workload: a workload's steps must not depend on the others in the walk
    jobs = {(16, 1): ("train", "prefill", "decode"), (32, 1): ("train",)}
    together = memtrack.run_steps(PLAIN, "float32", jobs)
    assert together == {wl: memtrack.run_steps(PLAIN, "float32", {wl: s})[wl] for wl, s in jobs.items()}


def test_a_kept_walk_is_not_walked_again_and_cannot_be_changed(monkeypatch):
    jobs, walks = {(16, 1): ("train", "prefill")}, WalkCache()
    first = walks.steps(PLAIN, "float32", jobs)
    first[(16, 1)]["train"].total = -1  # a caller changing its copy

    def no_walk(*args, **kwargs):
        raise AssertionError("walked again")

    monkeypatch.setattr(memtrack, "run_steps", no_walk)
    again = walks.steps(PLAIN, "float32", jobs)
    assert again[(16, 1)]["train"].total > 0
    monkeypatch.undo()
    assert again == memtrack.run_steps(PLAIN, "float32", jobs)
    # the training step's FLOPs were counted on the way (no ALiBi here)
    assert table(walks.flop_count(PLAIN, 16, 1)) == table(count_flops(PLAIN, 16, 1))
    assert WalkCache().steps(PLAIN, "float32", jobs) == again  # another cache walks again: the same numbers


def test_a_family_shares_its_small_walks_and_every_number_equals_a_fresh_walk(monkeypatch):
    jobs, per_block = (
        {(16, 1): ("train", "prefill", "decode")},
        "per block: walked at depths 3 and 4, checked at 5",
    )
    deep, mid, shallow = (pb.at_depth(PLAIN, d) for d in (12, 6, 3))
    walks = WalkCache()  # the executor's, for the calls of one worker
    sim, how = route.analytic_memory(
        deep, "float32", jobs, walks
    )  # depth 12 >= MEMORY_MIN_DEPTH: walks 3, 4, 5
    assert how == {(16, 1): f"{per_block}, extrapolated to 12"}
    walked, real = [], memtrack.run_steps
    monkeypatch.setattr(
        memtrack, "run_steps", lambda cfg, *a, **k: walked.append(cfg.depth) or real(cfg, *a, **k)
    )
    sim_mid, how_mid = route.analytic_memory(mid, "float32", jobs, walks)  # depth 6 < 12: from the kept walks
    sim_shallow, how_shallow = route.analytic_memory(shallow, "float32", jobs, walks)  # 3: a kept full walk
    count, how_flops = route.analytic_flops(mid, 16, 1, walks=walks)  # counted in the memory walks at 3, 4, 5
    assert walked == []  # nothing walked so far
    assert how_mid == {(16, 1): f"{per_block}, extrapolated to 6{route.KEPT_FAMILY}"}
    assert how_shallow == {(16, 1): "full walk of 3 blocks"}
    assert how_flops == f"{per_block}, extrapolated to 6{route.KEPT_MEMORY}"
    # the base's extra lengths (no deeper variant walked them) are walked in full; the rest stays shared
    sim_more, how_more = route.analytic_memory(mid, "float32", {**jobs, (32, 1): ("train",)}, walks)
    assert how_more == {**how_mid, (32, 1): "full walk of 6 blocks"} and walked == [6]
    assert sim_more[(16, 1)] == sim_mid[(16, 1)]
    # without the cache nothing is shared: depth 6 is walked in full
    assert route.analytic_memory(mid, "float32", jobs)[1] == {(16, 1): "full walk of 6 blocks"}
    monkeypatch.undo()
    assert sim_mid == real(mid, "float32", jobs) and sim_shallow == real(shallow, "float32", jobs)
    assert sim == real(deep, "float32", jobs)
    assert sim_more[(32, 1)] == real(mid, "float32", {(32, 1): ("train",)})[(32, 1)]
    assert table(count) == table(count_flops(mid, 16, 1))


def test_a_refused_family_walks_each_depth_in_full():
    # a per-layer setting (one value per sublayer: 2 x depth): the blocks differ, so nothing is fitted and
    # no small walk is kept for a shallower variant to take
    cfg = ModelConfig(PLAIN.wrapper, {**PLAIN.layers, "depth": 12, "shift_tokens": [1, 0] * 12})
    walks = WalkCache()
    _, how = route.analytic_memory(cfg, "float32", {(16, 1): ("train",)}, walks)
    assert how[(16, 1)].startswith(
        "full walk: the per-block shortcut refused (per-layer setting shift_tokens="
    )
    assert not any(
        walks.is_kept(RECORDED, pb.at_depth(cfg, d), "float32", (16, 1), ("train",)) for d in pb.MEM_DEPTHS
    )


def test_a_measurement_shares_walks_only_through_the_cache_it_is_handed():
    """The memory measurement's training-step walks count the FLOPs the flops measurement then reads from the
    same cache; called without one, each walks afresh. The records are the same either way."""
    study = load_study(str(Path(__file__).parent / "fixtures" / "tiny.yaml"))
    variant, walks = study.variants()[0], WalkCache()
    memory = MEASUREMENTS["memory"].measure(variant, study, walks)
    assert all(
        walks.is_kept(FLOPS, variant.config, n, b, "float32", True) for n, b in study.workloads.pairs()
    )
    shared = MEASUREMENTS["flops"].measure(variant, study, walks)
    alone = MEASUREMENTS["flops"].measure(variant, study)
    values = lambda rs: [(r.metric, r.method, r.seq_len, r.labels, r.value) for r in rs]  # noqa: E731
    assert values(shared) == values(alone) and values(memory) == values(
        MEASUREMENTS["memory"].measure(variant, study)
    )


def _call(cfg: ModelConfig, measurement: str, walks_first: bool = False) -> SimpleNamespace:
    return SimpleNamespace(
        variant=SimpleNamespace(config=cfg),
        measurement=SimpleNamespace(name=measurement, schedule=SimpleNamespace(walks_first=walks_first)),
    )


def test_family_order_runs_the_deepest_first_and_the_walks_that_serve_others_first():
    a3, a12, b6 = (
        pb.at_depth(PLAIN, 3),
        pb.at_depth(PLAIN, 12),
        ModelConfig(PLAIN.wrapper, {**PLAIN.layers, "dim": 64, "depth": 6}),
    )
    calls = [
        _call(a3, "flops"),
        _call(b6, "flops"),
        _call(a12, "flops"),
        _call(a12, "memory", True),
        _call(a3, "memory", True),
    ]
    order = [(c.variant.config.dim, c.variant.config.depth, c.measurement.name) for c in family_order(calls)]
    # family dim 32 (first seen first): depth 12 (memory, then flops), depth 3; then family dim 64
    assert order == [
        (32, 12, "memory"),
        (32, 12, "flops"),
        (32, 3, "memory"),
        (32, 3, "flops"),
        (64, 6, "flops"),
    ]
    families = families_by_cost(calls)
    # cost: distinct depths (each at most 12) plus one per call: dim 32: 12 + 3 + 4 = 19; dim 64: 6 + 1 = 7
    assert [len(f) for f in families] == [4, 1]
