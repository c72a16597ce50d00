"""What the hacker trains on: the published, protected images (and pairs), as datasets.

One image pipeline for every data-side paper: ``x -> clip(x + delta_i, 0, 1)`` (the store's
noise of sample ``i``, for the samples that are protected) -> 8-bit rounding (what an exported PNG
or JPEG holds) -> the hacker's per-image countermeasure -> the training augmentation.
:class:`ProtectedDataset` yields classification items ``(image, label)``; :class:`ProtectedPairs`
yields image-caption pairs ``(image, token ids, image_id)`` with each pair's text trigger inserted
after the start token.

Example:
    >>> from obstructlib.data import PerturbationStore, load_dataset
    >>> train = load_dataset("digits", split="train", image_size=8, channels=3)
    >>> store = PerturbationStore(len(train), (3, 8, 8), eps=8 / 255)
    >>> x, y = ProtectedDataset(train, store)[0]
    >>> tuple(x.shape), bool((x * 255 - (x * 255).round()).abs().max() < 1e-4)
    ((3, 8, 8), True)
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from obstructlib.data.base import SizedDataset, fetch_many
from obstructlib.data.store import PerturbationStore
from obstructlib.data.tokens import insert_trigger, strip_tokens
from obstructlib.errors import ConfigError

__all__ = ["ProtectedDataset", "ProtectedPairs"]

Transform = Callable[[torch.Tensor], torch.Tensor]


class _PublishedImages(Dataset):
    """The shared image pipeline: noise (where protected), 8-bit rounding, countermeasure, augmentation."""

    def __init__(self, dataset: SizedDataset, store: PerturbationStore | None, protected: np.ndarray | None,
                 quantize: bool, transform: Transform | None, augment: Transform | None) -> None:
        n = len(dataset)
        if store is not None and store.num_samples != n:
            raise ConfigError(f"the store holds noise for {store.num_samples} samples, the dataset has {n}: "
                              "use the store made for this dataset")
        self.dataset, self.store = dataset, store
        self.protected = np.ones(n, bool) if protected is None else np.asarray(protected, bool)
        self.quantize, self.transform, self.augment = quantize, transform, augment

    def __len__(self) -> int:
        return len(self.dataset)

    def published_image(self, x: torch.Tensor, index: int) -> torch.Tensor:
        """Image ``index`` as the hacker trains on it (``x``: the clean image, ``(C, H, W)`` in [0, 1])."""
        return self.published_images([(x,)], [index])[0]

    def published_images(self, items: list, indices: list[int]) -> list[torch.Tensor]:
        """The batched :meth:`published_image` of the clean ``items`` (first element: the image) at ``indices``.

        Noise and 8-bit rounding act on the stacked batch (elementwise, so each image comes out as
        :meth:`published_image` makes it); the countermeasure and the augmentation run per image,
        in order, so random augmentations draw exactly as they do item by item.
        """
        if not items:
            return []
        if len({tuple(item[0].shape) for item in items}) > 1:  # images of different sizes: one at a time
            return [self.published_images([item], [i])[0] for item, i in zip(items, indices)]
        x = torch.stack([item[0] for item in items])
        if self.store is not None:
            mask = self.protected[np.asarray(indices, dtype=np.int64)]
            if mask.all():
                x = self.store.apply(x, indices)
            elif mask.any():
                rows = np.flatnonzero(mask)
                x[rows] = self.store.apply(x[rows], [indices[r] for r in rows])
        if self.quantize:
            x = torch.round(x * 255.0) / 255.0
        out = list(x)
        if self.transform is not None or self.augment is not None:
            for i, image in enumerate(out):
                if self.transform is not None:
                    image = self.transform(image)
                if self.augment is not None:
                    image = self.augment(image)
                out[i] = image
        return out


class ProtectedDataset(_PublishedImages):
    """Classification items as the hacker sees them: ``augment(transform(round8(clip(x + delta_i))))``.

    Args:
        dataset: classification items ``(image float (C, H, W) in [0, 1], label)``, index-aligned
            with the store's samples, without random augmentation.
        store: the protection (None: the clean images).
        transform: a per-image countermeasure (JPEG, grayscale, cutout) or None.
        augment: a random training augmentation applied last (e.g.
            :func:`~obstructlib.primitives.augment.pad_crop_flip`), or None.
        protected: boolean mask of the samples that carry noise (partial protection); default all.
        quantize: round to 8 bits, as an exported PNG holds the image (default True).

    Shape:
        Item: ``(image (C, H, W) in [0, 1], label int)``.
    """

    def __init__(self, dataset: SizedDataset, store: PerturbationStore | None, transform: Transform | None = None,
                 augment: Transform | None = None, *, protected: np.ndarray | None = None,
                 quantize: bool = True) -> None:
        super().__init__(dataset, store, protected, quantize, transform, augment)
        self.labels = getattr(dataset, "labels", None)
        self.classes = getattr(dataset, "classes", None)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        x, y = self.dataset[index][:2]
        return self.published_image(x, index), int(y)

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, int]]:
        items = fetch_many(self.dataset, indices)
        return [(x, int(item[1])) for x, item in zip(self.published_images(items, indices), items)]


class ProtectedPairs(_PublishedImages):
    """Pairs as the surrogate (and the hacker) see them: ``(clip(x_i + delta_i), t_i + c_i)`` as token ids.

    Args:
        pairs: caption dataset, items ``(image float (C, H, W) in [0, 1], caption, image_id)``,
            no random augmentation (the noise is pixel-aligned).
        tokens: every caption's ids from :func:`~obstructlib.data.tokens.tokenize_captions` ``(N, L)``.
        eot_token_id: the tokenizer's end-of-text id.
        store: image noise (None: clean images).
        triggers: trigger ids ``(R, k)`` (None or ``k = 0``: no trigger).
        trigger_rows: pair -> trigger row (default: pair ``i`` uses row ``i``).
        protected: boolean mask of the pairs that carry noise and trigger (partial protection);
            default all.
        quantize: round the image to 8 bits, as a published JPEG/PNG file holds it.
        transform: per-image countermeasure after protection (JPEG, random resized crop ...).
        strip_first: the hacker drops this many tokens after the start token (countermeasure).

    Shape:
        Item: ``(image (C, H, W), tokens (L,) int64, image_id int)``.
    """

    def __init__(
        self,
        pairs: SizedDataset,
        tokens: torch.Tensor,
        eot_token_id: int,
        store: PerturbationStore | None = None,
        triggers: torch.Tensor | None = None,
        trigger_rows: np.ndarray | None = None,
        protected: np.ndarray | None = None,
        *,
        quantize: bool = False,
        transform: Transform | None = None,
        strip_first: int = 0,
    ) -> None:
        n = len(pairs)
        if len(tokens) != n:
            raise ConfigError(f"{n} pairs but {len(tokens)} token rows: tokenise this dataset's captions")
        super().__init__(pairs, store, protected, quantize, transform, None)
        self.pairs, self.tokens, self.eot = pairs, tokens, eot_token_id
        self.triggers = None if triggers is None or triggers.shape[1] == 0 else triggers
        self.trigger_rows = np.arange(n) if trigger_rows is None else np.asarray(trigger_rows, np.int64)
        self.strip_first = strip_first
        self.image_ids = getattr(pairs, "image_ids", None)

    def __len__(self) -> int:
        return len(self.tokens)

    def caption_tokens(self, index: int) -> torch.Tensor:
        """The ids of pair ``index`` as published (trigger inserted when protected), ``(L,)``."""
        tok = self.tokens[index : index + 1].long()
        if self.triggers is not None and self.protected[index]:
            tok = insert_trigger(tok, self.triggers[self.trigger_rows[index]][None], self.eot)
        if self.strip_first:
            tok = strip_tokens(tok, self.strip_first, self.eot)
        return tok[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        x, _, image_id = self.pairs[index][:3]
        return self.published_image(x, index), self.caption_tokens(index), int(image_id)

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, torch.Tensor, int]]:
        items = fetch_many(self.pairs, indices)
        return [(x, self.caption_tokens(i), int(item[2]))
                for x, i, item in zip(self.published_images(items, indices), indices, items)]
