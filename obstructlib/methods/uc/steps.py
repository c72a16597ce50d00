"""The steps of Unlearnable Clusters: targets, the loss, noise projection and generator training.

:mod:`obstructlib.methods.uc.method` strings these together in :func:`~obstructlib.methods.uc.protect`;
they are separate so notebooks can run and inspect each step on its own.

References:
    Zhang et al., Unlearnable Clusters: Towards Label-agnostic Unlearnable Examples, CVPR 2023,
    arXiv:2301.01217 (official code: jiamingzhang94/Unlearnable-Clusters, ``main.py::train_gnet``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from obstructlib.data import SizedDataset
from obstructlib.engine import autocast, grad_scaler, resolve_device
from obstructlib.errors import ConfigError
from obstructlib.models.generator import ResnetGenerator

if TYPE_CHECKING:
    from obstructlib.methods.uc.method import UCConfig

__all__ = ["batches", "cluster_targets", "extract_features", "project_noise", "train_generator", "uc_loss"]


def cluster_targets(num_clusters: int, offset: int = 1) -> torch.Tensor:
    """Target cluster of each generator: ``i -> (i + offset) mod p`` (official ``target_offset``).

    Example:
        >>> cluster_targets(4).tolist()
        [1, 2, 3, 0]
    """
    if num_clusters < 1:
        raise ConfigError(f"num_clusters={num_clusters}: use at least 1")
    return (torch.arange(num_clusters) + offset) % num_clusters


def uc_loss(features: torch.Tensor, center: torch.Tensor) -> torch.Tensor:
    """KL(softmax(centre) || softmax(features)) over the feature dimension, averaged over the batch.

    Features and the centre are treated as logits (the official ``KLDivLoss(reduction="batchmean")``
    on ``features.log_softmax(-1)`` with target ``center.softmax(-1)``).

    Args:
        features: surrogate features ``(B, D)`` of perturbed images.
        center: the target centre ``(D,)`` (or one per row, ``(B, D)``).

    Shape:
        ``(B, D)``, ``(D,)`` -> scalar.

    Example:
        >>> float(uc_loss(torch.zeros(2, 3), torch.zeros(3)))
        0.0
    """
    target = center.to(features.dtype).expand_as(features).softmax(-1)
    return F.kl_div(features.log_softmax(-1), target, reduction="batchmean")


def project_noise(delta: torch.Tensor, eps: float, norm: str = "linf") -> torch.Tensor:
    """Clip to ``[-eps, eps]`` (linf) or rescale each sample to L2 norm ``eps`` (l2), as the official code.

    Shape:
        ``(B, C, H, W)`` -> same.
    """
    if norm == "linf":
        return delta.clamp(-eps, eps)
    flat = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
    return delta * (eps / flat).view(-1, *([1] * (delta.ndim - 1)))


def batches(
    source: SizedDataset | torch.Tensor,
    indices: torch.Tensor | None,
    batch_size: int,
    device: torch.device,
    num_workers: int = 0,
) -> Iterator[torch.Tensor]:
    """Images (B, C, H, W) on ``device`` in index order, from a cached tensor or a dataset."""
    if isinstance(source, torch.Tensor):
        order = torch.arange(len(source)) if indices is None else indices.cpu()
        for start in range(0, len(order), batch_size):
            yield source[order[start : start + batch_size].to(source.device)].to(device)
        return
    data = cast(Dataset, source)  # Subset and DataLoader take any map-style dataset; torch annotates its Dataset
    ds = data if indices is None else Subset(data, indices.tolist())
    for item in DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=num_workers):
        yield item[0].to(device)


@torch.no_grad()
def extract_features(
    surrogate: nn.Module,
    dataset: SizedDataset | torch.Tensor,
    device: torch.device | str | None = None,
    batch_size: int = 256,
    progress: bool = True,
) -> torch.Tensor:
    """Surrogate features of every image, in dataset order.

    Args:
        surrogate: maps images in [0, 1] to ``(B, D)`` (a :class:`FeatureExtractor`).
        dataset: items whose first element is a float image ``(C, H, W)`` in [0, 1] (no random
            augmentation), or an image tensor ``(N, C, H, W)``.
        device: where to compute (None: CPU).
        batch_size: images per forward pass.
        progress: show a progress bar.

    Returns:
        float32 ``(N, D)`` on ``device``.
    """
    device = resolve_device(device or "cpu")
    feats = []
    total = math.ceil(len(dataset) / batch_size)
    for x in tqdm(
        batches(dataset, None, batch_size, device), total=total, disable=not progress, desc="UC features"
    ):
        with autocast(device):
            feats.append(surrogate(x).float())
    return torch.cat(feats)


def _augment(x: torch.Tensor, g: torch.Generator, scale: float = 224 / 256) -> torch.Tensor:
    # resize 256 -> random crop 224 -> flip (official) == a random 7/8-size crop resampled to full size
    b = x.shape[0]
    shift = (torch.rand(b, 2, generator=g) * 2 - 1) * (1 - scale)
    flip = torch.where(torch.rand(b, generator=g) < 0.5, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1], theta[:, :, 2] = scale * flip, scale, shift
    grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def train_generator(
    surrogate: nn.Module,
    images: SizedDataset | torch.Tensor,
    target: torch.Tensor,
    cfg: UCConfig,
    device: torch.device | str | None = None,
    *,
    indices: torch.Tensor | None = None,
    seed: int = 0,
    progress: bool = True,
    desc: str = "UC generator",
) -> tuple[torch.Tensor, list[float]]:
    """Train one generator so that ``clip(x + delta, 0, 1)`` has surrogate features near ``target``.

    Adam (``cfg.lr``, ``cfg.weight_decay``) with a per-iteration cosine schedule to ``cfg.min_lr``;
    the generator's input ``z ~ U(0, 1)`` is drawn once and kept fixed; every step uses the same
    ``delta = project_noise(G(z))`` for the whole batch (paper Sec. 4, official ``train_gnet``).

    Args:
        surrogate: frozen feature extractor (images in [0, 1] -> ``(B, D)``).
        images: dataset (first item element an image in [0, 1]) or tensor ``(N, C, H, W)``.
        target: the centre ``(D,)`` to move features toward.
        cfg: epochs, lr, batch size, eps/norm, generator size, augmentation.
        device: where to train.
        indices: train on these samples only (``train_on="cluster"``); None uses all.
        seed: seeds the generator's weights, its input ``z`` and the augmentation.
        progress: show a progress bar.
        desc: progress bar label.

    Returns:
        ``(noise, epoch_losses)``: float ``(C, H, W)`` projected noise on CPU (the generator's
        train-mode output, as the official code saves it) and the mean loss of every epoch.
    """
    device = resolve_device(device or "cpu")
    n = len(images) if indices is None else len(indices)
    if n == 0:
        raise ConfigError("train_generator got no images: pass a non-empty dataset or index set")
    first = images[0] if isinstance(images, torch.Tensor) else images[0][0]
    c, h, w = first.shape
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):  # weight init from `seed` without touching the global RNG
        torch.manual_seed(seed)
        gen = ResnetGenerator(c, c, cfg.ngf, cfg.n_blocks).to(device).train()
    z = torch.rand(1, c, h, w, generator=g).to(device)
    target = target.to(device=device, dtype=torch.float32)
    opt = torch.optim.Adam(gen.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = math.ceil(n / cfg.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.epochs * steps, eta_min=cfg.min_lr)
    scaler = grad_scaler(device, cfg.amp)
    history: list[float] = []
    bar = tqdm(total=cfg.epochs * steps, disable=not progress, desc=desc, leave=False)
    for _ in range(cfg.epochs):
        total, count = 0.0, 0
        for x in batches(images, indices, cfg.batch_size, device, cfg.num_workers):
            if cfg.augment:
                x = _augment(x, g)
            delta = project_noise(gen(z), cfg.eps, cfg.norm)
            with autocast(device, cfg.amp):
                feats = surrogate((x + delta).clamp(0, 1))
            loss = uc_loss(feats.float(), target)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
            value = loss.item()
            total, count = total + value * len(x), count + len(x)
            bar.update(1)
            bar.set_postfix(loss=f"{value:.4f}")
        history.append(total / count)
    bar.close()
    with torch.no_grad():
        noise = project_noise(gen(z), cfg.eps, cfg.norm)[0].float().cpu()
    return noise, history
