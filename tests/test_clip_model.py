"""The open_clip adapter: tiny configs, [0, 1] image input, tokens, zero-shot classifier, errors."""

from __future__ import annotations

import open_clip
import pytest
import torch
import torch.nn.functional as F

from obstructlib.errors import ConfigError, ObstructError
from obstructlib.models import ClipModel, create_clip
from obstructlib.models.clip import CONFIG_DIR


@pytest.fixture(scope="module", params=["tiny-vit", "tiny-rn"])
def clip(request) -> ClipModel:
    torch.manual_seed(0)
    return create_clip(request.param).eval()


@pytest.fixture(scope="module")
def tiny_vit() -> ClipModel:
    torch.manual_seed(0)
    return create_clip("tiny-vit")


def test_tiny_config_values(tiny_vit):
    assert tiny_vit.image_size == 32 and tiny_vit.context_length == 32
    assert tiny_vit.vocab_size == 49408 and tiny_vit.embed_dim == 128
    visual = tiny_vit.visual
    assert visual.patch_size == (4, 4) and len(visual.transformer.resblocks) == 2
    assert len(tiny_vit.model.transformer.resblocks) == 2
    assert sorted(p.name for p in CONFIG_DIR.glob("*.json")) == ["tiny-rn.json", "tiny-vit.json"]


def test_open_clip_knows_tiny_names():
    assert {"tiny-vit", "tiny-rn"} <= set(open_clip.list_models())
    assert open_clip.get_tokenizer("tiny-vit").context_length == 32


def test_encode_shapes_and_normalisation(clip):
    images, tokens = torch.rand(3, 3, 32, 32), clip.tokenize(["a cat", "a dog", "a car", "a ship"])
    with torch.no_grad():
        img, txt, scale = clip(images, tokens)
        raw = clip.encode_image(images, normalize=False)
    assert img.shape == (3, clip.embed_dim) and txt.shape == (4, clip.embed_dim)
    torch.testing.assert_close(img.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(txt.norm(dim=-1), torch.ones(4))
    torch.testing.assert_close(F.normalize(raw, dim=-1), img)
    assert scale.item() == pytest.approx(1 / 0.07, rel=1e-4)


def test_normalisation_inside(tiny_vit):
    x = torch.rand(2, 3, 32, 32)
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(
            tiny_vit.encode_image(x), tiny_vit.model.encode_image((x - mean) / std, normalize=True)
        )


def test_encode_image_resizes_and_accepts_grey(clip):
    small = torch.rand(2, 3, 16, 16)
    resized = F.interpolate(small, size=(32, 32), mode="bilinear", align_corners=False, antialias=True)
    with torch.no_grad():
        torch.testing.assert_close(clip.encode_image(small), clip.encode_image(resized))
        grey = torch.rand(2, 1, 32, 32)
        torch.testing.assert_close(clip.encode_image(grey), clip.encode_image(grey.expand(-1, 3, -1, -1)))
    with pytest.raises(ConfigError, match="channels"):
        clip.encode_image(torch.rand(2, 4, 32, 32))


def test_tokenize_shape_and_special_ids(tiny_vit):
    tokens = tiny_vit.tokenize(["a photo of a cat", "dog " * 100])
    assert tokens.dtype == torch.long and tokens.shape == (2, 32)
    sot, eot, pad = tiny_vit.sot_token_id, tiny_vit.eot_token_id, tiny_vit.pad_token_id
    assert (sot, eot, pad) == (49406, 49407, 0)
    assert (tokens[:, 0] == sot).all()
    assert tokens[0].argmax() == (tokens[0] == eot).nonzero()[0, 0]  # eot is the pooled position
    assert tokens[1, -1] == eot  # truncated captions keep their end token
    n = int((tokens[0] != pad).sum())
    assert (tokens[0, n:] == pad).all()
    assert set(tiny_vit.special_token_ids) == {sot, eot, pad}
    assert tiny_vit.tokenize("one caption").shape == (1, 32)


def test_zero_shot_classifier(clip):
    classes = ["cat", "dog", "truck"]
    templates = ["a photo of a {}.", lambda c: f"a drawing of a {c}"]
    weights = clip.zero_shot_classifier(classes, templates, batch_size=4)
    assert weights.shape == (3, clip.embed_dim)
    torch.testing.assert_close(weights.norm(dim=-1), torch.ones(3))
    with torch.no_grad():
        manual = clip.encode_text(clip.tokenize(["a photo of a dog.", "a drawing of a dog"])).mean(0)
    torch.testing.assert_close(weights[1], F.normalize(manual, dim=-1))
    with pytest.raises(ConfigError):
        clip.zero_shot_classifier([], templates)


def test_gradients_reach_token_embedding(tiny_vit):
    tokens = tiny_vit.tokenize(["a photo of a cat", "a photo of a dog"])
    tiny_vit.zero_grad(set_to_none=True)
    img, txt, scale = tiny_vit(torch.rand(2, 3, 32, 32), tokens)
    logits = scale * img @ txt.T
    F.cross_entropy(logits, torch.arange(2)).backward()
    grad = tiny_vit.token_embedding.weight.grad
    assert grad is not None
    used = tokens[tokens != tiny_vit.pad_token_id].unique()
    assert grad[used].abs().sum(dim=1).gt(0).all()
    # padding after the end token cannot reach the pooled (end-token) feature: causal attention
    unused = torch.ones(tiny_vit.vocab_size, dtype=torch.bool)
    unused[used] = False
    assert grad[unused].abs().sum() == 0
    tiny_vit.zero_grad(set_to_none=True)


def test_encode_text_embeds_matches_ids(tiny_vit):
    tokens = tiny_vit.tokenize(["a small red car"])
    one_hot = F.one_hot(tokens, tiny_vit.vocab_size).float().requires_grad_(True)
    feats = tiny_vit.encode_text_embeds(one_hot @ tiny_vit.token_embedding.weight, tokens)
    with torch.no_grad():
        torch.testing.assert_close(feats, tiny_vit.encode_text(tokens))
    feats.sum().backward()
    assert one_hot.grad is not None and one_hot.grad.abs().sum() > 0  # HotFlip's gradient


def test_unknown_architecture_and_tag():
    with pytest.raises(ConfigError, match="tiny-vit"):
        create_clip("nope")
    with pytest.raises(ConfigError, match="tag"):
        create_clip("tiny-vit", pretrained="openai")


def test_failed_download_is_one_line(monkeypatch):
    def offline(*args, **kwargs):
        raise RuntimeError("Failed to download weights for tag 'openai': no network")

    monkeypatch.setattr(open_clip, "create_model", offline)
    with pytest.raises(ObstructError, match="could not be fetched") as err:
        create_clip("RN50", pretrained="openai")
    assert "\n" not in str(err.value)


def test_overrides_merge_into_the_config():
    model = create_clip("tiny-vit", image_size=16, vision_cfg={"layers": 1}, context_length=16)
    assert model.image_size == 16 and len(model.visual.transformer.resblocks) == 1
    assert model.visual.patch_size == (4, 4)  # untouched keys keep the tiny config's values
    assert model.tokenize(["hi"]).shape == (1, 16)
    assert model.encode_image(torch.rand(1, 3, 32, 32)).shape == (1, 128)
    with pytest.raises(ConfigError, match="override"):
        create_clip("tiny-vit", not_a_key=1)


def test_deepcopy_shares_the_tokenizer_and_copies_the_weights():
    import copy
    import time

    model = create_clip("tiny-rn", None, image_size=32, context_length=20)
    start = time.perf_counter()
    twin = copy.deepcopy(model)
    assert time.perf_counter() - start < 2.0
    assert twin.tokenizer is model.tokenizer and twin.name == model.name and twin.image_size == model.image_size
    pairs = list(zip(model.parameters(), twin.parameters()))
    assert pairs and all(a is not b and torch.equal(a, b) for a, b in pairs)
    assert all(a.data_ptr() != b.data_ptr() for a, b in pairs)
    x, tokens = torch.rand(2, 3, 32, 32), model.tokenize(["a red circle", "a blue square"])
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(model.eval()(x, tokens), twin.eval()(x, tokens)))
        next(twin.parameters()).add_(1.0)  # the copy's weights are its own
    assert not torch.equal(next(model.parameters()), next(twin.parameters()))
    assert model.tokenize(["a red circle"]).tolist() == twin.tokenize(["a red circle"]).tolist()
