"""What every runner shares: the run context, timings and ``results.json``.

A runner is a function ``run(cfg, ctx) -> metrics`` plus a config dataclass. The context holds
the resolved profile, device, seed, data root and output folder; it times stages and writes
``OUT/results.json`` atomically with the keys the interface contract fixes: ``command``,
``profile``, ``config``, ``metrics``, ``timings_s``, ``device`` and ``versions``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from obstructlib.config import config_to_dict
from obstructlib.errors import ConfigError
from obstructlib.profiles import Profile


def versions() -> dict[str, str]:
    """Versions of Python and of the packages a result depends on."""
    import numpy

    out = {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__}
    for name in ("torchvision", "open_clip", "obstructlib"):
        try:
            module = __import__(name)
            out[name] = getattr(module, "__version__", "unknown")
        except Exception:  # noqa: BLE001 - any import failure is reported, not fatal
            out[name] = "missing"
    return out


def describe_device(device: torch.device) -> dict[str, Any]:
    """Device type, name and (on CUDA) memory, for ``results.json``."""
    info: dict[str, Any] = {"type": device.type, "torch_threads": torch.get_num_threads()}
    if device.type == "cuda":
        idx = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(idx)
        info.update(name=props.name, memory_gib=round(props.total_memory / 2**30, 1))
    else:
        info["name"] = platform.processor() or platform.machine()
        info["cpu_count"] = os.cpu_count()
    return info


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Write JSON to ``path`` through a temporary file and ``os.replace`` (never half-written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f, indent=2, sort_keys=False, default=_json_default)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _json_default(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


@dataclass
class RunContext:
    """Everything a runner needs besides its config.

    Attributes:
        command: the subcommand (``uc``, ``mem``, ...).
        profile: the resolved :class:`~obstructlib.profiles.Profile`.
        device: where tensors go.
        seed: the run's seed (already applied with ``seed_everything``).
        data_root: root of registered datasets.
        out_dir: the run folder (``results.json``, ``checkpoints/``, figures); None in notebooks
            that do not save anything.
        progress: show progress bars.
        argv: the command line, recorded in ``results.json``.
    """

    command: str
    profile: Profile
    device: torch.device
    seed: int = 0
    data_root: Path = Path("data")
    out_dir: Path | None = None
    progress: bool = True
    argv: list[str] = field(default_factory=lambda: list(sys.argv))
    timings_s: dict[str, float] = field(default_factory=dict)

    @property
    def ckpt_dir(self) -> Path | None:
        """``OUT/checkpoints`` (created on first use), or None without an output folder."""
        return None if self.out_dir is None else self.out_dir / "checkpoints"

    def stage_dir(self, name: str) -> Path | None:
        """``OUT/checkpoints/NAME`` for a resumable stage, or None without an output folder."""
        return None if self.ckpt_dir is None else self.ckpt_dir / name

    @contextmanager
    def timer(self, stage: str) -> Iterator[None]:
        """Add the wall time of the ``with`` block to ``timings_s[stage]``."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.timings_s[stage] = round(self.timings_s.get(stage, 0.0) + time.perf_counter() - start, 3)

    def results(self, config: Any, metrics: dict[str, Any]) -> dict[str, Any]:
        """The ``results.json`` payload (contract keys first)."""
        return {
            "command": self.command,
            "argv": self.argv,
            "profile": self.profile.name,
            "seed": self.seed,
            "config": config_to_dict(config),
            "metrics": metrics,
            "timings_s": self.timings_s,
            "device": describe_device(self.device),
            "versions": versions(),
        }

    def write_results(self, config: Any, metrics: dict[str, Any]) -> Path | None:
        """Write ``OUT/results.json`` atomically; returns its path (None without ``out_dir``)."""
        payload = self.results(config, metrics)
        if self.out_dir is None:
            return None
        path = self.out_dir / "results.json"
        write_json_atomic(path, payload)
        return path


def remove_if_created(out_dir: Path, existed_before: bool) -> None:
    """Remove a run folder this invocation created, so bad input leaves nothing half-written."""
    if not existed_before and out_dir.exists():
        shutil.rmtree(out_dir, ignore_errors=True)


# Config fields that change how a run executes but not its result.
_NO_MEANING = ("num_workers", "cache_max_bytes", "eval_batch_size", "ckpt_every_epochs", "ckpt_every_batches")


def seed_hacker(recipe: Any, run_seed: int, hacker_seed: int | None) -> Any:
    """Seed the hacker's model init and return its training recipe.

    ``hacker_seed`` (a runner's ``target_seed`` / ``hacker_seed``) repeats the hacker on the same
    protected data: it seeds the initial weights (``torch.manual_seed``) and the recipe's data order.
    None keeps the run's ``--seed`` for the weights and the recipe as given. Call it right before
    building each model, so the clean and the protected model start from the same weights.
    """
    if hacker_seed is None:
        torch.manual_seed(run_seed)
        return recipe
    torch.manual_seed(hacker_seed)
    return dataclasses.replace(recipe, seed=hacker_seed)


def run_fingerprint(cfg: Any, seed: int) -> dict[str, Any]:
    """The config values that change a run's result, flattened with dotted keys (``train.lr`` ...)."""
    flat: dict[str, Any] = {"seed": seed}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}{k}.", v)
        elif prefix.rstrip(".").rsplit(".", 1)[-1] not in _NO_MEANING:
            flat[prefix.rstrip(".")] = value

    walk("", config_to_dict(cfg))
    return json.loads(json.dumps(flat, default=_json_default))


def check_run_folder(cfg: Any, ctx: RunContext) -> None:
    """Refuse to resume checkpoints made with a different config (they would be silently mixed).

    The first run writes ``OUT/checkpoints/run.json``; a later run in the same folder must match it.
    """
    if ctx.ckpt_dir is None:
        return
    path, now = ctx.ckpt_dir / "run.json", run_fingerprint(cfg, ctx.seed)
    if path.is_file():
        old = json.loads(path.read_text())
        diff = [k for k in sorted(set(old) | set(now)) if old.get(k) != now.get(k)]
        if diff:
            k = diff[0]
            raise ConfigError(f"{ctx.out_dir} holds a run with {k}={old.get(k)!r} (now {now.get(k)!r}): "
                              "use a new --out, or delete the old folder")
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(now, indent=1))
