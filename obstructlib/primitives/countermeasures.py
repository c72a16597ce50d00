"""What a hacker tries against protected training data: compression, colour removal, augmentation, AT.

Generic building blocks reused by every data-side paper (UC, MEM):

- per-image transforms on float images in [0, 1]: :func:`jpeg` (a real PIL encode/decode round
  trip, as in ISS), :func:`grayscale`, :func:`cutout`;
- a batch transform, :func:`mixup_batch`, with its loss :func:`mixup_loss`;
- PGD adversarial training (Madry et al.): :func:`pgd_attack` and :class:`AdvTrainConfig`;
- :func:`fit_defended`, the classifier recipe of :func:`~obstructlib.engine.fit_classifier`
  (same optimiser, schedule and checkpoints) with a per-batch countermeasure (mixup or PGD AT),
  which ``fit_classifier``'s fixed cross-entropy step cannot express.

References:
    Liu et al., Image Shortcut Squeezing (ISS: JPEG, grayscale), arXiv:2302.03335.
    DeVries & Taylor, Cutout, arXiv:1708.04552. Zhang et al., mixup, arXiv:1710.09412.
    Madry et al., PGD adversarial training, arXiv:1706.06083.

Example:
    >>> x = torch.rand(2, 3, 16, 16)
    >>> jpeg(x, quality=10).shape, grayscale(x).shape
    (torch.Size([2, 3, 16, 16]), torch.Size([2, 3, 16, 16]))
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from obstructlib.data import SizedDataset
from obstructlib.engine import ClassifierTrainConfig, fit_classifier
from obstructlib.errors import ConfigError, check_range
from obstructlib.primitives.perturb import pgd
from obstructlib.registry import Registry

_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, PIL's "L" conversion


def _batched(x: torch.Tensor) -> tuple[torch.Tensor, bool]:
    if x.dim() == 3:
        return x[None], True
    if x.dim() != 4:
        raise ConfigError(f"expected an image (C, H, W) or a batch (B, C, H, W), got shape {tuple(x.shape)}")
    return x, False


def jpeg(x: torch.Tensor, quality: int = 10) -> torch.Tensor:
    """JPEG-compress images through PIL and decode them again (not differentiable).

    Args:
        x: float images in [0, 1], ``(C, H, W)`` or ``(B, C, H, W)``, C in {1, 3}.
        quality: PIL JPEG quality in [1, 100] (ISS uses 10; 100 is nearly lossless).

    Shape:
        Output has the input's shape, dtype and device, values multiples of 1/255 in [0, 1].

    PIL's default chroma subsampling (4:2:0) is kept, as in ISS's code, so even quality 100
    blurs colour noise; smooth images come back almost unchanged.

    Example:
        >>> x = torch.full((3, 8, 8), 0.5)
        >>> float((jpeg(x, 100) - x).abs().max()) <= 1 / 255
        True
    """
    if not 1 <= int(quality) <= 100:
        raise ConfigError(f"jpeg quality={quality} is outside [1, 100]: pick a value in that range")
    xb, single = _batched(x)
    if xb.shape[1] not in (1, 3):
        raise ConfigError(f"jpeg needs 1 or 3 channels, got {xb.shape[1]}")
    u8 = (xb.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    out = np.empty_like(u8)
    for i, img in enumerate(u8):
        buf = io.BytesIO()
        Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(buf, format="JPEG", quality=int(quality))
        buf.seek(0)
        dec = np.asarray(Image.open(buf).convert("L" if img.shape[-1] == 1 else "RGB"))
        out[i] = dec[..., None] if dec.ndim == 2 else dec
    y = torch.from_numpy(out).permute(0, 3, 1, 2).to(device=x.device, dtype=x.dtype) / 255.0
    return y[0] if single else y


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """Replace colour by luma (BT.601 weights), keeping the channel count.

    Args:
        x: float images in [0, 1], ``(C, H, W)`` or ``(B, C, H, W)``; 1-channel images pass through.

    Shape:
        Same as the input; the three channels of an RGB output are equal.
    """
    xb, single = _batched(x)
    if xb.shape[1] == 3:
        w = torch.tensor(_LUMA, dtype=xb.dtype, device=xb.device).view(1, 3, 1, 1)
        xb = (xb * w).sum(1, keepdim=True).expand(-1, 3, -1, -1).contiguous()
    return xb[0] if single else xb


def cutout_mask(
    height: int, width: int, size: int, num: int = 1, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Boolean masks ``(num, H, W)``, True on one ``size x size`` square per image.

    As in DeVries & Taylor's code the square's centre is uniform over the image and the square is
    clipped at the borders, so near an edge fewer than ``size**2`` pixels are cut.
    """
    cy = torch.randint(0, height, (num,), generator=generator)
    cx = torch.randint(0, width, (num,), generator=generator)
    ys, xs = torch.arange(height).view(1, -1, 1), torch.arange(width).view(1, 1, -1)
    top, left = (cy - size // 2).view(-1, 1, 1), (cx - size // 2).view(-1, 1, 1)
    return (ys >= top) & (ys < top + size) & (xs >= left) & (xs < left + size)


def cutout(x: torch.Tensor, size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero one random ``size x size`` square (clipped at the borders) of every image.

    Args:
        x: float images in [0, 1], ``(C, H, W)`` or ``(B, C, H, W)``.
        size: side of the square in pixels (>= 1).
        generator: torch generator for the square's position (None: the global RNG).

    Shape:
        Same as the input.
    """
    if size < 1:
        raise ConfigError(f"cutout size={size} must be at least 1 pixel")
    xb, single = _batched(x)
    mask = cutout_mask(xb.shape[2], xb.shape[3], size, xb.shape[0], generator).to(xb.device)
    out = xb.masked_fill(mask[:, None], 0.0)
    return out[0] if single else out


def mixup_batch(
    x: torch.Tensor, y: torch.Tensor, alpha: float = 1.0, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Mix each image with another of the batch: ``lam * x + (1 - lam) * x[perm]``.

    Args:
        x: float images ``(B, C, H, W)`` in [0, 1].
        y: int labels ``(B,)``.
        alpha: Beta(alpha, alpha) parameter of the mixing weight (> 0).
        generator: torch generator for the permutation and the weight (None: the global RNG).

    Returns:
        ``(mixed images, y_a = y, y_b = y[perm], lam)``; train with :func:`mixup_loss`.
    """
    if alpha <= 0:
        raise ConfigError(f"mixup alpha={alpha} must be positive")
    perm = torch.randperm(x.shape[0], generator=generator).to(x.device)
    # Beta draws via numpy, seeded from the torch generator, so one generator drives both draws.
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    lam = float(np.random.default_rng(seed).beta(alpha, alpha))
    return lam * x + (1.0 - lam) * x[perm], y, y[perm], lam


def mixup_loss(logits: torch.Tensor, y_a: torch.Tensor, y_b: torch.Tensor, lam: float) -> torch.Tensor:
    """``lam * CE(logits, y_a) + (1 - lam) * CE(logits, y_b)``, mean over the batch."""
    return lam * F.cross_entropy(logits, y_a) + (1.0 - lam) * F.cross_entropy(logits, y_b)


@dataclass
class AdvTrainConfig:
    """PGD adversarial training (L-inf, Madry et al.).

    Attributes:
        eps: L-inf budget in [0, 1] pixel units (8/255 is the standard CIFAR budget).
        alpha: step size per PGD step.
        steps: PGD steps per batch (few: this is the hacker's cheap defence).
        random_start: start from a uniform point in the eps-ball.
    """

    eps: float = 8 / 255
    alpha: float = 2 / 255
    steps: int = 3
    random_start: bool = True

    def validate(self) -> None:
        check_range("adv.eps", self.eps, 0.0, 1.0)
        check_range("adv.alpha", self.alpha, 0.0, 1.0)
        if self.steps < 1:
            raise ConfigError(f"adv.steps={self.steps}: use at least one PGD step")


def pgd_attack(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: AdvTrainConfig,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Untargeted L-inf PGD maximising cross-entropy (:func:`~obstructlib.primitives.perturb.pgd`).

    The model's mode is left as it is and its weights get no gradient.

    Shape:
        ``x`` float ``(B, C, H, W)`` in [0, 1] -> adversarial images of the same shape, within
        ``eps`` of ``x`` and inside [0, 1].
    """
    delta = pgd(
        lambda z: F.cross_entropy(model(z).float(), y), x, eps=cfg.eps, step_size=cfg.alpha, steps=cfg.steps,
        minimize=False, random_start=cfg.random_start, generator=generator, frozen_module=model,
    )
    return (x.detach() + delta).clamp_(0, 1)


# ---- the registry: name -> factory(**params) of the per-image transform (None: nothing per image) ----
REGISTRY: Registry = Registry("countermeasure")


@REGISTRY.register("none")
def _none(**_: Any) -> None:
    """No countermeasure: the hacker trains on the published data as it is."""
    return None


@REGISTRY.register("jpeg")
def _jpeg(*, jpeg_quality: int = 10, **_: Any) -> Callable:
    """JPEG compression at ``jpeg_quality`` (ISS, arXiv 2302.03335: quality 10)."""
    return lambda x: jpeg(x, jpeg_quality)


@REGISTRY.register("grayscale")
def _grayscale(**_: Any) -> Callable:
    """Grayscale conversion, repeated to 3 channels (ISS, arXiv 2302.03335)."""
    return grayscale


@REGISTRY.register("cutout")
def _cutout(*, cutout_size: int = 8, **_: Any) -> Callable:
    """Cutout of a ``cutout_size`` square at a random place (arXiv 1708.04552)."""
    return lambda x: cutout(x, cutout_size)


@REGISTRY.register("crop")
def _crop(*, image_size: int = 32, crop_scale: float = 0.5, **_: Any) -> Callable:
    """Random resized crops of area share in (crop_scale, 1), resized back to ``image_size``."""
    from torchvision.transforms import RandomResizedCrop

    return RandomResizedCrop(image_size, scale=(crop_scale, 1.0), antialias=True)


@REGISTRY.register("mixup")
def _mixup(**_: Any) -> None:
    """mixup of every training batch (arXiv 1710.09412), in :func:`fit_defended`'s step."""
    return None


@REGISTRY.register("adv")
def _adv(**_: Any) -> None:
    """PGD adversarial training (arXiv 1706.06083), in :func:`fit_defended`'s step."""
    return None


@REGISTRY.register("strip")
def _strip(**_: Any) -> None:
    """Drop the first k caption tokens after the start token (a text trigger's countermeasure)."""
    return None


COUNTERMEASURES = ("none", "jpeg", "grayscale", "cutout", "mixup", "adv")  # the classifier hacker's
IMAGE_COUNTERMEASURES = ("jpeg", "grayscale", "cutout", "crop")  # per image, in the dataset
BATCH_COUNTERMEASURES = ("mixup", "adv")  # per batch, in the training step
TEXT_COUNTERMEASURES = ("strip",)  # per caption, in the pairs


def image_countermeasure(name: str, **params: Any) -> Callable | None:
    """The per-image transform of countermeasure ``name`` (None for ``none``, batch and text ones).

    Args:
        name: a registered countermeasure (:data:`REGISTRY`).
        **params: its settings (``jpeg_quality``, ``cutout_size``, ``image_size``, ``crop_scale``);
            the ones it does not use are ignored.

    Example:
        >>> image_countermeasure("jpeg", jpeg_quality=50)(torch.rand(3, 8, 8)).shape
        torch.Size([3, 8, 8])
    """
    return REGISTRY.get(name)(**params)


def fit_defended(
    model: nn.Module,
    train_set: SizedDataset,
    test_set: SizedDataset | None,
    cfg: ClassifierTrainConfig,
    device: torch.device | str | None,
    *,
    countermeasure: str,
    mixup_alpha: float = 1.0,
    adv: AdvTrainConfig | None = None,
    ckpt_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict[str, list[float]]:
    """:func:`~obstructlib.engine.fit_classifier` with mixup or PGD adversarial training in every step.

    The same loop (DDP, checkpoints, resume, history) with a per-batch hook: the data order and
    the countermeasure's random draws are functions of ``(cfg.seed, epoch)``, so a resumed run
    repeats the uninterrupted one.

    Args:
        model: classifier on images in [0, 1]; moved to ``device``.
        train_set: ``(image, label)`` items.
        test_set: evaluated (clean) after every epoch, or None.
        cfg: the training recipe (optimizer, lr, schedule, epochs, batch size, seed).
        device: where to train.
        countermeasure: ``"mixup"`` or ``"adv"``.
        mixup_alpha: Beta parameter for mixup.
        adv: PGD settings for ``"adv"`` (default :class:`AdvTrainConfig`).
        ckpt_dir: checkpoint directory (None: no checkpoints).
        progress: show progress bars.

    Returns:
        :func:`~obstructlib.engine.fit_classifier`'s history (``train_acc`` is measured on the
        mixed or attacked images, against the batch's own labels).
    """
    if countermeasure not in BATCH_COUNTERMEASURES:
        raise ConfigError(f"fit_defended handles {', '.join(BATCH_COUNTERMEASURES)}, not {countermeasure!r}")
    adv = adv or AdvTrainConfig()
    adv.validate()
    bare = model

    def hook_for(epoch: int) -> Callable:
        gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)

        def hook(images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, Callable | None]:
            if countermeasure == "adv":
                bare.eval()  # attack with frozen BatchNorm statistics, as common AT code does
                return pgd_attack(bare, images, labels, adv, gen), None
            mixed, y_a, y_b, lam = mixup_batch(images, labels, mixup_alpha, gen)
            return mixed, lambda logits, _labels: mixup_loss(logits, y_a, y_b, lam)

        return hook

    return fit_classifier(model, train_set, test_set, cfg, device, ckpt_dir=ckpt_dir, progress=progress,
                          batch_hook=hook_for)


__all__ = [
    "BATCH_COUNTERMEASURES",
    "COUNTERMEASURES",
    "IMAGE_COUNTERMEASURES",
    "REGISTRY",
    "TEXT_COUNTERMEASURES",
    "AdvTrainConfig",
    "cutout",
    "cutout_mask",
    "fit_defended",
    "grayscale",
    "image_countermeasure",
    "jpeg",
    "mixup_batch",
    "mixup_loss",
    "pgd_attack",
]
