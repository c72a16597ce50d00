"""Pass benchmarks of the two model-editing protections: UBT (CLIP backdoor unlearning) and LTO (obstruction).

Each builder takes the profile's own recipe (``quick`` at scales smoke/cpu, ``colab`` at gpu), starts
from an UNTRAINED model of the profile's architecture (the timing does not depend on what the weights
learned), shortens the schedule where the scale needs it, and lists the model work that schedule
needs (see ``benchmarks/passes.py``).
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
import torch.nn.functional as F

import obstructlib as ob
from benchmarks.passes import FORWARD, Pass, Work, clip_train_step, with_fields
from obstructlib.data import load_dataset, load_pairs, seeded_subset
from obstructlib.engine import autocast
from obstructlib.engine.clip import clip_adamw
from obstructlib.experiments.lto import _class_sets
from obstructlib.methods.lto.learners import (
    CIFAR_TEMPLATES,
    _groups,
    init_learner,
    learner_config,
    learner_logits,
    learner_text,
)
from obstructlib.methods.lto.method import LTOConfig, obstruct, per_class_pools, restore, snapshot, split_gradients
from obstructlib.methods.lto.tasks import ClipTask, draw_shots
from obstructlib.methods.ubt.attacks import build_trigger, poison_pairs
from obstructlib.methods.ubt.method import UBTConfig, defend
from obstructlib.methods.ubt.steps import (
    PairTensors,
    _features,
    _info_nce,
    contrastive_unlearning_loss,
    keep_top_tokens,
    stage_steps,
    token_attributions,
)
from obstructlib.models import create_clip
from obstructlib.primitives.augment import resized_crop_flip

# scale -> (profile, image size or None for the profile's)
_PROFILE = {"smoke": ("quick", None), "cpu": ("quick", None), "gpu": ("colab", 224)}




# ---- UBT ------------------------------------------------------------------------------------------
def _ubt_recipe(scale: str, recipe: UBTConfig) -> tuple[UBTConfig, int]:
    """The defence's recipe at ``scale`` and the size of D. Every scale switches off the two
    data-dependent exits so the schedule is the config's: ``check`` (an untrained model has no backdoor
    and would be refused before the ascent), ``consensus`` (D_u would shrink to the candidates the
    untrained model happens to agree on) and the ascent's early stop (``patience``)."""
    fixed = {"check": False, "consensus": False, "patience": 1_000_000}
    if scale == "smoke":  # 120 pairs, one step of each stage (batch 8), 2 IG steps
        short = {"steps": 1, "epochs": None, "batch_size": 8}
        return with_fields(recipe, overfit=with_fields(recipe.overfit, **short), ig_steps=2, negatives=8,
                           unlearn=with_fields(recipe.unlearn, **short), **fixed), 120
    if scale == "gpu":  # colab's recipe on 512 synthetic pairs: a pool of 64, D_u of 8 (64 Cartesian pairs)
        return with_fields(recipe, pool_count=64, unlearn_count=8, overfit=with_fields(recipe.overfit, epochs=2),
                           unlearn=with_fields(recipe.unlearn, epochs=2), **fixed), 512
    return with_fields(recipe, **fixed), 0  # cpu: the quick recipe as it is, on quick's D (train_samples)


def ubt(scale: str, device: torch.device) -> Pass:
    """UBT (arXiv 2409.19526): score D, overfit a copy on the suspicious pool, attribute tokens, Cartesian ascent."""
    profile, size = _PROFILE[scale]
    run_cfg = ob.config_for("ubt", profile)
    cfg, n = _ubt_recipe(scale, run_cfg.ubt)
    n = n or int(run_cfg.train_samples)
    size = size or run_cfg.image_size
    dataset = run_cfg.dataset if profile == "quick" else "synthetic"
    train = load_pairs(dataset, None, "train", image_size=size, max_samples=n,
                       captions_per_image=run_cfg.captions_per_image, progress=False)
    if hasattr(train, "decode_all"):
        train.decode_all()
    kw = {} if run_cfg.context_length is None else {"context_length": run_cfg.context_length}
    torch.manual_seed(0)
    model = create_clip(run_cfg.arch, None, device=device, image_size=size, **kw).eval()  # the "poisoned" model
    clean = copy.deepcopy(model) if cfg.pool_scorer == "clean" else None  # the pretrained CLIP, when it scores
    images = torch.stack([train.get_image(i) for i in range(min(train.num_images, 256))])
    trigger, _ = build_trigger(run_cfg.attack, images=images, clean_model=model, device=device)
    pairs = poison_pairs(train, trigger, run_cfg.attack)  # the runner's poisoned D (SIG 5% in quick)

    # the schedule, as defend() runs it
    view = PairTensors(pairs, model)
    pool = cfg.pool_count or math.ceil(cfg.pool_fraction * n)
    k = min(cfg.unlearn_count or max(1, int(np.ceil(cfg.unlearn_fraction * n))), pool)  # D_u (no consensus)
    cart = k * k if cfg.cartesian else k
    cart = min(cart, cfg.max_pairs) if cfg.max_pairs is not None else cart
    overfit_steps, unlearn_steps = stage_steps(pool, cfg.overfit), stage_steps(cart, cfg.unlearn)
    Bs = min(256, len(pairs))  # pair_similarities' batch
    # images encoded: all of D's (the poisoned copies and the originals they replaced), then the pool's
    # twice (before and after overfitting; one caption per image, so one image per pool pair)
    n_images, n_captions = pairs.num_images + 2 * pool, len(pairs) + 2 * pool
    retain = cfg.retain_weight > 0 and cfg.negatives > 0
    n_neg = min(cfg.negatives, n - pool)

    unit = copy.deepcopy(model)  # the units run on a copy: the pass starts from the untouched model
    Bo, Bu = min(cfg.overfit.batch_size, pool), min(cfg.unlearn.batch_size, cart)
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(n, generator=g).numpy()
    x_s, t_s = view.batch(order[:Bs])
    x_s, t_s = x_s.to(device), t_s.to(device)
    x_p, t_p = view.batch(order[:Bo])  # an overfit batch: pool pairs ...
    x_n, t_n = view.batch(order[Bo:2 * Bo])  # ... and as many normal pairs
    x_k, t_k = view.batch(order[:k])  # the unlearning candidates
    masked = keep_top_tokens(t_k, torch.rand(t_k.shape, generator=g), cfg.top_tokens, model)
    a = torch.randint(0, k, (Bu,), generator=g)
    x_u, t_u = x_k[a], masked[torch.randint(0, k, (Bu,), generator=g)]  # a batch of the Cartesian set
    x_neg, t_neg = view.batch(order[k:k + n_neg])
    x_r, t_r = view.batch(order[k + n_neg:k + 2 * n_neg])
    opt_o, opt_u = clip_adamw(unit, cfg.overfit), clip_adamw(unit, cfg.unlearn)

    def train_mode() -> None:  # train_stage(freeze_norm_stats=True): BatchNorm statistics stay fixed
        unit.train()
        for m in unit.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()

    def finish(opt: torch.optim.Optimizer, loss: torch.Tensor, recipe) -> None:
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if recipe.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(unit.parameters(), recipe.grad_clip)
        opt.step()
        with torch.no_grad():
            unit.logit_scale.clamp_(0.0, math.log(recipe.max_logit_scale))
        float(loss.detach())  # train_stage logs every step's loss
        unit.eval()

    @torch.no_grad()
    def encode_images() -> None:
        with autocast(device):
            unit.encode_image(x_s, normalize=True)

    @torch.no_grad()
    def encode_captions() -> None:
        with autocast(device):
            unit.encode_text(t_s, normalize=True)

    def overfit_step() -> None:  # steps.overfit's loss_fn (eq. 3) and train_stage's update
        train_mode()
        u, v, _ = _features(unit, x_p, t_p, device, cfg.overfit.amp)
        loss = -(u * v).sum(-1).mean()
        if cfg.overfit_reg_weight > 0:
            u, v, s = _features(unit, x_n, t_n, device, cfg.overfit.amp)
            loss = loss + cfg.overfit_reg_weight * _info_nce(u, v, s)
        finish(opt_o, loss, cfg.overfit)

    def attribute() -> None:
        token_attributions(unit, x_k, t_k, method=cfg.attribution, ig_steps=cfg.ig_steps, device=device)

    def unlearn_step() -> None:  # steps.unlearn's loss_fn (variant text: masked captions) and the update
        train_mode()
        u, v, s = _features(unit, x_u, t_u, device, cfg.unlearn.amp)
        neg_u = neg_v = None
        if cfg.negatives > 0:
            neg_u, neg_v, _ = _features(unit, x_neg, t_neg, device, cfg.unlearn.amp)
        if cfg.max_loss is None:
            loss = -contrastive_unlearning_loss(u, v, s, neg_u, neg_v)
        elif neg_u is not None:
            rows = contrastive_unlearning_loss(u, v, s, neg_u, neg_v, reduction="none")
            bool((rows.detach() >= cfg.max_loss).all())
            loss = -rows.clamp(max=cfg.max_loss).mean()
        else:
            plain = contrastive_unlearning_loss(u, v, s)
            float(plain.detach())
            loss = -plain.clamp(max=cfg.max_loss)
        if retain:
            ru, rv, rs = _features(unit, x_r, t_r, device, cfg.unlearn.amp)
            loss = loss + cfg.retain_weight * _info_nce(ru, rv, rs)
        finish(opt_u, loss, cfg.unlearn)

    B = cfg.overfit.batch_size
    train_step = clip_train_step(unit, cfg.overfit, x_p.to(device), t_p.to(device))

    per_fwd = FORWARD * Bs / Bo / 2  # half a forward of Bs pairs, in training steps of Bo pairs
    ascent_batches = 1 + (cfg.negatives > 0) + retain
    work = [Work(f"pair scoring: encode_image, batch {Bs} (no grad)", n_images / Bs, encode_images, per_fwd),
            Work(f"pair scoring: encode_text, batch {Bs} (no grad)", n_captions / Bs, encode_captions, per_fwd),
            Work(f"overfit AdamW step: {Bo} pool + {Bo} normal pairs", overfit_steps, overfit_step,
                 passes=1 + (cfg.overfit_reg_weight > 0)),
            Work(f"token attribution ({cfg.attribution}"
                 + (f", {cfg.ig_steps} steps" if cfg.attribution == "integrated_gradients" else "")
                 + f") of {k} captions", 1, attribute,
                 passes=k / Bo * FORWARD * (1 + 2 * (cfg.ig_steps if cfg.attribution != "grad_x_input" else 1))),
            Work(f"unlearning AdamW step: {Bu} Cartesian pairs + {n_neg} negatives"
                 + (f" + {n_neg} retain pairs" if retain else ""), unlearn_steps, unlearn_step,
                 passes=(Bu + n_neg * (ascent_batches - 1)) / Bo)]
    return Pass(name="ubt",
                run=lambda: defend(model, pairs, cfg, clean_model=clean, device=device, progress=False),
                schedule=(f"score {len(pairs)} pairs + pool {pool} x2; overfit {overfit_steps} steps; "
                          f"attribute {k} captions; unlearn {cart} pairs, {unlearn_steps} steps"),
                work=work, train_step=train_step,
                setting={"profile": profile, "arch": run_cfg.arch, "image_size": size, "pairs": len(pairs),
                         "batch": B, "poisons": int(pairs.is_poison.sum())},
                note=("untrained model (no victim training); check, consensus and the ascent's early stop off "
                      "(data-dependent exits); not counted: tokenising and decoding captions, image reads, "
                      "the two model deepcopies (the tokenizer shared since ClipModel.__deepcopy__), "
                      "fresh AdamW state per stage"))


# ---- LTO ------------------------------------------------------------------------------------------
_LTO_STEPS = {"smoke": 1, "cpu": 10, "gpu": 3}


def lto(scale: str, device: torch.device) -> Pass:
    """Learning to Obstruct (arXiv 2409.19210): the first-order outer loop with the defender's CE learner."""
    profile, size = _PROFILE[scale]
    run_cfg = ob.config_for("lto", profile)
    cfg: LTOConfig = with_fields(run_cfg.lto, steps=_LTO_STEPS[scale], method="lto")
    size = size or run_cfg.image_size
    dataset = run_cfg.dataset if profile == "quick" else "synthetic"
    train = load_dataset(dataset, None, "train", image_size=size, channels=3, progress=False)
    classes = [c.replace("_", " ") for c in train.classes]
    per_class = run_cfg.attacker_pool + run_cfg.defender_pool
    sub = seeded_subset(train, min(len(train), 2 * per_class * len(classes)), seed=0)  # pools: 25 per class
    x_all, y_all = zip(*(sub[i] for i in range(len(sub))))
    x_all, y_all = torch.stack(list(x_all)).float(), torch.as_tensor(y_all).long()
    _, dfn = per_class_pools(y_all, (run_cfg.attacker_pool, run_cfg.defender_pool), seed=42)
    px, py = x_all[dfn], y_all[dfn]  # the defender's pool (5 per class)
    own = getattr(train, "superclasses", None)
    superclass_of = getattr(train, "superclass_of", None)
    own = None if own is None or superclass_of is None else {
        name: tuple(classes[c] for c in range(len(classes)) if superclass_of[c] == j) for j, name in enumerate(own)}
    restricted = next(iter(_class_sets(run_cfg.restricted, classes, own).values()))
    templates = list(CIFAR_TEMPLATES[:run_cfg.templates])
    learner = learner_config(run_cfg.learner, "defender", **run_cfg.defender.given())
    kw = {} if run_cfg.context_length is None else {"context_length": run_cfg.context_length}
    torch.manual_seed(0)
    model = create_clip(run_cfg.arch, None, device=device, image_size=size, **kw).eval()  # an untrained backbone
    task = ClipTask.from_config(model, px, py, classes, templates, restricted, learner, cfg, device=device)

    # the schedule: per outer step and task, the learner's epochs over k_learn shots per class in
    # batches (classifier rebuilt at every resample_every-th step), then D_obs's losses and g_R, g_O
    C = len(classes)
    n_fsc, n_obs = cfg.k_learn * C, cfg.k_obs * C
    bs = learner.batch_size
    sizes = [min(bs, n_fsc - s) for s in range(0, n_fsc, bs)] * learner.epochs if cfg.method != "nof" else []
    kinds: dict[tuple[int, bool], int] = {}
    for step, b in enumerate(sizes):
        key = (b, step % learner.resample_every == 0)
        kinds[key] = kinds.get(key, 0) + 1
    T = cfg.tasks_per_step

    g = torch.Generator().manual_seed(0)
    fsc = draw_shots(py, cfg.k_learn, g)
    obs = draw_shots(py, cfg.k_obs, g)

    # inner learner steps: on a copy in training_only's state (eval mode, only the learner's groups train)
    inner = copy.deepcopy(model)
    state = init_learner(inner, px[fsc].to(device), py[fsc], classes, templates, learner, generator=g, device=device)
    adamw_groups, _ = _groups(inner, state, learner)
    trained = {id(p) for grp in adamw_groups for p in grp["params"]}
    for p in inner.parameters():
        p.requires_grad_(id(p) in trained)
    inner.eval()
    opt = torch.optim.AdamW(adamw_groups, eps=learner.eps)
    with torch.no_grad():
        text0 = learner_text(inner, state, num_templates=1, generator=g, device=device).detach()

    def inner_step(b: int, rebuild: bool):
        x = resized_crop_flip(px[fsc[:b]], g, learner.min_crop).to(device)
        y = py[fsc[:b]].to(device)

        def fn() -> None:
            text = (learner_text(inner, state, num_templates=1, grad_fraction=learner.resample_fraction,
                                 generator=g, device=device) if rebuild else text0)
            with autocast(device):
                loss = F.cross_entropy(learner_logits(inner, state, x, text, learner), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return fn

    # D_obs's losses at the (adapted) weights and the two gradients, through the task's own code
    outer = copy.deepcopy(model)
    task_u = ClipTask.from_config(outer, px, py, classes, templates, restricted, learner, cfg, device=device)
    params = [p for _, p in task_u.parameters(cfg.scope)]
    head = init_learner(outer, px[fsc].to(device), py[fsc], classes, templates, learner, generator=g, device=device)

    def obs_gradients() -> None:
        losses, is_r = task_u.losses(head, (fsc, obs), g)
        split_gradients(losses, is_r, params)

    g_r = [torch.randn_like(p) * 1e-3 for p in params]
    g_o = [torch.randn_like(p) * 1e-3 for p in params]

    def outer_update() -> None:  # obstruct()'s bookkeeping of one outer step around the tasks
        saved = snapshot(outer)
        sum_r = [torch.zeros_like(p) for p in params]
        sum_o = [torch.zeros_like(p) for p in params]
        for _ in range(T):
            restore(outer, saved)
            for acc, gr in zip(sum_r, g_r):
                acc.add_(gr.clamp(-cfg.grad_clip, cfg.grad_clip))
            for acc, go in zip(sum_o, g_o):
                acc.add_(go.clamp(-cfg.grad_clip, cfg.grad_clip) if cfg.clip_other else go)
        with torch.no_grad():
            for p, s_r, s_o in zip(params, sum_r, sum_o):
                p.add_(cfg.lr * (cfg.lambda_r * s_r - cfg.effective_lambda_o * s_o) / T)

    # the plain supervised step: the image tower on the learner's batch against a fixed text head
    plain = copy.deepcopy(model)
    opt_p = torch.optim.AdamW(plain.visual.parameters(), lr=learner.lr_visual, eps=learner.eps)
    x_b, y_b = px[fsc[:bs]].to(device), py[fsc[:bs]].to(device)

    def train_step() -> None:
        plain.train()
        with autocast(device):
            loss = F.cross_entropy(plain.logit_scale.exp().detach() * plain.encode_image(x_b).float() @ text0.t(), y_b)
        opt_p.zero_grad(set_to_none=True)
        loss.backward()
        opt_p.step()
        plain.eval()

    work = [Work(f"inner CE learner AdamW step, batch {b}" + (", classifier rebuilt" if rebuild else ""),
                 cfg.steps * T * count, inner_step(b, rebuild), passes=b / bs)
            for (b, rebuild), count in sorted(kinds.items(), reverse=True)]
    work += [Work(f"D_obs losses ({n_obs} images) + g_R, g_O (two backwards)", cfg.steps * T, obs_gradients,
                  passes=n_obs / bs * FORWARD * 5),
             Work(f"outer update: snapshot, {T} restore(s) + clamp/accumulate, SGD on P "
                  f"({sum(p.numel() for p in params)} values)", cfg.steps, outer_update, passes=0.0)]
    return Pass(name="lto", run=lambda: obstruct(task, cfg),
                schedule=(f"{cfg.steps} outer steps x {T} task: {len(sizes)} learner steps (batches {sizes}, "
                          f"classifier every {learner.resample_every}), D_obs {n_obs} images"),
                work=work, train_step=train_step,
                setting={"profile": profile, "arch": run_cfg.arch, "image_size": size, "classes": C, "batch": bs,
                         "learner": learner.kind, "restricted": [classes[c] for c in restricted]},
                note=("untrained backbone (no pretraining); no attacker evaluation (obstruct(evaluate=None)); "
                      "not counted: crop-flip augmentation, shot draws, the learner's per-task AdamW and "
                      "training_only set-up"))

