"""Lay out Flickr8k with the Karpathy split: ROOT/flickr8k/{images/*.jpg, dataset_flickr8k.json}."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ._captions import KARPATHY_HELP, flickr_present, prepare_flickr
from ._common import download, make_parser, run_script, say, verify_structure

MIRROR_URL = "https://github.com/jbrownlee/Datasets/releases/download/Flickr8k/Flickr8k_Dataset.zip"
# The mirror publishes no checksum: a download is checked by its image count (Flickr8k: 8,091).
MIRROR_IMAGES = {"*": 8091}

DESCRIPTION = f"""\
Prepare Flickr8k (8,091 Flickr photos, 5 captions each; Hodosh, Young & Hockenmaier, JAIR 2013)
with the Karpathy split (6,000 train / 1,000 val / 1,000 test; arXiv 1412.2306).

Images: the official Flickr8k_Dataset.zip (1.1 GB) is given out through a request form at the
University of Illinois; Kaggle's "flickr8k" (Images/ + captions.txt) holds the same photos.
Pass the zip (or its extracted folder) as --images-zip. --mirror downloads the zip from an
unofficial GitHub mirror ({MIRROR_URL}).
Captions: the {KARPATHY_HELP}
Downloaded automatically unless --karpathy-json / --karpathy-zip is given.
Licence: images under their Flickr owners' terms, research use only; captions for research.
Writes: ROOT/flickr8k/images/*.jpg (flat) and ROOT/flickr8k/dataset_flickr8k.json.
"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser("flickr8k", DESCRIPTION)
    parser.add_argument(
        "--images-zip",
        metavar="PATH",
        help="Flickr8k_Dataset.zip, a Kaggle archive, or a folder of the JPEGs",
    )
    parser.add_argument("--karpathy-json", metavar="PATH", help="a local dataset_flickr8k.json")
    parser.add_argument("--karpathy-zip", metavar="PATH", help="a local caption_datasets.zip")
    parser.add_argument(
        "--mirror", action="store_true", help="download the images from the unofficial GitHub mirror"
    )
    args = parser.parse_args(argv)
    root = Path(args.root)
    images = args.images_zip
    if args.mirror and not images and flickr_present("flickr8k", root):  # no 1.1 GB download to find that out
        say(f"flickr8k: already present at {root / 'flickr8k'}")
        return 0
    if args.mirror and not images:
        images = str(download(MIRROR_URL, root / "Flickr8k_Dataset.zip", progress=not args.no_progress))
        verify_structure(images, MIRROR_IMAGES)
    how_to_get = (
        "Flickr8k images need a manual download:\n"
        "  1. get Flickr8k_Dataset.zip (request form at https://forms.illinois.edu/sec/1713398)"
        " or Kaggle's 'flickr8k'\n"
        f"  2. run: obstruct data fetch flickr8k --root {args.root} --images-zip PATH\n"
        "  (or add --mirror to download the zip from an unofficial GitHub mirror)"
    )
    return prepare_flickr(
        "flickr8k", root, images, args.karpathy_json, args.karpathy_zip, not args.no_progress, how_to_get
    )


if __name__ == "__main__":
    run_script(main)
