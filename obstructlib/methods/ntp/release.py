"""NTP's released artefact, the attacker's fine-tuning and the magnitude-pruning baseline.

- :func:`save_released` / :func:`load_released`: what the owner publishes, the encoder with its
  zeros, the masks and the source head, as safetensors a user can load.
- :func:`finetune`: the attack at one sample budget, a fresh copy of the released model (encoder
  and head) fine-tuned with the masks kept (the paper's attack) or dense (pruned weights regrow).
- :func:`magnitude_prune` (with :func:`~obstructlib.primitives.pruning.magnitude_masks`): pruning alone,
  the weak barrier NTP improves on.

References:
    Ding et al., Non-transferable Pruning, ECCV 2024, arXiv:2410.08015.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file, save_model

from obstructlib.data import SizedDataset
from obstructlib.engine import ClassifierTrainConfig, fit_classifier, resolve_device
from obstructlib.errors import ConfigError, reading
from obstructlib.models import ImageClassifier, create_model
from obstructlib.primitives.pruning import Masks, magnitude_masks, mask_parametrize, remove_mask_parametrize

__all__ = ["finetune", "load_released", "magnitude_prune", "save_released"]


# ---- baselines and the attacker --------------------------------------------------------------
def finetune(model: ImageClassifier, masks: Masks | None, train_set: SizedDataset, recipe: ClassifierTrainConfig,
             device: torch.device | str | None, *, ckpt_dir: str | os.PathLike | None = None,
             progress: bool = False) -> ImageClassifier:
    """Fine-tune a COPY of ``model`` (encoder and head), keeping ``masks`` applied if given.

    With masks, the pruned entries are parametrised as ``weight * mask`` for the whole run (the
    paper's mask-preserving attack); with ``masks=None`` every weight may move and pruned zeros
    may regrow (dense fine-tuning, never evaluated by the paper). The copy is returned with the
    masks baked in (plain parameters).

    Args:
        model: the model to attack (not changed).
        masks: pruning masks of ``model.encoder``, or None for a dense fine-tune.
        train_set: labelled images in [0, 1].
        recipe: the fine-tuning recipe (its batch size is capped at the number of images).
        device: where to train.
        ckpt_dir: checkpoint directory of :func:`~obstructlib.engine.fit_classifier` (resumable).
        progress: show bars.
    """
    attacked = copy.deepcopy(model)
    for p in attacked.parameters():
        p.requires_grad_(True)
    if masks is not None:
        mask_parametrize(attacked.encoder, masks)
    bs = min(recipe.batch_size, len(train_set))
    fit_classifier(attacked, train_set, None, dataclasses.replace(recipe, batch_size=bs), device,
                   ckpt_dir=ckpt_dir, progress=progress)
    remove_mask_parametrize(attacked.encoder)
    return attacked.eval()


def magnitude_prune(model: ImageClassifier, source_set: SizedDataset, sparsity: float, recipe: ClassifierTrainConfig,
                    device: torch.device | str | None, *, include_bn: bool = True,
                    ckpt_dir: str | os.PathLike | None = None, progress: bool = False) -> tuple[ImageClassifier, Masks]:
    """The "pruning alone" baseline: one-shot global magnitude masks, then masked fine-tuning on S.

    The official baseline prunes iteratively; one shot followed by the same source fine-tune is
    the simpler variant of the same idea (deliberate simplification).

    Returns:
        ``(pruned copy, masks)``.
    """
    masks = magnitude_masks(model.encoder, sparsity, include_bn)
    return finetune(model, masks, source_set, recipe, device, ckpt_dir=ckpt_dir, progress=progress), masks


# ---- the released artefact -------------------------------------------------------------------
def save_released(out_dir: str | os.PathLike, model: ImageClassifier, masks: Masks | None,
                  model_kwargs: dict[str, Any] | None = None, info: dict[str, Any] | None = None) -> Path:
    """Write what the owner releases: ``model.safetensors`` (encoder with zeros + source head),
    ``masks.safetensors`` (uint8, keyed by encoder parameter name) and ``released.json``.

    Args:
        out_dir: folder to write (created).
        model: the pruned model (built by :func:`~obstructlib.models.create_model`).
        masks: its masks (None for an unpruned release, e.g. NTL).
        model_kwargs: the builder's keyword arguments, so :func:`load_released` can rebuild it.
        info: anything else to record (method, sparsity ...).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_model(model, str(out / "model.safetensors"))
    save_file({k: v.to(torch.uint8).contiguous().cpu() for k, v in (masks or {}).items()},
              str(out / "masks.safetensors"))
    meta = {"arch": model.arch, "num_classes": model.num_classes, "model_kwargs": model_kwargs or {},
            "info": info or {}}
    (out / "released.json").write_text(json.dumps(meta, indent=1, default=str))
    return out


def load_released(
    out_dir: str | os.PathLike, device: torch.device | str | None = None
) -> tuple[ImageClassifier, Masks]:
    """Rebuild a released model and its masks from :func:`save_released`'s folder.

    Returns:
        ``(model in eval mode on device, masks)`` (masks empty for an unpruned release).
    """
    out = Path(out_dir)
    if not (out / "released.json").is_file():
        raise ConfigError(f"{out} holds no released.json: point to a folder written by save_released")
    again = f"write the release again (its folder {out} is damaged)"
    with reading(out / "released.json", remedy=again):
        meta = json.loads((out / "released.json").read_text())
        model = create_model(meta["arch"], meta["num_classes"], **meta["model_kwargs"])
    with reading(out / "model.safetensors", remedy=again):
        state = load_file(str(out / "model.safetensors"))
    model.load_state_dict(state, strict=True)
    with reading(out / "masks.safetensors", remedy=again):
        masks = {k: v.bool() for k, v in load_file(str(out / "masks.safetensors")).items()}
    return model.to(resolve_device(device)).eval(), masks
