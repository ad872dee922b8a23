"""DeepNorm, realised on x-transformers 2.x (which rejects the `deepnorm` keyword).

DeepNet (Wang et al. 2022, arXiv 2203.00555, Fig. 2 and Table 1), decoder-only, M layers:
    x_{l+1} = LN(alpha * x_l + G(x_l)),  alpha = (2M)^(1/4)
    init: xavier_normal_(W, gain=beta) for W in {feed-forward, value proj, output proj},
          xavier_normal_(W, gain=1) for the query and key projections,  beta = (8M)^(-1/4)
In x-transformers terms: `pre_norm=False` gives x = LN(branch + residual) per sublayer, and
`scale_residual_constant=alpha` multiplies the residual (skip) by alpha inside `Residual`.
Neither adds a parameter; post-norm removes the final norm that pre-norm models carry.
"""

from __future__ import annotations

from torch import nn

BETA_GAIN_NAMES = (".ff.", ".to_v", ".to_out")  # module-name fragments that get gain beta


def deepnorm_alpha(num_layers: int) -> float:
    """Residual (skip) scale: (2M)^(1/4), M = number of decoder layers."""
    return (2 * num_layers) ** 0.25


def deepnorm_beta(num_layers: int) -> float:
    """Init gain for feed-forward, value and output projections: (8M)^(-1/4)."""
    return (8 * num_layers) ** -0.25


def deepnorm_layer_kwargs(num_layers: int) -> dict:
    """Decoder keyword arguments that give DeepNorm's post-LN, alpha-scaled residual."""
    return {"pre_norm": False, "scale_residual_constant": deepnorm_alpha(num_layers)}


def deepnorm_init_(attn_layers: nn.Module, num_layers: int) -> list[str]:
    """Re-initialise every Linear of the decoder as DeepNet prescribes; returns the beta-gain names."""
    beta = deepnorm_beta(num_layers)
    scaled = []
    for name, module in attn_layers.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        full = f".{name}"
        gain = beta if any(frag in full for frag in BETA_GAIN_NAMES) else 1.0
        nn.init.xavier_normal_(module.weight, gain=gain)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
        if gain != 1.0:
            scaled.append(name)
    return scaled
