"""The package's structure, counted (issue 27's before and after): import cycles between subpackages (module-
level and function-level imports alike), function-level imports of the package's own modules, metric names
written as string literals outside their declaration, `# fmt: skip` lines, functions returning
`dict[str, Any]`, and a record's note searched for its why. Writes benchmarks/results/structure.md.

    .venv/bin/python benchmarks/structure_bench.py [--before REV]
"""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "orca_analysis"
OUT = ROOT / "benchmarks" / "results" / "structure.md"
sys.path.insert(0, str(ROOT / "tests"))
from import_graph import cycles, edges, imports  # noqa: E402  (the tests' reader of the imports)


def _metric_names() -> set[str]:
    sys.path.insert(0, str(ROOT))
    from orca_analysis.measurements import MEASUREMENTS

    return {m.name for meas in MEASUREMENTS.values() for m in meas.metrics}


def _declared_at(tree: ast.AST) -> set[int]:
    """ids of the string constants that are a Metric(...) call's first argument (the declaration)."""
    return {
        id(n.args[0])
        for n in ast.walk(tree)
        if isinstance(n, ast.Call)
        and getattr(n.func, "id", "") == "Metric"
        and n.args
        and isinstance(n.args[0], ast.Constant)
    }


def _words() -> dict[str, list[str]]:
    """The method and verdict words, from the catalogue's vocabulary (handed to an older tree's count)."""
    if "--words" in sys.argv:
        return json.loads(sys.argv[sys.argv.index("--words") + 1])
    from orca_analysis.catalog.vocabulary import Method, Verdict

    return {"method": [m.value for m in Method], "verdict": [v.value for v in Verdict]}


LEGACY = Path("results") / "legacy.py"  # the one reader of records stored before their typed fields


def _is_note(n: ast.AST) -> bool:
    return (isinstance(n, ast.Attribute) and n.attr == "note") or (isinstance(n, ast.Name) and n.id == "note")


def _note_searched(n: ast.AST) -> bool:
    """`words in x.note` or `x.note.startswith(...)` (and endswith; a variable `note` too): a note's text
    searched for a why."""
    if isinstance(n, ast.Compare) and any(isinstance(op, (ast.In, ast.NotIn)) for op in n.ops):
        return any(_is_note(c) for c in n.comparators)
    return (
        isinstance(n, ast.Call)
        and isinstance(n.func, ast.Attribute)
        and n.func.attr in ("startswith", "endswith")
        and _is_note(n.func.value)
    )


def count() -> dict[str, object]:
    names, literals, skips, dict_any, notes = _metric_names(), 0, 0, 0, 0
    words = {kind: set(values) for kind, values in _words().items()}
    worded = dict.fromkeys(words, 0)
    found = imports(PACKAGE)
    for path in sorted(PACKAGE.rglob("*.py")):
        source = path.read_text()
        in_catalogue = path.relative_to(PACKAGE).parts[0] == "catalog"  # where metrics are declared
        skips += sum("# fmt: skip" in line for line in source.splitlines())
        tree = ast.parse(source)
        declared = _declared_at(tree)
        literals += sum(
            1
            for n in ast.walk(tree)
            if isinstance(n, ast.Constant)
            and isinstance(n.value, str)
            and n.value in names
            and id(n) not in declared
            and not in_catalogue
        )
        for kind, known in words.items():  # a method or verdict word outside the catalogue (headers included)
            worded[kind] += (
                0
                if in_catalogue
                else sum(
                    1
                    for n in ast.walk(tree)
                    if isinstance(n, ast.Constant) and isinstance(n.value, str) and n.value in known
                )
            )
        if path.relative_to(PACKAGE) != LEGACY:
            notes += sum(1 for n in ast.walk(tree) if _note_searched(n))
        dict_any += sum(
            1
            for n in ast.walk(tree)
            if isinstance(n, ast.FunctionDef)
            and n.returns is not None
            and "dict[str,Any]" in ast.unparse(n.returns).replace(" ", "")
        )
    graph = edges(found)
    return {
        "cycles": cycles(graph),
        "edges": graph,
        "function_level": [i for i in found if i.in_function],
        "literals": literals,
        "skips": skips,
        "dict_any": dict_any,
        "notes": notes,
        "metrics": len(names),
        "methods": worded["method"],
        "verdicts": worded["verdict"],
    }


def _row(c: dict) -> list[str]:
    cycle = max((len(x) for x in c["cycles"]), default=0)
    return [
        f"{cycle} ({'; '.join(', '.join(x) for x in c['cycles']) or 'none'})",
        str(len(c["function_level"])),
        str(c["literals"]),
        str(c["methods"]),
        str(c["verdicts"]),
        str(c["skips"]),
        str(c["dict_any"]),
        str(c["notes"]),
    ]


def _before(rev: str) -> list[str]:
    """The same counts at commit `rev`: its tree checked out beside this one, counted by this script."""
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(["git", "worktree", "add", "-q", "--detach", str(tree), rev], cwd=ROOT, check=True)
        try:
            shutil.copy(Path(__file__), tree / "benchmarks" / "structure_bench.py")
            shutil.copy(ROOT / "tests" / "import_graph.py", tree / "tests" / "import_graph.py")
            out = subprocess.run(
                [
                    sys.executable,
                    str(tree / "benchmarks" / "structure_bench.py"),
                    "--json",
                    "--words",
                    json.dumps(_words()),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            return json.loads(out.stdout.strip().splitlines()[-1])
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=True)


def main() -> None:
    c = count()
    if "--json" in sys.argv:
        print(json.dumps(_row(c)))
        return
    rev = sys.argv[sys.argv.index("--before") + 1] if "--before" in sys.argv else None
    before = _before(rev) if rev else None
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    names = [
        "parts in one import cycle",
        "function-level imports of the package's own modules",
        f"metric names written as string literals outside the catalogue ({c['metrics']} metrics)",
        "method words (catalog/vocabulary.py Method) written as string literals outside the catalogue, table "
        "headings and summary keys included",
        "verdict words written as string literals outside the catalogue",
        "`# fmt: skip` lines",
        "functions whose return type holds `dict[str, Any]` (alone, optional, in a list)",
        "a record's note searched for its why (`words in x.note`, `x.note.startswith(...)`), outside "
        "results/legacy.py (which reads records stored before their typed fields, once)",
    ]
    head = (
        "| count | before (" + rev + ") | after |\n|---|---|---|" if rev else "| count | value |\n|---|---|"
    )
    rows = [
        f"| {n} | {b} | {a} |" if rev else f"| {n} | {a} |"
        for n, a, b in zip(names, _row(c), before or [""] * len(names), strict=True)
    ]
    lines = [
        "# Package structure (issue 27)",
        "",
        f"Date {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; after = the working tree on commit {commit.stdout.strip()}. "
        "Produced by `benchmarks/structure_bench.py [--before REV]` from the source alone (ast, "
        "tests/import_graph.py): imports under `if TYPE_CHECKING:` are left out, function-level imports counted; "
        "a part is a subpackage or a top-level module.",
        "",
        head,
        *rows,
        "",
        "## Imports between parts (module- and function-level), after",
        "",
        *(f"- {a} -> {', '.join(sorted(bs))}" for a, bs in sorted(c["edges"].items())),
        "",
    ]
    OUT.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
