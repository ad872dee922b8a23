"""Full walks kept for the life of the process, so a sweep's variants that differ only in depth share
the small-depth walks of the per-block route (per_block.py) instead of each walking its own.

A walk is deterministic (fake tensors, no randomness reaches a count), so a kept result is the result
the walk would give again: keeping changes the time, never a number. Memory walks are kept per
workload ((seq_len, batch) and its steps), since the base variant asks for more lengths than the rest
of its family. Results are handed out as deep copies: no caller can change a kept one. The executor
sends the calls of one family to one worker, deepest first (executors/local.py), so the deepest
variant's small walks serve the shallower ones.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from ..study.schema import ModelConfig
from . import memtrack
from .flop_counter import FlopCount, count_flops

LIMIT = 2048  # results kept at most (each a few kB): the oldest goes first
_KEPT: OrderedDict[tuple, Any] = OrderedDict()
Jobs = dict[tuple[int, int], tuple[str, ...]]


def _key(kind: str, cfg: ModelConfig, *args: Any) -> tuple:
    return (kind, repr(cfg), *args)


def is_kept(kind: str, cfg: ModelConfig, *args: Any) -> bool:
    return _key(kind, cfg, *args) in _KEPT


def kept(kind: str, cfg: ModelConfig, args: tuple, walk: Callable[[], Any]) -> Any:
    """walk()'s result, from the kept one when this (kind, cfg, args) was walked before; failures are not kept."""
    key = _key(kind, cfg, *args)
    if key not in _KEPT:
        _KEPT[key] = walk()
        while len(_KEPT) > LIMIT:
            _KEPT.popitem(last=False)
    _KEPT.move_to_end(key)
    return copy.deepcopy(_KEPT[key])


def forget() -> None:
    """Drop every kept walk (tests, and anyone timing a walk)."""
    _KEPT.clear()


def flop_count(
    cfg: ModelConfig, seq_len: int, batch: int, dtype: str = "float32", train: bool = True
) -> FlopCount:
    """`count_flops`, kept."""
    return kept("flops", cfg, (seq_len, batch, dtype, train),
                lambda: count_flops(cfg, seq_len, batch, dtype, train))  # fmt: skip


# -- memory, per workload -------------------------------------------------------------------------

RECORDED, PLAIN = "steps_recorded", "steps"


def _keep_flops(cfg: ModelConfig, dtype: str, counted: dict) -> None:
    """The FLOP counts a memory walk made of its training steps (memtrack.run_steps' `flops`), kept as
    flop_count's own: the same count of the same step."""
    for (n, b), count in counted.items():
        kept("flops", cfg, (n, b, dtype, True), lambda count=count: count)


def recorded_steps(cfg: ModelConfig, dtype: str, jobs: Jobs, walk: Callable[..., dict]) -> dict:
    """{workload: walk's value for it}, walking only the workloads not kept. `walk(cfg, dtype, jobs, flops)`
    returns {workload: (run_steps' dict for it, anything else of that walk)}: per_block's region-recording
    walk; `flops` is run_steps' own."""
    missing = {wl: s for wl, s in jobs.items() if not is_kept(RECORDED, cfg, dtype, wl, s)}
    counted: dict = {}
    fresh = walk(cfg, dtype, missing, counted) if missing else {}
    _keep_flops(cfg, dtype, counted)
    return {wl: kept(RECORDED, cfg, (dtype, wl, s), lambda wl=wl: fresh[wl]) for wl, s in jobs.items()}


def steps(cfg: ModelConfig, dtype: str, jobs: Jobs) -> dict:
    """`memtrack.run_steps(cfg, dtype, jobs)` (the fake build), each workload from a kept walk where there
    is one: a recorded walk's steps are the same numbers (its tracker only records more)."""
    out, missing = {}, {}
    for wl, s in jobs.items():
        if is_kept(RECORDED, cfg, dtype, wl, s):
            out[wl] = kept(RECORDED, cfg, (dtype, wl, s), lambda: None)[0]
        elif is_kept(PLAIN, cfg, dtype, wl, s):
            out[wl] = kept(PLAIN, cfg, (dtype, wl, s), lambda: None)
        else:
            missing[wl] = s
    counted: dict = {}
    fresh = memtrack.run_steps(cfg, dtype, missing, flops=counted) if missing else {}
    _keep_flops(cfg, dtype, counted)
    for wl, s in missing.items():
        out[wl] = kept(PLAIN, cfg, (dtype, wl, s), lambda wl=wl: fresh[wl])
    return {wl: out[wl] for wl in jobs}


def steps_kept(cfg: ModelConfig, dtype: str, jobs: Jobs, recorded: bool = False) -> bool:
    """Is every workload of `jobs` kept (by the recording walk alone, with `recorded`)?"""
    kinds = (RECORDED,) if recorded else (RECORDED, PLAIN)
    return all(any(is_kept(k, cfg, dtype, wl, s) for k in kinds) for wl, s in jobs.items())
