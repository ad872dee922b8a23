"""The model as built (measurement `design`) and the description claims it decides: the notes' stated
values are data, compared with the built model of whatever study runs."""

import dataclasses
import io
import json
from pathlib import Path

import pytest

from orca_analysis.build import fidelity_entries
from orca_analysis.claims import evaluate, load_catalogue
from orca_analysis.claims.evidence import Evidence
from orca_analysis.claims.rules import RULES
from orca_analysis.measurements.design.run import measure_design
from orca_analysis.report import render_report
from orca_analysis.results.query import Results
from orca_analysis.runner import run_sweep
from orca_analysis.study import load_study
from orca_analysis.study.load import StudyError

DESCRIPTION = [
    "flag-num_tokens",
    "flag-max_seq_len",
    "flag-use_abs_pos_emb",
    "flag-alibi_pos_bias",
    "flag-alibi_num_heads",
    "flag-rotary_xpos",
    "flag-deepnorm",
    "flag-shift_tokens",
    "flag-attn_one_kv_head",
]


@pytest.fixture(scope="module")
def tiny():
    study = load_study("tests/fixtures/tiny.yaml")  # V 256, context 128, d 64, 4 heads, ALiBi on 2, 1 KV head
    return study, Results.from_records(measure_design(study.variants()[0], study))


def test_the_built_tiny_model(tiny):
    _, results = tiny
    values = {
        m: results.number(m)
        for m in (
            "vocab_rows",
            "context_length",
            "context_forward",
            "abs_pos_params",
            "alibi_heads",
            "kv_heads",
            "shifted_channels",
            "shift_offset",
        )
    }
    # shift_tokens=1 splits d = 64 channels in 2 segments, shifts (0, 1): 32 channels at t come from t - 1
    assert values == {
        "vocab_rows": 256,
        "context_length": 128,
        "context_forward": 1.0,
        "abs_pos_params": 0,
        "alibi_heads": 2,
        "kv_heads": 1,
        "shifted_channels": 32,
        "shift_offset": 1,
    }
    acts = {v.get("flag"): (v.value, v.note) for v in results.values("flag_changes_build")}
    assert acts["attn_flash"] == (
        1.0,
        "setting attn_layers.layers.0.1.fn.attend.flash: True with the flag, False without",
    )
    assert (
        acts["deepnorm"][1] == "module attn_layers.final_norm: 'Identity' with the flag, 'LayerNorm' without"
    )
    # x-transformers drops absolute positions by itself when ALiBi or rotary is used: the flag does nothing
    assert acts["use_abs_pos_emb"] == (0.0, "building without the flag gives the same model")


def test_the_orca_notes_values_against_a_model_of_another_design(tiny):
    """The tiny study differs from the notes' Orca in vocabulary, context and ALiBi heads: contradicted."""
    study, results = tiny
    claims = {c.id: c for c in load_catalogue()}
    verdicts = {r.claim.id: r.verdict for r in evaluate([claims[i] for i in DESCRIPTION], results, study)}
    assert {k: v.verdict for k, v in verdicts.items()} == {
        "flag-num_tokens": "contradicted",  # the notes: 20,000; built: 256
        "flag-max_seq_len": "contradicted",  # 8,192 against 128
        "flag-use_abs_pos_emb": "supported",  # no learned position table
        "flag-alibi_pos_bias": "supported",  # the slopes buffer is built only with the flag
        "flag-alibi_num_heads": "contradicted",  # 4 against 2
        "flag-rotary_xpos": "qualified",  # xPos is rotary with a decay: the notes' plain reading differs
        "flag-deepnorm": "qualified",  # realised by orca-analysis, not by the library
        "flag-shift_tokens": "contradicted",  # it shifts channels, not targets
        "flag-attn_one_kv_head": "supported",  # key projection width = one head
    }
    assert "the notes state 20,000 tokens; the model as built has 256" in verdicts["flag-num_tokens"].reason
    assert (
        "32 of 64 channels at position t come from the token 1 back" in verdicts["flag-shift_tokens"].reason
    )


def test_the_orca_base_matches_its_notes():
    study = load_study("orca")
    results = Results.from_records(measure_design(study.variants()[0], study))
    claims = {c.id: c for c in load_catalogue()}
    picked = [claims[i] for i in ("flag-num_tokens", "flag-max_seq_len", "flag-alibi_num_heads")]
    assert {r.verdict.verdict for r in evaluate(picked, results, study)} == {"supported"}


def test_every_outcome_of_the_description_rules(tiny):
    """Each rule's outcomes: from the tiny model's records, edited by hand where an outcome needs it."""
    study, results = tiny
    fid = {e.flag: e.as_dict() for e in fidelity_entries(study.base)}

    def ev(**edits):  # metric -> the fields to change on its records
        rows = [dataclasses.replace(r.record, **edits.get(r.record.metric, {})) for r in results.rows]
        return Evidence(Results.from_records(rows), study, fid)

    full, empty = ev(), Evidence(Results(), study, fid)
    value, acts, shifts = RULES["asserted_value"], RULES["flag_acts"], RULES["shifts_targets"]
    assert value(full, metric="kv_heads", value=1).verdict == "supported"
    assert value(full, metric="kv_heads", value=8).verdict == "contradicted"
    assert value(empty, metric="kv_heads", value=1).verdict == "not tested yet"
    failed = ev(context_forward={"value": 0.0, "note": "RuntimeError: too long"})
    v = value(failed, metric="context_length", value=128, check="context_forward")
    assert v.verdict == "contradicted" and "too long" in v.reason
    assert acts(full, flag="alibi_pos_bias").verdict == "supported"
    assert acts(full, flag="deepnorm").verdict == "qualified"
    assert acts(ev(flag_changes_build={"value": 0.0}), flag="alibi_pos_bias").verdict == "contradicted"
    assert acts(empty, flag="deepnorm").verdict == "not tested yet"
    assert shifts(full).verdict == "contradicted"
    none = shifts(ev(shifted_channels={"value": 0.0}))
    assert none.verdict == "contradicted" and "shifts nothing" in none.reason
    assert shifts(empty).verdict == "not tested yet"


def test_a_study_names_its_catalogue(write_study, tiny_study_path):
    text = tiny_study_path.read_text()
    assert load_study(str(write_study(text + "claims: orca\n"))).claims == "orca"
    assert load_study(str(tiny_study_path)).claims is None  # names none
    with pytest.raises(StudyError, match=r"line \d+: claims catalogue 'nope.yaml' not found"):
        load_study(str(write_study(text + "claims: nope.yaml\n")))


def test_a_256_token_study_gets_none_of_the_orca_claims(write_study, tiny_study_path, tmp_path):
    """The tiny study (256 tokens) names no catalogue: findings only. Asked for the Orca notes' claims
    with --claims, their stated values are compared with its own built model: contradicted."""
    text = tiny_study_path.read_text().replace("measurements: [params]", "measurements: [params, design]")
    study = load_study(str(write_study(text)))
    run_sweep(study, tmp_path, log=io.StringIO())
    md = render_report(study, tmp_path)[1].read_text()
    assert (
        "names no claims catalogue" in md and "**supported**" not in md and "Claims of the design" not in md
    )
    md = render_report(study, tmp_path, Path("orca"))[1].read_text()
    row = next(line for line in md.splitlines() if "The vocabulary has 20,000 distinct tokens" in line)
    assert "**contradicted**" in row and "the model as built has 256" in row
    claims = {c["id"]: c for c in json.loads((tmp_path / "tiny" / "claims.json").read_text())}
    keys = {
        "id",
        "claim",
        "verdict",
        "reason",
        "scale",
        "metric",
        "unit",
        "estimate",
        "ci_low",
        "ci_high",
        "n",
        "delta",
        "evidence",
        "interval",
        "paired",
        "why_unpaired",
        "mde",
        "control",
    }
    assert all(set(c) == keys for c in claims.values()) and len(claims) == 30
    vocab = claims["flag-num_tokens"]
    assert (vocab["verdict"], vocab["scale"], vocab["metric"], vocab["ci_low"]) == (
        "contradicted",
        "analytic",
        "vocab_rows",
        None,
    )
    assert (
        "Proxy scale" not in md.split("## Summary")[1].split("###")[0]
    )  # nothing trained: no proxy verdicts
    render_report(study, tmp_path)  # names none again: no stale verdicts are left behind
    assert not (tmp_path / "tiny" / "claims.json").exists()
