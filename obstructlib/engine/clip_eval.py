"""CLIP evaluation: encode a test set once, then retrieval recall@K and zero-shot accuracy.

References:
    Radford et al., arXiv:2103.00020 (zero-shot protocol); Karpathy and Fei-Fei, arXiv:1412.2306
    (the image-caption retrieval protocol with several captions per image).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from obstructlib.engine.distributed import unwrap
from obstructlib.engine.utils import autocast, resolve_device
from obstructlib.errors import ConfigError
from obstructlib.metrics import retrieval_metrics, zero_shot_accuracy

if TYPE_CHECKING:
    from obstructlib.data.base import SizedDataset
    from obstructlib.models.clip import ClipModel

__all__ = ["encode_dataset", "evaluate_clip"]


def _default_templates() -> list[Any]:
    """The OpenAI ImageNet prompts (as used for templated training captions), else one prompt."""
    try:
        from obstructlib.data.captions import default_templates

        return list(default_templates())
    except ImportError:
        return ["a photo of a {}."]


class _FirstPairImages(Dataset):
    """The image of the first pair of each distinct image (fallback for generic caption datasets)."""

    def __init__(self, pairs: SizedDataset, first: Sequence[int]) -> None:
        self.pairs, self.first = pairs, list(first)

    def __len__(self) -> int:
        return len(self.first)

    def __getitem__(self, j: int) -> tuple[torch.Tensor, int]:
        return self.pairs[self.first[j]][0], j


def _pair_structure(dataset: SizedDataset) -> tuple[Dataset, list[str], np.ndarray, np.ndarray | None]:
    """(image dataset, captions, caption -> image row, per-image labels or None)."""
    if hasattr(dataset, "image_dataset") and hasattr(dataset, "image_ids") and hasattr(dataset, "captions"):
        labels = getattr(dataset, "image_labels", None)
        return dataset.image_dataset(), list(dataset.captions), np.asarray(dataset.image_ids), labels
    # Generic datasets: one scan over the pairs, images grouped by image_id in order of appearance.
    rows: dict[int, int] = {}
    first: list[int] = []
    captions: list[str] = []
    ids: list[int] = []
    pair_labels = getattr(dataset, "labels", None)
    for i in range(len(dataset)):
        _, caption, image_id = dataset[i]
        if int(image_id) not in rows:
            rows[int(image_id)] = len(first)
            first.append(i)
        captions.append(caption)
        ids.append(rows[int(image_id)])
    labels = None if pair_labels is None else np.asarray(pair_labels)[first]
    return _FirstPairImages(dataset, first), captions, np.asarray(ids, dtype=np.int64), labels


@torch.no_grad()
def _encode(
    model: nn.Module,
    dataset: SizedDataset,
    device: torch.device,
    batch_size: int,
    progress: bool,
    amp: bool,
    num_workers: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, np.ndarray | None]:
    bare = cast("ClipModel", unwrap(model)).to(device).eval()  # unwrap strips DDP/compile off the ClipModel
    images, captions, ids, labels = _pair_structure(dataset)
    image_features = []
    loader = DataLoader(images, batch_size=batch_size, num_workers=num_workers)
    for x, _ in tqdm(loader, desc="encode images", disable=not progress, leave=False):
        with autocast(device, enabled=amp):
            image_features.append(bare.encode_image(x.to(device), normalize=True).float())
    text_features = []
    for start in tqdm(
        range(0, len(captions), batch_size), desc="encode captions", disable=not progress, leave=False
    ):
        tokens = bare.tokenize(captions[start : start + batch_size]).to(device)
        with autocast(device, enabled=amp):
            text_features.append(bare.encode_text(tokens, normalize=True).float())
    if not image_features or not text_features:
        raise ConfigError("the evaluation dataset is empty: pass a caption dataset with at least one pair")
    return torch.cat(image_features), torch.cat(text_features), torch.as_tensor(ids, dtype=torch.long), labels


def encode_dataset(
    model: nn.Module,
    dataset: SizedDataset,
    device: torch.device | str | None,
    batch_size: int = 256,
    *,
    progress: bool = False,
    amp: bool = True,
    num_workers: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Embed every distinct image once and every caption of a caption dataset.

    Args:
        model: a ``ClipModel``.
        dataset: pairs ``(image, caption, image_id)``; a ``CaptionDataset`` is read via its
            ``image_dataset()``/``captions``/``image_ids`` without decoding an image twice.
        device: where to compute.
        batch_size: images or captions per forward pass.
        progress: show progress bars.
        amp: autocast on CUDA (see ``autocast``).
        num_workers: DataLoader workers for the images.

    Shape:
        Returns ``image_features (N_img, D)``, ``text_features (N_pairs, D)`` (both
        L2-normalised float32 on ``device``) and ``text_image_ids (N_pairs,)`` int64 on CPU,
        the row in ``image_features`` of each caption's image.
    """
    image_features, text_features, ids, _ = _encode(
        model, dataset, resolve_device(device), batch_size, progress, amp, num_workers
    )
    return image_features, text_features, ids


def evaluate_clip(
    model: nn.Module,
    test_set: SizedDataset,
    device: torch.device | str | None,
    *,
    classnames: Sequence[str] | None = None,
    templates: Sequence[Any] | None = None,
    batch_size: int = 256,
    progress: bool = False,
    amp: bool = True,
) -> dict[str, float]:
    """Image-text retrieval on ``test_set`` and, when it has labels and classes, zero-shot accuracy.

    Runs on the calling process only (no collectives): under ``torchrun`` call it on rank 0.

    Args:
        model: a ``ClipModel``.
        test_set: caption dataset (``CaptionDataset`` or any dataset of pairs).
        device: where to compute.
        classnames: class names for zero-shot (default ``test_set.classes``).
        templates: prompt templates (strings with ``{}`` or callables) for
            ``model.zero_shot_classifier``; default ``test_set.templates`` (prompts worded like
            that set's captions) when present, else the 80 OpenAI ImageNet prompts.
        batch_size: images or captions per forward pass.
        progress: show progress bars.
        amp: autocast on CUDA (see ``autocast``).

    Returns:
        ``i2t_r1, i2t_r5, i2t_r10, t2i_r1, t2i_r5, t2i_r10`` (percent), ``medr_i2t``, ``medr_t2i``,
        ``num_images``, ``num_captions`` and, with labels, ``zero_shot_acc`` in [0, 1].
    """
    device = resolve_device(device)
    image_features, text_features, ids, labels = _encode(
        model, test_set, device, batch_size, progress, amp, 0
    )
    metrics: dict[str, float] = dict(retrieval_metrics(image_features, text_features, ids))
    metrics["num_images"], metrics["num_captions"] = int(image_features.shape[0]), int(text_features.shape[0])
    classes = list(classnames) if classnames is not None else list(getattr(test_set, "classes", None) or [])
    if labels is not None and classes:
        bare = cast("ClipModel", unwrap(model))  # unwrap strips DDP/compile off the ClipModel
        with autocast(device, enabled=amp):
            prompts = templates or getattr(test_set, "templates", None) or _default_templates()
            classifier = bare.zero_shot_classifier(classes, prompts, device=device).float()
        metrics["zero_shot_acc"] = zero_shot_accuracy(image_features, classifier, torch.as_tensor(labels))
    return metrics
