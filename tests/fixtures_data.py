"""Writers of tiny datasets in their real on-disk formats, for tests (no network, no shared data).

Each ``write_*`` puts a few random images under ``root`` exactly as the original distribution
lays them out (torchvision's layouts) and returns what it wrote, so a test can compare the loaded
pixels and labels exactly. Arrays returned are uint8 NHWC (grey: NHW) with int64 labels already
mapped the way the loaders document (SVHN 10 -> 0, USPS/STL-10 1-based -> 0-based).
"""

from __future__ import annotations

import bz2
import gzip
import pickle
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
STL10_CLASSES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
CELEBA_ATTRS = [
    "5_o_Clock_Shadow",
    "Arched_Eyebrows",
    "Attractive",
    "Bags_Under_Eyes",
    "Bald",
    "Bangs",
    "Big_Lips",
    "Big_Nose",
    "Black_Hair",
    "Blond_Hair",
    "Blurry",
    "Brown_Hair",
    "Bushy_Eyebrows",
    "Chubby",
    "Double_Chin",
    "Eyeglasses",
    "Goatee",
    "Gray_Hair",
    "Heavy_Makeup",
    "High_Cheekbones",
    "Male",
    "Mouth_Slightly_Open",
    "Mustache",
    "Narrow_Eyes",
    "No_Beard",
    "Oval_Face",
    "Pale_Skin",
    "Pointy_Nose",
    "Receding_Hairline",
    "Rosy_Cheeks",
    "Sideburns",
    "Smiling",
    "Straight_Hair",
    "Wavy_Hair",
    "Wearing_Earrings",
    "Wearing_Hat",
    "Wearing_Lipstick",
    "Wearing_Necklace",
    "Wearing_Necktie",
    "Young",
]


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _labels(rng: np.random.Generator, n: int, num_classes: int) -> np.ndarray:
    # Every class appears (as evenly as n allows), in shuffled order.
    return rng.permutation(np.arange(n) % num_classes).astype(np.int64)


def _images(rng: np.random.Generator, n: int, *shape: int) -> np.ndarray:
    return rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)


def _pickle(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def _cifar_rows(x: np.ndarray) -> np.ndarray:
    return x.transpose(0, 3, 1, 2).reshape(len(x), 3072)  # R plane, G plane, B plane


def write_cifar10(root: Path, n_train: int = 20, n_test: int = 10, seed: int = 0) -> dict:
    """``root/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}`` as bytes-keyed pickles."""
    rng, base = _rng(seed), Path(root) / "cifar-10-batches-py"
    base.mkdir(parents=True, exist_ok=True)
    out = {"classes": CIFAR10_CLASSES}
    for split, n in (("train", n_train), ("test", n_test)):
        x, y = _images(rng, n, 32, 32, 3), _labels(rng, n, 10)
        out[f"x_{split}"], out[f"y_{split}"] = x, y
        names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
        for i, (name, part) in enumerate(zip(names, np.array_split(np.arange(n), len(names)))):
            _pickle(
                base / name,
                {
                    b"batch_label": f"batch {i + 1} of {len(names)}".encode(),
                    b"labels": y[part].tolist(),
                    b"data": _cifar_rows(x[part]),
                    b"filenames": [f"img_{j}.png".encode() for j in part],
                },
            )
    _pickle(
        base / "batches.meta",
        {
            b"num_cases_per_batch": 10000,
            b"label_names": [c.encode() for c in CIFAR10_CLASSES],
            b"num_vis": 3072,
        },
    )
    return out


def write_cifar100(root: Path, n_train: int = 200, n_test: int = 100, seed: int = 0) -> dict:
    """``root/cifar-100-python/{train,test,meta}`` with fine and coarse labels (5 fine per coarse)."""
    rng, base = _rng(seed), Path(root) / "cifar-100-python"
    base.mkdir(parents=True, exist_ok=True)
    fine_to_coarse = rng.permutation(np.repeat(np.arange(20), 5)).astype(np.int64)
    out = {
        "fine_classes": [f"fine_{i}" for i in range(100)],
        "coarse_classes": [f"coarse_{i}" for i in range(20)],
        "fine_to_coarse": fine_to_coarse,
    }
    for split, n in (("train", n_train), ("test", n_test)):
        x, fine = _images(rng, n, 32, 32, 3), _labels(rng, n, 100)
        out[f"x_{split}"], out[f"fine_{split}"], out[f"coarse_{split}"] = x, fine, fine_to_coarse[fine]
        _pickle(
            base / split,
            {
                b"filenames": [f"img_{j}.png".encode() for j in range(n)],
                b"batch_label": f"{split}ing batch 1 of 1".encode(),
                b"fine_labels": fine.tolist(),
                b"coarse_labels": fine_to_coarse[fine].tolist(),
                b"data": _cifar_rows(x),
            },
        )
    _pickle(
        base / "meta",
        {
            b"fine_label_names": [c.encode() for c in out["fine_classes"]],
            b"coarse_label_names": [c.encode() for c in out["coarse_classes"]],
        },
    )
    return out


def _idx_bytes(a: np.ndarray) -> bytes:
    return bytes((0, 0, 8, a.ndim)) + struct.pack(f">{a.ndim}I", *a.shape) + a.astype(np.uint8).tobytes()


def write_mnist_idx(
    root: Path, folder: str = "MNIST", gz: bool = False, n_train: int = 20, n_test: int = 10, seed: int = 0
) -> dict:
    """``root/FOLDER/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`` (big-endian IDX)."""
    rng, raw = _rng(seed), Path(root) / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        x, y = _images(rng, n, 28, 28), _labels(rng, n, 10)
        out[f"x_{split}"], out[f"y_{split}"] = x, y
        for stem, a in ((f"{prefix}-images-idx3-ubyte", x), (f"{prefix}-labels-idx1-ubyte", y)):
            data = _idx_bytes(a)
            if gz:
                (raw / f"{stem}.gz").write_bytes(gzip.compress(data))
            else:
                (raw / stem).write_bytes(data)
    return out


def write_usps(root: Path, n_train: int = 20, n_test: int = 10, seed: int = 0, subdir: bool = True) -> dict:
    """``root/usps/{usps.bz2,usps.t.bz2}``: libsvm lines ``LABEL 1:v ... 256:v``, v in [-1, 1], LABEL 1..10.

    Returns the uint8 images the loader must produce (``round((v + 1) * 127.5)`` recovers them).
    """
    rng, base = _rng(seed), Path(root) / ("usps" if subdir else "")
    base.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, fname, n in (("train", "usps.bz2", n_train), ("test", "usps.t.bz2", n_test)):
        x, y = _images(rng, n, 16, 16), _labels(rng, n, 10)
        out[f"x_{split}"], out[f"y_{split}"] = x, y
        v = x.reshape(n, 256) / 127.5 - 1.0
        lines = [
            f"{lab + 1} " + " ".join(f"{k + 1}:{val:.6f}" for k, val in enumerate(row))
            for lab, row in zip(y, v)
        ]
        (base / fname).write_bytes(bz2.compress(("\n".join(lines) + "\n").encode()))
    return out


def write_svhn(root: Path, n_train: int = 20, n_test: int = 10, seed: int = 0, subdir: bool = True) -> dict:
    """``root/svhn/{train,test}_32x32.mat``: ``X`` uint8 ``(32, 32, 3, N)``, ``y`` ``(N, 1)`` in 1..10."""
    import scipy.io

    rng, base = _rng(seed), Path(root) / ("svhn" if subdir else "")
    base.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        x, y = _images(rng, n, 32, 32, 3), _labels(rng, n, 10)
        raw_y = np.where(y == 0, 10, y).astype(np.uint8)
        out[f"x_{split}"], out[f"y_{split}"], out[f"raw_y_{split}"] = x, y, raw_y
        scipy.io.savemat(
            str(base / f"{split}_32x32.mat"), {"X": x.transpose(1, 2, 3, 0), "y": raw_y[:, None]}
        )
    return out


def write_stl10(root: Path, n_train: int = 10, n_test: int = 10, seed: int = 0) -> dict:
    """``root/stl10_binary/``: ``{split}_X.bin`` (column-major 3x96x96), ``{split}_y.bin`` (1..10), names."""
    rng, base = _rng(seed), Path(root) / "stl10_binary"
    base.mkdir(parents=True, exist_ok=True)
    out = {"classes": STL10_CLASSES}
    for split, n in (("train", n_train), ("test", n_test)):
        x, y = _images(rng, n, 96, 96, 3), _labels(rng, n, 10)
        out[f"x_{split}"], out[f"y_{split}"] = x, y
        x.transpose(0, 3, 2, 1).tofile(base / f"{split}_X.bin")  # NHWC -> (N, C, W, H): column-major planes
        (y + 1).astype(np.uint8).tofile(base / f"{split}_y.bin")
    (base / "class_names.txt").write_text("\n".join(STL10_CLASSES) + "\n")
    return out


def write_celeba(root: Path, n: int = 12, size: tuple[int, int] = (44, 36), seed: int = 0) -> dict:
    """``root/celeba/{img_align_celeba/NNNNNN.jpg, list_attr_celeba.txt, list_eval_partition.txt}``.

    Images are JPEGs of ``size = (H, W)`` (the real ones are 218x178); partitions cycle 0, 1, 2.
    Returns ``files``, ``attrs`` (int64 (n, 40) in {0, 1}), ``partition`` and ``attr_names``.
    """
    rng, base = _rng(seed), Path(root) / "celeba"
    (base / "img_align_celeba").mkdir(parents=True, exist_ok=True)
    files = [f"{i + 1:06d}.jpg" for i in range(n)]
    attrs = rng.integers(0, 2, size=(n, len(CELEBA_ATTRS))).astype(np.int64)
    partition = np.arange(n) % 3
    for f, img in zip(files, _images(rng, n, *size, 3)):
        Image.fromarray(img).save(base / "img_align_celeba" / f, quality=95)
    rows = [f"{f} " + " ".join(f"{2 * a - 1:2d}" for a in row) for f, row in zip(files, attrs)]
    (base / "list_attr_celeba.txt").write_text(
        f"{n}\n" + " ".join(CELEBA_ATTRS) + " \n" + "\n".join(rows) + "\n"
    )
    (base / "list_eval_partition.txt").write_text("".join(f"{f} {p}\n" for f, p in zip(files, partition)))
    return {"files": files, "attrs": attrs, "partition": partition, "attr_names": CELEBA_ATTRS, "dir": base}


def write_image_folder(
    path: Path,
    classes: Sequence[str],
    n_per_class: int | dict[str, int],
    size: int | tuple[int, int] = 8,
    splits: Sequence[str] = ("train", "test"),
    ext: str = "png",
    grey: bool = False,
    seed: int = 0,
) -> dict:
    """``path/{split}/<class>/NNNN.ext``; returns ``{split: (x, y)}`` in the loader's order (class, file).

    Use ``ext="png"`` (lossless) for exact pixel comparisons.
    """
    rng, path = _rng(seed), Path(path)
    h, w = (size, size) if isinstance(size, int) else size
    counts = n_per_class if isinstance(n_per_class, dict) else {c: n_per_class for c in classes}
    out = {}
    for split in splits:
        xs, ys = [], []
        for k, cls in enumerate(sorted(classes)):
            (path / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(counts[cls]):
                img = _images(rng, 1, h, w, *(() if grey else (3,)))[0]
                Image.fromarray(img).save(path / split / cls / f"{i:04d}.{ext}")
                xs.append(img)
                ys.append(k)
        out[split] = (np.stack(xs), np.asarray(ys, dtype=np.int64))
    return out


def write_npz(
    path: Path,
    n_train: int = 20,
    n_test: int = 10,
    shape: tuple[int, ...] = (28, 28),
    seed: int = 0,
    **overrides: np.ndarray,
) -> dict:
    """``np.savez(path, x_train, y_train, x_test, y_test)``, uint8 images of ``shape``; ``overrides`` replace
    or add arrays (pass ``x_test=None`` to leave a key out)."""
    rng = _rng(seed)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        arrays[f"x_{split}"], arrays[f"y_{split}"] = _images(rng, n, *shape), _labels(rng, n, 10)
    arrays.update(overrides)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return arrays


def write_mnist_m(root: Path, n_train: int = 20, n_test: int = 10, seed: int = 0) -> dict:
    """``root/mnist_m/mnist_m.npz``: uint8 NHWC 28x28x3 images, as ``obstruct data fetch mnist_m`` writes it."""
    return write_npz(Path(root) / "mnist_m" / "mnist_m.npz", n_train, n_test, (28, 28, 3), seed)
