"""The second-order option of the obstruction loop: differentiate through the unrolled inner run.

The first-order loop (:func:`~obstructlib.methods.lto.obstruct` with ``order=1``, the paper's and
the official code's) takes g_R and g_O at the adapted weights theta' and applies them to theta, as
if d theta' / d theta were the identity. With ``order=2`` the inner run is written as a function of
theta, ``theta' = theta - a grad L_fsc(theta) - ...`` (``inner_steps`` plain-SGD steps at
``inner_lr``), run through :func:`torch.func.functional_call` so that the live parameters are
never written, and g_R, g_O are the exact gradients of the obstruction losses at theta' with
respect to theta, Hessian-vector products included (Finn et al., arXiv:1703.03400, eq. 1).

The unrolled graph holds every inner step, so this is for small models (the offline tiny CLIP,
a toy); the inner learner is plain SGD, not the first-order loop's AdamW recipe.

References:
    Zheng et al., Learning to Obstruct, arXiv:2409.19210 (spec 1.2: first-order in the paper).
    Finn et al., Model-Agnostic Meta-Learning, arXiv:1703.03400.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel

from obstructlib.methods.lto.method import split_gradients

__all__ = ["call_with", "unrolled_gradients", "unrolled_losses"]


class _Apply(nn.Module):
    """``forward(fn) = fn(model)``: lets :func:`functional_call` run any code that uses the model."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, fn: Callable[[nn.Module], Any]) -> Any:
        return fn(self.model)


def call_with(model: nn.Module, weights: dict[str, torch.Tensor], fn: Callable[[nn.Module], Any]) -> Any:
    """``fn(model)`` with the named parameters replaced by ``weights`` (the model itself is not written).

    Example:
        >>> lin = nn.Linear(1, 1, bias=False)
        >>> float(call_with(lin, {"weight": torch.tensor([[3.0]])}, lambda m: m(torch.ones(1, 1))))
        3.0
    """
    return functional_call(_Apply(model), {f"model.{k}": v for k, v in weights.items()}, (fn,), strict=False)


def unrolled_losses(model: nn.Module, trained: Sequence[nn.Parameter],
                    inner_loss: Callable[[nn.Module, int], torch.Tensor],
                    obs_losses: Callable[[nn.Module], tuple[torch.Tensor, torch.Tensor]],
                    steps: int, lr: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The obstruction losses at ``theta' = SGD^steps(theta)``, differentiable with respect to theta.

    Args:
        model: the module whose parameters are theta (left unchanged).
        trained: the parameters of ``model`` the inner run trains.
        inner_loss: ``(model, step) -> scalar`` the learner's loss at inner step ``step``.
        obs_losses: ``model -> (per-sample losses, restricted mask)`` on the obstruction set.
        steps: inner SGD steps (0: the losses at theta, the NoF losses).
        lr: the inner SGD rate.

    Returns:
        ``(per-sample losses, restricted mask)`` whose graph runs through every inner step.
    """
    names = {id(p): n for n, p in model.named_parameters()}
    if any(id(p) not in names for p in trained):
        raise ValueError("the trained parameters must be parameters of the model")
    fast: dict[str, torch.Tensor] = {names[id(p)]: p for p in trained}
    with sdpa_kernel([SDPBackend.MATH]):  # the fused attention kernels have no double backward
        for step in range(steps):
            loss = call_with(model, fast, functools.partial(_at_step, inner_loss, step))
            grads = torch.autograd.grad(loss, list(fast.values()), create_graph=True, allow_unused=True)
            fast = {n: w if g is None else w - lr * g for (n, w), g in zip(fast.items(), grads)}
        return call_with(model, fast, obs_losses)


def unrolled_gradients(model: nn.Module, obstructed: Sequence[nn.Parameter], trained: Sequence[nn.Parameter],
                       inner_loss: Callable[[nn.Module, int], torch.Tensor],
                       obs_losses: Callable[[nn.Module], tuple[torch.Tensor, torch.Tensor]],
                       steps: int, lr: float,
                       ) -> tuple[list[torch.Tensor], list[torch.Tensor], dict[str, float]]:
    """g_R and g_O at ``theta' = SGD^steps(theta)`` with respect to the obstructed ``theta``, exactly.

    :func:`unrolled_losses`, then :func:`~obstructlib.methods.lto.method.split_gradients` on
    ``obstructed`` (P, the parameters the outer step updates; it may hold parameters the inner
    run does not train: they then enter the inner losses but are not stepped).

    Returns:
        ``(g_R, g_O, {"loss_r", "loss_o"})``, gradients in the order of ``obstructed``.
    """
    names = {id(p) for p in model.parameters()}
    if any(id(p) not in names for p in obstructed):
        raise ValueError("the obstructed and trained parameters must be parameters of the model")
    losses, restricted = unrolled_losses(model, trained, inner_loss, obs_losses, steps, lr)
    return split_gradients(losses, restricted, list(obstructed))


def _at_step(inner_loss: Callable[[nn.Module, int], torch.Tensor], step: int, model: nn.Module) -> torch.Tensor:
    return inner_loss(model, step)
