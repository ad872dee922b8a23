"""The design section: what the built model is, per variant, read from the model."""

from __future__ import annotations

from ...catalog.declared.design import (
    ABS_POS_PARAMS,
    ALIBI_HEADS,
    CONTEXT_FORWARD,
    CONTEXT_LENGTH,
    FLAG_CHANGES_BUILD,
    KV_GROUP,
    KV_HEADS,
    POSITION_SOURCES,
    SHIFTED_CHANNELS,
    VOCAB_ROWS,
)
from ...kit.format import Quantity
from ...kit.sections import Section, Table, variant_order
from ...results.query import Results

# (metric, unit, header, the feature the column is about: shown only where some variant has it)
COLUMNS = (
    (VOCAB_ROWS, "tokens", "vocabulary rows (tokens)", ""),
    (CONTEXT_LENGTH, "tokens", "context (tokens)", ""),
    (CONTEXT_FORWARD, "pass", "forward at the context (1 = ran)", ""),
    (ABS_POS_PARAMS, "params", "absolute position table (params)", "use_abs_pos_emb"),
    (ALIBI_HEADS, "heads", "ALiBi heads", "alibi_pos_bias"),
    (KV_HEADS, "heads", "KV heads", ""),
    (SHIFTED_CHANNELS, "channels", "channels shifted from t - 1", "shift_tokens"),
)


def _note(results: Results, metric: str, vid: str) -> str:
    return next((v.note for v in results.values(metric, variant=vid)), "")


def design_section(results: Results, study) -> Section:
    shown = {
        "use_abs_pos_emb": bool(results.values(ABS_POS_PARAMS))
        and any(v.value for v in results.values(ABS_POS_PARAMS)),
        "alibi_pos_bias": study.sets("alibi_pos_bias"),
        "shift_tokens": study.sets("shift_tokens"),
    }
    columns = [c for c in COLUMNS if not c[3] or shown[c[3]]]  # a feature's column where some variant has it
    rows = [
        [
            vid,
            *(Quantity(results.number(m, variant=vid), unit) for m, unit, *_ in columns),
            _note(results, KV_GROUP, vid),
            _note(results, POSITION_SOURCES, vid),
        ]
        for vid in variant_order(study)
        if results.values(VOCAB_ROWS, variant=vid)
    ]
    flags = [
        [v.get("flag"), "yes" if v.value else "no", v.note]
        for v in results.values(FLAG_CHANGES_BUILD, variant=study.base_variant.variant_id)
    ]
    tables = []
    if rows:
        tables.append(
            Table(
                "The model as built",
                "Read from the built model (shapes and counts, exact); "
                "context forward: a no-allocation forward of max_seq_len tokens ran; attention and "
                "positions: named from the built modules (key projection width, position modules).",
                ["variant", *(c[2] for c in columns), "attention", "positions"],
                rows,
            )
        )
    if flags:
        tables.append(
            Table(
                "What each flag the study sets changes (base)",
                "The base built with and without the "
                "flag (at depth 1; the library's default without it): the first difference found.",
                ["flag", "changes the build", "first difference"],
                flags,
            )
        )
    missing = "" if tables else "not measured yet: add `design` to the study's measurements"
    intro = (
        "The values the design notes state, read from the model x-transformers builds rather than from the "
        "config."
        if study.names_notes
        else "What the design is, read from the model x-transformers builds rather than from the config."
    )
    return Section("design", "The model as built", intro, tables, missing=missing)
