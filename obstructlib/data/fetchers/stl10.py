"""Download STL-10 (binary version) into ROOT/stl10_binary/."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ._common import (
    FetchError,
    already_present,
    checksum_error,
    fetch_and_extract,
    make_parser,
    run_script,
    say,
)

URL = "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz"
ARCHIVE_MD5 = "91f7769df0f17e558f3565bffb0c7dfb"
# Per-file MD5s published by torchvision (torchvision/datasets/stl10.py).
FILES = {
    "train_X.bin": "918c2871b30a85fa023e0c44e0bee87f",
    "train_y.bin": "5a34089d4802c674881badbb80307741",
    "test_X.bin": "7f263ba9f9e0b06b93213547f721ac82",
    "test_y.bin": "36f9794fa4beb8a2c72628de14fa638e",
    "unlabeled_X.bin": "5242ba1fed5e4be9e1e742405eb56ca4",
    "class_names.txt": None,
}

DESCRIPTION = f"""\
Fetch STL-10 (96x96 colour images, 10 classes: 5,000 train, 8,000 test, 100,000 unlabelled;
Coates, Lee & Ng, AISTATS 2011).

What: {URL}
Size: 2.6 GB download, 2.6 GB on disk (most of it the unlabelled split; use --drop-unlabeled).
Licence: no formal licence; images come from ImageNet, research use, cite Coates et al. 2011.
Writes: ROOT/stl10_binary/{{train_X.bin,train_y.bin,test_X.bin,test_y.bin,class_names.txt,...}}.
"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser("stl10", DESCRIPTION)
    parser.add_argument("--keep-archive", action="store_true", help="keep the .tar.gz after extraction")
    parser.add_argument(
        "--drop-unlabeled", action="store_true", help="delete unlabeled_X.bin (2.5 GB) afterwards"
    )
    args = parser.parse_args(argv)
    root = Path(args.root)
    folder = root / "stl10_binary"
    needed = ["train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin", "class_names.txt"]
    if already_present("stl10", (folder / f for f in needed), folder):
        return 0
    archive = root / "stl10_binary.tar.gz"
    fetch_and_extract(
        URL, archive, root, md5=ARCHIVE_MD5, keep_archive=args.keep_archive, progress=not args.no_progress
    )
    for name, md5 in FILES.items():
        if md5 and (folder / name).exists() and checksum_error(folder / name, md5, None):
            raise FetchError(f"{folder / name} is corrupt: delete {folder} and re-run")
    if args.drop_unlabeled:
        (folder / "unlabeled_X.bin").unlink(missing_ok=True)
    say(f"stl10: ready at {folder}")
    return 0


if __name__ == "__main__":
    run_script(main)
