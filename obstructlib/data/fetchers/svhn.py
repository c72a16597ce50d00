"""Download SVHN (cropped digits, .mat files) into ROOT/svhn/."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ._common import already_present, download, make_parser, run_script, say

BASE = "http://ufldl.stanford.edu/housenumbers/"
# URLs and MD5s as in torchvision/datasets/svhn.py.
FILES = {
    "train_32x32.mat": "e26dedcc434d2e4c54c9b2d4a06d8373",
    "test_32x32.mat": "eb5a983be6a315427106f1b164d9cef3",
    "extra_32x32.mat": "a93ce644f1a588dc4d68dda5feec44a7",
}

DESCRIPTION = f"""\
Fetch SVHN, format 2 (32x32 colour house-number digits: 73,257 train, 26,032 test, 531,131
extra; Netzer et al., NeurIPS workshop 2011). Label 10 in the .mat files means digit 0.

What: train_32x32.mat and test_32x32.mat (and extra_32x32.mat with --extra) from {BASE}, MD5-checked.
Size: 182 MB + 64 MB (+ 1.3 GB extra).
Licence: non-commercial use only (Stanford); cite Netzer et al. 2011.
Writes: ROOT/svhn/{{train_32x32.mat,test_32x32.mat}}.
"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser("svhn", DESCRIPTION)
    parser.add_argument("--extra", action="store_true", help="also fetch extra_32x32.mat (1.3 GB)")
    args = parser.parse_args(argv)
    folder = Path(args.root) / "svhn"
    names = ["train_32x32.mat", "test_32x32.mat"] + (["extra_32x32.mat"] if args.extra else [])
    if already_present("svhn", (folder / n for n in names), folder):
        return 0
    for name in names:
        download(BASE + name, folder / name, md5=FILES[name], progress=not args.no_progress)
    say(f"svhn: ready at {folder}")
    return 0


if __name__ == "__main__":
    run_script(main)
