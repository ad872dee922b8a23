"""orca-analysis: a transformer design, measured.

Pipeline, one sub-package per stage:
    study/         study spec (YAML -> validated dataclasses -> variants)
    build/         model build (x-transformers, DeepNorm realisation, fidelity entries, derived configs)
    formulas/      closed forms (registered, cited)
    instruments/   what measurements measure with (timing, memory tracker, FLOP counter, trainer, ...)
    measurements/  one package per measurement: run, declared metrics, report section, run settings
    runner.py, executors/  run a study: plan what the store lacks, run it, store each result
    results/       declared metrics, tidy records, the store, and the query over it
    claims/        the design notes' claims and the rules that give each a verdict
    report/        view model, findings, figures, formats, rendering

    from orca_analysis import load_results
    load_results("orca").frame()    # a study's results as a tidy DataFrame: units, labels, provenance
"""

__version__ = "0.1.0"


def load_results(study: str = "orca", reports: str = "reports", everything: bool = False):
    """A study's stored results (results/query.py's Results): `.values(metric, ...)`, `.frame()`."""
    from .results.query import load_results as load

    return load(study, reports, everything)
