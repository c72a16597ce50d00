"""The open_clip adapter: one CLIP wrapper for tiny CPU models and the papers' RN50 / ViT-B-32.

:func:`create_clip` always goes through ``open_clip.create_model``; only the name and the
pretrained tag change between profiles. The tiny configs (``tiny-vit``, ``tiny-rn``) are JSON
files in ``obstructlib/models/clip_configs/`` registered with ``open_clip.add_model_config``, so
``open_clip.create_model("tiny-vit")`` and ``open_clip.get_tokenizer("tiny-vit")`` work too.

:class:`ClipModel` takes images in [0, 1] (it resizes and normalises them itself, so attacks and
perturbation budgets work in pixel space) and exposes what the methods need: the token embedding
and special token ids (HotFlip, UBT), the logit scale, and a zero-shot classifier builder.

References:
    Radford et al., Learning Transferable Visual Models From Natural Language Supervision, arXiv:2103.00020.
    Cherti et al., Reproducible scaling laws for contrastive language-image learning
    (open_clip), arXiv:2212.07143.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from copy import deepcopy
from pathlib import Path
from typing import Any, Protocol, cast

import open_clip
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from obstructlib.errors import ConfigError, ObstructError

CONFIG_DIR = Path(__file__).parent / "clip_configs"
TINY_CLIP_MODELS = tuple(sorted(p.stem for p in CONFIG_DIR.glob("*.json")))
open_clip.add_model_config(CONFIG_DIR)

# create_model arguments that are not model-config keys (everything else is merged into the config)
_FACTORY_ARGS = {
    "precision",
    "jit",
    "force_quick_gelu",
    "force_custom_text",
    "force_patch_dropout",
    "force_image_size",
    "force_preprocess_cfg",
    "force_context_length",
    "cache_dir",
    "output_dict",
    "require_pretrained",
    "pretrained_image",
    "pretrained_text",
    "load_weights",
}


class _DropOpenClipLogs(logging.Filter):
    """Silence open_clip's root-logger chatter ("initialized randomly", download errors) we re-raise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "open_clip" not in record.pathname


@contextlib.contextmanager
def _quiet_open_clip() -> Iterator[None]:
    flt = _DropOpenClipLogs()
    root = logging.getLogger()
    root.addFilter(flt)
    try:
        yield
    finally:
        root.removeFilter(flt)


def _merge(base: dict, override: dict) -> dict:
    out = deepcopy(base)
    for k, v in override.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


class _OpenClipModel(Protocol):
    """What :class:`ClipModel` uses of an open_clip ``CLIP`` / ``CustomTextCLIP`` (open_clip ships no types)."""

    visual: nn.Module
    logit_scale: nn.Parameter

    def encode_image(self, image: torch.Tensor, normalize: bool = False) -> torch.Tensor: ...

    def encode_text(self, text: torch.Tensor, normalize: bool = False) -> torch.Tensor: ...


class ClipModel(nn.Module):
    """An open_clip model that takes images in [0, 1] and raw token ids.

    Args:
        model: an ``open_clip`` ``CLIP`` / ``CustomTextCLIP`` instance.
        name: its architecture name (for the tokenizer and messages).
        tokenizer: optional tokenizer; default ``open_clip.get_tokenizer(name)`` at the model's
            context length.

    Shape:
        ``encode_image``: ``(B, 3 or 1, H, W)`` in [0, 1] -> ``(B, D)``;
        ``encode_text``: ``(B, context_length)`` int64 -> ``(B, D)``.

    Example:
        >>> clip = create_clip("tiny-vit")
        >>> img, txt, scale = clip(torch.rand(2, 3, 32, 32), clip.tokenize(["a cat", "a dog"]))
        >>> (img @ txt.T * scale).shape
        torch.Size([2, 2])
    """

    mean: torch.Tensor  # buffers registered in __init__ (typed here: nn.Module.__getattr__ is untyped)
    std: torch.Tensor

    def __init__(self, model: nn.Module, name: str, tokenizer: Callable | None = None) -> None:
        super().__init__()
        # `model` is an open_clip CLIP / CustomTextCLIP (the documented contract; create_clip builds it)
        self.model = cast(_OpenClipModel, model)
        self.name = name
        pp = open_clip.get_model_preprocess_cfg(model)
        mean, std = pp.get("mean", open_clip.OPENAI_DATASET_MEAN), pp.get("std", open_clip.OPENAI_DATASET_STD)
        self.register_buffer(
            "mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False
        )
        self.register_buffer(
            "std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False
        )
        size = getattr(model.visual, "image_size", pp.get("size", 224))
        self._image_hw = tuple(size) if isinstance(size, (tuple, list)) else (int(size), int(size))
        self.tokenizer = tokenizer or open_clip.get_tokenizer(name, context_length=self.context_length)

    def __deepcopy__(self, memo: dict[int, Any]) -> ClipModel:
        """A copy with its own weights that SHARES the tokenizer.

        The tokenizer holds no state a method changes (open_clip's BPE tables and a cache of
        encoded words), and copying its tables cost about 0.2 s per copy, more than the weights
        of a tiny CLIP; UBT, LTO and the tests copy models often.
        """
        memo[id(self.tokenizer)] = self.tokenizer
        new = self.__class__.__new__(self.__class__)
        memo[id(self)] = new
        new.__setstate__(deepcopy(self.__getstate__(), memo))
        return new

    # --- attributes the methods rely on --------------------------------------------------------
    @property
    def visual(self) -> nn.Module:
        """The image tower (``ModifiedResNet`` / ``VisionTransformer``)."""
        return self.model.visual

    @property
    def image_size(self) -> int | tuple[int, int]:
        """Input side in pixels (a tuple only for non-square models)."""
        h, w = self._image_hw
        return h if h == w else (h, w)

    @property
    def context_length(self) -> int:
        """Tokens per caption, including start/end tokens."""
        text = getattr(self.model, "text", self.model)
        return int(getattr(text, "context_length", getattr(self.model, "context_length", 77)))

    @property
    def vocab_size(self) -> int:
        """Rows of the token embedding."""
        return self.token_embedding.num_embeddings

    @property
    def token_embedding(self) -> nn.Embedding:
        """The text tower's ``nn.Embedding`` (HotFlip takes gradients against its rows)."""
        emb = getattr(self.model, "token_embedding", None)
        if emb is None:
            emb = getattr(getattr(self.model, "text", None), "token_embedding", None)
        if not isinstance(emb, nn.Embedding):
            raise ConfigError(
                f"{self.name} has no open_clip text token embedding: use a CLIP with a built-in text tower"
            )
        return emb

    @property
    def logit_scale(self) -> nn.Parameter:
        """The learnable log temperature (``exp()`` gives the similarity scale, 1/0.07 at init)."""
        return self.model.logit_scale

    @property
    def embed_dim(self) -> int:
        """Width D of the joint embedding."""
        proj = getattr(self.model, "text_projection", None)
        if isinstance(proj, nn.Linear):
            return proj.out_features
        if proj is not None:
            return proj.shape[1]
        return int(self.encode_text(self.tokenize(["a"]).to(self.mean.device)).shape[-1])

    @property
    def sot_token_id(self) -> int | None:
        """Start-of-text token id (49406 for the CLIP BPE)."""
        return getattr(self.tokenizer, "sot_token_id", None)

    @property
    def eot_token_id(self) -> int | None:
        """End-of-text token id (49407 for the CLIP BPE); the text feature is read at this position."""
        eot = getattr(self.tokenizer, "eot_token_id", None)
        if eot is None:
            eot = getattr(getattr(self.tokenizer, "tokenizer", None), "eos_token_id", None)
        return eot

    @property
    def pad_token_id(self) -> int:
        """Padding id (0 for the CLIP BPE, which pads with zeros; 0 is also the BPE token "!")."""
        hf = getattr(self.tokenizer, "tokenizer", None)
        pad = getattr(hf, "pad_token_id", None) if hf is not None else None
        return int(pad) if pad is not None else 0

    @property
    def special_token_ids(self) -> list[int]:
        """Ids a token search (HotFlip) must never choose: start, end, padding and any other specials."""
        ids = {self.pad_token_id}
        ids.update(i for i in (self.sot_token_id, self.eot_token_id) if i is not None)
        ids.update(getattr(self.tokenizer, "all_special_ids", []) or [])
        return sorted(int(i) for i in ids)

    # --- encoders -------------------------------------------------------------------------------
    def preprocess(self, images01: torch.Tensor) -> torch.Tensor:
        """Grey-to-RGB, bilinear resize to ``image_size`` and mean/std normalisation (differentiable).

        Shape:
            ``(B, 1 or 3, H, W)`` in [0, 1] -> ``(B, 3, image_size, image_size)``.
        """
        if images01.ndim != 4:
            raise ConfigError(
                f"expected images (B, C, H, W), got shape {tuple(images01.shape)}: add a batch dimension"
            )
        if images01.shape[1] == 1:
            images01 = images01.expand(-1, 3, -1, -1)
        elif images01.shape[1] != 3:
            raise ConfigError(
                f"CLIP takes 1- or 3-channel images, got {images01.shape[1]} channels: convert to RGB"
            )
        if tuple(images01.shape[-2:]) != self._image_hw:
            images01 = F.interpolate(
                images01, size=self._image_hw, mode="bilinear", align_corners=False, antialias=True
            )
        return (images01 - self.mean.to(images01.dtype)) / self.std.to(images01.dtype)

    def encode_image(self, images01: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Image features of images in [0, 1] (L2-normalised when ``normalize``).

        Shape:
            ``(B, C, H, W)`` -> ``(B, D)``.
        """
        return self.model.encode_image(self.preprocess(images01), normalize=normalize)

    def encode_text(self, tokens: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Text features of token ids from :meth:`tokenize` (L2-normalised when ``normalize``).

        Shape:
            ``(B, context_length)`` int64 -> ``(B, D)``.
        """
        return self.model.encode_text(tokens, normalize=normalize)

    def encode_text_embeds(
        self, embeds: torch.Tensor, tokens: torch.Tensor, normalize: bool = True
    ) -> torch.Tensor:
        """Text features from token *embeddings* instead of ids (relaxed / one-hot token searches).

        ``tokens`` still decides where the end-of-text feature is read.

        Args:
            embeds: ``(B, context_length, width)``, e.g. ``one_hot @ token_embedding.weight``.
            tokens: the ids the embeddings stand for, ``(B, context_length)``.
            normalize: L2-normalise the output.
        """

        def swap(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
            return embeds.to(output.dtype)

        handle = self.token_embedding.register_forward_hook(swap)
        try:
            return self.encode_text(tokens, normalize=normalize)
        finally:
            handle.remove()

    def forward(
        self, images01: torch.Tensor, tokens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(image_features, text_features, logit_scale.exp())``, features L2-normalised.

        Shape:
            ``(B, C, H, W)``, ``(B', L)`` -> ``(B, D)``, ``(B', D)``, scalar.
        """
        return self.encode_image(images01), self.encode_text(tokens), self.logit_scale.exp()

    # --- text utilities ---------------------------------------------------------------------------
    def tokenize(self, texts: str | Sequence[str], device: torch.device | str | None = None) -> torch.Tensor:
        """Token ids ``(B, context_length)`` (int64), truncated with the end token kept last.

        Args:
            texts: one caption or a list of captions.
            device: where to put the ids (None: CPU).
        """
        if isinstance(texts, str):
            texts = [texts]
        tokens = self.tokenizer(list(texts), context_length=self.context_length).long()
        return tokens if device is None else tokens.to(device)

    @torch.no_grad()
    def zero_shot_classifier(
        self,
        classnames: Sequence[str],
        templates: Sequence[str | Callable[[str], str]],
        device: torch.device | str | None = None,
        batch_size: int = 256,
        progress: bool = False,
    ) -> torch.Tensor:
        """Class embeddings: the normalised mean of each class's normalised template embeddings (no grad).

        Args:
            classnames: C class names.
            templates: T prompt templates, ``"a photo of a {}."`` strings or open_clip-style callables.
            device: where to compute (None: the model's device).
            batch_size: captions per text-encoder call.
            progress: show a progress bar.

        Returns:
            ``(C, D)`` L2-normalised rows; logits are ``100 * image_features @ W.T``.

        Example:
            >>> W = clip.zero_shot_classifier(["cat", "dog"], ["a photo of a {}."])  # doctest: +SKIP
        """
        if not classnames or not templates:
            raise ConfigError("zero_shot_classifier needs at least one class name and one template")
        device = torch.device(device) if device is not None else self.mean.device
        texts = [t(c) if callable(t) else t.format(c) for c in classnames for t in templates]
        feats = []
        for i in tqdm(range(0, len(texts), batch_size), disable=not progress, desc="zero-shot classifier"):
            feats.append(self.encode_text(self.tokenize(texts[i : i + batch_size], device)).float())
        per_template = torch.cat(feats).view(len(classnames), len(templates), -1)
        return F.normalize(per_template.mean(dim=1), dim=-1)


def list_clip_models() -> list[str]:
    """Every architecture :func:`create_clip` accepts (the tiny configs and open_clip's)."""
    return open_clip.list_models()


def _check_pretrained(name: str, pretrained: str, overrides: dict) -> None:
    tag_cfg = open_clip.get_pretrained_cfg(name, pretrained)
    if tag_cfg:
        # OpenAI weights were trained with QuickGELU; open_clip only warns on a mismatch, which
        # silently degrades accuracy, so we switch it on for those tags.
        if tag_cfg.get("quick_gelu") and not open_clip.get_model_config(name).get("quick_gelu"):
            overrides.setdefault("force_quick_gelu", True)
    elif not os.path.isfile(pretrained):
        tags = open_clip.list_pretrained_tags_by_model(name)
        raise ConfigError(
            f"pretrained={pretrained!r} is neither a tag of {name} ({', '.join(tags) or 'none'}) nor a file: "
            "pick a tag, a checkpoint path, or None"
        )


def create_clip(
    name: str,
    pretrained: str | None = None,
    *,
    device: torch.device | str | None = None,
    image_size: int | None = None,
    **overrides: Any,
) -> ClipModel:
    """Build an open_clip model by architecture name, wrapped as :class:`ClipModel`.

    Args:
        name: ``tiny-vit`` / ``tiny-rn`` (CPU-sized, 32 px) or any ``open_clip.list_models()``
            name (``RN50``, ``RN101``, ``ViT-B-32`` ...).
        pretrained: an open_clip tag (``openai``, ``laion2b_s34b_b79k`` ...; needs the network
            or a cached download), a checkpoint path, or None for random initialisation.
        device: where to put the model (None: CPU).
        image_size: override the input resolution (pixels).
        **overrides: ``vision_cfg`` / ``text_cfg`` dicts merged into the config (e.g.
            ``vision_cfg={"layers": 1}``), ``context_length``, other model-config keys
            (``embed_dim``, ``quick_gelu``) or ``open_clip.create_model`` arguments (``precision``).

    Returns:
        The wrapped model, in train mode.

    Example:
        >>> clip = create_clip("tiny-vit")
        >>> clip.image_size, clip.context_length
        (32, 32)
    """
    base_cfg = open_clip.get_model_config(name)
    if base_cfg is None:
        raise ConfigError(
            f"unknown CLIP architecture {name!r}: use {', '.join(TINY_CLIP_MODELS)} or an open_clip name "
            "such as RN50 or ViT-B-32 (see open_clip.list_models())"
        )
    overrides = dict(overrides)
    if "context_length" in overrides:
        overrides["force_context_length"] = overrides.pop("context_length")
    factory = {k: overrides.pop(k) for k in list(overrides) if k in _FACTORY_ARGS}
    cfg_overrides = overrides  # what is left are model-config keys
    for key in ("vision_cfg", "text_cfg"):
        if key in cfg_overrides:
            cfg_overrides[key] = _merge(base_cfg.get(key, {}), cfg_overrides[key])
    if image_size is not None:
        if "vision_cfg" in cfg_overrides:  # create_model would drop force_image_size under a full vision_cfg
            cfg_overrides["vision_cfg"]["image_size"] = image_size
        else:
            factory["force_image_size"] = image_size
    if pretrained is not None:
        _check_pretrained(name, pretrained, factory)
    try:
        with _quiet_open_clip():
            model = open_clip.create_model(
                name, pretrained=pretrained, device=device or "cpu", **factory, **cfg_overrides
            )
    except RuntimeError as e:
        if pretrained is not None and "download" in str(e).lower():
            raise ObstructError(
                f"pretrained weights {pretrained} for {name} could not be fetched: "
                "run on a machine with internet or pass pretrained=None"
            ) from e
        raise
    except TypeError as e:
        raise ConfigError(
            f"bad CLIP override for {name} ({e}): see create_clip's documented overrides"
        ) from e
    return ClipModel(model, name)
