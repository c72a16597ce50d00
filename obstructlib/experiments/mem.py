"""``obstruct mem``: protect image-caption pairs, let a hacker train CLIP on them, report clean retrieval.

The Multimodal Unlearnable Examples experiment (Liu et al., arXiv:2407.16307) and its baselines:

1. the protector perturbs every training PAIR with ``--method``: ``mem`` (per-pair image noise and
   a ``--trigger-tokens``-token HotFlip trigger after the start token, against a ``--surrogate``
   CLIP), ``mem-noshuffle`` (the same without caption shuffling), ``mem-classwise`` (random groups
   of pairs share one noise and one trigger), ``em`` (image-only error-minimising noise with the
   CLIP loss), ``tap`` (error-maximising noise against a CLIP trained on the clean pairs) or
   ``random`` (uniform noise); ``protect_fraction < 1`` protects only a seeded fraction of the pairs;
2. the hacker trains a FRESH ``--hacker`` CLIP (from scratch, or from ``hacker_pretrained``) on
   the published pairs -- images quantised to 8 bits, triggers as token ids -- optionally with a
   ``countermeasure`` (``crop``: random resized crops, ``jpeg``, ``strip``: drop the first k caption
   tokens), and the same recipe on the clean pairs gives the ``clean`` row;
3. both are evaluated on the CLEAN test split: image->text and text->image R@1/5/10 and median
   rank beside the analytic chance level, plus zero-shot accuracy when the data has class labels.
   ``hackers`` independent hackers (initial weights and data order from their own streams, never
   the surrogate's: :func:`~obstructlib.experiments.common.hacker_seeds`) each train both rows;
   the rows report their mean, ``*_sd`` their spread, ``hackers`` each one.

Every stage resumes from ``OUT/checkpoints``: the protection (``protector/``), the finished noise
and triggers (``store/``) and each hacker's two trainings (``hacker<i>/clean/``, ``hacker<i>/protected/``).
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypedDict

import numpy as np
import torch

from obstructlib.config import check_linked, link
from obstructlib.data import PerturbationStore, load_pairs
from obstructlib.engine import ClipTrainConfig, barrier, fit_clip, is_main_process
from obstructlib.errors import ConfigError, check_range, reading
from obstructlib.experiments import Flag, RunContext, Runner, register_runner
from obstructlib.experiments.common import check_run_folder, hacker_seeds, mean_and_sd
from obstructlib.methods.mem.evaluate import COUNTERMEASURES, HackerConfig, evaluate
from obstructlib.methods.mem.method import MEMConfig, MEMResult, clip_error_max_noise, protect
from obstructlib.metrics import chance_retrieval
from obstructlib.models import create_clip
from obstructlib.primitives.countermeasures import REGISTRY as COUNTERMEASURE_REGISTRY
from obstructlib.primitives.poisons import ErrorMaxConfig, random_noise_store
from obstructlib.primitives.text_triggers import decode_trigger
from obstructlib.profiles import Profile
from obstructlib.registry import Registry

RETRIEVAL_KEYS = ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "medr_i2t", "medr_t2i")


@dataclass
class MEMRunConfig:
    """Config of ``obstruct mem``.

    Attributes:
        dataset: caption spec (``csv:PATH``, ``flickr8k``, ``synthetic-captions`` ...) or a
            classification spec (``folder:PATH``, ``cifar10``) turned into templated captions.
        method: one of ``mem``, ``em``, ``tap``, ``random``, ``mem-classwise``, ``mem-noshuffle``.
        trigger_tokens: k of MEM-k (3 or 5); written into ``mem.trigger_tokens`` when set.
        surrogate: the protector's CLIP architecture (paper: RN50).
        surrogate_pretrained: open_clip tag for the fine-tuning setting; None: from scratch.
        hacker: the hacker's CLIP architecture (transfer: e.g. RN50 noise, ViT-B-32 hacker).
        hacker_pretrained: open_clip tag the hacker fine-tunes from; None: from scratch.
        hackers: independent hackers, each training a clean and a protected CLIP (at least 3 for a
            figure one reports).
        hacker_seed: base of the hackers' seeds: hacker ``i`` builds its CLIPs and orders its data
            with ``derive_seed(hacker_seed, "hacker", i)``, a stream the surrogate never uses; None:
            the run's ``--seed`` (which draws the subset and the protection). Set it to draw other
            hackers for the same protected pairs.
        image_size: square side in pixels of the stored images (and of the noise).
        model_image_size: input side of both CLIPs (None: the architecture's own; the model resizes
            the [0, 1] images itself, so the noise stays in the stored images' pixels).
        context_length: tokens per caption for both CLIPs (None: the architecture's own).
        max_train_samples: seeded subset of training IMAGES (all their captions kept); None: all.
        max_test_samples: the same for the test split.
        captions_per_image: templated captions per image (classification data only).
        protect_fraction: fraction of the training pairs published protected (partial protection).
        num_groups: groups of ``mem-classwise`` (pairs assigned at random).
        eps: L-inf budget of every method, [0, 1] pixel units; written into ``mem``, ``em``, ``tap``
            when set (a sub-config budget that differs is refused).
        countermeasure: the hacker's defence, ``none``, ``crop``, ``jpeg`` or ``strip``; applied to
            the clean row too, so the drop measures the protection, not the defence.
        crop_scale: smallest area fraction of ``crop`` (RandomResizedCrop scale ``(crop_scale, 1)``).
        jpeg_quality: quality of ``jpeg``.
        strip_tokens: tokens ``strip`` drops after the start token (None: ``trigger_tokens``).
        mem: MEM's schedule (official defaults: :meth:`MEMConfig.paper`).
        em: the EM baseline's schedule (:meth:`MEMConfig.em`).
        tap: the error-maximising baseline (one pass, 8 steps of 1/255).
        train: the hacker's recipe (official: AdamW 5e-4, wd 0.2, batch 128, 32 epochs, 10k warmup);
            also trains TAP's clean CLIP.
        cpu_bf16: bf16 autocast on a CPU with native bf16 (off by default: it moves results by
            rounding, and the quick figures are measured in float32).
    """

    dataset: str = "synthetic-captions"
    method: str = "mem"
    trigger_tokens: int = 3
    surrogate: str = "tiny-rn"
    surrogate_pretrained: str | None = None
    hacker: str = "tiny-rn"
    hacker_pretrained: str | None = None
    hackers: int = 1
    hacker_seed: int | None = None
    image_size: int = 32
    model_image_size: int | None = None
    context_length: int | None = None
    max_train_samples: int | None = 200
    max_test_samples: int | None = 100
    captions_per_image: int = 1
    protect_fraction: float = 1.0
    num_groups: int = 10
    eps: float = 8 / 255
    countermeasure: str = "none"
    crop_scale: float = 0.5
    jpeg_quality: int = 10
    strip_tokens: int | None = None
    mem: MEMConfig = field(default_factory=MEMConfig.paper)
    em: MEMConfig = field(default_factory=MEMConfig.em)
    tap: ErrorMaxConfig = field(default_factory=lambda: ErrorMaxConfig(steps=8, step_size=1 / 255,
                                                                       batch_size=128, random_start=False))
    train: ClipTrainConfig = field(default_factory=ClipTrainConfig)

    # One value, written to each place that uses it by --set (config.LINKED); validate refuses a mismatch.
    LINKED: ClassVar[dict[str, tuple[str, ...]]] = {"eps": ("mem.eps", "em.eps", "tap.eps"),
                                                     "trigger_tokens": ("mem.trigger_tokens",)}

    cpu_bf16: bool = False

    def validate(self) -> None:
        """Raise one-line :class:`ConfigError` for bad values (before anything runs)."""
        PROTECTIONS.get(self.method, "method")  # one line listing the registered protections
        if self.countermeasure not in COUNTERMEASURES:
            raise ConfigError(f"countermeasure={self.countermeasure!r}: use one of {', '.join(COUNTERMEASURES)}")
        check_range("trigger_tokens", self.trigger_tokens, 1, 20)
        check_range("hackers", self.hackers, 1, 100)
        check_range("eps", self.eps, 0.0, 127 / 255)
        check_range("image_size", self.image_size, 8, 1024)
        check_range("protect_fraction", self.protect_fraction, 0.0, 1.0)
        check_range("crop_scale", self.crop_scale, 0.05, 1.0)
        check_range("jpeg_quality", self.jpeg_quality, 1, 100)
        check_range("captions_per_image", self.captions_per_image, 1, 100)
        if self.num_groups < 1:
            raise ConfigError(f"num_groups={self.num_groups}: use at least 1 group")
        if self.context_length is not None and self.context_length < self.trigger_tokens + 4:
            raise ConfigError(f"context_length={self.context_length} leaves no room for a "
                              f"{self.trigger_tokens}-token trigger: use at least {self.trigger_tokens + 4}")
        for name in ("max_train_samples", "max_test_samples"):
            value = getattr(self, name)
            if value is not None and value < 2:
                raise ConfigError(f"{name}={value}: use at least 2, or none for the whole split")
        check_linked(self)  # one budget and one trigger length for every method
        if self.em.trigger_tokens != 0:
            raise ConfigError(
                f"em.trigger_tokens={self.em.trigger_tokens}: EM is image-only, use 0 (MEM has the trigger)"
            )
        for part in (self.mem, self.em, self.tap, self.train):
            part.validate()

    @classmethod
    def for_profile(cls, profile: Profile) -> MEMRunConfig:
        """Defaults scaled to a profile (the only place the profile enters).

        - quick (CPU, offline, minutes): 600 synthetic-shape images with one templated caption each
          (``synthetic``: like CIFAR-10 with CLIP prompts, so zero-shot accuracy is measured too),
          tiny-rn surrogate and hacker at 32 px from scratch, context 20; MEM 3 rounds x 20
          theta-steps, the trigger searched in the first round with K = 8, 4 PGD steps of 2/255 at
          batch 64; the hacker trains 150 steps of batch 64 at lr 1e-3. (On the compositional
          ``synthetic-captions`` set, 200 images x 5 captions, the same schedule did NOT lower the
          hacker's retrieval: its captions tell images apart, the shortcut brings no advantage.)
        - colab (one GPU): the profile's caption set (Flickr8k) at 224 px, RN50 surrogate from
          scratch, ViT-B-32 hacker fine-tuned from OpenAI weights for 2,000 steps; MEM with the
          fine-tuning-setting schedule scaled to 5 rounds.
        - paper: the official settings -- RN50 surrogate and hacker from scratch at 224 px, MEM
          20 rounds x 200 steps, 5 text rounds, K 16, 8 PGD steps of 1/255, batch 128; hacker
          AdamW 5e-4, wd 0.2, 32 epochs, 10,000 warmup steps.
        """
        return link(_PROFILE_TABLE[profile.name](cls, profile))


def _official_hacker(profile: Profile) -> ClipTrainConfig:
    return ClipTrainConfig(lr=5e-4, weight_decay=0.2, betas=(0.9, 0.999), eps=1e-8, batch_size=128,
                           steps=None, epochs=32, warmup_steps=10_000, num_workers=profile.num_workers)


def _quick(cls: type, profile: Profile) -> MEMRunConfig:
    surrogate = ClipTrainConfig(lr=1e-3, weight_decay=0.2, betas=(0.9, 0.999), eps=1e-8, warmup_steps=0)
    mem = MEMConfig(rounds=3, train_steps=20, text_rounds=1, num_candidates=8, pgd_steps=4,
                    step_size=2 / 255, batch_size=64, surrogate=surrogate)
    em = dataclasses.replace(mem, trigger_tokens=0, text_rounds=0, shuffle_captions=False)
    train = dataclasses.replace(_official_hacker(profile), lr=1e-3, batch_size=64, steps=150, epochs=None,
                                warmup_steps=15, log_every=5)
    return cls(dataset=profile.image_dataset, image_size=32, context_length=20, max_train_samples=600,
               max_test_samples=300, mem=mem, em=em,
               tap=ErrorMaxConfig(steps=4, step_size=2 / 255, batch_size=64, random_start=False), train=train)


def _colab(cls: type, profile: Profile) -> MEMRunConfig:
    return cls(dataset=profile.caption_dataset, surrogate="RN50", hacker="ViT-B-32",
               hacker_pretrained=profile.clip_pretrained, image_size=224,
               max_train_samples=profile.max_train_samples, max_test_samples=1000,
               mem=dataclasses.replace(MEMConfig.finetune(), rounds=5),
               train=dataclasses.replace(_official_hacker(profile), lr=profile.clip_lr, steps=profile.train_steps,
                                         epochs=None, warmup_steps=100))


def _paper(cls: type, profile: Profile) -> MEMRunConfig:
    return cls(dataset=profile.caption_dataset, surrogate="RN50", hacker="RN50", image_size=224,
               max_train_samples=None, max_test_samples=None, train=_official_hacker(profile))


# The profile table: profile name -> the runner's defaults in that profile (no branches elsewhere).
_PROFILE_TABLE = {"quick": _quick, "colab": _colab, "paper": _paper}


def resolve(cfg: MEMRunConfig, seed: int) -> MEMRunConfig:
    """The config as it runs: the protector's seeds are the run's ``--seed``; the ablations
    ``mem-noshuffle`` / ``mem-classwise`` write their switch into ``mem`` (so ``results.json`` shows it);
    the hacker recipe's ``train.seed`` is the first hacker's seed (each hacker's is in ``metrics.hackers``)."""
    cfg = copy.deepcopy(cfg)
    cfg.mem.seed = cfg.em.seed = cfg.tap.seed = seed
    cfg.mem.surrogate.seed = cfg.em.surrogate.seed = seed  # unused by MEM (its own seed orders the batches)
    if cfg.method == "mem-noshuffle":
        cfg.mem.shuffle_captions = False
    if cfg.method == "mem-classwise":
        cfg.mem.num_groups = cfg.num_groups
    cfg.train.seed = hacker_seeds(seed, cfg.hacker_seed, 1)[0]
    return cfg


# ---- protection ------------------------------------------------------------------------------
def _clip(cfg: MEMRunConfig, arch: str, pretrained: str | None, ctx: RunContext) -> Any:
    kw = {} if cfg.context_length is None else {"context_length": cfg.context_length}
    return create_clip(arch, pretrained, device=ctx.device, image_size=cfg.model_image_size, **kw)


# The protections, name -> protect(cfg, ctx, train, work) -> (result, info); the runner dispatches by lookup.
PROTECTIONS: Registry = Registry("protection")


def _no_trigger(store: Any, n: int) -> MEMResult:
    return MEMResult(store, torch.zeros(n, 0, dtype=torch.long), np.arange(n), [])


def _surrogate(cfg: MEMRunConfig, ctx: RunContext) -> Any:
    torch.manual_seed(ctx.seed)
    return _clip(cfg, cfg.surrogate, cfg.surrogate_pretrained, ctx)


@PROTECTIONS.register("random")
def _protect_random(cfg: MEMRunConfig, ctx: RunContext, train: Any, work: Any) -> tuple:
    """Uniform image noise in the eps-ball, no trigger (the "noise alone does nothing" baseline)."""
    with ctx.timer("noise_generation"):
        store = random_noise_store(len(train), tuple(train[0][0].shape), cfg.eps, seed=ctx.seed)
    return _no_trigger(store, len(train)), {}


@PROTECTIONS.register("tap")
def _protect_tap(cfg: MEMRunConfig, ctx: RunContext, train: Any, work: Any) -> tuple:
    """Error-maximising image noise against a CLIP trained on the clean pairs (TAP-like, arXiv 2106.10807)."""
    surrogate = _surrogate(cfg, ctx)
    with ctx.timer("surrogate_training"):
        fit_clip(surrogate, train, dataclasses.replace(cfg.train, seed=ctx.seed), ctx.device,
                 progress=ctx.progress, ckpt_dir=None if work is None else work / "clean_clip")
    with ctx.timer("noise_generation"):
        store = clip_error_max_noise(surrogate, train, cfg.tap, ctx.device, progress=ctx.progress)
    return _no_trigger(store, len(train)), {}


def _protect_min(cfg: MEMRunConfig, ctx: RunContext, train: Any, work: Any, recipe: MEMConfig) -> tuple:
    surrogate = _surrogate(cfg, ctx)
    with ctx.timer("noise_generation"):
        result = protect(train, recipe, surrogate=surrogate, device=ctx.device, ckpt_dir=work, progress=ctx.progress)
    info = {"history": result.history,
            "trigger_examples": [decode_trigger(surrogate.tokenizer, t) for t in result.triggers[:8]]}
    return result, info


@PROTECTIONS.register("mem")
def _protect_mem(cfg: MEMRunConfig, ctx: RunContext, train: Any, work: Any) -> tuple:
    """MEM-k (arXiv 2407.16307): per-pair image noise and a k-token HotFlip trigger, caption shuffling."""
    return _protect_min(cfg, ctx, train, work, cfg.mem)


@PROTECTIONS.register("mem-noshuffle")
def _protect_mem_noshuffle(cfg: MEMRunConfig, ctx: RunContext, train: Any, work: Any) -> tuple:
    """MEM without caption shuffling (the paper's ablation; ``mem.shuffle_captions`` is False)."""
    return _protect_min(cfg, ctx, train, work, cfg.mem)


@PROTECTIONS.register("mem-classwise")
def _protect_mem_classwise(cfg: MEMRunConfig, ctx: RunContext, train: Any, work: Any) -> tuple:
    """Class-wise MEM: ``num_groups`` random groups of pairs share one noise and one trigger."""
    return _protect_min(cfg, ctx, train, work, cfg.mem)


@PROTECTIONS.register("em")
def _protect_em(cfg: MEMRunConfig, ctx: RunContext, train: Any, work: Any) -> tuple:
    """Image-only error-minimising noise with the CLIP loss (arXiv 2101.04898 applied to CLIP), no trigger."""
    return _protect_min(cfg, ctx, train, work, cfg.em)


def _protect(cfg: MEMRunConfig, ctx: RunContext, train: Any) -> tuple[MEMResult, dict[str, Any]]:
    """Run ``cfg.method`` on the training pairs; returns the noise, triggers and a summary."""
    return PROTECTIONS.get(cfg.method)(cfg, ctx, train, ctx.stage_dir("protector"))


def _stored_protection(cfg: MEMRunConfig, ctx: RunContext, train: Any) -> tuple[MEMResult, dict, bool]:
    """The finished protection of this run folder, or a new one (saved before the hacker trains)."""
    folder = ctx.stage_dir("store")
    if folder is not None and (folder / "protect.json").is_file():
        with reading(folder / "protect.json"):
            meta = json.loads((folder / "protect.json").read_text())
        store = PerturbationStore.load(folder / "store.npy")
        with reading(folder / "triggers.npy"):
            triggers = torch.from_numpy(np.load(folder / "triggers.npy"))
        with reading(folder / "trigger_rows.npy"):
            rows = np.load(folder / "trigger_rows.npy")
        result = MEMResult(store, triggers, rows, meta["info"].get("history", []))
        return result, meta["info"], True
    result, info = _protect(cfg, ctx, train)
    if folder is not None and is_main_process():  # under torchrun every rank holds the same result
        result.store.save(folder / "store.npy")
        np.save(folder / "triggers.npy", result.triggers.numpy())
        np.save(folder / "trigger_rows.npy", result.trigger_rows)
        payload = {"method": cfg.method, "num_pairs": len(train), "info": info}
        (folder / "protect.json").write_text(json.dumps(payload))  # written last: the marker
    barrier()
    return result, info, False


# ---- the hacker ------------------------------------------------------------------------------
def _hacker(cfg: MEMRunConfig, seed: int) -> HackerConfig:
    """Hacker ``seed``: its clean and protected rows start from the same weights and data order."""
    strip = cfg.strip_tokens if cfg.strip_tokens is not None else cfg.trigger_tokens
    return HackerConfig(
        arch=cfg.hacker, pretrained=cfg.hacker_pretrained, model_image_size=cfg.model_image_size,
        context_length=cfg.context_length, countermeasure=cfg.countermeasure, image_size=cfg.image_size,
        crop_scale=cfg.crop_scale, jpeg_quality=cfg.jpeg_quality, strip_tokens=strip,
        train=cfg.train, seed=seed,  # the seed sets the initial weights and the data order
    )


class _PairsKwargs(TypedDict):
    """The :func:`~obstructlib.data.load_pairs` arguments the train and test splits share."""

    image_size: int
    captions_per_image: int
    seed: int
    progress: bool


LOSS_STEPS = (25, 50, 100)  # the shortcut is learnt early: the hacker's loss at these steps


def _loss_at(history: dict[str, Any], steps: tuple[int, ...] = LOSS_STEPS) -> dict[str, float]:
    """The hacker's training loss at the last logged step at or before each of ``steps``."""
    logged = list(zip(history.get("step", []), history.get("loss", [])))
    return {str(s): float(next(loss for step, loss in reversed(logged) if step <= s))
            for s in steps if any(step <= s for step, _ in logged)}


def _row(metrics: dict[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if k in RETRIEVAL_KEYS or k == "zero_shot_acc"}


def run(cfg: MEMRunConfig, ctx: RunContext) -> dict[str, Any]:
    """Protect, train clean and protected hackers, evaluate both on the clean test split."""
    check_run_folder(cfg, ctx)
    with ctx.timer("data"):
        kw: _PairsKwargs = {"image_size": cfg.image_size, "captions_per_image": cfg.captions_per_image,
                            "seed": ctx.seed, "progress": ctx.progress}
        train = load_pairs(cfg.dataset, ctx.data_root, "train", max_samples=cfg.max_train_samples, **kw)
        test = load_pairs(cfg.dataset, ctx.data_root, "test", max_samples=cfg.max_test_samples, **kw)
        if hasattr(train, "decode_all") and train.num_images * cfg.image_size**2 * 3 < 2**31:
            train.decode_all()  # decode once: every round reads every pair
    used: list[tuple[ClipTrainConfig | MEMConfig, str]] = [(cfg.train, "train")]
    if cfg.method.startswith("mem"):
        used.append((cfg.mem, "mem"))
    elif cfg.method == "em":
        used.append((cfg.em, "em"))
    for part, name in used:
        if part.batch_size > len(train):
            raise ConfigError(f"{name}.batch_size={part.batch_size} exceeds the {len(train)} training pairs: lower it")
    result, info, resumed = _stored_protection(cfg, ctx, train)
    rng = np.random.default_rng(ctx.seed + 17)
    protected = np.zeros(len(train), bool)
    protected[rng.permutation(len(train))[: round(cfg.protect_fraction * len(train))]] = True
    runs: dict[str, list[dict[str, Any]]] = {"clean": [], "protected": []}
    seeds = hacker_seeds(ctx.seed, cfg.hacker_seed, cfg.hackers)
    for i, seed in enumerate(seeds):
        hacker, folder = _hacker(cfg, seed), ctx.stage_dir(f"hacker{i}")
        for row, protection in (("clean", None), ("protected", result)):
            with ctx.timer(f"hacker_{row}"):
                runs[row].append(evaluate(train, hacker, test=test, protection=protection, protected=protected,
                                          device=ctx.device, ckpt_dir=None if folder is None else folder / row,
                                          progress=ctx.progress))
    # the timers above include each hacker's test evaluation; "evaluate" reports that part alone
    ctx.timings_s["evaluate"] = round(sum(r["seconds"]["evaluate"] for rs in runs.values() for r in rs), 3)
    (clean, clean_sd), (prot, prot_sd) = (mean_and_sd([_row(r["metrics"]) for r in runs[row]])
                                          for row in ("clean", "protected"))
    drops = [{k: _row(c["metrics"])[k] - _row(p["metrics"])[k] for k in _row(p["metrics"]) if not k.startswith("medr")}
             for c, p in zip(runs["clean"], runs["protected"])]
    clean_hist, prot_hist = runs["clean"][0]["history"], runs["protected"][0]["history"]
    per_image = max(1, round(len(test) / test.num_images))
    chance = chance_retrieval(test.num_images, per_image)
    if "zero_shot_acc" in clean and getattr(test, "classes", None):
        chance["zero_shot_acc"] = 1.0 / len(test.classes)
    steps = len(clean_hist.get("step", [])) and clean_hist["step"][-1]
    gen_s = ctx.timings_s.get("noise_generation", 0.0)
    # training time per step from the history (a clean hacker resumed from a checkpoint costs ~0 s here)
    step_s = (clean_hist.get("seconds") or [ctx.timings_s["hacker_clean"] / cfg.hackers])[-1] / max(steps, 1)
    drop, drop_sd = mean_and_sd(drops)
    loss_at = {row: mean_and_sd([_loss_at(r["history"]) for r in runs[row]])[0] for row in runs}
    return {
        "clean": clean, "protected": prot, "chance": chance, "drop": drop,
        "clean_sd": clean_sd, "protected_sd": prot_sd, "drop_sd": drop_sd,
        "hackers": [{"seed": s, "clean": _row(c["metrics"]), "protected": _row(p["metrics"])}
                    for s, c, p in zip(seeds, runs["clean"], runs["protected"])],
        "noise_bytes_per_pair": result.bytes_per_pair,
        "noise_linf": (float(np.abs(result.store.data.astype(np.int16)).max()) / 255.0
                       if result.store.data.size else 0.0),
        "throughput": {"noise_pairs_per_s": len(train) / gen_s if gen_s else None,
                       "clip_train_steps_per_s": 1.0 / step_s if step_s else None,
                       "noise_cost_in_train_steps": gen_s / step_s if step_s and gen_s else None},
        "hacker_loss_at": loss_at,  # mean over hackers, by training step
        "curves": {"clean": {"step": clean_hist.get("step", []), "loss": clean_hist.get("loss", [])},
                   "protected": {"step": prot_hist.get("step", []), "loss": prot_hist.get("loss", [])}},  # hacker 0
        "method": cfg.method, "countermeasure": cfg.countermeasure, "protect_fraction": cfg.protect_fraction,
        "num_train_pairs": len(train), "num_train_images": int(train.num_images),
        "num_test_images": int(test.num_images), "store_mode": result.store.mode,
        "store_resumed": resumed, "protection": info,
    }


register_runner(Runner(
    name="mem",
    help="Multimodal Unlearnable Examples and baselines: protect image-caption pairs, train a hacker CLIP, "
    "report clean retrieval",
    config_for=MEMRunConfig.for_profile,
    run=run,
    resolve=resolve,
    registries={"method": PROTECTIONS, "countermeasure": COUNTERMEASURE_REGISTRY},
    flags=(
        Flag("--dataset", "dataset", "caption spec (csv:PATH, flickr8k, synthetic-captions) or folder:PATH/cifar10"),
        Flag("--method", "method", "protection (help: list them)"),
        Flag("--trigger-tokens", "trigger_tokens", "trigger length k (MEM-3: 3, MEM-5: 5)"),
        Flag("--surrogate", "surrogate", "protector's CLIP architecture (tiny-rn, RN50, ViT-B-32 ...)"),
        Flag("--hacker", "hacker", "hacker's CLIP architecture"),
        Flag("--countermeasure", "countermeasure", "hacker's defence: " + ", ".join(COUNTERMEASURES)),
    ),
))
