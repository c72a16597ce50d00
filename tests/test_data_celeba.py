"""CelebA with attribute vectors (obstructlib.data.celeba) on a tiny fixture in the real on-disk format."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.datasets
from fixtures_data import CELEBA_ATTRS, write_celeba
from PIL import Image

from obstructlib.data import celeba
from obstructlib.data.base import dataset_info, load_dataset
from obstructlib.data.celeba import (
    ATTRIBUTE_PROMPTS,
    LTO_ATTRIBUTES,
    attribute_prompts,
    load_celeba_attributes,
)
from obstructlib.errors import ConfigError, DatasetNotFoundError


@pytest.fixture
def fixture(tmp_path):
    # 6 JPEGs 44 x 36 (H x W), partitions 0 1 2 0 1 2, the 40 real attribute names in order
    return write_celeba(tmp_path, n=6, size=(44, 36))


def _one_line(err) -> str:
    msg = str(err.value)
    assert len(msg.splitlines()) == 1, msg
    return msg


def test_splits_follow_the_partition_file(tmp_path, fixture):
    for split, part in (("train", 0), ("valid", 1), ("val", 1), ("test", 2)):
        ds = load_celeba_attributes(tmp_path, split, image_size=8)
        rows = np.flatnonzero(fixture["partition"] == part)
        assert ds.files == [fixture["files"][i] for i in rows] and len(ds) == len(rows)
        assert (ds.partition == part).all()
    assert len(load_celeba_attributes(tmp_path, "all", image_size=8)) == 6


def test_default_attributes_are_ltos_twelve_mapped_to_0_1(tmp_path, fixture):
    ds = load_celeba_attributes(tmp_path, "test", image_size=8)
    assert ds.attr_names == list(LTO_ATTRIBUTES) == ds.classes and len(LTO_ATTRIBUTES) == 12
    assert ds.all_attr_names == CELEBA_ATTRS
    rows = np.flatnonzero(fixture["partition"] == 2)
    cols = [CELEBA_ATTRS.index(a) for a in LTO_ATTRIBUTES]
    # the file holds -1 / 1; the fixture's expected values are already 0 / 1
    np.testing.assert_array_equal(ds.attributes, fixture["attrs"][np.ix_(rows, cols)])
    assert ds.attributes.dtype == np.int64 and set(np.unique(ds.attributes)) <= {0, 1}


def test_selected_attributes_in_the_given_order(tmp_path, fixture):
    ds = load_celeba_attributes(tmp_path, "train", attributes=["Smiling", "Male"], image_size=8)
    rows = np.flatnonzero(fixture["partition"] == 0)
    expected = fixture["attrs"][np.ix_(rows, [CELEBA_ATTRS.index("Smiling"), CELEBA_ATTRS.index("Male")])]
    np.testing.assert_array_equal(ds.attributes, expected)
    x, target = ds[1]
    assert target.dtype == torch.int64 and target.tolist() == expected[1].tolist()
    sub = ds.subset([1])
    assert sub.files == [ds.files[1]] and sub.attributes.tolist() == [expected[1].tolist()]


def test_image_range_shape_and_centre_crop(tmp_path, fixture):
    ds = load_celeba_attributes(tmp_path, "test", image_size=16)
    x, _ = ds[0]
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    # image_size = the width: the centre square (rows 4..39 of 44) is cut out, nothing resized
    exact = load_celeba_attributes(tmp_path, "test", image_size=36)
    x, _ = exact[0]
    stored = np.array(Image.open(fixture["dir"] / "img_align_celeba" / exact.files[0]).convert("RGB"))
    centre = torch.from_numpy(stored[4:40]).permute(2, 0, 1).float() / 255
    torch.testing.assert_close(x, centre, rtol=0, atol=1.5 / 255)


def test_registered_without_taking_the_celeba_name(tmp_path, fixture):
    ds = load_dataset(celeba.NAME, tmp_path, split="test", image_size=8)
    assert len(ds) == 2 and ds[0][1].shape == (12,)
    assert dataset_info("celeba").loader is not load_celeba_attributes  # large.load_celeba keeps it


def test_max_samples_is_a_seeded_subset(tmp_path, fixture):
    a = load_celeba_attributes(tmp_path, "all", image_size=8, max_samples=4, seed=3)
    b = load_celeba_attributes(tmp_path, "all", image_size=8, max_samples=4, seed=3)
    assert len(a) == 4 and a.files == b.files and a.files == sorted(a.files)
    with pytest.raises(ConfigError, match="max_samples"):
        load_celeba_attributes(tmp_path, "all", max_samples=0)


def test_prompt_pairs_cover_the_twelve_attributes():
    assert tuple(ATTRIBUTE_PROMPTS) == LTO_ATTRIBUTES
    for negative, positive in ATTRIBUTE_PROMPTS.values():
        assert negative != positive and negative and positive
    negative, positive = attribute_prompts(["No_Beard"])[0]  # No_Beard's positive class has no beard
    assert (negative, positive) == ("a photo of a person with a beard", "a photo of a person without a beard")
    with pytest.raises(ConfigError, match="no prompts"):
        attribute_prompts(["Male"])


def test_missing_files_say_where_and_how(tmp_path, fixture):
    msg = _one_line(pytest.raises(DatasetNotFoundError, load_celeba_attributes, tmp_path / "empty"))
    assert str(tmp_path / "empty" / "celeba") in msg and "download=False" in msg
    assert "torchvision.datasets.CelebA" in msg and "quota" in msg
    (fixture["dir"] / "list_eval_partition.txt").unlink()
    msg = _one_line(pytest.raises(DatasetNotFoundError, load_celeba_attributes, tmp_path))
    assert "list_eval_partition.txt" in msg


def test_images_in_a_nested_folder_are_reported(tmp_path, fixture):
    images = fixture["dir"] / "img_align_celeba"
    (images / "img_align_celeba").mkdir()
    for f in fixture["files"]:
        (images / f).rename(images / "img_align_celeba" / f)
    msg = _one_line(pytest.raises(DatasetNotFoundError, load_celeba_attributes, tmp_path))
    assert "directly in" in msg


@pytest.mark.parametrize(
    "edit, words",
    [
        (lambda lines: ["six"] + lines[1:], "line 1 must be the image count"),
        (lambda lines: lines[:3] + [lines[3].rsplit(" ", 1)[0]] + lines[4:], "line 4 must be"),
        (lambda lines: lines[:2] + [lines[2].replace("-1", " 0", 1).replace(" 1", " 0", 1)] + lines[3:], "line 3"),
        (lambda lines: lines[:2] + [lines[2].replace("-1", "x1", 1).replace(" 1", "x1", 1)] + lines[3:], "line 3"),
        (lambda lines: lines[:-1], "says 6 images but 5 rows"),
        (lambda lines: lines[:1] + [lines[1] + " Young"] + lines[2:], "repeats attribute names"),
    ],
)
def test_malformed_attribute_file_is_one_config_error(tmp_path, fixture, edit, words):
    path = fixture["dir"] / "list_attr_celeba.txt"
    path.write_text("\n".join(edit(path.read_text().splitlines())) + "\n")
    msg = _one_line(pytest.raises(ConfigError, load_celeba_attributes, tmp_path))
    assert words in msg and "list_attr_celeba.txt" in msg


def test_bad_partition_attribute_and_split(tmp_path, fixture):
    part = fixture["dir"] / "list_eval_partition.txt"
    lines = part.read_text().splitlines()
    part.write_text("\n".join(lines[:-1]) + "\n")
    assert "no partition for 1 images" in _one_line(pytest.raises(ConfigError, load_celeba_attributes, tmp_path))
    part.write_text("\n".join(lines[:-1] + [lines[-1].replace(" 2", " 7")]) + "\n")
    assert "0|1|2" in _one_line(pytest.raises(ConfigError, load_celeba_attributes, tmp_path))
    part.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match="unknown attribute"):
        load_celeba_attributes(tmp_path, attributes=["Tall"])
    with pytest.raises(ConfigError, match="split 'validation'"):
        load_celeba_attributes(tmp_path, "validation")


def test_download_goes_through_torchvision_only_when_asked(tmp_path, monkeypatch):
    calls = []

    def fake_celeba(root, split, target_type, download):
        calls.append((root, split, download))
        write_celeba(tmp_path, n=6, size=(44, 36))

    monkeypatch.setattr(torchvision.datasets, "CelebA", fake_celeba)
    with pytest.raises(DatasetNotFoundError):
        load_celeba_attributes(tmp_path)  # download=False: offline, torchvision is not called
    assert calls == []
    assert len(load_celeba_attributes(tmp_path, "all", image_size=8, download=True)) == 6
    assert calls == [(str(tmp_path), "all", True)]

    def refused(*args, **kwargs):
        raise RuntimeError("Too many users have viewed or downloaded this file recently\nmore")

    monkeypatch.setattr(torchvision.datasets, "CelebA", refused)
    msg = _one_line(pytest.raises(DatasetNotFoundError, load_celeba_attributes, tmp_path / "other", download=True))
    assert "RuntimeError: Too many users" in msg and "--archives" in msg
