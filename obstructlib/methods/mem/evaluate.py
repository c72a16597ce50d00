"""MEM's evaluation protocol: a hacker trains a CLIP on the published pairs, scored on clean retrieval.

The hacker of Multimodal Unlearnable Examples (arXiv:2407.16307) downloads the image-caption
pairs as published -- noise added and rounded to 8 bits, the trigger inserted into the caption --
optionally applies a countermeasure (random resized crop, JPEG, stripping the first caption
tokens), and trains a CLIP (from scratch or fine-tuning a pretrained one); the protection is
measured by that model's image-text retrieval (and zero-shot accuracy where the test set has
classes) on the CLEAN test pairs. :func:`evaluate` runs the hacker once -- on the clean pairs
(``protection=None``, the baseline row) or on the protected ones.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from obstructlib.data import ProtectedPairs, SizedDataset, pair_collate, tokenize_captions
from obstructlib.engine import ClipTrainConfig, evaluate_clip, fit_clip
from obstructlib.errors import ConfigError, check_range
from obstructlib.methods.mem.method import CaptionPairs, MEMResult
from obstructlib.models import ClipModel, create_clip
from obstructlib.primitives.countermeasures import image_countermeasure

__all__ = ["COUNTERMEASURES", "HackerConfig", "build_hacker", "evaluate"]

COUNTERMEASURES = ("none", "crop", "jpeg", "strip")  # the CLIP hacker's


@dataclass
class HackerConfig:
    """The hacker of MEM's threat model.

    Attributes:
        arch: the hacker's CLIP architecture (an open_clip name or a local tiny one).
        pretrained: open_clip tag the hacker fine-tunes from; None: from scratch.
        model_image_size: the CLIP's input side (None: the architecture's own).
        context_length: tokens per caption (None: the architecture's own).
        countermeasure: ``none``, ``crop``, ``jpeg`` or ``strip``.
        image_size: side of the stored images (``crop`` resizes back to it).
        crop_scale: smallest area fraction of ``crop``.
        jpeg_quality: quality of ``jpeg``.
        strip_tokens: tokens ``strip`` drops after the start token.
        train: the training recipe (its ``seed`` sets the data order).
        seed: the hacker's stream: ``torch.manual_seed`` right before the CLIP is built (its
            initial weights) and the data order (it replaces ``train.seed``); draw it with
            ``derive_seed(seed, "hacker", i)`` so it never equals the protector's. None leaves the
            global RNG and ``train.seed`` as they are.
    """

    arch: str = "tiny-rn"
    pretrained: str | None = None
    model_image_size: int | None = None
    context_length: int | None = None
    countermeasure: str = "none"
    image_size: int = 32
    crop_scale: float = 0.5
    jpeg_quality: int = 10
    strip_tokens: int = 0
    train: ClipTrainConfig = field(default_factory=ClipTrainConfig)
    seed: int | None = None

    def validate(self) -> None:
        """Raise one-line :class:`ConfigError` for bad values."""
        if self.countermeasure not in COUNTERMEASURES:
            raise ConfigError(f"countermeasure={self.countermeasure!r}: use one of {', '.join(COUNTERMEASURES)}")
        check_range("crop_scale", self.crop_scale, 0.05, 1.0)
        check_range("jpeg_quality", self.jpeg_quality, 1, 100)
        if self.strip_tokens < 0:
            raise ConfigError(f"strip_tokens={self.strip_tokens}: use 0 or more")
        self.train.validate()


def build_hacker(cfg: HackerConfig, device: torch.device | str | None = None) -> ClipModel:
    """The hacker's fresh CLIP, seeded with ``cfg.seed``."""
    if cfg.seed is not None:
        torch.manual_seed(cfg.seed)
    kw = {} if cfg.context_length is None else {"context_length": cfg.context_length}
    return create_clip(cfg.arch, cfg.pretrained, device=device, image_size=cfg.model_image_size, **kw)


def _recipe(cfg: HackerConfig) -> ClipTrainConfig:
    """The training recipe, its data order following the hacker's ``seed`` when one is set."""
    return cfg.train if cfg.seed is None else dataclasses.replace(cfg.train, seed=cfg.seed)


def evaluate(
    pairs: CaptionPairs,
    cfg: HackerConfig,
    *,
    test: SizedDataset,
    protection: MEMResult | None = None,
    protected: np.ndarray | None = None,
    device: torch.device | str | None = None,
    ckpt_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the hacker once: publish the pairs, train a fresh CLIP on them, score it on ``test``.

    Args:
        pairs: the protector's caption dataset (items ``(image, caption, image_id)``, ``captions``).
        cfg: the hacker.
        test: the clean test pairs.
        protection: image noise and triggers from :func:`~obstructlib.methods.mem.protect` (or a
            baseline's :class:`MEMResult`); None: the clean baseline row.
        protected: boolean mask of the pairs published protected (partial protection; default all).
        device: where to train.
        ckpt_dir: checkpoint directory of the training (resumes; None: none).
        progress: show progress bars.

    Returns:
        ``metrics`` (:func:`~obstructlib.engine.evaluate_clip` on ``test``), ``history`` (of
        :func:`~obstructlib.engine.fit_clip`), ``model`` (the trained hacker) and ``seconds``
        (``train`` and ``evaluate``).
    """
    cfg.validate()
    model = build_hacker(cfg, device)
    triggers = None if protection is None else protection.triggers
    if triggers is not None and triggers.numel() and int(triggers.max()) >= model.vocab_size:
        raise ConfigError(f"the triggers are ids of a {int(triggers.max()) + 1}+ token vocabulary, the hacker "
                          f"{cfg.arch} has {model.vocab_size}: pick a hacker with the surrogate's tokenizer")
    strip = cfg.strip_tokens if cfg.countermeasure == "strip" else 0
    transform = image_countermeasure(cfg.countermeasure, jpeg_quality=cfg.jpeg_quality, image_size=cfg.image_size,
                                     crop_scale=cfg.crop_scale)
    tokens = tokenize_captions(model, pairs.captions)
    # eot None (a tokenizer without one) is fine until ProtectedPairs inserts a trigger or strips tokens
    data = ProtectedPairs(pairs, tokens, model.eot_token_id,  # type: ignore[arg-type]
                          None if protection is None else protection.store, triggers,
                          None if protection is None else protection.trigger_rows, protected, quantize=True,
                          transform=transform, strip_first=strip)
    start = time.perf_counter()
    history = fit_clip(model, data, _recipe(cfg), device, ckpt_dir=None if ckpt_dir is None else Path(ckpt_dir),
                       progress=progress, collate=pair_collate)
    trained = time.perf_counter()
    metrics = evaluate_clip(model, test, device)
    return {"metrics": metrics, "history": history, "model": model,
            "seconds": {"train": trained - start, "evaluate": time.perf_counter() - trained}}
