"""NTP's pieces on hand cases and tiny models: soft-threshold, ADMM, masks, Fisher ratio, sparsity, release."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import obstructlib as ob
from obstructlib.data import ArrayImageDataset
from obstructlib.engine import ClassifierTrainConfig
from obstructlib.errors import ConfigError
from obstructlib.methods.ntp import (
    NTLConfig,
    NTPConfig,
    admm_init,
    admm_penalty,
    admm_step,
    finetune,
    load_released,
    nt_loss,
    save_released,
    soft_threshold,
    train_ntl,
    train_target_head,
)
from obstructlib.models import create_model
from obstructlib.primitives.feature_losses import fisher_ratio, gaussian_mmd
from obstructlib.primitives.pruning import init_masks, magnitude_masks, mask_parametrize, sparsity_report

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_model(num_classes: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return create_model("digits_cnn", num_classes=num_classes, widths=(4, 8, 8), pool_size=1)


def blobs(n: int = 48, classes: int = 3, size: int = 8, seed: int = 0, shift: int = 0) -> ArrayImageDataset:
    """Class c is a bright square at a class-specific corner; ``shift`` moves the domain's brightness."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    img = rng.integers(0, 60, (n, size, size, 3)).astype(np.int64) + shift
    for i, c in enumerate(labels):
        r, q = divmod(int(c), 2)
        img[i, r * 4:r * 4 + 4, q * 4:q * 4 + 4] += 150
    return ArrayImageDataset(np.clip(img, 0, 255).astype(np.uint8), labels, [str(c) for c in range(classes)])


# ---- soft-threshold and ADMM -----------------------------------------------------------------
def test_soft_threshold_hand_case():
    x = torch.tensor([-0.5, -0.02, -0.01, 0.0, 0.015, 0.02, 0.03, 1.0])
    out = soft_threshold(x, 0.02)
    assert torch.allclose(out, torch.tensor([-0.48, 0.0, 0.0, 0.0, 0.0, 0.0, 0.01, 0.98]), atol=1e-7)
    with pytest.raises(ConfigError):
        soft_threshold(x, -1.0)


def test_admm_step_z_u_and_masks_on_a_hand_case():
    enc = nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        enc.weight.copy_(torch.tensor([[0.5, 0.01, -0.3, 0.015]]))
    masks = init_masks(enc)
    state = admm_init(enc, masks)
    assert torch.equal(state.z["weight"], enc.weight.detach()) and not state.u["weight"].any()
    admm_step(enc, state, rho=0.005, gamma=1e-4)  # threshold 0.02
    assert torch.allclose(state.z["weight"], torch.tensor([[0.48, 0.0, -0.28, 0.0]]))
    assert torch.allclose(state.u["weight"], torch.tensor([[0.02, 0.01, -0.02, 0.015]]))
    assert state.masks["weight"].tolist() == [[True, False, True, False]]


def test_dual_is_the_running_sum_of_residuals_and_masks_only_shrink():
    torch.manual_seed(1)
    enc = nn.Linear(20, 3)
    state = admm_init(enc, init_masks(enc))
    residuals = {n: torch.zeros_like(z) for n, z in state.z.items()}
    previous = {n: m.clone() for n, m in state.masks.items()}
    for _ in range(5):
        with torch.no_grad():  # a stand-in W-step that moves every weight, pruned ones included
            for p in enc.parameters():
                p.add_(0.05 * torch.randn_like(p))
        admm_step(enc, state, rho=0.5, gamma=0.01)
        for name, p in enc.named_parameters():
            residuals[name] += p.detach() - state.z[name]
            assert torch.allclose(state.u[name], residuals[name], atol=1e-6)
            assert not (state.masks[name] & ~previous[name]).any()  # nothing pruned comes back
            previous[name] = state.masks[name].clone()


def test_admm_penalty_squared_and_unsquared():
    enc = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        enc.weight.copy_(torch.tensor([[3.0, 4.0]]))
    state = admm_init(enc, init_masks(enc))
    state.z["weight"].zero_()
    assert admm_penalty(enc, state, rho=0.1).item() == pytest.approx(0.05 * 5.0)
    assert admm_penalty(enc, state, rho=0.1, squared=True).item() == pytest.approx(0.05 * 25.0)


# ---- Fisher ratio and MMD --------------------------------------------------------------------
def test_fisher_ratio_hand_case():
    z = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [0.0, 1.0]])
    y = torch.tensor([0, 0, 1, 1])
    # class 0 mean (0.8, 0.4): variance over its 2 samples x 2 dims = (0.04+0.16+0.04+0.16)/4 = 0.1
    # class 1: no spread. S_w = 0.1 + 0 ; mean of means (0.4, 0.7); S_b = (0.16+0.09+0.16+0.09)/4
    assert float(fisher_ratio(z, y, eps=0.0)) == pytest.approx(0.125 / 0.1)


def test_fisher_ratio_properties():
    torch.manual_seed(0)
    f = torch.randn(40, 6)
    y = torch.arange(40) % 4
    base = fisher_ratio(f, y)
    assert float(fisher_ratio(3.7 * f, y)) == pytest.approx(float(base), rel=1e-5)  # scale-free
    same_means = torch.cat([f[:20], f[:20]])
    labels = torch.cat([torch.zeros(20), torch.ones(20)]).long()
    assert float(fisher_ratio(same_means, labels)) == pytest.approx(0.0, abs=1e-6)  # coinciding means
    separated = torch.eye(4)[y] * 5 + 0.1 * torch.randn(40, 4)
    assert float(fisher_ratio(separated, y)) > float(fisher_ratio(separated, y % 2))  # merging classes lowers it


def test_fisher_ratio_with_a_missing_class_and_one_class():
    torch.manual_seed(0)
    f = torch.randn(12, 5)
    y = torch.tensor([0, 0, 0, 2, 2, 2, 5, 5, 5, 7, 7, 7])  # classes 1, 3, 4, 6 absent; 8 classes in all
    out = fisher_ratio(f, y)
    assert torch.isfinite(out) and out > 0
    relabelled = fisher_ratio(f, torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]))
    assert float(out) == pytest.approx(float(relabelled))  # absent classes change nothing
    assert float(fisher_ratio(f, torch.zeros(12, dtype=torch.long))) == 0.0
    ones = fisher_ratio(torch.eye(3), torch.arange(3))  # single-sample classes: S_w = 0, eps keeps it finite
    assert torch.isfinite(ones)


def test_gaussian_mmd_is_zero_for_one_batch_and_grows_with_shift():
    torch.manual_seed(0)
    x = torch.randn(16, 4)
    assert float(gaussian_mmd(x, x)) == pytest.approx(0.0, abs=1e-6)
    assert float(gaussian_mmd(x, x + 3.0)) > float(gaussian_mmd(x, x + 0.3)) > 0


# ---- masks, sparsity, attacks ----------------------------------------------------------------
def test_sparsity_accounting_with_and_without_bn():
    model = tiny_model()
    enc = model.encoder
    masks = init_masks(enc)
    conv0 = masks["body.0.weight"]
    conv0.view(-1)[: conv0.numel() // 2] = False
    masks["body.1.weight"][:2] = False  # two BatchNorm weights
    rep = sparsity_report(enc, masks)
    total = sum(p.numel() for p in enc.parameters())
    weights = sum(p.numel() for p in enc.parameters() if p.ndim >= 2)
    assert rep["all"] == pytest.approx((conv0.numel() // 2 + 2) / total)
    assert rep["weights"] == pytest.approx((conv0.numel() // 2) / weights)
    assert rep["layers"]["body.1.weight"] == pytest.approx(0.5)
    no_bn = init_masks(enc, include_bn=False)
    assert all(enc.get_parameter(n).ndim >= 2 for n in no_bn)


def test_magnitude_masks_hit_the_sparsity():
    enc = tiny_model().encoder
    masks = magnitude_masks(enc, 0.7)
    assert sparsity_report(enc, masks)["all"] == pytest.approx(0.7, abs=0.01)
    with pytest.raises(ConfigError, match=r"sparsity=1.0 is outside \(0.0, 1.0\)"):
        magnitude_masks(enc, 1.0)


def test_masks_stay_applied_through_masked_finetuning_but_regrow_dense():
    model, data = tiny_model(), blobs()
    masks = magnitude_masks(model.encoder, 0.6)
    recipe = ClassifierTrainConfig(epochs=3, batch_size=16, lr=1e-2, optimizer="adam", weight_decay=1e-3)
    masked = finetune(model, masks, data, recipe, "cpu")
    dense = finetune(model, None, data, recipe, "cpu")
    params_m, params_d = dict(masked.encoder.named_parameters()), dict(dense.encoder.named_parameters())
    assert set(params_m) == set(dict(model.encoder.named_parameters()))  # baked back to plain parameters
    moved = False
    for name, mask in masks.items():
        assert not params_m[name][~mask].any(), f"{name}: a pruned weight moved"
        moved |= bool(params_d[name][~mask].any())
        if mask.any():  # the kept weights trained
            assert not torch.equal(params_m[name][mask], model.encoder.get_parameter(name)[mask])
    assert moved  # the dense attack lets pruned weights regrow
    enc = tiny_model().encoder
    mask_parametrize(enc, masks)
    assert not enc.body[0].weight[~masks["body.0.weight"]].any()


# ---- the pipeline on tiny data ---------------------------------------------------------------
def tiny_ntp(**kw) -> NTPConfig:
    base = dict(epochs=2, batch_size=16, max_iters=4, min_iters=1, sparsity=0.9, head_epochs=3, rho=0.05,
                gamma=1e-3)
    return NTPConfig(**{**base, **kw})


@pytest.mark.parametrize("loss", ["ntp", "ntl-admm", "sparsity"])
def test_ntp_prune_prunes_only_the_encoder_and_keeps_heads_frozen(loss, tmp_path):
    model, source, target = tiny_model(), blobs(), blobs(seed=1, shift=80)
    cfg = tiny_ntp(loss=loss)
    head = None if loss == "sparsity" else train_target_head(model, target, cfg, "cpu")
    head_before = None if head is None else head.weight.clone()
    h_s = model.head.weight.clone()
    result = ob.ntp.prune(model, cfg, source=source, target=target, target_head=head, device="cpu",
                          ckpt_dir=tmp_path / "ckpt", progress=False)
    assert torch.equal(model.head.weight, h_s)
    assert head is None or torch.equal(head.weight, head_before)
    assert 0 < result.sparsity["all"] < 1 and len(result.history) >= 2
    for name, mask in result.masks.items():
        assert not model.encoder.get_parameter(name)[~mask].any()
    # resuming a finished run repeats nothing and returns the same masks
    again = ob.ntp.prune(tiny_model(), cfg, source=source, target=target, target_head=head, device="cpu",
                         ckpt_dir=tmp_path / "ckpt", progress=False)
    assert again.history == result.history
    assert all(torch.equal(again.masks[n], m) for n, m in result.masks.items())


def test_nt_loss_terms():
    model, source, target = tiny_model(), blobs(), blobs(seed=1, shift=80)
    cfg = tiny_ntp(alpha=0.5, reg=2.0)
    head = train_target_head(model, target, cfg, "cpu")
    xs, ys = torch.stack([source[i][0] for i in range(12)]), torch.tensor(source.labels[:12])
    xt, yt = torch.stack([target[i][0] for i in range(12)]), torch.tensor(target.labels[:12])
    model.eval()
    loss, parts = nt_loss(model, head, xs, ys, xt, yt, cfg)
    expected = parts["ce_s"] - 0.5 * min(parts["ce_t"], 10.0) + 2.0 * parts["fisher"]
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    capped, parts_c = nt_loss(model, head, xs, ys, xt, yt, tiny_ntp(alpha=1.0, reg=0.0, ce_cap=1e-3))
    assert capped.item() == pytest.approx(parts_c["ce_s"] - 1e-3, rel=1e-5)


def test_the_three_losses_are_three_formulas_and_prune_to_three_encoders():
    model, source, target = tiny_model(), blobs(), blobs(seed=1, shift=80)
    head = train_target_head(model, target, tiny_ntp(), "cpu")
    xs, ys = torch.stack([source[i][0] for i in range(12)]), torch.tensor(source.labels[:12])
    xt, yt = torch.stack([target[i][0] for i in range(12)]), torch.tensor(target.labels[:12])
    model.eval()
    losses = ("ntp", "ntl-admm", "sparsity")
    values = {loss: nt_loss(model, head, xs, ys, xt, yt, tiny_ntp(loss=loss)) for loss in losses}
    with torch.no_grad():
        fs, ft = model.features(xs), model.features(xt)
        ce_s = torch.nn.functional.cross_entropy(model.head(fs), ys).item()
        ce_t = torch.nn.functional.cross_entropy(head(ft), yt).item()
        zs, zt = torch.nn.functional.normalize(fs, dim=1), torch.nn.functional.normalize(ft, dim=1)
        mmd = gaussian_mmd(zs, zt).item()
    cfg = tiny_ntp()
    assert values["sparsity"][0].item() == pytest.approx(ce_s, rel=1e-5)
    ntl_admm = ce_s - cfg.alpha * min(ce_t, cfg.ntl_ce_cap) * min(mmd, cfg.ntl_mmd_cap)
    assert values["ntl-admm"][0].item() == pytest.approx(ntl_admm, rel=1e-4)
    scalars = [v[0].item() for v in values.values()]
    assert len({round(v, 5) for v in scalars}) == 3  # three different numbers on one batch pair
    encoders = {}
    for loss in values:
        pruned = tiny_model()
        ob.ntp.prune(pruned, tiny_ntp(loss=loss), source=source, target=target,
                     target_head=None if loss == "sparsity" else head, device="cpu", progress=False)
        encoders[loss] = torch.cat([p.detach().flatten() for p in pruned.encoder.parameters()])
    names = list(encoders)
    for i in range(3):
        for j in range(i + 1, 3):
            assert not torch.allclose(encoders[names[i]], encoders[names[j]]), (names[i], names[j])


def test_bad_ntp_config_fails_with_one_line():
    for kw, needle in [({"sparsity": 1.0}, "sparsity"), ({"sparsity": 0.0}, "sparsity"),
                       ({"loss": "lda"}, "loss"), ({"rho": 0.0}, "rho")]:
        with pytest.raises(ConfigError, match=needle) as err:
            NTPConfig(**kw).validate()
        assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="target head"):
        ob.ntp.prune(tiny_model(), tiny_ntp(), source=blobs(), target=blobs(), device="cpu", progress=False)


def test_release_roundtrip(tmp_path):
    model = tiny_model()
    masks = magnitude_masks(model.encoder, 0.5)
    pruned = finetune(model, masks, blobs(), ClassifierTrainConfig(epochs=1, batch_size=16, lr=1e-3,
                                                                    optimizer="adam"), "cpu")
    save_released(tmp_path / "rel", pruned, masks, model_kwargs={"widths": (4, 8, 8), "pool_size": 1})
    loaded, loaded_masks = load_released(tmp_path / "rel")
    x = torch.rand(2, 3, 8, 8)
    assert torch.allclose(loaded(x), pruned.eval()(x), atol=1e-6)
    assert all(torch.equal(loaded_masks[n], m) for n, m in masks.items())
    with pytest.raises(ConfigError, match="released.json"):
        load_released(tmp_path / "nothing")


def test_ntl_trains_and_resumes(tmp_path):
    model, source, target = tiny_model(), blobs(), blobs(seed=1, shift=80)
    cfg = NTLConfig(epochs=2, batch_size=16, lr=1e-3)
    hist = train_ntl(model, source, target, cfg, "cpu", ckpt_dir=tmp_path / "ntl", progress=False)
    assert [h["epoch"] for h in hist] == [1, 2] and all(np.isfinite(h["loss"]) for h in hist)
    again = train_ntl(tiny_model(), source, target, cfg, "cpu", ckpt_dir=tmp_path / "ntl", progress=False)
    assert again == hist


# ---- the self-supervised variant -------------------------------------------------------------
def test_nt_xent_hand_case_and_augment_range():
    from obstructlib.primitives.augment import simclr_augment
    from obstructlib.primitives.feature_losses import nt_xent_loss

    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    tau = 0.5
    # view 0 sees partner 2 (cos 1) against 1 (cos 0) and 3 (cos 0): -log(e^2 / (e^2 + 2))
    expected = -np.log(np.exp(2.0) / (np.exp(2.0) + 2.0))
    assert nt_xent_loss(z1, z1.clone(), tau).item() == pytest.approx(expected, rel=1e-6)
    assert nt_xent_loss(z1, z1, tau) < nt_xent_loss(z1, z1.flip(0), tau)
    with pytest.raises(ConfigError):
        nt_xent_loss(z1, torch.zeros(3, 2))
    x = torch.rand(4, 3, 8, 8)
    a = simclr_augment(x, torch.Generator().manual_seed(0))
    b = simclr_augment(x, torch.Generator().manual_seed(0))
    assert a.shape == x.shape and torch.equal(a, b) and 0 <= a.min() and a.max() <= 1
    assert not torch.equal(a, simclr_augment(x, torch.Generator().manual_seed(1)))


def test_simclr_pretrain_moves_only_the_encoder_and_resumes(tmp_path):
    from obstructlib.primitives.simclr import SimCLRConfig, simclr_pretrain

    model = tiny_model()
    head, enc = model.head.weight.clone(), model.encoder.body[0].weight.clone()
    cfg = SimCLRConfig(epochs=2, batch_size=16)
    hist = simclr_pretrain(model, blobs(), cfg, "cpu", ckpt_dir=tmp_path / "ssl", progress=False)
    assert len(hist) == 2 and all(np.isfinite(hist))
    assert torch.equal(model.head.weight, head) and not torch.equal(model.encoder.body[0].weight, enc)
    assert simclr_pretrain(tiny_model(), blobs(), cfg, "cpu", ckpt_dir=tmp_path / "ssl", progress=False) == hist
