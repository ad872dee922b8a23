"""The package's imports, read from its source (ast): which part imports which, at module level or inside a
function. Imports under `if TYPE_CHECKING:` never run and are left out. A part is a subpackage or a top-level
module (cli, runner, ...); the package's own __init__ is "(package)". Shared by tests/test_structure.py and
benchmarks/structure_bench.py."""

from __future__ import annotations

import ast
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "orca_analysis"


@dataclass(frozen=True)
class Import:
    source: str  # the importing file, relative to the package's parent
    module: str  # the importing module, dotted
    line: int
    target: str  # the imported module, dotted
    in_function: bool

    @property
    def parts(self) -> tuple[str, str]:
        return part(self.module), part(self.target)


def module_of(path: Path, package: Path = PACKAGE) -> tuple[str, str]:
    """(the module's dotted name, the package its relative imports start from)."""
    parts = path.relative_to(package.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), ".".join(parts[:-1])
    return ".".join(parts), ".".join(parts[:-1])


def part(module: str) -> str:
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 1 else "(package)"


def _targets(node: ast.ImportFrom | ast.Import, base: str) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if not node.level:
        return [node.module or ""]
    up = base.split(".")[: len(base.split(".")) - (node.level - 1)]
    if node.module:
        return [".".join([*up, node.module])]
    return [".".join([*up, a.name]) for a in node.names]  # `from .. import measurements`: the modules named


def imports(package: Path = PACKAGE) -> list[Import]:
    out = []
    for path in sorted(package.rglob("*.py")):
        module, base = module_of(path, package)
        tree = ast.parse(path.read_text())
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            in_function, typing_only, p = False, False, node
            while p in parents:
                p = parents[p]
                in_function |= isinstance(p, (ast.FunctionDef, ast.AsyncFunctionDef))
                typing_only |= isinstance(p, ast.If) and "TYPE_CHECKING" in ast.unparse(p.test)
            rel = str(path.relative_to(package.parent))
            out += [
                Import(rel, module, node.lineno, t, in_function)
                for t in _targets(node, base)
                if t.split(".")[0] == "orca_analysis" and not typing_only
            ]
    return out


def edges(found: list[Import]) -> dict[str, set[str]]:
    """part -> the other parts it imports."""
    out: dict[str, set[str]] = defaultdict(set)
    for i in found:
        a, b = i.parts
        if a != b:
            out[a].add(b)
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one part (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(set(graph) | {w for ws in graph.values() for w in ws}):
        if v not in index:
            visit(v)
    return out
