"""Memory of a training step and of inference: closed form, simulated, measured.

closed_form: formulas/memory.py. simulated: the real steps run on the no-allocation build
(FakeTensorMode) under torch's MemTracker, which files every tensor as parameters, gradients,
activations, temporaries (backward), optimizer state, buffers or inputs, per module too.
measured: on CUDA, torch.cuda.max_memory_allocated/reserved around the same steps (reset between);
on CPU, the same tracker on real tensors at a small workload (cpu_workload: 64 tokens, batch 1, for
variants up to CPU_PARAMS parameters; the others are recorded as skipped, with why).
Steps: training = forward, cross-entropy, backward, AdamW (steady state: its state exists, grads set to
None after the step); prefill = no-grad forward with return_intermediates=True, as
AutoregressiveWrapper.generate calls it; decode = one token on that cache (cached decoding fails in
x-transformers 2.31 with ALiBi + rotary: an error record); generate(cache_kv=False) instead re-runs
the prompt, slid to max_seq_len (closed form; simulated where it equals the prefill).
Lengths: the study's, simulated in full; the sweep 512 .. max_seq_len in closed form (and simulated
for the base variant's training step), so the report can show how each term grows."""

from __future__ import annotations

from typing import Any

import torch

from ..formulas import memory as fm
from ..results import Record
from ..study.schema import ModelConfig, Study, Variant
from ._memtrack import Tracked, run_steps
from ._timing import measure_device
from .registry import register_measurement

CPU_BUDGET = 1 << 30  # bytes a real CPU run may take on a shared machine
CPU_PARAMS = 40_000_000  # above this the real AdamW step alone takes seconds on 2 cores
SWEEP_SKIP = "simulated at the study's sequence lengths (all lengths: base variant's training step) for time"
TOLERANCE = {
    "closed_form_vs_simulated": 0.15,
    "simulated_vs_measured": 0.05,
    "simulated_vs_measured_cuda": 0.10,
}


# --- records ---------------------------------------------------------------------------------

PHASE = {"forward_attention": "forward", "forward_loss": "forward", "forward_logits": "forward",
         "backward_start": "backward", "optimizer": "optimizer", "decode": "forward"}  # fmt: skip


def sweep_lengths(cfg: ModelConfig) -> list[int]:
    """512, 1024, ... up to max_seq_len (and max_seq_len itself)."""
    n, out = min(512, cfg.max_seq_len), []
    while n < cfg.max_seq_len:
        out, n = [*out, n], n * 2
    return [*out, cfg.max_seq_len]


def cpu_workload(cfg: ModelConfig, study: Study) -> tuple[int, int] | str:
    """Real CPU run: n = min(64, shortest study length), halved until the predicted peak fits CPU_BUDGET."""
    if (params := fm.dims(cfg, 1, 1).params) > CPU_PARAMS:
        return f"skipped on CPU: {params / 1e6:.0f}M parameters > {CPU_PARAMS / 1e6:.0f}M (AdamW time budget)"
    n = min(64, *study.workloads.seq_lens)
    while n >= 8 and fm.train_peak(cfg, n, 1, fm.DTYPE_PRECISION[study.workloads.dtype]).total > CPU_BUDGET:
        n //= 2
    return (n, 1) if n >= 8 else f"skipped on CPU: predicted peak above {CPU_BUDGET >> 20} MiB at 8 tokens"


def _gap(a: fm.Peak | Tracked, ref: fm.Peak | Tracked, cfg: ModelConfig | None = None) -> str:
    """Name what `a` misses against `ref`: the category with the largest gap, and both peak phases."""
    worst = max(set(a.categories) | set(ref.categories),
                key=lambda c: abs(a.categories.get(c, 0) - ref.categories.get(c, 0)))  # fmt: skip
    delta = (a.categories.get(worst, 0) - ref.categories.get(worst, 0)) / 2**20
    text = f"{delta:+.1f} MiB of '{worst}'; peak phase {PHASE.get(a.phase, a.phase)} vs {ref.phase}"
    return text + (_unmodelled(cfg) if cfg is not None else "")


def _unmodelled(cfg: ModelConfig) -> str:
    missing = fm.unmodelled(cfg)
    return f"; not modelled: {'; '.join(missing)}" if missing else ""


class _Records:
    def __init__(self, variant: Variant, study: Study) -> None:
        self.out: list[Record] = []
        self.common = dict(study=study.name, variant_id=variant.variant_id, measurement="memory",
                           swept=variant.swept, dtype=study.workloads.dtype)  # fmt: skip

    def add(self, metric: str, method: str, value: float | None, n: int | None = None, b: int | None = None,
            unit: str = "bytes", **kw: Any) -> None:  # fmt: skip
        kw.setdefault("device", "none" if method == "closed_form" else "cpu")
        self.out.append(Record(metric=metric, method=method, value=value, unit=unit, seq_len=n, batch=b,
                               **self.common, **kw))  # fmt: skip

    def peak(self, metric: str, method: str, p: fm.Peak | Tracked, n: int, b: int) -> None:
        """Total, by category, and the peak of each phase (forward / backward / optimizer)."""
        self.add(metric, method, p.total, n, b)
        for cat, value in p.categories.items():
            self.add(metric, method, value, n, b, category=cat)
        phases: dict[str, int] = {}
        for ph, value in p.phases.items():
            phases[PHASE.get(ph, ph)] = max(value, phases.get(PHASE.get(ph, ph), 0))
        for ph, value in phases.items():
            self.add(f"{metric}_phase", method, value, n, b, category=ph)

    def rel(self, metric: str, methods: str, a: float, ref: float, n: int, b: int, gap: str = "",
            **kw: Any) -> None:  # fmt: skip
        err, tol = (a - ref) / ref, TOLERANCE[methods]
        self.add(metric, f"rel_error_{methods}", err, n, b, unit="ratio", status="error" if abs(err) > tol else "ok",
                 error=f"{err:+.1%}, beyond {tol:.0%}: misses {gap}" if abs(err) > tol else "", **kw)  # fmt: skip


def _closed_forms(r: _Records, cfg: ModelConfig, precision: str, n: int, b: int, detail: bool) -> None:
    m = fm.dims(cfg, n, b, fm.PRECISIONS[precision])
    r.peak("peak_train", "closed_form", fm.train_peak(cfg, n, b, precision), n, b)
    r.peak("peak_prefill", "closed_form", fm.prefill_peak(cfg, n, b, precision), n, b)
    terms = {"alibi_mask": m.L * fm.alibi_mask(m), "alibi_build": fm.alibi_build(m) + fm.alibi_cached(m),
             "attention": m.L * fm.attention_saved(m), "feedforward": m.L * fm.feedforward_saved(m),
             "held_until_forward_returns": m.L * fm.forward_held(m), "logits": fm.logits(m)}  # fmt: skip
    for term, value in terms.items():  # which term dominates, and how each grows with n
        r.add("activation_term", "closed_form", value, n, b, category=term)
    if not detail:
        return
    r.add("peak_train_bf16_mixed", "closed_form", fm.train_peak(cfg, n, b, "bf16_mixed").total, n, b)
    r.add("kv_cache", "closed_form", fm.kv_cache(m, n), n, b)
    r.add("cache_object", "closed_form", fm.cache_object(m, n), n, b)
    r.peak("peak_decode_cached", "closed_form", fm.decode_cached_peak(cfg, n, b, precision), n, b)
    uncached = fm.prefill_peak(cfg, min(n + 1, cfg.max_seq_len), b, precision).total  # generate slides to max
    r.add("peak_decode_uncached", "closed_form", uncached, n, b)
    for dev, capacity in fm.DEVICE_MEMORY.items():  # from the prediction alone, nothing is tried
        for step, ok in fm.fits(cfg, n, b, capacity, precision).items():
            r.add(f"fits_{step}", "closed_form", float(ok), n, b, unit="bool", category=dev)


def _simulated(r: _Records, cfg: ModelConfig, precision: str, n: int, b: int, res: dict[str, Any]) -> None:
    for step, closed in (("train", fm.train_peak), ("prefill", fm.prefill_peak)):
        if step in res:
            cf, sim = closed(cfg, n, b, precision), res[step]
            r.peak(f"peak_{step}", "simulated", sim, n, b)
            r.rel(f"peak_{step}", "closed_form_vs_simulated", cf.total, sim.total, n, b, _gap(cf, sim, cfg))
    if res.get("decode") is None:
        return
    for name, (fw, bw) in res["train"].modules.items():
        r.add("peak_train_module", "simulated", fw, n, b, category=f"forward:{name}")
        r.add("peak_train_module", "simulated", bw, n, b, category=f"backward:{name}")
    m, pf = fm.dims(cfg, n, b, fm.PRECISIONS[precision]), res["prefill"]
    for metric, cf_value in (("kv_cache", fm.kv_cache(m, n)), ("cache_object", fm.cache_object(m, n))):
        r.add(metric, "simulated", pf.extra[metric], n, b)
        gap = "tensors x-transformers keeps" + _unmodelled(cfg)
        r.rel(metric, "closed_form_vs_simulated", cf_value, pf.extra[metric], n, b, gap)
    dec = res["decode"]
    if isinstance(dec, str):
        r.add("peak_decode_cached", "simulated", None, n, b, status="error", error=dec)
    else:
        r.peak("peak_decode_cached", "simulated", dec, n, b)
    if n == cfg.max_seq_len:  # the slid window is the prompt itself
        r.add("peak_decode_uncached", "simulated", pf.total, n, b)
    else:
        r.add("peak_decode_uncached", "simulated", None, n, b, status="skipped",
              error="a prefill of n+1 tokens, one token from peak_prefill: not simulated again (time)")  # fmt: skip


def _measured_cpu(r: _Records, cfg: ModelConfig, study: Study, sims: dict, wl: tuple[int, int] | str) -> None:
    if isinstance(wl, str):
        r.add("peak_train", "measured", None, status="skipped", error=wl)
        return
    (n, b), res = wl, run_steps(cfg, study.workloads.dtype, {wl: ("train", "prefill")}, device="cpu")[wl]
    for step in ("train", "prefill"):
        meas, sim = res[step], sims[wl][step]
        r.peak(f"peak_{step}", "measured", meas, n, b)
        r.rel(f"peak_{step}", "simulated_vs_measured", sim.total, meas.total, n, b, _gap(sim, meas))
        for ph in set(sim.phases) & set(meas.phases):  # each phase too, so small shapes still check
            r.rel(
                f"peak_{step}_phase",
                "simulated_vs_measured",
                sim.phases[ph],
                meas.phases[ph],
                n,
                b,
                category=ph,
            )


def _measured_cuda(r: _Records, cfg: ModelConfig, study: Study, sims: dict) -> None:
    capacity, runnable = torch.cuda.get_device_properties(0).total_memory, {}
    for n, b in study.workloads.pairs():
        predicted = fm.train_peak(cfg, n, b, fm.DTYPE_PRECISION[study.workloads.dtype]).total
        if predicted > 0.9 * capacity:  # marked from the prediction, never tried
            why = f"predicted {predicted / 1e9:.1f} GB > 90% of the device's {capacity / 1e9:.1f} GB"
            r.add("peak_train", "measured", None, n, b, device="cuda", status="skipped", error=why)
        else:
            runnable[(n, b)] = ("train", "prefill")
    for (n, b), res in run_steps(cfg, study.workloads.dtype, runnable, device="cuda").items():
        for step in ("train", "prefill"):
            alloc = res[step].extra["allocated"]
            r.add(f"peak_{step}", "measured", alloc, n, b, device="cuda")
            r.add(f"peak_{step}_reserved", "measured", res[step].extra["reserved"], n, b, device="cuda")
            r.rel(f"peak_{step}", "simulated_vs_measured_cuda", sims[(n, b)][step].total, alloc, n, b,
                  "kernel workspaces (the simulation dispatches CPU kernels)", device="cuda")  # fmt: skip


def memory_summary(cfg: ModelConfig, seq_len: int, batch: int) -> dict[str, Any]:
    """`inspect --json` key `memory` (float32): predicted and simulated peaks, KV cache, device fit."""
    res = run_steps(cfg, "float32", {(seq_len, batch): ("train", "prefill", "decode")})[(seq_len, batch)]
    m, dec = fm.dims(cfg, seq_len, batch), res["decode"]
    cf_t, cf_p = fm.train_peak(cfg, seq_len, batch), fm.prefill_peak(cfg, seq_len, batch)
    return {
        "seq_len": seq_len, "batch": batch, "dtype": "float32", "unit": "bytes",
        "train": {"closed_form": cf_t.total, "simulated": res["train"].total, "closed_form_phase": cf_t.phase,
                  "simulated_phase": res["train"].phase, "closed_form_categories": cf_t.categories,
                  "simulated_categories": res["train"].categories,
                  "bf16_mixed_closed_form": fm.train_peak(cfg, seq_len, batch, "bf16_mixed").total},
        "inference": {"closed_form": cf_p.total, "simulated": res["prefill"].total,
                      "kv_cache_closed_form": fm.kv_cache(m, seq_len),
                      "kv_cache_simulated": res["prefill"].extra["kv_cache"],
                      "cache_object_simulated": res["prefill"].extra["cache_object"],
                      "decode_cached_closed_form": fm.decode_cached_peak(cfg, seq_len, batch).total,
                      "decode_cached_simulated": None if isinstance(dec, str) else dec.total,
                      "decode_cached_error": dec if isinstance(dec, str) else ""},
        "fits": {dev: fm.fits(cfg, seq_len, batch, cap) for dev, cap in fm.DEVICE_MEMORY.items()},
    }  # fmt: skip


def memory_summary_text(s: dict[str, Any]) -> str:
    mib = lambda v: "n/a" if v is None else f"{v / 2**20:,.1f} MiB"  # noqa: E731
    t, i = s["train"], s["inference"]
    fits = "; ".join(f"{d}: train {'yes' if f['train'] else 'NO'}, inference {'yes' if f['inference'] else 'NO'}"
                     for d, f in s["fits"].items())  # fmt: skip
    return "\n".join([
        f"Memory at {s['seq_len']} tokens x batch {s['batch']} ({s['dtype']}): closed form / simulated",
        f"  training step peak: {mib(t['closed_form'])} / {mib(t['simulated'])} ({t['simulated_phase']})",
        f"  inference (prefill) peak: {mib(i['closed_form'])} / {mib(i['simulated'])}",
        f"  KV cache: {mib(i['kv_cache_closed_form'])} / {mib(i['kv_cache_simulated'])}; x-transformers keeps "
        f"{mib(i['cache_object_simulated'])} between decode steps (hidden states too)",
        f"  cached decode step: {mib(i['decode_cached_closed_form'])} / "
        f"{i['decode_cached_error'] or mib(i['decode_cached_simulated'])}",
        f"  fits (prediction): {fits}",
    ])  # fmt: skip


@register_measurement(
    "memory",
    "bytes of a training step and of inference: closed form, simulated (no allocation), measured",
    summary=memory_summary,
    summary_text=memory_summary_text,
    isolated=True,  # the real CPU/CUDA runs allocate: keep them away from other measurements
    per_workload=False,  # one call per variant: it sweeps memory versus sequence length itself
)
def measure_memory(variant: Variant, study: Study) -> list[Record]:
    cfg, precision = variant.config, fm.DTYPE_PRECISION[study.workloads.dtype]
    jobs = {pair: ("train", "prefill", "decode") for pair in study.workloads.pairs()}
    b0, wl = min(study.workloads.batch_sizes), cpu_workload(cfg, study)
    if not isinstance(wl, str):
        jobs.setdefault(wl, ("train", "prefill"))  # simulated beside the real CPU run
    if variant.variant_id == "base":  # the design's model gets its whole memory-vs-length curve simulated
        for n in sweep_lengths(cfg):
            jobs.setdefault((n, b0), ("train",))
    sims, r = run_steps(cfg, study.workloads.dtype, jobs), _Records(variant, study)
    for (n, b), steps in jobs.items():
        _closed_forms(r, cfg, precision, n, b, detail="decode" in steps)
        _simulated(r, cfg, precision, n, b, sims[(n, b)])
    for n in sweep_lengths(cfg):  # memory vs sequence length: the closed form at every length
        if (n, b0) not in jobs:
            _closed_forms(r, cfg, precision, n, b0, detail=False)
            for metric in ("peak_train", "peak_prefill"):
                r.add(metric, "simulated", None, n, b0, status="skipped", error=SWEEP_SKIP)
        elif "prefill" not in jobs[(n, b0)]:
            r.add("peak_prefill", "simulated", None, n, b0, status="skipped", error=SWEEP_SKIP)
    m = fm.dims(cfg, 1, 1)
    for prec in ("fp32", "bf16_mixed"):  # bytes per parameter: fp32 AdamW vs ZeRO's mixed precision
        for part in ("weights", "gradients", "optimizer_state"):
            r.add(
                "training_state",
                "closed_form",
                getattr(fm, part)(m, fm.PRECISIONS[prec]),
                category=f"{prec}:{part}",
            )
    # On a GPU machine only the GPU is measured: the CPU check of the simulator is the CPU machine's,
    # and its rows would carry the GPU's name in their provenance. Each is its own result.
    on_gpu = measure_device().startswith("cuda")
    try:
        if on_gpu:
            _measured_cuda(r, cfg, study, sims)
        else:
            _measured_cpu(r, cfg, study, sims, wl)
    except (RuntimeError, torch.OutOfMemoryError) as exc:  # a real run failing is a result
        r.add("peak_train", "measured", None, status="error", error=str(exc).strip().splitlines()[0][:200])
    return r.out
