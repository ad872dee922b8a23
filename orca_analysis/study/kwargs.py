"""The keyword space of the installed x-transformers, read from its own signatures.

A study may name any keyword argument that `TransformerWrapper` or `Decoder` accepts
(including the `attn_*` and `ff_*` prefixes that Decoder forwards to `Attention` and
`FeedForward`), plus the flags orca-analysis realises itself (see build/deepnorm.py).
Names are written plainly (`dim`) or dotted (`attn_layers.dim`); a plain name that both
homes accept must be dotted.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from functools import cache
from typing import Any

from x_transformers import x_transformers as xt

from ..catalog.names import did_you_mean

WRAPPER = "wrapper"
LAYERS = "attn_layers"

# Passed explicitly by AttentionLayers when it builds each block: a study cannot set them.
_ATTN_SET_BY_LAYERS = {
    "self",
    "dim",
    "heads",
    "causal",
    "qkv_receive_diff_residuals",
    "learned_value_residual_mix",
    "rotate_num_heads",
    "output_proj_depth",
    "inverted_attention",
}
_FF_SET_BY_LAYERS = {"self", "dim", "output_proj_depth"}
_LAYERS_SET_BY_DECODER = {"self", "causal", "kwargs"}
_WRAPPER_NOT_A_FLAG = {"self", "attn_layers"}

# Keys whose default is None but whose value, when set, must be a positive integer.
_OPTIONAL_POSITIVE_INTS = {
    "alibi_num_heads",
    "attn_kv_heads",
    "rotary_emb_dim",
    "attn_value_dim_head",
    "emb_dim",
    "logits_dim",
    "num_memory_tokens",
    "attn_dim_out",
    "ff_dim_out",
}

# Keys that must be positive integers whatever the signature's default says.
_POSITIVE_INTS = {"dim", "depth", "heads", "num_tokens", "max_seq_len", "attn_dim_head"}

# Integer defaults that also take fractions (x-transformers computes int(dim * mult)).
_NUMBERS = {"ff_mult"}

# Flags of the design that the installed library no longer has; orca-analysis realises them.
REALISED_FLAGS: dict[str, tuple[str, Any]] = {
    "deepnorm": (LAYERS, False),
    "alibi_in_kernel": (LAYERS, False),  # ALiBi in FlexAttention's score_mod (build/flex_alibi.py)
}


@dataclass(frozen=True)
class KwargSpec:
    """One keyword a study may set."""

    key: str  # as written in a study, e.g. "attn_one_kv_head"
    home: str  # WRAPPER or LAYERS: which constructor receives it
    default: Any
    source: str  # the class whose signature declares it, or "orca-analysis"
    annotation: Any = inspect.Parameter.empty

    @property
    def dotted(self) -> str:
        return self.key if self.home == WRAPPER else f"{LAYERS}.{self.key}"


def _params(cls: type) -> list[inspect.Parameter]:
    return list(inspect.signature(cls.__init__).parameters.values())


@cache
def keyword_space() -> dict[tuple[str, str], KwargSpec]:
    """All settable keywords, keyed by (home, key)."""
    space: dict[tuple[str, str], KwargSpec] = {}

    def add(key: str, home: str, p: inspect.Parameter | None, source: str, default: Any = None) -> None:
        if p is not None:
            default, annotation = p.default, p.annotation
        else:
            annotation = inspect.Parameter.empty
        space[(home, key)] = KwargSpec(key, home, default, source, annotation)

    for p in _params(xt.TransformerWrapper):
        if p.name not in _WRAPPER_NOT_A_FLAG:
            add(p.name, WRAPPER, p, "TransformerWrapper")
    for p in _params(xt.AttentionLayers):
        if p.name not in _LAYERS_SET_BY_DECODER:
            add(p.name, LAYERS, p, "Decoder")
    for p in _params(xt.Attention):
        if p.name not in _ATTN_SET_BY_LAYERS:
            add(f"attn_{p.name}", LAYERS, p, "Attention")
    for p in _params(xt.FeedForward):
        if p.name not in _FF_SET_BY_LAYERS:
            add(f"ff_{p.name}", LAYERS, p, "FeedForward")
    for key, (home, default) in REALISED_FLAGS.items():
        add(key, home, None, "orca-analysis", default)
    return space


def resolve(name: str) -> KwargSpec:
    """Resolve a plain or dotted name; raises KeyError with a one-line reason."""
    space = keyword_space()
    if name.startswith(f"{LAYERS}."):
        spec = space.get((LAYERS, name[len(LAYERS) + 1 :]))
        if spec:
            return spec
    elif name.startswith(f"{WRAPPER}."):
        spec = space.get((WRAPPER, name[len(WRAPPER) + 1 :]))
        if spec:
            return spec
    else:
        hits = [s for (home, key), s in space.items() if key == name]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise KeyError(
                f"'{name}' is accepted by both TransformerWrapper and Decoder: write "
                + " or ".join(f"'{h.dotted}'" for h in hits)
            )
    raise KeyError(
        f"unknown key '{name}'{did_you_mean(name.split('.')[-1], [k for _, k in space])}"
        f" (not a keyword of the installed x-transformers {xt_version()})"
    )


def xt_version() -> str:
    from importlib.metadata import version

    return version("x-transformers")


def check_value(spec: KwargSpec, value: Any) -> str | None:
    """Return a one-line problem if `value` has the wrong type for `spec`, else None."""
    default = spec.default
    if spec.annotation is not inspect.Parameter.empty and _takes_object(spec.annotation):
        return f"'{spec.key}' takes a Python object ({_ann(spec.annotation)}); a study file cannot set it"
    if spec.key == "shift_tokens":
        ok = _is_int(value) or (isinstance(value, list) and all(_is_int(v) for v in value))
        return None if ok else f"'shift_tokens' must be an integer or a list of integers, got {value!r}"
    if spec.key in _POSITIVE_INTS:
        return None if _is_int(value) else f"'{spec.key}' must be an integer, got {value!r}"
    if spec.key in _OPTIONAL_POSITIVE_INTS:
        if value is None or (_is_int(value) and value >= 1):
            return None
        return f"'{spec.key}' must be a positive integer, got {value!r}"
    if spec.key in _NUMBERS:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
        return None if ok else f"'{spec.key}' must be a positive number, got {value!r}"
    if isinstance(default, bool):
        return None if isinstance(value, bool) else f"'{spec.key}' must be true or false, got {value!r}"
    if isinstance(default, int):
        return None if _is_int(value) else f"'{spec.key}' must be an integer, got {value!r}"
    if isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return None if ok else f"'{spec.key}' must be a number, got {value!r}"
    if isinstance(default, str):
        return None if isinstance(value, str) else f"'{spec.key}' must be a string, got {value!r}"
    if isinstance(default, dict):
        return None if isinstance(value, dict) else f"'{spec.key}' must be a mapping, got {value!r}"
    if isinstance(value, dict) or not _yaml_scalar_or_list(value):
        return f"'{spec.key}' got an unsupported value {value!r}"
    return None


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _yaml_scalar_or_list(v: Any) -> bool:
    if isinstance(v, list):
        return all(_yaml_scalar_or_list(x) for x in v)
    return v is None or isinstance(v, (bool, int, float, str))


def _ann(a: Any) -> str:
    return getattr(a, "__name__", str(a))


def _takes_object(annotation: Any) -> bool:
    text = str(annotation)
    return any(word in text for word in ("Module", "Callable", "TokenEmbedding"))
