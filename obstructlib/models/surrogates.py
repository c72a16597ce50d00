"""Frozen surrogate feature extractors: one interface for classifiers, ResNet-50 and CLIP encoders.

Unlearnable Clusters clusters the protected images in a surrogate's feature space and then pushes
each cluster's features toward another cluster's centre, so it needs "images in [0, 1] -> feature
vectors" with gradients to the input but none to the weights. :func:`create_surrogate` builds that
from a name:

- ``"classifier:<arch>"``: any registered obstructlib classifier's penultimate features
  (``model.features``), optionally from a checkpoint (a ``torch.save`` state dict, or an engine
  checkpoint directory holding ``model.safetensors``);
- ``"simclr:<arch>"``: the same features of a classifier whose encoder was pre-trained WITHOUT
  labels (SimCLR on the protector's images, :func:`obstructlib.methods.uc.pretrain_surrogate`);
  there is no random-init default: pass the pretrained model itself, or its weights as
  ``checkpoint``, else a one-line :class:`ConfigError` says to pretrain it;
- ``"rn50"``: torchvision ResNet-50, the 2,048-d input of ``fc`` (UC's default surrogate);
  ``pretrained="imagenet"`` loads ``ResNet50_Weights.IMAGENET1K_V1`` (torchvision download or cache);
- ``"clip:<arch>"``: an open_clip image encoder via :func:`~obstructlib.models.create_clip`, the
  *unnormalised* image embedding ("UC-CLIP" uses ``clip:RN50`` with ``pretrained="openai"``);
  the tiny configs (``clip:tiny-rn``, ``clip:tiny-vit``) run offline with ``pretrained=None``.

The same code path serves every profile: quick runs pass ``pretrained=None`` (random weights) or a
small trained classifier, GPU runs the paper's weights.

References:
    Zhang et al., Unlearnable Clusters, arXiv:2301.01217 (surrogates RN50 and CLIP-RN50).
"""

from __future__ import annotations

import urllib.error
from pathlib import Path
from typing import Any

import open_clip
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from obstructlib.errors import ConfigError, ObstructError
from obstructlib.models.cifar_resnet import IMAGENET_MEAN, IMAGENET_STD
from obstructlib.models.clip import ClipModel, create_clip
from obstructlib.models.registry import (
    ImageClassifier,
    Normalize,
    create_model,
    list_models,
    remap_foreign_keys,
)

__all__ = ["FeatureExtractor", "create_surrogate", "resolve_surrogate_pretrained"]

SURROGATE_KINDS = ("classifier:<arch>", "simclr:<arch>", "rn50", "clip:<arch>")


class FeatureExtractor(nn.Module):
    """A frozen network mapping images in [0, 1] to feature vectors (normalisation inside).

    The weights never require gradients and the module stays in eval mode (``train()`` is a
    no-op), so BatchNorm statistics do not drift while a protection backpropagates through it.

    Args:
        backbone: the wrapped network.
        feature_dim: D, the width of the features.
        name: the surrogate's name (for messages and results).
        image_size: resize inputs to this side (bilinear) before the backbone; None keeps them.

    Shape:
        ``forward``: ``(B, C, H, W)`` in [0, 1] -> ``(B, feature_dim)``.
    """

    def __init__(
        self, backbone: nn.Module, feature_dim: int, name: str, image_size: int | None = None
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.feature_dim = int(feature_dim)
        self.name = name
        self.image_size = image_size
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> FeatureExtractor:
        """Stay in eval mode: a surrogate is frozen (its BatchNorm must not update)."""
        return super().train(False)

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            raise ConfigError(f"expected images (B, C, H, W), got {tuple(x.shape)}: add a batch dimension")
        s = self.image_size
        if s is not None and tuple(x.shape[-2:]) != (s, s):
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
        return x

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Features of already resized images; subclasses implement it."""
        raise NotImplementedError

    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        return self.embed(self._resize(x01))

    def extra_repr(self) -> str:
        return f"name={self.name!r}, feature_dim={self.feature_dim}"


class ClassifierFeatures(FeatureExtractor):
    """Penultimate features ``model.features(x)`` of an :class:`ImageClassifier`."""

    backbone: ImageClassifier  # what create_surrogate wraps here (the base class types it nn.Module)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.features(x)


class TorchvisionFeatures(FeatureExtractor):
    """A torchvision ResNet with ``fc`` replaced by identity: the input of ``fc`` (UC's forward hook)."""

    def __init__(
        self, backbone: nn.Module, feature_dim: int, name: str, image_size: int | None = None
    ) -> None:
        super().__init__(backbone, feature_dim, name, image_size)
        self.normalize = Normalize(IMAGENET_MEAN, IMAGENET_STD)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return self.backbone(self.normalize(x))


class ClipFeatures(FeatureExtractor):
    """The unnormalised CLIP image embedding (UC-CLIP's hook on a linear layer after the encoder)."""

    backbone: ClipModel  # what create_surrogate wraps here (the base class types it nn.Module)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.encode_image(x, normalize=False)  # ClipModel resizes and normalises


def resolve_surrogate_pretrained(name: str, pretrained: str | None) -> str | None:
    """Turn ``pretrained="auto"`` into the paper's weights for ``name``; other values pass through.

    ``"auto"``: ``rn50`` -> ``"imagenet"``; ``clip:<arch>`` -> ``"openai"`` when open_clip has that
    tag for the architecture, else None (tiny configs); ``classifier:<arch>`` -> None.

    Example:
        >>> resolve_surrogate_pretrained("clip:tiny-rn", "auto") is None
        True
    """
    if pretrained != "auto":
        return pretrained
    if name == "rn50":
        return "imagenet"
    if name.startswith("clip:"):
        arch = name.split(":", 1)[1]
        return "openai" if "openai" in open_clip.list_pretrained_tags_by_model(arch) else None
    return None


def _classifier_state(checkpoint: str | Path) -> dict[str, torch.Tensor]:
    path = Path(checkpoint)
    if path.is_dir():
        path = path / "model.safetensors"
    if not path.is_file():
        raise ConfigError(f"surrogate checkpoint {checkpoint} does not exist: check the path")
    state: dict[str, Any]
    if path.suffix == ".safetensors":
        state = load_file(path)
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        for key in ("state_dict", "model", "model_state", "net"):
            if isinstance(state, dict) and isinstance(state.get(key), dict):
                state = state[key]
                break
        state = {k.removeprefix("module."): v for k, v in state.items()}
    if state and all(k.startswith(("model.", "proj.")) for k in state):  # simclr_pretrain's checkpoint
        state = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
    return state


def _build_classifier(
    arch: str, num_classes: int | None, checkpoint: str | Path | None, kind: str = "classifier", **kw: Any
) -> ImageClassifier:
    if arch not in list_models():
        raise ConfigError(
            f"unknown surrogate classifier {arch!r}: use {kind}:<one of {', '.join(list_models())}>"
        )
    if checkpoint is None:
        return create_model(arch, num_classes or 10, **kw)
    state = _classifier_state(checkpoint)
    probe = create_model(arch, 10, **kw)  # only to learn the layout's head prefixes
    # Released checkpoints in a foreign flat layout (akamaster's ``conv1 ... linear.*``) load too.
    state = remap_foreign_keys(state, getattr(probe.encoder, "head_prefixes", ("linear.", "fc.", "classifier.")))
    head = state.get("head.weight")
    model = create_model(arch, num_classes or (head.shape[0] if head is not None else 10), **kw)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        line = (str(e).splitlines()[1:2] or [str(e)])[0].strip()[:200]
        raise ConfigError(
            f"surrogate checkpoint {checkpoint} does not fit {arch} ({line}): check the architecture"
        ) from e
    return model


def _build_rn50(pretrained: str | None) -> nn.Module:
    from torchvision.models import ResNet50_Weights, resnet50

    if pretrained is None or Path(str(pretrained)).is_file():
        net = resnet50(weights=None)
        if pretrained is not None:
            net.load_state_dict(_classifier_state(pretrained))
    elif pretrained.lower() in ("imagenet", "imagenet1k_v1"):
        try:
            net = resnet50(weights=ResNet50_Weights.IMAGENET1K_V1)
        except (OSError, RuntimeError, urllib.error.URLError) as e:
            raise ObstructError(
                "ImageNet ResNet-50 weights could not be downloaded: run once with internet (torchvision "
                "caches them) or use surrogate_pretrained=None"
            ) from e
    else:
        raise ConfigError(f"pretrained={pretrained!r} for rn50: use 'imagenet', a state-dict file, or None")
    net.fc = nn.Identity()
    return net


def create_surrogate(
    name: str | nn.Module,
    *,
    pretrained: str | None = None,
    device: torch.device | str | None = None,
    num_classes: int | None = None,
    checkpoint: str | Path | None = None,
    image_size: int | None = None,
    label: str | None = None,
    **kwargs: Any,
) -> FeatureExtractor:
    """Build a frozen surrogate feature extractor by name (or wrap a model you already have).

    Args:
        name: ``"classifier:<arch>"`` (any :func:`~obstructlib.models.list_models` name),
            ``"simclr:<arch>"`` (needs ``checkpoint``), ``"rn50"`` or ``"clip:<open_clip arch>"``
            (``clip:RN50``, ``clip:tiny-rn``); or an :class:`ImageClassifier` /
            :class:`ClipModel` / :class:`FeatureExtractor` instance.
        pretrained: ``rn50``: ``"imagenet"``, a state-dict file or None (random init);
            ``clip:``: an open_clip tag (``"openai"``), a file or None; ``"auto"`` picks the
            paper's weights (see :func:`resolve_surrogate_pretrained`). Ignored for classifiers.
        device: where to put the surrogate (None: CPU, or where a given model already is).
        num_classes: classifier head width (only matters for loading a checkpoint; inferred
            from the checkpoint's ``head.weight`` when None).
        checkpoint: ``classifier:`` / ``simclr:`` weights: a state-dict file or an engine
            checkpoint directory (``simclr_pretrain``'s keeps the classifier under ``model.``).
        image_size: resize inputs to this side before the backbone (e.g. 224 for ImageNet
            weights on small images); None keeps the input size. CLIP always resizes to its own size.
        label: the name recorded for a given model (``ext.name``, e.g. ``"simclr:resnet20"``);
            None: ``classifier:<arch>`` / ``clip:<name>``. Ignored for names and extractors.
        **kwargs: architecture options for ``create_model`` / ``create_clip``.

    Returns:
        A frozen :class:`FeatureExtractor` in eval mode with ``feature_dim`` set.

    Raises:
        ConfigError: unknown surrogate name or a checkpoint that does not fit.
        ObstructError: pretrained weights that cannot be downloaded.

    Example:
        >>> s = create_surrogate("classifier:digits_cnn")
        >>> s(torch.rand(2, 3, 16, 16)).shape
        torch.Size([2, 256])
    """
    if isinstance(name, FeatureExtractor):
        ext = name.requires_grad_(False).eval()
    elif isinstance(name, ImageClassifier):
        ext = ClassifierFeatures(name, name.num_features, label or f"classifier:{name.arch}", image_size)
    elif isinstance(name, ClipModel):
        ext = ClipFeatures(name, name.embed_dim, label or f"clip:{name.name}", image_size)
    elif not isinstance(name, str):
        raise ConfigError(f"surrogate must be a name or a classifier/CLIP model, got {type(name).__name__}")
    elif name.startswith("simclr:") and checkpoint is None:
        raise ConfigError(
            f"surrogate {name!r} must be pre-trained first: pass the model from "
            "ob.uc.pretrain_surrogate as surrogate=, or its saved weights as checkpoint"
        )
    elif name.startswith(("classifier:", "simclr:")):
        kind, arch = name.split(":", 1)
        model = _build_classifier(arch, num_classes, checkpoint, kind, **kwargs)
        ext = ClassifierFeatures(model, model.num_features, name, image_size)
    elif name == "rn50":
        net = _build_rn50(resolve_surrogate_pretrained(name, pretrained))
        ext = TorchvisionFeatures(net, 2048, name, image_size)
    elif name.startswith("clip:"):
        clip = create_clip(name.split(":", 1)[1], resolve_surrogate_pretrained(name, pretrained), **kwargs)
        ext = ClipFeatures(clip, clip.embed_dim, name, image_size)
    else:
        raise ConfigError(f"unknown surrogate {name!r}: use one of {', '.join(SURROGATE_KINDS)}")
    if device is not None:
        ext = ext.to(device)
    return ext
