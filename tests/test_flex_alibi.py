"""alibi_in_kernel: ALiBi in FlexAttention's score_mod computes the stock dense-bias function."""

import warnings

import pytest
import torch
from x_transformers import x_transformers as xt

from orca_analysis.build import build_model, fake_model, fidelity_entries, library_kwargs
from orca_analysis.errors import BuildError
from orca_analysis.study.schema import ModelConfig

WRAPPER = {"num_tokens": 97, "max_seq_len": 64, "use_abs_pos_emb": False}
LAYERS = {
    "dim": 64,
    "depth": 2,
    "heads": 4,
    "attn_dim_head": 16,
    "alibi_pos_bias": True,
    "alibi_num_heads": 2,
    "rotary_xpos": True,
    "attn_flash": True,
    "attn_one_kv_head": True,
    "shift_tokens": 1,
}


@pytest.fixture(autouse=True)
def _quiet():
    # Eager FlexAttention warns that it is unfused; x-transformers warns about the small rotary dim.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _cfg(in_kernel: bool, **layers) -> ModelConfig:
    return ModelConfig(dict(WRAPPER), {**LAYERS, **layers, "alibi_in_kernel": in_kernel})


def _tokens(n: int = 32, b: int = 2) -> torch.Tensor:
    return torch.randint(0, 97, (b, n), generator=torch.Generator().manual_seed(1))


def _pair(**layers) -> tuple[torch.nn.Module, torch.nn.Module]:
    stock = build_model(_cfg(False, **layers), seed=0).eval()
    flex = build_model(_cfg(True, **layers), seed=0).eval()
    return stock, flex


@pytest.mark.parametrize(
    "layers",
    [
        {},  # design: ALiBi on 2 of 4 heads, one KV head
        {"alibi_num_heads": None},  # ALiBi on all 4 heads
        {"attn_one_kv_head": False},  # kv heads = heads = 4
        {"attn_one_kv_head": False, "attn_kv_heads": 2},  # grouped: x-transformers tiles KV heads
        {"attn_flash": False},  # the einsum path of Attend, same function
    ],
    ids=["design", "all_heads_alibi", "kv_eq_heads", "grouped_kv", "no_flash"],
)
def test_same_weights_and_same_logits_as_the_dense_bias(layers):
    stock, flex = _pair(**layers)
    s_sd, f_sd = stock.state_dict(), flex.state_dict()
    # The realisation adds no parameter and no persistent buffer (slopes are non-persistent).
    assert list(s_sd) == list(f_sd)
    for key in s_sd:
        torch.testing.assert_close(s_sd[key], f_sd[key], rtol=0, atol=0)  # same seed, same init order
    x = _tokens()
    with torch.no_grad():
        # Same function up to float32 reassociation: the dense bias is added inside SDPA's kernel,
        # the score_mod's inside flex's; assert_close's float32 defaults (rtol 1.3e-6, atol 1e-5).
        torch.testing.assert_close(flex(x), stock(x))


def test_no_dense_bias_and_slopes_match_the_library():
    stock, flex = _pair()
    assert flex.attn_layers.rel_pos is None  # AttentionLayers passes no rel_pos: no bias tensor
    # AlibiPositionalBias._get_slopes(2): start = 2^(-2^-(log2(2) - 3)) = 2^-4 = 0.0625, ratio 0.0625
    # -> [0.0625, 0.00390625]; heads 3 and 4 are not ALiBi'd -> 0.
    expected = torch.tensor([0.0625, 0.00390625, 0.0, 0.0])
    attends = [m.attend for m in flex.attn_layers.modules() if isinstance(m, xt.Attention)]
    assert len(attends) == 2  # depth 2 -> two self-attention layers
    for attend in attends:
        torch.testing.assert_close(attend.alibi_slopes, expected)
    torch.testing.assert_close(stock.attn_layers.rel_pos.slopes.flatten(), expected[:2])


def test_key_padding_mask_matches_including_fully_masked_rows():
    stock, flex = _pair()
    x = _tokens()
    mask = torch.ones(2, 32, dtype=torch.bool)
    mask[0, :5] = False  # left padding: queries 0..4 of row 0 see only padded keys
    with torch.no_grad():
        # Stock zeroes fully masked rows' attention output; flex returns 0 for them as well.
        torch.testing.assert_close(flex(x, mask=mask), stock(x, mask=mask))


def test_cached_decoding_equals_the_full_forward():
    # shift_tokens 0: x-transformers' cached decoding mixes in no previous token under token shift
    # (the cache holds K/V, not shifted features), so with it even the stock model's cached logits
    # differ from its full forward (by ~1 here); that is upstream and unrelated to ALiBi.
    flex = build_model(_cfg(True, shift_tokens=0), seed=0).eval()
    x = _tokens(n=12)
    with torch.no_grad():
        full = flex(x)
        # As AutoregressiveWrapper.generate: the prompt once, then one token at a time with the
        # cache; queries are the last position of the keys, so the ALiBi offset is k_len - 1.
        logits, cache = flex(x[:, :8], return_intermediates=True)
        steps = [logits[:, -1]]
        for t in range(8, 12):
            logits, cache = flex(x[:, : t + 1], cache=cache, return_intermediates=True)
            steps.append(logits[:, -1])
    torch.testing.assert_close(torch.stack(steps, 1), full[:, 7:12])  # logits at positions 7..11


def test_backward_on_cpu_needs_a_gpu():
    # FlexAttention has no CPU backward (torch 2.13): it refuses already in the forward once q, k or v
    # require grad (trainable weights). When torch adds it, this fails and the measurements can stop
    # recording "needs a GPU".
    _, flex = _pair()
    flex.train()
    with pytest.raises(NotImplementedError, match="FlexAttention does not support backward on CPU"):
        flex(_tokens(n=16)).logsumexp(-1).mean().backward()
    with torch.no_grad():
        assert flex(_tokens(n=16)).shape == (2, 16, 97)  # the forward alone runs, in train mode too


def test_builds_and_runs_under_fake_tensors():
    with fake_model(_cfg(True)) as (model, _):
        with torch.no_grad():
            out = model(torch.randint(0, 97, (2, 32)))
        assert out.shape == (2, 32, 97)  # (batch, seq, num_tokens)


def test_refused_without_alibi_and_with_uncovered_options():
    with pytest.raises(BuildError, match="needs 'alibi_pos_bias: true'"):
        build_model(_cfg(True, alibi_pos_bias=False, alibi_num_heads=None))
    with pytest.raises(BuildError, match="memory tokens"):
        build_model(ModelConfig({**WRAPPER, "num_memory_tokens": 2}, {**LAYERS, "alibi_in_kernel": True}))
    with pytest.raises(BuildError, match="talking heads"):  # caught on the built Attend modules
        build_model(_cfg(True, attn_flash=False, attn_pre_talking_heads=True))


def test_flag_is_stripped_and_described():
    _, layers = library_kwargs(_cfg(True))
    assert "alibi_in_kernel" not in layers  # x-transformers never sees the realised flag
    entries = {e.flag: e for e in fidelity_entries(_cfg(True))}
    assert entries["alibi_in_kernel"].status == "realised"
    assert "score_mod" in entries["alibi_in_kernel"].how
    assert "dense" not in entries["alibi_pos_bias"].how  # no dense mask is claimed any more
    assert "no dense mask" in entries["attn_flash"].how
    stock_entries = {e.flag: e for e in fidelity_entries(_cfg(False))}
    assert "dense float" in stock_entries["alibi_pos_bias"].how


def test_simulated_memory_names_what_needs_a_gpu_and_keeps_the_rest():
    from orca_analysis.catalog.vocabulary import Cause
    from orca_analysis.instruments.memtrack import cause_of, run_steps

    res = run_steps(_cfg(True), "float32", {(32, 1): ("train", "prefill", "decode")})[(32, 1)]
    # the training step: no FlexAttention backward on a CPU; prefill and decode: MemTracker (a dispatch
    # mode) cannot follow the flex_attention higher-order operator. Each is a reason, not a crash.
    assert res["train"].startswith("NotImplementedError: FlexAttention does not support backward on CPU")
    assert "cannot follow the flex_attention operator: this memory needs a GPU" in res["prefill"]
    assert res["decode"] == res["prefill"]
    # each a step this CPU cannot run and a GPU can: the records of them carry that cause, typed
    assert [cause_of(res[s]) for s in ("train", "prefill", "decode")] == [Cause.NEEDS_GPU] * 3
    dense = run_steps(_cfg(False), "float32", {(32, 1): ("train", "prefill")})[(32, 1)]
    assert dense["train"].total > 0 and dense["prefill"].total > 0  # the dense-bias twin runs everything
