"""Batched item fetching (``__getitems__``, one call per DataLoader batch) yields exactly the per-item items.

The DataLoader calls ``__getitems__`` on a dataset that defines it; every wrapper passes the batch
down (:func:`obstructlib.data.fetch_many`), so an array-backed set converts, resizes and adds noise
to a whole batch at once. These tests pin the contract: same tensors, same order, same draws of a
random augmentation, as indexing item by item.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from obstructlib.data import (
    ArrayImageDataset,
    IndexedDataset,
    PerturbationStore,
    ProtectedDataset,
    ProtectedPairs,
    RelabelledDataset,
    TransformDataset,
    fetch_many,
    load_dataset,
    load_pairs,
    seeded_subset,
    tokenize_captions,
)
from obstructlib.models import create_clip
from obstructlib.primitives.augment import pad_crop_flip

INDICES = [5, 3, 17, 2, 9, 11, 3]


def same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def per_item(ds, indices):
    return [ds[i] for i in indices]


@pytest.mark.parametrize(("spec", "kwargs"), [("digits", {"image_size": 16, "channels": 3}),
                                              ("digits", {"image_size": 12}),
                                              ("synthetic", {"image_size": 20})])
def test_array_datasets_and_wrappers_match_per_item_indexing(spec, kwargs):
    ds = load_dataset(spec, None, "train", progress=False, **kwargs)
    assert same(ds.__getitems__(INDICES), per_item(ds, INDICES))  # resize of a batch == resize of each image
    sub = seeded_subset(ds, 40, seed=0)
    for wrapped in (IndexedDataset(sub), TransformDataset(sub, lambda x: x.flip(-1)),
                    RelabelledDataset(sub, np.arange(40) % 3)):
        assert same(fetch_many(wrapped, INDICES), per_item(wrapped, INDICES)), type(wrapped).__name__


@pytest.mark.parametrize("augment", [None, pad_crop_flip])
def test_protected_images_match_per_item_with_partial_protection_and_augmentation(augment):
    sub = seeded_subset(load_dataset("synthetic", None, "train", image_size=16, progress=False), 40, seed=0)
    store = PerturbationStore(len(sub), tuple(sub[0][0].shape), 8 / 255).randomize(0)
    ds = ProtectedDataset(sub, store, augment=augment, protected=np.arange(len(sub)) % 3 > 0)
    torch.manual_seed(1)
    batched = ds.__getitems__(INDICES)
    torch.manual_seed(1)
    assert same(batched, per_item(ds, INDICES))  # the augmentation draws in the same order


def test_protected_pairs_and_caption_sets_match_per_item():
    pairs = load_pairs("synthetic", None, "train", image_size=32, max_samples=40, progress=False)
    assert same(pairs.__getitems__(INDICES), per_item(pairs, INDICES))
    captions = load_dataset("synthetic-captions", None, "train", num_train=30)
    assert same(captions.__getitems__(INDICES), per_item(captions, INDICES))
    clip = create_clip("tiny-rn", None, image_size=32, context_length=20)
    store = PerturbationStore(len(pairs), (3, 32, 32), 8 / 255).randomize(0)
    triggers = torch.randint(5, 100, (len(pairs), 3), generator=torch.Generator().manual_seed(0))
    published = ProtectedPairs(pairs, tokenize_captions(clip, pairs.captions), clip.eot_token_id, store, triggers,
                               quantize=True, protected=np.arange(len(pairs)) % 2 == 0)
    assert same(published.__getitems__(INDICES), per_item(published, INDICES))


def test_dataloader_batches_are_unchanged_and_odd_sizes_fall_back():
    ds = IndexedDataset(ArrayImageDataset(np.arange(6 * 4 * 4, dtype=np.uint8).reshape(6, 4, 4), np.arange(6)))
    batches = list(DataLoader(ds, batch_size=4))
    assert torch.equal(batches[0][0], torch.arange(4)) and batches[1][1].shape == (2, 1, 4, 4)
    assert torch.equal(batches[0][1][2], ds[2][1])
    # images of different sizes (no resize) are published one at a time instead of stacked
    odd = [(torch.rand(3, 4, 4), 0), (torch.rand(3, 5, 5), 1)]

    class Odd(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return odd[i]

    got = ProtectedDataset(Odd(), None).__getitems__([1, 0])
    assert [tuple(x.shape) for x, _ in got] == [(3, 5, 5), (3, 4, 4)]
    assert ProtectedDataset(Odd(), None).__getitems__([]) == [] and ds.__getitems__([]) == []
