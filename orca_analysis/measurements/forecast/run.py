"""The forecast of each attention call on each GPU of the device catalogue, in float32 and in bfloat16
(autocast over float32 weights): captured once per compute dtype from the no-allocation build, predicted per
device (instruments/attention_forecast.py, instruments/sdpa_rules.py). Predictions, stored as such."""

from __future__ import annotations

from ...devices import load_devices
from ...instruments.attention_forecast import attention_calls
from ...instruments.sdpa_rules import predict
from ...results import Record
from ...study.schema import Study, Variant
from ..recorder import Recorder

COMPUTE = (
    "float32",
    "bfloat16",
)  # the dtype policies a user trains in (bfloat16: autocast, fp32 master weights)


def measure_forecast(variant: Variant, study: Study) -> list[Record]:
    rec = Recorder(study.name, variant, "forecast", dtype=study.workloads.dtype)
    devices = load_devices()
    for n, b in study.workloads.pairs():
        at = rec.at(seq_len=n, batch=b)
        for compute in COMPUTE:
            calls, enabled = attention_calls(variant.config, n, b, compute, training=True)
            for gpu in devices.values():
                if not calls:
                    why = ("FlexAttention runs attention (alibi_in_kernel)" if variant.config.layers.get(
                        "alibi_in_kernel") else "attn_flash is off: attention runs in plain PyTorch")  # fmt: skip
                    at.add("sdpa_predicted_calls", 0.0, "predicted", {"gpu": gpu.id, "compute": compute,
                                                                       "backend": "none"}, note=why)  # fmt: skip
                    continue
                by_backend: dict[str, tuple[int, list[str]]] = {}
                for call, count in calls.items():
                    p = predict(call, gpu, enabled)
                    why = "; ".join(f"{k} refused: {r}" for k, r in p.refused.items()) or p.method
                    total, notes = by_backend.get(p.backend, (0, []))
                    by_backend[p.backend] = (total + count, [*notes, f"{count} x [{call.label}]: {why}"])
                for backend, (count, notes) in by_backend.items():
                    at.add("sdpa_predicted_calls", float(count), "predicted",
                           {"gpu": gpu.id, "compute": compute, "backend": backend}, note=" | ".join(notes))  # fmt: skip
    return rec.records
