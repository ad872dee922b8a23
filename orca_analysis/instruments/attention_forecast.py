"""The attention calls of a variant, as CUDA's SDPA would receive them, and the backend predicted for each.

The calls are captured from one forward of the no-allocation build at the workload's length and batch,
built in the compute dtype (bfloat16 under autocast: SDPA is on autocast's lower-precision list, so q, k,
v and a float mask all arrive in bfloat16): exact shapes, strides, masks and flags, whatever the design.
The backend for each comes from torch's selection rules (instruments/sdpa_rules.py): a prediction.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from ..build import fake_model
from ..devices import Device
from ..study.schema import ModelConfig
from .sdpa import library_backends
from .sdpa_rules import XT_ENABLED, AttentionCall, Prediction, predict

DTYPE_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


class _Record(TorchFunctionMode):
    """Every `F.scaled_dot_product_attention` call of a forward, as an AttentionCall (shapes only)."""

    def __init__(self, training: bool) -> None:
        super().__init__()
        self.training, self.calls = training, Counter()

    def __torch_function__(self, func: Callable, types: Any, args: tuple = (), kwargs: dict | None = None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            self.calls[call_of(args, kwargs, self.training)] += 1
        return func(*args, **kwargs)


def call_of(args: tuple, kwargs: dict, training: bool) -> AttentionCall:
    """The AttentionCall of one `F.scaled_dot_product_attention(*args, **kwargs)`."""
    q, k, v = args[:3]
    mask = kwargs.get("attn_mask", args[3] if len(args) > 3 else None)
    kind = "none" if mask is None else "bool" if mask.dtype == torch.bool else "float"
    return AttentionCall(
        dtype=DTYPE_NAMES.get(q.dtype, str(q.dtype)),
        batch=q.shape[0],
        heads_q=q.shape[1],
        heads_kv=k.shape[1],
        seq_q=q.shape[2],
        seq_k=k.shape[2],
        head_dim=q.shape[3],
        head_dim_v=v.shape[3],
        mask=kind,
        mask_dims=0 if mask is None else mask.dim(),
        is_causal=bool(kwargs.get("is_causal", False)),
        dropout=float(kwargs.get("dropout_p", 0.0)),
        training=training,
        enable_gqa=bool(kwargs.get("enable_gqa", False)),
        last_dim_stride_1=all(t.stride(-1) == 1 or t.shape[-1] == 1 for t in (q, k, v)),
    )


@dataclass(frozen=True)
class Forecast:
    call: AttentionCall
    count: int  # calls alike in one forward (one per layer, as a rule)
    prediction: Prediction


def attention_calls(
    cfg: ModelConfig, seq_len: int, batch: int, dtype: str, training: bool
) -> tuple[Counter[AttentionCall], tuple[str, ...]]:
    """The SDPA calls of one forward of `cfg` (counted), and the backends the library enables around them."""
    record = _Record(training)
    with fake_model(cfg, dtype) as (model, _):
        model.train(training)
        tokens = torch.randint(0, cfg.num_tokens, (batch, seq_len))
        with torch.no_grad(), record:
            model(tokens)
        enabled = tuple(library_backends(model) or XT_ENABLED)
    return record.calls, enabled


def forecast_attention(
    cfg: ModelConfig, device: Device, seq_len: int, batch: int, dtype: str = "bfloat16", training: bool = True
) -> tuple[list[Forecast], str]:
    """The predicted backend of each distinct attention call, and a note where the design calls no SDPA."""
    calls, enabled = attention_calls(cfg, seq_len, batch, dtype, training)
    return [Forecast(c, n, predict(c, device, enabled)) for c, n in calls.items()], no_call_note(cfg, calls)


def no_call_note(cfg: ModelConfig, calls: Counter[AttentionCall]) -> str:
    """Why a design calls no SDPA, or '' where it does."""
    if calls:
        return ""
    return "no scaled_dot_product_attention call: " + (
        "FlexAttention runs attention (alibi_in_kernel), compiled by torch.compile on CUDA"
        if cfg.layers.get("alibi_in_kernel")
        else "x-transformers computes attention in plain PyTorch (attn_flash is off), materialising the scores"
    )
