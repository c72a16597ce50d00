"""UBT's steps, one function each, so the notebook can run and plot them one at a time.

1. :func:`pair_similarities` and :func:`select_lowest` / :func:`select_highest`: the image-text cosine of
   every pair under a model, and the suspicious pool D_s (paper IV-A: the pairs a *clean* pretrained
   CLIP finds least aligned; a poisoned pair -- triggered image, target caption -- is a mismatch for it);
2. :func:`overfit`: a copy of the poisoned model trained to raise the cosine of D_s, with the
   InfoNCE loss on the normal set D_c as the regulariser (paper eq. 3);
3. :func:`select_highest` on the overfitted model's scores of D_s gives the unlearning set D_u
   (paper eq. 4); :func:`clean_check` decides from those scores whether there is a backdoor at all
   (paper V-E, Table V);
4. :func:`token_attributions` (gradient x input on the token embeddings, or integrated gradients),
   :func:`keep_top_tokens` (the masked captions) and :func:`cartesian_pairs` (every selected image
   with every selected caption, sub-sampled when large);
5. :func:`unlearn`: gradient ascent on the CLIP loss of the Cartesian set (paper eqs. 5-7).

:func:`train_stage` is the one resumable optimisation loop every stage and baseline runs in.

References:
    Liu et al., "Efficient Backdoor Defense in Multimodal Contrastive Learning: A Token-Level
    Unlearning Method for Mitigating Threats", arXiv:2409.19526 (first version arXiv:2403.16257).
    Shrikumar et al., "Not Just a Black Box" (gradient x input), arXiv:1605.01713. Sundararajan et
    al., "Axiomatic Attribution for Deep Networks" (integrated gradients), arXiv:1703.01365. The
    paper attributes tokens with Chefer et al.'s relevance propagation (arXiv:2103.15679); we use the
    two gradient methods above, which need no attention maps and work for any open_clip text tower.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from obstructlib.data.tokens import tokenize_captions
from obstructlib.engine import ClipTrainConfig, ResumableLoop, autocast, encode_dataset, resolve_device
from obstructlib.engine.clip import _warmup_cosine, clip_adamw
from obstructlib.errors import ConfigError

__all__ = [
    "CleanCheck",
    "PairSubset",
    "PairTensors",
    "cartesian_pairs",
    "clean_check",
    "consensus_filter",
    "contrastive_unlearning_loss",
    "keep_top_tokens",
    "mask_images",
    "overfit",
    "pair_similarities",
    "select_highest",
    "select_lowest",
    "token_attributions",
    "train_stage",
    "unlearn",
    "word_share",
]


# ---- data access -----------------------------------------------------------------------------
class PairTensors:
    """Image-caption pairs as batches of tensors: images read by pair index, captions tokenised once.

    Args:
        pairs: a :class:`~obstructlib.data.CaptionDataset` (``image_ids``, ``captions``, ``get_image``).
        model: the CLIP whose tokenizer encodes the captions.

    Example:
        >>> view = PairTensors(pairs, clip)                 # doctest: +SKIP
        >>> images, tokens = view.batch([0, 5, 7])          # doctest: +SKIP
    """

    def __init__(self, pairs: Any, model: nn.Module) -> None:
        for attr in ("image_ids", "captions", "get_image"):
            if not hasattr(pairs, attr):
                raise ConfigError("UBT needs an image-caption dataset (a CaptionDataset): load it with load_pairs")
        self.pairs = pairs
        self.tokens = tokenize_captions(model, pairs.captions).long()
        self._ids = np.asarray(pairs.image_ids, dtype=np.int64)

    def __len__(self) -> int:
        return len(self._ids)

    def images(self, index: Sequence[int] | np.ndarray) -> torch.Tensor:
        """Float images ``(B, C, H, W)`` in [0, 1] of the pairs ``index``."""
        return torch.stack([self.pairs.get_image(int(self._ids[i])) for i in np.asarray(index).reshape(-1)])

    def batch(self, index: Sequence[int] | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """``(images, tokens)`` of the pairs ``index``."""
        idx = np.asarray(index, dtype=np.int64).reshape(-1)
        return self.images(idx), self.tokens[torch.as_tensor(idx)]


class PairSubset(torch.utils.data.Dataset):
    """The pairs ``index`` of a caption dataset, sharing its images (image ids stay the base's).

    What ``fit_clip``, ``encode_dataset`` and :class:`PairTensors` need: items ``(image, caption,
    image_id)``, ``image_ids``, ``captions``, ``labels``, ``classes``, ``templates`` and ``get_image``.
    """

    def __init__(self, pairs: Any, index: Sequence[int] | np.ndarray) -> None:
        self.base, self.index = pairs, np.asarray(index, dtype=np.int64)
        self.image_ids = np.asarray(pairs.image_ids)[self.index]
        self.captions = [pairs.captions[i] for i in self.index]
        labels = getattr(pairs, "labels", None)
        self.labels = None if labels is None else np.asarray(labels)[self.index]
        self.classes, self.templates = getattr(pairs, "classes", []), getattr(pairs, "templates", None)

    def __len__(self) -> int:
        return len(self.index)

    def get_image(self, image_index: int) -> torch.Tensor:
        """The base set's image ``image_index``."""
        return self.base.get_image(image_index)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str, int]:
        return self.base.get_image(int(self.image_ids[i])), self.captions[i], int(self.image_ids[i])


# ---- step 1: scores and selection --------------------------------------------------------------
@torch.no_grad()
def pair_similarities(model: nn.Module, pairs: Any, device: torch.device | str | None = None,
                      batch_size: int = 256) -> np.ndarray:
    """Cosine similarity of every pair's image and caption under ``model`` (each image encoded once).

    Returns:
        float64 ``(N_pairs,)`` in [-1, 1].
    """
    device = resolve_device(device)
    images, texts, ids = encode_dataset(model, pairs, device, batch_size=batch_size)
    return (images[ids.to(images.device)] * texts).sum(-1).double().cpu().numpy()


def _count(n: int, count: int | None, fraction: float | None, what: str) -> int:
    if count is None and fraction is None:
        raise ConfigError(f"give the {what} as a count or as a fraction of the data")
    k = int(count) if count is not None else math.ceil(float(fraction) * n)  # type: ignore[arg-type]
    if not 1 <= k <= n:
        raise ConfigError(f"the {what} of {k} pairs is outside 1..{n}: change its size")
    return k


def select_lowest(scores: np.ndarray, *, count: int | None = None, fraction: float | None = None) -> np.ndarray:
    """Indices of the ``count`` (or ``ceil(fraction * N)``) lowest scores, lowest first (ties: lower index).

    Example:
        >>> select_lowest(np.array([0.9, 0.1, 0.5, 0.1]), count=2).tolist()
        [1, 3]
    """
    scores = np.asarray(scores, dtype=np.float64)
    k = _count(len(scores), count, fraction, "selection")
    return np.argsort(scores, kind="stable")[:k]


def select_highest(scores: np.ndarray, *, count: int | None = None, fraction: float | None = None) -> np.ndarray:
    """Indices of the ``count`` (or ``ceil(fraction * N)``) highest scores, highest first (ties: lower index).

    Example:
        >>> select_highest(np.array([0.9, 0.1, 0.5, 0.9]), count=3).tolist()
        [0, 3, 2]
    """
    scores = np.asarray(scores, dtype=np.float64)
    k = _count(len(scores), count, fraction, "selection")
    return np.argsort(-scores, kind="stable")[:k]


# ---- the one optimisation loop -------------------------------------------------------------------
def train_stage(
    model: nn.Module,
    loss_fn: Callable[[torch.Generator], torch.Tensor],
    steps: int,
    cfg: ClipTrainConfig,
    *,
    ckpt_dir: str | os.PathLike | None = None,
    progress: bool = False,
    desc: str = "stage",
    callback: Callable[[int], dict[str, float] | None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    freeze_norm_stats: bool = False,
) -> dict[str, list[float]]:
    """Minimise ``loss_fn`` for ``steps`` AdamW steps (CLIP's optimiser: decay on weight matrices only).

    Every step draws its batch through a generator seeded by ``(cfg.seed, step)`` alone, so a run
    resumed from ``ckpt_dir`` (``ResumableLoop``, every ``cfg.ckpt_every`` steps) replays exactly.
    A gradient-ascent stage returns the negated loss. The logit scale is clamped as in training.

    Args:
        model: the ``ClipModel`` to update in place.
        loss_fn: ``loss_fn(generator) -> scalar`` to minimise (draws its batch with ``generator``).
        steps: optimiser steps.
        cfg: lr, weight decay, betas, eps, warmup, grad clip, seed, log and checkpoint periods.
        ckpt_dir: resumable checkpoints; None disables them.
        progress: progress bar.
        desc: its label.
        callback: ``callback(step) -> record`` at every logged step; its dict joins the history.
        should_stop: asked after every step; True ends the stage there (logged, checkpointed, and
            remembered: a resumed call does not run on).
        freeze_norm_stats: keep BatchNorm running statistics fixed (the layers stay in eval mode), as
            the overfitting and the ascents do: a few hundred pairs, all triggered, would otherwise
            become the statistics every clean image is normalised with (measured on a SIG-poisoned
            tiny-rn: CA -7 points without, -0.05 with; ViTs have no such statistics).

    Returns:
        History with ``step`` and ``loss`` (mean over each log window) and the callback's keys
        (``stopped_at``: the step of an early stop).
    """
    if steps < 1:
        raise ConfigError(f"{desc}: {steps} steps; give it at least one step (more data or epochs)")
    bare = cast(Any, model)
    optimizer = clip_adamw(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, partial(_warmup_cosine, warmup=cfg.warmup_steps, total=steps))
    loop = ResumableLoop(steps, ckpt_dir=ckpt_dir, model=model, optimizer=optimizer, scheduler=scheduler,
                         config=cfg, history={"step": [], "loss": []}, every=cfg.ckpt_every,
                         progress=progress, desc=desc, extra=lambda: {"stopped": loop.stopped})
    if loop.resumed.get("stopped"):
        loop.stop()
    history = cast("dict[str, list[float]]", loop.history)
    def train_mode() -> None:
        model.train()
        if freeze_norm_stats:
            for module in model.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()

    train_mode()
    window: list[float] = []
    params = [p for p in model.parameters() if p.requires_grad]
    for step in loop:
        generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        loss = loss_fn(generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip is not None:
            nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        with torch.no_grad():
            bare.logit_scale.clamp_(0.0, math.log(cfg.max_logit_scale))
        window.append(float(loss.detach()))
        stop = should_stop is not None and should_stop()
        if stop:
            loop.stop()
            history.setdefault("stopped_at", []).append(step + 1)
        if (step + 1) % cfg.log_every == 0 or step + 1 == steps or (stop and window):
            record: dict[str, float] = {"step": step + 1, "loss": float(np.mean(window))}
            if callback is not None:
                model.eval()
                record.update(callback(step + 1) or {})
                train_mode()
            loop.log(record)
            window = []
    model.eval()
    return history


def _draw(pool: np.ndarray, size: int, generator: torch.Generator) -> np.ndarray:
    """``size`` indices of ``pool`` without replacement (all of it, shuffled, when it is smaller)."""
    order = torch.randperm(len(pool), generator=generator).numpy()
    return pool[order[: min(size, len(pool))]]


def _features(model: Any, images: torch.Tensor, tokens: torch.Tensor, device: torch.device,
              amp: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    with autocast(device, enabled=amp):
        u, v, scale = model(images.to(device), tokens.to(device))
    return u.float(), v.float(), scale.float()


def _info_nce(u: torch.Tensor, v: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    logits = scale * u @ v.T
    labels = torch.arange(len(u), device=u.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


def stage_steps(num_items: int, cfg: ClipTrainConfig) -> int:
    """Optimiser steps of a stage over ``num_items`` items: ``cfg.steps``, else ``cfg.epochs`` passes."""
    if cfg.steps is not None:
        return int(cfg.steps)
    return max(1, math.ceil(num_items / cfg.batch_size)) * int(cfg.epochs or 1)


# ---- step 2: overfitting -----------------------------------------------------------------------------
def overfit(
    model: nn.Module,
    view: PairTensors,
    pool: np.ndarray,
    normal: np.ndarray,
    cfg: ClipTrainConfig,
    *,
    reg_weight: float = 1.0,
    device: torch.device | str | None = None,
    ckpt_dir: str | os.PathLike | None = None,
    progress: bool = False,
) -> dict[str, list[float]]:
    """Overfit ``model`` (a copy of the poisoned CLIP) to the suspicious pool (paper eq. 3), in place.

    Each step takes ``cfg.batch_size`` pairs of the pool and as many of the normal set D_c and
    minimises ``-mean cos(pool pairs) + reg_weight * InfoNCE(normal pairs)``: the pool's cosines
    rise, and the shared trigger -> target shortcut rises fastest, while the regulariser keeps the
    clean pairs contrastive. ``reg_weight=0`` is the paper's "train on D_s only" ablation (V-D1).
    The pool is passed over ``cfg.epochs`` times (or ``cfg.steps`` steps).
    """
    device = resolve_device(device)
    bare = cast(Any, model).to(device)
    pool, normal = np.asarray(pool), np.asarray(normal)
    if len(pool) == 0:
        raise ConfigError("the suspicious pool is empty: raise pool_fraction")

    def loss_fn(generator: torch.Generator) -> torch.Tensor:
        images, tokens = view.batch(_draw(pool, cfg.batch_size, generator))
        u, v, _ = _features(bare, images, tokens, device, cfg.amp)
        loss = -(u * v).sum(-1).mean()
        if reg_weight > 0 and len(normal) > 1:
            images, tokens = view.batch(_draw(normal, cfg.batch_size, generator))
            u, v, scale = _features(bare, images, tokens, device, cfg.amp)
            loss = loss + reg_weight * _info_nce(u, v, scale)
        return loss

    return train_stage(bare, loss_fn, stage_steps(len(pool), cfg), cfg, ckpt_dir=ckpt_dir, progress=progress,
                       desc="overfit", freeze_norm_stats=True)


# ---- step 3: the clean-model check -------------------------------------------------------------------
@dataclass
class CleanCheck:
    """Whether the selected set looks like a backdoor (paper V-E: "a poisoned model's D_u should have
    a more concentrated and higher similarity").

    Attributes:
        gap_z: (mean score of D_u - mean score of the rest of the pool) / std of the rest, under the
            overfitted model: poisons fitted together stand far above the pool.
        spread_ratio: std of D_u's scores / std of the rest of the pool (small: concentrated).
        caption_share: share of D_u's captions whose most attributed word is the most common one
            (poisons name one target).
        word: that most common word.
        lift: ``caption_share`` / the share of all of D's captions containing ``word``: a backdoor's
            target is rare in D yet dominates D_u; a clean model's D_u is at most a common class.
        poisoned: the decision (every statistic at or above its threshold).
    """

    gap_z: float
    spread_ratio: float
    caption_share: float
    word: str
    lift: float
    poisoned: bool


def word_share(captions: Sequence[str], word: str) -> float:
    """Share of ``captions`` containing ``word`` as a whole word (case-insensitive).

    Example:
        >>> word_share(["a photo of a banana.", "a cat", "Banana!"], "banana")
        0.6666666666666666
    """
    if not captions or not word.strip():
        return 0.0
    pattern = re.compile(rf"(?<![\w]){re.escape(word.strip().lower())}(?![\w])")
    return sum(bool(pattern.search(c.lower())) for c in captions) / len(captions)


def clean_check(pool_scores: np.ndarray, selected: np.ndarray, top_words: Sequence[str] | None = None, *,
                corpus_captions: Sequence[str] | None = None, base_share: float | None = None,
                min_gap_z: float = 0.0,
                min_caption_share: float = 0.3, min_lift: float = 10.0) -> CleanCheck:
    """Decide from the overfitted model's pool scores and D_u's captions whether there is a backdoor.

    Args:
        pool_scores: the overfitted model's cosine of every pool pair ``(n_pool,)``.
        selected: positions in the pool of the unlearning set (``select_highest`` of the scores).
        top_words: each selected caption's most attributed word (None: share 1, lift not used).
        corpus_captions: all of D's captions, for the lift (None: lift not used).
        base_share: the word's share of D given directly (e.g. counted on token ids, which also
            works for sub-word tokens that whole-word matching cannot find); overrides
            ``corpus_captions``.
        min_gap_z: the least gap, in standard deviations of the rest of the pool.
        min_caption_share: the least share of D_u's captions with the same most attributed word.
        min_lift: the least lift of that word over its share of D.

    Example:
        >>> scores = np.r_[np.full(5, 0.95), np.linspace(0.2, 0.6, 45)]
        >>> corpus = ["a photo of a truck."] * 5 + ["a photo of a cat."] * 95
        >>> clean_check(scores, np.arange(5), ["truck"] * 5, corpus_captions=corpus, min_gap_z=2).poisoned
        True
        >>> clean_check(np.linspace(0.2, 0.6, 50), np.arange(45, 50), list("abcde"), min_gap_z=2).poisoned
        False
    """
    scores = np.asarray(pool_scores, dtype=np.float64)
    chosen = np.zeros(len(scores), bool)
    chosen[np.asarray(selected, dtype=np.int64)] = True
    top, rest = scores[chosen], scores[~chosen]
    spread = float(rest.std()) if len(rest) > 1 else 0.0
    gap_z = float((top.mean() - rest.mean()) / max(spread, 1e-8)) if len(rest) else 0.0
    ratio = float(top.std() / max(spread, 1e-8)) if len(top) > 1 else 0.0
    word, share, lift = "", 1.0, float("inf")
    if top_words:
        values, counts = np.unique(np.asarray(list(top_words), dtype=object).astype(str), return_counts=True)
        word, share = str(values[counts.argmax()]), float(counts.max() / len(top_words))
        if base_share is not None:
            lift = share / max(base_share, 1e-12)
        elif corpus_captions:
            base = max(word_share(corpus_captions, word), 1.0 / len(corpus_captions))
            lift = share / base
    poisoned = gap_z >= min_gap_z and share >= min_caption_share and lift >= min_lift
    return CleanCheck(gap_z, ratio, share, word, float(lift), bool(poisoned))


def consensus_filter(top_words: Sequence[str], min_keep: int = 2) -> np.ndarray:
    """Positions of the captions whose most attributed word is the most common one (``[design]``).

    The backdoor maps its trigger to one target, so the poisons of D_u share their most attributed
    word; the clean pairs that the overfitted model also ranks high do not, and would be unlearned
    with them (their class is what the ascent then forgets). Returns all positions when fewer than
    ``min_keep`` agree.

    Example:
        >>> consensus_filter(["banana", "frog", "banana", "ship", "banana"]).tolist()
        [0, 2, 4]
    """
    words = np.asarray(list(top_words), dtype=object).astype(str)
    if len(words) == 0:
        return np.arange(0)
    values, counts = np.unique(words, return_counts=True)
    keep = np.flatnonzero(words == values[counts.argmax()])
    return keep if len(keep) >= min_keep else np.arange(len(words))


# ---- step 4: token attribution, masks, the Cartesian set ---------------------------------------------
def _content_mask(tokens: torch.Tensor, model: Any) -> torch.Tensor:
    """True at the caption's word positions: after the start token, before the end token."""
    eot = model.eot_token_id
    end = (tokens == eot).int().argmax(dim=1) if eot is not None else (tokens != model.pad_token_id).sum(1)
    pos = torch.arange(tokens.shape[1], device=tokens.device)[None]
    start = 1 if model.sot_token_id is not None else 0
    return (pos >= start) & (pos < end[:, None])


def token_attributions(model: nn.Module, images: torch.Tensor, tokens: torch.Tensor, *,
                       method: str = "grad_x_input", ig_steps: int = 16,
                       device: torch.device | str | None = None) -> torch.Tensor:
    """Each word token's contribution to the image-text cosine of its pair (specials get 0).

    ``grad_x_input``: ``|(d cos / d e_k) . e_k|`` on the token embeddings e_k (arXiv:1605.01713);
    ``integrated_gradients``: the same product integrated along the straight path from all-zero
    embeddings (arXiv:1703.01365, ``ig_steps`` Riemann steps). The image side is held fixed.

    Shape:
        ``images (B, C, H, W)``, ``tokens (B, L)`` -> ``(B, L)`` float32 on CPU, >= 0.
    """
    if method not in ("grad_x_input", "integrated_gradients"):
        raise ConfigError(f"attribution={method!r}: use grad_x_input or integrated_gradients")
    device = resolve_device(device)
    bare = cast(Any, model).to(device).eval()
    tokens = tokens.to(device)
    with torch.no_grad():
        u = bare.encode_image(images.to(device)).float()
        embeds = bare.token_embedding(tokens).float()
    alphas = torch.linspace(1.0 / ig_steps, 1.0, ig_steps) if method == "integrated_gradients" else torch.ones(1)
    total = torch.zeros_like(embeds)
    for alpha in alphas.tolist():
        e = (embeds * alpha).requires_grad_(True)
        v = bare.encode_text_embeds(e, tokens).float()
        (grad,) = torch.autograd.grad((u * v).sum(), e)
        total += grad
    scores = (total / len(alphas) * embeds).sum(-1).abs()
    return (scores * _content_mask(tokens, bare)).detach().cpu()


def keep_top_tokens(tokens: torch.Tensor, attributions: torch.Tensor, top_m: int, model: nn.Module) -> torch.Tensor:
    """Masked captions: the start token, the ``top_m`` most attributed word tokens in caption order,
    the end token, then padding (variant A of the spec: the ascent sees only trigger-related words).

    Example:
        >>> masked = keep_top_tokens(clip.tokenize(["a photo of a truck."]), attr, 1, clip)  # doctest: +SKIP
    """
    if top_m < 1:
        raise ConfigError(f"top_m={top_m}: keep at least one token")
    bare = cast(Any, model)
    content = _content_mask(tokens, bare)
    masked = torch.full_like(tokens, bare.pad_token_id)
    for i in range(len(tokens)):
        positions = content[i].nonzero().flatten()
        scores = attributions[i, positions]
        keep = positions[torch.argsort(scores, descending=True, stable=True)[:top_m]].sort().values
        row = [int(tokens[i, p]) for p in keep.tolist()]
        if bare.sot_token_id is not None:
            row = [int(bare.sot_token_id), *row]
        if bare.eot_token_id is not None:
            row.append(int(bare.eot_token_id))
        masked[i, : len(row)] = torch.tensor(row[: tokens.shape[1]], dtype=tokens.dtype)
    return masked


def cartesian_pairs(num_images: int, num_captions: int, *, max_pairs: int | None = None,
                    include_diagonal: bool = True, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Every (image a, caption b) of the selected set, sub-sampled to ``max_pairs`` when larger.

    Poisoned images all carry the trigger and poisoned captions all name the target, so every
    cross pair is a valid trigger -> target pair: ``n`` samples give ``n * n`` unlearning pairs.
    The diagonal (the original pairs) is always kept when sub-sampling.

    Returns:
        ``(image_positions, caption_positions)``, int64 arrays of the same length.

    Example:
        >>> a, b = cartesian_pairs(3, 3)
        >>> len(a), sorted(set(zip(a.tolist(), b.tolist())))[:4]
        (9, [(0, 0), (0, 1), (0, 2), (1, 0)])
    """
    if num_images < 1 or num_captions < 1:
        raise ConfigError("the unlearning set is empty: nothing to unlearn")
    grid_a, grid_b = np.meshgrid(np.arange(num_images), np.arange(num_captions), indexing="ij")
    a, b = grid_a.reshape(-1), grid_b.reshape(-1)
    if not include_diagonal and num_images == num_captions:
        off = a != b
        a, b = (a[off], b[off]) if off.any() else (a, b)
    if max_pairs is not None and len(a) > max_pairs:
        rng = np.random.default_rng(seed)
        diagonal = np.flatnonzero(a == b)[:max_pairs]
        others = np.setdiff1d(np.arange(len(a)), diagonal)
        keep = np.sort(np.r_[diagonal, rng.choice(others, max_pairs - len(diagonal), replace=False)])
        a, b = a[keep], b[keep]
    return a.astype(np.int64), b.astype(np.int64)


# ---- step 5: unlearning ------------------------------------------------------------------------------
def contrastive_unlearning_loss(u: torch.Tensor, v: torch.Tensor, scale: torch.Tensor,
                                neg_u: torch.Tensor | None = None, neg_v: torch.Tensor | None = None,
                                reduction: str = "mean") -> torch.Tensor:
    """The CLIP loss of the unlearning pairs ``(u_i, v_i)``, with optional extra negatives.

    Without negatives it is the symmetric InfoNCE of the batch. With clean negatives, row i scores
    image i against ``[v_i, neg_v]`` and caption i against ``[u_i, neg_u]`` (only the unlearning rows
    enter the loss, so ascending it never unlearns the clean pairs). When every masked caption of a
    batch is the same (one target word), the plain in-batch loss is ``log B`` with zero
    gradient on the image->text half (only the text->image half moves, and it merely reshuffles the
    images); the clean negatives are what gives the ascent a direction away from the target text.
    """
    if neg_u is None or neg_v is None or len(neg_u) == 0:
        if reduction != "mean":
            raise ConfigError("per-pair unlearning losses need clean negatives: set negatives > 0")
        return _info_nce(u, v, scale)
    labels = torch.zeros(len(u), dtype=torch.long, device=u.device)
    pos = (u * v).sum(-1, keepdim=True)
    i2t = torch.cat([pos, u @ neg_v.T], dim=1) * scale
    t2i = torch.cat([pos, v @ neg_u.T], dim=1) * scale
    rows = 0.5 * (F.cross_entropy(i2t, labels, reduction="none") + F.cross_entropy(t2i, labels, reduction="none"))
    return rows if reduction == "none" else rows.mean()


def _image_mask(model: Any, images: torch.Tensor, tokens: torch.Tensor, keep: float, device: torch.device
                ) -> torch.Tensor:
    """Images with only their most attributed pixels kept (|grad x input| pooled over 3x3), the
    rest set to each image's per-channel mean (the paper's "image mask" variant, Table IV)."""
    x = images.to(device).requires_grad_(True)
    with torch.no_grad():
        v = model.encode_text(tokens.to(device)).float()
    u = model.encode_image(x).float()
    (grad,) = torch.autograd.grad((u * v).sum(), x)
    saliency = F.avg_pool2d((grad * x).abs().sum(1, keepdim=True), 3, stride=1, padding=1)
    flat = saliency.flatten(1)
    k = max(1, int(round(keep * flat.shape[1])))
    threshold = flat.topk(k, dim=1).values[:, -1:]
    mask = (flat >= threshold).view_as(saliency).float()
    mean = x.detach().mean(dim=(2, 3), keepdim=True)
    return (x.detach() * mask + mean * (1 - mask)).cpu()


def unlearn(
    model: nn.Module,
    images: torch.Tensor,
    tokens: torch.Tensor,
    pairs: tuple[np.ndarray, np.ndarray],
    cfg: ClipTrainConfig,
    *,
    negatives: Callable[[torch.Generator], tuple[torch.Tensor, torch.Tensor]] | None = None,
    max_loss: float | None = None,
    retain: Callable[[torch.Generator], tuple[torch.Tensor, torch.Tensor]] | None = None,
    retain_weight: float = 0.0,
    patience: int = 5,
    device: torch.device | str | None = None,
    ckpt_dir: str | os.PathLike | None = None,
    progress: bool = False,
    callback: Callable[[int], dict[str, float] | None] | None = None,
) -> dict[str, list[float]]:
    """Gradient ascent on the CLIP loss of the unlearning pairs, in place (paper IV-C).

    Each step takes ``cfg.batch_size`` of the ``(image a, caption b)`` pairs and ascends
    :func:`contrastive_unlearning_loss` of ``(images[a], tokens[b])`` (with clean ``negatives`` when
    given); ``max_loss`` stops the ascent of the pairs whose loss is already above it (the ascent is
    otherwise unbounded); ``retain_weight`` adds a descended CLIP loss on clean ``retain`` batches
    (the paper has none: 0 by default, an ablation).

    Args:
        model: the poisoned ``ClipModel`` (the ascent starts from it, not from the overfitted copy).
        images: the unlearning images ``(n_img, C, H, W)`` (masked or not).
        tokens: the unlearning captions ``(n_cap, L)`` (token-masked or full).
        pairs: ``(image_positions, caption_positions)`` from :func:`cartesian_pairs`.
        cfg: the recipe (paper: 5 epochs over the pairs, batch 64, lr 1e-5).
        negatives: ``negatives(generator) -> (images, tokens)`` of clean pairs, or None.
        max_loss: the bound above which a pair's loss is no longer ascended (None: no bound).
        retain: ``retain(generator) -> (images, tokens)`` of clean pairs for the retain term.
        retain_weight: weight of the retain term.
        patience: with ``max_loss``, stop once every pair of ``patience`` consecutive batches is
            above the bound (nothing is left to ascend; the steps after it would only move the
            model through the retain term and the decay).
        device: where to compute.
        ckpt_dir: resumable checkpoints.
        progress: progress bar.
        callback: see :func:`train_stage` (e.g. CA and ASR along the ascent, for the curve).
    """
    device = resolve_device(device)
    bare = cast(Any, model).to(device)
    a_idx, b_idx = (np.asarray(p, dtype=np.int64) for p in pairs)
    order = np.arange(len(a_idx))
    saturated = [0]  # consecutive batches with every pair above the bound

    def loss_fn(generator: torch.Generator) -> torch.Tensor:
        pick = _draw(order, cfg.batch_size, generator)
        u, v, scale = _features(bare, images[torch.as_tensor(a_idx[pick])], tokens[torch.as_tensor(b_idx[pick])],
                                device, cfg.amp)
        neg_u = neg_v = None
        if negatives is not None:
            neg_images, neg_tokens = negatives(generator)
            neg_u, neg_v, _ = _features(bare, neg_images, neg_tokens, device, cfg.amp)
        if max_loss is None:
            loss = -contrastive_unlearning_loss(u, v, scale, neg_u, neg_v)
        elif neg_u is not None:  # per-pair losses, each ascended only while below the bound
            rows = contrastive_unlearning_loss(u, v, scale, neg_u, neg_v, reduction="none")
            saturated[0] = saturated[0] + 1 if bool((rows.detach() >= max_loss).all()) else 0
            loss = -rows.clamp(max=max_loss).mean()
        else:
            plain = contrastive_unlearning_loss(u, v, scale)
            saturated[0] = saturated[0] + 1 if float(plain.detach()) >= max_loss else 0
            loss = -plain.clamp(max=max_loss)
        if retain is not None and retain_weight > 0:
            r_images, r_tokens = retain(generator)
            ru, rv, rscale = _features(bare, r_images, r_tokens, device, cfg.amp)
            loss = loss + retain_weight * _info_nce(ru, rv, rscale)
        return loss

    stop = None if max_loss is None else (lambda: saturated[0] >= patience)
    return train_stage(bare, loss_fn, stage_steps(len(a_idx), cfg), cfg, ckpt_dir=ckpt_dir, progress=progress,
                       desc="unlearn", callback=callback, should_stop=stop, freeze_norm_stats=True)


def mask_images(model: nn.Module, images: torch.Tensor, tokens: torch.Tensor, *, keep: float = 0.1,
                device: torch.device | str | None = None, batch_size: int = 128) -> torch.Tensor:
    """The paper's image-mask variant: keep the ``keep`` share of most attributed pixels of each image."""
    if not 0.0 < keep <= 1.0:
        raise ConfigError(f"image_keep={keep}: use a share in (0, 1]")
    device = resolve_device(device)
    bare = cast(Any, model).to(device).eval()
    parts = [_image_mask(bare, images[i:i + batch_size], tokens[i:i + batch_size], keep, device)
             for i in range(0, len(images), batch_size)]
    return torch.cat(parts)
