"""What every runner shares: the run context, timings and ``results.json``.

A runner is a function ``run(cfg, ctx) -> metrics`` plus a config dataclass. The context holds
the resolved profile, device, seed, data root and output folder; it times stages and writes
``OUT/results.json`` atomically with the keys the interface contract fixes: ``command``,
``profile``, ``config``, ``metrics``, ``timings_s``, ``device`` and ``versions``.
"""

from __future__ import annotations

import os
import platform
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from obstructlib.config import config_to_dict
from obstructlib.engine.checkpoint import write_json_atomic
from obstructlib.engine.fingerprint import FINGERPRINT_FILE, check_fingerprint, forget_unstarted
from obstructlib.engine.utils import derive_seed
from obstructlib.errors import ConfigError, ObstructError
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
        restart: a run folder holding another config's checkpoints is emptied (``--restart``)
            instead of refused.
    """

    command: str
    profile: Profile
    device: torch.device
    seed: int = 0
    data_root: Path = Path("data")
    out_dir: Path | None = None
    progress: bool = True
    argv: list[str] = field(default_factory=lambda: list(sys.argv))
    restart: bool = False
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


def hacker_seeds(run_seed: int, base: int | None, count: int) -> list[int]:
    """Seeds of a run's ``count`` independent hackers (initial weights and data order).

    Hacker ``i`` uses ``derive_seed(base, "hacker", i)`` with ``base`` the runner's ``hacker_seed``
    (None: the run's ``--seed``), so a default hacker never shares a stream with the protector, and
    ``--set hacker_seed=N`` draws other hackers for the same protected data.
    """
    root = run_seed if base is None else base
    return [derive_seed(root, "hacker", i) for i in range(count)]


def mean_and_sd(rows: Sequence[dict[str, Any]]) -> tuple[dict[str, float], dict[str, float]]:
    """Mean and sample standard deviation (0 for one row) of each numeric key the rows share."""
    import numpy as np

    keys = [k for k, v in rows[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool)
            and all(isinstance(r.get(k), (int, float)) for r in rows)]
    mean = {k: float(np.mean([r[k] for r in rows])) for k in keys}
    sd = {k: float(np.std([r[k] for r in rows], ddof=1)) if len(rows) > 1 else 0.0 for k in keys}
    return mean, sd


LOCK_FILE = ".lock"


@contextmanager
def run_lock(out_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on the run folder for the ``with`` block.

    Two runs into one ``--out`` would race on the same checkpoints and temporary folders; the
    second is refused at once with the first one's PID. The lock is an ``flock`` on
    ``OUT/.lock``, so the operating system releases it when a run dies, however it dies (a killed
    run never leaves a stale lock). Where ``fcntl`` does not exist (Windows) no lock is taken.

    Raises:
        ConfigError: another process holds the lock.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    path = out_dir / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:  # a read-only filesystem, a folder without write permission
        raise ConfigError(f"cannot write in the run folder {out_dir} ({err.strerror}): give another --out") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "another process"
            raise ConfigError(f"{out_dir} is in use by PID {holder}: wait for that run to finish, "
                              "or give this one another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        try:
            yield
        finally:
            path.unlink(missing_ok=True)  # still held: no other run can be between unlink and close
    finally:
        os.close(fd)


def require_classes(dataset: Any, spec: str) -> Any:
    """Refuse a classification dataset of fewer than 2 classes (every accuracy would be 100% at
    chance 100%); returns it. A one-folder image set is fine to load, not to evaluate a classifier on."""
    classes = list(getattr(dataset, "classes", None) or [])
    if len(classes) < 2:
        raise ConfigError(f"{spec} has {len(classes)} class ({', '.join(map(str, classes)) or 'none'}): "
                          "this run trains and scores a classifier, which needs at least 2")
    return dataset


def check_run_folder(cfg: Any, ctx: RunContext) -> None:
    """Refuse to resume checkpoints made with a different config (they would be silently mixed).

    The first run writes ``OUT/checkpoints/fingerprint.json``; a later run in the same folder must
    match it, or start over when ``ctx.restart`` (``--restart``).
    """
    from obstructlib.engine import is_main_process

    if ctx.ckpt_dir is None or not is_main_process():  # under torchrun rank 0 alone owns the folder
        return
    check_fingerprint(ctx.ckpt_dir, cfg, extra={"seed": ctx.seed}, restart=ctx.restart)


def execute(name: str, *, profile: str | None, overrides: Sequence[str], seed: int, device: str | None,
            data_root: str | Path | None, out: str | Path | None, progress: bool, restart: bool,
            argv: list[str] | None, flags: dict[str, str] | None = None) -> dict[str, Any]:
    """Resolve a runner's config, run it and write ``OUT/results.json`` (the CLI and :func:`obstructlib.run`).

    Returns:
        The ``results.json`` payload.

    Raises:
        ObstructError: bad input; a run folder this call created is removed again.
    """
    from obstructlib.config import MAX_SEED, apply_overrides, set_field
    from obstructlib.data import default_data_root
    from obstructlib.engine import cleanup, init_distributed, resolve_device, seed_everything, set_cpu_autocast
    from obstructlib.experiments import load_runners
    from obstructlib.profiles import resolve_profile

    runners = load_runners()
    if name not in runners:
        raise ConfigError(f"unknown runner {name!r}: use one of {', '.join(sorted(runners))}")
    runner = runners[name]
    from obstructlib.experiments import env_overrides

    overrides = [*env_overrides(name), *overrides]  # $OBSTRUCT_SET first: the call's own --set wins
    if not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"--seed {seed}: use an integer from 0 to {MAX_SEED}")
    for field_name, value in (flags or {}).items():  # a flag and a --set of the same field: which one?
        for item in overrides:
            key, _, text = item.partition("=")
            if key.strip() == field_name and text.strip() != str(value):
                raise ConfigError(f"the flag for {field_name} says {value!r} and --set {item} says otherwise: give one")
    prof = resolve_profile(profile)
    if out is not None and not str(out).strip():
        raise ConfigError("--out is empty: name a run folder (e.g. --out runs/NAME)")
    dist_info = init_distributed()  # under torchrun every process runs this; only rank 0 writes results
    dev = resolve_device(device)
    cfg = runner.config_for(prof)
    for field_name, value in (flags or {}).items():
        cfg = set_field(cfg, field_name, value)
    cfg = apply_overrides(cfg, overrides)  # validates the config
    if runner.adapt is not None:
        from obstructlib.experiments import explicit_keys

        cfg = runner.adapt(cfg, prof, explicit_keys(overrides, flags))
    if runner.resolve is not None:
        cfg = runner.resolve(cfg, seed)
    from obstructlib.data import default_runs_root

    out_dir = Path(out) if out is not None else default_runs_root() / name
    existed = out_dir.exists()
    ctx = RunContext(command=name, profile=prof, device=dev, seed=seed,
                     data_root=Path(data_root) if data_root else default_data_root(), out_dir=out_dir,
                     progress=progress, argv=argv if argv is not None else [f"ob.run({name!r})"], restart=restart)
    seed_everything(seed)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"cannot create the run folder {out_dir} ({err.strerror}): give another --out") from None
    with run_lock(out_dir) if dist_info.is_main else nullcontext():
        had_fingerprint = (out_dir / "checkpoints" / FINGERPRINT_FILE).is_file()
        cpu_bf16 = set_cpu_autocast(bool(getattr(cfg, "cpu_bf16", False)))  # stays off without native bf16
        try:
            metrics = runner.run(cfg, ctx)
        except ObstructError:
            if dist_info.is_main:
                forget_unstarted(out_dir / "checkpoints", had_fingerprint)
                remove_if_created(out_dir, existed)
            raise
        finally:
            set_cpu_autocast(False)  # a run never leaves it on for the next one in this process
        payload = ctx.results(cfg, metrics)
        if dev.type == "cpu":
            payload["device"]["cpu_bf16"] = cpu_bf16  # what ran, not only what was asked
        if dist_info.is_main:
            write_json_atomic(out_dir / "results.json", payload)
    cleanup()
    return payload
