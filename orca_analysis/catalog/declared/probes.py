"""The metrics of `probes` (measurements/probes): declared here, in the catalogue, below every layer
that names them."""

from __future__ import annotations

from ..metrics import Metric
from ..specs import Spec

M = "measured"
_CASE = (
    "label case: as_built (the variant), without=<flag> / only=<flag>[+<flag>] (the base's attribution "
    "cases), or the forced sdpa backend"
)
_PROBES = {
    "causality": "changing token t+1 (t = 0, T/2, T-2) leaves every logit at positions <= t unchanged",
    "kv_cache": "cached single-token decoding of the second half gives the full forward's logits",
    "kernel_agreement": "the flash path, with sdpa forced to one backend (or x-transformers' default), gives the "
    "logits of x-transformers' own attention path on the same weights",
}
PROBES = ("causality", "kv_cache", "kernel_agreement")  # the probes whose outcome is pass (1) or fail (0)
METRICS = (
    *(
        m
        for probe, what in _PROBES.items()
        for m in (
            Metric(
                probe,
                "pass",
                f"1 when {what}, within the tolerance; {_CASE}; label outcome: pass, fail, crash (the probed "
                "call raised: its exception in the note) or n/a (skipped)",
                (M,),
                ("case", "outcome"),
                direction="higher",
                cross_check=f"{probe}_max_diff against {probe}_tolerance",
            ),
            Metric(
                f"{probe}_max_diff", "logit", f"max |logit difference| of the {probe} probe", (M,), ("case",)
            ),
            Metric(
                f"{probe}_tolerance",
                "logit",
                f"what the {probe} probe allows: torch.testing's atol + rtol * "
                "max|reference| for the dtype (+ twice the reference's own rounding in a reduced dtype)",
                (M,),
                ("case",),
            ),
        )
    ),
    Metric(
        "causality_downstream",
        "logit",
        "min over t of the max |logit change| after position t when token "
        "t+1 changes (0: the probe cannot see anything)",
        (M,),
        ("case",),
    ),
    Metric(
        "causality_sensitive",
        "pass",
        "1 when causality_downstream exceeds the tolerance: the causality probe can see a change at all",
        (M,),
        ("case",),
    ),
)

# each metric bound to its name in capitals, in METRICS's order (checked when the catalogue is imported)
(
    CAUSALITY,
    CAUSALITY_MAX_DIFF,
    CAUSALITY_TOLERANCE,
    KV_CACHE,
    KV_CACHE_MAX_DIFF,
    KV_CACHE_TOLERANCE,
    KERNEL_AGREEMENT,
    KERNEL_AGREEMENT_MAX_DIFF,
    KERNEL_AGREEMENT_TOLERANCE,
    CAUSALITY_DOWNSTREAM,
    CAUSALITY_SENSITIVE,
) = METRICS


# a probe's verdict metric -> the metrics of its measured difference and its tolerance
MAX_DIFF = {
    CAUSALITY: CAUSALITY_MAX_DIFF,
    KV_CACHE: KV_CACHE_MAX_DIFF,
    KERNEL_AGREEMENT: KERNEL_AGREEMENT_MAX_DIFF,
}
TOLERANCE = {
    CAUSALITY: CAUSALITY_TOLERANCE,
    KV_CACHE: KV_CACHE_TOLERANCE,
    KERNEL_AGREEMENT: KERNEL_AGREEMENT_TOLERANCE,
}


def probe_key(probe: str, case: str) -> str:
    """A probe's result at one case, as a remedy's before/after table names it (built and read here alone): the
    probe alone at its plain case (as built; `default` where the case is a setting, not a kernel), else
    probe[case]."""
    plain = case == "as_built" or (case == "default" and probe != KERNEL_AGREEMENT)
    return str(probe) if plain else f"{probe}[{case}]"


# 2: the outcome label (pass, fail, crash), read where a crash was told from a failure by its note
SPEC = Spec("probes", version=2)
