"""Plotting helpers return Figures with the expected axes and images (Agg backend, no display)."""

from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from obstructlib.errors import ConfigError
from obstructlib.plotting import bar_table, image_grid, perturbation_grid, plot_curves, theme

matplotlib.use("Agg")  # no display in tests; pyplot picks the backend at the first figure


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _num_images(fig: Figure) -> int:
    return sum(len(ax.images) for ax in fig.axes)


def test_image_grid_rgb_with_titles():
    fig = image_grid(torch.rand(10, 3, 8, 8), nrow=4, titles=[f"c{i}" for i in range(10)])
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 10 and _num_images(fig) == 10  # 3 rows of 4, the 2 empty slots removed
    assert fig.axes[3].get_title() == "c3"


def test_image_grid_grey_and_single_image():
    fig = image_grid(np.random.rand(3, 1, 8, 8).astype(np.float32), nrow=8)
    assert len(fig.axes) == 3 and fig.axes[0].images[0].get_array().ndim == 2  # grey shown 2-D
    assert len(image_grid(torch.rand(3, 8, 8)).axes) == 1


def test_image_grid_into_axes_is_one_mosaic():
    fig, ax = plt.subplots()
    out = image_grid(torch.rand(6, 3, 8, 8), nrow=3, ax=ax)
    assert out is fig and len(fig.axes) == 1 and _num_images(fig) == 1
    assert ax.images[0].get_array().shape == (2 * 10 + 2, 3 * 10 + 2, 3)  # 2 px padding around tiles
    with pytest.raises(ConfigError):
        image_grid(torch.rand(2, 3, 8, 8), ax=ax, titles=["a", "b"])


def test_image_grid_bad_shape():
    with pytest.raises(ConfigError):
        image_grid(torch.rand(2, 4, 8, 8))
    with pytest.raises(ConfigError):
        image_grid(torch.rand(2, 3, 8, 8), titles=["only one"])


def test_perturbation_grid_rows_and_difference_scaling():
    clean = torch.full((5, 3, 8, 8), 0.5)
    delta = torch.zeros_like(clean)
    delta[:, :, 0, 0] = 4 / 255
    delta[:, :, 0, 1] = -4 / 255
    fig = perturbation_grid(clean, clean + delta, n=4)
    assert len(fig.axes) == 12 and _num_images(fig) == 12  # 3 rows x 4 columns
    diff = np.asarray(fig.axes[8].images[0].get_array())  # row 3, column 1
    assert diff[0, 0, 0] == pytest.approx(1.0) and diff[0, 1, 0] == pytest.approx(0.0)  # auto stretch
    assert diff[4, 4, 0] == pytest.approx(0.5)  # unchanged pixels are mid-grey
    fig = perturbation_grid(clean, clean + delta, n=8, amplify=0.5 / (8 / 255))  # +-eps -> 0..1
    assert len(fig.axes) == 15  # n capped at the batch size 5
    diff = np.asarray(fig.axes[10].images[0].get_array())
    assert diff[0, 0, 0] == pytest.approx(0.75, abs=1e-5)  # half the budget -> three quarters
    with pytest.raises(ConfigError):
        perturbation_grid(clean, clean[:, :1])


def test_plot_curves_y_and_xy_with_shade():
    fig = plot_curves(
        {"clean": [2.3, 1.2, 0.7], "protected": ([0, 1, 2], [2.3, 2.2, 2.1])},
        "epoch",
        "loss",
        shade=("clean", "protected"),
        title="training loss",
    )
    (ax,) = fig.axes
    assert len(ax.lines) == 2 and len(ax.collections) == 1  # two curves and one shaded area
    assert ax.get_xlabel() == "epoch" and ax.get_ylabel() == "loss"
    fig = plot_curves({"acc": ([1, 2, 4, 8], [0.2, 0.3, 0.4, 0.5])}, "shots", "accuracy", logx=True)
    assert fig.axes[0].get_xscale() == "log"
    with pytest.raises(ConfigError):
        plot_curves({"a": [1.0, 2.0]}, "x", "y", shade=("a", "b"))
    with pytest.raises(ConfigError):
        plot_curves({}, "x", "y")


def test_plot_curves_into_given_axes():
    fig, axes = plt.subplots(1, 2)
    out = plot_curves({"a": [1.0, 0.5]}, "x", "y", ax=axes[1])
    assert out is fig and len(axes[1].lines) == 1 and len(axes[0].lines) == 0


def test_bar_table_with_chance_line():
    fig = bar_table({"clean": 42.0, "EM": 10.5, "MEM": 0.6}, "R@10 (%)", chance=1.0)
    (ax,) = fig.axes
    assert len(ax.patches) == 3 and ax.patches[0].get_height() == 42.0
    assert len(ax.lines) == 1 and ax.lines[0].get_ydata()[0] == 1.0  # the chance line
    assert len(bar_table({"a": 1.0}, "y").axes[0].lines) == 0
    with pytest.raises(ConfigError):
        bar_table({}, "y")


def test_theme_is_idempotent():
    theme()
    theme()
    theme("ticks", force=True)
    theme("whitegrid", force=True)
