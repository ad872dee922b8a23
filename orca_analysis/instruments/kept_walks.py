"""A cache of full walks, handed to the analytic instruments as an argument (`WalkCache`), so a sweep's
variants that differ only in depth share the small-depth walks of the per-block route (per_block.py)
instead of each walking its own, and the FLOP counts a memory walk made of its training steps serve a
later FLOP count of the same step.

A walk is deterministic (fake tensors, no randomness reaches a count), so a kept result is the result
the walk would give again: keeping changes the time, never a number, whatever order the calls come in.
Memory walks are kept per workload ((seq_len, batch) and its steps), since the base variant asks for
more lengths than the rest of its family. Results are handed out as deep copies: no caller can change a
kept one. Whoever runs the calls owns the cache: an executor keeps one per worker process and sends a
family's calls to one worker, deepest first (executors/local.py); `inspect` keeps one for its summaries;
a measurement called without one walks afresh.
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
Jobs = dict[tuple[int, int], tuple[str, ...]]
RECORDED, PLAIN, FLOPS = "steps_recorded", "steps", "flops"


def _key(kind: str, cfg: ModelConfig, *args: Any) -> tuple:
    return (kind, repr(cfg), *args)


class WalkCache:
    """Walk results by (kind, config, arguments), the oldest dropped beyond `limit`."""

    def __init__(self, limit: int = LIMIT) -> None:
        self.limit = limit
        self._kept: OrderedDict[tuple, Any] = OrderedDict()

    def __len__(self) -> int:
        return len(self._kept)

    def is_kept(self, kind: str, cfg: ModelConfig, *args: Any) -> bool:
        return _key(kind, cfg, *args) in self._kept

    def kept(self, kind: str, cfg: ModelConfig, args: tuple, walk: Callable[[], Any]) -> Any:
        """walk()'s result, from the kept one when this (kind, cfg, args) was walked before; failures are not
        kept."""
        key = _key(kind, cfg, *args)
        if key not in self._kept:
            self._kept[key] = walk()
            while len(self._kept) > self.limit:
                self._kept.popitem(last=False)
        self._kept.move_to_end(key)
        return copy.deepcopy(self._kept[key])

    def flop_count(
        self, cfg: ModelConfig, seq_len: int, batch: int, dtype: str = "float32", train: bool = True
    ) -> FlopCount:
        """`count_flops`, kept."""
        return self.kept(
            FLOPS, cfg, (seq_len, batch, dtype, train), lambda: count_flops(cfg, seq_len, batch, dtype, train)
        )

    # -- memory, per workload ---------------------------------------------------------------------

    def _keep_flops(self, cfg: ModelConfig, dtype: str, counted: dict) -> None:
        """The FLOP counts a memory walk made of its training steps (memtrack.run_steps' `flops`), kept as
        flop_count's own: the same count of the same step."""
        for (n, b), count in counted.items():
            self.kept(FLOPS, cfg, (n, b, dtype, True), lambda count=count: count)

    def recorded_steps(self, cfg: ModelConfig, dtype: str, jobs: Jobs, walk: Callable[..., dict]) -> dict:
        """{workload: walk's value for it}, walking only the workloads not kept. `walk(cfg, dtype, jobs, flops)`
        returns {workload: (run_steps' dict for it, anything else of that walk)}: per_block's region-recording
        walk; `flops` is run_steps' own."""
        missing = {wl: s for wl, s in jobs.items() if not self.is_kept(RECORDED, cfg, dtype, wl, s)}
        counted: dict = {}
        fresh = walk(cfg, dtype, missing, counted) if missing else {}
        self._keep_flops(cfg, dtype, counted)
        return {
            wl: self.kept(RECORDED, cfg, (dtype, wl, s), lambda wl=wl: fresh[wl]) for wl, s in jobs.items()
        }

    def steps(self, cfg: ModelConfig, dtype: str, jobs: Jobs) -> dict:
        """`memtrack.run_steps(cfg, dtype, jobs)` (the fake build), each workload from a kept walk where there
        is one: a recorded walk's steps are the same numbers (its tracker only records more)."""
        out, missing = {}, {}
        for wl, s in jobs.items():
            if self.is_kept(RECORDED, cfg, dtype, wl, s):
                out[wl] = self.kept(RECORDED, cfg, (dtype, wl, s), lambda: None)[0]
            elif self.is_kept(PLAIN, cfg, dtype, wl, s):
                out[wl] = self.kept(PLAIN, cfg, (dtype, wl, s), lambda: None)
            else:
                missing[wl] = s
        counted: dict = {}
        fresh = memtrack.run_steps(cfg, dtype, missing, flops=counted) if missing else {}
        self._keep_flops(cfg, dtype, counted)
        for wl, s in missing.items():
            out[wl] = self.kept(PLAIN, cfg, (dtype, wl, s), lambda wl=wl: fresh[wl])
        return {wl: out[wl] for wl in jobs}

    def steps_kept(self, cfg: ModelConfig, dtype: str, jobs: Jobs, recorded: bool = False) -> bool:
        """Is every workload of `jobs` kept (by the recording walk alone, with `recorded`)?"""
        kinds = (RECORDED,) if recorded else (RECORDED, PLAIN)
        return all(any(self.is_kept(k, cfg, dtype, wl, s) for k in kinds) for wl, s in jobs.items())
