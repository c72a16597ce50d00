"""Prepare CelebA aligned: ROOT/celeba/{img_align_celeba/*.jpg, list_attr_celeba.txt, list_eval_partition.txt}."""

from __future__ import annotations

import csv
import shutil
from collections.abc import Sequence
from pathlib import Path

from ._captions import copy_images_flat
from ._common import FetchError, already_present, checksum_error, make_parser, manual_step, run_script, say

# Google-Drive ids and MD5s as in torchvision/datasets/celeba.py.
FILES = {
    "img_align_celeba.zip": ("0B7EVK8r0v71pZjFTYXZWM3FlRnM", "00d2c5bc6d35e252742224ab0c1e8fcb"),
    "list_attr_celeba.txt": ("0B7EVK8r0v71pblRyaVFSWGxPY0U", "75e246fa4810816ffd6ee81facbd244c"),
    "identity_CelebA.txt": ("1_ee_0u7vcNLOfNLegJRHmolfH5ICW-XS", "32bd1bd63d3c78cd57e08160ec5ed1e2"),
    "list_bbox_celeba.txt": ("0B7EVK8r0v71pbThiMVRxWXZ4dU0", "00566efa6fedff7a56946cd1c10f1c16"),
    "list_landmarks_align_celeba.txt": ("0B7EVK8r0v71pd0FJY3Blby1HUTQ", "cc24ecafdb5b50baae59b03474781f8c"),
    "list_eval_partition.txt": ("0B7EVK8r0v71pY0NSMzRuSXJEVkk", "d32c9cbf5e040fd4025c592c306e6668"),
}
REQUIRED = ("list_attr_celeba.txt", "list_eval_partition.txt")

DESCRIPTION = """\
Prepare CelebA, aligned and cropped (202,599 face images, 40 binary attributes; Liu et al.,
ICCV 2015, arXiv 1411.7766).

The files live on Google Drive (https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html), whose daily
quota often refuses scripted downloads. With gdown installed (pip install gdown) this script
tries the Drive ids torchvision uses; otherwise, or when Drive refuses, it tells you to download
by hand and run it again with --archives DIR, DIR holding img_align_celeba.zip (1.4 GB),
list_attr_celeba.txt and list_eval_partition.txt (MD5-checked), or Kaggle's
"celeba-dataset" extracted (img_align_celeba/ folder and the .csv lists, converted to .txt).
Licence: non-commercial research and education only (CUHK agreement).
Writes: ROOT/celeba/img_align_celeba/*.jpg, list_attr_celeba.txt, list_eval_partition.txt
(and identity/bbox/landmark lists when given).
"""


def csv_to_celeba_txt(csv_path: Path, txt_path: Path, header: bool) -> None:
    """Convert a Kaggle CelebA list (.csv) to the official whitespace format.

    With ``header`` the output starts with the row count and the column names (list_attr style),
    otherwise rows only (list_eval_partition style).
    """
    with open(csv_path, newline="") as fh:
        rows = list(csv.reader(fh))
    names, body = rows[0][1:], rows[1:]
    lines = [f"{len(body)}", " ".join(names)] if header else []
    lines += [" ".join(row) for row in body]
    txt_path.write_text("\n".join(lines) + "\n")


def _gdown_fetch(folder: Path, progress: bool) -> Path | None:
    """Try the Google-Drive download; None when gdown is missing or Drive refuses."""
    try:
        import gdown
    except ImportError:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    for name, (file_id, md5) in FILES.items():
        path = folder / name
        if path.exists() and not checksum_error(path, md5, None):
            continue
        try:
            gdown.download(id=file_id, output=str(path), quiet=not progress)
        except Exception as exc:  # noqa: BLE001  (gdown raises its own types for quota and permission errors)
            say(f"celeba: Google Drive refused {name} ({type(exc).__name__})")
            return None
        if not path.exists() or checksum_error(path, md5, None):
            path.unlink(missing_ok=True)
            return None
    return folder


def _find_first(folder: Path, names: Sequence[str]) -> Path | None:
    for name in names:
        hits = sorted(folder.rglob(name))
        if hits:
            return hits[0]
    return None


def lay_out(source: Path, folder: Path, progress: bool = True) -> None:
    """Copy annotation lists and images from ``source`` (official files or Kaggle's) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, (_, md5) in FILES.items():
        if name.endswith(".zip"):
            continue
        found = _find_first(source, [name])
        csv_found = _find_first(source, [name.replace(".txt", ".csv")])
        if found is not None:
            if checksum_error(found, md5, None):
                raise FetchError(f"{found} has the wrong MD5: download it again")
            if found.resolve() != (folder / name).resolve():
                shutil.copyfile(found, folder / name)
        elif csv_found is not None:
            csv_to_celeba_txt(csv_found, folder / name, header=name != "list_eval_partition.txt")
        elif name in REQUIRED:
            raise FetchError(f"no {name} (or .csv) under {source}: download it there first")
    archive = _find_first(source, ["img_align_celeba.zip"])
    if archive is not None and checksum_error(archive, FILES["img_align_celeba.zip"][1], None):
        raise FetchError(f"{archive} has the wrong MD5: download it again")
    images = archive or next((p for p in sorted(source.rglob("img_align_celeba")) if p.is_dir()), None)
    if images is None:
        raise FetchError(f"no img_align_celeba.zip or img_align_celeba/ folder under {source}")
    count = copy_images_flat(images, folder / "img_align_celeba", progress=progress)
    if count == 0:
        raise FetchError(f"no JPEGs in {images}: check the download")
    say(f"celeba: {count} images in {folder / 'img_align_celeba'}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser("celeba", DESCRIPTION)
    parser.add_argument(
        "--archives", metavar="DIR", help="folder with the files you downloaded (official or Kaggle)"
    )
    parser.add_argument("--keep-archive", action="store_true", help="keep a downloaded img_align_celeba.zip")
    args = parser.parse_args(argv)
    folder = Path(args.root) / "celeba"
    done = folder / ".done-images"
    if already_present("celeba", [done] + [folder / n for n in REQUIRED], folder):
        return 0
    progress = not args.no_progress
    source = Path(args.archives) if args.archives else _gdown_fetch(folder / "_download", progress)
    if source is None:
        manual_step(
            "CelebA could not be fetched from Google Drive (gdown missing or the daily quota is used up):\n"
            "  1. from https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html (Google Drive, folder Img and Anno) download\n"
            "     img_align_celeba.zip, list_attr_celeba.txt, list_eval_partition.txt into a folder DIR\n"
            "     (or extract Kaggle's 'celeba-dataset' into DIR)\n"
            f"  2. run: obstruct data fetch celeba --root {args.root} --archives DIR\n"
            "  (or pip install gdown and re-run this command later)"
        )
    lay_out(source, folder, progress)
    if not args.archives and not args.keep_archive:
        shutil.rmtree(folder / "_download", ignore_errors=True)
    done.touch()
    say(f"celeba: ready at {folder}")
    return 0


if __name__ == "__main__":
    run_script(main)
