"""Memory of a training step and of inference: closed form and simulated (analytic).

closed_form: formulas/memory.py. simulated: the real steps run on the no-allocation build
(FakeTensorMode) under torch's MemTracker (instruments/memtrack.py), which files every tensor as
parameters, gradients, activations, temporaries (backward), optimizer state, buffers or inputs, per
module too. Both are deterministic, so `memory` runs in the sweep's process; the real-tensor check
is `memory_measured` (isolated).
Steps: training = forward, cross-entropy, backward, AdamW (steady state: its state exists, grads set to
None after the step); prefill = no-grad forward with return_intermediates=True, as
AutoregressiveWrapper.generate calls it; decode = one token on that cache (cached decoding fails in
x-transformers 2.31 with ALiBi + rotary: an error record, the library's message in its note);
generate(cache_kv=False) instead re-runs the prompt, slid to max_seq_len (closed form; simulated where
it equals the prefill).
Lengths: the study's, simulated in full; the sweep 512 .. max_seq_len in closed form (and simulated
for the base variant's training step), so the report can show how each term grows.
Scale: closed form and simulated are `analytic`. Each relative error is computed once
(`memory_rel_error`); one beyond its tolerance says so in its note.
"""

from __future__ import annotations

from typing import Any

from ...catalog.declared.memory import (
    ACTIVATION_TERM,
    ALIBI_BYTES_AT_PEAK,
    ALIBI_SHARE_OF_PEAK,
    CACHE_OBJECT,
    FITS,
    KV_CACHE_SIZE,
    MEMORY_REL_ERROR,
    PEAK,
    PEAK_DECODE_CACHED,
    PEAK_DECODE_UNCACHED,
    PEAK_PREFILL,
    PEAK_TRAIN,
    PEAK_TRAIN_BF16_MIXED,
    PEAK_TRAIN_MODULE,
    PEAK_TRAIN_PART,
    PHASE_OF,
    TOTAL,
    TRAINING_STATE,
)
from ...catalog.labels import Phase
from ...catalog.vocabulary import Method, Scale
from ...formulas import memory as fm
from ...instruments.analytic import analytic_memory
from ...instruments.kept_walks import WalkCache
from ...instruments.memtrack import EXTRA_CACHE, EXTRA_KV, Skip, Tracked, cause_of
from ...results import Record
from ...study.schema import ModelConfig, Study, Variant
from ..recorder import Recorder

SWEEP_SKIP = "simulated at the study's sequence lengths (all lengths: base variant's training step) for time"
UNCACHED_SKIP = "a prefill of n+1 tokens, one token from peak_prefill: not simulated again (time)"
FITS_NOTE = (
    "the simulated peak (every tensor the step holds, at its dtype) against the device's nominal capacity; "
    "the CUDA context, cuBLAS workspace and the caching allocator's rounding are not in it"
)
GAP = 0.01  # a gap beyond it is explained in the note (what the first misses), within tolerance or not
TOLERANCE = {
    "closed_form_vs_simulated": 0.15,
    "simulated_vs_measured": 0.05,
    "simulated_vs_measured_cuda": 0.10,
}
# the closed form's peak moments, by the phase the tracker files them under
PHASE = {
    "forward_attention": "forward",
    "forward_loss": "forward",
    "forward_logits": "forward",
    "backward_start": "backward",
    "optimizer": "optimizer",
    "decode": "forward",
}
WHOLE = Phase.ALL  # memory_rel_error's phase for the whole peak


def sweep_lengths(cfg: ModelConfig) -> list[int]:
    """512, 1024, ... up to max_seq_len (and max_seq_len itself)."""
    n, out = min(512, cfg.max_seq_len), []
    while n < cfg.max_seq_len:
        out, n = [*out, n], n * 2
    return [*out, cfg.max_seq_len]


def _gap(a: fm.Peak | Tracked, ref: fm.Peak | Tracked, cfg: ModelConfig | None = None) -> str:
    """Name what `a` misses against `ref`: the category with the largest gap, and both peak phases."""
    worst = max(
        set(a.categories) | set(ref.categories),
        key=lambda c: abs(a.categories.get(c, 0) - ref.categories.get(c, 0)),
    )
    delta = (a.categories.get(worst, 0) - ref.categories.get(worst, 0)) / 2**20
    text = f"{delta:+.1f} MiB of '{worst}'; peak phase {PHASE.get(a.phase, a.phase)} vs {ref.phase}"
    return text + (_unmodelled(cfg) if cfg is not None else "")


def _unmodelled(cfg: ModelConfig) -> str:
    missing = fm.unmodelled(cfg)
    return f"; not modelled: {'; '.join(missing)}" if missing else ""


def _peak(rec: Recorder, metric: str, method: str, p: fm.Peak | Tracked, note: str = "") -> None:
    """Total (with `note`: how it was simulated), by category, and the peak of each phase."""
    rec.add(metric, p.total, method, TOTAL, note=note)
    for cat, value in p.categories.items():
        rec.add(metric, value, method, {"category": cat})
    phases: dict[str, int] = {}
    for ph, value in p.phases.items():
        phases[PHASE.get(ph, ph)] = max(value, phases.get(PHASE.get(ph, ph), 0))
    for ph, value in phases.items():
        rec.add(PHASE_OF[metric], value, method, {"phase": ph})


def _rel(
    rec: Recorder, quantity: str, pair: str, a: float, ref: float, gap: str = "", phase: str = WHOLE
) -> None:
    """(a - ref) / ref, stored once; beyond its tolerance the note names what the first misses."""
    err, tol = (a - ref) / ref, TOLERANCE[pair]
    note = f"{err:+.1%}, beyond {tol:.0%}: misses {gap}" if abs(err) > tol else ""
    if not note and pair == "closed_form_vs_simulated" and abs(err) > GAP:  # within tolerance, still said why
        note = f"misses {gap}"
    rec.add(
        MEMORY_REL_ERROR, err, Method.DERIVED, {"quantity": quantity, "pair": pair, "phase": phase}, note=note
    )


def _closed_forms(rec: Recorder, cfg: ModelConfig, precision: str, n: int, b: int, detail: bool) -> None:
    m = fm.dims(cfg, n, b, fm.PRECISIONS[precision])
    train = fm.train_peak(cfg, n, b, precision)
    _peak(rec, PEAK_TRAIN, Method.CLOSED_FORM, train)
    _peak(rec, PEAK_PREFILL, Method.CLOSED_FORM, fm.prefill_peak(cfg, n, b, precision))
    alibi = fm.alibi_at_peak(cfg, n, b, precision)  # what of the peak is ALiBi's, at that same moment
    at = f"at the closed-form peak ({train.phase})"
    rec.add(ALIBI_BYTES_AT_PEAK, alibi, Method.CLOSED_FORM, note=at)
    rec.add(ALIBI_SHARE_OF_PEAK, alibi / train.total, Method.CLOSED_FORM, note=at)
    terms = {
        "alibi_mask": m.L * fm.alibi_mask(m),
        "alibi_build": fm.alibi_build(m) + fm.alibi_cached(m),
        "attention": m.L * fm.attention_saved(m),
        "feedforward": m.L * fm.feedforward_saved(m),
        "held_until_forward_returns": m.L * fm.forward_held(m),
        "logits": fm.logits(m),
    }
    for term, value in terms.items():  # which term dominates, and how each grows with n
        rec.add(ACTIVATION_TERM, value, Method.CLOSED_FORM, {"term": term})
    if not detail:
        return
    rec.add(PEAK_TRAIN_BF16_MIXED, fm.train_peak(cfg, n, b, "bf16_mixed").total, Method.CLOSED_FORM)
    rec.add(KV_CACHE_SIZE, fm.kv_cache(m, n), Method.CLOSED_FORM)
    rec.add(CACHE_OBJECT, fm.cache_object(m, n), Method.CLOSED_FORM)
    _peak(rec, PEAK_DECODE_CACHED, Method.CLOSED_FORM, fm.decode_cached_peak(cfg, n, b, precision))
    uncached = fm.prefill_peak(cfg, min(n + 1, cfg.max_seq_len), b, precision).total  # generate slides to max
    rec.add(PEAK_DECODE_UNCACHED, uncached, Method.CLOSED_FORM)


def _simulated(
    rec: Recorder, cfg: ModelConfig, precision: str, n: int, b: int, res: dict[str, Any], how: str = ""
) -> None:
    for step, closed in (("train", fm.train_peak), ("prefill", fm.prefill_peak)):
        if isinstance(res.get(step), str):  # the device cannot run the step: why, and the rest goes on
            rec.failed(PEAK[step], Method.SIMULATED, res[step], TOTAL, cause_of(res[step]))
        elif step in res:
            cf, sim = closed(cfg, n, b, precision), res[step]
            _peak(rec, PEAK[step], Method.SIMULATED, sim, how)
            _rel(rec, PEAK[step], "closed_form_vs_simulated", cf.total, sim.total, _gap(cf, sim, cfg))
            for (
                capacity,
                nbytes,
            ) in fm.DEVICE_MEMORY.items():  # the simulated peak against the nominal capacity
                rec.add(
                    FITS[step],
                    float(sim.total <= nbytes),
                    Method.SIMULATED,
                    {"capacity": capacity},
                    note=FITS_NOTE,
                )
    train = res.get("train")
    if isinstance(train, Tracked):
        _train_parts(rec, cfg, precision, n, b, train)
    if res.get("decode") is None:
        return
    for name, (fw, bw) in train.modules.items() if isinstance(train, Tracked) else ():
        rec.add(PEAK_TRAIN_MODULE, fw, Method.SIMULATED, {"pass": "forward", "module": name})
        rec.add(PEAK_TRAIN_MODULE, bw, Method.SIMULATED, {"pass": "backward", "module": name})
    m, pf = fm.dims(cfg, n, b, fm.PRECISIONS[precision]), res["prefill"]
    if isinstance(pf, str):  # no prefill to weigh, and so no cache and no decode step
        rec.failed(PEAK_DECODE_CACHED, Method.SIMULATED, pf, TOTAL, cause_of(pf))
        return
    cache = (
        (KV_CACHE_SIZE, EXTRA_KV, fm.kv_cache(m, n)),
        (CACHE_OBJECT, EXTRA_CACHE, fm.cache_object(m, n)),
    )
    for metric, key, cf_value in cache:
        rec.add(metric, pf.extra[key], Method.SIMULATED)
        _rel(
            rec,
            metric,
            "closed_form_vs_simulated",
            cf_value,
            pf.extra[key],
            "tensors x-transformers keeps" + _unmodelled(cfg),
        )
    dec = res["decode"]
    if isinstance(dec, Skip):  # no decode step at this length: not a failure
        rec.skipped(PEAK_DECODE_CACHED, Method.SIMULATED, dec, TOTAL)
    elif isinstance(dec, str):  # the library's decode raised: there is no decode step to measure
        rec.failed(PEAK_DECODE_CACHED, Method.SIMULATED, dec, TOTAL, cause_of(dec))
    else:
        _peak(rec, PEAK_DECODE_CACHED, Method.SIMULATED, dec)
    if n == cfg.max_seq_len:  # the slid window is the prompt itself
        rec.add(PEAK_DECODE_UNCACHED, pf.total, Method.SIMULATED)
    else:
        rec.skipped(PEAK_DECODE_UNCACHED, Method.SIMULATED, UNCACHED_SKIP)


WEIGHT_STATE = ("parameters", "gradients", "optimizer_state")


def _train_parts(rec: Recorder, cfg: ModelConfig, precision: str, n: int, b: int, sim: Tracked) -> None:
    """The simulated training peak in three parts that sum to it, from the tensors the tracker finds
    alive at that moment: the ALiBi tensors (bias, causal mask, masked (b, h, n, n) copies), the weight
    state (parameters, gradients, AdamW), and every other activation, temporary, input and buffer."""
    at = f"the tensors alive at the simulated peak ({PHASE.get(sim.phase, sim.phase)})"
    weights = sum(sim.categories.get(c, 0) for c in WEIGHT_STATE)
    parts = {"alibi_bias": sim.alibi, "weight_state": weights, "other": sim.total - weights - sim.alibi}
    for part, value in parts.items():
        rec.add(
            PEAK_TRAIN_PART, value, Method.SIMULATED, {"part": part}, note=at if part == "alibi_bias" else ""
        )
    if not cfg.layers.get("alibi_pos_bias"):
        return
    rec.add(ALIBI_BYTES_AT_PEAK, sim.alibi, Method.SIMULATED, note=at)
    rec.add(ALIBI_SHARE_OF_PEAK, sim.alibi / sim.total, Method.SIMULATED, note=at)
    cf = fm.alibi_at_peak(cfg, n, b, precision)
    if sim.alibi:
        _rel(
            rec,
            ALIBI_BYTES_AT_PEAK,
            "closed_form_vs_simulated",
            cf,
            sim.alibi,
            "the ALiBi tensors alive" + _unmodelled(cfg),
        )


def _training_state(rec: Recorder, cfg: ModelConfig) -> None:
    """Bytes of parameter state: fp32 AdamW against ZeRO's mixed precision (16 bytes/param each)."""
    m = fm.dims(cfg, 1, 1)
    for prec in ("fp32", "bf16_mixed"):
        for part in ("weights", "gradients", "optimizer_state"):
            value = getattr(fm, part)(m, fm.PRECISIONS[prec])
            rec.add(TRAINING_STATE, value, Method.CLOSED_FORM, {"precision": prec, "part": part})


def measure_memory(variant: Variant, study: Study, walks: WalkCache | None = None) -> list[Record]:
    cfg, dtype = variant.config, study.workloads.dtype
    precision = fm.DTYPE_PRECISION[dtype]
    jobs = {pair: ("train", "prefill", "decode") for pair in study.workloads.pairs()}
    b0 = min(study.workloads.batch_sizes)
    if study.is_base(variant):  # the design's model gets its whole memory-vs-length curve simulated
        for n in sweep_lengths(cfg):
            jobs.setdefault((n, b0), ("train",))
    sims, how = analytic_memory(cfg, dtype, jobs, walks)
    closed = Recorder(study.name, variant, "memory", dtype=dtype, device="none", scale=Scale.ANALYTIC)
    simulated = closed.at(device="cpu")  # the simulation dispatches CPU kernels on fake tensors
    for (n, b), steps in jobs.items():
        _closed_forms(closed.at(seq_len=n, batch=b), cfg, precision, n, b, detail="decode" in steps)
        _simulated(simulated.at(seq_len=n, batch=b), cfg, precision, n, b, sims[(n, b)], how[(n, b)])
    for n in sweep_lengths(cfg):  # memory vs sequence length: the closed form at every length
        sim = simulated.at(seq_len=n, batch=b0)
        if (n, b0) not in jobs:
            _closed_forms(closed.at(seq_len=n, batch=b0), cfg, precision, n, b0, detail=False)
            for metric in (PEAK_TRAIN, PEAK_PREFILL):
                sim.skipped(metric, Method.SIMULATED, SWEEP_SKIP, TOTAL)
        elif "prefill" not in jobs[(n, b0)]:
            sim.skipped(PEAK_PREFILL, Method.SIMULATED, SWEEP_SKIP, TOTAL)
    _training_state(closed, cfg)
    return closed.records
