"""What a stored result is keyed by: the variant's full config, the workload, and the environment.

A result is reused only for the same variant config (not just the same id: a changed base makes
"base" a different variant), the same workload, and the same environment (device and library
versions; not the date or the git commit, which change without changing any number). A measurement
that trains on the corpus (`uses_corpus`) is keyed by the corpus too: a new corpus is measured anew.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

import torch

from ..catalog.specs import Spec
from .records import Provenance, current_provenance

ALL_WORKLOADS = "*"  # a unit whose records depend on no workload covers every workload


@dataclass(frozen=True)
class Environment:
    device_name: str
    torch: str
    x_transformers: str
    python: str
    orca_analysis: str

    @classmethod
    def of(cls, provenance: Provenance | dict[str, Any]) -> Environment:
        values = provenance if isinstance(provenance, dict) else provenance.as_dict()
        return cls(**{k: str(values.get(k, "unknown")) for k in cls.__dataclass_fields__})

    @property
    def env_id(self) -> str:
        return _digest(asdict(self))


def _digest(obj: Any) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def variant_key(config: Any, corpus: str | None = None, version: int = 1) -> str:
    """Stable hash of a variant's full config (a study.schema.ModelConfig), of the corpus label
    (measure._corpus.corpus_label) for a measurement whose results depend on the training corpus, and
    of the measurement's version once it is past 1."""
    if corpus is None and version == 1:
        return _digest(config.as_nested())  # unchanged, so stores written before these keys stay valid
    key: dict[str, Any] = {"config": config.as_nested()}
    key |= {"corpus": corpus} if corpus is not None else {}
    key |= {"version": version} if version != 1 else {}
    return _digest(key)


def results_key(config: Any, spec: Spec, corpus: str | None = None, role: str = "sweep") -> str:
    """The key the store holds a measurement's results of a config under, for `run` and `import` alike: the
    variant key with the measurement's version (past 1); for one that trains on the corpus (`uses_corpus`),
    with `corpus`, its label; for one that measures a remedy less fully (`by_role`), with the variant's role."""
    if not spec.uses_corpus:
        return variant_key(config, version=spec.version)
    if corpus is None:
        raise ValueError(
            f"measurement '{spec.name}' trains on the corpus: its results key needs the corpus label"
        )
    label = f"{corpus}|role={role}" if spec.by_role and role != "sweep" else corpus
    return variant_key(config, label, spec.version)


@dataclass(frozen=True)
class WorkloadKey:
    """A workload as the store keys a unit's results (seq_len x batch in a dtype): written and read here alone."""

    seq_len: int
    batch: int
    dtype: str

    def __str__(self) -> str:
        return f"seq_len={self.seq_len},batch={self.batch},dtype={self.dtype}"

    @classmethod
    def parse(cls, text: str) -> WorkloadKey:
        fields = dict(part.split("=", 1) for part in text.split(","))
        return cls(int(fields["seq_len"]), int(fields["batch"]), fields["dtype"])

    @property
    def pair(self) -> tuple[int, int]:
        """Without its dtype: a GPU run in bfloat16 still answers the study's seq_len x batch."""
        return self.seq_len, self.batch


def workload_key(seq_len: int, batch: int, dtype: str) -> str:
    return str(WorkloadKey(seq_len, batch, dtype))


def run_device() -> str:
    """The device this process measures on: the GPU when there is one."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def local_provenance() -> Provenance:
    return current_provenance(run_device())


def plain(value: Any) -> Any:
    """numpy scalars -> Python scalars, so sqlite3 and json take them."""
    return value.item() if hasattr(value, "item") and not isinstance(value, (str, bytes)) else value
