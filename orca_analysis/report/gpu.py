"""GPU coverage: per variant and GPU measurement (the registry's `gpu=True`), what the store holds
measured on a GPU. GPU results come from scripts/gpu_measure.sh, committed under data/gpu/ and
imported; on a CPU-only machine this table is how the report shows what is still missing."""

from __future__ import annotations

from ..catalog.vocabulary import Status
from ..kit.sections import Section, Table, variant_order
from ..measurements import in_order
from ..results.query import Results


def _cell(records: list) -> str:
    if not records:
        return "missing"
    ok = [r for r in records if r.status == Status.OK]
    if ok:
        return f"measured ({len(ok)} values)" + (
            f", {len(records) - len(ok)} not" if len(ok) < len(records) else ""
        )
    first = records[0].note[:60]
    return f"{'skipped' if all(r.status == Status.SKIPPED for r in records) else 'failed'}: {first}"


def gpu_section(results: Results, study) -> Section | None:
    names = [m.name for m in in_order() if m.schedule.gpu and m.name in study.measurements]
    if not names:
        return None
    gpu = [r for r in results.records() if r.device.startswith("cuda")]
    where = sorted(
        {row.unit.device_name for row in results.rows if row.record.device.startswith("cuda") and row.unit}
    )
    rows = [
        [vid, *[_cell([r for r in gpu if r.variant_id == vid and r.measurement == m]) for m in names]]
        for vid in variant_order(study)
    ]
    on = f" on {', '.join(where)}" if where else ""
    table = Table(
        "GPU results in the store",
        "Per variant and measurement: values measured on a GPU (scripts/gpu_measure.sh, committed under "
        f"data/gpu/ and imported){on}; 'missing' means no GPU result "
        "exists yet, 'skipped' that the GPU run's time budget or the device ruled it out.",
        ["variant", *names],
        rows,
    )
    return Section(
        "gpu",
        "GPU results",
        "What the store holds measured on a GPU, per measurement that wants one.",
        [table],
    )
