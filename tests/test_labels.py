"""The hacker's label protocols: exact mappings and one-line errors."""

import numpy as np
import pytest

from obstructlib.data import ArrayImageDataset, load_dataset, seeded_subset
from obstructlib.data.labels import (
    RelabelledDataset,
    hacker_protocol,
    parse_protocol,
    protector_protocol,
    random_partition,
    relabel,
    relabel_dataset,
)
from obstructlib.errors import ConfigError

SUPER = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 2])


def test_original_is_identity():
    y = np.array([3, 1, 4, 1, 5, 9])
    new, n, mapping = relabel(y, "original", num_classes=10)
    assert new.dtype == np.int64 and new.tolist() == y.tolist() and n == 10
    assert mapping.tolist() == list(range(10))


def test_coarse_uses_the_superclass_map():
    y = np.arange(10)
    new, n, mapping = relabel(y, "coarse", num_classes=10, superclass_of=SUPER)
    assert n == 3 and new.tolist() == SUPER.tolist() and np.array_equal(mapping, SUPER)


def test_coarse_without_map_is_a_one_line_error():
    with pytest.raises(ConfigError, match="superclass") as err:
        relabel([0, 1], "coarse", num_classes=2)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("n", [2, 3, 7, 9])
def test_random_partition_is_seeded_balanced_and_non_empty(n):
    mapping = random_partition(10, n, seed=3)
    counts = np.bincount(mapping, minlength=n)
    assert len(counts) == n and counts.min() >= 1 and counts.max() - counts.min() <= 1
    assert np.array_equal(mapping, random_partition(10, n, seed=3))
    y = np.random.default_rng(0).integers(0, 10, 50)
    new, num, m2 = relabel(y, f"random-{n}", num_classes=10, seed=3)
    assert num == n and np.array_equal(m2, mapping) and np.array_equal(new, mapping[y])


def test_random_partition_depends_on_seed():
    first = random_partition(10, 5, seed=0)
    assert any(not np.array_equal(first, random_partition(10, 5, seed=s)) for s in range(1, 5))


@pytest.mark.parametrize("protocol", ["random-x", "random-", "random-0", "random-1", "random-10", "random-11",
                                      "fine", "Random-3", ""])
def test_malformed_protocols_raise_one_line(protocol):
    with pytest.raises(ConfigError) as err:
        relabel([0, 1, 2], protocol, num_classes=10)
    assert "\n" not in str(err.value)


def test_parse_protocol():
    assert parse_protocol("random-4") == ("random", 4)
    assert parse_protocol("original") == ("original", None)


def test_labels_outside_range_are_rejected():
    with pytest.raises(ConfigError):
        relabel([0, 12], "original", num_classes=10)


def test_relabelled_dataset_keeps_images_and_reports_new_labels():
    base = ArrayImageDataset(np.arange(3 * 4 * 4, dtype=np.uint8).reshape(3, 4, 4), [0, 1, 2])
    ds = RelabelledDataset(base, [1, 0, 1])
    assert len(ds) == 3 and ds[2][1] == 1 and ds.classes == ["0", "1"] and ds.targets == [1, 0, 1]
    assert (ds[1][0] == base[1][0]).all()
    assert ds.get_image(0).shape == base.get_image(0).shape  # forwarded attribute
    with pytest.raises(ConfigError):
        RelabelledDataset(base, [0, 1])


def test_relabel_dataset_on_synthetic_subset_coarse_and_random():
    train = seeded_subset(load_dataset("synthetic", split="train", num_train=60), 30)
    coarse = relabel_dataset(train, "coarse")
    assert coarse.classes == ["round", "angular", "linear"]
    assert np.array_equal(coarse.labels, train.superclass_of[train.labels])
    rnd = relabel_dataset(train, "random-4", seed=1)
    assert len(rnd.classes) == 4 and "+" in rnd.classes[0]
    assert np.array_equal(rnd.labels, rnd.mapping[train.labels])
    test = relabel_dataset(load_dataset("synthetic", split="test", num_test=20), "random-4", seed=1)
    assert np.array_equal(test.mapping, rnd.mapping)  # same protocol and seed: one shared mapping


def test_relabel_dataset_coarse_fails_on_digits():
    with pytest.raises(ConfigError, match="superclass"):
        relabel_dataset(load_dataset("digits", split="test"), "coarse")


@pytest.mark.parametrize("protocol, protector, hacker", [
    ("original", "original", "original"), ("coarse", "original", "coarse"), ("random-5", "original", "random-5"),
    ("finer", "coarse", "original"), ("finer-2", "random-2", "original"),
])
def test_a_protocol_names_both_sides(protocol, protector, hacker):
    assert (protector_protocol(protocol), hacker_protocol(protocol)) == (protector, hacker)


def test_finer_gives_the_hacker_every_class_and_the_protector_a_coarse_grouping():
    train = load_dataset("synthetic", split="train", num_train=60)
    hacker = relabel_dataset(train, "finer", seed=1)
    assert np.array_equal(hacker.labels, train.labels) and len(hacker.classes) == 10
    known = relabel_dataset(train, protector_protocol("finer"), seed=1)
    assert np.array_equal(known.labels, train.superclass_of[train.labels])
    groups = relabel_dataset(train, protector_protocol("finer-2"), seed=1)
    assert len(groups.classes) == 2
    # every protector group holds several hacker classes: its labels cannot separate them
    for g in range(2):
        assert len(set(train.labels[groups.labels == g].tolist())) >= 2


def test_finer_with_an_impossible_grouping_is_a_one_line_error():
    with pytest.raises(ConfigError, match="random-1") as err:
        relabel([0, 1], protector_protocol("finer-1"), num_classes=10)
    assert "\n" not in str(err.value)
