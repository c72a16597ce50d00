"""Figures for the notebooks: image grids, clean/perturbed/difference grids, curves, bar tables.

Every function returns a :class:`matplotlib.figure.Figure` and never calls ``plt.show()``; the
notebook decides when to show or save. Figures are made through pyplot, so Jupyter's inline
backend shows them at the end of the cell: write ``fig = image_grid(x)`` (not a bare call as the
last line) to avoid seeing the figure twice. Close figures you make in loops (``plt.close(fig)``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure, SubFigure

from obstructlib.errors import ConfigError

__all__ = ["bar_table", "image_grid", "perturbation_grid", "plot_curves", "theme"]

_THEMED = False


def theme(style: str = "whitegrid", context: str = "notebook", *, force: bool = False) -> None:
    """Set the seaborn style used by every figure here; runs once unless ``force`` is True.

    Args:
        style: a seaborn style name (``"whitegrid"``, ``"ticks"`` ...).
        context: a seaborn context (``"notebook"``, ``"paper"``, ``"talk"``).
        force: apply again even when already set (e.g. to switch style).
    """
    global _THEMED
    if _THEMED and not force:
        return
    sns.set_theme(style=style, context=context)
    _THEMED = True


def _images_hwc(images: torch.Tensor | np.ndarray) -> np.ndarray:
    """(B, C, H, W) or (C, H, W) in [0, 1] -> float (B, H, W, C) numpy, clipped for display."""
    x = (
        images.detach().float().cpu().numpy()
        if isinstance(images, torch.Tensor)
        else np.asarray(images, np.float32)
    )
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ConfigError(
            f"images have shape {tuple(x.shape)}: pass (B, C, H, W) with C = 1 or 3, values in [0, 1]"
        )
    return np.clip(x.transpose(0, 2, 3, 1), 0.0, 1.0)


def _figure_of(ax: Axes) -> Figure:
    """The top-level :class:`Figure` that ``ax`` draws in (the root figure for an axes of a SubFigure)."""
    fig = ax.figure
    return fig.figure if isinstance(fig, SubFigure) else fig  # a SubFigure's .figure is the root Figure


def _show(ax: Axes, img: np.ndarray) -> None:
    """imshow one (H, W, C) image; grey images get a fixed [0, 1] grey scale (no auto-contrast)."""
    if img.shape[-1] == 1:
        ax.imshow(img[..., 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        ax.imshow(img, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    for spine in ax.spines.values():
        spine.set_visible(False)


def _mosaic(x: np.ndarray, nrow: int, pad: int = 2) -> np.ndarray:
    """Tile (B, H, W, C) images into one (rows*(H+pad)+pad, nrow*(W+pad)+pad, C) white-padded array."""
    b, h, w, c = x.shape
    ncol, rows = min(nrow, b), math.ceil(b / nrow)
    out = np.ones((rows * (h + pad) + pad, ncol * (w + pad) + pad, c), np.float32)
    for i in range(b):
        r, col = divmod(i, nrow)
        out[
            pad + r * (h + pad) : pad + r * (h + pad) + h, pad + col * (w + pad) : pad + col * (w + pad) + w
        ] = x[i]
    return out


def image_grid(
    images: torch.Tensor | np.ndarray,
    nrow: int = 8,
    titles: Sequence[str] | None = None,
    ax: Axes | None = None,
) -> Figure:
    """Show a batch of images, ``nrow`` per row (torchvision's ``make_grid`` convention).

    Without ``ax`` each image gets its own axes (so each can carry a title); with ``ax`` the batch
    is drawn as one padded mosaic into that axes, which is faster for large batches.

    Args:
        images: ``(B, C, H, W)`` (or one ``(C, H, W)``) float in [0, 1], C = 1 (grey) or 3.
        nrow: images per row.
        titles: one title per image (only without ``ax``).
        ax: draw into this axes instead of making a new figure.

    Shape:
        The returned figure has B axes (one image each), or the one given ``ax``.

    Example:
        >>> fig = image_grid(torch.rand(16, 3, 32, 32), nrow=8, titles=[str(i) for i in range(16)])
    """
    theme()
    x = _images_hwc(images)
    if nrow < 1:
        raise ConfigError(f"nrow={nrow} must be at least 1")
    if titles is not None and len(titles) != len(x):
        raise ConfigError(f"{len(titles)} titles for {len(x)} images: pass one title per image")
    if ax is not None:
        if titles is not None:
            raise ConfigError("titles need one axes per image: call image_grid without ax")
        _show(ax, _mosaic(x, nrow))
        return _figure_of(ax)
    ncol, rows = min(nrow, len(x)), math.ceil(len(x) / nrow)
    fig, axes = plt.subplots(
        rows, ncol, figsize=(1.3 * ncol, 1.3 * rows + 0.25 * (titles is not None) * rows), squeeze=False
    )
    for i, a in enumerate(axes.flat):
        if i >= len(x):
            a.remove()  # empty slots of the last row
            continue
        _show(a, x[i])
        if titles is not None:
            a.set_title(str(titles[i]), fontsize=8)
    fig.tight_layout()
    return fig


def perturbation_grid(
    clean: torch.Tensor | np.ndarray,
    perturbed: torch.Tensor | np.ndarray,
    n: int = 8,
    amplify: float | None = None,
) -> Figure:
    """Three rows for the first ``n`` images: clean, perturbed, and their difference.

    The difference ``perturbed - clean`` lies in ``[-eps, eps]``, far too faint to see, so it is
    shown as ``0.5 + scale * diff`` clipped to [0, 1] (mid-grey means unchanged):

    - ``amplify=None``: ``scale = 0.5 / max|diff|`` over the shown images, i.e. the largest change
      reaches black or white (per-figure contrast stretch; compare figures only by eye).
    - ``amplify=a``: ``scale = a`` fixed, e.g. ``a = 0.5 / eps`` maps the full budget to [0, 1]
      so figures with the same eps are comparable.

    Args:
        clean: ``(B, C, H, W)`` in [0, 1].
        perturbed: same shape, the protected / triggered images.
        n: number of columns (images) shown, at most B.
        amplify: the fixed display gain, or None for the automatic stretch.

    Shape:
        The figure has ``3 * min(n, B)`` axes.

    Example:
        >>> x = torch.rand(4, 3, 32, 32)
        >>> fig = perturbation_grid(x, (x + 8 / 255).clamp(0, 1), n=4, amplify=0.5 / (8 / 255))
    """
    theme()
    c, p = _images_hwc(clean), _images_hwc(perturbed)
    if c.shape != p.shape:
        raise ConfigError(
            f"clean {c.shape} and perturbed {p.shape} images differ in shape: pass matching batches"
        )
    if n < 1:
        raise ConfigError(f"n={n} must be at least 1")
    n = min(n, len(c))
    c, p = c[:n], p[:n]
    diff = p - c
    if amplify is None:
        peak = float(np.abs(diff).max())
        scale = 0.5 / peak if peak > 0 else 1.0
        label = f"difference (x{scale:.3g})"
    else:
        scale, label = float(amplify), f"difference (x{float(amplify):.3g})"
    shown = np.clip(0.5 + scale * diff, 0.0, 1.0)
    fig, axes = plt.subplots(3, n, figsize=(1.3 * n + 0.8, 4.2), squeeze=False)
    for row, (imgs, name) in enumerate([(c, "clean"), (p, "perturbed"), (shown, label)]):
        for j in range(n):
            _show(axes[row, j], imgs[j])
        axes[row, 0].set_ylabel(name, fontsize=8)
    fig.tight_layout()
    return fig


def _xy(name: str, values: object) -> tuple[np.ndarray, np.ndarray]:
    """A series is ``y`` (x = 0, 1, ...) or a tuple ``(x, y)`` of two sequences."""
    if isinstance(values, tuple) and len(values) == 2 and all(np.ndim(v) == 1 for v in values):
        x, y = (np.asarray(v, dtype=float) for v in values)
    else:
        y = np.asarray(values, dtype=float).reshape(-1)
        x = np.arange(len(y), dtype=float)
    if len(x) != len(y) or len(y) == 0:
        raise ConfigError(
            f"series {name!r} has {len(x)} x and {len(y)} y values: pass y or (x, y) of equal, non-zero length"
        )
    return x, y


def plot_curves(
    series: Mapping[str, Sequence[float] | tuple[Sequence[float], Sequence[float]]],
    xlabel: str,
    ylabel: str,
    logx: bool = False,
    ax: Axes | None = None,
    *,
    shade: tuple[str, str] | None = None,
    title: str | None = None,
) -> Figure:
    """Line plot of named curves (loss curves, accuracy against epochs or shots).

    Args:
        series: name -> y values (plotted against 0, 1, ...) or name -> ``(x, y)``.
        xlabel: x-axis label, with units.
        ylabel: y-axis label, with units.
        logx: logarithmic x axis (e.g. shots, learning rates).
        ax: draw into this axes instead of making a new figure.
        shade: names ``(a, b)`` of two curves; the area between them is filled (b is linearly
            interpolated onto a's x when their x differ).
        title: optional axes title.

    Example:
        >>> fig = plot_curves({"clean": [2.3, 1.1, 0.6], "protected": [2.3, 2.2, 2.1]}, "epoch", "train loss")
    """
    theme()
    if not series:
        raise ConfigError("series is empty: pass at least one named curve")
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 3.5))
    curves = {name: _xy(name, v) for name, v in series.items()}
    colors = dict(zip(curves, sns.color_palette(n_colors=len(curves))))
    for name, (x, y) in curves.items():
        ax.plot(x, y, label=name, color=colors[name], marker="o" if len(x) <= 20 else None, markersize=3)
    if shade is not None:
        missing = [s for s in shade if s not in curves]
        if missing:
            raise ConfigError(
                f"shade names {missing} are not in series {list(curves)}: pick two series names"
            )
        (xa, ya), (xb, yb) = curves[shade[0]], curves[shade[1]]
        ax.fill_between(xa, ya, np.interp(xa, xb, yb), color=colors[shade[0]], alpha=0.2, linewidth=0)
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend(frameon=False)
    fig = _figure_of(ax)
    fig.tight_layout()
    return fig


def bar_table(
    rows: Mapping[str, float],
    ylabel: str,
    chance: float | None = None,
    ax: Axes | None = None,
    *,
    title: str | None = None,
    fmt: str = "{:.1f}",
) -> Figure:
    """Bar chart of one number per setting (e.g. R@10 for clean / EM / MEM), values on the bars.

    Args:
        rows: setting name -> value, drawn in the given order.
        ylabel: y-axis label, with units (e.g. "i2t R@10 (%)").
        chance: draw a dashed "chance" line at this value (e.g. from ``chance_retrieval``).
        ax: draw into this axes instead of making a new figure.
        title: optional axes title.
        fmt: format of the value written above each bar.

    Example:
        >>> fig = bar_table({"clean": 42.0, "MEM": 0.6}, "R@10 (%)", chance=1.0)
    """
    theme()
    if not rows:
        raise ConfigError("rows is empty: pass at least one name -> value")
    if ax is None:
        _, ax = plt.subplots(figsize=(max(3.0, 0.9 * len(rows) + 1.5), 3.5))
    names, values = list(rows), [float(v) for v in rows.values()]
    bars = ax.bar(names, values, color=sns.color_palette(n_colors=len(names)))
    ax.bar_label(bars, labels=[fmt.format(v) for v in values], fontsize=8, padding=2)
    if chance is not None:
        ax.axhline(float(chance), color="black", linestyle="--", linewidth=1, label="chance")
        # label the line in place: a legend box would sit on top of some bar
        ax.text(
            0.99,
            float(chance),
            "chance",
            transform=ax.get_yaxis_transform(),
            ha="right",
            va="bottom",
            fontsize=8,
        )
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if len(names) > 4:
        plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
    fig = _figure_of(ax)
    fig.tight_layout()
    return fig
