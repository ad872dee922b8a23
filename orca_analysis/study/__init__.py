"""Study spec: YAML file -> validated Study -> variants."""

from .load import builtin_studies, find_study, load_study
from .schema import ModelConfig, Study, Sweep, Variant, Workloads

__all__ = [
    "ModelConfig",
    "Study",
    "Sweep",
    "Variant",
    "Workloads",
    "builtin_studies",
    "find_study",
    "load_study",
]
