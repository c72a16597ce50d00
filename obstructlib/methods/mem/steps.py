"""MEM's building blocks: the CLIP loss closures of its three players, the theta-step, shard sync.

:mod:`obstructlib.methods.mem.method` chains them into the min-min-min loop. Everything here works on
image-caption PAIRS (one row per pair, not per image or class): pair ``i`` owns noise row
``store.rows_of(i)`` and trigger row ``trigger_rows[i]``.

References:
    Liu et al., Multimodal Unlearnable Examples (MEM), arXiv:2407.16307.
    Radford et al., CLIP, arXiv:2103.00020 (the symmetric InfoNCE loss).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, cast

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from obstructlib.data import PerturbationStore, ProtectedPairs, pair_collate
from obstructlib.data.tokens import insert_trigger
from obstructlib.engine import autocast, clip_loss, get_rank, get_world_size
from obstructlib.engine.distributed import epoch_loader, is_distributed, unwrap, wrap_ddp
from obstructlib.errors import ConfigError
from obstructlib.primitives.text_triggers import hotflip_attack

if TYPE_CHECKING:
    from obstructlib.models.clip import ClipModel

__all__ = ["PairState", "clip_batch_loss", "local_clip_loss", "shard_of", "surrogate_steps", "sync_shards"]


def local_clip_loss(image_features: torch.Tensor, text_features: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE of THIS process's batch only (never gathered over ranks).

    The noise pass under ``torchrun`` runs a different number of batches on each rank (each owns
    a shard), so its losses must not call a collective.
    """
    logits = scale * image_features @ text_features.T
    labels = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


def clip_batch_loss(
    model: nn.Module, images: torch.Tensor, tokens: torch.Tensor, amp: bool, gather: bool = True
) -> torch.Tensor:
    """Symmetric InfoNCE of a batch (MEM's L_CLIP); gathered over ranks under ``torchrun`` when ``gather``."""
    with autocast(images.device, enabled=amp):
        img, txt, scale = model(images, tokens)
    return (clip_loss if gather else local_clip_loss)(img.float(), txt.float(), scale.float())


def surrogate_steps(
    model: ClipModel,
    optimizer: torch.optim.Optimizer,
    data: ProtectedPairs,
    *,
    steps: int,
    batch_size: int,
    seed: int,
    done: int,
    device: torch.device,
    amp: bool,
    max_logit_scale: float,
    num_workers: int = 0,
) -> tuple[int, float]:
    """MEM's theta-step: ``steps`` AdamW steps of the surrogate on the current protected pairs.

    The batches continue a persistent shuffled order (the official ``data_iter``) that is a
    function of ``(seed, batches done)``, so a resumed run draws the same batches. Under
    ``torchrun`` each rank takes its part of every global batch and the model is DDP-wrapped.

    Returns:
        ``(batches done, mean loss of these steps)``.
    """
    world = get_world_size()
    per_epoch = max(len(data) // batch_size, 1)
    bare = cast("ClipModel", unwrap(model))  # unwrap only strips DDP/compile wrappers off the ClipModel
    ddp = wrap_ddp(bare, device)
    bare.train()
    total = 0.0
    for step in range(done, done + steps):
        loader = epoch_loader(data, min(batch_size, len(data)) // world, seed=seed, epoch=step // per_epoch,
                              skip_batches=step % per_epoch, num_workers=num_workers, collate_fn=pair_collate)
        images, tokens = (t.to(device) for t in next(iter(loader)))
        loss = clip_batch_loss(ddp, images, tokens, amp)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():  # CLIP clamps the learnt temperature
            bare.logit_scale.clamp_(0.0, math.log(max_logit_scale))
        total += float(loss.detach())
    bare.eval()
    return done + steps, total / max(steps, 1)


class PairState:
    """The per-pair state the noise pass reads: caption ids, triggers and their row per pair.

    Args:
        model: the surrogate ``ClipModel``.
        tokens: captions without trigger ``(N, L)``.
        triggers: ``(R, k)`` ids, updated in place by :meth:`text_step`.
        trigger_rows: pair -> trigger row ``(N,)``.
        num_candidates: HotFlip K.
        shuffle: caption shuffling in the image step (MEM's key device against overfitting).
        amp: autocast on CUDA.
        banned_ids: ids HotFlip never picks (None: the model's special ids).
    """

    def __init__(self, model: ClipModel, tokens: torch.Tensor, triggers: torch.Tensor, trigger_rows: np.ndarray,
                 num_candidates: int, shuffle: bool, amp: bool, banned_ids: torch.Tensor | None = None) -> None:
        self.model, self.tokens, self.triggers = model, tokens, triggers
        self.trigger_rows, self.k = np.asarray(trigger_rows, np.int64), triggers.shape[1]
        self.num_candidates, self.shuffle, self.amp = num_candidates, shuffle, amp
        self.banned_ids = banned_ids
        self.eot = model.eot_token_id
        self.generator = torch.Generator().manual_seed(0)
        self.text_losses: list[tuple[float, float]] = []

    def captions(self, idx: torch.Tensor, device: torch.device) -> torch.Tensor:
        return self.tokens[idx.cpu()].long().to(device)

    def trigger_of(self, idx: torch.Tensor) -> torch.Tensor:
        return self.triggers[torch.from_numpy(self.trigger_rows[idx.cpu().numpy()])]

    def image_loss(self, z: torch.Tensor, batch: tuple) -> torch.Tensor:
        """MEM's delta-step loss (Eq. of the image player): L_CLIP(x + delta, t_i + c_pi(i)).

        A fresh permutation ``pi`` of the caption BODIES is drawn at every PGD step; the trigger
        ``t_i`` stays with its image ``i``, so ``delta_i`` aligns with ``t_i`` whatever the caption.
        """
        idx = batch[0]
        body = self.captions(idx, z.device)
        if self.shuffle:
            body = body[torch.randperm(len(idx), generator=self.generator).to(z.device)]
        tokens = body
        if self.k:
            if self.eot is None:
                raise ConfigError("the surrogate's tokenizer has no end-of-text token id: MEM's triggers need one")
            tokens = insert_trigger(body, self.trigger_of(idx), self.eot)
        return clip_batch_loss(self.model, z, tokens, self.amp, gather=False)

    def text_step(self, batch: tuple, delta0: torch.Tensor) -> None:
        """MEM's t-step on one batch: HotFlip on L_CLIP(x + delta, t + c) with UNshuffled captions."""
        idx, x = batch[0], batch[1]
        with torch.no_grad(), autocast(x.device, enabled=self.amp):
            img = self.model.encode_image((x + delta0).clamp(0.0, 1.0)).float()
            scale = self.model.logit_scale.exp().float()
        body = self.captions(idx, x.device)
        trig = self.trigger_of(idx).to(x.device)
        new, before, after = hotflip_attack(self.model, body, trig, lambda t: local_clip_loss(img, t.float(), scale),
                                            self.num_candidates, self.banned_ids)
        rows = torch.from_numpy(self.trigger_rows[idx.cpu().numpy()])
        # Shared rows (class-wise MEM): the last member of the batch wins (deliberate simplification).
        self.triggers[rows] = new.cpu()
        self.text_losses.append((before, after))


def shard_of(n: int, rank: int | None = None, world: int | None = None) -> np.ndarray:
    """Pair indices owned by ``rank`` (strided ``rank::world``), for the noise pass under ``torchrun``."""
    rank = get_rank() if rank is None else rank
    world = get_world_size() if world is None else world
    return np.arange(rank, n, world, dtype=np.int64)


def sync_shards(store: PerturbationStore, triggers: torch.Tensor, trigger_rows: np.ndarray, chunk: int = 1024) -> None:
    """After a sharded pass, give every rank the rows the other ranks wrote (no-op single-process).

    Each rank owns pairs ``rank::world`` (:func:`shard_of`); rank r broadcasts its noise rows in
    chunks (int8, bounded memory) and its trigger rows, so the next theta-step sees the whole set.
    Sample-mode stores only (class-wise MEM is single-process).
    """
    if not is_distributed():
        return
    if store.mode != "sample":
        raise ConfigError("class-wise MEM runs in one process: launch it without torchrun")
    world = get_world_size()
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    for r in range(world):
        rows = shard_of(store.num, r, world)
        for s in range(0, len(rows), chunk):
            part = rows[s : s + chunk]
            buf = torch.from_numpy(np.ascontiguousarray(store.data[part])).to(device)
            dist.broadcast(buf, src=r)
            store.data[part] = buf.cpu().numpy()
        trow = torch.from_numpy(np.unique(trigger_rows[rows]))
        buf = triggers[trow].to(device)
        dist.broadcast(buf, src=r)
        triggers[trow] = buf.cpu()

