"""Dataset-level availability poisons built on :mod:`~obstructlib.primitives.perturb`.

- :func:`error_minimizing_noise` -- Huang et al.'s unlearnable examples (EMinN): the bi-level
  min-min problem ``min_theta E[min_delta CE(f_theta(x + delta), y)]``, solved by alternating a few
  surrogate training steps with a PGD pass that MINIMISES each sample's (or class's) loss, until the
  surrogate classifies the perturbed data almost perfectly.
- :func:`error_maximizing_noise` -- adversarial poisoning (EMaxN / TAP): PGD against a CLEAN
  trained model, toward class ``(y + 1) mod C`` (targeted) or away from ``y`` (untargeted).
- :func:`random_noise_store` -- uniform random noise, the control every table includes.

All return a :class:`~obstructlib.data.PerturbationStore` (int8 pixel units, L-inf ball), indexed
by dataset index (sample mode) or by class (cluster mode with ``assignments = labels``).

Documented deviation (class-wise EM): after each batch's PGD, a class's noise becomes the mean of
its members' deltas ``clip(x_i + delta, 0, 1) - x_i``, i.e. AFTER the [0, 1] image clip
(:func:`~obstructlib.primitives.perturb.perturb_dataset`); the Unlearnable-Examples reference
averages the members' deltas before that clip. Where many members of a class saturate a pixel,
our class noise is smaller there; elsewhere the two agree. Kept because the averaged delta is
then one that every member actually received.

References:
    Huang et al., Unlearnable Examples, arXiv:2101.04898.
    Fowl et al., Adversarial Examples Make Strong Poisons, arXiv:2106.10807.
    Zhang et al., Unlearnable Clusters, arXiv:2301.01217 (uses both as baselines).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from obstructlib.data import IndexedDataset, PerturbationStore, RelabelledDataset, SizedDataset, labels_of
from obstructlib.engine import ResumableLoop, autocast, check_fingerprint, resolve_device
from obstructlib.engine.distributed import epoch_loader
from obstructlib.errors import ConfigError, check_min, check_range
from obstructlib.primitives.perturb import perturb_dataset

__all__ = [
    "ErrorMaxConfig",
    "ErrorMinConfig",
    "error_maximizing_noise",
    "error_minimizing_noise",
    "drop_other_noise",
    "load_noise",
    "random_noise_store",
    "save_noise",
]


@dataclass
class ErrorMinConfig:
    """Error-minimising noise (Huang et al.), defaults from their CIFAR-10 sample-wise recipe.

    Attributes:
        eps: L-inf budget in [0, 1] pixel units (paper: 8/255).
        step_size: PGD step in pixel units (paper: 0.8/255; 2/255 reaches the stop criterion in
            fewer rounds and is what the quick profile uses).
        steps: PGD steps per batch and round (paper: 20 sample-wise, 1 class-wise).
        train_steps: surrogate SGD steps (batches) per round (paper: 10).
        stop_acc: stop once the surrogate's accuracy on the perturbed data EXCEEDS this
            (paper: 0.99 sample-wise, i.e. stop error 0.01; 0.9 class-wise).
        max_rounds: cap on rounds (the paper loops until ``stop_acc``; a cap keeps runs bounded).
        batch_size: batch of both the training steps and the noise pass (paper code: 512).
        lr, momentum, weight_decay: surrogate SGD (paper: 0.1, 0.9, 5e-4).
        grad_clip: surrogate gradient-norm clip (paper config: 5.0); None disables.
        random_init: start from uniform noise in the ball instead of zeros (paper default: zeros).
        shuffle_search: visit samples in a seeded random order in the noise pass (the paper's
            sample-wise pass is sequential, its class-wise pass shuffled).
        seed: seed of the training order, the noise pass order and the random init.
        amp: mixed precision on CUDA (no effect on CPU).
        num_workers: DataLoader workers.
    """

    eps: float = 8 / 255
    step_size: float = 0.8 / 255
    steps: int = 20
    train_steps: int = 10
    stop_acc: float = 0.99
    max_rounds: int = 30
    batch_size: int = 512
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    grad_clip: float | None = 5.0
    random_init: bool = False
    shuffle_search: bool = False
    seed: int = 0
    amp: bool = True
    num_workers: int = 0

    @classmethod
    def paper(cls, mode: str = "sample") -> ErrorMinConfig:
        """Huang et al.'s CIFAR-10 settings for ``mode`` (``"sample"`` or ``"class"``)."""
        if mode == "class":  # README: --num_steps 1 --universal_stop_error 0.1, shuffled loader
            return cls(steps=1, stop_acc=0.9, shuffle_search=True, max_rounds=1000)
        return cls(max_rounds=1000)

    def validate(self) -> None:
        """Raise :class:`ConfigError` for values outside their ranges."""
        check_range("eps", self.eps, 0.0, 127 / 255)
        check_range("step_size", self.step_size, 0.0, 1.0)
        check_range("stop_acc", self.stop_acc, 0.0, 1.0)
        check_min(self, ("steps", "train_steps"), 0)
        check_min(self, ("max_rounds", "batch_size"))


@dataclass
class ErrorMaxConfig:
    """Error-maximising (adversarial) poison, TAP-style (Fowl et al.).

    Attributes:
        eps: L-inf budget in pixel units (paper: 8/255).
        step_size: PGD step in pixel units (paper code: ``tau * eps`` with tau 0.05, i.e. 0.4/255).
        steps: PGD steps per sample (paper: 250, with 8 restarts and differentiable augmentation
            while crafting; here one run, no augmentation, 50 steps of 1/255 by default, which
            reaches near-100% targeted success on CIFAR-10 models at a fifth of the cost).
        batch_size: samples per batch.
        random_start: start from uniform noise in the ball (paper code: Gaussian init).
        seed: seed of the random starts.
        amp: mixed precision on CUDA.
        ckpt_every_batches: with ``ckpt_dir``, save progress every this many batches.
        num_workers: DataLoader workers.
    """

    eps: float = 8 / 255
    step_size: float = 1 / 255
    steps: int = 50
    batch_size: int = 256
    random_start: bool = True
    seed: int = 0
    amp: bool = True
    ckpt_every_batches: int = 50
    num_workers: int = 0

    def validate(self) -> None:
        """Raise :class:`ConfigError` for values outside their ranges."""
        check_range("eps", self.eps, 0.0, 127 / 255)
        check_range("step_size", self.step_size, 0.0, 1.0)
        check_min(self, ("steps", "batch_size", "ckpt_every_batches"))


def _prepare(
    dataset: SizedDataset, labels: Sequence[int] | np.ndarray | None
) -> tuple[RelabelledDataset, np.ndarray, tuple]:
    labels = labels_of(dataset) if labels is None else np.asarray(labels, dtype=np.int64)
    if labels is None:
        raise ConfigError("the dataset has no labels/targets attribute: pass labels= (one int per sample)")
    if len(labels) != len(dataset) or len(labels) == 0:
        raise ConfigError(f"{len(labels)} labels for {len(dataset)} samples: pass one label per sample")
    return RelabelledDataset(dataset, labels), labels, tuple(dataset[0][0].shape)


def _ce_loss(model: nn.Module, device: torch.device, amp: bool, shift: int = 0) -> Callable:
    """``loss(x_perturbed, (idx, x, y))``: mean CE of ``(y + shift) mod C``."""

    def loss(z: torch.Tensor, batch: tuple) -> torch.Tensor:
        with autocast(device, enabled=amp):
            logits = model(z).float()
        return F.cross_entropy(logits, (batch[2] + shift) % logits.shape[1])

    return loss


@torch.no_grad()
def _perturbed_accuracy(
    model: nn.Module, data: SizedDataset, store: PerturbationStore, cfg: Any, device: torch.device
) -> float:
    model.eval()
    loader = DataLoader(IndexedDataset(data), batch_size=cfg.batch_size, num_workers=cfg.num_workers)
    correct = 0
    for idx, x, y in loader:
        x = store.apply(x.to(device), idx)
        with autocast(device, enabled=cfg.amp):
            correct += int((model(x).argmax(1) == y.to(device)).sum())
    return correct / len(data)


def _train_steps(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    data: SizedDataset,
    store: PerturbationStore,
    cfg: ErrorMinConfig,
    device: torch.device,
    done: int,
) -> int:
    """``cfg.train_steps`` SGD steps on perturbed data, continuing a persistent shuffled order
    (the paper's ``data_iter``) that is a function of ``(seed, batches done)`` so resuming is exact."""
    indexed = IndexedDataset(data)
    per_epoch = max(len(indexed) // cfg.batch_size, 1)
    batch = min(cfg.batch_size, len(indexed))
    model.train()
    for step in range(done, done + cfg.train_steps):
        loader = epoch_loader(
            indexed,
            batch,
            seed=cfg.seed,
            epoch=step // per_epoch,
            skip_batches=step % per_epoch,
            num_workers=cfg.num_workers,
        )
        idx, x, y = next(iter(loader))
        x, y = store.apply(x.to(device), idx), y.to(device)  # clamped: what a protected PNG holds
        with autocast(device, enabled=cfg.amp):
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
    return done + cfg.train_steps


def save_noise(ckpt_dir: Path, store: PerturbationStore, tag: int) -> str:
    """Checkpoint helper of every noise loop (EM, MEM): write the store under a new name.

    The checkpoint that names the file is written afterwards, so a crash never pairs a checkpoint
    with a half-written or newer noise file.
    """
    name = f"noise_{tag:06d}.npy"
    store.save(ckpt_dir / name)
    return name


def drop_other_noise(ckpt_dir: Path, keep: str) -> None:
    """Remove the noise files of older checkpoints in ``ckpt_dir`` (all but ``keep``)."""
    for path in ckpt_dir.glob("noise_*.npy"):
        if path.name != keep:
            path.unlink(missing_ok=True)
            path.with_suffix(".json").unlink(missing_ok=True)


def load_noise(ckpt_dir: Path, name: str) -> PerturbationStore:
    """A checkpointed noise file as an in-RAM store (later saves never write into it)."""
    loaded = PerturbationStore.load(ckpt_dir / name, mmap=False)
    loaded.path = None  # an in-RAM copy: later saves go to new files, never into the checkpoint's
    return loaded


def error_minimizing_noise(
    model: nn.Module,
    dataset: SizedDataset,
    cfg: ErrorMinConfig,
    device: torch.device | str | None,
    *,
    mode: str = "sample",
    labels: Sequence[int] | np.ndarray | None = None,
    progress: bool = True,
    ckpt_dir: str | os.PathLike | None = None,
    callback: Callable[[int, dict[str, float]], bool | None] | None = None,
) -> PerturbationStore:
    """Huang et al.'s unlearnable examples: min-min error-minimising noise against a surrogate.

    Each round: (1) ``cfg.train_steps`` SGD steps of the surrogate on the perturbed data;
    (2) a pass over the data with ``cfg.steps`` PGD steps per batch MINIMISING the CE of each
    sample's own label (eval mode, parameters frozen), warm-started from the stored noise;
    (3) the surrogate's accuracy on the whole perturbed set; stop once it exceeds ``cfg.stop_acc``
    or after ``cfg.max_rounds``. Sample mode keeps one noise per DATASET index; class mode one per
    class (a cluster-mode store with ``assignments = labels``), updated as the batch mean.

    Deliberate deviations from the official code: the surrogate trains on ``clip(x + delta, 0, 1)``
    quantised to 8 bits (the released images) rather than unclipped float sums, and the stored
    noise is rounded to whole 1/255 units after each pass.

    Args:
        model: the surrogate classifier (images in [0, 1] -> logits), trained in place; moved to
            ``device`` and left in eval mode.
        dataset: items ``(image float (C, H, W) in [0, 1], label)`` without random augmentation.
        cfg: the recipe (:meth:`ErrorMinConfig.paper` gives the paper's values).
        device: device or name.
        mode: ``"sample"`` (sample-wise) or ``"class"`` (class-wise).
        labels: the protector's label per sample (default: the dataset's); in the
            label-agnostic setting pass surrogate-predicted labels.
        progress: show progress bars.
        ckpt_dir: directory for the round checkpoint (``surrogate/`` engine checkpoint and
            ``noise_NNNNNN.npy``); a later call with the same directory resumes, bit-identical on CPU.
        callback: ``callback(round, record)`` after each round with ``loss`` and ``acc`` (perturbed
            data); return True to stop after checkpointing (the next call resumes).

    Returns:
        The store (eps ``cfg.eps``), sample mode ``num = len(dataset)``, class mode ``num = C``.

    References:
        Huang et al., Unlearnable Examples, arXiv:2101.04898.

    Example:
        >>> store = error_minimizing_noise(model, train_set, ErrorMinConfig(), "cuda")  # doctest: +SKIP
        >>> protected = store.apply(images, indices)                                    # doctest: +SKIP
    """
    if mode not in ("sample", "class"):
        raise ConfigError(f"mode={mode!r}: use 'sample' or 'class'")
    cfg.validate()
    device = resolve_device(device)
    data, labels, shape = _prepare(dataset, labels)
    if mode == "class":
        store = PerturbationStore(int(labels.max()) + 1, shape, cfg.eps, mode="cluster", assignments=labels)
    else:
        store = PerturbationStore(len(data), shape, cfg.eps)
    if cfg.random_init:
        store.randomize(cfg.seed)
    model.to(device)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    ckpt = None if ckpt_dir is None else Path(ckpt_dir)
    state: dict[str, Any] = {"round": 0, "train_batches": 0, "done": False, "history": []}
    if ckpt is not None:
        check_fingerprint(ckpt, cfg, extra={"mode": mode, "num_samples": len(data), "image_shape": list(shape)})
    kept: dict[str, Any] = {"cluster_noise": None, "noise_file": None}

    def extra() -> dict[str, Any]:
        assert ckpt is not None
        kept["noise_file"] = save_noise(ckpt, store, state["round"])
        more = {"state": state, "noise_file": kept["noise_file"]}
        return more if kept["cluster_noise"] is None else {**more, "cluster_noise": kept["cluster_noise"]}

    def drop_replaced() -> None:
        assert ckpt is not None
        drop_other_noise(ckpt, kept["noise_file"])

    loop = ResumableLoop(cfg.max_rounds, ckpt_dir=None if ckpt is None else ckpt / "surrogate", model=model,
                         optimizer=opt, config=cfg, history=state["history"], extra=extra,
                         on_saved=drop_replaced)
    if ckpt is not None and loop.resumed:
        state = loop.resumed["state"]
        loop.history = state["history"]
        store = load_noise(ckpt, loop.resumed["noise_file"])
        kept["cluster_noise"] = loop.resumed.get("cluster_noise")
    if state["done"]:
        loop.stop()  # a resumed search that had already reached stop_acc
    loss_fn = _ce_loss(model, device, cfg.amp)
    for _ in loop:
        state["train_batches"] = _train_steps(model, opt, data, store, cfg, device, state["train_batches"])
        model.eval()  # BatchNorm statistics must not move while the noise is searched
        kept["cluster_noise"] = perturb_dataset(
            store,
            data,
            loss_fn,
            step_size=cfg.step_size,
            steps=cfg.steps,
            device=device,
            batch_size=cfg.batch_size,
            shuffle=cfg.shuffle_search,
            seed=cfg.seed * 1_000_003 + state["round"],
            cluster_noise=kept["cluster_noise"],
            frozen_module=model,
            num_workers=cfg.num_workers,
            progress=progress,
            desc=f"EM round {state['round'] + 1}",
        )
        acc = _perturbed_accuracy(model, data, store, cfg, device)
        state["round"] += 1
        state["done"] = acc > cfg.stop_acc
        record = {"round": state["round"], "acc": acc, "train_batches": state["train_batches"]}
        loop.log(record)
        asked = bool(callback(state["round"], record)) if callback is not None else False
        if state["done"] or asked:
            loop.stop()
    model.eval()
    return store


def error_maximizing_noise(
    model: nn.Module,
    dataset: SizedDataset,
    cfg: ErrorMaxConfig,
    device: torch.device | str | None,
    *,
    targeted: bool = True,
    labels: Sequence[int] | np.ndarray | None = None,
    progress: bool = True,
    ckpt_dir: str | os.PathLike | None = None,
) -> PerturbationStore:
    """Adversarial poisons (TAP, Fowl et al.) against a CLEAN trained ``model``, one per sample.

    Targeted (the paper's strongest): PGD MINIMISING the CE toward class ``(y + 1) mod C``, so
    every image carries features of the next class. Untargeted: PGD MAXIMISING the CE of ``y``.
    The model is frozen and in eval mode throughout; it is never trained here.

    Args:
        model: a classifier trained on clean data (images in [0, 1] -> logits).
        dataset: items ``(image float (C, H, W) in [0, 1], label)``, no random augmentation.
        cfg: the recipe (defaults are lighter than the paper's; see :class:`ErrorMaxConfig`).
        device: device or name.
        targeted: class-targeted (True) or untargeted (False).
        labels: label per sample (default: the dataset's).
        progress: show a progress bar.
        ckpt_dir: save the store every ``cfg.ckpt_every_batches`` batches (``noise_NNNNNN.npy`` +
            ``progress.json``); a later call resumes after the last saved batch.

    Returns:
        A sample-mode store of ``len(dataset)`` rows with eps ``cfg.eps``.

    References:
        Fowl et al., Adversarial Examples Make Strong Poisons, arXiv:2106.10807.

    Example:
        >>> store = error_maximizing_noise(clean_model, train_set, ErrorMaxConfig(), "cuda")  # doctest: +SKIP
    """
    cfg.validate()
    device = resolve_device(device)
    data, labels, shape = _prepare(dataset, labels)
    store = PerturbationStore(len(data), shape, cfg.eps)
    model.to(device).eval()
    ckpt = None if ckpt_dir is None else Path(ckpt_dir)
    skip = 0
    marker = None if ckpt is None else ckpt / "progress.json"
    if ckpt is not None:
        check_fingerprint(ckpt, cfg, extra={"targeted": targeted, "num_samples": len(data), "image_shape": list(shape)})
    if ckpt is not None and marker is not None and marker.is_file():
        saved = json.loads(marker.read_text())
        store, skip = load_noise(ckpt, saved["noise_file"]), int(saved["batches"])

    def save(done: int) -> None:
        if ckpt is None or marker is None or (done % cfg.ckpt_every_batches and done != total):
            return
        name = save_noise(ckpt, store, done)
        tmp = marker.with_suffix(".tmp")
        tmp.write_text(
            json.dumps({"batches": done, "noise_file": name, "targeted": targeted, "config": asdict(cfg)})
        )
        os.replace(tmp, marker)
        drop_other_noise(ckpt, name)

    total = -(-len(data) // cfg.batch_size)
    perturb_dataset(
        store,
        data,
        _ce_loss(model, device, cfg.amp, shift=1 if targeted else 0),
        step_size=cfg.step_size,
        steps=cfg.steps,
        device=device,
        batch_size=cfg.batch_size,
        minimize=targeted,
        seed=cfg.seed,
        random_start=cfg.random_start,
        frozen_module=model,
        skip_batches=skip,
        after_batch=save,
        num_workers=cfg.num_workers,
        progress=progress,
        desc="TAP" if targeted else "adversarial poison",
    )
    return store


def random_noise_store(
    num: int,
    shape: Sequence[int],
    eps: float,
    seed: int,
    mode: str = "sample",
    assignments: Sequence[int] | np.ndarray | None = None,
    path: str | os.PathLike | None = None,
) -> PerturbationStore:
    """Uniform random noise in whole pixel units of ``[-eps, eps]`` (the "random noise" control).

    Args:
        num: rows (samples, or clusters in cluster mode).
        shape: ``(C, H, W)`` of one image.
        eps: L-inf budget in pixel units (e.g. ``8/255``).
        seed: seed of the draw.
        mode: ``"sample"`` or ``"cluster"`` (then pass ``assignments``, sample -> cluster).
        path: back the store with this ``.npy`` memory map.

    Example:
        >>> s = random_noise_store(5, (3, 4, 4), 8 / 255, seed=0)
        >>> int(abs(s.data).max()) <= 8
        True
    """
    store = PerturbationStore(num, shape, eps, path=None if path is None else Path(path), mode=mode,
                              assignments=assignments)
    return store.randomize(seed)
