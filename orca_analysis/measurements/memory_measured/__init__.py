"""`memory_measured`: the training step and prefill with real tensors, checking the simulation."""

from ...catalog.declared.memory_measured import METRICS, SPEC
from ..registry import Measurement, register
from .run import measure_memory_measured

register(
    Measurement(
        "memory_measured",
        "peak bytes of a training step and a prefill with real tensors (CPU: a small workload; CUDA: "
        "the study's lengths), beside the simulation of the same workload",
        measure_memory_measured,
        METRICS,
        order=35,  # its rows are read by the memory section
        isolated=True,  # real runs allocate: keep them away from other measurements
        shares_walks=True,
        parallel=True,  # untimed (the tracker counts tensors): it may run beside training, at the end
        gpu=True,
        gpu_group="memory",
        gpu_share=0.15,
        per_workload=False,  # one call per variant: CPU, one small workload; CUDA, each study length
        version=SPEC.version,
    )
)
