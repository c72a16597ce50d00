"""Fetchers: download and lay out the real datasets where the loaders of :mod:`obstructlib.data` read them.

One module per dataset, each with ``main(argv) -> int`` and its own options (``--help`` lists
them with the source, size, licence and what is written). Three ways in, one code path:

- Python (a notebook's data cell): ``ob.data.fetch("cifar10")`` or
  ``ob.data.fetch("flickr8k", root, mirror=True)``: keyword options are the command's flags;
- the command: ``obstruct data fetch cifar10 [--root DIR]``, ``obstruct data list``;
- the loaders themselves, on first use, for the sets in :data:`AUTOMATIC` (no licence to accept, no
  manual step) unless ``$OBSTRUCT_DOWNLOAD=0`` (the tests set it; see :func:`downloads_allowed`).

Downloads resume (HTTP Range) and are checked (MD5 where the host publishes one, else the
archive's image count); a finished dataset is not fetched again. ``$OBSTRUCT_MIRROR`` puts a
mirror (a lab's cache, or a test's local server) in front of every original host.

Example:
    >>> sorted(AUTOMATIC)[:3]
    ['cifar10', 'cifar100', 'fashion_mnist']
    >>> fetch("no-such-set")
    Traceback (most recent call last):
    ...
    obstructlib.errors.ConfigError: no fetcher for 'no-such-set': use one of cc3m, celeba, ...
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from obstructlib.data.fetchers._common import FetchError, ManualStepNeeded, default_root, exit_status
from obstructlib.errors import ConfigError

# name -> what it is (the first line of `obstruct data list`)
FETCHERS: dict[str, str] = {
    "cc3m": "Conceptual Captions subset via img2dataset (needs the TSV from Google; manual step)",
    "celeba": "CelebA aligned faces and 40 attributes (Google Drive; gdown or manual step)",
    "cifar10": "CIFAR-10, 163 MB, MD5-checked",
    "cifar100": "CIFAR-100, 161 MB, MD5-checked",
    "coco_captions": "COCO 2014 images (19 GB) and the Karpathy split",
    "fashion_mnist": "Fashion-MNIST, 30 MB, MD5-checked",
    "flickr30k": "Flickr30k and the Karpathy split (images by request form; manual step)",
    "flickr8k": "Flickr8k and the Karpathy split (images by request form, or mirror=True: 1.1 GB)",
    "imagenet": "ImageNet-1k from the official archives (login needed; manual step)",
    "mnist": "MNIST, 11 MB, MD5-checked",
    "mnist_m": "MNIST-M built from MNIST and BSDS500 photos (fetch mnist first; BSDS500 download)",
    "stl10": "STL-10 binary, 2.6 GB, MD5-checked",
    "svhn": "SVHN cropped digits, train and test .mat, 246 MB, MD5-checked",
    "usps": "USPS, 6.3 MB, MD5-checked",
}
# Fetched by a loader on first use: public hosts, published checksums, no licence step, no options.
AUTOMATIC = frozenset({"cifar10", "cifar100", "mnist", "fashion_mnist", "usps", "svhn", "stl10"})
DOWNLOAD_ENV = "OBSTRUCT_DOWNLOAD"

# registered dataset name -> its fetcher, where the two differ
_FETCHER_OF = {"celeba-attributes": "celeba"}

__all__ = ["AUTOMATIC", "FETCHERS", "FetchError", "ManualStepNeeded", "default_root", "downloads_allowed",
           "ensure_dataset", "fetch", "fetch_main"]


def _module(name: str) -> Any:
    if name not in FETCHERS:
        raise ConfigError(f"no fetcher for {name!r}: use one of {', '.join(FETCHERS)}")
    return importlib.import_module(f"obstructlib.data.fetchers.{name}")


def downloads_allowed() -> bool:
    """Whether loaders may download a missing dataset of :data:`AUTOMATIC`: ``$OBSTRUCT_DOWNLOAD`` != ``0``.

    ``make test`` sets it to 0 so no test reaches the network by accident.
    """
    return os.environ.get(DOWNLOAD_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def _argv(options: dict[str, Any]) -> list[str]:
    """Keyword options as flags: ``images_zip="a.zip"`` -> ``--images-zip a.zip``, ``mirror=True`` -> ``--mirror``."""
    argv: list[str] = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif value is False or value is None:
            continue
        else:
            argv += [flag, str(value)]
    return argv


def fetch(name: str, root: str | Path | None = None, *, progress: bool = True, **options: Any) -> Path:
    """Download (or lay out from local files) dataset ``name`` under ``root``; a no-op when it is there.

    Args:
        name: a key of :data:`FETCHERS` (``obstruct data list``).
        root: the data root (default :func:`default_root`: ``$OBSTRUCT_DATA``, else ``<repo>/data``
            in a source checkout, else ``./data``).
        progress: show download progress on stderr.
        **options: the fetcher's flags as keywords (``mirror=True``, ``images_zip=PATH``,
            ``karpathy_json=PATH`` ...; ``obstruct data fetch NAME --help`` lists them).

    Returns:
        The data root, to pass on to ``load_dataset``.

    Raises:
        ManualStepNeeded: the dataset needs a step by hand (a licence, a login); the message says
            which, and how to pass the files in.
        FetchError: a download or archive failed; the message is one line. A partial download is
            kept and the next call resumes it.
        ConfigError: an unknown name or option.
    """
    module = _module(name)
    root = Path(root).expanduser() if root is not None else default_root()
    argv = ["--root", str(root), *(["--no-progress"] if not progress else []), *_argv(options)]
    try:
        code = module.main(argv)
    except SystemExit:  # argparse on an unknown option (after printing usage)
        raise ConfigError(f"fetch({name!r}): bad options {options} (see `obstruct data fetch {name} --help`)") from None
    if code:
        raise FetchError(f"fetch({name!r}) ended with status {code}")
    return root


def ensure_dataset(spec: str, root: str | Path | None = None, *, mirror: bool = False,
                   progress: bool = True) -> Path:
    """Make sure the dataset behind ``spec`` is on disk under ``root``: what a notebook's data cell calls.

    Embedded sets and path specs (``folder:``, ``npz:``, ``csv:``) need nothing; a registered name
    is fetched unless it is already there (:func:`fetch` is a no-op then), whatever the profile.

    Args:
        spec: a dataset spec, as ``load_dataset`` takes it (a style suffix such as ``+mnistm`` is ignored).
        root: the data root (default :func:`default_root`).
        mirror: where a fetcher can take the images from a public but unofficial mirror instead of
            asking for a manual download (Flickr8k), do so.
        progress: show download progress.

    Returns:
        The data root.

    Example:
        >>> ensure_dataset("synthetic-captions")  # embedded: nothing to fetch
        PosixPath('...data')
    """
    from obstructlib.data.base import dataset_info
    from obstructlib.data.domains import split_style

    root = Path(root).expanduser() if root is not None else default_root()
    base = split_style(spec)[0]
    if ":" in base:
        return root
    info = dataset_info(base)
    name = _FETCHER_OF.get(base, base)
    if info.embedded or name not in FETCHERS:
        return root
    options = {"mirror": True} if mirror and name == "flickr8k" else {}
    return fetch(name, root, progress=progress, **options)


def fetch_main(name: str, argv: Sequence[str]) -> int:
    """``obstruct data fetch NAME ARGS...``: exit status 0 done, 1 failed, 2 bad input, 3 manual step, 130 Ctrl-C."""
    return exit_status(_module(name).main, list(argv))
