"""The memory tracker and the steps it watches (training step, prefill, decode), for `memory`.

`run_steps` runs a variant's training step, prefill and decode (the real code paths) on the
no-allocation build (FakeTensorMode) under torch's MemTracker, and files every tensor as
parameters, gradients, activations, temporaries, optimizer state, buffers or inputs, per module
too, by the tracker of instruments/tracker.py. With `gpu`, the steps are walked as CUDA would run them
(instruments/gpu_memory.py)."""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from x_transformers import x_transformers as xt

from ..build import build_model, fake_model
from ..catalog.vocabulary import Cause
from ..study.kwargs import xt_version
from ..study.schema import ModelConfig
from .device import cpu_cannot
from .flop_counter import count_step
from .gpu_memory import GpuRun
from .roofline import CostRecorder
from .tracker import ALIBI, CATEGORY, _Tracker  # noqa: F401 (ALIBI, CATEGORY: per_block reads them here)

# the prefill walk's `extra`: the K/V tensors x-transformers caches, and every tensor of its cache object
EXTRA_KV, EXTRA_CACHE = "kv_cache", "cache_object"


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
    timeline: list | None = None  # the tracker's timeline, where it records one (instruments/replay.py)


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
    alibi = t.phase_peaks[phase].get(ALIBI, 0)
    return Tracked(peaks[phase], phase, cats, peaks, mods, alibi=alibi, timeline=getattr(t, "timeline", None))


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


def _adamw(model: torch.nn.Module, cuda: bool) -> torch.optim.AdamW:
    """AdamW in its steady state: the state torch's Adam._init_group allocates on the first step. Its code path
    is torch's default for the device (optim/optimizer.py _default_to_fused_or_foreach): the multi-tensor
    (foreach) one on CUDA, whose step holds parameter-sized lists of temporaries; a loop over the parameters on
    a CPU. `cuda`: the parameters are (or, in a simulated GPU walk, stand for) CUDA tensors."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=cuda)
    for p in model.parameters():
        state = {k: torch.zeros_like(p) for k in ("exp_avg", "exp_avg_sq")}  # preserve_format, as torch
        opt.state[p] = {"step": torch.tensor(0.0), **state}  # the step counter stays on CPU (not fused)
    return opt


@dataclasses.dataclass(frozen=True)
class How:
    """How a step is walked: as CUDA would run it (`gpu`), with its operators recorded (`costs`), and by which
    tracker (`tracker`: a factory taking (alibi, cuda), e.g. per_block's region-recording one)."""

    gpu: GpuRun | None = None
    costs: CostRecorder | None = None
    tracker: Callable[..., _Tracker] = _Tracker

    def forward(self, step: str) -> Any:
        return self.gpu.forward(step) if self.gpu else nullcontext()

    def step(self, name: str) -> Any:
        return self.costs.step(name) if self.costs else nullcontext()

    def optimizer(self) -> Any:
        return self.costs.optimizer() if self.costs else nullcontext()


PLAIN = How()


@contextmanager
def _tracking(dev: str, *external: Any, how: How = PLAIN) -> Iterator[tuple[_Tracker, dict[str, int]]]:
    """The tracker, and on CUDA max_memory_allocated/reserved around the block, reset before it. With `how.gpu`
    (a simulated GPU walk), every storage is filed on CUDA and rounded as its allocator rounds it."""
    models = [e for e in external if isinstance(e, torch.nn.Module)]
    alibi = any(isinstance(m, xt.AlibiPositionalBias) for model in models for m in model.modules())
    tracker, cuda, on = how.tracker(alibi, cuda=how.gpu is not None), {}, dev.startswith("cuda")
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
    how: How = PLAIN,
) -> Tracked:
    """The tracked step; with `flops` (a list), its forward and backward are also counted (appended). With
    `gpu`, the forward and loss run in its context (autocast, routed attention), the backward outside it."""

    def fw_bw() -> None:
        with how.forward("train"):
            loss = F.cross_entropy(model(x).transpose(1, 2), y)
        loss.backward()

    with _tracking(str(x.device), model, opt, x, y, how=how) as (tracker, cuda):
        if flops is None:
            with how.step("train"):
                fw_bw()
                with how.optimizer():
                    opt.step()
                    opt.zero_grad(set_to_none=True)
            return dataclasses.replace(_tracked(tracker, modules=True), extra=cuda)
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
    how: How = PLAIN,
) -> Tracked | str:
    """The tracked training step, or why the device cannot run it (e.g. FlexAttention has no CPU backward):
    a limit of the device is a result, and the inference steps are still tracked."""
    try:
        return _train(model, opt, x, y, flops, how)
    except NotImplementedError as exc:
        opt.zero_grad(set_to_none=True)
        return NeedsGpu(_reason(exc)) if cpu_cannot(exc) and how.gpu is None else _reason(exc)


def _prefill(model: torch.nn.Module, x: torch.Tensor, how: How = PLAIN) -> tuple[Tracked, Any]:
    with _tracking(str(x.device), model, x, how=how) as (tracker, cuda), torch.no_grad():
        with how.forward("prefill"), how.step("prefill"):
            _, cache = model(x, return_intermediates=True)
    kv = [t for inter in cache.attn_intermediates for t in inter.cached_kv]
    extra = {EXTRA_KV: storage_bytes(kv), EXTRA_CACHE: storage_bytes(tensors_in(cache)), **cuda}
    return dataclasses.replace(_tracked(tracker), extra=extra), cache


class Skip(str):
    """A step that cannot happen at this workload, which is no failure (its text says why)."""


class NeedsGpu(str):
    """A step this CPU cannot run and a GPU can (its text says why): a record of it has Cause.NEEDS_GPU."""


def cause_of(step: Any) -> Cause:
    """The cause a record of a step that did not run carries (Cause.NONE: its text alone says why)."""
    return Cause.NEEDS_GPU if isinstance(step, NeedsGpu) else Cause.NONE


def _decode(
    model: torch.nn.Module,
    cfg: ModelConfig,
    cache: Any,
    x: torch.Tensor,
    how: How = PLAIN,
) -> Tracked | str:
    """One token on top of the prefill cache; a failure of the library is the result. A prompt that fills a
    learned absolute position table leaves no position for the new token: a Skip (generate() refuses to
    decode past the table with a cache)."""
    table = getattr(getattr(model, "pos_emb", None), "max_seq_len", None)
    if isinstance(table, int) and x.shape[1] + 1 > table:
        return Skip(
            f"the {x.shape[1]}-token prompt fills the absolute position table ({table} positions): no "
            "position is left for a cached token"
        )
    x = torch.cat((x, x[:, -1:]), dim=1)
    log = logging.getLogger("torch._subclasses.fake_tensor")
    level = log.level
    log.setLevel(
        logging.CRITICAL
    )  # fake tensors log a traceback before re-raising: the failure is our result
    try:
        with _tracking(str(x.device), model, x, *tensors_in(cache), how=how) as (tracker, _), torch.no_grad():
            with how.forward("decode"), how.step("decode"):
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
    gpu: GpuRun | None = None,
    costs: dict | None = None,
    tracker: Callable[..., _Tracker] = _Tracker,
) -> dict[tuple[int, int], dict[str, Any]]:
    """For each (seq_len, batch), the named steps ("train", "prefill", "decode"), tracked.

    device None: the no-allocation build (simulated); else real weights on that device (measured).
    flops (a dict, simulated only): each training step's forward and backward are also counted, as
    `count_flops(cfg, n, b, dtype)` counts them, into flops[(n, b)]; not where ALiBi's bias is cached
    (the steady state skips the bias build that count_flops counts).
    gpu (simulated only): the steps as CUDA would run them on a catalogue device, in a dtype policy
    (instruments/gpu_memory.py); `dtype` is then the weights' (float32).
    costs (a dict, simulated only): each step's operators with their FLOPs and bytes (instruments/roofline.py),
    recorded in the same walk, into costs[(n, b)] = {step: [OpCost, ...]}.
    tracker: the tracker each step is watched by, made as tracker(alibi, cuda=...) (per_block's records more).
    """
    if gpu is not None and device is not None:
        raise ValueError("a simulated GPU walk runs on the no-allocation build: device must be None")
    counting = flops is not None and device is None and gpu is None and not alibi_cached(cfg)

    def run(model: torch.nn.Module, dev: str) -> dict[tuple[int, int], dict[str, Any]]:
        opt, V, out = _adamw(model, cuda=gpu is not None or dev.startswith("cuda")), cfg.num_tokens, {}
        for (n, b), steps in jobs.items():
            _steady_alibi(model, cfg, n)
            x, y = torch.randint(0, V, (b, n), device=dev), torch.randint(0, V, (b, n), device=dev)
            counted: list | None = [] if counting else None
            rec = CostRecorder() if costs is not None and device is None else None
            if rec is not None:
                costs[(n, b)] = rec.steps
            how = How(gpu, rec, tracker)
            res = out[(n, b)] = (
                {"train": _train_step(model, opt, x, y, counted, how)} if "train" in steps else {}
            )
            if counted:
                flops[(n, b)] = counted[0]
            model.eval()
            if "prefill" in steps or "decode" in steps:
                try:
                    res["prefill"], cache = _prefill(model, x, how)
                    res["decode"] = _decode(model, cfg, cache, x, how) if "decode" in steps else None
                except NotImplementedError as exc:  # the tracker cannot follow FlexAttention's operator
                    why = NeedsGpu(_reason(exc)) if cpu_cannot(exc) and gpu is None else _reason(exc)
                    if "HigherOrderOperator" in why:
                        why = NeedsGpu(
                            f"torch {torch.__version__.split('+')[0]}'s MemTracker cannot follow the "
                            "flex_attention operator: this memory needs a GPU (max_memory_allocated)"
                        )
                    res["prefill"], res["decode"] = why, why if "decode" in steps else None
            model.train()
        return out

    if device is not None:
        return run(build_model(cfg, device, dtype), device)
    with fake_model(cfg, dtype) as (model, _):
        return run(model, "cpu")
