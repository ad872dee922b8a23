"""What the built model is, read from the model itself: the facts the design notes state as values.

- vocab_rows: rows of the token embedding table (the vocabulary the model can read).
- context_length: the wrapper's max_seq_len; context_forward: a forward of max_seq_len tokens on the
  no-allocation build ran (1) or raised (0, the error in the note): the length is usable, not only set.
- abs_pos_params: parameters of the wrapper's absolute position embedding (0: none is learned).
- alibi_heads: rows of the built ALiBi slopes (x-transformers pads the other heads
  with a zero bias); kv_heads: the key projection's width over the head width (query width / heads).
- shifted_channels: x-transformers' ShiftTokens, with the shifts it was built with, run on a random
  (1, 8, d) input: how many channels of the output at position t change when the input at t - 1 does
  (0 without token shift); shift_offset: the largest offset a channel comes from.
- kv_group: query heads per key/value head (1: MHA; heads: MQA; between: GQA), the note naming the kind;
  position_sources: how many sources of position information the built model has, the note naming
  them (build/describe.py: learned or sinusoidal table, rotary or xPos, ALiBi, another relative bias,
  token shift; 0: only the causal mask orders the tokens).
- flag_changes_build: the variant built with and without each flag the study sets (every key but the
  shape keys a model cannot be built without; at depth 1: every block is built alike): 1 when the two
  differ in a parameter, buffer, module or module setting (the note names the first difference), 0
  when the flag changes nothing in the build.
All analytic: counts and shapes of the built model, exact.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from x_transformers import x_transformers as xt

from ...build import fake_model
from ...build.describe import describe, position_sources
from ...catalog.declared.design import (
    ABS_POS_PARAMS,
    ALIBI_HEADS,
    CONTEXT_FORWARD,
    CONTEXT_LENGTH,
    FLAG_CHANGES_BUILD,
    KV_GROUP,
    KV_HEADS,
    POSITION_SOURCES,
    SHIFT_OFFSET,
    SHIFTED_CHANNELS,
    VOCAB_ROWS,
)
from ...catalog.vocabulary import Method
from ...instruments.uniform_blocks import at_depth
from ...results import Record
from ...study.kwargs import LAYERS, resolve
from ...study.schema import ModelConfig, Study, Variant
from ..recorder import Recorder

REQUIRED = ("num_tokens", "max_seq_len", "dim", "depth")  # no build without them: not flags to drop
_SETTINGS = (bool, int, float, str, tuple)


def _first_attention(model: nn.Module) -> xt.Attention | None:
    return next((m for m in model.modules() if isinstance(m, xt.Attention)), None)


def _kv_heads(attn: xt.Attention) -> int:
    dim_head = attn.to_q.weight.shape[0] // attn.heads  # (heads * dim_head, dim)
    return attn.to_k.weight.shape[0] // dim_head  # (kv_heads * dim_head, dim)


def _shifts(model: nn.Module) -> tuple[int, ...] | None:
    shift = next((m for m in model.modules() if isinstance(m, xt.ShiftTokens)), None)
    return None if shift is None else tuple(int(x) for x in shift.shifts)


def _shifted(shifts: tuple[int, ...] | None, dim: int) -> tuple[int, int]:
    """(channels of position t that depend on t - 1, the largest offset): the library's ShiftTokens with
    the shifts the model was built with, on real tensors (outside the fake mode)."""
    if shifts is None:
        return 0, 0
    probe = xt.ShiftTokens(shifts, nn.Identity())
    x = torch.randn(1, 8, dim, generator=torch.Generator().manual_seed(0))
    moved = x.clone()
    moved[:, 3] += 1.0  # change position 3 only
    changed = (probe(moved) != probe(x))[0]  # (n, d)
    return int(changed[4].sum()), max(shifts, default=0)


def signature(cfg: ModelConfig) -> dict[str, Any]:
    """Every parameter and buffer (shape), module (class) and simple module setting of the build."""
    out: dict[str, Any] = {}
    with fake_model(cfg) as (model, _):
        for name, p in model.named_parameters():
            out[f"param {name}"] = tuple(p.shape)
        for name, b in model.named_buffers():
            out[f"buffer {name}"] = tuple(b.shape)
        for name, mod in model.named_modules():
            out[f"module {name}"] = type(mod).__name__
            for key, value in vars(mod).items():
                if not key.startswith("_") and isinstance(value, _SETTINGS) and key != "training":
                    out[f"setting {name}.{key}"] = value
    return out


def _difference(a: dict[str, Any], b: dict[str, Any]) -> str:
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            return f"{key}: {a.get(key, 'absent')!r} with the flag, {b.get(key, 'absent')!r} without"
    return ""


DEPENDENT_FLAGS = {"alibi_pos_bias": ("alibi_in_kernel",)}  # unset with it: they need it to build


def without_flag(cfg: ModelConfig, flag: str) -> ModelConfig:
    """The config with `flag` unset: the library's default (deepnorm: x-transformers' pre-norm)."""
    drop = {flag, *DEPENDENT_FLAGS.get(flag, ())}
    return ModelConfig(
        {k: v for k, v in cfg.wrapper.items() if k not in drop},
        {k: v for k, v in cfg.layers.items() if k not in drop},
    )


def measure_design(variant: Variant, study: Study) -> list[Record]:
    cfg = variant.config
    rec = Recorder(study.name, variant, "design", device="none")
    with fake_model(cfg) as (model, _):
        rec.add(VOCAB_ROWS, model.token_emb.emb.weight.shape[0], Method.BUILT_MODEL)
        rec.add(CONTEXT_LENGTH, model.max_seq_len, Method.BUILT_MODEL)
        pos = getattr(model, "pos_emb", None)
        learned = sum(p.numel() for p in pos.parameters()) if isinstance(pos, nn.Module) else 0
        rec.add(
            ABS_POS_PARAMS, learned, Method.BUILT_MODEL, note=f"the wrapper's pos_emb is {type(pos).__name__}"
        )
        attn = _first_attention(model)
        if attn is not None:
            rel = next((m for m in model.modules() if isinstance(m, xt.AlibiPositionalBias)), None)
            alibi = rel.slopes.shape[0] if rel is not None else 0  # (alibi heads, 1, 1)
            rec.add(ALIBI_HEADS, alibi, Method.BUILT_MODEL, note=f"of {attn.heads} heads")
            rec.add(KV_HEADS, _kv_heads(attn), Method.BUILT_MODEL, note=f"of {attn.heads} query heads")
        try:
            with torch.no_grad():
                model(torch.randint(0, cfg.num_tokens, (1, cfg.max_seq_len)))
            rec.add(CONTEXT_FORWARD, 1.0, Method.SIMULATED, note=f"a forward of {cfg.max_seq_len} tokens ran")
        except Exception as exc:  # noqa: BLE001  (the library failing at its own max length is a result)
            rec.add(CONTEXT_FORWARD, 0.0, Method.SIMULATED, note=f"{type(exc).__name__}: {str(exc)[:200]}")
    with fake_model(at_depth(cfg, 1)) as (small, _):
        shifts = _shifts(small)
    channels, offset = _shifted(shifts, cfg.dim)
    rec.add(SHIFTED_CHANNELS, channels, Method.BUILT_MODEL, note=f"of {cfg.dim} channels at position t")
    rec.add(SHIFT_OFFSET, offset, Method.BUILT_MODEL)
    facts = describe(cfg)
    rec.add(KV_GROUP, facts.heads // facts.kv_heads, Method.BUILT_MODEL, note=facts.attention_kind)
    rec.add(POSITION_SOURCES, len(position_sources(facts)), Method.BUILT_MODEL, note=facts.positions)
    one = at_depth(cfg, 1)
    built = signature(one)
    for flag in [*cfg.wrapper, *cfg.layers]:
        if flag in REQUIRED:
            continue
        try:
            diff = _difference(built, signature(without_flag(one, flag)))
        except Exception as exc:  # noqa: BLE001  (the library refusing the config without it is the answer)
            diff = f"x-transformers cannot build it without the flag: {type(exc).__name__}: {str(exc)[:120]}"
        default = resolve(f"{LAYERS}.{flag}" if flag in cfg.layers else flag).default
        same = "building without the flag gives the same model" + (
            f" ({flag}={cfg.get(flag)!r} is the library's default)" if cfg.get(flag) == default else ""
        )
        rec.add(FLAG_CHANGES_BUILD, float(bool(diff)), Method.BUILD_DIFF, {"flag": flag}, note=diff or same)
    return rec.records
