"""The package's layers (issue 27): each part imports only the parts of its layer or below, so no two parts
import each other, function-level imports included. The files that still import inside a function are
listed here, each with its reason; a new one fails, and so does a listed one that no longer does."""

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

FUNCTION_LEVEL = {  # file: why its own-package imports wait until a function runs
    "orca_analysis/__init__.py": "`import orca_analysis` stays light; load_results imports the query when called",
    "orca_analysis/cli.py": "each command imports its own stack when it runs (inspect starts without the report's)",
    "orca_analysis/executors/__init__.py": "an executor is imported when chosen (Ray is optional)",
    "orca_analysis/executors/budgeted.py": "the GPU run's worker imports the measurements it runs",
    "orca_analysis/instruments/device.py": "timing is imported by the GPU path only",
    "orca_analysis/report/__init__.py": "rendering (jinja2, matplotlib) is imported when a report is rendered",
    "orca_analysis/runner.py": "the recommendation is computed after the run, with the report's query",
    "orca_analysis/claims/schema.py": "the rules (results, numpy) load with a catalogue, not with the schema the "
    "study loader imports",
    "orca_analysis/results/__init__.py": "the store's submodules, on first use",
}


def test_every_import_goes_down_the_layers_and_no_parts_form_a_cycle():
    graph = edges(imports())
    parts = set(graph) | {b for bs in graph.values() for b in bs}
    assert parts <= set(LAYER), f"parts without a layer: {sorted(parts - set(LAYER))}"
    upward = {(a, b) for a, bs in graph.items() for b in bs if LAYER[b] > LAYER[a]}
    assert upward == set()
    assert cycles(graph) == []  # (implied by the layers; said plainly)


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


def test_a_measurement_registers_only_as_the_catalogue_declares_it(monkeypatch):
    """register() takes a measurement's name, version and metrics from its catalogue declaration."""
    import pytest

    from orca_analysis.catalog.metrics import Metric
    from orca_analysis.catalog.specs import Spec
    from orca_analysis.measurements import registry

    metrics = (Metric("extra_bytes", "bytes", "a test's metric", ("closed_form",)),)
    extra = registry.Measurement("extra", "a test's measurement", lambda v, s: [], metrics, version=2)
    with pytest.raises(ValueError, match="no spec in the catalogue: declare it in catalog/declared/extra.py"):
        registry.register(extra)
    monkeypatch.setitem(registry.SPECS, "extra", Spec("extra", version=1))
    monkeypatch.setitem(registry.BUILTIN, "extra", metrics)
    monkeypatch.setattr(registry, "MEASUREMENTS", dict(registry.MEASUREMENTS))
    with pytest.raises(ValueError, match="version and corpus use differ"):
        registry.register(extra)
    monkeypatch.setitem(registry.SPECS, "extra", Spec("extra", version=2))
    assert registry.register(extra) is extra and registry.MEASUREMENTS["extra"] is extra


def test_the_readmes_code_parses():
    """The README's examples of package files (adding a measurement) are Python that parses, and each relative
    import names a module that exists (or the example's own other file)."""
    import ast
    import re

    root = Path(__file__).parents[1]
    readme = (root / "README.md").read_text()
    files = re.findall(r"```python\n# (orca_analysis/\S+\.py)\n(.*?)```", readme, re.S)
    assert [f for f, _ in files] == ["orca_analysis/catalog/declared/weight_bytes.py",
                                     "orca_analysis/measurements/weight_bytes.py"]  # fmt: skip
    for name, code in files:
        for node in ast.walk(ast.parse(code)):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = (root / name).parents[node.level - 1] / (node.module or "").replace(".", "/")
                exists = base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()
                assert exists or str(base.relative_to(root)) + ".py" in dict(files), (name, node.module)
