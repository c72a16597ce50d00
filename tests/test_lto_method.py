"""Learning to Obstruct: the loop's invariants, the CLIP learners, the pools and DropRatio@beta."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from obstructlib.errors import ConfigError
from obstructlib.methods.lto.evaluate import attack_clip, split_accuracy
from obstructlib.methods.lto.learners import (
    fit_learner,
    learner_config,
    learner_logits,
    learner_text,
    visual_parameters,
)
from obstructlib.methods.lto.method import LTOConfig, obstruct, per_class_pools, restore, snapshot
from obstructlib.methods.lto.tasks import ClipTask, draw_shots
from obstructlib.metrics import drop_ratio_at, drop_ratios, operating_point
from obstructlib.models import create_clip

CLASSES = ["red", "green", "blue", "grey"]
TEMPLATES = ["a photo of a {}.", "a {} thing."]


def _colours(per_class: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A separable task: class c is an image of colour c plus noise."""
    g = torch.Generator().manual_seed(seed)
    base = torch.tensor([[0.9, 0.1, 0.1], [0.1, 0.9, 0.1], [0.1, 0.1, 0.9], [0.5, 0.5, 0.5]])
    y = torch.arange(len(CLASSES)).repeat_interleave(per_class)
    x = base[y][:, :, None, None] + 0.1 * torch.randn(len(y), 3, 32, 32, generator=g)
    return x.clamp(0, 1), y


@pytest.fixture(scope="module")
def clip():
    torch.manual_seed(0)
    return create_clip("tiny-rn", context_length=32).eval()


# ---- DropRatio@beta ----------------------------------------------------------------------------
def test_drop_ratio_interpolated_nearest_and_no_drop():
    traj = [(0, 60, 50), (10, 55, 49), (20, 40, 47), (30, 30, 44)]
    # drop_o 1 -> 3 crosses 2 halfway: drop_r 5 -> 20 gives 12.5 at step 15
    p = operating_point(2.0, traj)
    assert p["reached"] and math.isclose(p["ratio"], 6.25) and math.isclose(p["step"], 15.0)
    # nearest: |1 - 2| = |3 - 2|, the first wins: 5 / 1
    assert drop_ratio_at(2.0, traj, "nearest") == 5.0
    assert math.isclose(drop_ratio_at(3.0, traj), 20 / 3)  # exactly on a checkpoint
    # within: the best checkpoint costing <= beta; a noisy early dip does not end the search
    noisy = [(0, 60, 50), (5, 58, 46), (10, 40, 50.5), (15, 10, 49), (20, 5, 45)]
    assert drop_ratio_at(2.0, noisy) < 1 and drop_ratio_at(2.0, noisy, "within") == 25.0
    costly = [(0, 60, 50), (5, 30, 46), (10, 20, 47)]  # no checkpoint within beta: the cheapest, by its cost
    w = operating_point(2.0, costly, "within")
    assert w["step"] == 10 and math.isclose(w["ratio"], 40 / 3)
    never = [(0, 60, 50), (10, 50, 49.5), (20, 45, 49)]  # R' loses at most 1 < beta
    q = operating_point(2.0, never)
    assert not q["reached"] and not q["no_drop"] and q["ratio"] == 15 / 2
    flat = [(0, 60, 50), (10, 50, 50), (20, 40, 51)]
    f = operating_point(2.0, flat)
    assert f["no_drop"] and not f["reached"]
    assert drop_ratios(flat).tolist()[0] != drop_ratios(flat).tolist()[0]  # NaN where R' did not drop
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ConfigError, match="beta"):
            drop_ratio_at(bad, traj)
    with pytest.raises(ConfigError, match="method"):
        drop_ratio_at(2.0, traj, "closest")
    with pytest.raises(ConfigError, match="reference"):
        drop_ratio_at(2.0, traj[:1])


def test_dict_rows_and_increasing_steps():
    rows = [{"step": 0, "acc_r": 10, "acc_o": 10}, {"step": 5, "acc_r": 0, "acc_o": 8}]
    assert drop_ratio_at(2.0, rows) == 5.0
    with pytest.raises(ConfigError, match="increasing"):
        drop_ratio_at(2.0, [(0, 1, 1), (0, 1, 1)])


# ---- pools and draws ---------------------------------------------------------------------------
def test_pools_disjoint_with_enough_shots_and_refusal():
    labels = torch.arange(10).repeat_interleave(30)
    atk, dfn = per_class_pools(labels, (20, 5))
    assert not set(atk.tolist()) & set(dfn.tolist())
    assert torch.bincount(labels[atk]).tolist() == [20] * 10
    assert torch.bincount(labels[dfn]).tolist() == [5] * 10
    assert per_class_pools(labels, (20, 5))[1].tolist() == dfn.tolist()  # one fixed split
    with pytest.raises(ConfigError, match="pools need 40"):
        per_class_pools(labels, (20, 20))
    g = torch.Generator().manual_seed(0)
    fsc = draw_shots(labels[dfn], 4, g)
    obs = draw_shots(labels[dfn], 1, g, exclude=fsc)
    assert not set(fsc.tolist()) & set(obs.tolist()) and len(obs) == 10
    with pytest.raises(ConfigError, match="shots are asked"):
        draw_shots(labels[dfn], 6, g)


# ---- the loop on a toy problem -----------------------------------------------------------------
class _ToyTask:
    """A linear classifier; the "inner run" is one SGD step on the obstruction data's first half."""

    def __init__(self, inner_lr: float = 0.0) -> None:
        torch.manual_seed(0)
        self.model = nn.Linear(2, 2)
        self.x = torch.randn(40, 2)
        self.y = (self.x[:, 0] > 0).long()
        self.inner_lr = inner_lr

    def parameters(self, scope):
        return list(self.model.named_parameters())

    def sample(self, generator):
        return torch.randperm(40, generator=generator)[:20]

    def adapt(self, idx, generator, inner):
        if inner and self.inner_lr:
            loss = F.cross_entropy(self.model(self.x[idx]), self.y[idx])
            grads = torch.autograd.grad(loss, list(self.model.parameters()))
            with torch.no_grad():
                for p, g in zip(self.model.parameters(), grads):
                    p.sub_(self.inner_lr * g)
        return None

    def losses(self, state, idx, generator):
        return F.cross_entropy(self.model(self.x[idx]), self.y[idx], reduction="none"), self.y[idx] == 1

    def restricted_loss(self):
        with torch.no_grad():
            m = self.y == 1
            return float(F.cross_entropy(self.model(self.x[m]), self.y[m]))


def test_only_r_step_raises_the_restricted_loss_of_the_unadapted_model():
    task = _ToyTask()
    before = task.restricted_loss()
    obstruct(task, LTOConfig(method="only-r", steps=3, lr=0.5, seed=0))
    assert task.restricted_loss() > before + 0.05


def test_inner_run_is_undone_before_the_update():
    """With lr = 0 the outer step changes nothing: the adapted weights were restored bit-exactly."""
    task = _ToyTask(inner_lr=1.0)
    saved = snapshot(task.model)
    obstruct(task, LTOConfig(steps=2, lr=0.0, seed=0))
    for k, v in task.model.state_dict().items():
        assert torch.equal(v, saved[k])


def test_resume_continues_the_same_run(tmp_path):
    full = _ToyTask(inner_lr=0.5)
    obstruct(full, LTOConfig(steps=6, lr=0.1, ckpt_every=1, seed=3))
    half = _ToyTask(inner_lr=0.5)
    obstruct(half, LTOConfig(steps=3, lr=0.1, ckpt_every=1, seed=3), ckpt_dir=tmp_path / "c")
    resumed = _ToyTask(inner_lr=0.5)
    obstruct(resumed, LTOConfig(steps=6, lr=0.1, ckpt_every=1, seed=3), ckpt_dir=tmp_path / "c")
    for a, b in zip(full.model.parameters(), resumed.model.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def test_bad_config_fails_with_one_line():
    with pytest.raises(ConfigError, match="unknown method"):
        LTOConfig(method="maml").validate()
    with pytest.raises(ConfigError, match="scope"):
        LTOConfig(scope="text").validate()
    with pytest.raises(ConfigError, match="unknown learner"):
        learner_config("linear-probe")


# ---- the CLIP learners -------------------------------------------------------------------------
def _train_acc(model, state, x, y, cfg) -> float:
    with torch.no_grad():
        text = learner_text(model, state)
        return float((learner_logits(model, state, x, text, cfg).argmax(1) == y).float().mean())


@pytest.mark.parametrize("kind", ["ce", "coop", "tip-adapter"])
def test_each_learner_improves_over_its_start_and_keeps_frozen_parts(clip, kind):
    import copy

    model = copy.deepcopy(clip)
    x, y = _colours(6)
    cfg = learner_config(kind, "attacker", epochs=15, lr_visual=3e-3, batch_size=8, min_crop=0.9,
                         **({"lr_head": 2e-2} if kind != "ce" else {}))
    g = torch.Generator().manual_seed(0)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters()
              if "transformer" in n or "logit_scale" in n or ".bn" in n}
    from obstructlib.methods.lto.learners import init_learner

    start = init_learner(model, x, y, CLASSES, TEMPLATES, cfg, generator=torch.Generator().manual_seed(0))
    before = _train_acc(model, start, x, y, cfg)
    state = fit_learner(model, x, y, CLASSES, TEMPLATES, cfg, generator=g)
    after = _train_acc(model, state, x, y, cfg)
    assert after >= before + 0.2, (before, after)
    for n, p in model.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), n
    assert all(p.grad is None for p in model.parameters())


def test_clip_task_restores_bit_exactly_and_splits_every_sample_once(clip):
    import copy

    model = copy.deepcopy(clip)
    x, y = _colours(5)
    task = ClipTask(model, x, y, CLASSES, TEMPLATES, [0, 2], learner_config("ce", "defender", lr_visual=1e-3))
    saved = snapshot(model)
    g = torch.Generator().manual_seed(0)
    data = task.sample(g)
    state = task.adapt(data, g, inner=True)
    assert any(not torch.equal(saved[k], v) for k, v in model.state_dict().items())  # the inner run moved it
    losses, is_r = task.losses(state, data, g)
    assert losses.shape == is_r.shape == (len(CLASSES),)  # k_obs = 1 per class, each in R or R'
    assert is_r.tolist() == [True, False, True, False]
    restore(model, saved)
    for k, v in model.state_dict().items():
        assert torch.equal(v, saved[k])
    names = [n for n, _ in task.parameters("visual")]
    assert names and not any(".bn" in n for n in names)
    assert "token_embedding.weight" in [n for n, _ in task.parameters("visual+token")]
    with pytest.raises(ConfigError, match="restricted classes"):
        ClipTask(model, x, y, CLASSES, TEMPLATES, [7], learner_config("ce", "defender"))


def test_attacker_does_not_change_the_backbone_and_splits_accuracy(clip):
    x, y = _colours(5)
    before = snapshot(clip)
    out = attack_clip(clip, (x, y), _colours(3, seed=1), CLASSES, TEMPLATES,
                      learner_config("ce", "attacker", epochs=1), restricted=[0], seed=0)
    assert {"acc", "acc_r", "acc_o"} <= set(out)
    for k, v in clip.state_dict().items():
        assert torch.equal(v, before[k])
    s = split_accuracy(torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 1, 1]), [0], {"first": [0]})
    assert s["acc_r"] == 100.0 and s["per_superclass"]["first"] == 100.0
    assert math.isclose(s["acc_o"], 200 / 3, rel_tol=1e-5)


def test_lto_lowers_restricted_accuracy_of_the_adapted_model_on_a_toy_clip(clip):
    """One short run: the restricted loss after the defender's inner run rises, the other stays."""
    import copy

    model = copy.deepcopy(clip)
    x, y = _colours(5)
    cfg = LTOConfig(steps=6, lr=3e-3, seed=0)
    task = ClipTask.from_config(model, x, y, CLASSES, TEMPLATES, [0], learner_config("ce", "defender", lr_visual=1e-3),
                                cfg)
    res = obstruct(task, cfg)
    assert res.losses[-1]["loss_r"] > res.losses[0]["loss_r"]
    assert visual_parameters(model)


def test_attribute_task_splits_restricted_and_other_losses(clip):
    import copy

    from obstructlib.methods.lto.attributes import AttributeTask, attack_attributes

    model = copy.deepcopy(clip)
    x, y = _colours(10)
    attrs = torch.stack([(y == 0) | (y == 1), y == 2, y == 3], dim=1).long()  # "warm", "blue", "grey"
    prompts = [("a cold thing.", "a warm thing."), ("not blue.", "blue."), ("colourful.", "grey.")]
    task = AttributeTask(model, x, attrs, prompts, 1, learner_config("ce", "defender", lr_visual=1e-3),
                         task_size=20, obs_size=12)
    g = torch.Generator().manual_seed(0)
    data = task.sample(g)
    assert not set(data[0].tolist()) & set(data[1].tolist())
    losses, is_r = task.losses(None, data, g)
    assert int(is_r.sum()) == 12 and len(losses) == 12 * 3  # one restricted CE per image, two others
    out = attack_attributes(model, (x, attrs), (x, attrs), prompts, learner_config("ce", "attacker", epochs=1),
                            restricted=1, seed=0)
    assert len(out["auroc"]) == 3 and out["acc_r"] == out["auroc"][1]
    with pytest.raises(ConfigError, match="restricted attribute"):
        AttributeTask(model, x, attrs, prompts, 5, learner_config("ce", "defender"), task_size=2, obs_size=2)
