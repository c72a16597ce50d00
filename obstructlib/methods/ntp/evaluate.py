"""NTP's evaluation protocol: attack the released model on the target domain at every budget, score SLC-AUC.

Non-Transferable Pruning (arXiv:2410.08015) releases a pruned model; the attacker fine-tunes it
on a share of the target domain's training set (masks kept: ``masked``, the paper's attack; or
pruned weights free to regrow: ``dense``), and so does a model trained from scratch and the
unprotected source model (``transfer``). :func:`evaluate` measures the four learning curves on the
same budgets, subsets, recipe and selection rule, their SLC-AUC against scratch, and what the
owner keeps on the source domain (the released model's accuracy and after a masked fine-tune).
"""

from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from obstructlib.data import ArrayImageDataset, SizedDataset
from obstructlib.engine import ClassifierTrainConfig, resolve_device
from obstructlib.errors import ConfigError
from obstructlib.methods.ntp.curves import accuracy, learning_curves
from obstructlib.methods.ntp.release import finetune
from obstructlib.metrics.transfer import slc_auc
from obstructlib.models import create_model
from obstructlib.primitives.pruning import Masks

__all__ = ["ATTACKS", "DEFAULT_RATIOS", "AttackConfig", "evaluate"]

ATTACKS = ("masked", "dense", "both")
DEFAULT_RATIOS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


def _finetune_recipe() -> ClassifierTrainConfig:
    # the paper's attack: Adam 1e-4, wd 8e-4, 30 epochs, batch 128
    return ClassifierTrainConfig(epochs=30, batch_size=128, lr=1e-4, weight_decay=8e-4, optimizer="adam",
                                 scheduler="none")


@dataclass
class AttackConfig:
    """The attacker and the measurement of NTP's threat model.

    Attributes:
        arch: the scratch model's architecture (the released model's own).
        attack: ``masked`` (masks kept, the paper's), ``dense`` (pruned weights regrow) or ``both``.
        ratios: the budget grid, strictly increasing shares of the target training set in (0, 1].
        log_base: base of the SLC-AUC's log axis (10; ln values are reported too).
        curve_seeds: seeds per budget (curves are averaged over them).
        curve: the recipe of every curve (attacker, scratch and transfer alike).
        source_finetune: the owner's masked fine-tune of the released model on the source domain.
        seed: base seed of the budget subsets and the training order.
    """

    arch: str = "digits_cnn"
    attack: str = "both"
    ratios: tuple[float, ...] = DEFAULT_RATIOS
    log_base: float = 10.0
    curve_seeds: int = 1
    curve: ClassifierTrainConfig = field(default_factory=_finetune_recipe)
    source_finetune: ClassifierTrainConfig = field(default_factory=_finetune_recipe)
    seed: int = 0

    def validate(self) -> None:
        """Raise one-line :class:`ConfigError` for bad values."""
        if self.attack not in ATTACKS:
            raise ConfigError(f"attack={self.attack!r}: use one of {', '.join(ATTACKS)}")
        r = np.asarray(self.ratios, dtype=np.float64)
        if r.size < 2 or np.any(r <= 0) or np.any(r > 1) or np.any(np.diff(r) <= 0):
            raise ConfigError(f"ratios={self.ratios}: give at least two strictly increasing shares in (0, 1]")
        if self.log_base <= 0 or self.log_base == 1:
            raise ConfigError(f"log_base={self.log_base}: use 10 or e (2.718...)")
        if self.curve_seeds < 1:
            raise ConfigError(f"curve_seeds={self.curve_seeds}: use at least 1")
        self.curve.validate()
        self.source_finetune.validate()


def evaluate(
    released: Any,
    cfg: AttackConfig,
    *,
    masks: Masks | None,
    source_model: Any,
    source: tuple[ArrayImageDataset, SizedDataset],
    target: tuple[ArrayImageDataset, SizedDataset],
    device: torch.device | str | None = None,
    ckpt_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Attack ``released`` on the target domain at every budget; SLC-AUC and the owner's source accuracy.

    Args:
        released: the protected model (encoder + head, masks applied).
        cfg: the attacker and the measurement.
        masks: the released masks (None or empty: a dense baseline such as NTL).
        source_model: the unprotected source model (the ``transfer`` row).
        source: the source domain's ``(train, test)``.
        target: the target domain's ``(train, test)``.
        device: where to train.
        ckpt_dir: keeps ``curves.json`` (finished points), ``curve_point/`` (the point in
            progress) and ``source_finetune/``; a later call resumes (None: none).
        progress: show a bar over the points.

    Returns:
        ``source_acc`` (``released``, ``finetuned``), ``target_acc_released`` (None when the
        released head has another label space), ``slc_auc`` (``masked``, ``dense``),
        ``slc_auc_transfer``, ``slc_auc_ln`` (natural-log axis), ``curves`` (``ratios`` and
        each row's mean accuracy per budget) and ``seconds`` (``source_finetune``, ``curves``).
    """
    cfg.validate()
    device = resolve_device(device)
    (s_train, s_test), (t_train, t_test) = source, target
    ckpt = None if ckpt_dir is None else Path(ckpt_dir)
    masks = masks or None
    start = time.perf_counter()
    acc_released = accuracy(released, s_test, device)
    tuned = finetune(released, masks, s_train, cfg.source_finetune, device,
                     ckpt_dir=None if ckpt is None else ckpt / "source_finetune", progress=False)
    acc_finetuned = accuracy(tuned, s_test, device)
    finetuned_s = time.perf_counter() - start
    num_t = len(t_train.classes)

    def scratch() -> Any:
        return create_model(cfg.arch, num_classes=num_t)

    def with_target_head(model: Any) -> Any:
        model = copy.deepcopy(model)
        if model.num_classes != num_t:  # a new head for another label space; otherwise h_S is the start
            model.reset_head(num_t)
        return model

    rows: dict[str, tuple[Any, Masks | None]] = {"scratch": (scratch, None),
                                                 "transfer": (with_target_head(source_model), None)}
    if cfg.attack in ("masked", "both"):
        rows["masked"] = (with_target_head(released), masks)
    if cfg.attack in ("dense", "both"):
        rows["dense"] = (with_target_head(released), None)
    start = time.perf_counter()
    curves = learning_curves(rows, t_train, t_test, cfg.ratios, cfg.curve, device, seeds=cfg.curve_seeds,
                             seed=cfg.seed, store=None if ckpt is None else ckpt / "curves.json",
                             work_dir=None if ckpt is None else ckpt / "curve_point", progress=progress)
    curves_s = time.perf_counter() - start

    def auc(name: str, base: float) -> float | None:
        return slc_auc(cfg.ratios, curves[name], curves["scratch"], log_base=base) if name in curves else None

    return {
        "source_acc": {"released": acc_released, "finetuned": acc_finetuned},
        "target_acc_released": accuracy(released, t_test, device) if num_t == released.num_classes else None,
        "slc_auc": {"masked": auc("masked", cfg.log_base), "dense": auc("dense", cfg.log_base)},
        "slc_auc_transfer": auc("transfer", cfg.log_base),
        "slc_auc_ln": {k: auc(k, math.e) for k in ("masked", "dense", "transfer")},
        "curves": {"ratios": list(cfg.ratios), **curves},
        "seconds": {"source_finetune": finetuned_s, "curves": curves_s},
    }
