"""Classification metrics: accuracy variants, zero-shot accuracy, attack success rate, KL.

Every function is pure: it takes predictions or logits as torch tensors, numpy arrays or lists,
never touches a model, and returns a Python float (or a numpy array where it says so).
Fractions are in [0, 1] (not percent), so clean accuracy (CA) and attack success rate (ASR)
read on the same scale.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import overload

import numpy as np
import torch
import torch.nn.functional as F

from obstructlib.errors import ConfigError, check_finite

ArrayLike = torch.Tensor | np.ndarray | Sequence

__all__ = [
    "accuracy",
    "attack_success_rate",
    "kl_divergence",
    "per_class_accuracy",
    "subset_accuracy",
    "topk_accuracy",
    "zero_shot_accuracy",
]


def _as_tensor(x: ArrayLike, name: str) -> torch.Tensor:
    t = x.detach() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    if t.numel() == 0:
        raise ConfigError(f"{name} is empty: pass at least one sample")
    return t


@overload
def _predictions(logits_or_preds: ArrayLike, targets: ArrayLike) -> tuple[torch.Tensor, torch.Tensor]: ...


@overload
def _predictions(logits_or_preds: ArrayLike, targets: None = None) -> tuple[torch.Tensor, None]: ...


def _predictions(
    logits_or_preds: ArrayLike, targets: ArrayLike | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Return integer predictions ``(N,)`` (argmax of 2-D logits) and targets on the same device."""
    x = _as_tensor(logits_or_preds, "predictions")
    if x.ndim == 2:
        preds = check_finite("logits", x).argmax(dim=1)  # argmax of NaN rows is arbitrary
    elif x.ndim == 1:
        preds = x.long()
    else:
        raise ConfigError(
            f"predictions have shape {tuple(x.shape)}: pass logits (N, C) or class indices (N,)"
        )
    if targets is None:
        return preds, None
    y = _as_tensor(targets, "targets").reshape(-1).to(preds.device).long()
    if y.shape[0] != preds.shape[0]:
        raise ConfigError(
            f"{preds.shape[0]} predictions but {y.shape[0]} targets: pass one target per sample"
        )
    return preds, y


def accuracy(logits_or_preds: ArrayLike, targets: ArrayLike) -> float:
    """Top-1 accuracy as a fraction in [0, 1].

    Args:
        logits_or_preds: logits or scores ``(N, C)`` (argmax is taken) or class indices ``(N,)``.
        targets: true class indices ``(N,)``.

    Shape:
        ``(N, C)`` or ``(N,)`` and ``(N,)``; returns a Python float.

    Example:
        >>> accuracy(torch.tensor([[2.0, 1.0], [0.0, 3.0]]), torch.tensor([0, 0]))
        0.5
    """
    preds, y = _predictions(logits_or_preds, targets)
    return (preds == y).double().mean().item()


def subset_accuracy(preds_or_logits: ArrayLike, targets: ArrayLike, classes: Sequence[int]) -> float:
    """Accuracy over the samples whose TRUE label is in ``classes`` (fraction in [0, 1]).

    Predictions are not restricted: a sample of class 3 predicted as a class outside ``classes``
    counts as wrong. This is the "accuracy on the restricted (or the retained) classes" of LTO.

    Args:
        preds_or_logits: logits ``(N, C)`` or class indices ``(N,)``.
        targets: true class indices ``(N,)``.
        classes: the class indices to keep.

    Example:
        >>> subset_accuracy([0, 1, 2, 2], [0, 2, 2, 1], classes=[2])
        0.5
    """
    preds, y = _predictions(preds_or_logits, targets)
    keep = torch.isin(y, torch.as_tensor(list(classes), dtype=torch.long, device=y.device))
    if not bool(keep.any()):
        raise ConfigError(f"no sample has a true label in classes={list(classes)}: check the class indices")
    return (preds[keep] == y[keep]).double().mean().item()


def per_class_accuracy(preds_or_logits: ArrayLike, targets: ArrayLike, num_classes: int) -> np.ndarray:
    """Accuracy of each class (fraction in [0, 1]); ``nan`` for a class with no sample.

    Args:
        preds_or_logits: logits ``(N, C)`` or class indices ``(N,)``.
        targets: true class indices ``(N,)`` in ``[0, num_classes)``.
        num_classes: length of the result.

    Shape:
        Returns float64 ``(num_classes,)``.

    Example:
        >>> per_class_accuracy([0, 1, 1], [0, 0, 1], num_classes=3)
        array([0.5, 1. , nan])
    """
    preds, y = _predictions(preds_or_logits, targets)
    if int(y.min()) < 0 or int(y.max()) >= num_classes:
        raise ConfigError(f"targets must lie in [0, {num_classes}): raise num_classes or fix the labels")
    y_np, hit = y.cpu().numpy(), (preds == y).cpu().numpy()
    count = np.bincount(y_np, minlength=num_classes).astype(np.float64)
    correct = np.bincount(y_np, weights=hit.astype(np.float64), minlength=num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, correct / count, np.nan)


def topk_accuracy(logits: ArrayLike, targets: ArrayLike, k: int) -> float:
    """Fraction of samples whose true class is among the ``k`` highest logits.

    Ties at the k-th place are resolved by ``torch.topk`` (implementation order).

    Args:
        logits: scores ``(N, C)``.
        targets: true class indices ``(N,)``.
        k: number of guesses, ``1 <= k <= C``.

    Example:
        >>> topk_accuracy(torch.tensor([[3.0, 2.0, 1.0]]), torch.tensor([1]), k=2)
        1.0
    """
    x = _as_tensor(logits, "logits")
    if x.ndim != 2:
        raise ConfigError(f"logits have shape {tuple(x.shape)}: topk_accuracy needs (N, C) scores")
    if not 1 <= k <= x.shape[1]:
        raise ConfigError(f"k={k} is outside [1, {x.shape[1]}]: pick k between 1 and the number of classes")
    _, y = _predictions(x, targets)
    top = x.topk(k, dim=1).indices
    return (top == y[:, None]).any(dim=1).double().mean().item()


def zero_shot_accuracy(
    image_features: ArrayLike,
    class_features: ArrayLike,
    labels: ArrayLike,
    topk: int = 1,
    chunk_size: int = 8192,
) -> float:
    """Zero-shot (nearest class embedding by cosine similarity) top-k accuracy in [0, 1].

    Both feature sets are L2-normalised here, so raw encoder outputs are fine.

    Args:
        image_features: image embeddings ``(N, D)``.
        class_features: one embedding per class ``(C, D)`` (e.g. from ``zero_shot_classifier``).
        labels: true class indices ``(N,)``.
        topk: count a hit when the true class is among the ``topk`` most similar classes.
        chunk_size: images scored at a time (bounds memory to ``chunk_size x C`` floats).

    References:
        Radford et al., "Learning Transferable Visual Models From Natural Language
        Supervision", arXiv:2103.00020.

    Example:
        >>> zero_shot_accuracy(torch.eye(2), torch.eye(2), torch.tensor([0, 0]))
        0.5
    """
    img = F.normalize(check_finite("image_features", _as_tensor(image_features, "image_features").float()), dim=-1)
    cls = F.normalize(check_finite("class_features", _as_tensor(class_features, "class_features").float()
                                   .to(img.device)), dim=-1)
    if img.ndim != 2 or cls.ndim != 2 or img.shape[1] != cls.shape[1]:
        raise ConfigError(
            f"feature shapes {tuple(img.shape)} and {tuple(cls.shape)} do not match: pass (N, D) and (C, D)"
        )
    if not 1 <= topk <= cls.shape[0]:
        raise ConfigError(
            f"topk={topk} is outside [1, {cls.shape[0]}]: pick topk up to the number of classes"
        )
    y = _as_tensor(labels, "labels").reshape(-1).long().to(img.device)
    if y.shape[0] != img.shape[0]:
        raise ConfigError(f"{img.shape[0]} image features but {y.shape[0]} labels: pass one label per image")
    hits = 0
    for start in range(0, img.shape[0], chunk_size):
        top = (img[start : start + chunk_size] @ cls.T).topk(topk, dim=1).indices
        hits += int((top == y[start : start + chunk_size, None]).any(dim=1).sum())
    return hits / img.shape[0]


def attack_success_rate(
    preds_or_logits: ArrayLike, target_label: int, true_labels: ArrayLike | None = None
) -> float:
    """Fraction of (triggered) samples predicted as ``target_label``, in [0, 1].

    With ``true_labels``, samples whose true label already is the target are left out, as most of
    the backdoor literature does (a genuine "banana" predicted "banana" is no attack success).
    Without it every sample counts, which is what BadCLIP/CleanCLIP's evaluation code reports on
    its zero-shot path only. Their linear-probe and fine-tuning paths are neither mode: they drop
    the true-target samples from the hits but still divide by the number of all samples.

    Args:
        preds_or_logits: predictions on triggered inputs, logits ``(N, C)`` or indices ``(N,)``.
        target_label: the attacker's target class index.
        true_labels: the clean labels ``(N,)``; None counts every sample.

    Example:
        >>> attack_success_rate([5, 5, 1, 5], target_label=5, true_labels=[0, 5, 1, 2])
        0.6666666666666666
    """
    preds, y = _predictions(preds_or_logits, true_labels)
    hit = preds == int(target_label)
    if y is not None:
        keep = y != int(target_label)
        if not bool(keep.any()):
            raise ConfigError(
                f"every sample's true label is the target {target_label}: evaluate on non-target samples"
            )
        hit = hit[keep]
    return hit.double().mean().item()


def kl_divergence(logits_p: ArrayLike, logits_q: ArrayLike, reduction: str = "mean") -> float | np.ndarray:
    """KL(P || Q) between the softmax distributions of two sets of logits, in nats.

    Computed as ``sum_c p_c (log p_c - log q_c)`` from ``log_softmax`` in float64, so very
    confident logits do not overflow. For UBT's "KL to the retrained model", P is the retrained
    (reference) model and Q the defended one; scale CLIP logits by the logit scale first.

    Args:
        logits_p: logits of the reference distribution ``(N, C)`` (or ``(C,)`` for one sample).
        logits_q: logits of the compared distribution, same shape.
        reduction: ``"mean"`` or ``"sum"`` over samples (a float), or ``"none"`` (float64 ``(N,)``).

    Example:
        >>> kl_divergence(torch.zeros(1, 2), torch.tensor([[0.0, 0.0]]))
        0.0
    """
    p = _as_tensor(logits_p, "logits_p").double()
    q = _as_tensor(logits_q, "logits_q").double().to(p.device)
    if p.shape != q.shape:
        raise ConfigError(
            f"logit shapes {tuple(p.shape)} and {tuple(q.shape)} differ: pass the same samples and classes"
        )
    if reduction not in ("mean", "sum", "none"):
        raise ConfigError(f"reduction={reduction!r} is unknown: use 'mean', 'sum' or 'none'")
    check_finite("logits_p", p)
    check_finite("logits_q", q)
    p, q = p.reshape(-1, p.shape[-1]), q.reshape(-1, q.shape[-1])
    log_p, log_q = F.log_softmax(p, dim=-1), F.log_softmax(q, dim=-1)
    per_sample = (log_p.exp() * (log_p - log_q)).sum(dim=-1).clamp_min(0.0)  # clamp: rounding can give -1e-17
    if reduction == "none":
        return per_sample.cpu().numpy()
    return (per_sample.mean() if reduction == "mean" else per_sample.sum()).item()
