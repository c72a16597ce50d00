"""Each paper's evaluation protocol (ob.uc.evaluate, ob.mem.evaluate, ob.ntp.evaluate) on tiny data."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import obstructlib as ob
from obstructlib.data import ArrayImageDataset, CaptionDataset, PerturbationStore
from obstructlib.engine import ClassifierTrainConfig, ClipTrainConfig
from obstructlib.errors import ConfigError
from obstructlib.models import create_model
from obstructlib.primitives.pruning import magnitude_masks


def shapes(n: int = 48, classes: int = 4, size: int = 8, seed: int = 0) -> ArrayImageDataset:
    """Class c is a bright square in corner c: learnable in a few epochs."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    img = rng.integers(0, 60, (n, size, size, 3)).astype(np.int64)
    for i, c in enumerate(labels):
        r, q = divmod(int(c), 2)
        img[i, r * 4:r * 4 + 4, q * 4:q * 4 + 4] += 150
    return ArrayImageDataset(np.clip(img, 0, 255).astype(np.uint8), labels, [str(c) for c in range(classes)])


def recipe(**kw) -> ClassifierTrainConfig:
    base = ClassifierTrainConfig(epochs=3, batch_size=16, lr=1e-2, optimizer="adam", scheduler="none",
                                 amp=False)
    return dataclasses.replace(base, **kw)


def uc_hacker(**kw) -> ob.uc.HackerConfig:
    base = ob.uc.HackerConfig(target_model="digits_cnn", augment=False, train=recipe(), seed=3)
    return dataclasses.replace(base, **kw)


def class_noise(train: ArrayImageDataset, eps: float = 16 / 255) -> PerturbationStore:
    """One +-eps pattern per class: the strongest shortcut a store can hold."""
    labels = torch.as_tensor(train.labels)
    store = PerturbationStore(int(labels.max()) + 1, tuple(train[0][0].shape), eps, mode="cluster",
                              assignments=labels)
    store.randomize(0)
    return store


# ---- UC ----------------------------------------------------------------------------------------
def test_uc_evaluate_is_one_seeded_hacker_and_the_store_changes_what_it_learns(tmp_path):
    train, test = shapes(), shapes(n=24, seed=1)
    clean = ob.uc.evaluate(train, uc_hacker(), test=test, device="cpu", progress=False)
    again = ob.uc.evaluate(train, uc_hacker(), test=test, device="cpu", progress=False)
    assert clean["curve"] == again["curve"] and len(clean["curve"]) == 3  # one hacker seed, one result
    assert clean["chance"] == 0.25 and clean["num_classes"] == 4 and clean["label_mapping"] == [0, 1, 2, 3]
    protected = ob.uc.evaluate(train, uc_hacker(), test=test, store=class_noise(train), device="cpu",
                               progress=False)
    assert protected["history"]["train_loss"] != clean["history"]["train_loss"]  # it trained on other images
    other_seed = ob.uc.evaluate(train, uc_hacker(seed=4), test=test, device="cpu", progress=False)
    # cfg.seed sets the initial weights
    assert other_seed["history"]["train_loss"] != clean["history"]["train_loss"]
    # resumable: a finished checkpoint gives the same row without training again
    first = ob.uc.evaluate(train, uc_hacker(), test=test, device="cpu", ckpt_dir=tmp_path / "h",
                           progress=False)
    resumed = ob.uc.evaluate(train, uc_hacker(), test=test, device="cpu", ckpt_dir=tmp_path / "h",
                             progress=False)
    assert resumed["history"] == first["history"]
    assert first["history"]["train_loss"] == clean["history"]["train_loss"]


def test_uc_evaluate_relabels_and_runs_the_batch_countermeasures():
    train, test = shapes(), shapes(n=24, seed=1)
    coarse = ob.uc.evaluate(train, uc_hacker(labels="random-2", train=recipe(epochs=1)), test=test,
                            device="cpu", progress=False)
    assert coarse["num_classes"] == 2 and coarse["chance"] == 0.5
    assert sorted(set(coarse["label_mapping"])) == [0, 1]
    for name in ("mixup", "adv", "jpeg"):
        row = ob.uc.evaluate(train, uc_hacker(countermeasure=name, train=recipe(epochs=1)), test=test,
                             device="cpu", progress=False)
        assert 0.0 <= row["test_acc"] <= 1.0 and row["train_acc"] is not None, name
    with pytest.raises(ConfigError, match="countermeasure"):
        ob.uc.evaluate(train, uc_hacker(countermeasure="strip"), test=test, device="cpu", progress=False)


# ---- MEM ---------------------------------------------------------------------------------------
def caption_pairs(num_images: int = 16, size: int = 16, seed: int = 0) -> CaptionDataset:
    rng = np.random.default_rng(seed)
    words = ["red", "blue", "green", "dark"]
    images = rng.integers(0, 256, size=(num_images, size, size, 3), dtype=np.uint8)
    caps = [f"a {words[i % 4]} thing" for i in range(num_images)]
    return CaptionDataset(images, caps, np.arange(num_images))


def mem_hacker(**kw) -> ob.mem.HackerConfig:
    base = ob.mem.HackerConfig(arch="tiny-rn", context_length=12, image_size=16,
                               train=ClipTrainConfig(steps=3, batch_size=8, lr=1e-3, warmup_steps=0,
                                                     log_every=1, amp=False), seed=0)
    return dataclasses.replace(base, **kw)


def test_mem_evaluate_trains_on_the_published_pairs_and_scores_clean_retrieval():
    train, test = caption_pairs(), caption_pairs(num_images=8, seed=1)
    clean = ob.mem.evaluate(train, mem_hacker(), test=test, device="cpu", progress=False)
    assert {"i2t_r1", "t2i_r1", "medr_i2t"} <= set(clean["metrics"]) and len(clean["history"]["loss"]) == 3
    store = PerturbationStore(len(train), (3, 16, 16), 8 / 255)
    store.randomize(0)
    model = clean["model"]
    triggers = torch.randint(300, 400, (len(train), 2))
    result = ob.mem.Result(store, triggers, np.arange(len(train)), [])
    protected = ob.mem.evaluate(train, mem_hacker(), test=test, protection=result, device="cpu",
                                progress=False)
    assert protected["history"]["loss"] != clean["history"]["loss"]  # other images and captions
    stripped = ob.mem.evaluate(train, mem_hacker(countermeasure="strip", strip_tokens=2), test=test,
                               protection=result, device="cpu", progress=False)
    assert stripped["history"]["loss"] != protected["history"]["loss"]  # strip changed the captions
    too_big = ob.mem.Result(store, torch.full((len(train), 2), model.vocab_size + 5), np.arange(len(train)),
                            [])
    with pytest.raises(ConfigError, match="vocabulary"):
        ob.mem.evaluate(train, mem_hacker(), test=test, protection=too_big, device="cpu", progress=False)


# ---- NTP ---------------------------------------------------------------------------------------
def tiny(num_classes: int = 4):
    torch.manual_seed(0)
    return create_model("digits_cnn", num_classes=num_classes, widths=(4, 8, 8), pool_size=1)


def test_ntp_evaluate_measures_every_row_on_the_same_budgets_and_resumes(tmp_path):
    s_train, s_test = shapes(seed=0), shapes(n=24, seed=1)
    t_train, t_test = shapes(n=64, seed=2), shapes(n=24, seed=3)
    source = tiny()
    released = tiny()
    masks = magnitude_masks(released.encoder, 0.5)
    cfg = ob.ntp.AttackConfig(arch="digits_cnn", ratios=(0.25, 1.0), curve=recipe(epochs=1),
                              source_finetune=recipe(epochs=1), seed=0)
    scores = ob.ntp.evaluate(released, cfg, masks=masks, source_model=source, source=(s_train, s_test),
                             target=(t_train, t_test), device="cpu", ckpt_dir=tmp_path, progress=False)
    assert set(scores["curves"]) == {"ratios", "scratch", "transfer", "masked", "dense"}
    assert all(len(scores["curves"][k]) == 2 for k in ("scratch", "transfer", "masked", "dense"))
    assert scores["slc_auc"]["masked"] is not None and scores["slc_auc"]["dense"] is not None
    assert 0 <= scores["source_acc"]["released"] <= 1 and scores["target_acc_released"] is not None
    assert (tmp_path / "curves.json").is_file()
    again = ob.ntp.evaluate(released, cfg, masks=masks, source_model=source, source=(s_train, s_test),
                            target=(t_train, t_test), device="cpu", ckpt_dir=tmp_path, progress=False)
    assert again["curves"] == scores["curves"]
    with pytest.raises(ConfigError, match="attack"):
        ob.ntp.evaluate(released, dataclasses.replace(cfg, attack="all"), masks=masks, source_model=source,
                        source=(s_train, s_test), target=(t_train, t_test), device="cpu", progress=False)
