"""orca-analysis: a transformer design, measured.

Pipeline, one sub-package per stage, each importing only those below it:
    catalog/       data about the data: each measurement's spec and metrics, the catalogue files, the findings
    study/         study spec (YAML -> validated dataclasses -> variants), its remedy catalogue's schema
    build/         model build (x-transformers, DeepNorm realisation, fidelity entries, derived configs)
    formulas/      closed forms (registered, cited)
    instruments/   what measurements measure with (timing, memory tracker, FLOP counter, trainer, ...)
    kit/           a report section's parts: tables, figures, formats (what each measurement's section uses)
    measurements/  one package per measurement: run, declared metrics, report section, run settings
    runner.py, executors/  run a study: plan what the store lacks, run it, store each result
    results/       declared metrics, tidy records, the store, and the query over it
    claims/        the design notes' claims and the rules that give each a verdict
    remedies/      the remedy catalogue, each remedy's outcome, the recommended design
    report/        view model, findings, the sections assembled, rendering

    from orca_analysis import load_results
    load_results("orca").frame()    # a study's results as a tidy DataFrame: units, labels, provenance
"""

from .catalog.version import VERSION as __version__  # noqa: F401  (the package's version, as packages have it)


def load_results(study: str = "orca", reports: str = "reports", everything: bool = False):
    """A study's stored results (results/query.py's Results): `.values(metric, ...)`, `.frame()`."""
    from .results.query import load_results as load

    return load(study, reports, everything)
