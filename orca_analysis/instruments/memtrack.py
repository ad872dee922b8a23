"""The memory tracker and the steps it watches (training step, prefill, decode), for `memory`.

`run_steps` runs a variant's training step, prefill and decode (the real code paths) on the
no-allocation build (FakeTensorMode) under torch's MemTracker, and files every tensor as
parameters, gradients, activations, temporaries, optimizer state, buffers or inputs, per module
too. `_Tracker` overrides two private MemTracker methods for speed (pinned torch 2.13)."""

from __future__ import annotations

import dataclasses
import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch._guards import active_fake_mode
from torch.distributed._tools.mem_tracker import MemTracker, _MemRefType, _ModState
from torch.distributed.tensor import DTensor
from torch.utils._pytree import tree_map_only
from x_transformers import x_transformers as xt
from x_transformers.attend import Attend, create_causal_mask

from ..build import build_model, fake_model
from ..study.kwargs import xt_version
from ..study.schema import ModelConfig
from .flop_counter import count_step

CATEGORY = {
    _MemRefType.PARAM: "parameters", _MemRefType.BUFFER: "buffers", _MemRefType.GRAD: "gradients",
    _MemRefType.ACT: "activations", _MemRefType.TEMP: "temporaries", _MemRefType.OPT: "optimizer_state",
    _MemRefType.OTH: "inputs",
}  # fmt: skip


# `tensor.device` under a dispatch mode: about 40% of a training step's dispatches (einx and x-transformers
# ask for it all the time); no tensor out, nothing allocated
DEVICE_QUERY = torch.ops.prim.device.default
_WAIT_TENSOR = torch.ops._c10d_functional.wait_tensor.default  # upstream treats it specially

ALIBI = "alibi"  # snapshot key: bytes of ALiBi tensors alive (a part of activations and temporaries)
# Where ALiBi tensors are made (x-transformers 2.31): every op in the bias module and in the causal
# mask; in Attention.forward the pad_at_dim copy of the bias (for memory key/values, made even when
# there are none); in Attend.flash_attn the masked_fill that writes the causal mask into the
# (b, h, n, n) bias (its SDPA call is not ALiBi's).
_ALIBI_ALL = {xt.AlibiPositionalBias.forward.__code__, xt.AlibiPositionalBias.forward_custom_pos.__code__,
              create_causal_mask.__code__}  # fmt: skip
_ALIBI_FILL = {Attend.flash_attn.__code__: {torch.ops.aten.masked_fill},
               xt.Attention.forward.__code__: {torch.ops.aten.constant_pad_nd}}  # fmt: skip


def _alibi_made(func: Any, out: Any) -> bool:
    """Is `out` an ALiBi tensor? Every one is square in its last two dims ((n, n), (h, n, n),
    (b, h, n, n)): only such outputs pay for the walk up the Python frames."""
    if not isinstance(out, torch.Tensor) or out.dim() < 2 or out.shape[-1] != out.shape[-2]:
        return False
    frame = sys._getframe(2)
    for _ in range(40):  # the bias code is some frames above the dispatch (einx's among them)
        if frame is None:
            return False
        if frame.f_code in _ALIBI_ALL:
            return True
        if frame.f_code in _ALIBI_FILL:
            return func.overloadpacket in _ALIBI_FILL[frame.f_code]
        frame = frame.f_back
    return False


class _Tracker(MemTracker):
    """MemTracker with phase peaks, per-module peaks updated for active modules only, and the bytes of
    ALiBi tensors alive at each moment (snapshot key ALIBI).

    Upstream walks every tracked module on every op; this walks the modules now running (same result,
    ~5x faster on the Orca model), and files each peak under forward / backward / optimizer.
    """

    def __init__(self, alibi: bool = False) -> None:
        super().__init__()
        self._by_fqn: dict[str, Any] = {}
        self.phase_peaks: dict[str, dict[str, int]] = {}
        self._after_backward = False
        self._alibi = alibi  # the model has ALiBi: tag its tensors
        self._alibi_winfos: set[int] = set()

    def _update_snap(self, u_type: Any, winfo: Any, *args: Any, **kwargs: Any) -> None:
        snap = self._curr_mem_snap.setdefault(winfo.device, dict.fromkeys(self._ref_class, 0))
        snap.setdefault("Total", 0)
        snap.setdefault(ALIBI, 0)
        super()._update_snap(u_type, winfo, *args, **kwargs)

    def _delete_callback(self, winfo: Any, w_st: Any) -> None:
        if id(winfo) in self._alibi_winfos:
            self._alibi_winfos.discard(id(winfo))
            self._curr_mem_snap[winfo.device][ALIBI] -= winfo.mem_consumed
        super()._delete_callback(winfo, w_st)

    lean = True  # upstream's dispatch and snapshot copies where False: the reference tests compare with

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        if func is DEVICE_QUERY:  # no tensor out, nothing allocated: upstream would only re-check the peak
            return func(*args, **(kwargs or {}))
        if self.lean and DTensor not in types and func is not _WAIT_TENSOR:
            res = self._dispatch(func, args, kwargs or {})
        else:
            res = super().__torch_dispatch__(func, types, args, kwargs)
        if self._alibi and _alibi_made(func, res):
            winfo, _ = self._WINFO.get(res.untyped_storage(), (None, None))
            if winfo is not None and id(winfo) not in self._alibi_winfos and winfo.mem_consumed:
                self._alibi_winfos.add(id(winfo))
                self._curr_mem_snap[winfo.device][ALIBI] += winfo.mem_consumed
                self._update_peak_stats(None)  # the tally changed after upstream's peak check
        return res

    def _dispatch(self, func: Any, args: Any, kwargs: dict) -> Any:
        """Upstream's dispatch (torch 2.13) without a DTensor or collective in sight, its outputs tracked
        in a loop where they are tensors or a flat tuple of them (pytree's walk costs more than the op)."""
        res = func(*args, **kwargs)
        if active_fake_mode() is self._fake_mode_on_entry:
            bw = self._mod_tracker.is_bw
            reftype = (
                _MemRefType.OPT
                if self._in_opt
                else _MemRefType.TEMP
                if bw and not self._in_ac
                else _MemRefType.ACT
            )
            if isinstance(res, torch.Tensor):
                self._track(reftype, res)
            elif isinstance(res, (tuple, list)) and not any(isinstance(r, (tuple, list, dict)) for r in res):
                for r in res:
                    if isinstance(r, torch.Tensor):
                        self._track(reftype, r)
            else:
                tree_map_only(torch.Tensor, partial(self._track, reftype), res)
            self._update_peak_stats(_ModState.PEAK_BW if bw else _ModState.PEAK_FW)
        return res

    def get_tracker_snapshot(self, type: str = "current") -> dict[Any, dict[Any, int]]:  # noqa: A002
        """Upstream's deep copy, as a copy two levels deep (device -> {category: bytes}): the same dict."""
        if not self.lean:
            return super().get_tracker_snapshot(type)
        snaps = {"current": self._curr_mem_snap, "peak": self._peak_mem_snap}
        if type not in snaps:
            raise ValueError(f"Invalid type {type}")
        return {dev: dict(snap) for dev, snap in snaps[type].items()}

    def _pre_fw_hook(self, module: torch.nn.Module, inputs: Any) -> None:
        super()._pre_fw_hook(module, inputs)
        stats = self.memory_tracking[module]
        self._by_fqn[stats.mod_fqn] = stats

    def _update_peak_stats(self, peak_state: Any) -> None:
        snap = self._curr_mem_snap
        for fqn in self._mod_tracker.parents:
            stats = self._by_fqn.get(fqn)
            if stats is None or peak_state not in stats.snapshots:
                continue
            for dev, dev_snap in snap.items():
                if stats.local_peak.get(dev, 0) < dev_snap["Total"]:
                    stats.local_peak[dev] = dev_snap["Total"]
                    stats.snapshots[peak_state][-1][dev] = dict(dev_snap)
        self._after_backward |= self._mod_tracker.is_bw
        phase = "backward" if self._mod_tracker.is_bw else "forward"
        phase = "optimizer" if self._in_opt or (self._after_backward and phase == "forward") else phase
        for dev, dev_snap in snap.items():
            if self._peak_mem.get(dev, 0) < dev_snap["Total"]:
                self._peak_mem[dev], self._peak_mem_snap[dev] = dev_snap["Total"], dict(dev_snap)
            if self.phase_peaks.get(phase, {}).get("Total", 0) < dev_snap["Total"]:
                self.phase_peaks[phase] = dict(dev_snap)


@dataclasses.dataclass
class Tracked:
    """One tracked step: its peak, the phase it is in, the categories at that moment, each phase's peak."""

    total: int
    phase: str
    categories: dict[str, int]
    phases: dict[str, int]
    modules: dict[str, tuple[int, int]] = dataclasses.field(default_factory=dict)  # fqn -> (fw, bw) peak
    extra: dict[str, int] = dataclasses.field(default_factory=dict)
    alibi: int = 0  # bytes of ALiBi tensors alive at the peak (within activations and temporaries)


def _tracked(t: _Tracker, modules: bool = False) -> Tracked:
    peaks = {ph: s["Total"] for ph, s in t.phase_peaks.items()}
    phase = max(peaks, key=peaks.get)
    cats = {CATEGORY[k]: v for k, v in t.phase_peaks[phase].items() if k in CATEGORY}
    mods = {}
    for stats in t.memory_tracking.values() if modules else ():
        name = stats.mod_fqn.split(".", 1)[-1]  # without the root's class name
        if name in ("token_emb", "attn_layers", "to_logits") or re.fullmatch(
            r"attn_layers\.layers\.\d+\.1", name
        ):
            snaps = [
                [s for d in stats.snapshots.get(k, []) for s in d.values()]
                for k in ("Peak-Forward", "Peak-Backward")
            ]
            mods[name] = tuple(max((s.get("Total", 0) for s in ss), default=0) for ss in snaps)
    return Tracked(peaks[phase], phase, cats, peaks, mods, alibi=t.phase_peaks[phase].get(ALIBI, 0))  # fmt: skip


def tensors_in(obj: Any) -> list[torch.Tensor]:
    """Every tensor in a (nested) cache object: tensors, dataclasses, lists and tuples."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if dataclasses.is_dataclass(obj):
        return [t for f in dataclasses.fields(obj) for t in tensors_in(getattr(obj, f.name))]
    return [t for o in obj for t in tensors_in(o)] if isinstance(obj, (list, tuple)) else []


def storage_bytes(tensors: list[torch.Tensor]) -> int:
    """Bytes of the storages behind `tensors`, each storage once."""
    return sum({id(t.untyped_storage()): t.untyped_storage().nbytes() for t in tensors}.values())  # each once


def _adamw(model: torch.nn.Module) -> torch.optim.AdamW:
    """AdamW in its steady state: the state torch's Adam._init_group allocates on the first step."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=False)  # one code path on CPU and CUDA
    for p in model.parameters():
        state = {k: torch.zeros_like(p) for k in ("exp_avg", "exp_avg_sq")}  # preserve_format, as torch
        opt.state[p] = {"step": torch.tensor(0.0), **state}  # the step counter stays on CPU (not fused)
    return opt


@contextmanager
def _tracking(dev: str, *external: Any) -> Iterator[tuple[_Tracker, dict[str, int]]]:
    """The tracker, and on CUDA max_memory_allocated/reserved around the block, reset before it."""
    models = [e for e in external if isinstance(e, torch.nn.Module)]
    alibi = any(isinstance(m, xt.AlibiPositionalBias) for model in models for m in model.modules())
    tracker, cuda, on = _Tracker(alibi), {}, dev.startswith("cuda")
    tracker.track_external(*external)
    if on:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    with tracker:
        yield tracker, cuda
    if on:
        torch.cuda.synchronize()
        cuda.update(allocated=torch.cuda.max_memory_allocated(), reserved=torch.cuda.max_memory_reserved())


def _train(
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    flops: list | None = None,
) -> Tracked:
    """The tracked step; with `flops` (a list), its forward and backward are also counted (appended)."""

    def fw_bw() -> None:
        F.cross_entropy(model(x).transpose(1, 2), y).backward()

    with _tracking(str(x.device), model, opt, x, y) as (tracker, cuda):
        if flops is None:
            fw_bw()
        else:  # the counter's dispatch mode sits above the tracker's: it allocates nothing the tracker sees
            flops.append(count_step(model, x.shape[1], fw_bw))
        opt.step()
        opt.zero_grad(set_to_none=True)
    return dataclasses.replace(_tracked(tracker, modules=True), extra=cuda)


def _reason(exc: BaseException) -> str:
    """`Type: the message's first line` of a step the device cannot run."""
    return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:160]}"


def _train_step(
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    flops: list | None = None,
) -> Tracked | str:
    """The tracked training step, or why the device cannot run it (e.g. FlexAttention has no CPU backward):
    a limit of the device is a result, and the inference steps are still tracked."""
    try:
        return _train(model, opt, x, y, flops)
    except NotImplementedError as exc:
        opt.zero_grad(set_to_none=True)
        return _reason(exc)


def _prefill(model: torch.nn.Module, x: torch.Tensor) -> tuple[Tracked, Any]:
    with _tracking(str(x.device), model, x) as (tracker, cuda), torch.no_grad():
        _, cache = model(x, return_intermediates=True)
    kv = [t for inter in cache.attn_intermediates for t in inter.cached_kv]
    extra = {"kv_cache": storage_bytes(kv), "cache_object": storage_bytes(tensors_in(cache)), **cuda}
    return dataclasses.replace(_tracked(tracker), extra=extra), cache


class Skip(str):
    """A step that cannot happen at this workload, which is no failure (its text says why)."""


def _decode(model: torch.nn.Module, cfg: ModelConfig, cache: Any, x: torch.Tensor) -> Tracked | str:
    """One token on top of the prefill cache; a failure of the library is the result. A prompt that fills a
    learned absolute position table leaves no position for the new token: a Skip (generate() refuses to
    decode past the table with a cache)."""
    table = getattr(getattr(model, "pos_emb", None), "max_seq_len", None)
    if isinstance(table, int) and x.shape[1] + 1 > table:
        return Skip(f"the {x.shape[1]}-token prompt fills the absolute position table ({table} positions): no "
                    "position is left for a cached token")  # fmt: skip
    x = torch.cat((x, x[:, -1:]), dim=1)
    log = logging.getLogger("torch._subclasses.fake_tensor")
    level = log.level
    log.setLevel(
        logging.CRITICAL
    )  # fake tensors log a traceback before re-raising: the failure is our result
    try:
        with _tracking(str(x.device), model, x, *tensors_in(cache)) as (tracker, _), torch.no_grad():
            out, _ = model(x, return_intermediates=True, cache=cache)
        if tuple(out.shape) != (x.shape[0], 1, cfg.num_tokens):
            raise RuntimeError(f"logits of shape {tuple(out.shape)} for one new token")
    except RuntimeError as exc:
        why = str(exc).strip().splitlines()[0][:160]
        if cfg.layers.get("alibi_pos_bias") and (
            cfg.layers.get("rotary_xpos") or cfg.layers.get("rotary_pos_emb")
        ):
            why += " (rotary makes the layers pass positions, so ALiBi builds an (h, n+1, n+1) bias for one query)"
        return f"x-transformers {xt_version()} cached decoding failed: {why}"
    finally:
        log.setLevel(level)
    return _tracked(tracker)


def alibi_cached(cfg: ModelConfig) -> bool:
    """Without rotary, ALiBi caches its (h, n, n) bias on the module (built once, not per step)."""
    return bool(cfg.layers.get("alibi_pos_bias")) and not (
        cfg.layers.get("rotary_xpos") or cfg.layers.get("rotary_pos_emb")
    )


def _steady_alibi(model: torch.nn.Module, cfg: ModelConfig, n: int) -> None:
    """Size ALiBi's cached bias to n, as a steady state has it (alibi_cached)."""
    if alibi_cached(cfg):
        for mod in model.modules():
            if isinstance(mod, xt.AlibiPositionalBias):
                mod.register_buffer("bias", None, persistent=False)
                mod(n, n)


def run_steps(
    cfg: ModelConfig,
    dtype: str,
    jobs: dict[tuple[int, int], tuple[str, ...]],
    device: str | None = None,
    flops: dict | None = None,
) -> dict[tuple[int, int], dict[str, Any]]:
    """For each (seq_len, batch), the named steps ("train", "prefill", "decode"), tracked.

    device None: the no-allocation build (simulated); else real weights on that device (measured).
    flops (a dict, simulated only): each training step's forward and backward are also counted, as
    `count_flops(cfg, n, b, dtype)` counts them, into flops[(n, b)]; not where ALiBi's bias is cached
    (the steady state skips the bias build that count_flops counts).
    """
    counting = flops is not None and device is None and not alibi_cached(cfg)

    def run(model: torch.nn.Module, dev: str) -> dict[tuple[int, int], dict[str, Any]]:
        opt, V, out = _adamw(model), cfg.num_tokens, {}
        for (n, b), steps in jobs.items():
            _steady_alibi(model, cfg, n)
            x, y = torch.randint(0, V, (b, n), device=dev), torch.randint(0, V, (b, n), device=dev)
            counted: list | None = [] if counting else None
            res = out[(n, b)] = {"train": _train_step(model, opt, x, y, counted)} if "train" in steps else {}
            if counted:
                flops[(n, b)] = counted[0]
            model.eval()
            if "prefill" in steps or "decode" in steps:
                try:
                    res["prefill"], cache = _prefill(model, x)
                    res["decode"] = _decode(model, cfg, cache, x) if "decode" in steps else None
                except NotImplementedError as exc:  # the tracker cannot follow FlexAttention's operator
                    why = _reason(exc)
                    if "HigherOrderOperator" in why:
                        why = (f"torch {torch.__version__.split('+')[0]}'s MemTracker cannot follow the "
                               "flex_attention operator: this memory needs a GPU (max_memory_allocated)")  # fmt: skip
                    res["prefill"], res["decode"] = why, why if "decode" in steps else None
            model.train()
        return out

    if device is not None:
        return run(build_model(cfg, device, dtype), device)
    with fake_model(cfg, dtype) as (model, _):
        return run(model, "cpu")  # fmt: skip
