"""Embedded datasets: scikit-learn digits and the procedural shapes (with captions)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from obstructlib.data import DOMAINS, SHAPES, dataset_info, generate_shapes, load_dataset
from obstructlib.errors import ConfigError


def test_digits_split_sizes_and_shapes() -> None:
    train, test = load_dataset("digits", split="train"), load_dataset("digits", split="test")
    assert (len(train), len(test)) == (1438, 359) and train.classes == [str(c) for c in range(10)]
    assert dataset_info("digits").embedded
    x, y = train[0]
    assert x.shape == (1, 8, 8) and x.dtype == torch.float32 and 0 <= y < 10
    assert train.images.max() == 255 and train.images.min() == 0  # 0..16 scaled to 0..255
    counts = np.bincount(train.labels) + np.bincount(test.labels)
    assert np.array_equal(np.bincount(test.labels), np.rint(0.2 * counts).astype(int))  # stratified
    big = load_dataset("digits", split="test", image_size=32, channels=3)
    assert big[0][0].shape == (3, 32, 32) and 0 <= float(big[0][0].min()) and float(big[0][0].max()) <= 1


def test_digits_split_is_deterministic_and_seeded() -> None:
    a, b = load_dataset("digits", split="test"), load_dataset("digits", split="test")
    assert np.array_equal(a.images, b.images)
    c = load_dataset("digits", split="test", seed=1)
    assert not np.array_equal(a.images, c.images)
    train = load_dataset("digits", split="train")
    flat = {im.tobytes() for im in train.images}
    assert sum(im.tobytes() in flat for im in a.images) < 5  # disjoint (a few duplicates exist in the data)


def test_synthetic_deterministic_balanced_and_seeded() -> None:
    a = generate_shapes(200, seed=4)
    b = generate_shapes(200, seed=4)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["images"], generate_shapes(200, seed=5)["images"])
    assert not np.array_equal(a["images"], generate_shapes(200, seed=4, split="test")["images"])
    assert np.bincount(a["labels"]).tolist() == [20] * 10
    assert a["images"].shape == (200, 32, 32, 3) and a["images"].dtype == np.uint8
    assert np.bincount(a["domains"], minlength=len(DOMAINS)).min() >= 200 // len(DOMAINS)


def test_synthetic_domains_share_shapes_but_differ_in_pixels() -> None:
    gens = {d: generate_shapes(100, domain=d, seed=0) for d in DOMAINS}
    plain = gens["plain"]
    stats = {}
    for d, g in gens.items():
        assert np.array_equal(g["labels"], plain["labels"]) and np.array_equal(g["colors"], plain["colors"])
        x = g["images"].astype(np.float32) / 255
        # mean brightness and high-frequency energy (horizontal neighbour differences)
        stats[d] = (x.mean(), np.abs(np.diff(x, axis=2)).mean())
    assert stats["dark"][0] < 0.3 < stats["plain"][0]
    assert stats["noise"][1] > 2 * max(stats["plain"][1], stats["dark"][1], stats["gradient"][1])
    assert stats["checker"][1] > stats["gradient"][1] and stats["stripes"][1] > stats["gradient"][1]
    values = list(stats.values())
    assert all(not np.allclose(values[i], values[j], atol=1e-3) for i in range(len(values)) for j in range(i))


def test_synthetic_dataset_attributes_and_errors() -> None:
    ds = load_dataset("synthetic", split="test", domain=["plain", "noise"], num_test=40, image_size=16)
    assert len(ds) == 40 and ds.classes == list(SHAPES) and ds[0][0].shape == (3, 16, 16)
    assert set(ds.domains) == {"plain", "noise"} and len(ds.colors) == 40
    assert ds.superclasses == ["round", "angular", "linear"]
    assert np.array_equal(ds.superclass_labels, ds.superclass_of[ds.labels])
    with pytest.raises(ConfigError, match="unknown domain"):
        load_dataset("synthetic", domain="underwater")
    with pytest.raises(ConfigError):
        load_dataset("synthetic-captions", captions_per_image=99)


def test_synthetic_captions_mention_the_class() -> None:
    ds = load_dataset("synthetic-captions", split="train", num_train=30, seed=2)
    assert dataset_info("synthetic-captions").kind == "captions"
    assert (len(ds), ds.num_images, ds.captions_per_image) == (150, 30, 5)
    for i, caption in enumerate(ds.captions):
        label = int(ds.labels[i])
        assert (
            SHAPES[label] in caption
            and ds.labels[i] == ds.labels[ds.pair_indices_of_image(ds.image_ids[i])[0]]
        )
    for j in range(ds.num_images):  # five different paraphrases per image
        assert len({ds.captions[p] for p in ds.pair_indices_of_image(j)}) == 5
    assert " a orange" not in " ".join(ds.captions) and " a ellipse" not in " ".join(ds.captions)
    again = load_dataset("synthetic-captions", split="train", num_train=30, seed=2)
    assert again.captions == ds.captions
    sub = ds.subset_images([4, 1])
    assert sub.domains.tolist() == ds.domains[[4, 1]].tolist() and len(sub) == 10
    x, caption, image_id = ds[7]
    assert x.shape == (3, 32, 32) and image_id == 1


def test_synthetic_is_learnable_by_a_tiny_cnn() -> None:
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions: threads only contend
    tr, te = (
        generate_shapes(600, domain="plain", seed=0),
        generate_shapes(200, domain="plain", seed=0, split="test"),
    )
    x, y = torch.tensor(tr["images"]).permute(0, 3, 1, 2).float() / 255, torch.tensor(tr["labels"])

    def block(i: int, o: int) -> list[nn.Module]:
        return [nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(), nn.MaxPool2d(2)]

    net = nn.Sequential(
        *block(3, 16),
        *block(16, 32),
        *block(32, 32),
        nn.AdaptiveMaxPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 10),
    )
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    for _ in range(5):
        for b in torch.randperm(600).split(50):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x[b]), y[b]).backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        acc = (
            (
                net(torch.tensor(te["images"]).permute(0, 3, 1, 2).float() / 255).argmax(1)
                == torch.tensor(te["labels"])
            )
            .float()
            .mean()
        )
    torch.set_num_threads(threads)
    assert acc > 0.4  # chance is 0.1
