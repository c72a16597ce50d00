"""LTO's attribute variant: one binary CLIP classifier per attribute, one attribute obstructed.

Each attribute a has a negative and a positive prompt ("a photo of a person not wearing
eyeglasses" / "... wearing eyeglasses"); its logits are ``exp(logit_scale) * cos(image, prompt)``
over the two prompts. The attacker fine-tunes CLIP (the CE learner: image tower and token
embedding) on the sum over attributes of their 2-way cross-entropies (spec 2.6). Obstruction ascends
the restricted attribute's CE and descends the mean CE of the others, at the weights the learner
reached; the metric is each attribute's AUROC (x100) of the positive-prompt probability, and the
collateral matrix (:func:`~obstructlib.metrics.collateral_matrix`) shows which other attributes
fell with the obstructed one.

References:
    Zheng et al., Learning to Obstruct, arXiv:2409.19210 (the CelebA experiment, its Fig. 6).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from obstructlib.engine import autocast
from obstructlib.errors import ConfigError
from obstructlib.methods.lto.learners import LearnerConfig, model_device, training_only, visual_parameters
from obstructlib.metrics.attributes import auroc_per_attribute
from obstructlib.primitives.augment import resized_crop_flip

__all__ = ["AttributeTask", "attack_attributes", "attribute_logits", "fit_attributes"]


def _prompt_embeddings(model: Any, prompts: Sequence[tuple[str, str]], device: Any) -> torch.Tensor:
    """``(A, 2, D)`` normalised embeddings of each attribute's (negative, positive) prompt."""
    texts = [t for pair in prompts for t in pair]
    return model.encode_text(model.tokenize(texts, device)).float().view(len(prompts), 2, -1)


def attribute_logits(model: Any, images: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """``(B, A, 2)`` logits of images in [0, 1] against the ``(A, 2, D)`` prompt embeddings."""
    feats = model.encode_image(images).float()
    return model.logit_scale.exp().float() * torch.einsum("bd,akd->bak", feats, text)


def _attribute_ce(logits: torch.Tensor, attrs: torch.Tensor) -> torch.Tensor:
    """``(B, A)`` per-sample, per-attribute 2-way cross-entropy."""
    b, a, _ = logits.shape
    return F.cross_entropy(logits.reshape(b * a, 2), attrs.reshape(-1).long(), reduction="none").view(b, a)


def fit_attributes(model: Any, images: torch.Tensor, attrs: torch.Tensor, prompts: Sequence[tuple[str, str]],
                   cfg: LearnerConfig, *, generator: torch.Generator, device: Any = None) -> None:
    """The CE learner on attribute data (in place): AdamW on the image tower's non-BN parameters and
    the token embedding, loss = sum over attributes of their 2-way CE, cosine schedule, frozen BN.

    Args:
        model: a :class:`~obstructlib.models.ClipModel`.
        images: ``(N, C, H, W)`` in [0, 1].
        attrs: ``(N, A)`` 0/1 attribute labels.
        prompts: the A (negative, positive) prompt pairs.
        cfg: the learner's recipe (epochs, batch size, rates).
        generator: batch order and augmentation.
        device: where to compute.
    """
    device = model_device(model, device)
    if attrs.shape[1] != len(prompts):
        raise ConfigError(f"{attrs.shape[1]} attribute columns but {len(prompts)} prompt pairs: give one pair each")
    total = cfg.epochs * math.ceil(len(images) / cfg.batch_size)
    if total == 0:
        return
    groups: list[dict[str, Any]] = [{"params": [p for _, p in visual_parameters(model)], "lr": cfg.lr_visual}]
    if cfg.token_lr_scale > 0:
        groups.append({"params": [model.token_embedding.weight], "lr": cfg.lr_visual * cfg.token_lr_scale})
    for g in groups:
        g["initial_lr"] = g["lr"]
    opt = torch.optim.AdamW(groups, eps=cfg.eps)
    with training_only(model, groups):
        step = 0
        for _ in range(cfg.epochs):
            order = torch.randperm(len(images), generator=generator)
            for start in range(0, len(images), cfg.batch_size):
                idx = order[start:start + cfg.batch_size]
                for g in opt.param_groups:
                    g["lr"] = g["initial_lr"] * 0.5 * (1 + math.cos(math.pi * step / total))
                x = resized_crop_flip(images[idx].cpu(), generator, cfg.min_crop).to(device)
                with autocast(device):
                    text = _prompt_embeddings(model, prompts, device)
                    loss = _attribute_ce(attribute_logits(model, x, F.normalize(text, dim=-1)),
                                         attrs[idx].to(device)).sum(dim=1).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
        opt.zero_grad(set_to_none=True)


@torch.no_grad()
def _positive_probs(model: Any, images: torch.Tensor, prompts: Sequence[tuple[str, str]], device: Any,
                    batch_size: int = 500) -> np.ndarray:
    model.eval()
    text = F.normalize(_prompt_embeddings(model, prompts, device), dim=-1)
    out = []
    for start in range(0, len(images), batch_size):
        with autocast(device):
            logits = attribute_logits(model, images[start:start + batch_size].to(device), text)
        out.append(logits.float().softmax(dim=-1)[..., 1].cpu())
    return torch.cat(out).numpy()


def attack_attributes(model: Any, train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor],
                      prompts: Sequence[tuple[str, str]], learner: LearnerConfig, *, restricted: int, seed: int,
                      device: Any = None) -> dict[str, Any]:
    """The attacker on a copy of ``model``: the attribute learner on its data, then AUROC per attribute.

    Returns:
        ``{"acc_r": AUROC of the restricted attribute, "acc_o": mean AUROC of the others,
        "auroc": per-attribute list, "seconds"}`` (AUROC x100; named ``acc_*`` so that
        :func:`~obstructlib.metrics.drop_ratio_at` reads the trajectory as it reads accuracies).
    """
    t0 = time.perf_counter()
    device = model_device(model, device)
    attacker = copy.deepcopy(model)
    fit_attributes(attacker, train[0], train[1], prompts, learner, generator=torch.Generator().manual_seed(seed),
                   device=device)
    auroc = auroc_per_attribute(_positive_probs(attacker, test[0], prompts, device), test[1].numpy())
    others = [a for a in range(len(prompts)) if a != restricted]
    return {"acc_r": float(auroc[restricted]), "acc_o": float(np.mean(auroc[others])), "auroc": auroc.tolist(),
            "seconds": time.perf_counter() - t0}


@dataclass
class AttributeTask:
    """The attribute variant's side of :func:`~obstructlib.methods.lto.obstruct`.

    Each outer step splits the defender's pool at random into a task set (``task_size`` images: the
    inner run, the CE learner for ``learner.epochs``) and an obstruction set (``obs_size``); its losses
    are the restricted attribute's CE (one per image, the R side) and the other attributes' CEs
    (``A - 1`` per image, the R' side), so the loop's two means are L_R and L_O of spec 2.6.

    Args:
        model: the CLIP to obstruct (in place).
        images / attrs: the defender's pool, ``(N, C, H, W)`` in [0, 1] and ``(N, A)`` 0/1.
        prompts: the A (negative, positive) prompt pairs.
        restricted: the obstructed attribute's column.
        learner: the defender's recipe (1 epoch).
        task_size / obs_size: images per split (the official 1,000 / 1,000).
        device: where to compute.
    """

    model: Any
    images: torch.Tensor
    attrs: torch.Tensor
    prompts: Sequence[tuple[str, str]]
    restricted: int
    learner: LearnerConfig
    task_size: int = 1000
    obs_size: int = 1000
    device: Any = None

    def __post_init__(self) -> None:
        self.device = model_device(self.model, self.device)
        if not 0 <= self.restricted < len(self.prompts):
            raise ConfigError(f"restricted attribute {self.restricted} is not among the {len(self.prompts)} attributes")
        if self.task_size + self.obs_size > len(self.images):
            raise ConfigError(f"task_size + obs_size = {self.task_size + self.obs_size} > the pool's {len(self.images)}"
                              " images: lower them")

    def parameters(self, scope: str) -> list[tuple[str, nn.Parameter]]:
        named = visual_parameters(self.model)
        if scope == "visual+token":
            named.append(("token_embedding.weight", self.model.token_embedding.weight))
        return named

    def sample(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        order = torch.randperm(len(self.images), generator=generator)
        return order[:self.task_size], order[self.task_size:self.task_size + self.obs_size]

    def adapt(self, task: tuple[torch.Tensor, torch.Tensor], generator: torch.Generator, inner: bool) -> None:
        if inner:
            fit_attributes(self.model, self.images[task[0]], self.attrs[task[0]], self.prompts, self.learner,
                           generator=generator, device=self.device)

    def losses(self, state: Any, task: tuple[torch.Tensor, torch.Tensor],
               generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        obs = task[1]
        self.model.eval()
        text = F.normalize(_prompt_embeddings(self.model, self.prompts, self.device), dim=-1)
        with autocast(self.device):
            ce = _attribute_ce(attribute_logits(self.model, self.images[obs].to(self.device), text),
                               self.attrs[obs].to(self.device))
        others = [a for a in range(len(self.prompts)) if a != self.restricted]
        losses = torch.cat([ce[:, self.restricted], ce[:, others].reshape(-1)])
        mask = torch.cat([torch.ones(len(obs), dtype=torch.bool),
                          torch.zeros(len(obs) * len(others), dtype=torch.bool)])
        return losses, mask
