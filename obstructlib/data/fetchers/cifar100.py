"""Download CIFAR-100 (python version) into ROOT/cifar-100-python/."""

from __future__ import annotations

from collections.abc import Sequence

from ._common import fetch_md5_archive_main, run_script

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
    return fetch_md5_archive_main(
        argv,
        name="cifar100",
        description=DESCRIPTION,
        url=URL,
        archive_md5=ARCHIVE_MD5,
        folder="cifar-100-python",
        files=FILES,
    )


if __name__ == "__main__":
    run_script(main)
