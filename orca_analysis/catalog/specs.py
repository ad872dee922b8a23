"""What a measurement is, as the store keys its results (catalog/declared/<name>.py `SPEC`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Spec:
    name: str
    # Bumped when the records it writes change (new metrics, another method): stored results of an older
    # version are then measured anew, and the other measurements' results are kept.
    version: int = 1
    uses_corpus: bool = False  # its results depend on the training corpus: stored per corpus
    # it measures a remedy (or the recommended design) less fully than a sweep variant: stored per role too
    by_role: bool = False
    # a remedy's variant runs it unless its catalogue entry says otherwise (the timed end-to-end ones do not: a
    # remedy's speed is read at CPU lengths beside the sweep's, in a table of its own)
    on_remedies: bool = True
