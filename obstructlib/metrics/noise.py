"""How much of a protective noise is about the class: is it a class-wise shortcut in disguise?

Sample-wise noise can still be class-wise in effect. Error-minimising noise made against
captions that name the class ("a photo of a cat.") is pushed the same way for every cat, and a
hacker then learns one shortcut per class, which is what makes such noise strong on zero-shot
tests. :func:`noise_class_structure` measures it with two numbers that need no model:

- ``between_class_energy``: the fraction of the (centred) noise energy that the class means
  explain, ``sum_c n_c ||mu_c - mu||^2 / sum_i ||delta_i - mu||^2``; about ``(C - 1) / N`` for noise
  that ignores the class, 1 for purely class-wise noise;
- ``centroid_accuracy``: held-out accuracy of a nearest-class-mean classifier on the noise alone
  (means from one half of every class, tested on the other half, and the other way round), beside
  ``chance`` = ``1 / C``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from obstructlib.errors import ConfigError


def noise_class_structure(noise: Any, labels: Any, seed: int = 0) -> dict[str, float]:
    """Between-class energy fraction and nearest-centroid accuracy of noise against labels.

    Args:
        noise: ``(N, ...)`` noise of N samples (array or tensor; flattened per sample).
        labels: ``N`` integer class labels; every class needs at least two samples.
        seed: seed of the two-fold split.

    Returns:
        ``{"between_class_energy", "centroid_accuracy", "chance", "num_classes"}``.

    Example:
        >>> labels = np.repeat(np.arange(3), 4)
        >>> noise = np.eye(3)[labels] + 0.01 * np.random.default_rng(0).standard_normal((12, 3))
        >>> r = noise_class_structure(noise, labels)
        >>> r["centroid_accuracy"], round(r["between_class_energy"], 2)
        (1.0, 1.0)
    """
    x = torch.as_tensor(np.asarray(noise), dtype=torch.float64).flatten(1)
    y = np.asarray(labels).astype(np.int64).ravel()
    if len(y) != len(x):
        raise ConfigError(f"{len(x)} noise rows but {len(y)} labels: pass one label per noise row")
    classes, y = np.unique(y, return_inverse=True)
    counts = np.bincount(y)
    if len(classes) < 2 or counts.min() < 2:
        raise ConfigError("noise_class_structure needs at least two classes with at least two samples each")
    n = torch.from_numpy(counts).to(x.dtype)
    centred = x - x.mean(0)
    sums = torch.zeros(len(classes), x.shape[1], dtype=x.dtype).index_add_(0, torch.from_numpy(y), centred)
    means = sums / n[:, None]
    total = float(centred.pow(2).sum())
    between = float((n * means.pow(2).sum(1)).sum())

    rng = np.random.default_rng(seed)
    fold = np.zeros(len(y), np.int64)
    for c in range(len(classes)):
        idx = np.flatnonzero(y == c)
        fold[rng.permutation(idx)[: len(idx) // 2]] = 1
    correct = 0
    for f in (0, 1):
        fit, test = np.flatnonzero(fold == f), np.flatnonzero(fold != f)
        centroids = torch.stack([x[fit[y[fit] == c]].mean(0) for c in range(len(classes))])
        pred = torch.cdist(x[test], centroids).argmin(1).numpy()
        correct += int((pred == y[test]).sum())
    return {
        "between_class_energy": between / total if total > 0 else 0.0,
        "centroid_accuracy": correct / len(y),
        "chance": 1.0 / len(classes),
        "num_classes": float(len(classes)),
    }
