"""A count model of the corpus's tokens: the read criterion's reference for the training runs.

An order-k model predicts each token from the k-1 before it by counting them in the training split.
Witten-Bell interpolation (Witten and Bell 1991, IEEE Trans. Inf. Theory 37(4); the form of Chen and
Goodman 1999, section 2.4) mixes each order with the one below it, down to add-one unigrams:

    p_k(w | h) = (c(h, w) + T(h) * p_{k-1}(w | h')) / (c(h) + T(h))

c(h, w): how often w follows the k-1 tokens h; c(h): how often h is followed by anything; T(h): how many
distinct tokens follow h; h': h without its oldest token. The held-out loss is the mean of -ln p over the
validation split's tokens (nats/token), the unit of the training runs' losses.
"""

from __future__ import annotations

import numpy as np

READ_ORDER = 2  # the read criterion's count model: a bigram (it predicts from the previous token only)


def _keys(ids: np.ndarray, k: int, vocab: int) -> np.ndarray:
    """Each window of k tokens as one integer (base `vocab`), oldest token most significant: (n - k + 1,)."""
    out = np.zeros(len(ids) - k + 1, dtype=np.int64)
    for i in range(k):
        out = out * vocab + ids[i : len(ids) - k + 1 + i]
    return out


def _lookup(table: np.ndarray, counts: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """counts[i] where table[i] == key (table sorted and unique), else 0, for every key."""
    at = np.clip(np.searchsorted(table, keys), 0, max(len(table) - 1, 0))
    return np.where(table[at] == keys, counts[at], 0) if len(table) else np.zeros(len(keys), dtype=np.int64)


def ngram_loss(train: np.ndarray, val: np.ndarray, vocab: int, order: int = 2) -> float:
    """Held-out loss (nats/token) of the Witten-Bell interpolated order-`order` model of `train`, scored on
    the tokens of `val` that have `order - 1` tokens before them."""
    if vocab**order >= 2**62:
        raise ValueError(f"an order-{order} model of a {vocab}-token vocabulary does not fit int64 keys")
    train, val = np.asarray(train, dtype=np.int64), np.asarray(val, dtype=np.int64)
    unigram = np.bincount(train, minlength=vocab).astype(np.float64)
    target = val[order - 1 :]
    p = (unigram[target] + 1.0) / (unigram.sum() + vocab)  # add-one unigrams
    for k in range(2, order + 1):
        full, context = np.unique(_keys(train, k, vocab), return_counts=True)
        ctx_keys, ctx_counts = np.unique(full // vocab, return_counts=True)  # distinct followers T(h)
        ctx_total = np.bincount(np.searchsorted(ctx_keys, full // vocab), weights=context)  # c(h)
        v = _keys(val[order - k :], k, vocab)
        c_hw = _lookup(full, context, v)
        c_h = _lookup(ctx_keys, ctx_total, v // vocab)
        t_h = _lookup(ctx_keys, ctx_counts, v // vocab)
        seen = c_h > 0
        p = np.where(seen, (c_hw + t_h * p) / np.where(seen, c_h + t_h, 1), p)
    return float(-np.log(p).mean())
