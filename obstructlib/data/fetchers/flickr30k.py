"""Lay out Flickr30k with the Karpathy split: ROOT/flickr30k/{images/*.jpg, dataset_flickr30k.json}."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ._captions import KARPATHY_HELP, prepare_flickr
from ._common import make_parser, run_script

DESCRIPTION = f"""\
Prepare Flickr30k (31,783 Flickr photos, 5 captions each; Young et al., TACL 2014) with the
Karpathy split (29,000 train / 1,014 val / 1,000 test; arXiv 1412.2306).

Images: flickr30k-images.tar.gz (4.4 GB) is given out through a request form at
https://shannon.cs.illinois.edu/DenotationGraph/ ; Kaggle's "flickr-image-dataset" holds the
same photos. Pass the archive (tar or zip) or its extracted folder as --images-zip.
Captions: the {KARPATHY_HELP}
Downloaded automatically unless --karpathy-json / --karpathy-zip is given.
Licence: images under their Flickr owners' terms, non-commercial research only.
Writes: ROOT/flickr30k/images/*.jpg (flat) and ROOT/flickr30k/dataset_flickr30k.json.
"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser("flickr30k", DESCRIPTION)
    parser.add_argument(
        "--images-zip", metavar="PATH", help="flickr30k-images.tar.gz, a Kaggle zip, or a folder of the JPEGs"
    )
    parser.add_argument("--karpathy-json", metavar="PATH", help="a local dataset_flickr30k.json")
    parser.add_argument("--karpathy-zip", metavar="PATH", help="a local caption_datasets.zip")
    args = parser.parse_args(argv)
    how_to_get = (
        "Flickr30k images need a manual download:\n"
        "  1. get flickr30k-images.tar.gz (request form at https://shannon.cs.illinois.edu/DenotationGraph/)\n"
        "     or Kaggle's 'flickr-image-dataset'\n"
        f"  2. run: obstruct data fetch flickr30k --root {args.root} --images-zip PATH"
    )
    return prepare_flickr(
        "flickr30k",
        Path(args.root),
        args.images_zip,
        args.karpathy_json,
        args.karpathy_zip,
        not args.no_progress,
        how_to_get,
    )


if __name__ == "__main__":
    run_script(main)
