"""Unlearnable Clusters on 16 px images with a tiny generator and a random digits_cnn surrogate."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

import obstructlib as ob
from obstructlib.data import ArrayImageDataset, export_protected
from obstructlib.errors import ConfigError
from obstructlib.methods.uc import UCConfig, cluster_targets, project_noise, train_generator, uc_loss
from obstructlib.methods.uc import method as uc
from obstructlib.models import FeatureExtractor, ResnetGenerator, create_clip, create_model, create_surrogate

EPS = 16 / 255


def colour_groups(n: int = 24, size: int = 16, seed: int = 0) -> ArrayImageDataset:
    """Three colour groups with texture, saturated pixels included (so clipping matters)."""
    rng = np.random.default_rng(seed)
    base = np.array([[230, 30, 30], [30, 230, 30], [30, 30, 230]], np.float64)
    labels = np.arange(n) % 3
    img = base[labels][:, None, None, :] + rng.normal(0, 25, (n, size, size, 3))
    img[:, :2, :2] = 255.0
    img[:, -2:, -2:] = 0.0
    return ArrayImageDataset(np.clip(img, 0, 255).astype(np.uint8), labels, ["r", "g", "b"])


def tiny_cfg(**kw) -> UCConfig:
    base = {
        "num_clusters": 3,
        "eps": EPS,
        "surrogate": "classifier:digits_cnn",
        "epochs": 2,
        "lr": 1e-3,
        "batch_size": 8,
        "ngf": 4,
        "n_blocks": 1,
        "kmeans_n_init": 2,
        "seed": 0,
    }
    base.update(kw)
    return UCConfig(**base)


# ---- building blocks --------------------------------------------------------------------


def test_cluster_targets_mapping():
    assert cluster_targets(4).tolist() == [1, 2, 3, 0]
    assert cluster_targets(5, offset=3).tolist() == [3, 4, 0, 1, 2]
    assert cluster_targets(3, offset=0).tolist() == [0, 1, 2]


def test_uc_loss_hand_computed_kl():
    # softmax([0, log 3]) = (1/4, 3/4); softmax(centre [0, 0]) = (1/2, 1/2)
    feats = torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0]])
    centre = torch.zeros(2)
    kl_row0 = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)  # KL(P_centre || Q_feature)
    assert float(uc_loss(feats, centre)) == pytest.approx(kl_row0 / 2, abs=1e-6)  # batch mean
    assert float(uc_loss(feats[:1], centre)) == pytest.approx(kl_row0, abs=1e-6)
    c = torch.tensor([0.3, -1.2, 2.0])
    assert float(uc_loss(c.expand(4, 3).clone(), c)) == pytest.approx(0.0, abs=1e-7)


def test_project_noise_linf_and_l2():
    d = torch.randn(3, 3, 8, 8)
    assert project_noise(d, EPS, "linf").abs().max() <= EPS + 1e-7
    norms = project_noise(d, 0.5, "l2").flatten(1).norm(dim=1)
    assert torch.allclose(norms, torch.full((3,), 0.5), atol=1e-5)


@pytest.mark.parametrize("size", [16, 32])
def test_generator_shape_and_range(size):
    g = ResnetGenerator(ngf=4, n_blocks=1)
    out = g(torch.rand(2, 3, size, size) * 50 - 25)
    assert out.shape == (2, 3, size, size)
    assert out.min() >= -1 and out.max() <= 1


def test_generator_paper_size_and_odd_sides():
    assert sum(p.numel() for p in ResnetGenerator().parameters()) == pytest.approx(7.84e6, rel=0.01)
    assert ResnetGenerator(ngf=4, n_blocks=1)(torch.rand(1, 3, 14, 18)).shape == (1, 3, 14, 18)
    with pytest.raises(ConfigError):
        ResnetGenerator(norm="group")


def test_surrogates_are_frozen_and_share_one_interface(tmp_path):
    clf = create_model("digits_cnn", num_classes=5)
    torch.save(clf.state_dict(), tmp_path / "clf.pt")
    from_file = create_surrogate("classifier:digits_cnn", checkpoint=tmp_path / "clf.pt")  # infers 5 classes
    clf.eval()
    x = torch.rand(2, 3, 16, 16)
    assert torch.allclose(from_file(x), clf.features(x), atol=1e-6)
    clip = create_surrogate(create_clip("tiny-rn"))
    for s in (from_file, clip, create_surrogate("classifier:digits_cnn", image_size=8)):
        assert isinstance(s, FeatureExtractor) and not s.train().training
        assert not any(p.requires_grad for p in s.parameters())
        assert s(x).shape == (2, s.feature_dim)
    xg = x.clone().requires_grad_()
    clip(xg).sum().backward()  # gradients reach the input, not the weights
    assert xg.grad is not None and all(p.grad is None for p in clip.parameters())


@pytest.mark.parametrize("name", ["nope", "classifier:not_a_model", "clip:not-an-arch"])
def test_unknown_surrogate_is_one_line_config_error(name):
    with pytest.raises(ConfigError) as err:
        create_surrogate(name)
    assert "\n" not in str(err.value)


def test_train_generator_reduces_uc_loss():
    torch.manual_seed(0)
    surrogate = create_surrogate("classifier:digits_cnn")
    images = torch.rand(8, 3, 16, 16)
    target = surrogate(torch.rand(4, 3, 16, 16)).mean(0) * 3  # a far-away point in feature space
    cfg = tiny_cfg(epochs=15, lr=1e-2, eps=32 / 255, augment=False, ngf=8)
    noise, history = train_generator(surrogate, images, target, cfg, "cpu", progress=False)
    assert noise.shape == (3, 16, 16) and noise.abs().max() <= 32 / 255 + 1e-7
    assert history[-1] < history[0]
    with torch.no_grad():
        after = float(uc_loss(surrogate((images + noise).clamp(0, 1)), target))
        before = float(uc_loss(surrogate(images), target))
    assert after < before


# ---- protect ----------------------------------------------------------------------------


@pytest.mark.parametrize("norm,eps", [("linf", EPS), ("l2", 0.5)])
def test_protect_budget_range_and_own_cluster_noise(norm, eps, tmp_path):
    ds = colour_groups()
    res = ob.uc.protect(ds, tiny_cfg(norm=norm, eps=eps), device="cpu", progress=False)
    p, n = 3, len(ds)
    assert res.noises.shape == (p, 3, 16, 16) and res.centers.shape[0] == p
    assert res.assignments.shape == (n,) and sum(res.cluster_sizes) == n
    assert len(res.losses) == p and all(math.isfinite(v) for v in res.losses)
    # budget: float noises and the stored (8-bit) noises are inside the ball
    if norm == "linf":
        assert res.noises.abs().max() <= eps + 1e-7
        assert res.store.get(range(p)).abs().max() <= eps + 1e-7
    else:
        assert (res.noises.flatten(1).norm(dim=1) <= eps + 1e-5).all()
        assert (res.store.get(range(p)).flatten(1).norm(dim=1) <= eps + 1e-6).all()
    assert np.array_equal(res.store.assignments, res.assignments.numpy())
    # every image gets ITS OWN cluster's noise, under a shuffled order
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(3))
    x = torch.stack([ds[int(i)][0] for i in idx])
    out = res.store.apply(x, idx)
    assert out.min() >= 0 and out.max() <= 1
    expected = (x + res.noises[res.assignments[idx]]).clamp(0, 1)
    assert (out - expected).abs().max() <= 1 / 255 + 1e-6  # 8-bit rounding of the noise
    unclipped = (x + res.noises[res.assignments[idx]] > 0.1) & (x + res.noises[res.assignments[idx]] < 0.9)
    diff = (out - x)[unclipped] - res.noises[res.assignments[idx]][unclipped]
    assert diff.abs().max() <= 0.5 / 255 + 1e-6 if norm == "linf" else diff.abs().max() <= 1 / 255 + 1e-6
    wrong = res.noises[(res.assignments[idx] + 1) % p]  # another cluster's noise does not fit
    assert ((out - x)[unclipped] - wrong[unclipped]).abs().max() > 1 / 255


def test_export_round_trip(tmp_path):
    ds = colour_groups(n=12)
    res = ob.uc.protect(ds, tiny_cfg(epochs=1), device="cpu", progress=False)
    out = export_protected(ds, res.store, tmp_path / "ue", progress=False)
    for i in (0, 5, 11):
        x = ds[i][0]
        want = (res.store.apply(x[None], [i])[0] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        got = np.asarray(Image.open(out / "train" / ds.classes[ds.labels[i]] / f"{i:05d}.png"))
        assert np.array_equal(got, want)
        clean = (x * 255).round().permute(1, 2, 0).numpy()
        assert np.abs(got.astype(int) - clean.astype(int)).max() <= 16  # |delta| <= eps after quantisation


def test_train_on_cluster_and_determinism(monkeypatch):
    ds = colour_groups(n=18)
    seen = []
    real = uc.train_generator

    def spy(surrogate, images, target, cfg, device=None, *, indices=None, **kw):
        seen.append(None if indices is None else sorted(indices.tolist()))
        return real(surrogate, images, target, cfg, device, indices=indices, **kw)

    monkeypatch.setattr(uc, "train_generator", spy)
    a = ob.uc.protect(ds, tiny_cfg(train_on="cluster", epochs=1), device="cpu", progress=False)
    b = ob.uc.protect(ds, tiny_cfg(train_on="cluster", epochs=1), device="cpu", progress=False)
    assert torch.equal(a.assignments, b.assignments) and torch.equal(a.noises, b.noises)
    # each generator saw exactly its own cluster's members ...
    members = [sorted(torch.nonzero(a.assignments == k).flatten().tolist()) for k in range(3)]
    assert seen[:3] == [m for m in members if m] and all(seen)
    # ... and that changed the generators: the same clustering, other noises than train_on="all"
    seen.clear()
    every = ob.uc.protect(ds, tiny_cfg(train_on="all", epochs=1), device="cpu", progress=False)
    assert seen == [None] * 3 and torch.equal(every.assignments, a.assignments)
    assert all(not torch.equal(every.noises[k], a.noises[k]) for k in range(3))


@pytest.mark.parametrize(
    "kw",
    [
        {"eps": 0.0},
        {"eps": 0.6},
        {"eps": -1.0, "norm": "l2"},
        {"num_clusters": 1},
        {"norm": "l1"},
        {"surrogate": "vgg"},
        {"train_on": "some"},
        {"epochs": 0},
        {"lr": 0.0},
    ],
)
def test_bad_config_is_one_line_config_error(kw):
    with pytest.raises(ConfigError) as err:
        ob.uc.protect(colour_groups(n=6), tiny_cfg(**kw), device="cpu", progress=False)
    assert "\n" not in str(err.value)


def test_more_clusters_than_images_is_config_error():
    with pytest.raises(ConfigError, match="only 6 images"):
        ob.uc.protect(colour_groups(n=6), tiny_cfg(num_clusters=7), device="cpu", progress=False)


def test_resume_skips_finished_generators(tmp_path, monkeypatch):
    ds = colour_groups(n=12)
    calls = []
    real = uc.train_generator

    def counting(*args, **kwargs):
        calls.append(kwargs["seed"])
        return real(*args, **kwargs)

    monkeypatch.setattr(uc, "train_generator", counting)
    first = ob.uc.protect(ds, tiny_cfg(epochs=1), device="cpu", ckpt_dir=tmp_path / "ck", progress=False)
    assert len(calls) == 3 and (tmp_path / "ck" / "perturbation.npy").is_file()
    (tmp_path / "ck" / "generator_001.pt").unlink()  # as if the run had died during generator 1
    calls.clear()
    again = ob.uc.protect(ds, tiny_cfg(epochs=1), device="cpu", ckpt_dir=tmp_path / "ck", progress=False)
    assert len(calls) == 1  # only the missing generator is retrained
    assert torch.equal(first.assignments, again.assignments)
    assert torch.equal(first.noises, again.noises)  # seeded per generator: identical result
    assert again.timings_s[0] == 0.0 and again.timings_s[1] > 0
    with pytest.raises(ConfigError, match="holds a run with"):
        ob.uc.protect(ds, tiny_cfg(epochs=2), device="cpu", ckpt_dir=tmp_path / "ck", progress=False)


def test_surrogate_loads_a_released_cifar_resnet_checkpoint(tmp_path):
    # The released CIFAR ResNets (akamaster layout: ``module.conv1 ... module.linear``) are the
    # offline stand-in for a pretrained surrogate; they must load like load_weights loads them.
    source = create_model("resnet20", num_classes=10).eval()
    state = {}
    for k, v in source.state_dict().items():
        if k.endswith("num_batches_tracked"):
            continue
        name = k.replace("head.", "linear.", 1) if k.startswith("head.") else k.removeprefix("encoder.")
        state["module." + name] = v
    torch.save({"state_dict": state, "best_prec1": 91.7}, tmp_path / "resnet20.th")
    s = create_surrogate("classifier:resnet20", checkpoint=tmp_path / "resnet20.th")
    x = torch.rand(3, 3, 32, 32)
    assert torch.allclose(s(x), source.features(x), atol=1e-6)
