"""Training ablations: what more dim, depth or heads buy, and whether each flag does its job.

Per sweep variant (a proxy at CPU scale, see instruments/proxy.py), over the scale's seeds (one record
per seed, label `seed`; every arm of one seed shares its data order, evaluation windows and the initial
values of the parameters it shares with the base proxy: instruments/trainer.py):
  train_loss / val_loss curves (labels seed, step, tokens, flops) at an equal token budget;
  val_loss_final: the loss at the end of that budget, at the scale's learning rate (a width or depth
    arm's only where the tier also sweeps its learning rate: arms.py);
  val_loss_tuned, lr_sweep_val_loss, lr_chosen: a width or depth arm at its own best learning rate;
  val_loss_equal_flops: the loss when the variant has spent the study's common FLOP budget
    (the smallest variant's full run), from a run of that budget with its own schedule, read at its
    end (every run is warmup-stable-decay: it ends annealed, Hagele et al. 2024);
  overfit_*: training and held-out loss while training on a deliberately small subset (every seed);
  head_ablation_*: the validation loss rise when heads are silenced after training (instruments/heads.py).
For the base variant only: the read criterion's reference (a bigram count model, `ngram_val_loss`) and
the study-wide ablations of ablations.py: gradient health versus depth and norm, length extrapolation
with its positive controls, multi-query versus multi-head attention.
A remedy's variant trains the equal-token runs only. What a quality tier does not power is recorded as
skipped, with the reason. Losses are in nats per token of the scale's tokeniser (bytes at CPU scale).
"""

from __future__ import annotations

from pathlib import Path
from statistics import mean

from ...catalog.declared.training import (
    CORPUS_TOKENS,
    HEAD_ABLATION_BASE_LOSS,
    HEAD_ABLATION_QUARTER_INCREASE,
    HEAD_ABLATION_QUARTER_MEAN,
    HEAD_ABLATION_SINGLE_INCREASE,
    HEAD_ABLATION_SINGLE_MAX,
    HEAD_ABLATION_SINGLE_MEAN,
    NGRAM_VAL_LOSS,
    OVERFIT_GAP,
    OVERFIT_TRAIN_LOSS,
    OVERFIT_VAL_LOSS,
    PROXY_EMBEDDING_SHARE,
    PROXY_PARAMS,
    TRAIN_FLOPS_PER_TOKEN,
    TRAIN_LOSS,
    VAL_LOSS,
    VAL_LOSS_FINAL,
)
from ...catalog.metrics import Metric
from ...catalog.vocabulary import NOT_TESTABLE_AT_THIS_SCALE, Cause, Method, Scale
from ...formulas.flops import kaplan_train_flops_per_token
from ...instruments.corpus import TokenData, fixed_windows, load_corpus, tokenized
from ...instruments.heads import HeadAblation, head_ablation
from ...instruments.ngram import READ_ORDER, ngram_loss
from ...instruments.proxy import (
    BUDGET_SKIP,
    VOCAB_KEYS,
    VOCAB_MATCH,
    QualityScale,
    past_deadline,
    proxy_config,
    proxy_rule,
    proxy_vocab,
    quality_scale,
    torch_threads,
)
from ...instruments.trainer import RunResult, train_run
from ...results import Record
from ...study.schema import ModelConfig, Study, Variant
from ..params.run import counted_params
from ..recorder import Recorder
from . import ablations, arms

M, D = Method.MEASURED, Method.DERIVED
FLOPS_FORMULA = "6N+6*L*T*d_attn (Kaplan et al. 2020 arXiv 2001.08361 Table 1)"


def flops_label(flops: float) -> float:
    """FLOPs as a label: 4 significant digits (a label names a point; the exact count is not the finding)."""
    return float(f"{flops:.4g}")


def record_scale(scale: QualityScale) -> str:
    """The records' scale: the variant's own shapes (measured) or a reduced proxy."""
    return Scale.MEASURED if scale.divisor == 1 else Scale.PROXY


def study_data(study: Study, scale: QualityScale, corpus: str | Path | None = None) -> TokenData:
    """The corpus tokenised for this scale; vocab = the study's num_tokens for BPE."""
    return tokenized(load_corpus(corpus), scale.tokenizer, proxy_vocab(study.base, scale))


_NON_EMBEDDING: dict[str, int] = {}  # config repr -> count: the equal-FLOP budget asks for every variant


def non_embedding_params(cfg: ModelConfig) -> int:
    key = repr(cfg.as_nested())
    if key not in _NON_EMBEDDING:
        counts = counted_params(cfg)
        _NON_EMBEDDING[key] = counts["library_total"] - counts["embedding"]
    return _NON_EMBEDDING[key]


def flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    n = non_embedding_params(cfg)
    return kaplan_train_flops_per_token(n, cfg.depth, seq_len, cfg.heads * cfg.dim_head)


def run_setup(scale: QualityScale) -> str:
    """The training set-up every run of this measurement shares (the note of `proxy_params`)."""
    s = scale
    return (
        f"scale={s.name},tier={s.tier},train_len={s.seq_len},batch={s.batch},steps={s.steps},lr={s.lr},"
        f"warmup={s.warmup},seeds={len(s.seeds)},lr_sweep={','.join(f'{f:g}' for f in s.lr_factors) or 'none'},"
        f"equal_flops={s.equal_flops},matmul={s.matmul_precision},rule={proxy_rule(s)}"
    )


def common_flop_budget(study: Study, scale: QualityScale) -> float:
    """The FLOPs the smallest variant spends on the full token budget: every variant gets this much."""
    cheapest = min(flops_per_token(proxy_config(v.config, scale), scale.seq_len) for v in study.variants())
    return cheapest * scale.tokens_per_run


def curve_records(
    rec: Recorder, run: RunResult, fpt: float, metrics: tuple[Metric, Metric] = (TRAIN_LOSS, VAL_LOSS)
) -> None:
    """The run's loss curve as `metrics` (its training loss, its validation loss), and where it diverged."""
    train_loss, val_loss = metrics
    for p in run.points:
        labels = {"seed": run.seed, "step": p.step, "tokens": p.tokens, "flops": flops_label(p.tokens * fpt)}
        rec.add(train_loss, p.train_loss, M, labels)
        rec.add(val_loss, p.val_loss, M, labels)
    if run.diverged_at is not None:
        tokens = run.diverged_at * run.batch * run.seq_len
        labels = {
            "seed": run.seed,
            "step": run.diverged_at,
            "tokens": tokens,
            "flops": flops_label(tokens * fpt),
        }
        rec.failed(val_loss, M, f"loss not finite at step {run.diverged_at}", labels)


def ablation_records(rec: Recorder, ab: HeadAblation, seed: int) -> None:
    for layer, head, rise in ab.single:
        rec.add(HEAD_ABLATION_SINGLE_INCREASE, rise, M, {"layer": layer, "head": head, "seed": seed})
    for draw, rise in enumerate(ab.quarter):
        labels = {"heads_off": f"{ab.heads_off}/{ab.heads}", "draw": draw, "seed": seed}
        rec.add(HEAD_ABLATION_QUARTER_INCREASE, rise, M, labels)
    rec.add(HEAD_ABLATION_QUARTER_MEAN, mean(ab.quarter), D, {"seed": seed})
    if ab.single:
        rises = [rise for _, _, rise in ab.single]
        rec.add(HEAD_ABLATION_SINGLE_MEAN, mean(rises), D, {"seed": seed})
        rec.add(HEAD_ABLATION_SINGLE_MAX, max(rises), D, {"seed": seed})
    rec.add(HEAD_ABLATION_BASE_LOSS, ab.base_loss, M, {"seed": seed})


def setup_records(
    rec: Recorder, proxy: ModelConfig, fpt: float, scale: QualityScale, data: TokenData
) -> None:
    """What was trained, how, and on what: the proxy, its FLOPs per token, the corpus."""
    shape = {
        "dim": proxy.dim,
        "depth": proxy.depth,
        "heads": proxy.heads,
        "dim_head": proxy.dim_head,
        "vocab": proxy.num_tokens,
    }
    rec.add(
        PROXY_PARAMS, counted_params(proxy)["library_total"], Method.COUNTER, shape, note=run_setup(scale)
    )
    rec.add(PROXY_EMBEDDING_SHARE, embedding_share(proxy), Method.COUNTER)
    rec.add(TRAIN_FLOPS_PER_TOKEN, fpt, Method.CLOSED_FORM, note=FLOPS_FORMULA)
    corpus = {"corpus": data.corpus.name, "sha256": data.corpus.sha256[:12], "tokenizer": data.tokenizer}
    rest = f"bytes={data.corpus.n_bytes},train_tokens={len(data.train)},val_tokens={len(data.val)}"
    rec.add(CORPUS_TOKENS, len(data.train) + len(data.val), Method.COUNTER, corpus, note=rest)


SETUP_METRICS = (PROXY_PARAMS, PROXY_EMBEDDING_SHARE, TRAIN_FLOPS_PER_TOKEN, CORPUS_TOKENS)


def skip_final(
    rec: Recorder,
    scale: QualityScale,
    fpt: float,
    why: str,
    seeds: tuple[int, ...] = (),
    cause: Cause = Cause.NONE,
) -> None:
    """The equal-token runs that did not happen, as skipped `val_loss_final` records saying why (and their
    cause, where the remedies act on it)."""
    for seed in seeds or scale.seeds:
        labels = {
            "seed": seed,
            "tokens": scale.tokens_per_run,
            "flops": flops_label(scale.tokens_per_run * fpt),
        }
        rec.skipped(VAL_LOSS_FINAL, M, why, labels, cause)


def main_runs(
    proxy: ModelConfig,
    data: TokenData,
    scale: QualityScale,
    rec: Recorder,
    fpt: float,
    init_from: ModelConfig,
    keep_models: bool,
    ablate: bool = True,
) -> dict[int, RunResult]:
    """The equal-token runs over the seeds at the scale's learning rate: curves, the final loss and (with
    `ablate`) the head ablation of each trained model."""
    runs: dict[int, RunResult] = {}
    val_windows = fixed_windows(data.val, scale.eval_windows, scale.seq_len + 1).to(scale.device)
    for seed in scale.seeds:
        if past_deadline():
            skip_final(rec, scale, fpt, BUDGET_SKIP, (seed,))
            continue
        run = train_run(proxy, data, scale, seed, keep_model=True, init_from=init_from)
        runs[seed] = run
        curve_records(rec, run, fpt)
        if run.diverged_at is None:
            labels = {"seed": seed, "tokens": run.final.tokens, "flops": flops_label(run.final.tokens * fpt)}
            rec.add(
                VAL_LOSS_FINAL, run.final.val_loss, M, labels, note=f"batches sha1 {run.batch_digest[:12]}"
            )
            if ablate:  # one head at a time costs depth x heads evaluations: the first seed only
                ab = head_ablation(run.model, val_windows, scale.batch, seed, single=seed == scale.seeds[0])
                ablation_records(rec, ab, seed)
        if not keep_models:
            run.model = None  # only the base's are kept (its study-wide ablations reuse them)
    return runs


def variant_runs(
    variant: Variant,
    study: Study,
    scale: QualityScale,
    data: TokenData,
    rec: Recorder,
    keep_models: bool = False,
) -> dict[int, RunResult]:
    """A sweep variant: its equal-token runs (a width or depth arm's only where the tier sweeps their
    learning rate, see arms.py), its learning-rate sweep, its equal-FLOP runs, then the overfitting view."""
    proxy = proxy_config(variant.config, scale)
    reference = proxy_config(study.base, scale)
    fpt = flops_per_token(proxy, scale.seq_len)
    is_base = study.is_base(variant)
    needs_lr = arms.lr_arm(variant, study)
    runs: dict[int, RunResult] = {}
    if is_base or not needs_lr or scale.lr_factors:
        runs = main_runs(proxy, data, scale, rec, fpt, reference, keep_models)
    else:
        skip_final(rec, scale, fpt, arms.NOT_POWERED_LR)
    lr = arms.tuned_runs(proxy, data, scale, rec, runs, reference) if needs_lr else None
    budget = common_flop_budget(study, scale)
    steps = max(1, min(scale.steps, int(budget // (fpt * scale.batch * scale.seq_len))))
    arms.equal_flop_runs(proxy, data, scale, rec, runs, steps, {"flops": flops_label(budget)}, lr, reference)
    overfit(proxy, data, scale, fpt, rec, reference)
    return runs


def remedy_runs(variant: Variant, study: Study, scale: QualityScale, data: TokenData, rec: Recorder) -> None:
    """A remedy's variant (or the recommended design): the equal-token runs over the seeds, read at their
    end, which is what its before -> after compares, seed by seed, with the variant it changes. A change
    bound to the vocabulary is not trained where the proxy's vocabulary share is far from the design's."""
    proxy = proxy_config(variant.config, scale)
    fpt = flops_per_token(proxy, scale.seq_len)
    why = vocab_mismatch(variant.config, study.base, scale)
    if why:
        skip_final(rec, scale, fpt, why, cause=Cause.NOT_TESTABLE)
        return
    main_runs(proxy, data, scale, rec, fpt, proxy_config(study.base, scale), False, ablate=False)


def embedding_share(cfg: ModelConfig) -> float:
    """The token embedding and logits tables' share of the model's parameters (the library's count)."""
    counts = counted_params(cfg)
    return (counts["embedding"] + counts["logits"]) / counts["total"]


def vocab_mismatch(cfg: ModelConfig, base: ModelConfig, scale: QualityScale) -> str:
    """Why a change that differs from the base in the vocabulary alone cannot be judged on this scale's
    proxy (its vocabulary share of parameters off the design's by more than VOCAB_MATCH), or ""."""
    changed = {
        k
        for home in ("wrapper", "layers")
        for k in {**getattr(cfg, home), **getattr(base, home)}
        if getattr(cfg, home).get(k) != getattr(base, home).get(k)
    }
    if not changed or not changed <= set(VOCAB_KEYS):
        return ""
    full, small = embedding_share(base), embedding_share(proxy_config(base, scale))
    if 1 / VOCAB_MATCH <= small / full <= VOCAB_MATCH:
        return ""
    return (
        f"{NOT_TESTABLE_AT_THIS_SCALE}: the change acts through the vocabulary, which holds {small:.1%} of the "
        f"proxy's parameters and {full:.1%} of the design's (a match within x{VOCAB_MATCH:g} is needed)"
    )


def overfit(
    proxy: ModelConfig,
    data: TokenData,
    scale: QualityScale,
    fpt: float,
    rec: Recorder,
    init_from: ModelConfig,
) -> None:
    """Training on a deliberately small subset, every seed: the held-out loss (with the training loss
    beside it) at `overfit_evals` points, so its rise past its best point shows overfitting happens."""
    subset = data.train[: scale.overfit_tokens]
    for seed in scale.seeds:
        if past_deadline():
            tokens = scale.overfit_steps * scale.batch * scale.seq_len
            labels = {
                "seed": seed,
                "step": scale.overfit_steps,
                "tokens": tokens,
                "flops": flops_label(tokens * fpt),
            }
            rec.skipped(OVERFIT_VAL_LOSS, M, BUDGET_SKIP, labels)
            continue
        run = train_run(
            proxy,
            data,
            scale,
            seed,
            steps=scale.overfit_steps,
            train_tokens=subset,
            evals=scale.overfit_evals,
            init_from=init_from,
            eval_windows=scale.overfit_eval_windows,
        )
        curve_records(rec, run, fpt, (OVERFIT_TRAIN_LOSS, OVERFIT_VAL_LOSS))
        for p in run.points:
            labels = {
                "seed": run.seed,
                "step": p.step,
                "tokens": p.tokens,
                "subset_tokens": len(subset),
                "epochs": round(p.tokens / len(subset), 1),
            }
            rec.add(OVERFIT_GAP, p.val_loss - p.train_loss, D, labels)


def reference_records(rec: Recorder, data: TokenData) -> None:
    """The read criterion's reference: a bigram count model of the same tokens (instruments/ngram.py)."""
    loss = ngram_loss(data.train.numpy(), data.val.numpy(), data.vocab, READ_ORDER)
    rec.add(NGRAM_VAL_LOSS, loss, Method.COUNT_MODEL, {"order": READ_ORDER, "tokenizer": data.tokenizer})


def training_records(
    variant: Variant, study: Study, scale: QualityScale | None = None, corpus: str | Path | None = None
) -> list[Record]:
    """The variant's training records; `corpus`: a text file or folder (default: $ORCA_CORPUS, else
    the Python standard library's sources)."""
    scale = scale or quality_scale()
    rec = Recorder(
        study.name, variant, "training", device=scale.device, dtype="float32", scale=record_scale(scale)
    )
    proxy = proxy_config(variant.config, scale)
    n = counted_params(proxy)["library_total"]
    if n > scale.train_max_params:
        reason = f"proxy has {n:,} parameters, over the {scale.name} scale's {scale.train_max_params:,}"
        skip_final(rec, scale, flops_per_token(proxy, scale.seq_len), reason)
        return rec.records
    data = study_data(study, scale, corpus)
    fpt = flops_per_token(proxy, scale.seq_len)
    setup_records(rec, proxy, fpt, scale, data)
    try:
        with torch_threads(scale):
            if variant.role != "sweep":
                remedy_runs(variant, study, scale, data, rec)
                return rec.records
            is_base = study.is_base(variant)  # study-wide ablations run once
            runs = variant_runs(variant, study, scale, data, rec, keep_models=is_base)
            if is_base:
                reference_records(rec, data)
                ablations.study_ablations(study, scale, data, rec, base_runs=runs)
    except NotImplementedError as exc:  # the device cannot train this model (FlexAttention's CPU backward)
        rec.records[:] = [r for r in rec.records if r.metric in SETUP_METRICS]
        why = f"needs a GPU: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
        skip_final(rec, scale, fpt, why, cause=Cause.NEEDS_GPU)
    return rec.records


def measure_training(variant: Variant, study: Study) -> list[Record]:
    return training_records(variant, study)
