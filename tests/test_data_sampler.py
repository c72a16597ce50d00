"""EpisodeSampler (N-way K-shot) and the dataset wrappers (indexed, seeded subsets, transforms)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Subset

from obstructlib.data import (
    ArrayImageDataset,
    EpisodeSampler,
    IndexedDataset,
    TransformDataset,
    episode_labels,
    labels_of,
    seeded_subset,
)
from obstructlib.errors import ConfigError

LABELS = np.repeat(np.arange(6), 10)  # 6 classes x 10 samples


def _sampler(seed: int = 0, **kw: object) -> EpisodeSampler:
    args: dict = {
        "n_way": 3,
        "k_shot": 2,
        "n_query": 4,
        "num_episodes": 5,
        "generator": torch.Generator().manual_seed(seed),
    }
    return EpisodeSampler(LABELS, **{**args, **kw})


def test_episode_has_exact_support_and_query_counts() -> None:
    episodes = list(_sampler())
    assert len(episodes) == 5
    for ep in episodes:
        assert len(ep) == 3 * 2 + 3 * 4 and len(set(ep)) == len(ep)  # no duplicates
        support, query = LABELS[ep[:6]], LABELS[ep[6:]]
        ways = support[::2]
        assert len(set(ways.tolist())) == 3
        assert np.array_equal(support, np.repeat(ways, 2))  # grouped by way, way order = local labels
        assert np.array_equal(query, np.repeat(ways, 4))
    assert episode_labels(3, 2).tolist() == [0, 0, 1, 1, 2, 2]


def test_episodes_are_deterministic_and_respect_classes() -> None:
    assert list(_sampler(seed=1)) == list(_sampler(seed=1))
    assert list(_sampler(seed=1)) != list(_sampler(seed=2))
    restricted = _sampler(classes=[1, 4, 5])
    for ep in restricted:
        assert set(LABELS[ep].tolist()) == {1, 4, 5} and sorted(restricted.last_classes) == [1, 4, 5]
    loader = DataLoader(
        IndexedDataset(ArrayImageDataset(np.zeros((60, 2, 2), np.uint8), LABELS)), batch_sampler=_sampler()
    )
    index, x, y = next(iter(loader))
    assert x.shape == (18, 1, 2, 2) and torch.equal(y, torch.as_tensor(LABELS)[index])


def test_short_class_is_a_clear_error() -> None:
    labels = np.concatenate([LABELS, [9, 9]])
    with pytest.raises(ConfigError, match="class 9 has 2 samples"):
        EpisodeSampler(labels, n_way=2, k_shot=1, n_query=2, num_episodes=1)
    EpisodeSampler(labels, n_way=2, k_shot=1, n_query=2, num_episodes=1, classes=[0, 1])  # 9 not used: fine
    with pytest.raises(ConfigError, match="n_way=7"):
        EpisodeSampler(LABELS, n_way=7, k_shot=1, n_query=1, num_episodes=1)


def test_seeded_subset_is_stratified_and_deterministic() -> None:
    labels = np.array([0] * 50 + [1] * 30 + [2] * 20)
    ds = ArrayImageDataset(np.zeros((100, 2, 2), np.uint8), labels, ["a", "b", "c"])
    sub = seeded_subset(ds, 10, seed=0)
    assert len(sub) == 10 and np.bincount(sub.labels).tolist() == [5, 3, 2] and sub.classes == ["a", "b", "c"]
    assert sub.indices == sorted(sub.indices) and seeded_subset(ds, 10, seed=0).indices == sub.indices
    assert seeded_subset(ds, 10, seed=1).indices != sub.indices
    assert np.array_equal(labels_of(sub), labels[sub.indices]) and sub[0][1] == labels[sub.indices[0]]
    assert len(seeded_subset(ds, None)) == 100 and len(seeded_subset(ds, 1000)) == 100
    odd = seeded_subset(ds, 7, seed=0)  # remainder goes to the largest fractional shares
    assert len(odd) == 7 and np.bincount(odd.labels).tolist() == [4, 2, 1]
    assert len(seeded_subset(Subset(ds, range(0, 100, 2)), 5)) == 5


def test_indexed_and_transform_wrappers_forward_attributes() -> None:
    ds = ArrayImageDataset(np.full((3, 2, 2), 255, np.uint8), [0, 1, 2], ["x", "y", "z"])
    indexed = IndexedDataset(ds)
    i, x, y = indexed[1]
    assert (i, y, indexed.classes, len(indexed)) == (1, 1, ["x", "y", "z"], 3)
    halved = TransformDataset(ds, lambda t: t / 2)
    x, y = halved[2]
    assert float(x.max()) == 0.5 and y == 2 and halved.classes == ["x", "y", "z"]
    with pytest.raises(AttributeError):
        _ = indexed.no_such_attribute
