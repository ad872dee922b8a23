"""GPU coverage: which variants and measurements have results measured on a GPU in the store.

GPU results come from scripts/gpu_measure.sh, committed under data/gpu/ and imported; on a CPU-only
machine this table is how the report shows what is still missing.
"""

from __future__ import annotations

import pandas as pd

from . import Table, pick, variant_order

# what scripts/gpu_measure.py runs on a GPU (its GROUPS)
GPU_MEASUREMENTS = ("speed", "kernels", "attention_speed", "memory", "probes", "training")


def _gpu_cell(rows: pd.DataFrame) -> str:
    if rows.empty:
        return "missing"
    ok = rows[rows["status"] == "ok"]
    if not ok.empty:
        return f"measured ({len(ok)} values)" + (
            f", {len(rows) - len(ok)} not" if len(ok) < len(rows) else ""
        )
    first = str(rows["error"].iloc[0])[:60]
    return f"{'skipped' if (rows['status'] == 'skipped').all() else 'failed'}: {first}"


def gpu_coverage_table(results: pd.DataFrame, study) -> Table:
    """Which variants and measurements have GPU results in the store (imported from data/gpu/)."""
    has = results.get("device", pd.Series(dtype=str)).astype(str).str.startswith("cuda")
    gpu = results[has] if len(results) else results
    names = [m for m in GPU_MEASUREMENTS if m in study.measurements]
    out = [
        [vid, *[_gpu_cell(pick(gpu, variant_id=vid, measurement=m)) for m in names]]
        for vid in variant_order(study)
    ]
    where = (
        ", ".join(sorted(set(gpu["device_name"].astype(str)))) if "device_name" in gpu and len(gpu) else ""
    )
    return Table(
        "GPU results in the store",
        "Per variant and measurement: values measured on a GPU (scripts/gpu_measure.sh, committed under "
        f"data/gpu/ and imported){f' on {where}' if where else ''}; 'missing' means no GPU result exists yet, "
        "'skipped' that the GPU run's time budget or the device ruled it out.",
        ["variant", *names],
        out,
    )
