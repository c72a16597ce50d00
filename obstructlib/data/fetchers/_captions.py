"""Helpers shared by flickr8k.py, flickr30k.py and coco_captions.py: Karpathy splits, image copying.

References:
    Karpathy & Fei-Fei, "Deep Visual-Semantic Alignments for Generating Image Descriptions",
    CVPR 2015, arXiv 1412.2306: the train/val/test splits every retrieval paper reports on.
"""

from __future__ import annotations

import json
import shutil
import tarfile
import zipfile
from functools import partial
from pathlib import Path

from ._common import FetchError, download, manual_step, member_bytes, say

# No checksum is published for this zip; get_karpathy_json checks what it holds instead (the
# dataset_<name>.json member) and karpathy_filenames its structure (an "images" list).
KARPATHY_URL = "https://cs.stanford.edu/people/karpathy/deepimagesent/caption_datasets.zip"
KARPATHY_HELP = (
    "Karpathy split JSON: caption_datasets.zip (dataset_coco.json, dataset_flickr8k.json, "
    f"dataset_flickr30k.json; about 36 MB) from {KARPATHY_URL}; if that page is gone, the same "
    "files are on Kaggle (search 'karpathy splits')."
)
IMAGE_SUFFIXES = (".jpg", ".jpeg")


def get_karpathy_json(
    name: str,
    dest: Path,
    json_path: str | None,
    zip_path: str | None,
    download_dir: Path,
    progress: bool = True,
) -> Path:
    """Put ``dataset_<name>.json`` at ``dest`` from a given JSON, a given zip, or a download.

    Args:
        name: ``coco``, ``flickr8k`` or ``flickr30k``.
        dest: where the JSON goes.
        json_path: a local copy of the JSON, or None.
        zip_path: a local caption_datasets.zip, or None (then it is downloaded into ``download_dir``
            and kept there, so the other caption datasets reuse it).
        download_dir: folder for the downloaded zip.
        progress: show download progress.
    """
    member = f"dataset_{name}.json"
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    if json_path:
        shutil.copyfile(json_path, dest)
        return dest
    if zip_path is None:
        try:
            zip_path = str(download(KARPATHY_URL, download_dir / "caption_datasets.zip", progress=progress))
        except FetchError as exc:
            manual_step(
                f"{exc}\nGet the {KARPATHY_HELP}\nthen pass --karpathy-zip PATH or --karpathy-json PATH."
            )
    with zipfile.ZipFile(zip_path) as zf:
        names = [n for n in zf.namelist() if n.endswith(member)]
        if not names:
            raise FetchError(f"{zip_path} has no {member}: give Karpathy's caption_datasets.zip")
        tmp = dest.with_name(dest.name + ".tmp")
        tmp.write_bytes(zf.read(names[0]))
        tmp.replace(dest)
    return dest


def karpathy_filenames(json_path: Path) -> list[tuple[str, str]]:
    """(filepath, filename) of every image in a Karpathy JSON (filepath is '' for Flickr)."""
    with open(json_path, encoding="utf-8") as fh:
        images = json.load(fh)["images"]
    return [(im.get("filepath", ""), im["filename"]) for im in images]


def copy_images_flat(
    source: Path, out_dir: Path, wanted: set[str] | None = None, progress: bool = True
) -> int:
    """Copy the JPEGs of a zip, a tar or a folder (any nesting) into ``out_dir`` by base name.

    Only base names are used, so no member can land outside ``out_dir``; files already there are
    skipped (a re-run resumes). Returns the number of wanted images now in ``out_dir``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    count = 0

    def keep(name: str) -> str | None:
        base = Path(name).name
        ok = (
            base.lower().endswith(IMAGE_SUFFIXES)
            and not base.startswith("._")
            and (wanted is None or base in wanted)
        )
        return base if ok else None

    def write(base: str, read) -> None:
        nonlocal count
        target = out_dir / base
        if not target.exists():
            tmp = target.with_name(base + ".tmp")
            tmp.write_bytes(read())
            tmp.replace(target)
        count += 1
        if progress and count % 5000 == 0:
            say(f"{out_dir}: {count} images")

    if source.is_dir():
        for path in sorted(source.rglob("*")):
            if path.is_file() and (base := keep(path.name)):
                write(base, path.read_bytes)
    elif zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as zf:
            for info in zf.infolist():
                if not info.is_dir() and (base := keep(info.filename)):
                    write(base, lambda info=info: zf.read(info))
    elif tarfile.is_tarfile(source):
        with tarfile.open(source, "r|*") as tf:
            for member in tf:
                if member.isfile() and (base := keep(member.name)):
                    write(base, partial(member_bytes, tf, member))
    else:
        raise FetchError(f"{source} is not a folder, zip or tar of images")
    return count


def flickr_present(name: str, root: Path) -> bool:
    """Whether ``ROOT/<name>`` holds the Karpathy JSON and every image it names."""
    folder = root / name
    json_path = folder / f"dataset_{name}.json"
    if not json_path.exists() or not (folder / "images").is_dir():
        return False
    have = {p.name for p in (folder / "images").glob("*.jpg")}
    return not {fn for _, fn in karpathy_filenames(json_path)} - have


def prepare_flickr(
    name: str,
    root: Path,
    images: str | None,
    json_path: str | None,
    zip_path: str | None,
    progress: bool,
    how_to_get: str,
) -> int:
    """Lay out ``ROOT/<name>/{images/*.jpg, dataset_<name>.json}`` and check every image is there."""
    folder = root / name
    if flickr_present(name, root):
        say(f"{name}: already present at {folder}")
        return 0
    json_dest = get_karpathy_json(name, folder / f"dataset_{name}.json", json_path, zip_path, root, progress)
    wanted = {fn for _, fn in karpathy_filenames(json_dest)}
    images_dir = folder / "images"
    have = {p.name for p in images_dir.glob("*.jpg")} if images_dir.exists() else set()
    if wanted - have:
        if not images:
            manual_step(how_to_get)
        copy_images_flat(Path(images), images_dir, wanted, progress)
        have = {p.name for p in images_dir.glob("*.jpg")}
    missing = wanted - have
    if len(missing) == len(wanted):
        raise FetchError(f"none of the {len(wanted)} {name} images was found in {images}: check the archive")
    if missing:
        say(f"{name}: warning: {len(missing)} of {len(wanted)} images are missing, e.g. {min(missing)}")
        return 1
    say(f"{name}: ready at {folder} ({len(wanted)} images)")
    return 0
