"""Download Fashion-MNIST (IDX files) into ROOT/FashionMNIST/raw/."""

from __future__ import annotations

from collections.abc import Sequence

from ._common import run_script
from ._idx import fetch_mnist_like

# Mirror and MD5s as in torchvision/datasets/mnist.py (class FashionMNIST).
MIRRORS = ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"]
RESOURCES = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}

DESCRIPTION = f"""\
Fetch Fashion-MNIST (70,000 28x28 grey Zalando article images, 10 classes; Xiao et al.,
arXiv 1708.07747).

What: the four IDX files from {MIRRORS[0]}, MD5-checked.
Size: 30 MB download, 85 MB on disk (.gz and decompressed copies).
Licence: MIT (Zalando Research).
Writes: ROOT/FashionMNIST/raw/{{train-images-idx3-ubyte,...,t10k-labels-idx1-ubyte}}[.gz].
Offline: --from-npz PATH builds the same files from an npz (x_train, y_train, x_test, y_test).
"""


def main(argv: Sequence[str] | None = None) -> int:
    return fetch_mnist_like("fashion_mnist", "FashionMNIST", MIRRORS, RESOURCES, DESCRIPTION, argv)


if __name__ == "__main__":
    run_script(main)
