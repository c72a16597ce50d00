"""``synthetic-scenes``: multi-object scenes whose captions are (nearly) unique and true to the pixels."""

from __future__ import annotations

import re
import time

import numpy as np
import pytest

from obstructlib.data import COLORS, SHAPES, dataset_info, load_dataset, load_pairs
from obstructlib.data.scenes import MAX_CAPTION_TOKENS, POSITIONS, _relation, generate_scenes
from obstructlib.errors import ConfigError


def test_generation_is_deterministic_and_splits_differ() -> None:
    a, b = generate_scenes(300, seed=3), generate_scenes(300, seed=3)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["images"], generate_scenes(300, seed=3, split="test")["images"])
    assert not np.array_equal(a["images"], generate_scenes(300, seed=4)["images"])
    # the scenes do not depend on what is only rendering: resolution, background domain, chunking
    other = generate_scenes(300, seed=3, resolution=48, domain="dark", chunk=7)
    assert all(np.array_equal(a[k], other[k]) for k in a if k not in ("images", "domains"))
    assert other["images"].shape == (300, 48, 48, 3)
    ds = load_dataset("synthetic-scenes", split="test", num_test=50, seed=3)
    again = load_dataset("synthetic-scenes", split="test", num_test=50, seed=3)
    assert ds.captions == again.captions and ds._array.tobytes() == again._array.tobytes()


def test_shapes_dtypes_and_object_layout() -> None:
    g = generate_scenes(400, seed=0)
    assert g["images"].shape == (400, 32, 32, 3) and g["images"].dtype == np.uint8
    assert set(g["num_objects"].tolist()) == {2, 3}
    present = np.arange(3) < g["num_objects"][:, None]
    for key in ("shapes", "colors", "sizes", "cells"):
        assert g[key].shape == (400, 3) and (g[key][~present] == -1).all() and (g[key][present] >= 0).all()
    for i in range(400):  # one object per cell; colours distinct within a scene
        k = g["num_objects"][i]
        assert len(set(g["cells"][i, :k])) == k and len(set(g["colors"][i, :k])) == k
        # the first object is the largest, then the leftmost, then the topmost
        key = [(-s, c % 3, c // 3) for s, c in zip(g["sizes"][i, :k], g["cells"][i, :k])]
        assert key[0] == min(key)
    assert np.bincount(g["shapes"][:, 0]).tolist() == [40] * 10  # labels balanced
    assert (generate_scenes(50, max_objects=2)["num_objects"] == 2).all()


def test_captions_are_nearly_unique_and_paraphrases_differ() -> None:
    ds = load_dataset("synthetic-scenes", split="train", num_train=3000)
    assert len(set(ds.captions)) / len(ds.captions) > 0.95
    six = load_dataset("synthetic-scenes", split="test", num_test=200, captions_per_image=6)
    assert (len(six), six.num_images, six.captions_per_image) == (1200, 200, 6)
    for j in range(six.num_images):
        assert len({six.captions[p] for p in six.pair_indices_of_image(j)}) == 6
    text = " ".join(six.captions)
    assert " a orange" not in text and " a ellipse" not in text and "{" not in text


def test_captions_fit_a_32_token_context_with_room_for_a_trigger() -> None:
    open_clip = pytest.importorskip("open_clip")
    tokenizer = open_clip.get_tokenizer("RN50")  # CLIP's BPE, as the tiny configs use
    captions = load_dataset("synthetic-scenes", split="train", num_train=2000, captions_per_image=6).captions
    # the tokenizer is slow (~1 ms a caption): the 1,500 longest in characters and 300 others
    by_length = sorted(captions, key=len)
    sample = by_length[-1500:] + by_length[: -1500 : 30]
    lengths = (tokenizer(sample, context_length=77) != 0).sum(1)  # start and end included
    assert int(lengths.max()) <= MAX_CAPTION_TOKENS + 2 == 28


def test_captions_describe_the_pixels() -> None:
    # On plain backgrounds at 64 px the pixel at a cell's centre lies inside the object there
    # (a ring's hole excepted): its nearest palette colour must be the colour the caption names.
    ds = load_dataset("synthetic-scenes", split="test", num_test=40, resolution=64, domain="plain",
                      captions_per_image=6)
    palette = np.array(list(COLORS.values())) * 255
    shape_word = re.compile("|".join(sorted(SHAPES, key=len, reverse=True)))
    for i in range(ds.num_images):
        k = int(ds.num_objects[i])
        assert (ds.object_shapes[i, k:] == "").all() and (ds.object_shapes[i, :k] != "").all()
        for j in range(k):
            cell = POSITIONS.index(ds.object_positions[i, j])
            y, x = (np.array([cell // 3, cell % 3]) - 1) * 0.63 * 32 + 31.5
            rgb = ds._array[i, int(round(y)), int(round(x))].astype(float)
            if ds.object_shapes[i, j] != "ring":
                assert list(COLORS)[np.argmin(((palette - rgb) ** 2).sum(1))] == ds.object_colors[i, j]
        for p in ds.pair_indices_of_image(i):
            caption = ds.captions[p]
            assert len(shape_word.findall(caption)) == k  # names exactly the objects there are
            assert sorted(w for w in caption.split() if w in COLORS) == sorted(ds.object_colors[i, :k])
            assert SHAPES[ds.labels[p]] == ds.object_shapes[i, 0]


def test_relations_follow_the_grid() -> None:
    cells = np.array([0, 1, 8])  # top left, top, bottom right
    assert {_relation(cells, 0, 1, w, short=False) for w in range(12)} == {
        "left of", "to the left of", "next to", "beside"}
    assert {_relation(cells, 1, 0, w, short=True) for w in range(12)} == {"right of", "next to", "beside"}
    assert _relation(np.array([1, 7]), 0, 1, 0, short=True) == "above"
    assert _relation(np.array([7, 1]), 0, 1, 1, short=True) == "under"
    assert _relation(cells, 2, 0, 0, short=True) == "right of"  # a diagonal reads horizontally


def test_generation_is_fast() -> None:
    start = time.perf_counter()
    generate_scenes(5000)  # ~0.6 s on one core; the bound is loose for shared CI machines
    assert time.perf_counter() - start < 20


def test_registered_and_loads_as_pairs() -> None:
    info = dataset_info("synthetic-scenes")
    assert info.kind == "captions" and info.embedded
    pairs = load_pairs("synthetic-scenes", None, "test", image_size=16, max_samples=10, progress=False)
    assert (pairs.num_images, len(pairs)) == (10, 10) and pairs[0][0].shape == (3, 16, 16)
    full = load_dataset("synthetic-scenes", split="test")
    assert full.num_images == 1000 and full._array.dtype == np.uint8
    kept = np.sort(np.random.default_rng(0).choice(1000, 10, replace=False))  # load_pairs' subset
    assert pairs.captions == [full.captions[i] for i in kept]
    assert pairs.object_colors.tolist() == full.object_colors[kept].tolist()
    assert pairs.templates and pairs.classes == list(SHAPES)


def test_errors() -> None:
    with pytest.raises(ConfigError, match="captions_per_image"):
        load_dataset("synthetic-scenes", captions_per_image=7, num_train=5)
    with pytest.raises(ConfigError, match="max_objects"):
        generate_scenes(5, max_objects=4)
    with pytest.raises(ConfigError, match="unknown domain"):
        generate_scenes(5, domain="underwater")
