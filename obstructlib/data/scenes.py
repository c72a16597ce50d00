"""``synthetic-scenes``: procedural scenes of two or three shapes, each with its own caption.

With one templated caption per image (CIFAR-10 prompts, ``synthetic-captions``) the class carries
most of CLIP's contrastive loss; the retrieval setting of Multimodal Unlearnable Examples (MEM)
has a distinct caption per image. These scenes give that offline: two or three of the ten
:data:`~obstructlib.data.embedded.SHAPES` in six colours (distinct within a scene), two sizes,
one per cell of a 3x3 grid (with jitter), on one of the six background domains. Captions name
the objects, their positions ("in the top left") and relations ("left of", "above", "next to"),
and the background, in six templates per object count, e.g. "a large red circle to the left of a
small blue square on a striped background". At most 26 tokens, so a CLIP caption with start and
end tokens fits 28 of a 32-token context and leaves room for a 4-token trigger.

The *first* object of a scene is the largest, the leftmost (then the topmost) among equals; every
caption's objects are named ``a``, ``b``, ``c`` in that order and ``labels`` is the shape of ``a``
(balanced over the ten classes), so zero-shot accuracy stays defined. With seed 0, 99.9 % of the
20,000 train captions (one per image) and all 1,000 test captions are distinct (99.7 % of 100,000
with five per image); 20,000 images at 32 px take about 3 s on one busy CPU core (3.5 s with
captions). A tiny CLIP (``tiny-rn``, 1,200 steps at batch 128) trained on the 20,000 train pairs
retrieves the right caption of a test image at rank 1 for 68 % of the 1,000 (chance 0.1 %).

References:
    Liu et al., Multimodal Unlearnable Examples: Protecting Data against Multimodal Contrastive
    Learning (MEM), arXiv:2407.16307.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from obstructlib.data.base import register_dataset
from obstructlib.data.captions import CaptionDataset
from obstructlib.data.embedded import COLORS, DOMAINS, SHAPES, SUPERCLASS_OF, SUPERCLASSES, _backgrounds, _sdf
from obstructlib.errors import ConfigError

__all__ = ["POSITIONS", "generate_scenes", "load_synthetic_scenes"]

# Cell c of the 3x3 grid is row c // 3 (0 top), column c % 3 (0 left).
POSITIONS = (
    "in the top left", "at the top", "in the top right",
    "on the left", "in the centre", "on the right",
    "in the bottom left", "at the bottom", "in the bottom right",
)
SIZES = ("small", "large")
_RADIUS = (0.18, 0.29)  # shape extent in half-image units: 2.9 px and 4.6 px at 32 px
_PITCH, _JITTER = 0.63, 0.03  # cell centres at -0.63, 0, 0.63; jitter of the centre
# one BPE token each ("checkered" would be two: every token counts against the 26)
_BACKGROUND_WORD = {"plain": "plain", "dark": "dark", "noise": "noisy", "stripes": "striped",
                    "gradient": "gradient", "checker": "checked"}
MAX_CAPTION_TOKENS = 26  # without CLIP's start and end tokens

# {a} = "a large red circle", {a_} = "a red circle", {pa} = its position, {ab} = how a lies
# relative to b. Worst cases in tokens (shape phrase 5, position 4, relation 4 or 2) are noted:
# three-object templates take the two-token relations only.
_TWO = (
    "{a} {ab} {b} on a {bg} background",  # 18
    "{bg} background: {a} {pa} and {b} {pb}",  # 22
    "{b} {ba} {a}, {bg} background",  # 17
    "two shapes on a {bg} background, {a} {pa} and {b} {pb}",  # 26
    "a picture of {a} {ab} {b}, with a {bg} background",  # 22
    "{a} {pa}, {b} {pb}, {bg} background",  # 22
)
_THREE = (
    "{a} {ab} {b}, {c} {pc}, {bg} background",  # 25
    "three shapes on a {bg} background: {a}, {b} and {c}",  # 24
    "{a_} {pa}, {b_} {pb}, {c_} {pc}",  # 26
    "on a {bg} background, {a} {ab} {b} {bc} {c}",  # 24
    "{c} {ca} {a}, and {b} {pb}, {bg} background",  # 26
    "{bg} background with {a} {pa}, {b_} and {c_}",  # 22
)
# Prompts for zero-shot classification of the first object's shape, worded like the captions.
ZERO_SHOT_TEMPLATES = ("a {}", "a large {}", "a picture of a {}", "a {} and other shapes")


def generate_scenes(
    num: int,
    *,
    domain: str | Sequence[str] = "all",
    resolution: int = 32,
    seed: int = 0,
    split: str = "train",
    max_objects: int = 3,
    chunk: int = 2048,
) -> dict[str, np.ndarray]:
    """Generate ``num`` scenes and their objects (vectorised numpy, deterministic).

    The scene of image ``i`` depends only on ``(seed, split, i)``: not on ``resolution``, ``domain``
    (only the background changes) or ``chunk``. ``"train"`` and ``"test"`` are independent streams.

    Args:
        num: number of images (the first object's shape balanced over the classes to within one).
        domain: a background domain from :data:`~obstructlib.data.embedded.DOMAINS`, a list, or ``"all"``.
        resolution: image side in pixels (32: about 0.15 ms per image on one core).
        seed: the data seed.
        split: ``"train"`` or ``"test"``.
        max_objects: 3 (half the scenes have three objects) or 2 (all have two).
        chunk: images rendered at once (bounds the float32 temporaries).

    Returns:
        ``images`` uint8 ``(num, S, S, 3)``; ``num_objects`` ``(num,)``; per object, ``(num, 3)``
        int64 with -1 for a missing third object: ``shapes``, ``colors`` (index into ``COLORS``),
        ``sizes`` (0 small, 1 large), ``cells`` (0..8, see :data:`POSITIONS`); ``domains`` ``(num,)``.
    """
    names = list(DOMAINS) if domain == "all" else [domain] if isinstance(domain, str) else list(domain)
    if not names or any(d not in DOMAINS for d in names):
        raise ConfigError(f"unknown domain in {names}: use one or more of {', '.join(DOMAINS)}, or 'all'")
    if max_objects not in (2, 3):
        raise ConfigError(f"max_objects={max_objects} must be 2 or 3")
    split_id = 0 if split == "train" else 1
    rng = np.random.default_rng([seed, split_id, 10])
    # Every draw has a fixed shape, so options only change what is rendered, not the scenes.
    count = 2 + (rng.random(num) < 0.5)
    cells = np.argsort(rng.random((num, 9)), axis=1)[:, :3]
    sizes = rng.integers(0, 2, (num, 3))
    colors = np.argsort(rng.random((num, len(COLORS))), axis=1)[:, :3]  # distinct within a scene
    shapes = rng.integers(0, len(SHAPES), (num, 3))
    first = rng.permutation(np.arange(num) % len(SHAPES))
    p = rng.random((num, 3, 4)).astype(np.float32)  # x, y jitter, rotation, shade
    dom = np.array(names)[rng.permutation(np.arange(num) % len(names))]
    u = rng.random((num, 11)).astype(np.float32)
    count = np.minimum(count, max_objects)
    present = np.arange(3) < count[:, None]
    # Order the objects: largest first, then leftmost, then topmost; a missing object last.
    key = np.where(present, (1 - sizes) * 100 + (cells % 3) * 10 + cells // 3, 1000)
    order = np.argsort(key, axis=1, kind="stable")
    cells, sizes = np.take_along_axis(cells, order, 1), np.take_along_axis(sizes, order, 1)
    shapes[:, 0] = first
    images = np.empty((num, resolution, resolution, 3), np.uint8)
    noise_rng = np.random.default_rng([seed, split_id, 11])
    for lo in range(0, num, chunk):
        part = slice(lo, min(lo + chunk, num))
        img = _render(dom[part], u[part], cells[part], sizes[part], shapes[part], colors[part],
                      p[part], present[part], resolution)
        noisy = dom[part] == "noise"
        img[noisy] += noise_rng.normal(0, 0.12, img[noisy].shape).astype(np.float32)
        images[part] = np.rint(np.clip(img, 0, 1) * 255)
    missing = np.where(present, 0, -1)
    return {
        "images": images,
        "num_objects": count.astype(np.int64),
        "shapes": np.where(present, shapes, missing),
        "colors": np.where(present, colors, missing),
        "sizes": np.where(present, sizes, missing),
        "cells": np.where(present, cells, missing),
        "domains": np.array([DOMAINS.index(d) for d in dom], dtype=np.int64),
    }


def _render(dom: np.ndarray, u: np.ndarray, cells: np.ndarray, sizes: np.ndarray, shapes: np.ndarray,
            colors: np.ndarray, p: np.ndarray, present: np.ndarray, resolution: int) -> np.ndarray:
    """Float ``(n, S, S, 3)`` scenes: backgrounds, then each object composited with its coverage."""
    s_ = resolution
    g = ((np.arange(s_) + 0.5) / s_ * 2 - 1).astype(np.float32)
    gy, gx = np.meshgrid(g, g, indexing="ij")
    img = _backgrounds(dom, u, gx, gy)
    palette = np.array(list(COLORS.values()), np.float32)
    # Each object is drawn in a w x w window around its centre (a shape reaches 1.2 r from it, plus
    # the jitter and the anti-aliasing ramp): about a quarter of the pixels of the whole image.
    w = min(s_, int(np.ceil((max(_RADIUS) * 1.2 + _JITTER) * s_)) + 4)
    flat, base = img.reshape(-1, 3), (np.arange(len(dom)) * s_ * s_)[:, None, None]
    for j in range(3):
        r = np.array(_RADIUS, np.float32)[sizes[:, j]][:, None, None]
        cx = ((cells[:, j] % 3 - 1) * _PITCH + (2 * p[:, j, 0] - 1) * _JITTER).astype(np.float32)
        cy = ((cells[:, j] // 3 - 1) * _PITCH + (2 * p[:, j, 1] - 1) * _JITTER).astype(np.float32)
        x0, y0 = (np.clip(np.rint((c + 1) * s_ / 2 - 0.5 - (w - 1) / 2), 0, s_ - w).astype(np.int64)
                  for c in (cx, cy))
        xs, ys = x0[:, None] + np.arange(w), y0[:, None] + np.arange(w)  # (n, w) pixel indices
        dx, dy = g[xs][:, None, :] - cx[:, None, None], g[ys][:, :, None] - cy[:, None, None]
        rot = ((2 * p[:, j, 2] - 1) * np.deg2rad(12)).astype(np.float32)[:, None, None]  # a diamond stays one
        c, s = np.cos(rot), np.sin(rot)
        lx, ly = (c * dx + s * dy) / r, (c * dy - s * dx) / r
        dist = np.empty_like(lx)
        for k in range(len(SHAPES)):
            m = shapes[:, j] == k
            dist[m] = _sdf(k, lx[m], ly[m])
        # anti-aliased coverage as in generate_shapes: a one-pixel ramp on the signed distance
        alpha = (np.clip(0.5 - dist * r * (s_ / 2), 0, 1) * present[:, j, None, None])[..., None]
        rgb = (palette[colors[:, j]] + (p[:, j, 3:4] - 0.5) * 0.12)[:, None, None, :]
        at = base + ys[:, :, None] * s_ + xs[:, None, :]  # flat pixel indices, (n, w, w)
        patch = flat[at]
        flat[at] = patch + alpha * (rgb - patch)
    return img


def _relation(cells: np.ndarray, x: int, y: int, pick: int, short: bool) -> str:
    """How object ``x`` lies relative to ``y``: horizontal when the columns differ at least as much."""
    dr, dc = cells[y] // 3 - cells[x] // 3, cells[y] % 3 - cells[x] % 3
    if dc != 0 and abs(dc) >= abs(dr):
        words = ["left of"] if dc > 0 else ["right of"]
        words += [] if short else ["to the left of" if dc > 0 else "to the right of"]
        words += ["next to", "beside"] if dr == 0 and abs(dc) == 1 else []
    else:
        words = ["above", "over"] if dr > 0 else ["below", "under", "beneath"]
    return words[pick % len(words)]


def _scene_captions(gen: dict[str, np.ndarray], captions_per_image: int, seed: int, split: str) -> list[str]:
    """``captions_per_image`` distinct captions per scene of :func:`generate_scenes`, image by image."""
    n = len(gen["num_objects"])
    rng = np.random.default_rng([seed, 0 if split == "train" else 1, 12])
    picks = np.argsort(rng.random((n, len(_TWO))), axis=1)[:, :captions_per_image]
    words = rng.integers(0, 12, (n, len(_TWO), 4))  # one wording draw per relation slot
    color_names, bg = list(COLORS), [_BACKGROUND_WORD[d] for d in DOMAINS]
    captions = []
    for i in range(n):
        k, cells = int(gen["num_objects"][i]), gen["cells"][i]
        fill: dict[str, str] = {"bg": bg[gen["domains"][i]]}
        for j, name in enumerate("abc"[:k]):
            bare = f"{color_names[gen['colors'][i, j]]} {SHAPES[gen['shapes'][i, j]]}"
            fill[name], fill[name + "_"] = f"a {SIZES[gen['sizes'][i, j]]} {bare}", f"a {bare}"
            fill["p" + name] = POSITIONS[cells[j]]
        for t in picks[i]:
            for slot, pair in enumerate(("ab", "ba", "bc", "ca")[: 4 if k == 3 else 2]):
                x, y = "abc".index(pair[0]), "abc".index(pair[1])
                fill[pair] = _relation(cells, x, y, int(words[i, t, slot]), short=k == 3)
            text = (_THREE if k == 3 else _TWO)[t].format(**fill)
            captions.append(re.sub(r"\b([Aa]) (?=[aeiou])", r"\1n ", text))
    return captions


@register_dataset(
    "synthetic-scenes",
    kind="captions",
    embedded=True,
    description="procedural scenes of 2-3 shapes with positions and relations, a distinct caption per image",
)
def load_synthetic_scenes(
    root: Path | None = None,
    split: str = "train",
    *,
    domain: str | Sequence[str] = "all",
    num_train: int = 20000,
    num_test: int = 1000,
    resolution: int = 32,
    seed: int = 0,
    captions_per_image: int = 1,
    max_objects: int = 3,
    progress: bool = False,  # generated in memory, nothing to show; every loader accepts it
    **kwargs: Any,
) -> CaptionDataset:
    """Procedural multi-object scenes with ``captions_per_image`` (<= 6) distinct paraphrases each.

    Args:
        root: unused (generated in memory).
        split: ``"train"`` or ``"test"`` (independent streams of the same seed).
        domain, resolution, seed, max_objects: as :func:`generate_scenes`.
        num_train, num_test: images in each split.
        captions_per_image: paraphrases (pairs) per image, 1..6.
        **kwargs: ``image_size``, ``transform`` for :class:`CaptionDataset`.

    Returns:
        Pairs with ``labels``/``classes`` (the first object's shape) and zero-shot ``templates``; per
        image ``num_objects``, ``domains`` (names) and ``(num, 3)`` ``object_shapes``,
        ``object_colors``, ``object_sizes``, ``object_positions`` (names, ``""`` for no third object).

    Example:
        >>> ds = load_synthetic_scenes(split="test", num_test=4, seed=1)
        >>> len(ds), ds.num_images, ds[0][0].shape, ds.num_objects.tolist()
        (4, 4, torch.Size([3, 32, 32]), [2, 2, 3, 3])
        >>> ds.object_colors[1].tolist(), ds.object_positions[1].tolist()
        (['red', 'green', ''], ['at the bottom', 'in the bottom right', ''])
        >>> ds.captions[1]
        'a large red circle at the bottom, a small green horizontal bar in the bottom right, striped background'
    """
    if not 1 <= captions_per_image <= len(_TWO):
        raise ConfigError(f"captions_per_image={captions_per_image} must lie in 1..{len(_TWO)}")
    n = num_train if split == "train" else num_test
    if n < 1:
        raise ConfigError(f"num_{split}={n} must be at least 1")
    gen = generate_scenes(n, domain=domain, resolution=resolution, seed=seed, split=split,
                          max_objects=max_objects)
    captions = _scene_captions(gen, captions_per_image, seed, split)
    labels = gen["shapes"][:, 0]
    ds = CaptionDataset(
        gen["images"],
        captions,
        np.repeat(np.arange(n), captions_per_image),
        labels=np.repeat(labels, captions_per_image),
        classes=list(SHAPES),
        templates=ZERO_SHOT_TEMPLATES,
        **kwargs,
    )
    per_class = {"superclasses": list(SUPERCLASSES), "superclass_of": SUPERCLASS_OF.copy()}
    per_image = {
        "superclass_labels": SUPERCLASS_OF[labels],
        "num_objects": gen["num_objects"],
        "domains": np.array(DOMAINS)[gen["domains"]],
        # index -1 (no third object) picks the trailing ""
        "object_shapes": np.array([*SHAPES, ""])[gen["shapes"]],
        "object_colors": np.array([*COLORS, ""])[gen["colors"]],
        "object_sizes": np.array([*SIZES, ""])[gen["sizes"]],
        "object_positions": np.array([*POSITIONS, ""])[gen["cells"]],
    }
    for name, values in {**per_class, **per_image}.items():
        setattr(ds, name, values)
    ds.per_image_attributes = list(per_image)
    return ds
