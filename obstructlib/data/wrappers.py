"""Small dataset wrappers: sample indices, seeded (stratified) subsets, per-item transforms.

Each wrapper forwards unknown attributes (``classes``, ``captions`` ...) to the dataset it wraps,
so code that reads ``dataset.classes`` keeps working on a wrapped dataset.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from obstructlib.data.base import SizedDataset, fetch_many
from obstructlib.errors import ConfigError


def labels_of(dataset: SizedDataset) -> np.ndarray | None:
    """The int64 class labels ``(N,)`` of a dataset without decoding images, or None when it has none.

    Multi-label attribute arrays ``(N, K)`` count as no class labels. Reads ``labels`` or
    ``targets``, and looks through :class:`~torch.utils.data.Subset` (and the
    wrappers here) to the base dataset's labels.
    """
    if isinstance(dataset, Subset):
        # torch types a Subset's base as Dataset (no __len__); it is map-style, hence sized
        base = labels_of(cast(SizedDataset, dataset.dataset))
        return None if base is None else base[np.asarray(dataset.indices, dtype=np.int64)]
    for name in ("labels", "targets"):
        value = getattr(dataset, name, None)
        if value is not None and len(value) == len(dataset):
            value = np.asarray(value, dtype=np.int64)
            return value if value.ndim == 1 else None
    return None


class _Forwarding(Dataset):
    """Forward attribute lookups that fail on the wrapper to the wrapped ``dataset``."""

    dataset: SizedDataset

    def __getattr__(self, name: str) -> Any:
        # Only reached when normal lookup fails; guard against recursion before __init__ (pickling).
        if name.startswith("__") or "dataset" not in self.__dict__:
            raise AttributeError(name)
        return getattr(self.__dict__["dataset"], name)

    def __len__(self) -> int:
        return len(self.dataset)


class IndexedDataset(_Forwarding):
    """Items become ``(index, *item)``: the sample index travels with each batch.

    Per-sample state (a :class:`~obstructlib.data.store.PerturbationStore` row, a cluster id) is
    looked up by this index, so noise stays attached to its sample under shuffling.

    Example:
        >>> from obstructlib.data.base import ArrayImageDataset
        >>> ds = IndexedDataset(ArrayImageDataset(np.zeros((3, 4, 4), np.uint8), [0, 1, 2]))
        >>> i, x, y = ds[2]; (i, y, ds.classes)
        (2, 2, ['0', '1', '2'])
    """

    def __init__(self, dataset: SizedDataset) -> None:
        self.dataset = dataset

    def __getitem__(self, index: int) -> tuple:
        item = self.dataset[index]
        return (index, *item) if isinstance(item, tuple) else (index, item)

    def __getitems__(self, indices: list[int]) -> list[tuple]:
        items = fetch_many(self.dataset, indices)
        return [(i, *item) if isinstance(item, tuple) else (i, item) for i, item in zip(indices, items)]


class TransformDataset(_Forwarding):
    """Apply ``transform`` to the image (first element) of every item; the rest passes through.

    Args:
        dataset: items ``(image float (C, H, W) in [0, 1], ...)``.
        transform: callable on the float image tensor (augmentation, resizing ...).
    """

    def __init__(self, dataset: SizedDataset, transform: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.dataset = dataset
        self.transform = transform

    def __getitem__(self, index: int) -> tuple:
        x, *rest = self.dataset[index]
        return (self.transform(x), *rest)

    def __getitems__(self, indices: list[int]) -> list[tuple]:
        return [(self.transform(x), *rest) for x, *rest in fetch_many(self.dataset, indices)]


class LabelledSubset(Subset):
    """A :class:`~torch.utils.data.Subset` that keeps ``classes``, ``labels`` and ``targets``.

    Other attributes are read from the base dataset (they describe the whole set, not the subset).
    """

    def __init__(self, dataset: SizedDataset, indices: Sequence[int]) -> None:
        # Subset accepts any map-style dataset; torch only annotates it as its nominal Dataset
        super().__init__(cast(Dataset, dataset), list(indices))
        base = labels_of(dataset)
        self.labels = None if base is None else base[np.asarray(self.indices, dtype=np.int64)]
        self.classes = list(getattr(dataset, "classes", []) or [])

    @property
    def targets(self) -> list[int]:
        """Labels as a list of ints (torchvision's attribute name)."""
        return [] if self.labels is None else self.labels.tolist()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or "dataset" not in self.__dict__:
            raise AttributeError(name)
        return getattr(self.__dict__["dataset"], name)


def seeded_subset(
    dataset: SizedDataset, max_samples: int | None, seed: int = 0, stratify: bool = True
) -> LabelledSubset:
    """At most ``max_samples`` items drawn with a seed, class-stratified when labels exist.

    This is the quick profile's documented subset: each class keeps its share of the data
    (``floor(max_samples * n_c / N)``, the remainder going to the classes with the largest
    fractional shares, ties broken by the seed); inside a class the items are a seeded random
    draw. The returned indices are sorted so that lazily decoded data is read in file order.

    Args:
        dataset: any map-style dataset; labels come from ``labels``/``targets`` (no decoding).
        max_samples: the subset size; None or ``>= len(dataset)`` keeps every item.
        seed: seed of the draw (same seed, same subset).
        stratify: keep class proportions (ignored without labels).

    Example:
        >>> from obstructlib.data.base import ArrayImageDataset
        >>> ds = ArrayImageDataset(np.zeros((100, 2, 2), np.uint8), np.arange(100) % 4)
        >>> np.bincount(seeded_subset(ds, 20, seed=1).labels).tolist()
        [5, 5, 5, 5]
    """
    n = len(dataset)
    if max_samples is not None and max_samples < 0:
        raise ConfigError(f"max_samples={max_samples} must be >= 0 (or None for all)")
    if max_samples is None or max_samples >= n:
        return LabelledSubset(dataset, range(n))
    rng = np.random.default_rng(seed)
    labels = labels_of(dataset) if stratify else None
    if labels is None:
        chosen = rng.choice(n, size=max_samples, replace=False)
    else:
        values, counts = np.unique(labels, return_counts=True)
        share = max_samples * counts / n
        quota = np.floor(share).astype(np.int64)
        left = max_samples - int(quota.sum())
        # Largest fractional share first; a random key breaks ties reproducibly.
        order = np.lexsort((rng.random(len(values)), -(share - quota)))
        quota[order[:left]] += 1
        chosen = np.concatenate(
            [rng.choice(np.flatnonzero(labels == v), size=q, replace=False) for v, q in zip(values, quota)]
        )
    return LabelledSubset(dataset, np.sort(chosen).tolist())
