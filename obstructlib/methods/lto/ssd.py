"""Selective Synaptic Dampening (SSD): retraining-free unlearning, LTO's "unlearning is not obstruction" baseline.

SSD compares, element by element, how important each parameter is to the data to forget D_f and
to the full training data D, importance being the diagonal of the (empirical) Fisher information
``I = E[(d loss / d theta)^2]``. Parameters far more important to D_f than to D are shrunk
(Foster et al., the selection and dampening rules; the official code's ``modify_weight``):

    select:  I_Df[i] > alpha * I_D[i]
    dampen:  theta[i] <- beta[i] * theta[i],   beta[i] = min(lambda * I_D[i] / I_Df[i], 1)

No gradient step is taken: one pass over each set, then one multiplication. LTO (spec 2.8) runs
it with D_f = the restricted classes R to show that forgetting R in the released weights does not
stop a few-shot attacker from learning R again.

References:
    Foster et al., Fast Machine Unlearning Without Retraining Through Selective Synaptic
    Dampening, AAAI 2024, arXiv:2308.07707 (official code: if-loops/selective-synaptic-dampening).
    Zheng et al., Learning to Obstruct, ECCV 2024, arXiv:2409.19210 (spec 2.8).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from obstructlib.errors import ConfigError, check_min

__all__ = ["SSDConfig", "fisher_diagonal", "ssd"]

LossFn = Callable[[nn.Module, Any], torch.Tensor]
Batches = Iterable[Any] | Dataset
_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


@dataclass
class SSDConfig:
    """SSD's settings; defaults are the paper's (and official code's) ResNet18 values.

    Attributes:
        alpha: selection weighting: dampen where ``I_forget > alpha * I_full`` (> 0; 10).
        lam: dampening constant lambda in ``beta = min(lam * I_full / I_forget, 1)`` (> 0; 1).
        batch_size: batch size of the loaders built when a :class:`~torch.utils.data.Dataset`
            is passed instead of batches (64). The importances are per-batch means (see
            :func:`fisher_diagonal`), so their scale depends on it.
        exclude_bn: leave BatchNorm weights and biases untouched [deviation; the official code
            dampens every parameter, set False to match it]. BatchNorm affine parameters carry
            large importances on any data and dampening them rescales whole channels.
    """

    alpha: float = 10.0
    lam: float = 1.0
    batch_size: int = 64
    exclude_bn: bool = True

    def validate(self) -> None:
        for name in ("alpha", "lam"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"ssd.{name}={value}: use a finite value > 0 (paper: alpha=10, lam=1)")
        check_min(self, ("batch_size",), prefix="ssd.")


def _batches(data: Batches, batch_size: int) -> Iterable[Any]:
    if isinstance(data, Dataset):  # a map-style dataset: batched in order, like the official loaders
        return DataLoader(data, batch_size=batch_size, shuffle=False)
    return data


def _to(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: _to(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to(v, device) for v in batch)
    return batch


def _device(model: nn.Module, device: torch.device | str | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def fisher_diagonal(model: nn.Module, loader_or_batches: Batches, loss_fn: LossFn,
                    device: torch.device | str | None = None, *, batch_size: int = 64,
                    progress: bool = False) -> dict[str, torch.Tensor]:
    """Diagonal importance of every parameter: the mean over batches of the squared batch gradient.

    ``I[name] = (1 / B) sum_b (d L_b / d theta)^2`` with ``L_b = loss_fn(model, batch_b)`` (a batch
    mean). This is SSD's importance exactly as the official ``calc_importance`` computes it: the
    square of each *mini-batch* gradient, not of per-sample gradients, so it is a batch-size
    dependent proxy of the empirical Fisher (per-sample gradients would cost B times more passes).

    The model is put in ``eval()`` mode for the passes (as the official code does: BatchNorm uses
    its running statistics, dropout is off) and restored afterwards. Gradients are taken with
    :func:`torch.autograd.grad`, so no ``.grad`` field is written. Parameters with
    ``requires_grad=False`` or unused by the loss get zeros.

    Args:
        model: any module, already on ``device``.
        loader_or_batches: an iterable of batches (a DataLoader, a list of ``(x, y)``) or a map-style
            Dataset (batched in order with ``batch_size``).
        loss_fn: ``loss_fn(model, batch) -> scalar`` (e.g. the mean cross-entropy of a CLIP
            zero-shot classifier or an image classifier on the batch).
        device: where each batch's tensors are moved; None = the model's device.
        batch_size: used only when a Dataset is passed.
        progress: show a progress bar over the batches.

    Returns:
        ``{name: importance}`` for every entry of ``model.named_parameters()``: float32 tensors of
        the parameter's shape, >= 0.

    References:
        arXiv:2308.07707 (importance as the Fisher information diagonal; official ``calc_importance``).

    Example:
        >>> model = nn.Linear(2, 1, bias=False)
        >>> with torch.no_grad():
        ...     _ = model.weight.copy_(torch.tensor([[1.0, 0.0]]))
        >>> batches = [torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, 0.0]])]
        >>> fisher_diagonal(model, batches, lambda m, x: m(x).sum())["weight"]  # grads (1, 2), (3, 0)
        tensor([[5., 2.]])
    """
    device = _device(model, device)
    named = list(model.named_parameters())
    importance = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in named}
    trainable = [(n, p) for n, p in named if p.requires_grad]
    was_training, num_batches = model.training, 0
    model.eval()
    try:
        for batch in tqdm(_batches(loader_or_batches, batch_size), desc="ssd importances", disable=not progress):
            loss = loss_fn(model, _to(batch, device))
            grads = torch.autograd.grad(loss, [p for _, p in trainable], allow_unused=True)
            for (n, _), g in zip(trainable, grads):
                if g is not None:
                    importance[n] += g.detach().float().pow(2)
            num_batches += 1
    finally:
        model.train(was_training)
    if num_batches == 0:
        raise ConfigError("fisher_diagonal got no batches: pass a non-empty loader or list of batches")
    return {n: imp / num_batches for n, imp in importance.items()}


def _bn_names(model: nn.Module) -> set[str]:
    return {f"{m_name}.{p_name}" if m_name else p_name
            for m_name, module in model.named_modules() if isinstance(module, _BATCH_NORMS)
            for p_name, _ in module.named_parameters(recurse=False)}


def ssd(model: nn.Module, full_batches: Batches, forget_batches: Batches, loss_fn: LossFn,
        cfg: SSDConfig | None = None, device: torch.device | str | None = None, *,
        progress: bool = False) -> dict[str, Any]:
    """Dampen, in place, the parameters that matter far more to the forget set than to the full set.

    For every parameter element i (the paper's selection and dampening rules; the official
    ``modify_weight`` with its defaults ``exponent = 1``, ``lower_bound = 1``)::

        if I_forget[i] > alpha * I_full[i]:  theta[i] *= min(lam * I_full[i] / I_forget[i], 1)

    An element with zero forget-importance is never selected, so it does not move; one with zero
    full-importance but positive forget-importance is set to 0.

    Args:
        model: the trained model, already on ``device``; modified in place.
        full_batches: batches (or a Dataset) of the full training set D (the official code uses all
            of D; a seeded subset is a cheaper estimate).
        forget_batches: batches (or a Dataset) of the forget set D_f (LTO: the restricted classes).
        loss_fn: ``loss_fn(model, batch) -> scalar``, as :func:`fisher_diagonal`.
        cfg: :class:`SSDConfig` (default: the paper's values).
        device: where batches are moved; None = the model's device.
        progress: progress bars over the two importance passes.

    Returns:
        A report: ``per_parameter`` ``{name: fraction of its elements dampened}`` (parameters
        considered only), ``overall`` (the fraction over all of them), ``num_dampened``,
        ``num_elements`` and ``excluded`` (the BatchNorm parameter names left alone). "Dampened"
        counts the selected elements; one whose beta is bounded to 1 is counted but keeps its value.

    References:
        Foster et al., arXiv:2308.07707 (selection and dampening); arXiv:2409.19210 (spec 2.8, the SSD baseline).

    Example:
        >>> model = nn.Sequential(nn.Linear(4, 2))
        >>> full = [(torch.randn(8, 4), torch.randint(0, 2, (8,)))]
        >>> forget = [(full[0][0][:2], full[0][1][:2])]
        >>> ce = lambda m, b: nn.functional.cross_entropy(m(b[0]), b[1])
        >>> report = ssd(model, full, forget, ce, SSDConfig(alpha=1.0))
        >>> 0.0 <= report["overall"] <= 1.0
        True
    """
    cfg = cfg if cfg is not None else SSDConfig()
    cfg.validate()
    i_forget = fisher_diagonal(model, forget_batches, loss_fn, device, batch_size=cfg.batch_size, progress=progress)
    i_full = fisher_diagonal(model, full_batches, loss_fn, device, batch_size=cfg.batch_size, progress=progress)
    excluded = _bn_names(model) if cfg.exclude_bn else set()
    per_parameter: dict[str, float] = {}
    num_dampened = num_elements = 0
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in excluded:
                continue
            f, d = i_forget[name], i_full[name]
            selected = f > cfg.alpha * d  # selection; f > 0 wherever it holds, so the division is safe
            beta = torch.clamp(cfg.lam * d[selected] / f[selected], max=1.0)  # dampening, bounded by 1
            p[selected] = p[selected] * beta.to(p.dtype)
            count = int(selected.sum())
            per_parameter[name] = count / max(p.numel(), 1)
            num_dampened += count
            num_elements += p.numel()
    return {
        "per_parameter": per_parameter,
        "overall": num_dampened / max(num_elements, 1),
        "num_dampened": num_dampened,
        "num_elements": num_elements,
        "excluded": sorted(excluded),
    }
