"""Building blocks of Non-Transferable Pruning: masks, the ADMM pieces and the two loss terms.

- masks: one binary tensor per prunable encoder parameter (convolution weights and, as in the
  official code, BatchNorm weights and biases), keyed by the parameter's name inside
  ``model.encoder``; :func:`apply_masks_` enforces them after an optimiser step,
  :func:`mask_parametrize` makes them part of the forward pass (``weight * mask``) so that no
  fine-tuning recipe can regrow a pruned weight; :func:`sparsity_report` counts zeros with and
  without the BatchNorm tensors.
- ADMM (split ``theta = Z``, scaled dual ``U``): :func:`admm_init`, :func:`admm_penalty`
  (the W-step's proximity term) and :func:`admm_step` (the Z-step, an L1 proximal step
  ``soft_threshold(theta + U, gamma / rho)``, the dual update and the monotone mask update).
- losses: :func:`fisher_ratio` (the Fisher-space discriminative regulariser R_phiT on
  L2-normalised target features) and :func:`gaussian_mmd` (the multi-kernel MMD of the NTL-style
  ablation and of NTL itself).

References:
    Ding et al., Non-transferable Pruning, ECCV 2024, arXiv:2410.08015.
    Boyd et al., Distributed Optimization and Statistical Learning via ADMM, 2011 (scaled form).
    Shao et al., Not All Models Are Equal (SFDA), arXiv:2207.03036 (the Fisher criterion).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torch.nn.utils import parametrize

from obstructlib.engine import epoch_loader
from obstructlib.errors import ConfigError

Masks = dict[str, torch.Tensor]

__all__ = [
    "ADMMState",
    "Masks",
    "admm_init",
    "admm_penalty",
    "admm_step",
    "apply_masks_",
    "fisher_ratio",
    "gaussian_mmd",
    "init_masks",
    "mask_parametrize",
    "paired_batches",
    "prunable_parameters",
    "recalibrate_bn",
    "remove_mask_parametrize",
    "soft_threshold",
    "sparsity_report",
]


# ---- masks -----------------------------------------------------------------------------------
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


def sparsity_report(encoder: nn.Module, masks: Masks) -> dict[str, object]:
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
            for attr in list(module.parametrizations.keys()):
                parametrize.remove_parametrizations(module, attr, leave_parametrized=True)
    return encoder


def _device(module: nn.Module) -> torch.device:
    return next((p.device for p in module.parameters()), torch.device("cpu"))


# ---- ADMM ------------------------------------------------------------------------------------
@dataclass
class ADMMState:
    """The ADMM variables per pruned tensor: ``z`` (sparse copy), ``u`` (scaled dual), ``masks``."""

    z: dict[str, torch.Tensor] = field(default_factory=dict)
    u: dict[str, torch.Tensor] = field(default_factory=dict)
    masks: Masks = field(default_factory=dict)


@torch.no_grad()
def admm_init(encoder: nn.Module, masks: Masks) -> ADMMState:
    """``Z <- theta``, ``U <- 0`` for every masked tensor."""
    params = dict(encoder.named_parameters())
    return ADMMState(z={n: params[n].detach().clone() for n in masks},
                     u={n: torch.zeros_like(params[n]) for n in masks},
                     masks={n: m.clone() for n, m in masks.items()})


def admm_penalty(encoder: nn.Module, state: ADMMState, rho: float, squared: bool = False) -> torch.Tensor:
    """The W-step's proximity term ``rho/2 * sum_l ||theta_l - Z_l + U_l||`` (differentiable in theta).

    Args:
        encoder: the encoder being pruned.
        state: current Z and U.
        rho: ADMM penalty (0.005 in the digits scripts).
        squared: use the textbook squared Frobenius norm ``||.||^2`` (Boyd et al.). The official
            code uses the plain norm (``squared=False``), whose gradient has magnitude rho/2 per
            tensor whatever the distance; both are offered.
    """
    params = dict(encoder.named_parameters())
    total = torch.zeros((), device=_device(encoder))
    for name in state.z:
        diff = params[name] - state.z[name] + state.u[name]
        total = total + (diff.pow(2).sum() if squared else torch.linalg.vector_norm(diff))
    return 0.5 * rho * total


def soft_threshold(x: torch.Tensor, delta: float) -> torch.Tensor:
    """The L1 proximal operator ``sign(x) * max(|x| - delta, 0)``: shrinks by ``delta``, zeros ``|x| <= delta``.

    Example:
        >>> soft_threshold(torch.tensor([-0.5, -0.01, 0.0, 0.02, 0.3]), 0.02).tolist()
        [-0.48, -0.0, 0.0, 0.0, 0.28]
    """
    if delta < 0:
        raise ConfigError(f"delta={delta}: the threshold gamma/rho must be >= 0")
    return torch.sign(x) * torch.clamp(x.abs() - delta, min=0.0)


@torch.no_grad()
def admm_step(encoder: nn.Module, state: ADMMState, rho: float, gamma: float) -> ADMMState:
    """One Z-step, U-step and mask update (after a W-step), in place on ``state``.

    - Z-step, the proximal step of ``g(Z) = gamma * ||Z||_1``:
      ``Z <- soft_threshold((theta + U) * M, gamma / rho)``.
    - U-step (scaled dual ascent): ``U <- U + theta - Z``.
    - mask: ``M <- M and (Z != 0)``; Z is computed from masked values, so once pruned, always
      pruned (the masks only shrink).

    Args:
        encoder: the encoder after its W-step.
        state: Z, U and masks (updated in place and returned).
        rho: ADMM penalty.
        gamma: L1 weight (1e-4 hard-coded in the official code; threshold gamma/rho = 0.02).
    """
    if rho <= 0:
        raise ConfigError(f"rho={rho}: the ADMM penalty must be > 0")
    params = dict(encoder.named_parameters())
    for name, mask in state.masks.items():
        theta = params[name].detach()
        m = mask.to(theta.dtype)
        z = soft_threshold((theta + state.u[name]) * m, gamma / rho)
        state.u[name] = state.u[name] + theta - z
        state.z[name] = z
        state.masks[name] = mask & (z != 0)
    return state


# ---- loss terms ------------------------------------------------------------------------------
def fisher_ratio(features: torch.Tensor, labels: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Fisher-space discriminative regulariser R_phiT = S_b / S_w on L2-normalised features.

    With ``z_i = f_i / ||f_i||``, ``mu_c`` the mean of class c and ``mu_bar`` the unweighted mean
    of the class means:

    - within-class scatter ``S_w = sum_c mean_{i in c, d} (z_id - mu_cd)^2``;
    - between-class scatter ``S_b = mean_{c, d} (mu_cd - mu_bar_d)^2``.

    Minimising it pulls the target class means together relative to their spread, so target
    features lose linear separability. Fixes to the official code (which hard-coded 10 classes
    and a (C, 7, 7) zero mean for absent classes, crashing on 1x1 features, with no epsilon):
    any number of classes, only the classes present in the batch enter both sums, and ``eps``
    keeps the ratio finite when every class is a single point.

    Args:
        features: ``(B, ...)`` encoder outputs (flattened to ``(B, D)``).
        labels: ``(B,)`` integer classes.
        eps: added to ``S_w``.

    Returns:
        Scalar tensor >= 0 (0 when fewer than two classes are present).

    Example:
        >>> z = torch.tensor([[1., 0.], [1., 0.], [0., 1.], [0., 1.]])
        >>> float(fisher_ratio(z, torch.tensor([0, 0, 1, 1]), eps=1.0))
        0.25
    """
    z = F.normalize(features.flatten(1).float(), dim=1)
    labels = labels.reshape(-1).to(z.device)
    if labels.shape[0] != z.shape[0]:
        raise ConfigError(f"{z.shape[0]} features but {labels.shape[0]} labels: pass one label per sample")
    classes, inverse = torch.unique(labels, return_inverse=True)
    counts = torch.bincount(inverse, minlength=len(classes)).to(z.dtype)
    means = torch.zeros(len(classes), z.shape[1], device=z.device, dtype=z.dtype).index_add_(0, inverse, z)
    means = means / counts[:, None]
    # per class: mean over its samples and the feature dimensions, then a sum over classes
    sq = (z - means[inverse]).pow(2).mean(1)
    s_w = (torch.zeros(len(classes), device=z.device, dtype=z.dtype).index_add_(0, inverse, sq) / counts).sum()
    s_b = (means - means.mean(0, keepdim=True)).pow(2).mean()
    return s_b / (s_w + eps)


def gaussian_mmd(x: torch.Tensor, y: torch.Tensor, num_kernels: int = 5, kernel_mul: float = 2.0) -> torch.Tensor:
    """Biased multi-kernel Gaussian MMD^2 between two feature batches (DAN / NTL style).

    The bandwidths are ``b * kernel_mul**k`` for ``k`` in ``-(num_kernels // 2) ..``, ``b`` the
    mean pairwise squared distance of the pooled batch (detached), as in the NTL code.

    Shape:
        ``x``: ``(N, ...)``, ``y``: ``(M, ...)`` -> scalar.
    """
    x, y = x.flatten(1).float(), y.flatten(1).float()
    pooled = torch.cat([x, y])
    d2 = torch.cdist(pooled, pooled).pow(2)
    n = pooled.shape[0]
    base = d2.detach().sum() / max(n * n - n, 1)
    base = base / kernel_mul ** (num_kernels // 2)
    kernel = sum(torch.exp(-d2 / (base * kernel_mul**k + 1e-12)) for k in range(num_kernels))
    nx = x.shape[0]
    return kernel[:nx, :nx].mean() + kernel[nx:, nx:].mean() - 2 * kernel[:nx, nx:].mean()


# ---- data ------------------------------------------------------------------------------------
def paired_batches(source: Dataset, target: Dataset, batch_size: int, seed: int,
                   epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """One epoch of zipped, shuffled (source, target) batches; the order depends on ``(seed, epoch)`` only.

    As in the official code, the zip stops at the shorter loader and the larger batch is
    truncated to the smaller one (spec section 2.4), so an "epoch" is ``min(#S, #T) // batch`` steps.

    Shape:
        yields ``(xs (B, C, H, W), ys (B,), xt (B, C, H', W'), yt (B,))``.
    """
    bs = min(batch_size, len(source), len(target))  # type: ignore[arg-type]
    s = epoch_loader(source, bs, seed=seed, epoch=epoch)
    t = epoch_loader(target, bs, seed=seed + 7919, epoch=epoch)
    for (xs, ys), (xt, yt) in zip(s, t):
        n = min(len(ys), len(yt))
        yield xs[:n], torch.as_tensor(ys)[:n], xt[:n], torch.as_tensor(yt)[:n]


@torch.no_grad()
def recalibrate_bn(model: nn.Module, dataset: Dataset, device: torch.device | str, batch_size: int = 256) -> nn.Module:
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
    for x, _ in DataLoader(dataset, batch_size=batch_size):
        model(x.to(device))
    for m, momentum in zip(bns, saved):
        m.momentum = momentum
    return model.eval()
