"""One short, seeded training run of a (proxy) model: loss curves and per-layer gradient norms.

Next-token cross-entropy, AdamW, warmup-stable-decay (each run ends annealed and is read at its end),
gradients clipped at 1.0 (the norms recorded are the ones before clipping). Same seed, same machine ->
same curve.

Common random numbers: seed k fixes, for every arm trained on it, the order of the training windows
(one generator, seeded with k, draws them: `batch_digest` fingerprints what was drawn), the evaluation
windows (fixed, evenly spaced) and, with `init_from`, the initial values of the parameters the arm shares
with a reference model (the study's base proxy built from the same seed): each parameter of the same name
and shape starts from the reference's value, so arms differ only where their designs differ.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..build import build_model
from ..study.schema import ModelConfig
from .corpus import TokenData, fixed_windows, sample_windows
from .proxy import QualityScale, matmul_precision, torch_threads


@dataclass
class EvalPoint:
    step: int
    tokens: int  # training tokens seen so far
    train_loss: float  # on fixed windows of the training data, eval mode (nats/token)
    val_loss: float  # on fixed windows of the validation data


@dataclass
class RunResult:
    cfg: ModelConfig
    seed: int
    seq_len: int
    batch: int
    points: list[EvalPoint] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)  # training minibatch loss per step
    grad_norms: dict[int, list[float]] = field(default_factory=dict)  # step -> norm per block
    diverged_at: int | None = None  # first step whose loss was not finite
    model: nn.Module | None = None
    lr: float = 0.0  # the peak learning rate it trained at
    batch_digest: str = ""  # sha1 of the training windows drawn, in order: equal for arms of one seed
    shared: int = 0  # parameter tensors initialised from the reference model (init_from)

    @property
    def final(self) -> EvalPoint:
        return self.points[-1]


def lr_at(step: int, scale: QualityScale, total: int | None = None, peak: float | None = None) -> float:
    """Warmup-stable-decay (Hagele et al. 2024, arXiv 2405.18392): linear warm-up, constant, then a
    linear cooldown over the last `scale.cooldown` of the run's own `total` steps, so every run (each
    budget its own) ends annealed and is read at its end. `peak`: the rate (default the scale's)."""
    total = total or scale.steps
    warm = min(1.0, (step + 1) / scale.warmup)
    cool_steps = max(1, round(scale.cooldown * total)) if scale.cooldown else 0
    cool = 1.0 if step < total - cool_steps else (total - step) / (cool_steps + 1)
    return (peak or scale.lr) * min(warm, cool)


def _role(name: str) -> str:
    """A parameter's name without x-transformers' wrapper hops (ShiftTokens keeps its block in `.fn`), so a
    block's weights have one name with token shift on or off."""
    return name.replace(".fn.", ".")


@torch.no_grad()
def share_init(model: nn.Module, reference: nn.Module) -> int:
    """Copy into `model` the reference's value of every parameter of the same name (wrappers aside) and
    shape; the count."""
    theirs = {_role(n): q for n, q in reference.named_parameters()}
    n = 0
    for name, p in model.named_parameters():
        q = theirs.get(_role(name))
        if q is not None and q.shape == p.shape:
            p.copy_(q)
            n += 1
    return n


def lm_loss(model: nn.Module, windows: torch.Tensor) -> torch.Tensor:
    """Mean next-token loss of (B, T+1) windows: predict tokens 1..T from 0..T-1."""
    logits = model(windows[:, :-1])  # (B, T, V)
    return F.cross_entropy(logits.transpose(1, 2).float(), windows[:, 1:])


@torch.no_grad()
def eval_loss(model: nn.Module, windows: torch.Tensor, batch: int) -> float:
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    batch = max(batch, 32)  # no gradients to hold: bigger batches, fewer calls
    for i in range(0, len(windows), batch):
        chunk = windows[i : i + batch]
        total += lm_loss(model, chunk).item() * chunk.numel()
        count += chunk.numel()
    model.train(was_training)
    return total / count


def block_grad_norms(model: nn.Module) -> list[float]:
    """L2 norm of the gradient of each decoder block (attention + feed-forward), first to last."""
    layers = model.attn_layers.layers
    sq = [0.0] * (len(layers) // 2 + len(layers) % 2)
    for i, layer in enumerate(layers):
        for p in layer.parameters():
            if p.grad is not None:
                sq[i // 2] += p.grad.detach().float().pow(2).sum().item()
    return [math.sqrt(s) for s in sq]


def eval_schedule(steps: int, evals: int, extra: Iterable[int] = ()) -> set[int]:
    """Steps after which to evaluate: `evals` evenly spaced ones ending at `steps`, plus extras."""
    evenly = {round(steps * k / evals) for k in range(1, evals + 1)} if evals else set()
    return evenly | {s for s in extra if 0 < s <= steps}


def train_run(
    cfg: ModelConfig,
    data: TokenData,
    scale: QualityScale,
    seed: int,
    *,
    steps: int | None = None,
    batch: int | None = None,
    seq_len: int | None = None,
    train_tokens: torch.Tensor | None = None,
    evals: int | None = None,
    eval_steps: Iterable[int] = (),
    grad_steps: Iterable[int] = (),
    keep_model: bool = False,
    lr: float | None = None,
    init_from: ModelConfig | None = None,
    eval_windows: int | None = None,
) -> RunResult:
    """Train `cfg` from seed `seed`; evaluate `evals` times (evenly, the last at the end) and after
    each step in `eval_steps`.

    `grad_steps`: steps whose per-block gradient norms are kept (0 = at initialisation).
    `train_tokens`: a training stream other than the corpus's (the small overfitting subset).
    `lr`: the peak learning rate (default the scale's). `init_from`: the reference model whose initial
    values (same seed) the parameters it shares with `cfg` take. `eval_windows`: windows scored at each
    evaluation point (default the scale's).
    """
    steps, batch, seq_len = steps or scale.steps, batch or scale.batch, seq_len or scale.seq_len
    stream = data.train if train_tokens is None else train_tokens
    evals_at = eval_schedule(steps, scale.evals if evals is None else evals, eval_steps)
    grads = set(grad_steps)
    with torch_threads(scale), matmul_precision(scale):
        model = build_model(cfg, device=scale.device, seed=seed).train()
        shared = 0
        if init_from is not None and init_from != cfg:
            shared = share_init(model, build_model(init_from, device=scale.device, seed=seed))
        peak = lr or scale.lr
        opt = torch.optim.AdamW(model.parameters(), lr=peak, betas=(0.9, 0.95), weight_decay=0.01)
        gen = torch.Generator().manual_seed(seed)
        windows_n = eval_windows or scale.eval_windows
        train_eval = fixed_windows(stream, windows_n, seq_len + 1).to(scale.device)
        val_eval = fixed_windows(data.val, windows_n, seq_len + 1).to(scale.device)
        result = RunResult(cfg, seed, seq_len, batch, lr=peak, shared=shared)
        digest = hashlib.sha1()
        for step in range(steps):
            windows = sample_windows(stream, batch, seq_len + 1, gen)
            digest.update(windows.numpy().tobytes())
            windows = windows.to(scale.device)
            for group in opt.param_groups:
                group["lr"] = lr_at(step, scale, steps, peak)
            loss = lm_loss(model, windows)
            if not torch.isfinite(loss):
                result.diverged_at = step
                break
            result.losses.append(loss.item())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if step in grads:
                result.grad_norms[step] = block_grad_norms(model)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # non-finite gradient norms are caught by the loss check
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            if step + 1 in evals_at:
                train_loss, val_loss = eval_loss(model, train_eval, batch), eval_loss(model, val_eval, batch)
                result.points.append(EvalPoint(step + 1, (step + 1) * batch * seq_len, train_loss, val_loss))
    result.batch_digest = digest.hexdigest()
    if keep_model:
        result.model = model
    return result
