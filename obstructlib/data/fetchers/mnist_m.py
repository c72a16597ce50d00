"""Build MNIST-M the original way: |random BSDS500 photo crop - MNIST digit|, per colour channel.

References:
    Ganin & Lempitsky, "Unsupervised Domain Adaptation by Backpropagation", ICML 2015,
    arXiv 1409.7495, Section 5 ("MNIST -> MNIST-M"): I_out = |I_1 - I_2| per pixel and channel,
    with I_1 a digit and I_2 a random patch of a BSDS500 photo.
"""

from __future__ import annotations

import io
import os
import tarfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ._common import (
    FetchError,
    already_present,
    download,
    human,
    make_parser,
    member_bytes,
    run_script,
    say,
    verify_structure,
)
from ._idx import load_mnist_arrays

BSDS_URLS = [
    "https://www2.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/BSR/BSR_bsds500.tgz",
]
# Berkeley publishes no checksum for BSR_bsds500.tgz: a download is checked by its photo counts.
BSDS_IMAGES = {"train": 200, "val": 100, "test": 200}
SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")

DESCRIPTION = f"""\
Build MNIST-M (Ganin & Lempitsky, arXiv 1409.7495): every MNIST digit becomes
|crop - digit| per RGB channel, crop = a random 28x28 patch of a random BSDS500 photo.

Backgrounds: the train split uses the BSDS500 train+val photos (300), the test split the
test photos (200), so no photo is shared between splits (the paper does not say; the popular
tf-dann script uses the train photos for both). Seeded: the same --seed gives the same file.
Digits are used as they are (grey levels); --binarize sets every non-zero pixel to 255 first,
as the tf-dann script does.

Inputs: --mnist (mnist.npz or an IDX folder; default ROOT/MNIST/raw from mnist.py) and --bsds
(the BSDS500 .tgz / .tar.gz or a folder with train/ val/ test/ photos; default: download
BSR_bsds500.tgz, about 70 MB, from {BSDS_URLS[0]}).
Size: output about 130 MB (compressed npz); about 12 s on 2 CPU cores.
Licence: MNIST CC BY-SA 3.0; BSDS500 photos for research and education only.
Writes: ROOT/mnist_m/mnist_m.npz with x_train (60000,28,28,3) uint8, y_train int64, x_test,
y_test (NHWC).
"""


def _split_of(path: str) -> str | None:
    parent = Path(path).parent.name.lower()
    return parent if parent in SPLITS else None


def _decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


def load_photos(bsds: str | Path) -> dict[str, list[np.ndarray]]:
    """BSDS500 photos as uint8 ``(H, W, 3)`` arrays grouped by split.

    Args:
        bsds: a tar archive (any compression) or a folder; photos under a ``train``, ``val`` or
            ``test`` folder go to that split. A source without such folders puts every photo
            under ``"all"``.

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}`` (or ``{"all": [...]}``), sorted by path.
    """
    bsds = Path(bsds)
    found: list[tuple[str, bytes]] = []
    if bsds.is_dir():
        for path in sorted(bsds.rglob("*")):
            if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
                found.append((str(path.relative_to(bsds)), path.read_bytes()))
    elif bsds.is_file() and tarfile.is_tarfile(bsds):
        with tarfile.open(bsds) as tf:
            for member in tf:
                if member.isfile() and Path(member.name).suffix.lower() in IMAGE_SUFFIXES:
                    found.append((member.name, member_bytes(tf, member)))
    else:
        raise FetchError(f"{bsds} is neither a folder nor a tar archive of BSDS500 photos")
    if not found:
        raise FetchError(f"no photos found in {bsds}: give the BSDS500 archive or a folder of JPEGs")
    found.sort()
    photos: dict[str, list[np.ndarray]] = {}
    with_split = [(name, data) for name, data in found if _split_of(name)]
    for name, data in with_split or found:
        photos.setdefault((_split_of(name) or "all") if with_split else "all", []).append(_decode(data))
    return photos


def blend(
    digits: np.ndarray,
    photos: Sequence[np.ndarray],
    rng: np.random.Generator,
    binarize: bool = False,
    chunk: int = 10000,
) -> np.ndarray:
    """MNIST-M images: ``|crop - digit|`` with a random 28x28 crop of a random photo per digit.

    Args:
        digits: uint8 ``(N, H, W)`` grey digits (0 background, 255 ink).
        photos: uint8 ``(h, w, 3)`` photos, each at least ``H x W``.
        rng: the generator that draws the photo and the crop offset of every digit.
        binarize: set non-zero digit pixels to 255 first (the tf-dann variant).
        chunk: digits processed at once (bounds the int16 working memory).

    Shape:
        Output ``(N, H, W, 3)`` uint8.

    References:
        arXiv 1409.7495, Section 5: ``I_out_ijk = |I1_ijk - I2_ijk|``.
    """
    n, h, w = digits.shape
    photos = [p for p in photos if p.shape[0] >= h and p.shape[1] >= w]
    if not photos:
        raise FetchError(f"no background photo is at least {h}x{w} pixels")
    which = np.asarray(rng.integers(0, len(photos), size=n))
    # Offsets drawn as uniform fractions so one vectorised draw serves photos of any size.
    fy, fx = np.asarray(rng.random(n)), np.asarray(rng.random(n))
    out = np.empty((n, h, w, 3), dtype=np.uint8)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        crops = np.empty((stop - start, h, w, 3), dtype=np.int16)
        for j, i in enumerate(range(start, stop)):
            photo = photos[which[i]]
            y = int(fy[i] * (photo.shape[0] - h + 1))
            x = int(fx[i] * (photo.shape[1] - w + 1))
            crops[j] = photo[y : y + h, x : x + w]
        digit = digits[start:stop].astype(np.int16)
        if binarize:
            digit = np.where(digit > 0, 255, 0).astype(np.int16)
        out[start:stop] = np.abs(crops - digit[..., None]).astype(np.uint8)
    return out


def build_mnist_m(
    mnist: dict[str, np.ndarray], photos: dict[str, list[np.ndarray]], seed: int = 0, binarize: bool = False
) -> dict[str, np.ndarray]:
    """Blend both MNIST splits: train on train+val photos, test on test photos (or all on "all")."""
    rng = np.random.default_rng(seed)
    if "all" in photos:
        train_photos = test_photos = photos["all"]
    else:
        train_photos = photos.get("train", []) + photos.get("val", [])
        test_photos = photos.get("test", [])
        if not train_photos or not test_photos:
            raise FetchError("BSDS500 source needs photos under train/ or val/ and under test/")
    return {
        "x_train": blend(mnist["x_train"], train_photos, rng, binarize),
        "y_train": mnist["y_train"].astype(np.int64),
        "x_test": blend(mnist["x_test"], test_photos, rng, binarize),
        "y_test": mnist["y_test"].astype(np.int64),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser("mnist_m", DESCRIPTION)
    parser.add_argument(
        "--mnist",
        metavar="PATH",
        help="mnist.npz or a folder with the MNIST IDX files (default ROOT/MNIST/raw)",
    )
    parser.add_argument(
        "--bsds", metavar="PATH", help="BSDS500 tar archive or photo folder (default: download it)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the photo and crop draws (default 0)")
    parser.add_argument("--binarize", action="store_true", help="binarise digits first (tf-dann variant)")
    parser.add_argument("--force", action="store_true", help="rebuild even if the output exists")
    args = parser.parse_args(argv)
    root = Path(args.root)
    out = root / "mnist_m" / "mnist_m.npz"
    if not args.force and already_present("mnist_m", [out], out):
        return 0
    mnist_src = Path(args.mnist) if args.mnist else root / "MNIST" / "raw"
    if not mnist_src.exists():
        raise FetchError(
            f"MNIST not found at {mnist_src}: pass --mnist PATH or run obstruct data fetch mnist --root {root}"
        )
    if args.bsds:
        bsds = Path(args.bsds)
    else:
        bsds = download(BSDS_URLS, root / "BSR_bsds500.tgz", progress=not args.no_progress)
        verify_structure(bsds, BSDS_IMAGES)
    start = time.perf_counter()
    arrays = build_mnist_m(
        load_mnist_arrays(mnist_src), load_photos(bsds), seed=args.seed, binarize=args.binarize
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name("mnist_m.tmp.npz")
    np.savez_compressed(tmp, **arrays)  # type: ignore[arg-type]
    os.replace(tmp, out)
    say(
        f"mnist_m: wrote {out} ({human(out.stat().st_size)}, {len(arrays['x_train'])} train / "
        f"{len(arrays['x_test'])} test) in {time.perf_counter() - start:.0f} s"
    )
    return 0


if __name__ == "__main__":
    run_script(main)
