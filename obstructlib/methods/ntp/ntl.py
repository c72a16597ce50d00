"""Non-Transferable Learning (NTL), target-specified: the baseline NTP is compared against.

One dense model is trained so that it keeps the source domain S and fails on the target T:

    L = KL(p(x_s), y_s) - min(1, alpha * KL(p(x_t), y_t)) * min(1, beta * MMD(f(x_s), f(x_t)))

KL against one-hot labels equals the cross-entropy, so the first term is CE_S. The caps stop
the target terms from dominating once the target is already broken. Nothing is pruned; the
attacks of NTP's evaluation apply unchanged (the masked attack of a dense model is the dense one).

Deliberate deviations: NTL trains a VGG from ImageNet weights; here it starts from the trained
source model so every method of the comparison starts from the same weights. NTL's digits
script uses alpha = beta = 0.1, Adam lr 1e-4, 30 epochs, batch 32: these are the defaults.

References:
    Wang et al., Non-Transferable Learning: A New Approach for Model Ownership Verification and
    Applicability Authorization, ICLR 2022, arXiv:2106.06916.

Example:
    >>> history = train_ntl(model, source_train, target_train, NTLConfig(epochs=2), "cpu")  # doctest: +SKIP
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from obstructlib.data import SizedDataset
from obstructlib.engine import ResumableLoop, resolve_device
from obstructlib.errors import check_min
from obstructlib.methods.ntp.steps import paired_batches
from obstructlib.models import ImageClassifier
from obstructlib.primitives.feature_losses import gaussian_mmd

__all__ = ["NTLConfig", "ntl_loss", "train_ntl"]


@dataclass
class NTLConfig:
    """NTL's recipe (its digits script's values).

    Attributes:
        alpha: weight of the target KL inside its cap (0.1).
        beta: weight of the MMD inside its cap (0.1).
        lr: Adam learning rate (1e-4).
        weight_decay: Adam weight decay (0).
        epochs: passes over the zipped (S, T) batches (30).
        batch_size: batch size of each domain (32).
        seed: seed of the batch order.
    """

    alpha: float = 0.1
    beta: float = 0.1
    lr: float = 1e-4
    weight_decay: float = 0.0
    epochs: int = 30
    batch_size: int = 32
    seed: int = 0

    def validate(self) -> None:
        """Raise a one-line :class:`ConfigError` for bad values."""
        check_min(self, ("alpha", "beta", "lr"), 0, strict=True, prefix="ntl.")
        check_min(self, ("epochs", "batch_size"), prefix="ntl.")


def ntl_loss(model: ImageClassifier, xs: torch.Tensor, ys: torch.Tensor, xt: torch.Tensor, yt: torch.Tensor,
             cfg: NTLConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """``CE_S - min(1, alpha * CE_T) * min(1, beta * MMD)`` for one batch pair (NTL, Eq. of Sec. 3).

    Shape:
        ``xs``, ``xt``: ``(B, C, H, W)`` in [0, 1]; ``ys``, ``yt``: ``(B,)``.
    """
    fs, ft = model.features(xs), model.features(xt)
    ce_s = F.cross_entropy(model.head(fs), ys)
    ce_t = F.cross_entropy(model.head(ft), yt)
    mmd = gaussian_mmd(fs, ft)
    loss = ce_s - torch.clamp(cfg.alpha * ce_t, max=1.0) * torch.clamp(cfg.beta * mmd, max=1.0)
    return loss, {"loss": loss.item(), "ce_s": ce_s.item(), "ce_t": ce_t.item(), "mmd": mmd.item()}


def train_ntl(model: ImageClassifier, source_set: SizedDataset, target_set: SizedDataset, cfg: NTLConfig,
              device: torch.device | str | None, *, ckpt_dir: str | os.PathLike | None = None,
              progress: bool = True) -> list[dict[str, float]]:
    """Train ``model`` (all of it, in place) with the NTL loss; checkpoints every epoch, resumes.

    Args:
        model: the starting classifier (here the trained source model).
        source_set: labelled S images in [0, 1].
        target_set: labelled T images (same label space as S: NTL uses one head for both).
        cfg: the recipe.
        device: where to train.
        ckpt_dir: checkpoint directory (None: none).
        progress: show a bar.

    Returns:
        One record of mean loss terms per epoch.
    """
    cfg.validate()
    device = resolve_device(device)
    model.to(device)
    for p in model.parameters():
        p.requires_grad_(True)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loop = ResumableLoop(cfg.epochs, ckpt_dir=ckpt_dir, model=model, optimizer=opt, config=cfg, history=[],
                         map_location=device, progress=progress, desc="NTL")
    for epoch in loop:
        model.train()
        sums: dict[str, float] = {}
        steps = 0
        for xs, ys, xt, yt in paired_batches(source_set, target_set, cfg.batch_size, cfg.seed, epoch):
            loss, parts = ntl_loss(model, xs.to(device), ys.to(device), xt.to(device), yt.to(device), cfg)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v
            steps += 1
        loop.log({"epoch": epoch + 1, **{k: v / max(steps, 1) for k, v in sums.items()}})
    model.eval()
    return loop.history  # type: ignore[return-value]
