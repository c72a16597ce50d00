"""Perturbation primitives and dataset-level poisons (EM, TAP, random) on 8x8 images and a tiny CNN."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from obstructlib.data import ArrayImageDataset, PerturbationStore
from obstructlib.errors import ConfigError
from obstructlib.primitives.perturb import (
    clip_to_image,
    perturb_dataset,
    pgd,
    pgd_step,
    project,
    random_noise,
)
from obstructlib.primitives.poisons import (
    ErrorMaxConfig,
    ErrorMinConfig,
    error_maximizing_noise,
    error_minimizing_noise,
    random_noise_store,
)

EPS = 8 / 255
L2_EPS = 0.5


def tiny_net(num_classes: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(16, num_classes),
    )


def blobs(n: int = 24, classes: int = 3, size: int = 8, seed: int = 0) -> ArrayImageDataset:
    """Separable-ish data: class-dependent colour plus texture, with saturated pixels at 0 and 255."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    base = np.array([[140, 116, 116], [116, 140, 116], [116, 116, 140]])[labels % 3]
    images = base[:, None, None, :] + rng.integers(-60, 61, size=(n, size, size, 3))
    images[:, 0, 0] = 0
    images[:, -1, -1] = 255
    return ArrayImageDataset(np.clip(images, 0, 255).astype(np.uint8), labels)


def batch(n: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.rand(n, 3, 8, 8)
    x[:, :, 0, 0], x[:, :, -1, -1] = 0.0, 1.0  # pixels at the borders of [0, 1]
    return x, torch.arange(n) % 3


def assert_valid(delta: torch.Tensor, x: torch.Tensor | None, eps: float, norm: str = "linf") -> None:
    if norm == "linf":
        assert float(delta.abs().max()) <= eps + 1e-6
    else:
        assert float(delta.flatten(1).norm(dim=1).max()) <= eps + 1e-5
    if x is not None:
        z = x + delta
        assert float(z.min()) >= -1e-6 and float(z.max()) <= 1 + 1e-6


# ---- tensor primitives ----------------------------------------------------------------------
@pytest.mark.parametrize("norm,eps", [("linf", EPS), ("l2", L2_EPS)])
def test_project_and_clip_keep_ball_and_image_range(norm: str, eps: float) -> None:
    x, _ = batch()
    delta = torch.randn_like(x)
    out = clip_to_image(project(delta, eps, norm), x)
    assert_valid(out, x, eps, norm)
    small = project(delta, eps, norm) * 0.5  # already inside: untouched
    assert torch.allclose(project(small, eps, norm), small)
    with pytest.raises(ConfigError):
        project(delta, eps, "l1")


@pytest.mark.parametrize("norm,eps", [("linf", EPS), ("l2", L2_EPS)])
@pytest.mark.parametrize("minimize", [True, False])
def test_pgd_step_and_random_noise_stay_valid(norm: str, eps: float, minimize: bool) -> None:
    x, _ = batch()
    delta = random_noise(x.shape, eps, torch.Generator().manual_seed(1), norm=norm)
    assert_valid(delta, None, eps, norm)
    again = random_noise(x.shape, eps, torch.Generator().manual_seed(1), norm=norm)
    assert torch.equal(delta, again)  # reproducible from the generator
    for _ in range(5):
        delta = pgd_step(delta, torch.randn_like(x), eps / 2, eps, x, norm, minimize)
        assert_valid(delta, x, eps, norm)
    assert not delta.requires_grad


def test_pgd_step_direction() -> None:
    grad = torch.tensor([[[[1.0, -1.0]]]])
    down = pgd_step(torch.zeros_like(grad), grad, 0.01, 0.1)
    up = pgd_step(torch.zeros_like(grad), grad, 0.01, 0.1, minimize=False)
    assert torch.allclose(down, -0.01 * grad) and torch.allclose(up, 0.01 * grad)
    l2 = pgd_step(torch.zeros_like(grad), grad * 3, 0.2, 1.0, norm="l2")
    assert float(l2.norm()) == pytest.approx(0.2)


@pytest.mark.parametrize("norm,eps", [("linf", EPS), ("l2", L2_EPS)])
def test_pgd_minimising_lowers_and_maximising_raises_the_loss(norm: str, eps: float) -> None:
    model = tiny_net().eval()
    x, y = batch()

    def loss_fn(z: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(model(z), y)

    with torch.no_grad():
        clean = float(loss_fn(x))
    kw = {"eps": eps, "step_size": eps / 4, "steps": 10, "norm": norm}
    d_min = pgd(loss_fn, x, **kw)
    d_max = pgd(
        loss_fn, x, minimize=False, random_start=True, generator=torch.Generator().manual_seed(0), **kw
    )
    with torch.no_grad():
        assert float(loss_fn(x + d_min)) < clean < float(loss_fn(x + d_max))
    for d in (d_min, d_max):
        assert_valid(d, x, eps, norm)


def test_pgd_leaves_the_model_untouched() -> None:
    model = tiny_net()
    model.eval()
    model[0].weight.grad = torch.full_like(model[0].weight, 0.5)  # an existing .grad must survive
    model[5].bias.requires_grad_(False)  # a frozen parameter must stay frozen
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    x, y = batch()
    for frozen_module in (None, model):
        pgd(
            lambda z: F.cross_entropy(model(z), y),
            x,
            eps=EPS,
            step_size=EPS / 4,
            steps=3,
            frozen_module=frozen_module,
        )
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # incl. BN buffers
    assert [p.requires_grad for p in model.parameters()] == flags
    assert torch.equal(model[0].weight.grad, torch.full_like(model[0].weight, 0.5))
    assert all(p.grad is None for n, p in model.named_parameters() if n != "0.weight")


def test_pgd_warm_start_is_projected() -> None:
    x, _ = batch()
    d = pgd(lambda z: z.sum(), x, torch.ones_like(x), eps=EPS, step_size=EPS, steps=0)
    assert_valid(d, x, EPS)


# ---- dataset pass -----------------------------------------------------------------------------
def test_perturb_dataset_writes_each_sample_its_own_noise_under_shuffling() -> None:
    """The loss pulls sample i toward a pattern that depends on i alone: every row must end at it."""
    n = 10
    ds = ArrayImageDataset(np.full((n, 4, 4, 3), 128, np.uint8), np.zeros(n, np.int64))
    signs = torch.stack(
        [torch.from_numpy(np.random.default_rng(i).choice([-1.0, 1.0], (3, 4, 4))).float() for i in range(n)]
    )

    def loss_fn(z: torch.Tensor, b: tuple) -> torch.Tensor:
        return -(z * signs[b[0]]).sum()  # minimised at delta_i = eps * signs[i]

    store = PerturbationStore(n, (3, 4, 4), EPS)
    done: list[int] = []
    perturb_dataset(
        store,
        ds,
        loss_fn,
        step_size=1 / 255,
        steps=10,
        device="cpu",
        batch_size=3,
        shuffle=True,
        seed=5,
        after_batch=done.append,
        progress=False,
    )
    assert torch.equal(store.get(range(n)), signs * 8 / 255)
    assert done == [1, 2, 3, 4]


# ---- error-minimising noise ------------------------------------------------------------------
QUICK_EM = {"step_size": 2 / 255, "steps": 5, "train_steps": 3, "batch_size": 8, "lr": 0.05, "amp": False}


def test_sample_wise_em_is_per_sample_and_unlearnable() -> None:
    ds = blobs()
    model = tiny_net()
    cfg = ErrorMinConfig(
        max_rounds=6, stop_acc=1.0, **{**QUICK_EM, "lr": 0.1, "step_size": 1 / 255, "steps": 8}
    )
    records: list[dict] = []
    store = error_minimizing_noise(
        model, ds, cfg, "cpu", progress=False, callback=lambda r, rec: records.append(rec)
    )
    assert store.mode == "sample" and store.num == len(ds) and len(records) == 6
    delta = store.get(range(len(ds)))
    assert_valid(delta, None, EPS)
    flat = delta.flatten(1)
    # sample-wise, not class-wise: noise differs inside every class (a tiny net saturates some
    # rows at the same +-eps sign pattern, so not every row is unique)
    assert len({tuple(row.tolist()) for row in flat}) >= 0.75 * len(ds)
    for k in range(3):
        members = flat[torch.from_numpy(np.asarray(ds.labels) == k)]
        assert len({tuple(row.tolist()) for row in members}) > 1
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    assert_valid(store.apply(x, range(len(ds))) - x, x, EPS)
    y = torch.as_tensor(ds.labels)
    with torch.no_grad():
        clean = F.cross_entropy(model(x), y)
        perturbed = F.cross_entropy(model(store.apply(x, range(len(ds)))), y)
    assert float(perturbed) < 0.6 * float(clean)  # the noise minimises the surrogate's error


def test_em_stops_at_stop_acc() -> None:
    cfg = ErrorMinConfig(max_rounds=20, stop_acc=0.5, **QUICK_EM)
    records: list[dict] = []
    error_minimizing_noise(
        tiny_net(), blobs(), cfg, "cpu", progress=False, callback=lambda r, rec: records.append(rec)
    )
    assert records[-1]["acc"] > 0.5 and all(r["acc"] <= 0.5 for r in records[:-1])


def test_class_wise_em_shares_noise_within_a_class() -> None:
    ds = blobs()
    cfg = ErrorMinConfig(max_rounds=2, stop_acc=1.0, shuffle_search=True, **QUICK_EM)
    store = error_minimizing_noise(tiny_net(), ds, cfg, "cpu", mode="class", progress=False)
    assert store.mode == "cluster" and store.num == 3
    labels = np.asarray(ds.labels)
    per_sample = store.delta_for(range(len(ds)))
    for k in range(3):
        members = per_sample[torch.from_numpy(labels == k)]
        assert torch.equal(members, members[:1].expand_as(members))
    assert not torch.equal(store.get([0]), store.get([1]))
    assert_valid(per_sample, None, EPS)


def test_em_resume_matches_an_uninterrupted_run(tmp_path) -> None:
    ds = blobs(n=18)
    for mode in ("sample", "class"):
        cfg = ErrorMinConfig(max_rounds=3, stop_acc=1.0, **QUICK_EM)
        full = error_minimizing_noise(tiny_net(), ds, cfg, "cpu", mode=mode, progress=False)
        ckpt = tmp_path / mode
        error_minimizing_noise(
            tiny_net(),
            ds,
            cfg,
            "cpu",
            mode=mode,
            progress=False,
            ckpt_dir=ckpt,
            callback=lambda r, rec: r == 1,
        )  # "interrupt" after round 1
        assert len(list(ckpt.glob("noise_*.npy"))) == 1
        resumed = error_minimizing_noise(tiny_net(), ds, cfg, "cpu", mode=mode, progress=False, ckpt_dir=ckpt)
        assert np.array_equal(full.data, resumed.data), mode


# ---- error-maximising noise (TAP) ------------------------------------------------------------
def clean_model(ds: ArrayImageDataset) -> nn.Module:
    model = tiny_net()
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    y = torch.as_tensor(ds.labels)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(25):  # accurate but not saturated, as a real clean model
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()


@pytest.mark.parametrize("targeted", [True, False])
def test_tap_raises_the_clean_models_loss(targeted: bool) -> None:
    ds = blobs()
    model = clean_model(ds)
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    y = torch.as_tensor(ds.labels)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = ErrorMaxConfig(eps=16 / 255, step_size=2 / 255, steps=20, batch_size=8, amp=False)
    store = error_maximizing_noise(model, ds, cfg, "cpu", targeted=targeted, progress=False)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    xp = store.apply(x, range(len(ds)))
    assert_valid(xp - x, x, 16 / 255)
    with torch.no_grad():
        assert float(F.cross_entropy(model(xp), y)) > float(F.cross_entropy(model(x), y)) + 0.5
        if targeted:
            hit = (model(xp).argmax(1) == (y + 1) % 3).float().mean()
            assert float(hit) > (model(x).argmax(1) == (y + 1) % 3).float().mean() + 0.3


def test_tap_resume_after_a_crash(tmp_path) -> None:
    ds = blobs(n=12)
    model = clean_model(ds)
    cfg = ErrorMaxConfig(steps=4, batch_size=4, ckpt_every_batches=1, amp=False)
    full = error_maximizing_noise(model, ds, cfg, "cpu", progress=False)

    class Crash(nn.Module):  # fails during the third batch, after two were checkpointed
        def __init__(self) -> None:
            super().__init__()
            self.inner, self.calls = model, 0

        def forward(self, z: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            if self.calls > 2 * cfg.steps:
                raise RuntimeError("boom")
            return self.inner(z)

    with pytest.raises(RuntimeError):
        error_maximizing_noise(Crash(), ds, cfg, "cpu", progress=False, ckpt_dir=tmp_path)
    resumed = error_maximizing_noise(model, ds, cfg, "cpu", progress=False, ckpt_dir=tmp_path)
    assert np.array_equal(full.data, resumed.data)
    with pytest.raises(ConfigError):  # another config in the same directory is refused
        error_maximizing_noise(model, ds, ErrorMaxConfig(steps=5, batch_size=4), "cpu", ckpt_dir=tmp_path)


# ---- random noise and bad input ---------------------------------------------------------------
def test_random_noise_store_and_bad_inputs() -> None:
    store = random_noise_store(20, (3, 4, 4), EPS, seed=3)
    assert int(np.abs(store.data).max()) == 8 and np.array_equal(
        store.data, random_noise_store(20, (3, 4, 4), EPS, 3).data
    )
    cluster = random_noise_store(2, (3, 4, 4), EPS, seed=3, mode="cluster", assignments=[0, 1, 1])
    assert cluster.num_samples == 3
    unlabelled = ArrayImageDataset(np.zeros((4, 8, 8, 3), np.uint8))
    with pytest.raises(ConfigError):
        error_minimizing_noise(tiny_net(), unlabelled, ErrorMinConfig(), "cpu", progress=False)
    with pytest.raises(ConfigError):
        error_minimizing_noise(tiny_net(), blobs(), ErrorMinConfig(), "cpu", mode="pixel")
    with pytest.raises(ConfigError):
        ErrorMinConfig(eps=0.9).validate()
