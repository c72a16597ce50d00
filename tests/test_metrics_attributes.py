"""AUROC per attribute and LTO's collateral matrix (obstructlib.metrics.attributes)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from obstructlib.errors import ConfigError
from obstructlib.metrics.attributes import auroc_per_attribute, binary_auroc, collateral_matrix


def test_binary_auroc_hand_cases_with_ties():
    assert binary_auroc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 100.0
    assert binary_auroc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == 0.0
    # pairs (pos, neg): (0.35, 0.1) win, (0.35, 0.4) loss, (0.8, .) two wins -> 3 / 4
    assert binary_auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 75.0
    # one tie out of four pairs counts 1/2 -> 3.5 / 4
    assert binary_auroc([0.5, 0.5, 0.2, 0.9], [1, 0, 0, 1]) == 87.5
    # all scores tied: chance
    assert binary_auroc([0.3] * 5, [1, 0, 1, 0, 0]) == 50.0
    # bool targets and torch tensors are accepted
    assert binary_auroc(torch.tensor([0.2, 0.7, 0.7]), torch.tensor([False, True, False])) == 75.0


def test_binary_auroc_matches_sklearn_on_random_data():
    rng = np.random.default_rng(0)
    for n in (7, 50, 400):
        targets = rng.integers(0, 2, n)
        targets[:2] = (0, 1)
        scores = rng.normal(size=n) + targets
        ties = np.round(scores, 1)  # many tied scores
        for s in (scores, ties):
            assert binary_auroc(s, targets) == pytest.approx(100 * roc_auc_score(targets, s), abs=1e-9)


def test_binary_auroc_missing_class_is_one_config_error():
    with pytest.raises(ConfigError) as err:
        binary_auroc([0.1, 0.5, 0.9], [1, 1, 1])
    msg = str(err.value)
    assert len(msg.splitlines()) == 1 and "only positives" in msg and "both classes" in msg
    with pytest.raises(ConfigError, match="only negatives"):
        binary_auroc([0.1, 0.5], [0, 0])
    with pytest.raises(ConfigError, match="0 or 1"):
        binary_auroc([0.1, 0.5], [-1, 1])
    with pytest.raises(ConfigError, match="targets"):
        binary_auroc([0.1, 0.5, 0.3], [0, 1])
    with pytest.raises(ConfigError, match="NaN"):
        binary_auroc([0.1, float("nan")], [0, 1])


def test_auroc_per_attribute_columns_and_named_errors():
    probs = np.array([[0.9, 0.2], [0.1, 0.7], [0.6, 0.7]])
    targets = np.array([[1, 0], [0, 1], [1, 0]])
    np.testing.assert_array_equal(auroc_per_attribute(probs, targets), [100.0, 75.0])
    rng = np.random.default_rng(1)
    p, t = rng.random((60, 4)), rng.integers(0, 2, (60, 4))
    expected = [100 * roc_auc_score(t[:, a], p[:, a]) for a in range(4)]
    np.testing.assert_allclose(auroc_per_attribute(torch.from_numpy(p), t), expected, atol=1e-9)
    targets[:, 1] = 1
    with pytest.raises(ConfigError, match="'Smiling'.*only positives"):
        auroc_per_attribute(probs, targets, attr_names=["Young", "Smiling"])
    with pytest.raises(ConfigError, match="differ"):
        auroc_per_attribute(probs, targets[:2])


def test_collateral_matrix_hand_example_and_clip():
    before = [90.0, 80.0, 70.0]
    after = [[70.0, 75.0, 71.0],  # restricted 0: drops 20, 5, -1
             [85.0, 70.0, 50.0]]  # restricted 1: drops 5, 10, 20
    raw = collateral_matrix(before, after, restricted=[0, 1], clip=None)
    np.testing.assert_allclose(raw, [[1.0, 0.25, -0.05], [0.5, 1.0, 2.0]])
    shown = collateral_matrix(before, after, restricted=[0, 1])
    np.testing.assert_allclose(shown, [[1.0, 0.25, 0.0], [0.5, 1.0, 2.0]])
    after[1][2] = 30.0  # a drop of 40, four times the restricted one: clipped to 2
    assert collateral_matrix(before, after, [0, 1])[1, 2] == 2.0
    assert collateral_matrix(before, after, [0, 1], clip=None)[1, 2] == 4.0


def test_collateral_matrix_nan_row_when_restricted_did_not_drop():
    before = [90.0, 80.0]
    after = [[90.0, 70.0],  # restricted 0 unchanged
             [91.0, 60.0],  # restricted 0 improved
             [85.0, 75.0]]
    m = collateral_matrix(before, after, restricted=[0, 0, 0])
    assert np.isnan(m[0]).all() and np.isnan(m[1]).all()
    np.testing.assert_allclose(m[2], [1.0, 1.0])


def test_collateral_matrix_bad_inputs():
    with pytest.raises(ConfigError, match="columns"):
        collateral_matrix([90, 80], [[70, 75, 71]], [0])
    with pytest.raises(ConfigError, match="one id per row"):
        collateral_matrix([90, 80], [[70, 75]], [0, 1])
    with pytest.raises(ConfigError, match="0..1"):
        collateral_matrix([90, 80], [[70, 75]], [2])
    with pytest.raises(ConfigError, match="low < high"):
        collateral_matrix([90, 80], [[70, 75]], [0], clip=(2, 0))
