"""`forecast`: what each GPU of the device catalogue would run for the variant's attention: the SDPA backend
of every attention call of a training step, predicted from torch's selection rules (no GPU needed)."""

from ...results.metrics import Metric
from ..registry import Measurement, lazy_section, register
from .run import measure_forecast

METRICS = (
    Metric("sdpa_predicted_calls", "calls", "attention calls of one training-step forward that CUDA's SDPA would "
           "run on the backend (label backend: flash, efficient, cudnn, math, 'none' where no SDPA call happens, "
           "'unknown' where no rules exist for the installed torch), on the GPU (label gpu, a device catalogue "
           "id) in the compute dtype (label compute); the note names the call and each refused backend's reason",
           ("predicted",), ("gpu", "compute", "backend")),
)  # fmt: skip

register(
    Measurement(
        "forecast",
        "the attention kernel each catalogue GPU would run (predicted from torch's SDPA selection rules)",
        measure_forecast,
        METRICS,
        analytic=True,
        order=45,
        section=lazy_section(f"{__name__}.section", "forecast_section"),
    )
)
