"""Few-shot episodes: a batch sampler that yields N-way K-shot index lists.

References:
    Vinyals et al., Matching Networks for One Shot Learning, arXiv:1606.04080 (the episode protocol).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

from obstructlib.errors import ConfigError


def episode_labels(n_way: int, k_shot: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Episode-local labels of the support (or, with ``k_shot=n_query``, the query) items.

    Shape:
        ``(n_way * k_shot,)`` int64: ``[0]*k_shot + [1]*k_shot + ...``, the order of
        :class:`EpisodeSampler`.

    Example:
        >>> episode_labels(3, 2).tolist()
        [0, 0, 1, 1, 2, 2]
    """
    return torch.arange(n_way, device=device).repeat_interleave(k_shot)


class EpisodeSampler(Sampler[list[int]]):
    """Batch sampler of N-way K-shot episodes (pass it as ``DataLoader(ds, batch_sampler=...)``).

    Each episode draws ``n_way`` distinct classes, then ``k_shot + n_query`` distinct samples of
    each. The yielded list holds the ``n_way * k_shot`` support indices first, grouped by way
    (way 0's shots, then way 1's ...), then the ``n_way * n_query`` query indices grouped the
    same way; way ``w`` is episode-local label ``w`` (see :func:`episode_labels`). No index repeats
    within an episode. The ways' global classes are in :attr:`last_classes` after each episode (when iterated
    directly: a DataLoader's workers may run ahead).

    Args:
        labels: class label of every sample (the dataset's ``labels``/``targets``).
        n_way: classes per episode.
        k_shot: support samples per class.
        n_query: query samples per class (0 allowed).
        num_episodes: episodes per pass (``len(sampler)``).
        classes: draw only from these label values (e.g. the restricted classes); default all.
        generator: ``torch.Generator`` for a reproducible sequence; None draws a seed from torch's
            global generator at each pass.

    Example:
        >>> s = EpisodeSampler([0, 0, 0, 1, 1, 1, 2, 2, 2], n_way=2, k_shot=1, n_query=2,
        ...                    num_episodes=4, generator=torch.Generator().manual_seed(0))
        >>> len(next(iter(s)))
        6
    """

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray | torch.Tensor,
        n_way: int,
        k_shot: int,
        n_query: int,
        num_episodes: int,
        classes: Sequence[int] | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        labels_np = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels, dtype=np.int64)
        if n_way < 1 or k_shot < 1 or n_query < 0 or num_episodes < 0:
            raise ConfigError(
                f"need n_way >= 1, k_shot >= 1, n_query >= 0, num_episodes >= 0 "
                f"(got {n_way}, {k_shot}, {n_query}, {num_episodes})"
            )
        pool = sorted({int(c) for c in (classes if classes is not None else np.unique(labels_np).tolist())})
        if len(pool) < n_way:
            raise ConfigError(
                f"n_way={n_way} but only {len(pool)} classes are available: lower n_way or allow more classes"
            )
        per_class = k_shot + n_query
        self._indices: list[torch.Tensor] = []
        for c in pool:
            idx = np.flatnonzero(labels_np == c)
            if len(idx) < per_class:
                raise ConfigError(
                    f"class {c} has {len(idx)} samples but an episode needs k_shot + n_query = {per_class}: "
                    "lower k_shot/n_query or leave that class out"
                )
            self._indices.append(torch.from_numpy(idx))
        self.classes = pool
        self.n_way, self.k_shot, self.n_query, self.num_episodes = n_way, k_shot, n_query, num_episodes
        self.generator = generator
        self.last_classes: list[int] = []

    def __len__(self) -> int:
        return self.num_episodes

    def __iter__(self) -> Iterator[list[int]]:
        gen = self.generator
        if gen is None:
            gen = torch.Generator().manual_seed(int(torch.empty((), dtype=torch.int64).random_().item()))
        k = self.k_shot
        for _ in range(self.num_episodes):
            ways = torch.randperm(len(self.classes), generator=gen)[: self.n_way].tolist()
            picks = []
            for w in ways:
                idx = self._indices[w]
                picks.append(idx[torch.randperm(len(idx), generator=gen)[: k + self.n_query]])
            self.last_classes = [self.classes[w] for w in ways]
            support = [int(i) for p in picks for i in p[:k]]
            query = [int(i) for p in picks for i in p[k:]]
            yield support + query
