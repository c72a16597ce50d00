"""UBT's defence in one call: :func:`defend` (``ob.ubt.defend``).

The defender runs a training platform: it holds the submitted (possibly poisoned) fine-tuning set D
and the model trained on it, knows neither the trigger nor which pairs are poisoned, and has a
clean pretrained CLIP (the public model the victim started from). The steps (paper IV, Algorithm 1):

1. score every pair with the clean CLIP and take the ``pool_fraction`` least aligned as the
   suspicious pool D_s (the rest is the normal set D_c);
2. overfit a copy of the poisoned model to D_s with D_c's InfoNCE as the regulariser;
3. re-rank D_s by the overfitted model and keep the top ``unlearn_fraction`` of D as D_u;
4. attribute D_u's caption tokens; check from D_u's scores and most attributed words whether there
   is a backdoor at all (a clean model is returned unchanged), and keep the pairs whose most
   attributed word is D_u's most common one (``consensus``);
5. keep the top tokens of each caption, pair every selected image with every masked caption, and
   ascend the CLIP loss from the poisoned model.

Every choice the paper leaves open is a field of :class:`UBTConfig`, documented as ``[design]``.

References:
    Liu et al., arXiv:2409.19526 (first version arXiv:2403.16257).
"""

from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from obstructlib.engine import ClipTrainConfig, resolve_device
from obstructlib.errors import ConfigError, check_range
from obstructlib.methods.ubt.steps import (
    CleanCheck,
    PairSubset,
    PairTensors,
    _draw,
    cartesian_pairs,
    clean_check,
    keep_top_tokens,
    mask_images,
    overfit,
    pair_similarities,
    select_highest,
    select_lowest,
    token_attributions,
    unlearn,
)

__all__ = ["UBTConfig", "UBTReport", "UBTResult", "defend", "detection_scores", "pool_recall_table", "unlearn_set"]

VARIANTS = ("text", "ga", "image", "image+text")


def _fine_tune_recipe(lr: float, epochs: int) -> ClipTrainConfig:
    return ClipTrainConfig(steps=None, epochs=epochs, batch_size=64, lr=lr, weight_decay=0.1, warmup_steps=0,
                           betas=(0.9, 0.999), eps=1e-8, log_every=10, ckpt_every=200)


@dataclass
class UBTConfig:
    """UBT's settings (paper V-A unless marked ``[design]``).

    Attributes:
        pool_fraction: size of the suspicious pool D_s as a fraction of D (paper: 1%).
        pool_count: the pool as a count (overrides ``pool_fraction``).
        pool_direction: ``lowest`` (paper IV-A: the pairs the scoring model finds least aligned) or
            ``highest`` (the pairs a poisoned model fits best, as ABL isolates) ``[design]``.
        pool_scorer: ``clean`` (paper: the clean pretrained CLIP) or ``poisoned`` ``[design]``.
        overfit: the overfitting recipe (paper: 5 epochs over D_s, batch 64, lr 1e-6).
        overfit_reg_weight: weight of D_c's InfoNCE regulariser in eq. 3 ``[design]``; 0 is the
            "D_s only" ablation of V-D1.
        use_overfit: re-rank D_s with the overfitted model (False: with the poisoned model, the
            "no overfitting" ablation).
        unlearn_fraction: size of the unlearning set D_u as a fraction of D (paper: 0.1%).
        unlearn_count: D_u as a count (overrides ``unlearn_fraction``).
        check: run the clean-model check and refuse to unlearn a model that fails it (paper V-E).
        min_gap_z: the check's least gap of D_u above the rest of the pool, in the pool's
            standard deviations ``[design]``.
        min_caption_share: the check's least share of D_u's captions whose most attributed word is
            the same word ``[design]``.
        min_lift: the check's least ratio of that share to the word's share of all of D's
            captions ``[design]`` (see :class:`~obstructlib.methods.ubt.steps.CleanCheck`).
        consensus: unlearn only the D_u pairs whose most attributed word is D_u's most common one
            ``[design]`` (the paper unlearns all of D_u; False is that ablation).
        attribution: ``grad_x_input`` or ``integrated_gradients`` ``[design]`` (the paper uses
            Chefer et al.'s relevance, arXiv:2103.15679).
        ig_steps: integrated gradients' steps.
        top_tokens: word tokens kept per caption by the text mask ``[design]``.
        variant: the unlearning of Table IV: ``text`` (UBT: text mask + gradient ascent), ``ga``
            (plain gradient ascent on full pairs), ``image`` (image mask), ``image+text``.
        image_keep: share of pixels the image mask keeps ``[design]``.
        cartesian: pair every selected image with every selected caption (False: the selected
            pairs only, the "no Cartesian product" ablation).
        max_pairs: sub-sample the Cartesian set to this many pairs (None: all) ``[design]``.
        unlearn: the ascent's recipe (paper: 5 epochs, batch 64, lr 1e-5).
        negatives: clean pairs of D_c per ascent step as extra negatives (0: the plain in-batch loss,
            whose gradient vanishes when every masked caption is the same word) ``[design]``.
        max_loss: stop ascending a pair once its loss exceeds this (None: unbounded) ``[design]``;
            the ascent ends once ``patience`` consecutive batches are all above it.
        patience: see ``max_loss``.
        retain_weight: a descended CLIP loss on D_c batches (the paper has none) ``[design]``.
        seed: the defender's own stream (batch draws, sub-sampling), independent of the attacker's.
    """

    pool_fraction: float = 0.01
    pool_count: int | None = None
    pool_direction: str = "lowest"
    pool_scorer: str = "clean"
    overfit: ClipTrainConfig = field(default_factory=lambda: _fine_tune_recipe(1e-6, 5))
    overfit_reg_weight: float = 1.0
    use_overfit: bool = True
    unlearn_fraction: float = 0.001
    unlearn_count: int | None = None
    check: bool = True
    min_gap_z: float = 0.0
    min_caption_share: float = 0.3
    min_lift: float = 10.0
    consensus: bool = True
    attribution: str = "grad_x_input"
    ig_steps: int = 16
    top_tokens: int = 2
    variant: str = "text"
    image_keep: float = 0.1
    cartesian: bool = True
    max_pairs: int | None = None
    unlearn: ClipTrainConfig = field(default_factory=lambda: _fine_tune_recipe(1e-5, 5))
    negatives: int = 64
    max_loss: float | None = None
    patience: int = 5
    retain_weight: float = 0.0
    seed: int = 0

    def validate(self) -> None:
        """Raise one-line :class:`ConfigError` for bad values."""
        check_range("pool_fraction", self.pool_fraction, 1e-6, 1.0)
        check_range("unlearn_fraction", self.unlearn_fraction, 1e-6, 1.0)
        for name in ("pool_count", "unlearn_count", "max_pairs"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name}={value}: use at least 1, or none")
        if self.pool_direction not in ("lowest", "highest"):
            raise ConfigError(f"pool_direction={self.pool_direction!r}: use lowest or highest")
        if self.pool_scorer not in ("clean", "poisoned"):
            raise ConfigError(f"pool_scorer={self.pool_scorer!r}: use clean or poisoned")
        if self.attribution not in ("grad_x_input", "integrated_gradients"):
            raise ConfigError(f"attribution={self.attribution!r}: use grad_x_input or integrated_gradients")
        if self.variant not in VARIANTS:
            raise ConfigError(f"variant={self.variant!r}: use one of {', '.join(VARIANTS)}")
        check_range("top_tokens", self.top_tokens, 1, 76)
        check_range("ig_steps", self.ig_steps, 1, 1000)
        check_range("image_keep", self.image_keep, 1e-3, 1.0)
        check_range("overfit_reg_weight", self.overfit_reg_weight, 0.0, 1e3)
        check_range("retain_weight", self.retain_weight, 0.0, 1e3)
        check_range("negatives", self.negatives, 0, 1_000_000)
        check_range("patience", self.patience, 1, 1_000_000)
        check_range("min_caption_share", self.min_caption_share, 0.0, 1.0)
        check_range("min_lift", self.min_lift, 0.0, 1e9)
        if self.max_loss is not None and not self.max_loss > 0:
            raise ConfigError(f"max_loss={self.max_loss}: use a positive bound or none")
        self.overfit.validate()
        self.unlearn.validate()


@dataclass
class UBTReport:
    """What the defence did, step by step (``ob.ubt.defend(...).report``).

    Attributes:
        pool: pair indices of the suspicious pool D_s.
        candidates: pair indices of the top of the re-ranked pool (D_u before the consensus filter).
        selected: pair indices of the unlearning set D_u (ranked, highest first).
        scores_clean: the pool scorer's cosine of every pair of D.
        scores_before: the poisoned model's cosine of the pool pairs (before overfitting).
        scores_after: the overfitted model's cosine of the pool pairs (what D_u is chosen by).
        check: the clean-model check (None when switched off).
        refused: True when the check found no backdoor and the model was returned unchanged.
        masked_captions: D_u's captions after the token mask (decoded), in D_u's order.
        top_words: each candidate's most attributed word, in ``candidates``' order.
        attributions: per candidate caption, ``[(token, score), ...]`` of its word tokens.
        num_unlearn_pairs: size of the (sub-sampled) Cartesian set.
        histories: ``overfit`` and ``unlearn`` training histories.
        timings_s: seconds per stage (``score``, ``overfit``, ``select``, ``attribute``, ``unlearn``).
        detection: pool, candidate and unlearning-set precision/recall, when the truth was given
            (reporting only).
    """

    pool: np.ndarray
    candidates: np.ndarray
    selected: np.ndarray
    scores_clean: np.ndarray
    scores_before: np.ndarray
    scores_after: np.ndarray
    check: CleanCheck | None
    refused: bool
    masked_captions: list[str]
    top_words: list[str]
    attributions: list[list[tuple[str, float]]]
    num_unlearn_pairs: int
    histories: dict[str, dict[str, list[float]]]
    timings_s: dict[str, float]
    detection: dict[str, float] = field(default_factory=dict)

    @property
    def defence_seconds(self) -> float:
        """Total wall time of the defence."""
        return float(sum(self.timings_s.values()))


@dataclass
class UBTResult:
    """The defended model (the poisoned model itself when refused) and the report."""

    model: Any
    report: UBTReport


def detection_scores(selected: np.ndarray, is_poison: np.ndarray) -> dict[str, float]:
    """Precision and recall of a selection against the true poisons.

    Example:
        >>> detection_scores(np.array([0, 1, 2, 3]), np.array([1, 1, 0, 0, 1], bool))
        {'precision': 0.5, 'recall': 0.6666666666666666, 'num_selected': 4, 'num_poisons': 3}
    """
    truth = np.asarray(is_poison, bool)
    hits = int(truth[np.asarray(selected, dtype=np.int64)].sum())
    return {"precision": hits / max(len(selected), 1), "recall": hits / max(int(truth.sum()), 1),
            "num_selected": int(len(selected)), "num_poisons": int(truth.sum())}


def pool_recall_table(pairs: Any, is_poison: np.ndarray, models: dict[str, Any], *, fraction: float,
                      device: torch.device | str | None = None) -> dict[str, dict[str, float]]:
    """Pool precision and recall for every scoring model x direction (an evaluation: it reads the truth).

    Args:
        pairs: the fine-tuning set D.
        is_poison: the true poison mask.
        models: e.g. ``{"clean": pretrained, "poisoned": victim}``.
        fraction: the pool's size as a fraction of D.

    Returns:
        ``{"clean-lowest": {"precision": ..., "recall": ...}, "clean-highest": ..., ...}``.
    """
    out = {}
    for name, model in models.items():
        scores = pair_similarities(model, pairs, device)
        for direction, select in (("lowest", select_lowest), ("highest", select_highest)):
            d = detection_scores(select(scores, fraction=fraction), is_poison)
            out[f"{name}-{direction}"] = {"precision": d["precision"], "recall": d["recall"]}
    return out


def _decode(model: Any, tokens: torch.Tensor) -> list[str]:
    tok = getattr(model, "tokenizer", None)
    specials = set(model.special_token_ids)
    out = []
    for row in tokens.tolist():
        ids = [i for i in row if i not in specials]
        decoder = getattr(tok, "decode", None)
        out.append(decoder(ids).strip() if decoder is not None else " ".join(map(str, ids)))
    return out


def _token_names(model: Any, tokens: torch.Tensor, scores: torch.Tensor) -> list[list[tuple[str, float]]]:
    tok = getattr(model, "tokenizer", None)
    specials = set(model.special_token_ids)
    out = []
    for row, srow in zip(tokens.tolist(), scores.tolist()):
        words = [(tok.decode([t]).strip() if tok is not None else str(t), round(float(s), 6))
                 for t, s in zip(row, srow) if t not in specials]
        out.append(words)
    return out


def unlearn_set(poisoned_model: Any, view: PairTensors, images: torch.Tensor, tokens: torch.Tensor,
                masked: torch.Tensor, normal: np.ndarray, cfg: UBTConfig, *, device: torch.device | str | None = None,
                ckpt_dir: str | os.PathLike | None = None, progress: bool = False,
                callback: Any = None) -> tuple[Any, dict[str, list[float]], int]:
    """UBT's last step on a chosen set: ``cfg.variant``'s masks, the Cartesian pairs, the bounded ascent
    with clean negatives and the retain term drawn from ``normal`` (what :func:`defend` runs on D_u, and
    the oracle on the true poisons).

    Returns:
        ``(unlearned copy, ascent history, number of unlearning pairs)``.
    """
    device = resolve_device(device)
    model = copy.deepcopy(poisoned_model)
    text_tokens = masked if cfg.variant in ("text", "image+text") else tokens
    if cfg.variant in ("image", "image+text"):
        images = mask_images(poisoned_model, images, tokens, keep=cfg.image_keep, device=device)
    if cfg.cartesian:
        a, b = cartesian_pairs(len(images), len(images), max_pairs=cfg.max_pairs, seed=cfg.seed)
    else:
        a = b = np.arange(len(images))
    negatives = None
    if cfg.negatives > 0 and len(normal) > 0:
        count = cfg.negatives

        def negatives(generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
            return view.batch(_draw(normal, count, generator))

    unlearn_cfg = copy.deepcopy(cfg.unlearn)
    unlearn_cfg.seed = cfg.seed + 1
    step_callback = None if callback is None else (lambda step: callback(model, step))
    history = unlearn(model, images, text_tokens, (a, b), unlearn_cfg, negatives=negatives, max_loss=cfg.max_loss,
                      retain=negatives, retain_weight=cfg.retain_weight, patience=cfg.patience, device=device,
                      ckpt_dir=ckpt_dir, progress=progress, callback=step_callback)
    return model, history, len(a)


def defend(
    poisoned_model: Any,
    pairs: Any,
    cfg: UBTConfig | None = None,
    *,
    clean_model: Any = None,
    device: torch.device | str | None = None,
    ckpt_dir: str | os.PathLike | None = None,
    progress: bool = False,
    is_poison: np.ndarray | None = None,
    callback: Any = None,
) -> UBTResult:
    """Remove a backdoor from a CLIP fine-tuned on ``pairs`` with UBT (paper Algorithm 1).

    Args:
        poisoned_model: the (possibly) poisoned ``ClipModel``; never modified (a copy is unlearned).
        pairs: the fine-tuning set D it was trained on (a ``CaptionDataset``).
        cfg: the settings (default :class:`UBTConfig`).
        clean_model: the clean pretrained CLIP that scores the pool (``pool_scorer="clean"``).
        device: where to compute.
        ckpt_dir: ``overfit/`` and ``unlearn/`` checkpoints; a second call resumes.
        progress: progress bars.
        is_poison: the true poison mask, used ONLY to fill ``report.detection`` (the defence never
            reads it: the same call without it makes the same model).
        callback: ``callback(model, step) -> dict`` logged along the ascent (e.g. CA and ASR).

    Returns:
        :class:`UBTResult` with the defended model and the :class:`UBTReport`.

    Example:
        >>> result = ob.ubt.defend(poisoned, train_pairs, ob.ubt.Config(), clean_model=pretrained)  # doctest: +SKIP
        >>> result.report.refused, result.report.detection                                       # doctest: +SKIP
    """
    cfg = cfg or UBTConfig()
    cfg.validate()
    device = resolve_device(device)
    if cfg.pool_scorer == "clean" and clean_model is None:
        raise ConfigError("UBT scores the pool with the clean pretrained CLIP: pass clean_model "
                          "(or --set ubt.pool_scorer=poisoned)")
    stage = (lambda name: None) if ckpt_dir is None else (lambda name: Path(ckpt_dir) / name)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    view = PairTensors(pairs, poisoned_model)
    n = len(view)
    scorer = clean_model if cfg.pool_scorer == "clean" else poisoned_model
    scores_clean = pair_similarities(scorer, pairs, device)
    select = select_lowest if cfg.pool_direction == "lowest" else select_highest
    pool = select(scores_clean, count=cfg.pool_count, fraction=None if cfg.pool_count else cfg.pool_fraction)
    normal = np.setdiff1d(np.arange(n), pool)
    pool_pairs = PairSubset(pairs, pool)
    scores_before = pair_similarities(poisoned_model, pool_pairs, device)
    timings["score"] = time.perf_counter() - started

    started = time.perf_counter()
    histories: dict[str, dict[str, list[float]]] = {}
    if cfg.use_overfit:
        overfitted = copy.deepcopy(poisoned_model)
        overfit_cfg = copy.deepcopy(cfg.overfit)
        overfit_cfg.seed = cfg.seed
        histories["overfit"] = overfit(overfitted, view, pool, normal, overfit_cfg, reg_weight=cfg.overfit_reg_weight,
                                       device=device, ckpt_dir=stage("overfit"), progress=progress)
        scores_after = pair_similarities(overfitted, pool_pairs, device)
        del overfitted
    else:
        scores_after = scores_before
    timings["overfit"] = time.perf_counter() - started

    started = time.perf_counter()
    k = cfg.unlearn_count or max(1, int(np.ceil(cfg.unlearn_fraction * n)))
    k = min(k, len(pool))
    ranked = select_highest(scores_after, count=k)
    candidates = pool[ranked]
    timings["select"] = time.perf_counter() - started

    started = time.perf_counter()
    images, tokens = view.batch(candidates)
    attributions = token_attributions(poisoned_model, images, tokens, method=cfg.attribution,
                                      ig_steps=cfg.ig_steps, device=device)
    top_one = keep_top_tokens(tokens, attributions, 1, poisoned_model)
    top_ids = top_one[:, 0 if poisoned_model.sot_token_id is None else 1]  # each caption's most attributed token
    top_words = _decode(poisoned_model, top_one)
    ids, counts = torch.unique(top_ids, return_counts=True)
    consensus_id = ids[counts.argmax()]  # D_u's most common most-attributed token
    agree = (top_ids == consensus_id).nonzero().flatten().numpy()
    check = None
    if cfg.check:
        # the token's share of D's captions, counted on token ids (sub-word pieces included)
        base = max(float((view.tokens == consensus_id).any(dim=1).float().mean()), 1.0 / n)
        check = clean_check(scores_after, ranked, [str(int(t)) for t in top_ids], base_share=base,
                            min_gap_z=cfg.min_gap_z, min_caption_share=cfg.min_caption_share,
                            min_lift=cfg.min_lift)
        check.word = top_words[int(agree[0])]
    keep = agree if cfg.consensus and len(agree) >= 2 else np.arange(len(candidates))
    selected, images, tokens = candidates[keep], images[torch.as_tensor(keep)], tokens[torch.as_tensor(keep)]
    masked = keep_top_tokens(tokens, attributions[torch.as_tensor(keep)], cfg.top_tokens, poisoned_model)
    masked_text = _decode(poisoned_model, masked)
    timings["attribute"] = time.perf_counter() - started
    refused = check is not None and not check.poisoned
    report = UBTReport(pool=pool, candidates=candidates, selected=selected, scores_clean=scores_clean,
                       scores_before=scores_before, scores_after=scores_after, check=check, refused=refused,
                       masked_captions=masked_text, top_words=top_words,
                       attributions=_token_names(poisoned_model, view.tokens[torch.as_tensor(candidates)],
                                                 attributions),
                       num_unlearn_pairs=0, histories=histories, timings_s=timings)
    if is_poison is not None:
        truth = np.asarray(is_poison, bool)
        pool_d, cand_d, sel_d = (detection_scores(x, truth) for x in (pool, candidates, selected))
        report.detection = {"pool_precision": pool_d["precision"], "pool_recall": pool_d["recall"],
                            "candidate_precision": cand_d["precision"],
                            "unlearn_precision": sel_d["precision"], "unlearn_recall": sel_d["recall"],
                            "num_unlearn": sel_d["num_selected"]}
    if refused:
        report.timings_s = {k: round(v, 3) for k, v in timings.items()}
        return UBTResult(poisoned_model, report)

    started = time.perf_counter()
    model, histories["unlearn"], report.num_unlearn_pairs = unlearn_set(
        poisoned_model, view, images, tokens, masked, normal, cfg, device=device, ckpt_dir=stage("unlearn"),
        progress=progress, callback=callback)
    timings["unlearn"] = time.perf_counter() - started
    report.timings_s = {k: round(v, 3) for k, v in timings.items()}
    return UBTResult(model, report)
