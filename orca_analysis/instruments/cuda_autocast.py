"""CUDA's autocast on CPU tensors: what `torch.autocast("cuda", torch.bfloat16)` casts, emulated, so a training
step can be walked on the no-allocation build without a GPU.

Why emulate: a fake CUDA tensor cannot enter autograd on a CPU build of torch (AccumulateGrad asks for the CUDA
device guard, which is not linked: the process aborts), so the walk stays on CPU tensors, and CPU autocast's
rules differ from CUDA's. In torch 2.13, layer_norm, rms_norm, softmax, log_softmax, sum, cumsum, exp, pow and
rsqrt run in float32 on CUDA and as given on CPU; cat, stack and cross_entropy_loss have rules on CPU only.

Inside `cuda_autocast`, the AutocastCPU key takes CUDA's rule for every operator that has an AutocastCUDA
kernel and no AutocastCPU one, and falls through for every operator that has a CPU rule only. The operators
that have both keep CPU's kernel, whose rule is CUDA's (linear, matmul, mm, bmm, addmm, baddbmm and SDPA run
in lower precision; the losses run in float32). The rules come from torch's aten/src/ATen/autocast_mode.h:
AT_FORALL_LOWER_PRECISION_FP, AT_FORALL_FP32, AT_FORALL_FP32_SET_OPT_DTYPE,
AT_FORALL_DIFFERENT_REDISPATCH_SIGNATURE and AT_FORALL_PROMOTE.

One difference is left: CUDA-only lower-precision operators (einsum, mv, addmv, addr, chain_matmul,
linalg_multi_dot) cast here without autocast's cache of float32 weights. tests/test_gpu_memory.py checks each
operator's output dtype in a forward against the real AutocastCUDA kernels, run on fake CUDA tensors (a
forward without autograd needs no device guard).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch.utils._pytree import tree_map_only

KEY = "AutocastCPU"
_EXCLUDE = torch._C.DispatchKeySet(torch._C.DispatchKey.AutocastCPU)

# CUDA's rule for the operators AutocastCUDA has and AutocastCPU has not (torch 2.13), by policy.
LOWER = (
    "einsum",
    "mv",
    "addmv",
    "addr",
    "chain_matmul",
    "linalg_multi_dot",
    "_scaled_dot_product_flash_attention",
)
FP32 = (
    "acos",
    "asin",
    "cosh",
    "erfinv",
    "exp",
    "expm1",
    "log",
    "log10",
    "log2",
    "log1p",
    "reciprocal",
    "rsqrt",
    "sinh",
    "tan",
    "pow.Tensor_Scalar",
    "pow.Tensor_Tensor",
    "pow.Scalar",
    "softplus",
    "layer_norm",
    "native_layer_norm",
    "rms_norm",
    "group_norm",
    "frobenius_norm.dim",
    "nuclear_norm",
    "nuclear_norm.dim",
    "cosine_similarity",
    "dist",
    "pdist",
    "renorm",
    "logsumexp",
)
FP32_SET_OPT_DTYPE = (
    "softmax.int",
    "log_softmax.int",
    "cumprod",
    "cumsum",
    "linalg_vector_norm",
    "linalg_matrix_norm",
    "linalg_matrix_norm.str_ord",
    "sum",
    "sum.dim_IntList",
)
FP32_APPEND_DTYPE = {"norm.Scalar": "norm.ScalarOpt_dtype", "norm.ScalarOpt_dim": "norm.ScalarOpt_dim_dtype"}
PROMOTE = (
    "addcdiv",
    "addcmul",
    "atan2",
    "bilinear",
    "cross",
    "dot",
    "vdot",
    "index_put",
    "scatter_add",
    "tensordot",
)


def _op(name: str) -> torch._ops.OpOverload:
    packet, _, overload = name.partition(".")
    return getattr(getattr(torch.ops.aten, packet), overload or "default")


def _eligible(t: torch.Tensor) -> bool:
    """autocast_mode.h is_eligible: a floating tensor, not double."""
    return t.is_floating_point() and t.dtype != torch.float64


def _cast(dtype: torch.dtype) -> Callable[[Any], Any]:
    return lambda tree: tree_map_only(torch.Tensor, lambda t: t.to(dtype) if _eligible(t) else t, tree)


def _kernel(op: torch._ops.OpOverload, policy: str, lower: torch.dtype) -> Callable[..., Any]:
    """One operator's rule, as autocast_mode.h's WrapFunction_ for that CastPolicy applies it."""
    schema = [a.name for a in op._schema.arguments]

    def call(*args: Any, **kwargs: Any) -> Any:
        with torch._C._ExcludeDispatchKeyGuard(_EXCLUDE):
            if policy == "lower_precision_fp":
                args, kwargs = _cast(lower)((args, kwargs))
            elif policy == "fp32":
                args, kwargs = _cast(torch.float32)((args, kwargs))
            elif (
                policy == "fp32_set_opt_dtype"
            ):  # set the output dtype if the caller did not, first arg eligible
                i = schema.index("dtype")
                given = args[i] if len(args) > i else kwargs.get("dtype")
                if given is None and _eligible(args[0]):
                    args, kwargs = args[:i], {**kwargs, "dtype": torch.float32}
            elif policy == "promote":
                floats = [t for t in tree_flatten_tensors((args, kwargs)) if _eligible(t)]
                to = torch.float32 if any(t.dtype == torch.float32 for t in floats) else lower
                args, kwargs = _cast(to)((args, kwargs))
            return op(*args, **kwargs)

    return call


def _append_dtype(op: torch._ops.OpOverload, to: torch._ops.OpOverload) -> Callable[..., Any]:
    """fp32_append_dtype: redispatch to the overload with an output dtype, float32 if the first arg is eligible."""

    def call(*args: Any, **kwargs: Any) -> Any:
        with torch._C._ExcludeDispatchKeyGuard(_EXCLUDE):
            return to(*args, **kwargs, dtype=torch.float32 if _eligible(args[0]) else args[0].dtype)

    return call


def tree_flatten_tensors(tree: Any) -> list[torch.Tensor]:
    found: list[torch.Tensor] = []
    tree_map_only(torch.Tensor, found.append, tree)
    return found


def cpu_only_rules() -> list[str]:
    """Operators with an AutocastCPU kernel and no AutocastCUDA one: CPU's rules CUDA does not have."""
    has = torch._C._dispatch_has_kernel_for_dispatch_key
    return sorted(
        n.removeprefix("aten::")
        for n in torch._C._dispatch_get_all_op_names()
        if n.startswith("aten::") and has(n, KEY) and not has(n, "AutocastCUDA")
    )


@contextmanager
def cuda_autocast(dtype: torch.dtype = torch.bfloat16) -> Iterator[None]:
    """CPU autocast to `dtype` with CUDA's rules (module docstring); the registrations go at exit."""
    lib = torch.library.Library("aten", "IMPL")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*Overriding a previously registered kernel.*")
            warnings.filterwarnings("ignore", message=".*Warning only once for all operators.*")
            for names, policy in (
                (LOWER, "lower_precision_fp"),
                (FP32, "fp32"),
                (FP32_SET_OPT_DTYPE, "fp32_set_opt_dtype"),
                (PROMOTE, "promote"),
            ):
                for name in names:
                    lib.impl(name, _kernel(_op(name), policy, dtype), KEY)
            for name, to in FP32_APPEND_DTYPE.items():
                lib.impl(name, _append_dtype(_op(name), _op(to)), KEY)
            for name in cpu_only_rules():
                lib.impl(name, torch.library.fallthrough_kernel, KEY)
        with torch.autocast("cpu", dtype=dtype):
            yield
    finally:
        lib._destroy()
