"""Large image datasets decoded per item: ``imagenet`` and ``celeba``.

Both read files lazily through :class:`~obstructlib.data.images.ImageFolderDataset` and take
``max_samples`` and ``seed`` for a seeded class-stratified subset chosen before any decoding.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from obstructlib.data.base import missing, register_dataset
from obstructlib.data.folders import FETCH, fetch_hint, stratified_indices
from obstructlib.data.images import ImageFolderDataset, Transform, scan_image_folder
from obstructlib.errors import ConfigError


# ------------------------------------------------------------------------------------------ imagenet
class ImageNetDataset(ImageFolderDataset):
    """ImageNet images read lazily; ``classes`` are readable names when all 1000 wnids are present.

    Attributes:
        wnids: the class folders (WordNet ids), index-aligned with the labels.
    """

    wnids: list[str]


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
) -> ImageNetDataset:
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
    ds = ImageNetDataset(
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

    attr_names: list[str]
    attrs: np.ndarray
    attributes: list[str]
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
