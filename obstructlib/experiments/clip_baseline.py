"""``obstruct clip``: train a CLIP on image-caption pairs and evaluate it (the course's baseline).

Every data-side paper compares against this run: the same recipe on clean data gives the
"clean" row of MEM's table, and notebook 00 uses it to show the engine end to end. A
classification dataset (``cifar10``, ``folder:PATH``) is turned into pairs with CLIP prompt
templates, so zero-shot accuracy is reported beside retrieval.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from obstructlib.data import load_pairs
from obstructlib.engine import ClipTrainConfig, evaluate_clip, fit_clip
from obstructlib.errors import ConfigError, check_range
from obstructlib.experiments import Flag, RunContext, Runner, register_runner
from obstructlib.experiments.common import check_run_folder
from obstructlib.metrics import chance_retrieval
from obstructlib.models import create_clip
from obstructlib.profiles import Profile


@dataclass
class ClipRunConfig:
    """Config of ``obstruct clip``.

    Attributes:
        dataset: caption spec (``csv:PATH``, ``flickr8k``, ...) or a classification spec
            (``cifar10``, ``folder:PATH``) turned into templated captions.
        arch: open_clip architecture or a registered tiny config (``tiny-vit``).
        pretrained: open_clip pretrained tag; None trains from scratch.
        image_size: square input size in pixels.
        max_train_samples: seeded subset of training images (None: all).
        max_test_samples: seeded subset of test images (None: all).
        captions_per_image: templated captions per image (classification data only).
        train: the CLIP training recipe.
        cpu_bf16: bf16 autocast on a CPU with native bf16 (off by default: it moves results by
            rounding, and the quick figures are measured in float32).
    """

    dataset: str = "synthetic-captions"
    arch: str = "tiny-rn"
    pretrained: str | None = None
    image_size: int = 32
    max_train_samples: int | None = 2000
    max_test_samples: int | None = 1000
    captions_per_image: int = 1
    train: ClipTrainConfig = field(default_factory=ClipTrainConfig)

    cpu_bf16: bool = False

    def validate(self) -> None:
        check_range("image_size", self.image_size, 8, 1024)
        check_range("captions_per_image", self.captions_per_image, 1, 100)
        for name in ("max_train_samples", "max_test_samples"):
            value = getattr(self, name)
            if value is not None and value < 2:
                raise ConfigError(f"{name}={value}: use at least 2, or none for the whole split")

    @classmethod
    def for_profile(cls, profile: Profile) -> ClipRunConfig:
        """Defaults scaled to a profile (the only place the profile enters)."""
        return cls(
            dataset=profile.caption_dataset,
            arch=profile.clip_arch,
            pretrained=profile.clip_pretrained,
            image_size=profile.image_size,
            max_train_samples=profile.max_train_samples,
            max_test_samples=profile.max_test_samples,
            train=ClipTrainConfig(steps=profile.train_steps, batch_size=profile.batch_size,
                                  lr=profile.clip_lr, num_workers=profile.num_workers),
        )


def run(cfg: ClipRunConfig, ctx: RunContext) -> dict[str, Any]:
    """Train on the training pairs, evaluate on the test pairs."""
    check_run_folder(cfg, ctx)  # a finished run with another config is refused, not reported as this one
    with ctx.timer("data"):
        train = load_pairs(cfg.dataset, ctx.data_root, "train", image_size=cfg.image_size,
                           max_samples=cfg.max_train_samples, captions_per_image=cfg.captions_per_image,
                           seed=ctx.seed, progress=ctx.progress)
        test = load_pairs(cfg.dataset, ctx.data_root, "test", image_size=cfg.image_size,
                          max_samples=cfg.max_test_samples, seed=ctx.seed, progress=ctx.progress)
    model = create_clip(cfg.arch, cfg.pretrained, device=ctx.device, image_size=cfg.image_size)
    with ctx.timer("train"):
        history = fit_clip(model, train, cfg.train, ctx.device, ckpt_dir=ctx.stage_dir("clip"),
                           progress=ctx.progress)
    with ctx.timer("evaluate"):
        metrics: dict[str, Any] = evaluate_clip(model, test, ctx.device)  # extended below with non-float entries
    per_image = max(1, round(len(test) / test.num_images))
    metrics["chance"] = chance_retrieval(test.num_images, per_image)
    if getattr(test, "classes", None):
        metrics["chance"]["zero_shot_acc"] = 1.0 / len(test.classes)
    metrics["train_loss_final"] = float(history["loss"][-1]) if history.get("loss") else None
    metrics["curves"] = {"step": list(history.get("step", [])), "loss": list(history.get("loss", []))}
    metrics["num_train_pairs"], metrics["num_test_images"] = len(train), test.num_images
    return metrics


register_runner(Runner(
    name="clip",
    help="train a CLIP on image-caption pairs (or templated class captions) "
    "and report retrieval and zero-shot accuracy",
    config_for=ClipRunConfig.for_profile,
    run=run,
    flags=(
        Flag("--dataset", "dataset", "dataset spec: a registered name, folder:PATH, npz:PATH or csv:PATH"),
        Flag("--arch", "arch", "open_clip architecture or tiny config (tiny-vit, tiny-rn, RN50, ViT-B-32)"),
        Flag("--pretrained", "pretrained", "open_clip pretrained tag (none: from scratch)"),
    ),
))
