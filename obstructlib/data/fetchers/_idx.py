"""IDX files (the MNIST format) and the fetch routine shared by mnist.py and fashion_mnist.py.

References:
    LeCun et al., "Gradient-based learning applied to document recognition", 1998; the IDX format
    is described at the bottom of the original MNIST page.
"""

from __future__ import annotations

import gzip
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._common import FetchError, already_present, download, make_parser, say

_DTYPES: dict[int, Any] = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
# The canonical file names, in the order x_train, y_train, x_test, y_test.
NAMES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into an array of its stored shape and dtype."""
    path = Path(path)
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES:
        raise FetchError(f"{path} is not an IDX file: delete it and re-run")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    array = np.frombuffer(data, dtype=_DTYPES[data[2]], offset=4 + 4 * ndim)
    return array.reshape(shape)


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write a uint8 array as an (uncompressed) IDX file."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    Path(path).write_bytes(header + array.tobytes())


def find_idx(folder: Path, name: str) -> Path | None:
    """``folder/name`` or ``folder/name.gz``, whichever exists."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.exists():
            return candidate
    return None


def load_mnist_arrays(source: str | Path) -> dict[str, np.ndarray]:
    """MNIST-style arrays from an ``.npz`` (x_train, y_train, x_test, y_test) or an IDX folder.

    Args:
        source: an npz file, a folder holding the four IDX files (``.gz`` or not), or a data root
            with ``MNIST/raw/`` in it.

    Returns:
        dict with ``x_train (N, 28, 28) uint8``, ``y_train (N,) int64``, ``x_test``, ``y_test``.
    """
    source = Path(source)
    if source.is_file():
        with np.load(source) as npz:
            missing = {"x_train", "y_train", "x_test", "y_test"} - set(npz.files)
            if missing:
                raise FetchError(
                    f"{source} lacks {sorted(missing)}: give an npz with x_train, y_train, x_test, y_test"
                )
            return {k: np.asarray(npz[k]) for k in ("x_train", "y_train", "x_test", "y_test")}
    for folder in (source, source / "raw", source / "MNIST" / "raw"):
        paths = [p for n in NAMES if (p := find_idx(folder, n)) is not None]
        if len(paths) == len(NAMES):
            x_tr, y_tr, x_te, y_te = (read_idx(p) for p in paths)
            return {
                "x_train": x_tr,
                "y_train": y_tr.astype(np.int64),
                "x_test": x_te,
                "y_test": y_te.astype(np.int64),
            }
    raise FetchError(f"no MNIST found at {source}: give an mnist.npz or a folder with the four IDX files")


def fetch_mnist_like(
    name: str,
    folder_name: str,
    mirrors: Sequence[str],
    resources: dict[str, str],
    description: str,
    argv: Sequence[str] | None,
) -> int:
    """Download (or convert from an npz) the four IDX files into ``ROOT/<folder_name>/raw/``.

    Both the ``.gz`` files and their decompressed copies are kept, as torchvision does, so either
    reader finds them.
    """
    parser = make_parser(name, description)
    parser.add_argument(
        "--from-npz",
        metavar="PATH",
        help="build the IDX files from a local npz (x_train, y_train, x_test, y_test) instead of downloading",
    )
    args = parser.parse_args(argv)
    raw = Path(args.root) / folder_name / "raw"
    if already_present(name, (raw / n for n in NAMES), raw):
        return 0
    raw.mkdir(parents=True, exist_ok=True)
    if args.from_npz:
        arrays = load_mnist_arrays(args.from_npz)
        for key, file_name in zip(("x_train", "y_train", "x_test", "y_test"), NAMES):
            write_idx(raw / file_name, arrays[key])
        say(f"{name}: wrote IDX files from {args.from_npz} to {raw}")
        return 0
    for file_name, md5 in resources.items():
        gz = raw / file_name
        download([m + file_name for m in mirrors], gz, md5=md5, progress=not args.no_progress)
        target = raw / file_name.removesuffix(".gz")
        if not target.exists():
            tmp = target.with_name(target.name + ".tmp")
            with gzip.open(gz, "rb") as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst)
            tmp.replace(target)
    say(f"{name}: ready at {raw}")
    return 0
