"""CIFAR-sized convolutional classifiers: ResNet-20/32/44/56/110, ResNet-18 and VGG-11/16 with BN.

- ``resnet20`` ... ``resnet110``: He et al.'s CIFAR ResNets (3 stages of 16/32/64 channels,
  option-A shortcuts), in the state-dict layout of ``akamaster/pytorch_resnet_cifar10`` so its
  released checkpoints load with :func:`load_cifar_resnet`.
- ``resnet18``: the 4-stage BasicBlock ResNet-18 (512-d features) in kuangliu's
  ``pytorch-cifar`` layout; ``stem="cifar"`` (3x3 conv, no max-pool; default) or
  ``stem="imagenet"`` (torchvision's 7x7/2 conv + max-pool, as in the UC and NTP code).
- ``vgg11`` / ``vgg16``: VGG with BatchNorm, conv features then global average pooling (512-d).

References:
    He et al., Deep Residual Learning for Image Recognition, arXiv:1512.03385 (section 4.2).
    Simonyan & Zisserman, Very Deep Convolutional Networks, arXiv:1409.1556.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from obstructlib.models.registry import ImageClassifier, load_weights, register_model

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
# akamaster's trainer.py normalises with the ImageNet statistics, not CIFAR-10's. On the 10,000
# CIFAR-10 JPEG test images the released ResNet-20 scores 81.0% (NLL 0.879) with these and
# 80.7% (NLL 0.919) with the CIFAR-10 ones, so the ResNet-20..110 builders default to ImageNet's.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _stats(in_chans: int, mean: Sequence[float] | None, std: Sequence[float] | None, default: tuple) -> tuple:
    """Per-channel mean/std: the given ones, else ``default`` (averaged over channels for grey models)."""
    d_mean, d_std = default
    if in_chans == 1:
        d_mean, d_std = (sum(d_mean) / 3,), (sum(d_std) / 3,)
    return tuple(mean or d_mean), tuple(std or d_std)


def _classifier(
    encoder: nn.Module,
    num_classes: int,
    in_chans: int,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    default: tuple,
) -> ImageClassifier:
    """``encoder`` plus a linear head, normalising with ``mean``/``std`` (``default`` statistics when None)."""
    mean, std = _stats(in_chans, mean, std, default)
    num_features = encoder.num_features
    if not isinstance(num_features, int):
        raise ValueError(f"{type(encoder).__name__}.num_features must be the int width of its features")
    return ImageClassifier(encoder, num_features, num_classes, mean=mean, std=std, in_chans=in_chans)


def _init_convs_fan_out(
    module: nn.Module, nonlinearity: Literal["relu", "leaky_relu"] = "relu", a: float = 0.0
) -> None:
    # torchvision / kuangliu init: kaiming-normal (fan_out) conv weights, zero conv biases.
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, a=a, mode="fan_out", nonlinearity=nonlinearity)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _stage(block: type[nn.Module], in_planes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    """``blocks`` residual blocks; the first one changes the width and applies ``stride``."""
    return nn.Sequential(
        *(block(in_planes if i == 0 else planes, planes, stride if i == 0 else 1) for i in range(blocks))
    )


def _kaiming_init(module: nn.Module) -> None:
    # akamaster's _weights_init: kaiming-normal on every conv and linear weight (biases stay default).
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight)


class _ShortcutA(nn.Module):
    """Option-A shortcut: stride-2 subsampling and zero channels on both sides (no parameters)."""

    def __init__(self, pad: int) -> None:
        super().__init__()
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class BasicBlockA(nn.Module):
    """Two 3x3 conv-BN layers with an option-A (identity / zero-padding) shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = self._projection(in_planes, planes, stride)

    @staticmethod
    def _projection(in_planes: int, planes: int, stride: int) -> nn.Module:
        return _ShortcutA((planes - in_planes) // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNetEncoder(nn.Module):
    """He et al.'s CIFAR ResNet trunk (6n+2 layers), ending in global average pooling.

    Args:
        depth: 20, 32, 44, 56 or 110 (``(depth - 2) / 6`` blocks per stage).
        in_chans: input channels.

    Shape:
        ``(B, in_chans, H, W)`` (normalised) -> ``(B, 64)``.
    """

    head_prefixes = ("linear.",)

    def __init__(self, depth: int = 20, in_chans: int = 3) -> None:
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_chans, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = _stage(BasicBlockA, 16, 16, n, 1)
        self.layer2 = _stage(BasicBlockA, 16, 32, n, 2)
        self.layer3 = _stage(BasicBlockA, 32, 64, n, 2)
        self.num_features = 64

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        # akamaster's ``F.avg_pool2d(out, out.size()[3])``: a kernel over the whole map. It sums in
        # another order than ``adaptive_avg_pool2d`` (logits differ by ~1e-6 otherwise); the (H, W)
        # kernel is the same on square maps and still pools everything on non-square ones.
        return F.avg_pool2d(x, tuple(x.shape[-2:])).flatten(1)


def cifar_resnet(
    depth: int, num_classes: int = 10, *, in_chans: int = 3, mean=None, std=None
) -> ImageClassifier:
    """He et al.'s CIFAR ResNet-``depth`` (64-d features), kaiming-initialised like akamaster's.

    Args:
        depth: 6n+2 (20, 32, 44, 56, 110).
        num_classes: head outputs.
        in_chans: 1 or 3.
        mean: normalisation mean; default ImageNet statistics, which the akamaster checkpoints use.
        std: normalisation std.
    """
    model = _classifier(
        CifarResNetEncoder(depth, in_chans), num_classes, in_chans, mean, std, (IMAGENET_MEAN, IMAGENET_STD)
    )
    _kaiming_init(model)
    return model


def _register_depth(depth: int) -> None:
    def build(num_classes: int = 10, **kwargs) -> ImageClassifier:
        return cifar_resnet(depth, num_classes, **kwargs)

    build.__name__ = f"resnet{depth}"
    build.__doc__ = f"CIFAR ResNet-{depth} (akamaster layout); kwargs: ``in_chans``, ``mean``, ``std``."
    register_model(build.__name__)(build)


for _depth in (20, 32, 44, 56, 110):
    _register_depth(_depth)


def load_cifar_resnet(
    path: str | Path,
    arch: str = "resnet20",
    num_classes: int = 10,
    *,
    device: torch.device | str | None = None,
) -> ImageClassifier:
    """Load an akamaster ``pytorch_resnet_cifar10`` checkpoint.

    The file is ``{'state_dict': {'module.conv1.weight': ...}, 'best_prec1': ...}`` (CUDA tensors,
    no ``num_batches_tracked``); ``linear.*`` becomes ``head.*``, the rest ``encoder.*``.

    Args:
        path: the ``.th`` file (e.g. ``resnet20-12fca82f.th``).
        arch: ``resnet20`` ... ``resnet110``, matching the checkpoint.
        num_classes: 10 for the released CIFAR-10 weights.
        device: where to put the model.

    Returns:
        The classifier in eval mode.

    Example:
        >>> model = load_cifar_resnet("resnet20-12fca82f.th", "resnet20")  # doctest: +SKIP
    """
    from obstructlib.models.registry import create_model

    model = create_model(arch, num_classes)
    load_weights(model, path)
    if device is not None:
        model = model.to(device)
    return model.eval()


# ---------------------------------------------------------------------------------------------
# ResNet-18 (kuangliu/pytorch-cifar layout: conv1, bn1, layer1..4, shortcut.0/.1, linear)


class BasicBlockB(BasicBlockA):
    """Two 3x3 conv-BN layers with a 1x1 conv-BN projection shortcut when the shape changes."""

    @staticmethod
    def _projection(in_planes: int, planes: int, stride: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))


class ResNet18Encoder(nn.Module):
    """ResNet-18 trunk (BasicBlocks [2, 2, 2, 2], widths 64-512) with global average pooling.

    Args:
        in_chans: input channels.
        stem: ``"cifar"`` (3x3/1 conv, no max-pool: 4x4 final map at 32 px) or ``"imagenet"``
            (7x7/2 conv + 3x3/2 max-pool, torchvision's: 1x1 final map at 32 px).
        width: channels of the first stage (64 in the paper); smaller values give tiny CPU models.

    Shape:
        ``(B, in_chans, H, W)`` -> ``(B, 8 * width)``.
    """

    head_prefixes = ("linear.", "fc.")

    def __init__(self, in_chans: int = 3, stem: str = "cifar", width: int = 64) -> None:
        super().__init__()
        if stem == "cifar":
            self.conv1 = nn.Conv2d(in_chans, width, 3, 1, 1, bias=False)
            self.maxpool: nn.Module = nn.Identity()
        elif stem == "imagenet":
            self.conv1 = nn.Conv2d(in_chans, width, 7, 2, 3, bias=False)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
        else:
            raise ValueError(f"stem must be 'cifar' or 'imagenet', got {stem!r}")
        self.bn1 = nn.BatchNorm2d(width)
        self.layer1 = _stage(BasicBlockB, width, width, 2, 1)
        self.layer2 = _stage(BasicBlockB, width, 2 * width, 2, 2)
        self.layer3 = _stage(BasicBlockB, 2 * width, 4 * width, 2, 2)
        self.layer4 = _stage(BasicBlockB, 4 * width, 8 * width, 2, 2)
        self.num_features = 8 * width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return F.adaptive_avg_pool2d(x, 1).flatten(1)


@register_model("resnet18")
def resnet18(
    num_classes: int = 10, *, in_chans: int = 3, stem: str = "cifar", width: int = 64, mean=None, std=None
) -> ImageClassifier:
    """ResNet-18 for small images (512-d features at ``width=64``).

    Args:
        num_classes: head outputs.
        in_chans: 1 or 3.
        stem: ``"cifar"`` (default) or ``"imagenet"`` (torchvision's stem, as in UC / NTP code).
        width: first-stage channels (64; use 8-16 for CPU tests).
        mean: normalisation mean (default CIFAR-10's).
        std: normalisation std.
    """
    enc = ResNet18Encoder(in_chans, stem, width)
    model = _classifier(enc, num_classes, in_chans, mean, std, (CIFAR10_MEAN, CIFAR10_STD))
    _init_convs_fan_out(model)
    return model


# ---------------------------------------------------------------------------------------------
# VGG with BatchNorm (kuangliu layout: features.N, classifier -> head)

VGG_CFGS: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
}


class VGGEncoder(nn.Module):
    """VGG conv features with BN and ReLU; five 2x2 max-pools (skipped once the map is 1x1), then GAP.

    Args:
        cfg: list of conv widths and ``"M"`` (max-pool).
        in_chans: input channels.
        width_mult: scales every conv width (1.0 in the paper; 0.125 for CPU tests).

    Shape:
        ``(B, in_chans, H, W)`` -> ``(B, last width)`` (512 at ``width_mult=1``).
    """

    head_prefixes = ("classifier.", "linear.")

    def __init__(self, cfg: Sequence[int | str], in_chans: int = 3, width_mult: float = 1.0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_chans
        for v in cfg:
            if v == "M":
                # ceil_mode: small inputs (8-16 px) shrink to 1x1 and stay there instead of reaching 0x0
                layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))
            else:
                w = max(1, round(int(v) * width_mult))
                layers += [nn.Conv2d(c, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
                c = w
        self.features = nn.Sequential(*layers)
        self.num_features = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(self.features(x), 1).flatten(1)


def vgg(
    cfg_name: str, num_classes: int = 10, *, in_chans: int = 3, width_mult: float = 1.0, mean=None, std=None
) -> ImageClassifier:
    """VGG-11 / VGG-16 with BatchNorm for 32 px images (512-d features)."""
    enc = VGGEncoder(VGG_CFGS[cfg_name], in_chans, width_mult)
    model = _classifier(enc, num_classes, in_chans, mean, std, (CIFAR10_MEAN, CIFAR10_STD))
    _init_convs_fan_out(model)
    return model


@register_model("vgg11")
def vgg11(num_classes: int = 10, **kwargs) -> ImageClassifier:
    """VGG-11 with BN (the NTP / NTL / CUTI backbone).

    Kwargs: ``in_chans``, ``width_mult`` (0.125 for CPU tests), ``mean``, ``std``.

    Note: trained from scratch by SGD at lr 0.1 (momentum 0.9, batch 128, cosine, no warmup) it
    did not take off on CIFAR-10 subsets in our runs (5,000 images, 15 epochs: 20 % test accuracy;
    2,000 images, 3 epochs: chance, whichever conv init); at lr 0.02 it reached 50 % in 4 epochs on
    2,000 images. Lower the lr (``--set train.lr=0.02``) when a runner's recipe was made for ResNets.
    """
    return vgg("vgg11", num_classes, **kwargs)


@register_model("vgg16")
def vgg16(num_classes: int = 10, **kwargs) -> ImageClassifier:
    """VGG-16 with BN; kwargs: ``in_chans``, ``width_mult``, ``mean``, ``std``."""
    return vgg("vgg16", num_classes, **kwargs)
