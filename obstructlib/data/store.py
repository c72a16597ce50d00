"""Additive image noise for a whole dataset, stored compactly as int8 pixel units.

Data-side protections (unlearnable examples, UC, MEM) learn one noise tensor per sample (or per
cluster). Keeping those as float32 for a whole dataset is what the papers' code does and what does
not scale (CIFAR-10: 600 MB; COCO at 224 px: 70 GB). :class:`PerturbationStore` keeps each value as
an integer number of pixel units of 1/255 in an ``int8`` array -- the "uint8-scale" store: a delta
of ``k/255`` is stored as ``k``, so budgets up to ``127/255`` fit, 4x smaller than float32 and exact
for images that come from uint8 files (``x + delta`` stays on the 8-bit grid). Large stores live in a
``.npy`` memory map on disk.

References:
    Huang et al., Unlearnable Examples, arXiv:2101.04898 (sample-wise error-minimising noise).
    Zhang et al., Unlearnable Clusters, arXiv:2301.01217 (cluster-wise noise).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import weakref
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from obstructlib.data.base import SizedDataset
from obstructlib.data.wrappers import labels_of
from obstructlib.errors import ConfigError, reading

MAX_UNITS = 127  # int8 range: the largest budget is 127/255
_FORMAT = "obstructlib.PerturbationStore"
Indices = int | Sequence[int] | np.ndarray | torch.Tensor


def _as_index(indices: Indices) -> np.ndarray:
    if isinstance(indices, torch.Tensor):
        indices = indices.detach().cpu().numpy()
    return np.atleast_1d(np.asarray(indices, dtype=np.int64))


def _sidecar(path: Path) -> Path:
    return path.with_suffix(".json")


class PerturbationStore:
    """Per-sample or per-cluster additive noise in an int8 array of pixel units (1/255).

    Rows are samples (``mode="sample"``; per PAIR for caption data) or clusters
    (``mode="cluster"``, with ``assignments[sample] -> cluster``). :meth:`get`/:meth:`set` address
    rows; :meth:`apply`/:meth:`delta_for` take SAMPLE indices and look up the row.

    Args:
        num: number of rows (samples, or clusters in cluster mode).
        shape: ``(C, H, W)`` of one noise tensor (the image shape).
        eps: L-inf budget in [0, 127/255] pixel units of [0, 1] images; stored as
            ``floor(eps * 255)`` integer units, so the effective ball is never larger than asked.
        path: back the store by this ``.npy`` memory map (created or overwritten).
        mode: ``"sample"`` or ``"cluster"``.
        assignments: cluster mode: int cluster index of every sample, in ``0..num-1``.
        memmap_threshold_bytes: without ``path``, stores larger than this go to a temporary memmap.

    Shape:
        :meth:`get` returns float ``(B, C, H, W)``, multiples of 1/255 in ``[-eps, eps]``.

    Example:
        >>> store = PerturbationStore(10, (3, 4, 4), eps=8 / 255)
        >>> store.set([2], torch.full((1, 3, 4, 4), 0.5))  # clamped to the eps-ball
        >>> round(float(store.get([2]).max()) * 255)
        8
    """

    def __init__(
        self,
        num: int,
        shape: Sequence[int] = (3, 32, 32),
        eps: float = 8 / 255,
        path: str | Path | None = None,
        mode: str = "sample",
        assignments: Sequence[int] | np.ndarray | None = None,
        *,
        memmap_threshold_bytes: int = 512 * 2**20,
        _data: np.ndarray | None = None,
    ) -> None:
        if not 0 <= eps <= MAX_UNITS / 255 + 1e-9:
            raise ConfigError(
                f"eps={eps:.6g} is outside [0, 127/255]: the int8 pixel-unit store holds at most "
                "127/255, pick a smaller eps"
            )
        if mode not in ("sample", "cluster"):
            raise ConfigError(f"mode={mode!r} must be 'sample' or 'cluster'")
        if (mode == "cluster") != (assignments is not None):
            raise ConfigError("pass assignments (sample -> cluster) with mode='cluster', and only then")
        self.num, self.shape, self.mode, self.eps = int(num), tuple(int(s) for s in shape), mode, float(eps)
        self.eps_units = int(np.floor(self.eps * 255 + 1e-6))
        self.assignments = None if assignments is None else np.asarray(assignments, dtype=np.int64)
        if (
            self.assignments is not None
            and len(self.assignments)
            and (self.assignments.min() < 0 or self.assignments.max() >= self.num)
        ):
            raise ConfigError(f"cluster assignments must lie in 0..{self.num - 1}")
        self.path = None if path is None else Path(path)
        full = (self.num, *self.shape)
        if _data is not None:
            self.data = _data
        elif self.path is None and int(np.prod(full)) > memmap_threshold_bytes:
            fd, tmp = tempfile.mkstemp(suffix=".npy", prefix="perturbation-")
            os.close(fd)
            self.data = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.int8, shape=full)
            weakref.finalize(self, _remove, tmp)  # a temporary store disappears with the object
        elif self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.data = np.lib.format.open_memmap(self.path, mode="w+", dtype=np.int8, shape=full)
            self._write_sidecar(self.path)
        else:
            self.data = np.zeros(full, dtype=np.int8)

    # ---- size and bookkeeping -----------------------------------------------------------
    def __len__(self) -> int:
        return self.num

    @property
    def num_samples(self) -> int:
        """Samples the store covers: ``num`` in sample mode, ``len(assignments)`` in cluster mode."""
        return self.num if self.assignments is None else len(self.assignments)

    @property
    def nbytes(self) -> int:
        """Bytes of noise held (one byte per value)."""
        return int(self.data.nbytes)

    @property
    def is_memmap(self) -> bool:
        """True when the noise lives in a ``.npy`` memory map on disk."""
        return isinstance(self.data, np.memmap)

    def rows_of(self, sample_indices: Indices) -> np.ndarray:
        """Store rows of samples: the samples themselves, or their clusters in cluster mode."""
        idx = _as_index(sample_indices)
        return idx if self.assignments is None else self.assignments[idx]

    # ---- read and write -----------------------------------------------------------------
    def get(self, indices: Indices, device: torch.device | str | None = None) -> torch.Tensor:
        """Float noise of rows ``indices``, shape ``(B, C, H, W)``, multiples of 1/255 in ``[-eps, eps]``."""
        units = torch.from_numpy(np.ascontiguousarray(self.data[_as_index(indices)]))
        return units.to(device=device, dtype=torch.float32).div_(255.0)

    def set(self, indices: Indices, delta: torch.Tensor | np.ndarray) -> None:
        """Write noise for rows ``indices``: rounded to the nearest pixel unit and clamped to the eps-ball.

        Args:
            indices: ``B`` row indices (a repeated index keeps the last write).
            delta: float ``(B, C, H, W)`` (or one ``(C, H, W)`` for all rows), in [0, 1] image units.
        """
        d = (
            delta.detach().float().cpu().numpy()
            if isinstance(delta, torch.Tensor)
            else np.asarray(delta, np.float32)
        )
        idx = _as_index(indices)
        units = np.clip(np.rint(d * 255.0), -self.eps_units, self.eps_units).astype(np.int8)
        self.data[idx] = np.broadcast_to(units, (len(idx), *self.shape))

    def delta_for(self, sample_indices: Indices, device: torch.device | str | None = None) -> torch.Tensor:
        """Noise of SAMPLES (cluster noise looked up through ``assignments``), ``(B, C, H, W)``."""
        return self.get(self.rows_of(sample_indices), device)

    def apply(self, images01: torch.Tensor, indices: Indices) -> torch.Tensor:
        """Protected images ``clamp(images + delta, 0, 1)`` for the samples ``indices``.

        Shape:
            ``images01`` float ``(B, C, H, W)`` in [0, 1]; output the same shape, device and dtype.
        """
        delta = self.delta_for(indices, images01.device).to(images01.dtype)
        return (images01 + delta).clamp_(0.0, 1.0)

    def randomize(
        self, seed: int | np.random.Generator | None = None, chunk: int = 4096
    ) -> PerturbationStore:
        """Fill with uniform integers in ``[-eps, eps]`` pixel units (a random start); returns self."""
        rng = np.random.default_rng(seed)
        e = self.eps_units
        for start in range(0, self.num, chunk):  # chunked so a memmap never needs a full-size temporary
            stop = min(start + chunk, self.num)
            self.data[start:stop] = rng.integers(-e, e + 1, size=(stop - start, *self.shape), dtype=np.int8)
        return self

    # ---- persistence --------------------------------------------------------------------
    def flush(self) -> None:
        """Write a memory-mapped store's pages to disk (no-op in RAM)."""
        if isinstance(self.data, np.memmap):
            self.data.flush()

    def _write_sidecar(self, path: Path) -> None:
        meta = {
            "format": _FORMAT,
            "version": 1,
            "eps": self.eps,
            "eps_units": self.eps_units,
            "mode": self.mode,
            "num": self.num,
            "shape": list(self.shape),
            "assignments": None if self.assignments is None else self.assignments.tolist(),
        }
        tmp = _sidecar(path).with_suffix(".json.tmp")
        tmp.write_text(json.dumps(meta))
        os.replace(tmp, _sidecar(path))

    def save(self, path: str | Path) -> Path:
        """Write ``path`` (``.npy``, int8) and ``path.json`` (eps, mode, shape, assignments) atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if self.path is not None and path.resolve() == self.path.resolve():
            self.flush()
        else:
            tmp = path.with_suffix(".tmp.npy")
            np.save(tmp, self.data)
            os.replace(tmp, path)
        self._write_sidecar(path)
        return path

    @classmethod
    def load(
        cls, path: str | Path, *, mmap: bool | None = None, memmap_threshold_bytes: int = 512 * 2**20
    ) -> PerturbationStore:
        """Open a saved store, validating it against its sidecar.

        Args:
            path: the ``.npy`` file written by :meth:`save`.
            mmap: memory-map the file (read-write) instead of reading it; None decides by size.
        """
        path = Path(path)
        meta_path = _sidecar(path)
        if not path.is_file() or not meta_path.is_file():
            raise ConfigError(
                f"no perturbation store at {path} (need {path.name} and {meta_path.name}): "
                "run the protection first"
            )
        with reading(meta_path):
            meta = json.loads(meta_path.read_text())
        if meta.get("format") != _FORMAT:
            raise ConfigError(
                f"{meta_path} is not a PerturbationStore sidecar: "
                "pass the .npy written by PerturbationStore.save"
            )
        use_mmap = path.stat().st_size > memmap_threshold_bytes if mmap is None else mmap
        with reading(path):
            data = np.load(path, mmap_mode="r+" if use_mmap else None)
        expected = (int(meta["num"]), *meta["shape"])
        if data.dtype != np.int8 or data.shape != expected:
            raise ConfigError(
                f"{path} holds {data.dtype} {data.shape}, its sidecar says int8 {expected}: "
                "the files do not belong together"
            )
        if len(data) and int(np.abs(data.astype(np.int16)).max()) > int(meta["eps_units"]):
            raise ConfigError(
                f"{path} has values outside its eps-ball of {meta['eps_units']}/255: the file is corrupt"
            )
        store = cls(
            meta["num"],
            meta["shape"],
            meta["eps"],
            mode=meta["mode"],
            assignments=meta["assignments"],
            _data=data,
        )
        store.path = path if use_mmap else None
        return store


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def _folder_name(name: str) -> str:
    return str(name).replace(os.sep, "_").replace("/", "_") or "_"


def export_protected(
    dataset: SizedDataset,
    store: PerturbationStore,
    out_dir: str | Path,
    classes: Sequence[str] | None = None,
    progress: bool = True,
    *,
    test_dataset: SizedDataset | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the protected images ``round(clip(x + delta, 0, 1) * 255)`` as 8-bit PNGs in an ImageFolder tree.

    Layout: ``out_dir/train/<class>/NNNNN.png`` (NNNNN = sample index) and, with ``test_dataset``,
    its clean images in ``out_dir/test/<class>/`` so the tree loads as ``folder:out_dir``. The tree is
    written into a temporary folder beside ``out_dir`` and renamed at the end (no half-written tree).
    ImageFolder orders classes by folder name, so label indices match only when the class names
    sort in label order (true for CIFAR-10 and digits).

    Args:
        dataset: classification dataset, items ``(image float (C, H, W) in [0, 1], label)``, with
            no random augmentation (its ``get_image`` is used when present).
        store: the noise, one row per sample (or cluster mode with ``num_samples == len(dataset)``).
        out_dir: the folder to create.
        classes: folder names per label (default ``dataset.classes``, else the label number).
        progress: show a progress bar.
        test_dataset: optional clean test split written to ``out_dir/test``.
        overwrite: replace an existing ``out_dir`` instead of refusing.

    Returns:
        ``out_dir`` as a Path.
    """
    out_dir = Path(out_dir)
    if len(dataset) != store.num_samples:
        raise ConfigError(
            f"dataset has {len(dataset)} samples but the store covers {store.num_samples}: "
            "pass the protected split"
        )
    if out_dir.exists() and not overwrite:
        raise ConfigError(f"{out_dir} already exists: delete it or pass overwrite=True")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        for split, ds, noise in (("train", dataset, store), ("test", test_dataset, None)):
            if ds is None:
                continue
            names = list(classes if classes is not None else getattr(ds, "classes", []) or [])
            labels = labels_of(ds)
            # read the image before the transform and without a second decode when the labels are known
            get_image = getattr(ds, "get_image", None) if labels is not None else None
            n = len(ds)
            width = max(5, len(str(n - 1)))
            for i in tqdm(range(n), disable=not progress, desc=f"export {split}"):
                if get_image is not None and labels is not None:
                    x, label = get_image(i), int(labels[i])
                else:
                    item = ds[i]
                    x, label = item[0], int(item[1])
                if noise is not None:
                    x = noise.apply(x[None], [i])[0]
                folder = tmp / split / _folder_name(names[label] if label < len(names) else str(label))
                folder.mkdir(parents=True, exist_ok=True)
                u8 = (x.clamp(0, 1) * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy()
                Image.fromarray(u8[..., 0] if u8.shape[-1] == 1 else u8).save(folder / f"{i:0{width}d}.png")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
