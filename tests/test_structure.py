"""The package's layers (issue 27): each part imports only the parts of its layer or below, so no two parts
import each other, function-level imports included. The files that still import inside a function are
listed here, each with its reason; a new one fails, and so does a listed one that no longer does."""

from __future__ import annotations

import re
import sys
import tomllib
import types
from pathlib import Path

import pytest
from import_graph import cycles, edges, imports

from orca_analysis.catalog.declared import unbound
from orca_analysis.catalog.declared.memory import MEMORY_REL_ERROR, PEAK_TRAIN
from orca_analysis.catalog.declared.probes import KERNEL_AGREEMENT, KV_CACHE, probe_key
from orca_analysis.catalog.version import VERSION
from orca_analysis.catalog.vocabulary import Cause, Method, Scale
from orca_analysis.measurements.recorder import Recorder
from orca_analysis.study import load_study

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
    assert found == set(FUNCTION_LEVEL), (
        f"new: {sorted(found - set(FUNCTION_LEVEL))}; gone: {sorted(set(FUNCTION_LEVEL) - found)}"
    )


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
    """register() takes a measurement under the spec its catalogue declaration holds, with its metrics."""
    import pytest

    from orca_analysis.catalog.metrics import Metric
    from orca_analysis.catalog.specs import Spec
    from orca_analysis.measurements import registry

    metrics = (Metric("extra_bytes", "bytes", "a test's metric", ("closed_form",)),)
    extra = registry.Measurement(Spec("extra", version=2), "a test's measurement", lambda v, s: [])
    with pytest.raises(ValueError, match="no spec in the catalogue: declare it in catalog/declared/extra.py"):
        registry.register(extra)
    monkeypatch.setitem(registry.SPECS, "extra", Spec("extra", version=1))
    monkeypatch.setitem(registry.BUILTIN, "extra", metrics)
    monkeypatch.setattr(registry, "MEASUREMENTS", dict(registry.MEASUREMENTS))
    with pytest.raises(ValueError, match="its spec .* is not the catalogue's"):
        registry.register(extra)
    monkeypatch.setitem(registry.SPECS, "extra", Spec("extra", version=2))
    assert registry.register(extra) is extra and registry.MEASUREMENTS["extra"] is extra
    assert extra.metrics == metrics  # from the catalogue


def test_the_readmes_code_parses():
    """The README's examples of package files (adding a measurement) are Python that parses, and each relative
    import names a module that exists (or the example's own other file)."""
    import ast
    import re

    root = Path(__file__).parents[1]
    readme = (root / "README.md").read_text()
    files = re.findall(r"```python\n# (orca_analysis/\S+\.py)\n(.*?)```", readme, re.S)
    assert [f for f, _ in files] == [
        "orca_analysis/catalog/declared/weight_bytes.py",
        "orca_analysis/measurements/weight_bytes.py",
    ]
    for name, code in files:
        for node in ast.walk(ast.parse(code)):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = (root / name).parents[node.level - 1] / (node.module or "").replace(".", "/")
                exists = base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()
                assert exists or str(base.relative_to(root)) + ".py" in dict(files), (name, node.module)


def _declaration(code: str, name: str = "weight_bytes") -> types.ModuleType:
    """A declaration module's code run as if it were catalog/declared/<name>.py (its relative imports resolve)."""
    module = types.ModuleType(f"orca_analysis.catalog.declared.{name}")
    module.__package__ = "orca_analysis.catalog.declared"
    exec(compile(code, f"catalog/declared/{name}.py", "exec"), module.__dict__)
    return module


def test_a_declaration_binds_each_metric_to_its_constant():
    """The README's declaration binds WEIGHT_BYTES; one whose constants are swapped, or missing, is refused."""
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    code = re.search(r"```python\n# orca_analysis/catalog/declared/weight_bytes.py\n(.*?)```", readme, re.S)[
        1
    ]
    module = _declaration(code)
    assert unbound(module) == [] and module.WEIGHT_BYTES == "weight_bytes"
    assert module.WEIGHT_BYTES.methods == (Method.CLOSED_FORM,) and module.WEIGHT_BYTES.unit == "bytes"
    swapped = code.replace(
        "METRICS = (WEIGHT_BYTES,)",
        "OTHER = Metric('other', 's', 'x', ('measured',))\n"
        "METRICS = (WEIGHT_BYTES, OTHER)\nWEIGHT_BYTES, OTHER = OTHER, WEIGHT_BYTES",
    )
    assert unbound(_declaration(swapped)) == ["weight_bytes", "other"]
    with pytest.raises(ValueError, match="unknown method 'guessed'"):
        _declaration(code.replace("(Method.CLOSED_FORM,)", "('guessed',)"))


def test_a_metric_is_its_name_and_stored_as_a_plain_string(tiny_study_path):
    """A metric compares, hashes and pickles as its name with its declaration; a record stores plain strings
    (a record's fields are what the store and its JSON labels hold)."""
    import pickle

    assert PEAK_TRAIN == "peak_train" and {"peak_train": 1}[PEAK_TRAIN] == 1
    again = pickle.loads(pickle.dumps(PEAK_TRAIN))
    assert again.declaration() == PEAK_TRAIN.declaration() and again.labels == ("category",)
    with pytest.raises(AttributeError, match="declared once"):
        PEAK_TRAIN.unit = "MiB"
    variant = load_study(tiny_study_path).base_variant
    rec = Recorder("tiny", variant, "memory").add(
        MEMORY_REL_ERROR,
        0.1,
        Method.DERIVED,
        {"quantity": PEAK_TRAIN, "pair": "a_vs_b", "phase": "all"},
        scale=Scale.ANALYTIC,
    )
    assert [type(x) for x in (rec.metric, rec.method, rec.scale, rec.status, rec.labels["quantity"])] == [
        str
    ] * 5
    # a cause is typed where the record is made, and only a record without a value has one
    rec = Recorder("tiny", variant, "memory")
    rec.failed(PEAK_TRAIN, Method.SIMULATED, "no CPU backward", {"category": "total"}, Cause.NEEDS_GPU)
    assert type(rec.records[0].cause) is str and rec.records[0].cause == "needs a GPU"
    with pytest.raises(ValueError, match="only an error or skipped record has one"):
        rec.add(PEAK_TRAIN, 1.0, Method.SIMULATED, {"category": "total"}, cause=Cause.NEEDS_GPU)
    with pytest.raises(ValueError, match="cause must be a Cause"):
        rec.skipped(PEAK_TRAIN, Method.SIMULATED, "why", {"category": "total"}, "needs a GPU")


def test_metric_names_are_written_as_literals_rarely():
    """Issue 27's target: metric names written as string literals outside the catalogue, 40 or fewer (the rest
    name the constant). Those left are words that are also a measurement, a unit, a label or a column name."""
    sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
    from structure_bench import count

    assert count()["literals"] <= 40


def test_a_probe_case_is_named_by_one_rule():
    """probe_key names a probe's case for the remedies' before/after (recommend.probes builds with it, their
    checks read with it): plain at its plain case, bracketed otherwise; kernel agreement's `default` is a
    kernel, so bracketed."""
    assert probe_key(KV_CACHE, "as_built") == "kv_cache" and probe_key(KV_CACHE, "default") == "kv_cache"
    assert probe_key(KV_CACHE, "no_shift") == "kv_cache[no_shift]"
    assert probe_key(KERNEL_AGREEMENT, "default") == "kernel_agreement[default]"
    assert type(probe_key(KV_CACHE, "as_built")) is str
