"""The findings the report's summary states (report/findings.py computes them) and a remedy answers
(remedies/catalogue.yaml names them): finding id -> the declared metric it is about."""

from __future__ import annotations

from .declared.flops import PLAIN_MISSED_SHARE
from .declared.memory import ALIBI_SHARE_OF_PEAK
from .declared.params import EMBEDDING_AND_LOGITS_SHARE, PARAMS
from .declared.probes import KV_CACHE
from .declared.training import GRAD_NORM_FIRST_OVER_LAST

FINDINGS = {
    "cached-decoding": KV_CACHE,
    "alibi-dense-bias": ALIBI_SHARE_OF_PEAK,
    "plain-tools": PLAIN_MISSED_SHARE,
    "gradient-health": GRAD_NORM_FIRST_OVER_LAST,
    "embedding-share": EMBEDDING_AND_LOGITS_SHARE,
    "heads-widen-attention": PARAMS,
}
