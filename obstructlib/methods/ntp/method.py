"""Non-Transferable Pruning (NTP): prune a source model's encoder so it is a bad start on a target domain.

The owner holds a model trained on an authorised source domain S and labelled data of the
domain T to block. NTP prunes the shared encoder f_theta with ADMM so that it still serves S but
fine-tuning it on T (all remaining weights and the head) is worse than training from scratch:

1. stage 1, :func:`train_target_head`: a target head h_T trained on the frozen encoder's
   T features, then frozen (a fixed probe whose loss the encoder learns to raise);
2. stage 2, :func:`prune`: ADMM over the encoder on zipped (S, T) batches with the task loss
   (:func:`nt_loss`)

       L = CE(h_S(f(x_s)), y_s) - alpha * min(CE(h_T(f(x_t)), y_t), 10) + lambda * R_phiT(z_t, y_t)

   plus the proximity term ``rho/2 sum ||theta - Z + U||``, the L1 proximal Z-step, the dual
   update and monotone masks, until the target sparsity (or a loss plateau) is reached.

Ablations through ``NTPConfig.loss``: ``ntl-admm`` (the NTL-style loss ``CE_S - alpha *
min(CE_T, 3) * min(MMD, 1)``) and ``sparsity`` (alpha = lambda = 0: pure sparse source
training). Pruning alone, the attacks and the released artefact live in
:mod:`~obstructlib.methods.ntp.release`.

References:
    Ding et al., Non-transferable Pruning, ECCV 2024, arXiv:2410.08015.

Example:
    >>> model = create_model("digits_cnn", num_classes=10)                       # doctest: +SKIP
    >>> head = train_target_head(model, target_train, NTPConfig(), "cpu")         # doctest: +SKIP
    >>> result = prune(model, NTPConfig(), source=source_train, target=target_train, target_head=head)  # doctest: +SKIP
    >>> result.sparsity["all"]                                                    # doctest: +SKIP
    0.91
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from obstructlib.data import SizedDataset
from obstructlib.engine import ResumableLoop, resolve_device
from obstructlib.engine.distributed import shard_loader
from obstructlib.errors import ConfigError, check_min, check_range
from obstructlib.methods.ntp.steps import ADMMState, admm_init, admm_penalty, admm_step, paired_batches
from obstructlib.models import ImageClassifier
from obstructlib.primitives.feature_losses import fisher_ratio, gaussian_mmd
from obstructlib.primitives.pruning import (
    Masks,
    apply_masks_,
    init_masks,
    prunable_parameters,
    recalibrate_bn,
    sparsity_report,
)

LOSSES = ("ntp", "ntl-admm", "sparsity")

__all__ = [
    "LOSSES",
    "NTPConfig",
    "NTPResult",
    "nt_loss",
    "prune",
    "train_target_head",
]

_ModuleT = TypeVar("_ModuleT", bound=nn.Module)


@dataclass
class NTPConfig:
    """NTP's stage-1 and stage-2 settings; defaults are the official digits scripts' values.

    Attributes:
        loss: ``ntp`` (source CE - alpha * capped target CE + lambda * Fisher ratio), ``ntl-admm``
            (source CE - alpha * min(target CE, 3) * min(MMD, 1)) or ``sparsity`` (source CE only).
        alpha: weight of the negated, capped target CE R_T (scripts: 1 for digits, 0.1 CIFAR->STL).
        reg: lambda, weight of the Fisher ratio R_phiT (1e3, never overridden in the scripts).
        ce_cap: cap of the target CE in ``ntp`` (10; no gradient once CE_T exceeds it).
        ntl_ce_cap: cap of the target CE in ``ntl-admm`` (3).
        ntl_mmd_cap: cap of the MMD in ``ntl-admm`` (1).
        rho: ADMM penalty (0.005).
        gamma: L1 weight of g(Z); the Z-step threshold is gamma / rho (1e-4 / 0.005 = 0.02).
        squared_penalty: use ``||theta - Z + U||^2`` (textbook ADMM) instead of the official
            unsquared norm.
        lr: W-step Adam learning rate (1e-3; a fresh optimiser every ADMM iteration).
        weight_decay: W-step Adam weight decay (8e-4, hard-coded in the official code).
        epochs: W-step passes over the zipped (S, T) batches per ADMM iteration (20 for digits).
        batch_size: batch size of each domain (256).
        max_iters: at most this many ADMM iterations (100).
        min_iters: the stopping rule is checked only after this many (10).
        sparsity: stop once the share of pruned entries exceeds it, in (0, 1) (0.95). It is a
            stopping rule: the L1 Z-step does not hit it exactly and may overshoot.
        plateau_tol: also stop when the iteration's mean loss changes by less than this (1e-4).
        prune_bn: prune BatchNorm weights and biases too (official) and count them in the sparsity.
        recalibrate_bn: after pruning, re-estimate the BatchNorm running statistics on the owner's
            source images (no weight changes). Deviation: the official release keeps the
            statistics of the mixed S/T W-step batches, which costs source accuracy.
        fisher_eps: epsilon in the Fisher ratio's denominator (absent in the official code).
        head_epochs: stage-1 epochs of the target head on frozen features (10).
        head_lr: stage-1 Adam learning rate (1e-3).
        head_weight_decay: stage-1 Adam weight decay (8e-4).
        seed: seed of the batch order.
    """

    loss: str = "ntp"
    alpha: float = 1.0
    reg: float = 1e3
    ce_cap: float = 10.0
    ntl_ce_cap: float = 3.0
    ntl_mmd_cap: float = 1.0
    rho: float = 0.005
    gamma: float = 1e-4
    squared_penalty: bool = False
    lr: float = 1e-3
    weight_decay: float = 8e-4
    epochs: int = 20
    batch_size: int = 256
    max_iters: int = 100
    min_iters: int = 10
    sparsity: float = 0.95
    plateau_tol: float = 1e-4
    prune_bn: bool = True
    recalibrate_bn: bool = True
    fisher_eps: float = 1e-8
    head_epochs: int = 10
    head_lr: float = 1e-3
    head_weight_decay: float = 8e-4
    seed: int = 0

    def validate(self) -> None:
        """Raise a one-line :class:`ConfigError` for values outside their ranges."""
        if self.loss not in LOSSES:
            raise ConfigError(f"loss={self.loss!r}: use one of {', '.join(LOSSES)}")
        check_range("sparsity", self.sparsity, 0.0, 1.0, inclusive=False)
        check_min(self, ("alpha", "reg", "gamma", "weight_decay", "head_weight_decay", "plateau_tol", "fisher_eps"), 0)
        check_min(self, ("rho", "lr", "head_lr", "ce_cap", "ntl_ce_cap", "ntl_mmd_cap"), 0, strict=True)
        check_min(self, ("epochs", "batch_size", "max_iters", "head_epochs"))
        if not 0 <= self.min_iters <= self.max_iters:
            raise ConfigError(f"min_iters={self.min_iters}: use a value in [0, max_iters={self.max_iters}]")


@dataclass
class NTPResult:
    """What :func:`prune` returns (the model itself is pruned in place).

    Attributes:
        masks: boolean mask per pruned encoder tensor (name inside ``model.encoder``).
        history: one record per ADMM iteration (mean loss terms, sparsity).
        sparsity: :func:`~obstructlib.primitives.pruning.sparsity_report` of the final masks.
        stopped_by: ``"sparsity"``, ``"plateau"`` or ``"max_iters"``.
    """

    masks: Masks
    history: list[dict[str, float]] = field(default_factory=list)
    sparsity: dict[str, Any] = field(default_factory=dict)
    stopped_by: str = "max_iters"


def _frozen(module: _ModuleT) -> _ModuleT:
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


# ---- stage 1 ---------------------------------------------------------------------------------
def train_target_head(model: ImageClassifier, target_set: SizedDataset, cfg: NTPConfig,
                      device: torch.device | str | None, progress: bool = False) -> nn.Linear:
    """Stage 1: a copy of the source head trained on the frozen encoder's target features.

    The encoder runs once in eval mode to cache the features; the head then trains with Adam
    (``head_lr``, ``head_weight_decay``) for ``head_epochs`` and is returned frozen.

    Args:
        model: the source model (not changed).
        target_set: labelled target images ``(C, H, W)`` in [0, 1].
        cfg: stage-1 settings.
        device: where to compute.
        progress: show a bar.

    Returns:
        The frozen target head h_T, an ``nn.Linear`` like ``model.head``, on ``device``.
    """
    device = resolve_device(device)
    model.to(device).eval()
    feats, labels = [], []
    with torch.no_grad():
        for x, y in shard_loader(target_set, 512):
            feats.append(model.features(x.to(device)))
            labels.append(torch.as_tensor(y).to(device))
    f, y = torch.cat(feats), torch.cat(labels)
    num_classes = int(y.max()) + 1
    head = nn.Linear(model.num_features, num_classes).to(device)
    if num_classes == model.num_classes:  # the official code deep-copies h_S as the start
        head.load_state_dict(model.head.state_dict())
    opt = torch.optim.Adam(head.parameters(), lr=cfg.head_lr, weight_decay=cfg.head_weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    bs = min(cfg.batch_size, len(y))
    for _ in tqdm(range(cfg.head_epochs), desc="target head", disable=not progress, leave=False):
        order = torch.randperm(len(y), generator=gen).to(device)
        for i in range(0, len(y) - bs + 1, bs):
            idx = order[i:i + bs]
            loss = F.cross_entropy(head(f[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return _frozen(head)


# ---- stage 2 ---------------------------------------------------------------------------------
def nt_loss(model: ImageClassifier, target_head: nn.Module | None, xs: torch.Tensor, ys: torch.Tensor,
            xt: torch.Tensor, yt: torch.Tensor, cfg: NTPConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """The non-transferable task loss of one (source, target) batch pair.

    ``ntp``: ``CE_S - alpha * min(CE_T, ce_cap) + lambda * R_phiT(z_t)`` (R_T and R_phiT are the
    paper's heat-map axes); ``ntl-admm``: ``CE_S - alpha * min(CE_T, 3) * min(MMD(z_s, z_t), 1)``;
    ``sparsity``: ``CE_S``. z are L2-normalised encoder features; h_S is ``model.head``.

    Args:
        model: the model being pruned.
        target_head: the frozen h_T of stage 1 (None only for ``loss="sparsity"``).
        xs: source images ``(B, C, H, W)`` in [0, 1]; ys: their labels ``(B,)``.
        xt: target images; yt: their labels.
        cfg: loss weights and caps.

    Returns:
        ``(loss, parts)``: the differentiable loss and its terms as floats.
    """
    fs = model.features(xs)
    ce_s = F.cross_entropy(model.head(fs), ys)
    if cfg.loss == "sparsity":
        return ce_s, {"ce_s": ce_s.item()}
    if target_head is None:
        raise ConfigError(f"loss={cfg.loss!r} needs the target head of train_target_head: pass it")
    ft = model.features(xt)
    ce_t = F.cross_entropy(target_head(ft), yt)
    if cfg.loss == "ntp":
        r_t = torch.clamp(ce_t, max=cfg.ce_cap)  # min(CE_T, 10): the gradient vanishes above the cap
        r_phi = fisher_ratio(ft, yt, cfg.fisher_eps)
        loss = ce_s - cfg.alpha * r_t + cfg.reg * r_phi
        return loss, {"ce_s": ce_s.item(), "ce_t": ce_t.item(), "fisher": r_phi.item()}
    mmd = gaussian_mmd(F.normalize(fs.flatten(1), dim=1), F.normalize(ft.flatten(1), dim=1))
    loss = ce_s - cfg.alpha * torch.clamp(ce_t, max=cfg.ntl_ce_cap) * torch.clamp(mmd, max=cfg.ntl_mmd_cap)
    return loss, {"ce_s": ce_s.item(), "ce_t": ce_t.item(), "mmd": mmd.item()}


def prune(model: ImageClassifier, cfg: NTPConfig, *, source: SizedDataset, target: SizedDataset,
          target_head: nn.Module | None = None, device: torch.device | str | None = None,
          ckpt_dir: str | os.PathLike | None = None, progress: bool = True) -> NTPResult:
    """Stage 2: ADMM non-transferable pruning of ``model.encoder`` (in place).

    Each iteration: ``epochs`` W-step passes (Adam on theta of ``L_task + rho/2 sum ||theta - Z +
    U||``, then ``theta <- theta * M`` after every step), then :func:`admm_step` (Z, U, M). After
    ``min_iters`` iterations it stops once the sparsity exceeds ``cfg.sparsity`` or the mean loss
    changes by less than ``plateau_tol``. Both heads stay frozen. With ``ckpt_dir`` every
    iteration is checkpointed (weights, Z, U, masks, history) and a later call resumes.

    Args:
        model: the source model; its encoder is pruned in place, its head (h_S) is not trained.
        cfg: the settings.
        source: the S images used for pruning (the official code: a 10% subset).
        target: the T images used for pruning.
        target_head: the frozen h_T from :func:`train_target_head` (None only for ``loss="sparsity"``).
        device: where to compute.
        ckpt_dir: checkpoint directory (None: no checkpoints).
        progress: show a bar over the iterations.

    Returns:
        :class:`NTPResult`; the encoder ends as ``theta * M``.
    """
    source_set, target_set = source, target
    cfg.validate()
    if target_head is None and cfg.loss != "sparsity":
        raise ConfigError(f"loss={cfg.loss!r} needs the target head of train_target_head: pass it")
    device = resolve_device(device)
    model.to(device)
    _frozen(model.head)
    target_head = _frozen(target_head.to(device)) if target_head is not None else None
    encoder = model.encoder
    state = admm_init(encoder, init_masks(encoder, cfg.prune_bn))
    run = {"stopped_by": "max_iters"}
    loop = ResumableLoop(cfg.max_iters, ckpt_dir=ckpt_dir, model=model, config=cfg, history=[],
                         map_location=device, progress=progress, desc="ADMM",
                         extra=lambda: {"z": state.z, "u": state.u, "masks": state.masks, **run})
    if loop.resumed:
        extra = loop.resumed
        state = ADMMState(z=extra["z"], u=extra["u"], masks={k: v.bool() for k, v in extra["masks"].items()})
        run["stopped_by"] = extra["stopped_by"]
    history: list[dict[str, float]] = loop.history  # type: ignore[assignment]
    if run["stopped_by"] != "max_iters":
        loop.stop()  # a resumed run that had already converged
    key = "all" if cfg.prune_bn else "weights"
    params = list(prunable_parameters(encoder, cfg.prune_bn).values())
    for it in loop:
        encoder.train()
        opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        sums: dict[str, float] = {}
        steps = 0
        for epoch in range(cfg.epochs):
            batches = paired_batches(source_set, target_set, cfg.batch_size, cfg.seed, it * cfg.epochs + epoch)
            for xs, ys, xt, yt in batches:
                xs, ys, xt, yt = xs.to(device), ys.to(device), xt.to(device), yt.to(device)
                loss, parts = nt_loss(model, target_head, xs, ys, xt, yt, cfg)
                total = loss + admm_penalty(encoder, state, cfg.rho, cfg.squared_penalty)
                opt.zero_grad(set_to_none=True)
                total.backward()
                opt.step()
                apply_masks_(encoder, state.masks)  # pruned weights stay zero after every step
                for k, v in {"loss": loss.item(), **parts}.items():
                    sums[k] = sums.get(k, 0.0) + v
                steps += 1
        admm_step(encoder, state, cfg.rho, cfg.gamma)
        rep = sparsity_report(encoder, state.masks)
        record = {"iteration": it + 1, **{k: v / max(steps, 1) for k, v in sums.items()},
                  "sparsity": rep["all"], "sparsity_weights": rep["weights"]}
        loop.log(record)
        if it + 1 > cfg.min_iters:
            if rep[key] > cfg.sparsity:
                run["stopped_by"] = "sparsity"
            elif len(history) > 1 and abs(history[-1]["loss"] - history[-2]["loss"]) < cfg.plateau_tol:
                run["stopped_by"] = "plateau"
        if run["stopped_by"] != "max_iters":
            loop.stop()
    stopped_by = run["stopped_by"]
    apply_masks_(encoder, state.masks)
    if cfg.recalibrate_bn:
        recalibrate_bn(model, source_set, device)
    encoder.eval()
    return NTPResult(masks=state.masks, history=history, sparsity=sparsity_report(encoder, state.masks),
                     stopped_by=stopped_by)
