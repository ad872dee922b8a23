"""Behaviour probes: each probe can pass and can fail, on toy models with known answers; a probe's
outcome is a value (pass 1 / fail 0), never a status."""

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn.attention import SDPBackend

from orca_analysis.build import build_model
from orca_analysis.instruments.proxy import tiny_scale
from orca_analysis.instruments.sdpa import force_backend
from orca_analysis.kit.format import cell
from orca_analysis.measurements.probes.run import (
    attribution_cases,
    causality,
    kv_cache_diff,
    probe_records,
    tolerance,
)
from orca_analysis.measurements.probes.section import probes_section
from orca_analysis.results.query import Results
from orca_analysis.study import ModelConfig, load_study

V = 5  # toy vocabulary
TINY = Path(__file__).parent / "fixtures" / "tiny.yaml"


class CumulativeCounts(nn.Module):
    """Causal by construction: output at i = counts of each token in positions 0..i."""

    def forward(self, x):
        return torch.nn.functional.one_hot(x, V).float().cumsum(dim=1)  # (B, T, V)


class TotalCounts(nn.Module):
    """Sees the future: output at every i = counts of each token in the whole sequence."""

    def forward(self, x):
        counts = torch.nn.functional.one_hot(x, V).float().sum(dim=1, keepdim=True)
        return counts.expand(-1, x.shape[1], -1)


def test_causality_on_toy_models():
    x = torch.tensor([[0, 1, 2, 3, 4, 0, 1, 2]])
    # Token t+1 goes a -> a+1 (mod V): count[a] drops by 1 and count[a+1] rises by 1, so every
    # position that sees token t+1 moves by exactly 1 and the others not at all.
    leak, seen, _ = causality(CumulativeCounts(), x, V)
    assert (leak, seen) == (0.0, 1.0)
    leak, seen, _ = causality(TotalCounts(), x, V)
    assert (leak, seen) == (1.0, 1.0)


def test_tolerance_is_torch_testing_default():
    ref = torch.tensor([[-2.0, 1.0]])
    assert tolerance(ref) == pytest.approx(1e-5 + 1.3e-6 * 2)  # atol + rtol * max|ref|
    assert tolerance(ref, torch.bfloat16) == pytest.approx(1e-5 + 1.6e-2 * 2)


def _cfg(**layers) -> ModelConfig:
    base = {"dim": 16, "depth": 2, "heads": 2, "attn_dim_head": 8}
    return ModelConfig({"num_tokens": 32, "max_seq_len": 64, "use_abs_pos_emb": False}, {**base, **layers})


def test_kv_cache_matches_full_recompute_on_plain_decoder():
    model = build_model(_cfg(rotary_pos_emb=True)).eval()
    x = torch.randint(0, 32, (2, 12), generator=torch.Generator().manual_seed(0))
    diff, tol = kv_cache_diff(model, x)
    assert diff <= tol


@pytest.fixture(scope="module")
def base_records():
    """The tiny study's base, probed once for the tests that read its records."""
    study = load_study(str(TINY))
    return study, probe_records(study.variants()[0], study, tiny_scale())


def test_kv_cache_failures_are_values_not_statuses(base_records):
    # x-transformers 2.31: token shift is not carried through the cache (wrong logits), and
    # ALiBi with xPos crashes on a cached step. If an upgrade fixes either, these flip to pass.
    _, recs = base_records
    results = Results.from_records(recs)
    assert all(r.status == "ok" for r in recs if r.metric != "kernel_agreement")  # a fail is a value
    built = results.one("kv_cache", case="as_built")
    assert built.value == 0.0 and built.note.startswith("RuntimeError")  # a crash: the exception in the note
    assert results.one("kv_cache_max_diff", case="as_built") is None  # nothing to compare when it crashed
    assert results.number("kv_cache_tolerance", case="as_built") > 0  # the full forward ran: its tolerance
    assert results.number("kv_cache", case="only=shift_tokens") == 0.0
    assert results.number("kv_cache_max_diff", case="only=shift_tokens") > 1e-3  # wrong logits, not a crash
    assert results.one("kv_cache", case="only=shift_tokens").note.startswith("max |diff| ")
    assert results.one("kv_cache", case="only=alibi_pos_bias+rotary_xpos").note.startswith("RuntimeError")
    assert results.number("kv_cache", case="only=alibi_pos_bias") == 1.0
    assert results.number("kv_cache", case="only=rotary_xpos") == 1.0
    assert all(r.seq_len is None and r.batch is None for r in recs)  # workload-free
    assert all(r.scale == "proxy" and r.device == "cpu" for r in recs)  # the tiny scale divides the width
    assert results.number("causality") == 1.0 and results.number("causality_max_diff") == 0.0
    assert results.number("causality_sensitive") == 1.0 and results.number("causality_downstream") > 0
    assert results.number("kernel_agreement", case="math") == 1.0
    assert results.number("kernel_agreement", case="flash_attention") == 1.0
    efficient = results.one("kernel_agreement", case="efficient_attention", status="skipped")
    assert efficient.note == "efficient_attention is not implemented on cpu"


def test_every_verdict_has_its_numbers(base_records):
    _, recs = base_records
    results = Results.from_records(recs)
    for v in results.values("kv_cache") + results.values("kernel_agreement") + results.values("causality"):
        case = v.get("case")
        tol = results.number(f"{v.metric}_tolerance", case=case)
        diff = results.one(f"{v.metric}_max_diff", case=case)
        assert tol is not None and (diff is None) == v.note.startswith("RuntimeError")
        if diff is not None:
            # the verdict is the stored diff against the stored tolerance
            assert v.value == float(diff.value <= tol)


def test_attribution_cases_cover_each_flag_and_pair(tiny_study_path):
    cfg = load_study(str(tiny_study_path)).base
    # 6 Orca flags set: 6 "without", 6 single "only", C(6, 2) = 15 pair "only" cases
    cases = dict(attribution_cases(cfg))
    assert len(cases) == 6 + 6 + 15
    assert cases["only=deepnorm"]["deepnorm"] is True and cases["only=deepnorm"]["alibi_pos_bias"] is False
    assert cases["without=shift_tokens"]["shift_tokens"] == 0 and cases["without=shift_tokens"]["rotary_xpos"]


def test_forced_math_backend_agrees_with_reference_path():
    cfg = _cfg(attn_flash=True, alibi_pos_bias=True, alibi_num_heads=1)
    flash = build_model(cfg).eval()
    ref = build_model(cfg.with_values({("attn_layers", "attn_flash"): False})).eval()
    ref.load_state_dict(flash.state_dict())
    x = torch.randint(0, 32, (2, 10), generator=torch.Generator().manual_seed(1))
    force_backend(flash, SDPBackend.MATH)
    with torch.no_grad():
        expected = ref(x)
        assert (flash(x) - expected).abs().max().item() <= tolerance(expected)


def test_oversized_probe_model_is_skipped(tiny_study_path):
    study = load_study(str(tiny_study_path))
    recs = probe_records(study.variants()[0], study, tiny_scale(probe_max_params=10))
    assert [r.metric for r in recs] == ["causality", "kv_cache", "kernel_agreement"]
    assert all(r.status == "skipped" and r.note.startswith("probe model has") for r in recs)


def test_section_shows_verdicts_and_the_base_cases(base_records):
    study, recs = base_records
    section = probes_section(Results.from_records(recs), study)
    probes, cases = section.tables
    (row,) = [[cell(c) for c in r] for r in probes.rows]  # only the base was probed here
    assert row[0] == "base" and row[1] == "pass (max |diff| 0)"  # causal: changes do not leak at all
    assert row[2].startswith("pass (max |diff| ") and row[3].startswith("FAIL: RuntimeError")
    detail = {r[0]: [cell(c) for c in r] for r in cases.rows}
    assert len(detail) == 1 + 6 + 6 + 15  # as built and every attribution case
    assert detail["only=alibi_pos_bias"][1:] == ["pass", detail["only=alibi_pos_bias"][2], ""]
    assert detail["only=shift_tokens"][1] == "FAIL" and detail["only=shift_tokens"][3].startswith(
        "max |diff| "
    )
    assert detail["as_built"][1:3] == ["FAIL", "-"]  # a crash has no diff
    assert section.missing == ""
    assert probes_section(Results.from_records([]), study).missing.startswith("no `probes` results")
