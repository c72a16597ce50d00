"""The classifier registry and :class:`ImageClassifier`, the one shape every classifier takes.

Every classifier in the package is ``normalize -> encoder -> head``:

- ``normalize`` subtracts the model's mean and divides by its std, so callers always feed images in
  [0, 1] and perturbation budgets stay in pixel units;
- ``encoder`` maps images to flat features ``(B, D)``;
- ``head`` is one ``nn.Linear(D, num_classes)``.

Methods that work on features (NTP's encoder pruning, LTO's few-shot heads, UC's surrogate
clustering) use ``model.features`` and ``model.head`` and never need to know the architecture.

Architectures register a builder with :func:`register_model` (timm-style) and users build them by
name with :func:`create_model`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from obstructlib.errors import ConfigError

ModelBuilder = Callable[..., "ImageClassifier"]
_MODELS: dict[str, ModelBuilder] = {}


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std`` with the statistics kept as (non-persistent) buffers.

    The buffers are not saved in state dicts: normalisation belongs to the architecture (the
    registered name), which keeps foreign checkpoints (akamaster, kuangliu) loadable strictly.

    Args:
        mean: per-channel mean in [0, 1] units.
        std: per-channel standard deviation in [0, 1] units.
    """

    mean: torch.Tensor  # buffers registered in __init__ (typed here: nn.Module.__getattr__ is untyped)
    std: torch.Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std):
            raise ConfigError(
                f"mean has {len(mean)} channels but std has {len(std)}: give one value per channel"
            )
        self.register_buffer(
            "mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False
        )
        self.register_buffer(
            "std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


class ImageClassifier(nn.Module):
    """``head(encoder(normalize(x)))`` for images in [0, 1].

    Args:
        encoder: module mapping normalised images ``(B, C, H, W)`` to features ``(B, D)``.
        num_features: D, the encoder's output width.
        num_classes: outputs of the linear head.
        mean: per-channel normalisation mean (length ``in_chans``).
        std: per-channel normalisation std (length ``in_chans``).
        in_chans: channels the encoder expects; 1-channel inputs are repeated to fit a 3-channel model.

    Shape:
        ``forward``: ``(B, C, H, W)`` in [0, 1] -> logits ``(B, num_classes)``;
        ``features``: ``(B, C, H, W)`` -> ``(B, num_features)``.

    Example:
        >>> model = create_model("resnet20", num_classes=10)
        >>> model(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        encoder: nn.Module,
        num_features: int,
        num_classes: int,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        if len(mean) != in_chans:
            raise ConfigError(
                f"normalisation has {len(mean)} channels but in_chans={in_chans}: make them match"
            )
        self.in_chans = in_chans
        self.num_features = num_features
        self.normalize = Normalize(mean, std)
        self.encoder = encoder
        self.head = nn.Linear(num_features, num_classes)
        self.arch: str | None = None  # set by create_model

    @property
    def num_classes(self) -> int:
        """Outputs of the current head."""
        return self.head.out_features

    def _match_channels(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            raise ConfigError(
                f"expected images of shape (B, C, H, W), got {tuple(x.shape)}: add a batch dimension"
            )
        c = x.shape[1]
        if c == self.in_chans:
            return x
        if c == 1:  # grey digits into an RGB model (MNIST -> MNIST-M, USPS -> SVHN)
            return x.expand(-1, self.in_chans, -1, -1)
        raise ConfigError(
            f"model expects {self.in_chans}-channel images but got {c} channels: "
            f"build it with in_chans={c} or convert the data (e.g. channels={self.in_chans})"
        )

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder features of images in [0, 1] (normalisation applied here).

        Shape:
            ``(B, C, H, W)`` -> ``(B, num_features)``.
        """
        return self.encoder(self.normalize(self._match_channels(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def reset_head(self, num_classes: int) -> nn.Linear:
        """Replace the head by a fresh ``Linear(num_features, num_classes)`` on the same device and dtype."""
        old = self.head.weight
        self.head = nn.Linear(self.num_features, num_classes, device=old.device, dtype=old.dtype)
        return self.head


def register_model(name: str | None = None) -> Callable[[ModelBuilder], ModelBuilder]:
    """Decorator registering a builder ``fn(num_classes, **kwargs) -> ImageClassifier`` under ``name``.

    Args:
        name: registry name; defaults to the function's name.

    Example:
        >>> @register_model("my_net")
        ... def my_net(num_classes=10, **kw):
        ...     ...
    """

    def wrap(fn: ModelBuilder) -> ModelBuilder:
        key = name or fn.__name__
        if key in _MODELS and _MODELS[key] is not fn:
            raise ConfigError(f"model {key!r} is already registered: pick another name")
        _MODELS[key] = fn
        return fn

    return wrap


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`, sorted."""
    return sorted(_MODELS)


def create_model(
    name: str,
    num_classes: int = 10,
    *,
    pretrained_path: str | Path | None = None,
    device: torch.device | str | None = None,
    **kwargs: Any,
) -> ImageClassifier:
    """Build a registered classifier by name.

    Args:
        name: one of :func:`list_models` (``resnet20``, ``resnet18``, ``vgg11``, ``digits_cnn`` ...).
        num_classes: width of the linear head.
        pretrained_path: a checkpoint to load strictly: a state dict of this model, or one wrapped
            in ``{'state_dict': ...}`` / ``{'model': ...}``, with or without ``module.`` prefixes,
            or a foreign layout the architecture knows (akamaster / kuangliu CIFAR nets).
        device: where to put the model (None: CPU).
        **kwargs: architecture options (``in_chans``, ``widths``, ``mean``, ``std`` ...).

    Returns:
        The :class:`ImageClassifier`, in train mode.

    Example:
        >>> create_model("resnet18", num_classes=100, in_chans=3).num_features
        512
    """
    if name not in _MODELS:
        raise ConfigError(f"unknown model {name!r}: pick one of {', '.join(list_models())}")
    try:
        model = _MODELS[name](num_classes=num_classes, **kwargs)
    except TypeError as e:  # an unknown keyword for this architecture
        raise ConfigError(
            f"bad option for model {name!r} ({e}): check the builder's documented kwargs"
        ) from e
    model.arch = name
    if pretrained_path is not None:
        load_weights(model, pretrained_path)
    if device is not None:
        model = model.to(device)
    return model


def _unwrap_state_dict(obj: Any) -> dict[str, torch.Tensor]:
    for key in ("state_dict", "model", "model_state", "net"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping):
        raise ConfigError(
            f"checkpoint holds a {type(obj).__name__}, not a state dict: save model.state_dict()"
        )
    return {k.removeprefix("module."): v for k, v in obj.items()}


def remap_foreign_keys(
    state: Mapping[str, torch.Tensor], head_prefixes: Sequence[str]
) -> dict[str, torch.Tensor]:
    """Map a flat ``conv1... / linear.*`` state dict onto ``encoder.* / head.*``.

    Keys already in ``encoder.`` / ``head.`` layout pass through unchanged.

    Args:
        state: the checkpoint's state dict (``module.`` prefixes already stripped).
        head_prefixes: prefixes of the final linear layer in the foreign layout (``("linear.",)``).
    """
    if all(k.startswith(("encoder.", "head.")) for k in state):
        return dict(state)
    out = {}
    for k, v in state.items():
        hp = next((p for p in head_prefixes if k.startswith(p)), None)
        out["head." + k[len(hp) :] if hp else "encoder." + k] = v
    return out


def load_weights(model: ImageClassifier, path: str | Path, *, strict: bool = True) -> ImageClassifier:
    """Load a checkpoint file into ``model`` (in place), accepting the layouts of :func:`create_model`.

    Args:
        model: the target classifier; its encoder may define ``head_prefixes`` (foreign key names
            of the final linear layer, e.g. ``("linear.",)``).
        path: file written by ``torch.save``; read with ``weights_only=True``.
        strict: passed to ``load_state_dict``.

    Returns:
        ``model`` itself.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint {path} does not exist: check the path")
    state = _unwrap_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    prefixes = getattr(model.encoder, "head_prefixes", ("linear.", "fc.", "classifier."))
    state = remap_foreign_keys(state, prefixes)
    try:
        model.load_state_dict(state, strict=strict)
    except RuntimeError as e:
        first = str(e).splitlines()[1:2] or [str(e)]
        raise ConfigError(
            f"checkpoint {path} does not fit model {model.arch or type(model.encoder).__name__} "
            f"({first[0].strip()[:200]}): check the architecture and num_classes"
        ) from e
    return model
