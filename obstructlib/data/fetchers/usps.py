"""Download USPS (libsvm files) into ROOT/usps/."""

from __future__ import annotations

import bz2
from collections.abc import Sequence
from pathlib import Path

from ._common import already_present, download, make_parser, run_script, say

BASE = "https://www.csie.ntu.edu.tw/~cjlin/libsvmtools/datasets/multiclass/"
# URLs and MD5s as in torchvision/datasets/usps.py.
FILES = {"usps.bz2": "ec16c51db3855ca6c91edd34d0e9b197", "usps.t.bz2": "8ea070ee2aca1ac39742fdd1ef5ed118"}

DESCRIPTION = f"""\
Fetch USPS (9,298 16x16 grey handwritten digits: 7,291 train, 2,007 test; Hull 1994).

What: usps.bz2 and usps.t.bz2 from the LIBSVM data page {BASE}, MD5-checked.
Format: libsvm text, "label idx:value ...", labels 1..10 (digit + 1), values in [-1, 1].
Size: 6.3 MB download and on disk.
Licence: no formal licence; distributed for research by the LIBSVM authors, cite Hull (1994).
Writes: ROOT/usps/{{usps.bz2,usps.t.bz2}}.
Offline: --from-npz PATH writes the same two files from an npz (x_train, y_train, x_test,
y_test; uint8 16x16) such as the shared usps.npz.
"""


def write_libsvm_bz2(path: Path, images, labels) -> None:
    """Write uint8 images (N, 16, 16) and digit labels 0..9 as a bz2 libsvm file (values in [-1, 1])."""
    import numpy as np

    flat = np.asarray(images, dtype=np.float64).reshape(len(images), -1) / 255.0 * 2.0 - 1.0
    lines = []
    for row, label in zip(flat, np.asarray(labels)):
        features = " ".join(f"{i + 1}:{v:.6f}" for i, v in enumerate(row))
        lines.append(f"{int(label) + 1} {features}\n")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(bz2.compress("".join(lines).encode()))
    tmp.replace(path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser("usps", DESCRIPTION)
    parser.add_argument(
        "--from-npz", metavar="PATH", help="write the libsvm files from a local npz instead of downloading"
    )
    args = parser.parse_args(argv)
    folder = Path(args.root) / "usps"
    if already_present("usps", (folder / f for f in FILES), folder):
        return 0
    folder.mkdir(parents=True, exist_ok=True)
    if args.from_npz:
        import numpy as np

        with np.load(args.from_npz) as npz:
            write_libsvm_bz2(folder / "usps.bz2", npz["x_train"], npz["y_train"])
            write_libsvm_bz2(folder / "usps.t.bz2", npz["x_test"], npz["y_test"])
        say(f"usps: wrote libsvm files from {args.from_npz} to {folder}")
        return 0
    for name, md5 in FILES.items():
        download(BASE + name, folder / name, md5=md5, progress=not args.no_progress)
    say(f"usps: ready at {folder}")
    return 0


if __name__ == "__main__":
    run_script(main)
