"""`memory_measured`: the training step and prefill with real tensors, checking the simulation."""

from ...catalog.declared.memory_measured import SPEC
from ..registry import Measurement, Schedule, Shown, register
from .run import measure_memory_measured

register(
    Measurement(
        SPEC,
        "peak bytes of a training step and a prefill with real tensors (CPU: a small workload; CUDA: "
        "the study's lengths), beside the simulation of the same workload",
        measure_memory_measured,
        schedule=Schedule(
            isolated=True,  # real runs allocate: keep them away from other measurements
            parallel=True,  # untimed (the tracker counts tensors): it may run beside training, at the end
            per_workload=False,  # one call per variant: CPU, one small workload; CUDA, each study length
            shares_walks=True,
            gpu=True,
            gpu_group="memory",
            gpu_share=0.15,
        ),
        shown=Shown(
            order=35,  # its rows are read by the memory section
        ),
    )
)
