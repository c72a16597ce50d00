"""Datasets from plain files: ``folder:PATH`` and ``npz:PATH`` specs, and the helpers every loader uses.

- ``folder:PATH``: an ImageFolder tree ``PATH/{train,test}/<class>/*.jpg`` decoded once into one
  uint8 array (optionally cached as ``.npy``), or decoded per item with ``in_memory=False``.
- ``npz:PATH``: arrays ``x_train, y_train, x_test, y_test`` (uint8 NHW or NHWC; optional ``classes``).
- :class:`LoadOptions`, :func:`stratified_indices` and :func:`array_dataset`, shared by the loaders
  of :mod:`obstructlib.data.vision` and :mod:`obstructlib.data.large` (``imagenet``, ``celeba``).

Every loader takes ``max_samples`` and ``seed`` for a seeded class-stratified subset
(:func:`stratified_indices`), which is how the ``quick`` profile runs on 2 CPU cores.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypedDict

import numpy as np

from obstructlib.data.base import ArrayImageDataset, register_prefix
from obstructlib.data.images import (  # noqa: F401  (IMG_EXTENSIONS, read_image ... re-exported)
    IMG_EXTENSIONS,
    ImageFolderDataset,
    Transform,
    _first_size,
    _pil_mode,
    _size_hw,
    decode_images,
    read_image,
    scan_image_folder,
)
from obstructlib.errors import ConfigError, DatasetNotFoundError

FETCH = "obstruct data fetch {name} --root {root}"


class LoadOptions(TypedDict, total=False):
    """The keyword options every array loader takes (``load_cifar10(root, split, **options)``).

    Attributes:
        image_size: resize each item to this square side (pixels); None keeps the stored size.
        channels: 1 or 3 (grey is repeated to RGB, RGB averaged to grey); None keeps the stored number.
        transform: callable on each float ``(C, H, W)`` item (augmentation).
        max_samples: size of a seeded class-stratified subset (what the ``quick`` profile uses); None keeps all.
        seed: seed of that subset (default 0).
        download: fetch missing files (``obstruct data fetch NAME``); None (default): only the
            sets of :data:`~obstructlib.data.fetchers.AUTOMATIC`, unless ``$OBSTRUCT_DOWNLOAD=0``.
        progress: accepted so every loader takes it (loading one array shows no bar).
    """

    image_size: int | None
    channels: int | None
    transform: Transform | None
    max_samples: int | None
    seed: int
    download: bool | None
    progress: bool


def fetch_hint(name: str, root: Path | str) -> str:
    """The shell command that fetches registered dataset ``name`` into ``root``."""
    return FETCH.format(name=name, root=root)


def stratified_indices(
    labels: np.ndarray | Sequence[int], max_samples: int | None, seed: int = 0
) -> np.ndarray:
    """Sorted indices of a seeded, class-stratified subset of at most ``max_samples`` items.

    Every class keeps its share of the data: ``floor(max_samples * n_c / N)``, the remainder going
    to the largest fractional shares (ties broken by the seed), so the counts sum to exactly
    ``max_samples``; inside a class the items are a seeded random draw. This is the subset the
    ``quick`` profile trains on, drawn exactly as :func:`obstructlib.data.wrappers.seeded_subset`
    draws it, but from the labels alone, so loaders subset before decoding any image. Labels of
    shape ``(N, K)`` (attribute vectors) get a plain seeded random subset.

    Args:
        labels: ``(N,)`` class labels (any integers) or ``(N, K)`` attribute vectors.
        max_samples: subset size (>= 0); None, or at least N, keeps everything.
        seed: the subset is a function of (labels, max_samples, seed) only.

    Example:
        >>> np.bincount(np.array([0, 0, 0, 0, 1, 1])[stratified_indices([0, 0, 0, 0, 1, 1], 3)]).tolist()
        [2, 1]
    """
    labels = np.asarray(labels)
    n = len(labels)
    if max_samples is not None and (int(max_samples) != max_samples or max_samples < 0):
        raise ConfigError(f"max_samples={max_samples} must be an integer >= 0 (or None for all)")
    if max_samples is None or max_samples >= n:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    max_samples = int(max_samples)
    if labels.ndim != 1:
        return np.sort(rng.choice(n, size=max_samples, replace=False))
    values, counts = np.unique(labels, return_counts=True)
    share = max_samples * counts / n
    quota = np.floor(share).astype(np.int64)
    order = np.lexsort((rng.random(len(values)), -(share - quota)))  # largest remainder; seeded ties
    quota[order[: max_samples - int(quota.sum())]] += 1
    chosen = [rng.choice(np.flatnonzero(labels == v), size=q, replace=False) for v, q in zip(values, quota)]
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def array_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    classes: Sequence[str],
    *,
    image_size: int | None = None,
    channels: int | None = None,
    transform: Transform | None = None,
    max_samples: int | None = None,
    seed: int = 0,
    per_sample: dict[str, np.ndarray] | None = None,
    extra: dict[str, Any] | None = None,
) -> ArrayImageDataset:
    """An :class:`ArrayImageDataset` over a stratified subset, with extra attributes attached.

    ``per_sample`` arrays are subset alongside the labels; ``extra`` values are attached as is.
    """
    per_sample = dict(per_sample or {})
    if max_samples is not None:
        idx = stratified_indices(labels, max_samples, seed)
        images, labels = images[idx], labels[idx]
        per_sample = {k: v[idx] for k, v in per_sample.items()}
    if channels not in (None, 1, 3):
        raise ConfigError(f"channels={channels} must be 1, 3 or None (keep the stored channels)")
    ds = ArrayImageDataset(
        np.ascontiguousarray(images),
        labels,
        classes,
        image_size=image_size,
        channels=channels,
        transform=transform,
    )
    for key, value in {**per_sample, **(extra or {})}.items():
        setattr(ds, key, value)
    return ds


# ------------------------------------------------------------------------------------------ folder:
def _cache_path(
    cache_dir: Path, base: Path, split: str, paths: Sequence[str], mode: str, size: tuple[int, int]
) -> Path:
    h = hashlib.sha1(f"{base.resolve()}|{split}|{mode}|{size}".encode())
    for p in paths:  # any added, removed or rewritten file changes the key
        st = os.stat(p)
        h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}".encode())
    return Path(cache_dir) / f"{base.name}-{split}-{size[0]}x{size[1]}-{mode}-{h.hexdigest()[:16]}.npy"


@register_prefix("folder")
def load_image_folder(
    path: Path,
    split: str = "train",
    *,
    image_size: int | None = None,
    channels: int | None = None,
    transform: Transform | None = None,
    max_samples: int | None = None,
    seed: int = 0,
    in_memory: bool = True,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> ArrayImageDataset | ImageFolderDataset:
    """``folder:PATH``: an ImageFolder tree ``PATH/{train,test}/<class>/*.{jpg,png,...}``.

    Classes are the sorted class-folder names (union of both splits). In memory (the default) all
    images are decoded once into one uint8 ``(N, H, W, C)`` array; ``in_memory=False`` decodes per item.

    Args:
        path: the folder holding ``train/`` and ``test/``.
        split: ``"train"`` or ``"test"``.
        image_size: square side in pixels; None keeps the first image's ``(H, W)``. Other sizes are
            centre-cropped to that aspect ratio and resized (bilinear, antialiased).
        channels: 1 or 3 (decode as grey or RGB); None keeps the first image's mode.
        transform: optional callable on each float ``(C, H, W)`` item.
        max_samples: seeded class-stratified subset size (selected before decoding); None for all.
        seed: seed of that subset.
        in_memory: decode everything up front (fast training) or lazily per item (huge folders).
        cache_dir: where to keep the decoded array as ``.npy`` (keyed by the file list, sizes and
            mtimes); None (default) caches nothing.
        progress: show a tqdm bar while decoding.

    Shape:
        Items are ``(image float (C, H, W) in [0, 1], label int)``.

    Example:
        >>> test = load_dataset("folder:cifar10-jpeg", split="test", cache_dir="cache")  # doctest: +SKIP
    """
    path = Path(path).expanduser()
    what = f"folder:{path}"
    if not path.is_dir():
        raise DatasetNotFoundError(
            f"{what}: no such directory: pass folder:PATH with PATH/train/<class>/*.jpg"
        )
    if split not in ("train", "test"):
        raise ConfigError(f"{what}: split {split!r} is not 'train' or 'test'")
    paths, labels, classes = scan_image_folder(path, split, ("train", "test"), what)
    idx = stratified_indices(labels, max_samples, seed)
    paths, labels = [paths[i] for i in idx], labels[idx]
    if not paths:
        raise ConfigError(f"{what}: max_samples={max_samples} leaves no images: pass a positive number")
    size = _size_hw(image_size) or _first_size(paths[0])
    if not in_memory:
        return ImageFolderDataset(
            paths, labels, classes, image_size=size, channels=channels, transform=transform
        )
    mode = _pil_mode(channels, paths[0])
    cache = (
        None
        if cache_dir is None
        else _cache_path(Path(cache_dir).expanduser(), path, split, paths, mode, size)
    )
    if cache is not None and cache.is_file():
        images = np.load(cache)
    else:
        images = decode_images(paths, mode, size, progress=progress)
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_name(f"{cache.stem}.{os.getpid()}.tmp.npy")
            np.save(tmp, images)
            os.replace(tmp, cache)  # atomic: a killed run never leaves a half-written cache
    return array_dataset(
        images,
        labels,
        classes,
        image_size=image_size,
        channels=channels,
        transform=transform,
        extra={"paths": paths},
    )


# --------------------------------------------------------------------------------------------- npz:
def read_npz(path: Path, split: str, what: str) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    """Validated ``(x uint8 NHW/NHWC, y int64, classes or None)`` of one split of an ``.npz`` file."""
    fix = "save it with np.savez(PATH, x_train=..., y_train=..., x_test=..., y_test=...)"
    try:
        with np.load(path, allow_pickle=False) as f:
            keys = list(f.keys())
            for key in (f"x_{split}", f"y_{split}"):
                if key not in keys:
                    raise ConfigError(
                        f"{what} has no array {key!r} (it has {', '.join(keys) or 'none'}): {fix}"
                    )
            x, y = f[f"x_{split}"], f[f"y_{split}"]
            classes = [str(c) for c in f["classes"]] if "classes" in keys else None
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise ConfigError(f"{what} is not a readable .npz file ({e}): {fix}") from None
    if x.dtype != np.uint8:
        raise ConfigError(
            f"{what}: x_{split} is {x.dtype}, expected uint8 in 0..255: "
            f"save x_{split}=(x * 255).round().astype(np.uint8) for images in [0, 1]"
        )
    if x.ndim == 4 and x.shape[-1] not in (1, 3) and x.shape[1] in (1, 3):
        raise ConfigError(
            f"{what}: x_{split} {x.shape} looks channels-first: save x.transpose(0, 2, 3, 1) (NHWC)"
        )
    if x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[-1] not in (1, 3)):
        raise ConfigError(f"{what}: x_{split} has shape {x.shape}, expected (N, H, W) or (N, H, W, 1|3)")
    if y.dtype.kind not in "iu" or y.shape != (len(x),):
        raise ConfigError(
            f"{what}: y_{split} is {y.dtype} {y.shape}, expected integer labels of shape ({len(x)},): "
            f"save y_{split}=y.astype(np.int64)"
        )
    if len(x) == 0:
        raise ConfigError(f"{what}: x_{split} is empty: save at least one {split} image")
    if y.min() < 0:  # -1 would silently index the last class
        raise ConfigError(f"{what}: y_{split} holds negative labels (min {int(y.min())}): use class indices 0..C-1")
    return x, y.astype(np.int64), classes


@register_prefix("npz")
def load_npz(
    path: Path,
    split: str = "train",
    *,
    image_size: int | None = None,
    channels: int | None = None,
    transform: Transform | None = None,
    max_samples: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> ArrayImageDataset:
    """``npz:PATH``: arrays ``x_train, y_train, x_test, y_test`` (uint8 NHW or NHWC, integer labels).

    An optional string array ``classes`` names the classes (else ``"0"``, ``"1"``, ...).

    Args:
        path: the ``.npz`` file.
        split: ``"train"`` or ``"test"``.
        image_size, channels, transform: as :class:`ArrayImageDataset` (resize per item; 1 or 3 channels).
        max_samples, seed: seeded class-stratified subset (None keeps all).
        progress: unused (loading is one read); accepted so every loader takes it.

    Example:
        >>> train = load_dataset("npz:/work/shared/data/mnist.npz", max_samples=1000)  # doctest: +SKIP
    """
    path = Path(path).expanduser()
    what = f"npz:{path}"
    if not path.is_file():
        raise DatasetNotFoundError(
            f"{what}: no such file: pass npz:PATH with arrays x_train, y_train, x_test, y_test"
        )
    x, y, classes = read_npz(path, split, what)
    if classes is None:
        classes = [str(c) for c in range(int(y.max()) + 1 if len(y) else 0)]
    return array_dataset(
        x,
        y,
        classes,
        image_size=image_size,
        channels=channels,
        transform=transform,
        max_samples=max_samples,
        seed=seed,
    )


def __getattr__(name: str) -> Any:
    # ImageNet and CelebA moved to obstructlib.data.large; keep `folders.load_celeba` & co. working
    # (imported lazily: large imports this module).
    if name in ("load_imagenet", "load_celeba", "CelebADataset"):
        from obstructlib.data import large

        return getattr(large, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
