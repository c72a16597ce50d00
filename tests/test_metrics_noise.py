"""noise_class_structure: class-wise, sample-wise and mixed noise, and bad input."""

import numpy as np
import pytest

from obstructlib.errors import ConfigError
from obstructlib.metrics import noise_class_structure


def test_class_wise_noise_is_fully_explained_by_its_class():
    labels = np.repeat(np.arange(4), 25)
    patterns = np.random.default_rng(0).choice([-8, 8], size=(4, 3, 8, 8))
    r = noise_class_structure(patterns[labels], labels)
    assert r["between_class_energy"] == pytest.approx(1.0)
    assert r["centroid_accuracy"] == 1.0 and r["chance"] == 0.25 and r["num_classes"] == 4


def test_sample_wise_random_noise_carries_no_class():
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(5), 200)
    r = noise_class_structure(rng.integers(-8, 9, size=(1000, 48)), labels)
    # E[between / total] = (C - 1) / (N - 1) for noise independent of the labels
    assert r["between_class_energy"] == pytest.approx(4 / 999, rel=0.3)
    assert abs(r["centroid_accuracy"] - 0.2) < 0.06


def test_hand_computed_energy_split():
    # two classes in 1-D: values 0, 2 | 10, 12. Mean 6; class means 1, 11; total 36+16+16+36=104;
    # between 2*25 + 2*25 = 100.
    r = noise_class_structure(np.array([[0.0], [2.0], [10.0], [12.0]]), [3, 3, 7, 7])
    assert r["between_class_energy"] == pytest.approx(100 / 104)
    assert r["centroid_accuracy"] == 1.0 and r["chance"] == 0.5


def test_a_weak_class_component_is_detected_by_the_centroids():
    rng = np.random.default_rng(2)
    labels = np.repeat(np.arange(10), 100)
    noise = rng.standard_normal((1000, 3072)) + 0.2 * rng.standard_normal((10, 3072))[labels]
    r = noise_class_structure(noise, labels)
    assert r["between_class_energy"] < 0.1  # a small share of the energy ...
    assert r["centroid_accuracy"] > 0.9  # ... that still tells the class apart


@pytest.mark.parametrize("noise, labels, words", [
    (np.zeros((4, 2)), [0, 1, 0], "labels"),
    (np.zeros((4, 2)), [0, 0, 0, 0], "two classes"),
    (np.zeros((3, 2)), [0, 0, 1], "two samples"),
])
def test_bad_input_is_one_clear_error(noise, labels, words):
    with pytest.raises(ConfigError, match=words):
        noise_class_structure(noise, labels)
