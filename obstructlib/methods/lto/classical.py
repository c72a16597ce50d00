"""The classical few-shot learners of Learning to Obstruct: ProtoNet, MetaOptNet's SVM and R2D2's ridge.

Three heads map an episode's support and query features to query logits, and one episodic loop
meta-trains a backbone with any of them:

- ``proto``: LTO's cosine prototype classifier ``scale * (cos(q, p_n) + bias)``, ``p_n`` the mean
  support feature of way n (P>M>F's "ProtoNet with cosine classifier");
- ``svm``: MetaOptNet's Crammer-Singer linear SVM, its dual QP solved exactly and differentiated
  through its KKT conditions (the paper's other classical learner; the official code has none);
- ``ridge``: R2D2's closed-form ridge regression (spec 2.5's cheaper substitute for the SVM).

Episodes are in :class:`~obstructlib.data.sampler.EpisodeSampler`'s order. The attacker meta-trains
on R' classes only and is tested on episodes over test-other and R (spec 3.2); the defender splits
the per-query losses of :func:`episode_losses` by the queries' global labels.

References:
    Zheng et al., Learning to Obstruct, arXiv:2409.19210 (spec sections 2.5 and 3.2).
    Snell et al., Prototypical Networks, arXiv:1703.05175.
    Lee et al., Meta-Learning with Differentiable Convex Optimization (MetaOptNet), arXiv:1904.03758.
    Bertinetto et al., Meta-learning with differentiable closed-form solvers (R2D2), arXiv:1805.08136.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from obstructlib.data.sampler import EpisodeSampler, episode_labels
from obstructlib.engine import autocast
from obstructlib.errors import ConfigError, check_min

__all__ = ["HEADS", "EpisodicConfig", "EpisodicHead", "episode_losses", "evaluate_episodes", "meta_train",
           "proto_logits", "ridge_logits", "svm_dual", "svm_logits"]

HEADS = ("proto", "svm", "ridge")
# initial logit scale: LTO's ProtoNet starts at 10, MetaOptNet's (and its R2D2 head's) learnable scale at 1
_INIT_SCALE = {"proto": 10.0, "svm": 1.0, "ridge": 1.0}
_ROUNDS = 20  # active-set refinement rounds of svm_dual (0-6 were needed on 1000 random problems)
Scalar = float | torch.Tensor
Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def _episode(support: torch.Tensor, labels: torch.Tensor, query: torch.Tensor,
             n_way: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool]:
    """Add the episode dimension when missing; check the labels and one-hot them."""
    single = support.ndim == 2
    if single:
        support, labels, query = support[None], labels[None], query[None]
    if support.ndim != 3 or query.ndim != 3 or labels.shape != support.shape[:2]:
        raise ConfigError(f"support {tuple(support.shape)}, labels {tuple(labels.shape)}, query "
                          f"{tuple(query.shape)}: pass (S, D), (S,), (Q, D), optionally with a leading episode axis")
    counts = F.one_hot(labels.long().clamp(0, n_way - 1), n_way).sum(1)
    if int(labels.min()) < 0 or int(labels.max()) >= n_way or int(counts.min()) == 0:
        raise ConfigError(f"support labels must cover every way 0..{n_way - 1}: use episode_labels(n_way, k_shot)")
    return support, F.one_hot(labels.long(), n_way).to(support.dtype), query, single


def proto_logits(support: torch.Tensor, support_labels: torch.Tensor, query: torch.Tensor, n_way: int,
                 scale: Scalar = 10.0, bias: Scalar = 0.0) -> torch.Tensor:
    """Cosine prototype logits ``scale * (cos(query, p_n) + bias)``, ``p_n`` the mean support feature of way n.

    The bias shifts every logit equally, so it changes neither the loss nor the prediction; the
    official learner has it, so we keep it.

    Args:
        support: support features.
        support_labels: episode-local labels in ``0..n_way-1``, every way present.
        query: query features.
        n_way: ways of the episode.
        scale: logit scale (LTO's learnable scale, init 10).
        bias: added to the cosine (in [-1, 1]) before scaling (init 0).

    Shape:
        ``support (S, D)``, ``support_labels (S,)``, ``query (Q, D)`` -> ``(Q, n_way)``; with a
        leading episode axis ``E`` on all three, ``(E, Q, n_way)``. The same for every head.

    References:
        arXiv:1703.05175 (prototypes); arXiv:2409.19210 (the cosine learner, spec 2.5).

    Example:
        >>> s, q = torch.tensor([[2., 0.], [0., 3.]]), torch.tensor([[1., 1.]])
        >>> proto_logits(s, torch.tensor([0, 1]), q, 2, scale=2.0, bias=0.5)
        tensor([[2.4142, 2.4142]])
    """
    support, onehot, query, single = _episode(support, support_labels, query, n_way)
    prototypes = onehot.transpose(1, 2) @ support / onehot.sum(1)[..., None]
    logits = scale * (F.normalize(query, dim=-1) @ F.normalize(prototypes, dim=-1).transpose(1, 2) + bias)
    return logits[0] if single else logits


def _kkt_blocks(gram: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The dual's Hessian ``G kron I`` ``(E, n, n)``, row-sum operator ``(n, S)`` and the KKT system's last rows."""
    e, s, _ = gram.shape
    hess = (gram[:, :, None, :, None] * torch.eye(m, dtype=gram.dtype, device=gram.device)[:, None, :])
    rows = torch.eye(s, dtype=gram.dtype, device=gram.device).repeat_interleave(m, 0)  # entries ordered (item, way)
    return hess.reshape(e, s * m, s * m), rows, torch.cat([rows.T.expand(e, s, s * m), gram.new_zeros(e, s, s)], -1)


def _kkt_solve(gram: torch.Tensor, onehot: torch.Tensor, q: float,
               active: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Stationarity on the free entries, ``b = y`` on the active ones, zero row sums: solved exactly."""
    (e, s, m), n = onehot.shape, onehot[0].numel()
    hess, rows, last = _kkt_blocks(gram, m)
    act = active.reshape(e, n, 1)
    top = torch.cat([torch.where(act, torch.eye(n, dtype=gram.dtype, device=gram.device), hess),
                     torch.where(act, 0.0, rows)], -1)
    rhs = torch.cat([torch.where(active, onehot, q * onehot).reshape(e, n), gram.new_zeros(e, s)], -1)
    sol = torch.linalg.solve(torch.cat([top, last], 1), rhs)
    return sol[:, :n].reshape(e, s, m), sol[:, n:]


def _interior_point(gram: torch.Tensor, onehot: torch.Tensor, q: float, num_iters: int,
                    tol: tuple[float, float]) -> torch.Tensor:
    """Mehrotra's predictor-corrector on the scaled dual; returns the active set (multiplier > slack)."""
    (e, s, m), n = onehot.shape, onehot[0].numel()
    hess, rows, last = _kkt_blocks(gram, m)
    y = onehot.reshape(e, n)
    x, slack, lam, nu = torch.zeros_like(y), torch.ones_like(y), torch.ones_like(y), y.new_zeros(e, s)

    def longest(v: torch.Tensor, dv: torch.Tensor) -> torch.Tensor:  # the largest step in [0, 1] keeping v >= 0
        return torch.where(dv < 0, -v / dv, torch.ones_like(v)).amin(-1, keepdim=True).clamp(max=1.0)

    for _ in range(num_iters):
        r_dual = (hess @ x[..., None])[..., 0] - q * y + lam + nu.repeat_interleave(m, -1)
        r_ineq, r_eq, mu = x + slack - y, x.reshape(e, s, m).sum(-1), (lam * slack).mean(-1, keepdim=True)
        if (float(r_dual.abs().max()) < tol[1] and float(mu.max()) < tol[0] * tol[1]
                and max(float(r_ineq.abs().max()), float(r_eq.abs().max())) < tol[0]):
            break
        lu = torch.linalg.lu_factor(torch.cat([torch.cat([hess + torch.diag_embed(lam / slack),
                                                          rows.expand(e, n, s)], -1), last], 1))

        def newton(r_comp: torch.Tensor) -> tuple[torch.Tensor, ...]:
            rhs = torch.cat([-r_dual - (lam * r_ineq - r_comp) / slack, -r_eq], -1)
            sol = torch.linalg.lu_solve(*lu, rhs[..., None])[..., 0]
            ds = -r_ineq - sol[:, :n]
            return sol[:, :n], sol[:, n:], ds, (-r_comp - lam * ds) / slack

        _, _, ds, dl = newton(lam * slack)  # the affine predictor sets the centring of the corrector
        step = torch.minimum(longest(slack, ds), longest(lam, dl))
        sigma = (((slack + step * ds) * (lam + step * dl)).mean(-1, keepdim=True) / mu) ** 3
        dx, dnu, ds, dl = newton(lam * slack + ds * dl - sigma * mu)
        step = 0.99 * torch.minimum(longest(slack, ds), longest(lam, dl))
        x, slack, lam, nu = x + step * dx, slack + step * ds, lam + step * dl, nu + step * dnu
    return (lam > slack).reshape(e, s, m)


def svm_dual(support: torch.Tensor, support_labels: torch.Tensor, n_way: int, C: float = 0.1,
             num_iters: int = 30, *, dual_ridge: float = 1.0) -> torch.Tensor:
    """MetaOptNet's Crammer-Singer dual: the ``alpha`` minimising ``1/2 tr(a'(K + rI)a) - <Y, a>``.

    Subject to ``alpha_i <= C onehot(y_i)`` and ``sum_n alpha_in = 0`` for each support item i
    (MetaOptNet eq. 8), ``K = S S'``; the class weights are ``w_n = sum_i alpha_in s_i``. Solved in
    float64: an interior point method (qpth's family, MetaOptNet's solver) finds the active bounds
    without a graph, active-set rounds settle them until the KKT conditions hold to 1e-10, and the
    KKT system on that set is solved once more with autograd on. So the solution is exact and its
    gradient is the implicit (OptNet) one, not an unrolled approximation.

    Args:
        support: support features.
        support_labels: episode-local labels ``0..n_way-1``, every way present.
        n_way: ways.
        C: SVM regularisation, > 0 (MetaOptNet: 0.1).
        num_iters: at most this many interior-point iterations (6-20 reach 1e-10 in our tests).
        dual_ridge: ``r`` above, > 0. MetaOptNet's code adds ``1.0 * I`` "to avoid PSD errors";
            it also keeps our KKT system nonsingular.

    Shape:
        ``support (S, D)``, labels ``(S,)`` -> ``(S, n_way)``; with a leading episode axis
        ``(E, S, n_way)``. Cost ``O((S n_way)^3)`` per episode.

    References:
        arXiv:1904.03758 (the dual, C, the ridge); Amos and Kolter, OptNet, arXiv:1703.00443.

    Example:
        >>> svm_dual(torch.eye(2), torch.tensor([0, 1]), 2, C=0.1)
        tensor([[ 0.1000, -0.1000],
                [-0.1000,  0.1000]])
    """
    if C <= 0 or dual_ridge <= 0 or num_iters < 1:
        raise ConfigError(f"C={C}, dual_ridge={dual_ridge}, num_iters={num_iters}: use C > 0, dual_ridge > 0 "
                          "and num_iters >= 1 (MetaOptNet: C=0.1, ridge 1.0)")
    feats, onehot, _, single = _episode(support, support_labels, support, n_way)
    feats, onehot = feats.double(), onehot.double()
    gram = feats @ feats.transpose(1, 2) + dual_ridge * torch.eye(feats.shape[1], dtype=feats.dtype,
                                                                   device=feats.device)
    # alpha = C b and the objective over C^2 gamma: b <= y, the kernel in [-1, 1], the linear term q y
    gamma = float(gram.detach().abs().max())
    gram, q = gram / gamma, 1.0 / (C * gamma)
    tol = (1e-10, 1e-10 * (1.0 + q))  # primal (b), dual (multipliers)
    with torch.no_grad():
        active = _interior_point(gram, onehot, q, num_iters, tol)
        for _ in range(_ROUNDS):
            active &= ~(active.all(-1, keepdim=True) & onehot.bool())  # a row always keeps a free entry
            b, nu = _kkt_solve(gram, onehot, q, active)
            multiplier = q * onehot - gram @ b - nu[..., None]  # of the bound; must be >= 0 where active
            settled = torch.where(active, multiplier >= -tol[1], b - onehot > tol[0])
            if torch.equal(settled, active):
                break
            active = settled
        else:
            warnings.warn(f"svm_dual: the active set did not settle in {_ROUNDS} rounds: raise num_iters", stacklevel=2)
    alpha = (C * _kkt_solve(gram, onehot, q, active)[0]).to(support.dtype)
    return alpha[0] if single else alpha


def svm_logits(support: torch.Tensor, support_labels: torch.Tensor, query: torch.Tensor, n_way: int,
               C: float = 0.1, num_iters: int = 30, scale: Scalar = 1.0) -> torch.Tensor:
    """MetaOptNet-SVM logits ``scale * sum_i alpha_in <query, s_i>``, ``alpha`` from :func:`svm_dual`.

    Differentiable with respect to the support and query features (the exact implicit gradient).
    Features enter raw (not normalised), as in MetaOptNet.

    Args:
        support / support_labels / query / n_way: as :func:`proto_logits`.
        C: SVM regularisation, > 0 (0.1).
        num_iters: interior-point iterations (see :func:`svm_dual`).
        scale: logit scale (MetaOptNet's learnable scale, init 1).

    Shape:
        as :func:`proto_logits`.

    References:
        arXiv:1904.03758.

    Example:
        >>> svm_logits(torch.eye(2), torch.tensor([0, 1]), torch.tensor([[1., 0.]]), 2)
        tensor([[ 0.1000, -0.1000]])
    """
    support3, _, query3, single = _episode(support, support_labels, query, n_way)
    alpha = svm_dual(support3, support_labels.reshape(support3.shape[:2]), n_way, C, num_iters)
    logits = scale * (query3 @ (alpha.transpose(1, 2) @ support3).transpose(1, 2))
    return logits[0] if single else logits


def ridge_logits(support: torch.Tensor, support_labels: torch.Tensor, query: torch.Tensor, n_way: int,
                 lam: float = 50.0, scale: Scalar = 1.0) -> torch.Tensor:
    """R2D2's ridge regression onto one-hot targets: ``scale * Q S' (S S' + lam I)^-1 Y``.

    The Woodbury form of the primal weights ``W = (S'S + lam I)^-1 S'Y``: an ``S x S`` solve, not ``D x D``.

    Args:
        support / support_labels / query / n_way: as :func:`proto_logits`.
        lam: ridge penalty, > 0 (50, MetaOptNet's R2D2 head).
        scale: logit scale (R2D2's learnable alpha, init 1).

    Shape:
        as :func:`proto_logits`.

    References:
        arXiv:1805.08136.

    Example:
        >>> ridge_logits(torch.eye(2), torch.tensor([0, 1]), torch.tensor([[1., 0.]]), 2, lam=1.0)
        tensor([[0.5000, 0.0000]])
    """
    if lam <= 0:
        raise ConfigError(f"lam={lam}: the ridge penalty must be > 0 (R2D2: 50)")
    support, onehot, query, single = _episode(support, support_labels, query, n_way)
    gram = support @ support.transpose(1, 2) + lam * torch.eye(support.shape[1], dtype=support.dtype,
                                                                device=support.device)
    logits = scale * (query @ support.transpose(1, 2) @ torch.linalg.solve(gram, onehot))
    return logits[0] if single else logits


@dataclass
class EpisodicConfig:
    """Episodic meta-training; the defaults are the official ProtoNet config (spec 2.5).

    Attributes:
        n_way / k_shot / n_query: the episode (5-way 1-shot, 5 queries per way).
        episodes: episodes per epoch (512; 0 trains nothing and returns the initial head).
        epochs: passes (the official attacker 10, defender 20).
        batch_episodes: episodes per Adam step (16).
        lr: Adam learning rate of the backbone and the head (5e-5).
        head: ``proto``, ``svm`` or ``ridge``.
        svm_c / svm_iters: the SVM's C (0.1) and interior-point iterations.
        ridge_lambda: the ridge penalty (50).
        init_scale: initial logit scale; None: the head's paper value (proto 10, svm and ridge 1).
        train_backbone: train the backbone (all its parameters, BatchNorm in train mode) with the
            head; False trains the head alone, the backbone in eval mode.
    """

    n_way: int = 5
    k_shot: int = 1
    n_query: int = 5
    episodes: int = 512
    epochs: int = 10
    batch_episodes: int = 16
    lr: float = 5e-5
    head: str = "proto"
    svm_c: float = 0.1
    svm_iters: int = 30
    ridge_lambda: float = 50.0
    init_scale: float | None = None
    train_backbone: bool = True

    def validate(self) -> None:
        if self.head not in HEADS:
            raise ConfigError(f"unknown head {self.head!r}: use one of {', '.join(HEADS)}")
        check_min(self, ("n_way", "k_shot", "n_query", "batch_episodes", "svm_iters"))
        check_min(self, ("episodes", "epochs"), 0)
        check_min(self, ("lr", "svm_c", "ridge_lambda"), 0, strict=True)


class EpisodicHead(nn.Module):
    """A classical learner's head: its kind, learnable logit scale and (proto only) bias, init 0.

    Args:
        kind: ``proto``, ``svm`` or ``ridge``.
        init_scale: initial scale; None: the head's paper value (proto 10, svm and ridge 1).
        svm_c / svm_iters: the SVM's C and interior-point iterations.
        ridge_lambda: the ridge penalty.

    Shape:
        ``forward(support, support_labels, query, n_way)``: as :func:`proto_logits`.

    Example:
        >>> EpisodicHead("svm")(torch.randn(5, 8), torch.arange(5), torch.randn(3, 8), 5).shape
        torch.Size([3, 5])
    """

    def __init__(self, kind: str = "proto", *, init_scale: float | None = None, svm_c: float = 0.1,
                 svm_iters: int = 30, ridge_lambda: float = 50.0) -> None:
        super().__init__()
        EpisodicConfig(head=kind, svm_c=svm_c, svm_iters=svm_iters, ridge_lambda=ridge_lambda).validate()
        self.kind, self.svm_c, self.svm_iters, self.ridge_lambda = kind, svm_c, svm_iters, ridge_lambda
        self.scale = nn.Parameter(torch.tensor(_INIT_SCALE[kind] if init_scale is None else float(init_scale)))
        self.bias = nn.Parameter(torch.tensor(0.0))

    @classmethod
    def from_config(cls, cfg: EpisodicConfig) -> EpisodicHead:
        """The fresh head ``cfg`` describes."""
        return cls(cfg.head, init_scale=cfg.init_scale, svm_c=cfg.svm_c, svm_iters=cfg.svm_iters,
                   ridge_lambda=cfg.ridge_lambda)

    def forward(self, support: torch.Tensor, support_labels: torch.Tensor, query: torch.Tensor,
                n_way: int) -> torch.Tensor:
        if self.kind == "proto":
            return proto_logits(support, support_labels, query, n_way, self.scale, self.bias)
        if self.kind == "svm":
            return svm_logits(support, support_labels, query, n_way, self.svm_c, self.svm_iters, self.scale)
        return ridge_logits(support, support_labels, query, n_way, self.ridge_lambda, self.scale)


def _device(backbone: nn.Module, device: Any) -> torch.device:
    return torch.device(device) if device is not None else next(backbone.parameters()).device


def _episode_logits(backbone: Any, head: EpisodicHead, images: torch.Tensor, episodes: list[list[int]],
                    shape: Any, device: torch.device, augment: Augment | None = None,
                    generator: torch.Generator | None = None, grad_features: bool = True) -> torch.Tensor:
    """Query logits ``(E, n_way * n_query, n_way)`` of a batch of episodes, features in one forward pass."""
    idx = torch.as_tensor(episodes, dtype=torch.long)
    x = images[idx.flatten().to(images.device)].to(device)
    if augment is not None:
        x = augment(x, generator if generator is not None else torch.Generator())
    with torch.set_grad_enabled(torch.is_grad_enabled() and grad_features), autocast(device):
        feats = backbone.features(x)
    feats = feats.float().reshape(idx.shape[0], idx.shape[1], -1)
    ns = shape.n_way * shape.k_shot
    support_labels = episode_labels(shape.n_way, shape.k_shot, device).expand(idx.shape[0], ns)
    return head(feats[:, :ns], support_labels, feats[:, ns:], shape.n_way)


def meta_train(backbone: Any, images: torch.Tensor, labels: torch.Tensor, classes: Sequence[int],
               cfg: EpisodicConfig, *, generator: torch.Generator, device: Any = None,
               head: EpisodicHead | None = None, augment: Augment | None = None,
               progress: bool = False) -> EpisodicHead:
    """Episodic meta-training of ``backbone`` (in place) and a head on episodes over ``classes`` only.

    Each Adam step averages the queries' cross-entropy over ``batch_episodes`` episodes of
    :class:`~obstructlib.data.sampler.EpisodeSampler` (the attacker passes the R' meta-train
    classes). The backbone's train/eval mode is restored afterwards.

    Args:
        backbone: an :class:`~obstructlib.models.ImageClassifier` (``.features``).
        images: ``(N, C, H, W)`` in [0, 1], on CPU or ``device``.
        labels: ``(N,)`` global class labels.
        classes: the classes episodes may use (at least ``n_way``, each with ``k_shot + n_query`` images).
        cfg: the recipe.
        generator: draws the episodes and augmentations (same generator state, same result on CPU).
        device: where to compute; default the backbone's device.
        head: continue training this head; default a fresh :meth:`EpisodicHead.from_config`.
        augment: ``augment(x, generator)`` on each batch of images, e.g. ``resized_crop_flip`` with
            ``min_scale=0.5`` (the official attacker's view); default none.
        progress: show a tqdm bar.

    Returns:
        The trained head, on ``device``.

    Example:
        >>> from obstructlib.models import create_model
        >>> net, x, y = create_model("digits_cnn"), torch.rand(40, 1, 8, 8), torch.arange(10).repeat(4)
        >>> cfg = EpisodicConfig(n_way=2, n_query=2, episodes=2, epochs=1, batch_episodes=2)
        >>> meta_train(net, x, y, range(10), cfg, generator=torch.Generator().manual_seed(0)).kind
        'proto'
    """
    cfg.validate()
    device = _device(backbone, device)
    sampler = EpisodeSampler(labels, cfg.n_way, cfg.k_shot, cfg.n_query, cfg.episodes, classes=list(classes),
                             generator=generator)
    head = (head if head is not None else EpisodicHead.from_config(cfg)).to(device)
    params = [*head.parameters(), *(p for p in backbone.parameters() if p.requires_grad and cfg.train_backbone)]
    optimizer = torch.optim.Adam(params, lr=cfg.lr)
    was_training = backbone.training
    backbone.train(cfg.train_backbone)
    target = episode_labels(cfg.n_way, cfg.n_query, device)
    with tqdm(total=math.ceil(cfg.episodes / cfg.batch_episodes) * cfg.epochs, desc="meta-train",
              disable=not progress, leave=False) as bar:
        for _ in range(cfg.epochs):
            episodes = list(sampler)
            for start in range(0, len(episodes), cfg.batch_episodes):
                batch = episodes[start:start + cfg.batch_episodes]
                logits = _episode_logits(backbone, head, images, batch, cfg, device, augment, generator,
                                         grad_features=cfg.train_backbone)  # a frozen backbone needs no graph
                loss = F.cross_entropy(logits.flatten(0, 1), target.repeat(len(batch)))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                bar.update()
    backbone.train(was_training)
    return head


def episode_losses(backbone: Any, head: EpisodicHead, images: torch.Tensor, labels: torch.Tensor,
                   episode_indices: Sequence[int], n_way: int, k_shot: int,
                   n_query: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-query cross-entropy of one episode, differentiable with respect to the backbone and head.

    The LTO defender splits these losses by whether the query's global label is restricted. The
    backbone's mode is the caller's (the defender uses eval mode).

    Args:
        backbone: the (adapted) backbone, on its device.
        head: the learner's head (e.g. from :func:`meta_train`).
        images: ``(N, C, H, W)`` in [0, 1]; labels: ``(N,)`` global labels.
        episode_indices: one episode in :class:`~obstructlib.data.sampler.EpisodeSampler`'s order.
        n_way / k_shot / n_query: its shape.

    Returns:
        ``(loss, query_labels)``, both ``(n_way * n_query,)``: the losses and the queries' global labels.

    Example:
        >>> from obstructlib.models import create_model
        >>> net, x, y = create_model("digits_cnn").eval(), torch.rand(20, 1, 8, 8), torch.arange(10).repeat(2)
        >>> loss, glob = episode_losses(net, EpisodicHead(), x, y, [0, 1, 10, 11], 2, 1, 1)
        >>> loss.shape, glob.tolist()
        (torch.Size([2]), [0, 1])
    """
    idx, labels, ns = torch.as_tensor(list(episode_indices), dtype=torch.long), torch.as_tensor(labels), n_way * k_shot
    if idx.numel() != n_way * (k_shot + n_query):
        raise ConfigError(f"episode has {idx.numel()} indices but {n_way}-way {k_shot}-shot {n_query}-query "
                          f"needs {n_way * (k_shot + n_query)}: pass the episode's own shape")
    glob = labels[idx.to(labels.device)]
    ways = glob[:ns].reshape(n_way, k_shot)
    grouped = torch.equal(ways, ways[:, :1].expand_as(ways))
    if not (grouped and torch.equal(glob[ns:], ways[:, 0].repeat_interleave(n_query))):
        raise ConfigError("episode indices are not grouped by way (support, then queries): use EpisodeSampler's order")
    device = _device(backbone, None)
    logits = _episode_logits(backbone, head, images, [idx.tolist()], EpisodicConfig(n_way, k_shot, n_query), device)
    return F.cross_entropy(logits[0], episode_labels(n_way, n_query, device), reduction="none"), glob[ns:]


def evaluate_episodes(backbone: Any, head: EpisodicHead, images: torch.Tensor, labels: torch.Tensor,
                      classes: Sequence[int], shape: Any, num_episodes: int, *, restricted: Sequence[int],
                      generator: torch.Generator, device: Any = None, batch: int = 16) -> dict[str, float]:
    """Few-shot test accuracy over episodes, split by the queries' global labels (spec 3.2).

    Episodes are drawn from ``classes`` (test-other and R); ``acc_r`` counts the queries whose
    global label is in ``restricted`` and ``acc_o`` the others, so a mixed episode feeds both.

    Args:
        backbone: the attacker's backbone (run in eval mode; its mode is restored).
        head: the learner's head.
        images: ``(N, C, H, W)`` test images in [0, 1]; labels: ``(N,)`` global labels.
        classes: the classes test episodes may use.
        shape: anything with ``n_way``, ``k_shot`` and ``n_query`` (an :class:`EpisodicConfig`).
        num_episodes: test episodes (the paper: 1000).
        restricted: R, as global labels.
        generator: draws the episodes.
        device: where to compute; default the backbone's device.
        batch: episodes per forward pass.

    Returns:
        ``{"acc", "acc_r", "acc_o", "ci95"}`` in percent: accuracy over all queries, over R's and
        R''s queries (NaN when none was drawn), and the 95% half-width ``1.96 std / sqrt(E)`` of
        the per-episode accuracy.

    Example:
        >>> from obstructlib.models import create_model
        >>> net, x, y = create_model("digits_cnn"), torch.rand(40, 1, 8, 8), torch.arange(10).repeat(4)
        >>> out = evaluate_episodes(net, EpisodicHead(), x, y, range(10), EpisodicConfig(n_way=2, n_query=3), 4,
        ...                         restricted=[0], generator=torch.Generator().manual_seed(0))
        >>> sorted(out)
        ['acc', 'acc_o', 'acc_r', 'ci95']
    """
    if num_episodes < 1 or batch < 1:
        raise ConfigError(f"num_episodes={num_episodes}, batch={batch}: use positive integers")
    device = _device(backbone, device)
    episodes = list(EpisodeSampler(labels, shape.n_way, shape.k_shot, shape.n_query, num_episodes,
                                   classes=list(classes), generator=generator))
    labels = torch.as_tensor(labels).cpu()
    is_r = torch.isin(labels, torch.as_tensor(list(restricted), dtype=labels.dtype))
    query_r = is_r[torch.as_tensor(episodes)[:, shape.n_way * shape.k_shot:]]  # (E, n_way * n_query)
    was_training = backbone.training
    backbone.eval()
    with torch.no_grad():
        preds = torch.cat([_episode_logits(backbone, head, images, episodes[i:i + batch], shape, device).argmax(-1)
                           for i in range(0, num_episodes, batch)]).cpu()
    backbone.train(was_training)
    correct = (preds == episode_labels(shape.n_way, shape.n_query)).double()
    return {"acc": 100 * float(correct.mean()),
            "acc_r": 100 * float(correct[query_r].mean()),  # the mean of nothing is NaN: no R query drawn
            "acc_o": 100 * float(correct[~query_r].mean()),
            "ci95": 100 * 1.96 * float(correct.mean(1).std(unbiased=False)) / math.sqrt(num_episodes)}
