"""Head ablation: how much the validation loss rises when attention heads are silenced.

After each of a variant's training runs, heads are masked at evaluation time by zeroing their
slice of the merged head outputs, just before the attention's output projection (Michel, Levy
and Neubig 2019, "Are Sixteen Heads Really Better than One?", arXiv 1905.10650, section 2.2).
  single: one head of one layer at a time (every layer, every head), first seed only, on the first
    SINGLE_WINDOWS validation windows (it costs depth x heads evaluations): `head_ablation_increase` per
    (layer, head), over the unmasked loss on those windows, and its mean and max over the model
    (`head_ablation_single_mean`, `_max`);
  quarter: a quarter of the heads of every layer at once (at least one), `QUARTER_DRAWS` random
    draws: `head_ablation_quarter_mean`. Silencing the same fraction makes variants with
    different head counts comparable: a model whose heads share the work loses less.
Increases are in nats/token over the unmasked model's loss on the same validation windows.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn
from x_transformers.x_transformers import Attention

from .trainer import eval_loss

QUARTER_DRAWS = 4  # random quarter-of-the-heads masks per run
SINGLE_WINDOWS = 32  # validation windows each single-head ablation is scored on


def attention_modules(model: nn.Module) -> list[Attention]:
    """The self-attention blocks, first layer to last."""
    return [m for m in model.modules() if isinstance(m, Attention)]


@contextmanager
def heads_masked(attn: Sequence[Attention], off: Sequence[Sequence[int]]) -> Iterator[None]:
    """Zero heads `off[i]` of layer i's attention output while the context is open."""

    def hook_for(heads: int, silenced: Sequence[int]):
        keep = torch.ones(heads)
        keep[list(silenced)] = 0.0

        def hook(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
            (x, *rest) = args  # (b, n, heads * dim_head): merged head outputs
            b, n, width = x.shape
            heads_out = x.view(b, n, heads, width // heads) * keep.to(x)[:, None]
            return (heads_out.view(b, n, width), *rest)

        return hook

    handles = [
        a.to_out.register_forward_pre_hook(hook_for(a.heads, s)) for a, s in zip(attn, off, strict=True) if s
    ]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@dataclass
class HeadAblation:
    """One trained model's ablations: the unmasked loss and each masking's rise over it (nats/token)."""

    base_loss: float
    heads: int
    single: list[tuple[int, int, float]] = field(default_factory=list)  # (layer, head, rise)
    quarter: list[float] = field(default_factory=list)  # one rise per random draw

    @property
    def heads_off(self) -> int:
        return max(1, self.heads // 4)


def head_ablation(
    model: nn.Module, val_windows: torch.Tensor, batch: int, seed: int, single: bool = True
) -> HeadAblation:
    """Quarter-of-heads (and, if `single`, single-head) ablations of one trained model."""
    attn = attention_modules(model)
    depth, heads = len(attn), attn[0].heads
    out = HeadAblation(eval_loss(model, val_windows, batch), heads)
    few = val_windows[:SINGLE_WINDOWS]
    unmasked = eval_loss(model, few, batch) if single else 0.0
    for layer in range(depth if single else 0):
        for head in range(heads):
            off = [[head] if i == layer else [] for i in range(depth)]
            with heads_masked(attn, off):
                out.single.append((layer, head, eval_loss(model, few, batch) - unmasked))
    gen = torch.Generator().manual_seed(seed)
    for _ in range(QUARTER_DRAWS):
        off = [torch.randperm(heads, generator=gen)[: out.heads_off].tolist() for _ in range(depth)]
        with heads_masked(attn, off):
            out.quarter.append(eval_loss(model, val_windows, batch) - out.base_loss)
    return out
