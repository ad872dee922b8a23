"""The design section: what the built model is, per variant, read from the model."""

from __future__ import annotations

from ...kit.format import Quantity
from ...kit.sections import Section, Table, variant_order
from ...results.query import Results

# (metric, unit, header, the feature the column is about: shown only where some variant has it)
COLUMNS = (("vocab_rows", "tokens", "vocabulary rows (tokens)", ""), ("context_length", "tokens", "context (tokens)", ""),
           ("context_forward", "pass", "forward at the context (1 = ran)", ""),
           ("abs_pos_params", "params", "absolute position table (params)", "use_abs_pos_emb"),
           ("alibi_heads", "heads", "ALiBi heads", "alibi_pos_bias"), ("kv_heads", "heads", "KV heads", ""),
           ("shifted_channels", "channels", "channels shifted from t - 1", "shift_tokens"))  # fmt: skip


def _note(results: Results, metric: str, vid: str) -> str:
    return next((v.note for v in results.values(metric, variant=vid)), "")


def design_section(results: Results, study) -> Section:
    shown = {
        "use_abs_pos_emb": bool(results.values("abs_pos_params"))
        and any(v.value for v in results.values("abs_pos_params")),
        "alibi_pos_bias": study.sets("alibi_pos_bias"),
        "shift_tokens": study.sets("shift_tokens"),
    }
    columns = [c for c in COLUMNS if not c[3] or shown[c[3]]]  # a feature's column where some variant has it
    rows = [[vid, *(Quantity(results.number(m, variant=vid), unit) for m, unit, *_ in columns),
             _note(results, "kv_group", vid), _note(results, "position_sources", vid)]
            for vid in variant_order(study) if results.values("vocab_rows", variant=vid)]  # fmt: skip
    flags = [[v.get("flag"), "yes" if v.value else "no", v.note]
             for v in results.values("flag_changes_build", variant=study.base_variant.variant_id)]  # fmt: skip
    tables = []
    if rows:
        tables.append(Table("The model as built", "Read from the built model (shapes and counts, exact); "
                            "context forward: a no-allocation forward of max_seq_len tokens ran; attention and "
                            "positions: named from the built modules (key projection width, position modules).",
                            ["variant", *(c[2] for c in columns), "attention", "positions"], rows))  # fmt: skip
    if flags:
        tables.append(Table("What each flag the study sets changes (base)", "The base built with and without the "
                            "flag (at depth 1; the library's default without it): the first difference found.",
                            ["flag", "changes the build", "first difference"], flags))  # fmt: skip
    missing = "" if tables else "not measured yet: add `design` to the study's measurements"
    intro = ("The values the design notes state, read from the model x-transformers builds rather than from the "
             "config." if study.names_notes else "What the design is, read from the model x-transformers builds "
             "rather than from the config.")  # fmt: skip
    return Section("design", "The model as built", intro, tables, missing=missing)
