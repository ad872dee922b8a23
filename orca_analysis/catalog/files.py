"""The catalogue files a study names (its claims, its remedies): the built-in ones by name, and the reader of
a catalogue's one top-level list, with the line each item starts on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ..errors import OrcaError

_PACKAGE = Path(__file__).resolve().parents[1]  # package data, beside the modules that load it
BUILTIN_CLAIMS = {"orca": _PACKAGE / "claims" / "catalogue.yaml"}  # the Orca design notes' claims
BUILTIN_REMEDIES = {
    "orca": _PACKAGE / "remedies" / "catalogue.yaml"
}  # the fixes for the Orca design's findings


def catalogue_items(
    path: Path, key: str, error: type[OrcaError], name: str, article: str
) -> tuple[list[Any], list[int]]:
    """A catalogue file's list under its one top-level `key`, and the line (1-based) each item starts on;
    `error` (one line naming the file) for a missing file, malformed YAML or another shape."""
    if not path.is_file():
        raise error(f"{name} not found: {path}")
    try:
        text = path.read_text()
        data = yaml.safe_load(text)
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise error(f"{path}: line {mark.line + 1 if mark else '?'}: malformed YAML") from None
    if not isinstance(data, dict) or set(data) != {key} or not isinstance(data[key], list):
        raise error(f"{path}: {article} is a mapping with one key, '{key}', holding a list")
    lines: list[int] = []
    for k, value in node.value:
        if k.value == key and isinstance(value, yaml.SequenceNode):
            lines = [item.start_mark.line + 1 for item in value.value]
    return data[key], lines
