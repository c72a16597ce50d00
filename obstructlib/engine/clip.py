"""Contrastive image-text training (CLIP) and its evaluation: retrieval and zero-shot accuracy.

``fit_clip`` follows open_clip's recipe (AdamW without decay on gains/biases/embeddings, cosine
schedule with linear warmup, bf16 autocast, logit scale clamped at 100) at any scale from a
tiny CPU model to ``torchrun`` on many GPUs, resumes exactly from its last checkpoint, and
``evaluate_clip`` encodes every test image once and every caption once.

References:
    Radford et al., "Learning Transferable Visual Models From Natural Language Supervision",
    arXiv:2103.00020. Cherti et al., "Reproducible scaling laws for contrastive language-image
    learning" (open_clip), arXiv:2212.07143.

Example:
    >>> model = create_clip("tiny-vit")                                             # doctest: +SKIP
    >>> history = fit_clip(model, pairs, ClipTrainConfig(steps=200, batch_size=64), "cpu")  # doctest: +SKIP
    >>> evaluate_clip(model, test_pairs, "cpu")["i2t_r1"]                          # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from obstructlib.engine.distributed import (
    all_gather_with_grad,
    epoch_loader,
    full_batches_per_epoch,
    get_world_size,
    is_main_process,
    unwrap,
    wrap_ddp,
)
from obstructlib.engine.loop import ResumableLoop
from obstructlib.engine.utils import autocast, grad_scaler, resolve_device
from obstructlib.errors import ConfigError, check_min, check_range

if TYPE_CHECKING:
    from obstructlib.data.base import SizedDataset
    from obstructlib.models.clip import ClipModel

__all__ = ["ClipTrainConfig", "clip_loss", "fit_clip"]


def clip_loss(
    image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor
) -> torch.Tensor:
    """Symmetric InfoNCE over the (global) batch: pair i is the positive of row/column i.

    Under ``torch.distributed`` the features of every rank are gathered WITH gradient and each
    rank computes the loss over the whole global batch (open_clip's ``ClipLoss(local_loss=False,
    gather_with_grad=True)``). Since DDP averages gradients over ranks and the gather's backward
    sums them, N processes with batch B/N train exactly like one process with batch B.

    Args:
        image_features: L2-normalised image embeddings.
        text_features: L2-normalised text embeddings, row i paired with image row i.
        logit_scale: the temperature's inverse, already exponentiated (scalar, e.g. 100).

    Shape:
        ``(B, D)``, ``(B, D)``, scalar -> scalar.

    Example:
        >>> f = F.normalize(torch.randn(4, 8), dim=-1)
        >>> float(clip_loss(f, f, torch.tensor(100.0))) < 1e-3
        True
    """
    image_features = all_gather_with_grad(image_features)
    text_features = all_gather_with_grad(text_features)
    logits = logit_scale * image_features @ text_features.T
    labels = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


@dataclass
class ClipTrainConfig:
    """CLIP training recipe (open_clip's defaults unless noted).

    Attributes:
        steps: total optimizer steps; None derives it from ``epochs``.
        epochs: passes over the pairs, used when ``steps`` is None.
        batch_size: GLOBAL batch of pairs (split evenly over ``torchrun`` processes); the
            contrastive loss always sees the global batch.
        lr: peak AdamW learning rate. 5e-4 is open_clip's default (tuned for ViT-B/32 at large
            batch); from-scratch tiny models at batch 64-256 train well with 5e-4 to 1e-3,
            fine-tuning a pretrained model wants ~1e-5.
        weight_decay: AdamW decay on weight matrices only (not on biases, norms, embeddings or
            the logit scale).
        warmup_steps: linear warmup from 0 to ``lr``, then cosine decay to 0 at ``steps``.
        betas: AdamW betas (0.98 as in CLIP, for stability with large batches).
        eps: AdamW epsilon.
        grad_clip: clip the global gradient norm; None disables (open_clip's default).
        log_every: history records the mean loss over each window of this many steps.
        ckpt_every: checkpoint period in steps (the last step is always saved). A run of fewer
            steps than this is checkpointed at every quarter instead (``checkpoint_period``), so
            that a killed short run does not start over.
        num_workers: DataLoader workers.
        max_logit_scale: the learned temperature's inverse is clamped to this (CLIP: 100).
        seed: seed of the data order (a function of ``(seed, epoch)``; resuming is exact).
        amp: mixed precision on CUDA (bf16; fp16 with loss scaling before Ampere; no effect on CPU).
    """

    steps: int | None = 1000
    epochs: int | None = None
    batch_size: int = 128
    lr: float = 5e-4
    weight_decay: float = 0.1
    warmup_steps: int = 100
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    grad_clip: float | None = None
    log_every: int = 10
    ckpt_every: int = 500
    num_workers: int = 0
    max_logit_scale: float = 100.0
    seed: int = 0
    amp: bool = True

    def validate(self) -> None:
        """Raise :class:`ConfigError` for values outside their ranges."""
        if self.steps is None and self.epochs is None:
            raise ConfigError("set either steps or epochs of the CLIP training config")
        check_min(self, ("steps", "epochs"), allow_none=True)
        check_min(self, ("batch_size", "log_every", "ckpt_every"))
        check_range("lr", self.lr, 0.0, 1.0)
        check_range("weight_decay", self.weight_decay, 0.0, 10.0)
        check_range("max_logit_scale", self.max_logit_scale, 1.0, 1e4)
        betas = list(self.betas) if isinstance(self.betas, (list, tuple)) else [self.betas]
        if len(betas) != 2 or not all(isinstance(b, (int, float)) and 0.0 <= b < 1.0 for b in betas):
            raise ConfigError(f"betas={self.betas}: give two values in [0, 1), e.g. 0.9,0.98")
        check_range("eps", self.eps, 0.0, 1.0, inclusive=False)
        if self.grad_clip is not None:
            check_min(self, ("grad_clip",), 0.0, strict=True)  # a negative bound would flip the gradient
        if self.warmup_steps < 0 or self.num_workers < 0:
            raise ConfigError("warmup_steps and num_workers must be 0 or more")


def _no_decay(name: str, param: nn.Parameter) -> bool:
    # open_clip exempts ndim < 2, norms, biases and logit_scale; we also exempt the (2-D)
    # token/positional embeddings, as nanoGPT and timm do: decaying them only hurts small runs.
    lowered = name.lower()
    return param.ndim < 2 or any(
        k in lowered for k in ("bias", "norm", "ln", "bn", "logit_scale", "embedding")
    )


def clip_adamw(model: nn.Module, cfg: ClipTrainConfig) -> torch.optim.AdamW:
    """CLIP's AdamW: decay on weight matrices only, frozen parameters left out (``fit_clip`` uses it)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]  # frozen params never move
    if not named:
        raise ConfigError("the CLIP model has no trainable parameters: unfreeze some before training")
    groups = [
        {"params": [p for n, p in named if not _no_decay(n, p)], "weight_decay": cfg.weight_decay},
        {"params": [p for n, p in named if _no_decay(n, p)], "weight_decay": 0.0},
    ]
    betas = cast("tuple[float, float]", tuple(cfg.betas))  # a declared pair; tuple() only turns a list into one
    return torch.optim.AdamW(
        [g for g in groups if g["params"]], lr=cfg.lr, betas=betas, eps=cfg.eps
    )


def checkpoint_period(every: int, total: int) -> int:
    """The checkpoint period of a run of ``total`` steps: ``every``, or a quarter of a shorter run.

    Example:
        >>> checkpoint_period(500, 150), checkpoint_period(500, 2000), checkpoint_period(3, 8)
        (37, 500, 3)
    """
    return every if every < total else max(1, total // 4)


def _warmup_cosine(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def _collate_pairs(
    batch: list, tokenize: Callable[[list[str]], torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.stack([item[0] for item in batch])
    return images, tokenize([item[1] for item in batch])


def _train_step(
    ddp_model: nn.Module,
    bare: ClipModel,
    batch: tuple[torch.Tensor, torch.Tensor],
    optimizer: Any,
    scheduler: Any,
    scaler: Any,
    cfg: ClipTrainConfig,
    device: torch.device,
) -> torch.Tensor:
    """One optimizer step on a batch of (images, tokens); returns the detached float64 loss."""
    images, tokens = (t.to(device, non_blocking=True) for t in batch)
    with autocast(device, enabled=cfg.amp):
        image_features, text_features, scale = ddp_model(images, tokens)
    loss = clip_loss(image_features.float(), text_features.float(), scale.float())
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if cfg.grad_clip is not None:
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_([p for p in bare.parameters() if p.requires_grad], cfg.grad_clip)
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
    with torch.no_grad():  # CLIP clamps the temperature so the logits cannot blow up
        bare.logit_scale.clamp_(0.0, math.log(cfg.max_logit_scale))
    return loss.detach().double()


def fit_clip(
    model: nn.Module,
    train_set: SizedDataset,
    cfg: ClipTrainConfig,
    device: torch.device | str | None,
    *,
    ckpt_dir: str | os.PathLike | None = None,
    progress: bool = True,
    callback: Callable[[int, dict[str, float]], bool | None] | None = None,
    collate: Callable[[list], tuple[torch.Tensor, torch.Tensor]] | None = None,
    max_steps: int | None = None,
) -> dict[str, list[float]]:
    """Train a CLIP model contrastively on image-caption pairs.

    With ``ckpt_dir``, a checkpoint is written every ``cfg.ckpt_every`` steps and at the end, and
    a later call resumes from it with the same history: on CPU an interrupted-and-resumed run
    ends bit-identical to an uninterrupted one (the data order depends only on seed and epoch,
    and a resumed epoch skips exactly the batches already consumed). Under ``torchrun`` the model
    is wrapped in DDP, the loss sees the global batch, and only rank 0 shows progress and saves.

    Args:
        model: a ``ClipModel`` (``forward(images01, tokens) -> (img_feat, txt_feat, scale)``,
            ``tokenize``, ``logit_scale``); moved to ``device``.
        train_set: items ``(image (C, H, W) in [0, 1], caption str, image_id int)``.
        cfg: the recipe.
        device: device or name (``"auto"``, ``"cpu"``, ``"cuda"``).
        ckpt_dir: checkpoint directory; None disables checkpointing and resuming.
        progress: show a progress bar (rank 0 only).
        callback: ``callback(step, record)`` at every logged step; return True to stop (after a
            checkpoint). ``record`` has ``step``, ``loss``, ``lr``, ``logit_scale``.
        collate: batch list to ``(images, tokens)``; default stacks images and tokenises the
            captions with ``model.tokenize``.
        max_steps: stop (and checkpoint) once this absolute step is reached, before
            ``cfg.steps``; the next call with the same ``ckpt_dir`` carries on.

    Returns:
        History with lists ``step``, ``loss`` (mean over the log window), ``lr``, ``logit_scale``
        and ``seconds`` (training wall time so far, summed over resumed sessions, so a caller can
        report the cost per step even when the run was resumed from a checkpoint).
    """
    cfg.validate()
    device = resolve_device(device)
    world = get_world_size()
    steps_per_epoch = full_batches_per_epoch(len(train_set), cfg.batch_size, "training pairs")
    if cfg.steps is not None:
        total = cfg.steps
    elif cfg.epochs is not None:
        total = cfg.epochs * steps_per_epoch
    else:  # validate() has already refused this
        raise ConfigError("set either steps or epochs of the CLIP training config")
    stop_at = total if max_steps is None else min(total, max_steps)
    model.to(device)
    bare = cast("ClipModel", unwrap(model))  # unwrap strips DDP/compile off the ClipModel
    optimizer = clip_adamw(bare, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, partial(_warmup_cosine, warmup=cfg.warmup_steps, total=total)
    )
    scaler = grad_scaler(device, cfg.amp)  # active only for fp16 autocast (pre-Ampere GPUs)
    window = [0.0, 0]  # loss sum and count since the last log
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    loop = ResumableLoop(stop_at, ckpt_dir=ckpt_dir, model=bare, optimizer=optimizer, scheduler=scheduler,
                         config=cfg, every=checkpoint_period(cfg.ckpt_every, total),
                         history={"step": [], "loss": [], "lr": [], "logit_scale": [], "seconds": []},
                         extra=lambda: {"window": [loss_sum.item(), window[1]], "scaler": scaler.state_dict()},
                         progress=progress and is_main_process(), desc="clip")
    history: dict[str, list[float]] = loop.history  # type: ignore[assignment]
    history.setdefault("seconds", [])
    if loop.resumed:
        window = list(loop.resumed.get("window", window))
        if loop.resumed.get("scaler"):
            scaler.load_state_dict(loop.resumed["scaler"])
    loss_sum.fill_(window[0])
    collate = collate or partial(_collate_pairs, tokenize=bare.tokenize)
    ddp_model = wrap_ddp(bare, device)
    bare.train()
    elapsed = history["seconds"][-1] if history["seconds"] else 0.0
    started = time.perf_counter()
    batches = None
    for step in loop:
        epoch, offset = divmod(step, steps_per_epoch)
        if batches is None or offset == 0:  # a new epoch, or the first step of this call
            batches = iter(epoch_loader(
                train_set,
                cfg.batch_size // world,
                seed=cfg.seed,
                epoch=epoch,
                skip_batches=offset,
                num_workers=cfg.num_workers,
                collate_fn=collate,
                pin_memory=device.type == "cuda",
            ))
        loss_sum += _train_step(ddp_model, bare, next(batches), optimizer, scheduler, scaler, cfg, device)
        window[1] += 1
        if (step + 1) % cfg.log_every == 0 or step + 1 == total:
            record = {
                "step": step + 1,
                "loss": loss_sum.item() / window[1],
                "lr": optimizer.param_groups[0]["lr"],
                "logit_scale": bare.logit_scale.detach().exp().item(),
                "seconds": elapsed + time.perf_counter() - started,
            }
            loop.log(record)
            loss_sum.zero_()
            window[1] = 0
            if callback is not None and callback(step + 1, record):
                loop.stop()
    bare.eval()
    return history
