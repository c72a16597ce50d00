"""``obstruct ubt``: plant a backdoor in CLIP with poisoned pairs, then remove it with UBT or a baseline.

The UBT experiment (Liu et al., arXiv:2409.19526), every stage cached in ``OUT/checkpoints``:

1. the pretrained CLIP: ``pretrained`` (an open_clip tag) in ``colab``/``paper``; offline, a tiny
   CLIP pretrained on a clean split of the data (``pretrain/``), the public model both the victim and
   the defender start from;
2. the attack: ``--attack`` builds its trigger (SSBA trains its encoder, TrojVQA optimises its patch
   against the clean CLIP) and poisons ``--poison-rate`` of the fine-tuning set D;
3. the victim fine-tunes the pretrained CLIP on the poisoned D (``victim/``); the same recipe on D
   without the poisons gives the clean reference (``reference/``: the KL target, and the model the
   clean-model check is tried on); ``--attack none`` fine-tunes on clean D only;
4. gate: a poisoned model whose ASR is below ``min_asr`` carries no backdoor worth removing; the run
   says so in ``results.json`` (``refused``) and stops before any defence;
5. every ``--defense`` (comma-separated; ``all`` runs them all) on the same poisoned model and data,
   each timed: ``ubt`` (and its ablations), ``ft``, ``cleanclip``, ``roclip``, ``abl``, ``oracle``, ``none``;
6. CA, ASR and KL to the reference of every model on the clean test split, the detection
   precision/recall of UBT's pool and unlearning set, and UBT's clean-model check on the reference.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import torch

from obstructlib.data import load_pairs
from obstructlib.engine import ClipTrainConfig, fit_clip
from obstructlib.errors import ConfigError, check_range, reading
from obstructlib.experiments import Flag, RunContext, Runner, register_runner
from obstructlib.experiments.common import check_run_folder
from obstructlib.methods.ubt.attacks import AttackConfig, build_trigger, class_names, poison_pairs, triggered_copy
from obstructlib.methods.ubt.baselines import (
    ABLConfig,
    CleanCLIPConfig,
    RoCLIPConfig,
    abl,
    cleanclip,
    finetune_clean,
    roclip,
)
from obstructlib.methods.ubt.evaluate import evaluate
from obstructlib.methods.ubt.method import UBTConfig, defend, detection_scores, pool_recall_table, unlearn_set
from obstructlib.methods.ubt.steps import PairSubset, PairTensors
from obstructlib.models import create_clip
from obstructlib.primitives.image_triggers import PatchTrigger
from obstructlib.primitives.stegastamp import load_stegastamp, save_stegastamp
from obstructlib.profiles import Profile
from obstructlib.registry import Registry

DEFENSES: Registry = Registry("defense")


@dataclass
class UBTRunConfig:
    """Config of ``obstruct ubt``.

    Attributes:
        dataset: a classification spec (``folder:PATH``, ``cifar10``: templated captions, zero-shot
            CA/ASR) or a caption spec (``csv:PATH``: retrieval CA, ASR against the target's prompts).
        arch: the CLIP architecture (``tiny-rn`` offline, ``ViT-B-32`` in the paper).
        pretrained: open_clip tag of the public pretrained CLIP; None pretrains one on a clean split.
        image_size: square side of the stored images in pixels.
        context_length: tokens per caption (None: the architecture's own).
        pretrain_samples: training images of the clean pretraining split (offline only).
        train_samples: training images of the fine-tuning set D (poisoned by the attacker).
        heldout_samples: clean held-out training images for CleanCLIP and FT (the defender's extra
            clean data; disjoint from the other splits).
        test_samples: test images (CA, ASR, KL); None: the whole test split.
        captions_per_image: templated captions per image (classification data only).
        defense: comma-separated defences, or ``all``.
        min_asr: the least poisoned ASR (percent) for a defence to be evaluated (the issue's 90%).
        recipe: the profile row the defaults came from (``quick-embedded``, ``quick-real``; empty for
            colab and paper). The quick row follows the dataset: with ``quick-embedded`` and any other
            ``--dataset``, :func:`adapt` rebuilds the defaults from ``quick-real`` and keeps every
            value that a flag or ``--set`` gave (results.json records the config as it ran).
        pretrain: the offline pretraining recipe.
        victim: the victim's fine-tuning recipe (also the reference's and RoCLIP's).
        attack: the attacker's settings (target, rate, trigger parameters).
        ubt: UBT's settings.
        ft: the clean fine-tuning baseline's recipe.
        cleanclip: CleanCLIP's settings.
        roclip: RoCLIP's settings (its ``train`` recipe is the victim's, see :func:`resolve`).
        abl: ABL's settings.
        cpu_bf16: bf16 autocast on a CPU with native bf16 (off by default: it moves results by
            rounding, and the quick figures are measured in float32).
    """

    dataset: str = "synthetic"
    arch: str = "tiny-rn"
    pretrained: str | None = None
    image_size: int = 32
    context_length: int | None = 20
    pretrain_samples: int | None = 10_000
    train_samples: int | None = 5_000
    heldout_samples: int | None = 1_000
    test_samples: int | None = 2_000
    captions_per_image: int = 1
    defense: str = "ubt"
    min_asr: float = 90.0
    recipe: str = ""
    pretrain: ClipTrainConfig = field(default_factory=ClipTrainConfig)
    victim: ClipTrainConfig = field(default_factory=ClipTrainConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    ubt: UBTConfig = field(default_factory=UBTConfig)
    ft: ClipTrainConfig = field(default_factory=ClipTrainConfig)
    cleanclip: CleanCLIPConfig = field(default_factory=CleanCLIPConfig)
    roclip: RoCLIPConfig = field(default_factory=lambda: RoCLIPConfig(train=ClipTrainConfig()))
    abl: ABLConfig = field(default_factory=ABLConfig)

    cpu_bf16: bool = False

    def validate(self) -> None:
        """Raise one-line :class:`ConfigError` for bad values (before anything runs)."""
        self.defenses()
        check_range("image_size", self.image_size, 8, 1024)
        check_range("captions_per_image", self.captions_per_image, 1, 100)
        check_range("min_asr", self.min_asr, 0.0, 100.0)
        for name in ("pretrain_samples", "train_samples", "heldout_samples", "test_samples"):
            value = getattr(self, name)
            if value is not None and value < 2:
                raise ConfigError(f"{name}={value}: use at least 2, or none")
        if self.context_length is not None and self.context_length < 8:
            raise ConfigError(f"context_length={self.context_length}: use at least 8")
        for part in (self.pretrain, self.victim, self.attack, self.ubt, self.ft, self.cleanclip, self.roclip,
                     self.abl):
            part.validate()

    def defenses(self) -> list[str]:
        """The defences to run, in order (``all``: every registered one)."""
        names = [d.strip() for d in self.defense.split(",") if d.strip()]
        if names == ["all"]:
            return list(DEFENSES.names())
        if not names:
            raise ConfigError("defense is empty: name one (ubt, ft, cleanclip, roclip, abl, oracle, none) or all")
        for name in names:
            DEFENSES.get(name, "defense")
        return names

    @classmethod
    def for_profile(cls, profile: Profile) -> UBTRunConfig:
        """Defaults scaled to a profile (the only place the profile enters).

        - quick (CPU, offline), two rows: on the embedded ``synthetic`` set (the default dataset;
          2,000 images) 1,000 / 800 / 200 / 500 images and short recipes (:func:`_quick_embedded`);
          with a real ``--dataset`` (:func:`adapt`) a tiny-rn CLIP pretrained 600 steps (batch 128,
          lr 1e-3) on 10,000 clean images, D = 5,000 images, the victim fine-tuned 600 steps at lr
          5e-4 (:func:`_quick_real`). SIG at 5% in both. The paper's learning rates are for a
          pretrained ViT-B/32 poisoned at 1e-6; ours are measured at our scale (see the rows).
          Pool and unlearning set keep the paper's ratio to the poisons (pool about 3x, D_u about 1/3).
        - colab (one GPU): ViT-B-32 ``openai`` fine-tuned on the profile's set at 224 px with the
          paper's learning rates.
        - paper: the paper's settings (500K pairs, 1,500 poisons, lr 1e-6 for 3 epochs, batch 128).
        """
        return _PROFILE_TABLE[profile.name](cls, profile)


def _recipe(lr: float, *, steps: int | None = None, epochs: int | None = None, batch: int = 64, warmup: int = 0,
            wd: float = 0.1, log_every: int = 10) -> ClipTrainConfig:
    return ClipTrainConfig(steps=steps, epochs=epochs, batch_size=batch, lr=lr, weight_decay=wd,
                           warmup_steps=warmup, betas=(0.9, 0.999), eps=1e-8, log_every=log_every, ckpt_every=200)


def _quick_embedded(cls: type) -> UBTRunConfig:
    """quick on the embedded 2,000-image shapes set (CI, no downloads): splits that fit in it.

    Measured on ``synthetic`` (SIG 5%, seed 0, one thread): CIFAR-10's recipe cannot be scaled down
    as it is. A pretraining that generalises (lr 3e-3: zero-shot 41%) leaves a victim that learns the
    shapes instead of the trigger (ASR 76% after 400 steps; the striped backgrounds of the set hide
    SIG's stripes), so the public CLIP here is pretrained at lr 1e-3 (zero-shot 28%) and the victim
    fine-tunes 300 steps of batch 32 at lr 2e-3: CA 44.8%, ASR 91.2% (the reference 44.8%, 11.2%).
    UBT keeps CIFAR-10's settings but two: the overfitting at a quarter of the victim's lr (at the
    victim's lr the pool's ellipses overtake the poisons: D_u precision 0.14) and integrated
    gradients, which name the target in 14/14 of D_u's captions (gradient x input: 7/14, so the
    clean check sat on its threshold); UBT: CA 43.8%, ASR 0.0% (seed 1: 45.2/97.8 -> 43.0/0.0).
    Those figures are an earlier torch build's. On torch 2.14.1 (notebook 03, section 9) seeds 0-2
    give victims at ASR 86.2 / 98.4 / 99.8%; UBT takes seeds 1 and 2 to 0.2 / 0.0% (CA -4.8 / -2.8)
    and refuses at seed 0, whose victim is under the 90% gate (450 victim steps: ASR 87.4%).
    The check's lift threshold is 12, not 7: one caption per image, a class word fills 10% of D, so a
    clean D_u made of one class reaches lift 10 (the references measured 5.0 and 7.9, the second a
    false alarm at 7), while the target at a 5% rate reaches 20 (both seeds).
    """
    victim_lr, rate = 2e-3, 0.05
    victim = _recipe(victim_lr, steps=300, batch=32, warmup=20, wd=0.2, log_every=50)
    ubt = UBTConfig(pool_fraction=3 * rate, unlearn_fraction=rate / 3, pool_scorer="poisoned", pool_direction="highest",
                    overfit=_recipe(victim_lr / 4, epochs=5), attribution="integrated_gradients",
                    unlearn=_recipe(victim_lr / 10, epochs=5), max_pairs=4096, max_loss=8.0, retain_weight=2.0,
                    min_lift=12.0)
    return cls(
        dataset="synthetic", recipe="quick-embedded",
        pretrain_samples=1_000, train_samples=800, heldout_samples=200, test_samples=500,
        pretrain=_recipe(1e-3, steps=300, batch=64, warmup=30, wd=0.2, log_every=50), victim=victim,
        attack=AttackConfig(attack="sig", poison_rate=rate), ubt=ubt,
        ft=_recipe(victim_lr, epochs=10), cleanclip=CleanCLIPConfig(train=_recipe(victim_lr, epochs=10)),
        roclip=RoCLIPConfig(train=copy.deepcopy(victim)),
        abl=ABLConfig(isolate_fraction=0.01, train=_recipe(victim_lr / 10, epochs=10)))


def _quick(cls: type, profile: Profile) -> UBTRunConfig:
    if profile.image_dataset == "synthetic":  # the embedded set; a real --dataset gets _quick_real (resolve)
        return _quick_embedded(cls)
    return _quick_real(cls, profile.image_dataset)


def _quick_real(cls: type, dataset: str) -> UBTRunConfig:
    """quick on a real classification set of at least 16,000 training images (CIFAR-10's JPEG copy)."""
    victim_lr = 5e-4  # the paper poisons at 1e-6; its overfit lr = 1x, unlearn lr = 10x, CleanCLIP 10x of it
    rate = 0.05  # SIG at 5% reaches 98% ASR in 600 steps (3%: not measured; BadNet and Blended need more)
    # chosen on CIFAR-10, SIG 5%, attack seed 0 (validated on other seeds in the note). The pool
    # is the paper's (the clean CLIP's least aligned pairs): on the runner's pretrained models it holds
    # 48-50% of the SIG poisons (seeds 0, 1) and 41% of BadNet's, against 24-28% and 4.5% for the
    # poisoned model's best-fitted pairs (on a first, weaker pretrained model, zero-shot 41%, it was
    # the other way round: 1% against 98%). The ascent at the victim's lr (the paper's 10x is 5e-3)
    # collapses CA; at a tenth of it, bounded at a per-pair loss of 8 with the retain term at weight
    # 2: SIG ASR <= 0.1%, CA -1.0 to -3.0 (retain 0: CA -35; 1: -3; the unbounded ascent: -14). The
    # clean check's lift: 9-15 on poisoned models, 1.0-5.8 on clean ones.
    ubt = UBTConfig(pool_fraction=3 * rate, unlearn_fraction=rate / 3,
                    overfit=_recipe(victim_lr, epochs=5), unlearn=_recipe(victim_lr / 10, epochs=5), max_pairs=4096,
                    max_loss=8.0, retain_weight=2.0, min_lift=7.0)
    return cls(
        dataset="folder:cifar10-jpeg" if dataset == "cifar10" else dataset, recipe="quick-real",
        pretrain=_recipe(1e-3, steps=600, batch=128, warmup=50, wd=0.2, log_every=50),
        victim=_recipe(victim_lr, steps=600, batch=128, warmup=20, wd=0.2, log_every=50),
        attack=AttackConfig(attack="sig", poison_rate=rate), ubt=ubt,
        ft=_recipe(victim_lr, epochs=10), cleanclip=CleanCLIPConfig(train=_recipe(victim_lr, epochs=10)),
        roclip=RoCLIPConfig(train=_recipe(victim_lr, steps=600, batch=128, warmup=20, wd=0.2, log_every=50)),
        abl=ABLConfig(isolate_fraction=0.01, train=_recipe(victim_lr / 10, epochs=10)))


def _colab(cls: type, profile: Profile) -> UBTRunConfig:
    victim = _recipe(1e-6, epochs=3, batch=128, warmup=50)
    return cls(dataset=profile.caption_dataset, arch=profile.clip_arch, pretrained=profile.clip_pretrained,
               image_size=224, context_length=None, pretrain_samples=None, train_samples=profile.max_train_samples,
               heldout_samples=4_000, test_samples=profile.max_test_samples, victim=victim,
               attack=AttackConfig(poison_rate=0.01), ubt=UBTConfig(),
               ft=_recipe(1e-5, epochs=10), cleanclip=CleanCLIPConfig(train=_recipe(1e-5, epochs=10, warmup=50)),
               roclip=RoCLIPConfig(train=copy.deepcopy(victim)), abl=ABLConfig(train=_recipe(1e-6, epochs=10)))


def _paper(cls: type, profile: Profile) -> UBTRunConfig:
    victim = _recipe(1e-6, epochs=3, batch=128, warmup=50)
    return cls(dataset="cc3m", arch="ViT-B-32", pretrained="openai", image_size=224, context_length=None,
               pretrain_samples=None, train_samples=500_000, heldout_samples=100_000, test_samples=None,
               victim=victim, attack=AttackConfig(poison_rate=1500 / 500_000), ubt=UBTConfig(),
               ft=_recipe(1e-5, epochs=10), cleanclip=CleanCLIPConfig(train=_recipe(1e-5, epochs=10, warmup=50)),
               roclip=RoCLIPConfig(train=_recipe(1e-6, epochs=24, batch=128)),
               abl=ABLConfig(train=_recipe(1e-6, epochs=10)))


_PROFILE_TABLE = {"quick": _quick, "colab": _colab, "paper": _paper}


def adapt(cfg: UBTRunConfig, profile: Profile, explicit: set[str]) -> UBTRunConfig:
    """The quick row follows the dataset: ``quick-embedded`` with a real ``--dataset`` becomes
    ``quick-real``, with every dotted key the user set (``explicit``) kept as given."""
    if cfg.recipe != "quick-embedded" or cfg.dataset == "synthetic":
        return cfg
    out = _quick_real(UBTRunConfig, cfg.dataset)
    for key in sorted(explicit):
        *path, last = key.split(".")
        src, dst = cfg, out
        for part in path:
            src, dst = getattr(src, part), getattr(dst, part)
        setattr(dst, last, copy.deepcopy(getattr(src, last)))
    out.validate()
    return out


#: offsets of the independent streams from ``--seed`` (every stage of a defence derives its own
#: stream from the defender's: UBT's overfit uses it, its ascent it + 1).
ATTACKER, VICTIM, DEFENDER, PRETRAIN = 0, 1, 10, 20


def resolve(cfg: UBTRunConfig, seed: int) -> UBTRunConfig:
    """The config as it runs: independent streams derived from ``--seed``.

    The attacker (poison draw, trigger randomness) uses ``seed``; the victim's and the reference's
    data order ``seed + 1`` (one recipe, so the reference differs from the victim only by the poisons);
    every defence's batch draws ``seed + 10`` (its stages ``+ 10``, ``+ 11``); the offline pretraining
    ``seed + 20``. No defence shares the attacker's or the victim's stream.
    """
    cfg = copy.deepcopy(cfg)
    cfg.attack.seed = cfg.attack.ssba.seed = seed + ATTACKER
    cfg.victim.seed = seed + VICTIM
    cfg.pretrain.seed = seed + PRETRAIN
    for part in (cfg.ubt, cfg.ft, cfg.cleanclip.train, cfg.roclip.train, cfg.abl.train):
        part.seed = seed + DEFENDER
    cfg.ubt.overfit.seed, cfg.ubt.unlearn.seed = seed + DEFENDER, seed + DEFENDER + 1  # what defend() runs
    return cfg


# ---- data and models ----------------------------------------------------------------------------
def _splits(cfg: UBTRunConfig, ctx: RunContext) -> dict[str, Any]:
    kw: dict[str, Any] = {"image_size": cfg.image_size, "captions_per_image": cfg.captions_per_image, "seed": 0,
                          "progress": ctx.progress}
    wanted = [cfg.train_samples, cfg.heldout_samples] + ([cfg.pretrain_samples] if cfg.pretrained is None else [])
    total = None if any(w is None for w in wanted) else int(sum(w for w in wanted if w is not None))
    train = load_pairs(cfg.dataset, ctx.data_root, "train", max_samples=total, **kw)
    test = load_pairs(cfg.dataset, ctx.data_root, "test", max_samples=cfg.test_samples, **kw)
    for part in (train, test):
        if hasattr(part, "decode_all") and part.num_images * cfg.image_size**2 * 3 < 2**31:
            part.decode_all()
    order = np.random.default_rng(12345).permutation(train.num_images)  # the split, fixed across seeds
    sizes = {"train": cfg.train_samples, "heldout": cfg.heldout_samples,
             "pretrain": cfg.pretrain_samples if cfg.pretrained is None else 0}
    if any(v is None for v in sizes.values()):
        known = sum(v for v in sizes.values() if v is not None)
        free = [k for k, v in sizes.items() if v is None]
        for k in free:
            sizes[k] = max(2, (train.num_images - known) // len(free))
    out, start = {"test": test}, 0
    for name in ("pretrain", "train", "heldout"):
        size = int(sizes[name] or 0)
        if size == 0:
            continue
        if start + size > train.num_images:
            raise ConfigError(f"{cfg.dataset} has {train.num_images} training images, fewer than the "
                              f"{start + size} the splits need: lower train_samples/heldout_samples/pretrain_samples")
        out[name] = train.subset_images(np.sort(order[start:start + size]))
        start += size
    return out


def _clip(cfg: UBTRunConfig, ctx: RunContext, pretrained: str | None = None) -> Any:
    kw = {} if cfg.context_length is None else {"context_length": cfg.context_length}
    return create_clip(cfg.arch, pretrained, device=ctx.device, image_size=cfg.image_size, **kw)


def _pretrained(cfg: UBTRunConfig, ctx: RunContext, data: dict[str, Any]) -> Any:
    if cfg.pretrained is not None:
        return _clip(cfg, ctx, cfg.pretrained).eval()
    torch.manual_seed(cfg.pretrain.seed)
    model = _clip(cfg, ctx)
    with ctx.timer("pretrain"):
        fit_clip(model, data["pretrain"], cfg.pretrain, ctx.device, ckpt_dir=ctx.stage_dir("pretrain"),
                 progress=ctx.progress)
    return model.eval()


def _trigger(cfg: UBTRunConfig, ctx: RunContext, train: Any, clean: Any) -> tuple[Any, dict[str, Any]]:
    folder = ctx.stage_dir("trigger")
    if folder is not None and (folder / "trigger.json").is_file():
        info = json.loads((folder / "trigger.json").read_text())
        if cfg.attack.attack == "ssba":
            encoder, _ = load_stegastamp(folder / "stegastamp")
            from obstructlib.primitives.image_triggers import SSBA
            from obstructlib.primitives.stegastamp import secret_bits

            return SSBA(encoder.eval(), secret_bits(cfg.attack.ssba_secret, encoder.n_bits)), info
        if cfg.attack.attack == "trojvqa":
            with reading(folder / "patch.pt"):
                patch = torch.load(folder / "patch.pt", weights_only=True)
            return PatchTrigger(patch, location="center"), info
    images = torch.stack([train.get_image(i) for i in range(min(train.num_images, 4096))])
    with ctx.timer("attack_trigger"):
        trigger, info = build_trigger(cfg.attack, images=images, clean_model=clean, device=ctx.device,
                                      progress=ctx.progress)
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        if cfg.attack.attack == "ssba":
            save_stegastamp(folder / "stegastamp", cast(Any, trigger).encoder, None)
        if cfg.attack.attack == "trojvqa":
            torch.save(cast(Any, trigger).patch, folder / "patch.pt")
        (folder / "trigger.json").write_text(json.dumps(info))
    return trigger, info


def _fine_tune(cfg: UBTRunConfig, ctx: RunContext, clean: Any, pairs: Any, stage: str) -> Any:
    model = copy.deepcopy(clean)
    with ctx.timer(stage):
        fit_clip(model, pairs, cfg.victim, ctx.device, ckpt_dir=ctx.stage_dir(stage), progress=ctx.progress)
    return model.eval()


# ---- defences ----------------------------------------------------------------------------------
@dataclass
class DefenseInputs:
    """What every defence may use. ``is_poison`` is the truth: only ``oracle`` acts on it, the others
    receive it for reporting detection precision/recall."""

    cfg: UBTRunConfig
    ctx: RunContext
    poisoned: Any
    clean: Any
    train: Any
    heldout: Any
    is_poison: np.ndarray


def _ubt_with(inputs: DefenseInputs, name: str, **changes: Any) -> tuple[Any, dict[str, Any]]:
    ubt_cfg = dataclasses.replace(inputs.cfg.ubt, **changes)
    result = defend(inputs.poisoned, inputs.train, ubt_cfg, clean_model=inputs.clean, device=inputs.ctx.device,
                    ckpt_dir=inputs.ctx.stage_dir(name), progress=inputs.ctx.progress, is_poison=inputs.is_poison)
    r = result.report
    info = {"detection": r.detection, "refused": r.refused, "stages_s": r.timings_s,
            "num_unlearn_pairs": r.num_unlearn_pairs, "masked_captions": r.masked_captions[:10],
            "check": None if r.check is None else dataclasses.asdict(r.check)}
    return result.model, info


@DEFENSES.register("ubt")
def _d_ubt(inputs: DefenseInputs) -> tuple[Any, dict[str, Any]]:
    """UBT: suspicious pool, overfitting, re-ranking, clean check, token-masked Cartesian ascent (arXiv 2409.19526)."""
    return _ubt_with(inputs, "ubt")


@DEFENSES.register("ubt-no-overfit")
def _d_no_overfit(inputs: DefenseInputs) -> tuple[Any, dict[str, Any]]:
    """UBT ablation: D_u re-ranked by the poisoned model itself (no overfitting)."""
    return _ubt_with(inputs, "ubt-no-overfit", use_overfit=False)


@DEFENSES.register("ubt-no-cartesian")
def _d_no_cartesian(inputs: DefenseInputs) -> tuple[Any, dict[str, Any]]:
    """UBT ablation: ascent on the selected pairs only (no Cartesian product)."""
    return _ubt_with(inputs, "ubt-no-cartesian", cartesian=False)


@DEFENSES.register("ubt-no-mask")
def _d_no_mask(inputs: DefenseInputs) -> tuple[Any, dict[str, Any]]:
    """UBT ablation: plain gradient ascent on full captions (Table IV's GA row, no token mask)."""
    return _ubt_with(inputs, "ubt-no-mask", variant="ga")


@DEFENSES.register("ft")
def _d_ft(inputs: DefenseInputs) -> tuple[Any, dict[str, Any]]:
    """FT: fine-tune the poisoned model with the CLIP loss on the clean held-out pairs."""
    ctx = inputs.ctx
    return finetune_clean(inputs.poisoned, inputs.heldout, inputs.cfg.ft, device=ctx.device,
                          ckpt_dir=ctx.stage_dir("ft"), progress=ctx.progress), {}


@DEFENSES.register("cleanclip")
def _d_cleanclip(inputs: DefenseInputs) -> tuple[Any, dict[str, Any]]:
    """CleanCLIP: multimodal + in-modal InfoNCE on clean held-out pairs (arXiv 2303.03323)."""
    ctx = inputs.ctx
    return cleanclip(inputs.poisoned, inputs.heldout, inputs.cfg.cleanclip, device=ctx.device,
                     ckpt_dir=ctx.stage_dir("cleanclip"), progress=ctx.progress), {}


@DEFENSES.register("roclip")
def _d_roclip(inputs: DefenseInputs) -> tuple[Any, dict[str, Any]]:
    """RoCLIP: the victim's fine-tuning redone with nearest-neighbour text matching (arXiv 2303.06854)."""
    ctx = inputs.ctx
    return roclip(inputs.clean, inputs.train, inputs.cfg.roclip, device=ctx.device,
                  ckpt_dir=ctx.stage_dir("roclip"), progress=ctx.progress), {}


@DEFENSES.register("abl")
def _d_abl(inputs: DefenseInputs) -> tuple[Any, dict[str, Any]]:
    """ABL for CLIP: isolate the best-fitted 1% by the poisoned model, gradient ascent on them (arXiv 2110.11571)."""
    ctx = inputs.ctx
    model, isolated = abl(inputs.poisoned, inputs.train, inputs.cfg.abl, device=ctx.device,
                          ckpt_dir=ctx.stage_dir("abl"), progress=ctx.progress)
    d = detection_scores(isolated, inputs.is_poison)
    return model, {"detection": {"pool_precision": d["precision"], "pool_recall": d["recall"]}}


@DEFENSES.register("oracle")
def _d_oracle(inputs: DefenseInputs) -> tuple[Any, dict[str, Any]]:
    """Oracle: UBT's unlearning (token mask, Cartesian ascent) on the TRUE poisons (the detection upper bound)."""
    from obstructlib.methods.ubt.steps import keep_top_tokens, token_attributions

    cfg, ctx = inputs.cfg.ubt, inputs.ctx
    view = PairTensors(inputs.train, inputs.poisoned)
    images, tokens = view.batch(np.flatnonzero(inputs.is_poison))
    attr = token_attributions(inputs.poisoned, images, tokens, method=cfg.attribution, ig_steps=cfg.ig_steps,
                              device=ctx.device)
    masked = keep_top_tokens(tokens, attr, cfg.top_tokens, inputs.poisoned)
    normal = np.flatnonzero(~inputs.is_poison)
    model, _, num_pairs = unlearn_set(inputs.poisoned, view, images, tokens, masked, normal, cfg, device=ctx.device,
                                      ckpt_dir=ctx.stage_dir("oracle"), progress=ctx.progress)
    return model, {"num_unlearn_pairs": int(num_pairs)}


@DEFENSES.register("none")
def _d_none(inputs: DefenseInputs) -> tuple[Any, dict[str, Any]]:
    """No defence: the poisoned model as it is."""
    return inputs.poisoned, {}


# ---- the run -----------------------------------------------------------------------------------
def run(cfg: UBTRunConfig, ctx: RunContext) -> dict[str, Any]:
    """Pretrain (offline), attack, fine-tune victim and reference, gate on ASR, defend, evaluate."""
    check_run_folder(cfg, ctx)
    with ctx.timer("data"):
        data = _splits(cfg, ctx)
    train, test = data["train"], data["test"]
    classes = class_names(train, cfg.attack) if getattr(train, "classes", None) else []
    clean = _pretrained(cfg, ctx, data)
    key = cfg.attack.key
    if cfg.attack.attack == "none":
        from obstructlib.primitives.image_triggers import BadNet

        trigger, trigger_info = BadNet(cfg.attack.patch_size, seed=cfg.attack.seed), {"note": "badnet, for ASR only"}
        poisoned_set = train
        is_poison = np.zeros(len(train), bool)
    else:
        trigger, trigger_info = _trigger(cfg, ctx, train, clean)
        with ctx.timer("attack_poison"):
            poisoned_set = poison_pairs(train, trigger, cfg.attack)
        is_poison = np.asarray(getattr(poisoned_set, "is_poison"))
    with ctx.timer("attack_test_set"):
        triggered = triggered_copy(test, trigger)
    victim = _fine_tune(cfg, ctx, clean, poisoned_set, "victim")
    clean_idx = np.flatnonzero(~is_poison)
    reference = victim if cfg.attack.attack == "none" else _fine_tune(
        cfg, ctx, clean, PairSubset(poisoned_set, clean_idx), "reference")

    def score(model: Any) -> dict[str, float]:
        with ctx.timer("evaluate"):
            return evaluate(model, test, triggered, target=cfg.attack.target, classes=classes or None,
                            text_key=key, reference=reference, device=ctx.device)

    metrics: dict[str, Any] = {
        "pretrained": score(clean), "poisoned": score(victim), "clean": score(reference),
        "chance": {"ca": 100.0 / len(classes) if classes else None},
        "attack": {"name": cfg.attack.attack, "target": cfg.attack.target, "text_key": key,
                   "num_poisons": int(is_poison.sum()), "num_train_pairs": len(train), "trigger": trigger_info},
        "refused": False, "defenses": {},
    }
    if cfg.attack.attack != "none" and metrics["poisoned"]["asr"] < cfg.min_asr:
        metrics["refused"] = True
        metrics["refusal_reason"] = (
            f"the poisoned model's ASR is {metrics['poisoned']['asr']:.1f}% < min_asr {cfg.min_asr}%: no backdoor "
            "worth removing; raise attack.poison_rate or victim.steps and run again")
        return metrics
    inputs = DefenseInputs(cfg, ctx, victim, clean, poisoned_set, data.get("heldout"), is_poison)
    for name in cfg.defenses():
        with ctx.timer(f"defense_{name}"):
            model, info = DEFENSES.get(name, "defense")(inputs)
        row = score(model)
        row.update(seconds=ctx.timings_s[f"defense_{name}"], **info)
        metrics["defenses"][name] = row
    first = metrics["defenses"][cfg.defenses()[0]]
    metrics["defended"] = {k: first[k] for k in ("ca", "asr", "kl") if k in first}
    ubt_row = metrics["defenses"].get("ubt", {})
    metrics["detection"] = dict(ubt_row.get("detection", {}))
    if ubt_row and cfg.attack.attack != "none":  # the pool for every scorer x direction (an evaluation, untimed)
        fraction = cfg.ubt.pool_count / len(train) if cfg.ubt.pool_count else cfg.ubt.pool_fraction
        metrics["detection"]["pool_by_choice"] = pool_recall_table(
            poisoned_set, is_poison, {"clean": clean, "poisoned": victim}, fraction=fraction, device=ctx.device)
    metrics["ubt_refused"] = ubt_row.get("refused")
    if "ubt" in cfg.defenses() and cfg.attack.attack != "none":  # the clean-model check on the reference
        with ctx.timer("clean_check_on_reference"):
            check = defend(reference, PairSubset(poisoned_set, clean_idx), dataclasses.replace(cfg.ubt),
                           clean_model=clean, device=ctx.device, ckpt_dir=ctx.stage_dir("check_reference"),
                           progress=ctx.progress)
        metrics["clean_model_check"] = {"refused": check.report.refused,
                                        "check": None if check.report.check is None
                                        else dataclasses.asdict(check.report.check)}
    return metrics


register_runner(Runner(
    name="ubt",
    help="UBT and baselines: poison CLIP with a backdoor, remove it, report CA, ASR, KL and detection",
    config_for=UBTRunConfig.for_profile,
    run=run,
    resolve=resolve,
    adapt=adapt,
    registries={"defense": DEFENSES},
    flags=(
        Flag("--dataset", "dataset", "classification spec (folder:PATH, cifar10) or caption spec (csv:PATH)"),
        Flag("--attack", "attack.attack", "badnet, blended, sig, wanet, ssba, trojvqa or none"),
        Flag("--defense", "defense", "comma-separated defences or all (help: list them)"),
        Flag("--poison-rate", "attack.poison_rate", "fraction of the fine-tuning pairs poisoned, in (0, 1)"),
        Flag("--target", "attack.target", "the target concept (default banana)"),
    ),
))
