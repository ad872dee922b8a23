"""`probes`: causality, KV-cache decoding against a full recompute, attention-kernel agreement.

A probe's outcome is a value (unit `pass`: 1.0 pass, 0.0 fail), never a status: a failing probe and a
crashing cached decode are findings. Its numbers are sibling metrics (`<probe>_max_diff`,
`<probe>_tolerance`), and the note says them, or the exception text.
"""

from ...catalog.declared.probes import SPEC
from ..registry import Measurement, Schedule, Shown, lazy_section, register
from .run import measure_probes, summary, summary_text

register(
    Measurement(
        SPEC,
        "behaviour probes: causality, KV-cache decoding vs full recompute, attention-kernel agreement",
        measure_probes,
        schedule=Schedule(
            per_workload=False,  # random (probe_batch, probe_seq) inputs: nothing depends on the workloads
            gpu=True,
            gpu_group="quality",
            gpu_share=0.05,
        ),
        shown=Shown(
            order=70,
            section=lazy_section(f"{__name__}.section", "probes_section"),
            summary=summary,
            summary_text=summary_text,
        ),
    )
)
