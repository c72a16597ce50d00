"""MEM on a handful of pairs: eps-ball every step, per-pair indexing, shuffling, triggers, resume."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch

import obstructlib as ob
import obstructlib.primitives.perturb as perturb_module
from obstructlib.data import CaptionDataset, PerturbationStore, ProtectedPairs, pair_collate, tokenize_captions
from obstructlib.data.tokens import insert_trigger
from obstructlib.engine import ClipTrainConfig
from obstructlib.errors import ConfigError
from obstructlib.methods.mem import MEMConfig, PairState, clip_error_max_noise
from obstructlib.methods.mem.steps import clip_batch_loss
from obstructlib.metrics import retrieval_metrics
from obstructlib.models import create_clip
from obstructlib.primitives.poisons import ErrorMaxConfig
from obstructlib.primitives.text_triggers import trigger_vocabulary

EPS = 8 / 255
WORDS = ["red", "blue", "green", "small", "large", "round", "square", "dark"]


def pairs(num_images: int = 6, per_image: int = 2, size: int = 16, seed: int = 0) -> CaptionDataset:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(num_images, size, size, 3), dtype=np.uint8)
    images[:, 0, 0] = 0
    images[:, -1, -1] = 255  # saturated pixels: [0, 1] clipping must bite
    caps = [f"a {WORDS[i % 8]} thing number {j}" for i in range(num_images) for j in range(per_image)]
    return CaptionDataset(images, caps, np.repeat(np.arange(num_images), per_image))


def tiny_cfg(**kw) -> MEMConfig:
    base = MEMConfig(rounds=2, text_rounds=1, train_steps=1, pgd_steps=2, num_candidates=2, batch_size=4,
                     step_size=4 / 255, surrogate=ClipTrainConfig(lr=1e-3, warmup_steps=0))
    return dataclasses.replace(base, **kw)


def clip():
    torch.manual_seed(0)
    return create_clip("tiny-rn", context_length=12)


class Recording(torch.nn.Module):
    """``model`` that also records the tokens each forward feeds its text tower (into ``seen``)."""

    def __init__(self, model, seen):
        super().__init__()
        self.model, self.seen, self.eot_token_id = model, seen, model.eot_token_id

    def forward(self, images, toks):
        self.seen.append(toks.clone())
        return self.model(images, toks)


def published_loss(model, data, store=None, triggers=None, rows=None) -> float:
    """``model``'s CLIP loss on all pairs as one batch, as published (noise, 8-bit rounding, triggers)."""
    view = ProtectedPairs(data, tokenize_captions(model, data.captions), model.eot_token_id, store,
                          triggers, rows, quantize=True)
    x, t = pair_collate([view[i] for i in range(len(view))])
    with torch.no_grad():
        return float(clip_batch_loss(model.eval(), x, t, amp=False, gather=False))


def test_noise_stays_in_the_ball_and_in_image_range_after_every_step(monkeypatch):
    real, checked = perturb_module.pgd_step, []

    def checking(delta, grad, step_size, eps, x=None, norm="linf", minimize=True):
        new = real(delta, grad, step_size, eps, x, norm, minimize)
        assert float(new.abs().max()) <= EPS + 1e-6
        assert float((x + new).min()) >= -1e-6 and float((x + new).max()) <= 1 + 1e-6
        checked.append(minimize)
        return new

    monkeypatch.setattr(perturb_module, "pgd_step", checking)
    data = pairs()
    res = ob.mem.protect(data, tiny_cfg(), surrogate=clip(), device="cpu", progress=False)
    assert len(checked) == 2 * 3 * 2 and all(checked)  # rounds x batches x steps, all DESCENT
    assert int(np.abs(res.store.data).max()) <= 8 and np.abs(res.store.data).max() > 0
    published = ProtectedPairs(data, tokenize_captions(clip(), data.captions), 49407, res.store, quantize=True)
    for i in range(len(data)):
        x, xp = data[i][0], published[i][0]
        assert float((xp - x).abs().max()) <= EPS + 1e-6 and 0 <= float(xp.min()) and float(xp.max()) <= 1


def test_noise_and_triggers_are_per_pair_not_per_image():
    data = pairs(num_images=4, per_image=2)
    model = clip()
    res = ob.mem.protect(data, tiny_cfg(rounds=1), surrogate=model, device="cpu", progress=False)
    assert res.store.num == len(data) == 8 and res.store.mode == "sample"
    assert res.triggers.shape == (8, 3) and res.trigger_rows.tolist() == list(range(8))
    # the two captions of one image got two different noises and triggers (same picture, different rows)
    assert all(not np.array_equal(res.store.data[2 * i], res.store.data[2 * i + 1]) for i in range(4))
    assert all(not torch.equal(res.triggers[2 * i], res.triggers[2 * i + 1]) for i in range(4))
    # what the hacker downloads: pair i carries ITS noise and ITS trigger right after the start token
    view, tokens = res.dataset(data, model), tokenize_captions(model, data.captions)
    for i in range(8):
        x, t, image_id = view[i]
        assert image_id == i // 2 and torch.equal(t[1:4], res.triggers[i])
        assert torch.equal(t[4:5], tokens[i, 1:2].long())  # then the caption's own first word
        clean = data[i][0][None]
        assert torch.allclose(x, res.store.apply(clean, [i])[0], atol=1e-6)
        assert not torch.allclose(x, res.store.apply(clean, [i ^ 1])[0], atol=1e-6)  # not its sibling's
    grouped = ob.mem.protect(data, tiny_cfg(rounds=1, num_groups=3), surrogate=clip(), device="cpu", progress=False)
    assert grouped.store.num == 3 and grouped.store.mode == "cluster" and grouped.triggers.shape == (3, 3)
    assert grouped.bytes_per_pair < res.bytes_per_pair
    g_view = grouped.dataset(data, model)
    for i in range(8):  # a pair's trigger and noise are its group's
        k = int(grouped.trigger_rows[i])
        assert torch.equal(g_view[i][1][1:4], grouped.triggers[k])
        assert torch.equal(grouped.store.delta_for([i]), grouped.store.get([k]))


def test_trigger_stays_with_its_image_when_captions_are_shuffled():
    data = pairs(num_images=8, per_image=1)
    model = clip()
    tokens = tokenize_captions(model, data.captions)
    triggers = torch.arange(100, 124).view(8, 3)
    seen = []
    state = PairState(Recording(model, seen), tokens, triggers, np.arange(8), 2, shuffle=True, amp=False)
    idx = torch.tensor([5, 1, 7, 0, 2, 6, 3, 4])
    for _ in range(4):
        state.image_loss(torch.rand(8, 3, 16, 16), (idx,))
    bodies = []
    for toks in seen:
        assert torch.equal(toks[:, 1:4], triggers[idx])  # trigger t_i with image i, always
        bodies.append(toks[:, 4:])
    assert any(not torch.equal(b, tokens[idx, 1:-3].long()) for b in bodies)  # caption bodies moved
    for b in bodies:  # ... as a permutation of this batch's captions
        assert sorted(map(tuple, b.tolist())) == sorted(map(tuple, tokens[idx, 1:-3].long().tolist()))


def test_triggers_are_never_special_and_hotflip_only_lowers_the_loss():
    data = pairs()
    model = clip()
    res = ob.mem.protect(data, tiny_cfg(rounds=2, text_rounds=2), surrogate=model, device="cpu", progress=False)
    assert not torch.isin(res.triggers, torch.tensor(model.special_token_ids)).any()
    for record in res.history:
        assert record["text_loss_after"] <= record["text_loss_before"] + 1e-6


def test_a_reduced_trigger_vocabulary_holds_the_captions_words_and_bounds_every_trigger():
    data = pairs()
    model = clip()
    res = ob.mem.protect(data, tiny_cfg(rounds=2, text_rounds=2, trigger_vocab=12), surrogate=model, device="cpu",
                         progress=False)
    tokens = tokenize_captions(model, data.captions)
    caption_ids = set(tokens.unique().tolist()) - set(model.special_token_ids)
    assert len(caption_ids) <= 12
    vocab = trigger_vocabulary(tokens, model.vocab_size, 12, model.special_token_ids,
                                      torch.Generator().manual_seed(1))
    assert caption_ids <= set(vocab.tolist()) and len(vocab) == 12  # the captions' words, then random ids
    assert set(res.triggers.unique().tolist()) <= set(vocab.tolist())  # HotFlip never left the vocabulary
    with pytest.raises(ConfigError, match="trigger_vocab"):
        tiny_cfg(trigger_vocab=1).validate()  # fewer ids than HotFlip candidates


def test_em_variant_has_no_trigger():
    data = pairs()
    em = ob.mem.protect(data, dataclasses.replace(MEMConfig.em(), rounds=1, train_steps=1, pgd_steps=1,
                                                       batch_size=4), surrogate=clip(), device="cpu", progress=False)
    assert em.triggers.shape == (12, 0) and "text_loss_before" not in em.history[0]
    assert em.bytes_per_pair == pytest.approx(3 * 16 * 16)


def test_noshuffle_feeds_each_image_its_own_caption_and_changes_the_noise():
    data = pairs(num_images=8, per_image=1)
    model = clip()
    tokens = tokenize_captions(model, data.captions)
    triggers = torch.arange(100, 124).view(8, 3)
    seen = []
    state = PairState(Recording(model, seen), tokens, triggers, np.arange(8), 2, shuffle=False, amp=False)
    idx = torch.tensor([5, 1, 7, 0, 2, 6, 3, 4])
    for _ in range(3):
        state.image_loss(torch.rand(8, 3, 16, 16), (idx,))
    expected = insert_trigger(state.captions(idx, torch.device("cpu")), triggers[idx], model.eot_token_id)
    assert len(seen) == 3 and all(torch.equal(toks, expected) for toks in seen)
    # the ablation as protect runs it: the same schedule and seed, another objective, other noise
    shuffled = ob.mem.protect(data, tiny_cfg(), surrogate=clip(), device="cpu", progress=False)
    kept = ob.mem.protect(data, tiny_cfg(shuffle_captions=False), surrogate=clip(), device="cpu", progress=False)
    assert kept.triggers.shape == shuffled.triggers.shape == (8, 3)
    assert not np.array_equal(kept.store.data, shuffled.store.data)


@pytest.fixture(scope="module")
def clean_clip():
    """A tiny CLIP fitted to the clean pairs (30 full-batch Adam steps): its loss reacts to the noise.

    An untrained CLIP sits at the chance loss ln(B) whatever the images, so no noise can move it.
    """
    model = clip()
    view = ProtectedPairs(pairs(), tokenize_captions(model, pairs().captions), model.eot_token_id, quantize=True)
    x, t = pair_collate([view[i] for i in range(len(view))])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(30):
        loss = clip_batch_loss(model, x, t, amp=False, gather=False)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.mark.parametrize("variant", ["mem", "em"])
def test_protection_lowers_the_surrogates_loss_on_the_published_pairs(variant, clean_clip):
    data = pairs()
    model = copy.deepcopy(clean_clip)
    cfg = tiny_cfg(rounds=3, pgd_steps=4) if variant == "mem" else dataclasses.replace(
        MEMConfig.em(), rounds=3, train_steps=1, pgd_steps=4, batch_size=4, step_size=4 / 255)
    res = ob.mem.protect(data, cfg, surrogate=model, device="cpu", progress=False)
    clean = published_loss(model, data)
    protected = published_loss(model, data, res.store, res.triggers, res.trigger_rows)
    assert protected < clean - 0.1, (protected, clean)  # error MINIMISING: the shortcut is easy


def test_error_max_noise_ascends(clean_clip):
    data = pairs()
    model = copy.deepcopy(clean_clip)
    store = clip_error_max_noise(model, data, ErrorMaxConfig(steps=4, step_size=2 / 255, batch_size=12,
                                                             random_start=False), "cpu", progress=False)
    assert store.num == len(data) and 0 < int(np.abs(store.data).max()) <= 8
    random = PerturbationStore(len(data), store.shape, store.eps)
    random.data[:] = np.random.default_rng(0).choice([-8, 8], size=random.data.shape)
    clean, noisy, rand = (published_loss(model, data, s) for s in (None, store, random))
    assert noisy > clean + 0.5 and noisy > rand + 0.5, (clean, noisy, rand)  # error MAXIMISING


def test_resume_after_a_stopped_round_matches_an_uninterrupted_run(tmp_path):
    data = pairs()
    full = ob.mem.protect(data, tiny_cfg(), surrogate=clip(), device="cpu", progress=False)
    ob.mem.protect(data, tiny_cfg(), surrogate=clip(), device="cpu", progress=False, ckpt_dir=tmp_path,
                   callback=lambda r, rec: True)
    resumed = ob.mem.protect(data, tiny_cfg(), surrogate=clip(), device="cpu", progress=False, ckpt_dir=tmp_path)
    assert len(resumed.history) == 2
    assert np.array_equal(resumed.store.data, full.store.data) and torch.equal(resumed.triggers, full.triggers)
    with pytest.raises(ConfigError, match="holds a run with"):
        ob.mem.protect(data, tiny_cfg(pgd_steps=3), surrogate=clip(), device="cpu", progress=False, ckpt_dir=tmp_path)


@pytest.mark.parametrize("bad, words", [
    ({"eps": 1.0}, "eps="), ({"rounds": 0}, "rounds="), ({"num_groups": 0}, "num_groups="),
    ({"trigger_tokens": -1}, "trigger_tokens="), ({"pgd_steps": -2}, "pgd_steps="),
])
def test_bad_config_is_one_clear_line(bad, words):
    with pytest.raises(ConfigError) as err:
        tiny_cfg(**bad).validate()
    assert words in str(err.value) and "\n" not in str(err.value)


def test_mem_needs_caption_pairs():
    from obstructlib.data import ArrayImageDataset

    with pytest.raises(ConfigError, match="caption dataset"):
        images = ArrayImageDataset(np.zeros((4, 8, 8, 3), np.uint8), [0, 1, 0, 1])
        ob.mem.protect(images, tiny_cfg(), surrogate=clip(), device="cpu")


def test_recall_at_k_with_five_captions_per_image_by_hand():
    """3 images x 5 captions; pessimistic ties (a tied wrong item ranks first)."""
    img = torch.eye(3)
    txt = img.repeat_interleave(5, dim=0).clone()
    ids = np.repeat(np.arange(3), 5)
    txt[1:5] = torch.tensor([0.0, 1.0, 0.0])  # captions 1-4 of image 0 look exactly like image 1
    txt[0] = torch.tensor([0.1, 1.0, 0.0])    # caption 0: mostly image 1, a little image 0
    m = retrieval_metrics(img, txt, ids)
    # i2t ranks (best own caption): image 0 -> caption 0 (cos 0.0995) beats every other caption: 0;
    # image 1 -> own captions at 1.0 tie with captions 1-4 of image 0: 4; image 2: 0.
    assert (m["i2t_r1"], m["i2t_r5"], m["medr_i2t"]) == (pytest.approx(200 / 3), 100.0, 1.0)
    # t2i ranks: caption 0 -> image 1 first: 1; captions 1-4 -> images 1 and 2 (tie at 0): 2;
    # the 10 captions of images 1 and 2: 0.
    assert (m["t2i_r1"], m["t2i_r5"], m["medr_t2i"]) == (pytest.approx(200 / 3), 100.0, 1.0)
    m2 = retrieval_metrics(img, txt, ids, ks=(2,))
    assert m2["t2i_r2"] == pytest.approx(100 * 11 / 15) and m2["i2t_r2"] == pytest.approx(200 / 3)


DDP_WORKER = '''
import json, sys
import numpy as np, torch
torch.set_num_threads(1)
sys.path.insert(0, sys.argv[2])
from test_mem_method import clip, pairs, tiny_cfg
import obstructlib.primitives.perturb as perturb_module
from obstructlib.engine import cleanup, get_rank, init_distributed
import obstructlib as ob

info = init_distributed()
visited = []
real = perturb_module.perturb_dataset
def spy(*args, indices=None, **kwargs):
    visited.append(sorted(int(i) for i in indices))
    return real(*args, indices=indices, **kwargs)
perturb_module.perturb_dataset = spy
import obstructlib.methods.mem.method as mem_module
mem_module.perturb_dataset = spy
res = ob.mem.protect(pairs(), tiny_cfg(rounds=1), surrogate=clip(), device="cpu", progress=False)
json.dump({"noise": res.store.data.tolist(), "triggers": res.triggers.tolist(), "visited": visited},
          open(f"{sys.argv[1]}/rank{get_rank()}.json", "w"))
cleanup()
'''


@pytest.mark.slow
def test_two_gloo_ranks_each_own_a_shard_and_end_with_the_same_noise(tmp_path):
    import json
    import os
    import socket
    import subprocess
    import sys
    from pathlib import Path

    here = Path(__file__).resolve().parent
    script = tmp_path / "worker.py"
    script.write_text(DDP_WORKER)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for rank in range(2):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, str(script), str(tmp_path), str(here)], env=env,
                                      cwd=here.parent, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    try:
        for p in procs:
            out, _ = p.communicate(timeout=240)
            assert p.returncode == 0, out[-3000:]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2))
    assert r0["visited"] == [list(range(0, 12, 2))] and r1["visited"] == [list(range(1, 12, 2))]
    assert r0["noise"] == r1["noise"] and r0["triggers"] == r1["triggers"]  # shards exchanged
    assert all(np.abs(np.asarray(r0["noise"][i])).max() > 0 for i in range(12))  # every pair got noise
