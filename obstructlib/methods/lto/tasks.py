"""The learner side of the obstruction loop: task draws, the inner run and the split losses.

- :class:`ClipTask`: the CLIP learners (CE, CoOp, Tip-Adapter); all-way tasks of ``k_learn``
  shots per class for the inner run and ``k_obs`` for the obstruction set, both drawn from the
  defender's pool (spec 2.2);
- :class:`EpisodicTask`: the classical learners (ProtoNet, MetaOptNet); the inner run is a short
  episodic meta-training on the pool, the obstruction set N-way episodes whose queries are split
  by their global class.

References:
    Zheng et al., Learning to Obstruct, arXiv:2409.19210.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from obstructlib.engine import autocast
from obstructlib.errors import ConfigError
from obstructlib.methods.lto.learners import (
    Adapted,
    LearnerConfig,
    fit_learner,
    init_learner,
    learner_logits,
    learner_text,
    model_device,
    visual_parameters,
)
from obstructlib.primitives.augment import resized_crop_flip

__all__ = ["ClipTask", "EpisodicTask", "draw_shots"]


def draw_shots(labels: torch.Tensor, k: int, generator: torch.Generator,
               exclude: torch.Tensor | None = None) -> torch.Tensor:
    """``k`` random positions per class of ``labels`` (optionally not in ``exclude``), sorted.

    Raises:
        ConfigError: a class holds fewer than ``k`` candidates.
    """
    chosen = []
    mask = torch.ones(len(labels), dtype=torch.bool)
    if exclude is not None:
        mask[exclude] = False
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero((labels == c) & mask).flatten()
        if len(idx) < k:
            raise ConfigError(f"class {c} has {len(idx)} images left in the pool but {k} shots are asked: "
                              "lower the shots or give the pool more images per class")
        chosen.append(idx[torch.randperm(len(idx), generator=generator)[:k]])
    return torch.sort(torch.cat(chosen)).values


@dataclass
class ClipTask:
    """The CLIP learners' side of :func:`~obstructlib.methods.lto.obstruct`.

    Args:
        model: the :class:`~obstructlib.models.ClipModel` to obstruct (in place).
        images: the defender's pool ``(N, C, H, W)`` in [0, 1] (5 per class officially).
        labels: ``(N,)`` class indices into ``classnames``.
        classnames: all C class names (all-way tasks).
        templates: the learner's prompt templates.
        restricted: the class indices of R.
        learner: the defender's learner recipe (1 epoch, :func:`learner_config` ``defender``).
        k_learn / k_obs / obs_disjoint / obs_batch / token_ratio / num_templates: from
            :class:`~obstructlib.methods.lto.LTOConfig` (see there).
        device: where to compute.
    """

    model: Any
    images: torch.Tensor
    labels: torch.Tensor
    classnames: Sequence[str]
    templates: Sequence[str]
    restricted: Sequence[int]
    learner: LearnerConfig
    k_learn: int = 4
    k_obs: int = 1
    obs_disjoint: bool = False
    obs_batch: int = 128
    token_ratio: float = 0.2
    num_templates: int = 1
    device: Any = None
    _is_r: torch.Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.labels = torch.as_tensor(self.labels).long()
        self.device = model_device(self.model, self.device)
        bad = [c for c in self.restricted if not 0 <= int(c) < len(self.classnames)]
        if bad:
            raise ConfigError(f"restricted classes {bad} are not among the {len(self.classnames)} classes")
        self._is_r = torch.zeros(len(self.classnames), dtype=torch.bool)
        self._is_r[torch.as_tensor(list(self.restricted), dtype=torch.long)] = True

    @classmethod
    def from_config(cls, model: Any, images: torch.Tensor, labels: torch.Tensor, classnames: Sequence[str],
                    templates: Sequence[str], restricted: Sequence[int], learner: LearnerConfig, cfg: Any,
                    device: Any = None) -> ClipTask:
        """The task with the draw settings of an :class:`~obstructlib.methods.lto.LTOConfig`."""
        return cls(model, images, labels, classnames, templates, restricted, learner, k_learn=cfg.k_learn,
                   k_obs=cfg.k_obs, obs_disjoint=cfg.obs_disjoint, obs_batch=cfg.obs_batch,
                   token_ratio=cfg.token_ratio, num_templates=cfg.num_templates, device=device)

    def parameters(self, scope: str) -> list[tuple[str, nn.Parameter]]:
        named = visual_parameters(self.model)
        if scope == "visual+token":
            named.append(("token_embedding.weight", self.model.token_embedding.weight))
        return named

    def sample(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        fsc = draw_shots(self.labels, self.k_learn, generator)
        obs = draw_shots(self.labels, self.k_obs, generator, exclude=fsc if self.obs_disjoint else None)
        return fsc, obs

    def adapt(self, task: tuple[torch.Tensor, torch.Tensor], generator: torch.Generator, inner: bool) -> Adapted:
        fsc, _ = task
        cfg = self.learner if inner else replace(self.learner, epochs=0)
        x, y = self.images[fsc], self.labels[fsc]
        state = init_learner(self.model, x.to(self.device), y, self.classnames, self.templates, cfg,
                             generator=generator, device=self.device)
        if cfg.kind == "coop" and not inner:
            state.ctx = None  # NoF with CoOp: the zero-shot head, not an untrained random prompt (spec 2.8)
        return fit_learner(self.model, x, y, self.classnames, self.templates, cfg, generator=generator,
                           device=self.device, state=state)

    def losses(self, state: Adapted, task: tuple[torch.Tensor, torch.Tensor],
               generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        self.model.eval()
        return self._obs_losses(self.model, state, task[1], generator)

    def _obs_losses(self, model: Any, state: Adapted, obs: torch.Tensor,
                    generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        text = learner_text(model, state, num_templates=self.num_templates, grad_fraction=self.token_ratio,
                            generator=generator, device=self.device)
        out = []
        for start in range(0, len(obs), self.obs_batch):
            idx = obs[start:start + self.obs_batch]
            with autocast(self.device):
                logits = learner_logits(model, state, self.images[idx].to(self.device), text, self.learner)
            out.append(F.cross_entropy(logits.float(), self.labels[idx].to(self.device), reduction="none"))
        return torch.cat(out), self._is_r[self.labels[obs]]

    def functional(self, task: tuple[torch.Tensor, torch.Tensor], generator: torch.Generator, steps: int,
                   ) -> tuple[list[nn.Parameter], Callable[[Any, int], torch.Tensor],
                              Callable[[Any], tuple[torch.Tensor, torch.Tensor]]]:
        """The inner run as functions of the weights, for ``order=2`` (CE only).

        Inner step ``s`` is the CE learner's loss on batch ``s`` of D_fsc (the learner's batch size,
        crop-flip views, the one-template resampled classifier), taken on the image tower's non-BN
        parameters and, when the learner trains it, the token embedding.

        Returns:
            ``(trained parameters, inner_loss(model, step), obs_losses(model))`` for
            :func:`~obstructlib.methods.lto.second_order.unrolled_gradients`.
        """
        if self.learner.kind != "ce":
            raise ConfigError(f"lto.order=2 unrolls the ce learner only, not {self.learner.kind}: "
                              "use lto.order=1 for CoOp and Tip-Adapter")
        fsc, obs = task
        x, y = self.images[fsc], self.labels[fsc]
        state = init_learner(self.model, x, y, self.classnames, self.templates, self.learner, generator=generator,
                             device=self.device)
        per_pass = max(1, math.ceil(len(fsc) / self.learner.batch_size))
        order = torch.cat([torch.randperm(len(fsc), generator=generator)
                           for _ in range(math.ceil(max(steps, 1) / per_pass))])
        trained = [p for _, p in visual_parameters(self.model)]
        if self.learner.token_lr_scale > 0:
            trained.append(self.model.token_embedding.weight)
        bs = self.learner.batch_size

        def inner_loss(model: Any, step: int) -> torch.Tensor:
            p, b = divmod(step, per_pass)
            idx = order[p * len(fsc):(p + 1) * len(fsc)][b * bs:(b + 1) * bs]
            view = resized_crop_flip(x[idx].cpu(), generator, self.learner.min_crop).to(self.device)
            text = learner_text(model, state, num_templates=1, grad_fraction=self.learner.resample_fraction,
                                generator=generator, device=self.device)
            return F.cross_entropy(learner_logits(model, state, view, text, self.learner).float(),
                                   y[idx].to(self.device))

        self.model.eval()
        return trained, inner_loss, lambda model: self._obs_losses(model, state, obs, generator)


@dataclass
class EpisodicTask:
    """The classical learners' side: ProtoNet / MetaOptNet heads on an image backbone.

    The inner run is ``inner_episodes`` episodes of meta-training of the learner (its head and the
    backbone) on the defender's pool; the obstruction set is ``obs_episodes`` N-way episodes from
    the pool whose per-query CE is split by the query's global class.

    Args:
        model: an :class:`~obstructlib.models.ImageClassifier` backbone (``.features``).
        images / labels: the defender's pool (global labels).
        restricted: the global class indices of R.
        episodic: an :class:`~obstructlib.methods.lto.classical.EpisodicConfig` (the defender's).
        inner_episodes: meta-training episodes of the inner run.
        obs_episodes: obstruction episodes per task.
        obs_shots / obs_queries: support and query items per way of an obstruction episode.
        device: where to compute.
    """

    model: Any
    images: torch.Tensor
    labels: torch.Tensor
    restricted: Sequence[int]
    episodic: Any
    inner_episodes: int = 16
    obs_episodes: int = 4
    obs_shots: int = 1
    obs_queries: int = 4
    device: Any = None

    def parameters(self, scope: str) -> list[tuple[str, nn.Parameter]]:
        # the official classical-FSC obstructor config: the backbone without its BatchNorms (nor the head)
        return [(f"{m}.{n}" if m else n, p) for m, mod in self.model.named_modules()
                if not isinstance(mod, nn.modules.batchnorm._BatchNorm) and not m.startswith("head")
                for n, p in mod.named_parameters(recurse=False)]

    def sample(self, generator: torch.Generator) -> list[list[int]]:
        from obstructlib.data.sampler import EpisodeSampler

        sampler = EpisodeSampler(self.labels, self.episodic.n_way, self.obs_shots, self.obs_queries,
                                 self.obs_episodes, generator=generator)
        return [list(e) for e in sampler]

    def adapt(self, task: list[list[int]], generator: torch.Generator, inner: bool) -> Any:
        from obstructlib.methods.lto import classical

        cfg = replace(self.episodic, episodes=self.inner_episodes if inner else 0, epochs=1)
        classes = sorted(set(self.labels.tolist()))
        return classical.meta_train(self.model, self.images, self.labels, classes, cfg, generator=generator,
                                    device=self.device)

    def losses(self, state: Any, task: list[list[int]],
               generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        from obstructlib.methods.lto import classical

        is_r = torch.zeros(int(self.labels.max()) + 1, dtype=torch.bool)
        is_r[torch.as_tensor(list(self.restricted), dtype=torch.long)] = True
        self.model.eval()
        losses, globals_ = [], []
        for episode in task:
            loss, glob = classical.episode_losses(self.model, state, self.images.to(self.device), self.labels,
                                                  episode, self.episodic.n_way, self.obs_shots, self.obs_queries)
            losses.append(loss)
            globals_.append(torch.as_tensor(glob).long().cpu())
        glob_all = torch.cat(globals_)
        return torch.cat(losses), is_r[glob_all]
