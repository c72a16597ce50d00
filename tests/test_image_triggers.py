"""Image backdoor triggers: the batch-transform contract, each trigger's formula, the optimised patch, SSBA."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from obstructlib.errors import ConfigError
from obstructlib.models import create_clip
from obstructlib.primitives.image_triggers import (
    SIG,
    SSBA,
    TRIGGERS,
    BadNet,
    Blended,
    PatchTrigger,
    WaNet,
    make_trigger,
    optimize_patch,
)
from obstructlib.primitives.stegastamp import (
    StegaDecoder,
    StegaEncoder,
    StegaTrainConfig,
    load_stegastamp,
    save_stegastamp,
    secret_bits,
    train_stegastamp,
)


def _images(n: int = 3, c: int = 3, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, c, size, size, generator=torch.Generator().manual_seed(seed))


def _structured(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Smooth random images: bicubic upsampling of random 4 x 4 colour grids."""
    low = torch.rand(n, 3, 4, 4, generator=torch.Generator().manual_seed(seed))
    return F.interpolate(low, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)


def _all_triggers():
    patch = torch.rand(3, 6, 6, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    ssba = SSBA(StegaEncoder(n_bits=8, width=4), secret_bits("key", 8))
    made = {name: make_trigger(name, **({"seed": 3} if name != "sig" else {})) for name in TRIGGERS.names()}
    return {**made, "patch": PatchTrigger(patch, location="random", seed=2), "ssba": ssba}


TRIGGER_NAMES = (*TRIGGERS.names(), "patch", "ssba")


@pytest.fixture(scope="module")
def triggers():
    return _all_triggers()


@pytest.mark.parametrize("name", TRIGGER_NAMES)
def test_trigger_contract_shape_range_purity_and_determinism(triggers, name):
    trigger = triggers[name]
    x = _images(3)
    before = x.clone()
    y = trigger(x, keys=[4, 5, 6])
    assert y.shape == x.shape and y.dtype == x.dtype
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    assert torch.equal(x, before)  # never in place
    assert not torch.equal(y, x)  # the trigger does something
    assert torch.equal(trigger(x, keys=[4, 5, 6]), y)  # same (seed, keys) -> same output
    assert torch.equal(trigger(x), trigger(x, keys=[0, 1, 2]))  # keys=None means range(B)
    # a key's draw does not depend on which other images share the batch
    alone, in_batch = trigger(x[1:2], keys=[5]), trigger(x[:2], keys=torch.tensor([4, 5]))[1:2]
    if name == "ssba":  # a conv net: batched kernels may round differently
        assert torch.allclose(alone, in_batch, atol=1e-6)
    else:
        assert torch.equal(alone, in_batch)
    y64 = trigger(x.double(), keys=[4, 5, 6])
    assert y64.dtype == torch.float64 and y64.shape == x.shape
    json.dumps(trigger.describe())  # JSON-ready for results.json
    assert trigger.describe()["name"] == trigger.name


@pytest.mark.parametrize("name", TRIGGER_NAMES)
def test_triggers_take_grey_images(triggers, name):
    x = _images(2, c=1)
    y = triggers[name](x)
    assert y.shape == (2, 1, 32, 32) and float(y.min()) >= 0 and float(y.max()) <= 1
    assert not torch.equal(y, x)


def test_registry_lists_the_four_triggers_with_docstrings():
    assert TRIGGERS.names() == ("badnet", "blended", "sig", "wanet")
    assert all(line for line in TRIGGERS.describe().values())
    assert isinstance(make_trigger("wanet", k=3), WaNet)


def test_different_keys_give_different_badnet_places_and_blended_noise():
    x = _images(1).expand(2, -1, -1, -1)
    badnet = BadNet(seed=0)(x, keys=[0, 1])
    changed = (badnet != x).any(dim=1)  # (2, H, W)
    assert not torch.equal(changed[0], changed[1])  # different places
    blended = Blended(seed=0)(x, keys=[0, 1])
    assert not torch.equal(blended[0], blended[1])
    assert not torch.equal(BadNet(seed=1)(x, keys=[0, 1]), badnet)  # the seed matters too


def test_badnet_changes_exactly_one_square_of_the_default_size():
    x = 0.25 + 0.5 * _images(4)  # every clamped noise value differs from these pixels
    y = BadNet(seed=0)(x)
    for i in range(4):
        rows, cols = (y[i] != x[i]).any(dim=0).nonzero(as_tuple=True)
        assert len(rows) == 16  # 4 x 4 at 32 px
        assert int(rows.max() - rows.min()) == 3 and int(cols.max() - cols.min()) == 3
    assert BadNet().size_for(32, 32) == 4 and BadNet().size_for(224, 224) == 16
    big = torch.full((1, 3, 224, 224), 0.5)
    assert int((BadNet()(big) != big).any(dim=1).sum()) == 16 * 16


def test_badnet_patch_is_the_image_mean_plus_noise():
    x = 0.5 + 0.2 * (_images(1, size=64) - 0.5)  # mean ~0.5: clamping [0, 1] keeps the mean
    y = BadNet(patch_size=16, seed=0)(x)
    mask = (y != x).any(dim=1, keepdim=True).expand_as(y)
    patch = y[mask]
    assert patch.numel() == 3 * 16 * 16
    assert abs(float(patch.mean()) - float(x.mean())) < 0.1
    assert float(patch.std()) > 0.2  # N(0, 1) noise, clamped


def test_blended_is_a_convex_mix_with_uniform_noise():
    x = _images(2)
    y = Blended(alpha=0.2)(x)
    diff = y - 0.8 * x
    assert float(diff.min()) >= -1e-6 and float(diff.max()) <= 0.2 + 1e-6
    assert 0.05 < float(diff.mean()) < 0.15  # 0.2 * E[U(0, 1)]


def test_sig_adds_the_sinusoid_on_every_row_and_channel():
    x = torch.full((2, 3, 8, 32), 0.5)
    y = SIG()(x)
    j = torch.arange(32, dtype=torch.float64)
    expected = (60 / 255 * torch.sin(2 * math.pi * 6 * j / 32)).float()
    assert torch.allclose(y - 0.5, expected.expand_as(y), atol=1e-6)


def test_wanet_warps_gradients_but_not_constants():
    const = torch.full((2, 3, 32, 32), 0.3)
    assert torch.allclose(WaNet()(const), const, atol=1e-5)
    ramp = torch.linspace(0, 1, 32).expand(1, 3, 32, 32).contiguous()
    assert float((WaNet()(ramp) - ramp).abs().max()) > 1e-3
    assert torch.allclose(WaNet(strength=0.0)(ramp), ramp, atol=1e-5)
    rect = torch.rand(1, 1, 24, 40)  # non-square fields are built and cached per size
    w = WaNet(seed=1)
    assert w(rect).shape == rect.shape and (24, 40) in w._grids


def test_patch_trigger_center_and_random_places():
    patch = torch.ones(3, 4, 4)
    x = torch.zeros(2, 3, 16, 16)
    center = PatchTrigger(patch)(x)
    assert torch.equal(center[:, :, 6:10, 6:10], torch.ones(2, 3, 4, 4)) and float(center.sum()) == 2 * 3 * 16
    rand = PatchTrigger(patch, location="random", seed=0)(x, keys=[0, 1])
    assert float(rand.sum()) == 2 * 3 * 16 and not torch.equal(rand[0], rand[1])


@pytest.mark.parametrize(
    "build",
    [
        lambda: make_trigger("nope"),
        lambda: make_trigger("blended", alpha=1.5),
        lambda: make_trigger("sig", periods=0),
        lambda: make_trigger("sig", amplitude=0.0),
        lambda: make_trigger("wanet", k=1),
        lambda: make_trigger("wanet", strength=-1.0),
        lambda: make_trigger("badnet", patch_size=0),
        lambda: make_trigger("sig", colour="red"),
        lambda: BadNet(patch_size=40)(torch.rand(1, 3, 32, 32)),
        lambda: PatchTrigger(torch.rand(3, 40, 40))(torch.rand(1, 3, 32, 32)),
        lambda: PatchTrigger(torch.rand(3, 4, 4) * 2),
        lambda: PatchTrigger(torch.rand(3, 4, 4), location="corner"),
        lambda: Blended()(torch.rand(2, 3, 8, 8), keys=[1]),
        lambda: SIG()(torch.rand(3, 8, 8)),
        lambda: SIG()(torch.randint(0, 255, (1, 3, 8, 8), dtype=torch.uint8)),
    ],
)
def test_bad_parameters_are_one_line_config_errors(build):
    with pytest.raises(ConfigError) as err:
        build()
    assert "\n" not in str(err.value)


def test_unknown_trigger_lists_the_names():
    with pytest.raises(ConfigError, match="badnet, blended, sig, wanet"):
        make_trigger("trojan")


def test_optimize_patch_raises_the_target_similarity_and_leaves_clip_alone(one_thread):
    torch.manual_seed(0)
    clip = create_clip("tiny-vit")
    frozen = next(iter(clip.parameters()))
    frozen.requires_grad_(False)  # a mixed set of flags must come back as it was
    flags = [p.requires_grad for p in clip.parameters()]
    state = {k: v.clone() for k, v in clip.state_dict().items()}
    images = _images(32, seed=3)
    kwargs = dict(size=10, batch_size=16, lr=0.1, seed=0)
    start = optimize_patch(clip, images, "a photo of a banana", steps=0, **kwargs)
    patch = optimize_patch(clip, images, "a photo of a banana", steps=15, **kwargs)
    assert patch.shape == (3, 10, 10) and float(patch.min()) >= 0 and float(patch.max()) <= 1
    assert clip.training  # the mode is restored
    assert [p.requires_grad for p in clip.parameters()] == flags
    assert all(torch.equal(v, state[k]) for k, v in clip.state_dict().items())
    clip.eval()
    with torch.no_grad():
        text = clip.encode_text(clip.tokenize(["a photo of a banana"]))

        def score(p: torch.Tensor) -> float:
            return float((clip.encode_image(PatchTrigger(p)(images)) @ text.T).mean())

        assert score(patch) > score(start) + 1e-3
    rand = optimize_patch(clip, images[:, :1], "a cat", size=6, steps=2, batch_size=4, location="random")
    assert rand.shape == (3, 6, 6)  # grey images are optimised as RGB
    with pytest.raises(ConfigError):
        optimize_patch(clip, images, "a cat", size=33)


@pytest.fixture(scope="module")
def stegastamp():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = StegaTrainConfig(steps=100, batch_size=24, n_bits=16, seed=0)  # ~5 s on one core
        return train_stegastamp(_structured(256), cfg, device="cpu")
    finally:
        torch.set_num_threads(threads)


def test_stegastamp_short_training_hides_bits_within_the_bound(stegastamp):
    encoder, decoder, report = stegastamp
    assert report["bit_accuracy"] > 0.9, report  # 0.99 here (chance: 0.5)
    assert report["psnr_db"] > 26 and report["steps"] == 100 and report["heldout_images"] == 26
    x = _structured(8, seed=1)
    bits = torch.randint(0, 2, (8, 16), generator=torch.Generator().manual_seed(0)).float()
    with torch.no_grad():
        residual, encoded = encoder.residual(x, bits), encoder(x, bits)
        accuracy = float(((decoder(encoded) > 0).float() == bits).float().mean())
    assert float(residual.abs().max()) <= encoder.max_residual
    assert float((encoded - x).abs().max()) <= encoder.max_residual + 1e-6
    assert accuracy > 0.85
    secret = secret_bits(n_bits=16)
    ssba = SSBA(encoder, secret)
    with torch.no_grad():
        expected = encoder(x, secret)
    assert torch.allclose(ssba(x), expected, atol=1e-6)
    assert ssba.describe()["secret"] == "".join(str(int(b)) for b in secret.tolist())


def test_stegastamp_save_load_round_trip(stegastamp, tmp_path):
    encoder, decoder, _ = stegastamp
    path = save_stegastamp(tmp_path / "ssba", encoder, decoder)
    assert path.name == "ssba.safetensors"
    enc2, dec2 = load_stegastamp(tmp_path / "ssba")  # the suffix is added as on saving
    assert isinstance(dec2, StegaDecoder)
    x, bits = _structured(2, seed=2), secret_bits("abc", 16)
    with torch.no_grad():
        assert torch.equal(enc2(x, bits), encoder(x, bits))
        assert torch.equal(dec2(x), decoder(x))
    enc3, dec3 = load_stegastamp(save_stegastamp(tmp_path / "enc_only.safetensors", encoder))
    assert dec3 is None and enc3.config() == encoder.config()
    with pytest.raises(ConfigError):
        load_stegastamp(tmp_path / "missing.safetensors")


def test_secret_bits_are_deterministic_bits_of_the_text():
    a = secret_bits()
    assert a.shape == (32,) and a.dtype == torch.float32 and set(a.tolist()) <= {0.0, 1.0}
    assert torch.equal(a, secret_bits("Stega!!", 32))
    assert secret_bits("A", 8).int().tolist() == [0, 1, 0, 0, 0, 0, 0, 1]
    assert secret_bits("A", 12).int().tolist()[8:] == [0, 1, 0, 0]  # repeated
    assert not torch.equal(secret_bits("B"), secret_bits("A"))
    with pytest.raises(ConfigError):
        secret_bits("")


def test_stega_encoder_sizes_and_errors():
    enc = StegaEncoder(n_bits=8, width=4)
    assert enc(torch.rand(1, 3, 224, 224), secret_bits("x", 8)).shape == (1, 3, 224, 224)
    for bad in (lambda: enc(torch.rand(1, 3, 30, 32), secret_bits("x", 8)),
                lambda: enc(torch.rand(1, 3, 32, 32), secret_bits("x", 9)),
                lambda: StegaEncoder(max_residual=0.0),
                lambda: StegaTrainConfig(steps=0).validate(),
                lambda: train_stegastamp(torch.rand(1, 3, 32, 32), StegaTrainConfig(steps=1)),
                lambda: SSBA(enc, torch.ones(4))):
        with pytest.raises(ConfigError):
            bad()
    assert sum(p.numel() for p in StegaEncoder().parameters()) < 100_000
    assert sum(p.numel() for p in StegaDecoder().parameters()) < 300_000
