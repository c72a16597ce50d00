"""K-means in torch: k-means++ seeding, Lloyd iterations, best of ``n_init`` restarts.

Unlearnable Clusters partitions the surrogate features of the protected set with scikit-learn's
``KMeans(n_clusters=p)``; this is the same algorithm in torch so it runs where the features
already are (a GPU for the paper-scale feature matrices) and draws its random numbers from a
``torch.Generator``. Conventions follow scikit-learn: k-means++ seeding (greedy, ``2 + log k``
candidates per step), convergence when the total squared centre shift falls below
``tol * mean(per-feature variance)``, and the restart with the lowest inertia wins.

References:
    Arthur & Vassilvitskii, k-means++: The Advantages of Careful Seeding, SODA 2007.
    Zhang et al., Unlearnable Clusters, arXiv:2301.01217 (clustering of surrogate features).
"""

from __future__ import annotations

import math

import torch

from obstructlib.errors import ConfigError

__all__ = ["kmeans", "sq_distances"]


def sq_distances(x: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances between rows.

    Shape:
        ``(N, D)``, ``(K, D)`` -> ``(N, K)``, non-negative.
    """
    d = x.pow(2).sum(1, keepdim=True) - 2.0 * x @ centers.T + centers.pow(2).sum(1)[None]
    return d.clamp_min_(0.0)


def _sample(weights: torch.Tensor, num: int, generator: torch.Generator | None) -> torch.Tensor:
    # draw on the generator's device (CPU generators cannot drive CUDA sampling); only `num` draws
    w = weights.double().cpu() if generator is None or generator.device.type == "cpu" else weights.double()
    if float(w.sum()) <= 0:  # every point coincides with a chosen centre: pick uniformly
        w = torch.ones_like(w)
    return torch.multinomial(w, num, replacement=True, generator=generator).to(weights.device)


def _kmeans_pp(x: torch.Tensor, k: int, generator: torch.Generator | None) -> torch.Tensor:
    """Greedy k-means++ seeding (scikit-learn's variant)."""
    n = x.shape[0]
    trials = 2 + int(math.log(k))
    first = _sample(torch.ones(n, device=x.device), 1, generator)
    centers = [x[first[0]]]
    closest = sq_distances(x, centers[0][None])[:, 0]
    for _ in range(1, k):
        cand = _sample(closest, trials, generator)
        cand_d = torch.minimum(closest[None], sq_distances(x[cand], x).contiguous())  # (trials, N)
        best = int(cand_d.sum(1).argmin())
        centers.append(x[cand[best]])
        closest = cand_d[best]
    return torch.stack(centers)


def _update(x: torch.Tensor, assign: torch.Tensor, d_min: torch.Tensor, k: int) -> torch.Tensor:
    """New centres as member means; empty clusters move to the points farthest from their centres."""
    sums = torch.zeros(k, x.shape[1], dtype=x.dtype, device=x.device).index_add_(0, assign, x)
    counts = torch.bincount(assign, minlength=k)
    centers = sums / counts.clamp_min(1)[:, None].to(x.dtype)
    empty = torch.nonzero(counts == 0).flatten()
    if len(empty):
        far = torch.argsort(d_min, descending=True)[: len(empty)]  # distinct points for distinct clusters
        centers[empty] = x[far]
    return centers


def _lloyd(
    x: torch.Tensor, centers: torch.Tensor, iters: int, tol: float
) -> tuple[torch.Tensor, torch.Tensor, float]:
    k = centers.shape[0]
    threshold = tol * float(x.var(0, unbiased=False).mean()) if tol > 0 else 0.0
    for _ in range(iters):
        d = sq_distances(x, centers)
        d_min, assign = d.min(1)
        new = _update(x, assign, d_min, k)
        shift = float((new - centers).pow(2).sum())
        centers = new
        if shift <= threshold:
            break
    d_min, assign = sq_distances(x, centers).min(1)  # labels consistent with the returned centres
    return assign, centers, float(d_min.sum())


def kmeans(
    features: torch.Tensor,
    k: int,
    *,
    iters: int = 100,
    tol: float = 1e-4,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    n_init: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Partition rows of ``features`` into ``k`` clusters (Lloyd's algorithm, k-means++ seeding).

    Args:
        features: float ``(N, D)`` points (any device; computed in float32).
        k: number of clusters, ``1 <= k <= N``.
        iters: maximum Lloyd iterations per restart.
        tol: stop when the summed squared centre shift is below ``tol`` times the mean
            per-feature variance of the data (scikit-learn's rule); 0 runs all ``iters``.
        generator: random source for the seeding (CPU or on ``device``); None uses torch's
            global RNG.
        device: where to compute (None: where ``features`` are).
        n_init: restarts; the one with the lowest inertia (sum of squared distances) is kept.

    Returns:
        ``(assignments, centers)``: int64 ``(N,)`` cluster of each row in ``0..k-1`` and float
        ``(k, D)`` centres, both on ``device``.

    Raises:
        ConfigError: ``k`` outside ``1..N``, ``features`` not 2-D, or ``iters``/``n_init`` < 1.

    Example:
        >>> x = torch.cat([torch.randn(20, 2), torch.randn(20, 2) + 10])
        >>> a, c = kmeans(x, 2, generator=torch.Generator().manual_seed(0))
        >>> sorted(torch.bincount(a).tolist())
        [20, 20]
    """
    if features.ndim != 2:
        raise ConfigError(f"features must be (N, D), got shape {tuple(features.shape)}: flatten them first")
    n = features.shape[0]
    if not 1 <= k <= n:
        raise ConfigError(f"k={k} clusters for {n} points: choose k between 1 and the number of points")
    if iters < 1 or n_init < 1:
        raise ConfigError(f"iters={iters}, n_init={n_init}: both must be at least 1")
    x = features.detach().to(device=device if device is not None else features.device, dtype=torch.float32)
    best: tuple[torch.Tensor, torch.Tensor, float] | None = None
    for _ in range(n_init):
        run = _lloyd(x, _kmeans_pp(x, k, generator), iters, tol)
        if best is None or run[2] < best[2]:
            best = run
    assert best is not None
    return best[0], best[1]
