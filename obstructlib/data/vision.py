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
unless ``channels=3``) and takes ``image_size``, ``channels``, ``transform``, ``max_samples`` and
``seed`` (seeded class-stratified subset, what the ``quick`` profile uses), ``download`` (torchvision
fetches the files where it can) and ``progress``. A missing dataset raises
:class:`DatasetNotFoundError` naming the path and ``python data_scripts/NAME.py --root ROOT``.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import io
import pickle
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from obstructlib.data.base import ArrayImageDataset, missing, register_dataset

# Importing folders also registers folder:, npz:, imagenet and celeba (base imports only this module).
from obstructlib.data.folders import FETCH, Transform, array_dataset, fetch_hint, read_npz
from obstructlib.errors import ConfigError, DatasetNotFoundError, ObstructError

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


def _check_split(name: str, split: str, allowed: tuple[str, ...] = ("train", "test")) -> None:
    if split not in allowed:
        raise ConfigError(f"{name}: split {split!r} is not one of {', '.join(allowed)}")


def _first(*candidates: Path) -> Path | None:
    return next((p for p in candidates if p.is_file()), None)


def _ensure(name: str, root: Path, files: list[Path], download: bool, fetch: Callable[[], Any]) -> None:
    """Raise the one-line not-found error unless ``files`` exist (after a torchvision download if asked)."""
    absent = [p for p in files if not p.is_file()]
    if absent and download:
        try:  # torchvision prints its progress; keep library output clean
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                fetch()
        except Exception as e:  # noqa: BLE001  (network errors arrive as URLError, OSError, RuntimeError...)
            reason = " ".join(f"{type(e).__name__}: {e}".split())[:200]
            raise DatasetNotFoundError(
                f"could not download {name!r} to {root} ({reason}): fetch it with: {fetch_hint(name, root)}"
            ) from None
        absent = [p for p in files if not p.is_file()]
    if absent:
        where = absent[0] if absent[0].parent.is_dir() else absent[0].parent
        raise missing(name, where, fetch_hint(name, root))


def _corrupt(name: str, path: Path, root: Path, why: str) -> ObstructError:
    return ObstructError(
        f"{path} is not a valid {name} file ({why}): delete it and fetch again with: {fetch_hint(name, root)}"
    )


def _common(scope: dict[str, Any]) -> dict[str, Any]:
    # The keyword arguments every loader passes on to array_dataset, picked from its locals().
    return {k: scope[k] for k in ("image_size", "channels", "transform", "max_samples", "seed")}


# ---------------------------------------------------------------------------------------------- CIFAR
def _unpickle(name: str, path: Path, root: Path) -> dict[str, Any]:
    # The files are Python 2 pickles: latin1 decodes their numpy arrays; keys may be str or bytes.
    # pickle runs code from the file: only load CIFAR files you fetched yourself (as torchvision does).
    try:
        with open(path, "rb") as f:
            d = pickle.load(f, encoding="latin1")
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError) as e:
        raise _corrupt(name, path, root, f"{type(e).__name__}: {e}") from None
    if not isinstance(d, dict):
        raise _corrupt(name, path, root, "not a dict")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}


def _names(values: Any) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def _cifar_images(name: str, d: dict[str, Any], path: Path, root: Path) -> np.ndarray:
    if "data" not in d:
        raise _corrupt(name, path, root, "no 'data' entry")
    # Rows are 3072 bytes: the red, green and blue 32x32 planes, row-major.
    return np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


@_register("cifar10", "cifar-10-batches-py", "CIFAR-10: 50k/10k 32x32 RGB images, 10 classes")
def load_cifar10(
    root: Path,
    split: str = "train",
    *,
    image_size: int | None = None,
    channels: int | None = None,
    transform: Transform | None = None,
    max_samples: int | None = None,
    seed: int = 0,
    download: bool = False,
    progress: bool = True,
) -> ArrayImageDataset:
    """CIFAR-10 from ``ROOT/cifar-10-batches-py`` (classes from ``batches.meta``).

    Args:
        root: the data root; split: ``"train"`` or ``"test"``.
        image_size: resize each item to this square side (pixels); None keeps 32.
        channels: 1 or 3; None keeps 3. transform: callable on each float ``(C, H, W)`` item.
        max_samples, seed: seeded class-stratified subset (None keeps all).
        download: fetch with torchvision when the files are missing.
        progress: accepted for a uniform signature (loading shows no bar).

    Shape:
        Items are ``(image float (3, 32, 32) in [0, 1], label int in 0..9)``.

    Example:
        >>> train = load_dataset("cifar10", root="data", split="train", max_samples=5000)  # doctest: +SKIP
    """
    import torchvision.datasets as tvd

    root = Path(root)
    _check_split("cifar10", split)
    base = root / "cifar-10-batches-py"
    batches = [base / f"data_batch_{i}" for i in range(1, 6)] if split == "train" else [base / "test_batch"]
    _ensure(
        "cifar10",
        root,
        [*batches, base / "batches.meta"],
        download,
        lambda: tvd.CIFAR10(str(root), train=split == "train", download=True),
    )
    parts = [(_unpickle("cifar10", p, root), p) for p in batches]
    images = np.concatenate([_cifar_images("cifar10", d, p, root) for d, p in parts])
    labels = np.concatenate([np.asarray(d["labels"], dtype=np.int64) for d, _ in parts])
    classes = _names(_unpickle("cifar10", base / "batches.meta", root)["label_names"])
    return array_dataset(images, labels, classes, **_common(locals()))


@_register(
    "cifar100", "cifar-100-python", "CIFAR-100: 50k/10k 32x32 RGB images, 100 fine / 20 coarse classes"
)
def load_cifar100(
    root: Path,
    split: str = "train",
    *,
    label_type: str = "fine",
    image_size: int | None = None,
    channels: int | None = None,
    transform: Transform | None = None,
    max_samples: int | None = None,
    seed: int = 0,
    download: bool = False,
    progress: bool = True,
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
    import torchvision.datasets as tvd

    root = Path(root)
    _check_split("cifar100", split)
    if label_type not in ("fine", "coarse"):
        raise ConfigError(f"cifar100: label_type={label_type!r} must be 'fine' or 'coarse'")
    base = root / "cifar-100-python"
    _ensure(
        "cifar100",
        root,
        [base / split, base / "meta"],
        download,
        lambda: tvd.CIFAR100(str(root), train=split == "train", download=True),
    )
    d = _unpickle("cifar100", base / split, root)
    meta = _unpickle("cifar100", base / "meta", root)
    images = _cifar_images("cifar100", d, base / split, root)
    fine = np.asarray(d["fine_labels"], dtype=np.int64)
    coarse = np.asarray(d["coarse_labels"], dtype=np.int64)
    fine_classes, coarse_classes = _names(meta["fine_label_names"]), _names(meta["coarse_label_names"])
    fine_to_coarse = np.full(len(fine_classes), -1, dtype=np.int64)
    fine_to_coarse[fine] = coarse
    labels, classes = (fine, fine_classes) if label_type == "fine" else (coarse, coarse_classes)
    return array_dataset(
        images,
        labels,
        classes,
        **_common(locals()),
        per_sample={"fine_labels": fine, "coarse_labels": coarse},
        extra={
            "fine_classes": fine_classes,
            "coarse_classes": coarse_classes,
            "fine_to_coarse": fine_to_coarse,
        },
    )


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


def _load_idx_dataset(
    name: str,
    folder: str,
    classes: list[str],
    root: Path,
    split: str,
    download: bool,
    fetch: Callable[[], Any],
    **kw: Any,
) -> ArrayImageDataset:
    root = Path(root)
    _check_split(name, split)
    raw = root / folder / "raw"
    prefix = "train" if split == "train" else "t10k"
    stems = [f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"]

    def found() -> list[Path | None]:
        return [_first(raw / s, raw / f"{s}.gz") for s in stems]

    if None in found():
        _ensure(name, root, [raw / s for s, p in zip(stems, found()) if p is None], download, fetch)
    img_path, lbl_path = found()
    fix = f"delete it and fetch again with: {fetch_hint(name, root)}"
    images, labels = read_idx(img_path, 3, fix), read_idx(lbl_path, 1, fix).astype(np.int64)
    if len(images) != len(labels):
        raise ObstructError(f"{img_path} has {len(images)} images but {lbl_path} {len(labels)} labels: {fix}")
    return array_dataset(images, labels, classes, **kw)


@_register("mnist", "MNIST", "MNIST: 60k/10k 28x28 grey handwritten digits")
def load_mnist(
    root: Path,
    split: str = "train",
    *,
    image_size: int | None = None,
    channels: int | None = None,
    transform: Transform | None = None,
    max_samples: int | None = None,
    seed: int = 0,
    download: bool = False,
    progress: bool = True,
) -> ArrayImageDataset:
    """MNIST from ``ROOT/MNIST/raw/*-idx?-ubyte[.gz]`` (1 channel unless ``channels=3``).

    Args: as :func:`load_cifar10`. A file with a wrong IDX magic number raises one clear line.
    """
    import torchvision.datasets as tvd

    fetch = lambda: tvd.MNIST(str(root), train=split == "train", download=True)
    return _load_idx_dataset("mnist", "MNIST", DIGITS, root, split, download, fetch, **_common(locals()))


@_register("fashion_mnist", "FashionMNIST", "Fashion-MNIST: 60k/10k 28x28 grey clothing images, 10 classes")
def load_fashion_mnist(
    root: Path,
    split: str = "train",
    *,
    image_size: int | None = None,
    channels: int | None = None,
    transform: Transform | None = None,
    max_samples: int | None = None,
    seed: int = 0,
    download: bool = False,
    progress: bool = True,
) -> ArrayImageDataset:
    """Fashion-MNIST from ``ROOT/FashionMNIST/raw/`` (same files as MNIST). Args: as :func:`load_mnist`."""
    import torchvision.datasets as tvd

    fetch = lambda: tvd.FashionMNIST(str(root), train=split == "train", download=True)
    return _load_idx_dataset(
        "fashion_mnist", "FashionMNIST", FASHION_CLASSES, root, split, download, fetch, **_common(locals())
    )


# -------------------------------------------------------------------------------------- USPS, SVHN, STL
@_register("usps", "usps", "USPS: 7,291/2,007 16x16 grey digits")
def load_usps(
    root: Path,
    split: str = "train",
    *,
    image_size: int | None = None,
    channels: int | None = None,
    transform: Transform | None = None,
    max_samples: int | None = None,
    seed: int = 0,
    download: bool = False,
    progress: bool = True,
) -> ArrayImageDataset:
    """USPS from ``ROOT/usps/usps.bz2`` / ``usps.t.bz2`` (libsvm; also accepted directly in ROOT).

    Pixels ``v`` in [-1, 1] become ``round((v + 1) * 127.5)`` (torchvision truncates instead, which
    darkens by under one grey level); labels 1..10 become 0..9 as in torchvision. Args: as :func:`load_mnist`.
    """
    import torchvision.datasets as tvd

    root = Path(root)
    _check_split("usps", split)
    fname = "usps.bz2" if split == "train" else "usps.t.bz2"
    path = _first(root / "usps" / fname, root / fname)
    if path is None:
        _ensure(
            "usps",
            root,
            [root / "usps" / fname],
            download,
            lambda: tvd.USPS(str(root / "usps"), train=split == "train", download=True),
        )
        path = root / "usps" / fname
    try:
        with bz2.open(path, "rt") as f:
            rows = [line.split(None, 1) + [""] for line in f if line.strip()]
        labels = np.array([r[0] for r in rows], dtype=np.float64).astype(np.int64) - 1
        # Parse every "index:value" token at once (a Python loop over 1.9M tokens takes ~10 s).
        pairs = np.array(" ".join(r[1] for r in rows).replace(":", " ").split(), dtype=np.float64).reshape(
            -1, 2
        )
        row = np.repeat(np.arange(len(rows)), [r[1].count(":") for r in rows])
        pixels = np.zeros((len(rows), 256), dtype=np.float64)  # libsvm may omit zeros: 0 stays 0
        pixels[row, pairs[:, 0].astype(np.int64) - 1] = pairs[:, 1]
    except (OSError, EOFError, ValueError, IndexError) as e:
        raise _corrupt("usps", path, root, f"{type(e).__name__}: {e}") from None
    images = np.clip(np.rint((pixels + 1.0) * 127.5), 0, 255).astype(np.uint8).reshape(-1, 16, 16)
    return array_dataset(images, labels, DIGITS, **_common(locals()))


@_register("svhn", "svhn", "SVHN: 73,257/26,032 32x32 RGB house-number digits")
def load_svhn(
    root: Path,
    split: str = "train",
    *,
    image_size: int | None = None,
    channels: int | None = None,
    transform: Transform | None = None,
    max_samples: int | None = None,
    seed: int = 0,
    download: bool = False,
    progress: bool = True,
) -> ArrayImageDataset:
    """SVHN (cropped digits) from ``ROOT/svhn/{train,test,extra}_32x32.mat`` (or directly in ROOT).

    ``X`` is stored ``(32, 32, 3, N)``; label 10 means digit 0 (mapped to 0 as torchvision does).
    Args: as :func:`load_cifar10` (``split="extra"`` also works when called directly).
    """
    import scipy.io
    import torchvision.datasets as tvd

    root = Path(root)
    _check_split("svhn", split, ("train", "test", "extra"))
    fname = f"{split}_32x32.mat"
    path = _first(root / "svhn" / fname, root / fname)
    if path is None:
        _ensure(
            "svhn",
            root,
            [root / "svhn" / fname],
            download,
            lambda: tvd.SVHN(str(root / "svhn"), split=split, download=True),
        )
        path = root / "svhn" / fname
    try:
        mat = scipy.io.loadmat(str(path))
        images = np.ascontiguousarray(np.asarray(mat["X"], dtype=np.uint8).transpose(3, 0, 1, 2))
        labels = np.asarray(mat["y"], dtype=np.int64).reshape(-1)
    except (OSError, ValueError, KeyError, NotImplementedError) as e:
        raise _corrupt("svhn", path, root, f"{type(e).__name__}: {e}") from None
    labels[labels == 10] = 0
    return array_dataset(images, labels, DIGITS, **_common(locals()))


@_register("stl10", "stl10_binary", "STL-10: 5k/8k labelled 96x96 RGB images, 10 classes")
def load_stl10(
    root: Path,
    split: str = "train",
    *,
    image_size: int | None = None,
    channels: int | None = None,
    transform: Transform | None = None,
    max_samples: int | None = None,
    seed: int = 0,
    download: bool = False,
    progress: bool = True,
) -> ArrayImageDataset:
    """STL-10 labelled splits from ``ROOT/stl10_binary/{split}_X.bin, {split}_y.bin, class_names.txt``.

    Images are stored column-major ``(N, 3, 96, 96)`` (each plane transposed); labels 1..10 become
    0..9. The unlabelled split is not offered. Args: as :func:`load_cifar10`.
    """
    import torchvision.datasets as tvd

    root = Path(root)
    _check_split("stl10", split)
    base = root / "stl10_binary"
    xp, yp, names = base / f"{split}_X.bin", base / f"{split}_y.bin", base / "class_names.txt"
    _ensure(
        "stl10", root, [xp, yp, names], download, lambda: tvd.STL10(str(root), split=split, download=True)
    )
    raw = np.fromfile(xp, dtype=np.uint8)
    labels = np.fromfile(yp, dtype=np.uint8).astype(np.int64) - 1
    if raw.size != len(labels) * 3 * 96 * 96:
        raise _corrupt("stl10", xp, root, f"{raw.size} bytes for {len(labels)} labels of 3x96x96 images")
    images = np.ascontiguousarray(raw.reshape(-1, 3, 96, 96).transpose(0, 3, 2, 1))  # (N, C, W, H) -> NHWC
    classes = [line.strip() for line in names.read_text().splitlines() if line.strip()]
    return array_dataset(images, labels, classes, **_common(locals()))


@_register("mnist_m", "mnist_m", "MNIST-M: MNIST digits blended with BSDS500 photo crops, 28x28 RGB")
def load_mnist_m(
    root: Path,
    split: str = "train",
    *,
    image_size: int | None = None,
    channels: int | None = None,
    transform: Transform | None = None,
    max_samples: int | None = None,
    seed: int = 0,
    download: bool = False,
    progress: bool = True,
) -> ArrayImageDataset:
    """MNIST-M from ``ROOT/mnist_m/mnist_m.npz`` (uint8 NHWC 28x28x3), built by ``data_scripts/mnist_m.py``.

    ``download`` is accepted but unsupported (torchvision has no MNIST-M): the error names the script.
    """
    root = Path(root)
    _check_split("mnist_m", split)
    path = root / "mnist_m" / "mnist_m.npz"
    if not path.is_file():
        raise missing("mnist_m", path, fetch_hint("mnist_m", root))
    images, labels, classes = read_npz(path, split, f"mnist_m ({path})")
    return array_dataset(images, labels, classes or DIGITS, **_common(locals()))
