"""Supervised image classification: ``train_one_epoch``, ``evaluate`` and a resumable ``fit_classifier``.

Modelled on torchvision's ``references/classification``: small importable functions, one
config dataclass. ``fit_classifier`` checkpoints every epoch, resumes from ``ckpt_dir``
automatically, and under ``torchrun`` trains with DDP on shards of the same global batches.

Example:
    >>> cfg = ClassifierTrainConfig(epochs=2, batch_size=64, lr=0.05)         # doctest: +SKIP
    >>> history = fit_classifier(model, train_set, test_set, cfg, "cpu")     # doctest: +SKIP
    >>> history["test_acc"][-1]                                              # doctest: +SKIP
    0.41
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from obstructlib.engine.distributed import (
    all_reduce_sum,
    epoch_loader,
    full_batches_per_epoch,
    get_world_size,
    is_main_process,
    shard_loader,
    unwrap,
    wrap_ddp,
)
from obstructlib.engine.loop import ResumableLoop
from obstructlib.engine.utils import autocast, grad_scaler, resolve_device
from obstructlib.errors import ConfigError, check_min, check_range
from obstructlib.metrics import accuracy

if TYPE_CHECKING:
    from obstructlib.data.base import SizedDataset

# A per-batch hook of train_one_epoch: (images, labels) -> (images to train on, loss_fn or None).
BatchHook = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, Callable | None]]

__all__ = ["ClassifierTrainConfig", "evaluate", "fit_classifier", "train_one_epoch"]


@dataclass
class ClassifierTrainConfig:
    """Training recipe for an image classifier.

    Attributes:
        epochs: passes over the training set.
        batch_size: GLOBAL batch size (split evenly over ``torchrun`` processes); the last
            incomplete batch of an epoch is dropped.
        lr: peak learning rate (0.1 suits SGD on CIFAR ResNets at batch 128; use ~1e-3 for Adam).
        momentum: SGD momentum (Adam ignores it).
        weight_decay: L2 penalty on every trainable parameter.
        optimizer: ``"sgd"`` (Nesterov off, as in torchvision) or ``"adam"``.
        scheduler: ``"cosine"`` (per step, to 0), ``"step"`` (x0.1 at 50% and 75% of training)
            or ``"none"``.
        label_smoothing: cross-entropy label smoothing in [0, 1).
        num_workers: DataLoader worker processes.
        ckpt_every_epochs: checkpoint period in epochs (the last epoch is always saved).
        eval_batch_size: batch size for evaluation.
        seed: seed of the data order (a function of ``(seed, epoch)``, which makes resuming exact).
        amp: mixed precision on CUDA (bf16; fp16 with loss scaling before Ampere; no effect on CPU).
    """

    epochs: int = 30
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    optimizer: str = "sgd"
    scheduler: str = "cosine"
    label_smoothing: float = 0.0
    num_workers: int = 0
    ckpt_every_epochs: int = 1
    eval_batch_size: int = 256
    seed: int = 0
    amp: bool = True

    def validate(self) -> None:
        """Raise :class:`ConfigError` for values outside their ranges."""
        if self.optimizer not in ("sgd", "adam"):
            raise ConfigError(f"optimizer={self.optimizer!r}: use 'sgd' or 'adam'")
        if self.scheduler not in ("cosine", "step", "none"):
            raise ConfigError(f"scheduler={self.scheduler!r}: use 'cosine', 'step' or 'none'")
        check_min(self, ("epochs", "batch_size", "ckpt_every_epochs", "eval_batch_size"))
        check_range("lr", self.lr, 0.0, 10.0)
        check_range("label_smoothing", self.label_smoothing, 0.0, 1.0, inclusive=True)
        check_range("momentum", self.momentum, 0.0, 1.0)
        check_range("weight_decay", self.weight_decay, 0.0, 10.0)
        if self.num_workers < 0:
            raise ConfigError(f"num_workers={self.num_workers}: use 0 or more")


def train_one_epoch(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    device: torch.device | str,
    *,
    scheduler: Any | None = None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    amp: bool = True,
    scaler: torch.amp.GradScaler | None = None,
    grad_clip: float | None = None,
    progress: bool = True,
    desc: str = "train",
    batch_hook: BatchHook | None = None,
) -> dict[str, float]:
    """One pass over ``loader`` with one optimizer step per batch.

    Args:
        model: classifier (possibly DDP-wrapped) mapping images in [0, 1] to logits.
        loader: yields ``(images (B, C, H, W) in [0, 1], labels (B,))``.
        optimizer: optimizer over the trainable parameters.
        device: where to compute.
        scheduler: optional LR scheduler, stepped once per BATCH.
        loss_fn: ``loss_fn(logits, labels)``, mean over the batch; default cross-entropy.
        amp: autocast on CUDA (bf16, or fp16 before Ampere; no effect on CPU).
        scaler: loss scaler for fp16 autocast; None makes one with :func:`grad_scaler`
            (pass it to keep its scale across epochs).
        grad_clip: clip the global gradient norm to this value; None disables.
        progress: show a tqdm bar.
        desc: bar label.
        batch_hook: ``batch_hook(images, labels) -> (images, loss_fn or None)`` on each batch
            (on the device) before the forward pass: a countermeasure's mixing or attack
            (:func:`~obstructlib.primitives.countermeasures.fit_defended`). The model is put back
            in train mode after it; a returned ``loss_fn`` replaces ``loss_fn`` for that batch.

    Returns:
        ``{"loss": mean loss, "acc": accuracy in [0, 1], "num": samples}``, summed over all
        ranks in a distributed run.
    """
    device = torch.device(device)
    loss_fn = loss_fn or F.cross_entropy
    scaler = scaler if scaler is not None else grad_scaler(device, amp)
    model.train()
    # Running sums stay on the device: no host sync per step.
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss * n, correct, n
    bar = tqdm(loader, desc=desc, disable=not progress, leave=False)
    for i, (images, labels) in enumerate(bar):
        images = images.to(device, non_blocking=True)
        labels = torch.as_tensor(labels).to(device, non_blocking=True)
        batch_loss = loss_fn
        if batch_hook is not None:
            images, hooked_loss = batch_hook(images, labels)
            batch_loss = hooked_loss or loss_fn
            model.train()
        with autocast(device, enabled=amp):
            logits = model(images)
        loss = batch_loss(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if grad_clip is not None:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        scaler.step(optimizer)
        scaler.update()
        if scheduler is not None:
            scheduler.step()
        n = labels.shape[0]
        sums += torch.stack(
            [
                loss.detach().double() * n,
                (logits.argmax(1) == labels).sum().double(),
                torch.tensor(n, dtype=torch.float64, device=device),
            ]
        )
        if progress and i % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}")
    loss_sum, correct, num = all_reduce_sum(sums).tolist()
    num = max(num, 1.0)
    return {"loss": loss_sum / num, "acc": correct / num, "num": int(num)}


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device | str,
    progress: bool = False,
    *,
    amp: bool = True,
    all_reduce: bool = False,
) -> dict[str, float]:
    """Mean cross-entropy and top-1 accuracy of ``model`` on ``loader``.

    Args:
        model: classifier mapping images in [0, 1] to logits.
        loader: yields ``(images, labels)``.
        device: where to compute.
        progress: show a tqdm bar.
        amp: autocast on CUDA (see ``autocast``).
        all_reduce: sum the counts over ranks (each rank must have seen a disjoint shard, e.g.
            from :func:`~obstructlib.engine.distributed.shard_loader`).

    Returns:
        ``{"loss": mean cross-entropy, "acc": accuracy in [0, 1], "num": number of samples}``.
    """
    device = torch.device(device)
    model.eval()
    loss_sum, correct, num = 0.0, 0.0, 0
    for images, labels in tqdm(loader, desc="eval", disable=not progress, leave=False):
        images = images.to(device, non_blocking=True)
        labels = torch.as_tensor(labels).to(device, non_blocking=True)
        with autocast(device, enabled=amp):
            logits = model(images).float()
        n = labels.shape[0]
        loss_sum += F.cross_entropy(logits, labels, reduction="sum").item()
        correct += accuracy(logits, labels) * n
        num += n
    if all_reduce:
        sums = torch.tensor([loss_sum, correct, float(num)], dtype=torch.float64, device=device)
        loss_sum, correct, total = all_reduce_sum(sums).tolist()
        num = round(total)
    return {"loss": loss_sum / max(num, 1), "acc": correct / max(num, 1), "num": num}


def _optimizer(model: nn.Module, cfg: ClassifierTrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]  # frozen parameters never move
    if not params:
        raise ConfigError("the model has no trainable parameters: unfreeze some before training")
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _scheduler(optimizer: torch.optim.Optimizer, cfg: ClassifierTrainConfig, total_steps: int) -> Any:
    if cfg.scheduler == "cosine":
        factor = lambda s: 0.5 * (1.0 + math.cos(math.pi * min(s, total_steps) / total_steps))
    elif cfg.scheduler == "step":
        factor = lambda s: 0.1 ** ((s >= 0.5 * total_steps) + (s >= 0.75 * total_steps))
    else:
        factor = lambda s: 1.0
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def fit_classifier(
    model: nn.Module,
    train_set: SizedDataset,
    test_set: SizedDataset | None,
    cfg: ClassifierTrainConfig,
    device: torch.device | str | None,
    *,
    ckpt_dir: str | os.PathLike | None = None,
    progress: bool = True,
    callback: Callable[[int, dict[str, float]], bool | None] | None = None,
    batch_hook: Callable[[int], BatchHook] | None = None,
) -> dict[str, list[float]]:
    """Train ``model`` on ``train_set``, evaluating on ``test_set`` after every epoch.

    With ``ckpt_dir``, a checkpoint (model, optimizer, scheduler, RNG, history) is written every
    ``cfg.ckpt_every_epochs`` epochs, and a later call with the same ``ckpt_dir`` resumes from it:
    on CPU an interrupted-and-resumed run ends bit-identical to an uninterrupted one. Under
    ``torchrun`` (process group initialised) the model is wrapped in DDP, each rank trains on
    its shard of the same global batches, and only rank 0 shows progress and writes checkpoints.
    BatchNorm statistics stay per rank; convert the model with
    ``nn.SyncBatchNorm.convert_sync_batchnorm`` first if N-GPU runs must match 1-GPU runs exactly.

    Args:
        model: classifier mapping images in [0, 1] to logits; moved to ``device``.
        train_set: dataset of ``(image (C, H, W) in [0, 1], label)``.
        test_set: same format, or None to skip evaluation.
        cfg: the recipe.
        device: device or name (``"auto"``, ``"cpu"``, ``"cuda"``).
        ckpt_dir: checkpoint directory; None disables checkpointing and resuming.
        progress: show progress bars (rank 0 only).
        callback: ``callback(epoch, record)`` after each epoch's evaluation; return True to stop
            early after checkpointing (a notebook's "interrupt"; the next call resumes).
        batch_hook: ``batch_hook(epoch)`` returns the epoch's per-batch hook of
            :func:`train_one_epoch` (seed its randomness from the epoch, so a resume repeats it).

    Returns:
        History with lists ``epoch``, ``train_loss``, ``train_acc``, ``test_loss``, ``test_acc``,
        ``lr`` (one entry per epoch, including epochs run before a resume).
    """
    cfg.validate()
    device = resolve_device(device)
    world = get_world_size()
    steps_per_epoch = full_batches_per_epoch(len(train_set), cfg.batch_size, "training items")
    model.to(device)
    optimizer = _optimizer(model, cfg)
    scheduler = _scheduler(optimizer, cfg, cfg.epochs * steps_per_epoch)
    scaler = grad_scaler(device, cfg.amp)
    keys = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr")
    loop = ResumableLoop(cfg.epochs, ckpt_dir=ckpt_dir, model=model, optimizer=optimizer, scheduler=scheduler,
                         config=cfg, every=cfg.ckpt_every_epochs, history={k: [] for k in keys},
                         extra=lambda: {"scaler": scaler.state_dict()})
    if loop.resumed.get("scaler"):
        scaler.load_state_dict(loop.resumed["scaler"])
    ddp_model = wrap_ddp(model, device)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    show = progress and is_main_process()
    test_loader = (
        shard_loader(test_set, cfg.eval_batch_size, num_workers=cfg.num_workers)
        if test_set is not None
        else None
    )
    for epoch in loop:
        loader = epoch_loader(
            train_set,
            cfg.batch_size // world,
            seed=cfg.seed,
            epoch=epoch,
            num_workers=cfg.num_workers,
            pin_memory=device.type == "cuda",
        )
        lr = optimizer.param_groups[0]["lr"]
        train = train_one_epoch(
            ddp_model,
            loader,
            optimizer,
            device,
            scheduler=scheduler,
            loss_fn=loss_fn,
            amp=cfg.amp,
            scaler=scaler,
            progress=show,
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            batch_hook=batch_hook(epoch) if batch_hook is not None else None,
        )
        test = (
            evaluate(model, test_loader, device, amp=cfg.amp, all_reduce=True)
            if test_loader is not None
            else {"loss": float("nan"), "acc": float("nan")}
        )
        record = {
            "epoch": epoch + 1,
            "train_loss": train["loss"],
            "train_acc": train["acc"],
            "test_loss": test["loss"],
            "test_acc": test["acc"],
            "lr": lr,
        }
        loop.log(record)
        if callback is not None and callback(epoch + 1, record):
            loop.stop()
    unwrap(ddp_model).eval()
    return loop.history  # type: ignore[return-value]
