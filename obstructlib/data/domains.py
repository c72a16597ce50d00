"""Visual domains: a dataset spec with a style suffix, and whole splits decoded once into memory.

The spec grammar's last part: any spec may end in ``+mnistm`` (``|digit - smooth random colour
field|``, MNIST-M's recipe with synthetic backgrounds, an offline stand-in for MNIST -> MNIST-M) or
``+invert`` (``1 - x``). :func:`~obstructlib.data.load_dataset` understands the suffix (images are
restyled on the fly, the randomness a function of the image index and the split only), and
:func:`load_domain` decodes (and restyles) a split once into a uint8 :class:`ArrayImageDataset`, so
that training epochs cost no decoding or resizing.

Example:
    >>> split_style("digits+mnistm"), split_style("npz:/a+b/usps.npz")
    (('digits', 'mnistm'), ('npz:/a+b/usps.npz', 'none'))
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from obstructlib.data.base import ArrayImageDataset, SizedDataset, load_dataset
from obstructlib.data.wrappers import _Forwarding, labels_of, seeded_subset
from obstructlib.errors import ConfigError

__all__ = ["STYLES", "RestyledDataset", "load_domain", "restyle", "split_style"]

STYLES = ("mnistm", "invert")


def split_style(spec: str) -> tuple[str, str]:
    """``"digits+mnistm"`` -> ``("digits", "mnistm")``; a spec without a known style suffix -> ``(spec, "none")``."""
    base, plus, style = spec.rpartition("+")
    return (base, style) if plus and base and style in STYLES else (spec, "none")


def restyle(x: torch.Tensor, style: str, seed: int) -> torch.Tensor:
    """One image in [0, 1], restyled; the randomness depends only on ``seed`` (the image index).

    Shape:
        ``(C, H, W)`` -> ``(3, H, W)`` for ``mnistm``, the input's shape otherwise.
    """
    if style == "invert":
        return 1.0 - x
    if style == "mnistm":
        g = torch.Generator().manual_seed(seed)
        # a smooth random colour field (4x4 colours, bilinearly upsampled) in place of a photo crop
        field_ = torch.rand(1, 3, 4, 4, generator=g)
        bg = torch.nn.functional.interpolate(field_, size=x.shape[-2:], mode="bilinear", align_corners=False)[0]
        return (x.expand(3, -1, -1) - bg).abs()  # MNIST-M: |digit - background|
    return x


def _materialise(ds: SizedDataset, style: str, seed: int) -> ArrayImageDataset:
    """Decode (and restyle) a small split once into uint8 NHWC memory: epochs then cost no resizing."""
    images = [restyle(ds[i][0], style, seed * 1_000_003 + i) for i in range(len(ds))]
    x = torch.stack(images).clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    labels = labels_of(ds)
    if labels is None:
        raise ConfigError("the dataset has no class labels: NTP needs labelled source and target data")
    return ArrayImageDataset(np.ascontiguousarray(x), labels, getattr(ds, "classes", None), channels=3)


def load_domain(spec: str, split: str = "train", *, image_size: int = 32, max_samples: int | None = None,
                seed: int = 0, data_root: str | Path | None = None, progress: bool = False) -> ArrayImageDataset:
    """One split of a domain, as 3-channel uint8 images in memory (decoded and resized once).

    Args:
        spec: a dataset spec, optionally with a style suffix (``digits+mnistm``, see :func:`split_style`).
        split: ``"train"`` or ``"test"``.
        image_size: square side in pixels.
        max_samples: seeded, class-stratified subset (None: all).
        seed: seed of the subset and of the style's random backgrounds.
        data_root: root of registered datasets.
        progress: show decoding progress where the loader has any.

    Example:
        >>> target = load_domain("digits+mnistm", "test", image_size=16)
        >>> target[0][0].shape
        torch.Size([3, 16, 16])
    """
    spec, style = split_style(spec)
    ds = load_dataset(spec, data_root, split, image_size=image_size, channels=3, progress=progress)
    return _materialise(seeded_subset(ds, max_samples, seed=seed), style, seed + (split == "test"))


class RestyledDataset(_Forwarding):
    """A classification dataset with every image restyled on access (``load_dataset("digits+mnistm")``).

    Image ``i`` gets the background of seed ``seed * 1_000_003 + i``, exactly as :func:`load_domain`
    draws it for an unsubsetted split, so both paths show the same images.
    """

    def __init__(self, dataset: SizedDataset, style: str, seed: int) -> None:
        if style not in STYLES:
            raise ConfigError(f"style {style!r}: use one of {', '.join(STYLES)}")
        self.dataset, self.style, self.seed = dataset, style, seed

    def __getitem__(self, index: int) -> tuple:
        x, *rest = self.dataset[index]
        return (restyle(x, self.style, self.seed * 1_000_003 + index).clamp(0, 1), *rest)
