"""One config fingerprint for every resumable folder: a run folder, a method's checkpoint folder.

A resumed run must not silently mix checkpoints made with another config. The first call of
:func:`check_fingerprint` writes ``FOLDER/fingerprint.json`` (the config flattened to dotted keys,
without the fields that change how a run executes but not its result); a later call compares and
refuses with one line that names the differing keys, or, with ``restart=True``, empties the folder
so the run starts over.

Example:
    >>> import tempfile, dataclasses
    >>> @dataclasses.dataclass
    ... class C:
    ...     lr: float = 0.1
    ...     num_workers: int = 0
    >>> d = tempfile.mkdtemp()
    >>> check_fingerprint(d, C())
    >>> check_fingerprint(d, C(num_workers=4))   # does not change the result: accepted
    >>> check_fingerprint(d, C(lr=0.2))
    Traceback (most recent call last):
    ...
    obstructlib.errors.ConfigError: ... holds a run with lr=0.1 (now 0.2): use a new --out, pass --restart ...
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Any

from obstructlib.errors import ConfigError

__all__ = ["FINGERPRINT_FILE", "NO_MEANING", "check_fingerprint", "fingerprint", "state_digest"]

FINGERPRINT_FILE = "fingerprint.json"
# Config fields that change how a run executes (speed, logging, checkpoint cadence), not its result.
NO_MEANING = frozenset({"num_workers", "cache_max_bytes", "eval_batch_size", "ckpt_every_epochs",
                        "ckpt_every_batches", "ckpt_every", "log_every"})


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


def fingerprint(config: Any, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The values of ``config`` (a dataclass or dict, nested) that change a result, as ``{dotted.key: value}``.

    Args:
        config: the config; nested dataclasses and dicts are flattened (``train.lr``).
        extra: more keys to compare (the data's size and shape, the run's seed ...).
    """
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}{k}.", v)
        elif prefix.rstrip(".").rsplit(".", 1)[-1] not in NO_MEANING:
            flat[prefix.rstrip(".")] = value

    walk("", _plain(config))
    for key, value in (extra or {}).items():
        flat[key] = _plain(value)
    return json.loads(json.dumps(flat))


def state_digest(module: Any) -> str:
    """A short SHA-256 of a module's parameters and buffers (names, shapes, dtypes and values).

    For a fingerprint's ``extra``: two surrogates of one architecture with other weights (random,
    pretrained, trained on other data) must not share a checkpoint folder.

    Example:
        >>> import torch
        >>> a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
        >>> state_digest(a) == state_digest(a), state_digest(a) == state_digest(b)
        (True, False)
    """
    import hashlib

    import torch

    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        t = tensor.detach().cpu().contiguous().reshape(-1)  # 1-d: a 0-d tensor cannot be viewed as bytes
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()[:16]


def check_fingerprint(folder: str | os.PathLike, config: Any, *, extra: dict[str, Any] | None = None,
                      restart: bool = False) -> None:
    """Refuse to resume ``folder`` with another config (or empty it when ``restart``).

    Args:
        folder: the resumable folder (created when missing).
        config: the config that runs now (dataclass or dict).
        extra: more keys that must match (data size, image shape, seed ...).
        restart: delete the folder's contents and start over (a damaged checkpoint, another config).

    Raises:
        ConfigError: the folder holds a run with another config (one line naming up to three keys).
    """
    path = Path(folder)
    now = fingerprint(config, extra)
    stored = path / FINGERPRINT_FILE
    if stored.is_file() and not restart:
        try:
            old = json.loads(stored.read_text())
            if not isinstance(old, dict):
                raise ValueError("not a JSON object")
        except (ValueError, UnicodeDecodeError) as err:
            raise ConfigError(f"{stored} is corrupt ({type(err).__name__}), so the checkpoints beside it cannot be "
                              "trusted: pass --restart to start over, or delete the folder") from None
        diff = [k for k in sorted(set(old) | set(now)) if old.get(k) != now.get(k)]
        if not diff:
            return
        shown = ", ".join(f"{k}={old.get(k)!r} (now {now.get(k)!r})" for k in diff[:3])
        more = f" and {len(diff) - 3} more" if len(diff) > 3 else ""
        raise ConfigError(f"{path} holds a run with {shown}{more}: use a new --out, pass --restart to "
                          "start over, or delete the folder")
    if stored.is_file():  # --restart: whatever the folder holds (another config, a damaged file) goes
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    tmp = stored.with_suffix(".tmp")
    tmp.write_text(json.dumps(now, indent=1))
    os.replace(tmp, stored)


def forget_unstarted(folder: str | os.PathLike, had_fingerprint: bool) -> None:
    """Remove a fingerprint this run wrote if the run failed before any stage saved anything.

    A run records its config first and loads its inputs after; when the inputs are bad, the
    corrected re-run must not be refused as "another config" by a folder that holds nothing else.
    """
    path = Path(folder)
    stored = path / FINGERPRINT_FILE
    if had_fingerprint or not stored.is_file():
        return
    if any(p.is_file() and p != stored for p in path.rglob("*")):
        return  # a stage has saved: keep the record that goes with it
    shutil.rmtree(path, ignore_errors=True)
