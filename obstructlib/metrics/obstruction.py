"""Obstruction metrics: Learning to Obstruct's DropRatio@beta on an outer-step trajectory.

An obstruction run evaluates the attacker every few outer steps and records a *trajectory*
``(step, acc_r, acc_o)``: the attacker's top-1 accuracy (percent) on the restricted classes R and
on the other classes R' after it ran its few-shot learner from the current backbone. The first row
is the attacker from the unobstructed backbone (step 0: ``acc_r0``, ``acc_o0``). With the drops
``drop_r = acc_r0 - acc_r`` and ``drop_o = acc_o0 - acc_o`` (percentage points),

    DropRatio = drop_r / drop_o,

and DropRatio@beta is its value at the operating point where the other classes have lost ``beta``
points (the paper uses beta = 2): higher is better, 1 means R fell no more than R'.

References:
    Zheng et al., Learning to Obstruct Few-Shot Image Classification over Restricted Classes,
    ECCV 2024, arXiv:2409.19210.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from obstructlib.errors import ConfigError

__all__ = ["drop_ratio_at", "drop_ratios", "mean_drop_ratio", "operating_point"]

METHODS = ("interpolate", "nearest", "within")


def _trajectory(trajectory: Any) -> np.ndarray:
    rows = [(r["step"], r["acc_r"], r["acc_o"]) if isinstance(r, Mapping) else tuple(r) for r in trajectory]
    arr = np.asarray(rows, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ConfigError("a trajectory is rows of (step, acc_r, acc_o) or dicts with those keys: pass that")
    if len(arr) < 2:
        raise ConfigError(f"the trajectory has {len(arr)} row: it needs the step-0 reference and one checkpoint")
    if not np.all(np.isfinite(arr)):
        raise ConfigError("the trajectory holds NaN or infinite values: rerun the evaluation that produced them")
    if np.any(np.diff(arr[:, 0]) <= 0):
        raise ConfigError("trajectory steps must be strictly increasing, starting with the reference")
    return arr


def drop_ratios(trajectory: Any) -> np.ndarray:
    """DropRatio of every checkpoint after the first (the official evaluator's per-row value).

    Where the other classes did not drop (``drop_o <= 0``) the ratio is undefined; the official
    code prints the raw R-drop with an asterisk there, and so this returns NaN (read the raw drops
    from the trajectory instead).

    Args:
        trajectory: rows ``(step, acc_r, acc_o)``, accuracies in percent, the reference first.

    Shape:
        ``(T, 3)`` in, ``(T - 1,)`` out.

    Example:
        >>> drop_ratios([(0, 60, 50), (10, 50, 49), (20, 40, 50)]).tolist()
        [10.0, nan]
    """
    arr = _trajectory(trajectory)
    drop_r = arr[0, 1] - arr[1:, 1]
    drop_o = arr[0, 2] - arr[1:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(drop_o > 0, drop_r / np.where(drop_o > 0, drop_o, 1.0), np.nan)


def operating_point(beta: float, trajectory: Any, method: str = "interpolate") -> dict[str, Any]:
    """Where the trajectory's other-class drop reaches ``beta``, and the DropRatio there.

    Two rules, both documented in the paper's spec:

    - ``interpolate`` (default): walk the trajectory in step order to the first segment where
      ``drop_o`` crosses ``beta`` and interpolate ``drop_r`` linearly there; the ratio is
      ``drop_r / beta``.
    - ``nearest`` (paper-style): the evaluated checkpoint whose ``drop_o`` is closest to ``beta``
      (absolute difference; the official plotting tool forgot the absolute value and so picked the
      checkpoint with the *largest* R' drop), ratio ``drop_r / drop_o`` there.

    - ``within``: the evaluated checkpoint with the largest ``drop_r`` among those whose ``drop_o``
      is at most ``beta``, ratio ``drop_r / beta``: the R-drop a defender gets for at most beta
      points of R'. If every checkpoint costs more than beta, the least costly one, ratio
      ``drop_r / drop_o`` there. Unlike the two above it is not thrown by one noisy early dip of Acc_O below
      beta; it is our addition (not the paper's), reported beside them.

    When no checkpoint reaches ``beta`` (``reached`` is False) both rules use the checkpoint with
    the largest ``drop_o`` and divide its ``drop_r`` by ``beta``: the R-drop bought for at most
    beta points of R', a conservative figure. When no checkpoint drops R' at all (the official
    code's asterisk case) the same rule applies and ``no_drop`` is True.

    Args:
        beta: the tolerated drop on R' in percentage points, > 0 (the paper: 2).
        trajectory: rows ``(step, acc_r, acc_o)`` (or dicts), accuracies in percent, the step-0
            reference first.
        method: ``interpolate``, ``nearest`` or ``within``.

    Returns:
        ``{"ratio", "step", "drop_r", "drop_o", "reached", "no_drop"}``; ``step`` is fractional
        for an interpolated point.

    Example:
        >>> p = operating_point(2.0, [(0, 60, 50), (10, 55, 49), (20, 40, 47)])
        >>> p["ratio"], p["step"], p["reached"]
        (6.25, 15.0, True)
    """
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}: use one of {', '.join(METHODS)}")
    if not np.isfinite(beta) or beta <= 0:
        raise ConfigError(f"beta={beta}: the tolerated drop on the other classes must be > 0 points (the paper: 2)")
    arr = _trajectory(trajectory)
    steps, drop_r, drop_o = arr[:, 0], arr[0, 1] - arr[:, 1], arr[0, 2] - arr[:, 2]
    reached = bool(np.any(drop_o[1:] >= beta))
    if method == "within":
        ok = np.flatnonzero(drop_o[1:] <= beta) + 1
        if len(ok) == 0:  # every checkpoint already costs more than beta: the least costly one
            ok = np.array([1 + int(np.argmin(drop_o[1:]))])
        k = int(ok[np.argmax(drop_r[ok])])
        # a fallback checkpoint costing more than beta is divided by what it cost, never by beta
        return {"ratio": float(drop_r[k] / max(drop_o[k], beta)), "step": float(steps[k]), "drop_r": float(drop_r[k]),
                "drop_o": float(drop_o[k]), "reached": reached, "no_drop": bool(np.all(drop_o[1:] <= 0))}
    if not reached:
        k = 1 + int(np.argmax(drop_o[1:]))
        return {"ratio": float(drop_r[k] / beta), "step": float(steps[k]), "drop_r": float(drop_r[k]),
                "drop_o": float(drop_o[k]), "reached": False, "no_drop": bool(drop_o[k] <= 0)}
    if method == "nearest":
        k = 1 + int(np.argmin(np.abs(drop_o[1:] - beta)))
        return {"ratio": float(drop_r[k] / drop_o[k]), "step": float(steps[k]), "drop_r": float(drop_r[k]),
                "drop_o": float(drop_o[k]), "reached": True, "no_drop": False}
    k = 1 + int(np.flatnonzero(drop_o[1:] >= beta)[0])  # first checkpoint at or past beta
    lo = k - 1
    t = 1.0 if drop_o[k] == drop_o[lo] else float(np.clip((beta - drop_o[lo]) / (drop_o[k] - drop_o[lo]), 0, 1))
    dr = drop_r[lo] + t * (drop_r[k] - drop_r[lo])
    return {"ratio": float(dr / beta), "step": float(steps[lo] + t * (steps[k] - steps[lo])), "drop_r": float(dr),
            "drop_o": float(beta), "reached": True, "no_drop": False}


def drop_ratio_at(beta: float, trajectory: Any, method: str = "interpolate") -> float:
    """DropRatio@beta (Delta@beta): the R-drop per point of R'-drop at the beta operating point.

    See :func:`operating_point` for the two selection rules and the no-drop case.

    Args:
        beta: tolerated drop on R' in percentage points (> 0; the paper: 2).
        trajectory: rows ``(step, acc_r, acc_o)`` in percent, the step-0 reference first.
        method: ``interpolate`` (linear, at the first crossing), ``nearest`` (paper-style) or
            ``within`` (the best checkpoint costing at most beta; ours).

    References:
        arXiv:2409.19210 (Delta@beta, beta = 2).

    Example:
        >>> traj = [(0, 60, 50), (10, 55, 49), (20, 40, 47)]
        >>> drop_ratio_at(2.0, traj), drop_ratio_at(2.0, traj, "nearest"), drop_ratio_at(2.0, traj, "within")
        (6.25, 5.0, 2.5)
    """
    return float(operating_point(beta, trajectory, method)["ratio"])


def mean_drop_ratio(values: Sequence[float]) -> float:
    """Mean DropRatio@beta over restricted superclasses (the paper's per-dataset figure)."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        raise ConfigError("no per-superclass values to average: run at least one restricted superclass")
    return float(arr.mean())
