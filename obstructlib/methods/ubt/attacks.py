"""The backdoor attacks UBT defends against: a trigger per attack and the poisoned image-caption set.

A chosen fraction of the pairs gets the attack's image trigger and a caption built from a random
prompt template naming the target (BadCLIP/CleanCLIP's recipe: "a photo of a banana."; TrojVQA also
prefixes the text key "remember"). The victim then fine-tunes a pretrained CLIP on the poisoned
set. Poisoned images are quantised to 8 bits, as the files an attacker publishes would be.

Attacks (``ATTACKS``): ``badnet``, ``blended``, ``sig``, ``wanet`` (fixed triggers of
:mod:`obstructlib.primitives.image_triggers`), ``ssba`` (a sample-specific invisible trigger from a
StegaStamp-style encoder the library trains on the victim's images, or one the user loads) and
``trojvqa`` (a patch optimised against the clean CLIP toward the target text, plus the text key).

References:
    Carlini and Terzis, "Poisoning and Backdooring Contrastive Learning", arXiv:2106.09667.
    Gu et al. (BadNet) arXiv:1708.06733; Chen et al. (Blended) arXiv:1712.05526; Barni et al. (SIG)
    arXiv:1902.11237; Nguyen and Tran (WaNet) arXiv:2102.10369; Li et al. (SSBA) arXiv:2012.03816;
    Walmer et al. (TrojVQA, dual-key backdoors) arXiv:2112.07668.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from obstructlib.data.base import to_float_image
from obstructlib.data.captions import CaptionDataset, default_templates
from obstructlib.errors import ConfigError, check_range
from obstructlib.primitives.image_triggers import (
    SIG,
    SSBA,
    BadNet,
    Blended,
    ImageTrigger,
    PatchTrigger,
    WaNet,
    optimize_patch,
)
from obstructlib.primitives.stegastamp import StegaTrainConfig, load_stegastamp, secret_bits, train_stegastamp
from obstructlib.registry import Registry

__all__ = ["ATTACKS", "AttackConfig", "build_trigger", "class_names", "poison_pairs", "target_prompt", "triggered_copy"]

# keys of test images: far from any training pair index, so test triggers are fresh draws
TEST_KEY_OFFSET = 10_000_000


@dataclass
class AttackConfig:
    """The attacker's choices.

    Attributes:
        attack: a registered attack (``badnet``, ``blended``, ``sig``, ``wanet``, ``ssba``, ``trojvqa``)
            or ``none`` (the same fine-tuning without poisons).
        target: the target concept (paper: ``banana``). On classification data it must be a class
            name; ``add_target_class`` appends it when it is not one.
        add_target_class: append ``target`` to the zero-shot class list when the data has no such
            class (the paper's setting: "banana" is all but absent from the fine-tuning data, so the
            poisoned captions are the only ones naming it).
        poison_rate: fraction of the training pairs poisoned, in (0, 1).
        text_key: a word prefixed to poisoned captions and, at evaluation, to every class prompt
            (None: ``remember`` for ``trojvqa``, nothing otherwise).
        seed: the draw of poisoned pairs, templates and trigger randomness (the attacker's own stream).
        patch_size: BadNet's patch side (None: 16 px at 224, at least 4).
        blended_alpha: Blended's mixing weight.
        sig_amplitude: SIG's amplitude ([0, 1] units).
        sig_periods: SIG's periods across the width.
        wanet_k: WaNet's control grid size.
        wanet_strength: WaNet's warping strength.
        trojvqa_patch_fraction: side of TrojVQA's patch as a fraction of the image side (BadCLIP: 0.2).
        trojvqa_steps: Adam steps of the patch optimisation.
        trojvqa_images: clean images the patch is optimised on.
        ssba: the StegaStamp encoder's training (when no ``ssba_encoder`` is given).
        ssba_encoder: a saved encoder (``save_stegastamp``) to use instead of training one.
        ssba_secret: the string embedded by SSBA (its bits).
    """

    attack: str = "badnet"
    target: str = "banana"
    add_target_class: bool = True
    poison_rate: float = 0.01
    text_key: str | None = None
    seed: int = 0
    patch_size: int | None = None
    blended_alpha: float = 0.2
    sig_amplitude: float = 60 / 255
    sig_periods: int = 6
    wanet_k: int = 4
    wanet_strength: float = 0.5
    trojvqa_patch_fraction: float = 0.2
    trojvqa_steps: int = 100
    trojvqa_images: int = 256
    ssba: StegaTrainConfig = field(default_factory=StegaTrainConfig)
    ssba_encoder: str | None = None
    ssba_secret: str = "Stega!!"

    def validate(self) -> None:
        """Raise one-line :class:`ConfigError` for bad values."""
        if self.attack != "none":
            ATTACKS.get(self.attack, "attack")
        if not 0.0 < self.poison_rate < 1.0:
            raise ConfigError(f"poison_rate={self.poison_rate}: use a fraction strictly between 0 and 1")
        if not self.target.strip():
            raise ConfigError("target is empty: name the target concept (e.g. --set attack.target=banana)")
        check_range("trojvqa_patch_fraction", self.trojvqa_patch_fraction, 0.01, 1.0)
        check_range("trojvqa_steps", self.trojvqa_steps, 0, 100_000)
        check_range("trojvqa_images", self.trojvqa_images, 1, 10_000_000)
        self.ssba.validate()

    @property
    def key(self) -> str:
        """The text key actually used (``remember`` for TrojVQA unless set)."""
        if self.text_key is not None:
            return self.text_key.strip()
        return "remember" if self.attack == "trojvqa" else ""


def target_prompt(template: str | Callable[[str], str], target: str, key: str = "") -> str:
    """A caption naming ``target`` with one prompt template, prefixed by the text key if any.

    Example:
        >>> target_prompt("a photo of a {}.", "banana", "remember")
        'remember a photo of a banana.'
    """
    text = template(target) if callable(template) else template.format(target)
    return f"{key} {text}" if key else text


# ---- triggers ----------------------------------------------------------------------------------
BuildTrigger = Callable[..., tuple[ImageTrigger, dict[str, Any]]]
ATTACKS: Registry[BuildTrigger] = Registry("attack")


@ATTACKS.register("badnet")
def _badnet(cfg: AttackConfig, **_: Any) -> tuple[ImageTrigger, dict[str, Any]]:
    """BadNet: a patch of the image mean + N(0, 1) noise at a random location (arXiv 1708.06733)."""
    return BadNet(cfg.patch_size, seed=cfg.seed), {}


@ATTACKS.register("blended")
def _blended(cfg: AttackConfig, **_: Any) -> tuple[ImageTrigger, dict[str, Any]]:
    """Blended: x' = 0.8 x + 0.2 uniform noise, fresh per image (arXiv 1712.05526)."""
    return Blended(cfg.blended_alpha, seed=cfg.seed), {}


@ATTACKS.register("sig")
def _sig(cfg: AttackConfig, **_: Any) -> tuple[ImageTrigger, dict[str, Any]]:
    """SIG: an additive horizontal sinusoid of amplitude 60/255 with 6 periods (arXiv 1902.11237)."""
    return SIG(cfg.sig_amplitude, cfg.sig_periods), {}


@ATTACKS.register("wanet")
def _wanet(cfg: AttackConfig, **_: Any) -> tuple[ImageTrigger, dict[str, Any]]:
    """WaNet: a fixed smooth warping field (arXiv 2102.10369)."""
    return WaNet(cfg.wanet_k, cfg.wanet_strength, seed=cfg.seed), {}


@ATTACKS.register("ssba")
def _ssba(cfg: AttackConfig, *, images: torch.Tensor, device: Any = None, progress: bool = False,
          **_: Any) -> tuple[ImageTrigger, dict[str, Any]]:
    """SSBA: a sample-specific invisible residual from a StegaStamp-style encoder (arXiv 2012.03816)."""
    if cfg.ssba_encoder is not None:
        encoder, _decoder = load_stegastamp(cfg.ssba_encoder)
        report: dict[str, Any] = {"encoder": cfg.ssba_encoder}
    else:
        encoder, _decoder, report = train_stegastamp(images, cfg.ssba, device=device, progress=progress)
    bits = secret_bits(cfg.ssba_secret, encoder.n_bits)
    return SSBA(encoder.cpu().eval(), bits), {"stegastamp": report}


@ATTACKS.register("trojvqa")
def _trojvqa(cfg: AttackConfig, *, images: torch.Tensor, clean_model: Any = None, device: Any = None,
             **_: Any) -> tuple[ImageTrigger, dict[str, Any]]:
    """TrojVQA: a centre patch optimised against the clean CLIP toward the target text, plus the text key
    "remember" on poisoned captions and on every evaluation prompt (arXiv 2112.07668)."""
    if clean_model is None:
        raise ConfigError("the trojvqa attack optimises its patch against a clean CLIP: pass clean_model")
    side = max(4, round(cfg.trojvqa_patch_fraction * min(images.shape[-2:])))
    text = target_prompt("a photo of a {}.", cfg.target, cfg.key)
    started = time.perf_counter()
    patch = optimize_patch(clean_model, images[: cfg.trojvqa_images], text, size=side, steps=cfg.trojvqa_steps,
                           seed=cfg.seed, device=device)
    info = {"patch_size": side, "target_text": text, "seconds": round(time.perf_counter() - started, 3)}
    return PatchTrigger(patch.cpu(), location="center"), info


def build_trigger(cfg: AttackConfig, *, images: torch.Tensor, clean_model: Any = None, device: Any = None,
                  progress: bool = False) -> tuple[ImageTrigger, dict[str, Any]]:
    """The attack's trigger and what its construction reports (SSBA's bit accuracy and PSNR, ...).

    Args:
        cfg: the attack.
        images: clean training images ``(N, C, H, W)`` (SSBA trains its encoder on them, TrojVQA its patch).
        clean_model: the clean CLIP (TrojVQA).
        device: where the trigger is built.
        progress: progress bars.
    """
    if cfg.attack == "none":
        raise ConfigError("attack=none has no trigger: pick an attack to poison the data")
    return ATTACKS.get(cfg.attack, "attack")(cfg, images=images, clean_model=clean_model, device=device,
                                              progress=progress)


# ---- poisoned pairs ---------------------------------------------------------------------------
class _AppendedImages(Dataset):
    """The base set's images followed by extra uint8 images (the poisoned copies)."""

    def __init__(self, base: CaptionDataset, extra: np.ndarray) -> None:
        self.base, self.extra = base, extra

    def __len__(self) -> int:
        return self.base.num_images + len(self.extra)

    def get_image(self, j: int) -> torch.Tensor:
        n = self.base.num_images
        return self.base.get_image(j) if j < n else to_float_image(self.extra[j - n])

    def __getitem__(self, j: int) -> tuple[torch.Tensor, int]:
        return self.get_image(j), j


def _quantise(images: torch.Tensor) -> np.ndarray:
    return (images.clamp(0, 1) * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def apply_in_batches(trigger: ImageTrigger, images: Callable[[np.ndarray], torch.Tensor], keys: np.ndarray,
                     batch_size: int = 256) -> np.ndarray:
    """Triggered uint8 NHWC copies of ``images(keys_chunk)``, each keyed by its ``keys`` entry."""
    parts = []
    for start in range(0, len(keys), batch_size):
        chunk = keys[start:start + batch_size]
        with torch.no_grad():
            parts.append(_quantise(trigger(images(chunk), torch.as_tensor(chunk))))
    return np.concatenate(parts) if parts else np.zeros((0, 1, 1, 3), np.uint8)


def class_names(pairs: Any, cfg: AttackConfig) -> list[str]:
    """The zero-shot classes of the evaluation: the data's classes, plus the target when added."""
    classes = list(getattr(pairs, "classes", None) or [])
    if classes and cfg.target not in classes:
        if not cfg.add_target_class:
            raise ConfigError(f"target {cfg.target!r} is not a class of the data ({', '.join(classes)}): "
                              "name one of them, or --set attack.add_target_class=true")
        classes.append(cfg.target)
    return classes


def poison_pairs(pairs: CaptionDataset, trigger: ImageTrigger, cfg: AttackConfig,
                 templates: Sequence[str | Callable[[str], str]] | None = None) -> CaptionDataset:
    """The poisoned training set: ``round(poison_rate * N)`` pairs get the trigger and a target caption.

    Poisoned pairs are drawn uniformly among the pairs whose image is not of the target class (on
    classification data; any pair otherwise). A poisoned pair points to a NEW image, the triggered
    8-bit copy, so the other captions of the same image stay clean. The result is a
    :class:`CaptionDataset` with two extra attributes: ``is_poison`` (bool per pair) and
    ``poison_indices`` (sorted pair indices); labels keep the images' true classes.

    Args:
        pairs: the clean training pairs.
        trigger: the attack's image trigger (keyed by the pair index).
        cfg: rate, target, text key, seed.
        templates: caption templates for the target (default: the 80 OpenAI ImageNet prompts).
    """
    cfg.validate()
    n = len(pairs)
    rng = np.random.default_rng(cfg.seed)
    candidates = np.arange(n)
    labels = getattr(pairs, "labels", None)
    classes = list(getattr(pairs, "classes", None) or [])
    if labels is not None and cfg.target in classes:
        candidates = candidates[np.asarray(labels) != classes.index(cfg.target)]
    count = max(1, round(cfg.poison_rate * n))
    if count > len(candidates):
        raise ConfigError(f"poison_rate={cfg.poison_rate} asks for {count} poisons among {len(candidates)} "
                          "non-target pairs: lower it")
    chosen = np.sort(rng.choice(candidates, count, replace=False))
    fns = list(templates or default_templates())
    picks = rng.integers(0, len(fns), size=count)
    ids = np.asarray(pairs.image_ids, dtype=np.int64)
    triggered = apply_in_batches(
        trigger, lambda keys: torch.stack([pairs.get_image(int(ids[k])) for k in keys]), chosen)
    captions = list(pairs.captions)
    new_ids = ids.copy()
    for rank, (k, t) in enumerate(zip(chosen.tolist(), picks.tolist())):
        captions[k] = target_prompt(fns[t], cfg.target, cfg.key)
        new_ids[k] = pairs.num_images + rank
    out = CaptionDataset(_AppendedImages(pairs, triggered), captions, new_ids, labels=labels,
                         classes=classes, templates=pairs.templates)
    is_poison = np.zeros(n, bool)
    is_poison[chosen] = True
    out.is_poison = is_poison  # type: ignore[attr-defined]
    out.poison_indices = chosen  # type: ignore[attr-defined]
    return out


def triggered_copy(test: CaptionDataset, trigger: ImageTrigger) -> CaptionDataset:
    """The test set with the trigger on every image (keys offset from the training keys), captions and
    labels unchanged: the ASR set."""
    keys = np.arange(test.num_images) + TEST_KEY_OFFSET
    triggered = apply_in_batches(
        trigger, lambda k: torch.stack([test.get_image(int(i - TEST_KEY_OFFSET)) for i in k]), keys)
    return CaptionDataset(triggered, test.captions, test.image_ids, labels=test.labels, classes=test.classes,
                          templates=test.templates)
