"""Seeding, device choice, the one autocast helper and RNG snapshots.

Every training loop in obstructlib goes through these helpers so that a run is reproducible from
one seed, runs on CPU or CUDA without code changes, and can be checkpointed with its RNG state.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
from contextlib import AbstractContextManager
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from obstructlib.errors import ConfigError

__all__ = [
    "amp_dtype",
    "cpu_supports_bf16",
    "autocast",
    "count_parameters",
    "grad_scaler",
    "derive_seed",
    "resolve_device",
    "rng_state",
    "seed_everything",
    "set_cpu_autocast",
    "set_rng_state",
]


def derive_seed(seed: int, role: str, index: int = 0) -> int:
    """The seed of one role's random stream in a run: a 31-bit hash of ``(seed, role, index)``.

    The protector's streams use the run's ``--seed`` itself; a hacker, victim or attacker draws its
    initial weights and data order from ``derive_seed(seed, "hacker", i)``, which never coincides
    with the protector's (it would need a 31-bit hash collision) nor with another hacker's.

    Example:
        >>> derive_seed(0, "hacker") != 0, derive_seed(0, "hacker", 0) != derive_seed(0, "hacker", 1)
        (True, True)
    """
    digest = hashlib.sha256(f"{int(seed)}/{role}/{int(index)}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy, torch (CPU and every CUDA device) and return a fresh generator.

    Args:
        seed: any non-negative integer.

    Returns:
        A CPU ``torch.Generator`` seeded with ``seed``, for samplers and data loaders that should
        not consume the global RNG stream.

    Example:
        >>> g = seed_everything(0)
        >>> a = torch.rand(2); _ = seed_everything(0); bool((a == torch.rand(2)).all())
        True
    """
    if seed < 0:
        raise ConfigError(f"seed={seed} is negative: pass a non-negative integer")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device
    return torch.Generator().manual_seed(seed)


def resolve_device(name: str | torch.device | None = None) -> torch.device:
    """Turn ``"auto"``/None/``"cpu"``/``"cuda"``/``"cuda:1"``/``"mps"`` into a ``torch.device``.

    ``"auto"`` (or None) picks the current CUDA device when CUDA is available (under ``torchrun``
    :func:`~obstructlib.engine.distributed.init_distributed` has set it to ``LOCAL_RANK``), else CPU.

    Args:
        name: device string or ``torch.device``.

    Raises:
        ConfigError: for an unknown device string or a CUDA device that is not available.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if isinstance(name, torch.device):
        return name
    if name is None or name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as err:
        raise ConfigError(f"unknown device {name!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'") from err
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} requested but CUDA is not available: use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"device {name!r} does not exist ({torch.cuda.device_count()} GPUs): pick a lower index"
            )
    elif device.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ConfigError(f"device {name!r} requested but MPS is not available: use --device cpu")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"unsupported device {name!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'")
    return device


_CPU_BF16 = False  # set by set_cpu_autocast (the runners' ``cpu_bf16`` field); off by default


def cpu_supports_bf16() -> bool:
    """True when this CPU computes bf16 natively (oneDNN's check: AVX-512 BF16 or AMX)."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False


def set_cpu_autocast(enabled: bool, force: bool = False) -> bool:
    """Turn bf16 autocast on CPU on or off for this process; returns whether it is now on.

    Off by default: CPU results then equal float32 references bit for bit, and CPUs without
    native bf16 run it slower, so it only turns on where :func:`cpu_supports_bf16` (or with
    ``force``, to study its rounding on any CPU). The runners set it from their ``cpu_bf16``
    field for the length of a run (``--set cpu_bf16=true``).

    Example:
        >>> set_cpu_autocast(True, force=True), amp_dtype("cpu")
        (True, torch.bfloat16)
        >>> set_cpu_autocast(False), amp_dtype("cpu")
        (False, None)
    """
    global _CPU_BF16
    _CPU_BF16 = bool(enabled) and (force or cpu_supports_bf16())
    return _CPU_BF16


def amp_dtype(device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype on ``device``: bf16 on Ampere or newer GPUs, fp16 on older ones
    (T4, V100: no native bf16); on CPU bf16 once :func:`set_cpu_autocast` turned it on, else None
    (full precision), as on other devices."""
    device = torch.device(device)
    if device.type == "cpu":
        return torch.bfloat16 if _CPU_BF16 else None
    if device.type != "cuda":
        return None
    major, _ = torch.cuda.get_device_capability(device)
    return torch.bfloat16 if major >= 8 else torch.float16


def autocast(device: torch.device | str, enabled: bool = True) -> AbstractContextManager[Any]:
    """The one mixed-precision helper: autocast on CUDA (see :func:`amp_dtype`), a no-op elsewhere.

    bf16 has float32's exponent range, so it needs no loss scaling; on pre-Ampere GPUs the
    dtype is float16 and the training loops scale the loss with :func:`grad_scaler` (nanoGPT's
    recipe). CPU autocast is off unless :func:`set_cpu_autocast` turned it on: it is slow on CPUs
    without native bf16 and makes CPU results differ from float32 references.

    Args:
        device: the device the computation runs on.
        enabled: False forces full precision on every device.

    Example:
        >>> with autocast("cpu"):
        ...     y = torch.ones(2) * 2
    """
    dtype = amp_dtype(device) if enabled else None
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def grad_scaler(device: torch.device | str, enabled: bool = True) -> torch.amp.GradScaler:
    """A ``GradScaler`` that is active only when :func:`autocast` runs in float16.

    Disabled scalers pass everything through (``scale(loss) is loss``), so training loops call
    ``scaler.scale(loss).backward(); scaler.step(opt); scaler.update()`` unconditionally.
    """
    active = enabled and amp_dtype(device) == torch.float16
    if hasattr(torch.amp, "GradScaler"):
        return torch.amp.GradScaler("cuda", enabled=active)
    return torch.cuda.amp.GradScaler(enabled=active)  # torch < 2.3


def rng_state() -> dict[str, Any]:
    """Snapshot the Python, NumPy, torch CPU and CUDA RNG states.

    The result holds only tensors, ints, floats, strings, lists and tuples, so it survives
    ``torch.load(..., weights_only=True)``.
    """
    # numpy's global RandomState is MT19937, so the default legacy=True state is this tuple (the stub's
    # first overload types the no-argument call as the dict form)
    np_state = cast("tuple[str, np.ndarray, int, int, float]", np.random.get_state())
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "kind": str(np_state[0]),
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore a snapshot taken by :func:`rng_state` (CUDA states only if the GPU count matches)."""
    python = state["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))
    nps = state["numpy"]
    keys = np.asarray(nps["keys"].numpy() if torch.is_tensor(nps["keys"]) else nps["keys"], dtype=np.uint32)
    np.random.set_state((nps["kind"], keys, nps["pos"], nps["has_gauss"], nps["cached_gaussian"]))
    torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (shared tensors counted once).

    Args:
        model: any module.
        trainable_only: count only parameters with ``requires_grad``.

    Example:
        >>> count_parameters(nn.Linear(3, 2))
        8
    """
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    return total
