"""An operator-level FLOP counter: torch's FlopCounterMode, completed for attention and ALiBi.

Plain FlopCounterMode (torch 2.13) has formulas for the CUDA attention kernels but none for the
CPU flash kernel (`_scaled_dot_product_flash_attention_for_cpu`), the overrideable and MPS kernels
or the `scaled_dot_product_attention` entry point, and none of its formulas halves causal
attention. The formulas here are passed as FlopCounterMode's `custom_mapping` (torch's own
registry is left untouched). They reuse torch's registered matmul formulas and its
`sdpa_flop_count`/`sdpa_backward_flop_count` (on (b, h, s, d) shapes: torch's formulas for the
`_flash_attention_*`/`_efficient_attention_*` kernels misread their (b, s, h, d) inputs), and add:
- the causal-aware count beside the dense one (for a causal model every self-attention call is
  causal: with ALiBi, x-transformers folds the causal mask into a dense float bias, so the
  kernel's `is_causal` flag is False and the mask values are not visible under FakeTensorMode);
- the bias a kernel adds to every score it computes (forward, and the backward's recompute);
- the element-wise ALiBi work (bias construction, causal fill), found by the Python frame it
  runs in (see ALIBI_FRAMES);
- the math backend, a decomposition into matmuls that keeps the probabilities instead of
  recomputing them, gets the recompute a fused kernel does, so every backend gives one total.
Each count is split by component: the module it runs in (forward), or the forward node whose
backward runs it (found by autograd sequence number: torch's ModuleTracker cannot attribute
backward ops reliably). Per (phase, component) five columns (COLUMNS): the dense and causal counts
(FlashAttention convention: the backward's recompute of the scores included), the recompute part
of each (so model FLOPs, PaLM's MFU convention, leave it out), and what the kernels execute (HFU:
every pair where a bias is passed or no kernel flag skips masked blocks, the recompute included).
"""

from __future__ import annotations

import sys
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils import flop_counter as tfc
from torch.utils.flop_counter import FlopCounterMode
from x_transformers import x_transformers as xt
from x_transformers.attend import Attend

from ..build import fake_model
from ..study.schema import ModelConfig
from .forward_modules import ForwardModules

aten = torch.ops.aten
PHASES = ("forward", "backward")
_SDPA_KERNELS = (
    "flash_attention_for_cpu",
    "flash_attention",
    "efficient_attention",
    "cudnn_attention",
    "fused_attention_overrideable",
)  # what SDPA dispatches to, by backend and device
ATTENTION_OPS = [  # (op, layout of q/k/v, is a backward)
    (aten.scaled_dot_product_attention, "bhsd", False),  # the entry point, where not decomposed
    (aten._scaled_dot_product_attention_math_for_mps, "bhsd", False),  # (no derivative in torch 2.13)
    *[
        (getattr(aten, f"_scaled_dot_product_{k}{bw}"), "bhsd", bool(bw))
        for k in _SDPA_KERNELS
        for bw in ("", "_backward")
    ],
    *[
        (getattr(aten, f"_{k}_attention_{p}"), "bshd", p == "backward")
        for k in ("flash", "efficient")
        for p in ("forward", "backward")
    ],  # the kernels under SDPA, when called directly
]
MATMUL_OPS = [op for op in tfc.flop_registry if op not in {o for o, _, _ in ATTENTION_OPS}]
ELEMENTWISE_OPS = [aten.sub, aten.abs, aten.neg, aten.mul, aten.masked_fill, aten.add]
# The Python functions whose element-wise ops are ALiBi work: (code, ops counted there).
ALIBI_FRAMES = {
    xt.AlibiPositionalBias.forward.__code__: {aten.sub, aten.abs, aten.neg, aten.mul},  # cached path
    xt.AlibiPositionalBias.forward_custom_pos.__code__: {aten.sub, aten.abs, aten.neg, aten.mul},
    Attend.flash_attn.__code__: {aten.masked_fill},  # causal mask written into the dense bias
    Attend.forward.__code__: {aten.add},  # einsum path: sim + attn_bias
}


def causal_pairs(n_q: int, n_k: int) -> int:
    """(query, key) pairs a causal mask keeps, bottom-right aligned: n(n+1)/2 when n_q = n_k."""
    if n_k >= n_q:
        return n_q * (n_k - n_q) + n_q * (n_q + 1) // 2  # query i sees n_k - n_q + i + 1 keys
    return n_k * (n_k + 1) // 2  # the first n_q - n_k queries see no key


def _bind(op: Any, args: tuple, kwargs: dict) -> dict[str, Any]:
    names = [a.name for a in op.default._schema.arguments]
    return {**dict(zip(names, args, strict=False)), **kwargs}


_VARLEN = {
    "cum_seq_q": (tfc._unpack_flash_attention_nested_shapes, ("cum_seq_q", "cum_seq_k", "max_q", "max_k")),
    "cu_seqlens_q": (
        tfc._unpack_efficient_attention_nested_shapes,
        ("cu_seqlens_q", "cu_seqlens_k", "max_seqlen_q", "max_seqlen_k"),
    ),
}


def _attention_shapes(layout: str, a: dict[str, Any]) -> list[tuple]:
    """(q, k, v, grad_out) shapes as (b, h, s, d), one tuple per sequence."""
    grad = a.get("grad_out", a.get("grad_out_"))
    shapes = (a["query"].shape, a["key"].shape, a["value"].shape, None if grad is None else grad.shape)
    if layout == "bhsd":
        return [shapes]
    for key, (unpack, names) in _VARLEN.items():  # varlen: torch unpacks one (1, h, s, d) per sequence
        if a.get(key) is not None:
            qkv = {n: a[n] for n in ("query", "key", "value")}
            return list(unpack(**qkv, grad_out=grad, **{n: a[n] for n in names}))
    # Dense (b, s, h, d) inputs: torch 2.13's formulas read them as (b, h, s, d), which swaps
    # sequence and heads (16384 instead of 65536 FLOPs for b=2, h=4, s=16, d=8); transpose here.
    return [tuple(None if x is None else (x[0], x[2], x[1], x[3]) for x in shapes)]


def component_map(model: torch.nn.Module) -> dict[str, str]:
    """ModuleTracker name -> component, for the modules whose matrix products are a component."""
    root, out = type(model).__name__, {}
    for name, mod in model.named_modules():
        kind = {Attend: "attention_core", xt.FeedForward: "feedforward"}.get(type(mod))
        if isinstance(mod, xt.Attention):
            for child in ("to_q", "to_k", "to_v", "to_out"):
                out[f"{root}.{name}.{child}"] = child[3:] + "_proj"
        if name == "to_logits":
            kind = "logits"
        if kind:
            out[f"{root}.{name}"] = kind
    return out


COLUMNS = ("dense", "causal", "recompute_dense", "recompute_causal", "executed")
# count kind (the metric's suffix) -> (column added, column subtracted)
KINDS = {
    "dense": (0, None),
    "causal": (1, None),
    "model_dense": (0, 2),  # PaLM's model FLOPs (Chowdhery et al. 2022 App. B): no rematerialisation
    "model_causal": (1, 3),  # the same over the causal pairs
    "executed": (4, None),  # hardware FLOPs: what the kernels run
}


@dataclass
class FlopCount:
    """One counted run: FLOPs per (phase, component) in COLUMNS, plus plain torch's count."""

    flops: dict[tuple[str, str], list[int]] = field(
        default_factory=lambda: defaultdict(lambda: [0] * len(COLUMNS))
    )
    plain: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PHASES, 0))
    attention_ops: Counter = field(default_factory=Counter)
    mode_total: int = 0  # FlopCounterMode.get_total_flops(): the dense total (less the math backend's extra)

    def value(self, metric: str, component: str | None = None) -> int:
        """metric: forward_ or train_step_ followed by a kind of KINDS (forward_dense, train_step_causal,
        train_step_model_dense, train_step_executed, ...)."""
        step = "forward" if metric.startswith("forward_") else "train_step"
        plus, minus = KINDS[metric.removeprefix(step + "_")]
        phases = ("forward",) if step == "forward" else PHASES
        cells = [v for (p, c), v in self.flops.items() if p in phases and component in (None, c)]
        return sum(v[plus] - (v[minus] if minus is not None else 0) for v in cells)

    def components(self) -> list[str]:
        return sorted({c for _, c in self.flops})


class _Ledger:
    """The formulas handed to FlopCounterMode, and where they write."""

    def __init__(self, seq_len: int, causal: bool, model: torch.nn.Module | None = None) -> None:
        self.count, self.seq_len, self.causal = FlopCount(), seq_len, causal
        self.cmap = component_map(model) if model is not None else {}
        self.root = type(model).__name__ if model is not None else ""
        self.has_alibi = model is not None and any(
            isinstance(m, xt.AlibiPositionalBias) for m in model.modules()
        )
        self.node_component: dict[int, str] = {}  # autograd sequence number -> component
        self.tracker: Any = None  # the modules running a forward (ForwardModules), set once counting starts
        self.fused_calls = 0

    def mapping(self) -> dict[Any, Any]:
        m = {op: self._matmul(op) for op in MATMUL_OPS}
        m.update({op: self._attention(op, layout, bw) for op, layout, bw in ATTENTION_OPS})
        m.update({op: self._elementwise(op) for op in ELEMENTWISE_OPS})
        for f in m.values():
            f._get_raw = True  # formulas receive tensors, not shapes
        return m

    # -- where a count goes -------------------------------------------------------------
    def _phase(self) -> str:
        return "backward" if torch._C._current_graph_task_id() != -1 else "forward"

    def _component(self, phase: str, args: tuple) -> str:
        if phase == "backward":
            node = torch._C._current_autograd_node()
            return self.node_component.get(node._sequence_nr(), "other") if node else "other"
        parents = self.tracker.parents if self.tracker is not None else {"Global"}
        found = [self.cmap[p] for p in parents if p in self.cmap]
        if len(found) == 1:
            comp = found[0]
        elif not found and self.cmap and parents <= {"Global", self.root}:
            comp = "logits"  # tied embeddings: x-transformers multiplies by the table in a lambda
        else:
            comp = "other"
        if torch.is_grad_enabled() and any(isinstance(a, torch.Tensor) and a.requires_grad for a in args):
            # autograd made this op's node just before dispatching it here: remember its component
            self.node_component.setdefault(torch._C._autograd._get_sequence_nr() - 1, comp)
        return comp

    def add(
        self,
        phase: str,
        comp: str,
        dense: int,
        causal: int,
        executed: int | None = None,
        recompute: bool = False,
    ) -> None:
        """`executed` None: the kernel runs the dense count; `recompute`: the whole addition is the
        backward's rematerialisation."""
        cell = self.count.flops[(phase, comp)]
        cell[0] += dense
        cell[1] += causal
        if recompute:
            cell[2] += dense
            cell[3] += causal
        cell[4] += dense if executed is None else executed

    def _plain(self, op: Any, args: tuple, kwargs: dict, out: Any) -> int:
        f = tfc.flop_registry.get(op)
        return int(f(*args, out_val=out, **kwargs)) if f else 0

    # -- formulas -------------------------------------------------------------------------
    def _matmul(self, op: Any):
        def formula(*args, out_val=None, **kwargs) -> int:
            phase, flops = self._phase(), self._plain(op, args, kwargs, out_val)
            self.count.plain[phase] += flops
            comp = self._component(phase, args)
            n = self.seq_len  # a matmul inside Attend: the einsum or math path's Q K^T, P V and grads
            causal = (
                flops * causal_pairs(n, n) // (n * n) if comp == "attention_core" and self.causal else flops
            )
            self.add(phase, comp, flops, causal)
            return flops

        return formula

    def _attention(self, op: Any, layout: str, backward: bool):
        def formula(*args, out_val=None, **kwargs) -> int:
            phase, a = self._phase(), _bind(op, args, kwargs)
            self.count.plain[phase] += self._plain(op, args, kwargs, out_val)
            self._component(phase, args)  # records the node, for the backward
            kernel_causal = bool(a.get("is_causal")) or bool(a.get("custom_mask_type"))
            is_causal = self.causal or kernel_causal
            has_mask = any(a.get(m) is not None for m in ("attn_mask", "attn_bias", "bias"))
            skips = kernel_causal and not has_mask  # the kernel skips the masked blocks (HFU)
            total = 0
            for q, k, v, grad in _attention_shapes(layout, a):
                b, h, n_q, n_k = q[0], q[1], q[2], k[2]
                mm = tfc.sdpa_backward_flop_count(grad, q, k, v) if backward else tfc.sdpa_flop_count(q, k, v)
                pairs = causal_pairs(n_q, n_k) if is_causal else n_q * n_k
                per_pair = mm // (n_q * n_k)
                self.add(
                    phase,
                    "attention_core",
                    mm,
                    per_pair * pairs,
                    per_pair * (causal_pairs(n_q, n_k) if skips else n_q * n_k),
                )
                if backward:  # the first term of torch's backward formula: S = Q K^T recomputed
                    cell = self.count.flops[(phase, "attention_core")]
                    cell[2] += 2 * b * h * n_q * n_k * q[3]
                    cell[3] += 2 * b * h * pairs * q[3]
                add = b * h * n_q * n_k if has_mask else 0  # scores + bias, forward and recompute
                comp = "alibi" if self.has_alibi else "attention_core"
                self.add(phase, comp, add, b * h * pairs * has_mask, recompute=backward)
                total += mm + add
            self.count.attention_ops[op.__name__] += 1
            self.fused_calls += 1
            return total

        return formula

    def _elementwise(self, op: Any):
        def formula(*args, out_val=None, **kwargs) -> int:
            if not self.has_alibi or self._phase() == "backward":
                return 0  # the ALiBi bias takes no gradient
            frame = sys._getframe(1)
            while frame is not None and frame.f_code not in ALIBI_FRAMES:
                frame = frame.f_back
            if frame is None or op not in ALIBI_FRAMES[frame.f_code]:
                return 0
            dense = out_val.numel()
            n = self.seq_len
            causal = dense * causal_pairs(n, n) // (n * n) if op is aten.add and self.causal else dense
            self.add("forward", "alibi", dense, causal)
            return dense

        return formula


class _MathAttention(TorchFunctionMode):
    """SDPA calls that ran no fused kernel (the math backend): add what a fused kernel counts more."""

    def __init__(self, ledger: _Ledger) -> None:
        super().__init__()
        self.ledger = ledger

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        before = self.ledger.fused_calls
        out = func(*args, **kwargs)
        if func is not F.scaled_dot_product_attention or self.ledger.fused_calls != before:
            return out
        led, (q, k) = self.ledger, args[:2]
        b, h, n_q, d = q.shape
        n_k = k.shape[-2]
        pairs = causal_pairs(n_q, n_k) if led.causal or kwargs.get("is_causal") else n_q * n_k
        has_mask = (args[3] if len(args) > 3 else kwargs.get("attn_mask")) is not None
        comp = "alibi" if led.has_alibi else "attention_core"
        led.count.attention_ops["math (decomposed into matmuls)"] += 1
        if has_mask:  # the decomposition's scores + bias runs in C++: no Python frame marks it
            led.add("forward", comp, b * h * n_q * n_k, b * h * pairs)
        if out.requires_grad:

            def recompute(grad: torch.Tensor) -> None:  # counted as a fused kernel's; the math path runs none
                qk = (2 * b * h * n_q * n_k * d, 2 * b * h * pairs * d)
                led.add("backward", "attention_core", *qk, executed=0, recompute=True)
                if has_mask:
                    led.add("backward", comp, b * h * n_q * n_k, b * h * pairs, executed=0, recompute=True)

            out.register_hook(recompute)
        return out


def count_flops(
    cfg: ModelConfig, seq_len: int, batch: int, dtype: str = "float32", train: bool = True
) -> FlopCount:
    """Forward (and, with `train`, backward of a cross-entropy loss) on the storage-less model."""
    with fake_model(cfg, dtype) as (model, _):
        tokens = torch.randint(0, cfg.num_tokens, (batch, seq_len))  # (b, n), fake
        causal = bool(getattr(model.attn_layers, "causal", False))

        def step() -> None:
            logits = model(tokens)  # (b, n, V)
            if train:
                F.cross_entropy(logits.transpose(1, 2), tokens).backward()

        return _run(step, _Ledger(seq_len, causal, model))


def count_step(model: torch.nn.Module, seq_len: int, fn: Callable[[], Any]) -> FlopCount:
    """Count `fn` (a step of `model` on `seq_len` tokens) as count_flops counts its own: memtrack runs its
    training step under this, so one walk gives both the memory and the FLOPs."""
    return _run(fn, _Ledger(seq_len, bool(getattr(model.attn_layers, "causal", False)), model))


def count_ops(fn: Callable[[], Any], seq_len: int, causal: bool = False) -> FlopCount:
    """Count whatever `fn` runs (no model: components are attention_core, or `other`)."""
    return _run(fn, _Ledger(seq_len, causal))


def _run(fn: Callable[[], Any], ledger: _Ledger) -> FlopCount:
    # FlopCounterMode is no dispatch mode itself in torch 2.13 (it enters a private one), so a dispatch
    # override on it is never called: device queries go through upstream's mode, which counts nothing
    counter = FlopCounterMode(display=False, custom_mapping=ledger.mapping())
    counter.mod_tracker = ledger.tracker = ForwardModules()
    with counter, _MathAttention(ledger):
        fn()
    ledger.count.mode_total = counter.get_total_flops()
    return ledger.count
