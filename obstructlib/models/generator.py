"""The ResNet image-to-image generator that Unlearnable Clusters uses to produce its noise.

Topology (pix2pix / CycleGAN ``ResnetGenerator``, as in UC's ``models/generator.py``): reflect-pad 3
and a 7x7 conv, norm, ReLU; ``n_down`` stride-2 3x3 convs doubling the width; ``n_blocks`` residual
blocks (reflect-pad 1, 3x3 conv, norm, ReLU, reflect-pad 1, 3x3 conv, norm, identity skip);
``n_down`` stride-2 transposed convs (``output_padding=1``) halving the width; reflect-pad 3 and a
7x7 conv to ``out_ch``; tanh. With ``ngf=64, n_blocks=6`` (the paper's setting) it has about 7.8 M
parameters; quick CPU runs use ``ngf=8..16, n_blocks=2``.

References:
    Zhang et al., Unlearnable Clusters, arXiv:2301.01217 (official code: jiamingzhang94/Unlearnable-Clusters).
    Johnson et al., Perceptual Losses for Real-Time Style Transfer, arXiv:1603.08155 (the ResNet generator).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from obstructlib.errors import ConfigError

__all__ = ["ResnetGenerator"]

_NORMS = {"batch": nn.BatchNorm2d, "instance": nn.InstanceNorm2d, "none": None}


def _norm(kind: str, ch: int) -> nn.Module:
    layer = _NORMS[kind]
    return nn.Identity() if layer is None else layer(ch)


class _ResnetBlock(nn.Module):
    """``x + conv-norm-relu-conv-norm(x)`` with reflect padding (no dropout, as in UC's config)."""

    def __init__(self, dim: int, norm: str, bias: bool) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(dim, dim, 3, bias=bias),
            _norm(norm, dim),
            nn.ReLU(True),
            nn.ReflectionPad2d(1),
            nn.Conv2d(dim, dim, 3, bias=bias),
            _norm(norm, dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
    """ResNet encoder-decoder generator with a tanh output in [-1, 1].

    Args:
        in_ch: input channels.
        out_ch: output channels.
        ngf: width of the first conv (64 in the paper); widths go ngf -> ngf * 2**n_down -> ngf.
        n_blocks: residual blocks at the bottleneck (6 in the paper).
        n_down: stride-2 down- and up-sampling stages (2 in the paper).
        norm: ``"batch"`` (paper), ``"instance"`` or ``"none"``. Convs carry a bias only when the
            norm layer does not (instance / none), as in the official code.

    Shape:
        ``(B, in_ch, H, W)`` -> ``(B, out_ch, H, W)``, values in [-1, 1]. Sides that are not a
        multiple of ``2**n_down`` are reflect-padded on the way in and cropped on the way out.

    References:
        Zhang et al., Unlearnable Clusters, arXiv:2301.01217, Sec. 4 (generator per cluster).

    Example:
        >>> g = ResnetGenerator(ngf=8, n_blocks=2)
        >>> g(torch.rand(1, 3, 32, 32)).shape
        torch.Size([1, 3, 32, 32])
    """

    def __init__(
        self,
        in_ch: int = 3,
        out_ch: int = 3,
        ngf: int = 64,
        n_blocks: int = 6,
        n_down: int = 2,
        norm: str = "batch",
    ) -> None:
        super().__init__()
        if norm not in _NORMS:
            raise ConfigError(f"norm={norm!r}: use one of {', '.join(_NORMS)}")
        if min(in_ch, out_ch, ngf) < 1 or n_blocks < 0 or n_down < 0:
            raise ConfigError(
                f"bad generator size (in_ch={in_ch}, out_ch={out_ch}, ngf={ngf}, n_blocks={n_blocks}, "
                f"n_down={n_down}): use positive widths and non-negative depths"
            )
        self.in_ch, self.out_ch, self.ngf, self.n_blocks, self.n_down = in_ch, out_ch, ngf, n_blocks, n_down
        bias = norm != "batch"
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(in_ch, ngf, 7, bias=bias),
            _norm(norm, ngf),
            nn.ReLU(True),
        ]
        for i in range(n_down):
            c = ngf * 2**i
            layers += [
                nn.Conv2d(c, 2 * c, 3, stride=2, padding=1, bias=bias),
                _norm(norm, 2 * c),
                nn.ReLU(True),
            ]
        width = ngf * 2**n_down
        layers += [_ResnetBlock(width, norm, bias) for _ in range(n_blocks)]
        for i in range(n_down):
            c = ngf * 2 ** (n_down - i)
            layers += [
                nn.ConvTranspose2d(c, c // 2, 3, stride=2, padding=1, output_padding=1, bias=bias),
                _norm(norm, c // 2),
                nn.ReLU(True),
            ]
        # the last conv keeps its bias whatever the norm (official code)
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, out_ch, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_ch:
            raise ConfigError(
                f"generator expects (B, {self.in_ch}, H, W), got {tuple(x.shape)}: match in_ch to the input"
            )
        h, w = x.shape[-2:]
        m = 2**self.n_down
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:  # odd sides (28 px MNIST is fine, 30 px is not): pad in, crop out
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        return self.model(x)[..., :h, :w]
