"""SLC-AUC against hand-computed trapezoids, in both log bases, and its refusals."""

import math

import numpy as np
import pytest

from obstructlib.errors import ConfigError
from obstructlib.metrics import log_area, slc_auc

RATIOS = [0.001, 0.01, 0.1, 1.0]


def test_log_area_is_the_trapezoid_over_log_ratios():
    acc = [0.1, 0.3, 0.6, 0.9]
    # log10 widths are all 1: (0.1+0.3)/2 + (0.3+0.6)/2 + (0.6+0.9)/2 = 0.2 + 0.45 + 0.75
    assert log_area(RATIOS, acc) == pytest.approx(1.4)
    # ln widths are ln 10 each
    assert log_area(RATIOS, acc, log_base=math.e) == pytest.approx(1.4 * math.log(10))
    # an uneven grid: widths log10(0.05/0.01) and log10(1/0.05)
    expected = math.log10(5) * (0.2 + 0.4) / 2 + math.log10(20) * (0.4 + 0.8) / 2
    assert log_area([0.01, 0.05, 1.0], [0.2, 0.4, 0.8]) == pytest.approx(expected)


def test_slc_auc_hand_case_both_bases():
    model, scratch = [0.1, 0.1, 0.2, 0.5], [0.1, 0.3, 0.6, 0.9]
    # model area: 0.1 + 0.15 + 0.35 = 0.6; scratch 1.4
    assert slc_auc(RATIOS, model, scratch) == pytest.approx(-0.8)
    ln = slc_auc(RATIOS, model, scratch, log_base=math.e)
    assert ln == pytest.approx(-0.8 * math.log(10))
    assert ln / math.log(10) == pytest.approx(slc_auc(RATIOS, model, scratch, log_base=10))


def test_identical_curves_give_zero_and_swapping_flips_the_sign():
    a, b = np.array([0.2, 0.3, 0.5, 0.7]), np.array([0.1, 0.4, 0.45, 0.95])
    assert slc_auc(RATIOS, a, a) == 0.0
    assert slc_auc(RATIOS, a, b) == pytest.approx(-slc_auc(RATIOS, b, a))
    assert slc_auc(RATIOS, a, b) != 0.0


@pytest.mark.parametrize("ratios, model, scratch, needle", [
    ([0.01, 0.1, 1.0], [0.1, 0.2], [0.1, 0.2, 0.3], "accuracies"),
    ([0.01, 0.1, 1.0], [0.1, 0.2, 0.3], [0.1, 0.2], "accuracies"),
    ([0.1, 0.01, 1.0], [0.1, 0.2, 0.3], [0.1, 0.2, 0.3], "increasing"),
    ([0.0, 0.1, 1.0], [0.1, 0.2, 0.3], [0.1, 0.2, 0.3], "(0, 1]"),
    ([0.1, 1.5], [0.1, 0.2], [0.1, 0.2], "(0, 1]"),
    ([1.0], [0.5], [0.5], "two budgets"),
    ([0.01, 0.1, 1.0], [0.1, float("nan"), 0.3], [0.1, 0.2, 0.3], "NaN"),
])
def test_bad_curves_fail_with_one_line(ratios, model, scratch, needle):
    with pytest.raises(ConfigError) as err:
        slc_auc(ratios, model, scratch)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_mismatched_scratch_grid_is_refused():
    with pytest.raises(ConfigError, match="different budget grids"):
        slc_auc([0.01, 0.1, 1.0], [0.1, 0.2, 0.3], [0.1, 0.2, 0.3], scratch_ratios=[0.001, 0.1, 1.0])
    # the same grid passes
    assert slc_auc([0.01, 0.1, 1.0], [0.1, 0.2, 0.3], [0.1, 0.2, 0.3], scratch_ratios=[0.01, 0.1, 1.0]) == 0.0


def test_bad_log_base():
    with pytest.raises(ConfigError, match="log_base"):
        log_area(RATIOS, [0.1, 0.2, 0.3, 0.4], log_base=1.0)
