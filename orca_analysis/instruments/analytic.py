"""The analytic instruments' front door: parameters, FLOPs and simulated memory by the cheapest exact
route, and a note for the records saying which: a walk the caller's cache holds (kept_walks.py), the
per-block shortcut (per_block.py: small depths, checked, extrapolated), or the full walk.
"""

from __future__ import annotations

from collections.abc import Callable

from ..study.schema import ModelConfig
from .kept_walks import FLOPS, WalkCache
from .per_block import FLOP_DEPTHS, MEM_DEPTHS, count_flops_per_block, linear_in_depth, simulate_per_block
from .uniform_blocks import at_depth

# -- when to take the shortcut -------------------------------------------------------------------

# Below these depths the three small walks cost more than one full walk (measured on CPU: FLOPs from
# about 6 blocks, memory from about 12): the full walk is taken, and nothing is noted. Where the small
# walks are already kept (a deeper variant of the same family walked them), the shortcut costs nothing
# and is taken from the check depth up.
FLOPS_MIN_DEPTH = 8
MEMORY_MIN_DEPTH = 12
PARAMS_MIN_DEPTH = 8


def walk_blocks(depth: int) -> int:
    """The blocks the analytic walks of a variant this deep go through, as an executor weighs a family's cost:
    from MEMORY_MIN_DEPTH on, the memory is walked per block at small depths, not at the variant's own."""
    return min(depth, MEMORY_MIN_DEPTH)


KEPT_FAMILY = " (the small walks kept from a deeper variant of this family)"
KEPT_MEMORY = " (the small walks of the memory simulation, whose training steps count the FLOPs)"


def _used(depths: tuple[int, ...], depth: int, shared: bool, kept_from: str = KEPT_FAMILY) -> str:
    text = f"per block: walked at depths {depths[0]} and {depths[1]}, checked at {depths[2]}, extrapolated to {depth}"
    return text + (kept_from if shared else "")


def _route(cfg: ModelConfig, depths: tuple[int, ...], min_depth: int, small_kept: Callable[[int], bool]):
    """(take the shortcut, its small walks were kept already)."""
    shared = cfg.depth > depths[-1] and all(small_kept(d) for d in depths)
    return cfg.depth >= min_depth or shared, shared


def analytic_flops(
    cfg: ModelConfig,
    seq_len: int,
    batch: int,
    dtype: str = "float32",
    train: bool = True,
    walks: WalkCache | None = None,
):
    """The FLOP count by the cheaper exact route: (FlopCount, how it was counted, for the records). A count
    the memory simulation's training steps made (kept in `walks`) is taken first, whole or at its small
    depths. `walks`: the caller's cache (a fresh one where not given)."""
    walks = WalkCache() if walks is None else walks
    args = (seq_len, batch, dtype, train)
    if walks.is_kept(FLOPS, cfg, *args):
        return walks.flop_count(cfg, *args), f"full walk of {cfg.depth} blocks"
    for depths, min_depth in ((MEM_DEPTHS, 10**9), (FLOP_DEPTHS, FLOPS_MIN_DEPTH)):
        use, shared = _route(cfg, depths, min_depth, lambda d: walks.is_kept(FLOPS, at_depth(cfg, d), *args))
        if use:
            count, why = count_flops_per_block(cfg, *args, depths=depths, walks=walks)
            return count, (
                f"full walk: the per-block shortcut refused ({why})"
                if why
                else _used(depths, cfg.depth, shared, KEPT_MEMORY if depths == MEM_DEPTHS else KEPT_FAMILY)
            )
    return walks.flop_count(cfg, *args), f"full walk of {cfg.depth} blocks"


def analytic_params(
    cfg: ModelConfig, count: Callable[[ModelConfig], dict[str, int]], walks: WalkCache | None = None
):
    """`count(cfg)` (a parameter count by component) by the cheaper exact route: (counts, how).

    Parameters of identical blocks are `outside + depth * block` in every component, as FLOPs are:
    counted at depths 1 and 2, checked at 3."""
    walks = WalkCache() if walks is None else walks
    walk = lambda c: walks.kept("params", c, (), lambda: count(c))  # noqa: E731
    use, shared = _route(
        cfg, FLOP_DEPTHS, PARAMS_MIN_DEPTH, lambda d: walks.is_kept("params", at_depth(cfg, d))
    )
    if not use:
        return walk(cfg), f"full walk of {cfg.depth} blocks"
    counts, why = linear_in_depth(cfg, walk)
    if counts is not None:
        return counts, _used(FLOP_DEPTHS, cfg.depth, shared)
    return walk(cfg), f"full walk: the per-block shortcut refused ({why})"


def analytic_memory(
    cfg: ModelConfig, dtype: str, jobs: dict[tuple[int, int], tuple[str, ...]], walks: WalkCache | None = None
):
    """The simulated steps by the cheaper exact route: (run_steps' dict, {workload: how, for the records}).
    Workloads whose small walks a deeper variant of the family left kept (in `walks`) take the shortcut at
    no cost even below MEMORY_MIN_DEPTH; the rest (the base's extra lengths, say) are walked in full."""
    walks = WalkCache() if walks is None else walks
    if cfg.depth >= MEMORY_MIN_DEPTH:
        res, why = simulate_per_block(cfg, dtype, jobs, walks)
        how = (
            f"full walk: the per-block shortcut refused ({why})"
            if why
            else _used(MEM_DEPTHS, cfg.depth, False)
        )
        return res, dict.fromkeys(jobs, how)

    def kept_small(wl: tuple[int, int]) -> bool:
        return _route(
            cfg,
            MEM_DEPTHS,
            MEMORY_MIN_DEPTH,
            lambda d: walks.steps_kept(at_depth(cfg, d), dtype, {wl: jobs[wl]}, recorded=True),
        )[1]

    shared = {wl: s for wl, s in jobs.items() if kept_small(wl)}
    res, how = {}, {}
    if shared:
        res, why = simulate_per_block(cfg, dtype, shared, walks)
        how = dict.fromkeys(
            shared,
            f"full walk: the per-block shortcut refused ({why})"
            if why
            else _used(MEM_DEPTHS, cfg.depth, True),
        )
    rest = {wl: s for wl, s in jobs.items() if wl not in shared}
    if rest:
        res |= walks.steps(cfg, dtype, rest)
        how |= dict.fromkeys(rest, f"full walk of {cfg.depth} blocks")
    return {wl: res[wl] for wl in jobs}, how
