"""Pruning masks shared by the model-side papers: build, enforce, parametrise, count, and prune by magnitude.

A mask is one boolean tensor per prunable parameter (convolution weights and, as in NTP's official
code, BatchNorm weights and biases), keyed by the parameter's name inside the pruned module
(``model.encoder``). :func:`apply_masks_` enforces masks after an optimiser step;
:func:`mask_parametrize` makes them part of the forward pass (``weight * mask``) so that no
fine-tuning recipe can regrow a pruned weight; :func:`sparsity_report` counts zeros with and
without the BatchNorm tensors; :func:`magnitude_masks` is global magnitude pruning;
:func:`recalibrate_bn` recomputes BatchNorm statistics after pruning.

References:
    Ding et al., Non-transferable Pruning, ECCV 2024, arXiv:2410.08015.
    Han et al., Learning both Weights and Connections for Efficient Neural Networks, arXiv:1506.02626.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.utils.data import DataLoader, Dataset

from obstructlib.data import SizedDataset
from obstructlib.errors import ConfigError, check_range

Masks = dict[str, torch.Tensor]

__all__ = [
    "Masks",
    "apply_masks_",
    "init_masks",
    "magnitude_masks",
    "mask_parametrize",
    "prunable_parameters",
    "recalibrate_bn",
    "remove_mask_parametrize",
    "sparsity_report",
]


def prunable_parameters(encoder: nn.Module, include_bn: bool = True) -> dict[str, nn.Parameter]:
    """The encoder tensors NTP prunes: every trainable one (official code), or only weights of rank >= 2.

    Args:
        encoder: ``model.encoder`` of an :class:`~obstructlib.models.ImageClassifier`.
        include_bn: also prune 1-D tensors (BatchNorm weights and biases, conv biases). Zeroing a
            BatchNorm weight silences a channel, so part of the sparsity is then structured.
    """
    return {name: p for name, p in encoder.named_parameters()
            if p.requires_grad and (include_bn or p.ndim >= 2)}


def init_masks(encoder: nn.Module, include_bn: bool = True) -> Masks:
    """All-ones masks for :func:`prunable_parameters` (nothing pruned yet)."""
    return {name: torch.ones_like(p, dtype=torch.bool)
            for name, p in prunable_parameters(encoder, include_bn).items()}


@torch.no_grad()
def apply_masks_(encoder: nn.Module, masks: Masks) -> None:
    """``theta <- theta * M`` in place, for every masked encoder parameter (after each optimiser step)."""
    params = dict(encoder.named_parameters())
    for name, mask in masks.items():
        if name not in params:
            raise ConfigError(f"mask {name!r} names no parameter of the encoder: masks belong to another model")
        params[name].mul_(mask.to(params[name].device, params[name].dtype))


def sparsity_report(encoder: nn.Module, masks: Masks) -> dict[str, Any]:
    """Share of pruned entries, over all encoder parameters and over weights of rank >= 2 only.

    Unmasked parameters count as dense. Parameters are looked up by name, so the encoder may be
    parametrised (:func:`mask_parametrize`) or not.

    Returns:
        ``{"all": share in [0, 1], "weights": share over rank >= 2 tensors, "layers": {name: share}}``.

    Example:
        >>> enc = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
        >>> m = init_masks(enc); m["0.weight"][0] = False
        >>> sparsity_report(enc, m)["weights"]
        0.5
    """
    shapes = {_plain_name(n): p.shape for n, p in encoder.named_parameters()}
    total = zeros = w_total = w_zeros = 0
    layers = {}
    for name, shape in shapes.items():
        n = int(torch.Size(shape).numel())
        z = int((~masks[name]).sum()) if name in masks else 0
        total, zeros = total + n, zeros + z
        if len(shape) >= 2:
            w_total, w_zeros = w_total + n, w_zeros + z
        if name in masks:
            layers[name] = z / max(n, 1)
    return {"all": zeros / max(total, 1), "weights": w_zeros / max(w_total, 1), "layers": layers}


def _plain_name(name: str) -> str:
    # "body.0.parametrizations.weight.original" -> "body.0.weight"
    return name.replace(".parametrizations.", ".").removesuffix(".original")


class _MaskProduct(nn.Module):
    """Parametrisation ``weight -> weight * mask`` (the mask is a non-trainable buffer)."""

    mask: torch.Tensor

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask.to(torch.float32))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.mask.to(weight.dtype)


def mask_parametrize(encoder: nn.Module, masks: Masks) -> nn.Module:
    """Make the masks part of the forward pass: every masked tensor becomes ``original * mask``.

    The gradient of a pruned entry is then zero and its effective value stays exactly zero
    under any optimiser (weight decay included), so the mask-preserving attack can reuse the
    ordinary :func:`~obstructlib.engine.fit_classifier` loop. (The official code's masked forward
    looked masks up under the wrong keys and relied on re-zeroing after every step.)

    Args:
        encoder: the encoder to change in place; its weights are zeroed where masked first.
        masks: from :func:`init_masks` / pruning.

    Returns:
        ``encoder``, parametrised.
    """
    apply_masks_(encoder, masks)
    modules = dict(encoder.named_modules())
    for name, mask in masks.items():
        owner, _, attr = name.rpartition(".")
        parametrize.register_parametrization(modules[owner], attr, _MaskProduct(mask.to(_device(encoder))))
    return encoder


def remove_mask_parametrize(encoder: nn.Module) -> nn.Module:
    """Bake the masks into plain parameters (zeros stay zeros, but may now regrow)."""
    for module in encoder.modules():
        if parametrize.is_parametrized(module):
            # register_parametrization keeps them in a ModuleDict (typed Tensor | Module via __getattr__)
            parametrizations = cast(nn.ModuleDict, module.parametrizations)
            for attr in list(parametrizations.keys()):
                parametrize.remove_parametrizations(module, attr, leave_parametrized=True)
    return encoder


def _device(module: nn.Module) -> torch.device:
    return next((p.device for p in module.parameters()), torch.device("cpu"))


@torch.no_grad()
def magnitude_masks(encoder: nn.Module, sparsity: float, include_bn: bool = True) -> Masks:
    """Global magnitude pruning: keep the largest ``1 - sparsity`` share of |theta| over the prunable tensors."""
    check_range("sparsity", sparsity, 0.0, 1.0, inclusive=False)
    params = prunable_parameters(encoder, include_bn)
    flat = torch.cat([p.detach().abs().flatten() for p in params.values()])
    k = int(round(sparsity * flat.numel()))
    threshold = torch.kthvalue(flat.cpu(), k).values.item() if k > 0 else -1.0
    return {n: p.detach().abs() > threshold for n, p in params.items()}



@torch.no_grad()
def recalibrate_bn(
    model: nn.Module, dataset: SizedDataset, device: torch.device | str, batch_size: int = 256
) -> nn.Module:
    """Recompute every BatchNorm's running mean and variance on ``dataset`` (weights untouched).

    Statistics are the exact average over the batches (``momentum=None``); the model ends in eval mode.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return model.eval()
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    # DataLoader takes any map-style dataset; torch annotates it with its Dataset
    for x, _ in DataLoader(cast(Dataset, dataset), batch_size=batch_size):
        model(x.to(device))
    for m, momentum in zip(bns, saved):
        m.momentum = momentum
    return model.eval()
