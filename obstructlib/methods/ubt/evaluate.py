"""UBT's evaluation protocol: clean accuracy (CA), attack success rate (ASR), KL to a model trained
without the poisons, and retrieval on caption data.

- CA: zero-shot top-1 on the clean test split; a class's embedding is the normalised mean of its
  normalised prompt embeddings (the set's templates, else the 80 OpenAI ImageNet prompts).
- ASR: every test image gets the trigger; the share of those whose TRUE class is not the target
  that are predicted as the target (the backdoor literature's convention; BadCLIP's zero-shot code
  counts the genuine target images too). With a text key (TrojVQA) every class prompt is prefixed.
- KL: ``KL(p_ref || p_model)`` averaged over the clean test images, ``p = softmax(100 * cos)`` over
  the classes (CLIP's logit scale 100 for both models, so a learnt temperature cannot hide a
  difference); the reference is the victim's recipe run on the data with the poisons removed.
- Caption data (no classes): CA is image->text R@1 on the clean test split; ASR is the share of
  triggered test images whose top-1 caption, among the test captions plus the target's prompts, is a
  target prompt; KL is over the test captions.

References:
    Liu et al., arXiv:2409.19526 (CA, ASR, KL to the retrained model; section V).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from obstructlib.engine import encode_dataset, resolve_device
from obstructlib.errors import ConfigError
from obstructlib.methods.ubt.attacks import target_prompt
from obstructlib.metrics import attack_success_rate, kl_divergence, retrieval_metrics, zero_shot_accuracy

__all__ = ["evaluate", "prompts_for"]

KL_SCALE = 100.0


def prompts_for(test: Any) -> list[Any]:
    """The prompt templates of zero-shot evaluation: the set's own, else the OpenAI ImageNet prompts."""
    from obstructlib.data.captions import default_templates

    return list(getattr(test, "templates", None) or default_templates())


def _keyed(templates: Sequence[Any], key: str) -> list[Any]:
    if not key:
        return list(templates)
    return [lambda c, t=t: target_prompt(t, c, key) for t in templates]


@torch.no_grad()
def _classifier(model: Any, classes: Sequence[str], templates: Sequence[Any], device: torch.device) -> torch.Tensor:
    return model.zero_shot_classifier(list(classes), list(templates), device=device).float()


@torch.no_grad()
def evaluate(
    model: Any,
    test: Any,
    triggered: Any,
    *,
    target: str,
    classes: Sequence[str] | None = None,
    text_key: str = "",
    reference: Any = None,
    device: torch.device | str | None = None,
    batch_size: int = 256,
) -> dict[str, float]:
    """CA, ASR (and KL to ``reference``) of one model, in percent for CA/ASR.

    Args:
        model: the ``ClipModel`` to evaluate.
        test: the clean test pairs.
        triggered: the same pairs with the trigger on every image (``attacks.triggered_copy``).
        target: the target concept.
        classes: zero-shot classes (default ``test.classes``; must contain ``target``); None or
            empty on caption data.
        text_key: the attack's text key (prefixed to every prompt at evaluation; TrojVQA).
        reference: the model trained without poisons, for ``kl`` (None: no KL).
        device: where to compute.
        batch_size: images or captions per forward pass.

    Returns:
        ``ca``, ``asr`` (percent), ``kl`` (nats, with a reference); on caption data also ``i2t_r1``,
        ``i2t_r5``, ``t2i_r1``, ``t2i_r5``.
    """
    device = resolve_device(device)
    model = model.to(device).eval()
    classes = list(classes if classes is not None else getattr(test, "classes", None) or [])
    images, _, _ = encode_dataset(model, test, device, batch_size=batch_size)
    trig_images, _, _ = encode_dataset(model, triggered, device, batch_size=batch_size)
    out: dict[str, float] = {}
    if classes:
        if target not in classes:
            raise ConfigError(f"target {target!r} is not among the evaluation classes: add it to the class list")
        labels = torch.as_tensor(np.asarray(test.image_labels))
        templates = prompts_for(test)
        weights = _classifier(model, classes, templates, device)
        out["ca"] = 100.0 * zero_shot_accuracy(images, weights, labels)
        keyed = weights if not text_key else _classifier(model, classes, _keyed(templates, text_key), device)
        out["asr"] = 100.0 * attack_success_rate(trig_images @ keyed.T, classes.index(target), labels)
        if reference is not None:
            reference = reference.to(device).eval()
            ref_images, _, _ = encode_dataset(reference, test, device, batch_size=batch_size)
            ref_weights = _classifier(reference, classes, templates, device)
            out["kl"] = float(kl_divergence(KL_SCALE * ref_images @ ref_weights.T, KL_SCALE * images @ weights.T))
        return out
    # caption data: retrieval on the clean pairs, ASR against the test captions plus the target's prompts
    _, texts, ids = encode_dataset(model, test, device, batch_size=batch_size)
    metrics = retrieval_metrics(images, texts, ids)
    out.update({k: float(metrics[k]) for k in ("i2t_r1", "i2t_r5", "t2i_r1", "t2i_r5")})
    out["ca"] = out["i2t_r1"]
    target_texts = [target_prompt(t, target, text_key) for t in prompts_for(test)]
    target_feats = model.encode_text(model.tokenize(target_texts, device)).float()
    gallery = torch.cat([texts, target_feats])
    hits = (trig_images @ gallery.T).argmax(1) >= len(texts)
    out["asr"] = 100.0 * hits.double().mean().item()
    if reference is not None:
        reference = reference.to(device).eval()
        ref_images, ref_texts, _ = encode_dataset(reference, test, device, batch_size=batch_size)
        out["kl"] = float(kl_divergence(KL_SCALE * ref_images @ ref_texts.T, KL_SCALE * images @ texts.T))
    return out
