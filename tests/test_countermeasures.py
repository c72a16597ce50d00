"""The hacker's countermeasures: shapes, ranges, and what each one does to the pixels."""

import numpy as np
import pytest
import torch

from obstructlib.data import ArrayImageDataset
from obstructlib.engine import ClassifierTrainConfig
from obstructlib.errors import ConfigError
from obstructlib.models import create_model
from obstructlib.primitives.countermeasures import (
    AdvTrainConfig,
    cutout,
    cutout_mask,
    fit_defended,
    grayscale,
    jpeg,
    mixup_batch,
    mixup_loss,
    pgd_attack,
)


def _smooth(b=2, c=3, s=16):
    # A smooth image: JPEG at high quality keeps it almost exactly.
    t = torch.linspace(0, 1, s)
    base = (t.view(1, 1, -1, 1) * 0.6 + t.view(1, 1, 1, -1) * 0.3 + 0.05).expand(b, c, s, s)
    return base * torch.tensor([1.0, 0.8, 0.6]).view(1, 3, 1, 1)[:, :c]


def test_jpeg_shapes_range_and_quality():
    x = _smooth()
    hi, lo = jpeg(x, 100), jpeg(torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)), 5)
    assert hi.shape == x.shape and lo.shape == x.shape and hi.dtype == x.dtype
    assert 0 <= float(lo.min()) and float(lo.max()) <= 1
    assert float((hi - x).abs().max()) <= 3 / 255  # quality 100 is nearly the identity
    noisy = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert float((jpeg(noisy, 5) - noisy).abs().mean()) > 0.05  # low quality changes pixels
    assert jpeg(x[0], 50).shape == x[0].shape  # a single image
    assert jpeg(x[:, :1], 50).shape == (2, 1, 16, 16)  # grey
    with pytest.raises(ConfigError):
        jpeg(x, 0)


def test_grayscale_equal_channels_and_luma():
    x = torch.rand(2, 3, 8, 8)
    g = grayscale(x)
    assert g.shape == x.shape and torch.allclose(g[:, 0], g[:, 1]) and torch.allclose(g[:, 1], g[:, 2])
    assert torch.allclose(g[:, 0], 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])
    assert 0 <= float(g.min()) and float(g.max()) <= 1
    assert torch.equal(grayscale(x[:, :1]), x[:, :1])


def test_cutout_zeroes_exactly_the_patch():
    x = torch.rand(4, 3, 16, 16) * 0.9 + 0.1  # no zero pixels before
    out = cutout(x, 6, torch.Generator().manual_seed(1))
    mask = cutout_mask(16, 16, 6, 4, torch.Generator().manual_seed(1))
    assert out.shape == x.shape
    assert torch.equal(out == 0, mask[:, None].expand_as(x))
    assert torch.equal(out[~mask[:, None].expand_as(x)], x[~mask[:, None].expand_as(x)])
    for m in mask:  # one axis-aligned rectangle of side <= 6
        rows, cols = m.any(1).nonzero().flatten(), m.any(0).nonzero().flatten()
        assert 1 <= len(rows) <= 6 and 1 <= len(cols) <= 6 and int(m.sum()) == len(rows) * len(cols)
        assert len(rows) == int(rows[-1] - rows[0] + 1) and len(cols) == int(cols[-1] - cols[0] + 1)
    full = cutout_mask(32, 32, 6, 200, torch.Generator().manual_seed(0))
    assert int(full.sum((1, 2)).max()) == 36  # away from the borders the patch is complete


def test_mixup_is_a_convex_combination():
    x, y = torch.rand(8, 3, 4, 4), torch.arange(8)
    mixed, ya, yb, lam = mixup_batch(x, y, 1.0, torch.Generator().manual_seed(0))
    assert 0 <= lam <= 1 and torch.equal(ya, y)
    perm = yb  # labels are 0..7, so y_b is the permutation itself
    assert sorted(perm.tolist()) == list(range(8))
    assert torch.allclose(mixed, lam * x + (1 - lam) * x[perm])
    assert 0 <= float(mixed.min()) and float(mixed.max()) <= 1
    logits = torch.randn(8, 8)
    ce = torch.nn.functional.cross_entropy
    assert torch.allclose(mixup_loss(logits, ya, yb, lam), lam * ce(logits, ya) + (1 - lam) * ce(logits, yb))
    again = mixup_batch(x, y, 1.0, torch.Generator().manual_seed(0))
    assert again[3] == lam and torch.equal(again[2], yb)


def test_pgd_attack_stays_in_ball_and_raises_loss():
    model = create_model("digits_cnn", num_classes=3).eval()
    x, y = torch.rand(6, 3, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2])
    cfg = AdvTrainConfig(eps=8 / 255, alpha=2 / 255, steps=5, random_start=False)
    adv = pgd_attack(model, x, y, cfg, torch.Generator().manual_seed(0))
    assert float((adv - x).abs().max()) <= 8 / 255 + 1e-6 and 0 <= float(adv.min()) and float(adv.max()) <= 1
    ce = torch.nn.functional.cross_entropy
    with torch.no_grad():
        assert ce(model(adv), y) > ce(model(x), y)
    assert all(p.grad is None and p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("countermeasure", ["mixup", "adv"])
def test_fit_defended_trains_and_resumes(countermeasure, tmp_path):
    rng = np.random.default_rng(0)
    ds = ArrayImageDataset(rng.integers(0, 256, (32, 8, 8, 3), dtype=np.uint8), np.arange(32) % 2)
    cfg = ClassifierTrainConfig(epochs=2, batch_size=16, lr=0.05, amp=False)
    adv = AdvTrainConfig(steps=1)
    model = create_model("digits_cnn", num_classes=2, widths=(4, 8, 8))
    hist = fit_defended(model, ds, ds, cfg, "cpu", countermeasure=countermeasure, adv=adv,
                        ckpt_dir=tmp_path / "ck", progress=False)
    assert hist["epoch"] == [1, 2] and all(np.isfinite(hist["train_loss"]))
    # Resuming from the final checkpoint trains nothing more and returns the same history.
    again = fit_defended(create_model("digits_cnn", num_classes=2, widths=(4, 8, 8)), ds, ds, cfg, "cpu",
                         countermeasure=countermeasure, adv=adv, ckpt_dir=tmp_path / "ck", progress=False)
    assert again == hist
    with pytest.raises(ConfigError):
        fit_defended(model, ds, None, cfg, "cpu", countermeasure="jpeg")
