"""Download CIFAR-100 (python version) into ROOT/cifar-100-python/."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from _common import (
    FetchError,
    already_present,
    checksum_error,
    fetch_and_extract,
    make_parser,
    run_script,
    say,
)

URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
ARCHIVE_MD5 = "eb9058c3a382ffc7106e4002c42a8d85"
# Per-file MD5s published by torchvision (torchvision/datasets/cifar.py).
FILES = {
    "train": "16019d7e3df5f24257cddd939b257f8d",
    "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
    "meta": "7973b15100ade9c7d40fb424638fde48",
}

DESCRIPTION = f"""\
Fetch CIFAR-100 (60,000 32x32 colour images, 100 fine / 20 coarse classes; Krizhevsky 2009).

What: {URL}
Size: 161 MB download, 178 MB on disk.
Licence: no formal licence; free for research, cite Krizhevsky (2009) "Learning Multiple
Layers of Features from Tiny Images".
Writes: ROOT/cifar-100-python/{{train,test,meta}} (fine and coarse labels; MD5-checked).
"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser("cifar100", DESCRIPTION)
    parser.add_argument("--keep-archive", action="store_true", help="keep the .tar.gz after extraction")
    args = parser.parse_args(argv)
    root = Path(args.root)
    folder = root / "cifar-100-python"
    if already_present("cifar100", (folder / f for f in FILES), folder):
        return 0
    archive = root / "cifar-100-python.tar.gz"
    fetch_and_extract(
        URL, archive, root, md5=ARCHIVE_MD5, keep_archive=args.keep_archive, progress=not args.no_progress
    )
    for name, md5 in FILES.items():
        if checksum_error(folder / name, md5, None):
            raise FetchError(f"{folder / name} is corrupt: delete {folder} and re-run")
    say(f"cifar100: ready at {folder}")
    return 0


if __name__ == "__main__":
    run_script(main)
