"""Surrogates the protector trains itself, for runs where no pretrained weights can be downloaded.

UC clusters the protected images in the feature space of a surrogate pretrained elsewhere (ImageNet
ResNet-50 or CLIP RN50 in the paper), and the protector has no labels. Offline there are no such
weights, so :func:`pretrain_surrogate` trains one on the protector's own images first:

- ``simclr:<arch>``, the **label-free surrogate**: ``create_model(arch)`` whose encoder is
  pre-trained with SimCLR (:func:`~obstructlib.primitives.simclr.simclr_pretrain`) on the images
  alone. Every label is replaced by 0 before an item reaches the loop, so no label is read; the
  k-means clusters are whatever the contrastive features group together. Deviation, deliberate:
  the paper's surrogate never saw the protected set; pre-training on it is the offline stand-in
  the spec allows (Sec. 4.2, "a small CNN trained with a self-supervised objective").
- ``classifier:<arch>`` with ``epochs > 0``, the **label-aware surrogate**: supervised training on
  the dataset's own labels. Its features, and so UC's clusters, follow the classes: the protector
  uses labels UC assumes it does not have. Kept as an option for comparison, not as the default.
- anything else (``rn50``, ``clip:<arch>``, ``classifier:<arch>`` with ``epochs = 0``): None, and
  :func:`~obstructlib.methods.uc.protect` builds the surrogate from its name.

The returned classifier goes to ``protect(..., surrogate=model)``, which clusters its penultimate
features (``model.features``) and records it under ``cfg.surrogate`` (``simclr:<arch>``).

References:
    Zhang et al., Unlearnable Clusters, arXiv:2301.01217 (label-agnostic surrogates).
    Chen et al., SimCLR, arXiv:2002.05709.

Example:
    >>> train = load_dataset("digits", split="train", image_size=16, channels=3)   # doctest: +SKIP
    >>> model = pretrain_surrogate("simclr:digits_cnn", train, num_classes=10, epochs=5,
    ...                            recipe=ClassifierTrainConfig(), simclr=SimCLRConfig())  # doctest: +SKIP
    >>> result = protect(train, UCConfig(surrogate="simclr:digits_cnn"), surrogate=model)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

import torch

from obstructlib.data import ProtectedDataset, SizedDataset
from obstructlib.engine import ClassifierTrainConfig, fit_classifier
from obstructlib.errors import ConfigError
from obstructlib.models import ImageClassifier, create_model
from obstructlib.primitives.simclr import SimCLRConfig, simclr_pretrain

__all__ = ["pretrain_surrogate"]


class _ImagesOnly:
    """Items ``(image, 0)`` of ``dataset``: its labels (item ``[1]``, ``.labels``, ``.classes``) are never read."""

    def __init__(self, dataset: SizedDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.dataset[index][0], 0


def pretrain_surrogate(
    name: str,
    train: SizedDataset,
    *,
    num_classes: int,
    epochs: int,
    recipe: ClassifierTrainConfig,
    simclr: SimCLRConfig,
    device: torch.device | str | None = None,
    ckpt_dir: str | os.PathLike | None = None,
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
    progress: bool = True,
) -> ImageClassifier | None:
    """Train the surrogate ``name`` on ``train`` when it needs training; None when it does not.

    The model is initialised from the global RNG (seed it first); training resumes from
    ``ckpt_dir`` (a finished run loads its weights and trains nothing).

    Args:
        name: ``simclr:<arch>`` (label-free), ``classifier:<arch>`` (label-aware, supervised) or
            any other surrogate name (returns None).
        train: the protector's images, items ``(image (C, H, W) in [0, 1], label, ...)``; the
            ``simclr:`` path reads only the image.
        num_classes: width of the classifier's head (the ``simclr:`` path never trains it).
        epochs: passes over ``train``; 0 returns None (``simclr:`` then needs
            ``UCConfig.surrogate_checkpoint``, else :func:`protect` says to pretrain it).
        recipe: supervised recipe of the ``classifier:`` path (its ``epochs`` is replaced).
        simclr: SimCLR recipe of the ``simclr:`` path (its ``epochs`` is replaced).
        device: where to train (None/``"auto"``: CUDA when available).
        ckpt_dir: checkpoint directory of the training (None: no checkpoints).
        augment: per-image training augmentation of the ``classifier:`` path (e.g.
            :func:`~obstructlib.primitives.augment.pad_crop_flip`); SimCLR uses its own views.
        progress: show progress bars.

    Returns:
        The trained :class:`ImageClassifier` in eval mode (pass it to ``protect`` as
        ``surrogate=``), or None.

    Raises:
        ConfigError: negative ``epochs`` or an unknown architecture.
    """
    if epochs < 0:
        raise ConfigError(f"surrogate epochs={epochs}: use 0 or more")
    kind, _, arch = name.partition(":")
    if epochs == 0 or kind not in ("simclr", "classifier"):
        return None
    model = create_model(arch, num_classes=num_classes)
    if kind == "simclr":
        simclr_pretrain(model, _ImagesOnly(train), dataclasses.replace(simclr, epochs=epochs), device,
                        ckpt_dir=ckpt_dir, progress=progress)
    else:  # label-aware: these labels train the surrogate only, never the noise
        fit_classifier(model, ProtectedDataset(train, None, augment=augment), None,
                       dataclasses.replace(recipe, epochs=epochs), device, ckpt_dir=ckpt_dir, progress=progress)
    return model.eval()
