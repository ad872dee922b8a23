"""Metrics several measurements record: the study's length a CPU-scaled measurement stands for."""

from __future__ import annotations

from ..metrics import Metric

SEQ_LEN_REQUESTED = Metric(
    "seq_len_requested",
    "tokens",
    "the study's sequence length a CPU measurement at a shorter length stands for",
    ("cpu_scaled",),
    labels=("cap",),
)
