"""Unlearnable Clusters (UC): label-agnostic unlearnable examples from cluster-wise noise.

The protector owns images but no labels it can trust the hacker to share. UC (i) embeds every
image with a frozen surrogate and K-means-partitions the features into ``p`` clusters; (ii) trains
one ResNet generator per cluster ``i`` from a fixed random input ``z_i``, so that adding
``delta_i = project(G_i(z_i))`` to images drags their surrogate features toward the centre of
cluster ``(i + 1) mod p``; (iii) adds ``delta_{a(x)}`` to every image ``x`` of cluster ``a(x)``.
Whatever labels are attached later, the noise breaks the uniformity within and the discrepancy
between the data's natural groups, and a classifier trained on the protected set learns little.

Pipeline in this module (names from the paper / official code):

1. :func:`extract_features` with a :class:`~obstructlib.models.surrogates.FeatureExtractor`;
2. :func:`~obstructlib.primitives.kmeans.kmeans` -> assignments and centres;
3. :func:`cluster_targets` (``i -> (i + target_offset) mod p``) and :func:`train_generator`,
   minimising :func:`uc_loss` = KL(softmax(centre) || softmax(feature)) over the feature dimension;
4. :func:`protect` runs all of it with checkpoint/resume and returns a cluster-mode
   :class:`~obstructlib.data.PerturbationStore`; protected images are ``store.apply(x, idx)``
   (``clip(x + delta, 0, 1)``) and :func:`~obstructlib.data.export_protected` writes 8-bit PNGs.

Deviations, all deliberate: the noise has the dataset's own image size (the official code trains
224x224 noise on images resized to 256 and centre-cropped to 224, and its ``generate`` resizes the
noise to each image with nearest interpolation -- resize the dataset with ``image_size=224`` to
reproduce that); the training augmentation "resize 256 -> random crop 224 -> flip" becomes a random
7/8-scale crop plus flip at native size; K-means runs in torch instead of scikit-learn.

References:
    Zhang et al., Unlearnable Clusters: Towards Label-agnostic Unlearnable Examples, CVPR 2023,
    arXiv:2301.01217 (official code: jiamingzhang94/Unlearnable-Clusters).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from obstructlib.data import PerturbationStore, SizedDataset
from obstructlib.data.store import MAX_UNITS
from obstructlib.engine import check_fingerprint, resolve_device, state_digest
from obstructlib.errors import ConfigError, check_min, reading
from obstructlib.methods.uc.steps import (
    cluster_targets,
    extract_features,
    project_noise,
    train_generator,
    uc_loss,
)
from obstructlib.models.surrogates import create_surrogate
from obstructlib.primitives.kmeans import kmeans

__all__ = [
    "UCConfig",
    "UCResult",
    "cluster_targets",
    "extract_features",
    "project_noise",
    "protect",
    "train_generator",
    "uc_loss",
]

_SURROGATE_HINT = "use 'rn50', 'clip:<open_clip arch>', 'simclr:<arch>' or 'classifier:<arch>'"


@dataclass
class UCConfig:
    """Unlearnable Clusters settings; defaults are the official code's (paper scale).

    Attributes:
        num_clusters: p, the K-means clusters and generators (10 in the paper).
        eps: budget in [0, 1] pixel units: L-inf radius (16/255, at most 127/255 for the int8
            store) or, with ``norm="l2"``, the L2 norm every noise is rescaled to.
        norm: ``"linf"`` (clip the generator output) or ``"l2"`` (rescale it to norm ``eps``).
        surrogate: ``"rn50"`` (UC), ``"clip:RN50"`` (UC-CLIP), ``"clip:tiny-rn"``, ``"classifier:<arch>"``,
            or ``"simclr:<arch>"`` (label-free, offline; pre-train it with
            :func:`~obstructlib.methods.uc.surrogates.pretrain_surrogate` and pass the model to
            :func:`protect`, or give its weights as ``surrogate_checkpoint``).
        surrogate_pretrained: weights (see ``create_surrogate``); ``"auto"`` = the paper's
            (ImageNet for rn50, OpenAI for CLIP archs that have them), None = random init.
        surrogate_checkpoint: weights file / engine checkpoint dir for a ``classifier:`` or
            ``simclr:`` surrogate.
        surrogate_image_size: resize images to this side inside the surrogate (None: as is).
        epochs: passes over the training images per generator (50 in the paper; the quick
            profile of ``obstruct uc`` uses 3).
        lr: Adam learning rate (1e-4), cosine-annealed per iteration to ``min_lr``.
        min_lr: final learning rate (1e-6).
        weight_decay: Adam weight decay (5e-4).
        batch_size: images per step (256), in dataset order (the official loader does not shuffle).
        train_on: ``"all"``: every generator sees all images (official code); ``"cluster"``:
            generator i sees only cluster i's members (the paper's figure).
        target_offset: generator i pushes toward the centre of cluster ``(i + offset) mod p``.
        ngf: generator width (64 in the paper).
        n_blocks: generator residual blocks (6 in the paper).
        augment: random 7/8-scale crop + horizontal flip of the clean images while training.
        kmeans_n_init: K-means restarts (scikit-learn's default of the time: 10).
        kmeans_iters: K-means iterations per restart (scikit-learn's default: 300).
        amp: mixed precision for the surrogate on CUDA.
        num_workers: DataLoader workers when images are streamed instead of cached.
        cache_max_bytes: hold all images as float32 on the device when they fit in this many bytes.
        seed: seed of the clustering, of each generator's init, input ``z_i`` and augmentation.
    """

    num_clusters: int = 10
    eps: float = 16 / 255
    norm: str = "linf"
    surrogate: str = "rn50"
    surrogate_pretrained: str | None = "auto"
    surrogate_checkpoint: str | None = None
    surrogate_image_size: int | None = None
    epochs: int = 50
    lr: float = 1e-4
    min_lr: float = 1e-6
    weight_decay: float = 5e-4
    batch_size: int = 256
    train_on: str = "all"
    target_offset: int = 1
    ngf: int = 64
    n_blocks: int = 6
    augment: bool = True
    kmeans_n_init: int = 10
    kmeans_iters: int = 300
    amp: bool = True
    num_workers: int = 0
    cache_max_bytes: int = 4 * 2**30
    seed: int = 0

    def validate(self) -> None:
        """Raise :class:`ConfigError` (one line) for values outside their ranges."""
        if self.norm not in ("linf", "l2"):
            raise ConfigError(f"norm={self.norm!r}: use 'linf' or 'l2'")
        high = MAX_UNITS / 255 if self.norm == "linf" else 1000.0
        if not (0 < self.eps <= high + 1e-9):
            raise ConfigError(
                f"eps={self.eps:.6g} is outside (0, {high:.4g}] for norm={self.norm}: pick e.g. 16/255"
            )
        if int(self.num_clusters) != self.num_clusters or self.num_clusters < 2:
            raise ConfigError(f"num_clusters={self.num_clusters}: use an integer of at least 2")
        if self.train_on not in ("all", "cluster"):
            raise ConfigError(f"train_on={self.train_on!r}: use 'all' or 'cluster'")
        s = self.surrogate
        if not (
            s == "rn50" or (isinstance(s, str) and s.split(":", 1)[0] in ("clip", "classifier", "simclr") and ":" in s)
        ):
            raise ConfigError(f"unknown surrogate {s!r}: {_SURROGATE_HINT}")
        check_min(self, ("epochs", "batch_size", "ngf", "kmeans_n_init", "kmeans_iters"))
        if self.n_blocks < 0 or self.num_workers < 0:
            raise ConfigError("n_blocks and num_workers must be 0 or more")
        if not (0 < self.lr <= 1) or not (0 <= self.min_lr <= self.lr) or self.weight_decay < 0:
            raise ConfigError(
                f"lr={self.lr}, min_lr={self.min_lr}, weight_decay={self.weight_decay}: "
                "need 0 < lr <= 1, 0 <= min_lr <= lr, weight_decay >= 0"
            )


@dataclass
class UCResult:
    """What :func:`protect` returns.

    Attributes:
        store: cluster-mode :class:`PerturbationStore` (int8 pixel units, ``assignments`` set);
            ``store.apply(x, idx)`` gives the protected images of samples ``idx``.
        assignments: int64 ``(N,)`` cluster of every sample (CPU).
        centers: float ``(p, D)`` K-means centres in surrogate feature space (CPU).
        noises: float ``(p, C, H, W)`` projected noise of each cluster before 8-bit rounding (CPU).
        losses: final-epoch mean :func:`uc_loss` of each generator.
        loss_history: per generator, the mean loss of every epoch.
        timings_s: seconds spent training each generator (0 for ones resumed from ``ckpt_dir``).
        surrogate: the surrogate's name.
    """

    store: PerturbationStore
    assignments: torch.Tensor
    centers: torch.Tensor
    noises: torch.Tensor
    losses: list[float]
    loss_history: list[list[float]] = field(default_factory=list)
    timings_s: list[float] = field(default_factory=list)
    surrogate: str = ""

    @property
    def cluster_sizes(self) -> list[int]:
        """Members per cluster."""
        return torch.bincount(self.assignments, minlength=len(self.noises)).tolist()


def _load_images(
    dataset: SizedDataset, cfg: UCConfig, device: torch.device, progress: bool
) -> torch.Tensor | None:
    """All images as one float tensor on ``device`` when they fit ``cfg.cache_max_bytes``; else None."""
    shape = dataset[0][0].shape
    if len(dataset) * int(np.prod(shape)) * 4 > cfg.cache_max_bytes:
        return None
    # DataLoader takes any map-style dataset; torch annotates it with its Dataset
    loader = DataLoader(cast(Dataset, dataset), batch_size=cfg.batch_size, shuffle=False, num_workers=cfg.num_workers)
    parts = [item[0] for item in tqdm(loader, disable=not progress, desc="UC load images")]
    return torch.cat(parts).to(device)


def _store_noise(noises: torch.Tensor, cfg: UCConfig) -> tuple[float, torch.Tensor]:
    """(store eps, noise on the 1/255 grid). L2 noise is rounded toward zero so it stays in the ball."""
    if cfg.norm == "linf":
        return cfg.eps, noises
    return min(cfg.eps, MAX_UNITS / 255), torch.trunc(noises * 255) / 255


def _surrogate_label(name: str, model: nn.Module | str | None) -> str | None:
    """``name`` when ``model`` is a classifier of the architecture it names (``simclr:resnet20``), else None."""
    kind, _, arch = name.partition(":")
    return name if kind in ("classifier", "simclr") and arch == getattr(model, "arch", None) else None


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def protect(
    dataset: SizedDataset,
    cfg: UCConfig,
    *,
    surrogate: nn.Module | str | None = None,
    device: torch.device | str | None = None,
    ckpt_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> UCResult:
    """Craft Unlearnable Clusters noise for ``dataset``: cluster, train p generators, fill a store.

    Args:
        dataset: the images to protect; items ``(image (C, H, W) in [0, 1], ...)`` in a fixed
            order and without random augmentation (labels, if any, are ignored).
        cfg: settings (validated here).
        surrogate: a name, model (``ImageClassifier``/``ClipModel``) or ``FeatureExtractor`` to
            use instead of ``cfg.surrogate`` (e.g. a classifier the caller just trained). A given
            model is frozen in place; a classifier of the architecture ``cfg.surrogate`` names
            (``simclr:<arch>`` from :func:`~obstructlib.methods.uc.surrogates.pretrain_surrogate`)
            is recorded under that name, other classifiers as ``classifier:<arch>``.
        device: where to compute (``"auto"``/None: CUDA when available).
        ckpt_dir: keep ``fingerprint.json``, ``clusters.pt``, one ``generator_XXX.pt`` per finished
            generator and the final ``perturbation.npy`` here; a rerun skips what is done.
        progress: show progress bars.

    Returns:
        :class:`UCResult`; protected image of sample ``i`` is
        ``clip(x_i + delta_{a(i)}, 0, 1)`` = ``result.store.apply(x_i[None], [i])``.

    Raises:
        ConfigError: bad config, fewer images than clusters, unknown surrogate, or a ``ckpt_dir``
            from a different configuration.

    Example:
        >>> cfg = UCConfig(num_clusters=2, surrogate="classifier:digits_cnn", epochs=1, ngf=4, n_blocks=1)
        >>> res = protect(load_dataset("digits", image_size=16, channels=3), cfg, device="cpu")  # doctest: +SKIP
        >>> protected = res.store.apply(x[None], [0])                                     # doctest: +SKIP
    """
    cfg.validate()
    device = resolve_device(device)
    n, p = len(dataset), cfg.num_clusters
    if n < p:
        raise ConfigError(f"num_clusters={p} but the dataset has only {n} images: use fewer clusters")
    shape = tuple(dataset[0][0].shape)
    with torch.random.fork_rng(devices=[]):  # a randomly initialised surrogate is the same on resume
        torch.manual_seed(cfg.seed)
        surrogate = create_surrogate(
            cfg.surrogate if surrogate is None else surrogate,
            pretrained=cfg.surrogate_pretrained,
            checkpoint=cfg.surrogate_checkpoint,
            image_size=cfg.surrogate_image_size,
            device=device,
            label=_surrogate_label(cfg.surrogate, surrogate),
        )
    ckpt = Path(ckpt_dir) if ckpt_dir is not None else None
    if ckpt is not None:
        check_fingerprint(ckpt, cfg, extra={"num_images": n, "image_shape": list(shape),
                                            "surrogate_name": surrogate.name,
                                            "surrogate_weights": state_digest(surrogate)})
    cached = _load_images(dataset, cfg, device, progress)
    source = dataset if cached is None else cached
    if ckpt is not None and (ckpt / "clusters.pt").is_file():
        with reading(ckpt / "clusters.pt"):
            saved = torch.load(ckpt / "clusters.pt", map_location="cpu", weights_only=True)
        assignments, centers = saved["assignments"], saved["centers"]
    else:
        feats = extract_features(surrogate, source, device, cfg.batch_size, progress)
        g = torch.Generator().manual_seed(cfg.seed)
        assignments, centers = kmeans(feats, p, iters=cfg.kmeans_iters, generator=g, n_init=cfg.kmeans_n_init)
        assignments, centers = assignments.cpu(), centers.cpu()
        if ckpt is not None:
            _atomic_save({"assignments": assignments, "centers": centers}, ckpt / "clusters.pt")
    targets = cluster_targets(p, cfg.target_offset)
    noises, history, timings = [], [], []
    for i in range(p):
        path = None if ckpt is None else ckpt / f"generator_{i:03d}.pt"
        if path is not None and path.is_file():
            with reading(path):
                saved = torch.load(path, map_location="cpu", weights_only=True)
                noises.append(saved["noise"])
                history.append(list(saved["history"]))
            timings.append(0.0)
            continue
        members = torch.nonzero(assignments == i).flatten()
        # an empty cluster (only possible with duplicate points) falls back to all images
        idx = members if cfg.train_on == "cluster" and len(members) else None
        start = time.perf_counter()
        noise, hist = train_generator(
            surrogate,
            source,
            centers[targets[i]],
            cfg,
            device,
            indices=idx,
            seed=cfg.seed * 1_000_003 + i,
            progress=progress,
            desc=f"UC generator {i + 1}/{p}",
        )
        timings.append(time.perf_counter() - start)
        noises.append(noise)
        history.append(hist)
        if path is not None:
            _atomic_save({"noise": noise, "history": hist}, path)
    stacked = torch.stack(noises)
    store_eps, grid_noise = _store_noise(stacked, cfg)
    store = PerturbationStore(p, shape, eps=store_eps, mode="cluster", assignments=assignments.numpy())
    store.set(np.arange(p), grid_noise)
    if ckpt is not None:
        store.save(ckpt / "perturbation.npy")
    return UCResult(
        store=store,
        assignments=assignments,
        centers=centers,
        noises=stacked,
        losses=[h[-1] for h in history],
        loss_history=history,
        timings_s=timings,
        surrogate=surrogate.name,
    )
