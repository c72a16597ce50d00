"""Classification datasets read from their original on-disk formats (torchvision's layouts).

| name | files under ROOT | format |
|---|---|---|
| cifar10 | ``cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}`` | python pickles |
| cifar100 | ``cifar-100-python/{train,test,meta}`` | python pickles, fine + coarse labels |
| mnist, fashion_mnist | ``MNIST/raw/``, ``FashionMNIST/raw/`` ``*-idx?-ubyte[.gz]`` | IDX |
| usps | ``usps/{usps.bz2,usps.t.bz2}`` (or directly in ROOT) | libsvm, values in [-1, 1] |
| svhn | ``svhn/{train,test}_32x32.mat`` (or directly in ROOT) | MATLAB, X ``(32, 32, 3, N)`` |
| stl10 | ``stl10_binary/{train,test}_{X,y}.bin, class_names.txt`` | raw bytes, column-major |
| mnist_m | ``mnist_m/mnist_m.npz`` | npz, uint8 NHWC 28x28x3 |

Each loader returns an :class:`ArrayImageDataset` (uint8 NHWC in memory; grey stays 1 channel
unless ``channels=3``) and takes the :class:`~obstructlib.data.folders.LoadOptions`: ``image_size``,
``channels``, ``transform``, ``max_samples`` and ``seed`` (seeded class-stratified subset, what the
``quick`` profile uses), ``download`` and ``progress``. A missing dataset of
:data:`~obstructlib.data.fetchers.AUTOMATIC` is fetched on first use (``obstruct data fetch NAME``'s
checked, resumable download; ``download=False`` or ``$OBSTRUCT_DOWNLOAD=0`` forbids it); otherwise
it raises :class:`DatasetNotFoundError` naming the path and ``obstruct data fetch NAME --root ROOT``.

A loader only says where its files are and how to read them (a small ``_read_*`` function that
returns :class:`_Arrays`); :func:`_load` does the rest for all of them.
"""

from __future__ import annotations

import bz2
import gzip
import pickle
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from obstructlib.data.base import ArrayImageDataset, missing, register_dataset

# Importing folders also registers folder: and npz: (base imports only this module).
from obstructlib.data.folders import FETCH, LoadOptions, Transform, array_dataset, fetch_hint, read_npz
from obstructlib.errors import ConfigError, DatasetNotFoundError, ObstructError

if TYPE_CHECKING:
    from typing_extensions import Unpack

DIGITS = [str(d) for d in range(10)]
FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]


def _register(name: str, subdir: str, description: str) -> Callable:
    return register_dataset(
        name, fetch=FETCH.format(name=name, root="{root}"), subdir=subdir, description=description
    )


# ------------------------------------------------------------------------------------ shared plumbing
@dataclass
class _Arrays:
    """What a ``_read_*`` function returns: the arguments of :func:`array_dataset`."""

    images: np.ndarray
    labels: np.ndarray
    classes: list[str]
    per_sample: dict[str, np.ndarray] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


class _BadFile(Exception):
    """A reader's complaint about one file; :func:`_load` adds the dataset name and the fetch hint."""

    def __init__(self, path: Path, why: str) -> None:
        super().__init__(why)
        self.path, self.why = path, why


# A reader turns the located files (in the order they were asked for) into arrays; ``fix`` is the
# remedy to append to its own error lines ("delete it and fetch again with: ...").
Reader = Callable[[list[Path], str], _Arrays]


def _check_split(name: str, split: str, allowed: tuple[str, ...] = ("train", "test")) -> None:
    if split not in allowed:
        raise ConfigError(f"{name}: split {split!r} is not one of {', '.join(allowed)}")


def _first(*candidates: Path) -> Path | None:
    return next((p for p in candidates if p.is_file()), None)


def _download(name: str, root: Path, progress: bool) -> None:
    from obstructlib.data.fetchers import fetch

    try:
        fetch(name, root, progress=progress)
    except ObstructError as e:  # FetchError, ManualStepNeeded: one line says why
        reason = " ".join(str(e).split())[:300]
        raise DatasetNotFoundError(
            f"could not download {name!r} to {root} ({reason}): fetch it with: {fetch_hint(name, root)}"
        ) from None


def _locate(
    name: str, root: Path, files: Sequence[Path | tuple[Path, ...]], download: bool | None, progress: bool = True
) -> list[Path]:
    """The first existing candidate of each required file (after a download if allowed).

    Each entry of ``files`` is a path or a tuple of candidate paths; the first candidate is where
    the fetcher puts the file and what the one-line not-found error names. ``download`` None
    fetches the sets of :data:`~obstructlib.data.fetchers.AUTOMATIC` unless ``$OBSTRUCT_DOWNLOAD=0``.
    """
    from obstructlib.data.fetchers import AUTOMATIC, FETCHERS, downloads_allowed

    candidates = [f if isinstance(f, tuple) else (f,) for f in files]
    found = [_first(*c) for c in candidates]
    if download is None:
        download = name in AUTOMATIC and downloads_allowed()
    if None in found and download and name in FETCHERS:
        _download(name, root, progress)
        found = [_first(*c) for c in candidates]
    absent = [c[0] for c, p in zip(candidates, found) if p is None]
    if absent:
        where = absent[0] if absent[0].parent.is_dir() else absent[0].parent
        raise missing(name, where, fetch_hint(name, root))
    return [p for p in found if p is not None]  # every entry was found (absent is empty)


def _load(
    name: str,
    root: Path,
    split: str,
    files: Sequence[Path | tuple[Path, ...]],
    read: Reader,
    splits: tuple[str, ...] = ("train", "test"),
    *,
    image_size: int | None = None,
    channels: int | None = None,
    transform: Transform | None = None,
    max_samples: int | None = None,
    seed: int = 0,
    download: bool | None = None,
    progress: bool = True,  # the progress of a download on first use; loading shows no bar
) -> ArrayImageDataset:
    """Check the split, find (or download) ``files``, read them and build the (subset) dataset."""
    root = Path(root)
    _check_split(name, split, splits)
    paths = _locate(name, root, files, download, progress)
    fix = f"delete it and fetch again with: {fetch_hint(name, root)}"
    try:
        arrays = read(paths, fix)
    except _BadFile as e:
        raise ObstructError(f"{e.path} is not a valid {name} file ({e.why}): {fix}") from None
    return array_dataset(
        arrays.images,
        arrays.labels,
        arrays.classes,
        image_size=image_size,
        channels=channels,
        transform=transform,
        max_samples=max_samples,
        seed=seed,
        per_sample=arrays.per_sample,
        extra=arrays.extra,
    )


# ---------------------------------------------------------------------------------------------- CIFAR
class _CifarUnpickler(pickle.Unpickler):
    """An unpickler that builds numpy arrays, dicts, lists and strings, and refuses anything else.

    A plain ``pickle.load`` runs whatever callable the file names (``os.system`` included), and
    anyone can drop a file under ``--data-root``; the CIFAR batches need numpy's array
    reconstruction and nothing more, so every other global is refused before it is imported.
    """

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy._core.numeric", "_frombuffer"), ("numpy.core.numeric", "_frombuffer"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("copy_reg", "_reconstructor"), ("copyreg", "_reconstructor"),
        ("_codecs", "encode"),  # how Python 3 writes bytes at protocol 2
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"it names {module}.{name}, which a CIFAR batch never does (refused unread)")
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict[str, Any]:
    # The files are Python 2 pickles: latin1 decodes their numpy arrays; keys may be str or bytes.
    try:
        with open(path, "rb") as f:
            d = _CifarUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError) as e:
        raise _BadFile(path, f"{type(e).__name__}: {e}") from None
    if not isinstance(d, dict):
        raise _BadFile(path, "not a dict")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}


def _names(values: Any) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def _cifar_images(d: dict[str, Any], path: Path) -> np.ndarray:
    if "data" not in d:
        raise _BadFile(path, "no 'data' entry")
    # Rows are 3072 bytes: the red, green and blue 32x32 planes, row-major.
    return np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


def _read_cifar10(paths: list[Path], fix: str) -> _Arrays:
    *batches, meta = paths
    parts = [_unpickle(p) for p in batches]
    images = np.concatenate([_cifar_images(d, p) for d, p in zip(parts, batches)])
    labels = np.concatenate([np.asarray(d["labels"], dtype=np.int64) for d in parts])
    return _Arrays(images, labels, _names(_unpickle(meta)["label_names"]))


def _read_cifar100(paths: list[Path], fix: str, label_type: str) -> _Arrays:
    data_path, meta_path = paths
    d, meta = _unpickle(data_path), _unpickle(meta_path)
    images = _cifar_images(d, data_path)
    fine = np.asarray(d["fine_labels"], dtype=np.int64)
    coarse = np.asarray(d["coarse_labels"], dtype=np.int64)
    fine_classes, coarse_classes = _names(meta["fine_label_names"]), _names(meta["coarse_label_names"])
    fine_to_coarse = np.full(len(fine_classes), -1, dtype=np.int64)
    fine_to_coarse[fine] = coarse
    labels, classes = (fine, fine_classes) if label_type == "fine" else (coarse, coarse_classes)
    return _Arrays(
        images,
        labels,
        classes,
        per_sample={"fine_labels": fine, "coarse_labels": coarse},
        extra={
            "fine_classes": fine_classes,
            "coarse_classes": coarse_classes,
            "fine_to_coarse": fine_to_coarse,
        },
    )


@_register("cifar10", "cifar-10-batches-py", "CIFAR-10: 50k/10k 32x32 RGB images, 10 classes")
def load_cifar10(root: Path, split: str = "train", **options: Unpack[LoadOptions]) -> ArrayImageDataset:
    """CIFAR-10 from ``ROOT/cifar-10-batches-py`` (classes from ``batches.meta``).

    Args:
        root: the data root; split: ``"train"`` or ``"test"``.
        **options: :class:`~obstructlib.data.folders.LoadOptions` (``image_size`` None keeps 32,
            ``channels`` None keeps 3, ``max_samples``/``seed`` subset, ``download`` on first use).

    Shape:
        Items are ``(image float (3, 32, 32) in [0, 1], label int in 0..9)``.

    Example:
        >>> train = load_dataset("cifar10", root="data", split="train", max_samples=5000)  # doctest: +SKIP
    """
    base = Path(root) / "cifar-10-batches-py"
    batches = [base / f"data_batch_{i}" for i in range(1, 6)] if split == "train" else [base / "test_batch"]
    return _load("cifar10", root, split, [*batches, base / "batches.meta"], _read_cifar10, **options)


@_register(
    "cifar100", "cifar-100-python", "CIFAR-100: 50k/10k 32x32 RGB images, 100 fine / 20 coarse classes"
)
def load_cifar100(
    root: Path, split: str = "train", *, label_type: str = "fine", **options: Unpack[LoadOptions]
) -> ArrayImageDataset:
    """CIFAR-100 from ``ROOT/cifar-100-python/{train,test,meta}``.

    Args:
        label_type: ``"fine"`` (100 classes, default) or ``"coarse"`` (the 20 superclasses).
        Others: as :func:`load_cifar10`.

    The dataset also carries ``fine_labels``, ``coarse_labels`` (int64 ``(N,)``), ``fine_classes``,
    ``coarse_classes`` and ``fine_to_coarse`` (int64 ``(100,)``, the superclass of each fine class,
    read off this split's labels; -1 for a fine class absent from it), which Unlearnable Clusters'
    relabelling protocols use.

    Example:
        >>> ds = load_dataset("cifar100", root="data", split="test", label_type="coarse")  # doctest: +SKIP
    """
    _check_split("cifar100", split)
    if label_type not in ("fine", "coarse"):
        raise ConfigError(f"cifar100: label_type={label_type!r} must be 'fine' or 'coarse'")
    base = Path(root) / "cifar-100-python"
    read = partial(_read_cifar100, label_type=label_type)
    return _load("cifar100", root, split, [base / split, base / "meta"], read, **options)


# ---------------------------------------------------------------------------------------------- MNIST
def read_idx(path: Path | str, ndim: int, fix: str = "delete it and fetch it again") -> np.ndarray:
    """Read an IDX file (raw or ``.gz``) of unsigned bytes into an array of ``ndim`` dimensions.

    The magic number is ``00 00 08 ndim`` (08 = unsigned byte); anything else, or a size that
    disagrees with the header, raises :class:`ObstructError` with ``fix`` as the remedy.
    """
    path = Path(path)
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise ObstructError(f"{path} cannot be read ({type(e).__name__}: {e}): {fix}") from None
    if len(data) < 4 + 4 * ndim or data[:4] != bytes((0, 0, 8, ndim)):
        raise ObstructError(
            f"{path} is not an IDX file of {ndim}-d uint8 data (magic {data[:4].hex() or 'none'}, "
            f"expected 0000080{ndim}): {fix}"
        )
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise ObstructError(
            f"{path} holds {body.size} bytes after its header, "
            f"expected {int(np.prod(dims))} for {dims}: {fix}"
        )
    return body.reshape(dims).copy()  # writable, so torch does not warn


def _read_idx_pair(paths: list[Path], fix: str, classes: list[str]) -> _Arrays:
    img_path, lbl_path = paths
    images, labels = read_idx(img_path, 3, fix), read_idx(lbl_path, 1, fix).astype(np.int64)
    if len(images) != len(labels):
        raise ObstructError(f"{img_path} has {len(images)} images but {lbl_path} {len(labels)} labels: {fix}")
    return _Arrays(images, labels, classes)


def _idx_files(root: Path, folder: str, split: str) -> list[tuple[Path, ...]]:
    raw = Path(root) / folder / "raw"
    prefix = "train" if split == "train" else "t10k"
    stems = [f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"]
    return [(raw / s, raw / f"{s}.gz") for s in stems]


@_register("mnist", "MNIST", "MNIST: 60k/10k 28x28 grey handwritten digits")
def load_mnist(root: Path, split: str = "train", **options: Unpack[LoadOptions]) -> ArrayImageDataset:
    """MNIST from ``ROOT/MNIST/raw/*-idx?-ubyte[.gz]`` (1 channel unless ``channels=3``).

    Args: as :func:`load_cifar10`. A file with a wrong IDX magic number raises one clear line.
    """
    files = _idx_files(root, "MNIST", split)
    return _load("mnist", root, split, files, partial(_read_idx_pair, classes=DIGITS), **options)


@_register("fashion_mnist", "FashionMNIST", "Fashion-MNIST: 60k/10k 28x28 grey clothing images, 10 classes")
def load_fashion_mnist(root: Path, split: str = "train", **options: Unpack[LoadOptions]) -> ArrayImageDataset:
    """Fashion-MNIST from ``ROOT/FashionMNIST/raw/`` (same files as MNIST). Args: as :func:`load_mnist`."""
    files = _idx_files(root, "FashionMNIST", split)
    read = partial(_read_idx_pair, classes=FASHION_CLASSES)
    return _load("fashion_mnist", root, split, files, read, **options)


# -------------------------------------------------------------------------------------- USPS, SVHN, STL
def _read_usps(paths: list[Path], fix: str) -> _Arrays:
    (path,) = paths
    try:
        with bz2.open(path, "rt") as f:
            rows = [line.split(None, 1) + [""] for line in f if line.strip()]
        labels = np.array([r[0] for r in rows], dtype=np.float64).astype(np.int64) - 1
        # Parse every "index:value" token at once (a Python loop over 1.9M tokens takes ~10 s).
        tokens = " ".join(r[1] for r in rows).replace(":", " ").split()
        pairs = np.array(tokens, dtype=np.float64).reshape(-1, 2)
        row = np.repeat(np.arange(len(rows)), [r[1].count(":") for r in rows])
        pixels = np.zeros((len(rows), 256), dtype=np.float64)  # libsvm may omit zeros: 0 stays 0
        pixels[row, pairs[:, 0].astype(np.int64) - 1] = pairs[:, 1]
    except (OSError, EOFError, ValueError, IndexError) as e:
        raise _BadFile(path, f"{type(e).__name__}: {e}") from None
    images = np.clip(np.rint((pixels + 1.0) * 127.5), 0, 255).astype(np.uint8).reshape(-1, 16, 16)
    return _Arrays(images, labels, DIGITS)


def _read_svhn(paths: list[Path], fix: str) -> _Arrays:
    import scipy.io

    (path,) = paths
    try:
        mat = scipy.io.loadmat(str(path))
        images = np.ascontiguousarray(np.asarray(mat["X"], dtype=np.uint8).transpose(3, 0, 1, 2))
        labels = np.asarray(mat["y"], dtype=np.int64).reshape(-1)
    except (OSError, ValueError, KeyError, NotImplementedError) as e:
        raise _BadFile(path, f"{type(e).__name__}: {e}") from None
    labels[labels == 10] = 0
    return _Arrays(images, labels, DIGITS)


def _read_stl10(paths: list[Path], fix: str) -> _Arrays:
    xp, yp, names = paths
    raw = np.fromfile(xp, dtype=np.uint8)
    labels = np.fromfile(yp, dtype=np.uint8).astype(np.int64) - 1
    if raw.size != len(labels) * 3 * 96 * 96:
        raise _BadFile(xp, f"{raw.size} bytes for {len(labels)} labels of 3x96x96 images")
    images = np.ascontiguousarray(raw.reshape(-1, 3, 96, 96).transpose(0, 3, 2, 1))  # (N, C, W, H) -> NHWC
    classes = [line.strip() for line in names.read_text().splitlines() if line.strip()]
    return _Arrays(images, labels, classes)


@_register("usps", "usps", "USPS: 7,291/2,007 16x16 grey digits")
def load_usps(root: Path, split: str = "train", **options: Unpack[LoadOptions]) -> ArrayImageDataset:
    """USPS from ``ROOT/usps/usps.bz2`` / ``usps.t.bz2`` (libsvm; also accepted directly in ROOT).

    Pixels ``v`` in [-1, 1] become ``round((v + 1) * 127.5)`` (torchvision truncates instead, which
    darkens by under one grey level); labels 1..10 become 0..9 as in torchvision. Args: as :func:`load_mnist`.
    """
    root = Path(root)
    fname = "usps.bz2" if split == "train" else "usps.t.bz2"
    return _load("usps", root, split, [(root / "usps" / fname, root / fname)], _read_usps, **options)


@_register("svhn", "svhn", "SVHN: 73,257/26,032 32x32 RGB house-number digits")
def load_svhn(root: Path, split: str = "train", **options: Unpack[LoadOptions]) -> ArrayImageDataset:
    """SVHN (cropped digits) from ``ROOT/svhn/{train,test,extra}_32x32.mat`` (or directly in ROOT).

    ``X`` is stored ``(32, 32, 3, N)``; label 10 means digit 0 (mapped to 0 as torchvision does).
    Args: as :func:`load_cifar10` (``split="extra"`` also works when called directly).
    """
    root = Path(root)
    fname = f"{split}_32x32.mat"
    files = [(root / "svhn" / fname, root / fname)]
    return _load("svhn", root, split, files, _read_svhn, ("train", "test", "extra"), **options)


@_register("stl10", "stl10_binary", "STL-10: 5k/8k labelled 96x96 RGB images, 10 classes")
def load_stl10(root: Path, split: str = "train", **options: Unpack[LoadOptions]) -> ArrayImageDataset:
    """STL-10 labelled splits from ``ROOT/stl10_binary/{split}_X.bin, {split}_y.bin, class_names.txt``.

    Images are stored column-major ``(N, 3, 96, 96)`` (each plane transposed); labels 1..10 become
    0..9. The unlabelled split is not offered. Args: as :func:`load_cifar10`.
    """
    base = Path(root) / "stl10_binary"
    files = [base / f"{split}_X.bin", base / f"{split}_y.bin", base / "class_names.txt"]
    return _load("stl10", root, split, files, _read_stl10, **options)


@_register("mnist_m", "mnist_m", "MNIST-M: MNIST digits blended with BSDS500 photo crops, 28x28 RGB")
def load_mnist_m(root: Path, split: str = "train", **options: Unpack[LoadOptions]) -> ArrayImageDataset:
    """MNIST-M from ``ROOT/mnist_m/mnist_m.npz`` (uint8 NHWC 28x28x3), built by ``obstruct data fetch mnist_m``.

    ``download=True`` builds it (it needs MNIST in ``ROOT`` and downloads BSDS500); it is not in
    :data:`~obstructlib.data.fetchers.AUTOMATIC`, so by default the error names the command.
    """

    def read(paths: list[Path], fix: str) -> _Arrays:
        images, labels, classes = read_npz(paths[0], split, f"mnist_m ({paths[0]})")
        return _Arrays(images, labels, classes or DIGITS)

    return _load("mnist_m", root, split, [Path(root) / "mnist_m" / "mnist_m.npz"], read, **options)
