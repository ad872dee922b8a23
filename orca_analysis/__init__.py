"""orca-analysis: a transformer design, measured.

Pipeline, one sub-package per stage:
    study/    study spec (YAML -> validated dataclasses -> variants)
    build/    model build (x-transformers, DeepNorm realisation, fidelity entries)
    formulas/ closed forms (registered, cited)
    measure/  measurements (one module per thing measured)
    results/  tidy records and their store
    report/   view model, figures, rendering
"""

__version__ = "0.1.0"
