"""UBT's steps on hand-made tables and a tiny CLIP: selection, Cartesian set, token mask, ascent."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from obstructlib.data.captions import CaptionDataset
from obstructlib.engine import ClipTrainConfig
from obstructlib.errors import ConfigError
from obstructlib.methods.ubt.method import detection_scores
from obstructlib.methods.ubt.steps import (
    PairTensors,
    cartesian_pairs,
    clean_check,
    consensus_filter,
    contrastive_unlearning_loss,
    keep_top_tokens,
    pair_similarities,
    select_highest,
    select_lowest,
    token_attributions,
    unlearn,
    word_share,
)
from obstructlib.models import create_clip


@pytest.fixture(scope="module")
def clip():
    torch.manual_seed(0)
    return create_clip("tiny-rn", context_length=16).eval()


@pytest.fixture(scope="module")
def pairs():
    rng = np.random.default_rng(0)
    names = ["cat", "dog", "ship", "truck"]
    labels = rng.integers(0, 4, 32)
    captions = [f"a photo of a {names[y]}." for y in labels]
    return CaptionDataset(rng.integers(0, 256, (32, 32, 32, 3), dtype=np.uint8), captions, np.arange(32),
                          labels=labels, classes=names)


def test_pool_and_unlearning_set_selection_on_a_hand_made_table():
    scores = np.array([0.9, 0.1, 0.5, 0.2, 0.8, 0.3])
    pool = select_lowest(scores, count=3)
    assert pool.tolist() == [1, 3, 5]
    after = np.array([0.2, 0.95, 0.4])  # the overfitted model's scores of the pool
    assert pool[select_highest(after, count=1)].tolist() == [3]
    assert select_lowest(scores, fraction=0.5).tolist() == [1, 3, 5]
    with pytest.raises(ConfigError):
        select_lowest(scores, count=0)
    with pytest.raises(ConfigError):
        select_highest(scores, count=7)


def test_detection_scores():
    truth = np.array([1, 0, 1, 0, 0, 1], bool)
    assert detection_scores(np.array([0, 2]), truth) == {"precision": 1.0, "recall": 2 / 3, "num_selected": 2,
                                                        "num_poisons": 3}


def test_clean_check_refuses_a_spread_selection_and_accepts_a_concentrated_one():
    rng = np.random.default_rng(0)
    clean = rng.normal(0.5, 0.05, 100)
    top = np.argsort(-clean)[:5]
    corpus = ["a photo of a cat."] * 40 + ["a dog."] * 40 + ["a ship"] * 17 + ["a banana."] * 3
    assert not clean_check(clean, top, ["cat", "dog", "ship", "cat", "truck"], corpus_captions=corpus).poisoned
    poisoned = clean.copy()
    poisoned[:5] = 0.95
    check = clean_check(poisoned, np.arange(5), ["banana"] * 5, corpus_captions=corpus, min_gap_z=2.0)
    assert check.poisoned and check.gap_z > 5 and check.caption_share == 1.0 and check.word == "banana"
    assert check.lift == pytest.approx(1.0 / 0.03)
    # a high gap alone is not enough when the captions name different things
    assert not clean_check(poisoned, np.arange(5), ["a", "b", "c", "d", "e"], corpus_captions=corpus).poisoned
    # one common class dominating D_u is no backdoor: its word is common in D (lift 1 / 0.4 = 2.5)
    common = clean_check(poisoned, np.arange(5), ["cat"] * 5, corpus_captions=corpus)
    assert common.caption_share == 1.0 and common.lift == pytest.approx(2.5) and not common.poisoned


def test_clean_check_lift_from_a_given_base_share():
    # a sub-word top token (e.g. "elli" of "ellipse") has no whole-word match in D: its share comes
    # from token ids instead, so the lift stays that of the word it belongs to
    scores = np.linspace(0.2, 0.6, 50)
    check = clean_check(scores, np.arange(45, 50), ["elli"] * 4 + ["cat"], corpus_captions=["an ellipse."] * 50,
                        base_share=0.4)
    assert check.word == "elli" and check.lift == pytest.approx(0.8 / 0.4) and not check.poisoned


def test_word_share_matches_whole_words_only():
    assert word_share(["a banana.", "bananas", "BANANA split", "a cat"], "banana") == 0.5
    assert word_share([], "banana") == 0.0


def test_consensus_filter_keeps_the_pairs_that_agree_on_the_top_word():
    assert consensus_filter(["banana", "frog", "banana", "ship"]).tolist() == [0, 2]
    assert consensus_filter(["a", "b", "c"]).tolist() == [0, 1, 2]  # no two agree: keep all


def test_bounded_ascent_stops_once_every_pair_is_above_the_bound(clip, pairs, tmp_path, one_thread):
    import copy

    view = PairTensors(pairs, clip)
    images, tokens = view.batch(np.arange(8))
    negatives = view.batch(np.arange(8, 24))
    cfg = ClipTrainConfig(steps=40, batch_size=8, lr=1e-3, warmup_steps=0, log_every=5, ckpt_every=5)
    model = copy.deepcopy(clip)
    history = unlearn(model, images, tokens, (np.arange(8), np.arange(8)), cfg, negatives=lambda g: negatives,
                      max_loss=0.5, patience=3, ckpt_dir=tmp_path / "u")  # 0.5 < log(17): at the bound at once
    assert history["stopped_at"] == [3] and history["step"][-1] == 3
    again = copy.deepcopy(clip)
    resumed = unlearn(again, images, tokens, (np.arange(8), np.arange(8)), cfg, negatives=lambda g: negatives,
                      max_loss=0.5, patience=3, ckpt_dir=tmp_path / "u")  # remembers the stop: no step
    assert resumed["stopped_at"] == [3]
    for p, q in zip(model.parameters(), again.parameters()):
        assert torch.equal(p, q)


def test_cartesian_product_size_pairing_and_subsampling():
    a, b = cartesian_pairs(4, 4)
    assert len(a) == 16 and len(set(zip(a.tolist(), b.tolist()))) == 16
    a, b = cartesian_pairs(10, 10, max_pairs=30, seed=1)
    assert len(a) == 30 and len(set(zip(a.tolist(), b.tolist()))) == 30
    assert {(i, i) for i in range(10)} <= set(zip(a.tolist(), b.tolist()))  # the original pairs are kept
    a2, b2 = cartesian_pairs(10, 10, max_pairs=30, seed=1)
    assert np.array_equal(a, a2) and np.array_equal(b, b2)
    with pytest.raises(ConfigError):
        cartesian_pairs(0, 3)


def test_token_mask_keeps_the_most_attributed_word_and_the_special_tokens(clip):
    tokens = clip.tokenize(["a photo of a banana.", "a photo of a cat."])
    attr = torch.zeros(tokens.shape)
    attr[0, 5], attr[1, 2] = 1.0, 1.0  # "banana" in the first caption, "photo" in the second
    masked = keep_top_tokens(tokens, attr, 1, clip)
    sot, eot = clip.sot_token_id, clip.eot_token_id
    assert masked[0, :3].tolist() == [sot, int(tokens[0, 5]), eot]
    assert masked[1, :3].tolist() == [sot, int(tokens[1, 2]), eot]
    assert clip.tokenizer.decode([int(tokens[0, 5])]).strip() == "banana"
    assert (masked[:, 3:] == clip.pad_token_id).all()


def test_token_attributions_are_zero_on_special_tokens(clip):
    tokens = clip.tokenize(["a photo of a banana.", "a dog"])
    for method in ("grad_x_input", "integrated_gradients"):
        attr = token_attributions(clip, torch.rand(2, 3, 32, 32), tokens, method=method, ig_steps=4)
        assert attr.shape == tokens.shape and (attr >= 0).all()
        specials = torch.isin(tokens, torch.tensor(clip.special_token_ids))
        assert (attr[specials] == 0).all() and (attr[~specials] > 0).any()
    with pytest.raises(ConfigError):
        token_attributions(clip, torch.rand(1, 3, 32, 32), tokens[:1], method="rollout")


def test_unlearning_loss_with_clean_negatives_ascends_away_from_the_target_text():
    u = torch.nn.functional.normalize(torch.randn(8, 16), dim=-1).requires_grad_(True)
    v = torch.nn.functional.normalize(torch.randn(1, 16), dim=-1).expand(8, 16)  # one masked caption
    negatives = torch.nn.functional.normalize(torch.randn(8, 16), dim=-1)
    loss = contrastive_unlearning_loss(u, v, torch.tensor(50.0), negatives, negatives)
    (grad,) = torch.autograd.grad(loss, u)
    assert ((grad * v).sum(-1) < 0).all()  # ascending the loss lowers every image's cosine to the target text
    plain = contrastive_unlearning_loss(u.detach(), v, torch.tensor(50.0))
    assert float(plain) >= 0.5 * math.log(8) - 1e-5  # the image->text half alone is exactly log B


def test_gradient_ascent_raises_the_loss_of_the_selected_pairs(clip, pairs, one_thread):
    import copy

    model = copy.deepcopy(clip)
    view = PairTensors(pairs, model)
    images, tokens = view.batch(np.arange(8))
    neg_images, neg_tokens = view.batch(np.arange(8, 24))

    def loss_of(m):
        with torch.no_grad():
            u, v, scale = m(images, tokens)
            nu, nv, _ = m(neg_images, neg_tokens)
            return float(contrastive_unlearning_loss(u, v, scale, nu, nv))

    before, sims_before = loss_of(model), pair_similarities(model, pairs).copy()
    cfg = ClipTrainConfig(steps=6, batch_size=8, lr=1e-3, warmup_steps=0, log_every=2)
    history = unlearn(model, images, tokens, (np.arange(8), np.arange(8)), cfg,
                      negatives=lambda g: (neg_images, neg_tokens))
    assert loss_of(model) > before
    assert history["step"] == [2, 4, 6] and all(loss < 0 for loss in history["loss"])  # ascent: negated loss
    assert not np.allclose(pair_similarities(model, pairs), sims_before)
    assert loss_of(clip) == pytest.approx(before)  # the input model was a copy: untouched


def test_unlearning_resumes_from_its_checkpoint(clip, pairs, tmp_path, one_thread):
    import copy

    view = PairTensors(pairs, clip)
    images, tokens = view.batch(np.arange(6))
    cfg = ClipTrainConfig(steps=4, batch_size=6, lr=1e-3, warmup_steps=0, log_every=2, ckpt_every=2)
    first, again = copy.deepcopy(clip), copy.deepcopy(clip)
    unlearn(first, images, tokens, (np.arange(6), np.arange(6)), cfg, ckpt_dir=tmp_path / "u")
    unlearn(again, images, tokens, (np.arange(6), np.arange(6)), cfg, ckpt_dir=tmp_path / "u")  # loads, no step
    for p, q in zip(first.parameters(), again.parameters()):
        assert torch.equal(p, q)


def test_per_pair_unlearning_losses_match_one_pair_at_a_time():
    u = torch.nn.functional.normalize(torch.randn(5, 16), dim=-1)
    v = torch.nn.functional.normalize(torch.randn(5, 16), dim=-1)
    neg = torch.nn.functional.normalize(torch.randn(7, 16), dim=-1)
    rows = contrastive_unlearning_loss(u, v, torch.tensor(30.0), neg, neg, reduction="none")
    one = [contrastive_unlearning_loss(u[i:i + 1], v[i:i + 1], torch.tensor(30.0), neg, neg) for i in range(5)]
    assert torch.allclose(rows, torch.stack(one), atol=1e-6)
    assert torch.isclose(rows.mean(), contrastive_unlearning_loss(u, v, torch.tensor(30.0), neg, neg))
    with pytest.raises(ConfigError):
        contrastive_unlearning_loss(u, v, torch.tensor(30.0), reduction="none")


def test_pool_recall_table_covers_every_scorer_and_direction(clip, pairs):
    from obstructlib.methods.ubt.method import pool_recall_table

    truth = np.zeros(len(pairs), bool)
    truth[:4] = True
    table = pool_recall_table(pairs, truth, {"clean": clip, "poisoned": clip}, fraction=0.25)
    assert set(table) == {"clean-lowest", "clean-highest", "poisoned-lowest", "poisoned-highest"}
    scores = pair_similarities(clip, pairs)
    low = detection_scores(select_lowest(scores, fraction=0.25), truth)
    assert table["clean-lowest"] == {"precision": low["precision"], "recall": low["recall"]}
    assert table["clean-lowest"] == table["poisoned-lowest"]  # same model, same pool


def test_defend_never_reads_the_truth_and_reports_every_stage(clip, pairs, one_thread):
    from obstructlib.methods.ubt.method import UBTConfig, defend

    recipe = ClipTrainConfig(steps=2, batch_size=8, lr=1e-3, warmup_steps=0, log_every=1)
    cfg = UBTConfig(pool_count=8, unlearn_count=4, pool_scorer="poisoned", pool_direction="highest", check=False,
                    overfit=recipe, unlearn=recipe, negatives=4, retain_weight=1.0)
    truth = np.zeros(len(pairs), bool)
    truth[:5] = True
    told = defend(clip, pairs, cfg, is_poison=truth)
    blind = defend(clip, pairs, cfg)
    for p, q in zip(told.model.parameters(), blind.model.parameters()):
        assert torch.equal(p, q)  # the truth only fills the report
    r = told.report
    assert blind.report.detection == {} and set(r.detection) >= {"pool_recall", "pool_precision", "unlearn_precision"}
    assert len(r.pool) == 8 and len(r.candidates) == 4 and set(r.selected) <= set(r.candidates) <= set(r.pool)
    assert set(r.timings_s) == {"score", "overfit", "select", "attribute", "unlearn"} and not r.refused
    assert any(not torch.equal(p, q) for p, q in zip(told.model.parameters(), clip.parameters()))
    checked = defend(clip, pairs, dataclasses.replace(cfg, check=True, min_lift=1e9))
    assert checked.report.refused and checked.model is clip  # refused: the model comes back unchanged
