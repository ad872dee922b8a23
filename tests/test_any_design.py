"""Designs other than Orca: golden numbers of a GPT-2-small-like and a Llama-like study, descriptions
worded from the built model, and reports free of Orca's prose."""

import io
import re
from pathlib import Path

import pytest

from orca_analysis.build import fidelity_entries
from orca_analysis.build.describe import describe
from orca_analysis.measurements import MEASUREMENTS
from orca_analysis.report import render_report
from orca_analysis.results.query import load_results
from orca_analysis.runner import run_sweep
from orca_analysis.study import load_study

# Words that belong to Orca's features or its design notes (orca-analysis, the tool's name, aside).
ORCA_ONLY = re.compile(
    r"alibi|xpos|deepnorm|token shift|design notes|the notes|\borca\b(?![-_]analysis)", re.I
)


def _params(cfg) -> dict:
    return MEASUREMENTS["params"].shown.summary(cfg, 1, 1)


def test_gpt2_small_golden_parameters():
    """V = 50257, n_ctx = 1024, d = 768, L = 12, 4d feed-forward; x-transformers: no attention biases, LayerNorm
    with a gain and no bias, feed-forward biases on.
      token embedding  V d               = 38,597,376
      positions        n_ctx d           =    786,432
      per block: attention 4 d^2         =  2,359,296
                 feed-forward 8 d^2 + 4d + d = 4,722,432
                 two norms 2 d           =      1,536   -> 7,083,264 x 12 = 84,999,168
      final norm       d                 =        768
      tied: 38,597,376 + 786,432 + 84,999,168 + 768 = 124,383,744; untied adds the logits V d: 162,981,120."""
    study = load_study("examples/gpt2-small.yaml")
    assert _params(study.base)["total"] == 162_981_120
    assert _params(study.base.with_values({("wrapper", "tie_embedding"): True}))["total"] == 124_383_744


def test_llama_like_parameters_and_forward_flops_from_a_closed_form():
    study = load_study("tests/fixtures/llama-tiny.yaml")
    v, d, depth, h, kv, dh, n = 256, 64, 2, 4, 2, 16, 64
    inner = 4 * d  # ff_mult 4; the GLU's input projection is 2 x inner wide and keeps its bias
    attn = d * h * dh + 2 * d * kv * dh + h * dh * d  # q, k, v, out: no biases
    ff = d * 2 * inner + 2 * inner + inner * d  # GLU in (with bias), out (ff_no_bias)
    params = (
        v * d + depth * (attn + ff + 2 * d) + d + v * d
    )  # embedding, blocks (two RMSNorms), final norm, logits
    assert _params(study.base)["total"] == params == 156_992
    per_block = (
        2 * n * attn + 2 * (2 * n * n * h * dh) + 2 * n * (d * 2 * inner + inner * d)
    )  # QK^T and AV dense
    forward = depth * per_block + 2 * n * d * v
    summary = MEASUREMENTS["flops"].shown.summary(study.base, n, 1)
    assert summary["totals"]["forward_dense"]["counter"] == forward == 19_922_944


def test_descriptions_come_from_the_built_model():
    gpt2 = {e.flag: e.how for e in fidelity_entries(load_study("examples/gpt2-small.yaml").base)}
    assert "1024 x 768 = 786,432 parameters" in gpt2["use_abs_pos_emb"]  # the table is built
    assert gpt2["max_seq_len"].startswith("sizes the learned absolute position table")
    llama_study = load_study("examples/llama-like.yaml")
    llama = {e.flag: e for e in fidelity_entries(llama_study.base)}
    assert llama["attn_kv_heads"].how.startswith(
        "grouped-query attention (GQA): 2 key/value heads, each shared by a group of 4 query heads"
    )
    assert "rotary on 32 of 64 channels per head" in llama["rotary_pos_emb"].how  # the library's default half
    assert "leaves the GLU's input bias on" in llama["ff_no_bias"].how
    assert not any(e.notes_differ for e in llama.values())  # no notes named: nothing to differ from
    built = describe(llama_study.base)
    assert (built.heads, built.kv_heads, built.norm, built.ff_act, built.abs_pos) == (
        8,
        2,
        "RMSNorm",
        "SiLU",
        "",
    )
    assert describe(load_study("orca").base).positions == (
        "xPos rotary (rotary with a decay) on 32 of 64 channels per head + ALiBi on 4 of 8 heads + token shift "
        "(channels from up to 1 position back)"
    )


@pytest.mark.parametrize("name", ["gpt2-tiny", "llama-tiny"])
def test_reports_of_other_designs_speak_in_their_own_terms(name, tmp_path):
    """End to end at seq_len == max_seq_len: nothing fails, and no Orca-only word is in either report."""
    study = load_study(f"tests/fixtures/{name}.yaml")
    summary = run_sweep(study, tmp_path, log=io.StringIO())
    assert summary.failed == 0
    html, md = (p.read_text() for p in render_report(study, tmp_path)[:2])
    for text in (md, html):
        assert not ORCA_ONLY.findall(text), sorted({m.lower() for m in ORCA_ONLY.findall(text)})
    results = load_results(name, tmp_path)
    kinds = {v.variant_id: v.note for v in results.values("kv_group")}
    positions = results.values("position_sources", variant="base")[0].note
    decode = results.values("peak_decode_cached", variant="base", seq_len=64, method="simulated", status=None)
    if name == "gpt2-tiny":
        assert kinds["base"].startswith("multi-head attention (MHA)") and positions.startswith(
            "learned absolute"
        )
        assert decode[0].status == "skipped" and "position" in decode[0].note  # n + 1 tokens: past the table
    else:
        assert kinds["base"].startswith("grouped-query attention (GQA)") and kinds["heads=2"].startswith(
            "multi-head"
        )  # 2 over 2
        assert positions == "rotary on 8 of 16 channels per head" and decode[0].status == "ok"
    assert "| attention | positions |" in md


def test_flags_set_but_not_built_say_so():
    """Orca with ALiBi and xPos switched off, and a tiny ALiBi study without flash: the entries describe the
    model as built (no slopes, no rotary, attention in plain PyTorch), never the flag's intent."""
    orca = load_study("orca", ["alibi_pos_bias=false", "rotary_xpos=false"], base_only=True).base
    how = {e.flag: e.how for e in fidelity_entries(orca)}
    # without xPos nothing turns rotary on (x-transformers: rotary_pos_emb = rotary_pos_emb or rotary_xpos)
    off = "off: nothing of it is built (positions in this build: token shift (channels from up to 1 position back))"
    assert how["alibi_pos_bias"] == off
    assert how["alibi_num_heads"].startswith("off: nothing of it is built") and how["rotary_xpos"].startswith(
        "off:"
    )
    tiny = load_study("tests/fixtures/tiny.yaml", ["attn_flash=false"], base_only=True).base
    assert {e.flag: e.how for e in fidelity_entries(tiny)}["attn_flash"].startswith(
        "attention is computed in plain"
    )


def test_a_users_catalogue_never_reads_the_orca_notes(tmp_path):
    """The same claims under another file name are a user's catalogue: verdicts are not qualified by what the
    Orca notes say about heads (the built-in catalogue's name, `orca`, is what brings that reading in)."""
    import shutil

    from orca_analysis.claims.schema import DEFAULT_CATALOGUE

    study = load_study("tests/fixtures/llama-tiny.yaml")
    run_sweep(study, tmp_path, log=io.StringIO())
    mine = tmp_path / "my-claims.yaml"
    shutil.copy(DEFAULT_CATALOGUE, mine)
    md = render_report(study, tmp_path, mine)[1].read_text()
    assert "the notes treat heads" not in md
    md = render_report(study, tmp_path, Path("orca"))[1].read_text()
    assert "the notes treat heads" in md  # the notes' own catalogue


def test_a_listed_measurement_not_run_yet_says_so(write_study, tiny_study_path, tmp_path):
    run_sweep(load_study(str(tiny_study_path)), tmp_path, log=io.StringIO())  # params only
    listed = tiny_study_path.read_text().replace("measurements: [params]", "measurements: [params, memory]")
    md = render_report(load_study(str(write_study(listed))), tmp_path)[1].read_text()
    assert "`memory` is in the study's measurements but has no results yet: run the study" in md
    assert "add `memory` to the study's measurements" not in md
