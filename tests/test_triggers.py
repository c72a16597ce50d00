"""Text-trigger primitives: insertion after SOT, stripping, special-token bans, HotFlip monotonicity."""

from __future__ import annotations

import pytest
import torch

from obstructlib.engine import clip_loss
from obstructlib.errors import ConfigError
from obstructlib.models import create_clip
from obstructlib.primitives.text_triggers import (
    decode_trigger,
    hotflip_attack,
    hotflip_candidates,
    hotflip_search,
    insert_trigger,
    random_trigger,
    strip_tokens,
)

SOT, EOT = 49406, 49407


@pytest.fixture(scope="module")
def clip():
    torch.manual_seed(0)
    return create_clip("tiny-rn", context_length=16).eval()


def test_insert_trigger_after_start_token_keeps_caption_and_end_token():
    tokens = torch.tensor([[SOT, 11, 12, EOT, 0, 0, 0, 0], [SOT, 21, EOT, 0, 0, 0, 0, 0]])
    out = insert_trigger(tokens, torch.tensor([[1, 2, 3], [4, 5, 6]]), EOT)
    assert out.tolist() == [[SOT, 1, 2, 3, 11, 12, EOT, 0], [SOT, 4, 5, 6, 21, EOT, 0, 0]]
    shared = insert_trigger(tokens, torch.tensor([7, 8]), EOT)  # one trigger for every caption
    assert shared[:, 1:3].tolist() == [[7, 8], [7, 8]]
    assert torch.equal(strip_tokens(out, 3, EOT), tokens)  # stripping undoes the insertion


def test_insert_trigger_truncates_long_captions_but_keeps_the_end_token_last():
    tokens = torch.tensor([[SOT, 1, 2, 3, 4, EOT]])
    out = insert_trigger(tokens, torch.tensor([[9, 9]]), EOT)
    assert out.tolist() == [[SOT, 9, 9, 1, 2, EOT]]
    assert int(out.argmax(dim=1)) == 5  # CLIP pools at the (largest-id) end token


def test_insert_trigger_bad_input_is_one_line():
    tokens = torch.tensor([[SOT, 1, EOT, 0]])
    for bad in (lambda: insert_trigger(tokens, torch.tensor([[1, 2], [3, 4]]), EOT),
                lambda: insert_trigger(tokens[0], torch.tensor([[1]]), EOT),
                lambda: insert_trigger(torch.tensor([[SOT, 1, 2, 0]]), torch.tensor([[1]]), EOT),
                lambda: insert_trigger(tokens, torch.tensor([[1, 2, 3]]), EOT)):
        with pytest.raises(ConfigError) as err:
            bad()
        assert "\n" not in str(err.value)


def test_strip_never_removes_the_end_token():
    tokens = torch.tensor([[SOT, 5, EOT, 0, 0]])
    assert strip_tokens(tokens, 4, EOT).tolist() == [[SOT, EOT, 0, 0, 0]]


def test_random_trigger_and_candidates_never_pick_special_tokens(clip):
    banned = clip.special_token_ids
    assert {0, SOT, EOT} <= set(banned)
    trig = random_trigger(500, 5, clip.vocab_size, banned, torch.Generator().manual_seed(0))
    assert trig.shape == (500, 5) and not torch.isin(trig, torch.tensor(banned)).any()
    # a gradient that points straight at the special tokens' embeddings: they would win unmasked
    weight = clip.token_embedding.weight
    grad = -weight[banned].sum(0).expand(4, 3, -1) * 100
    cands = hotflip_candidates(grad, weight, 16, banned)
    assert cands.shape == (4, 3, 16) and not torch.isin(cands, torch.tensor(banned)).any()
    unmasked = hotflip_candidates(grad, weight, 16)
    assert torch.isin(unmasked, torch.tensor(banned)).any()  # the test can fail: the mask matters


def test_hotflip_candidates_rank_by_first_order_decrease():
    weight = torch.eye(5)
    grad = torch.tensor([[[0.3, -2.0, 0.0, -1.0, 5.0]]])  # -g.E_w = [-.3, 2, 0, 1, -5]
    assert hotflip_candidates(grad, weight, 3).tolist() == [[[1, 3, 2]]]
    with pytest.raises(ConfigError):
        hotflip_candidates(grad, weight, 6)


def test_hotflip_search_is_greedy_left_to_right_and_keeps_current_on_ties():
    target = torch.tensor([[4, 2]])
    seen = []

    def loss(t):
        seen.append(t.clone())
        return (t - target).abs().float().sum()

    start = torch.tensor([[0, 2]])
    cands = torch.tensor([[[9, 4], [7, 2]]])  # position 1: a worse and an equal candidate
    new, value = hotflip_search(loss, start, cands)
    assert new.tolist() == [[4, 2]] and value == 0.0
    assert len(seen) == 1 + 2 * 2  # current + K per position
    # the second position starts from the first position's choice
    assert seen[-1].tolist() == [[4, 2]] and seen[-2].tolist() == [[4, 7]]


def test_hotflip_attack_never_increases_the_batch_loss(clip):
    g = torch.Generator().manual_seed(1)
    tokens = clip.tokenize([f"a photo of a {w}" for w in ("cat", "dog", "car", "ship", "bird", "frog")])
    image_features = torch.nn.functional.normalize(torch.randn(6, clip.embed_dim, generator=g), dim=-1)
    scale = torch.tensor(30.0)
    trig = random_trigger(6, 3, clip.vocab_size, clip.special_token_ids, g)
    loss = lambda t: clip_loss(image_features, t, scale)
    drops = []
    for _ in range(3):
        new, before, after = hotflip_attack(clip, tokens, trig, loss, num_candidates=4)
        drops.append(before - after)
        with torch.no_grad():
            direct = float(loss(clip.encode_text(insert_trigger(tokens, new, EOT))))
        assert after <= before + 1e-6 and direct == pytest.approx(after, abs=1e-5)
        assert not torch.isin(new, torch.tensor(clip.special_token_ids)).any()
        trig = new
    assert drops[0] > 0.1  # random triggers are not a local optimum of a real text tower
    assert not any(p.grad is not None for p in clip.parameters())  # no parameter gradients written


class BagOfWords(torch.nn.Module):
    """A text tower that sums its token embeddings: HotFlip's first-order scores are then exact."""

    eot_token_id, special_token_ids = 19, [0, 18, 19]

    def __init__(self):
        super().__init__()
        self.token_embedding = torch.nn.Embedding(20, 4)

    def encode_text_embeds(self, embeds, tokens):
        return embeds.sum(1)

    def encode_text(self, tokens):
        return self.token_embedding(tokens).sum(1)


def test_hotflip_attack_finds_the_better_token_when_one_exists():
    torch.manual_seed(0)
    model, w = BagOfWords(), torch.tensor([1.0, -2.0, 0.5, 3.0])
    scores = model.token_embedding.weight.detach() @ w  # the loss each token adds at a trigger slot
    scores[model.special_token_ids] = float("inf")
    best, worst = int(scores.argmin()), int(scores[scores.isfinite()].argmax())
    tokens = torch.tensor([[18, 5, 6, 19, 0, 0, 0, 0], [18, 7, 19, 0, 0, 0, 0, 0]])
    trigger = torch.full((2, 2), worst)
    new, before, after = hotflip_attack(model, tokens, trigger, lambda f: (f @ w).sum(), num_candidates=1)
    assert new.tolist() == [[best, best], [best, best]]  # every slot moved to the true minimiser
    assert after == pytest.approx(before - 4 * float(scores[worst] - scores[best]), rel=1e-5) and after < before
    again, before2, after2 = hotflip_attack(model, tokens, new, lambda f: (f @ w).sum(), num_candidates=3)
    assert torch.equal(again, new) and after2 == pytest.approx(before2)  # at the optimum it stays put


def test_decode_trigger(clip):
    ids = clip.tokenize(["red car"])[0, 1:3]
    assert decode_trigger(clip.tokenizer, ids) == "red car"
