"""Datasets that need no files: scikit-learn's digits and a procedural shapes set with captions.

- ``digits``: the 1,797 8x8 handwritten digits of scikit-learn (``load_digits``), values 0..16
  scaled to uint8 0..255; a seeded stratified split keeps ``round(0.2 * n_c)`` images of each
  class ``c`` for test (359 test, 1,438 train with the default seed).
- ``synthetic`` / ``synthetic-captions``: coloured shapes on textured backgrounds, generated in
  numpy from a seed (2,000 images at 32 px in well under a second). Ten shape classes in three
  superclasses (round / angular / linear), six colours, two sizes, position and rotation jitter,
  and six background *domains* (plain, dark, noise, stripes, gradient, checker): domain-shift
  demos train on one domain and test on another, restricted-class demos hold out a superclass.
  The shapes of image ``i`` depend only on ``(seed, split, i)``, not on the domain, so the same
  seed with ``domain="plain"`` and ``domain="noise"`` gives the same shapes on different backgrounds.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from obstructlib.data.base import ArrayImageDataset, register_dataset
from obstructlib.data.captions import CaptionDataset
from obstructlib.errors import ConfigError

# ---- digits --------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)
    images.flags.writeable = False
    return images, d.target.astype(np.int64)


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded per-class split: ``round(test_fraction * n_c)`` of each class to test; sorted indices."""
    rng = np.random.default_rng(seed)
    test = [
        rng.permutation(np.flatnonzero(labels == c))[: int(np.rint(test_fraction * (labels == c).sum()))]
        for c in np.unique(labels)
    ]
    is_test = np.zeros(len(labels), bool)
    is_test[np.concatenate(test)] = True
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


@register_dataset(
    "digits",
    embedded=True,
    description="scikit-learn digits, 1,797 8x8 grey images, 10 classes (80/20 split)",
)
def load_digits_dataset(
    root: Path | None = None,
    split: str = "train",
    *,
    seed: int = 0,
    test_fraction: float = 0.2,
    progress: bool = False,  # generated in memory, nothing to show; every loader accepts it
    **kwargs: Any,
) -> ArrayImageDataset:
    """The scikit-learn digits as an :class:`ArrayImageDataset` (classes ``"0"``..``"9"``).

    Args:
        root: unused (the data ships with scikit-learn).
        split: ``"train"`` or ``"test"``.
        seed: seed of the stratified split.
        test_fraction: share of each class held out for test.
        **kwargs: ``image_size`` (e.g. 32 for CLIP), ``channels`` (3 repeats grey), ``transform``.

    Example:
        >>> len(load_digits_dataset(split="test")), load_digits_dataset(image_size=32, channels=3)[0][0].shape
        (359, torch.Size([3, 32, 32]))
    """
    images, labels = _digits()
    train_idx, test_idx = stratified_split(labels, test_fraction, seed)
    idx = train_idx if split == "train" else test_idx
    return ArrayImageDataset(images[idx], labels[idx], [str(c) for c in range(10)], **kwargs)


# ---- procedural shapes ---------------------------------------------------------------------
SHAPES = (
    "circle",
    "ring",
    "ellipse",
    "square",
    "diamond",
    "triangle",
    "cross",
    "plus",
    "horizontal bar",
    "vertical bar",
)
SUPERCLASSES = ("round", "angular", "linear")
SUPERCLASS_OF = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 2], dtype=np.int64)
COLORS = {
    "red": (0.85, 0.15, 0.15),
    "green": (0.15, 0.70, 0.20),
    "blue": (0.15, 0.30, 0.90),
    "yellow": (0.95, 0.85, 0.10),
    "purple": (0.60, 0.20, 0.80),
    "orange": (0.95, 0.55, 0.10),
}
DOMAINS = ("plain", "dark", "noise", "stripes", "gradient", "checker")
_DOMAIN_WORD = {
    "plain": "plain",
    "dark": "dark",
    "noise": "noisy",
    "stripes": "striped",
    "gradient": "gradient",
    "checker": "checkered",
}
_SQ2 = np.sqrt(2.0)


def _sdf(cls: int, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Signed distance (approximate, negative inside) of shape ``cls`` of unit extent at the origin."""
    ax, ay = np.abs(x), np.abs(y)
    if cls == 0:
        return np.hypot(x, y) - 1.0
    if cls == 1:
        return np.abs(np.hypot(x, y) - 0.72) - 0.28
    if cls == 2:
        return (np.hypot(x, y / 0.5) - 1.0) * 0.5
    if cls == 3:
        return np.maximum(ax, ay) - 0.82
    if cls == 4:
        return (ax + ay - 1.15) / _SQ2
    if cls == 5:  # equilateral triangle, inradius 0.55: three half-planes
        s = np.sqrt(3.0) / 2
        return np.maximum.reduce([y - 0.55, -s * x - 0.5 * y - 0.55, s * x - 0.5 * y - 0.55])
    if cls == 6:  # the plus turned by 45 degrees
        x, y = (x + y) / _SQ2, (x - y) / _SQ2
        ax, ay = np.abs(x), np.abs(y)
    if cls in (6, 7):
        return np.minimum(np.maximum(ax - 1.0, ay - 0.25), np.maximum(ay - 1.0, ax - 0.25))
    if cls == 8:
        return np.maximum(ax - 1.0, ay - 0.25)
    return np.maximum(ay - 1.0, ax - 0.25)


def _backgrounds(dom: np.ndarray, u: np.ndarray, gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
    """Float ``(N, S, S, 3)`` backgrounds; ``u`` holds 11 uniforms per image (used per domain)."""
    n, s = len(dom), gx.shape[-1]
    tint = (u[:, 1:4] - 0.5) * 0.08
    bg = np.empty((n, s, s, 3), np.float32)
    base = {"plain": 0.75 + 0.2 * u[:, 0], "dark": 0.03 + 0.15 * u[:, 0], "noise": 0.4 + 0.2 * u[:, 0]}
    for name, level in base.items():
        m = dom == name
        bg[m] = (level[m, None] + tint[m])[:, None, None, :]
    # Two colours per image, the second near the complement of the first so the pattern shows.
    c1 = 0.2 + 0.65 * u[:, 1:4]
    c2 = np.clip(1.0 - c1 + (u[:, 8:11] - 0.5) * 0.3, 0.1, 0.9)
    ang = u[:, 4] * np.pi
    t = np.cos(ang)[:, None, None] * gx + np.sin(ang)[:, None, None] * gy  # (N, S, S) in [-1.4, 1.4]
    for name in ("stripes", "gradient", "checker"):
        m = dom == name
        if not m.any():
            continue
        if name == "stripes":  # soft square wave, 3..6 periods across the image
            w = (
                np.clip(
                    np.sin(np.pi * (3 + 3 * u[m, 5, None, None]) * t[m] + 6.3 * u[m, 6, None, None]) * 3,
                    -1,
                    1,
                )
                * 0.5
                + 0.5
            )
        elif name == "gradient":
            w = np.clip(t[m] / 2.8 + 0.5, 0, 1)
        else:  # cells of 4..8 pixels at 32 px
            cells = (4 + 4 * u[m, 5]) / 16
            w = (
                (np.floor((gx + 1) / cells[:, None, None]) + np.floor((gy + 1) / cells[:, None, None])) % 2
            ).astype(np.float32)
        bg[m] = w[..., None] * c1[m, None, None, :] + (1 - w[..., None]) * c2[m, None, None, :]
    return bg


def generate_shapes(
    num: int,
    *,
    domain: str | Sequence[str] = "all",
    resolution: int = 32,
    seed: int = 0,
    split: str = "train",
) -> dict[str, np.ndarray]:
    """Generate ``num`` shape images and their attributes (pure numpy, vectorised, deterministic).

    Args:
        num: number of images (classes balanced to within one).
        domain: one background domain from :data:`DOMAINS`, a list of them, or ``"all"`` (balanced).
        resolution: image side in pixels.
        seed: the data seed; ``split`` selects an independent stream (``"train"``/``"test"``).

    Returns:
        ``images`` uint8 ``(num, S, S, 3)``, ``labels``, ``colors``, ``sizes`` (0 small, 1 large),
        ``domains`` (indices into :data:`DOMAINS`).
    """
    names = list(DOMAINS) if domain == "all" else [domain] if isinstance(domain, str) else list(domain)
    unknown = [d for d in names if d not in DOMAINS]
    if unknown or not names:
        raise ConfigError(
            f"unknown domain {unknown or names}: use one or more of {', '.join(DOMAINS)}, or 'all'"
        )
    rng = np.random.default_rng([seed, 0 if split == "train" else 1])
    # Shape parameters first, from a fixed number of draws, so they do not depend on the domain.
    labels = rng.permutation(np.arange(num) % len(SHAPES))
    colors = rng.integers(0, len(COLORS), num)
    sizes = rng.integers(0, 2, num)
    p = rng.random((num, 6)).astype(np.float32)
    dom = np.array(names)[rng.permutation(np.arange(num) % len(names))]
    u = rng.random((num, 11)).astype(np.float32)
    r = np.where(sizes == 1, 0.52 + 0.10 * p[:, 0], 0.30 + 0.08 * p[:, 0])
    reach = 0.95 - 1.15 * r  # keep the whole shape inside the frame
    cx, cy = (2 * p[:, 1] - 1) * reach, (2 * p[:, 2] - 1) * reach
    rot = (2 * p[:, 3] - 1) * np.deg2rad(12)  # small: a diamond must not turn into a square
    g = ((np.arange(resolution) + 0.5) / resolution * 2 - 1).astype(np.float32)
    gy, gx = np.meshgrid(g, g, indexing="ij")
    dx, dy = gx - cx[:, None, None], gy - cy[:, None, None]
    c, s = np.cos(rot)[:, None, None], np.sin(rot)[:, None, None]
    lx, ly = (c * dx + s * dy) / r[:, None, None], (-s * dx + c * dy) / r[:, None, None]
    dist = np.empty_like(lx)
    for k in range(len(SHAPES)):
        m = labels == k
        dist[m] = _sdf(k, lx[m], ly[m])
    # Anti-aliased coverage: signed distance in pixels, a one-pixel ramp.
    alpha = np.clip(0.5 - dist * r[:, None, None] * (resolution / 2), 0, 1)[..., None]
    rgb = np.array(list(COLORS.values()), np.float32)[colors] + (p[:, 4:5] - 0.5) * 0.12
    img = _backgrounds(dom, u, gx, gy) * (1 - alpha) + rgb[:, None, None, :] * alpha
    noisy = dom == "noise"
    if noisy.any():  # drawn last so the other draws stay aligned across domain choices
        img[noisy] += rng.normal(0, 0.12, img[noisy].shape).astype(np.float32)
    images = np.rint(np.clip(img, 0, 1) * 255).astype(np.uint8)
    return {
        "images": images,
        "labels": labels.astype(np.int64),
        "colors": colors,
        "sizes": sizes,
        "domains": np.array([DOMAINS.index(d) for d in dom], dtype=np.int64),
    }


class SyntheticShapes(ArrayImageDataset):
    """The procedural shapes as a classification dataset (see the module docstring).

    Attributes:
        classes: the ten shape names; ``superclasses`` and ``superclass_of`` (class -> superclass).
        superclass_labels: superclass of each image.
        domains, colors, sizes: per image, as names (``"noise"``, ``"red"``, ``"small"``).
    """

    def __init__(self, gen: dict[str, np.ndarray], **kwargs: Any) -> None:
        super().__init__(gen["images"], gen["labels"], list(SHAPES), **kwargs)
        _describe(self, gen)


def _describe(ds: Any, gen: dict[str, np.ndarray]) -> None:
    ds.superclasses = list(SUPERCLASSES)
    ds.superclass_of = SUPERCLASS_OF.copy()
    ds.superclass_labels = SUPERCLASS_OF[gen["labels"]]
    ds.domains = np.array(DOMAINS)[gen["domains"]]
    ds.colors = np.array(list(COLORS))[gen["colors"]]
    ds.sizes = np.array(["small", "large"])[gen["sizes"]]


_CAPTIONS = (
    "a {size} {color} {shape} on a {bg} background",
    "a {sup} shape: a {size} {color} {shape}",
    "a picture of a {color} {shape}",
    "a {shape} in {color} against a {bg} backdrop",
    "{bg} background with a {size} {color} {shape}",
    "there is a {size} {shape} coloured {color}",
    "a {color} {shape}, {size}, {bg} background",
    "an image showing one {color} {shape}",
)


# Prompts for zero-shot classification of the shape, worded like the captions above.
ZERO_SHOT_TEMPLATES = ("a {}", "a picture of a {}", "an image showing one {}", "a {} on a background")


def _generate_split(split: str, num_train: int, num_test: int, **options: Any) -> dict[str, Any]:
    # generate_shapes for one split: num_train or num_test images (options: domain, resolution, seed).
    n = num_train if split == "train" else num_test
    if n < 1:
        raise ConfigError(f"num_{split}={n} must be at least 1")
    return generate_shapes(n, split=split, **options)


@register_dataset(
    "synthetic",
    embedded=True,
    description="procedural shapes: 10 classes, 3 superclasses, 6 background domains",
)
def load_synthetic(
    root: Path | None = None,
    split: str = "train",
    *,
    domain: str | Sequence[str] = "all",
    num_train: int = 2000,
    num_test: int = 500,
    resolution: int = 32,
    seed: int = 0,
    progress: bool = False,  # generated in memory, nothing to show; every loader accepts it
    **kwargs: Any,
) -> SyntheticShapes:
    """Procedural shapes for classification; ``image_size``, ``channels``, ``transform`` as ArrayImageDataset.

    Example:
        >>> ds = load_synthetic(split="test", domain="noise", num_test=20)
        >>> x, y = ds[0]
        >>> x.shape, ds.classes[:3], sorted(set(ds.domains.tolist()))
        (torch.Size([3, 32, 32]), ['circle', 'ring', 'ellipse'], ['noise'])
    """
    gen = _generate_split(split, num_train, num_test, domain=domain, resolution=resolution, seed=seed)
    return SyntheticShapes(gen, **kwargs)


@register_dataset(
    "synthetic-captions",
    kind="captions",
    embedded=True,
    description="procedural shapes with 5 compositional captions per image",
)
def load_synthetic_captions(
    root: Path | None = None,
    split: str = "train",
    *,
    domain: str | Sequence[str] = "all",
    num_train: int = 2000,
    num_test: int = 500,
    resolution: int = 32,
    seed: int = 0,
    captions_per_image: int = 5,
    progress: bool = False,  # generated in memory, nothing to show; every loader accepts it
    **kwargs: Any,
) -> CaptionDataset:
    """Procedural shapes with ``captions_per_image`` (<= 8) distinct paraphrases each, e.g.
    "a small red circle on a striped background", "a round shape: a small red circle".

    Pairs keep ``labels``/``classes`` (zero-shot accuracy); per image ``domains``, ``colors``, ``sizes``.
    Other kwargs (``image_size``, ``transform``) go to :class:`CaptionDataset`.
    """
    if not 1 <= captions_per_image <= len(_CAPTIONS):
        raise ConfigError(f"captions_per_image={captions_per_image} must lie in 1..{len(_CAPTIONS)}")
    gen = _generate_split(split, num_train, num_test, domain=domain, resolution=resolution, seed=seed)
    n = len(gen["labels"])
    meta = SimpleNamespace()
    _describe(meta, gen)
    rng = np.random.default_rng([seed, 0 if split == "train" else 1, 2])
    picks = np.argsort(rng.random((n, len(_CAPTIONS))), axis=1)[:, :captions_per_image]
    captions = []
    for i, row in enumerate(picks.tolist()):
        words = {
            "size": meta.sizes[i],
            "color": meta.colors[i],
            "shape": SHAPES[gen["labels"][i]],
            "sup": SUPERCLASSES[meta.superclass_labels[i]],
            "bg": _DOMAIN_WORD[str(meta.domains[i])],
        }
        captions += [re.sub(r"\b([Aa]) (?=[aeiou])", r"\1n ", _CAPTIONS[t].format(**words)) for t in row]
    ds = CaptionDataset(
        gen["images"],
        captions,
        np.repeat(np.arange(n), captions_per_image),
        labels=np.repeat(gen["labels"], captions_per_image),
        classes=list(SHAPES),
        templates=ZERO_SHOT_TEMPLATES,
        **kwargs,
    )
    for name in ("superclasses", "superclass_of", "superclass_labels", "domains", "colors", "sizes"):
        setattr(ds, name, getattr(meta, name))
    ds.per_image_attributes = ["superclass_labels", "domains", "colors", "sizes"]
    return ds
