"""Caption datasets: on-disk formats (Karpathy JSON, COCO annotations, CSV), splits, errors, templating."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from obstructlib.data import ArrayImageDataset, CaptionDataset, load_dataset, templated_captions
from obstructlib.errors import ConfigError, DatasetNotFoundError


def _jpeg(path: Path, value: int, size: tuple[int, int] = (12, 8)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path, quality=95)


def _karpathy(root: Path, name: str, splits: list[str], filepath: str | None = None) -> None:
    images = []
    for i, split in enumerate(splits):
        entry = {
            "filename": f"im{i}.jpg",
            "split": split,
            "imgid": i,
            "sentences": [{"raw": f"caption {j} of image {i}", "tokens": []} for j in range(5)],
        }
        if filepath:
            entry["filepath"] = filepath
        images.append(entry)
        _jpeg(root / (filepath or "images") / f"im{i}.jpg", 40 * i)
    (root / f"dataset_{name}.json").write_text(json.dumps({"images": images, "dataset": name}))


def test_flickr8k_karpathy_json(tmp_path: Path) -> None:
    _karpathy(tmp_path / "flickr8k", "flickr8k", ["train", "test", "train"])
    train = load_dataset("flickr8k", root=tmp_path, split="train", image_size=8)
    test = load_dataset("flickr8k", root=tmp_path, split="test")
    assert (len(train), train.num_images, len(test), test.num_images) == (10, 2, 5, 1)
    assert train.image_ids.tolist() == [0] * 5 + [1] * 5
    assert train.pair_indices_of_image(1).tolist() == [5, 6, 7, 8, 9]
    assert train.captions[5] == "caption 0 of image 2" and train.captions_per_image == 5
    x, _, image_id = train[7]
    assert x.shape == (3, 8, 8) and 0 <= x.min() and x.max() <= 1 and image_id == 1
    assert abs(float(x.mean()) - 80 / 255) < 0.03  # image 2 was written with value 80
    assert test[0][0].shape == (3, 8, 12)  # no image_size: native size


def test_coco_karpathy_restval_counts_as_train(tmp_path: Path) -> None:
    _karpathy(tmp_path / "coco", "coco", ["train", "restval", "test"], filepath="val2014")
    assert load_dataset("coco_captions", root=tmp_path, split="train").num_images == 2
    assert load_dataset("coco_captions", root=tmp_path, split="test").num_images == 1


def test_coco_official_annotations(tmp_path: Path) -> None:
    coco = tmp_path / "coco"
    for part, ids in (("train2017", [7, 9]), ("val2017", [11])):
        images = [{"id": i, "file_name": f"{i:012d}.jpg"} for i in ids]
        anns = [
            {"id": 100 * i + j, "image_id": i, "caption": f" c{j} "}
            for i in ids
            for j in range(4 if i == 9 else 5)
        ]
        for im in images:
            _jpeg(coco / part / im["file_name"], 10)
        (coco / "annotations").mkdir(exist_ok=True)
        (coco / "annotations" / f"captions_{part}.json").write_text(
            json.dumps({"images": images, "annotations": anns})
        )
    train = load_dataset("coco_captions", root=tmp_path, split="train")
    assert len(train) == 9 and train.caption_counts.tolist() == [5, 4] and train.captions[0] == "c0"
    assert len(load_dataset("coco_captions", root=tmp_path, split="test")) == 5  # test reads val2017


def _csv(path: Path, rows: list[list[str]], header: list[str]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def test_csv_with_split_column(tmp_path: Path) -> None:
    for i in range(3):
        _jpeg(tmp_path / "images" / f"{i}.jpg", 30 * i)
    rows = [
        [f"images/{i}.jpg", f"a, quoted caption {j}", s]
        for i, s in enumerate(["train", "val", "train"])
        for j in range(2)
    ]
    _csv(tmp_path / "captions.csv", rows, ["image", "caption", "split"])
    train = load_dataset(f"csv:{tmp_path / 'captions.csv'}", split="train", image_size=6, in_memory=True)
    test = load_dataset(f"csv:{tmp_path}", split="test")  # a folder means folder/captions.csv
    assert (len(train), train.num_images, len(test)) == (4, 2, 2)  # val counts as test without test rows
    assert train.captions[0] == "a, quoted caption 0" and train.image_paths is None  # cached in memory
    assert train[3][0].shape == (3, 6, 6) and train.image_ids.tolist() == [0, 0, 1, 1]


def test_csv_without_split_keeps_images_whole(tmp_path: Path) -> None:
    rows = []
    for i in range(20):
        _jpeg(tmp_path / f"{i}.jpg", 5 * i, (4, 4))
        rows += [[f"{i}.jpg", f"image {i} caption {j}"] for j in range(3)]
    _csv(tmp_path / "c.csv", rows, ["image", "caption"])
    spec = f"csv:{tmp_path / 'c.csv'}"
    train, test = load_dataset(spec, split="train"), load_dataset(spec, split="test")
    assert (train.num_images, test.num_images, len(train), len(test)) == (16, 4, 48, 12)
    assert set(train.image_paths).isdisjoint(test.image_paths)
    assert load_dataset(spec, split="test").image_paths == test.image_paths  # deterministic
    assert load_dataset(spec, split="test", seed=1).image_paths != test.image_paths
    for j in range(test.num_images):  # all captions of a test image are in test
        assert len(test.pair_indices_of_image(j)) == 3


def test_csv_errors_are_one_line(tmp_path: Path) -> None:
    _csv(tmp_path / "bad.csv", [["x.jpg", "c"]], ["file", "caption"])
    with pytest.raises(ConfigError, match="lacks column"):
        load_dataset(f"csv:{tmp_path / 'bad.csv'}")
    _jpeg(tmp_path / "ok.jpg", 1)
    _csv(
        tmp_path / "m.csv",
        [["ok.jpg", "c", "train"], ["gone1.jpg", "c", "train"], ["gone2.jpg", "c", "train"]],
        ["image", "caption", "split"],
    )
    with pytest.raises(DatasetNotFoundError, match="2 of 3 images") as err:
        load_dataset(f"csv:{tmp_path / 'm.csv'}")
    assert "gone1.jpg" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(DatasetNotFoundError):
        load_dataset(f"csv:{tmp_path / 'nope.csv'}")


def test_missing_registered_dataset_names_fetch_command(tmp_path: Path) -> None:
    for name in ("flickr8k", "flickr30k", "coco_captions", "cc3m"):
        with pytest.raises(DatasetNotFoundError, match=f"obstruct data fetch {name} --root {tmp_path}"):
            load_dataset(name, root=tmp_path)


def test_subset_images_keeps_all_captions() -> None:
    images = np.arange(4)[:, None, None, None].repeat(2, 1).repeat(2, 2).repeat(3, 3).astype(np.uint8)
    ds = CaptionDataset(images, list("abcdefgh"), [0, 0, 1, 1, 2, 2, 3, 3], labels=[0, 0, 1, 1, 0, 0, 1, 1])
    sub = ds.subset_images([3, 1])
    assert sub.captions == ["g", "h", "c", "d"] and sub.image_ids.tolist() == [0, 0, 1, 1]
    assert sub.labels.tolist() == [1, 1, 1, 1] and sub.num_images == 2
    assert float(sub[0][0][0, 0, 0]) * 255 == pytest.approx(3)
    assert ds.image_labels.tolist() == [0, 1, 0, 1]
    view = ds.image_dataset()
    assert len(view) == 4 and view[2][1] == 2


def test_templated_captions_lazy_and_deterministic() -> None:
    base = ArrayImageDataset(
        np.zeros((6, 4, 4, 3), np.uint8), [0, 1, 2, 0, 1, 2], ["tabby_cat", "dog", "car"]
    )
    calls = []
    base.get_image = lambda i, f=base.get_image: calls.append(i) or f(i)  # count decodes
    caps = templated_captions(
        base, ["a photo of a {}.", lambda c: f"art of the {c}"], captions_per_image=2, seed=3
    )
    assert calls == []  # labels come from the attribute: nothing decoded up front
    assert len(caps) == 12 and caps.num_images == 6 and caps.classes == ["tabby cat", "dog", "car"]
    assert caps.labels.tolist() == [0, 0, 1, 1, 2, 2, 0, 0, 1, 1, 2, 2]
    assert sorted(caps.captions[:2]) == [
        "a photo of a tabby cat.",
        "art of the tabby cat",
    ]  # distinct templates
    assert (
        templated_captions(
            base, ["a photo of a {}.", lambda c: f"art of the {c}"], captions_per_image=2, seed=3
        ).captions
        == caps.captions
    )
    x, text, image_id = caps[5]
    assert x.shape == (3, 4, 4) and image_id == 2 and "car" in text and calls == [2]
    assert len(templated_captions(base).captions[0]) > 0  # default templates (open_clip's or built-in)
