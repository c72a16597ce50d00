"""Torch k-means: exact partitions of separated blobs, reproducibility, empty clusters, bad k."""

from __future__ import annotations

import pytest
import torch

from obstructlib.errors import ConfigError
from obstructlib.primitives.kmeans import kmeans, sq_distances

MEANS = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])


def three_blobs(per: int = 30, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.cat([m + 0.5 * torch.randn(per, 2, generator=g) for m in MEANS])
    return x, torch.arange(3).repeat_interleave(per)


def test_three_blobs_exact_partition_and_centers():
    x, truth = three_blobs()
    a, c = kmeans(x, 3, generator=torch.Generator().manual_seed(1))
    assert a.dtype == torch.int64 and a.shape == (90,) and c.shape == (3, 2)
    # the partition equals the truth up to a relabelling
    mapping = {int(t): int(a[truth == t][0]) for t in range(3)}
    assert len(set(mapping.values())) == 3
    assert torch.equal(a, torch.tensor([mapping[int(t)] for t in truth]))
    for t in range(3):
        blob_mean = x[truth == t].mean(0)
        assert torch.allclose(c[mapping[t]], blob_mean, atol=1e-4)  # centres are the member means
        assert torch.dist(c[mapping[t]], MEANS[t]) < 0.5


def test_reproducible_with_generator_and_best_of_n_init():
    x, _ = three_blobs(per=20, seed=3)
    x = torch.cat([x, torch.randn(40, 2) * 6])  # harder: noisy background
    a1, c1 = kmeans(x, 4, generator=torch.Generator().manual_seed(7), n_init=3)
    a2, c2 = kmeans(x, 4, generator=torch.Generator().manual_seed(7), n_init=3)
    assert torch.equal(a1, a2) and torch.equal(c1, c2)

    def inertia(a, c):
        return float(sq_distances(x, c).gather(1, a[:, None]).sum())

    single = [inertia(*kmeans(x, 4, generator=torch.Generator().manual_seed(s))) for s in range(5)]
    best = inertia(*kmeans(x, 4, generator=torch.Generator().manual_seed(0), n_init=5))
    assert best <= max(single) + 1e-4
    # assignments are the nearest centres
    assert torch.equal(a1, sq_distances(x, c1).argmin(1))


def test_k_equals_n_and_duplicates_reseed_empty_clusters():
    x = torch.tensor([[0.0], [1.0], [5.0], [9.0]])
    a, c = kmeans(x, 4, generator=torch.Generator().manual_seed(0))
    assert sorted(a.tolist()) == [0, 1, 2, 3]
    assert torch.allclose(c.sort(0).values.flatten(), x.flatten())
    # many identical points: still k centres, every assignment valid, no NaN
    y = torch.cat([torch.zeros(10, 2), torch.ones(2, 2)])
    a, c = kmeans(y, 3, generator=torch.Generator().manual_seed(0), iters=5)
    assert torch.isfinite(c).all() and a.max() < 3


def test_sq_distances_matches_cdist():
    x, c = torch.randn(7, 5), torch.randn(3, 5)
    assert torch.allclose(sq_distances(x, c), torch.cdist(x, c) ** 2, atol=1e-4)


@pytest.mark.parametrize("k", [0, 5])
def test_bad_k_is_one_line_config_error(k):
    with pytest.raises(ConfigError) as err:
        kmeans(torch.randn(4, 2), k)
    assert "\n" not in str(err.value)


def test_features_must_be_2d():
    with pytest.raises(ConfigError):
        kmeans(torch.randn(4, 2, 2), 2)
