"""User-facing errors.

Every error a user can cause by bad input (a missing dataset, a malformed ``--set``, a budget
outside its range) is an :class:`ObstructError` whose message is one line that says what to do.
The CLI turns it into exit status 2; notebooks show the line instead of a deep traceback.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class ObstructError(Exception):
    """Bad input from the user: the message is one line saying what to do."""


class ConfigError(ObstructError, ValueError):
    """An invalid configuration value or override."""


class DatasetNotFoundError(ObstructError, FileNotFoundError):
    """A dataset is not on disk; the message says where we looked and how to fetch it."""


class NonFiniteError(ObstructError, ArithmeticError):
    """NaN or inf where a number belongs: a diverged model's outputs, or a metric computed from them.

    A metric of NaN features is not a bad score but no score (NaN similarities rank every correct
    item first: perfect retrieval), so the metrics raise this instead of returning a number.
    """


def check_finite(name: str, values: Any) -> Any:
    """Raise :class:`NonFiniteError` if the tensor/array ``values`` holds NaN or inf; return it.

    Example:
        >>> import torch
        >>> check_finite("image features", torch.tensor([[1.0, float("nan")]]))
        Traceback (most recent call last):
        ...
        obstructlib.errors.NonFiniteError: image features hold 1 NaN/inf of 2 values: the model diverged ...
    """
    import torch

    t = values if isinstance(values, torch.Tensor) else torch.as_tensor(values)
    if t.is_floating_point() or t.is_complex():
        bad = int((~torch.isfinite(t)).sum())
        if bad:
            raise NonFiniteError(
                f"{name} hold {bad} NaN/inf of {t.numel()} values: the model diverged or its inputs are broken "
                "(lower the learning rate or set a gradient clip, then rerun with --restart); no metric is computed"
            )
    return values


def check_range(name: str, value: float, low: float, high: float, *, inclusive: bool = True) -> float:
    """Raise :class:`ConfigError` unless ``low <= value <= high`` (or strict when not inclusive).

    Example:
        >>> check_range("eps", 8 / 255, 0, 1)
        0.03137254901960784
    """
    ok = low <= value <= high if inclusive else low < value < high  # NaN compares False: refused
    if not ok:
        brackets = "[{}, {}]" if inclusive else "({}, {})"
        raise ConfigError(f"{name}={value} is outside {brackets.format(low, high)}: pick a value in that range")
    return value


def check_min(cfg: object, names: tuple[str, ...], low: float = 1, *, strict: bool = False, prefix: str = "",
              allow_none: bool = False) -> None:
    """Raise a one-line :class:`ConfigError` unless every named field of ``cfg`` is ``>= low``.

    Args:
        cfg: the config object whose attributes are checked.
        names: the attribute names.
        low: the smallest allowed value (1: a positive integer).
        strict: require ``> low`` instead.
        prefix: prepended to the name in the message (``"ntl."``).
        allow_none: let ``None`` through (an optional field).

    Example:
        >>> from types import SimpleNamespace
        >>> check_min(SimpleNamespace(epochs=3, batch_size=0), ("epochs", "batch_size"))
        Traceback (most recent call last):
        ...
        obstructlib.errors.ConfigError: batch_size=0: use a positive integer
    """
    for name in names:
        value = getattr(cfg, name)
        if value is None and allow_none:
            continue
        if value is None or not _finite(value) or value < low or (strict and value == low):
            want = f"a value > {low:g}" if strict else "a positive integer" if low == 1 else f"a value >= {low:g}"
            if value is not None and not _finite(value):
                want = f"a finite {want[2:]}"
            raise ConfigError(f"{prefix}{name}={value}: use {want}")


@contextmanager
def reading(path: str | Path, *, remedy: str | None = None) -> Iterator[None]:
    """Turn any failure to read the saved state ``path`` into one :class:`ConfigError` naming it.

    A state file cut short by a killed run, or damaged on disk, otherwise surfaces as a deep
    ``UnpicklingError``, ``SafetensorError`` or ``JSONDecodeError``. ``remedy`` says what to do
    (default: delete the file's folder, or rerun with ``--restart``). Errors that are already one
    line (:class:`ObstructError`) pass through.

    Example:
        >>> import json, tempfile, pathlib
        >>> f = pathlib.Path(tempfile.mkdtemp()) / "run.json"
        >>> _ = f.write_text('{"step": 3')
        >>> with reading(f):
        ...     json.loads(f.read_text())
        Traceback (most recent call last):
        ...
        obstructlib.errors.ConfigError: .../run.json is corrupt or cut short (JSONDecodeError): delete ...
    """
    try:
        yield
    except ObstructError:
        raise
    except Exception as err:  # torch, numpy, safetensors and json each raise their own kind
        todo = remedy or f"delete {Path(path).parent} (or rerun with --restart) and that stage starts over"
        raise ConfigError(f"{path} is corrupt or cut short ({type(err).__name__}): {todo}") from None


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(value)
    except TypeError:  # not a real number: the comparison after this says what is wrong
        return True
