"""Who knows which labels: exact class -> new-class mappings for label-agnostic evaluation.

Unlearnable Clusters asks what happens when whoever trains on protected images labels them
differently from the protector. A protocol names both sides, the labels the protector crafts
with (error-minimising noise needs labels; UC needs none) and the labels the hacker trains on:

- ``"original"``: both use the dataset's own classes (the label-consistent setting);
- ``"coarse"``: the protector has the classes, the hacker trains on their superclasses
  (CIFAR-100's 100 -> 20 ``fine_to_coarse``, the synthetic shapes' 10 -> 3 ``superclass_of``),
  the paper's "m-class set used as an n-class task";
- ``"random-N"``: the protector has the classes, the hacker a seeded random re-partition of the
  m classes into N non-empty groups of near-equal size (``2 <= N < m``). The groups are unions of
  whole classes, so a class-wise noise crafted on the classes still predicts the hacker's label
  (every member of a group carries one of its classes' noises): merging labels alone does not
  separate class-wise noise from a label-agnostic one;
- ``"finer"`` / ``"finer-N"``: the protector knows only a coarse grouping (the dataset's
  superclasses, or a seeded random N-group partition) and crafts with it; the hacker trains on all
  the original classes. A noise that follows the protector's groups then says nothing about the
  finer class inside a group: the paper's label-agnostic failure case of EM. UC uses no labels.

:func:`protector_protocol` and :func:`hacker_protocol` split a protocol into its two sides;
:func:`relabel` and :func:`relabel_dataset` apply the hacker's side. A side is a ``mapping`` array
``(m,)`` with ``new_label = mapping[old_label]``, so it is exact, invertible into groups, and can
be stored in ``results.json``.

References:
    Zhang et al., Unlearnable Clusters, arXiv:2301.01217 (Sec. 3, label-agnostic setting).

Example:
    >>> y, n, mapping = relabel(np.array([0, 3, 5, 9]), "random-2", num_classes=10, seed=0)
    >>> n, sorted(np.bincount(mapping).tolist())
    (2, [5, 5])
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from obstructlib.data.base import SizedDataset, fetch_many
from obstructlib.data.wrappers import labels_of
from obstructlib.errors import ConfigError

PROTOCOLS = ("original", "coarse", "random-N", "finer", "finer-N")
_GROUPED = re.compile(r"^(random|finer)-(\d+)$")


def parse_protocol(protocol: str) -> tuple[str, int | None]:
    """Split a protocol string into ``(kind, N)``; ``N`` only for ``random-N`` and ``finer-N``.

    Raises:
        ConfigError: an unknown or malformed protocol (``random-x``, ``random-``, ``fine``).

    Example:
        >>> parse_protocol("random-5"), parse_protocol("coarse"), parse_protocol("finer-2")
        (('random', 5), ('coarse', None), ('finer', 2))
    """
    text = str(protocol).strip()
    if text in ("original", "coarse", "finer"):
        return text, None
    match = _GROUPED.match(text)
    if match is None:
        raise ConfigError(
            f"labels={protocol!r} is not a label protocol: use original, coarse, random-N, finer or finer-N "
            "(N an integer, e.g. random-5)"
        )
    return match.group(1), int(match.group(2))


def protector_protocol(protocol: str) -> str:
    """The labels the protector crafts with under ``protocol``, as a one-sided protocol.

    Example:
        >>> [protector_protocol(p) for p in ("random-5", "finer", "finer-2")]
        ['original', 'coarse', 'random-2']
    """
    kind, n = parse_protocol(protocol)
    if kind != "finer":
        return "original"
    return "coarse" if n is None else f"random-{n}"


def hacker_protocol(protocol: str) -> str:
    """The labels the hacker trains on under ``protocol``, as a one-sided protocol.

    Example:
        >>> [hacker_protocol(p) for p in ("random-5", "finer", "finer-2")]
        ['random-5', 'original', 'original']
    """
    kind, _ = parse_protocol(protocol)
    return "original" if kind == "finer" else str(protocol).strip()


def superclass_map(dataset: SizedDataset) -> np.ndarray | None:
    """The class -> superclass array of a dataset, or None when it has none.

    Reads ``superclass_of`` (the synthetic shapes) or ``fine_to_coarse`` (CIFAR-100), looking
    through subsets and wrappers that forward attributes.
    """
    for name in ("superclass_of", "fine_to_coarse"):
        value = getattr(dataset, name, None)
        if value is not None:
            return np.asarray(value, dtype=np.int64)
    return None


def superclass_names(dataset: SizedDataset) -> list[str] | None:
    """Names of a dataset's superclasses (``superclasses`` or ``coarse_classes``), if it has them."""
    for name in ("superclasses", "coarse_classes"):
        value = getattr(dataset, name, None)
        if value is not None:
            return [str(v) for v in value]
    return None


def relabel(
    labels: Sequence[int] | np.ndarray | torch.Tensor,
    protocol: str,
    *,
    num_classes: int,
    superclass_of: Sequence[int] | np.ndarray | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, int, np.ndarray]:
    """Map labels through a hacker's label protocol.

    Args:
        labels: original labels, ints in ``0..num_classes-1``, shape ``(N,)``.
        protocol: a protocol of the module docstring; its hacker's side is applied (``finer``: the
            original classes).
        num_classes: m, the number of original classes.
        superclass_of: ``(m,)`` superclass of every class; required by ``"coarse"``.
        seed: seed of the ``random-N`` partition (same seed, same partition).

    Returns:
        ``(new_labels int64 (N,), new_num_classes, mapping int64 (m,))`` with
        ``new_labels == mapping[labels]``.

    Raises:
        ConfigError: a malformed protocol, ``N`` outside ``[2, m - 1]``, ``"coarse"`` without a
            superclass map, or labels outside ``0..m-1``.

    Example:
        >>> relabel([0, 4, 9], "coarse", num_classes=10, superclass_of=[0, 0, 0, 1, 1, 1, 2, 2, 2, 2])[0].tolist()
        [0, 1, 2]
    """
    kind, n = parse_protocol(hacker_protocol(protocol))
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    y = np.asarray(labels, dtype=np.int64)
    m = int(num_classes)
    if m < 1:
        raise ConfigError(f"num_classes={m}: a labelled dataset needs at least one class")
    if y.size and (y.min() < 0 or y.max() >= m):
        raise ConfigError(f"labels lie outside 0..{m - 1}: pass the dataset's own num_classes")
    if kind == "original":
        mapping = np.arange(m, dtype=np.int64)
    elif kind == "coarse":
        mapping = _coarse_mapping(superclass_of, m)
    else:
        mapping = random_partition(m, int(n), seed=seed)  # type: ignore[arg-type]
    new_num = int(mapping.max()) + 1 if m else 0
    return mapping[y], new_num, mapping


def _coarse_mapping(superclass_of: Sequence[int] | np.ndarray | None, m: int) -> np.ndarray:
    if superclass_of is None:
        raise ConfigError(
            "labels=coarse needs a class -> superclass map, and this dataset has none: "
            "use cifar100 or synthetic, or labels=random-N (finer-N: a random grouping for the protector)"
        )
    mapping = np.asarray(superclass_of, dtype=np.int64)
    if mapping.shape != (m,) or mapping.min() < 0:
        raise ConfigError(
            f"superclass map has shape {mapping.shape} (need ({m},) non-negative ints): it does not fit this dataset"
        )
    # Renumber to 0..n-1 in order of first superclass index, so no coarse class is empty.
    _, dense = np.unique(mapping, return_inverse=True)
    return dense.astype(np.int64)


def random_partition(num_classes: int, num_groups: int, *, seed: int = 0) -> np.ndarray:
    """A seeded partition of ``num_classes`` classes into ``num_groups`` non-empty groups.

    The classes are shuffled and dealt round-robin, so group sizes differ by at most one and
    every group is non-empty.

    Args:
        num_classes: m, classes to partition.
        num_groups: N, with ``2 <= N < m``.
        seed: seed of the shuffle.

    Returns:
        ``mapping`` int64 ``(m,)``: the group of every class.

    Raises:
        ConfigError: ``N`` outside ``[2, m - 1]``.
    """
    m, n = int(num_classes), int(num_groups)
    if not 2 <= n < m:
        raise ConfigError(
            f"labels=random-{n} needs 2 <= N < {m} (the dataset's class count): pick N in that range"
        )
    perm = np.random.default_rng(seed).permutation(m)
    mapping = np.empty(m, dtype=np.int64)
    mapping[perm] = np.arange(m) % n
    return mapping


class RelabelledDataset(Dataset):
    """A classification dataset whose labels are replaced by ``new_labels``.

    Items are ``(image, new_labels[i])``; ``labels``/``targets``/``classes`` describe the new
    labelling, every other attribute (``get_image``, ``images`` ...) is read from the wrapped
    dataset.

    Args:
        dataset: items ``(image float (C, H, W) in [0, 1], label)``.
        new_labels: int ``(N,)``, one per item.
        classes: names of the new classes (default ``"0"``, ``"1"``, ...).
        mapping: optional ``(m,)`` old -> new class array, kept for reference.

    Example:
        >>> from obstructlib.data.base import ArrayImageDataset
        >>> ds = RelabelledDataset(ArrayImageDataset(np.zeros((3, 4, 4), np.uint8), [0, 1, 2]), [1, 0, 1])
        >>> ds[0][1], ds.classes
        (1, ['0', '1'])
    """

    def __init__(
        self,
        dataset: SizedDataset,
        new_labels: Sequence[int] | np.ndarray,
        classes: Sequence[str] | None = None,
        mapping: np.ndarray | None = None,
    ) -> None:
        self.dataset = dataset
        self.labels = np.asarray(new_labels, dtype=np.int64)
        if len(self.labels) != len(dataset):
            raise ConfigError(
                f"{len(self.labels)} new labels for {len(dataset)} items: give one label per item"
            )
        num = int(self.labels.max()) + 1 if len(self.labels) else 0
        self.classes = list(classes) if classes is not None else [str(c) for c in range(num)]
        self.mapping = mapping

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def targets(self) -> list[int]:
        """Labels as a list of ints (torchvision's attribute name)."""
        return self.labels.tolist()

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        x = self.dataset[index][0]
        return x, int(self.labels[index])

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, int]]:
        return [(item[0], int(self.labels[i])) for i, item in zip(indices, fetch_many(self.dataset, indices))]

    def __getattr__(self, name: str) -> Any:
        # Only reached when normal lookup fails; guard against recursion before __init__ (pickling).
        if name.startswith("__") or "dataset" not in self.__dict__:
            raise AttributeError(name)
        return getattr(self.__dict__["dataset"], name)


def relabel_dataset(dataset: SizedDataset, protocol: str, *, seed: int = 0) -> RelabelledDataset:
    """Apply a label protocol to a whole classification dataset.

    The class count m is ``len(dataset.classes)`` (else ``max(label) + 1``); ``"coarse"`` reads
    the superclass map from the dataset (see :func:`superclass_map`). Apply the SAME protocol and
    seed to the train and test splits so they share one mapping.

    Args:
        dataset: labelled classification dataset.
        protocol: a protocol of the module docstring; its hacker's side is applied (wrap it in
            :func:`protector_protocol` for the protector's labels).
        seed: seed of the ``random-N`` partition.

    Returns:
        A :class:`RelabelledDataset` with ``mapping`` set.

    Example:
        >>> from obstructlib.data import load_dataset
        >>> ds = relabel_dataset(load_dataset("synthetic", split="test", num_test=30), "coarse")
        >>> ds.classes
        ['round', 'angular', 'linear']
    """
    labels = labels_of(dataset)
    if labels is None:
        raise ConfigError("the dataset has no class labels to relabel: use a classification dataset")
    classes = list(getattr(dataset, "classes", []) or [])
    m = len(classes) or (int(labels.max()) + 1 if len(labels) else 0)
    new, n, mapping = relabel(labels, protocol, num_classes=m, superclass_of=superclass_map(dataset), seed=seed)
    kind, _ = parse_protocol(hacker_protocol(protocol))
    names: list[str] | None
    if kind == "original":
        names = classes or None
    elif kind == "coarse":
        coarse = superclass_names(dataset)
        names = coarse if coarse is not None and len(coarse) == n else None
    else:  # a random group is named by its members, e.g. "circle+plus"
        names = ["+".join(classes[c] if c < len(classes) else str(c) for c in np.flatnonzero(mapping == g))
                 for g in range(n)]
    return RelabelledDataset(dataset, new, names, mapping)


__all__ = [
    "PROTOCOLS",
    "RelabelledDataset",
    "hacker_protocol",
    "parse_protocol",
    "protector_protocol",
    "random_partition",
    "relabel",
    "relabel_dataset",
    "superclass_map",
    "superclass_names",
]
