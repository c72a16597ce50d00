"""Small classifiers: a digits CNN, the few-shot ResNet-12 and a small ViT for 32 px images.

- ``digits_cnn``: three conv-BN-ReLU layers (16-32-64) and a 2x2 adaptive average pool, about 25k
  parameters; any input from 8x8 (scikit-learn digits) to 32x32 (SVHN, MNIST-M).
- ``resnet12``: the few-shot learning ResNet-12 (4 residual blocks of three 3x3 convs, leaky ReLU
  0.1, a 2x2 max-pool per block; widths 64-160-320-640), as in MetaOptNet / easyfsl.
- ``small_vit``: a ViT for 32 px (patch 4, depth 6, width 192, 3 heads), the transformer target in
  UC's list of hacker models; positional embeddings are interpolated for other input sizes.

References:
    Lee et al., Meta-Learning with Differentiable Convex Optimization (MetaOptNet), arXiv:1904.03758.
    Dosovitskiy et al., An Image is Worth 16x16 Words, arXiv:2010.11929.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from obstructlib.models.cifar_resnet import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    _classifier,
    _init_convs_fan_out,
)
from obstructlib.models.registry import ImageClassifier, register_model

DIGITS_MEAN = (0.5, 0.5, 0.5)
DIGITS_STD = (0.5, 0.5, 0.5)


class DigitsCNNEncoder(nn.Module):
    """conv-BN-ReLU x3 (max-pool after the first two) then adaptive average pooling.

    Args:
        in_chans: input channels.
        widths: channels of the three conv layers.
        pool_size: side of the final adaptive pool; features are ``widths[-1] * pool_size**2``.

    Shape:
        ``(B, in_chans, H, W)`` with H, W >= 4 -> ``(B, widths[-1] * pool_size**2)``.
    """

    def __init__(self, in_chans: int = 3, widths: Sequence[int] = (16, 32, 64), pool_size: int = 2) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_chans
        for i, w in enumerate(widths):
            layers += [nn.Conv2d(c, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            if i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
            c = w
        self.body = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(pool_size)
        self.num_features = c * pool_size * pool_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.body(x)).flatten(1)


@register_model("digits_cnn")
def digits_cnn(
    num_classes: int = 10,
    *,
    in_chans: int = 3,
    widths: Sequence[int] = (16, 32, 64),
    pool_size: int = 2,
    mean=None,
    std=None,
) -> ImageClassifier:
    """A ~25k-parameter CNN for digits (8x8 to 32x32, grey or RGB; grey inputs are repeated).

    Args:
        num_classes: head outputs.
        in_chans: 3 (default: accepts grey and RGB) or 1 (grey only).
        widths: conv channels.
        pool_size: final adaptive pool side (features ``widths[-1] * pool_size**2``, 256 by default).
        mean: normalisation mean (default 0.5).
        std: normalisation std (default 0.5).
    """
    enc = DigitsCNNEncoder(in_chans, widths, pool_size)
    return _classifier(enc, num_classes, in_chans, mean, std, (DIGITS_MEAN, DIGITS_STD))


class ResBlock12(nn.Module):
    """Three 3x3 conv-BN layers (leaky ReLU 0.1 between), a 1x1 conv-BN shortcut, then a 2x2 max-pool."""

    def __init__(self, in_planes: int, planes: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, bias=False), nn.BatchNorm2d(planes))
        self.pool = nn.MaxPool2d(2, ceil_mode=True)  # ceil: a 1x1 map stays 1x1 for tiny inputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.leaky_relu(self.bn1(self.conv1(x)), 0.1)
        out = F.leaky_relu(self.bn2(self.conv2(out)), 0.1)
        out = self.bn3(self.conv3(out))
        return self.pool(F.leaky_relu(out + self.shortcut(x), 0.1))


class ResNet12Encoder(nn.Module):
    """Four :class:`ResBlock12` stages and global average pooling.

    Args:
        in_chans: input channels.
        widths: channels of the four blocks (64, 160, 320, 640 in MetaOptNet).

    Shape:
        ``(B, in_chans, H, W)`` -> ``(B, widths[-1])``.
    """

    def __init__(self, in_chans: int = 3, widths: Sequence[int] = (64, 160, 320, 640)) -> None:
        super().__init__()
        blocks, c = [], in_chans
        for w in widths:
            blocks.append(ResBlock12(c, w))
            c = w
        self.layers = nn.Sequential(*blocks)
        self.num_features = c
        _init_convs_fan_out(self, "leaky_relu", a=0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(self.layers(x), 1).flatten(1)


@register_model("resnet12")
def resnet12(
    num_classes: int = 64,
    *,
    in_chans: int = 3,
    widths: Sequence[int] = (64, 160, 320, 640),
    mean=None,
    std=None,
) -> ImageClassifier:
    """The few-shot ResNet-12 (640-d features); pass ``widths=(8, 16, 32, 64)`` for a CPU-sized one.

    Args:
        num_classes: head outputs (64 base classes of mini-ImageNet / CIFAR-FS by default).
        in_chans: 1 or 3.
        widths: channels of the four residual blocks.
        mean: normalisation mean (default ImageNet's).
        std: normalisation std.
    """
    return _classifier(
        ResNet12Encoder(in_chans, widths), num_classes, in_chans, mean, std, (IMAGENET_MEAN, IMAGENET_STD)
    )


class ViTEncoder(nn.Module):
    """Patch embedding, class token, learnable positions, pre-norm transformer, final LayerNorm.

    Args:
        in_chans: input channels.
        image_size: side the position embeddings are made for; other sizes are interpolated.
        patch_size: side of the square patches (pixels).
        width: token dimension.
        depth: transformer layers.
        heads: attention heads (``width % heads == 0``).
        mlp_ratio: MLP hidden size over ``width``.
        dropout: dropout in the transformer layers.

    Shape:
        ``(B, in_chans, H, W)`` with H, W multiples of ``patch_size`` -> ``(B, width)`` (class token).
    """

    def __init__(
        self,
        in_chans: int = 3,
        image_size: int = 32,
        patch_size: int = 4,
        width: int = 192,
        depth: int = 6,
        heads: int = 3,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
        self.patch_size = patch_size
        self.grid = image_size // patch_size
        self.patch_embed = nn.Conv2d(in_chans, width, patch_size, patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid**2, width))
        layer = nn.TransformerEncoderLayer(
            width,
            heads,
            int(width * mlp_ratio),
            dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.num_features = width
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def _pos_embed(self, gh: int, gw: int) -> torch.Tensor:
        if (gh, gw) == (self.grid, self.grid):
            return self.pos_embed
        cls_pos, grid_pos = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        grid_pos = grid_pos.reshape(1, self.grid, self.grid, -1).permute(0, 3, 1, 2)
        grid_pos = F.interpolate(grid_pos, size=(gh, gw), mode="bicubic", align_corners=False)
        return torch.cat([cls_pos, grid_pos.flatten(2).transpose(1, 2)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)  # (B, width, gh, gw)
        gh, gw = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self._pos_embed(gh, gw)
        return self.norm(self.blocks(x))[:, 0]


@register_model("small_vit")
def small_vit(
    num_classes: int = 10,
    *,
    in_chans: int = 3,
    image_size: int = 32,
    patch_size: int = 4,
    width: int = 192,
    depth: int = 6,
    heads: int = 3,
    mlp_ratio: float = 4.0,
    dropout: float = 0.0,
    mean=None,
    std=None,
) -> ImageClassifier:
    """A small ViT for 32 px images (about 2.7M parameters); ``width=32, depth=1, heads=2`` for tests.

    Args:
        num_classes: head outputs.
        in_chans: 1 or 3.
        image_size: training resolution (pixels).
        patch_size: patch side (pixels).
        width: token dimension (features D).
        depth: transformer layers.
        heads: attention heads.
        mlp_ratio: MLP expansion.
        dropout: transformer dropout.
        mean: normalisation mean (default CIFAR-10's).
        std: normalisation std.
    """
    enc = ViTEncoder(in_chans, image_size, patch_size, width, depth, heads, mlp_ratio, dropout)
    return _classifier(enc, num_classes, in_chans, mean, std, (CIFAR10_MEAN, CIFAR10_STD))
