"""``obstruct ntp``: prune a source model so that it is a bad start on a target domain, then attack it.

The Non-Transferable Pruning experiment (Ding et al., arXiv:2410.08015) with its baselines:

1. train the source model on ``--source`` (stage 0), record its source test accuracy;
2. protect it with ``--method``: ``ntp`` (target head on frozen features, then ADMM pruning
   with the non-transferable loss and the Fisher regulariser), ``ntl-admm`` (the same ADMM with
   the NTL-style MMD loss), ``sparsity`` (the same ADMM with alpha = lambda = 0), ``magnitude``
   (global magnitude pruning + source fine-tuning) or ``ntl`` (Wang et al.'s dense NTL training);
   the released artefact (encoder with zeros, masks, source head) goes to ``OUT/released``;
3. the attacker's sample-wise learning curves on ``--target``: for each budget of a log grid, a
   fresh copy of the released model is fine-tuned (encoder and head) with the masks kept
   (``masked``, the paper's attack) or with pruned weights free to regrow (``dense``); the same
   recipe trains a model from scratch (the reference) and fine-tunes the unprotected source
   model (``transfer``). One selection rule for every curve: final-epoch accuracy on the target
   test set (the official code mixed best-epoch and final-epoch numbers and carried the head
   over between budgets; neither is done here);
4. SLC-AUC of each curve against scratch (log10 by default; ln values alongside), and the
   released model's source accuracy before and after source fine-tuning.

Every stage resumes from ``OUT/checkpoints``; each finished curve point is kept in
``checkpoints/curves.json``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import torch

from obstructlib.data import ArrayImageDataset, SizedDataset, load_domain, split_style
from obstructlib.engine import ClassifierTrainConfig, fit_classifier
from obstructlib.errors import ConfigError, check_range
from obstructlib.experiments import Flag, RunContext, Runner, register_runner
from obstructlib.experiments.common import check_run_folder, derive_seed, require_classes
from obstructlib.methods.ntp.curves import accuracy, budget_subset
from obstructlib.methods.ntp.evaluate import ATTACKS, DEFAULT_RATIOS, AttackConfig, evaluate
from obstructlib.methods.ntp.method import LOSSES, NTPConfig, prune, train_target_head
from obstructlib.methods.ntp.ntl import NTLConfig, train_ntl
from obstructlib.methods.ntp.release import load_released, magnitude_prune, save_released
from obstructlib.models import create_model
from obstructlib.primitives.pruning import sparsity_report
from obstructlib.primitives.simclr import SimCLRConfig, simclr_pretrain
from obstructlib.profiles import Profile
from obstructlib.registry import Registry

SOURCE_INITS = ("supervised", "simclr")


@dataclass
class NTPRunConfig:
    """Config of ``obstruct ntp``.

    Attributes:
        source: the authorised domain, a classification spec (``digits``, ``mnist``, ``npz:PATH`` ...).
            A spec may end in ``+mnistm`` (``|digit - smooth random colour field|``, MNIST-M's
            recipe with synthetic backgrounds) or ``+invert`` (``1 - x``) to restyle its images.
        target: the domain to block, a spec likewise (quick: ``digits+mnistm``, an offline
            stand-in for MNIST -> MNIST-M); it gets its own head, so the label spaces may differ
            (except for ``ntl``).
        source_init: ``supervised`` (train the source model from scratch on S, as the official
            digits pipeline does) or ``simclr`` (NTP's self-supervised variant: pre-train the
            encoder with SimCLR on the S images first, then fine-tune encoder and a linear head on
            S; meant for the colab/paper profiles, e.g. ``--source cifar10 --target stl10``).
        arch: the model (``digits_cnn``, ``resnet18``, ``vgg11`` ...; CIFAR-style stems, linear head).
        method: ``ntp``, ``ntl-admm``, ``sparsity``, ``magnitude`` or ``ntl``.
        attack: ``masked`` (masks kept, the paper's), ``dense`` (pruned weights regrow) or ``both``.
        image_size: square side in pixels (paper: 32); grey images are repeated to 3 channels.
        max_source_train, max_target_train: seeded, class-stratified training subsets (None: all).
        max_test: the same for both test splits.
        prune_ratio: share of the S and T training sets the owner uses for pruning (paper: 0.1).
        ratios: the budget grid, strictly increasing shares of the target training set in (0, 1];
            each budget keeps at least one image per class.
        log_base: base of the SLC-AUC's log axis (10; ln values are reported too).
        curve_seeds: seeds per budget (curves are averaged over them; the spec suggests 3).
        source_train: stage 0 (paper: Adam 1e-3, wd 1e-4, up to 100 epochs; no early stopping on test).
        curve: the attacker's and the scratch model's recipe (paper's attack: Adam 1e-4, wd 8e-4,
            30 epochs, batch 128), shared by every curve.
        source_finetune: the masked source fine-tune of the released model (paper: 30 epochs, Adam 1e-4).
        ntp: NTP's ADMM settings (also used by ``ntl-admm`` and ``sparsity``; ``ntp.sparsity`` is
            the magnitude baseline's sparsity too).
        ntl: NTL's recipe.
        simclr: the SimCLR pre-training recipe of ``source_init=simclr``.
        cpu_bf16: bf16 autocast on a CPU with native bf16 (off by default: it moves results by
            rounding, and the quick figures are measured in float32).
    """

    source: str = "digits"
    target: str = "digits+mnistm"
    source_init: str = "supervised"
    arch: str = "digits_cnn"
    method: str = "ntp"
    attack: str = "both"
    image_size: int = 16
    max_source_train: int | None = None
    max_target_train: int | None = None
    max_test: int | None = None
    prune_ratio: float = 0.1
    ratios: tuple[float, ...] = DEFAULT_RATIOS
    log_base: float = 10.0
    curve_seeds: int = 1
    source_train: ClassifierTrainConfig = field(default_factory=lambda: ClassifierTrainConfig(
        epochs=30, batch_size=128, lr=1e-3, weight_decay=1e-4, optimizer="adam", scheduler="step"))
    curve: ClassifierTrainConfig = field(default_factory=lambda: ClassifierTrainConfig(
        epochs=30, batch_size=128, lr=1e-4, weight_decay=8e-4, optimizer="adam", scheduler="none"))
    source_finetune: ClassifierTrainConfig = field(default_factory=lambda: ClassifierTrainConfig(
        epochs=30, batch_size=128, lr=1e-4, weight_decay=8e-4, optimizer="adam", scheduler="none"))
    ntp: NTPConfig = field(default_factory=NTPConfig)
    ntl: NTLConfig = field(default_factory=NTLConfig)
    simclr: SimCLRConfig = field(default_factory=SimCLRConfig)

    cpu_bf16: bool = False

    def validate(self) -> None:
        """Raise one-line :class:`ConfigError` for bad values (before anything runs)."""
        PROTECTIONS.get(self.method, "method")  # one line listing the registered protections
        for name, value, choices in (("attack", self.attack, ATTACKS),
                                     ("source_init", self.source_init, SOURCE_INITS)):
            if value not in choices:
                raise ConfigError(f"{name}={value!r}: use one of {', '.join(choices)}")
        if split_style(self.source) == split_style(self.target):
            raise ConfigError(f"source and target are both {self.source!r}: pick two different domains "
                              "(or restyle one, e.g. digits+mnistm)")
        check_range("image_size", self.image_size, 8, 512)
        check_range("prune_ratio", self.prune_ratio, 0.0, 1.0, inclusive=True)
        if self.prune_ratio == 0:
            raise ConfigError("prune_ratio=0: the owner needs some S and T data, use a value in (0, 1]")
        r = np.asarray(self.ratios, dtype=np.float64)
        if r.size < 2 or np.any(r <= 0) or np.any(r > 1) or np.any(np.diff(r) <= 0):
            raise ConfigError(f"ratios={self.ratios}: give at least two strictly increasing shares in (0, 1]")
        if self.log_base <= 0 or self.log_base == 1:
            raise ConfigError(f"log_base={self.log_base}: use 10 or e (2.718...)")
        if self.curve_seeds < 1:
            raise ConfigError(f"curve_seeds={self.curve_seeds}: use at least 1")
        for name in ("max_source_train", "max_target_train", "max_test"):
            value = getattr(self, name)
            if value is not None and value < 10:
                raise ConfigError(f"{name}={value}: use at least 10, or none for the whole split")
        for part in (self.source_train, self.curve, self.source_finetune, self.ntp, self.ntl, self.simclr):
            part.validate()

    @classmethod
    def for_profile(cls, profile: Profile) -> NTPRunConfig:
        """Defaults scaled to a profile (the only place the profile enters).

        - quick (2 CPU cores, offline, a few minutes): scikit-learn digits -> the same digits on
          smooth random colour fields (an MNIST-M-style shift), 16 px, ``digits_cnn``; source 15
          epochs; 720 target training images; ADMM with the official alpha, lambda, rho and gamma
          (threshold 0.02) but on all of S and T (``prune_ratio=1``: the sets are small), 3 W-epochs
          per iteration, at most 12 iterations (min 3) and stopping sparsity 0.4 (the L1 Z-step
          prunes ~35% at once and ~0.5% per iteration after that on this CNN); curves on
          {2, 5, 10, 20, 50, 100}% with 12 epochs of Adam 1e-3 (the paper's 1e-4 barely moves a model
          trained from scratch in 12 epochs; every curve shares the recipe).
        - colab (one GPU): MNIST -> USPS (registered names; pass ``--source npz:...`` for the
          offline copies), ResNet-18 (CIFAR stem) at 32 px, 20,000 source images, the paper's
          ADMM settings (20 W-epochs, rho 0.005, gamma 1e-4, s 0.95) and 30-epoch curves on
          the paper's ten budgets.
        - paper: the same on full data, 3 seeds per budget.

        In every profile ``--set source_init=simclr`` runs the self-supervised variant (SimCLR
        pre-training first: 100 epochs at batch 256 on colab/paper, 5 in quick); the paper's SSL
        pair is ``--source cifar10 --target stl10``.
        """
        return _PROFILE_TABLE[profile.name](cls)


_PAPER_RATIOS = (0.001, 0.002, 0.005, 0.008, 0.01, 0.05, 0.1, 0.2, 0.5, 1.0)


def _quick(cls: type) -> NTPRunConfig:
    recipe = ClassifierTrainConfig(epochs=12, batch_size=64, lr=1e-3, weight_decay=8e-4, optimizer="adam",
                                   scheduler="none")
    return cls(
        max_target_train=720, ratios=(0.02, 0.05, 0.1, 0.2, 0.5, 1.0),
        source_train=ClassifierTrainConfig(epochs=15, batch_size=64, lr=1e-3, weight_decay=1e-4,
                                           optimizer="adam", scheduler="step"),
        curve=recipe,
        source_finetune=dataclasses.replace(recipe, epochs=5),
        prune_ratio=1.0,
        ntp=NTPConfig(epochs=3, batch_size=64, max_iters=12, min_iters=3, sparsity=0.4, head_epochs=20),
        ntl=NTLConfig(epochs=10, lr=1e-3),
        simclr=SimCLRConfig(epochs=5, batch_size=128),
    )


def _digits_paper(cls: type, source_epochs: int, **kw: Any) -> NTPRunConfig:
    base = cls(source="mnist", target="usps", arch="resnet18", image_size=32, ratios=_PAPER_RATIOS)
    return dataclasses.replace(base, source_train=dataclasses.replace(base.source_train, epochs=source_epochs), **kw)


# The profile table: profile name -> the runner's defaults in that profile (no branches elsewhere).
_PROFILE_TABLE = {
    "quick": _quick,
    "colab": lambda cls: _digits_paper(cls, 20, max_source_train=20000, max_target_train=None),
    "paper": lambda cls: _digits_paper(cls, 100, curve_seeds=3),
}


def resolve(cfg: NTPRunConfig, seed: int) -> NTPRunConfig:
    """The config as it runs: the owner's seeds are the run's ``--seed``; ``ntp.loss`` is the method
    (``ntp``, ``ntl-admm``, ``sparsity``) and ``sparsity`` runs with ``alpha = reg = 0``."""
    cfg = copy.deepcopy(cfg)
    cfg.ntp.seed = cfg.ntl.seed = cfg.simclr.seed = seed
    if cfg.method in LOSSES:
        cfg.ntp.loss = cfg.method
    if cfg.method == "sparsity":
        cfg.ntp.alpha, cfg.ntp.reg = 0.0, 0.0
    return cfg


# ---- stages ----------------------------------------------------------------------------------
def _source_model(
    cfg: NTPRunConfig, ctx: RunContext, train: ArrayImageDataset, test: SizedDataset
) -> tuple[Any, float]:
    torch.manual_seed(ctx.seed)
    model = create_model(cfg.arch, num_classes=len(train.classes))
    if cfg.source_init == "simclr":  # the SSL variant: a contrastive encoder, then the supervised head
        with ctx.timer("simclr_pretraining"):
            simclr_pretrain(model, train, cfg.simclr, ctx.device,
                            ckpt_dir=ctx.stage_dir("simclr"), progress=ctx.progress)
    with ctx.timer("source_training"):
        fit_classifier(model, train, None, cfg.source_train, ctx.device, ckpt_dir=ctx.stage_dir("source_model"),
                       progress=ctx.progress)
    return model.eval(), accuracy(model, test, ctx.device)


# The protections, name -> protect(cfg, ctx, model, s_own, t_own) -> (released, masks, info).
PROTECTIONS: Registry = Registry("protection")


def _admm(cfg: NTPRunConfig, ctx: RunContext, model: Any, s_own: Any, t_own: Any) -> tuple:
    head = None if cfg.method == "sparsity" else train_target_head(model, t_own, cfg.ntp, ctx.device)
    result = prune(model, cfg.ntp, source=s_own, target=t_own, target_head=head, device=ctx.device,
                   ckpt_dir=ctx.stage_dir("prune"), progress=ctx.progress)
    return model, result.masks, {"admm_iterations": len(result.history), "stopped_by": result.stopped_by,
                                 "admm_history": result.history}


@PROTECTIONS.register("ntp")
def _protect_ntp(cfg: NTPRunConfig, ctx: RunContext, model: Any, s_own: Any, t_own: Any) -> tuple:
    """Non-Transferable Pruning (arXiv 2410.08015): ADMM with the non-transferable loss and the Fisher ratio."""
    return _admm(cfg, ctx, model, s_own, t_own)


@PROTECTIONS.register("ntl-admm")
def _protect_ntl_admm(cfg: NTPRunConfig, ctx: RunContext, model: Any, s_own: Any, t_own: Any) -> tuple:
    """The same ADMM with the NTL-style MMD loss (the paper's ablation)."""
    return _admm(cfg, ctx, model, s_own, t_own)


@PROTECTIONS.register("sparsity")
def _protect_sparsity(cfg: NTPRunConfig, ctx: RunContext, model: Any, s_own: Any, t_own: Any) -> tuple:
    """The same ADMM with alpha = lambda = 0: sparse source training only (the paper's ablation)."""
    return _admm(cfg, ctx, model, s_own, t_own)


@PROTECTIONS.register("magnitude")
def _protect_magnitude(cfg: NTPRunConfig, ctx: RunContext, model: Any, s_own: Any, t_own: Any) -> tuple:
    """Global magnitude pruning to ``ntp.sparsity``, then masked source fine-tuning ("pruning alone")."""
    model, masks = magnitude_prune(model, s_own, cfg.ntp.sparsity, cfg.source_finetune, ctx.device,
                                   include_bn=cfg.ntp.prune_bn, ckpt_dir=ctx.stage_dir("prune"), progress=ctx.progress)
    return model, masks, {}


@PROTECTIONS.register("ntl")
def _protect_ntl(cfg: NTPRunConfig, ctx: RunContext, model: Any, s_own: Any, t_own: Any) -> tuple:
    """Non-Transferable Learning (arXiv 2106.06916): dense training that keeps S and fails on T."""
    if len(s_own.classes) != len(t_own.classes):
        raise ConfigError("method=ntl shares one head between source and target: they need the same classes")
    history = train_ntl(model, s_own, t_own, cfg.ntl, ctx.device, ckpt_dir=ctx.stage_dir("prune"),
                        progress=ctx.progress)
    return model, {}, {"ntl_history": history}


def _protect(cfg: NTPRunConfig, ctx: RunContext, source_model: Any, s_train: ArrayImageDataset,
             t_train: ArrayImageDataset) -> tuple[Any, dict, dict[str, Any]]:
    """Run ``cfg.method``; returns (released model, masks, info). Saved to OUT/released."""
    folder = None if ctx.out_dir is None else ctx.out_dir / "released"
    if folder is not None and (folder / "released.json").is_file():
        model, masks = load_released(folder, ctx.device)
        return model, masks, json.loads((folder / "released.json").read_text())["info"]
    s_own = budget_subset(s_train, cfg.prune_ratio, ctx.seed)
    t_own = budget_subset(t_train, cfg.prune_ratio, ctx.seed + 1)
    model = copy.deepcopy(source_model)
    info: dict[str, Any] = {"owner_source_images": len(s_own), "owner_target_images": len(t_own)}
    start = time.perf_counter()
    model, masks, more = PROTECTIONS.get(cfg.method)(cfg, ctx, model, s_own, t_own)
    info.update(more)
    ctx.timings_s["pruning"] = round(ctx.timings_s.get("pruning", 0.0) + time.perf_counter() - start, 3)
    info["sparsity"] = sparsity_report(model.encoder, masks) if masks else {"all": 0.0, "weights": 0.0, "layers": {}}
    if folder is not None:
        save_released(folder, model, masks, info={"method": cfg.method, **info})
    return model, masks, info


class _DomainKwargs(TypedDict):
    """The :func:`~obstructlib.data.load_domain` arguments every split shares."""

    seed: int
    data_root: Path
    progress: bool


def run(cfg: NTPRunConfig, ctx: RunContext) -> dict[str, Any]:
    """Train the source model, protect it, attack it at every budget, report SLC-AUC."""
    check_run_folder(cfg, ctx)
    where: _DomainKwargs = {"seed": ctx.seed, "data_root": ctx.data_root, "progress": ctx.progress}
    with ctx.timer("data"):
        s_train = require_classes(load_domain(cfg.source, "train", image_size=cfg.image_size,
                                              max_samples=cfg.max_source_train, **where), cfg.source)
        s_test = load_domain(cfg.source, "test", image_size=cfg.image_size, max_samples=cfg.max_test, **where)
        t_train = load_domain(cfg.target, "train", image_size=cfg.image_size, max_samples=cfg.max_target_train, **where)
        t_test = load_domain(cfg.target, "test", image_size=cfg.image_size, max_samples=cfg.max_test, **where)
    source_model, acc_original = _source_model(cfg, ctx, s_train, s_test)
    released, masks, info = _protect(cfg, ctx, source_model, s_train, t_train)
    attack = AttackConfig(arch=cfg.arch, attack=cfg.attack, ratios=cfg.ratios, log_base=cfg.log_base,
                          curve_seeds=cfg.curve_seeds, curve=cfg.curve, source_finetune=cfg.source_finetune,
                          seed=derive_seed(ctx.seed, "attacker"))  # never the owner's stream
    scores = evaluate(released, attack, masks=masks, source_model=source_model, source=(s_train, s_test),
                      target=(t_train, t_test), device=ctx.device, ckpt_dir=ctx.ckpt_dir, progress=ctx.progress)
    for stage, seconds in scores.pop("seconds").items():
        ctx.timings_s[stage] = round(ctx.timings_s.get(stage, 0.0) + seconds, 3)
    return {
        "source_acc": {"original": acc_original, **scores.pop("source_acc")},
        "target_acc_released": scores.pop("target_acc_released"),
        "attacker_seed": attack.seed,
        "sparsity": info["sparsity"]["all"],
        "sparsity_weights": info["sparsity"]["weights"],
        "sparsity_layers": info["sparsity"]["layers"],
        **scores,  # slc_auc, slc_auc_transfer, slc_auc_ln, curves
        "log_base": cfg.log_base,
        "method": cfg.method,
        "attack": cfg.attack,
        "source_init": cfg.source_init,
        "num_source_train": len(s_train), "num_target_train": len(t_train),
        "num_source_test": len(s_test), "num_target_test": len(t_test),
        "protection": {k: v for k, v in info.items() if k != "sparsity"},
    }


register_runner(Runner(
    name="ntp",
    help="Non-Transferable Pruning and baselines: protect a source model, attack it on a target domain, report SLC-AUC",
    config_for=NTPRunConfig.for_profile,
    run=run,
    resolve=resolve,
    registries={"method": PROTECTIONS},
    flags=(
        Flag("--source", "source", "authorised domain: a dataset spec (digits, mnist, npz:PATH ...)"),
        Flag("--target", "target", "domain to block: a dataset spec"),
        Flag("--arch", "arch", "model: digits_cnn, resnet18, vgg11 ..."),
        Flag("--method", "method", "protection (help: list them)"),
        Flag("--attack", "attack", "attacker's fine-tuning: " + ", ".join(ATTACKS)),
    ),
))
