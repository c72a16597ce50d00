"""LTO's classical few-shot learners: the ProtoNet, SVM and ridge heads, meta-training and episode evaluation."""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from obstructlib.data.sampler import EpisodeSampler
from obstructlib.errors import ConfigError
from obstructlib.methods.lto.classical import (
    EpisodicConfig,
    EpisodicHead,
    episode_losses,
    evaluate_episodes,
    meta_train,
    proto_logits,
    ridge_logits,
    svm_dual,
    svm_logits,
)
from obstructlib.models import create_model

pytestmark = pytest.mark.usefixtures("one_thread")


def _kkt(support: torch.Tensor, labels: torch.Tensor, n_way: int, C: float, alpha: torch.Tensor) -> dict:
    """Residuals of the dual's KKT conditions, the multipliers recovered from the free entries."""
    s = support.double()
    gram = s @ s.T + torch.eye(len(s), dtype=s.dtype)
    onehot, alpha = F.one_hot(labels, n_way).double(), alpha.double()
    grad = gram @ alpha - onehot  # objective gradient
    free = alpha < C * onehot - 1e-9
    nu = -(grad * free).sum(1) / free.sum(1)  # stationarity grad + mu + nu = 0 with mu = 0 where free
    mu = -grad - nu[:, None]

    def worst(t: torch.Tensor) -> float:
        return float(t.abs().max()) if t.numel() else 0.0

    return {"primal": worst((alpha - C * onehot).clamp_min(0)), "rows": worst(alpha.sum(1)),
            "stationary": worst(mu[free]), "dual": worst((-mu[~free]).clamp_min(0)),
            "slackness": worst(mu * (C * onehot - alpha)), "num_free": int(free.sum()),
            "num_active": int((~free).sum())}


def _digits() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0, torch.tensor(d.target)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return create_model("digits_cnn", num_classes=10, widths=(8, 16, 32))


# ---- heads -------------------------------------------------------------------------------------------------


def test_proto_logits_hand_case() -> None:
    support = torch.tensor([[2.0, 0.0], [4.0, 0.0], [0.0, 3.0]])  # prototypes (3, 0) and (0, 3)
    query = torch.tensor([[1.0, 1.0], [5.0, 0.0], [0.0, -1.0]])
    logits = proto_logits(support, torch.tensor([0, 0, 1]), query, 2, scale=2.0, bias=0.5)
    cos = torch.tensor([[0.5**0.5, 0.5**0.5], [1.0, 0.0], [0.0, -1.0]])
    assert torch.allclose(logits, 2.0 * (cos + 0.5))
    batched = proto_logits(support.expand(3, 3, 2), torch.tensor([0, 0, 1]).expand(3, 3), query.expand(3, 3, 2), 2)
    assert batched.shape == (3, 3, 2) and torch.allclose(batched[1], 10.0 * cos)


def test_svm_hand_case_solution_and_kkt() -> None:
    # orthogonal unit supports: G = 2I, row i minimises 2t^2 - t, so t = 1/4 unless the bound C binds
    support, labels = torch.eye(2, dtype=torch.float64), torch.tensor([0, 1])
    for C, t in ((0.1, 0.1), (1.0, 0.25)):
        alpha = svm_dual(support, labels, 2, C=C)
        assert torch.allclose(alpha, torch.tensor([[t, -t], [-t, t]], dtype=torch.float64), atol=1e-12)
        res = _kkt(support, labels, 2, C, alpha)
        assert max(res[k] for k in ("primal", "rows", "stationary", "dual", "slackness")) < 1e-10
    logits = svm_logits(support, labels, torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64), 2, C=0.1,
                        scale=3.0)
    assert torch.allclose(logits, 3.0 * torch.tensor([[0.1, -0.1], [-0.2, 0.2]], dtype=torch.float64))


def test_svm_matches_scipy_and_satisfies_kkt_on_a_random_problem() -> None:
    from scipy.optimize import minimize

    g = torch.Generator().manual_seed(3)
    n_way, C = 3, 0.3
    labels = torch.arange(n_way).repeat_interleave(2)
    support = torch.randn(6, 3, generator=g, dtype=torch.float64) + 0.5  # overlapping classes
    alpha = svm_dual(support, labels, n_way, C=C)
    res = _kkt(support, labels, n_way, C, alpha)
    assert res["num_free"] > 6 and res["num_active"] > 0  # both kinds of entries occur
    assert max(res[k] for k in ("primal", "rows", "stationary", "dual", "slackness")) < 1e-9

    s, y = support.numpy(), F.one_hot(labels, n_way).double().numpy()
    hess = np.kron(s @ s.T + np.eye(6), np.eye(n_way))
    fun = lambda a: 0.5 * a @ hess @ a - y.ravel() @ a  # noqa: E731
    ref = minimize(fun, np.zeros(6 * n_way), jac=lambda a: hess @ a - y.ravel(), method="SLSQP",
                   bounds=[(None, C * v) for v in y.ravel()], options={"ftol": 1e-14, "maxiter": 1000},
                   constraints=[{"type": "eq", "fun": lambda a: a.reshape(6, n_way).sum(1),
                                 "jac": lambda a: np.kron(np.eye(6), np.ones((1, n_way)))}])
    assert ref.success
    assert np.allclose(alpha.numpy().ravel(), ref.x, atol=1e-6)
    assert fun(alpha.numpy().ravel()) <= ref.fun + 1e-12


def test_svm_gradients_are_exact_and_reach_support_and_query() -> None:
    g = torch.Generator().manual_seed(0)
    support = torch.randn(6, 4, generator=g, dtype=torch.float64, requires_grad=True)
    query = torch.randn(3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    labels = torch.arange(3).repeat_interleave(2)
    assert torch.autograd.gradcheck(lambda s, q: svm_logits(s, labels, q, 3, C=0.2), (support, query))
    s32, q32 = support.detach().float().requires_grad_(), query.detach().float().requires_grad_()
    F.cross_entropy(svm_logits(s32, labels, q32, 3), torch.tensor([0, 1, 2])).backward()
    for grad in (s32.grad, q32.grad):
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_svm_separates_separable_episodes() -> None:
    g = torch.Generator().manual_seed(1)
    centres = 5.0 * torch.eye(3) + 10.0  # separable through the origin (no bias), with a large common offset
    labels = torch.arange(3).repeat_interleave(5)
    support = centres[labels] + 0.5 * torch.randn(15, 3, generator=g)
    query = centres[labels] + 0.5 * torch.randn(15, 3, generator=g)
    batched = svm_logits(torch.stack([support, query]), labels.expand(2, 15), torch.stack([query, support]), 3)
    assert torch.equal(batched.argmax(-1), labels.expand(2, 15))


def test_ridge_matches_the_primal_closed_form_and_has_gradients() -> None:
    g = torch.Generator().manual_seed(2)
    support = torch.randn(10, 4, generator=g, dtype=torch.float64, requires_grad=True)
    query = torch.randn(7, 4, generator=g, dtype=torch.float64, requires_grad=True)
    labels = torch.arange(5).repeat_interleave(2)
    logits = ridge_logits(support, labels, query, 5, lam=3.0, scale=2.0)
    s, y = support.detach(), F.one_hot(labels, 5).double()
    weights = torch.linalg.solve(s.T @ s + 3.0 * torch.eye(4, dtype=s.dtype), s.T @ y)  # (D, n_way), D x D solve
    assert torch.allclose(logits, 2.0 * query.detach() @ weights, atol=1e-10)
    logits.square().sum().backward()
    assert support.grad is not None and query.grad is not None and support.grad.abs().sum() > 0
    assert torch.autograd.gradcheck(lambda a, b: ridge_logits(a, labels, b, 5, lam=3.0), (support, query))


# ---- meta-training -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["proto", "svm", "ridge"])
def test_meta_train_improves_episode_accuracy(kind: str) -> None:
    x, y = _digits()
    net = _net()
    cfg = EpisodicConfig(episodes=64, epochs=1, batch_episodes=8, lr=3e-3, head=kind)
    classes = list(range(10))

    def accuracy(head: EpisodicHead) -> float:
        return evaluate_episodes(net, head, x, y, classes, cfg, 60, restricted=[0, 6, 8, 9],
                                 generator=torch.Generator().manual_seed(1))["acc"]

    before = accuracy(EpisodicHead.from_config(cfg))
    head = meta_train(net, x, y, classes, cfg, generator=torch.Generator().manual_seed(0))
    assert head.kind == kind and accuracy(head) > before + 10


def test_frozen_backbone_does_not_move_and_training_is_deterministic() -> None:
    x, y = _digits()
    cfg = EpisodicConfig(episodes=12, epochs=2, batch_episodes=5, lr=1e-2, train_backbone=False)
    net = _net()
    before = copy.deepcopy(net.state_dict())
    head = meta_train(net, x, y, range(6), cfg, generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())  # BN statistics too
    assert head.scale.item() != 10.0 and net.training  # the head learnt; the mode is restored

    runs = []
    for seed in (0, 0, 1):
        net = _net()
        cfg = EpisodicConfig(episodes=8, epochs=1, batch_episodes=4, lr=1e-3, head="svm")
        head = meta_train(net, x, y, range(6), cfg, generator=torch.Generator().manual_seed(seed))
        runs.append(torch.cat([p.detach().flatten() for p in [*net.parameters(), *head.parameters()]]))
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])


def test_meta_train_uses_only_the_given_classes(monkeypatch: pytest.MonkeyPatch) -> None:
    x, y = _digits()
    seen: list[int] = []
    from obstructlib.methods.lto import classical

    real = classical._episode_logits

    def spy(backbone: nn.Module, head: EpisodicHead, images: torch.Tensor, episodes: list, *args: Any,
            **kwargs: Any) -> torch.Tensor:
        seen.extend(y[torch.as_tensor(episodes).flatten()].tolist())
        return real(backbone, head, images, episodes, *args, **kwargs)

    monkeypatch.setattr(classical, "_episode_logits", spy)
    meta_train(_net(), x, y, [1, 2, 3, 5, 7], EpisodicConfig(episodes=6, epochs=1, batch_episodes=4),
               generator=torch.Generator().manual_seed(0))
    assert len(seen) == 6 * 5 * 6 and set(seen) == {1, 2, 3, 5, 7}


# ---- episode losses and evaluation -------------------------------------------------------------------------


def test_episode_losses_one_per_query_with_global_labels() -> None:
    x, y = _digits()
    net = _net().eval()
    sampler = EpisodeSampler(y, 5, 2, 3, 1, classes=[0, 2, 4, 6, 8, 9], generator=torch.Generator().manual_seed(0))
    episode = next(iter(sampler))
    loss, glob = episode_losses(net, EpisodicHead(), x, y, episode, 5, 2, 3)
    assert loss.shape == (15,) and (loss > 0).all()
    assert glob.tolist() == [c for c in sampler.last_classes for _ in range(3)]
    loss[glob == 6].mean().backward()
    assert next(net.parameters()).grad is not None
    with pytest.raises(ConfigError, match="grouped by way"):
        episode_losses(net, EpisodicHead(), x, y, episode[::-1], 5, 2, 3)
    with pytest.raises(ConfigError, match="indices"):
        episode_losses(net, EpisodicHead(), x, y, episode[:-1], 5, 2, 3)


class _Lookup(nn.Module):
    """A backbone perfect on class 0 that cannot tell classes 1 and 2 apart (image value = class id)."""

    def __init__(self) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.table[x.flatten(1)[:, 0].long()]


def test_evaluate_episodes_splits_restricted_and_other_queries() -> None:
    labels = torch.arange(3).repeat_interleave(6)
    images = labels.float().view(-1, 1, 1, 1)
    shape = EpisodicConfig(n_way=2, k_shot=2, n_query=3)
    out = evaluate_episodes(_Lookup(), EpisodicHead(), images, labels, [0, 1, 2], shape, 40, restricted=[0],
                            generator=torch.Generator().manual_seed(5))
    # expected: R's queries are always right; an R' query is right unless its episode is {1, 2}, where the
    # tie goes to way 0 (argmax takes the first maximum)
    hits: dict[bool, list[bool]] = {True: [], False: []}  # by "the query is in R"
    per_episode: list[float] = []
    sampler = EpisodeSampler(labels, 2, 2, 3, 40, classes=[0, 1, 2], generator=torch.Generator().manual_seed(5))
    for _ in sampler:
        ways = sampler.last_classes
        right = [c == 0 or 0 in ways or w == 0 for w, c in enumerate(ways)]
        for c, r in zip(ways, right):
            hits[c == 0] += [r] * 3  # 3 queries per way
        per_episode.append(float(np.mean(right)))
    assert out["acc_r"] == 100.0 and len(hits[True]) > 0
    assert out["acc_o"] == pytest.approx(100 * np.mean(hits[False])) and out["acc_o"] < 100
    assert out["acc"] == pytest.approx(100 * np.mean(per_episode))
    assert out["ci95"] == pytest.approx(100 * 1.96 * np.std(per_episode) / math.sqrt(40))
    none_r = evaluate_episodes(_Lookup(), EpisodicHead(), images, labels, [1, 2], shape, 4, restricted=[0],
                               generator=torch.Generator().manual_seed(0))
    assert math.isnan(none_r["acc_r"]) and none_r["acc_o"] == none_r["acc"] == 50.0


# ---- errors ------------------------------------------------------------------------------------------------


def test_bad_inputs_raise_one_line_config_errors() -> None:
    x, y = _digits()
    g = torch.Generator().manual_seed(0)
    cases = [
        (lambda: meta_train(_net(), x, y, [0, 1, 2], EpisodicConfig(n_way=5), generator=g), "n_way=5"),
        (lambda: meta_train(_net(), x[:40], y[:40], range(10), EpisodicConfig(k_shot=3, n_query=5), generator=g),
         "k_shot + n_query"),
        (lambda: meta_train(_net(), x, y, range(10), EpisodicConfig(head="maml"), generator=g), "unknown head"),
        (lambda: EpisodicHead("knn"), "unknown head"),
        (lambda: evaluate_episodes(_net(), EpisodicHead(), x, y, [0, 1], EpisodicConfig(), 5, restricted=[0],
                                   generator=g), "n_way=5"),
        (lambda: svm_dual(torch.eye(2), torch.tensor([0, 1]), 2, C=0.0), "C=0.0"),
        (lambda: EpisodicConfig(head="svm", svm_c=-1.0).validate(), "svm_c"),
        (lambda: ridge_logits(torch.eye(2), torch.tensor([0, 1]), torch.eye(2), 2, lam=0.0), "lam=0.0"),
        (lambda: proto_logits(torch.eye(2), torch.tensor([0, 0]), torch.eye(2), 2), "cover every way"),
    ]
    for make, words in cases:
        with pytest.raises(ConfigError) as err:
            make()
        assert words in str(err.value) and len(str(err.value).splitlines()) == 1, str(err.value)
