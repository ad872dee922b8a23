"""The design section: what the built model is, per variant, read from the model."""

from __future__ import annotations

from ...report.format import Quantity
from ...report.sections import Section, Table, variant_order
from ...results.query import Results

COLUMNS = (("vocab_rows", "tokens", "vocabulary rows (tokens)"), ("context_length", "tokens", "context (tokens)"),
           ("context_forward", "pass", "forward at the context (1 = ran)"), ("alibi_heads", "heads", "ALiBi heads"),
           ("kv_heads", "heads", "KV heads"), ("shifted_channels", "channels", "channels shifted from t - 1"))  # fmt: skip


def design_section(results: Results, study) -> Section:
    rows = [[vid, *(Quantity(results.number(m, variant=vid), unit) for m, unit, _ in COLUMNS)]
            for vid in variant_order(study) if results.values("vocab_rows", variant=vid)]  # fmt: skip
    flags = [[v.get("flag"), "yes" if v.value else "no", v.note]
             for v in results.values("flag_changes_build", variant="base")]  # fmt: skip
    tables = []
    if rows:
        tables.append(Table("The model as built", "Read from the built model (shapes and counts, exact); "
                            "context forward: a no-allocation forward of max_seq_len tokens ran.",
                            ["variant", *(header for *_, header in COLUMNS)], rows))  # fmt: skip
    if flags:
        tables.append(Table("What each design flag changes (base)", "The base built with and without the flag "
                            "(at depth 1; the library's default without it): the first difference found.",
                            ["flag", "changes the build", "first difference"], flags))  # fmt: skip
    missing = "" if tables else "not measured yet: add `design` to the study's measurements"
    return Section("design", "The model as built", "The values the design notes state, read from the model "
                   "x-transformers builds rather than from the config.", tables, missing=missing)  # fmt: skip
