"""A local stand-in for everything the ``colab`` profile downloads, for the colab-path test.

:func:`build_mirror` writes tiny archives in the real formats (the CIFAR-10 python tarball, MNIST's
gzipped IDX files, USPS's bzip2 libsvm files, the Karpathy ``caption_datasets.zip`` and the
Flickr8k image zip) into one folder that a local HTTP server serves as ``$OBSTRUCT_MIRROR``, plus:

- ``patch_checksums.py``: an IPython startup file that gives the fetchers the fixtures' own
  checksums and image counts (a mirror that served the real files would need none of it: the
  fetchers' download, verification, extraction and layout code all run as on Colab);
- a tiny open_clip checkpoint that stands in for the pretrained tags (``openai``) of ``colab``.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import zipfile
from pathlib import Path

import numpy as np
from fixtures_data import CIFAR10_CLASSES, _cifar_rows, _idx_bytes, _pickle
from PIL import Image

FLICKR_WORDS = ("dog", "child", "man", "woman", "bike", "ball", "water", "grass", "street", "beach")


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _jpeg(rng: np.random.Generator, size: int = 24) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def _cifar10(out: Path, rng: np.random.Generator, per_batch: int, n_test: int) -> dict:
    """``cifar-10-python.tar.gz``: five training batches and a test batch, every class in each."""
    work = out / "_cifar"
    base = work / "cifar-10-batches-py"
    base.mkdir(parents=True)
    files = {}
    for name, n in [*((f"data_batch_{i}", per_batch) for i in range(1, 6)), ("test_batch", n_test)]:
        labels = np.arange(n) % 10
        _pickle(base / name, {b"batch_label": name.encode(), b"labels": labels.tolist(),
                              b"data": _cifar_rows(rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)),
                              b"filenames": [f"{name}_{j}.png".encode() for j in range(n)]})
    _pickle(base / "batches.meta", {b"num_cases_per_batch": per_batch, b"num_vis": 3072,
                                    b"label_names": [c.encode() for c in CIFAR10_CLASSES]})
    for path in sorted(base.iterdir()):
        files[path.name] = md5(path)
    archive = out / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(base, arcname="cifar-10-batches-py")
    return {"ARCHIVE_MD5": md5(archive), "FILES": files}


def _mnist(out: Path, rng: np.random.Generator, n_train: int, n_test: int) -> dict:
    resources = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        for stem, array in ((f"{prefix}-images-idx3-ubyte", images), (f"{prefix}-labels-idx1-ubyte", labels)):
            path = out / f"{stem}.gz"
            path.write_bytes(gzip.compress(_idx_bytes(array)))
            resources[path.name] = md5(path)
    return {"RESOURCES": resources}


def _usps(out: Path, rng: np.random.Generator, n_train: int, n_test: int) -> dict:
    from obstructlib.data.fetchers.usps import write_libsvm_bz2

    files = {}
    for name, n in (("usps.bz2", n_train), ("usps.t.bz2", n_test)):
        write_libsvm_bz2(out / name, rng.integers(0, 256, (n, 16, 16), dtype=np.uint8), np.arange(n) % 10)
        files[name] = md5(out / name)
    return {"FILES": files}


def _flickr8k(out: Path, rng: np.random.Generator, counts: dict[str, int]) -> dict:
    """Karpathy's ``caption_datasets.zip`` (dataset_flickr8k.json) and ``Flickr8k_Dataset.zip``."""
    images, n = [], 0
    with zipfile.ZipFile(out / "Flickr8k_Dataset.zip", "w") as zf:
        for split, count in counts.items():
            for _ in range(count):
                name = f"{1000 + n}_fixture.jpg"
                zf.writestr(f"Flicker8k_Dataset/{name}", _jpeg(rng))
                words = [FLICKR_WORDS[(n + k) % len(FLICKR_WORDS)] for k in range(3)]
                sentences = [{"raw": f"A {words[0]} and a {words[1]} near the {words[2]} ({j}).",
                              "tokens": ["a", words[0], "and", "a", words[1]]} for j in range(5)]
                images.append({"filename": name, "split": split, "imgid": n, "sentences": sentences,
                               "sentids": list(range(5 * n, 5 * n + 5))})
                n += 1
    with zipfile.ZipFile(out / "caption_datasets.zip", "w") as zf:
        zf.writestr("dataset_flickr8k.json", json.dumps({"images": images, "dataset": "flickr8k"}))
    return {"MIRROR_IMAGES": {"*": n}}


def build_mirror(out: Path, seed: int = 0) -> dict[str, dict]:
    """Write every archive into ``out`` and return what each fetcher module must be told about them."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    patches = {
        "cifar10": _cifar10(out, rng, per_batch=60, n_test=80),
        "mnist": _mnist(out, rng, n_train=300, n_test=100),
        "usps": _usps(out, rng, n_train=200, n_test=100),
        "flickr8k": _flickr8k(out, rng, {"train": 48, "val": 8, "test": 16}),
    }
    lines = ["# written by tests/colab_fixtures.py: the fixtures' checksums, for the fetchers in this kernel",
             "import importlib"]
    for module, values in patches.items():
        lines.append(f"_m = importlib.import_module('obstructlib.data.fetchers.{module}')")
        lines += [f"_m.{key} = {value!r}" for key, value in values.items()]
    (out / "patch_checksums.py").write_text("\n".join(lines) + "\n")
    return patches


def write_tiny_clip(path: Path, arch: str = "tiny-vit", image_size: int = 32) -> Path:
    """A randomly initialised tiny open_clip checkpoint, standing in for a pretrained tag offline."""
    import torch

    from obstructlib.models import create_clip

    torch.manual_seed(1234)
    model = create_clip(arch, None, image_size=image_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.model.state_dict(), path)
    return path
