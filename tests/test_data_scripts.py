"""Tests of the fetchers (``obstructlib.data.fetchers``, ``obstruct data fetch``, the ``data_scripts/``
wrappers): downloads against a local HTTP server, safe extraction, and every layout step on tiny
fixtures written in the real on-disk formats. Offline and fast."""

from __future__ import annotations

import bz2
import csv
import importlib
import io
import json
import socket
import subprocess
import sys
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from PIL import Image

SCRIPTS_DIR = Path(__file__).resolve().parents[1] / "data_scripts"
SCRIPTS = [
    "cifar10",
    "cifar100",
    "mnist",
    "fashion_mnist",
    "usps",
    "svhn",
    "stl10",
    "mnist_m",
    "celeba",
    "flickr8k",
    "flickr30k",
    "coco_captions",
    "cc3m",
    "imagenet",
]
from obstructlib.data.fetchers import _common  # noqa: E402
from obstructlib.data.fetchers._common import FetchError, download, extract  # noqa: E402


def load_script(name: str):
    """The fetcher module of dataset ``name`` (what ``obstruct data fetch NAME`` runs)."""
    return importlib.import_module(f"obstructlib.data.fetchers.{name}")


def jpeg_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG")
    return buf.getvalue()


def add_bytes(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


@pytest.mark.parametrize("name", SCRIPTS)
def test_help_exits_zero(name):
    result = subprocess.run(
        [sys.executable, str(SCRIPTS_DIR / f"{name}.py"), "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "--root" in result.stdout and ("Licence" in result.stdout or "licence" in result.stdout)


# --------------------------------------------------------------------------- download


PAYLOAD = bytes(range(256)) * 40  # 10,240 bytes


class RangeHandler(BaseHTTPRequestHandler):
    """Serves PAYLOAD at /file with HTTP Range support; logs (Range header, bytes sent)."""

    log: ClassVar[list] = []
    ignore_range = False
    files: ClassVar[dict] = {}

    def do_GET(self):
        data = self.files.get(self.path.rstrip("/").split("/")[-1])
        if data is None:
            self.send_error(404)
            return
        header = self.headers.get("Range")
        start = int(header.removeprefix("bytes=").split("-")[0]) if header and not self.ignore_range else 0
        body = data[start:]
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.path.endswith("/short"):  # the connection drops half-way
            body = body[: len(body) // 2]
        # Log before writing: once the client has read the body it may assert on the log at once,
        # and an append after the write would race with it (seen on a loaded CI machine).
        type(self).log.append((header, len(body)))
        self.wfile.write(body)

    def log_message(self, *args):  # keep test output clean
        pass


@pytest.fixture
def server():
    RangeHandler.log, RangeHandler.ignore_range, RangeHandler.files = [], False, {"file": PAYLOAD}
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def md5_of(data: bytes) -> str:
    import hashlib

    return hashlib.md5(data).hexdigest()


def test_download_whole_file(server, tmp_path):
    dest = download(f"{server}/file", tmp_path / "f.bin", md5=md5_of(PAYLOAD), progress=False)
    assert dest.read_bytes() == PAYLOAD and not (tmp_path / "f.bin.part").exists()
    assert RangeHandler.log == [(None, len(PAYLOAD))]
    download(f"{server}/file", dest, md5=md5_of(PAYLOAD), progress=False)  # present and valid: no request
    assert len(RangeHandler.log) == 1


def test_download_resumes_from_part(server, tmp_path):
    half = len(PAYLOAD) // 2 + 7
    (tmp_path / "f.bin.part").write_bytes(PAYLOAD[:half])
    dest = download(f"{server}/file", tmp_path / "f.bin", md5=md5_of(PAYLOAD), progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert RangeHandler.log == [(f"bytes={half}-", len(PAYLOAD) - half)]  # only the rest was sent


def test_download_restarts_when_server_ignores_range(server, tmp_path):
    RangeHandler.ignore_range = True
    (tmp_path / "f.bin.part").write_bytes(b"garbage" * 10)
    dest = download(f"{server}/file", tmp_path / "f.bin", md5=md5_of(PAYLOAD), progress=False)
    assert dest.read_bytes() == PAYLOAD


def test_download_checksum_mismatch_leaves_nothing(server, tmp_path):
    with pytest.raises(FetchError, match="checksum mismatch") as info:
        download(f"{server}/file", tmp_path / "f.bin", md5="0" * 32, progress=False)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "f.bin").exists() and not (tmp_path / "f.bin.part").exists()


def test_download_tries_mirrors_in_order(server, tmp_path):
    dest = download([f"{server}/missing", f"{server}/file"], tmp_path / "f.bin", sha256=None, progress=False)
    assert dest.read_bytes() == PAYLOAD


def test_download_connection_refused_is_one_line(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/file"
    with pytest.raises(FetchError) as info:
        download(url, tmp_path / "f.bin", progress=False, timeout=5)
    message = str(info.value)
    assert "\n" not in message and url in message and "refused" in message.lower()


def test_interrupted_download_keeps_part_and_resumes(server, tmp_path):
    RangeHandler.files["short"] = PAYLOAD
    with pytest.raises(FetchError, match="re-run to resume"):
        download(f"{server}/short", tmp_path / "f.bin", progress=False)
    assert (tmp_path / "f.bin.part").stat().st_size == len(PAYLOAD) // 2
    download(f"{server}/file", tmp_path / "f.bin", md5=md5_of(PAYLOAD), progress=False)
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD
    assert RangeHandler.log[-1] == (f"bytes={len(PAYLOAD) // 2}-", len(PAYLOAD) - len(PAYLOAD) // 2)


def test_cifar10_script_end_to_end(server, tmp_path, monkeypatch, capsys):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name in (
            "data_batch_1",
            "data_batch_2",
            "data_batch_3",
            "data_batch_4",
            "data_batch_5",
            "test_batch",
            "batches.meta",
        ):
            add_bytes(tf, f"cifar-10-batches-py/{name}", name.encode())
    RangeHandler.files["cifar-10-python.tar.gz"] = buf.getvalue()
    cifar10 = load_script("cifar10")
    monkeypatch.setattr(cifar10, "URL", f"{server}/cifar-10-python.tar.gz")
    monkeypatch.setattr(cifar10, "ARCHIVE_MD5", md5_of(buf.getvalue()))
    monkeypatch.setattr(cifar10, "FILES", {k: md5_of(k.encode()) for k in cifar10.FILES})
    assert cifar10.main(["--root", str(tmp_path), "--no-progress"]) == 0
    assert (tmp_path / "cifar-10-batches-py" / "test_batch").read_bytes() == b"test_batch"
    assert not (tmp_path / "cifar-10-python.tar.gz").exists()  # archive removed after extraction
    capsys.readouterr()
    assert cifar10.main(["--root", str(tmp_path)]) == 0 and "already present" in capsys.readouterr().out
    assert len(RangeHandler.log) == 1


def test_run_script_prints_one_line(capsys):
    def failing(argv):
        raise FetchError("could not download x: y")

    with pytest.raises(SystemExit) as info:
        _common.run_script(failing)
    assert info.value.code == 1
    assert capsys.readouterr().err.strip() == "error: could not download x: y"


# --------------------------------------------------------------------------- extraction


def test_extract_tar_and_zip_and_skip_on_rerun(tmp_path):
    archive = tmp_path / "a.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        add_bytes(tf, "top/x.txt", b"hello")
    extract(archive, tmp_path / "out", progress=False)
    assert (tmp_path / "out" / "top" / "x.txt").read_bytes() == b"hello"
    (tmp_path / "out" / "top" / "x.txt").unlink()
    extract(archive, tmp_path / "out", progress=False)  # marker present: nothing re-extracted
    assert not (tmp_path / "out" / "top" / "x.txt").exists()
    zpath = tmp_path / "b.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("z/y.txt", "zip")
    extract(zpath, tmp_path / "out2", progress=False)
    assert (tmp_path / "out2" / "z" / "y.txt").read_text() == "zip"


@pytest.mark.parametrize("kind", ["tar", "zip", "symlink"])
def test_extract_rejects_escaping_members(tmp_path, kind):
    archive = tmp_path / ("evil.zip" if kind == "zip" else "evil.tar")
    if kind == "zip":
        with zipfile.ZipFile(archive, "w") as zf:
            zf.writestr("../evil.txt", "x")
    else:
        with tarfile.open(archive, "w") as tf:
            if kind == "tar":
                add_bytes(tf, "ok/../../evil.txt", b"x")
            else:
                link = tarfile.TarInfo("link")
                link.type, link.linkname = tarfile.SYMTYPE, "../../etc"
                tf.addfile(link)
    with pytest.raises(FetchError, match="outside"):
        extract(archive, tmp_path / "out", progress=False)
    assert (
        not (tmp_path / "evil.txt").exists()
        and not (tmp_path / "out" / f".extracted-{archive.name}").exists()
    )


# --------------------------------------------------------------------------- mnist, usps conversions


def fake_mnist(n_train=6, n_test=4, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "x_train": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "y_train": rng.integers(0, 10, n_train).astype(np.int64),
        "x_test": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "y_test": rng.integers(0, 10, n_test).astype(np.int64),
    }


def test_mnist_from_npz_writes_idx(tmp_path):
    arrays = fake_mnist()
    np.savez(tmp_path / "m.npz", **arrays)
    assert load_script("mnist").main(["--root", str(tmp_path), "--from-npz", str(tmp_path / "m.npz")]) == 0
    from obstructlib.data.fetchers import _idx

    back = _idx.load_mnist_arrays(tmp_path)  # finds ROOT/MNIST/raw
    for key, value in arrays.items():
        np.testing.assert_array_equal(back[key], value)


def test_usps_from_npz_is_libsvm(tmp_path):
    x = np.zeros((2, 16, 16), np.uint8)
    x[0, 0, 0], x[1, 15, 15] = 255, 0
    np.savez(tmp_path / "u.npz", x_train=x, y_train=np.array([0, 9]), x_test=x, y_test=np.array([3, 4]))
    load_script("usps").main(["--root", str(tmp_path), "--from-npz", str(tmp_path / "u.npz")])
    lines = bz2.decompress((tmp_path / "usps" / "usps.bz2").read_bytes()).decode().splitlines()
    first = lines[0].split()
    assert first[0] == "1" and first[1] == "1:1.000000" and first[2] == "2:-1.000000" and len(first) == 257
    assert lines[1].split()[0] == "10"


# --------------------------------------------------------------------------- mnist_m


def find_crop(image: np.ndarray, digit: np.ndarray, photos) -> bool:
    """True when image == |crop - digit| for some 28x28 crop of one of ``photos``."""
    for photo in photos:
        for y in range(photo.shape[0] - 27):
            for x in range(photo.shape[1] - 27):
                crop = photo[y : y + 28, x : x + 28].astype(np.int16)
                if np.array_equal(image, np.abs(crop - digit[..., None].astype(np.int16)).astype(np.uint8)):
                    return True
    return False


def test_mnist_m_builds_blends(tmp_path, capsys):
    arrays = fake_mnist(n_train=5, n_test=3)
    np.savez(tmp_path / "mnist.npz", **arrays)
    rng = np.random.default_rng(1)
    for split, size in (("train", (31, 33)), ("val", (30, 29)), ("test", (32, 30))):
        (tmp_path / "bsds" / split).mkdir(parents=True)
        photo = rng.integers(0, 256, size + (3,), dtype=np.uint8)
        (tmp_path / "bsds" / split / f"{split}.jpg").write_bytes(jpeg_bytes(photo))
    mnist_m = load_script("mnist_m")
    args = ["--root", str(tmp_path), "--mnist", str(tmp_path / "mnist.npz"), "--bsds", str(tmp_path / "bsds")]
    assert mnist_m.main(args) == 0
    with np.load(tmp_path / "mnist_m" / "mnist_m.npz") as out:
        assert out["x_train"].shape == (5, 28, 28, 3) and out["x_train"].dtype == np.uint8
        assert out["x_test"].shape == (3, 28, 28, 3)
        np.testing.assert_array_equal(out["y_train"], arrays["y_train"])
        photos = mnist_m.load_photos(tmp_path / "bsds")  # decoded exactly as the script saw them
        for i in range(5):
            assert find_crop(out["x_train"][i], arrays["x_train"][i], photos["train"] + photos["val"])
        for i in range(3):  # test digits only ever sit on test photos
            assert find_crop(out["x_test"][i], arrays["x_test"][i], photos["test"])
            assert not find_crop(out["x_test"][i], arrays["x_test"][i], photos["train"] + photos["val"])
        first = out["x_train"].copy()
    capsys.readouterr()
    assert mnist_m.main(args) == 0 and "already present" in capsys.readouterr().out
    again = mnist_m.build_mnist_m(arrays, photos, seed=0)  # same seed, same images
    np.testing.assert_array_equal(again["x_train"], first)


# --------------------------------------------------------------------------- cc3m


def test_cc3m_converts_img2dataset_files_output(tmp_path, capsys):
    images = tmp_path / "cc3m" / "images"
    samples = {
        "00000/000000000": 'a dog, on "grass"',
        "00000/000000002": "  two\nlines ",
        "00001/000010001": "cat",
    }
    for key, caption in samples.items():
        (images / key).parent.mkdir(parents=True, exist_ok=True)
        (images / f"{key}.jpg").write_bytes(jpeg_bytes(np.zeros((4, 4, 3), np.uint8)))
        (images / f"{key}.txt").write_text(caption)
        (images / f"{key}.json").write_text(
            json.dumps({"key": key[-9:], "status": "success", "caption": caption})
        )
    (images / "00000" / "000000001.jpg").write_bytes(b"")  # no caption file: skipped
    (images / "00000.parquet").write_bytes(b"PAR1")
    (images / "00000_stats.json").write_text("{}")
    cc3m = load_script("cc3m")
    assert cc3m.main(["--root", str(tmp_path), "--convert-only"]) == 0
    with open(tmp_path / "cc3m" / "captions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["image"] for r in rows] == [
        "images/00000/000000000.jpg",
        "images/00000/000000002.jpg",
        "images/00001/000010001.jpg",
    ]
    assert [r["caption"] for r in rows] == ['a dog, on "grass"', "two lines", "cat"]
    assert all((tmp_path / "cc3m" / r["image"]).exists() for r in rows)
    capsys.readouterr()
    assert cc3m.main(["--root", str(tmp_path)]) == 0 and "already present" in capsys.readouterr().out


def test_cc3m_subset_and_command(tmp_path):
    tsv = tmp_path / "cc.tsv"
    tsv.write_text("".join(f"caption {i}\thttp://x/{i}.jpg\n" for i in range(20)))
    cc3m = load_script("cc3m")
    assert cc3m.write_subset(tsv, tmp_path / "s.tsv", 3) == 3
    assert (tmp_path / "s.tsv").read_text().splitlines() == ["caption\turl"] + [
        f"caption {i}\thttp://x/{i}.jpg" for i in range(3)
    ]
    cc3m.write_subset(tsv, tmp_path / "r1.tsv", 5, pick="random", seed=3)
    cc3m.write_subset(tsv, tmp_path / "r2.tsv", 5, pick="random", seed=3)
    assert (tmp_path / "r1.tsv").read_text() == (tmp_path / "r2.tsv").read_text()
    command = cc3m.img2dataset_command(tmp_path / "s.tsv", tmp_path / "images")
    assert command[0] == "img2dataset" and "--output_format=files" in command


def test_manual_steps_exit_3(tmp_path, monkeypatch, capsys):
    from obstructlib.data.fetchers import ManualStepNeeded, fetch_main

    monkeypatch.setitem(sys.modules, "gdown", None)  # make `import gdown` fail: no network attempt
    for name in ("imagenet", "cc3m", "celeba"):
        with pytest.raises(ManualStepNeeded):
            load_script(name).main(["--root", str(tmp_path)])
        assert fetch_main(name, ["--root", str(tmp_path)]) == 3
    assert capsys.readouterr().err.count("MANUAL STEP NEEDED") == 3


# --------------------------------------------------------------------------- imagenet


def fake_meta_mat() -> bytes:
    from scipy.io import savemat

    fields = [
        "ILSVRC2012_ID",
        "WNID",
        "words",
        "gloss",
        "num_children",
        "children",
        "wordnet_height",
        "num_train_images",
    ]
    synsets = np.zeros((4, 1), dtype=[(f, "O") for f in fields])
    rows = [
        (1, "n01440764", "tench", 0),
        (2, "n01443537", "goldfish", 0),
        (3, "n01484850", "white shark", 0),
        (1001, "n00001740", "entity", 3),
    ]  # the last is an inner node: torchvision drops it
    for i, (sid, wnid, words, children) in enumerate(rows):
        synsets[i, 0] = (sid, wnid, words, "", children, np.zeros(0), 0, 1300)
    buf = io.BytesIO()
    savemat(buf, {"synsets": synsets})
    return buf.getvalue()


def test_imagenet_val_from_devkit_and_train_from_tar(tmp_path):
    archives = tmp_path / "archives"
    archives.mkdir()
    truth = [1, 2, 1, 3]
    with tarfile.open(archives / "ILSVRC2012_devkit_t12.tar.gz", "w:gz") as tf:
        add_bytes(tf, "ILSVRC2012_devkit_t12/data/meta.mat", fake_meta_mat())
        add_bytes(
            tf,
            "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt",
            "".join(f"{t}\n" for t in truth).encode(),
        )
    image = jpeg_bytes(np.zeros((8, 8, 3), np.uint8))
    with tarfile.open(archives / "ILSVRC2012_img_val.tar", "w") as tf:
        for i in range(1, 5):
            add_bytes(tf, f"ILSVRC2012_val_{i:08d}.JPEG", image)
    with tarfile.open(archives / "ILSVRC2012_img_train.tar", "w") as outer:
        for wnid in ("n01440764", "n01443537"):
            inner = io.BytesIO()
            with tarfile.open(fileobj=inner, mode="w") as tf:
                for k in range(3):
                    add_bytes(tf, f"{wnid}_{k}.JPEG", image)
            add_bytes(outer, f"{wnid}.tar", inner.getvalue())
    imagenet = load_script("imagenet")
    assert imagenet.main(["--root", str(tmp_path), "--archives", str(archives), "--max-per-class", "2"]) == 0
    val = tmp_path / "imagenet" / "val"
    assert sorted(p.name for p in (val / "n01440764").iterdir()) == [
        "ILSVRC2012_val_00000001.JPEG",
        "ILSVRC2012_val_00000003.JPEG",
    ]
    assert [p.name for p in (val / "n01443537").iterdir()] == ["ILSVRC2012_val_00000002.JPEG"]
    assert [p.name for p in (val / "n01484850").iterdir()] == ["ILSVRC2012_val_00000004.JPEG"]
    train = tmp_path / "imagenet" / "train"
    assert sorted(p.name for p in train.iterdir()) == ["n01440764", "n01443537"]
    assert sorted(p.name for p in (train / "n01443537").iterdir()) == ["n01443537_0.JPEG", "n01443537_1.JPEG"]


def test_imagenet_val_from_kaggle_solution(tmp_path):
    imagenet = load_script("imagenet")
    (tmp_path / "LOC_val_solution.csv").write_text(
        "ImageId,PredictionString\nILSVRC2012_val_00000002,n02 1 2 3 4 n02 5 6 7 8\n"
        "ILSVRC2012_val_00000001,n01 1 2 3 4\n"
    )
    flat = tmp_path / "flat"
    flat.mkdir()
    for i in (1, 2):
        (flat / f"ILSVRC2012_val_{i:08d}.JPEG").write_bytes(b"jpg")
    labels = imagenet.val_labels_from_solution(tmp_path / "LOC_val_solution.csv")
    assert imagenet.prepare_val(flat, labels, tmp_path / "val") == 2
    assert (tmp_path / "val" / "n02" / "ILSVRC2012_val_00000002.JPEG").exists()
    assert (tmp_path / "val" / "n01" / "ILSVRC2012_val_00000001.JPEG").exists()
    for wnid in ("n01", "n02"):  # Kaggle's train/ is already a class-folder tree
        (tmp_path / "kaggle_train" / wnid).mkdir(parents=True)
        for k in range(3):
            (tmp_path / "kaggle_train" / wnid / f"{wnid}_{k}.JPEG").write_bytes(b"jpg")
    assert imagenet.prepare_train(tmp_path / "kaggle_train", tmp_path / "train", max_per_class=2) == 2
    assert sorted(p.name for p in (tmp_path / "train" / "n02").iterdir()) == ["n02_0.JPEG", "n02_1.JPEG"]


# --------------------------------------------------------------------------- caption datasets, celeba


def karpathy_json(path: Path, filenames, filepath: str | None = None) -> None:
    images = [{"filename": fn, "split": "test", "sentences": [{"raw": "a caption"}]} for fn in filenames]
    if filepath:
        for im in images:
            im["filepath"] = filepath
    path.write_text(json.dumps({"images": images, "dataset": "x"}))


def test_flickr8k_layout_from_zip(tmp_path, capsys):
    karpathy_json(tmp_path / "k.json", ["1.jpg", "2.jpg"])
    with zipfile.ZipFile(tmp_path / "Flickr8k_Dataset.zip", "w") as zf:
        for name in (
            "Flicker8k_Dataset/1.jpg",
            "Flicker8k_Dataset/2.jpg",
            "Flicker8k_Dataset/extra.jpg",
            "__MACOSX/._1.jpg",
        ):
            zf.writestr(name, b"jpg")
    flickr8k = load_script("flickr8k")
    args = [
        "--root",
        str(tmp_path / "data"),
        "--images-zip",
        str(tmp_path / "Flickr8k_Dataset.zip"),
        "--karpathy-json",
        str(tmp_path / "k.json"),
    ]
    assert flickr8k.main(args) == 0
    folder = tmp_path / "data" / "flickr8k"
    assert sorted(p.name for p in (folder / "images").iterdir()) == ["1.jpg", "2.jpg"]
    assert (folder / "dataset_flickr8k.json").exists()
    capsys.readouterr()
    assert flickr8k.main(args) == 0 and "already present" in capsys.readouterr().out


def test_coco_layout_from_local_zip(tmp_path):
    name = "COCO_val2014_000000000042.jpg"
    karpathy_json(tmp_path / "k.json", [name], filepath="val2014")
    (tmp_path / "zips").mkdir()
    with zipfile.ZipFile(tmp_path / "zips" / "val2014.zip", "w") as zf:
        zf.writestr(f"val2014/{name}", b"jpg")
    coco = load_script("coco_captions")
    assert (
        coco.main(
            [
                "--root",
                str(tmp_path),
                "--images",
                "val",
                "--archives",
                str(tmp_path / "zips"),
                "--karpathy-json",
                str(tmp_path / "k.json"),
                "--no-progress",
            ]
        )
        == 0
    )
    assert (tmp_path / "coco" / "val2014" / name).exists() and (
        tmp_path / "coco" / "dataset_coco.json"
    ).exists()


def test_celeba_layout_from_kaggle_folder(tmp_path):
    src = tmp_path / "kaggle"
    (src / "img_align_celeba" / "img_align_celeba").mkdir(parents=True)
    for i in (1, 2):
        (src / "img_align_celeba" / "img_align_celeba" / f"00000{i}.jpg").write_bytes(b"jpg")
    (src / "list_attr_celeba.csv").write_text("image_id,Smiling,Young\n000001.jpg,1,-1\n000002.jpg,-1,1\n")
    (src / "list_eval_partition.csv").write_text("image_id,partition\n000001.jpg,0\n000002.jpg,2\n")
    celeba = load_script("celeba")
    assert celeba.main(["--root", str(tmp_path), "--archives", str(src), "--no-progress"]) == 0
    folder = tmp_path / "celeba"
    assert (folder / "list_attr_celeba.txt").read_text().splitlines() == [
        "2",
        "Smiling Young",
        "000001.jpg 1 -1",
        "000002.jpg -1 1",
    ]
    assert (folder / "list_eval_partition.txt").read_text().splitlines() == ["000001.jpg 0", "000002.jpg 2"]
    assert sorted(p.name for p in (folder / "img_align_celeba").iterdir()) == ["000001.jpg", "000002.jpg"]


def _image_zip(path: Path, counts: dict[str, int]) -> bytes:
    with zipfile.ZipFile(path, "w") as zf:
        for folder, n in counts.items():
            for i in range(n):
                zf.writestr(f"{folder}/{i:05d}.jpg", b"jpeg")
        zf.writestr("readme.txt", "not an image")
    return path.read_bytes()


def test_an_archive_without_checksum_is_checked_by_what_it_holds(server, tmp_path):
    from obstructlib.data.fetchers._common import fetch_and_extract, image_counts, verify_structure

    good = _image_zip(tmp_path / "val2014.zip", {"val2014": 3})
    assert image_counts(tmp_path / "val2014.zip", ["val2014", "*"]) == {"val2014": 3, "*": 3}
    verify_structure(tmp_path / "val2014.zip", {"val2014": 3})
    with pytest.raises(FetchError, match=r"holds 3 images under val2014/, the published archive 40504"):
        verify_structure(tmp_path / "val2014.zip", {"val2014": 40504})
    # a download that is not the published archive (cut short, replaced) is refused before extraction
    short = _image_zip(tmp_path / "short.zip", {"val2014": 2})
    RangeHandler.files = {"good": good, "fewer": short}
    out = tmp_path / "coco"
    with pytest.raises(FetchError, match="holds 2 images"):
        fetch_and_extract(f"{server}/fewer", tmp_path / "dl" / "val2014.zip", out, expect={"val2014": 3},
                          progress=False)
    assert not (out / "val2014").exists()
    fetch_and_extract(f"{server}/good", tmp_path / "dl2" / "val2014.zip", out, expect={"val2014": 3},
                      progress=False)
    assert len(list((out / "val2014").glob("*.jpg"))) == 3


def test_unchecked_downloads_are_https_and_name_their_expected_contents():
    coco, mnist_m, flickr8k = (load_script(n) for n in ("coco_captions", "mnist_m", "flickr8k"))
    assert coco.BASE.startswith("https://") and coco.IMAGES == {"train2014": 82_783, "val2014": 40_504}
    assert all(u.startswith("https://") for u in mnist_m.BSDS_URLS)
    assert sum(mnist_m.BSDS_IMAGES.values()) == 500 and flickr8k.MIRROR_IMAGES == {"*": 8091}


# ------------------------------------------------ in the package: ob.data.fetch, the command, first use


def usps_on_server(monkeypatch, tmp_path) -> dict[str, bytes]:
    """Tiny USPS libsvm files (the real format) served by the test server; the fetcher's MD5s set to theirs."""
    usps = load_script("usps")
    files = {}
    for name, n in (("usps.bz2", 20), ("usps.t.bz2", 10)):
        rng = np.random.default_rng(len(name))
        path = tmp_path / "served" / name
        path.parent.mkdir(exist_ok=True)
        usps.write_libsvm_bz2(path, rng.integers(0, 256, (n, 16, 16), dtype=np.uint8), np.arange(n) % 10)
        files[name] = path.read_bytes()
    RangeHandler.files.update(files)
    monkeypatch.setattr(usps, "FILES", {k: md5_of(v) for k, v in files.items()})
    monkeypatch.setattr(usps, "BASE", "http://127.0.0.1:9/unreachable/")  # only the mirror can serve
    return files


def test_fetch_api_through_mirror(server, tmp_path, monkeypatch):
    import obstructlib as ob

    files = usps_on_server(monkeypatch, tmp_path)
    monkeypatch.setenv("OBSTRUCT_MIRROR", server)
    assert ob.data.fetch("usps", tmp_path, progress=False) == tmp_path
    assert (tmp_path / "usps" / "usps.t.bz2").read_bytes() == files["usps.t.bz2"]
    served = len(RangeHandler.log)
    assert ob.data.fetch("usps", tmp_path, progress=False) == tmp_path and len(RangeHandler.log) == served
    test = ob.load_dataset("usps", tmp_path, "test", download=False)
    assert len(test) == 10 and test[3][1] == 3


def test_fetch_api_bad_input(tmp_path):
    import obstructlib as ob
    from obstructlib.errors import ConfigError

    with pytest.raises(ConfigError, match="no fetcher for 'nope'"):
        ob.data.fetch("nope", tmp_path)
    with pytest.raises(ConfigError, match="bad options"):
        ob.data.fetch("usps", tmp_path, no_such_flag=1)


def test_loader_fetches_on_first_use_unless_forbidden(server, tmp_path, monkeypatch):
    from obstructlib.data import load_dataset
    from obstructlib.errors import DatasetNotFoundError

    usps_on_server(monkeypatch, tmp_path)
    monkeypatch.setenv("OBSTRUCT_MIRROR", server)
    monkeypatch.setenv("OBSTRUCT_DOWNLOAD", "0")
    with pytest.raises(DatasetNotFoundError, match="obstruct data fetch usps"):
        load_dataset("usps", tmp_path, "train")
    assert RangeHandler.log == []  # forbidden: not one request
    monkeypatch.setenv("OBSTRUCT_DOWNLOAD", "1")
    assert len(load_dataset("usps", tmp_path, "train", progress=False)) == 20
    assert len(RangeHandler.log) == 2


def test_loader_download_failure_names_the_command(tmp_path, monkeypatch):
    from obstructlib.data import load_dataset
    from obstructlib.errors import DatasetNotFoundError

    monkeypatch.setattr(load_script("usps"), "BASE", "http://127.0.0.1:9/unreachable/")
    monkeypatch.delenv("OBSTRUCT_MIRROR", raising=False)
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("usps", tmp_path, "train", download=True, progress=False)
    message = str(info.value)
    assert "\n" not in message and "could not download 'usps'" in message
    assert f"obstruct data fetch usps --root {tmp_path}" in message


def test_data_command_exit_codes(server, tmp_path, monkeypatch, capsys):
    from obstructlib.cli import main

    usps_on_server(monkeypatch, tmp_path)
    monkeypatch.setenv("OBSTRUCT_MIRROR", server)
    assert main(["data", "fetch", "usps", "--root", str(tmp_path), "--no-progress"]) == 0
    assert (tmp_path / "usps" / "usps.bz2").exists()
    assert main(["data", "fetch", "usps", "--data-root", str(tmp_path), "--no-progress"]) == 0  # the runners' name
    assert "already present" in capsys.readouterr().out
    assert main(["data", "list"]) == 0 and "usps" in capsys.readouterr().out
    assert main(["data", "fetch", "nope"]) == 2
    assert main(["data", "fetch"]) == 2
    monkeypatch.setitem(sys.modules, "gdown", None)
    assert main(["data", "fetch", "celeba", "--root", str(tmp_path)]) == 3
    err = capsys.readouterr().err
    assert "no fetcher for 'nope'" in err and "MANUAL STEP NEEDED" in err
    monkeypatch.setattr(load_script("usps"), "BASE", "http://127.0.0.1:9/unreachable/")
    monkeypatch.delenv("OBSTRUCT_MIRROR")
    assert main(["data", "fetch", "usps", "--root", str(tmp_path / "other"), "--no-progress"]) == 1
    assert capsys.readouterr().err.startswith("error: could not download usps.bz2")


def test_one_data_root_rule(tmp_path, monkeypatch):
    from obstructlib.data import default_data_root
    from obstructlib.data.fetchers import _common

    monkeypatch.setenv("OBSTRUCT_DATA", str(tmp_path / "d"))
    assert default_data_root() == tmp_path / "d"
    assert _common.make_parser("x", "").parse_args([]).root == str(tmp_path / "d")
    monkeypatch.delenv("OBSTRUCT_DATA")
    repo = Path(__file__).resolve().parents[1]  # this checkout: <repo>/data wherever we are
    monkeypatch.chdir(tmp_path)
    assert default_data_root() == repo / "data"
    # an installed wheel (no pyproject.toml beside the package): ./data of the working directory
    monkeypatch.setattr(_common, "__file__", str(tmp_path / "site-packages/obstructlib/data/fetchers/_common.py"))
    assert default_data_root() == Path("data")


def test_one_runs_root_rule(tmp_path, monkeypatch):
    from obstructlib.data import base, default_runs_root

    monkeypatch.setenv("OBSTRUCT_RUNS", str(tmp_path / "r"))
    assert default_runs_root() == tmp_path / "r"
    monkeypatch.delenv("OBSTRUCT_RUNS")
    monkeypatch.setattr(base, "_DRIVE", tmp_path / "nodrive")
    assert default_runs_root() == Path("runs")
    (tmp_path / "MyDrive").mkdir()
    monkeypatch.setattr(base, "_DRIVE", tmp_path / "MyDrive")  # Colab with Google Drive mounted
    assert default_runs_root() == tmp_path / "MyDrive" / "obstructlib" / "runs"
