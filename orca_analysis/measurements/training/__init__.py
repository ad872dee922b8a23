"""`training`: short seeded training runs of proxies, and the study-wide ablations around the base.

Losses are in nats per token of the scale's tokeniser (bytes at CPU scale). Wherever seeds repeat,
each seed is its own record (label `seed`): the query gives the mean, the spread and the samples.
"""

from ...catalog.declared.training import SPEC
from ..registry import Measurement, Schedule, Shown, lazy_section, register
from .run import measure_training
from .summary import summary, summary_text

register(
    Measurement(
        SPEC,
        "short seeded training runs of proxies: loss curves, overfitting, gradients, extrapolation, MQA",
        measure_training,
        schedule=Schedule(
            isolated=True,
            parallel=True,  # one torch thread per run and nothing timed: one worker per core, at the end
            per_workload=False,
            gpu=True,
            gpu_group="quality",
            gpu_share=0.25,
        ),
        shown=Shown(
            order=80,
            section=lazy_section(f"{__name__}.section", "training_section"),
            summary=summary,
            summary_text=summary_text,
        ),
    )
)
