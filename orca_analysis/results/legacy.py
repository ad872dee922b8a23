"""How records stored before a field or a label existed said it: in their note's words. Read here alone, once
per record: as a store of that age is first opened (results/store.py), and as a results file without the column
is imported (results/importer.py). Every other reader acts on the typed field."""

from __future__ import annotations

from typing import Any

from ..catalog.declared.probes import PROBES
from ..catalog.vocabulary import NOT_TESTABLE_AT_THIS_SCALE, Cause, ProbeOutcome, Status
from ..instruments.device import NO_CPU_BACKWARD

_NO_VALUE = (Status.ERROR, Status.SKIPPED)
# The rules the remedies and the attention-speed section searched notes by, before `cause`: (cause, the
# statuses it applies to, the words, True: the note starts with them; False: holds them). The first that
# matches decides.
LEGACY_NOTES: tuple[tuple[Cause, tuple[str, ...], str, bool], ...] = (
    (Cause.NOT_TESTABLE, (Status.SKIPPED,), NOT_TESTABLE_AT_THIS_SCALE, True),
    *(
        (Cause.NEEDS_GPU, _NO_VALUE, words, False)
        for words in (NO_CPU_BACKWARD, "needs a GPU", "need a GPU run", "needs CUDA")
    ),
    (Cause.REFUSED, (Status.SKIPPED,), "not eligible", True),
    (Cause.NOT_APPLICABLE, (Status.SKIPPED,), "not applicable", True),
)


def cause_from_note(status: str, note: str) -> Cause:
    """The cause a record stored before `cause` was a field said in its note (Cause.NONE: none)."""
    for cause, statuses, words, at_start in LEGACY_NOTES:
        if status in statuses and (note.startswith(words) if at_start else words in note):
            return cause
    return Cause.NONE


def with_probe_outcome(
    metric: str, status: str, value: Any, note: str, labels: dict[str, Any]
) -> dict[str, Any] | None:
    """A probe record stored before its `outcome` label (probes v1): its labels with the outcome probes v2
    would have written (the exception's text names an Error: a crash); None when it needs none."""
    if metric not in PROBES or status != Status.OK or "outcome" in labels:
        return None
    crashed = "Error" in note
    outcome = ProbeOutcome.PASS if value == 1.0 else ProbeOutcome.CRASH if crashed else ProbeOutcome.FAIL
    return {**labels, "outcome": str(outcome)}
