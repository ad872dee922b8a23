"""The builder: DeepNorm's alpha and beta on the built model, fake builds, library refusals."""

import math

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensor
from x_transformers import x_transformers as xt

from orca_analysis.build import build_model, fake_model, fidelity_entries, library_kwargs
from orca_analysis.build.deepnorm import deepnorm_alpha, deepnorm_beta
from orca_analysis.errors import BuildError
from orca_analysis.study import load_study


@pytest.fixture
def tiny(tiny_study_path):
    return load_study(str(tiny_study_path))


def test_alpha_and_beta_follow_deepnet():
    # DeepNet Table 1, decoder-only: alpha = (2M)^(1/4), beta = (8M)^(-1/4); M = 6 -> 12^0.25, 48^-0.25
    assert deepnorm_alpha(6) == pytest.approx(1.861209718)
    assert deepnorm_beta(6) == pytest.approx(0.379917843)


def test_deepnorm_is_realised_on_the_built_model(tiny_study_path):
    study = load_study(str(tiny_study_path), ["depth=4", "dim=256"])
    model = build_model(study.base, seed=0)
    layers = model.attn_layers
    assert layers.pre_norm is False  # post-LN
    assert not list(layers.final_norm.parameters())  # post-LN has no final norm (x-transformers Identity)
    residuals = [block[2] for block in layers.layers]
    assert all(r.scale_residual_constant == pytest.approx((2 * 4) ** 0.25) for r in residuals)
    # every sublayer has its post-branch LayerNorm
    assert all(isinstance(block[0][2], xt.LayerNorm) for block in layers.layers)
    beta = (8 * 4) ** -0.25
    ff = layers.layers[1][1].fn  # ShiftTokens wraps the FeedForward
    w1 = ff.ff[0][0].weight  # (1024, 256)
    # xavier normal: std = gain * sqrt(2 / (fan_in + fan_out)) = beta * sqrt(2 / 1280)
    assert w1.std().item() == pytest.approx(beta * math.sqrt(2 / 1280), rel=0.05)
    attn = layers.layers[0][1].fn
    # query keeps gain 1: std = sqrt(2 / (256 + 4*64))
    assert attn.to_q.weight.std().item() == pytest.approx(math.sqrt(2 / 512), rel=0.05)
    # value is (64, 256) with one kv head and gets beta: beta * sqrt(2 / 320)
    assert attn.to_v.weight.std().item() == pytest.approx(beta * math.sqrt(2 / 320), rel=0.1)
    assert torch.all(ff.ff[0][0].bias == 0)


def test_deepnorm_kwargs_replace_the_rejected_flag(tiny):
    _, layers = library_kwargs(tiny.base)
    assert "deepnorm" not in layers
    assert layers["pre_norm"] is False and layers["scale_residual_constant"] == pytest.approx(4**0.25)


def test_fake_build_allocates_no_weights_and_runs(tiny):
    with fake_model(tiny.base) as (model, _):
        assert all(isinstance(p, FakeTensor) for p in model.parameters())
        out = model(torch.randint(0, 256, (2, 32)))
        assert out.shape == (2, 32, 256)


def test_fake_build_of_a_55b_model_is_cheap(tiny):
    cfg = tiny.base.with_values(
        {
            ("attn_layers", "dim"): 8192,
            ("attn_layers", "depth"): 80,
            ("attn_layers", "heads"): 64,
            ("attn_layers", "attn_dim_head"): 128,
            ("attn_layers", "alibi_num_heads"): 8,
        }
    )
    with fake_model(cfg) as (model, _):
        assert sum(p.numel() for p in model.parameters()) > 40e9


def test_real_build_runs_forward_and_is_causal(tiny):
    model = build_model(tiny.base).eval()
    x = torch.randint(0, 256, (1, 16))
    y = x.clone()
    y[0, 10] = (y[0, 10] + 1) % 256
    with torch.no_grad():
        a, b = model(x), model(y)
    assert torch.allclose(a[0, :10], b[0, :10], atol=1e-5)  # positions before the change are untouched
    assert not torch.allclose(a[0, 10:], b[0, 10:])


def test_library_refusal_is_a_one_line_build_error(tiny):
    cfg = tiny.base.with_values({("attn_layers", "rel_pos_bias"): True})  # flash + T5 bias is refused
    with pytest.raises(BuildError, match="refused the config") as exc:
        build_model(cfg)
    assert "\n" not in str(exc.value)


def test_every_flag_gets_a_fidelity_entry(tiny):
    entries = {e.flag: e for e in fidelity_entries(tiny.base)}
    assert set(entries) == set(tiny.base.wrapper) | set(tiny.base.layers)
    assert entries["deepnorm"].status == "realised"
    assert all(e.status == "native" for f, e in entries.items() if f != "deepnorm")
    assert "channels" in entries["shift_tokens"].how and not entries["shift_tokens"].notes_differ
    with_notes = {e.flag: e for e in fidelity_entries(tiny.base, notes=True)}  # a study naming the notes
    assert "next-token targets" in with_notes["shift_tokens"].notes_differ
