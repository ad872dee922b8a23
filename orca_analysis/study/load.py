"""Strict loading of study files: parse YAML -> check every key and value -> Study.

Every problem is collected and reported as one line naming the file, the line and the fix;
nothing is silently ignored.
"""

from __future__ import annotations

import hashlib
import re
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ..catalog.declared import SPECS
from ..catalog.files import BUILTIN_CLAIMS, BUILTIN_REMEDIES
from ..errors import StudyError
from .kwargs import LAYERS, WRAPPER, check_value, did_you_mean, resolve
from .remedies import RemedyError, load_remedies, remedies_path
from .schema import DTYPES, SWEEP_MODES, ModelConfig, Study, Sweep, Workloads, physical_problems

BUILTIN_DIR = Path(str(resources.files(__package__) / "studies"))  # package data
TOP_KEYS = ("name", "description", "base", "sweep", "workloads", "measurements", "claims", "remedies")
SWEEP_KEYS = ("mode", "axes")
WORKLOAD_KEYS = ("seq_lens", "batch_sizes", "dtype")


def builtin_studies() -> list[str]:
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))


def find_study(ref: str) -> Path:
    """A path to a YAML file, or the name of a built-in study."""
    path = Path(ref)
    if path.suffix in (".yaml", ".yml") or "/" in ref:
        if not path.is_file():
            raise StudyError(f"study file not found: {ref}")
        return path
    builtin = BUILTIN_DIR / f"{ref}.yaml"
    if builtin.is_file():
        return builtin
    raise StudyError(
        f"no study named '{ref}': not a file, and the built-in studies are "
        f"{', '.join(builtin_studies())}{did_you_mean(ref, builtin_studies())}"
    )


def load_study(
    ref: str = "orca", overrides: list[str] | tuple[str, ...] = (), base_only: bool = False
) -> Study:
    """The study `ref` (a built-in name or a YAML path), with `--set` overrides on its base.
    `base_only`: the base variant alone (what `inspect` looks at): the sweep is dropped unchecked, so
    overrides that a sweep axis would make impossible (heads=4 with 8 KV heads) do not fail."""
    path = find_study(ref)
    raw = path.read_bytes()
    source = f"builtin:{path.stem}" if path.parent == BUILTIN_DIR else str(path)
    data, lines = _parse(raw.decode("utf-8", errors="replace"), source)
    return _StudyReader(source, lines).read(data, hashlib.sha256(raw).hexdigest(), overrides, base_only)


def _parse(text: str, source: str) -> tuple[Any, dict[tuple, int]]:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "unknown line"
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise StudyError(f"{source}: {where}: malformed YAML: {problem}") from None
    lines: dict[tuple, int] = {}
    _index_lines(node, (), lines)
    return data, lines


def _index_lines(node: yaml.Node | None, path: tuple, out: dict[tuple, int]) -> None:
    if node is None:
        return
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = (*path, key_node.value)
            _index_lines(value_node, key, out)
            out[key] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index_lines(item, (*path, i), out)


class _StudyReader:
    """Reads parsed YAML into a Study, collecting every problem before raising."""

    def __init__(self, source: str, lines: dict[tuple, int]):
        self.source, self.lines, self.problems = source, lines, []
        self.file_base: ModelConfig | None = None  # the base as the file has it, before --set
        self.overrides: list[str] = []

    def problem(self, path: tuple, text: str) -> None:
        line = self.lines.get(path) or self.lines.get(path[:-1]) or 1
        self.problems.append(f"{self.source}: line {line}: {text}")

    def read(
        self, data: Any, sha: str, overrides: list[str] | tuple[str, ...], base_only: bool = False
    ) -> Study:
        if not isinstance(data, dict):
            raise StudyError(
                f"{self.source}: line 1: a study must be a mapping with keys {', '.join(TOP_KEYS)}"
            )
        self.unknown_keys(data, TOP_KEYS, ())
        for key in ("base", "workloads"):
            if key not in data:
                self.problem((), f"missing required key '{key}'")
        base = self.read_base(data.get("base") or {})
        base = self.apply_overrides(base, overrides)
        sweep = self.read_sweep(data.get("sweep") or {})
        if base_only:
            sweep = Sweep(sweep.mode, {})
        workloads = self.read_workloads(data.get("workloads") or {})
        measurements = self.read_measurements(data.get("measurements", ["params"]))
        claims = self.read_claims(data.get("claims"))
        remedies = self.read_remedies(data.get("remedies"))
        name = data.get("name") or Path(self.source.removeprefix("builtin:")).stem
        if not isinstance(name, str):
            self.problem(("name",), f"'name' must be a string, got {name!r}")
        study = Study(
            str(name),
            str(data.get("description", "")),
            base,
            sweep,
            workloads,
            measurements,
            self.source,
            sha,
            claims,
            remedies,
        )
        if not self.problems and remedies and not base_only:
            study = self.load_fixes(study)
        if not self.problems:
            self.check_variants(study)
        if self.problems:
            raise StudyError(self.problems)
        return study

    def read_claims(self, value: Any) -> str | None:
        """The claims catalogue the study names: a built-in one ("orca", the design notes') or a YAML path,
        relative to the study file; None when it names none (the report then has no notes' claims)."""
        return self.read_catalogue("claims", value, list(BUILTIN_CLAIMS), "claims catalogue")

    def read_remedies(self, value: Any) -> str | None:
        """The remedy catalogue the study names: a built-in one ("orca") or a YAML path, relative to the
        study file; None when it names none (the report then recommends nothing)."""
        return self.read_catalogue("remedies", value, list(BUILTIN_REMEDIES), "remedy catalogue")

    def read_catalogue(self, key: str, value: Any, builtins: list[str], what: str) -> str | None:
        """A built-in catalogue's name, or a YAML path relative to the study file (None: none named)."""
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            self.problem((key,), f"'{key}' must be a catalogue name or a path, got {value!r}")
            return None
        if value in builtins:
            return value
        here = Path(".") if self.source.startswith("builtin:") else Path(self.source).parent
        path = Path(value) if Path(value).is_absolute() else here / value
        if not path.is_file():
            self.problem(
                (key,),
                f"{what} '{value}' not found (built-in: "
                f"{', '.join(builtins)}; or a YAML file, relative to the study)",
            )
            return None
        return str(path)

    def load_fixes(self, study: Study) -> Study:
        """The study with its remedies loaded, each checked against the variant it changes."""
        import dataclasses

        try:
            fixes = load_remedies(remedies_path(study.remedies))
        except RemedyError as exc:
            self.problems += exc.problems
            return study
        ids = {v.variant_id: v for v in study.variants()}
        made: dict[str, str] = {}  # one model, one variant: its results are stored once
        for r in fixes:
            if r.applies_to not in ids:
                self.problem(
                    ("remedies",),
                    f"remedy '{r.id}' applies to variant '{r.applies_to}', which the "
                    f"study does not have (variants: {', '.join(ids)})",
                )
                continue
            target = ids[r.applies_to].config
            changed = target.with_values(r.values)
            if changed == target:
                self.problem(("remedies",), f"remedy '{r.id}' leaves variant '{r.applies_to}' unchanged")
            twin = made.get(repr(changed.as_nested())) or next(
                (v.variant_id for v in study.variants() if v.config == changed), None
            )
            if twin and changed != target:
                self.problem(("remedies",), f"remedy '{r.id}' makes the same model as {twin}")
            made[repr(changed.as_nested())] = f"remedy '{r.id}'"
            for text in physical_problems(changed):
                self.problem(("remedies",), f"remedy '{r.id}' on '{r.applies_to}': {text}")
        return dataclasses.replace(study, fixes=tuple(fixes))

    def unknown_keys(self, mapping: dict, allowed: tuple[str, ...], path: tuple) -> None:
        for key in mapping:
            if key not in allowed:
                where = ".".join(map(str, path)) or "the top level"
                self.problem(
                    (*path, key),
                    f"unknown key '{key}' in {where}{did_you_mean(str(key), list(allowed))}"
                    f" (allowed: {', '.join(allowed)})",
                )

    def setting(self, name: str, value: Any, path: tuple) -> tuple[tuple[str, str], Any] | None:
        try:
            spec = resolve(str(name))
        except KeyError as exc:
            self.problem(path, exc.args[0])
            return None
        bad = check_value(spec, value)
        if bad:
            self.problem(path, bad)
            return None
        return (spec.home, spec.key), value

    def read_base(self, base: Any) -> ModelConfig:
        if not isinstance(base, dict):
            self.problem(("base",), "'base' must be a mapping of x-transformers keyword arguments")
            return ModelConfig({}, {})
        values: dict[tuple[str, str], Any] = {}
        for key, value in base.items():
            if key == LAYERS:
                if not isinstance(value, dict):
                    self.problem(("base", key), f"'{LAYERS}' must be a mapping of Decoder keyword arguments")
                    continue
                for k, v in value.items():
                    got = self.setting(f"{LAYERS}.{k}", v, ("base", key, k))
                    if got:
                        values[got[0]] = got[1]
                continue
            got = self.setting(key, value, ("base", key))
            if got:
                values[got[0]] = got[1]
        return ModelConfig({}, {}).with_values(values)

    def apply_overrides(self, base: ModelConfig, overrides: list[str] | tuple[str, ...]) -> ModelConfig:
        self.file_base, self.overrides, values = base, list(overrides), {}
        for item in overrides:
            key, sep, text = item.partition("=")
            if not sep or not key:
                self.problems.append(f"--set {item}: expected KEY=VALUE, e.g. --set depth=12")
                continue
            try:
                value = yaml.safe_load(text)
            except yaml.YAMLError:
                value = text
            before = len(self.problems)
            got = self.setting(key.strip(), value, ())
            if got:
                values[got[0]] = got[1]
            for i in range(before, len(self.problems)):  # name the flag, not a file line
                self.problems[i] = f"--set {item}: " + self.problems[i].split(": ", 2)[-1]
        return base.with_values(values)

    def read_sweep(self, sweep: Any) -> Sweep:
        if not isinstance(sweep, dict):
            self.problem(("sweep",), "'sweep' must be a mapping with 'mode' and 'axes'")
            return Sweep()
        self.unknown_keys(sweep, SWEEP_KEYS, ("sweep",))
        mode = sweep.get("mode", "one_at_a_time")
        if mode not in SWEEP_MODES:
            self.problem(
                ("sweep", "mode"), f"sweep mode must be one of {', '.join(SWEEP_MODES)}, got {mode!r}"
            )
        axes_in = sweep.get("axes") or {}
        if not isinstance(axes_in, dict):
            self.problem(("sweep", "axes"), "'sweep.axes' must map a key to a list of values")
            return Sweep(mode, {})
        axes: dict[tuple[str, str], list[Any]] = {}
        for name, values in axes_in.items():
            path = ("sweep", "axes", name)
            if not isinstance(values, list):
                self.problem(path, f"sweep axis '{name}' must be a list of values, got {values!r}")
                continue
            if not values:
                self.problem(path, f"sweep axis '{name}' is empty: give at least one value or remove it")
                continue
            keys = [self.setting(name, v, (*path, i)) for i, v in enumerate(values)]
            if all(keys):
                axes[keys[0][0]] = [v for _, v in keys]
        return Sweep(mode, axes)

    def read_workloads(self, wl: Any) -> Workloads:
        if not isinstance(wl, dict):
            self.problem(("workloads",), "'workloads' must be a mapping with seq_lens, batch_sizes, dtype")
            return Workloads([], [])
        self.unknown_keys(wl, WORKLOAD_KEYS, ("workloads",))
        lists = {}
        for key in ("seq_lens", "batch_sizes"):
            values = wl.get(key)
            path = ("workloads", key)
            if not isinstance(values, list) or not values:
                self.problem(path, f"'workloads.{key}' must be a non-empty list of positive integers")
                values = []
            elif not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values):
                self.problem(path, f"'workloads.{key}' must hold positive integers, got {values!r}")
                values = []
            lists[key] = values
        dtype = wl.get("dtype", "float32")
        if dtype not in DTYPES:
            self.problem(
                ("workloads", "dtype"),
                f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}"
                f"{did_you_mean(str(dtype), list(DTYPES))}",
            )
        return Workloads(lists["seq_lens"], lists["batch_sizes"], dtype)

    def read_measurements(self, names: Any) -> list[str]:
        known = list(SPECS)  # the measurements the catalogue declares
        if not isinstance(names, list) or not names:
            self.problem(("measurements",), "'measurements' must be a non-empty list, e.g. [params]")
            return []
        for i, name in enumerate(names):
            if name not in known:
                self.problem(
                    ("measurements", i),
                    f"unknown measurement '{name}'"
                    f"{did_you_mean(str(name), list(known))}"
                    f" (available: {', '.join(known)})",
                )
        return list(names)

    def check_variants(self, study: Study) -> None:
        """Impossible shapes, each reported once: at the base key, or at the sweep axis that causes it."""
        reported: set[str] = set()
        for variant in study.variants():
            is_base = variant.variant_id == "base"
            texts = self.base_problems(variant.config, study.workloads.seq_lens)
            for text in texts:
                if text in reported:
                    continue  # inherited from the base: already said once
                reported.add(text)
                if is_base and self.caused_by_overrides(
                    text, study.workloads.seq_lens
                ):  # the file's base is fine: name the flags
                    self.problems.append(f"--set {' --set '.join(self.overrides)}: {text}")
                elif is_base:
                    self.problem(self.key_path(text), f"base: {text}")
                else:
                    axis = next(k for k, v in variant.swept.items() if v != study.base.get(k))
                    self.problem(("sweep", "axes", axis), f"variant '{variant.variant_id}': {text}")

    def caused_by_overrides(self, text: str, seq_lens: list[int]) -> bool:
        """The problem is new with the overrides: the file's own base (and its lengths) does not have it."""
        if not self.overrides or self.file_base is None:
            return False
        try:
            return text not in self.base_problems(self.file_base, seq_lens)
        except Exception:  # noqa: BLE001  (a file base too broken to check: its own problems are reported)
            return False

    @staticmethod
    def base_problems(cfg: ModelConfig, seq_lens: list[int]) -> list[str]:
        texts = physical_problems(cfg)
        too_long = [s for s in seq_lens if s > cfg.max_seq_len]
        if too_long:
            texts.append(f"sequence length {too_long[0]} exceeds max_seq_len {cfg.max_seq_len}")
        return texts

    def key_path(self, text: str) -> tuple:
        """The YAML path of the first key a problem names, so its line can be shown."""
        match = re.search(r"'([a-z_.]+)'", text)
        key = match.group(1).split(".")[-1] if match else ""
        if "sequence length" in text:
            return ("workloads", "seq_lens")
        for path in (("base", LAYERS, key), ("base", key)):
            if path in self.lines:
                return path
        return ("base",)


__all__ = ["load_study", "find_study", "builtin_studies", "WRAPPER", "LAYERS"]
