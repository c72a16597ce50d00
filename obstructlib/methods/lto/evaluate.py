"""LTO's evaluation protocol: the attacker re-runs the learner from the released backbone.

- :func:`attack_clip`: the CLIP protocol (spec 3.1). A copy of the backbone, the attacker's own
  shots (``k`` per class from its 20-per-class pool, disjoint from the defender's), the attacker's
  recipe (10 epochs; Tip-Adapter 20) and its own generator, the same at every evaluation as in the
  official code; all-way top-1 on the full test split, split into Acc_R and Acc_O, and per
  superclass.
- :func:`attack_episodic`: the classical protocol (spec 3.2). The attacker meta-trains the learner
  on the R' classes it is given (the official 70 % "meta-train-other" split) and is tested on N-way
  K-shot episodes over test-other and R; R's accuracy comes from the queries of R classes.
- :func:`evaluate`: the trajectory's DropRatio@beta, both selection rules.

References:
    Zheng et al., Learning to Obstruct, arXiv:2409.19210.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from obstructlib.engine import autocast
from obstructlib.methods.lto.learners import LearnerConfig, fit_learner, learner_logits, learner_text, model_device
from obstructlib.metrics.obstruction import operating_point

__all__ = ["attack_clip", "attack_episodic", "evaluate", "split_accuracy"]


def split_accuracy(preds: torch.Tensor, labels: torch.Tensor, restricted: Sequence[int],
                   superclasses: dict[str, Sequence[int]] | None = None) -> dict[str, Any]:
    """Top-1 accuracy in percent: overall, on R (``acc_r``), on the rest (``acc_o``), per superclass.

    Example:
        >>> round(split_accuracy(torch.tensor([0, 1, 1, 2]), torch.tensor([0, 1, 2, 2]), [0])["acc_o"], 2)
        66.67
    """
    preds, labels = preds.cpu(), labels.cpu()
    correct = (preds == labels).float()
    is_r = torch.isin(labels, torch.as_tensor(list(restricted), dtype=labels.dtype))
    out: dict[str, Any] = {
        "acc": 100.0 * float(correct.mean()),
        "acc_r": 100.0 * float(correct[is_r].mean()) if bool(is_r.any()) else float("nan"),
        "acc_o": 100.0 * float(correct[~is_r].mean()) if bool((~is_r).any()) else float("nan"),
    }
    if superclasses:
        out["per_superclass"] = {}
        for name, members in superclasses.items():
            m = torch.isin(labels, torch.as_tensor(list(members), dtype=labels.dtype))
            out["per_superclass"][name] = 100.0 * float(correct[m].mean()) if bool(m.any()) else float("nan")
    return out


@torch.no_grad()
def _predict(model: Any, state: Any, images: torch.Tensor, cfg: LearnerConfig, device: Any,
             batch_size: int = 500) -> torch.Tensor:
    model.eval()
    text = learner_text(model, state, device=device)  # every template at test time
    preds = []
    for start in range(0, len(images), batch_size):
        with autocast(device):
            logits = learner_logits(model, state, images[start:start + batch_size].to(device), text, cfg)
        preds.append(logits.argmax(dim=1).cpu())
    return torch.cat(preds)


def attack_clip(model: Any, shots: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor],
                classnames: Sequence[str], templates: Sequence[str], learner: LearnerConfig, *,
                restricted: Sequence[int], seed: int, superclasses: dict[str, Sequence[int]] | None = None,
                device: Any = None) -> dict[str, Any]:
    """The attacker's run on a copy of ``model``: its learner on its shots, then all-way test accuracy.

    Args:
        model: the released backbone (not changed).
        shots: the attacker's ``(images (N, C, H, W) in [0, 1], labels (N,))``.
        test: the full test split ``(images, labels)``.
        classnames: all C class names.
        templates: prompt templates.
        learner: the attacker's recipe (:func:`~obstructlib.methods.lto.learner_config`).
        restricted: class indices of R.
        seed: the attacker's own stream (never the defender's).
        superclasses: optional ``name -> class indices`` for per-superclass accuracy.
        device: where to compute.

    Returns:
        ``{"acc", "acc_r", "acc_o", ["per_superclass"], "seconds"}``, accuracies in percent.
    """
    import time

    t0 = time.perf_counter()
    device = model_device(model, device)
    attacker = copy.deepcopy(model)
    state = fit_learner(attacker, shots[0], shots[1], classnames, templates, learner,
                        generator=torch.Generator().manual_seed(seed), device=device)
    out = split_accuracy(_predict(attacker, state, test[0], learner, device), test[1], restricted, superclasses)
    out["seconds"] = time.perf_counter() - t0
    return out


def attack_episodic(model: Any, train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor],
                    episodic: Any, *, meta_classes: Sequence[int], test_classes: Sequence[int],
                    restricted: Sequence[int], num_episodes: int, seed: int, device: Any = None) -> dict[str, Any]:
    """The classical attacker: meta-train on ``meta_classes`` (R' only), test on episodes over ``test_classes``.

    Args:
        model: the released backbone (an :class:`~obstructlib.models.ImageClassifier`; not changed).
        train: the attacker's training images and global labels.
        test: the test split (episodes are drawn from its ``test_classes``).
        episodic: the attacker's :class:`~obstructlib.methods.lto.classical.EpisodicConfig`
            (its ``k_shot`` is the test episodes' shots too).
        meta_classes: the classes of meta-training (the 70 % meta-train-other split of R').
        test_classes: test-other plus R.
        restricted: R.
        num_episodes: test episodes (the paper: 1000).
        seed: the attacker's stream.
        device: where to compute.

    Returns:
        ``{"acc", "acc_r", "acc_o", "ci95", "seconds"}`` in percent.
    """
    import time

    from obstructlib.methods.lto import classical

    t0 = time.perf_counter()
    attacker = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    head = classical.meta_train(attacker, train[0], train[1], list(meta_classes), episodic, generator=g, device=device)
    out = classical.evaluate_episodes(attacker, head, test[0], test[1], list(test_classes), episodic, num_episodes,
                                      restricted=list(restricted), generator=g, device=device)
    out = dict(out)
    out["seconds"] = time.perf_counter() - t0
    return out


def evaluate(trajectory: Sequence[dict[str, Any]], beta: float = 2.0) -> dict[str, Any]:
    """DropRatio@beta of a trajectory, interpolated and nearest-checkpoint, with the operating points.

    Returns:
        ``{"acc_r0", "acc_o0", "drop_ratio_at_<beta>", "drop_ratio_at_<beta>_nearest",
        "drop_ratio_at_<beta>_within", "operating_point", "operating_point_nearest",
        "operating_point_within"}`` (``<beta>`` printed like ``2`` or ``0.5``).
    """
    rows = [(r["step"], r["acc_r"], r["acc_o"]) for r in trajectory]
    tag = f"{beta:g}".replace(".", "_")
    point = operating_point(beta, rows, "interpolate")
    nearest = operating_point(beta, rows, "nearest")
    within = operating_point(beta, rows, "within")
    arr = np.asarray(rows, dtype=float)
    return {"acc_r0": float(arr[0, 1]), "acc_o0": float(arr[0, 2]), f"drop_ratio_at_{tag}": point["ratio"],
            f"drop_ratio_at_{tag}_nearest": nearest["ratio"], f"drop_ratio_at_{tag}_within": within["ratio"],
            "operating_point": point, "operating_point_nearest": nearest, "operating_point_within": within}
