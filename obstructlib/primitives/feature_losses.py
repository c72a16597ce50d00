"""Feature-space losses shared by the model-side papers: Gaussian MMD, the Fisher ratio, NT-Xent.

- :func:`gaussian_mmd`: biased multi-kernel Gaussian MMD^2 (DAN / NTL), NTP's NTL-style ablation and NTL;
- :func:`fisher_ratio`: the Fisher-space discriminative regulariser of NTP (S_b / S_w);
- :func:`nt_xent_loss`: SimCLR's normalised-temperature cross-entropy.

References:
    Long et al., Learning Transferable Features with Deep Adaptation Networks, arXiv:1502.02791.
    Wang et al., Non-Transferable Learning, arXiv:2106.06916.
    Ding et al., Non-transferable Pruning, arXiv:2410.08015; Shao et al., arXiv:2207.03036 (Fisher).
    Chen et al., SimCLR, arXiv:2002.05709.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from obstructlib.errors import ConfigError

__all__ = ["fisher_ratio", "gaussian_mmd", "nt_xent_loss"]


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
    kernel = torch.zeros_like(d2)  # summed in the order sum() would (a typed start instead of 0)
    for k in range(num_kernels):
        kernel = kernel + torch.exp(-d2 / (base * kernel_mul**k + 1e-12))
    nx = x.shape[0]
    return kernel[:nx, :nx].mean() + kernel[nx:, nx:].mean() - 2 * kernel[:nx, nx:].mean()


def nt_xent_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """NT-Xent: each view must pick its partner among the other 2B - 1 views (cosine similarity / tau).

    Shape:
        ``z1``, ``z2``: ``(B, D)`` projections of two views of the same B images -> scalar.

    Example:
        >>> z = torch.eye(4)
        >>> nt_xent_loss(z, z, 0.1) < nt_xent_loss(z, z.roll(1, 0), 0.1)
        tensor(True)
    """
    if z1.shape != z2.shape:
        raise ConfigError(f"views have shapes {tuple(z1.shape)} and {tuple(z2.shape)}: pass two views of one batch")
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    n = z1.shape[0]
    sim = z @ z.T / temperature
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, partner)
