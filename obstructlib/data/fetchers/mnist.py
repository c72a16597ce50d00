"""Download MNIST (IDX files) into ROOT/MNIST/raw/."""

from __future__ import annotations

from collections.abc import Sequence

from ._common import run_script
from ._idx import fetch_mnist_like

# Mirrors and MD5s as in torchvision/datasets/mnist.py (the LeCun site is often down).
MIRRORS = ["https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"]
RESOURCES = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}

DESCRIPTION = f"""\
Fetch MNIST (70,000 28x28 grey handwritten digits: 60,000 train, 10,000 test; LeCun et al. 1998).

What: the four IDX files from {MIRRORS[0]} (mirror: {MIRRORS[1]}), MD5-checked.
Size: 11 MB download, 66 MB on disk (.gz and decompressed copies, as torchvision keeps them).
Licence: CC BY-SA 3.0 (Yann LeCun and Corinna Cortes).
Writes: ROOT/MNIST/raw/{{train-images-idx3-ubyte,train-labels-idx1-ubyte,t10k-images-idx3-ubyte,
t10k-labels-idx1-ubyte}}[.gz].
Offline: --from-npz PATH builds the same files from an npz (x_train, y_train, x_test, y_test).
"""


def main(argv: Sequence[str] | None = None) -> int:
    return fetch_mnist_like("mnist", "MNIST", MIRRORS, RESOURCES, DESCRIPTION, argv)


if __name__ == "__main__":
    run_script(main)
