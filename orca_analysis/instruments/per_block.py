"""The analytic instruments per block: a few small depths, extrapolated to the real one, checked.

FLOPs with identical blocks are `outside + depth * block` in every number of a FlopCount: count at
depths 1 and 2, extrapolate, check at 3. Memory is not additive: a phase's peak is the largest of
many moments, and which one wins can move with depth. So the simulation keeps, per phase, the first
largest snapshot of each region of the timeline (before the blocks; sublayer j, from its first module
hook to the next sublayer's; split by attn_layers being a parent) and each module's (fw, bw) peak,
fits every number exactly (outside, first and last block: a + c L; a middle block k: a + b k + c L)
from depths 3 and 4, checks all of them at 5, and rebuilds `Tracked` from them (after checking that
they rebuild the tracker's own numbers at 3, 4 and 5). Otherwise: the full walk, and a reason.

Why exact: the allow-list keeps settings every block applies alike. Depth enters the build only via
DeepNorm's alpha = (2L)^(1/4) and beta = (8L)^(-1/4): values, not shapes, and alpha > 1 at every L,
so the same `residual * alpha` op runs (x-transformers skips it only at alpha == 1). ALiBi with rotary
is rebuilt in each attention (per block), without rotary cached once (outside); embedding, logits and
loss are outside. x-transformers keeps the first attention's intermediates and the last region holds
the final norm and the loss: hence first and last blocks fit apart. The checks catch what this misses.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

from torch.distributed._tools.mem_tracker import _ModState

from ..study.schema import ModelConfig
from . import memtrack
from .flop_counter import FlopCount
from .kept_walks import WalkCache
from .uniform_blocks import at_depth, refusal

FLOP_DEPTHS = (1, 2, 3)  # fit on the first two, check on the third
MEM_DEPTHS = (3, 4, 5)
_LAYER = re.compile(r"\.attn_layers\.layers\.(\d+)(?:\.|$)")
_BLOCK_MODULE = re.compile(r"attn_layers\.layers\.(\d+)\.1")


class Refused(Exception):
    """The shortcut cannot be proven exact here; the message says why."""


def _line(v0: int, v1: int, d0: int, depth: int) -> int:
    return v0 + (v1 - v0) * (depth - d0)  # v at d0 and d0 + 1: exact in integers


# -- FLOPs ---------------------------------------------------------------------------------------


def _flat(c: FlopCount) -> dict[tuple, int]:
    out = {("flops", p, comp, col): v[col] for (p, comp), v in c.flops.items() for col in range(len(v))}
    out.update({("plain", p): v for p, v in c.plain.items()})
    out.update({("ops", k): v for k, v in c.attention_ops.items()})
    return {**out, ("mode_total",): c.mode_total}


def _unflat(flat: dict[tuple, int]) -> FlopCount:
    c = FlopCount(plain={}, attention_ops=Counter(), mode_total=flat[("mode_total",)])
    for key, v in flat.items():
        if key[0] == "flops":
            c.flops[key[1:3]][key[3]] = v
        elif key[0] != "mode_total":
            (c.plain if key[0] == "plain" else c.attention_ops)[key[1]] = v
    return c


def linear_in_depth(
    cfg: ModelConfig, measure: Callable[[ModelConfig], dict], depths: tuple[int, ...] = FLOP_DEPTHS
) -> tuple[dict | None, str]:
    """`measure` (numbers that are `outside + depth * block`) at two consecutive depths, checked at a
    third and extrapolated to cfg.depth; (None, why) where the shortcut refuses or its check fails."""
    why = refusal(cfg, depths)
    if why:
        return None, why
    d0, _, d2 = depths
    small = [measure(at_depth(cfg, d)) for d in depths]
    if any(s.keys() != small[2].keys() for s in small):
        return None, "the counted cells differ between small depths"
    bad = [k for k in small[2] if _line(small[0][k], small[1][k], d0, d2) != small[2][k]]
    if bad:
        return None, f"check at depth {d2} failed: {bad[0]!r} is not linear in depth"
    return {k: _line(small[0][k], small[1][k], d0, cfg.depth) for k in small[2]}, ""


def count_flops_per_block(
    cfg: ModelConfig,
    seq_len: int,
    batch: int,
    dtype: str = "float32",
    train: bool = True,
    depths: tuple[int, ...] = FLOP_DEPTHS,
    walks: WalkCache | None = None,
) -> tuple[FlopCount, str]:
    """`count_flops`, from two small depths, checked at a third; else the full count and why (the note).
    `walks`: the cache the small and full walks are kept in (a fresh one where not given)."""
    walks = WalkCache() if walks is None else walks
    args = (seq_len, batch, dtype, train)
    flat, why = linear_in_depth(cfg, lambda c: _flat(walks.flop_count(c, *args)), depths)
    return (_unflat(flat), "") if flat is not None else (walks.flop_count(cfg, *args), why)


# -- memory --------------------------------------------------------------------------------------


class _RegionTracker(memtrack._Tracker):
    """memtrack's tracker (the same numbers), also keeping each region's first largest snapshot."""

    def __init__(self, alibi: bool = False, cuda: bool = False) -> None:
        super().__init__(alibi, cuda)
        self.regions: dict[tuple, dict] = {}  # (phase, sublayer or -1, attn_layers a parent) -> snapshot
        self.layer: dict[str, int] = {}  # phase -> the sublayer whose module hook fired last
        self.entries: dict[str, list[int]] = {}  # attn_layers' entry snapshots, PRE_FW / PRE_BW
        self.zone, self.devices = "", set()

    def _mark(self, module: Any, state: Any) -> None:
        name = self._mod_tracker.get_known_fqn(module) if module is not None else None
        if name and name.count(".") == 1 and name.endswith(".attn_layers"):
            self.zone = name  # (memory_tracking is keyed weakly by module: read it while the model lives)
            for snap in self.memory_tracking[module].snapshots.get(state, [])[-1:]:
                self.entries.setdefault(str(state), []).append(sum(s["Total"] for s in snap.values()))
        if name and (m := _LAYER.search(name)):
            self.layer[self.phase()] = int(m.group(1))

    def _pre_fw_hook(self, module: Any, inputs: Any) -> None:
        super()._pre_fw_hook(module, inputs)
        self._mark(module, _ModState.PRE_FW)

    def _pre_bw_hook(self, module: Any, args: Any) -> None:
        super()._pre_bw_hook(module, args)
        self._mark(module, _ModState.PRE_BW)

    def _update_peak_stats(self, peak_state: Any) -> None:
        super()._update_peak_stats(peak_state)
        phase = self.phase()
        key = (phase, self.layer.get(phase, -1), self.zone in self._mod_tracker.parents)
        for dev, snap in self._curr_mem_snap.items():
            self.devices.add(dev)
            if self.regions.get(key, {}).get("Total", 0) < snap["Total"]:
                self.regions[key] = dict(snap)


def _recording(made: list[_RegionTracker]) -> Callable[..., _RegionTracker]:
    """A tracker factory for memtrack.run_steps that keeps every tracker it makes in `made`, in order."""

    def make(*args: Any, **kwargs: Any) -> _RegionTracker:
        made.append(_RegionTracker(*args, **kwargs))
        return made[-1]

    return make


def _observe(t: _RegionTracker, tracked: memtrack.Tracked) -> dict[tuple, dict]:
    """Every number of a step, keyed (kind, name, sublayer or -1, zone): what gets fitted."""
    if len(t.devices) > 1 or any(len(v) > 1 for v in t.entries.values()):
        raise Refused("snapshots on several devices, or attn_layers run twice in a step")
    obs = {("region", p, j, z): dict(s) for (p, j, z), s in t.regions.items()}
    for name, (fw, bw) in tracked.modules.items():
        m = _BLOCK_MODULE.fullmatch(name)
        if name != "attn_layers":  # (rebuilt from the regions)
            obs["module", "block" if m else name, int(m.group(1)) if m else -1, ""] = {"fw": fw, "bw": bw}
    obs.update({("entry", st, -1, ""): {"Total": v[0]} for st, v in t.entries.items() if tracked.modules})
    return {**obs, **{("extra", k, -1, ""): {"v": v} for k, v in tracked.extra.items()}}


def _named(key: tuple, per: int) -> str:
    """An `_observe` key in words: ("region", "forward", 9, False) with 2 sublayers per block -> "the memory of
    sublayer 9 (block 4) in the forward"."""
    kind, name, index, _ = key
    if kind == "region":
        return f"the memory of sublayer {index} (block {index // per}) in the {name}"
    if kind == "module":
        return f"the peak of module {name}" + (f" {index}" if index >= 0 else "")
    return f"the {kind} '{name}'"


def _shape(tracked: memtrack.Tracked) -> tuple:
    """What a Tracked holds besides numbers: phase order, module names (blocks as one slot), extras."""
    mods = tuple(dict.fromkeys("block" if _BLOCK_MODULE.fullmatch(n) else n for n in tracked.modules))
    return tuple(tracked.phases), mods, tuple(tracked.extra)


def _attn_layers(obs: dict[tuple, dict]) -> tuple[int, int]:
    """attn_layers' (fw, bw) peaks: its entry snapshot, or the largest moment while it is a parent."""
    return tuple(
        max([e["Total"]] + [s["Total"] for k, s in obs.items() if k[:2] == ("region", ph) and k[3]])
        if (e := obs.get(("entry", str(st), -1, "")))
        else 0
        for st, ph in ((_ModState.PRE_FW, "forward"), (_ModState.PRE_BW, "backward"))
    )


def _assemble(obs: dict[tuple, dict], shape: tuple, depth: int, per: int) -> memtrack.Tracked:
    """The Tracked that memtrack would report, from the observations (small or extrapolated)."""
    peaks, snaps = {}, {}
    for ph in shape[0]:
        regions = [s for k, s in obs.items() if k[:2] == ("region", ph)]
        peaks[ph] = max(s["Total"] for s in regions)
        tied = [s for s in regions if s["Total"] == peaks[ph]]
        if any(s != tied[0] for s in tied):  # which came first decides, and time order is not kept
            raise Refused(f"regions tie at the {ph} peak with different categories")
        snaps[ph] = tied[0]
    phase, mods = max(peaks, key=peaks.get), {}
    for name in shape[1]:
        if name == "block":
            for j in range(depth * per):
                mods[f"attn_layers.layers.{j}.1"] = tuple(obs["module", "block", j, ""].values())
        elif name == "attn_layers":
            mods[name] = _attn_layers(obs)
        else:
            mods[name] = tuple(obs["module", name, -1, ""].values())
    cats = {memtrack.CATEGORY[k]: v for k, v in snaps[phase].items() if k in memtrack.CATEGORY}
    extra = {k: obs["extra", k, -1, ""]["v"] for k in shape[2]}
    return memtrack.Tracked(
        peaks[phase], phase, cats, peaks, mods, extra, snaps[phase].get(memtrack.ALIBI, 0)
    )


def _by_class(obs: dict[tuple, dict], depth: int, per: int) -> dict[tuple, dict[int, dict]]:
    """class -> block index -> numbers; sublayers of the first, middle and last blocks fit apart."""
    out: dict[tuple, dict[int, dict]] = defaultdict(dict)
    for key, v in obs.items():
        k = key[2] // per
        pos = "outside" if key[2] < 0 else "first" if k == 0 else "last" if k == depth - 1 else "middle"
        out[(*key[:2], pos, key[2] % per if key[2] >= 0 else 0, key[3])][k if pos == "middle" else 0] = v
    return out


def _predict(a: dict, b: dict, d0: int, depth: int, per: int) -> dict[tuple, dict]:
    """The observations at `depth`, from those at d0 and d0 + 1 split by class."""
    if a.keys() != b.keys():
        raise Refused("the regions differ between the fitting depths")
    out = {}
    try:
        for (kind, name, pos, r, zone), at_b in b.items():
            at_a = a[kind, name, pos, r, zone]
            if pos != "middle":
                j = -1 if pos == "outside" else (0 if pos == "first" else depth - 1) * per + r
                out[kind, name, j, zone] = {f: _line(at_a[0][f], at_b[0][f], d0, depth) for f in at_b[0]}
                continue
            p, q, u = at_a[1], at_b[1], at_b[2]  # v(k, L) = v(1, d0) + B (k - 1) + C (L - d0)
            for k in range(1, depth - 1):
                out[kind, name, k * per + r, zone] = {
                    f: p[f] + (u[f] - q[f]) * (k - 1) + (q[f] - p[f]) * (depth - d0) for f in u
                }
    except KeyError as exc:
        raise Refused(f"{exc} is not seen at every fitting depth") from None
    return out


def _step(depths: tuple[int, ...], target: int, results: list, observed: list) -> Any:
    """One step of one workload at the target depth, from the small depths."""
    kinds = {type(r) for r in results}
    if kinds == {type(None)}:
        return None
    if all(isinstance(r, str) for r in results):  # the step cannot run, alike in every block: the same why
        # at each depth (a str, or a NeedsGpu or Skip, which say why too)
        if len(set(results)) > 1:
            raise Refused("the step fails differently at the small depths")
        return results[0]
    if kinds != {memtrack.Tracked}:
        raise Refused("the step fails at some small depths only")
    shapes = {_shape(r) for r in results}
    pers = {(1 + max(k[2] for k in o if k[0] == "region")) / d for o, d in zip(observed, depths, strict=True)}
    if len(shapes) > 1 or len(pers) > 1 or not float(min(pers)).is_integer():
        raise Refused("phases, modules, extras or sublayers per block differ between small depths")
    shape, per = shapes.pop(), int(pers.pop())
    for o, r, d in zip(observed, results, depths, strict=True):
        if _assemble(o, shape, d, per) != r:
            raise Refused(f"the regions do not rebuild the tracker's numbers at depth {d}")
    fit = [_by_class(o, d, per) for o, d in zip(observed[:2], depths[:2], strict=True)]
    if (check := _predict(*fit, depths[0], depths[2], per)) != observed[2]:
        bad = sorted(set(check) ^ set(observed[2])) or [k for k in check if check[k] != observed[2][k]]
        raise Refused(
            f"at depth {depths[2]}, {_named(bad[0], per)} is not what depths {depths[0]} and {depths[1]} "
            "predict"
        )
    return _assemble(_predict(*fit, depths[0], target, per), shape, target, per)


def simulate_per_block(
    cfg: ModelConfig, dtype: str, jobs: dict[tuple[int, int], tuple[str, ...]], walks: WalkCache | None = None
) -> tuple[dict[tuple[int, int], dict[str, Any]], str]:
    """`memtrack.run_steps(cfg, dtype, jobs)` (the fake build) from depths 3 and 4, checked at 5.

    Returns (the same dict, "") or (the full walk's dict, why the shortcut was refused). The module
    table of a train step is extrapolated too (each block by index; attn_layers from its regions)
    and checked with everything else: it is never dropped, and never a reason to refuse by itself.
    """
    walks = WalkCache() if walks is None else walks
    why = refusal(cfg, MEM_DEPTHS)
    if not why:
        try:
            return _simulated(cfg, dtype, jobs, walks), ""
        except Refused as exc:
            why = str(exc)
    return walks.steps(cfg, dtype, jobs), why


def _recorded_walk(
    cfg: ModelConfig, dtype: str, jobs: dict, flops: dict
) -> dict[tuple[int, int], tuple[dict, dict]]:
    """{workload: (run_steps' dict for it, {step: its observations})}, from one region-recording walk."""
    made: list[_RegionTracker] = []
    res = memtrack.run_steps(cfg, dtype, jobs, flops=flops, tracker=_recording(made))
    order = [(wl, s) for wl, r in res.items() for s in r if r[s] is not None]  # one tracker each
    if len(made) != len(order):
        raise Refused("the trackers do not match the steps")
    obs: dict = {wl: {} for wl in res}
    for (wl, s), t in zip(order, made, strict=True):
        if isinstance(r := res[wl][s], memtrack.Tracked):
            obs[wl][s] = _observe(t, r)
    return {wl: (res[wl], obs[wl]) for wl in res}


def _simulated(
    cfg: ModelConfig, dtype: str, jobs: dict, walks: WalkCache
) -> dict[tuple[int, int], dict[str, Any]]:
    runs = [walks.recorded_steps(at_depth(cfg, d), dtype, jobs, _recorded_walk) for d in MEM_DEPTHS]
    return {
        wl: {
            s: _step(MEM_DEPTHS, cfg.depth, [r[wl][0][s] for r in runs], [r[wl][1].get(s, {}) for r in runs])
            for s in runs[0][wl][0]
        }  # run_steps' own keys (a prefill's decode is None when not asked)
        for wl in jobs
    }
