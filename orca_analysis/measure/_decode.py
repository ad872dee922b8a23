"""Decoding for the `speed` measurement: cached (KV) decoding checked and timed, and multi-query
against multi-head cached decoding on the base.

Decode: `DECODE_TOKENS` single-token steps after a (seq_len - G)-token prompt, teacher-forced on
a fixed random continuation (sampling cost excluded), with x-transformers' KV cache
(`return_intermediates=True`, `cache=`). The cached logits are checked against one full forward;
where caching fails or disagrees that is recorded (status error) and decode is also timed
without the cache (a full forward per new token, over the last `UNCACHED_TOKENS` positions).
KV heads (base variant only): the same decode, cached, for one KV head (multi-query) and for
one KV head per query head (multi-head). Orca's own flags break cached decoding (the probes name
them), so the flags of `CACHE_DROPS` are switched off, in that order, until the multi-query
model's cached logits agree with its full forward; the records name what was dropped.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from ..build import build_model
from ..results import Record
from ..study.schema import ModelConfig
from ._ablations import DTYPE_BYTES, kv_config
from ._quality import kv_cache_bytes
from ._recorder import cat
from ._timing import Timing, derive, rate_record, run_settings, time_fn, timing_records
from .probes import FLAGS_OFF

DECODE_TOKENS = {"cuda": 32, "cpu": 4}  # new tokens per decode sample
UNCACHED_TOKENS = 4  # new tokens per uncached decode sample (a full forward each)
AGREEMENT_TOL = {"float32": 1e-3, "bfloat16": 3e-2, "float16": 3e-2}  # max |dlogit| / max |logit|
# Flag sets to switch off, tried in order, to reach a cache-compatible model (probes: token shift
# gives wrong cached logits; ALiBi together with rotary crashes).
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


def _cached_steps(model, seq: torch.Tensor, prompt: int, cache_in) -> list[torch.Tensor]:
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
        got = torch.stack(_cached_steps(model, seq, prompt, cache_state), 1)  # (b, new, vocab)
        ref = model(seq)[:, prompt:]  # the full forward's logits at the same positions
    except Exception as exc:  # noqa: BLE001  (cached decoding failing is a result)
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return None, f"cached decoding failed: {type(exc).__name__}: {text}"
    rel = ((got - ref).abs().max() / ref.abs().max()).item()
    if rel <= tol:
        return rel, ""
    return (
        rel,
        f"cached decoding disagrees with the full forward: max |dlogit| is {rel:.2%} of max |logit| "
        + (f"(tolerance {tol:.1%})"),
    )


def _split(at: Record) -> tuple[int, int]:
    """(prompt, new tokens) of a decode sample at the record's seq_len."""
    new = DECODE_TOKENS["cuda" if at.device.startswith("cuda") else "cpu"]
    prompt = at.seq_len - new if at.seq_len > new else at.seq_len // 2
    return prompt, at.seq_len - prompt


def _time_cached(model, seqs: list[torch.Tensor], prompt: int, device: str, label: str) -> Timing:
    prefilled = [model(s[:, :prompt], return_intermediates=True)[1] for s in seqs]
    return time_fn(
        lambda i: _cached_steps(model, seqs[i], prompt, prefilled[i]),
        range(len(seqs)),
        device=device,
        label=label,
        **run_settings(device),
    )


def decode(model, cfg: ModelConfig, at: Record, n_matmul: int, ceilings) -> list[Record]:
    """The decode phase of `speed`: cache agreement, cached tokens/s, uncached where needed."""
    model.eval()
    prompt, new = _split(at)
    seqs = random_tokens(cfg.num_tokens, (at.batch, at.seq_len), at.device)
    what = replace(at, category=f"{new} tokens after a {prompt}-token prompt")
    with torch.inference_mode():
        rel, problem = cache_check(model, seqs[0], prompt, AGREEMENT_TOL[at.dtype])
        status = {"status": "error", "error": problem} if problem else {}
        records = [
            derive(what, "decode_cache_agreement", "cached_vs_full_forward", rel, "fraction", **status)
        ]
        if rel is None:  # failed: nothing to time with the cache
            records.append(
                derive(what, "decode_cached_tokens_per_s", "measured_median", None, "tokens/s", **status)
            )
        else:
            timing = _time_cached(model, seqs, prompt, at.device, "decode_cached")
            records += [replace(r, **status) for r in _decode_records(timing, what, "decode_cached", new)]
        if not problem:
            why = "cached decoding agrees with the full forward; uncached not needed"
            skipped = derive(
                what,
                "decode_uncached_tokens_per_s",
                "measured_median",
                None,
                "tokens/s",
                status="skipped",
                error=why,
            )
            return [*records, skipped]

        k = min(new, UNCACHED_TOKENS)  # every token costs a full forward: a few tell the rate

        def uncached(i: int) -> None:  # a full forward per new token
            for end in range(at.seq_len - k + 1, at.seq_len + 1):
                model(seqs[i][:, :end])

        timing = time_fn(
            uncached, range(len(seqs)), device=at.device, label="decode_uncached", **run_settings(at.device)
        )
        what = replace(at, category=f"{k} tokens after a {at.seq_len - k}-token prompt")
    return [*records, *_decode_records(timing, what, "decode_uncached", k)]


def _decode_records(timing: Timing, what: Record, name: str, new: int) -> list[Record]:
    tokens = what.batch * new
    return [
        *timing_records(timing, f"{name}_time", what),
        rate_record(timing, f"{name}_tokens_per_s", tokens, "tokens/s", what, "measured_median"),
    ]


def _without(cfg: ModelConfig, flags: tuple[str, ...]) -> ModelConfig:
    return cfg.with_values({("attn_layers", f): FLAGS_OFF[f] for f in flags if cfg.get(f)})


def cache_compatible(cfg: ModelConfig, at: Record) -> tuple[ModelConfig, tuple[str, ...]] | None:
    """The multi-query base with the fewest `CACHE_DROPS` flags off whose cached decoding agrees."""
    prompt, _ = _split(at)
    seq = random_tokens(cfg.num_tokens, (1, at.seq_len), at.device, k=1)[0]
    for drops in CACHE_DROPS:
        candidate = kv_config(_without(cfg, drops), True)
        model = build_model(candidate, at.device, at.dtype).eval()
        with torch.inference_mode():
            _, problem = cache_check(model, seq, prompt, AGREEMENT_TOL[at.dtype])
        if not problem:
            return candidate, drops
    return None


def kv_heads_decode(
    cfg: ModelConfig,
    at: Record,
    compatible: tuple[ModelConfig, tuple[str, ...]] | None,
    models: dict[str, torch.nn.Module] | None = None,
) -> list[Record]:
    """Cached decode tokens/s with one KV head against one per query head (same other flags);
    `models` keeps the two builds from one workload to the next."""
    models = {} if models is None else models
    prompt, new = _split(at)
    if compatible is None:
        tried = "; ".join("+".join(d) or "none" for d in CACHE_DROPS)
        why = f"no cache-compatible model found (flags dropped, tried: {tried})"
        return [
            derive(
                at,
                "kv_ablation_decode_tokens_per_s",
                "measured_median",
                None,
                "tokens/s",
                status="error",
                error=why,
            )
        ]
    mqa, drops = compatible
    seqs = random_tokens(cfg.num_tokens, (at.batch, at.seq_len), at.device)
    records = []
    for attn, one_kv in (("mqa", True), ("mha", False)):
        c = kv_config(mqa, one_kv)
        what = replace(
            at,
            category=cat(
                attn=attn, kv_heads=c.kv_heads, dropped="+".join(drops) or "none", new=new, prompt=prompt
            ),
        )
        if attn not in models:
            models[attn] = build_model(c, at.device, at.dtype).eval()
        model = models[attn]
        with torch.inference_mode():
            rel, problem = cache_check(model, seqs[0], prompt, AGREEMENT_TOL[at.dtype])
            status = {"status": "error", "error": problem} if problem else {}
            records.append(
                derive(
                    what, "kv_ablation_cache_agreement", "cached_vs_full_forward", rel, "fraction", **status
                )
            )
            if rel is not None:
                timing = _time_cached(model, seqs, prompt, at.device, f"kv_ablation_{attn}")
                records += [
                    replace(r, **status) for r in _decode_records(timing, what, "kv_ablation_decode", new)
                ]
        nbytes = kv_cache_bytes(c, at.seq_len, at.batch, DTYPE_BYTES[at.dtype])
        records.append(derive(what, "kv_ablation_cache_bytes", "closed_form", nbytes, "bytes"))
    return records
