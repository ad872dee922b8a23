"""`design`: what the built model is (vocabulary, context, ALiBi and KV heads, token shift, which flags
change the build), read from the model itself, so the notes' stated values are checked, not restated."""

from ...catalog.declared.design import SPEC
from ..registry import Measurement, Schedule, Shown, lazy_section, register
from .run import measure_design

register(
    Measurement(
        SPEC,
        "what the built model is: vocabulary, context, ALiBi and KV heads, token shift, which flags act",
        measure_design,
        schedule=Schedule(
            analytic=True,
            per_workload=False,
        ),
        shown=Shown(
            order=12,
            section=lazy_section(f"{__name__}.section", "design_section"),
        ),
    )
)
