"""The defences UBT is compared with (paper V, Table II), each a copy of its input model trained once.

- :func:`finetune_clean` ("FT"): the plain CLIP loss on clean held-out pairs;
- :func:`cleanclip`: the CLIP loss plus CleanCLIP's in-modal self-supervision, on clean pairs
  (image: a SimCLR-style augmented view; text: :func:`eda`);
- :func:`roclip`: a training-time defence: the victim's own fine-tuning run on the poisoned pairs,
  starting from the clean pretrained model, where every other epoch pairs each image with its
  nearest text in a memory bank instead of its own caption;
- :func:`abl`: Anti-Backdoor Learning's isolate-then-unlearn, adapted to CLIP: the pairs the
  poisoned model fits best are isolated and their CLIP loss is ascended (optionally on masked
  captions: the paper's "ABL + text mask" row).

Every baseline returns a NEW model (a ``copy.deepcopy`` of its input, which is never modified) and
runs in :func:`~obstructlib.methods.ubt.steps.train_stage`, so it is deterministic given
``cfg.seed`` (every random draw of a step comes from that step's generator) and resumes exactly
from ``ckpt_dir``; a finished run called again loads its checkpoint and trains no further.

References:
    Liu et al., "Efficient Backdoor Defense in Multimodal Contrastive Learning: A Token-Level
    Unlearning Method for Mitigating Threats", arXiv:2409.19526 (the comparison).
    Bansal et al., "CleanCLIP: Mitigating Data Poisoning Attacks in Multimodal Contrastive
    Learning", arXiv:2303.03323.
    Wei and Zou, "EDA: Easy Data Augmentation Techniques for Boosting Performance on Text
    Classification Tasks", arXiv:1901.11196.
    Chen et al., SimCLR, arXiv:2002.05709 (the image view used here in place of AutoAugment).
    Yang, Gao and Mirzasoleiman, "Robust Contrastive Language-Image Pretraining against Data
    Poisoning and Backdoor Attacks" (RoCLIP), NeurIPS 2023, arXiv:2303.06854.
    Dwibedi et al., "With a Little Help from My Friends" (NNCLR, the nearest-neighbour bank), arXiv:2104.14548.
    Li et al., "Anti-Backdoor Learning: Training Clean Models on Poisoned Data", arXiv:2110.11571.

Example:
    >>> ft = finetune_clean(poisoned, clean_pairs, CleanCLIPConfig().train)               # doctest: +SKIP
    >>> cc = cleanclip(poisoned, clean_pairs, CleanCLIPConfig())                           # doctest: +SKIP
    >>> rc = roclip(pretrained, poisoned_pairs, RoCLIPConfig(train=victim_recipe))         # doctest: +SKIP
    >>> unlearned, isolated = abl(poisoned, poisoned_pairs, ABLConfig())                   # doctest: +SKIP
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from obstructlib.engine import ClipTrainConfig, autocast, resolve_device
from obstructlib.engine.checkpoint import STATE_FILE, has_checkpoint
from obstructlib.errors import ConfigError, reading
from obstructlib.methods.ubt.steps import (
    PairTensors,
    _draw,
    _features,
    _info_nce,
    contrastive_unlearning_loss,
    pair_similarities,
    select_highest,
    stage_steps,
    train_stage,
)
from obstructlib.primitives.augment import simclr_augment

__all__ = [
    "ABLConfig",
    "CleanCLIPConfig",
    "RoCLIPConfig",
    "abl",
    "cleanclip",
    "eda",
    "finetune_clean",
    "roclip",
]

_M = TypeVar("_M", bound=nn.Module)
Device = torch.device | str | None
PathLike = str | os.PathLike | None


# ---- recipes -------------------------------------------------------------------------------------
def _cleanclip_recipe() -> ClipTrainConfig:
    """CleanCLIP's fine-tuning recipe: 10 epochs, batch 64, lr 1e-5, 50 warm-up steps, AdamW (0.9, 0.999, 1e-8)."""
    return ClipTrainConfig(steps=None, epochs=10, batch_size=64, lr=1e-5, warmup_steps=50, weight_decay=0.1,
                           betas=(0.9, 0.999), eps=1e-8)


def _abl_recipe() -> ClipTrainConfig:
    """ABL's unlearning recipe in UBT's comparison (paper V-A): 10 epochs, batch 64, lr 1e-6, no warm-up."""
    return ClipTrainConfig(steps=None, epochs=10, batch_size=64, lr=1e-6, warmup_steps=0, weight_decay=0.1,
                           betas=(0.9, 0.999), eps=1e-8)


def _check_weight(name: str, value: float) -> None:
    if not (math.isfinite(value) and value >= 0):
        raise ConfigError(f"{name}={value}: use a weight >= 0")


def _check_share(name: str, value: float, *, allow_zero: bool) -> None:
    low_ok = value >= 0 if allow_zero else value > 0
    if not (math.isfinite(value) and low_ok and value <= 1):
        raise ConfigError(f"{name}={value}: use a share in {'[0, 1]' if allow_zero else '(0, 1]'}")


@dataclass
class CleanCLIPConfig:
    """CleanCLIP (arXiv:2303.03323): fine-tune on clean pairs with the CLIP loss plus in-modal terms.

    ``loss = clip_weight * L_CLIP(image, text)
    + inmodal_weight * 0.5 * [InfoNCE(f(image), f(aug image)) + InfoNCE(g(text), g(EDA text))]``,
    the in-modal InfoNCE being one cross-entropy over the batch (row i's positive is column i),
    scaled by the model's logit scale, as in CleanCLIP's ``get_loss``.

    Attributes:
        train: the recipe (default CleanCLIP's: 10 epochs, batch 64, lr 1e-5, 50 warm-up steps,
            weight decay 0.1, betas (0.9, 0.999), eps 1e-8).
        inmodal_weight: weight of the in-modal term (0: plain fine-tuning, same as :func:`finetune_clean`).
        clip_weight: weight of the cross-modal CLIP loss.
        eda_alpha: share of a caption's words :func:`eda` changes.
    """

    train: ClipTrainConfig = field(default_factory=_cleanclip_recipe)
    inmodal_weight: float = 1.0
    clip_weight: float = 1.0
    eda_alpha: float = 0.1

    def validate(self) -> None:
        """Raise :class:`ConfigError` for values outside their ranges."""
        self.train.validate()
        _check_weight("inmodal_weight", self.inmodal_weight)
        _check_weight("clip_weight", self.clip_weight)
        if self.inmodal_weight == 0 and self.clip_weight == 0:
            raise ConfigError("clip_weight and inmodal_weight are both 0: give one of them a positive weight")
        _check_share("eda_alpha", self.eda_alpha, allow_zero=True)


@dataclass
class RoCLIPConfig:
    """RoCLIP (arXiv:2303.06854), adapted from pre-training to fine-tuning.

    Attributes:
        train: the victim's own recipe (RoCLIP replaces the poisoned training run, so it trains
            on the poisoned pairs as the victim did).
        pool_size: rows of the FIFO memory bank of text embeddings (official 21,845 for
            pre-training; sized to the data here).
        break_every: every ``break_every``-th epoch is a "break" epoch: 0-based epochs
            ``break_every - 1, 2 * break_every - 1, ...`` (with 2: epochs 1, 3, ..., the official
            code's 1-based ``epoch % break_epoch == 0``); the other epochs use the plain CLIP loss.
        nn_query: what looks up the positive text in the bank: ``"image"`` (the official code and
            the paper: each image is matched with the bank text most similar to the image) or
            ``"text"`` (NNCLR-style: the nearest neighbour of the image's own caption embedding).
    """

    train: ClipTrainConfig
    pool_size: int = 2048
    break_every: int = 2
    nn_query: str = "image"

    def validate(self) -> None:
        """Raise :class:`ConfigError` for values outside their ranges."""
        self.train.validate()
        if self.pool_size < 1:
            raise ConfigError(f"pool_size={self.pool_size}: the memory bank needs at least one row")
        if self.break_every < 1:
            raise ConfigError(f"break_every={self.break_every}: use a positive number of epochs")
        if self.nn_query not in ("image", "text"):
            raise ConfigError(f"nn_query={self.nn_query!r}: use 'image' (official RoCLIP) or 'text' (NNCLR-style)")


@dataclass
class ABLConfig:
    """ABL (arXiv:2110.11571) adapted to CLIP: isolate the best-fitted pairs, ascend their CLIP loss.

    Attributes:
        isolate_fraction: share of the training pairs isolated: those the poisoned model fits best
            (highest image-text cosine, i.e. lowest loss); ``ceil(fraction * N)`` pairs.
        isolate_count: the number of isolated pairs instead (overrides the fraction).
        train: the unlearning recipe (default: 10 epochs over the isolated pairs, batch 64, lr 1e-6
            as in the paper's V-A, no warm-up, AdamW (0.9, 0.999, 1e-8), weight decay 0.1).
        negatives: clean negatives per step drawn from the non-isolated pairs (0: the plain
            in-batch CLIP loss of the isolated pairs), see
            :func:`~obstructlib.methods.ubt.steps.contrastive_unlearning_loss`.
    """

    isolate_fraction: float = 0.01
    isolate_count: int | None = None
    train: ClipTrainConfig = field(default_factory=_abl_recipe)
    negatives: int = 0

    def validate(self) -> None:
        """Raise :class:`ConfigError` for values outside their ranges."""
        self.train.validate()
        _check_share("isolate_fraction", self.isolate_fraction, allow_zero=False)
        if self.isolate_count is not None and self.isolate_count < 1:
            raise ConfigError(f"isolate_count={self.isolate_count}: isolate at least one pair (or None)")
        if self.negatives < 0:
            raise ConfigError(f"negatives={self.negatives}: use 0 or more clean negatives per step")


# ---- text augmentation ---------------------------------------------------------------------------
def eda(caption: str, rng: np.random.Generator, alpha: float = 0.1) -> str:
    """EDA-style text augmentation (Wei & Zou, arXiv:1901.11196) without WordNet (not available offline).

    One of random swap (two words change places), random deletion (a word is dropped, the last
    one never) or random insertion (a word already in the caption is inserted at a random
    position; EDA inserts a synonym) is chosen at random and applied ``n = max(1, round(alpha *
    words))`` times. EDA's synonym replacement needs WordNet and is left out. Words are split on
    white space and joined with single spaces.

    Args:
        caption: the caption (at least one word).
        rng: the generator of every draw (the same state gives the same view).
        alpha: EDA strength, the share of words changed, in [0, 1].

    Returns:
        The augmented caption, never empty; its words are the caption's (a sub-multiset after a
        deletion, the same multiset after a swap, duplicates added by an insertion).

    Example:
        >>> [eda("a photo of a cat.", np.random.default_rng(seed), 0.2) for seed in (0, 1)]
        ['a photo of a a cat.', 'a photo a cat.']
    """
    _check_share("eda_alpha", alpha, allow_zero=True)
    words = caption.split()
    if not words:
        raise ConfigError(f"eda: the caption {caption!r} has no words; drop empty captions from the pairs")
    n = max(1, round(alpha * len(words)))
    out = list(words)
    op = int(rng.integers(3))
    if op == 0:  # random swap
        for _ in range(n if len(out) > 1 else 0):
            i, j = (int(k) for k in rng.choice(len(out), size=2, replace=False))
            out[i], out[j] = out[j], out[i]
    elif op == 1:  # random deletion, at least one word kept
        k = min(n, len(out) - 1)
        if k > 0:
            drop = {int(i) for i in rng.choice(len(out), size=k, replace=False)}
            out = [w for i, w in enumerate(out) if i not in drop]
    else:  # random insertion of one of the caption's own words
        for _ in range(n):
            word = words[int(rng.integers(len(words)))]
            out.insert(int(rng.integers(len(out) + 1)), word)
    return " ".join(out)


# ---- shared pieces ---------------------------------------------------------------------------------
def _copy_to(model: _M, device: torch.device) -> _M:
    """A deep copy of ``model`` on ``device`` (the input model stays where and as it is)."""
    return copy.deepcopy(model).to(device)


def _one_way_nce(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of ``scale * a @ b.T`` with row i's positive at column i (CleanCLIP's in-modal term)."""
    labels = torch.arange(len(a), device=a.device)
    return F.cross_entropy(scale * a @ b.T, labels)


def _cleanclip_terms(model: Any, images: torch.Tensor, tokens: torch.Tensor, aug_images: torch.Tensor,
                     aug_tokens: torch.Tensor, device: torch.device, amp: bool
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(L_CLIP, L_inmodal)`` of a batch and its augmented views (each view its own forward pass).

    Shape:
        ``images``/``aug_images`` ``(B, C, H, W)``, ``tokens``/``aug_tokens`` ``(B, L)`` -> two scalars.
    """
    u, v, scale = _features(model, images, tokens, device, amp)
    au, av, _ = _features(model, aug_images, aug_tokens, device, amp)
    return _info_nce(u, v, scale), 0.5 * (_one_way_nce(u, au, scale) + _one_way_nce(v, av, scale))


def _eda_rng(generator: torch.Generator) -> np.random.Generator:
    """A NumPy generator seeded from the step's torch generator (the step's text views replay exactly)."""
    return np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=generator)))


# ---- FT -------------------------------------------------------------------------------------------------
def finetune_clean(poisoned_model: _M, clean_pairs: Any, cfg: ClipTrainConfig, *, device: Device = None,
                   ckpt_dir: PathLike = None, progress: bool = False) -> _M:
    """The "FT" baseline: a copy of the poisoned CLIP fine-tuned with the plain CLIP loss on clean pairs.

    Each step draws ``cfg.batch_size`` pairs (without replacement, from the step's generator) and
    minimises their symmetric InfoNCE; ``cfg.epochs`` passes (or ``cfg.steps`` steps).

    Args:
        poisoned_model: the ``ClipModel`` to defend (not modified).
        clean_pairs: clean held-out pairs (a :class:`~obstructlib.data.CaptionDataset`).
        cfg: the recipe (e.g. ``CleanCLIPConfig().train``, to compare with CleanCLIP).
        device: where to train.
        ckpt_dir: resumable checkpoints; None disables them.
        progress: progress bar.

    Returns:
        The fine-tuned copy, in eval mode.
    """
    cfg.validate()
    device = resolve_device(device)
    model = _copy_to(poisoned_model, device)
    view = PairTensors(clean_pairs, model)
    order = np.arange(len(view))

    def loss_fn(generator: torch.Generator) -> torch.Tensor:
        images, tokens = view.batch(_draw(order, cfg.batch_size, generator))
        u, v, scale = _features(model, images, tokens, device, cfg.amp)
        return _info_nce(u, v, scale)

    train_stage(model, loss_fn, stage_steps(len(view), cfg), cfg, ckpt_dir=ckpt_dir, progress=progress,
                desc="finetune")
    return model


# ---- CleanCLIP ----------------------------------------------------------------------------------------
def cleanclip(poisoned_model: _M, clean_pairs: Any, cfg: CleanCLIPConfig, *, device: Device = None,
              ckpt_dir: PathLike = None, progress: bool = False) -> _M:
    """CleanCLIP (arXiv:2303.03323): fine-tune a copy on clean pairs with the CLIP and in-modal losses.

    Each step draws its batch exactly as :func:`finetune_clean` does (so ``inmodal_weight=0``
    gives the same model), then two views: the images through
    :func:`~obstructlib.primitives.augment.simclr_augment` with the step's generator (CleanCLIP
    uses AutoAugment; a batched SimCLR-style crop, flip, colour jitter and greyscale here) and
    every caption through :func:`eda` with a NumPy generator seeded from the step's generator.
    Differences from the official code: the text view is drawn afresh at every step (CleanCLIP
    augments each caption once, when the data set is built), and the original and augmented
    batches go through the model in two forward passes (CleanCLIP concatenates them, so a
    BatchNorm image tower there normalises both views together; ViT towers are unaffected).

    Args:
        poisoned_model: the ``ClipModel`` to defend (not modified).
        clean_pairs: clean pairs (CleanCLIP: 100K clean CC3M pairs).
        cfg: the recipe and the loss weights.
        device: where to train.
        ckpt_dir: resumable checkpoints; None disables them.
        progress: progress bar.

    Returns:
        The defended copy, in eval mode.
    """
    cfg.validate()
    train = cfg.train
    device = resolve_device(device)
    model = _copy_to(poisoned_model, device)
    bare = cast(Any, model)
    view = PairTensors(clean_pairs, model)
    captions = list(clean_pairs.captions)
    if cfg.inmodal_weight > 0 and any(not c.split() for c in captions):
        raise ConfigError("CleanCLIP's text view needs words in every caption: drop the empty captions")
    order = np.arange(len(view))

    def loss_fn(generator: torch.Generator) -> torch.Tensor:
        pick = _draw(order, train.batch_size, generator)
        images, tokens = view.batch(pick)
        if cfg.inmodal_weight == 0:  # no second view to encode
            u, v, scale = _features(bare, images, tokens, device, train.amp)
            return cfg.clip_weight * _info_nce(u, v, scale)
        aug_images = simclr_augment(images, generator)
        rng = _eda_rng(generator)
        aug_tokens = bare.tokenize([eda(captions[int(i)], rng, cfg.eda_alpha) for i in pick])
        clip_term, inmodal_term = _cleanclip_terms(bare, images, tokens, aug_images, aug_tokens, device, train.amp)
        return cfg.clip_weight * clip_term + cfg.inmodal_weight * inmodal_term

    train_stage(model, loss_fn, stage_steps(len(view), train), train, ckpt_dir=ckpt_dir, progress=progress,
                desc="cleanclip")
    return model


# ---- RoCLIP -----------------------------------------------------------------------------------------------
def _break_epoch(epoch: int, every: int) -> bool:
    """Whether 0-based ``epoch`` is a RoCLIP break epoch (the official 1-based ``epoch % every == 0``).

    Example:
        >>> [_break_epoch(e, 2) for e in range(4)]
        [False, True, False, True]
    """
    return (epoch + 1) % every == 0


def _nn_texts(bank: torch.Tensor, queries: torch.Tensor, bank_ids: torch.Tensor | None = None,
              query_ids: torch.Tensor | None = None) -> torch.Tensor:
    """The bank rows nearest (cosine) to each query, detached; a query never gets a row of its own pair.

    Args:
        bank: text embeddings ``(P, D)`` (normalised here).
        queries: ``(B, D)`` (image or text embeddings; normalised here).
        bank_ids: the pair index of each bank row ``(P,)``, or None.
        query_ids: the pair index of each query ``(B,)``: rows of the same pair are skipped (RoCLIP
            matches an image with a text "instead of its own caption"; a small data set's bank often
            holds the pair's own, older embedding). A query whose pair fills the whole bank gets row 0.

    Returns:
        ``bank`` rows ``(B, D)``, as stored (not re-normalised), without gradient.

    Example:
        >>> bank = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
        >>> _nn_texts(bank, torch.tensor([[0.9, 0.1]])).tolist()
        [[2.0, 0.0]]
    """
    bank = bank.detach()
    sims = F.normalize(queries.detach().float(), dim=-1) @ F.normalize(bank.float(), dim=-1).T
    if bank_ids is not None and query_ids is not None:
        same = query_ids.to(bank_ids.device)[:, None] == bank_ids[None, :]
        sims = sims.masked_fill(same.to(sims.device), float("-inf"))
    return bank[sims.argmax(dim=1)]


class _TextBank:
    """A FIFO memory bank of detached text embeddings and the pair index of each row."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.features: torch.Tensor | None = None
        self.ids: torch.Tensor | None = None

    def reset(self, features: torch.Tensor, ids: torch.Tensor) -> None:
        self.features, self.ids = features.detach()[-self.size:], ids[-self.size:]

    def push(self, features: torch.Tensor, ids: torch.Tensor) -> None:
        if self.features is None or self.ids is None:
            self.reset(features, ids)
            return
        self.reset(torch.cat([self.features, features.detach()]), torch.cat([self.ids, ids]))


@torch.no_grad()
def _encode_texts(model: Any, tokens: torch.Tensor, device: torch.device, amp: bool, chunk: int = 256
                  ) -> torch.Tensor:
    """L2-normalised float32 text features of ``tokens``, in eval mode (the mode is restored)."""
    was_training = model.training
    model.eval()
    try:
        parts = []
        for start in range(0, len(tokens), chunk):
            with autocast(device, enabled=amp):
                parts.append(model.encode_text(tokens[start:start + chunk].to(device)).float())
        return torch.cat(parts)
    finally:
        model.train(was_training)


def _resume_step(ckpt_dir: PathLike) -> int:
    """The step a ``train_stage`` run resumes from ``ckpt_dir`` at (0 without a checkpoint)."""
    if not has_checkpoint(ckpt_dir):
        return 0
    path = Path(cast("str | os.PathLike", ckpt_dir)) / STATE_FILE
    with reading(path):
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return int(state["step"])


def roclip(pretrained_model: _M, train_pairs: Any, cfg: RoCLIPConfig, *, device: Device = None,
           ckpt_dir: PathLike = None, progress: bool = False) -> _M:
    """RoCLIP (arXiv:2303.06854) adapted to fine-tuning: the victim's run, made robust to its poisons.

    A training-time defence: it starts from the CLEAN pretrained model and trains a copy on the
    (poisoned) training pairs with the victim's recipe, in place of the poisoned run. Each step
    draws its batch as :func:`finetune_clean` does. In the plain epochs the loss is the CLIP loss;
    in the break epochs (:attr:`RoCLIPConfig.break_every`; the epoch of a step is
    ``step // ceil(len(pairs) / batch_size)``) the positive text of image i is the bank row
    nearest to the image (``nn_query="image"``, the official code) or to its caption's embedding
    (``"text"``), looked up before the batch joins the bank, detached, never a row of the same pair,
    and the symmetric InfoNCE of (images, those texts) is minimised (so the text tower gets no
    gradient in a break epoch, as in the official code).

    The bank is a FIFO of ``pool_size`` detached text embeddings, with every batch's embeddings
    pushed after its lookup in every epoch (the official code fills it in break epochs only,
    starting from lightly's random rows). So that a resume rebuilds it exactly, it is refreshed at
    step 0 and at every multiple of ``cfg.train.ckpt_every`` (the only steps a run resumes at): its
    rows become the current model's embeddings (eval mode) of ``pool_size`` training captions drawn
    with that step's generator after the batch, distributed as the captions of the latest batches a
    FIFO would hold, with fresher embeddings. The refresh happens with or without ``ckpt_dir``, so
    checkpointing never changes the result. The official ``--cross_aug`` augmentations are left out.

    Args:
        pretrained_model: the clean pretrained ``ClipModel`` (not modified).
        train_pairs: the victim's (possibly poisoned) training pairs.
        cfg: the victim's recipe and the bank's settings.
        device: where to train.
        ckpt_dir: resumable checkpoints; None disables them.
        progress: progress bar.

    Returns:
        The trained copy, in eval mode.
    """
    cfg.validate()
    train = cfg.train
    device = resolve_device(device)
    model = _copy_to(pretrained_model, device)
    bare = cast(Any, model)
    view = PairTensors(train_pairs, model)
    order = np.arange(len(view))
    steps_per_epoch = max(1, math.ceil(len(view) / train.batch_size))
    bank = _TextBank(cfg.pool_size)
    step = [_resume_step(ckpt_dir)]  # the step the next loss_fn call computes

    def loss_fn(generator: torch.Generator) -> torch.Tensor:
        current = step[0]
        step[0] += 1
        pick = _draw(order, train.batch_size, generator)
        if current % train.ckpt_every == 0:  # step 0 and every step a resume can start at
            rows = _draw(order, cfg.pool_size, generator)
            bank.reset(_encode_texts(bare, view.tokens[torch.as_tensor(rows)], device, train.amp),
                       torch.as_tensor(rows, device=device))
        images, tokens = view.batch(pick)
        u, v, scale = _features(bare, images, tokens, device, train.amp)
        ids = torch.as_tensor(pick, device=device)
        if _break_epoch(current // steps_per_epoch, cfg.break_every) and bank.features is not None:
            positives = _nn_texts(bank.features, u if cfg.nn_query == "image" else v, bank.ids, ids)
            loss = _info_nce(u, positives, scale)
        else:
            loss = _info_nce(u, v, scale)
        bank.push(v, ids)
        return loss

    train_stage(model, loss_fn, stage_steps(len(view), train), train, ckpt_dir=ckpt_dir, progress=progress,
                desc="roclip")
    return model


# ---- ABL --------------------------------------------------------------------------------------------------
def abl(poisoned_model: _M, train_pairs: Any, cfg: ABLConfig, *, device: Device = None, ckpt_dir: PathLike = None,
        progress: bool = False, token_mask: Callable[[torch.Tensor], torch.Tensor] | None = None
        ) -> tuple[_M, np.ndarray]:
    """ABL (arXiv:2110.11571) adapted to CLIP: isolate the best-fitted pairs, then unlearn them by ascent.

    Isolation: :func:`~obstructlib.methods.ubt.steps.pair_similarities` of the poisoned model
    (eval mode) and :func:`~obstructlib.methods.ubt.steps.select_highest` (the original isolates
    with its LGA loss during the early epochs of training; the poisoned model is given here, and a
    backdoor pair is one it fits best). Unlearning: gradient ascent (minimise
    ``-contrastive_unlearning_loss``) on batches of the isolated pairs, each image with its own
    caption (no Cartesian product), with ``cfg.negatives`` clean negatives per step from the other
    pairs when positive.

    Args:
        poisoned_model: the poisoned ``ClipModel`` (not modified).
        train_pairs: its (poisoned) training pairs.
        cfg: the isolated share and the unlearning recipe.
        device: where to compute.
        ckpt_dir: resumable checkpoints of the ascent; None disables them.
        progress: progress bar.
        token_mask: ``token_mask(tokens) -> masked tokens`` of the same shape, called once on the
            isolated pairs' tokens ``(k, L)`` (in the order of the returned indices) before the
            ascent: the paper's "ABL + text mask" row (Table II). The negatives keep their captions.

    Returns:
        ``(unlearned copy in eval mode, isolated pair indices)``, the indices int64, best fitted first.
    """
    cfg.validate()
    train = cfg.train
    device = resolve_device(device)
    model = _copy_to(poisoned_model, device)
    bare = cast(Any, model)
    view = PairTensors(train_pairs, model)
    scores = pair_similarities(model, train_pairs, device)
    isolated = select_highest(scores, count=cfg.isolate_count, fraction=cfg.isolate_fraction).astype(np.int64)
    iso_tokens = view.tokens[torch.as_tensor(isolated)]
    if token_mask is not None:
        masked = token_mask(iso_tokens)
        if tuple(masked.shape) != tuple(iso_tokens.shape):
            raise ConfigError(f"token_mask returned shape {tuple(masked.shape)} for tokens "
                              f"{tuple(iso_tokens.shape)}: keep one row per caption and the context length")
        iso_tokens = masked.long().cpu()
    rest = np.setdiff1d(np.arange(len(view)), isolated)
    positions = np.arange(len(isolated))

    def loss_fn(generator: torch.Generator) -> torch.Tensor:
        pick = _draw(positions, train.batch_size, generator)
        images = view.images(isolated[pick])
        u, v, scale = _features(bare, images, iso_tokens[torch.as_tensor(pick)], device, train.amp)
        neg_u = neg_v = None
        if cfg.negatives > 0 and len(rest):
            neg_images, neg_tokens = view.batch(_draw(rest, cfg.negatives, generator))
            neg_u, neg_v, _ = _features(bare, neg_images, neg_tokens, device, train.amp)
        return -contrastive_unlearning_loss(u, v, scale, neg_u, neg_v)

    train_stage(model, loss_fn, stage_steps(len(isolated), train), train, ckpt_dir=ckpt_dir, progress=progress,
                desc="abl", freeze_norm_stats=True)  # an ascent, like UBT's: BatchNorm statistics stay
    return model, isolated
