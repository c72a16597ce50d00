"""UBT's comparison baselines: FT, CleanCLIP, RoCLIP and ABL on a tiny CPU CLIP."""

from __future__ import annotations

import copy
import dataclasses
from collections import Counter

import numpy as np
import pytest
import torch

from obstructlib.data.captions import CaptionDataset
from obstructlib.engine import ClipTrainConfig
from obstructlib.errors import ConfigError
from obstructlib.methods.ubt import baselines as bl
from obstructlib.methods.ubt.steps import PairTensors, _info_nce, pair_similarities, select_highest
from obstructlib.models.clip import create_clip
from obstructlib.primitives.augment import simclr_augment

CLASSES = ["cat", "dog", "truck", "ship"]


@pytest.fixture(scope="module")
def clip():
    torch.manual_seed(0)
    return create_clip("tiny-rn", context_length=16)


@pytest.fixture(scope="module")
def pairs():
    rng = np.random.default_rng(0)
    labels = np.arange(64) % len(CLASSES)
    captions = [f"a photo of a {CLASSES[y]}." for y in labels]
    images = rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
    return CaptionDataset(images, captions, np.arange(64), labels=labels, classes=CLASSES)


def _recipe(steps: int = 2, batch: int = 8, lr: float = 1e-3, **kw) -> ClipTrainConfig:
    return ClipTrainConfig(steps=steps, batch_size=batch, lr=lr, warmup_steps=0, log_every=1, **kw)


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _params_differ(model, state) -> bool:
    return any(not torch.equal(p.detach(), state[n]) for n, p in model.named_parameters())


# ---- eda ----------------------------------------------------------------------------------------------
def test_eda_is_seeded_never_empty_and_keeps_the_captions_words():
    captions = ["a photo of a cat.", "cat.", "a big red truck on the road", "two  ships"]
    kinds = set()
    for caption in captions:
        words = Counter(caption.split())
        for seed in range(40):
            out = bl.eda(caption, np.random.default_rng(seed), 0.2)
            assert out == bl.eda(caption, np.random.default_rng(seed), 0.2)
            assert out.strip()
            got = Counter(out.split())
            assert set(got) <= set(words)
            n = max(1, round(0.2 * sum(words.values())))
            if got == words:
                kinds.add("swap")
            elif got <= words:
                kinds.add("delete")
                assert sum(words.values()) - sum(got.values()) <= n
            else:
                assert got >= words and sum(got.values()) - sum(words.values()) == n
                kinds.add("insert")
    assert kinds == {"swap", "delete", "insert"}
    rng = np.random.default_rng(0)
    assert any(bl.eda("a photo of a cat.", rng) != "a photo of a cat." for _ in range(20))
    for alpha in (-0.1, 1.5, float("nan")):
        with pytest.raises(ConfigError):
            bl.eda("a cat", rng, alpha)
    with pytest.raises(ConfigError):
        bl.eda("   ", rng)


# ---- configs --------------------------------------------------------------------------------------------
def test_default_recipes_follow_the_papers():
    cc, ab = bl.CleanCLIPConfig().train, bl.ABLConfig().train
    assert (cc.steps, cc.epochs, cc.batch_size, cc.lr, cc.warmup_steps, cc.weight_decay, cc.betas, cc.eps) == \
        (None, 10, 64, 1e-5, 50, 0.1, (0.9, 0.999), 1e-8)
    assert (ab.steps, ab.epochs, ab.batch_size, ab.lr, ab.warmup_steps) == (None, 10, 64, 1e-6, 0)
    assert bl.ABLConfig().isolate_fraction == 0.01 and bl.RoCLIPConfig(train=cc).break_every == 2


@pytest.mark.parametrize("make", [
    lambda: bl.ABLConfig(isolate_fraction=-0.1),
    lambda: bl.ABLConfig(isolate_fraction=0.0),
    lambda: bl.ABLConfig(isolate_fraction=1.5),
    lambda: bl.ABLConfig(isolate_count=0),
    lambda: bl.ABLConfig(negatives=-1),
    lambda: bl.RoCLIPConfig(train=_recipe(), pool_size=0),
    lambda: bl.RoCLIPConfig(train=_recipe(), break_every=0),
    lambda: bl.RoCLIPConfig(train=_recipe(), nn_query="caption"),
    lambda: bl.CleanCLIPConfig(inmodal_weight=-1.0),
    lambda: bl.CleanCLIPConfig(clip_weight=-0.5),
    lambda: bl.CleanCLIPConfig(inmodal_weight=0.0, clip_weight=0.0),
    lambda: bl.CleanCLIPConfig(eda_alpha=-0.1),
    lambda: bl.CleanCLIPConfig(train=_recipe(lr=-1.0)),
])
def test_bad_configs_raise_config_error(make):
    with pytest.raises(ConfigError):
        make().validate()


def test_baselines_validate_before_training(clip, pairs):
    with pytest.raises(ConfigError):
        bl.abl(clip, pairs, bl.ABLConfig(isolate_fraction=-0.5, train=_recipe()))
    with pytest.raises(ConfigError):
        bl.roclip(clip, pairs, bl.RoCLIPConfig(train=_recipe(), pool_size=0))


# ---- every baseline: a new model, deterministic, resumable ------------------------------------------------
def _run(name, model, pairs, ckpt_dir=None):
    if name == "finetune":
        return bl.finetune_clean(model, pairs, _recipe(), ckpt_dir=ckpt_dir)
    if name == "cleanclip":
        return bl.cleanclip(model, pairs, bl.CleanCLIPConfig(train=_recipe()), ckpt_dir=ckpt_dir)
    if name == "roclip":
        return bl.roclip(model, pairs, bl.RoCLIPConfig(train=_recipe(), pool_size=16, break_every=1),
                         ckpt_dir=ckpt_dir)
    return bl.abl(model, pairs, bl.ABLConfig(isolate_count=8, negatives=4, train=_recipe()), ckpt_dir=ckpt_dir)[0]


@pytest.mark.parametrize("name", ["finetune", "cleanclip", "roclip", "abl"])
def test_baseline_returns_a_new_deterministic_resumable_model(name, clip, pairs, tmp_path, monkeypatch):
    before = _state(clip)
    first = _run(name, clip, pairs, tmp_path / "ckpt")
    assert first is not clip and _params_differ(first, before)
    assert _same(_state(clip), before)  # the input is untouched
    result = _state(first)
    # a second call finds the finished run's checkpoint: it loads it and trains no further
    calls = []
    real = bl._features
    monkeypatch.setattr(bl, "_features", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = _run(name, clip, pairs, tmp_path / "ckpt")
    assert calls == [] and _same(_state(again), result)
    monkeypatch.undo()
    # the same seed without checkpoints gives the same model (checkpointing changes nothing)
    assert _same(_state(_run(name, clip, pairs)), result)


# ---- CleanCLIP ------------------------------------------------------------------------------------------------
def test_cleanclip_without_inmodal_term_is_finetuning_and_with_it_differs(clip, pairs):
    recipe = _recipe(steps=2)
    ft = _state(bl.finetune_clean(clip, pairs, recipe))
    plain = bl.cleanclip(clip, pairs, bl.CleanCLIPConfig(train=recipe, inmodal_weight=0.0))
    assert _same(_state(plain), ft)
    full = bl.cleanclip(clip, pairs, bl.CleanCLIPConfig(train=recipe, inmodal_weight=1.0))
    assert not _same(_state(full), ft)


def test_cleanclip_inmodal_term_is_positive_and_lower_for_identical_views(clip, pairs):
    view = PairTensors(pairs, clip)
    images, tokens = view.batch(np.arange(8))
    generator = torch.Generator().manual_seed(0)
    aug = simclr_augment(images, generator)
    rng = bl._eda_rng(generator)
    aug_tokens = clip.tokenize([bl.eda(pairs.captions[i], rng) for i in range(8)])
    model = copy.deepcopy(clip).eval()
    with torch.no_grad():
        clip_term, inmodal = bl._cleanclip_terms(model, images, tokens, aug, aug_tokens, torch.device("cpu"), False)
        assert clip_term > 0 and inmodal > 0
        # the in-modal InfoNCE is one cross-entropy per modality: a view of itself scores lower
        _, self_term = bl._cleanclip_terms(model, images, tokens, images, tokens, torch.device("cpu"), False)
    assert self_term < inmodal


# ---- RoCLIP ----------------------------------------------------------------------------------------------------
def test_nn_texts_returns_the_nearest_bank_rows_by_cosine_skipping_the_own_pair():
    bank = torch.tensor([[5.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 2.0], [0.7, 0.7, 0.0]])
    queries = torch.tensor([[1.0, 0.1, 0.0], [0.1, 0.2, 3.0], [0.6, 0.8, 0.0]])
    # cosine, not dot product: query 2 would take the long row 0 by dot product (3.0 > 0.98)
    assert torch.equal(bl._nn_texts(bank, queries), bank[[0, 2, 3]])
    ids = torch.tensor([10, 11, 12, 13])
    got = bl._nn_texts(bank, queries, ids, torch.tensor([10, 5, 13]))
    assert torch.equal(got, bank[[3, 2, 1]])  # query 0 and 2 may not take their own pair's row
    assert not bl._nn_texts(bank.requires_grad_(True), queries).requires_grad


def test_break_epochs_are_the_odd_zero_based_epochs():
    assert [bl._break_epoch(e, 2) for e in range(5)] == [False, True, False, True, False]
    assert all(bl._break_epoch(e, 1) for e in range(4))
    assert [bl._break_epoch(e, 3) for e in range(6)] == [False, False, True, False, False, True]


def test_roclip_uses_the_bank_in_break_epochs_and_resumes_exactly(clip, pairs, tmp_path, monkeypatch):
    # 64 pairs, batch 16: 4 steps an epoch; steps 4 and 5 lie in break epoch 1; checkpoints at 3 and 6
    cfg = bl.RoCLIPConfig(train=_recipe(steps=6, batch=16, ckpt_every=3), pool_size=32)
    lookups = []
    real = bl._nn_texts
    monkeypatch.setattr(bl, "_nn_texts", lambda *a: lookups.append(a[1].shape[0]) or real(*a))
    whole = _state(bl.roclip(clip, pairs, cfg))
    assert lookups == [16, 16]

    def crash(*_a):
        raise RuntimeError("interrupted")

    monkeypatch.setattr(bl, "_nn_texts", crash)  # dies at step 4, after the checkpoint of step 3
    with pytest.raises(RuntimeError):
        bl.roclip(clip, pairs, cfg, ckpt_dir=tmp_path / "ckpt")
    monkeypatch.setattr(bl, "_nn_texts", real)
    resumed = bl.roclip(clip, pairs, cfg, ckpt_dir=tmp_path / "ckpt")
    assert _same(_state(resumed), whole)  # the bank was rebuilt exactly at the resumed step


def test_roclip_plain_epochs_are_plain_clip_finetuning(clip, pairs):
    recipe = _recipe(steps=3, batch=16)
    never = bl.roclip(clip, pairs, bl.RoCLIPConfig(train=recipe, pool_size=16, break_every=100))
    assert _same(_state(never), _state(bl.finetune_clean(clip, pairs, recipe)))
    text_query = bl.roclip(clip, pairs, bl.RoCLIPConfig(train=recipe, pool_size=16, break_every=1, nn_query="text"))
    assert not _same(_state(text_query), _state(never))


# ---- ABL --------------------------------------------------------------------------------------------------------
def _isolated_loss(model, view, index) -> float:
    """The CLIP loss of the pairs ``index`` as one batch, as the ascent sees it (train-mode BatchNorm, on a copy:
    a random tiny ResNet's untouched running statistics make every eval-mode feature alike)."""
    images, tokens = view.batch(index)
    with torch.no_grad():
        u, v, scale = copy.deepcopy(model).train()(images, tokens)
        return float(_info_nce(u, v, scale))


def test_abl_isolates_the_best_fitted_pairs_and_ascends_their_loss(clip, pairs):
    probe = copy.deepcopy(clip)
    scores = pair_similarities(probe, pairs, "cpu")
    expected = select_highest(scores, count=8)
    seen = []

    def mask(tokens):
        seen.append(tokens.clone())
        return tokens

    cfg = bl.ABLConfig(isolate_count=8, train=_recipe(steps=3, batch=8, lr=1e-3))
    unlearned, isolated = bl.abl(clip, pairs, cfg, token_mask=mask)
    assert isolated.dtype == np.int64 and isolated.tolist() == expected.tolist()
    assert scores[isolated].min() >= np.delete(scores, isolated).max()
    view = PairTensors(pairs, clip)
    assert len(seen) == 1 and torch.equal(seen[0], view.tokens[torch.as_tensor(isolated)])
    assert _isolated_loss(unlearned, view, isolated) > _isolated_loss(probe, view, isolated) + 0.05
    fraction = bl.abl(clip, pairs, dataclasses.replace(cfg, isolate_count=None, isolate_fraction=0.1,
                                                       train=_recipe(steps=1)))[1]
    assert fraction.tolist() == select_highest(scores, fraction=0.1).tolist() and len(fraction) == 7


def test_abl_token_mask_must_keep_the_shape(clip, pairs):
    with pytest.raises(ConfigError):
        bl.abl(clip, pairs, bl.ABLConfig(isolate_count=4, train=_recipe(steps=1)), token_mask=lambda t: t[:, :3])
