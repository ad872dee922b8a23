"""The decode phases of `speed`: cached (KV) decoding checked and timed, and multi-query against
multi-head cached decoding on the base (instruments/decode.py does the decoding).

Decode: `DECODE_TOKENS` single-token steps after a (seq_len - G)-token prompt, teacher-forced, with
x-transformers' KV cache. The cached logits are checked against one full forward: `decode_cache_pass`
is 1 where they agree within AGREEMENT_TOL, 0 where they disagree or decoding crashes (the problem in
its note: a finding, not a failure of the run). Where the cache fails, decode is also timed without it
(a full forward per new token, over the last `UNCACHED_TOKENS` positions).
KV heads (base variant only): the same decode, cached, for one KV head (multi-query) and for one KV
head per query head (multi-head). Orca's own flags break cached decoding, so the flags of
`CACHE_DROPS` are switched off, in that order, until the multi-query model's cached logits agree with
its full forward; the records name what was dropped (label `dropped`). The speed-up (multi-head
median time over multi-query median time) is stored once, as `kv_ablation_decode_speedup`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from ...build import build_model
from ...build.variants import kv_config
from ...catalog.declared.speed import (
    DECODE_CACHE_AGREEMENT,
    DECODE_CACHE_PASS,
    DECODE_CACHED_TIME,
    DECODE_CACHED_TOKENS_PER_S,
    DECODE_UNCACHED_TIME,
    DECODE_UNCACHED_TOKENS_PER_S,
    KV_ABLATION_CACHE_AGREEMENT,
    KV_ABLATION_CACHE_BYTES,
    KV_ABLATION_CACHE_PASS,
    KV_ABLATION_DECODE_SPEEDUP,
    KV_ABLATION_DECODE_TIME,
    KV_ABLATION_DECODE_TOKENS_PER_S,
    KV_ABLATION_GENERATE_CACHE,
)
from ...catalog.labels import Attn
from ...catalog.vocabulary import Method
from ...formulas import memory as fm
from ...formulas.memory import kv_cache_bytes
from ...instruments.decode import (
    AGREEMENT_TOL,
    CACHE_DROPS,
    UNCACHED_TOKENS,
    cache_check,
    cache_compatible,
    generate_cache,
    random_tokens,
    split,
    time_cached,
    time_uncached,
)
from ...instruments.timing import Timing
from ..recorder import Recorder
from .timed import Workload

if TYPE_CHECKING:
    from .run import Context

CHECK = Method.CACHED_VS_FULL_FORWARD
AGREES = "cached decoding agrees with the full forward; uncached not needed"
NOTHING_TO_TIME = "cached decoding failed: nothing to time with the cache (see decode_cache_pass)"
DISAGREES = "timed, but the cached logits disagree with the full forward (see decode_cache_pass)"


def _rate(
    rec: Recorder, metric: str, timing: Timing, work: float, labels: dict[str, Any], caveat: str
) -> None:
    """work / median, with the timing's noise note and the caveat."""
    note = "; ".join(filter(None, [timing.note, caveat]))
    rec.add(metric, work / timing.median, Method.MEASURED_MEDIAN, labels, note=note)


def decode_phase(ctx: Context, rec: Recorder, w: Workload) -> None:
    """Cache agreement, cached tokens/s, uncached tokens/s where the cache fails."""
    model = ctx.model.eval()
    prompt, new = split(w.seq_len, ctx.device)
    seqs = random_tokens(ctx.cfg.num_tokens, (w.batch, w.seq_len), ctx.device)
    labels = {"new": new, "prompt": prompt}
    k = min(new, UNCACHED_TOKENS)  # every uncached token costs a full forward: a few tell the rate
    uncached = {"new": k, "prompt": w.seq_len - k}
    with torch.inference_mode():
        rel, problem = cache_check(model, seqs[0], prompt, AGREEMENT_TOL[ctx.dtype])
        rec.add(DECODE_CACHE_PASS, float(not problem), CHECK, labels, note=problem)
        if rel is None:  # crashed: nothing to compare, nothing to time with the cache
            rec.skipped(DECODE_CACHE_AGREEMENT, CHECK, problem, labels)
            rec.skipped(DECODE_CACHED_TOKENS_PER_S, Method.MEASURED_MEDIAN, NOTHING_TO_TIME, labels)
        else:
            rec.add(DECODE_CACHE_AGREEMENT, rel, CHECK, labels, note=problem)
            timing = time_cached(model, seqs, prompt, ctx.device, "decode_cached")
            rec.timing(DECODE_CACHED_TIME, timing, labels)
            _rate(
                rec, DECODE_CACHED_TOKENS_PER_S, timing, w.batch * new, labels, DISAGREES if problem else ""
            )
        if not problem:
            rec.skipped(DECODE_UNCACHED_TOKENS_PER_S, Method.MEASURED_MEDIAN, AGREES, uncached)
            return
        timing = time_uncached(model, seqs, w.seq_len, k, ctx.device)
    rec.timing(DECODE_UNCACHED_TIME, timing, uncached)
    rec.rate(DECODE_UNCACHED_TOKENS_PER_S, timing, w.batch * k, uncached)


def no_compatible_model() -> str:
    tried = "; ".join("+".join(d) or "none" for d in CACHE_DROPS)
    return f"no cache-compatible model found (flags dropped, tried: {tried})"


def _generate_cache(
    rec: Recorder, model, cfg, prompt, new: int, labels: dict, w: Workload, dtype: str
) -> None:
    """The cache x-transformers really keeps during generate(), weighed, beside its closed form where one
    models it (the K/V at the last step; the prompt's cache object)."""
    got, b = generate_cache(model, prompt, new), prompt.shape[0]
    precision = fm.PRECISIONS[fm.DTYPE_PRECISION[dtype]]
    prompt_object = fm.cache_object(fm.dims(cfg, got.prompt_tokens, b, precision), got.prompt_tokens)
    parts = (
        ("kv", got.kv, got.kv_tokens, fm.kv_cache_bytes(cfg, got.kv_tokens, b, dtype)),
        ("prompt_object", got.prompt_object, got.prompt_tokens, prompt_object),
        ("object", got.whole, got.whole_tokens, None),
    )
    for part, value, tokens, closed in parts:
        at = {**labels, "part": part, "tokens": tokens}
        rec.add(KV_ABLATION_GENERATE_CACHE, value, Method.MEASURED, at)
        if closed is not None:
            rec.add(KV_ABLATION_GENERATE_CACHE, closed, Method.CLOSED_FORM, at, scale=w.analytic_scale)


def kv_heads_phase(ctx: Context, rec: Recorder, w: Workload) -> None:
    """Cached decode with one KV head against one per query head (same other flags); the two builds
    are kept in `ctx.kv_models` from one workload to the next."""
    if not ctx.compatible:
        ctx.compatible.append(cache_compatible(ctx.cfg, w.seq_len, ctx.device, ctx.dtype))
    if ctx.compatible[0] is None:
        rec.failed(KV_ABLATION_DECODE_SPEEDUP, Method.DERIVED, no_compatible_model(), {"dropped": "n/a"})
        return
    mqa, drops = ctx.compatible[0]
    dropped = "+".join(drops) or "none"
    prompt, new = split(w.seq_len, ctx.device)
    seqs = random_tokens(ctx.cfg.num_tokens, (w.batch, w.seq_len), ctx.device)
    medians: dict[str, float] = {}
    for attn, one_kv in ((Attn.MQA, True), (Attn.MHA, False)):
        c = kv_config(mqa, one_kv)
        labels = {"attn": attn, "kv_heads": c.kv_heads, "dropped": dropped, "new": new, "prompt": prompt}
        if attn not in ctx.kv_models:
            ctx.kv_models[attn] = build_model(c, ctx.device, ctx.dtype).eval()
        model = ctx.kv_models[attn]
        with torch.inference_mode():
            rel, problem = cache_check(model, seqs[0], prompt, AGREEMENT_TOL[ctx.dtype])
            rec.add(KV_ABLATION_CACHE_PASS, float(not problem), CHECK, labels, note=problem)
            if rel is None:
                rec.skipped(KV_ABLATION_CACHE_AGREEMENT, CHECK, problem, labels)
            else:
                rec.add(KV_ABLATION_CACHE_AGREEMENT, rel, CHECK, labels, note=problem)
                timing = time_cached(model, seqs, prompt, ctx.device, f"kv_ablation_{attn}")
                rec.timing(KV_ABLATION_DECODE_TIME, timing, labels)
                _rate(
                    rec,
                    KV_ABLATION_DECODE_TOKENS_PER_S,
                    timing,
                    w.batch * new,
                    labels,
                    DISAGREES.replace(DECODE_CACHE_PASS, KV_ABLATION_CACHE_PASS) if problem else "",
                )
                medians[attn] = timing.median
        nbytes = kv_cache_bytes(c, w.seq_len, w.batch, ctx.dtype)
        rec.add(KV_ABLATION_CACHE_BYTES, nbytes, Method.CLOSED_FORM, labels, scale=w.analytic_scale)
        if rel is not None:
            _generate_cache(rec, model, c, seqs[0][:, :prompt], new, labels, w, ctx.dtype)
    if {Attn.MQA, Attn.MHA} <= set(medians):
        rec.add(
            KV_ABLATION_DECODE_SPEEDUP,
            medians[Attn.MHA] / medians[Attn.MQA],
            Method.DERIVED,
            {"dropped": dropped},
        )
