"""Classification loaders: real on-disk formats round-trip pixel-exactly, labels map as documented."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fixtures_data import (
    CIFAR10_CLASSES,
    write_celeba,
    write_cifar10,
    write_cifar100,
    write_image_folder,
    write_mnist_idx,
    write_mnist_m,
    write_npz,
    write_stl10,
    write_svhn,
    write_usps,
)
from PIL import Image

from obstructlib.data import folders, vision
from obstructlib.data.base import load_dataset
from obstructlib.data.folders import stratified_indices
from obstructlib.errors import ConfigError, DatasetNotFoundError, ObstructError


def _grey(ds):
    return ds.images[..., 0]


def _one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


# ------------------------------------------------------------------------------- per-format round trips
@pytest.mark.parametrize("split", ["train", "test"])
def test_cifar10_round_trip(tmp_path, split):
    w = write_cifar10(tmp_path, n_train=23, n_test=10)
    ds = load_dataset("cifar10", root=tmp_path, split=split)
    np.testing.assert_array_equal(ds.images, w[f"x_{split}"])
    np.testing.assert_array_equal(ds.labels, w[f"y_{split}"])
    assert ds.classes == CIFAR10_CLASSES
    x, y = ds[3]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert torch.equal(
        (x * 255).round().to(torch.uint8), torch.from_numpy(w[f"x_{split}"][3]).permute(2, 0, 1)
    )
    assert y == w[f"y_{split}"][3]


def test_cifar100_fine_and_coarse(tmp_path):
    w = write_cifar100(tmp_path, n_train=200, n_test=100)
    fine = vision.load_cifar100(tmp_path, "train")
    np.testing.assert_array_equal(fine.images, w["x_train"])
    np.testing.assert_array_equal(fine.labels, w["fine_train"])
    assert fine.classes == w["fine_classes"] and len(fine.classes) == 100
    coarse = vision.load_cifar100(tmp_path, "test", label_type="coarse")
    np.testing.assert_array_equal(coarse.labels, w["coarse_test"])
    assert coarse.classes == w["coarse_classes"] and len(coarse.classes) == 20
    np.testing.assert_array_equal(coarse.fine_to_coarse, w["fine_to_coarse"])
    np.testing.assert_array_equal(coarse.fine_to_coarse[coarse.fine_labels], coarse.coarse_labels)
    sub = vision.load_cifar100(tmp_path, "train", max_samples=50, seed=1)
    np.testing.assert_array_equal(
        sub.fine_to_coarse[sub.labels], sub.coarse_labels
    )  # per-sample arrays follow
    with pytest.raises(ConfigError):
        vision.load_cifar100(tmp_path, "train", label_type="super")


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_idx_round_trip(tmp_path, name, folder, gz):
    w = write_mnist_idx(tmp_path, folder=folder, gz=gz)
    ds = load_dataset(name, root=tmp_path, split="test")
    assert ds.images.shape == (10, 28, 28, 1)
    np.testing.assert_array_equal(_grey(ds), w["x_test"])
    np.testing.assert_array_equal(ds.labels, w["y_test"])
    assert len(ds.classes) == 10 and ds[0][0].shape == (1, 28, 28)
    rgb = load_dataset(name, root=tmp_path, split="test", channels=3)
    x, _ = rgb[0]
    assert x.shape == (3, 28, 28) and torch.equal(x[0], x[2])


def test_idx_corrupt_magic_is_one_line(tmp_path):
    write_mnist_idx(tmp_path)
    path = tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    data = bytearray(path.read_bytes())
    data[2] = 0x0D  # float data: not what MNIST holds
    path.write_bytes(bytes(data))
    with pytest.raises(ObstructError) as err:
        vision.load_mnist(tmp_path, "test")
    msg = _one_line(err)
    assert str(path) in msg and "magic" in msg and f"obstruct data fetch mnist --root {tmp_path}" in msg
    data[2] = 0x08
    path.write_bytes(bytes(data[:-5]))  # a valid header over a truncated body
    with pytest.raises(ObstructError, match="bytes after its header"):
        vision.load_mnist(tmp_path, "test")


@pytest.mark.parametrize("subdir", [True, False])
def test_usps_round_trip(tmp_path, subdir):
    w = write_usps(tmp_path, subdir=subdir)
    for split in ("train", "test"):
        ds = vision.load_usps(tmp_path, split)
        assert ds.images.shape[1:] == (16, 16, 1)
        np.testing.assert_array_equal(_grey(ds), w[f"x_{split}"])  # [-1, 1] -> 0..255 exactly
        np.testing.assert_array_equal(ds.labels, w[f"y_{split}"])  # 1..10 -> 0..9
    assert ds.labels.min() == 0 and ds.labels.max() == 9


@pytest.mark.parametrize("subdir", [True, False])
def test_svhn_round_trip(tmp_path, subdir):
    w = write_svhn(tmp_path, subdir=subdir)
    ds = vision.load_svhn(tmp_path, "train")
    np.testing.assert_array_equal(ds.images, w["x_train"])  # (32, 32, 3, N) -> NHWC
    np.testing.assert_array_equal(ds.labels, w["y_train"])
    assert (w["raw_y_train"] == 10).any() and not (ds.labels == 10).any()  # digit 0 stored as 10


def test_stl10_round_trip(tmp_path):
    w = write_stl10(tmp_path, n_train=4, n_test=3)
    ds = vision.load_stl10(tmp_path, "test")
    np.testing.assert_array_equal(ds.images, w["x_test"])  # column-major planes undone
    np.testing.assert_array_equal(ds.labels, w["y_test"])  # 1-based -> 0-based
    assert ds.classes == w["classes"] and ds[0][0].shape == (3, 96, 96)
    with pytest.raises(ConfigError):
        vision.load_stl10(tmp_path, "unlabeled")


def test_mnist_m_round_trip(tmp_path):
    w = write_mnist_m(tmp_path)
    ds = load_dataset("mnist_m", root=tmp_path, split="train")
    np.testing.assert_array_equal(ds.images, w["x_train"])
    np.testing.assert_array_equal(ds.labels, w["y_train"])


# ------------------------------------------------------------------------------- shared keyword arguments
def test_image_size_and_channels(tmp_path):
    write_cifar10(tmp_path)
    ds = vision.load_cifar10(tmp_path, "test", image_size=20)
    assert ds[0][0].shape == (3, 20, 20)
    grey = vision.load_cifar10(tmp_path, "test", channels=1)
    assert grey[0][0].shape == (1, 32, 32)


def test_stratified_indices_counts_and_determinism():
    labels = np.repeat(np.arange(4), [40, 30, 20, 10])
    idx = stratified_indices(labels, 20, seed=3)
    assert len(idx) == 20 and len(set(idx.tolist())) == 20 and np.all(np.diff(idx) > 0)
    np.testing.assert_array_equal(np.bincount(labels[idx]), [8, 6, 4, 2])
    np.testing.assert_array_equal(idx, stratified_indices(labels, 20, seed=3))
    assert not np.array_equal(idx, stratified_indices(labels, 20, seed=4))
    assert (
        sum(np.bincount(labels[stratified_indices(labels, 7, seed=0)])) == 7
    )  # largest remainder sums exactly
    np.testing.assert_array_equal(stratified_indices(labels, None), np.arange(100))
    np.testing.assert_array_equal(stratified_indices(labels, 500), np.arange(100))
    with pytest.raises(ConfigError):
        stratified_indices(labels, -1)


def test_stratified_indices_match_seeded_subset():
    # Loaders subset before decoding; wrappers.seeded_subset subsets a dataset: same protocol, same items.
    from obstructlib.data.base import ArrayImageDataset
    from obstructlib.data.wrappers import seeded_subset

    labels = np.random.default_rng(0).integers(0, 7, size=301)
    ds = ArrayImageDataset(np.zeros((301, 2, 2), np.uint8), labels)
    for k, seed in [(10, 0), (50, 1), (123, 2)]:
        assert seeded_subset(ds, k, seed=seed).indices == stratified_indices(labels, k, seed).tolist()


def test_loader_max_samples_is_stratified_subset(tmp_path):
    w = write_cifar10(tmp_path, n_train=100)
    ds = vision.load_cifar10(tmp_path, "train", max_samples=30, seed=7)
    assert len(ds) == 30
    np.testing.assert_array_equal(np.bincount(ds.labels, minlength=10), [3] * 10)
    idx = stratified_indices(w["y_train"], 30, seed=7)
    np.testing.assert_array_equal(ds.images, w["x_train"][idx])
    again = vision.load_cifar10(tmp_path, "train", max_samples=30, seed=7)
    np.testing.assert_array_equal(again.labels, ds.labels)


# ----------------------------------------------------------------------------------- missing / download
@pytest.mark.parametrize(
    "name",
    [
        "cifar10",
        "cifar100",
        "mnist",
        "fashion_mnist",
        "usps",
        "svhn",
        "stl10",
        "mnist_m",
        "imagenet",
        "celeba",
    ],
)
def test_missing_dataset_names_root_and_fetch(tmp_path, name):
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset(name, root=tmp_path / "empty", split="test")
    msg = _one_line(err)
    assert (
        str(tmp_path / "empty") in msg and f"obstruct data fetch {name} --root {tmp_path / 'empty'}" in msg
    )


def test_download_failure_is_one_line(tmp_path, monkeypatch):
    import urllib.request

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network\nat all")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DatasetNotFoundError) as err:
        vision.load_cifar10(tmp_path, "train", download=True)
    msg = _one_line(err)
    assert "could not download" in msg and "no network at all" in msg and "obstruct data fetch cifar10 --root" in msg


# ------------------------------------------------------------------------------------------------ folder:
def test_folder_round_trip_and_spec(tmp_path):
    w = write_image_folder(tmp_path / "imgs", ["dog", "cat", "emu"], 4, size=(6, 10))
    ds = load_dataset(f"folder:{tmp_path / 'imgs'}", split="train", progress=False)
    assert ds.classes == ["cat", "dog", "emu"] and ds.images.shape == (12, 6, 10, 3)
    np.testing.assert_array_equal(ds.images, w["train"][0])
    np.testing.assert_array_equal(ds.labels, w["train"][1])
    assert len(ds.paths) == 12 and ds.paths[0].endswith("cat/0000.png")
    lazy = folders.load_image_folder(tmp_path / "imgs", "train", in_memory=False)
    for i in (0, 5, 11):
        assert torch.equal(lazy[i][0], ds[i][0]) and lazy[i][1] == ds[i][1]
    sub = load_dataset(f"folder:{tmp_path / 'imgs'}", split="test", max_samples=6, seed=0, progress=False)
    np.testing.assert_array_equal(np.bincount(sub.labels), [2, 2, 2])


def test_folder_resizes_mixed_sizes_and_grey(tmp_path):
    write_image_folder(tmp_path / "a", ["x"], 2, size=8, splits=["train"])
    Image.fromarray(np.full((16, 24, 3), 200, np.uint8)).save(tmp_path / "a" / "train" / "x" / "0009.png")
    ds = folders.load_image_folder(tmp_path / "a", "train", progress=False)
    assert (
        ds.images.shape == (3, 8, 8, 3) and (ds.images[2] == 200).all()
    )  # cropped + resized to the first size
    small = folders.load_image_folder(tmp_path / "a", "train", image_size=4, progress=False)
    assert small.images.shape == (3, 4, 4, 3) and small[0][0].shape == (3, 4, 4)
    w = write_image_folder(tmp_path / "g", ["p", "q"], 2, size=5, grey=True)
    grey = folders.load_image_folder(tmp_path / "g", "test", progress=False)
    assert grey.images.shape == (4, 5, 5, 1)
    np.testing.assert_array_equal(grey.images[..., 0], w["test"][0])
    assert folders.load_image_folder(tmp_path / "g", "test", channels=3, progress=False)[0][0].shape == (
        3,
        5,
        5,
    )


def test_folder_cache_is_used_and_invalidated(tmp_path, monkeypatch):
    write_image_folder(tmp_path / "f", ["a", "b"], 2, size=4)
    first = folders.load_image_folder(tmp_path / "f", "test", cache_dir=tmp_path / "cache", progress=False)
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1
    monkeypatch.setattr(folders, "decode_images", lambda *a, **k: pytest.fail("decoded again"))
    second = folders.load_image_folder(tmp_path / "f", "test", cache_dir=tmp_path / "cache", progress=False)
    np.testing.assert_array_equal(first.images, second.images)
    monkeypatch.undo()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "f" / "test" / "b" / "0007.png")
    third = folders.load_image_folder(tmp_path / "f", "test", cache_dir=tmp_path / "cache", progress=False)
    assert len(third) == 5 and len(list((tmp_path / "cache").glob("*.npy"))) == 2


def test_folder_errors(tmp_path):
    write_image_folder(tmp_path / "f", ["a"], 1, splits=["train"])
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset(f"folder:{tmp_path / 'f'}", split="test")
    assert str(tmp_path / "f" / "test") in _one_line(err)
    with pytest.raises(DatasetNotFoundError):
        load_dataset(f"folder:{tmp_path / 'nowhere'}")


# --------------------------------------------------------------------------------------------------- npz:
@pytest.mark.parametrize("shape", [(12, 12), (12, 12, 3)])
def test_npz_round_trip(tmp_path, shape):
    w = write_npz(tmp_path / "d.npz", shape=shape, classes=np.array([f"c{i}" for i in range(10)]))
    ds = load_dataset(f"npz:{tmp_path / 'd.npz'}", split="test")
    np.testing.assert_array_equal(ds.images.reshape(w["x_test"].shape), w["x_test"])
    np.testing.assert_array_equal(ds.labels, w["y_test"])
    assert ds.classes[3] == "c3"
    assert len(load_dataset(f"npz:{tmp_path / 'd.npz'}", max_samples=10)) == 10


def test_npz_bad_inputs(tmp_path):
    write_npz(tmp_path / "nokey.npz", x_test=None)
    with pytest.raises(ConfigError) as err:
        load_dataset(f"npz:{tmp_path / 'nokey.npz'}", split="test")
    assert "'x_test'" in _one_line(err) and "np.savez" in str(err.value)
    write_npz(tmp_path / "float.npz", x_train=np.zeros((20, 8, 8), np.float32))
    with pytest.raises(ConfigError) as err:
        load_dataset(f"npz:{tmp_path / 'float.npz'}")
    assert "float32" in _one_line(err) and "uint8" in str(err.value)
    write_npz(tmp_path / "chw.npz", x_train=np.zeros((20, 3, 8, 8), np.uint8))
    with pytest.raises(ConfigError, match="channels-first"):
        load_dataset(f"npz:{tmp_path / 'chw.npz'}")
    with pytest.raises(DatasetNotFoundError):
        load_dataset(f"npz:{tmp_path / 'absent.npz'}")


# ------------------------------------------------------------------------------------------ imagenet, celeba
def test_imagenet_reads_val_for_test(tmp_path):
    w = write_image_folder(tmp_path / "imagenet", ["n02", "n01"], 2, size=(10, 14), splits=["train", "val"])
    ds = load_dataset("imagenet", root=tmp_path, split="test", image_size=6)
    assert ds.wnids == ["n01", "n02"] and len(ds) == 4 and ds.targets == w["val"][1].tolist()
    x, y = ds[0]
    assert x.shape == (3, 6, 6) and y == 0


def test_celeba_attributes_partition_and_crop(tmp_path):
    w = write_celeba(tmp_path, n=12, size=(44, 36))
    ds = load_dataset("celeba", root=tmp_path, split="test", attributes=["Smiling"])
    rows = np.flatnonzero(w["partition"] == 2)
    col = w["attr_names"].index("Smiling")
    assert ds.classes == ["not Smiling", "Smiling"] and len(ds) == len(rows)
    np.testing.assert_array_equal(ds.labels, w["attrs"][rows, col])
    np.testing.assert_array_equal(ds.attrs, w["attrs"][rows])
    x, y = ds[1]
    expected = np.array(Image.open(w["dir"] / "img_align_celeba" / w["files"][rows[1]]).convert("RGB"))
    assert x.shape == (3, 44, 36) and isinstance(y, int)
    assert torch.equal((x * 255).round().to(torch.uint8), torch.from_numpy(expected).permute(2, 0, 1))
    multi = folders.load_celeba(tmp_path, "train", attributes=["Male", "Young"], image_size=16)
    x, y = multi[0]
    assert x.shape == (3, 16, 16) and y.dtype == torch.int64 and y.shape == (2,)
    assert multi.attr_names == w["attr_names"] and multi.classes == ["Male", "Young"]
    with pytest.raises(ConfigError):
        folders.load_celeba(tmp_path, "train", attributes=["Tall"])


def test_cifar_batches_are_read_without_running_code_from_them(tmp_path):
    import os
    import pickle

    from fixtures_data import write_cifar10

    write_cifar10(tmp_path)
    ob_ds = load_dataset("cifar10", tmp_path, "train", progress=False)
    assert len(ob_ds) > 0
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    batch = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    batch.write_bytes(pickle.dumps({b"data": Payload(), b"labels": [0]}, protocol=2))
    with pytest.raises(ObstructError, match=r"data_batch_1.*posix\.system|data_batch_1.*os\.system"):
        load_dataset("cifar10", tmp_path, "train", progress=False)
    assert not marker.exists()
