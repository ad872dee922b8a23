"""`design`: what the built model is (vocabulary, context, ALiBi and KV heads, token shift, which flags
change the build), read from the model itself, so the notes' stated values are checked, not restated."""

from ...catalog.declared.design import METRICS, SPEC
from ..registry import Measurement, lazy_section, register
from .run import measure_design

register(
    Measurement(
        "design",
        "what the built model is: vocabulary, context, ALiBi and KV heads, token shift, which flags act",
        measure_design,
        METRICS,
        analytic=True,
        order=12,
        version=SPEC.version,
        section=lazy_section(f"{__name__}.section", "design_section"),
        per_workload=False,
    )
)
