"""Build a variant with the installed x-transformers: real weights, or no allocation at all.

`build_model` makes real tensors on a device. `fake_model` builds the same module under
FakeTensorMode: shapes, dtypes and dispatch are real, storage is not, so analysing a
55B-parameter variant costs no memory. (The plain meta device fails here: x-transformers
calls `torch.amp.autocast(device_type="meta")` in rotary code, which torch rejects.)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from x_transformers import Decoder, TransformerWrapper

from ..errors import BuildError
from ..study.kwargs import REALISED_FLAGS, xt_version
from ..study.schema import ModelConfig
from .deepnorm import deepnorm_init_, deepnorm_layer_kwargs
from .flex_alibi import apply_alibi_in_kernel

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def library_kwargs(cfg: ModelConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """(TransformerWrapper kwargs, Decoder kwargs) with realised flags translated."""
    layers = {k: v for k, v in cfg.layers.items() if k not in REALISED_FLAGS}
    if isinstance(layers.get("shift_tokens"), list):
        layers["shift_tokens"] = tuple(layers["shift_tokens"])
    if cfg.layers.get("deepnorm"):
        layers.update(deepnorm_layer_kwargs(cfg.depth))
    return dict(cfg.wrapper), layers


def realisation_problems(cfg: ModelConfig) -> list[str]:
    """Realised flags set in combinations orca-analysis cannot build, one line each.

    Config-level only (no model is built); `apply_alibi_in_kernel` also inspects the built
    attention modules and refuses anything else it cannot reproduce.
    """
    problems = []
    if cfg.layers.get("alibi_in_kernel"):
        if not cfg.layers.get("alibi_pos_bias"):
            problems.append("'alibi_in_kernel' moves ALiBi into the kernel: it needs 'alibi_pos_bias: true'")
        refused = {
            "attn_flash_pack_seq": "packed-sequence flash attention",
            "attn_num_mem_kv": "memory key/values",
            "attn_dropout": "attention dropout (FlexAttention has no dropout)",
            "cross_attend": "cross-attention",
        }
        for key, what in refused.items():
            if cfg.layers.get(key):
                problems.append(f"'alibi_in_kernel' does not cover {what}: remove '{key}'")
        if cfg.wrapper.get("num_memory_tokens"):
            problems.append("'alibi_in_kernel' does not cover memory tokens: remove 'num_memory_tokens'")
    return problems


def _construct(cfg: ModelConfig) -> TransformerWrapper:
    problems = realisation_problems(cfg)
    if problems:
        raise BuildError(problems)
    wrapper_kwargs, layer_kwargs = library_kwargs(cfg)
    try:
        model = TransformerWrapper(**wrapper_kwargs, attn_layers=Decoder(**layer_kwargs))
    except (AssertionError, TypeError, ValueError, RuntimeError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BuildError(f"x-transformers {xt_version()} refused the config: {reason}") from None
    if cfg.layers.get("deepnorm"):
        deepnorm_init_(model.attn_layers, cfg.depth)
    if cfg.layers.get("alibi_in_kernel"):
        apply_alibi_in_kernel(model)  # after init: it changes no parameter, only the kernel
    return model


@contextmanager
def _default_dtype(dtype: str) -> Iterator[None]:
    # Construct directly in the target dtype: `.to()` cannot swap fake parameters afterwards.
    previous = torch.get_default_dtype()
    torch.set_default_dtype(DTYPES[dtype])
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def build_model(
    cfg: ModelConfig, device: str | torch.device = "cpu", dtype: str = "float32", seed: int = 0
) -> TransformerWrapper:
    """Real weights on `device` in `dtype`, seeded."""
    torch.manual_seed(seed)
    with torch.device(device), _default_dtype(dtype):
        return _construct(cfg)


@contextmanager
def fake_model(
    cfg: ModelConfig, dtype: str = "float32"
) -> Iterator[tuple[TransformerWrapper, FakeTensorMode]]:
    """The variant with fake (storage-less) tensors; run it inside the yielded mode."""
    mode = FakeTensorMode(allow_non_fake_inputs=False)
    with mode:
        with _default_dtype(dtype):
            model = _construct(cfg)
        yield model, mode
