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
