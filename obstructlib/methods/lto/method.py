"""Learning to Obstruct (LTO): meta-learn a backbone that is a poor start for restricted classes.

A released backbone theta lets anyone run a few-shot (FSC) learner F on a handful of shots. LTO
changes theta so that F run from it learns the restricted classes R badly while the other classes
R' stay learnable (paper eq. 1, spec 1.1):

    min_theta  E_t [ lambda_O L_R'(F(theta, D_fsc^t); D_obs^t) - lambda_R L_R(F(theta, D_fsc^t); D_obs^t) ]

solved first-order, MAML-style but in reverse (spec 1.2, 2.2). Per outer step, for each of
``tasks_per_step`` tasks drawn from the defender's pool (``k_learn`` shots per class for the inner
run, ``k_obs`` for the obstruction set):

1. save theta; run F from theta on D_fsc (:meth:`ObstructionTask.adapt`);
2. at the adapted weights, the per-sample CE of D_obs split by label into R and R'
   (:meth:`ObstructionTask.losses`); g_R = grad of mean L_R clamped to +-``grad_clip``,
   g_O = grad of mean L_R' (the official code forgot to clamp g_O: ``clip_other`` restores it);
3. restore theta (bit-exact) and, after all tasks, ``theta_P += lr * (lambda_R g_R - lambda_O g_O)``
   (plain SGD, no state), on the obstructed parameters P only.

Baselines by configuration: ``only-r`` (lambda_O = 0) and ``nof`` (no inner run: the gradients are
taken at theta with the learner's fresh head). SSD lives in :mod:`~obstructlib.methods.lto.ssd`.

References:
    Zheng et al., Learning to Obstruct Few-Shot Image Classification over Restricted Classes,
    ECCV 2024, arXiv:2409.19210. Finn et al., MAML, arXiv:1703.03400 (first-order MAML).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from tqdm.auto import tqdm

from obstructlib.engine.checkpoint import has_checkpoint, load_checkpoint, save_checkpoint
from obstructlib.errors import ConfigError, check_min

__all__ = ["METHODS", "LTOConfig", "LTOResult", "ObstructionTask", "obstruct", "per_class_pools", "restore", "snapshot",
           "split_gradients"]

METHODS = ("lto", "only-r", "nof")
SCOPES = ("visual", "visual+token")


@dataclass
class LTOConfig:
    """The obstruction loop's settings; defaults are the official CIFAR100 CLIP values.

    Attributes:
        method: ``lto``, ``only-r`` (lambda_O forced to 0) or ``nof`` (no inner run).
        steps: outer steps E (CIFAR100 100, ImageNet 50).
        lr: outer SGD rate eta (CIFAR100 1e-6, ImageNet 1e-5, SUN397 4e-6, CelebA 4e-5).
        lambda_r: weight of the ascended restricted-class loss.
        lambda_o: weight of the descended other-class loss.
        tasks_per_step: tasks averaged per outer step (1).
        grad_clip: element-wise clamp of g_R (1.0).
        clip_other: also clamp g_O [deviation; the official code computes the clamp and drops it].
        scope: obstructed parameters: ``visual`` (the official code: the image tower's non-``bn``
            parameters, since its token-embedding pattern never matched) or ``visual+token`` (the
            paper's intent: also the token embedding, stepped ``token_lr_scale`` times faster).
        token_lr_scale: the token embedding's outer-rate multiplier (50).
        k_learn: shots per class of the inner run (4, from the 5-shot defender pool).
        k_obs: shots per class of the obstruction set (1).
        obs_disjoint: draw D_obs from the pool images D_fsc left out [deviation; the official code
            draws both independently, so they can overlap].
        obs_batch: obstruction images per forward pass (128).
        token_ratio: share of class names with gradients when gathering (0.2; CLIP learners).
        num_templates: random templates of the gathering classifier (1; CLIP learners).
        order: 1, the first-order loop (the paper's); 2, exact gradients through an unrolled
            plain-SGD inner run (:mod:`~obstructlib.methods.lto.second_order`; small models, CE).
        inner_steps / inner_lr: the unrolled inner run of ``order=2`` (SGD steps and rate).
        eval_every: outer steps between attacker evaluations (the trajectory's resolution).
        ckpt_every: outer steps between checkpoints (also written after every evaluation).
        seed: the defender's stream (task draws, inner runs).
    """

    method: str = "lto"
    steps: int = 100
    lr: float = 1e-6
    lambda_r: float = 1.0
    lambda_o: float = 1.0
    tasks_per_step: int = 1
    grad_clip: float = 1.0
    clip_other: bool = False
    scope: str = "visual"
    token_lr_scale: float = 50.0
    k_learn: int = 4
    k_obs: int = 1
    obs_disjoint: bool = False
    obs_batch: int = 128
    token_ratio: float = 0.2
    num_templates: int = 1
    order: int = 1
    inner_steps: int = 1
    inner_lr: float = 1e-2
    eval_every: int = 20
    ckpt_every: int = 20
    seed: int = 10

    def validate(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"unknown method {self.method!r}: use one of {', '.join(METHODS)} (ssd: ob.lto.ssd)")
        if self.scope not in SCOPES:
            raise ConfigError(f"unknown scope {self.scope!r}: use one of {', '.join(SCOPES)}")
        check_min(self, ("steps",), 0)
        check_min(self, ("tasks_per_step", "k_learn", "k_obs", "eval_every", "ckpt_every", "obs_batch"))
        if self.order not in (1, 2):
            raise ConfigError(f"order={self.order}: use 1 (first-order, the paper's) or 2 (unrolled, small models)")
        check_min(self, ("inner_steps",), 0)
        if not self.inner_lr >= 0:
            raise ConfigError(f"inner_lr={self.inner_lr}: use a rate >= 0")
        if self.lr < 0 or self.grad_clip <= 0:
            raise ConfigError(f"lr={self.lr}, grad_clip={self.grad_clip}: use lr >= 0 and grad_clip > 0")

    @property
    def effective_lambda_o(self) -> float:
        return 0.0 if self.method == "only-r" else self.lambda_o


@dataclass
class LTOResult:
    """What :func:`obstruct` returns (the model is obstructed in place).

    Attributes:
        trajectory: one dict per attacker evaluation: ``step``, ``acc_r``, ``acc_o`` (+ what the
            evaluator returned); the first is the unobstructed backbone (step 0).
        losses: per outer step, the mean ``loss_r`` and ``loss_o`` at the adapted weights.
        seconds_per_step: mean wall time of an outer step (evaluations excluded).
    """

    trajectory: list[dict[str, Any]] = field(default_factory=list)
    losses: list[dict[str, float]] = field(default_factory=list)
    seconds_per_step: float = 0.0


class ObstructionTask(Protocol):
    """One learner's side of the loop (see :class:`~obstructlib.methods.lto.tasks.ClipTask`)."""

    model: nn.Module

    def parameters(self, scope: str) -> list[tuple[str, nn.Parameter]]:
        """The obstructed parameters P, ``(name, parameter)``."""

    def sample(self, generator: torch.Generator) -> Any:
        """Draw one task (D_fsc and D_obs) from the defender's pool."""

    def adapt(self, task: Any, generator: torch.Generator, inner: bool) -> Any:
        """Run the learner on D_fsc from the current weights (in place); ``inner=False``: a fresh head only."""

    def losses(self, state: Any, task: Any, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample CE of D_obs at the adapted weights and the mask of restricted samples."""


def per_class_pools(labels: Sequence[int] | torch.Tensor, sizes: Sequence[int], *,
                    seed: int = 42) -> list[torch.Tensor]:
    """Disjoint per-class index pools: shuffle each class once, then cut consecutive blocks.

    The official split: per class the first 20 shuffled indices are the attacker's pool, the next 5
    the defender's; ``sizes=(20, 5)`` gives exactly that.

    Raises:
        ConfigError: a class holds fewer images than ``sum(sizes)``.

    Example:
        >>> atk, dfn = per_class_pools([0] * 6 + [1] * 6, (4, 2))
        >>> len(atk), len(dfn), set(atk.tolist()) & set(dfn.tolist())
        (8, 4, set())
    """
    lab = torch.as_tensor(labels).long()
    g = torch.Generator().manual_seed(seed)
    need = int(sum(sizes))
    out: list[list[int]] = [[] for _ in sizes]
    for c in torch.unique(lab).tolist():
        idx = torch.nonzero(lab == c).flatten()
        if len(idx) < need:
            raise ConfigError(f"class {c} has {len(idx)} images but the pools need {need} per class: "
                              "lower the shots per class or use more data")
        idx = idx[torch.randperm(len(idx), generator=g)]
        start = 0
        for k, size in enumerate(sizes):
            out[k].extend(idx[start:start + size].tolist())
            start += size
    return [torch.tensor(sorted(o), dtype=torch.long) for o in out]


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of every parameter and buffer (what :func:`restore` puts back bit-exactly)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def restore(model: nn.Module, saved: dict[str, torch.Tensor]) -> None:
    """Put back a :func:`snapshot` in place (parameters keep their identity, so optimisers stay valid)."""
    with torch.no_grad():
        for k, v in model.state_dict().items():
            v.copy_(saved[k])


def split_gradients(losses: torch.Tensor, restricted: torch.Tensor, params: Sequence[nn.Parameter],
                    ) -> tuple[list[torch.Tensor], list[torch.Tensor], dict[str, float]]:
    """g_R and g_O: the gradients of the mean restricted and mean other per-sample loss (eq. 1).

    Raises:
        ConfigError: the obstruction set misses R or R'.
    """
    restricted = restricted.to(losses.device).bool()
    n_r, n_o = int(restricted.sum()), int((~restricted).sum())
    if n_r == 0 or n_o == 0:
        raise ConfigError(f"an obstruction set holds {n_r} restricted and {n_o} other samples: "
                          "both R and R' need images in the defender's pool")
    loss_r = losses[restricted].mean()  # eq. 1: ascended
    loss_o = losses[~restricted].mean()  # eq. 1: descended
    raw_r = torch.autograd.grad(loss_r, params, retain_graph=True, allow_unused=True)
    raw_o = torch.autograd.grad(loss_o, params, allow_unused=True)
    g_r = [torch.zeros_like(p) if g is None else g.detach() for g, p in zip(raw_r, params)]
    g_o = [torch.zeros_like(p) if g is None else g.detach() for g, p in zip(raw_o, params)]
    return g_r, g_o, {"loss_r": float(loss_r.detach()), "loss_o": float(loss_o.detach())}


def _gather(task: ObstructionTask, params: list[nn.Parameter], cfg: LTOConfig, generator: torch.Generator,
            ) -> tuple[list[torch.Tensor], list[torch.Tensor], dict[str, float]]:
    """One task: inner run, then g_R and g_O (sample-weighted means over D_obs) at the adapted weights."""
    data = task.sample(generator)
    if cfg.order == 2:
        functional = getattr(task, "functional", None)
        if functional is None:
            raise ConfigError(f"lto.order=2 needs a task that unrolls its learner; {type(task).__name__} does not: "
                              "use lto.order=1")
        from obstructlib.methods.lto.second_order import unrolled_losses

        steps = 0 if cfg.method == "nof" else cfg.inner_steps
        trained, inner_loss, obs_losses = functional(data, generator, steps)
        losses, restricted = unrolled_losses(task.model, trained, inner_loss, obs_losses, steps, cfg.inner_lr)
    else:
        state = task.adapt(data, generator, inner=cfg.method != "nof")
        losses, restricted = task.losses(state, data, generator)
    return split_gradients(losses, restricted, params)


def obstruct(task: ObstructionTask, cfg: LTOConfig, *,
             evaluate: Callable[[nn.Module], dict[str, Any]] | None = None,
             ckpt_dir: str | Path | None = None, progress: bool = False,
             reference: dict[str, Any] | None = None) -> LTOResult:
    """Run the obstruction loop on ``task.model`` in place; evaluate the attacker along the way.

    Args:
        task: the learner's side (:class:`~obstructlib.methods.lto.tasks.ClipTask` for CE, CoOp,
            Tip-Adapter; :class:`~obstructlib.methods.lto.tasks.EpisodicTask` for ProtoNet and
            MetaOptNet) holding the model and the defender's pool.
        cfg: the loop's settings.
        evaluate: the attacker, ``model -> {"acc_r", "acc_o", ...}``; called on the unobstructed
            model (step 0), every ``cfg.eval_every`` steps and after the last one. It must not
            change the model (the evaluators of :mod:`~obstructlib.methods.lto.evaluate` copy it).
        ckpt_dir: resume from / checkpoint to this directory (the model, the step, the trajectory
            and the defender's generator state).
        progress: show a progress bar.
        reference: the step-0 row if already measured (shared by several methods); else
            ``evaluate`` runs on the unobstructed model. Only a fresh run records it.

    Returns:
        :class:`LTOResult` with the trajectory (empty without ``evaluate``).
    """
    cfg.validate()
    model = task.model
    named = task.parameters(cfg.scope)
    if not named:
        raise ConfigError("the task exposes no parameter to obstruct: check the model and cfg.scope")
    params = [p for _, p in named]
    scales = [cfg.token_lr_scale if "token_embedding" in n else 1.0 for n, _ in named]
    generator = torch.Generator().manual_seed(cfg.seed)
    result, start = LTOResult(), 0
    ckpt = Path(ckpt_dir) if ckpt_dir is not None else None
    if ckpt is not None and has_checkpoint(ckpt):
        meta = load_checkpoint(ckpt, model, restore_rng=False)
        start = meta["step"]
        extra = meta["extra"]
        result.trajectory, result.losses = list(extra["trajectory"]), list(extra["losses"])
        generator.set_state(extra["generator"])
    if evaluate is not None and not result.trajectory:
        result.trajectory.append({"step": 0, **(reference if reference is not None else evaluate(model))})
    timed, seconds = 0, 0.0
    for step in tqdm(range(start + 1, cfg.steps + 1), disable=not progress, desc="obstruct", initial=start,
                     total=cfg.steps):
        t0 = time.perf_counter()
        saved = snapshot(model)
        sum_r = [torch.zeros_like(p) for p in params]
        sum_o = [torch.zeros_like(p) for p in params]
        logs = []
        for _ in range(cfg.tasks_per_step):
            g_r, g_o, log = _gather(task, params, cfg, generator)
            restore(model, saved)  # the update applies to the pre-adaptation weights
            for acc, g in zip(sum_r, g_r):
                acc.add_(g.clamp(-cfg.grad_clip, cfg.grad_clip))
            for acc, g in zip(sum_o, g_o):
                acc.add_(g.clamp(-cfg.grad_clip, cfg.grad_clip) if cfg.clip_other else g)
            logs.append(log)
        with torch.no_grad():  # theta_P += lr (lambda_R g_R - lambda_O g_O), averaged over tasks
            for p, s, gr, go in zip(params, scales, sum_r, sum_o):
                p.add_(cfg.lr * s * (cfg.lambda_r * gr - cfg.effective_lambda_o * go) / cfg.tasks_per_step)
        result.losses.append({k: sum(x[k] for x in logs) / len(logs) for k in logs[0]})
        seconds += time.perf_counter() - t0
        timed += 1
        if evaluate is not None and (step % cfg.eval_every == 0 or step == cfg.steps):
            result.trajectory.append({"step": step, **evaluate(model)})
        if ckpt is not None and (step % cfg.ckpt_every == 0 or step == cfg.steps or
                                 (evaluate is not None and step % cfg.eval_every == 0)):
            save_checkpoint(ckpt, model, step=step, config=cfg,
                            extra={"trajectory": result.trajectory, "losses": result.losses,
                                   "generator": generator.get_state()})
    result.seconds_per_step = seconds / max(timed, 1)
    return result
