"""On-disk image-caption sets, read into :class:`~obstructlib.data.captions.CaptionDataset`.

Registered names (layouts under ``root``; ``obstruct data fetch NAME --root ROOT`` fetches them):

- ``flickr8k`` / ``flickr30k``: ``ROOT/flickr8k/{images/*.jpg, dataset_flickr8k.json}`` (Karpathy split).
- ``coco_captions``: ``ROOT/coco/{dataset_coco.json, train2014/, val2014/}`` (Karpathy split), else the
  official ``ROOT/coco/annotations/captions_{train,val}2017.json`` with ``ROOT/coco/{train,val}2017/``.
- ``cc3m``: ``ROOT/cc3m/captions.csv`` plus the images it points to.
- ``csv:PATH``: columns ``image,caption[,split]``, image paths relative to the CSV.

Split semantics: ``"train"`` reads the Karpathy ``train`` and ``restval`` images; ``"test"`` reads
``test`` (the official COCO-2017 annotations have no test captions, so ``"test"`` reads val2017). A CSV
``split`` column may say ``train``/``restval`` or ``test``; ``val``/``validation`` rows count as test
when the file has no ``test`` rows. Without a split column the split is by IMAGE: a seeded
permutation of the distinct images puts ``round(0.2 * num_images)`` of them in test, so all captions
of an image land on the same side (no caption of a test image leaks into training).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from obstructlib.data.base import missing, register_dataset, register_prefix
from obstructlib.data.captions import CaptionDataset
from obstructlib.errors import ConfigError, DatasetNotFoundError


def _check_files(name: str, paths: Sequence[str], listed_in: Path, fetch: str = "") -> None:
    absent = [p for p in paths if not os.path.exists(p)]
    if absent:
        how = f"fetch them with: {fetch}" if fetch else "put the images next to it or fix the paths"
        raise DatasetNotFoundError(
            f"{name}: {len(absent)} of {len(paths)} images listed in {listed_in} are missing "
            f"(first: {absent[0]}): {how}"
        )


def _from_records(
    name: str, records: list[tuple[str, list[str]]], listed_in: Path, fetch: str, **kwargs: Any
) -> CaptionDataset:
    """Build a dataset from ``(image path, [captions])`` records, checking the files exist."""
    paths = [p for p, _ in records]
    _check_files(name, paths, listed_in, fetch)
    caps = [c for _, cs in records for c in cs]
    ids = np.repeat(np.arange(len(records)), [len(cs) for _, cs in records])
    return CaptionDataset(paths, caps, ids, **kwargs)


_TRAIN_NAMES, _TEST_NAMES, _VAL_NAMES = {"train", "restval"}, {"test"}, {"val", "validation", "valid"}


@register_prefix("csv")
def load_caption_csv(
    path: Path,
    split: str = "train",
    *,
    seed: int = 0,
    test_fraction: float = 0.2,
    name: str | None = None,
    fetch: str = "",
    **kwargs: Any,
) -> CaptionDataset:
    """``csv:PATH``: rows ``image,caption[,split]``, image paths relative to the CSV.

    Args:
        path: the CSV file (or a folder holding ``captions.csv``).
        split: ``"train"`` or ``"test"`` (see the module docstring for the split rules).
        seed: seed of the by-image split when the CSV has no ``split`` column.
        test_fraction: fraction of the distinct images held out in that case (0.2).
        **kwargs: passed to :class:`CaptionDataset` (``image_size``, ``transform``, ``in_memory`` ...).
    """
    path = Path(path)
    if path.is_dir():
        path = path / "captions.csv"
    name = name or f"csv:{path}"
    if not path.is_file():
        raise (
            missing(name, path, fetch)
            if fetch
            else DatasetNotFoundError(f"caption CSV {path} does not exist: check the path after 'csv:'")
        )
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: tolerate an Excel BOM
            reader = csv.DictReader(f)
            header = [h.strip() for h in reader.fieldnames or []]
            lacking = [c for c in ("image", "caption") if c not in header]
            if lacking:
                raise ConfigError(
                    f"{path} lacks column(s) {', '.join(lacking)}: the header must be image,caption[,split]"
                )
            rows = [{k.strip(): (v or "").strip() for k, v in r.items() if k} for r in reader]
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path} is not UTF-8 text (byte {err.object[err.start]:#x} at offset {err.start}): "
                          "save it as UTF-8") from None
    groups: dict[str, list[str]] = {}
    split_of: dict[str, str] = {}
    for r in rows:
        groups.setdefault(r["image"], []).append(r["caption"])
        split_of.setdefault(r["image"], r.get("split", "").lower())
    images = list(groups)
    if "split" in header:
        values = set(split_of.values())
        test_names = _TEST_NAMES if values & _TEST_NAMES else _TEST_NAMES | _VAL_NAMES
        wanted = _TRAIN_NAMES if split == "train" else test_names
        chosen = [im for im in images if split_of[im] in wanted]
    else:
        # Split by image (not by row) so that no caption of a test image is trained on.
        perm = np.random.default_rng(seed).permutation(len(images))
        is_test = np.zeros(len(images), bool)
        is_test[perm[: round(test_fraction * len(images))]] = True
        chosen = [im for im, t in zip(images, is_test) if t == (split == "test")]
    records = [(str(path.parent / im), groups[im]) for im in chosen]
    return _from_records(name, records, path, fetch, **kwargs)


def _fetch(name: str, root: Path | str) -> str:
    return f"obstruct data fetch {name} --root {root}"


def _register(name: str, description: str, subdir: str = "") -> Callable:
    return register_dataset(
        name, kind="captions", fetch=_fetch(name, "{root}"), subdir=subdir, description=description
    )


def _karpathy(
    name: str, json_path: Path, image_dir: Callable[[dict], Path], split: str, fetch: str, **kw: Any
) -> CaptionDataset:
    with open(json_path, encoding="utf-8") as f:
        entries = json.load(f)["images"]
    wanted = _TRAIN_NAMES if split == "train" else _TEST_NAMES
    records = [
        (str(image_dir(e) / e["filename"]), [s["raw"].strip() for s in e["sentences"]])
        for e in entries
        if e.get("split") in wanted
    ]
    return _from_records(name, records, json_path, fetch, **kw)


def _flickr(name: str, root: Path, split: str, **kw: Any) -> CaptionDataset:
    base = Path(root) / name
    js = base / f"dataset_{name}.json"
    if not js.is_file():
        raise missing(name, js, _fetch(name, root))
    # images/ is the layout the fetchers write; the other names are how the archives unpack.
    alternatives = ["images", "Flicker8k_Dataset", "Flickr8k_Dataset", "flickr30k-images", "Images"]
    img_dir = next((base / d for d in alternatives if (base / d).is_dir()), base / "images")
    return _karpathy(name, js, lambda e: img_dir, split, _fetch(name, root), **kw)


@_register("flickr8k", "Flickr8k, 8,091 images x 5 captions (Karpathy split)")
def load_flickr8k(root: Path, split: str = "train", **kw: Any) -> CaptionDataset:
    """Flickr8k from ``ROOT/flickr8k/{images/, dataset_flickr8k.json}``; kwargs as :class:`CaptionDataset`."""
    return _flickr("flickr8k", root, split, **kw)


@_register("flickr30k", "Flickr30k, 31,783 images x 5 captions (Karpathy split)")
def load_flickr30k(root: Path, split: str = "train", **kw: Any) -> CaptionDataset:
    """Flickr30k from ``ROOT/flickr30k/{images/, dataset_flickr30k.json}``; kwargs as for Flickr8k."""
    return _flickr("flickr30k", root, split, **kw)


@_register("coco_captions", "MS-COCO captions (Karpathy split, or the official 2017 annotations)", "coco")
def load_coco_captions(root: Path, split: str = "train", **kw: Any) -> CaptionDataset:
    """COCO captions: Karpathy ``dataset_coco.json`` if present, else the official 2017 annotations.

    ``"train"`` = Karpathy train + restval (or train2017); ``"test"`` = Karpathy test (or val2017).
    """
    base, fetch = Path(root) / "coco", _fetch("coco_captions", root)
    karpathy = base / "dataset_coco.json"
    if karpathy.is_file():
        return _karpathy(
            "coco_captions", karpathy, lambda e: base / e.get("filepath", ""), split, fetch, **kw
        )
    part = "train2017" if split == "train" else "val2017"
    ann = base / "annotations" / f"captions_{part}.json"
    if not ann.is_file():
        raise missing("coco_captions", base, fetch)
    with open(ann, encoding="utf-8") as f:
        data = json.load(f)
    caps: dict[int, list[str]] = {}
    for a in data["annotations"]:
        caps.setdefault(int(a["image_id"]), []).append(a["caption"].strip())
    records = [
        (str(base / part / im["file_name"]), caps[int(im["id"])])
        for im in data["images"]
        if int(im["id"]) in caps
    ]
    return _from_records("coco_captions", records, ann, fetch, **kw)


@_register("cc3m", "Conceptual Captions 3M (image,caption[,split] CSV from img2dataset)")
def load_cc3m(root: Path, split: str = "train", **kw: Any) -> CaptionDataset:
    """CC3M from ``ROOT/cc3m/captions.csv`` (same rules as ``csv:PATH``)."""
    return load_caption_csv(
        Path(root) / "cc3m" / "captions.csv", split, name="cc3m", fetch=_fetch("cc3m", root), **kw
    )
