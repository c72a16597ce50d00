"""Training-time image augmentations shared by the papers' attackers and pre-training.

- :func:`pad_crop_flip`: the CIFAR recipe (pad 1/8 of the side, random crop, flip) the hackers of
  UC and the classifier baselines train with;
- :func:`simclr_augment`: SimCLR's random resized crop, flip, colour jitter and grey, batched.

References:
    He et al., Deep Residual Learning, arXiv:1512.03385 (the CIFAR augmentation).
    Chen et al., SimCLR, arXiv:2002.05709.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["pad_crop_flip", "resized_crop_flip", "simclr_augment"]


def pad_crop_flip(x: torch.Tensor) -> torch.Tensor:
    """The CIFAR recipe (zero-pad 4 of 32, random crop, horizontal flip), scaled to any side.

    Draws from the global torch RNG (a DataLoader worker's seed in training).

    Shape:
        ``(C, H, W)`` in [0, 1] -> the same shape; the padding is zeros.
    """
    pad = max(1, x.shape[-1] // 8)
    c, h, w = x.shape
    i, j = (int(v) for v in torch.randint(0, 2 * pad + 1, (2,)))
    out = x.new_zeros(c, h, w)
    # rows/cols of x that land inside the crop window [i - pad, i - pad + h)
    top, left = i - pad, j - pad
    ys, yd = max(0, top), max(0, -top)
    xs, xd = max(0, left), max(0, -left)
    hh, ww = h - abs(top), w - abs(left)
    out[:, yd:yd + hh, xd:xd + ww] = x[:, ys:ys + hh, xs:xs + ww]
    return out.flip(-1) if bool(torch.rand(()) < 0.5) else out



def _crop_flip(x: torch.Tensor, u: torch.Tensor, min_crop: float) -> torch.Tensor:
    """Per-image crop box of area share ``min_crop + (1 - min_crop) * u[:, 0]`` (square aspect), placed by
    ``u[:, 1:3]``, resized back to (H, W), flipped where ``u[:, 3] < 0.5``."""
    b, _, h, w = x.shape
    out = torch.empty_like(x)
    for i in range(b):
        area = min_crop + (1 - min_crop) * float(u[i, 0])
        ch, cw = max(2, round(h * math.sqrt(area))), max(2, round(w * math.sqrt(area)))
        top, left = int(u[i, 1] * (h - ch + 1)), int(u[i, 2] * (w - cw + 1))
        crop = x[i:i + 1, :, top:top + ch, left:left + cw]
        out[i] = F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False)[0]
    flip = (u[:, 3] < 0.5).to(x.device)
    return torch.where(flip[:, None, None, None], out.flip(-1), out)


def resized_crop_flip(x: torch.Tensor, generator: torch.Generator, min_scale: float = 0.08) -> torch.Tensor:
    """Random resized crop (area share in [min_scale, 1], square aspect) and horizontal flip, batched.

    The few-shot learners' training view (CLIP's RandomResizedCrop scale 0.08-1 and flip; the
    episodic learners use 0.5-1).

    Args:
        x: images ``(B, C, H, W)`` in [0, 1].
        generator: CPU generator for every random draw.
        min_scale: smallest crop area share, in (0, 1].

    Shape:
        ``(B, C, H, W)`` -> the same, in [0, 1].
    """
    return _crop_flip(x, torch.rand(x.shape[0], 4, generator=generator), min_scale)


def simclr_augment(x: torch.Tensor, generator: torch.Generator, min_crop: float = 0.3) -> torch.Tensor:
    """SimCLR's view: random resized crop, horizontal flip, colour jitter and random greyscale.

    Args:
        x: images ``(B, C, H, W)`` in [0, 1].
        generator: CPU generator for every random draw (reproducible views).
        min_crop: smallest crop area share.

    Returns:
        Augmented images, same shape, in [0, 1].
    """
    b = x.shape[0]
    u = torch.rand(b, 8, generator=generator)
    out = _crop_flip(x, u, min_crop)
    shape = (b, 1, 1, 1)
    bright = (0.6 + 0.8 * u[:, 4]).view(shape).to(x.device)
    contrast = (0.6 + 0.8 * u[:, 5]).view(shape).to(x.device)
    sat = (0.6 + 0.8 * u[:, 6]).view(shape).to(x.device)
    out = out * bright
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    out = (out - mean) * contrast + mean
    grey = out.mean(dim=1, keepdim=True)
    out = grey + (out - grey) * sat
    to_grey = (u[:, 7] < 0.2).view(shape).to(x.device)
    out = torch.where(to_grey, out.mean(dim=1, keepdim=True).expand_as(out), out)
    return out.clamp(0.0, 1.0)
