"""Selective Synaptic Dampening (obstructlib.methods.lto.ssd): importances, selection, dampening."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from obstructlib.errors import ConfigError
from obstructlib.methods.lto.ssd import SSDConfig, fisher_diagonal, ssd


def _linear(weight):
    model = nn.Linear(len(weight), 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([weight]))
    return model


def _sum(model, x):  # d loss / d weight = the batch's column sums: Fisher values are known by hand
    return model(x).sum()


def _ce(model, batch):
    return nn.functional.cross_entropy(model(batch[0]), batch[1])


def test_fisher_is_the_mean_over_batches_of_squared_batch_gradients():
    model = _linear([1.0, 0.0])
    batches = [torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, 0.0]])]
    imp = fisher_diagonal(model, batches, _sum)
    torch.testing.assert_close(imp["weight"], torch.tensor([[5.0, 2.0]]))  # ((1 + 9) / 2, (4 + 0) / 2)
    assert model.weight.grad is None  # autograd.grad: no .grad field written
    # a Dataset is batched in order: batches [1, 2] + [3, 0] per column of two rows each
    xs = torch.tensor([[1.0, 2.0], [0.0, 0.0], [3.0, 0.0], [0.0, 0.0]])
    imp = fisher_diagonal(model, TensorDataset(xs), lambda m, b: _sum(m, b[0]), batch_size=2)
    torch.testing.assert_close(imp["weight"], torch.tensor([[5.0, 2.0]]))
    with pytest.raises(ConfigError, match="no batches"):
        fisher_diagonal(model, [], _sum)


def test_hand_case_which_elements_are_dampened_and_by_how_much():
    model = _linear([2.0, 3.0])
    full = [torch.tensor([[1.0, 1.0]])] * 2  # I_full = (1, 1)
    forget = [torch.tensor([[4.0, 1.0]])]  # I_forget = (16, 1)
    report = ssd(model, full, forget, _sum, SSDConfig(alpha=10.0, lam=1.0))
    # element 0: 16 > 10 * 1 -> beta = min(1 * 1 / 16, 1); element 1: 1 <= 10 * 1 -> untouched
    torch.testing.assert_close(model.weight, torch.tensor([[2.0 / 16, 3.0]]))
    assert report["per_parameter"] == {"weight": 0.5}
    assert report["overall"] == 0.5 and report["num_dampened"] == 1 and report["num_elements"] == 2
    # lam large enough: beta is bounded by 1, so a selected weight never grows
    model = _linear([2.0, 3.0])
    ssd(model, full, forget, _sum, SSDConfig(alpha=10.0, lam=20.0))
    torch.testing.assert_close(model.weight, torch.tensor([[2.0, 3.0]]))
    # lam = 4: beta = 4 / 16
    model = _linear([2.0, 3.0])
    ssd(model, full, forget, _sum, SSDConfig(alpha=10.0, lam=4.0))
    torch.testing.assert_close(model.weight, torch.tensor([[0.5, 3.0]]))


def _blobs(n, share, generator):
    y = (torch.rand(n, generator=generator) < share).long()
    centres = torch.tensor([[-2.0, 0.0, 2.0, 0.0], [2.0, 0.0, 0.0, 2.0]])
    return centres[y] + 0.5 * torch.randn(n, 4, generator=generator), y


def _class_accuracy(model, x, y, c):
    with torch.no_grad():
        return (model(x[y == c]).argmax(1) == c).float().mean().item()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_forgotten_class_loses_far_more_accuracy_than_the_kept_class(seed, one_thread):
    # SSD's regime: the forget set (class 1) is a small part (10 %) of the training data D.
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x, y = _blobs(400, 0.1, g)
    x_test, y_test = _blobs(400, 0.5, g)
    model = nn.Sequential(nn.Linear(4, 64), nn.ReLU(), nn.Linear(64, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(100):
        opt.zero_grad()
        _ce(model, (x, y)).backward()
        opt.step()
    before = [_class_accuracy(model, x_test, y_test, c) for c in (0, 1)]
    assert min(before) > 0.95
    full = [(x[i : i + 64], y[i : i + 64]) for i in range(0, len(x), 64)]
    report = ssd(model, full, [(x[y == 1], y[y == 1])], _ce, SSDConfig())
    after = [_class_accuracy(model, x_test, y_test, c) for c in (0, 1)]
    kept_drop, forgot_drop = before[0] - after[0], before[1] - after[1]
    assert forgot_drop > 0.3 and kept_drop <= 0.02, (before, after)
    assert 0 < report["overall"] < 1


def test_zero_forget_importance_and_frozen_parameters_do_not_move():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    model[2].bias.requires_grad_(False)
    start = copy.deepcopy(model.state_dict())
    x, y = torch.randn(32, 4), torch.randint(0, 2, (32,))
    forget_x = x[:8].clone()
    forget_x[:, 2:] = 0.0  # input columns 2, 3 are silent on the forget set: zero importance there
    imp = fisher_diagonal(model, [(forget_x, y[:8])], _ce)
    assert torch.all(imp["0.weight"][:, 2:] == 0) and torch.all(imp["2.bias"] == 0)
    # alpha tiny: nearly every element with I_forget > 0 is selected; the silent columns and the
    # frozen bias (I_forget = 0 there, and I_full = 0 too) are not
    report = ssd(model, [(forget_x * 0.01, y[:8])], [(forget_x, y[:8])], _ce, SSDConfig(alpha=1e-3, lam=0.5))
    assert report["num_dampened"] > 0
    torch.testing.assert_close(model[0].weight[:, 2:], start["0.weight"][:, 2:], rtol=0, atol=0)
    torch.testing.assert_close(model[2].bias, start["2.bias"], rtol=0, atol=0)
    assert model.training  # eval() during the passes, the mode restored afterwards


def test_batchnorm_is_left_alone_when_excluded():
    torch.manual_seed(0)
    data = [(torch.randn(16, 4), torch.randint(0, 2, (16,)))]
    # the same data for D and D_f: every element with I > 0 is selected at alpha < 1, beta = lam
    cfg = SSDConfig(alpha=0.5, lam=0.5)
    base = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 2))
    kept = copy.deepcopy(base)
    report = ssd(kept, data, data, _ce, cfg)
    assert report["excluded"] == ["1.bias", "1.weight"] and "1.weight" not in report["per_parameter"]
    torch.testing.assert_close(kept[1].weight, base[1].weight, rtol=0, atol=0)
    torch.testing.assert_close(kept[1].bias, base[1].bias, rtol=0, atol=0)
    assert not torch.equal(kept[0].weight, base[0].weight)
    dampened = copy.deepcopy(base)
    report = ssd(dampened, data, data, _ce, SSDConfig(alpha=0.5, lam=0.5, exclude_bn=False))
    assert report["excluded"] == [] and report["per_parameter"]["1.weight"] > 0
    assert not torch.equal(dampened[1].weight, base[1].weight)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"alpha": 0.0}, "ssd.alpha=0.0"),
        ({"alpha": -1.0}, "ssd.alpha"),
        ({"lam": float("nan")}, "ssd.lam"),
        ({"lam": float("inf")}, "ssd.lam"),
        ({"batch_size": 0}, "ssd.batch_size=0"),
    ],
)
def test_bad_config_raises_one_line_config_error(kwargs, words):
    model = _linear([1.0, 1.0])
    batches = [torch.ones(1, 2)]
    with pytest.raises(ConfigError) as err:
        ssd(model, batches, batches, _sum, SSDConfig(**kwargs))
    assert words in str(err.value) and len(str(err.value).splitlines()) == 1
    torch.testing.assert_close(model.weight, torch.ones(1, 2))
