"""Image files: decoding them (threaded, cropped and resized) and datasets that decode per item.

- :func:`read_image` / :func:`decode_images`: one file / many files to uint8 arrays.
- :class:`ImageFolderDataset`: labelled files decoded on every access (folders too big for memory).
- :func:`scan_image_folder`: ``(paths, labels, classes)`` of an ImageFolder tree ``BASE/SPLIT/<class>/*``.

The loaders built on them live in :mod:`obstructlib.data.folders` (``folder:``) and
:mod:`obstructlib.data.large` (ImageNet, CelebA).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from obstructlib.data.base import to_float_image
from obstructlib.errors import ConfigError, DatasetNotFoundError, ObstructError

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
_GREY_MODES = ("1", "L", "I", "I;16", "F")
Transform = Callable[[torch.Tensor], torch.Tensor]


# ---------------------------------------------------------------------------------------- decoding
def _size_hw(image_size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    if image_size is None:
        return None
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    if h < 1 or w < 1:
        raise ConfigError(f"image_size={image_size} must be positive (pixels)")
    return int(h), int(w)


def _pil_mode(channels: int | None, first_path: str) -> str:
    if channels not in (None, 1, 3):
        raise ConfigError(f"channels={channels} must be 1, 3 or None (keep the stored channels)")
    if channels is not None:
        return "L" if channels == 1 else "RGB"
    with Image.open(first_path) as im:
        return "L" if im.mode in _GREY_MODES else "RGB"


def _first_size(path: str) -> tuple[int, int]:
    with Image.open(path) as im:
        return im.size[1], im.size[0]


def read_image(path: str | Path, mode: str = "RGB", size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode one image file to uint8 ``(H, W)`` (mode ``"L"``) or ``(H, W, 3)`` (``"RGB"``).

    A differently sized image is centre-cropped to the aspect ratio of ``size = (H, W)`` and resized
    (bilinear, antialiased), so ``size`` square = "centre square crop, then resize".
    """
    try:
        with Image.open(path) as im:
            if size is not None and im.size != (size[1], size[0]):
                im.draft(mode, (size[1], size[0]))  # JPEG: decode at a reduced scale >= size (much faster)
            im = im.convert(mode)
            if size is not None and im.size != (size[1], size[0]):
                (w0, h0), (h, w) = im.size, size
                cw, ch = min(w0, h0 * w / h), min(h0, w0 * h / w)
                box = ((w0 - cw) / 2, (h0 - ch) / 2, (w0 + cw) / 2, (h0 + ch) / 2)
                im = im.resize((w, h), Image.Resampling.BILINEAR, box=box)
            return np.array(im)  # a writable copy (torch warns on read-only arrays)
    except OSError as e:
        raise ObstructError(f"cannot decode image {path} ({e}): delete or replace the file") from None


def decode_images(
    paths: Sequence[str], mode: str, size: tuple[int, int], *, progress: bool = True
) -> np.ndarray:
    """Decode many files into one uint8 ``(N, H, W[, 3])`` array with a thread pool.

    PIL releases the GIL while decoding, so threads overlap decoding with file reads.
    """
    out = np.empty((len(paths), *size, *(() if mode == "L" else (3,))), np.uint8)
    chunk = 256

    def work(start: int) -> int:
        stop = min(start + chunk, len(paths))
        for i in range(start, stop):
            out[i] = read_image(paths[i], mode, size)
        return stop - start

    workers = min(8, 2 * (os.cpu_count() or 1))
    with (
        ThreadPoolExecutor(workers) as pool,
        tqdm(total=len(paths), disable=not progress, desc="decoding images", unit="img") as bar,
    ):
        for n in pool.map(work, range(0, len(paths), chunk)):
            bar.update(n)
    return out


# ------------------------------------------------------------------------------------- lazy datasets
class ImageFolderDataset(Dataset):
    """Labelled image files decoded on every access (for folders too big for memory, e.g. ImageNet).

    Args:
        paths: image files.
        labels: int64 ``(N,)`` class labels (or ``(N, K)`` attribute vectors).
        classes: class names, index-aligned with the labels.
        image_size: square side or ``(H, W)`` in pixels; each image is centre-cropped to that aspect
            ratio and resized. None: the size of the first image (others are cropped/resized to it).
        channels: 1 (grey) or 3 (RGB); None keeps the mode of the first image.
        transform: optional callable on the float ``(C, H, W)`` tensor (augmentation).

    Shape:
        An item is ``(image, label)``: image float ``(C, H, W)`` in [0, 1]; label an int (or an int64
        tensor ``(K,)`` for attribute vectors).

    Example:
        >>> ds = load_dataset("folder:my_images", split="test", in_memory=False)  # doctest: +SKIP
    """

    _per_sample: tuple[str, ...] = ("paths", "labels")

    def __init__(
        self,
        paths: Sequence[str],
        labels: np.ndarray | Sequence[int],
        classes: Sequence[str],
        *,
        image_size: int | tuple[int, int] | None = None,
        channels: int | None = None,
        transform: Transform | None = None,
    ) -> None:
        if len(paths) == 0:
            raise ConfigError("no image files given: check the folder holds .jpg/.png files")
        self.paths = list(map(str, paths))
        self.labels = np.asarray(labels, dtype=np.int64)
        self.classes = list(classes)
        self.size = _size_hw(image_size) or _first_size(self.paths[0])
        self.image_size = image_size
        self.mode = _pil_mode(channels, self.paths[0])
        self.channels = channels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def targets(self) -> list:
        """Labels as a list (torchvision's attribute name)."""
        return self.labels.tolist()

    @property
    def samples(self) -> list[tuple[str, Any]]:
        """``(path, label)`` pairs (torchvision's attribute name)."""
        return list(zip(self.paths, self.targets))

    def get_image(self, index: int) -> torch.Tensor:
        """The float ``(C, H, W)`` image at ``index`` before ``transform``."""
        x = to_float_image(read_image(self.paths[index], self.mode, self.size))
        return x if x.ndim == 3 else x[None]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Any]:
        x = self.get_image(index)
        if self.transform is not None:
            x = self.transform(x)
        y = self.labels[index]
        return x, (int(y) if y.ndim == 0 else torch.from_numpy(y.copy()))

    def subset(self, indices: Sequence[int] | np.ndarray) -> ImageFolderDataset:
        """A new dataset over ``indices`` (shares the files, copies the per-item arrays)."""
        idx = np.asarray(indices, dtype=np.int64)
        new = copy.copy(self)
        for key in self._per_sample:
            value = getattr(self, key)
            setattr(new, key, [value[i] for i in idx] if isinstance(value, list) else value[idx])
        return new


# ------------------------------------------------------------------------------------ ImageFolder trees
def _class_names(base: Path, split_dirs: Sequence[str]) -> list[str]:
    # The union over splits, so a class missing from one split does not shift the others' labels.
    names: set[str] = set()
    for s in split_dirs:
        if (base / s).is_dir():
            names |= {e.name for e in os.scandir(base / s) if e.is_dir()}
    return sorted(names)


def _scan(split_dir: Path, classes: Sequence[str]) -> tuple[list[str], np.ndarray]:
    paths: list[str] = []
    labels: list[int] = []
    for k, name in enumerate(classes):
        for dirpath, dirnames, filenames in sorted(os.walk(split_dir / name, followlinks=True)):
            dirnames.sort()
            files = [
                os.path.join(dirpath, f) for f in sorted(filenames) if f.lower().endswith(IMG_EXTENSIONS)
            ]
            paths += files
            labels += [k] * len(files)
    return paths, np.asarray(labels, dtype=np.int64)


def scan_image_folder(
    base: Path, split_dir: str, split_dirs: Sequence[str], what: str
) -> tuple[list[str], np.ndarray, list[str]]:
    """``(paths, labels, classes)`` of ``base/split_dir/<class>/*`` with classes sorted."""
    if not (base / split_dir).is_dir():
        raise DatasetNotFoundError(
            f"{what}: no directory {base / split_dir}: an image folder needs "
            f"{base}/{{{','.join(split_dirs)}}}/<class>/*.jpg"
        )
    classes = _class_names(base, split_dirs)
    paths, labels = _scan(base / split_dir, classes)
    if not paths:
        raise ConfigError(
            f"{what}: no images ({', '.join(IMG_EXTENSIONS)}) under {base / split_dir}/<class>/"
        )
    return paths, labels, classes
