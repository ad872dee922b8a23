"""Cached (KV) decoding with x-transformers: teacher-forced single-token steps, checked and timed.

A decode sample is `DECODE_TOKENS` single-token steps after a (seq_len - G)-token prompt, teacher-forced
on a fixed random continuation (sampling cost excluded), with x-transformers' KV cache
(`return_intermediates=True`, `cache=`). `cache_check` compares the cached logits with one full forward.
Orca's own flags break cached decoding (token shift gives wrong cached logits; ALiBi together with
rotary crashes), so `cache_compatible` switches the flags of `CACHE_DROPS` off, in that order, until a
multi-query model's cached logits agree with its full forward.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from x_transformers import AutoregressiveWrapper

from ..build import build_model
from ..build.variants import kv_config, without
from ..study.schema import ModelConfig
from .device import run_settings
from .memtrack import storage_bytes, tensors_in
from .timing import Timing, time_fn

DECODE_TOKENS = {"cuda": 32, "cpu": 4}  # new tokens per decode sample
UNCACHED_TOKENS = 4  # new tokens per uncached decode sample (a full forward each)
AGREEMENT_TOL = {"float32": 1e-3, "bfloat16": 3e-2, "float16": 3e-2}  # max |dlogit| / max |logit|
CACHE_DROPS: tuple[tuple[str, ...], ...] = (
    (),
    ("shift_tokens",),
    ("shift_tokens", "rotary_xpos"),
    ("shift_tokens", "alibi_pos_bias"),
)


def random_tokens(num_tokens: int, shape: tuple[int, int], device: str, k: int = 3) -> list[torch.Tensor]:
    """`k` seeded random token batches, rotated by the timing harness."""
    g = torch.Generator().manual_seed(0)
    return [torch.randint(0, num_tokens, shape, generator=g).to(device) for _ in range(k)]


def split(seq_len: int, device: str) -> tuple[int, int]:
    """(prompt, new tokens) of a decode sample at `seq_len`."""
    new = DECODE_TOKENS["cuda" if device.startswith("cuda") else "cpu"]
    prompt = seq_len - new if seq_len > new else seq_len // 2
    return prompt, seq_len - prompt


def cached_steps(model, seq: torch.Tensor, prompt: int, cache_in) -> list[torch.Tensor]:
    """Last-position logits of each single-token step from prompt+1 .. len(seq) tokens."""
    cache_state, out = cache_in, []
    for end in range(prompt + 1, seq.shape[1] + 1):
        logits, cache_state = model(seq[:, :end], return_intermediates=True, cache=cache_state)
        out.append(logits[:, -1])
    return out


def cache_check(model, seq: torch.Tensor, prompt: int, tol: float) -> tuple[float | None, str]:
    """(max |dlogit| / max |logit| of cached vs full-forward logits, problem or "")."""
    try:
        cache_state = model(seq[:, :prompt], return_intermediates=True)[1]
        got = torch.stack(cached_steps(model, seq, prompt, cache_state), 1)  # (b, new, vocab)
        ref = model(seq)[:, prompt:]  # the full forward's logits at the same positions
    except Exception as exc:  # noqa: BLE001  (cached decoding failing is a result)
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return None, f"cached decoding failed: {type(exc).__name__}: {text}"
    rel = ((got - ref).abs().max() / ref.abs().max()).item()
    if rel <= tol:
        return rel, ""
    return rel, (
        f"cached decoding disagrees with the full forward: max |dlogit| is {rel:.2%} of max |logit| "
        f"(tolerance {tol:.1%})"
    )


def time_cached(model, seqs: list[torch.Tensor], prompt: int, device: str, label: str) -> Timing:
    prefilled = [model(s[:, :prompt], return_intermediates=True)[1] for s in seqs]
    return time_fn(
        lambda i: cached_steps(model, seqs[i], prompt, prefilled[i]),
        range(len(seqs)),
        device=device,
        label=label,
        **run_settings(device),
    )


def time_uncached(model, seqs: list[torch.Tensor], seq_len: int, k: int, device: str) -> Timing:
    """A full forward per new token, for the last `k` positions."""

    def uncached(i: int) -> None:
        for end in range(seq_len - k + 1, seq_len + 1):
            model(seqs[i][:, :end])

    return time_fn(uncached, range(len(seqs)), device=device, label="decode_uncached", **run_settings(device))


@dataclass(frozen=True)
class GenerateCache:
    """What x-transformers kept between the steps of one `generate` call."""

    kv: int  # bytes of the K/V tensors, at the last step (the most tokens)
    kv_tokens: int  # tokens they hold (prompt + new - 1: the last step's input)
    prompt_object: int  # bytes of every tensor of the prompt's cache object (K/V and 2L+1 hidden states)
    prompt_tokens: int
    whole: int  # bytes of the largest cache object of the call (a cached step's keeps one position's
    whole_tokens: int  # hidden states as views of larger storages, and each layer's values)


def generate_cache(model: torch.nn.Module, prompt: torch.Tensor, new: int) -> GenerateCache:
    """Decode `new` tokens greedily with AutoregressiveWrapper.generate(cache_kv=True) and weigh the cache
    object each forward returns (what generate keeps and passes to the next step)."""
    seen: list[tuple[int, int, int]] = []  # (tokens, K/V bytes, whole bytes) per forward
    forward = model.forward

    def weighed(x: torch.Tensor, *args, **kwargs):
        out = forward(x, *args, **kwargs)
        if kwargs.get("return_intermediates"):
            cache = out[1]
            kv = [t for inter in cache.attn_intermediates for t in inter.cached_kv]
            seen.append((x.shape[1], storage_bytes(kv), storage_bytes(tensors_in(cache))))
        return out

    model.forward = weighed  # nn.Module.__call__ calls the instance's forward
    try:
        with torch.inference_mode():
            AutoregressiveWrapper(model).generate(prompt, new, cache_kv=True, temperature=0.0)
    finally:
        del model.forward
    kv, whole = max(seen, key=lambda s: s[1]), max(seen, key=lambda s: s[2])
    return GenerateCache(kv[1], kv[0], seen[0][2], seen[0][0], whole[2], whole[0])


def cache_compatible(
    cfg: ModelConfig, seq_len: int, device: str, dtype: str
) -> tuple[ModelConfig, tuple[str, ...]] | None:
    """The multi-query `cfg` with the fewest `CACHE_DROPS` flags off whose cached decoding agrees."""
    prompt, _ = split(seq_len, device)
    seq = random_tokens(cfg.num_tokens, (1, seq_len), device, k=1)[0]
    for drops in CACHE_DROPS:
        candidate = kv_config(without(cfg, drops), True)
        model = build_model(candidate, device, dtype).eval()
        with torch.inference_mode():
            _, problem = cache_check(model, seq, prompt, AGREEMENT_TOL[dtype])
        if not problem:
            return candidate, drops
    return None
