"""PerturbationStore: eps-ball, per-sample indexing, cluster mode, memmap, persistence, export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from obstructlib.data import ArrayImageDataset, PerturbationStore, export_protected
from obstructlib.errors import ConfigError

EPS = 8 / 255


def test_values_stay_in_eps_ball_and_unit_range() -> None:
    store = PerturbationStore(6, (3, 5, 5), eps=EPS)
    store.set(range(6), torch.randn(6, 3, 5, 5))  # far outside the ball: must be clamped
    delta = store.get(range(6))
    assert delta.shape == (6, 3, 5, 5) and delta.dtype == torch.float32
    assert float(delta.abs().max()) <= EPS + 1e-7 and float(delta.abs().max()) == pytest.approx(EPS)
    assert torch.allclose(delta * 255, (delta * 255).round(), atol=1e-4)  # whole pixel units
    images = torch.rand(6, 3, 5, 5)
    images[0] = 1.0
    images[1] = 0.0
    out = store.apply(images, range(6))
    assert 0 <= float(out.min()) and float(out.max()) <= 1
    assert float((out - images).abs().max()) <= EPS + 1e-6
    assert store.data.dtype == np.int8 and store.nbytes == 6 * 75


def test_per_sample_indexing_reads_back_exactly() -> None:
    store = PerturbationStore(10, (1, 2, 2), eps=EPS)
    noise = torch.tensor([-8, -3, 0, 5]).float().reshape(1, 1, 2, 2) / 255
    deltas = torch.cat([noise, -noise, noise.roll(1, -1)])
    store.set([7, 2, 4], deltas)
    assert torch.equal(store.get([7, 2, 4]), deltas)
    assert torch.equal(store.get([4, 7]), deltas[[2, 0]])
    assert float(store.get([0, 1, 3]).abs().sum()) == 0  # untouched samples stay clean
    batch = torch.full((2, 1, 2, 2), 0.5)
    assert torch.allclose(store.apply(batch, torch.tensor([2, 9])), torch.stack([0.5 - noise[0], batch[1]]))
    store.set([1], torch.full((1, 2, 2), 2.4 / 255))  # rounds to the nearest unit
    assert torch.allclose(store.get([1]) * 255, torch.full((1, 1, 2, 2), 2.0))


def test_cluster_mode_uses_the_assignment() -> None:
    assignments = np.array([0, 1, 1, 2, 0])
    store = PerturbationStore(3, (1, 2, 2), eps=EPS, mode="cluster", assignments=assignments)
    store.set([0, 1, 2], torch.tensor([1.0, 2.0, 3.0]).reshape(3, 1, 1, 1).expand(3, 1, 2, 2) / 255)
    assert store.num_samples == 5 and len(store) == 3
    units = store.delta_for(range(5))[:, 0, 0, 0] * 255
    assert units.round().tolist() == [1, 2, 2, 3, 1]
    out = store.apply(torch.zeros(2, 1, 2, 2) + 0.5, [3, 4])
    assert torch.allclose(
        (out - 0.5) * 255, torch.tensor([3.0, 1.0]).reshape(2, 1, 1, 1).expand(2, 1, 2, 2), atol=1e-4
    )
    with pytest.raises(ConfigError):
        PerturbationStore(3, (1, 2, 2), mode="cluster")
    with pytest.raises(ConfigError):
        PerturbationStore(2, (1, 2, 2), mode="cluster", assignments=[0, 5])


def test_memmap_when_requested_or_large(tmp_path: Path) -> None:
    path = tmp_path / "noise.npy"
    store = PerturbationStore(4, (3, 4, 4), eps=EPS, path=path)
    assert store.is_memmap and path.exists() and np.load(path, mmap_mode="r").dtype == np.int8
    store.set([3], torch.full((1, 3, 4, 4), -EPS))
    store.flush()
    assert int(np.load(path)[3].min()) == -8
    big = PerturbationStore(50, (3, 4, 4), eps=EPS, memmap_threshold_bytes=1000)
    assert big.is_memmap and not PerturbationStore(50, (3, 4, 4), eps=EPS).is_memmap


def test_save_load_round_trip(tmp_path: Path) -> None:
    store = PerturbationStore(3, (1, 3, 3), eps=4 / 255, mode="cluster", assignments=[2, 0, 1, 1]).randomize(
        seed=0
    )
    path = store.save(tmp_path / "sub" / "uc.npy")
    assert (tmp_path / "sub" / "uc.json").exists()
    for mmap in (False, True):
        loaded = PerturbationStore.load(path, mmap=mmap)
        assert torch.equal(loaded.get(range(3)), store.get(range(3))) and loaded.is_memmap == mmap
        assert (
            loaded.eps == store.eps
            and loaded.mode == "cluster"
            and loaded.assignments.tolist() == [2, 0, 1, 1]
        )
    np.save(path, np.full((3, 1, 3, 3), 9, np.int8))  # values outside the recorded eps-ball
    with pytest.raises(ConfigError, match="eps-ball"):
        PerturbationStore.load(path)
    with pytest.raises(ConfigError, match="no perturbation store"):
        PerturbationStore.load(tmp_path / "missing.npy")


def test_eps_above_int8_range_is_rejected() -> None:
    PerturbationStore(1, (1, 1, 1), eps=127 / 255)
    with pytest.raises(ConfigError, match="127/255") as err:
        PerturbationStore(1, (1, 1, 1), eps=128 / 255)
    assert "\n" not in str(err.value)
    assert PerturbationStore(1, (1, 1, 1), eps=0.03).eps_units == 7  # floor: never a larger ball


def test_export_writes_quantised_protected_pngs(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 4, 4, 3), dtype=np.uint8)
    images[0] = 255  # saturates: clip before quantising
    ds = ArrayImageDataset(images, [0, 1, 0, 1, 1], ["cat", "dog"])
    store = PerturbationStore(5, (3, 4, 4), eps=EPS).randomize(seed=1)
    test = ArrayImageDataset(images[:2], [1, 0], ["cat", "dog"])
    out = export_protected(ds, store, tmp_path / "protected", progress=False, test_dataset=test)
    pngs = sorted(out.glob("train/*/*.png"))
    assert len(pngs) == 5 and sorted(p.parent.name for p in pngs) == ["cat", "cat", "dog", "dog", "dog"]
    assert len(list(out.glob("test/*/*.png"))) == 2
    for i in range(5):
        (png,) = out.glob(f"train/*/{i:05d}.png")
        expected = np.rint(np.clip(images[i] / 255 + store.data[i].transpose(1, 2, 0) / 255, 0, 1) * 255)
        assert np.array_equal(np.asarray(Image.open(png)), expected.astype(np.uint8))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dir left behind
    with pytest.raises(ConfigError, match="already exists"):
        export_protected(ds, store, out, progress=False)
    with pytest.raises(ConfigError):
        export_protected(ds, PerturbationStore(4, (3, 4, 4)), tmp_path / "other", progress=False)
