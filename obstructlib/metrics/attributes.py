"""Attribute metrics of Learning to Obstruct's CelebA variant: AUROC per attribute and collateral damage.

Each CelebA attribute is a binary task scored by the positive-class probability of a 2-way CLIP
classifier. LTO reports its AUROC x 100 ("Res" for the restricted attribute, "Oth" the mean over
the other eleven) and, to show which attributes suffer with the restricted one, a *collateral
matrix*: for each restricted attribute r (one obstruction run), the AUROC drop of every attribute
a' divided by the drop of r itself (paper Fig. 6).

References:
    Zheng et al., Learning to Obstruct Few-Shot Image Classification over Restricted Classes,
    ECCV 2024, arXiv:2409.19210 (spec 2.6). Hanley and McNeil, The meaning and use of the area
    under a ROC curve, Radiology 1982 (AUROC = Mann-Whitney U / (n_pos n_neg)).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from obstructlib.errors import ConfigError

__all__ = ["auroc_per_attribute", "binary_auroc", "collateral_matrix"]

ArrayLike = np.ndarray | torch.Tensor | Sequence[float]


def _array(name: str, values: ArrayLike, ndim: int) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().double().numpy()
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != ndim:
        raise ConfigError(f"{name} has shape {arr.shape}: pass a {ndim}-D array")
    if not np.all(np.isfinite(arr)):
        raise ConfigError(f"{name} holds NaN or infinite values: check the model's outputs")
    return arr


def _auroc(scores: np.ndarray, targets: np.ndarray, what: str) -> float:
    if scores.shape != targets.shape:
        raise ConfigError(f"{what}: {scores.size} scores for {targets.size} targets: pass one target per score")
    if not np.all((targets == 0) | (targets == 1)):
        raise ConfigError(f"{what}: targets must be 0 or 1 (map CelebA's -1 to 0 first)")
    n_pos = int(targets.sum())
    n_neg = targets.size - n_pos
    if n_pos == 0 or n_neg == 0:
        only = "negatives" if n_pos == 0 else "positives"
        raise ConfigError(f"{what}: AUROC is undefined with only {only} ({targets.size} targets): "
                          "evaluate on a set holding both classes")
    # Average ranks (1-based): tied scores share the mean of their positions, so a tied
    # positive-negative pair counts 1/2 in U (the Mann-Whitney form).
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2.0)[inverse.reshape(-1)]
    u = ranks[targets.reshape(-1) == 1].sum() - n_pos * (n_pos + 1) / 2.0
    return float(100.0 * u / (n_pos * n_neg))


def binary_auroc(scores: ArrayLike, targets: ArrayLike) -> float:
    """Area under the ROC curve of one binary task, in percent (x 100, as the paper reports it).

    ``AUROC = U / (n_pos n_neg)`` with ``U = sum of the positives' ranks - n_pos (n_pos + 1) / 2``:
    the probability that a random positive scores above a random negative, a tie counting 1/2.
    This equals ``sklearn.metrics.roc_auc_score`` and torcheval's ``binary_auroc`` (the official
    code's metric) times 100. Only the order of the scores matters, so logits work as well as
    probabilities.

    Args:
        scores: any real scores, higher meaning "positive" (e.g. the positive-class probability).
        targets: 0 or 1 per score (bool or numbers); both classes must be present.

    Shape:
        ``scores`` and ``targets``: ``(N,)``.

    Raises:
        ConfigError: when a class is missing (AUROC is undefined), on shape mismatch, on targets
            other than 0/1 or on non-finite scores.

    References:
        arXiv:2409.19210 (spec 2.6: AUROC x 100 per attribute).

    Example:
        >>> binary_auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
        75.0
        >>> binary_auroc([0.5, 0.5, 0.2, 0.9], [1, 0, 0, 1])  # one tied pair counts 1/2
        87.5
    """
    return _auroc(_array("scores", scores, 1), _array("targets", targets, 1), "binary_auroc")


def auroc_per_attribute(probs: ArrayLike, targets: ArrayLike,
                        attr_names: Sequence[str] | None = None) -> np.ndarray:
    """:func:`binary_auroc` of every column: one AUROC (in percent) per attribute.

    Args:
        probs: positive-class probability (or any score) of each image for each attribute.
        targets: 0/1 attribute values, the same shape.
        attr_names: names of the A columns, used only in error messages.

    Shape:
        ``probs`` and ``targets``: ``(N, A)``; output ``(A,)``, float64 in [0, 100].

    References:
        arXiv:2409.19210 (spec 2.6: "Res" = the restricted column, "Oth" = the mean of the others).

    Example:
        >>> auroc_per_attribute([[0.9, 0.2], [0.1, 0.7], [0.6, 0.7]], [[1, 0], [0, 1], [1, 0]])
        array([100.,  75.])
    """
    p, t = _array("probs", probs, 2), _array("targets", targets, 2)
    if p.shape != t.shape:
        raise ConfigError(f"probs {p.shape} and targets {t.shape} differ: pass one target per score")
    if attr_names is not None and len(attr_names) != p.shape[1]:
        raise ConfigError(f"{len(attr_names)} attr_names for {p.shape[1]} columns: pass one name per column")
    names = list(attr_names) if attr_names is not None else [f"column {a}" for a in range(p.shape[1])]
    return np.array([_auroc(p[:, a], t[:, a], f"attribute {names[a]!r}") for a in range(p.shape[1])])


def collateral_matrix(auroc_before: ArrayLike, auroc_after: ArrayLike, restricted: Sequence[int],
                      clip: tuple[float, float] | None = (0.0, 2.0)) -> np.ndarray:
    """LTO's collateral matrix: each attribute's AUROC drop relative to the restricted one's.

    For obstruction run r, restricting attribute ``restricted[r]``::

        drop[r, a'] = auroc_before[a'] - auroc_after[r, a']
        M[r, a']    = drop[r, a'] / drop[r, restricted[r]]

    So ``M[r, restricted[r]] = 1``; ``M[r, a'] = 1`` means a' lost as much as the restricted
    attribute, 0 that it lost nothing. Then ``M`` is clipped to ``clip`` (the paper's display range
    [0, 2]: a gain on a' shows as 0, a drop more than twice the restricted one as 2).

    A run whose restricted attribute did not drop (``drop[r, restricted[r]] <= 0``) has no ratio
    to report: its row is NaN (before and after clipping). The official tool divides by
    ``drop + 1e-12`` instead, turning such a row into sign-flipped or huge values that the clip then
    hides; we refuse that [deviation].

    Args:
        auroc_before: AUROC of every attribute from the unobstructed model (percent or fraction,
            the same unit as ``auroc_after``).
        auroc_after: one row per obstruction run: every attribute's AUROC after that run (at the
            chosen operating point).
        restricted: the restricted attribute's column for each row, in ``0..A-1``.
        clip: ``(low, high)`` bounds, or None for the raw ratios.

    Shape:
        ``auroc_before`` ``(A,)``, ``auroc_after`` ``(R, A)``, ``restricted`` ``(R,)``; output ``(R, A)``.

    References:
        arXiv:2409.19210 (Fig. 6; spec 2.6, official ``tools/confusion_matrix.py``).

    Example:
        >>> m = collateral_matrix([90, 80, 70], [[70, 75, 71], [88, 80, 70]], restricted=[0, 1], clip=None)
        >>> m[0].tolist()  # drops 20, 5, -1 over the restricted drop 20
        [1.0, 0.25, -0.05]
        >>> bool(np.isnan(m[1]).all())  # run 1's restricted attribute did not drop
        True
        >>> collateral_matrix([90, 80, 70], [[70, 75, 71]], restricted=[0])[0].tolist()
        [1.0, 0.25, 0.0]
    """
    before = _array("auroc_before", auroc_before, 1)
    after = _array("auroc_after", auroc_after, 2)
    rows = np.asarray(restricted, dtype=np.int64).reshape(-1)
    if after.shape[1] != before.size:
        raise ConfigError(f"auroc_after has {after.shape[1]} columns for {before.size} attributes: "
                          "pass every attribute's AUROC in each row")
    if rows.size != after.shape[0]:
        raise ConfigError(f"{rows.size} restricted ids for {after.shape[0]} runs: pass one id per row of auroc_after")
    if rows.size and (rows.min() < 0 or rows.max() >= before.size):
        raise ConfigError(f"restricted ids must lie in 0..{before.size - 1} (got {rows.tolist()})")
    if clip is not None and not clip[0] < clip[1]:
        raise ConfigError(f"clip={clip}: use (low, high) with low < high, or None")
    drop = before[None, :] - after
    own = drop[np.arange(rows.size), rows][:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        m = np.where(own > 0, drop / np.where(own > 0, own, 1.0), np.nan)
    return m if clip is None else np.clip(m, clip[0], clip[1])
