"""`forecast`: what each GPU of the device catalogue would run for the variant's attention (the SDPA backend
of every attention call of a training step, predicted from torch's selection rules), and the GPU memory of
its steps, simulated as CUDA would run them, with the largest batch that fits (no GPU needed)."""

from ...catalog.declared.forecast import SPEC
from ..registry import Measurement, Schedule, Shown, lazy_section, register
from .run import measure_forecast

register(
    Measurement(
        SPEC,
        "the attention kernel each catalogue GPU would run (predicted from torch's SDPA selection rules), and "
        "the GPU memory of each step, simulated as CUDA would run it, with the largest batch that fits",
        measure_forecast,
        schedule=Schedule(
            analytic=True,
        ),
        shown=Shown(
            order=45,
            section=lazy_section(f"{__name__}.section", "forecast_section"),
        ),
    )
)
