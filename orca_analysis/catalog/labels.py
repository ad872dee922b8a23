"""The label values code writes (a record's labels, a query's filters), each declared once; the metrics declare
the label keys (catalog/metrics.py). StrEnums, as catalog/vocabulary.py's: a member is its word, so records,
the store and the YAML files keep the plain string."""

from __future__ import annotations

from enum import StrEnum


class Breakdown(StrEnum):
    """The value of a breakdown label (a parameter or FLOP `component`, a memory `category`) that holds the sum."""

    TOTAL = "total"


class Attn(StrEnum):
    """The `attn` label: one KV head shared by the query heads, or one per query head."""

    MQA = "mqa"
    MHA = "mha"


class Case(StrEnum):
    """The `case` label's plain value: the variant as built (the attribution cases and forced kernels are named
    by the flag or the backend)."""

    AS_BUILT = "as_built"


class Phase(StrEnum):
    """The `phase` label of the memory metrics: a step's phase, or the whole step."""

    ALL = "all"
    FORWARD = "forward"
    BACKWARD = "backward"
    OPTIMIZER = "optimizer"


class Search(StrEnum):
    """The `search` label of the largest batch that fits a GPU: replayed from two walks' allocation timelines and
    checked by a walk, or found by walks alone (where no replay could be made)."""

    REPLAYED = "replayed"
    WALKED = "walked"


TOTAL_CATEGORY = {"category": Breakdown.TOTAL}  # the labels of a memory peak's total
TOTAL_COMPONENT = {"component": Breakdown.TOTAL}  # the labels of a parameter or FLOP count's total
