"""``obstruct uc``: protect a training set, let a hacker relabel and train on it, report clean test accuracy.

The Unlearnable Clusters experiment (Zhang et al., arXiv:2301.01217), with its baselines:

1. the protector perturbs the training images with ``--method``: ``uc`` (K-means clusters of a
   surrogate's features, one generator-made noise per cluster; surrogate ``rn50``), ``uc-clip``
   (the same with a CLIP image encoder), ``em-sample`` / ``em-class`` (Huang et al.'s
   error-minimising noise, crafted with the protector's labels: the original classes, or under
   ``--labels finer`` a coarse grouping), ``tap`` (targeted adversarial poisons against a clean
   model trained on the protector's labels) or ``random`` (uniform noise);
2. the hacker relabels the images with ``--labels`` (``original``, ``coarse`` superclasses, a
   seeded ``random-N`` grouping, or ``finer``/``finer-N``: the protector knows only a coarse
   grouping and the hacker trains on every class; see :mod:`obstructlib.data.labels`), optionally applies a
   ``--countermeasure`` (JPEG, grayscale, cutout, mixup, PGD adversarial training), and trains a
   FRESH ``--target-model`` on the protected images -- noise added on the fly and the result
   quantised to 8 bits, exactly what an exported PNG holds -- with the paper's SGD recipe;
3. the same recipe on the clean images gives the ``clean`` row; both are evaluated on the CLEAN
   test set under the hacker's labels. Lower protected accuracy (closer to ``chance``) is better.
   ``hackers`` independent hackers (initial weights and data order from their own streams, never
   the protector's: :func:`~obstructlib.experiments.common.hacker_seeds`) each train both rows;
   the rows report their mean, ``*_sd`` their spread, ``hackers`` each one.

Every stage resumes from ``OUT/checkpoints``: the finished store (``store/``), the protection's
own checkpoints (``protector/``) and each hacker's two target trainings (``hacker<i>/clean/``,
``hacker<i>/protected/``).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from obstructlib.config import check_linked, link
from obstructlib.data import LabelledSubset, PerturbationStore, ProtectedDataset, load_dataset, seeded_subset
from obstructlib.data.labels import parse_protocol, protector_protocol, relabel_dataset
from obstructlib.data.wrappers import labels_of
from obstructlib.engine import ClassifierTrainConfig, fit_classifier
from obstructlib.errors import ConfigError, check_range
from obstructlib.experiments import Flag, RunContext, Runner, register_runner
from obstructlib.experiments.common import check_run_folder, hacker_seeds, mean_and_sd, require_classes
from obstructlib.methods.uc.evaluate import HackerConfig, evaluate
from obstructlib.methods.uc.method import UCConfig, protect
from obstructlib.methods.uc.surrogates import pretrain_surrogate
from obstructlib.models import create_model
from obstructlib.primitives.augment import pad_crop_flip
from obstructlib.primitives.countermeasures import (
    COUNTERMEASURES,
    AdvTrainConfig,
)
from obstructlib.primitives.countermeasures import (
    REGISTRY as COUNTERMEASURE_REGISTRY,
)
from obstructlib.primitives.poisons import (
    ErrorMaxConfig,
    ErrorMinConfig,
    error_maximizing_noise,
    error_minimizing_noise,
    random_noise_store,
)
from obstructlib.primitives.simclr import SimCLRConfig
from obstructlib.profiles import Profile
from obstructlib.registry import Registry

# What the quick (2-core CPU, minutes) profile changes; the paper values are the UCConfig defaults.
# lr is raised because the budget is tiny (spec Sec. 4.2).
UC_QUICK: dict[str, Any] = {
    "epochs": 3,
    "lr": 1e-3,
    "ngf": 16,
    "n_blocks": 2,
    "batch_size": 128,
    "kmeans_n_init": 3,
}


@dataclass
class UCRunConfig:
    """Config of ``obstruct uc``.

    Attributes:
        dataset: classification spec (``synthetic``, ``cifar10``, ``cifar100``, ``folder:PATH`` ...).
        method: the protection, one of ``uc``, ``uc-clip``, ``em-sample``, ``em-class``, ``tap``, ``random``.
        target_model: the hacker's classifier, trained from scratch (:func:`~obstructlib.models.create_model`).
        labels: the label protocol (:mod:`obstructlib.data.labels`): ``original``, ``coarse``,
            ``random-N`` (the hacker merges classes) or ``finer`` / ``finer-N`` (EM and TAP are
            crafted with a coarse grouping, the hacker trains on every class).
        label_seed: seed of the ``random-N`` / ``finer-N`` grouping.
        hackers: independent hackers, each training a clean and a protected target (at least 3 for
            a figure one reports).
        hacker_seed: base of the hackers' seeds: hacker ``i`` builds its models and orders its data
            with ``derive_seed(hacker_seed, "hacker", i)``, a stream the protector never uses; None:
            the run's ``--seed`` (which draws the subset and the protection). Set it to draw other
            hackers for the same protected data. (``target_seed`` is its old name.)
        countermeasure: ``none``, ``jpeg``, ``grayscale``, ``cutout``, ``mixup`` or ``adv``; applied
            to the clean row as well, so ``acc_drop`` measures the protection, not the defence.
        image_size: square side in pixels.
        max_train_samples: seeded, class-stratified training subset (None: all).
        max_test_samples: the same for the test split.
        eps: L-inf budget of every method, in [0, 1] pixel units (paper: 16/255); it is copied
            into ``uc.eps``, ``em.eps`` and ``tap.eps`` when set (the one budget of the comparison;
            a sub-config budget that differs is refused).
        augment: random crop (padding 1/8 of the side) and horizontal flip while the target
            trains, as the paper's recipe does (resize + random crop + flip).
        surrogate: UC's feature extractor for ``--method uc`` (paper: ``rn50``, ImageNet weights).
        clip_surrogate: the same for ``--method uc-clip`` (paper: ``clip:RN50``, OpenAI weights).
        surrogate_epochs: epochs of training a surrogate on the protector's images first, a
            stand-in for a pretrained network where none can be downloaded: ``simclr:ARCH`` (the
            label-free surrogate, SimCLR with the ``simclr`` recipe; reads no label) or
            ``classifier:ARCH`` (the label-aware surrogate, supervised on the protector's labels:
            its clusters follow the classes, which UC's protector is not meant to know); 0 keeps it
            as built (see :func:`~obstructlib.methods.uc.surrogates.pretrain_surrogate`).
        simclr: the SimCLR recipe of a ``simclr:ARCH`` surrogate (``epochs`` is ``surrogate_epochs``).
        uc: Unlearnable Clusters settings (clusters, generator, its training; ``uc.surrogate`` and
            ``uc.eps`` are ``surrogate`` and ``eps``; ``uc-clip`` uses ``clip_surrogate`` instead;
            ``uc.seed`` is the run's ``--seed``).
        protector_model: classifier EM trains and TAP attacks (TAP trains it first with ``train``).
        em: error-minimising noise recipe (``eps`` is overridden by the top-level ``eps``).
        tap: adversarial-poison recipe (``eps`` likewise).
        jpeg_quality: quality for ``--countermeasure jpeg`` (ISS: 10).
        cutout_size: square side in pixels for ``cutout``.
        mixup_alpha: Beta parameter for ``mixup``.
        adv: PGD adversarial training for ``adv`` (8/255, few steps).
        train: the target recipe (paper: SGD 0.9, lr 0.1, wd 5e-4, cosine, 90 epochs, batch 512).
        cpu_bf16: bf16 autocast on a CPU with native bf16 (off by default: it moves results by
            rounding, and the quick figures are measured in float32).
    """

    dataset: str = "synthetic"
    method: str = "uc"
    target_model: str = "resnet20"
    labels: str = "original"
    label_seed: int = 0
    hackers: int = 1
    hacker_seed: int | None = None
    countermeasure: str = "none"
    image_size: int = 32
    max_train_samples: int | None = 2000
    max_test_samples: int | None = 1000
    eps: float = 16 / 255
    augment: bool = True
    surrogate: str = "rn50"
    clip_surrogate: str = "clip:RN50"
    surrogate_epochs: int = 0
    simclr: SimCLRConfig = field(default_factory=SimCLRConfig)
    uc: UCConfig = field(default_factory=UCConfig)
    protector_model: str = "resnet20"
    em: ErrorMinConfig = field(default_factory=ErrorMinConfig)
    tap: ErrorMaxConfig = field(default_factory=ErrorMaxConfig)
    jpeg_quality: int = 10
    cutout_size: int = 8
    mixup_alpha: float = 1.0
    adv: AdvTrainConfig = field(default_factory=AdvTrainConfig)
    train: ClassifierTrainConfig = field(default_factory=ClassifierTrainConfig)

    # One value, written to each place that uses it by --set (config.LINKED); validate refuses a mismatch.
    LINKED: ClassVar[dict[str, tuple[str, ...]]] = {"eps": ("uc.eps", "em.eps", "tap.eps"),
                                                     "surrogate": ("uc.surrogate",)}
    ALIASES: ClassVar[dict[str, tuple[str, ...]]] = {"target_seed": ("hacker_seed",)}

    cpu_bf16: bool = False

    def validate(self) -> None:
        """Raise one-line :class:`ConfigError` for bad values (before anything runs)."""
        PROTECTIONS.get(self.method, "method")  # one line listing the registered protections
        parse_protocol(self.labels)
        if self.countermeasure not in COUNTERMEASURES:
            raise ConfigError(f"countermeasure={self.countermeasure!r}: use one of {', '.join(COUNTERMEASURES)}")
        check_range("eps", self.eps, 0.0, 127 / 255)
        check_range("image_size", self.image_size, 8, 1024)
        check_range("hackers", self.hackers, 1, 100)
        check_range("jpeg_quality", self.jpeg_quality, 1, 100)
        check_range("cutout_size", self.cutout_size, 1, self.image_size)
        check_range("mixup_alpha", self.mixup_alpha, 1e-6, 100.0)
        for name in ("max_train_samples", "max_test_samples"):
            value = getattr(self, name)
            if value is not None and value < 2:
                raise ConfigError(f"{name}={value}: use at least 2, or none for the whole split")
        if self.method in ("uc", "uc-clip") and self.max_train_samples is not None \
                and self.uc.num_clusters > self.max_train_samples:
            raise ConfigError(f"uc.num_clusters={self.uc.num_clusters} exceeds max_train_samples="
                              f"{self.max_train_samples}: use fewer clusters or more images")
        if self.surrogate_epochs < 0:
            raise ConfigError(f"surrogate_epochs={self.surrogate_epochs}: use 0 or more")
        check_linked(self)  # one budget for every method; uc.surrogate is surrogate
        if self.method in ("uc", "uc-clip"):
            self.uc.validate()
        self.em.validate()
        self.tap.validate()
        self.adv.validate()
        self.simclr.validate()
        self.train.validate()

    @classmethod
    def for_profile(cls, profile: Profile) -> UCRunConfig:
        """Defaults scaled to a profile (the only place the profile enters).

        - quick (CPU, offline, minutes): scikit-learn's handwritten digits (1,438 training and 359
          test images, embedded, no download) at 16 px, with the 25 k-parameter ``digits_cnn`` as
          the hacker's target for the profile's 10 epochs at batch 128. No pretrained weights exist
          offline, and UC's protector has no labels, so UC's surrogate is ``simclr:digits_cnn``:
          a digits_cnn whose encoder is pre-trained 10 epochs with SimCLR on the protector's own
          images, never reading a label (``classifier:digits_cnn`` is the label-aware alternative:
          supervised on the labels, its clusters are the classes). UC-CLIP's surrogate is a
          randomly initialised ``clip:tiny-rn`` (an explicitly weaker surrogate); generators from
          ``UC_QUICK`` (ngf 16, 2 blocks, 3 epochs, Adam 1e-3: the spec's small-budget
          deviation); EM with 2/255 steps, 10 rounds. Measured with 3 independent hackers: clean
          93.2 +- 0.9 %, UC 60.5 +- 4.6 % (chance 10 %), clusters against digits NMI 0.71.
        - colab (one GPU): CIFAR-10 at 32 px, 20,000 images (``--dataset cifar100 --labels coarse``
          for the 100 -> 20 experiment), ResNet-18 target for 30 epochs; ImageNet ``rn50`` seeing
          224 px and OpenAI ``clip:RN50`` surrogates; generators ngf 32, 4 blocks, 10 epochs.
        - paper: the spec's settings at 224 px on all images (pass ``--dataset folder:PETS`` etc.),
          ResNet-18 target, 90 epochs SGD lr 0.1 batch 512, generators ngf 64, 6 blocks, 50 epochs,
          Adam 1e-4, ``rn50`` / ``clip:RN50`` with the paper's weights.
        """
        recipe = ClassifierTrainConfig(epochs=profile.epochs, batch_size=profile.batch_size, lr=0.1,
                                       momentum=0.9, weight_decay=5e-4, scheduler="cosine",
                                       num_workers=profile.num_workers)
        return link(_PROFILE_TABLE[profile.name](cls, profile, recipe))


def _quick(cls: type, profile: Profile, recipe: ClassifierTrainConfig) -> UCRunConfig:
    return cls(
        dataset="digits", target_model="digits_cnn", image_size=16,
        max_train_samples=profile.max_train_samples, max_test_samples=profile.max_test_samples,
        surrogate="simclr:digits_cnn", clip_surrogate="clip:tiny-rn", surrogate_epochs=10,
        simclr=SimCLRConfig(batch_size=128, temperature=0.2),
        uc=UCConfig(surrogate_pretrained=None, **UC_QUICK),
        protector_model="digits_cnn",
        em=ErrorMinConfig(step_size=2 / 255, steps=10, max_rounds=10, batch_size=128),
        tap=ErrorMaxConfig(steps=20, batch_size=128),
        train=recipe,
    )


def _colab(cls: type, profile: Profile, recipe: ClassifierTrainConfig) -> UCRunConfig:
    return cls(
        dataset="cifar10", target_model="resnet18", image_size=32,
        max_train_samples=profile.max_train_samples, max_test_samples=profile.max_test_samples,
        uc=UCConfig(surrogate_image_size=224, ngf=32, n_blocks=4, epochs=10),
        protector_model="resnet18", em=ErrorMinConfig(step_size=2 / 255), train=recipe,
    )


def _paper(cls: type, profile: Profile, recipe: ClassifierTrainConfig) -> UCRunConfig:
    return cls(
        dataset=profile.image_dataset, target_model="resnet18", image_size=224,
        max_train_samples=None, max_test_samples=None, protector_model="resnet18",
        em=ErrorMinConfig.paper("sample"),
        train=dataclasses.replace(recipe, epochs=90, batch_size=512),
    )


# The profile table: profile name -> the runner's defaults in that profile (no branches elsewhere).
_PROFILE_TABLE = {"quick": _quick, "colab": _colab, "paper": _paper}


def resolve(cfg: UCRunConfig, seed: int) -> UCRunConfig:
    """The config as it runs: the protector's seeds are the run's ``--seed``; the hacker recipe's
    ``train.seed`` is the first hacker's seed (each hacker's is in ``metrics.hackers``)."""
    cfg = copy.deepcopy(cfg)
    cfg.uc.seed = cfg.em.seed = cfg.tap.seed = cfg.simclr.seed = seed
    cfg.train.seed = hacker_seeds(seed, cfg.hacker_seed, 1)[0]
    return cfg


# ---- data ------------------------------------------------------------------------------------
def _augment(cfg: UCRunConfig) -> Any:
    return pad_crop_flip if cfg.augment else None


def _load_split(cfg: UCRunConfig, ctx: RunContext, split: str, max_samples: int | None) -> LabelledSubset:
    ds = load_dataset(cfg.dataset, ctx.data_root, split, image_size=cfg.image_size, channels=3,
                      progress=ctx.progress)
    return seeded_subset(require_classes(ds, cfg.dataset), max_samples, seed=ctx.seed)


# ---- protection ------------------------------------------------------------------------------
# The protections, name -> protect(cfg, ctx, train, work) -> (store, info); the runner dispatches by lookup.
PROTECTIONS: Registry = Registry("protection")
Protection = Callable[[Any, RunContext, LabelledSubset, Any], tuple[PerturbationStore, dict[str, Any]]]


@PROTECTIONS.register("random")
def _protect_random(cfg: UCRunConfig, ctx: RunContext, train: LabelledSubset, work: Path | None) -> tuple:
    """Uniform noise in the eps-ball (the "noise alone does nothing" baseline)."""
    with ctx.timer("noise_generation"):
        store = random_noise_store(len(train), tuple(train[0][0].shape), cfg.eps, seed=ctx.seed)
    return store, {}


def _protector_recipe(cfg: UCRunConfig, ctx: RunContext) -> ClassifierTrainConfig:
    """The target recipe for the protector's own models, with the protector's data order (``--seed``)."""
    return dataclasses.replace(cfg.train, seed=ctx.seed)


def _protect_em(cfg: UCRunConfig, ctx: RunContext, train: LabelledSubset, work: Path | None, mode: str) -> tuple:
    model = create_model(cfg.protector_model, num_classes=len(train.classes))
    with ctx.timer("noise_generation"):
        store = error_minimizing_noise(model, train, cfg.em, ctx.device, mode=mode, progress=ctx.progress,
                                       ckpt_dir=work)
    return store, {}


@PROTECTIONS.register("em-sample")
def _protect_em_sample(cfg: UCRunConfig, ctx: RunContext, train: LabelledSubset, work: Path | None) -> tuple:
    """Sample-wise error-minimising noise (arXiv 2101.04898), crafted with the protector's labels."""
    return _protect_em(cfg, ctx, train, work, "sample")


@PROTECTIONS.register("em-class")
def _protect_em_class(cfg: UCRunConfig, ctx: RunContext, train: LabelledSubset, work: Path | None) -> tuple:
    """Class-wise error-minimising noise (arXiv 2101.04898), crafted with the protector's labels."""
    return _protect_em(cfg, ctx, train, work, "class")


@PROTECTIONS.register("tap")
def _protect_tap(cfg: UCRunConfig, ctx: RunContext, train: LabelledSubset, work: Path | None) -> tuple:
    """Targeted adversarial poisons (arXiv 2106.10807) against a model trained on the protector's labels."""
    model = create_model(cfg.protector_model, num_classes=len(train.classes))
    with ctx.timer("protector_training"):
        hist = fit_classifier(model, ProtectedDataset(train, None, augment=_augment(cfg)), None,
                              _protector_recipe(cfg, ctx), ctx.device,
                              ckpt_dir=None if work is None else work / "clean_model", progress=ctx.progress)
    with ctx.timer("noise_generation"):
        store = error_maximizing_noise(model, train, cfg.tap, ctx.device, targeted=True, progress=ctx.progress,
                                       ckpt_dir=None if work is None else work / "noise")
    return store, {"protector_train_acc": hist["train_acc"][-1]}


def _protect(cfg: UCRunConfig, ctx: RunContext, train: LabelledSubset) -> tuple[PerturbationStore, dict[str, Any]]:
    """Run ``cfg.method`` on ``train`` under the protector's labels of ``cfg.labels`` (read by EM, TAP
    and a label-aware surrogate; UC and random noise read none). Its models are built from the
    run's ``--seed``, a stream no hacker uses."""
    known = relabel_dataset(train, protector_protocol(cfg.labels), seed=cfg.label_seed)
    torch.manual_seed(ctx.seed)
    return PROTECTIONS.get(cfg.method)(cfg, ctx, known, ctx.stage_dir("protector"))


@PROTECTIONS.register("uc")
def _protect_uc(
    cfg: UCRunConfig, ctx: RunContext, train: LabelledSubset, work: Path | None
) -> tuple[PerturbationStore, dict]:
    """Unlearnable Clusters (arXiv 2301.01217): k-means of surrogate features, one generator per cluster."""
    uc_cfg = dataclasses.replace(cfg.uc, surrogate=cfg.clip_surrogate) if cfg.method == "uc-clip" else cfg.uc
    with ctx.timer("surrogate_training"):  # None: protect() builds it from uc_cfg.surrogate
        surrogate = pretrain_surrogate(uc_cfg.surrogate, train, num_classes=len(train.classes),
                                       epochs=cfg.surrogate_epochs, recipe=_protector_recipe(cfg, ctx),
                                       simclr=cfg.simclr, device=ctx.device,
                                       augment=_augment(cfg), progress=ctx.progress,
                                       ckpt_dir=None if work is None else work / "surrogate")
    start = time.perf_counter()
    result = protect(train, uc_cfg, surrogate=surrogate, device=ctx.device,
                     ckpt_dir=None if work is None else work / "uc", progress=ctx.progress)
    total = time.perf_counter() - start
    # The paper's two stages: features + K-means, then one generator per cluster.
    generators = float(sum(result.timings_s))
    for key, value in (("clustering", total - generators), ("generator_training", generators)):
        ctx.timings_s[key] = round(ctx.timings_s.get(key, 0.0) + max(0.0, value), 3)
    info = {"surrogate": result.surrogate, "cluster_sizes": result.cluster_sizes,
            "generator_final_loss": [float(v) for v in result.losses],
            "generator_first_epoch_loss": [float(h[0]) for h in result.loss_history if h]}
    return result.store, info


@PROTECTIONS.register("uc-clip")
def _protect_uc_clip(cfg: UCRunConfig, ctx: RunContext, train: LabelledSubset, work: Path | None) -> tuple:
    """Unlearnable Clusters with a CLIP image encoder as the surrogate (``clip_surrogate``)."""
    return _protect_uc(cfg, ctx, train, work)


def _stored_protection(
    cfg: UCRunConfig, ctx: RunContext, train: LabelledSubset
) -> tuple[PerturbationStore, dict, bool]:
    """The finished store of this run folder, or a new one (saved before the target trains)."""
    folder = ctx.stage_dir("store")
    if folder is not None and (folder / "store.npy").is_file() and (folder / "protect.json").is_file():
        meta = json.loads((folder / "protect.json").read_text())
        return PerturbationStore.load(folder / "store.npy"), meta.get("info", {}), True
    store, info = _protect(cfg, ctx, train)
    if folder is not None:
        store.save(folder / "store.npy")
        payload = {"method": cfg.method, "num_samples": len(train), "info": info}
        (folder / "protect.json").write_text(json.dumps(payload, default=_jsonable))  # written last: the marker
    return store, info, False


def _jsonable(obj: Any) -> Any:
    return obj.tolist() if hasattr(obj, "tolist") else str(obj)


# ---- the hacker ------------------------------------------------------------------------------
def _hacker(cfg: UCRunConfig, seed: int) -> HackerConfig:
    """Hacker ``seed``: its clean and protected rows start from the same weights and data order."""
    return HackerConfig(
        target_model=cfg.target_model, labels=cfg.labels, label_seed=cfg.label_seed,
        countermeasure=cfg.countermeasure, augment=cfg.augment, jpeg_quality=cfg.jpeg_quality,
        cutout_size=cfg.cutout_size, mixup_alpha=cfg.mixup_alpha, adv=cfg.adv,
        train=cfg.train, seed=seed,  # the seed sets the initial weights and the data order
    )


def _mean_row(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One row of the table: the hackers' mean test/train accuracy and curve, and their spread."""
    mean, sd = mean_and_sd([{k: r[k] for k in ("test_acc", "train_acc") if r[k] is not None} for r in runs])
    curve = np.mean([r["curve"] for r in runs], axis=0).tolist()
    return {**mean, "train_acc": mean.get("train_acc"), "test_acc_sd": sd["test_acc"], "curve": curve}


def run(cfg: UCRunConfig, ctx: RunContext) -> dict[str, Any]:
    """Protect, relabel, train clean and protected targets per hacker, evaluate on the clean test set."""
    check_run_folder(cfg, ctx)
    with ctx.timer("data"):
        train = _load_split(cfg, ctx, "train", cfg.max_train_samples)
        test = _load_split(cfg, ctx, "test", cfg.max_test_samples)
        # Relabel first: a bad --labels for this dataset fails before any expensive stage.
        relabel_dataset(train, cfg.labels, seed=cfg.label_seed)
        relabel_dataset(train, protector_protocol(cfg.labels), seed=cfg.label_seed)
    if cfg.method in ("uc", "uc-clip") and cfg.uc.num_clusters > len(train):
        raise ConfigError(f"uc.num_clusters={cfg.uc.num_clusters} exceeds the {len(train)} training images: lower it")
    if cfg.train.batch_size > len(train):
        raise ConfigError(f"train.batch_size={cfg.train.batch_size} exceeds the {len(train)} training images: lower it")
    store, info, resumed = _stored_protection(cfg, ctx, train)
    runs: dict[str, list[dict[str, Any]]] = {"clean": [], "protected": []}
    per_hacker = []
    for i, seed in enumerate(hacker_seeds(ctx.seed, cfg.hacker_seed, cfg.hackers)):
        hacker, folder = _hacker(cfg, seed), ctx.stage_dir(f"hacker{i}")
        with ctx.timer("target_training"):
            for row, noise in (("clean", None), ("protected", store)):
                runs[row].append(evaluate(train, hacker, test=test, store=noise, device=ctx.device,
                                          ckpt_dir=None if folder is None else folder / row, progress=ctx.progress))
        per_hacker.append({"seed": seed, "clean": runs["clean"][-1]["test_acc"],
                           "protected": runs["protected"][-1]["test_acc"]})
    drops = [h["clean"] - h["protected"] for h in per_hacker]
    if store.mode == "cluster":  # how class-like the protector's clusters are (measured, never used to protect)
        truth = labels_of(train)
        from sklearn.metrics import normalized_mutual_info_score  # here: importing the runners needs no sklearn

        info = {**info, "cluster_class_nmi": float(normalized_mutual_info_score(truth, store.assignments))}
    first = runs["clean"][0]
    return {
        "clean": _mean_row(runs["clean"]),
        "protected": _mean_row(runs["protected"]),
        "chance": first["chance"],
        "acc_drop": float(np.mean(drops)),
        "acc_drop_sd": float(np.std(drops, ddof=1)) if len(drops) > 1 else 0.0,
        "hackers": per_hacker,
        "noise_linf": float(np.abs(store.data.astype(np.int16)).max()) / 255.0 if store.data.size else 0.0,
        "eps": store.eps_units / 255.0,
        "method": cfg.method,
        "labels": cfg.labels,
        "protector_labels": protector_protocol(cfg.labels),
        "countermeasure": cfg.countermeasure,
        "num_classes_original": len(train.classes),
        "num_classes_hacker": first["num_classes"],
        "label_mapping": first["label_mapping"],
        "num_train": len(train),
        "num_test": len(test),
        "store_mode": store.mode,
        "store_resumed": resumed,
        "protection": info,
    }


register_runner(Runner(
    name="uc",
    help="Unlearnable Clusters and baselines: protect, relabel (label-agnostic hacker), train a target, "
    "report clean test accuracy",
    config_for=UCRunConfig.for_profile,
    run=run,
    resolve=resolve,
    registries={"method": PROTECTIONS, "countermeasure": COUNTERMEASURE_REGISTRY},
    flags=(
        Flag("--dataset", "dataset", "classification dataset spec: a registered name or folder:PATH"),
        Flag("--method", "method", "protection (help: list them)"),
        Flag("--target-model", "target_model", "the hacker's classifier (resnet20, resnet18, digits_cnn ...)"),
        Flag("--labels", "labels",
             "label protocol: original, coarse, random-N (the hacker merges), finer[-N] (the protector's are coarse)"),
        Flag("--countermeasure", "countermeasure", "the hacker's defence: " + ", ".join(COUNTERMEASURES)),
    ),
))
