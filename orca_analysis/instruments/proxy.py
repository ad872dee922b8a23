"""Scales for the quality measurements (probes, training) and the proxy-model rule.

`cpu` (the standard tier, the default without CUDA) fits the `make report` budget on two cores:
proxies at dim/8 and head dim/8 (at least 16; depth, heads, kv heads and every flag unchanged),
byte-level tokens, 256 steps of 16 x 64 tokens, three seeds. Its budget powers the tests a reviewer
leans on most (the remedies' quality gates, length extrapolation, one KV head, gradient health, the
heads and overfitting claims); the width and depth comparisons, which need each arm at its own best
learning rate, and the equal-compute ones are left to `thorough` (`run --quality thorough`: 512 steps,
five seeds, a learning-rate sweep per width and depth arm, equal-FLOP runs; 48 minutes on 2 cores,
benchmarks/results/quality.md). `gpu` (the default with
CUDA; run through the GPU script) trains the study's own shapes with a BPE of the study's vocabulary.
ORCA_QUALITY_SCALE=cpu|thorough|gpu overrides.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import torch
from loguru import logger

from ..study.schema import ModelConfig
from .device import measure_device
from .tiers import TIERS

# Proxy heads are narrow on purpose; x-transformers would warn (through loguru) at every build
# that a rotary width under 32 is small for a language model.
logger.disable("x_transformers")


@dataclass(frozen=True)
class QualityScale:
    name: str
    divisor: int  # proxy width rule: dim // divisor, attn_dim_head // divisor
    tokenizer: str  # "byte" (vocab 256) or "bpe" (vocab = `vocab` or the study's num_tokens)
    vocab: int | None
    seq_len: int  # training length
    batch: int
    steps: int  # per run: the equal token budget is steps * batch * seq_len
    lr: float
    warmup: int  # linear warm-up steps, then constant until the cooldown
    evals: int  # evaluation points per run (evenly spaced, the last at the end)
    eval_windows: int  # fixed windows scored at each evaluation point (the last is what comparisons read)
    cooldown: float = 0.2  # the last fraction of each run decays linearly to 0 (warmup-stable-decay)
    seeds: tuple[int, ...] = (0, 1, 2)  # every comparison is repeated over these (an interval needs 3)
    overfit_tokens: int = 1024  # the deliberately small training subset
    overfit_steps: int = 48  # at `batch`: 48 passes over the subset, far into memorising it
    overfit_evals: int = 8  # evaluation points of an overfitting run (its control reads the best one)
    overfit_eval_windows: int = 32  # windows scored at each of them (the subset itself is 1,024 tokens)
    lr_factors: tuple[float, ...] = ()  # the width and depth arms' learning-rate sweep (x lr); (): not run
    equal_flops: bool = False  # equal-FLOP runs (each arm its own annealed run at the common budget)
    tier: str = "standard"  # standard | thorough | full (what `run --quality` names)
    grad_depths: tuple[int, ...] = (6, 48)  # the per-block picture at both; the claims read the deepest
    grad_steps: int = 20
    grad_batch: int = 4
    extrap_factors: tuple[int, ...] = (2, 4)
    extrap_tokens: int = 16384  # validation tokens scored at each length of the extrapolation test
    probe_seq: int = 32
    probe_batch: int = 2
    probe_max_params: int = 50_000_000  # larger probe models are skipped (a record says so)
    train_max_params: int = 5_000_000  # larger training proxies are skipped: they would blow the budget
    device: str = "cpu"
    threads: int | None = 1  # torch threads on cpu (None: torch's choice); see `torch_threads`
    matmul_precision: str = "highest"  # float32 matmuls while training; "high" = TF32 on a GPU
    notes: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.tokenizer not in ("byte", "bpe"):
            raise ValueError(f"tokenizer must be 'byte' or 'bpe', got '{self.tokenizer}'")
        if self.divisor < 1 or self.steps < 1 or self.evals < 1:
            raise ValueError("divisor, steps and evals must be at least 1")

    @property
    def tokens_per_run(self) -> int:
        return self.steps * self.batch * self.seq_len


CPU = QualityScale(
    name="cpu",
    divisor=8,
    tokenizer="byte",
    vocab=256,
    seq_len=64,
    batch=16,
    steps=256,  # 262,144 tokens: the base proxy's loss (about 1.8) is well below a bigram model's (2.41)
    lr=3e-3,
    warmup=16,
    evals=4,
    eval_windows=128,  # 8,320 held-out tokens, the same windows for every arm
    grad_steps=12,
    notes=("CPU proxies: dim/8, head dim/8, byte-level vocabulary 256, train length 64",),
)

THOROUGH = replace(
    CPU,
    name="thorough",
    tier="thorough",
    steps=512,
    warmup=24,
    evals=8,
    seeds=(0, 1, 2, 3, 4),
    lr_factors=(0.5, 2.0),
    equal_flops=True,
    notes=(
        "CPU proxies as the cpu scale's, trained twice as long on five seeds, width and depth arms each at "
        "the best of three learning rates",
    ),
)

GPU = QualityScale(
    name="gpu",
    divisor=1,
    tokenizer="bpe",
    vocab=None,
    seq_len=512,
    batch=16,
    steps=400,  # 3.3M tokens a run: about one pass over the stdlib corpus at a 20k BPE
    lr=1e-3,
    warmup=40,
    evals=8,
    eval_windows=64,
    tier="full",
    equal_flops=True,
    overfit_tokens=65536,
    overfit_steps=200,
    grad_steps=50,  # depth 48 at full width costs 8x the base per step: the GPU script's budget is minutes
    grad_batch=8,
    probe_seq=256,
    probe_max_params=5_000_000_000,
    train_max_params=2_000_000_000,
    device="cuda",
    threads=None,
    matmul_precision="high",  # TF32 tensor cores: the float32 runs fit the GPU script's budget
    notes=("full width, BPE vocabulary of the study's num_tokens, train length 512, TF32 matmuls",),
)

SCALES = {"cpu": CPU, "thorough": THOROUGH, "gpu": GPU}
LR_AXES = ("dim", "depth")  # swept keys whose arms need each their own learning rate to be compared fairly


def default_scale_name() -> str:
    """gpu when the measurements run on CUDA (present, and not turned off by ORCA_DEVICE=cpu), else cpu."""
    return "gpu" if measure_device().startswith("cuda") else "cpu"


def quality_scale(name: str | None = None) -> QualityScale:
    """The named scale, else $ORCA_QUALITY_SCALE, else the device's default."""
    name = name or os.environ.get("ORCA_QUALITY_SCALE") or default_scale_name()
    if name not in SCALES:
        raise ValueError(f"unknown quality scale '{name}': use one of {', '.join(SCALES)}")
    return SCALES[name]


def scale_for_tier(tier: str) -> str:
    """The scale `run --quality TIER` selects: standard = the device's default, thorough = the long CPU tier
    (on a GPU the full-shape scale already powers every test)."""
    if tier not in TIERS:
        raise ValueError(f"unknown quality tier '{tier}': use one of {', '.join(TIERS)}")
    default = default_scale_name()
    return "thorough" if tier == "thorough" and default == "cpu" else default


def scale_key() -> str:
    """What the stored results of the corpus-trained measurements are keyed by beyond the corpus: nothing
    for the device's default scale (so stores keep their keys), `|quality=<scale>` for another."""
    name = quality_scale().name
    return "" if name == default_scale_name() else f"|quality={name}"


@contextmanager
def torch_threads(scale: QualityScale) -> Iterator[None]:
    """Run with the scale's torch thread count, then restore it.

    One thread on the CPU scale: these models are too small to gain from two, and with other
    processes on the cores, OpenMP threads that wait on each other made a run 7x slower.
    """
    previous = torch.get_num_threads()
    if scale.threads and scale.device == "cpu":
        torch.set_num_threads(scale.threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextmanager
def matmul_precision(scale: QualityScale) -> Iterator[None]:
    """Train with the scale's float32 matmul precision (torch.set_float32_matmul_precision), then restore."""
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(scale.matmul_precision)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


BUDGET_SKIP = "time budget of the GPU run exhausted"


def past_deadline() -> bool:
    """True once $ORCA_DEADLINE (epoch seconds, set by scripts/gpu_measure.py) has passed: long
    measurements then stop starting sub-runs and record them as skipped, so a run cut short at its
    deadline keeps what it finished."""
    deadline = os.environ.get("ORCA_DEADLINE")
    return bool(deadline) and time.time() > float(deadline)


def tiny_scale(**changes: object) -> QualityScale:
    """A scale for tests: a few steps, tiny windows."""
    base = replace(
        CPU,
        name="tiny",
        steps=6,
        warmup=2,
        evals=2,
        eval_windows=4,
        batch=2,
        seq_len=16,
        overfit_tokens=64,
        overfit_steps=4,
        overfit_evals=2,
        extrap_tokens=256,
        overfit_eval_windows=4,
    )
    return replace(
        base, **{"grad_depths": (2, 4), "grad_steps": 2, "grad_batch": 2, "probe_seq": 12, **changes}
    )


def proxy_vocab(cfg: ModelConfig, scale: QualityScale) -> int:
    if scale.tokenizer == "byte":
        return 256
    return scale.vocab or cfg.num_tokens


MIN_HEAD_WIDTH = 16  # a proxy head narrower than this, with rotary on half of it, is degenerate
VOCAB_KEYS = ("tie_embedding", "num_tokens")  # changes whose effect scales with the vocabulary's share
VOCAB_MATCH = (
    1.5  # a proxy judges such a change when its vocabulary share is within this factor of the design's
)


def proxy_config(cfg: ModelConfig, scale: QualityScale) -> ModelConfig:
    """The variant at the scale's size: width and head width divided, everything else kept."""
    d = scale.divisor
    values = {
        ("attn_layers", "dim"): max(cfg.dim // d, 8),
        # heads no narrower than MIN_HEAD_WIDTH: rotary then turns at least 8 channels (half a head)
        ("attn_layers", "attn_dim_head"): max(cfg.dim_head // d, MIN_HEAD_WIDTH),
        ("wrapper", "num_tokens"): proxy_vocab(cfg, scale),
    }
    if d == 1 and "attn_dim_head" not in cfg.layers:
        del values[("attn_layers", "attn_dim_head")]
    return cfg.with_values(values)


def proxy_rule(scale: QualityScale) -> str:
    if scale.divisor == 1:
        return f"full shapes; vocab {'study num_tokens' if scale.vocab is None else scale.vocab} ({scale.tokenizer})"
    return (
        f"proxy: dim/{scale.divisor}; attn_dim_head/{scale.divisor}, at least {MIN_HEAD_WIDTH} (rotary on at least "
        f"{MIN_HEAD_WIDTH // 2} channels; where that floor binds, attention is wider relative to dim than in the "
        "design); same depth; heads; kv heads and flags; "
        f"vocab {256 if scale.tokenizer == 'byte' else scale.vocab} ({scale.tokenizer})"
    )


def describe(cfg: ModelConfig) -> str:
    return f"dim={cfg.dim},depth={cfg.depth},heads={cfg.heads},dim_head={cfg.dim_head},vocab={cfg.num_tokens}"
