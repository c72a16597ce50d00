"""Classifier registry, ImageClassifier contract, CIFAR ResNets (akamaster layout) and small models."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from obstructlib.errors import ConfigError
from obstructlib.models import ImageClassifier, create_model, list_models, load_cifar_resnet, register_model

# CPU-sized options per architecture: the contract is the same at full size.
TINY = {
    "resnet18": {"width": 8},
    "vgg11": {"width_mult": 0.125},
    "vgg16": {"width_mult": 0.125},
    "resnet12": {"widths": (8, 16, 32, 64)},
    "small_vit": {"width": 32, "depth": 1, "heads": 2},
}
SIZES = {
    "digits_cnn": (8, 16, 28),
    "resnet32": (16,),
    "resnet44": (16,),
    "resnet56": (16,),
    "resnet110": (8,),
}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_required_models_are_registered():
    for name in ("resnet20", "resnet56", "resnet18", "vgg11", "vgg16", "digits_cnn", "resnet12", "small_vit"):
        assert name in list_models()


@pytest.mark.parametrize("name", list_models())
def test_shapes_for_grey_and_rgb_inputs(name):
    model = create_model(name, num_classes=7, **TINY.get(name, {})).eval()
    assert isinstance(model, ImageClassifier) and model.arch == name
    with torch.no_grad():
        for size in SIZES.get(name, (16, 32)):
            for channels in (1, 3):
                feats = model.features(torch.rand(2, channels, size, size))
                assert feats.shape == (2, model.num_features)
                assert torch.isfinite(feats).all()
        assert model(torch.rand(2, 3, size, size)).shape == (2, 7)


def test_full_size_feature_widths():
    assert create_model("resnet20").num_features == 64
    assert create_model("resnet18").num_features == 512
    assert create_model("vgg11").num_features == 512
    assert create_model("resnet12").num_features == 640
    assert create_model("small_vit").num_features == 192


@pytest.mark.parametrize("name", ["resnet20", "digits_cnn", "small_vit"])
def test_normalisation_is_the_first_step(name):
    model = create_model(name, **TINY.get(name, {})).eval()
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        expected = model.encoder((x - model.normalize.mean) / model.normalize.std)
        torch.testing.assert_close(model.features(x), expected)
        assert not torch.allclose(model.features(x), model.encoder(x))
        torch.testing.assert_close(model(x), model.head(expected))
    assert "normalize.mean" not in model.state_dict()  # architecture, not weights


def test_akamaster_default_normalisation_is_imagenet():
    # akamaster's trainer.py normalises with the ImageNet statistics; the checkpoints need them.
    model = create_model("resnet20")
    torch.testing.assert_close(model.normalize.mean.flatten(), torch.tensor([0.485, 0.456, 0.406]))


def test_grey_model_rejects_rgb_with_one_line():
    model = create_model("digits_cnn", in_chans=1)
    assert model(torch.rand(2, 1, 16, 16)).shape == (2, 10)
    with pytest.raises(ConfigError, match="in_chans") as err:
        model(torch.rand(2, 3, 16, 16))
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="batch"):
        model(torch.rand(1, 16, 16))


def test_unknown_model_and_bad_option():
    with pytest.raises(ConfigError, match="resnet20"):
        create_model("resnet9000")
    with pytest.raises(ConfigError, match="resnet20"):
        create_model("resnet20", not_an_option=3)


def test_register_model_decorator_and_duplicates():
    @register_model("_test_linear")
    def _test_linear(num_classes=10, **kw):
        enc = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 5))
        return ImageClassifier(enc, 5, num_classes, mean=(0.5,) * 3, std=(0.5,) * 3)

    assert create_model("_test_linear", 2)(torch.rand(1, 3, 4, 4)).shape == (1, 2)
    with pytest.raises(ConfigError, match="already registered"):
        register_model("_test_linear")(lambda num_classes=10: None)


def test_reset_head():
    model = create_model("digits_cnn", num_classes=10)
    head = model.reset_head(4)
    assert model.head is head and model.num_classes == 4
    assert model(torch.rand(2, 1, 8, 8)).shape == (2, 4)


def _akamaster_state_dict(model: ImageClassifier) -> dict:
    """The model's weights under akamaster's names (DataParallel ``module.`` prefix, ``linear``)."""
    out = {}
    for k, v in model.state_dict().items():
        k = k.replace("encoder.", "", 1) if k.startswith("encoder.") else k.replace("head.", "linear.", 1)
        out["module." + k] = v.clone()
    return out


def test_akamaster_layout_and_loading(tmp_path):
    source = create_model("resnet20").eval()
    with torch.no_grad():  # non-trivial BN statistics, so a missed buffer would show
        for m in source.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    state = _akamaster_state_dict(source)
    for key in (
        "module.conv1.weight",
        "module.bn1.running_mean",
        "module.layer1.0.conv1.weight",
        "module.layer3.2.bn2.weight",
        "module.linear.weight",
        "module.linear.bias",
    ):
        assert key in state
    assert not any("shortcut" in k for k in state)  # option-A shortcuts carry no weights
    # the released files predate BatchNorm's num_batches_tracked: 97 keys for resnet20
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    assert len(state) == 97
    path = tmp_path / "resnet20-fake.th"
    torch.save({"state_dict": state, "best_prec1": 91.7}, path)

    loaded = load_cifar_resnet(path, "resnet20")
    assert not loaded.training
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), source(x))
    via_factory = create_model("resnet20", pretrained_path=path).eval()
    with torch.no_grad():
        torch.testing.assert_close(via_factory(x), source(x))


def test_checkpoint_mismatch_is_a_config_error(tmp_path):
    path = tmp_path / "r56.th"
    torch.save({"state_dict": _akamaster_state_dict(create_model("resnet56"))}, path)
    with pytest.raises(ConfigError, match="does not fit"):
        load_cifar_resnet(path, "resnet20")
    with pytest.raises(ConfigError, match="does not exist"):
        load_cifar_resnet(tmp_path / "missing.th", "resnet20")


def test_own_state_dict_roundtrip(tmp_path):
    source = create_model("resnet18", num_classes=5, width=8).eval()
    path = tmp_path / "r18.pt"
    torch.save({"model": source.state_dict()}, path)
    loaded = create_model("resnet18", num_classes=5, width=8, pretrained_path=path).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), source(x))


def test_option_a_shortcut_pads_channels_and_subsamples():
    from obstructlib.models.cifar_resnet import _ShortcutA

    x = torch.randn(2, 16, 8, 8)
    y = _ShortcutA(8)(x)
    assert y.shape == (2, 32, 4, 4)
    torch.testing.assert_close(y[:, 8:24], x[:, :, ::2, ::2])
    assert (y[:, :8] == 0).all() and (y[:, 24:] == 0).all()


def test_resnet18_stems():
    cifar = create_model("resnet18", width=8).encoder
    tv = create_model("resnet18", width=8, stem="imagenet").encoder
    assert cifar.conv1.kernel_size == (3, 3) and isinstance(cifar.maxpool, torch.nn.Identity)
    assert tv.conv1.kernel_size == (7, 7) and isinstance(tv.maxpool, torch.nn.MaxPool2d)
    assert tv(torch.rand(2, 3, 32, 32)).shape == (2, 64)


def test_resnet12_tiny_widths():
    model = create_model("resnet12", num_classes=5, widths=(4, 8, 12, 16))
    assert model.num_features == 16
    assert len(model.encoder.layers) == 4
    block = model.encoder.layers[0]
    assert [block.conv1.out_channels, block.conv2.out_channels, block.conv3.out_channels] == [4, 4, 4]
    for size in (8, 32, 84):
        assert model.features(torch.rand(2, 3, size, size)).shape == (2, 16)


def test_digits_cnn_size():
    n = sum(p.numel() for p in create_model("digits_cnn").parameters())
    assert 10_000 <= n <= 50_000


def test_small_vit_interpolates_positions():
    model = create_model("small_vit", width=32, depth=1, heads=2).eval()
    assert model.encoder.pos_embed.shape == (1, 1 + 64, 32)
    assert model.features(torch.rand(2, 3, 16, 16)).shape == (2, 32)


def test_device_argument():
    model = create_model("digits_cnn", device="cpu")
    assert next(model.parameters()).device.type == "cpu"


# The released akamaster ResNet-20 (read-only offline copy next to the repository; CI has it).
SHARED_DATA = Path(os.environ.get("OBSTRUCT_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
RESNET20_TH = SHARED_DATA / "cifar10-resnets" / "resnet20-12fca82f.th"
# images: torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0));
# logits: akamaster's own resnet.py ResNet-20 on (images - ImageNet mean) / ImageNet std.
RESNET20_FIXTURE = Path(__file__).parent / "fixtures" / "resnet20_akamaster_logits.npz"


def _akamaster_resnet_forward(state: dict, x: torch.Tensor, blocks: int = 3) -> torch.Tensor:
    """akamaster's ``ResNet.forward`` op for op, on its own state dict (``module.`` keys) and normalised ``x``."""
    import torch.nn.functional as F

    def bn(h, name):
        w = {k: state[f"module.{name}.{k}"] for k in ("weight", "bias", "running_mean", "running_var")}
        return F.batch_norm(h, w["running_mean"], w["running_var"], w["weight"], w["bias"], False, 0.1, 1e-5)

    out = F.relu(bn(F.conv2d(x, state["module.conv1.weight"], padding=1), "bn1"))
    for stage, planes in ((1, 16), (2, 32), (3, 64)):
        for i in range(blocks):
            p = f"layer{stage}.{i}"
            stride = 2 if i == 0 and stage > 1 else 1
            h = F.relu(bn(F.conv2d(out, state[f"module.{p}.conv1.weight"], stride=stride, padding=1), f"{p}.bn1"))
            h = bn(F.conv2d(h, state[f"module.{p}.conv2.weight"], padding=1), f"{p}.bn2")
            short = out
            if stride != 1 or out.shape[1] != planes:
                short = F.pad(out[:, :, ::2, ::2], (0, 0, 0, 0, planes // 4, planes // 4), "constant", 0)
            h += short
            out = F.relu(h)
    out = F.avg_pool2d(out, out.size()[3])
    out = out.view(out.size(0), -1)
    return F.linear(out, state["module.linear.weight"], state["module.linear.bias"])


@pytest.mark.skipif(not RESNET20_TH.is_file(), reason=f"released ResNet-20 checkpoint not found at {RESNET20_TH}")
def test_released_resnet20_matches_akamaster_logits():
    # Regression: global pooling must be akamaster's avg_pool2d over the whole map; adaptive_avg_pool2d
    # sums in another order and moved these logits by 2.9e-6 (7.6e-6 on the CIFAR-10 test set).
    stored = np.load(RESNET20_FIXTURE)
    x, expected = torch.from_numpy(stored["images"]), torch.from_numpy(stored["logits"])
    assert x.shape == (2, 3, 32, 32) and expected.shape == (2, 10)
    model = load_cifar_resnet(RESNET20_TH, "resnet20")
    state = torch.load(RESNET20_TH, map_location="cpu", weights_only=True)["state_dict"]
    with torch.no_grad():
        logits = model(x)
        reference = _akamaster_resnet_forward(state, (x - model.normalize.mean) / model.normalize.std)
    # The stored logits came from another CPU: float32 kernels differ by a few 1e-6 between machines
    # (4.8e-6 seen), so the fixture is checked at 2e-5; the regression guard is the same-machine comparison
    # of our model with the reference forward, at 1e-6 (the pooling bug moved it by 2.9e-6).
    torch.testing.assert_close(reference, expected, rtol=0, atol=2e-5)
    torch.testing.assert_close(logits, reference, rtol=0, atol=1e-6)
