"""Image files on disk: ``folder:PATH`` and ``npz:PATH`` specs, ImageNet and CelebA.

- ``folder:PATH``: an ImageFolder tree ``PATH/{train,test}/<class>/*.jpg`` decoded once into one
  uint8 array (optionally cached as ``.npy``), or decoded per item with ``in_memory=False``.
- ``npz:PATH``: arrays ``x_train, y_train, x_test, y_test`` (uint8 NHW or NHWC; optional ``classes``).
- ``imagenet`` and ``celeba``: registered names read lazily from ``ROOT/imagenet`` and ``ROOT/celeba``.

Every loader takes ``max_samples`` and ``seed`` for a seeded class-stratified subset
(:func:`stratified_indices`), which is how the ``quick`` profile runs on 2 CPU cores.
"""

from __future__ import annotations

import copy
import hashlib
import os
import zipfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from obstructlib.data.base import (
    ArrayImageDataset,
    missing,
    register_dataset,
    register_prefix,
    to_float_image,
)
from obstructlib.errors import ConfigError, DatasetNotFoundError, ObstructError

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
FETCH = "python data_scripts/{name}.py --root {root}"
_GREY_MODES = ("1", "L", "I", "I;16", "F")
Transform = Callable[[torch.Tensor], torch.Tensor]


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


# ------------------------------------------------------------------------------------------ folder:
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


# ------------------------------------------------------------------------------------------ imagenet
@register_dataset(
    "imagenet",
    fetch=FETCH.format(name="imagenet", root="{root}"),
    subdir="imagenet",
    description="ImageNet-1k ImageFolder (train/, val/<wnid>/), decoded lazily",
)
def load_imagenet(
    root: Path,
    split: str = "train",
    *,
    image_size: int = 224,
    channels: int | None = 3,
    transform: Transform | None = None,
    max_samples: int | None = None,
    seed: int = 0,
    download: bool = False,
    progress: bool = True,
) -> ImageFolderDataset:
    """ImageNet from ``ROOT/imagenet/{train,val}/<wnid>/*.JPEG`` (``"test"`` reads ``val/``), lazily.

    Each image is resized on its short side to ``image_size`` and centre-cropped. With all 1000 wnids
    present, ``classes`` are open_clip's readable class names (for zero-shot) and ``wnids`` the folders.

    Args:
        root: the data root; image_size: output side (pixels); channels: 3 (RGB) or 1.
        transform, max_samples, seed: as :func:`load_image_folder`.
        download: unsupported (ImageNet needs a login); the error says how to fetch it.
    """
    root = Path(root)
    base, sub = root / "imagenet", {"train": "train", "test": "val", "val": "val"}.get(split)
    if sub is None:
        raise ConfigError(f"imagenet: split {split!r} is not 'train' or 'test' (val)")
    if not (base / sub).is_dir():
        raise missing("imagenet", base / sub, fetch_hint("imagenet", root))
    paths, labels, wnids = scan_image_folder(base, sub, ("train", "val"), "imagenet")
    idx = stratified_indices(labels, max_samples, seed)
    classes = wnids
    if len(wnids) == 1000:
        from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES  # indexed by sorted wnid

        classes = list(IMAGENET_CLASSNAMES)
    ds = ImageFolderDataset(
        [paths[i] for i in idx],
        labels[idx],
        classes,
        image_size=image_size,
        channels=channels,
        transform=transform,
    )
    ds.wnids = wnids
    return ds


# -------------------------------------------------------------------------------------------- celeba
class CelebADataset(ImageFolderDataset):
    """CelebA faces with binary attributes; ``labels`` are the chosen attribute(s).

    Attributes:
        attr_names: the 40 attribute names of ``list_attr_celeba.txt``.
        attrs: int64 ``(N, 40)`` in {0, 1} (the file's -1 becomes 0).
        attributes: the chosen target attribute names.
    """

    _per_sample = ("paths", "labels", "attrs")


_CELEBA_SPLITS = {"train": 0, "val": 1, "valid": 1, "test": 2, "all": None}


@register_dataset(
    "celeba",
    fetch=FETCH.format(name="celeba", root="{root}"),
    subdir="celeba",
    description="CelebA aligned faces (178x218) with 40 binary attributes, decoded lazily",
)
def load_celeba(
    root: Path,
    split: str = "train",
    *,
    attributes: Sequence[str] | str | None = None,
    image_size: int | None = None,
    channels: int | None = None,
    transform: Transform | None = None,
    max_samples: int | None = None,
    seed: int = 0,
    download: bool = False,
    progress: bool = True,
) -> CelebADataset:
    """CelebA from ``ROOT/celeba/{img_align_celeba/, list_attr_celeba.txt, list_eval_partition.txt}``.

    Args:
        root: the data root.
        split: ``"train"`` (partition 0), ``"val"`` (1), ``"test"`` (2) or ``"all"``.
        attributes: target attribute name(s). One name: label = 0/1 with classes ``["not X", "X"]``;
            several (or None = all 40): label = the int64 attribute vector, classes = the names.
        image_size: centre square crop, then resize to this side (pixels); None keeps 178x218.
        channels, transform: as :class:`ImageFolderDataset`.
        max_samples, seed: seeded subset, stratified by the label when it is one attribute.
        download: unsupported (Google Drive quotas); the error says how to fetch it.

    Example:
        >>> ds = load_dataset("celeba", split="test", attributes=["Smiling"], image_size=64)  # doctest: +SKIP
    """
    root = Path(root)
    base = root / "celeba"
    needed = [base / "img_align_celeba", base / "list_attr_celeba.txt", base / "list_eval_partition.txt"]
    for p in needed:
        if not p.exists():
            raise missing("celeba", p, fetch_hint("celeba", root))
    if split not in _CELEBA_SPLITS:
        raise ConfigError(f"celeba: split {split!r} is not one of {', '.join(_CELEBA_SPLITS)}")
    lines = needed[1].read_text().splitlines()
    attr_names = lines[1].split()
    rows = [line.split() for line in lines[2:] if line.strip()]
    files = [r[0] for r in rows]
    attrs = (np.array([r[1:] for r in rows], dtype=np.int64) > 0).astype(np.int64)
    part = dict(line.split()[:2] for line in needed[2].read_text().splitlines() if line.strip())
    want = _CELEBA_SPLITS[split]
    keep = np.array([want is None or int(part.get(f, -1)) == want for f in files], dtype=bool)
    chosen = (
        attr_names
        if attributes is None
        else [attributes]
        if isinstance(attributes, str)
        else list(attributes)
    )
    unknown = [a for a in chosen if a not in attr_names]
    if unknown:
        raise ConfigError(f"celeba: unknown attribute(s) {unknown}: use names from {', '.join(attr_names)}")
    cols = [attr_names.index(a) for a in chosen]
    labels = attrs[:, cols[0]] if len(cols) == 1 else attrs[:, cols]
    classes = [f"not {chosen[0]}", chosen[0]] if len(cols) == 1 else chosen
    idx = np.flatnonzero(keep)[stratified_indices(labels[keep], max_samples, seed)]
    if len(idx) == 0:
        raise ConfigError(f"celeba: no images in split {split!r}: check {needed[2]}")
    paths = [str(needed[0] / files[i]) for i in idx]
    ds = CelebADataset(
        paths, labels[idx], classes, image_size=image_size, channels=channels, transform=transform
    )
    ds.attrs, ds.attr_names, ds.attributes = attrs[idx], attr_names, chosen
    return ds
