"""NTP's evaluation protocol: sample-wise learning curves of fine-tuning at a grid of budgets.

For each budget of a log grid (shares of the target training set) a fresh copy of a model is
fine-tuned on a seeded, stratified subset and its final-epoch target test accuracy recorded; the
same for training from scratch. :func:`~obstructlib.metrics.transfer.slc_auc` then compares the
curves (Ding et al., Non-transferable Pruning, arXiv:2410.08015, section 3.2-3.4 of the spec).
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from tqdm.auto import tqdm

from obstructlib.data import ArrayImageDataset, SizedDataset, seeded_subset
from obstructlib.engine import ClassifierTrainConfig, evaluate
from obstructlib.engine.checkpoint import write_json_atomic
from obstructlib.engine.distributed import shard_loader
from obstructlib.errors import ConfigError
from obstructlib.methods.ntp.release import finetune
from obstructlib.models import ImageClassifier
from obstructlib.primitives.pruning import Masks

__all__ = ["accuracy", "budget_subset", "learning_curves"]

# a curve row's model: the model to fine-tune, or a factory of fresh ones (training from scratch)
_RowModel = ImageClassifier | Callable[[], ImageClassifier]


def accuracy(model: Any, test: SizedDataset, device: torch.device | str) -> float:
    """Top-1 accuracy of ``model`` on ``test`` in [0, 1]."""
    return float(evaluate(model, shard_loader(test, 256), device)["acc"])


def budget_subset(train: ArrayImageDataset, ratio: float, seed: int) -> ArrayImageDataset:
    """``max(C, floor(ratio * N))`` seeded, stratified images with at least one per class."""
    labels = train.labels
    if labels is None:
        raise ConfigError("budget_subset needs a labelled training set: pass one with labels")
    classes = np.unique(labels)
    n = max(len(classes), int(math.floor(ratio * len(train))))
    idx = set(seeded_subset(train, n, seed=seed).indices)
    rng = np.random.default_rng(seed)
    for c in classes:  # a tiny budget may round a class away: add one image of it
        members = np.flatnonzero(labels == c)
        if not idx.intersection(members.tolist()):
            idx.add(int(rng.choice(members)))
    return train.subset(sorted(idx))


def learning_curves(rows: dict[str, tuple[_RowModel, Masks | None]], train: ArrayImageDataset, test: SizedDataset,
                    ratios: Sequence[float], recipe: ClassifierTrainConfig, device: torch.device | str, *,
                    seeds: int = 1, seed: int = 0, store: Path | None = None, work_dir: Path | None = None,
                    progress: bool = False) -> dict[str, list[float]]:
    """Sample-wise learning curves: final-epoch test accuracy after fine-tuning at each budget.

    For every row, budget and seed a FRESH copy of the row's model (encoder and head) is
    fine-tuned on :func:`budget_subset` of ``train`` with ``recipe`` (masks kept when the row has
    masks) and evaluated once, after the last epoch, on ``test``. Every row uses the same recipe,
    subsets and selection rule (the official code used best-on-test epochs for the scratch curve
    and carried the head over between budgets).

    Args:
        rows: name -> ``(model, masks or None)``; the model may be a zero-argument factory (for
            training from scratch: a new random model per budget).
        train: the target training set.
        test: the target test set.
        ratios: the budget grid (shares of ``train``).
        recipe: the fine-tuning recipe.
        device: where to train.
        seeds: repetitions per budget (averaged).
        seed: base seed of the subsets and of the training order.
        store: a JSON file keeping finished points (resume: they are not redone).
        work_dir: checkpoint folder of the point in progress (removed when it is done).
        progress: show a bar over the points.

    Returns:
        name -> mean accuracy per budget, in the order of ``ratios``.
    """
    done: dict[str, float] = json.loads(store.read_text()) if store is not None and store.is_file() else {}
    points = [(name, r, k) for name in rows for r in ratios for k in range(seeds)]
    for name, r, k in tqdm(points, desc="curves", disable=not progress, leave=False):
        key = f"{name}/{r:g}/{k}"
        if key in done:
            continue
        model, masks = rows[name]
        subset = budget_subset(train, r, seed + 1000 * k + int(round(r * 1e6)))
        torch.manual_seed(seed + k)
        # a Module here is the row's ImageClassifier itself (mypy only narrows the union to Module)
        start = cast(ImageClassifier, model) if isinstance(model, torch.nn.Module) else model()
        tuned = finetune(start, masks, subset, dataclasses.replace(recipe, seed=seed + k), device,
                         ckpt_dir=work_dir, progress=False)
        done[key] = accuracy(tuned, test, device)
        if store is not None:
            write_json_atomic(store, done)
        if work_dir is not None:
            shutil.rmtree(work_dir, ignore_errors=True)
    return {name: [float(np.mean([done[f"{name}/{r:g}/{k}"] for k in range(seeds)])) for r in ratios]
            for name in rows}
