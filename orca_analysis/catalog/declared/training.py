"""The metrics of `training` (measurements/training): declared here, in the catalogue, below every layer
that names them."""

from __future__ import annotations

from ..metrics import Metric
from ..specs import Spec

M, D = "measured", "derived"
NATS = "nats/token"
CURVE = (
    "seed",
    "step",
    "tokens",
    "flops",
)  # flops: training FLOPs spent so far (train_flops_per_token x tokens)


def _loss(name: str, what: str, labels: tuple[str, ...], method: str = M, **kw) -> Metric:
    return Metric(name, NATS, what, (method,), labels, samples="seed", **kw)


METRICS = (
    _loss("train_loss", "loss on fixed training windows at an evaluation point of the run", CURVE),
    _loss(
        "val_loss",
        "loss on fixed validation windows at an evaluation point of the run",
        CURVE,
        direction="lower",
    ),
    _loss(
        "val_loss_final",
        "validation loss at the end of the run: the equal token budget",
        ("seed", "tokens", "flops"),
        direction="lower",
    ),
    _loss(
        "val_loss_equal_flops",
        "validation loss of a run of the study's common FLOP budget (the cheapest "
        "variant's full run), annealed at its own end, at the arm's learning rate (`lr`)",
        ("seed", "flops", "step", "tokens", "lr"),
        direction="lower",
    ),
    _loss(
        "val_loss_tuned",
        "validation loss at the end of the equal-token budget, a width or depth arm at its "
        "own best learning rate (`lr`, chosen on the first seed: `lr_chosen`)",
        ("seed", "lr", "tokens"),
        direction="lower",
    ),
    _loss(
        "lr_sweep_val_loss",
        "validation loss at the end of the equal-token budget on the first seed, at each "
        "learning rate of the arm's sweep",
        ("lr", "seed"),
    ),
    Metric(
        "lr_chosen",
        "learning rate",
        "the peak learning rate of the lowest lr_sweep_val_loss among the candidates",
        (M,),
        ("candidates",),
    ),
    _loss("overfit_train_loss", "training loss while training on a deliberately small subset", CURVE),
    _loss("overfit_val_loss", "validation loss while training on a deliberately small subset", CURVE),
    _loss(
        "overfit_gap",
        "overfit_val_loss - overfit_train_loss at one evaluation point",
        ("seed", "step", "tokens", "subset_tokens", "epochs"),
        D,
    ),
    _loss(
        "head_ablation_single_increase",
        "validation-loss rise when one head of one layer is silenced (first seed)",
        ("layer", "head", "seed"),
    ),
    _loss(
        "head_ablation_quarter_increase",
        "validation-loss rise when a random quarter of every layer's heads "
        "(heads_off: silenced/heads) are silenced at once, one random draw",
        ("heads_off", "draw", "seed"),
    ),
    _loss(
        "head_ablation_quarter_mean",
        "head_ablation_quarter_increase, mean over the draws",
        ("seed",),
        D,
        direction="lower",
    ),
    _loss(
        "head_ablation_single_mean",
        "head_ablation_single_increase, mean over every (layer, head)",
        ("seed",),
        D,
    ),
    _loss(
        "head_ablation_single_max",
        "head_ablation_single_increase, max over every (layer, head)",
        ("seed",),
        D,
    ),
    _loss(
        "head_ablation_base_loss", "the unmasked model's loss on the ablations' validation windows", ("seed",)
    ),
    Metric(
        "proxy_params",
        "params",
        "parameters of the model trained (the proxy at CPU scale); the note says the "
        "training set-up and the proxy rule",
        ("counter",),
        ("dim", "depth", "heads", "dim_head", "vocab"),
    ),
    Metric(
        "proxy_embedding_share",
        "ratio",
        "the token embedding and logits tables' share of the parameters of "
        "the model trained (the vocabulary-bound remedies compare it with the design's)",
        ("counter",),
    ),
    Metric(
        "ngram_val_loss",
        NATS,
        "held-out loss of a count model of `order` tokens (order 2: a bigram) fitted "
        "to the training split, Witten-Bell interpolated down to add-one unigrams (Witten and Bell 1991): the "
        "read criterion's reference, a model that predicts from the previous order-1 tokens only",
        ("count_model",),
        ("order", "tokenizer"),
        direction="lower",
    ),
    Metric(
        "train_flops_per_token",
        "FLOP/token",
        "training FLOPs per token of the model trained; the note says the formula",
        ("closed_form",),
    ),
    Metric(
        "corpus_tokens",
        "tokens",
        "tokens of the corpus (train + validation) in the scale's tokeniser; the note "
        "says its bytes and split",
        ("counter",),
        ("corpus", "sha256", "tokenizer"),
    ),
    Metric(
        "grad_norm",
        "L2 norm",
        "gradient L2 norm of one decoder block (before clipping), base proxy at a depth "
        "and norm layout (pre_norm, post_norm, deepnorm); step 0 = at initialisation",
        (M,),
        ("norm", "depth", "step", "block", "seed"),
    ),
    Metric(
        "grad_norm_first_over_last",
        "ratio",
        "first block's gradient norm / the last block's (every depth "
        "on the first seed, the deepest on every seed)",
        (D,),
        ("norm", "depth", "step", "seed"),
    ),
    Metric(
        "grad_health_train_loss",
        NATS,
        "mean minibatch loss of the last 5 steps of the gradient-health run; "
        "the note says its steps and batch",
        (M,),
        ("norm", "depth", "seed"),
    ),
    _loss(
        "extrapolation_val_loss",
        "validation loss at eval_len of the base proxy trained at train_len with one "
        "positional scheme as its only position information (pos: alibi, xpos; the positive controls abs, "
        "learned absolute positions, and none), token shift off; the same tokens at every length",
        ("pos", "train_len", "eval_len", "seed"),
    ),
    _loss(
        "attn_kv_val_loss",
        "final validation loss of the base proxy with one KV head (mqa) or one per query head (mha)",
        ("attn", "seed", "tokens"),
    ),
    Metric(
        "kv_cache_bytes",
        "bytes",
        "KV cache holding `context` tokens for `cache_batch` sequences "
        "(formulas/memory.py), in the study's dtype, of the full base (model full) or its proxy (model proxy)",
        ("closed_form",),
        ("attn", "model", "kv_heads", "context", "cache_batch"),
        direction="lower",
    ),
)

# each metric bound to its name in capitals, in METRICS's order (checked when the catalogue is imported)
(
    TRAIN_LOSS,
    VAL_LOSS,
    VAL_LOSS_FINAL,
    VAL_LOSS_EQUAL_FLOPS,
    VAL_LOSS_TUNED,
    LR_SWEEP_VAL_LOSS,
    LR_CHOSEN,
    OVERFIT_TRAIN_LOSS,
    OVERFIT_VAL_LOSS,
    OVERFIT_GAP,
    HEAD_ABLATION_SINGLE_INCREASE,
    HEAD_ABLATION_QUARTER_INCREASE,
    HEAD_ABLATION_QUARTER_MEAN,
    HEAD_ABLATION_SINGLE_MEAN,
    HEAD_ABLATION_SINGLE_MAX,
    HEAD_ABLATION_BASE_LOSS,
    PROXY_PARAMS,
    PROXY_EMBEDDING_SHARE,
    NGRAM_VAL_LOSS,
    TRAIN_FLOPS_PER_TOKEN,
    CORPUS_TOKENS,
    GRAD_NORM,
    GRAD_NORM_FIRST_OVER_LAST,
    GRAD_HEALTH_TRAIN_LOSS,
    EXTRAPOLATION_VAL_LOSS,
    ATTN_KV_VAL_LOSS,
    KV_CACHE_BYTES,
) = METRICS

# 2: head ablation, matmul precision; 3: three seeds; 4: annealed budgets, heads >= 16 wide; 5: gradient
# health over the seeds at the deepest depth; 6: quality tiers, 256 steps of 16, common initial values,
# extrapolation controls, learning-rate sweeps, the read criterion's reference

# by_role: a remedy's variant gets the seeded loss runs only (measurements/training/run.py remedy_runs)
SPEC = Spec("training", version=6, uses_corpus=True, by_role=True)
