"""UC's evaluation protocol: a label-agnostic hacker trains a fresh classifier on the protected images.

The hacker of Unlearnable Clusters (arXiv:2301.01217) may relabel the images however they like
(``labels``: the original classes, coarse superclasses or a seeded random grouping), apply a
countermeasure, and trains a target model from scratch; the protection is measured by that
model's accuracy on the CLEAN test set under the same labels. :func:`evaluate` runs the hacker
once -- on the clean images (``store=None``, the baseline row) or on the protected ones; the
same :class:`HackerConfig` must serve both rows, so the difference measures the protection.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from obstructlib.data import PerturbationStore, ProtectedDataset, SizedDataset
from obstructlib.data.labels import parse_protocol, relabel_dataset
from obstructlib.engine import ClassifierTrainConfig, fit_classifier
from obstructlib.errors import ConfigError, check_range
from obstructlib.models import create_model
from obstructlib.primitives.augment import pad_crop_flip
from obstructlib.primitives.countermeasures import (
    BATCH_COUNTERMEASURES,
    COUNTERMEASURES,
    AdvTrainConfig,
    fit_defended,
    image_countermeasure,
)

__all__ = ["HackerConfig", "evaluate"]


@dataclass
class HackerConfig:
    """The hacker of UC's threat model.

    Attributes:
        target_model: the classifier trained from scratch (:func:`~obstructlib.models.create_model`).
        labels: the hacker's label protocol: ``original``, ``coarse`` or ``random-N``.
        label_seed: seed of the ``random-N`` grouping.
        countermeasure: ``none``, ``jpeg``, ``grayscale``, ``cutout``, ``mixup`` or ``adv``.
        augment: random crop (padding 1/8 of the side) and horizontal flip while training.
        jpeg_quality: quality of ``jpeg``.
        cutout_size: square side in pixels of ``cutout``.
        mixup_alpha: Beta parameter of ``mixup``.
        adv: PGD adversarial training of ``adv``.
        train: the training recipe (its ``seed`` sets the data order).
        seed: the hacker's stream: ``torch.manual_seed`` right before the model is built (its
            initial weights) and the data order (it replaces ``train.seed``); draw it with
            ``derive_seed(seed, "hacker", i)`` so it never equals the protector's. None leaves the
            global RNG and ``train.seed`` as they are.
    """

    target_model: str = "resnet20"
    labels: str = "original"
    label_seed: int = 0
    countermeasure: str = "none"
    augment: bool = True
    jpeg_quality: int = 10
    cutout_size: int = 8
    mixup_alpha: float = 1.0
    adv: AdvTrainConfig = field(default_factory=AdvTrainConfig)
    train: ClassifierTrainConfig = field(default_factory=ClassifierTrainConfig)
    seed: int | None = None

    def validate(self) -> None:
        """Raise one-line :class:`ConfigError` for bad values."""
        parse_protocol(self.labels)
        if self.countermeasure not in COUNTERMEASURES:
            raise ConfigError(f"countermeasure={self.countermeasure!r}: use one of {', '.join(COUNTERMEASURES)}")
        check_range("jpeg_quality", self.jpeg_quality, 1, 100)
        check_range("mixup_alpha", self.mixup_alpha, 1e-6, 100.0)
        if self.cutout_size < 1:
            raise ConfigError(f"cutout_size={self.cutout_size}: use 1 or more pixels")
        self.adv.validate()
        self.train.validate()


def _recipe(cfg: HackerConfig) -> ClassifierTrainConfig:
    """The training recipe, its data order following the hacker's ``seed`` when one is set."""
    return cfg.train if cfg.seed is None else dataclasses.replace(cfg.train, seed=cfg.seed)


def evaluate(
    train: SizedDataset,
    cfg: HackerConfig,
    *,
    test: SizedDataset,
    store: PerturbationStore | None = None,
    device: torch.device | str | None = None,
    ckpt_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the hacker once: relabel, publish (noise, 8-bit rounding, countermeasure), train, test.

    Args:
        train: the protector's training images ``(image (C, H, W) in [0, 1], label)``, index-aligned
            with ``store``, without augmentation.
        cfg: the hacker.
        test: the clean test images, relabelled with the same protocol and seed.
        store: the protection (None: the clean baseline row).
        device: where to train.
        ckpt_dir: checkpoint directory of the training (resumes; None: none).
        progress: show progress bars.

    Returns:
        ``test_acc`` (final epoch, clean test set), ``train_acc``, ``curve`` (test accuracy per
        epoch), ``chance`` (1 / hacker classes), ``num_classes``, ``label_mapping`` (original ->
        hacker class) and the full ``history``.
    """
    cfg.validate()
    train_h = relabel_dataset(train, cfg.labels, seed=cfg.label_seed)
    test_h = relabel_dataset(test, cfg.labels, seed=cfg.label_seed)
    mapping = train_h.mapping
    if mapping is None:  # relabel_dataset always sets it
        raise ConfigError("the relabelled training set has no class mapping: relabel it with relabel_dataset")
    transform = image_countermeasure(cfg.countermeasure, jpeg_quality=cfg.jpeg_quality, cutout_size=cfg.cutout_size)
    data = ProtectedDataset(train_h, store, transform, augment=pad_crop_flip if cfg.augment else None)
    if cfg.seed is not None:
        torch.manual_seed(cfg.seed)
    model = create_model(cfg.target_model, num_classes=len(train_h.classes))
    ckpt = None if ckpt_dir is None else Path(ckpt_dir)
    if cfg.countermeasure in BATCH_COUNTERMEASURES:
        history = fit_defended(model, data, test_h, _recipe(cfg), device, countermeasure=cfg.countermeasure,
                               mixup_alpha=cfg.mixup_alpha, adv=cfg.adv, ckpt_dir=ckpt, progress=progress)
    else:
        history = fit_classifier(model, data, test_h, _recipe(cfg), device, ckpt_dir=ckpt, progress=progress)
    train_acc = history.get("train_acc") or []
    return {
        "test_acc": float(history["test_acc"][-1]),
        "train_acc": float(train_acc[-1]) if train_acc else None,
        "curve": [float(v) for v in history["test_acc"]],
        "chance": 1.0 / len(train_h.classes),
        "num_classes": len(train_h.classes),
        "label_mapping": mapping.tolist(),
        "history": history,
    }
