"""The CLIP few-shot learners of Learning to Obstruct: CE fine-tuning, CoOp and Tip-Adapter-F.

Each learner is used twice with the same code: by the defender inside the obstruction loop (4
shots, 1 epoch) and by the attacker from the released backbone (5 shots, 10 or 20 epochs). All
three fine-tune the CLIP image tower (every parameter whose name has no ``bn``) at a tiny learning
rate, as the official code does, on top of their own head:

- ``ce``: the zero-shot text classifier (template-averaged class embeddings) with the token
  embedding trained at ``token_lr_scale`` times the visual rate; every ``resample_every`` steps the
  classifier is rebuilt from one random template with gradients through a random
  ``resample_fraction`` of the class names (the memory-saving resampling trick);
- ``coop``: 16 shared learned context vectors around the class token (class token in the middle),
  SGD lr 2e-3 with a constant 1e-5 first epoch and a cosine schedule (Zhou et al., arXiv 2109.01134);
- ``tip-adapter``: a cache of the shots' (augmentation-averaged) features as keys and one-hot
  values, a linear adapter initialised to the keys, logits ``zero-shot + alpha * exp(-beta (1 - a)) V``
  with alpha 1 and beta 5.5 fixed (Zhang et al., arXiv 2111.03930).

BatchNorm running statistics stay frozen (the model is in eval mode while learning), like the
``bn*`` parameters, so restoring the backbone after an inner run is exact.

References:
    Zheng et al., Learning to Obstruct, arXiv:2409.19210 (the learners' settings, spec section 2.5).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from obstructlib.engine import autocast
from obstructlib.errors import ConfigError, check_min, check_range
from obstructlib.primitives.augment import resized_crop_flip

__all__ = [
    "CIFAR_TEMPLATES",
    "LEARNERS",
    "Adapted",
    "LearnerConfig",
    "class_embeddings",
    "fit_learner",
    "init_learner",
    "learner_config",
    "learner_logits",
    "learner_text",
    "model_device",
    "training_only",
    "visual_parameters",
]

LEARNERS = ("ce", "coop", "tip-adapter")

# CLIP's 18 CIFAR prompts (the official LTO CIFAR100 data module uses them)
CIFAR_TEMPLATES = tuple(
    f"a {q}photo of {a} {s}{{}}." for a in ("a", "the") for q, s in (
        ("", ""), ("blurry ", ""), ("black and white ", ""), ("low contrast ", ""), ("high contrast ", ""),
        ("bad ", ""), ("good ", ""), ("", "small "), ("", "big "))
)


@dataclass
class LearnerConfig:
    """One learner's recipe for one role; :func:`learner_config` gives the official values.

    Attributes:
        kind: ``ce``, ``coop`` or ``tip-adapter``.
        epochs: passes over the shots (defender 1; attacker CE/CoOp 10, Tip-Adapter 20); 0 runs no
            step (the NoF baseline's "learner").
        batch_size: shots per step (32; Tip-Adapter 256).
        lr_visual: AdamW rate of the image tower's non-BN parameters (1e-6 for pretrained RN50).
        token_lr_scale: the token embedding's rate over ``lr_visual`` (50; CE and Tip-Adapter; 0
            freezes it; CoOp keeps it frozen).
        lr_head: CoOp's prompt rate (2e-3, SGD) or Tip-Adapter's adapter rate (1e-3, AdamW).
        eps: AdamW epsilon (1e-4 in the official code).
        resample_every: rebuild the text classifier every this many steps (CE, Tip-Adapter).
        resample_fraction: share of class names with gradients in a rebuild (0.1).
        augment_epochs: augmented passes averaged into Tip-Adapter's cache keys (attacker 10).
        n_ctx: CoOp's context length (16).
        tip_alpha: Tip-Adapter's cache weight (1.0, no search).
        tip_beta: Tip-Adapter's sharpness (5.5, no search).
        min_crop: smallest random-resized-crop area share of the training view (0.08).
        coop_warmup_lr: CoOp's constant first-epoch rate (1e-5).
    """

    kind: str = "ce"
    epochs: int = 1
    batch_size: int = 32
    lr_visual: float = 1e-6
    token_lr_scale: float = 50.0
    lr_head: float = 0.0
    eps: float = 1e-4
    resample_every: int = 4
    resample_fraction: float = 0.1
    augment_epochs: int = 1
    n_ctx: int = 16
    tip_alpha: float = 1.0
    tip_beta: float = 5.5
    min_crop: float = 0.08
    coop_warmup_lr: float = 1e-5

    def validate(self) -> None:
        if self.kind not in LEARNERS:
            raise ConfigError(f"unknown learner {self.kind!r}: use one of {', '.join(LEARNERS)}")
        check_min(self, ("epochs",), 0)
        check_min(self, ("batch_size", "augment_epochs", "n_ctx", "resample_every"))
        check_range("resample_fraction", self.resample_fraction, 0.0, 1.0)
        check_range("min_crop", self.min_crop, 1e-3, 1.0)


# the official def.yaml / atk.yaml values (spec 2.5); the attacker trains 10x (Tip-Adapter 20x) longer
_OFFICIAL: dict[str, dict[str, dict[str, Any]]] = {
    "ce": {"defender": {}, "attacker": {"epochs": 10}},
    "coop": {"defender": {"lr_head": 2e-3, "token_lr_scale": 0.0},
             "attacker": {"lr_head": 2e-3, "token_lr_scale": 0.0, "epochs": 10}},
    "tip-adapter": {"defender": {"lr_head": 1e-3, "batch_size": 256},
                    "attacker": {"lr_head": 1e-3, "batch_size": 256, "epochs": 20, "augment_epochs": 10}},
}


def learner_config(kind: str, role: str = "attacker", **overrides: Any) -> LearnerConfig:
    """The official recipe of ``kind`` for ``role`` (``defender`` or ``attacker``), then ``overrides``.

    Example:
        >>> learner_config("tip-adapter", "attacker").epochs
        20
    """
    if kind not in _OFFICIAL:
        raise ConfigError(f"unknown learner {kind!r}: use one of {', '.join(LEARNERS)}")
    if role not in ("defender", "attacker"):
        raise ConfigError(f"unknown role {role!r}: use defender or attacker")
    cfg = replace(LearnerConfig(kind=kind, **_OFFICIAL[kind][role]), **overrides)
    cfg.validate()
    return cfg


@dataclass
class Adapted:
    """A learner's head after (or before) its run: what :func:`learner_logits` needs besides the model.

    Attributes:
        kind: the learner.
        classnames: the C class names, in label order.
        templates: the prompt templates of the CE/Tip-Adapter classifier.
        ctx: CoOp's ``(n_ctx, width)`` context, or None (then the zero-shot classifier is used).
        keys: Tip-Adapter's ``(N, D)`` cache keys (the adapter's initial weight).
        values: Tip-Adapter's ``(N, C)`` one-hot cache values.
        adapter: Tip-Adapter's ``(N, D)`` trained adapter weight.
    """

    kind: str
    classnames: list[str]
    templates: list[str]
    ctx: torch.Tensor | None = None
    keys: torch.Tensor | None = None
    values: torch.Tensor | None = None
    adapter: torch.Tensor | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def model_device(model: nn.Module, device: Any = None) -> torch.device:
    """``device`` as a ``torch.device``, or the model's own device when None."""
    return torch.device(device) if device is not None else next(model.parameters()).device


def visual_parameters(model: Any) -> list[tuple[str, nn.Parameter]]:
    """The image tower's parameters whose name has no ``bn`` (what every learner fine-tunes).

    As in the official code the downsample BatchNorms of a ResNet (``downsample.1``) have no
    ``bn`` in their name and so are included; ``bn1``/``bn2``/``bn3`` are not.
    """
    return [("visual." + n, p) for n, p in model.visual.named_parameters() if "bn" not in n]


def class_embeddings(model: Any, classnames: Sequence[str], templates: Sequence[str], *,
                     grad_fraction: float = 0.0, generator: torch.Generator | None = None,
                     device: torch.device | str | None = None) -> torch.Tensor:
    """Template-averaged normalised class embeddings, with gradients for a random share of classes.

    The resampling trick: all classes are encoded without gradients, then a random
    ``grad_fraction`` of them (drawn with replacement, as the official code does, so at most that
    share is distinct) is re-encoded with autograd and put back: an unbiased, cheap gradient
    through the text side.

    Shape:
        ``(C, D)``, L2-normalised rows.
    """
    c = len(classnames)
    with torch.no_grad():
        base = model.zero_shot_classifier(list(classnames), list(templates), device=device)
    count = int(round(grad_fraction * c))
    if count == 0 or not torch.is_grad_enabled():
        return base
    picks = torch.unique(torch.randint(0, c, (count,), generator=generator))
    texts = [t.format(classnames[int(i)]) for i in picks for t in templates]
    feats = model.encode_text(model.tokenize(texts, device)).float().view(len(picks), len(templates), -1)
    fresh = F.normalize(feats.mean(dim=1), dim=-1)
    mask = torch.zeros(c, 1, device=base.device, dtype=torch.bool)
    mask[picks.to(base.device)] = True
    full = base.clone()
    full[picks.to(base.device)] = fresh.to(base.dtype)
    return torch.where(mask, full, base)


def _coop_tokens(model: Any, classnames: Sequence[str], n_ctx: int, device: Any) -> tuple[torch.Tensor, list[int]]:
    """Token ids of ``X*h class X*(n_ctx-h) .`` (class token in the middle) and where each context run starts."""
    half = n_ctx // 2
    texts = [" ".join(["X"] * half + [name] + ["X"] * (n_ctx - half)) + "." for name in classnames]
    tokens = model.tokenize(texts, device)
    if int((tokens != 0).sum(dim=1).max()) >= model.context_length:
        raise ConfigError(f"CoOp prompts of {n_ctx} context tokens do not fit the model's context length "
                          f"{model.context_length}: lower n_ctx or build the CLIP with a longer context")
    name_lens = [len(model.tokenize(name)[0].nonzero()) - 2 for name in classnames]
    return tokens, name_lens


def learner_text(model: Any, state: Adapted, *, num_templates: int | None = None, grad_fraction: float = 0.0,
                 generator: torch.Generator | None = None, device: Any = None) -> torch.Tensor:
    """The class embeddings the learner classifies with, ``(C, D)``.

    CE and Tip-Adapter: the zero-shot classifier over ``num_templates`` random templates (all when
    None) with the resampling trick; CoOp: its learned prompts (the zero-shot classifier if it has
    none yet, as the NoF baseline needs).
    """
    if state.kind == "coop" and state.ctx is not None:
        tokens, name_lens = _coop_tokens(model, state.classnames, state.ctx.shape[0], device)
        embeds = model.token_embedding(tokens)
        n_ctx, half = state.ctx.shape[0], state.ctx.shape[0] // 2
        rows = []
        for i, nl in enumerate(name_lens):  # SOT | ctx[:half] | class | ctx[half:] | . EOT pad
            e = embeds[i]
            rows.append(torch.cat([e[:1], state.ctx[:half].to(e.dtype), e[1 + half:1 + half + nl],
                                   state.ctx[half:].to(e.dtype), e[1 + n_ctx + nl:]]))
        return F.normalize(model.encode_text_embeds(torch.stack(rows), tokens).float(), dim=-1)
    templates = state.templates
    if num_templates is not None and num_templates < len(templates):
        idx = torch.randperm(len(templates), generator=generator)[:num_templates]
        templates = [templates[int(i)] for i in idx]
    return class_embeddings(model, state.classnames, templates, grad_fraction=grad_fraction,
                            generator=generator, device=device)


def learner_logits(model: Any, state: Adapted, images: torch.Tensor, text: torch.Tensor,
                   cfg: LearnerConfig) -> torch.Tensor:
    """Logits ``(B, C)`` of images in [0, 1]: ``exp(logit_scale) * cos`` (plus Tip-Adapter's cache term)."""
    feats = model.encode_image(images).float()
    logits = model.logit_scale.exp().float() * feats @ text.t()
    if state.kind == "tip-adapter" and state.adapter is not None and state.values is not None:
        affinity = feats @ state.adapter.t()
        logits = logits + cfg.tip_alpha * torch.exp(-cfg.tip_beta * (1 - affinity)) @ state.values
    return logits


def init_learner(model: Any, images: torch.Tensor, labels: torch.Tensor, classnames: Sequence[str],
                 templates: Sequence[str], cfg: LearnerConfig, *, generator: torch.Generator,
                 device: Any = None) -> Adapted:
    """A fresh head: nothing for CE, a random context (std 0.02) for CoOp, the cache for Tip-Adapter."""
    cfg.validate()
    device = model_device(model, device)
    state = Adapted(cfg.kind, list(classnames), list(templates))
    if cfg.kind == "coop":
        width = model.token_embedding.weight.shape[1]
        state.ctx = (torch.randn(cfg.n_ctx, width, generator=generator) * 0.02).to(device).requires_grad_(True)
    elif cfg.kind == "tip-adapter":
        with torch.no_grad():
            keys = torch.stack([model.encode_image(resized_crop_flip(images.cpu(), generator, cfg.min_crop).to(device))
                                .float() for _ in range(cfg.augment_epochs)]).mean(0)
        state.keys = F.normalize(keys, dim=-1)
        state.values = F.one_hot(labels.to(device), len(classnames)).float()
        state.adapter = state.keys.clone().requires_grad_(True)
    return state


@contextmanager
def training_only(model: nn.Module, groups: list[dict[str, Any]]) -> Iterator[None]:
    """Eval mode (BN statistics frozen, as the bn* parameters are) and gradients only for ``groups``.

    The text transformer, logit scale and bn* get no gradient work and no stray ``.grad``; mode and
    ``requires_grad`` flags are restored on exit.
    """
    was_training = model.training
    trained = {id(p) for g in groups for p in g["params"]}
    frozen = [p for p in model.parameters() if p.requires_grad and id(p) not in trained]
    model.eval()
    for p in frozen:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in frozen:
            p.requires_grad_(True)
        model.train(was_training)


def _groups(model: Any, state: Adapted, cfg: LearnerConfig) -> tuple[list[dict], list[dict]]:
    """(AdamW groups, SGD groups) of what the learner trains."""
    adamw = [{"params": [p for _, p in visual_parameters(model)], "lr": cfg.lr_visual}]
    if cfg.token_lr_scale > 0 and cfg.kind != "coop":
        adamw.append({"params": [model.token_embedding.weight], "lr": cfg.lr_visual * cfg.token_lr_scale})
    if cfg.kind == "tip-adapter" and state.adapter is not None:
        adamw.append({"params": [state.adapter], "lr": cfg.lr_head})
    sgd = [{"params": [state.ctx], "lr": cfg.lr_head}] if cfg.kind == "coop" and state.ctx is not None else []
    return adamw, sgd


def fit_learner(model: Any, images: torch.Tensor, labels: torch.Tensor, classnames: Sequence[str],
                templates: Sequence[str], cfg: LearnerConfig, *, generator: torch.Generator,
                device: Any = None, state: Adapted | None = None) -> Adapted:
    """Run the learner on few-shot data: trains ``model`` in place and returns its head.

    Args:
        model: a :class:`~obstructlib.models.ClipModel` (its image tower and token embedding move).
        images: ``(N, C, H, W)`` shots in [0, 1] (on the CPU or ``device``).
        labels: ``(N,)`` class indices into ``classnames``.
        classnames: the C class names (all-way classification).
        templates: prompt templates (``"a photo of a {}."``).
        cfg: the recipe (:func:`learner_config`).
        generator: CPU generator for batch order, augmentation and the resampling draws.
        device: where to compute.
        state: a head to continue from (default: :func:`init_learner`).

    Returns:
        The head (:class:`Adapted`); with ``cfg.epochs == 0`` the fresh head, model unchanged.
    """
    device = model_device(model, device)
    state = state or init_learner(model, images, labels, classnames, templates, cfg, generator=generator, device=device)
    n = len(images)
    per_epoch = math.ceil(n / cfg.batch_size)
    total = cfg.epochs * per_epoch
    if total == 0:
        return state
    adamw_groups, sgd_groups = _groups(model, state, cfg)
    for g in adamw_groups + sgd_groups:
        g["initial_lr"] = g["lr"]
    opts: list[torch.optim.Optimizer] = [torch.optim.AdamW(adamw_groups, eps=cfg.eps)]
    if sgd_groups:
        opts.append(torch.optim.SGD(sgd_groups, momentum=0.9, weight_decay=5e-4))
    with training_only(model, adamw_groups):
        _run(model, state, images, labels, cfg, opts, generator, device, per_epoch, total)
    if state.ctx is not None:
        state.ctx = state.ctx.detach().requires_grad_(False)
    if state.adapter is not None:
        state.adapter = state.adapter.detach().requires_grad_(False)
    return state


def _run(model: Any, state: Adapted, images: torch.Tensor, labels: torch.Tensor, cfg: LearnerConfig,
         opts: list[torch.optim.Optimizer], generator: torch.Generator, device: Any, per_epoch: int,
         total: int) -> None:
    n = len(images)
    text = None
    step = 0
    for _epoch in range(cfg.epochs):
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, cfg.batch_size):
            idx = order[start:start + cfg.batch_size]
            x = resized_crop_flip(images[idx].cpu(), generator, cfg.min_crop).to(device)
            y = labels[idx].to(device)
            for opt in opts:  # cosine over all steps; CoOp's prompt keeps 1e-5 for its first epoch
                for g in opt.param_groups:
                    g["lr"] = g["initial_lr"] * 0.5 * (1 + math.cos(math.pi * step / total))
                    if opt is not opts[0] and step < per_epoch:  # a 1-epoch defender: all of it
                        g["lr"] = cfg.coop_warmup_lr
            if text is None or state.kind == "coop" or step % cfg.resample_every == 0:
                text = learner_text(model, state, num_templates=None if state.kind == "coop" else 1,
                                    grad_fraction=cfg.resample_fraction, generator=generator, device=device)
            with autocast(device):
                loss = F.cross_entropy(learner_logits(model, state, x, text, cfg), y)
            for opt in opts:
                opt.zero_grad(set_to_none=True)
            loss.backward()
            for opt in opts:
                opt.step()
            text = text.detach() if state.kind != "coop" else None
            step += 1
    for opt in opts:  # leave no .grad behind (a copied model would carry it)
        opt.zero_grad(set_to_none=True)
