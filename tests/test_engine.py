"""Engine: seeding, devices, autocast, classifier and CLIP loops, resume equivalence, evaluation."""

from __future__ import annotations

import contextlib
import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from obstructlib.engine import (
    ClassifierTrainConfig,
    ClipTrainConfig,
    amp_dtype,
    autocast,
    clip_loss,
    count_parameters,
    encode_dataset,
    evaluate,
    evaluate_clip,
    fit_classifier,
    fit_clip,
    grad_scaler,
    resolve_device,
    rng_state,
    seed_everything,
    set_rng_state,
    train_one_epoch,
)
from obstructlib.errors import ConfigError

COLORS = ["red", "green", "blue", "yellow"]
RGB = torch.tensor([[1.0, 0.1, 0.1], [0.1, 1.0, 0.1], [0.1, 0.1, 1.0], [1.0, 1.0, 0.1]])


# ---- stand-ins with the interfaces of obstructlib.models.ClipModel and CaptionDataset -----------
class TinyClip(nn.Module):
    """A few-hundred-parameter CLIP with ClipModel's interface (dropout exercises RNG restore)."""

    def __init__(
        self,
        dim: int = 8,
        vocab: int = 50,
        context_length: int = 6,
        image_size: int = 8,
        dropout: float = 0.1,
    ):
        super().__init__()
        self.image_size, self.context_length, self.vocab = image_size, context_length, vocab
        self.visual = nn.Sequential(
            nn.Conv2d(3, 4, 3, stride=2, padding=1),
            nn.GELU(),
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(4 * (image_size // 2) ** 2, dim),
        )
        self.token_embedding = nn.Embedding(vocab, 12)
        self.ln_final = nn.LayerNorm(12)
        self.text_projection = nn.Linear(12, dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        out = torch.zeros(len(texts), self.context_length, dtype=torch.long)
        for i, text in enumerate(texts):
            ids = [1 + sum(map(ord, w)) % (self.vocab - 1) for w in text.lower().split()][
                : self.context_length
            ]
            out[i, : len(ids)] = torch.tensor(ids)
        return out

    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        if images.shape[-1] != self.image_size:
            images = F.interpolate(images, size=(self.image_size, self.image_size), mode="bilinear")
        x = self.visual(images - 0.5)
        return F.normalize(x, dim=-1) if normalize else x

    def encode_text(self, tokens: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        mask = (tokens > 0).float().unsqueeze(-1)
        x = (self.token_embedding(tokens) * mask).sum(1) / mask.sum(1).clamp_min(1)
        x = self.text_projection(self.ln_final(x))
        return F.normalize(x, dim=-1) if normalize else x

    def forward(self, images: torch.Tensor, tokens: torch.Tensor):
        return self.encode_image(images), self.encode_text(tokens), self.logit_scale.exp()

    def zero_shot_classifier(self, classnames, templates=None, device=None) -> torch.Tensor:
        templates = templates or ["a {} square"]
        rows = []
        for name in classnames:
            texts = [t.format(name) if isinstance(t, str) else t(name) for t in templates]
            rows.append(F.normalize(self.encode_text(self.tokenize(texts).to(device)).mean(0), dim=-1))
        return torch.stack(rows)


class Pairs(Dataset):
    """Coloured squares with two captions each; the CaptionDataset attributes the engine reads."""

    def __init__(self, num_images: int = 24, size: int = 8, seed: int = 0, captions_per_image: int = 2):
        g = torch.Generator().manual_seed(seed)
        self.num_images = num_images
        self.image_labels = np.arange(num_images) % len(COLORS)
        self.images = (
            RGB[self.image_labels][:, :, None, None] * torch.ones(num_images, 3, size, size)
            + 0.05 * torch.rand(num_images, 3, size, size, generator=g)
        ).clamp(0, 1)
        self.image_ids = np.repeat(np.arange(num_images), captions_per_image)
        templates = ["a {} square", "a photo of {}"]
        self.captions = [
            templates[k % 2].format(COLORS[self.image_labels[i]]) for k, i in enumerate(self.image_ids)
        ]
        self.labels = self.image_labels[self.image_ids]
        self.classes = list(COLORS)
        self.encoded = 0  # images decoded through __getitem__ (not image_dataset)

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, i: int):
        j = int(self.image_ids[i])
        return self.images[j], self.captions[i], j

    def image_dataset(self) -> Dataset:
        return TensorDataset(self.images, torch.arange(self.num_images))


class PlainPairs(Dataset):
    """Only ``(image, caption, image_id)`` items, with arbitrary (non-contiguous) image ids."""

    def __init__(self, pairs: Pairs):
        self.pairs = pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int):
        x, caption, j = self.pairs[i]
        return x, caption, 1000 + 7 * j


def blobs(n: int = 64, size: int = 4, seed: int = 0) -> TensorDataset:
    """Two linearly separable classes of tiny images (dark vs bright, plus noise)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = (0.3 + 0.4 * y.float()[:, None, None, None] + 0.1 * torch.randn(n, 3, size, size, generator=g)).clamp(
        0, 1
    )
    return TensorDataset(x, y)


def tiny_classifier(dropout: float = 0.1) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(48, 16), nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, 2))


def params_equal(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


# ---- utils ---------------------------------------------------------------------------------------
def test_seed_everything_reproducible():
    g1 = seed_everything(3)
    a = (random.random(), np.random.rand(), torch.rand(2), torch.rand(2, generator=g1))
    g2 = seed_everything(3)
    b = (random.random(), np.random.rand(), torch.rand(2), torch.rand(2, generator=g2))
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2]) and torch.equal(a[3], b[3])
    with pytest.raises(ConfigError):
        seed_everything(-1)


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device(None).type == expected and resolve_device("auto").type == expected
    with pytest.raises(ConfigError):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError):
            resolve_device("cuda")


def test_autocast_is_noop_on_cpu():
    ctx = autocast("cpu")
    assert isinstance(ctx, contextlib.nullcontext)
    with ctx:
        y = torch.ones(2, 2) @ torch.ones(2, 2)
    assert y.dtype == torch.float32
    assert amp_dtype("cpu") is None and not grad_scaler("cpu").is_enabled()


def test_rng_state_roundtrip_is_weights_only_safe(tmp_path):
    seed_everything(1)
    state = rng_state()
    torch.save(state, tmp_path / "rng.pt")
    first = (random.random(), np.random.rand(), torch.rand(3))
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    second = (random.random(), np.random.rand(), torch.rand(3))
    assert first[0] == second[0] and first[1] == second[1] and torch.equal(first[2], second[2])


def test_count_parameters_counts_tied_once():
    emb = nn.Embedding(10, 4)
    head = nn.Linear(4, 10, bias=False)
    head.weight = emb.weight
    model = nn.ModuleDict({"emb": emb, "head": head})
    assert count_parameters(model) == 40
    emb.weight.requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == 0


# ---- classifier ------------------------------------------------------------------------------------
def test_train_one_epoch_decreases_loss():
    seed_everything(0)
    model = tiny_classifier(0.0)
    loader = DataLoader(blobs(), batch_size=16, shuffle=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    losses = [train_one_epoch(model, loader, opt, "cpu", progress=False)["loss"] for _ in range(8)]
    assert losses[-1] < 0.5 * losses[0]
    assert evaluate(model, DataLoader(blobs(seed=1), batch_size=32), "cpu")["acc"] >= 0.95


def test_evaluate_matches_hand_count():
    model = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.eye(2))
    x = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0], [0.0, 5.0], [1.0, 0.0]])
    y = torch.tensor([0, 1, 1, 1, 1])  # predictions 0, 1, 0, 1, 0: rows 0, 1, 3 correct
    out = evaluate(model, DataLoader(TensorDataset(x, y), batch_size=2), "cpu")
    assert out["num"] == 5 and out["acc"] == pytest.approx(3 / 5)
    assert out["loss"] == pytest.approx(F.cross_entropy(x, y).item(), abs=1e-6)


def test_fit_classifier_learns_and_validates():
    seed_everything(0)
    cfg = ClassifierTrainConfig(epochs=4, batch_size=16, lr=0.2, weight_decay=0.0)
    history = fit_classifier(tiny_classifier(), blobs(), blobs(seed=1), cfg, "cpu", progress=False)
    assert len(history["epoch"]) == 4 and history["test_acc"][-1] >= 0.95
    assert history["train_loss"][-1] < history["train_loss"][0]
    with pytest.raises(ConfigError):
        fit_classifier(
            tiny_classifier(), blobs(8), None, ClassifierTrainConfig(batch_size=16), "cpu", progress=False
        )
    with pytest.raises(ConfigError):
        ClassifierTrainConfig(optimizer="lbfgs").validate()


@pytest.mark.parametrize("optimizer,scheduler", [("sgd", "cosine"), ("adam", "step")])
def test_fit_classifier_resume_is_exact(tmp_path, optimizer, scheduler):
    cfg = ClassifierTrainConfig(
        epochs=3,
        batch_size=16,
        lr=0.05 if optimizer == "sgd" else 1e-2,
        optimizer=optimizer,
        scheduler=scheduler,
    )
    seed_everything(0)
    full_model = tiny_classifier()
    full = fit_classifier(full_model, blobs(40), blobs(20, seed=1), cfg, "cpu", progress=False)

    seed_everything(0)
    model = tiny_classifier()
    fit_classifier(
        model,
        blobs(40),
        blobs(20, seed=1),
        cfg,
        "cpu",
        ckpt_dir=tmp_path / "ck",
        progress=False,
        callback=lambda epoch, record: epoch == 1,
    )  # "interrupt" after epoch 1
    torch.rand(5)  # the interrupted process goes on drawing random numbers: resume must not care
    seed_everything(123)
    resumed_model = tiny_classifier()  # fresh weights, overwritten by the checkpoint
    resumed = fit_classifier(
        resumed_model, blobs(40), blobs(20, seed=1), cfg, "cpu", ckpt_dir=tmp_path / "ck", progress=False
    )
    assert resumed == full
    assert params_equal(resumed_model, full_model)


def test_fit_classifier_frozen_params_do_not_move():
    seed_everything(0)
    model = tiny_classifier()
    model[1].requires_grad_(False)
    before = model[1].weight.clone()
    fit_classifier(
        model, blobs(32), None, ClassifierTrainConfig(epochs=2, batch_size=8), "cpu", progress=False
    )
    assert torch.equal(model[1].weight, before)
    assert not torch.equal(model[4].weight, tiny_classifier().state_dict()["4.weight"])


# ---- CLIP --------------------------------------------------------------------------------------------
def test_clip_loss_matches_definition():
    g = torch.Generator().manual_seed(0)
    img = F.normalize(torch.randn(5, 8, generator=g), dim=-1)
    txt = F.normalize(torch.randn(5, 8, generator=g), dim=-1)
    scale = torch.tensor(10.0)
    logits = scale * img @ txt.T
    by_hand = -0.5 * (logits.log_softmax(1).diag().mean() + logits.log_softmax(0).diag().mean())
    assert clip_loss(img, txt, scale).item() == pytest.approx(by_hand.item(), rel=1e-6)
    assert clip_loss(img, img, torch.tensor(100.0)).item() < 1e-3
    assert clip_loss(img, txt, scale).item() == pytest.approx(clip_loss(txt, img, scale).item(), rel=1e-6)


def test_fit_clip_learns_colours():
    seed_everything(0)
    model = TinyClip(dropout=0.0)
    cfg = ClipTrainConfig(steps=60, batch_size=8, lr=1e-2, warmup_steps=5, log_every=10)
    before = evaluate_clip(model, Pairs(seed=1), "cpu", templates=["a {} square"])
    history = fit_clip(model, Pairs(), cfg, "cpu", progress=False)
    after = evaluate_clip(model, Pairs(seed=1), "cpu", templates=["a {} square"])
    assert history["step"] == [10, 20, 30, 40, 50, 60] and len(history["loss"]) == 6
    assert history["loss"][-1] < 0.7 * history["loss"][0]
    assert after["zero_shot_acc"] == 1.0 and after["zero_shot_acc"] > before["zero_shot_acc"]
    assert all(v <= 100.0 + 1e-6 for v in history["logit_scale"])


def test_fit_clip_resume_is_bit_identical(tmp_path):
    # 24 images x 2 captions = 48 pairs, batch 8 -> 6 steps per epoch; stop mid-epoch 2 at step 9
    cfg = ClipTrainConfig(steps=14, batch_size=8, lr=5e-3, warmup_steps=3, log_every=4, ckpt_every=5)
    seed_everything(0)
    full_model = TinyClip()
    full = fit_clip(full_model, Pairs(), cfg, "cpu", progress=False)

    seed_everything(0)
    model = TinyClip()
    partial = fit_clip(model, Pairs(), cfg, "cpu", ckpt_dir=tmp_path / "ck", progress=False, max_steps=9)
    assert partial["step"] == [4, 8]
    torch.rand(7)
    resumed_model = TinyClip()
    resumed = fit_clip(resumed_model, Pairs(), cfg, "cpu", ckpt_dir=tmp_path / "ck", progress=False)
    timed = resumed.pop("seconds"), full.pop("seconds")
    assert resumed == full  # same history, window means included
    assert params_equal(resumed_model, full_model)
    # training wall time: one entry per log record, growing across the resume
    assert all(len(t) == len(full["step"]) and t == sorted(t) and t[0] > 0 for t in timed)
    # calling again after the end is a no-op that returns the stored history
    again = fit_clip(TinyClip(), Pairs(), cfg, "cpu", ckpt_dir=tmp_path / "ck", progress=False)
    assert again.pop("seconds") == timed[0] and again == full


def test_fit_clip_frozen_tower_does_not_move():
    seed_everything(0)
    model = TinyClip()
    model.visual.requires_grad_(False)
    before = {k: v.clone() for k, v in model.visual.state_dict().items()}
    scale_before = model.logit_scale.detach().clone()
    fit_clip(
        model, Pairs(), ClipTrainConfig(steps=4, batch_size=8, lr=1e-2, warmup_steps=0), "cpu", progress=False
    )
    assert all(torch.equal(before[k], v) for k, v in model.visual.state_dict().items())
    assert not torch.equal(model.logit_scale.detach(), scale_before)


def test_clip_config_validation():
    with pytest.raises(ConfigError):
        ClipTrainConfig(steps=None, epochs=None).validate()
    with pytest.raises(ConfigError):
        fit_clip(TinyClip(), Pairs(2), ClipTrainConfig(steps=1, batch_size=8), "cpu", progress=False)
    history = fit_clip(
        TinyClip(),
        Pairs(8),
        ClipTrainConfig(steps=None, epochs=2, batch_size=8, log_every=1),
        "cpu",
        progress=False,
    )
    assert history["step"] == [1, 2, 3, 4]  # 16 pairs / 8 = 2 steps per epoch


def test_encode_dataset_encodes_each_image_once():
    pairs = Pairs(num_images=6)
    model = TinyClip().eval()
    calls = []
    original = model.encode_image
    model.encode_image = lambda x, normalize=True: calls.append(len(x)) or original(x, normalize)
    img, txt, ids = encode_dataset(model, pairs, "cpu", batch_size=4)
    assert img.shape == (6, 8) and txt.shape == (12, 8) and sum(calls) == 6
    assert ids.tolist() == pairs.image_ids.tolist()
    torch.testing.assert_close(img[ids], model.encode_image(pairs.images)[ids])
    # a plain pairs dataset with arbitrary ids gives the same features and rows
    img2, txt2, ids2 = encode_dataset(model, PlainPairs(pairs), "cpu", batch_size=5)
    torch.testing.assert_close(img2, img)
    torch.testing.assert_close(txt2, txt)
    assert ids2.tolist() == ids.tolist()


def test_evaluate_clip_keys_and_perfect_model():
    metrics = evaluate_clip(TinyClip(), Pairs(8), "cpu", templates=["a {} square"])
    for key in (
        "i2t_r1",
        "i2t_r5",
        "i2t_r10",
        "t2i_r1",
        "t2i_r5",
        "t2i_r10",
        "medr_i2t",
        "medr_t2i",
        "zero_shot_acc",
    ):
        assert key in metrics
    assert metrics["num_images"] == 8 and metrics["num_captions"] == 16

    class Oracle(TinyClip):  # image and caption embeddings are the one-hot colour: zero-shot is perfect
        def encode_image(self, images, normalize=True):
            return F.one_hot(
                (images[:, :, 0, 0] @ torch.tensor([1.0, 2.0, 4.0])).round().long().clamp(max=7) % 8, 8
            ).float()

        def encode_text(self, tokens, normalize=True):
            codes = {name: code for name, code in zip(COLORS, [1, 2, 4, 3])}
            ids = self.tokenize(list(codes))[:, 0]
            out = torch.zeros(len(tokens), 8)
            for row, tok in enumerate(tokens):
                for name, tid in zip(codes, ids):
                    if tid in tok:
                        out[row, codes[name]] = 1.0
            return out

    pairs = Pairs(8)
    pairs.images = RGB[pairs.image_labels][:, :, None, None].round().expand(-1, -1, 8, 8)
    metrics = evaluate_clip(Oracle(), pairs, "cpu", templates=["a {} square"])
    assert metrics["zero_shot_acc"] == 1.0 and metrics["t2i_r10"] == 100.0
    no_labels = evaluate_clip(TinyClip(), PlainPairs(Pairs(6)), "cpu")
    assert "zero_shot_acc" not in no_labels


def _real_clip():
    models = pytest.importorskip("obstructlib.models")
    if not hasattr(models, "create_clip"):
        pytest.skip("obstructlib.models.create_clip is not available yet")
    return models.create_clip("tiny-vit", device="cpu")


def test_real_tiny_clip_trains_and_evaluates(tmp_path):
    seed_everything(0)
    model = _real_clip()
    pairs = Pairs(num_images=16, size=32)
    cfg = ClipTrainConfig(steps=4, batch_size=8, lr=1e-3, warmup_steps=1, log_every=2, ckpt_every=10)
    history = fit_clip(model, pairs, cfg, "cpu", ckpt_dir=tmp_path / "ck", progress=False, max_steps=2)
    history = fit_clip(model, pairs, cfg, "cpu", ckpt_dir=tmp_path / "ck", progress=False)
    assert history["step"] == [2, 4] and all(math.isfinite(v) for v in history["loss"])
    metrics = evaluate_clip(model, Pairs(num_images=8, size=32, seed=1), "cpu", templates=["a {} square"])
    assert 0.0 <= metrics["i2t_r1"] <= 100.0 and 0.0 <= metrics["zero_shot_acc"] <= 1.0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_autocast_and_loops():
    device = torch.device("cuda")
    with autocast(device):
        y = torch.ones(4, 4, device=device) @ torch.ones(4, 4, device=device)
    assert y.dtype == amp_dtype(device) and amp_dtype(device) in (torch.bfloat16, torch.float16)
    seed_everything(0)
    model = TinyClip(dropout=0.0)
    history = fit_clip(
        model, Pairs(), ClipTrainConfig(steps=6, batch_size=8, lr=1e-2, log_every=2), device, progress=False
    )
    assert all(math.isfinite(v) for v in history["loss"]) and next(model.parameters()).is_cuda
    metrics = evaluate_clip(model, Pairs(8), device, templates=["a {} square"])
    assert 0.0 <= metrics["zero_shot_acc"] <= 1.0
    cls = fit_classifier(
        tiny_classifier(),
        blobs(),
        blobs(seed=1),
        ClassifierTrainConfig(epochs=2, batch_size=16),
        device,
        progress=False,
    )
    assert 0.0 <= cls["test_acc"][-1] <= 1.0


def test_a_short_clip_run_still_checkpoints(tmp_path, monkeypatch):
    # ckpt_every defaults to 500, and the quick recipes run 150-300 steps: a killed run restarted from 0
    import obstructlib.engine.loop as loop_mod

    saved = []
    real = loop_mod.save_checkpoint

    def counting(*args, **kwargs):
        saved.append(kwargs["step"])
        return real(*args, **kwargs)

    monkeypatch.setattr(loop_mod, "save_checkpoint", counting)
    cfg = ClipTrainConfig(steps=12, batch_size=8, lr=5e-3, warmup_steps=2, log_every=4)
    assert cfg.ckpt_every == 500
    seed_everything(0)
    fit_clip(TinyClip(), Pairs(), cfg, "cpu", ckpt_dir=tmp_path / "ck", progress=False)
    assert saved == [3, 6, 9, 12]   # every quarter of the run, the last step included
