"""CelebA with a vector of binary attributes per face, and the prompts of LTO's attribute variant.

Reads torchvision's on-disk layout, ``ROOT/celeba/``:

- ``img_align_celeba/NNNNNN.jpg``: 202,599 aligned faces, 178 x 218 pixels;
- ``list_attr_celeba.txt``: line 1 the image count, line 2 the 40 attribute names, then one line
  ``NNNNNN.jpg v_1 ... v_40`` per image, values -1 / 1 separated by one or more spaces;
- ``list_eval_partition.txt``: ``NNNNNN.jpg p``, p = 0 (train), 1 (valid), 2 (test).

:func:`load_celeba_attributes` (registered as ``celeba-attributes``) returns a
:class:`CelebAAttributes` whose items are ``(image, attribute vector)``, by default the 12
attributes LTO obstructs (:data:`LTO_ATTRIBUTES`); :data:`ATTRIBUTE_PROMPTS` holds the official
code's negative / positive phrase of each, completing :data:`PROMPT_TEMPLATE`. (The ``celeba``
name belongs to :func:`obstructlib.data.large.load_celeba`, whose label is one chosen attribute.)

References:
    Liu et al., Deep Learning Face Attributes in the Wild, ICCV 2015, arXiv:1411.7766 (CelebA).
    Zheng et al., Learning to Obstruct, ECCV 2024, arXiv:2409.19210 (spec 2.1, 2.6).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from obstructlib.data.base import register_dataset
from obstructlib.data.folders import FETCH
from obstructlib.data.images import ImageFolderDataset, Transform
from obstructlib.errors import ConfigError, DatasetNotFoundError

__all__ = [
    "ATTRIBUTE_PROMPTS",
    "LTO_ATTRIBUTES",
    "PROMPT_TEMPLATE",
    "CelebAAttributes",
    "attribute_prompts",
    "load_celeba_attributes",
]

NAME = "celeba-attributes"
# LTO's 12 attributes in the official order: attribute id 0 (Eyeglasses) is the validation
# attribute the official scripts never report; ids 1-11 are averaged (spec 2.1, 3.4).
LTO_ATTRIBUTES = ("Eyeglasses", "Young", "Bald", "Goatee", "No_Beard", "Smiling", "Pale_Skin",
                  "Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair", "Wearing_Hat")
PROMPT_TEMPLATE = "a photo of a person {}"
# (negative, positive) phrase per attribute, verbatim from the official data/celeba/datamodule.py.
# No_Beard's positive class is "without a beard".
ATTRIBUTE_PROMPTS: dict[str, tuple[str, str]] = {
    "Eyeglasses": ("not wearing eyeglasses", "wearing eyeglasses"),
    "Young": ("who is not young", "who is young"),
    "Bald": ("without a bald head", "with a bald head"),
    "Goatee": ("without a goatee", "with a goatee"),
    "No_Beard": ("with a beard", "without a beard"),
    "Smiling": ("who is not smiling", "who is smiling"),
    "Pale_Skin": ("without pale skin", "with pale skin"),
    "Black_Hair": ("with hair that is not black", "with black hair"),
    "Blond_Hair": ("with hair that is not blond", "with blond hair"),
    "Brown_Hair": ("with hair that is not brown", "with brown hair"),
    "Gray_Hair": ("with hair that is not gray", "with gray hair"),
    "Wearing_Hat": ("not wearing a hat", "wearing a hat"),
}
SPLITS = {"train": 0, "valid": 1, "val": 1, "test": 2, "all": None}
_FILES = ("img_align_celeba", "list_attr_celeba.txt", "list_eval_partition.txt")


def attribute_prompts(attr_names: Sequence[str], template: str = PROMPT_TEMPLATE) -> list[tuple[str, str]]:
    """The two class prompts ``(negative, positive)`` of each attribute, for a 2-way CLIP head.

    Args:
        attr_names: attribute names, each a key of :data:`ATTRIBUTE_PROMPTS`.
        template: a format string with one ``{}`` for the phrase.

    Example:
        >>> attribute_prompts(["Eyeglasses"])
        [('a photo of a person not wearing eyeglasses', 'a photo of a person wearing eyeglasses')]
    """
    unknown = [a for a in attr_names if a not in ATTRIBUTE_PROMPTS]
    if unknown:
        raise ConfigError(f"no prompts for {unknown}: use attributes among {', '.join(ATTRIBUTE_PROMPTS)}")
    return [(template.format(ATTRIBUTE_PROMPTS[a][0]), template.format(ATTRIBUTE_PROMPTS[a][1])) for a in attr_names]


class CelebAAttributes(ImageFolderDataset):
    """CelebA faces with the selected binary attributes as one int64 0/1 vector per image.

    Images are decoded per item: centre-cropped to a square and resized to ``image_size``.

    Attributes:
        attr_names: the selected attribute names (A), index-aligned with the vector (also ``classes``).
        attributes: int64 ``(N, A)`` in {0, 1} (the file's -1 is 0); the same array as ``labels``.
        all_attr_names: the 40 names of ``list_attr_celeba.txt``, in the file's order.
        partition: int64 ``(N,)``: 0 train, 1 valid, 2 test.
        files: the image file names (``000001.jpg``).

    Shape:
        An item is ``(image, target)``: image float ``(3, image_size, image_size)`` in [0, 1];
        target int64 ``(A,)`` in {0, 1}.

    Example:
        >>> ds = load_celeba_attributes("data", split="test", image_size=64)  # doctest: +SKIP
        >>> image, target = ds[0]; ds.attr_names[:2]  # doctest: +SKIP
        ['Eyeglasses', 'Young']
    """

    attr_names: list[str]
    attributes: np.ndarray
    all_attr_names: list[str]
    partition: np.ndarray
    files: list[str]
    _per_sample = ("paths", "labels", "attributes", "partition", "files")


def _missing(path: Path, root: Path) -> DatasetNotFoundError:
    base = root / "celeba"
    return DatasetNotFoundError(
        f"celeba: {path} not found: put {', '.join(_FILES)} under {base} (download=False, the default, "
        f"reads only these files; fetch them with `obstruct data fetch celeba --root {root}`, or on Colab "
        f"pass download=True to run torchvision.datasets.CelebA({str(root)!r}, download=True), which "
        "Google Drive's daily quota may refuse)"
    )


def _download(root: Path) -> None:
    import torchvision.datasets as tvd

    try:
        tvd.CelebA(str(root), split="all", target_type="attr", download=True)
    except Exception as err:  # gdown missing, Drive quota, a failed checksum: all end the same way
        raise DatasetNotFoundError(
            f"celeba: torchvision's download into {root / 'celeba'} failed ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else 'no message'}): download the files by hand "
            f"and run `obstruct data fetch celeba --root {root} --archives DIR`"
        ) from None


def _bad_row(path: Path, index: int, row: list[str], num_names: int) -> ConfigError:
    return ConfigError(f"celeba: {path} is malformed: line {index + 3} must be a file name and {num_names} "
                       f"values -1 or 1 (got {len(row) - 1} fields starting {' '.join(row[:3])!r}); "
                       "re-extract the file")


def _read_attributes(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """``(files, names, values)`` of ``list_attr_celeba.txt``; values int64 ``(N, 40)`` in {-1, 1}."""
    lines = path.read_text().splitlines()
    if len(lines) < 2 or not lines[0].strip().isdigit():
        raise ConfigError(f"celeba: {path} is malformed: line 1 must be the image count and line 2 the "
                          "attribute names; re-extract the file from the CelebA archive")
    count, names = int(lines[0]), lines[1].split()
    if len(set(names)) != len(names):
        raise ConfigError(f"celeba: {path} is malformed: line 2 repeats attribute names; re-extract the file")
    rows = [line.split() for line in lines[2:] if line.strip()]
    for i, row in enumerate(rows):
        if len(row) != len(names) + 1:
            raise _bad_row(path, i, row, len(names))
    try:
        values = np.array([row[1:] for row in rows], dtype=np.int64).reshape(len(rows), len(names))
        valid = bool(np.isin(values, (-1, 1)).all())
    except ValueError:  # a token that is not an integer
        valid = False
    if not valid:  # find the first offending line for the message (only on this failing path)
        i = next(i for i, row in enumerate(rows) if any(v not in ("-1", "1") for v in row[1:]))
        raise _bad_row(path, i, rows[i], len(names))
    if len(rows) != count:
        raise ConfigError(f"celeba: {path} is malformed: line 1 says {count} images but {len(rows)} rows "
                          "follow; the file is truncated")
    return [row[0] for row in rows], names, values


def _read_partition(path: Path, files: Sequence[str]) -> np.ndarray:
    part: dict[str, int] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
            raise ConfigError(f"celeba: {path} line {number} must be 'FILE 0|1|2' (got {line.strip()!r}); "
                              "re-extract the file")
        part[fields[0]] = int(fields[1])
    absent = [f for f in files if f not in part]
    if absent:
        raise ConfigError(f"celeba: {path} has no partition for {len(absent)} images (first {absent[0]}): "
                          "use the list_eval_partition.txt of the same CelebA release")
    return np.array([part[f] for f in files], dtype=np.int64)


@register_dataset(
    NAME,
    fetch=FETCH.format(name="celeba", root="{root}"),
    subdir="celeba",
    description="CelebA aligned faces with a 0/1 vector of chosen attributes (default: LTO's 12), lazily",
    splits=("train", "valid", "test"),
)
def load_celeba_attributes(
    root: str | Path,
    split: str = "train",
    *,
    attributes: Sequence[str] | None = None,
    image_size: int = 224,
    transform: Transform | None = None,
    max_samples: int | None = None,
    seed: int = 0,
    download: bool = False,
    progress: bool = True,
) -> CelebAAttributes:
    """One split of CelebA from ``ROOT/celeba/`` with the selected attributes as targets.

    Args:
        root: the data root (the folder holding ``celeba/``).
        split: ``"train"`` (partition 0, 162,770 images), ``"valid"`` (or ``"val"``, 1, 19,867),
            ``"test"`` (2, 19,962) or ``"all"``. Through :func:`~obstructlib.data.load_dataset`
            only ``"train"`` and ``"test"`` pass; call this function for the others.
        attributes: attribute names, in the order of the target vector (default
            :data:`LTO_ATTRIBUTES`, the 12 of the paper).
        image_size: output side in pixels: each 178 x 218 face is centre-cropped to a square and
            resized (bilinear), as CLIP's preprocess does (224 for RN50).
        transform: optional callable on each float ``(3, H, W)`` image (augmentation).
        max_samples: keep a seeded uniform subset of at most this many images of the split
            (sorted by file); None keeps all.
        seed: seed of that subset.
        download: when files are missing, fetch them with ``torchvision.datasets.CelebA(root,
            download=True)`` (needs ``gdown`` and internet; Google Drive's quota often refuses).
            False (default) is the offline path: only the files on disk are read.
        progress: accepted for the common loader signature (nothing is decoded up front).

    Returns:
        A :class:`CelebAAttributes` dataset.

    Raises:
        DatasetNotFoundError: a file or folder is missing (the message says where they go).
        ConfigError: a malformed list file, an unknown attribute or split, an empty split.

    References:
        arXiv:1411.7766 (CelebA); arXiv:2409.19210 (spec 2.1, 2.6: the 12 attributes, test split).

    Example:
        >>> ds = load_celeba_attributes("data", "test", attributes=["Smiling"], image_size=64)  # doctest: +SKIP
        >>> ds[0][1]  # doctest: +SKIP
        tensor([1])
    """
    root = Path(root).expanduser()
    base = root / "celeba"
    if split not in SPLITS:
        raise ConfigError(f"celeba: split {split!r} is not one of {', '.join(SPLITS)}")
    if download and not all((base / f).exists() for f in _FILES):
        _download(root)
    for f in _FILES:
        if not (base / f).exists():
            raise _missing(base / f, root)
    files, all_names, values = _read_attributes(base / _FILES[1])
    chosen = list(LTO_ATTRIBUTES if attributes is None else [attributes] if isinstance(attributes, str)
                  else attributes)
    unknown = [a for a in chosen if a not in all_names]
    if unknown or not chosen:
        raise ConfigError(f"celeba: unknown attribute(s) {unknown}: use names from {', '.join(all_names)}")
    partition = _read_partition(base / _FILES[2], files)
    want = SPLITS[split]
    idx = np.flatnonzero(partition == want) if want is not None else np.arange(len(files))
    if len(idx) == 0:
        raise ConfigError(f"celeba: no images in split {split!r}: check {base / _FILES[2]}")
    if max_samples is not None and max_samples < len(idx):
        if max_samples < 1:
            raise ConfigError(f"max_samples={max_samples}: use a positive integer or None")
        idx = np.sort(np.random.default_rng(seed).choice(idx, size=max_samples, replace=False))
    first = base / _FILES[0] / files[idx[0]]
    if not first.is_file():
        raise DatasetNotFoundError(f"celeba: {first} not found: the images must lie directly in "
                                   f"{base / _FILES[0]} (move them up if the archive nested a second folder)")
    cols = np.array([all_names.index(a) for a in chosen], dtype=np.int64)
    targets = (values[np.ix_(idx, cols)] > 0).astype(np.int64)  # the file's -1 -> 0, 1 -> 1
    ds = CelebAAttributes([str(base / _FILES[0] / files[i]) for i in idx], targets, chosen,
                          image_size=image_size, channels=3, transform=transform)
    ds.attr_names, ds.attributes, ds.all_attr_names = chosen, ds.labels, all_names
    ds.partition, ds.files = partition[idx], [files[i] for i in idx]
    return ds
