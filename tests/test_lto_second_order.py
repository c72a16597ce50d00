"""The second-order option of LTO: exact gradients through the unrolled inner run (``lto.order=2``)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from obstructlib.errors import ConfigError
from obstructlib.methods.lto.learners import learner_config
from obstructlib.methods.lto.method import LTOConfig, obstruct, snapshot
from obstructlib.methods.lto.second_order import call_with, unrolled_gradients
from obstructlib.methods.lto.tasks import ClipTask
from obstructlib.models import create_clip


def _toy(dtype=torch.float64):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).to(dtype)
    x_in, x_obs = torch.randn(16, 3, dtype=dtype), torch.randn(12, 3, dtype=dtype)
    y_in, y_obs = (x_in[:, 0] > 0).long(), (x_obs[:, 0] > 0).long()

    def inner(m, step):
        half = slice(0, 8) if step % 2 == 0 else slice(8, 16)
        return F.cross_entropy(m(x_in[half]), y_in[half])

    def obs(m):
        return F.cross_entropy(m(x_obs), y_obs, reduction="none"), y_obs == 1

    return model, inner, obs


def _outer_r(model, params, inner, obs, steps, lr):
    """The restricted obstruction loss at the unrolled adapted weights, as a plain function of theta."""
    fast = dict(params)
    for s in range(steps):
        loss = call_with(model, fast, lambda m, s=s: inner(m, s))
        grads = torch.autograd.grad(loss, list(fast.values()), create_graph=True)
        fast = {n: w - lr * g for (n, w), g in zip(fast.items(), grads)}
    losses, r = call_with(model, fast, obs)
    return losses[r].mean()


def test_unrolled_gradient_matches_finite_differences_and_differs_from_first_order():
    model, inner, obs = _toy()
    params = list(model.parameters())
    g_r, g_o, log = unrolled_gradients(model, params, params, inner, obs, steps=3, lr=0.5)
    assert log["loss_r"] > 0 and log["loss_o"] > 0
    # central finite differences of L_R(theta'(theta)) on a few coordinates of every tensor
    eps = 1e-6
    for (name, p), g in zip(model.named_parameters(), g_r):
        for flat in range(0, p.numel(), max(1, p.numel() // 3)):
            base = {n: q.detach().clone() for n, q in model.named_parameters()}
            plus, minus = dict(base), dict(base)
            plus[name] = base[name].clone().view(-1).index_add(0, torch.tensor([flat]),
                                                               torch.tensor([eps], dtype=p.dtype)).view_as(p)
            minus[name] = base[name].clone().view(-1).index_add(0, torch.tensor([flat]),
                                                                torch.tensor([-eps], dtype=p.dtype)).view_as(p)
            plus = {n: v.requires_grad_(True) for n, v in plus.items()}
            minus = {n: v.requires_grad_(True) for n, v in minus.items()}
            up, down = (_outer_r(model, w, inner, obs, 3, 0.5).detach() for w in (plus, minus))
            fd = float(up - down) / (2 * eps)
            assert abs(float(g.view(-1)[flat]) - fd) < 1e-6 + 1e-4 * abs(fd), (name, flat, float(g.view(-1)[flat]), fd)
    # first order: the gradient at theta' applied to theta, i.e. the same without the Jacobian
    fast = {n: p for n, p in model.named_parameters()}
    for s in range(3):
        loss = call_with(model, fast, lambda m, s=s: inner(m, s))
        grads = torch.autograd.grad(loss, list(fast.values()))
        fast = {n: (w - 0.5 * g).detach().requires_grad_(True) for (n, w), g in zip(fast.items(), grads)}
    losses, r = call_with(model, fast, obs)
    first = torch.autograd.grad(losses[r].mean(), list(fast.values()))
    gap = sum(float((a - b).norm()) for a, b in zip(g_r, first)) / sum(float(b.norm()) for b in first)
    assert gap > 0.05, gap  # the Hessian terms matter at this rate


def test_zero_inner_steps_is_the_plain_gradient_and_the_model_is_not_written():
    model, inner, obs = _toy()
    before = snapshot(model)
    params = list(model.parameters())
    g_r, g_o, _ = unrolled_gradients(model, params, params, inner, obs, steps=0, lr=0.5)
    losses, r = obs(model)
    want = torch.autograd.grad(losses[~r].mean(), params)
    for a, b in zip(g_o, want):
        assert torch.allclose(a, b)
    unrolled_gradients(model, params, params, inner, obs, steps=2, lr=0.5)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    with pytest.raises(ValueError, match="parameters of the model"):
        unrolled_gradients(model, [nn.Parameter(torch.zeros(1))], params, inner, obs, steps=1, lr=0.1)


def _colours(per_class: int):
    g = torch.Generator().manual_seed(0)
    base = torch.tensor([[0.9, 0.1, 0.1], [0.1, 0.9, 0.1], [0.1, 0.1, 0.9], [0.5, 0.5, 0.5]])
    y = torch.arange(4).repeat_interleave(per_class)
    return (base[y][:, :, None, None] + 0.1 * torch.randn(len(y), 3, 32, 32, generator=g)).clamp(0, 1), y


CLASSES, TEMPLATES = ["red", "green", "blue", "grey"], ["a photo of a {}.", "a {} thing."]


def test_second_order_loop_on_a_tiny_clip_raises_the_restricted_loss_and_refuses_other_learners():
    torch.manual_seed(0)
    clip = create_clip("tiny-rn", context_length=32).eval()
    x, y = _colours(5)
    model = copy.deepcopy(clip)
    cfg = LTOConfig(steps=4, lr=3e-3, order=2, inner_steps=2, inner_lr=0.05, seed=0)
    task = ClipTask.from_config(model, x, y, CLASSES, TEMPLATES, [0], learner_config("ce", "defender"), cfg)
    res = obstruct(task, cfg)
    assert res.losses[-1]["loss_r"] > res.losses[0]["loss_r"]
    # lr 0: the unrolled run never writes the live weights
    still = copy.deepcopy(clip)
    before = snapshot(still)
    task0 = ClipTask.from_config(still, x, y, CLASSES, TEMPLATES, [0], learner_config("ce", "defender"), cfg)
    obstruct(task0, LTOConfig(steps=1, lr=0.0, order=2, inner_steps=2, seed=0))
    for k, v in still.state_dict().items():
        assert torch.equal(v, before[k]), k
    coop = ClipTask.from_config(copy.deepcopy(clip), x, y, CLASSES, TEMPLATES, [0],
                                learner_config("coop", "defender"), cfg)
    with pytest.raises(ConfigError, match="ce learner only"):
        obstruct(coop, LTOConfig(steps=1, order=2))
    with pytest.raises(ConfigError, match="order=3"):
        LTOConfig(order=3).validate()
