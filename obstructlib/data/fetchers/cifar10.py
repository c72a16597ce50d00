"""Download CIFAR-10 (python version) into ROOT/cifar-10-batches-py/."""

from __future__ import annotations

from collections.abc import Sequence

from ._common import fetch_md5_archive_main, run_script

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"
# Per-file MD5s published by torchvision (torchvision/datasets/cifar.py).
FILES = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}

DESCRIPTION = f"""\
Fetch CIFAR-10 (60,000 32x32 colour images, 10 classes; Krizhevsky 2009).

What: {URL}
Size: 163 MB download, 178 MB on disk.
Licence: no formal licence; free for research, cite Krizhevsky (2009) "Learning Multiple
Layers of Features from Tiny Images".
Writes: ROOT/cifar-10-batches-py/{{data_batch_1..5,test_batch,batches.meta}} (MD5-checked).
"""


def main(argv: Sequence[str] | None = None) -> int:
    return fetch_md5_archive_main(
        argv,
        name="cifar10",
        description=DESCRIPTION,
        url=URL,
        archive_md5=ARCHIVE_MD5,
        folder="cifar-10-batches-py",
        files=FILES,
    )


if __name__ == "__main__":
    run_script(main)
