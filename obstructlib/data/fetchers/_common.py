"""Shared helpers of the fetchers: resumable downloads, safe extraction, manual steps.

Standard library only (numpy and PIL are imported by the fetchers that need them; torch never).
A fetcher is used as ``obstruct data fetch NAME --root ROOT`` or ``ob.data.fetch(NAME, ROOT)``;
the layouts it writes are the ones the loaders in ``obstructlib.data`` read.

Conventions:
    - Network and archive problems raise :class:`FetchError` with one line; the command prints it
      as ``error: ...`` and exits 1 (never a traceback).
    - Steps a fetcher cannot do itself (a licence to accept, a Google-Drive quota) raise
      :class:`ManualStepNeeded` through :func:`manual_step`: the command prints what to do and exits 3.
    - Every step is idempotent: finished downloads are kept, finished extractions leave a marker,
      and a fetcher whose output is complete prints "already present" and returns 0.
    - ``$OBSTRUCT_MIRROR`` (a base URL, e.g. a lab's cache server or a test's local server) is tried
      before the original hosts for every file: ``MIRROR/<file name>``.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import shutil
import sys
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import NoReturn

from obstructlib.errors import ObstructError

CHUNK = 1 << 20  # bytes per read: large enough to keep Python overhead negligible
USER_AGENT = "obstructlib-fetch/1.0 (+https://github.com/obstructlib/obstructlib)"
EXIT_MANUAL = 3
MIRROR_ENV = "OBSTRUCT_MIRROR"


class FetchError(ObstructError, RuntimeError):
    """A download or archive problem; the message is one line that says what to do."""


class ManualStepNeeded(FetchError):
    """A step the fetcher cannot do itself; the message (several lines) says what to do by hand."""


# --------------------------------------------------------------------------- small helpers


def default_root() -> Path:
    """The one data root rule: ``$OBSTRUCT_DATA``, else ``<repo>/data`` in a source checkout, else ``./data``.

    A source checkout (``pip install -e .``, ``make lab``, ``make test``) is recognised by the
    ``pyproject.toml`` beside the package, so notebooks (run from ``notebooks/``), the CLI and the
    fetchers all find the same folder wherever they are started; an installed wheel (Colab) uses
    ``./data`` of the working directory (``/content/data`` on Colab).
    """
    env = os.environ.get("OBSTRUCT_DATA", "").strip()
    if env:
        return Path(env).expanduser()
    repo = Path(__file__).resolve().parents[3]
    if (repo / "pyproject.toml").is_file() and (repo / "obstructlib" / "__init__.py").is_file():
        return repo / "data"
    return Path("data")


def say(message: str) -> None:
    """Print a status line (stdout, flushed so it interleaves with subprocess output)."""
    print(message, flush=True)


def human(num_bytes: float) -> str:
    """Format a byte count, e.g. ``human(1536) == '1.5 KB'``."""
    for unit in ("B", "KB", "MB", "GB"):
        if abs(num_bytes) < 1024 or unit == "GB":
            return f"{num_bytes:.1f} {unit}" if unit != "B" else f"{int(num_bytes)} B"
        num_bytes /= 1024
    return f"{num_bytes:.1f} GB"


def file_hash(path: str | Path, algorithm: str = "md5") -> str:
    """Hex digest of a file, read in 1 MiB chunks."""
    digest = hashlib.new(algorithm, usedforsecurity=False) if algorithm == "md5" else hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def checksum_error(path: Path, md5: str | None, sha256: str | None) -> str | None:
    """None when ``path`` matches every checksum given, else a description of the mismatch."""
    for algorithm, expected in (("md5", md5), ("sha256", sha256)):
        if expected:
            actual = file_hash(path, algorithm)
            if actual.lower() != expected.lower():
                return f"{algorithm} {actual} != expected {expected}"
    return None


def already_present(name: str, paths: Iterable[str | Path], where: str | Path) -> bool:
    """True (and prints "already present") when every path in ``paths`` exists."""
    paths = list(paths)
    if paths and all(Path(p).exists() for p in paths):
        say(f"{name}: already present at {where}")
        return True
    return False


def manual_step(message: str) -> NoReturn:
    """Stop with what the user must do by hand (:class:`ManualStepNeeded`; the command exits 3).

    Args:
        message: the instructions; may span several lines (it is the one place that does).
    """
    raise ManualStepNeeded(message.strip())


def mirrored(urls: Sequence[str]) -> list[str]:
    """``urls`` with ``$OBSTRUCT_MIRROR/<file name>`` of the first one in front when the variable is set.

    Example:
        >>> import os; os.environ["OBSTRUCT_MIRROR"] = "http://127.0.0.1:8000/"
        >>> mirrored(["https://host/a/cifar.tar.gz"])
        ['http://127.0.0.1:8000/cifar.tar.gz', 'https://host/a/cifar.tar.gz']
        >>> del os.environ["OBSTRUCT_MIRROR"]
    """
    base = os.environ.get(MIRROR_ENV, "").strip()
    if not base or not urls:
        return list(urls)
    name = urls[0].rsplit("/", 1)[-1].split("?", 1)[0]
    return [f"{base.rstrip('/')}/{name}", *urls]


# --------------------------------------------------------------------------- download


class _Progress:
    """A throttled one-line progress display on stderr (no dependency on tqdm)."""

    def __init__(self, name: str, total: int | None, done: int, enabled: bool) -> None:
        self.name, self.total, self.done, self.enabled = name, total, done, enabled
        self._last = 0.0

    def update(self, num_bytes: int) -> None:
        self.done += num_bytes
        now = time.monotonic()
        if self.enabled and now - self._last > 0.5:
            self._last = now
            pct = (
                f"{100 * self.done / self.total:5.1f}% of {human(self.total)}"
                if self.total
                else human(self.done)
            )
            print(f"\r{self.name}: {pct}   ", end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.enabled:
            print(f"\r{self.name}: {human(self.done)} done" + " " * 20, file=sys.stderr, flush=True)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _fetch_once(url: str, part: Path, timeout: float, progress: bool) -> None:
    """Download ``url`` into ``part``, appending from its current size when the server allows."""
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # the range starts at the end: the .part is already whole
            return
        raise
    with response:
        status = response.status
        total = response.headers.get("Content-Length")
        total = int(total) if total and total.isdigit() else None
        if offset and status == 206:
            start = response.headers.get("Content-Range", "").removeprefix("bytes ").split("-")[0]
            if start != str(offset):  # a range we did not ask for: start over
                part.unlink()
                return _fetch_once(url, part, timeout, progress)
            mode, expected_end = "ab", offset + total if total is not None else None
        else:  # 200: the server ignored Range (or there was none): restart from byte 0
            offset, mode, expected_end = 0, "wb", total
        bar = _Progress(part.name.removesuffix(".part"), expected_end, offset, progress)
        with open(part, mode) as fh:
            for block in iter(lambda: response.read(CHUNK), b""):
                fh.write(block)
                bar.update(len(block))
        bar.close()
    size = part.stat().st_size
    if expected_end is not None and size < expected_end:
        raise ConnectionError(f"connection closed at {human(size)} of {human(expected_end)}")


def download(
    url: str | Sequence[str],
    dest: str | Path,
    sha256: str | None = None,
    md5: str | None = None,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Download a file resumably, verify it and move it into place atomically.

    Bytes go to ``dest + '.part'``; a re-run after an interruption asks the server for the rest
    (HTTP Range) and starts over when the server ignores the range. When every byte is there, the
    checksums given are verified and the file is renamed to ``dest``. A file already at ``dest``
    that matches is kept (a re-run downloads nothing).

    Args:
        url: one URL or mirrors tried in order.
        dest: the final path of the file.
        sha256: expected SHA-256 hex digest, or None.
        md5: expected MD5 hex digest (the ones torchvision publishes), or None.
        progress: show a one-line progress display on stderr.
        timeout: seconds to wait for the server on connect and on each read.

    Returns:
        ``dest`` as a Path.

    Raises:
        FetchError: no mirror gave a complete file with the right checksum; the message is one
            line. A partial ``.part`` is kept to resume from; one with a wrong checksum is deleted.

    Example:
        >>> download("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        ...          "data/cifar-10-python.tar.gz", md5="c58f30108f718f92721af3b95e74349a")  # doctest: +SKIP
    """
    urls = mirrored([url] if isinstance(url, str) else list(url))
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        if checksum_error(dest, md5, sha256) is None:
            return dest
        say(f"{dest.name}: existing file has the wrong checksum, downloading it again")
        dest.unlink()
    part = dest.with_name(dest.name + ".part")
    failures = []
    for candidate in urls:
        try:
            _fetch_once(candidate, part, timeout, progress)
        except (OSError, http.client.HTTPException, ValueError) as exc:
            # OSError covers refused connections, timeouts and URLError; ValueError malformed URLs.
            failures.append(f"{candidate} ({_reason(exc)})")
            continue
        mismatch = checksum_error(part, md5, sha256)
        if mismatch:
            part.unlink()
            failures.append(f"{candidate} (checksum mismatch: {mismatch})")
            continue
        os.replace(part, dest)
        return dest
    kept = f"; {human(part.stat().st_size)} kept in {part.name}, re-run to resume" if part.exists() else ""
    raise FetchError(f"could not download {dest.name}: " + "; ".join(failures) + kept)


# --------------------------------------------------------------------------- extraction


def _inside(dest: Path, name: str) -> bool:
    target = (dest / name).resolve()
    return target == dest or dest in target.parents


def _check_tar_member(dest: Path, member: tarfile.TarInfo) -> None:
    if os.path.isabs(member.name) or not _inside(dest, member.name):
        raise FetchError(f"refusing to extract {member.name!r}: it would land outside {dest}")
    if member.issym() or member.islnk():
        base = (dest / member.name).parent if member.issym() else dest
        if os.path.isabs(member.linkname) or not _inside(
            dest, str((base / member.linkname).relative_to(dest))
        ):
            raise FetchError(
                f"refusing to extract link {member.name!r} -> {member.linkname!r}: it points outside {dest}"
            )
    if member.isdev() or member.isfifo():
        raise FetchError(f"refusing to extract device or pipe {member.name!r}")


def extract(archive: str | Path, dest: str | Path, progress: bool = True) -> Path:
    """Extract a tar (any compression) or zip archive into ``dest``, refusing unsafe members.

    A marker file ``dest/.extracted-<archive name>`` records a finished extraction, so a re-run
    skips it. Members with absolute paths, ``..`` components, links pointing outside ``dest``
    or device files stop the extraction with a :class:`FetchError`.

    Args:
        archive: path of the ``.tar``, ``.tar.gz``, ``.tgz`` or ``.zip`` file.
        dest: folder to extract into (created if missing).
        progress: print one line per 1,000 members.

    Returns:
        ``dest`` as a Path.

    Example:
        >>> extract("data/cifar-10-python.tar.gz", "data")  # doctest: +SKIP
    """
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    dest = dest.resolve()
    marker = dest / f".extracted-{archive.name}"
    if marker.exists():
        return dest
    count = 0
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            for info in infos:  # check everything before writing anything
                if os.path.isabs(info.filename) or not _inside(dest, info.filename):
                    raise FetchError(f"refusing to extract {info.filename!r}: it would land outside {dest}")
            for info in infos:
                zf.extract(info, dest)
                count += 1
                if progress and count % 1000 == 0:
                    say(f"{archive.name}: {count}/{len(infos)} files")
    elif tarfile.is_tarfile(archive):
        # Stream member by member: listing a large .tar.gz first would decompress it twice.
        with tarfile.open(archive) as tf:
            for member in tf:
                _check_tar_member(dest, member)
                tf.extract(member, dest, filter="data")
                count += 1
                if progress and count % 1000 == 0:
                    say(f"{archive.name}: {count} files")
    else:
        raise FetchError(f"{archive} is neither a tar nor a zip archive: delete it and re-run")
    marker.touch()
    return dest


def member_bytes(tf: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    """The bytes of a regular file member of an open tar archive."""
    handle = tf.extractfile(member)
    if handle is None:
        raise FetchError(f"{member.name} in {tf.name!r} is not a regular file: the archive is not the published one")
    return handle.read()


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


def image_counts(archive: str | Path, folders: Iterable[str]) -> dict[str, int]:
    """Image files of a zip or tar archive under each folder name (``"*"``: anywhere in it).

    Example:
        >>> image_counts("val2014.zip", ["val2014"])  # doctest: +SKIP
        {'val2014': 40504}
    """
    archive, folders = Path(archive), list(folders)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            names = zf.namelist()
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            names = [m.name for m in tf if m.isfile()]
    else:
        raise FetchError(f"{archive} is neither a tar nor a zip archive: delete it and re-run")
    images = [Path(n) for n in names if n.lower().endswith(IMAGE_EXTENSIONS)]
    return {f: sum(1 for p in images if f == "*" or f in p.parts[:-1]) for f in folders}


def verify_structure(archive: str | Path, expected: dict[str, int]) -> None:
    """Check a downloaded archive that has no published checksum by what it holds.

    For the archives whose hosts publish no checksum (COCO's image zips, BSDS500, the Flickr8k
    mirror), the number of images under each folder is the published one; a truncated, replaced
    or wrong file fails here, before anything is extracted.

    Raises:
        FetchError: a count differs (one line: delete the file and run again, or pass a local copy).
    """
    counts = image_counts(archive, expected)
    for folder, want in expected.items():
        if counts[folder] != want:
            where = "in it" if folder == "*" else f"under {folder}/"
            raise FetchError(f"{archive} holds {counts[folder]} images {where}, the published archive {want}: "
                             f"it is not that archive (delete {archive} and run again, or pass your own copy)")


def fetch_and_extract(
    urls: str | Sequence[str],
    archive: Path,
    dest: Path,
    *,
    md5: str | None = None,
    expect: dict[str, int] | None = None,
    keep_archive: bool = False,
    progress: bool = True,
) -> None:
    """Download ``archive`` (resumable, checked), extract it into ``dest``, then delete it unless kept.

    ``md5`` checks the bytes where the host publishes a checksum; ``expect`` (folder -> image
    count, :func:`verify_structure`) checks the contents where it does not.
    """
    marker = dest / f".extracted-{archive.name}"
    if not marker.exists():
        download(urls, archive, md5=md5, progress=progress)
        if expect:
            verify_structure(archive, expect)
        say(f"extracting {archive.name} into {dest}")
        extract(archive, dest, progress=progress)
    if not keep_archive and archive.exists():
        archive.unlink()


def fetch_md5_archive_main(
    argv: Sequence[str] | None,
    *,
    name: str,
    description: str,
    url: str,
    archive_md5: str,
    folder: str,
    files: dict[str, str],
) -> int:
    """The whole script for a dataset shipped as one archive that unpacks to ``ROOT/folder``.

    Skips the download when every file of ``files`` (name -> MD5) is there; otherwise fetches and
    extracts ``url`` (checked against ``archive_md5``) and checks every file's MD5.
    """
    parser = make_parser(name, description)
    parser.add_argument("--keep-archive", action="store_true", help="keep the .tar.gz after extraction")
    args = parser.parse_args(argv)
    root = Path(args.root)
    target = root / folder
    if already_present(name, (target / f for f in files), target):
        return 0
    archive = root / url.rsplit("/", 1)[-1]
    fetch_and_extract(
        url, archive, root, md5=archive_md5, keep_archive=args.keep_archive, progress=not args.no_progress
    )
    for fname, md5 in files.items():
        if checksum_error(target / fname, md5, None):
            raise FetchError(f"{target / fname} is corrupt: delete {target} and re-run")
    say(f"{name}: ready at {target}")
    return 0


# --------------------------------------------------------------------------- script plumbing


def make_parser(name: str, description: str) -> argparse.ArgumentParser:
    """The parser every script starts from: ``--root`` and ``--no-progress``."""
    parser = argparse.ArgumentParser(
        prog=f"obstruct data fetch {name}",
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--root", "--data-root", dest="root", default=str(default_root()),
        help="data root (the --data-root of the runners); default: $OBSTRUCT_DATA, else <repo>/data "
        "in a source checkout, else ./data (here: %(default)s)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress display")
    return parser


def exit_status(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None) -> int:
    """Run a fetcher's ``main`` and turn expected failures into one line and an exit status.

    0 done; 1 a download or archive failed (FetchError, OS errors: ``error: ...``); 3 a manual
    step is needed (its instructions); 130 Ctrl-C (with a resume hint).
    """
    try:
        return int(main(argv) or 0)
    except ManualStepNeeded as exc:
        print(f"MANUAL STEP NEEDED\n{exc}", file=sys.stderr, flush=True)
        return EXIT_MANUAL
    except FetchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted: re-run the same command to resume", file=sys.stderr)
        return 130


def run_script(main: Callable[[Sequence[str] | None], int]) -> None:
    """``python -m obstructlib.data.fetchers.NAME``: exit with :func:`exit_status` of ``main``."""
    raise SystemExit(exit_status(main, None))


def copy_or_link(src: Path, dst: Path) -> None:
    """Hard-link ``src`` to ``dst`` when they share a file system (no extra space), else copy."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)
