"""A small SimCLR: contrastive self-supervised pre-training of a classifier's encoder, without labels.

Two papers need an encoder trained on images alone, and offline there are no public SSL weights,
so the encoder is pre-trained here (on Colab a longer run, or loading a checkpoint into the model,
stands in for the papers' public weights):

- NTP's self-supervised variant protects an encoder pre-trained without labels (SimCLR / MoCo
  checkpoints in the paper): ``obstruct ntp --set source_init=simclr`` pre-trains
  ``model.encoder`` on the source images, then attaches the linear head and fine-tunes;
- Unlearnable Clusters needs a label-free surrogate whose features it k-means-clusters (ImageNet
  or CLIP weights in the paper): the ``simclr:<arch>`` surrogate is pre-trained on the protector's
  own images.

:func:`simclr_pretrain` never uses the labels of the items it is given (they are discarded by the
loop); callers that must prove it wrap their dataset so that labels are not even read.

References:
    Chen et al., A Simple Framework for Contrastive Learning of Visual Representations, arXiv:2002.05709.
    Ding et al., Non-transferable Pruning, arXiv:2410.08015 (Sec. on self-supervised encoders).
    Zhang et al., Unlearnable Clusters, arXiv:2301.01217 (label-agnostic surrogates).

Example:
    >>> history = simclr_pretrain(model, source_train, SimCLRConfig(epochs=1), "cpu")  # doctest: +SKIP
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

from obstructlib.data import SizedDataset
from obstructlib.engine import ResumableLoop, epoch_loader, resolve_device
from obstructlib.errors import ConfigError, check_min, check_range
from obstructlib.models import ImageClassifier
from obstructlib.primitives.augment import simclr_augment
from obstructlib.primitives.feature_losses import nt_xent_loss

__all__ = ["SimCLRConfig", "simclr_pretrain"]


@dataclass
class SimCLRConfig:
    """SimCLR pre-training recipe.

    Attributes:
        epochs: passes over the images (SimCLR trains for hundreds; 100 is a Colab-sized run).
        batch_size: images per batch (2 x batch_size views; larger is better for NT-Xent).
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        temperature: NT-Xent temperature tau (0.5 in SimCLR's CIFAR runs).
        proj_dim: output width of the 2-layer projection head (discarded after pre-training).
        min_crop: smallest area share of the random resized crop.
        seed: seed of the data order and augmentations.
    """

    epochs: int = 100
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-6
    temperature: float = 0.5
    proj_dim: int = 128
    min_crop: float = 0.3
    seed: int = 0

    def validate(self) -> None:
        """Raise a one-line :class:`ConfigError` for bad values."""
        check_min(self, ("epochs", "batch_size", "proj_dim"), prefix="simclr.")
        check_range("simclr.temperature", self.temperature, 1e-3, 10.0)
        check_range("simclr.min_crop", self.min_crop, 0.01, 1.0)
        if self.lr <= 0:
            raise ConfigError(f"simclr.lr={self.lr}: use a value > 0")


def simclr_pretrain(model: ImageClassifier, dataset: SizedDataset, cfg: SimCLRConfig, device: torch.device | str | None,
                    *, ckpt_dir: str | os.PathLike | None = None, progress: bool = True) -> list[float]:
    """Pre-train ``model.encoder`` (in place) with SimCLR on ``dataset``'s images; labels are ignored.

    A 2-layer projection head is trained alongside and discarded. Checkpoints every epoch (model,
    projection head and optimiser) and resumes from ``ckpt_dir``.

    Args:
        model: the classifier whose encoder is pre-trained (its head is not used).
        dataset: items ``(image (C, H, W) in [0, 1], label)``.
        cfg: the recipe.
        device: where to train.
        ckpt_dir: checkpoint directory (None: none).
        progress: show a bar.

    Returns:
        Mean NT-Xent loss per epoch.
    """
    cfg.validate()
    device = resolve_device(device)
    model.to(device)
    proj = nn.Sequential(nn.Linear(model.num_features, model.num_features), nn.ReLU(),
                         nn.Linear(model.num_features, cfg.proj_dim)).to(device)
    both = nn.ModuleDict({"model": model, "proj": proj})
    opt = torch.optim.Adam(both.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loop = ResumableLoop(cfg.epochs, ckpt_dir=ckpt_dir, model=both, optimizer=opt, config=cfg, history=[],
                         map_location=device, progress=progress, desc="SimCLR")
    bs = min(cfg.batch_size, len(dataset))
    for epoch in loop:
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
        model.train()
        total, steps = 0.0, 0
        for x, _ in epoch_loader(dataset, bs, seed=cfg.seed, epoch=epoch):
            x = x.to(device)
            v1, v2 = simclr_augment(x, gen, cfg.min_crop), simclr_augment(x, gen, cfg.min_crop)
            loss = nt_xent_loss(proj(model.features(v1)), proj(model.features(v2)), cfg.temperature)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total, steps = total + loss.item(), steps + 1
        loop.history.append(total / max(steps, 1))  # type: ignore[union-attr]
    model.eval()
    return loop.history  # type: ignore[return-value]
