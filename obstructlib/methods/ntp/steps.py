"""Building blocks of Non-Transferable Pruning: the ADMM pieces and the zipped (S, T) batches.

- ADMM (split ``theta = Z``, scaled dual ``U``): :func:`admm_init`, :func:`admm_penalty`
  (the W-step's proximity term) and :func:`admm_step` (the Z-step, an L1 proximal step
  ``soft_threshold(theta + U, gamma / rho)``, the dual update and the monotone mask update).
- :func:`paired_batches`: one epoch of zipped, shuffled source and target batches.

Masks live in :mod:`obstructlib.primitives.pruning` and the loss terms (the Fisher ratio, the
Gaussian MMD) in :mod:`obstructlib.primitives.feature_losses`: both are shared with other papers.

References:
    Ding et al., Non-transferable Pruning, ECCV 2024, arXiv:2410.08015.
    Boyd et al., Distributed Optimization and Statistical Learning via ADMM, 2011 (scaled form).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from obstructlib.data import SizedDataset
from obstructlib.engine import epoch_loader
from obstructlib.errors import ConfigError
from obstructlib.primitives.pruning import Masks

__all__ = ["ADMMState", "admm_init", "admm_penalty", "admm_step", "paired_batches", "soft_threshold"]



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


def _device(module: nn.Module) -> torch.device:
    return next((p.device for p in module.parameters()), torch.device("cpu"))


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
        >>> [round(v, 6) for v in soft_threshold(torch.tensor([-0.5, -0.01, 0.0, 0.02, 0.3]), 0.02).tolist()]
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


# ---- data ------------------------------------------------------------------------------------
def paired_batches(source: SizedDataset, target: SizedDataset, batch_size: int, seed: int,
                   epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """One epoch of zipped, shuffled (source, target) batches; the order depends on ``(seed, epoch)`` only.

    As in the official code, the zip stops at the shorter loader and the larger batch is
    truncated to the smaller one (spec section 2.4), so an "epoch" is ``min(#S, #T) // batch`` steps.

    Shape:
        yields ``(xs (B, C, H, W), ys (B,), xt (B, C, H', W'), yt (B,))``.
    """
    bs = min(batch_size, len(source), len(target))
    s = epoch_loader(source, bs, seed=seed, epoch=epoch)
    t = epoch_loader(target, bs, seed=seed + 7919, epoch=epoch)
    for (xs, ys), (xt, yt) in zip(s, t):
        n = min(len(ys), len(yt))
        yield xs[:n], torch.as_tensor(ys)[:n], xt[:n], torch.as_tensor(yt)[:n]
