"""Parameters: closed form == the library's own count, on many variants."""

import pytest

from orca_analysis.formulas import FORMULAS
from orca_analysis.formulas.params import closed_form_params
from orca_analysis.kit.format import cell
from orca_analysis.measurements.params.run import counted_params, measure_params, params_summary
from orca_analysis.measurements.params.section import params_section
from orca_analysis.results.query import Results
from orca_analysis.study import load_study


def test_orca_base_by_hand():
    cfg = load_study("orca").base
    counter = counted_params(cfg)
    # embedding = logits = 20000 * 512 = 10,240,000
    # attention per layer: q 512*512 + k 512*64 + v 512*64 + out 512*512 = 589,824; x 6 = 3,538,944
    # feed-forward per layer: 512*2048 + 2048 + 2048*512 + 512 = 2,099,712; x 6 = 12,598,272
    # norms: one 512-gain per sublayer, 12 sublayers, no final norm (post-LN) = 6,144
    expected = {
        "embedding": 10_240_000,
        "logits": 10_240_000,
        "attention": 3_538_944,
        "feedforward": 12_598_272,
        "norm": 6_144,
        "other": 0,
        "total": 36_623_360,
    }
    assert {k: counter[k] for k in expected} == expected
    assert counter["library_total"] == 36_623_360
    assert closed_form_params(cfg)["total"] == 36_623_360


def test_deepnorm_adds_no_parameters_and_drops_the_final_norm():
    summary = params_summary(load_study("orca").base)
    assert summary["deepnorm"]["params_added_by_realisation"] == 0
    assert summary["deepnorm"]["difference_vs_pre_norm"] == -512  # pre-norm keeps a final 512-gain norm
    assert summary["embedding_and_logits_share"] == pytest.approx(20_480_000 / 36_623_360)


VARIANTS = [
    [],
    ["dim=96", "depth=3", "heads=6"],
    ["attn_one_kv_head=false"],
    ["attn_one_kv_head=false", "attn_kv_heads=2"],
    ["attn_dim_head=16", "heads=8", "alibi_num_heads=8"],
    ["ff_mult=2.5"],
    ["ff_glu=true"],
    ["ff_glu=true", "ff_no_bias=true", "ff_mult=3"],
    ["ff_no_bias=true"],
    ["tie_embedding=true"],
    ["deepnorm=false"],
    ["deepnorm=false", "use_abs_pos_emb=true", "rotary_xpos=false"],
    ["deepnorm=false", "use_rmsnorm=true"],
    ["attn_value_dim_head=32"],
    ["num_tokens=1000", "dim=48", "depth=5"],
]


@pytest.mark.parametrize("overrides", VARIANTS, ids=lambda o: ",".join(o) or "tiny")
def test_closed_form_equals_counter(tiny_study_path, overrides):
    cfg = load_study(str(tiny_study_path), overrides).base
    counter, closed = counted_params(cfg), closed_form_params(cfg)
    assert counter["other"] == 0
    assert {k: counter[k] for k in closed} == closed
    assert counter["library_total"] == closed["total"]


def test_unmodelled_option_shows_as_a_gap_not_a_silent_match(tiny_study_path):
    cfg = load_study(str(tiny_study_path), ["attn_qk_norm=true", "attn_qk_norm_dim_scale=true"]).base
    summary = params_summary(cfg)
    # qk-norm adds learned scales the closed form does not model: the mismatch must be visible
    assert summary["closed_form_matches"] is False
    assert summary["total"] - summary["closed_form"]["total"] > 0


def test_every_param_formula_cites_its_source():
    params = {n: f for n, f in FORMULAS.items() if n.startswith("params.")}
    assert set(params) == {f"params.{c}" for c in ("embedding", "attention", "feedforward", "norm", "logits")}
    assert all(f.citation for f in params.values())


def test_records_carry_components_as_labels_and_the_derivations_once(tiny_study_path):
    study = load_study(str(tiny_study_path))
    records = [r for v in study.variants() for r in measure_params(v, study)]
    results = Results.from_records(records)
    # tiny base: embedding = logits = 256 * 64 = 16,384; attention 2 * (64*256 + 64*64 + 64*64 + 256*64) = 81,920;
    # feed-forward 2 * (64*256 + 256 + 256*64 + 64) = 66,176; norms 4 sublayers x 64 = 256; total 181,120
    assert results.number("params", variant="base", method="counter", component="total") == 181_120
    assert results.number("params", variant="base", method="library_count", component="total") == 181_120
    assert results.number("embedding_and_logits_share", variant="base") == pytest.approx(32_768 / 181_120)
    # dim=32: embedding = logits = 256 * 32 = 8,192; attention 2 * (32*256 + 32*64 + 32*64 + 256*32) = 40,960;
    # feed-forward 2 * (32*128 + 128 + 128*32 + 32) = 16,704; norms 4 x 32 = 128; total 74,176 = 181,120 x 0.4095
    assert results.number("params_delta_vs_base", variant="dim=32") == pytest.approx(74_176 / 181_120 - 1)
    assert all(v.value == 0 for v in results.values("params_closed_form_gap"))
    assert all(r.unit in ("params", "fraction") and r.scale == "analytic" for r in records)


def test_section_shows_the_stored_numbers(tiny_study_path):
    study = load_study(str(tiny_study_path))
    results = Results.from_records([r for v in study.variants() for r in measure_params(v, study)])
    section = params_section(results, study)
    rows = {r[0]: [cell(c) for c in r] for r in section.tables[0].rows}
    assert rows["base"][4:6] == ["181,120", "+0.0%"]
    assert rows["dim=32"][4:6] == ["74,176", "-59.0%"]  # 74,176 / 181,120 - 1 = -0.5905
    assert [f.name for f in section.figures] == ["params_vs_axes", "param_split"]
