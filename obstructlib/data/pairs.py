"""Image-caption pairs of one split from any dataset spec (classification data gets templated captions).

Every CLIP experiment (the clean baseline, MEM, UBT's poisoned fine-tuning) loads its pairs here, so
a caption set (``csv:PATH``, ``flickr8k``) and a classification set (``cifar10``, ``folder:PATH``,
turned into CLIP-prompt captions with class labels kept for zero-shot evaluation) are
interchangeable on the command line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from obstructlib.data.base import dataset_kind, load_dataset
from obstructlib.data.captions import templated_captions
from obstructlib.data.wrappers import seeded_subset

__all__ = ["load_pairs"]


def load_pairs(spec: str, root: str | Path | None, split: str, *, image_size: int, max_samples: int | None,
               captions_per_image: int = 1, seed: int = 0, progress: bool = True) -> Any:
    """Image-caption pairs of one split; classification data gets templated captions.

    Args:
        spec: dataset spec.
        root: data root.
        split: ``train`` or ``test``.
        image_size: pixels.
        max_samples: seeded subset of images (None: all).
        captions_per_image: templated captions per image for classification data.
        seed: subset and template seed.
        progress: show decoding progress bars.
    """
    if dataset_kind(spec) == "captions":
        # a CaptionDataset, or a RestyledDataset that forwards num_images / subset_images to one
        pairs: Any = load_dataset(spec, root, split, image_size=image_size, progress=progress)
        if max_samples is not None and max_samples < pairs.num_images:
            rng = np.random.default_rng(seed)
            pairs = pairs.subset_images(np.sort(rng.choice(pairs.num_images, max_samples, replace=False)))
        return pairs
    images = load_dataset(spec, root, split, image_size=image_size, channels=3, progress=progress)
    if max_samples is not None and max_samples < len(images):
        images = seeded_subset(images, max_samples, seed=seed)
    return templated_captions(images, captions_per_image=captions_per_image, seed=seed)
