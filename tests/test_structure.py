"""The package's layers (issue 27): each part imports only the parts below it. The upward imports and the
function-level imports that remain are listed here, each with its reason; a new one fails, and so does a
listed one that is gone (the list shrinks as they are removed)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from import_graph import cycles, edges, imports

from orca_analysis.catalog.version import VERSION

# Bottom first: a part may import the parts of its own layer's index or below.
LAYERS = (
    ("catalog", "errors"),
    ("study",),
    ("devices", "formulas"),
    ("build",),
    ("instruments",),
    ("results",),
    ("kit",),
    ("measurements",),
    ("claims",),
    ("remedies",),
    ("report",),
    ("executors",),
    ("runner", "inspect"),
    ("cli", "(package)", "__main__"),
)
LAYER = {p: i for i, parts in enumerate(LAYERS) for p in parts}

UPWARD = {  # (part, the part above it that it imports): why, until the catalogue takes it
    (
        "results",
        "measurements",
    ): "the metric registry fills itself from the measurements' declarations, and the "
    "importer keys a unit by its measurement's version",
    ("study", "claims"): "the study loader checks a study's own claims file",
    ("study", "remedies"): "the study loader checks a study's own remedy file",
    ("study", "measurements"): "the study loader checks the measurement names a study lists",
}
FUNCTION_LEVEL = {  # file: why its own-package imports wait until a function runs
    "orca_analysis/__init__.py": "`import orca_analysis` stays light; load_results imports the query when called",
    "orca_analysis/cli.py": "each command imports its own stack when it runs (inspect starts without the report's)",
    "orca_analysis/executors/__init__.py": "an executor is imported when chosen (Ray is optional)",
    "orca_analysis/executors/budgeted.py": "the GPU run's worker imports the measurements it runs",
    "orca_analysis/instruments/device.py": "timing is imported by the GPU path only",
    "orca_analysis/report/__init__.py": "rendering (jinja2, matplotlib) is imported when a report is rendered",
    "orca_analysis/runner.py": "the recommendation is computed after the run, with the report's query",
    "orca_analysis/claims/schema.py": "the metric registry (results) reaches the measurements: an upward cycle",
    "orca_analysis/remedies/schema.py": "the claims schema and the metric registry, as claims/schema.py",
    "orca_analysis/report/claims_view.py": "the metric registry, as claims/schema.py",
    "orca_analysis/results/__init__.py": "the store's submodules, on first use",
    "orca_analysis/results/metrics.py": "the UPWARD import of the measurements",
    "orca_analysis/results/importer.py": "the study, the corpus label and the UPWARD import of the measurements",
    "orca_analysis/study/load.py": "the UPWARD imports of claims, remedies and measurements",
}


def test_every_import_goes_down_the_layers_or_is_listed():
    graph = edges(imports())
    parts = set(graph) | {b for bs in graph.values() for b in bs}
    assert parts <= set(LAYER), f"parts without a layer: {sorted(parts - set(LAYER))}"
    upward = {(a, b) for a, bs in graph.items() for b in bs if LAYER[b] > LAYER[a]}
    assert upward == set(UPWARD), f"new: {sorted(upward - set(UPWARD))}; gone: {sorted(set(UPWARD) - upward)}"
    # without the listed upward imports the parts form no cycle
    down = {a: {b for b in bs if (a, b) not in UPWARD} for a, bs in graph.items()}
    assert cycles(down) == []


def test_function_level_imports_are_only_where_listed():
    found = {i.source for i in imports() if i.in_function}
    assert found == set(FUNCTION_LEVEL), f"new: {sorted(found - set(FUNCTION_LEVEL))}; gone: " \
        f"{sorted(set(FUNCTION_LEVEL) - found)}"  # fmt: skip


def test_the_graph_reader_sees_a_cycle_and_a_function_level_import(tmp_path):
    """A positive control: two parts that import each other, one inside a function."""
    pkg = tmp_path / "orca_analysis"
    (pkg / "a").mkdir(parents=True)
    (pkg / "b").mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a" / "__init__.py").write_text("from ..b import thing\n")
    (pkg / "b" / "__init__.py").write_text("def f():\n    from .. import a\n")
    import import_graph

    found = import_graph.imports(pkg)
    assert [(i.target, i.in_function) for i in found] == [
        ("orca_analysis.b", False),
        ("orca_analysis.a", True),
    ]
    assert cycles(edges(found)) == [["a", "b"]]


def test_the_version_is_pyprojects():
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert VERSION == pyproject["project"]["version"]
