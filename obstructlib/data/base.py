"""Dataset specs, the dataset registry and the in-memory image dataset every loader returns.

A *dataset spec* is what a user passes on the command line (``--dataset SPEC``):

- a registered name (``cifar10``, ``mnist``, ``digits``, ``synthetic-captions`` ...), read from a
  torchvision-style layout under ``root`` (the CLI's ``--data-root``);
- ``folder:PATH``: an ImageFolder tree with ``train/`` and ``test/``;
- ``npz:PATH``: ``x_train, y_train, x_test, y_test`` as uint8 NHW or NHWC;
- ``csv:PATH``: image-caption pairs, columns ``image,caption[,split]``, paths relative to the CSV;
- any of these followed by a style suffix, ``+mnistm`` or ``+invert`` (:mod:`obstructlib.data.domains`).

Images leave every dataset as float tensors in [0, 1], shape ``(C, H, W)``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from obstructlib.errors import ConfigError, DatasetNotFoundError

SPLITS = ("train", "test")

T_co = TypeVar("T_co", covariant=True)


class SizedDataset(Protocol[T_co]):
    """A map-style dataset that knows its length: ``len(ds)`` and ``ds[i]`` for ``i`` in ``0..len(ds)-1``.

    :class:`torch.utils.data.Dataset` declares no ``__len__``, so this protocol is what functions
    that need ``len(dataset)`` accept. Every dataset of this package, torchvision's datasets and
    :class:`~torch.utils.data.Subset`, :class:`~torch.utils.data.TensorDataset` and
    :class:`~torch.utils.data.ConcatDataset` satisfy it (structurally, no subclassing needed).
    ``SizedDataset[T]`` types the items; a bare ``SizedDataset`` means items of any type.
    """

    def __len__(self) -> int: ...

    def __getitem__(self, index: int, /) -> T_co: ...


def default_data_root() -> Path:
    """``$OBSTRUCT_DATA``, else ``<repo>/data`` in a source checkout, else ``./data``: one rule for all.

    The notebooks, the CLI, the runners and ``obstruct data fetch`` use it alike
    (:func:`obstructlib.data.fetchers._common.default_root`).
    """
    from obstructlib.data.fetchers._common import default_root

    return default_root()


_DRIVE = Path("/content/drive/MyDrive")  # where Colab mounts Google Drive


def default_runs_root() -> Path:
    """Where run folders (checkpoints, ``results.json``) go by default: one rule for notebooks and the CLI.

    ``$OBSTRUCT_RUNS`` if set; else, where Google Drive is mounted at ``/content/drive`` (Colab),
    ``MyDrive/obstructlib/runs``, which survives a recycled runtime (``/content`` does not), so a
    re-run resumes every stage from its checkpoint; else ``runs`` of the working directory.
    """
    env = os.environ.get("OBSTRUCT_RUNS", "").strip()
    if env:
        return Path(env).expanduser()
    if _DRIVE.is_dir():
        return _DRIVE / "obstructlib" / "runs"
    return Path("runs")


def fetch_many(dataset: Any, indices: Sequence[int]) -> list:
    """Items ``indices`` of ``dataset``: one batched ``__getitems__`` call where it has one, else item by item.

    ``DataLoader`` calls ``__getitems__`` once per batch when the dataset defines it; the wrappers
    of the library pass the whole batch down with this function, so an array-backed dataset decodes
    (converts, resizes, adds noise to) a batch in one call and yields exactly the items that
    per-item indexing would.

    Example:
        >>> ds = ArrayImageDataset(np.zeros((4, 2, 2), np.uint8), [0, 1, 2, 3])
        >>> [y for _, y in fetch_many(ds, [3, 1])]
        [3, 1]
    """
    getitems = getattr(dataset, "__getitems__", None)
    return getitems(list(indices)) if callable(getitems) else [dataset[i] for i in indices]


def to_float_image(images: np.ndarray | torch.Tensor, image_size: int | None = None) -> torch.Tensor:
    """uint8 ``(N, H, W, C)`` or ``(H, W, C)`` (or grey ``(N, H, W)``) to float ``(N, C, H, W)`` in [0, 1].

    Args:
        images: uint8 array, channels last (a single image or a batch).
        image_size: resize (bilinear, antialiased) to a square of this many pixels; None keeps it.

    Shape:
        Output ``(N, C, H, W)`` for a batch, ``(C, H, W)`` for a single image.
    """
    x = torch.as_tensor(np.asarray(images))
    single = x.ndim == 3 and x.shape[-1] in (1, 3) or x.ndim == 2
    if x.ndim == 2:
        x = x[None, :, :, None]
    elif single:
        x = x[None]
    elif x.ndim == 3:  # (N, H, W) grey batch
        x = x[..., None]
    x = x.permute(0, 3, 1, 2).float().div_(255.0)
    if image_size is not None and tuple(x.shape[-2:]) != (image_size, image_size):
        x = F.interpolate(
            x, size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False
        )
        x = x.clamp_(0.0, 1.0)
    return x[0] if single else x


class ArrayImageDataset(Dataset):
    """Labelled images held as one uint8 array (or a memory map) and decoded per item.

    Args:
        images: uint8 array ``(N, H, W, C)``; grey images may be ``(N, H, W)``.
        labels: int64 array ``(N,)`` or None for unlabelled data.
        classes: class names, index-aligned with the labels.
        image_size: resize each item to this square size (pixels); None keeps the stored size.
        channels: force 1 or 3 channels (grey is repeated to RGB); None keeps the stored number.
        transform: optional callable on the float ``(C, H, W)`` tensor (augmentation).

    Shape:
        An item is ``(image, label)`` with image float ``(C, H, W)`` in [0, 1] and label an int.

    Example:
        >>> ds = ArrayImageDataset(np.zeros((4, 8, 8, 3), np.uint8), np.arange(4), ["a", "b", "c", "d"])
        >>> ds[1][0].shape, ds[1][1]
        (torch.Size([3, 8, 8]), 1)
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray | Sequence[int] | None = None,
        classes: Sequence[str] | None = None,
        *,
        image_size: int | None = None,
        channels: int | None = None,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        if images.dtype != np.uint8:
            raise ConfigError(
                f"images must be uint8 (got {images.dtype}): scale to 0..255 and cast before loading"
            )
        if images.ndim == 3:
            images = images[..., None]
        if images.ndim != 4:
            raise ConfigError(f"images must be NHW or NHWC (got shape {images.shape})")
        self.images = images
        self.labels = None if labels is None else np.asarray(labels, dtype=np.int64)
        if self.labels is not None and len(self.labels) != len(images):
            raise ConfigError(f"{len(images)} images but {len(self.labels)} labels: the two must match")
        if classes is None and self.labels is not None and len(self.labels):
            classes = [str(c) for c in range(int(self.labels.max()) + 1)]
        self.classes = list(classes) if classes is not None else []
        self.image_size = image_size
        self.channels = channels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    @property
    def targets(self) -> list[int]:
        """Labels as a list of ints (torchvision's attribute name)."""
        return [] if self.labels is None else self.labels.tolist()

    def get_image(self, index: int) -> torch.Tensor:
        """The float ``(C, H, W)`` image at ``index`` before ``transform``."""
        return self.get_images([index])[0]

    def get_images(self, indices: Sequence[int]) -> torch.Tensor:
        """The float images ``(B, C, H, W)`` at ``indices`` in one call (the batched :meth:`get_image`).

        Equal to stacking :meth:`get_image` item by item (the conversion and the resize act on each
        image alone), at a fraction of the per-item cost for small images.
        """
        x = to_float_image(self.images[np.asarray(indices, dtype=np.int64)], self.image_size)
        if self.channels == 3 and x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1).contiguous()
        elif self.channels == 1 and x.shape[1] == 3:
            x = x.mean(1, keepdim=True)
        return x

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        x = self.get_image(index)
        if self.transform is not None:
            x = self.transform(x)
        y = -1 if self.labels is None else int(self.labels[index])
        return x, y

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, int]]:
        """Items ``indices`` with one batched decode (``DataLoader`` calls this once per batch)."""
        if not indices:
            return []
        images = self.get_images(indices)
        out = []
        for index, x in zip(indices, images):
            if self.transform is not None:
                x = self.transform(x)
            out.append((x, -1 if self.labels is None else int(self.labels[index])))
        return out

    def subset(self, indices: Sequence[int] | np.ndarray) -> ArrayImageDataset:
        """A new dataset over ``indices`` (copies only the selected images)."""
        idx = np.asarray(indices, dtype=np.int64)
        return ArrayImageDataset(
            np.ascontiguousarray(self.images[idx]),
            None if self.labels is None else self.labels[idx],
            self.classes,
            image_size=self.image_size,
            channels=self.channels,
            transform=self.transform,
        )


@dataclass(frozen=True)
class DatasetInfo:
    """A registered dataset.

    Attributes:
        name: the name users type (``cifar10``).
        loader: ``loader(root: Path, split: str, **kwargs) -> SizedDataset``.
        kind: ``"classification"`` or ``"captions"``.
        fetch: the exact shell command that puts the files under ``root`` (shown when missing).
        subdir: the folder under ``root`` the loader reads (for ``obstruct info``).
        description: one line for listings.
        embedded: True when the data ships with the package (needs no files).
    """

    name: str
    loader: Callable[..., SizedDataset]
    kind: str = "classification"
    fetch: str = ""
    subdir: str = ""
    description: str = ""
    embedded: bool = False
    splits: tuple[str, ...] = field(default=SPLITS)


_REGISTRY: dict[str, DatasetInfo] = {}
# a loader keeps its own signature (and precise return type) through the registering decorators
LoaderT = TypeVar("LoaderT", bound=Callable[..., SizedDataset])


def register_dataset(
    name: str,
    *,
    kind: str = "classification",
    fetch: str = "",
    subdir: str = "",
    description: str = "",
    embedded: bool = False,
    splits: tuple[str, ...] = SPLITS,
) -> Callable[[LoaderT], LoaderT]:
    """Decorator registering ``loader(root, split, **kwargs)`` under ``name``."""

    def wrap(loader: LoaderT) -> LoaderT:
        _REGISTRY[name] = DatasetInfo(
            name, loader, kind, fetch, subdir or name, description, embedded, splits
        )
        return loader

    return wrap


def list_datasets() -> dict[str, DatasetInfo]:
    """All registered datasets by name."""
    _import_loaders()
    return dict(sorted(_REGISTRY.items()))


def dataset_info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of a registered name, or a :class:`ConfigError` listing the known ones."""
    _import_loaders()
    if name not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY))
        raise ConfigError(
            f"unknown dataset {name!r}: use one of {known}, or folder:PATH, npz:PATH, csv:PATH"
        )
    return _REGISTRY[name]


def missing(name: str, path: Path | str, fetch: str) -> DatasetNotFoundError:
    """The one-line error for a dataset that is not on disk."""
    how = f"fetch it with: {fetch}" if fetch else "put the files there or pass --data-root"
    return DatasetNotFoundError(f"dataset {name!r} not found at {path}: {how}")


def load_dataset(spec: str, root: str | Path | None = None, split: str = "train", **kwargs: Any) -> SizedDataset:
    """Load one split of a dataset from its spec.

    Args:
        spec: a registered name, ``folder:PATH``, ``npz:PATH`` or ``csv:PATH``, optionally with a
            style suffix (``digits+mnistm``).
        root: the data root for registered names (default :func:`default_data_root`).
        split: ``"train"`` or ``"test"``.
        **kwargs: passed to the loader (``image_size``, ``channels``, ``download`` ...).

    Returns:
        A classification dataset (items ``(image, label)``, attribute ``classes``) or a caption
        dataset (items ``(image, caption, image_id)``).

    Example:
        >>> train = load_dataset("digits", split="train")
        >>> x, y = train[0]
    """
    _import_loaders()
    if split not in SPLITS:
        raise ConfigError(f"split {split!r} is not one of {SPLITS}")
    root = Path(root) if root is not None else default_data_root()
    from obstructlib.data.domains import RestyledDataset, split_style

    base, style = split_style(spec)
    if style != "none":  # "digits+mnistm": the base spec's images, restyled (see data.domains)
        return RestyledDataset(load_dataset(base, root, split, **kwargs), style, seed=int(split == "test"))
    if ":" in spec and spec.split(":", 1)[0] in _PREFIX_LOADERS:
        prefix, path = spec.split(":", 1)
        if not path:
            raise ConfigError(f"dataset spec {spec!r} has no path after '{prefix}:'")
        if prefix == "csv" and "channels" in kwargs:  # only classification callers ask for channels
            raise ConfigError(f"{spec} holds image-caption pairs, and this run needs labelled images: "
                              "use folder:PATH (a folder per class) or npz:PATH")
        return _PREFIX_LOADERS[prefix](Path(path).expanduser(), split, **kwargs)
    return dataset_info(spec).loader(root, split, **kwargs)


def dataset_kind(spec: str) -> str:
    """``"classification"`` or ``"captions"`` for a spec, without loading it."""
    from obstructlib.data.domains import split_style

    spec = split_style(spec)[0]
    if spec.startswith("csv:"):
        return "captions"
    if ":" in spec and spec.split(":", 1)[0] in _PREFIX_LOADERS:
        return "classification"
    return dataset_info(spec).kind


# Prefix loaders (folder:, npz:, csv:) register themselves here from the modules that define them.
_PREFIX_LOADERS: dict[str, Callable[..., SizedDataset]] = {}


def register_prefix(prefix: str) -> Callable[[LoaderT], LoaderT]:
    """Decorator registering ``loader(path: Path, split, **kwargs)`` for ``prefix:PATH`` specs."""

    def wrap(loader: LoaderT) -> LoaderT:
        _PREFIX_LOADERS[prefix] = loader
        return loader

    return wrap


def _import_loaders() -> None:
    # The loader modules register themselves on import; import them lazily to keep
    # `import obstructlib` cheap and free of import cycles.
    from obstructlib.data import caption_sets, captions, embedded, large, scenes, vision  # noqa: F401
