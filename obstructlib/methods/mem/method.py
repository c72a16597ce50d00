"""Multimodal Unlearnable Examples (MEM): per-pair image noise + text trigger against CLIP training.

MEM solves a three-player error-minimisation over image-caption pairs (Liu et al., Sec. 3):

    min_theta  min_{|delta_i|_inf <= eps}  min_{t_i in V^k}  sum_i L_CLIP(theta; x_i + delta_i, t_i + c_i)

by alternating, every round, (1) ``train_steps`` AdamW steps of a surrogate CLIP on the current
protected pairs (theta), (2) one pass over all pairs in which every batch gets, in the first
``text_rounds`` rounds, a HotFlip update of its k-token triggers (t, unshuffled captions) and then
``pgd_steps`` signed-gradient DESCENT steps on its image noise (delta) with the caption BODIES
shuffled inside the batch at every step while each trigger stays with its image. A hacker who
trains CLIP on the published pairs learns the easy link delta_i <-> t_i instead of the images'
content, and retrieval on clean test data collapses.

:func:`protect` runs MEM-k (``trigger_tokens = 3`` or ``5``), its ablations (no caption
shuffling, class-wise noise and triggers) and, with ``trigger_tokens = 0``, the image-only EM
baseline adapted to the CLIP loss (:meth:`MEMConfig.em`); :func:`clip_error_max_noise` is the
error-MAXIMISING baseline against a clean CLIP. Noise lives in a :class:`PerturbationStore`
(int8 pixel units, memory-mapped when large), triggers as int64 token ids.

Deliberate deviations from the official code (flagged where they happen): special tokens are
never trigger candidates; triggers start uniform over the whole non-special vocabulary; the
surrogate trains on ``clip(x + delta)`` rounded to whole 1/255 units (the stored noise); the
noise is bounded in [0, 1] pixel units rather than divided by the CLIP std per channel (the same
ball: 8/255 per channel); no fp16 GradScaler (bf16 autocast on CUDA, fp32 on CPU).

References:
    Liu et al., Multimodal Unlearnable Examples: Protecting Data against Multimodal Contrastive
    Learning, ACM MM 2024, arXiv:2407.16307.
    Huang et al., Unlearnable Examples, arXiv:2101.04898 (the min-min image step).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from torch import nn

from obstructlib.data import PerturbationStore, ProtectedPairs, SizedDataset, pair_collate, tokenize_captions
from obstructlib.engine import ClipTrainConfig, ResumableLoop, check_fingerprint, resolve_device, state_digest
from obstructlib.engine.clip import clip_adamw
from obstructlib.errors import ConfigError, check_min, check_range
from obstructlib.methods.mem.steps import PairState, clip_batch_loss, shard_of, surrogate_steps, sync_shards
from obstructlib.primitives.perturb import frozen, perturb_dataset
from obstructlib.primitives.poisons import ErrorMaxConfig, drop_other_noise, load_noise, save_noise
from obstructlib.primitives.text_triggers import banned_outside, random_trigger, trigger_vocabulary

if TYPE_CHECKING:
    from obstructlib.models.clip import ClipModel

__all__ = ["CaptionPairs", "MEMConfig", "MEMResult", "clip_error_max_noise", "protect"]


class CaptionPairs(SizedDataset[Any], Protocol):
    """A caption dataset as MEM reads it: items ``(image, caption, image_id)`` and one caption per pair."""

    @property
    def captions(self) -> Sequence[str]: ...


@dataclass
class MEMConfig:
    """MEM's schedule; defaults are the official from-scratch code's (``src/poison_train.py``).

    Attributes:
        trigger_tokens: k, trigger length (MEM-3: 3, MEM-5: 5; 0: image-only EM).
        rounds: T, outer rounds (20).
        text_rounds: rounds (the first ones) in which HotFlip updates the triggers (5).
        train_steps: M, surrogate AdamW steps per round (200), continuing one shuffled order.
        pgd_steps: S, signed-gradient steps per batch and round on the image noise (8).
        eps: L-inf budget in [0, 1] pixel units (8/255).
        step_size: PGD step in pixel units (1/255).
        num_candidates: K, HotFlip candidates per trigger position (16); beam 1, greedy.
        batch_size: B, pairs per batch in every step (128).
        shuffle_captions: shuffle caption bodies inside the batch at every PGD step (True;
            False is the "w/o shuffle" ablation).
        num_groups: class-wise MEM: pairs are assigned at random to this many groups sharing one
            noise and one trigger (official ``poison_class.py``); None: per pair (MEM).
        trigger_vocab: the reduced-vocabulary trigger of the spec's CPU demonstration (Sec. 4.2):
            triggers start in and HotFlip searches only this many ids, the captions' own most
            frequent ids first, then random others
            (:func:`~obstructlib.primitives.text_triggers.trigger_vocabulary`); None: the whole
            non-special vocabulary (the official code's candidates, special ids masked).
        surrogate: the surrogate's AdamW (lr 1e-4, wd 0.2 off gains/biases/embeddings,
            betas (0.9, 0.999), eps 1e-8; the official cosine scheduler is never stepped, so the
            lr is constant; ``steps``/``warmup_steps`` are unused here).
        seed: seed of orders, permutations and the trigger init.
        amp: autocast on CUDA (no effect on CPU).
        num_workers: DataLoader workers.
    """

    trigger_tokens: int = 3
    rounds: int = 20
    text_rounds: int = 5
    train_steps: int = 200
    pgd_steps: int = 8
    eps: float = 8 / 255
    step_size: float = 1 / 255
    num_candidates: int = 16
    batch_size: int = 128
    shuffle_captions: bool = True
    num_groups: int | None = None
    trigger_vocab: int | None = None
    surrogate: ClipTrainConfig = field(default_factory=lambda: ClipTrainConfig(
        lr=1e-4, weight_decay=0.2, betas=(0.9, 0.999), eps=1e-8, warmup_steps=0, batch_size=128))
    seed: int = 0
    amp: bool = True
    num_workers: int = 0

    @classmethod
    def paper(cls, trigger_tokens: int = 3) -> MEMConfig:
        """MEM-k from scratch, the official defaults (``--token_num k``)."""
        return cls(trigger_tokens=trigger_tokens)

    @classmethod
    def finetune(cls, trigger_tokens: int = 3) -> MEMConfig:
        """The official variant for a PRETRAINED surrogate (``poison_train_finetune.py``): 10 rounds,
        50 theta-steps, triggers updated in the first 2 rounds, 6 candidates."""
        return cls(trigger_tokens=trigger_tokens, rounds=10, train_steps=50, text_rounds=2, num_candidates=6)

    @classmethod
    def em(cls) -> MEMConfig:
        """Image-only error-minimising noise with the CLIP loss (official ``poison_mm.py``): 5 rounds x
        (50 theta-steps + one PGD pass of 8 steps), no trigger, each image with its own caption."""
        return cls(trigger_tokens=0, rounds=5, text_rounds=0, train_steps=50, shuffle_captions=False)

    def validate(self) -> None:
        """Raise :class:`ConfigError` for values outside their ranges."""
        check_range("eps", self.eps, 0.0, 127 / 255)
        check_range("step_size", self.step_size, 0.0, 1.0)
        check_range("trigger_tokens", self.trigger_tokens, 0, 20)
        check_min(self, ("rounds", "batch_size", "num_candidates"))
        check_min(self, ("text_rounds", "train_steps", "pgd_steps"), 0)
        if self.num_groups is not None and self.num_groups < 1:
            raise ConfigError(f"num_groups={self.num_groups}: use a positive number of groups, or none")
        if self.trigger_vocab is not None and self.trigger_vocab < self.num_candidates:
            raise ConfigError(f"trigger_vocab={self.trigger_vocab} is smaller than num_candidates="
                              f"{self.num_candidates}: use at least that many ids, or none for the whole vocabulary")
        self.surrogate.validate()


@dataclass
class MEMResult:
    """What :func:`protect` returns.

    Attributes:
        store: image noise, one row per pair (or per group for class-wise MEM).
        triggers: int64 token ids ``(rows, k)`` (``k = 0`` for EM).
        trigger_rows: pair -> trigger row ``(N,)``.
        history: one record per round: ``round``, ``train_loss`` (mean of its theta-steps),
            ``protected_loss`` (surrogate loss on protected batches after the round: the
            shortcut's strength) beside ``clean_loss`` (the same pairs unprotected),
            ``text_loss_before``/``text_loss_after`` (mean HotFlip batch loss, text rounds only)
            and ``seconds``.
        seconds: wall time of the whole generation.
    """

    store: PerturbationStore
    triggers: torch.Tensor
    trigger_rows: np.ndarray
    history: list[dict[str, float]]
    seconds: float = 0.0

    @property
    def bytes_per_pair(self) -> float:
        """Bytes published per pair: int8 noise (per pair or shared) plus the trigger ids (int32 suffices)."""
        n = len(self.trigger_rows)
        return (self.store.nbytes + 4 * self.triggers.numel()) / max(n, 1)

    def dataset(self, pairs: CaptionPairs, model: ClipModel, **kwargs: Any) -> ProtectedPairs:
        """The protected pairs for ``model``'s tokenizer (kwargs as :class:`ProtectedPairs`)."""
        tokens = tokenize_captions(model, pairs.captions)
        # eot None (a tokenizer without one) is fine until ProtectedPairs inserts a trigger or strips tokens
        return ProtectedPairs(pairs, tokens, model.eot_token_id,  # type: ignore[arg-type]
                              self.store, self.triggers, self.trigger_rows, **kwargs)


def _mean_loss(
    model: nn.Module, data: ProtectedPairs, cfg: MEMConfig, device: torch.device, max_batches: int = 8
) -> float:
    """Surrogate loss on (up to ``max_batches``) protected batches: the shortcut's strength."""
    loader = torch.utils.data.DataLoader(data, batch_size=min(cfg.batch_size, len(data)), collate_fn=pair_collate)
    losses = []
    with torch.no_grad():
        for b, (x, t) in enumerate(loader):
            if b == max_batches:
                break
            losses.append(float(clip_batch_loss(model, x.to(device), t.to(device), cfg.amp, gather=False)))
    return float(np.mean(losses)) if losses else float("nan")


def _banned_ids(model: ClipModel, tokens: torch.Tensor, cfg: MEMConfig) -> torch.Tensor:
    """The ids a trigger never uses: the special ids, and everything outside a reduced vocabulary."""
    if cfg.trigger_vocab is None:
        return torch.as_tensor(model.special_token_ids, dtype=torch.long)
    g = torch.Generator().manual_seed(cfg.seed + 1)
    vocab = trigger_vocabulary(tokens, model.vocab_size, cfg.trigger_vocab, model.special_token_ids, g)
    return banned_outside(vocab, model.vocab_size, model.special_token_ids)


def _init_state(pairs: CaptionPairs, model: ClipModel, cfg: MEMConfig, shape: tuple, banned: torch.Tensor) -> tuple:
    n = len(pairs)
    if cfg.num_groups is None:
        store, rows = PerturbationStore(n, shape, cfg.eps), np.arange(n)
    else:  # class-wise: random groups share one noise and one trigger (official poison_class.py)
        rows = np.random.default_rng(cfg.seed).integers(0, cfg.num_groups, n)
        store = PerturbationStore(cfg.num_groups, shape, cfg.eps, mode="cluster", assignments=rows)
    g = torch.Generator().manual_seed(cfg.seed)
    triggers = random_trigger(int(rows.max()) + 1 if n else 0, cfg.trigger_tokens, model.vocab_size, banned, g)
    return store, triggers, rows


def protect(
    pairs: CaptionPairs,
    cfg: MEMConfig,
    *,
    surrogate: ClipModel,
    device: torch.device | str | None = None,
    ckpt_dir: str | os.PathLike | None = None,
    progress: bool = True,
    callback: Callable[[int, dict[str, float]], bool | None] | None = None,
) -> MEMResult:
    """Multi-step error minimisation: image noise and text triggers for every image-caption pair.

    Args:
        pairs: caption dataset, items ``(image (C, H, W) in [0, 1], caption, image_id)`` with a
            ``captions`` list; no random augmentation.
        cfg: the schedule (:meth:`MEMConfig.paper`, :meth:`MEMConfig.em` ...).
        surrogate: the surrogate ``ClipModel`` (random init: the paper's main setting; pretrained:
            the fine-tuning setting, use :meth:`MEMConfig.finetune`); trained in place, left in eval mode.
        device: device or name.
        ckpt_dir: round checkpoints (surrogate + optimizer, noise file, triggers); a later call
            with the same directory resumes after the last finished round.
        progress: progress bars.
        callback: ``callback(round, record)`` after each round; return True to stop (resumable).

    Returns:
        A :class:`MEMResult`. Under ``torchrun`` each rank runs the noise pass on its shard of the
        pairs (``rank::world``) and the shards are exchanged after every pass.

    Shape:
        ``result.store.get(rows)``: ``(B, C, H, W)``; ``result.triggers``: ``(rows, k)``.

    References:
        Liu et al., arXiv:2407.16307 (Alg. 1: theta-, t- and delta-steps; caption shuffling).

    Example:
        >>> clip = create_clip("tiny-rn")                                          # doctest: +SKIP
        >>> res = protect(pairs, MEMConfig(rounds=2, train_steps=10), surrogate=clip, device="cpu")  # doctest: +SKIP
        >>> protected = res.dataset(pairs, clip)                                   # doctest: +SKIP
    """
    model = surrogate
    cfg.validate()
    device = resolve_device(device)
    if len(pairs) < 2 or not hasattr(pairs, "captions"):
        raise ConfigError("MEM protect needs a caption dataset with at least 2 pairs (e.g. CaptionDataset)")
    start = time.perf_counter()
    model.to(device)
    shape = tuple(pairs[0][0].shape)
    tokens = tokenize_captions(model, pairs.captions)
    banned = _banned_ids(model, tokens, cfg)
    store, triggers, rows = _init_state(pairs, model, cfg, shape, banned)
    opt = clip_adamw(model, cfg.surrogate)
    ckpt = None if ckpt_dir is None else Path(ckpt_dir)
    state: dict[str, Any] = {"round": 0, "train_batches": 0, "history": []}
    if ckpt is not None:
        check_fingerprint(ckpt, cfg, extra={"num_pairs": len(pairs), "image_shape": list(shape),
                                            "surrogate_weights": state_digest(surrogate)})
    kept: dict[str, Any] = {"cluster_noise": None, "noise_file": None}

    def extra() -> dict[str, Any]:
        assert ckpt is not None
        kept["noise_file"] = save_noise(ckpt, store, state["round"])
        more = {"state": state, "noise_file": kept["noise_file"], "triggers": triggers.clone()}
        return more if kept["cluster_noise"] is None else {**more, "cluster_noise": kept["cluster_noise"]}

    def drop_replaced() -> None:
        assert ckpt is not None
        drop_other_noise(ckpt, kept["noise_file"])

    loop = ResumableLoop(cfg.rounds, ckpt_dir=None if ckpt is None else ckpt / "surrogate", model=model,
                         optimizer=opt, config=cfg, history=state["history"], extra=extra,
                         on_saved=drop_replaced)
    if ckpt is not None and loop.resumed:
        state, triggers = loop.resumed["state"], loop.resumed["triggers"].clone()
        loop.history = state["history"]
        store, kept["cluster_noise"] = load_noise(ckpt, loop.resumed["noise_file"]), loop.resumed.get("cluster_noise")
    # eot None (a tokenizer without one) is fine until ProtectedPairs inserts a trigger
    data = ProtectedPairs(pairs, tokens, model.eot_token_id,  # type: ignore[arg-type]
                          store, triggers, rows, quantize=True)
    clean = ProtectedPairs(pairs, tokens, model.eot_token_id)  # type: ignore[arg-type]  # the same pairs unprotected
    players = PairState(model, tokens, triggers, rows, cfg.num_candidates, cfg.shuffle_captions, cfg.amp,
                        banned_ids=banned)
    shard = shard_of(len(pairs)) if cfg.num_groups is None else None
    for r in loop:
        t0 = time.perf_counter()
        # (1) theta-step: M surrogate steps on the current protected pairs
        state["train_batches"], train_loss = surrogate_steps(
            model, opt, data, steps=cfg.train_steps, batch_size=cfg.batch_size, seed=cfg.seed,
            done=state["train_batches"], device=device, amp=cfg.amp,
            max_logit_scale=cfg.surrogate.max_logit_scale, num_workers=cfg.num_workers)
        # (2) one pass: t-step (early rounds) then delta-step on every batch; model frozen, eval mode
        model.eval()
        players.generator.manual_seed(cfg.seed * 1_000_003 + r)
        players.text_losses.clear()
        text = players.text_step if (cfg.trigger_tokens and r < cfg.text_rounds) else None
        with frozen(model):
            kept["cluster_noise"] = perturb_dataset(
                store, pairs, players.image_loss, step_size=cfg.step_size, steps=cfg.pgd_steps,
                device=device, batch_size=cfg.batch_size, shuffle=True, seed=cfg.seed * 7919 + r,
                cluster_noise=kept["cluster_noise"], num_workers=cfg.num_workers, progress=progress,
                desc=f"MEM round {r + 1}/{cfg.rounds}", before_batch=text, indices=shard)
        if shard is not None:
            sync_shards(store, triggers, rows)
        # the shortcut's strength: the surrogate's loss on the published pairs against the same pairs clean
        record = {"round": r + 1, "train_loss": train_loss, "protected_loss": _mean_loss(model, data, cfg, device),
                  "clean_loss": _mean_loss(model, clean, cfg, device), "seconds": time.perf_counter() - t0}
        if players.text_losses:
            before, after = np.mean(players.text_losses, axis=0)
            record.update(text_loss_before=float(before), text_loss_after=float(after))
        state["round"] = r + 1
        loop.log(record)
        if callback is not None and callback(r + 1, record):
            loop.stop()  # after the checkpoint (all ranks wait for it at the loop's barrier)
    model.eval()
    return MEMResult(store, triggers, rows, state["history"], time.perf_counter() - start)


def clip_error_max_noise(
    model: ClipModel,
    pairs: CaptionPairs,
    cfg: ErrorMaxConfig,
    device: torch.device | str | None,
    *,
    progress: bool = True,
) -> PerturbationStore:
    """Error-MAXIMISING image noise against a CLEAN CLIP (the TAP-like baseline, ``poison_max.py``).

    One pass of PGD ASCENT on L_CLIP of each batch with its own captions, the model frozen.

    Args:
        model: a CLIP trained on the clean pairs.
        pairs: caption dataset (``captions`` list, items ``(image, caption, image_id)``).
        cfg: budget, step, steps, batch (``random_start`` as the config says).
        device: device or name.
        progress: progress bar.

    Returns:
        A sample-mode store with one row per pair.

    References:
        Fowl et al., Adversarial Examples Make Strong Poisons, arXiv:2106.10807; Liu et al., arXiv:2407.16307.
    """
    cfg.validate()
    device = resolve_device(device)
    model.to(device).eval()
    tokens = tokenize_captions(model, pairs.captions)
    store = PerturbationStore(len(pairs), tuple(pairs[0][0].shape), cfg.eps)
    empty = torch.zeros(len(pairs), 0, dtype=torch.long)
    players = PairState(model, tokens, empty, np.arange(len(pairs)), 1, False, cfg.amp)
    with frozen(model):
        perturb_dataset(store, pairs, players.image_loss, step_size=cfg.step_size, steps=cfg.steps, device=device,
                        batch_size=cfg.batch_size, minimize=False, shuffle=True, seed=cfg.seed,
                        random_start=cfg.random_start, progress=progress, desc="error-max noise")
    return store
