"""Transferability metrics: the area under a sample-wise learning curve and NTP's SLC-AUC.

A *sample-wise learning curve* (SLC) records the target test accuracy reached by fine-tuning on a
budget r of the target training set, for budgets on a log grid (0.1% to 100% in the paper).
SLC-AUC is the area under that curve over log(r) minus the same area for training from scratch
on the same budgets: below 0, the released model is a worse start than random weights.

References:
    Ding et al., Non-transferable Pruning, ECCV 2024, arXiv:2410.08015.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from obstructlib.errors import ConfigError

__all__ = ["log_area", "slc_auc"]


def _curve(name: str, values: Sequence[float] | np.ndarray) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        raise ConfigError(f"{name} is empty: pass one value per budget")
    if not np.all(np.isfinite(arr)):
        raise ConfigError(f"{name} holds NaN or infinite values: rerun the curve that produced them")
    return arr


def _grid(ratios: Sequence[float] | np.ndarray) -> np.ndarray:
    r = _curve("ratios", ratios)
    if r.size < 2:
        raise ConfigError(f"ratios has {r.size} budget: an area needs at least two budgets")
    if np.any(r <= 0) or np.any(r > 1):
        raise ConfigError(f"ratios must lie in (0, 1] (got {r.min():g}..{r.max():g}): pass shares of the target set")
    if np.any(np.diff(r) <= 0):
        raise ConfigError("ratios must be strictly increasing: sort the budgets and drop duplicates")
    return r


def log_area(ratios: Sequence[float] | np.ndarray, accuracies: Sequence[float] | np.ndarray,
             log_base: float = 10.0) -> float:
    """Trapezoidal area under ``accuracy(ratio)`` with a logarithmic x-axis.

    ``sum_k (log_b r_{k+1} - log_b r_k) * (a_k + a_{k+1}) / 2``, accuracies as fractions.

    Args:
        ratios: strictly increasing budgets in (0, 1] (shares of the target training set).
        accuracies: accuracy in [0, 1] at each budget.
        log_base: base of the logarithm on the x-axis (10, or ``math.e`` for the authors' notebooks).

    Shape:
        ``ratios`` and ``accuracies``: ``(K,)`` with K >= 2.

    References:
        arXiv:2410.08015 (SLC, Sec. "Evaluation").

    Example:
        >>> round(log_area([0.01, 0.1, 1.0], [0.2, 0.4, 0.6]), 6)
        0.8
    """
    r = _grid(ratios)
    a = _curve("accuracies", accuracies)
    if a.shape != r.shape:
        raise ConfigError(f"{a.size} accuracies for {r.size} budgets: pass one accuracy per budget")
    if log_base <= 0 or log_base == 1:
        raise ConfigError(f"log_base={log_base}: use a positive base other than 1 (10 or math.e)")
    x = np.log(r) / math.log(log_base)
    return float(np.sum(np.diff(x) * (a[1:] + a[:-1]) / 2.0))


def slc_auc(ratios: Sequence[float] | np.ndarray, acc_model: Sequence[float] | np.ndarray,
            acc_scratch: Sequence[float] | np.ndarray, log_base: float = 10.0,
            scratch_ratios: Sequence[float] | np.ndarray | None = None) -> float:
    """SLC-AUC: area under the fine-tuned model's curve minus that of training from scratch.

    Negative means fine-tuning the released model on the target is worse than starting from
    random weights at the same budgets (NTP's success criterion); positive means it transfers.

    The paper's average of -0.54 matches the authors' notebook values (which integrate over
    natural-log budgets) divided by ln 10, so the default base is 10; pass ``log_base=math.e``
    to compare with the notebooks. Both curves must share one budget grid: the official
    notebooks subtracted areas over different grids, which is not meaningful, so a
    ``scratch_ratios`` differing from ``ratios`` is refused.

    Args:
        ratios: strictly increasing budgets in (0, 1].
        acc_model: target test accuracy in [0, 1] of the fine-tuned model at each budget.
        acc_scratch: the same for a model trained from scratch.
        log_base: base of the logarithmic x-axis.
        scratch_ratios: the scratch curve's own grid, if it was recorded separately; it must equal
            ``ratios``.

    Shape:
        every array ``(K,)`` with K >= 2.

    References:
        Ding et al., Non-transferable Pruning, arXiv:2410.08015.

    Example:
        >>> round(slc_auc([0.01, 0.1, 1.0], [0.1, 0.1, 0.2], [0.2, 0.4, 0.6]), 3)
        -0.55
    """
    if scratch_ratios is not None:
        other = np.asarray(scratch_ratios, dtype=np.float64).reshape(-1)
        mine = np.asarray(ratios, dtype=np.float64).reshape(-1)
        if other.shape != mine.shape or not np.allclose(other, mine, rtol=1e-9, atol=0.0):
            raise ConfigError("the model and scratch curves use different budget grids: "
                              "evaluate both on the same ratios")
    return log_area(ratios, acc_model, log_base) - log_area(ratios, acc_scratch, log_base)
