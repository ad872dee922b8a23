"""Study dataclasses: what a study file means once loaded and validated."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from .kwargs import LAYERS

SWEEP_MODES = ("grid", "one_at_a_time")
DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class ModelConfig:
    """x-transformers keyword arguments, as the design notes write them."""

    wrapper: dict[str, Any]  # TransformerWrapper kwargs (everything but attn_layers)
    layers: dict[str, Any]  # Decoder kwargs, including flags orca-analysis realises (deepnorm)

    def get(self, key: str, default: Any = None) -> Any:
        if key in self.layers:
            return self.layers[key]
        return self.wrapper.get(key, default)

    def with_values(self, values: dict[tuple[str, str], Any]) -> ModelConfig:
        wrapper, layers = dict(self.wrapper), dict(self.layers)
        for (home, key), value in values.items():
            (layers if home == LAYERS else wrapper)[key] = value
        return ModelConfig(wrapper, layers)

    # The few derived numbers every measurement needs; defaults mirror x-transformers.
    @property
    def dim(self) -> int:
        return self.layers["dim"]

    @property
    def depth(self) -> int:
        return self.layers["depth"]

    @property
    def heads(self) -> int:
        return self.layers.get("heads", 8)

    @property
    def dim_head(self) -> int:
        return self.layers.get("attn_dim_head", 64)

    @property
    def kv_heads(self) -> int:
        if self.layers.get("attn_one_kv_head"):
            return 1
        return self.layers.get("attn_kv_heads") or self.heads

    @property
    def num_tokens(self) -> int:
        return self.wrapper["num_tokens"]

    @property
    def max_seq_len(self) -> int:
        return self.wrapper["max_seq_len"]

    def as_nested(self) -> dict[str, Any]:
        """The config in study-file form: wrapper keys plus an `attn_layers` mapping."""
        return {**self.wrapper, "attn_layers": dict(self.layers)}


def physical_problems(cfg: ModelConfig) -> list[str]:
    """Shapes and combinations that cannot be built, one line each."""
    problems = []
    for key in ("dim", "depth", "heads", "num_tokens", "max_seq_len", "attn_dim_head"):
        value = cfg.get(key)
        if isinstance(value, int) and value < 1:
            problems.append(f"'{key}' must be at least 1, got {value}")
    for key in ("dim", "depth"):
        if key not in cfg.layers:
            problems.append(f"'{LAYERS}.{key}' is required")
    for key in ("num_tokens", "max_seq_len"):
        if key not in cfg.wrapper:
            problems.append(f"'{key}' is required")
    if problems:
        return problems
    heads = cfg.heads
    alibi = cfg.layers.get("alibi_num_heads")
    if alibi is not None and alibi > heads:
        problems.append(f"'alibi_num_heads' ({alibi}) cannot exceed 'heads' ({heads})")
    if cfg.layers.get("attn_one_kv_head") and cfg.layers.get("attn_kv_heads") is not None:
        problems.append("set 'attn_one_kv_head' or 'attn_kv_heads', not both")
    elif heads % cfg.kv_heads:
        problems.append(f"'heads' ({heads}) must be divisible by the number of kv heads ({cfg.kv_heads})")
    if cfg.layers.get("deepnorm"):
        if cfg.layers.get("pre_norm") is True:
            problems.append("'deepnorm' is post-norm by definition: remove 'pre_norm: true'")
        if cfg.layers.get("scale_residual_constant", 1.0) != 1.0:
            problems.append("'deepnorm' sets the residual scale itself: remove 'scale_residual_constant'")
    shift = cfg.layers.get("shift_tokens", 0)
    shifts = shift if isinstance(shift, list) else [shift]
    if any(s < 0 for s in shifts):
        problems.append(f"'shift_tokens' must be >= 0, got {shift}")
    return problems


@dataclass(frozen=True)
class Sweep:
    mode: str = "one_at_a_time"
    axes: dict[tuple[str, str], list[Any]] = field(default_factory=dict)  # (home, key) -> values


@dataclass(frozen=True)
class Workloads:
    seq_lens: list[int]
    batch_sizes: list[int]
    dtype: str = "float32"

    def pairs(self) -> list[tuple[int, int]]:
        return [(s, b) for s in self.seq_lens for b in self.batch_sizes]


ROLES = ("sweep", "remedy", "recommended")
NOTES_CATALOGUE = "orca"  # the built-in claims catalogue that restates the Orca design notes


BASE_ID = "base"  # the base variant's id: the design the study reviews


@dataclass(frozen=True)
class Variant:
    variant_id: str  # "base", or "dim=1024" / "dim=1024,depth=12"; "fix:<remedy>"; "recommended"
    config: ModelConfig
    swept: dict[str, Any]  # axis key -> this variant's value (all axes, base values included)
    role: str = "sweep"  # sweep | remedy (one remedy applied) | recommended (the passing remedies combined)
    only: tuple[str, ...] = ()  # the measurements it runs (within the study's); () = all of them


@dataclass(frozen=True)
class Study:
    name: str
    description: str
    base: ModelConfig
    sweep: Sweep
    workloads: Workloads
    measurements: list[str]
    source: str  # file path, or "builtin:<name>"
    sha256: str  # of the file's bytes
    claims: str | None = None  # the catalogue the study names: a built-in name or a path; None: none
    remedies: str | None = None  # the remedy catalogue it names (built-in name or path); None: none
    fixes: tuple[Any, ...] = ()  # the remedies loaded from it (study/remedies.py Remedy)

    @property
    def names_notes(self) -> bool:
        """It names the built-in catalogue that restates the Orca design notes: the notes' wording (where they
        differ from the code, what they assume) belongs in its report, and in no other."""
        return self.claims == NOTES_CATALOGUE

    def sets(self, key: str) -> bool:
        """Some variant of the sweep sets `key` to a true value (a feature the study has)."""
        return any(v.config.get(key) for v in self.variants())

    def remedy_variants(self) -> list[Variant]:
        """One variant per remedy: its target variant with the remedy's change."""
        targets = {v.variant_id: v for v in self.variants()}
        return [
            Variant(
                r.variant_id,
                targets[r.applies_to].config.with_values(r.values),
                targets[r.applies_to].swept,
                "remedy",
                r.measurements,
            )
            for r in self.fixes
        ]

    def recommended_variant(self, values: dict[tuple[str, str], Any]) -> Variant:
        """The base with the passing remedies' changes combined."""
        base = self.base_variant
        return Variant("recommended", base.config.with_values(values), base.swept, "recommended")

    @property
    def base_variant(self) -> Variant:
        """The design under review: the first variant, `BASE_ID`."""
        return self._variants[0]

    def is_base(self, variant: Variant) -> bool:
        """`variant` is the base (a remedy's variant of the same config is not)."""
        return variant.variant_id == self.base_variant.variant_id

    def variants(self) -> list[Variant]:
        """The base first, then the sweep, without duplicates (computed once per study)."""
        return list(self._variants)

    @cached_property
    def _variants(self) -> tuple[Variant, ...]:
        axes = self.sweep.axes
        keys = list(axes)
        base_values = {k: self.base.get(k[1]) for k in keys}
        combos: list[dict[tuple[str, str], Any]] = [{}]
        if self.sweep.mode == "grid":
            combos += [dict(zip(keys, vals, strict=True)) for vals in itertools.product(*axes.values())]
        else:
            combos += [{k: v} for k in keys for v in axes[k]]
        seen, out = set(), []
        for combo in combos:
            changed = {k: v for k, v in combo.items() if v != base_values[k]}
            vid = ",".join(f"{k[1]}={_fmt(v)}" for k, v in changed.items()) or BASE_ID
            if vid in seen:
                continue
            seen.add(vid)
            swept = {k[1]: combo.get(k, base_values[k]) for k in keys}
            out.append(Variant(vid, self.base.with_values(changed), swept))
        return tuple(out)


def _fmt(v: Any) -> str:
    return str(v).lower() if isinstance(v, bool) else str(v)
