"""Atomic training checkpoints: weights as safetensors, everything else loadable with weights_only.

A checkpoint is a directory::

    ckpt_dir/
        model.safetensors   # the unwrapped model's weights (no "module." prefixes)
        state.pt            # optimizer, scheduler, step, config, RNG state, extra
                            # (plain containers and tensors: torch.load(weights_only=True) works)

Writing is atomic: the new checkpoint is written and fsynced in a hidden sibling directory,
then swapped in with two renames. The previous checkpoint stays on disk until the new one is
complete, so a crash at any moment leaves either the old or the new checkpoint, never half of
one (a crash between the two renames is repaired on the next :func:`has_checkpoint`/load/save).

Example:
    >>> save_checkpoint("runs/a/ckpt", model, optimizer, step=100, config=cfg)   # doctest: +SKIP
    >>> meta = load_checkpoint("runs/a/ckpt", model, optimizer)                     # doctest: +SKIP
    >>> meta["step"]                                                                 # doctest: +SKIP
    100
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model
from torch import nn

from obstructlib.engine.distributed import unwrap
from obstructlib.engine.utils import rng_state, set_rng_state
from obstructlib.errors import ConfigError, reading

__all__ = ["MODEL_FILE", "STATE_FILE", "has_checkpoint", "json_default", "load_checkpoint", "save_checkpoint",
           "write_json_atomic"]

MODEL_FILE = "model.safetensors"
STATE_FILE = "state.pt"
_FORMAT_VERSION = 1


def _siblings(ckpt_dir: Path) -> tuple[Path, Path]:
    """Hidden temp and old directories next to ``ckpt_dir`` (same filesystem, so renames are atomic)."""
    return ckpt_dir.parent / f".{ckpt_dir.name}.tmp", ckpt_dir.parent / f".{ckpt_dir.name}.old"


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on directories; the data files were synced
        pass
    finally:
        os.close(fd)


def _recover(ckpt_dir: Path) -> None:
    """Undo a swap that a crash interrupted between its two renames; drop a leftover old copy."""
    old = _siblings(ckpt_dir)[1]
    if not ckpt_dir.exists() and old.exists():
        # the crash came after "ckpt -> old": the old checkpoint is complete, put it back
        os.replace(old, ckpt_dir)
    elif ckpt_dir.exists() and old.exists():
        shutil.rmtree(old, ignore_errors=True)


def _plain(value: Any) -> Any:
    """Config/extra values as containers of tensors, numbers and strings (weights_only-safe)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k) if not isinstance(k, (int, str)) else k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if value is None or isinstance(value, (bool, int, float, str, torch.Tensor)):
        return value
    if hasattr(value, "item") and hasattr(value, "dtype"):  # numpy scalars
        return value.item()
    if hasattr(value, "tolist"):  # numpy arrays
        return value.tolist()
    return str(value)  # paths, enums, devices


def has_checkpoint(ckpt_dir: str | os.PathLike | None) -> bool:
    """True when ``ckpt_dir`` holds a complete checkpoint."""
    if ckpt_dir is None:
        return False
    ckpt_dir = Path(ckpt_dir)
    _recover(ckpt_dir)
    return (ckpt_dir / MODEL_FILE).is_file() and (ckpt_dir / STATE_FILE).is_file()


def save_checkpoint(
    ckpt_dir: str | os.PathLike,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    step: int = 0,
    config: Any = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically, replacing any previous one in ``ckpt_dir``.

    Call it on the main process only in distributed runs (the fit functions do).

    Args:
        ckpt_dir: checkpoint directory (created with its parents); it must hold nothing but a
            previous checkpoint, since the whole directory is replaced.
        model: the model, possibly wrapped in DDP or ``torch.compile`` (saved unwrapped; tied or
            shared tensors are stored once, see ``safetensors.torch.save_model``).
        optimizer: optional optimizer whose ``state_dict`` is saved.
        scheduler: optional LR scheduler whose ``state_dict`` is saved.
        step: training progress (steps or epochs, as the caller counts).
        config: a dataclass or dict; stored as a plain dict.
        extra: anything else made of containers, numbers, strings and tensors (e.g. history).

    Returns:
        The checkpoint directory.
    """
    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.parent.mkdir(parents=True, exist_ok=True)
    _recover(ckpt_dir)
    if ckpt_dir.exists():
        # The swap replaces the whole directory: never take a user's other files with it.
        others = (
            sorted(set(os.listdir(ckpt_dir)) - {MODEL_FILE, STATE_FILE})
            if ckpt_dir.is_dir()
            else [ckpt_dir.name]
        )
        if others:
            raise ConfigError(
                f"{ckpt_dir} holds other files ({', '.join(others[:3])}): give checkpoints a directory of their own"
            )
    tmp, old = _siblings(ckpt_dir)
    if tmp.exists():  # junk from an earlier crash mid-write
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_model(unwrap(model), str(tmp / MODEL_FILE))
    state = {
        "format_version": _FORMAT_VERSION,
        "step": int(step),
        "config": _plain(config),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "rng": rng_state(),
        "extra": _plain(extra or {}),
    }
    torch.save(state, tmp / STATE_FILE)
    for name in (MODEL_FILE, STATE_FILE):
        _fsync_path(tmp / name)
    _fsync_path(tmp)
    # Swap: the old checkpoint is moved aside only once the new one is complete on disk.
    if ckpt_dir.exists():
        os.replace(ckpt_dir, old)
    os.replace(tmp, ckpt_dir)
    _fsync_path(ckpt_dir.parent)
    shutil.rmtree(old, ignore_errors=True)
    return ckpt_dir


def load_checkpoint(
    ckpt_dir: str | os.PathLike,
    model: nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    map_location: str | torch.device = "cpu",
    restore_rng: bool = True,
) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` into the given objects.

    Args:
        ckpt_dir: checkpoint directory.
        model: model to load the weights into (strict; DDP wrappers are unwrapped); None skips.
        optimizer: optimizer to restore; None skips.
        scheduler: scheduler to restore; None skips.
        map_location: device the optimizer state and weights are first loaded on.
        restore_rng: also restore the Python/NumPy/torch RNG states saved with the checkpoint.

    Returns:
        ``{"step": int, "config": dict | None, "extra": dict}``.

    Raises:
        ConfigError: when ``ckpt_dir`` holds no complete checkpoint.
    """
    ckpt_dir = Path(ckpt_dir)
    if not has_checkpoint(ckpt_dir):
        raise ConfigError(
            f"no checkpoint in {ckpt_dir}: train first or point to a directory holding {MODEL_FILE}"
        )
    with reading(ckpt_dir / STATE_FILE):
        state = torch.load(ckpt_dir / STATE_FILE, map_location=map_location, weights_only=True)
    if model is not None:
        bare = unwrap(model)
        device = next((p.device for p in bare.parameters()), torch.device("cpu"))
        hint = "build the model with the checkpoint's config"
        with reading(ckpt_dir / MODEL_FILE):  # a damaged file fails here, before any weight is touched
            _check_safetensors(ckpt_dir / MODEL_FILE)
        try:
            missing, unexpected = load_model(
                bare, str(ckpt_dir / MODEL_FILE), strict=False, device=str(device)
            )
        except RuntimeError as err:  # shape mismatch
            raise ConfigError(
                f"checkpoint {ckpt_dir} does not fit the model ({str(err).splitlines()[-1].strip()}): {hint}"
            ) from err
        if missing or unexpected:
            raise ConfigError(
                f"checkpoint {ckpt_dir} does not match the model (missing {sorted(missing)[:3]}, "
                f"unexpected {sorted(unexpected)[:3]}): {hint}"
            )
    if optimizer is not None and state.get("optimizer") is not None:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    if restore_rng and state.get("rng") is not None:
        set_rng_state(state["rng"])
    return {"step": int(state["step"]), "config": state.get("config"), "extra": state.get("extra") or {}}


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Write JSON to ``path`` through a temporary file and ``os.replace`` (never half-written).

    NaN and inf (an accuracy over an empty class, a ratio with nothing to divide) are written as
    ``null``: a bare ``NaN`` is not JSON, and strict readers (``jq``, JavaScript) refuse the file.

    Example:
        >>> import tempfile, pathlib
        >>> f = pathlib.Path(tempfile.mkdtemp()) / "r.json"
        >>> write_json_atomic(f, {"acc": float("nan"), "rows": [1.5, float("inf")]})
        >>> json.loads(f.read_text())
        {'acc': None, 'rows': [1.5, None]}
    """
    payload = _finite_or_null(json.loads(json.dumps(payload, default=json_default)))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f, indent=2, sort_keys=False, default=json_default, allow_nan=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def json_default(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _check_safetensors(path: Path) -> None:
    """Parse the header of a safetensors file (raises on a damaged or truncated one)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt"):
        pass


def _finite_or_null(obj: Any) -> Any:
    """The JSON-like tree with every NaN/inf number replaced by None."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {key: _finite_or_null(value) for key, value in obj.items()}
    if isinstance(obj, list):
        return [_finite_or_null(value) for value in obj]
    return obj
