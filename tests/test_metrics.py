"""Metrics against hand-computed cases (every expected number below is worked out by hand)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from obstructlib.errors import ConfigError
from obstructlib.metrics import (
    accuracy,
    attack_success_rate,
    chance_retrieval,
    kl_divergence,
    median_rank,
    per_class_accuracy,
    retrieval_metrics,
    retrieval_ranks,
    subset_accuracy,
    topk_accuracy,
    zero_shot_accuracy,
)

# ----------------------------------------------------------------------------- classification


def test_accuracy_logits_and_preds_agree():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 0.0, 5.0], [4.0, 0.0, 0.0]])
    targets = torch.tensor([0, 1, 1, 2])  # argmax = 0, 1, 2, 0 -> 2 of 4 right
    assert accuracy(logits, targets) == 0.5
    assert accuracy(torch.tensor([0, 1, 2, 0]), targets) == 0.5
    assert accuracy(np.array([0, 1, 2, 0]), [0, 1, 1, 2]) == 0.5  # numpy and lists work too


def test_accuracy_bad_inputs():
    with pytest.raises(ConfigError):
        accuracy(torch.tensor([]), torch.tensor([]))
    with pytest.raises(ConfigError):
        accuracy(torch.tensor([0, 1]), torch.tensor([0, 1, 2]))
    with pytest.raises(ConfigError):
        accuracy(torch.zeros(2, 3, 4), torch.tensor([0, 1]))


def test_subset_accuracy_uses_true_labels_only():
    preds = [0, 1, 2, 2, 3, 1]
    targets = [0, 2, 2, 1, 3, 3]
    # true label in {2, 3}: samples 1 (pred 1, wrong), 2 (right), 4 (right), 5 (pred 1, wrong) -> 2/4
    assert subset_accuracy(preds, targets, classes=[2, 3]) == 0.5
    # sample 3 is predicted 2 but its true label 1 is outside the subset: it does not count
    assert subset_accuracy(preds, targets, classes=[0]) == 1.0
    logits = torch.nn.functional.one_hot(torch.tensor(preds), 4).float()
    assert subset_accuracy(logits, targets, classes=[2, 3]) == 0.5
    with pytest.raises(ConfigError):
        subset_accuracy(preds, targets, classes=[7])


def test_per_class_accuracy_nan_for_absent_class():
    out = per_class_accuracy([0, 1, 1, 2], [0, 0, 1, 1], num_classes=4)
    # class 0: 1/2, class 1: 1/2 (pred 2 wrong), classes 2 and 3: no sample
    assert out[:2].tolist() == [0.5, 0.5]
    assert np.isnan(out[2]) and np.isnan(out[3])
    with pytest.raises(ConfigError):
        per_class_accuracy([0], [5], num_classes=3)


def test_topk_accuracy():
    logits = torch.tensor([[0.1, 0.5, 0.4], [0.7, 0.2, 0.1], [0.2, 0.3, 0.5]])
    targets = torch.tensor([2, 1, 0])
    # sample 0: order 1,2,0 -> target at place 2; sample 1: 0,1,2 -> place 2; sample 2: 2,1,0 -> place 3
    assert topk_accuracy(logits, targets, 1) == 0.0
    assert topk_accuracy(logits, targets, 2) == pytest.approx(2 / 3)
    assert topk_accuracy(logits, targets, 3) == 1.0
    with pytest.raises(ConfigError):
        topk_accuracy(logits, targets, 4)


def test_zero_shot_accuracy_is_cosine_and_normalises():
    classes = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # raw scale must not matter: image 0 is (10, 1) -> class 0; image 1 (1, 2) -> class 1; image 2 (3, 2) -> class 0
    images = torch.tensor([[10.0, 1.0], [1.0, 2.0], [3.0, 2.0]])
    labels = torch.tensor([0, 1, 1])
    assert zero_shot_accuracy(images, classes * 7.0, labels) == pytest.approx(2 / 3)
    assert zero_shot_accuracy(images, classes, labels, topk=2) == 1.0
    assert zero_shot_accuracy(images, classes, labels, chunk_size=1) == pytest.approx(2 / 3)


def test_attack_success_rate_exclusion_rule():
    preds = [9, 9, 9, 1, 9, 2]
    true = [0, 9, 9, 1, 3, 2]
    assert attack_success_rate(preds, 9) == pytest.approx(4 / 6)  # every sample counts
    # two samples already are class 9: left out -> hits among [0, 1, 3, 2] are samples 0 and 4 -> 2/4
    assert attack_success_rate(preds, 9, true_labels=true) == 0.5
    logits = torch.nn.functional.one_hot(torch.tensor(preds), 10).float()
    assert attack_success_rate(logits, 9, true_labels=true) == 0.5
    with pytest.raises(ConfigError):
        attack_success_rate([9, 9], 9, true_labels=[9, 9])


def test_kl_divergence_hand_case():
    logits = torch.randn(5, 7)
    assert kl_divergence(logits, logits.clone()) == pytest.approx(0.0, abs=1e-12)
    # P = (1/2, 1/2) from logits (0, 0); Q = (1/4, 3/4) from logits (0, ln 3)
    # KL = 1/2 ln(2) + 1/2 ln(2/3) = 1/2 ln(4/3)
    p, q = torch.zeros(1, 2, dtype=torch.float64), torch.tensor([[0.0, math.log(3.0)]], dtype=torch.float64)
    assert kl_divergence(p, q) == pytest.approx(0.5 * math.log(4 / 3), rel=1e-9)
    # reverse direction: 1/4 ln(1/2) + 3/4 ln(3/2)
    assert kl_divergence(q, p) == pytest.approx(0.25 * math.log(0.5) + 0.75 * math.log(1.5), rel=1e-9)
    both_p, both_q = torch.cat([p, p]), torch.cat([q, p])
    assert kl_divergence(both_p, both_q, reduction="sum") == pytest.approx(0.5 * math.log(4 / 3), rel=1e-9)
    assert kl_divergence(both_p, both_q, reduction="mean") == pytest.approx(0.25 * math.log(4 / 3), rel=1e-9)
    assert kl_divergence(both_p, both_q, reduction="none").shape == (2,)
    # confident logits stay finite thanks to log_softmax
    assert math.isfinite(kl_divergence(torch.tensor([[1000.0, -1000.0]]), torch.tensor([[-1000.0, 1000.0]])))
    with pytest.raises(ConfigError):
        kl_divergence(torch.zeros(2, 3), torch.zeros(2, 4))


# ----------------------------------------------------------------------------- retrieval


def _from_similarity(sim: list[list[float]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Features whose raw dot products equal ``sim`` (images = identity, captions = columns)."""
    s = torch.tensor(sim, dtype=torch.float32)
    return torch.eye(s.shape[0]), s.T.contiguous()


def test_retrieval_three_images_two_captions():
    sim = [  # rows: images 0..2; columns: captions 0..5, captions 2i and 2i+1 belong to image i
        [0.9, 0.1, 0.8, 0.3, 0.2, 0.0],
        [0.7, 0.2, 0.6, 0.5, 0.9, 0.1],
        [0.1, 0.3, 0.2, 0.8, 0.4, 0.5],
    ]
    img, txt = _from_similarity(sim)
    ids = [0, 0, 1, 1, 2, 2]
    i2t, t2i = retrieval_ranks(img, txt, ids, normalize=False)
    # image 0: best own caption 0.9, nothing above -> 0
    # image 1: best own 0.6 (caption 2); wrong captions 0.7 and 0.9 above -> 2
    # image 2: best own 0.5 (caption 5); wrong 0.8 above -> 1
    assert i2t.tolist() == [0, 2, 1]
    # caption columns: c0 [.9,.7,.1] own .9 -> 0; c1 [.1,.2,.3] own .1 -> 2; c2 [.8,.6,.2] own .6 -> 1
    # c3 [.3,.5,.8] own .5 -> 1; c4 [.2,.9,.4] own .4 -> 1; c5 [0,.1,.5] own .5 -> 0
    assert t2i.tolist() == [0, 2, 1, 1, 1, 0]
    m = retrieval_metrics(img, txt, ids, ks=(1, 2, 5), normalize=False)
    assert (
        m["i2t_r1"] == pytest.approx(100 / 3) and m["i2t_r2"] == pytest.approx(200 / 3) and m["i2t_r5"] == 100
    )
    assert (
        m["t2i_r1"] == pytest.approx(100 / 3) and m["t2i_r2"] == pytest.approx(500 / 6) and m["t2i_r5"] == 100
    )
    assert m["medr_i2t"] == 2.0  # median(0, 2, 1) = 1 -> 1 + 1
    assert m["medr_t2i"] == 2.0  # median(0, 0, 1, 1, 1, 2) = 1 -> 2


def test_retrieval_five_captions_per_image_ties_and_floor():
    sim = [  # 2 images x 10 captions; captions 0-4 belong to image 0, 5-9 to image 1
        [0.2, 0.1, 0.3, 0.0, 0.1, 0.5, 0.4, 0.25, 0.0, 0.35],
        [0.1, 0.2, 0.5, 0.0, 0.0, 0.6, 0.1, 0.2, 0.3, 0.0],
    ]
    img, txt = _from_similarity(sim)
    ids = [0] * 5 + [1] * 5
    m = retrieval_metrics(img, txt, ids, normalize=False)
    # i2t: image 0 best own 0.3, wrong 0.5, 0.4, 0.35 above -> 3; image 1 best own 0.6 -> 0
    assert m["i2t_r1"] == 50.0 and m["i2t_r5"] == 100.0 and m["i2t_r10"] == 100.0
    assert m["medr_i2t"] == 2.0  # median(3, 0) = 1.5 -> floor 1 -> 2
    # t2i ranks (own vs other image): c0 .2>.1 ->0, c1 .1<.2 ->1, c2 .3<.5 ->1, c3 .0=.0 TIE, c4 ->0,
    # c5 .6>.5 ->0, c6 .1<.4 ->1, c7 .2<.25 ->1, c8 .3>0 ->0, c9 0<.35 ->1
    # pessimistic: tie -> 1: ranks 0,1,1,1,0,0,1,1,0,1 -> R@1 = 40 %, median 1 -> medr 2
    assert m["t2i_r1"] == 40.0 and m["t2i_r5"] == 100.0 and m["medr_t2i"] == 2.0
    opt = retrieval_metrics(img, txt, ids, normalize=False, ties="optimistic")
    # optimistic: tie -> 0: five 0s and five 1s -> R@1 = 50 %, median 0.5 -> floor 0 -> medr 1
    assert opt["t2i_r1"] == 50.0 and opt["medr_t2i"] == 1.0
    assert opt["i2t_r1"] == 50.0  # no i2t ties here


def test_retrieval_ties_collapsed_embeddings():
    img, txt = torch.ones(4, 3), torch.ones(8, 3)  # every similarity equal
    ids = np.repeat(np.arange(4), 2)
    i2t, t2i = retrieval_ranks(img, txt, ids)
    assert (i2t == 8 - 2).all() and (t2i == 4 - 1).all()  # pessimistic: every wrong item first
    i2t, t2i = retrieval_ranks(img, txt, ids, ties="optimistic")
    assert (i2t == 0).all() and (t2i == 0).all()
    with pytest.raises(ConfigError):
        retrieval_ranks(img, txt, ids, ties="random")


def test_retrieval_chunked_equals_unchunked():
    g = torch.Generator().manual_seed(0)
    img, txt = torch.randn(37, 16, generator=g), torch.randn(37 * 3, 16, generator=g)
    ids = torch.arange(37).repeat_interleave(3)
    full = retrieval_ranks(img, txt, ids, chunk_size=10_000)
    for chunk in (1, 5, 64):
        part = retrieval_ranks(img, txt, ids, chunk_size=chunk)
        assert np.array_equal(full[0], part[0]) and np.array_equal(full[1], part[1])
    # numpy features and an unsorted caption order give the same metrics
    perm = torch.randperm(len(ids), generator=g)
    a = retrieval_metrics(img, txt, ids)
    b = retrieval_metrics(img.numpy(), txt[perm].numpy(), ids[perm].numpy(), chunk_size=7)
    assert a == b


def test_retrieval_bad_inputs():
    img, txt = torch.randn(3, 4), torch.randn(6, 4)
    with pytest.raises(ConfigError):
        retrieval_metrics(img, txt, [0, 0, 1, 1, 2])  # one id short
    with pytest.raises(ConfigError):
        retrieval_metrics(img, txt, [0, 0, 1, 1, 2, 3])  # id out of range
    with pytest.raises(ConfigError):
        retrieval_metrics(img, txt, [0, 0, 1, 1, 0, 1])  # image 2 has no caption
    with pytest.raises(ConfigError):
        retrieval_metrics(img, torch.randn(6, 5), [0, 0, 1, 1, 2, 2])
    with pytest.raises(ConfigError):
        retrieval_metrics(img, txt, [0, 0, 1, 1, 2, 2], ks=(0,))


def test_median_rank_convention():
    assert median_rank([0, 3]) == 2.0  # median 1.5 -> floor 1 -> 2
    assert median_rank([4]) == 5.0
    assert median_rank([0, 1, 2, 3]) == 2.0  # median 1.5


def test_chance_retrieval_hand_values():
    m = chance_retrieval(100, 5, ks=(1, 5))
    # N = 100 images, c = 5, N_txt = 500. t2i R@1 = 1/100; i2t R@1 = 1 - C(495,1)/C(500,1) = 5/500
    assert m["t2i_r1"] == pytest.approx(1.0) and m["i2t_r1"] == pytest.approx(1.0)
    # i2t R@5 = 1 - (495*494*493*492*491) / (500*499*498*497*496)
    expected = 1 - (495 * 494 * 493 * 492 * 491) / (500 * 499 * 498 * 497 * 496)
    assert m["i2t_r5"] == pytest.approx(100 * expected) and m["t2i_r5"] == pytest.approx(5.0)
    # t2i medr: uniform rank on 0..99, median 49.5 -> floor 49 -> 50
    assert m["medr_t2i"] == 50.0

    # i2t medr: smallest r with P(rank <= r) >= 1/2, P(rank >= r) = C(500-r, 5)/C(500, 5); r = 64 -> 65
    def survival(r: int) -> float:
        return math.comb(500 - r, 5) / math.comb(500, 5)

    assert survival(64) > 0.5 >= survival(65) and m["medr_i2t"] == 65.0
    # 2 images x 2 captions: P(rank >= 1) = C(3,2)/C(4,2) = 1/2 exactly -> median 0.5 -> medr 1
    tiny = chance_retrieval(2, 2, ks=(1, 4))
    assert tiny["medr_i2t"] == 1.0 and tiny["i2t_r1"] == 50.0 and tiny["i2t_r4"] == 100.0
    assert chance_retrieval(3, 1, ks=(1,))["medr_t2i"] == 2.0  # uniform on 0, 1, 2 -> median 1
    # MEM spec sanity: 1000 x 5 -> 0.1 / 0.5 / 1.0 %, medr about 500 (t2i) and 650 (i2t)
    big = chance_retrieval(1000, 5)
    assert big["t2i_r10"] == pytest.approx(1.0) and big["i2t_r10"] == pytest.approx(1.0, abs=0.01)
    assert big["medr_t2i"] == 500.0 and 640 <= big["medr_i2t"] <= 655
    with pytest.raises(ConfigError):
        chance_retrieval(0, 5)


def test_chance_matches_random_features():
    # captions are one-hot, images Gaussian: every ranking is exchangeable, i.e. exactly random
    g = torch.Generator().manual_seed(1)
    n, c = 60, 5
    ids = torch.arange(n).repeat_interleave(c)
    runs = [
        retrieval_metrics(torch.randn(n, n * c, generator=g), torch.eye(n * c), ids, ks=(10,))
        for _ in range(30)
    ]
    chance = chance_retrieval(n, c, ks=(10,))
    for key in ("i2t_r10", "t2i_r10"):
        assert np.mean([r[key] for r in runs]) == pytest.approx(chance[key], abs=2.5)
