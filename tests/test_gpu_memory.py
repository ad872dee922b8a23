"""GPU memory without a GPU: attention routed to the predicted backend's operator, CUDA's autocast rules on
CPU tensors, allocations rounded as CUDA's allocator rounds them, and the largest batch that fits."""

import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode

from orca_analysis.build import build_model
from orca_analysis.cli import main
from orca_analysis.devices import device
from orca_analysis.instruments.cuda_autocast import cuda_autocast
from orca_analysis.instruments.gpu_forecast import memories_of, simulate
from orca_analysis.instruments.gpu_memory import RoutedSdpa
from orca_analysis.instruments.max_batch import max_batch, walked_max_batch
from orca_analysis.instruments.replay import ADD, CHECK, DROP, replay
from orca_analysis.instruments.tracker import _Tracker
from orca_analysis.study.load import load_study

H100 = device("h100")
B, H, N, D = 1, 2, 128, 64  # one attention call: q, k, v of (b, h, n, d)


def _alive_after_forward(backend: str, dtype: torch.dtype) -> dict[str, int]:
    """Bytes alive after one causal SDPA forward routed to `backend`, by the tracker's category."""
    with FakeTensorMode():
        q, k, v = (torch.randn(B, H, N, D, dtype=dtype, requires_grad=True) for _ in range(3))
        tracker = _Tracker(cuda=True)
        tracker.track_external(q, k, v)
        with tracker, RoutedSdpa(H100, (backend,)) as routed:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        (snap,) = tracker.get_tracker_snapshot().values()
    assert routed.backends == {backend: 1} and out.shape == (B, H, N, D)
    return {str(k.value if hasattr(k, "value") else k): v for k, v in snap.items()}


# Derivations, b=1, h=2, n=128, d=64; every allocation rounded up to 512 B:
#   q, k, v: 3 x (1*2*128*64) elements = 3 x 16,384 -> 98,304 B in bfloat16, 196,608 B in float32 ("Other").
#   flash: out 16,384 x 2 = 32,768; logsumexp (b, h, n) float32 = 1,024; rng_state (2,) uint64 = 16 -> 512;
#          the unused () uint64 -> 512. 34,816 B.
#   efficient, bfloat16: out 32,768; logsumexp (b, h, ceil(n/32)*32) float32 = 1,024; philox seed and offset
#          () int64 -> 512 each. 34,816 B. float32: out 65,536 + 1,024 + 1,024 = 67,584 B.
#   math, float32: saved for the backward: q and k scaled by sqrt(scale) (65,536 each), the probabilities
#          (b, h, n, n) float32 = 131,072, and the output 65,536. 327,680 B.
#   math, bfloat16, as CUDA runs it (upcast to float32): q and k scaled and v upcast (65,536 each), the
#          probabilities 131,072, the output cast back to bfloat16 32,768. 360,448 B.
@pytest.mark.parametrize(
    ("backend", "dtype", "activations", "inputs"),
    [
        ("flash", torch.bfloat16, 34_816, 98_304),
        ("efficient", torch.bfloat16, 34_816, 98_304),
        ("efficient", torch.float32, 67_584, 196_608),
        ("math", torch.float32, 327_680, 196_608),
        ("math", torch.bfloat16, 360_448, 98_304),
    ],
)
def test_the_routed_attention_keeps_what_the_backend_keeps(backend, dtype, activations, inputs):
    alive = _alive_after_forward(backend, dtype)
    assert (alive["Activation"], alive["Other"]) == (activations, inputs)


def test_a_mask_that_does_not_broadcast_is_refused_not_walked():
    """The fused operators' fake kernels do not check the mask; CUDA would refuse the call."""
    with FakeTensorMode():
        q = torch.randn(1, 2, 1, 64, dtype=torch.bfloat16)
        k = torch.randn(1, 2, 9, 64, dtype=torch.bfloat16)
        mask = torch.zeros(2, 9, 9, dtype=torch.bfloat16)
        with RoutedSdpa(H100), pytest.raises(RuntimeError, match=r"does not broadcast to \(1, 2, 1, 9\)"):
            F.scaled_dot_product_attention(q, k, k, attn_mask=mask)


def _dtypes(fn, dev: str) -> list:
    """(operator, output dtypes) of each operator `fn` dispatches, on fake tensors on `dev`, under CUDA's
    autocast: the real AutocastCUDA kernels on fake CUDA tensors (no autograd: a forward needs no device
    guard), or the emulation on CPU tensors."""

    class Log(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.seen = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if func is not torch.ops.prim.device.default:
                outs = out if isinstance(out, tuple | list) else [out]
                self.seen.append((str(func), tuple(str(getattr(o, "dtype", None)) for o in outs)))
            return out

    with FakeTensorMode():
        x = torch.randn(2, 16, 64, device=dev)
        w = torch.randn(64, 64, device=dev)
        y = torch.randint(0, 64, (2, 16), device=dev)
        log = Log()
        if dev == "cuda":
            torch.set_autocast_enabled("cuda", True)
            torch.set_autocast_dtype("cuda", torch.bfloat16)
            try:
                with torch.no_grad(), log:
                    fn(x, w, y)
            finally:
                torch.set_autocast_enabled("cuda", False)
                torch.clear_autocast_cache()
        else:
            with cuda_autocast(torch.bfloat16), torch.no_grad(), log:
                fn(x, w, y)
    return log.seen


OPS = {
    "linear": lambda x, w, y: F.linear(x, w),
    "layer_norm": lambda x, w, y: F.layer_norm(F.linear(x, w), (64,)),
    "rms_norm": lambda x, w, y: F.rms_norm(F.linear(x, w), (64,)),
    "softmax": lambda x, w, y: F.linear(x, w).softmax(-1),
    "cross_entropy": lambda x, w, y: F.cross_entropy(F.linear(x, w).flatten(0, 1), y.flatten()),
    "normalize": lambda x, w, y: F.normalize(F.linear(x, w), dim=-1),
    "sum, cumsum, exp, pow, rsqrt": lambda x, w, y: [
        f(F.linear(x, w))
        for f in (torch.sum, lambda t: t.cumsum(-1), torch.exp, lambda t: t.pow(2), torch.rsqrt)
    ],
    "einsum": lambda x, w, y: torch.einsum("bnd,de->bne", x, w),
    "cat": lambda x, w, y: torch.cat([F.linear(x, w), x], dim=-1),
}


@pytest.mark.parametrize("name", list(OPS))
def test_the_autocast_emulation_casts_as_cuda_does(name):
    """Every operator, and the dtype of every output, as AutocastCUDA gives them. CPU autocast alone differs:
    layer_norm, softmax, sum... stay bfloat16 there, cat promotes, cross_entropy casts its logits to float32."""
    assert _dtypes(OPS[name], "cpu") == _dtypes(OPS[name], "cuda")


def test_cpu_autocast_is_back_after_the_emulation():
    with FakeTensorMode():
        h = torch.randn(2, 64)
        with cuda_autocast(torch.bfloat16):
            inside = F.layer_norm(h.bfloat16(), (64,)).dtype
        with torch.autocast("cpu", dtype=torch.bfloat16):
            after = F.layer_norm(h.bfloat16(), (64,)).dtype
    assert (inside, after) == (torch.float32, torch.bfloat16)


def test_the_largest_batch_fits_and_one_more_does_not():
    """llama-tiny (no ALiBi) at 64 tokens on an H100 cut to 40 MB: the answer replayed from the walks at batch 2
    and 3, checked by a walk; the batch beyond it does not fit when walked either."""
    cfg = load_study("tests/fixtures/llama-tiny.yaml").base
    small = dataclasses.replace(H100, memory_bytes=40_000_000)
    for policy in ("float32", "bfloat16"):
        mb = max_batch(cfg, small, policy, 64, "train")
        at = {
            b: simulate(cfg, small, policy, 64, b, ("train",))[0]["train"]
            for b in (1, 2, 3, 4, mb.batch, mb.batch + 1)
        }
        assert at[mb.batch].fits(small) and not at[mb.batch + 1].fits(small), policy
        assert mb.peak == at[mb.batch].peak and "replayed" in mb.method and "to the byte" in mb.method
        # at batch 1 the peak is the optimizer step's (foreach AdamW's temporaries, constant in the batch); from
        # batch 2 on the backward's: the line through batches 1 and 2 misses, the 512 B rounding of small tensors
        # and the moment of the peak move it under 1% from batch 2 on
        assert at[1].phase == "optimizer" and {at[b].phase for b in (2, 3, 4)} == {"backward"}
        assert 2 * at[3].peak - at[2].peak == pytest.approx(at[4].peak, rel=0.01)


def test_the_walked_answer_refits_where_the_line_through_batch_1_and_2_misses():
    """The fallback where no replay can be made: llama-tiny's line through batch 1 (the optimizer's peak) and 2
    misses the limit, so it is refitted through the walks nearest it and checked by walks at b and b + 1; it
    agrees with the replayed answer."""
    cfg = load_study("tests/fixtures/llama-tiny.yaml").base
    small = dataclasses.replace(H100, memory_bytes=40_000_000)
    walked = walked_max_batch(cfg, small, "float32", 64, "train")
    assert "refitted" in walked.method and "checked by walks" in walked.method
    assert walked.batch == max_batch(cfg, small, "float32", 64, "train").batch


@pytest.mark.parametrize(("study", "policy"), [("tiny", "bfloat16"), ("llama-tiny", "float32")])
def test_the_replayed_peak_is_the_walks_own_at_every_batch(study, policy):
    """The peak replayed from the timelines at batch 2 and 3 equals the tracker's own, to the byte, at batches
    never walked for it (tiny has ALiBi: its (b, h, n, n) bias grows with the batch too)."""
    cfg = load_study(f"tests/fixtures/{study}.yaml").base
    walked = memories_of(cfg, H100, policy, {(32, b): ("train", "prefill") for b in (2, 3, 5, 11)})
    for step in ("train", "prefill"):
        rep = replay(walked[(32, 2)][step].timeline, walked[(32, 3)][step].timeline, 512)
        assert rep is not None and rep.monotone
        assert [rep.peak(b) for b in (2, 3, 5, 11)] == [walked[(32, b)][step].peak for b in (2, 3, 5, 11)]


def test_a_replay_needs_the_same_events_and_reads_them_in_slot_order_between_checks():
    """Hand-made timelines: (kind, slot, raw bytes). Storages 0 and 1 are added (100 and 700 B at batch 2, 200
    and 700 B at batch 3), checked, dropped in either order, checked. At batch B storage 0 holds 100 (B - 1) B,
    rounded up to 512 B blocks: batch 6 -> 500 B -> 512 B, batch 7 -> 600 B -> 1,024 B; storage 1 holds 700 B
    -> 1,024 B. The peak is the first check: 1,536 B at batch 6, 2,048 B at batch 7."""
    a = [(ADD, 0, 100), (ADD, 1, 700), (CHECK, -1, 0), (DROP, 0, 0), (DROP, 1, 0), (CHECK, -1, 0)]
    b = [(ADD, 0, 200), (ADD, 1, 700), (CHECK, -1, 0), (DROP, 1, 0), (DROP, 0, 0), (CHECK, -1, 0)]
    rep = replay(a, b, 512)
    assert (rep.peak(6), rep.peak(7)) == (1536, 2048) and rep.monotone
    assert replay(a, [*b[:3], (ADD, 2, 8), *b[3:]], 512) is None  # an event more: the code branched
    assert not replay(b, a, 512).monotone  # storage 0 shrinks from batch 2 to 3


def test_the_optimizer_step_is_cudas_multi_tensor_adamw():
    """On CUDA, torch's AdamW takes its foreach path by default (optim/optimizer.py _default_to_fused_or_foreach);
    its step holds a parameter-sized list of temporaries (exp_avg_sq_sqrt). llama-tiny at 64 tokens x 1: the
    step is the peak of the simulated GPU training step, in both policies.
    R = the parameters' bytes, each float32 tensor rounded up to 512 B (21 tensors, 156,992 parameters).
    At the step: weights R + gradients R + exp_avg R + exp_avg_sq R + the temporaries R = 5R, plus 512 B each
    for the one buffer, the 21 step counters and the two int64 token tensors (64 x 8 = 512 B)."""
    cfg = load_study("tests/fixtures/llama-tiny.yaml").base
    model = build_model(cfg, "cpu", "float32")
    rounded = sum(-(-p.numel() * 4 // 512) * 512 for p in model.parameters())
    assert rounded == 629_248
    for policy in ("float32", "bfloat16"):
        (train,) = simulate(cfg, H100, policy, 64, 1, ("train",))[0].values()
        assert train.phase == "optimizer" and train.peak == 5 * rounded + 512 * (1 + 21 + 2) == 3_158_528
        assert train.categories["optimizer_state"] == 3 * rounded + 21 * 512  # the state and the temporaries


def test_bfloat16_training_holds_less_than_float32_for_orca_like_attention():
    """tiny (ALiBi: the float bias goes to the memory-efficient kernel) at 64 tokens: both policies walk every
    step, and the bfloat16 activations are smaller."""
    cfg = load_study("tests/fixtures/tiny.yaml").base
    fp32, routed32 = simulate(cfg, H100, "float32", 64, 2, ("train", "prefill"))
    bf16, routed16 = simulate(cfg, H100, "bfloat16", 64, 2, ("train", "prefill"))
    assert routed32 == routed16 == {"efficient": 2 * 2}  # 2 layers, training forward and prefill
    assert bf16["train"].categories["activations"] < fp32["train"].categories["activations"]


def test_inspect_json_carries_memory_fits_and_max_batch(capsys):
    assert (
        main(
            [
                "inspect",
                "--study",
                "tests/fixtures/tiny.yaml",
                "--only",
                "params",
                "--device",
                "h100",
                "--json",
            ]
        )
        == 0
    )
    f = json.loads(capsys.readouterr().out)["forecast"]
    assert f["fits"] == {"train": True, "prefill": True, "decode": None}  # decode: the ALiBi+rotary failure
    assert f["memory"]["train"]["peak"] > 0 and "broadcast" in f["memory"]["decode"]["why"]
    assert f["headroom"]["train"] == H100.memory_bytes - f["memory"]["train"]["peak"]
    assert f["max_batch"]["train"]["32"]["batch"] > 1000 and f["routed_calls"] == {"efficient": 4}
    # the optimizer step holds the peak at batch 1 and 2 (flat): replayed from batch 2 and 3, no walk doubles it
    train = f["max_batch"]["train"]["32"]
    assert "replayed" in train["method"] and f"checked by a walk at {train['batch']:,}" in train["method"]
    assert set(f["time"]) == {"train", "prefill"} and set(f["mfu_ceiling"]) == {"train", "prefill"}
    assert all(0 < t["floor_s"] < t["predicted_s"] for t in f["time"].values())
    assert all(0 < m["kernel"] <= m["palm"] < 1 for m in f["mfu_ceiling"].values())  # ALiBi: a mask, no skip
