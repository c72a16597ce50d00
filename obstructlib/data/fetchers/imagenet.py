"""Prepare ImageNet-1k (ILSVRC2012) as ImageFolder trees ROOT/imagenet/{train,val}/<wnid>/*.JPEG."""

from __future__ import annotations

import csv
import io
import os
import shutil
import tarfile
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from ._common import (
    FetchError,
    already_present,
    checksum_error,
    copy_or_link,
    make_parser,
    manual_step,
    member_bytes,
    run_script,
    say,
)

# Archive names and MD5s as in torchvision/datasets/imagenet.py (ARCHIVE_META).
ARCHIVES = {
    "train": ("ILSVRC2012_img_train.tar", "1d675b47d978889d74fa0da5fadfb00e"),
    "val": ("ILSVRC2012_img_val.tar", "29b22e2961454d5413ddabcf34fc5622"),
    "devkit": ("ILSVRC2012_devkit_t12.tar.gz", "fa75699e90414af021442c21a62c3abf"),
}
VAL_SOLUTION = "LOC_val_solution.csv"  # the Kaggle "ImageNet Object Localization Challenge" labels
KAGGLE_DIR = Path("ILSVRC") / "Data" / "CLS-LOC"

DESCRIPTION = """\
Prepare ImageNet-1k (ILSVRC2012; Russakovsky et al., arXiv 1409.0575) for an ImageFolder loader.

ImageNet cannot be downloaded without accepting its licence, so this script starts from files
you fetched yourself, in one folder given as --archives DIR:
  - from https://image-net.org/challenges/LSVRC/2012/2012-downloads.php (after registering):
    ILSVRC2012_img_train.tar (138 GB), ILSVRC2012_img_val.tar (6.3 GB) and
    ILSVRC2012_devkit_t12.tar.gz (2.5 MB; val labels = data/ILSVRC2012_validation_ground_truth.txt
    mapped to WordNet ids through data/meta.mat, as torchvision's parse_devkit_archive does);
  - or the Kaggle "imagenet-object-localization-challenge" download, extracted: ILSVRC/Data/
    CLS-LOC/{train,val}/ and LOC_val_solution.csv.
Train: the per-class tars inside the train tar are streamed straight into train/<wnid>/ (no
second 138 GB copy); --max-per-class K keeps the first K images of every class. Val: the 50,000
flat images are sorted into val/<wnid>/. Interrupted runs resume (finished classes are kept).
Licence: ImageNet terms of access, non-commercial research and education only.
Writes: ROOT/imagenet/train/<wnid>/*.JPEG and ROOT/imagenet/val/<wnid>/*.JPEG (1000 classes).
"""


# --------------------------------------------------------------------------- val labels


def _devkit_files(devkit: Path) -> tuple[bytes, bytes]:
    """(meta.mat bytes, validation ground-truth bytes) from a devkit .tar.gz or extracted folder."""
    wanted = ("data/meta.mat", "data/ILSVRC2012_validation_ground_truth.txt")
    found: dict[str, bytes] = {}
    if devkit.is_dir():
        for want in wanted:
            hits = sorted(devkit.rglob(Path(want).name))
            if hits:
                found[want] = hits[0].read_bytes()
    else:
        with tarfile.open(devkit) as tf:
            for member in tf:
                for want in wanted:
                    if member.isfile() and member.name.endswith(want):
                        found[want] = member_bytes(tf, member)
    if len(found) < 2:
        raise FetchError(
            f"{devkit} lacks meta.mat or the validation ground truth: give ILSVRC2012_devkit_t12.tar.gz"
        )
    return found[wanted[0]], found[wanted[1]]


def val_labels_from_devkit(devkit: str | Path) -> dict[str, str]:
    """Val file name -> WordNet id, from the ILSVRC2012 devkit (like torchvision's parse_devkit_archive).

    Line ``i`` (1-based) of ``ILSVRC2012_validation_ground_truth.txt`` holds the ILSVRC2012_ID of
    ``ILSVRC2012_val_{i:08d}.JPEG``; ``meta.mat`` maps the IDs of the 1,000 leaf synsets
    (``num_children == 0``) to WordNet ids.
    """
    from scipy.io import loadmat  # only this path needs scipy

    meta_bytes, truth_bytes = _devkit_files(Path(devkit))
    synsets = loadmat(io.BytesIO(meta_bytes), squeeze_me=True)["synsets"]
    id_to_wnid = {
        int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in synsets.ravel() if int(s["num_children"]) == 0
    }
    labels = {}
    for i, line in enumerate(truth_bytes.decode().split(), start=1):
        labels[f"ILSVRC2012_val_{i:08d}.JPEG"] = id_to_wnid[int(line)]
    return labels


def val_labels_from_solution(csv_path: str | Path) -> dict[str, str]:
    """Val file name -> WordNet id from Kaggle's LOC_val_solution.csv (first box's class)."""
    with open(csv_path, newline="") as fh:
        return {row["ImageId"] + ".JPEG": row["PredictionString"].split()[0] for row in csv.DictReader(fh)}


# --------------------------------------------------------------------------- preparation


def prepare_val(source: str | Path, labels: dict[str, str], out_dir: str | Path) -> int:
    """Sort the flat val images (a tar or a folder) into ``out_dir/<wnid>/``; returns the count."""
    source, out_dir = Path(source), Path(out_dir)
    count = 0

    def put(name: str, read) -> None:
        nonlocal count
        wnid = labels.get(name)
        if wnid is None:
            return
        target = out_dir / wnid / name
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(name + ".tmp")
            tmp.write_bytes(read())
            tmp.replace(target)
        count += 1

    if source.is_dir():
        for path in sorted(source.iterdir()):
            if path.name in labels:
                target = out_dir / labels[path.name] / path.name
                if not target.exists():
                    copy_or_link(path, target)
                count += 1
    else:
        with tarfile.open(source, "r|*") as tf:  # stream: one pass over 6 GB
            for member in tf:
                if member.isfile():
                    put(os.path.basename(member.name), partial(member_bytes, tf, member))
    if count == 0:
        raise FetchError(
            f"no labelled val images found in {source}: check the val archive and the labels file"
        )
    return count


def prepare_train(
    source: str | Path, out_dir: str | Path, max_per_class: int | None = None, progress: bool = True
) -> int:
    """Fill ``out_dir/<wnid>/`` from the train tar (one inner tar per class) or a class folder tree.

    Each class is written to ``<wnid>.tmp`` and renamed when complete, so a re-run skips the
    classes already done. Returns the number of classes present afterwards.
    """
    source, out_dir = Path(source), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        for class_dir in sorted(p for p in source.iterdir() if p.is_dir()):
            if not (out_dir / class_dir.name).exists():  # hard links when possible: no second copy
                tmp = out_dir / f"{class_dir.name}.tmp"
                tmp.mkdir(exist_ok=True)
                for f in sorted(class_dir.iterdir())[:max_per_class]:
                    if not (tmp / f.name).exists():
                        copy_or_link(f, tmp / f.name)
                tmp.replace(out_dir / class_dir.name)
    else:
        with tarfile.open(source, "r|*") as outer:
            for member in outer:
                wnid = Path(member.name).name.removesuffix(".tar")
                if not member.isfile() or not member.name.endswith(".tar") or (out_dir / wnid).exists():
                    continue
                tmp = out_dir / f"{wnid}.tmp"
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir()
                kept = 0
                with tarfile.open(fileobj=outer.extractfile(member), mode="r|*") as inner:
                    for image in inner:
                        if max_per_class is not None and kept >= max_per_class:
                            break
                        if image.isfile():  # basename only: nothing can land outside tmp
                            (tmp / os.path.basename(image.name)).write_bytes(member_bytes(inner, image))
                            kept += 1
                tmp.replace(out_dir / wnid)
                if progress:
                    say(f"imagenet train: {wnid} ({kept} images)")
    return sum(1 for p in out_dir.iterdir() if p.is_dir() and not p.name.endswith(".tmp"))


# --------------------------------------------------------------------------- main


def _find(archives: Path, *candidates: Path | str) -> Path | None:
    for candidate in candidates:
        if (archives / candidate).exists():
            return archives / candidate
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser("imagenet", DESCRIPTION)
    parser.add_argument(
        "--archives",
        metavar="DIR",
        help="folder with the ILSVRC2012 archives (or Kaggle's extracted download)",
    )
    parser.add_argument(
        "--splits", default="train,val", help="comma-separated splits to prepare (default train,val)"
    )
    parser.add_argument("--max-per-class", type=int, help="keep only the first K train images of each class")
    parser.add_argument(
        "--verify", action="store_true", help="MD5-check the official archives first (slow for 138 GB)"
    )
    args = parser.parse_args(argv)
    folder = Path(args.root) / "imagenet"
    splits = [s.strip() for s in args.splits.split(",") if s.strip()]
    if not splits or set(splits) - {"train", "val"}:
        raise FetchError(f"--splits {args.splits!r}: use train, val or train,val")
    if already_present("imagenet", [folder / f".done-{s}" for s in splits], folder):
        return 0
    if not args.archives:
        manual_step(
            "ImageNet needs a licence you accept yourself:\n"
            "  1. register at https://image-net.org and download ILSVRC2012_img_train.tar, ILSVRC2012_img_val.tar\n"
            "     and ILSVRC2012_devkit_t12.tar.gz into one folder DIR (or extract Kaggle's\n"
            "     imagenet-object-localization-challenge download into DIR)\n"
            f"  2. run: obstruct data fetch imagenet --root {args.root} --archives DIR"
        )
    archives = Path(args.archives)
    for split in splits:
        if (folder / f".done-{split}").exists():
            continue
        source = _find(archives, ARCHIVES[split][0], KAGGLE_DIR / split)
        if source is None:
            raise FetchError(
                f"no {ARCHIVES[split][0]} or {KAGGLE_DIR / split} in {archives}: download it there first"
            )
        if args.verify and source.is_file() and checksum_error(source, ARCHIVES[split][1], None):
            raise FetchError(f"{source} has the wrong MD5: download it again")
        if split == "train":
            num_classes = prepare_train(
                source, folder / "train", args.max_per_class, progress=not args.no_progress
            )
            say(f"imagenet: train ready, {num_classes} classes")
        else:
            devkit = _find(archives, ARCHIVES["devkit"][0], "ILSVRC2012_devkit_t12")
            solution = _find(archives, VAL_SOLUTION)
            if devkit is None and solution is None:
                raise FetchError(
                    f"no {ARCHIVES['devkit'][0]} or {VAL_SOLUTION} in {archives}: the val labels come from one of them"
                )
            labels = val_labels_from_devkit(devkit) if devkit else val_labels_from_solution(solution)  # type: ignore[arg-type]
            say(f"imagenet: val ready, {prepare_val(source, labels, folder / 'val')} images")
        (folder / f".done-{split}").touch()
    return 0


if __name__ == "__main__":
    run_script(main)
