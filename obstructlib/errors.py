"""User-facing errors.

Every error a user can cause by bad input (a missing dataset, a malformed ``--set``, a budget
outside its range) is an :class:`ObstructError` whose message is one line that says what to do.
The CLI turns it into exit status 2; notebooks show the line instead of a deep traceback.
"""

from __future__ import annotations


class ObstructError(Exception):
    """Bad input from the user: the message is one line saying what to do."""


class ConfigError(ObstructError, ValueError):
    """An invalid configuration value or override."""


class DatasetNotFoundError(ObstructError, FileNotFoundError):
    """A dataset is not on disk; the message says where we looked and how to fetch it."""


def check_range(name: str, value: float, low: float, high: float, *, inclusive: bool = True) -> float:
    """Raise :class:`ConfigError` unless ``low <= value <= high`` (or strict when not inclusive).

    Example:
        >>> check_range("eps", 8 / 255, 0, 1)
        0.03137254901960784
    """
    ok = low <= value <= high if inclusive else low < value < high
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
        if value is None or value < low or (strict and value == low):
            want = f"a value > {low:g}" if strict else "a positive integer" if low == 1 else f"a value >= {low:g}"
            raise ConfigError(f"{prefix}{name}={value}: use {want}")
