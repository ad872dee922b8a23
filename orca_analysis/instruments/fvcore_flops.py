"""fvcore's FlopCountAnalysis, as shipped ("plain") and completed to this project's convention.

fvcore traces the model with torch.jit on real weights (the forward really runs) and counts one
FLOP per multiply-add. Plain, on an x-transformers decoder it reports
`aten::scaled_dot_product_attention` as unsupported (attention left out), counts layer norms
(5 per element) and counts rotary's outer product `einsum('i,j->ij')` as a contraction.
Completed ("fvcore"), every handle counts 2 FLOPs per multiply-add and counts what the operator
counter counts (instruments/flop_counter.py): matrix products, SDPA (dense, plus the bias add), the
ALiBi element-wise work; norms and outer products count 0. The trace loses the ALiBi scope
(x-transformers calls `forward_custom_pos` directly, not through the module), so ALiBi ops are
found from the Python stack the tracer records with each node, by the same functions.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from math import prod
from typing import Any

import torch
from fvcore.nn import FlopCountAnalysis, flop_count_table
from fvcore.nn.flop_count import _DEFAULT_SUPPORTED_OPS
from fvcore.nn.jit_handles import get_shape
from torch.utils import flop_counter as tfc
from x_transformers import x_transformers as xt
from x_transformers.attend import Attend

from .flop_counter import ALIBI_FRAMES

MATMULS = ("aten::addmm", "aten::bmm", "aten::matmul", "aten::mm", "aten::linear")
NOT_COUNTED = (
    "aten::batch_norm",
    "aten::group_norm",
    "aten::layer_norm",
    "aten::instance_norm",
    "aten::upsample_nearest2d",
    "aten::upsample_bilinear2d",
    "aten::adaptive_avg_pool2d",
    "aten::grid_sampler",
)
_STACK_LINE = re.compile(r"^(.*)\((\d+)\): (\S+)$")
# (file, first line, last line) -> fvcore op names counted there, from the counter's ALIBI_FRAMES
_ALIBI_SPANS = {
    (c.co_filename, c.co_firstlineno, max(ln for _, _, ln in c.co_lines() if ln)): {
        "aten::" + op.__name__ for op in ops
    }
    for c, ops in ALIBI_FRAMES.items()
}


def _zero(inputs: list[Any], outputs: list[Any]) -> int:
    return 0  # element-wise work the counter does not count either


def _times_two(handle):
    def counted(inputs: list[Any], outputs: list[Any]) -> int:
        return 2 * int(handle(inputs, outputs))  # fvcore counts a multiply-add as one

    return counted


def _einsum(inputs: list[Any], outputs: list[Any]) -> int:
    eq = inputs[0].toIValue().replace(" ", "")
    lhs, out = eq.split("->") if "->" in eq else (eq, None)
    if out is None or "." in eq:
        return _times_two(_DEFAULT_SUPPORTED_OPS["aten::einsum"])(inputs, outputs)
    if set(lhs.replace(",", "")) <= set(out):
        return 0  # no summed index: an outer or element-wise product, as the counter sees it (mul)
    shapes = [get_shape(v) for v in inputs[1].node().inputs()]
    sizes = {
        c: n
        for term, shape in zip(lhs.split(","), shapes, strict=True)
        for c, n in zip(term, shape, strict=True)
    }
    return 2 * prod(
        sizes.values()
    )  # one multiply-add per point of the index space (fvcore's numpy estimate rounds)


def _sdpa(inputs: list[Any], outputs: list[Any]) -> Counter:
    # aten::scaled_dot_product_attention(q (b,h,n_q,d), k (b,h_kv,n_k,d), v, attn_mask, dropout, is_causal, ...)
    q, k, v = (tuple(get_shape(x)) for x in inputs[:3])
    has_mask = inputs[3].type().kind() != "NoneType"
    mask_add = q[0] * q[1] * q[2] * k[2] if has_mask else 0  # scores + bias: dense, as the kernel runs
    return Counter(
        {"scaled_dot_product_attention": tfc.sdpa_flop_count(q, k, v), "alibi.score_add": mask_add}
    )


def _alibi_op(kind: str):
    def counted(inputs: list[Any], outputs: list[Any]) -> Counter:
        for line in outputs[0].node().sourceRange().splitlines():  # innermost frame first
            m = _STACK_LINE.match(line.strip())
            if not m:
                continue
            path, lineno = m.group(1), int(m.group(2))
            span = next((s for s in _ALIBI_SPANS if s[0] == path and s[1] <= lineno <= s[2]), None)
            if span is not None:
                shape = (
                    get_shape(outputs[0]) or []
                )  # 0-d: traced size arithmetic, a Python int for the counter
                n = prod(shape) if shape and kind in _ALIBI_SPANS[span] else 0
                return Counter({f"alibi.{kind[6:]}": n})
        return Counter()

    return counted


@dataclass
class FvcoreResult:
    total: int  # completed: FLOPs at 2 per multiply-add, the counter's convention
    components: dict[str, int]
    table: str  # flop_count_table of the completed analysis
    plain_total: int  # what fvcore as shipped reports for the same trace (1 per multiply-add, norms)
    plain_unsupported: dict[str, int]  # operators it skips that the completed analysis counts


def _completed_handles(plain: Counter, skipped: Counter) -> dict[str, Any]:
    ours: dict[str, Any] = {k: _times_two(_DEFAULT_SUPPORTED_OPS[k]) for k in MATMULS}
    ours.update(dict.fromkeys(NOT_COUNTED, _zero))
    ours.update({"aten::einsum": _einsum, "aten::scaled_dot_product_attention": _sdpa})
    ours.update({k: _alibi_op(k) for k in {n for ops in _ALIBI_SPANS.values() for n in ops}})
    ours.update({k: _zero for k in _DEFAULT_SUPPORTED_OPS if k not in ours})

    def both(name: str, handle: Any) -> Any:
        def counted(inputs: list[Any], outputs: list[Any]) -> Any:
            ours = handle(inputs, outputs)
            if name in _DEFAULT_SUPPORTED_OPS:  # plain fvcore's number, from the same trace
                plain[name] += _DEFAULT_SUPPORTED_OPS[name](inputs, outputs)
            elif (sum(ours.values()) if isinstance(ours, Counter) else ours) > 0:
                skipped[name] += 1  # plain fvcore reports it unsupported: counts nothing
            return ours

        return counted

    return {name: both(name, h) for name, h in ours.items()}


def run_fvcore(model: torch.nn.Module, tokens: torch.Tensor) -> FvcoreResult:
    """One trace of `model(tokens)` on real weights, read two ways: completed and as shipped."""
    plain, skipped = Counter(), Counter()
    fa = analysis(model, tokens, completed=False).set_op_handle(**_completed_handles(plain, skipped))
    total = int(fa.total())
    return FvcoreResult(total, by_component(model, fa), table(fa), int(sum(plain.values())), dict(skipped))


def analysis(model: torch.nn.Module, tokens: torch.Tensor, completed: bool) -> FlopCountAnalysis:
    """FlopCountAnalysis of `model(tokens)`: plain as shipped, or with this project's handles."""
    fa = FlopCountAnalysis(model, tokens)
    fa.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    return fa.set_op_handle(**_completed_handles(Counter(), Counter())) if completed else fa


def by_component(model: torch.nn.Module, fa: FlopCountAnalysis) -> dict[str, int]:
    """A completed analysis split as the counter splits it; `other` is what no component claims."""
    by_mod, by_op = fa.by_module(), fa.by_module_and_operator()
    parts = Counter()
    for name, mod in model.named_modules():
        if isinstance(mod, xt.Attention):
            for child in ("to_q", "to_k", "to_v", "to_out"):
                parts[child[3:] + "_proj"] += by_mod.get(f"{name}.{child}", 0)
        elif isinstance(mod, Attend):
            parts["attention_core"] += sum(
                v for op, v in by_op.get(name, {}).items() if not op.startswith("alibi.")
            )
        elif isinstance(mod, xt.FeedForward):
            parts["feedforward"] += by_mod.get(name, 0)
    parts["logits"] = by_mod.get("to_logits", 0)
    parts["alibi"] = sum(v for op, v in fa.by_operator().items() if op.startswith("alibi."))
    parts = {k: int(v) for k, v in parts.items()}
    return {**parts, "other": int(fa.total()) - sum(parts.values())}


def table(fa: FlopCountAnalysis, max_depth: int = 3) -> str:
    """fvcore's own per-module table (its #flops column in this analysis' units)."""
    return flop_count_table(fa, max_depth=max_depth, show_param_shapes=False)
