"""`orca-analysis inspect`: one variant's fidelity and parameters, as JSON or a readable table."""

from __future__ import annotations

import textwrap
from collections import Counter
from typing import Any

from .build import fidelity_entries
from .build.describe import describe
from .catalog.declared.params import EMBEDDING_AND_LOGITS_SHARE
from .devices import Device
from .errors import OrcaError
from .instruments.attention_forecast import no_call_note
from .instruments.gpu_forecast import METHOD, TIME_METHOD, walk
from .instruments.gpu_memory import POLICIES
from .instruments.kept_walks import WalkCache
from .instruments.max_batch import max_batches
from .measurements import MEASUREMENTS
from .study.schema import ModelConfig, Study


def inspect_variant(
    study: Study,
    seq_len: int,
    batch: int,
    only: list[str] | None = None,
    device: Device | None = None,
    dtype: str = "bfloat16",
) -> dict[str, Any]:
    """`variant`, `built`, `fidelity`, then one key per measurement asked for (`only`, else the study's list)
    that has a summary; with a `device`, `forecast`: what that GPU would run (predicted)."""
    names = only if only is not None else study.measurements
    unknown = [n for n in names if n not in MEASUREMENTS]
    if unknown:
        raise OrcaError(
            f"--only: unknown measurement(s) {', '.join(unknown)} (available: {', '.join(MEASUREMENTS)})"
        )
    cfg = study.base
    built = describe(cfg)
    report: dict[str, Any] = {
        "variant": {
            "study": study.name,
            "source": study.source,
            "seq_len": seq_len,
            "batch": batch,
            "config": cfg.as_nested(),
        },
        "built": {"attention": built.attention_kind, "positions": built.positions},
        "fidelity": [e.as_dict() for e in fidelity_entries(cfg, notes=study.names_notes)],
    }
    summaries, walks = {}, WalkCache()  # one cache: memory's walk counts the FLOPs of its training step
    for name in sorted(
        names, key=lambda n: not MEASUREMENTS[n].schedule.walks_first
    ):  # shown in the asked order
        if MEASUREMENTS[name].shown.summary is not None:
            summaries[name] = MEASUREMENTS[name].summarise(cfg, seq_len, batch, walks)
    if device is not None:
        report["forecast"] = forecast(cfg, device, seq_len, batch, dtype)
    return report | {name: summaries[name] for name in names if name in summaries}


def forecast(cfg: ModelConfig, device: Device, seq_len: int, batch: int, dtype: str) -> dict[str, Any]:
    """`forecast` of `inspect --device`: the predicted SDPA backend of each attention call of a training step;
    each step's simulated GPU memory in the dtype policy, whether it fits, the headroom, and the largest batch
    that fits at this length (instruments/gpu_forecast.py). Bytes; predictions, each with its method."""
    w = walk(cfg, device, dtype, seq_len, batch)  # its training step's forward gives the attention calls
    found, note = w.attention("train"), no_call_note(cfg, w.calls.get("train", Counter()))
    memory, routed, times = w.memory, w.routed, w.times(device, dtype)
    largest = max_batches(cfg, device, dtype, seq_len, w if batch == 1 else None)
    return {
        "device": device.id,
        "device_name": device.name,
        "dtype": dtype,
        "policy": POLICIES[dtype],
        "seq_len": seq_len,
        "batch": batch,
        "memory_bytes": device.memory_bytes,
        "attention": [
            {
                "call": f.call.label,
                "count": f.count,
                "backend": f.prediction.backend,
                "refused": f.prediction.refused,
                "order": list(f.prediction.order),
                "method": f.prediction.method,
            }
            for f in found
        ],
        "note": note,
        "memory": {
            s: {"peak": m.peak, "phase": m.phase, "categories": m.categories}
            if m.peak is not None
            else {"peak": None, "why": m.why}
            for s, m in memory.items()
        },
        "memory_method": METHOD,
        "routed_calls": dict(routed),
        "fits": {s: m.fits(device) for s, m in memory.items()},
        "headroom": {s: m.headroom(device) for s, m in memory.items()},
        "time": {
            s: {"floor_s": t.floor_s, "predicted_s": t.predicted_s, "operators": t.operators}
            for s, t in times.items()
        },
        "time_method": TIME_METHOD,
        "mfu_ceiling": {s: {"palm": t.mfu_ceiling, "kernel": t.mfu_ceiling_kernel} for s, t in times.items()},
        "max_batch": {
            s: {
                str(seq_len): {
                    "batch": mb.batch,
                    "intercept": mb.intercept,
                    "slope": mb.slope,
                    "method": mb.method,
                }
            }
            for s, mb in largest.items()
        },
    }


def _forecast_text(f: dict[str, Any]) -> list[str]:
    out = [
        "",
        f"On {f['device_name']} ({f['dtype']}, training step, {f['seq_len']} tokens x batch {f['batch']}): "
        "the attention kernel, predicted",
    ]
    for a in f["attention"]:
        why = "; ".join(f"{b} refused: {r}" for b, r in a["refused"].items())
        out.append(f"  {a['count']} x [{a['call']}] -> {a['backend']}" + (f" ({why})" if why else ""))
    if f["attention"]:
        out.append(
            f"  method: {f['attention'][0]['method']}; tried in order: {', '.join(f['attention'][0]['order'])}"
        )
    if f["note"]:
        out.append(f"  {f['note']}")
    cap = f["memory_bytes"]
    out += ["", f"GPU memory, simulated ({f['policy']}), against {cap / 1e9:.1f} GB"]
    rows = []
    for step, m in f["memory"].items():
        if m["peak"] is None:
            rows.append([step, "-", "-", "-", m["why"]])
            continue
        fits = "yes" if f["fits"][step] else "NO"
        mb = f["max_batch"].get(step, {}).get(str(f["seq_len"]))
        rows.append(
            [
                step,
                f"{m['peak'] / 1e9:.2f} GB",
                fits,
                f"{f['headroom'][step] / 1e9:+.2f} GB",
                f"{mb['batch']} ({mb['method']})" if mb else "-",
            ]
        )
    out.append(
        _table(rows, ["step", "peak", "fits", "headroom", f"largest batch at {f['seq_len']} tokens"], 70)
    )
    out.append(f"  method: {f['memory_method']}")
    out += ["", f"Step time on {f['device_name']}, predicted ({f['dtype']})"]
    rows = [
        [
            s,
            f"{t['floor_s'] * 1e3:.3g} ms",
            f"{t['predicted_s'] * 1e3:.3g} ms",
            f"{f['mfu_ceiling'][s]['palm']:.0%} ({f['mfu_ceiling'][s]['kernel']:.0%})",
            t["operators"],
        ]
        for s, t in f["time"].items()
    ]
    out.append(_table(rows, ["step", "floor", "predicted", "MFU ceiling: PaLM (kernel)", "operators"]))
    out.append(f"  method: {f['time_method']}")
    return out


def _table(rows: list[list[str]], header: list[str], wrap: int = 0) -> str:
    if wrap:  # wrap the last column so wide explanations stay readable in a terminal
        rows = [
            [*r[:-1], line] if i == 0 else [""] * (len(r) - 1) + [line]
            for r in rows
            for i, line in enumerate(textwrap.wrap(str(r[-1]), wrap) or [""])
        ]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def _params_text(p: dict[str, Any]) -> list[str]:
    comps = ["embedding", "attention", "feedforward", "norm", "logits", "other", "total"]
    par = [[c, f"{p[c]:,}", f"{p['closed_form'].get(c, 0):,}", f"{p[c] / p['total']:.1%}"] for c in comps]
    out = [
        "",
        "Parameters (counter = the library's own count; closed form = formulas/params.py)",
        _table(par, ["component", "counter", "closed form", "share"]),
        f"closed form matches counter: {'yes' if p['closed_form_matches'] else 'NO'}; "
        f"embedding + logits share: {p[EMBEDDING_AND_LOGITS_SHARE]:.1%}",
        f"counted by: {p['counted']}",
    ]
    if "deepnorm" in p:
        out.append(
            f"DeepNorm realisation: adds {p['deepnorm']['params_added_by_realisation']} parameters; "
            + p["deepnorm"]["explained"]
        )
    return out


def render_text(report: dict[str, Any]) -> str:
    fid = [[e["flag"], repr(e["value"]), e["status"], e["how"]] for e in report["fidelity"]]
    out = [
        f"variant: {report['variant']['study']} base ({report['variant']['source']})",
        f"attention: {report['built']['attention']}",
        f"positions: {report['built']['positions']}",
        "",
        "Fidelity of each flag to the installed x-transformers",
        _table(fid, ["flag", "value", "status", "how"], wrap=80),
    ]
    if "forecast" in report:
        out += _forecast_text(report["forecast"])
    if "params" in report:
        out += _params_text(report["params"])
    for name, measurement in MEASUREMENTS.items():
        if name != "params" and name in report and measurement.shown.summary_text is not None:
            out += ["", measurement.shown.summary_text(report[name])]
    return "\n".join(out)
