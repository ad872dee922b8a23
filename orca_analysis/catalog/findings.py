"""The findings the report's summary states (report/findings.py computes them) and a remedy answers
(remedies/catalogue.yaml names them): finding id -> the declared metric it is about."""

from __future__ import annotations

FINDINGS = {
    "cached-decoding": "kv_cache",
    "alibi-dense-bias": "alibi_share_of_peak",
    "plain-tools": "plain_missed_share",
    "gradient-health": "grad_norm_first_over_last",
    "embedding-share": "embedding_and_logits_share",
    "heads-widen-attention": "params",
}
