"""Pass benchmarks of the noise protections: MEM (CLIP, image noise + text trigger), EM and TAP (classifiers).

Each builder takes the profile's own recipe (``quick`` at scales smoke/cpu, ``colab`` at gpu),
shortens its schedule to one round on a few batches, and lists the model work that schedule
needs (see ``benchmarks/passes.py``).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

import obstructlib as ob
from benchmarks.passes import FORWARD, Pass, Work, clip_train_step, with_fields
from obstructlib.data import load_dataset, load_pairs, seeded_subset, tokenize_captions
from obstructlib.engine import autocast
from obstructlib.methods.mem import MEMConfig, protect
from obstructlib.methods.mem.steps import PairState
from obstructlib.models import create_clip, create_model
from obstructlib.primitives.perturb import frozen, pgd
from obstructlib.primitives.poisons import (
    ErrorMaxConfig,
    ErrorMinConfig,
    error_maximizing_noise,
    error_minimizing_noise,
)

# scale -> (profile, batches in the pass, image size or None for the profile's)
_SIZES = {"smoke": ("quick", 2, None), "cpu": ("quick", 4, None), "gpu": ("colab", 2, 224)}


def _mem_recipe(scale: str, recipe: MEMConfig) -> MEMConfig:
    if scale == "smoke":
        return with_fields(recipe, rounds=1, text_rounds=1, train_steps=1, pgd_steps=1, num_candidates=2, batch_size=8)
    if scale == "gpu":
        return with_fields(recipe, rounds=1, text_rounds=1, train_steps=5, pgd_steps=2)
    return with_fields(recipe, rounds=1)  # cpu: one round (with its trigger search) of the quick recipe


def _mem_like(scale: str, device: torch.device, trigger: bool) -> Pass:
    profile, batches, size = _SIZES[scale]
    run_cfg = ob.config_for("mem", profile)
    recipe = _mem_recipe(scale, run_cfg.mem if trigger else run_cfg.em)
    size = size or run_cfg.image_size
    n = batches * recipe.batch_size
    dataset = run_cfg.dataset if profile == "quick" else "synthetic"
    pairs = load_pairs(dataset, None, "train", image_size=size, max_samples=n, progress=False)
    kw = {} if run_cfg.context_length is None else {"context_length": run_cfg.context_length}
    torch.manual_seed(0)
    model = create_clip(run_cfg.surrogate, None, device=device, image_size=size, **kw)
    unit = copy.deepcopy(model)  # the units run on a copy: the pass starts from the untouched surrogate
    B = recipe.batch_size
    tokens = tokenize_captions(unit, pairs.captions)
    x = torch.stack([pairs[i][0] for i in range(B)]).to(device)
    idx = torch.arange(B)
    k, K = recipe.trigger_tokens, recipe.num_candidates
    g = torch.Generator().manual_seed(0)
    triggers = torch.randint(1000, 2000, (n, k), generator=g)
    players = PairState(unit, tokens, triggers, torch.arange(n).numpy(), K, recipe.shuffle_captions, recipe.amp)
    train_step = clip_train_step(unit, recipe.surrogate, x, tokens[:B].long().to(device))

    def pgd_step() -> None:
        with frozen(unit):
            pgd(lambda z: players.image_loss(z, (idx,)), x, torch.zeros_like(x), eps=recipe.eps,
                step_size=recipe.step_size, steps=1)

    def hotflip() -> None:
        with frozen(unit):
            players.text_step((idx, x), torch.zeros_like(x))

    rounds, text_rounds = recipe.rounds, min(recipe.text_rounds, recipe.rounds) if k else 0
    work = [Work(f"surrogate AdamW step, batch {B}", rounds * recipe.train_steps, train_step),
            Work(f"PGD step on the image noise (frozen surrogate, shuffled captions), batch {B}",
                 rounds * batches * recipe.pgd_steps, pgd_step)]
    if text_rounds:
        work.append(Work(f"HotFlip update of {k}-token triggers ({K} candidates), batch {B}",
                         text_rounds * batches, hotflip, passes=FORWARD + 1 + k * K * FORWARD))
    name = "mem" if trigger else "mem-em"
    return Pass(name=name, run=lambda: protect(pairs, recipe, surrogate=model, device=device, progress=False),
                schedule=(f"{rounds} round(s): {recipe.train_steps} surrogate steps, {batches} batches x "
                          f"{recipe.pgd_steps} PGD steps" + (f", HotFlip k={k} K={K}" if text_rounds else "")),
                work=work, train_step=train_step,
                setting={"profile": profile, "arch": run_cfg.surrogate, "image_size": size, "pairs": n, "batch": B},
                note="not counted: the per-round monitor (surrogate loss on up to 8 protected and 8 clean batches)")


def mem(scale: str, device: torch.device) -> Pass:
    """MEM-k: surrogate steps, HotFlip trigger search, PGD on the image noise (arXiv 2407.16307)."""
    return _mem_like(scale, device, trigger=True)


def mem_em(scale: str, device: torch.device) -> Pass:
    """MEM's image-only baseline: error-minimising noise against the CLIP loss, no trigger."""
    return _mem_like(scale, device, trigger=False)


def _classifier_setup(scale: str, device: torch.device, batch: int) -> tuple:
    profile, batches, size = _SIZES[scale]
    run_cfg = ob.config_for("uc", profile)
    size = size or run_cfg.image_size
    n = batches * batch
    dataset = run_cfg.dataset if profile == "quick" else "synthetic"
    data = seeded_subset(load_dataset(dataset, None, "train", image_size=size, channels=3, progress=False), n, seed=0)
    torch.manual_seed(0)
    model = create_model(run_cfg.protector_model, num_classes=len(data.classes)).to(device)
    x = torch.stack([data[i][0] for i in range(batch)]).to(device)
    y = torch.as_tensor([data[i][1] for i in range(batch)], device=device)
    setting = {"profile": profile, "arch": run_cfg.protector_model, "image_size": size, "samples": n, "batch": batch}
    return run_cfg, data, model, x, y, batches, setting


def _classifier_units(unit: nn.Module, x: torch.Tensor, y: torch.Tensor, lr: float, amp: bool,
                      grad_clip: float | None, step_size: float, eps: float, minimize: bool) -> tuple:
    opt = torch.optim.SGD(unit.parameters(), lr=lr, momentum=0.9)

    def train_step() -> None:
        unit.train()
        with autocast(x.device, enabled=amp):
            loss = F.cross_entropy(unit(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip is not None:
            nn.utils.clip_grad_norm_(unit.parameters(), grad_clip)
        opt.step()
        unit.eval()

    def pgd_step() -> None:
        def loss(z: torch.Tensor) -> torch.Tensor:
            with autocast(x.device, enabled=amp):
                return F.cross_entropy(unit(z).float(), y)
        pgd(loss, x, torch.zeros_like(x), eps=eps, step_size=step_size, steps=1, minimize=minimize,
            frozen_module=unit)

    @torch.no_grad()
    def forward() -> None:
        with autocast(x.device, enabled=amp):
            unit(x)

    return train_step, pgd_step, forward


def em(scale: str, device: torch.device) -> Pass:
    """Sample-wise error-minimising noise (arXiv 2101.04898) with the UC runner's recipe."""
    run_cfg = ob.config_for("uc", _SIZES[scale][0])
    recipe: ErrorMinConfig = run_cfg.em
    recipe = with_fields(recipe, max_rounds=1, stop_acc=1.0,
                         **({"train_steps": 1, "steps": 1, "batch_size": 8} if scale == "smoke" else {}))
    run_cfg, data, model, x, y, batches, setting = _classifier_setup(scale, device, recipe.batch_size)
    unit = copy.deepcopy(model)
    train_step, pgd_step, forward = _classifier_units(unit, x, y, recipe.lr, recipe.amp, recipe.grad_clip,
                                                      recipe.step_size, recipe.eps, minimize=True)
    B, R = recipe.batch_size, recipe.max_rounds
    work = [Work(f"surrogate SGD step, batch {B}", R * recipe.train_steps, train_step),
            Work(f"PGD step (frozen surrogate, eval mode), batch {B}", R * batches * recipe.steps, pgd_step),
            Work(f"stop-criterion forward (accuracy on the perturbed set), batch {B}", R * batches, forward,
                 passes=FORWARD)]
    return Pass(name="em", run=lambda: error_minimizing_noise(model, data, recipe, device, progress=False),
                schedule=f"{R} round: {recipe.train_steps} SGD steps, {batches} batches x {recipe.steps} PGD steps, "
                         "accuracy pass",
                work=work, train_step=train_step, setting=setting)


def tap(scale: str, device: torch.device) -> Pass:
    """Targeted adversarial poisons (TAP, arXiv 2106.10807) with the UC runner's recipe."""
    run_cfg = ob.config_for("uc", _SIZES[scale][0])
    recipe: ErrorMaxConfig = run_cfg.tap
    if scale == "smoke":
        recipe = with_fields(recipe, steps=1, batch_size=8)
    run_cfg, data, model, x, y, batches, setting = _classifier_setup(scale, device, recipe.batch_size)
    train_step, pgd_step, _ = _classifier_units(copy.deepcopy(model), x, (y + 1) % len(data.classes),
                                                run_cfg.train.lr, recipe.amp, None, recipe.step_size, recipe.eps,
                                                minimize=True)
    B = recipe.batch_size
    work = [Work(f"targeted PGD step (frozen clean model), batch {B}", batches * recipe.steps, pgd_step)]
    return Pass(name="tap", run=lambda: error_maximizing_noise(model, data, recipe, device, progress=False),
                schedule=f"{batches} batches x {recipe.steps} PGD steps", work=work, train_step=train_step,
                setting=setting)
