"""Image-caption datasets: :class:`CaptionDataset` (one item per image-caption pair) and
:func:`templated_captions` (classification data turned into pairs with CLIP prompt templates).

The registered caption sets (``flickr8k``, ``flickr30k``, ``coco_captions``, ``cc3m``) and ``csv:PATH``
are read by :mod:`obstructlib.data.caption_sets`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from obstructlib.data.base import SizedDataset, to_float_image
from obstructlib.errors import ConfigError

ImageSource = np.ndarray | Sequence[str | Path] | SizedDataset


def _resize_short_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """Float ``(C, H, W)``: resize the shorter side to ``size``, then center-crop a square."""
    h, w = x.shape[-2:]
    if (h, w) == (size, size):
        return x
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    x = F.interpolate(x[None], size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)[0]
    top, left = (nh - size) // 2, (nw - size) // 2
    return x[:, top : top + size, left : left + size].clamp_(0.0, 1.0)


def _decode_file(path: str | Path, size: int | None) -> np.ndarray:
    """An image file as uint8 ``(H, W, 3)``, shorter side resized to ``size`` and center-cropped."""
    try:
        return _decode_image(path, size)
    except (OSError, ValueError, Image.DecompressionBombError) as err:  # PIL's "cannot identify image file"
        raise ConfigError(f"{path}: cannot decode this image ({type(err).__name__}): replace the file or "
                          "remove its row") from None


def _decode_image(path: str | Path, size: int | None) -> np.ndarray:
    with Image.open(path) as im:
        if size is not None:
            im.draft("RGB", (size, size))  # JPEG: decode at a reduced scale >= size (much faster)
        im = im.convert("RGB")
        if size is not None:
            w, h = im.size
            scale = size / min(w, h)
            nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
            im = im.resize((nw, nh), Image.Resampling.BICUBIC, reducing_gap=3.0)
            left, top = (nw - size) // 2, (nh - size) // 2
            im = im.crop((left, top, left + size, top + size))
        return np.array(im, dtype=np.uint8)  # a writable copy (torch warns on read-only arrays)


class CaptionDataset(Dataset):
    """Image-caption pairs: item ``i`` is ``(image, captions[i], image_ids[i])``.

    Images are held once per distinct image, backed by a uint8 NHWC array (small sets), a list of
    image files decoded on access (large sets), or another dataset whose items start with a float
    image (:func:`templated_captions`). ``in_memory=True`` decodes every image once into a uint8 array.

    Args:
        images: uint8 array ``(num_images, H, W, C)``, a list of ``num_images`` file paths, or a dataset.
        captions: one string per pair.
        image_ids: per pair, the index (``0..num_images-1``) of its image.
        labels: optional int class label per pair (for zero-shot accuracy); ``classes`` names them.
        image_size: shorter side resized to this many pixels, then center-cropped square; None keeps it.
        transform: optional callable on the float ``(C, H, W)`` image (augmentation).
        in_memory: decode all images once at construction into a uint8 array (needs equal sizes).
        progress: show a progress bar while decoding for ``in_memory``.

    Shape:
        An item is ``(image float (C, H, W) in [0, 1], caption str, image_id int)``.

    Example:
        >>> ds = CaptionDataset(np.zeros((2, 8, 8, 3), np.uint8), ["a", "b", "c"], [0, 0, 1])
        >>> ds[2][1:], ds.num_images, ds.pair_indices_of_image(0).tolist()
        (('c', 1), 2, [0, 1])
    """

    def __init__(
        self,
        images: ImageSource,
        captions: Sequence[str],
        image_ids: Sequence[int] | np.ndarray,
        *,
        labels: Sequence[int] | np.ndarray | None = None,
        classes: Sequence[str] | None = None,
        image_size: int | None = None,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        in_memory: bool = False,
        progress: bool = False,
        templates: Sequence[Any] | None = None,
    ) -> None:
        # Zero-shot prompts that match how this set's captions name a class (None: CLIP's defaults).
        self.templates = None if templates is None else list(templates)
        # Exactly one backing: a uint8 array, file paths, or a source dataset (+ index map).
        self._array: np.ndarray | None = None
        self._paths: list[str] | None = None
        self._source: Dataset | None = None
        self._source_index: np.ndarray | None = None
        if isinstance(images, np.ndarray):
            if images.dtype != np.uint8 or images.ndim != 4:
                raise ConfigError(
                    f"caption images must be a uint8 (N, H, W, C) array (got {images.dtype} {images.shape})"
                )
            self._array = images
        elif isinstance(images, torch.utils.data.Subset):  # read through to the base's get_image
            self._source, self._source_index = images.dataset, np.asarray(images.indices, np.int64)
        elif isinstance(images, Dataset):
            self._source, self._source_index = images, np.arange(len(images))
        else:  # neither an array nor a dataset: the documented third form, a list of image files
            self._paths = [str(p) for p in cast("Sequence[str | Path]", images)]
        self.captions = [str(c) for c in captions]
        self.image_ids = np.asarray(image_ids, dtype=np.int64).reshape(-1)
        if len(self.image_ids) != len(self.captions):
            raise ConfigError(
                f"{len(self.captions)} captions but {len(self.image_ids)} image ids: the two must match"
            )
        backing = next(b for b in (self._array, self._paths, self._source_index) if b is not None)
        self.num_images = len(backing)
        if len(self.image_ids) and (self.image_ids.min() < 0 or self.image_ids.max() >= self.num_images):
            raise ConfigError(f"image ids must lie in 0..{self.num_images - 1}: fix the pair list")
        self.labels = None if labels is None else np.asarray(labels, dtype=np.int64)
        if self.labels is not None and len(self.labels) != len(self.captions):
            raise ConfigError(
                f"{len(self.captions)} captions but {len(self.labels)} labels: the two must match"
            )
        self.classes = list(classes) if classes is not None else []
        self.image_size = image_size
        self.transform = transform
        # Names of per-image array attributes (e.g. ``domains``) that subset_images carries along.
        self.per_image_attributes: list[str] = []
        # Pairs grouped by image (stable), for pair_indices_of_image without a scan per call.
        self._order = np.argsort(self.image_ids, kind="stable")
        self._starts = np.searchsorted(self.image_ids[self._order], np.arange(self.num_images + 1))
        if in_memory and self._array is None:
            self.decode_all(progress=progress)

    # ---- images -------------------------------------------------------------------------
    def decode_all(self, progress: bool = False) -> CaptionDataset:
        """Decode every image once into a uint8 array (the decode-once cache); returns self."""
        if self._array is not None:
            return self
        items = [
            self._decode_uint8(i) for i in tqdm(range(self.num_images), disable=not progress, desc="decode")
        ]
        if len({a.shape for a in items}) > 1:
            raise ConfigError("images differ in size: pass image_size=N to cache them in memory")
        self._array = np.stack(items) if items else np.zeros((0, 1, 1, 3), np.uint8)
        self._paths, self._source, self._source_index = None, None, None
        return self

    def _decode_uint8(self, i: int) -> np.ndarray:
        if self._paths is not None:
            return _decode_file(self._paths[i], self.image_size)
        x = self.get_image(i)
        return (x.permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)

    def get_image(self, image_index: int) -> torch.Tensor:
        """The float ``(C, H, W)`` image ``image_index`` (in ``0..num_images-1``), before ``transform``."""
        if self._array is not None:
            x = to_float_image(self._array[image_index])
        elif self._paths is not None:
            return to_float_image(_decode_file(self._paths[image_index], self.image_size))
        else:
            src, index = self._source_backing()
            j = int(index[image_index])
            x = src.get_image(j) if hasattr(src, "get_image") else src[j][0]
        return x if self.image_size is None else _resize_short_crop(x, self.image_size)

    def get_images(self, image_indices: Sequence[int] | np.ndarray) -> list[torch.Tensor]:
        """The batched :meth:`get_image`: one decode call for an array or an array-backed source."""
        ids = np.asarray(image_indices, dtype=np.int64)
        if self._array is not None:
            xs = list(to_float_image(self._array[ids]))
        elif self._source is not None and hasattr(self._source, "get_images"):
            src, index = self._source_backing()
            xs = list(cast(Any, src).get_images(index[ids]))
        else:
            return [self.get_image(int(i)) for i in ids]
        return xs if self.image_size is None else [_resize_short_crop(x, self.image_size) for x in xs]

    def _source_backing(self) -> tuple[Dataset, np.ndarray]:
        """The source dataset and its index map, for a set backed by another dataset."""
        if self._source is None or self._source_index is None:
            raise ValueError("this CaptionDataset is backed by an array or files, not by a source dataset")
        return self._source, self._source_index

    @property
    def image_paths(self) -> list[str] | None:
        """The image files when backed by files (None once cached in memory or array-backed)."""
        return self._paths

    # ---- pairs --------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str, int]:
        image_id = int(self.image_ids[index])
        x = self.get_image(image_id)
        if self.transform is not None:
            x = self.transform(x)
        return x, self.captions[index], image_id

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, str, int]]:
        if not indices:
            return []
        ids = self.image_ids[np.asarray(indices, dtype=np.int64)]
        out = []
        for index, image_id, x in zip(indices, ids, self.get_images(ids)):
            if self.transform is not None:
                x = self.transform(x)
            out.append((x, self.captions[index], int(image_id)))
        return out

    def pair_indices_of_image(self, image_index: int) -> np.ndarray:
        """Indices of the pairs whose image is ``image_index`` (int64, ascending)."""
        return self._order[self._starts[image_index] : self._starts[image_index + 1]]

    @property
    def caption_counts(self) -> np.ndarray:
        """Number of captions of each image, int64 ``(num_images,)``."""
        return np.diff(self._starts)

    @property
    def captions_per_image(self) -> int:
        """Captions per image (the exact count when uniform, else the rounded mean)."""
        return round(len(self) / max(self.num_images, 1))

    @property
    def image_labels(self) -> np.ndarray | None:
        """The label of each image (from its first pair), or None without labels."""
        if self.labels is None:
            return None
        first = self._order[np.minimum(self._starts[:-1], max(len(self) - 1, 0))]
        return self.labels[first] if len(self) else self.labels[:0]

    def image_dataset(self) -> Dataset:
        """A dataset over the distinct images: item ``j`` is ``(image, j)`` (encode each image once)."""
        return _ImageView(self)

    def subset_images(self, image_indices: Sequence[int] | np.ndarray) -> CaptionDataset:
        """Keep the chosen images with ALL their captions; image ids are re-indexed 0..k-1 in the given order.

        Example:
            >>> ds = CaptionDataset(np.zeros((3, 4, 4, 3), np.uint8), list("abcdef"), [0, 0, 1, 1, 2, 2])
            >>> ds.subset_images([2, 0]).captions
            ['e', 'f', 'a', 'b']
        """
        keep = np.asarray(image_indices, dtype=np.int64).reshape(-1)
        if len(np.unique(keep)) != len(keep) or (
            len(keep) and (keep.min() < 0 or keep.max() >= self.num_images)
        ):
            raise ConfigError(f"subset_images needs distinct image indices in 0..{self.num_images - 1}")
        pairs = [self.pair_indices_of_image(int(i)) for i in keep]
        pair_idx = np.concatenate(pairs) if pairs else np.zeros(0, np.int64)
        new_ids = np.repeat(np.arange(len(keep)), [len(p) for p in pairs])
        if self._array is not None:
            images: ImageSource = np.ascontiguousarray(self._array[keep])
        elif self._paths is not None:
            images = [self._paths[i] for i in keep]
        else:
            source, index = self._source_backing()
            images = torch.utils.data.Subset(source, index[keep].tolist())
        out = CaptionDataset(
            images,
            [self.captions[i] for i in pair_idx],
            new_ids,
            labels=None if self.labels is None else self.labels[pair_idx],
            classes=self.classes,
            image_size=self.image_size,
            transform=self.transform,
            templates=self.templates,
        )
        for name in self.per_image_attributes:  # per-image extras (domains, colors ...) follow the images
            setattr(out, name, np.asarray(getattr(self, name))[keep])
        out.per_image_attributes = list(self.per_image_attributes)
        for name in ("superclasses", "superclass_of"):  # per-class extras are unchanged
            if hasattr(self, name):
                setattr(out, name, getattr(self, name))
        return out


class _ImageView(Dataset):
    def __init__(self, parent: CaptionDataset) -> None:
        self.parent = parent

    def __len__(self) -> int:
        return self.parent.num_images

    def __getitem__(self, j: int) -> tuple[torch.Tensor, int]:
        return self.parent.get_image(j), j


# ---- templated captions for classification data ----------------------------------------
_FALLBACK_TEMPLATES = (
    "a photo of a {}.",
    "a blurry photo of a {}.",
    "a low resolution photo of the {}.",
    "a close-up photo of a {}.",
    "a photo of the small {}.",
    "a photo of the large {}.",
    "a bright photo of a {}.",
    "a cropped photo of the {}.",
)


def default_templates() -> list[Callable[[str], str]]:
    """The 80 OpenAI ImageNet prompt templates shipped with open_clip (a short built-in list without it)."""
    try:
        from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

        return list(OPENAI_IMAGENET_TEMPLATES)
    except ImportError:  # open_clip is optional for the data layer
        return [t.format for t in _FALLBACK_TEMPLATES]


def templated_captions(
    dataset: SizedDataset,
    templates: Sequence[str | Callable[[str], str]] | None = None,
    classes: Sequence[str] | None = None,
    captions_per_image: int = 1,
    seed: int = 0,
    *,
    image_size: int | None = None,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    in_memory: bool = False,
) -> CaptionDataset:
    """Turn a classification dataset into image-caption pairs with CLIP prompt templates.

    Each image gets ``captions_per_image`` distinct templates drawn with a seeded generator, filled
    with its class name (underscores become spaces). Labels and classes are kept per pair so the
    same data gives zero-shot accuracy. Images are read lazily from ``dataset`` (labels come from its
    ``labels``/``targets`` attribute when present, so nothing is decoded up front unless ``in_memory``).

    Args:
        dataset: items ``(image float (C, H, W), label int)`` with a ``classes`` attribute.
        templates: strings with ``{}`` or callables ``name -> caption``; default :func:`default_templates`.
        classes: class names overriding ``dataset.classes``.
        captions_per_image: captions (pairs) per image, at least 1.
        seed: seed of the template draw (same seed, same captions).
        image_size, transform, in_memory: as :class:`CaptionDataset` (the source's own transform
            is skipped when it has ``get_image``).

    Example:
        >>> from obstructlib.data.base import ArrayImageDataset
        >>> src = ArrayImageDataset(np.zeros((2, 4, 4, 3), np.uint8), [0, 1], ["tabby_cat", "dog"])
        >>> templated_captions(src, ["a photo of a {}."]).captions
        ['a photo of a tabby cat.', 'a photo of a dog.']
    """
    from obstructlib.data.wrappers import labels_of

    if captions_per_image < 1:
        raise ConfigError(f"captions_per_image={captions_per_image} must be at least 1")
    fns = [t.format if isinstance(t, str) else t for t in (templates or default_templates())]
    if not fns:
        raise ConfigError("templates is empty: pass at least one template such as 'a photo of a {}.'")
    labels = labels_of(dataset)
    if labels is None:  # no label attribute: read the labels item by item (decodes the images)
        labels = np.asarray([int(dataset[i][1]) for i in range(len(dataset))], dtype=np.int64)
    names = list(classes if classes is not None else getattr(dataset, "classes", []))
    if not names:
        names = [str(c) for c in range(int(labels.max()) + 1)]
    names = [str(n).replace("_", " ").strip() for n in names]
    if len(labels) and labels.max() >= len(names):
        raise ConfigError(
            f"label {int(labels.max())} has no class name: pass classes with {int(labels.max()) + 1} names"
        )
    rng = np.random.default_rng(seed)
    k = captions_per_image
    # Distinct templates per image when possible (argsort of uniforms = a permutation per row).
    if k <= len(fns):
        picks = np.argsort(rng.random((len(labels), len(fns))), axis=1)[:, :k]
    else:
        picks = rng.integers(0, len(fns), size=(len(labels), k))
    captions = [fns[t](names[y]) for y, row in zip(labels.tolist(), picks.tolist()) for t in row]
    return CaptionDataset(
        dataset,
        captions,
        np.repeat(np.arange(len(labels)), k),
        labels=np.repeat(labels, k),
        classes=names,
        image_size=image_size,
        transform=transform,
        in_memory=in_memory,
        templates=list(templates or default_templates()),
    )


_MOVED_TO_CAPTION_SETS = (
    "load_caption_csv",
    "load_flickr8k",
    "load_flickr30k",
    "load_coco_captions",
    "load_cc3m",
)


def __getattr__(name: str) -> Any:
    # The loaders moved to obstructlib.data.caption_sets; keep `captions.load_flickr8k` & co. working
    # (imported lazily: caption_sets imports this module).
    if name in _MOVED_TO_CAPTION_SETS:
        from obstructlib.data import caption_sets

        return getattr(caption_sets, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
