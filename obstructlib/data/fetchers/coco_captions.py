"""Download COCO 2014 images and the Karpathy split: ROOT/coco/{dataset_coco.json, train2014/, val2014/}."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ._captions import KARPATHY_HELP, get_karpathy_json, karpathy_filenames
from ._common import already_present, extract, fetch_and_extract, make_parser, run_script, say

BASE = "https://images.cocodataset.org/zips/"
ZIPS = {"train2014": "train2014.zip", "val2014": "val2014.zip"}
# COCO publishes no checksum for its image zips: a download is checked by its image count instead.
IMAGES = {"train2014": 82_783, "val2014": 40_504}

DESCRIPTION = f"""\
Fetch MS-COCO 2014 images (Lin et al., arXiv 1405.0312) with the Karpathy caption split
(113,287 train incl. restval / 5,000 val / 5,000 test images, 5 captions each; arXiv 1412.2306).

What: {BASE}train2014.zip (13 GB, 82,783 images) and {BASE}val2014.zip (6.2 GB, 40,504
images); --images val fetches only val2014, which holds all Karpathy val and test images.
Already downloaded zips can be given with --archives DIR. Downloads resume after interruption.
Captions: the {KARPATHY_HELP}
Downloaded automatically unless --karpathy-json / --karpathy-zip is given.
Licence: annotations CC BY 4.0; images under their Flickr owners' terms.
Writes: ROOT/coco/dataset_coco.json, ROOT/coco/train2014/*.jpg, ROOT/coco/val2014/*.jpg.
"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser("coco_captions", DESCRIPTION)
    parser.add_argument(
        "--images", choices=("both", "val"), default="both", help="which image zips (default both)"
    )
    parser.add_argument(
        "--archives", metavar="DIR", help="folder that already holds train2014.zip / val2014.zip"
    )
    parser.add_argument("--karpathy-json", metavar="PATH", help="a local dataset_coco.json")
    parser.add_argument("--karpathy-zip", metavar="PATH", help="a local caption_datasets.zip")
    parser.add_argument(
        "--keep-archives", action="store_true", help="keep the downloaded zips after extraction"
    )
    args = parser.parse_args(argv)
    root, progress = Path(args.root), not args.no_progress
    folder = root / "coco"
    splits = ["val2014"] if args.images == "val" else ["train2014", "val2014"]
    markers = [folder / "dataset_coco.json"] + [folder / f".extracted-{ZIPS[s]}" for s in splits]
    if already_present("coco_captions", markers, folder):
        return 0
    json_path = get_karpathy_json(
        "coco", folder / "dataset_coco.json", args.karpathy_json, args.karpathy_zip, root, progress
    )
    for split in splits:
        given = Path(args.archives) / ZIPS[split] if args.archives else None
        if given is not None and given.exists():
            say(f"extracting {given} into {folder}")
            extract(given, folder, progress=progress)
        else:
            fetch_and_extract(
                BASE + ZIPS[split],
                folder / ZIPS[split],
                folder,
                expect={split: IMAGES[split]},
                keep_archive=args.keep_archives,
                progress=progress,
            )
    entries = karpathy_filenames(json_path)
    present = sum((folder / fp / fn).exists() for fp, fn in entries)
    say(
        f"coco_captions: ready at {folder} ({present} of {len(entries)} Karpathy images present"
        + (", train2014 not fetched)" if args.images == "val" else ")")
    )
    return 0


if __name__ == "__main__":
    run_script(main)
