"""The kernels section: per variant and length, the backend that ran and the ones that were eligible."""

from __future__ import annotations

from ...catalog.declared.kernels import ELIGIBLE_INFERENCE, RAN_INFERENCE, RAN_TRAIN, SDPA_ATTN_MASK_BYTES
from ...catalog.vocabulary import Status
from ...kit.format import si
from ...kit.sections import Section, Table, variant_order
from ...results.query import Results
from ..speed.timed import points, requested_text
from .run import CPU_SEQ_CAP

_POINTS = (RAN_TRAIN, RAN_INFERENCE, SDPA_ATTN_MASK_BYTES, ELIGIBLE_INFERENCE)


def _row(results: Results, vid: str, device: str, seq: int) -> list[str]:
    at = {"variant": vid, "device": device, "seq_len": seq}
    ran = ", ".join(f"{v.get('backend')} x{int(v.value)}" for v in results.values(RAN_TRAIN, **at))
    eligible = results.values(ELIGIBLE_INFERENCE, **at)
    na = results.values(ELIGIBLE_INFERENCE, status=Status.SKIPPED, **at)
    mask = results.values(SDPA_ATTN_MASK_BYTES, **at)
    return [
        vid,
        device,
        requested_text(results, vid, device, seq, CPU_SEQ_CAP),
        f"{int(seq)}",
        ran or "none seen",
        ", ".join(v.get("backend") for v in eligible if v.value > 0) or "none",
        ", ".join(v.get("backend") for v in eligible if v.value == 0) or "-",
        ", ".join(v.get("backend") for v in na) or "-",
        f"{mask[0].get('mask')}, {si(mask[0].value, 'B')}" if mask else "none",
    ]


def kernels_section(results: Results, study) -> Section:
    section = Section(
        "kernels",
        "Attention kernels",
        "Which scaled-dot-product-attention backend actually runs for each variant, and which backends "
        "could run its attention call.",
    )
    rows = [
        _row(results, vid, device, seq)
        for vid in variant_order(study)
        for device, seq in points(results, _POINTS, variant=vid)
    ]
    if not rows:
        section.missing = "no `kernels` results: add `kernels` to the study's measurements and run it"
        return section
    section.tables.append(
        Table(
            "Which attention kernel ran, and which were eligible",
            "From the profiler's operator names during a training step (ran: backend x calls), and by forcing "
            "each backend on the variant's own attention call with torch.nn.attention.sdpa_kernel (eligible / "
            "refused; refusals carry torch's reason in the results). 'Not applicable' backends do not exist on "
            "that device. attn_mask is what x-transformers passes to scaled_dot_product_attention.",
            [
                "variant",
                "device",
                "seq len requested",
                "seq len measured",
                "ran (training)",
                "eligible",
                "refused",
                "not applicable",
                "attn_mask",
            ],
            rows,
        )
    )
    return section
